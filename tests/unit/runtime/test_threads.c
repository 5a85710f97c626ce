/* Runtime core tests with real scheduler threads. Nothing here waits on the
 * wall clock for a result: tests poll for a condition (WAIT_FOR gives up
 * after ~30 s, which fails the test). */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "runtime/internal.h"

#define WAIT_FOR(cond)                                        \
    do {                                                      \
        for (int wait_i_ = 0; wait_i_ < 30000 && !(cond); wait_i_++) \
            uv_sleep(1);                                      \
        assert_true(cond);                                    \
    } while (0)

enum { T_GO = TR_MSG_USER, T_DATA, T_PING, T_FAIL, T_HOLD, T_RELEASE, T_MARK };

static struct tr_rt *rt_start(int n)
{
    struct tr_rt_opts o = { .schedulers = n };
    struct tr_rt *rt = NULL;

    assert_int_equal(tr_rt_new(&o, &rt), TR_OK);
    assert_int_equal(tr_rt_schedulers(rt), n);
    assert_int_equal(tr_rt_start(rt), TR_OK);
    return rt;
}

static tr_actor_id spawn_on(struct tr_rt *rt, const struct tr_behavior *b, void *arg, int sched,
                            tr_actor_id parent, uint32_t cap)
{
    struct tr_spawn_opts o = { .behavior = b, .arg = arg, .sched = sched, .parent = parent,
                               .mailbox_cap = cap };
    tr_actor_id id = 0;

    assert_int_equal(tr_spawn(rt, &o, &id), TR_OK);
    return id;
}

static void tell(struct tr_rt *rt, tr_actor_id to, uint32_t type, const void *data, uint32_t len)
{
    assert_int_equal(tr_rt_send(rt, to, tr_msg_make(type, data, len)), TR_OK);
}

/* Every behaviour's state starts with its arg. */
static int keep_arg_init(struct tr_ctx *ctx, void *state, void *arg)
{
    *(void **)state = arg;
    return 0;
}

/* ---- per-sender FIFO ---------------------------------------------------- */

#define ORDER_SENDERS 5
#define ORDER_N 2000

struct order {
    tr_actor_id rx;
    uint32_t next[ORDER_SENDERS];
    _Atomic int total;
    _Atomic int errors;
};

struct seqmsg {
    uint32_t sender, seq;
};

static int order_rx(struct tr_ctx *ctx, void *state, struct tr_msg *m)
{
    struct order *o = *(void **)state;
    struct seqmsg sm;

    memcpy(&sm, m->data, sizeof sm);
    if (sm.sender >= ORDER_SENDERS || o->next[sm.sender] != sm.seq)
        o->errors++;
    else
        o->next[sm.sender]++;
    o->total++;
    return 0;
}

static int order_tx(struct tr_ctx *ctx, void *state, struct tr_msg *m)
{
    struct order *o = *(void **)state;
    uint32_t who;

    memcpy(&who, m->data, 4);
    for (uint32_t i = 0; i < ORDER_N; i++) {
        struct seqmsg sm = { who, i };
        assert_int_equal(tr_tell(ctx, o->rx, T_DATA, &sm, sizeof sm), TR_OK);
    }
    return 0;
}

static const struct tr_behavior order_rx_beh = { "order_rx", sizeof(void *), keep_arg_init, order_rx, NULL };
static const struct tr_behavior order_tx_beh = { "order_tx", sizeof(void *), keep_arg_init, order_tx, NULL };

static void test_mailbox_order(void **st)
{
    struct tr_rt *rt = rt_start(3);
    static struct order o;
    tr_actor_id tx[ORDER_SENDERS - 1];

    memset(&o, 0, sizeof o);
    o.rx = spawn_on(rt, &order_rx_beh, &o, 0, 0, 1u << 16);
    for (uint32_t i = 0; i < ORDER_SENDERS - 1; i++)
        tx[i] = spawn_on(rt, &order_tx_beh, &o, (int)(i % 3), 0, 0);
    for (uint32_t i = 0; i < ORDER_SENDERS - 1; i++)
        tell(rt, tx[i], T_GO, &i, 4);
    for (uint32_t i = 0; i < ORDER_N; i++) { /* the test thread is sender 4 */
        struct seqmsg sm = { ORDER_SENDERS - 1, i };
        tell(rt, o.rx, T_DATA, &sm, sizeof sm);
    }
    WAIT_FOR(o.total == ORDER_SENDERS * ORDER_N);
    assert_int_equal(o.errors, 0);
    tr_rt_shutdown(rt);
}

