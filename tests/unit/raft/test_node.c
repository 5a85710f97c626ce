/* The raft node wrapper over canonical raft: a one-voter cluster on a real
 * raft log in a temp dir, with an in-memory FSM that sums its entries. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"

#include "raft/io.h"
#include "raft/raft.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/vfs.h>

/* --- a tiny FSM: sum of uint64 entries, count of entries ---------------------- */

struct sum_fsm {
    uint64_t sum;
    uint64_t applied;
    uint64_t result; /* scratch: the result of the entry just applied */
};

static int sum_apply(struct raft_fsm *fsm, const struct raft_buffer *buf, void **result)
{
    struct sum_fsm *f = fsm->data;
    uint64_t v;
    if (buf->len != sizeof v)
        return RAFT_MALFORMED;
    memcpy(&v, buf->base, sizeof v);
    f->sum += v;
    f->applied++;
    f->result = f->sum;
    *result = &f->result;
    return 0;
}

static int sum_snapshot(struct raft_fsm *fsm, struct raft_buffer *bufs[], unsigned *n)
{
    struct sum_fsm *f = fsm->data;
    *bufs = raft_malloc(sizeof **bufs);
    (*bufs)[0].len = 2 * sizeof(uint64_t);
    (*bufs)[0].base = raft_malloc((*bufs)[0].len);
    memcpy((*bufs)[0].base, &f->sum, 8);
    memcpy((char *)(*bufs)[0].base + 8, &f->applied, 8);
    *n = 1;
    return 0;
}

static int sum_restore(struct raft_fsm *fsm, struct raft_buffer *buf)
{
    struct sum_fsm *f = fsm->data;
    if (buf->len != 16)
        return RAFT_MALFORMED;
    memcpy(&f->sum, buf->base, 8);
    memcpy(&f->applied, (char *)buf->base + 8, 8);
    raft_free(buf->base);
    return 0;
}

/* --- fixture ------------------------------------------------------------------ */

struct fixture {
    uv_loop_t loop;
    char dir[64];
    char address[32];
    struct sum_fsm sum;
    struct raft_fsm fsm;
    struct tr_raft *node;
    int closed;
};


static void open_node(struct fixture *f, int bootstrap)
{
    struct tr_err err = { 0 };
    f->fsm = (struct raft_fsm){ .version = 1, .data = &f->sum, .apply = sum_apply,
                                .snapshot = sum_snapshot, .restore = sum_restore };
    struct tr_raft_opts o = { .id = 1, .dir = f->dir, .address = f->address, .bootstrap = bootstrap,
                              .fsm = &f->fsm, .snapshot_threshold = 64, .snapshot_trailing = 16 };
    int rv = tr_raft_open(&f->loop, &o, &f->node, &err);
    if (rv != TR_OK)
        fail_msg("open: %s", err.msg);
}

static void tick_cb(uv_timer_t *t)
{
    (void)t;
}

/* Run the loop until cond(f) holds; fail after max_iters waits of 10 ms. */
static void run_until(struct fixture *f, int (*cond)(struct fixture *), int max_iters)
{
    uv_timer_t t;
    uv_timer_init(&f->loop, &t);
    for (int i = 0; i < max_iters && !cond(f); i++) {
        uv_timer_start(&t, tick_cb, 10, 0);
        uv_run(&f->loop, UV_RUN_ONCE);
    }
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_true(cond(f));
}

static int is_leader(struct fixture *f) { return tr_raft_is_leader(f->node); }
static int is_closed(struct fixture *f) { return f->closed; }

static void closed_cb(void *arg)
{
    struct fixture *f = arg;
    f->closed = 1;
}

static void close_node(struct fixture *f)
{
    f->closed = 0;
    tr_raft_close(f->node, closed_cb, f);
    run_until(f, is_closed, 1000);
    f->node = NULL;
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/tr-raft-test-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->address, sizeof f->address, "127.0.0.1:%d", h_free_port());
    uv_loop_init(&f->loop);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(uv_loop_close(&f->loop), 0);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

/* --- proposals ----------------------------------------------------------------- */

#define N_PROPOSALS 500

struct prop {
    struct tr_raft_propose p;
    struct fixture *f;
    int status;
    uint64_t result;
    int done;
};

static int done_count;
static int order_ok;
static uint64_t last_result;

static void prop_cb(struct tr_raft_propose *p, int status, void *result)
{
    struct prop *pr = p->data;
    pr->status = status;
    pr->done = 1;
    if (status == TR_OK) {
        pr->result = *(uint64_t *)result;
        if (pr->result <= last_result)
            order_ok = 0;
        last_result = pr->result;
    }
    done_count++;
}

