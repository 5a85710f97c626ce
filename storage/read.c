/* Point-in-time views, point reads and bounded forward iteration.
 *
 * Every iterator carries both bounds to RocksDB (iterate_lower_bound and
 * iterate_upper_bound) so it never walks past its range, and uses total-order
 * seek so the journal's prefix extractor cannot cut a cross-prefix scan short.
 */
#include <string.h>

#include "internal.h"

/* Meta's replicated keys start at 0x01; 0x00.. keys are node-local. */
static const unsigned char meta_lower[1] = {0x01};

void tr__family_lower(enum tr_cf cf, const void **lower, size_t *len)
{
    if (cf == TR_CF_META) {
        *lower = meta_lower;
        *len = 1;
    } else {
        *lower = NULL;
        *len = 0;
    }
}

rocksdb_readoptions_t *tr__ropts_new(struct tr_store *s, struct tr_store_view *v)
{
    rocksdb_readoptions_t *r = rocksdb_readoptions_create();
    if (v != NULL)
        rocksdb_readoptions_set_snapshot(r, v->snap);
    (void)s;
    return r;
}

struct tr_store_view *tr_store_view_open(struct tr_store *s)
{
    struct tr_store_view *v = tr_calloc(1, sizeof(*v));
    v->s = s;
    v->snap = rocksdb_create_snapshot(s->db);
    void *val = NULL;
    size_t vlen = 0;
    struct tr_err e;
    if (tr__get_raw(s, v, TR_CF_META, TR__META_LAST_APPLIED, TR__META_LAST_APPLIED_LEN, &val,
                    &vlen, &e) == TR_OK) {
        if (vlen == 8)
            v->last_applied = tr__get_be64(val);
        tr_free(val);
    }
    return v;
}

void tr_store_view_close(struct tr_store_view *v)
{
    if (v == NULL)
        return;
    rocksdb_release_snapshot(v->s->db, v->snap);
    tr_free(v);
}

uint64_t tr_store_view_last_applied(struct tr_store_view *v)
{
    return v->last_applied;
}

int tr__get_raw(struct tr_store *s, struct tr_store_view *v, enum tr_cf cf, const void *key,
                size_t klen, void **val, size_t *vlen, struct tr_err *err)
{
    char *e = NULL;
    rocksdb_readoptions_t *r = v != NULL ? tr__ropts_new(s, v) : s->ropts;
    rocksdb_pinnableslice_t *p =
        rocksdb_get_pinned_cf(s->db, r, s->cf[cf], (const char *)key, klen, &e);
    if (v != NULL)
        rocksdb_readoptions_destroy(r);
    *val = NULL;
    *vlen = 0;
    if (e != NULL)
        return tr__rdb_err(err, e, "get %s", tr_cf_name(cf));
    if (p == NULL)
        return tr_err_set(err, TR_ENOTFOUND, "%s: key not found", tr_cf_name(cf));
    size_t n = 0;
    const char *data = rocksdb_pinnableslice_value(p, &n);
    *val = tr_memdup(data, n);
    *vlen = n;
    rocksdb_pinnableslice_destroy(p);
    return TR_OK;
}

static int check_key(enum tr_cf cf, const void *key, size_t klen, struct tr_err *err)
{
    if ((int)cf < 0 || cf >= TR_CF_COUNT)
        return tr_err_set(err, TR_EINVAL, "no column family %d", (int)cf);
    if (klen == 0 || key == NULL)
        return tr_err_set(err, TR_EINVAL, "%s: empty key", tr_cf_name(cf));
    if (klen > TR_STORE_KEY_MAX)
        return tr_err_set(err, TR_ETOOBIG, "%s: key of %zu bytes (max %d)", tr_cf_name(cf), klen,
                          TR_STORE_KEY_MAX);
    if (cf == TR_CF_META && ((const unsigned char *)key)[0] == 0)
        return tr_err_set(err, TR_EINVAL, "meta: keys starting with 0x00 are reserved");
    return TR_OK;
}

int tr_store_get(struct tr_store *s, struct tr_store_view *v, enum tr_cf cf, const void *key,
                 size_t klen, void **val, size_t *vlen, struct tr_err *err)
{
    TR__ERR_OR_LOCAL(err);
    *val = NULL;
    *vlen = 0;
    int rv = check_key(cf, key, klen, err);
    if (rv != TR_OK)
        return rv;
    return tr__get_raw(s, v, cf, key, klen, val, vlen, err);
}

