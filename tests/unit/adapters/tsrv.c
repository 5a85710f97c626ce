/* The test server: see tsrv.h. */
#include "tsrv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum pend_kind { P_DELAY, P_STREAM, P_SSE, P_FLOOD };

struct pend {
    struct tsrv *s;
    struct tr_httpd_req *req;
    uv_timer_t timer;
    enum pend_kind kind;
    long n, i, ms;
};

static long qint(const char *query, const char *key, long def)
{
    size_t kl = strlen(key);
    const char *p = query;
    while (p && *p) {
        if (strncmp(p, key, kl) == 0 && p[kl] == '=')
            return strtol(p + kl + 1, NULL, 10);
        p = strchr(p, '&');
        if (p)
            p++;
    }
    return def;
}

static void pend_free_cb(uv_handle_t *h)
{
    free(h->data);
}

static void pend_done(struct pend *p)
{
    p->req = NULL;
    uv_timer_stop(&p->timer);
    uv_close((uv_handle_t *)&p->timer, pend_free_cb);
}

static void pend_gone_cb(struct tr_httpd_req *req, void *arg)
{
    struct pend *p = arg;
    atomic_fetch_add(&p->s->gone, 1);
    pend_done(p);
}

static void pend_timer_cb(uv_timer_t *t)
{
    struct pend *p = t->data;
    char text[64];
    int n, rv;

    switch (p->kind) {
    case P_DELAY:
        n = snprintf(text, sizeof(text), "delayed %ld", p->i);
        tr_httpd_respond(p->req, 200, NULL, 0, text, (size_t)n);
        pend_done(p);
        return;
    case P_STREAM:
        n = snprintf(text, sizeof(text), "chunk %ld\n", p->i);
        rv = tr_httpd_stream_write(p->req, text, (size_t)n);
        if (rv != 0)
            return; /* the close callback follows */
        if (++p->i == p->n) {
            tr_httpd_stream_end(p->req);
            atomic_fetch_add(&p->s->streams_ended, 1);
            pend_done(p);
            return;
        }
        break;
    case P_SSE:
        if (tr_httpd_stream_write(p->req, "data: tick\n\n", 12) != 0)
            return;
        break;
    case P_FLOOD: {
        static char block[65536];
        if (tr_httpd_stream_write(p->req, block, sizeof(block)) != 0)
            return;
        break;
    }
    }
    uv_timer_start(&p->timer, pend_timer_cb, (uint64_t)p->ms, 0);
}

static void pend_start(struct tsrv *s, struct tr_httpd_req *req, enum pend_kind kind, long n, long i, long ms)
{
    struct pend *p = calloc(1, sizeof(*p));
    p->s = s;
    p->req = req;
    p->kind = kind;
    p->n = n;
    p->i = i;
    p->ms = ms;
    uv_timer_init(&s->loop, &p->timer);
    p->timer.data = p;
    tr_httpd_on_close(req, pend_gone_cb, p);
    uv_timer_start(&p->timer, pend_timer_cb, (uint64_t)ms, 0);
}

struct upg_write {
    uv_write_t w;
    char data[];
};

static void upg_close_cb(uv_handle_t *h)
{
    tr_free(h);
}

static void upg_write_cb(uv_write_t *w, int status)
{
    uv_close((uv_handle_t *)w->handle, upg_close_cb);
    free(w);
}

static void upgraded_cb(uv_tcp_t *tcp, const void *rest, size_t rest_len, void *arg)
{
    if (!tcp)
        return;
    size_t n = 9 + rest_len;
    struct upg_write *uw = malloc(sizeof(*uw) + n);
    memcpy(uw->data, "upgraded:", 9);
    memcpy(uw->data + 9, rest, rest_len);
    uv_buf_t b = uv_buf_init(uw->data, (unsigned)n);
    if (uv_write(&uw->w, (uv_stream_t *)tcp, &b, 1, upg_write_cb) != 0) {
        free(uw);
        uv_close((uv_handle_t *)tcp, upg_close_cb);
    }
}

