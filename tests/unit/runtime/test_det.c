/* Runtime core tests that run in deterministic mode: virtual time, one
 * scheduler driven from the test thread, so every assertion is exact. */
#include <malloc.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "runtime/core.h"
#include "runtime/runtime.h"

enum { T_PING = TR_MSG_USER, T_FAIL, T_PASSIVATE, T_TIMER, T_HOLD, T_RELEASE, T_MARK, T_HOP, T_ARM };

static struct tr_rt *det_rt(uint64_t seed)
{
    struct tr_rt_opts o = { .deterministic = 1, .seed = seed, .start_wall_us = 1000000 };
    struct tr_rt *rt = NULL;

    assert_int_equal(tr_rt_new(&o, &rt), TR_OK);
    assert_int_equal(tr_rt_schedulers(rt), 1);
    return rt;
}

static tr_actor_id spawn(struct tr_rt *rt, const struct tr_behavior *b, void *arg, tr_actor_id parent,
                         uint32_t cap)
{
    struct tr_spawn_opts o = { .behavior = b, .arg = arg, .parent = parent, .mailbox_cap = cap };
    tr_actor_id id = 0;

    assert_int_equal(tr_spawn(rt, &o, &id), TR_OK);
    assert_true(id != 0);
    return id;
}

static void tell(struct tr_rt *rt, tr_actor_id to, uint32_t type, uint32_t v)
{
    assert_int_equal(tr_rt_send(rt, to, tr_msg_make(type, &v, sizeof v)), TR_OK);
}

/* ---- errors, memory ----------------------------------------------------- */

static void test_errors(void **st)
{
    struct tr_err e;

    assert_string_equal(tr_strerror(TR_EFULL), "mailbox full");
    assert_string_equal(tr_errname(TR_EFULL), "EFULL");
    assert_string_equal(tr_errname(TR_OK), "OK");
    assert_string_equal(tr_errname(12345), "EUNKNOWN");
    assert_int_equal(tr_err_set(&e, TR_EIO, "fsync %s", "x"), TR_EIO);
    assert_int_equal(tr_err_wrap(&e, "append run %d", 7), TR_EIO);
    assert_string_equal(e.msg, "append run 7: fsync x");
    tr_err_clear(&e);
    assert_int_equal(e.code, TR_OK);
    char *d = tr_strndup("abcdef", 3);
    assert_string_equal(d, "abc");
    tr_free(d);
}

/* ---- virtual timers ----------------------------------------------------- */

struct tstate {
    uint32_t got[32];
    int n;
    uint64_t ids[8];
    int cancel_rv;
    int cancel_again_rv;
    int cancel_after_fire_rv;
};

static int timer_init(struct tr_ctx *ctx, void *state, void *arg)
{
    struct tstate *t = arg;
    static const uint32_t delays[] = { 30, 10, 20, 10, 50 };

    for (uint32_t i = 0; i < 5; i++) {
        uint32_t tag = i;
        assert_int_equal(tr_timer_start(ctx, delays[i], tr_msg_make(T_TIMER, &tag, 4), &t->ids[i]), TR_OK);
    }
    t->cancel_rv = tr_timer_cancel(ctx, t->ids[4]);
    t->cancel_again_rv = tr_timer_cancel(ctx, t->ids[4]);
    return 0;
}

static int timer_receive(struct tr_ctx *ctx, void *state, struct tr_msg *m)
{
    struct tstate *t = NULL;
    uint32_t tag;

    (void)state;
    t = *(struct tstate **)&ctx->a->arg;
    memcpy(&tag, m->data, 4);
    t->got[t->n++] = tag;
    if (tag == 1) /* the timer that just fired */
        t->cancel_after_fire_rv = tr_timer_cancel(ctx, t->ids[1]);
    return 0;
}

static const struct tr_behavior timer_beh = { "timer", 0, timer_init, timer_receive, NULL };

