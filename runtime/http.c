/* HTTP client adapter: libcurl's multi interface driven by a scheduler's loop.
 *
 * Happy path: tr_http_start adds an easy handle to the scheduler's multi
 * handle; curl tells us which sockets to watch (socket_cb -> one uv_poll_t per
 * socket) and when to wake it (timer_cb -> one uv_timer_t); readiness and
 * timeouts go back to curl_multi_socket_action; finished transfers are read
 * with curl_multi_info_read and answered to the requesting actor with one
 * TR_MSG_HTTP_DONE (streamed bodies as TR_MSG_HTTP_CHUNK messages before it).
 *
 * Failure modes: timeouts (whole request, connect) -> TR_ETIMEDOUT; a body
 * or header block over its cap -> TR_ETOOBIG (the transfer is aborted from the
 * write callback); connect or resolve failure -> TR_EUNAVAIL; tr_http_cancel
 * -> TR_ECANCELED; anything else curl reports -> TR_EIO with curl's message.
 *
 * Invariants
 *  1. Per-scheduler state lives in the TR_EXT_HTTP slot, is touched only by
 *     that scheduler's thread, and dies in the shutdown hook: every easy
 *     handle is removed and cleaned up, every uv handle closed, and the state
 *     freed by the last close callback.
 *  2. curl is never re-entered from its own callbacks (in_curl): handles are
 *     added and removed only outside curl_multi_socket_action.
 *  3. Every started request produces exactly one TR_MSG_HTTP_DONE, unless the
 *     runtime shuts down first. Results go through tr__deliver_system, so the
 *     requester's mailbox cap cannot drop them.
 *  4. Connections are pooled per scheduler and capped (MAX_TOTAL_CONNS,
 *     MAX_HOST_CONNS): extra requests queue inside curl instead of using fds.
 *  5. A connection socket's uv_poll_t lives as long as the socket: curl opens
 *     it through opensocket_cb (which enters it in hs->socks, indexed by fd)
 *     and closes it through closesocket_cb (which closes the poll handle and
 *     drops it from hs->socks before close(fd), so a new socket that gets the
 *     same number never finds it). CURL_POLL_REMOVE, sent whenever a transfer
 *     ends even though the connection stays cached, only stops the poll.
 *     Sockets curl did not open through opensocket_cb (the threaded
 *     resolver's) are entered at their first socket_cb and closed at
 *     CURL_POLL_REMOVE. closesocket_cb may run inside curl_multi_socket_action,
 *     curl_multi_remove_handle and curl_multi_cleanup (hs_shutdown), and for
 *     sockets socket_cb never saw (a connect that failed at once).
 *  6. Finished easy handles are reset and kept for the next request (at most
 *     EASY_POOL per scheduler); connections belong to the multi handle either
 *     way.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <sys/socket.h>

#include <curl/curl.h>

#include "adapters.h"
#include "internal.h"

#define DEF_TIMEOUT_MS 30000u
#define DEF_CONNECT_MS 10000u
#define DEF_MAX_RESPONSE (8u * 1024 * 1024)
#define MAX_RESPONSE_LIMIT (1024u * 1024 * 1024)
#define MAX_HEADER_BLOCK (64u * 1024)
#define MAX_TOTAL_CONNS 256
#define MAX_HOST_CONNS 64
#define EASY_POOL 32


struct http_sched;

/* A socket curl uses, found by fd in hs->socks. */
struct http_sock {
    uv_poll_t poll;         /* valid once `polled` */
    struct http_sched *hs;
    curl_socket_t fd;
    int events;             /* UV_READABLE/UV_WRITABLE asked for at the last start */
    int polled;             /* poll initialised: counted in open_handles */
    int conn;               /* from opensocket_cb: kept until closesocket_cb */
};

