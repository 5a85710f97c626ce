/* The tool executor actor against a real troupe-toolserver process: the
 * Idempotency-Key arrives and stays the same across retries and repeated
 * calls, refused hosts make no connection, timeouts, the result cap, 3xx,
 * 4xx and 5xx, connection failures, bad calls and bad config; then the
 * sandbox (bubblewrap, and gVisor when runsc works here).
 * argv[1] is the troupe-toolserver binary. No assertion reads the clock. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cmocka.h>
#include <curl/curl.h>

#include "actors/tool.h"
#include "records.h"
#include "tsrv.h"

#define MAX_RESULT 100000

static const char *server_bin;
static struct toolsrv srv;
static struct tr_rt *rt;
static tr_actor_id tool_id;
static uint64_t cfg_parses; /* http configs the executor parsed */
static struct tool_opts opts = {
    .attempts = 3,
    .backoff_ms = 10,
    .max_result = MAX_RESULT,
    .cfg_parses = &cfg_parses,
};

/* ------------------------------------------------------------------------ */
/* A probe actor sends one TR_MSG_TOOL_CALL and hands the reply to the test. */

struct probe {
    char *req;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    char *reply;
    size_t reply_len;
    int reply_type;
};

static void probe_finish(struct probe *p, const void *data, size_t len, int type)
{
    pthread_mutex_lock(&p->mu);
    if (data) {
        p->reply = malloc(len + 1);
        memcpy(p->reply, data, len);
        p->reply[len] = '\0';
        p->reply_len = len;
    }
    p->reply_type = type;
    p->done = 1;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

static int probe_init(struct tr_ctx *ctx, void *state, void *arg)
{
    struct probe *p = arg;
    uint64_t corr;
    *(struct probe **)state = p;
    struct tr_msg *m = h_tool_call_msg(p->req);
    if (tr_request(ctx, tool_id, m, 120000, &corr) != 0) {
        tr_msg_free(m);
        probe_finish(p, NULL, 0, -1);
        tr_stop(ctx, tr_self(ctx));
    }
    return 0;
}

static int probe_receive(struct tr_ctx *ctx, void *state, struct tr_msg *msg)
{
    struct probe *p = *(struct probe **)state;
    probe_finish(p, msg->data, msg->len, (int)msg->type);
    tr_stop(ctx, tr_self(ctx));
    return 0;
}

static const struct tr_behavior probe_behavior = {
    .name = "probe",
    .state_size = sizeof(struct probe *),
    .init = probe_init,
    .receive = probe_receive,
};

/* Probes on one scheduler (sched >= 0) start, and so send, in the order
 * they were spawned; TR_SCHED_ANY spreads them. */
static void probe_start_on(struct probe *p, const char *req, int sched)
{
    memset(p, 0, sizeof(*p));
    p->req = (char *)req;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    struct tr_spawn_opts so = {.behavior = &probe_behavior, .arg = p, .sched = sched};
    tr_actor_id id;
    assert_int_equal(tr_spawn(rt, &so, &id), 0);
}

static void probe_start(struct probe *p, const char *req)
{
    probe_start_on(p, req, TR_SCHED_ANY);
}

/* Wait for p's reply; the parsed TR_MSG_TOOL_RESULT, checked for shape. */
static json_t *probe_wait(struct probe *p)
{
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 180; /* a hang guard, not a threshold */
    pthread_mutex_lock(&p->mu);
    while (!p->done && pthread_cond_timedwait(&p->cv, &p->mu, &dl) != ETIMEDOUT)
        ;
    int done = p->done;
    pthread_mutex_unlock(&p->mu);
    assert_true(done);
    assert_int_equal(p->reply_type, TR_MSG_TOOL_RESULT);
    json_t *j = h_tool_result_json(p->reply, p->reply_len);
    assert_non_null(j);
    free(p->reply);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    /* The documented shape, always. */
    assert_true(json_is_boolean(json_object_get(j, "ok")));
    assert_true(json_is_string(json_object_get(j, "result")));
    assert_true(json_is_boolean(json_object_get(j, "is_error")));
    json_t *e = json_object_get(j, "error");
    assert_true(json_is_null(e) || json_is_string(e));
    assert_true(json_is_integer(json_object_get(j, "status")));
    assert_true(json_is_integer(json_object_get(j, "duration_ms")));
    assert_true(json_is_boolean(json_object_get(j, "truncated")));
    return j;
}

/* Send req (JSON text) to the executor and wait for the result. */
static json_t *call_text(const char *req)
{
    struct probe p;
    probe_start(&p, req);
    return probe_wait(&p);
}

static json_t *call(json_t *req)
{
    char *text = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    json_t *r = call_text(text);
    free(text);
    return r;
}

/* A TR_MSG_TOOL_CALL for an http tool. config is stolen. */
static json_t *http_req(json_t *config, json_t *args, const char *key, int timeout_ms)
{
    return json_pack("{s:{s:s, s:s, s:o, s:i, s:s}, s:o, s:s, s:s, s:i, s:i, s:s}", "tool", "name", "t", "kind",
                     "http", "config", config, "timeout_ms", timeout_ms, "risk", "write", "arguments", args,
                     "idempotency_key", key, "run_id", "run_0000000000000001", "step", 1, "call_index", 0, "tenant",
                     "acme");
}

static json_t *local_cfg(const char *tool)
{
    char url[256];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/tools/%s", srv.port, tool);
    return json_pack("{s:s, s:[s]}", "url", url, "allow", "127.0.0.1");
}

static int jbool(json_t *j, const char *k)
{
    return json_is_true(json_object_get(j, k));
}

static const char *jstr(json_t *j, const char *k)
{
    const char *s = json_string_value(json_object_get(j, k));
    return s ? s : "";
}

static long long jint(json_t *j, const char *k)
{
    return json_integer_value(json_object_get(j, k));
}

static void expect_error(json_t *r, const char *needle)
{
    if (jbool(r, "ok") || !strstr(jstr(r, "error"), needle)) {
        char *t = json_dumps(r, 0);
        fail_msg("expected ok false with \"%s\", got %s", needle, t);
    }
    assert_true(jbool(r, "is_error"));
}

/* Counters of one key at the server: received, effects (-1 if unknown). */
static void key_counts(const char *key, long long *received, long long *effects)
{
    char path[300];
    snprintf(path, sizeof(path), "/_keys/%s", key);
    json_t *j = toolsrv_get_json(&srv, path);
    json_t *r = json_object_get(j, "received"), *e = json_object_get(j, "effects");
    *received = json_is_integer(r) ? json_integer_value(r) : -1;
    *effects = json_is_integer(e) ? json_integer_value(e) : -1;
    json_decref(j);
}

/* ------------------------------------------------------------------------ */

static void test_key_arrives(void **state)
{
    long long rec, eff;
    json_t *r = call(http_req(local_cfg("echo"), json_pack("{s:s, s:i}", "q", "hello", "n", 7), "a1b2c3", 5000));
    assert_true(jbool(r, "ok"));
    assert_false(jbool(r, "is_error"));
    assert_int_equal(jint(r, "status"), 200);
    assert_false(jbool(r, "truncated"));
    assert_true(json_is_null(json_object_get(r, "error")));
    assert_string_equal(jstr(r, "result"), "{\"q\":\"hello\",\"n\":7}");
    assert_int_equal(jint(r, "attempts"), 1);
    json_decref(r);
    key_counts("a1b2c3", &rec, &eff);
    assert_int_equal(rec, 1);
    assert_int_equal(eff, 1);
    assert_int_equal(toolsrv_log_count(&srv, "a1b2c3", "first"), 1);
}

static void test_retry_keeps_key(void **state)
{
    long long rec, eff;
    /* 503 twice, then the effect: three receipts of one key, one effect. */
    json_t *r = call(http_req(local_cfg("flaky"), json_pack("{s:i}", "fail_times", 2), "f00d01", 10000));
    assert_true(jbool(r, "ok"));
    assert_false(jbool(r, "is_error"));
    assert_int_equal(jint(r, "attempts"), 3);
    assert_string_equal(jstr(r, "result"), "{\"ok\":true,\"receipts\":3}");
    json_decref(r);
    key_counts("f00d01", &rec, &eff);
    assert_int_equal(rec, 3);
    assert_int_equal(eff, 1);
    assert_int_equal(toolsrv_log_count(&srv, "f00d01", "first"), 1);
    assert_int_equal(toolsrv_log_count(&srv, "f00d01", "resend"), 2);
}

static void test_replayed_call_one_effect(void **state)
{
    long long rec, eff;
    long long balance = toolsrv_stat(&srv, "balance");
    /* The same logical call twice (a replay after a crash): one payment. */
    json_t *r1 = call(http_req(local_cfg("payment"), json_pack("{s:i}", "amount", 25), "beef01", 5000));
    json_t *r2 = call(http_req(local_cfg("payment"), json_pack("{s:i}", "amount", 25), "beef01", 5000));
    assert_true(jbool(r1, "ok"));
    assert_true(jbool(r2, "ok"));
    assert_string_equal(jstr(r1, "result"), jstr(r2, "result"));
    json_decref(r1);
    json_decref(r2);
    key_counts("beef01", &rec, &eff);
    assert_int_equal(rec, 2);
    assert_int_equal(eff, 1);
    assert_int_equal(toolsrv_stat(&srv, "balance"), balance + 25);
    assert_int_equal(toolsrv_stat(&srv, "duplicates_performed"), 0);
}

static void test_refused_host_no_connection(void **state)
{
    char url[256];
    long long before = toolsrv_stat(&srv, "requests");

    /* not in the list: "localhost" is not "127.0.0.1" */
    snprintf(url, sizeof(url), "http://localhost:%d/tools/echo", srv.port);
    json_t *r = call(http_req(json_pack("{s:s, s:[s]}", "url", url, "allow", "127.0.0.1"), json_object(),
                              "0a0a", 5000));
    expect_error(r, "not in the tool's allow list");
    json_decref(r);
    /* userinfo naming an allowed host */
    snprintf(url, sizeof(url), "http://127.0.0.1@localhost:%d/tools/echo", srv.port);
    r = call(http_req(json_pack("{s:s, s:[s]}", "url", url, "allow", "127.0.0.1"), json_object(), "0a0b", 5000));
    expect_error(r, "not in the tool's allow list");
    json_decref(r);
    /* no list at all: the node's list (empty here) decides */
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/tools/echo", srv.port);
    r = call(http_req(json_pack("{s:s}", "url", url), json_object(), "0a0c", 5000));
    expect_error(r, "no allow list");
    json_decref(r);
    r = call(http_req(json_pack("{s:s, s:[]}", "url", url, "allow"), json_object(), "0a0d", 5000));
    expect_error(r, "no allow list");
    json_decref(r);
    assert_int_equal(toolsrv_stat(&srv, "requests"), before);

    /* A bare listening socket: not even a TCP connection arrives. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(fd, 16), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &al), 0);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/x", ntohs(a.sin_port));
    r = call(http_req(json_pack("{s:s, s:[s]}", "url", url, "allow", "example.com"), json_object(), "0a0e", 5000));
    expect_error(r, "not in the tool's allow list");
    json_decref(r);
    fcntl(fd, F_SETFL, O_NONBLOCK);
    assert_int_equal(accept(fd, NULL, NULL), -1);
    assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
    close(fd);
}

static void test_timeout(void **state)
{
    json_t *r = call(http_req(local_cfg("sleep"), json_pack("{s:i}", "ms", 20000), "51ee9001", 300));
    expect_error(r, "timed out");
    assert_int_equal(jint(r, "attempts"), 1);
    json_decref(r);
}

static void test_result_cap(void **state)
{
    json_t *r = call(http_req(local_cfg("big"), json_pack("{s:i}", "bytes", 3 * MAX_RESULT), "b16001", 10000));
    assert_true(jbool(r, "ok"));
    assert_false(jbool(r, "is_error"));
    assert_true(jbool(r, "truncated"));
    assert_int_equal(jint(r, "status"), 200);
    const char *s = jstr(r, "result");
    assert_int_equal(strlen(s), MAX_RESULT);
    for (size_t i = 0; i < MAX_RESULT; i += 997)
        assert_int_equal(s[i], '0' + (int)(i % 10));
    json_decref(r);

    /* far over curl's own buffer sizes, and exactly at the cap */
    r = call(http_req(local_cfg("big"), json_pack("{s:i}", "bytes", 8 * 1024 * 1024), "b16002", 20000));
    assert_true(jbool(r, "ok"));
    assert_true(jbool(r, "truncated"));
    assert_int_equal(strlen(jstr(r, "result")), MAX_RESULT);
    json_decref(r);
    r = call(http_req(local_cfg("big"), json_pack("{s:i}", "bytes", MAX_RESULT), "b16003", 10000));
    assert_true(jbool(r, "ok"));
    assert_false(jbool(r, "truncated"));
    assert_int_equal(strlen(jstr(r, "result")), MAX_RESULT);
    json_decref(r);
}

static void test_4xx_5xx_3xx(void **state)
{
    long long rec, eff;
    json_t *r = call(http_req(local_cfg("status"), json_pack("{s:i, s:s}", "code", 404, "body", "no such order"),
                              "4040", 5000));
    assert_true(jbool(r, "ok"));
    assert_true(jbool(r, "is_error"));
    assert_int_equal(jint(r, "status"), 404);
    assert_string_equal(jstr(r, "error"), "no such order");
    assert_string_equal(jstr(r, "result"), "no such order");
    assert_int_equal(jint(r, "attempts"), 1); /* 4xx is not retried */
    json_decref(r);

    r = call(http_req(local_cfg("fail"), json_object(), "5000", 10000));
    expect_error(r, "HTTP 500");
    assert_int_equal(jint(r, "status"), 500);
    assert_int_equal(jint(r, "attempts"), 3);
    assert_non_null(strstr(jstr(r, "error"), "always fails"));
    json_decref(r);
    key_counts("5000", &rec, &eff);
    assert_int_equal(rec, 3);
    assert_int_equal(eff, 0);

    /* A redirect is reported, never followed. */
    char loc[256];
    snprintf(loc, sizeof(loc), "http://127.0.0.1:%d/tools/echo", srv.port);
    json_t *bt = toolsrv_get_json(&srv, "/_stats");
    long long echo_before = json_integer_value(json_object_get(json_object_get(bt, "by_tool"), "echo"));
    json_decref(bt);
    r = call(http_req(local_cfg("redirect"), json_pack("{s:s}", "location", loc), "3020", 5000));
    assert_true(jbool(r, "ok"));
    assert_true(jbool(r, "is_error"));
    assert_int_equal(jint(r, "status"), 302);
    assert_non_null(strstr(jstr(r, "error"), "not followed"));
    json_decref(r);
    bt = toolsrv_get_json(&srv, "/_stats");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(bt, "by_tool"), "echo")), echo_before);
    json_decref(bt);
}

