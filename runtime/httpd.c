/* A small HTTP/1.1 server on a libuv loop (http-parser for the wire format).
 *
 * Happy path: accept -> read -> parse one request -> hand it to the app ->
 * the app answers (now or later) -> the response is queued -> parse the next
 * buffered request (pipelining) or wait for more bytes (keep-alive).
 *
 * Invariants
 *  1. At most one request of a connection is with the app (conn->req). Bytes
 *     that arrive meanwhile are buffered unparsed, up to a bound; past it the
 *     connection stops reading until the app answers.
 *  2. Responses go out in request order, because requests are parsed only
 *     when none is pending.
 *  3. The app is never called from inside one of its own calls: the next
 *     pipelined request after an answer given outside on_request starts from
 *     a zero-delay timer, and close callbacks run from uv_close callbacks.
 *  4. A connection's memory is freed only when both of its handles (socket,
 *     timer) have closed; the server is freed when the listener and every
 *     connection are gone.
 *
 * Failure modes: bad request line or headers -> 400; headers over the cap ->
 * 431; body over the cap -> 413; an HTTP version other than 1.x -> 505; a
 * request not complete within request_timeout_ms -> 408; each of those
 * closes the connection after the answer (a lingering close: FIN, then
 * discard input for a moment, so the client reads the answer rather than a
 * reset). Unsent output over max_write_queue, a write error, or EOF while a
 * request is with the app close the connection at once; after EOF with only
 * finished answers unsent, those go out first (a half-closing client still
 * reads them).
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <pthread.h>
#include <signal.h>

#include <http_parser.h>

#include "adapters.h"
#include "runtime.h"

#define DEF_MAX_CONNS 1024u
#define DEF_MAX_HEADER (16u * 1024)
#define DEF_MAX_BODY (8u * 1024 * 1024)
#define DEF_IDLE_MS 60000u
#define DEF_REQUEST_MS 30000u
#define DEF_MAX_WQ (16u * 1024 * 1024)
#define MAX_HEADERS 128
#define READ_CHUNK 65536
#define LINGER_MS 2000
/* Input buffered while a request is with the app, beyond the header cap. */
#define INBUF_SLACK 65536

static void buf_consume(struct tr_buf *b, size_t n)
{
    memmove(b->p, b->p + n, b->len - n);
    b->len -= n;
}


enum tmode { T_NONE, T_IDLE, T_REQUEST, T_RESUME, T_LINGER, T_HANDOVER };

/* One header while parsing: offsets into conn->hbuf. */
struct hspan {
    size_t name_off, name_len, value_off, value_len;
};

struct req_impl {
    struct tr_httpd_req pub;
    void (*close_cb)(struct tr_httpd_req *req, void *arg);
    void *close_arg;
    void (*drain_cb)(struct tr_httpd_req *req, void *arg); /* streamed responses */
    void *drain_arg;
    char *body; /* owned */
};

struct tr_httpd_conn {
    struct tr_httpd *srv;
    struct tr_httpd_conn *prev, *next;
    uv_tcp_t *tcp; /* separate so an upgrade can hand it over */
    uv_timer_t timer;
    enum tmode tmode;
    size_t idle_unsent; /* bytes unsent when the idle timer was armed */
    int open_handles;
    http_parser parser;
    struct tr_buf in; /* read, not yet parsed */

    /* The request being parsed. */
    struct tr_buf hbuf;  /* url, then header names and values, unterminated */
    size_t url_len;
    struct hspan hdrs[MAX_HEADERS];
    size_t n_hdrs;
    int last_was_value;
    struct tr_buf body;
    int in_message;
    int completed;
    int err_status; /* set by a parser callback that refused the request */

    struct req_impl *req; /* with the app */
    int req_keep_alive;
    int streaming;
    enum tr_httpd_stream_mode smode;
    int head_only;

    size_t queued; /* bytes handed to uv_write, not yet written */
    unsigned writes;
    int reading;
    int processing;
    int stop_parsing;     /* upgrade request seen or error answered */
    int close_after_write;
    int lingering;
    int closing;
    int upgrading;
    tr_httpd_upgrade_cb upgrade_cb;
    void *upgrade_arg;
};

struct tr_httpd {
    uv_loop_t *loop;
    uv_tcp_t listener;
    struct tr_httpd_opts o;
    struct tr_httpd_conn *conns;
    uint32_t n_conns;
    int listener_open;
    int closing;
    unsigned refusing; /* refused sockets still closing */
    void (*close_cb)(void *arg);
    void *close_arg;
    struct tr_httpd_stats st;
};

struct wreq {
    uv_write_t req;
    struct tr_httpd_conn *conn;
    size_t len;
    char data[];
};

static void conn_process(struct tr_httpd_conn *c);
static void conn_abort(struct tr_httpd_conn *c);
static void conn_drained(struct tr_httpd_conn *c);
static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *b);
static void alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *b);

