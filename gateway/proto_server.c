/* The FlatBuffers TCP client protocol (API.md "FlatBuffers client protocol",
 * schemas/protocol.fbs): frames of a 4-byte little-endian length and a
 * troupe.proto.Frame (TRP1), requests multiplexed by id.
 *
 * Happy path: on_read collects a whole frame -> on_frame verifies it (no
 * field is read before) -> the Request becomes the HTTP API's request
 * (method, path, query, JSON body, Authorization) of a gw_call -> the same
 * dispatch, authentication, validation, command building and proposal as
 * HTTP -> the call's answer arrives in call_sink -> on success the result
 * is built from the applied records in the store (RunInfo, Approval, Tool
 * ...), on failure from the HTTP error -> one Response frame with the
 * request's id.
 *
 * Failure modes:
 *   - a length prefix over 16 MiB: an error Response (id 0), then close
 *     (the framing cannot be trusted past it);
 *   - a frame that does not verify (identifier, union tag, offsets,
 *     truncation inside the frame) or is not a Request: an error Response
 *     with id 0; the connection stays usable;
 *   - a client that does not read: its unsent bytes pass
 *     GW_PROTO_SENDQ_MAX and it is dropped;
 *   - the client leaves with calls in flight: each is abandoned
 *     (gw_call_abandon): its proposal still completes, its answer is dropped;
 *   - an answer that would make a frame over 16 MiB: an error TooLarge.
 * Subscriptions: Subscribe goes through the HTTP handler of GET
 * /v1/runs/{id} (authentication, visibility); then the journal past
 * after_seq goes out as EventPush frames (history, then live: woken by the
 * state service's after-commit hook through live.h, never by polling),
 * pausing while more than GW_LIVE_HIGH_WATER bytes are unsent until the
 * connection drains, and ends with SubscriptionEnd once the run is terminal
 * and fully pushed. A connection whose subscription stays paused while new
 * events come for longer than the stall limit is dropped (slow reader). The
 * tenant and key operations are translated by proto_tenants.c.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "gateway/gw_int.h"
#include "schemas/protocol_generated.h"

#define READ_CHUNK (64u << 10)
#define CALLS_MAX 1024      /* requests in flight on one connection */
#define API_KEY_MAX 1024
#define SUBS_MAX 256        /* subscriptions of one connection */

/* A live event subscription: journal entries of run_key past seq. */
struct psub {
    struct psub *next;           /* conn->subs */
    struct pconn *conn;
    uint64_t id;
    struct gw_sub sub;           /* live.h: sub.run_id, sub.seq (last pushed), sub.paused */
};

struct pconn;

/* One request in flight: the HTTP-shaped request its gw_call reads. */
struct pcall {
    struct pconn *conn;
    struct gw_call *c;
    struct pcall *prev, *next;   /* conn->calls */
    uint64_t id;
    uint8_t op;
    uint64_t after;              /* GetEvents */
    bool skip_disabled;          /* ListTools with include_disabled = false */
    struct tr_httpd_req req;
    struct tr_httpd_header hdr[2];
    char *path, *query, *body, *auth, *idem;
};

struct pconn {
    uv_tcp_t tcp;
    struct gw_proto *p;
    struct pconn *prev, *next;   /* p->conns */
    uint8_t *rbuf;
    size_t rlen, rcap;
    size_t queued;               /* bytes handed to uv_write, not yet written */
    unsigned n_calls;
    struct pcall *calls;
    char *api_key;               /* from an Auth request */
    struct psub *subs;
    unsigned n_subs;
    uint64_t last_sub_id;
    int closing;
    int close_after_write;       /* framing lost: close once the error is out */
};

struct gw_proto {
    struct tr_gateway *g;
    uv_tcp_t listener;
    struct pconn *conns;
    unsigned n_conns;
    unsigned open_handles;       /* the listener and every connection */
    unsigned n_subs;             /* over all connections */
    int closing;
    void (*close_cb)(void *);
    void *close_arg;
    struct tr_fb_builder b;      /* response frames */
};

struct wreq {
    uv_write_t w;
    struct pconn *conn;
    size_t len;
    uint8_t data[];
};

static void conn_close(struct pconn *conn);

/* ---- sending ------------------------------------------------------------------------ */

static void write_cb(uv_write_t *w, int status)
{
    struct wreq *wr = (struct wreq *)w;
    struct pconn *conn = wr->conn;
    conn->queued -= wr->len;
    tr_free(wr);
    if (status != 0 || (conn->close_after_write && conn->queued == 0)) {
        conn_close(conn);
        return;
    }
    if (conn->queued == 0 && !conn->closing) {
        /* Drained: paused subscriptions go on in the next round. */
        for (struct psub *sub = conn->subs; sub != NULL; sub = sub->next)
            if (sub->sub.paused) {
                sub->sub.paused = 0;
                gw_sub_kick(&sub->sub);
            }
    }
}

/* Send the size-prefixed frame finished in b. */
static void send_built(struct pconn *conn, struct tr_fb_builder *b)
{
    if (conn->closing)
        return;
    size_t len;
    const uint8_t *data = tr_fb_builder_data(b, &len);
    if (conn->queued + len > GW_PROTO_SENDQ_MAX) {
        tr_log(TR_LOG_WARN, "gateway: client protocol: dropping a client that does not read (%zu bytes queued)",
               conn->queued);
        conn_close(conn);
        return;
    }
    struct wreq *wr = tr_malloc(sizeof *wr + len);
    memcpy(wr->data, data, len);
    wr->conn = conn;
    wr->len = len;
    uv_buf_t buf = uv_buf_init((char *)wr->data, (unsigned)len);
    if (uv_write(&wr->w, (uv_stream_t *)&conn->tcp, &buf, 1, write_cb) != 0) {
        tr_free(wr);
        conn_close(conn);
        return;
    }
    conn->queued += len;
}

