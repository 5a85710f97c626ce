/* libFuzzer target for runtime/httpd.c, the HTTP/1.1 server of a node.
 *
 * Per input, a tr_httpd runs on a fresh libuv loop on 127.0.0.1 (port 0)
 * with small limits, and a libuv TCP client on the same loop connects, sends
 * the payload in up to three writes, half-closes, and reads until the server
 * closes. Then the server and the loop are closed with nothing left open.
 *
 * Input: bytes 0 and 1 hold flags, bytes 2 and 3 the split points; the rest
 * is what the client sends, cut at len * byte2 / 256 and len * byte3 / 256.
 * Byte 0:
 *   bit 0     all writes and the half-close go out at once (the server may see
 *             EOF while the app holds a request); otherwise each write and the
 *             half-close wait until server and app are idle ("quiescent")
 *   bits 1-2  max_header_bytes 40 / 160 / 600 / 3000
 *   bits 3-4  max_body_bytes 3 / 40 / 400 / 100000
 *   bit 5     request and idle timeouts of 1 ms (408, idle close) instead of
 *             a minute
 *   bit 6     max_write_queue 1 MiB instead of 48 KiB
 * Byte 1:
 *   bit 0     the client's receive buffer is small, so the server's writes
 *             queue up (write callbacks, drain, the queue cap)
 *   bit 1     another client connects and stays idle: it is served (bit 2
 *             clear, max_connections 4) or, with bit 2 set, refused
 *             (max_connections 1) unless the first connection is gone; the
 *             server closes it on tr_httpd_close (or when idle, with bit 5)
 *
 * The app answers by the second character of the path ("/d..."):
 *   d  respond with the body echoed, from a zero-delay timer
 *   e  respond with the body echoed
 *   s  chunked stream: the body in three writes and "end\n"
 *   S  the same from timer ticks
 *   r  raw stream (ends by closing)
 *   w  chunked stream of big writes paced by tr_httpd_on_drain
 *   f  chunked stream of big writes all at once (may overflow the queue)
 *   a  tr_httpd_abort
 *   A  chunked stream started, one write, then tr_httpd_abort
 *   u  tr_httpd_upgrade if the request asks for it (U: from a timer)
 *   other  respond with a line describing the request, echoing X-Echo
 * The status is taken from a query of three digits ("?404") when it is
 * 200..999, else 200.
 *
 * Checked, besides ASan/UBSan/LSan and a 3 s stall guard:
 *   - each request the app gets is the next one that a reference parse of
 *     the whole payload in one piece finds (http-parser with the limits the
 *     server documents: url + header names + values <= max_header_bytes, at
 *     most 128 headers, body <= max_body_bytes, HTTP/1.x, no NUL in values):
 *     same method, target, headers (values trimmed), body, version (1.2 and
 *     up served as 1.1) and upgrade flag. Names and values have no CR or LF
 *     (nor NUL: lengths are compared), a name is bytes the client sent
 *     before a colon, path, query and tr_httpd_header agree with the target
 *     and headers, and invalid API calls are refused with TR_EINVAL;
 *   - what the client reads is, strictly, one response per request the app
 *     saw, in order, framed as the app answered: Content-Length matching the
 *     body, chunked framing with its terminator, raw to EOF; no body (nor
 *     Transfer-Encoding) for 204 and 304, no body for HEAD; the app's
 *     headers first; one Connection header, keep-alive exactly when the
 *     request allowed it; "100 Continue" exactly before the answers to
 *     HTTP/1.1 requests that expect it; nothing after a "Connection: close"
 *     answer, an upgrade or an abort. Then at most one error response
 *     (400/408/413/431/505, JSON, close), only where the reference parse
 *     failed with that status (or with 400 where the server, reading in
 *     pieces, saw a limit passed first; 408 only with the 1 ms timeouts);
 *   - responses are cut short only when the connection went down under the
 *     app (abort, EOF while it held a request, the write queue cap), the
 *     client saw a reset, or a 1 ms idle timeout met a big answer queued
 *     behind the small receive buffer: a half-close or a slow reader does
 *     not lose finished answers;
 *   - in quiescent mode (no 1 ms timeouts, no connection lost under the app)
 *     the app sees exactly the requests the reference predicts and the
 *     client gets the predicted error response;
 *   - the bytes handed over on upgrade are those that follow the request;
 *   - the server drops the connection once the client has gone (keeping an
 *     idle extra client's), and its stats agree (accepted, refused,
 *     connections, requests, bad_requests);
 *   - every request ends: finished by the app or closed by the server.
 *
 * The sockets live in a network namespace of the process's own where the
 * system allows it (see private_netns). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <http_parser.h>
#include <uv.h>

#include "runtime/runtime.h"
#include "tests/fuzz/fuzz.h"

#define F_IMMEDIATE 0x01u
#define F_TIMEOUT 0x20u
#define F_BIG_QUEUE 0x40u
#define F2_SMALL_RCVBUF 0x01u
#define F2_EXTRA 0x02u
#define F2_ONE_CONN 0x04u

static const size_t header_caps[4] = {40, 160, 600, 3000};
static const size_t body_caps[4] = {3, 40, 400, 100000};

#define MODEL_MAX_HEADERS 128 /* runtime/httpd.c MAX_HEADERS: one more is a 431 */
#define GUARD_MS 3000         /* a stall: every exchange here ends in a few ms */
#define QUIET_ITERS 4         /* loop turns with nothing pending = quiescent */
#define TIMEOUT_PAUSE_MS 3    /* with 1 ms timeouts, before the half-close */
/* The w and f streams: 8 pieces of 32 KiB, or of 448 KiB with the small
 * receive buffer (loopback takes ~3 MB into its buffers before a write
 * would block, so the rest queues: within 1 MiB, over 48 KiB); past the
 * budget per input, 7-byte pieces. */
#define BIG_PIECE 32768
#define BIG_PIECE_SLOW (448u * 1024)
#define BIG_PIECES 8
#define BIG_BUDGET (1024u * 1024)
#define BIG_BUDGET_SLOW (8u * 1024 * 1024)
#define RX_CAP (16u * 1024 * 1024)

static const char CONTINUE[] = "HTTP/1.1 100 Continue\r\n\r\n";
static const char UPG_HEAD[] = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: fuzz\r\nConnection: Upgrade\r\n\r\n";
static const char CT_TEXT[] = "Content-Type: text/plain";
static const char CT_JSON_LINE[] = "Content-Type: application/json\r\n";

static char big[BIG_PIECE_SLOW];

/* ------------------------------------------------------------------------ */
/* The reference parse: the whole payload through http-parser in one piece,   */
/* with the limits the server documents.                                      */

struct rhdr {
    size_t name_off, name_len, value_off, value_len; /* into rmsg.text */
};

struct rmsg {
    struct tr_buf text; /* url, then each name and value as the parser gave them */
    size_t url_len;
    struct rhdr *hdrs;
    size_t n_hdrs, cap_hdrs;
    int last_was_value;
    size_t head_bytes; /* url + names + values */
    struct tr_buf body;
    int expect_continue; /* headers complete, HTTP/1.1, Expect: 100-continue */
    size_t end;          /* payload offset just past the message */
    int method, major, minor, keep_alive, upgrade;
};

struct model {
    size_t max_header, max_body;
    struct rmsg *m; /* m[0..n) complete; m[n] begun when in_msg */
    size_t n, cap;
    int in_msg, completed, cb_status;
    int status; /* the server's answer to m[n] when parsing failed there; 0 if none */
};

static struct model *mdl(http_parser *p)
{
    return p->data;
}

static struct rmsg *cur(struct model *md)
{
    return &md->m[md->n];
}

static int m_begin(http_parser *p)
{
    struct model *md = mdl(p);
    if (md->n == md->cap) {
        md->cap = md->cap ? 2 * md->cap : 8;
        md->m = realloc(md->m, md->cap * sizeof(*md->m));
        CHECK(md->m != NULL);
    }
    memset(cur(md), 0, sizeof(struct rmsg));
    md->in_msg = 1;
    return 0;
}

