/* troupe-showcase: a short tour of the actor runtime, run by scripts/demo.sh.
 *
 * It spawns a supervisor with a crashing worker (restarted in place), a ring
 * of actors passing a token, a request that times out, a passivated actor
 * woken by a timer, and a child process whose output comes back as a
 * message. Every step prints what happened; the exit status is 0 only if
 * every step did what it should. */
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "runtime/runtime.h"

enum {
    MSG_TOKEN = TR_MSG_USER,
    MSG_CRASH,
    MSG_ASK,
    MSG_WAKE,
    MSG_START
};

#define RING_SIZE 1000
#define RING_LAPS 100

static atomic_int done_steps;
static atomic_int failed_steps;

static void step(int ok, const char *what)
{
    printf("  [%s] %s\n", ok ? "ok" : "FAILED", what);
    fflush(stdout);
    if (!ok)
        atomic_fetch_add(&failed_steps, 1);
    atomic_fetch_add(&done_steps, 1);
}

/* --- ring: each member forwards the token to the next -------------------- */

struct ring_member {
    uintptr_t index;
};

struct ring_token {
    uint64_t hops;
    uint64_t started_ms;
};

static tr_actor_id ring_ids[RING_SIZE];

static int ring_init(struct tr_ctx *ctx, void *state, void *arg)
{
    struct ring_member *m = state;
    m->index = (uintptr_t)arg;
    return 0;
}

static int ring_receive(struct tr_ctx *ctx, void *state, struct tr_msg *msg)
{
    struct ring_member *m = state;
    struct ring_token *t = (struct ring_token *)msg->data;
    if (++t->hops == (uint64_t)RING_SIZE * RING_LAPS) {
        char line[128];
        snprintf(line, sizeof line, "token made %d laps of a %d-actor ring across %d schedulers (%" PRIu64 " hops)",
                 RING_LAPS, RING_SIZE, tr_rt_schedulers(tr_ctx_rt(ctx)), t->hops);
        step(1, line);
        return 0;
    }
    /* ring_ids was filled before the token was sent, so reading it here is ordered. */
    return tr_send(ctx, ring_ids[(m->index + 1) % RING_SIZE], msg);
}

static const struct tr_behavior ring_behavior = {
    .name = "ring", .state_size = sizeof(struct ring_member),
    .init = ring_init, .receive = ring_receive,
};

/* --- supervision: a worker that crashes on request ------------------------ */

static atomic_int worker_inits;

static int worker_init(struct tr_ctx *ctx, void *state, void *arg)
{
    atomic_fetch_add(&worker_inits, 1);
    return 0;
}

static int worker_receive(struct tr_ctx *ctx, void *state, struct tr_msg *msg)
{
    if (msg->type == MSG_CRASH)
        return -1; /* a failure: the supervisor's policy restarts us */
    if (msg->flags & TR_MSGF_REQUEST)
        return 0; /* MSG_ASK: deliberately never answered */
    return 0;
}

static const struct tr_behavior worker_behavior = {
    .name = "worker", .init = worker_init, .receive = worker_receive,
};

struct supervisor {
    tr_actor_id worker;
    tr_actor_id sleeper;
    int restarts_seen;
};

/* --- passivation: an actor that sleeps and is woken by its own timer ------ */

static atomic_int sleeper_reactivations;

static int sleeper_init(struct tr_ctx *ctx, void *state, void *arg)
{
    if (tr_start_reason(ctx) == TR_START_REACTIVATE)
        atomic_fetch_add(&sleeper_reactivations, 1);
    return 0;
}

static int sleeper_receive(struct tr_ctx *ctx, void *state, struct tr_msg *msg)
{
    if (msg->type == MSG_START) {
        uint64_t timer;
        int rv = tr_timer_start(ctx, 50, tr_msg_new(MSG_WAKE, 0), &timer);
        if (rv != TR_OK)
            return rv;
        return tr_passivate(ctx);
    }
    if (msg->type == MSG_WAKE)
        step(atomic_load(&sleeper_reactivations) == 1,
             "a passivated actor was re-created by its own timer (state freed while it slept)");
    return 0;
}

static const struct tr_behavior sleeper_behavior = {
    .name = "sleeper", .init = sleeper_init, .receive = sleeper_receive,
};

static int supervisor_init(struct tr_ctx *ctx, void *state, void *arg)
{
    struct supervisor *s = state;
    struct tr_rt *rt = tr_ctx_rt(ctx);
    struct tr_spawn_opts w = {
        .behavior = &worker_behavior, .parent = tr_self(ctx), .sched = TR_SCHED_ANY,
        .restart = TR_RESTART_ON_FAILURE, .max_restarts = 3, .restart_window_ms = 60000,
    };
    int rv = tr_spawn(rt, &w, &s->worker);
    if (rv != TR_OK)
        return rv;
    struct tr_spawn_opts z = { .behavior = &sleeper_behavior, .sched = TR_SCHED_SELF };
    rv = tr_spawn(rt, &z, &s->sleeper);
    if (rv != TR_OK)
        return rv;
    uint64_t corr;
    rv = tr_request(ctx, s->worker, tr_msg_new(MSG_ASK, 0), 100, &corr);
    if (rv != TR_OK)
        return rv;
    rv = tr_tell(ctx, s->sleeper, MSG_START, NULL, 0);
    if (rv != TR_OK)
        return rv;
    for (int i = 0; i < 5; i++) {
        rv = tr_tell(ctx, s->worker, MSG_CRASH, NULL, 0);
        if (rv != TR_OK)
            return rv;
    }
    return 0;
}

