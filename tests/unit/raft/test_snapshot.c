/* Raft snapshots off the loop (raft/io.c + the FSM's version 3): real raft
 * (libuv io, TCP on loopback), the real FSM and real RocksDB stores, driven
 * on a plain libuv loop in this thread.
 *
 *  loop_runs_during_snapshot  a store of tens of MB: while the FSM serialises
 *                             it on the thread pool, the loop runs timers and
 *                             raft appends complete (seen by loop code while
 *                             the job says it is running); the snapshot is
 *                             then persisted and the store flushed.
 *  close_during_snapshot      raft closed with the job in flight: its close
 *                             callback comes after the job and its finalize;
 *                             nothing leaks (ASan); the node reopens with the
 *                             same state.
 *  restore_roundtrip          a raft dir with snapshots restored into an
 *                             empty store gives the same state digest.
 *  follower_install_snapshot  a new follower whose entries the leader has
 *                             compacted catches up by InstallSnapshot to the
 *                             leader's digest, and keeps replicating.
 *
 * Ordering is observed, never timed: the loops poll conditions with a
 * bounded number of turns. */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "harness.h"

#include "fsm_fixture.h"
#include "raft/fsm.h"
#include "raft/io.h"
#include "raft/raft.h"
#include "schemas/command_generated.h"
#include "storage/storage.h"

#define FILL_VALUE (64u << 10)

/* ---- one node: store + FSM + raft on the test's loop --------------------------- */

struct node {
    uint64_t id;
    char dir[80];               /* raft/ and db/ under the fixture's dir */
    char address[32];
    struct tr_store *store;
    struct tr_fsm *fsm;
    struct raft_fsm *rfsm;
    struct tr_raft *raft;
    int closed;
    /* observed at the close callback */
    struct tr_fsm_snap_stats at_close;
};

struct fixture {
    uv_loop_t loop;
    char dir[64];
    struct node n[2];
    int fatal;
};

static struct fixture *F; /* for the FSM's fatal hook */

static void on_fatal(void *ud, const char *msg)
{
    (void)ud;
    fprintf(stderr, "fsm fatal: %s\n", msg);
    F->fatal++;
}

static void fsm_on_init(struct raft *raft, void *arg)
{
    tr_fsm_set_raft(arg, raft);
}

static void store_open(struct node *n, const char *db)
{
    char path[128];
    struct tr_err err = { 0 };
    struct tr_store_opts so;
    tr_store_opts_init(&so);
    so.no_wal = 1; /* as the state service runs it: snapshots flush */
    snprintf(path, sizeof path, "%s/%s", n->dir, db);
    if (tr_store_open(path, &so, &n->store, &err) != TR_OK)
        fail_msg("store: %s", err.msg);
}

/* `mb` MiB of incompressible values in one batch at raft index 1 (raft's
 * bootstrap configuration entry, which the FSM never applies). */
static void store_fill(struct node *n, unsigned mb)
{
    struct tr_batch *b = tr_batch_new(n->store);
    unsigned char *v = malloc(FILL_VALUE);
    uint64_t x = 0x9e3779b97f4a7c15ULL;
    struct tr_err err = { 0 };
    for (unsigned i = 0; i < mb * 16; i++) {
        for (size_t k = 0; k + 8 <= FILL_VALUE; k += 8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            memcpy(v + k, &x, 8);
        }
        char key[32];
        int kl = snprintf(key, sizeof key, "fill/%06u", i);
        assert_int_equal(tr_batch_put(b, TR_CF_MEMORY, key, (size_t)kl, v, FILL_VALUE), TR_OK);
    }
    if (tr_batch_commit(b, 1, &err) != TR_OK)
        fail_msg("fill: %s", err.msg);
    tr_batch_free(b);
    free(v);
}