/* Finish b with a Response of (result_type, result) or error and send it. */
static void send_response(struct pconn *conn, struct tr_fb_builder *b, uint64_t id, uint8_t rtype, tr_fb_ref result,
                          tr_fb_ref error)
{
    troupe_proto_Response_start(b);
    troupe_proto_Response_add_id(b, id);
    if (rtype != troupe_proto_Result_NONE) {
        troupe_proto_Response_add_result_type(b, rtype);
        troupe_proto_Response_add_result(b, result);
    }
    if (error != 0)
        troupe_proto_Response_add_error(b, error);
    tr_fb_ref r = troupe_proto_Response_end(b);
    troupe_proto_Frame_start(b);
    troupe_proto_Frame_add_body_Response(b, r);
    troupe_proto_Frame_finish_sized(b, troupe_proto_Frame_end(b));
    size_t len;
    (void)tr_fb_builder_data(b, &len);
    if (len - 4 > GW_PROTO_FRAME_MAX && error == 0) {
        tr_fb_builder_reset(b);
        tr_fb_ref m = tr_fb_create_str(b, "the answer is over the 16 MiB frame limit; ask for a smaller page");
        troupe_proto_Error_start(b);
        troupe_proto_Error_add_code(b, troupe_proto_ErrorCode_TooLarge);
        troupe_proto_Error_add_message(b, m);
        send_response(conn, b, id, troupe_proto_Result_NONE, 0, troupe_proto_Error_end(b));
        return;
    }
    send_built(conn, b);
}

__attribute__((format(printf, 4, 5))) static void send_error(struct pconn *conn, uint64_t id, uint16_t code,
                                                             const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    struct tr_fb_builder *b = &conn->p->b;
    tr_fb_builder_reset(b);
    tr_fb_ref m = tr_fb_create_str(b, msg);
    troupe_proto_Error_start(b);
    troupe_proto_Error_add_code(b, code);
    troupe_proto_Error_add_message(b, m);
    send_response(conn, b, id, troupe_proto_Result_NONE, 0, troupe_proto_Error_end(b));
}

/* ---- answers ---------------------------------------------------------------------------- */

static uint16_t error_code(int status, const char *code)
{
    switch (status) {
    case 400: return troupe_proto_ErrorCode_BadRequest;
    case 401: return troupe_proto_ErrorCode_Unauthorized;
    case 403: return troupe_proto_ErrorCode_Forbidden;
    case 404: return troupe_proto_ErrorCode_NotFound;
    case 409: return troupe_proto_ErrorCode_Conflict;
    case 413: return troupe_proto_ErrorCode_TooLarge;
    case 429: return troupe_proto_ErrorCode_RateLimited;
    case 501: return troupe_proto_ErrorCode_Unsupported;
    case 503:
        if (code != NULL && strcmp(code, "not_leader") == 0)
            return troupe_proto_ErrorCode_NotLeader;
        if (code != NULL && strcmp(code, "timeout") == 0)
            return troupe_proto_ErrorCode_Timeout;
        return troupe_proto_ErrorCode_Unavailable;
    default: return troupe_proto_ErrorCode_Internal;
    }
}

/* ---- subscriptions ---------------------------------------------------------------------- */

static void send_sub_end(struct pconn *conn, uint64_t sub_id, const char *reason)
{
    struct tr_fb_builder *b = &conn->p->b;
    tr_fb_builder_reset(b);
    tr_fb_ref r = tr_fb_create_str(b, reason);
    troupe_proto_SubscriptionEnd_start(b);
    troupe_proto_SubscriptionEnd_add_subscription_id(b, sub_id);
    troupe_proto_SubscriptionEnd_add_reason(b, r);
    tr_fb_ref e = troupe_proto_SubscriptionEnd_end(b);
    troupe_proto_Frame_start(b);
    troupe_proto_Frame_add_body_SubscriptionEnd(b, e);
    troupe_proto_Frame_finish_sized(b, troupe_proto_Frame_end(b));
    send_built(conn, b);
}

/* Push what the journal has past sub->sub.seq. 1 when the subscription is
 * complete (the run is terminal, or gone, and every entry was pushed). */
static int sub_pump(struct pconn *conn, struct psub *sub)
{
    char run_text[TR_RUN_ID_TEXT_LEN];
    tr_run_id_text(sub->sub.run_id, run_text);
    struct tr_fb_builder *b = &conn->p->b;
    struct gw_evs v;
    for (;;) {
        if (gw_live_read(&sub->sub, sub->sub.seq, &v) != TR_OK)
            return 1;
        for (size_t i = 0; i < v.n; i++) {
            if (conn->closing)
                return 0;
            if (conn->queued > GW_LIVE_HIGH_WATER) {
                gw_live_pause(conn->p->g, &sub->sub);
                return 0;
            }
            struct gw_ev *e = &v.ev[i];
            tr_fb_builder_reset(b);
            tr_fb_ref run = tr_fb_create_str(b, run_text);
            tr_fb_ref bytes = tr_fb_create_bytes(b, e->raw, e->raw_len);
            troupe_proto_EventPush_start(b);
            troupe_proto_EventPush_add_subscription_id(b, sub->id);
            troupe_proto_EventPush_add_run_id(b, run);
            troupe_proto_EventPush_add_event(b, bytes);
            tr_fb_ref push = troupe_proto_EventPush_end(b);
            troupe_proto_Frame_start(b);
            troupe_proto_Frame_add_body_EventPush(b, push);
            troupe_proto_Frame_finish_sized(b, troupe_proto_Frame_end(b));
            send_built(conn, b);
            sub->sub.seq = e->seq;
        }
        if (v.end)
            break;
    }
    return !conn->closing && v.terminal;
}

