/* The HTTP client adapter, driven from actors against a tr_httpd test server
 * on its own thread: 10,000 concurrent requests, timeouts, size cap,
 * streaming, cancel, refused connections, deterministic mode. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "tsrv.h"

#define WAIT_FOR(cond)                                                                \
    do {                                                                              \
        for (int wf_i = 0; wf_i < 120000 && !(cond); wf_i++)                          \
            usleep(1000);                                                             \
    } while (0)

#define MSG_CANCEL (TR_MSG_USER + 1)

static struct tsrv srv;

enum mode { M_MANY, M_ONE, M_STREAM, M_CANCEL_NOW, M_CANCEL_LATER, M_DETERMINISTIC };

/* One test's shared record: written by actors, read by the test thread
 * after `done` says the actors are finished. */
struct hc {
    enum mode mode;
    int port;
    int per_actor;
    atomic_int started;
    atomic_int done;
    atomic_int ok;
    atomic_int bad;
    /* M_ONE, M_STREAM, M_CANCEL_*: the single result */
    struct tr_http_req req;
    char url[256];
    int start_rv;
    int error;
    int status;
    char errmsg[256];
    char body[4096];
    size_t body_len;
    int body_null;
    char header[64];
    int chunks;
    char streamed[4096];
    size_t streamed_len;
    int chunk_after_done;
    uint64_t id;
};

struct hc_state {
    struct hc *hc;
    int remaining;
};

static int hc_init(struct tr_ctx *ctx, void *state, void *arg)
{
    struct hc_state *st = state;
    struct hc *hc = arg;
    uint64_t id;
    st->hc = hc;
    switch (hc->mode) {
    case M_MANY:
        st->remaining = hc->per_actor;
        for (int i = 0; i < hc->per_actor; i++) {
            char url[128];
            int tag = atomic_fetch_add(&hc->started, 1);
            snprintf(url, sizeof(url), "http://127.0.0.1:%d/hello?i=%d", hc->port, tag);
            struct tr_http_req r = {.url = url, .tag = (uint64_t)tag, .timeout_ms = 120000};
            if (tr_http_start(ctx, &r, &id) != 0) {
                atomic_fetch_add(&hc->bad, 1);
                st->remaining--;
            }
        }
        if (st->remaining == 0)
            atomic_fetch_add(&hc->done, 1);
        return 0;
    case M_DETERMINISTIC:
    case M_ONE:
    case M_STREAM:
    case M_CANCEL_NOW:
    case M_CANCEL_LATER:
        hc->req.url = hc->url;
        hc->start_rv = tr_http_start(ctx, &hc->req, &hc->id);
        if (hc->start_rv != 0) {
            atomic_fetch_add(&hc->done, 1);
            return 0;
        }
        if (hc->mode == M_CANCEL_NOW) {
            int rv = tr_http_cancel(ctx, hc->id);
            if (rv != 0)
                atomic_fetch_add(&hc->bad, 1);
            if (tr_http_cancel(ctx, hc->id) != TR_ENOTFOUND)
                atomic_fetch_add(&hc->bad, 1);
        }
        return 0;
    }
    return 0;
}

static void record_one(struct hc *hc, const struct tr_http_result *r)
{
    hc->error = r->error;
    hc->status = r->status;
    snprintf(hc->errmsg, sizeof(hc->errmsg), "%s", r->errmsg);
    hc->body_null = r->body == NULL;
    hc->body_len = r->body_len;
    if (r->body_len < sizeof(hc->body)) {
        memcpy(hc->body, r->body ? r->body : "", r->body_len);
        hc->body[r->body_len] = '\0';
    }
    if (tr_http_header(r->headers, r->headers_len, "x-test", hc->header, sizeof(hc->header)) < 0)
        hc->header[0] = '\0';
}

