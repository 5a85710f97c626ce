/* bench_e2e: the durable-run figures of issue 4 on real processes — a troupe
 * node (fsync on: raft writes its log durably), troupe-mockllm and
 * troupe-toolserver on loopback.
 *
 *   bench_e2e WORKDIR TROUPE MOCKLLM TOOLSERVER
 *
 * 1. Step overhead: 10-step runs (9 tool calls and an answer), one at a time
 *    (the named figures); extra lines: ten at a time, a read tool, and a
 *    model answering after 20 ms. For each step, the time from its llm.requested event to the next step's
 *    (or the run's end) minus the model's latency and the tool's duration as
 *    journaled (µs) is the orchestration overhead: journal appends, group
 *    commit, raft, RocksDB, actors, prompt assembly, validation.
 * 2. Throughput: 1,000 such runs in flight at once: runs per second from the
 *    first create to the last terminal status, the node's CPU time per 1,000
 *    steps (/proc/PID/stat), its peak RSS and its memory per in-flight run.
 * 3. A run of ~1,000 journal events (200 steps) for the replay figure, which
 *    bench_replay measures on the stopped node's store; its id is written to
 *    WORKDIR/replay_run.
 *
 * Prints `bench:` lines; everything else is for people. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench_support.h"
#include "harness.h"

static const char *script =
    "{\"model\": \"mock-gpt\", \"default\": \"ten\", \"scripts\": {"
    BENCH_SCRIPT_TEN BENCH_SCRIPT_TENREAD BENCH_SCRIPT_TENSLOW
    " \"long\": ["
    "  {\"tool_calls\": [{\"name\": \"echo\", \"arguments\": {\"note\": \"step {{step}}\"}}], \"repeat\": true}"
    " ]}}";

/* utime + stime of pid in ms. */
static double cpu_ms(pid_t pid)
{
    char path[64], buf[2048];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    if (p == NULL)
        return -1;
    unsigned long utime = 0, stime = 0;
    /* fields after ')': state(3) ... utime(14) stime(15) */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime, &stime) != 2)
        return -1;
    return (double)(utime + stime) * 1000.0 / (double)sysconf(_SC_CLK_TCK);
}

/* A field of /proc/PID/status in KiB (VmRSS, VmHWM). */
static long status_kib(pid_t pid, const char *field)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long v = -1;
    if (f == NULL)
        return -1;
    size_t fl = strlen(field);
    while (fgets(line, sizeof line, f) != NULL)
        if (strncmp(line, field, fl) == 0 && line[fl] == ':')
            v = atol(line + fl + 1);
    fclose(f);
    return v;
}

/* name: the tool's name; endpoint: the tool server's tool it calls. */
static void register_tool(struct h_node *n, const char *name, const char *endpoint, const char *risk,
                          const char *toolbase)
{
    char body[1024], url[256];
    snprintf(body, sizeof body,
             "{\"name\": \"%s\", \"description\": \"%s\", \"input_schema\": {\"type\": \"object\"},"
             " \"risk\": \"%s\", \"kind\": \"http\", \"config\": {\"url\": \"%s/tools/%s\","
             " \"allow\": [\"127.0.0.1\"]}, \"timeout_ms\": 30000}",
             name, name, risk, toolbase, endpoint);
    snprintf(url, sizeof url, "%s/v1/tools", n->base);
    struct h_resp r;
    h_http(&r, "POST", url, body, NULL, 10000);
    if (r.status != 201 && r.status != 200) {
        fprintf(stderr, "bench_e2e: register %s: HTTP %ld %s\n", name, r.status, r.body);
        exit(1);
    }
    h_resp_free(&r);
}

static int is_terminal(const char *s)
{
    return s != NULL && (!strcmp(s, "succeeded") || !strcmp(s, "failed") || !strcmp(s, "cancelled"));
}

static const char *run_status(struct h_node *n, const char *id, json_t **keep)
{
    json_t *j = h_get_run(n, id);
    *keep = j;
    return j != NULL ? json_string_value(json_object_get(j, "status")) : NULL;
}

/* Step overheads (µs) of one finished run, added to out; its gaps to g when
 * g is not NULL. */
static void overheads(struct h_node *n, const char *id, struct bench_samples *out, struct bench_gaps *g)
{
    json_t *ev = h_get_events(n, id);
    if (ev == NULL)
        return;
    bench_step_overheads(ev, out, g);
    json_decref(ev);
}

/* Long-poll the run (GET ?wait=60) until it ends or `guard` (h_now_ms) passes:
 * one request per run, so the node's loop (HTTP shares scheduler 0 with
 * raft) serves the runs measured, not the watcher. 1 if it succeeded, 0 if
 * it ended otherwise, -1 on timeout. */
static int wait_terminal(struct h_node *n, const char *id, uint64_t guard)
{
    char url[256];
    snprintf(url, sizeof url, "%s/v1/runs/%s?wait=60", n->base, id);
    while (h_now_ms() < guard) {
        struct h_resp r;
        h_http(&r, "GET", url, NULL, NULL, 65000);
        const char *st = r.json != NULL ? json_string_value(json_object_get(r.json, "status")) : NULL;
        int rv = is_terminal(st) ? strcmp(st, "succeeded") == 0 : -1;
        h_resp_free(&r);
        if (rv >= 0)
            return rv;
    }
    return -1;
}