/* ---- cross-thread delivery, exactly once, with backpressure ------------ */

#define XS 6
#define XN 20000

struct xstate {
    tr_actor_id rx;
    unsigned char seen[XS][XN];
    _Atomic int total;
    _Atomic int dups;
    _Atomic int efull;
};

struct xtx {
    struct xstate *x;
    uint32_t who, sent;
};

static int x_rx(struct tr_ctx *ctx, void *state, struct tr_msg *m)
{
    struct xstate *x = *(void **)state;
    struct seqmsg sm;

    memcpy(&sm, m->data, sizeof sm);
    if (x->seen[sm.sender][sm.seq]++)
        x->dups++;
    x->total++;
    return 0;
}

static int x_tx_init(struct tr_ctx *ctx, void *state, void *arg)
{
    struct xtx *t = state;

    memcpy(t, arg, sizeof *t);
    return 0;
}

static int x_tx(struct tr_ctx *ctx, void *state, struct tr_msg *m)
{
    struct xtx *t = state;

    while (t->sent < XN) {
        struct seqmsg sm = { t->who, t->sent };
        int rv = tr_tell(ctx, t->x->rx, T_DATA, &sm, sizeof sm);
        if (rv == TR_EFULL) {
            t->x->efull++;
            break;
        }
        assert_int_equal(rv, TR_OK);
        t->sent++;
    }
    if (t->sent < XN) /* retry after others had a turn */
        assert_int_equal(tr_send(ctx, tr_self(ctx), m), TR_OK);
    return 0;
}

static const struct tr_behavior x_rx_beh = { "x_rx", sizeof(void *), keep_arg_init, x_rx, NULL };
static const struct tr_behavior x_tx_beh = { "x_tx", sizeof(struct xtx), x_tx_init, x_tx, NULL };

static void test_cross_thread_delivery(void **st)
{
    struct tr_rt *rt = rt_start(4);
    struct tr_rt_stats stats;
    static struct xstate x;
    struct xtx args[XS];

    memset(&x, 0, sizeof x);
    x.rx = spawn_on(rt, &x_rx_beh, &x, 0, 0, 0);
    for (uint32_t i = 0; i < XS; i++) {
        args[i] = (struct xtx){ &x, i, 0 };
        tell(rt, spawn_on(rt, &x_tx_beh, &args[i], 1 + (int)(i % 3), 0, 0), T_GO, NULL, 0);
    }
    WAIT_FOR(x.total == XS * XN);
    assert_int_equal(x.dups, 0);
    for (int s = 0; s < XS; s++)
        for (int i = 0; i < XN; i++)
            assert_int_equal(x.seen[s][i], 1);
    tr_rt_stats(rt, &stats);
    assert_true(stats.delivered >= XS * XN);
    assert_int_equal(stats.full_rejects, (uint64_t)x.efull);
    print_message("cross: %d EFULL retries\n", (int)x.efull);
    tr_rt_shutdown(rt);
}

/* ---- fairness ----------------------------------------------------------- */

struct fair {
    _Atomic uint64_t flood;
    _Atomic int b_count;
    uint64_t b_first, b_last;
    tr_actor_id b;
};

static int flood_rx(struct tr_ctx *ctx, void *state, struct tr_msg *m)
{
    struct fair *f = *(void **)state;

    f->flood++;
    return tr_send(ctx, tr_self(ctx), m); /* endless stream to itself */
}

static int b_rx(struct tr_ctx *ctx, void *state, struct tr_msg *m)
{
    struct fair *f = *(void **)state;

    if (m->type == T_GO) { /* the kicker: fill B's mailbox in one go */
        for (int i = 0; i < 200; i++)
            assert_int_equal(tr_tell(ctx, f->b, T_DATA, NULL, 0), TR_OK);
        return 0;
    }
    if (f->b_count == 0)
        f->b_first = f->flood;
    f->b_last = f->flood;
    f->b_count++;
    return 0;
}

static const struct tr_behavior flood_beh = { "flood", sizeof(void *), keep_arg_init, flood_rx, NULL };
static const struct tr_behavior b_beh = { "b", sizeof(void *), keep_arg_init, b_rx, NULL };

