/* The cluster module: membership, forwarding, liveness (see cluster.h).
 *
 * One timer (every ping interval / 2) drives everything:
 *
 *  Follower: find the leader (raft's leader id, its peer address from the
 *  node table; while joining, the join address), keep one authenticated
 *  connection to it, ping it; every pong is a sign of a live leader for the
 *  state service's fencing. Writes the state service cannot propose come
 *  through forward() and go out as Forward messages; their results come back
 *  as ForwardResult and complete them. A write without a result after
 *  FORWARD_TIMEOUT_MS fails (TR_ETIMEDOUT) and the connection is dropped: a
 *  stopped leader must not hold the state service's in-flight slots.
 *
 *  Leader: answer pings (pong, and NodeUp for a node marked Down), forwards
 *  (tr_state_propose_full, answer when applied) and joins (raft add as a
 *  voter, then NodeAdd). Keep its own node record true (NodeAdd when
 *  missing or changed, NodeUp when marked Down). Declare down (NodeDown) each
 *  Up or Draining node silent for the failure timeout, counted from the later
 *  of its last ping and the moment this node became leader. Move runs queued
 *  on a full node to a node with room (rebalance(), below: RunReassign with
 *  only_if_queued, which the FSM applies only if it still holds).
 *
 * Answers to a connection find it by its generation number: a connection
 * closed meanwhile simply does not get them.
 */
#include "cluster/cluster_int.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "raft/fsm.h"
#include "schemas/command_generated.h"
#include "schemas/peer_generated.h"
#include "schemas/state_generated.h"

#define FORWARD_TIMEOUT_MS 5000
#define JOIN_RETRY_MS 500

/* Liveness stamps: a node's monotonic clock, only ever compared with itself. */
static int64_t mono_us(void)
{
    return (int64_t)(uv_hrtime() / 1000);
}


/* ---- addresses ------------------------------------------------------------------ */

int cl_split_addr(const char *s, char *host, size_t cap, int *port)
{
    const char *colon = strrchr(s, ':');
    if (colon == NULL || colon == s || (size_t)(colon - s) >= cap)
        return -1;
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (*end != '\0' || p <= 0 || p > 65535)
        return -1;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    *port = (int)p;
    return 0;
}

int cl_resolve(const char *host, int port, struct sockaddr_storage *out)
{
    memset(out, 0, sizeof *out);
    struct sockaddr_in *in = (struct sockaddr_in *)out;
    if (uv_ip4_addr(host, port, in) == 0)
        return 0;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)out;
    if (uv_ip6_addr(host, port, in6) == 0)
        return 0;
    /* A name: resolve it synchronously, once (node addresses are configuration). */
    struct addrinfo hints = { .ai_family = AF_INET, .ai_socktype = SOCK_STREAM }, *res = NULL;
    if (getaddrinfo(host, NULL, &hints, &res) != 0 || res == NULL)
        return -1;
    memcpy(in, res->ai_addr, sizeof *in);
    in->sin_port = htons((uint16_t)port);
    freeaddrinfo(res);
    return 0;
}

/* ---- connections ------------------------------------------------------------------ */

void cl_conn_link(struct tr_cluster *c, struct pconn *pc)
{
    pc->born_us = mono_us();
    pc->next = c->conns;
    if (c->conns != NULL)
        c->conns->prev = pc;
    c->conns = pc;
}

static struct pconn *conn_by_gen(struct tr_cluster *c, uint64_t gen)
{
    for (struct pconn *pc = c->conns; pc != NULL; pc = pc->next)
        if (pc->gen == gen)
            return pc->st == PC_OPEN ? pc : NULL;
    return NULL;
}

/* The queue of writes for the leader: a doubly linked list in arrival order. */
static void pending_append(struct tr_cluster *c, struct pending *p)
{
    p->next = NULL;
    p->prev = c->pending_tail;
    if (c->pending_tail != NULL)
        c->pending_tail->next = p;
    else
        c->pending = p;
    c->pending_tail = p;
    c->n_pending++;
}

static void pending_unlink(struct tr_cluster *c, struct pending *p)
{
    if (p->prev != NULL)
        p->prev->next = p->next;
    else
        c->pending = p->next;
    if (p->next != NULL)
        p->next->prev = p->prev;
    else
        c->pending_tail = p->prev;
    c->n_pending--;
}

/* Fail the writes for the leader: every one (all), or those sent (the
 * connection they went out on is gone: outcome unknown). */
static void fail_pending(struct tr_cluster *c, int status, bool all)
{
    for (struct pending *p = c->pending, *next; p != NULL; p = next) {
        next = p->next;
        if (!all && p->request_id == 0)
            continue;
        pending_unlink(c, p);
        struct tr_state_result r = { .status = status };
        tr_state_forward_done(p->fwd, &r);
        tr_free(p);
    }
}

static void maybe_closed(struct tr_cluster *c);

static void follower_tick(struct tr_cluster *c, const struct tr_raft_info *info, uint64_t now);

/* The connection to the leader is gone. If the leader closed or reset it,
 * reconnect at once (a few times, until a connection opens again): a refusal
 * says the leader's process is gone (nothing listens on its peer port), and
 * raft's election need not wait its timeout. A dying process may still
 * accept for a moment and then reset the handshake: that is a retry too. A
 * leader whose machine died refuses nothing; raft's timeout covers that. */
#define QUICK_RETRIES 3
static void lead_lost(struct tr_cluster *c, struct pconn *pc)
{
    if (!pc->outbound || pc->expect_id == 0 || !c->joined)
        return;
    struct tr_raft_info info;
    tr_raft_info(c->raft, &info);
    if (info.role == RAFT_LEADER || info.leader_id != pc->expect_id)
        return;
    if (pc->refused) {
        if (tr_raft_hasten_election(c->raft, pc->expect_id))
            tr_log(TR_LOG_WARN, "cluster: leader %llu refuses connections (its process is gone): electing a new one",
                   (unsigned long long)pc->expect_id);
    } else if (pc->gone && c->quick_retries < QUICK_RETRIES) {
        c->quick_retries++;
        c->last_connect_ms = 0;
        follower_tick(c, &info, uv_now(c->loop));
    }
}

void cl_conn_closed(struct tr_cluster *c, struct pconn *pc)
{
    if (pc->prev != NULL)
        pc->prev->next = pc->next;
    else if (c->conns == pc)
        c->conns = pc->next;
    if (pc->next != NULL)
        pc->next->prev = pc->prev;
    pc->prev = pc->next = NULL;
    if (c->lead == pc) {
        c->lead = NULL;
        c->last_pong_sent_us = 0; /* the next connection's pongs are another clock's */
        /* The outcome of these writes is unknown: their requesters re-read
         * and retry (an applied append then gets BAD_SEQ). */
        fail_pending(c, TR_ENOTLEADER, false);
        if (!c->closing)
            lead_lost(c, pc);
    }
    if (c->closing)
        maybe_closed(c);
}

void cl_log_refused(struct tr_cluster *c, struct pconn *pc, const char *why)
{
    c->refused++;
    uint64_t now = uv_now(c->loop);
    if (now - c->last_refused_log_ms >= 1000 || c->last_refused_log_ms == 0) {
        c->last_refused_log_ms = now;
        tr_log(TR_LOG_WARN, "cluster: peer %s refused: %s (%llu refused so far)", pc->addr, why,
               (unsigned long long)c->refused);
    }
}

/* ---- messages out ------------------------------------------------------------------- */

static void send_built(struct pconn *pc, struct tr_fb_builder *b)
{
    size_t len;
    const uint8_t *data = tr_fb_builder_data(b, &len);
    (void)pc_send(pc, data, len); /* a failure closes pc: nothing more to do */
}

