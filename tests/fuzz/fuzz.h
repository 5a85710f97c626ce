/* What the libFuzzer targets under tests/fuzz share. */
#ifndef TR_TESTS_FUZZ_H
#define TR_TESTS_FUZZ_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A property of the code under test: when it does not hold, say which and
 * where, and abort (libFuzzer then keeps the input that broke it). */
#define CHECK(x)                                                               \
    do {                                                                       \
        if (!(x)) {                                                            \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__,  \
                    #x);                                                       \
            abort();                                                           \
        }                                                                      \
    } while (0)

/* A heap copy of exactly n bytes of p (one byte when n is 0), so that ASan
 * sees any read past the end of what was given. Free with free(). */
static inline uint8_t *fuzz_copy(const void *p, size_t n)
{
    uint8_t *c = malloc(n ? n : 1);
    CHECK(c != NULL);
    if (n)
        memcpy(c, p, n);
    return c;
}

#endif
