/* Tenants, API keys, roles, limits and budgets (issue 6) against one real
 * `troupe` process with the cluster admin token set, troupe-mockllm as the
 * model (model "mock-priced": $1 per 1M prompt tokens; every scripted answer
 * reports 100,000 prompt tokens, so each model call costs exactly $0.10),
 * over HTTP and over the FlatBuffers protocol with troupectl.
 *
 * Every bad request is followed by a check that the node still serves
 * another tenant. Waits poll a condition (a run's status, a line in the
 * node's log), never a fixed time. */
#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"

#define TOKEN "tenants-admin-token"
#define WAIT_MS 60000

static struct h_node node;
static struct h_proc mock;
static char *dir;
static char data[512];
static char server[64];
static char mock_base[160];

/* ---- HTTP ------------------------------------------------------------------------ */

/* method path with key as the bearer (NULL: no Authorization). */
static struct h_resp call(const char *method, const char *path, const char *key, const char *body)
{
    char url[512], auth[512];
    const char *headers[3] = { "Content-Type: application/json", NULL, NULL };
    snprintf(url, sizeof url, "%s%s", node.base, path);
    if (key != NULL) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", key);
        headers[1] = auth;
    }
    struct h_resp r;
    h_http(&r, method, url, body, headers, 30000);
    return r;
}

static const char *jstr(json_t *o, const char *k) { return json_string_value(json_object_get(o, k)); }

static const char *err_code(struct h_resp *r)
{
    return json_string_value(json_object_get(json_object_get(r->json, "error"), "code"));
}

/* The node still answers the cluster admin. */
static void still_serving(void)
{
    struct h_resp r = call("GET", "/v1/runs?limit=1", TOKEN, NULL);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
}

/* Status and (when given) error code of r, which is freed; then the node
 * still serves everyone else. */
static void expect(struct h_resp r, long status, const char *code)
{
    if (r.status != status)
        fail_msg("expected %ld, got %ld: %s", status, r.status, r.body ? r.body : "(no body)");
    if (code != NULL) {
        assert_non_null(r.json);
        if (err_code(&r) == NULL || strcmp(err_code(&r), code) != 0)
            fail_msg("expected error %s: %s", code, r.body);
        assert_non_null(json_string_value(json_object_get(json_object_get(r.json, "error"), "message")));
    }
    h_resp_free(&r);
    still_serving();
}

/* A 2xx answer's JSON (caller decrefs). */
static json_t *ok_json(struct h_resp r, long status)
{
    if (r.status != status || r.json == NULL)
        fail_msg("expected %ld, got %ld: %s", status, r.status, r.body ? r.body : "(no body)");
    json_t *j = json_incref(r.json);
    h_resp_free(&r);
    return j;
}

struct tenant {
    char id[64], name[64], admin[128];
};

static void tenant_create(struct tenant *t, const char *name, const char *limits)
{
    char body[512];
    snprintf(body, sizeof body, "{\"name\": \"%s\", \"limits\": %s}", name, limits ? limits : "{}");
    json_t *j = ok_json(call("POST", "/v1/tenants", TOKEN, body), 201);
    snprintf(t->id, sizeof t->id, "%s", jstr(j, "id"));
    snprintf(t->name, sizeof t->name, "%s", name);
    snprintf(t->admin, sizeof t->admin, "%s", jstr(j, "api_key"));
    assert_string_equal(jstr(j, "name"), name);
    assert_memory_equal(t->admin, "trk_", 4);
    assert_memory_equal(t->admin + 4, jstr(j, "key_id"), 16);
    json_decref(j);
}

/* A new key of tenant t with role, made by `by` (an admin of t, or the
 * cluster admin). */
static void key_create(const struct tenant *t, const char *role, const char *by, char out[128])
{
    char body[256];
    snprintf(body, sizeof body, "{\"tenant\": \"%s\", \"role\": \"%s\"}", t->id, role);
    json_t *j = ok_json(call("POST", "/v1/keys", by, body), 201);
    assert_string_equal(jstr(j, "tenant"), t->id);
    assert_string_equal(jstr(j, "role"), role);
    snprintf(out, 128, "%s", jstr(j, "api_key"));
    json_decref(j);
}

/* POST /v1/runs as key; the run id (static buffer per call site: copy it). */
static void run_create(const char *key, const char *script, const char *tools, char out[64])
{
    char body[512];
    snprintf(body, sizeof body,
             "{\"goal\": \"g\", \"agent\": {\"model\": \"mock-priced\", \"system\": \"[mock:%s]\", \"tools\": [%s]}}",
             script, tools ? tools : "");
    json_t *j = ok_json(call("POST", "/v1/runs", key, body), 201);
    snprintf(out, 64, "%s", jstr(j, "id"));
    json_decref(j);
}