static void sub_remove(struct pconn *conn, struct psub *sub)
{
    for (struct psub **sp = &conn->subs; *sp != NULL; sp = &(*sp)->next)
        if (*sp == sub) {
            *sp = sub->next;
            break;
        }
    gw_sub_del(&sub->sub);
    conn->n_subs--;
    conn->p->n_subs--;
    tr_free(sub);
}

static void sub_wake(struct gw_sub *s)
{
    struct psub *sub = s->ud;
    struct pconn *conn = sub->conn;
    if (conn->closing)
        return;
    if (s->paused) {
        if (gw_live_stalled(conn->p->g, s)) {
            tr_log(TR_LOG_INFO, "gateway: client protocol: a subscriber that does not read; dropped");
            conn_close(conn);
        }
        return;
    }
    if (!sub_pump(conn, sub))
        return;
    uint64_t id = sub->id;
    sub_remove(conn, sub);
    send_sub_end(conn, id, "run finished");
}

static size_t sub_queued(struct gw_sub *s)
{
    struct psub *sub = s->ud;
    return sub->conn->queued;
}

/* The run of c was found visible: answer Subscribed, then the history
 * and live entries go out from the tick. */
static void subscribe(struct pconn *conn, struct gw_call *c, uint64_t id, uint64_t after)
{
    struct gw_proto *p = conn->p;
    uint64_t key;
    if (tr_run_id_from_text(c->m.param, c->m.param_len, &key) != TR_OK) {
        send_error(conn, id, troupe_proto_ErrorCode_NotFound, "not_found: no run %.64s", c->m.param);
        return;
    }
    if (conn->n_subs >= SUBS_MAX) {
        send_error(conn, id, troupe_proto_ErrorCode_RateLimited, "rate_limited: %u subscriptions on this connection",
                   conn->n_subs);
        return;
    }
    struct psub *sub = tr_calloc(1, sizeof *sub);
    sub->id = ++conn->last_sub_id;
    sub->conn = conn;
    sub->sub.seq = after;
    sub->next = conn->subs;
    conn->subs = sub;
    conn->n_subs++;
    p->n_subs++;
    struct tr_fb_builder *b = &p->b;
    tr_fb_builder_reset(b);
    troupe_proto_Subscribed_start(b);
    troupe_proto_Subscribed_add_subscription_id(b, sub->id);
    send_response(conn, b, id, troupe_proto_Result_Subscribed, troupe_proto_Subscribed_end(b), 0);
    gw_sub_add(p->g, &sub->sub, GW_SUB_PROTO, key, sub_wake, sub);
    sub->sub.queued = sub_queued;
    gw_sub_kick(&sub->sub); /* the history goes out in the next round */
}

static void unsubscribe(struct pconn *conn, uint64_t id, uint64_t sub_id)
{
    for (struct psub **sp = &conn->subs; *sp != NULL; sp = &(*sp)->next) {
        if ((*sp)->id != sub_id)
            continue;
        sub_remove(conn, *sp);
        tr_fb_builder_reset(&conn->p->b);
        send_response(conn, &conn->p->b, id, troupe_proto_Result_NONE, 0, 0);
        return;
    }
    send_error(conn, id, troupe_proto_ErrorCode_NotFound, "not_found: no subscription %llu",
               (unsigned long long)sub_id);
}

/* Take pc off its connection's list. */
static void pcall_unlink(struct pcall *pc)
{
    struct pconn *conn = pc->conn;
    if (conn != NULL) {
        if (pc->prev != NULL)
            pc->prev->next = pc->next;
        else
            conn->calls = pc->next;
        if (pc->next != NULL)
            pc->next->prev = pc->prev;
        conn->n_calls--;
    }
    pc->conn = NULL;
}

static void pcall_free(struct pcall *pc)
{
    pcall_unlink(pc);
    tr_free(pc->path);
    tr_free(pc->query);
    tr_free(pc->body);
    tr_free(pc->auth);
    tr_free(pc->idem);
    tr_free(pc);
}

/* The gw_call of pc was answered (status, JSON body): one Response. */
static void call_sink(struct gw_call *c, int status, const char *body, size_t len)
{
    struct pcall *pc = c->sink_arg;
    struct pconn *conn = pc->conn;
    /* Off the list first: a send that drops the connection must not
     * abandon the call being answered. */
    pcall_unlink(pc);
    uint64_t id = pc->id;
    uint8_t op = pc->op;
    json_t *j = json_loadb(body, len, 0, NULL);
    if (status >= 300) {
        json_t *e = json_object_get(j, "error");
        const char *code = json_string_value(json_object_get(e, "code"));
        const char *msg = json_string_value(json_object_get(e, "message"));
        send_error(conn, id, error_code(status, code), "%s: %s", code ? code : "error", msg ? msg : "");
        goto done;
    }
    if (op == troupe_proto_Op_Subscribe) {
        subscribe(conn, c, id, pc->after);
        goto done;
    }
    struct tr_fb_builder *b = &conn->p->b;
    tr_fb_builder_reset(b);
    uint8_t rtype;
    if (op == troupe_proto_Op_ClusterAddNode || op == troupe_proto_Op_ClusterRemoveNode ||
        op == troupe_proto_Op_ClusterDrain || op == troupe_proto_Op_ClusterTransfer) {
        send_response(conn, b, id, troupe_proto_Result_NONE, 0, 0); /* done: nothing to return */
        goto done;
    }
    tr_fb_ref res = gw_proto_result(b, c, op, j, pc->after, pc->skip_disabled, &rtype);
    if (res == 0)
        send_error(conn, id, troupe_proto_ErrorCode_Internal, "internal: the answer could not be read back");
    else
        send_response(conn, b, id, rtype, res, 0);
done:
    json_decref(j);
    pcall_free(pc);
}