static void test_fairness(void **st)
{
    struct tr_rt *rt = rt_start(1);
    static struct fair f;
    tr_actor_id flooder, kicker;

    memset(&f, 0, sizeof f);
    flooder = spawn_on(rt, &flood_beh, &f, 0, 0, 0);
    f.b = spawn_on(rt, &b_beh, &f, 0, 0, 0);
    kicker = spawn_on(rt, &b_beh, &f, 0, 0, 0);
    for (int i = 0; i < 100; i++)
        tell(rt, flooder, T_DATA, NULL, 0);
    WAIT_FOR(f.flood > 100000);
    /* Messages from outside reach B although the flooder never runs dry. */
    for (int i = 0; i < 10; i++)
        tell(rt, f.b, T_DATA, NULL, 0);
    WAIT_FOR(f.b_count == 10);
    /* 200 messages at once: B takes 4 turns of 64 and the flooder gets one
     * turn between each: interleaved both ways. */
    f.b_count = 0;
    tell(rt, kicker, T_GO, NULL, 0);
    WAIT_FOR(f.b_count == 200);
    print_message("flooder handled %llu messages while B handled 200\n",
                  (unsigned long long)(f.b_last - f.b_first));
    assert_true(f.b_last > f.b_first);
    assert_true(f.b_last - f.b_first <= 4 * 64);
    assert_int_equal(tr_rt_stop_actor(rt, flooder), TR_OK);
    tr_rt_shutdown(rt);
}

/* ---- timers ------------------------------------------------------------- */

struct tmr {
    uint32_t got[8];
    _Atomic int n;
    int cancel_rv, cancel2_rv, late_cancel_rv;
    uint64_t first_id;
};

static int tmr_init(struct tr_ctx *ctx, void *state, void *arg)
{
    struct tmr *t = arg;
    static const uint32_t delays[] = { 30, 10, 20, 15 };
    uint64_t ids[4];

    *(void **)state = arg;
    for (uint32_t i = 0; i < 4; i++)
        assert_int_equal(tr_timer_start(ctx, delays[i], tr_msg_make(T_DATA, &i, 4), &ids[i]), TR_OK);
    t->first_id = ids[1];
    t->cancel_rv = tr_timer_cancel(ctx, ids[3]);
    t->cancel2_rv = tr_timer_cancel(ctx, ids[3]);
    return 0;
}

static int tmr_rx(struct tr_ctx *ctx, void *state, struct tr_msg *m)
{
    struct tmr *t = *(void **)state;
    uint32_t v;

    memcpy(&v, m->data, 4);
    t->got[t->n] = v;
    if (v == 1)
        t->late_cancel_rv = tr_timer_cancel(ctx, t->first_id);
    t->n++;
    return 0;
}

static const struct tr_behavior tmr_beh = { "tmr", sizeof(void *), tmr_init, tmr_rx, NULL };

static void test_timers(void **st)
{
    struct tr_rt *rt = rt_start(2);
    static struct tmr t;

    memset(&t, 0, sizeof t);
    spawn_on(rt, &tmr_beh, &t, 1, 0, 0);
    WAIT_FOR(t.n == 3);
    assert_int_equal(t.cancel_rv, TR_OK);
    assert_int_equal(t.cancel2_rv, TR_ENOTFOUND);
    assert_int_equal(t.late_cancel_rv, TR_ENOTFOUND);
    assert_int_equal(t.got[0], 1);
    assert_int_equal(t.got[1], 2); /* the cancelled 15 ms timer (3) never came */
    assert_int_equal(t.got[2], 0);
    tr_rt_shutdown(rt);
}

/* A timer still pending at shutdown is freed (the ASan build checks). */
static int tmr_long_init(struct tr_ctx *ctx, void *state, void *arg)
{
    _Atomic int *started = arg;
    assert_int_equal(tr_timer_start(ctx, 3600 * 1000, tr_msg_new(T_DATA, 64), NULL), TR_OK);
    (*started)++;
    return 0;
}

static const struct tr_behavior tmr_long_beh = { "tmr_long", 0, tmr_long_init, tmr_rx, NULL };

static void test_timer_pending_at_shutdown(void **st)
{
    struct tr_rt *rt = rt_start(2);
    static _Atomic int started;

    started = 0;
    for (int i = 0; i < 10; i++)
        spawn_on(rt, &tmr_long_beh, (void *)&started, TR_SCHED_ANY, 0, 0);
    WAIT_FOR(started == 10);
    tr_rt_shutdown(rt);
}

