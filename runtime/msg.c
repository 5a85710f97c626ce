/* Messages: one allocation, header then payload. */
#include <string.h>

#include "core.h"

struct tr_msg *tr_msg_new(uint32_t type, uint32_t len)
{
    struct tr_msg *m = tr_malloc(sizeof *m + len);

    memset(m, 0, sizeof *m);
    m->type = type;
    m->len = len;
    return m;
}

struct tr_msg *tr_msg_make(uint32_t type, const void *data, uint32_t len)
{
    struct tr_msg *m = tr_msg_new(type, len);

    if (len != 0)
        memcpy(m->data, data, len);
    return m;
}

void tr_msg_free(struct tr_msg *m)
{
    tr_free(m);
}
