/* troupe-mockllm end to end: starts the real binary on an ephemeral loopback
 * port (found through --port-file, polled, never slept on) and talks to it
 * with libcurl. argv[1] is the binary, argv[2] the script file.
 * Only the PID this test started is ever signalled. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
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
#include <jansson.h>

#define KEY "sk-mock-test"
#define MAX_BODY 65536

static const char *bin_path;
static const char *script_path;
static char tmpdir[256];
static pid_t child = -1;
static int port;

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void dump_log(void)
{
    char path[300], line[512];
    snprintf(path, sizeof(path), "%s/mockllm.log", tmpdir);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return;
    fprintf(stderr, "---- troupe-mockllm log ----\n");
    while (fgets(line, sizeof(line), f) != NULL)
        fputs(line, stderr);
    fclose(f);
}

static int start_server(void **state)
{
    char port_file[300], log_path[300], max_body[32];
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/mockllm-it-XXXXXX");
    if (mkdtemp(tmpdir) == NULL)
        return -1;
    snprintf(port_file, sizeof(port_file), "%s/port", tmpdir);
    snprintf(log_path, sizeof(log_path), "%s/mockllm.log", tmpdir);
    snprintf(max_body, sizeof(max_body), "%d", MAX_BODY);

    child = fork();
    if (child < 0)
        return -1;
    if (child == 0) {
        int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 2);
            close(fd);
        }
        execl(bin_path, bin_path, "--listen", "127.0.0.1:0", "--script", script_path,
              "--port-file", port_file, "--require-key", KEY, "--max-body", max_body,
              (char *)NULL);
        _exit(127);
    }
    /* Readiness: the port file appears (written atomically) once listening. */
    uint64_t deadline = now_ms() + 10000;
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
        struct timespec tick = {0, 5 * 1000 * 1000};
        nanosleep(&tick, NULL); /* poll interval, bounded by the deadline */
    }
    dump_log();
    return -1;
}

static int stop_server(void **state)
{
    int st = 0;
    if (child > 0) {
        kill(child, SIGTERM);
        uint64_t deadline = now_ms() + 5000;
        pid_t got = 0;
        while ((got = waitpid(child, &st, WNOHANG)) == 0 && now_ms() < deadline) {
            struct timespec tick = {0, 5 * 1000 * 1000};
            nanosleep(&tick, NULL);
        }
        if (got == 0) {
            kill(child, SIGKILL);
            waitpid(child, &st, 0);
            fprintf(stderr, "troupe-mockllm did not stop on SIGTERM\n");
            dump_log();
            return -1;
        }
        child = -1;
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            fprintf(stderr, "troupe-mockllm exited with status %d\n", st);
            dump_log();
            return -1;
        }
    }
    char path[300];
    snprintf(path, sizeof(path), "%s/port", tmpdir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/mockllm.log", tmpdir);
    unlink(path);
    rmdir(tmpdir);
    return 0;
}

/* ------------------------------------------------------------------------ */

struct resp {
    long status;
    CURLcode rc;
    char *body;
    size_t len;
    char ctype[128];
    char retry_after[32];
    char transfer_encoding[32];
};

static size_t body_cb(char *p, size_t size, size_t n, void *ud)
{
    struct resp *r = ud;
    r->body = realloc(r->body, r->len + size * n + 1);
    memcpy(r->body + r->len, p, size * n);
    r->len += size * n;
    r->body[r->len] = '\0';
    return size * n;
}

static void header_value(const char *line, size_t n, const char *name, char *out, size_t cap)
{
    size_t k = strlen(name);
    if (n <= k + 1 || strncasecmp(line, name, k) != 0 || line[k] != ':')
        return;
    const char *v = line + k + 1;
    size_t vn = n - k - 1;
    while (vn > 0 && (*v == ' ' || *v == '\t'))
        v++, vn--;
    while (vn > 0 && (v[vn - 1] == '\r' || v[vn - 1] == '\n'))
        vn--;
    if (vn >= cap)
        vn = cap - 1;
    memcpy(out, v, vn);
    out[vn] = '\0';
}

static size_t header_cb(char *p, size_t size, size_t n, void *ud)
{
    struct resp *r = ud;
    header_value(p, size * n, "Content-Type", r->ctype, sizeof(r->ctype));
    header_value(p, size * n, "Retry-After", r->retry_after, sizeof(r->retry_after));
    header_value(p, size * n, "Transfer-Encoding", r->transfer_encoding,
                 sizeof(r->transfer_encoding));
    return size * n;
}

