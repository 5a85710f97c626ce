/* Unit tests of storage/: families, batches, journal, blobs, idempotency
 * index, generic records, views, digest, snapshots, sticky errors, format. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/resource.h>

#include <cmocka.h>
#include <rocksdb/c.h>

#include "helpers.h"

struct fx {
    char *dir;
    struct tr_store *s;
    struct tr_batch *b;
    uint64_t index;
};

static int setup(void **state)
{
    struct fx *f = tr_calloc(1, sizeof(*f));
    f->dir = tdir_new();
    f->s = open_or_die(f->dir, NULL);
    f->b = tr_batch_new(f->s);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    tr_batch_free(f->b);
    tr_store_close(f->s);
    tdir_remove(f->dir);
    tr_free(f);
    return 0;
}

static void commit(struct fx *f)
{
    struct tr_err err = {0};
    int rv = tr_batch_commit(f->b, ++f->index, &err);
    if (rv != 0)
        fail_msg("commit %llu: %s", (unsigned long long)f->index, err.msg);
}

static void reopen(struct fx *f)
{
    tr_batch_free(f->b);
    tr_store_close(f->s);
    f->s = open_or_die(f->dir, NULL);
    f->b = tr_batch_new(f->s);
}

static void put(struct fx *f, enum tr_cf cf, const char *k, const char *v)
{
    assert_int_equal(tr_batch_put(f->b, cf, k, strlen(k), v, strlen(v)), 0);
}

/* ------------------------------------------------------------------------ */

static void test_open_creates_families(void **state)
{
    struct fx *f = *state;
    char *e = NULL;
    size_t n = 0;
    assert_int_equal(tr_store_last_applied(f->s), 0);
    rocksdb_options_t *o = rocksdb_options_create();
    char **names = rocksdb_list_column_families(o, f->dir, &n, &e);
    assert_null(e);
    assert_int_equal(n, TR_CF_COUNT + 1);
    for (int cf = 0; cf < TR_CF_COUNT; cf++) {
        int found = 0;
        for (size_t i = 0; i < n; i++)
            found |= strcmp(names[i], tr_cf_name((enum tr_cf)cf)) == 0;
        assert_true(found);
    }
    rocksdb_list_column_families_destroy(names, n);
    rocksdb_options_destroy(o);
    assert_null(tr_cf_name(TR_CF_COUNT));

    /* A second open of the same directory is refused while the first holds it. */
    struct tr_store *s2 = NULL;
    struct tr_err err = {0};
    int rv2 = tr_store_open(f->dir, NULL, &s2, &err);
    if (rv2 != TR_EBUSY)
        fail_msg("second open: %d %s", rv2, err.msg);
    assert_null(s2);
}

