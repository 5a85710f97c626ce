/* GET /v1/runs/{id}/ws: a run's events over WebSocket (RFC 6455), one JSON
 * text message per journal event (the objects of GET .../events), history
 * past ?after=SEQ first, then live events, then a close 1000 "run finished"
 * once the run is terminal and every event was sent.
 *
 * Happy path: the HTTP request is routed and authenticated like every /v1/
 * route -> gw_h_run_ws checks the run (404), the handshake headers, computes
 * Sec-WebSocket-Accept (SHA-1 from OpenSSL's libcrypto, base64 from
 * libsodium) -> tr_httpd_upgrade writes the 101 and hands the socket over ->
 * ws_upgraded wraps it in a wslay server context -> a live.h sub on the run
 * sends events as text messages, woken by applied entries (no polling).
 *
 * Framing is wslay's (Debian libwslay): we feed it the bytes we read and it
 * hands us frames to write; it answers pings with pongs and runs the close
 * handshake. We send a ping every GW_WS_PING_MS so idle connections show
 * they are alive.
 *
 * Failure modes:
 *   - a bad handshake (no Upgrade: websocket, version other than 13, a key
 *     that is not 16 bytes in base64): 400 (426 for the version), the node
 *     keeps serving; more WebSockets than the connection limit: 503;
 *   - a client message (they carry nothing for us) over 64 KiB: close 1009;
 *     a protocol error: wslay closes 1002; text or binary messages are
 *     ignored;
 *   - a slow reader: the stream pauses at GW_LIVE_HIGH_WATER unsent bytes
 *     until the socket drains; paused with new events for longer than the
 *     stall limit: close 1008 "slow reader" and the socket is closed at
 *     once if the close frame cannot be written within GW_WS_CLOSE_MS;
 *   - the client vanishes: the socket errors or hits EOF: closed.
 *
 * Invariants: a connection is freed only when its socket and timer have both
 * closed; its sub is removed from the live module as soon as closing starts;
 * unsent bytes are bounded by the high-water mark plus one event plus the
 * small control frames.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <openssl/sha.h>
#include <sodium.h>
#include <wslay/wslay.h>

#include "gateway/gw_int.h"

#define GW_WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define GW_WS_PING_MS 30000
#define GW_WS_CLOSE_MS 2000
#define GW_WS_MAX_RECV (64u << 10)
#define GW_WS_READ_CHUNK (16u << 10)

struct gw_ws {
    struct tr_gateway *g;
    struct gw_ws *prev, *next;   /* g->ws */
    uv_tcp_t *tcp;               /* ours after the handover (tr_free in its close callback) */
    uv_timer_t timer;            /* pings; then the close deadline */
    wslay_event_context_ptr ctx;
    struct gw_sub sub;
    uint64_t run_id, after;
    struct tr_buf in;            /* read, not yet given to wslay */
    size_t in_off;
    size_t queued;               /* bytes handed to uv_write, not yet written */
    int handles;                 /* open libuv handles */
    int closing;                 /* uv_close started */
    int ending;                  /* our close frame is queued: no more events */
    int upgraded;
    int detached;                /* off g's list: g may be gone when the socket has closed */
};

struct ws_wreq {
    uv_write_t w;
    struct gw_ws *ws;
    size_t len;
    uint8_t data[];
};

static void ws_close_now(struct gw_ws *ws);

/* gw_ws_close_all waits for the connections handed over; those still
 * waiting for their handover fail it when the HTTP server closes. */
static void ws_maybe_all_closed(struct tr_gateway *g)
{
    if (g->ws_closed_cb == NULL)
        return;
    for (struct gw_ws *ws = g->ws; ws != NULL; ws = ws->next)
        if (ws->upgraded)
            return;
    void (*cb)(void *) = g->ws_closed_cb;
    g->ws_closed_cb = NULL;
    cb(g->ws_closed_arg);
}

/* ---- the connection ------------------------------------------------------------------- */

static void ws_handle_closed(uv_handle_t *h)
{
    struct gw_ws *ws = h->data;
    if (h == (uv_handle_t *)ws->tcp)
        tr_free(ws->tcp);
    if (--ws->handles > 0)
        return;
    struct tr_gateway *g = ws->g;
    if (ws->ctx != NULL)
        wslay_event_context_free(ws->ctx);
    tr_buf_free(&ws->in);
    if (ws->detached) {
        tr_free(ws);
        return;
    }
    if (ws->prev != NULL)
        ws->prev->next = ws->next;
    else
        g->ws = ws->next;
    if (ws->next != NULL)
        ws->next->prev = ws->prev;
    g->n_ws--;
    tr_free(ws);
    ws_maybe_all_closed(g);
}