const char *tr_httpd_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Entity";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

static pthread_once_t sigpipe_once = PTHREAD_ONCE_INIT;

static void sigpipe_once_fn(void)
{
    struct sigaction sa;
    if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL && !(sa.sa_flags & SA_SIGINFO)) {
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = SIG_IGN;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGPIPE, &sa, NULL);
    }
}

void tr__sigpipe_ignore(void)
{
    pthread_once(&sigpipe_once, sigpipe_once_fn);
}

/* ------------------------------------------------------------------------ */
/* Server lifetime.                                                           */

static void srv_maybe_free(struct tr_httpd *s)
{
    if (!s->closing || s->listener_open || s->conns || s->refusing)
        return;
    void (*cb)(void *) = s->close_cb;
    void *arg = s->close_arg;
    tr_free(s);
    if (cb)
        cb(arg);
}

static void listener_close_cb(uv_handle_t *h)
{
    struct tr_httpd *s = h->data;
    s->listener_open = 0;
    srv_maybe_free(s);
}

static void conn_unlink(struct tr_httpd_conn *c)
{
    struct tr_httpd *s = c->srv;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    s->n_conns--;
}

static void conn_free(struct tr_httpd_conn *c)
{
    struct tr_httpd *s = c->srv;
    conn_unlink(c);
    tr_buf_free(&c->in);
    tr_buf_free(&c->hbuf);
    tr_buf_free(&c->body);
    tr_free(c);
    srv_maybe_free(s);
}

static void req_free(struct req_impl *r)
{
    tr_free(r->body);
    tr_free(r);
}

/* The app's request is finished (answered): forget it. */
static void conn_drop_req(struct tr_httpd_conn *c)
{
    struct req_impl *r = c->req;
    c->req = NULL;
    c->streaming = 0;
    if (r)
        req_free(r);
}

static void conn_handle_closed(struct tr_httpd_conn *c)
{
    if (--c->open_handles == 0)
        conn_free(c);
}

static void timer_close_cb(uv_handle_t *h)
{
    conn_handle_closed(h->data);
}

static void tcp_close_cb(uv_handle_t *h)
{
    struct tr_httpd_conn *c = h->data;
    tr_free(h);
    c->tcp = NULL;
    /* Tell the app now, from a libuv callback, never from inside its call. */
    struct req_impl *r = c->req;
    if (r) {
        c->req = NULL;
        if (r->close_cb)
            r->close_cb(&r->pub, r->close_arg);
        req_free(r);
    }
    if (c->upgrading && c->upgrade_cb) {
        tr_httpd_upgrade_cb cb = c->upgrade_cb;
        c->upgrade_cb = NULL;
        cb(NULL, NULL, 0, c->upgrade_arg);
    }
    conn_handle_closed(c);
}

/* Close the connection now; unsent output is dropped. */
static void conn_abort(struct tr_httpd_conn *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    c->tmode = T_NONE;
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)c->tcp, tcp_close_cb);
    uv_close((uv_handle_t *)&c->timer, timer_close_cb);
}

static void set_timer(struct tr_httpd_conn *c, enum tmode m, uint64_t ms);

static void timer_cb(uv_timer_t *t);

static void set_timer(struct tr_httpd_conn *c, enum tmode m, uint64_t ms)
{
    if (c->closing)
        return;
    c->tmode = m;
    uv_timer_start(&c->timer, timer_cb, ms, 0);
}

static void stop_timer(struct tr_httpd_conn *c)
{
    c->tmode = T_NONE;
    uv_timer_stop(&c->timer);
}

/* Idle: no request with the app and no output moving. When the timer
 * fires, output that went out since it was armed keeps the connection: a
 * client reading a long answer is not idle. */
static void arm_idle(struct tr_httpd_conn *c)
{
    c->idle_unsent = uv_stream_get_write_queue_size((uv_stream_t *)c->tcp);
    set_timer(c, T_IDLE, c->srv->o.idle_timeout_ms);
}

/* ------------------------------------------------------------------------ */
/* Output.                                                                    */

static void write_cb(uv_write_t *w, int status)
{
    struct wreq *wr = (struct wreq *)w;
    struct tr_httpd_conn *c = wr->conn;
    c->queued -= wr->len;
    c->writes--;
    tr_free(wr);
    if (c->closing)
        return;
    if (status < 0) {
        conn_abort(c);
        return;
    }
    if (c->writes == 0)
        conn_drained(c);
}

/* Queue n buffers as one write (copied). TR_ECLOSED: the connection is
 * closing (possibly because this write went over the cap). */
