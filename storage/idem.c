/* Idempotency index in TR_CF_IDEM: tenant || 0x00 || key -> run_id (8 bytes
 * BE) || request hash (32 bytes). The 0x00 separator and a tenant without
 * 0x00 make (tenant, key) -> storage key injective. */
#include <string.h>

#include "internal.h"

#define VAL_LEN (8 + TR_IDEM_HASH_LEN)

static int make_key(const void *tenant, size_t tlen, const void *key, size_t klen,
                    unsigned char *out, size_t *olen, struct tr_err *err)
{
    if (tenant == NULL || tlen == 0 || tlen > TR_IDEM_TENANT_MAX)
        return tr_err_set(err, TR_EINVAL, "idempotency: tenant of %zu bytes", tlen);
    if (memchr(tenant, 0, tlen) != NULL)
        return tr_err_set(err, TR_EINVAL, "idempotency: tenant contains 0x00");
    if (key == NULL || klen == 0 || klen > TR_IDEM_KEY_MAX)
        return tr_err_set(err, TR_EINVAL, "idempotency: key of %zu bytes", klen);
    memcpy(out, tenant, tlen);
    out[tlen] = 0;
    memcpy(out + tlen + 1, key, klen);
    *olen = tlen + 1 + klen;
    return TR_OK;
}

int tr_batch_idem_put(struct tr_batch *b, const void *tenant, size_t tlen, const void *key,
                      size_t klen, tr_run_id run, const unsigned char req_hash[TR_IDEM_HASH_LEN])
{
    unsigned char k[TR_IDEM_TENANT_MAX + 1 + TR_IDEM_KEY_MAX];
    unsigned char v[VAL_LEN];
    size_t n = 0;
    struct tr_err e;

    int rv = make_key(tenant, tlen, key, klen, k, &n, &e);
    if (rv != TR_OK) {
        if (b->err.code == 0)
            b->err = e;
        return rv;
    }
    tr__put_be64(v, run);
    memcpy(v + 8, req_hash, TR_IDEM_HASH_LEN);
    return tr__batch_put_any(b, TR_CF_IDEM, k, n, v, sizeof(v));
}

int tr_idem_get(struct tr_store *s, struct tr_store_view *v, const void *tenant, size_t tlen,
                const void *key, size_t klen, tr_run_id *run,
                unsigned char req_hash_out[TR_IDEM_HASH_LEN], struct tr_err *err)
{
    unsigned char k[TR_IDEM_TENANT_MAX + 1 + TR_IDEM_KEY_MAX];
    size_t n = 0;
    void *val = NULL;
    size_t vlen = 0;

    TR__ERR_OR_LOCAL(err);
    int rv = make_key(tenant, tlen, key, klen, k, &n, err);
    if (rv != TR_OK)
        return rv;
    rv = tr__get_raw(s, v, TR_CF_IDEM, k, n, &val, &vlen, err);
    if (rv != TR_OK)
        return rv;
    if (vlen != VAL_LEN) {
        tr_free(val);
        return tr_err_set(err, TR_ECORRUPT, "idempotency record of %zu bytes", vlen);
    }
    *run = tr__get_be64(val);
    if (req_hash_out != NULL)
        memcpy(req_hash_out, (unsigned char *)val + 8, TR_IDEM_HASH_LEN);
    tr_free(val);
    return TR_OK;
}