static void raft_open(struct fixture *f, struct node *n, int bootstrap, unsigned threshold, unsigned trailing)
{
    char rdir[128];
    struct tr_err err = { 0 };
    struct tr_fsm_opts fo = { .store = n->store, .on_fatal = on_fatal };
    n->rfsm = tr_fsm_new(&fo, &n->fsm);
    snprintf(rdir, sizeof rdir, "%s/raft", n->dir);
    struct tr_raft_opts o = { .id = n->id, .dir = rdir, .address = n->address, .bootstrap = bootstrap,
                              .snapshot_threshold = threshold, .snapshot_trailing = trailing,
                              .fsm = n->rfsm, .on_init = fsm_on_init, .on_init_arg = n->fsm };
    n->closed = 0;
    if (tr_raft_open(&f->loop, &o, &n->raft, &err) != TR_OK)
        fail_msg("raft: %s", err.msg);
}

static void node_init(struct fixture *f, struct node *n, uint64_t id)
{
    n->id = id;
    snprintf(n->dir, sizeof n->dir, "%s/n%llu", f->dir, (unsigned long long)id);
    assert_int_equal(mkdir(n->dir, 0755), 0);
    snprintf(n->address, sizeof n->address, "127.0.0.1:%d", h_free_port());
}

static struct tr_raft_io *node_io(struct node *n)
{
    return (struct tr_raft_io *)tr_raft_raw(n->raft)->io;
}

static void raft_closed(void *arg)
{
    struct node *n = arg;
    /* raft's close callback has run: raft/io.c promised the snapshot job
     * and its finalize came first. */
    tr_fsm_snap_stats(n->fsm, &n->at_close);
    n->closed = 1;
}

/* ---- running the loop ------------------------------------------------------------ */

static void poll_tick(uv_timer_t *t)
{
    (void)t;
}

/* Run the loop until cond(f) holds, at most `turns` turns of at most 10 ms
 * each (a guard against hanging, not a measurement). */
static void run_until(struct fixture *f, int (*cond)(struct fixture *), int turns)
{
    uv_timer_t t;
    uv_timer_init(&f->loop, &t);
    for (int i = 0; i < turns && !cond(f); i++) {
        uv_timer_start(&t, poll_tick, 10, 0);
        uv_run(&f->loop, UV_RUN_ONCE);
    }
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_true(cond(f));
}

static int n0_closed(struct fixture *f) { return f->n[0].closed; }
static int n1_closed(struct fixture *f) { return f->n[1].closed; }

static void node_close_raft(struct fixture *f, struct node *n)
{
    tr_raft_close(n->raft, raft_closed, n);
    run_until(f, n == &f->n[0] ? n0_closed : n1_closed, 3000);
    n->raft = NULL;
    tr_fsm_free(n->fsm);
    n->fsm = NULL;
}

static void node_close(struct fixture *f, struct node *n)
{
    if (n->raft != NULL)
        node_close_raft(f, n);
    tr_store_close(n->store);
    n->store = NULL;
}

/* ---- proposals -------------------------------------------------------------------- */

struct prop {
    struct tr_raft_propose p;
    struct fixture *f;
};

static int n_proposed, n_done, n_ok, n_done_while_running;

static void prop_done(struct tr_raft_propose *p, int status, void *result)
{
    struct prop *pr = p->data;
    struct tr_fsm_snap_stats st;
    tr_fsm_snap_stats(pr->f->n[0].fsm, &st);
    n_done++;
    if (status == TR_OK && ((struct tr_fsm_result *)result)->verdict == TR_FSM_OK)
        n_ok++;
    if (st.running)
        n_done_while_running++; /* appended, committed and applied during the job */
    free(pr);
}

/* A RunCreate for run `id` owned by node 1, proposed on n. */
static void propose_run(struct fixture *f, struct node *n, uint64_t id)
{
    struct tr_fb_builder b;
    tr_fb_builder_init(&b);
    fx_run_create_start(&b, id, "take a snapshot", 1);
    troupe_cmd_RunCreate_add_epoch(&b, 1);
    tr_fb_ref op = troupe_cmd_RunCreate_end(&b);
    fx_command_finish(&b, FX_START_US + (int64_t)id, 0, 0, troupe_cmd_Op_RunCreate, op);
    size_t len;
    const uint8_t *data = tr_fb_builder_data(&b, &len);
    size_t padded = (len + 7) & ~(size_t)7;
    void *buf = raft_malloc(padded);
    memset(buf, 0, padded);
    memcpy(buf, data, len);
    tr_fb_builder_free(&b);

    struct prop *pr = calloc(1, sizeof *pr);
    pr->f = f;
    pr->p.data = pr;
    assert_int_equal(tr_raft_propose(n->raft, &pr->p, buf, padded, prop_done), TR_OK);
    n_proposed++;
}

