/* Crash recovery of one node: many runs in flight, the node SIGKILLed at
 * random moments and restarted, over and over.
 *
 * Each run takes five steps: an `add` call (write), a `sleep` call (a tool
 * in flight for a while), a `payment` (irreversible: waits for a human, whom
 * this test plays), another `add`, then a final answer; every model reply
 * comes after a delay. So kills land while runs wait for the model, while tools run, while
 * approvals wait, and while the group-commit batcher has appends in flight.
 *
 * Oracle, after the last restart:
 *  1. every run reaches a terminal status, and it is succeeded;
 *  2. every journal is gap-free (seq 1..N) and ends with its terminal event;
 *  3. the tool server performed no effect twice (duplicates_performed = 0),
 *     each run was charged exactly once (balance), and every tool call in the
 *     journals completed exactly once;
 *  4. a key was re-sent only for a call in flight at a kill: some kill came
 *     after the call's tool.started was journaled and before its
 *     tool.completed was, and the resend after that kill. (Journal times,
 *     not the tool server's first receipt: under load the server may read a
 *     request the node sent just before it was killed only after the kill.)
 *  5. the state digest after recovery equals the digest of the committed
 *     state: the same after another SIGKILL + restart, and the same when the
 *     store is deleted and rebuilt from the raft log alone.
 *
 * TROUPE_CRASH_RUNS (default 200) and TROUPE_CRASH_KILLS (default 8) scale it;
 * TROUPE_CRASH_SEED reproduces a schedule (the seed is printed).
 * TROUPE_CRASH_SNAPSHOT=N runs the node with --snapshot-threshold N (and a
 * trailing log of N/4): raft snapshots and truncates its log over and over,
 * so a kill usually finds the store (no RocksDB WAL: storage.h "No WAL")
 * behind the newest snapshot, and recovery goes through a restore as well
 * as a replay (ctest crash_recovery_snapshots). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"

#define AMOUNT 7

static uint64_t rng_state;

static uint64_t rnd(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static int env_int(const char *name, int dflt)
{
    const char *s = getenv(name);
    return s != NULL && atoi(s) > 0 ? atoi(s) : dflt;
}

static uint64_t wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void nap(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

static const char *script_json =
    "{\"model\": \"mock-gpt\", \"default\": \"crash\", \"scripts\": {\"crash\": ["
    " {\"delay_ms\": 100, \"tool_calls\": [{\"name\": \"add\", \"arguments\": {\"a\": 20, \"b\": 22}}]},"
    " {\"delay_ms\": 100, \"tool_calls\": [{\"name\": \"sleep\", \"arguments\": {\"ms\": 300}}]},"
    " {\"delay_ms\": 100, \"tool_calls\": [{\"name\": \"payment\", \"arguments\": {\"amount\": 7}}]},"
    " {\"delay_ms\": 100, \"tool_calls\": [{\"name\": \"add\", \"arguments\": {\"a\": 1, \"b\": 2}}]},"
    " {\"delay_ms\": 100, \"content\": \"done: {{last_tool_result}}\"}"
    "]}}";

#define CALLS_PER_RUN 4

static void register_tool(struct h_node *n, const char *name, const char *risk, const char *schema,
                          const char *toolbase, int timeout_ms)
{
    char body[2048], url[256];
    snprintf(body, sizeof body,
             "{\"name\": \"%s\", \"description\": \"%s tool\", \"input_schema\": %s, \"risk\": \"%s\","
             " \"kind\": \"http\", \"config\": {\"url\": \"%s/tools/%s\", \"allow\": [\"127.0.0.1\"]},"
             " \"timeout_ms\": %d}",
             name, name, schema, risk, toolbase, name, timeout_ms);
    snprintf(url, sizeof url, "%s/v1/tools", n->base);
    struct h_resp r;
    h_http(&r, "POST", url, body, NULL, 10000);
    if (r.status != 201 && r.status != 200)
        fail_msg("register %s: HTTP %ld %s", name, r.status, r.body);
    h_resp_free(&r);
}

/* Approve every pending approval; returns how many. */
static int approve_pending(struct h_node *n)
{
    char url[256];
    int done = 0;
    snprintf(url, sizeof url, "%s/v1/approvals?status=pending", n->base);
    struct h_resp r;
    h_http(&r, "GET", url, NULL, NULL, 10000);
    json_t *list = r.json != NULL ? json_object_get(r.json, "approvals") : NULL;
    size_t i;
    json_t *a;
    json_array_foreach(list, i, a) {
        const char *id = json_string_value(json_object_get(a, "id"));
        if (id == NULL)
            continue;
        char durl[256];
        snprintf(durl, sizeof durl, "%s/v1/approvals/%s", n->base, id);
        struct h_resp d;
        h_http(&d, "POST", durl, "{\"decision\": \"approve\", \"reason\": \"ok\"}", NULL, 10000);
        if (d.status == 200)
            done++;
        h_resp_free(&d);
    }
    h_resp_free(&r);
    return done;
}