static void test_connection_refused(void **state)
{
    /* A port that was just free: nothing listens there. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &al), 0);
    close(fd);
    char url[256];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/tools/echo", ntohs(a.sin_port));
    json_t *r = call(http_req(json_pack("{s:s, s:[s]}", "url", url, "allow", "127.0.0.1"), json_object(), "dead",
                              10000));
    expect_error(r, "unavailable");
    assert_int_equal(jint(r, "attempts"), 3);
    assert_int_equal(jint(r, "status"), 0);
    json_decref(r);
}

static void test_bad_calls(void **state)
{
    static const struct {
        const char *req;
        const char *needle;
    } cases[] = {
        {"not json", "not a whole call record"},
        {"[1,2]", "not a whole call record"},
        {"{\"arguments\": {}, \"idempotency_key\": \"ab\"}", "names no kind"},
        {"{\"tool\": {\"name\": \"x\", \"kind\": \"http\", \"config\": {}}, \"idempotency_key\": \"ab\"}",
         "no arguments"},
        {"{\"tool\": {\"name\": \"x\", \"kind\": \"http\", \"config\": {}}, \"arguments\": {}}", "idempotency_key"},
        {"{\"tool\": {\"name\": \"x\", \"kind\": \"http\", \"config\": {}}, \"arguments\": {}, "
         "\"idempotency_key\": \"not-hex\"}",
         "idempotency_key"},
        {"{\"tool\": {\"name\": \"x\", \"kind\": \"http\", \"config\": {}}, \"arguments\": {}, "
         "\"idempotency_key\": \"ab\\r\\nX: y\"}",
         "idempotency_key"},
        {"{\"tool\": {\"name\": \"x\", \"config\": {}}, \"arguments\": {}, \"idempotency_key\": \"ab\"}",
         "names no kind"},
        {"{\"tool\": {\"name\": \"x\", \"kind\": \"mcp\", \"config\": {}}, \"arguments\": {}, "
         "\"idempotency_key\": \"ab\"}",
         "kind \"mcp\" is not run"},
        {"{\"tool\": {\"name\": \"x\", \"kind\": \"ftp\"}, \"arguments\": {}, \"idempotency_key\": \"ab\"}",
         "kind \"ftp\" is not run"},
        {"{\"tool\": {\"name\": \"x\", \"kind\": \"http\"}, \"arguments\": {}, \"idempotency_key\": \"ab\"}",
         "must be an object"},
        {"{\"tool\": {\"name\": \"x\", \"kind\": \"http\", \"config\": {\"url\": \"gopher://a/\"}}, "
         "\"arguments\": {}, \"idempotency_key\": \"ab\"}",
         "scheme must be http or https"},
        {"{\"tool\": {\"name\": \"x\", \"kind\": \"http\", \"config\": {\"url\": \"http://a.com\", \"allow\": 7}}, "
         "\"arguments\": {}, \"idempotency_key\": \"ab\"}",
         "config.allow"},
        {"{\"tool\": {\"name\": \"x\", \"kind\": \"http\", \"config\": {\"url\": \"http://a.com\", \"headers\": "
         "{\"Idempotency-Key\": \"forged\"}, \"allow\": [\"a.com\"]}}, \"arguments\": {}, \"idempotency_key\": \"ab\"}",
         "set by the executor"},
        {"{\"tool\": {\"name\": \"x\", \"kind\": \"sandbox\", \"config\": {\"command\": 1}}, \"arguments\": {}, "
         "\"idempotency_key\": \"ab\"}",
         "config.command"},
    };
    long long before = toolsrv_stat(&srv, "requests");
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *r = call_text(cases[i].req);
        if (jbool(r, "ok") || !strstr(jstr(r, "error"), cases[i].needle))
            fail_msg("case %zu: %s -> %s", i, cases[i].req, jstr(r, "error"));
        json_decref(r);
    }
    assert_int_equal(toolsrv_stat(&srv, "requests"), before);
}

static void test_custom_headers_and_method(void **state)
{
    char url[256];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/tools/add", srv.port);
    json_t *cfg = json_pack("{s:s, s:s, s:{s:s}, s:[s]}", "url", url, "method", "put", "headers", "X-Tenant",
                            "acme", "allow", "127.0.0.1");
    json_t *r = call(http_req(cfg, json_pack("{s:i, s:i}", "a", 2, "b", 40), "add042", 5000));
    assert_true(jbool(r, "ok"));
    assert_string_equal(jstr(r, "result"), "{\"sum\":42}");
    json_decref(r);
    json_t *k = toolsrv_get_json(&srv, "/_keys/add042");
    assert_string_equal(jstr(k, "method"), "PUT");
    assert_string_equal(jstr(k, "content_type"), "application/json");
    assert_string_equal(jstr(json_object_get(k, "x_headers"), "X-Tenant"), "acme");
    json_decref(k);
}

static void test_many_concurrent(void **state)
{
    enum { N = 200 };
    static struct probe probes[N];
    static char *texts[N];
    long long effects = toolsrv_stat(&srv, "effects");
    for (int i = 0; i < N; i++) {
        char key[32];
        snprintf(key, sizeof(key), "c0c0%04x", i);
        /* a quarter are refused, a quarter fail over to retries */
        json_t *cfg = local_cfg(i % 4 == 3 ? "flaky" : "add");
        if (i % 4 == 2)
            json_object_set_new(cfg, "allow", json_pack("[s]", "example.com"));
        json_t *args = i % 4 == 3 ? json_pack("{s:i}", "fail_times", 1) : json_pack("{s:i, s:i}", "a", i, "b", 1);
        json_t *req = http_req(cfg, args, key, 20000);
        texts[i] = json_dumps(req, JSON_COMPACT);
        json_decref(req);
        probe_start(&probes[i], texts[i]);
    }
    for (int i = 0; i < N; i++) {
        json_t *r = probe_wait(&probes[i]);
        if (i % 4 == 2) {
            expect_error(r, "allow list");
        } else if (i % 4 == 3) {
            assert_true(jbool(r, "ok"));
            assert_int_equal(jint(r, "attempts"), 2);
        } else {
            char want[64];
            snprintf(want, sizeof(want), "{\"sum\":%d}", i + 1);
            assert_string_equal(jstr(r, "result"), want);
        }
        json_decref(r);
        free(texts[i]);
    }
    assert_int_equal(toolsrv_stat(&srv, "effects"), effects + N / 4 * 3);
}