static char *create(struct h_node *n, const char *script_name, int max_steps)
{
    char body[512];
    snprintf(body, sizeof body,
             "{\"goal\": \"benchmark\", \"agent\": {\"model\": \"mock-gpt\", \"system\": \"[mock:%s]\","
             " \"tools\": [\"add\", \"lookup\", \"echo\"], \"max_steps\": %d}}",
             script_name, max_steps);
    return h_create_run(n, body, NULL);
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: bench_e2e WORKDIR TROUPE MOCKLLM TOOLSERVER\n");
        return 2;
    }
    const char *work = argv[1];
    setenv("TROUPE_BIN", argv[2], 1);
    setenv("TROUPE_MOCKLLM_BIN", argv[3], 1);
    setenv("TROUPE_TOOLSERVER_BIN", argv[4], 1);
    int n_inflight = getenv("BENCH_RUNS") ? atoi(getenv("BENCH_RUNS")) : 1000;

    char path[512], mockbase[128], toolbase[128], data[512];
    snprintf(path, sizeof path, "%s/script.json", work);
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        perror(path);
        return 1;
    }
    fputs(script, f);
    fclose(f);
    snprintf(data, sizeof data, "%s/node", work);

    struct h_proc mock, tools;
    struct h_node node;
    if (h_mockllm_start(&mock, path, work, mockbase, sizeof mockbase) != 0 ||
        h_toolserver_start(&tools, work, NULL, toolbase, sizeof toolbase) != 0)
        return 1;
    char envbase[192];
    snprintf(envbase, sizeof envbase, "OPENAI_BASE_URL=%s", mockbase);
    char *env[] = { envbase, "OPENAI_API_KEY=bench", "TROUPE_LOG=warn", NULL };
    /* BENCH_NODE_ARGS: more node flags, split at spaces (A/B runs, e.g.
     * "--append-linger-ms 0"). */
    char *args[16] = { "--max-active-runs", "2000", NULL };
    char *extra = getenv("BENCH_NODE_ARGS") ? strdup(getenv("BENCH_NODE_ARGS")) : NULL;
    int n_args = 2;
    for (char *save = NULL, *t = extra ? strtok_r(extra, " ", &save) : NULL; t != NULL && n_args < 15;
         t = strtok_r(NULL, " ", &save))
        args[n_args++] = t;
    args[n_args] = NULL;
    if (h_node_start(&node, data, args, env) != 0)
        return 1;
    register_tool(&node, "add", "add", "write", toolbase);
    register_tool(&node, "lookup", "add", "read", toolbase);
    register_tool(&node, "echo", "echo", "write", toolbase);
    pid_t pid = node.proc.pid;

    /* ---- 1. step overhead ------------------------------------------------------
     * One run at a time: the latency orchestration adds to each step (the
     * named figures). Then ten at a time: on this 2-core machine the node,
     * the mock model, the tool server and this driver share the cores, so
     * the extra figures include queueing behind other runs' work. */
    double p50_1 = 0, p99_1 = 0;
    /* Pass 3: the write tool again, the model answering after 20 ms (every
     * real model takes longer): the step's lazy appends (tool.completed +
     * llm.requested) outwait their linger and are written while the model
     * thinks, as in production, and every thread sleeps between steps.
     * One run at a time is watched by a long poll, ten by a sweep. */
    for (int pass = 0; pass < 4; pass++) {
        int conc = pass == 1 ? 10 : 1;
        const char *which = pass == 2 ? "tenread" : pass == 3 ? "tenslow" : "ten";
        int total = conc == 1 ? 50 : 100;
        char **a_ids = calloc((size_t)total, sizeof *a_ids);
        int next = 0, finished = 0;
        int active[10];
        for (int i = 0; i < 10; i++)
            active[i] = -1;
        for (; conc == 1 && next < total; next++) {
            a_ids[next] = create(&node, which, 20);
            if (a_ids[next] == NULL || wait_terminal(&node, a_ids[next], h_now_ms() + 300000) < 0)
                return 1;
        }
        while (conc > 1 && finished < total) {
            /* A sweep every 2 ms: light enough not to steal the node's loop
             * (HTTP shares scheduler 0 with raft) from the runs measured. */
            struct timespec pause = { 0, 2 * 1000000L };
            nanosleep(&pause, NULL);
            for (int i = 0; i < conc; i++) {
                if (active[i] >= 0) {
                    json_t *j;
                    const char *st = run_status(&node, a_ids[active[i]], &j);
                    int done = is_terminal(st);
                    if (j != NULL)
                        json_decref(j);
                    if (!done)
                        continue;
                    finished++;
                    active[i] = -1;
                }
                if (next < total) {
                    a_ids[next] = create(&node, which, 20);
                    if (a_ids[next] == NULL)
                        return 1;
                    active[i] = next++;
                }
            }
        }
        struct bench_samples ov = { 0 };
        struct bench_gaps g = { 0 };
        for (int i = 0; i < total; i++) {
            overheads(&node, a_ids[i], &ov, conc == 1 ? &g : NULL);
            free(a_ids[i]);
        }
        free(a_ids);
        bench_sort(&ov);
        double p50 = bench_pct(&ov, 0.5) / 1000.0, p99 = bench_pct(&ov, 0.99) / 1000.0;
        printf("step overhead, %d run%s at a time%s: %zu steps of %d runs: p50 %.3f ms, p90 %.3f ms, p99 %.3f ms, "
               "max %.3f ms\n",
               conc, conc == 1 ? "" : "s",
               pass == 2 ? ", a read tool" : pass == 3 ? ", a write tool, the model answering after 20 ms" : ", a write tool",
               ov.n, total, p50, bench_pct(&ov, 0.9) / 1000.0, p99, ov.n ? ov.v[ov.n - 1] / 1000.0 : 0.0);
        bench_gaps_report(&g);
        const char *suffix = pass == 1 ? ".10_runs" : pass == 2 ? ".read_tool" : pass == 3 ? ".model_20ms" : NULL;
        if (suffix == NULL) {
            p50_1 = p50;
            p99_1 = p99;
        } else {
            /* read_tool: no wait for tool.started's ack before the call. */
            printf("bench: run.step_overhead_p50_ms%s %.3f ms\n", suffix, p50);
            printf("bench: run.step_overhead_p99_ms%s %.3f ms\n", suffix, p99);
        }
        bench_samples_free(&ov);
    }
    printf("bench: run.step_overhead_p50_ms %.3f ms\n", p50_1);
    printf("bench: run.step_overhead_p99_ms %.3f ms\n", p99_1);
    fflush(stdout);

    /* ---- 2. 1,000 runs in flight ----------------------------------------------- */
    long rss_base = status_kib(pid, "VmRSS");
    double cpu0 = cpu_ms(pid);
    uint64_t t0 = h_now_ms();
    char **ids = calloc((size_t)n_inflight, sizeof *ids);
    for (int i = 0; i < n_inflight; i++) {
        ids[i] = create(&node, "ten", 20);
        if (ids[i] == NULL)
            return 1;
    }
    long rss_inflight = status_kib(pid, "VmRSS");
    /* One long poll per run: the CPU figure is the runs', not the watcher's. */
    int ok = 0;
    long rss_max = rss_inflight;
    uint64_t guard = h_now_ms() + 600000;
    for (int i = 0; i < n_inflight; i++) {
        int rv = wait_terminal(&node, ids[i], guard);
        if (rv < 0)
            break;
        ok += rv;
        long rss = status_kib(pid, "VmRSS");
        if (rss > rss_max)
            rss_max = rss;
    }
    uint64_t t1 = h_now_ms();
    double cpu1 = cpu_ms(pid);
    long hwm = status_kib(pid, "VmHWM");
    double secs = (double)(t1 - t0) / 1000.0;
    double steps = (double)ok * 10.0;
    printf("throughput: %d runs created at once, %d succeeded in %.2f s; node CPU %.0f ms; RSS %ld KiB before, "
           "%ld KiB with all in flight, peak %ld KiB\n",
           n_inflight, ok, secs, cpu1 - cpu0, rss_base, rss_inflight, hwm);
    printf("bench: run.runs_per_s %.1f runs/s\n", (double)ok / secs);
    printf("bench: run.cpu_ms_per_1000_steps %.1f ms\n", steps > 0 ? (cpu1 - cpu0) / steps * 1000.0 : 0.0);
    printf("bench: run.rss_mib %.1f MiB\n", (double)hwm / 1024.0);
    printf("bench: run.mem_per_inflight_run_kib %.1f KiB\n",
           (double)((rss_max > rss_base ? rss_max : rss_base) - rss_base) / (double)n_inflight);
    fflush(stdout);
    for (int i = 0; i < n_inflight; i++)
        free(ids[i]);
    free(ids);

    /* ---- 3. a ~1,000-event journal for the replay figure ---------------------- */
    char *long_id = create(&node, "long", 200);
    char *st = long_id != NULL ? h_wait_run_terminal(&node, long_id, 300000) : NULL;
    json_t *ev = long_id != NULL ? h_get_events(&node, long_id) : NULL;
    printf("replay run: %s ended %s with %zu events\n", long_id ? long_id : "?", st ? st : "?",
           ev ? json_array_size(ev) : 0);
    if (ev != NULL)
        json_decref(ev);
    snprintf(path, sizeof path, "%s/replay_run", work);
    f = fopen(path, "w");
    if (f != NULL && long_id != NULL) {
        fprintf(f, "%s\n", long_id);
        fclose(f);
    }
    free(st);
    free(long_id);

    int status = h_proc_stop(&node.proc, 30000);
    h_node_free(&node);
    h_proc_stop(&mock, 5000);
    h_proc_stop(&tools, 5000);
    h_proc_free(&mock);
    h_proc_free(&tools);
    free(extra);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 && ok == n_inflight ? 0 : 1;
}
