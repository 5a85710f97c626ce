/* /healthz, /v1/cluster and /metrics. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "gateway/gw_int.h"

#define MAX_NODES 64

static const char *role_name(int role)
{
    switch (role) {
    case RAFT_LEADER: return "leader";
    case RAFT_FOLLOWER: return "follower";
    case RAFT_CANDIDATE: return "candidate";
    default: return "unavailable";
    }
}

struct run_counts {
    uint64_t by_status[6];
    uint64_t other;
    uint64_t owners[MAX_NODES]; /* active runs per node of `ids` */
    const uint64_t *ids;
    unsigned n_ids;
};

/* Count the runs this node's replica holds (every tenant: operators' view). */
static void count_runs(struct tr_gateway *g, struct run_counts *rc)
{
    struct tr_store_iter *it;
    if (tr_store_iter_open(g->store, NULL, TR_CF_RUNS, NULL, 0, NULL, 0, &it, NULL) != TR_OK)
        return;
    const void *v;
    size_t vlen;
    while (tr_store_iter_next(it, NULL, NULL, &v, &vlen, NULL) > 0) {
        const struct troupe_state_Run *r = troupe_state_Run_verify_as_root(v, vlen, NULL);
        if (r == NULL)
            continue;
        int st = troupe_state_Run_status(r);
        if (st >= 0 && st < 6)
            rc->by_status[st]++;
        else
            rc->other++;
        if (gw_run_terminal(st))
            continue;
        uint64_t owner = troupe_state_Run_owner_node(r);
        for (unsigned i = 0; i < rc->n_ids; i++)
            if (rc->ids[i] == owner)
                rc->owners[i]++;
    }
    tr_store_iter_close(it);
}

void gw_h_healthz(struct gw_call *c)
{
    struct tr_raft_info info;
    tr_raft_info(tr_state_raft(c->g->state), &info);
    json_t *j = json_object();
    json_object_set_new(j, "status", json_string("ok"));
    json_object_set_new(j, "node", json_integer((json_int_t)c->g->node_id));
    json_object_set_new(j, "ready", json_boolean(tr_state_ready(c->g->state)));
    json_object_set_new(j, "role", json_string(role_name(info.role)));
    gw_respond_json(c, 200, j);
}

/* The node table entry of `id` (written by NodeAdd), if any. */
static const struct troupe_state_Node *node_record(struct tr_gateway *g, uint64_t id, void **buf)
{
    unsigned char k[16];
    memcpy(k, "node/", 5);
    gw_run_key(id, k + 5);
    size_t len;
    *buf = NULL;
    if (tr_store_get(g->store, NULL, TR_CF_META, k, 13, buf, &len, NULL) != TR_OK)
        return NULL;
    const struct troupe_state_Node *n =
        troupe_state_Node_verify_as_root_opts(*buf, len, "TRN2", &tr_fb_default_limits, NULL);
    if (n == NULL) {
        tr_free(*buf);
        *buf = NULL;
    }
    return n;
}

