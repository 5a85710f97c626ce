/* raft/: Troupe's replicated state machine — canonical raft (libraft 0.15)
 * with its libuv I/O and TCP transport, driven on one libuv loop (scheduler
 * 0's), and the FSM that applies committed commands to RocksDB.
 *
 * Everything here runs on that one loop's thread: every function below must
 * be called there, and every callback runs there.
 *
 * Submissions are never handed to libraft from inside the caller's stack:
 * they are queued and issued from a uv_check_t. canonical raft 0.15 completes
 * an entry synchronously on a single-voter cluster, so calling raft_apply from
 * within an apply callback would re-enter it (a double free seen here).
 */
#ifndef TR_RAFT_H
#define TR_RAFT_H

#include <stdint.h>

#include <raft.h>

#include "runtime/runtime.h"

struct tr_raft;

struct tr_raft_opts {
    uint64_t id;                    /* this server's raft id, > 0 */
    const char *dir;                /* raft log and snapshots; created if missing */
    const char *address;            /* raft TCP address "host:port" */
    int bootstrap;                  /* make a one-voter cluster if dir is pristine */
    unsigned election_timeout_ms;   /* 0 = 1000 */
    unsigned heartbeat_timeout_ms;  /* 0 = 100 */
    unsigned snapshot_threshold;    /* entries between snapshots; 0 = 4096 */
    unsigned snapshot_trailing;     /* entries kept after a snapshot; 0 = 2048 */
    struct raft_fsm *fsm;           /* the state machine; outlives the node */
};

/* Open the raft log in opts->dir, join the transport and start raft.
 * On error nothing is left running and err says what failed. */
int tr_raft_open(uv_loop_t *loop, const struct tr_raft_opts *opts, struct tr_raft **out,
                 struct tr_err *err);

/* Close raft, then its I/O and transport (in that order, from raft's close
 * callback). Queued submissions complete with TR_ECLOSED. cb(arg) runs once
 * everything is closed and the node is freed; never from inside this call. */
void tr_raft_close(struct tr_raft *r, void (*cb)(void *arg), void *arg);

/* A proposal: one log entry. Caller-owned; embed it in your own context.
 * cb runs exactly once, on the loop, never from inside tr_raft_propose:
 * status TR_OK with the FSM's result for the entry once it is committed and
 * applied on this node, TR_ENOTLEADER when this node is not (or stopped
 * being) the leader, TR_ECLOSED when closing, TR_EIO on a raft error. */
struct tr_raft_propose;
typedef void (*tr_raft_propose_cb)(struct tr_raft_propose *p, int status, void *result);
struct tr_raft_propose {
    void *data;                 /* the caller's */
    tr_raft_propose_cb cb;
    /* private */
    struct raft_apply req_;
    struct raft_buffer buf_;
    struct tr_raft *node_;
    struct tr_raft_propose *next_;
};

/* Queue an entry whose payload is buf[0..len). The bytes must come from
 * raft_malloc; ownership passes to the node on TR_OK (it frees them however
 * the proposal ends). Returns TR_ECLOSED (buf not taken) when closing. */
int tr_raft_propose(struct tr_raft *r, struct tr_raft_propose *p, void *buf, size_t len,
                    tr_raft_propose_cb cb);

/* Membership changes and leadership transfer, queued like proposals.
 * cb gets TR_OK or an error; msg describes the error (valid during cb). */
typedef void (*tr_raft_change_cb)(void *arg, int status, const char *msg);
int tr_raft_add(struct tr_raft *r, uint64_t id, const char *address, int voter,
                tr_raft_change_cb cb, void *arg);
int tr_raft_remove(struct tr_raft *r, uint64_t id, tr_raft_change_cb cb, void *arg);
int tr_raft_transfer(struct tr_raft *r, uint64_t id, tr_raft_change_cb cb, void *arg);

/* Ask for a barrier: cb runs once every entry before it is applied here
 * (leader only). */
int tr_raft_barrier(struct tr_raft *r, tr_raft_change_cb cb, void *arg);

struct tr_raft_info {
    int role;                   /* RAFT_FOLLOWER, RAFT_CANDIDATE, RAFT_LEADER, RAFT_UNAVAILABLE */
    uint64_t leader_id;         /* 0 when unknown */
    char leader_address[64];
    uint64_t term;
    uint64_t commit_index;
    uint64_t last_applied;
    uint64_t last_index;
    unsigned n_servers;
};
void tr_raft_info(struct tr_raft *r, struct tr_raft_info *out);
int tr_raft_is_leader(struct tr_raft *r);
/* The underlying libraft instance, for read-only inspection. */
struct raft *tr_raft_raw(struct tr_raft *r);

/* Map a libraft error code to a TR_* code. */
int tr_raft_errno(int raft_rv);

#endif /* TR_RAFT_H */
