/* The gateway end to end in one process: real runtime, RocksDB, raft (one
 * voter) and FSM; requests over loopback with libcurl. Every bad request is
 * followed by a check that the node still serves. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "harness.h"
#include <curl/curl.h>

#include "gateway/gateway.h"
#include "gateway/gw_int.h"
#include "raft/raft.h"

#define TOKEN "s3cret-token"
#define MAX_BODY (64u << 10)

static struct tr_rt *rt;
static struct tr_state *state;
static struct tr_gateway *gw;
static tr_actor_id client;
static char dir[64], raft_addr[32], base[64];
static atomic_int phase;
static atomic_int n_replies;
static struct tr_state_reply last_reply;

/* ---- the node ------------------------------------------------------------------ */

static int client_receive(struct tr_ctx *ctx, void *st, struct tr_msg *msg)
{
    if (msg->type == TR_MSG_USER + 1) {
        struct tr_msg *m = tr_msg_make(TR_MSG_STATE_APPEND, msg->data, msg->len);
        uint64_t corr;
        if (tr_request(ctx, tr_state_actor(state), m, 10000, &corr) != TR_OK) {
            tr_msg_free(m);
            last_reply.status = TR_EIO;
            atomic_fetch_add(&n_replies, 1);
        }
    } else if (msg->type == TR_MSG_STATE_REPLY) {
        memcpy(&last_reply, msg->data, sizeof last_reply);
        atomic_fetch_add(&n_replies, 1);
    } else if (msg->type == TR_MSG_TIMEOUT) {
        last_reply.status = TR_ETIMEDOUT;
        atomic_fetch_add(&n_replies, 1);
    }
    return 0;
}
static const struct tr_behavior client_behavior = { .name = "client", .receive = client_receive };

static void state_closed(void *arg) { (void)arg; }

static void gw_closed(void *arg)
{
    tr_state_close(state, state_closed, NULL);
}

static void close_hook(void *arg)
{
    tr_gateway_close(gw, gw_closed, NULL);
}

static void open_cb(struct tr_ctx *ctx, void *arg)
{
    struct tr_err err = { 0 };
    struct tr_state_opts so = { .node_id = 1, .data_dir = dir, .raft_address = raft_addr, .bootstrap = 1 };
    if (tr_state_open(ctx, &so, &state, &err) != TR_OK) {
        fprintf(stderr, "state: %s\n", err.msg);
        atomic_store(&phase, -1);
        return;
    }
    struct tr_gateway_opts go = { .rt = rt, .state = state, .host = "127.0.0.1", .port = 0,
                                  .admin_token = TOKEN, .node_id = 1, .max_body_bytes = MAX_BODY };
    if (tr_gateway_start(ctx, &go, &gw, &err) != TR_OK) {
        fprintf(stderr, "gateway: %s\n", err.msg);
        tr_state_close(state, NULL, NULL);
        atomic_store(&phase, -1);
        return;
    }
    tr_rt_on_shutdown(ctx, close_hook, NULL);
    snprintf(base, sizeof base, "http://127.0.0.1:%d", tr_gateway_port(gw));
    atomic_store(&phase, 1);
}


/* ---- HTTP ------------------------------------------------------------------------ */

struct resp {
    long status;
    char *body;
    size_t len;
    uint64_t raft_index;
    json_t *json;
    int curl_rc;
};

static size_t body_cb(char *p, size_t size, size_t n, void *ud)
{
    struct resp *r = ud;
    r->body = realloc(r->body, r->len + size * n + 1);
    memcpy(r->body + r->len, p, size * n);
    r->len += size * n;
    r->body[r->len] = 0;
    return size * n;
}

static size_t header_cb(char *p, size_t size, size_t n, void *ud)
{
    struct resp *r = ud;
    if (strncasecmp(p, "Troupe-Raft-Index:", 18) == 0)
        r->raft_index = strtoull(p + 18, NULL, 10);
    return size * n;
}

static void resp_free(struct resp *r)
{
    free(r->body);
    json_decref(r->json);
    memset(r, 0, sizeof *r);
}

/* One request. auth: 1 the right token, 0 none, -1 a wrong one. */
static struct resp req_full(const char *method, const char *path, const char *body, size_t body_len, int auth,
                            const char *extra_header, long timeout_ms)
{
    struct resp r = { 0 };
    CURL *c = curl_easy_init();
    char url[1024];
    snprintf(url, sizeof url, "%s%s", base, path);
    struct curl_slist *h = NULL;
    if (auth == 1)
        h = curl_slist_append(h, "Authorization: Bearer " TOKEN);
    else if (auth < 0)
        h = curl_slist_append(h, "Authorization: Bearer nope");
    if (extra_header != NULL) { /* several, separated by '\n' */
        char *copy = strdup(extra_header), *save = NULL;
        for (char *t = strtok_r(copy, "\n", &save); t != NULL; t = strtok_r(NULL, "\n", &save))
            h = curl_slist_append(h, t);
        free(copy);
    }
    h = curl_slist_append(h, "Expect:");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, body_cb);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, header_cb);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &r);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    if (body != NULL) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)body_len);
    }
    r.curl_rc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
    curl_easy_cleanup(c);
    curl_slist_free_all(h);
    if (r.body != NULL)
        r.json = json_loadb(r.body, r.len, JSON_DECODE_ANY, NULL);
    return r;
}