/* ---- requests ------------------------------------------------------------------------------ */

/* s percent-encoded for a path segment or a query value (caller frees). */
static char *enc(const char *s, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    char *out = tr_malloc(len * 3 + 1), *o = out;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' ||
            ch == '_' || ch == '.' || ch == '~') {
            *o++ = (char)ch;
        } else {
            *o++ = '%';
            *o++ = hex[ch >> 4];
            *o++ = hex[ch & 15];
        }
    }
    *o = '\0';
    return out;
}

__attribute__((format(printf, 1, 2))) static char *fmt(const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    int n = vsnprintf(NULL, 0, f, ap);
    va_end(ap);
    char *s = tr_malloc((size_t)n + 1);
    va_start(ap, f);
    vsnprintf(s, (size_t)n + 1, f, ap);
    va_end(ap);
    return s;
}

/* "/v1/<a><enc(p)><b>" */
static char *path_with(const char *a, struct tr_fb_str p, const char *b)
{
    char *e = enc(p.ptr != NULL ? p.ptr : "", p.len);
    char *s = fmt("/v1/%s%s%s", a, e, b);
    tr_free(e);
    return s;
}

/* Set o[k] to the string s when present; -1 when s is not UTF-8. */
static int put_str(json_t *o, const char *k, struct tr_fb_str s)
{
    if (s.ptr == NULL)
        return 0;
    json_t *v = json_stringn(s.ptr, s.len);
    if (v == NULL)
        return -1;
    json_object_set_new(o, k, v);
    return 0;
}

/* Set o[k] to the JSON text s when present; -1 when it is not JSON. */
static int put_json(json_t *o, const char *k, struct tr_fb_str s)
{
    if (s.ptr == NULL)
        return 0;
    json_t *v = json_loadb(s.ptr, s.len, JSON_DECODE_ANY, NULL);
    if (v == NULL)
        return -1;
    json_object_set_new(o, k, v);
    return 0;
}

static const char *bad_field;

static json_t *agent_json(const struct troupe_journal_AgentConfig *a)
{
    json_t *o = json_object();
    if (put_str(o, "model", troupe_journal_AgentConfig_model(a)) != 0 ||
        put_str(o, "system", troupe_journal_AgentConfig_system(a)) != 0 ||
        put_str(o, "provider", troupe_journal_AgentConfig_provider(a)) != 0) {
        bad_field = "agent: a string is not UTF-8";
        json_decref(o);
        return NULL;
    }
    if (troupe_journal_AgentConfig_has_tools(a)) {
        json_t *tools = json_array();
        uint32_t n = troupe_journal_AgentConfig_tools_len(a);
        for (uint32_t i = 0; i < n; i++) {
            struct tr_fb_str t = troupe_journal_AgentConfig_tools_at(a, i);
            json_t *v = json_stringn(t.ptr != NULL ? t.ptr : "", t.len);
            if (v == NULL) {
                bad_field = "agent.tools: a name is not UTF-8";
                json_decref(tools);
                json_decref(o);
                return NULL;
            }
            json_array_append_new(tools, v);
        }
        json_object_set_new(o, "tools", tools);
    }
    if (troupe_journal_AgentConfig_has_max_steps(a))
        json_object_set_new(o, "max_steps", json_integer(troupe_journal_AgentConfig_max_steps(a)));
    if (troupe_journal_AgentConfig_has_max_tokens(a))
        json_object_set_new(o, "max_tokens", json_integer((json_int_t)troupe_journal_AgentConfig_max_tokens(a)));
    if (troupe_journal_AgentConfig_has_max_cost_usd(a))
        json_object_set_new(o, "max_cost_usd", json_real(troupe_journal_AgentConfig_max_cost_usd(a)));
    if (troupe_journal_AgentConfig_has_timeout_s(a))
        json_object_set_new(o, "timeout_s", json_integer(troupe_journal_AgentConfig_timeout_s(a)));
    if (troupe_journal_AgentConfig_has_temperature(a))
        json_object_set_new(o, "temperature", json_real(troupe_journal_AgentConfig_temperature(a)));
    return o;
}

static json_t *tool_json(const struct troupe_cmd_Tool *t)
{
    json_t *o = json_object();
    if (put_str(o, "name", troupe_cmd_Tool_name(t)) != 0 ||
        put_str(o, "description", troupe_cmd_Tool_description(t)) != 0) {
        bad_field = "tool: a string is not UTF-8";
        goto err;
    }
    if (put_json(o, "input_schema", troupe_cmd_Tool_input_schema(t)) != 0) {
        bad_field = "tool.input_schema: not JSON";
        goto err;
    }
    if (put_json(o, "config", troupe_cmd_Tool_config(t)) != 0) {
        bad_field = "tool.config: not JSON";
        goto err;
    }
    if (troupe_cmd_Tool_has_risk(t))
        json_object_set_new(o, "risk", json_string(gw_risk_name(troupe_cmd_Tool_risk(t))));
    if (troupe_cmd_Tool_has_kind(t))
        json_object_set_new(o, "kind", json_string(gw_kind_name(troupe_cmd_Tool_kind(t))));
    if (troupe_cmd_Tool_has_timeout_ms(t))
        json_object_set_new(o, "timeout_ms", json_integer(troupe_cmd_Tool_timeout_ms(t)));
    if (troupe_cmd_Tool_has_enabled(t))
        json_object_set_new(o, "enabled", json_boolean(troupe_cmd_Tool_enabled(t)));
    return o;
err:
    json_decref(o);
    return NULL;
}