/* ---- request / reply across schedulers ---------------------------------- */

struct rq {
    tr_actor_id server, client;
    _Atomic int replies, timeouts, marks;
    uint64_t corr, got_corr;
    struct tr_msg *_Atomic held;
};

static int rq_server(struct tr_ctx *ctx, void *state, struct tr_msg *m)
{
    struct rq *r = *(void **)state;

    if (m->flags & TR_MSGF_REQUEST) {
        tr_msg_keep(ctx, m);
        r->held = m;
    } else if (m->type == T_RELEASE && r->held) {
        struct tr_msg *req = r->held;
        r->held = NULL;
        /* The request itself becomes the reply. */
        tr_actor_id to = req->from;
        assert_int_equal(tr_reply(ctx, req, req), TR_OK);
        assert_int_equal(tr_tell(ctx, to, T_MARK, NULL, 0), TR_OK);
    }
    return 0;
}

static void rq_server_fini(struct tr_ctx *ctx, void *state, enum tr_stop_reason why)
{
    struct rq *r = *(void **)state;
    tr_msg_free(r->held);
    r->held = NULL;
}

static int rq_client(struct tr_ctx *ctx, void *state, struct tr_msg *m)
{
    struct rq *r = *(void **)state;
    uint32_t timeout;

    if (m->type == T_GO) {
        memcpy(&timeout, m->data, 4);
        return tr_request(ctx, r->server, tr_msg_new(T_PING, 0), timeout, &r->corr);
    }
    if (m->type == TR_MSG_TIMEOUT) {
        r->got_corr = m->corr;
        r->timeouts++;
    } else if (m->flags & TR_MSGF_REPLY) {
        r->got_corr = m->corr;
        r->replies++;
    } else if (m->type == T_MARK) {
        r->marks++;
    }
    return 0;
}

static const struct tr_behavior rq_server_beh = { "rq_server", sizeof(void *), keep_arg_init, rq_server,
                                                  rq_server_fini };
static const struct tr_behavior rq_client_beh = { "rq_client", sizeof(void *), keep_arg_init, rq_client,
                                                  NULL };

static void test_request_reply(void **st)
{
    struct tr_rt *rt = rt_start(2);
    static struct rq r;
    uint32_t timeout;

    memset(&r, 0, sizeof r);
    r.server = spawn_on(rt, &rq_server_beh, &r, 1, 0, 0);
    r.client = spawn_on(rt, &rq_client_beh, &r, 0, 0, 0);

    /* Times out; the late reply is dropped (the mark behind it arrives). */
    timeout = 5;
    tell(rt, r.client, T_GO, &timeout, 4);
    WAIT_FOR(r.timeouts == 1);
    assert_int_equal(r.got_corr, r.corr);
    tell(rt, r.server, T_RELEASE, NULL, 0);
    WAIT_FOR(r.marks == 1);
    assert_int_equal(r.replies, 0);

    /* Answered in time: the reply arrives with its corr. */
    timeout = 600000;
    tell(rt, r.client, T_GO, &timeout, 4);
    WAIT_FOR(r.held != NULL);
    tell(rt, r.server, T_RELEASE, NULL, 0);
    WAIT_FOR(r.marks == 2);
    assert_int_equal(r.replies, 1);
    assert_int_equal(r.got_corr, r.corr);
    assert_int_equal(r.timeouts, 1);

    /* A request outstanding at shutdown is freed with its timeout. */
    tell(rt, r.client, T_GO, &timeout, 4);
    WAIT_FOR(r.held != NULL);
    tr_rt_shutdown(rt);
}

/* ---- supervision across schedulers -------------------------------------- */

struct sv {
    _Atomic int restarts, exits, inits, finis;
    struct tr_exit_info last;
    tr_actor_id child;
};

static int sv_child_init(struct tr_ctx *ctx, void *state, void *arg)
{
    struct sv *s = arg;
    *(void **)state = arg;
    s->inits++;
    return 0;
}

static int sv_child_rx(struct tr_ctx *ctx, void *state, struct tr_msg *m)
{
    return m->type == T_FAIL ? -5 : 0;
}

static void sv_child_fini(struct tr_ctx *ctx, void *state, enum tr_stop_reason why)
{
    struct sv *s = *(void **)state;
    s->finis++;
}

