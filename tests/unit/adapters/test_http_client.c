/* The HTTP client adapter, driven from actors against a tr_httpd test server
 * on its own thread: 10,000 concurrent requests, timeouts, size cap,
 * streaming, cancel, refused connections, deterministic mode; and the socket
 * lifecycle: one poll handle per kept-alive connection, sockets the server
 * or curl closes, fd numbers reused, shutdown with connections open. */
#include <dirent.h>
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

#include "runtime/adapters.h"
#include "tsrv.h"

#define WAIT_FOR(cond)                                                                \
    do {                                                                              \
        for (int wf_i = 0; wf_i < 120000 && !(cond); wf_i++)                          \
            usleep(1000);                                                             \
    } while (0)

#define MSG_CANCEL (TR_MSG_USER + 1)
#define MSG_NEXT (TR_MSG_USER + 2)

static struct tsrv srv;

enum mode { M_MANY, M_ONE, M_STREAM, M_CANCEL_NOW, M_CANCEL_LATER, M_DETERMINISTIC, M_SEQ, M_SHUT };

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
    /* M_SEQ: seq_n requests to url/hello?i=N (/delay?ms=1&i=N if seq_delay:
     * an answer that is never there when the request is sent), each started
     * when the last is answered (or, if seq_paced, on MSG_NEXT), with
     * "Connection: close" if seq_close. M_SHUT: two at once, then one to
     * /delay that never ends. The adapter's counters after each answer: */
    int seq_n;
    int seq_delay;
    int seq_close;
    int seq_paced;
    int seq_started;
    atomic_int seq_done;
    struct tr__http_stats st;
    uint64_t max_polls_open;
};

struct hc_state {
    struct hc *hc;
    int remaining;
};

static void record_one(struct hc *hc, const struct tr_http_result *r);

static void seq_next(struct tr_ctx *ctx, struct hc *hc)
{
    static const char *const close_hdr[] = {"Connection: close"};
    char url[300];
    uint64_t id;
    int i = hc->seq_started++;
    if (hc->seq_delay)
        snprintf(url, sizeof(url), "%s/delay?ms=1&i=%d", hc->url, i);
    else
        snprintf(url, sizeof(url), "%s/hello?i=%d", hc->url, i);
    struct tr_http_req r = {.url = url, .tag = (uint64_t)i, .timeout_ms = 60000};
    if (hc->seq_close) {
        r.headers = close_hdr;
        r.n_headers = 1;
    }
    hc->start_rv = tr_http_start(ctx, &r, &id);
    if (hc->start_rv != 0) {
        atomic_fetch_add(&hc->bad, 1);
        atomic_store(&hc->done, 1);
    }
}

static void seq_answer(struct tr_ctx *ctx, struct hc *hc, const struct tr_http_result *r)
{
    char want[64];
    const char *word = hc->seq_delay ? "delayed" : "hello";
    int n = snprintf(want, sizeof(want), "%s %llu", word, (unsigned long long)r->tag);
    if (r->error == 0 && r->status == 200 && r->body_len == (size_t)n && !memcmp(r->body, want, (size_t)n)) {
        atomic_fetch_add(&hc->ok, 1);
    } else {
        record_one(hc, r);
        atomic_fetch_add(&hc->bad, 1);
    }
    tr__http_stats(ctx, &hc->st);
    if (hc->st.polls_open > hc->max_polls_open)
        hc->max_polls_open = hc->st.polls_open;
    int answered = atomic_fetch_add(&hc->seq_done, 1) + 1;
    if (hc->mode == M_SHUT) {
        if (answered == 2) {
            uint64_t id;
            char url[128];
            snprintf(url, sizeof(url), "http://127.0.0.1:%d/delay?ms=600000", hc->port);
            struct tr_http_req d = {.url = url};
            if (tr_http_start(ctx, &d, &id) != 0)
                atomic_fetch_add(&hc->bad, 1);
        }
        return;
    }
    if (answered == hc->seq_n)
        atomic_store(&hc->done, 1);
    else if (!hc->seq_paced)
        seq_next(ctx, hc);
}

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
    case M_SEQ:
        seq_next(ctx, hc);
        return 0;
    case M_SHUT:
        seq_next(ctx, hc);
        seq_next(ctx, hc);
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

    if (msg->type == MSG_NEXT) {
        seq_next(ctx, hc);
        return 0;
    }
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
    if (hc->mode == M_SEQ || hc->mode == M_SHUT) {
        seq_answer(ctx, hc, &r);
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

/* A loopback port nobody listens on: bind one, note it, close it. */
static int unused_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    close(fd);
    return ntohs(sa.sin_port);
}