static int supervisor_receive(struct tr_ctx *ctx, void *state, struct tr_msg *msg)
{
    struct supervisor *s = state;
    const struct tr_exit_info *x = (const struct tr_exit_info *)msg->data;
    switch (msg->type) {
    case TR_MSG_TIMEOUT:
        step(1, "a request nobody answered timed out after 100 ms (TR_MSG_TIMEOUT)");
        break;
    case TR_MSG_CHILD_RESTART:
        s->restarts_seen++;
        break;
    case TR_MSG_CHILD_EXIT: {
        char line[160];
        snprintf(line, sizeof line,
                 "worker crashed 5 times: restarted %d times in place, then stopped for good "
                 "(restart intensity 3 per window)", s->restarts_seen);
        step(x->child == s->worker && s->restarts_seen == 3 && x->reason == TR_STOP_FAILED, line);
        break;
    }
    default:
        break;
    }
    return 0;
}

static const struct tr_behavior supervisor_behavior = {
    .name = "supervisor", .state_size = sizeof(struct supervisor),
    .init = supervisor_init, .receive = supervisor_receive,
};

/* --- a child process --------------------------------------------------------- */

static int shell_receive(struct tr_ctx *ctx, void *state, struct tr_msg *msg)
{
    if (msg->type == MSG_START) {
        char *argv[] = { "sh", "-c", "echo hello from a child process; sleep 30", NULL };
        struct tr_proc_opts o = { .file = "sh", .argv = argv, .timeout_ms = 200 };
        uint64_t id;
        return tr_proc_spawn(ctx, &o, &id);
    }
    if (msg->type == TR_MSG_PROC_EXIT) {
        struct tr_proc_result r;
        int rv = tr_proc_result(msg, &r);
        step(rv == TR_OK && r.timed_out && r.out_len > 0,
             "a child process that overran its 200 ms limit was killed; its stdout came back as a message");
        if (rv == TR_OK)
            printf("        stdout: %.*s", (int)r.out_len, (const char *)r.out);
    }
    return 0;
}

static const struct tr_behavior shell_behavior = { .name = "shell", .receive = shell_receive };

int main(void)
{
    struct tr_rt *rt;
    struct tr_rt_opts opts = { 0 };
    int rv = tr_rt_new(&opts, &rt);
    if (rv != TR_OK) {
        fprintf(stderr, "showcase: runtime: %s\n", tr_strerror(rv));
        return 1;
    }
    rv = tr_rt_start(rt);
    if (rv != TR_OK) {
        fprintf(stderr, "showcase: start: %s\n", tr_strerror(rv));
        return 1;
    }
    printf("troupe runtime showcase: %d scheduler threads\n", tr_rt_schedulers(rt));

    for (uintptr_t i = 0; i < RING_SIZE; i++) {
        struct tr_spawn_opts o = { .behavior = &ring_behavior, .arg = (void *)i, .sched = TR_SCHED_ANY };
        rv = tr_spawn(rt, &o, &ring_ids[i]);
        if (rv != TR_OK)
            goto fail;
    }
    struct ring_token tok = { 0, 0 };
    rv = tr_rt_send(rt, ring_ids[0], tr_msg_make(MSG_TOKEN, &tok, sizeof tok));
    if (rv != TR_OK)
        goto fail;

    struct tr_spawn_opts so = { .behavior = &supervisor_behavior, .sched = TR_SCHED_ANY };
    tr_actor_id sup, shell;
    rv = tr_spawn(rt, &so, &sup);
    if (rv != TR_OK)
        goto fail;
    struct tr_spawn_opts sh = { .behavior = &shell_behavior, .sched = TR_SCHED_ANY };
    rv = tr_spawn(rt, &sh, &shell);
    if (rv != TR_OK)
        goto fail;
    rv = tr_rt_send(rt, shell, tr_msg_new(MSG_START, 0));
    if (rv != TR_OK)
        goto fail;

    /* Five steps report in; poll rather than guess a duration. */
    for (int i = 0; i < 2000 && atomic_load(&done_steps) < 5; i++)
        uv_sleep(5);
    if (atomic_load(&done_steps) < 5)
        step(0, "not every step reported within 10 s");

    struct tr_rt_stats st;
    tr_rt_stats(rt, &st);
    printf("  stats: %" PRIu64 " live actors, %" PRIu64 " messages delivered, %" PRIu64
           " restarts, %" PRIu64 " dead letters\n",
           st.actors, st.delivered, st.restarts, st.dead_letters);
    tr_rt_shutdown(rt);
    printf("  [ok] shutdown: every actor finalised, threads joined\n");
    return atomic_load(&failed_steps) == 0 ? 0 : 1;
fail:
    fprintf(stderr, "showcase: %s\n", tr_strerror(rv));
    tr_rt_shutdown(rt);
    return 1;
}
