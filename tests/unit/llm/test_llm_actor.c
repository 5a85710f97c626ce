/* The llm actor end to end against the real troupe-mockllm binary, started
 * here on an ephemeral loopback port (found through --port-file, polled,
 * never slept on). argv[1] is the binary, argv[2] the script file. Only the
 * PID this test started is ever signalled.
 *
 * Calls go through a throwaway client actor (tr_request to the llm actor);
 * the test thread polls for its reply. The mock's /_mock/stats tells how many
 * requests reached it: that is how retries and the breaker are checked. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>

#include "actors/llm.h"
#include "records.h"

#define KEY "sk-llm-test"
#define CALL_DEADLINE_MS 170000u

static const char *bin_path;
static const char *script_path;
static char tmpdir[256];
static pid_t child = -1;
static int port;
static char base_url[64];
static char mock_root[64];

static struct tr_rt *rt;
static struct tr_node_env env;
static tr_actor_id llm;          /* the main actor under test */
static tr_actor_id llm2;         /* the same configuration on the other scheduler */
static tr_actor_id llm_badkey;   /* sends a wrong API key */
static tr_actor_id llm_fast;     /* 300 ms per attempt, 2 attempts */
static struct tr_llm_models *node_table; /* freed after the runtime */

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void tick(void)
{
    struct timespec t = {0, 1000 * 1000};
    nanosleep(&t, NULL); /* poll interval; every wait is bounded by a deadline */
}

/* ---- the mock server ------------------------------------------------------ */

static void dump_log(void)
{
    char path[300], line[512];
    snprintf(path, sizeof path, "%s/mockllm.log", tmpdir);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return;
    fprintf(stderr, "---- troupe-mockllm log ----\n");
    while (fgets(line, sizeof line, f) != NULL)
        fputs(line, stderr);
    fclose(f);
}

static int start_server(void)
{
    char port_file[300], log_path[300];
    snprintf(tmpdir, sizeof tmpdir, "/tmp/llm-it-XXXXXX");
    if (mkdtemp(tmpdir) == NULL)
        return -1;
    snprintf(port_file, sizeof port_file, "%s/port", tmpdir);
    snprintf(log_path, sizeof log_path, "%s/mockllm.log", tmpdir);
    child = fork();
    if (child < 0)
        return -1;
    if (child == 0) {
        int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 2);
            close(fd);
        }
        execl(bin_path, bin_path, "--listen", "127.0.0.1:0", "--script", script_path, "--port-file", port_file,
              "--require-key", KEY, (char *)NULL);
        _exit(127);
    }
    uint64_t deadline = now_ms() + 20000;
    while (now_ms() < deadline) {
        FILE *f = fopen(port_file, "r");
        if (f != NULL) {
            int ok = fscanf(f, "%d", &port) == 1;
            fclose(f);
            if (ok && port > 0)
                return 0;
        }
        int st;
        if (waitpid(child, &st, WNOHANG) == child) {
            child = -1;
            dump_log();
            return -1;
        }
        tick();
    }
    dump_log();
    return -1;
}

static int stop_server(void)
{
    int st = 0, rv = 0;
    char path[300];

    if (child > 0) {
        kill(child, SIGTERM);
        uint64_t deadline = now_ms() + 10000;
        pid_t got;
        while ((got = waitpid(child, &st, WNOHANG)) == 0 && now_ms() < deadline)
            tick();
        if (got == 0) {
            kill(child, SIGKILL);
            waitpid(child, &st, 0);
            fprintf(stderr, "troupe-mockllm did not stop on SIGTERM\n");
            rv = -1;
        } else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            fprintf(stderr, "troupe-mockllm exited with status %d\n", st);
            rv = -1;
        }
        if (rv != 0)
            dump_log();
        child = -1;
    }
    snprintf(path, sizeof path, "%s/port", tmpdir);
    unlink(path);
    snprintf(path, sizeof path, "%s/mockllm.log", tmpdir);
    unlink(path);
    rmdir(tmpdir);
    return rv;
}

struct buf {
    char *p;
    size_t n;
};

static size_t buf_write(char *data, size_t size, size_t nmemb, void *ud)
{
    struct buf *b = ud;
    size_t n = size * nmemb;
    b->p = realloc(b->p, b->n + n + 1);
    memcpy(b->p + b->n, data, n);
    b->n += n;
    b->p[b->n] = '\0';
    return n;
}

