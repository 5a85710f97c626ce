/* The HTTP JSON API of a node: the server, authentication, dispatch, the
 * life of a call, answers, proposals and long polls.
 *
 * Happy path of a write: on_request -> route -> authenticate -> handler
 * validates the body and builds a raft command -> gw_propose ->
 * (commit + apply on this node) -> propose_cb -> the handler's continuation
 * reads the applied record and answers with Troupe-Raft-Index.
 *
 * Failure modes:
 *   - the client leaves while a proposal is in flight: on_client_gone drops
 *     req; the proposal still completes and propose_cb frees the call
 *     without touching the request;
 *   - the gateway closes: the server's close drops every connection (every
 *     call loses its req, long polls end); calls still waiting on a proposal
 *     are detached (c->g = NULL) and freed by their callback later;
 *   - this node is not the leader, or closing: 503 not_leader / unavailable;
 *   - bodies over max_body_bytes: 413 from the server; malformed requests:
 *     400 from the server; the node keeps serving either way.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "gateway/gw_int.h"

/* ---- calls ------------------------------------------------------------------------ */

static void call_unlink(struct gw_call *c)
{
    struct tr_gateway *g = c->g;
    if (g == NULL)
        return;
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        g->calls = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

static void waiter_unlink(struct gw_call *c)
{
    struct tr_gateway *g = c->g;
    if (!c->waiting)
        return;
    c->waiting = 0;
    if (c->wprev != NULL)
        c->wprev->wnext = c->wnext;
    else if (g != NULL)
        g->waiters = c->wnext;
    if (c->wnext != NULL)
        c->wnext->wprev = c->wprev;
    c->wprev = c->wnext = NULL;
}

/* Free c once nothing refers to it any more. */
static void call_release(struct gw_call *c)
{
    if (c->req != NULL || c->pending || c->waiting)
        return;
    gw_sub_del(&c->sub);
    call_unlink(c);
    gw_run_req_free(&c->run);
    tr_free(c->text);
    tr_free(c);
}

void gw_call_abandon(struct gw_call *c)
{
    c->req = NULL;
    c->sink = NULL;
    waiter_unlink(c);
    gw_sub_del(&c->sub);
    call_release(c);
}

static void on_client_gone(struct tr_httpd_req *req, void *arg)
{
    gw_call_abandon(arg);
}

/* ---- answers ----------------------------------------------------------------------- */

static void respond_raw(struct gw_call *c, int status, const char *ctype, const char *body, size_t len)
{
    struct tr_httpd_req *req = c->req;
    if (req == NULL)
        return;
    char h_ctype[96], h_index[64], h_allow[96];
    const char *headers[6];
    size_t n = 0;
    snprintf(h_ctype, sizeof h_ctype, "Content-Type: %s", ctype);
    headers[n++] = h_ctype;
    headers[n++] = "Cache-Control: no-store";
    if (c->raft_index != 0) {
        snprintf(h_index, sizeof h_index, "Troupe-Raft-Index: %llu", (unsigned long long)c->raft_index);
        headers[n++] = h_index;
    }
    if (status == 405 && c->m.allow != NULL) {
        snprintf(h_allow, sizeof h_allow, "Allow: %s", c->m.allow);
        headers[n++] = h_allow;
    }
    if (status == 401)
        headers[n++] = "WWW-Authenticate: Bearer realm=\"troupe\"";
    char h_retry[48];
    if (status == 429 && c->retry_after_s > 0) {
        snprintf(h_retry, sizeof h_retry, "Retry-After: %u", c->retry_after_s);
        headers[n++] = h_retry;
    }
    if (c->g != NULL && status >= 100 && status < 600)
        c->g->http_count[c->m.route][status / 100]++;
    c->req = NULL;
    if (c->sink != NULL) {
        c->sink(c, status, body, len);
        call_release(c);
        return;
    }
    (void)tr_httpd_respond(req, status, headers, n, body, len); /* req is finished either way */
    call_release(c);
}

void gw_respond_text(struct gw_call *c, int status, const char *ctype, const char *body, size_t len)
{
    respond_raw(c, status, ctype, body, len);
}

void gw_respond_json(struct gw_call *c, int status, json_t *body)
{
    char *text = json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(12));
    json_decref(body);
    if (text == NULL) {
        static const char oops[] = "{\"error\":{\"code\":\"internal\",\"message\":\"cannot encode the answer\"}}";
        respond_raw(c, 500, "application/json", oops, sizeof oops - 1);
        return;
    }
    respond_raw(c, status, "application/json", text, strlen(text));
    free(text);
}

