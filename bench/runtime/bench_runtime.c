/* Runtime benchmark: message throughput on one scheduler and across two,
 * spawn cost, memory per idle actor, and a million live actors.
 *
 * Figures are printed as "bench: <name> <N> <unit>" lines (see run). Every
 * figure is measured, never assumed: throughput is the runtime's own
 * delivered counter over a timed window; spawn time includes init running;
 * idle bytes is the RSS growth over 1,000,000 spawned actors; live actors
 * is the number of distinct actors that answered a message. */
#include <malloc.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime/runtime.h"

enum { M_BALL = TR_MSG_USER, M_GO, M_ACK };

static double now_s(void)
{
    return (double)uv_hrtime() / 1e9;
}

static long rss_bytes(void)
{
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");

    if (f == NULL)
        return 0;
    if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
        resident = 0;
    fclose(f);
    return resident * sysconf(_SC_PAGESIZE);
}

static struct tr_rt *rt_new(int n)
{
    struct tr_rt_opts o = { .schedulers = n };
    struct tr_rt *rt;

    if (tr_rt_new(&o, &rt) != TR_OK || tr_rt_start(rt) != TR_OK) {
        fprintf(stderr, "bench: runtime start failed\n");
        exit(1);
    }
    return rt;
}

static void wait_until(_Atomic uint64_t *v, uint64_t target)
{
    while (atomic_load(v) < target)
        uv_sleep(1);
}

/* ---- ping-pong throughput ------------------------------------------------ */

/* state: partner id. Each ball is passed back and forth, never reallocated. */
static int ball_init(struct tr_ctx *ctx, void *state, void *arg)
{
    return 0;
}

static int ball_rx(struct tr_ctx *ctx, void *state, struct tr_msg *m)
{
    tr_actor_id partner = *(tr_actor_id *)state;

    if (m->type == M_GO) { /* learn the partner, then serve */
        memcpy(state, m->data, sizeof partner);
        return 0;
    }
    return tr_send(ctx, partner ? partner : m->from, m);
}

static const struct tr_behavior ball_beh = { "ball", sizeof(tr_actor_id), ball_init, ball_rx, NULL };

/* The same but each hop allocates a fresh message and frees the old one. */
static int ball_alloc_rx(struct tr_ctx *ctx, void *state, struct tr_msg *m)
{
    tr_actor_id partner = *(tr_actor_id *)state;

    if (m->type == M_GO) {
        memcpy(state, m->data, sizeof partner);
        return 0;
    }
    return tr_tell(ctx, partner, M_BALL, m->data, m->len);
}

static const struct tr_behavior ball_alloc_beh = { "ball_alloc", sizeof(tr_actor_id), ball_init,
                                                   ball_alloc_rx, NULL };

/* pairs of actors a on sched sa, b on sched sb; `balls` messages per pair. */
static double pingpong(int nsched, int sa, int sb, int pairs, int balls, double secs,
                       const struct tr_behavior *beh)
{
    struct tr_rt *rt = rt_new(nsched);
    struct tr_rt_stats st0, st1;
    tr_actor_id *a = calloc((size_t)pairs, sizeof *a), *b = calloc((size_t)pairs, sizeof *b);
    double t0, t1;

    for (int i = 0; i < pairs; i++) {
        struct tr_spawn_opts oa = { .behavior = beh, .sched = sa };
        struct tr_spawn_opts ob = { .behavior = beh, .sched = sb };
        tr_spawn(rt, &oa, &a[i]);
        tr_spawn(rt, &ob, &b[i]);
        tr_rt_send(rt, a[i], tr_msg_make(M_GO, &b[i], sizeof b[i]));
        tr_rt_send(rt, b[i], tr_msg_make(M_GO, &a[i], sizeof a[i]));
    }
    for (int i = 0; i < pairs; i++)
        for (int k = 0; k < balls; k++)
            if (tr_rt_send(rt, a[i], tr_msg_new(M_BALL, 16)) != TR_OK)
                abort();
    uv_sleep(200); /* warm up */
    tr_rt_stats(rt, &st0);
    t0 = now_s();
    uv_sleep((unsigned)(secs * 1000));
    tr_rt_stats(rt, &st1);
    t1 = now_s();
    tr_rt_shutdown(rt);
    free(a);
    free(b);
    return (double)(st1.delivered - st0.delivered) / (t1 - t0);
}

/* ---- one-way producer -> consumer across schedulers -------------------- */

/* Producer: on each M_GO sends up to 256 fresh messages to its consumer
 * (stopping at TR_EFULL), then passes M_GO back to itself to go on after
 * others had their turn. Consumer: lets the runtime free what it gets. */