/* A control request to the mock; returns the parsed JSON body (or NULL). */
static json_t *mock_http(const char *method, const char *path, const char *body)
{
    char url[128];
    struct buf b = {0};
    long status = 0;
    json_t *out = NULL;
    CURL *e = curl_easy_init();

    snprintf(url, sizeof url, "%s%s", mock_root, path);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    if (body != NULL)
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
    else if (strcmp(method, "POST") == 0)
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, "");
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, buf_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 10000L);
    assert_int_equal(curl_easy_perform(e), CURLE_OK);
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    assert_int_equal(status, 200);
    curl_easy_cleanup(e);
    if (b.p != NULL)
        out = json_loads(b.p, 0, NULL);
    free(b.p);
    return out;
}

static void mock_post(const char *path, const char *body)
{
    json_decref(mock_http("POST", path, body));
}

/* /_mock/stats "requests": every /v1/ request the mock saw. */
static long mock_requests(void)
{
    json_t *s = mock_http("GET", "/_mock/stats", NULL);
    assert_non_null(s);
    long n = (long)json_integer_value(json_object_get(s, "requests"));
    json_decref(s);
    return n;
}

static long mock_status_count(const char *status)
{
    json_t *s = mock_http("GET", "/_mock/stats", NULL);
    assert_non_null(s);
    long n = (long)json_integer_value(json_object_get(json_object_get(s, "by_status"), status));
    json_decref(s);
    return n;
}

/* ---- calling the llm actor ------------------------------------------------ */

struct call {
    tr_actor_id to;
    char *req;
    size_t req_len;
    atomic_int done;
    int send_rv;
    uint32_t type;
    uint32_t flags;
    char *reply;
    size_t reply_len;
};

static int client_init(struct tr_ctx *ctx, void *state, void *arg)
{
    struct call *c = arg;
    uint64_t corr;
    *(struct call **)state = c;
    /* The JSON shape of a call, as the wire carries it; one that does not
     * convert goes as is, for the actor to refuse. */
    struct tr_msg *m = NULL;
    if (tr_llm_call_from_json(c->req, c->req_len, &m, NULL) != 0)
        m = tr_msg_make(TR_MSG_LLM_CALL, c->req, (uint32_t)c->req_len);
    c->send_rv = tr_request(ctx, c->to, m, CALL_DEADLINE_MS, &corr);
    if (c->send_rv != 0) {
        tr_msg_free(m);
        atomic_store(&c->done, 1);
        tr_stop(ctx, tr_self(ctx));
    }
    return 0;
}

static int client_receive(struct tr_ctx *ctx, void *state, struct tr_msg *msg)
{
    struct call *c = *(struct call **)state;
    c->type = msg->type;
    c->flags = msg->flags;
    c->reply = malloc(msg->len + 1);
    memcpy(c->reply, msg->data, msg->len);
    c->reply[msg->len] = '\0';
    c->reply_len = msg->len;
    tr_stop(ctx, tr_self(ctx));
    atomic_store(&c->done, 1);
    return 0;
}

static const struct tr_behavior client_behavior = {
    .name = "llm-test-client",
    .state_size = sizeof(struct call *),
    .init = client_init,
    .receive = client_receive,
};

static void call_start(struct call *c, tr_actor_id to, json_t *req)
{
    tr_actor_id id;
    memset(c, 0, sizeof *c);
    c->to = to;
    c->req = json_dumps(req, JSON_COMPACT);
    c->req_len = strlen(c->req);
    json_decref(req);
    struct tr_spawn_opts so = {.behavior = &client_behavior, .arg = c, .sched = TR_SCHED_ANY};
    assert_int_equal(tr_spawn(rt, &so, &id), 0);
}

/* Wait for the reply; returns it parsed (the caller frees). */
static json_t *call_wait(struct call *c)
{
    uint64_t deadline = now_ms() + CALL_DEADLINE_MS + 5000;
    while (!atomic_load(&c->done) && now_ms() < deadline)
        tick();
    assert_true(atomic_load(&c->done));
    assert_int_equal(c->send_rv, 0);
    assert_int_equal(c->type, TR_MSG_LLM_RESULT);
    assert_true(c->flags & TR_MSGF_REPLY);
    json_t *r = h_llm_result_json(c->reply, c->reply_len);
    assert_non_null(r);
    free(c->reply);
    free(c->req);
    return r;
}

