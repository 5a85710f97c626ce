/* The fixture of the run behaviour tests: see fixture.h. */
#include "fixture.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

/* Every script the tests use; the system prompt's [mock:NAME] picks one.
 * The step is the number of assistant messages in the request. */
static const char script_json[] =
    "{\"model\": \"mock-gpt\", \"default\": \"simple\", \"scripts\": {\n"
    " \"simple\": [\n"
    "  {\"tool_calls\": [{\"name\": \"echo\", \"arguments\": {\"hello\": \"world\"}}]},\n"
    "  {\"content\": \"done: {{last_tool_result}}\"}],\n"
    " \"tenstep\": [\n"
    "  {\"content\": \"step {{step}}\", \"tool_calls\": [{\"name\": \"echo\", \"arguments\": {\"n\": \"{{step}}\", \"goal\": \"{{user}}\"}}]},\n"
    "  {\"tool_calls\": [{\"name\": \"add\", \"arguments\": {\"a\": 1, \"b\": 2}}]},\n"
    "  {\"tool_calls\": [{\"name\": \"echo\", \"arguments\": {\"n\": \"{{step}}\"}}]},\n"
    "  {\"tool_calls\": [{\"name\": \"add\", \"arguments\": {\"a\": 3, \"b\": 4}}]},\n"
    "  {\"tool_calls\": [{\"name\": \"echo\", \"arguments\": {\"n\": \"{{step}}\"}}]},\n"
    "  {\"tool_calls\": [{\"name\": \"add\", \"arguments\": {\"a\": 5, \"b\": 6.5}}]},\n"
    "  {\"tool_calls\": [{\"name\": \"echo\", \"arguments\": {\"n\": \"{{step}}\", \"nested\": {\"x\": [1, 2, 3]}}}]},\n"
    "  {\"tool_calls\": [{\"name\": \"add\", \"arguments\": {\"a\": -7, \"b\": 8}}]},\n"
    "  {\"tool_calls\": [{\"name\": \"echo\", \"arguments\": {\"n\": \"{{step}}\"}}]},\n"
    "  {\"content\": \"final after {{step}} steps: {{last_tool_result}}\"}],\n"
    " \"approval\": [\n"
    "  {\"content\": \"Paying.\", \"tool_calls\": [{\"name\": \"pay\", \"arguments\": {\"amount\": 5}}]},\n"
    "  {\"content\": \"outcome: {{last_tool_result}}\"}],\n"
    " \"approval_marked\": [\n"
    "  {\"tool_calls\": [{\"name\": \"pay_marked\", \"arguments\": {\"amount\": 7}}]},\n"
    "  {\"content\": \"outcome: {{last_tool_result}}\"}],\n"
    " \"steps_forever\": [\n"
    "  {\"tool_calls\": [{\"name\": \"echo\", \"arguments\": {\"n\": \"{{step}}\"}}], \"repeat\": true}],\n"
    " \"tokens\": [\n"
    "  {\"tool_calls\": [{\"name\": \"echo\", \"arguments\": {\"n\": \"{{step}}\"}}],\n"
    "   \"usage\": {\"prompt_tokens\": 400, \"completion_tokens\": 200}, \"repeat\": true}],\n"
    " \"cost\": [\n"
    "  {\"tool_calls\": [{\"name\": \"echo\", \"arguments\": {\"n\": \"{{step}}\"}}],\n"
    "   \"usage\": {\"prompt_tokens\": 100000, \"completion_tokens\": 100000}, \"repeat\": true}],\n"
    " \"slow_llm\": [\n"
    "  {\"content\": \"late answer\", \"delay_ms\": 5000}],\n"
    " \"loop_forever\": [\n"
    "  {\"tool_calls\": [{\"name\": \"echo\", \"arguments\": {\"q\": \"same\"}}], \"repeat\": true}],\n"
    " \"loop_recover\": [\n"
    "  {\"tool_calls\": [{\"name\": \"echo\", \"arguments\": {\"q\": \"same\"}}]},\n"
    "  {\"tool_calls\": [{\"name\": \"echo\", \"arguments\": {\"q\": \"same\"}}]},\n"
    "  {\"tool_calls\": [{\"name\": \"echo\", \"arguments\": {\"q\": \"same\"}}]},\n"
    "  {\"content\": \"changed approach\"}],\n"
    " \"bad_json\": [{\"malformed\": \"bad_json\", \"content\": \"x\", \"repeat\": true}],\n"
    " \"empty_choices\": [{\"malformed\": \"empty_choices\", \"content\": \"x\", \"repeat\": true}],\n"
    " \"unknown_tool\": [\n"
    "  {\"malformed\": \"unknown_tool\"},\n"
    "  {\"content\": \"recovered: {{last_tool_result}}\"}],\n"
    " \"bad_args\": [\n"
    "  {\"malformed\": \"bad_arguments\", \"tool_calls\": [{\"name\": \"echo\", \"arguments\": {\"x\": \"y\"}}]},\n"
    "  {\"content\": \"recovered: {{last_tool_result}}\"}],\n"
    " \"tool_timeout\": [\n"
    "  {\"tool_calls\": [{\"name\": \"slow\", \"arguments\": {\"ms\": 5000}}]},\n"
    "  {\"content\": \"after the timeout: {{last_tool_result}}\"}],\n"
    " \"nap\": [\n"
    "  {\"tool_calls\": [{\"name\": \"nap\", \"arguments\": {\"ms\": 3000}}]},\n"
    "  {\"content\": \"rested\"}]\n"
    "}}\n";

