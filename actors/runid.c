/* Run ids: 64-bit in the store, "run_" + 16 lowercase hex digits on the wire
 * (actors.h). */
#include <stddef.h>
#include <stdint.h>

#include "actors/actors.h"

void tr_run_id_format(uint64_t id, char out[TR_RUN_ID_TEXT])
{
    static const char hex[] = "0123456789abcdef";

    out[0] = 'r';
    out[1] = 'u';
    out[2] = 'n';
    out[3] = '_';
    for (int i = 0; i < 16; i++)
        out[4 + i] = hex[(id >> (60 - 4 * i)) & 0xf];
    out[20] = '\0';
}

/* Exactly "run_" and 16 lowercase hex digits: anything else (upper case,
 * shorter, longer, trailing bytes) is TR_EINVAL, so that one id has one text. */
int tr_run_id_parse(const char *s, size_t len, uint64_t *out)
{
    uint64_t v = 0;

    if (!s || len != TR_RUN_ID_TEXT - 1 || s[0] != 'r' || s[1] != 'u' || s[2] != 'n' || s[3] != '_')
        return TR_EINVAL;
    for (size_t i = 4; i < len; i++) {
        char c = s[i];
        unsigned d;

        if (c >= '0' && c <= '9')
            d = (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            d = (unsigned)(c - 'a' + 10);
        else
            return TR_EINVAL;
        v = (v << 4) | d;
    }
    if (out)
        *out = v;
    return TR_OK;
}