static int conn_writev(struct tr_httpd_conn *c, const uv_buf_t *bufs, unsigned n)
{
    size_t total = 0;
    unsigned i;
    if (c->closing || c->lingering)
        return TR_ECLOSED;
    for (i = 0; i < n; i++)
        total += bufs[i].len;
    if (total == 0)
        return 0;
    /* Nothing queued: write what the socket takes now, without a copy or a
     * callback (the common case; many streams fan out the same event). */
    size_t skip = 0;
    if (c->writes == 0) {
        int w = uv_try_write((uv_stream_t *)c->tcp, bufs, n);
        if (w > 0) {
            skip = (size_t)w;
            if (skip == total)
                return 0;
        } else if (w < 0 && w != UV_EAGAIN && w != UV_ENOSYS) {
            conn_abort(c);
            return TR_ECLOSED;
        }
    }
    total -= skip;
    if (c->queued + total > c->srv->o.max_write_queue) {
        tr_log(TR_LOG_DEBUG, "httpd: client too slow (%zu bytes queued), closing", c->queued + total);
        conn_abort(c);
        return TR_ECLOSED;
    }
    struct wreq *wr = tr_malloc(sizeof(*wr) + total);
    size_t off = 0;
    for (i = 0; i < n; i++) {
        size_t from = skip < bufs[i].len ? skip : bufs[i].len;
        skip -= from;
        memcpy(wr->data + off, bufs[i].base + from, bufs[i].len - from);
        off += bufs[i].len - from;
    }
    wr->conn = c;
    wr->len = total;
    uv_buf_t b = uv_buf_init(wr->data, (unsigned)total);
    int rv = uv_write(&wr->req, (uv_stream_t *)c->tcp, &b, 1, write_cb);
    if (rv != 0) {
        tr_free(wr);
        conn_abort(c);
        return TR_ECLOSED;
    }
    c->queued += total;
    c->writes++;
    return 0;
}

static int conn_write(struct tr_httpd_conn *c, const void *p, size_t n)
{
    uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
    return conn_writev(c, &b, 1);
}

static void shutdown_cb(uv_shutdown_t *sr, int status)
{
    struct tr_httpd_conn *c = sr->data;
    tr_free(sr);
    if (c->closing)
        return;
    if (status < 0) {
        conn_abort(c);
        return;
    }
    /* Discard what the client still sends for a moment, then close. */
    if (!c->reading) {
        if (uv_read_start((uv_stream_t *)c->tcp, alloc_cb, read_cb) != 0) {
            conn_abort(c);
            return;
        }
        c->reading = 1;
    }
    set_timer(c, T_LINGER, LINGER_MS);
}

static void begin_linger(struct tr_httpd_conn *c)
{
    if (c->lingering || c->closing)
        return;
    c->lingering = 1;
    stop_timer(c);
    uv_shutdown_t *sr = tr_malloc(sizeof(*sr));
    sr->data = c;
    if (uv_shutdown(sr, (uv_stream_t *)c->tcp, shutdown_cb) != 0) {
        tr_free(sr);
        conn_abort(c);
    }
}

static void handover(struct tr_httpd_conn *c)
{
    uv_tcp_t *tcp = c->tcp;
    tr_httpd_upgrade_cb cb = c->upgrade_cb;
    void *arg = c->upgrade_arg;
    struct tr_buf rest = c->in;
    memset(&c->in, 0, sizeof(c->in));
    c->upgrade_cb = NULL;
    c->upgrading = 0;
    if (c->reading)
        uv_read_stop((uv_stream_t *)tcp);
    c->reading = 0;
    c->tcp = NULL;
    c->closing = 1;
    tcp->data = NULL;
    stop_timer(c);
    uv_close((uv_handle_t *)&c->timer, timer_close_cb);
    c->open_handles--; /* the socket is the app's now */
    cb(tcp, rest.p ? rest.p : "", rest.len, arg);
    tr_buf_free(&rest);
}

/* Every queued write has completed. */
static void conn_drained(struct tr_httpd_conn *c)
{
    if (c->upgrading && !c->req) {
        handover(c);
        return;
    }
    if (c->req && c->streaming && c->req->drain_cb) {
        c->req->drain_cb(&c->req->pub, c->req->drain_arg); /* may finish req */
        return;
    }
    if (c->close_after_write && !c->req)
        begin_linger(c);
    else if (c->tmode == T_IDLE)
        arm_idle(c); /* idle from now on */
}

/* ------------------------------------------------------------------------ */
/* Responses.                                                                 */

static int headers_ok(const char *const *headers, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!headers[i] || strpbrk(headers[i], "\r\n") || !strchr(headers[i], ':'))
            return 0;
    }
    return 1;
}

static int keep_alive_for(const struct tr_httpd_conn *c)
{
    return c->req_keep_alive && !c->srv->closing && !c->stop_parsing && !c->close_after_write;
}

static void build_head(struct tr_buf *h, int status, const char *const *headers, size_t n)
{
    tr_buf_printf(h, "HTTP/1.1 %d %s\r\n", status, tr_httpd_reason(status));
    for (size_t i = 0; i < n; i++) {
        tr_buf_add(h, headers[i], strlen(headers[i]));
        tr_buf_add(h, "\r\n", 2);
    }
}