static int hc_receive(struct tr_ctx *ctx, void *state, struct tr_msg *msg)
{
    struct hc_state *st = state;
    struct hc *hc = st->hc;
    struct tr_http_result r;
    struct tr_http_chunk ch;

    if (msg->type == MSG_CANCEL) {
        if (tr_http_cancel(ctx, hc->id) != 0)
            atomic_fetch_add(&hc->bad, 1);
        return 0;
    }
    if (msg->type == TR_MSG_HTTP_CHUNK) {
        if (tr_http_chunk(msg, &ch) != 0 || ch.id != hc->id) {
            atomic_fetch_add(&hc->bad, 1);
            return 0;
        }
        if (atomic_load(&hc->done))
            hc->chunk_after_done = 1;
        if (hc->streamed_len + ch.len < sizeof(hc->streamed)) {
            memcpy(hc->streamed + hc->streamed_len, ch.data, ch.len);
            hc->streamed_len += ch.len;
            hc->streamed[hc->streamed_len] = '\0';
        }
        hc->chunks++;
        return 0;
    }
    if (msg->type != TR_MSG_HTTP_DONE || tr_http_result(msg, &r) != 0) {
        atomic_fetch_add(&hc->bad, 1);
        return 0;
    }
    if (hc->mode == M_MANY) {
        char want[64];
        int n = snprintf(want, sizeof(want), "hello %llu", (unsigned long long)r.tag);
        if (r.error == 0 && r.status == 200 && r.body_len == (size_t)n && memcmp(r.body, want, (size_t)n) == 0)
            atomic_fetch_add(&hc->ok, 1);
        else
            atomic_fetch_add(&hc->bad, 1);
        if (--st->remaining == 0)
            atomic_fetch_add(&hc->done, 1);
        return 0;
    }
    if (r.id != hc->id)
        atomic_fetch_add(&hc->bad, 1);
    record_one(hc, &r);
    atomic_fetch_add(&hc->done, 1);
    return 0;
}

static const struct tr_behavior hc_behavior = {
    .name = "http-test",
    .state_size = sizeof(struct hc_state),
    .init = hc_init,
    .receive = hc_receive,
};

static struct tr_rt *rt_up(void)
{
    struct tr_rt *rt = NULL;
    struct tr_rt_opts o = {.schedulers = 2};
    assert_int_equal(tr_rt_new(&o, &rt), 0);
    assert_int_equal(tr_rt_start(rt), 0);
    return rt;
}

static tr_actor_id spawn(struct tr_rt *rt, struct hc *hc, int sched)
{
    tr_actor_id id = 0;
    struct tr_spawn_opts so = {.behavior = &hc_behavior, .arg = hc, .sched = sched, .mailbox_cap = 16};
    assert_int_equal(tr_spawn(rt, &so, &id), 0);
    return id;
}

/* One request from one actor; waits for its result. */
static void run_one(struct hc *hc)
{
    struct tr_rt *rt = rt_up();
    hc->port = srv.port;
    spawn(rt, hc, 0);
    WAIT_FOR(atomic_load(&hc->done) == 1);
    assert_int_equal(atomic_load(&hc->done), 1);
    tr_rt_shutdown(rt);
}

static void many_concurrent(void **state)
{
    enum { ACTORS = 10, PER = 1000 };
    struct hc *hc = tr_calloc(1, sizeof(*hc));
    uint64_t before = atomic_load(&srv.hello);
    hc->mode = M_MANY;
    hc->port = srv.port;
    hc->per_actor = PER;
    struct tr_rt *rt = rt_up();
    for (int i = 0; i < ACTORS; i++)
        spawn(rt, hc, TR_SCHED_ANY);
    WAIT_FOR(atomic_load(&hc->done) == ACTORS);
    assert_int_equal(atomic_load(&hc->done), ACTORS);
    assert_int_equal(atomic_load(&hc->bad), 0);
    assert_int_equal(atomic_load(&hc->ok), ACTORS * PER);
    assert_int_equal(atomic_load(&srv.hello) - before, ACTORS * PER);
    /* Pooled and capped: the requests queued rather than each taking a socket. */
    assert_true(atomic_load(&srv.max_conns) <= 2 * 64);
    tr_rt_shutdown(rt);
    tr_free(hc);
}

