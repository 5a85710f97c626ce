/* The dashboard in a real browser (issue 6). This program starts a troupe
 * node (with an admin token), troupe-mockllm (mock.json beside this file)
 * and troupe-toolserver on loopback, registers two tools (a read and an
 * irreversible one), creates a run that finishes at once (the status filter
 * must hide it), then one that looks an order up and then asks to
 * refund it, and waits until that run is waiting for approval. Then it runs
 * dashboard.mjs under node, which drives Debian's chromium through
 * playwright-core: sign in with the token, see the run waiting, approve it in
 * the inbox, see the run's live timeline reach run.succeeded, flip a tool's
 * kill switch, page through thousands of runs; screenshots go to
 * TROUPE_SHOTS. Afterwards this program checks, through the API, what the
 * clicks did: the run succeeded after an approval decided by the admin, the
 * refund was performed exactly once, the tool is enabled again, and the node
 * still serves.
 *
 * Also checked without the browser: the static files need no token, the API
 * does; ETag revalidation answers 304; unknown files are 404.
 *
 * Environment (set by CMake): TROUPE_BIN, TROUPE_MOCKLLM_BIN,
 * TROUPE_TOOLSERVER_BIN, TROUPE_NODE (node.js), TROUPE_DASHBOARD_JS,
 * TROUPE_MOCK_SCRIPT, TROUPE_SHOTS; TROUPE_BULK_RUNS (default 10000). */
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#include "harness.h"

#define TOKEN "dashboard-test-token"
#define WAIT_MS 60000

extern char **environ;

static int failures;
#define CHECK(cond, ...)                                                                   \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                           \
            fprintf(stderr, __VA_ARGS__);                                                  \
            fputc('\n', stderr);                                                           \
            failures++;                                                                    \
        }                                                                                  \
    } while (0)

static const char *const AUTH[] = { "Authorization: Bearer " TOKEN, NULL };

/* An API call with the token; the parsed body (new reference) or NULL. */
static json_t *call(struct h_node *n, const char *method, const char *path, const char *body, long *status)
{
    char url[512];
    struct h_resp r;
    snprintf(url, sizeof url, "%s%s", n->base, path);
    h_http(&r, method, url, body, AUTH, 15000);
    if (status != NULL)
        *status = r.status;
    json_t *j = r.json != NULL ? json_incref(r.json) : NULL;
    h_resp_free(&r);
    return j;
}

static const char *str(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s != NULL ? s : "";
}

static void pause_ms(int ms)
{
    struct timespec ts = { 0, (long)ms * 1000000L };
    nanosleep(&ts, NULL);
}

static int register_tool(struct h_node *n, const char *name, const char *path, const char *risk, const char *tools)
{
    char body[1024];
    long st;
    snprintf(body, sizeof body,
             "{\"name\": \"%s\", \"description\": \"%s via the test tool server\", \"risk\": \"%s\","
             " \"kind\": \"http\", \"input_schema\": {\"type\": \"object\"},"
             " \"config\": {\"url\": \"%s/tools/%s\", \"allow\": [\"127.0.0.1\"]}}",
             name, path, risk, tools, path);
    json_decref(call(n, "POST", "/v1/tools", body, &st));
    return st == 200 || st == 201 ? 0 : -1;
}

/* Poll until the run's status is `want`; 0, or -1 after WAIT_MS. */
static int wait_status(struct h_node *n, const char *id, const char *want)
{
    char path[256];
    snprintf(path, sizeof path, "/v1/runs/%s", id);
    uint64_t until = h_now_ms() + WAIT_MS;
    while (h_now_ms() < until) {
        json_t *r = call(n, "GET", path, NULL, NULL);
        int ok = strcmp(str(r, "status"), want) == 0;
        json_decref(r);
        if (ok)
            return 0;
        pause_ms(20);
    }
    return -1;
}

/* The static files: no token needed; conditional GETs; 404s. The API still
 * needs its token. */
