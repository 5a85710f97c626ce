/* bench_cluster_journal: durable journal events per second committed by a
 * three-node cluster on loopback, fsync on, with the runs' owners spread over
 * all three nodes.
 *
 *   bench_cluster_journal WORKDIR [runs_per_node] [window] [seconds]
 *
 * runs_per_node: N (default 256) or N1,N2,N3 (e.g. 0,1,0: one follower-owned
 * run); window: appends in flight per run (default 16); seconds: measured
 * time (default 3). For experiments: BCJ_INFLIGHT and BCJ_BATCH set the state
 * service's raft entries in flight and appends per entry on every node;
 * BCJ_SCHED its schedulers (default: the runtime's, one per core);
 * TROUPE_RAFT_COMPRESS=0 / TROUPE_RAFT_PREFILL=0 as for troupe;
 * BCJ_SLOW_MS=N makes each node log every append slower than N ms to its
 * log (when, which) - how the Nagle stalls below were found.
 *
 * What runs. Three node processes (this program again, in node mode), each
 * the real components a troupe node writes its journal with: the runtime,
 * the state service (group commit -> canonical raft with its log fsynced on
 * every write -> the FSM -> RocksDB) and the cluster module (the peer
 * channel: join, pings, forwarding). Node 1 bootstraps, 2 and 3 join it.
 * Each node then creates `runs_per_node` runs it owns (RunCreate with
 * owner_node = itself) and drives them with appender actors, each keeping
 * `window` appends in flight: on the leader they go to raft directly; on a
 * follower the state service batches them per loop turn and the cluster
 * module forwards each batch to the leader, which proposes it as one entry.
 *
 * What is counted. An append counts when its owner got the verdict TR_FSM_OK
 * back, i.e. the entry holding it was committed (written and fsynced by a
 * quorum: the leader and at least one follower) and applied by the leader's
 * FSM. Appends refused or failed are counted apart and make the exit status
 * 1. The rate is the sum over the three nodes of the appends acknowledged
 * between two marks `seconds` apart, after a one-second warm-up, divided by
 * the time between the marks. Each event is an llm.completed of ~300 bytes
 * (as bench/run/bench_journal).
 *
 * Why not troupe processes: a real node only appends what its runs do (a
 * model call per step), and the benchmark is about the journal's ceiling.
 * The durable path it measures is the same code.
 *
 * The parent talks to its nodes by lines: each node's stdout says "up",
 * "ready", "created", "result ..."; the parent's commands on the node's stdin
 * are "create", "start", "mark" (twice) and "exit". A node whose pipe closes
 * exits. Everything the nodes log goes to WORKDIR/nN.log.
 *
 * Also reported, for people: each node's CPU (/proc/PID/stat, and its
 * busiest thread) and the bytes it caused to be written to storage
 * (/proc/PID/io write_bytes) over the measured time.
 *
 * Prints `bench:` lines (cluster.durable_events_per_s, and per-role append
 * round trips as extra lines); the rest is for people. */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "cluster/cluster.h"
#include "bench_support.h"
#include "harness.h"
#include "raft/auth.h"
#include "raft/raft.h"
#include "runtime/runtime.h"
#include "schemas/command_generated.h"
#include "schemas/journal_generated.h"

#define N_NODES 3
#define SECRET_ENV "BENCH_CLUSTER_SECRET"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* ======================================================================================
 * Node mode: one cluster member with its appenders.
 * ==================================================================================== */

enum { MSG_CREATE = TR_MSG_USER + 1, MSG_GO };

static struct tr_rt *rt;
static struct tr_state *state;
static struct tr_cluster *cluster;
static uint64_t self_id;
static uint32_t window = 16;
static atomic_uint_fast64_t ok_appends, bad_appends, bad_creates;
static atomic_int stop_flag, created;