static void test_virtual_timers(void **st)
{
    struct tr_rt *rt = det_rt(1);
    struct tstate t;

    memset(&t, 0, sizeof t);
    spawn(rt, &timer_beh, &t, 0, 0);
    assert_int_equal(tr_rt_run_until_idle(rt, 0), 0); /* init only */
    assert_int_equal(t.cancel_rv, TR_OK);
    assert_int_equal(t.cancel_again_rv, TR_ENOTFOUND);
    tr_rt_advance(rt, 9);
    assert_int_equal(tr_rt_run_until_idle(rt, 0), 0);
    assert_int_equal(tr_rt_now_ms(rt), 9);
    tr_rt_advance(rt, 1); /* t=10: tags 1 and 3, in start order */
    assert_int_equal(tr_rt_run_until_idle(rt, 0), 2);
    assert_int_equal(t.n, 2);
    assert_int_equal(t.got[0], 1);
    assert_int_equal(t.got[1], 3);
    assert_int_equal(t.cancel_after_fire_rv, TR_ENOTFOUND);
    tr_rt_advance(rt, 100);
    assert_int_equal(tr_rt_run_until_idle(rt, 0), 2);
    assert_int_equal(t.n, 4);
    assert_int_equal(t.got[2], 2);
    assert_int_equal(t.got[3], 0); /* the cancelled tag 4 never came */
    tr_rt_shutdown(rt);
}

/* ---- request / reply ---------------------------------------------------- */

struct rr {
    tr_actor_id server;
    uint64_t corr;
    int replies, timeouts, marks;
    uint64_t reply_corr, timeout_corr;
    struct tr_msg *held;
    int server_finis;
};

static int server_receive(struct tr_ctx *ctx, void *state, struct tr_msg *m)
{
    struct rr *r = *(struct rr **)state;

    if (m->flags & TR_MSGF_REQUEST) {
        tr_msg_keep(ctx, m); /* answer later */
        r->held = m;
        return 0;
    }
    if (m->type == T_RELEASE && r->held) {
        struct tr_msg *req = r->held;
        r->held = NULL;
        assert_int_equal(tr_reply(ctx, req, tr_msg_make(T_PING, "ok", 2)), TR_OK);
        assert_int_equal(tr_tell(ctx, req->from, T_MARK, NULL, 0), TR_OK);
        tr_msg_free(req);
    }
    return 0;
}

static int server_init(struct tr_ctx *ctx, void *state, void *arg)
{
    *(struct rr **)state = arg;
    return 0;
}

static void server_fini(struct tr_ctx *ctx, void *state, enum tr_stop_reason why)
{
    struct rr *r = *(struct rr **)state;

    r->server_finis++;
    if (r->held) {
        tr_msg_free(r->held);
        r->held = NULL;
    }
}

static const struct tr_behavior server_beh = { "server", sizeof(void *), server_init, server_receive,
                                               server_fini };

static int client_receive(struct tr_ctx *ctx, void *state, struct tr_msg *m)
{
    struct rr *r = *(struct rr **)state;
    uint32_t timeout;

    switch (m->type) {
    case T_PING:
        if (m->flags & TR_MSGF_REPLY) {
            r->replies++;
            r->reply_corr = m->corr;
        } else {
            memcpy(&timeout, m->data, 4);
            assert_int_equal(tr_request(ctx, r->server, tr_msg_make(T_PING, NULL, 0), timeout, &r->corr),
                             TR_OK);
        }
        break;
    case TR_MSG_TIMEOUT:
        r->timeouts++;
        r->timeout_corr = m->corr;
        break;
    case T_MARK:
        r->marks++;
        break;
    }
    return 0;
}

static const struct tr_behavior client_beh = { "client", sizeof(void *), server_init, client_receive,
                                               NULL };

