/* Opening, tuning and closing the store; error translation; sticky failure.
 *
 * Open: list the families on disk, open them all (RocksDB requires it), create
 * the missing ones, then check meta's format version: absent means a new
 * store (written now, synced), higher than TR_STORE_FORMAT or an unknown family
 * means a newer program wrote it and we refuse rather than misread it.
 *
 * Tuning, for a write-heavy append workload replicated through raft:
 * - one DB, WAL on, point-in-time WAL recovery: a batch is one WAL record, so
 *   after any crash each batch is wholly present or wholly absent;
 * - atomic_flush: families are flushed together, so a recovered state never
 *   mixes a flushed family with an unflushed one across the WAL tail;
 * - journal: 8-byte run_id prefix extractor with prefix bloom filters, bigger
 *   memtables (it takes most writes);
 * - blobs: integrated BlobDB for values >= TR_BLOB_THRESHOLD, keeping big
 *   payloads out of LSM compactions;
 * - one shared LRU block cache, bloom filters, LZ4, dynamic level sizes.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

static const char *const cf_names[TR_CF_COUNT] = {
    [TR_CF_META] = "meta",         [TR_CF_RUNS] = "runs",
    [TR_CF_JOURNAL] = "journal",   [TR_CF_BLOBS] = "blobs",
    [TR_CF_IDEM] = "idem",         [TR_CF_TOOLS] = "tools",
    [TR_CF_TENANTS] = "tenants",   [TR_CF_CREDENTIALS] = "credentials",
    [TR_CF_APPROVALS] = "approvals", [TR_CF_MEMORY] = "memory",
};

const char *tr_cf_name(enum tr_cf cf)
{
    if ((int)cf < 0 || cf >= TR_CF_COUNT)
        return NULL;
    return cf_names[cf];
}

void tr_store_opts_init(struct tr_store_opts *opts)
{
    memset(opts, 0, sizeof(*opts));
}

static int code_of_rdb(const char *m)
{
    if (strstr(m, "lock file") || strstr(m, "/LOCK:") || strstr(m, "lock hold") ||
        strncmp(m, "Resource busy", 13) == 0)
        return TR_EBUSY;
    if (strncmp(m, "Corruption", 10) == 0)
        return TR_ECORRUPT;
    if (strncmp(m, "Invalid argument", 16) == 0)
        return TR_EINVAL;
    if (strncmp(m, "Not implemented", 15) == 0)
        return TR_ENOTSUP;
    if (strncmp(m, "NotFound", 8) == 0 || strncmp(m, "Not found", 9) == 0)
        return TR_ENOTFOUND;
    return TR_EIO;
}

int tr__rdb_err(struct tr_err *err, char *rdb_msg, const char *fmt, ...)
{
    char ctx[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx, sizeof(ctx), fmt, ap);
    va_end(ap);
    int code = code_of_rdb(rdb_msg);
    if (err != NULL)
        tr_err_set(err, code, "%s: rocksdb: %s", ctx, rdb_msg);
    rocksdb_free(rdb_msg);
    return code;
}

void tr__store_fail(struct tr_store *s, const struct tr_err *e)
{
    pthread_mutex_lock(&s->fail_mu);
    if (!atomic_load_explicit(&s->failed, memory_order_relaxed)) {
        s->fail_err = *e;
        if (s->fail_err.code == 0)
            s->fail_err.code = TR_EIO;
        atomic_store_explicit(&s->failed, 1, memory_order_release);
        tr_log(TR_LOG_ERROR, "storage %s: refusing writes until reopened: %s", s->path,
               s->fail_err.msg);
    }
    pthread_mutex_unlock(&s->fail_mu);
}

int tr__store_check_writable(struct tr_store *s, struct tr_err *err)
{
    if (!atomic_load_explicit(&s->failed, memory_order_acquire))
        return TR_OK;
    if (err != NULL) {
        tr_err_set(err, s->fail_err.code, "store failed earlier, reopen it: %s",
                   s->fail_err.msg);
    }
    return s->fail_err.code;
}

int tr_store_failed(struct tr_store *s, struct tr_err *err)
{
    if (!atomic_load_explicit(&s->failed, memory_order_acquire))
        return TR_OK;
    if (err != NULL)
        *err = s->fail_err;
    return s->fail_err.code;
}

void tr__store_bump_gens(struct tr_store *s, uint32_t mask)
{
    for (int cf = 0; cf < TR_CF_COUNT; cf++)
        if (mask & (1u << cf))
            atomic_fetch_add_explicit(&s->cf_gen[cf], 1, memory_order_release);
}

uint64_t tr_store_cf_gen(struct tr_store *s, enum tr_cf cf)
{
    return atomic_load_explicit(&s->cf_gen[cf], memory_order_acquire);
}

uint64_t tr_store_last_applied(struct tr_store *s)
{
    return atomic_load_explicit(&s->last_applied, memory_order_acquire);
}

/* ------------------------------------------------------------------------ */

