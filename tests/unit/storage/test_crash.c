/* Crash and I/O-fault safety of storage/ with real processes.
 *
 * A child (this executable re-run with --child) writes numbered batches in a
 * loop, reporting each committed index on a pipe. Batch i holds journal event
 * seq (i-1)/5+1 of run (i-1)%5+1, the run's record (its next seq), and every
 * 7th batch a blob plus a memory record naming it: the state after batch L is
 * a pure function of L.
 *
 * test_sigkill: the parent SIGKILLs the child at varying points, many times,
 * reopening in between; after each kill the store must hold exactly the state
 * of L = last_applied, with L at least the last index the child reported
 * (a process crash must not lose acknowledged commits, sync or not).
 *
 * test_fsize_faults: the child lowers RLIMIT_FSIZE so a write fails at a
 * different point each round (WAL append, memtable flush, ...); the failure
 * must surface as an error, stay sticky, and after a reopen the state must
 * again be exactly that of last_applied.
 *
 * test_sigkill_no_wal: the same kills with tr_store_opts.no_wal (what the raft
 * state service runs with). A commit is now only in memory until a flush, so
 * the child reports an index only once tr_store_flush has returned after it
 * (every few batches; automatic flushes of the small memtables happen in
 * between). After each kill the store must again be exactly the state of
 * some L (every family cut at the same batch: atomic flush), with L at least
 * the last flushed index reported.
 *
 * test_close_flushes_no_wal: without a WAL, a clean close must persist every
 * commit (memtables far larger than what is written, so no automatic flush).
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "helpers.h"

#define RUNS 5
#define BLOB_EVERY 7
#define BLOB_LEN 5000

static void event_of(uint64_t i, char *buf, size_t cap, size_t *len)
{
    /* Varying sizes so WAL records and SST blocks do not line up. */
    int n = snprintf(buf, cap, "batch %llu|", (unsigned long long)i);
    size_t want = (size_t)n + (i * 37) % 400;
    for (size_t k = (size_t)n; k < want && k < cap; k++)
        buf[k] = (char)('a' + (i + k) % 26);
    *len = want < cap ? want : cap;
}

static void blob_of(uint64_t i, unsigned char *buf)
{
    for (size_t k = 0; k < BLOB_LEN; k++)
        buf[k] = (unsigned char)(i * 131 + k * 7);
}

static tr_run_id run_of(uint64_t i)
{
    return (i - 1) % RUNS + 1;
}

static uint64_t seq_of(uint64_t i)
{
    return (i - 1) / RUNS + 1;
}

static int fill_batch(struct tr_batch *b, uint64_t i)
{
    char ev[512];
    size_t len;
    unsigned char rec[16];
    event_of(i, ev, sizeof(ev), &len);
    if (tr_batch_journal_append(b, run_of(i), seq_of(i), ev, len) != 0)
        return -1;
    tr_journal_key(run_of(i), seq_of(i) + 1, rec); /* run record: next seq */
    if (tr_batch_put(b, TR_CF_RUNS, rec, 8, rec + 8, 8) != 0)
        return -1;
    if (i % BLOB_EVERY == 0) {
        unsigned char blob[BLOB_LEN], d[TR_BLOB_DIGEST_LEN], key[16];
        blob_of(i, blob);
        if (tr_batch_blob_put(b, blob, BLOB_LEN, d) != 0)
            return -1;
        tr_journal_key(i, 0, key); /* memory key: the first 8 bytes, i BE */
        if (tr_batch_put(b, TR_CF_MEMORY, key, 8, d, sizeof(d)) != 0)
            return -1;
    }
    return 0;
}

static int write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t k = write(fd, c, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        c += k;
        n -= (size_t)k;
    }
    return 0;
}

enum child_mode { MODE_WAL, MODE_NO_WAL, MODE_NO_WAL_CLOSE };