static CURL *make_easy(const char *method, const char *path, const char *body, int with_key,
                       struct resp *r, struct curl_slist **hdrs)
{
    char url[512];
    CURL *h = curl_easy_init();
    memset(r, 0, sizeof(*r));
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, body_cb);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, header_cb);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    *hdrs = curl_slist_append(NULL, "Content-Type: application/json");
    if (with_key)
        *hdrs = curl_slist_append(*hdrs, "Authorization: Bearer " KEY);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, *hdrs);
    if (body != NULL) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    }
    return h;
}

static void finish_easy(CURL *h, struct resp *r, struct curl_slist *hdrs)
{
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(h);
    if (r->body == NULL)
        r->body = calloc(1, 1);
}

static void http(const char *method, const char *path, const char *body, int with_key, struct resp *r)
{
    struct curl_slist *hdrs;
    CURL *h = make_easy(method, path, body, with_key, r, &hdrs);
    r->rc = curl_easy_perform(h);
    finish_easy(h, r, hdrs);
}

static json_t *json_of(const struct resp *r)
{
    return json_loadb(r->body, r->len, 0, NULL);
}

static char *completion_body(const char *script, int stream, const char *extra_msgs)
{
    char *b = malloc(4096);
    snprintf(b, 4096,
             "{\"model\": \"gpt-4o-mini\", \"stream\": %s, \"stream_options\": {\"include_usage\": true},"
             " \"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"get_weather\","
             "  \"description\": \"Weather for a city\", \"parameters\": {\"type\": \"object\","
             "  \"properties\": {\"city\": {\"type\": \"string\"}}}}}], \"tool_choice\": \"auto\","
             " \"messages\": [{\"role\": \"system\", \"content\": \"You are a test agent. [mock:%s]\"},"
             "  {\"role\": \"user\", \"content\": \"What is the weather?\"}%s]}",
             stream ? "true" : "false", script, extra_msgs != NULL ? extra_msgs : "");
    return b;
}

static json_t *complete(const char *script, const char *extra, struct resp *r)
{
    char *b = completion_body(script, 0, extra);
    http("POST", "/v1/chat/completions", b, 1, r);
    free(b);
    return json_of(r);
}

static const char *jstr(json_t *j, const char *path)
{
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", path);
    json_t *v = j;
    char *save = NULL;
    for (char *t = strtok_r(buf, ".", &save); t != NULL && v != NULL; t = strtok_r(NULL, ".", &save))
        v = (t[0] >= '0' && t[0] <= '9') ? json_array_get(v, (size_t)atoi(t)) : json_object_get(v, t);
    return json_string_value(v);
}

/* A parsed SSE stream. */
struct sse {
    json_t *chunks; /* parsed data payloads, in order */
    int done;       /* saw data: [DONE] last */
    int bad;        /* payloads that were not JSON */
    char content[1024];
    char args[4][256];
    char names[4][64];
    char ids[4][64];
    size_t n_calls;
    const char *finish;
    json_t *usage;
};

static void sse_parse(const char *body, struct sse *s)
{
    memset(s, 0, sizeof(*s));
    s->chunks = json_array();
    const char *p = body;
    while (*p != '\0') {
        const char *end = strstr(p, "\n\n");
        assert_non_null(end); /* every event ends with a blank line */
        assert_memory_equal(p, "data: ", 6);
        size_t n = (size_t)(end - p) - 6;
        assert_false(s->done); /* nothing after [DONE] */
        if (n == 6 && memcmp(p + 6, "[DONE]", 6) == 0) {
            s->done = 1;
        } else {
            json_t *c = json_loadb(p + 6, n, 0, NULL);
            if (c == NULL) {
                s->bad++;
            } else {
                json_array_append_new(s->chunks, c);
                json_t *choice = json_array_get(json_object_get(c, "choices"), 0);
                json_t *delta = json_object_get(choice, "delta");
                const char *piece = json_string_value(json_object_get(delta, "content"));
                if (piece != NULL)
                    strncat(s->content, piece, sizeof(s->content) - strlen(s->content) - 1);
                size_t i;
                json_t *tc;
                json_array_foreach(json_object_get(delta, "tool_calls"), i, tc) {
                    size_t idx = (size_t)json_integer_value(json_object_get(tc, "index"));
                    assert_true(idx < 4);
                    if (idx + 1 > s->n_calls)
                        s->n_calls = idx + 1;
                    if (json_object_get(tc, "id") != NULL)
                        snprintf(s->ids[idx], sizeof(s->ids[idx]), "%s", jstr(tc, "id"));
                    if (jstr(tc, "function.name") != NULL)
                        snprintf(s->names[idx], sizeof(s->names[idx]), "%s", jstr(tc, "function.name"));
                    if (jstr(tc, "function.arguments") != NULL)
                        strncat(s->args[idx], jstr(tc, "function.arguments"),
                                sizeof(s->args[idx]) - strlen(s->args[idx]) - 1);
                }
                if (json_string_value(json_object_get(choice, "finish_reason")) != NULL)
                    s->finish = json_string_value(json_object_get(choice, "finish_reason"));
                if (json_is_object(json_object_get(c, "usage")))
                    s->usage = json_object_get(c, "usage");
            }
        }
        p = end + 2;
    }
}