static int write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return -1;
    size_t n = strlen(text);
    int ok = fwrite(text, 1, n, f) == n;
    return fclose(f) == 0 && ok ? 0 : -1;
}

static void nap_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

json_t *fx_call(const char *method, const char *url, const char *body, long *status)
{
    struct h_resp r;
    h_http(&r, method, url, body, NULL, 15000);
    if (status != NULL)
        *status = r.status;
    json_t *j = r.json != NULL ? json_incref(r.json) : NULL;
    h_resp_free(&r);
    return j;
}

static int register_tool(struct fx *f, const char *name, const char *path, const char *risk, int timeout_ms,
                         const char *schema)
{
    char body[2048], url[256];
    long st;
    snprintf(body, sizeof body,
             "{\"name\": \"%s\", \"description\": \"%s via the toolserver\", \"input_schema\": %s,"
             " \"risk\": \"%s\", \"kind\": \"http\", \"config\": {\"url\": \"%s/tools/%s\","
             " \"allow\": [\"127.0.0.1\"]}, \"timeout_ms\": %d}",
             name, path, schema, risk, f->tools_base, path, timeout_ms);
    snprintf(url, sizeof url, "%s/v1/tools", f->node.base);
    json_t *j = fx_call("POST", url, body, &st);
    if (st != 200 && st != 201) {
        char *t = j != NULL ? json_dumps(j, 0) : NULL;
        fprintf(stderr, "fixture: register tool %s: HTTP %ld %s\n", name, st, t ? t : "");
        free(t);
    }
    json_decref(j);
    return st == 200 || st == 201 ? 0 : -1;
}

int fx_start(struct fx *f, const char *tag, char *const node_args[])
{
    char path[512], data[512], env_url[256];
    memset(f, 0, sizeof *f);
    f->dir = h_tmpdir(tag);
    if (f->dir == NULL)
        return -1;
    snprintf(path, sizeof path, "%s/script.json", f->dir);
    if (write_file(path, script_json) != 0)
        return -1;
    if (h_mockllm_start(&f->mock, path, f->dir, f->mock_base, sizeof f->mock_base) != 0)
        return -1;
    snprintf(f->mock_root, sizeof f->mock_root, "%.*s", (int)(strlen(f->mock_base) - 3), f->mock_base);
    snprintf(path, sizeof path, "%s/receipts.jsonl", f->dir);
    if (h_toolserver_start(&f->tools, f->dir, path, f->tools_base, sizeof f->tools_base) != 0)
        return -1;
    snprintf(data, sizeof data, "%s/node", f->dir);
    snprintf(env_url, sizeof env_url, "OPENAI_BASE_URL=%s", f->mock_base);
    char *env[] = { env_url, "OPENAI_API_KEY=test-key", NULL };
    if (h_node_start(&f->node, data, node_args, env) != 0)
        return -1;
    f->node_up = true;
    const char *obj = "{\"type\": \"object\"}";
    if (register_tool(f, "echo", "echo", "read", 10000, obj) != 0 ||
        register_tool(f, "add", "add", "write", 10000,
                      "{\"type\": \"object\", \"properties\": {\"a\": {\"type\": \"number\"},"
                      " \"b\": {\"type\": \"number\"}}, \"required\": [\"a\", \"b\"]}") != 0 ||
        register_tool(f, "pay", "payment", "irreversible", 10000,
                      "{\"type\": \"object\", \"properties\": {\"amount\": {\"type\": \"integer\"}},"
                      " \"required\": [\"amount\"]}") != 0 ||
        register_tool(f, "slow", "sleep", "read", 300, obj) != 0 ||
        register_tool(f, "nap", "sleep", "write", 30000, obj) != 0)
        return -1;
    return 0;
}