#define FLUSH_EVERY 23     /* MODE_NO_WAL: tr_store_flush after this many batches */
#define CLOSE_BATCHES 300  /* MODE_NO_WAL_CLOSE: batches before the clean close */

static struct tr_store_opts child_opts(enum child_mode mode)
{
    struct tr_store_opts o;
    tr_store_opts_init(&o);
    o.write_buffer_bytes = 64u << 10; /* flush often */
    if (mode != MODE_WAL)
        o.no_wal = 1;
    if (mode == MODE_NO_WAL_CLOSE)
        o.write_buffer_bytes = 64u << 20; /* never flushes on its own here */
    return o;
}

/* The child: write batches from last_applied+1 on, report each index (with
 * MODE_NO_WAL: each index a tr_store_flush has persisted). With fsize > 0,
 * lower the file size limit first and stop at the first failure; exit 0 when
 * that failure was reported and sticky. MODE_NO_WAL_CLOSE: write
 * CLOSE_BATCHES batches, close, report the last index, exit 0. */
static int child_main(const char *dir, int fd, long fsize, enum child_mode mode)
{
    struct tr_store_opts o = child_opts(mode);
    struct tr_store *s = NULL;
    struct tr_err err = {0};
    if (tr_store_open(dir, &o, &s, &err) != 0) {
        fprintf(stderr, "child open: %s\n", err.msg);
        return 2;
    }
    if (fsize > 0) {
        struct rlimit lim;
        signal(SIGXFSZ, SIG_IGN);
        getrlimit(RLIMIT_FSIZE, &lim);
        lim.rlim_cur = (rlim_t)fsize;
        setrlimit(RLIMIT_FSIZE, &lim);
    }
    struct tr_batch *b = tr_batch_new(s);
    int status = 3; /* no failure seen */
    uint64_t first = tr_store_last_applied(s) + 1;
    for (uint64_t i = first; fsize == 0 || i < 1000000; i++) {
        if (fill_batch(b, i) != 0) {
            status = 4;
            break;
        }
        int rv = tr_batch_commit(b, i, &err);
        if (rv != 0) {
            /* The failure must be sticky even for a correct next batch. */
            tr_batch_clear(b);
            fill_batch(b, i);
            int again = tr_batch_commit(b, i, &err);
            status = (fsize > 0 && again == rv && tr_store_failed(s, NULL) == rv) ? 0 : 5;
            break;
        }
        if (mode == MODE_NO_WAL_CLOSE) {
            if (i - first + 1 < CLOSE_BATCHES)
                continue;
            tr_batch_free(b);
            tr_store_close(s);
            return write_all(fd, &i, sizeof(i)) == 0 ? 0 : 6;
        }
        if (mode == MODE_NO_WAL) {
            if (i % FLUSH_EVERY != 0)
                continue;
            if (tr_store_flush(s, &err) != 0) {
                fprintf(stderr, "child flush: %s\n", err.msg);
                status = 7;
                break;
            }
        }
        if (write_all(fd, &i, sizeof(i)) != 0) {
            status = 6;
            break;
        }
    }
    tr_batch_free(b);
    tr_store_close(s);
    return status;
}

/* ------------------------------------------------------------------------ */

