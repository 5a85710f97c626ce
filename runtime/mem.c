/* The allocation seam: every allocation in Troupe goes through here, and a
 * failed allocation aborts the process with a message instead of returning
 * NULL (callers never test for it). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime.h"

static void oom(size_t n)
{
    fprintf(stderr, "troupe: out of memory allocating %zu bytes\n", n);
    abort();
}

void *tr_malloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL)
        oom(n);
    return p;
}

void *tr_calloc(size_t count, size_t size)
{
    void *p;

    if (size != 0 && count > SIZE_MAX / size)
        oom(SIZE_MAX);
    p = calloc(count ? count : 1, size ? size : 1);
    if (p == NULL)
        oom(count * size);
    return p;
}

void *tr_realloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (q == NULL)
        oom(n);
    return q;
}

void tr_free(void *p)
{
    free(p);
}

char *tr_strdup(const char *s)
{
    return tr_memdup(s, strlen(s) + 1);
}

char *tr_strndup(const char *s, size_t n)
{
    size_t len = strnlen(s, n);
    char *d = tr_malloc(len + 1);

    memcpy(d, s, len);
    d[len] = '\0';
    return d;
}

void *tr_memdup(const void *p, size_t n)
{
    void *d = tr_malloc(n);

    if (n != 0)
        memcpy(d, p, n);
    return d;
}