void gw_respond_error(struct gw_call *c, int status, const char *code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    gw_respond_json(c, status, gw_error_json(code, msg));
}

void gw_respond_gw_error(struct gw_call *c, const struct gw_error *e)
{
    gw_respond_json(c, e->status, gw_error_json(e->code, e->msg));
}

/* An entry that was not applied: why, as an HTTP answer. */
static void respond_status(struct gw_call *c, int status)
{
    c->raft_index = 0;
    switch (status) {
    case TR_ENOTLEADER: {
        struct tr_raft_info info = { 0 };
        if (c->g != NULL) {
            c->g->not_leader++;
            tr_raft_info(tr_state_raft(c->g->state), &info);
        }
        if (info.leader_id != 0)
            gw_respond_error(c, 503, "not_leader", "this node is not the leader; the leader is node %llu at %s",
                             (unsigned long long)info.leader_id, info.leader_address);
        else
            gw_respond_error(c, 503, "not_leader", "this node is not the leader and no leader is known");
        return;
    }
    case TR_ECLOSED:
        gw_respond_error(c, 503, "unavailable", "the node is shutting down");
        return;
    case TR_ETIMEDOUT:
        gw_respond_error(c, 503, "timeout", "the write was not committed in time; it may still apply");
        return;
    case TR_EINVAL:
        gw_respond_error(c, 500, "internal", "the command was refused as malformed");
        return;
    default:
        gw_respond_error(c, 503, "unavailable", "the write failed: %s", tr_strerror(status));
        return;
    }
}

/* ---- proposals --------------------------------------------------------------------- */

static void propose_cb(void *ud, const struct tr_state_reply *r)
{
    struct gw_call *c = ud;
    c->pending = 0;
    if (c->req == NULL || c->g == NULL) {
        call_release(c); /* the client or the gateway went away meanwhile */
        return;
    }
    if (r->status != TR_OK) {
        respond_status(c, r->status);
        return;
    }
    c->raft_index = r->raft_index;
    c->on_reply(c, r);
}

void gw_call_release(struct gw_call *c)
{
    call_release(c);
}

void gw_propose_checkpoint(struct gw_call *c)
{
    int rv = tr_state_checkpoint(c->g->state, propose_cb, c);
    if (rv != TR_OK) {
        respond_status(c, rv);
        return;
    }
    c->pending = 1;
}

void gw_propose(struct gw_call *c, struct tr_fb_builder *b, gw_reply_fn on_reply)
{
    size_t len;
    const uint8_t *data = tr_fb_builder_data(b, &len);
    c->on_reply = on_reply;
    int rv = tr_state_propose(c->g->state, data, len, propose_cb, c);
    if (rv != TR_OK) {
        respond_status(c, rv);
        return;
    }
    c->pending = 1;
}

struct gw_cmd_head gw_cmd_head(struct gw_call *c)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct gw_cmd_head h = { .time_us = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000,
                             .origin_node = c->g->node_id };
    return h;
}

/* ---- long polls and event streams ------------------------------------------------
 * Both wait on the run through live.h: woken once per applied entry that
 * changed the run (no polling). Long polls also wait for a deadline: one
 * timer for all of them, armed at the earliest. */

