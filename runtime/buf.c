/* The growable byte buffer of runtime.h (struct tr_buf). */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "runtime.h"

void tr_buf_reserve(struct tr_buf *b, size_t extra)
{
    size_t want = b->len + extra + 1; /* + the NUL */
    if (want <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < want)
        cap *= 2;
    b->p = tr_realloc(b->p, cap);
    b->cap = cap;
}

void tr_buf_add(struct tr_buf *b, const void *data, size_t n)
{
    tr_buf_reserve(b, n);
    if (n > 0)
        memcpy(b->p + b->len, data, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void tr_buf_adds(struct tr_buf *b, const char *s)
{
    tr_buf_add(b, s, strlen(s));
}

void tr_buf_addc(struct tr_buf *b, char c)
{
    tr_buf_add(b, &c, 1);
}

void tr_buf_printf(struct tr_buf *b, const char *fmt, ...)
{
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof tmp) { /* the common case: one formatting pass */
        tr_buf_add(b, tmp, (size_t)n);
        return;
    }
    tr_buf_reserve(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void tr_buf_free(struct tr_buf *b)
{
    tr_free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}
