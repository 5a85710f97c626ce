/* The chaos suite: a 3-node troupe cluster of real processes, each node in
 * its own network namespace (netns.c), with troupe-mockllm and the
 * deduplicating tool server; the test injects faults while agent runs call
 * tools, then checks an oracle.
 *
 *   chaos_schedules SCENARIO
 *
 * Scenarios: kill_follower, kill_leader, kill_owner (SIGKILL the node whose
 * tool call is in flight), stop_cont (SIGSTOP an owner past the failure
 * timeout, check its runs moved and progressed, SIGCONT it), partition (cut
 * the busiest node off from the other two past the failure timeout: it must
 * fence itself, its runs move; then heal), partition_leader (the same for
 * the leader), partition_blip (cut off only until it fences itself, then
 * heal), partition_forward (cut a follower off while a write it forwarded
 * waits in its socket: when its connection to the leader goes, nothing may
 * be left for the kernel to send later), kill_two (two of three die: the
 * survivor fences itself; both restart), restart_all (SIGKILL every node
 * and start them all again),
 * stop_in_backoff and stop_follower_in_backoff (SIGSTOP a node, or a
 * follower, while its tool executor waits to retry a call: after SIGCONT
 * the retry must not go out for a run that moved), random (TROUPE_CHAOS_ROUNDS rounds, default 2, of faults drawn from the
 * above with TROUPE_CHAOS_SEED, default the time: printed so that a failure
 * can be replayed; half the seeds cap the nodes' capacity), oracle_selftest
 * (forged receipts must be reported). Every run also makes a flaky call
 * (503 once, retried by the tool executor) unless TROUPE_CHAOS_FLAKY=0.
 * TROUPE_CHAOS_FAILURE_MS sets the
 * nodes' --failure-timeout (default 3000); each round creates 3 + a random
 * number below TROUPE_CHAOS_RUNS (default 4) runs.
 *
 * Each round creates runs on random nodes, waits (by polling the tool
 * server's receipts, never by sleeping) until a random number of tool calls
 * have been received, injects the fault and repairs it. After the last round:
 *
 * Oracle
 *  1. every run reaches a terminal state;
 *  2. each run's journal is gap-free (seq 1..N) and identical on every node;
 *     epochs never go down, and after run.assigned with epoch E no event has
 *     an epoch below E (a fenced owner's appends were refused);
 *  3. every node's state digest is the same at the same applied index;
 *  4. the tool server performed no effect twice (duplicates_performed 0),
 *     the payment balance equals the number of payments journaled as
 *     completed, and every key it received belongs to a tool.started in
 *     the journal of the run named by the caller, and an effect is received
 *     no earlier than that event;
 *  5. an Idempotency-Key was sent more than once only for a call that was in
 *     flight at a fault: every resend comes after a fault began, the first
 *     send before that fault was over (the cluster whole again: every node
 *     ready, one leader), and the call was still in flight for the resender:
 *     its tool.completed was not in the resending node's store when the
 *     fault began (nor when it was over, for a resend after that);
 *  6. no run had two owners acting at once: every receipt of an effect
 *     (a write tool: add, sleep, payment; echo is a read tool, which may go
 *     out before its tool.started commits, actors/run.h) comes from the
 *     node that owned the run at that instant by the journal's assignment
 *     history (run.created, run.assigned; times on the same machine's
 *     clock), so a node that was stopped or cut off and came back never
 *     called a tool for a run that had moved away from it.
 * Plus, during a partition, the cut-off node reports ready false (fenced).
 *
 * Needs root (network namespaces); without them it fails, never skips. */
#include <errno.h>
#include <inttypes.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"
#include "netns.h"

#define NODES 3
#define MAX_RUNS 256
#define MAX_FAULTS 64
#define FAILURE_TIMEOUT_MS 3000
#define LONG_WAIT_MS 240000 /* guards against hangs on a busy machine, never a threshold */

struct fault {
    char kind[32];
    int node;
    int64_t start_us, end_us; /* from the signal until the cluster recovered */
    json_t *completed[NODES]; /* per node: keys of calls its store held as completed just before */
    json_t *after[NODES];     /* the same once the cluster was whole again (end_us is after this) */
};

struct world {
    char *dir;
    struct h_cluster c;
    struct h_proc llm, tools;
    char tool_base[128];
    char receipts[512];
    char hosts[CN_MAX][64];
    char paths[CN_MAX][128];
    char *runs[MAX_RUNS];
    int n_runs;
    struct fault faults[MAX_FAULTS];
    int n_faults;
    uint64_t rng;
    int violations;
    int passed;
    int flaky;          /* runs use the chaos_flaky script */
};

static struct world W;
static const char *scenario;