/* After the app finished its request: go on with the connection. */
static void conn_after_response(struct tr_httpd_conn *c, int keep_alive)
{
    conn_drop_req(c);
    if (c->closing)
        return;
    if (!keep_alive) {
        c->close_after_write = 1;
        if (c->writes == 0)
            begin_linger(c);
        else
            arm_idle(c); /* a client that never reads the rest is dropped */
        return;
    }
    if (!c->processing)
        set_timer(c, T_RESUME, 0);
}

static struct tr_httpd_conn *req_conn(struct tr_httpd_req *req)
{
    return req ? req->conn_ : NULL;
}

int tr_httpd_respond(struct tr_httpd_req *req, int status, const char *const *headers, size_t n_headers,
                     const void *body, size_t len)
{
    struct tr_httpd_conn *c = req_conn(req);
    if (!c || c->req != (struct req_impl *)req || c->streaming || status < 100 || status > 999 ||
        (n_headers && !headers) || !headers_ok(headers, n_headers) || (len && !body))
        return TR_EINVAL;
    int keep = keep_alive_for(c);
    int no_body = (status >= 100 && status < 200) || status == 204 || status == 304;
    struct tr_buf h = {0};
    build_head(&h, status, headers, n_headers);
    if (!no_body)
        tr_buf_printf(&h, "Content-Length: %zu\r\n", len);
    tr_buf_printf(&h, "Connection: %s\r\n\r\n", keep ? "keep-alive" : "close");
    uv_buf_t bufs[2] = {uv_buf_init(h.p, (unsigned)h.len), uv_buf_init((char *)body, (unsigned)len)};
    unsigned nb = (no_body || c->head_only || len == 0) ? 1 : 2;
    int rv = conn_writev(c, bufs, nb);
    tr_buf_free(&h);
    conn_after_response(c, keep);
    return rv;
}

int tr_httpd_stream_start(struct tr_httpd_req *req, int status, const char *const *headers,
                          size_t n_headers, enum tr_httpd_stream_mode mode)
{
    struct tr_httpd_conn *c = req_conn(req);
    if (!c || c->req != (struct req_impl *)req || c->streaming || status < 200 || status > 999 ||
        (n_headers && !headers) || !headers_ok(headers, n_headers) ||
        (mode != TR_HTTPD_CHUNKED && mode != TR_HTTPD_RAW))
        return TR_EINVAL;
    if (mode == TR_HTTPD_CHUNKED && req->http_minor == 0)
        mode = TR_HTTPD_RAW; /* HTTP/1.0 has no chunked encoding */
    /* A 204 or 304 ends at its blank line: body bytes would read as the next
     * response. Written as for HEAD: the writes are dropped. */
    int no_body = status == 204 || status == 304;
    if (no_body)
        c->head_only = 1;
    c->streaming = 1;
    c->smode = mode;
    struct tr_buf h = {0};
    build_head(&h, status, headers, n_headers);
    if (mode == TR_HTTPD_CHUNKED)
        tr_buf_printf(&h, "%sConnection: %s\r\n\r\n", no_body ? "" : "Transfer-Encoding: chunked\r\n",
                   keep_alive_for(c) ? "keep-alive" : "close");
    else
        tr_buf_printf(&h, "Connection: close\r\n\r\n");
    int rv = conn_write(c, h.p, h.len);
    tr_buf_free(&h);
    return rv;
}

int tr_httpd_stream_write(struct tr_httpd_req *req, const void *data, size_t len)
{
    struct tr_httpd_conn *c = req_conn(req);
    if (!c || c->req != (struct req_impl *)req || !c->streaming || (len && !data))
        return TR_EINVAL;
    if (len == 0 || c->head_only)
        return c->closing ? TR_ECLOSED : 0;
    if (c->smode == TR_HTTPD_RAW)
        return conn_write(c, data, len);
    char sz[24];
    int n = snprintf(sz, sizeof(sz), "%zx\r\n", len);
    uv_buf_t bufs[3] = {uv_buf_init(sz, (unsigned)n), uv_buf_init((char *)data, (unsigned)len),
                        uv_buf_init((char *)"\r\n", 2)};
    return conn_writev(c, bufs, 3);
}

size_t tr_httpd_queued(const struct tr_httpd_req *req)
{
    return req && req->conn_ ? req->conn_->queued : 0;
}

int tr_httpd_stream_end(struct tr_httpd_req *req)
{
    struct tr_httpd_conn *c = req_conn(req);
    if (!c || c->req != (struct req_impl *)req || !c->streaming)
        return TR_EINVAL;
    int rv = 0, keep = 0;
    if (c->smode == TR_HTTPD_CHUNKED) {
        keep = keep_alive_for(c);
        if (!c->head_only)
            rv = conn_write(c, "0\r\n\r\n", 5);
    } else if (c->closing) {
        rv = TR_ECLOSED;
    }
    if (c->closing) {
        /* The close callback is on its way; finishing now means it won't run. */
        conn_drop_req(c);
        return TR_ECLOSED;
    }
    conn_after_response(c, keep);
    return rv;
}