static rocksdb_options_t *family_options(struct tr_store *s, enum tr_cf cf,
                                         const struct tr_store_opts *o,
                                         rocksdb_block_based_table_options_t *bbto,
                                         rocksdb_block_based_table_options_t *bbto_prefix)
{
    rocksdb_options_t *fo = rocksdb_options_create();
    size_t wb = o->write_buffer_bytes ? o->write_buffer_bytes : (16u << 20);
    rocksdb_options_set_compression(fo, rocksdb_lz4_compression);
    rocksdb_options_set_level_compaction_dynamic_level_bytes(fo, 1);
    rocksdb_options_set_max_write_buffer_number(fo, 3);
    switch (cf) {
    case TR_CF_JOURNAL:
        /* Owned by fo from here on. */
        rocksdb_options_set_prefix_extractor(fo, rocksdb_slicetransform_create_fixed_prefix(8));
        rocksdb_options_set_memtable_prefix_bloom_size_ratio(fo, 0.05);
        rocksdb_options_set_write_buffer_size(fo, wb * 4);
        rocksdb_options_set_block_based_table_factory(fo, bbto_prefix);
        break;
    case TR_CF_BLOBS:
        rocksdb_options_set_enable_blob_files(fo, 1);
        rocksdb_options_set_min_blob_size(fo, TR_BLOB_THRESHOLD);
        rocksdb_options_set_blob_compression_type(fo, rocksdb_lz4_compression);
        rocksdb_options_set_enable_blob_gc(fo, 1);
        rocksdb_options_set_write_buffer_size(fo, wb);
        rocksdb_options_set_block_based_table_factory(fo, bbto);
        break;
    default:
        rocksdb_options_set_write_buffer_size(fo, wb);
        rocksdb_options_set_block_based_table_factory(fo, bbto);
        break;
    }
    (void)s;
    return fo;
}

static void db_options(struct tr_store *s, const struct tr_store_opts *o)
{
    rocksdb_options_t *d = rocksdb_options_create();
    rocksdb_options_set_create_if_missing(d, 1);
    rocksdb_options_set_create_missing_column_families(d, 1);
    rocksdb_options_set_paranoid_checks(d, 1);
    rocksdb_options_set_atomic_flush(d, 1);
    rocksdb_options_set_wal_recovery_mode(d, 2); /* kPointInTimeRecovery */
    rocksdb_options_set_max_background_jobs(d, o->background_jobs ? o->background_jobs : 2);
    rocksdb_options_set_bytes_per_sync(d, 1u << 20);
    rocksdb_options_set_max_total_wal_size(d, 256u << 20);
    rocksdb_options_set_keep_log_file_num(d, 4);
    rocksdb_options_set_max_log_file_size(d, 8u << 20);
    /* RocksDB's own LOG file: headers only by default. Debian's librocksdb 7.8
     * keeps assertions, and once a LOG append has failed (disk full, file
     * size limit) the next one aborts the process in WritableFileWriter; our
     * errors are reported through tr_log with RocksDB's status text instead. */
    rocksdb_options_set_info_log_level(d, o->rocksdb_log ? 2 /* WARN */ : 5 /* HEADER */);
    s->db_opts = d;
}

/* Read and check (or write) the format version. */
static int check_format(struct tr_store *s, struct tr_err *err)
{
    void *val = NULL;
    size_t vlen = 0;
    int rv = tr__get_raw(s, NULL, TR_CF_META, TR__META_FORMAT, TR__META_FORMAT_LEN, &val, &vlen,
                         err);
    if (rv == TR_ENOTFOUND) {
        unsigned char b[4];
        char *e = NULL;
        tr__put_be32(b, TR_STORE_FORMAT);
        rocksdb_put_cf(s->db, s->wopts_sync, s->cf[TR_CF_META], TR__META_FORMAT,
                       TR__META_FORMAT_LEN, (const char *)b, 4, &e);
        if (e != NULL)
            return tr__rdb_err(err, e, "write format version");
        return TR_OK;
    }
    if (rv != TR_OK)
        return tr_err_wrap(err, "read format version");
    uint32_t version = vlen == 4 ? tr__get_be32(val) : 0;
    tr_free(val);
    if (vlen != 4)
        return tr_err_set(err, TR_ECORRUPT, "format version record has %zu bytes", vlen);
    if (version > TR_STORE_FORMAT) {
        return tr_err_set(err, TR_ENOTSUP,
                          "store format version %u is newer than this program's (%u)", version,
                          TR_STORE_FORMAT);
    }
    return TR_OK;
}

