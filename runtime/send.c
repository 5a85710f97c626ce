/* Sending: tr_send and friends, request/reply, and system delivery.
 *
 * A send looks up the target's slot (no lock), takes a mailbox credit, and
 * then either appends to the mailbox directly (sender on the target's
 * scheduler thread) or pushes onto the target scheduler's inbox and wakes it.
 * Per sender->receiver FIFO holds because each path is FIFO and a sender is
 * on one thread: a local sender uses the direct path, except while the
 * target's spawn is itself still in the inbox, where it queues behind it
 * (and so do all local sends until those queued ones have drained), and
 * except tr_tell_self_behind, which takes the inbox path on purpose.
 * Nothing here blocks or makes a syscall except the coalesced wakeup. */
#include <string.h>

#include "core.h"

/* Entry guard for calls from threads that are not rt's schedulers, so that
 * tr_rt_shutdown can wait for them. Returns 0 (no guard), 1 (guarded), or
 * -1 when closing. */
static int guard_enter(struct tr_rt *rt)
{
    if (tr__tl_sched != NULL && tr__tl_sched->rt == rt)
        return 0;
    atomic_fetch_add(&rt->foreign, 1);
    if (atomic_load(&rt->closing)) {
        atomic_fetch_sub(&rt->foreign, 1);
        return -1;
    }
    return 1;
}

static void guard_exit(struct tr_rt *rt, int g)
{
    if (g > 0)
        atomic_fetch_sub(&rt->foreign, 1);
}

/* Deliver m (from/corr/flags already set) to `to`. capped: honour the
 * mailbox cap. On error the caller keeps m. Any thread (guarded by caller). */
int tr__send(struct tr_rt *rt, tr_actor_id to, struct tr_msg *m, int capped)
{
    struct tr_sched *s;
    struct tr_slot *sl;
    struct tr_actor *a;
    int32_t old;

    if (atomic_load_explicit(&rt->closing, memory_order_relaxed))
        return TR_ECLOSED;
    sl = tr__slot_of(rt, to);
    if (sl == NULL) {
        atomic_fetch_add_explicit(&rt->dead_letters, 1, memory_order_relaxed);
        return TR_ENOACTOR;
    }
    s = rt->s[tr__id_sched(to)];
    /* A plain read first: a sender spinning on a full mailbox must not keep
     * pulling the counter's cache line away from the consumer. */
    if (capped && atomic_load_explicit(&sl->avail, memory_order_relaxed) <= 0)
        goto full;
    old = atomic_fetch_sub_explicit(&sl->avail, 1, memory_order_relaxed);
    if (capped && old <= 0) {
        atomic_fetch_add_explicit(&sl->avail, 1, memory_order_relaxed);
        goto full;
    }
    m->to = to;
    if (s == tr__tl_sched || rt->det) {
        a = sl->ptr;
        if (a == NULL || s->via_inbox != 0 || (m->flags & TR__MSGF_VIA)) {
            /* Its spawn is still in the inbox: queue behind it, and keep
             * later local sends behind this one until the inbox drains. */
            m->flags |= TR__MSGF_VIA;
            s->via_inbox++;
            tr__post(s, m);
            return TR_OK;
        }
        tr__mailbox_push(s, a, m);
        return TR_OK;
    }
    tr__mpsc_push(&s->inbox, m);
    uv_async_send(&s->wake);
    return TR_OK;
full:
    atomic_fetch_add_explicit(&rt->full_rejects, 1, memory_order_relaxed);
    return TR_EFULL;
}

static void took(struct tr_ctx *ctx, struct tr_msg *m)
{
    if (m == ctx->cur)
        ctx->taken = 1;
}

int tr_send(struct tr_ctx *ctx, tr_actor_id to, struct tr_msg *msg)
{
    int rv;

    if (msg == NULL)
        return TR_EINVAL;
    msg->from = ctx->a->id;
    msg->corr = 0;
    msg->flags = 0;
    rv = tr__send(ctx->s->rt, to, msg, 1);
    if (rv == TR_OK)
        took(ctx, msg);
    return rv;
}