/* Append round trips (µs) while measuring. */
#define LAT_MAX 4000000
static uint32_t *lat;
static atomic_uint_fast64_t n_lat;
static atomic_int measuring;
static uint64_t slow_us;

struct appender {
    uint64_t run_id;
    uint64_t next_seq;
    uint32_t inflight;
    int started;
    uint64_t sent_us[64]; /* by seq % 64; window <= 64 */
    struct tr_fb_builder b;
};

static void send_append(struct tr_ctx *ctx, struct appender *a)
{
    struct tr_msg *m = bench_append_msg(&a->b, a->run_id, a->next_seq);
    uint64_t corr;
    if (tr_request(ctx, tr_state_actor(state), m, 30000, &corr) != TR_OK) {
        tr_msg_free(m);
        atomic_fetch_add(&bad_appends, 1);
        return;
    }
    a->sent_us[a->next_seq % 64] = tr_wall_us(ctx);
    a->next_seq++;
    a->inflight++;
}

/* RunCreate owned by this node (epoch 1); a follower forwards it. */
static void create_run(struct tr_ctx *ctx, struct appender *a)
{
    struct tr_fb_builder *b = &a->b;
    char text[TR_RUN_ID_TEXT_LEN];
    tr_fb_builder_reset(b);
    tr_run_id_text(a->run_id, text);
    tr_fb_ref rid = tr_fb_create_str(b, text);
    tr_fb_ref tenant = tr_fb_create_str(b, "bench");
    tr_fb_ref goal = tr_fb_create_str(b, "benchmark the replicated journal");
    troupe_cmd_RunCreate_start(b);
    troupe_cmd_RunCreate_add_run_id(b, rid);
    troupe_cmd_RunCreate_add_tenant(b, tenant);
    troupe_cmd_RunCreate_add_goal(b, goal);
    troupe_cmd_RunCreate_add_owner_node(b, self_id);
    troupe_cmd_RunCreate_add_epoch(b, 1);
    tr_fb_ref op = troupe_cmd_RunCreate_end(b);
    troupe_cmd_Command_start(b);
    troupe_cmd_Command_add_time_us(b, (int64_t)tr_wall_us(ctx));
    troupe_cmd_Command_add_origin_node(b, self_id);
    troupe_cmd_Command_add_op_type(b, troupe_cmd_Op_RunCreate);
    troupe_cmd_Command_add_op(b, op);
    troupe_cmd_Command_finish(b, troupe_cmd_Command_end(b));
    size_t len;
    const uint8_t *data = tr_fb_builder_data(b, &len);
    uint64_t corr;
    struct tr_msg *m = tr_msg_make(TR_MSG_STATE_PROPOSE, data, (uint32_t)len);
    if (tr_request(ctx, tr_state_actor(state), m, 30000, &corr) != TR_OK) {
        tr_msg_free(m);
        atomic_fetch_add(&bad_creates, 1);
    }
}

static int appender_init(struct tr_ctx *ctx, void *st, void *arg)
{
    struct appender *a = st;
    a->run_id = (uint64_t)(uintptr_t)arg;
    a->next_seq = 2; /* run.created is seq 1 */
    tr_fb_builder_init(&a->b);
    return 0;
}