static void nap(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

static int64_t wall_us(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000000 + tv.tv_usec;
}

static uint64_t rnd(void)
{
    /* splitmix64 */
    uint64_t z = (W.rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

__attribute__((format(printf, 1, 2))) static void violation(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "chaos: VIOLATION: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    W.violations++;
}

/* "2026-11-22T05:50:41.123456Z" -> µs since the epoch, or -1. */
static int64_t parse_time(const char *s)
{
    struct tm tm = { 0 };
    int us = 0;
    if (s == NULL || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d.%6dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
                            &tm.tm_min, &tm.tm_sec, &us) != 7)
        return -1;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (int64_t)timegm(&tm) * 1000000 + us;
}

static const char *str(const json_t *j)
{
    const char *s = json_string_value(j);
    return s != NULL ? s : "";
}

static int running(int i)
{
    return W.c.nodes[i].state == H_NODE_RUNNING;
}

static int random_running(void)
{
    for (int tries = 0; tries < 100; tries++) {
        int i = (int)(rnd() % NODES);
        if (running(i))
            return i;
    }
    return 0;
}

static void log_fault(const char *kind, int node)
{
    fprintf(stderr, "chaos: fault %s node %d at %" PRId64 "\n", kind, node + 1, wall_us());
}

/* Keys of the calls that node i's store holds as completed (committed and
 * applied there), read just before a fault. */
static json_t *completed_keys(int i)
{
    json_t *set = json_object();
    if (running(i)) {
        for (int r = 0; r < W.n_runs; r++) {
            char path[256];
            snprintf(path, sizeof path, "/v1/runs/%s/events?limit=10000", W.runs[r]);
            json_t *ev = h_cluster_get(&W.c, i, path);
            size_t a, b;
            json_t *e, *g;
            json_array_foreach(ev, a, e) {
                if (strcmp(str(json_object_get(e, "type")), "tool.completed") != 0)
                    continue;
                json_t *d = json_object_get(e, "data");
                json_array_foreach(ev, b, g) {
                    json_t *gd = json_object_get(g, "data");
                    if (b < a && strcmp(str(json_object_get(g, "type")), "tool.started") == 0 &&
                        json_equal(json_object_get(gd, "step"), json_object_get(d, "step")) &&
                        json_equal(json_object_get(gd, "call_index"), json_object_get(d, "call_index")))
                        json_object_set_new(set, str(json_object_get(gd, "idempotency_key")), json_true());
                }
            }
            if (ev != NULL)
                json_decref(ev);
        }
    }
    return set;
}

static struct fault *fault_begin(const char *kind, int node)
{
    assert_true(W.n_faults < MAX_FAULTS);
    struct fault *f = &W.faults[W.n_faults++];
    snprintf(f->kind, sizeof f->kind, "%s", kind);
    f->node = node;
    for (int i = 0; i < NODES; i++)
        f->completed[i] = completed_keys(i);
    f->start_us = f->end_us = wall_us();
    log_fault(kind, node);
    return f;
}

/* The cluster is whole again: every node ready, one leader. */
static void fault_end(struct fault *f)
{
    int rv = h_cluster_wait_ready(&W.c, -1, LONG_WAIT_MS);
    if (rv != 0)
        h_cluster_dump_logs(&W.c, 30);
    assert_int_equal(rv, 0);
    assert_true(h_cluster_leader(&W.c, LONG_WAIT_MS) >= 0);
    for (int i = 0; i < NODES; i++)
        f->after[i] = completed_keys(i);
    f->end_us = wall_us();
}

/* ---- set-up --------------------------------------------------------------------------- */

/* Two scripts: "chaos" (parallel add and echo, a sleep, a payment, a
 * sleep, the answer) and "chaos_flaky" (the default), the same with a flaky
 * call (503 once: the tool executor retries it) beside the payment. */
#define STEP_CALLS_1 \
    " {\"delay_ms\": 50, \"tool_calls\": [{\"name\": \"add\", \"arguments\": {\"a\": 20, \"b\": 22}}," \
    "                                     {\"name\": \"echo\", \"arguments\": {\"goal\": \"{{user}}\"}}]}," \
    " {\"delay_ms\": 50, \"tool_calls\": [{\"name\": \"sleep\", \"arguments\": {\"ms\": 700}}]},"
#define STEP_CALLS_2 \
    " {\"delay_ms\": 50, \"tool_calls\": [{\"name\": \"sleep\", \"arguments\": {\"ms\": 400}}]}," \
    " {\"delay_ms\": 50, \"content\": \"done: {{last_tool_result}}\"}"
static const char *script_json =
    "{\"model\": \"mock-gpt\", \"default\": \"chaos\", \"scripts\": {"
    "\"chaos\": [" STEP_CALLS_1
    " {\"delay_ms\": 50, \"tool_calls\": [{\"name\": \"payment\", \"arguments\": {\"amount\": 1}}]},"
    STEP_CALLS_2 "],"
    "\"chaos_flaky\": [" STEP_CALLS_1
    " {\"delay_ms\": 50, \"tool_calls\": [{\"name\": \"flaky\", \"arguments\": {\"fail_times\": 1}},"
    "                                     {\"name\": \"payment\", \"arguments\": {\"amount\": 1}}]},"
    STEP_CALLS_2 "]}}";

static int start_service(struct h_proc *p, const char *bin, const char *name, char *const extra[], char *base,
                         size_t cap, const char *suffix)
{
    char pf[512], log[512], listen[64];
    snprintf(pf, sizeof pf, "%s/%s.port", W.dir, name);
    snprintf(log, sizeof log, "%s/%s.log", W.dir, name);
    snprintf(listen, sizeof listen, "%s:0", CN_SERVICE_HOST);
    char *argv[16] = { (char *)bin, "--listen", listen, "--port-file", pf };
    int k = 5;
    for (int i = 0; extra[i] != NULL; i++)
        argv[k++] = extra[i];
    argv[k] = NULL;
    if (bin == NULL || h_proc_start(p, argv, NULL, log) != 0)
        return -1;
    int port = h_wait_port_file(pf, NULL, 30000);
    if (port < 0) {
        h_proc_dump_log(p, 20);
        return -1;
    }
    snprintf(base, cap, "http://%s:%d%s", CN_SERVICE_HOST, port, suffix);
    return 0;
}

static void register_tool(const char *name, const char *risk, const char *schema)
{
    char body[2048];
    snprintf(body, sizeof body,
             "{\"name\": \"%s\", \"description\": \"%s tool\", \"input_schema\": %s, \"risk\": \"%s\","
             " \"kind\": \"http\", \"config\": {\"url\": \"%s/tools/%s\", \"allow\": [\"%s\"]},"
             " \"timeout_ms\": 60000}",
             name, name, schema, risk, W.tool_base, name, CN_SERVICE_HOST);
    uint64_t until = h_now_ms() + LONG_WAIT_MS;
    while (h_now_ms() < until) {
        char url[256];
        snprintf(url, sizeof url, "%s/v1/tools", W.c.nodes[random_running()].base);
        struct h_resp r;
        h_http(&r, "POST", url, body, NULL, 20000);
        long st = r.status;
        if (st != 200 && st != 201)
            fprintf(stderr, "chaos: register %s: HTTP %ld %s (again)\n", name, st, r.body);
        h_resp_free(&r);
        if (st == 200 || st == 201)
            return;
        nap(100);
    }
    fail_msg("could not register tool %s", name);
}

static int world_up(void **state)
{
    (void)state;
    const char *flaky = getenv("TROUPE_CHAOS_FLAKY");
    W.flaky = flaky == NULL || strcmp(flaky, "0") != 0;
    const char *seed = getenv("TROUPE_CHAOS_SEED");
    W.rng = seed != NULL ? strtoull(seed, NULL, 0) : (uint64_t)wall_us();
    fprintf(stderr, "chaos: TROUPE_CHAOS_SEED=%llu\n", (unsigned long long)W.rng);
    W.dir = h_tmpdir("chaos");
    if (W.dir == NULL)
        return -1;
    if (cn_setup(NODES, W.hosts, W.paths) != 0) {
        fprintf(stderr, "chaos: FAILED: cannot create the network namespaces the suite needs (run as root "
                        "with iproute2 installed: scripts/install-deps.sh)\n");
        return -1;
    }
    char script[512], llm_base[160];
    snprintf(script, sizeof script, "%s/script.json", W.dir);
    FILE *f = fopen(script, "w");
    if (f == NULL || fputs(script_json, f) < 0 || fclose(f) != 0)
        return -1;
    snprintf(W.receipts, sizeof W.receipts, "%s/receipts.jsonl", W.dir);
    char *llm_extra[] = { "--script", script, NULL };
    char *tool_extra[] = { "--log", W.receipts, NULL };
    if (start_service(&W.llm, h_bin("mockllm"), "mockllm", llm_extra, llm_base, sizeof llm_base, "/v1") != 0 ||
        start_service(&W.tools, h_bin("toolserver"), "toolserver", tool_extra, W.tool_base, sizeof W.tool_base,
                      "") != 0)
        return -1;
    char envbase[256];
    snprintf(envbase, sizeof envbase, "OPENAI_BASE_URL=%s", llm_base);
    char *env[] = { envbase, "OPENAI_API_KEY=test", NULL };
    const char *ft = getenv("TROUPE_CHAOS_FAILURE_MS");
    struct h_cluster_opts o = { .n = NODES, .failure_timeout_ms = ft != NULL ? (unsigned)atoi(ft) : FAILURE_TIMEOUT_MS,
                                .env = env };
    /* Random schedules sometimes give the nodes a small capacity, so that
     * runs queue and failover has to respect it. */
    if (strcmp(scenario, "random") == 0 && rnd() % 2)
        o.capacity = 2 + (unsigned)(rnd() % 3);
    /* And sometimes two schedulers per node (the default here is one). */
    if (strcmp(scenario, "random") == 0 && rnd() % 2)
        o.schedulers = 2;
    fprintf(stderr, "chaos: node capacity %u (0: unlimited), schedulers %d (0: default)\n", o.capacity,
            o.schedulers);
    for (int i = 0; i < NODES; i++) {
        o.hosts[i] = W.hosts[i];
        o.netns[i] = W.paths[i];
    }
    if (h_cluster_start(&W.c, W.dir, &o) != 0)
        return -1;
    register_tool("add", "write", "{\"type\": \"object\", \"properties\": {\"a\": {\"type\": \"number\"}, \"b\": "
                         "{\"type\": \"number\"}}}");
    register_tool("echo", "read", "{\"type\": \"object\"}");
    register_tool("sleep", "write", "{\"type\": \"object\", \"properties\": {\"ms\": {\"type\": \"integer\"}}}");
    register_tool("flaky", "write", "{\"type\": \"object\", \"properties\": {\"fail_times\": {\"type\": \"integer\"}}}");
    register_tool("payment", "write", "{\"type\": \"object\", \"properties\": {\"amount\": {\"type\": \"integer\"}}, "
                             "\"required\": [\"amount\"]}");
    return 0;
}

/* Sanitizer reports in the nodes' logs (a build with -DTR_SANITIZE=ON):
 * leaks show only once the nodes have exited. Returns how many logs. */
static int sanitizer_reports(void)
{
    int bad = 0;
    for (int i = 0; i < NODES; i++) {
        char path[600], *line = NULL;
        size_t cap = 0;
        snprintf(path, sizeof path, "%s/n%d.log", W.dir, i + 1);
        FILE *f = fopen(path, "r");
        if (f == NULL)
            continue;
        int hit = 0;
        while (!hit && getline(&line, &cap, f) > 0)
            hit = strstr(line, "ERROR: AddressSanitizer") != NULL || strstr(line, "ERROR: LeakSanitizer") != NULL ||
                  strstr(line, "runtime error:") != NULL;
        free(line);
        fclose(f);
        if (hit) {
            fprintf(stderr, "chaos: FAILED: sanitizer report in %s\n", path);
            bad++;
        }
    }
    return bad;
}

static int world_down(void **state)
{
    (void)state;
    h_cluster_free(&W.c);
    int bad = W.dir != NULL ? sanitizer_reports() : 0;
    if (bad > 0)
        W.passed = 0;
    if (W.llm.pid > 0)
        h_proc_stop(&W.llm, 5000);
    if (W.tools.pid > 0)
        h_proc_stop(&W.tools, 5000);
    h_proc_free(&W.llm);
    h_proc_free(&W.tools);
    cn_teardown();
    for (int i = 0; i < W.n_runs; i++)
        free(W.runs[i]);
    for (int i = 0; i < W.n_faults; i++)
        for (int j = 0; j < NODES; j++) {
            json_decref(W.faults[i].completed[j]);
            if (W.faults[i].after[j] != NULL)
                json_decref(W.faults[i].after[j]);
        }
    if (W.passed)
        h_tmpdir_remove(W.dir);
    else
        fprintf(stderr, "chaos: logs and receipts kept in %s\n", W.dir), free(W.dir);
    return bad > 0 ? -1 : 0;
}

/* ---- runs and receipts ------------------------------------------------------------------ */

static void create_runs(int k)
{
    for (int i = 0; i < k; i++) {
        assert_true(W.n_runs < MAX_RUNS);
        char body[512], idem[64];
        snprintf(body, sizeof body,
                 "{\"goal\": \"chaos run %d\", \"agent\": {\"model\": \"mock-gpt\", \"system\": \"[mock:%s]\", "
                 "\"tools\": [\"add\", \"echo\", \"sleep\", \"flaky\", \"payment\"], \"max_steps\": 10}}",
                 W.n_runs, W.flaky ? "chaos_flaky" : "chaos");
        snprintf(idem, sizeof idem, "chaos-%llx-%d", (unsigned long long)W.rng, W.n_runs);
        char *id = NULL;
        uint64_t until = h_now_ms() + LONG_WAIT_MS;
        /* Any running node takes it (a follower forwards it to the leader);
         * the same Idempotency-Key makes a retry after a fault harmless. */
        while (h_now_ms() < until) {
            char url[256], hdr[128];
            snprintf(url, sizeof url, "%s/v1/runs", W.c.nodes[random_running()].base);
            snprintf(hdr, sizeof hdr, "Idempotency-Key: %s", idem);
            const char *headers[] = { hdr, NULL };
            struct h_resp r;
            h_http(&r, "POST", url, body, headers, 20000);
            const char *s = (r.status == 200 || r.status == 201) && r.json != NULL
                                ? json_string_value(json_object_get(r.json, "id"))
                                : NULL;
            if (s != NULL)
                id = strdup(s);
            else
                fprintf(stderr, "chaos: create run: HTTP %ld %s (again)\n", r.status, r.body);
            h_resp_free(&r);
            if (id != NULL)
                break;
            nap(100);
        }
        assert_non_null(id);
        W.runs[W.n_runs++] = id;
    }
}

/* Every receipt the tool server logged so far (a JSON array). */
static json_t *load_receipts(void)
{
    json_t *all = json_array();
    FILE *f = fopen(W.receipts, "r");
    if (f == NULL)
        return all;
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0) {
        json_t *j = json_loads(line, 0, NULL);
        if (j != NULL)
            json_array_append_new(all, j);
    }
    free(line);
    fclose(f);
    return all;
}

static size_t n_receipts(void)
{
    json_t *r = load_receipts();
    size_t n = json_array_size(r);
    json_decref(r);
    return n;
}

/* Wait until the tool server has received `more` receipts beyond now. */
static void wait_receipts(size_t more)
{
    size_t want = n_receipts() + more;
    uint64_t until = h_now_ms() + LONG_WAIT_MS;
    while (n_receipts() < want && h_now_ms() < until)
        nap(20);
}

/* The node (0-based) of the caller "node=N run=ID", and the run id. */
static int parse_caller(const char *caller, char *run, size_t cap)
{
    unsigned n = 0;
    char r[80] = "";
    if (caller == NULL || sscanf(caller, "node=%u run=%79s", &n, r) != 2)
        return -1;
    snprintf(run, cap, "%s", r);
    return (int)n - 1;
}

/* A node whose sleep call is in flight at the tool server (its run's owner
 * mid-step), or -1 after the guard. */
static int owner_mid_step(void)
{
    uint64_t until = h_now_ms() + LONG_WAIT_MS;
    while (h_now_ms() < until) {
        json_t *all = load_receipts();
        for (size_t i = json_array_size(all); i-- > 0;) {
            json_t *r = json_array_get(all, i);
            if (strcmp(str(json_object_get(r, "tool")), "sleep") != 0)
                continue;
            char run[80], url[512];
            int node = parse_caller(json_string_value(json_object_get(r, "caller")), run, sizeof run);
            if (node < 0 || node >= NODES || !running(node))
                continue;
            snprintf(url, sizeof url, "%s/_keys/%s", W.tool_base, json_string_value(json_object_get(r, "key")));
            struct h_resp k;
            h_http(&k, "GET", url, NULL, NULL, 5000);
            int in_flight = k.json != NULL && json_is_false(json_object_get(k.json, "done"));
            h_resp_free(&k);
            if (in_flight) {
                json_decref(all);
                return node;
            }
        }
        json_decref(all);
        nap(20);
    }
    return -1;
}

/* ---- cluster views ------------------------------------------------------------------------ */

/* The leader that every node of `among` (a bitmask, running nodes only)
 * agrees on, and which is among them; -1 until then (guarded). */
static int leader_among(unsigned among, int timeout_ms)
{
    uint64_t until = h_now_ms() + (uint64_t)timeout_ms;
    while (h_now_ms() < until) {
        int leader = -1, agree = 1, seen = 0;
        for (int i = 0; i < NODES && agree; i++) {
            if (!(among & (1u << i)) || !running(i))
                continue;
            json_t *j = h_cluster_info(&W.c, i);
            json_int_t l = j != NULL ? json_integer_value(json_object_get(j, "leader")) : 0;
            if (j != NULL)
                json_decref(j);
            seen++;
            if (l < 1 || l > NODES || !(among & (1u << (l - 1))))
                agree = 0;
            else if (leader < 0)
                leader = (int)l - 1;
            else if (leader != (int)l - 1)
                agree = 0;
        }
        if (agree && leader >= 0 && seen > 0)
            return leader;
        nap(20);
    }
    return -1;
}

/* Active runs node `node` owns, as node `view` sees them; -1 if unknown. */
static int runs_of(int view, int node)
{
    json_t *j = h_cluster_info(&W.c, view);
    int n = -1;
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(j, "nodes"), i, e) {
        if (json_integer_value(json_object_get(e, "id")) == node + 1)
            n = (int)json_integer_value(json_object_get(e, "runs"));
    }
    if (j != NULL)
        json_decref(j);
    return n;
}