static int sv_parent_rx(struct tr_ctx *ctx, void *state, struct tr_msg *m)
{
    struct sv *s = *(void **)state;

    if (m->type == TR_MSG_CHILD_RESTART || m->type == TR_MSG_CHILD_EXIT) {
        memcpy(&s->last, m->data, sizeof s->last);
        if (m->type == TR_MSG_CHILD_RESTART)
            s->restarts++;
        else
            s->exits++;
    }
    return 0;
}

static const struct tr_behavior sv_child_beh = { "sv_child", sizeof(void *), sv_child_init, sv_child_rx,
                                                 sv_child_fini };
static const struct tr_behavior sv_parent_beh = { "sv_parent", sizeof(void *), keep_arg_init, sv_parent_rx,
                                                  NULL };

static void test_supervision(void **st)
{
    struct tr_rt *rt = rt_start(2);
    static struct sv s;
    tr_actor_id parent;
    struct tr_msg *m;

    memset(&s, 0, sizeof s);
    parent = spawn_on(rt, &sv_parent_beh, &s, 0, 0, 0);
    struct tr_spawn_opts o = { .behavior = &sv_child_beh, .arg = &s, .parent = parent, .sched = 1,
                               .restart = TR_RESTART_ON_FAILURE, .max_restarts = 2,
                               .restart_window_ms = 3600000 };
    assert_int_equal(tr_spawn(rt, &o, &s.child), TR_OK);
    for (int i = 1; i <= 2; i++) {
        tell(rt, s.child, T_FAIL, NULL, 0); /* same id after each restart */
        WAIT_FOR(s.restarts == i);
        assert_int_equal(s.last.child, s.child);
        assert_int_equal(s.last.code, -5);
    }
    tell(rt, s.child, T_FAIL, NULL, 0);
    WAIT_FOR(s.exits == 1);
    assert_int_equal(s.last.reason, TR_STOP_FAILED);
    assert_int_equal(s.inits, 3);
    assert_int_equal(s.finis, 3);
    m = tr_msg_new(T_PING, 0);
    assert_int_equal(tr_rt_send(rt, s.child, m), TR_ENOACTOR);
    tr_msg_free(m);

    /* A normal stop reports reason NORMAL. */
    struct tr_spawn_opts o2 = { .behavior = &sv_child_beh, .arg = &s, .parent = parent, .sched = 1 };
    assert_int_equal(tr_spawn(rt, &o2, &s.child), TR_OK);
    assert_int_equal(tr_rt_stop_actor(rt, s.child), TR_OK);
    WAIT_FOR(s.exits == 2);
    assert_int_equal(s.last.reason, TR_STOP_NORMAL);
    tr_rt_shutdown(rt);
}

/* ---- stopped actor, dead letters ---------------------------------------- */

static void test_send_to_stopped(void **st)
{
    struct tr_rt *rt = rt_start(2);
    static struct sv s;
    struct tr_rt_stats before, after;
    struct tr_msg *m;
    tr_actor_id id;

    memset(&s, 0, sizeof s);
    id = spawn_on(rt, &sv_child_beh, &s, 1, 0, 0);
    WAIT_FOR(s.inits == 1);
    assert_int_equal(tr_rt_stop_actor(rt, id), TR_OK);
    WAIT_FOR(s.finis == 1);
    tr_rt_stats(rt, &before);
    m = tr_msg_new(T_PING, 0);
    assert_int_equal(tr_rt_send(rt, id, m), TR_ENOACTOR);
    assert_int_equal(tr_rt_stop_actor(rt, id), TR_ENOACTOR);
    assert_int_equal(tr_rt_send(rt, (tr_actor_id)1 << 32 | 255u << 24, m), TR_ENOACTOR); /* no such sched */
    tr_msg_free(m);
    tr_rt_stats(rt, &after);
    assert_int_equal(after.dead_letters, before.dead_letters + 2);
    assert_int_equal(after.actors, 0);
    tr_rt_shutdown(rt);
}

/* ---- shutdown with messages in flight ------------------------------------ */

struct inflight {
    _Atomic int inits, finis;
    tr_actor_id ids[256];
    int n;
};

static int if_init(struct tr_ctx *ctx, void *state, void *arg)
{
    struct inflight *f = arg;
    *(void **)state = arg;
    f->inits++;
    /* Something to free at shutdown: a long timer and a request that is never answered. */
    tr_timer_start(ctx, 3600 * 1000, tr_msg_new(T_DATA, 16), NULL);
    return 0;
}

