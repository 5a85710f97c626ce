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

#include "harness.h"

static const char *script =
    "{\"model\": \"mock-gpt\", \"default\": \"ten\", \"scripts\": {"
    " \"ten\": ["
    "  {\"tool_calls\": [{\"name\": \"add\", \"arguments\": {\"a\": 1, \"b\": 2}}]},"
    "  {\"tool_calls\": [{\"name\": \"add\", \"arguments\": {\"a\": 2, \"b\": 3}}]},"
    "  {\"tool_calls\": [{\"name\": \"add\", \"arguments\": {\"a\": 3, \"b\": 4}}]},"
    "  {\"tool_calls\": [{\"name\": \"add\", \"arguments\": {\"a\": 4, \"b\": 5}}]},"
    "  {\"tool_calls\": [{\"name\": \"add\", \"arguments\": {\"a\": 5, \"b\": 6}}]},"
    "  {\"tool_calls\": [{\"name\": \"add\", \"arguments\": {\"a\": 6, \"b\": 7}}]},"
    "  {\"tool_calls\": [{\"name\": \"add\", \"arguments\": {\"a\": 7, \"b\": 8}}]},"
    "  {\"tool_calls\": [{\"name\": \"add\", \"arguments\": {\"a\": 8, \"b\": 9}}]},"
    "  {\"tool_calls\": [{\"name\": \"add\", \"arguments\": {\"a\": 9, \"b\": 10}}]},"
    "  {\"content\": \"The last sum was {{last_tool_result}}\"}"
    " ],"
    " \"tenread\": ["
    "  {\"tool_calls\": [{\"name\": \"lookup\", \"arguments\": {\"a\": 1, \"b\": 2}}]},"
    "  {\"tool_calls\": [{\"name\": \"lookup\", \"arguments\": {\"a\": 2, \"b\": 3}}]},"
    "  {\"tool_calls\": [{\"name\": \"lookup\", \"arguments\": {\"a\": 3, \"b\": 4}}]},"
    "  {\"tool_calls\": [{\"name\": \"lookup\", \"arguments\": {\"a\": 4, \"b\": 5}}]},"
    "  {\"tool_calls\": [{\"name\": \"lookup\", \"arguments\": {\"a\": 5, \"b\": 6}}]},"
    "  {\"tool_calls\": [{\"name\": \"lookup\", \"arguments\": {\"a\": 6, \"b\": 7}}]},"
    "  {\"tool_calls\": [{\"name\": \"lookup\", \"arguments\": {\"a\": 7, \"b\": 8}}]},"
    "  {\"tool_calls\": [{\"name\": \"lookup\", \"arguments\": {\"a\": 8, \"b\": 9}}]},"
    "  {\"tool_calls\": [{\"name\": \"lookup\", \"arguments\": {\"a\": 9, \"b\": 10}}]},"
    "  {\"content\": \"The last sum was {{last_tool_result}}\"}"
    " ],"
    " \"tenslow\": ["
    "  {\"tool_calls\": [{\"name\": \"add\", \"arguments\": {\"a\": 1, \"b\": 2}}], \"delay_ms\": 20},"
    "  {\"tool_calls\": [{\"name\": \"add\", \"arguments\": {\"a\": 2, \"b\": 3}}], \"delay_ms\": 20},"
    "  {\"tool_calls\": [{\"name\": \"add\", \"arguments\": {\"a\": 3, \"b\": 4}}], \"delay_ms\": 20},"
    "  {\"tool_calls\": [{\"name\": \"add\", \"arguments\": {\"a\": 4, \"b\": 5}}], \"delay_ms\": 20},"
    "  {\"tool_calls\": [{\"name\": \"add\", \"arguments\": {\"a\": 5, \"b\": 6}}], \"delay_ms\": 20},"
    "  {\"tool_calls\": [{\"name\": \"add\", \"arguments\": {\"a\": 6, \"b\": 7}}], \"delay_ms\": 20},"
    "  {\"tool_calls\": [{\"name\": \"add\", \"arguments\": {\"a\": 7, \"b\": 8}}], \"delay_ms\": 20},"
    "  {\"tool_calls\": [{\"name\": \"add\", \"arguments\": {\"a\": 8, \"b\": 9}}], \"delay_ms\": 20},"
    "  {\"tool_calls\": [{\"name\": \"add\", \"arguments\": {\"a\": 9, \"b\": 10}}], \"delay_ms\": 20},"
    "  {\"content\": \"The last sum was {{last_tool_result}}\", \"delay_ms\": 20}"
    " ],"
    " \"long\": ["
    "  {\"tool_calls\": [{\"name\": \"echo\", \"arguments\": {\"note\": \"step {{step}}\"}}], \"repeat\": true}"
    " ]}}";

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static uint64_t pct(uint64_t *v, size_t n, double p)
{
    if (n == 0)
        return 0;
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);
    return v[i];
}

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