/* The running node with the most active runs (ties: random), excluding
 * `except` (-1: none). */
static int busiest(int except)
{
    int best = -1, most = -1;
    int view = random_running();
    int start = (int)(rnd() % NODES);
    for (int k = 0; k < NODES; k++) {
        int i = (start + k) % NODES;
        if (i == except || !running(i))
            continue;
        int n = runs_of(view, i);
        if (n > most) {
            most = n;
            best = i;
        }
    }
    return best;
}

/* Wait until the leader of `among` says node owns no active run (its runs
 * moved, or finished). */
static void wait_moved(unsigned among, int node)
{
    uint64_t until = h_now_ms() + LONG_WAIT_MS;
    while (h_now_ms() < until) {
        int l = leader_among(among, LONG_WAIT_MS);
        if (l >= 0 && runs_of(l, node) == 0)
            return;
        nap(50);
    }
    fail_msg("the runs of node %d never moved", node + 1);
}

/* Some run's journal shows run.assigned away from node followed by another
 * event: the new owner progressed. Returns 1 when seen, 0 if no run moved. */
static int progressed_after_move(int view, int node)
{
    uint64_t until = h_now_ms() + LONG_WAIT_MS;
    int moved_any = 0;
    while (h_now_ms() < until) {
        moved_any = 0;
        for (int r = 0; r < W.n_runs; r++) {
            char path[256];
            snprintf(path, sizeof path, "/v1/runs/%s/events?limit=10000", W.runs[r]);
            json_t *ev = h_cluster_get(&W.c, view, path);
            size_t n = json_array_size(ev);
            for (size_t i = 0; i < n; i++) {
                json_t *e = json_array_get(ev, i);
                json_t *d = json_object_get(e, "data");
                if (strcmp(str(json_object_get(e, "type")), "run.assigned") == 0 &&
                    json_integer_value(json_object_get(d, "previous_owner")) == node + 1) {
                    moved_any = 1;
                    if (i + 1 < n) {
                        json_decref(ev);
                        return 1;
                    }
                }
            }
            if (ev != NULL)
                json_decref(ev);
        }
        if (!moved_any)
            return 0;
        nap(50);
    }
    fail_msg("runs moved from node %d but never progressed", node + 1);
    return 0;
}