static int if_rx(struct tr_ctx *ctx, void *state, struct tr_msg *m)
{
    struct inflight *f = *(void **)state;

    if (m->type == T_PING) /* bounce forever between random actors */
        (void)tr_send(ctx, f->ids[tr_random(ctx) % (uint64_t)f->n], m);
    return 0;
}

static void if_fini(struct tr_ctx *ctx, void *state, enum tr_stop_reason why)
{
    struct inflight *f = *(void **)state;
    assert_int_equal(why, TR_STOP_SHUTDOWN);
    /* Sends during shutdown fail cleanly. */
    assert_int_equal(tr_tell(ctx, tr_self(ctx), T_DATA, NULL, 0), TR_ECLOSED);
    f->finis++;
}

static const struct tr_behavior if_beh = { "inflight", sizeof(void *), if_init, if_rx, if_fini };

static void test_shutdown_in_flight(void **st)
{
    struct tr_rt *rt = rt_start(4);
    static struct inflight f;

    memset(&f, 0, sizeof f);
    f.n = 256;
    for (int i = 0; i < f.n; i++)
        f.ids[i] = spawn_on(rt, &if_beh, &f, TR_SCHED_ANY, 0, 0);
    WAIT_FOR(f.inits == f.n);
    for (int i = 0; i < f.n * 8; i++) /* bouncing forever */
        tell(rt, f.ids[i % f.n], T_PING, NULL, 0);
    for (int i = 0; i < 100000; i++) { /* a pile of cross-thread mail */
        struct tr_msg *m = tr_msg_new(T_DATA, 32);
        if (tr_rt_send(rt, f.ids[i % f.n], m) != TR_OK)
            tr_msg_free(m);
    }
    tr_rt_shutdown(rt);
    assert_int_equal(f.finis, f.n);
}

/* ---- tr_rt_call and shutdown hooks -------------------------------------- */

struct hk {
    _Atomic int seq;
    int fini_at, h1_at, h2_at;
    _Atomic int called;
    int sched_seen;
    int loop_ok;
    uv_timer_t timer;
    tr_actor_id child_sched;
    _Atomic int dropped;
};

static int hk_rx(struct tr_ctx *ctx, void *state, struct tr_msg *m)
{
    return 0;
}

static void hk_fini(struct tr_ctx *ctx, void *state, enum tr_stop_reason why)
{
    struct hk *h = *(void **)state;
    h->fini_at = ++h->seq;
}

static const struct tr_behavior hk_beh = { "hk", sizeof(void *), keep_arg_init, hk_rx, hk_fini };

static void h1(void *arg)
{
    struct hk *h = arg;
    h->h1_at = ++h->seq;
}

static void h2(void *arg)
{
    struct hk *h = arg;
    h->h2_at = ++h->seq;
    uv_close((uv_handle_t *)&h->timer, NULL); /* the handle lives on this loop */
}

static void noop_timer_cb(uv_timer_t *t)
{
}

static void call_fn(struct tr_ctx *ctx, void *arg)
{
    struct hk *h = arg;
    struct tr_spawn_opts o = { .behavior = &hk_beh, .arg = h, .sched = TR_SCHED_SELF };
    tr_actor_id id;

    h->sched_seen = tr_ctx_sched(ctx);
    h->loop_ok = tr_ctx_loop(ctx) != NULL && !tr__deterministic(ctx);
    uv_timer_init(tr_ctx_loop(ctx), &h->timer);
    uv_timer_start(&h->timer, noop_timer_cb, 3600 * 1000, 3600 * 1000);
    assert_int_equal(tr_rt_on_shutdown(ctx, h1, h), TR_OK);
    assert_int_equal(tr_rt_on_shutdown(ctx, h2, h), TR_OK);
    assert_int_equal(tr_spawn(tr_ctx_rt(ctx), &o, &id), TR_OK);
    h->child_sched = (id >> 24) & 0xff;
    h->called++;
}

static void never_fn(struct tr_ctx *ctx, void *arg)
{
    fail_msg("must not run");
}

static void dropped_fn(void *arg)
{
    struct hk *h = arg;
    h->dropped++;
}

