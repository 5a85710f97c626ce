/* Atomic write batches: everything one raft entry changes, plus
 * meta.last_applied, in a single RocksDB write.
 *
 * Failure modes: a refused operation (bad input) is recorded in the batch and
 * fails its commit without writing; the store stays writable. A failed
 * RocksDB write puts the store into its sticky failed state: what reached the
 * WAL is unknown, so nothing more may be written on top of it until a reopen
 * has recovered a consistent state and raft re-applies from last_applied.
 */
#include <stdio.h>
#include <string.h>

#include "internal.h"

struct tr_batch *tr_batch_new(struct tr_store *s)
{
    struct tr_batch *b = tr_calloc(1, sizeof(*b));
    b->s = s;
    b->wb = rocksdb_writebatch_create();
    return b;
}

void tr_batch_free(struct tr_batch *b)
{
    if (b == NULL)
        return;
    rocksdb_writebatch_destroy(b->wb);
    tr_free(b);
}

void tr_batch_clear(struct tr_batch *b)
{
    rocksdb_writebatch_clear(b->wb);
    tr_err_clear(&b->err);
    b->touched = 0;
}

size_t tr_batch_count(struct tr_batch *b)
{
    return (size_t)rocksdb_writebatch_count(b->wb);
}

size_t tr_batch_bytes(struct tr_batch *b)
{
    size_t n = 0;
    rocksdb_writebatch_data(b->wb, &n);
    return n;
}

/* Record the first refused operation; returns its code. */
static int refuse(struct tr_batch *b, int code, const char *what)
{
    if (b->err.code == 0)
        tr_err_set(&b->err, code, "%s", what);
    return code;
}

static int check_op(struct tr_batch *b, enum tr_cf cf, const void *key, size_t klen, size_t vlen)
{
    char msg[160];
    if ((int)cf < 0 || cf >= TR_CF_COUNT) {
        snprintf(msg, sizeof(msg), "no column family %d", (int)cf);
        return refuse(b, TR_EINVAL, msg);
    }
    if (key == NULL || klen == 0) {
        snprintf(msg, sizeof(msg), "%s: empty key", tr_cf_name(cf));
        return refuse(b, TR_EINVAL, msg);
    }
    if (klen > TR_STORE_KEY_MAX) {
        snprintf(msg, sizeof(msg), "%s: key of %zu bytes (max %d)", tr_cf_name(cf), klen,
                 TR_STORE_KEY_MAX);
        return refuse(b, TR_ETOOBIG, msg);
    }
    if (vlen > TR_STORE_VALUE_MAX) {
        snprintf(msg, sizeof(msg), "%s: value of %zu bytes (max %u)", tr_cf_name(cf), vlen,
                 TR_STORE_VALUE_MAX);
        return refuse(b, TR_ETOOBIG, msg);
    }
    if (cf == TR_CF_META && ((const unsigned char *)key)[0] == 0)
        return refuse(b, TR_EINVAL, "meta: keys starting with 0x00 are reserved");
    if (tr_batch_bytes(b) + klen + vlen + 32 > TR_BATCH_MAX) {
        snprintf(msg, sizeof(msg), "batch would exceed %u bytes", TR_BATCH_MAX);
        return refuse(b, TR_ETOOBIG, msg);
    }
    return TR_OK;
}

int tr__batch_put_any(struct tr_batch *b, enum tr_cf cf, const void *key, size_t klen,
                      const void *val, size_t vlen)
{
    int rv = check_op(b, cf, key, klen, vlen);
    if (rv != TR_OK)
        return rv;
    rocksdb_writebatch_put_cf(b->wb, b->s->cf[cf], (const char *)key, klen,
                              (const char *)(val != NULL ? val : ""), vlen);
    b->touched |= 1u << cf;
    return TR_OK;
}

int tr_batch_put(struct tr_batch *b, enum tr_cf cf, const void *key, size_t klen,
                 const void *val, size_t vlen)
{
    if (cf == TR_CF_BLOBS)
        return refuse(b, TR_EINVAL, "blobs: use tr_batch_blob_put");
    return tr__batch_put_any(b, cf, key, klen, val, vlen);
}

int tr_batch_delete(struct tr_batch *b, enum tr_cf cf, const void *key, size_t klen)
{
    int rv = check_op(b, cf, key, klen, 0);
    if (rv != TR_OK)
        return rv;
    rocksdb_writebatch_delete_cf(b->wb, b->s->cf[cf], (const char *)key, klen);
    b->touched |= 1u << cf;
    return TR_OK;
}

int tr_batch_commit(struct tr_batch *b, uint64_t raft_index, struct tr_err *err)
{
    struct tr_store *s = b->s;
    char *e = NULL;
    unsigned char idx[8];

    TR__ERR_OR_LOCAL(err);
    int rv = tr__store_check_writable(s, err);
    if (rv != TR_OK)
        return rv;
    if (b->err.code != 0) {
        tr_err_set(err, b->err.code, "batch holds a refused operation: %s", b->err.msg);
        return err->code;
    }
    uint64_t last = tr_store_last_applied(s);
    if (raft_index <= last) {
        return tr_err_set(err, TR_EINVAL, "raft index %llu is not above last_applied %llu",
                          (unsigned long long)raft_index, (unsigned long long)last);
    }
    tr__put_be64(idx, raft_index);
    rocksdb_writebatch_put_cf(b->wb, s->cf[TR_CF_META], TR__META_LAST_APPLIED,
                              TR__META_LAST_APPLIED_LEN, (const char *)idx, 8);
    rocksdb_write(s->db, s->wopts, b->wb, &e);
    if (e != NULL) {
        rv = tr__rdb_err(err, e, "commit raft index %llu", (unsigned long long)raft_index);
        tr__store_fail(s, err);
        return rv;
    }
    atomic_store_explicit(&s->last_applied, raft_index, memory_order_release);
    tr__store_bump_gens(s, b->touched);
    tr_batch_clear(b);
    return TR_OK;
}