int tr_rt_send(struct tr_rt *rt, tr_actor_id to, struct tr_msg *msg)
{
    int g, rv;

    if (msg == NULL)
        return TR_EINVAL;
    if ((g = guard_enter(rt)) < 0)
        return TR_ECLOSED;
    msg->from = 0;
    msg->corr = 0;
    msg->flags = 0;
    rv = tr__send(rt, to, msg, 1);
    guard_exit(rt, g);
    return rv;
}

int tr_tell(struct tr_ctx *ctx, tr_actor_id to, uint32_t type, const void *data, uint32_t len)
{
    struct tr_msg *m = tr_msg_make(type, data, len);
    int rv = tr_send(ctx, to, m);

    if (rv != TR_OK)
        tr_msg_free(m);
    return rv;
}

int tr_tell_self_behind(struct tr_ctx *ctx, uint32_t type, const void *data, uint32_t len)
{
    struct tr_msg *m = tr_msg_make(type, data, len);
    int rv;

    /* VIA asks tr__send for the inbox path; a send to oneself is always
     * local, which that path (and the via_inbox count) requires. */
    m->from = ctx->a->id;
    m->corr = 0;
    m->flags = TR__MSGF_VIA;
    rv = tr__send(ctx->s->rt, ctx->a->id, m, 1);
    if (rv != TR_OK)
        tr_msg_free(m);
    return rv;
}

int tr__deliver_system(struct tr_rt *rt, tr_actor_id to, struct tr_msg *msg)
{
    int g, rv;

    if ((g = guard_enter(rt)) < 0) {
        rv = TR_ECLOSED;
        goto err;
    }
    rv = tr__send(rt, to, msg, 0);
    guard_exit(rt, g);
    if (rv == TR_OK)
        return TR_OK;
err:
    if (rv == TR_ECLOSED)
        atomic_fetch_add_explicit(&rt->dead_letters, 1, memory_order_relaxed);
    tr_msg_free(msg);
    return rv;
}

int tr_request(struct tr_ctx *ctx, tr_actor_id to, struct tr_msg *msg, uint32_t timeout_ms,
               uint64_t *corr_out)
{
    struct tr_sched *s = ctx->s;
    struct tr_actor *a = ctx->a;
    uint64_t corr;
    int rv;

    if (msg == NULL)
        return TR_EINVAL;
    corr = tr__next_id(s, timeout_ms != 0);
    msg->from = a->id;
    msg->corr = corr;
    msg->flags = TR_MSGF_REQUEST;
    rv = tr__send(s->rt, to, msg, 1);
    if (rv != TR_OK)
        return rv;
    took(ctx, msg);
    /* The reply is handled on this thread after this callback, so adding the
     * timeout after the send cannot miss it. */
    if (timeout_ms != 0) {
        tr__timer_add(s, corr, tr__now(s) + timeout_ms, a->id, a->incarnation, NULL);
        tr__timers_rearm(s);
    }
    if (corr_out)
        *corr_out = corr;
    return TR_OK;
}

int tr_reply(struct tr_ctx *ctx, const struct tr_msg *req, struct tr_msg *reply)
{
    tr_actor_id to;
    uint64_t corr;
    int rv;

    if (req == NULL || reply == NULL || !(req->flags & TR_MSGF_REQUEST) || req->from == 0)
        return TR_EINVAL;
    to = req->from;
    corr = req->corr;
    reply->from = ctx->a->id;
    reply->corr = corr;
    reply->flags = TR_MSGF_REPLY;
    rv = tr__send(ctx->s->rt, to, reply, 1);
    if (rv == TR_OK)
        took(ctx, reply);
    return rv;
}

/* ---- control ------------------------------------------------------------ */