static void test_call_and_hooks(void **st)
{
    struct tr_rt *rt = rt_start(2);
    struct tr_rt_opts o = { .schedulers = 2 };
    static struct hk h;

    memset(&h, 0, sizeof h);
    assert_int_equal(tr_rt_call(rt, 1, call_fn, dropped_fn, &h), TR_OK);
    assert_int_equal(tr_rt_call(rt, 7, call_fn, NULL, &h), TR_EINVAL);
    WAIT_FOR(h.called == 1);
    assert_int_equal(h.sched_seen, 1);
    assert_int_equal(h.child_sched, 1);
    assert_true(h.loop_ok);
    tr_rt_shutdown(rt);
    assert_int_equal(h.dropped, 0);
    assert_int_equal(h.fini_at, 1); /* actors stop first, then hooks in reverse */
    assert_int_equal(h.h2_at, 2);
    assert_int_equal(h.h1_at, 3);

    /* Never started: the call is dropped, and `dropped` runs at shutdown. */
    assert_int_equal(tr_rt_new(&o, &rt), TR_OK);
    assert_int_equal(tr_rt_call(rt, 0, never_fn, dropped_fn, &h), TR_OK);
    tr_rt_shutdown(rt);
    assert_int_equal(h.dropped, 1);
}

/* ---- many spawns from many threads -------------------------------------- */

struct sp {
    struct tr_rt *rt;
    _Atomic int inits;
    _Atomic int got;
};

static int sp_init(struct tr_ctx *ctx, void *state, void *arg)
{
    struct sp *p = arg;
    *(void **)state = arg;
    p->inits++;
    return 0;
}

static int sp_rx(struct tr_ctx *ctx, void *state, struct tr_msg *m)
{
    struct sp *p = *(void **)state;
    p->got++;
    return tr_stop(ctx, tr_self(ctx));
}

static const struct tr_behavior sp_beh = { "sp", sizeof(void *), sp_init, sp_rx, NULL };

static void spawner(void *arg)
{
    struct sp *p = arg;

    for (int i = 0; i < 5000; i++) {
        struct tr_spawn_opts o = { .behavior = &sp_beh, .arg = p, .sched = TR_SCHED_ANY };
        tr_actor_id id;
        assert_int_equal(tr_spawn(p->rt, &o, &id), TR_OK);
        /* Sent right after spawn, from another thread: waits for init. */
        assert_int_equal(tr_rt_send(p->rt, id, tr_msg_new(T_PING, 0)), TR_OK);
    }
}

static void test_spawn_from_threads(void **st)
{
    static struct sp p;
    uv_thread_t t[3];
    struct tr_rt_stats stats;

    memset(&p, 0, sizeof p);
    p.rt = rt_start(3);
    for (int i = 0; i < 3; i++)
        assert_int_equal(uv_thread_create(&t[i], spawner, &p), 0);
    for (int i = 0; i < 3; i++)
        uv_thread_join(&t[i]);
    WAIT_FOR(p.got == 15000);
    assert_int_equal(p.inits, 15000);
    tr_rt_stats(p.rt, &stats);
    WAIT_FOR((tr_rt_stats(p.rt, &stats), stats.actors == 0));
    tr_rt_shutdown(p.rt);
}

/* ---- local sends to an actor whose spawn is still in the inbox ---------- */

struct fresh {
    _Atomic tr_actor_id x;
    _Atomic int entered, got, errors;
    uint32_t next;
};

/* Blocks its scheduler (test only) until X exists, so X's spawn is still in
 * the inbox when A sends to it. */
static int fresh_a(struct tr_ctx *ctx, void *state, struct tr_msg *m)
{
    struct fresh *f = *(void **)state;
    tr_actor_id x;

    f->entered = 1;
    while ((x = f->x) == 0)
        uv_sleep(0);
    for (uint32_t i = 0; i < 1000; i++)
        assert_int_equal(tr_tell(ctx, x, T_DATA, &i, 4), TR_OK);
    return 0;
}

static int fresh_x(struct tr_ctx *ctx, void *state, struct tr_msg *m)
{
    struct fresh *f = *(void **)state;
    uint32_t v;

    memcpy(&v, m->data, 4);
    if (v != f->next++)
        f->errors++;
    f->got++;
    return 0;
}

static const struct tr_behavior fresh_a_beh = { "fresh_a", sizeof(void *), keep_arg_init, fresh_a, NULL };
static const struct tr_behavior fresh_x_beh = { "fresh_x", sizeof(void *), keep_arg_init, fresh_x, NULL };