/* A sanitizer report in a log file: 1 (and the report printed). */
static int sanitizer_report(const char *log)
{
    char cmd[1024];
    if (log == NULL)
        return 0;
    snprintf(cmd, sizeof cmd, "grep -q -E 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' '%s'", log);
    if (system(cmd) != 0)
        return 0;
    fprintf(stderr, "fixture: sanitizer report in %s:\n", log);
    snprintf(cmd, sizeof cmd, "grep -A 40 -E 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' '%s' | head -80 >&2",
             log);
    if (system(cmd) != 0)
        fprintf(stderr, "(could not print it)\n");
    return 1;
}

int fx_stop(struct fx *f)
{
    int bad = 0;
    if (f->node_up) {
        int st = h_proc_stop(&f->node.proc, 20000);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            fprintf(stderr, "fixture: the node did not exit cleanly on SIGTERM (wait status 0x%x)\n", st);
            h_proc_dump_log(&f->node.proc, 30);
            bad = 1;
        }
    }
    bad |= sanitizer_report(f->node.proc.log);
    h_proc_stop(&f->mock, 10000);
    h_proc_stop(&f->tools, 10000);
    bad |= sanitizer_report(f->mock.log);
    bad |= sanitizer_report(f->tools.log);
    if (bad && getenv("TROUPE_KEEP_TMP") == NULL)
        fprintf(stderr, "fixture: set TROUPE_KEEP_TMP=1 to keep %s\n", f->dir);
    h_node_free(&f->node);
    h_proc_free(&f->mock);
    h_proc_free(&f->tools);
    h_tmpdir_remove(f->dir);
    memset(f, 0, sizeof *f);
    return bad ? -1 : 0;
}

char *fx_run(struct fx *f, const char *script, const char *goal, const char *tools, const char *extra)
{
    json_t *body = json_object(), *agent = json_object();
    char sys[256];
    snprintf(sys, sizeof sys, "You are a test agent. [mock:%s]", script);
    json_object_set_new(body, "goal", json_string(goal));
    json_object_set_new(agent, "model", json_string("mock-gpt"));
    json_object_set_new(agent, "system", json_string(sys));
    json_object_set_new(agent, "tools", tools ? json_loads(tools, 0, NULL) : json_array());
    if (extra != NULL) {
        char buf[1024];
        snprintf(buf, sizeof buf, "{%s}", extra);
        json_t *x = json_loads(buf, 0, NULL);
        if (x == NULL) {
            fprintf(stderr, "fixture: bad extra agent fields: %s\n", extra);
        } else {
            json_object_update(agent, x);
            json_decref(x);
        }
    }
    json_object_set_new(body, "agent", agent);
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    char *id = h_create_run(&f->node, text, NULL);
    free(text);
    return id;
}

json_t *fx_get_run(struct fx *f, const char *id)
{
    return h_get_run(&f->node, id);
}

int fx_wait_status(struct fx *f, const char *id, const char *status)
{
    uint64_t until = h_now_ms() + FX_WAIT_MS;
    const char *last = "?";
    char seen[32] = "";
    while (h_now_ms() < until) {
        json_t *r = fx_get_run(f, id);
        const char *st = r ? fx_str(r, "status") : "";
        snprintf(seen, sizeof seen, "%s", st);
        int ok = strcmp(st, status) == 0;
        json_decref(r);
        if (ok)
            return 0;
        nap_ms(10);
    }
    (void)last;
    fprintf(stderr, "fixture: run %s never reached %s (last seen: %s)\n", id, status, seen);
    return -1;
}

char *fx_wait_terminal(struct fx *f, const char *id)
{
    char *st = h_wait_run_terminal(&f->node, id, FX_WAIT_MS);
    if (st == NULL)
        fprintf(stderr, "fixture: run %s not terminal after %d ms\n", id, FX_WAIT_MS);
    return st;
}

json_t *fx_events(struct fx *f, const char *id)
{
    json_t *e = h_get_events(&f->node, id);
    return e != NULL ? e : json_array();
}