static json_t *call_sync(tr_actor_id to, json_t *req)
{
    struct call c;
    call_start(&c, to, req);
    return call_wait(&c);
}

/* A TR_MSG_LLM_CALL: [mock:script] selects the script; `assistants` assistant
 * turns (with a tool result each) before the final user message select the
 * step. */
static json_t *make_call(const char *model, const char *script, const char *user, int assistants)
{
    json_t *msgs = json_array();
    if (script != NULL)
        json_array_append_new(msgs, json_pack("{s:s, s:s++}", "role", "system", "content",
                                              "You are a test. [mock:", script, "]"));
    json_array_append_new(msgs, json_pack("{s:s, s:s}", "role", "user", "content", user));
    for (int i = 0; i < assistants; i++) {
        char id[32];
        snprintf(id, sizeof id, "call_%d", i);
        json_array_append_new(
            msgs, json_pack("{s:s, s:n, s:[{s:s, s:s, s:{s:s, s:s}}]}", "role", "assistant", "content",
                            "tool_calls", "id", id, "type", "function", "function", "name", "get_weather",
                            "arguments", "{\"city\": \"Paris\"}"));
        json_array_append_new(msgs, json_pack("{s:s, s:s, s:s}", "role", "tool", "tool_call_id", id, "content",
                                              i == assistants - 1 ? "sunny, 21C" : "cloudy"));
    }
    return json_pack("{s:s, s:o, s:[{s:s, s:{s:s, s:s, s:{s:s, s:{s:{s:s}}}}}], s:s, s:s, s:i}", "model", model,
                     "messages", msgs, "tools", "type", "function", "function", "name", "get_weather",
                     "description", "Weather in a city", "parameters", "type", "object", "properties", "city",
                     "type", "string", "tenant", "t1", "run_id", "run_0000000000000001", "step", assistants);
}

static const char *str(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    if (s == NULL)
        fail_msg("no string \"%s\"", k);
    return s;
}

static json_int_t num(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    if (!json_is_integer(v))
        fail_msg("no integer \"%s\"", k);
    return json_integer_value(v);
}

static void assert_ok(json_t *r)
{
    if (!json_is_true(json_object_get(r, "ok"))) {
        char *t = json_dumps(r, 0);
        fail_msg("not ok: %s", t);
    }
}

/* The error object of a failed reply, checked for its code and retryable. */
static json_t *assert_error(json_t *r, const char *code, int retryable)
{
    json_t *e = json_object_get(r, "error");
    if (!json_is_false(json_object_get(r, "ok")) || !json_is_object(e)) {
        char *t = json_dumps(r, 0);
        fail_msg("not an error: %s", t);
    }
    if (strcmp(str(e, "code"), code) != 0 || json_is_true(json_object_get(e, "retryable")) != retryable) {
        char *t = json_dumps(r, 0);
        fail_msg("want %s retryable=%d, got %s", code, retryable, t);
    }
    assert_true(json_string_length(json_object_get(e, "message")) > 0);
    (void)num(e, "retry_after_ms");
    return e;
}

static void assert_contains(const char *hay, const char *needle)
{
    if (strstr(hay, needle) == NULL)
        fail_msg("\"%s\" does not contain \"%s\"", hay, needle);
}

/* ---- fixtures ------------------------------------------------------------- */

static tr_actor_id spawn_llm(const char *key, uint32_t timeout_ms, uint32_t attempts, int sched)
{
    tr_actor_id id;
    struct tr_llm_config cfg = {
        .base_url = base_url,
        .api_key = key,
        .timeout_ms = timeout_ms,
        .max_attempts = attempts,
        .backoff_base_ms = 10,
        .backoff_cap_ms = 100,
        .breaker_threshold = 5,
        .breaker_cooldown_ms = 3600000,     /* only tr_llm_endpoint_end_cooldown ends it */
        .breaker_cooldown_max_ms = 14400000,
    };
    assert_int_equal(tr_llm_spawn_config(rt, &env, &cfg, sched, &id), 0);
    return id;
}

