/* The child process adapter, driven from actors: output capture, stdin, exit
 * status, signals, caps, wall-clock timeout killing the whole process group,
 * spawn failure, kill, shutdown with children running. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <errno.h>
#include <signal.h>

#include <cmocka.h>

#include <stdatomic.h>

#include "runtime/runtime.h"

#define WAIT_FOR(cond)                                                                \
    do {                                                                              \
        for (int wf_i = 0; wf_i < 120000 && !(cond); wf_i++)                          \
            usleep(1000);                                                             \
    } while (0)

#define MSG_KILL (TR_MSG_USER + 1)

struct pc {
    struct tr_proc_opts opts;
    char *argv[8];
    int kill_at_once; /* tr_proc_kill(SIGTERM) right after spawn */
    int spawn_rv;
    uint64_t id;
    atomic_int done;
    atomic_int bad;
    struct tr_proc_result r;
    char *out; /* copies */
    char *err;
    char errmsg[256];
};

struct pc_state {
    struct pc *pc;
};

static int pc_init(struct tr_ctx *ctx, void *state, void *arg)
{
    struct pc_state *st = state;
    struct pc *pc = arg;
    st->pc = pc;
    pc->opts.argv = pc->argv;
    if (!pc->opts.file)
        pc->opts.file = pc->argv[0];
    pc->spawn_rv = tr_proc_spawn(ctx, &pc->opts, &pc->id);
    if (pc->spawn_rv != 0) {
        atomic_store(&pc->done, 1);
        return 0;
    }
    if (pc->kill_at_once && tr_proc_kill(ctx, pc->id, SIGTERM) != 0)
        atomic_fetch_add(&pc->bad, 1);
    return 0;
}

static int pc_receive(struct tr_ctx *ctx, void *state, struct tr_msg *msg)
{
    struct pc_state *st = state;
    struct pc *pc = st->pc;
    if (msg->type == MSG_KILL) {
        if (tr_proc_kill(ctx, pc->id, SIGTERM) != 0)
            atomic_fetch_add(&pc->bad, 1);
        return 0;
    }
    if (msg->type != TR_MSG_PROC_EXIT || tr_proc_result(msg, &pc->r) != 0 || pc->r.id != pc->id) {
        atomic_fetch_add(&pc->bad, 1);
        return 0;
    }
    pc->out = malloc(pc->r.out_len + 1);
    memcpy(pc->out, pc->r.out, pc->r.out_len);
    pc->out[pc->r.out_len] = '\0';
    pc->err = malloc(pc->r.err_len + 1);
    memcpy(pc->err, pc->r.err, pc->r.err_len);
    pc->err[pc->r.err_len] = '\0';
    snprintf(pc->errmsg, sizeof(pc->errmsg), "%s", pc->r.errmsg);
    pc->r.out = pc->r.err = NULL;
    pc->r.errmsg = NULL;
    atomic_store(&pc->done, 1);
    return 0;
}

static const struct tr_behavior pc_behavior = {
    .name = "proc-test",
    .state_size = sizeof(struct pc_state),
    .init = pc_init,
    .receive = pc_receive,
};

static struct pc *pc_new(const char *a0, const char *a1, const char *a2, const char *a3)
{
    struct pc *pc = calloc(1, sizeof(*pc));
    pc->argv[0] = (char *)a0;
    pc->argv[1] = (char *)a1;
    pc->argv[2] = (char *)a2;
    pc->argv[3] = (char *)a3;
    return pc;
}

static void pc_free(struct pc *pc)
{
    free(pc->out);
    free(pc->err);
    free(pc);
}

static struct tr_rt *rt_up(void)
{
    struct tr_rt *rt = NULL;
    struct tr_rt_opts o = {.schedulers = 2};
    assert_int_equal(tr_rt_new(&o, &rt), 0);
    assert_int_equal(tr_rt_start(rt), 0);
    return rt;
}