static void check_static(struct h_node *n)
{
    char url[256];
    struct h_resp r;
    snprintf(url, sizeof url, "%s/", n->base);
    h_http(&r, "GET", url, NULL, NULL, 15000);
    CHECK(r.status == 200 && strstr(r.body, "<!doctype html>") != NULL, "GET / without a token: %ld", r.status);
    h_resp_free(&r);

    snprintf(url, sizeof url, "%s/ui/app.js", n->base);
    h_http(&r, "GET", url, NULL, NULL, 15000);
    CHECK(r.status == 200 && strstr(r.body, "sessionStorage") != NULL, "GET /ui/app.js: %ld", r.status);
    h_resp_free(&r);

    /* Revalidation: the ETag of a first answer makes the second a 304. */
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "etag=$(curl -s -D - -o /dev/null '%s' | tr -d '\\r' | sed -n 's/^[Ee][Tt][Aa][Gg]: //p');"
             " test -n \"$etag\" && test \"$(curl -s -o /dev/null -w '%%{http_code}' -H \"If-None-Match: $etag\" '%s')\" = 304",
             url, url);
    CHECK(system(cmd) == 0, "If-None-Match with the ETag of /ui/app.js is not answered 304");

    snprintf(url, sizeof url, "%s/ui/nope.js", n->base);
    h_http(&r, "GET", url, NULL, NULL, 15000);
    CHECK(r.status == 404, "GET /ui/nope.js: %ld", r.status);
    h_resp_free(&r);
    snprintf(url, sizeof url, "%s/ui/..%%2fetc", n->base);
    h_http(&r, "GET", url, NULL, NULL, 15000);
    CHECK(r.status == 404, "GET /ui/..%%2fetc: %ld", r.status);
    h_resp_free(&r);
    snprintf(url, sizeof url, "%s/v1/runs", n->base);
    h_http(&r, "GET", url, NULL, NULL, 15000);
    CHECK(r.status == 401, "GET /v1/runs without a token: %ld", r.status);
    h_resp_free(&r);
}