static int group_setup(void **state)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (start_server() != 0)
        return -1;
    snprintf(mock_root, sizeof mock_root, "http://127.0.0.1:%d", port);
    snprintf(base_url, sizeof base_url, "http://127.0.0.1:%d/v1/", port); /* the slash is stripped */
    struct tr_rt_opts o = {.schedulers = 2};
    if (tr_rt_new(&o, &rt) != 0 || tr_rt_start(rt) != 0)
        return -1;
    env.llm_timeout_ms = 10000;
    env.n_schedulers = 2;
    llm = spawn_llm(KEY, 0, 4, 0);
    llm2 = spawn_llm(KEY, 0, 4, 1); /* same configuration, other scheduler */
    llm_badkey = spawn_llm("sk-wrong", 0, 4, 0);
    llm_fast = spawn_llm(KEY, 300, 2, 1);
    return 0;
}

static int group_teardown(void **state)
{
    if (rt != NULL)
        tr_rt_shutdown(rt);
    tr_llm_models_free(node_table);
    int rv = stop_server();
    curl_global_cleanup();
    return rv;
}

/* The stripped URL, as the breaker registry knows it. */
static const char *endpoint(void)
{
    static char u[64];
    snprintf(u, sizeof u, "http://127.0.0.1:%d/v1", port);
    return u;
}

static int test_setup(void **state)
{
    mock_post("/_mock/reset", NULL);
    tr_llm_endpoint_reset(endpoint());
    return 0;
}

static enum tr_llm_breaker_state breaker_state(struct tr_llm_breaker *b)
{
    assert_int_equal(tr_llm_endpoint_stats(endpoint(), uv_hrtime() / 1000000u, b), 0);
    return b->state;
}

/* ---- tests ---------------------------------------------------------------- */

static void test_final_answer(void **state)
{
    json_t *r = call_sync(llm, make_call("mock-gpt", NULL, "Ada", 0));
    assert_ok(r);
    assert_string_equal(str(r, "content"), "Hello, Ada!");
    assert_int_equal(json_array_size(json_object_get(r, "tool_calls")), 0);
    assert_string_equal(str(r, "finish_reason"), "stop");
    assert_string_equal(str(r, "model"), "mock-gpt");
    json_t *u = json_object_get(r, "usage");
    assert_true(num(u, "prompt_tokens") > 0);
    assert_true(num(u, "completion_tokens") > 0);
    assert_int_equal(num(r, "cost_micro_usd"), 0);
    assert_int_equal(num(r, "attempts"), 1);
    assert_true(num(r, "latency_ms") >= 0);
    assert_true(strncmp(str(r, "request_id"), "chatcmpl", 8) == 0);
    json_decref(r);
    assert_int_equal(mock_requests(), 1);
}

static void test_tool_calls(void **state)
{
    json_t *r = call_sync(llm, make_call("mock-gpt", "weather", "Weather in Paris?", 0));
    assert_ok(r);
    assert_true(json_is_null(json_object_get(r, "content")));
    assert_string_equal(str(r, "finish_reason"), "tool_calls");
    json_t *calls = json_object_get(r, "tool_calls");
    assert_int_equal(json_array_size(calls), 1);
    json_t *c = json_array_get(calls, 0);
    assert_string_equal(str(c, "name"), "get_weather");
    assert_true(strncmp(str(c, "id"), "call_", 5) == 0);
    json_t *args = json_loads(str(c, "arguments"), 0, NULL);
    assert_non_null(args);
    assert_string_equal(str(args, "city"), "Paris");
    json_decref(args);
    json_decref(r);

    /* Step 1: content and two parallel calls, one with raw-string arguments. */
    r = call_sync(llm, make_call("mock-gpt", "weather", "Weather in Paris?", 1));
    assert_ok(r);
    assert_string_equal(str(r, "content"), "Checking both.");
    calls = json_object_get(r, "tool_calls");
    assert_int_equal(json_array_size(calls), 2);
    assert_string_equal(str(json_array_get(calls, 1), "name"), "get_time");
    assert_string_equal(str(json_array_get(calls, 1), "arguments"), "{\"tz\": \"Europe/Rome\"}");
    json_decref(r);

    /* Step 2: the final answer uses the last tool result. */
    r = call_sync(llm, make_call("mock-gpt", "weather", "Weather in Paris?", 2));
    assert_ok(r);
    assert_string_equal(str(r, "content"), "The weather: sunny, 21C");
    assert_string_equal(str(r, "finish_reason"), "stop");
    json_decref(r);
    assert_int_equal(mock_requests(), 3);
}