static char *dump(json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(17));
    json_decref(j);
    char *out = tr_strdup(s != NULL ? s : "");
    free(s);
    return out;
}

/* Fill pc's HTTP-shaped request from the verified request rq. 0, or -1 with
 * *why set (a BadRequest / Unsupported answer). */
static int translate(struct pcall *pc, const struct troupe_proto_Request *rq, const char **method, uint16_t *code,
                     const char **why)
{
    *method = "GET";
    *code = troupe_proto_ErrorCode_BadRequest;
    bad_field = NULL;
    switch (pc->op) {
    case troupe_proto_Op_CreateRun: {
        const struct troupe_proto_CreateRun *o = troupe_proto_Request_op_as_CreateRun(rq);
        json_t *j = json_object();
        if (put_str(j, "goal", troupe_proto_CreateRun_goal(o)) != 0)
            bad_field = "goal: not UTF-8";
        const struct troupe_journal_AgentConfig *a = troupe_proto_CreateRun_agent(o);
        if (bad_field == NULL && a != NULL) {
            json_t *aj = agent_json(a);
            if (aj != NULL)
                json_object_set_new(j, "agent", aj);
        }
        if (bad_field == NULL && put_json(j, "metadata", troupe_proto_CreateRun_metadata(o)) != 0)
            bad_field = "metadata: not JSON";
        if (bad_field != NULL) {
            json_decref(j);
            *why = bad_field;
            return -1;
        }
        struct tr_fb_str k = troupe_proto_CreateRun_idempotency_key(o);
        if (k.ptr != NULL) {
            pc->idem = tr_strdup(k.ptr);
            pc->hdr[pc->req.n_headers].name = "Idempotency-Key";
            pc->hdr[pc->req.n_headers++].value = pc->idem;
        }
        *method = "POST";
        pc->path = tr_strdup("/v1/runs");
        pc->body = dump(j);
        return 0;
    }
    case troupe_proto_Op_GetRun: {
        const struct troupe_proto_GetRun *o = troupe_proto_Request_op_as_GetRun(rq);
        pc->path = path_with("runs/", troupe_proto_GetRun_run_id(o), "");
        if (troupe_proto_GetRun_wait_s(o) > 0)
            pc->query = fmt("wait=%u", troupe_proto_GetRun_wait_s(o));
        return 0;
    }
    case troupe_proto_Op_ListRuns: {
        const struct troupe_proto_ListRuns *o = troupe_proto_Request_op_as_ListRuns(rq);
        if (troupe_proto_ListRuns_statuses_len(o) > 1) {
            *why = "statuses: at most one status in this version";
            return -1;
        }
        struct tr_fb_str cur = troupe_proto_ListRuns_cursor(o);
        char *c = cur.ptr != NULL ? enc(cur.ptr, cur.len) : NULL;
        char st[48] = "";
        if (troupe_proto_ListRuns_statuses_len(o) == 1)
            snprintf(st, sizeof st, "&status=%s", gw_run_status_name(troupe_proto_ListRuns_statuses_at(o, 0)));
        pc->path = tr_strdup("/v1/runs");
        pc->query = fmt("limit=%u%s%s%s", troupe_proto_ListRuns_limit(o), st, c ? "&cursor=" : "", c ? c : "");
        tr_free(c);
        return 0;
    }
    case troupe_proto_Op_GetEvents: {
        const struct troupe_proto_GetEvents *o = troupe_proto_Request_op_as_GetEvents(rq);
        pc->after = troupe_proto_GetEvents_after_seq(o);
        if (pc->after == UINT64_MAX) {
            *why = "after_seq: out of range";
            return -1;
        }
        pc->path = path_with("runs/", troupe_proto_GetEvents_run_id(o), "/events");
        pc->query = fmt("after=%llu&limit=%u", (unsigned long long)pc->after, troupe_proto_GetEvents_limit(o));
        return 0;
    }
    case troupe_proto_Op_CancelRun: {
        const struct troupe_proto_CancelRun *o = troupe_proto_Request_op_as_CancelRun(rq);
        json_t *j = json_object();
        if (put_str(j, "reason", troupe_proto_CancelRun_reason(o)) != 0) {
            json_decref(j);
            *why = "reason: not UTF-8";
            return -1;
        }
        *method = "POST";
        pc->path = path_with("runs/", troupe_proto_CancelRun_run_id(o), "/cancel");
        pc->body = dump(j);
        return 0;
    }
    case troupe_proto_Op_ListApprovals: {
        const struct troupe_proto_ListApprovals *o = troupe_proto_Request_op_as_ListApprovals(rq);
        struct tr_fb_str cur = troupe_proto_ListApprovals_cursor(o);
        char *c = cur.ptr != NULL ? enc(cur.ptr, cur.len) : NULL;
        pc->path = tr_strdup("/v1/approvals");
        pc->query = fmt("status=%s&limit=%u%s%s", gw_approval_status_name(troupe_proto_ListApprovals_status(o)),
                        troupe_proto_ListApprovals_limit(o), c ? "&cursor=" : "", c ? c : "");
        tr_free(c);
        return 0;
    }
    case troupe_proto_Op_DecideApproval: {
        const struct troupe_proto_DecideApproval *o = troupe_proto_Request_op_as_DecideApproval(rq);
        int d = troupe_proto_DecideApproval_decision(o);
        json_t *j = json_object();
        json_object_set_new(j, "decision", json_string(d == troupe_journal_Decision_Approve ? "approve"
                                                       : d == troupe_journal_Decision_Deny  ? "deny"
                                                                                            : "expired"));
        if (put_str(j, "reason", troupe_proto_DecideApproval_reason(o)) != 0) {
            json_decref(j);
            *why = "reason: not UTF-8";
            return -1;
        }
        *method = "POST";
        pc->path = path_with("approvals/", troupe_proto_DecideApproval_approval_id(o), "");
        pc->body = dump(j);
        return 0;
    }
    case troupe_proto_Op_RegisterTool: {
        const struct troupe_proto_RegisterTool *o = troupe_proto_Request_op_as_RegisterTool(rq);
        json_t *j = tool_json(troupe_proto_RegisterTool_tool(o));
        if (j == NULL) {
            *why = bad_field;
            return -1;
        }
        *method = "POST";
        pc->path = tr_strdup("/v1/tools");
        pc->body = dump(j);
        return 0;
    }
    case troupe_proto_Op_ListTools:
        pc->skip_disabled = !troupe_proto_ListTools_include_disabled(troupe_proto_Request_op_as_ListTools(rq));
        pc->path = tr_strdup("/v1/tools");
        return 0;
    case troupe_proto_Op_GetTool: {
        const struct troupe_proto_GetTool *o = troupe_proto_Request_op_as_GetTool(rq);
        pc->path = path_with("tools/", troupe_proto_GetTool_name(o), "");
        if (troupe_proto_GetTool_version(o) > 0)
            pc->query = fmt("version=%u", troupe_proto_GetTool_version(o));
        return 0;
    }
    case troupe_proto_Op_SetToolEnabled: {
        const struct troupe_proto_SetToolEnabled *o = troupe_proto_Request_op_as_SetToolEnabled(rq);
        *method = "POST";
        pc->path = path_with("tools/", troupe_proto_SetToolEnabled_name(o),
                             troupe_proto_SetToolEnabled_enabled(o) ? "/enable" : "/disable");
        return 0;
    }
    case troupe_proto_Op_ClusterStatus:
        pc->path = tr_strdup("/v1/cluster");
        return 0;
    case troupe_proto_Op_ClusterAddNode: {
        const struct troupe_proto_ClusterAddNode *o = troupe_proto_Request_op_as_ClusterAddNode(rq);
        json_t *j = json_pack("{s:I, s:s%}", "node_id", (json_int_t)troupe_proto_ClusterAddNode_node_id(o),
                              "raft_address", troupe_proto_ClusterAddNode_raft_address(o).ptr,
                              (size_t)troupe_proto_ClusterAddNode_raft_address(o).len);
        struct tr_fb_str peer = troupe_proto_ClusterAddNode_peer_address(o);
        if (j != NULL && peer.ptr != NULL)
            json_object_set_new(j, "peer_address", json_stringn(peer.ptr, peer.len));
        if (j == NULL) {
            *why = "raft_address: not UTF-8";
            return -1;
        }
        *method = "POST";
        pc->path = tr_strdup("/v1/cluster/nodes");
        pc->body = dump(j);
        return 0;
    }
    case troupe_proto_Op_ClusterRemoveNode:
        *method = "POST";
        pc->path = fmt("/v1/cluster/nodes/%llu/remove",
                       (unsigned long long)troupe_proto_ClusterRemoveNode_node_id(troupe_proto_Request_op_as_ClusterRemoveNode(rq)));
        return 0;
    case troupe_proto_Op_ClusterDrain:
        *method = "POST";
        pc->path = fmt("/v1/cluster/nodes/%llu/drain",
                       (unsigned long long)troupe_proto_ClusterDrain_node_id(troupe_proto_Request_op_as_ClusterDrain(rq)));
        return 0;
    case troupe_proto_Op_ClusterTransfer:
        *method = "POST";
        pc->path = tr_strdup("/v1/cluster/transfer");
        pc->body = fmt("{\"node_id\": %llu}",
                       (unsigned long long)troupe_proto_ClusterTransfer_node_id(troupe_proto_Request_op_as_ClusterTransfer(rq)));
        return 0;
    case troupe_proto_Op_ClusterVerify: {
        uint64_t index = troupe_proto_ClusterVerify_index(troupe_proto_Request_op_as_ClusterVerify(rq));
        if (index == 0) {
            *method = "POST";
            pc->path = tr_strdup("/v1/cluster/checkpoint");
        } else {
            pc->path = tr_strdup("/v1/cluster/digest");
            pc->query = fmt("index=%llu", (unsigned long long)index);
        }
        return 0;
    }
    case troupe_proto_Op_Subscribe: {
        /* GET the run: authentication and visibility as for HTTP. */
        const struct troupe_proto_Subscribe *o = troupe_proto_Request_op_as_Subscribe(rq);
        pc->after = troupe_proto_Subscribe_after_seq(o);
        if (pc->after == UINT64_MAX) {
            *why = "after_seq: out of range";
            return -1;
        }
        pc->path = path_with("runs/", troupe_proto_Subscribe_run_id(o), "");
        return 0;
    }
    case troupe_proto_Op_NONE:
        *why = "a Request needs an op";
        return -1;
    default: {
        int rv = gw_proto_tenant_request(pc->op, rq, method, &pc->path, &pc->query, &pc->body, why);
        if (rv <= 0)
            return rv; /* proto_tenants.c */
        *code = troupe_proto_ErrorCode_Unsupported;
        *why = "this operation is not served by this node yet";
        return -1;
    }
    }
}