void tr_httpd_on_drain(struct tr_httpd_req *req, void (*cb)(struct tr_httpd_req *req, void *arg), void *arg)
{
    struct req_impl *r = (struct req_impl *)req;
    r->drain_cb = cb;
    r->drain_arg = arg;
}

void tr_httpd_abort(struct tr_httpd_req *req)
{
    struct tr_httpd_conn *c = req_conn(req);
    if (c && c->req == (struct req_impl *)req)
        conn_abort(c); /* the close callback follows from the socket's close */
}

void tr_httpd_on_close(struct tr_httpd_req *req, void (*cb)(struct tr_httpd_req *req, void *arg), void *arg)
{
    struct req_impl *r = (struct req_impl *)req;
    r->close_cb = cb;
    r->close_arg = arg;
}

int tr_httpd_upgrade(struct tr_httpd_req *req, const void *head, size_t head_len, tr_httpd_upgrade_cb cb,
                     void *arg)
{
    struct tr_httpd_conn *c = req_conn(req);
    if (!c || c->req != (struct req_impl *)req || c->streaming || !cb || (head_len && !head))
        return TR_EINVAL;
    int rv = 0;
    if (head_len)
        rv = conn_write(c, head, head_len);
    if (rv == 0 && c->closing)
        rv = TR_ECLOSED;
    conn_drop_req(c);
    if (rv != 0)
        return rv;
    c->upgrading = 1;
    c->stop_parsing = 1;
    c->upgrade_cb = cb;
    c->upgrade_arg = arg;
    stop_timer(c);
    if (c->writes == 0)
        set_timer(c, T_HANDOVER, 0);
    return 0;
}

