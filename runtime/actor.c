/* Actor lifecycle on its scheduler thread: spawn and slot allocation, init,
 * turns, failure and restart, passivation and stop.
 *
 * Life of an actor
 * ----------------
 *   spawn -> [NEEDS_INIT] -> init ok -> [INITED] -> receive ...
 *   receive/init fails -> fini(FAILED) if INITED -> restart policy:
 *       within intensity: incarnation++, state zeroed, [NEEDS_INIT RESTART],
 *                         parent gets CHILD_RESTART; same id, mailbox kept;
 *       else:             stop (parent gets CHILD_EXIT, reason FAILED).
 *   tr_passivate + empty mailbox -> fini(PASSIVATE), memory shrunk to the
 *       header, slot PASSIVE, [NEEDS_INIT REACTIVATE]; the next message or
 *       timer queues it and init runs before that message.
 *   stop -> fini(NORMAL) if INITED, mailbox dropped as dead letters, slot
 *       freed (generation bumped), parent gets CHILD_EXIT.
 * Every path that calls a behaviour callback goes through the scheduler's
 * single ctx; callbacks are never nested. */
#include <string.h>

#include "core.h"

static struct tr_slot *own_slot(struct tr_sched *s, struct tr_actor *a)
{
    return tr__slot(s, tr__id_slot(a->id));
}

/* Allocate a slot and the actor memory; the caller attaches it to its
 * scheduler. Returns NULL when the scheduler has no slot left. Any thread. */
struct tr_actor *tr__actor_new(struct tr_rt *rt, struct tr_sched *s, const struct tr_spawn_opts *o,
                               uint16_t extra_flags)
{
    struct tr_actor *a = tr_malloc(TR__ACTOR_HDR + o->behavior->state_size);
    struct tr_slot *sl;
    uint32_t idx, gen;

    memset(a, 0, TR__ACTOR_HDR);
    a->beh = o->behavior;
    a->arg = o->arg;
    a->parent = o->parent;
    a->cap = o->mailbox_cap ? o->mailbox_cap : rt->cap;
    if (a->cap > INT32_MAX)
        a->cap = INT32_MAX;
    a->restart = (uint8_t)o->restart;
    a->max_restarts = o->max_restarts == 0 ? 3 : o->max_restarts > 0xffff ? 0xffff : (uint16_t)o->max_restarts;
    a->window_ms = o->restart_window_ms ? o->restart_window_ms : 5000;
    a->flags = F_NEEDS_INIT | extra_flags;
    a->start_reason = TR_START_NEW;

    uv_mutex_lock(&s->slot_mu);
    if (s->nfree > 0) {
        idx = s->free_idx[--s->nfree];
    } else if (s->slot_next < (1u << TR__SLOT_BITS)) {
        idx = s->slot_next++;
        if ((idx & (TR__CHUNK_SLOTS - 1)) == 0)
            atomic_store_explicit(&s->dir[idx >> TR__CHUNK_BITS],
                                  tr_calloc(TR__CHUNK_SLOTS, sizeof(struct tr_slot)),
                                  memory_order_release);
    } else {
        uv_mutex_unlock(&s->slot_mu);
        tr_free(a);
        return NULL;
    }
    sl = tr__slot(s, idx);
    gen = atomic_load_explicit(&sl->tag, memory_order_relaxed) >> 2;
    if (gen == 0)
        gen = 1;
    atomic_fetch_add_explicit(&sl->avail, (int32_t)a->cap, memory_order_relaxed);
    atomic_store_explicit(&sl->tag, gen << 2 | SLOT_LIVE, memory_order_release);
    uv_mutex_unlock(&s->slot_mu);

    a->id = (uint64_t)gen << 32 | (uint64_t)s->index << TR__SLOT_BITS | idx;
    if (!(extra_flags & F_SYSTEM))
        atomic_fetch_add_explicit(&s->st.live, 1, memory_order_relaxed);
    return a;
}