static void test_request_timeout_and_late_reply(void **st)
{
    struct tr_rt *rt = det_rt(2);
    struct rr r;
    tr_actor_id client;

    memset(&r, 0, sizeof r);
    r.server = spawn(rt, &server_beh, &r, 0, 0);
    client = spawn(rt, &client_beh, &r, 0, 0);
    tell(rt, client, T_PING, 50);
    tr_rt_run_until_idle(rt, 0);
    assert_non_null(r.held);
    assert_true(r.corr != 0);
    tr_rt_advance(rt, 49);
    tr_rt_run_until_idle(rt, 0);
    assert_int_equal(r.timeouts, 0);
    tr_rt_advance(rt, 1);
    tr_rt_run_until_idle(rt, 0);
    assert_int_equal(r.timeouts, 1);
    assert_int_equal(r.timeout_corr, r.corr);
    /* Now the late reply, then a marker behind it (per-sender FIFO). */
    tell(rt, r.server, T_RELEASE, 0);
    tr_rt_run_until_idle(rt, 0);
    assert_int_equal(r.marks, 1);
    assert_int_equal(r.replies, 0);
    tr_rt_shutdown(rt);
    assert_int_equal(r.server_finis, 1);
}

static void test_reply_before_timeout(void **st)
{
    struct tr_rt *rt = det_rt(3);
    struct rr r;
    tr_actor_id client;
    uint64_t corr;

    memset(&r, 0, sizeof r);
    r.server = spawn(rt, &server_beh, &r, 0, 0);
    client = spawn(rt, &client_beh, &r, 0, 0);
    tell(rt, client, T_PING, 1000);
    tr_rt_run_until_idle(rt, 0);
    corr = r.corr;
    tr_rt_advance(rt, 500);
    tell(rt, r.server, T_RELEASE, 0);
    tr_rt_run_until_idle(rt, 0);
    assert_int_equal(r.replies, 1);
    assert_int_equal(r.reply_corr, corr);
    tr_rt_advance(rt, 100000);
    tr_rt_run_until_idle(rt, 0);
    assert_int_equal(r.timeouts, 0);
    /* A request without timeout: the reply is always delivered. */
    tell(rt, client, T_PING, 0);
    tr_rt_run_until_idle(rt, 0);
    tr_rt_advance(rt, 1000000);
    tell(rt, r.server, T_RELEASE, 0);
    tr_rt_run_until_idle(rt, 0);
    assert_int_equal(r.replies, 2);
    assert_int_equal(r.timeouts, 0);
    tr_rt_shutdown(rt);
}

/* ---- supervision -------------------------------------------------------- */

struct sup {
    int inits[3]; /* by start reason */
    int finis[4]; /* by stop reason */
    int pings;
    int restarts_seen, exits_seen;
    struct tr_exit_info last;
    tr_actor_id child;
    uint64_t child_ids[4];
    int init_fail_next;
};

static int child_init(struct tr_ctx *ctx, void *state, void *arg)
{
    struct sup *s = arg;
    uint32_t *counter = state;

    assert_int_equal(*counter, 0); /* state zeroed */
    *counter = 77;
    s->inits[tr_start_reason(ctx)]++;
    s->child_ids[tr_start_reason(ctx)] = tr_self(ctx);
    if (s->init_fail_next) {
        s->init_fail_next--;
        return -99;
    }
    return 0;
}

static int child_receive(struct tr_ctx *ctx, void *state, struct tr_msg *m)
{
    struct sup *s = *(struct sup **)((char *)state + 8);

    (void)s;
    if (m->type == T_FAIL)
        return -7;
    return 0;
}

static void child_fini(struct tr_ctx *ctx, void *state, enum tr_stop_reason why)
{
    struct sup *s = *(struct sup **)((char *)state + 8);
    s->finis[why]++;
}

static int child_init2(struct tr_ctx *ctx, void *state, void *arg)
{
    int rv = child_init(ctx, state, arg);
    *(struct sup **)((char *)state + 8) = arg;
    return rv;
}