static void refused_and_invalid(void **state)
{
    int port = unused_port();

    struct hc *hc = tr_calloc(1, sizeof(*hc));
    hc->mode = M_ONE;
    snprintf(hc->url, sizeof(hc->url), "http://127.0.0.1:%d/hello", port);
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

/* Open fds of this process (sockets of both the runtime and the servers). */
static int fd_count(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    assert_non_null(d);
    while ((e = readdir(d)))
        n += e->d_name[0] != '.';
    closedir(d);
    return n - 1; /* the DIR's own */
}

/* Runs hc (M_SEQ) from one actor until all its requests are answered. */
static void run_seq(struct hc *hc)
{
    struct tr_rt *rt = rt_up();
    spawn(rt, hc, 0);
    WAIT_FOR(atomic_load(&hc->done) == 1);
    assert_int_equal(atomic_load(&hc->done), 1);
    tr_rt_shutdown(rt);
}

/* Every request over one kept-alive connection: one socket, one poll handle
 * for all of them (curl says CURL_POLL_REMOVE after each transfer), one easy
 * handle reused. */
static void keepalive_one_poll(void **state)
{
    enum { N = 200 };
    struct tsrv ks;
    int fds = fd_count();
    assert_int_equal(tsrv_start(&ks, NULL), 0);
    struct hc *hc = tr_calloc(1, sizeof(*hc));
    hc->mode = M_SEQ;
    hc->seq_n = N;
    hc->seq_delay = 1;
    snprintf(hc->url, sizeof(hc->url), "http://127.0.0.1:%d", ks.port);
    run_seq(hc);
    assert_int_equal(atomic_load(&hc->bad), 0);
    assert_int_equal(atomic_load(&hc->ok), N);
    assert_int_equal(hc->st.polls_created, 1);
    assert_int_equal(hc->st.polls_open, 1);
    assert_int_equal(hc->max_polls_open, 1);
    assert_int_equal(hc->st.sockets_closed, 0);
    assert_int_equal(hc->st.easy_created, 1);
    tsrv_stop(&ks);
    assert_int_equal(ks.stats.accepted, 1);
    assert_int_equal(ks.stats.requests, N);
    WAIT_FOR(fd_count() <= fds);
    assert_true(fd_count() <= fds);
    tr_free(hc);
}

/* The server closes after every response: each socket's poll handle goes
 * with the socket (through curl's close callback), and the next connection,
 * which usually gets the same fd number, gets a handle of its own. */
static void connection_close_each(void **state)
{
    enum { N = 100 };
    int fds = fd_count();
    uint64_t reqs = atomic_load(&srv.requests);
    struct hc *hc = tr_calloc(1, sizeof(*hc));
    hc->mode = M_SEQ;
    hc->seq_n = N;
    hc->seq_close = 1;
    snprintf(hc->url, sizeof(hc->url), "http://127.0.0.1:%d", srv.port);
    run_seq(hc);
    assert_int_equal(atomic_load(&hc->bad), 0);
    assert_int_equal(atomic_load(&hc->ok), N);
    assert_int_equal(atomic_load(&srv.requests) - reqs, N);
    assert_int_equal(hc->st.polls_created, N);
    assert_int_equal(hc->st.sockets_closed, N);
    assert_int_equal(hc->st.polls_open, 0);
    assert_int_equal(hc->max_polls_open, 0);
    WAIT_FOR(fd_count() <= fds);
    assert_true(fd_count() <= fds);
    tr_free(hc);
}

/* A kept-alive connection the server drops while it sits in curl's cache:
 * curl closes it when the next request looks for a connection and opens a
 * new one (often on the same fd number). */
static void idle_connection_dropped(void **state)
{
    struct tsrv ks;
    struct tr_httpd_opts o = {.idle_timeout_ms = 20};
    int fds = fd_count();
    assert_int_equal(tsrv_start(&ks, &o), 0);
    struct hc *hc = tr_calloc(1, sizeof(*hc));
    hc->mode = M_SEQ;
    hc->seq_n = 3;
    hc->seq_paced = 1;
    snprintf(hc->url, sizeof(hc->url), "http://127.0.0.1:%d", ks.port);
    struct tr_rt *rt = rt_up();
    tr_actor_id a = spawn(rt, hc, 0);
    for (int i = 1; i < hc->seq_n; i++) {
        WAIT_FOR(atomic_load(&hc->seq_done) == i);
        assert_int_equal(atomic_load(&hc->seq_done), i);
        usleep(400 * 1000); /* 20x the server's idle timeout */
        assert_int_equal(tr_rt_send(rt, a, tr_msg_new(MSG_NEXT, 0)), 0);
    }
    WAIT_FOR(atomic_load(&hc->done) == 1);
    assert_int_equal(atomic_load(&hc->done), 1);
    tr_rt_shutdown(rt);
    tsrv_stop(&ks);
    assert_int_equal(atomic_load(&hc->bad), 0);
    assert_int_equal(atomic_load(&hc->ok), 3);
    assert_int_equal(ks.stats.accepted, 3);
    assert_int_equal(hc->st.polls_created, 3);
    assert_int_equal(hc->st.sockets_closed, 2);
    assert_int_equal(hc->st.polls_open, 1);
    WAIT_FOR(fd_count() <= fds);
    assert_true(fd_count() <= fds);
    tr_free(hc);
}

/* localhost has two addresses: the refused IPv4 socket is closed and the
 * IPv6 one (if any) opened inside the same curl call, usually on the same fd
 * number. A name that needs the resolver thread adds a socket curl did not
 * open through the adapter: it must not outlive its CURL_POLL_REMOVE. */
static void refused_twice_and_resolver(void **state)
{
    int port = unused_port();
    int fds = fd_count();

    struct hc *hc = tr_calloc(1, sizeof(*hc));
    hc->mode = M_SEQ;
    hc->seq_n = 3;
    snprintf(hc->url, sizeof(hc->url), "http://localhost:%d", port);
    run_seq(hc);
    assert_int_equal(atomic_load(&hc->bad), 3);
    assert_int_equal(hc->error, TR_EUNAVAIL);
    assert_true(hc->st.sockets_closed >= 3);
    assert_int_equal(hc->st.polls_open, 0);
    assert_int_equal(hc->max_polls_open, 0);
    tr_free(hc);

    hc = tr_calloc(1, sizeof(*hc));
    hc->mode = M_SEQ;
    hc->seq_n = 2;
    snprintf(hc->url, sizeof(hc->url), "http://troupe-test.invalid:%d", srv.port);
    run_seq(hc);
    assert_int_equal(atomic_load(&hc->bad), 2);
    assert_true(hc->error == TR_EUNAVAIL || hc->error == TR_ETIMEDOUT);
    assert_int_equal(hc->st.polls_open, 0);
    assert_int_equal(hc->max_polls_open, 0);
    WAIT_FOR(fd_count() <= fds);
    assert_true(fd_count() <= fds);
    tr_free(hc);
}

/* Shutdown with a connection idle in curl's cache, one carrying a request,
 * and an easy handle kept for reuse: every socket is closed, every handle
 * freed (ASan's leak check), and the server sees the client go. */
static void shutdown_with_connections(void **state)
{
    int fds = fd_count();
    uint64_t reqs = atomic_load(&srv.requests), gone = atomic_load(&srv.gone);
    struct hc *hc = tr_calloc(1, sizeof(*hc));
    hc->mode = M_SHUT;
    hc->port = srv.port;
    snprintf(hc->url, sizeof(hc->url), "http://127.0.0.1:%d", srv.port);
    struct tr_rt *rt = rt_up();
    spawn(rt, hc, 0);
    WAIT_FOR(atomic_load(&srv.requests) - reqs == 3);
    assert_int_equal(atomic_load(&srv.requests) - reqs, 3);
    assert_int_equal(atomic_load(&hc->ok), 2);
    tr_rt_shutdown(rt);
    assert_int_equal(atomic_load(&hc->bad), 0);
    assert_true(hc->st.polls_open >= 1);
    assert_int_equal(hc->st.polls_open, hc->st.polls_created);
    WAIT_FOR(atomic_load(&srv.gone) > gone);
    assert_true(atomic_load(&srv.gone) > gone);
    WAIT_FOR(fd_count() <= fds);
    assert_true(fd_count() <= fds);
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
        cmocka_unit_test(keepalive_one_poll),
        cmocka_unit_test(connection_close_each),
        cmocka_unit_test(idle_connection_dropped),
        cmocka_unit_test(refused_twice_and_resolver),
        cmocka_unit_test(shutdown_with_connections),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