static int64_t ev_time(json_t *e)
{
    /* "time" is RFC 3339 with µs; parse it */
    const char *s = json_string_value(json_object_get(e, "time"));
    struct tm tm = { 0 };
    long usec = 0;
    if (s == NULL || sscanf(s, "%d-%d-%dT%d:%d:%d.%ldZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
                            &tm.tm_min, &tm.tm_sec, &usec) < 6)
        return -1;
    /* fractional digits may be fewer than 6 */
    const char *dot = strchr(s, '.');
    if (dot != NULL) {
        size_t digits = strspn(dot + 1, "0123456789");
        for (size_t d = digits; d < 6; d++)
            usec *= 10;
    }
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (int64_t)timegm(&tm) * 1000000 + usec;
}

static uint64_t data_u64(json_t *e, const char *key)
{
    return (uint64_t)json_integer_value(json_object_get(json_object_get(e, "data"), key));
}

/* Overhead samples (µs) of one finished run, appended to v. */
static void overheads(struct h_node *n, const char *id, uint64_t **v, size_t *nv, size_t *cap)
{
    json_t *ev = h_get_events(n, id);
    if (ev == NULL)
        return;
    size_t len = json_array_size(ev);
    int64_t start = -1;
    uint64_t llm_us = 0, tool_us = 0;
    for (size_t i = 0; i < len; i++) {
        json_t *e = json_array_get(ev, i);
        const char *type = json_string_value(json_object_get(e, "type"));
        int64_t t = ev_time(e);
        int boundary = !strcmp(type, "llm.requested") || !strcmp(type, "run.succeeded") || !strcmp(type, "run.failed");
        if (boundary && start >= 0) {
            int64_t span = t - start;
            int64_t o = span - (int64_t)llm_us - (int64_t)tool_us;
            if (*nv == *cap) {
                *cap = *cap ? 2 * *cap : 1024;
                *v = realloc(*v, *cap * sizeof **v);
            }
            (*v)[(*nv)++] = o > 0 ? (uint64_t)o : 0;
        }
        if (!strcmp(type, "llm.requested")) {
            start = t;
            llm_us = tool_us = 0;
        } else if (!strcmp(type, "llm.completed")) {
            llm_us = data_u64(e, "latency_us");
        } else if (!strcmp(type, "tool.completed")) {
            uint64_t d = data_u64(e, "duration_us");
            if (d > tool_us)
                tool_us = d; /* parallel calls overlap: the longest */
        }
    }
    json_decref(ev);
}

/* Where a step's time goes: the median gap (µs) between each pair of
 * consecutive event types of the finished runs, the model's latency and the
 * tool's duration taken out of the gaps that contain them. For people. */
#define GAP_KINDS 16
struct gaps {
    char name[GAP_KINDS][64];
    uint64_t *v[GAP_KINDS];
    size_t n[GAP_KINDS], cap[GAP_KINDS];
    int kinds;
};

static void gaps_add(struct gaps *g, const char *from, const char *to, int64_t us)
{
    char name[64];
    int k;
    snprintf(name, sizeof name, "%s>%s", from, to);
    for (k = 0; k < g->kinds; k++)
        if (!strcmp(g->name[k], name))
            break;
    if (k == g->kinds) {
        if (k == GAP_KINDS)
            return;
        snprintf(g->name[k], sizeof g->name[k], "%s", name);
        g->kinds++;
    }
    if (g->n[k] == g->cap[k]) {
        g->cap[k] = g->cap[k] ? 2 * g->cap[k] : 256;
        g->v[k] = realloc(g->v[k], g->cap[k] * sizeof *g->v[k]);
    }
    g->v[k][g->n[k]++] = us > 0 ? (uint64_t)us : 0;
}

static void gaps_of(struct h_node *n, const char *id, struct gaps *g)
{
    json_t *ev = h_get_events(n, id);
    if (ev == NULL)
        return;
    const char *prev = NULL;
    int64_t prev_t = 0;
    for (size_t i = 0; i < json_array_size(ev); i++) {
        json_t *e = json_array_get(ev, i);
        const char *type = json_string_value(json_object_get(e, "type"));
        int64_t t = ev_time(e);
        if (prev != NULL) {
            int64_t d = t - prev_t;
            if (!strcmp(type, "llm.completed"))
                d -= (int64_t)data_u64(e, "latency_us");
            else if (!strcmp(type, "tool.completed"))
                d -= (int64_t)data_u64(e, "duration_us");
            gaps_add(g, prev, type, d);
        }
        prev = type;
        prev_t = t;
    }
    json_decref(ev);
}

