/* A scheduler: one thread, one libuv loop, an MPSC inbox for everything that
 * comes from other threads, a run queue of actors with work, and the
 * bookkeeping of its actors.
 *
 * Happy path: a sender on another thread pushes onto the inbox and
 * uv_async_send()s the wake handle (libuv coalesces the wakeups). The async
 * callback starts the idle handle; while it is active the loop polls I/O
 * without blocking and calls sched_run between polls, which drains the inbox
 * into mailboxes and gives each queued actor one turn of at most turn_budget
 * messages, round-robin. When no work is left the idle handle stops and the
 * loop sleeps in epoll until a wakeup, a timer or I/O.
 *
 * Shutdown: tr_rt_shutdown sets rt->closing, which every send checks first,
 * and wakes every scheduler. Each one reaches a barrier between batches, so
 * once all have passed it no thread is in the middle of a send and no one
 * will touch another scheduler's wake handle again. Then each stops its
 * actors, frees its timers, runs its shutdown hooks, closes its handles and
 * lets its loop run dry. */
#include <string.h>

#include "core.h"

_Thread_local struct tr_sched *tr__tl_sched;

/* Per sched_run call: at most RUN_ROUNDS rounds of (drain the inbox, one
 * turn per queued actor) and at most RUN_TURNS turns, so that I/O is polled
 * often however many actors have work. */
#define RUN_ROUNDS 8
#define RUN_TURNS 1024
#define DRAIN_MAX 4096