static int n0_leader(struct fixture *f) { return tr_raft_is_leader(f->n[0].raft); }
static int all_done(struct fixture *f) { return n_done == n_proposed; }

/* Propose `count` runs from `first` one after another (each after the
 * previous one is applied) and check every one was created. */
static void create_runs(struct fixture *f, uint64_t first, int count)
{
    for (int i = 0; i < count; i++) {
        propose_run(f, &f->n[0], first + (uint64_t)i);
        run_until(f, all_done, 3000);
    }
    assert_int_equal(n_ok, n_done);
}

static int n0_no_snapshot_in_flight(struct fixture *f)
{
    struct tr_fsm_snap_stats st;
    tr_fsm_snap_stats(f->n[0].fsm, &st);
    return st.finalized == st.taken;
}

/* Create runs from *next on until the leader has written `want` snapshots
 * (one is taken at most every threshold entries, and not while another is
 * in flight). */
static void runs_until_snapshots(struct fixture *f, uint64_t *next, uint64_t want)
{
    struct tr_fsm_snap_stats st;
    for (int round = 0; round < 100; round++) {
        tr_fsm_snap_stats(f->n[0].fsm, &st);
        if (st.written >= want)
            break;
        create_runs(f, *next, 4);
        *next += 4;
        run_until(f, n0_no_snapshot_in_flight, 3000);
    }
    tr_fsm_snap_stats(f->n[0].fsm, &st);
    assert_true(st.written >= want);
    assert_int_equal(st.failed, 0);
}

static void digest(struct node *n, unsigned char out[TR_STATE_DIGEST_LEN], uint64_t *applied)
{
    struct tr_err err = { 0 };
    if (tr_store_digest(n->store, NULL, out, applied, &err) != TR_OK)
        fail_msg("digest: %s", err.msg);
}

/* Snapshot files raft has written under n's raft dir. */
static int snapshot_files(struct node *n)
{
    char rdir[128];
    snprintf(rdir, sizeof rdir, "%s/raft", n->dir);
    DIR *d = opendir(rdir);
    assert_non_null(d);
    int count = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        size_t l = strlen(de->d_name);
        if (strncmp(de->d_name, "snapshot-", 9) == 0 && l > 5 && strcmp(de->d_name + l - 5, ".meta") == 0)
            count++;
    }
    closedir(d);
    return count;
}

/* ---- fixture ------------------------------------------------------------------------ */

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/tr-snap-test-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    assert_int_equal(uv_loop_init(&f->loop), 0);
    F = f;
    n_proposed = n_done = n_ok = n_done_while_running = 0;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    assert_int_equal(f->fatal, 0);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

/* ---- the loop keeps running ---------------------------------------------------------- */

struct ticker {
    uv_timer_t t;
    struct fixture *f;
    int ticks_while_running;
    int in_flight_max;          /* proposals kept in flight */
    uint64_t next_run;
};

/* Every millisecond: note whether the job is running right now, and keep a
 * few proposals in flight (raft appends that must complete meanwhile). */
static void ticker_cb(uv_timer_t *t)
{
    struct ticker *k = t->data;
    struct tr_fsm_snap_stats st;
    tr_fsm_snap_stats(k->f->n[0].fsm, &st);
    if (st.running)
        k->ticks_while_running++;
    if (st.written == 0 && n_proposed - n_done < k->in_flight_max)
        propose_run(k->f, &k->f->n[0], k->next_run++);
}

static struct ticker *ticker_of;
static int snapshot_seen_during_job(struct fixture *f)
{
    struct tr_fsm_snap_stats st;
    tr_fsm_snap_stats(f->n[0].fsm, &st);
    return st.written >= 1 && st.finalized >= 1 && ticker_of->ticks_while_running > 0 &&
           n_done_while_running > 0 && n_done == n_proposed;
}