static void on_request(struct pconn *conn, const struct troupe_proto_Request *rq)
{
    uint64_t id = troupe_proto_Request_id(rq);
    uint8_t op = troupe_proto_Request_op_type(rq);
    if (op == troupe_proto_Op_Auth) {
        struct tr_fb_str k = troupe_proto_Auth_api_key(troupe_proto_Request_op_as_Auth(rq));
        if (k.len > API_KEY_MAX) {
            send_error(conn, id, troupe_proto_ErrorCode_BadRequest, "bad_request: api_key: too long");
            return;
        }
        tr_free(conn->api_key);
        conn->api_key = tr_strdup(k.ptr);
        tr_fb_builder_reset(&conn->p->b);
        send_response(conn, &conn->p->b, id, troupe_proto_Result_NONE, 0, 0);
        return;
    }
    if (op == troupe_proto_Op_Unsubscribe) {
        unsubscribe(conn, id, troupe_proto_Unsubscribe_subscription_id(troupe_proto_Request_op_as_Unsubscribe(rq)));
        return;
    }
    if (conn->n_calls >= CALLS_MAX) {
        send_error(conn, id, troupe_proto_ErrorCode_RateLimited, "rate_limited: %u requests in flight on this connection",
                   conn->n_calls);
        return;
    }
    struct pcall *pc = tr_calloc(1, sizeof *pc);
    pc->id = id;
    pc->op = op;
    pc->req.headers = pc->hdr;
    const char *method, *why = NULL;
    uint16_t code;
    if (translate(pc, rq, &method, &code, &why) != 0) {
        send_error(conn, id, code, "%s: %s", code == troupe_proto_ErrorCode_Unsupported ? "unsupported" : "bad_request",
                   why != NULL ? why : "malformed request");
        pcall_free(pc);
        return;
    }
    struct tr_fb_str key = troupe_proto_Request_api_key(rq);
    const char *api_key = key.ptr != NULL ? key.ptr : conn->api_key;
    if (api_key != NULL) {
        pc->auth = fmt("Bearer %s", api_key);
        pc->hdr[pc->req.n_headers].name = "Authorization";
        pc->hdr[pc->req.n_headers++].value = pc->auth;
    }
    if (pc->query == NULL)
        pc->query = tr_strdup("");
    if (pc->body == NULL)
        pc->body = tr_strdup("");
    pc->req.method = method;
    pc->req.target = pc->path;
    pc->req.path = pc->path;
    pc->req.query = pc->query;
    pc->req.body = pc->body;
    pc->req.body_len = strlen(pc->body);
    pc->req.http_minor = 1;

    pc->conn = conn;
    pc->next = conn->calls;
    if (conn->calls != NULL)
        conn->calls->prev = pc;
    conn->calls = pc;
    conn->n_calls++;
    pc->c = gw_call_new(conn->p->g, &pc->req);
    pc->c->sink = call_sink;
    pc->c->sink_arg = pc;
    gw_call_dispatch(pc->c); /* may answer (and free pc) at once */
}