/* A config of the http tool `tool` with one header of its own: as many
 * distinct config texts as tags. */
static json_t *tagged_cfg(const char *tool, const char *tag)
{
    json_t *cfg = local_cfg(tool);
    json_object_set_new(cfg, "headers", json_pack("{s:s}", "X-Cfg", tag));
    return cfg;
}

/* The executor keeps the parse of the last 64 distinct http configs: a tool
 * called again is not parsed again, configs that differ are not confused,
 * and a config dropped from the cache while calls still use it serves them
 * to their end (under ASan: no use after free). */
static void test_config_cache(void **state)
{
    enum { N = 70 }; /* more distinct configs than the executor keeps */
    static struct probe probes[N];
    static char *texts[N];
    uint64_t before = cfg_parses;
    for (int i = 0; i < 10; i++) {
        char key[32], want[64];
        snprintf(key, sizeof(key), "cace%04x", i);
        json_t *r = call(http_req(tagged_cfg("add", "same"), json_pack("{s:i, s:i}", "a", i, "b", 2), key, 5000));
        snprintf(want, sizeof(want), "{\"sum\":%d}", i + 2);
        assert_string_equal(jstr(r, "result"), want);
        json_decref(r);
    }
    assert_int_equal(cfg_parses - before, 1);

    /* N configs, all in flight at once (each call sleeps 1 s at the tool),
     * sent in order from one scheduler: the 65th evicts the first while its
     * call is still running */
    before = cfg_parses;
    for (int i = 0; i < N; i++) {
        char key[32], tag[16];
        snprintf(key, sizeof(key), "cace1%03x", i);
        snprintf(tag, sizeof(tag), "n%d", i);
        json_t *req = http_req(tagged_cfg("sleep", tag), json_pack("{s:i}", "ms", 1000), key, 60000);
        texts[i] = json_dumps(req, JSON_COMPACT);
        json_decref(req);
        probe_start_on(&probes[i], texts[i], 1);
    }
    for (int i = 0; i < N; i++) {
        json_t *r = probe_wait(&probes[i]);
        assert_true(jbool(r, "ok"));
        assert_string_equal(jstr(r, "result"), "{\"slept_ms\":1000}");
        json_decref(r);
        free(texts[i]);
    }
    assert_int_equal(cfg_parses - before, N);
    json_t *k = toolsrv_get_json(&srv, "/_keys/cace1000");
    assert_string_equal(jstr(json_object_get(k, "x_headers"), "X-Cfg"), "n0");
    json_decref(k);
    k = toolsrv_get_json(&srv, "/_keys/cace1045");
    assert_string_equal(jstr(json_object_get(k, "x_headers"), "X-Cfg"), "n69");
    json_decref(k);

    /* the newest is still parsed; the first was dropped and is parsed again */
    before = cfg_parses;
    json_t *r = call(http_req(tagged_cfg("sleep", "n69"), json_pack("{s:i}", "ms", 1), "cace2001", 5000));
    assert_true(jbool(r, "ok"));
    json_decref(r);
    assert_int_equal(cfg_parses - before, 0);
    r = call(http_req(tagged_cfg("sleep", "n0"), json_pack("{s:i}", "ms", 1), "cace2002", 5000));
    assert_true(jbool(r, "ok"));
    json_decref(r);
    assert_int_equal(cfg_parses - before, 1);
}