/* Free a's slot: later sends to a->id fail; the generation moves on. Owner. */
void tr__slot_release(struct tr_sched *s, struct tr_actor *a)
{
    struct tr_slot *sl = own_slot(s, a);
    uint32_t idx = tr__id_slot(a->id);
    uint32_t gen;

    uv_mutex_lock(&s->slot_mu);
    gen = (atomic_load_explicit(&sl->tag, memory_order_relaxed) >> 2) + 1;
    atomic_fetch_sub_explicit(&sl->avail, (int32_t)a->cap, memory_order_relaxed);
    sl->ptr = NULL;
    atomic_store_explicit(&sl->tag, gen << 2 | SLOT_FREE, memory_order_release);
    if (gen <= TR__GEN_MAX) { /* else retired: its ids are never handed out again */
        if (s->nfree == s->free_cap) {
            s->free_cap = s->free_cap ? s->free_cap * 2 : 256;
            s->free_idx = tr_realloc(s->free_idx, s->free_cap * sizeof *s->free_idx);
        }
        s->free_idx[s->nfree++] = idx;
    }
    uv_mutex_unlock(&s->slot_mu);
}

/* Make a freshly created actor known to its scheduler. Owner thread (or the
 * creating thread before the schedulers start). */
void tr__attach(struct tr_sched *s, struct tr_actor *a)
{
    own_slot(s, a)->ptr = a;
    tr__rq_push(s, a);
}

static void ctx_enter(struct tr_sched *s, struct tr_actor *a, struct tr_msg *m)
{
    s->ctx.a = a;
    s->ctx.cur = m;
    s->ctx.taken = 0;
}

static void ctx_leave(struct tr_sched *s)
{
    s->ctx.a = NULL;
    s->ctx.cur = NULL;
}

static void call_fini(struct tr_sched *s, struct tr_actor *a, enum tr_stop_reason why)
{
    if (!(a->flags & F_INITED))
        return;
    a->flags &= ~F_INITED;
    if (a->beh->fini) {
        ctx_enter(s, a, NULL);
        a->beh->fini(&s->ctx, tr__state(a), why);
        ctx_leave(s);
    }
}

static void notify_parent(struct tr_sched *s, struct tr_actor *a, uint32_t type, int reason, int code)
{
    struct tr_exit_info info;
    struct tr_msg *m;

    if (a->parent == 0 || s->closing)
        return;
    memset(&info, 0, sizeof info);
    info.child = a->id;
    info.reason = reason;
    info.code = code;
    info.restarts = a->restarts;
    m = tr_msg_make(type, &info, sizeof info);
    m->from = a->id;
    tr__deliver_system(s->rt, a->parent, m);
}

static void drop_mailbox(struct tr_sched *s, struct tr_actor *a, int dead_letters)
{
    struct tr_slot *sl = own_slot(s, a);
    struct tr_msg *m, *next;

    for (m = a->mb_head; m != NULL; m = next) {
        next = m->next;
        atomic_fetch_add_explicit(&sl->avail, 1, memory_order_relaxed);
        tr__drop(s, m, dead_letters);
    }
    a->mb_head = a->mb_tail = NULL;
}

void tr__actor_free_mem(struct tr_sched *s, struct tr_actor *a)
{
    tr_free(a);
}

/* Stop a for good. Frees its memory unless it sits in the run queue or is
 * running (then whoever holds it frees it on seeing F_DEAD). Owner thread. */
void tr__actor_stop(struct tr_sched *s, struct tr_actor *a, int reason, int code)
{
    if (a->flags & F_DEAD)
        return;
    call_fini(s, a, (enum tr_stop_reason)reason);
    drop_mailbox(s, a, 1);
    if (a->flags & F_PASSIVE)
        atomic_fetch_sub_explicit(&s->st.passivated, 1, memory_order_relaxed);
    a->flags |= F_DEAD;
    tr__slot_release(s, a);
    if (!(a->flags & F_SYSTEM))
        atomic_fetch_sub_explicit(&s->st.live, 1, memory_order_relaxed);
    notify_parent(s, a, TR_MSG_CHILD_EXIT, reason, code);
    if (!(a->flags & (F_INRQ | F_RUNNING)))
        tr__actor_free_mem(s, a);
}

