/* bench_journal: durable journal events per second through the real path —
 * appender actors on every scheduler -> the state service's group commit ->
 * canonical raft (its log fsynced on every write) -> the FSM -> RocksDB ->
 * the verdict back to the appender.
 *
 *   bench_journal DIR [runs] [window] [seconds]
 *
 * `runs` appenders (default 256), each keeping `window` appends in flight
 * (default 16), for `seconds` (default 3) after a 1 s warm-up. Each event is
 * an llm.completed of about 300 bytes. Prints `bench:` lines and the append
 * round-trip percentiles. For experiments: BJ_INFLIGHT=N sets the state
 * service's raft entries in flight, BJ_SNAP=N its snapshot threshold. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_support.h"
#include "harness.h"
#include "raft/raft.h"
#include "runtime/runtime.h"
#include "schemas/command_generated.h"
#include "schemas/journal_generated.h"

enum { MSG_GO = TR_MSG_USER + 1 };

static struct tr_rt *rt;
static struct tr_state *state;
static atomic_uint_fast64_t ok_appends, bad_appends;
static atomic_int stop_flag;
static atomic_int created;
static uint32_t window = 16;

struct appender {
    uint64_t run_id;
    uint64_t next_seq;     /* next seq to send */
    uint32_t inflight;
    uint64_t sent_us[64];  /* send time by seq % 64 (window <= 64) */
    uint64_t acked_seq;
    struct tr_fb_builder b;
};

/* Round-trip latencies (µs) of appends, sampled while measuring. */
#define LAT_MAX 2000000
static uint32_t *lat;
static atomic_uint_fast64_t n_lat;
static atomic_int measuring;

static int send_append(struct tr_ctx *ctx, struct appender *a)
{
    struct tr_msg *m = bench_append_msg(&a->b, a->run_id, a->next_seq);
    uint64_t corr;
    int rv = tr_request(ctx, tr_state_actor(state), m, 30000, &corr);
    if (rv != TR_OK) {
        tr_msg_free(m);
        return rv;
    }
    a->sent_us[a->next_seq % 64] = tr_wall_us(ctx);
    a->next_seq++;
    a->inflight++;
    return TR_OK;
}

static void create_run(struct tr_ctx *ctx, struct appender *a)
{
    struct tr_fb_builder *b = &a->b;
    char text[TR_RUN_ID_TEXT_LEN];
    tr_fb_builder_reset(b);
    tr_run_id_text(a->run_id, text);
    tr_fb_ref rid = tr_fb_create_str(b, text);
    tr_fb_ref tenant = tr_fb_create_str(b, "bench");
    tr_fb_ref goal = tr_fb_create_str(b, "benchmark the journal");
    troupe_cmd_RunCreate_start(b);
    troupe_cmd_RunCreate_add_run_id(b, rid);
    troupe_cmd_RunCreate_add_tenant(b, tenant);
    troupe_cmd_RunCreate_add_goal(b, goal);
    troupe_cmd_RunCreate_add_owner_node(b, 1);
    troupe_cmd_RunCreate_add_epoch(b, 1);
    tr_fb_ref op = troupe_cmd_RunCreate_end(b);
    troupe_cmd_Command_start(b);
    troupe_cmd_Command_add_time_us(b, (int64_t)tr_wall_us(ctx));
    troupe_cmd_Command_add_op_type(b, troupe_cmd_Op_RunCreate);
    troupe_cmd_Command_add_op(b, op);
    troupe_cmd_Command_finish(b, troupe_cmd_Command_end(b));
    size_t len;
    const uint8_t *data = tr_fb_builder_data(b, &len);
    uint64_t corr;
    struct tr_msg *m = tr_msg_make(TR_MSG_STATE_PROPOSE, data, (uint32_t)len);
    if (tr_request(ctx, tr_state_actor(state), m, 30000, &corr) != TR_OK)
        tr_msg_free(m);
}

static int appender_init(struct tr_ctx *ctx, void *st, void *arg)
{
    struct appender *a = st;
    a->run_id = (uint64_t)(uintptr_t)arg;
    a->next_seq = 2;
    tr_fb_builder_init(&a->b);
    return 0;
}

static int appender_receive(struct tr_ctx *ctx, void *st, struct tr_msg *msg)
{
    struct appender *a = st;
    if (msg->type == MSG_GO) {
        create_run(ctx, a);
        return 0;
    }
    if (msg->type == TR_MSG_TIMEOUT) {
        atomic_fetch_add(&bad_appends, 1);
        return 0;
    }
    if (msg->type != TR_MSG_STATE_REPLY)
        return 0;
    const struct tr_state_reply *r = (const struct tr_state_reply *)msg->data;
    if (a->next_seq == 2 && a->inflight == 0) {
        /* the RunCreate's reply: start the window */
        atomic_fetch_add(&created, 1);
        for (uint32_t i = 0; i < window; i++)
            send_append(ctx, a);
        return 0;
    }
    a->inflight--;
    if (atomic_load(&measuring) && r->status == TR_OK) {
        uint64_t i = atomic_fetch_add(&n_lat, 1);
        if (i < LAT_MAX)
            lat[i] = (uint32_t)(tr_wall_us(ctx) - a->sent_us[r->seq % 64]);
    }
    if (r->status == TR_OK && r->verdict == TR_FSM_OK)
        atomic_fetch_add(&ok_appends, 1);
    else
        atomic_fetch_add(&bad_appends, 1);
    if (!atomic_load(&stop_flag))
        send_append(ctx, a);
    return 0;
}

