/* libFuzzer target: raft entries in their log form (raft/entry.c), as a node
 * reads them from its log or gets them from the leader.
 *   - tr_entry_decode on the fuzz bytes: refuses or yields a command of at
 *     most TR_ENTRY_RAW_MAX bytes; never reads outside the input.
 *   - the fuzz bytes with a valid compressed header in front (so that the
 *     LZ4 block decoder itself sees them).
 *   - tr_entry_encode then tr_entry_decode gives the bytes back. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "raft/entry.h"
#include "tests/fuzz/fuzz.h"

static void decode(const uint8_t *p, size_t n)
{
    const void *raw;
    size_t raw_len;
    void *owned = NULL;
    char why[160];
    if (tr_entry_decode(p, n, &raw, &raw_len, &owned, why, sizeof why) == TR_OK) {
        CHECK(raw_len <= (owned ? TR_ENTRY_RAW_MAX : n));
        if (raw_len > 0) /* touch both ends */
            CHECK(((const uint8_t *)raw)[0] == ((const uint8_t *)raw)[0] &&
                  ((const uint8_t *)raw)[raw_len - 1] == ((const uint8_t *)raw)[raw_len - 1]);
    } else {
        CHECK(owned == NULL && why[0] != '\0');
    }
    free(owned);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Copies, so that ASan sees any read past the end of what is given. */
    uint8_t *p = fuzz_copy(data, size);
    decode(p, size);
    free(p);

    /* A header that passes, over the fuzz bytes as the block. */
    if (size >= 4) {
        uint32_t rlen = ((uint32_t)data[0] | (uint32_t)data[1] << 8) + 1;
        size_t n = 16 + (size - 4);
        uint8_t *q = malloc(n);
        uint32_t clen = (uint32_t)(size - 4);
        q[0] = (uint8_t)rlen, q[1] = (uint8_t)(rlen >> 8), q[2] = q[3] = 0;
        memcpy(q + 4, TR_ENTRY_MAGIC, 4);
        q[8] = (uint8_t)clen, q[9] = (uint8_t)(clen >> 8), q[10] = (uint8_t)(clen >> 16), q[11] = (uint8_t)(clen >> 24);
        memset(q + 12, 0, 4);
        memcpy(q + 16, data + 4, size - 4);
        decode(q, n);
        free(q);
    }

    /* Round trip. */
    size_t elen = 0;
    uint8_t *e = tr_entry_encode(data, size, 1, &elen);
    CHECK(e != NULL && elen % 8 == 0);
    const void *raw;
    size_t raw_len;
    void *owned = NULL;
    char why[160];
    CHECK(tr_entry_decode(e, elen, &raw, &raw_len, &owned, why, sizeof why) == TR_OK);
    CHECK(raw_len >= size && memcmp(raw, data, size) == 0);
    if (owned)
        CHECK(raw_len == size);
    free(owned);
    raft_free(e);
    return 0;
}