static int propose_value(struct fixture *f, struct prop *pr, uint64_t v)
{
    void *buf = raft_malloc(sizeof v);
    memcpy(buf, &v, sizeof v);
    pr->f = f;
    pr->p.data = pr;
    int rv = tr_raft_propose(f->node, &pr->p, buf, sizeof v, prop_cb);
    if (rv != TR_OK)
        raft_free(buf);
    return rv;
}

static int all_done(struct fixture *f) { return done_count == N_PROPOSALS; }

static void test_propose_apply_restart(void **state)
{
    struct fixture *f = *state;
    static struct prop props[N_PROPOSALS];
    memset(props, 0, sizeof props);
    done_count = 0;
    order_ok = 1;
    last_result = 0;

    open_node(f, 1);
    run_until(f, is_leader, 500);
    for (int i = 0; i < N_PROPOSALS; i++)
        assert_int_equal(propose_value(f, &props[i], (uint64_t)i + 1), TR_OK);
    /* Nothing completes inside tr_raft_propose. */
    assert_int_equal(done_count, 0);
    run_until(f, all_done, 3000);
    assert_true(order_ok);
    for (int i = 0; i < N_PROPOSALS; i++)
        assert_int_equal(props[i].status, TR_OK);
    uint64_t want = (uint64_t)N_PROPOSALS * (N_PROPOSALS + 1) / 2;
    assert_int_equal(f->sum.sum, want);
    assert_int_equal(props[N_PROPOSALS - 1].result, want);
    close_node(f);

    /* Restart from the same dir without bootstrap: the FSM (in memory here)
     * is rebuilt from the snapshot and the log. */
    memset(&f->sum, 0, sizeof f->sum);
    open_node(f, 0);
    run_until(f, is_leader, 500);
    struct prop one = { 0 };
    done_count = N_PROPOSALS - 1;
    last_result = 0;
    assert_int_equal(propose_value(f, &one, 1000), TR_OK);
    run_until(f, all_done, 3000);
    assert_int_equal(one.status, TR_OK);
    assert_int_equal(one.result, want + 1000);
    close_node(f);
}

/* A proposal made from inside another proposal's callback is queued, not
 * re-entered into raft. */
static struct prop chained[2];
static void chain_cb(struct tr_raft_propose *p, int status, void *result)
{
    struct prop *pr = p->data;
    prop_cb(p, status, result);
    if (pr == &chained[0])
        assert_int_equal(propose_value(pr->f, &chained[1], 5), TR_OK);
}

static int chain_done(struct fixture *f) { return chained[1].done; }

static void test_propose_from_callback(void **state)
{
    struct fixture *f = *state;
    memset(chained, 0, sizeof chained);
    done_count = 0;
    last_result = 0;
    order_ok = 1;
    open_node(f, 1);
    run_until(f, is_leader, 500);
    void *buf = raft_malloc(8);
    uint64_t v = 7;
    memcpy(buf, &v, 8);
    chained[0].f = f;
    chained[0].p.data = &chained[0];
    assert_int_equal(tr_raft_propose(f->node, &chained[0].p, buf, 8, chain_cb), TR_OK);
    run_until(f, chain_done, 1000);
    assert_int_equal(chained[0].result, 7);
    assert_int_equal(chained[1].result, 12);
    close_node(f);
}

/* Proposals still queued when the node closes fail with TR_ECLOSED; a
 * proposal after close starts is refused. */
static void test_close_with_queued(void **state)
{
    struct fixture *f = *state;
    static struct prop props[10];
    memset(props, 0, sizeof props);
    done_count = 0;
    last_result = 0;
    open_node(f, 1);
    run_until(f, is_leader, 500);
    for (int i = 0; i < 10; i++)
        assert_int_equal(propose_value(f, &props[i], 1), TR_OK);
    f->closed = 0;
    tr_raft_close(f->node, closed_cb, f);
    struct prop late = { 0 };
    assert_int_equal(propose_value(f, &late, 1), TR_ECLOSED);
    run_until(f, is_closed, 1000);
    for (int i = 0; i < 10; i++) {
        assert_true(props[i].done);
        assert_int_equal(props[i].status, TR_ECLOSED);
    }
}

/* A follower-to-be (not bootstrapped, no configuration) never leads and
 * refuses proposals with TR_ENOTLEADER. */
