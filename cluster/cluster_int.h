/* Private to cluster/. */
#ifndef TR_CLUSTER_INT_H
#define TR_CLUSTER_INT_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>

#include "cluster/cluster.h"
#include "raft/auth.h"
#include "raft/raft.h"
#include "schemas/schemas.h"

struct troupe_peer_Message;
struct fwd_ctx;
struct rb_ctx;

enum pc_state { PC_CONNECTING, PC_AUTH, PC_OPEN, PC_CLOSING };

/* One peer connection (peer.c). */
struct pconn {
    struct tr_cluster *c;
    uv_tcp_t tcp;
    uv_connect_t creq;
    struct tr_auth *auth;
    enum pc_state st;
    int outbound;
    uint64_t gen;             /* unique per connection: answers find it by gen */
    uint64_t expect_id;       /* outbound: the node we mean to reach (0: any) */
    uint64_t peer_id;         /* authenticated */
    char addr[80];
    int64_t born_us;          /* monotonic µs at creation: older echoes are not ours */
    bool refused;             /* outbound: the connect was refused (nothing listens there) */
    bool gone;                /* the peer closed or reset it */
    uint8_t *rbuf;
    size_t rlen, rcap;
    size_t wqueued;
    struct pconn *prev, *next;
};

/* A write for the leader (follower): queued until a leader is reachable,
 * then sent and waiting for its result. */
struct pending {
    uint64_t request_id;        /* 0 while not sent */
    struct tr_state_fwd *fwd;
    uint64_t queued_ms;
    uint64_t sent_ms;
    size_t len;
    struct pending *prev, *next;
    uint8_t cmd[];              /* the Command, kept until sent (for a resend after NotLeader) */
};

#define CL_MAX_NODES 64

struct tr_cluster {
    uv_loop_t *loop;
    struct tr_rt *rt;
    struct tr_state *state;
    struct tr_store *store;
    struct tr_raft *raft;
    uint64_t node_id;
    unsigned char key[TR_CLUSTER_KEY_LEN];
    char raft_address[64], peer_address[64], client_address[64], http_address[64];
    uint32_t capacity;
    unsigned failure_ms, ping_ms;

    uv_tcp_t listener;
    int listen_port;
    uv_timer_t tick;
    struct pconn *conns;      /* every connection, both directions */
    uint64_t next_gen;
    int closing;
    void (*close_cb)(void *);
    void *close_arg;
    unsigned open_handles;

    /* Follower side. */
    struct pconn *lead;       /* our connection to the leader (or to a join target) */
    uint64_t lead_target;     /* node id lead should reach (0: a join target) */
    uint64_t last_connect_ms;
    unsigned quick_retries;   /* reconnects at once since the leader's connection last opened */
    uint64_t last_ping_sent_ms;
    int64_t last_pong_sent_us;  /* the leader's stamp in the last pong (echoed in pings; 0: none on this connection) */
    struct pending *pending, *pending_tail; /* in arrival order; sent ones and queued ones */
    struct fwd_ctx *proposing; /* leader: forwarded writes being proposed here */
    unsigned n_pending;
    uint64_t next_request;
    char join_addr[80];       /* where to send Join; "" when not joining */
    bool joined;
    uint64_t last_join_ms;

    /* Leader side. */
    bool was_leader;
    uint64_t leader_since_ms;
    struct {
        uint64_t id;
        uint64_t seen_ms;       /* first sight of it in this process */
        uint64_t last_ms;       /* its last ping (0: none) */
        int64_t heard_until_us; /* its last ping echoed a pong of ours: that pong's time plus half
                                   the failure timeout (monotonic µs; 0: none) */
        bool down_pending, up_pending;
    } peers[CL_MAX_NODES];
    unsigned n_peers;
    bool self_pending;        /* a NodeAdd/NodeUp for this node in flight */
    /* Rebalancing queued runs: the RunReassign{only_if_queued} proposed and
     * not answered yet (cluster.c, rebalance()), oldest first. */
    struct rb_ctx *rebalancing, *rebalancing_tail;
    unsigned n_rebalancing;
    uint64_t rebalanced, rebalance_refused; /* moves applied / refused as stale */
    uint64_t refused, last_refused_log_ms;

    struct tr_fb_builder b;
};

/* peer.c */
struct pconn *pc_connect(struct tr_cluster *c, const char *addr, uint64_t expect_id);
void pc_on_connection(uv_stream_t *server, int status);
int pc_send(struct pconn *pc, const uint8_t *msg, size_t len);
void pc_close(struct pconn *pc, const char *why);

/* cluster.c: called by peer.c */
void cl_conn_link(struct tr_cluster *c, struct pconn *pc);
void cl_conn_open(struct tr_cluster *c, struct pconn *pc);
void cl_conn_closed(struct tr_cluster *c, struct pconn *pc);
void cl_dispatch(struct tr_cluster *c, struct pconn *pc, const struct troupe_peer_Message *m);
void cl_log_refused(struct tr_cluster *c, struct pconn *pc, const char *why);
int cl_split_addr(const char *s, char *host, size_t cap, int *port);
int cl_resolve(const char *host, int port, struct sockaddr_storage *out);

#endif /* TR_CLUSTER_INT_H */
