/* cluster/: what makes several troupe nodes one cluster — the peer channel,
 * joining, forwarding writes to the leader, failure detection and the
 * leader's half of failover. Placement and reassignment themselves are
 * decided by the FSM (raft/fsm_nodes.c), deterministically, from the node
 * table this module keeps true.
 *
 * Everything here runs on the state service's loop (scheduler 0), outside
 * any actor: start it from a callback on that scheduler, after the state
 * service, and close it before the state service.
 *
 * The peer channel. Each node listens on its --peer address. A follower
 * keeps one connection to the leader (reconnecting when the leader changes)
 * and sends on it: pings (every ping interval), writes to forward (the state
 * service's forwarder), and, when joining, a Join. The leader answers on the
 * same connection: pongs, forward results, join results. Every connection
 * starts with the cluster-key handshake of raft/auth.h (service PEER); then
 * frames of a 4-byte little-endian length and a troupe.peer.Message (TRN1),
 * each verified before it is read. A bad frame closes the connection.
 *
 * Liveness. The leader declares a node down (NodeDown, which makes the FSM
 * reassign its active runs with epoch + 1) when it has not heard a ping from
 * it for the failure timeout, counting from when it became leader at the
 * earliest (the grace of a new leader). A follower that hears no pong for
 * half the failure timeout fences itself (raft/state.c: tr_state_leader_contact).
 * A Down node that pings again is marked Up (NodeUp).
 */
#ifndef TR_CLUSTER_H
#define TR_CLUSTER_H

#include <stdint.h>

#include "raft/raft.h"
#include "runtime/runtime.h"

struct tr_cluster;

struct tr_cluster_opts {
    struct tr_state *state;         /* required; outlives the cluster */
    uint64_t node_id;
    const char *listen_host;        /* the peer channel's bind address */
    int listen_port;                /* 0: ephemeral (tr_cluster_peer_port) */
    /* What this node advertises in the node table (NodeAdd). peer_address
     * NULL: listen_host and the bound port. */
    const char *raft_address;
    const char *peer_address;
    const char *client_address;
    const char *http_address;
    uint32_t capacity;              /* max active runs here (placement); 0 = unlimited */
    const unsigned char *key;       /* cluster key (TR_CLUSTER_KEY_LEN bytes; copied) */
    const char *join;               /* "host:port" of a member's peer channel, or NULL */
    unsigned failure_timeout_ms;    /* 0 = 1500 */
    unsigned ping_interval_ms;      /* 0 = 100 */
};

int tr_cluster_start(struct tr_ctx *ctx, const struct tr_cluster_opts *o, struct tr_cluster **out,
                     struct tr_err *err);
/* Close every connection, fail forwarded writes still waiting (TR_ECLOSED),
 * free the cluster, then cb(arg) (never from inside). */
void tr_cluster_close(struct tr_cluster *c, void (*cb)(void *arg), void *arg);
int tr_cluster_peer_port(struct tr_cluster *c);

/* ---- operator actions (troupectl cluster ...) ------------------------------------
 * Leader only: TR_ENOTLEADER otherwise (the caller redirects to the leader).
 * cb(ud, status, msg) runs once, later, on this loop. */
typedef void (*tr_cluster_cb)(void *ud, int status, const char *msg);

/* Add node id (raft voter at raft_address) and record it in the node table
 * (the other addresses may be NULL; the node completes them when it joins). */
int tr_cluster_add(struct tr_cluster *c, uint64_t id, const char *raft_address, const char *peer_address,
                   tr_cluster_cb cb, void *ud);
/* Remove node id: its active runs move to live nodes, then it leaves raft
 * and the node table. */
int tr_cluster_remove(struct tr_cluster *c, uint64_t id, tr_cluster_cb cb, void *ud);
/* Transfer leadership to id (0: the most up-to-date voter). */
int tr_cluster_transfer(struct tr_cluster *c, uint64_t id, tr_cluster_cb cb, void *ud);
/* Drain node id: the same as tr_cluster_remove, since the FSM moves a
 * draining node's runs at once (kept as the operator's word for it). */
int tr_cluster_drain(struct tr_cluster *c, uint64_t id, tr_cluster_cb cb, void *ud);

/* What this node knows of a peer's liveness: on the leader, ms since its last
 * ping (UINT64_MAX: never since this node became leader). */
uint64_t tr_cluster_silent_ms(struct tr_cluster *c, uint64_t id);

#endif /* TR_CLUSTER_H */
