/* The runtime object: creation, threads, shutdown, statistics, the system
 * actor behind tr_rt_call, and the deterministic driver. */
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "core.h"

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* The system actor: runs tr_rt_call functions; ignores everything else. */
static int sys_receive(struct tr_ctx *ctx, void *state, struct tr_msg *msg)
{
    struct tr__call call;

    if (msg->type == TR_MSG_CALL && (msg->flags & TR__MSGF_CALL)) {
        memcpy(&call, msg->data, sizeof call);
        call.fn(ctx, call.arg);
    }
    return 0;
}

static const struct tr_behavior sys_behavior = {
    .name = "system",
    .receive = sys_receive,
};

static struct tr_sched *sched_new(struct tr_rt *rt, int index, uint64_t *seed)
{
    struct tr_sched *s = tr_calloc(1, sizeof *s);

    s->rt = rt;
    s->index = index;
    s->armed = UINT64_MAX;
    s->ctx.s = s;
    tr__mpsc_init(&s->inbox, tr_msg_new(TR_MSG_NONE, 0));
    if (uv_mutex_init(&s->slot_mu) != 0) {
        tr_log(TR_LOG_ERROR, "runtime: mutex init failed");
        abort();
    }
    for (int i = 0; i < 4; i++)
        s->rng[i] = splitmix64(seed);
    return s;
}

int tr_rt_new(const struct tr_rt_opts *opts, struct tr_rt **out)
{
    struct tr_rt_opts o;
    struct tr_rt *rt;
    uint64_t seed;
    int n, rv;

    memset(&o, 0, sizeof o);
    if (opts)
        o = *opts;
    if (o.deterministic)
        n = 1;
    else if (o.schedulers > 0)
        n = o.schedulers;
    else
        n = (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1)
        n = 1;
    if (n > TR__SCHED_MAX)
        return TR_EINVAL;
    rt = tr_calloc(1, sizeof *rt + (size_t)n * sizeof rt->s[0]);
    rt->n = n;
    rt->det = o.deterministic != 0;
    rt->budget = o.turn_budget ? o.turn_budget : 64;
    rt->cap = o.mailbox_cap ? o.mailbox_cap : 4096;
    rt->start_wall_us = o.start_wall_us;
    seed = o.seed;
    if (seed == 0 && !rt->det)
        seed = uv_hrtime() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)rt;
    for (int i = 0; i < n; i++) {
        rt->s[i] = sched_new(rt, i, &seed);
        if (!rt->det && (rv = tr__sched_open(rt->s[i])) != 0) {
            tr_log(TR_LOG_ERROR, "runtime: loop init: %s", uv_strerror(rv));
            for (int j = 0; j <= i; j++) {
                if (j < i) {
                    tr__sched_teardown(rt->s[j]);
                    tr__sched_loop_finish(rt->s[j]);
                }
                tr__sched_free(rt->s[j]);
            }
            tr_free(rt);
            return TR_ESYS;
        }
    }
    for (int i = 0; i < n; i++) {
        struct tr_spawn_opts so = { .behavior = &sys_behavior, .sched = i, .mailbox_cap = 1 };
        struct tr_actor *a = tr__actor_new(rt, rt->s[i], &so, F_SYSTEM);
        rt->s[i]->sys_id = a->id;
        tr__attach(rt->s[i], a);
    }
    *out = rt;
    return TR_OK;
}

static void sched_main(void *arg)
{
    struct tr_sched *s = arg;

    tr__tl_sched = s;
    tr__sched_loop_finish(s);
    tr__tl_sched = NULL;
}

int tr_rt_start(struct tr_rt *rt)
{
    int rv;

    if (rt->det || rt->started)
        return rt->det ? TR_OK : TR_EINVAL;
    if (uv_barrier_init(&rt->barrier, (unsigned)rt->n) != 0)
        return TR_ESYS;
    for (int i = 0; i < rt->n; i++) {
        rv = uv_thread_create(&rt->s[i]->thread, sched_main, rt->s[i]);
        if (rv != 0) {
            /* Cannot unwind half-started schedulers safely: treat as fatal. */
            tr_log(TR_LOG_ERROR, "runtime: thread create: %s", uv_strerror(rv));
            abort();
        }
    }
    rt->started = 1;
    return TR_OK;
}

void tr_rt_shutdown(struct tr_rt *rt)
{
    if (rt == NULL)
        return;
    if (tr__tl_sched != NULL && tr__tl_sched->rt == rt && !rt->det) {
        tr_log(TR_LOG_ERROR, "runtime: tr_rt_shutdown called on scheduler %d's own thread",
               tr__tl_sched->index);
        abort();
    }
    atomic_store(&rt->closing, 1);
    while (atomic_load(&rt->foreign) != 0)
        uv_sleep(0);
    if (rt->started) {
        for (int i = 0; i < rt->n; i++)
            uv_async_send(&rt->s[i]->wake);
        for (int i = 0; i < rt->n; i++)
            uv_thread_join(&rt->s[i]->thread);
        uv_barrier_destroy(&rt->barrier);
    } else {
        for (int i = 0; i < rt->n; i++) {
            struct tr_sched *s = rt->s[i];
            tr__tl_sched = s;
            tr__sched_teardown(s);
            if (!rt->det)
                tr__sched_loop_finish(s);
            tr__tl_sched = NULL;
        }
    }
    for (int i = 0; i < rt->n; i++)
        tr__sched_free(rt->s[i]);
    tr_free(rt);
}

int tr_rt_schedulers(struct tr_rt *rt)
{
    return rt->n;
}