static void test_loop_runs_during_snapshot(void **state)
{
    struct fixture *f = *state;
    struct node *n = &f->n[0];
    node_init(f, n, 1);
    store_open(n, "db");
    store_fill(n, 48);
    raft_open(f, n, 1, 16, 8);
    run_until(f, n0_leader, 3000);

    struct ticker k = { .f = f, .in_flight_max = 2, .next_run = 1 };
    ticker_of = &k;
    uv_timer_init(&f->loop, &k.t);
    k.t.data = &k;
    uv_timer_start(&k.t, ticker_cb, 1, 1);
    run_until(f, snapshot_seen_during_job, 6000);
    uv_timer_stop(&k.t);
    uv_close((uv_handle_t *)&k.t, NULL);
    run_until(f, all_done, 3000);

    struct tr_fsm_snap_stats st;
    tr_fsm_snap_stats(n->fsm, &st);
    print_message("loop turns seen while serialising: %d timer ticks, %d entries applied; "
                  "snapshot %llu bytes at index %llu\n",
                  k.ticks_while_running, n_done_while_running, (unsigned long long)st.last_bytes,
                  (unsigned long long)st.last_index);
    assert_true(st.last_bytes > 48u << 20); /* the whole store went into it */
    assert_true(st.last_index >= 16);
    assert_int_equal(st.failed, 0);
    assert_int_equal(n_ok, n_done); /* every run created, during the job too */
    /* raft persisted it (snapshot_put after the job) */
    assert_true(snapshot_files(n) >= 1);
    node_close(f, n);
    assert_int_equal(n->at_close.running, 0);
    assert_int_equal(n->at_close.finalized, n->at_close.taken);
}

/* ---- close with the job in flight ------------------------------------------------------ */

static int job_running(struct fixture *f)
{
    struct tr_fsm_snap_stats st;
    tr_fsm_snap_stats(f->n[0].fsm, &st);
    return st.running;
}

static int barrier_status = 1;
static void barrier_done(void *arg, int status, const char *msg)
{
    (void)arg;
    if (status != TR_OK)
        fprintf(stderr, "barrier: %s\n", msg);
    barrier_status = status;
}
static int barrier_finished(struct fixture *f) { return barrier_status != 1; }

/* After a restart: wait to lead, then for a barrier, which completes once
 * every entry before it is applied (raft commits the old entries only with
 * one of the new term). */
static void n0_catch_up(struct fixture *f)
{
    run_until(f, n0_leader, 3000);
    barrier_status = 1;
    assert_int_equal(tr_raft_barrier(f->n[0].raft, barrier_done, NULL), TR_OK);
    run_until(f, barrier_finished, 3000);
    assert_int_equal(barrier_status, TR_OK);
}

static void test_close_during_snapshot(void **state)
{
    struct fixture *f = *state;
    struct node *n = &f->n[0];
    unsigned char before[TR_STATE_DIGEST_LEN], after[TR_STATE_DIGEST_LEN];
    uint64_t applied_before, applied_after;
    node_init(f, n, 1);
    store_open(n, "db");
    store_fill(n, 48);
    raft_open(f, n, 1, 8, 4);
    run_until(f, n0_leader, 3000);

    /* The 8th entry after the configuration starts a snapshot. */
    for (uint64_t i = 1; i <= 8; i++)
        propose_run(f, n, i);
    run_until(f, job_running, 6000);
    /* On the loop, with the job running on the pool: close now. The job's
     * callback cannot have run yet (it runs on this loop). */
    assert_int_equal(tr_raft_io_pending(node_io(n)), 1);
    tr_raft_close(n->raft, raft_closed, n);
    run_until(f, n0_closed, 6000);
    n->raft = NULL;
    /* raft's close callback came after the job and its finalize. */
    assert_int_equal(n->at_close.running, 0);
    assert_int_equal(n->at_close.taken, 1);
    assert_int_equal(n->at_close.finalized, 1);
    assert_int_equal(n->at_close.written + n->at_close.failed, 1);
    /* Cancelled by the close: raft did not persist it. */
    assert_int_equal(snapshot_files(n), 0);
    tr_fsm_free(n->fsm);
    n->fsm = NULL;
    assert_int_equal(n_done, n_proposed); /* every proposal answered, one way or another */
    digest(n, before, &applied_before);

    /* The node comes back with the same state and carries on. */
    raft_open(f, n, 1, 8, 4);
    n0_catch_up(f);
    digest(n, after, &applied_after);
    assert_memory_equal(before, after, sizeof before);
    assert_int_equal(applied_before, applied_after);
    n_ok = n_done; /* the ones cut short by the close are not counted */
    create_runs(f, 100, 3);
    node_close(f, n);
}