static void test_usage_and_cost(void **state)
{
    /* 10^6 prompt and 5 * 10^5 completion tokens. */
    json_t *r = call_sync(llm, make_call("mock-priced", "usage", "u", 0));
    assert_ok(r);
    assert_int_equal(num(json_object_get(r, "usage"), "prompt_tokens"), 1000000);
    assert_int_equal(num(json_object_get(r, "usage"), "completion_tokens"), 500000);
    assert_int_equal(num(r, "cost_micro_usd"), 1000000 * 1 + 500000 * 2);
    json_decref(r);
    r = call_sync(llm, make_call("gpt-4o-mini", "usage", "u", 0));
    assert_ok(r);
    assert_string_equal(str(r, "model"), "gpt-4o-mini");
    assert_int_equal(num(r, "cost_micro_usd"), 150000 + 300000);
    json_decref(r);
    r = call_sync(llm, make_call("my-finetune", "usage", "u", 0));
    assert_ok(r);
    assert_int_equal(num(r, "cost_micro_usd"), 0); /* unknown: free, with a warning */
    json_decref(r);
}

static void test_rate_limited_then_ok(void **state)
{
    json_t *r = call_sync(llm, make_call("mock-gpt", "flaky", "again", 0));
    assert_ok(r);
    assert_string_equal(str(r, "content"), "third time lucky");
    assert_int_equal(num(r, "attempts"), 3);
    json_decref(r);
    assert_int_equal(mock_status_count("429"), 2);
    assert_int_equal(mock_status_count("200"), 1);
    struct tr_llm_breaker b;
    assert_int_equal(breaker_state(&b), TR_LLM_BREAKER_CLOSED);
    assert_int_equal(b.failures, 0); /* 429 shows the endpoint is up */
}

static void test_5xx_then_ok(void **state)
{
    json_t *r = call_sync(llm, make_call("mock-gpt", "flaky500", "again", 0));
    assert_ok(r);
    assert_string_equal(str(r, "content"), "recovered");
    assert_int_equal(num(r, "attempts"), 3);
    json_decref(r);
    assert_int_equal(mock_status_count("503"), 2);
}

static void test_server_errors_exhaust(void **state)
{
    json_t *r = call_sync(llm, make_call("mock-gpt", "servererror", "x", 0));
    json_t *e = assert_error(r, "unavailable", 1);
    assert_contains(str(e, "message"), "HTTP 500");
    assert_contains(str(e, "message"), "boom");
    assert_contains(str(e, "message"), "4 attempts");
    assert_true(num(e, "retry_after_ms") > 0);
    json_decref(r);
    assert_int_equal(mock_requests(), 4);
    struct tr_llm_breaker b;
    assert_int_equal(breaker_state(&b), TR_LLM_BREAKER_CLOSED);
    assert_int_equal(b.consecutive_failures, 4);
}

static void test_garbage(void **state)
{
    json_t *r = call_sync(llm, make_call("mock-gpt", "bad_json", "x", 0));
    json_t *e = assert_error(r, "bad_response", 0);
    assert_contains(str(e, "message"), "not JSON");
    assert_int_equal(num(e, "retry_after_ms"), 0);
    json_decref(r);
    assert_int_equal(mock_requests(), 4);

    /* Bad bodies are per-call failures: twelve attempts in a row, over the
     * threshold of five, and the breaker every run shares stays closed. */
    r = call_sync(llm, make_call("mock-gpt", "empty_choices", "x", 0));
    assert_contains(str(assert_error(r, "bad_response", 0), "message"), "no choices");
    json_decref(r);
    r = call_sync(llm, make_call("mock-gpt", "no_content", "x", 0));
    assert_contains(str(assert_error(r, "bad_response", 0), "message"), "no content");
    json_decref(r);
    assert_int_equal(mock_requests(), 12);
    struct tr_llm_breaker b;
    assert_int_equal(breaker_state(&b), TR_LLM_BREAKER_CLOSED);
    assert_int_equal(b.failures, 0);
    assert_int_equal(b.opens, 0);
    /* Another run's call goes through at once. */
    r = call_sync(llm2, make_call("mock-gpt", NULL, "Gus", 0));
    assert_ok(r);
    json_decref(r);
    assert_int_equal(mock_requests(), 13);

    /* A body cut short is a transport failure: the provider may be fine later. */
    r = call_sync(llm, make_call("mock-gpt", "truncated", "x", 0));
    assert_error(r, "unavailable", 1);
    json_decref(r);

    /* Arguments that are not JSON are the model's mistake, not the wire's:
     * passed through for the run to report back to the model. */
    r = call_sync(llm, make_call("mock-gpt", "bad_arguments", "x", 0));
    assert_ok(r);
    json_t *c = json_array_get(json_object_get(r, "tool_calls"), 0);
    json_t *parsed = json_loads(str(c, "arguments"), 0, NULL);
    assert_null(parsed);
    json_decref(r);
}