static void ws_close_now(struct gw_ws *ws)
{
    if (ws->closing)
        return;
    ws->closing = 1;
    gw_sub_del(&ws->sub);
    uv_timer_stop(&ws->timer);
    uv_close((uv_handle_t *)ws->tcp, ws_handle_closed);
    uv_close((uv_handle_t *)&ws->timer, ws_handle_closed);
}

static void ws_write_cb(uv_write_t *w, int status)
{
    struct ws_wreq *wr = (struct ws_wreq *)w;
    struct gw_ws *ws = wr->ws;
    ws->queued -= wr->len;
    tr_free(wr);
    if (ws->closing)
        return;
    if (status != 0) {
        ws_close_now(ws);
        return;
    }
    if (ws->queued == 0) {
        /* The close handshake is over once both closes went by. */
        if (!wslay_event_want_read(ws->ctx) && !wslay_event_want_write(ws->ctx)) {
            ws_close_now(ws);
            return;
        }
        if (ws->sub.paused) {
            ws->sub.paused = 0;
            gw_sub_kick(&ws->sub);
        }
    }
}

static ssize_t ws_send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags, void *ud)
{
    struct gw_ws *ws = ud;
    if (ws->closing) {
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    struct ws_wreq *wr = tr_malloc(sizeof *wr + len);
    memcpy(wr->data, data, len);
    wr->ws = ws;
    wr->len = len;
    uv_buf_t b = uv_buf_init((char *)wr->data, (unsigned)len);
    if (uv_write(&wr->w, (uv_stream_t *)ws->tcp, &b, 1, ws_write_cb) != 0) {
        tr_free(wr);
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    ws->queued += len;
    return (ssize_t)len;
}

static ssize_t ws_recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *ud)
{
    struct gw_ws *ws = ud;
    size_t have = ws->in.len - ws->in_off;
    if (have == 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    if (len > have)
        len = have;
    memcpy(buf, ws->in.p + ws->in_off, len);
    ws->in_off += len;
    return (ssize_t)len;
}

static void ws_msg_cb(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg, void *ud)
{
    /* Pings are answered and closes handled by wslay; client text and
     * binary messages carry nothing for this endpoint. */
    (void)ctx;
    (void)arg;
    (void)ud;
}

/* Let wslay write what it has queued; close when it is done or failed. */
static void ws_flush(struct gw_ws *ws)
{
    if (ws->closing)
        return;
    if (wslay_event_send(ws->ctx) != 0) {
        ws_close_now(ws);
        return;
    }
    if (ws->queued == 0 && !wslay_event_want_read(ws->ctx) && !wslay_event_want_write(ws->ctx))
        ws_close_now(ws);
}

/* Queue our close frame and give the peer GW_WS_CLOSE_MS to answer it. */
static void ws_timer_cb(uv_timer_t *t);

static void ws_end(struct gw_ws *ws, uint16_t code, const char *reason)
{
    if (ws->ending || ws->closing)
        return;
    ws->ending = 1;
    gw_sub_del(&ws->sub);
    (void)wslay_event_queue_close(ws->ctx, code, (const uint8_t *)reason, strlen(reason));
    uv_timer_start(&ws->timer, ws_timer_cb, GW_WS_CLOSE_MS, 0);
    ws_flush(ws);
}

static void ws_timer_cb(uv_timer_t *t)
{
    struct gw_ws *ws = t->data;
    if (ws->ending) {
        ws_close_now(ws); /* the peer did not finish the close handshake in time */
        return;
    }
    struct wslay_event_msg m = { .opcode = WSLAY_PING, .msg = (const uint8_t *)"", .msg_length = 0 };
    (void)wslay_event_queue_msg(ws->ctx, &m);
    ws_flush(ws);
}

static void ws_alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    struct gw_ws *ws = h->data;
    tr_buf_reserve(&ws->in, GW_WS_READ_CHUNK);
    b->base = ws->in.p + ws->in.len;
    b->len = GW_WS_READ_CHUNK;
}

/* Give wslay what was read (it calls ws_recv_cb), then drop what it took. */
static void ws_feed(struct gw_ws *ws)
{
    if (wslay_event_recv(ws->ctx) != 0) {
        ws_close_now(ws);
        return;
    }
    if (ws->in_off > 0) {
        memmove(ws->in.p, ws->in.p + ws->in_off, ws->in.len - ws->in_off);
        ws->in.len -= ws->in_off;
        ws->in_off = 0;
    }
    ws_flush(ws);
}

static void ws_read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct gw_ws *ws = s->data;
    if (ws->closing)
        return;
    if (n < 0) {
        ws_close_now(ws);
        return;
    }
    ws->in.len += (size_t)n;
    ws_feed(ws);
}

/* ---- events ------------------------------------------------------------------------------ */