static void msg_begin(struct tr_cluster *c)
{
    tr_fb_builder_reset(&c->b);
}

static void msg_end(struct tr_cluster *c, struct pconn *pc, uint8_t type, tr_fb_ref body)
{
    struct tr_fb_builder *b = &c->b;
    troupe_peer_Message_start(b);
    troupe_peer_Message_add_from_node(b, c->node_id);
    troupe_peer_Message_add_to_node(b, pc->peer_id);
    troupe_peer_Message_add_body_type(b, type);
    troupe_peer_Message_add_body(b, body);
    troupe_peer_Message_finish(b, troupe_peer_Message_end(b));
    send_built(pc, b);
}

/* The leader's peer address as this node knows it ("" if unknown). */
static void leader_peer_addr(struct tr_cluster *c, char out[64])
{
    struct tr_raft_info info;
    struct tr_node_rec n;
    out[0] = '\0';
    tr_raft_info(c->raft, &info);
    if (info.leader_id != 0 && tr_node_get(c->store, info.leader_id, &n) == TR_OK)
        memcpy(out, n.peer_address, sizeof n.peer_address);
}

/* ---- commands to propose ------------------------------------------------------------ */

struct cmd_ctx {
    struct tr_cluster *c;
    uint64_t node;
    int kind;               /* what it was: for the pending flags */
    tr_cluster_cb cb;
    void *ud;
};

enum { K_SELF, K_DOWN, K_UP, K_OTHER };

static int peer_slot(struct tr_cluster *c, uint64_t id)
{
    for (unsigned i = 0; i < c->n_peers; i++)
        if (c->peers[i].id == id)
            return (int)i;
    if (c->n_peers == CL_MAX_NODES)
        return -1;
    unsigned i = c->n_peers++;
    memset(&c->peers[i], 0, sizeof c->peers[i]);
    c->peers[i].id = id;
    c->peers[i].seen_ms = uv_now(c->loop);
    return (int)i;
}

static void command_done(void *ud, const struct tr_state_reply *r)
{
    struct cmd_ctx *x = ud;
    struct tr_cluster *c = x->c;
    int i = x->kind == K_DOWN || x->kind == K_UP ? peer_slot(c, x->node) : -1;
    if (x->kind == K_SELF)
        c->self_pending = false;
    else if (x->kind == K_DOWN && i >= 0)
        c->peers[i].down_pending = false;
    else if (x->kind == K_UP && i >= 0)
        c->peers[i].up_pending = false;
    int status = r->status;
    const char *msg = status == TR_OK ? "ok" : tr_strerror(status);
    if (status == TR_OK && r->verdict != TR_FSM_OK) {
        status = r->verdict == TR_FSM_NOT_FOUND ? TR_ENOTFOUND : TR_EINVAL;
        msg = tr_fsm_verdict_name(r->verdict);
    }
    if (status != TR_OK && x->cb == NULL)
        tr_log(TR_LOG_WARN, "cluster: command about node %llu: %s", (unsigned long long)x->node, msg);
    if (x->cb != NULL)
        x->cb(x->ud, status, msg);
    tr_free(x);
}

/* Propose the Command being built in c->b whose op was added by add_op. */
static int propose_built(struct tr_cluster *c, uint64_t node, int kind, tr_cluster_cb cb, void *ud)
{
    size_t len;
    const uint8_t *data = tr_fb_builder_data(&c->b, &len);
    struct cmd_ctx *x = tr_malloc(sizeof *x);
    *x = (struct cmd_ctx){ c, node, kind, cb, ud };
    int rv = tr_state_propose(c->state, data, len, command_done, x);
    if (rv != TR_OK)
        tr_free(x);
    return rv;
}

static void command_begin(struct tr_cluster *c)
{
    tr_fb_builder_reset(&c->b);
}

static void command_end(struct tr_cluster *c, uint8_t op_type, tr_fb_ref op)
{
    tr_state_command_finish(c->state, &c->b, op_type, op);
}

static tr_fb_ref str_or_0(struct tr_fb_builder *b, const char *s)
{
    return s != NULL && s[0] != '\0' ? tr_fb_create_str(b, s) : 0;
}

static int propose_node_add(struct tr_cluster *c, uint64_t id, const char *raft, const char *peer,
                            const char *client, const char *http, uint32_t capacity, int kind, tr_cluster_cb cb,
                            void *ud)
{
    command_begin(c);
    struct tr_fb_builder *b = &c->b;
    tr_fb_ref r = str_or_0(b, raft), p = str_or_0(b, peer), cl = str_or_0(b, client), h = str_or_0(b, http);
    troupe_cmd_NodeAdd_start(b);
    troupe_cmd_NodeAdd_add_node_id(b, id);
    troupe_cmd_NodeAdd_add_raft_address(b, r);
    troupe_cmd_NodeAdd_add_peer_address(b, p);
    troupe_cmd_NodeAdd_add_client_address(b, cl);
    troupe_cmd_NodeAdd_add_http_address(b, h);
    troupe_cmd_NodeAdd_add_capacity(b, capacity);
    command_end(c, troupe_cmd_Op_NodeAdd, troupe_cmd_NodeAdd_end(b));
    return propose_built(c, id, kind, cb, ud);
}

static int propose_node_simple(struct tr_cluster *c, uint8_t op_type, uint64_t id, const char *reason, int kind,
                               tr_cluster_cb cb, void *ud)
{
    command_begin(c);
    struct tr_fb_builder *b = &c->b;
    tr_fb_ref op;
    switch (op_type) {
    case troupe_cmd_Op_NodeDown: {
        tr_fb_ref why = str_or_0(b, reason);
        troupe_cmd_NodeDown_start(b);
        troupe_cmd_NodeDown_add_node_id(b, id);
        troupe_cmd_NodeDown_add_reason(b, why);
        op = troupe_cmd_NodeDown_end(b);
        break;
    }
    case troupe_cmd_Op_NodeUp:
        troupe_cmd_NodeUp_start(b);
        troupe_cmd_NodeUp_add_node_id(b, id);
        op = troupe_cmd_NodeUp_end(b);
        break;
    case troupe_cmd_Op_NodeDrain:
        troupe_cmd_NodeDrain_start(b);
        troupe_cmd_NodeDrain_add_node_id(b, id);
        op = troupe_cmd_NodeDrain_end(b);
        break;
    default:
        troupe_cmd_NodeRemove_start(b);
        troupe_cmd_NodeRemove_add_node_id(b, id);
        op = troupe_cmd_NodeRemove_end(b);
        break;
    }
    command_end(c, op_type, op);
    return propose_built(c, id, kind, cb, ud);
}

/* ---- leader: rebalancing queued runs -------------------------------------------------
 *
 * A run placed on a full node waits `queued` there. When another Up node has
 * room, the leader moves the oldest queued runs beyond their owner's capacity
 * to it: raft/fsm_nodes.c plans the moves from the FSM's load index
 * (tr_fsm_rebalance_plan, read-only, on this loop between entries) and this
 * module proposes each as RunReassign{only_if_queued} with epoch + 1. The
 * FSM applies one only if, at that point in the log, the run is still
 * Queued, its owner still over capacity and the target still Up with room;
 * otherwise it is refused as stale and nothing changes. So a plan made from
 * a moment-old view is never wrong, only wasted.
 *
 * Pending moves (proposed, not answered) are remembered so that the same run
 * is not proposed twice and the room they take counts; they are forgotten
 * when answered, after REBALANCE_PENDING_MS, when this node stops leading
 * and at close (a forgotten context is freed by its callback, which always
 * comes: c is NULL then). At most REBALANCE_MAX_PENDING at once. A receiver
 * must have pinged recently (or be this node): runs do not move to a node
 * about to be declared down. */