static int child_receive2(struct tr_ctx *ctx, void *state, struct tr_msg *m)
{
    struct sup *s = *(struct sup **)((char *)state + 8);
    if (m->type == T_PING)
        s->pings++;
    return child_receive(ctx, state, m);
}

static const struct tr_behavior child_beh = { "child", 16, child_init2, child_receive2, child_fini };

static int parent_receive(struct tr_ctx *ctx, void *state, struct tr_msg *m)
{
    struct sup *s = *(struct sup **)state;

    if (m->type == TR_MSG_CHILD_RESTART || m->type == TR_MSG_CHILD_EXIT) {
        assert_int_equal(m->len, sizeof(struct tr_exit_info));
        memcpy(&s->last, m->data, sizeof s->last);
        assert_int_equal(s->last.child, s->child);
        if (m->type == TR_MSG_CHILD_RESTART)
            s->restarts_seen++;
        else
            s->exits_seen++;
    }
    return 0;
}

static const struct tr_behavior parent_beh = { "parent", sizeof(void *), server_init, parent_receive, NULL };

static void test_supervision_restart(void **st)
{
    struct tr_rt *rt = det_rt(4);
    struct tr_rt_stats stats;
    struct sup s;
    tr_actor_id parent;

    memset(&s, 0, sizeof s);
    parent = spawn(rt, &parent_beh, &s, 0, 0);
    struct tr_spawn_opts o = { .behavior = &child_beh, .arg = &s, .parent = parent,
                               .restart = TR_RESTART_ON_FAILURE, .max_restarts = 2,
                               .restart_window_ms = 1000 };
    assert_int_equal(tr_spawn(rt, &o, &s.child), TR_OK);
    tr_rt_run_until_idle(rt, 0);
    assert_int_equal(s.inits[TR_START_NEW], 1);

    /* Failure 1: restarted with the same id; the message queued behind the
     * failing one is kept and reaches the new incarnation. */
    tell(rt, s.child, T_FAIL, 0);
    tell(rt, s.child, T_PING, 0);
    tr_rt_run_until_idle(rt, 0);
    assert_int_equal(s.finis[TR_STOP_FAILED], 1);
    assert_int_equal(s.inits[TR_START_RESTART], 1);
    assert_int_equal(s.child_ids[TR_START_RESTART], s.child);
    assert_int_equal(s.pings, 1);
    assert_int_equal(s.restarts_seen, 1);
    assert_int_equal(s.last.code, -7);
    assert_int_equal(s.last.restarts, 1);

    /* After the window, the count starts over. */
    tr_rt_advance(rt, 1000);
    tell(rt, s.child, T_FAIL, 0);
    tr_rt_run_until_idle(rt, 0);
    assert_int_equal(s.restarts_seen, 2);
    assert_int_equal(s.last.restarts, 1);

    /* Failure in init counts too; then the limit (2 in the window) stops it. */
    s.init_fail_next = 1;
    tell(rt, s.child, T_FAIL, 0); /* restart 2; its init fails -> third failure */
    tr_rt_run_until_idle(rt, 0);
    assert_int_equal(s.restarts_seen, 3);
    assert_int_equal(s.exits_seen, 1);
    assert_int_equal(s.last.reason, TR_STOP_FAILED);
    assert_int_equal(s.last.code, -99);
    /* fini only after successful inits: NEW, RESTART x2 succeeded, one failed */
    assert_int_equal(s.inits[TR_START_NEW] + s.inits[TR_START_RESTART], 4);
    assert_int_equal(s.finis[TR_STOP_FAILED], 3);
    struct tr_msg *m = tr_msg_new(T_PING, 0);
    assert_int_equal(tr_rt_send(rt, s.child, m), TR_ENOACTOR);
    tr_msg_free(m);
    tr_rt_stats(rt, &stats);
    assert_int_equal(stats.restarts, 3);
    assert_int_equal(stats.failures, 4);
    assert_int_equal(stats.actors, 1);
    tr_rt_shutdown(rt);
}