static int m_room(struct model *md, size_t n)
{
    struct rmsg *r = cur(md);
    r->head_bytes += n;
    if (r->head_bytes > md->max_header) {
        md->cb_status = 431;
        return 0;
    }
    return 1;
}

static int m_url(http_parser *p, const char *at, size_t n)
{
    struct model *md = mdl(p);
    if (!m_room(md, n))
        return -1;
    tr_buf_add(&cur(md)->text, at, n);
    cur(md)->url_len += n;
    return 0;
}

static int m_field(http_parser *p, const char *at, size_t n)
{
    struct model *md = mdl(p);
    struct rmsg *r = cur(md);
    if (!m_room(md, n))
        return -1;
    if (r->n_hdrs == 0 || r->last_was_value) {
        if (r->n_hdrs == MODEL_MAX_HEADERS) {
            md->cb_status = 431;
            return -1;
        }
        if (r->n_hdrs == r->cap_hdrs) {
            r->cap_hdrs = r->cap_hdrs ? 2 * r->cap_hdrs : 8;
            r->hdrs = realloc(r->hdrs, r->cap_hdrs * sizeof(*r->hdrs));
            CHECK(r->hdrs != NULL);
        }
        struct rhdr *h = &r->hdrs[r->n_hdrs++];
        memset(h, 0, sizeof(*h));
        h->name_off = r->text.len;
        r->last_was_value = 0;
    }
    tr_buf_add(&r->text, at, n);
    r->hdrs[r->n_hdrs - 1].name_len += n;
    return 0;
}

static int m_value(http_parser *p, const char *at, size_t n)
{
    struct model *md = mdl(p);
    struct rmsg *r = cur(md);
    if (!m_room(md, n))
        return -1;
    CHECK(r->n_hdrs > 0);
    if (memchr(at, '\0', n))
        return -1; /* RFC 9110 5.5: a value with NUL is refused (400) */
    struct rhdr *h = &r->hdrs[r->n_hdrs - 1];
    if (!r->last_was_value) {
        h->value_off = r->text.len;
        r->last_was_value = 1;
    }
    tr_buf_add(&r->text, at, n);
    h->value_len += n;
    return 0;
}

static int m_headers_complete(http_parser *p)
{
    struct model *md = mdl(p);
    struct rmsg *r = cur(md);
    r->major = p->http_major;
    r->minor = p->http_minor;
    if (r->major != 1) {
        md->cb_status = 505; /* the app is promised HTTP/1.x */
        return -1;
    }
    if (p->content_length != ULLONG_MAX && p->content_length > md->max_body && !(p->flags & F_CHUNKED)) {
        md->cb_status = 413;
        return -1;
    }
    /* RFC 9110 10.1.1: an HTTP/1.0 request's 100-continue is ignored. */
    for (size_t i = 0; i < r->n_hdrs && r->major == 1 && r->minor >= 1; i++) {
        const struct rhdr *h = &r->hdrs[i];
        if (h->name_len == 6 && strncasecmp(r->text.p + h->name_off, "expect", 6) == 0 && h->value_len >= 12 &&
            strncasecmp(r->text.p + h->value_off, "100-continue", 12) == 0)
            r->expect_continue = 1;
    }
    return 0;
}

static int m_body(http_parser *p, const char *at, size_t n)
{
    struct model *md = mdl(p);
    struct rmsg *r = cur(md);
    if (r->body.len + n > md->max_body) {
        md->cb_status = 413;
        return -1;
    }
    tr_buf_add(&r->body, at, n);
    return 0;
}

