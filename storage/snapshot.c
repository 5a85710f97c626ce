/* Raft snapshots of the replicated state, and restoring from them.
 *
 * Stream format v1 (all integers big-endian):
 *
 *   header  "TRSNAP01" u32 store_format u32 n_families u64 last_applied u64 0
 *   for each family in enum tr_cf order (all of them, even empty):
 *     'F' u8 name_len name
 *     for each entry in key order: 'K' u32 klen u32 vlen key value
 *   footer  'Z' u64 n_entries  state_digest[32]  checksum[32]
 *
 * checksum is BLAKE2b-256 of every byte before it; state_digest is what
 * tr_store_digest gives for the same view, so a restored store can be proved
 * equal to the source. Records are self-delimiting, so the stream may be cut
 * into chunks anywhere.
 *
 * Restore is two passes over the stream: the first checks everything
 * (framing, family order, strictly increasing keys, limits, digest, checksum)
 * without touching the store; the second builds one write batch that deletes
 * each replicated family's whole key range (meta from 0x01, keeping node-local
 * keys), puts every entry and sets last_applied, and writes it synced. Either
 * the old state or the new one survives a crash, never a mix.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

#define MAGIC "TRSNAP01"
#define HEADER_LEN 32
#define DEFAULT_CHUNK (1u << 20)

/* ------------------------------------------------------------------------ */
/* Writing.                                                                   */

struct writer {
    tr_snapshot_sink_fn sink;
    void *ud;
    unsigned char *buf;
    size_t cap, len;
    crypto_generichash_state sum;
    struct tr_err *err;
    int rv;
};

static void w_flush(struct writer *w)
{
    if (w->rv == TR_OK && w->len > 0) {
        int rv = w->sink(w->ud, w->buf, w->len, w->err);
        if (rv != 0) {
            if (w->err->code == 0)
                tr_err_set(w->err, rv, "snapshot sink failed");
            w->rv = rv;
        }
    }
    w->len = 0;
}

/* Append to the stream; counted in the checksum unless raw. */
static void w_put(struct writer *w, const void *p, size_t n, int raw)
{
    const unsigned char *c = p;
    if (!raw)
        crypto_generichash_update(&w->sum, c, n);
    while (n > 0 && w->rv == TR_OK) {
        size_t take = w->cap - w->len < n ? w->cap - w->len : n;
        memcpy(w->buf + w->len, c, take);
        w->len += take;
        c += take;
        n -= take;
        if (w->len == w->cap)
            w_flush(w);
    }
}

int tr_store_snapshot(struct tr_store *s, struct tr_store_view *v, size_t chunk,
                      tr_snapshot_sink_fn sink, void *ud, uint64_t *index_out,
                      struct tr_err *err)
{
    struct tr_store_view *own = NULL;
    struct tr__digest d;
    struct writer w = {.sink = sink, .ud = ud, .err = NULL, .rv = TR_OK};
    unsigned char hdr[HEADER_LEN];
    uint64_t total = 0;

    TR__ERR_OR_LOCAL(err);
    tr_err_clear(err);
    w.err = err;
    w.cap = chunk ? chunk : DEFAULT_CHUNK;
    w.buf = tr_malloc(w.cap);
    crypto_generichash_init(&w.sum, NULL, 0, 32);
    if (v == NULL)
        v = own = tr_store_view_open(s);

    memset(hdr, 0, sizeof(hdr));
    memcpy(hdr, MAGIC, 8);
    tr__put_be32(hdr + 8, TR_STORE_FORMAT);
    tr__put_be32(hdr + 12, TR_CF_COUNT);
    tr__put_be64(hdr + 16, v->last_applied);
    w_put(&w, hdr, sizeof(hdr), 0);