/* ---- faults ------------------------------------------------------------------------------- */

static void restart_node(int i)
{
    int rv = h_cluster_restart(&W.c, i, LONG_WAIT_MS);
    if (rv != 0)
        h_cluster_dump_logs(&W.c, 30);
    assert_int_equal(rv, 0);
}

static unsigned all_but(int node)
{
    return ((1u << NODES) - 1) & ~(1u << node);
}

/* SIGKILL node; restart at once or after its runs moved (random). */
static void kill_and_restart(const char *kind, int node)
{
    struct fault *f = fault_begin(kind, node);
    assert_int_equal(h_cluster_kill(&W.c, node), 0);
    if (rnd() % 2) {
        wait_moved(all_but(node), node);
        fprintf(stderr, "chaos: node %d's runs moved\n", node + 1);
    }
    restart_node(node);
    fault_end(f);
}

static void f_kill_follower(void)
{
    int l = h_cluster_leader(&W.c, LONG_WAIT_MS);
    assert_true(l >= 0);
    kill_and_restart("kill_follower", busiest(l));
}

static void f_kill_leader(void)
{
    int l = h_cluster_leader(&W.c, LONG_WAIT_MS);
    assert_true(l >= 0);
    kill_and_restart("kill_leader", l);
}

static void f_kill_owner(void)
{
    int n = owner_mid_step();
    assert_true(n >= 0);
    kill_and_restart("kill_owner", n);
}

/* A node whose flaky call got its 503 and waits to retry (one receipt of
 * the key so far), or -1 after the guard. */