struct http_req {
    struct http_req *prev, *next;
    struct http_sched *hs;
    CURL *easy;
    struct curl_slist *hdrs;
    uint64_t id;
    uint64_t tag;
    tr_actor_id owner;
    size_t max_response;
    size_t received;
    int stream;
    int too_big;
    int headers_too_big;
    int canceled;
    uint64_t start_ns;
    struct tr_buf head;
    struct tr_buf body;
    char errbuf[CURL_ERROR_SIZE];
};

struct http_sched {
    CURLM *multi;
    uv_loop_t *loop;
    struct tr_rt *rt;
    void **slot;
    uv_timer_t timer; /* curl's timeout */
    uv_timer_t reap;  /* cancels requested from inside curl */
    struct http_req *reqs;
    struct http_sock **socks; /* indexed by fd; socks_cap entries */
    size_t socks_cap;
    CURL *idle[EASY_POOL];    /* reset easy handles for the next requests */
    int n_idle;
    struct tr__http_stats st;
    uint64_t next_id;
    int sched;
    int open_handles;
    int closing;
    int in_curl;
};

/* Wire layout of TR_MSG_HTTP_DONE: this header, then errmsg, NUL, headers,
 * NUL, body. */
struct http_done_wire {
    uint64_t id;
    uint64_t tag;
    uint64_t elapsed_us;
    uint64_t body_len;
    int32_t error;
    int32_t status;
    uint32_t errmsg_len;
    uint32_t headers_len;
};