static void get_with_headers_and_post(void **state)
{
    struct hc *hc = tr_calloc(1, sizeof(*hc));
    hc->mode = M_ONE;
    snprintf(hc->url, sizeof(hc->url), "http://127.0.0.1:%d/hello?i=42", srv.port);
    run_one(hc);
    assert_int_equal(hc->start_rv, 0);
    assert_int_equal(hc->error, TR_OK);
    assert_int_equal(hc->status, 200);
    assert_string_equal(hc->body, "hello 42");
    assert_string_equal(hc->header, "yes");
    tr_free(hc);

    hc = tr_calloc(1, sizeof(*hc));
    hc->mode = M_ONE;
    static const char *const hdrs[] = {"Content-Type: text/plain", "X-Extra: 1"};
    static const char payload[] = "a body\0with a NUL";
    hc->req = (struct tr_http_req){.method = "POST", .headers = hdrs, .n_headers = 2, .body = payload,
                                   .body_len = sizeof(payload)};
    snprintf(hc->url, sizeof(hc->url), "http://127.0.0.1:%d/echo", srv.port);
    run_one(hc);
    assert_int_equal(hc->error, TR_OK);
    assert_int_equal(hc->body_len, sizeof(payload));
    assert_memory_equal(hc->body, payload, sizeof(payload));
    tr_free(hc);
}

static void request_timeout(void **state)
{
    struct hc *hc = tr_calloc(1, sizeof(*hc));
    hc->mode = M_ONE;
    hc->req.timeout_ms = 200;
    snprintf(hc->url, sizeof(hc->url), "http://127.0.0.1:%d/delay?ms=600000", srv.port);
    run_one(hc);
    assert_int_equal(hc->error, TR_ETIMEDOUT);
    assert_true(hc->errmsg[0] != '\0');
    tr_free(hc);
}

static void size_cap(void **state)
{
    struct hc *hc = tr_calloc(1, sizeof(*hc));
    hc->mode = M_ONE;
    hc->req.max_response = 1000;
    snprintf(hc->url, sizeof(hc->url), "http://127.0.0.1:%d/big?n=100000", srv.port);
    run_one(hc);
    assert_int_equal(hc->error, TR_ETOOBIG);
    tr_free(hc);

    /* Exactly at the cap is fine. */
    hc = tr_calloc(1, sizeof(*hc));
    hc->mode = M_ONE;
    hc->req.max_response = 1000;
    snprintf(hc->url, sizeof(hc->url), "http://127.0.0.1:%d/big?n=1000", srv.port);
    run_one(hc);
    assert_int_equal(hc->error, TR_OK);
    assert_int_equal(hc->body_len, 1000);
    tr_free(hc);

    /* A streamed body is capped too (no Content-Length to refuse early). */
    hc = tr_calloc(1, sizeof(*hc));
    hc->mode = M_STREAM;
    hc->req.stream = 1;
    hc->req.max_response = 100;
    snprintf(hc->url, sizeof(hc->url), "http://127.0.0.1:%d/stream?n=50&ms=1", srv.port);
    run_one(hc);
    assert_int_equal(hc->error, TR_ETOOBIG);
    assert_true(hc->streamed_len <= 100);
    tr_free(hc);
}

static void streaming(void **state)
{
    struct hc *hc = tr_calloc(1, sizeof(*hc));
    char want[4096] = "";
    hc->mode = M_STREAM;
    hc->req.stream = 1;
    hc->req.tag = 77;
    snprintf(hc->url, sizeof(hc->url), "http://127.0.0.1:%d/stream?n=20&ms=2", srv.port);
    run_one(hc);
    assert_int_equal(hc->error, TR_OK);
    assert_int_equal(hc->status, 200);
    assert_true(hc->body_null);
    for (int i = 0; i < 20; i++) {
        char line[32];
        snprintf(line, sizeof(line), "chunk %d\n", i);
        strcat(want, line);
    }
    assert_string_equal(hc->streamed, want);
    assert_true(hc->chunks >= 1);
    assert_false(hc->chunk_after_done);
    tr_free(hc);
}

static void cancel(void **state)
{
    /* Cancelled at once, inside the starting callback. */
    struct hc *hc = tr_calloc(1, sizeof(*hc));
    hc->mode = M_CANCEL_NOW;
    snprintf(hc->url, sizeof(hc->url), "http://127.0.0.1:%d/delay?ms=600000", srv.port);
    run_one(hc);
    assert_int_equal(hc->error, TR_ECANCELED);
    assert_int_equal(atomic_load(&hc->bad), 0);
    tr_free(hc);

    /* Cancelled while the server holds the request: the server sees the
     * client go away. */
    hc = tr_calloc(1, sizeof(*hc));
    hc->mode = M_CANCEL_LATER;
    hc->port = srv.port;
    uint64_t reqs = atomic_load(&srv.requests), gone = atomic_load(&srv.gone);
    snprintf(hc->url, sizeof(hc->url), "http://127.0.0.1:%d/delay?ms=600000", srv.port);
    struct tr_rt *rt = rt_up();
    tr_actor_id a = spawn(rt, hc, 1);
    WAIT_FOR(atomic_load(&srv.requests) > reqs);
    assert_int_equal(tr_rt_send(rt, a, tr_msg_new(MSG_CANCEL, 0)), 0);
    WAIT_FOR(atomic_load(&hc->done) == 1);
    assert_int_equal(hc->error, TR_ECANCELED);
    WAIT_FOR(atomic_load(&srv.gone) > gone);
    assert_true(atomic_load(&srv.gone) > gone);
    assert_int_equal(atomic_load(&hc->bad), 0);
    tr_rt_shutdown(rt);
    tr_free(hc);
}