uint64_t gw_loop_now_ms(struct gw_call *c)
{
    return uv_now(c->g->loop);
}

bool gw_run_terminal(int status)
{
    return status == troupe_journal_RunStatus_Succeeded || status == troupe_journal_RunStatus_Failed ||
           status == troupe_journal_RunStatus_Cancelled;
}

static void long_poll_done(struct gw_call *c)
{
    waiter_unlink(c);
    gw_sub_del(&c->sub);
    gw_answer_run(c, 200, c->run_id);
}

static void tick_cb(uv_timer_t *t)
{
    struct tr_gateway *g = t->data;
    uint64_t now = uv_now(g->loop), next_due = UINT64_MAX;
    struct gw_call *next;
    for (struct gw_call *c = g->waiters; c != NULL; c = next) {
        next = c->wnext;
        if (now >= c->deadline_ms)
            long_poll_done(c);
        else if (c->deadline_ms < next_due)
            next_due = c->deadline_ms;
    }
    if (next_due != UINT64_MAX)
        uv_timer_start(&g->tick, tick_cb, next_due - now, 0);
}

/* The run of a long poll changed: answer if it is terminal (or gone). */
static void long_poll_wake(struct gw_sub *s)
{
    struct gw_call *c = s->ud;
    void *buf;
    const struct troupe_state_Run *r;
    int rv = gw_load_run(c->g->store, c->run_id, &buf, &r);
    bool done = rv != TR_OK || gw_run_terminal(troupe_state_Run_status(r));
    tr_free(buf);
    if (done)
        long_poll_done(c);
}

void gw_wait_run(struct gw_call *c, uint64_t run_id, uint64_t deadline_ms)
{
    struct tr_gateway *g = c->g;
    c->run_id = run_id;
    c->deadline_ms = deadline_ms;
    c->waiting = 1;
    c->wprev = NULL;
    c->wnext = g->waiters;
    if (g->waiters != NULL)
        g->waiters->wprev = c;
    g->waiters = c;
    gw_sub_add(g, &c->sub, GW_SUB_LONGPOLL, run_id, long_poll_wake, c);
    uint64_t now = uv_now(g->loop);
    uint64_t in = deadline_ms > now ? deadline_ms - now : 0;
    if (!uv_is_active((uv_handle_t *)&g->tick) || uv_timer_get_due_in(&g->tick) > in)
        uv_timer_start(&g->tick, tick_cb, in, 0);
}

/* The stream is complete: end the response (the connection closes). */
static void sse_finish(struct gw_call *c)
{
    struct tr_httpd_req *req = c->req;
    gw_sub_del(&c->sub);
    c->req = NULL;
    if (c->g != NULL)
        c->g->http_count[c->m.route][2]++;
    (void)tr_httpd_stream_end(req);
    call_release(c);
}

/* One event per journal entry: `id:` its seq, `event:` its type, `data:` the
 * JSON of GET .../events (one line: compact JSON has no newlines). Writes
 * until the connection holds GW_LIVE_HIGH_WATER unsent bytes, then pauses
 * until it drains. */
static void sse_pump(struct gw_call *c)
{
    struct gw_evs v;
    for (;;) {
        if (gw_live_read(&c->sub, c->sub.seq, &v) != TR_OK) {
            sse_finish(c); /* the store failed: the client resumes with Last-Event-ID */
            return;
        }
        for (size_t i = 0; i < v.n; i++) {
            if (tr_httpd_queued(c->req) > GW_LIVE_HIGH_WATER) {
                gw_live_pause(c->g, &c->sub);
                return;
            }
            struct gw_ev *e = &v.ev[i];
            size_t len;
            const char *frame = gw_ev_sse(e, &len); /* built once for every stream of the run */
            if (tr_httpd_stream_write(c->req, frame, len) != TR_OK)
                return; /* the connection is going: its close callback follows */
            c->sub.seq = e->seq;
        }
        if (v.end)
            break;
    }
    if (v.terminal)
        sse_finish(c);
}