static void test_length(void **state)
{
    json_t *r = call_sync(llm, make_call("mock-gpt", "length", "x", 0));
    assert_ok(r);
    assert_string_equal(str(r, "finish_reason"), "length");
    assert_string_equal(str(r, "content"), "This answer was cut");
    json_decref(r);
}

static void test_rejected(void **state)
{
    json_t *r = call_sync(llm, make_call("mock-gpt", "badrequest", "x", 0));
    json_t *e = assert_error(r, "rejected", 0);
    assert_contains(str(e, "message"), "HTTP 400");
    assert_contains(str(e, "message"), "context too long");
    json_decref(r);
    assert_int_equal(mock_requests(), 1);

    r = call_sync(llm_badkey, make_call("mock-gpt", NULL, "x", 0));
    e = assert_error(r, "rejected", 0);
    assert_contains(str(e, "message"), "HTTP 401");
    json_decref(r);
    assert_int_equal(mock_requests(), 2);

    /* A malformed call never reaches the provider (this one cannot be put
     * in the wire form: it goes as JSON text, without the header). */
    r = call_sync(llm, json_pack("{s:s, s:[]}", "model", "mock-gpt", "messages"));
    e = assert_error(r, "rejected", 0);
    assert_contains(str(e, "message"), "header");
    json_decref(r);
    r = call_sync(llm, json_pack("{s:s}", "model", "mock-gpt"));
    assert_error(r, "rejected", 0);
    json_decref(r);
    assert_int_equal(mock_requests(), 2);
    struct tr_llm_breaker b;
    assert_int_equal(breaker_state(&b), TR_LLM_BREAKER_CLOSED);
    assert_int_equal(b.failures, 0);
}

static void test_retry_after_too_long(void **state)
{
    /* Retry-After: 120 is more than the gateway holds a call: the run waits. */
    json_t *r = call_sync(llm, make_call("mock-gpt", "toolong", "x", 0));
    json_t *e = assert_error(r, "rate_limited", 1);
    assert_true(num(e, "retry_after_ms") >= 120000);
    assert_contains(str(e, "message"), "Come back");
    json_decref(r);
    assert_int_equal(mock_requests(), 1);
}

static void test_timeout(void **state)
{
    /* 300 ms per attempt against a 20 s delay. */
    json_t *r = call_sync(llm_fast, make_call("mock-gpt", "slow", "x", 0));
    json_t *e = assert_error(r, "timeout", 1);
    assert_contains(str(e, "message"), "2 attempts");
    json_decref(r);
    struct tr_llm_breaker b;
    assert_int_equal(breaker_state(&b), TR_LLM_BREAKER_CLOSED);
    assert_int_equal(b.failures, 2);
}

