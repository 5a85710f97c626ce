/* bench_cluster: step overhead and failover of a three-node troupe cluster on
 * loopback (real processes, fsync on), with troupe-mockllm as the model and
 * troupe-toolserver as the tools.
 *
 *   bench_cluster WORKDIR TROUPE MOCKLLM TOOLSERVER
 *
 * Knobs (environment): BENCH_TRIALS (failover trials with a follower as the
 * victim, default 20), BENCH_LEADER_TRIALS (with the leader as the victim,
 * default 20), BENCH_FAILOVER_RUNS (runs in flight per trial, default 100),
 * BENCH_TOOL_MS (the failover runs' tool latency, default 300: 300-349 ms),
 * BENCH_STEP_RUNS (runs per step-overhead pass, default 50), BENCH_NODE_ARGS
 * (extra troupe flags for every node, e.g. "--failure-timeout 800"; none by
 * default, so the figures are the shipped defaults'), BENCH_NODE_LOG=info (the
 * nodes log at info instead of warn, in WORKDIR/n<i>.log).
 *
 * 1. Step overhead, as bench/run/bench_e2e defines it: 10-step runs (9 write
 *    tool calls and an answer), one at a time; for each step, the time from
 *    its llm.requested event to the next step's (or the run's end), minus the
 *    model's latency and the tool's duration as journaled, is what the
 *    journal and the runtime add. Twice: runs owned by the leader (their
 *    appends go to raft directly) and runs owned by a follower (each batch of
 *    appends is forwarded to the leader and the verdict comes back). Which
 *    node gets a new run is the FSM's choice (the least-loaded Up node, then
 *    the lowest id), so the bench steers it by parking runs on the other
 *    nodes: a parked run waits for a human's approval of an "irreversible"
 *    tool, which keeps it active (counted by placement) and idle.
 *
 * 2. Failover. Each trial: BENCH_FAILOVER_RUNS runs in flight, spread by
 *    placement over the three nodes, each looping over a write tool that
 *    takes BENCH_TOOL_MS (+ 0-49 ms); once every run has started, the victim (a
 *    follower, or the leader) is SIGKILLed. For each run the victim owned,
 *    the failover time is
 *        (time of the first event appended by the new owner) - (time of the kill)
 *    where "the first event appended by the new owner" is the first event
 *    after the run's run.assigned event (which the FSM writes when the
 *    leader declares the victim down) whose epoch is run.assigned's epoch.
 *    Both times are this host's wall clock: the kill's from this program,
 *    the event's from the new owner's journal (all on one machine). The
 *    trial also records when run.assigned was written (detection and
 *    reassignment) and the side effects re-sent to the tool server (its
 *    /_stats "resends": a resumed run repeating a tool call the victim had
 *    started, deduplicated by the call's Idempotency-Key), and checks that
 *    no effect was performed twice. Then every run of the trial is
 *    cancelled and the victim restarted (it rejoins; it owns nothing).
 *
 * The cluster is the harness' (h_cluster_*: node 1 bootstraps, 2 and 3 join;
 * a killed node restarts with the same ports and data).
 *
 * Prints `bench:` lines; everything else is for people. Exit status 0 when
 * every run and trial behaved (no run lost, no effect performed twice). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench_support.h"
#include "harness.h"

#define N 3

static const char *script =
    "{\"model\": \"mock-gpt\", \"default\": \"ten\", \"scripts\": {"
    BENCH_SCRIPT_TEN BENCH_SCRIPT_TENREAD
    " \"park\": ["
    "  {\"tool_calls\": [{\"name\": \"guarded\", \"arguments\": {\"note\": \"waits for a human\"}}]},"
    "  {\"content\": \"done\"}"
    " ],"
    " \"loop\": [%s]}}";

/* The failover runs' script: LOOP_STEPS calls of the nap tool, each with
 * another duration (tool_ms + step % 50 ms), so neither the arguments nor
 * the results repeat (the run's loop detector would end a run that makes the
 * same call, or gets nothing new, a few steps running). */