static int prod_rx(struct tr_ctx *ctx, void *state, struct tr_msg *m)
{
    tr_actor_id to = *(tr_actor_id *)state;

    if (m->type == M_BALL) {
        memcpy(state, m->data, sizeof to);
        return 0;
    }
    for (int k = 0; k < 256; k++) {
        struct tr_msg *d = tr_msg_new(M_ACK, 16);
        if (tr_send(ctx, to, d) != TR_OK) {
            tr_msg_free(d);
            break;
        }
    }
    return tr_send(ctx, tr_self(ctx), m);
}

static _Atomic uint64_t consumed; /* written by scheduler 1 only */

static int cons_rx(struct tr_ctx *ctx, void *state, struct tr_msg *m)
{
    atomic_store_explicit(&consumed, atomic_load_explicit(&consumed, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    return 0;
}

static const struct tr_behavior prod_beh = { "producer", sizeof(tr_actor_id), NULL, prod_rx, NULL };
static const struct tr_behavior cons_beh = { "consumer", 0, NULL, cons_rx, NULL };

static double oneway(int pairs, double secs)
{
    struct tr_rt *rt = rt_new(2);
    uint64_t c0, c1;
    double t0, t1;

    for (int i = 0; i < pairs; i++) {
        struct tr_spawn_opts op = { .behavior = &prod_beh, .sched = 0 };
        struct tr_spawn_opts oc = { .behavior = &cons_beh, .sched = 1 };
        tr_actor_id p, c;
        tr_spawn(rt, &op, &p);
        tr_spawn(rt, &oc, &c);
        tr_rt_send(rt, p, tr_msg_make(M_BALL, &c, sizeof c));
        tr_rt_send(rt, p, tr_msg_new(M_GO, 0));
    }
    uv_sleep(200);
    c0 = atomic_load(&consumed);
    t0 = now_s();
    uv_sleep((unsigned)(secs * 1000));
    c1 = atomic_load(&consumed);
    t1 = now_s();
    tr_rt_shutdown(rt);
    return (double)(c1 - c0) / (t1 - t0); /* consumer deliveries only */
}

/* ---- spawn --------------------------------------------------------------- */

static _Atomic uint64_t inits;
static _Atomic uint64_t acks;
static uint64_t spawn_target;
static uint64_t spawn_t_end;

static int idle_init(struct tr_ctx *ctx, void *state, void *arg)
{
    if (atomic_fetch_add_explicit(&inits, 1, memory_order_relaxed) + 1 == spawn_target)
        spawn_t_end = uv_hrtime();
    return 0;
}

static int idle_rx(struct tr_ctx *ctx, void *state, struct tr_msg *m)
{
    return tr_send(ctx, m->from, m); /* answer with the same message */
}

/* 16 bytes of state: what a small real actor keeps (a pointer and a counter). */
static const struct tr_behavior idle_beh = { "idle", 16, idle_init, idle_rx, NULL };

struct spawn_job {
    uint64_t n;
    uint64_t t0;
    tr_actor_id *out;
};

static void spawn_fn(struct tr_ctx *ctx, void *arg)
{
    struct spawn_job *j = arg;
    struct tr_spawn_opts o = { .behavior = &idle_beh, .sched = TR_SCHED_SELF };

    j->t0 = uv_hrtime();
    for (uint64_t i = 0; i < j->n; i++)
        if (tr_spawn(tr_ctx_rt(ctx), &o, j->out ? &j->out[i] : NULL) != TR_OK)
            abort();
}

static double spawn_ns(uint64_t n)
{
    struct tr_rt *rt = rt_new(1);
    struct spawn_job j = { n, 0, NULL };

    atomic_store(&inits, 0);
    spawn_target = n;
    tr_rt_call(rt, 0, spawn_fn, NULL, &j);
    wait_until(&inits, n);
    tr_rt_shutdown(rt);
    return (double)(spawn_t_end - j.t0) / (double)n;
}

/* ---- a million idle actors, then a message to each ---------------------- */

struct collector {
    tr_actor_id *ids;
    uint64_t n, next;
    uint64_t got;
};

static int coll_init(struct tr_ctx *ctx, void *state, void *arg)
{
    memcpy(state, arg, sizeof(struct collector));
    return 0;
}

static int coll_rx(struct tr_ctx *ctx, void *state, struct tr_msg *m)
{
    struct collector *c = state;

    if (m->type == M_GO) { /* send the next 4096, then queue the rest behind others */
        for (uint64_t k = 0; k < 4096 && c->next < c->n; k++, c->next++)
            if (tr_tell(ctx, c->ids[c->next], M_BALL, NULL, 0) != TR_OK)
                abort();
        if (c->next < c->n)
            return tr_send(ctx, tr_self(ctx), m);
        return 0;
    }
    c->got++;
    atomic_fetch_add_explicit(&acks, 1, memory_order_relaxed);
    return 0;
}

static const struct tr_behavior coll_beh = { "collector", sizeof(struct collector), coll_init, coll_rx,
                                             NULL };

static void million(uint64_t n, double *bytes_per_actor, uint64_t *live)
{
    int nsched = 2;
    struct tr_rt *rt = rt_new(nsched);
    struct tr_rt_stats st;
    tr_actor_id *ids = malloc(n * sizeof *ids);
    struct spawn_job jobs[2];
    struct mallinfo2 mi0, mi1;
    long rss0, rss1;
    uint64_t per = n / (uint64_t)nsched;
    struct collector c;
    struct tr_spawn_opts co = { .behavior = &coll_beh, .sched = 0, .arg = &c, .mailbox_cap = 1u << 22 };
    tr_actor_id cid;

    memset(ids, 0, n * sizeof *ids); /* touch it now so it is not counted */
    atomic_store(&inits, 0);
    spawn_target = 0;
    uv_sleep(50);
    malloc_trim(0);
    rss0 = rss_bytes();
    mi0 = mallinfo2();
    for (int s = 0; s < nsched; s++) {
        jobs[s] = (struct spawn_job){ s == nsched - 1 ? n - per * (uint64_t)s : per, 0, ids + per * (uint64_t)s };
        tr_rt_call(rt, s, spawn_fn, NULL, &jobs[s]);
    }
    wait_until(&inits, n);
    uv_sleep(50);
    rss1 = rss_bytes();
    mi1 = mallinfo2();
    tr_rt_stats(rt, &st);
    *bytes_per_actor = (double)(rss1 - rss0) / (double)n;
    printf("  %llu idle actors: RSS +%.1f MiB (%.1f B/actor), malloc in use +%.1f MiB (%.1f B/actor); stats.actors=%llu\n",
           (unsigned long long)n, (double)(rss1 - rss0) / 1048576.0, *bytes_per_actor,
           (double)(mi1.uordblks - mi0.uordblks) / 1048576.0,
           (double)(mi1.uordblks - mi0.uordblks) / (double)n, (unsigned long long)st.actors);

    /* Each actor gets one message and answers it. */
    memset(&c, 0, sizeof c);
    c.ids = ids;
    c.n = n;
    atomic_store(&acks, 0);
    tr_spawn(rt, &co, &cid);
    tr_rt_send(rt, cid, tr_msg_new(M_GO, 0));
    double t0 = now_s();
    wait_until(&acks, n);
    printf("  %llu messages out and answered in %.2f s\n", (unsigned long long)n, now_s() - t0);
    tr_rt_stats(rt, &st);
    *live = atomic_load(&acks) == n && st.actors == n + 1 ? n : 0;
    tr_rt_shutdown(rt);
    free(ids);
}

int main(int argc, char **argv)
{
    double secs = argc > 1 ? atof(argv[1]) : 2.0;
    double local, local_alloc, cross, cross_alloc, sp, idle_bytes;
    uint64_t live;

    tr_log_set_level(TR_LOG_WARN);
    printf("runtime bench on %ld cores (shared); window %.1f s per throughput figure\n",
           sysconf(_SC_NPROCESSORS_ONLN), secs);
    local = pingpong(1, 0, 0, 500, 32, secs, &ball_beh);
    local_alloc = pingpong(1, 0, 0, 500, 32, secs, &ball_alloc_beh);
    printf("  local: 500 pairs x 32 balls on 1 scheduler: %.0f msgs/s (message reused), %.0f msgs/s (alloc+free per hop)\n",
           local, local_alloc);
    cross = pingpong(2, 0, 1, 500, 32, secs, &ball_beh);
    cross_alloc = pingpong(2, 0, 1, 500, 32, secs, &ball_alloc_beh);
    printf("  cross: 500 pairs x 32 balls between 2 schedulers, every hop crosses: %.0f msgs/s (reused), %.0f msgs/s (alloc+free)\n",
           cross, cross_alloc);
    printf("  cross one-way: 16 producers on scheduler 0 -> 16 consumers on scheduler 1, fresh message per send: %.0f msgs/s consumed\n",
           oneway(16, secs));
    sp = spawn_ns(1000000);
    printf("  spawn: 1,000,000 tr_spawn from an actor on its own scheduler, until the last init ran\n");
    million(1000000, &idle_bytes, &live);

    printf("bench: runtime.msgs_per_s.local %.0f msgs/s\n", local);
    printf("bench: runtime.msgs_per_s.cross %.0f msgs/s\n", cross);
    printf("bench: runtime.spawn_ns %.0f ns\n", sp);
    printf("bench: runtime.idle_actor_bytes %.0f bytes\n", idle_bytes);
    printf("bench: runtime.live_actors %llu actors\n", (unsigned long long)live);
    return 0;
}