/* ------------------------------------------------------------------------ */
/* Sandbox.                                                                   */

static json_t *sandbox_req(json_t *config, json_t *args, int timeout_ms)
{
    return json_pack("{s:{s:s, s:s, s:o, s:i}, s:o, s:s}", "tool", "name", "code", "kind", "sandbox", "config",
                     config, "timeout_ms", timeout_ms, "arguments", args, "idempotency_key", "5a5a");
}

static int have_bwrap(void)
{
    return system("bwrap --ro-bind /usr /usr --ro-bind-try /lib /lib --ro-bind-try /lib64 /lib64 "
                  "--unshare-all /usr/bin/true >/dev/null 2>&1") == 0;
}

static void test_sandbox_python(void **state)
{
    if (!have_bwrap())
        skip();
    json_t *r = call(sandbox_req(json_pack("{s:s, s:s}", "language", "python", "code",
                                           "import sys, json\na = json.load(sys.stdin)\nprint(a['x'] * 2)"),
                                 json_pack("{s:i}", "x", 21), 20000));
    assert_true(jbool(r, "ok"));
    assert_false(jbool(r, "is_error"));
    assert_string_equal(jstr(r, "result"), "42\n");
    assert_int_equal(jint(r, "status"), 0);
    json_decref(r);
}