static int m_complete(http_parser *p)
{
    struct model *md = mdl(p);
    md->completed = 1;
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings model_settings = {
    .on_message_begin = m_begin,
    .on_url = m_url,
    .on_header_field = m_field,
    .on_header_value = m_value,
    .on_headers_complete = m_headers_complete,
    .on_body = m_body,
    .on_message_complete = m_complete,
};

/* Parse as the server would: one message at a time, stopping after an error,
 * an upgrade or a message that does not keep the connection alive. */
static void model_run(struct model *md, const char *in, size_t len)
{
    http_parser p;
    http_parser_init(&p, HTTP_REQUEST);
    p.data = md;
    size_t off = 0;
    while (off < len) {
        http_parser_pause(&p, 0);
        off += http_parser_execute(&p, &model_settings, in + off, len - off);
        if (md->completed) {
            struct rmsg *r = cur(md);
            md->completed = 0;
            md->in_msg = 0;
            r->end = off;
            r->method = p.method;
            r->keep_alive = http_should_keep_alive(&p);
            r->upgrade = p.upgrade;
            md->n++;
            if (r->upgrade || !r->keep_alive)
                return;
            continue;
        }
        if (HTTP_PARSER_ERRNO(&p) != HPE_OK) {
            md->status = md->cb_status ? md->cb_status : 400;
            return;
        }
    }
}

static void model_free(struct model *md)
{
    size_t n = md->n + (md->in_msg ? 1 : 0);
    for (size_t i = 0; i < n; i++) {
        tr_buf_free(&md->m[i].text);
        tr_buf_free(&md->m[i].body);
        free(md->m[i].hdrs);
    }
    free(md->m);
}

/* ------------------------------------------------------------------------ */
/* The exchange.                                                              */

enum outcome {
    OC_PENDING,        /* with the app (or an upgrade waiting for its callback) */
    OC_DONE,           /* finished by the app */
    OC_ECLOSED,        /* finished by the app, which was told TR_ECLOSED */
    OC_CLOSED,         /* its close callback ran */
    OC_UPGRADE_FAILED, /* the upgrade callback got no socket */
};

enum shape { SH_NONE, SH_RESPOND, SH_CHUNKED, SH_RAW, SH_UPGRADE };

struct fz;

/* One request the app got, and what it answered. */
struct rec {
    struct fz *f;
    struct tr_httpd_req *req; /* while the app holds it */
    size_t idx;
    char kind;
    int status;
    enum shape shape;
    int head_only, http10;
    int no_body; /* HEAD, or a status that has no body (204, 304) */
    struct tr_buf app_head; /* the app's header lines, each with CRLF */
    struct tr_buf body;     /* body bytes handed over (a refused write may be partly out) */
    enum outcome outcome;
    int busy; /* deferred work pending */
    uv_timer_t timer;
    int timer_open;
    int step;
    struct tr_buf rest; /* upgrade: bytes handed over */
    int upgraded;
};

/* A socket the app took over. */
struct upg {
    struct fz *f;
    uv_tcp_t *tcp;
    uv_write_t w;
    char *out;
    int writing, eof, closing;
    char rbuf[4096];
};

struct fz {
    uv_loop_t loop;
    struct tr_httpd *srv;
    int srv_freed;
    unsigned flags, flags2;
    size_t max_header, max_body;
    char *in; /* the payload, in a buffer of exactly its size */
    size_t len;
    size_t cut[4]; /* segment k is in[cut[k], cut[k + 1]) */
    size_t n_seg, seg_next;
    struct model md;

    uv_tcp_t cli;
    uv_connect_t conn_req;
    uv_write_t wreq[3];
    uv_shutdown_t shut_req;
    int cli_closing, cli_closed, cli_eof, cli_reset;
    unsigned writes_pending;
    struct tr_buf rx;
    uv_idle_t idle;
    int quiet;
    uv_timer_t pause; /* TIMEOUT_PAUSE_MS */
    uv_timer_t guard;
    int guard_fired;

    /* The extra idle client (F2_EXTRA). */
    uv_tcp_t ext;
    uv_connect_t ext_req;
    uv_idle_t ext_wait; /* F2_ONE_CONN: until the first connection is accepted */
    int ext_started, ext_connected, ext_closing, ext_closed;
    int port;

    struct rec **recs;
    size_t n_recs, cap_recs;
    unsigned busy;    /* recs with deferred work pending */
    unsigned handles; /* app timers and taken-over sockets still open */
    size_t big_bytes;
    int conn_lost; /* the server dropped the connection under the app */
};

static int is_stream_kind(char k)
{
    return k == 's' || k == 'S' || k == 'w' || k == 'f';
}

static char kind_of_url(const char *url, size_t n)
{
    return n >= 2 && url[0] == '/' && url[1] != '?' ? url[1] : 0;
}

static int status_of(const char *query)
{
    if (query[0] >= '0' && query[0] <= '9' && query[1] >= '0' && query[1] <= '9' && query[2] >= '0' &&
        query[2] <= '9' && !(query[3] >= '0' && query[3] <= '9')) {
        int v = (query[0] - '0') * 100 + (query[1] - '0') * 10 + (query[2] - '0');
        if (v >= 200)
            return v;
    }
    return 200;
}

/* ---- the app ------------------------------------------------------------ */

static void rec_timer_closed(uv_handle_t *h)
{
    struct rec *r = h->data;
    r->f->handles--;
}

static void rec_set_busy(struct rec *r, int on)
{
    if (on && !r->busy)
        r->f->busy++;
    if (!on && r->busy)
        r->f->busy--;
    r->busy = on;
}

/* The app is done with r's deferred work. */
static void rec_settle(struct rec *r)
{
    rec_set_busy(r, 0);
    if (r->timer_open) {
        r->timer_open = 0;
        uv_timer_stop(&r->timer);
        uv_close((uv_handle_t *)&r->timer, rec_timer_closed);
    }
}

static void rec_defer(struct rec *r, uv_timer_cb cb)
{
    if (!r->timer_open) {
        uv_timer_init(&r->f->loop, &r->timer);
        r->timer.data = r;
        r->timer_open = 1;
        r->f->handles++;
    }
    rec_set_busy(r, 1);
    uv_timer_start(&r->timer, cb, 0, 0);
}

static void rec_close_cb(struct tr_httpd_req *req, void *arg)
{
    struct rec *r = arg;
    CHECK(r->req == req && r->outcome == OC_PENDING);
    r->req = NULL;
    r->outcome = OC_CLOSED;
    if (r->kind != 'a' && r->kind != 'A')
        r->f->conn_lost = 1;
    rec_settle(r);
}

static void answer_respond(struct rec *r, const void *body, size_t len)
{
    struct tr_buf echo = {0};
    const char *hdrs[2] = {CT_TEXT, NULL};
    size_t nh = 1;
    const char *xe = tr_httpd_header(r->req, "x-echo");
    if (xe) {
        tr_buf_printf(&echo, "X-Echo: %s", xe);
        hdrs[nh++] = echo.p;
    }
    r->shape = SH_RESPOND;
    for (size_t i = 0; i < nh; i++) {
        tr_buf_adds(&r->app_head, hdrs[i]);
        tr_buf_add(&r->app_head, "\r\n", 2);
    }
    tr_buf_add(&r->body, body, len); /* body may be the request's: freed by the answer */
    int rv = tr_httpd_respond(r->req, r->status, hdrs, nh, body, len);
    r->req = NULL;
    CHECK(rv == 0 || rv == TR_ECLOSED); /* X-Echo is a value with no CR/LF */
    r->outcome = rv == 0 ? OC_DONE : OC_ECLOSED;
    r->f->conn_lost |= rv != 0;
    tr_buf_free(&echo);
}

static void answer_default(struct rec *r)
{
    struct tr_buf t = {0};
    tr_buf_printf(&t, "%s %s h=%zu b=%zu\n", r->req->method, r->req->target, r->req->n_headers, r->req->body_len);
    answer_respond(r, t.p, t.len);
    tr_buf_free(&t);
}

static void answer_echo(struct rec *r)
{
    answer_respond(r, r->req->body, r->req->body_len);
}

static void never_upgraded(uv_tcp_t *tcp, const void *rest, size_t rest_len, void *arg)
{
    CHECK(!"upgrade callback after a refused upgrade");
}

/* 0: streaming; else the close callback follows. */
static int stream_begin(struct rec *r, enum tr_httpd_stream_mode mode)
{
    static const char *const hdrs[] = {CT_TEXT};
    r->shape = (mode == TR_HTTPD_RAW || r->http10) ? SH_RAW : SH_CHUNKED;
    tr_buf_adds(&r->app_head, CT_TEXT);
    tr_buf_add(&r->app_head, "\r\n", 2);
    int rv = tr_httpd_stream_start(r->req, r->status, hdrs, 1, mode);
    CHECK(rv == 0 || rv == TR_ECLOSED);
    r->f->conn_lost |= rv != 0;
    if (rv == 0) {
        /* Not while streaming. */
        CHECK(tr_httpd_respond(r->req, 200, NULL, 0, NULL, 0) == TR_EINVAL);
        CHECK(tr_httpd_stream_start(r->req, 200, NULL, 0, mode) == TR_EINVAL);
        CHECK(tr_httpd_upgrade(r->req, NULL, 0, never_upgraded, NULL) == TR_EINVAL);
    }
    return rv;
}

static int stream_put(struct rec *r, const void *p, size_t n)
{
    int rv = tr_httpd_stream_write(r->req, p, n);
    CHECK(rv == 0 || rv == TR_ECLOSED);
    if (!r->no_body)
        tr_buf_add(&r->body, p, n); /* refused, it may still have gone out in part */
    r->f->conn_lost |= rv != 0;
    return rv;
}

static void stream_finish(struct rec *r)
{
    int rv = tr_httpd_stream_end(r->req);
    r->req = NULL;
    CHECK(rv == 0 || rv == TR_ECLOSED);
    r->outcome = rv == 0 ? OC_DONE : OC_ECLOSED;
    r->f->conn_lost |= rv != 0;
}

/* Piece k of 3 of the request body. */
static void body_third(const struct tr_httpd_req *req, int k, const char **p, size_t *n)
{
    size_t a = req->body_len * (size_t)k / 3, b = req->body_len * (size_t)(k + 1) / 3;
    *p = req->body + a;
    *n = b - a;
}

static void answer_stream(struct rec *r)
{
    if (stream_begin(r, TR_HTTPD_CHUNKED) != 0)
        return;
    for (int k = 0; k < 3; k++) {
        const char *p;
        size_t n;
        body_third(r->req, k, &p, &n);
        if (stream_put(r, p, n) != 0)
            return;
    }
    if (stream_put(r, "end\n", 4) != 0)
        return;
    stream_finish(r);
}

static void stream_tick_cb(uv_timer_t *t)
{
    struct rec *r = t->data;
    if (r->step < 3) {
        const char *p;
        size_t n;
        body_third(r->req, r->step++, &p, &n);
        if (stream_put(r, p, n) != 0) {
            rec_settle(r);
            return;
        }
        uv_timer_start(&r->timer, stream_tick_cb, 0, 0);
        return;
    }
    rec_settle(r);
    if (stream_put(r, "end\n", 4) == 0)
        stream_finish(r);
}

static void answer_raw(struct rec *r)
{
    if (stream_begin(r, TR_HTTPD_RAW) != 0)
        return;
    if (stream_put(r, "raw\n", 4) != 0 || stream_put(r, r->req->body, r->req->body_len) != 0)
        return;
    stream_finish(r);
}

static size_t big_piece(struct fz *f)
{
    int slow = (f->flags2 & F2_SMALL_RCVBUF) != 0;
    size_t piece = slow ? BIG_PIECE_SLOW : BIG_PIECE;
    if (f->big_bytes + piece > (slow ? BIG_BUDGET_SLOW : BIG_BUDGET))
        return 7;
    f->big_bytes += piece;
    return piece;
}

static void pump(struct rec *r)
{
    while (r->step < BIG_PIECES) {
        if (tr_httpd_queued(r->req) > 0) {
            rec_set_busy(r, 1); /* until the drain callback */
            return;
        }
        if (stream_put(r, big, big_piece(r->f)) != 0) {
            rec_settle(r);
            return;
        }
        r->step++;
    }
    rec_settle(r);
    stream_finish(r);
}

static void drain_cb(struct tr_httpd_req *req, void *arg)
{
    struct rec *r = arg;
    CHECK(r->req == req && r->kind == 'w');
    pump(r);
}

static void answer_paced(struct rec *r)
{
    if (stream_begin(r, TR_HTTPD_CHUNKED) != 0)
        return;
    tr_httpd_on_drain(r->req, drain_cb, r);
    pump(r);
}

/* Ends the stream even when a write was refused (allowed: the close
 * callback then never runs). */
static void answer_flood(struct rec *r)
{
    if (stream_begin(r, TR_HTTPD_CHUNKED) != 0)
        return;
    for (int k = 0; k < BIG_PIECES; k++) {
        if (stream_put(r, big, big_piece(r->f)) != 0)
            break;
    }
    stream_finish(r);
}

static void answer_partial_abort(struct rec *r)
{
    if (stream_begin(r, TR_HTTPD_CHUNKED) != 0)
        return;
    if (stream_put(r, "partial\n", 8) != 0)
        return;
    tr_httpd_abort(r->req); /* the close callback follows */
}

static void upg_closed(uv_handle_t *h)
{
    struct upg *u = h->data;
    u->f->handles--;
    tr_free(u->tcp);
    free(u->out);
    free(u);
}

static void upg_close(struct upg *u)
{
    if (u->closing)
        return;
    u->closing = 1;
    uv_close((uv_handle_t *)u->tcp, upg_closed);
}

static void upg_wrote(uv_write_t *w, int status)
{
    struct upg *u = w->data;
    u->writing = 0;
    free(u->out);
    u->out = NULL;
    if (status < 0 || u->eof)
        upg_close(u);
}

static void upg_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    struct upg *u = h->data;
    *b = uv_buf_init(u->rbuf, sizeof(u->rbuf));
}