static int load_last_applied(struct tr_store *s, struct tr_err *err)
{
    void *val = NULL;
    size_t vlen = 0;
    int rv = tr__get_raw(s, NULL, TR_CF_META, TR__META_LAST_APPLIED, TR__META_LAST_APPLIED_LEN,
                         &val, &vlen, err);
    if (rv == TR_ENOTFOUND) {
        atomic_store(&s->last_applied, 0);
        return TR_OK;
    }
    if (rv != TR_OK)
        return tr_err_wrap(err, "read last_applied");
    if (vlen != 8) {
        tr_free(val);
        return tr_err_set(err, TR_ECORRUPT, "last_applied record has %zu bytes", vlen);
    }
    atomic_store(&s->last_applied, tr__get_be64(val));
    tr_free(val);
    return TR_OK;
}

static void release(struct tr_store *s)
{
    if (s->db != NULL) {
        for (int i = 0; i < TR_CF_COUNT; i++)
            if (s->cf[i] != NULL)
                rocksdb_column_family_handle_destroy(s->cf[i]);
        if (s->cf_default != NULL)
            rocksdb_column_family_handle_destroy(s->cf_default);
        rocksdb_close(s->db);
    }
    for (int i = 0; i < TR_CF_COUNT; i++)
        if (s->cf_opts[i] != NULL)
            rocksdb_options_destroy(s->cf_opts[i]);
    if (s->db_opts != NULL)
        rocksdb_options_destroy(s->db_opts);
    if (s->cache != NULL)
        rocksdb_cache_destroy(s->cache);
    if (s->wopts != NULL)
        rocksdb_writeoptions_destroy(s->wopts);
    if (s->wopts_sync != NULL)
        rocksdb_writeoptions_destroy(s->wopts_sync);
    if (s->ropts != NULL)
        rocksdb_readoptions_destroy(s->ropts);
    pthread_mutex_destroy(&s->fail_mu);
    pthread_mutex_destroy(&s->flush_mu);
    tr_free(s->path);
    tr_free(s);
}

int tr_store_open(const char *path, const struct tr_store_opts *opts, struct tr_store **out,
                  struct tr_err *err)
{
    struct tr_store_opts defaults;
    char *e = NULL;
    char **existing = NULL;
    size_t n_existing = 0;
    int rv;

    TR__ERR_OR_LOCAL(err);
    *out = NULL;
    if (opts == NULL) {
        tr_store_opts_init(&defaults);
        opts = &defaults;
    }
    struct tr_store *s = tr_calloc(1, sizeof(*s));
    s->path = tr_strdup(path);
    pthread_mutex_init(&s->fail_mu, NULL);
    pthread_mutex_init(&s->flush_mu, NULL);
    db_options(s, opts);
    s->cache = rocksdb_cache_create_lru(opts->block_cache_bytes ? opts->block_cache_bytes
                                                                : (64u << 20));
    rocksdb_block_based_table_options_t *bbto = rocksdb_block_based_options_create();
    rocksdb_block_based_options_set_block_cache(bbto, s->cache);
    rocksdb_block_based_options_set_filter_policy(bbto, rocksdb_filterpolicy_create_bloom_full(10));
    rocksdb_block_based_options_set_format_version(bbto, 5);
    rocksdb_block_based_table_options_t *bbto_prefix = rocksdb_block_based_options_create();
    rocksdb_block_based_options_set_block_cache(bbto_prefix, s->cache);
    rocksdb_block_based_options_set_filter_policy(bbto_prefix,
                                                  rocksdb_filterpolicy_create_bloom_full(10));
    rocksdb_block_based_options_set_whole_key_filtering(bbto_prefix, 0);
    rocksdb_block_based_options_set_format_version(bbto_prefix, 5);
    for (int i = 0; i < TR_CF_COUNT; i++)
        s->cf_opts[i] = family_options(s, (enum tr_cf)i, opts, bbto, bbto_prefix);
    rocksdb_block_based_options_destroy(bbto);
    rocksdb_block_based_options_destroy(bbto_prefix);

    s->wopts = rocksdb_writeoptions_create();
    if (opts->no_wal)
        rocksdb_writeoptions_disable_WAL(s->wopts, 1);
    else
        rocksdb_writeoptions_set_sync(s->wopts, opts->sync ? 1 : 0);
    s->wopts_sync = rocksdb_writeoptions_create();
    rocksdb_writeoptions_set_sync(s->wopts_sync, 1);
    s->ropts = rocksdb_readoptions_create();