static int get_digest(struct h_node *n, char *out, size_t cap, uint64_t *applied)
{
    char url[256];
    snprintf(url, sizeof url, "%s/v1/cluster/digest", n->base);
    struct h_resp r;
    h_http(&r, "GET", url, NULL, NULL, 30000);
    const char *d = r.json != NULL ? json_string_value(json_object_get(r.json, "digest")) : NULL;
    int ok = r.status == 200 && d != NULL;
    if (ok) {
        snprintf(out, cap, "%s", d);
        *applied = (uint64_t)json_integer_value(json_object_get(r.json, "last_applied"));
    } else {
        fprintf(stderr, "digest: HTTP %ld %s\n", r.status, r.body);
    }
    h_resp_free(&r);
    return ok ? 0 : -1;
}

static const char *terminal_type(const char *status)
{
    if (strcmp(status, "succeeded") == 0)
        return "run.succeeded";
    if (strcmp(status, "failed") == 0)
        return "run.failed";
    return "run.cancelled";
}

/* RFC 3339 with microseconds -> µs since the epoch. */
static uint64_t parse_time_us(const char *s)
{
    struct tm tm = { 0 };
    long usec = 0;
    if (sscanf(s, "%d-%d-%dT%d:%d:%d.%ldZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min,
               &tm.tm_sec, &usec) < 6)
        return 0;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (uint64_t)timegm(&tm) * 1000000u + (uint64_t)usec;
}