/* Wire layout of TR_MSG_HTTP_CHUNK: this header, then the bytes. */
struct http_chunk_wire {
    uint64_t id;
    uint64_t tag;
    uint64_t len;
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rv;

static void curl_init_once(void)
{
    tr__sigpipe_ignore(); /* OpenSSL writes to sockets without MSG_NOSIGNAL */
    curl_init_rv = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* ------------------------------------------------------------------------ */
/* Per-scheduler state.                                                       */

static void hs_maybe_free(struct http_sched *hs)
{
    if (hs->closing && hs->open_handles == 0) {
        tr_free(hs->socks);
        tr_free(hs);
    }
}

static void hs_handle_close_cb(uv_handle_t *h)
{
    struct http_sched *hs = h->data;
    hs->open_handles--;
    hs_maybe_free(hs);
}

static void sock_close_cb(uv_handle_t *h)
{
    struct http_sock *k = h->data;
    struct http_sched *hs = k->hs;
    tr_free(k);
    hs->open_handles--;
    hs_maybe_free(hs);
}

static struct http_sock *sock_find(const struct http_sched *hs, curl_socket_t fd)
{
    return fd >= 0 && (size_t)fd < hs->socks_cap ? hs->socks[fd] : NULL;
}

/* Forget k and close its poll handle (uv_close stops it; k is freed by the
 * close callback, or now if it never had one). Call before close(k->fd):
 * libuv takes the fd out of epoll while the number is still this socket's. */
static void sock_close(struct http_sock *k)
{
    struct http_sched *hs = k->hs;
    hs->socks[k->fd] = NULL;
    if (!k->polled) {
        tr_free(k);
        return;
    }
    hs->st.polls_open--;
    uv_close((uv_handle_t *)&k->poll, sock_close_cb);
}

/* Enter fd, which is open, in hs->socks. An entry already there is stale (its
 * socket was closed without closesocket_cb): it goes first. */
static struct http_sock *sock_new(struct http_sched *hs, curl_socket_t fd, int conn)
{
    struct http_sock *k;
    if ((size_t)fd >= hs->socks_cap) {
        size_t cap = hs->socks_cap ? hs->socks_cap : 64;
        while (cap <= (size_t)fd)
            cap *= 2;
        hs->socks = tr_realloc(hs->socks, cap * sizeof(*hs->socks));
        memset(hs->socks + hs->socks_cap, 0, (cap - hs->socks_cap) * sizeof(*hs->socks));
        hs->socks_cap = cap;
    }
    if (hs->socks[fd])
        sock_close(hs->socks[fd]);
    k = tr_calloc(1, sizeof(*k));
    k->hs = hs;
    k->fd = fd;
    k->conn = conn;
    hs->socks[fd] = k;
    return k;
}

static void req_unlink(struct http_req *r)
{
    struct http_sched *hs = r->hs;
    if (r->prev)
        r->prev->next = r->next;
    else
        hs->reqs = r->next;
    if (r->next)
        r->next->prev = r->prev;
    r->prev = r->next = NULL;
}

/* Keep a finished easy handle for the next request, or clean it up. */
static void easy_release(struct http_sched *hs, CURL *e)
{
    if (hs->closing || hs->n_idle == EASY_POOL) {
        curl_easy_cleanup(e);
        return;
    }
    curl_easy_reset(e);
    hs->idle[hs->n_idle++] = e;
}

static void req_destroy(struct http_req *r)
{
    struct http_sched *hs = r->hs;
    req_unlink(r);
    if (hs->multi)
        curl_multi_remove_handle(hs->multi, r->easy); /* may close its socket */
    easy_release(hs, r->easy);
    curl_slist_free_all(r->hdrs);
    tr_free(r->head.p);
    tr_free(r->body.p);
    tr_free(r);
}

/* Shutdown hook: drop every request (no results: the actors are gone) and
 * close every handle; the last close callback frees hs. */
static void hs_shutdown(void *arg)
{
    struct http_sched *hs = arg;
    hs->closing = 1;
    if (hs->slot)
        *hs->slot = NULL;
    while (hs->reqs)
        req_destroy(hs->reqs);
    while (hs->n_idle)
        curl_easy_cleanup(hs->idle[--hs->n_idle]);
    /* Closes the cached connections through closesocket_cb: hs must live. */
    curl_multi_cleanup(hs->multi);
    hs->multi = NULL;
    for (size_t fd = 0; fd < hs->socks_cap; fd++)
        if (hs->socks[fd])
            sock_close(hs->socks[fd]);
    uv_timer_stop(&hs->timer);
    uv_timer_stop(&hs->reap);
    uv_close((uv_handle_t *)&hs->timer, hs_handle_close_cb);
    uv_close((uv_handle_t *)&hs->reap, hs_handle_close_cb);
}

static void check_done(struct http_sched *hs);

static void poll_cb(uv_poll_t *p, int status, int events)
{
    struct http_sock *k = p->data;
    struct http_sched *hs = k->hs;
    int flags = 0, running;
    if (status < 0)
        flags = CURL_CSELECT_ERR;
    else {
        if (events & UV_READABLE)
            flags |= CURL_CSELECT_IN;
        if (events & UV_WRITABLE)
            flags |= CURL_CSELECT_OUT;
    }
    hs->in_curl = 1;
    curl_multi_socket_action(hs->multi, k->fd, flags, &running);
    hs->in_curl = 0;
    check_done(hs);
}

static void timeout_cb(uv_timer_t *t)
{
    struct http_sched *hs = t->data;
    int running;
    hs->in_curl = 1;
    curl_multi_socket_action(hs->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    hs->in_curl = 0;
    check_done(hs);
}

static int socket_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    struct http_sched *hs = userp;
    struct http_sock *k = sock_find(hs, s);
    int events = 0;

    if (what == CURL_POLL_REMOVE) {
        if (k && k->conn) {
            /* The connection may stay cached for the next transfer. */
            if (k->polled && uv_is_active((uv_handle_t *)&k->poll))
                uv_poll_stop(&k->poll);
        } else if (k) {
            sock_close(k);
        }
        return 0;
    }
    if (hs->closing)
        return 0;
    if (!k)
        k = sock_new(hs, s, 0); /* not a connection: the resolver's */
    if (!k->polled) {
        if (uv_poll_init_socket(hs->loop, &k->poll, s) != 0) {
            if (!k->conn)
                sock_close(k);
            return -1; /* curl fails the transfers */
        }
        k->poll.data = k;
        k->polled = 1;
        hs->open_handles++;
        hs->st.polls_created++;
        hs->st.polls_open++;
    }
    if (what & CURL_POLL_IN)
        events |= UV_READABLE;
    if (what & CURL_POLL_OUT)
        events |= UV_WRITABLE;
    if (events != k->events || !uv_is_active((uv_handle_t *)&k->poll)) {
        uv_poll_start(&k->poll, events, poll_cb);
        k->events = events;
    }
    return 0;
}

/* curl's socket(): a connection socket, entered in hs->socks. */
static curl_socket_t opensocket_cb(void *clientp, curlsocktype purpose, struct curl_sockaddr *a)
{
    struct http_sched *hs = clientp;
    int fd = socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
    if (fd < 0)
        return CURL_SOCKET_BAD;
    sock_new(hs, fd, 1);
    return fd;
}

/* curl's close(): first the poll handle and the hs->socks entry, then the fd. */
static int closesocket_cb(void *clientp, curl_socket_t fd)
{
    struct http_sched *hs = clientp;
    struct http_sock *k = sock_find(hs, fd);
    if (k)
        sock_close(k);
    hs->st.sockets_closed++;
    return close(fd) == 0 ? 0 : 1;
}

static int timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    struct http_sched *hs = userp;
    if (hs->closing)
        return 0;
    if (timeout_ms < 0)
        uv_timer_stop(&hs->timer);
    else
        uv_timer_start(&hs->timer, timeout_cb, (uint64_t)timeout_ms, 0);
    return 0;
}

static void finish(struct http_req *r, CURLcode code);

/* Cancels asked for while curl was running are carried out here. */
static void reap_cb(uv_timer_t *t)
{
    struct http_sched *hs = t->data;
    struct http_req *r = hs->reqs, *next;
    for (; r; r = next) {
        next = r->next;
        if (r->canceled)
            finish(r, CURLE_ABORTED_BY_CALLBACK);
    }
}

static struct http_sched *hs_get(struct tr_ctx *ctx, int *rv)
{
    void **slot = tr__ext_slot(ctx, TR_EXT_HTTP);
    struct http_sched *hs = *slot;
    if (hs) {
        *rv = hs->closing ? TR_ECLOSED : 0;
        return hs->closing ? NULL : hs;
    }
    pthread_once(&curl_once, curl_init_once);
    if (curl_init_rv != CURLE_OK) {
        tr_log(TR_LOG_ERROR, "http: curl_global_init: %s", curl_easy_strerror(curl_init_rv));
        *rv = TR_EIO;
        return NULL;
    }
    hs = tr_calloc(1, sizeof(*hs));
    hs->loop = tr_ctx_loop(ctx);
    hs->rt = tr_ctx_rt(ctx);
    hs->slot = slot;
    hs->sched = tr_ctx_sched(ctx);
    hs->multi = curl_multi_init();
    if (!hs->multi) {
        tr_free(hs);
        *rv = TR_EIO;
        return NULL;
    }
    curl_multi_setopt(hs->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
    curl_multi_setopt(hs->multi, CURLMOPT_SOCKETDATA, hs);
    curl_multi_setopt(hs->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(hs->multi, CURLMOPT_TIMERDATA, hs);
    curl_multi_setopt(hs->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)MAX_TOTAL_CONNS);
    curl_multi_setopt(hs->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)MAX_HOST_CONNS);
    curl_multi_setopt(hs->multi, CURLMOPT_MAXCONNECTS, (long)MAX_TOTAL_CONNS);
    uv_timer_init(hs->loop, &hs->timer);
    uv_timer_init(hs->loop, &hs->reap);
    hs->timer.data = hs;
    hs->reap.data = hs;
    hs->open_handles = 2;
    *rv = tr_rt_on_shutdown(ctx, hs_shutdown, hs);
    if (*rv != 0) {
        hs->slot = NULL;
        hs_shutdown(hs);
        return NULL;
    }
    *slot = hs;
    return hs;
}

/* ------------------------------------------------------------------------ */
/* Transfers.                                                                 */

static size_t write_cb(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct http_req *r = ud;
    size_t n = size * nmemb;
    if (r->canceled)
        return 0;
    if (n > r->max_response - r->received) {
        r->too_big = 1;
        return 0; /* abort: CURLE_WRITE_ERROR */
    }
    r->received += n;
    if (!r->stream) {
        tr_buf_add(&r->body, ptr, n);
        return n;
    }
    struct tr_msg *m = tr_msg_new(TR_MSG_HTTP_CHUNK, (uint32_t)(sizeof(struct http_chunk_wire) + n));
    struct http_chunk_wire w = {.id = r->id, .tag = r->tag, .len = n};
    memcpy(m->data, &w, sizeof(w));
    memcpy(m->data + sizeof(w), ptr, n);
    tr__deliver_system(r->hs->rt, r->owner, m);
    return n;
}

static size_t header_cb(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct http_req *r = ud;
    size_t n = size * nmemb;
    if (r->canceled)
        return 0;
    if (n >= 5 && memcmp(ptr, "HTTP/", 5) == 0)
        r->head.len = 0; /* a new response (after 1xx): keep only the last */
    if (r->head.len + n > MAX_HEADER_BLOCK) {
        r->headers_too_big = 1;
        return 0;
    }
    tr_buf_add(&r->head, ptr, n);
    return n;
}

static int map_error(const struct http_req *r, CURLcode code, const char **why)
{
    *why = r->errbuf[0] ? r->errbuf : curl_easy_strerror(code);
    if (r->canceled) {
        *why = "canceled";
        return TR_ECANCELED;
    }
    if (r->too_big) {
        *why = "response body over the size cap";
        return TR_ETOOBIG;
    }
    if (r->headers_too_big) {
        *why = "response headers over the size cap";
        return TR_ETOOBIG;
    }
    switch (code) {
    case CURLE_OK:
        *why = "";
        return TR_OK;
    case CURLE_OPERATION_TIMEDOUT:
        return TR_ETIMEDOUT;
    case CURLE_FILESIZE_EXCEEDED:
        return TR_ETOOBIG;
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        return TR_EUNAVAIL;
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
        return TR_EINVAL;
    default:
        return TR_EIO;
    }
}

/* Answer the requester and forget the request. */
static void finish(struct http_req *r, CURLcode code)
{
    struct http_sched *hs = r->hs;
    const char *why;
    long status = 0;
    int error = map_error(r, code, &why);
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
    size_t errlen = error ? strlen(why) : 0;
    size_t body_len = r->stream ? 0 : r->body.len;
    size_t total = sizeof(struct http_done_wire) + errlen + 1 + r->head.len + 1 + body_len;
    struct tr_msg *m = tr_msg_new(TR_MSG_HTTP_DONE, (uint32_t)total);
    struct http_done_wire w = {
        .id = r->id,
        .tag = r->tag,
        .elapsed_us = (uv_hrtime() - r->start_ns) / 1000,
        .body_len = body_len,
        .error = error,
        .status = (int32_t)status,
        .errmsg_len = (uint32_t)errlen,
        .headers_len = (uint32_t)r->head.len,
    };
    unsigned char *p = m->data;
    memcpy(p, &w, sizeof(w));
    p += sizeof(w);
    memcpy(p, why, errlen);
    p[errlen] = '\0';
    p += errlen + 1;
    if (r->head.len)
        memcpy(p, r->head.p, r->head.len);
    p[r->head.len] = '\0';
    p += r->head.len + 1;
    if (body_len)
        memcpy(p, r->body.p, body_len);
    tr__deliver_system(hs->rt, r->owner, m);
    req_destroy(r);
}

static void check_done(struct http_sched *hs)
{
    CURLMsg *msg;
    int left;
    if (!hs->multi)
        return;
    while ((msg = curl_multi_info_read(hs->multi, &left))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        struct http_req *r = NULL;
        CURLcode code = msg->data.result;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
        finish(r, code);
    }
}

static int scheme_ok(const char *url)
{
    return strncasecmp(url, "http://", 7) == 0 || strncasecmp(url, "https://", 8) == 0;
}

static int header_line_ok(const char *h)
{
    return h && !strpbrk(h, "\r\n") && strchr(h, ':');
}

int tr_http_start(struct tr_ctx *ctx, const struct tr_http_req *req, uint64_t *id_out)
{
    struct http_sched *hs;
    struct http_req *r;
    CURL *e;
    int rv, has_expect = 0;

    if (!ctx || !req || !req->url || !id_out || (req->n_headers && !req->headers) ||
        (req->body_len && !req->body))
        return TR_EINVAL;
    if (tr__deterministic(ctx))
        return TR_ENOTSUP;
    if (!scheme_ok(req->url))
        return TR_EINVAL;
    for (size_t i = 0; i < req->n_headers; i++) {
        if (!header_line_ok(req->headers[i]))
            return TR_EINVAL;
        if (strncasecmp(req->headers[i], "expect:", 7) == 0)
            has_expect = 1;
    }
    if (req->max_response > MAX_RESPONSE_LIMIT)
        return TR_EINVAL;
    hs = hs_get(ctx, &rv);
    if (!hs)
        return rv;
    if (hs->in_curl)
        return TR_EBUSY; /* never from inside curl (the runtime queues messages) */

    if (hs->n_idle) {
        e = hs->idle[--hs->n_idle];
    } else {
        e = curl_easy_init();
        if (!e)
            return TR_ENOMEM;
        hs->st.easy_created++;
    }
    r = tr_calloc(1, sizeof(*r));
    r->hs = hs;
    r->easy = e;
    r->id = ((uint64_t)(hs->sched + 1) << 48) | ++hs->next_id;
    r->tag = req->tag;
    r->owner = tr_self(ctx);
    r->stream = req->stream != 0;
    r->max_response = req->max_response ? req->max_response : DEF_MAX_RESPONSE;
    r->start_ns = uv_hrtime();

    curl_easy_setopt(e, CURLOPT_URL, req->url);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, opensocket_cb);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, hs);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, closesocket_cb);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, hs);
    curl_easy_setopt(e, CURLOPT_PRIVATE, r);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)(req->timeout_ms ? req->timeout_ms : DEF_TIMEOUT_MS));
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
                     (long)(req->connect_timeout_ms ? req->connect_timeout_ms : DEF_CONNECT_MS));
    curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)r->max_response);

    const char *method = req->method ? req->method : "GET";
    if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else if (strcmp(method, "GET") != 0 || req->body_len) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
        curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, req->body_len ? (const char *)req->body : "");
        if (strcmp(method, "POST") != 0)
            curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    }
    for (size_t i = 0; i < req->n_headers; i++)
        r->hdrs = curl_slist_append(r->hdrs, req->headers[i]);
    if (!has_expect)
        r->hdrs = curl_slist_append(r->hdrs, "Expect:"); /* no 100-continue round trip */
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->hdrs);

    r->next = hs->reqs;
    if (hs->reqs)
        hs->reqs->prev = r;
    hs->reqs = r;
    CURLMcode mc = curl_multi_add_handle(hs->multi, e);
    if (mc != CURLM_OK) {
        tr_log(TR_LOG_WARN, "http: curl_multi_add_handle: %s", curl_multi_strerror(mc));
        goto err_after_link;
    }
    *id_out = r->id;
    return 0;