static void test_batch_last_applied(void **state)
{
    struct fx *f = *state;
    struct tr_err err = {0};
    uint64_t runs0 = tr_store_cf_gen(f->s, TR_CF_RUNS), tools0 = tr_store_cf_gen(f->s, TR_CF_TOOLS);
    put(f, TR_CF_RUNS, "r1", "one");
    assert_int_equal(tr_batch_count(f->b), 1);
    assert_true(tr_batch_bytes(f->b) > 0);
    assert_int_equal(tr_store_cf_gen(f->s, TR_CF_RUNS), runs0); /* not before the commit */
    assert_int_equal(tr_batch_commit(f->b, 5, &err), 0);
    assert_int_equal(tr_store_last_applied(f->s), 5);
    assert_int_equal(tr_batch_count(f->b), 0);
    /* The commit moved the generation of the family it wrote, only that one. */
    assert_true(tr_store_cf_gen(f->s, TR_CF_RUNS) > runs0);
    assert_int_equal(tr_store_cf_gen(f->s, TR_CF_TOOLS), tools0);
    uint64_t runs1 = tr_store_cf_gen(f->s, TR_CF_RUNS);

    /* At or below last_applied: refused, nothing written, still writable. */
    put(f, TR_CF_RUNS, "r2", "two");
    assert_int_equal(tr_batch_commit(f->b, 5, &err), TR_EINVAL);
    assert_int_equal(tr_batch_commit(f->b, 4, &err), TR_EINVAL);
    assert_int_equal(tr_store_failed(f->s, NULL), 0);
    tr_batch_clear(f->b);

    /* A refused operation poisons the batch, not the store. */
    put(f, TR_CF_RUNS, "r3", "three");
    assert_int_equal(tr_batch_put(f->b, TR_CF_META, "\0x", 2, "v", 1), TR_EINVAL);
    assert_int_equal(tr_batch_put(f->b, TR_CF_BLOBS, "k", 1, "v", 1), TR_EINVAL);
    assert_int_equal(tr_batch_put(f->b, TR_CF_RUNS, "", 0, "v", 1), TR_EINVAL);
    char big[TR_STORE_KEY_MAX + 1];
    memset(big, 'k', sizeof(big));
    assert_int_equal(tr_batch_put(f->b, TR_CF_RUNS, big, sizeof(big), "v", 1), TR_ETOOBIG);
    assert_int_equal(tr_batch_commit(f->b, 6, &err), TR_EINVAL);
    assert_non_null(strstr(err.msg, "reserved"));
    assert_int_equal(tr_store_last_applied(f->s), 5);
    tr_batch_clear(f->b);
    assert_int_equal(tr_store_cf_gen(f->s, TR_CF_RUNS), runs1); /* refused commits wrote nothing */
    assert_int_equal(tr_batch_delete(f->b, TR_CF_TOOLS, "t", 1), 0);
    assert_int_equal(tr_batch_commit(f->b, 7, &err), 0);
    assert_true(tr_store_cf_gen(f->s, TR_CF_TOOLS) > tools0); /* a delete counts */
    assert_int_equal(tr_store_cf_gen(f->s, TR_CF_RUNS), runs1);

    put(f, TR_CF_RUNS, "r4", "four");
    assert_int_equal(tr_batch_commit(f->b, 9, &err), 0);
    reopen(f);
    assert_int_equal(tr_store_last_applied(f->s), 9);
    void *v = NULL;
    size_t vlen = 0;
    assert_int_equal(tr_store_get(f->s, NULL, TR_CF_RUNS, "r1", 2, &v, &vlen, &err), 0);
    assert_memory_equal(v, "one", 3);
    tr_free(v);
    assert_int_equal(tr_store_get(f->s, NULL, TR_CF_RUNS, "r3", 2, &v, &vlen, &err),
                     TR_ENOTFOUND);
    assert_null(v);
    assert_int_equal(tr_store_get(f->s, NULL, TR_CF_RUNS, "r2", 2, &v, &vlen, NULL),
                     TR_ENOTFOUND);
}

static void ev(char *buf, size_t cap, tr_run_id run, uint64_t seq)
{
    snprintf(buf, cap, "event run=%llu seq=%llu", (unsigned long long)run,
             (unsigned long long)seq);
}

static void check_journal(struct fx *f, tr_run_id run, uint64_t from, uint64_t last)
{
    struct tr_journal_iter *it = NULL;
    struct tr_err err = {0};
    uint64_t seq, want = from;
    const void *data;
    size_t len;
    char buf[64];
    int rv;
    assert_int_equal(tr_journal_iter_open(f->s, NULL, run, from, &it, &err), 0);
    while ((rv = tr_journal_iter_next(it, &seq, &data, &len, &err)) == 1) {
        assert_int_equal(seq, want);
        ev(buf, sizeof(buf), run, seq);
        assert_int_equal(len, strlen(buf));
        assert_memory_equal(data, buf, len);
        want++;
    }
    assert_int_equal(rv, 0);
    assert_int_equal(want, last + 1);
    tr_journal_iter_close(it);
}

static void append_events(struct fx *f, tr_run_id run, uint64_t first, uint64_t last)
{
    char buf[64];
    for (uint64_t s = first; s <= last; s++) {
        ev(buf, sizeof(buf), run, s);
        assert_int_equal(tr_batch_journal_append(f->b, run, s, buf, strlen(buf)), 0);
    }
}

static void test_journal(void **state)
{
    struct fx *f = *state;
    struct tr_err err = {0};
    uint64_t seq = 0, n = 0;
    /* Out-of-order appends across batches still read back in seq order. */
    append_events(f, 7, 30, 50);
    commit(f);
    append_events(f, 7, 1, 29);
    commit(f);
    check_journal(f, 7, 1, 50);
    check_journal(f, 7, 20, 50);
    check_journal(f, 7, 50, 50);
    check_journal(f, 7, 51, 50);
    assert_int_equal(tr_journal_last_seq(f->s, NULL, 7, &seq, &err), 0);
    assert_int_equal(seq, 50);
    assert_int_equal(tr_journal_count(f->s, NULL, 7, &n, &err), 0);
    assert_int_equal(n, 50);
    /* Survives a reopen (memtable -> WAL recovery). */
    reopen(f);
    check_journal(f, 7, 1, 50);
}