static struct resp req(const char *method, const char *path, const char *body)
{
    return req_full(method, path, body, body ? strlen(body) : 0, 1, NULL, 30000);
}

static const char *err_code(struct resp *r)
{
    return json_string_value(json_object_get(json_object_get(r->json, "error"), "code"));
}

static const char *jstr(json_t *o, const char *k) { return json_string_value(json_object_get(o, k)); }

/* Status, and the error code when one is given; then the node still serves. */
static void expect(struct resp r, long status, const char *code)
{
    if (r.status != status)
        fail_msg("expected %ld, got %ld: %s", status, r.status, r.body ? r.body : "(no body)");
    if (code != NULL) {
        assert_non_null(r.json);
        assert_string_equal(err_code(&r), code);
        assert_non_null(json_string_value(json_object_get(json_object_get(r.json, "error"), "message")));
    }
    resp_free(&r);
    struct resp h = req("GET", "/healthz", NULL);
    assert_int_equal(h.status, 200);
    resp_free(&h);
}

/* ---- setup --------------------------------------------------------------------- */

static int setup(void **st)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    snprintf(dir, sizeof dir, "/tmp/troupe-gw-XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(raft_addr, sizeof raft_addr, "127.0.0.1:%d", h_free_port());
    struct tr_rt_opts ro = { .schedulers = 2 };
    assert_int_equal(tr_rt_new(&ro, &rt), TR_OK);
    assert_int_equal(tr_rt_start(rt), TR_OK);
    struct tr_spawn_opts co = { .behavior = &client_behavior, .sched = 1 };
    assert_int_equal(tr_spawn(rt, &co, &client), TR_OK);
    assert_int_equal(tr_rt_call(rt, 0, open_cb, NULL, NULL), TR_OK);
    for (int i = 0; i < 20000 && atomic_load(&phase) == 0; i++)
        uv_sleep(1);
    assert_int_equal(atomic_load(&phase), 1);
    /* Wait until this node leads: writes answer 503 until then. */
    for (int i = 0; i < 2000; i++) {
        struct resp h = req("GET", "/healthz", NULL);
        bool leader = h.status == 200 && jstr(h.json, "role") && strcmp(jstr(h.json, "role"), "leader") == 0;
        if (i % 200 == 199)
            fprintf(stderr, "waiting for leadership: %ld %s (curl %d)\n", h.status, h.body ? h.body : "", h.curl_rc);
        resp_free(&h);
        if (leader)
            return 0;
        uv_sleep(10);
    }
    fail_msg("node never became leader");
    return 0;
}

static int held[8];
static int n_held;

static int teardown(void **st)
{
    tr_rt_shutdown(rt);
    for (int i = 0; i < n_held; i++)
        close(held[i]);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    curl_global_cleanup();
    return 0;
}

/* ---- tests ------------------------------------------------------------------------ */

static char *create(const char *body, const char *idem, long want)
{
    char h[300];
    if (idem != NULL)
        snprintf(h, sizeof h, "Idempotency-Key: %s", idem);
    struct resp r = req_full("POST", "/v1/runs", body, strlen(body), 1, idem ? h : NULL, 30000);
    if (r.status != want)
        fail_msg("create: expected %ld, got %ld: %s", want, r.status, r.body);
    char *id = NULL;
    if (want < 300) {
        assert_true(r.raft_index > 0);
        id = strdup(jstr(r.json, "id"));
    }
    resp_free(&r);
    return id;
}

