/* The authenticated raft transport: raft_uv_tcp's job (TCP listen/connect
 * for raft's libuv I/O) with the cluster handshake of raft/auth.c instead of
 * raft_uv_tcp's plain preamble.
 *
 * Happy path, incoming: the listener accepts a TCP connection into a handle
 * allocated with raft_malloc (raft frees it with raft_free once it closes
 * it), runs tr_auth_accept on it, and on success hands raft the stream with
 * the peer's proven id and advertised address (raft reads it next).
 * Outgoing: connect() resolves "host:port" (numeric, or getaddrinfo on the
 * thread pool), connects, runs tr_auth_connect expecting the id raft asked
 * for, and on success gives raft the stream (raft writes to it next).
 *
 * Failure modes: a failed resolve, connect or handshake closes the handle;
 * raft's connect callback gets RAFT_NOCONNECTION and retries later. A failed
 * incoming handshake closes the connection; raft never hears of it. Both are
 * logged, at most LOG_BURST lines per LOG_WINDOW_MS (then one line counting
 * what was left out), so a port scan cannot flood the log. At most
 * MAX_PENDING_IN incoming handshakes run at once; more connections are
 * closed at once. Each handshake has its own timeout (TR_AUTH_TIMEOUT_MS).
 *
 * Close (raft's io close calls t->close): stop listening, cancel every
 * resolve, connect and handshake; raft's pending connect callbacks get
 * RAFT_CANCELED; the close callback runs once every handle and request is
 * done, never from inside t->close. The accept callback is never called once
 * close has begun.
 *
 * Invariant: p->pending counts what must finish before the close callback:
 * the listener (once initialised), the closer handle, every in_conn and
 * every out_conn.
 */
#include "raft/auth.h"

#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <raft.h>
#include <raft/uv.h>

#define MAX_PENDING_IN 128
#define LOG_WINDOW_MS 10000
#define LOG_BURST 5

struct in_conn;
struct out_conn;

struct tpt {
    struct raft_uv_transport *t;
    uv_loop_t *loop;
    unsigned char key[TR_CLUSTER_KEY_LEN];
    uint64_t id;
    char address[TR_AUTH_ADDRESS_MAX + 1];
    raft_uv_accept_cb accept_cb;
    uv_tcp_t listener;
    int listener_init;
    uv_idle_t closer;            /* makes the close callback asynchronous */
    struct in_conn *ins;
    struct out_conn *outs;
    unsigned n_ins;
    unsigned pending;
    int closing;
    raft_uv_transport_close_cb close_cb;
    uint64_t refused;
    uint64_t log_window;         /* uv_now at the start of the log window */
    unsigned log_lines;
    uint64_t log_dropped;
};

struct in_conn {
    struct tpt *p;
    uv_tcp_t *tcp;               /* raft_malloc'd: raft frees it after accept */
    struct tr_auth *auth;
    char from[64];               /* the remote socket address, for logs */
    struct in_conn *prev, *next;
};

enum out_stage { OUT_RESOLVING, OUT_CONNECTING, OUT_HANDSHAKE, OUT_CLOSING };

struct out_conn {
    struct tpt *p;
    struct raft_uv_connect *req;
    uint64_t id;
    char address[TR_AUTH_ADDRESS_MAX + 1];
    enum out_stage stage;
    int status;                  /* for raft's callback once the handle closed */
    uv_getaddrinfo_t gai;
    uv_connect_t creq;
    uv_tcp_t *tcp;               /* raft_malloc'd: raft frees it after success */
    struct tr_auth *auth;
    struct out_conn *prev, *next;
};

/* ---- helpers ----------------------------------------------------------------- */