/* Run node on dashboard.mjs with stdio inherited; its exit status. */
static int run_browser(struct h_node *n, const char *run_id, const char *done_id, const char *tools)
{
    const char *node = getenv("TROUPE_NODE"), *js = getenv("TROUPE_DASHBOARD_JS");
    if (node == NULL || js == NULL) {
        fprintf(stderr, "TROUPE_NODE and TROUPE_DASHBOARD_JS must be set (ctest sets them)\n");
        return -1;
    }
    char e_base[128], e_tok[128], e_run[128], e_done[128], e_tool[128];
    snprintf(e_base, sizeof e_base, "TROUPE_URL=%s", n->base);
    snprintf(e_tok, sizeof e_tok, "TROUPE_TOKEN=%s", TOKEN);
    snprintf(e_run, sizeof e_run, "TROUPE_RUN=%s", run_id);
    snprintf(e_done, sizeof e_done, "TROUPE_DONE_RUN=%s", done_id);
    snprintf(e_tool, sizeof e_tool, "TROUPE_TOOL=%s", tools);
    size_t ne = 0;
    while (environ[ne] != NULL)
        ne++;
    char **envp = calloc(ne + 6, sizeof *envp);
    if (envp == NULL)
        return -1;
    memcpy(envp, environ, ne * sizeof *envp);
    envp[ne] = e_base;
    envp[ne + 1] = e_tok;
    envp[ne + 2] = e_run;
    envp[ne + 3] = e_tool;
    envp[ne + 4] = e_done;
    char *argv[] = { (char *)node, (char *)js, NULL };
    pid_t pid;
    fflush(NULL);
    int rv = posix_spawn(&pid, node, NULL, NULL, argv, envp);
    free(envp);
    if (rv != 0) {
        fprintf(stderr, "cannot start %s: %s\n", node, strerror(rv));
        return -1;
    }
    int st;
    if (waitpid(pid, &st, 0) != pid)
        return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

int main(void)
{
    const char *script = getenv("TROUPE_MOCK_SCRIPT");
    if (script == NULL) {
        fprintf(stderr, "TROUPE_MOCK_SCRIPT is not set (ctest sets it)\n");
        return 1;
    }
    char *dir = h_tmpdir("dashboard");
    struct h_proc mock, tools;
    char mock_base[128], tools_base[128], data[512], receipts[512], env_url[200];
    if (dir == NULL || h_mockllm_start(&mock, script, dir, mock_base, sizeof mock_base) != 0)
        return 1;
    snprintf(receipts, sizeof receipts, "%s/receipts.jsonl", dir);
    if (h_toolserver_start(&tools, dir, receipts, tools_base, sizeof tools_base) != 0)
        return 1;
    snprintf(data, sizeof data, "%s/node", dir);
    snprintf(env_url, sizeof env_url, "OPENAI_BASE_URL=%s", mock_base);
    char *env[] = { env_url, "OPENAI_API_KEY=test-key", "TROUPE_ADMIN_TOKEN=" TOKEN, "TROUPE_LOG=warn", NULL };
    struct h_node n;
    if (h_node_start(&n, data, NULL, env) != 0)
        return 1;

    check_static(&n);
    CHECK(register_tool(&n, "lookup_order", "echo", "read", tools_base) == 0, "register lookup_order");
    CHECK(register_tool(&n, "issue_refund", "payment", "irreversible", tools_base) == 0, "register issue_refund");

    /* A run that is over before the browser comes (the status filter must hide it). */
    long st;
    json_t *run = call(&n, "POST", "/v1/runs",
                       "{\"goal\": \"A quick one.\", \"agent\": {\"model\": \"mock-gpt\","
                       " \"system\": \"[mock:quick]\"}}",
                       &st);
    char *done_id = strdup(str(run, "id"));
    json_decref(run);
    CHECK(st == 201 && wait_status(&n, done_id, "succeeded") == 0, "the quick run did not succeed");

    run = call(&n, "POST", "/v1/runs",
                       "{\"goal\": \"Order A-1234 arrived broken; refund it if policy allows.\","
                       " \"agent\": {\"model\": \"mock-gpt\", \"system\": \"[mock:refund] You are a support agent.\","
                       " \"tools\": [\"lookup_order\", \"issue_refund\"]}}",
                       &st);
    char *id = strdup(str(run, "id"));
    json_decref(run);
    CHECK(st == 201 && id[0] != '\0', "create the run: HTTP %ld", st);
    CHECK(wait_status(&n, id, "waiting_approval") == 0, "run %s never waited for approval", id);

    int rc = failures == 0 ? run_browser(&n, id, done_id, "lookup_order") : -1;
    CHECK(rc == 0, "the browser script failed (exit %d)", rc);

    /* What the clicks did, seen through the API. */
    char path[256];
    snprintf(path, sizeof path, "/v1/runs/%s", id);
    json_t *r = call(&n, "GET", path, NULL, NULL);
    CHECK(strcmp(str(r, "status"), "succeeded") == 0, "run %s is %s after the browser approved it", id,
          str(r, "status"));
    json_decref(r);
    snprintf(path, sizeof path, "/v1/runs/%s/events", id);
    json_t *evs = call(&n, "GET", path, NULL, NULL);
    int decided = 0;
    size_t i;
    json_t *ev;
    json_array_foreach(evs, i, ev)
    {
        if (strcmp(str(ev, "type"), "approval.decided") == 0) {
            json_t *d = json_object_get(ev, "data");
            decided++;
            CHECK(strcmp(str(d, "decision"), "approve") == 0, "decision %s", str(d, "decision"));
            CHECK(strcmp(str(d, "reason"), "approved in the browser test") == 0, "reason %s", str(d, "reason"));
        }
    }
    json_decref(evs);
    CHECK(decided == 1, "%d approval.decided events", decided);
    char url[256];
    snprintf(url, sizeof url, "%s/_stats", tools_base);
    struct h_resp sr;
    h_http(&sr, "GET", url, NULL, NULL, 15000);
    json_t *by = json_object_get(sr.json, "by_tool");
    CHECK(json_integer_value(json_object_get(by, "payment")) == 1, "payments performed: %lld",
          (long long)json_integer_value(json_object_get(by, "payment")));
    h_resp_free(&sr);
    json_t *tool = call(&n, "GET", "/v1/tools/lookup_order", NULL, NULL);
    CHECK(json_is_true(json_object_get(tool, "enabled")), "lookup_order is not enabled again");
    json_decref(tool);
    snprintf(url, sizeof url, "%s/healthz", n.base);
    CHECK(h_wait_http_ok(url, 10000) == 0, "the node stopped serving");

    st = h_proc_stop(&n.proc, 20000);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the node did not exit cleanly (0x%x)", (unsigned)st);
    if (failures)
        h_proc_dump_log(&n.proc, 30);
    h_proc_stop(&mock, 10000);
    h_proc_stop(&tools, 10000);
    h_node_free(&n);
    h_proc_free(&mock);
    h_proc_free(&tools);
    h_tmpdir_remove(dir);
    free(id);
    free(done_id);
    printf("%s: %d failure(s)\n", failures ? "FAILED" : "ok", failures);
    return failures ? 1 : 0;
}