static void test_health_auth_and_routes(void **st)
{
    struct resp r = req_full("GET", "/healthz", NULL, 0, 0, NULL, 30000);
    assert_int_equal(r.status, 200);
    assert_string_equal(jstr(r.json, "status"), "ok");
    assert_int_equal(json_integer_value(json_object_get(r.json, "node")), 1);
    resp_free(&r);
    expect(req_full("GET", "/v1/runs", NULL, 0, 0, NULL, 30000), 401, "unauthorized");
    expect(req_full("GET", "/v1/runs", NULL, 0, -1, NULL, 30000), 401, "unauthorized");
    expect(req_full("GET", "/v1/runs", NULL, 0, 0, "Authorization: Bearer " TOKEN "x", 30000), 401, "unauthorized");
    expect(req_full("GET", "/v1/runs", NULL, 0, 0, "Authorization: " TOKEN, 30000), 401, "unauthorized");
    expect(req("GET", "/v1/nothing", NULL), 404, "not_found");
    expect(req("GET", "/nope", NULL), 404, "not_found");
    expect(req("GET", "/ui/nope.js", NULL), 404, "not_found");
    expect(req("DELETE", "/v1/runs", NULL), 405, "method_not_allowed");
    expect(req("PUT", "/v1/tools/x", "{}"), 405, "method_not_allowed");
    expect(req("GET", "/v1/tenants", NULL), 200, NULL); /* tests/integration/tenants/ covers the rest */
    expect(req("GET", "/v1/runs/run_0000000000000001/ws", NULL), 404, "not_found"); /* tests/integration/live */
    r = req_full("GET", "/metrics", NULL, 0, 0, NULL, 30000);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "troupe_runs{status=\"queued\"}"));
    assert_non_null(strstr(r.body, "troupe_raft_commit_index"));
    assert_non_null(strstr(r.body, "troupe_http_requests_total{route=\"healthz\",code=\"2xx\"}"));
    assert_non_null(strstr(r.body, "troupe_state_commands_total"));
    resp_free(&r);
}

static void test_runs(void **st)
{
    const char *body = "{\"goal\":\"write a haiku\",\"agent\":{\"model\":\"mock\",\"max_steps\":5},\"metadata\":{\"x\":1}}";
    char *id = create(body, "key-1", 201);
    assert_int_equal(strlen(id), 20);
    /* same key, same body (other spacing/order): 200, same run */
    char *again = create("{ \"metadata\":{\"x\":1}, \"agent\":{\"max_steps\":5,\"model\":\"mock\"}, "
                         "\"goal\":\"write a haiku\" }",
                         "key-1", 200);
    assert_string_equal(id, again);
    free(again);
    create("{\"goal\":\"something else\"}", "key-1", 409);

    char path[128];
    snprintf(path, sizeof path, "/v1/runs/%s", id);
    struct resp r = req("GET", path, NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(jstr(r.json, "id"), id);
    assert_string_equal(jstr(r.json, "status"), "queued");
    assert_string_equal(jstr(r.json, "tenant"), "default");
    assert_string_equal(jstr(r.json, "goal"), "write a haiku");
    assert_int_equal(json_integer_value(json_object_get(r.json, "owner_node")), 1);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(r.json, "agent"), "max_steps")), 5);
    assert_non_null(jstr(r.json, "created_at"));
    assert_int_equal(json_integer_value(json_object_get(json_object_get(r.json, "usage"), "prompt_tokens")), 0);
    resp_free(&r);

    /* events */
    snprintf(path, sizeof path, "/v1/runs/%s/events", id);
    r = req("GET", path, NULL);
    assert_int_equal(r.status, 200);
    assert_int_equal(json_array_size(r.json), 1);
    json_t *e = json_array_get(r.json, 0);
    assert_string_equal(jstr(e, "type"), "run.created");
    assert_int_equal(json_integer_value(json_object_get(e, "seq")), 1);
    assert_string_equal(jstr(json_object_get(e, "data"), "goal"), "write a haiku");
    resp_free(&r);
    snprintf(path, sizeof path, "/v1/runs/%s/events?after=1", id);
    r = req("GET", path, NULL);
    assert_int_equal(json_array_size(r.json), 0);
    resp_free(&r);
    snprintf(path, sizeof path, "/v1/runs/%s/events", id);
    expect(req_full("GET", path, NULL, 0, 1, "Last-Event-ID: x", 30000), 200, NULL); /* ignored without SSE */
    snprintf(path, sizeof path, "/v1/runs/%s/events?after=x", id);
    expect(req("GET", path, NULL), 400, "invalid_query");

    /* cancel twice: both 200, cancelled */
    snprintf(path, sizeof path, "/v1/runs/%s/cancel", id);
    r = req("POST", path, "{\"reason\":\"changed my mind\"}");
    assert_int_equal(r.status, 200);
    assert_true(r.raft_index > 0);
    assert_string_equal(jstr(r.json, "status"), "cancelled");
    assert_string_equal(jstr(r.json, "error"), "changed my mind");
    resp_free(&r);
    r = req("POST", path, NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(jstr(r.json, "status"), "cancelled");
    resp_free(&r);
    snprintf(path, sizeof path, "/v1/runs/%s/events", id);
    r = req("GET", path, NULL);
    assert_int_equal(json_array_size(r.json), 2);
    assert_string_equal(jstr(json_array_get(r.json, 1), "type"), "run.cancelled");
    resp_free(&r);
    /* SSE of an ended run: the history, then the stream ends */
    r = req_full("GET", path, NULL, 0, 1, "Accept: text/event-stream", 30000);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "id: 1\nevent: run.created\ndata: {"));
    assert_non_null(strstr(r.body, "id: 2\nevent: run.cancelled\ndata: {"));
    resp_free(&r);
    struct curl_slist *unused = NULL;
    (void)unused;
    r = req_full("GET", path, NULL, 0, 1, "Accept: text/event-stream\r\nLast-Event-ID: 1", 30000);
    resp_free(&r);
    expect(req("POST", "/v1/runs/run_00000000000000ab/cancel", NULL), 404, "not_found");
    snprintf(path, sizeof path, "/v1/runs/%s/cancel", id);
    expect(req("POST", path, "{\"reason\":1}"), 400, "invalid_field");
    free(id);
}