static void upg_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct upg *u = s->data;
    if (n >= 0)
        return; /* the other protocol's bytes: discarded */
    u->eof = 1;
    uv_read_stop(s);
    if (!u->writing)
        upg_close(u);
}

static void upgraded_cb(uv_tcp_t *tcp, const void *rest, size_t rest_len, void *arg)
{
    struct rec *r = arg;
    struct fz *f = r->f;
    CHECK(r->outcome == OC_PENDING && r->shape == SH_UPGRADE);
    rec_set_busy(r, 0);
    if (!tcp) {
        r->outcome = OC_UPGRADE_FAILED;
        f->conn_lost = 1;
        return;
    }
    r->outcome = OC_DONE;
    r->upgraded = 1;
    /* What the server read past the request: the bytes that follow it. */
    const struct rmsg *m = &f->md.m[r->idx];
    CHECK(rest != NULL && rest_len <= f->len - m->end && memcmp(rest, f->in + m->end, rest_len) == 0);
    tr_buf_add(&r->rest, rest, rest_len);

    struct upg *u = calloc(1, sizeof(*u));
    CHECK(u != NULL);
    u->f = f;
    u->tcp = tcp;
    tcp->data = u;
    f->handles++;
    u->out = malloc(2 + rest_len);
    CHECK(u->out != NULL);
    memcpy(u->out, "U:", 2);
    if (rest_len)
        memcpy(u->out + 2, rest, rest_len);
    uv_buf_t b = uv_buf_init(u->out, (unsigned)(2 + rest_len));
    u->w.data = u;
    if (uv_write(&u->w, (uv_stream_t *)tcp, &b, 1, upg_wrote) != 0) {
        upg_close(u);
        return;
    }
    u->writing = 1;
    if (uv_read_start((uv_stream_t *)tcp, upg_alloc, upg_read) != 0)
        u->eof = 1; /* closed once the write is done */
}

static void answer_upgrade(struct rec *r)
{
    r->shape = SH_UPGRADE;
    int rv = tr_httpd_upgrade(r->req, UPG_HEAD, sizeof(UPG_HEAD) - 1, upgraded_cb, r);
    r->req = NULL;
    CHECK(rv == 0 || rv == TR_ECLOSED);
    if (rv != 0) {
        r->outcome = OC_ECLOSED; /* no callback then */
        r->f->conn_lost = 1;
        return;
    }
    rec_set_busy(r, 1); /* until the callback */
}

static void deferred_cb(uv_timer_t *t)
{
    struct rec *r = t->data;
    rec_settle(r);
    if (r->kind == 'U')
        answer_upgrade(r);
    else
        answer_echo(r);
}

/* Calls the app may not make now: refused, and req stays usable. */
static void check_misuse(struct tr_httpd_req *req)
{
    static const char *const inj[] = {"X-A: 1\r\nX-B: 2"};
    static const char *const nocolon[] = {"NoColon"};
    CHECK(tr_httpd_respond(req, 99, NULL, 0, NULL, 0) == TR_EINVAL);
    CHECK(tr_httpd_respond(req, 1000, NULL, 0, NULL, 0) == TR_EINVAL);
    CHECK(tr_httpd_respond(req, 200, inj, 1, "x", 1) == TR_EINVAL);
    CHECK(tr_httpd_respond(req, 200, nocolon, 1, NULL, 0) == TR_EINVAL);
    CHECK(tr_httpd_respond(req, 200, NULL, 0, NULL, 3) == TR_EINVAL);
    CHECK(tr_httpd_stream_write(req, "x", 1) == TR_EINVAL);
    CHECK(tr_httpd_stream_end(req) == TR_EINVAL);
    CHECK(tr_httpd_stream_start(req, 199, NULL, 0, TR_HTTPD_CHUNKED) == TR_EINVAL);
    CHECK(tr_httpd_stream_start(req, 200, inj, 1, TR_HTTPD_CHUNKED) == TR_EINVAL);
    CHECK(tr_httpd_upgrade(req, NULL, 0, NULL, NULL) == TR_EINVAL);
}

static int has_ctl(const char *s)
{
    return strpbrk(s, "\r\n") != NULL;
}

