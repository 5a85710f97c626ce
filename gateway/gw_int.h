/* Private to gateway/: the pieces of the HTTP API. The pure parts (routing,
 * queries, cursors, JSON rendering, request validation, command building)
 * have no I/O and are unit-tested on their own; http_api.c and routes_*.c
 * bind them to the HTTP server and the state service. */
#ifndef TR_GATEWAY_INT_H
#define TR_GATEWAY_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "gateway/gateway.h"
#include "gateway/live.h"
#include "raft/raft.h"
#include "schemas/command_generated.h"
#include "schemas/journal_generated.h"
#include "schemas/schemas.h"
#include "schemas/state_generated.h"
#include "storage/storage.h"

/* ---- input limits ------------------------------------------------------------ */

#define GW_MAX_BODY_DEFAULT (1u << 20)
#define GW_GOAL_MAX (64u << 10)          /* bytes of a run's goal */
#define GW_SYSTEM_MAX (64u << 10)        /* bytes of agent.system */
#define GW_MODEL_MAX 256
#define GW_AGENT_TOOLS_MAX 128
#define GW_METADATA_MAX (16u << 10)      /* bytes of metadata as compact JSON */
#define GW_TOOL_NAME_MAX 64              /* [A-Za-z0-9_-]{1,64}, as OpenAI function names */
#define GW_TOOL_DESC_MAX (8u << 10)
#define GW_TOOL_SCHEMA_MAX (256u << 10)  /* input_schema as compact JSON */
#define GW_TOOL_CONFIG_MAX (64u << 10)
#define GW_TOOL_TIMEOUT_MAX 3600000u     /* ms */
#define GW_REASON_MAX 4096
#define GW_IDEM_KEY_MAX TR_IDEM_KEY_MAX
#define GW_PARAM_MAX 256                 /* a decoded path parameter */
#define GW_LIST_DEFAULT 50
#define GW_LIST_MAX 500
#define GW_SCAN_MAX 10000                /* records examined by one list request */
#define GW_EVENTS_DEFAULT 1000
#define GW_EVENTS_MAX 10000
#define GW_EVENTS_BYTES (8u << 20)       /* event JSON in one response, roughly */
#define GW_WAIT_MAX_S 60
#define GW_CURSOR_MAX 600

/* ---- errors to the client --------------------------------------------------- */