static void sse_wake(struct gw_sub *s)
{
    struct gw_call *c = s->ud;
    if (c->req == NULL || c->g == NULL)
        return;
    if (s->paused) {
        if (gw_live_stalled(c->g, s)) {
            tr_log(TR_LOG_INFO, "gateway: an event stream of run %016llx does not read; dropped",
                   (unsigned long long)c->run_id);
            gw_sub_del(s);
            tr_httpd_abort(c->req); /* on_client_gone follows */
        }
        return;
    }
    sse_pump(c);
}

static void sse_drained(struct tr_httpd_req *req, void *arg)
{
    struct gw_call *c = arg;
    if (c->sub.paused) {
        c->sub.paused = 0;
        gw_sub_kick(&c->sub);
    }
}

/* A comment line every GW_LIVE_BEAT_MS: proxies keep the stream open and a
 * vanished client shows up as a write error. Not while paused. */
static void sse_beat(struct gw_sub *s)
{
    struct gw_call *c = s->ud;
    if (c->req != NULL && !s->paused)
        (void)tr_httpd_stream_write(c->req, ":\n\n", 3);
}

static size_t sse_queued(struct gw_sub *s)
{
    struct gw_call *c = s->ud;
    return c->req != NULL ? tr_httpd_queued(c->req) : 0;
}

void gw_sse_start(struct gw_call *c, uint64_t run_id, uint64_t after)
{
    static const char *const headers[] = { "Content-Type: text/event-stream", "Cache-Control: no-store",
                                           "X-Accel-Buffering: no" };
    if (tr_httpd_stream_start(c->req, 200, headers, 3, TR_HTTPD_RAW) != TR_OK) {
        gw_respond_error(c, 500, "internal", "cannot start the event stream");
        return;
    }
    c->sse = 1;
    c->run_id = run_id;
    c->sub.seq = after;
    gw_sub_add(c->g, &c->sub, GW_SUB_SSE, run_id, sse_wake, c);
    c->sub.queued = sse_queued;
    c->sub.beat = sse_beat;
    tr_httpd_on_drain(c->req, sse_drained, c);
    gw_sub_kick(&c->sub); /* the history goes out in the next round */
}

void gw_call_upgrade(struct gw_call *c, const char *head, size_t len,
                     void (*cb)(uv_tcp_t *tcp, const void *rest, size_t rest_len, void *arg), void *arg)
{
    struct tr_httpd_req *req = c->req;
    c->req = NULL;
    if (c->g != NULL)
        c->g->http_count[c->m.route][1]++;
    if (tr_httpd_upgrade(req, head, len, cb, arg) != TR_OK)
        cb(NULL, NULL, 0, arg); /* the connection is going away */
    call_release(c);
}

/* ---- authentication ------------------------------------------------------------------ */

/* Who sends req. Issue 4: one admin token (TROUPE_ADMIN_TOKEN) for the
 * default tenant; without a token every caller is that admin. Issue 6
 * replaces this with API keys looked up in the credentials family. The
 * comparison hashes both sides first, so that it takes the same time
 * whatever the lengths, then compares the digests with sodium_memcmp. */
/* The credentials of req: Authorization, or for the WebSocket route (browsers
 * cannot set headers on a WebSocket) "Bearer <t>" from ?token=<t> or from a
 * Sec-WebSocket-Protocol entry "bearer.<t>". NULL when none. */