static int caller_in_backoff(int except)
{
    uint64_t until = h_now_ms() + LONG_WAIT_MS;
    while (h_now_ms() < until) {
        json_t *all = load_receipts();
        json_t *seen = json_object();
        int found = -1;
        size_t i;
        json_t *r;
        json_array_foreach(all, i, r) {
            const char *k = str(json_object_get(r, "key"));
            json_t *c = json_object_get(seen, k);
            json_object_set_new(seen, k, json_integer(c != NULL ? json_integer_value(c) + 1 : 1));
        }
        for (i = json_array_size(all); found < 0 && i-- > 0;) {
            r = json_array_get(all, i);
            char run[80];
            int node = parse_caller(str(json_object_get(r, "caller")), run, sizeof run);
            if (strcmp(str(json_object_get(r, "tool")), "flaky") == 0 && node >= 0 && node < NODES && running(node) &&
                node != except &&
                json_integer_value(json_object_get(seen, str(json_object_get(r, "key")))) == 1)
                found = node;
        }
        json_decref(seen);
        json_decref(all);
        if (found >= 0)
            return found;
        nap(5);
    }
    return -1;
}

static void stop_cont_node(const char *kind, int n)
{
    struct fault *f = fault_begin(kind, n);
    assert_int_equal(h_cluster_stop(&W.c, n), 0);
    wait_moved(all_but(n), n);
    int l = leader_among(all_but(n), LONG_WAIT_MS);
    assert_true(l >= 0);
    int moved = progressed_after_move(l, n);
    fprintf(stderr, "chaos: node %d stopped: its runs moved (%s)\n", n + 1, moved ? "and progressed" : "none had");
    assert_int_equal(h_cluster_cont(&W.c, n), 0);
    fault_end(f);
}

static void f_stop_cont(void)
{
    int n = busiest(-1);
    assert_true(n >= 0);
    stop_cont_node("stop_cont", n);
}

/* SIGSTOP a node while its tool executor waits to retry a call: after
 * SIGCONT the retry must not go out for a run that moved away. */
static void f_stop_in_backoff(void)
{
    int n = caller_in_backoff(-1);
    assert_true(n >= 0);
    stop_cont_node("stop_in_backoff", n);
}

/* The same for a follower (a leader does not fence itself by time). */
static void f_stop_follower_in_backoff(void)
{
    int l = h_cluster_leader(&W.c, LONG_WAIT_MS);
    assert_true(l >= 0);
    int n = caller_in_backoff(l);
    assert_true(n >= 0);
    stop_cont_node("stop_follower_in_backoff", n);
}

static void partition_node(const char *kind, int n)
{
    struct fault *f = fault_begin(kind, n);
    int side[1] = { n };
    assert_int_equal(cn_partition(side, 1), 0);
    /* The cut-off node fences itself: /healthz says ready false. */
    char url[160];
    snprintf(url, sizeof url, "%s/healthz", W.c.nodes[n].base);
    uint64_t until = h_now_ms() + LONG_WAIT_MS;
    int fenced = 0;
    while (!fenced && h_now_ms() < until) {
        struct h_resp r;
        h_http(&r, "GET", url, NULL, NULL, 5000);
        fenced = r.json != NULL && json_is_false(json_object_get(r.json, "ready"));
        h_resp_free(&r);
        if (!fenced)
            nap(20);
    }
    if (!fenced)
        violation("node %d cut off from the majority never reported ready false", n + 1);
    wait_moved(all_but(n), n);
    int l = leader_among(all_but(n), LONG_WAIT_MS);
    assert_true(l >= 0);
    int moved = progressed_after_move(l, n);
    fprintf(stderr, "chaos: node %d cut off: fenced, its runs moved (%s)\n", n + 1,
            moved ? "and progressed" : "none had");
    assert_int_equal(cn_heal(side, 1), 0);
    fault_end(f);
}

/* Cut the busiest node off only until it fences itself (half the failure
 * timeout), then heal: usually before the leader declares it down, so it
 * must unfence and go on with its own runs, or, on a slow machine, after,
 * and then it must leave them to their new owners. */
static void f_partition_blip(void)
{
    int n = busiest(-1);
    assert_true(n >= 0);
    struct fault *f = fault_begin("partition_blip", n);
    int side[1] = { n };
    assert_int_equal(cn_partition(side, 1), 0);
    char url[160];
    snprintf(url, sizeof url, "%s/healthz", W.c.nodes[n].base);
    uint64_t until = h_now_ms() + LONG_WAIT_MS;
    int fenced = 0;
    while (!fenced && h_now_ms() < until) {
        struct h_resp r;
        h_http(&r, "GET", url, NULL, NULL, 5000);
        fenced = r.json != NULL && json_is_false(json_object_get(r.json, "ready"));
        h_resp_free(&r);
        if (!fenced)
            nap(10);
    }
    if (!fenced)
        violation("node %d cut off from the majority never reported ready false", n + 1);
    assert_int_equal(cn_heal(side, 1), 0);
    fault_end(f);
}

/* What node n's namespace holds toward node l's peer port (ss): connections
 * established, whether one of them has bytes not yet acknowledged, and
 * closing ones (a plain close's FIN-WAIT-1 and the like) that still hold
 * some, described in `held`. 0, or -1 when ss could not be run. */
struct lead_socks {
    int estab, estab_queued, closing_queued;
    char held[256];
};

static int lead_sockets(int n, int l, struct lead_socks *ls)
{
    memset(ls, 0, sizeof *ls);
    const char *ns = strrchr(W.paths[n], '/');
    char cmd[400], want[96];
    snprintf(cmd, sizeof cmd, "ip netns exec %s ss -Htan", ns != NULL ? ns + 1 : W.paths[n]);
    snprintf(want, sizeof want, "%s:%d", W.c.nodes[l].host, W.c.nodes[l].peer_port);
    FILE *p = popen(cmd, "r");
    if (p == NULL)
        return -1;
    char line[512];
    while (fgets(line, sizeof line, p) != NULL) {
        char state[32], local[96], peer[96];
        unsigned long recvq, sendq;
        if (sscanf(line, "%31s %lu %lu %95s %95s", state, &recvq, &sendq, local, peer) != 5 ||
            strcmp(peer, want) != 0)
            continue;
        if (strcmp(state, "ESTAB") == 0) {
            ls->estab++;
            ls->estab_queued |= sendq > 0;
        } else if (sendq > 0 && strcmp(state, "SYN-SENT") != 0) {
            ls->closing_queued++;
            size_t used = strlen(ls->held);
            snprintf(ls->held + used, sizeof ls->held - used, "%s%s %lu bytes from %s", used ? "; " : "",
                     state, sendq, local);
        }
    }
    return pclose(p) == 0 ? 0 : -1;
}

/* A write a follower forwarded to the leader, failed when the connection to
 * the leader drops, must not go out later from the kernel: cut a follower
 * off, send it a write (a run to create, which it forwards; the bytes wait
 * unacknowledged in its socket, with its pings), and once its connection to
 * the leader is gone, no socket toward the leader's peer port may be left
 * closing with bytes still to send. A plain close would leave one sending
 * them, for the leader to commit after the heal behind the back of the
 * state service, which counted them out (cluster/peer.c pc_close resets
 * that connection instead). */