uint64_t tr__now(struct tr_sched *s)
{
    if (s->rt->det)
        return s->rt->vnow;
    return uv_hrtime() / 1000000u;
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

/* xoshiro256** */
uint64_t tr__rand(struct tr_sched *s)
{
    uint64_t *r = s->rng;
    uint64_t out = rotl(r[1] * 5, 7) * 9;
    uint64_t t = r[1] << 17;

    r[2] ^= r[0];
    r[3] ^= r[1];
    r[1] ^= r[2];
    r[0] ^= r[3];
    r[2] ^= t;
    r[3] = rotl(r[3], 45);
    return out;
}

static void idle_cb(uv_idle_t *h)
{
    tr__sched_run(h->data);
}

void tr__kick(struct tr_sched *s)
{
    if (s->rt->det || s->idle_on || s->closing)
        return;
    uv_idle_start(&s->idle, idle_cb);
    s->idle_on = 1;
}

void tr__rq_push(struct tr_sched *s, struct tr_actor *a)
{
    a->flags |= F_INRQ;
    a->rq_next = NULL;
    if (s->rq_tail)
        s->rq_tail->rq_next = a;
    else
        s->rq_head = a;
    s->rq_tail = a;
    s->rq_len++;
    tr__kick(s);
}

struct tr_actor *tr__rq_pop(struct tr_sched *s)
{
    struct tr_actor *a = s->rq_head;

    if (a == NULL)
        return NULL;
    s->rq_head = a->rq_next;
    if (s->rq_head == NULL)
        s->rq_tail = NULL;
    s->rq_len--;
    a->flags &= ~F_INRQ;
    return a;
}

/* Append m to a's mailbox and queue a if it is idle. Owner thread. */
void tr__mailbox_push(struct tr_sched *s, struct tr_actor *a, struct tr_msg *m)
{
    m->next = NULL;
    if (a->mb_tail)
        a->mb_tail->next = m;
    else
        a->mb_head = m;
    a->mb_tail = m;
    if (!(a->flags & (F_INRQ | F_RUNNING)))
        tr__rq_push(s, a);
}

/* Hand m to s's thread through its inbox. Any thread. */
void tr__post(struct tr_sched *s, struct tr_msg *m)
{
    tr__mpsc_push(&s->inbox, m);
    if (s->rt->det)
        return;
    if (tr__tl_sched == s)
        tr__kick(s);
    else
        uv_async_send(&s->wake);
}

/* Dispose of a message that will not be delivered. At shutdown tr_rt_call
 * messages are kept so their `dropped` runs on the shutting-down thread. */
void tr__drop(struct tr_sched *s, struct tr_msg *m, int dead_letter)
{
    if (m->flags & TR__MSGF_CTRL) {
        if (m->type == CTRL_SPAWN) {
            struct tr_actor *a;
            memcpy(&a, m->data, sizeof a);
            tr__actor_free_mem(s, a);
        }
        tr_msg_free(m);
        return;
    }
    if ((m->flags & TR__MSGF_CALL) && s->closing) {
        m->next = s->dropped_calls;
        s->dropped_calls = m;
        return;
    }
    if (dead_letter)
        atomic_fetch_add_explicit(&s->rt->dead_letters, 1, memory_order_relaxed);
    tr_msg_free(m);
}

static void handle_ctrl(struct tr_sched *s, struct tr_msg *m)
{
    struct tr_slot *sl;
    struct tr_actor *a;

    if (s->closing) {
        tr__drop(s, m, 0);
        return;
    }
    switch (m->type) {
    case CTRL_SPAWN:
        memcpy(&a, m->data, sizeof a);
        tr__attach(s, a);
        break;
    case CTRL_STOP:
        sl = tr__slot_of(s->rt, m->to);
        a = sl ? sl->ptr : NULL;
        if (a != NULL && a->id == m->to)
            tr__actor_stop(s, a, TR_STOP_NORMAL, 0);
        break;
    default:
        break;
    }
    tr_msg_free(m);
}

/* Move up to max messages from the inbox into mailboxes. Owner thread. */
void tr__drain_inbox(struct tr_sched *s, size_t max)
{
    struct tr_msg *m;
    struct tr_slot *sl;
    struct tr_actor *a;

    for (size_t n = 0; n < max && (m = tr__mpsc_pop(&s->inbox)) != NULL; n++) {
        if (m->flags & TR__MSGF_VIA) {
            m->flags &= ~TR__MSGF_VIA;
            s->via_inbox--;
        }
        if (m->flags & TR__MSGF_CTRL) {
            handle_ctrl(s, m);
            continue;
        }
        sl = tr__slot(s, tr__id_slot(m->to));
        a = sl->ptr;
        if (s->closing || a == NULL || a->id != m->to || (a->flags & F_DEAD)) {
            atomic_fetch_add_explicit(&sl->avail, 1, memory_order_relaxed);
            tr__drop(s, m, !s->closing);
            continue;
        }
        tr__mailbox_push(s, a, m);
    }
}

static void shutdown_here(struct tr_sched *s);

/* Run queued work for a while; keep the idle handle on while work is left. */
void tr__sched_run(struct tr_sched *s)
{
    uint64_t delivered = 0;
    size_t turns = 0;
    struct tr_actor *a;

    if (atomic_load_explicit(&s->rt->closing, memory_order_acquire)) {
        shutdown_here(s);
        return;
    }
    for (int round = 0; round < RUN_ROUNDS && turns < RUN_TURNS; round++) {
        size_t n;
        tr__drain_inbox(s, DRAIN_MAX);
        if (s->rq_head == NULL)
            break;
        n = s->rq_len < RUN_TURNS - turns ? s->rq_len : RUN_TURNS - turns;
        for (; n > 0 && (a = tr__rq_pop(s)) != NULL; n--) {
            turns++;
            if (a->flags & F_DEAD) {
                tr__actor_free_mem(s, a);
                continue;
            }
            tr__run_turn(s, a, s->rt->budget, &delivered);
        }
    }
    if (delivered)
        tr__stat_inc(&s->st.delivered, delivered);
    if (s->rq_head == NULL && !tr__mpsc_busy(&s->inbox) && s->idle_on) {
        uv_idle_stop(&s->idle);
        s->idle_on = 0;
    }
}

static void wake_cb(uv_async_t *h)
{
    struct tr_sched *s = h->data;

    if (atomic_load_explicit(&s->rt->closing, memory_order_acquire)) {
        shutdown_here(s);
        return;
    }
    tr__kick(s);
}

/* Init the loop and handles (threaded mode), on the creating thread. */
int tr__sched_open(struct tr_sched *s)
{
    int rv;

    rv = uv_loop_init(&s->loop);
    if (rv != 0)
        return rv;
    rv = uv_async_init(&s->loop, &s->wake, wake_cb);
    if (rv != 0) {
        uv_loop_close(&s->loop);
        return rv;
    }
    s->wake.data = s;
    uv_idle_init(&s->loop, &s->idle);
    s->idle.data = s;
    uv_timer_init(&s->loop, &s->timer);
    s->timer.data = s;
    s->handles_open = 1;
    return 0;
}

/* Stop every actor, drop every message and timer, run the shutdown hooks,
 * close the scheduler's handles. On the scheduler's thread (or the only
 * thread). */
void tr__sched_teardown(struct tr_sched *s)
{
    struct tr_actor *a, *next;

    s->closing = 1;
    tr__drain_inbox(s, SIZE_MAX);
    for (a = s->rq_head; a != NULL; a = next) {
        next = a->rq_next;
        a->flags &= ~F_INRQ;
        if (a->flags & F_DEAD)
            tr__actor_free_mem(s, a);
    }
    s->rq_head = s->rq_tail = NULL;
    s->rq_len = 0;
    for (uint32_t i = 0; i < s->slot_next; i++) {
        struct tr_slot *sl = tr__slot(s, i);
        struct tr_msg *m, *mn;

        if ((a = sl->ptr) == NULL)
            continue;
        if ((a->flags & F_INITED) && a->beh->fini) {
            a->flags &= ~F_INITED;
            s->ctx.a = a;
            s->ctx.cur = NULL;
            a->beh->fini(&s->ctx, tr__state(a), TR_STOP_SHUTDOWN);
            s->ctx.a = NULL;
        }
        for (m = a->mb_head; m != NULL; m = mn) {
            mn = m->next;
            tr__drop(s, m, 0);
        }
        sl->ptr = NULL;
        tr__actor_free_mem(s, a);
    }
    tr__drain_inbox(s, SIZE_MAX);
    tr__timers_free(s);
    for (size_t i = s->nhooks; i > 0; i--)
        s->hooks[i - 1].fn(s->hooks[i - 1].arg);
    tr_free(s->hooks);
    s->hooks = NULL;
    s->nhooks = s->hooks_cap = 0;
    if (s->handles_open) {
        uv_close((uv_handle_t *)&s->wake, NULL);
        uv_close((uv_handle_t *)&s->idle, NULL);
        uv_close((uv_handle_t *)&s->timer, NULL);
        s->handles_open = 0;
        s->idle_on = 0;
    }
}

static void shutdown_here(struct tr_sched *s)
{
    if (s->closing)
        return;
    uv_barrier_wait(&s->rt->barrier);
    tr__sched_teardown(s);
}

static void close_straggler_cb(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h)) {
        tr_log(TR_LOG_WARN, "runtime: closing a %s handle left open at shutdown",
               uv_handle_type_name(uv_handle_get_type(h)));
        uv_close(h, NULL);
    }
}