static void test_breaker(void **state)
{
    struct tr_llm_breaker b;
    json_t *r, *e;

    mock_post("/_mock/down", NULL);
    /* Four failures: under the threshold of five. */
    r = call_sync(llm, make_call("mock-gpt", NULL, "a", 0));
    assert_error(r, "unavailable", 1);
    json_decref(r);
    assert_int_equal(mock_requests(), 4);
    assert_int_equal(breaker_state(&b), TR_LLM_BREAKER_CLOSED);

    /* The fifth opens it; the retry is then refused by the breaker. */
    r = call_sync(llm, make_call("mock-gpt", NULL, "b", 0));
    e = assert_error(r, "breaker_open", 1);
    assert_contains(str(e, "message"), "HTTP 503");
    assert_true(num(e, "retry_after_ms") > 0 && num(e, "retry_after_ms") <= 3600000);
    json_decref(r);
    assert_int_equal(mock_requests(), 5);
    assert_int_equal(breaker_state(&b), TR_LLM_BREAKER_OPEN);
    assert_int_equal(b.opens, 1);

    /* While open, calls (from any llm actor) never reach the server. */
    for (int i = 0; i < 3; i++) {
        r = call_sync(i == 1 ? llm2 : llm, make_call("mock-gpt", NULL, "c", 0));
        assert_error(r, "breaker_open", 1);
        json_decref(r);
    }
    assert_int_equal(mock_requests(), 5);
    assert_int_equal(breaker_state(&b), TR_LLM_BREAKER_OPEN);
    assert_int_equal(b.rejected, 4);

    /* Half-open while still down: the probe fails, the cool-down doubles. */
    assert_int_equal(tr_llm_endpoint_end_cooldown(endpoint()), 0);
    assert_int_equal(breaker_state(&b), TR_LLM_BREAKER_HALF_OPEN);
    r = call_sync(llm, make_call("mock-gpt", NULL, "d", 0));
    assert_error(r, "breaker_open", 1);
    json_decref(r);
    assert_int_equal(mock_requests(), 6);
    assert_int_equal(breaker_state(&b), TR_LLM_BREAKER_OPEN);
    assert_int_equal(b.opens, 2);
    assert_int_equal(b.cooldown_ms, 7200000);

    /* Back up: the probe succeeds and closes it. */
    mock_post("/_mock/up", NULL);
    assert_int_equal(tr_llm_endpoint_end_cooldown(endpoint()), 0);
    r = call_sync(llm, make_call("mock-gpt", NULL, "Eve", 0));
    assert_ok(r);
    assert_string_equal(str(r, "content"), "Hello, Eve!");
    assert_int_equal(num(r, "attempts"), 1);
    json_decref(r);
    assert_int_equal(breaker_state(&b), TR_LLM_BREAKER_CLOSED);
    assert_int_equal(b.cooldown_ms, 3600000);
    assert_int_equal(b.consecutive_failures, 0);
    r = call_sync(llm2, make_call("mock-gpt", NULL, "Fay", 0));
    assert_ok(r);
    json_decref(r);
    assert_int_equal(mock_requests(), 8);
}

/* A half-open probe that gets a bad body: the endpoint answered, so the
 * breaker closes; the call itself fails per call (bad_response). */
static void test_breaker_probe_gets_garbage(void **state)
{
    struct tr_llm_breaker b;
    json_t *r;

    mock_post("/_mock/down", NULL);
    r = call_sync(llm, make_call("mock-gpt", NULL, "a", 0));
    assert_error(r, "unavailable", 1);
    json_decref(r);
    r = call_sync(llm, make_call("mock-gpt", NULL, "b", 0));
    assert_error(r, "breaker_open", 1);
    json_decref(r);
    assert_int_equal(breaker_state(&b), TR_LLM_BREAKER_OPEN);
    mock_post("/_mock/up", NULL);
    assert_int_equal(tr_llm_endpoint_end_cooldown(endpoint()), 0);
    r = call_sync(llm, make_call("mock-gpt", "bad_json", "x", 0));
    assert_error(r, "bad_response", 0);
    json_decref(r);
    assert_int_equal(mock_requests(), 5 + 4);
    assert_int_equal(breaker_state(&b), TR_LLM_BREAKER_CLOSED);
    assert_int_equal(b.consecutive_failures, 0);
    r = call_sync(llm2, make_call("mock-gpt", NULL, "Hal", 0));
    assert_ok(r);
    json_decref(r);
}

/* Prices from a models file (cfg.models_path) or from the node's table
 * (env->models, which wins); a models file that cannot be loaded fails the
 * spawn. Process-wide totals count every call. */