static const char *auth_value(enum gw_route_id route, struct tr_httpd_req *req, char *buf, size_t cap)
{
    const char *h = tr_httpd_header(req, "Authorization");
    if (h != NULL || route != GW_R_RUN_WS)
        return h;
    memcpy(buf, "Bearer ", 7);
    if (gw_query_get(req->query, "token", buf + 7, cap - 7) == 1)
        return buf;
    const char *p = tr_httpd_header(req, "Sec-WebSocket-Protocol");
    while (p != NULL && *p != '\0') {
        while (*p == ' ' || *p == ',')
            p++;
        size_t n = strcspn(p, ", ");
        if (n > 7 && strncmp(p, "bearer.", 7) == 0 && n - 7 < cap - 8) {
            memcpy(buf + 7, p + 7, n - 7);
            buf[n] = '\0';
            return buf;
        }
        p += n;
    }
    return NULL;
}

static int authenticate(struct tr_gateway *g, struct tr_httpd_req *req, enum gw_route_id route,
                        struct gw_principal *p, struct gw_error *e)
{
    char alt[GW_PARAM_MAX + 8];
    return gw_authenticate(g, auth_value(route, req, alt, sizeof alt), p, e); /* auth.c */
}

/* ---- dispatch ------------------------------------------------------------------------- */

struct gw_call *gw_call_new(struct tr_gateway *g, struct tr_httpd_req *req)
{
    struct gw_call *c = tr_calloc(1, sizeof *c);
    c->g = g;
    c->req = req;
    c->next = g->calls;
    if (g->calls != NULL)
        g->calls->prev = c;
    g->calls = c;
    return c;
}

static void on_request(struct tr_httpd_req *req, void *ud)
{
    struct gw_call *c = gw_call_new(ud, req);
    tr_httpd_on_close(req, on_client_gone, c);
    gw_call_dispatch(c);
}

static void dispatch_route(struct gw_call *c);

/* Read-your-writes: a read carrying `Troupe-Min-Index: N` (the
 * Troupe-Raft-Index of a write, possibly answered by another node) is held
 * until this node has applied N, at most MIN_INDEX_WAIT_MS (then 503
 * timeout). */
#define MIN_INDEX_WAIT_MS 5000

static void min_index_reached(void *ud, int status)
{
    struct gw_call *c = ud;
    c->pending = 0;
    if (c->req == NULL || c->g == NULL) {
        call_release(c);
        return;
    }
    if (status != TR_OK) {
        gw_respond_error(c, 503, "timeout", "this node has not applied the requested index yet (Troupe-Min-Index)");
        return;
    }
    dispatch_route(c);
}

void gw_call_dispatch(struct gw_call *c)
{
    struct tr_gateway *g = c->g;
    struct tr_httpd_req *req = c->req;
    int st = gw_route(req->method, req->path, &c->m);
    if (st == 404) {
        c->m.route = GW_R_NONE;
        gw_respond_error(c, 404, "not_found", "no route for %.16s %.200s", req->method, req->path);
        return;
    }
    if (st == 405) {
        gw_respond_error(c, 405, "method_not_allowed", "%.16s is not allowed on %.200s (allowed: %s)", req->method,
                         req->path, c->m.allow);
        return;
    }
    if (strncmp(req->path, "/v1/", 4) == 0) {
        struct gw_error e;
        if (authenticate(g, req, c->m.route, &c->who, &e) != 0 || gw_authorize(c, &e) != 0) {
            gw_respond_gw_error(c, &e);
            return;
        }
    }
    const char *min_index = strcmp(req->method, "GET") == 0 ? tr_httpd_header(req, "Troupe-Min-Index") : NULL;
    if (min_index != NULL) {
        uint64_t n;
        if (gw_parse_u64(min_index, &n) != 0) {
            gw_respond_error(c, 400, "bad_request", "Troupe-Min-Index: expected a raft index");
            return;
        }
        if (n > tr_state_applied(g->state)) {
            int rv = tr_state_wait_applied(g->state, n, MIN_INDEX_WAIT_MS, min_index_reached, c);
            if (rv != TR_OK) {
                respond_status(c, rv);
                return;
            }
            c->pending = 1;
            return;
        }
    }
    dispatch_route(c);
}