/* init or receive returned code. Returns 1 if the actor lives on. */
static int on_failure(struct tr_sched *s, struct tr_actor *a, int code)
{
    uint64_t now;

    tr__stat_inc(&s->st.failures, 1);
    tr_log(TR_LOG_DEBUG, "actor %s %llx failed: %d", a->beh->name ? a->beh->name : "?",
           (unsigned long long)a->id, code);
    call_fini(s, a, TR_STOP_FAILED);
    /* An actor that asked to stop and then failed is not restarted. */
    if (a->restart == TR_RESTART_ON_FAILURE && !s->closing && !(a->flags & F_STOP_REQ)) {
        now = tr__now(s);
        if (a->restarts == 0 || now - a->window_start_ms >= a->window_ms) {
            a->window_start_ms = now;
            a->restarts = 0;
        }
        if (a->restarts < a->max_restarts) {
            a->restarts++;
            a->incarnation++;
            a->flags |= F_NEEDS_INIT;
            a->flags &= ~(F_STOP_REQ | F_PASSIVATE_REQ);
            a->start_reason = TR_START_RESTART;
            tr__stat_inc(&s->st.restarts, 1);
            notify_parent(s, a, TR_MSG_CHILD_RESTART, TR_STOP_FAILED, code);
            return 1;
        }
    }
    tr__actor_stop(s, a, TR_STOP_FAILED, code);
    return 0;
}

/* Run init (reactivating a passivated actor first). Returns the actor, which
 * may have moved; on failure it is restarting (F_NEEDS_INIT) or F_DEAD. */
static struct tr_actor *start(struct tr_sched *s, struct tr_actor *a)
{
    int rv = 0;

    if (a->flags & F_PASSIVE) {
        a = tr_realloc(a, TR__ACTOR_HDR + a->beh->state_size);
        own_slot(s, a)->ptr = a;
        a->flags &= ~F_PASSIVE;
        atomic_store_explicit(&own_slot(s, a)->tag, (tr__id_gen(a->id) << 2) | SLOT_LIVE,
                              memory_order_release);
        atomic_fetch_sub_explicit(&s->st.passivated, 1, memory_order_relaxed);
    }
    memset(tr__state(a), 0, a->beh->state_size);
    a->flags &= ~F_NEEDS_INIT;
    if (a->beh->init) {
        ctx_enter(s, a, NULL);
        rv = a->beh->init(&s->ctx, tr__state(a), a->arg);
        ctx_leave(s);
    }
    if (rv != 0) {
        on_failure(s, a, rv);
        return a;
    }
    a->flags |= F_INITED;
    return a;
}

static struct tr_actor *passivate(struct tr_sched *s, struct tr_actor *a)
{
    call_fini(s, a, TR_STOP_PASSIVATE);
    a = tr_realloc(a, TR__ACTOR_HDR);
    own_slot(s, a)->ptr = a;
    a->flags |= F_PASSIVE | F_NEEDS_INIT;
    a->start_reason = TR_START_REACTIVATE;
    atomic_store_explicit(&own_slot(s, a)->tag, (tr__id_gen(a->id) << 2) | SLOT_PASSIVE,
                          memory_order_release);
    atomic_fetch_add_explicit(&s->st.passivated, 1, memory_order_relaxed);
    return a;
}

/* A reply whose request already timed out (or whose requester restarted) is
 * dropped; a live one cancels its timeout. Returns 1 to deliver m. */
