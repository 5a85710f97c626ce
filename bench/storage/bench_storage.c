/* Storage micro-benchmarks on a temporary store under /tmp: FSM-style
 * commits (WAL without and with fsync), journal reads, state digest, and a
 * snapshot + restore round trip. Figures are printed as
 * "bench: storage.<name> <value> <unit>" lines. Fixed operation counts; the
 * wall clock only measures. */
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "storage/storage.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, const struct tr_err *e)
{
    fprintf(stderr, "bench: storage %s: %s\n", what, e->msg);
    exit(1);
}

static int rm_cb(const char *p, const struct stat *st, int f, struct FTW *w)
{
    (void)st;
    (void)f;
    (void)w;
    remove(p);
    return 0;
}

int main(void)
{
    char tmpl[] = "/tmp/tr-bench-storage-XXXXXX";
    char *dir = mkdtemp(tmpl);
    struct tr_store *s = NULL;
    struct tr_err err = {0};
    char ev[256];
    uint64_t idx = 0;
    memset(ev, 'e', sizeof(ev));
    if (dir == NULL || tr_store_open(dir, NULL, &s, &err) != 0)
        die("open", &err);
    struct tr_batch *b = tr_batch_new(s);

    /* One 256-byte event per commit (one raft entry per append). */
    const int n1 = 50000;
    double t0 = now_s();
    for (int i = 0; i < n1; i++) {
        tr_batch_journal_append(b, 1, (uint64_t)i + 1, ev, sizeof(ev));
        if (tr_batch_commit(b, ++idx, &err) != 0)
            die("commit", &err);
    }
    double t1 = now_s();
    printf("bench: storage.commit_per_s.1event %.0f commits/s\n", n1 / (t1 - t0));

    /* Group commit: 64 events (over 16 runs) per commit. */
    const int n64 = 4000;
    uint64_t seq[16] = {0};
    t0 = now_s();
    for (int i = 0; i < n64; i++) {
        for (int k = 0; k < 64; k++) {
            int r = k % 16;
            tr_batch_journal_append(b, 100 + (tr_run_id)r, ++seq[r], ev, sizeof(ev));
        }
        if (tr_batch_commit(b, ++idx, &err) != 0)
            die("commit", &err);
    }
    t1 = now_s();
    printf("bench: storage.events_per_s.batch64 %.0f events/s\n", n64 * 64 / (t1 - t0));

    /* Journal replay of one run. */
    t0 = now_s();
    struct tr_journal_iter *it = NULL;
    uint64_t got = 0, sq;
    const void *data;
    size_t len;
    if (tr_journal_iter_open(s, NULL, 1, 1, &it, &err) != 0)
        die("iter", &err);
    while (tr_journal_iter_next(it, &sq, &data, &len, &err) == 1)
        got++;
    tr_journal_iter_close(it);
    t1 = now_s();
    printf("bench: storage.journal_read_events_per_s %.0f events/s\n", got / (t1 - t0));

    /* Digest over everything written so far. */
    unsigned char d[TR_STATE_DIGEST_LEN];
    double mb = (double)(n1 + n64 * 64) * (sizeof(ev) + 16) / 1e6;
    t0 = now_s();
    if (tr_store_digest(s, NULL, d, NULL, &err) != 0)
        die("digest", &err);
    t1 = now_s();
    printf("bench: storage.digest_mb_per_s %.0f MB/s\n", mb / (t1 - t0));

    /* Snapshot to memory and restore into a second store. */
    struct tr_snapshot_chunk *chunks = NULL;
    unsigned n = 0;
    t0 = now_s();
    if (tr_store_snapshot_chunks(s, NULL, 0, &chunks, &n, NULL, &err) != 0)
        die("snapshot", &err);
    t1 = now_s();
    size_t total = 0;
    for (unsigned i = 0; i < n; i++)
        total += chunks[i].len;
    unsigned char *flat = malloc(total);
    size_t at = 0;
    for (unsigned i = 0; i < n; i++) {
        memcpy(flat + at, chunks[i].base, chunks[i].len);
        at += chunks[i].len;
    }
    tr_snapshot_chunks_free(chunks, n);
    printf("bench: storage.snapshot_mb_per_s %.0f MB/s\n", total / 1e6 / (t1 - t0));
    char tmpl2[] = "/tmp/tr-bench-storage-XXXXXX";
    char *dir2 = mkdtemp(tmpl2);
    struct tr_store *s2 = NULL;
    if (dir2 == NULL || tr_store_open(dir2, NULL, &s2, &err) != 0)
        die("open", &err);
    t0 = now_s();
    if (tr_store_restore(s2, flat, total, &err) != 0)
        die("restore", &err);
    t1 = now_s();
    printf("bench: storage.restore_mb_per_s %.0f MB/s\n", total / 1e6 / (t1 - t0));
    free(flat);
    tr_store_close(s2);
    nftw(dir2, rm_cb, 16, FTW_DEPTH | FTW_PHYS);

    /* fsync per commit, for comparison with the default. */
    tr_batch_free(b);
    tr_store_close(s);
    struct tr_store_opts o;
    tr_store_opts_init(&o);
    o.sync = 1;
    if (tr_store_open(dir, &o, &s, &err) != 0)
        die("open", &err);
    b = tr_batch_new(s);
    const int ns = 300;
    t0 = now_s();
    for (int i = 0; i < ns; i++) {
        tr_batch_journal_append(b, 2, (uint64_t)i + 1, ev, sizeof(ev));
        if (tr_batch_commit(b, ++idx, &err) != 0)
            die("commit", &err);
    }
    t1 = now_s();
    printf("bench: storage.commit_per_s.1event_fsync %.0f commits/s\n", ns / (t1 - t0));
    tr_batch_free(b);
    tr_store_close(s);
    nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}