const char *tr_httpd_header(const struct tr_httpd_req *req, const char *name)
{
    for (size_t i = 0; i < req->n_headers; i++) {
        if (strcasecmp(req->headers[i].name, name) == 0)
            return req->headers[i].value;
    }
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Input.                                                                     */

/* Refuse the request being parsed with an error status and close. */
static void send_error(struct tr_httpd_conn *c, int status)
{
    static const char *codes[] = {"bad_request", "request_timeout", "payload_too_large",
                                  "header_fields_too_large", "version_not_supported"};
    const char *code = status == 408   ? codes[1]
                       : status == 413 ? codes[2]
                       : status == 431 ? codes[3]
                       : status == 505 ? codes[4]
                                       : codes[0];
    struct tr_buf b = {0};
    char body[160];
    int n = snprintf(body, sizeof(body), "{\"error\":{\"code\":\"%s\",\"message\":\"%s\"}}\n", code,
                     tr_httpd_reason(status));
    c->srv->st.bad_requests++;
    c->stop_parsing = 1;
    c->close_after_write = 1;
    c->in_message = 0;
    stop_timer(c);
    tr_buf_printf(&b,
               "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
               "Connection: close\r\n\r\n%s",
               status, tr_httpd_reason(status), n, body);
    int rv = conn_write(c, b.p, b.len);
    tr_buf_free(&b);
    if (rv == 0 && c->writes == 0)
        begin_linger(c);
    else if (rv == 0)
        arm_idle(c); /* a client that never reads the answer is dropped */
}

static struct tr_httpd_conn *pconn(http_parser *p)
{
    return p->data;
}

static int on_message_begin(http_parser *p)
{
    struct tr_httpd_conn *c = pconn(p);
    c->in_message = 1;
    c->hbuf.len = 0;
    c->url_len = 0;
    c->n_hdrs = 0;
    c->last_was_value = 0;
    c->body.len = 0;
    c->err_status = 0;
    set_timer(c, T_REQUEST, c->srv->o.request_timeout_ms);
    return 0;
}

static int header_room(struct tr_httpd_conn *c, size_t n)
{
    if (c->hbuf.len + n > c->srv->o.max_header_bytes) {
        c->err_status = 431;
        return 0;
    }
    return 1;
}

static int on_url(http_parser *p, const char *at, size_t n)
{
    struct tr_httpd_conn *c = pconn(p);
    if (!header_room(c, n))
        return -1;
    tr_buf_add(&c->hbuf, at, n);
    c->url_len += n;
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
    struct tr_httpd_conn *c = pconn(p);
    if (!header_room(c, n))
        return -1;
    if (c->n_hdrs == 0 || c->last_was_value) {
        if (c->n_hdrs == MAX_HEADERS) {
            c->err_status = 431;
            return -1;
        }
        struct hspan *h = &c->hdrs[c->n_hdrs++];
        h->name_off = c->hbuf.len;
        h->name_len = 0;
        h->value_off = 0;
        h->value_len = 0;
        c->last_was_value = 0;
    }
    tr_buf_add(&c->hbuf, at, n);
    c->hdrs[c->n_hdrs - 1].name_len += n;
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
    struct tr_httpd_conn *c = pconn(p);
    if (!header_room(c, n))
        return -1;
    /* http-parser does not check the first byte of a value (or of a folded
     * line): a NUL would cut the app's string short. RFC 9110 5.5: refuse. */
    if (memchr(at, '\0', n)) {
        c->err_status = 400;
        return -1;
    }
    struct hspan *h = &c->hdrs[c->n_hdrs - 1];
    if (!c->last_was_value) {
        h->value_off = c->hbuf.len;
        h->value_len = 0;
        c->last_was_value = 1;
    }
    tr_buf_add(&c->hbuf, at, n);
    h->value_len += n;
    return 0;
}

static int span_is(const struct tr_httpd_conn *c, const struct hspan *h, const char *name, const char *value)
{
    size_t nl = strlen(name), vl = strlen(value);
    return h->name_len == nl && strncasecmp(c->hbuf.p + h->name_off, name, nl) == 0 && h->value_len >= vl &&
           strncasecmp(c->hbuf.p + h->value_off, value, vl) == 0;
}

static int on_headers_complete(http_parser *p)
{
    struct tr_httpd_conn *c = pconn(p);
    size_t max = c->srv->o.max_body_bytes;
    /* http-parser takes any "HTTP/d.d"; the app is promised HTTP/1.x. */
    if (p->http_major != 1) {
        c->err_status = 505;
        return -1;
    }
    if (p->content_length != ULLONG_MAX && p->content_length > 0 && !(p->flags & F_CHUNKED)) {
        if (p->content_length > max) {
            c->err_status = 413;
            return -1;
        }
        tr_buf_reserve(&c->body, (size_t)p->content_length);
    }
    /* An HTTP/1.0 client does not know interim responses: its expectation
     * is ignored (RFC 9110 10.1.1). */
    for (size_t i = 0; i < c->n_hdrs && p->http_minor >= 1; i++) {
        if (span_is(c, &c->hdrs[i], "expect", "100-continue")) {
            static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
            conn_write(c, cont, sizeof(cont) - 1);
            break;
        }
    }
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    struct tr_httpd_conn *c = pconn(p);
    if (c->body.len + n > c->srv->o.max_body_bytes) {
        c->err_status = 413;
        return -1;
    }
    tr_buf_add(&c->body, at, n);
    return 0;
}

static int on_message_complete(http_parser *p)
{
    struct tr_httpd_conn *c = pconn(p);
    c->completed = 1;
    c->in_message = 0;
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

static void trim(const char **s, size_t *n)
{
    while (*n && (**s == ' ' || **s == '\t')) {
        (*s)++;
        (*n)--;
    }
    while (*n && ((*s)[*n - 1] == ' ' || (*s)[*n - 1] == '\t'))
        (*n)--;
}

/* Build the app's view of the parsed request: one block holding the struct,
 * the header array and the strings. */
static struct req_impl *make_req(struct tr_httpd_conn *c)
{
    size_t strbytes = c->hbuf.len + c->url_len + 2 * c->n_hdrs + 4; /* path is a second copy of the url's head */
    size_t hdr_bytes = c->n_hdrs * sizeof(struct tr_httpd_header);
    struct req_impl *r = tr_calloc(1, sizeof(*r) + hdr_bytes + strbytes);
    struct tr_httpd_header *hs = (struct tr_httpd_header *)(r + 1);
    char *s = (char *)hs + hdr_bytes;
    const char *url = c->hbuf.p ? c->hbuf.p : "";

    memcpy(s, url, c->url_len);
    s[c->url_len] = '\0';
    r->pub.target = s;
    s += c->url_len + 1;
    const char *q = memchr(r->pub.target, '?', c->url_len);
    size_t plen = q ? (size_t)(q - r->pub.target) : c->url_len;
    memcpy(s, r->pub.target, plen);
    s[plen] = '\0';
    r->pub.path = s;
    s += plen + 1;
    r->pub.query = q ? q + 1 : "";

    for (size_t i = 0; i < c->n_hdrs; i++) {
        const struct hspan *h = &c->hdrs[i];
        const char *v = c->hbuf.p + h->value_off;
        size_t vl = h->value_len;
        trim(&v, &vl);
        memcpy(s, c->hbuf.p + h->name_off, h->name_len);
        s[h->name_len] = '\0';
        hs[i].name = s;
        s += h->name_len + 1;
        memcpy(s, v, vl);
        s[vl] = '\0';
        hs[i].value = s;
        s += vl + 1;
    }
    r->pub.headers = hs;
    r->pub.n_headers = c->n_hdrs;
    r->pub.method = http_method_str((enum http_method)c->parser.method);
    r->pub.http_minor = c->parser.http_minor > 1 ? 1 : c->parser.http_minor; /* 1.2+ as 1.1 (RFC 9110 2.5) */
    r->pub.upgrade = c->parser.upgrade;
    if (c->body.p) {
        r->body = c->body.p;
        r->pub.body = c->body.p;
        r->pub.body_len = c->body.len;
        memset(&c->body, 0, sizeof(c->body));
    } else {
        r->pub.body = "";
    }
    r->pub.conn_ = c;
    return r;
}

static void dispatch(struct tr_httpd_conn *c)
{
    struct tr_httpd *s = c->srv;
    stop_timer(c);
    c->req_keep_alive = http_should_keep_alive(&c->parser) && !c->parser.upgrade;
    c->head_only = c->parser.method == HTTP_HEAD;
    c->req = make_req(c);
    s->st.requests++;
    s->o.on_request(&c->req->pub, s->o.ud);
}

static size_t inbuf_limit(const struct tr_httpd_conn *c)
{
    return c->srv->o.max_header_bytes + INBUF_SLACK;
}

static void update_reading(struct tr_httpd_conn *c)
{
    if (c->closing)
        return;
    int want = c->lingering || c->in.len < inbuf_limit(c);
    if (c->upgrading)
        want = 0;
    if (want && !c->reading) {
        if (uv_read_start((uv_stream_t *)c->tcp, alloc_cb, read_cb) != 0) {
            conn_abort(c);
            return;
        }
        c->reading = 1;
    } else if (!want && c->reading) {
        uv_read_stop((uv_stream_t *)c->tcp);
        c->reading = 0;
    }
}

/* Parse buffered input and hand complete requests to the app, one at a time. */
static void conn_process(struct tr_httpd_conn *c)
{
    if (c->processing)
        return;
    c->processing = 1;
    while (!c->closing && !c->req && !c->stop_parsing && !c->close_after_write && c->in.len > 0) {
        http_parser_pause(&c->parser, 0);
        size_t n = http_parser_execute(&c->parser, &parser_settings, c->in.p, c->in.len);
        buf_consume(&c->in, n);
        if (c->completed) {
            c->completed = 0;
            if (c->parser.upgrade)
                c->stop_parsing = 1; /* what follows is another protocol */
            dispatch(c);
            continue;
        }
        enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
        if (e != HPE_OK) {
            send_error(c, c->err_status ? c->err_status : 400);
            break;
        }
    }
    c->processing = 0;
    if (c->closing)
        return;
    if (!c->req && !c->in_message && !c->close_after_write && !c->stop_parsing && !c->lingering)
        arm_idle(c);
    update_reading(c);
}

static void timer_cb(uv_timer_t *t)
{
    struct tr_httpd_conn *c = t->data;
    enum tmode m = c->tmode;
    c->tmode = T_NONE;
    switch (m) {
    case T_IDLE:
        if (c->writes > 0 && uv_stream_get_write_queue_size((uv_stream_t *)c->tcp) < c->idle_unsent) {
            arm_idle(c);
            break;
        }
        conn_abort(c);
        break;
    case T_LINGER:
        conn_abort(c);
        break;
    case T_REQUEST:
        if (c->in_message && !c->req)
            send_error(c, 408);
        break;
    case T_RESUME:
        conn_process(c);
        break;
    case T_HANDOVER:
        if (c->upgrading && c->writes == 0)
            handover(c);
        break;
    case T_NONE:
        break;
    }
}

static void alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    struct tr_httpd_conn *c = h->data;
    tr_buf_reserve(&c->in, READ_CHUNK);
    b->base = c->in.p + c->in.len;
    b->len = READ_CHUNK;
}

/* The client half-closed, and answers the app finished are still unsent:
 * send them, then close as after "Connection: close". The idle timeout
 * bounds a client that never reads them. */
static void drain_then_close(struct tr_httpd_conn *c)
{
    uv_read_stop((uv_stream_t *)c->tcp);
    c->reading = 0;
    c->in.len = 0;
    c->in_message = 0;
    c->stop_parsing = 1;
    c->close_after_write = 1;
    arm_idle(c);
}

static void read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *b)
{
    struct tr_httpd_conn *c = st->data;
    if (c->closing)
        return;
    if (nread == UV_EOF && !c->req && c->writes > 0 && !c->upgrading && !c->lingering) {
        drain_then_close(c);
        return;
    }
    if (nread < 0) {
        /* EOF or error: the client is gone (a pending request hears of it). */
        conn_abort(c);
        return;
    }
    if (nread == 0)
        return;
    if (c->lingering) {
        return; /* discarded: alloc_cb reserved but did not advance len */
    }
    c->in.len += (size_t)nread;
    c->in.p[c->in.len] = '\0';
    if (c->stop_parsing || c->close_after_write || c->req) {
        if (!c->upgrading && !c->parser.upgrade && (c->stop_parsing || c->close_after_write))
            c->in.len = 0; /* nobody will read these */
        update_reading(c);
        return;
    }
    conn_process(c);
}