    tr__digest_init(&d);
    for (int cf = 0; cf < TR_CF_COUNT && w.rv == TR_OK; cf++) {
        struct tr_store_iter *it = NULL;
        const void *lower, *k, *val;
        size_t lower_len, klen, vlen;
        const char *name = tr_cf_name((enum tr_cf)cf);
        unsigned char fh[2] = {'F', (unsigned char)strlen(name)};
        int rv;

        w_put(&w, fh, 2, 0);
        w_put(&w, name, fh[1], 0);
        tr__digest_family(&d, (enum tr_cf)cf);
        tr__family_lower((enum tr_cf)cf, &lower, &lower_len);
        rv = tr__iter_open_raw(s, v, (enum tr_cf)cf, lower, lower_len, NULL, 0, 0, &it, err);
        if (rv != TR_OK) {
            w.rv = rv;
            break;
        }
        while (w.rv == TR_OK && (rv = tr_store_iter_next(it, &k, &klen, &val, &vlen, err)) == 1) {
            unsigned char eh[9];
            eh[0] = 'K';
            tr__put_be32(eh + 1, (uint32_t)klen);
            tr__put_be32(eh + 5, (uint32_t)vlen);
            w_put(&w, eh, 9, 0);
            w_put(&w, k, klen, 0);
            w_put(&w, val, vlen, 0);
            tr__digest_entry(&d, k, klen, val, vlen);
            total++;
        }
        tr_store_iter_close(it);
        if (rv < 0 && w.rv == TR_OK)
            w.rv = rv;
        tr__digest_family_end(&d);
    }
    if (w.rv == TR_OK) {
        unsigned char foot[1 + 8 + TR_STATE_DIGEST_LEN], sum[32];
        foot[0] = 'Z';
        tr__put_be64(foot + 1, total);
        tr__digest_final(&d, foot + 9);
        w_put(&w, foot, sizeof(foot), 0);
        crypto_generichash_final(&w.sum, sum, sizeof(sum));
        w_put(&w, sum, sizeof(sum), 1);
        w_flush(&w);
    }
    if (w.rv == TR_OK && index_out != NULL)
        *index_out = v->last_applied;
    tr_free(w.buf);
    tr_store_view_close(own);
    if (w.rv != TR_OK)
        return tr_err_wrap(err, "snapshot");
    return TR_OK;
}

struct chunks {
    struct tr_snapshot_chunk *v;
    unsigned n, cap;
};

static int chunk_sink_cb(void *ud, const void *data, size_t len, struct tr_err *err)
{
    struct chunks *c = ud;
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 16;
        c->v = tr_realloc(c->v, c->cap * sizeof(*c->v));
    }
    c->v[c->n].base = tr_memdup(data, len);
    c->v[c->n].len = len;
    c->n++;
    (void)err;
    return 0;
}

void tr_snapshot_chunks_free(struct tr_snapshot_chunk *chunks, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        tr_free(chunks[i].base);
    tr_free(chunks);
}

int tr_store_snapshot_chunks(struct tr_store *s, struct tr_store_view *v, size_t chunk,
                             struct tr_snapshot_chunk **chunks, unsigned *n, uint64_t *index_out,
                             struct tr_err *err)
{
    struct chunks c = {0};
    *chunks = NULL;
    *n = 0;
    int rv = tr_store_snapshot(s, v, chunk, chunk_sink_cb, &c, index_out, err);
    if (rv != TR_OK) {
        tr_snapshot_chunks_free(c.v, c.n);
        return rv;
    }
    *chunks = c.v;
    *n = c.n;
    return TR_OK;
}

static int fd_sink_cb(void *ud, const void *data, size_t len, struct tr_err *err)
{
    int fd = *(int *)ud;
    const char *p = data;
    while (len > 0) {
        ssize_t k = write(fd, p, len);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return tr_err_set(err, TR_EIO, "write: %s", strerror(errno));
        p += k;
        len -= (size_t)k;
    }
    return 0;
}

int tr_store_snapshot_file(struct tr_store *s, struct tr_store_view *v, const char *path,
                           uint64_t *index_out, struct tr_err *err)
{
    TR__ERR_OR_LOCAL(err);
    size_t plen = strlen(path);
    char *tmp = tr_malloc(plen + 5);
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp", 5);
    int rv;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        rv = tr_err_set(err, TR_EIO, "open %s: %s", tmp, strerror(errno));
        goto err_after_tmp;
    }
    rv = tr_store_snapshot(s, v, 0, fd_sink_cb, &fd, index_out, err);
    if (rv != TR_OK)
        goto err_after_open;
    if (fsync(fd) != 0) {
        rv = tr_err_set(err, TR_EIO, "fsync %s: %s", tmp, strerror(errno));
        goto err_after_open;
    }
    close(fd);
    if (rename(tmp, path) != 0) {
        rv = tr_err_set(err, TR_EIO, "rename %s: %s", tmp, strerror(errno));
        goto err_after_write;
    }
    /* Make the rename durable. */
    char *dir = tr_strdup(path);
    char *slash = strrchr(dir, '/');
    if (slash == dir)
        slash[1] = 0;
    else if (slash != NULL)
        *slash = 0;
    else
        strcpy(dir, ".");
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    tr_free(dir);
    tr_free(tmp);
    return TR_OK;