/* Poll the run (as key) until its status is one of `want` ("a|b"); the
 * final run object (caller decrefs). */
static json_t *run_wait(const char *key, const char *id, const char *want)
{
    char path[128];
    snprintf(path, sizeof path, "/v1/runs/%s?wait=5", id);
    for (int i = 0; i < WAIT_MS / 5000 + 2; i++) {
        json_t *j = ok_json(call("GET", path, key, NULL), 200);
        const char *st = jstr(j, "status");
        char pat[64];
        snprintf(pat, sizeof pat, "|%s|", st);
        char wants[128];
        snprintf(wants, sizeof wants, "|%s|", want);
        if (strstr(wants, pat) != NULL)
            return j;
        json_decref(j);
    }
    fail_msg("run %s never reached %s", id, want);
    return NULL;
}

/* Wait until tenant key's approval list has one pending approval of run; its id. */
static void approval_wait(const char *key, const char *run, char out[64])
{
    for (int i = 0; i < 2000; i++) {
        json_t *j = ok_json(call("GET", "/v1/approvals", key, NULL), 200);
        json_t *a;
        size_t k;
        json_array_foreach(json_object_get(j, "approvals"), k, a) {
            if (strcmp(jstr(a, "run_id"), run) == 0) {
                snprintf(out, 64, "%s", jstr(a, "id"));
                json_decref(j);
                return;
            }
        }
        json_decref(j);
        json_decref(run_wait(key, run, "waiting_approval|succeeded|failed|cancelled"));
    }
    fail_msg("no approval for run %s", run);
}

static bool list_has(json_t *list, const char *field, const char *value)
{
    json_t *o;
    size_t i;
    json_array_foreach(list, i, o)
        if (jstr(o, field) != NULL && strcmp(jstr(o, field), value) == 0)
            return true;
    return false;
}

/* GET path as key: the array under `field` holds an object whose `by` is value? */
static bool listed(const char *path, const char *key, const char *field, const char *by, const char *value)
{
    json_t *j = ok_json(call("GET", path, key, NULL), 200);
    bool has = list_has(json_object_get(j, field), by, value);
    json_decref(j);
    return has;
}

static void tool_register(const char *key, const char *name, const char *desc, const char *risk, long status)
{
    char body[512];
    snprintf(body, sizeof body,
             "{\"name\": \"%s\", \"description\": \"%s\", \"risk\": \"%s\", \"kind\": \"http\", "
             "\"config\": {\"url\": \"http://127.0.0.1:9/none\"}}",
             name, desc, risk);
    json_decref(ok_json(call("POST", "/v1/tools", key, body), status));
}

/* ---- troupectl ---------------------------------------------------------------------- */