static void test_models_and_totals(void **state)
{
    char path[300];
    struct tr_llm_totals t0, t1;
    tr_actor_id a;
    FILE *f;

    tr_llm_totals_get(&t0);
    snprintf(path, sizeof path, "%s/models.json", tmpdir);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs("{\"models\": {\"mock-gpt\": {\"prompt_per_mtok\": 10, \"completion_per_mtok\": 20}}}", f);
    fclose(f);
    struct tr_llm_config cfg = {.base_url = base_url, .api_key = KEY, .models_path = path};
    assert_int_equal(tr_llm_spawn_config(rt, &env, &cfg, 0, &a), 0);
    json_t *r = call_sync(a, make_call("mock-gpt", "usage", "u", 0));
    assert_ok(r);
    assert_int_equal(num(r, "cost_micro_usd"), 1000000 * 10 + 500000 * 20);
    json_decref(r);

    /* The node's table wins over any file. */
    struct tr_llm_models *table = NULL;
    const char *doc = "{\"models\": {\"mock-gpt\": {\"prompt_per_mtok\": 0.5, \"completion_per_mtok\": 0}}}";
    assert_int_equal(tr_llm_models_parse(doc, strlen(doc), &table, NULL), 0);
    struct tr_node_env env2 = env;
    env2.models = table;
    assert_int_equal(tr_llm_spawn_config(rt, &env2, &cfg, 1, &a), 0);
    r = call_sync(a, make_call("mock-gpt", "usage", "u", 0));
    assert_ok(r);
    assert_int_equal(num(r, "cost_micro_usd"), 500000);
    json_decref(r);

    unlink(path);
    struct tr_llm_config missing = {.base_url = base_url, .models_path = path};
    assert_int_equal(tr_llm_spawn_config(rt, &env, &missing, 0, &a), TR_ENOTFOUND);
    struct tr_llm_config bad_url = {.base_url = "ftp://127.0.0.1/v1"};
    assert_int_equal(tr_llm_spawn_config(rt, &env, &bad_url, 0, &a), TR_EINVAL);

    r = call_sync(llm, json_pack("{s:s}", "model", "x"));
    assert_error(r, "rejected", 0);
    json_decref(r);
    tr_llm_totals_get(&t1);
    assert_int_equal(t1.calls - t0.calls, 3);
    assert_int_equal(t1.ok - t0.ok, 2);
    assert_int_equal(t1.failed - t0.failed, 1);
    assert_int_equal(t1.attempts - t0.attempts, 2);
    assert_int_equal(t1.prompt_tokens - t0.prompt_tokens, 2000000);
    assert_int_equal(t1.completion_tokens - t0.completion_tokens, 1000000);
    assert_int_equal(t1.cost_micro_usd - t0.cost_micro_usd, 20000000 + 500000);
    /* The node frees its table after the runtime is gone: here, at exit. */
    node_table = table;
}

#define N_CONCURRENT 64

static void test_concurrent(void **state)
{
    static struct call calls[N_CONCURRENT];
    char user[32], want[48];

    for (int i = 0; i < N_CONCURRENT; i++) {
        snprintf(user, sizeof user, "u%d", i);
        call_start(&calls[i], i % 2 ? llm : llm2, make_call("mock-gpt", NULL, user, 0));
    }
    for (int i = 0; i < N_CONCURRENT; i++) {
        json_t *r = call_wait(&calls[i]);
        assert_ok(r);
        snprintf(want, sizeof want, "Hello, u%d!", i);
        assert_string_equal(str(r, "content"), want);
        json_decref(r);
    }
    assert_int_equal(mock_requests(), N_CONCURRENT);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s TROUPE_MOCKLLM SCRIPT\n", argv[0]);
        return 2;
    }
    bin_path = argv[1];
    script_path = argv[2];
    if (getenv("TROUPE_LOG") == NULL)
        tr_log_set_level(TR_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_final_answer, test_setup),
        cmocka_unit_test_setup(test_tool_calls, test_setup),
        cmocka_unit_test_setup(test_usage_and_cost, test_setup),
        cmocka_unit_test_setup(test_rate_limited_then_ok, test_setup),
        cmocka_unit_test_setup(test_5xx_then_ok, test_setup),
        cmocka_unit_test_setup(test_server_errors_exhaust, test_setup),
        cmocka_unit_test_setup(test_garbage, test_setup),
        cmocka_unit_test_setup(test_length, test_setup),
        cmocka_unit_test_setup(test_rejected, test_setup),
        cmocka_unit_test_setup(test_retry_after_too_long, test_setup),
        cmocka_unit_test_setup(test_timeout, test_setup),
        cmocka_unit_test_setup(test_breaker, test_setup),
        cmocka_unit_test_setup(test_breaker_probe_gets_garbage, test_setup),
        cmocka_unit_test_setup(test_models_and_totals, test_setup),
        cmocka_unit_test_setup(test_concurrent, test_setup),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