static void test_sandbox_isolation(void **state)
{
    if (!have_bwrap())
        skip();
    /* no network, no host files outside /usr, unprivileged, writable /tmp only */
    const char *code = "import os, socket\n"
                       "try:\n"
                       "    socket.create_connection(('127.0.0.1', %d), timeout=2); print('net')\n"
                       "except OSError: print('nonet')\n"
                       "print('etc' if os.path.exists('/etc/passwd') else 'noetc')\n"
                       "print(os.getuid())\n"
                       "open('/tmp/x', 'w').write('ok'); print(open('/tmp/x').read())\n"
                       "try:\n"
                       "    open('/usr/x', 'w'); print('usr-writable')\n"
                       "except OSError: print('usr-ro')\n";
    char buf[1024];
    snprintf(buf, sizeof(buf), code, srv.port);
    long long before = toolsrv_stat(&srv, "requests");
    json_t *r = call(sandbox_req(json_pack("{s:s, s:s}", "language", "python", "code", buf), json_null(), 20000));
    assert_true(jbool(r, "ok"));
    assert_string_equal(jstr(r, "result"), "nonet\nnoetc\n65534\nok\nusr-ro\n");
    json_decref(r);
    assert_int_equal(toolsrv_stat(&srv, "requests"), before);
}

static void test_sandbox_failures(void **state)
{
    if (!have_bwrap())
        skip();
    json_t *r = call(sandbox_req(json_pack("{s:s, s:s}", "language", "sh", "code", "echo out; echo bad >&2; exit 3"),
                                 json_object(), 20000));
    assert_true(jbool(r, "ok"));
    assert_true(jbool(r, "is_error"));
    assert_int_equal(jint(r, "status"), 3);
    assert_string_equal(jstr(r, "result"), "out\n");
    assert_non_null(strstr(jstr(r, "error"), "exit status 3"));
    assert_non_null(strstr(jstr(r, "error"), "bad"));
    json_decref(r);

    r = call(sandbox_req(json_pack("{s:s, s:s}", "language", "sh", "code", "sleep 60"), json_object(), 300));
    expect_error(r, "timed out");
    json_decref(r);

    /* output over the cap is cut and flagged */
    r = call(sandbox_req(json_pack("{s:s, s:s}", "language", "python", "code", "print('y' * 300000)"), json_object(),
                         20000));
    assert_true(jbool(r, "ok"));
    assert_true(jbool(r, "truncated"));
    assert_int_equal(strlen(jstr(r, "result")), MAX_RESULT);
    json_decref(r);

    r = call(sandbox_req(json_pack("{s:[s]}", "command", "/usr/bin/no-such-program"), json_object(), 20000));
    assert_true(jbool(r, "is_error"));
    json_decref(r);
}