#define REBALANCE_MAX_PENDING 64
#define REBALANCE_PENDING_MS 5000

struct rb_ctx {
    struct tr_cluster *c;       /* NULL once forgotten */
    struct tr_fsm_move move;
    uint64_t since_ms;
    struct rb_ctx *prev, *next; /* c->rebalancing */
};

static void rb_forget(struct tr_cluster *c, struct rb_ctx *x)
{
    if (x->prev != NULL)
        x->prev->next = x->next;
    else
        c->rebalancing = x->next;
    if (x->next != NULL)
        x->next->prev = x->prev;
    else
        c->rebalancing_tail = x->prev;
    x->prev = x->next = NULL;
    x->c = NULL;
    c->n_rebalancing--;
}

static void rb_forget_all(struct tr_cluster *c)
{
    while (c->rebalancing != NULL)
        rb_forget(c, c->rebalancing);
}

static void rebalance_done(void *ud, const struct tr_state_reply *r)
{
    struct rb_ctx *x = ud;
    struct tr_cluster *c = x->c;
    if (c != NULL) {
        rb_forget(c, x);
        char id[TR_RUN_ID_TEXT_LEN];
        tr_run_id_text(x->move.run_id, id);
        if (r->status == TR_OK && r->verdict == TR_FSM_OK) {
            c->rebalanced++;
            tr_log(TR_LOG_INFO, "cluster: queued run %s moved from node %llu (full) to node %llu", id,
                   (unsigned long long)x->move.from, (unsigned long long)x->move.to);
        } else {
            c->rebalance_refused++;
            tr_log(TR_LOG_DEBUG, "cluster: moving queued run %s to node %llu: %s", id, (unsigned long long)x->move.to,
                   r->status != TR_OK ? tr_strerror(r->status) : tr_fsm_verdict_name(r->verdict));
        }
    }
    tr_free(x);
}

/* A node may receive runs when it is this one or its pings still vouch for
 * it (one echoed a pong of ours within half the failure timeout). */
static int rb_may_receive(void *ud, uint64_t node)
{
    struct tr_cluster *c = ud;
    if (node == c->node_id)
        return 1;
    int64_t now = mono_us();
    for (unsigned i = 0; i < c->n_peers; i++)
        if (c->peers[i].id == node)
            return c->peers[i].heard_until_us > now;
    return 0;
}

static int propose_rebalance(struct tr_cluster *c, const struct tr_fsm_move *m, uint64_t now)
{
    char id[TR_RUN_ID_TEXT_LEN];
    tr_run_id_text(m->run_id, id);
    command_begin(c);
    struct tr_fb_builder *b = &c->b;
    tr_fb_ref rid = tr_fb_create_str(b, id);
    troupe_cmd_RunReassign_start(b);
    troupe_cmd_RunReassign_add_run_id(b, rid);
    troupe_cmd_RunReassign_add_from_node(b, m->from);
    troupe_cmd_RunReassign_add_to_node(b, m->to);
    troupe_cmd_RunReassign_add_epoch(b, m->epoch);
    troupe_cmd_RunReassign_add_only_if_queued(b, true);
    command_end(c, troupe_cmd_Op_RunReassign, troupe_cmd_RunReassign_end(b));
    size_t len;
    const uint8_t *data = tr_fb_builder_data(b, &len);
    struct rb_ctx *x = tr_malloc(sizeof *x);
    *x = (struct rb_ctx){ .c = c, .move = *m, .since_ms = now, .prev = c->rebalancing_tail };
    int rv = tr_state_propose(c->state, data, len, rebalance_done, x);
    if (rv != TR_OK) {
        tr_free(x);
        return rv;
    }
    if (c->rebalancing_tail != NULL)
        c->rebalancing_tail->next = x;
    else
        c->rebalancing = x;
    c->rebalancing_tail = x;
    c->n_rebalancing++;
    return TR_OK;
}

/* Leader tick: propose the moves the FSM's load index calls for. */
static void rebalance(struct tr_cluster *c, uint64_t now)
{
    while (c->rebalancing != NULL && now - c->rebalancing->since_ms > REBALANCE_PENDING_MS)
        rb_forget(c, c->rebalancing);
    if (c->n_rebalancing >= REBALANCE_MAX_PENDING || !tr_state_ready(c->state))
        return;
    struct tr_fsm *f = tr_state_fsm(c->state);
    if (f == NULL)
        return;
    struct tr_fsm_move pending[REBALANCE_MAX_PENDING], moves[REBALANCE_MAX_PENDING];
    uint32_t np = 0;
    for (struct rb_ctx *x = c->rebalancing; x != NULL; x = x->next)
        pending[np++] = x->move;
    uint32_t n = tr_fsm_rebalance_plan(f, pending, np, rb_may_receive, c, moves, REBALANCE_MAX_PENDING - np);
    for (uint32_t i = 0; i < n; i++) {
        int rv = propose_rebalance(c, &moves[i], now);
        if (rv != TR_OK) {
            tr_log(TR_LOG_WARN, "cluster: rebalancing: cannot propose: %s", tr_strerror(rv));
            break;
        }
    }
}

/* ---- follower: forwarding ---------------------------------------------------------- */

/* Writes wait in c->pending for a leader for at most FORWARD_TIMEOUT_MS:
 * through a leader change they are sent to the new leader (or proposed here
 * if this node won), so a client sees a slower write, not an error. A write
 * sent and then answered NotLeader was not proposed: it goes back to the
 * queue. A write sent on a connection that breaks has an unknown outcome:
 * it fails (TR_ENOTLEADER) and its requester re-reads and retries — the FSM
 * makes a repeat harmless (an append's seq, a run's id). */
#define FORWARD_QUEUE_MAX 65536

static bool lead_open(const struct tr_cluster *c)
{
    return c->lead != NULL && c->lead->st == PC_OPEN && c->lead_target != 0 && c->joined;
}

static void send_pending(struct tr_cluster *c, struct pending *p)
{
    struct pconn *pc = c->lead;
    p->request_id = ++c->next_request;
    p->sent_ms = uv_now(c->loop);
    msg_begin(c);
    struct tr_fb_builder *b = &c->b;
    tr_fb_ref bytes = troupe_peer_Forward_create_command(b, p->cmd, p->len);
    troupe_peer_Forward_start(b);
    troupe_peer_Forward_add_request_id(b, p->request_id);
    troupe_peer_Forward_add_origin_node(b, c->node_id);
    troupe_peer_Forward_add_command(b, bytes);
    msg_end(c, pc, troupe_peer_Body_Forward, troupe_peer_Forward_end(b));
    /* A failed send closes pc: cl_conn_closed fails p (sent: outcome unknown
     * to the state service's bookkeeping, though nothing left this node). */
}

/* Send every queued write, in order, while the leader is reachable. */
static void flush_pending(struct tr_cluster *c)
{
    for (struct pending *p = c->pending; p != NULL && lead_open(c); p = p->next)
        if (p->request_id == 0)
            send_pending(c, p);
}

static void pending_done(struct tr_cluster *c, struct pending *p, const struct tr_state_result *r)
{
    pending_unlink(c, p);
    tr_state_forward_done(p->fwd, r);
    tr_free(p);
}

static int forward(void *ud, const void *cmd, size_t len, struct tr_state_fwd *f)
{
    struct tr_cluster *c = ud;
    if (c->closing)
        return TR_ECLOSED;
    if (c->n_pending >= FORWARD_QUEUE_MAX)
        return TR_EUNAVAIL;
    struct pending *p = tr_malloc(sizeof *p + len);
    *p = (struct pending){ .fwd = f, .queued_ms = uv_now(c->loop), .len = len };
    memcpy(p->cmd, cmd, len);
    pending_append(c, p);
    if (lead_open(c))
        send_pending(c, p);
    return TR_OK;
}

