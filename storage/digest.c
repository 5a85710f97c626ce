/* The state digest: BLAKE2b-256 over every replicated family, read from one
 * point-in-time view. Encoding, all integers big-endian:
 *
 *   "troupe.state.v1"
 *   for each family in enum tr_cf order:
 *     'F' u32 name_len name
 *     for each entry in key order:  'K' u32 klen key u64 vlen value
 *     'E' u64 entry_count
 *
 * Every variable-length field carries its length and every record its tag,
 * so two different states cannot encode to the same byte string: an entry
 * cannot move into a neighbour, a family cannot absorb another's entries.
 * Node-local meta keys (first byte 0x00: last_applied, format) are left out.
 */
#include <string.h>

#include "internal.h"

static const char domain[] = "troupe.state.v1";

void tr__digest_init(struct tr__digest *d)
{
    crypto_generichash_init(&d->h, NULL, 0, TR_STATE_DIGEST_LEN);
    crypto_generichash_update(&d->h, (const unsigned char *)domain, sizeof(domain) - 1);
    d->count = 0;
}

void tr__digest_family(struct tr__digest *d, enum tr_cf cf)
{
    const char *name = tr_cf_name(cf);
    unsigned char hdr[5];
    size_t n = strlen(name);
    hdr[0] = 'F';
    tr__put_be32(hdr + 1, (uint32_t)n);
    crypto_generichash_update(&d->h, hdr, sizeof(hdr));
    crypto_generichash_update(&d->h, (const unsigned char *)name, n);
    d->count = 0;
}

void tr__digest_entry(struct tr__digest *d, const void *k, size_t klen, const void *v,
                      size_t vlen)
{
    unsigned char kh[5], vh[8];
    kh[0] = 'K';
    tr__put_be32(kh + 1, (uint32_t)klen);
    tr__put_be64(vh, vlen);
    crypto_generichash_update(&d->h, kh, sizeof(kh));
    crypto_generichash_update(&d->h, k, klen);
    crypto_generichash_update(&d->h, vh, sizeof(vh));
    if (vlen > 0)
        crypto_generichash_update(&d->h, v, vlen);
    d->count++;
}

void tr__digest_family_end(struct tr__digest *d)
{
    unsigned char e[9];
    e[0] = 'E';
    tr__put_be64(e + 1, d->count);
    crypto_generichash_update(&d->h, e, sizeof(e));
}

void tr__digest_final(struct tr__digest *d, unsigned char out[TR_STATE_DIGEST_LEN])
{
    crypto_generichash_final(&d->h, out, TR_STATE_DIGEST_LEN);
}

int tr_store_digest(struct tr_store *s, struct tr_store_view *v,
                    unsigned char out[TR_STATE_DIGEST_LEN], uint64_t *last_applied_out,
                    struct tr_err *err)
{
    struct tr__digest d;
    struct tr_store_view *own = NULL;
    int rv = TR_OK;

    TR__ERR_OR_LOCAL(err);
    if (v == NULL)
        v = own = tr_store_view_open(s);
    tr__digest_init(&d);
    for (int cf = 0; cf < TR_CF_COUNT && rv == TR_OK; cf++) {
        struct tr_store_iter *it = NULL;
        const void *lower, *k, *val;
        size_t lower_len, klen, vlen;
        tr__family_lower((enum tr_cf)cf, &lower, &lower_len);
        rv = tr__iter_open_raw(s, v, (enum tr_cf)cf, lower, lower_len, NULL, 0, 0, &it, err);
        if (rv != TR_OK)
            break;
        tr__digest_family(&d, (enum tr_cf)cf);
        while ((rv = tr_store_iter_next(it, &k, &klen, &val, &vlen, err)) == 1)
            tr__digest_entry(&d, k, klen, val, vlen);
        tr_store_iter_close(it);
        if (rv < 0) {
            tr_err_wrap(err, "digest %s", tr_cf_name((enum tr_cf)cf));
            break;
        }
        rv = TR_OK;
        tr__digest_family_end(&d);
    }
    tr__digest_final(&d, out);
    if (rv == TR_OK && last_applied_out != NULL)
        *last_applied_out = v->last_applied;
    tr_store_view_close(own);
    return rv;
}