void gw_h_cluster(struct gw_call *c)
{
    struct tr_gateway *g = c->g;
    struct tr_raft_info info;
    tr_raft_info(tr_state_raft(g->state), &info);
    struct raft *raw = tr_raft_raw(tr_state_raft(g->state));

    uint64_t ids[MAX_NODES];
    const char *addrs[MAX_NODES];
    unsigned n = 0;
    for (unsigned i = 0; raw != NULL && i < raw->configuration.n && n < MAX_NODES; i++) {
        ids[n] = raw->configuration.servers[i].id;
        addrs[n++] = raw->configuration.servers[i].address;
    }
    bool self_listed = false;
    for (unsigned i = 0; i < n; i++)
        self_listed |= ids[i] == g->node_id;
    if (!self_listed && n < MAX_NODES) {
        ids[n] = g->node_id;
        addrs[n++] = NULL;
    }
    struct run_counts rc = { .ids = ids, .n_ids = n };
    count_runs(g, &rc);

    json_t *nodes = json_array();
    for (unsigned i = 0; i < n; i++) {
        void *buf;
        const struct troupe_state_Node *rec = node_record(g, ids[i], &buf);
        json_t *alive;
        const char *role;
        if (ids[i] == g->node_id) {
            alive = json_true();
            role = role_name(info.role);
        } else {
            role = ids[i] == info.leader_id ? "leader" : "follower";
            /* Failure detection comes with the cluster issue: until then,
             * the node table's state, or unknown. */
            alive = rec != NULL ? json_boolean(troupe_state_Node_state(rec) == troupe_state_NodeState_Up)
                                : json_null();
        }
        json_t *addr = addrs[i] != NULL ? json_string(addrs[i])
                       : rec != NULL && troupe_state_Node_raft_address(rec).ptr != NULL
                           ? json_string(troupe_state_Node_raft_address(rec).ptr)
                           : json_null();
        json_t *o = json_pack("{s:I, s:o, s:s, s:o, s:I}", "id", (json_int_t)ids[i], "raft_address",
                              addr ? addr : json_null(), "role", role, "alive", alive, "runs",
                              (json_int_t)rc.owners[i]);
        if (rec != NULL) {
            static const char *const states[] = { "up", "down", "draining", "removed" };
            int8_t st = troupe_state_Node_state(rec);
            json_object_set_new(o, "state", json_string(st >= 0 && st < 4 ? states[st] : "unknown"));
            struct tr_fb_str a[3] = { troupe_state_Node_peer_address(rec), troupe_state_Node_client_address(rec),
                                      troupe_state_Node_http_address(rec) };
            const char *names[3] = { "peer_address", "client_address", "http_address" };
            for (int k = 0; k < 3; k++)
                if (a[k].ptr != NULL && a[k].len > 0)
                    json_object_set_new(o, names[k], json_string(a[k].ptr));
        }
        json_array_append_new(nodes, o);
        tr_free(buf);
    }
    json_t *j = json_object();
    json_object_set_new(j, "leader", info.leader_id ? json_integer((json_int_t)info.leader_id) : json_null());
    json_object_set_new(j, "term", json_integer((json_int_t)info.term));
    json_object_set_new(j, "commit_index", json_integer((json_int_t)info.commit_index));
    json_object_set_new(j, "last_applied", json_integer((json_int_t)info.last_applied));
    json_object_set_new(j, "node", json_integer((json_int_t)g->node_id));
    json_object_set_new(j, "nodes", nodes);
    gw_respond_json(c, 200, j);
}

/* ---- /metrics ----------------------------------------------------------------------- */

struct text {
    char *p;
    size_t len, cap;
};

__attribute__((format(printf, 2, 3))) static void put(struct text *t, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(t->p + t->len, t->cap - t->len, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < t->cap - t->len) {
            t->len += (size_t)n;
            return;
        }
        t->cap = t->cap * 2 + (n > 0 ? (size_t)n : 0);
        t->p = tr_realloc(t->p, t->cap);
    }
}