static void test_bad_run_inputs(void **st)
{
    expect(req("POST", "/v1/runs", "{"), 400, "invalid_json");
    expect(req("POST", "/v1/runs", ""), 400, "invalid_json");
    expect(req("POST", "/v1/runs", "[]"), 400, "invalid_json");
    expect(req("POST", "/v1/runs", "{}"), 400, "missing_field");
    expect(req("POST", "/v1/runs", "{\"goal\":\"\"}"), 400, "invalid_field");
    expect(req("POST", "/v1/runs", "{\"goal\":7}"), 400, "invalid_field");
    expect(req("POST", "/v1/runs", "{\"goal\":\"g\",\"extra\":1}"), 400, "unknown_field");
    expect(req("POST", "/v1/runs", "{\"goal\":\"g\",\"agent\":{\"max_steps\":\"x\"}}"), 400, "invalid_field");
    expect(req("POST", "/v1/runs", "{\"goal\":\"g\",\"agent\":{\"tools\":[\"a\",2]}}"), 400, "invalid_field");
    expect(req("POST", "/v1/runs", "{\"goal\":\"g\",\"metadata\":[]}"), 400, "invalid_field");
    char h[400];
    memset(h, 0, sizeof h);
    strcpy(h, "Idempotency-Key: ");
    memset(h + strlen(h), 'k', 256);
    expect(req_full("POST", "/v1/runs", "{\"goal\":\"g\"}", 11, 1, h, 30000), 400, "invalid_header");
    /* a body over the server's cap: 413 (and the connection closes) */
    size_t n = MAX_BODY + 1024;
    char *big = malloc(n + 1);
    memset(big, 'x', n);
    big[n] = 0;
    memcpy(big, "{\"goal\":\"", 9);
    struct resp r = req_full("POST", "/v1/runs", big, n, 1, NULL, 30000);
    assert_int_equal(r.status, 413);
    resp_free(&r);
    free(big);
    expect(req("GET", "/healthz", NULL), 200, NULL);
    /* malformed and unknown ids: 404 */
    expect(req("GET", "/v1/runs/nope", NULL), 404, "not_found");
    expect(req("GET", "/v1/runs/run_0000000000000000", NULL), 404, "not_found");
    expect(req("GET", "/v1/runs/run_00000000000000zz", NULL), 404, "not_found");
    expect(req("GET", "/v1/runs/run_0000000000000001", NULL), 404, "not_found");
    expect(req("GET", "/v1/runs/run_0000000000000001/events", NULL), 404, "not_found");
    expect(req("GET", "/v1/runs/run_0000000000000001?wait=0", NULL), 400, "invalid_query");
    expect(req("GET", "/v1/runs/run_0000000000000001?wait=61", NULL), 400, "invalid_query");
    expect(req("GET", "/v1/runs/run_0000000000000001?wait=-1", NULL), 400, "invalid_query");
    expect(req("GET", "/v1/runs?status=done", NULL), 400, "invalid_query");
    expect(req("GET", "/v1/runs?limit=0", NULL), 400, "invalid_query");
    expect(req("GET", "/v1/runs?limit=501", NULL), 400, "invalid_query");
    expect(req("GET", "/v1/runs?limit=abc", NULL), 400, "invalid_query");
    expect(req("GET", "/v1/runs?cursor=zzz", NULL), 400, "invalid_cursor");
    expect(req("GET", "/v1/runs?cursor=c1ab", NULL), 400, "invalid_cursor");
}

static void test_list_paging(void **st)
{
    for (int i = 0; i < 7; i++) {
        char body[64];
        snprintf(body, sizeof body, "{\"goal\":\"page %d\"}", i);
        free(create(body, NULL, 201));
    }
    struct resp all = req("GET", "/v1/runs?limit=500", NULL);
    assert_int_equal(all.status, 200);
    size_t total = json_array_size(json_object_get(all.json, "runs"));
    assert_true(total >= 7);
    assert_true(json_is_null(json_object_get(all.json, "next_cursor")));
    resp_free(&all);

    char path[700] = "/v1/runs?limit=2";
    size_t seen = 0;
    json_t *ids = json_object();
    for (int pages = 0; pages < 100; pages++) {
        struct resp r = req("GET", path, NULL);
        assert_int_equal(r.status, 200);
        json_t *runs = json_object_get(r.json, "runs");
        assert_true(json_array_size(runs) <= 2);
        size_t i;
        json_t *run;
        json_array_foreach(runs, i, run) {
            assert_null(json_object_get(ids, jstr(run, "id"))); /* no run twice */
            json_object_set_new(ids, jstr(run, "id"), json_true());
            seen++;
        }
        json_t *next = json_object_get(r.json, "next_cursor");
        if (json_is_null(next)) {
            resp_free(&r);
            break;
        }
        snprintf(path, sizeof path, "/v1/runs?limit=2&cursor=%s", json_string_value(next));
        resp_free(&r);
    }
    assert_int_equal(seen, total);
    json_decref(ids);

    struct resp q = req("GET", "/v1/runs?status=cancelled", NULL);
    json_t *run;
    size_t i;
    json_array_foreach(json_object_get(q.json, "runs"), i, run)
        assert_string_equal(jstr(run, "status"), "cancelled");
    resp_free(&q);
}