static void dispatch_route(struct gw_call *c)
{
    struct tr_httpd_req *req = c->req;
    bool post = strcmp(req->method, "POST") == 0;
    switch (c->m.route) {
    case GW_R_HEALTHZ: gw_h_healthz(c); return;
    case GW_R_METRICS: gw_h_metrics(c); return;
    case GW_R_CLUSTER: gw_h_cluster(c); return;
    case GW_R_DIGEST: gw_h_digest_at(c); return;
    case GW_R_CLUSTER_NODES: gw_h_cluster_nodes(c); return;
    case GW_R_CLUSTER_NODE_REMOVE: gw_h_cluster_node_remove(c); return;
    case GW_R_CLUSTER_NODE_DRAIN: gw_h_cluster_node_drain(c); return;
    case GW_R_CLUSTER_TRANSFER: gw_h_cluster_transfer(c); return;
    case GW_R_CLUSTER_CHECKPOINT: gw_h_cluster_checkpoint(c); return;
    case GW_R_RUNS:
        if (post)
            gw_h_runs_create(c);
        else
            gw_h_runs_list(c);
        return;
    case GW_R_RUN: gw_h_run_get(c); return;
    case GW_R_RUN_EVENTS: gw_h_run_events(c); return;
    case GW_R_RUN_CANCEL: gw_h_run_cancel(c); return;
    case GW_R_APPROVALS: gw_h_approvals_list(c); return;
    case GW_R_APPROVAL: gw_h_approval_decide(c); return;
    case GW_R_TOOLS:
        if (post)
            gw_h_tools_register(c);
        else
            gw_h_tools_list(c);
        return;
    case GW_R_TOOL: gw_h_tool_get(c); return;
    case GW_R_TOOL_DISABLE: gw_h_tool_set_enabled(c, false); return;
    case GW_R_TOOL_ENABLE: gw_h_tool_set_enabled(c, true); return;
    case GW_R_WEB_INDEX:
    case GW_R_WEB: gw_h_web(c); return;
    case GW_R_RUN_WS: gw_h_run_ws(c); return;
    case GW_R_TENANTS:
        if (post)
            gw_h_tenants_create(c);
        else
            gw_h_tenants_list(c);
        return;
    case GW_R_TENANT:
        if (post)
            gw_h_tenant_update(c);
        else
            gw_h_tenant_get(c);
        return;
    case GW_R_KEYS: gw_h_keys_create(c); return;
    case GW_R_KEY_REVOKE: gw_h_key_revoke(c); return;
    default:
        gw_respond_error(c, 501, "not_implemented", "%.200s is not implemented on this node yet", req->path);
        return;
    }
}

/* ---- lifecycle ----------------------------------------------------------------------- */

static void httpd_closed(void *arg);

int tr_gateway_start(struct tr_ctx *ctx, const struct tr_gateway_opts *o, struct tr_gateway **out,
                     struct tr_err *err)
{
    struct tr_err local = { 0 };
    if (err == NULL)
        err = &local;
    if (o == NULL || o->state == NULL)
        return tr_err_set(err, TR_EINVAL, "gateway: no state service");
    uv_loop_t *loop = tr_ctx_loop(ctx);
    if (loop == NULL)
        return tr_err_set(err, TR_ENOTSUP, "gateway: needs a libuv loop (not in deterministic mode)");
    if (sodium_init() < 0)
        return tr_err_set(err, TR_ESYS, "gateway: libsodium failed to initialise");