/* The request against the reference parse's message idx. */
static void check_request(struct fz *f, const struct tr_httpd_req *req, size_t idx)
{
    const struct model *md = &f->md;
    CHECK(idx < md->n);
    const struct rmsg *m = &md->m[idx];

    CHECK(req->method != NULL && strcmp(req->method, http_method_str((enum http_method)m->method)) == 0);
    size_t tl = strlen(req->target);
    CHECK(tl > 0 && tl == m->url_len && memcmp(req->target, m->text.p, tl) == 0);
    CHECK(!has_ctl(req->target));
    const char *q = memchr(req->target, '?', tl);
    size_t pl = q ? (size_t)(q - req->target) : tl;
    CHECK(strlen(req->path) == pl && memcmp(req->path, req->target, pl) == 0);
    CHECK(strcmp(req->query, q ? q + 1 : "") == 0);

    CHECK(req->n_headers == m->n_hdrs && req->n_headers <= MODEL_MAX_HEADERS);
    CHECK(req->n_headers == 0 || req->headers != NULL);
    size_t counted = tl;
    for (size_t i = 0; i < req->n_headers; i++) {
        const struct tr_httpd_header *h = &req->headers[i];
        const struct rhdr *rh = &m->hdrs[i];
        size_t nl = strlen(h->name), vl = strlen(h->value);
        CHECK(nl > 0 && nl == rh->name_len && memcmp(h->name, m->text.p + rh->name_off, nl) == 0);
        CHECK(!has_ctl(h->name) && !strchr(h->name, ':'));
        const char *v = m->text.p + rh->value_off;
        size_t rvl = rh->value_len;
        while (rvl && (*v == ' ' || *v == '\t')) {
            v++;
            rvl--;
        }
        while (rvl && (v[rvl - 1] == ' ' || v[rvl - 1] == '\t'))
            rvl--;
        CHECK(vl == rvl && memcmp(h->value, v, vl) == 0);
        CHECK(!has_ctl(h->value));
        CHECK(vl == 0 || (h->value[0] != ' ' && h->value[0] != '\t' && h->value[vl - 1] != ' ' &&
                          h->value[vl - 1] != '\t'));
        /* A name is bytes the client wrote before a colon (not pieces
         * joined; not always at a line start: http-parser, built lenient,
         * takes a bare CR for a line end and drops the byte after it). */
        char *needle = malloc(nl + 1);
        CHECK(needle != NULL);
        memcpy(needle, h->name, nl);
        needle[nl] = ':';
        CHECK(memmem(f->in, f->len, needle, nl + 1) != NULL);
        free(needle);
        counted += nl + vl;
        /* Lookup: the first header of that name, whatever its case. */
        const char *want = NULL;
        for (size_t j = 0; j <= i && !want; j++) {
            if (strcasecmp(req->headers[j].name, h->name) == 0)
                want = req->headers[j].value;
        }
        CHECK(tr_httpd_header(req, h->name) == want);
    }
    CHECK(tr_httpd_header(req, "x-never-sent\x01") == NULL);
    CHECK(counted <= f->max_header && m->head_bytes <= f->max_header);

    CHECK(req->body != NULL && req->body[req->body_len] == '\0');
    CHECK(req->body_len <= f->max_body);
    CHECK(req->body_len == m->body.len && (req->body_len == 0 || memcmp(req->body, m->body.p, req->body_len) == 0));

    CHECK(req->http_minor == 0 || req->http_minor == 1);
    CHECK(m->major == 1 && req->http_minor == (m->minor > 1 ? 1 : m->minor)); /* 1.2+ is served as 1.1 */
    CHECK(req->upgrade == m->upgrade);

    struct tr_httpd_stats st;
    tr_httpd_stats(f->srv, &st);
    CHECK(st.requests == idx + 1 && st.accepted >= 1 && st.connections >= 1);
    CHECK(st.accepted + st.refused <= ((f->flags2 & F2_EXTRA) ? 2u : 1u));
    CHECK(st.connections <= st.accepted);
}

static void on_request(struct tr_httpd_req *req, void *ud)
{
    struct fz *f = ud;
    size_t idx = f->n_recs;
    check_request(f, req, idx);
    check_misuse(req);

    struct rec *r = calloc(1, sizeof(*r));
    CHECK(r != NULL);
    if (f->n_recs == f->cap_recs) {
        f->cap_recs = f->cap_recs ? 2 * f->cap_recs : 16;
        f->recs = realloc(f->recs, f->cap_recs * sizeof(*f->recs));
        CHECK(f->recs != NULL);
    }
    f->recs[f->n_recs++] = r;
    r->f = f;
    r->req = req;
    r->idx = idx;
    r->kind = kind_of_url(req->path, strlen(req->path));
    r->status = status_of(req->query);
    r->head_only = strcmp(req->method, "HEAD") == 0;
    r->no_body = r->head_only || r->status == 204 || r->status == 304;
    r->http10 = req->http_minor == 0;
    tr_httpd_on_close(req, rec_close_cb, r);

    switch (r->kind) {
    case 'd':
    case 'U':
        if (r->kind == 'U' && !req->upgrade) {
            answer_default(r);
            break;
        }
        rec_defer(r, deferred_cb);
        break;
    case 'e':
        answer_echo(r);
        break;
    case 's':
        answer_stream(r);
        break;
    case 'S':
        if (stream_begin(r, TR_HTTPD_CHUNKED) == 0)
            rec_defer(r, stream_tick_cb);
        break;
    case 'r':
        answer_raw(r);
        break;
    case 'w':
        answer_paced(r);
        break;
    case 'f':
        answer_flood(r);
        break;
    case 'a':
        tr_httpd_abort(req); /* the close callback follows */
        break;
    case 'A':
        answer_partial_abort(r);
        break;
    case 'u':
        if (req->upgrade)
            answer_upgrade(r);
        else
            answer_default(r);
        break;
    default:
        answer_default(r);
        break;
    }
}

/* ---- the client ----------------------------------------------------------- */

static void cli_next(struct fz *f);

static void cli_closed_cb(uv_handle_t *h)
{
    struct fz *f = h->data;
    f->cli_closed = 1;
}

static void cli_close(struct fz *f)
{
    if (f->cli_closing)
        return;
    f->cli_closing = 1;
    uv_idle_stop(&f->idle);
    uv_timer_stop(&f->pause);
    uv_close((uv_handle_t *)&f->cli, cli_closed_cb);
}

static void cli_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    struct fz *f = h->data;
    tr_buf_reserve(&f->rx, 65536);
    *b = uv_buf_init(f->rx.p + f->rx.len, 65536);
}

static void cli_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct fz *f = s->data;
    if (n > 0) {
        f->rx.len += (size_t)n;
        CHECK(f->rx.len <= RX_CAP);
        return;
    }
    if (n == 0)
        return;
    if (n == UV_EOF)
        f->cli_eof = 1;
    else
        f->cli_reset = 1;
    cli_close(f);
}

static void pause_cb(uv_timer_t *t)
{
    cli_next(t->data);
}

static void idle_cb(uv_idle_t *h)
{
    struct fz *f = h->data;
    if (f->busy) {
        f->quiet = 0;
        return;
    }
    if (++f->quiet < QUIET_ITERS)
        return;
    uv_idle_stop(h);
    /* Let the 1 ms timers fire on what was sent (408, idle close). */
    if ((f->flags & F_TIMEOUT) && f->seg_next == f->n_seg)
        uv_timer_start(&f->pause, pause_cb, TIMEOUT_PAUSE_MS, 0);
    else
        cli_next(f);
}

static void cli_wrote(uv_write_t *w, int status)
{
    struct fz *f = w->data;
    f->writes_pending--;
    if (status < 0) {
        if (status != UV_ECANCELED)
            f->cli_reset = 1; /* the server has gone */
        cli_close(f);
        return;
    }
    if (!(f->flags & F_IMMEDIATE) && f->writes_pending == 0 && !f->cli_closing) {
        f->quiet = 0;
        uv_idle_start(&f->idle, idle_cb);
    }
}

static void cli_shut(uv_shutdown_t *sr, int status)
{
    struct fz *f = sr->data;
    if (status < 0 && status != UV_ECANCELED) {
        f->cli_reset = 1;
        cli_close(f);
    }
}

static void cli_write_seg(struct fz *f)
{
    size_t k = f->seg_next++;
    uv_buf_t b = uv_buf_init(f->in + f->cut[k], (unsigned)(f->cut[k + 1] - f->cut[k]));
    f->wreq[k].data = f;
    if (uv_write(&f->wreq[k], (uv_stream_t *)&f->cli, &b, 1, cli_wrote) != 0) {
        f->cli_reset = 1;
        cli_close(f);
        return;
    }
    f->writes_pending++;
}

static void cli_shutdown(struct fz *f)
{
    f->shut_req.data = f;
    if (uv_shutdown(&f->shut_req, (uv_stream_t *)&f->cli, cli_shut) != 0) {
        f->cli_reset = 1;
        cli_close(f);
    }
}

/* Quiescent mode: the next segment, or the half-close after the last. */
static void cli_next(struct fz *f)
{
    if (f->cli_closing)
        return;
    if (f->seg_next < f->n_seg)
        cli_write_seg(f);
    else
        cli_shutdown(f);
}

static void cli_connected(uv_connect_t *cr, int status)
{
    struct fz *f = cr->data;
    CHECK(status == 0);
    CHECK(uv_read_start((uv_stream_t *)&f->cli, cli_alloc, cli_read) == 0);
    if (f->flags & F_IMMEDIATE) {
        while (f->seg_next < f->n_seg && !f->cli_closing)
            cli_write_seg(f);
        if (!f->cli_closing)
            cli_shutdown(f);
        return;
    }
    cli_next(f);
}