static void metric(struct text *t, const char *name, const char *type, const char *help)
{
    put(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void gw_h_metrics(struct gw_call *c)
{
    struct tr_gateway *g = c->g;
    struct text t = { .p = tr_malloc(4096), .cap = 4096 };
    struct run_counts rc = { 0 };
    count_runs(g, &rc);
    metric(&t, "troupe_runs", "gauge", "Runs in this node's replica of the state, by status.");
    for (int s = 0; s < 6; s++)
        put(&t, "troupe_runs{status=\"%s\"} %llu\n", gw_run_status_name(s), (unsigned long long)rc.by_status[s]);

    struct tr_raft_info info;
    tr_raft_info(tr_state_raft(g->state), &info);
    metric(&t, "troupe_raft_term", "gauge", "Current raft term.");
    put(&t, "troupe_raft_term %llu\n", (unsigned long long)info.term);
    metric(&t, "troupe_raft_commit_index", "gauge", "Highest raft index known committed.");
    put(&t, "troupe_raft_commit_index %llu\n", (unsigned long long)info.commit_index);
    metric(&t, "troupe_raft_last_applied", "gauge", "Highest raft index applied to the store here.");
    put(&t, "troupe_raft_last_applied %llu\n", (unsigned long long)info.last_applied);
    metric(&t, "troupe_raft_last_index", "gauge", "Last index of the raft log.");
    put(&t, "troupe_raft_last_index %llu\n", (unsigned long long)info.last_index);
    metric(&t, "troupe_raft_leader", "gauge", "1 when this node is the raft leader.");
    put(&t, "troupe_raft_leader %d\n", info.role == RAFT_LEADER);
    metric(&t, "troupe_raft_servers", "gauge", "Servers in the raft configuration.");
    put(&t, "troupe_raft_servers %u\n", info.n_servers);

    struct tr_state_stats ss;
    tr_state_stats(g->state, &ss);
    metric(&t, "troupe_state_entries_total", "counter", "Raft entries proposed by this node.");
    put(&t, "troupe_state_entries_total %llu\n", (unsigned long long)ss.entries);
    metric(&t, "troupe_state_appends_total", "counter", "Journal appends proposed (group-committed).");
    put(&t, "troupe_state_appends_total %llu\n", (unsigned long long)ss.appends);
    metric(&t, "troupe_state_commands_total", "counter", "Other commands proposed.");
    put(&t, "troupe_state_commands_total %llu\n", (unsigned long long)ss.commands);
    metric(&t, "troupe_state_max_batch", "gauge", "Most appends packed into one raft entry.");
    put(&t, "troupe_state_max_batch %llu\n", (unsigned long long)ss.max_batch);

    metric(&t, "troupe_http_requests_total", "counter", "HTTP API answers by route and status class.");
    for (int r = 0; r < GW_R_COUNT; r++)
        for (int k = 1; k < 6; k++)
            if (g->http_count[r][k] > 0)
                put(&t, "troupe_http_requests_total{route=\"%s\",code=\"%dxx\"} %llu\n", gw_route_name(r), k,
                    (unsigned long long)g->http_count[r][k]);
    struct tr_httpd_stats hs;
    tr_httpd_stats(g->httpd, &hs);
    metric(&t, "troupe_http_connections", "gauge", "Open HTTP connections.");
    put(&t, "troupe_http_connections %u\n", hs.connections);
    metric(&t, "troupe_http_connections_accepted_total", "counter", "HTTP connections accepted.");
    put(&t, "troupe_http_connections_accepted_total %llu\n", (unsigned long long)hs.accepted);
    metric(&t, "troupe_http_bad_requests_total", "counter", "Requests the HTTP server refused (400/408/413/431).");
    put(&t, "troupe_http_bad_requests_total %llu\n", (unsigned long long)hs.bad_requests);
    unsigned waiting = 0;
    for (struct gw_call *w = g->waiters; w != NULL; w = w->wnext)
        waiting++;
    metric(&t, "troupe_http_long_polls", "gauge", "GET /v1/runs/{id}?wait= requests being held.");
    put(&t, "troupe_http_long_polls %u\n", waiting);
    char *live = gw_live_metrics(g); /* live.c: streams, slow readers, WebSockets */
    put(&t, "%s", live);
    tr_free(live);
    metric(&t, "troupe_gateway_runs_created_total", "counter", "Runs created through this node's API.");
    put(&t, "troupe_gateway_runs_created_total %llu\n", (unsigned long long)g->created);
    metric(&t, "troupe_gateway_not_leader_total", "counter", "Writes refused because this node is not the leader.");
    put(&t, "troupe_gateway_not_leader_total %llu\n", (unsigned long long)g->not_leader);

    if (g->rt != NULL) {
        struct tr_rt_stats rs;
        tr_rt_stats(g->rt, &rs);
        metric(&t, "troupe_actors", "gauge", "Live actors (including passivated).");
        put(&t, "troupe_actors %llu\n", (unsigned long long)rs.actors);
        metric(&t, "troupe_actor_messages_total", "counter", "Messages delivered to actors.");
        put(&t, "troupe_actor_messages_total %llu\n", (unsigned long long)rs.delivered);
        metric(&t, "troupe_actor_dead_letters_total", "counter", "Messages for actors that were gone.");
        put(&t, "troupe_actor_dead_letters_total %llu\n", (unsigned long long)rs.dead_letters);
        metric(&t, "troupe_actor_restarts_total", "counter", "Actor restarts after failures.");
        put(&t, "troupe_actor_restarts_total %llu\n", (unsigned long long)rs.restarts);
    }
    gw_respond_text(c, 200, "text/plain; version=0.0.4", t.p, t.len);
    tr_free(t.p);
}

/* GET /v1/cluster/digest: this node's state digest (BLAKE2b over every
 * replicated column family, storage/storage.h) and the raft index it was
 * taken at. Admins only: it reads the whole store. `troupectl cluster
 * verify` compares it across nodes; the crash tests compare it across
 * restarts and rebuilds. */
void gw_h_digest(struct gw_call *c)
{
    struct tr_gateway *g = c->g;
    unsigned char d[TR_STATE_DIGEST_LEN];
    uint64_t applied = 0;
    struct tr_err err = { 0 };
    if (c->who.role != GW_ROLE_ADMIN) {
        gw_respond_error(c, 403, "forbidden", "the state digest needs an admin key");
        return;
    }
    if (tr_store_digest(g->store, NULL, d, &applied, &err) != TR_OK) {
        gw_respond_error(c, 500, "store_error", "%s", err.msg);
        return;
    }
    char hex[2 * TR_STATE_DIGEST_LEN + 1];
    for (size_t i = 0; i < sizeof d; i++)
        snprintf(hex + 2 * i, 3, "%02x", d[i]);
    gw_respond_json(c, 200, json_pack("{s:s, s:I, s:I}", "digest", hex, "last_applied", (json_int_t)applied, "node",
                                      (json_int_t)g->node_id));
}