static void refused_and_invalid(void **state)
{
    /* A port nobody listens on: bind one, note it, close it. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    close(fd);

    struct hc *hc = tr_calloc(1, sizeof(*hc));
    hc->mode = M_ONE;
    snprintf(hc->url, sizeof(hc->url), "http://127.0.0.1:%d/hello", ntohs(sa.sin_port));
    run_one(hc);
    assert_int_equal(hc->start_rv, 0);
    assert_int_equal(hc->error, TR_EUNAVAIL);
    assert_int_equal(hc->status, 0);
    assert_true(hc->errmsg[0] != '\0');
    tr_free(hc);

    hc = tr_calloc(1, sizeof(*hc));
    hc->mode = M_ONE;
    snprintf(hc->url, sizeof(hc->url), "ftp://127.0.0.1:%d/x", srv.port);
    run_one(hc);
    assert_int_equal(hc->start_rv, TR_EINVAL);
    tr_free(hc);

    hc = tr_calloc(1, sizeof(*hc));
    hc->mode = M_ONE;
    static const char *const bad[] = {"X-Evil: a\r\nInjected: b"};
    hc->req.headers = bad;
    hc->req.n_headers = 1;
    snprintf(hc->url, sizeof(hc->url), "http://127.0.0.1:%d/hello", srv.port);
    run_one(hc);
    assert_int_equal(hc->start_rv, TR_EINVAL);
    tr_free(hc);
}

static void shutdown_in_flight(void **state)
{
    struct hc *hc = tr_calloc(1, sizeof(*hc));
    hc->mode = M_ONE;
    hc->port = srv.port;
    uint64_t reqs = atomic_load(&srv.requests);
    snprintf(hc->url, sizeof(hc->url), "http://127.0.0.1:%d/delay?ms=600000", srv.port);
    struct tr_rt *rt = rt_up();
    spawn(rt, hc, 0);
    WAIT_FOR(atomic_load(&srv.requests) > reqs);
    tr_rt_shutdown(rt); /* everything in flight is dropped, nothing leaks */
    assert_int_equal(atomic_load(&hc->done), 0);
    tr_free(hc);
}

static void deterministic(void **state)
{
    struct tr_rt *rt = NULL;
    struct tr_rt_opts o = {.deterministic = 1, .seed = 1};
    struct hc *hc = tr_calloc(1, sizeof(*hc));
    hc->mode = M_DETERMINISTIC;
    snprintf(hc->url, sizeof(hc->url), "http://127.0.0.1:%d/hello", srv.port);
    assert_int_equal(tr_rt_new(&o, &rt), 0);
    tr_actor_id id;
    struct tr_spawn_opts so = {.behavior = &hc_behavior, .arg = hc};
    assert_int_equal(tr_spawn(rt, &so, &id), 0);
    tr_rt_run_until_idle(rt, 1000);
    assert_int_equal(hc->start_rv, TR_ENOTSUP);
    tr_rt_shutdown(rt);
    tr_free(hc);
}

static int setup(void **state)
{
    return tsrv_start(&srv, NULL);
}

static int teardown(void **state)
{
    tsrv_stop(&srv);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(get_with_headers_and_post),
        cmocka_unit_test(many_concurrent),
        cmocka_unit_test(request_timeout),
        cmocka_unit_test(size_cap),
        cmocka_unit_test(streaming),
        cmocka_unit_test(cancel),
        cmocka_unit_test(refused_and_invalid),
        cmocka_unit_test(shutdown_in_flight),
        cmocka_unit_test(deterministic),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