static size_t ws_unsent(struct gw_ws *ws)
{
    return ws->queued + wslay_event_get_queued_msg_length(ws->ctx);
}

static size_t ws_queued(struct gw_sub *s)
{
    struct gw_ws *ws = s->ud;
    return ws->closing ? 0 : ws_unsent(ws);
}

static void ws_wake(struct gw_sub *s)
{
    struct gw_ws *ws = s->ud;
    if (ws->closing || ws->ending)
        return;
    if (s->paused) {
        if (gw_live_stalled(ws->g, s)) {
            tr_log(TR_LOG_INFO, "gateway: a WebSocket of run %016llx does not read; closing 1008",
                   (unsigned long long)ws->run_id);
            ws_end(ws, WSLAY_CODE_POLICY_VIOLATION, "slow reader");
        }
        return;
    }
    struct gw_evs v;
    for (;;) {
        if (gw_live_read(s, s->seq, &v) != TR_OK) {
            ws_end(ws, 1011, "the journal cannot be read");
            return;
        }
        for (size_t i = 0; i < v.n; i++) {
            if (ws_unsent(ws) > GW_LIVE_HIGH_WATER) {
                gw_live_pause(ws->g, s);
                ws_flush(ws);
                return;
            }
            size_t len;
            const char *json = gw_ev_json(&v.ev[i], &len);
            struct wslay_event_msg m = { .opcode = WSLAY_TEXT_FRAME, .msg = (const uint8_t *)json, .msg_length = len };
            if (wslay_event_queue_msg(ws->ctx, &m) != 0) {
                ws_close_now(ws);
                return;
            }
            s->seq = v.ev[i].seq;
        }
        ws_flush(ws);
        if (ws->closing)
            return;
        if (v.end)
            break;
    }
    if (v.terminal)
        ws_end(ws, WSLAY_CODE_NORMAL_CLOSURE, "run finished");
}

/* ---- the handover -------------------------------------------------------------------------- */

static void ws_upgraded(uv_tcp_t *tcp, const void *rest, size_t rest_len, void *arg)
{
    struct gw_ws *ws = arg;
    struct tr_gateway *g = ws->g;
    if (tcp == NULL || g->closing) {
        /* The connection failed before the 101 was out, or the gateway closes
         * (and may be freed before this socket's close callback). */
        if (ws->prev != NULL)
            ws->prev->next = ws->next;
        else
            g->ws = ws->next;
        if (ws->next != NULL)
            ws->next->prev = ws->prev;
        g->n_ws--;
        if (tcp != NULL) {
            tcp->data = ws;
            ws->tcp = tcp;
            ws->closing = 1;
            ws->detached = 1;
            ws->handles = 1;
            uv_close((uv_handle_t *)tcp, ws_handle_closed);
            return;
        }
        tr_free(ws);
        return;
    }
    static const struct wslay_event_callbacks cbs = {
        .recv_callback = ws_recv_cb, .send_callback = ws_send_cb, .on_msg_recv_callback = ws_msg_cb,
    };
    ws->tcp = tcp;
    tcp->data = ws;
    ws->upgraded = 1;
    ws->handles = 2;
    uv_timer_init(g->loop, &ws->timer);
    ws->timer.data = ws;
    if (wslay_event_context_server_init(&ws->ctx, &cbs, ws) != 0) {
        ws->ctx = NULL;
        ws_close_now(ws);
        return;
    }
    wslay_event_config_set_max_recv_msg_length(ws->ctx, GW_WS_MAX_RECV);
    ws->sub.seq = ws->after;
    gw_sub_add(g, &ws->sub, GW_SUB_WS, ws->run_id, ws_wake, ws);
    ws->sub.queued = ws_queued;
    gw_sub_kick(&ws->sub); /* the history goes out in the next round */
    uv_timer_start(&ws->timer, ws_timer_cb, GW_WS_PING_MS, GW_WS_PING_MS);
    if (uv_read_start((uv_stream_t *)tcp, ws_alloc_cb, ws_read_cb) != 0) {
        ws_close_now(ws);
        return;
    }
    if (rest_len > 0) {
        tr_buf_add(&ws->in, rest, rest_len);
        ws_feed(ws);
    }
}

/* ---- the handshake --------------------------------------------------------------------------- */

/* Does the comma-separated header value list hold token (case-insensitive)? */
static bool list_has(const char *list, const char *token)
{
    size_t tl = strlen(token);
    const char *p = list;
    while (p != NULL && *p != '\0') {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        const char *e = p;
        while (*e != '\0' && *e != ',')
            e++;
        const char *t = e;
        while (t > p && (t[-1] == ' ' || t[-1] == '\t'))
            t--;
        if ((size_t)(t - p) == tl && strncasecmp(p, token, tl) == 0)
            return true;
        p = e;
    }
    return false;
}