static void test_send_to_fresh_spawn(void **st)
{
    struct tr_rt *rt = rt_start(2);
    static struct fresh f;

    for (int round = 0; round < 5; round++) {
        tr_actor_id a, x;
        memset(&f, 0, sizeof f);
        a = spawn_on(rt, &fresh_a_beh, &f, 1, 0, 0);
        tell(rt, a, T_GO, NULL, 0);
        WAIT_FOR(f.entered);
        x = spawn_on(rt, &fresh_x_beh, &f, 1, 0, 0);
        f.x = x;
        WAIT_FOR(f.got == 1000);
        assert_int_equal(f.errors, 0);
        assert_int_equal(tr_rt_stop_actor(rt, a), TR_OK);
        assert_int_equal(tr_rt_stop_actor(rt, x), TR_OK);
    }
    tr_rt_shutdown(rt);
}

/* ---- tr_tell_self_behind ------------------------------------------------ */

/* Round 1: the actor, on GO, waits until the test thread has sent DATA from
 * outside (so DATA sits in the scheduler's inbox), then tells itself PING
 * with tr_tell and MARK with tr_tell_self_behind. PING comes in the same
 * turn, before DATA; MARK only after DATA. Round 2: nothing is pending, and
 * a plain tell (HOLD) sent after MARK stays behind it. */
struct behind {
    atomic_int in_go, data_sent, round;
    uint32_t order[8];
    atomic_int n;
};

static int behind_rx(struct tr_ctx *ctx, void *state, struct tr_msg *m)
{
    struct behind *b = *(struct behind **)state;
    int k = atomic_load(&b->n);
    if (k < 8)
        b->order[k] = m->type;
    if (m->type == T_GO) {
        atomic_store(&b->in_go, 1);
        while (!atomic_load(&b->data_sent))
            uv_sleep(1);
        assert_int_equal(tr_tell(ctx, tr_self(ctx), T_PING, NULL, 0), TR_OK);
        assert_int_equal(tr_tell_self_behind(ctx, T_MARK, NULL, 0), TR_OK);
        if (atomic_load(&b->round) == 2)
            assert_int_equal(tr_tell(ctx, tr_self(ctx), T_HOLD, NULL, 0), TR_OK);
    }
    atomic_store(&b->n, k + 1);
    return 0;
}

static const struct tr_behavior behind_beh = { "behind", sizeof(void *), keep_arg_init, behind_rx, NULL };

static void test_tell_self_behind(void **st)
{
    struct tr_rt *rt = rt_start(2);
    static struct behind b;

    memset(&b, 0, sizeof b);
    atomic_store(&b.round, 1);
    tr_actor_id id = spawn_on(rt, &behind_beh, &b, 0, 0, 0);
    tell(rt, id, T_GO, NULL, 0);
    WAIT_FOR(atomic_load(&b.in_go));
    tell(rt, id, T_DATA, NULL, 0);
    atomic_store(&b.data_sent, 1);
    WAIT_FOR(atomic_load(&b.n) == 4);
    assert_int_equal(b.order[0], T_GO);
    assert_int_equal(b.order[1], T_PING); /* a plain tell to oneself: same turn */
    assert_int_equal(b.order[2], T_DATA);
    assert_int_equal(b.order[3], T_MARK);

    memset(b.order, 0, sizeof b.order);
    atomic_store(&b.round, 2);
    atomic_store(&b.n, 0);
    tell(rt, id, T_GO, NULL, 0);
    WAIT_FOR(atomic_load(&b.n) == 4);
    assert_int_equal(b.order[0], T_GO);
    assert_int_equal(b.order[1], T_PING);
    assert_int_equal(b.order[2], T_MARK);
    assert_int_equal(b.order[3], T_HOLD);
    tr_rt_shutdown(rt);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mailbox_order),
        cmocka_unit_test(test_tell_self_behind),
        cmocka_unit_test(test_cross_thread_delivery),
        cmocka_unit_test(test_fairness),
        cmocka_unit_test(test_timers),
        cmocka_unit_test(test_timer_pending_at_shutdown),
        cmocka_unit_test(test_request_reply),
        cmocka_unit_test(test_supervision),
        cmocka_unit_test(test_send_to_stopped),
        cmocka_unit_test(test_shutdown_in_flight),
        cmocka_unit_test(test_call_and_hooks),
        cmocka_unit_test(test_spawn_from_threads),
        cmocka_unit_test(test_send_to_fresh_spawn),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