/* ---- snapshot + restore round trip -------------------------------------------------------- */

static void test_restore_roundtrip(void **state)
{
    struct fixture *f = *state;
    struct node *n = &f->n[0];
    unsigned char want[TR_STATE_DIGEST_LEN], got[TR_STATE_DIGEST_LEN];
    uint64_t want_applied, got_applied;
    node_init(f, n, 1);
    store_open(n, "db");
    store_fill(n, 4);
    raft_open(f, n, 1, 8, 2);
    run_until(f, n0_leader, 3000);
    uint64_t next = 1;
    runs_until_snapshots(f, &next, 3);
    create_runs(f, next, 3); /* and a few entries after the last one */
    uint64_t entries = tr_fsm_applied(n->fsm);
    digest(n, want, &want_applied);
    node_close(f, n);

    /* An empty store under the same raft dir: raft restores its newest
     * snapshot into it and replays the few entries after it. */
    store_open(n, "db2");
    assert_int_equal(tr_store_last_applied(n->store), 0);
    raft_open(f, n, 1, 8, 2);
    n0_catch_up(f);
    digest(n, got, &got_applied);
    assert_memory_equal(want, got, sizeof want);
    assert_int_equal(want_applied, got_applied);
    /* It came from the snapshot: far fewer entries went through apply. */
    assert_true(tr_fsm_applied(n->fsm) < entries);
    node_close(f, n);
}

/* ---- a follower catches up by InstallSnapshot ----------------------------------------------- */

static int add_status = 1;
static void add_done(void *arg, int status, const char *msg)
{
    (void)arg;
    if (status != TR_OK)
        fprintf(stderr, "add: %s\n", msg);
    add_status = status;
}
static int add_finished(struct fixture *f) { return add_status != 1; }

static int follower_caught_up(struct fixture *f)
{
    struct tr_raft_info a, b;
    tr_raft_info(f->n[0].raft, &a);
    tr_raft_info(f->n[1].raft, &b);
    return a.last_applied == a.last_index && b.last_applied == a.last_applied;
}

static void assert_same_state(struct fixture *f)
{
    unsigned char d0[TR_STATE_DIGEST_LEN], d1[TR_STATE_DIGEST_LEN];
    uint64_t a0, a1;
    digest(&f->n[0], d0, &a0);
    digest(&f->n[1], d1, &a1);
    assert_memory_equal(d0, d1, sizeof d0);
    assert_int_equal(a0, a1);
}

static void test_follower_install_snapshot(void **state)
{
    struct fixture *f = *state;
    struct node *l = &f->n[0], *o = &f->n[1];
    node_init(f, l, 1);
    node_init(f, o, 2);
    store_open(l, "db");
    store_fill(l, 8);
    raft_open(f, l, 1, 8, 2);
    run_until(f, n0_leader, 3000);
    uint64_t next = 1;
    runs_until_snapshots(f, &next, 3); /* the log no longer starts at 1 */
    uint64_t entries = tr_fsm_applied(l->fsm);

    store_open(o, "db");
    raft_open(f, o, 0, 8, 2);
    assert_int_equal(tr_raft_add(l->raft, 2, o->address, 1, add_done, NULL), TR_OK);
    run_until(f, add_finished, 3000);
    assert_int_equal(add_status, TR_OK);
    run_until(f, follower_caught_up, 6000);
    assert_same_state(f);
    /* Through a snapshot: it applied far fewer entries than there are. */
    assert_true(tr_fsm_applied(o->fsm) < entries);
    assert_true(tr_store_last_applied(o->store) > tr_fsm_applied(o->fsm));

    /* And it keeps replicating (two voters: every entry needs it now). */
    create_runs(f, 1000, 12);
    run_until(f, follower_caught_up, 3000);
    assert_same_state(f);
    node_close(f, o);
    node_close(f, l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_loop_runs_during_snapshot, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_during_snapshot, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restore_roundtrip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_follower_install_snapshot, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
