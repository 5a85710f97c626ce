/* gateway/: the client-facing servers of a Troupe node: the HTTP JSON API of
 * API.md ("HTTP (JSON)") with SSE and WebSocket event streams and the
 * dashboard, and the FlatBuffers TCP client protocol (runs, events,
 * approvals, tools, tenants and keys, cluster status and management).
 *
 * Threads: the gateway lives on the loop of the state service (scheduler 0
 * by convention). Every function below must be called on that loop's thread.
 * Handlers read the store directly (tr_state_store) and write by proposing
 * raft commands with tr_state_propose; they answer after the command is
 * committed and applied on this node (persist, then acknowledge).
 *
 * Behaviour decided here (see docs in gateway/http_api.c for the details):
 *   - request bodies are strict: a field of the wrong type or an unknown
 *     field is a 400 naming the field;
 *   - every write's response carries `Troupe-Raft-Index: N`, the raft index
 *     of the entry that applied it;
 *   - a node that is not the leader answers writes with 503 `not_leader`
 *     (forwarding comes with the cluster issue);
 *   - every /v1/ route needs `Authorization: Bearer <key>`: a tenant's API
 *     key (roles viewer < approver < operator < admin) or the admin token
 *     (the cluster admin); /healthz, /metrics and the dashboard's files never
 *     do. Every read and write is scoped by tenant (gateway/auth.c,
 *     docs/HTTP.md "Tenants, keys and roles").
 */
#ifndef TR_GATEWAY_H
#define TR_GATEWAY_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/runtime.h"

struct tr_state;
struct tr_node_env;
struct tr_gateway;

struct tr_gateway_opts {
    struct tr_rt *rt;
    struct tr_state *state;          /* required; outlives the gateway's handlers */
    const struct tr_node_env *env;   /* may be NULL (tests); not used yet */
    const char *host;                /* bind address; "127.0.0.1" when NULL */
    int port;                        /* 0: ephemeral (see tr_gateway_port) */
    const char *admin_token;         /* TROUPE_ADMIN_TOKEN; NULL or "": no auth (copied) */
    uint64_t node_id;                /* owner_node of the runs created here */
    size_t max_body_bytes;           /* request body cap (413 beyond); 0 = 1 MiB */
    /* The FlatBuffers TCP protocol (API.md "FlatBuffers client protocol"):
     * served on client_host:client_port when client_host is not NULL
     * (client_port 0: ephemeral, see tr_gateway_client_port). Same
     * handlers, validation and authentication as HTTP. */
    const char *client_host;
    int client_port;
    /* Live streams (SSE, WebSocket, protocol subscriptions). */
    uint32_t max_connections;        /* HTTP connections (WebSockets counted apart); 0 = 1024 */
    uint32_t stream_stall_ms;        /* a stream paused on a reader that does not read is
                                        dropped when events come this long after; 0 = 10000 */
    uint32_t request_timeout_ms;     /* first byte to complete request, else 408 (slowloris);
                                        0 = 30000 */
    uint32_t stream_keepalive_ms;    /* SSE comment lines on live streams; 0 = 15000 */
};

/* Start the HTTP server on tr_ctx_loop(ctx). Call from a callback on the
 * state service's scheduler (e.g. tr_rt_call(rt, 0, ...)). On error nothing
 * is left running and err says why (TR_ESYS: cannot bind). On success *out
 * is the gateway; close it with tr_gateway_close before closing the state
 * service (e.g. from a tr_rt_on_shutdown hook registered after the state's). */
int tr_gateway_start(struct tr_ctx *ctx, const struct tr_gateway_opts *o, struct tr_gateway **out,
                     struct tr_err *err);

/* Stop accepting, drop every connection (requests waiting on a proposal are
 * abandoned: the proposal still completes, its answer is discarded), then
 * free the gateway and call cb(arg) (never from inside this call; cb may be
 * NULL). */
void tr_gateway_close(struct tr_gateway *g, void (*cb)(void *), void *arg);

/* The bound HTTP port. */
int tr_gateway_port(struct tr_gateway *g);
/* The bound client-protocol port; 0 when it is not served. */
int tr_gateway_client_port(struct tr_gateway *g);

/* The cluster module (cluster/cluster.h) for the cluster management routes;
 * without one they answer 409. Set it once it has started; NULL before
 * closing it. */
struct tr_cluster;
void tr_gateway_set_cluster(struct tr_gateway *g, struct tr_cluster *c);

#endif /* TR_GATEWAY_H */