/* An HTTP error: status, a stable snake_case code and a message for people. */
struct gw_error {
    int status;
    char code[40];
    char msg[480];
};
/* Fill e; returns -1 so that validators can `return gw_fail(...)`. */
int gw_fail(struct gw_error *e, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* {"error": {"code", "message"}} */
json_t *gw_error_json(const char *code, const char *msg);

/* ---- routing (route.c) ------------------------------------------------------ */

enum gw_route_id {
    GW_R_NONE = 0,       /* no such route */
    GW_R_HEALTHZ,
    GW_R_METRICS,
    GW_R_CLUSTER,
    GW_R_DIGEST,         /* /v1/cluster/digest */
    GW_R_RUNS,           /* /v1/runs */
    GW_R_RUN,            /* /v1/runs/{id} */
    GW_R_RUN_EVENTS,     /* /v1/runs/{id}/events */
    GW_R_RUN_CANCEL,     /* /v1/runs/{id}/cancel */
    GW_R_RUN_WS,         /* /v1/runs/{id}/ws (issue 6) */
    GW_R_APPROVALS,      /* /v1/approvals */
    GW_R_APPROVAL,       /* /v1/approvals/{id} */
    GW_R_TOOLS,          /* /v1/tools */
    GW_R_TOOL,           /* /v1/tools/{name} */
    GW_R_TOOL_DISABLE,
    GW_R_TOOL_ENABLE,
    GW_R_TENANTS,        /* issue 6 */
    GW_R_KEYS,           /* issue 6 */
    GW_R_WEB_INDEX,      /* / : the dashboard (routes_web.c) */
    GW_R_WEB,            /* /ui/{file} */
    GW_R_TENANT,         /* /v1/tenants/{id} */
    GW_R_KEY_REVOKE,     /* /v1/keys/{id}/revoke */
    GW_R_CLUSTER_NODES,  /* /v1/cluster/nodes (routes_cluster.c) */
    GW_R_CLUSTER_NODE_REMOVE, /* /v1/cluster/nodes/{id}/remove */
    GW_R_CLUSTER_NODE_DRAIN,  /* /v1/cluster/nodes/{id}/drain */
    GW_R_CLUSTER_TRANSFER,    /* /v1/cluster/transfer */
    GW_R_CLUSTER_CHECKPOINT,  /* /v1/cluster/checkpoint */
    GW_R_COUNT
};

struct gw_match {
    enum gw_route_id route;
    const char *allow;          /* methods the route takes ("GET, POST") */
    char param[GW_PARAM_MAX + 1]; /* the {id} or {name}, percent-decoded */
    size_t param_len;
};

/* Match method and path. Returns 200 when both match, 404 (no route; also a
 * malformed path parameter), or 405 (the path matches, m->allow says which
 * methods do). */
int gw_route(const char *method, const char *path, struct gw_match *m);
const char *gw_route_name(enum gw_route_id r); /* for metrics: "runs", "run", ... */

/* The value of query parameter `name`, percent-decoded ('+' is a space).
 * 1: found (out NUL-terminated), 0: absent, -1: malformed, too long for cap,
 * or holding a NUL. */
int gw_query_get(const char *query, const char *name, char *out, size_t cap);
/* A decimal unsigned integer without sign, blanks or leading '+'. */
int gw_parse_u64(const char *s, uint64_t *out);

/* Opaque list cursors: a version tag and the last key seen, in hex. */
int gw_cursor_encode(const void *key, size_t len, char *out, size_t cap);
/* TR_EINVAL when s is not a cursor of ours (or longer than cap bytes). */
int gw_cursor_decode(const char *s, void *key, size_t cap, size_t *len);

/* RFC 3339 UTC with microseconds: "2024-05-01T12:00:00.000123Z". */
#define GW_TIME_TEXT 80
void gw_time_text(int64_t us, char out[GW_TIME_TEXT]);

/* ---- rendering (render.c) --------------------------------------------------- */

/* API.md names. */
const char *gw_run_status_name(int status);          /* "queued" ...; "unknown" */
int gw_run_status_parse(const char *s, int8_t *out); /* TR_EINVAL when unknown */
const char *gw_event_type_name(int tag);             /* "run.created" ...; "unknown" */
const char *gw_risk_name(int risk);                  /* "read", "write", "irreversible" */
int gw_risk_parse(const char *s, int8_t *out);
const char *gw_kind_name(int kind);                  /* "http", "sandbox", "mcp", "builtin" */
int gw_kind_parse(const char *s, int8_t *out);
const char *gw_approval_status_name(int status);     /* "pending", "approved", "denied", "expired" */
int gw_approval_status_parse(const char *s, int8_t *out);

/* The value of a JSON text field: parsed when it is JSON, else the string
 * itself; null when absent. */
json_t *gw_json_text_value(struct tr_fb_str s);
/* A JSON string of s[0..n), each byte that is not part of valid UTF-8 replaced
 * by U+FFFD (jansson refuses invalid UTF-8 outright). */
json_t *gw_json_stringn(const char *s, size_t n);

/* New references; never NULL for a verified record. */
json_t *gw_render_run(const struct troupe_state_Run *r);
json_t *gw_render_event(const struct troupe_journal_Event *ev);
json_t *gw_render_approval(const struct troupe_state_Approval *a);
/* One version of a tool; n_versions: how many the registry holds (0: omit). */
json_t *gw_render_tool(const struct troupe_cmd_Tool *t, uint32_t n_versions);
json_t *gw_render_agent(const struct troupe_journal_AgentConfig *a);

/* ---- request bodies and commands (validate.c) --------------------------------- */

/* POST /v1/runs. Strings point into root. */
struct gw_run_req {
    json_t *root;
    const char *goal;
    size_t goal_len;
    bool has_agent;
    const char *model, *system, *provider;
    const char *tools[GW_AGENT_TOOLS_MAX];
    size_t n_tools;
    bool has_max_steps;
    uint32_t max_steps;
    uint64_t max_tokens;
    double max_cost_usd;
    uint32_t timeout_s;
    bool has_temperature;
    float temperature;
    char *metadata;              /* compact JSON object text or NULL (owned) */
    unsigned char digest[32];    /* BLAKE2b-256 of the canonical body */
};
int gw_run_req_parse(const char *body, size_t len, struct gw_run_req *out, struct gw_error *e);
void gw_run_req_free(struct gw_run_req *r);

/* Header Idempotency-Key: printable ASCII, 1..255 bytes. */
int gw_idem_key_check(const char *key, struct gw_error *e);

/* POST /v1/tools. */
struct gw_tool_req {
    char *name;
    char *description;
    char *input_schema;          /* canonical compact JSON (sorted keys) */
    char *config;                /* canonical compact JSON object */
    int8_t risk, kind;
    uint32_t timeout_ms;
    bool enabled;
};
/* Parses and checks the body, compiling input_schema with tr_schema_compile
 * (unsupported keywords: 400 "unsupported_schema" naming them). */
int gw_tool_req_parse(const char *body, size_t len, struct gw_tool_req *out, struct gw_error *e);
void gw_tool_req_free(struct gw_tool_req *t);
bool gw_tool_name_ok(const char *s, size_t len);

/* POST /v1/approvals/{id}: {"decision": "approve"|"deny", "reason": str}. */
struct gw_decide_req {
    int8_t decision;             /* troupe_journal_Decision */
    char *reason;                /* NULL when absent */
};
int gw_decide_req_parse(const char *body, size_t len, struct gw_decide_req *out, struct gw_error *e);
void gw_decide_req_free(struct gw_decide_req *d);

/* POST /v1/runs/{id}/cancel: an empty body or {"reason": str}; *reason NULL
 * when absent (caller frees). */
int gw_cancel_req_parse(const char *body, size_t len, char **reason, struct gw_error *e);

/* What the leader stamps into every command. */
struct gw_cmd_head {
    int64_t time_us;
    uint64_t origin_node;
};

struct gw_run_create_args {
    uint64_t run_id;
    const char *tenant;
    const char *idempotency_key; /* NULL: none */
    uint64_t owner_node;
    const char *created_by;
};
/* Each builder resets b and finishes a troupe.cmd.Command (TRC1). */
void gw_build_run_create(struct tr_fb_builder *b, const struct gw_cmd_head *h, const struct gw_run_req *r,
                         const struct gw_run_create_args *a);
void gw_build_run_cancel(struct tr_fb_builder *b, const struct gw_cmd_head *h, uint64_t run_id,
                         const char *reason, const char *requested_by);
void gw_build_approval_decide(struct tr_fb_builder *b, const struct gw_cmd_head *h, const char *approval_id,
                              const char *run_id, int8_t decision, const char *reason, const char *decided_by);
void gw_build_tool_register(struct tr_fb_builder *b, const struct gw_cmd_head *h, const struct gw_tool_req *t);
void gw_build_tool_set_enabled(struct tr_fb_builder *b, const struct gw_cmd_head *h, const char *name,
                               bool enabled);

/* ---- the server (http_api.c) ---------------------------------------------------- */

/* Who is asking (auth.c): the tenant and role of the API key, or the
 * cluster admin (TROUPE_ADMIN_TOKEN: tenant "default", role admin, sees and
 * acts on every tenant). Every handler scopes what it reads and writes by
 * tenant (gw_tenant_visible). Roles are troupe_cmd_KeyRole values. */
enum gw_role { GW_ROLE_VIEWER = 0, GW_ROLE_APPROVER, GW_ROLE_OPERATOR, GW_ROLE_ADMIN };
struct gw_principal {
    char tenant[TR_IDEM_TENANT_MAX + 1];
    char name[64];               /* recorded as created_by / decided_by: "admin" or the key id */
    enum gw_role role;
    bool cluster_admin;
};

struct gw_call;
/* Continues a handler once its proposal is committed and applied (status
 * TR_OK; other statuses are answered for the handler). */
typedef void (*gw_reply_fn)(struct gw_call *c, const struct tr_state_reply *r);

/* One request being handled. Lives until it is answered (or the client
 * left) and no proposal of it is in flight. */
struct gw_call {
    struct tr_gateway *g;        /* NULL once the gateway closed */
    struct tr_httpd_req *req;    /* NULL once answered or the client left */
    struct gw_call *prev, *next; /* g->calls */
    struct gw_call *wprev, *wnext; /* g->waiters (long poll) */
    struct gw_principal who;
    struct gw_match m;
    int pending;                 /* a proposal is in flight */
    int waiting;                 /* on g->waiters */
    gw_reply_fn on_reply;
    uint64_t raft_index;         /* of the write answered: Troupe-Raft-Index */
    /* handler state */
    uint64_t run_id;
    uint64_t deadline_ms;
    uint32_t version;
    int attempts;
    int sse;                     /* a Server-Sent Events stream */
    struct gw_sub sub;           /* long polls and SSE: live updates (live.h); sub.seq: last seq sent */
    struct gw_run_req run;
    char *text;
    /* Set by a non-HTTP front end (proto_server.c): the answer goes to
     * sink instead of the HTTP server; req is then that front end's. */
    void (*sink)(struct gw_call *c, int status, const char *body, size_t len);
    void *sink_arg;
    uint32_t retry_after_s;      /* a 429's Retry-After (auth.c) */
};

/* The gateway. Lives on one loop; see gateway.h. */
struct tr_gateway {
    struct tr_rt *rt;
    struct tr_state *state;
    struct tr_store *store;
    const struct tr_node_env *env;
    uv_loop_t *loop;
    struct tr_httpd *httpd;
    struct gw_proto *proto;        /* the FlatBuffers TCP server, or NULL */
    uv_timer_t tick;               /* long polls: the earliest deadline */
    struct gw_live *live;          /* live updates (live.c) */
    struct gw_ws *ws;              /* WebSocket connections (ws.c) */
    unsigned n_ws;
    uint32_t max_conns;            /* HTTP connections, and WebSockets apart */
    uint32_t stall_ms;             /* a paused stream with new events this long is dropped */
    uint32_t keepalive_ms;         /* SSE keep-alive comments */
    uint64_t slow_disconnects;
    void (*ws_closed_cb)(void *);  /* gw_ws_close_all */
    void *ws_closed_arg;
    bool auth;                     /* an admin token is configured */
    struct tr_cluster *cluster;    /* the peer channel's module, or NULL (tr_gateway_set_cluster) */
    unsigned char token_hash[32];  /* BLAKE2b of "Bearer <token>" */
    uint64_t node_id;
    struct gw_call *calls;         /* every live call */
    struct gw_call *waiters;       /* long polls */
    struct tr_fb_builder b;        /* commands (tr_state_propose copies them) */
    int closing;
    void (*close_cb)(void *);
    void *close_arg;
    uint64_t http_count[GW_R_COUNT][6]; /* by route and status class (1xx..5xx) */
    uint64_t created, conflicts, not_leader;
    struct gw_limits *limits;      /* per-tenant request rate (auth.c) */
};

/* A call for req (owned by the caller until answered or abandoned), on
 * g->calls. gw_call_dispatch routes, authenticates and runs its handler,
 * exactly as for an HTTP request. gw_call_abandon: the client left; the
 * call is freed once no proposal of it is in flight, and never answered. */
struct gw_call *gw_call_new(struct tr_gateway *g, struct tr_httpd_req *req);
void gw_call_dispatch(struct gw_call *c);
void gw_call_abandon(struct gw_call *c);

/* Answers: each finishes the request and may free c: return right after. */
void gw_respond_json(struct gw_call *c, int status, json_t *body /* stolen */);
void gw_respond_error(struct gw_call *c, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void gw_respond_gw_error(struct gw_call *c, const struct gw_error *e);
void gw_respond_text(struct gw_call *c, int status, const char *ctype, const char *body, size_t len);

/* Propose the command in b; on_reply runs when it is applied. On any other
 * outcome the call is answered here (503 not_leader ...). */
void gw_propose(struct gw_call *c, struct tr_fb_builder *b, gw_reply_fn on_reply);
/* Propose a Checkpoint (tr_state_checkpoint); c->on_reply runs when it is applied. */
void gw_propose_checkpoint(struct gw_call *c);
/* A handler that held c (c->pending) and finds it abandoned frees it here. */
void gw_call_release(struct gw_call *c);
/* routes_cluster.c */
void gw_h_cluster_nodes(struct gw_call *c);
void gw_h_cluster_node_remove(struct gw_call *c);
void gw_h_cluster_node_drain(struct gw_call *c);
void gw_h_cluster_transfer(struct gw_call *c);
void gw_h_cluster_checkpoint(struct gw_call *c);
void gw_h_digest_at(struct gw_call *c);
/* Stamp of a new command: wall clock and this node. */
struct gw_cmd_head gw_cmd_head(struct gw_call *c);
/* Hold c until the run is terminal or deadline_ms (loop time) passes. */
void gw_wait_run(struct gw_call *c, uint64_t run_id, uint64_t deadline_ms);
uint64_t gw_loop_now_ms(struct gw_call *c);
/* Server-Sent Events of a run's journal: history from after + 1, then live
 * events (live.h) until the run is terminal. */
void gw_sse_start(struct gw_call *c, uint64_t run_id, uint64_t after);
/* Answer with the run object of `key` (404 when absent or not visible). */
void gw_answer_run(struct gw_call *c, int status, uint64_t key);
bool gw_run_terminal(int status);

/* ---- the FlatBuffers TCP server (proto_server.c) ----------------------------------- */

#define GW_PROTO_FRAME_MAX (16u << 20)   /* inbound and outbound frame cap */
#define GW_PROTO_SENDQ_MAX (8u << 20)    /* unsent bytes per connection before it is dropped */
#define GW_PROTO_CONN_MAX 1024

struct gw_proto;
/* Listen on host:port on g->loop; requests become gw_calls of g. */
int gw_proto_start(struct tr_gateway *g, const char *host, int port, struct tr_err *err);
/* Stop listening, drop every connection (abandoning their calls), then
 * free the server, set g->proto = NULL and call cb(arg) (never from
 * inside this call). */
void gw_proto_close(struct tr_gateway *g, void (*cb)(void *), void *arg);
int gw_proto_port(struct tr_gateway *g);
/* The Result of operation op (troupe_proto_Op) answered 2xx with JSON j by
 * c's handler, built in b from the store: *rtype its union tag. after: the
 * GetEvents after_seq; skip_disabled: ListTools without disabled tools.
 * 0 when the records cannot be read back (proto_result.c). */
tr_fb_ref gw_proto_result(struct tr_fb_builder *b, const struct gw_call *c, uint8_t op, json_t *j, uint64_t after,
                          bool skip_disabled, uint8_t *rtype);

/* ---- reads (store.c) --------------------------------------------------------------- */

/* Load the run record of `key`: *buf (caller frees) and the verified root.
 * TR_ENOTFOUND when absent, TR_ECORRUPT when it does not verify. */
int gw_load_run(struct tr_store *s, uint64_t key, void **buf, const struct troupe_state_Run **out);
int gw_load_approval(struct tr_store *s, const char *id, void **buf, const struct troupe_state_Approval **out);
int gw_load_tools(struct tr_store *s, const char *name, void **buf, const struct troupe_state_ToolVersions **out);
/* A run as the principal may see it: 404 otherwise (other tenant, absent). */
bool gw_run_visible(const struct gw_principal *p, const struct troupe_state_Run *r);
void gw_run_key(uint64_t id, unsigned char out[8]);

/* ---- handlers (routes_*.c) --------------------------------------------------------- */

void gw_h_runs_create(struct gw_call *c);
void gw_h_runs_list(struct gw_call *c);
void gw_h_run_get(struct gw_call *c);
void gw_h_run_events(struct gw_call *c);
void gw_h_run_cancel(struct gw_call *c);
void gw_h_approvals_list(struct gw_call *c);
void gw_h_approval_decide(struct gw_call *c);
void gw_h_tools_register(struct gw_call *c);
void gw_h_tools_list(struct gw_call *c);
void gw_h_tool_get(struct gw_call *c);
void gw_h_tool_set_enabled(struct gw_call *c, bool enabled);
void gw_h_healthz(struct gw_call *c);
void gw_h_cluster(struct gw_call *c);
void gw_h_digest(struct gw_call *c);
void gw_h_metrics(struct gw_call *c);
void gw_h_web(struct gw_call *c); /* GW_R_WEB_INDEX, GW_R_WEB */

/* ---- tenants, API keys, roles and limits (auth.c, routes_tenants.c, proto_tenants.c) ---- */

#define GW_DEFAULT_TENANT "default"      /* the tenant of the cluster admin's runs */
#define GW_TENANT_NAME_MAX 64            /* [A-Za-z0-9][A-Za-z0-9_.-]*, not "default", not "ten_..." */
#define GW_KEY_ID_LEN 16                 /* hex digits */
#define GW_KEY_SECRET_LEN 32             /* random bytes, 64 hex digits in the key */
#define GW_KEY_TEXT (4 + GW_KEY_ID_LEN + 1 + 2 * GW_KEY_SECRET_LEN + 1) /* "trk_<id>_<secret>" + NUL */
#define GW_TENANT_ID_LEN 20              /* "ten_" + 16 hex digits */
#define GW_RPS_MAX 1000000u
#define GW_ACTIVE_RUNS_MAX 1000000u
#define GW_BUDGET_MAX 1e9

/* A new API key: *key_id (hex, NUL-terminated), the text shown once
 * ("trk_" + key_id + "_" + 64 hex digits of random secret) and the hash the
 * FSM keeps (BLAKE2b-256 of the text). */
void gw_key_new(char key_id[GW_KEY_ID_LEN + 1], char text[GW_KEY_TEXT], unsigned char hash[32]);
/* Split an API key into its id and the hash to compare; TR_EINVAL when it
 * is not of our form. */
int gw_key_parse(const char *text, size_t len, char key_id[GW_KEY_ID_LEN + 1], unsigned char hash[32]);
/* A fresh tenant id "ten_<16 hex>". */
void gw_tenant_id_new(char out[GW_TENANT_ID_LEN + 1]);
bool gw_tenant_name_ok(const char *s, size_t len);
const char *gw_role_name(int role);            /* "viewer" ... "admin" */
int gw_role_parse(const char *s, int8_t *out); /* TR_EINVAL when unknown */

/* Authenticate the Authorization value h ("Bearer <key>"; NULL: none) into
 * p: 0, or -1 with e set (401). A configured admin token makes its bearer
 * the cluster admin; "trk_" keys are looked up in the credentials family and
 * compared in constant time. Without an admin token, no Authorization is
 * the cluster admin. */
int gw_authenticate(struct tr_gateway *g, const char *h, struct gw_principal *p, struct gw_error *e);
/* May c's principal use c's route and method? Also the tenant's request
 * rate (429 with c->retry_after_s). 0, or -1 with e set (403, 429). */
int gw_authorize(struct gw_call *c, struct gw_error *e);
/* The least role a route and method needs; GW_ROLE_ADMIN + 1: the cluster
 * admin only; -1: no authentication at all. */
int gw_route_role(enum gw_route_id r, bool post);
/* May p see a record of `tenant`? */
bool gw_tenant_visible(const struct gw_principal *p, struct tr_fb_str tenant);
/* The tenant record of id (buf: caller frees). TR_ENOTFOUND, TR_ECORRUPT. */
int gw_load_tenant(struct tr_store *s, const char *id, void **buf, const struct troupe_state_Tenant **out);
/* Resolve `ref` (a tenant id or name) to its record; as gw_load_tenant. */
int gw_find_tenant(struct tr_store *s, const char *ref, void **buf, const struct troupe_state_Tenant **out);
/* Active (not terminal) runs of tenant, counting up to `stop` at most. */
uint64_t gw_count_active_runs(struct tr_store *s, const char *tenant, uint64_t stop);
/* Free the rate limiter's state (at gateway close). */
void gw_limits_free(struct tr_gateway *g);

/* Tenant and key bodies (validate.c). */
struct gw_tenant_req {
    char *name;                  /* create only */
    bool has_max_active_runs, has_rps, has_budget, has_policy;
    uint32_t max_active_runs, requests_per_s;
    double budget_usd_per_day;
    int8_t budget_policy;        /* troupe_cmd_BudgetPolicy */
};
/* POST /v1/tenants (create: name required) or POST /v1/tenants/{id}
 * ({"limits": {...}} only). */
int gw_tenant_req_parse(const char *body, size_t len, bool create, struct gw_tenant_req *out, struct gw_error *e);
void gw_tenant_req_free(struct gw_tenant_req *t);
/* POST /v1/keys: {"tenant", "role"}. tenant points into a copy (caller frees). */
int gw_key_req_parse(const char *body, size_t len, char **tenant, int8_t *role, struct gw_error *e);
void gw_build_tenant_create(struct tr_fb_builder *b, const struct gw_cmd_head *h, const char *tenant_id,
                            const struct gw_tenant_req *t, const char *key_id, const unsigned char key_hash[32]);
/* Limits: those of t, the others from cur (NULL: the schema's defaults). */
void gw_build_tenant_update(struct tr_fb_builder *b, const struct gw_cmd_head *h, const char *tenant_id,
                            const struct gw_tenant_req *t, const struct troupe_cmd_TenantLimits *cur);
void gw_build_key_create(struct tr_fb_builder *b, const struct gw_cmd_head *h, const char *tenant_id,
                         const char *key_id, const unsigned char key_hash[32], int8_t role);
void gw_build_key_revoke(struct tr_fb_builder *b, const struct gw_cmd_head *h, const char *key_id);
/* Tools of a tenant's own registry (tenant NULL: global). */
void gw_build_tool_register_for(struct tr_fb_builder *b, const struct gw_cmd_head *h, const struct gw_tool_req *t,
                                const char *tenant);
void gw_build_tool_set_enabled_for(struct tr_fb_builder *b, const struct gw_cmd_head *h, const char *name,
                                   bool enabled, const char *tenant);

/* {"id", "name", "limits": {...}, "created_at", "spend": {...}} (render.c);
 * now_us: the clock that says which day "today" is. */
json_t *gw_render_tenant(const struct troupe_state_Tenant *t, int64_t now_us);
/* Today's spend of t in micro-USD (0 when its spend is of another day). */
uint64_t gw_tenant_spend_today(const struct troupe_state_Tenant *t, int64_t now_us);

/* Handlers (routes_tenants.c). */
void gw_h_tenants_create(struct gw_call *c);
void gw_h_tenants_list(struct gw_call *c);
void gw_h_tenant_get(struct gw_call *c);
void gw_h_tenant_update(struct gw_call *c);
void gw_h_keys_create(struct gw_call *c);
void gw_h_key_revoke(struct gw_call *c);

/* The client protocol's tenant operations (proto_tenants.c): the HTTP
 * request of op in request (a verified troupe_proto_Request): method, and
 * path, query, body set when needed (caller frees); 1 when op is not one of
 * them, -1 with *why set when malformed. */
int gw_proto_tenant_request(uint8_t op, const void *request, const char **method, char **path, char **query,
                            char **body, const char **why);
/* The Result of a tenant operation answered with JSON j; 0 when op is not
 * one of them (or j does not fit). */
tr_fb_ref gw_proto_tenant_result(struct tr_fb_builder *b, uint8_t op, json_t *j, uint8_t *rtype);

#endif /* TR_GATEWAY_INT_H */