/* ---- the extra idle client ------------------------------------------------- */

static void ext_closed_cb(uv_handle_t *h)
{
    struct fz *f = h->data;
    f->ext_closed = 1;
}

static void ext_close(struct fz *f)
{
    if (f->ext_closing)
        return;
    f->ext_closing = 1;
    uv_close((uv_handle_t *)&f->ext, ext_closed_cb);
}

static void ext_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    static char sink[256];
    *b = uv_buf_init(sink, sizeof(sink));
}

static void ext_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct fz *f = s->data;
    CHECK(n <= 0); /* a client that sends nothing gets nothing */
    if (n < 0)
        ext_close(f);
}

static void ext_connected(uv_connect_t *cr, int status)
{
    struct fz *f = cr->data;
    CHECK(status == 0); /* the kernel completes the handshake, refused or not */
    f->ext_connected = 1;
    CHECK(uv_read_start((uv_stream_t *)&f->ext, ext_alloc, ext_read) == 0);
}

static void ext_connect(struct fz *f)
{
    struct sockaddr_in sa;
    f->ext_started = 1;
    uv_tcp_init(&f->loop, &f->ext);
    f->ext.data = f;
    CHECK(uv_ip4_addr("127.0.0.1", f->port, &sa) == 0);
    f->ext_req.data = f;
    CHECK(uv_tcp_connect(&f->ext_req, &f->ext, (const struct sockaddr *)&sa, ext_connected) == 0);
}

static void ext_wait_cb(uv_idle_t *h)
{
    struct fz *f = h->data;
    struct tr_httpd_stats st;
    tr_httpd_stats(f->srv, &st);
    if (st.accepted == 0)
        return;
    uv_idle_stop(h);
    ext_connect(f);
}

/* ---- what the client read --------------------------------------------------- */

struct rd {
    const char *p;
    size_t len, pos;
};

/* The next bytes are want[0..n): 1, or 0 when the data ends inside (what
 * there is matches). */
static int rd_expect(struct rd *d, const void *want, size_t n)
{
    size_t have = d->len - d->pos, k = have < n ? have : n;
    CHECK(k == 0 || memcmp(d->p + d->pos, want, k) == 0);
    d->pos += k;
    return k == n;
}

/* One line ending in CRLF (no bare CR or LF in it): 1, or 0 when the data
 * ends first. */
static int rd_line(struct rd *d, const char **line, size_t *n)
{
    const char *s = d->p + d->pos;
    size_t have = d->len - d->pos;
    const char *cr = memchr(s, '\r', have);
    size_t upto = cr ? (size_t)(cr - s) : have;
    CHECK(memchr(s, '\n', upto) == NULL);
    if (!cr || upto + 1 >= have) {
        d->pos = d->len;
        return 0;
    }
    CHECK(cr[1] == '\n');
    *line = s;
    *n = upto;
    d->pos += upto + 2;
    return 1;
}

struct head {
    int status;
    int n_cl, n_te, n_conn, conn_keep;
    size_t cl;
};

