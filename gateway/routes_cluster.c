/* Cluster management routes (cluster admin only; docs/HTTP.md "Cluster"):
 *
 *   POST /v1/cluster/nodes              {"node_id", "raft_address", "peer_address"?}  add a voter
 *   POST /v1/cluster/nodes/{id}/remove  its runs move to live nodes, then it leaves
 *   POST /v1/cluster/nodes/{id}/drain   no new runs, its runs move, then it leaves
 *   POST /v1/cluster/transfer           {"node_id"} (0: raft picks) leadership
 *   POST /v1/cluster/checkpoint         mark the log; answers this node's digest at the mark
 *   GET  /v1/cluster/digest?index=N     this node's digest at mark N (without index:
 *                                       of its current state, gw_h_digest)
 *
 * Membership changes run on the leader: any other node answers 503
 * not_leader naming the leader's client and HTTP addresses (troupectl
 * follows it once). Each handler holds its call (c->pending) until the
 * cluster or the state service calls back; a client that left meanwhile
 * only gets its call released.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/cluster.h"
#include "gateway/gw_int.h"
#include "storage/storage.h"

#define DIGEST_WAIT_MS 10000

static bool admin_only(struct gw_call *c)
{
    if (c->who.role == GW_ROLE_ADMIN && c->who.cluster_admin)
        return true;
    gw_respond_error(c, 403, "forbidden", "cluster management needs the cluster admin key");
    return false;
}

/* 409 not_leader with the leader's addresses, or 503 when there is none. */
static void not_leader(struct gw_call *c)
{
    struct tr_raft_info info;
    struct tr_node_rec n;
    tr_raft_info(tr_state_raft(c->g->state), &info);
    if (info.leader_id == 0 || tr_node_get(c->g->store, info.leader_id, &n) != TR_OK) {
        gw_respond_error(c, 503, "unavailable", "no leader known: try again shortly");
        return;
    }
    gw_respond_error(c, 503, "not_leader", "not the leader: node %" PRIu64 " leads (client %s, http %s)",
                     info.leader_id, n.client_address[0] ? n.client_address : "-",
                     n.http_address[0] ? n.http_address : "-");
}

/* A held call is back: 1 if it can still be answered. */
static bool call_back(struct gw_call *c)
{
    c->pending = 0;
    if (c->req == NULL || c->g == NULL) {
        gw_call_release(c);
        return false;
    }
    return true;
}

static void op_done(void *ud, int status, const char *msg)
{
    struct gw_call *c = ud;
    if (!call_back(c))
        return;
    switch (status) {
    case TR_OK:
        gw_respond_json(c, 200, json_pack("{s:b, s:s}", "ok", 1, "message", msg != NULL ? msg : "done"));
        return;
    case TR_ENOTLEADER:
        not_leader(c);
        return;
    case TR_ENOTFOUND:
        gw_respond_error(c, 404, "not_found", "%s", msg != NULL ? msg : "no such node");
        return;
    case TR_EINVAL:
    case TR_EEXIST:
        gw_respond_error(c, 409, "conflict", "%s", msg != NULL ? msg : tr_strerror(status));
        return;
    default:
        gw_respond_error(c, 503, "unavailable", "%s", msg != NULL ? msg : tr_strerror(status));
        return;
    }
}

/* Start op (a tr_cluster_* call); answer at once when it does not start. */
static void held(struct gw_call *c, int rv)
{
    if (rv == TR_OK) {
        c->pending = 1;
        return;
    }
    if (rv == TR_ENOTLEADER)
        not_leader(c);
    else if (rv == TR_EBUSY)
        gw_respond_error(c, 409, "conflict", "the leader cannot remove itself: transfer leadership first");
    else
        gw_respond_error(c, rv == TR_EINVAL ? 400 : 503, rv == TR_EINVAL ? "bad_request" : "unavailable", "%s",
                         tr_strerror(rv));
}

static json_t *body_object(struct gw_call *c)
{
    json_error_t jerr;
    json_t *j = json_loadb(c->req->body, c->req->body_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(j)) {
        json_decref(j);
        gw_respond_error(c, 400, "bad_request", "the body must be a JSON object");
        return NULL;
    }
    return j;
}

static bool json_u64(json_t *j, const char *key, bool required, uint64_t *out)
{
    json_t *v = json_object_get(j, key);
    if (v == NULL)
        return !required;
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return false;
    *out = (uint64_t)json_integer_value(v);
    return true;
}

static bool json_addr(json_t *j, const char *key, bool required, const char **out)
{
    json_t *v = json_object_get(j, key);
    if (v == NULL)
        return !required;
    if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > 63 ||
        strchr(json_string_value(v), ':') == NULL)
        return false;
    *out = json_string_value(v);
    return true;
}

static bool have_cluster(struct gw_call *c)
{
    if (c->g->cluster != NULL)
        return true;
    gw_respond_error(c, 409, "conflict", "this node runs without a peer channel (start it with --peer)");
    return false;
}