/* This node leads now: propose what waited for a leader here. */
static void local_applied(void *ud, const struct tr_state_result *r)
{
    struct tr_state_fwd *f = ud;
    tr_state_forward_done(f, r);
}

static void propose_pending_here(struct tr_cluster *c)
{
    for (struct pending *p = c->pending, *next; p != NULL; p = next) {
        next = p->next;
        if (p->request_id != 0)
            continue;
        pending_unlink(c, p);
        int rv = tr_state_propose_full(c->state, p->cmd, p->len, local_applied, p->fwd);
        if (rv != TR_OK) {
            struct tr_state_result r = { .status = rv };
            tr_state_forward_done(p->fwd, &r);
        }
        tr_free(p);
    }
}

/* Fail what waited too long: queued ones with TR_EUNAVAIL; a sent one means
 * the leader does not answer: drop the connection (which fails it). */
static void expire_pending(struct tr_cluster *c, uint64_t now)
{
    for (struct pending *p = c->pending, *next; p != NULL; p = next) {
        next = p->next;
        if (p->request_id == 0 && now - p->queued_ms > FORWARD_TIMEOUT_MS) {
            struct tr_state_result r = { .status = TR_EUNAVAIL };
            pending_done(c, p, &r);
        } else if (p->request_id != 0 && now - p->sent_ms > FORWARD_TIMEOUT_MS && c->lead != NULL) {
            pc_close(c->lead, "a forwarded write timed out");
            return;
        }
    }
}

static int status_from_peer(int8_t st)
{
    switch (st) {
    case troupe_peer_Status_Ok: return TR_OK;
    case troupe_peer_Status_NotLeader: return TR_ENOTLEADER;
    case troupe_peer_Status_TooLarge: return TR_ETOOBIG;
    case troupe_peer_Status_Rejected: return TR_EINVAL;
    default: return TR_EUNAVAIL;
    }
}

static void on_forward_result(struct tr_cluster *c, struct pconn *pc, const struct troupe_peer_ForwardResult *r)
{
    uint64_t id = troupe_peer_ForwardResult_request_id(r);
    struct pending *p = c->pending;
    while (p != NULL && (id == 0 || p->request_id != id))
        p = p->next;
    if (p == NULL)
        return; /* failed already */
    int status = status_from_peer(troupe_peer_ForwardResult_status(r));
    if (status == TR_ENOTLEADER) {
        /* Not proposed: back to the queue for the next leader. */
        p->request_id = 0;
        pc_close(pc, "it is not the leader any more");
        return;
    }
    struct tr_state_result res = {
        .status = status,
        .verdict = troupe_peer_ForwardResult_verdict(r),
        .raft_index = troupe_peer_ForwardResult_raft_index(r),
        .run_id = troupe_peer_ForwardResult_run_id(r),
        .seq = troupe_peer_ForwardResult_seq(r),
    };
    uint32_t n = troupe_peer_ForwardResult_appends_len(r);
    struct tr_state_verdict stack[64];
    struct tr_state_verdict *v = n <= 64 ? stack : tr_malloc(n * sizeof *v);
    for (uint32_t i = 0; i < n; i++) {
        struct troupe_peer_Verdict pv = troupe_peer_ForwardResult_appends_at(r, i);
        v[i] = (struct tr_state_verdict){ pv.seq, pv.verdict };
    }
    res.n_appends = n;
    res.appends = v;
    pending_done(c, p, &res);
    if (v != stack)
        tr_free(v);
}

/* ---- leader: answering forwards -------------------------------------------------------- */

/* A forwarded write being proposed here. Its result may come after the
 * cluster closed (the state service closes later and fails what raft still
 * had): then c is NULL and the context is only freed. */
struct fwd_ctx {
    struct tr_cluster *c;
    uint64_t gen;
    uint64_t request_id;
    struct fwd_ctx *prev, *next;  /* c->proposing */
};

static void send_forward_result(struct tr_cluster *c, struct pconn *pc, uint64_t request_id,
                                const struct tr_state_result *r, int8_t status, const char *message)
{
    msg_begin(c);
    struct tr_fb_builder *b = &c->b;
    tr_fb_ref appends = 0, msg = str_or_0(b, message), addr = 0;
    if (r != NULL && r->n_appends > 0) {
        struct troupe_peer_Verdict stack[64];
        struct troupe_peer_Verdict *v = r->n_appends <= 64 ? stack : tr_malloc(r->n_appends * sizeof *v);
        for (uint32_t i = 0; i < r->n_appends; i++)
            v[i] = (struct troupe_peer_Verdict){ .seq = r->appends[i].seq, .verdict = r->appends[i].verdict };
        appends = troupe_peer_ForwardResult_create_appends(b, v, r->n_appends);
        if (v != stack)
            tr_free(v);
    }
    if (status == troupe_peer_Status_NotLeader) {
        char a[64];
        leader_peer_addr(c, a);
        addr = str_or_0(b, a);
    }
    struct tr_raft_info info;
    tr_raft_info(c->raft, &info);
    troupe_peer_ForwardResult_start(b);
    troupe_peer_ForwardResult_add_request_id(b, request_id);
    troupe_peer_ForwardResult_add_status(b, status);
    troupe_peer_ForwardResult_add_leader_id(b, info.leader_id);
    if (r != NULL) {
        troupe_peer_ForwardResult_add_raft_index(b, r->raft_index);
        troupe_peer_ForwardResult_add_verdict(b, r->verdict);
        troupe_peer_ForwardResult_add_run_id(b, r->run_id);
        troupe_peer_ForwardResult_add_seq(b, r->seq);
    }
    troupe_peer_ForwardResult_add_appends(b, appends);
    troupe_peer_ForwardResult_add_message(b, msg);
    troupe_peer_ForwardResult_add_leader_peer_address(b, addr);
    msg_end(c, pc, troupe_peer_Body_ForwardResult, troupe_peer_ForwardResult_end(b));
}

static int8_t peer_status(int status)
{
    switch (status) {
    case TR_OK: return troupe_peer_Status_Ok;
    case TR_ENOTLEADER: return troupe_peer_Status_NotLeader;
    case TR_EINVAL: return troupe_peer_Status_Rejected;
    case TR_ETOOBIG: return troupe_peer_Status_TooLarge;
    default: return troupe_peer_Status_Unavailable;
    }
}

static void forward_applied(void *ud, const struct tr_state_result *r)
{
    struct fwd_ctx *x = ud;
    struct tr_cluster *c = x->c;
    if (c == NULL) { /* the cluster closed meanwhile */
        tr_free(x);
        return;
    }
    if (x->prev != NULL)
        x->prev->next = x->next;
    else
        c->proposing = x->next;
    if (x->next != NULL)
        x->next->prev = x->prev;
    struct pconn *pc = c->closing ? NULL : conn_by_gen(c, x->gen);
    if (pc != NULL)
        send_forward_result(c, pc, x->request_id, r, peer_status(r->status),
                            r->status == TR_OK ? NULL : tr_strerror(r->status));
    tr_free(x);
}

static void on_forward(struct tr_cluster *c, struct pconn *pc, const struct troupe_peer_Forward *f)
{
    uint64_t id = troupe_peer_Forward_request_id(f);
    struct tr_fb_vec cmd = troupe_peer_Forward_command(f);
    struct fwd_ctx *x = tr_malloc(sizeof *x);
    *x = (struct fwd_ctx){ c, pc->gen, id, NULL, c->proposing };
    int rv = tr_state_propose_full(c->state, cmd.data, cmd.len, forward_applied, x);
    if (rv == TR_OK) {
        if (c->proposing != NULL)
            c->proposing->prev = x;
        c->proposing = x;
    } else {
        tr_free(x);
        send_forward_result(c, pc, id, NULL, peer_status(rv), tr_strerror(rv));
    }
}