#define LOOP_STEPS 1000
static char *loop_steps(int tool_ms)
{
    size_t cap = (size_t)LOOP_STEPS * 96 + 64, len = 0;
    char *out = malloc(cap);
    if (out == NULL)
        return NULL;
    for (int i = 0; i < LOOP_STEPS; i++)
        len += (size_t)snprintf(out + len, cap - len, "%s{\"tool_calls\": [{\"name\": \"nap\", \"arguments\": "
                                "{\"ms\": %d}}]}", i ? ", " : "", tool_ms + i % 50);
    return out;
}

/* ---- small things ------------------------------------------------------------------ */

static int64_t wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void nap(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

static int env_int(const char *name, int def)
{
    const char *s = getenv(name);
    return s != NULL && *s ? atoi(s) : def;
}

static const char *jstr(json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

static int64_t jint(json_t *o, const char *k)
{
    return (int64_t)json_integer_value(json_object_get(o, k));
}

static int is_terminal(const char *s)
{
    return s != NULL && (!strcmp(s, "succeeded") || !strcmp(s, "failed") || !strcmp(s, "cancelled"));
}

/* ---- the cluster -------------------------------------------------------------------- */

/* The nodes come from the harness (tests/support/harness/cluster.c); the
 * harness' run helpers (h_create_run, h_get_run, h_get_events) take a struct
 * h_node, of which they read only `base`: hv[i] is node i seen that way. */
static struct h_cluster cl;
static struct h_node hv[N];
static char *extra_args[33];
static int n_extra;

#define NODE(i) (&hv[i])

/* GET /v1/cluster from node i. */
static json_t *cluster_view(int from)
{
    return h_cluster_info(&cl, from);
}

/* Wait until the leader every node agrees on sees all three nodes alive
 * (a restarted node is Up again, so placement gives it runs) and every node
 * is ready; returns the leader's index (0-based) or -1. */
static int wait_healthy(int timeout_ms)
{
    uint64_t guard = h_now_ms() + (uint64_t)timeout_ms;
    while (h_now_ms() < guard) {
        int leader = h_cluster_leader(&cl, timeout_ms);
        if (leader < 0 || h_cluster_wait_ready(&cl, -1, timeout_ms) != 0)
            break;
        json_t *lv = cluster_view(leader);
        json_t *ns = lv != NULL ? json_object_get(lv, "nodes") : NULL;
        int alive = 0;
        for (size_t i = 0; i < json_array_size(ns); i++)
            alive += json_is_true(json_object_get(json_array_get(ns, i), "alive"));
        int is_leader = lv != NULL && jint(lv, "leader") == leader + 1;
        json_decref(lv);
        if (alive == N && is_leader)
            return leader;
        nap(20);
    }
    fprintf(stderr, "bench_cluster: the cluster did not become healthy\n");
    h_cluster_dump_logs(&cl, 20);
    return -1;
}

/* Active runs per node (index 0..N-1) as the leader sees them. */
static int loads(int leader, int64_t out[N])
{
    json_t *v = cluster_view(leader);
    if (v == NULL)
        return -1;
    for (int i = 0; i < N; i++)
        out[i] = 0;
    json_t *ns = json_object_get(v, "nodes");
    for (size_t i = 0; i < json_array_size(ns); i++) {
        json_t *n = json_array_get(ns, i);
        int64_t id = jint(n, "id");
        if (id >= 1 && id <= N)
            out[id - 1] = jint(n, "runs");
    }
    json_decref(v);
    return 0;
}

static void register_tool(int at, const char *name, const char *endpoint, const char *risk, const char *toolbase)
{
    char body[1024], url[256];
    snprintf(body, sizeof body,
             "{\"name\": \"%s\", \"description\": \"%s\", \"input_schema\": {\"type\": \"object\"},"
             " \"risk\": \"%s\", \"kind\": \"http\", \"config\": {\"url\": \"%s/tools/%s\","
             " \"allow\": [\"127.0.0.1\"]}, \"timeout_ms\": 30000}",
             name, name, risk, toolbase, endpoint);
    snprintf(url, sizeof url, "%s/v1/tools", cl.nodes[at].base);
    struct h_resp r;
    h_http(&r, "POST", url, body, NULL, 10000);
    if (r.status != 201 && r.status != 200) {
        fprintf(stderr, "bench_cluster: register %s: HTTP %ld %s\n", name, r.status, r.body);
        exit(1);
    }
    h_resp_free(&r);
}

static char *create(int at, const char *script_name, int max_steps)
{
    char body[512];
    snprintf(body, sizeof body,
             "{\"goal\": \"benchmark\", \"agent\": {\"model\": \"mock-gpt\", \"system\": \"[mock:%s]\","
             " \"tools\": [\"add\", \"lookup\", \"guarded\", \"nap\"], \"max_steps\": %d}}",
             script_name, max_steps);
    return h_create_run(NODE(at), body, NULL);
}

static int cancel(int at, const char *id)
{
    char url[256];
    snprintf(url, sizeof url, "%s/v1/runs/%s/cancel", cl.nodes[at].base, id);
    struct h_resp r;
    h_http(&r, "POST", url, "{}", NULL, 10000);
    int ok = r.status >= 200 && r.status < 300;
    if (!ok)
        fprintf(stderr, "bench_cluster: cancel %s: HTTP %ld %s\n", id, r.status, r.body);
    h_resp_free(&r);
    return ok ? 0 : -1;
}

/* Long-poll until the run is terminal; returns 1 if it succeeded. */
static int wait_terminal(int at, const char *id, char *status_out, size_t cap)
{
    uint64_t guard = h_now_ms() + 300000;
    while (h_now_ms() < guard) {
        char url[256];
        snprintf(url, sizeof url, "%s/v1/runs/%s?wait=60", cl.nodes[at].base, id);
        struct h_resp r;
        h_http(&r, "GET", url, NULL, NULL, 65000);
        const char *st = r.json != NULL ? jstr(r.json, "status") : NULL;
        int done = is_terminal(st);
        if (done && status_out != NULL)
            snprintf(status_out, cap, "%s", st);
        h_resp_free(&r);
        if (done)
            return 1;
    }
    return 0;
}

static json_t *tool_stats(const char *toolbase)
{
    char url[256];
    snprintf(url, sizeof url, "%s/_stats", toolbase);
    struct h_resp r;
    h_http(&r, "GET", url, NULL, NULL, 5000);
    json_t *j = r.status == 200 && r.json != NULL ? json_incref(r.json) : NULL;
    h_resp_free(&r);
    return j;
}

/* ---- 1. step overhead ---------------------------------------------------------------- */

/* Where a step's overhead goes, over the runs of one pass (bench_support.h). */
static struct bench_gaps gaps;

/* Overhead samples (µs) of one finished run. */
static void overheads(int at, const char *id, struct bench_samples *out)
{
    json_t *ev = h_get_events(NODE(at), id);
    if (ev == NULL)
        return;
    bench_step_overheads(ev, out, &gaps);
    json_decref(ev);
}

/* Park runs until placement picks `target` next; parked ids appended to *parked. */
static int steer(int leader, int target, char ***parked, int *n_parked)
{
    for (int guard = 0; guard < 16; guard++) {
        int64_t l[N];
        if (loads(leader, l) != 0)
            return -1;
        int pick = 0;
        for (int i = 1; i < N; i++)
            if (l[i] < l[pick])
                pick = i;
        if (pick == target)
            return 0;
        char *id = create(leader, "park", 5);
        if (id == NULL)
            return -1;
        *parked = realloc(*parked, (size_t)(*n_parked + 1) * sizeof **parked);
        (*parked)[(*n_parked)++] = id;
        /* wait until it waits for approval, so it stays put and idle */
        uint64_t until = h_now_ms() + 30000;
        for (;;) {
            json_t *j = h_get_run(NODE(leader), id);
            const char *st = j != NULL ? jstr(j, "status") : NULL;
            int parked_now = st != NULL && !strcmp(st, "waiting_approval");
            json_decref(j);
            if (parked_now)
                break;
            if (h_now_ms() > until) {
                fprintf(stderr, "bench_cluster: run %s never waited for approval\n", id);
                return -1;
            }
            nap(5);
        }
    }
    return -1;
}

/* 50 (BENCH_STEP_RUNS) ten-step runs of `which` on `target`, one at a time;
 * every sample is also added to *all when it is not NULL. */
static int step_pass(int leader, int target, const char *which, const char *label, const char *name,
                     struct bench_samples *all)
{
    char **parked = NULL;
    int n_parked = 0, rc = 0;
    int total = env_int("BENCH_STEP_RUNS", 50);
    struct bench_samples s = { 0 };
    if (steer(leader, target, &parked, &n_parked) != 0) {
        fprintf(stderr, "bench_cluster: could not steer placement to node %d\n", target + 1);
        return -1;
    }
    for (int i = 0; i < total && rc == 0; i++) {
        char *id = create(leader, which, 20);
        if (id == NULL)
            return -1;
        char st[32] = "";
        if (!wait_terminal(leader, id, st, sizeof st) || strcmp(st, "succeeded") != 0) {
            fprintf(stderr, "bench_cluster: run %s ended %s\n", id, st);
            rc = -1;
        }
        json_t *j = h_get_run(NODE(leader), id);
        int64_t owner = j != NULL ? jint(j, "owner_node") : 0;
        json_decref(j);
        if (owner != target + 1) {
            fprintf(stderr, "bench_cluster: run %s went to node %lld, not %d\n", id, (long long)owner, target + 1);
            rc = -1;
        }
        size_t before = s.n;
        overheads(leader, id, &s);
        for (size_t k = before; all != NULL && k < s.n; k++)
            bench_push(all, s.v[k]);
        free(id);
    }
    for (int i = 0; i < n_parked; i++) {
        cancel(leader, parked[i]);
        wait_terminal(leader, parked[i], NULL, 0);
        free(parked[i]);
    }
    free(parked);
    bench_sort(&s);
    printf("step overhead, %s (node %d; %d parked runs steered placement): %zu steps of %d runs: "
           "p50 %.3f ms, p90 %.3f ms, p99 %.3f ms, max %.3f ms\n",
           label, target + 1, n_parked, s.n, total, bench_pct(&s, 0.5) / 1000.0, bench_pct(&s, 0.9) / 1000.0,
           bench_pct(&s, 0.99) / 1000.0, s.n ? s.v[s.n - 1] / 1000.0 : 0.0);
    bench_gaps_report(&gaps);
    printf("bench: cluster.step_overhead_p50_ms.%s %.3f ms\n", name, bench_pct(&s, 0.5) / 1000.0);
    printf("bench: cluster.step_overhead_p99_ms.%s %.3f ms\n", name, bench_pct(&s, 0.99) / 1000.0);
    fflush(stdout);
    free(s.v);
    return rc;
}

/* ---- 2. failover --------------------------------------------------------------------- */

struct watched {
    char *id;
    int64_t epoch0;       /* the run's epoch before the kill */
    int64_t after;        /* events after this seq are new */
    int done;
    int64_t assigned_us;  /* run.assigned's time */
    int64_t first_us;     /* the new owner's first event */
};

/* Look for run.assigned (epoch > epoch0) and the new owner's first event
 * after it; 1 when found. */
static int check_run(int at, struct watched *w)
{
    char url[256];
    snprintf(url, sizeof url, "%s/v1/runs/%s/events?after=%lld", cl.nodes[at].base, w->id, (long long)w->after);
    struct h_resp r;
    h_http(&r, "GET", url, NULL, NULL, 5000);
    json_t *ev = r.status == 200 && json_is_array(r.json) ? r.json : NULL;
    int64_t epoch = -1;
    for (size_t i = 0; ev != NULL && i < json_array_size(ev) && !w->done; i++) {
        json_t *e = json_array_get(ev, i);
        const char *type = jstr(e, "type");
        if (type == NULL)
            continue;
        if (!strcmp(type, "run.assigned") && jint(e, "epoch") > w->epoch0) {
            epoch = jint(e, "epoch");
            w->assigned_us = bench_ev_time(e);
        } else if (epoch > 0 && jint(e, "epoch") == epoch) {
            w->first_us = bench_ev_time(e);
            w->done = 1;
        }
    }
    h_resp_free(&r);
    return w->done;
}

struct fo_result {
    struct bench_samples first, assigned, worst;   /* µs from the kill */
    struct bench_samples resume;                   /* µs from run.assigned to the new owner's first event */
    long long resends, runs, lost, dup, early;
    int trials;
};

static int failover_trial(int victim, int leader, int n_runs, const char *toolbase, struct fo_result *res, int trial)
{
    /* runs in flight, spread by placement */
    char **ids = calloc((size_t)n_runs, sizeof *ids);
    int api = victim == leader ? (leader + 1) % N : leader; /* never ask the victim */
    for (int i = 0; i < n_runs; i++) {
        ids[i] = create(api, "loop", LOOP_STEPS);
        if (ids[i] == NULL)
            return -1;
    }
    /* every run started (its first tool call journaled), then note the victim's */
    struct watched *w = calloc((size_t)n_runs, sizeof *w);
    int n_w = 0;
    uint64_t guard = h_now_ms() + 60000;
    for (int i = 0; i < n_runs; i++) {
        for (;;) {
            json_t *j = h_get_run(NODE(api), ids[i]);
            int64_t step = j != NULL ? jint(j, "step") : 0;
            int64_t owner = j != NULL ? jint(j, "owner_node") : 0;
            int64_t epoch = j != NULL ? jint(j, "epoch") : 0;
            int ended = j != NULL && is_terminal(jstr(j, "status"));
            if (ended) {
                /* not a failover sample; counted, and the exit status says so */
                char *txt = json_dumps(j, JSON_COMPACT);
                fprintf(stderr, "bench_cluster: run %s ended before the kill: %s\n", ids[i], txt ? txt : "");
                free(txt);
                json_decref(j);
                res->early++;
                break;
            }
            json_decref(j);
            if (step >= 1) {
                if (owner == victim + 1)
                    w[n_w++] = (struct watched){ .id = ids[i], .epoch0 = epoch };
                break;
            }
            if (h_now_ms() > guard) {
                fprintf(stderr, "bench_cluster: run %s did not start\n", ids[i]);
                return -1;
            }
            nap(5);
        }
    }
    /* the victim's runs' journals so far: only later events can be the new owner's */
    for (int i = 0; i < n_w; i++) {
        json_t *j = h_get_run(NODE(api), w[i].id);
        w[i].after = j != NULL ? jint(j, "last_seq") : 0;
        json_decref(j);
    }
    json_t *s0 = tool_stats(toolbase);

    int64_t t_kill = wall_us();
    h_cluster_kill(&cl, victim);

    int survivor = (victim + 1) % N, left = n_w;
    guard = h_now_ms() + 120000;
    while (left > 0 && h_now_ms() < guard) {
        for (int i = 0; i < n_w; i++)
            if (!w[i].done && check_run(survivor, &w[i]))
                left--;
        if (left > 0)
            nap(20);
    }
    int64_t worst = 0;
    for (int i = 0; i < n_w; i++) {
        if (!w[i].done) {
            /* say what became of it */
            json_t *j = h_get_run(NODE(survivor), w[i].id);
            char *txt = j != NULL ? json_dumps(j, JSON_COMPACT) : NULL;
            fprintf(stderr, "bench_cluster: run %s (epoch %lld, seq %lld at the kill): no new owner's event: %s\n",
                    w[i].id, (long long)w[i].epoch0, (long long)w[i].after, txt ? txt : "(no record)");
            free(txt);
            json_decref(j);
            res->lost++;
            continue;
        }
        bench_push(&res->first, w[i].first_us - t_kill);
        bench_push(&res->assigned, w[i].assigned_us - t_kill);
        bench_push(&res->resume, w[i].first_us - w[i].assigned_us);
        if (w[i].first_us - t_kill > worst)
            worst = w[i].first_us - t_kill;
    }
    bench_push(&res->worst, worst);
    res->runs += n_w;
    res->trials++;

    /* cancel the trial's runs, restart the victim */
    for (int i = 0; i < n_runs; i++)
        cancel(survivor, ids[i]);
    for (int i = 0; i < n_runs; i++)
        wait_terminal(survivor, ids[i], NULL, 0);
    json_t *s1 = tool_stats(toolbase);
    long long resends = s0 && s1 ? (long long)(jint(s1, "resends") - jint(s0, "resends")) : -1;
    long long dup = s1 ? (long long)jint(s1, "duplicates_performed") : -1;
    res->resends += resends;
    res->dup = dup;
    json_decref(s0);
    json_decref(s1);
    printf("failover trial %d: killed node %d (%s) owning %d of %d runs: new owners' first events %.0f ms after "
           "the kill at the latest, %d lost; %lld side effects re-sent\n",
           trial, victim + 1, victim == leader ? "leader" : "follower", n_w, n_runs, worst / 1000.0,
           left, resends);
    fflush(stdout);
    for (int i = 0; i < n_runs; i++)
        free(ids[i]);
    free(ids);
    free(w);
    if (h_cluster_restart(&cl, victim, 60000) != 0)
        return -1;
    return left == 0 ? 0 : -1;
}

static void report_failover(const char *name, const char *what, struct fo_result *r)
{
    int trials = r->trials;
    bench_sort(&r->first);
    bench_sort(&r->assigned);
    bench_sort(&r->worst);
    bench_sort(&r->resume);
    printf("failover, %s killed: %d trials, %lld runs moved, %lld lost; per run, kill -> run.assigned p50 %.0f ms, "
           "p99 %.0f ms; run.assigned -> the new owner's first event p50 %.0f ms, p99 %.0f ms; kill -> the new owner's "
           "first event p50 %.0f ms, p99 %.0f ms, max %.0f ms; per trial, "
           "kill -> every run of the victim resumed p50 %.0f ms; %lld side effects re-sent in all "
           "(%.1f per trial), %lld performed twice; %lld runs ended before the kill\n",
           what, trials, r->runs, r->lost, bench_pct(&r->assigned, 0.5) / 1000.0,
           bench_pct(&r->assigned, 0.99) / 1000.0, bench_pct(&r->resume, 0.5) / 1000.0,
           bench_pct(&r->resume, 0.99) / 1000.0, bench_pct(&r->first, 0.5) / 1000.0,
           bench_pct(&r->first, 0.99) / 1000.0, r->first.n ? r->first.v[r->first.n - 1] / 1000.0 : 0.0,
           bench_pct(&r->worst, 0.5) / 1000.0, r->resends, trials ? (double)r->resends / trials : 0.0,
           r->dup, r->early);
    printf("bench: cluster.%s_p50_ms %.0f ms\n", name, bench_pct(&r->first, 0.5) / 1000.0);
    printf("bench: cluster.%s_p99_ms %.0f ms\n", name, bench_pct(&r->first, 0.99) / 1000.0);
    printf("bench: cluster.%s_detect_p50_ms %.0f ms\n", name, bench_pct(&r->assigned, 0.5) / 1000.0);
    printf("bench: cluster.%s_all_runs_p50_ms %.0f ms\n", name, bench_pct(&r->worst, 0.5) / 1000.0);
    printf("bench: cluster.%s_resent_per_trial %.1f effects\n", name, trials ? (double)r->resends / trials : 0.0);
    fflush(stdout);
    free(r->first.v);
    free(r->assigned.v);
    free(r->worst.v);
    free(r->resume.v);
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: bench_cluster WORKDIR TROUPE MOCKLLM TOOLSERVER\n");
        return 2;
    }
    const char *work = argv[1];
    setenv("TROUPE_BIN", argv[2], 1);
    setenv("TROUPE_MOCKLLM_BIN", argv[3], 1);
    setenv("TROUPE_TOOLSERVER_BIN", argv[4], 1);
    signal(SIGPIPE, SIG_IGN);
    int trials = env_int("BENCH_TRIALS", 20), leader_trials = env_int("BENCH_LEADER_TRIALS", 20);
    int fo_runs = env_int("BENCH_FAILOVER_RUNS", 100), tool_ms = env_int("BENCH_TOOL_MS", 300);
    static char argbuf[512];
    snprintf(argbuf, sizeof argbuf, "%s", getenv("BENCH_NODE_ARGS") ? getenv("BENCH_NODE_ARGS") : "");
    for (char *tok = strtok(argbuf, " "); tok != NULL && n_extra < 30; tok = strtok(NULL, " "))
        extra_args[n_extra++] = tok;

    char path[512], mockbase[128], toolbase[128];
    snprintf(path, sizeof path, "%s/script.json", work);
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        perror(path);
        return 1;
    }
    char *loop = loop_steps(tool_ms);
    if (loop == NULL)
        return 1;
    fprintf(f, script, loop);
    free(loop);
    fclose(f);
    struct h_proc mock, tools;
    if (h_mockllm_start(&mock, path, work, mockbase, sizeof mockbase) != 0 ||
        h_toolserver_start(&tools, work, NULL, toolbase, sizeof toolbase) != 0)
        return 1;
    static char envbase[192];
    snprintf(envbase, sizeof envbase, "OPENAI_BASE_URL=%s", mockbase);
    const char *log = getenv("BENCH_NODE_LOG");
    static char *env[] = { envbase, "OPENAI_API_KEY=bench", "TROUPE_LOG=warn", NULL };
    if (log != NULL && strcmp(log, "info") == 0)
        env[2] = "TROUPE_LOG=info";
    extra_args[n_extra] = NULL;
    struct h_cluster_opts co = { .n = N, .env = env, .args = extra_args };
    int rc = 0;
    if (h_cluster_start(&cl, work, &co) != 0) {
        h_cluster_free(&cl);
        return 1;
    }
    for (int i = 0; i < N; i++) {
        size_t bl = strlen(cl.nodes[i].base);
        if (bl >= sizeof hv[i].base) {
            fprintf(stderr, "bench_cluster: node address too long: %s\n", cl.nodes[i].base);
            h_cluster_free(&cl);
            return 1;
        }
        memcpy(hv[i].base, cl.nodes[i].base, bl + 1);
    }
    int leader = wait_healthy(60000);
    if (leader < 0)
        return 1;
    printf("cluster: 3 nodes, leader node %d; node flags: %s\n", leader + 1,
           n_extra ? getenv("BENCH_NODE_ARGS") : "none (the shipped defaults: --failure-timeout 1500, raft's "
                                                 "election timeout 1000 ms and heartbeat 100 ms)");
    register_tool(leader, "add", "add", "write", toolbase);
    register_tool(leader, "lookup", "add", "read", toolbase);
    register_tool(leader, "guarded", "echo", "irreversible", toolbase);
    register_tool(leader, "nap", "sleep", "write", toolbase);

    /* ---- 1. step overhead ---- */
    /* The named figures: every write-tool step, leader- and follower-owned
     * runs together. */
    int follower = (leader + 1) % N;
    struct bench_samples all = { 0 };
    if (step_pass(leader, leader, "ten", "leader-owned runs, a write tool", "leader_owned", &all) != 0 ||
        step_pass(leader, follower, "ten", "follower-owned runs, a write tool", "follower_owned", &all) != 0 ||
        step_pass(leader, follower, "tenread", "follower-owned runs, a read tool (no durable wait before the call)",
                  "follower_owned.read_tool", NULL) != 0)
        rc = 1;
    if (all.n > 0) {
        bench_sort(&all);
        printf("step overhead, write-tool steps of leader- and follower-owned runs together: %zu steps\n", all.n);
        printf("bench: cluster.step_overhead_p50_ms %.3f ms\n", bench_pct(&all, 0.5) / 1000.0);
        printf("bench: cluster.step_overhead_p99_ms %.3f ms\n", bench_pct(&all, 0.99) / 1000.0);
        fflush(stdout);
    }
    free(all.v);

    /* ---- 2. failover ---- */
    struct fo_result fr = { 0 }, lr = { 0 };
    for (int t = 0; t < trials + leader_trials && rc == 0; t++) {
        leader = wait_healthy(60000);
        if (leader < 0) {
            rc = 1;
            break;
        }
        int kill_leader = t >= trials;
        int victim = kill_leader ? leader : (leader + 1 + t % 2) % N;
        if (failover_trial(victim, leader, fo_runs, toolbase, kill_leader ? &lr : &fr, t + 1) != 0)
            rc = 1;
    }
    if (fr.first.n > 0)
        report_failover("failover", "a follower", &fr);
    if (lr.first.n > 0)
        report_failover("failover_leader", "the leader", &lr);
    if (fr.dup != 0 || lr.dup != 0 || fr.lost != 0 || lr.lost != 0 || fr.early != 0 || lr.early != 0)
        rc = 1;

    h_cluster_free(&cl);
    h_proc_stop(&mock, 5000);
    h_proc_stop(&tools, 5000);
    h_proc_free(&mock);
    h_proc_free(&tools);
    return rc;
}