void gw_h_run_ws(struct gw_call *c)
{
    struct tr_gateway *g = c->g;
    struct tr_httpd_req *req = c->req;
    uint64_t key, after = 0;
    if (c->sink != NULL) {
        gw_respond_error(c, 400, "bad_request", "WebSocket needs HTTP");
        return;
    }
    if (tr_run_id_from_text(c->m.param, c->m.param_len, &key) != TR_OK) {
        gw_respond_error(c, 404, "not_found", "no run %.64s", c->m.param);
        return;
    }
    char num[32];
    int q = gw_query_get(req->query, "after", num, sizeof num);
    if (q < 0 || (q > 0 && (gw_parse_u64(num, &after) != TR_OK || after == UINT64_MAX))) {
        gw_respond_error(c, 400, "invalid_query", "after: must be an event's seq");
        return;
    }
    void *buf;
    const struct troupe_state_Run *r;
    int rv = gw_load_run(g->store, key, &buf, &r);
    bool visible = rv == TR_OK && gw_run_visible(&c->who, r);
    tr_free(buf);
    if (!visible) {
        gw_respond_error(c, 404, "not_found", "no run %.64s", c->m.param);
        return;
    }
    const char *upgrade = tr_httpd_header(req, "Upgrade");
    const char *connection = tr_httpd_header(req, "Connection");
    const char *version = tr_httpd_header(req, "Sec-WebSocket-Version");
    const char *wskey = tr_httpd_header(req, "Sec-WebSocket-Key");
    if (strcmp(req->method, "GET") != 0 || upgrade == NULL || !list_has(upgrade, "websocket") ||
        connection == NULL || !list_has(connection, "upgrade")) {
        gw_respond_error(c, 400, "websocket_required",
                         "this route needs a WebSocket handshake (Upgrade: websocket, Connection: Upgrade)");
        return;
    }
    if (version == NULL || strcmp(version, "13") != 0) {
        gw_respond_error(c, 426, "websocket_version", "Sec-WebSocket-Version: 13 is the version served");
        return;
    }
    unsigned char raw[32];
    size_t raw_len = 0;
    if (wskey == NULL || strlen(wskey) != 24 ||
        sodium_base642bin(raw, sizeof raw, wskey, 24, NULL, &raw_len, NULL, sodium_base64_VARIANT_ORIGINAL) != 0 ||
        raw_len != 16) {
        gw_respond_error(c, 400, "websocket_key", "Sec-WebSocket-Key: must be 16 bytes in base64");
        return;
    }
    if (g->n_ws >= g->max_conns) {
        gw_respond_error(c, 503, "too_many_connections", "%u WebSockets are open; try again later", g->n_ws);
        return;
    }
    /* Sec-WebSocket-Accept: base64(SHA-1(key + GUID)). */
    char cat[24 + sizeof GW_WS_GUID];
    memcpy(cat, wskey, 24);
    memcpy(cat + 24, GW_WS_GUID, sizeof GW_WS_GUID);
    unsigned char digest[SHA_DIGEST_LENGTH];
    SHA1((const unsigned char *)cat, strlen(cat), digest);
    char accept[sodium_base64_ENCODED_LEN(SHA_DIGEST_LENGTH, sodium_base64_VARIANT_ORIGINAL)];
    sodium_bin2base64(accept, sizeof accept, digest, sizeof digest, sodium_base64_VARIANT_ORIGINAL);
    const char *protos = tr_httpd_header(req, "Sec-WebSocket-Protocol");
    char head[512];
    int hl = snprintf(head, sizeof head,
                      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      "Sec-WebSocket-Accept: %s\r\n%s\r\n",
                      accept, protos != NULL && list_has(protos, "troupe") ? "Sec-WebSocket-Protocol: troupe\r\n" : "");
    struct gw_ws *ws = tr_calloc(1, sizeof *ws);
    ws->g = g;
    ws->run_id = key;
    ws->after = after;
    ws->next = g->ws;
    if (g->ws != NULL)
        g->ws->prev = ws;
    g->ws = ws;
    g->n_ws++;
    gw_call_upgrade(c, head, (size_t)hl, ws_upgraded, ws);
}

/* ---- the gateway ------------------------------------------------------------------------------ */

void gw_ws_close_all(struct tr_gateway *g, void (*cb)(void *), void *arg)
{
    g->ws_closed_cb = cb;
    g->ws_closed_arg = arg;
    for (struct gw_ws *ws = g->ws; ws != NULL; ws = ws->next)
        if (ws->upgraded)
            ws_close_now(ws);
    ws_maybe_all_closed(g); /* cb now when none was handed over */
}

unsigned gw_ws_count(struct tr_gateway *g)
{
    return g->n_ws;
}