/* troupectl --server S [--token key] args: exit status; stdout and stderr into *out. */
__attribute__((format(printf, 3, 4))) static int ctl(char **out, const char *key, const char *fmt, ...)
{
    char args[2048], cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "%s --server %s %s%s %s 2>&1", getenv("TROUPECTL_BIN"), server, key ? "--token " : "",
             key ? key : "", args);
    FILE *f = popen(cmd, "r");
    assert_non_null(f);
    size_t cap = 1 << 16, len = 0, n;
    char *buf = malloc(cap);
    while ((n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += n;
        if (cap - len < 2)
            buf = realloc(buf, cap *= 2);
    }
    buf[len] = '\0';
    int st = pclose(f);
    if (out != NULL)
        *out = buf;
    else
        free(buf);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

__attribute__((format(printf, 2, 3))) static json_t *ctl_json(const char *key, const char *fmt, ...)
{
    char args[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    char *out;
    int rc = ctl(&out, key, "--json %s", args);
    if (rc != 0)
        fail_msg("troupectl --json %s: exit %d: %s", args, rc, out);
    json_t *j = json_loads(out, 0, NULL);
    if (j == NULL)
        fail_msg("troupectl --json %s: not JSON: %s", args, out);
    free(out);
    return j;
}

/* troupectl fails with exit 1 and `word` in its error. */
static void ctl_fails(const char *key, const char *word, const char *args)
{
    char *out;
    int rc = ctl(&out, key, "%s", args);
    if (rc != 1 || strstr(out, word) == NULL)
        fail_msg("troupectl %s: exit %d (want 1 with \"%s\"): %s", args, rc, word, out);
    free(out);
    still_serving();
}

/* ---- setup ---------------------------------------------------------------------------- */

static const char script[] =
    "{\"model\": \"mock-priced\", \"scripts\": {"
    "\"default\": [{\"content\": \"done\", \"usage\": {\"prompt_tokens\": 100000, \"completion_tokens\": 0}}],"
    "\"approve\": [{\"tool_calls\": [{\"name\": \"wire\", \"arguments\": {\"amount\": 1}}],"
    "               \"usage\": {\"prompt_tokens\": 100000, \"completion_tokens\": 0}},"
    "              {\"content\": \"after the decision\", \"usage\": {\"prompt_tokens\": 100000, \"completion_tokens\": 0}}]"
    "}}";

static int setup(void **st)
{
    (void)st;
    if (h_bin("troupe") == NULL || h_bin("mockllm") == NULL || getenv("TROUPECTL_BIN") == NULL)
        return 0;
    dir = h_tmpdir("tenants");
    char path[512];
    snprintf(path, sizeof path, "%s/script.json", dir);
    FILE *f = fopen(path, "w");
    if (f == NULL || fputs(script, f) < 0 || fclose(f) != 0)
        return -1;
    if (h_mockllm_start(&mock, path, dir, mock_base, sizeof mock_base) != 0)
        return -1;
    snprintf(data, sizeof data, "%s/n1", dir);
    int client_port = h_free_port();
    char client[64], llm[256];
    snprintf(client, sizeof client, "127.0.0.1:%d", client_port);
    snprintf(server, sizeof server, "127.0.0.1:%d", client_port);
    snprintf(llm, sizeof llm, "OPENAI_BASE_URL=%s", mock_base);
    char *const args[] = { "--client", client, NULL };
    char *const env[] = { "TROUPE_ADMIN_TOKEN=" TOKEN, llm, "OPENAI_API_KEY=test", NULL };
    return h_node_start(&node, data, args, env);
}

static int teardown(void **st)
{
    (void)st;
    if (dir != NULL) {
        h_node_free(&node);
        h_proc_stop(&mock, 5000);
        h_proc_free(&mock);
        h_tmpdir_remove(dir);
    }
    return 0;
}

#define SKIP_IF_NO_BINARIES()                  \
    do {                                       \
        if (dir == NULL) {                     \
            skip();                            \
        }                                      \
    } while (0)

/* ---- tests ---------------------------------------------------------------------------- */

/* Missing, malformed, wrong, other tenant's and revoked keys; who may
 * create tenants; bad bodies. */
static void test_keys(void **st)
{
    (void)st;
    SKIP_IF_NO_BINARIES();
    struct tenant a;
    tenant_create(&a, "keys-a", "{\"max_active_runs\": 5, \"requests_per_s\": 1000}");

    expect(call("GET", "/v1/runs", NULL, NULL), 401, "unauthorized");
    expect(call("GET", "/v1/runs", "not-a-key", NULL), 401, "unauthorized");
    expect(call("GET", "/v1/runs", "trk_0123456789abcdef_00", NULL), 401, "unauthorized");
    /* a's key id with another secret */
    char wrong[128];
    snprintf(wrong, sizeof wrong, "%s", a.admin);
    wrong[strlen(wrong) - 1] = wrong[strlen(wrong) - 1] == '0' ? '1' : '0';
    expect(call("GET", "/v1/runs", wrong, NULL), 401, "unauthorized");
    /* an unknown key id with a well-formed secret */
    snprintf(wrong, sizeof wrong, "%s", a.admin);
    wrong[4] = wrong[4] == 'a' ? 'b' : 'a';
    expect(call("GET", "/v1/runs", wrong, NULL), 401, "unauthorized");
    json_decref(ok_json(call("GET", "/v1/runs", a.admin, NULL), 200));

    /* the key is shown once: never in a listing */
    json_t *j = ok_json(call("GET", "/v1/tenants", TOKEN, NULL), 200);
    assert_true(list_has(json_object_get(j, "tenants"), "id", a.id));
    char *text = json_dumps(j, 0);
    assert_null(strstr(text, a.admin + 21)); /* the secret part */
    free(text);
    json_decref(j);

    /* tenant admins cannot create tenants; names are unique and checked */
    expect(call("POST", "/v1/tenants", a.admin, "{\"name\": \"x\"}"), 403, "forbidden");
    expect(call("POST", "/v1/tenants", TOKEN, "{\"name\": \"keys-a\"}"), 409, "tenant_exists");
    expect(call("POST", "/v1/tenants", TOKEN, "{\"name\": \"default\"}"), 400, "invalid_field");
    expect(call("POST", "/v1/tenants", TOKEN, "{\"name\": \"a b\"}"), 400, "invalid_field");
    expect(call("POST", "/v1/tenants", TOKEN, "{}"), 400, "missing_field");
    expect(call("POST", "/v1/tenants", TOKEN, "{\"name\": \"y\", \"limits\": {\"rps\": 1}}"), 400, "unknown_field");
    expect(call("POST", "/v1/tenants", TOKEN, "{\"name\": \"y\", \"limits\": {\"requests_per_s\": -1}}"), 400,
           "invalid_field");
    expect(call("POST", "/v1/tenants", TOKEN, "{\"name\": \"y\", \"limits\": {\"budget_policy\": \"maybe\"}}"), 400,
           "invalid_field");
    expect(call("POST", "/v1/tenants", TOKEN, "[1"), 400, "invalid_json");
    expect(call("POST", "/v1/keys", a.admin, "{\"tenant\": \"keys-a\", \"role\": \"root\"}"), 400, "invalid_field");
    expect(call("POST", "/v1/keys", a.admin, "{\"tenant\": \"keys-a\"}"), 400, "missing_field");

    /* revoked: 401 at once, the other keys keep working */
    char viewer[128];
    key_create(&a, "viewer", a.admin, viewer);
    json_decref(ok_json(call("GET", "/v1/runs", viewer, NULL), 200));
    char path[128];
    snprintf(path, sizeof path, "/v1/keys/%.16s/revoke", viewer + 4);
    expect(call("POST", path, viewer, NULL), 403, "forbidden"); /* a viewer cannot revoke */
    j = ok_json(call("POST", path, a.admin, NULL), 200);
    assert_true(json_is_true(json_object_get(j, "revoked")));
    json_decref(j);
    json_decref(ok_json(call("POST", path, a.admin, NULL), 200)); /* idempotent */
    struct h_resp r = call("GET", "/v1/runs", viewer, NULL);
    assert_int_equal(r.status, 401);
    assert_non_null(strstr(r.body, "revoked"));
    h_resp_free(&r);
    json_decref(ok_json(call("GET", "/v1/runs", a.admin, NULL), 200));

    /* the same over the protocol */
    ctl_fails(NULL, "Unauthorized", "run list");
    ctl_fails(wrong, "Unauthorized", "run list");
    ctl_fails(viewer, "revoked", "run list");
    ctl_fails(a.admin, "Forbidden", "tenant create nope");
    char *out;
    assert_int_equal(ctl(&out, a.admin, "--json run list"), 0);
    free(out);
    assert_int_equal(ctl(&out, TOKEN, "tenant nosuchcommand"), 2);
    free(out);
}

/* Two tenants cannot see or touch each other's runs, events, approvals and
 * tools: over HTTP, and over the protocol with troupectl. */
static void test_isolation(void **st)
{
    (void)st;
    SKIP_IF_NO_BINARIES();
    struct tenant a, b;
    tenant_create(&a, "iso-a", "{\"requests_per_s\": 1000}");
    tenant_create(&b, "iso-b", "{\"requests_per_s\": 1000}");

    /* tools: each tenant its own registry; a global one for both */
    tool_register(a.admin, "wire", "a's wire", "irreversible", 201);
    tool_register(TOKEN, "global_lookup", "for everyone", "read", 201);
    assert_true(listed("/v1/tools", a.admin, "tools", "name", "wire"));
    assert_false(listed("/v1/tools", b.admin, "tools", "name", "wire"));
    assert_false(listed("/v1/tools", TOKEN, "tools", "name", "wire"));
    assert_true(listed("/v1/tools", b.admin, "tools", "name", "global_lookup"));
    expect(call("GET", "/v1/tools/wire", b.admin, NULL), 404, "not_found");
    expect(call("POST", "/v1/tools/wire/disable", b.admin, NULL), 404, "not_found");
    expect(call("POST", "/v1/tools/global_lookup/disable", b.admin, NULL), 403, "forbidden");
    tool_register(b.admin, "wire", "b's own wire", "read", 201); /* the same name: b's own */
    json_t *j = ok_json(call("GET", "/v1/tools/wire", a.admin, NULL), 200);
    assert_string_equal(jstr(j, "description"), "a's wire");
    assert_string_equal(jstr(j, "tenant"), a.id);
    json_decref(j);
    j = ctl_json(b.admin, "tool get wire");
    assert_string_equal(jstr(j, "description"), "b's own wire");
    json_decref(j);

    /* a run of a's waits for an approval */
    char run[64], apr[64], path[160];
    run_create(a.admin, "approve", "\"wire\"", run);
    approval_wait(a.admin, run, apr);
    json_decref(run_wait(a.admin, run, "waiting_approval"));

    snprintf(path, sizeof path, "/v1/runs/%s", run);
    expect(call("GET", path, b.admin, NULL), 404, "not_found");
    snprintf(path, sizeof path, "/v1/runs/%s/events", run);
    expect(call("GET", path, b.admin, NULL), 404, "not_found");
    snprintf(path, sizeof path, "/v1/runs/%s/cancel", run);
    expect(call("POST", path, b.admin, NULL), 404, "not_found");
    assert_false(listed("/v1/runs", b.admin, "runs", "id", run));
    assert_true(listed("/v1/runs", a.admin, "runs", "id", run));
    assert_true(listed("/v1/runs", TOKEN, "runs", "id", run)); /* the cluster admin sees all */
    assert_false(listed("/v1/approvals", b.admin, "approvals", "id", apr));
    snprintf(path, sizeof path, "/v1/approvals/%s", apr);
    expect(call("POST", path, b.admin, "{\"decision\": \"approve\"}"), 404, "not_found");

    /* the protocol: the same answers */
    char args[256];
    snprintf(args, sizeof args, "run get %s", run);
    ctl_fails(b.admin, "NotFound", args);
    snprintf(args, sizeof args, "run events %s", run);
    ctl_fails(b.admin, "NotFound", args);
    snprintf(args, sizeof args, "run cancel %s", run);
    ctl_fails(b.admin, "NotFound", args);
    snprintf(args, sizeof args, "approval approve %s", apr);
    ctl_fails(b.admin, "NotFound", args);
    ctl_fails(b.admin, "Forbidden", "tool disable global_lookup");
    j = ctl_json(b.admin, "approval list");
    char *text = json_dumps(j, 0);
    assert_null(strstr(text, apr));
    free(text);
    json_decref(j);
    j = ctl_json(a.admin, "approval list");
    text = json_dumps(j, 0);
    assert_non_null(strstr(text, apr));
    free(text);
    json_decref(j);
    j = ctl_json(b.admin, "tenant list");
    assert_int_equal(json_array_size(json_object_get(j, "tenants")), 1); /* only its own */
    assert_true(list_has(json_object_get(j, "tenants"), "id", b.id));
    json_decref(j);

    /* still a's: decide it, the run goes on and ends */
    snprintf(path, sizeof path, "/v1/approvals/%s", apr);
    json_decref(ok_json(call("POST", path, a.admin, "{\"decision\": \"deny\", \"reason\": \"no\"}"), 200));
    j = run_wait(a.admin, run, "succeeded|failed");
    assert_string_equal(jstr(j, "status"), "succeeded");
    assert_string_equal(jstr(j, "tenant"), a.id);
    json_decref(j);
}

/* Each role's allowed and refused operations. */
static void test_roles(void **st)
{
    (void)st;
    SKIP_IF_NO_BINARIES();
    struct tenant a, other;
    tenant_create(&a, "roles-a", "{\"requests_per_s\": 1000}");
    tenant_create(&other, "roles-other", NULL);
    char viewer[128], approver[128], operator[128], admin2[128];
    key_create(&a, "viewer", a.admin, viewer);
    key_create(&a, "approver", TOKEN, approver); /* the cluster admin may make keys for any tenant */
    json_t *j = ctl_json(a.admin, "key create --tenant %s --role operator", a.name);
    snprintf(operator, sizeof operator, "%s", jstr(j, "api_key"));
    assert_string_equal(jstr(j, "role"), "operator");
    json_decref(j);
    key_create(&a, "admin", a.admin, admin2);
    static const char run_body[] = "{\"goal\": \"g\", \"agent\": {\"model\": \"mock-priced\"}}";
    static const char tool_body[] = "{\"name\": \"rtool\", \"config\": {\"url\": \"http://127.0.0.1:9/\"}}";

    /* viewer: reads only */
    json_decref(ok_json(call("GET", "/v1/runs", viewer, NULL), 200));
    json_decref(ok_json(call("GET", "/v1/tools", viewer, NULL), 200));
    json_decref(ok_json(call("GET", "/v1/approvals", viewer, NULL), 200));
    json_decref(ok_json(call("GET", "/v1/cluster", viewer, NULL), 200));
    expect(call("POST", "/v1/runs", viewer, run_body), 403, "forbidden");
    expect(call("POST", "/v1/tools", viewer, tool_body), 403, "forbidden");
    expect(call("POST", "/v1/approvals/apr_x", viewer, "{\"decision\": \"approve\"}"), 403, "forbidden");
    expect(call("POST", "/v1/keys", viewer, "{\"tenant\": \"roles-a\", \"role\": \"viewer\"}"), 403, "forbidden");
    expect(call("GET", "/v1/tenants", viewer, NULL), 403, "forbidden");
    ctl_fails(viewer, "Forbidden", "run create --goal g");

    /* approver: + decisions (an unknown approval is then a 404, not a 403) */
    expect(call("POST", "/v1/approvals/apr_x", approver, "{\"decision\": \"approve\"}"), 404, "not_found");
    expect(call("POST", "/v1/runs", approver, run_body), 403, "forbidden");
    expect(call("POST", "/v1/runs/run_0000000000000001/cancel", approver, NULL), 403, "forbidden");
    expect(call("POST", "/v1/tools", approver, tool_body), 403, "forbidden");

    /* operator: + runs and tools, not keys */
    j = ok_json(call("POST", "/v1/runs", operator, run_body), 201);
    char run[64];
    snprintf(run, sizeof run, "%s", jstr(j, "id"));
    assert_string_equal(jstr(j, "tenant"), a.id);
    json_decref(j);
    json_decref(ok_json(call("POST", "/v1/tools", operator, tool_body), 201));
    json_decref(ok_json(call("POST", "/v1/tools/rtool/disable", operator, NULL), 200));
    expect(call("POST", "/v1/keys", operator, "{\"tenant\": \"roles-a\", \"role\": \"viewer\"}"), 403, "forbidden");
    json_decref(run_wait(viewer, run, "succeeded"));

    /* admin: + keys of its own tenant, its own tenant; never another's, never tenants */
    char k[128];
    key_create(&a, "viewer", admin2, k);
    expect(call("POST", "/v1/keys", a.admin, "{\"tenant\": \"roles-other\", \"role\": \"admin\"}"), 404,
           "not_found");
    j = ok_json(call("GET", "/v1/tenants", a.admin, NULL), 200);
    assert_int_equal(json_array_size(json_object_get(j, "tenants")), 1);
    json_decref(j);
    char path[128];
    snprintf(path, sizeof path, "/v1/tenants/%s", other.id);
    expect(call("GET", path, a.admin, NULL), 404, "not_found");
    snprintf(path, sizeof path, "/v1/tenants/%s", a.id);
    json_decref(ok_json(call("GET", path, a.admin, NULL), 200));
    expect(call("POST", path, a.admin, "{\"limits\": {\"requests_per_s\": 5000}}"), 403, "forbidden");
    snprintf(path, sizeof path, "/v1/keys/%.16s/revoke", other.admin + 4);
    expect(call("POST", path, a.admin, NULL), 404, "not_found");
    expect(call("GET", "/v1/cluster/digest", a.admin, NULL), 403, "forbidden");
    json_decref(ok_json(call("GET", "/v1/cluster/digest", TOKEN, NULL), 200));
}

/* requests_per_s: 429 rate_limited with Retry-After; other tenants unaffected. */
static void test_rate_limit(void **st)
{
    (void)st;
    SKIP_IF_NO_BINARIES();
    struct tenant slow, fast;
    tenant_create(&slow, "rate-slow", "{\"requests_per_s\": 2}");
    tenant_create(&fast, "rate-fast", "{\"requests_per_s\": 1000}");
    int limited = 0;
    for (int i = 0; i < 1000 && !limited; i++) {
        struct h_resp r = call("GET", "/v1/runs?limit=1", slow.admin, NULL);
        if (r.status == 429) {
            assert_string_equal(err_code(&r), "rate_limited");
            limited = 1;
        } else {
            assert_int_equal(r.status, 200);
        }
        h_resp_free(&r);
    }
    assert_true(limited);
    json_decref(ok_json(call("GET", "/v1/runs?limit=1", fast.admin, NULL), 200));
    still_serving();

    /* Retry-After on the wire: one raw request while still limited */
    int port = atoi(strrchr(node.base, ':') + 1), got = 0;
    for (int i = 0; i < 1000 && !got; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
        inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
        assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
        char req[512], resp[4096];
        int n = snprintf(req, sizeof req,
                         "GET /v1/runs?limit=1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                         "Connection: close\r\n\r\n",
                         slow.admin);
        assert_int_equal(write(fd, req, (size_t)n), n);
        size_t len = 0;
        ssize_t k;
        while (len < sizeof resp - 1 && (k = read(fd, resp + len, sizeof resp - 1 - len)) > 0)
            len += (size_t)k;
        resp[len] = '\0';
        close(fd);
        if (strncmp(resp, "HTTP/1.1 429", 12) == 0) {
            assert_non_null(strstr(resp, "Retry-After: "));
            got = 1;
        }
    }
    assert_true(got);
}

/* max_active_runs: the next create is 429 too_many_active_runs until a run ends. */
static void test_active_runs(void **st)
{
    (void)st;
    SKIP_IF_NO_BINARIES();
    struct tenant t;
    tenant_create(&t, "active", "{\"max_active_runs\": 2, \"requests_per_s\": 1000}");
    tool_register(t.admin, "wire", "holds runs", "irreversible", 201);
    char r1[64], r2[64], apr[64];
    run_create(t.admin, "approve", "\"wire\"", r1);
    run_create(t.admin, "approve", "\"wire\"", r2);
    static const char body[] = "{\"goal\": \"g\", \"agent\": {\"model\": \"mock-priced\"}}";
    expect(call("POST", "/v1/runs", t.admin, body), 429, "too_many_active_runs");
    json_decref(ok_json(call("POST", "/v1/runs", TOKEN, body), 201)); /* not the cluster admin's limit */
    ctl_fails(t.admin, "RateLimited", "run create --goal g --model mock-priced");
    /* one ends: room for one more */
    approval_wait(t.admin, r1, apr);
    char path[128];
    snprintf(path, sizeof path, "/v1/runs/%s/cancel", r1);
    json_decref(ok_json(call("POST", path, t.admin, NULL), 200));
    json_decref(run_wait(t.admin, r1, "cancelled"));
    char r3[64];
    run_create(t.admin, "default", NULL, r3);
    json_decref(run_wait(t.admin, r3, "succeeded"));
    snprintf(path, sizeof path, "/v1/runs/%s/cancel", r2);
    json_decref(ok_json(call("POST", path, t.admin, NULL), 200));
}

static uint64_t mock_completions(void)
{
    char url[256];
    snprintf(url, sizeof url, "%s", mock_base);
    char *v1 = strstr(url, "/v1");
    snprintf(v1, sizeof url - (size_t)(v1 - url), "/_mock/stats");
    struct h_resp r;
    h_http(&r, "GET", url, NULL, NULL, 10000);
    assert_int_equal(r.status, 200);
    uint64_t n = (uint64_t)json_integer_value(json_object_get(r.json, "completions"));
    h_resp_free(&r);
    return n;
}

static json_t *tenant_get(const struct tenant *t)
{
    char path[128];
    snprintf(path, sizeof path, "/v1/tenants/%s", t->id);
    return ok_json(call("GET", path, TOKEN, NULL), 200);
}

/* budget_usd_per_day with policy fail: once today's spend reaches it, a
 * run fails with budget_exceeded before calling the model. */
static void test_budget_fail(void **st)
{
    (void)st;
    SKIP_IF_NO_BINARIES();
    struct tenant t, other;
    tenant_create(&t, "budget-fail", "{\"budget_usd_per_day\": 0.25, \"requests_per_s\": 1000}");
    tenant_create(&other, "budget-other", "{\"budget_usd_per_day\": 0.25, \"requests_per_s\": 1000}");
    char run[64];
    for (int i = 0; i < 3; i++) { /* $0.10 each: 0.10, 0.20, 0.30 */
        run_create(t.admin, "default", NULL, run);
        json_t *j = run_wait(t.admin, run, "succeeded|failed");
        assert_string_equal(jstr(j, "status"), "succeeded");
        json_decref(j);
    }
    json_t *j = tenant_get(&t);
    json_t *sp = json_object_get(j, "spend");
    assert_int_equal(json_integer_value(json_object_get(sp, "cost_micro_usd")), 300000);
    assert_int_equal(json_integer_value(json_object_get(sp, "prompt_tokens")), 300000);
    assert_true(json_is_true(json_object_get(sp, "budget_exhausted")));
    json_decref(j);

    uint64_t calls = mock_completions();
    run_create(t.admin, "default", NULL, run);
    j = run_wait(t.admin, run, "succeeded|failed");
    assert_string_equal(jstr(j, "status"), "failed");
    assert_string_equal(jstr(j, "error_code"), "budget_exceeded");
    json_decref(j);
    assert_int_equal(mock_completions(), calls); /* no model call */
    char path[128];
    snprintf(path, sizeof path, "/v1/runs/%s/events", run);
    j = ok_json(call("GET", path, t.admin, NULL), 200);
    bool seen = false, llm = false;
    json_t *ev;
    size_t i;
    json_array_foreach(j, i, ev) {
        const char *type = jstr(ev, "type");
        if (strcmp(type, "budget.exceeded") == 0) {
            seen = true;
            assert_string_equal(jstr(json_object_get(ev, "data"), "cap"), "tenant_budget");
        }
        llm |= strcmp(type, "llm.requested") == 0;
    }
    assert_true(seen);
    assert_false(llm);
    json_decref(j);

    /* another tenant's budget is its own */
    run_create(other.admin, "default", NULL, run);
    j = run_wait(other.admin, run, "succeeded|failed");
    assert_string_equal(jstr(j, "status"), "succeeded");
    json_decref(j);

    /* troupectl shows the spend */
    j = ctl_json(TOKEN, "tenant budget %s", t.name);
    assert_true(json_is_true(json_object_get(json_object_get(j, "spend"), "budget_exhausted")));
    json_decref(j);
}

/* Policy wait: the run does not call the model, stays queued, and goes on
 * once the budget is raised (troupectl tenant budget --set). */
static void test_budget_wait(void **st)
{
    (void)st;
    SKIP_IF_NO_BINARIES();
    struct tenant t;
    tenant_create(&t, "budget-wait",
                  "{\"budget_usd_per_day\": 0.05, \"budget_policy\": \"wait\", \"requests_per_s\": 1000}");
    char run[64];
    run_create(t.admin, "default", NULL, run); /* $0.10: over the budget after it */
    json_decref(run_wait(t.admin, run, "succeeded"));
    uint64_t calls = mock_completions();
    run_create(t.admin, "default", NULL, run);
    /* the node says the run waits on its budget */
    char log_line[256];
    snprintf(log_line, sizeof log_line, "run %s: tenant %s's budget is spent; waiting", run, t.id);
    bool waiting = false;
    for (int i = 0; i < 60 && !waiting; i++) {
        FILE *f = fopen(node.proc.log, "r");
        char line[1024];
        while (f != NULL && !waiting && fgets(line, sizeof line, f) != NULL)
            waiting = strstr(line, log_line) != NULL;
        if (f != NULL)
            fclose(f);
        if (!waiting)
            json_decref(run_wait(t.admin, run, "queued|running|succeeded|failed")); /* a 5 s long poll at most */
    }
    assert_true(waiting);
    char path[128];
    json_t *j;
    snprintf(path, sizeof path, "/v1/runs/%s", run);
    j = ok_json(call("GET", path, t.admin, NULL), 200);
    assert_string_equal(jstr(j, "status"), "queued");
    json_decref(j);
    assert_int_equal(mock_completions(), calls);

    char *out;
    assert_int_equal(ctl(&out, TOKEN, "tenant budget %s --set 1", t.id), 0);
    free(out);
    j = run_wait(t.admin, run, "succeeded|failed");
    assert_string_equal(jstr(j, "status"), "succeeded");
    json_decref(j);
    assert_int_equal(mock_completions(), calls + 1);
}

/* The secrets of the keys are nowhere in the node's data directory (only
 * their hashes are); the key ids are (so the scan does see the data). */
static bool file_has(const char *path, const char *needle)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return false;
    size_t n = strlen(needle), cap = 1 << 20, len = 0;
    char *buf = malloc(cap);
    bool found = false;
    size_t k;
    while (!found && (k = fread(buf + len, 1, cap - len, f)) > 0) {
        len += k;
        found = memmem(buf, len, needle, n) != NULL;
        if (len > n) { /* keep the tail: a match may straddle reads */
            memmove(buf, buf + len - n, n);
            len = n;
        }
    }
    free(buf);
    fclose(f);
    return found;
}

static int dir_has(const char *d, const char *needle)
{
    DIR *dp = opendir(d);
    if (dp == NULL)
        return 0;
    struct dirent *e;
    int found = 0;
    while (!found && (e = readdir(dp)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char p[1024];
        snprintf(p, sizeof p, "%s/%s", d, e->d_name);
        struct stat sb;
        if (lstat(p, &sb) != 0)
            continue;
        if (S_ISDIR(sb.st_mode))
            found = dir_has(p, needle);
        else if (S_ISREG(sb.st_mode))
            found = file_has(p, needle);
    }
    closedir(dp);
    return found;
}

static void test_no_secret_on_disk(void **st)
{
    (void)st;
    SKIP_IF_NO_BINARIES();
    struct tenant t;
    tenant_create(&t, "disk", NULL);
    char k[128];
    key_create(&t, "operator", t.admin, k);
    json_decref(ok_json(call("GET", "/v1/runs", k, NULL), 200));
    char id[17];
    memcpy(id, t.admin + 4, 16);
    id[16] = '\0';
    assert_true(dir_has(data, id));          /* the key id: in the raft log and the store */
    assert_false(dir_has(data, t.admin + 21)); /* the secret: nowhere */
    assert_false(dir_has(data, k + 21));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keys),        cmocka_unit_test(test_isolation),   cmocka_unit_test(test_roles),
        cmocka_unit_test(test_rate_limit),  cmocka_unit_test(test_active_runs), cmocka_unit_test(test_budget_fail),
        cmocka_unit_test(test_budget_wait), cmocka_unit_test(test_no_secret_on_disk),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