err_after_link:
    req_unlink(r);
    easy_release(hs, e);
    curl_slist_free_all(r->hdrs);
    tr_free(r);
    return TR_EIO;
}

int tr_http_cancel(struct tr_ctx *ctx, uint64_t id)
{
    if (!ctx)
        return TR_EINVAL;
    if (tr__deterministic(ctx))
        return TR_ENOTSUP;
    struct http_sched *hs = *tr__ext_slot(ctx, TR_EXT_HTTP);
    if (!hs || hs->closing)
        return TR_ENOTFOUND;
    tr_actor_id self = tr_self(ctx);
    for (struct http_req *r = hs->reqs; r; r = r->next) {
        if (r->id != id || r->owner != self)
            continue;
        if (r->canceled)
            return TR_ENOTFOUND;
        r->canceled = 1;
        if (hs->in_curl)
            uv_timer_start(&hs->reap, reap_cb, 0, 0);
        else
            finish(r, CURLE_ABORTED_BY_CALLBACK);
        return 0;
    }
    return TR_ENOTFOUND;
}

void tr__http_stats(struct tr_ctx *ctx, struct tr__http_stats *out)
{
    struct http_sched *hs = *tr__ext_slot(ctx, TR_EXT_HTTP);
    memset(out, 0, sizeof(*out));
    if (hs)
        *out = hs->st;
}