static void f_partition_forward(void)
{
    int l = h_cluster_leader(&W.c, LONG_WAIT_MS);
    assert_true(l >= 0);
    int n = -1, off = (int)(rnd() % (NODES - 1));
    for (int k = 0; k < NODES - 1 && n < 0; k++) {
        int c = (l + 1 + (off + k) % (NODES - 1)) % NODES; /* a follower */
        if (running(c))
            n = c;
    }
    assert_true(n >= 0);
    struct fault *f = fault_begin("partition_forward", n);
    int side[1] = { n };
    assert_int_equal(cn_partition(side, 1), 0);

    static const char body[] = "{\"goal\": \"chaos forward\", \"agent\": {\"model\": \"mock-gpt\", "
                               "\"system\": \"[mock:chaos]\", \"tools\": [\"echo\"], \"max_steps\": 10}}";
    char url[256], hdr[128];
    snprintf(url, sizeof url, "%s/v1/runs", W.c.nodes[n].base);
    snprintf(hdr, sizeof hdr, "Idempotency-Key: chaos-%llx-forward-%d", (unsigned long long)W.rng, W.n_faults);
    const char *headers[] = { hdr, NULL };
    struct h_resp r;
    h_http(&r, "POST", url, body, headers, 300); /* no answer expected: it waits on the leader */
    h_resp_free(&r);

    int seen_queued = 0, gone = 0, held = 0;
    uint64_t until = h_now_ms() + LONG_WAIT_MS;
    while (h_now_ms() < until) {
        struct lead_socks ls;
        assert_int_equal(lead_sockets(n, l, &ls), 0);
        if (ls.closing_queued > 0) {
            violation("node %d closed its connection to the leader (node %d) with bytes still to send: %s", n + 1,
                      l + 1, ls.held);
            held = 1;
            break;
        }
        seen_queued |= ls.estab_queued;
        if (seen_queued && ls.estab == 0) {
            gone = 1;
            break;
        }
        nap(20);
    }
    if (!gone && !held) /* a violation of an earlier fault must not hide this one */
        violation("node %d: %s", n + 1,
                  seen_queued ? "its connection to the leader was never dropped"
                              : "nothing it sent to the leader was ever seen waiting");
    fprintf(stderr, "chaos: node %d cut off with a forward queued: its connection to the leader %s\n", n + 1,
            gone ? "went with nothing left to send" : "did not go cleanly");
    assert_int_equal(cn_heal(side, 1), 0);
    fault_end(f);
}

static void f_partition(void)
{
    int n = busiest(-1);
    assert_true(n >= 0);
    partition_node("partition", n);
}

static void f_partition_leader(void)
{
    int l = h_cluster_leader(&W.c, LONG_WAIT_MS);
    assert_true(l >= 0);
    partition_node("partition_leader", l);
}

/* Two of three nodes die: no quorum, nothing may progress (the survivor
 * fences itself); both come back. */
static void f_kill_two(void)
{
    int a = (int)(rnd() % NODES), b = (a + 1 + (int)(rnd() % (NODES - 1))) % NODES;
    struct fault *f = fault_begin("kill_two", a);
    fprintf(stderr, "chaos: and node %d\n", b + 1);
    assert_int_equal(h_cluster_kill(&W.c, a), 0);
    assert_int_equal(h_cluster_kill(&W.c, b), 0);
    int survivor = (0 + 1 + 2) - a - b; /* NODES is 3 */
    char url[160];
    snprintf(url, sizeof url, "%s/healthz", W.c.nodes[survivor].base);
    uint64_t until = h_now_ms() + LONG_WAIT_MS;
    int fenced = 0;
    while (!fenced && h_now_ms() < until) {
        struct h_resp r;
        h_http(&r, "GET", url, NULL, NULL, 5000);
        fenced = r.json != NULL && json_is_false(json_object_get(r.json, "ready"));
        h_resp_free(&r);
        if (!fenced)
            nap(20);
    }
    if (!fenced)
        violation("node %d, alone, never reported ready false", survivor + 1);
    assert_int_equal(h_cluster_restart(&W.c, a, 0), 0);
    assert_int_equal(h_cluster_restart(&W.c, b, 0), 0);
    fault_end(f);
}

static void f_restart_all(void)
{
    struct fault *f = fault_begin("restart_all", -1);
    for (int i = 0; i < NODES; i++)
        if (W.c.nodes[i].state != H_NODE_DOWN)
            assert_int_equal(h_cluster_kill(&W.c, i), 0);
    for (int i = 0; i < NODES; i++)
        assert_int_equal(h_cluster_restart(&W.c, i, 0), 0);
    fault_end(f);
}

struct kind {
    const char *name;
    void (*fn)(void);
};

static const struct kind kinds[] = {
    { "kill_follower", f_kill_follower }, { "kill_leader", f_kill_leader }, { "kill_owner", f_kill_owner },
    { "stop_cont", f_stop_cont },         { "partition", f_partition },     { "restart_all", f_restart_all },
    { "partition_leader", f_partition_leader }, { "kill_two", f_kill_two },
    { "partition_blip", f_partition_blip },   { "partition_forward", f_partition_forward },
    /* These found a bug (fixed by "cluster, tools: no side effect from a
     * fenced node"): a node resumed after SIGSTOP sent the retry its tool
     * executor had scheduled before the stop, for a run that had moved. */
    { "stop_in_backoff", f_stop_in_backoff },
    { "stop_follower_in_backoff", f_stop_follower_in_backoff },
};
#define N_KINDS (sizeof kinds / sizeof kinds[0])

/* One round: runs, a random amount of progress, the fault. */
static void round_of(const struct kind *k)
{
    const char *more_runs = getenv("TROUPE_CHAOS_RUNS");
    int spread = more_runs != NULL && atoi(more_runs) > 0 ? atoi(more_runs) : 4;
    int n = 3 + (int)(rnd() % (uint64_t)spread);
    create_runs(n);
    size_t more = 1 + rnd() % (size_t)(3 * n);
    wait_receipts(more);
    k->fn();
}

/* ---- the oracle ------------------------------------------------------------------------------ */

static void wait_terminal(void)
{
    for (int r = 0; r < W.n_runs; r++) {
        char path[256];
        snprintf(path, sizeof path, "/v1/runs/%s", W.runs[r]);
        uint64_t until = h_now_ms() + LONG_WAIT_MS;
        const char *st = NULL;
        json_t *j = NULL;
        while (h_now_ms() < until) {
            j = h_cluster_get(&W.c, random_running(), path);
            st = j != NULL ? json_string_value(json_object_get(j, "status")) : NULL;
            if (st != NULL && (strcmp(st, "succeeded") == 0 || strcmp(st, "failed") == 0 ||
                               strcmp(st, "cancelled") == 0))
                break;
            if (j != NULL)
                json_decref(j);
            j = NULL;
            st = NULL;
            nap(50);
        }
        if (st == NULL) {
            violation("run %s never reached a terminal state", W.runs[r]);
            continue;
        }
        if (strcmp(st, "succeeded") != 0)
            fprintf(stderr, "chaos: run %s ended %s\n", W.runs[r], st);
        json_decref(j);
    }
}