static void test_not_leader(void **state)
{
    struct fixture *f = *state;
    struct prop p = { 0 };
    done_count = 0;
    open_node(f, 0);
    assert_int_equal(propose_value(f, &p, 1), TR_OK);
    for (int i = 0; i < 20; i++)
        uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_true(p.done);
    assert_int_equal(p.status, TR_ENOTLEADER);
    close_node(f);
}

/* Entries must be 8-byte multiples (raft 0.15's segment writer corrupts the
 * log otherwise): anything else is refused before it reaches raft. */
static void test_unpadded_refused(void **state)
{
    struct fixture *f = *state;
    struct prop p = { 0 };
    open_node(f, 1);
    void *buf = raft_malloc(5);
    memset(buf, 1, 5);
    p.p.data = &p;
    assert_int_equal(tr_raft_propose(f->node, &p.p, buf, 5, prop_cb), TR_EINVAL);
    raft_free(buf);
    close_node(f);
}

/* --- open segments prefilled (raft/prefill.c) ---------------------------------- */

/* Extents of path with FIEMAP: 1 if any is unwritten, 0 if none, -1 if the
 * file system cannot tell. */
static int has_unwritten(const char *path)
{
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    size_t sz = sizeof(struct fiemap) + 64 * sizeof(struct fiemap_extent);
    struct fiemap *fm = calloc(1, sz);
    fm->fm_length = ~0ULL;
    fm->fm_flags = FIEMAP_FLAG_SYNC;
    fm->fm_extent_count = 64;
    int rv = ioctl(fd, FS_IOC_FIEMAP, fm) == 0 ? 0 : -1;
    for (unsigned i = 0; rv == 0 && i < fm->fm_mapped_extents; i++)
        if (fm->fm_extents[i].fe_flags & FIEMAP_EXTENT_UNWRITTEN)
            rv = 1;
    if (rv == 0 && fm->fm_mapped_extents == 0)
        rv = -1;
    free(fm);
    close(fd);
    return rv;
}

/* ext4 and XFS allocate unwritten extents: there the test can also check the
 * control file. */
static int fs_has_unwritten_extents(const char *dir)
{
    struct statfs st;
    assert_int_equal(statfs(dir, &st), 0);
    return st.f_type == 0xEF53 || st.f_type == 0x58465342;
}

/* libraft's posix_fallocate reaches ours: the open segments of a running
 * node are written through (no unwritten extent), other files are only
 * allocated, and bytes a file holds are never overwritten. */
static void test_segments_prefilled(void **state)
{
    struct fixture *f = *state;
    unsigned long before = tr_raft_prefill_count();
    static struct prop props[20];
    memset(props, 0, sizeof props);
    done_count = N_PROPOSALS - 20;
    last_result = 0;
    order_ok = 1;
    open_node(f, 1);
    run_until(f, is_leader, 500);
    for (int i = 0; i < 20; i++)
        assert_int_equal(propose_value(f, &props[i], 1), TR_OK);
    run_until(f, all_done, 3000);
    assert_true(tr_raft_prefill_count() > before);

    /* open-1 holds the entries: raft wrote to it only once prepared. (Later
     * segments may still be being prepared, on the thread pool.) */
    char path[512];
    snprintf(path, sizeof path, "%s/open-1", f->dir);
    int u = has_unwritten(path);
    int unwritten_fs = fs_has_unwritten_extents(f->dir);
    if (unwritten_fs)
        assert_int_equal(u, 0);
    else
        assert_true(u <= 0); /* cannot tell, or written */

    /* Not a segment: allocated only. */
    snprintf(path, sizeof path, "%s/other", f->dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
    assert_true(fd >= 0);
    assert_int_equal(posix_fallocate(fd, 0, 1 << 20), 0);
    close(fd);
    if (unwritten_fs)
        assert_int_equal(has_unwritten(path), 1);

    /* A segment-named file holding bytes: they stay. */
    snprintf(path, sizeof path, "%s/open-999", f->dir);
    fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0644);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, "abcdefgh", 8, 0), 8);
    assert_int_equal(posix_fallocate(fd, 0, 1 << 20), 0);
    /* Allocated, not written through (tr_raft_prefill_count would not tell:
     * raft may be preparing its next segment on the pool meanwhile). */
    if (unwritten_fs)
        assert_int_equal(has_unwritten(path), 1);
    char back[8];
    assert_int_equal(pread(fd, back, 8, 0), 8);
    assert_memory_equal(back, "abcdefgh", 8);
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    assert_int_equal(st.st_size, 1 << 20);
    close(fd);
    unlink(path);
    close_node(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_propose_apply_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_propose_from_callback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_with_queued, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_leader, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unpadded_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_segments_prefilled, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