static struct tr_sched *pick_sched(struct tr_rt *rt, int sched)
{
    if (rt->det)
        return sched >= 1 ? NULL : rt->s[0];
    if (sched == TR_SCHED_SELF) {
        if (tr__tl_sched != NULL && tr__tl_sched->rt == rt)
            return tr__tl_sched;
        sched = TR_SCHED_ANY;
    }
    if (sched == TR_SCHED_ANY)
        return rt->s[atomic_fetch_add_explicit(&rt->rr, 1, memory_order_relaxed) % (uint32_t)rt->n];
    if (sched < 0 || sched >= rt->n)
        return NULL;
    return rt->s[sched];
}

int tr_spawn(struct tr_rt *rt, const struct tr_spawn_opts *opts, tr_actor_id *id_out)
{
    struct tr_sched *s;
    struct tr_actor *a;
    struct tr_msg *m;
    int g, rv = TR_OK;

    if (opts == NULL || opts->behavior == NULL || opts->behavior->receive == NULL ||
        opts->restart > TR_RESTART_ON_FAILURE)
        return TR_EINVAL;
    if ((g = guard_enter(rt)) < 0)
        return TR_ECLOSED;
    if (atomic_load_explicit(&rt->closing, memory_order_relaxed)) {
        rv = TR_ECLOSED;
        goto out;
    }
    if ((s = pick_sched(rt, opts->sched)) == NULL) {
        rv = TR_EINVAL;
        goto out;
    }
    if ((a = tr__actor_new(rt, s, opts, 0)) == NULL) {
        rv = TR_ELIMIT;
        goto out;
    }
    if (id_out)
        *id_out = a->id;
    if (s == tr__tl_sched || rt->det) {
        tr__attach(s, a);
    } else {
        m = tr_msg_make(CTRL_SPAWN, &a, sizeof a);
        m->flags = TR__MSGF_CTRL;
        m->to = a->id;
        tr__post(s, m);
    }
out:
    guard_exit(rt, g);
    return rv;
}

int tr_rt_stop_actor(struct tr_rt *rt, tr_actor_id id)
{
    struct tr_msg *m;
    int g, rv = TR_OK;

    if ((g = guard_enter(rt)) < 0)
        return TR_ECLOSED;
    if (atomic_load_explicit(&rt->closing, memory_order_relaxed)) {
        rv = TR_ECLOSED;
        goto out;
    }
    if (tr__slot_of(rt, id) == NULL || (tr__id_slot(id) == 0)) { /* slot 0: system actor */
        rv = TR_ENOACTOR;
        goto out;
    }
    m = tr_msg_new(CTRL_STOP, 0);
    m->flags = TR__MSGF_CTRL;
    m->to = id;
    tr__post(rt->s[tr__id_sched(id)], m);
out:
    guard_exit(rt, g);
    return rv;
}

int tr_stop(struct tr_ctx *ctx, tr_actor_id id)
{
    if (id == ctx->a->id) {
        if (ctx->a->flags & F_SYSTEM)
            return TR_EINVAL;
        ctx->a->flags |= F_STOP_REQ;
        return TR_OK;
    }
    return tr_rt_stop_actor(ctx->s->rt, id);
}

int tr_rt_call(struct tr_rt *rt, int sched, tr_call_fn fn, void (*dropped)(void *arg), void *arg)
{
    struct tr__call call = { fn, dropped, arg };
    struct tr_sched *s;
    struct tr_msg *m;
    int g, rv;

    if (fn == NULL)
        return TR_EINVAL;
    if ((g = guard_enter(rt)) < 0)
        return TR_ECLOSED;
    if ((s = pick_sched(rt, sched)) == NULL) {
        rv = TR_EINVAL;
        goto out;
    }
    m = tr_msg_make(TR_MSG_CALL, &call, sizeof call);
    m->flags = TR__MSGF_CALL;
    rv = tr__send(rt, s->sys_id, m, 0);
    if (rv != TR_OK)
        tr_msg_free(m);
out:
    guard_exit(rt, g);
    return rv;
}