static tr_actor_id spawn(struct tr_rt *rt, struct pc *pc)
{
    tr_actor_id id = 0;
    struct tr_spawn_opts so = {.behavior = &pc_behavior, .arg = pc, .sched = TR_SCHED_ANY};
    assert_int_equal(tr_spawn(rt, &so, &id), 0);
    return id;
}

static void run(struct pc *pc)
{
    struct tr_rt *rt = rt_up();
    spawn(rt, pc);
    WAIT_FOR(atomic_load(&pc->done));
    assert_int_equal(atomic_load(&pc->done), 1);
    assert_int_equal(atomic_load(&pc->bad), 0);
    tr_rt_shutdown(rt);
}

static void capture_and_exit_code(void **state)
{
    struct pc *pc = pc_new("/bin/sh", "-c", "echo out; echo err >&2; exit 3", NULL);
    run(pc);
    assert_int_equal(pc->spawn_rv, 0);
    assert_int_equal(pc->r.error, TR_OK);
    assert_int_equal(pc->r.exit_status, 3);
    assert_int_equal(pc->r.term_signal, 0);
    assert_false(pc->r.timed_out);
    assert_string_equal(pc->out, "out\n");
    assert_string_equal(pc->err, "err\n");
    pc_free(pc);
}

static void path_env_cwd(void **state)
{
    char *env[] = {"FOO=bar", "PATH=/usr/bin:/bin", NULL};
    struct pc *pc = pc_new("sh", "-c", "echo $FOO; pwd", NULL);
    pc->opts.env = env;
    pc->opts.cwd = "/";
    run(pc);
    assert_int_equal(pc->r.error, TR_OK);
    assert_string_equal(pc->out, "bar\n/\n");
    pc_free(pc);
}

static void stdin_data(void **state)
{
    struct pc *pc = pc_new("/bin/cat", NULL, NULL, NULL);
    pc->opts.stdin_data = "hello stdin";
    pc->opts.stdin_len = 11;
    run(pc);
    assert_int_equal(pc->r.exit_status, 0);
    assert_string_equal(pc->out, "hello stdin");
    pc_free(pc);

    /* More than a pipe holds, both ways. */
    size_t n = 3 * 1024 * 1024 + 17;
    char *big = malloc(n);
    for (size_t i = 0; i < n; i++)
        big[i] = (char)('a' + i % 26);
    pc = pc_new("/bin/cat", NULL, NULL, NULL);
    pc->opts.stdin_data = big;
    pc->opts.stdin_len = n;
    pc->opts.max_stdout = n;
    run(pc);
    assert_int_equal(pc->r.out_len, n);
    assert_false(pc->r.stdout_truncated);
    assert_memory_equal(pc->out, big, n);
    pc_free(pc);
    free(big);

    /* A child that ignores its stdin is no problem. */
    pc = pc_new("/bin/true", NULL, NULL, NULL);
    pc->opts.stdin_data = big = calloc(1, 1 << 20);
    pc->opts.stdin_len = 1 << 20;
    run(pc);
    assert_int_equal(pc->r.exit_status, 0);
    pc_free(pc);
    free(big);
}

static void signals(void **state)
{
    struct pc *pc = pc_new("/bin/sh", "-c", "kill -TERM $$; sleep 100", NULL);
    run(pc);
    assert_int_equal(pc->r.term_signal, SIGTERM);
    assert_false(pc->r.timed_out);
    pc_free(pc);

    /* tr_proc_kill reaches the child. */
    pc = pc_new("/bin/sleep", "100000", NULL, NULL);
    pc->kill_at_once = 1;
    run(pc);
    assert_int_equal(pc->r.term_signal, SIGTERM);
    pc_free(pc);
}

static void output_caps(void **state)
{
    struct pc *pc = pc_new("/bin/sh", "-c", "head -c 1000000 /dev/zero; head -c 500000 /dev/zero >&2; exit 0", NULL);
    pc->opts.max_stdout = 1000;
    pc->opts.max_stderr = 10;
    run(pc);
    assert_int_equal(pc->r.exit_status, 0); /* it was never blocked */
    assert_int_equal(pc->r.out_len, 1000);
    assert_int_equal(pc->r.err_len, 10);
    assert_true(pc->r.stdout_truncated);
    assert_true(pc->r.stderr_truncated);
    pc_free(pc);
}

