/* The engine behind the runtime's HTTP/1.1 server.
 *
 * Happy path: a request arrives, the engine decides the whole reply at once,
 * the reply waits out its delay on a uv_timer (never sleeping), then goes out
 * as one response or as a stream of SSE events, paced by the same timer when
 * the step asks for gaps between chunks.
 *
 * Failure modes: the client may leave at any point; the request's close
 * callback then drops the pending reply and its timer. A scripted truncation
 * sends a raw response that stops short and closes the connection. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "tools/mockllm/mockllm.h"

#define DEFAULT_MAX_BODY (4u << 20)

struct mock_server {
    uv_loop_t *loop;
    struct tr_httpd *httpd;
    struct mock_engine *engine;
    void (*close_cb)(void *arg);
    void *close_arg;
};

/* One request between its arrival and its last byte. Freed in the timer's
 * close callback, which runs after the request is finished or gone. */
struct pending {
    struct mock_server *srv;
    struct tr_httpd_req *req; /* NULL once finished or gone */
    struct mock_reply reply;
    uv_timer_t timer;
    size_t next_event;
    int closing;
};

static void pending_free_cb(uv_handle_t *h)
{
    struct pending *p = h->data;
    mock_reply_free(&p->reply);
    tr_free(p);
}

/* The request is finished (or gone): drop it and release the pending. */
static void pending_done(struct pending *p)
{
    p->req = NULL;
    if (p->closing)
        return;
    p->closing = 1;
    uv_timer_stop(&p->timer);
    uv_close((uv_handle_t *)&p->timer, pending_free_cb);
}

static void gone_cb(struct tr_httpd_req *req, void *arg)
{
    pending_done(arg);
}

static void pump(struct pending *p);

static void pump_cb(uv_timer_t *t)
{
    struct pending *p = t->data;
    if (p->req != NULL)
        pump(p);
}

static void pump(struct pending *p)
{
    const struct mock_reply *r = &p->reply;
    size_t limit = r->events_cut < r->n_events ? r->events_cut : r->n_events;

    while (p->next_event < limit) {
        const char *ev = r->events[p->next_event++];
        if (tr_httpd_stream_write(p->req, ev, strlen(ev)) != 0)
            return; /* the connection is going away; gone_cb follows */
        if (r->chunk_delay_ms > 0 && p->next_event < limit) {
            uv_timer_start(&p->timer, pump_cb, r->chunk_delay_ms, 0);
            return;
        }
    }
    /* In raw mode (truncation) ending the stream closes the connection. */
    tr_httpd_stream_end(p->req);
    pending_done(p);
}

static void begin(struct pending *p)
{
    const struct mock_reply *r = &p->reply;
    char ctype[64], retry[48], clen[48];
    const char *headers[4];
    size_t n = 0;

    snprintf(ctype, sizeof(ctype), "Content-Type: %s", r->content_type);
    headers[n++] = ctype;
    if (r->retry_after >= 0) {
        snprintf(retry, sizeof(retry), "Retry-After: %d", r->retry_after);
        headers[n++] = retry;
    }
    if (r->streaming) {
        headers[n++] = "Cache-Control: no-cache";
        int truncated = r->events_cut != SIZE_MAX;
        if (tr_httpd_stream_start(p->req, r->status, headers, n,
                                  truncated ? TR_HTTPD_RAW : TR_HTTPD_CHUNKED) != 0)
            return; /* gone_cb follows */
        pump(p);
        return;
    }
    if (r->body_cut == SIZE_MAX) {
        tr_httpd_respond(p->req, r->status, headers, n, r->body, r->body_len);
        pending_done(p);
        return;
    }
    /* Announce the whole body, send part of it, close. */
    snprintf(clen, sizeof(clen), "Content-Length: %zu", r->body_len);
    headers[n++] = clen;
    if (tr_httpd_stream_start(p->req, r->status, headers, n, TR_HTTPD_RAW) != 0)
        return;
    if (tr_httpd_stream_write(p->req, r->body, r->body_cut) != 0)
        return;
    tr_httpd_stream_end(p->req);
    pending_done(p);
}

static void delay_cb(uv_timer_t *t)
{
    struct pending *p = t->data;
    if (p->req != NULL)
        begin(p);
}

static void on_request(struct tr_httpd_req *req, void *ud)
{
    struct mock_server *s = ud;
    struct pending *p = tr_calloc(1, sizeof(*p));

    p->srv = s;
    p->req = req;
    mock_engine_handle(s->engine, req->method, req->path, tr_httpd_header(req, "Authorization"),
                       req->body, req->body_len, (int64_t)time(NULL), &p->reply);
    tr_log(TR_LOG_INFO, "%s%s", p->reply.log,
           p->reply.delay_ms > 0 ? " (delayed)" : "");
    uv_timer_init(s->loop, &p->timer);
    p->timer.data = p;
    tr_httpd_on_close(req, gone_cb, p);
    if (p->reply.delay_ms > 0)
        uv_timer_start(&p->timer, delay_cb, p->reply.delay_ms, 0);
    else
        begin(p);
}

int mock_server_start(uv_loop_t *loop, const struct mock_server_opts *opts,
                      struct mock_engine *engine, struct mock_server **out, struct tr_err *err)
{
    struct mock_server *s = tr_calloc(1, sizeof(*s));
    struct tr_httpd_opts ho = {
        .host = opts->host,
        .port = opts->port,
        .max_body_bytes = opts->max_body_bytes != 0 ? opts->max_body_bytes : DEFAULT_MAX_BODY,
        .on_request = on_request,
        .ud = s,
    };

    s->loop = loop;
    s->engine = engine;
    int rv = tr_httpd_start(loop, &ho, &s->httpd, err);
    if (rv != 0) {
        tr_free(s);
        return rv;
    }
    *out = s;
    return 0;
}

int mock_server_port(const struct mock_server *s)
{
    return tr_httpd_port(s->httpd);
}

static void closed_cb(void *arg)
{
    struct mock_server *s = arg;
    if (s->close_cb != NULL)
        s->close_cb(s->close_arg);
    tr_free(s);
}

void mock_server_close(struct mock_server *s, void (*cb)(void *arg), void *arg)
{
    s->close_cb = cb;
    s->close_arg = arg;
    tr_httpd_close(s->httpd, closed_cb, s);
}