static void gaps_print(struct gaps *g)
{
    for (int k = 0; k < g->kinds; k++) {
        qsort(g->v[k], g->n[k], sizeof *g->v[k], cmp_u64);
        if (g->n[k] >= 20)
            printf("  %-40s p50 %6.3f ms  p90 %6.3f ms  (%zu)\n", g->name[k],
                   (double)g->v[k][g->n[k] / 2] / 1000, (double)g->v[k][g->n[k] * 9 / 10] / 1000, g->n[k]);
        free(g->v[k]);
    }
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
    char *args[] = { "--max-active-runs", "2000", NULL };
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
    uint64_t p50_1 = 0, p99_1 = 0;
    /* Pass 3: the write tool again, the model answering after 20 ms (every
     * real model takes longer): the previous entry of the step (tool.completed
     * + llm.requested) is written while the model thinks, as in production,
     * instead of delaying the commit of tool.started as it does against an
     * instant mock. */
    for (int pass = 0; pass < 4; pass++) {
        int conc = pass == 1 ? 10 : 1;
        const char *which = pass == 2 ? "tenread" : pass == 3 ? "tenslow" : "ten";
        int total = conc == 1 ? 50 : 100;
        char **a_ids = calloc((size_t)total, sizeof *a_ids);
        int next = 0, finished = 0;
        int active[10];
        for (int i = 0; i < 10; i++)
            active[i] = -1;
        while (finished < total) {
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
        uint64_t *ov = NULL;
        size_t nov = 0, cov = 0;
        struct gaps g = { 0 };
        for (int i = 0; i < total; i++) {
            overheads(&node, a_ids[i], &ov, &nov, &cov);
            if (conc == 1)
                gaps_of(&node, a_ids[i], &g);
            free(a_ids[i]);
        }
        free(a_ids);
        qsort(ov, nov, sizeof *ov, cmp_u64);
        printf("step overhead, %d run%s at a time%s: %zu steps of %d runs: p50 %.3f ms, p90 %.3f ms, p99 %.3f ms, "
               "max %.3f ms\n",
               conc, conc == 1 ? "" : "s",
               pass == 2 ? ", a read tool" : pass == 3 ? ", a write tool, the model answering after 20 ms" : ", a write tool",
               nov, total, (double)pct(ov, nov, 0.5) / 1000,
               (double)pct(ov, nov, 0.9) / 1000, (double)pct(ov, nov, 0.99) / 1000,
               nov ? (double)ov[nov - 1] / 1000 : 0.0);
        gaps_print(&g);
        if (pass == 0) {
            p50_1 = pct(ov, nov, 0.5);
            p99_1 = pct(ov, nov, 0.99);
        } else if (pass == 3) {
            printf("bench: run.step_overhead_p50_ms.model_20ms %.3f ms\n", (double)pct(ov, nov, 0.5) / 1000);
            printf("bench: run.step_overhead_p99_ms.model_20ms %.3f ms\n", (double)pct(ov, nov, 0.99) / 1000);
        } else if (pass == 2) {
            /* Read tools run without waiting for tool.started's ack. */
            printf("bench: run.step_overhead_p50_ms.read_tool %.3f ms\n", (double)pct(ov, nov, 0.5) / 1000);
            printf("bench: run.step_overhead_p99_ms.read_tool %.3f ms\n", (double)pct(ov, nov, 0.99) / 1000);
        } else {
            printf("bench: run.step_overhead_p50_ms.10_runs %.3f ms\n", (double)pct(ov, nov, 0.5) / 1000);
            printf("bench: run.step_overhead_p99_ms.10_runs %.3f ms\n", (double)pct(ov, nov, 0.99) / 1000);
        }
        free(ov);
    }
    printf("bench: run.step_overhead_p50_ms %.3f ms\n", (double)p50_1 / 1000);
    printf("bench: run.step_overhead_p99_ms %.3f ms\n", (double)p99_1 / 1000);
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
    /* One long poll per run (GET ?wait=60): the fewest requests to the node
     * while it works, so the CPU figure is the runs', not the watcher's. */
    int done = 0, ok = 0;
    long rss_max = rss_inflight;
    uint64_t guard = h_now_ms() + 600000;
    for (int i = 0; i < n_inflight && h_now_ms() < guard; i++) {
        char url[256];
        snprintf(url, sizeof url, "%s/v1/runs/%s?wait=60", node.base, ids[i]);
        struct h_resp r;
        h_http(&r, "GET", url, NULL, NULL, 65000);
        const char *st = r.json != NULL ? json_string_value(json_object_get(r.json, "status")) : NULL;
        if (is_terminal(st)) {
            done++;
            ok += strcmp(st, "succeeded") == 0;
        } else {
            i--; /* not yet: ask again */
        }
        h_resp_free(&r);
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
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 && ok == n_inflight ? 0 : 1;
}
