/* tr_httpd: keep-alive, pipelining, limits, timeouts, async and streamed
 * answers, client-gone notification, upgrade, clean close. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
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

#include "tclient.h"
#include "tsrv.h"

/* Poll cond for up to a minute (a hang guard, not a timing assertion). */
#define WAIT_FOR(cond)                                                                \
    do {                                                                              \
        for (int wf_i = 0; wf_i < 60000 && !(cond); wf_i++)                           \
            usleep(1000);                                                             \
    } while (0)

static void keepalive_pipelined(void **state)
{
    struct tsrv s;
    struct tclient c;
    assert_int_equal(tsrv_start(&s, NULL), 0);
    assert_int_equal(tc_connect(&c, s.port), 0);

    /* The first answer is slow (async); the others must still follow it. */
    tc_sends(&c, "GET /delay?ms=50&i=1 HTTP/1.1\r\nHost: t\r\n\r\n"
                 "GET /hello?i=2 HTTP/1.1\r\nHost: t\r\n\r\n"
                 "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nthree"
                 "GET /hello?i=4 HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_int_equal(tc_wait(&c, 4), 4);
    assert_int_equal(c.r[0].status, 200);
    assert_string_equal(c.r[0].body, "delayed 1");
    assert_string_equal(c.r[1].body, "hello 2");
    assert_string_equal(c.r[2].body, "three");
    assert_string_equal(c.r[3].body, "hello 4");
    assert_false(c.eof);

    /* Keep-alive: the same connection serves another request later. */
    tc_sends(&c, "GET /hello?i=5 HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_int_equal(tc_wait(&c, 5), 5);
    assert_string_equal(c.r[4].body, "hello 5");
    assert_true(strstr(c.raw, "X-Test: yes\r\n") != NULL);

    /* Connection: close is honoured. */
    tc_sends(&c, "GET /hello?i=6 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_int_equal(tc_wait(&c, 6), 6);
    assert_true(tc_wait_eof(&c));
    tc_close(&c);
    tsrv_stop(&s);
    assert_int_equal(s.stats.requests, 6);
}

static void deep_pipeline(void **state)
{
    enum { N = 3000 };
    struct tsrv s;
    struct tclient c;
    char *all = malloc(N * 64), *p = all;
    assert_int_equal(tsrv_start(&s, NULL), 0);
    assert_int_equal(tc_connect(&c, s.port), 0);
    for (int i = 0; i < N; i++)
        p += sprintf(p, "GET /hello?i=%d HTTP/1.1\r\nHost: t\r\n\r\n", i);
    tc_send(&c, all, (size_t)(p - all));
    char last[32];
    snprintf(last, sizeof(last), "hello %d", N - 1);
    assert_true(tc_wait_raw(&c, last));
    /* Every answer, in order. */
    const char *at = c.raw;
    for (int i = 0; i < N; i++) {
        char want[32];
        snprintf(want, sizeof(want), "\r\n\r\nhello %d", i);
        at = strstr(at, want);
        assert_non_null(at);
        at += strlen(want);
        assert_true(*at == 'H' || *at == '\0'); /* the next status line, or the end */
    }
    assert_false(c.eof);
    tc_close(&c);
    free(all);
    tsrv_stop(&s);
    assert_int_equal(s.stats.requests, N);
}

/* Garbage from many clients at once never stops the server serving. */
static void garbage_storm(void **state)
{
    enum { N = 40 };
    struct tsrv s;
    struct tclient c[N], good;
    unsigned seed = 12345;
    assert_int_equal(tsrv_start(&s, NULL), 0);
    for (int i = 0; i < N; i++) {
        char junk[3000];
        size_t n = 1 + rand_r(&seed) % sizeof(junk);
        for (size_t k = 0; k < n; k++)
            junk[k] = (char)rand_r(&seed);
        if (i % 2)
            memcpy(junk, "GET /", n < 5 ? n : 5); /* a plausible start */
        assert_int_equal(tc_connect(&c[i], s.port), 0);
        tc_send(&c[i], junk, n);
        if (i % 3 == 0)
            tc_sends(&c[i], "\r\n\r\n");
    }
    assert_int_equal(tc_connect(&good, s.port), 0);
    tc_sends(&good, "GET /hello?i=1 HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_int_equal(tc_wait(&good, 1), 1);
    assert_string_equal(good.r[0].body, "hello 1");
    for (int i = 0; i < N; i++)
        tc_close(&c[i]);
    tc_close(&good);
    tsrv_stop(&s);
}

static void body_too_large(void **state)
{
    struct tsrv s;
    struct tclient c;
    struct tr_httpd_opts o = {.max_body_bytes = 1024};
    assert_int_equal(tsrv_start(&s, &o), 0);

    /* Declared length over the cap. */
    assert_int_equal(tc_connect(&c, s.port), 0);
    tc_sends(&c, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100000000\r\n\r\nxxxx");
    assert_int_equal(tc_wait(&c, 1), 1);
    assert_int_equal(c.r[0].status, 413);
    assert_true(tc_wait_eof(&c));
    tc_close(&c);

    /* Chunked body that grows over the cap. */
    assert_int_equal(tc_connect(&c, s.port), 0);
    tc_sends(&c, "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
    char chunk[600];
    memset(chunk, 'y', sizeof(chunk));
    for (int i = 0; i < 3; i++) {
        char sz[16];
        snprintf(sz, sizeof(sz), "%zx\r\n", sizeof(chunk));
        tc_sends(&c, sz);
        tc_send(&c, chunk, sizeof(chunk));
        tc_sends(&c, "\r\n");
    }
    assert_int_equal(tc_wait(&c, 1), 1);
    assert_int_equal(c.r[0].status, 413);
    assert_true(tc_wait_eof(&c));
    tc_close(&c);

    /* Within the cap it works. */
    assert_int_equal(tc_connect(&c, s.port), 0);
    tc_sends(&c, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc");
    assert_int_equal(tc_wait(&c, 1), 1);
    assert_string_equal(c.r[0].body, "abc");
    tc_close(&c);
    tsrv_stop(&s);
}

static void garbage_and_big_headers(void **state)
{
    struct tsrv s;
    struct tclient c, d;
    struct tr_httpd_opts o = {.max_header_bytes = 2048};
    assert_int_equal(tsrv_start(&s, &o), 0);

    assert_int_equal(tc_connect(&d, s.port), 0); /* another client, kept open */
    assert_int_equal(tc_connect(&c, s.port), 0);
    tc_sends(&c, "GARBAGE\x01\x02 nonsense\r\n\r\n");
    assert_int_equal(tc_wait(&c, 1), 1);
    assert_int_equal(c.r[0].status, 400);
    assert_true(tc_wait_eof(&c));
    tc_close(&c);

    assert_int_equal(tc_connect(&c, s.port), 0);
    tc_sends(&c, "GET / HTTP/1.1\r\nX-Big: ");
    char big[4096];
    memset(big, 'a', sizeof(big));
    tc_send(&c, big, sizeof(big));
    tc_sends(&c, "\r\n\r\n");
    assert_int_equal(tc_wait(&c, 1), 1);
    assert_int_equal(c.r[0].status, 431);
    assert_true(tc_wait_eof(&c));
    tc_close(&c);

    /* The server keeps serving others. */
    tc_sends(&d, "GET /hello?i=9 HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_int_equal(tc_wait(&d, 1), 1);
    assert_string_equal(d.r[0].body, "hello 9");
    tc_close(&d);
    tsrv_stop(&s);
    assert_int_equal(s.stats.bad_requests, 2);
}

static void slowloris(void **state)
{
    struct tsrv s;
    struct tclient slow, fast;
    struct tr_httpd_opts o = {.request_timeout_ms = 500};
    assert_int_equal(tsrv_start(&s, &o), 0);

    assert_int_equal(tc_connect(&slow, s.port), 0);
    tc_sends(&slow, "GET /hello HTTP/1.1\r\nHost: t\r\nX-Slow: 1");
    /* Another client is served while the slow one dangles. */
    assert_int_equal(tc_connect(&fast, s.port), 0);
    for (int i = 0; i < 3; i++) {
        char req[64];
        snprintf(req, sizeof(req), "GET /hello?i=%d HTTP/1.1\r\nHost: t\r\n\r\n", i);
        tc_sends(&fast, req);
        assert_int_equal(tc_wait(&fast, i + 1), i + 1);
    }
    /* Keep trickling bytes: it must not help. */
    tc_sends(&slow, "2");
    assert_int_equal(tc_wait(&slow, 1), 1);
    assert_int_equal(slow.r[0].status, 408);
    assert_true(tc_wait_eof(&slow));
    assert_false(fast.eof);
    tc_close(&slow);
    tc_close(&fast);
    tsrv_stop(&s);
}

static void connection_limit(void **state)
{
    struct tsrv s;
    struct tclient c[4], extra;
    struct tr_httpd_opts o = {.max_connections = 4};
    assert_int_equal(tsrv_start(&s, &o), 0);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(tc_connect(&c[i], s.port), 0);
        tc_sends(&c[i], "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_int_equal(tc_wait(&c[i], 1), 1);
    }
    /* The fifth is accepted and closed without an answer. */
    assert_int_equal(tc_connect(&extra, s.port), 0);
    tc_sends(&extra, "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_true(tc_wait_eof(&extra));
    assert_int_equal(extra.n, 0);
    tc_close(&extra);

    /* Once one leaves, a new one gets in (poll: the server notices the close
     * asynchronously). */
    tc_close(&c[0]);
    int served = 0;
    for (int attempt = 0; attempt < 10000 && !served; attempt++) {
        assert_int_equal(tc_connect(&extra, s.port), 0);
        tc_sends(&extra, "GET /hello?i=7 HTTP/1.1\r\nHost: t\r\n\r\n");
        served = tc_wait(&extra, 1) == 1;
        tc_close(&extra);
    }
    assert_true(served);
    for (int i = 1; i < 4; i++)
        tc_close(&c[i]);
    tsrv_stop(&s);
    assert_true(s.stats.refused >= 1);
}

static void async_response(void **state)
{
    struct tsrv s;
    struct tclient a, b;
    assert_int_equal(tsrv_start(&s, NULL), 0);
    assert_int_equal(tc_connect(&a, s.port), 0);
    assert_int_equal(tc_connect(&b, s.port), 0);
    tc_sends(&a, "GET /delay?ms=300&i=1 HTTP/1.1\r\nHost: t\r\n\r\n");
    tc_sends(&b, "GET /hello?i=2 HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_int_equal(tc_wait(&b, 1), 1);
    assert_string_equal(b.r[0].body, "hello 2");
    assert_int_equal(tc_wait(&a, 1), 1);
    assert_string_equal(a.r[0].body, "delayed 1");
    tc_close(&a);
    tc_close(&b);
    tsrv_stop(&s);
}

static void streamed_response(void **state)
{
    struct tsrv s;
    struct tclient c;
    assert_int_equal(tsrv_start(&s, NULL), 0);
    assert_int_equal(tc_connect(&c, s.port), 0);
    tc_sends(&c, "GET /stream?n=5&ms=5 HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_int_equal(tc_wait(&c, 1), 1);
    assert_true(c.r[0].chunked);
    assert_string_equal(c.r[0].body, "chunk 0\nchunk 1\nchunk 2\nchunk 3\nchunk 4\n");
    /* Still keep-alive after a chunked response. */
    tc_sends(&c, "GET /hello?i=3 HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_int_equal(tc_wait(&c, 2), 2);
    assert_string_equal(c.r[1].body, "hello 3");
    tc_close(&c);
    tsrv_stop(&s);
    assert_int_equal(atomic_load(&s.streams_ended), 1);
}

static void client_gone(void **state)
{
    struct tsrv s;
    struct tclient c;
    assert_int_equal(tsrv_start(&s, NULL), 0);
    assert_int_equal(tc_connect(&c, s.port), 0);
    tc_sends(&c, "GET /sse HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n");
    assert_true(tc_wait_raw(&c, "data: tick\n\ndata: tick\n\n"));
    assert_true(strstr(c.raw, "Content-Type: text/event-stream\r\n") != NULL);
    assert_int_equal(atomic_load(&s.gone), 0);
    tc_close(&c);
    WAIT_FOR(atomic_load(&s.gone) == 1);
    assert_int_equal(atomic_load(&s.gone), 1);
    tsrv_stop(&s);
}

static void slow_reader_disconnected(void **state)
{
    struct tsrv s;
    struct tclient c;
    struct tr_httpd_opts o = {.max_write_queue = 256 * 1024};
    assert_int_equal(tsrv_start(&s, &o), 0);
    assert_int_equal(tc_connect(&c, s.port), 0);
    tc_sends(&c, "GET /flood HTTP/1.1\r\nHost: t\r\n\r\n");
    /* Never read: the server's queue passes its cap and it hangs up. */
    WAIT_FOR(atomic_load(&s.gone) == 1);
    assert_int_equal(atomic_load(&s.gone), 1);
    tc_close(&c);
    tsrv_stop(&s);
}

static void upgrade(void **state)
{
    struct tsrv s;
    struct tclient c;
    assert_int_equal(tsrv_start(&s, NULL), 0);
    assert_int_equal(tc_connect(&c, s.port), 0);
    tc_sends(&c, "GET /upgrade HTTP/1.1\r\nHost: t\r\nUpgrade: test\r\nConnection: Upgrade\r\n\r\nEXTRA");
    assert_true(tc_wait_raw(&c, "upgraded:EXTRA"));
    assert_true(strncmp(c.raw, "HTTP/1.1 101 Switching Protocols\r\n", 34) == 0);
    assert_true(tc_wait_eof(&c));
    tc_close(&c);
    tsrv_stop(&s);
}

static void close_with_pending(void **state)
{
    struct tsrv s;
    struct tclient a, b, idle;
    assert_int_equal(tsrv_start(&s, NULL), 0);
    assert_int_equal(tc_connect(&a, s.port), 0);
    assert_int_equal(tc_connect(&b, s.port), 0);
    assert_int_equal(tc_connect(&idle, s.port), 0);
    tc_sends(&a, "GET /delay?ms=600000 HTTP/1.1\r\nHost: t\r\n\r\n");
    tc_sends(&b, "GET /sse HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_true(tc_wait_raw(&b, "data: tick"));
    WAIT_FOR(atomic_load(&s.requests) == 2);
    tsrv_stop(&s);
    assert_int_equal(atomic_load(&s.gone), 2);
    assert_true(tc_wait_eof(&a));
    assert_true(tc_wait_eof(&b));
    assert_true(tc_wait_eof(&idle));
    tc_close(&a);
    tc_close(&b);
    tc_close(&idle);
}

static void http10_and_head(void **state)
{
    struct tsrv s;
    struct tclient c;
    assert_int_equal(tsrv_start(&s, NULL), 0);
    /* HTTP/1.0 without keep-alive: answer, then close. */
    assert_int_equal(tc_connect(&c, s.port), 0);
    tc_sends(&c, "GET /hello?i=1 HTTP/1.0\r\n\r\n");
    assert_int_equal(tc_wait(&c, 1), 1);
    assert_string_equal(c.r[0].body, "hello 1");
    assert_true(tc_wait_eof(&c));
    tc_close(&c);
    /* HEAD: headers with the length, no body. */
    assert_int_equal(tc_connect(&c, s.port), 0);
    tc_sends(&c, "HEAD /hello?i=1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_true(tc_wait_eof(&c));
    assert_true(strstr(c.raw, "Content-Length: 7\r\n") != NULL);
    assert_true(strstr(c.raw, "hello") == NULL);
    tc_close(&c);
    tsrv_stop(&s);
}

/* A client that half-closes once its request is sent still gets the whole
 * answer, even the part the server could not write at once (found by
 * tests/fuzz/httpd). */
static void half_close_gets_whole_answer(void **state)
{
    enum { N = 8 * 1024 * 1024 }; /* well over what loopback buffers */
    struct tsrv s;
    struct tclient c;
    char req[64];
    assert_int_equal(tsrv_start(&s, NULL), 0);
    assert_int_equal(tc_connect(&c, s.port), 0);
    snprintf(req, sizeof(req), "GET /big?n=%d HTTP/1.1\r\nHost: t\r\n\r\n", N);
    tc_sends(&c, req);
    assert_int_equal(shutdown(c.fd, SHUT_WR), 0);
    assert_int_equal(tc_wait(&c, 1), 1);
    assert_int_equal(c.r[0].status, 200);
    assert_int_equal(c.r[0].body_len, N);
    assert_true(tc_wait_eof(&c));
    tc_close(&c);
    tsrv_stop(&s);
}

/* A client that never reads an answer the server closes after (Connection:
 * close, more than the socket buffers hold) is dropped after the idle
 * timeout, not held with its unsent output forever. Seen from the server's
 * connection count, polled through requests on a second connection. */
static void non_reader_is_dropped(void **state)
{
    enum { N = 8 * 1024 * 1024 };
    struct tsrv s;
    struct tclient a, b;
    struct tr_httpd_opts o = {.idle_timeout_ms = 100};
    char req[96];
    assert_int_equal(tsrv_start(&s, &o), 0);
    assert_int_equal(tc_connect(&a, s.port), 0);
    snprintf(req, sizeof(req), "GET /big?n=%d HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", N);
    tc_sends(&a, req);
    int alone = 0;
    for (int i = 0; i < 2000 && !alone; i++) {
        assert_int_equal(tc_connect(&b, s.port), 0);
        tc_sends(&b, "GET /hello?i=1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        assert_int_equal(tc_wait(&b, 1), 1);
        tc_close(&b);
        alone = atomic_load(&s.conns_seen) == 1; /* b's own: a is gone */
        if (!alone)
            uv_sleep(10);
    }
    assert_true(alone);
    /* What reaches a is what the kernel held: not the whole answer. */
    assert_int_equal(tc_wait(&a, 1), 0);
    assert_true(a.eof);
    tc_close(&a);
    tsrv_stop(&s);
}

/* A client reading a long answer slowly but steadily is not idle: it gets
 * all of it, though reading takes longer than the idle timeout (found by
 * tests/fuzz/httpd). */
static void slow_reader_gets_whole_answer(void **state)
{
    enum { N = 8 * 1024 * 1024, CHUNK = 32768 };
    struct tsrv s;
    struct tclient c;
    struct tr_httpd_opts o = {.idle_timeout_ms = 1000};
    char req[64];
    char *all = malloc(N + 4096);
    size_t len = 0;
    const char *eoh = NULL;
    assert_int_equal(tsrv_start(&s, &o), 0);
    assert_int_equal(tc_connect(&c, s.port), 0);
    snprintf(req, sizeof(req), "GET /big?n=%d HTTP/1.1\r\nHost: t\r\n\r\n", N);
    tc_sends(&c, req);
    /* 32 KiB every 8 ms: two seconds or more in all, twice the idle timeout;
     * a stall of the reader over a second would look idle. */
    for (;;) {
        size_t room = N + 4096 - len;
        ssize_t n = recv(c.fd, all + len, room < CHUNK ? room : CHUNK, 0);
        if (n <= 0)
            break;
        len += (size_t)n;
        if (!eoh)
            eoh = memmem(all, len, "\r\n\r\n", 4);
        if (eoh && len - (size_t)(eoh + 4 - all) >= N)
            break;
        usleep(8000);
    }
    assert_non_null(eoh);
    assert_int_equal(len - (size_t)(eoh + 4 - all), N);
    free(all);
    tc_close(&c);
    tsrv_stop(&s);
}

/* The app gets HTTP/1.x only, and http_minor 0 or 1; an HTTP/1.0 client
 * gets no "100 Continue"; a header value with a NUL is refused (found by
 * tests/fuzz/httpd). */
static void versions_and_bad_values(void **state)
{
    struct tsrv s;
    struct tclient c;
    assert_int_equal(tsrv_start(&s, NULL), 0);

    assert_int_equal(tc_connect(&c, s.port), 0);
    tc_sends(&c, "GET /hello?i=1 HTTP/2.0\r\nHost: t\r\n\r\n");
    assert_int_equal(tc_wait(&c, 1), 1);
    assert_int_equal(c.r[0].status, 505);
    assert_true(tc_wait_eof(&c));
    tc_close(&c);

    /* HTTP/1.7 is served as HTTP/1.1 (keep-alive, chunked streams). */
    assert_int_equal(tc_connect(&c, s.port), 0);
    tc_sends(&c, "GET /stream?n=1&ms=1 HTTP/1.7\r\nHost: t\r\n\r\n");
    assert_int_equal(tc_wait(&c, 1), 1);
    assert_true(c.r[0].chunked);
    assert_false(c.eof);
    tc_close(&c);

    assert_int_equal(tc_connect(&c, s.port), 0);
    tc_sends(&c, "POST /echo HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc");
    assert_true(tc_wait_eof(&c));
    assert_true(strncmp(c.raw, "HTTP/1.1 200 OK\r\n", 17) == 0);
    assert_true(strstr(c.raw, "100 Continue") == NULL);
    tc_close(&c);

    static const char nul[] = "GET /hello?i=2 HTTP/1.1\r\nHost:\0t\r\n\r\n";
    assert_int_equal(tc_connect(&c, s.port), 0);
    tc_send(&c, nul, sizeof(nul) - 1);
    assert_int_equal(tc_wait(&c, 1), 1);
    assert_int_equal(c.r[0].status, 400);
    assert_true(tc_wait_eof(&c));
    tc_close(&c);

    tsrv_stop(&s);
    assert_int_equal(s.stats.requests, 2);
    assert_int_equal(s.stats.bad_requests, 2);
}

static void stream_no_body_cb(struct tr_httpd_req *req, void *ud)
{
    int status = strcmp(req->path, "/304") == 0 ? 304 : 204;
    assert_int_equal(tr_httpd_stream_start(req, status, NULL, 0, TR_HTTPD_CHUNKED), 0);
    assert_int_equal(tr_httpd_stream_write(req, "dropped", 7), 0);
    assert_int_equal(tr_httpd_stream_end(req), 0);
}

/* A streamed 204 or 304 is sent without body or Transfer-Encoding: its
 * bytes would read as the next response (found by tests/fuzz/httpd). The
 * server runs on this thread's loop, turned while the socket is read. */
static void stream_no_body_status(void **state)
{
    static const char reqs[] = "GET /204 HTTP/1.1\r\nHost: t\r\n\r\nGET /304 HTTP/1.1\r\nHost: t\r\n\r\n";
    static const char want[] = "HTTP/1.1 204 No Content\r\nConnection: keep-alive\r\n\r\n"
                               "HTTP/1.1 304 Not Modified\r\nConnection: keep-alive\r\n\r\n";
    uv_loop_t loop;
    struct tr_httpd *h = NULL;
    struct tr_httpd_opts o = {.on_request = stream_no_body_cb};
    struct sockaddr_in sa = {.sin_family = AF_INET};
    char got[512];
    size_t len = 0;
    int eof = 0;
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(tr_httpd_start(&loop, &o, &h, NULL), 0);
    sa.sin_port = htons((uint16_t)tr_httpd_port(h));
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(send(fd, reqs, sizeof(reqs) - 1, 0), (ssize_t)(sizeof(reqs) - 1));
    assert_int_equal(shutdown(fd, SHUT_WR), 0);
    for (int i = 0; i < 1000000 && !eof && len < sizeof(got); i++) {
        uv_run(&loop, UV_RUN_NOWAIT);
        ssize_t n = recv(fd, got + len, sizeof(got) - len, MSG_DONTWAIT);
        if (n > 0)
            len += (size_t)n;
        else if (n == 0)
            eof = 1;
        else
            assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
    }
    assert_true(eof);
    assert_int_equal(len, sizeof(want) - 1);
    assert_memory_equal(got, want, len);
    close(fd);
    tr_httpd_close(h, NULL, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void bind_failure(void **state)
{
    uv_loop_t loop;
    struct tr_httpd *h = NULL, *h2 = NULL;
    struct tr_err err;
    struct tsrv dummy;
    (void)dummy;
    uv_loop_init(&loop);
    struct tr_httpd_opts o = {.on_request = (void (*)(struct tr_httpd_req *, void *))1};
    assert_int_equal(tr_httpd_start(&loop, &o, &h, &err), 0);
    o.port = tr_httpd_port(h);
    assert_int_equal(tr_httpd_start(&loop, &o, &h2, &err), TR_ESYS);
    assert_true(strstr(err.msg, "httpd listen") != NULL);
    tr_httpd_close(h, NULL, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(keepalive_pipelined),
        cmocka_unit_test(deep_pipeline),
        cmocka_unit_test(garbage_storm),
        cmocka_unit_test(body_too_large),
        cmocka_unit_test(garbage_and_big_headers),
        cmocka_unit_test(slowloris),
        cmocka_unit_test(connection_limit),
        cmocka_unit_test(async_response),
        cmocka_unit_test(streamed_response),
        cmocka_unit_test(client_gone),
        cmocka_unit_test(slow_reader_disconnected),
        cmocka_unit_test(upgrade),
        cmocka_unit_test(close_with_pending),
        cmocka_unit_test(http10_and_head),
        cmocka_unit_test(half_close_gets_whole_answer),
        cmocka_unit_test(slow_reader_gets_whole_answer),
        cmocka_unit_test(non_reader_is_dropped),
        cmocka_unit_test(versions_and_bad_values),
        cmocka_unit_test(stream_no_body_status),
        cmocka_unit_test(bind_failure),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