static void stream(const char *script, const char *extra, struct resp *r, struct sse *s)
{
    char *b = completion_body(script, 1, extra);
    http("POST", "/v1/chat/completions", b, 1, r);
    free(b);
    sse_parse(r->body, s);
}

/* ------------------------------------------------------------------------ */

static void test_models_and_auth(void **state)
{
    struct resp r;
    http("GET", "/v1/models", NULL, 1, &r);
    assert_int_equal(r.status, 200);
    json_t *j = json_of(&r);
    assert_string_equal(jstr(j, "object"), "list");
    assert_string_equal(jstr(j, "data.0.id"), "mock-gpt");
    json_decref(j);
    free(r.body);

    char *b = completion_body("default", 0, NULL);
    http("POST", "/v1/chat/completions", b, 0, &r);
    assert_int_equal(r.status, 401);
    j = json_of(&r);
    assert_non_null(jstr(j, "error.message"));
    json_decref(j);
    free(r.body);
    free(b);
}

static void test_tool_calls_plain(void **state)
{
    struct resp r;
    json_t *j = complete("weather", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.ctype, "application/json");
    assert_string_equal(jstr(j, "object"), "chat.completion");
    assert_string_equal(jstr(j, "model"), "gpt-4o-mini");
    assert_string_equal(jstr(j, "choices.0.finish_reason"), "tool_calls");
    assert_string_equal(jstr(j, "choices.0.message.tool_calls.0.function.name"), "get_weather");
    assert_string_equal(jstr(j, "choices.0.message.tool_calls.0.function.arguments"),
                        "{\"city\":\"Paris\"}");
    char id[64];
    snprintf(id, sizeof(id), "%s", jstr(j, "choices.0.message.tool_calls.0.id"));
    json_decref(j);
    free(r.body);

    /* Step 1 after one assistant message: two parallel calls. */
    char extra[512];
    snprintf(extra, sizeof(extra),
             ", {\"role\": \"assistant\", \"content\": null, \"tool_calls\": [{\"id\": \"%s\","
             " \"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"arguments\":"
             " \"{\\\"city\\\":\\\"Paris\\\"}\"}}]}, {\"role\": \"tool\", \"tool_call_id\": \"%s\","
             " \"content\": \"sunny, 24C\"}",
             id, id);
    j = complete("weather", extra, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(jstr(j, "choices.0.message.content"), "Checking both.");
    assert_string_equal(jstr(j, "choices.0.message.tool_calls.1.function.name"), "get_time");
    assert_string_equal(jstr(j, "choices.0.message.tool_calls.1.function.arguments"),
                        "{\"tz\": \"Europe/Rome\"}");
    assert_string_not_equal(jstr(j, "choices.0.message.tool_calls.0.id"),
                            jstr(j, "choices.0.message.tool_calls.1.id"));
    json_decref(j);
    free(r.body);

    /* Step 2: the final answer quotes the last tool result. */
    char extra2[1024];
    snprintf(extra2, sizeof(extra2),
             "%s, {\"role\": \"assistant\", \"content\": \"Checking both.\"},"
             " {\"role\": \"tool\", \"tool_call_id\": \"b\", \"content\": \"rain, 18C\"}",
             extra);
    j = complete("weather", extra2, &r);
    assert_string_equal(jstr(j, "choices.0.finish_reason"), "stop");
    assert_string_equal(jstr(j, "choices.0.message.content"), "The weather: rain, 18C (after 2 steps).");
    assert_true(json_integer_value(json_object_get(json_object_get(j, "usage"), "prompt_tokens")) > 0);
    json_decref(j);
    free(r.body);
}

static void test_streamed(void **state)
{
    struct resp r;
    struct sse s;
    stream("weather", NULL, &r, &s);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.rc, CURLE_OK);
    assert_string_equal(r.ctype, "text/event-stream");
    assert_string_equal(r.transfer_encoding, "chunked");
    assert_true(s.done);
    assert_int_equal(s.bad, 0);
    assert_int_equal(s.n_calls, 1);
    assert_string_equal(s.names[0], "get_weather");
    assert_string_equal(s.args[0], "{\"city\":\"Paris\"}");
    assert_memory_equal(s.ids[0], "call_", 5);
    assert_string_equal(s.finish, "tool_calls");
    assert_non_null(s.usage);
    assert_string_equal(jstr(json_array_get(s.chunks, 0), "choices.0.delta.role"), "assistant");
    json_decref(s.chunks);
    free(r.body);

    stream("default", NULL, &r, &s);
    assert_true(s.done);
    assert_string_equal(s.content, "Hello, What is the weather?!");
    assert_string_equal(s.finish, "stop");
    assert_true(json_array_size(s.chunks) >= 4);
    json_decref(s.chunks);
    free(r.body);

    /* paced chunks: 4 pieces 50 ms apart */
    uint64_t t0 = now_ms();
    stream("dribble", NULL, &r, &s);
    assert_true(now_ms() - t0 >= 150);
    assert_string_equal(s.content, "one two three four");
    assert_true(s.done);
    json_decref(s.chunks);
    free(r.body);
}