/* ---- leader: pings ---------------------------------------------------------------------- */

static int64_t leader_contact(struct tr_cluster *c);

static void on_ping(struct tr_cluster *c, struct pconn *pc, const struct troupe_peer_Ping *p)
{
    uint64_t id = pc->peer_id;
    struct tr_raft_info info;
    tr_raft_info(c->raft, &info);
    int64_t until = 0;
    if (info.role == RAFT_LEADER) {
        int i = peer_slot(c, id);
        if (i >= 0) {
            c->peers[i].last_ms = uv_now(c->loop);
            /* For this leader's own fencing a ping counts only if it echoes a
             * pong this leader sent on this connection, and only for half the
             * failure timeout from that pong: pings that sat in a socket
             * buffer while this process was stopped do not. */
            int64_t echo = troupe_peer_Ping_pong_sent_us(p);
            int64_t good = echo + (int64_t)c->failure_ms / 2 * 1000;
            if (echo >= pc->born_us && echo <= mono_us() && good > c->peers[i].heard_until_us)
                c->peers[i].heard_until_us = good;
            struct tr_node_rec n;
            if (!c->peers[i].up_pending && tr_node_get(c->store, id, &n) == TR_OK &&
                n.state == troupe_state_NodeState_Down) {
                tr_log(TR_LOG_INFO, "cluster: node %llu is back: marking it up", (unsigned long long)id);
                if (propose_node_simple(c, troupe_cmd_Op_NodeUp, id, NULL, K_UP, NULL, NULL) == TR_OK)
                    c->peers[i].up_pending = true;
            }
        }
        until = leader_contact(c);
    }
    /* Answer even when not the leader (leader_id tells the follower where to
     * go); only the leader's pongs count as contact, and only for as long as
     * it vouches for itself. */
    int64_t now = mono_us();
    msg_begin(c);
    struct tr_fb_builder *b = &c->b;
    troupe_peer_Pong_start(b);
    troupe_peer_Pong_add_node_id(b, c->node_id);
    troupe_peer_Pong_add_leader_id(b, info.leader_id);
    troupe_peer_Pong_add_term(b, info.term);
    troupe_peer_Pong_add_commit_index(b, info.commit_index);
    troupe_peer_Pong_add_echo_us(b, troupe_peer_Ping_sent_us(p));
    troupe_peer_Pong_add_sent_us(b, now);
    troupe_peer_Pong_add_valid_us(b, until > now ? until - now : 0);
    msg_end(c, pc, troupe_peer_Body_Pong, troupe_peer_Pong_end(b));
}

static void send_ping(struct tr_cluster *c, struct pconn *pc);

/* A pong vouches for the leader from the ping it answers (sent by this
 * node's clock: no later than the pong) for the time the leader vouches for
 * itself, at most half the failure timeout. So a follower's deadline is never
 * later than its leader's own, and a leader's ends half a failure timeout
 * after the last pong it sent that a majority echoed (see leader_contact). */
static void on_pong(struct tr_cluster *c, struct pconn *pc, const struct troupe_peer_Pong *p)
{
    if (troupe_peer_Pong_leader_id(p) != pc->peer_id || pc != c->lead) {
        if (pc == c->lead)
            pc_close(pc, "it is not the leader");
        return;
    }
    bool echoed = c->last_pong_sent_us != 0; /* the ping it answers echoed a pong */
    c->last_pong_sent_us = troupe_peer_Pong_sent_us(p);
    int64_t sent = troupe_peer_Pong_echo_us(p), now = mono_us();
    int64_t span = troupe_peer_Pong_valid_us(p);
    if (span > (int64_t)c->failure_ms / 2 * 1000)
        span = (int64_t)c->failure_ms / 2 * 1000;
    if (span > 0 && sent >= pc->born_us && sent <= now && sent + span > now)
        tr_state_leader_contact(c->state, troupe_peer_Pong_commit_index(p), (uint64_t)(sent + span));
    else if (span <= 0 && !echoed)
        send_ping(c, pc); /* a new leader waits for pings that echo its pongs: one at once */
}

/* ---- joining ------------------------------------------------------------------------------ */

struct join_ctx {
    struct tr_cluster *c;
    uint64_t gen;
    uint64_t id;
    char raft[64], peer[64], client[64], http[64];
    uint32_t capacity;
    tr_cluster_cb cb;   /* tr_cluster_add */
    void *ud;
};

static void send_join_result(struct tr_cluster *c, uint64_t gen, int8_t status, const char *message)
{
    struct pconn *pc = conn_by_gen(c, gen);
    if (pc == NULL || c->closing)
        return;
    msg_begin(c);
    struct tr_fb_builder *b = &c->b;
    char a[64] = "";
    if (status == troupe_peer_Status_NotLeader)
        leader_peer_addr(c, a);
    tr_fb_ref addr = str_or_0(b, a), msg = str_or_0(b, message);
    struct tr_raft_info info;
    tr_raft_info(c->raft, &info);
    troupe_peer_JoinResult_start(b);
    troupe_peer_JoinResult_add_status(b, status);
    troupe_peer_JoinResult_add_leader_id(b, info.leader_id);
    troupe_peer_JoinResult_add_leader_peer_address(b, addr);
    troupe_peer_JoinResult_add_message(b, msg);
    msg_end(c, pc, troupe_peer_Body_JoinResult, troupe_peer_JoinResult_end(b));
}

static void join_finish(struct join_ctx *j, int status, const char *msg)
{
    if (j->cb != NULL)
        j->cb(j->ud, status, msg);
    else
        send_join_result(j->c, j->gen, peer_status(status), msg);
    tr_free(j);
}

static void join_recorded(void *ud, int status, const char *msg)
{
    struct join_ctx *j = ud;
    if (status == TR_OK)
        tr_log(TR_LOG_INFO, "cluster: node %llu joined (raft %s, peer %s)", (unsigned long long)j->id, j->raft,
               j->peer);
    join_finish(j, status, status == TR_OK ? "joined" : msg);
}

static void join_added(void *arg, int status, const char *msg)
{
    struct join_ctx *j = arg;
    struct tr_cluster *c = j->c;
    if (c->closing) {
        join_finish(j, TR_ECLOSED, "closing");
        return;
    }
    if (status != TR_OK && status != TR_EEXIST) {
        join_finish(j, status, msg != NULL ? msg : tr_strerror(status));
        return;
    }
    /* A voter now (or already): record it in the node table. */
    int rv = propose_node_add(c, j->id, j->raft, j->peer, j->client, j->http, j->capacity, K_OTHER, join_recorded, j);
    if (rv != TR_OK)
        join_finish(j, rv, tr_strerror(rv));
}

static void on_join(struct tr_cluster *c, struct pconn *pc, const struct troupe_peer_Join *m)
{
    if (!tr_raft_is_leader(c->raft)) {
        send_join_result(c, pc->gen, troupe_peer_Status_NotLeader, "not the leader");
        return;
    }
    uint64_t id = troupe_peer_Join_node_id(m);
    struct tr_fb_str raft = troupe_peer_Join_raft_address(m);
    if (id == 0 || id != pc->peer_id || raft.ptr == NULL || raft.len == 0 || raft.len > 63 ||
        troupe_peer_Join_peer_address(m).len > 63 || troupe_peer_Join_client_address(m).len > 63 ||
        troupe_peer_Join_http_address(m).len > 63) {
        send_join_result(c, pc->gen, troupe_peer_Status_Rejected,
                         "bad join: node id must be the authenticated one, addresses 1..63 bytes");
        return;
    }
    struct join_ctx *j = tr_calloc(1, sizeof *j);
    j->c = c;
    j->gen = pc->gen;
    j->id = id;
    tr_fb_str_copy(j->raft, sizeof j->raft, raft);
    tr_fb_str_copy(j->peer, sizeof j->peer, troupe_peer_Join_peer_address(m));
    tr_fb_str_copy(j->client, sizeof j->client, troupe_peer_Join_client_address(m));
    tr_fb_str_copy(j->http, sizeof j->http, troupe_peer_Join_http_address(m));
    j->capacity = troupe_peer_Join_capacity(m);
    int rv = tr_raft_add(c->raft, id, j->raft, 1, join_added, j);
    if (rv != TR_OK) {
        tr_free(j);
        send_join_result(c, pc->gen, peer_status(rv), tr_strerror(rv));
    }
}