static void test_journal_prefix_isolation(void **state)
{
    struct fx *f = *state;
    struct tr_err err = {0};
    const tr_run_id runs[] = {0, 1, 2, 255, 256, 0x0100000000000000ull, UINT64_MAX - 1,
                              UINT64_MAX};
    const size_t nruns = sizeof(runs) / sizeof(runs[0]);
    for (size_t i = 0; i < nruns; i++)
        append_events(f, runs[i], 1, i + 1);
    commit(f);
    for (size_t i = 0; i < nruns; i++) {
        uint64_t seq = 0, n = 0;
        check_journal(f, runs[i], 1, i + 1);
        assert_int_equal(tr_journal_last_seq(f->s, NULL, runs[i], &seq, &err), 0);
        assert_int_equal(seq, i + 1);
        assert_int_equal(tr_journal_count(f->s, NULL, runs[i], &n, &err), 0);
        assert_int_equal(n, i + 1);
    }
    uint64_t seq = 0, n = 7;
    assert_int_equal(tr_journal_last_seq(f->s, NULL, 3, &seq, &err), TR_ENOTFOUND);
    assert_int_equal(tr_journal_count(f->s, NULL, 3, &n, &err), 0);
    assert_int_equal(n, 0);

    /* seq UINT64_MAX is the last key of its run, not the first of the next. */
    char buf[64];
    ev(buf, sizeof(buf), 2, UINT64_MAX);
    assert_int_equal(tr_batch_journal_append(f->b, 2, UINT64_MAX, buf, strlen(buf)), 0);
    commit(f);
    assert_int_equal(tr_journal_last_seq(f->s, NULL, 2, &seq, &err), 0);
    assert_int_equal(seq, UINT64_MAX);
    check_journal(f, 3, 1, 0);
    check_journal(f, 1, 1, 2);

    /* Flushed to SST files the answers are the same (prefix bloom path). */
    reopen(f);
    for (size_t i = 0; i < nruns; i++)
        if (runs[i] != 2)
            check_journal(f, runs[i], 1, i + 1);
}

static void test_blobs(void **state)
{
    struct fx *f = *state;
    struct tr_err err = {0};
    size_t len = 3 * TR_BLOB_THRESHOLD + 17;
    unsigned char *payload = tr_malloc(len);
    unsigned char d1[TR_BLOB_DIGEST_LEN], d2[TR_BLOB_DIGEST_LEN], d3[TR_BLOB_DIGEST_LEN];
    for (size_t i = 0; i < len; i++)
        payload[i] = (unsigned char)(i * 31 + 7);

    assert_int_equal(tr_batch_blob_put(f->b, payload, len, d1), 0);
    assert_int_equal(tr_batch_blob_put(f->b, "small", 5, d3), 0);
    commit(f);
    /* Dedup: already stored, so nothing is collected. */
    assert_int_equal(tr_batch_blob_put(f->b, payload, len, d2), 0);
    assert_memory_equal(d1, d2, sizeof(d1));
    assert_int_equal(tr_batch_count(f->b), 0);

    void *out = NULL;
    size_t olen = 0;
    assert_int_equal(tr_blob_get(f->s, NULL, d1, &out, &olen, &err), 0);
    assert_int_equal(olen, len);
    assert_memory_equal(out, payload, len);
    tr_free(out);
    assert_int_equal(tr_blob_get(f->s, NULL, d3, &out, &olen, &err), 0);
    assert_int_equal(olen, 5);
    tr_free(out);

    unsigned char missing[TR_BLOB_DIGEST_LEN];
    tr_blob_digest("nope", 4, missing);
    assert_int_equal(tr_blob_get(f->s, NULL, missing, &out, &olen, &err), TR_ENOTFOUND);

    /* Corrupt the stored bytes behind the store's back. */
    tr_batch_free(f->b);
    tr_store_close(f->s);
    payload[100] ^= 1;
    raw_put(f->dir, "blobs", d1, sizeof(d1), payload, len, 0);
    raw_put(f->dir, "blobs", missing, sizeof(missing), "other", 5, 0);
    f->s = open_or_die(f->dir, NULL);
    f->b = tr_batch_new(f->s);
    out = (void *)1;
    assert_int_equal(tr_blob_get(f->s, NULL, d1, &out, &olen, &err), TR_ECORRUPT);
    assert_null(out);
    assert_non_null(strstr(err.msg, "do not match"));
    assert_int_equal(tr_blob_get(f->s, NULL, missing, &out, &olen, &err), TR_ECORRUPT);
    tr_free(payload);
}