int fx_count(json_t *events, const char *type)
{
    size_t i;
    json_t *e;
    int n = 0;
    json_array_foreach(events, i, e)
        n += strcmp(fx_str(e, "type"), type) == 0;
    return n;
}

json_t *fx_nth(json_t *events, const char *type, int k)
{
    size_t i;
    json_t *e;
    json_array_foreach(events, i, e) {
        if (strcmp(fx_str(e, "type"), type) == 0 && k-- == 0)
            return e;
    }
    return NULL;
}

json_t *fx_wait_event(struct fx *f, const char *id, const char *type, int n)
{
    uint64_t until = h_now_ms() + FX_WAIT_MS;
    while (h_now_ms() < until) {
        json_t *ev = fx_events(f, id);
        json_t *e = fx_nth(ev, type, n - 1);
        if (e != NULL) {
            json_incref(e);
            json_decref(ev);
            return e;
        }
        json_decref(ev);
        nap_ms(10);
    }
    json_t *ev = fx_events(f, id);
    char *t = fx_types(ev);
    fprintf(stderr, "fixture: run %s: no %s #%d; journal: %s\n", id, type, n, t);
    free(t);
    json_decref(ev);
    return NULL;
}

char *fx_types(json_t *events)
{
    size_t i, cap = 64, len = 0;
    json_t *e;
    char *out = malloc(cap);
    out[0] = '\0';
    json_array_foreach(events, i, e) {
        const char *t = fx_str(e, "type");
        size_t n = strlen(t) + 2;
        if (len + n + 1 > cap) {
            cap = (len + n + 1) * 2;
            out = realloc(out, cap);
        }
        len += (size_t)sprintf(out + len, "%s%s", len ? " " : "", t);
    }
    return out;
}

int fx_types_equal(json_t *events, const char *const *expected)
{
    size_t n = 0;
    int ok = 1;
    while (expected[n] != NULL)
        n++;
    if (json_array_size(events) != n)
        ok = 0;
    for (size_t i = 0; ok && i < n; i++)
        ok = strcmp(fx_str(json_array_get(events, i), "type"), expected[i]) == 0;
    if (!ok) {
        char *got = fx_types(events);
        fprintf(stderr, "fixture: journal types differ\n  got:      %s\n  expected:", got);
        for (size_t i = 0; i < n; i++)
            fprintf(stderr, " %s", expected[i]);
        fprintf(stderr, "\n");
        free(got);
    }
    return ok;
}

int fx_seq_ok(json_t *events, const char *id)
{
    size_t i;
    json_t *e;
    json_array_foreach(events, i, e) {
        if (fx_int(e, "seq") != (long long)i + 1 || strcmp(fx_str(e, "run_id"), id) != 0) {
            fprintf(stderr, "fixture: event %zu has seq %lld run %s\n", i, fx_int(e, "seq"), fx_str(e, "run_id"));
            return 0;
        }
    }
    return 1;
}

json_t *fx_tool_stats(struct fx *f)
{
    char url[256];
    snprintf(url, sizeof url, "%s/_stats", f->tools_base);
    return fx_call("GET", url, NULL, NULL);
}

json_t *fx_tool_key(struct fx *f, const char *key)
{
    char url[512];
    long st;
    snprintf(url, sizeof url, "%s/_keys/%s", f->tools_base, key);
    json_t *j = fx_call("GET", url, NULL, &st);
    if (st != 200) {
        json_decref(j);
        return NULL;
    }
    return j;
}

json_t *fx_mock_stats(struct fx *f)
{
    char url[256];
    snprintf(url, sizeof url, "%s/_mock/stats", f->mock_root);
    return fx_call("GET", url, NULL, NULL);
}

void fx_pause(void)
{
    nap_ms(10);
}

long long fx_int(json_t *o, const char *name)
{
    json_t *v = json_object_get(o, name);
    return json_is_integer(v) ? (long long)json_integer_value(v) : 0;
}

const char *fx_str(json_t *o, const char *name)
{
    const char *s = json_string_value(json_object_get(o, name));
    return s != NULL ? s : "";
}

const char *fx_data_str(json_t *ev, const char *name)
{
    return fx_str(json_object_get(ev, "data"), name);
}

long long fx_data_int(json_t *ev, const char *name)
{
    return fx_int(json_object_get(ev, "data"), name);
}