    /* Families on disk: every one must be opened; unknown ones are refused. */
    existing = rocksdb_list_column_families(s->db_opts, path, &n_existing, &e);
    if (e != NULL) {
        /* A missing database is expected on first open. The list is
         * allocated even then (empty). */
        rocksdb_free(e);
        e = NULL;
        if (existing != NULL)
            rocksdb_list_column_families_destroy(existing, n_existing);
        existing = NULL;
        n_existing = 0;
    }
    for (size_t i = 0; i < n_existing; i++) {
        int known = strcmp(existing[i], "default") == 0;
        for (int j = 0; j < TR_CF_COUNT && !known; j++)
            known = strcmp(existing[i], cf_names[j]) == 0;
        if (!known) {
            rv = tr_err_set(err, TR_ENOTSUP,
                            "unknown column family \"%s\" (written by a newer program?)",
                            existing[i]);
            goto err_after_list;
        }
    }

    const char *names[TR_CF_COUNT + 1];
    const rocksdb_options_t *fopts[TR_CF_COUNT + 1];
    rocksdb_column_family_handle_t *handles[TR_CF_COUNT + 1];
    names[0] = "default";
    fopts[0] = s->db_opts;
    for (int i = 0; i < TR_CF_COUNT; i++) {
        names[i + 1] = cf_names[i];
        fopts[i + 1] = s->cf_opts[i];
    }
    s->db = rocksdb_open_column_families(s->db_opts, path, TR_CF_COUNT + 1, names, fopts,
                                         handles, &e);
    if (e != NULL) {
        s->db = NULL;
        rv = tr__rdb_err(err, e, "open");
        goto err_after_list;
    }
    s->cf_default = handles[0];
    for (int i = 0; i < TR_CF_COUNT; i++)
        s->cf[i] = handles[i + 1];

    rv = check_format(s, err);
    if (rv != TR_OK)
        goto err_after_list;
    rv = load_last_applied(s, err);
    if (rv != TR_OK)
        goto err_after_list;

    if (existing != NULL)
        rocksdb_list_column_families_destroy(existing, n_existing);
    *out = s;
    return TR_OK;

err_after_list:
    if (existing != NULL)
        rocksdb_list_column_families_destroy(existing, n_existing);
    release(s);
    return tr_err_wrap(err, "storage open %s", path);
}

void tr_store_close(struct tr_store *s)
{
    if (s == NULL)
        return;
    release(s);
}

/* ------------------------------------------------------------------------ */
/* Flush (see tr_store_flush in storage.h).                                   */

/* Remove a checkpoint directory: RocksDB writes plain files into it, no
 * subdirectories. A missing directory is not an error. */
static int remove_flat_dir(const char *dir, struct tr_err *err)
{
    DIR *d = opendir(dir);
    struct dirent *de;

    if (d == NULL)
        return errno == ENOENT ? TR_OK : tr_err_set(err, TR_EIO, "open %s: %s", dir, strerror(errno));
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (unlinkat(dirfd(d), de->d_name, 0) != 0 && errno != ENOENT) {
            int e = errno;
            closedir(d);
            return tr_err_set(err, TR_EIO, "remove %s/%s: %s", dir, de->d_name, strerror(e));
        }
    }
    closedir(d);
    if (rmdir(dir) != 0 && errno != ENOENT)
        return tr_err_set(err, TR_EIO, "remove %s: %s", dir, strerror(errno));
    return TR_OK;
}

int tr_store_flush(struct tr_store *s, struct tr_err *err)
{
    TR__ERR_OR_LOCAL(err);
    char dir[4096];
    char *e = NULL;
    int rv;

    if (snprintf(dir, sizeof dir, "%s.flush", s->path) >= (int)sizeof dir)
        return tr_err_set(err, TR_EINVAL, "store path too long");
    pthread_mutex_lock(&s->flush_mu);
    /* A checkpoint left by a crash during an earlier flush. */
    rv = remove_flat_dir(dir, err);
    if (rv == TR_OK) {
        /* Creating a checkpoint flushes every family first, atomically
         * (atomic_flush), and waits; the hard links it makes are then
         * dropped again. */
        rocksdb_checkpoint_t *cp = rocksdb_checkpoint_object_create(s->db, &e);
        if (e == NULL) {
            rocksdb_checkpoint_create(cp, dir, 0 /* log_size_for_flush: always flush */, &e);
            rocksdb_checkpoint_object_destroy(cp);
        }
        if (e != NULL)
            rv = tr__rdb_err(err, e, "flush");
        int rv2 = remove_flat_dir(dir, rv == TR_OK ? err : NULL);
        if (rv == TR_OK)
            rv = rv2;
    }
    pthread_mutex_unlock(&s->flush_mu);
    return rv;
}