/* ------------------------------------------------------------------------ */
/* Accepting.                                                                 */

static void refused_close_cb(uv_handle_t *h)
{
    struct tr_httpd *s = h->data;
    tr_free(h);
    s->refusing--;
    srv_maybe_free(s);
}

static void on_connection(uv_stream_t *ls, int status)
{
    struct tr_httpd *s = ls->data;
    if (status < 0 || s->closing) {
        tr_log(TR_LOG_WARN, "httpd: accept: %s", uv_strerror(status));
        return;
    }
    uv_tcp_t *tcp = tr_malloc(sizeof(*tcp));
    uv_tcp_init(s->loop, tcp);
    if (uv_accept(ls, (uv_stream_t *)tcp) != 0 || s->n_conns >= s->o.max_connections) {
        tcp->data = s;
        s->refusing++;
        s->st.refused++;
        uv_close((uv_handle_t *)tcp, refused_close_cb);
        return;
    }
    uv_tcp_nodelay(tcp, 1);
    struct tr_httpd_conn *c = tr_calloc(1, sizeof(*c));
    c->srv = s;
    c->tcp = tcp;
    tcp->data = c;
    uv_timer_init(s->loop, &c->timer);
    c->timer.data = c;
    c->open_handles = 2;
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->n_conns++;
    s->st.accepted++;
    if (uv_read_start((uv_stream_t *)tcp, alloc_cb, read_cb) != 0) {
        conn_abort(c);
        return;
    }
    c->reading = 1;
    arm_idle(c);
}