static void test_sandbox_gvisor(void **state)
{
    if (system("runsc --network=none do /bin/true >/dev/null 2>&1") != 0) {
        /* Not usable here: the executor must say so clearly. */
        json_t *r = call(sandbox_req(json_pack("{s:s, s:[s]}", "runtime", "gvisor", "command", "/bin/cat"),
                                     json_pack("{s:i}", "v", 1), 30000));
        assert_true(jbool(r, "is_error"));
        json_decref(r);
        skip();
    }
    json_t *r = call(sandbox_req(json_pack("{s:s, s:[s]}", "runtime", "gvisor", "command", "/bin/cat"),
                                 json_pack("{s:i}", "v", 1), 60000));
    assert_true(jbool(r, "ok"));
    assert_false(jbool(r, "is_error"));
    assert_string_equal(jstr(r, "result"), "{\"v\":1}");
    json_decref(r);
    /* the deadline kills the sandbox too */
    r = call(sandbox_req(json_pack("{s:s, s:[s, s]}", "runtime", "gvisor", "command", "/bin/sleep", "60"),
                         json_object(), 2000));
    expect_error(r, "timed out");
    json_decref(r);
}

static void test_sandbox_missing_runtime(void **state)
{
    static struct tool_opts missing = {.bwrap = "/nonexistent/bwrap", .runsc = "/nonexistent/runsc"};
    tr_actor_id main_tool = tool_id;
    assert_int_equal(tool_spawn_opts(rt, &missing, 1, &tool_id), 0);
    json_t *r = call(sandbox_req(json_pack("{s:s, s:[s]}", "runtime", "gvisor", "command", "/bin/cat"),
                                 json_object(), 5000));
    expect_error(r, "is gVisor installed and usable here?");
    json_decref(r);
    r = call(sandbox_req(json_pack("{s:[s]}", "command", "/bin/cat"), json_object(), 5000));
    expect_error(r, "/nonexistent/bwrap could not start");
    json_decref(r);
    assert_int_equal(tr_rt_stop_actor(rt, tool_id), 0);
    tool_id = main_tool;
}