/* What the journals say about one tool call (by its key). */
struct call_info {
    const char *run;
    int owner_hint;
    int64_t started_us;
    int64_t completed_us; /* -1: never */
    int payment;
};

/* Owner of run `ev` (its journal) at instant t: the latest run.created or
 * run.assigned at or before t; 0 if none. */
static int owner_at(json_t *ev, int64_t t)
{
    int owner = 0;
    size_t i;
    json_t *e;
    json_array_foreach(ev, i, e) {
        const char *type = str(json_object_get(e, "type"));
        if (strcmp(type, "run.created") != 0 && strcmp(type, "run.assigned") != 0)
            continue;
        if (parse_time(json_string_value(json_object_get(e, "time"))) > t)
            break;
        owner = (int)json_integer_value(json_object_get(json_object_get(e, "data"), "owner_node"));
    }
    return owner;
}

static void check_oracle(void)
{
    wait_terminal();
    char digest[160];
    if (h_cluster_wait_converged(&W.c, LONG_WAIT_MS, digest, sizeof digest) != 0)
        violation("the nodes' state digests differ");
    else
        fprintf(stderr, "chaos: every node's digest is %s\n", digest);

    /* 2: journals. */
    json_t *journals = json_object(); /* run -> events (node 1's copy) */
    json_t *keys = json_object();     /* key -> {run, started, completed, payment} */
    int payments_completed = 0;
    for (int r = 0; r < W.n_runs; r++) {
        char path[256];
        snprintf(path, sizeof path, "/v1/runs/%s/events?limit=10000", W.runs[r]);
        char *first = NULL;
        json_t *ev0 = NULL;
        for (int i = 0; i < NODES; i++) {
            json_t *ev = h_cluster_get(&W.c, i, path);
            if (ev == NULL) {
                violation("node %d has no journal for %s", i + 1, W.runs[r]);
                continue;
            }
            char *s = json_dumps(ev, JSON_COMPACT | JSON_SORT_KEYS);
            if (first == NULL) {
                first = s;
                ev0 = ev;
                continue;
            }
            if (strcmp(s, first) != 0)
                violation("the journal of %s differs between nodes (node %d)", W.runs[r], i + 1);
            free(s);
            json_decref(ev);
        }
        free(first);
        if (ev0 == NULL)
            continue;
        size_t i;
        json_t *e;
        json_int_t max_epoch = 0, fence = 0;
        json_array_foreach(ev0, i, e) {
            json_int_t seq = json_integer_value(json_object_get(e, "seq"));
            json_int_t epoch = json_integer_value(json_object_get(e, "epoch"));
            const char *type = str(json_object_get(e, "type"));
            json_t *d = json_object_get(e, "data");
            if (seq != (json_int_t)i + 1)
                violation("%s: event %zu has seq %lld (gap)", W.runs[r], i, (long long)seq);
            if (epoch < max_epoch || epoch < fence)
                violation("%s: event %lld (%s) has epoch %lld after epoch %lld", W.runs[r], (long long)seq, type,
                          (long long)epoch, (long long)(max_epoch > fence ? max_epoch : fence));
            if (epoch > max_epoch)
                max_epoch = epoch;
            if (strcmp(type, "run.assigned") == 0)
                fence = epoch;
            int64_t t = parse_time(json_string_value(json_object_get(e, "time")));
            if (strcmp(type, "tool.started") == 0) {
                const char *key = json_string_value(json_object_get(d, "idempotency_key"));
                if (key == NULL)
                    continue;
                json_t *k = json_object_get(keys, key);
                if (k == NULL) {
                    k = json_pack("{s:s, s:I, s:I, s:b}", "run", W.runs[r], "started", (json_int_t)t, "completed",
                                  (json_int_t)-1, "payment",
                                  strcmp(str(json_object_get(d, "tool")), "payment") == 0);
                    json_object_set_new(keys, key, k);
                }
                json_object_set_new(k, "step", json_copy(json_object_get(d, "step")));
                json_object_set_new(k, "call_index", json_copy(json_object_get(d, "call_index")));
            } else if (strcmp(type, "tool.completed") == 0) {
                const char *kk;
                json_t *k;
                json_object_foreach(keys, kk, k) {
                    if (strcmp(json_string_value(json_object_get(k, "run")), W.runs[r]) == 0 &&
                        json_equal(json_object_get(k, "step"), json_object_get(d, "step")) &&
                        json_equal(json_object_get(k, "call_index"), json_object_get(d, "call_index")) &&
                        json_integer_value(json_object_get(k, "completed")) < 0) {
                        json_object_set_new(k, "completed", json_integer(t));
                        if (json_is_true(json_object_get(k, "payment")) && json_is_null(json_object_get(d, "error")))
                            payments_completed++;
                    }
                }
            }
        }
        json_object_set_new(journals, W.runs[r], ev0);
    }

    /* 4: the tool server's own counts. */
    char url[256];
    snprintf(url, sizeof url, "%s/_stats", W.tool_base);
    struct h_resp st;
    h_http(&st, "GET", url, NULL, NULL, 10000);
    assert_non_null(st.json);
    json_int_t dups = json_integer_value(json_object_get(st.json, "duplicates_performed"));
    json_int_t balance = json_integer_value(json_object_get(st.json, "balance"));
    if (dups != 0)
        violation("the tool server performed %lld effects twice", (long long)dups);
    if (json_integer_value(json_object_get(st.json, "missing_keys")) != 0 ||
        json_integer_value(json_object_get(st.json, "conflicts")) != 0)
        violation("tool calls without a key or with a reused key: %s", st.body);
    if (balance != payments_completed)
        violation("payment balance %lld, but %d payments journaled as completed", (long long)balance,
                  payments_completed);
    fprintf(stderr, "chaos: tool server %s\n", st.body);
    h_resp_free(&st);

    /* 4, 5, 6: every receipt. */
    json_t *all = load_receipts();
    json_t *count = json_object(); /* key -> receipts */
    json_t *firsts = json_object(); /* key -> first receipt time */
    size_t i;
    json_t *rc;
    int resends = 0;
    json_array_foreach(all, i, rc) {
        const char *key = str(json_object_get(rc, "key"));
        int64_t t = json_integer_value(json_object_get(rc, "time_us"));
        char run[80];
        int node = parse_caller(json_string_value(json_object_get(rc, "caller")), run, sizeof run);
        json_t *k = json_object_get(keys, key);
        if (node < 0 || node >= NODES) {
            violation("receipt of %s without a caller (or from an unknown node)", key);
            continue;
        }
        if (k == NULL) {
            violation("node %d called key %s, which no journal started", node + 1, key);
            continue;
        }
        if (strcmp(json_string_value(json_object_get(k, "run")), run) != 0)
            violation("key %s is %s's but node %d called it for %s", key,
                      json_string_value(json_object_get(k, "run")), node + 1, run);
        /* A read tool has no side effect: it may go out as soon as its
         * tool.started is sent, before it is committed (actors/run.h,
         * invariant 2), so a fenced owner may still read. Effects wait for
         * the acknowledgement, and that is what the owner checks hold. */
        if (strcmp(str(json_object_get(rc, "tool")), "echo") == 0)
            goto count;
        if (t < json_integer_value(json_object_get(k, "started")))
            violation("node %d called %s at %lld, before its tool.started (%lld)", node + 1, key, (long long)t,
                      (long long)json_integer_value(json_object_get(k, "started")));
        int owner = owner_at(json_object_get(journals, run), t);
        if (owner != node + 1)
            violation("node %d called %s for %s at %lld while node %d owned it (two owners)", node + 1, key, run,
                      (long long)t, owner);
    count:;
        json_t *c = json_object_get(count, key);
        json_object_set_new(count, key, json_integer((c ? json_integer_value(c) : 0) + 1));
        json_t *first = json_object_get(firsts, key);
        if (first == NULL) {
            json_object_set_new(firsts, key, json_integer(t));
            continue;
        }
        /* flaky answers its first receipt 503: the executor's own retry
         * (actors/tool.h) is the second, fault or no fault. */
        if (strcmp(str(json_object_get(rc, "tool")), "flaky") == 0 &&
            json_integer_value(json_object_get(count, key)) == 2)
            continue;
        /* 5: a resend. Legitimate when some fault began before it, the
         * first send came before that fault was over, the resending node's
         * store did not hold the call's completion when the fault began
         * (a completion that a dying leader committed without telling this
         * node is still in flight for it), and, for a resend after the
         * fault was over, not then either. (Event times are proposal times,
         * not commit times, so within the fault the store is the only
         * witness of what a node knew.) */
        int ok = 0;
        for (int f = 0; f < W.n_faults && !ok; f++) {
            const struct fault *F = &W.faults[f];
            ok = F->start_us <= t && json_integer_value(first) <= F->end_us &&
                 json_object_get(F->completed[node], key) == NULL &&
                 (t <= F->end_us || json_object_get(F->after[node], key) == NULL);
        }
        if (!ok)
            violation("node %d re-sent key %s at %lld (first sent %lld), not in flight at any fault", node + 1, key,
                      (long long)t, (long long)json_integer_value(first));
    }
    const char *key;
    json_t *c;
    json_object_foreach(count, key, c)
        resends += json_integer_value(c) > 1;
    for (int f = 0; f < W.n_faults; f++)
        fprintf(stderr, "chaos: fault %d: %s node %d from %lld to %lld\n", f + 1, W.faults[f].kind,
                W.faults[f].node + 1, (long long)W.faults[f].start_us, (long long)W.faults[f].end_us);
    fprintf(stderr, "chaos: %d runs, %zu receipts, %d keys re-sent, %d faults\n", W.n_runs, json_array_size(all),
            resends, W.n_faults);
    json_decref(count);
    json_decref(firsts);
    json_decref(all);
    json_decref(keys);
    json_decref(journals);
}