    struct tr_gateway *g = tr_calloc(1, sizeof *g);
    g->rt = o->rt;
    g->state = o->state;
    g->store = tr_state_store(o->state);
    g->env = o->env;
    g->loop = loop;
    g->node_id = o->node_id;
    if (o->admin_token != NULL && o->admin_token[0] != '\0') {
        size_t n = strlen(o->admin_token);
        char *h = tr_malloc(n + 8);
        memcpy(h, "Bearer ", 7);
        memcpy(h + 7, o->admin_token, n + 1);
        crypto_generichash(g->token_hash, sizeof g->token_hash, (const unsigned char *)h, n + 7, NULL, 0);
        sodium_memzero(h, n + 8);
        tr_free(h);
        g->auth = true;
    }
    struct tr_httpd_opts ho = {
        .host = o->host, .port = o->port,
        .max_body_bytes = o->max_body_bytes ? o->max_body_bytes : GW_MAX_BODY_DEFAULT,
        .max_connections = o->max_connections, .request_timeout_ms = o->request_timeout_ms,
        .on_request = on_request, .ud = g,
    };
    g->max_conns = o->max_connections ? o->max_connections : 1024;
    g->stall_ms = o->stream_stall_ms ? o->stream_stall_ms : GW_LIVE_STALL_MS_DEFAULT;
    g->keepalive_ms = o->stream_keepalive_ms ? o->stream_keepalive_ms : GW_LIVE_BEAT_MS;
    int rv = tr_httpd_start(loop, &ho, &g->httpd, err);
    if (rv != TR_OK) {
        tr_err_wrap(err, "gateway");
        tr_free(g);
        return rv;
    }
    uv_timer_init(loop, &g->tick);
    g->tick.data = g;
    tr_fb_builder_init(&g->b);
    (void)gw_live_start(g);
    if (o->client_host != NULL) {
        rv = gw_proto_start(g, o->client_host, o->client_port, err);
        if (rv != TR_OK) {
            tr_err_wrap(err, "gateway");
            g->closing = 1;
            tr_httpd_close(g->httpd, httpd_closed, g); /* frees g, no callback */
            return rv;
        }
    }
    tr_log(TR_LOG_INFO, "gateway: HTTP API on %s:%d%s", o->host ? o->host : "127.0.0.1", tr_httpd_port(g->httpd),
           g->auth ? " (admin token required)" : "");
    *out = g;
    return TR_OK;
}

static void tick_closed(uv_handle_t *h)
{
    struct tr_gateway *g = h->data;
    void (*cb)(void *) = g->close_cb;
    void *arg = g->close_arg;
    tr_fb_builder_free(&g->b);
    gw_limits_free(g);
    tr_free(g);
    if (cb != NULL)
        cb(arg);
}

static void httpd_closed(void *arg)
{
    struct tr_gateway *g = arg;
    g->httpd = NULL;
    /* Every connection is gone: what is left waits on a proposal. */
    struct gw_call *next;
    for (struct gw_call *c = g->calls; c != NULL; c = next) {
        next = c->next;
        c->prev = c->next = NULL;
        c->g = NULL;
    }
    g->calls = NULL;
    g->waiters = NULL;
    gw_live_close(g);
    uv_close((uv_handle_t *)&g->tick, tick_closed);
}

static void proto_closed(void *arg)
{
    struct tr_gateway *g = arg;
    tr_httpd_close(g->httpd, httpd_closed, g);
}

static void ws_closed(void *arg)
{
    struct tr_gateway *g = arg;
    if (g->proto != NULL)
        gw_proto_close(g, proto_closed, g); /* its calls first: they live on g */
    else
        tr_httpd_close(g->httpd, httpd_closed, g);
}

void tr_gateway_close(struct tr_gateway *g, void (*cb)(void *), void *arg)
{
    if (g->closing)
        return;
    g->closing = 1;
    g->close_cb = cb;
    g->close_arg = arg;
    uv_timer_stop(&g->tick);
    gw_ws_close_all(g, ws_closed, g);
}

int tr_gateway_port(struct tr_gateway *g)
{
    return tr_httpd_port(g->httpd);
}

int tr_gateway_client_port(struct tr_gateway *g)
{
    return g->proto != NULL ? gw_proto_port(g) : 0;
}