static int tchar(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static int is_name(const char *l, size_t n, const char *name)
{
    return strlen(name) == n && strncasecmp(l, name, n) == 0;
}

/* Status line, then exactly the app's lines, then only framing headers. */
static int rd_head(struct rd *d, struct head *h, const char *app_head, size_t app_len)
{
    const char *l;
    size_t n;
    memset(h, 0, sizeof(*h));
    if (!rd_line(d, &l, &n))
        return 0;
    CHECK(n >= 13 && memcmp(l, "HTTP/1.1 ", 9) == 0 && l[12] == ' ');
    for (int i = 9; i < 12; i++)
        CHECK(l[i] >= '0' && l[i] <= '9');
    h->status = (l[9] - '0') * 100 + (l[10] - '0') * 10 + (l[11] - '0');
    const char *reason = tr_httpd_reason(h->status);
    CHECK(n - 13 == strlen(reason) && memcmp(l + 13, reason, n - 13) == 0);
    if (!rd_expect(d, app_head, app_len))
        return 0;
    for (;;) {
        if (!rd_line(d, &l, &n))
            return 0;
        if (n == 0)
            return 1;
        const char *colon = memchr(l, ':', n);
        CHECK(colon != NULL && colon > l && (size_t)(colon - l) + 1 < n && colon[1] == ' ');
        size_t nl = (size_t)(colon - l);
        for (size_t i = 0; i < nl; i++)
            CHECK(tchar((unsigned char)l[i]));
        const char *v = colon + 2;
        size_t vl = n - nl - 2;
        CHECK(memchr(v, '\0', vl) == NULL);
        if (is_name(l, nl, "Content-Length")) {
            h->n_cl++;
            CHECK(vl > 0 && (vl == 1 || v[0] != '0'));
            h->cl = 0;
            for (size_t i = 0; i < vl; i++) {
                CHECK(v[i] >= '0' && v[i] <= '9');
                h->cl = h->cl * 10 + (size_t)(v[i] - '0');
            }
        } else if (is_name(l, nl, "Transfer-Encoding")) {
            h->n_te++;
            CHECK(vl == 7 && memcmp(v, "chunked", 7) == 0);
        } else if (is_name(l, nl, "Connection")) {
            h->n_conn++;
            h->conn_keep = vl == 10 && memcmp(v, "keep-alive", 10) == 0;
            CHECK(h->conn_keep || (vl == 5 && memcmp(v, "close", 5) == 0));
        } else {
            CHECK(!"a header the server does not add");
        }
    }
}

/* A chunked body that must decode to exp: 1, or 0 when the data ends first. */
static int rd_chunked(struct rd *d, const struct tr_buf *exp)
{
    size_t got = 0;
    for (;;) {
        const char *l;
        size_t n, size = 0;
        if (!rd_line(d, &l, &n))
            return 0;
        CHECK(n >= 1 && n <= 16 && (n == 1 || l[0] != '0'));
        for (size_t i = 0; i < n; i++) {
            CHECK((l[i] >= '0' && l[i] <= '9') || (l[i] >= 'a' && l[i] <= 'f'));
            size = size * 16 + (size_t)(l[i] <= '9' ? l[i] - '0' : l[i] - 'a' + 10);
        }
        if (size == 0) {
            CHECK(got == exp->len);
            return rd_expect(d, "\r\n", 2);
        }
        CHECK(got + size <= exp->len);
        if (!rd_expect(d, exp->p + got, size))
            return 0;
        got += size;
        if (!rd_expect(d, "\r\n", 2))
            return 0;
    }
}

/* The response to r: 1 when complete, 0 when the data ends inside it.
 * *ended: nothing may follow it on the connection. */
static int rd_response(struct rd *d, const struct rec *r, const struct rmsg *m, int *ended)
{
    if (m->expect_continue && !rd_expect(d, CONTINUE, sizeof(CONTINUE) - 1))
        return 0;
    if (r->shape == SH_NONE)
        return 0; /* aborted before answering */
    if (r->shape == SH_UPGRADE) {
        *ended = 1;
        if (!rd_expect(d, UPG_HEAD, sizeof(UPG_HEAD) - 1) || !r->upgraded)
            return 0;
        return rd_expect(d, "U:", 2) && rd_expect(d, r->rest.p, r->rest.len);
    }
    struct head h;
    if (!rd_head(d, &h, r->app_head.p, r->app_head.len))
        return 0;
    CHECK(h.status == r->status && h.n_conn == 1);
    int want_keep = m->keep_alive && !m->upgrade && r->shape != SH_RAW;
    /* RFC 9112 6.3: these end at the blank line, whatever the headers say;
     * RFC 9110 6.1: no Transfer-Encoding on a 204 (nor here on a 304). */
    int no_body = r->status == 204 || r->status == 304;
    if (!h.conn_keep)
        *ended = 1;
    switch (r->shape) {
    case SH_RESPOND:
        CHECK(h.n_te == 0 && h.conn_keep == want_keep);
        if (no_body)
            CHECK(h.n_cl == 0);
        else
            CHECK(h.n_cl == 1 && h.cl == r->body.len);
        if (no_body || r->head_only)
            return 1;
        return rd_expect(d, r->body.p, r->body.len);
    case SH_CHUNKED:
        CHECK(h.n_te == (no_body ? 0 : 1) && h.n_cl == 0 && h.conn_keep == want_keep);
        return r->no_body ? 1 : rd_chunked(d, &r->body);
    case SH_RAW: {
        CHECK(h.n_te == 0 && h.n_cl == 0 && !h.conn_keep);
        size_t have = d->len - d->pos;
        CHECK(have <= r->body.len && (have == 0 || memcmp(d->p + d->pos, r->body.p, have) == 0));
        d->pos = d->len;
        return have == r->body.len;
    }
    default:
        CHECK(!"unreachable");
        return 0;
    }
}

/* The server's error status against the reference's. Data callbacks come
 * out at the end of each read, so the server may count bytes of a header or
 * body that the reference parse, hitting a bad byte first, never hands over:
 * a limit may then be found before the parse error. */
static int error_agrees(int want, int got)
{
    return got == want || (want == 400 && (got == 413 || got == 431));
}

/* How many requests the app must see in quiescent mode, and the error
 * answered after them (0: none). */
static size_t predict(const struct model *md, int *err)
{
    for (size_t i = 0; i < md->n; i++) {
        const struct rmsg *m = &md->m[i];
        char k = kind_of_url(m->text.p, m->url_len);
        if (!m->keep_alive || m->upgrade || k == 'r' || k == 'a' || k == 'A' || (m->minor == 0 && is_stream_kind(k))) {
            *err = 0;
            return i + 1;
        }
    }
    *err = md->status;
    return md->n;
}

/* Connections the server should still have: the extra idle client's, if
 * it was served and has not been closed (by the 1 ms idle timeout). */
static uint32_t conns_kept(const struct fz *f, const struct tr_httpd_stats *st)
{
    return st->accepted == 2 && !f->ext_closed ? 1 : 0;
}

/* FUZZ_HTTPD_VERBOSE=1: print what was sent and read (for reproducing). */
static void dump(const struct fz *f)
{
    fprintf(stderr, "--- flags 0x%02x 0x%02x, %zu segment(s), sent %zu bytes:\n", f->flags, f->flags2, f->n_seg,
            f->len);
    fwrite(f->in, 1, f->len, stderr);
    fprintf(stderr, "\n--- app saw %zu request(s), reference %zu (error %d); client read %zu bytes%s%s:\n",
            f->n_recs, f->md.n, f->md.status, f->rx.len, f->cli_eof ? ", EOF" : "", f->cli_reset ? ", reset" : "");
    fwrite(f->rx.p ? f->rx.p : "", 1, f->rx.len, stderr);
    fprintf(stderr, "\n---\n");
}

static void check_exchange(struct fz *f)
{
    if (getenv("FUZZ_HTTPD_VERBOSE"))
        dump(f);
    const struct model *md = &f->md;
    struct rd d = {f->rx.p, f->rx.len, 0};
    int ended = 0, got_error = 0;
    size_t i;

    /* A request the app did not finish ends the connection, dropping what
     * was unsent; a reset may lose what the client had not read; with 1 ms
     * timeouts, an answer queued behind the small receive buffer may see no
     * progress for that long. Only then may responses be cut short. */
    for (i = 0; i + 1 < f->n_recs; i++)
        CHECK(f->recs[i]->outcome == OC_DONE);
    int cut_ok = f->cli_reset || (f->n_recs > 0 && f->recs[f->n_recs - 1]->outcome != OC_DONE) ||
                 ((f->flags & F_TIMEOUT) && (f->flags2 & F2_SMALL_RCVBUF));

    for (i = 0; i < f->n_recs; i++) {
        const struct rec *r = f->recs[i];
        CHECK(!ended);
        CHECK(r->outcome != OC_PENDING);
        int complete = rd_response(&d, r, &md->m[i], &ended);
        if (!complete || r->outcome != OC_DONE) {
            CHECK(cut_ok);
            CHECK(d.pos == d.len);
            break;
        }
    }
    if (i == f->n_recs && d.pos < d.len) {
        /* An error answer to the request after the last one the app got. */
        CHECK(!ended);
        size_t k = f->n_recs;
        int cont = k < md->n + (md->in_msg ? 1 : 0) && md->m[k].expect_continue;
        if (cont && !rd_expect(&d, CONTINUE, sizeof(CONTINUE) - 1))
            CHECK(d.pos == d.len);
        struct head h;
        int parsed = 0;
        if (d.pos < d.len) {
            parsed = rd_head(&d, &h, CT_JSON_LINE, sizeof(CT_JSON_LINE) - 1);
            CHECK(parsed || cut_ok);
        }
        if (parsed) {
            CHECK(h.status == 400 || h.status == 408 || h.status == 413 || h.status == 431 || h.status == 505);
            CHECK(h.n_cl == 1 && h.n_te == 0 && h.n_conn == 1 && !h.conn_keep);
            size_t have = d.len - d.pos;
            CHECK(have <= h.cl);
            CHECK(memcmp(d.p + d.pos, "{\"error\":", have < 9 ? have : 9) == 0);
            CHECK(cut_ok || have == h.cl);
            got_error = h.status;
            if (h.status == 408)
                CHECK(f->flags & F_TIMEOUT);
            else
                CHECK(k == md->n && error_agrees(md->status, h.status));
        }
        d.pos = d.len;
    }

    struct tr_httpd_stats st;
    tr_httpd_stats(f->srv, &st);
    unsigned ext = (f->flags2 & F2_EXTRA) ? 1 : 0;
    CHECK(st.accepted >= 1 && st.accepted + st.refused == 1 + ext);
    CHECK(st.refused == 0 || (f->flags2 & F2_ONE_CONN));
    CHECK(st.refused == 0 || f->ext_closed);
    CHECK(st.connections == conns_kept(f, &st));
    CHECK(st.requests == f->n_recs && st.bad_requests <= 1);
    CHECK(!got_error || st.bad_requests == 1);

    if (!(f->flags & (F_IMMEDIATE | F_TIMEOUT)) && !f->conn_lost) {
        int err;
        size_t n = predict(md, &err);
        CHECK(f->n_recs == n);
        CHECK(st.bad_requests == (err != 0));
        CHECK(error_agrees(err, got_error) || (cut_ok && !got_error));
    }
}

/* ---- the driver ------------------------------------------------------------- */

static void guard_cb(uv_timer_t *t)
{
    struct fz *f = t->data;
    f->guard_fired = 1;
}

static void srv_closed_cb(void *arg)
{
    struct fz *f = arg;
    f->srv_freed = 1;
}

/* The client is done, the app let go, and the server dropped the client's
 * connection. */
static int settled(struct fz *f)
{
    struct tr_httpd_stats st;
    if (!f->cli_closed || f->handles)
        return 0;
    tr_httpd_stats(f->srv, &st);
    if ((f->flags2 & F2_EXTRA) &&
        (!f->ext_connected || st.accepted + st.refused < 2 || (st.refused && !f->ext_closed)))
        return 0;
    return st.connections == conns_kept(f, &st);
}

static void stalled(struct fz *f)
{
    fprintf(stderr,
            "stalled: client closed %d eof %d reset %d, segments %zu/%zu, app requests %zu busy %u handles %u, "
            "received %zu bytes\n",
            f->cli_closed, f->cli_eof, f->cli_reset, f->seg_next, f->n_seg, f->n_recs, f->busy, f->handles,
            f->rx.len);
    abort();
}

static int write_file(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY);
    if (fd < 0)
        return -1;
    ssize_t n = write(fd, text, strlen(text));
    close(fd);
    return n == (ssize_t)strlen(text) ? 0 : -1;
}