/* A failing actor without a restart policy stops for good. */
static void test_failure_no_restart(void **st)
{
    struct tr_rt *rt = det_rt(5);
    struct sup s;
    tr_actor_id parent;

    memset(&s, 0, sizeof s);
    parent = spawn(rt, &parent_beh, &s, 0, 0);
    s.child = spawn(rt, &child_beh, &s, parent, 0);
    tell(rt, s.child, T_FAIL, 0);
    tell(rt, s.child, T_PING, 0); /* becomes a dead letter */
    tr_rt_run_until_idle(rt, 0);
    assert_int_equal(s.exits_seen, 1);
    assert_int_equal(s.restarts_seen, 0);
    assert_int_equal(s.pings, 0);
    assert_int_equal(s.finis[TR_STOP_FAILED], 1);
    struct tr_rt_stats stats;
    tr_rt_stats(rt, &stats);
    assert_int_equal(stats.dead_letters, 1);
    tr_rt_shutdown(rt);
}

/* ---- passivation -------------------------------------------------------- */

struct pas {
    int inits[3];
    int finis[4];
    int pings;
    uint64_t timer;
};

#define BIG_STATE 8192

static int pas_init(struct tr_ctx *ctx, void *state, void *arg)
{
    struct pas *p = arg;
    unsigned char *b = state;

    for (int i = 0; i < BIG_STATE; i++)
        assert_int_equal(b[i], 0);
    memset(b, 0xab, BIG_STATE);
    p->inits[tr_start_reason(ctx)]++;
    return 0;
}

static int pas_receive(struct tr_ctx *ctx, void *state, struct tr_msg *m)
{
    struct pas *p = *(struct pas **)&ctx->a->arg;

    switch (m->type) {
    case T_PASSIVATE:
        assert_int_equal(tr_passivate(ctx), TR_OK);
        break;
    case T_ARM:
        assert_int_equal(tr_timer_start(ctx, 100, tr_msg_new(T_PING, 0), &p->timer), TR_OK);
        assert_int_equal(tr_passivate(ctx), TR_OK);
        break;
    case T_PING:
        p->pings++;
        break;
    }
    return 0;
}

static void pas_fini(struct tr_ctx *ctx, void *state, enum tr_stop_reason why)
{
    struct pas *p = *(struct pas **)&ctx->a->arg;
    p->finis[why]++;
}

static const struct tr_behavior pas_beh = { "passive", BIG_STATE, pas_init, pas_receive, pas_fini };

static size_t actor_mem(struct tr_rt *rt, tr_actor_id id)
{
    struct tr_slot *sl = tr__slot_of(rt, id);
    assert_non_null(sl);
    assert_non_null(sl->ptr);
    return malloc_usable_size(sl->ptr);
}