static int appender_receive(struct tr_ctx *ctx, void *st, struct tr_msg *msg)
{
    struct appender *a = st;
    if (msg->type == MSG_CREATE) {
        create_run(ctx, a);
        return 0;
    }
    if (msg->type == MSG_GO) {
        a->started = 1;
        for (uint32_t i = 0; i < window; i++)
            send_append(ctx, a);
        return 0;
    }
    if (msg->type == TR_MSG_TIMEOUT) {
        if (!a->started)
            atomic_fetch_add(&bad_creates, 1);
        else
            atomic_fetch_add(&bad_appends, 1);
        return 0;
    }
    if (msg->type != TR_MSG_STATE_REPLY)
        return 0;
    const struct tr_state_reply *r = (const struct tr_state_reply *)msg->data;
    if (!a->started) {
        /* the RunCreate's answer */
        if (r->status == TR_OK && r->verdict == TR_FSM_OK)
            atomic_fetch_add(&created, 1);
        else
            atomic_fetch_add(&bad_creates, 1);
        return 0;
    }
    a->inflight--;
    if (atomic_load(&measuring) && r->status == TR_OK) {
        uint64_t now = tr_wall_us(ctx), rtt = now - a->sent_us[r->seq % 64];
        uint64_t i = atomic_fetch_add(&n_lat, 1);
        if (i < LAT_MAX)
            lat[i] = (uint32_t)rtt;
        /* For finding stalls: BCJ_SLOW_MS=N logs every slower append. */
        if (slow_us > 0 && rtt >= slow_us)
            fprintf(stderr, "slow append: run %llu seq %llu sent at %.6f, %.3f ms\n", (unsigned long long)a->run_id,
                    (unsigned long long)r->seq, (double)a->sent_us[r->seq % 64] / 1e6, (double)rtt / 1000.0);
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

/* The state service's listener: notes are not needed here. */
static int listener_receive(struct tr_ctx *ctx, void *st, struct tr_msg *msg)
{
    return 0;
}
static const struct tr_behavior listener_behavior = { .name = "listener", .receive = listener_receive };

struct node_cfg {
    const char *dir, *raft, *peer_host, *join;
    int peer_port;
    unsigned char key[TR_CLUSTER_KEY_LEN];
    tr_actor_id listener;
    atomic_int done; /* 1 ok, -1 failed */
    struct tr_err err;
};

static void cluster_closed(void *arg)
{
    tr_state_close(state, NULL, NULL);
}

static void shutdown_hook(void *arg)
{
    if (cluster != NULL)
        tr_cluster_close(cluster, cluster_closed, NULL);
    else
        tr_state_close(state, NULL, NULL);
}

static void open_cb(struct tr_ctx *ctx, void *arg)
{
    struct node_cfg *c = arg;
    struct tr_state_opts so = { .node_id = self_id, .data_dir = c->dir, .raft_address = c->raft,
                                .bootstrap = c->join == NULL, .listener = c->listener, .cluster_key = c->key,
                                .max_inflight = getenv("BCJ_INFLIGHT") ? (uint32_t)atoi(getenv("BCJ_INFLIGHT")) : 0,
                                .max_batch_appends = getenv("BCJ_BATCH") ? (uint32_t)atoi(getenv("BCJ_BATCH")) : 0,
                                /* as troupe reads them */
                                .no_compress = getenv("TROUPE_RAFT_COMPRESS") && !strcmp(getenv("TROUPE_RAFT_COMPRESS"), "0"),
                                .no_prefill = getenv("TROUPE_RAFT_PREFILL") && !strcmp(getenv("TROUPE_RAFT_PREFILL"), "0") };
    int rv = tr_state_open(ctx, &so, &state, &c->err);
    if (rv == TR_OK) {
        tr_rt_on_shutdown(ctx, shutdown_hook, NULL);
        struct tr_cluster_opts co = { .state = state, .node_id = self_id, .listen_host = c->peer_host,
                                      .listen_port = c->peer_port, .raft_address = c->raft, .key = c->key,
                                      .join = c->join };
        rv = tr_cluster_start(ctx, &co, &cluster, &c->err);
    }
    atomic_store(&c->done, rv == TR_OK ? 1 : -1);
}

/* What the node knows of the cluster, read on scheduler 0. */
struct probe {
    atomic_int done;
    int ready;
    struct tr_raft_info info;
    struct tr_state_stats stats;
};

static void probe_cb(struct tr_ctx *ctx, void *arg)
{
    struct probe *p = arg;
    p->ready = tr_state_ready(state);
    tr_raft_info(tr_state_raft(state), &p->info);
    tr_state_stats(state, &p->stats);
    atomic_store(&p->done, 1);
}

static int probe(struct probe *p)
{
    atomic_store(&p->done, 0);
    if (tr_rt_call(rt, 0, probe_cb, NULL, p) != TR_OK)
        return -1;
    while (atomic_load(&p->done) == 0)
        uv_sleep(1);
    return 0;
}

static int read_cmd(char *line, size_t cap)
{
    if (fgets(line, (int)cap, stdin) == NULL)
        return -1;
    line[strcspn(line, "\n")] = '\0';
    return 0;
}

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

/* bench_cluster_journal --node ID DIR RAFT PEER JOIN|- RUNS WINDOW */
static int node_main(int argc, char **argv)
{
    if (argc != 9)
        return 2;
    static struct node_cfg c;
    self_id = strtoull(argv[2], NULL, 10);
    c.dir = argv[3];
    c.raft = argv[4];
    static char host[64];
    const char *colon = strrchr(argv[5], ':');
    if (colon == NULL || (size_t)(colon - argv[5]) >= sizeof host)
        return 2;
    memcpy(host, argv[5], (size_t)(colon - argv[5]));
    c.peer_host = host;
    c.peer_port = atoi(colon + 1);
    c.join = strcmp(argv[6], "-") != 0 ? argv[6] : NULL;
    int runs = atoi(argv[7]);
    window = (uint32_t)atoi(argv[8]);
    const char *secret = getenv(SECRET_ENV);
    struct tr_err err = { 0 };
    if (runs < 0 || window == 0 || window > 64 || secret == NULL || sodium_init() < 0 ||
        tr_cluster_key_derive(secret, strlen(secret), c.key, &err) != TR_OK) {
        fprintf(stderr, "node %llu: bad arguments or secret\n", (unsigned long long)self_id);
        return 2;
    }
    tr_log_set_level(TR_LOG_WARN);
    slow_us = getenv("BCJ_SLOW_MS") ? (uint64_t)atoi(getenv("BCJ_SLOW_MS")) * 1000 : 0;

    struct tr_rt_opts ro = { .schedulers = getenv("BCJ_SCHED") ? atoi(getenv("BCJ_SCHED")) : 0 };
    if (tr_rt_new(&ro, &rt) != TR_OK || tr_rt_start(rt) != TR_OK)
        return 1;
    struct tr_spawn_opts lo = { .behavior = &listener_behavior, .sched = TR_SCHED_ANY };
    if (tr_spawn(rt, &lo, &c.listener) != TR_OK)
        return 1;
    if (tr_rt_call(rt, 0, open_cb, NULL, &c) != TR_OK)
        return 1;
    while (atomic_load(&c.done) == 0)
        uv_sleep(1);
    if (atomic_load(&c.done) < 0) {
        fprintf(stderr, "node %llu: %s\n", (unsigned long long)self_id, c.err.msg);
        return 1;
    }
    say("up");

    /* Ready: this node may act (not fenced), and it sees three voters and a
     * leader. Polling, with a guard against hangs. */
    struct probe p;
    uint64_t guard = h_now_ms() + 60000;
    for (;;) {
        if (probe(&p) != 0)
            return 1;
        if (p.ready && p.info.leader_id != 0 && p.info.n_servers == N_NODES)
            break;
        if (h_now_ms() > guard) {
            fprintf(stderr, "node %llu: not ready (ready %d, leader %llu, %u servers)\n",
                    (unsigned long long)self_id, p.ready, (unsigned long long)p.info.leader_id, p.info.n_servers);
            return 1;
        }
        uv_sleep(5);
    }
    say("ready %llu", (unsigned long long)p.info.leader_id);

    char line[64];
    tr_actor_id *ids = calloc((size_t)runs + 1, sizeof *ids);
    lat = calloc(LAT_MAX, sizeof *lat);
    if (ids == NULL || lat == NULL)
        return 1;
    int status = 0;
    double t0 = 0, t1 = 0;
    uint64_t a0 = 0, a1 = 0;
    struct tr_state_stats s0 = { 0 };
    int marks = 0;
    while (read_cmd(line, sizeof line) == 0 && strcmp(line, "exit") != 0) {
        if (strcmp(line, "create") == 0) {
            for (int i = 0; i < runs; i++) {
                struct tr_spawn_opts so = { .behavior = &appender_behavior,
                                            .arg = (void *)(uintptr_t)(self_id * 1000000 + (uint64_t)i),
                                            .sched = TR_SCHED_ANY };
                if (tr_spawn(rt, &so, &ids[i]) != TR_OK)
                    return 1;
                tr_rt_send(rt, ids[i], tr_msg_new(MSG_CREATE, 0));
            }
            guard = h_now_ms() + 60000;
            while (atomic_load(&created) + (int)atomic_load(&bad_creates) < runs && h_now_ms() < guard)
                uv_sleep(1);
            if (atomic_load(&created) != runs) {
                fprintf(stderr, "node %llu: %d of %d runs created\n", (unsigned long long)self_id,
                        atomic_load(&created), runs);
                status = 1;
            }
            say("created %d", atomic_load(&created));
        } else if (strcmp(line, "start") == 0) {
            for (int i = 0; i < runs; i++)
                tr_rt_send(rt, ids[i], tr_msg_new(MSG_GO, 0));
        } else if (strcmp(line, "mark") == 0 && marks == 0) {
            probe(&p);
            s0 = p.stats;
            a0 = atomic_load(&ok_appends);
            t0 = now_s();
            atomic_store(&measuring, 1);
            marks++;
        } else if (strcmp(line, "mark") == 0 && marks == 1) {
            atomic_store(&measuring, 0);
            a1 = atomic_load(&ok_appends);
            t1 = now_s();
            probe(&p);
            marks++;
            uint64_t nl = atomic_load(&n_lat);
            if (nl > LAT_MAX)
                nl = LAT_MAX;
            qsort(lat, nl, sizeof *lat, cmp_u32);
            /* result: appends seconds refused entries forwarded max_batch p50_us p99_us leader role */
            say("result %llu %.6f %llu %llu %llu %llu %u %u %llu %d", (unsigned long long)(a1 - a0), t1 - t0,
                (unsigned long long)atomic_load(&bad_appends), (unsigned long long)(p.stats.entries - s0.entries),
                (unsigned long long)(p.stats.forwarded - s0.forwarded), (unsigned long long)p.stats.max_batch,
                nl ? lat[nl / 2] : 0, nl ? lat[(nl * 99) / 100] : 0, (unsigned long long)p.info.leader_id,
                p.info.role == RAFT_LEADER);
        }
    }
    atomic_store(&stop_flag, 1);
    tr_rt_shutdown(rt);
    free(ids);
    free(lat);
    return status;
}

/* ======================================================================================
 * Driver mode: start the three nodes, run the phases, sum the results.
 * ==================================================================================== */

struct child {
    pid_t pid;
    FILE *to;   /* its stdin */
    FILE *from; /* its stdout */
};

/* utime + stime (clock ticks) of /proc/PID/stat or /proc/PID/task/TID/stat. */
static long long cpu_ticks(const char *path)
{
    char buf[2048];
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    unsigned long long ut, st;
    if (p == NULL || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    return (long long)(ut + st);
}

/* Bytes the process caused to be written to storage (/proc/PID/io write_bytes:
 * the raft log, RocksDB's WAL, flushes and compactions). */
static long long write_bytes(pid_t pid)
{
    char path[64], line[128];
    snprintf(path, sizeof path, "/proc/%d/io", (int)pid);
    FILE *f = fopen(path, "r");
    long long v = -1;
    if (f == NULL)
        return -1;
    while (fgets(line, sizeof line, f) != NULL)
        if (strncmp(line, "write_bytes:", 12) == 0)
            v = atoll(line + 12);
    fclose(f);
    return v;
}

/* CPU of a node: the process, and its busiest threads (by tid). */
#define MAX_TASKS 64
struct cpu_snap {
    long long proc;
    long long wbytes;
    int n;
    int tid[MAX_TASKS];
    long long ticks[MAX_TASKS];
};

static void cpu_snap(pid_t pid, struct cpu_snap *s)
{
    char path[128];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    s->proc = cpu_ticks(path);
    s->wbytes = write_bytes(pid);
    s->n = 0;
    snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
    DIR *d = opendir(path);
    if (d == NULL)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && s->n < MAX_TASKS) {
        if (e->d_name[0] == '.')
            continue;
        char tp[320];
        snprintf(tp, sizeof tp, "/proc/%d/task/%s/stat", (int)pid, e->d_name);
        s->tid[s->n] = atoi(e->d_name);
        s->ticks[s->n++] = cpu_ticks(tp);
    }
    closedir(d);
}

/* Busiest thread's share of one core between two snapshots. */
static double busiest(const struct cpu_snap *a, const struct cpu_snap *b, double secs)
{
    long long best = 0;
    for (int i = 0; i < b->n; i++)
        for (int j = 0; j < a->n; j++)
            if (a->tid[j] == b->tid[i] && b->ticks[i] - a->ticks[j] > best)
                best = b->ticks[i] - a->ticks[j];
    return (double)best / (double)sysconf(_SC_CLK_TCK) / secs;
}

static int spawn_node(struct child *ch, char *const argv[], const char *log_path)
{
    int in[2], out[2];
    if (pipe(in) != 0 || pipe(out) != 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        FILE *lf = fopen(log_path, "w");
        if (lf != NULL)
            dup2(fileno(lf), 2);
        close(in[0]);
        close(in[1]);
        close(out[0]);
        close(out[1]);
        execv("/proc/self/exe", argv);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    ch->pid = pid;
    ch->to = fdopen(in[1], "w");
    ch->from = fdopen(out[0], "r");
    return ch->to != NULL && ch->from != NULL ? 0 : -1;
}

static void tell(struct child *ch, const char *cmd)
{
    fprintf(ch->to, "%s\n", cmd);
    fflush(ch->to);
}

/* Read the child's next line; it must start with word. */
static int expect(struct child *ch, int id, const char *word, char *line, size_t cap)
{
    if (fgets(line, (int)cap, ch->from) == NULL) {
        fprintf(stderr, "bench_cluster_journal: node %d ended before \"%s\" (see its log)\n", id, word);
        return -1;
    }
    line[strcspn(line, "\n")] = '\0';
    if (strncmp(line, word, strlen(word)) != 0) {
        fprintf(stderr, "bench_cluster_journal: node %d said \"%s\", expected \"%s\"\n", id, line, word);
        return -1;
    }
    return 0;
}

static void stop_children(struct child *ch, int n)
{
    for (int i = 0; i < n; i++)
        if (ch[i].pid > 0 && ch[i].to != NULL)
            tell(&ch[i], "exit");
    for (int i = 0; i < n; i++) {
        if (ch[i].pid <= 0)
            continue;
        int st;
        uint64_t guard = h_now_ms() + 30000;
        while (waitpid(ch[i].pid, &st, WNOHANG) == 0) {
            if (h_now_ms() > guard) {
                kill(ch[i].pid, SIGKILL);
                waitpid(ch[i].pid, &st, 0);
                break;
            }
            uv_sleep(10);
        }
        if (ch[i].to != NULL)
            fclose(ch[i].to);
        if (ch[i].from != NULL)
            fclose(ch[i].from);
        ch[i].pid = 0;
    }
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--node") == 0)
        return node_main(argc, argv);
    if (argc < 2) {
        fprintf(stderr, "usage: bench_cluster_journal WORKDIR [runs_per_node] [window] [seconds]\n");
        return 2;
    }
    const char *work = argv[1];
    int runs_n[N_NODES] = { 256, 256, 256 };
    if (argc > 2) {
        int k = sscanf(argv[2], "%d,%d,%d", &runs_n[0], &runs_n[1], &runs_n[2]);
        if (k == 1)
            runs_n[1] = runs_n[2] = runs_n[0];
        else if (k != 3)
            runs_n[0] = -1;
    }
    int runs = runs_n[0] + runs_n[1] + runs_n[2];
    int win = argc > 3 ? atoi(argv[3]) : 16;
    double seconds = argc > 4 ? atof(argv[4]) : 3.0;
    if (runs_n[0] < 0 || runs_n[1] < 0 || runs_n[2] < 0 || runs <= 0 || win <= 0 || win > 64 || seconds <= 0) {
        fprintf(stderr, "bench_cluster_journal: runs per node N or N1,N2,N3 (>= 0, some > 0), 0 < window <= 64, "
                        "seconds > 0\n");
        return 2;
    }
    if (sodium_init() < 0)
        return 1;
    unsigned char rnd[16];
    char secret[33];
    randombytes_buf(rnd, sizeof rnd);
    sodium_bin2hex(secret, sizeof secret, rnd, sizeof rnd);
    setenv(SECRET_ENV, secret, 1);
    signal(SIGPIPE, SIG_IGN);

    char raft[N_NODES][32], peer[N_NODES][32], dir[N_NODES][512], logp[N_NODES][512], idtxt[N_NODES][8];
    char runs_s[N_NODES][16], win_s[16];
    for (int i = 0; i < N_NODES; i++)
        snprintf(runs_s[i], sizeof runs_s[i], "%d", runs_n[i]);
    snprintf(win_s, sizeof win_s, "%d", win);
    for (int i = 0; i < N_NODES; i++) {
        snprintf(raft[i], sizeof raft[i], "127.0.0.1:%d", h_free_port());
        snprintf(peer[i], sizeof peer[i], "127.0.0.1:%d", h_free_port());
        snprintf(dir[i], sizeof dir[i], "%s/n%d", work, i + 1);
        snprintf(logp[i], sizeof logp[i], "%s/n%d.log", work, i + 1);
        snprintf(idtxt[i], sizeof idtxt[i], "%d", i + 1);
    }
    struct child ch[N_NODES] = { 0 };
    char line[256];
    int rc = 1;
    for (int i = 0; i < N_NODES; i++) {
        char *args[] = { argv[0], "--node", idtxt[i], dir[i], raft[i], peer[i], i == 0 ? "-" : peer[0],
                         runs_s[i], win_s, NULL };
        if (spawn_node(&ch[i], args, logp[i]) != 0 || expect(&ch[i], i + 1, "up", line, sizeof line) != 0)
            goto out;
    }
    for (int i = 0; i < N_NODES; i++)
        if (expect(&ch[i], i + 1, "ready", line, sizeof line) != 0)
            goto out;
    printf("journal: 3 nodes (raft %s %s %s), leader %s; runs owned by nodes 1, 2, 3: %d, %d, %d (each node "
           "appends to its own), %d appends in flight per run\n",
           raft[0], raft[1], raft[2], line + 6, runs_n[0], runs_n[1], runs_n[2], win);
    for (int i = 0; i < N_NODES; i++)
        tell(&ch[i], "create");
    for (int i = 0; i < N_NODES; i++)
        if (expect(&ch[i], i + 1, "created", line, sizeof line) != 0)
            goto out;
    for (int i = 0; i < N_NODES; i++)
        tell(&ch[i], "start");
    uv_sleep(1000); /* warm-up */
    static struct cpu_snap c0[N_NODES], c1[N_NODES];
    for (int i = 0; i < N_NODES; i++)
        tell(&ch[i], "mark");
    double w0 = now_s();
    for (int i = 0; i < N_NODES; i++)
        cpu_snap(ch[i].pid, &c0[i]);
    uv_sleep((unsigned)(seconds * 1000));
    for (int i = 0; i < N_NODES; i++)
        tell(&ch[i], "mark");
    for (int i = 0; i < N_NODES; i++)
        cpu_snap(ch[i].pid, &c1[i]);
    double wsecs = now_s() - w0;

    double wb_total = 0, cpu_total = 0, rate = 0, worst_p99[2] = { 0, 0 }, p50[2] = { 0, 0 };
    unsigned long long refused = 0, total = 0;
    for (int i = 0; i < N_NODES; i++) {
        if (expect(&ch[i], i + 1, "result", line, sizeof line) != 0)
            goto out;
        unsigned long long appends, bad, entries, fwd, maxb, leader;
        double secs;
        unsigned p50us, p99us;
        int is_leader;
        if (sscanf(line, "result %llu %lf %llu %llu %llu %llu %u %u %llu %d", &appends, &secs, &bad, &entries, &fwd,
                   &maxb, &p50us, &p99us, &leader, &is_leader) != 10 || secs <= 0) {
            fprintf(stderr, "bench_cluster_journal: node %d: bad result \"%s\"\n", i + 1, line);
            goto out;
        }
        double cpu = (double)(c1[i].proc - c0[i].proc) / (double)sysconf(_SC_CLK_TCK) / wsecs;
        cpu_total += cpu;
        double wb = (double)(c1[i].wbytes - c0[i].wbytes);
        wb_total += wb;
        printf("journal: node %d (%s): %llu appends acknowledged in %.2f s (%.0f/s) in %llu entries "
               "(%llu forwarded to the leader, up to %llu appends each); append round trip p50 %.3f ms, "
               "p99 %.3f ms; %llu refused; CPU %.0f%% of a core (busiest thread %.0f%%); wrote %.1f MB/s to storage\n",
               i + 1, is_leader ? "leader" : "follower", appends, secs, (double)appends / secs,
               is_leader ? entries : fwd, fwd, maxb, p50us / 1000.0, p99us / 1000.0, bad, cpu * 100,
               busiest(&c0[i], &c1[i], wsecs) * 100, wb / wsecs / 1e6);
        rate += (double)appends / secs;
        total += appends;
        refused += bad;
        if (p99us / 1000.0 > worst_p99[is_leader])
            worst_p99[is_leader] = p99us / 1000.0;
        if (p50us / 1000.0 > p50[is_leader])
            p50[is_leader] = p50us / 1000.0;
    }
    printf("journal: %llu durable appends in all, %llu refused or failed; the three nodes used %.0f%% of a core "
           "(%ld cores here), %.1f µs of CPU per durable append\n",
           total, refused, cpu_total * 100, sysconf(_SC_NPROCESSORS_ONLN), rate > 0 ? cpu_total / rate * 1e6 : 0.0);
    printf("journal: the three nodes wrote %.1f MB/s to storage, %.0f bytes per durable append (each node "
           "keeps the raft log and RocksDB: WAL, flushes, compactions)\n",
           wb_total / wsecs / 1e6, total > 0 ? wb_total / (double)total : 0.0);
    printf("bench: cluster.durable_events_per_s %.0f events/s\n", rate);
    printf("bench: cluster.append_round_trip_p50_ms.leader_owned %.3f ms\n", p50[1]);
    printf("bench: cluster.append_round_trip_p99_ms.leader_owned %.3f ms\n", worst_p99[1]);
    printf("bench: cluster.append_round_trip_p50_ms.follower_owned %.3f ms\n", p50[0]);
    printf("bench: cluster.append_round_trip_p99_ms.follower_owned %.3f ms\n", worst_p99[0]);
    fflush(stdout);
    rc = refused == 0 ? 0 : 1;
out:
    stop_children(ch, N_NODES);
    return rc;
}