struct poll_arg {
    char path[128];
    struct resp r;
    uint64_t ms;
};

static void *sse_reader(void *p)
{
    struct poll_arg *a = p;
    uint64_t t0 = uv_hrtime();
    a->r = req_full("GET", a->path, NULL, 0, 1, "Accept: text/event-stream", 30000);
    a->ms = (uv_hrtime() - t0) / 1000000;
    return NULL;
}

static void *long_poll(void *p)
{
    struct poll_arg *a = p;
    uint64_t t0 = uv_hrtime();
    a->r = req("GET", a->path, NULL);
    a->ms = (uv_hrtime() - t0) / 1000000;
    return NULL;
}

static void test_long_poll(void **st)
{
    char *id = create("{\"goal\":\"wait for me\"}", NULL, 201);
    struct poll_arg a = { 0 };
    /* not terminal: answered when the wait ends */
    snprintf(a.path, sizeof a.path, "/v1/runs/%s?wait=1", id);
    long_poll(&a);
    assert_int_equal(a.r.status, 200);
    assert_string_equal(jstr(a.r.json, "status"), "queued");
    assert_true(a.ms >= 900);
    resp_free(&a.r);
    /* ended meanwhile: answered at once */
    snprintf(a.path, sizeof a.path, "/v1/runs/%s?wait=30", id);
    pthread_t th, th2;
    struct poll_arg sse = { 0 };
    snprintf(sse.path, sizeof sse.path, "/v1/runs/%s/events", id);
    assert_int_equal(pthread_create(&th, NULL, long_poll, &a), 0);
    assert_int_equal(pthread_create(&th2, NULL, sse_reader, &sse), 0);
    uv_sleep(200);
    char path[128];
    snprintf(path, sizeof path, "/v1/runs/%s/cancel", id);
    expect(req("POST", path, NULL), 200, NULL);
    pthread_join(th, NULL);
    pthread_join(th2, NULL);
    /* the stream: history, then the live cancel, then its end */
    assert_int_equal(sse.r.status, 200);
    assert_non_null(strstr(sse.r.body, "id: 1\nevent: run.created\n"));
    assert_non_null(strstr(sse.r.body, "id: 2\nevent: run.cancelled\n"));
    assert_true(sse.ms >= 150 && sse.ms < 10000);
    resp_free(&sse.r);
    assert_int_equal(a.r.status, 200);
    assert_string_equal(jstr(a.r.json, "status"), "cancelled");
    assert_true(a.ms < 10000);
    resp_free(&a.r);
    /* terminal already: no wait */
    snprintf(a.path, sizeof a.path, "/v1/runs/%s?wait=30", id);
    long_poll(&a);
    assert_int_equal(a.r.status, 200);
    assert_true(a.ms < 5000);
    resp_free(&a.r);
    /* the client leaves during a long poll: the node forgets it */
    char *id2 = create("{\"goal\":\"abandoned poll\"}", NULL, 201);
    snprintf(path, sizeof path, "/v1/runs/%s?wait=20", id2);
    struct resp r = req_full("GET", path, NULL, 0, 1, NULL, 200);
    assert_int_equal(r.curl_rc, CURLE_OPERATION_TIMEDOUT);
    resp_free(&r);
    expect(req("GET", "/healthz", NULL), 200, NULL);
    /* ... and during a live event stream */
    snprintf(path, sizeof path, "/v1/runs/%s/events", id2);
    r = req_full("GET", path, NULL, 0, 1, "Accept: text/event-stream", 300);
    assert_int_equal(r.curl_rc, CURLE_OPERATION_TIMEDOUT);
    assert_non_null(r.body);
    assert_non_null(strstr(r.body, "event: run.created")); /* the history came before */
    resp_free(&r);
    expect(req("GET", "/healthz", NULL), 200, NULL);
    free(id);
    free(id2);
}

