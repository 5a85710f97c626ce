/* Private to gateway/: live updates of runs to the gateway's waiters (SSE
 * streams, WebSocket streams, long polls, protocol subscriptions), driven by
 * the state service's after-commit hook (tr_state_on_applied), never by
 * polling; and the WebSocket endpoint (ws.c).
 *
 * A waiter is a struct gw_sub on run R. When an applied entry changes R, its
 * watch is marked; an idle handle then runs one "round" per loop turn:
 * every sub of every marked watch is woken once (many appends to R in one
 * entry, or in several entries applied in the same loop turn, are one
 * wake-up), and each reads what it has not sent yet through gw_live_read,
 * which reads R's journal from the store once per round and shares the
 * events (and their JSON, rendered once) between all subs of R. A sub can
 * also ask for a wake-up of its own (gw_sub_kick): to send the history at
 * the start, or when its connection drained after a pause.
 *
 * Slow readers: a stream writes while its connection has at most
 * GW_LIVE_HIGH_WATER bytes unsent, then pauses until the connection drains
 * (a callback, not a timer). A stream still paused when new events arrive
 * more than stall_ms (tr_gateway_opts.stream_stall_ms) after it paused is
 * disconnected (SSE: the connection is closed; WebSocket: close 1008;
 * protocol: the connection is dropped). Memory per stream is thus bounded by
 * the high-water mark plus one event.
 *
 * Everything runs on the gateway's loop (the state service's). */
#ifndef TR_GATEWAY_LIVE_H
#define TR_GATEWAY_LIVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

struct tr_gateway;
struct gw_live;
struct gw_watch;
struct gw_sub;

#define GW_LIVE_HIGH_WATER (256u << 10) /* unsent bytes before a stream pauses */
#define GW_LIVE_STALL_MS_DEFAULT 10000u
#define GW_LIVE_BEAT_MS 15000u          /* default: SSE keep-alive comments */
#define GW_LIVE_ROUND_WAKES 1024        /* wake-ups per loop turn; the rest in the next */
#define GW_LIVE_CACHE_EVENTS 512        /* events one read of a round holds */
#define GW_LIVE_CACHE_BYTES (4u << 20)

typedef void (*gw_wake_fn)(struct gw_sub *s);

/* Kinds, for metrics. */
enum gw_sub_kind { GW_SUB_LONGPOLL = 0, GW_SUB_SSE, GW_SUB_WS, GW_SUB_PROTO, GW_SUB_KINDS };

/* Embedded in the waiter; the fields are the live module's. */
struct gw_sub {
    struct gw_sub *prev, *next;   /* its watch's subs */
    struct gw_sub *kprev, *knext; /* the kicked list */
    struct gw_live *live;
    struct gw_watch *w;           /* NULL when not added */
    uint64_t run_id;
    uint64_t kick_round;
    int kicked;
    enum gw_sub_kind kind;
    gw_wake_fn wake;
    void *ud;
    size_t (*queued)(struct gw_sub *s); /* unsent bytes of its connection (metrics); may be NULL */
    void (*beat)(struct gw_sub *s);     /* every keepalive_ms (SSE comment lines); may be NULL */
    /* For the stream kinds (the live module does not read these). */
    uint64_t seq;                 /* last seq sent */
    int paused;                   /* over the high-water mark: waiting for a drain */
    uint64_t paused_at_ms;        /* loop time it paused */
};

/* One journal event of a round's read: raw is the verified Event. */
struct gw_ev {
    uint64_t seq;
    uint8_t type;                 /* troupe_journal_Data */
    void *raw;
    size_t raw_len;
    char *json;                   /* rendered on demand (gw_ev_json) */
    size_t json_len;
    char *sse;                    /* the SSE frame, built on demand (gw_ev_sse) */
    size_t sse_len;
};

/* Events past `after`: ev[0..n). end: the journal had no more when read (else
 * read again after these). terminal: the run was terminal (or gone) before the
 * journal was read, so with end nothing more will ever come. */
struct gw_evs {
    struct gw_ev *ev;
    size_t n;
    bool end;
    bool terminal;
};

/* Register the hook; 0 or TR_* (then nothing is left). */
int gw_live_start(struct tr_gateway *g);
/* Unregister the hook, free every watch; the subs still added are dropped
 * silently (call after every waiter is gone). Frees g->live later. */
void gw_live_close(struct tr_gateway *g);

void gw_sub_add(struct tr_gateway *g, struct gw_sub *s, enum gw_sub_kind kind, uint64_t run_id, gw_wake_fn wake,
                void *ud);
/* Safe on a sub that was never added or already removed, and from wake. */
void gw_sub_del(struct gw_sub *s);
/* Wake s in the next round even if nothing was applied. */
void gw_sub_kick(struct gw_sub *s);
/* Events of s's run past after (shared by the round). TR_OK, or TR_EIO when
 * the store cannot be read (the stream should end). */
int gw_live_read(struct gw_sub *s, uint64_t after, struct gw_evs *out);
/* The API.md JSON of e (compact, one line); "{}" if it cannot be rendered. */
const char *gw_ev_json(struct gw_ev *e, size_t *len);
/* "id: <seq>\nevent: <type>\ndata: <json>\n\n", built once per round. */
const char *gw_ev_sse(struct gw_ev *e, size_t *len);

/* A stream that is paused and got new events: true when it has been paused
 * longer than the stall limit (disconnect it; counted). */
bool gw_live_stalled(struct tr_gateway *g, struct gw_sub *s);
/* Note a pause (first time only) / a resume. */
void gw_live_pause(struct tr_gateway *g, struct gw_sub *s);

/* Prometheus lines (tr_malloc'd text; the caller frees). */
char *gw_live_metrics(struct tr_gateway *g);

/* ---- WebSocket (ws.c) ---------------------------------------------------------- */

struct gw_call;
/* GET /v1/runs/{id}/ws: check the handshake, then take the connection over
 * (RFC 6455 with wslay) and stream the run's events as text messages. */
void gw_h_run_ws(struct gw_call *c);
/* Finish c by handing its connection over (tr_httpd_upgrade with head);
 * counted as a 1xx answer. cb gets the socket (or NULL). */
void gw_call_upgrade(struct gw_call *c, const char *head, size_t len,
                     void (*cb)(uv_tcp_t *tcp, const void *rest, size_t rest_len, void *arg), void *arg);
/* Close every WebSocket connection (the gateway is closing); cb(arg) once
 * they are all gone (never from inside this call). */
void gw_ws_close_all(struct tr_gateway *g, void (*cb)(void *), void *arg);
/* Open WebSocket connections. */
unsigned gw_ws_count(struct tr_gateway *g);

#endif /* TR_GATEWAY_LIVE_H */