static void test_idem(void **state)
{
    struct fx *f = *state;
    struct tr_err err = {0};
    unsigned char h1[TR_IDEM_HASH_LEN], h2[TR_IDEM_HASH_LEN], got[TR_IDEM_HASH_LEN];
    tr_run_id run = 0;
    tr_blob_digest("body one", 8, h1);
    tr_blob_digest("body two", 8, h2);

    assert_int_equal(tr_batch_idem_put(f->b, "acme", 4, "key-1", 5, 42, h1), 0);
    assert_int_equal(tr_batch_idem_put(f->b, "ab", 2, "c", 1, 43, h2), 0);
    commit(f);
    assert_int_equal(tr_idem_get(f->s, NULL, "acme", 4, "key-1", 5, &run, got, &err), 0);
    assert_int_equal(run, 42);
    assert_memory_equal(got, h1, sizeof(h1));
    /* Same key, another body: the caller sees a different hash (409). */
    assert_memory_not_equal(got, h2, sizeof(h2));
    /* Tenants are isolated; (ab, c) is not (a, bc). */
    assert_int_equal(tr_idem_get(f->s, NULL, "other", 5, "key-1", 5, &run, NULL, &err),
                     TR_ENOTFOUND);
    assert_int_equal(tr_idem_get(f->s, NULL, "a", 1, "bc", 2, &run, NULL, &err), TR_ENOTFOUND);
    assert_int_equal(tr_idem_get(f->s, NULL, "ab", 2, "c", 1, &run, NULL, &err), 0);
    assert_int_equal(run, 43);
    /* Bad input. */
    assert_int_equal(tr_batch_idem_put(f->b, "a\0b", 3, "k", 1, 1, h1), TR_EINVAL);
    tr_batch_clear(f->b);
    assert_int_equal(tr_batch_idem_put(f->b, "", 0, "k", 1, 1, h1), TR_EINVAL);
    tr_batch_clear(f->b);
    assert_int_equal(tr_idem_get(f->s, NULL, "acme", 4, "", 0, &run, NULL, &err), TR_EINVAL);
}

static void test_generic_and_views(void **state)
{
    struct fx *f = *state;
    struct tr_err err = {0};
    struct tr_store_iter *it = NULL;
    const void *k, *v;
    size_t kl, vl;
    int rv, n;

    put(f, TR_CF_TOOLS, "web.fetch", "v1");
    put(f, TR_CF_TOOLS, "web.search", "v1");
    put(f, TR_CF_TOOLS, "code.run", "v1");
    put(f, TR_CF_TENANTS, "web.fetch", "tenant!");
    put(f, TR_CF_META, "config", "c1");
    commit(f);

    /* Prefix iteration stays within the prefix and the family. */
    assert_int_equal(tr_store_iter_prefix(f->s, NULL, TR_CF_TOOLS, "web.", 4, &it, &err), 0);
    n = 0;
    while ((rv = tr_store_iter_next(it, &k, &kl, &v, &vl, &err)) == 1) {
        assert_memory_equal(k, "web.", 4);
        n++;
    }
    assert_int_equal(rv, 0);
    assert_int_equal(n, 2);
    tr_store_iter_close(it);

    /* Meta iteration never shows node-local keys. */
    assert_int_equal(tr_store_iter_open(f->s, NULL, TR_CF_META, NULL, 0, NULL, 0, &it, &err), 0);
    n = 0;
    while ((rv = tr_store_iter_next(it, &k, &kl, &v, &vl, &err)) == 1) {
        assert_true(((const unsigned char *)k)[0] != 0);
        n++;
    }
    assert_int_equal(n, 1);
    tr_store_iter_close(it);
    void *val = NULL;
    size_t vlen;
    assert_int_equal(tr_store_get(f->s, NULL, TR_CF_META, "\0last_applied", 13, &val, &vlen,
                                  &err),
                     TR_EINVAL);

    /* A view keeps its point in time across later commits. */
    struct tr_store_view *view = tr_store_view_open(f->s);
    assert_int_equal(tr_store_view_last_applied(view), f->index);
    assert_int_equal(tr_batch_delete(f->b, TR_CF_TOOLS, "code.run", 8), 0);
    put(f, TR_CF_TOOLS, "web.fetch", "v2");
    commit(f);
    assert_int_equal(tr_store_get(f->s, view, TR_CF_TOOLS, "code.run", 8, &val, &vlen, &err), 0);
    tr_free(val);
    assert_int_equal(tr_store_get(f->s, NULL, TR_CF_TOOLS, "code.run", 8, &val, &vlen, &err),
                     TR_ENOTFOUND);
    assert_int_equal(tr_store_get(f->s, view, TR_CF_TOOLS, "web.fetch", 9, &val, &vlen, &err),
                     0);
    assert_memory_equal(val, "v1", 2);
    tr_free(val);
    assert_int_equal(tr_store_iter_open(f->s, view, TR_CF_TOOLS, "d", 1, "x", 1, &it, &err), 0);
    n = 0;
    while (tr_store_iter_next(it, NULL, NULL, NULL, NULL, &err) == 1)
        n++;
    assert_int_equal(n, 2);
    tr_store_iter_close(it);
    tr_store_view_close(view);
}