/* One whole frame, prefix included. */
static void on_frame(struct pconn *conn, const uint8_t *frame, size_t len)
{
    struct tr_fb_error fe;
    const struct troupe_proto_Frame *f = troupe_proto_Frame_verify_as_root_sized(frame, len, &fe);
    if (f == NULL) {
        char m[256];
        send_error(conn, 0, troupe_proto_ErrorCode_BadRequest, "bad_frame: %s",
                   tr_fb_error_format(&fe, m, sizeof m));
        return;
    }
    const struct troupe_proto_Request *rq = troupe_proto_Frame_body_as_Request(f);
    if (rq == NULL) {
        send_error(conn, 0, troupe_proto_ErrorCode_BadRequest, "bad_frame: a client sends Request frames, not %s",
                   troupe_proto_Body_name(troupe_proto_Frame_body_type(f)));
        return;
    }
    on_request(conn, rq);
}

/* ---- connections ------------------------------------------------------------------------- */

static void maybe_closed(struct gw_proto *p)
{
    if (--p->open_handles > 0)
        return;
    struct tr_gateway *g = p->g;
    void (*cb)(void *) = p->close_cb;
    void *arg = p->close_arg;
    tr_fb_builder_free(&p->b);
    tr_free(p);
    if (g != NULL)
        g->proto = NULL;
    if (cb != NULL)
        cb(arg);
}

static void conn_closed_cb(uv_handle_t *h)
{
    struct pconn *conn = h->data;
    struct gw_proto *p = conn->p;
    while (conn->subs != NULL) {
        struct psub *sub = conn->subs;
        conn->subs = sub->next;
        p->n_subs--;
        tr_free(sub);
    }
    tr_free(conn->rbuf);
    tr_free(conn->api_key);
    tr_free(conn);
    maybe_closed(p);
}

static void conn_close(struct pconn *conn)
{
    if (conn->closing)
        return;
    conn->closing = 1;
    struct gw_proto *p = conn->p;
    struct pcall *next;
    for (struct pcall *pc = conn->calls; pc != NULL; pc = next) {
        next = pc->next;
        pc->conn = NULL;
        gw_call_abandon(pc->c); /* c no longer reads pc->req */
        pcall_free(pc);
    }
    conn->calls = NULL;
    conn->n_calls = 0;
    for (struct psub *sub = conn->subs; sub != NULL; sub = sub->next)
        gw_sub_del(&sub->sub); /* freed when the socket has closed */
    if (conn->prev != NULL)
        conn->prev->next = conn->next;
    else
        p->conns = conn->next;
    if (conn->next != NULL)
        conn->next->prev = conn->prev;
    p->n_conns--;
    uv_close((uv_handle_t *)&conn->tcp, conn_closed_cb);
}