static void verify(const char *dir, uint64_t acked, uint64_t *L_out)
{
    struct tr_store *s = open_or_die(dir, NULL);
    struct tr_err err = {0};
    uint64_t L = tr_store_last_applied(s);
    if (L < acked)
        fail_msg("last_applied %llu below acknowledged %llu", (unsigned long long)L,
                 (unsigned long long)acked);
    for (tr_run_id r = 1; r <= RUNS; r++) {
        uint64_t n = L >= r ? (L - r) / RUNS + 1 : 0;
        struct tr_journal_iter *it = NULL;
        uint64_t seq, want = 1;
        const void *data;
        size_t len, elen;
        char ev[512];
        int rv;
        assert_int_equal(tr_journal_iter_open(s, NULL, r, 0, &it, &err), 0);
        while ((rv = tr_journal_iter_next(it, &seq, &data, &len, &err)) == 1) {
            if (seq != want)
                fail_msg("run %llu: seq %llu where %llu expected (L=%llu)",
                         (unsigned long long)r, (unsigned long long)seq,
                         (unsigned long long)want, (unsigned long long)L);
            event_of(r + RUNS * (seq - 1), ev, sizeof(ev), &elen);
            assert_int_equal(len, elen);
            assert_memory_equal(data, ev, len);
            want++;
        }
        assert_int_equal(rv, 0);
        tr_journal_iter_close(it);
        if (want - 1 != n)
            fail_msg("run %llu: %llu events, expected %llu (L=%llu)", (unsigned long long)r,
                     (unsigned long long)(want - 1), (unsigned long long)n,
                     (unsigned long long)L);
        unsigned char key[16];
        void *v = NULL;
        size_t vl = 0;
        tr_journal_key(r, n + 1, key);
        rv = tr_store_get(s, NULL, TR_CF_RUNS, key, 8, &v, &vl, &err);
        if (n == 0) {
            assert_int_equal(rv, TR_ENOTFOUND);
        } else {
            assert_int_equal(rv, 0);
            assert_int_equal(vl, 8);
            assert_memory_equal(v, key + 8, 8);
            tr_free(v);
        }
    }
    /* Memory records: exactly the multiples of BLOB_EVERY up to L, each blob
     * intact. */
    struct tr_store_iter *it = NULL;
    const void *k, *v;
    size_t kl, vl;
    uint64_t want = BLOB_EVERY;
    int rv;
    unsigned char blob[BLOB_LEN];
    assert_int_equal(tr_store_iter_open(s, NULL, TR_CF_MEMORY, NULL, 0, NULL, 0, &it, &err), 0);
    while ((rv = tr_store_iter_next(it, &k, &kl, &v, &vl, &err)) == 1) {
        unsigned char key[16];
        tr_journal_key(want, 0, key);
        assert_int_equal(kl, 8);
        assert_memory_equal(k, key, 8);
        void *data = NULL;
        size_t dlen = 0;
        assert_int_equal(tr_blob_get(s, NULL, v, &data, &dlen, &err), 0);
        blob_of(want, blob);
        assert_int_equal(dlen, BLOB_LEN);
        assert_memory_equal(data, blob, BLOB_LEN);
        tr_free(data);
        want += BLOB_EVERY;
    }
    assert_int_equal(rv, 0);
    tr_store_iter_close(it);
    assert_true(want > L);
    tr_store_close(s);
    *L_out = L;
}

static const char *self_exe;

/* Start the child; returns its pid and the read end of its pipe. */
static pid_t spawn_child(const char *dir, long fsize, enum child_mode mode, int *rfd)
{
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char fdbuf[16], fsbuf[32], modebuf[16];
        close(p[0]);
        snprintf(fdbuf, sizeof(fdbuf), "%d", p[1]);
        snprintf(fsbuf, sizeof(fsbuf), "%ld", fsize);
        snprintf(modebuf, sizeof(modebuf), "%d", (int)mode);
        execl(self_exe, self_exe, "--child", dir, fdbuf, fsbuf, modebuf, (char *)NULL);
        _exit(127);
    }
    close(p[1]);
    *rfd = p[0];
    return pid;
}

/* Read one reported index; 0 at EOF. */
static uint64_t read_ack(int fd)
{
    uint64_t i = 0;
    size_t got = 0;
    while (got < sizeof(i)) {
        ssize_t k = read(fd, (char *)&i + got, sizeof(i) - got);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return 0;
        got += (size_t)k;
    }
    return i;
}