/* ------------------------------------------------------------------------ */

static int setup(void **state)
{
    if (toolsrv_start(&srv, server_bin) != 0)
        return -1;
    struct tr_rt_opts ro = {.schedulers = 2};
    if (tr_rt_new(&ro, &rt) != 0 || tr_rt_start(rt) != 0)
        return -1;
    return tool_spawn_opts(rt, &opts, 0, &tool_id);
}

static int teardown(void **state)
{
    tr_rt_shutdown(rt);
    assert_int_equal(toolsrv_stat(&srv, "duplicates_performed"), 0);
    return toolsrv_stop(&srv);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s TROUPE-TOOLSERVER\n", argv[0]);
        return 2;
    }
    server_bin = argv[1];
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key_arrives),
        cmocka_unit_test(test_retry_keeps_key),
        cmocka_unit_test(test_replayed_call_one_effect),
        cmocka_unit_test(test_refused_host_no_connection),
        cmocka_unit_test(test_timeout),
        cmocka_unit_test(test_result_cap),
        cmocka_unit_test(test_4xx_5xx_3xx),
        cmocka_unit_test(test_connection_refused),
        cmocka_unit_test(test_bad_calls),
        cmocka_unit_test(test_custom_headers_and_method),
        cmocka_unit_test(test_many_concurrent),
        cmocka_unit_test(test_config_cache),
        cmocka_unit_test(test_sandbox_python),
        cmocka_unit_test(test_sandbox_isolation),
        cmocka_unit_test(test_sandbox_failures),
        cmocka_unit_test(test_sandbox_gvisor),
        cmocka_unit_test(test_sandbox_missing_runtime),
    };
    int rv = cmocka_run_group_tests(tests, setup, teardown);
    curl_global_cleanup();
    return rv;
}