err_after_open:
    close(fd);
err_after_write:
    unlink(tmp);
err_after_tmp:
    tr_free(tmp);
    return tr_err_wrap(err, "snapshot to %s", path);
}

/* ------------------------------------------------------------------------ */
/* Reading and restoring.                                                     */

struct reader {
    const unsigned char *p;
    size_t len, pos;
};

static const unsigned char *r_take(struct reader *r, size_t n)
{
    if (r->len - r->pos < n)
        return NULL;
    const unsigned char *p = r->p + r->pos;
    r->pos += n;
    return p;
}

static int check_header(struct reader *r, uint64_t *index, struct tr_err *err)
{
    const unsigned char *h = r_take(r, HEADER_LEN);
    if (h == NULL || memcmp(h, MAGIC, 8) != 0)
        return tr_err_set(err, TR_ECORRUPT, "not a troupe snapshot");
    uint32_t format = tr__get_be32(h + 8);
    if (format > TR_STORE_FORMAT)
        return tr_err_set(err, TR_ENOTSUP, "snapshot format %u is newer than this program's (%u)",
                          format, TR_STORE_FORMAT);
    if (tr__get_be32(h + 12) != TR_CF_COUNT)
        return tr_err_set(err, TR_ECORRUPT, "snapshot has %u families, expected %d",
                          tr__get_be32(h + 12), TR_CF_COUNT);
    *index = tr__get_be64(h + 16);
    return TR_OK;
}

int tr_snapshot_peek(const void *data, size_t len, uint64_t *index_out, struct tr_err *err)
{
    struct reader r = {data, len, 0};
    TR__ERR_OR_LOCAL(err);
    return check_header(&r, index_out, err);
}

/* One pass over the stream. With wb NULL: check everything. With wb: add the
 * (already checked) entries to it. */
static int walk(struct tr_store *s, const void *data, size_t len, rocksdb_writebatch_t *wb,
                uint64_t *index, struct tr_err *err)
{
    struct reader r = {data, len, 0};
    struct tr__digest d;
    uint64_t total = 0;
    const unsigned char *t;

    int rv = check_header(&r, index, err);
    if (rv != TR_OK)
        return rv;
    tr__digest_init(&d);
    t = r_take(&r, 1);
    for (int cf = 0; cf < TR_CF_COUNT; cf++) {
        const char *name = tr_cf_name((enum tr_cf)cf);
        size_t nlen = strlen(name);
        const unsigned char *nl, *nm;
        if (t == NULL || *t != 'F' || (nl = r_take(&r, 1)) == NULL || *nl != nlen ||
            (nm = r_take(&r, nlen)) == NULL || memcmp(nm, name, nlen) != 0)
            return tr_err_set(err, TR_ECORRUPT, "snapshot: expected family %s at byte %zu", name,
                              r.pos);
        tr__digest_family(&d, (enum tr_cf)cf);
        const unsigned char *prev = NULL;
        size_t prev_len = 0;
        while ((t = r_take(&r, 1)) != NULL && *t == 'K') {
            const unsigned char *eh = r_take(&r, 8), *k, *v;
            if (eh == NULL)
                return tr_err_set(err, TR_ECORRUPT, "snapshot: truncated at byte %zu", r.pos);
            uint32_t klen = tr__get_be32(eh), vlen = tr__get_be32(eh + 4);
            if (klen == 0 || klen > TR_STORE_KEY_MAX || vlen > TR_STORE_VALUE_MAX)
                return tr_err_set(err, TR_ECORRUPT, "snapshot: bad entry sizes at byte %zu",
                                  r.pos);
            if ((k = r_take(&r, klen)) == NULL || (v = r_take(&r, vlen)) == NULL)
                return tr_err_set(err, TR_ECORRUPT, "snapshot: truncated at byte %zu", r.pos);
            if (cf == TR_CF_META && k[0] == 0)
                return tr_err_set(err, TR_ECORRUPT, "snapshot: node-local meta key");
            if (prev != NULL) {
                size_t m = prev_len < klen ? prev_len : klen;
                int c = memcmp(prev, k, m);
                if (c > 0 || (c == 0 && prev_len >= klen))
                    return tr_err_set(err, TR_ECORRUPT, "snapshot: %s keys out of order", name);
            }
            prev = k;
            prev_len = klen;
            if (wb != NULL)
                rocksdb_writebatch_put_cf(wb, s->cf[cf], (const char *)k, klen, (const char *)v,
                                          vlen);
            else
                tr__digest_entry(&d, k, klen, v, vlen);
            total++;
        }
        tr__digest_family_end(&d);
    }
    if (wb != NULL)
        return TR_OK;

    const unsigned char *foot;
    size_t sum_at;
    if (t == NULL || *t != 'Z' || (foot = r_take(&r, 8 + TR_STATE_DIGEST_LEN)) == NULL)
        return tr_err_set(err, TR_ECORRUPT, "snapshot: bad footer at byte %zu", r.pos);
    sum_at = r.pos;
    const unsigned char *sum = r_take(&r, 32);
    if (sum == NULL || r.pos != len)
        return tr_err_set(err, TR_ECORRUPT, "snapshot: %s after the footer",
                          sum == NULL ? "truncated" : "trailing bytes");
    unsigned char check[32], digest[TR_STATE_DIGEST_LEN];
    crypto_generichash(check, sizeof(check), data, sum_at, NULL, 0);
    if (sodium_memcmp(check, sum, 32) != 0)
        return tr_err_set(err, TR_ECORRUPT, "snapshot: checksum mismatch");
    if (tr__get_be64(foot) != total)
        return tr_err_set(err, TR_ECORRUPT, "snapshot: entry count mismatch");
    tr__digest_final(&d, digest);
    if (sodium_memcmp(digest, foot + 8, TR_STATE_DIGEST_LEN) != 0)
        return tr_err_set(err, TR_ECORRUPT, "snapshot: state digest mismatch");
    return TR_OK;
}