static void test_fail_first_and_errors(void **state)
{
    struct resp r;
    for (int i = 0; i < 2; i++) {
        json_t *j = complete("flaky", NULL, &r);
        assert_int_equal(r.status, 429);
        assert_string_equal(r.retry_after, "1");
        assert_string_equal(jstr(j, "error.message"), "Rate limit reached");
        assert_string_equal(jstr(j, "error.code"), "rate_limit_exceeded");
        json_decref(j);
        free(r.body);
    }
    json_t *j = complete("flaky", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(jstr(j, "choices.0.message.content"), "third time lucky");
    json_decref(j);
    free(r.body);

    j = complete("servererror", NULL, &r);
    assert_int_equal(r.status, 500);
    assert_string_equal(jstr(j, "error.type"), "server_error");
    assert_string_equal(r.retry_after, "");
    json_decref(j);
    free(r.body);

    j = complete("long", NULL, &r);
    assert_string_equal(jstr(j, "choices.0.finish_reason"), "length");
    json_decref(j);
    free(r.body);
}

static void test_malformed(void **state)
{
    struct resp r;
    struct sse s;

    json_t *j = complete("bad_json", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.rc, CURLE_OK);
    assert_null(j);
    free(r.body);

    j = complete("truncated", NULL, &r);
    assert_int_equal(r.rc, CURLE_PARTIAL_FILE);
    assert_null(j);
    free(r.body);

    stream("truncated", NULL, &r, &s);
    assert_false(s.done);
    assert_null(s.finish);
    json_decref(s.chunks);
    free(r.body);

    stream("bad_json", NULL, &r, &s);
    assert_int_equal(s.bad, 1);
    assert_true(s.done);
    json_decref(s.chunks);
    free(r.body);

    j = complete("unknown_tool", NULL, &r);
    assert_string_equal(jstr(j, "choices.0.message.tool_calls.0.function.name"), "mock_unknown_tool");
    json_decref(j);
    free(r.body);

    j = complete("bad_arguments", NULL, &r);
    json_t *args = json_loads(jstr(j, "choices.0.message.tool_calls.0.function.arguments"),
                              JSON_DECODE_ANY, NULL);
    assert_null(args);
    json_decref(j);
    free(r.body);

    j = complete("empty_choices", NULL, &r);
    assert_int_equal(json_array_size(json_object_get(j, "choices")), 0);
    json_decref(j);
    free(r.body);

    j = complete("no_content", NULL, &r);
    assert_true(json_is_null(json_object_get(
        json_object_get(json_array_get(json_object_get(j, "choices"), 0), "message"), "content")));
    json_decref(j);
    free(r.body);
}

/* A delayed answer must not hold up other requests: the server never sleeps. */
static void test_delay_does_not_block(void **state)
{
    struct resp slow, fast;
    struct curl_slist *h1, *h2;
    char *b = completion_body("slow", 0, NULL);
    CURLM *m = curl_multi_init();
    CURL *e1 = make_easy("POST", "/v1/chat/completions", b, 1, &slow, &h1);
    CURL *e2 = make_easy("GET", "/v1/models", NULL, 1, &fast, &h2);
    uint64_t t0 = now_ms(), fast_ms = 0, slow_ms = 0;
    curl_multi_add_handle(m, e1);
    curl_multi_add_handle(m, e2);
    int running = 1;
    while (running > 0) {
        curl_multi_perform(m, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(m, &left)) != NULL) {
            if (msg->msg != CURLMSG_DONE)
                continue;
            if (msg->easy_handle == e2)
                fast_ms = now_ms() - t0;
            else
                slow_ms = now_ms() - t0;
        }
        if (running > 0)
            curl_multi_poll(m, NULL, 0, 100, NULL);
    }
    curl_multi_remove_handle(m, e1);
    curl_multi_remove_handle(m, e2);
    finish_easy(e1, &slow, h1);
    finish_easy(e2, &fast, h2);
    curl_multi_cleanup(m);
    assert_int_equal(fast.status, 200);
    assert_int_equal(slow.status, 200);
    assert_true(slow_ms >= 600);
    assert_true(fast_ms < slow_ms);
    assert_true(fast_ms < 500);
    json_t *j = json_of(&slow);
    assert_string_equal(jstr(j, "choices.0.message.content"), "sorry for the wait");
    json_decref(j);
    free(slow.body);
    free(fast.body);
    free(b);
}