/* A pid is gone once it is no longer running (a zombie waiting for init to
 * reap it counts as gone). */
static int pid_gone(long pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *rp = strrchr(buf, ')');
    return rp && (rp[2] == 'Z' || rp[2] == 'X');
}

static void timeout_kills_group(void **state)
{
    /* The child starts a grandchild that sleeps forever and prints its pid. */
    struct pc *pc = pc_new("/bin/sh", "-c", "sleep 100000 & echo $!; sleep 100000", NULL);
    pc->opts.timeout_ms = 300;
    run(pc);
    assert_true(pc->r.timed_out);
    assert_int_equal(pc->r.term_signal, SIGKILL);
    long gpid = strtol(pc->out, NULL, 10);
    assert_true(gpid > 1);
    WAIT_FOR(pid_gone(gpid));
    assert_true(pid_gone(gpid));
    pc_free(pc);
}

static void orphan_holding_pipe(void **state)
{
    /* The child exits at once; its background grandchild keeps stdout open. */
    struct pc *pc = pc_new("/bin/sh", "-c", "sleep 100000 & echo $!", NULL);
    run(pc);
    assert_int_equal(pc->r.exit_status, 0);
    assert_false(pc->r.timed_out);
    long gpid = strtol(pc->out, NULL, 10);
    assert_true(gpid > 1);
    WAIT_FOR(pid_gone(gpid));
    assert_true(pid_gone(gpid));
    pc_free(pc);
}

static void spawn_failure(void **state)
{
    struct pc *pc = pc_new("/nonexistent/program", "x", NULL, NULL);
    run(pc);
    assert_int_equal(pc->spawn_rv, 0);
    assert_int_equal(pc->r.error, TR_ESYS);
    assert_true(strstr(pc->errmsg, "/nonexistent/program") != NULL);
    assert_int_equal(pc->r.out_len, 0);
    pc_free(pc);

    pc = pc_new("/bin/true", NULL, NULL, NULL);
    pc->opts.cwd = "/nonexistent-dir";
    run(pc);
    assert_int_equal(pc->r.error, TR_ESYS);
    pc_free(pc);
}

static void shutdown_with_children(void **state)
{
    struct pc *pc = pc_new("/bin/sh", "-c", "sleep 100000 & echo $!; sleep 100000", NULL);
    struct tr_rt *rt = rt_up();
    spawn(rt, pc);
    /* Whatever state the child is in, shutting down kills it and frees all. */
    tr_rt_shutdown(rt);
    assert_int_equal(atomic_load(&pc->done), 0);
    pc_free(pc);
}

static void deterministic(void **state)
{
    struct tr_rt *rt = NULL;
    struct tr_rt_opts o = {.deterministic = 1, .seed = 1};
    struct pc *pc = pc_new("/bin/true", NULL, NULL, NULL);
    assert_int_equal(tr_rt_new(&o, &rt), 0);
    tr_actor_id id;
    struct tr_spawn_opts so = {.behavior = &pc_behavior, .arg = pc};
    assert_int_equal(tr_spawn(rt, &so, &id), 0);
    tr_rt_run_until_idle(rt, 1000);
    assert_int_equal(pc->spawn_rv, TR_ENOTSUP);
    tr_rt_shutdown(rt);
    pc_free(pc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(capture_and_exit_code),
        cmocka_unit_test(path_env_cwd),
        cmocka_unit_test(stdin_data),
        cmocka_unit_test(signals),
        cmocka_unit_test(output_caps),
        cmocka_unit_test(timeout_kills_group),
        cmocka_unit_test(orphan_holding_pipe),
        cmocka_unit_test(spawn_failure),
        cmocka_unit_test(shutdown_with_children),
        cmocka_unit_test(deterministic),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