static void sigkill_rounds(enum child_mode mode)
{
    char *dir = tdir_new();
    uint64_t acked = 0, L = 0;
    unsigned seed = 12345;
    int rounds = getenv("TR_CRASH_ROUNDS") ? atoi(getenv("TR_CRASH_ROUNDS")) : 30;
    for (int round = 0; round < rounds; round++) {
        int fd;
        pid_t pid = spawn_child(dir, 0, mode, &fd);
        seed = seed * 1103515245u + 12345u;
        /* Let it commit between 0 and ~400 batches past this round's start
         * (without a WAL: flush 0 to ~20 times), then kill it wherever it
         * is. */
        unsigned wait_for = (seed >> 8) % (mode == MODE_WAL ? 400 : 20);
        for (unsigned n = 0; n < wait_for; n++) {
            uint64_t i = read_ack(fd);
            if (i == 0)
                fail_msg("child died early (round %d)", round);
            acked = i;
        }
        kill(pid, SIGKILL);
        /* Acks already in the pipe are commits too. */
        for (uint64_t i; (i = read_ack(fd)) != 0;)
            acked = i;
        close(fd);
        int st = 0;
        assert_int_equal(waitpid(pid, &st, 0), pid);
        assert_true(WIFSIGNALED(st));
        verify(dir, acked, &L);
    }
    assert_true(L > 0);
    tdir_remove(dir);
}

static void test_sigkill(void **state)
{
    (void)state;
    sigkill_rounds(MODE_WAL);
}

static void test_sigkill_no_wal(void **state)
{
    (void)state;
    sigkill_rounds(MODE_NO_WAL);
}

static void test_close_flushes_no_wal(void **state)
{
    (void)state;
    char *dir = tdir_new();
    uint64_t L = 0, last = 0;
    for (int round = 0; round < 3; round++) {
        int fd;
        pid_t pid = spawn_child(dir, 0, MODE_NO_WAL_CLOSE, &fd);
        uint64_t i = read_ack(fd);
        close(fd);
        int st = 0;
        assert_int_equal(waitpid(pid, &st, 0), pid);
        assert_true(WIFEXITED(st));
        assert_int_equal(WEXITSTATUS(st), 0);
        assert_int_equal(i, last + CLOSE_BATCHES);
        verify(dir, i, &L);
        assert_int_equal(L, i); /* nothing more than was written either */
        last = i;
    }
    tdir_remove(dir);
}

static void test_fsize_faults(void **state)
{
    (void)state;
    char *dir = tdir_new();
    uint64_t acked = 0, L = 0, prev = 0;
    int progressed = 0;
    for (int round = 0; round < 16; round++) {
        int fd;
        long limit = 24 * 1024 + round * 23 * 1024;
        pid_t pid = spawn_child(dir, limit, MODE_WAL, &fd);
        for (uint64_t i; (i = read_ack(fd)) != 0;)
            acked = i;
        close(fd);
        int st = 0;
        assert_int_equal(waitpid(pid, &st, 0), pid);
        if (!WIFEXITED(st))
            fail_msg("round %d: child killed by signal %d", round, WTERMSIG(st));
        /* 2: the open itself failed under the limit — also a fault, fine. */
        if (WEXITSTATUS(st) != 0 && WEXITSTATUS(st) != 2)
            fail_msg("round %d: child status %d", round, WEXITSTATUS(st));
        verify(dir, acked, &L);
        progressed += L > prev;
        prev = L;
    }
    assert_true(progressed > 0);
    tdir_remove(dir);
}

int main(int argc, char **argv)
{
    if (argc == 6 && strcmp(argv[1], "--child") == 0)
        return child_main(argv[2], atoi(argv[3]), atol(argv[4]), (enum child_mode)atoi(argv[5]));
    self_exe = "/proc/self/exe";
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sigkill),
        cmocka_unit_test(test_sigkill_no_wal),
        cmocka_unit_test(test_close_flushes_no_wal),
        cmocka_unit_test(test_fsize_faults),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