static void send_join(struct tr_cluster *c, struct pconn *pc)
{
    msg_begin(c);
    struct tr_fb_builder *b = &c->b;
    tr_fb_ref r = str_or_0(b, c->raft_address), p = str_or_0(b, c->peer_address),
              cl = str_or_0(b, c->client_address), h = str_or_0(b, c->http_address);
    troupe_peer_Join_start(b);
    troupe_peer_Join_add_node_id(b, c->node_id);
    troupe_peer_Join_add_raft_address(b, r);
    troupe_peer_Join_add_peer_address(b, p);
    troupe_peer_Join_add_client_address(b, cl);
    troupe_peer_Join_add_http_address(b, h);
    troupe_peer_Join_add_capacity(b, c->capacity);
    msg_end(c, pc, troupe_peer_Body_Join, troupe_peer_Join_end(b));
    c->last_join_ms = uv_now(c->loop);
}

static void on_join_result(struct tr_cluster *c, struct pconn *pc, const struct troupe_peer_JoinResult *r)
{
    int8_t st = troupe_peer_JoinResult_status(r);
    struct tr_fb_str msg = troupe_peer_JoinResult_message(r);
    if (st == troupe_peer_Status_Ok) {
        tr_log(TR_LOG_INFO, "cluster: joined the cluster through %s", pc->addr);
        c->joined = true;
        flush_pending(c);
        return;
    }
    struct tr_fb_str addr = troupe_peer_JoinResult_leader_peer_address(r);
    if (st == troupe_peer_Status_NotLeader && addr.ptr != NULL && addr.len > 0 && addr.len < sizeof c->join_addr) {
        memcpy(c->join_addr, addr.ptr, addr.len);
        c->join_addr[addr.len] = '\0';
        pc_close(pc, "join: redirected to the leader");
        return;
    }
    tr_log(TR_LOG_WARN, "cluster: join through %s refused: %s (retrying)", pc->addr,
           msg.ptr != NULL ? msg.ptr : "no reason");
}

/* ---- dispatch ---------------------------------------------------------------------------- */

void cl_conn_open(struct tr_cluster *c, struct pconn *pc)
{
    tr_log(TR_LOG_DEBUG, "cluster: peer %s is node %llu", pc->addr, (unsigned long long)pc->peer_id);
    if (pc == c->lead && !c->joined) {
        send_join(c, pc);
    } else if (pc == c->lead) {
        c->quick_retries = 0;
        flush_pending(c);
        send_ping(c, pc); /* at once: a new leader needs pings to vouch for itself */
    }
}

void cl_dispatch(struct tr_cluster *c, struct pconn *pc, const struct troupe_peer_Message *m)
{
    switch (troupe_peer_Message_body_type(m)) {
    case troupe_peer_Body_Ping:
        on_ping(c, pc, troupe_peer_Message_body_as_Ping(m));
        break;
    case troupe_peer_Body_Pong:
        on_pong(c, pc, troupe_peer_Message_body_as_Pong(m));
        break;
    case troupe_peer_Body_Forward:
        on_forward(c, pc, troupe_peer_Message_body_as_Forward(m));
        break;
    case troupe_peer_Body_ForwardResult:
        if (pc == c->lead)
            on_forward_result(c, pc, troupe_peer_Message_body_as_ForwardResult(m));
        break;
    case troupe_peer_Body_Join:
        on_join(c, pc, troupe_peer_Message_body_as_Join(m));
        break;
    case troupe_peer_Body_JoinResult:
        if (pc == c->lead)
            on_join_result(c, pc, troupe_peer_Message_body_as_JoinResult(m));
        break;
    default:
        break; /* a newer peer's message: ignore */
    }
}

/* ---- the tick ------------------------------------------------------------------------------ */

static void send_ping(struct tr_cluster *c, struct pconn *pc)
{
    struct tr_raft_info info;
    tr_raft_info(c->raft, &info);
    msg_begin(c);
    struct tr_fb_builder *b = &c->b;
    troupe_peer_Ping_start(b);
    troupe_peer_Ping_add_node_id(b, c->node_id);
    troupe_peer_Ping_add_term(b, info.term);
    troupe_peer_Ping_add_applied_index(b, tr_state_applied(c->state));
    troupe_peer_Ping_add_sent_us(b, mono_us());
    troupe_peer_Ping_add_pong_sent_us(b, c->last_pong_sent_us);
    msg_end(c, pc, troupe_peer_Body_Ping, troupe_peer_Ping_end(b));
    c->last_ping_sent_ms = uv_now(c->loop);
}

/* Follower: keep a connection to the leader (or the join target) and ping it. */
static void follower_tick(struct tr_cluster *c, const struct tr_raft_info *info, uint64_t now)
{
    char addr[80] = "";
    uint64_t target = 0;
    if (!c->joined) {
        snprintf(addr, sizeof addr, "%s", c->join_addr);
    } else if (info->leader_id != 0 && info->leader_id != c->node_id) {
        struct tr_node_rec n;
        if (tr_node_get(c->store, info->leader_id, &n) == TR_OK && n.peer_address[0] != '\0') {
            snprintf(addr, sizeof addr, "%s", n.peer_address);
            target = info->leader_id;
        }
    }
    if (c->lead != NULL && (c->lead->expect_id != target || strcmp(c->lead->addr, addr) != 0)) {
        pc_close(c->lead, "the leader changed");
        return; /* reconnect on a later tick, once it is gone */
    }
    if (c->lead == NULL) {
        if (addr[0] == '\0' || now - c->last_connect_ms < c->ping_ms)
            return;
        c->last_connect_ms = now;
        c->lead = pc_connect(c, addr, target);
        c->lead_target = target;
        return;
    }
    if (c->lead->st != PC_OPEN)
        return;
    if (!c->joined) {
        if (now - c->last_join_ms >= JOIN_RETRY_MS)
            send_join(c, c->lead);
        return;
    }
    if (now - c->last_ping_sent_ms >= c->ping_ms)
        send_ping(c, c->lead);
}

/* Leader: how long this leader vouches for itself — until half a failure
 * timeout after the latest of its pongs that a majority of the voters (itself
 * included) echoed — told to the state service as a sign of life. A leader
 * resumed after a SIGSTOP, or cut off from the others, still believes it
 * leads until raft's own check deposes it; this fences it first. Every
 * voter that elects a new leader has stopped pinging this one before it
 * voted, and any majority includes one of them: so this leader's deadline is
 * at most half a failure timeout after the next leader's election. Returns the
 * deadline (monotonic µs; 0 or past: none). */