int tr_store_restore(struct tr_store *s, const void *data, size_t len, struct tr_err *err)
{
    unsigned char key_end[TR_STORE_KEY_MAX + 1];
    static const unsigned char meta_start[1] = {0x01};
    static const unsigned char key_start[1] = {0x00};
    uint64_t index = 0;
    char *e = NULL;

    TR__ERR_OR_LOCAL(err);
    int rv = tr__store_check_writable(s, err);
    if (rv != TR_OK)
        return rv;
    rv = walk(s, data, len, NULL, &index, err);
    if (rv != TR_OK)
        return tr_err_wrap(err, "restore");

    /* Every key is at most TR_STORE_KEY_MAX bytes, so all lie below key_end. */
    memset(key_end, 0xff, sizeof(key_end));
    rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
    for (int cf = 0; cf < TR_CF_COUNT; cf++) {
        const unsigned char *start = cf == TR_CF_META ? meta_start : key_start;
        rocksdb_writebatch_delete_range_cf(wb, s->cf[cf], (const char *)start, 1,
                                           (const char *)key_end, sizeof(key_end));
    }
    walk(s, data, len, wb, &index, err);
    unsigned char idx[8];
    tr__put_be64(idx, index);
    rocksdb_writebatch_put_cf(wb, s->cf[TR_CF_META], TR__META_LAST_APPLIED,
                              TR__META_LAST_APPLIED_LEN, (const char *)idx, 8);
    rocksdb_write(s->db, s->wopts_sync, wb, &e);
    rocksdb_writebatch_destroy(wb);
    if (e != NULL) {
        rv = tr__rdb_err(err, e, "restore to raft index %llu", (unsigned long long)index);
        tr__store_fail(s, err);
        return rv;
    }
    atomic_store_explicit(&s->last_applied, index, memory_order_release);
    tr__store_bump_gens(s, ~0u);
    return TR_OK;
}

int tr_store_restore_file(struct tr_store *s, const char *path, struct tr_err *err)
{
    struct stat st;
    TR__ERR_OR_LOCAL(err);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return tr_err_set(err, TR_EIO, "restore: open %s: %s", path, strerror(errno));
    if (fstat(fd, &st) != 0 || st.st_size < HEADER_LEN) {
        close(fd);
        return tr_err_set(err, TR_ECORRUPT, "restore: %s is too short", path);
    }
    void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED)
        return tr_err_set(err, TR_EIO, "restore: mmap %s: %s", path, strerror(errno));
    int rv = tr_store_restore(s, m, (size_t)st.st_size, err);
    munmap(m, (size_t)st.st_size);
    return rv;
}