static int accept_reply(struct tr_sched *s, struct tr_actor *a, struct tr_msg *m)
{
    struct tr_timer *t;

    if (!(m->flags & TR_MSGF_REPLY) || !(m->corr & TR__CORR_TIMER))
        return 1;
    t = tr__map_get(&s->timers, m->corr);
    if (t == NULL || t->msg != NULL || t->owner != a->id || t->incarnation != a->incarnation)
        return 0;
    tr__timer_remove(s, t);
    tr__timers_rearm(s);
    return 1;
}

/* Handle after-callback requests (stop, passivate). Returns the actor, which
 * may have moved, and may now be F_DEAD or F_PASSIVE. */
static struct tr_actor *after_callback(struct tr_sched *s, struct tr_actor *a)
{
    if (a->flags & F_STOP_REQ) {
        a->flags &= ~F_STOP_REQ;
        tr__actor_stop(s, a, TR_STOP_NORMAL, 0);
        return a;
    }
    if (a->flags & F_PASSIVATE_REQ) {
        a->flags &= ~F_PASSIVATE_REQ;
        if (a->mb_head == NULL && (a->flags & F_INITED) && !s->closing)
            a = passivate(s, a);
    }
    return a;
}

/* One turn of a (just taken off the run queue): init if due, then up to
 * budget messages. Requeues a if work is left. Owner thread. */
void tr__run_turn(struct tr_sched *s, struct tr_actor *a, uint32_t budget, uint64_t *delivered)
{
    struct tr_slot *sl = own_slot(s, a);
    struct tr_msg *m;
    uint32_t n = 0;
    int rv;

    a->flags |= F_RUNNING;
    if (a->flags & F_NEEDS_INIT) {
        a = start(s, a);
        if (a->flags & (F_DEAD | F_NEEDS_INIT)) /* stopped, or restarting */
            goto out;
        a = after_callback(s, a);
        if (a->flags & (F_DEAD | F_PASSIVE))
            goto out;
    }
    while (n < budget && (m = a->mb_head) != NULL) {
        a->mb_head = m->next;
        if (a->mb_head == NULL)
            a->mb_tail = NULL;
        n++;
        if (!accept_reply(s, a, m)) {
            tr_msg_free(m);
            continue;
        }
        ctx_enter(s, a, m);
        rv = a->beh->receive(&s->ctx, tr__state(a), m);
        if (!s->ctx.taken)
            tr_msg_free(m);
        ctx_leave(s);
        (*delivered)++;
        if (rv != 0) {
            on_failure(s, a, rv);
            goto out;
        }
        a = after_callback(s, a);
        if (a->flags & (F_DEAD | F_PASSIVE))
            goto out;
    }
out:
    /* Credits of the messages taken this turn go back in one step: one write
     * to the shared counter per turn instead of one per message. */
    if (n != 0)
        atomic_fetch_add_explicit(&sl->avail, (int32_t)n, memory_order_relaxed);
    a->flags &= ~F_RUNNING;
    if (a->flags & F_DEAD) {
        tr__actor_free_mem(s, a);
        return;
    }
    if (a->mb_head != NULL || ((a->flags & F_NEEDS_INIT) && !(a->flags & F_PASSIVE)))
        tr__rq_push(s, a);
}

/* ---- public ------------------------------------------------------------- */

int tr_passivate(struct tr_ctx *ctx)
{
    if (ctx->a->flags & F_SYSTEM)
        return TR_EINVAL;
    ctx->a->flags |= F_PASSIVATE_REQ;
    return TR_OK;
}

tr_actor_id tr_self(struct tr_ctx *ctx)
{
    return ctx->a->id;
}

struct tr_rt *tr_ctx_rt(struct tr_ctx *ctx)
{
    return ctx->s->rt;
}

int tr_ctx_sched(struct tr_ctx *ctx)
{
    return ctx->s->index;
}

enum tr_start_reason tr_start_reason(struct tr_ctx *ctx)
{
    return (enum tr_start_reason)ctx->a->start_reason;
}

void tr_msg_keep(struct tr_ctx *ctx, struct tr_msg *msg)
{
    if (msg != NULL && msg == ctx->cur)
        ctx->taken = 1;
}