static void refusal(struct tpt *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void refusal(struct tpt *p, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    uint64_t now = uv_now(p->loop);
    p->refused++;
    if (now - p->log_window >= LOG_WINDOW_MS) {
        if (p->log_dropped > 0)
            tr_log(TR_LOG_WARN, "raft auth: %llu more refused connections not logged",
                   (unsigned long long)p->log_dropped);
        p->log_window = now;
        p->log_lines = 0;
        p->log_dropped = 0;
    }
    if (p->log_lines >= LOG_BURST) {
        p->log_dropped++;
        return;
    }
    p->log_lines++;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    tr_log(TR_LOG_WARN, "raft auth (%s): %s", p->address, msg);
}

static void maybe_closed(struct tpt *p)
{
    if (p->closing && p->pending == 0 && p->close_cb != NULL) {
        raft_uv_transport_close_cb cb = p->close_cb;
        p->close_cb = NULL;
        cb(p->t);
    }
}

static void pending_closed_cb(uv_handle_t *h)
{
    struct tpt *p = h->data;
    p->pending--;
    maybe_closed(p);
}

/* Split "host:port" or "[v6]:port". */
static int split_address(const char *address, char *host, size_t cap, char *port, size_t pcap)
{
    const char *colon;
    size_t hn;
    if (address[0] == '[') {
        const char *end = strchr(address, ']');
        if (end == NULL || end[1] != ':')
            return -1;
        hn = (size_t)(end - address - 1);
        memcpy(host, address + 1, hn < cap ? hn : 0);
        colon = end + 1;
    } else {
        colon = strrchr(address, ':');
        if (colon == NULL)
            return -1;
        hn = (size_t)(colon - address);
        memcpy(host, address, hn < cap ? hn : 0);
    }
    if (hn == 0 || hn >= cap || strlen(colon + 1) == 0 || strlen(colon + 1) >= pcap)
        return -1;
    host[hn] = '\0';
    strcpy(port, colon + 1);
    for (const char *c = port; *c; c++)
        if (*c < '0' || *c > '9')
            return -1;
    if (atoi(port) <= 0 || atoi(port) > 65535)
        return -1;
    return 0;
}

/* A numeric address into *ss: 0, or -1 when host is a name. */
static int numeric_address(const char *host, const char *port, struct sockaddr_storage *ss)
{
    int pn = atoi(port);
    if (uv_ip4_addr(host, pn, (struct sockaddr_in *)ss) == 0)
        return 0;
    if (uv_ip6_addr(host, pn, (struct sockaddr_in6 *)ss) == 0)
        return 0;
    return -1;
}

/* ---- init, listen, accept ------------------------------------------------------ */

static int tpt_init(struct raft_uv_transport *t, raft_id id, const char *address)
{
    struct tpt *p = t->impl;
    char host[TR_AUTH_ADDRESS_MAX + 1], port[16];
    size_t n = strlen(address);
    if (id == 0 || n == 0 || n > TR_AUTH_ADDRESS_MAX ||
        split_address(address, host, sizeof host, port, sizeof port) != 0) {
        snprintf(t->errmsg, sizeof t->errmsg, "bad address \"%.200s\" (host:port)", address);
        return RAFT_INVALID;
    }
    p->id = id;
    memcpy(p->address, address, n + 1);
    return 0;
}

static void in_unlink(struct in_conn *c)
{
    struct tpt *p = c->p;
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        p->ins = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    p->n_ins--;
}

static void in_done_cb(void *arg, int status, uint64_t peer_id, const char *peer_address,
                       const char *msg)
{
    struct in_conn *c = arg;
    struct tpt *p = c->p;
    in_unlink(c);
    if (status == TR_OK && !p->closing) {
        /* The stream is raft's from here. */
        p->accept_cb(p->t, peer_id, peer_address, (uv_stream_t *)c->tcp);
    } else {
        /* The handshake closed the stream. */
        if (status != TR_ECANCELED)
            refusal(p, "refused connection from %s: %s", c->from, msg);
        raft_free(c->tcp);
    }
    tr_free(c);
    p->pending--;
    maybe_closed(p);
}

static void reject_closed_cb(uv_handle_t *h)
{
    struct tpt *p = h->data;
    raft_free(h);
    p->pending--;
    maybe_closed(p);
}

static void describe_peer(uv_tcp_t *tcp, char *out, size_t cap)
{
    struct sockaddr_storage ss;
    int len = sizeof ss;
    char ip[64] = "?";
    int port = 0;
    if (uv_tcp_getpeername(tcp, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET) {
            uv_ip4_name((struct sockaddr_in *)&ss, ip, sizeof ip);
            port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            uv_ip6_name((struct sockaddr_in6 *)&ss, ip, sizeof ip);
            port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
        }
    }
    snprintf(out, cap, "%s:%d", ip, port);
}

static void connection_cb(uv_stream_t *l, int status)
{
    struct tpt *p = l->data;
    if (p->closing)
        return;
    if (status != 0) {
        tr_log(TR_LOG_WARN, "raft auth: accept: %s", uv_strerror(status));
        return;
    }
    uv_tcp_t *tcp = raft_malloc(sizeof *tcp);
    if (tcp == NULL)
        return;
    uv_tcp_init(p->loop, tcp);
    tcp->data = p;
    p->pending++;
    if (uv_accept(l, (uv_stream_t *)tcp) != 0) {
        uv_close((uv_handle_t *)tcp, reject_closed_cb);
        return;
    }
    /* raft writes small messages (appends, their results, heartbeats) and
     * waits for answers: Nagle's algorithm meeting delayed ACKs held commits
     * for ~40 ms at p99 (bench/cluster). */
    uv_tcp_nodelay(tcp, 1);
    if (p->n_ins >= MAX_PENDING_IN) {
        refusal(p, "refused connection: %u handshakes already in progress", p->n_ins);
        uv_close((uv_handle_t *)tcp, reject_closed_cb);
        return;
    }
    struct in_conn *c = tr_calloc(1, sizeof *c);
    c->p = p;
    c->tcp = tcp;
    describe_peer(tcp, c->from, sizeof c->from);
    struct tr_auth_self self = { .key = p->key, .id = p->id, .service = TR_AUTH_SERVICE_RAFT };
    if (tr_auth_accept((uv_stream_t *)tcp, &self, in_done_cb, c, &c->auth) != TR_OK) {
        tr_free(c);
        uv_close((uv_handle_t *)tcp, reject_closed_cb);
        return;
    }
    c->next = p->ins;
    if (p->ins != NULL)
        p->ins->prev = c;
    p->ins = c;
    p->n_ins++;
}

static int tpt_listen(struct raft_uv_transport *t, raft_uv_accept_cb cb)
{
    struct tpt *p = t->impl;
    char host[TR_AUTH_ADDRESS_MAX + 1], port[16];
    struct sockaddr_storage ss;
    int rv;

    if (split_address(p->address, host, sizeof host, port, sizeof port) != 0) {
        snprintf(t->errmsg, sizeof t->errmsg, "bad address \"%.200s\"", p->address);
        return RAFT_INVALID;
    }
    if (numeric_address(host, port, &ss) != 0) {
        /* A name: resolve it now (listen is synchronous anyway). */
        uv_getaddrinfo_t req;
        struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
        rv = uv_getaddrinfo(p->loop, &req, NULL, host, port, &hints);
        if (rv != 0) {
            snprintf(t->errmsg, sizeof t->errmsg, "resolve %.200s: %s", p->address, uv_strerror(rv));
            return RAFT_IOERR;
        }
        memcpy(&ss, req.addrinfo->ai_addr, req.addrinfo->ai_addrlen);
        uv_freeaddrinfo(req.addrinfo);
    }
    uv_tcp_init(p->loop, &p->listener);
    p->listener.data = p;
    p->listener_init = 1;
    p->pending++;
    rv = uv_tcp_bind(&p->listener, (struct sockaddr *)&ss, 0);
    if (rv == 0)
        rv = uv_listen((uv_stream_t *)&p->listener, 128, connection_cb);
    if (rv != 0) {
        snprintf(t->errmsg, sizeof t->errmsg, "listen on %.200s: %s", p->address, uv_strerror(rv));
        return RAFT_IOERR; /* the listener is closed by t->close */
    }
    p->accept_cb = cb;
    return 0;
}

/* ---- connect -------------------------------------------------------------------- */

static void out_unlink(struct out_conn *c)
{
    struct tpt *p = c->p;
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        p->outs = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
}

/* Report to raft and release c. stream is NULL unless status is 0. */
static void out_finish(struct out_conn *c, uv_stream_t *stream, int status)
{
    struct tpt *p = c->p;
    struct raft_uv_connect *req = c->req;
    out_unlink(c);
    tr_free(c);
    if (p->closing && status == 0) {
        /* Cannot happen (close cancels handshakes first); never give raft a
         * stream after its close began. */
        uv_close((uv_handle_t *)stream, (uv_close_cb)raft_free);
        status = RAFT_CANCELED;
        stream = NULL;
    }
    req->cb(req, stream, status);
    p->pending--;
    maybe_closed(p);
}

static void out_tcp_closed_cb(uv_handle_t *h)
{
    struct out_conn *c = h->data;
    raft_free(h);
    out_finish(c, NULL, c->p->closing ? RAFT_CANCELED : c->status);
}

static void out_fail(struct out_conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void out_fail(struct out_conn *c, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (!c->p->closing)
        tr_log(TR_LOG_DEBUG, "raft auth: connect to %llu (%s): %s", (unsigned long long)c->id,
               c->address, msg);
    c->status = RAFT_NOCONNECTION;
}

static void out_auth_cb(void *arg, int status, uint64_t peer_id, const char *peer_address, const char *msg)
{
    struct out_conn *c = arg;
    (void)peer_id;
    (void)peer_address;
    if (status == TR_OK) {
        out_finish(c, (uv_stream_t *)c->tcp, 0);
        return;
    }
    /* The handshake closed the stream. A peer that hung up on us may just
     * be restarting; one that failed our checks is refused loudly. */
    if (status != TR_ECANCELED && status != TR_EIO)
        refusal(c->p, "refused node %llu at %s: %s", (unsigned long long)c->id, c->address, msg);
    else if (status == TR_EIO)
        out_fail(c, "%s", msg);
    raft_free(c->tcp);
    out_finish(c, NULL, c->p->closing ? RAFT_CANCELED : RAFT_NOCONNECTION);
}

static void out_connect_cb(uv_connect_t *req, int status)
{
    struct out_conn *c = req->data;
    struct tpt *p = c->p;
    if (c->stage == OUT_CLOSING)
        return; /* closed by t->close: out_tcp_closed_cb finishes it */
    if (status != 0) {
        out_fail(c, "%s", uv_strerror(status));
        c->stage = OUT_CLOSING;
        uv_close((uv_handle_t *)c->tcp, out_tcp_closed_cb);
        return;
    }
    struct tr_auth_self self = { .key = p->key, .id = p->id, .address = p->address,
                                 .service = TR_AUTH_SERVICE_RAFT, .expect_id = c->id };
    c->tcp->data = c;
    if (tr_auth_connect((uv_stream_t *)c->tcp, &self, out_auth_cb, c, &c->auth) != TR_OK) {
        out_fail(c, "handshake did not start");
        c->stage = OUT_CLOSING;
        uv_close((uv_handle_t *)c->tcp, out_tcp_closed_cb);
        return;
    }
    c->stage = OUT_HANDSHAKE;
}

static int out_start_tcp(struct out_conn *c, const struct sockaddr *sa)
{
    c->tcp = raft_malloc(sizeof *c->tcp);
    if (c->tcp == NULL)
        return RAFT_NOMEM;
    uv_tcp_init(c->p->loop, c->tcp);
    uv_tcp_nodelay(c->tcp, 1); /* see the accept side */
    c->tcp->data = c;
    c->creq.data = c;
    c->stage = OUT_CONNECTING;
    int rv = uv_tcp_connect(&c->creq, c->tcp, sa, out_connect_cb);
    if (rv != 0) {
        out_fail(c, "%s", uv_strerror(rv));
        c->stage = OUT_CLOSING;
        uv_close((uv_handle_t *)c->tcp, out_tcp_closed_cb);
    }
    return 0;
}

static void out_resolved_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct out_conn *c = req->data;
    if (c->p->closing || status != 0 || res == NULL) {
        if (status != 0 && !c->p->closing)
            out_fail(c, "resolve: %s", uv_strerror(status));
        if (res != NULL)
            uv_freeaddrinfo(res);
        out_finish(c, NULL, c->p->closing ? RAFT_CANCELED : RAFT_NOCONNECTION);
        return;
    }
    int rv = out_start_tcp(c, res->ai_addr);
    uv_freeaddrinfo(res);
    if (rv != 0)
        out_finish(c, NULL, RAFT_NOCONNECTION);
}

static int tpt_connect(struct raft_uv_transport *t, struct raft_uv_connect *req, raft_id id,
                       const char *address, raft_uv_connect_cb cb)
{
    struct tpt *p = t->impl;
    char host[TR_AUTH_ADDRESS_MAX + 1], port[16];
    struct sockaddr_storage ss;
    int rv;

    if (p->closing)
        return RAFT_CANCELED;
    if (strlen(address) > TR_AUTH_ADDRESS_MAX ||
        split_address(address, host, sizeof host, port, sizeof port) != 0) {
        snprintf(t->errmsg, sizeof t->errmsg, "bad address \"%.200s\"", address);
        return RAFT_NOCONNECTION;
    }
    struct out_conn *c = tr_calloc(1, sizeof *c);
    c->p = p;
    c->req = req;
    c->id = id;
    snprintf(c->address, sizeof c->address, "%s", address);
    c->status = RAFT_NOCONNECTION;
    req->cb = cb;

    if (numeric_address(host, port, &ss) == 0) {
        rv = out_start_tcp(c, (struct sockaddr *)&ss);
        if (rv != 0) {
            tr_free(c);
            return rv;
        }
    } else {
        struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
        c->gai.data = c;
        c->stage = OUT_RESOLVING;
        rv = uv_getaddrinfo(p->loop, &c->gai, out_resolved_cb, host, port, &hints);
        if (rv != 0) {
            snprintf(t->errmsg, sizeof t->errmsg, "resolve %.200s: %s", address, uv_strerror(rv));
            tr_free(c);
            return RAFT_NOCONNECTION;
        }
    }
    c->next = p->outs;
    if (p->outs != NULL)
        p->outs->prev = c;
    p->outs = c;
    p->pending++;
    return 0;
}

/* ---- close ---------------------------------------------------------------------- */

static void tpt_close(struct raft_uv_transport *t, raft_uv_transport_close_cb cb)
{
    struct tpt *p = t->impl;
    p->closing = 1;
    p->close_cb = cb;
    if (p->listener_init)
        uv_close((uv_handle_t *)&p->listener, pending_closed_cb);
    for (struct in_conn *c = p->ins; c != NULL; c = c->next)
        tr_auth_cancel(c->auth);
    for (struct out_conn *c = p->outs; c != NULL; c = c->next) {
        switch (c->stage) {
        case OUT_RESOLVING:
            uv_cancel((uv_req_t *)&c->gai); /* its callback runs either way */
            break;
        case OUT_CONNECTING:
            c->stage = OUT_CLOSING;
            uv_close((uv_handle_t *)c->tcp, out_tcp_closed_cb);
            break;
        case OUT_HANDSHAKE:
            tr_auth_cancel(c->auth);
            break;
        case OUT_CLOSING:
            break;
        }
    }
    uv_idle_init(p->loop, &p->closer);
    p->closer.data = p;
    p->pending++;
    uv_close((uv_handle_t *)&p->closer, pending_closed_cb);
}

/* ---- public --------------------------------------------------------------------- */

/* raft writes to peers that may have gone: a write to a closed socket must
 * fail with EPIPE, not kill the process. Left alone if the program chose a
 * disposition of its own. */
static pthread_once_t sigpipe_once = PTHREAD_ONCE_INIT;

static void sigpipe_ignore(void)
{
    struct sigaction sa;
    if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL && !(sa.sa_flags & SA_SIGINFO)) {
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = SIG_IGN;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGPIPE, &sa, NULL);
    }
}

int tr_auth_transport_init(struct raft_uv_transport *t, uv_loop_t *loop,
                           const unsigned char key[TR_CLUSTER_KEY_LEN], struct tr_err *err)
{
    if (key == NULL)
        return tr_err_set(err, TR_EINVAL, "raft transport: no cluster key");
    pthread_once(&sigpipe_once, sigpipe_ignore);
    struct tpt *p = tr_calloc(1, sizeof *p);
    p->t = t;
    p->loop = loop;
    memcpy(p->key, key, TR_CLUSTER_KEY_LEN);
    p->log_window = uv_now(loop);
    memset(t, 0, sizeof *t);
    t->impl = p;
    t->init = tpt_init;
    t->listen = tpt_listen;
    t->connect = tpt_connect;
    t->close = tpt_close;
    return TR_OK;
}

void tr_auth_transport_free(struct raft_uv_transport *t)
{
    struct tpt *p = t->impl;
    if (p == NULL)
        return;
    memset(p->key, 0, sizeof p->key);
    tr_free(p);
    t->impl = NULL;
}

uint64_t tr_auth_transport_refused(struct raft_uv_transport *t)
{
    struct tpt *p = t->impl;
    return p != NULL ? p->refused : 0;
}
