/* Private seam between the files of storage/. Not for use outside storage/. */
#ifndef TR_STORAGE_INTERNAL_H
#define TR_STORAGE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include <rocksdb/c.h>

#include "storage.h"

/* Node-local meta keys (first byte 0x00). */
#define TR__META_LAST_APPLIED "\0last_applied"
#define TR__META_LAST_APPLIED_LEN 13
#define TR__META_FORMAT "\0format"
#define TR__META_FORMAT_LEN 7

struct tr_store {
    char *path;
    rocksdb_t *db;
    rocksdb_column_family_handle_t *cf[TR_CF_COUNT];
    rocksdb_column_family_handle_t *cf_default;
    rocksdb_options_t *db_opts;
    rocksdb_options_t *cf_opts[TR_CF_COUNT];
    rocksdb_cache_t *cache;
    rocksdb_writeoptions_t *wopts;      /* commits: sync per tr_store_opts */
    rocksdb_writeoptions_t *wopts_sync; /* restore and format: always sync */
    rocksdb_readoptions_t *ropts;       /* point reads, latest state */

    _Atomic uint64_t last_applied;
    _Atomic uint64_t cf_gen[TR_CF_COUNT]; /* tr_store_cf_gen */

    /* Sticky failure: failed is set (release) after fail_err is written. */
    atomic_int failed;
    pthread_mutex_t fail_mu;
    struct tr_err fail_err;

    pthread_mutex_t flush_mu;           /* one tr_store_flush at a time */
};

struct tr_batch {
    struct tr_store *s;
    rocksdb_writebatch_t *wb;
    struct tr_err err; /* first refused operation; code 0 if none */
    uint32_t touched;  /* families written (bit per enum tr_cf) */
};

struct tr_store_view {
    struct tr_store *s;
    const rocksdb_snapshot_t *snap;
    uint64_t last_applied;
};

struct tr_store_iter {
    rocksdb_iterator_t *it;
    rocksdb_readoptions_t *ropts;
    unsigned char *lower; /* bound copies: RocksDB keeps pointers to them */
    unsigned char *upper;
    size_t lower_len, upper_len;
    int started;
};

/* Lets public functions accept err == NULL. */
#define TR__ERR_OR_LOCAL(err)                                                              \
    struct tr_err err##_local_;                                                            \
    if ((err) == NULL)                                                                     \
    (err) = &err##_local_

/* Translate a RocksDB error string (freed here) into err with context; returns
 * the code. */
int tr__rdb_err(struct tr_err *err, char *rdb_msg, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Put the store into its sticky failed state with e's message (first wins). */
void tr__store_fail(struct tr_store *s, const struct tr_err *e);
/* After a write that reached the families in mask (bit per enum tr_cf). */
void tr__store_bump_gens(struct tr_store *s, uint32_t mask);
/* TR_OK, or the sticky code with its message in err. */
int tr__store_check_writable(struct tr_store *s, struct tr_err *err);

/* Read options for v (NULL: latest); caller destroys. */
rocksdb_readoptions_t *tr__ropts_new(struct tr_store *s, struct tr_store_view *v);

/* Raw get into a tr_malloc'd copy; TR_ENOTFOUND when absent. No key checks. */
int tr__get_raw(struct tr_store *s, struct tr_store_view *v, enum tr_cf cf, const void *key,
                size_t klen, void **val, size_t *vlen, struct tr_err *err);

/* Raw iterator without key checks, may include reserved meta keys.
 * within_prefix: all keys share the journal's 8-byte prefix (prefix seek and
 * bloom); otherwise total-order seek. */
int tr__iter_open_raw(struct tr_store *s, struct tr_store_view *v, enum tr_cf cf,
                      const void *lower, size_t lower_len, const void *upper, size_t upper_len,
                      int within_prefix, struct tr_store_iter **out, struct tr_err *err);

/* tr_batch_put without the blobs-family restriction (for the blob store). */
int tr__batch_put_any(struct tr_batch *b, enum tr_cf cf, const void *key, size_t klen,
                      const void *val, size_t vlen);

/* Big-endian helpers. */
static inline void tr__put_be64(unsigned char *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (unsigned char)(v & 0xff);
        v >>= 8;
    }
}
static inline uint64_t tr__get_be64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}
static inline void tr__put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}
static inline uint32_t tr__get_be32(const unsigned char *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/* Digest builder shared by tr_store_digest and snapshot checking. */
#include <sodium.h>
struct tr__digest {
    crypto_generichash_state h;
    uint64_t count; /* entries of the current family */
};
void tr__digest_init(struct tr__digest *d);
void tr__digest_family(struct tr__digest *d, enum tr_cf cf);
void tr__digest_entry(struct tr__digest *d, const void *k, size_t klen, const void *v,
                      size_t vlen);
void tr__digest_family_end(struct tr__digest *d);
void tr__digest_final(struct tr__digest *d, unsigned char out[TR_STATE_DIGEST_LEN]);

/* The lowest key of the replicated part of a family (meta skips 0x00 keys). */
void tr__family_lower(enum tr_cf cf, const void **lower, size_t *len);

#endif