/* ------------------------------------------------------------------------ */
/* Decoding.                                                                  */

int tr_http_result(const struct tr_msg *msg, struct tr_http_result *out)
{
    struct http_done_wire w;
    if (!msg || !out || msg->type != TR_MSG_HTTP_DONE || msg->len < sizeof(w))
        return TR_EINVAL;
    memcpy(&w, msg->data, sizeof(w));
    uint64_t need = (uint64_t)sizeof(w) + w.errmsg_len + 1 + w.headers_len + 1 + w.body_len;
    if (need != msg->len)
        return TR_ECORRUPT;
    const char *p = (const char *)msg->data + sizeof(w);
    memset(out, 0, sizeof(*out));
    out->id = w.id;
    out->tag = w.tag;
    out->error = w.error;
    out->status = w.status;
    out->errmsg = p;
    p += w.errmsg_len + 1;
    out->headers = p;
    out->headers_len = w.headers_len;
    p += w.headers_len + 1;
    out->body = w.body_len ? p : NULL;
    out->body_len = w.body_len;
    out->elapsed_us = w.elapsed_us;
    return 0;
}

int tr_http_chunk(const struct tr_msg *msg, struct tr_http_chunk *out)
{
    struct http_chunk_wire w;
    if (!msg || !out || msg->type != TR_MSG_HTTP_CHUNK || msg->len < sizeof(w))
        return TR_EINVAL;
    memcpy(&w, msg->data, sizeof(w));
    if (w.len != msg->len - sizeof(w))
        return TR_ECORRUPT;
    out->id = w.id;
    out->tag = w.tag;
    out->data = msg->data + sizeof(w);
    out->len = w.len;
    return 0;
}

int tr_http_header(const char *headers, size_t headers_len, const char *name, char *buf, size_t cap)
{
    size_t nl = strlen(name);
    const char *p = headers, *end = headers + headers_len;
    if (!headers || !name)
        return -1;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = eol ? eol : end;
        size_t ll = (size_t)(line_end - p);
        if (ll > nl && p[nl] == ':' && strncasecmp(p, name, nl) == 0) {
            const char *v = p + nl + 1, *ve = line_end;
            while (v < ve && (*v == ' ' || *v == '\t'))
                v++;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            size_t vl = (size_t)(ve - v);
            if (cap) {
                size_t n = vl < cap - 1 ? vl : cap - 1;
                memcpy(buf, v, n);
                buf[n] = '\0';
                return (int)n;
            }
            return 0;
        }
        p = eol ? eol + 1 : end;
    }
    return -1;
}