static int64_t leader_contact(struct tr_cluster *c)
{
    struct raft *r = tr_raft_raw(c->raft);
    if (r == NULL)
        return 0;
    int64_t now = mono_us(), half = (int64_t)c->failure_ms / 2 * 1000;
    int64_t others[CL_MAX_NODES];
    unsigned voters = 0, n = 0;
    for (unsigned k = 0; k < r->configuration.n; k++) {
        const struct raft_server *s = &r->configuration.servers[k];
        if (s->role != RAFT_VOTER)
            continue;
        voters++;
        if (s->id == c->node_id)
            continue;
        int64_t until = 0;
        for (unsigned i = 0; i < c->n_peers; i++)
            if (c->peers[i].id == s->id)
                until = c->peers[i].heard_until_us;
        if (n < CL_MAX_NODES)
            others[n++] = until;
    }
    unsigned need = voters / 2; /* others needed besides this node for a majority */
    int64_t until;
    if (voters == 0)
        return 0;
    if (need == 0) {
        until = now + half; /* the only voter */
    } else {
        if (n < need)
            return 0;
        /* the need-th latest */
        for (unsigned a = 0; a < need; a++)
            for (unsigned b2 = a + 1; b2 < n; b2++)
                if (others[b2] > others[a]) {
                    int64_t t = others[a];
                    others[a] = others[b2];
                    others[b2] = t;
                }
        until = others[need - 1];
    }
    if (until > now) {
        struct tr_raft_info info;
        tr_raft_info(c->raft, &info);
        tr_state_leader_contact(c->state, info.commit_index, (uint64_t)until);
    }
    return until;
}

/* The new leader's grace: half the failure timeout and a margin. A node that
 * was not pinging this leader was fenced by then: its deadline came from a
 * pong of an earlier leader, no later than that leader's own deadline, which
 * leader_contact bounds by half a failure timeout after this leader won. */
#define GRACE_MARGIN_MS 100
static unsigned grace_ms(const struct tr_cluster *c)
{
    return c->failure_ms / 2 + GRACE_MARGIN_MS;
}

/* Whether node peers[i] is to be declared down now. A node that pinged this
 * leader gets the failure timeout from its last ping (it fenced itself half
 * that after); a node first seen while this node leads (a new member) gets it
 * from then; any other node the grace from this node's election. */
static bool silent(const struct tr_cluster *c, int i, uint64_t now, char *why, size_t cap)
{
    uint64_t since = c->leader_since_ms, last = c->peers[i].last_ms, seen = c->peers[i].seen_ms;
    if (last != 0 && last >= since) {
        if (now - last <= c->failure_ms)
            return false;
        snprintf(why, cap, "no ping for %llu ms", (unsigned long long)(now - last));
    } else if (seen > since) {
        if (now - seen <= c->failure_ms)
            return false;
        snprintf(why, cap, "no ping in %llu ms since it was first seen", (unsigned long long)(now - seen));
    } else {
        if (now - since <= grace_ms(c))
            return false;
        snprintf(why, cap, "no ping in the %llu ms since this node leads", (unsigned long long)(now - since));
    }
    return true;
}

/* Leader: keep this node's record true and declare silent nodes down. */
static void leader_tick(struct tr_cluster *c, uint64_t now)
{
    leader_contact(c);
    if (!c->was_leader) {
        c->was_leader = true;
        c->leader_since_ms = now;
        for (unsigned i = 0; i < c->n_peers; i++)
            c->peers[i].down_pending = c->peers[i].up_pending = false;
        rb_forget_all(c);
        tr_log(TR_LOG_INFO, "cluster: node %llu leads; nodes silent since are declared down in %u ms",
               (unsigned long long)c->node_id, grace_ms(c));
    }
    if (c->lead != NULL)
        pc_close(c->lead, "this node leads now");

    struct tr_node_rec self;
    int rv = tr_node_get(c->store, c->node_id, &self);
    if (!c->self_pending) {
        if (rv == TR_ENOTFOUND || (rv == TR_OK && (strcmp(self.raft_address, c->raft_address) != 0 ||
                                                   strcmp(self.peer_address, c->peer_address) != 0 ||
                                                   strcmp(self.client_address, c->client_address) != 0 ||
                                                   strcmp(self.http_address, c->http_address) != 0 ||
                                                   self.capacity != c->capacity))) {
            if (propose_node_add(c, c->node_id, c->raft_address, c->peer_address, c->client_address,
                                 c->http_address, c->capacity, K_SELF, NULL, NULL) == TR_OK)
                c->self_pending = true;
        } else if (rv == TR_OK && self.state == troupe_state_NodeState_Down) {
            if (propose_node_simple(c, troupe_cmd_Op_NodeUp, c->node_id, NULL, K_SELF, NULL, NULL) == TR_OK)
                c->self_pending = true;
        }
    }

    struct tr_node_rec nodes[CL_MAX_NODES];
    unsigned n = 0;
    if (tr_node_list(c->store, nodes, CL_MAX_NODES, &n) != TR_OK)
        return;
    if (n > CL_MAX_NODES)
        n = CL_MAX_NODES;
    for (unsigned k = 0; k < n; k++) {
        const struct tr_node_rec *r = &nodes[k];
        if (r->id == c->node_id ||
            (r->state != troupe_state_NodeState_Up && r->state != troupe_state_NodeState_Draining))
            continue;
        int i = peer_slot(c, r->id);
        if (i < 0 || c->peers[i].down_pending)
            continue;
        char why[96];
        if (!silent(c, i, now, why, sizeof why))
            continue;
        tr_log(TR_LOG_WARN, "cluster: node %llu is down: %s; its runs move", (unsigned long long)r->id, why);
        if (propose_node_simple(c, troupe_cmd_Op_NodeDown, r->id, why, K_DOWN, NULL, NULL) == TR_OK)
            c->peers[i].down_pending = true;
    }
    rebalance(c, now);
}

static void on_tick(uv_timer_t *t)
{
    struct tr_cluster *c = t->data;
    if (c->closing)
        return;
    uint64_t now = uv_now(c->loop);
    tr_raft_hasten_settle(c->raft);
    struct tr_raft_info info;
    tr_raft_info(c->raft, &info);
    if (info.role == RAFT_LEADER) {
        leader_tick(c, now);
        propose_pending_here(c);
    } else {
        c->was_leader = false;
        rb_forget_all(c); /* their answers still come: the contexts are freed then */
        follower_tick(c, &info, now);
    }
    expire_pending(c, now);
}

/* ---- start and close ------------------------------------------------------------------------- */

static void handle_closed(uv_handle_t *h)
{
    struct tr_cluster *c = h->data;
    c->open_handles--;
    maybe_closed(c);
}

static void maybe_closed(struct tr_cluster *c)
{
    if (c->open_handles > 0 || c->conns != NULL)
        return;
    void (*cb)(void *) = c->close_cb;
    void *arg = c->close_arg;
    tr_fb_builder_free(&c->b);
    tr_free(c);
    if (cb != NULL)
        cb(arg);
}

void tr_cluster_close(struct tr_cluster *c, void (*cb)(void *arg), void *arg)
{
    if (c->closing)
        return;
    c->closing = 1;
    c->close_cb = cb;
    c->close_arg = arg;
    tr_state_set_forwarder(c->state, NULL, NULL);
    fail_pending(c, TR_ECLOSED, true);
    for (struct fwd_ctx *x = c->proposing; x != NULL; x = x->next)
        x->c = NULL; /* orphans: forward_applied frees them */
    c->proposing = NULL;
    rb_forget_all(c); /* likewise: rebalance_done frees them */
    for (struct pconn *pc = c->conns, *next; pc != NULL; pc = next) {
        next = pc->next;
        pc_close(pc, NULL);
    }
    uv_close((uv_handle_t *)&c->tick, handle_closed);
    uv_close((uv_handle_t *)&c->listener, handle_closed);
}

