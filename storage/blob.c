/* Content-addressed blobs in TR_CF_BLOBS: key BLAKE2b-256(payload) -> payload.
 * Reads re-hash the payload and return TR_ECORRUPT on any mismatch, so a
 * damaged or misfiled blob is never handed out as the bytes it names. */
#include <sodium.h>
#include <string.h>

#include "internal.h"

void tr_blob_digest(const void *data, size_t len, unsigned char out[TR_BLOB_DIGEST_LEN])
{
    crypto_generichash(out, TR_BLOB_DIGEST_LEN, data, len, NULL, 0);
}

static void hex(const unsigned char *d, char out[17])
{
    static const char x[] = "0123456789abcdef";
    for (int i = 0; i < 8; i++) {
        out[2 * i] = x[d[i] >> 4];
        out[2 * i + 1] = x[d[i] & 15];
    }
    out[16] = 0;
}

int tr_batch_blob_put(struct tr_batch *b, const void *data, size_t len,
                      unsigned char digest_out[TR_BLOB_DIGEST_LEN])
{
    unsigned char d[TR_BLOB_DIGEST_LEN];

    tr_blob_digest(data, len, d);
    if (digest_out != NULL)
        memcpy(digest_out, d, sizeof(d));
    /* Present already (same digest, so the same bytes): nothing to write. A
     * read error just means we write it again, which is harmless. Either way
     * the resulting state is the same on every replica. */
    rocksdb_pinnableslice_t *p = NULL;
    char *err = NULL;
    p = rocksdb_get_pinned_cf(b->s->db, b->s->ropts, b->s->cf[TR_CF_BLOBS], (const char *)d,
                              sizeof(d), &err);
    if (err != NULL)
        rocksdb_free(err);
    if (p != NULL) {
        rocksdb_pinnableslice_destroy(p);
        return TR_OK;
    }
    return tr__batch_put_any(b, TR_CF_BLOBS, d, sizeof(d), data, len);
}

int tr_blob_get(struct tr_store *s, struct tr_store_view *v,
                const unsigned char digest[TR_BLOB_DIGEST_LEN], void **data, size_t *len,
                struct tr_err *err)
{
    unsigned char check[TR_BLOB_DIGEST_LEN];
    char name[17];
    void *val = NULL;
    size_t vlen = 0;

    TR__ERR_OR_LOCAL(err);
    *data = NULL;
    *len = 0;
    hex(digest, name);
    int rv = tr__get_raw(s, v, TR_CF_BLOBS, digest, TR_BLOB_DIGEST_LEN, &val, &vlen, err);
    if (rv != TR_OK)
        return tr_err_wrap(err, "blob %s", name);
    tr_blob_digest(val, vlen, check);
    if (sodium_memcmp(check, digest, sizeof(check)) != 0) {
        tr_free(val);
        return tr_err_set(err, TR_ECORRUPT, "blob %s: stored bytes do not match the digest",
                          name);
    }
    *data = val;
    *len = vlen;
    return TR_OK;
}