/* Run the loop until nothing is left, then close it. */
void tr__sched_loop_finish(struct tr_sched *s)
{
    uv_run(&s->loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&s->loop) == UV_EBUSY) {
        uv_walk(&s->loop, close_straggler_cb, NULL);
        uv_run(&s->loop, UV_RUN_DEFAULT);
        if (uv_loop_close(&s->loop) != 0)
            tr_log(TR_LOG_ERROR, "runtime: scheduler %d loop would not close", s->index);
    }
}

/* Free what is left after the thread is gone: late inbox messages, dropped
 * tr_rt_call requests (their `dropped` runs here), the slot table. */
void tr__sched_free(struct tr_sched *s)
{
    struct tr_msg *m;

    s->closing = 1;
    tr__drain_inbox(s, SIZE_MAX);
    while ((m = s->dropped_calls) != NULL) {
        struct tr__call call;
        s->dropped_calls = m->next;
        memcpy(&call, m->data, sizeof call);
        if (call.dropped)
            call.dropped(call.arg);
        tr_msg_free(m);
    }
    for (uint32_t i = 0; i < TR__DIR_SIZE; i++)
        tr_free(atomic_load_explicit(&s->dir[i], memory_order_relaxed));
    tr_free(s->free_idx);
    tr_msg_free(s->inbox.stub);
    uv_mutex_destroy(&s->slot_mu);
    tr_free(s);
}