/* ------------------------------------------------------------------------ */
/* Digest.                                                                    */

static void digest_of(struct tr_store *s, unsigned char out[TR_STATE_DIGEST_LEN])
{
    struct tr_err err = {0};
    if (tr_store_digest(s, NULL, out, NULL, &err) != 0)
        fail_msg("digest: %s", err.msg);
}

/* A second store in its own directory. */
struct other {
    char *dir;
    struct tr_store *s;
    struct tr_batch *b;
};

static void other_open(struct other *o)
{
    o->dir = tdir_new();
    o->s = open_or_die(o->dir, NULL);
    o->b = tr_batch_new(o->s);
}

static void other_close(struct other *o)
{
    tr_batch_free(o->b);
    tr_store_close(o->s);
    tdir_remove(o->dir);
}

/* A base state: a few entries in several families. */
static void fill_base(struct tr_batch *b)
{
    char buf[64];
    assert_int_equal(tr_batch_put(b, TR_CF_RUNS, "run-1", 5, "rec1", 4), 0);
    assert_int_equal(tr_batch_put(b, TR_CF_TOOLS, "ab", 2, "c", 1), 0);
    assert_int_equal(tr_batch_put(b, TR_CF_MEMORY, "m", 1, "", 0), 0);
    assert_int_equal(tr_batch_put(b, TR_CF_META, "nodes", 5, "n1,n2", 5), 0);
    for (uint64_t s = 1; s <= 5; s++) {
        ev(buf, sizeof(buf), 9, s);
        assert_int_equal(tr_batch_journal_append(b, 9, s, buf, strlen(buf)), 0);
    }
}

static void test_digest(void **state)
{
    struct fx *f = *state;
    struct tr_err err = {0};
    unsigned char base[32], d[32], empty[32];
    uint64_t la = 0;

    digest_of(f->s, empty);
    fill_base(f->b);
    commit(f);
    assert_int_equal(tr_store_digest(f->s, NULL, base, &la, &err), 0);
    assert_int_equal(la, f->index);
    assert_memory_not_equal(base, empty, 32);

    /* Same content, written in another order, other indexes: same digest. */
    struct other o;
    other_open(&o);
    assert_int_equal(tr_batch_put(o.b, TR_CF_MEMORY, "m", 1, "", 0), 0);
    assert_int_equal(tr_batch_commit(o.b, 100, &err), 0);
    fill_base(o.b);
    assert_int_equal(tr_batch_commit(o.b, 250, &err), 0);
    digest_of(o.s, d);
    assert_memory_equal(d, base, 32);

    /* Every single change shows. Each case: change, compare, undo, compare. */
    struct {
        enum tr_cf cf;
        const char *k;
        size_t kl;
        const char *v;
        size_t vl;
        enum tr_cf undo_cf;
        const char *undo_k;
        size_t undo_kl;
        const char *undo_v;
        size_t undo_vl;
    } cases[] = {
        /* one byte of a value */
        {TR_CF_RUNS, "run-1", 5, "rec2", 4, TR_CF_RUNS, "run-1", 5, "rec1", 4},
        /* a key's last byte (new key; old one deleted below) */
        {TR_CF_RUNS, "run-2", 5, "rec1", 4, TR_CF_RUNS, NULL, 0, NULL, 0},
        /* the same entry in another family */
        {TR_CF_TENANTS, "ab", 2, "c", 1, TR_CF_TOOLS, NULL, 0, NULL, 0},
        /* concatenation: ab->c vs a->bc */
        {TR_CF_TOOLS, "a", 1, "bc", 2, TR_CF_TOOLS, NULL, 0, NULL, 0},
        /* an empty value appended */
        {TR_CF_APPROVALS, "x", 1, "", 0, TR_CF_APPROVALS, NULL, 0, NULL, 0},
        /* replicated meta */
        {TR_CF_META, "nodes", 5, "n1,n3", 5, TR_CF_META, "nodes", 5, "n1,n2", 5},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (i == 1 || i == 2 || i == 3) {
            /* Moves: drop the original so the entry count stays equal. */
            const char *ok = i == 1 ? "run-1" : "ab";
            enum tr_cf ocf = i == 1 ? TR_CF_RUNS : TR_CF_TOOLS;
            assert_int_equal(tr_batch_delete(o.b, ocf, ok, strlen(ok)), 0);
        }
        assert_int_equal(tr_batch_put(o.b, cases[i].cf, cases[i].k, cases[i].kl, cases[i].v,
                                      cases[i].vl),
                         0);
        assert_int_equal(tr_batch_commit(o.b, 300 + 2 * i, &err), 0);
        digest_of(o.s, d);
        if (memcmp(d, base, 32) == 0)
            fail_msg("case %zu: digest did not change", i);
        /* undo */
        if (cases[i].undo_k != NULL) {
            assert_int_equal(tr_batch_put(o.b, cases[i].undo_cf, cases[i].undo_k,
                                          cases[i].undo_kl, cases[i].undo_v, cases[i].undo_vl),
                             0);
        } else {
            assert_int_equal(tr_batch_delete(o.b, cases[i].cf, cases[i].k, cases[i].kl), 0);
            if (i == 1)
                assert_int_equal(tr_batch_put(o.b, TR_CF_RUNS, "run-1", 5, "rec1", 4), 0);
            if (i == 2 || i == 3)
                assert_int_equal(tr_batch_put(o.b, TR_CF_TOOLS, "ab", 2, "c", 1), 0);
        }
        assert_int_equal(tr_batch_commit(o.b, 301 + 2 * i, &err), 0);
        digest_of(o.s, d);
        if (memcmp(d, base, 32) != 0)
            fail_msg("case %zu: undo did not restore the digest", i);
    }
    /* A journal event byte. */
    assert_int_equal(tr_batch_journal_append(o.b, 9, 3, "x", 1), 0);
    assert_int_equal(tr_batch_commit(o.b, 400, &err), 0);
    digest_of(o.s, d);
    assert_memory_not_equal(d, base, 32);
    other_close(&o);
}