int tr_httpd_start(uv_loop_t *loop, const struct tr_httpd_opts *opts, struct tr_httpd **out, struct tr_err *err)
{
    struct tr_err scratch;
    struct sockaddr_storage ss;
    const char *host;
    int rv;

    if (!err)
        err = &scratch;
    if (!loop || !opts || !opts->on_request || !out || opts->port < 0 || opts->port > 65535)
        return tr_err_set(err, TR_EINVAL, "httpd start: bad options");
    host = opts->host ? opts->host : "127.0.0.1";
    if (uv_ip4_addr(host, opts->port, (struct sockaddr_in *)&ss) != 0 &&
        uv_ip6_addr(host, opts->port, (struct sockaddr_in6 *)&ss) != 0)
        return tr_err_set(err, TR_EINVAL, "httpd start: bad address %s", host);

    tr__sigpipe_ignore();
    struct tr_httpd *s = tr_calloc(1, sizeof(*s));
    s->loop = loop;
    s->o = *opts;
    if (!s->o.max_connections)
        s->o.max_connections = DEF_MAX_CONNS;
    if (!s->o.max_header_bytes)
        s->o.max_header_bytes = DEF_MAX_HEADER;
    if (!s->o.max_body_bytes)
        s->o.max_body_bytes = DEF_MAX_BODY;
    if (!s->o.idle_timeout_ms)
        s->o.idle_timeout_ms = DEF_IDLE_MS;
    if (!s->o.request_timeout_ms)
        s->o.request_timeout_ms = DEF_REQUEST_MS;
    if (!s->o.max_write_queue)
        s->o.max_write_queue = DEF_MAX_WQ;
    s->o.host = NULL; /* not kept */

    uv_tcp_init(loop, &s->listener);
    s->listener.data = s;
    s->listener_open = 1;
    rv = uv_tcp_bind(&s->listener, (const struct sockaddr *)&ss, 0);
    if (rv == 0)
        rv = uv_listen((uv_stream_t *)&s->listener, 511, on_connection);
    if (rv != 0) {
        tr_err_set(err, TR_ESYS, "httpd listen %s:%d: %s", host, opts->port, uv_strerror(rv));
        goto err_after_listener;
    }
    *out = s;
    return 0;

err_after_listener:
    /* The close callback frees s; nothing else is running. */
    s->closing = 1;
    uv_close((uv_handle_t *)&s->listener, listener_close_cb);
    return TR_ESYS;
}

int tr_httpd_port(const struct tr_httpd *s)
{
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    if (uv_tcp_getsockname(&s->listener, (struct sockaddr *)&ss, &len) != 0)
        return -1;
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

void tr_httpd_close(struct tr_httpd *s, void (*cb)(void *arg), void *arg)
{
    if (s->closing)
        return;
    s->closing = 1;
    s->close_cb = cb;
    s->close_arg = arg;
    uv_close((uv_handle_t *)&s->listener, listener_close_cb);
    for (struct tr_httpd_conn *c = s->conns; c; c = c->next)
        conn_abort(c);
}

void tr_httpd_stats(const struct tr_httpd *s, struct tr_httpd_stats *out)
{
    *out = s->st;
    out->connections = s->n_conns;
}