void gw_h_cluster_nodes(struct gw_call *c)
{
    if (!admin_only(c) || !have_cluster(c))
        return;
    json_t *j = body_object(c);
    if (j == NULL)
        return;
    uint64_t id = 0;
    const char *raft = NULL, *peer = NULL;
    if (!json_u64(j, "node_id", true, &id) || id == 0 || !json_addr(j, "raft_address", true, &raft) ||
        !json_addr(j, "peer_address", false, &peer)) {
        json_decref(j);
        gw_respond_error(c, 400, "bad_request",
                         "expected {\"node_id\": N > 0, \"raft_address\": \"host:port\", \"peer_address\"?: \"host:port\"}");
        return;
    }
    held(c, tr_cluster_add(c->g->cluster, id, raft, peer, op_done, c));
    json_decref(j);
}

static bool param_node(struct gw_call *c, uint64_t *id)
{
    char *end;
    unsigned long long v = strtoull(c->m.param, &end, 10);
    if (c->m.param[0] == '\0' || *end != '\0' || v == 0) {
        gw_respond_error(c, 400, "bad_request", "node id: expected a positive integer");
        return false;
    }
    *id = v;
    return true;
}

static void node_action(struct gw_call *c, int (*action)(struct tr_cluster *, uint64_t, tr_cluster_cb, void *))
{
    uint64_t id;
    if (!admin_only(c) || !have_cluster(c) || !param_node(c, &id))
        return;
    held(c, action(c->g->cluster, id, op_done, c));
}

void gw_h_cluster_node_remove(struct gw_call *c)
{
    node_action(c, tr_cluster_remove);
}

void gw_h_cluster_node_drain(struct gw_call *c)
{
    node_action(c, tr_cluster_drain);
}

void gw_h_cluster_transfer(struct gw_call *c)
{
    if (!admin_only(c) || !have_cluster(c))
        return;
    json_t *j = body_object(c);
    if (j == NULL)
        return;
    uint64_t id = 0;
    if (!json_u64(j, "node_id", false, &id)) {
        json_decref(j);
        gw_respond_error(c, 400, "bad_request", "expected {\"node_id\": N} (0 or absent: raft picks)");
        return;
    }
    json_decref(j);
    held(c, tr_cluster_transfer(c->g->cluster, id, op_done, c));
}

/* ---- digests at checkpoints ------------------------------------------------------- */

static void digest_ready(void *ud, int status, uint64_t index, const unsigned char *digest, uint64_t last_applied,
                         const char *msg)
{
    struct gw_call *c = ud;
    if (!call_back(c))
        return;
    if (status != TR_OK) {
        gw_respond_error(c, status == TR_ENOTFOUND ? 404 : 503, status == TR_ENOTFOUND ? "not_found" : "unavailable",
                         "digest at %" PRIu64 ": %s", index, msg != NULL ? msg : tr_strerror(status));
        return;
    }
    char hex[2 * TR_STATE_DIGEST_LEN + 1];
    for (size_t i = 0; i < TR_STATE_DIGEST_LEN; i++)
        snprintf(hex + 2 * i, 3, "%02x", digest[i]);
    gw_respond_json(c, 200, json_pack("{s:s, s:I, s:I, s:I}", "digest", hex, "index", (json_int_t)index,
                                      "last_applied", (json_int_t)last_applied, "node", (json_int_t)c->g->node_id));
}

static void wait_digest(struct gw_call *c, uint64_t index)
{
    int rv = tr_state_digest_at(c->g->state, index, DIGEST_WAIT_MS, digest_ready, c);
    if (rv != TR_OK) {
        gw_respond_error(c, 503, "unavailable", "%s", tr_strerror(rv));
        return;
    }
    c->pending = 1;
}

static void checkpoint_done(struct gw_call *c, const struct tr_state_reply *r)
{
    wait_digest(c, r->raft_index);
}

void gw_h_cluster_checkpoint(struct gw_call *c)
{
    if (!admin_only(c))
        return;
    c->on_reply = checkpoint_done;
    gw_propose_checkpoint(c);
}

/* GET /v1/cluster/digest?index=N; without index: gw_h_digest. */
void gw_h_digest_at(struct gw_call *c)
{
    char v[32];
    if (gw_query_get(c->req->query, "index", v, sizeof v) <= 0) {
        gw_h_digest(c);
        return;
    }
    if (!admin_only(c))
        return;
    char *end;
    unsigned long long index = strtoull(v, &end, 10);
    if (*end != '\0' || index == 0) {
        gw_respond_error(c, 400, "bad_request", "index: expected a positive integer");
        return;
    }
    wait_digest(c, index);
}

void tr_gateway_set_cluster(struct tr_gateway *g, struct tr_cluster *c)
{
    g->cluster = c;
}