static void appender_fini(struct tr_ctx *ctx, void *st, enum tr_stop_reason why)
{
    struct appender *a = st;
    tr_fb_builder_free(&a->b);
}

static const struct tr_behavior appender_behavior = {
    .name = "appender", .state_size = sizeof(struct appender),
    .init = appender_init, .receive = appender_receive, .fini = appender_fini,
};

/* ---- the node ---------------------------------------------------------------------- */

static const char *dir;
static char raft_addr[32];
static atomic_int opened;
static tr_actor_id listener;

static int listener_receive(struct tr_ctx *ctx, void *st, struct tr_msg *msg)
{
    return 0;
}
static const struct tr_behavior listener_behavior = { .name = "listener", .receive = listener_receive };

static void close_hook(void *arg)
{
    tr_state_close(state, NULL, NULL);
}

static void open_cb(struct tr_ctx *ctx, void *arg)
{
    struct tr_err err = { 0 };
    struct tr_state_opts o = { .node_id = 1, .data_dir = dir, .raft_address = raft_addr, .bootstrap = 1,
                               .listener = listener, .snapshot_threshold = getenv("BJ_SNAP") ? (unsigned)atoi(getenv("BJ_SNAP")) : 0,
                               .max_inflight = getenv("BJ_INFLIGHT") ? (uint32_t)atoi(getenv("BJ_INFLIGHT")) : 0 };
    int rv = tr_state_open(ctx, &o, &state, &err);
    if (rv == TR_OK)
        tr_rt_on_shutdown(ctx, close_hook, NULL);
    else
        fprintf(stderr, "bench_journal: %s\n", err.msg);
    atomic_store(&opened, rv == TR_OK ? 1 : -1);
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}


static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench_journal DIR [runs] [window] [seconds]\n");
        return 2;
    }
    dir = argv[1];
    int runs = argc > 2 ? atoi(argv[2]) : 256;
    window = argc > 3 ? (uint32_t)atoi(argv[3]) : 16;
    if (window == 0 || window > 64)
        window = 16;
    double seconds = argc > 4 ? atof(argv[4]) : 3.0;
    snprintf(raft_addr, sizeof raft_addr, "127.0.0.1:%d", h_free_port());

    struct tr_rt_opts ro = { 0 };
    if (tr_rt_new(&ro, &rt) != TR_OK || tr_rt_start(rt) != TR_OK)
        return 1;
    struct tr_spawn_opts lo = { .behavior = &listener_behavior, .sched = TR_SCHED_ANY };
    tr_spawn(rt, &lo, &listener);
    tr_rt_call(rt, 0, open_cb, NULL, NULL);
    while (atomic_load(&opened) == 0)
        uv_sleep(1);
    if (atomic_load(&opened) < 0)
        return 1;
    while (!tr_state_ready(state))
        uv_sleep(1);

    tr_actor_id *ids = calloc((size_t)runs, sizeof *ids);
    for (int i = 0; i < runs; i++) {
        struct tr_spawn_opts so = { .behavior = &appender_behavior, .arg = (void *)(uintptr_t)(1000 + i),
                                    .sched = TR_SCHED_ANY };
        tr_spawn(rt, &so, &ids[i]);
        tr_rt_send(rt, ids[i], tr_msg_new(MSG_GO, 0));
    }
    while (atomic_load(&created) < runs)
        uv_sleep(1);

    uv_sleep(1000); /* warm-up */
    struct tr_state_stats s0, s1;
    tr_state_stats(state, &s0);
    lat = calloc(LAT_MAX, sizeof *lat);
    uint64_t a0 = atomic_load(&ok_appends);
    double t0 = now_s();
    atomic_store(&measuring, 1);
    uv_sleep((unsigned)(seconds * 1000));
    atomic_store(&measuring, 0);
    uint64_t a1 = atomic_load(&ok_appends);
    double t1 = now_s();
    tr_state_stats(state, &s1);
    atomic_store(&stop_flag, 1);

    double rate = (double)(a1 - a0) / (t1 - t0);
    double entries = (double)(s1.entries - s0.entries);
    printf("journal: %d appenders x %u in flight, %.1f s: %llu durable appends, %.0f raft entries "
           "(%.1f appends/entry, largest %llu), %llu refused\n",
           runs, window, t1 - t0, (unsigned long long)(a1 - a0), entries,
           entries > 0 ? (double)(a1 - a0) / entries : 0.0, (unsigned long long)s1.max_batch,
           (unsigned long long)atomic_load(&bad_appends));
    uint64_t nl = atomic_load(&n_lat);
    if (nl > LAT_MAX)
        nl = LAT_MAX;
    qsort(lat, nl, sizeof *lat, cmp_u32);
    if (nl > 0)
        printf("journal: append round trip (send to verdict): p50 %.3f ms, p99 %.3f ms, max %.3f ms\n",
               lat[nl / 2] / 1000.0, lat[(nl * 99) / 100] / 1000.0, lat[nl - 1] / 1000.0);
    printf("bench: run.durable_events_per_s %.0f events/s\n", rate);
    fflush(stdout);
    tr_rt_shutdown(rt);
    free(ids);
    free(lat);
    return atomic_load(&bad_appends) == 0 ? 0 : 1;
}