int tr__iter_open_raw(struct tr_store *s, struct tr_store_view *v, enum tr_cf cf,
                      const void *lower, size_t lower_len, const void *upper, size_t upper_len,
                      int within_prefix, struct tr_store_iter **out, struct tr_err *err)
{
    struct tr_store_iter *it = tr_calloc(1, sizeof(*it));
    it->ropts = tr__ropts_new(s, v);
    if (within_prefix)
        rocksdb_readoptions_set_prefix_same_as_start(it->ropts, 1);
    else
        rocksdb_readoptions_set_total_order_seek(it->ropts, 1);
    if (lower != NULL) {
        it->lower = tr_memdup(lower, lower_len);
        it->lower_len = lower_len;
        rocksdb_readoptions_set_iterate_lower_bound(it->ropts, (const char *)it->lower,
                                                    lower_len);
    }
    if (upper != NULL) {
        it->upper = tr_memdup(upper, upper_len);
        it->upper_len = upper_len;
        rocksdb_readoptions_set_iterate_upper_bound(it->ropts, (const char *)it->upper,
                                                    upper_len);
    }
    it->it = rocksdb_create_iterator_cf(s->db, it->ropts, s->cf[cf]);
    (void)err;
    *out = it;
    return TR_OK;
}

int tr_store_iter_open(struct tr_store *s, struct tr_store_view *v, enum tr_cf cf,
                       const void *lower, size_t lower_len, const void *upper, size_t upper_len,
                       struct tr_store_iter **out, struct tr_err *err)
{
    TR__ERR_OR_LOCAL(err);
    *out = NULL;
    if ((int)cf < 0 || cf >= TR_CF_COUNT)
        return tr_err_set(err, TR_EINVAL, "no column family %d", (int)cf);
    if (lower_len > TR_STORE_KEY_MAX + 1 || upper_len > TR_STORE_KEY_MAX + 1)
        return tr_err_set(err, TR_ETOOBIG, "iterator bound too long");
    /* Never expose node-local meta keys: clamp the lower bound to 0x01. */
    if (cf == TR_CF_META && (lower == NULL || lower_len == 0 ||
                             ((const unsigned char *)lower)[0] == 0)) {
        tr__family_lower(cf, &lower, &lower_len);
    }
    return tr__iter_open_raw(s, v, cf, lower, lower_len, upper, upper_len, 0, out, err);
}

/* The smallest key greater than every key starting with prefix, in *upper
 * (tr_malloc'd), or NULL when the prefix is all 0xff (no bound needed). */
static unsigned char *prefix_upper(const unsigned char *prefix, size_t plen, size_t *ulen)
{
    size_t n = plen;
    while (n > 0 && prefix[n - 1] == 0xff)
        n--;
    if (n == 0)
        return NULL;
    unsigned char *u = tr_memdup(prefix, n);
    u[n - 1]++;
    *ulen = n;
    return u;
}

int tr_store_iter_prefix(struct tr_store *s, struct tr_store_view *v, enum tr_cf cf,
                         const void *prefix, size_t plen, struct tr_store_iter **out,
                         struct tr_err *err)
{
    TR__ERR_OR_LOCAL(err);
    *out = NULL;
    if (prefix == NULL || plen == 0)
        return tr_err_set(err, TR_EINVAL, "empty prefix");
    size_t ulen = 0;
    unsigned char *upper = prefix_upper(prefix, plen, &ulen);
    int rv = tr_store_iter_open(s, v, cf, prefix, plen, upper, ulen, out, err);
    tr_free(upper);
    return rv;
}

int tr_store_iter_next(struct tr_store_iter *it, const void **key, size_t *klen,
                       const void **val, size_t *vlen, struct tr_err *err)
{
    TR__ERR_OR_LOCAL(err);
    if (!it->started) {
        if (it->lower != NULL)
            rocksdb_iter_seek(it->it, (const char *)it->lower, it->lower_len);
        else
            rocksdb_iter_seek_to_first(it->it);
        it->started = 1;
    } else {
        rocksdb_iter_next(it->it);
    }
    if (!rocksdb_iter_valid(it->it)) {
        char *e = NULL;
        rocksdb_iter_get_error(it->it, &e);
        if (e != NULL)
            return tr__rdb_err(err, e, "iterate");
        return 0;
    }
    size_t kl = 0, vl = 0;
    const char *k = rocksdb_iter_key(it->it, &kl);
    const char *vv = NULL;
    if (val != NULL || vlen != NULL)
        vv = rocksdb_iter_value(it->it, &vl);
    if (key != NULL)
        *key = k;
    if (klen != NULL)
        *klen = kl;
    if (val != NULL)
        *val = vv;
    if (vlen != NULL)
        *vlen = vl;
    return 1;
}

void tr_store_iter_close(struct tr_store_iter *it)
{
    if (it == NULL)
        return;
    rocksdb_iter_destroy(it->it);
    rocksdb_readoptions_destroy(it->ropts);
    tr_free(it->lower);
    tr_free(it->upper);
    tr_free(it);
}