static void test_down_up(void **state)
{
    struct resp r;
    http("POST", "/_mock/down", "{\"retry_after\": 2}", 0, &r);
    assert_int_equal(r.status, 200);
    free(r.body);
    for (int i = 0; i < 3; i++) {
        json_t *j = complete("default", NULL, &r);
        assert_int_equal(r.status, 503);
        assert_string_equal(r.retry_after, "2");
        assert_string_equal(jstr(j, "error.type"), "server_error");
        json_decref(j);
        free(r.body);
    }
    http("POST", "/_mock/up", "", 0, &r);
    free(r.body);
    json_t *j = complete("default", NULL, &r);
    assert_int_equal(r.status, 200);
    json_decref(j);
    free(r.body);
}

static void test_robustness(void **state)
{
    struct resp r;
    http("POST", "/v1/chat/completions", "{\"messages\": [", 1, &r);
    assert_int_equal(r.status, 400);
    json_t *j = json_of(&r);
    assert_string_equal(jstr(j, "error.type"), "invalid_request_error");
    json_decref(j);
    free(r.body);

    /* over the body cap: refused, and the server goes on serving */
    size_t n = MAX_BODY + 1024;
    char *big = malloc(n + 64);
    int at = snprintf(big, n + 64, "{\"messages\": [{\"role\": \"user\", \"content\": \"");
    memset(big + at, 'a', n);
    snprintf(big + at + n, 64, "\"}]}");
    http("POST", "/v1/chat/completions", big, 1, &r);
    assert_int_equal(r.status, 413);
    free(r.body);
    free(big);

    http("GET", "/nope", NULL, 1, &r);
    assert_int_equal(r.status, 404);
    free(r.body);

    j = complete("default", NULL, &r);
    assert_int_equal(r.status, 200);
    json_decref(j);
    free(r.body);
    http("POST", "/chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}", 1, &r);
    assert_int_equal(r.status, 200);
    free(r.body);
}

/* Many conversations at once, each at its own step, plain and streamed: every
 * answer matches its own conversation (selection is stateless). */
#define CONCURRENT 200