int tr_cluster_start(struct tr_ctx *ctx, const struct tr_cluster_opts *o, struct tr_cluster **out,
                     struct tr_err *err)
{
    uv_loop_t *loop = tr_ctx_loop(ctx);
    if (loop == NULL || o->state == NULL || o->node_id == 0 || o->key == NULL || o->raft_address == NULL)
        return tr_err_set(err, TR_EINVAL, "cluster: state, node id, key and raft address are required");
    struct tr_cluster *c = tr_calloc(1, sizeof *c);
    c->loop = loop;
    c->rt = tr_ctx_rt(ctx);
    c->state = o->state;
    c->store = tr_state_store(o->state);
    c->raft = tr_state_raft(o->state);
    c->node_id = o->node_id;
    memcpy(c->key, o->key, TR_CLUSTER_KEY_LEN);
    c->capacity = o->capacity;
    c->failure_ms = o->failure_timeout_ms ? o->failure_timeout_ms : 1500;
    c->ping_ms = o->ping_interval_ms ? o->ping_interval_ms : 100;
    snprintf(c->raft_address, sizeof c->raft_address, "%s", o->raft_address);
    snprintf(c->client_address, sizeof c->client_address, "%s", o->client_address ? o->client_address : "");
    snprintf(c->http_address, sizeof c->http_address, "%s", o->http_address ? o->http_address : "");
    tr_fb_builder_init(&c->b);

    const char *host = o->listen_host ? o->listen_host : "127.0.0.1";
    struct sockaddr_storage sa;
    uv_tcp_init(loop, &c->listener);
    c->listener.data = c;
    c->open_handles++;
    uv_timer_init(loop, &c->tick);
    c->tick.data = c;
    c->open_handles++;
    int rv;
    if (cl_resolve(host, o->listen_port, &sa) != 0) {
        tr_err_set(err, TR_EINVAL, "cluster: --peer: cannot resolve %s", host);
        goto fail;
    }
    if ((rv = uv_tcp_bind(&c->listener, (const struct sockaddr *)&sa, 0)) != 0 ||
        (rv = uv_listen((uv_stream_t *)&c->listener, 128, pc_on_connection)) != 0) {
        tr_err_set(err, TR_ESYS, "cluster: listen on %s:%d: %s", host, o->listen_port, uv_strerror(rv));
        goto fail;
    }
    struct sockaddr_storage bound;
    int blen = sizeof bound;
    uv_tcp_getsockname(&c->listener, (struct sockaddr *)&bound, &blen);
    c->listen_port = ntohs(((struct sockaddr_in *)&bound)->sin_port);
    if (o->peer_address != NULL)
        snprintf(c->peer_address, sizeof c->peer_address, "%s", o->peer_address);
    else
        snprintf(c->peer_address, sizeof c->peer_address, "%s:%d", host, c->listen_port);
    if (o->join != NULL) {
        snprintf(c->join_addr, sizeof c->join_addr, "%s", o->join);
        c->joined = false;
    } else {
        c->joined = true;
    }
    uv_timer_start(&c->tick, on_tick, 0, c->ping_ms / 2 ? c->ping_ms / 2 : 1);
    tr_state_set_forwarder(c->state, forward, c);
    *out = c;
    return TR_OK;

fail:
    c->closing = 1;
    uv_close((uv_handle_t *)&c->tick, handle_closed);
    uv_close((uv_handle_t *)&c->listener, handle_closed);
    return err->code;
}

int tr_cluster_peer_port(struct tr_cluster *c)
{
    return c->listen_port;
}

uint64_t tr_cluster_silent_ms(struct tr_cluster *c, uint64_t id)
{
    if (!tr_raft_is_leader(c->raft))
        return UINT64_MAX;
    if (id == c->node_id)
        return 0;
    for (unsigned i = 0; i < c->n_peers; i++)
        if (c->peers[i].id == id && c->peers[i].last_ms >= c->leader_since_ms && c->peers[i].last_ms != 0)
            return uv_now(c->loop) - c->peers[i].last_ms;
    return UINT64_MAX;
}

/* ---- operator actions ------------------------------------------------------------------------ */

int tr_cluster_add(struct tr_cluster *c, uint64_t id, const char *raft_address, const char *peer_address,
                   tr_cluster_cb cb, void *ud)
{
    if (!tr_raft_is_leader(c->raft))
        return TR_ENOTLEADER;
    if (id == 0 || raft_address == NULL || raft_address[0] == '\0' || strlen(raft_address) > 63 ||
        (peer_address != NULL && strlen(peer_address) > 63))
        return TR_EINVAL;
    struct join_ctx *j = tr_calloc(1, sizeof *j);
    j->c = c;
    j->id = id;
    snprintf(j->raft, sizeof j->raft, "%s", raft_address);
    snprintf(j->peer, sizeof j->peer, "%s", peer_address ? peer_address : "");
    j->cb = cb;
    j->ud = ud;
    int rv = tr_raft_add(c->raft, id, j->raft, 1, join_added, j);
    if (rv != TR_OK)
        tr_free(j);
    return rv;
}

/* remove / drain: NodeDrain (its runs move), NodeRemove, then raft remove. */
struct remove_ctx {
    struct tr_cluster *c;
    uint64_t id;
    int stage;
    tr_cluster_cb cb;
    void *ud;
};

static void remove_step(void *ud, int status, const char *msg);

static void remove_raft_done(void *arg, int status, const char *msg)
{
    remove_step(arg, status == TR_ENOTFOUND ? TR_OK : status, msg);
}

static void remove_step(void *ud, int status, const char *msg)
{
    struct remove_ctx *x = ud;
    struct tr_cluster *c = x->c;
    if (status != TR_OK || c->closing) {
        x->cb(x->ud, status != TR_OK ? status : TR_ECLOSED, msg);
        tr_free(x);
        return;
    }
    int rv;
    switch (x->stage++) {
    case 0: /* drained (or not asked): record the removal; the FSM moves what is left */
        rv = propose_node_simple(c, troupe_cmd_Op_NodeRemove, x->id, NULL, K_OTHER, remove_step, x);
        break;
    case 1:
        rv = tr_raft_remove(c->raft, x->id, remove_raft_done, x);
        break;
    default:
        tr_log(TR_LOG_INFO, "cluster: node %llu removed", (unsigned long long)x->id);
        x->cb(x->ud, TR_OK, "removed");
        tr_free(x);
        return;
    }
    if (rv != TR_OK) {
        x->cb(x->ud, rv, tr_strerror(rv));
        tr_free(x);
    }
}

int tr_cluster_remove(struct tr_cluster *c, uint64_t id, tr_cluster_cb cb, void *ud)
{
    if (!tr_raft_is_leader(c->raft))
        return TR_ENOTLEADER;
    if (id == 0)
        return TR_EINVAL;
    if (id == c->node_id)
        return TR_EBUSY; /* transfer leadership first */
    struct remove_ctx *x = tr_calloc(1, sizeof *x);
    *x = (struct remove_ctx){ c, id, 0, cb, ud };
    /* NodeDrain first: the FSM moves the node's active runs to live nodes at
     * once (they resume there by replay), which NodeRemove requires of a live
     * node. */
    int rv = propose_node_simple(c, troupe_cmd_Op_NodeDrain, id, NULL, K_OTHER, remove_step, x);
    if (rv != TR_OK)
        tr_free(x);
    return rv;
}

/* Runs move at NodeDrain's apply, so draining is removing. */
int tr_cluster_drain(struct tr_cluster *c, uint64_t id, tr_cluster_cb cb, void *ud)
{
    return tr_cluster_remove(c, id, cb, ud);
}

int tr_cluster_transfer(struct tr_cluster *c, uint64_t id, tr_cluster_cb cb, void *ud)
{
    if (!tr_raft_is_leader(c->raft))
        return TR_ENOTLEADER;
    return tr_raft_transfer(c->raft, id, cb, ud);
}