static void test_passivation(void **st)
{
    struct tr_rt *rt = det_rt(6);
    struct tr_rt_stats stats;
    struct pas p;
    tr_actor_id id;

    memset(&p, 0, sizeof p);
    id = spawn(rt, &pas_beh, &p, 0, 0);
    tr_rt_run_until_idle(rt, 0);
    assert_true(actor_mem(rt, id) >= BIG_STATE);

    tell(rt, id, T_PASSIVATE, 0);
    tr_rt_run_until_idle(rt, 0);
    assert_int_equal(p.finis[TR_STOP_PASSIVATE], 1);
    assert_true(actor_mem(rt, id) < 256); /* state freed */
    tr_rt_stats(rt, &stats);
    assert_int_equal(stats.passivated, 1);
    assert_int_equal(stats.actors, 1);

    /* Reactivated by a message; init runs first, on zeroed state. */
    tell(rt, id, T_PING, 0);
    tr_rt_run_until_idle(rt, 0);
    assert_int_equal(p.inits[TR_START_REACTIVATE], 1);
    assert_int_equal(p.pings, 1);
    tr_rt_stats(rt, &stats);
    assert_int_equal(stats.passivated, 0);
    assert_true(actor_mem(rt, id) >= BIG_STATE);

    /* Passivate is ignored while mail waits. */
    tell(rt, id, T_PASSIVATE, 0);
    tell(rt, id, T_PING, 0);
    tr_rt_step(rt);
    tr_rt_stats(rt, &stats);
    assert_int_equal(stats.passivated, 0);
    tr_rt_run_until_idle(rt, 0);

    /* Reactivated by its own timer. */
    tell(rt, id, T_ARM, 0);
    tr_rt_run_until_idle(rt, 0);
    tr_rt_stats(rt, &stats);
    assert_int_equal(stats.passivated, 1);
    assert_int_equal(p.finis[TR_STOP_PASSIVATE], 2);
    tr_rt_advance(rt, 100);
    tr_rt_run_until_idle(rt, 0);
    assert_int_equal(p.inits[TR_START_REACTIVATE], 2);
    assert_int_equal(p.pings, 3);
    tr_rt_stats(rt, &stats);
    assert_int_equal(stats.passivated, 0);

    /* Passivated at shutdown: no fini (it has none to release). */
    tell(rt, id, T_PASSIVATE, 0);
    tr_rt_run_until_idle(rt, 0);
    tr_rt_shutdown(rt);
    assert_int_equal(p.finis[TR_STOP_SHUTDOWN], 0);
    assert_int_equal(p.inits[TR_START_NEW] + p.inits[TR_START_REACTIVATE],
                     p.finis[TR_STOP_PASSIVATE] + p.finis[TR_STOP_SHUTDOWN]);
}

/* ---- full mailbox ------------------------------------------------------- */

static int count_receive(struct tr_ctx *ctx, void *state, struct tr_msg *m)
{
    (*(int *)ctx->a->arg)++;
    return 0;
}

static const struct tr_behavior count_beh = { "count", 0, NULL, count_receive, NULL };

static void test_full_mailbox(void **st)
{
    struct tr_rt *rt = det_rt(7);
    struct tr_rt_stats stats;
    struct tr_msg *m;
    int n = 0;
    tr_actor_id id = spawn(rt, &count_beh, &n, 0, 4);

    for (int i = 0; i < 4; i++)
        tell(rt, id, T_PING, (uint32_t)i);
    m = tr_msg_make(T_PING, "x", 1);
    assert_int_equal(tr_rt_send(rt, id, m), TR_EFULL);
    assert_int_equal(m->data[0], 'x'); /* still ours */
    tr_rt_stats(rt, &stats);
    assert_int_equal(stats.full_rejects, 1);
    /* System messages bypass the cap. */
    assert_int_equal(tr__deliver_system(rt, id, tr_msg_new(T_PING, 0)), TR_OK);
    assert_int_equal(tr_rt_run_until_idle(rt, 0), 5);
    assert_int_equal(n, 5);
    assert_int_equal(tr_rt_send(rt, id, m), TR_OK); /* room again after the drain */
    tr_rt_run_until_idle(rt, 0);
    assert_int_equal(n, 6);
    tr_rt_shutdown(rt);
}

/* ---- stopped actors ----------------------------------------------------- */