static void alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct pconn *conn = h->data;
    (void)hint;
    if (conn->rcap - conn->rlen < READ_CHUNK) {
        conn->rcap = conn->rlen + READ_CHUNK;
        conn->rbuf = tr_realloc(conn->rbuf, conn->rcap);
    }
    *buf = uv_buf_init((char *)conn->rbuf + conn->rlen, (unsigned)(conn->rcap - conn->rlen));
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct pconn *conn = s->data;
    (void)buf;
    if (nread < 0) {
        conn_close(conn);
        return;
    }
    if (conn->closing || conn->close_after_write)
        return;
    conn->rlen += (size_t)nread;
    size_t off = 0;
    while (!conn->closing && conn->rlen - off >= 4) {
        uint32_t n;
        memcpy(&n, conn->rbuf + off, 4);
        if (n > GW_PROTO_FRAME_MAX) {
            send_error(conn, 0, troupe_proto_ErrorCode_TooLarge, "too_large: a frame of %u bytes is over the %u limit",
                       n, GW_PROTO_FRAME_MAX);
            uv_read_stop(s);
            conn->close_after_write = 1;
            if (conn->queued == 0)
                conn_close(conn);
            return;
        }
        if (conn->rlen - off - 4 < n) {
            /* Make room for the rest of this frame at once. */
            if (conn->rcap < off + 4 + n) {
                memmove(conn->rbuf, conn->rbuf + off, conn->rlen - off);
                conn->rlen -= off;
                off = 0;
                conn->rcap = 4 + (size_t)n + READ_CHUNK;
                conn->rbuf = tr_realloc(conn->rbuf, conn->rcap);
            }
            break;
        }
        on_frame(conn, conn->rbuf + off, 4 + (size_t)n);
        off += 4 + (size_t)n;
    }
    if (conn->closing)
        return;
    memmove(conn->rbuf, conn->rbuf + off, conn->rlen - off);
    conn->rlen -= off;
    if (conn->rlen == 0 && conn->rcap > 4 * READ_CHUNK) {
        tr_free(conn->rbuf); /* a big frame passed: give its memory back */
        conn->rbuf = NULL;
        conn->rcap = 0;
    }
}

static void on_connection(uv_stream_t *server, int status)
{
    struct gw_proto *p = server->data;
    if (status != 0 || p->closing)
        return;
    struct pconn *conn = tr_calloc(1, sizeof *conn);
    conn->p = p;
    uv_tcp_init(server->loop, &conn->tcp);
    conn->tcp.data = conn;
    p->open_handles++;
    p->n_conns++;
    conn->next = p->conns;
    if (p->conns != NULL)
        p->conns->prev = conn;
    p->conns = conn;
    if (uv_accept(server, (uv_stream_t *)&conn->tcp) != 0 || p->n_conns > GW_PROTO_CONN_MAX) {
        conn_close(conn);
        return;
    }
    uv_tcp_nodelay(&conn->tcp, 1);
    if (uv_read_start((uv_stream_t *)&conn->tcp, alloc_cb, read_cb) != 0)
        conn_close(conn);
}

/* ---- lifecycle ----------------------------------------------------------------------------- */

static void listener_closed_cb(uv_handle_t *h)
{
    maybe_closed(h->data);
}

int gw_proto_start(struct tr_gateway *g, const char *host, int port, struct tr_err *err)
{
    struct sockaddr_storage ss;
    if (host == NULL)
        host = "127.0.0.1";
    if (port < 0 || port > 65535 ||
        (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) != 0 &&
         uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) != 0))
        return tr_err_set(err, TR_EINVAL, "client protocol: bad address %s:%d", host, port);
    struct gw_proto *p = tr_calloc(1, sizeof *p);
    p->g = g;
    tr_fb_builder_init(&p->b);
    uv_tcp_init(g->loop, &p->listener);
    p->listener.data = p;
    p->open_handles = 1;
    int rv = uv_tcp_bind(&p->listener, (const struct sockaddr *)&ss, 0);
    if (rv == 0)
        rv = uv_listen((uv_stream_t *)&p->listener, 511, on_connection);
    if (rv != 0) {
        tr_err_set(err, TR_ESYS, "client protocol: listen %s:%d: %s", host, port, uv_strerror(rv));
        p->closing = 1;
        uv_close((uv_handle_t *)&p->listener, listener_closed_cb); /* frees p; g->proto stays NULL */
        p->g = NULL;
        return TR_ESYS;
    }
    g->proto = p;
    tr_log(TR_LOG_INFO, "gateway: client protocol on %s:%d", host, gw_proto_port(g));
    return TR_OK;
}

void gw_proto_close(struct tr_gateway *g, void (*cb)(void *), void *arg)
{
    struct gw_proto *p = g->proto;
    if (p == NULL || p->closing)
        return;
    p->closing = 1;
    p->close_cb = cb;
    p->close_arg = arg;
    while (p->conns != NULL)
        conn_close(p->conns);
    uv_close((uv_handle_t *)&p->listener, listener_closed_cb);
}

int gw_proto_port(struct tr_gateway *g)
{
    struct sockaddr_storage ss;
    int len = sizeof ss;
    if (g->proto == NULL || uv_tcp_getsockname(&g->proto->listener, (struct sockaddr *)&ss, &len) != 0)
        return -1;
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}