static void test_tools(void **st)
{
    const char *v1 = "{\"name\":\"search\",\"description\":\"web search\",\"risk\":\"read\",\"kind\":\"http\","
                     "\"config\":{\"url\":\"http://127.0.0.1:9/search\"},\"input_schema\":{\"type\":\"object\","
                     "\"properties\":{\"q\":{\"type\":\"string\"}},\"required\":[\"q\"]},\"timeout_ms\":5000}";
    struct resp r = req("POST", "/v1/tools", v1);
    assert_int_equal(r.status, 201);
    assert_true(r.raft_index > 0);
    assert_int_equal(json_integer_value(json_object_get(r.json, "version")), 1);
    assert_true(json_is_true(json_object_get(r.json, "enabled")));
    resp_free(&r);
    r = req("POST", "/v1/tools", v1); /* unchanged */
    assert_int_equal(r.status, 200);
    assert_int_equal(json_integer_value(json_object_get(r.json, "version")), 1);
    resp_free(&r);
    const char *v2 = "{\"name\":\"search\",\"description\":\"better web search\",\"kind\":\"http\","
                     "\"config\":{\"url\":\"http://127.0.0.1:9/search\"}}";
    r = req("POST", "/v1/tools", v2);
    assert_int_equal(r.status, 201);
    assert_int_equal(json_integer_value(json_object_get(r.json, "version")), 2);
    resp_free(&r);
    r = req("GET", "/v1/tools/search", NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(jstr(r.json, "description"), "better web search");
    assert_int_equal(json_integer_value(json_object_get(r.json, "versions")), 2);
    resp_free(&r);
    r = req("GET", "/v1/tools/search?version=1", NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(jstr(r.json, "description"), "web search");
    assert_string_equal(jstr(json_object_get(r.json, "input_schema"), "type"), "object");
    resp_free(&r);
    expect(req("GET", "/v1/tools/search?version=9", NULL), 404, "not_found");
    expect(req("GET", "/v1/tools/search?version=x", NULL), 400, "invalid_query");
    expect(req("GET", "/v1/tools/nosuch", NULL), 404, "not_found");
    expect(req("GET", "/v1/tools/bad%20name", NULL), 404, "not_found");

    r = req("POST", "/v1/tools/search/disable", NULL);
    assert_int_equal(r.status, 200);
    assert_true(r.raft_index > 0);
    assert_false(json_is_true(json_object_get(r.json, "enabled")));
    assert_int_equal(json_integer_value(json_object_get(r.json, "version")), 2);
    resp_free(&r);
    r = req("POST", "/v1/tools/search/enable", NULL);
    assert_int_equal(r.status, 200);
    assert_true(json_is_true(json_object_get(r.json, "enabled")));
    resp_free(&r);
    expect(req("POST", "/v1/tools/nosuch/disable", NULL), 404, "not_found");

    r = req("POST", "/v1/tools", "{\"name\":\"calc\",\"kind\":\"builtin\"}");
    assert_int_equal(r.status, 201);
    resp_free(&r);
    r = req("GET", "/v1/tools", NULL);
    assert_int_equal(r.status, 200);
    assert_int_equal(json_array_size(json_object_get(r.json, "tools")), 2);
    resp_free(&r);

    r = req("POST", "/v1/tools",
            "{\"name\":\"x\",\"kind\":\"builtin\",\"input_schema\":{\"type\":\"object\",\"unevaluatedProperties\":false}}");
    assert_int_equal(r.status, 400);
    assert_string_equal(err_code(&r), "unsupported_schema");
    assert_non_null(strstr(jstr(json_object_get(r.json, "error"), "message"), "unevaluatedProperties"));
    resp_free(&r);
    expect(req("GET", "/v1/tools/x", NULL), 404, "not_found");
    expect(req("POST", "/v1/tools", "{\"name\":\"x\",\"kind\":\"http\"}"), 400, "invalid_field");
    expect(req("POST", "/v1/tools", "{\"name\":\"x\",\"risk\":\"extreme\"}"), 400, "invalid_field");
    expect(req("POST", "/v1/tools", "{\"nam\":\"x\"}"), 400, "unknown_field");
    expect(req("POST", "/v1/tools", "nonsense"), 400, "invalid_json");
}

/* Append approval.requested (seq 2, epoch 1) to a queued run, as its owner would. */
static void request_approval(const char *run_text, const char *approval_id)
{
    uint64_t id;
    assert_int_equal(tr_run_id_from_text(run_text, strlen(run_text), &id), TR_OK);
    struct tr_fb_builder b;
    tr_fb_builder_init(&b);
    tr_fb_ref aid = tr_fb_create_str(&b, approval_id);
    tr_fb_ref tool = tr_fb_create_str(&b, "payment");
    tr_fb_ref args = tr_fb_create_str(&b, "{\"usd\":25}");
    troupe_journal_ApprovalRequested_start(&b);
    troupe_journal_ApprovalRequested_add_approval_id(&b, aid);
    troupe_journal_ApprovalRequested_add_step(&b, 1);
    troupe_journal_ApprovalRequested_add_tool(&b, tool);
    troupe_journal_ApprovalRequested_add_arguments(&b, args);
    troupe_journal_ApprovalRequested_add_expires_at_us(&b, 4000000000000000LL);
    tr_fb_ref data = troupe_journal_ApprovalRequested_end(&b);
    tr_fb_ref rid = tr_fb_create_str(&b, run_text);
    troupe_journal_Event_start(&b);
    troupe_journal_Event_add_seq(&b, 2);
    troupe_journal_Event_add_time_us(&b, 1700000000000000LL);
    troupe_journal_Event_add_run_id(&b, rid);
    troupe_journal_Event_add_epoch(&b, 1);
    troupe_journal_Event_add_data_type(&b, troupe_journal_Data_ApprovalRequested);
    troupe_journal_Event_add_data(&b, data);
    troupe_journal_Event_finish(&b, troupe_journal_Event_end(&b));
    size_t len;
    const uint8_t *ev = tr_fb_builder_data(&b, &len);
    struct tr_append_msg h = { .run_id = id, .epoch = 1, .seq = 2, .len = (uint32_t)len };
    struct tr_msg *m = tr_msg_new(TR_MSG_USER + 1, (uint32_t)(sizeof h + len));
    memcpy(m->data, &h, sizeof h);
    memcpy(m->data + sizeof h, ev, len);
    tr_fb_builder_free(&b);
    int want = atomic_load(&n_replies) + 1;
    assert_int_equal(tr_rt_send(rt, client, m), TR_OK);
    for (int i = 0; i < 20000 && atomic_load(&n_replies) < want; i++)
        uv_sleep(1);
    assert_int_equal(atomic_load(&n_replies), want);
    assert_int_equal(last_reply.status, TR_OK);
    assert_int_equal(last_reply.verdict, TR_FSM_OK);
}

static bool listed(const char *path, const char *approval_id)
{
    struct resp r = req("GET", path, NULL);
    assert_int_equal(r.status, 200);
    bool found = false;
    size_t i;
    json_t *a;
    json_array_foreach(json_object_get(r.json, "approvals"), i, a) {
        if (strcmp(jstr(a, "id"), approval_id) == 0) {
            found = true;
            assert_string_equal(jstr(a, "tool"), "payment");
            assert_int_equal(json_integer_value(json_object_get(json_object_get(a, "arguments"), "usd")), 25);
            assert_string_equal(jstr(a, "risk"), "irreversible");
            assert_non_null(jstr(a, "requested_at"));
            assert_non_null(jstr(a, "expires_at"));
        }
    }
    resp_free(&r);
    return found;
}

static void test_approvals(void **st)
{
    char *id = create("{\"goal\":\"pay the bill\"}", NULL, 201);
    request_approval(id, "apr-test-1");
    char path[128];
    snprintf(path, sizeof path, "/v1/runs/%s", id);
    struct resp r = req("GET", path, NULL);
    assert_string_equal(jstr(r.json, "status"), "waiting_approval");
    resp_free(&r);
    assert_true(listed("/v1/approvals", "apr-test-1"));
    assert_true(listed("/v1/approvals?status=pending", "apr-test-1"));
    assert_false(listed("/v1/approvals?status=approved", "apr-test-1"));
    assert_true(listed("/v1/approvals?status=all", "apr-test-1"));
    expect(req("GET", "/v1/approvals?status=maybe", NULL), 400, "invalid_query");

    expect(req("POST", "/v1/approvals/apr-test-1", "{\"decision\":\"perhaps\"}"), 400, "invalid_field");
    expect(req("POST", "/v1/approvals/apr-test-1", "{}"), 400, "missing_field");
    expect(req("POST", "/v1/approvals/apr-test-1", "{\"decision\":\"approve\",\"x\":1}"), 400, "unknown_field");
    expect(req("POST", "/v1/approvals/apr-nosuch", "{\"decision\":\"approve\"}"), 404, "not_found");
    r = req("POST", "/v1/approvals/apr-test-1", "{\"decision\":\"approve\",\"reason\":\"within budget\"}");
    assert_int_equal(r.status, 200);
    assert_true(r.raft_index > 0);
    assert_string_equal(jstr(r.json, "status"), "approved");
    assert_string_equal(jstr(r.json, "reason"), "within budget");
    assert_string_equal(jstr(r.json, "decided_by"), "admin");
    resp_free(&r);
    expect(req("POST", "/v1/approvals/apr-test-1", "{\"decision\":\"deny\"}"), 409, "not_pending");
    assert_false(listed("/v1/approvals", "apr-test-1"));
    assert_true(listed("/v1/approvals?status=approved", "apr-test-1"));

    r = req("GET", path, NULL);
    assert_string_equal(jstr(r.json, "status"), "running");
    resp_free(&r);
    snprintf(path, sizeof path, "/v1/runs/%s/events", id);
    r = req("GET", path, NULL);
    assert_int_equal(json_array_size(r.json), 3);
    assert_string_equal(jstr(json_array_get(r.json, 1), "type"), "approval.requested");
    assert_string_equal(jstr(json_array_get(r.json, 2), "type"), "approval.decided");
    assert_string_equal(jstr(json_object_get(json_array_get(r.json, 2), "data"), "decision"), "approve");
    resp_free(&r);
    free(id);
}

static void test_cluster(void **st)
{
    struct resp r = req("GET", "/v1/cluster", NULL);
    assert_int_equal(r.status, 200);
    assert_int_equal(json_integer_value(json_object_get(r.json, "leader")), 1);
    assert_true(json_integer_value(json_object_get(r.json, "term")) >= 1);
    assert_true(json_integer_value(json_object_get(r.json, "commit_index")) >= 1);
    json_t *n0 = json_array_get(json_object_get(r.json, "nodes"), 0);
    assert_int_equal(json_integer_value(json_object_get(n0, "id")), 1);
    assert_string_equal(jstr(n0, "raft_address"), raft_addr);
    assert_string_equal(jstr(n0, "role"), "leader");
    assert_true(json_is_true(json_object_get(n0, "alive")));
    assert_true(json_integer_value(json_object_get(n0, "runs")) >= 1);
    resp_free(&r);
    expect(req_full("GET", "/v1/cluster", NULL, 0, 0, NULL, 30000), 401, "unauthorized");
}

/* Send a whole request on a raw socket and hang up at once: the node gets
 * the request, proposes, and the client is gone before the answer. */
/* Send a whole request on a raw socket; keep it open (fd returned). */
static int send_and_stay(const char *request)
{
    int port = atoi(strrchr(base, ':') + 1);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    size_t n = strlen(request);
    assert_int_equal(send(fd, request, n, MSG_NOSIGNAL), (ssize_t)n);
    return fd;
}

static void send_and_leave(const char *request)
{
    int port = atoi(strrchr(base, ':') + 1);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    size_t n = strlen(request);
    assert_int_equal(send(fd, request, n, MSG_NOSIGNAL), (ssize_t)n);
    close(fd);
}

static size_t count_runs(void)
{
    struct resp r = req("GET", "/v1/runs?limit=500", NULL);
    size_t n = json_array_size(json_object_get(r.json, "runs"));
    resp_free(&r);
    return n;
}

static void test_client_leaves_mid_write(void **st)
{
    size_t before = count_runs();
    char request[512];
    const char *body = "{\"goal\":\"nobody waits for me\"}";
    snprintf(request, sizeof request,
             "POST /v1/runs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " TOKEN
             "\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
             strlen(body), body);
    for (int i = 0; i < 20; i++)
        send_and_leave(request);
    /* half a request, then gone */
    for (int i = 0; i < 5; i++)
        send_and_leave("POST /v1/runs HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"goal");
    /* the writes still apply (persist, then acknowledge: nobody to acknowledge) */
    size_t after = before;
    for (int i = 0; i < 2000 && after < before + 20; i++) {
        uv_sleep(5);
        after = count_runs();
    }
    assert_int_equal(after, before + 20);
    expect(req("GET", "/healthz", NULL), 200, NULL);
    struct resp m = req_full("GET", "/metrics", NULL, 0, 0, NULL, 30000);
    assert_non_null(strstr(m.body, "troupe_http_long_polls 0"));
    resp_free(&m);
}

/* Runs last: the node shuts down (teardown) with writes, a long poll and an
 * event stream still open; nothing may leak or be touched after free. */
static void test_shutdown_with_work_in_flight(void **st)
{
    char *id = create("{\"goal\":\"still running at shutdown\"}", NULL, 201);
    char request[512];
    const char *body = "{\"goal\":\"in flight at shutdown\"}";
    snprintf(request, sizeof request,
             "POST /v1/runs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " TOKEN
             "\r\nContent-Length: %zu\r\n\r\n%s",
             strlen(body), body);
    for (int i = 0; i < 4; i++)
        held[n_held++] = send_and_stay(request);
    snprintf(request, sizeof request,
             "GET /v1/runs/%s?wait=30 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " TOKEN "\r\n\r\n", id);
    held[n_held++] = send_and_stay(request);
    snprintf(request, sizeof request,
             "GET /v1/runs/%s/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n"
             "Authorization: Bearer " TOKEN "\r\n\r\n", id);
    held[n_held++] = send_and_stay(request);
    free(id);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_health_auth_and_routes),
        cmocka_unit_test(test_runs),
        cmocka_unit_test(test_bad_run_inputs),
        cmocka_unit_test(test_list_paging),
        cmocka_unit_test(test_long_poll),
        cmocka_unit_test(test_tools),
        cmocka_unit_test(test_approvals),
        cmocka_unit_test(test_cluster),
        cmocka_unit_test(test_client_leaves_mid_write),
        cmocka_unit_test(test_shutdown_with_work_in_flight),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