static void test_send_to_stopped(void **st)
{
    struct tr_rt *rt = det_rt(8);
    struct tr_rt_stats stats;
    struct tr_msg *m;
    int n = 0;
    tr_actor_id id = spawn(rt, &count_beh, &n, 0, 0);
    tr_actor_id id2;

    tr_rt_run_until_idle(rt, 0);
    tell(rt, id, T_PING, 0);
    assert_int_equal(tr_rt_stop_actor(rt, id), TR_OK);
    tr_rt_run_until_idle(rt, 0);
    assert_int_equal(n, 0); /* the queued ping became a dead letter */
    tr_rt_stats(rt, &stats);
    assert_int_equal(stats.dead_letters, 1);
    assert_int_equal(stats.actors, 0);
    m = tr_msg_new(T_PING, 0);
    assert_int_equal(tr_rt_send(rt, id, m), TR_ENOACTOR);
    tr_msg_free(m);
    assert_int_equal(tr_rt_stop_actor(rt, id), TR_ENOACTOR);
    tr_rt_stats(rt, &stats);
    assert_int_equal(stats.dead_letters, 2);
    /* The slot is reused under a new id; the old id stays dead. */
    id2 = spawn(rt, &count_beh, &n, 0, 0);
    assert_true(id2 != id);
    assert_int_equal(tr__id_slot(id2), tr__id_slot(id));
    m = tr_msg_new(T_PING, 0);
    assert_int_equal(tr_rt_send(rt, id, m), TR_ENOACTOR);
    assert_int_equal(tr_rt_send(rt, 0, m), TR_ENOACTOR);
    assert_int_equal(tr_rt_send(rt, id2, m), TR_OK);
    tr_rt_run_until_idle(rt, 0);
    assert_int_equal(n, 1);
    tr_rt_shutdown(rt);
}

/* ---- deterministic traces ----------------------------------------------- */

#define NHOP 6
struct trace {
    tr_actor_id ids[NHOP];
    uint32_t log[4096];
    int n;
};

static int hop_receive(struct tr_ctx *ctx, void *state, struct tr_msg *m)
{
    struct trace *t = *(struct trace **)&ctx->a->arg;
    uint32_t ttl;

    memcpy(&ttl, m->data, 4);
    if (t->n < 4096)
        t->log[t->n++] = (uint32_t)(tr__id_slot(tr_self(ctx)) << 16 | ttl);
    if (ttl == 0)
        return 0;
    ttl--;
    memcpy(m->data, &ttl, 4);
    return tr_send(ctx, t->ids[tr_random(ctx) % NHOP], m);
}

static const struct tr_behavior hop_beh = { "hop", 0, NULL, hop_receive, NULL };

static void run_trace(uint64_t seed, struct trace *t)
{
    struct tr_rt *rt = det_rt(seed);

    memset(t, 0, sizeof *t);
    for (int i = 0; i < NHOP; i++)
        t->ids[i] = spawn(rt, &hop_beh, t, 0, 0);
    for (int i = 0; i < NHOP; i++)
        tell(rt, t->ids[i], T_HOP, 200);
    assert_int_equal(tr_rt_run_until_idle(rt, 0), NHOP * 201);
    tr_rt_shutdown(rt);
}

static void test_deterministic_trace(void **st)
{
    static struct trace a, b, c;

    run_trace(42, &a);
    run_trace(42, &b);
    run_trace(43, &c);
    assert_int_equal(a.n, NHOP * 201);
    assert_memory_equal(a.log, b.log, sizeof a.log);
    assert_memory_not_equal(a.log, c.log, sizeof a.log);
}

/* ---- tr_rt_call and shutdown hooks in deterministic mode ---------------- */

static int call_log[8];
static int ncall;

static void hook_cb(void *arg)
{
    call_log[ncall++] = (int)(intptr_t)arg;
}

static void call_fn(struct tr_ctx *ctx, void *arg)
{
    assert_null(tr_ctx_loop(ctx));
    assert_int_equal(tr__deterministic(ctx), 1);
    assert_int_equal(tr_wall_us(ctx), 1000000);
    assert_int_equal(tr_rt_on_shutdown(ctx, hook_cb, (void *)1), TR_OK);
    assert_int_equal(tr_rt_on_shutdown(ctx, hook_cb, (void *)2), TR_OK);
    call_log[ncall++] = 100;
}

static void test_det_call_hooks(void **st)
{
    struct tr_rt *rt = det_rt(9);

    ncall = 0;
    assert_int_equal(tr_rt_call(rt, 0, call_fn, NULL, NULL), TR_OK);
    assert_int_equal(tr_rt_call(rt, 1, call_fn, NULL, NULL), TR_EINVAL);
    assert_int_equal(ncall, 0); /* never called back from inside the call */
    tr_rt_run_until_idle(rt, 0);
    assert_int_equal(ncall, 1);
    tr_rt_shutdown(rt);
    assert_int_equal(ncall, 3);
    assert_int_equal(call_log[1], 2); /* reverse order */
    assert_int_equal(call_log[2], 1);
}