/* Every input opens a TCP connection, and a closed one sits in TIME_WAIT for
 * a minute: hundreds a second would fill the host's ephemeral port range and
 * make other programs' binds and connects fail. A network namespace of our
 * own (through an unprivileged user namespace, ids mapped to themselves so
 * that corpus files keep their owner) keeps those ports to this process.
 * Where the system refuses, the host's namespace is used. */
static void private_netns(void)
{
    char map[64];
    unsigned uid = (unsigned)getuid(), gid = (unsigned)getgid();
    const char *why = NULL;
    if (unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0) {
        why = "unshare";
        goto out;
    }
    snprintf(map, sizeof(map), "%u %u 1", uid, uid);
    if (write_file("/proc/self/uid_map", map) != 0) {
        why = "uid_map";
        goto out;
    }
    snprintf(map, sizeof(map), "%u %u 1", gid, gid);
    if (write_file("/proc/self/setgroups", "deny") != 0 || write_file("/proc/self/gid_map", map) != 0) {
        why = "gid_map";
        goto out;
    }
    /* A new namespace's loopback is down. */
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    strcpy(ifr.ifr_name, "lo");
    if (fd < 0 || ioctl(fd, SIOCGIFFLAGS, &ifr) != 0) {
        why = "lo";
    } else {
        ifr.ifr_flags |= IFF_UP;
        if (ioctl(fd, SIOCSIFFLAGS, &ifr) != 0)
            why = "lo up";
    }
    if (fd >= 0)
        close(fd);
out:
    if (why)
        fprintf(stderr, "fuzz_httpd: no private network namespace (%s: %s); TIME_WAIT sockets pile up in the host's\n",
                why, strerror(errno));
    /* Past unshare, a failure leaves no loopback: nothing would connect. */
    CHECK(!why || strcmp(why, "unshare") == 0);
}

static void never_request(struct tr_httpd_req *req, void *ud)
{
    CHECK(!"a request to a server nobody connects to");
}

static void set_flag(void *arg)
{
    *(int *)arg = 1;
}

/* Bad options are refused with a message and nothing running; all-zero
 * limits take the defaults. */
static void check_start(void)
{
    uv_loop_t loop;
    struct tr_httpd *h = NULL;
    struct tr_err err;
    CHECK(uv_loop_init(&loop) == 0);
    struct tr_httpd_opts bad[] = {
        {.port = 0},
        {.port = -1, .on_request = never_request},
        {.port = 65536, .on_request = never_request},
        {.host = "not an address", .on_request = never_request},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err.msg[0] = '\0';
        CHECK(tr_httpd_start(&loop, &bad[i], &h, &err) == TR_EINVAL && err.msg[0] != '\0');
    }
    struct tr_httpd_opts o = {.host = "127.0.0.1", .on_request = never_request};
    int closed = 0;
    CHECK(tr_httpd_start(&loop, &o, &h, NULL) == 0 && tr_httpd_port(h) > 0);
    struct tr_httpd_stats st;
    tr_httpd_stats(h, &st);
    CHECK(st.accepted == 0 && st.connections == 0);
    tr_httpd_close(h, set_flag, &closed);
    CHECK(!closed);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(closed && uv_loop_close(&loop) == 0);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    private_netns();
    check_start();
    tr_log_set_level(TR_LOG_ERROR);
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (char)('a' + i % 26);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4)
        return 0;
    struct fz *f = calloc(1, sizeof(*f));
    CHECK(f != NULL);
    f->flags = data[0];
    f->flags2 = data[1];
    f->len = size - 4;
    f->in = (char *)fuzz_copy(data + 4, f->len);
    size_t a = f->len * data[2] / 256, b = f->len * data[3] / 256;
    if (a > b) {
        size_t t = a;
        a = b;
        b = t;
    }
    size_t cuts[3] = {a, b, f->len};
    f->cut[0] = 0;
    for (int k = 0; k < 3; k++) {
        if (cuts[k] > f->cut[f->n_seg])
            f->cut[++f->n_seg] = cuts[k];
    }
    f->max_header = header_caps[(f->flags >> 1) & 3];
    f->max_body = body_caps[(f->flags >> 3) & 3];
    f->md.max_header = f->max_header;
    f->md.max_body = f->max_body;
    model_run(&f->md, f->in, f->len);

    CHECK(uv_loop_init(&f->loop) == 0);
    struct tr_httpd_opts o = {
        .host = "127.0.0.1",
        .port = 0,
        .max_connections = (f->flags2 & F2_ONE_CONN) ? 1 : 4,
        .max_header_bytes = f->max_header,
        .max_body_bytes = f->max_body,
        .idle_timeout_ms = (f->flags & F_TIMEOUT) ? 1 : 60000,
        .request_timeout_ms = (f->flags & F_TIMEOUT) ? 1 : 60000,
        .max_write_queue = (f->flags & F_BIG_QUEUE) ? 1024 * 1024 : 48 * 1024,
        .on_request = on_request,
        .ud = f,
    };
    struct tr_err err;
    CHECK(tr_httpd_start(&f->loop, &o, &f->srv, &err) == 0);
    f->port = tr_httpd_port(f->srv);
    CHECK(f->port > 0);

    uv_timer_init(&f->loop, &f->guard);
    f->guard.data = f;
    uv_timer_start(&f->guard, guard_cb, GUARD_MS, 0);
    uv_idle_init(&f->loop, &f->idle);
    f->idle.data = f;
    uv_timer_init(&f->loop, &f->pause);
    f->pause.data = f;
    uv_idle_init(&f->loop, &f->ext_wait);
    f->ext_wait.data = f;
    CHECK(uv_tcp_init_ex(&f->loop, &f->cli, AF_INET) == 0);
    f->cli.data = f;
    uv_tcp_nodelay(&f->cli, 1);
    if (f->flags2 & F2_SMALL_RCVBUF) {
        int rcvbuf = 4096;
        CHECK(uv_recv_buffer_size((uv_handle_t *)&f->cli, &rcvbuf) == 0);
    }
    struct sockaddr_in sa;
    CHECK(uv_ip4_addr("127.0.0.1", f->port, &sa) == 0);
    f->conn_req.data = f;
    CHECK(uv_tcp_connect(&f->conn_req, &f->cli, (const struct sockaddr *)&sa, cli_connected) == 0);
    if ((f->flags2 & F2_EXTRA) && (f->flags2 & F2_ONE_CONN))
        uv_idle_start(&f->ext_wait, ext_wait_cb);
    else if (f->flags2 & F2_EXTRA)
        ext_connect(f);

    /* Until the client is done and the server and the app have let go. */
    while (!settled(f)) {
        if (f->guard_fired)
            stalled(f);
        uv_run(&f->loop, UV_RUN_ONCE);
    }
    CHECK(f->busy == 0);
    check_exchange(f);

    tr_httpd_close(f->srv, srv_closed_cb, f);
    CHECK(!f->srv_freed); /* never from inside the call */
    while (!f->srv_freed || (f->ext_started && !f->ext_closed)) {
        if (f->guard_fired)
            stalled(f);
        uv_run(&f->loop, UV_RUN_ONCE);
    }
    uv_timer_stop(&f->guard);
    uv_close((uv_handle_t *)&f->guard, NULL);
    uv_close((uv_handle_t *)&f->idle, NULL);
    uv_close((uv_handle_t *)&f->pause, NULL);
    uv_close((uv_handle_t *)&f->ext_wait, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    CHECK(uv_loop_close(&f->loop) == 0);

    for (size_t i = 0; i < f->n_recs; i++) {
        struct rec *r = f->recs[i];
        CHECK(!r->timer_open && !r->busy);
        tr_buf_free(&r->app_head);
        tr_buf_free(&r->body);
        tr_buf_free(&r->rest);
        free(r);
    }
    free(f->recs);
    model_free(&f->md);
    tr_buf_free(&f->rx);
    free(f->in);
    free(f);
    return 0;
}
