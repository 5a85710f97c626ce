/* Error codes and wrapped error messages. */
#include <stdio.h>
#include <string.h>

#include "runtime.h"

const char *tr_strerror(int rv)
{
    switch (rv) {
#define TR__ERR_STR(name, value, str) \
    case TR_##name:                   \
        return str;
        TR_ERRNO_MAP(TR__ERR_STR)
#undef TR__ERR_STR
    default:
        return "unknown error";
    }
}

const char *tr_errname(int rv)
{
    switch (rv) {
#define TR__ERR_NAME(name, value, str) \
    case TR_##name:                    \
        return #name;
        TR_ERRNO_MAP(TR__ERR_NAME)
#undef TR__ERR_NAME
    default:
        return "EUNKNOWN";
    }
}

int tr_err_set(struct tr_err *e, int code, const char *fmt, ...)
{
    va_list ap;

    if (e == NULL)
        return code;
    e->code = code;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return code;
}

/* Append src to dst (or replace dst when reset), truncating to cap. */
static void append(char *dst, size_t cap, const char *src, int reset)
{
    size_t len = reset ? 0 : strlen(dst);
    size_t n = strlen(src);

    if (n > cap - 1 - len)
        n = cap - 1 - len;
    memcpy(dst + len, src, n);
    dst[len + n] = '\0';
}

/* Prefix the current message with "<context>: "; the code is unchanged.
 * Truncates from the end when the result does not fit. */
int tr_err_wrap(struct tr_err *e, const char *fmt, ...)
{
    char prefix[sizeof e->msg];
    char old[sizeof e->msg];
    va_list ap;

    if (e == NULL)
        return TR_OK;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, e->msg, sizeof old);
    old[sizeof old - 1] = '\0';
    append(e->msg, sizeof e->msg, prefix, 1);
    if (old[0] != '\0') {
        append(e->msg, sizeof e->msg, ": ", 0);
        append(e->msg, sizeof e->msg, old, 0);
    }
    return e->code;
}

void tr_err_clear(struct tr_err *e)
{
    if (e == NULL)
        return;
    e->code = TR_OK;
    e->msg[0] = '\0';
}