static void test_concurrent_conversations(void **state)
{
    static struct resp rs[CONCURRENT];
    static struct curl_slist *hs[CONCURRENT];
    static CURL *es[CONCURRENT];
    static char *bodies[CONCURRENT];
    CURLM *m = curl_multi_init();
    curl_multi_setopt(m, CURLMOPT_MAX_TOTAL_CONNECTIONS, 100L);
    for (int i = 0; i < CONCURRENT; i++) {
        char extra[512] = "";
        int step = i % 3;
        for (int k = 0; k < step; k++) {
            char part[160];
            snprintf(part, sizeof(part),
                     ", {\"role\": \"assistant\", \"content\": \"a%d\"},"
                     " {\"role\": \"tool\", \"tool_call_id\": \"t\", \"content\": \"r%d-%d\"}",
                     k, i, k);
            strcat(extra, part);
        }
        bodies[i] = completion_body("weather", i % 2, extra);
        es[i] = make_easy("POST", "/v1/chat/completions", bodies[i], 1, &rs[i], &hs[i]);
        curl_multi_add_handle(m, es[i]);
    }
    int running = 1;
    while (running > 0) {
        curl_multi_perform(m, &running);
        if (running > 0)
            curl_multi_poll(m, NULL, 0, 100, NULL);
    }
    for (int i = 0; i < CONCURRENT; i++) {
        curl_multi_remove_handle(m, es[i]);
        finish_easy(es[i], &rs[i], hs[i]);
        free(bodies[i]);
        assert_int_equal(rs[i].status, 200);
        int step = i % 3;
        char want[128];
        const char *content, *name0;
        size_t n_calls;
        json_t *j = NULL;
        struct sse s;
        if (i % 2 == 1) {
            sse_parse(rs[i].body, &s);
            assert_true(s.done);
            content = s.content;
            name0 = s.names[0];
            n_calls = s.n_calls;
        } else {
            j = json_of(&rs[i]);
            assert_non_null(j);
            content = jstr(j, "choices.0.message.content");
            name0 = jstr(j, "choices.0.message.tool_calls.0.function.name");
            json_t *msg = json_object_get(json_array_get(json_object_get(j, "choices"), 0), "message");
            n_calls = json_array_size(json_object_get(msg, "tool_calls"));
        }
        if (step == 0) {
            assert_int_equal(n_calls, 1);
            assert_string_equal(name0, "get_weather");
        } else if (step == 1) {
            assert_int_equal(n_calls, 2);
            assert_string_equal(content, "Checking both.");
        } else {
            snprintf(want, sizeof(want), "The weather: r%d-1 (after 2 steps).", i);
            assert_int_equal(n_calls, 0);
            assert_string_equal(content, want);
        }
        if (i % 2 == 1)
            json_decref(s.chunks);
        json_decref(j);
        free(rs[i].body);
    }
    curl_multi_cleanup(m);
}

/* Runs last: counts everything the tests above sent. */
static void test_stats_and_reset(void **state)
{
    struct resp r;
    http("GET", "/_mock/stats", NULL, 0, &r);
    assert_int_equal(r.status, 200);
    json_t *j = json_of(&r);
    assert_non_null(j);
    json_t *by_status = json_object_get(j, "by_status");
    json_t *by_script = json_object_get(j, "by_script");
    assert_true(json_integer_value(json_object_get(j, "requests")) >= 30);
    assert_true(json_integer_value(json_object_get(j, "streamed")) >= 5);
    assert_int_equal(json_integer_value(json_object_get(by_status, "429")), 2);
    assert_int_equal(json_integer_value(json_object_get(by_status, "503")), 3);
    assert_int_equal(json_integer_value(json_object_get(by_status, "401")), 1);
    assert_int_equal(json_integer_value(json_object_get(by_script, "flaky")), 3);
    assert_int_equal(json_integer_value(json_object_get(by_script, "weather")), 4 + CONCURRENT);
    assert_int_equal(json_integer_value(json_object_get(j, "malformed")), 8);
    json_decref(j);
    free(r.body);

    http("POST", "/_mock/reset", "", 0, &r);
    assert_int_equal(r.status, 200);
    free(r.body);
    http("GET", "/_mock/stats", NULL, 0, &r);
    j = json_of(&r);
    assert_int_equal(json_integer_value(json_object_get(j, "requests")), 0);
    json_decref(j);
    free(r.body);
    /* fail_first counts anew after a reset */
    j = complete("flaky", NULL, &r);
    assert_int_equal(r.status, 429);
    json_decref(j);
    free(r.body);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s TROUPE_MOCKLLM SCRIPT.json\n", argv[0]);
        return 2;
    }
    bin_path = argv[1];
    script_path = argv[2];
    signal(SIGPIPE, SIG_IGN);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_models_and_auth),
        cmocka_unit_test(test_tool_calls_plain),
        cmocka_unit_test(test_streamed),
        cmocka_unit_test(test_fail_first_and_errors),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_delay_does_not_block),
        cmocka_unit_test(test_down_up),
        cmocka_unit_test(test_robustness),
        cmocka_unit_test(test_concurrent_conversations),
        cmocka_unit_test(test_stats_and_reset),
    };
    int rv = cmocka_run_group_tests(tests, start_server, stop_server);
    curl_global_cleanup();
    return rv;
}