/* ---- scenarios ---------------------------------------------------------------------------------- */

/* The oracle can fail: after a clean kill_follower round, forge receipts the
 * way bugs would produce them and check that each is reported. */
static void oracle_selftest(void)
{
    round_of(&kinds[0]);
    check_oracle();
    assert_int_equal(W.violations, 0);
    /* One more run after every fault is over. */
    create_runs(1);
    wait_terminal();

    /* Its payment key (the last one), its run and its owner. */
    json_t *all = load_receipts();
    const char *key = NULL, *caller = NULL;
    size_t i;
    json_t *rc;
    json_array_foreach(all, i, rc) {
        if (strcmp(str(json_object_get(rc, "tool")), "payment") == 0) {
            key = str(json_object_get(rc, "key"));
            caller = str(json_object_get(rc, "caller"));
        }
    }
    assert_non_null(key);
    char run[80], path[256];
    assert_true(parse_caller(caller, run, sizeof run) >= 0);
    snprintf(path, sizeof path, "/v1/runs/%s/events?limit=10000", run);
    json_t *ev = h_cluster_get(&W.c, 0, path);
    assert_non_null(ev);
    int64_t now = wall_us();
    int owner = owner_at(ev, now) - 1; /* the run's last owner */
    json_decref(ev);
    assert_true(owner >= 0 && owner < NODES);
    int other = (owner + 1) % NODES;
    FILE *f = fopen(W.receipts, "a");
    assert_non_null(f);
    /* 1. another node re-sends it long after every fault: two owners, and a
     *    resend not in flight at any fault; 2. a key no journal started. */
    fprintf(f, "{\"key\":\"%s\",\"tool\":\"payment\",\"receipt\":\"resend\",\"time_us\":%lld,"
               "\"caller\":\"node=%d run=%s\"}\n",
            key, (long long)now, other + 1, run);
    fprintf(f, "{\"key\":\"00ff\",\"tool\":\"payment\",\"receipt\":\"first\",\"time_us\":%lld,"
               "\"caller\":\"node=%d run=%s\"}\n",
            (long long)now, owner + 1, run);
    fclose(f);
    json_decref(all);
    fprintf(stderr, "chaos: self-test: three violations expected below\n");
    check_oracle();
    fprintf(stderr, "chaos: self-test: %d violations reported\n", W.violations);
    assert_int_equal(W.violations, 3);
    W.violations = 0;
}

static void run_scenario(void **state)
{
    (void)state;
    if (strcmp(scenario, "oracle_selftest") == 0) {
        oracle_selftest();
        W.passed = 1;
        return;
    }
    if (strcmp(scenario, "random") == 0) {
        const char *r = getenv("TROUPE_CHAOS_ROUNDS");
        int rounds = r != NULL ? atoi(r) : 2;
        for (int i = 0; i < rounds; i++) {
            const struct kind *k = &kinds[rnd() % N_KINDS];
            fprintf(stderr, "chaos: round %d/%d: %s\n", i + 1, rounds, k->name);
            round_of(k);
        }
    } else {
        const struct kind *k = NULL;
        for (size_t i = 0; i < N_KINDS; i++)
            if (strcmp(kinds[i].name, scenario) == 0)
                k = &kinds[i];
        if (k == NULL)
            fail_msg("no scenario %s", scenario);
        if (strstr(k->name, "backoff") != NULL)
            W.flaky = 1; /* they need a retry to catch */
        round_of(k);
    }
    check_oracle();
    assert_int_equal(W.violations, 0);
    W.passed = 1;
}

int main(int argc, char **argv)
{
    scenario = argc > 1 ? argv[1] : "random";
    const struct CMUnitTest tests[] = { cmocka_unit_test(run_scenario) };
    return cmocka_run_group_tests_name(scenario, tests, world_up, world_down);
}