static void on_request(struct tr_httpd_req *req, void *ud)
{
    struct tsrv *s = ud;
    char text[64];
    int n;

    struct tr_httpd_stats st;
    atomic_fetch_add(&s->requests, 1);
    tr_httpd_stats(s->httpd, &st);
    atomic_store(&s->conns_seen, st.connections);
    if (st.connections > atomic_load(&s->max_conns))
        atomic_store(&s->max_conns, st.connections);
    if (strcmp(req->path, "/hello") == 0) {
        atomic_fetch_add(&s->hello, 1);
        n = snprintf(text, sizeof(text), "hello %ld", qint(req->query, "i", 0));
        static const char *const hdrs[] = {"Content-Type: text/plain", "X-Test: yes"};
        tr_httpd_respond(req, 200, hdrs, 2, text, (size_t)n);
    } else if (strcmp(req->path, "/echo") == 0) {
        tr_httpd_respond(req, 200, NULL, 0, req->body, req->body_len);
    } else if (strcmp(req->path, "/delay") == 0) {
        pend_start(s, req, P_DELAY, 0, qint(req->query, "i", 0), qint(req->query, "ms", 10));
    } else if (strcmp(req->path, "/big") == 0) {
        size_t len = (size_t)qint(req->query, "n", 0);
        char *body = malloc(len + 1);
        memset(body, 'x', len);
        tr_httpd_respond(req, 200, NULL, 0, body, len);
        free(body);
    } else if (strcmp(req->path, "/stream") == 0) {
        tr_httpd_stream_start(req, 200, NULL, 0, TR_HTTPD_CHUNKED);
        pend_start(s, req, P_STREAM, qint(req->query, "n", 3), 0, qint(req->query, "ms", 5));
    } else if (strcmp(req->path, "/sse") == 0) {
        static const char *const hdrs[] = {"Content-Type: text/event-stream", "Cache-Control: no-cache"};
        tr_httpd_stream_start(req, 200, hdrs, 2, TR_HTTPD_RAW);
        pend_start(s, req, P_SSE, 0, 0, 5);
    } else if (strcmp(req->path, "/flood") == 0) {
        tr_httpd_stream_start(req, 200, NULL, 0, TR_HTTPD_CHUNKED);
        pend_start(s, req, P_FLOOD, 0, 0, 1);
    } else if (strcmp(req->path, "/upgrade") == 0 && req->upgrade) {
        static const char head[] = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: test\r\nConnection: Upgrade\r\n\r\n";
        tr_httpd_upgrade(req, head, sizeof(head) - 1, upgraded_cb, s);
    } else {
        tr_httpd_respond(req, 404, NULL, 0, "not found", 9);
    }
}

static void closed_cb(void *arg)
{
    struct tsrv *s = arg;
    uv_close((uv_handle_t *)&s->wake, NULL);
}

static void wake_cb(uv_async_t *a)
{
    struct tsrv *s = a->data;
    if (atomic_load(&s->stopping) && s->httpd) {
        tr_httpd_stats(s->httpd, &s->stats);
        tr_httpd_close(s->httpd, closed_cb, s);
        s->httpd = NULL;
    }
}

static void thread_main(void *arg)
{
    struct tsrv *s = arg;
    struct tr_err err;
    uv_loop_init(&s->loop);
    uv_async_init(&s->loop, &s->wake, wake_cb);
    s->wake.data = s;
    s->start_rv = tr_httpd_start(&s->loop, &s->opts, &s->httpd, &err);
    if (s->start_rv != 0) {
        fprintf(stderr, "tsrv: %s\n", err.msg);
        uv_close((uv_handle_t *)&s->wake, NULL);
    } else {
        s->port = tr_httpd_port(s->httpd);
    }
    uv_sem_post(&s->ready);
    uv_run(&s->loop, UV_RUN_DEFAULT);
    uv_loop_close(&s->loop);
}

int tsrv_start(struct tsrv *s, const struct tr_httpd_opts *opts)
{
    memset(s, 0, sizeof(*s));
    if (opts)
        s->opts = *opts;
    s->opts.host = "127.0.0.1";
    s->opts.port = 0;
    s->opts.on_request = on_request;
    s->opts.ud = s;
    uv_sem_init(&s->ready, 0);
    uv_thread_create(&s->thread, thread_main, s);
    uv_sem_wait(&s->ready);
    uv_sem_destroy(&s->ready);
    if (s->start_rv != 0) {
        uv_thread_join(&s->thread);
        return s->start_rv;
    }
    return 0;
}

void tsrv_stop(struct tsrv *s)
{
    atomic_store(&s->stopping, 1);
    uv_async_send(&s->wake);
    uv_thread_join(&s->thread);
}