void tr_rt_stats(struct tr_rt *rt, struct tr_rt_stats *out)
{
    int64_t live = 0, passive = 0;

    memset(out, 0, sizeof *out);
    for (int i = 0; i < rt->n; i++) {
        struct tr_sched_stats *st = &rt->s[i]->st;
        live += atomic_load_explicit(&st->live, memory_order_relaxed);
        passive += atomic_load_explicit(&st->passivated, memory_order_relaxed);
        out->delivered += atomic_load_explicit(&st->delivered, memory_order_relaxed);
        out->restarts += atomic_load_explicit(&st->restarts, memory_order_relaxed);
        out->failures += atomic_load_explicit(&st->failures, memory_order_relaxed);
    }
    out->actors = live > 0 ? (uint64_t)live : 0;
    out->passivated = passive > 0 ? (uint64_t)passive : 0;
    out->dead_letters = atomic_load_explicit(&rt->dead_letters, memory_order_relaxed);
    out->full_rejects = atomic_load_explicit(&rt->full_rejects, memory_order_relaxed);
}

int tr_rt_on_shutdown(struct tr_ctx *ctx, void (*fn)(void *arg), void *arg)
{
    struct tr_sched *s = ctx->s;

    if (fn == NULL)
        return TR_EINVAL;
    if (s->closing)
        return TR_ECLOSED;
    if (s->nhooks == s->hooks_cap) {
        s->hooks_cap = s->hooks_cap ? s->hooks_cap * 2 : 8;
        s->hooks = tr_realloc(s->hooks, s->hooks_cap * sizeof *s->hooks);
    }
    s->hooks[s->nhooks].fn = fn;
    s->hooks[s->nhooks].arg = arg;
    s->nhooks++;
    return TR_OK;
}

/* ---- context accessors -------------------------------------------------- */

uv_loop_t *tr_ctx_loop(struct tr_ctx *ctx)
{
    return ctx->s->rt->det ? NULL : &ctx->s->loop;
}

uint64_t tr_now_ms(struct tr_ctx *ctx)
{
    return tr__now(ctx->s);
}

uint64_t tr_wall_us(struct tr_ctx *ctx)
{
    struct timespec ts;

    if (ctx->s->rt->det)
        return ctx->s->rt->start_wall_us + ctx->s->rt->vnow * 1000u;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

uint64_t tr_random(struct tr_ctx *ctx)
{
    return tr__rand(ctx->s);
}

void **tr__ext_slot(struct tr_ctx *ctx, enum tr_ext which)
{
    return &ctx->s->ext[which];
}

int tr__deterministic(struct tr_ctx *ctx)
{
    return ctx->s->rt->det;
}

/* ---- deterministic driver ----------------------------------------------- */

/* Give one randomly chosen ready actor a turn of one message. Returns 1 if
 * there was work; *delivered counts messages handed to receive. */
static int det_step(struct tr_rt *rt, uint64_t *delivered)
{
    struct tr_sched *s = rt->s[0];
    struct tr_actor *a, *prev;
    uint64_t k;

    tr__drain_inbox(s, SIZE_MAX);
    for (;;) {
        if (s->rq_head == NULL)
            return 0;
        k = tr__rand(s) % s->rq_len;
        for (prev = NULL, a = s->rq_head; k > 0; k--) {
            prev = a;
            a = a->rq_next;
        }
        if (prev)
            prev->rq_next = a->rq_next;
        else
            s->rq_head = a->rq_next;
        if (s->rq_tail == a)
            s->rq_tail = prev;
        s->rq_len--;
        a->flags &= ~F_INRQ;
        if (!(a->flags & F_DEAD))
            break;
        tr__actor_free_mem(s, a);
    }
    tr__run_turn(s, a, 1, delivered);
    return 1;
}

static int det_enter(struct tr_rt *rt, struct tr_sched **saved)
{
    if (!rt->det || atomic_load(&rt->closing))
        return 0;
    *saved = tr__tl_sched;
    tr__tl_sched = rt->s[0];
    return 1;
}

int tr_rt_step(struct tr_rt *rt)
{
    struct tr_sched *saved;
    uint64_t delivered = 0;
    int rv;

    if (!det_enter(rt, &saved))
        return 0;
    rv = det_step(rt, &delivered);
    tr__stat_inc(&rt->s[0]->st.delivered, delivered);
    tr__tl_sched = saved;
    return rv;
}

uint64_t tr_rt_run_until_idle(struct tr_rt *rt, uint64_t max_steps)
{
    struct tr_sched *saved;
    uint64_t delivered = 0;

    if (!det_enter(rt, &saved))
        return 0;
    while ((max_steps == 0 || delivered < max_steps) && det_step(rt, &delivered))
        ;
    tr__stat_inc(&rt->s[0]->st.delivered, delivered);
    tr__tl_sched = saved;
    return delivered;
}

void tr_rt_advance(struct tr_rt *rt, uint64_t ms)
{
    struct tr_sched *saved;
    struct tr_sched *s = rt->s[0];
    uint64_t target;

    if (!det_enter(rt, &saved))
        return;
    target = rt->vnow + ms;
    while (s->nheap > 0 && s->heap[0]->deadline <= target) {
        if (s->heap[0]->deadline > rt->vnow)
            rt->vnow = s->heap[0]->deadline;
        tr__timers_fire(s, rt->vnow);
    }
    rt->vnow = target;
    tr__tl_sched = saved;
}

uint64_t tr_rt_now_ms(struct tr_rt *rt)
{
    if (rt->det)
        return rt->vnow;
    return uv_hrtime() / 1000000u;
}