/* ---- timers across restart and stop -------------------------------------- */

struct tfail {
    int fired;
    int inits;
};

static int tfail_init(struct tr_ctx *ctx, void *state, void *arg)
{
    struct tfail *t = arg;

    *(void **)state = arg;
    if (t->inits++ == 0) /* only the first incarnation arms a timer */
        assert_int_equal(tr_timer_start(ctx, 10, tr_msg_new(T_TIMER, 8), NULL), TR_OK);
    return 0;
}

static int tfail_rx(struct tr_ctx *ctx, void *state, struct tr_msg *m)
{
    struct tfail *t = *(void **)state;

    if (m->type == T_FAIL)
        return -1;
    if (m->type == T_TIMER)
        t->fired++;
    return 0;
}

static const struct tr_behavior tfail_beh = { "tfail", sizeof(void *), tfail_init, tfail_rx, NULL };

static void test_timers_after_restart_and_stop(void **st)
{
    struct tr_rt *rt = det_rt(10);
    struct tfail a, b;
    tr_actor_id ida, idb;

    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    struct tr_spawn_opts o = { .behavior = &tfail_beh, .arg = &a, .restart = TR_RESTART_ON_FAILURE };
    assert_int_equal(tr_spawn(rt, &o, &ida), TR_OK);
    idb = spawn(rt, &tfail_beh, &b, 0, 0);
    tr_rt_run_until_idle(rt, 0);
    tell(rt, ida, T_FAIL, 0);          /* restarted: its old timer belongs to the old state */
    assert_int_equal(tr_rt_stop_actor(rt, idb), TR_OK); /* stopped: its timer is dropped */
    tr_rt_run_until_idle(rt, 0);
    assert_int_equal(a.inits, 2);
    tr_rt_advance(rt, 1000);
    tr_rt_run_until_idle(rt, 0);
    assert_int_equal(a.fired, 0);
    assert_int_equal(b.fired, 0);
    tr_rt_shutdown(rt);
}

/* ---- logging seam ---------------------------------------------------------- */

static char log_buf[256];
static int log_calls;

static void capture_sink(void *ud, enum tr_log_level level, const char *msg)
{
    log_calls++;
    snprintf(log_buf, sizeof log_buf, "%d:%s:%s", (int)level, (const char *)ud, msg);
}

static void test_log_sink(void **st)
{
    tr_log_set_sink(capture_sink, "ud");
    tr_log_set_level(TR_LOG_WARN);
    assert_false(tr_log_enabled(TR_LOG_INFO));
    assert_true(tr_log_enabled(TR_LOG_ERROR));
    tr_log(TR_LOG_INFO, "dropped %d", 1);
    assert_int_equal(log_calls, 0);
    tr_log(TR_LOG_WARN, "kept %d", 2);
    assert_int_equal(log_calls, 1);
    assert_string_equal(log_buf, "2:ud:kept 2");
    tr_log_set_sink(NULL, NULL); /* back to stderr */
    tr_log_set_level(TR_LOG_INFO);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_log_sink),
        cmocka_unit_test(test_virtual_timers),
        cmocka_unit_test(test_request_timeout_and_late_reply),
        cmocka_unit_test(test_reply_before_timeout),
        cmocka_unit_test(test_supervision_restart),
        cmocka_unit_test(test_failure_no_restart),
        cmocka_unit_test(test_passivation),
        cmocka_unit_test(test_full_mailbox),
        cmocka_unit_test(test_send_to_stopped),
        cmocka_unit_test(test_deterministic_trace),
        cmocka_unit_test(test_det_call_hooks),
        cmocka_unit_test(test_timers_after_restart_and_stop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