/* ------------------------------------------------------------------------ */
/* Snapshots.                                                                 */

static void fill_rich(struct fx *f)
{
    unsigned char *big = tr_malloc(20000);
    for (int i = 0; i < 20000; i++)
        big[i] = (unsigned char)(i % 251);
    fill_base(f->b);
    assert_int_equal(tr_batch_blob_put(f->b, big, 20000, NULL), 0);
    assert_int_equal(tr_batch_blob_put(f->b, "tiny", 4, NULL), 0);
    unsigned char h[32] = {1};
    assert_int_equal(tr_batch_idem_put(f->b, "t1", 2, "k", 1, 77, h), 0);
    put(f, TR_CF_CREDENTIALS, "sealed", "xxxx");
    put(f, TR_CF_APPROVALS, "ap-1", "pending");
    commit(f);
    append_events(f, 10, 1, 300);
    commit(f);
    tr_free(big);
}

static void test_snapshot_restore(void **state)
{
    struct fx *f = *state;
    struct tr_err err = {0};
    unsigned char src[32], d[32];
    struct tr_snapshot_chunk *chunks = NULL;
    unsigned n = 0;
    uint64_t index = 0, peek = 0;

    fill_rich(f);
    digest_of(f->s, src);
    assert_int_equal(tr_store_snapshot_chunks(f->s, NULL, 100, &chunks, &n, &index, &err), 0);
    assert_int_equal(index, f->index);
    assert_true(n > 10);
    size_t total = 0;
    for (unsigned i = 0; i < n; i++) {
        assert_true(chunks[i].len <= 100);
        total += chunks[i].len;
    }
    unsigned char *flat = tr_malloc(total);
    size_t at = 0;
    for (unsigned i = 0; i < n; i++) {
        memcpy(flat + at, chunks[i].base, chunks[i].len);
        at += chunks[i].len;
    }
    tr_snapshot_chunks_free(chunks, n);
    assert_int_equal(tr_snapshot_peek(flat, total, &peek, &err), 0);
    assert_int_equal(peek, index);

    /* Restore into a store that holds other state: it is replaced. */
    struct other o;
    other_open(&o);
    assert_int_equal(tr_batch_put(o.b, TR_CF_RUNS, "stale", 5, "x", 1), 0);
    assert_int_equal(tr_batch_put(o.b, TR_CF_META, "zzz", 3, "x", 1), 0);
    assert_int_equal(tr_batch_journal_append(o.b, 10, 301, "x", 1), 0);
    assert_int_equal(tr_batch_commit(o.b, 1000, &err), 0);
    unsigned char before[32];
    digest_of(o.s, before);

    /* Damaged snapshots are refused and leave the store as it was. */
    for (size_t pos = 0; pos < total; pos += total / 13 + 1) {
        flat[pos] ^= 0x20;
        int rv = tr_store_restore(o.s, flat, total, &err);
        flat[pos] ^= 0x20;
        if (rv != TR_ECORRUPT && rv != TR_ENOTSUP)
            fail_msg("flip at %zu: %d %s", pos, rv, err.msg);
    }
    assert_int_equal(tr_store_restore(o.s, flat, total - 1, &err), TR_ECORRUPT);
    assert_int_equal(tr_store_restore(o.s, flat, 10, &err), TR_ECORRUPT);
    digest_of(o.s, d);
    assert_memory_equal(d, before, 32);
    assert_int_equal(tr_store_failed(o.s, NULL), 0);
    assert_int_equal(tr_store_last_applied(o.s), 1000);

    uint64_t gens[TR_CF_COUNT];
    for (int cf = 0; cf < TR_CF_COUNT; cf++)
        gens[cf] = tr_store_cf_gen(o.s, (enum tr_cf)cf);
    assert_int_equal(tr_store_restore(o.s, flat, total, &err), 0);
    assert_int_equal(tr_store_last_applied(o.s), index);
    for (int cf = 0; cf < TR_CF_COUNT; cf++) /* refused restores moved none; this one all */
        assert_true(tr_store_cf_gen(o.s, (enum tr_cf)cf) > gens[cf]);
    digest_of(o.s, d);
    assert_memory_equal(d, src, 32);
    void *v = NULL;
    size_t vl = 0;
    assert_int_equal(tr_store_get(o.s, NULL, TR_CF_RUNS, "stale", 5, &v, &vl, &err),
                     TR_ENOTFOUND);
    /* Survives a reopen, and the store goes on from the snapshot's index. */
    tr_batch_free(o.b);
    tr_store_close(o.s);
    o.s = open_or_die(o.dir, NULL);
    o.b = tr_batch_new(o.s);
    assert_int_equal(tr_store_last_applied(o.s), index);
    digest_of(o.s, d);
    assert_memory_equal(d, src, 32);
    assert_int_equal(tr_batch_put(o.b, TR_CF_RUNS, "after", 5, "y", 1), 0);
    assert_int_equal(tr_batch_commit(o.b, index + 1, &err), 0);

    /* The file path, through a view taken before a later write. */
    struct tr_store_view *view = tr_store_view_open(f->s);
    put(f, TR_CF_RUNS, "later", "z");
    commit(f);
    char *path = tdir_join(f->dir, "snap.bin");
    assert_int_equal(tr_store_snapshot_file(f->s, view, path, &index, &err), 0);
    tr_store_view_close(view);
    assert_int_equal(index, f->index - 1);
    assert_int_equal(tr_store_restore_file(o.s, path, &err), 0);
    digest_of(o.s, d);
    assert_memory_equal(d, src, 32);
    assert_int_equal(tr_store_last_applied(o.s), index);
    tr_free(path);

    /* An empty store's snapshot empties a store. */
    struct other e;
    other_open(&e);
    unsigned char empty[32];
    digest_of(e.s, empty);
    assert_int_equal(tr_store_snapshot_chunks(e.s, NULL, 0, &chunks, &n, &index, &err), 0);
    assert_int_equal(n, 1);
    assert_int_equal(tr_store_restore(o.s, chunks[0].base, chunks[0].len, &err), 0);
    tr_snapshot_chunks_free(chunks, n);
    digest_of(o.s, d);
    assert_memory_equal(d, empty, 32);
    assert_int_equal(tr_store_last_applied(o.s), 0);
    other_close(&e);

    tr_free(flat);
    other_close(&o);
}