static void test_crash_recovery(void **unused)
{
    int n_runs = env_int("TROUPE_CRASH_RUNS", 200);
    int n_kills = env_int("TROUPE_CRASH_KILLS", 8);
    uint64_t seed = getenv("TROUPE_CRASH_SEED") ? strtoull(getenv("TROUPE_CRASH_SEED"), NULL, 10) : wall_us();
    rng_state = seed;
    fprintf(stderr, "crash: %d runs, %d kills, seed %llu\n", n_runs, n_kills, (unsigned long long)seed);

    char *dir = h_tmpdir("crash");
    assert_non_null(dir);
    char path[512], mockbase[128], toolbase[128], receipts[512], data[512];
    snprintf(path, sizeof path, "%s/script.json", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(script_json, f);
    fclose(f);
    snprintf(receipts, sizeof receipts, "%s/receipts.jsonl", dir);
    snprintf(data, sizeof data, "%s/node", dir);

    struct h_proc mock, tools;
    struct h_node node;
    assert_int_equal(h_mockllm_start(&mock, path, dir, mockbase, sizeof mockbase), 0);
    assert_int_equal(h_toolserver_start(&tools, dir, receipts, toolbase, sizeof toolbase), 0);
    char envbase[192];
    snprintf(envbase, sizeof envbase, "OPENAI_BASE_URL=%s", mockbase);
    char *env[] = { envbase, "OPENAI_API_KEY=test", NULL };
    char snap[16], trail[16];
    int snapshot = env_int("TROUPE_CRASH_SNAPSHOT", 0);
    snprintf(snap, sizeof snap, "%d", snapshot);
    snprintf(trail, sizeof trail, "%d", snapshot / 4 > 0 ? snapshot / 4 : 1);
    /* Two schedulers (the node's default on this 2-core machine is one):
     * runs on both, so commits also cross threads. */
    char *args[] = { "--approval-timeout", "3600", "--schedulers", "2",
                     snapshot ? "--snapshot-threshold" : NULL, snap, "--snapshot-trailing", trail, NULL };
    assert_int_equal(h_node_start(&node, data, args, env), 0);

    register_tool(&node, "add", "write",
                  "{\"type\": \"object\", \"properties\": {\"a\": {\"type\": \"number\"}, \"b\": {\"type\": \"number\"}}}",
                  toolbase, 10000);
    register_tool(&node, "sleep", "write", "{\"type\": \"object\", \"properties\": {\"ms\": {\"type\": \"integer\"}}}",
                  toolbase, 10000);
    register_tool(&node, "payment", "irreversible",
                  "{\"type\": \"object\", \"properties\": {\"amount\": {\"type\": \"integer\"}}, \"required\": [\"amount\"]}",
                  toolbase, 10000);

    /* Runs are created in waves, one before each kill, so that every kill
     * finds runs at every stage: waiting for the model, mid-tool, waiting
     * for approval (the approver works only in some intervals), and in the
     * group-commit batcher. Kill times are wall-clock µs, comparable with
     * the tool server's receipt times (same machine, same clock). */
    char **ids = calloc((size_t)n_runs, sizeof *ids);
    uint64_t *kills = calloc((size_t)n_kills, sizeof *kills);
    int created = 0;
    for (int k = 0; k < n_kills; k++) {
        int wave = (n_runs - created) / (n_kills - k);
        for (int i = 0; i < wave; i++, created++) {
            char body[256];
            snprintf(body, sizeof body,
                     "{\"goal\": \"crash test run %d\", \"agent\": {\"model\": \"mock-gpt\", "
                     "\"tools\": [\"add\", \"sleep\", \"payment\"], \"max_steps\": 10}}",
                     created);
            ids[created] = h_create_run(&node, body, NULL);
            assert_non_null(ids[created]);
        }
        int approving = (int)(rnd() % 2);
        int wait_ms = 150 + (int)(rnd() % 550);
        uint64_t until = h_now_ms() + (uint64_t)wait_ms;
        while (h_now_ms() < until) {
            if (approving)
                approve_pending(&node);
            nap(20);
        }
        kills[k] = wall_us();
        h_proc_kill(&node.proc, SIGKILL, 1);
        {
            char su[256];
            snprintf(su, sizeof su, "%s/_stats", toolbase);
            struct h_resp sr;
            h_http(&sr, "GET", su, NULL, NULL, 5000);
            json_t *j = sr.json;
            fprintf(stderr, "crash: kill %d after %d ms (%s): %d runs created, toolserver %lld effects, %lld resends\n",
                    k + 1, wait_ms, approving ? "approving" : "not approving", created,
                    j ? (long long)json_integer_value(json_object_get(j, "effects")) : -1,
                    j ? (long long)json_integer_value(json_object_get(j, "resends")) : -1);
            h_resp_free(&sr);
        }
        if (h_node_restart(&node) != 0)
            fail_msg("restart after kill %d failed", k + 1);
    }

    /* Let every run finish, approving as they ask. */
    int done = 0;
    uint64_t guard = h_now_ms() + 180000;
    while (done < n_runs && h_now_ms() < guard) {
        approve_pending(&node);
        done = 0;
        for (int i = 0; i < n_runs; i++) {
            json_t *run = h_get_run(&node, ids[i]);
            const char *st = run != NULL ? json_string_value(json_object_get(run, "status")) : NULL;
            if (st != NULL && (!strcmp(st, "succeeded") || !strcmp(st, "failed") || !strcmp(st, "cancelled")))
                done++;
            if (run != NULL)
                json_decref(run);
        }
        if (done < n_runs)
            nap(50);
    }
    if (done < n_runs)
        h_proc_dump_log(&node.proc, 60);
    /* 1. terminal, and succeeded. */
    assert_int_equal(done, n_runs);

    /* 2 + 3: journals. Also when each call (by Idempotency-Key) was started
     * and completed, for 4. */
    int succeeded = 0, tool_calls = 0;
    json_t *call_start = json_object(), *call_end = json_object(), *call_key = json_object();
    for (int i = 0; i < n_runs; i++) {
        json_t *run = h_get_run(&node, ids[i]);
        assert_non_null(run);
        const char *st = json_string_value(json_object_get(run, "status"));
        if (strcmp(st, "succeeded") != 0) {
            char *why = json_dumps(json_object_get(run, "error"), JSON_ENCODE_ANY);
            fprintf(stderr, "run %s: %s: %s\n", ids[i], st, why != NULL ? why : "?");
            free(why);
        }
        succeeded += strcmp(st, "succeeded") == 0;
        json_t *ev = h_get_events(&node, ids[i]);
        assert_non_null(ev);
        size_t n = json_array_size(ev);
        assert_true(n >= 2);
        int started = 0, completed = 0;
        for (size_t k = 0; k < n; k++) {
            json_t *e = json_array_get(ev, k);
            assert_int_equal(json_integer_value(json_object_get(e, "seq")), (json_int_t)k + 1);
            const char *type = json_string_value(json_object_get(e, "type"));
            started += strcmp(type, "tool.started") == 0;
            completed += strcmp(type, "tool.completed") == 0;
            json_t *d = json_object_get(e, "data");
            const char *call_id = json_string_value(json_object_get(d, "call_id"));
            char id_key[256];
            snprintf(id_key, sizeof id_key, "%s/%s", ids[i], call_id != NULL ? call_id : "");
            uint64_t et = parse_time_us(json_string_value(json_object_get(e, "time")));
            if (strcmp(type, "tool.started") == 0) {
                const char *key = json_string_value(json_object_get(d, "idempotency_key"));
                assert_non_null(key);
                assert_true(et > 0);
                if (json_object_get(call_start, key) == NULL)
                    json_object_set_new(call_start, key, json_integer((json_int_t)et));
                json_object_set_new(call_key, id_key, json_string(key));
            } else if (strcmp(type, "tool.completed") == 0) {
                const char *key = json_string_value(json_object_get(call_key, id_key));
                if (key != NULL && json_object_get(call_end, key) == NULL)
                    json_object_set_new(call_end, key, json_integer((json_int_t)et));
            }
        }
        assert_string_equal(json_string_value(json_object_get(json_array_get(ev, n - 1), "type")), terminal_type(st));
        assert_string_equal(json_string_value(json_object_get(json_array_get(ev, 0), "type")), "run.created");
        assert_int_equal(started, completed);
        tool_calls += completed;
        json_decref(ev);
        json_decref(run);
    }
    assert_int_equal(succeeded, n_runs);
    assert_int_equal(tool_calls, CALLS_PER_RUN * n_runs);

    char url[256];
    snprintf(url, sizeof url, "%s/_stats", toolbase);
    struct h_resp st;
    h_http(&st, "GET", url, NULL, NULL, 10000);
    assert_int_equal(st.status, 200);
    json_int_t dup = json_integer_value(json_object_get(st.json, "duplicates_performed"));
    json_int_t effects = json_integer_value(json_object_get(st.json, "effects"));
    json_int_t keys = json_integer_value(json_object_get(st.json, "keys"));
    json_int_t balance = json_integer_value(json_object_get(st.json, "balance"));
    json_int_t resends = json_integer_value(json_object_get(st.json, "resends"));
    fprintf(stderr, "crash: toolserver: %lld keys, %lld effects, %lld resends, %lld duplicates\n", (long long)keys,
            (long long)effects, (long long)resends, (long long)dup);
    assert_int_equal(dup, 0);
    assert_int_equal(keys, CALLS_PER_RUN * n_runs);
    assert_int_equal(effects, CALLS_PER_RUN * n_runs);
    assert_int_equal(balance, (json_int_t)AMOUNT * n_runs);
    h_resp_free(&st);

    /* 4. every resend is of a call in flight at a kill before it. */
    f = fopen(receipts, "r");
    assert_non_null(f);
    char line[1024];
    int resent = 0;
    json_t *first = json_object();
    while (fgets(line, sizeof line, f) != NULL) {
        json_t *j = json_loads(line, 0, NULL);
        assert_non_null(j);
        const char *key = json_string_value(json_object_get(j, "key"));
        const char *kind = json_string_value(json_object_get(j, "receipt"));
        uint64_t t = parse_time_us(json_string_value(json_object_get(j, "time")));
        assert_true(t > 0);
        if (strcmp(kind, "first") == 0) {
            json_object_set_new(first, key, json_integer((json_int_t)t));
        } else {
            resent++;
            uint64_t t0 = (uint64_t)json_integer_value(json_object_get(first, key));
            uint64_t started_at = (uint64_t)json_integer_value(json_object_get(call_start, key));
            uint64_t ended_at = (uint64_t)json_integer_value(json_object_get(call_end, key));
            assert_true(t0 > 0);
            if (started_at == 0 || ended_at == 0)
                fail_msg("key %s was re-sent but no tool.started/tool.completed carries it", key);
            int in_flight = 0;
            for (int k = 0; k < n_kills; k++)
                if (started_at <= kills[k] && kills[k] <= ended_at && kills[k] <= t)
                    in_flight = 1;
            if (!in_flight)
                fail_msg("key %s re-sent at %llu (first receipt %llu) but in flight (%llu..%llu) at no kill before",
                         key, (unsigned long long)t, (unsigned long long)t0, (unsigned long long)started_at,
                         (unsigned long long)ended_at);
        }
        json_decref(j);
    }
    fclose(f);
    json_decref(first);
    json_decref(call_start);
    json_decref(call_end);
    json_decref(call_key);
    fprintf(stderr, "crash: %d re-sent keys, each for a call in flight at a kill\n", resent);

    /* 5. digests: committed state == after kill+restart == rebuilt from the raft log. */
    char d1[128], d2[128], d3[128];
    uint64_t a1, a2, a3;
    assert_int_equal(get_digest(&node, d1, sizeof d1, &a1), 0);
    h_proc_kill(&node.proc, SIGKILL, 1);
    assert_int_equal(h_node_restart(&node), 0);
    assert_int_equal(get_digest(&node, d2, sizeof d2, &a2), 0);
    assert_string_equal(d1, d2);
    h_proc_kill(&node.proc, SIGKILL, 1);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s/db'", data);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(h_node_restart(&node), 0);
    assert_int_equal(get_digest(&node, d3, sizeof d3, &a3), 0);
    assert_string_equal(d1, d3);
    fprintf(stderr, "crash: digest %s at index %llu; after restart %llu; rebuilt from the raft log %llu\n", d1,
            (unsigned long long)a1, (unsigned long long)a2, (unsigned long long)a3);

    assert_int_equal(WEXITSTATUS(h_proc_stop(&node.proc, 20000)), 0);
    h_node_free(&node);
    h_proc_stop(&mock, 5000);
    h_proc_stop(&tools, 5000);
    h_proc_free(&mock);
    h_proc_free(&tools);
    for (int i = 0; i < n_runs; i++)
        free(ids[i]);
    free(ids);
    free(kills);
    h_tmpdir_remove(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crash_recovery),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