/* ------------------------------------------------------------------------ */
/* Sticky errors: a real write failure (the file size limit), then the limit
 * is lifted and the store must still refuse until reopened. */

static void test_sticky_error(void **state)
{
    struct fx *f = *state;
    struct tr_err err = {0};
    struct rlimit old, lim;

    put(f, TR_CF_RUNS, "before", "ok");
    commit(f);
    uint64_t good = f->index;

    size_t len = 4u << 20;
    char *big = tr_malloc(len);
    memset(big, 'b', len);
    assert_int_equal(tr_batch_put(f->b, TR_CF_MEMORY, "big", 3, big, len), 0);
    tr_free(big);

    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    lim = old;
    lim.rlim_cur = 1u << 20;
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    int rv = tr_batch_commit(f->b, good + 1, &err);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, prev);
    assert_int_equal(rv, TR_EIO);
    assert_non_null(strstr(err.msg, "commit raft index"));

    /* Sticky: refused now that I/O would work again. */
    struct tr_err sticky = {0};
    assert_int_equal(tr_store_failed(f->s, &sticky), TR_EIO);
    tr_batch_clear(f->b);
    put(f, TR_CF_RUNS, "after", "no");
    assert_int_equal(tr_batch_commit(f->b, good + 2, &err), TR_EIO);
    assert_non_null(strstr(err.msg, "reopen"));
    unsigned char snap[64] = {0};
    assert_int_equal(tr_store_restore(f->s, snap, sizeof(snap), &err), TR_EIO);
    /* Reads still work. */
    void *v = NULL;
    size_t vl;
    assert_int_equal(tr_store_get(f->s, NULL, TR_CF_RUNS, "before", 6, &v, &vl, &err), 0);
    tr_free(v);
    assert_int_equal(tr_store_last_applied(f->s), good);

    /* Reopen: consistent and writable again. */
    tr_batch_clear(f->b);
    reopen(f);
    assert_int_equal(tr_store_failed(f->s, NULL), 0);
    assert_int_equal(tr_store_last_applied(f->s), good);
    assert_int_equal(tr_store_get(f->s, NULL, TR_CF_MEMORY, "big", 3, &v, &vl, &err),
                     TR_ENOTFOUND);
    f->index = good;
    put(f, TR_CF_RUNS, "after", "yes");
    commit(f);
}

/* ------------------------------------------------------------------------ */
/* Format version and unknown families. */

static void test_format_refusal(void **state)
{
    struct fx *f = *state;
    struct tr_err err = {0};
    struct tr_store *s = NULL;
    unsigned char v[4] = {0, 0, 0, TR_STORE_FORMAT + 1};

    tr_batch_free(f->b);
    tr_store_close(f->s);
    f->s = NULL;
    f->b = NULL;
    raw_put(f->dir, "meta", "\0format", 7, v, 4, 0);
    assert_int_equal(tr_store_open(f->dir, NULL, &s, &err), TR_ENOTSUP);
    assert_null(s);
    assert_non_null(strstr(err.msg, "newer"));

    /* Back to our version: opens. An unknown family: refused. */
    v[3] = TR_STORE_FORMAT;
    raw_put(f->dir, "meta", "\0format", 7, v, 4, 0);
    s = open_or_die(f->dir, NULL);
    tr_store_close(s);
    raw_put(f->dir, "futurestuff", "k", 1, "v", 1, 1);
    assert_int_equal(tr_store_open(f->dir, NULL, &s, &err), TR_ENOTSUP);
    assert_non_null(strstr(err.msg, "futurestuff"));

    /* The fixture's teardown expects an open store: give it a fresh one. */
    tdir_remove(f->dir);
    f->dir = tdir_new();
    f->s = open_or_die(f->dir, NULL);
    f->b = tr_batch_new(f->s);
}

/* ------------------------------------------------------------------------ */
/* Readers on other threads while the writer commits: every iterator sees a
 * gap-free prefix of the journal, and never less than an earlier one. */

struct reader_arg {
    struct tr_store *s;
    atomic_int stop;
    atomic_int bad;
    atomic_ullong passes;
};

static void *reader_main(void *p)
{
    struct reader_arg *a = p;
    uint64_t seen = 0;
    while (!atomic_load(&a->stop)) {
        struct tr_journal_iter *it = NULL;
        struct tr_err err = {0};
        uint64_t seq, want = 1;
        struct tr_store_view *v = tr_store_view_open(a->s);
        uint64_t la = tr_store_view_last_applied(v);
        if (tr_journal_iter_open(a->s, v, 1, 1, &it, &err) != 0) {
            a->bad = 1;
            tr_store_view_close(v);
            break;
        }
        while (tr_journal_iter_next(it, &seq, NULL, NULL, &err) == 1) {
            if (seq != want++)
                a->bad = 2;
        }
        tr_journal_iter_close(it);
        /* One event per batch: the view's last_applied is its length. */
        if (want - 1 < seen || want - 1 != la)
            a->bad = 3;
        seen = want - 1;
        tr_store_view_close(v);
        a->passes++;
    }
    return NULL;
}

static void test_concurrent_readers(void **state)
{
    struct fx *f = *state;
    struct reader_arg a = {.s = f->s};
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&t[i], NULL, reader_main, &a), 0);
    for (uint64_t seq = 1; seq <= 3000; seq++) {
        assert_int_equal(tr_batch_journal_append(f->b, 1, seq, "e", 1), 0);
        commit(f);
    }
    atomic_store(&a.stop, 1);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(atomic_load(&a.bad), 0);
    assert_true(atomic_load(&a.passes) > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_open_creates_families, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch_last_applied, setup, teardown),
        cmocka_unit_test_setup_teardown(test_journal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_journal_prefix_isolation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_blobs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_idem, setup, teardown),
        cmocka_unit_test_setup_teardown(test_generic_and_views, setup, teardown),
        cmocka_unit_test_setup_teardown(test_digest, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_restore, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sticky_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_format_refusal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_readers, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
