/* raft/: Troupe's replicated state machine — canonical raft (libraft 0.15)
 * with its libuv I/O and TCP transport, driven on one libuv loop (scheduler
 * 0's), and the FSM that applies committed commands to RocksDB.
 *
 * Everything here runs on that one loop's thread: every function below must
 * be called there, and every callback runs there.
 *
 * Submissions are never handed to libraft from inside the caller's stack:
 * they are queued and issued from a uv_idle_t on the next loop turn. canonical raft 0.15 completes
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
    unsigned snapshot_threshold;    /* entries between snapshots; 0 = 65536 */
    unsigned snapshot_trailing;     /* entries kept after a snapshot; 0 = 8192 */
    struct raft_fsm *fsm;           /* the state machine; outlives the node */
    /* Called after raft_init and before raft_start, which may already apply
     * entries from the log: the FSM learns its raft instance here. */
    void (*on_init)(struct raft *raft, void *arg);
    void *on_init_arg;
    /* The cluster key (raft/auth.h, TR_CLUSTER_KEY_LEN bytes): raft
     * connections authenticate with it. NULL: plain raft_uv_tcp. */
    const unsigned char *cluster_key;
    int no_prefill;                 /* open segments not zero-filled (raft/prefill.c) */
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
 * the proposal ends). len must be a non-zero multiple of 8 (TR_EINVAL
 * otherwise): raft 0.15's segment writer lays entries out 8-byte padded but
 * copies only len bytes, so a shorter entry corrupts the log. Returns
 * TR_ECLOSED (buf not taken) when closing. */
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

/* Hasten an election: the caller (cluster/) has learnt that the process of
 * leader `leader_id` is gone — its peer port refuses connections. If this
 * node is a follower or candidate that still counts that node as its leader
 * (or has none), its election timeout drops to twice the heartbeat, and the
 * wait under way ends within that, instead of raft's 1-2 election timeouts
 * from the last heartbeat. A live leader's heartbeats still hold a follower
 * (they come every heartbeat), pre-vote keeps a wrong guess from deposing
 * anyone, and raft's safety never depends on timing. tr_raft_hasten_settle,
 * called on a tick, puts the configured timeout back once a leader of a later
 * term is known, or after two election timeouts. Returns 1 when it starts
 * hastening (0 when it did not, or had already). */
int tr_raft_hasten_election(struct tr_raft *r, uint64_t leader_id);
void tr_raft_hasten_settle(struct tr_raft *r);
/* The underlying libraft instance, for read-only inspection. */
struct raft *tr_raft_raw(struct tr_raft *r);

/* Map a libraft error code to a TR_* code. */
int tr_raft_errno(int raft_rv);

/* ========================================================================== */
/* The state service: the node's replicated state (RocksDB store + raft + the
 * FSM of raft/fsm.c + the group-commit batcher), reached by actors through
 * messages and read directly from the store.
 *
 * Writes. Actors send requests (tr_request) to the service actor
 * (tr_state_actor): TR_MSG_STATE_APPEND to add one event to a run's journal,
 * TR_MSG_STATE_PROPOSE for any other command. The leader's batcher packs
 * every append that arrives within one loop turn into one raft entry (an
 * AppendBatch command: group commit); the reply comes after the entry is
 * committed AND applied here, with the FSM's verdict for that append. A
 * follower forwards to the leader (below). Appends from one actor are
 * applied in the order it sent them.
 *
 * Reads. tr_state_store() gives the store; reads are thread-safe and see
 * every entry applied so far on this node (read-your-writes for the actor
 * that got a reply; see "the cluster's seams" for a follower).
 *
 * Notifications. After each applied entry the FSM tells the listener actor
 * (opts.listener) what changed that owners must act on, with
 * TR_MSG_STATE_NOTE messages (struct tr_state_note).
 */

enum tr_state_msg {
    TR_MSG_STATE_APPEND = TR_MSG_USER + 100, /* request: struct tr_append_msg + event bytes */
    TR_MSG_STATE_PROPOSE,                    /* request: a troupe.cmd.Command buffer (TRC1) */
    TR_MSG_STATE_REPLY,                      /* reply to both: struct tr_state_reply */
    TR_MSG_STATE_NOTE,                       /* to the listener: struct tr_state_note */
    TR_MSG_STATE_URGE,                       /* tell, no payload: send the lazy appends queued now */
};

/* Payload of TR_MSG_STATE_APPEND: this header, then `len` bytes of a
 * troupe.journal.Event buffer (TRJ1) whose seq/epoch/run_id equal the
 * header's, then `blob_len` bytes of an optional large payload that the
 * event names by its BLAKE2b-256 digest (tr_blob_digest); the FSM stores it
 * in the blobs family. At most TR_APPEND_MAX bytes in all. */
#define TR_APPEND_MAX (8u << 20)
struct tr_append_msg {
    uint64_t run_id;
    uint64_t epoch;
    uint64_t seq;
    uint64_t writer;                /* the sender's writer id (0: none; see below) */
    uint64_t base_seq;              /* the last seq of the journal it read back */
    uint32_t len;
    uint32_t blob_len;
    uint32_t flags;                 /* TR_APPEND_* */
    uint32_t reserved;              /* zero; keeps event at sizeof (struct tr_append_msg) */
    unsigned char event[];
};

/* Lazy: the sender does not wait for this append's commit now (a run whose
 * model call is out). The service may hold it up to its linger time for an
 * entry it would write anyway, instead of giving it an entry of its own that
 * the sender's next, urgent append would queue behind. Without the flag, an
 * append goes into the next entry at once. TR_MSG_STATE_URGE from the sender
 * ends the wait of what it queued before. */
#define TR_APPEND_LAZY 1u

/* Writer ids. A sender that pipelines appends builds each on the ones before
 * it. If one of them is refused (BAD_SEQ: another event took its seq, say
 * one the sender thought lost when its leader died), the later ones must not
 * be accepted just because their seqs happen to fit after the other event.
 * So a sender picks a new random writer id each time it reads the journal
 * back, and sends it with the last seq it read (base_seq). The FSM accepts an
 * append at seq only if seq - 1 <= base_seq (the sender saw that event) or
 * the event at seq - 1 came from the same writer; otherwise BAD_SEQ, and the
 * sender reads the journal back again. Writer 0: no check (the FSM's own
 * events, and senders without one). */

/* Verdicts of the FSM for one append or command. */
enum tr_fsm_verdict {
    TR_FSM_OK = 0,
    TR_FSM_STALE_EPOCH,   /* the run's owner epoch moved on: the sender is fenced */
    TR_FSM_BAD_SEQ,       /* seq is not the run's next: re-read the journal */
    TR_FSM_NO_RUN,        /* unknown run */
    TR_FSM_TERMINAL,      /* the run already ended (succeeded/failed/cancelled) */
    TR_FSM_EXISTS,        /* RunCreate: idempotency key seen with the same request */
    TR_FSM_CONFLICT,      /* RunCreate: idempotency key seen with another request */
    TR_FSM_INVALID,       /* malformed command or event */
    TR_FSM_NOT_PENDING,   /* ApprovalDecide: no such pending approval */
    TR_FSM_NOT_FOUND,     /* tool/tenant/key/node unknown */
};
const char *tr_fsm_verdict_name(int verdict);

/* Payload of TR_MSG_STATE_REPLY. status: TR_OK when the entry was committed
 * and applied (then `verdict` is the FSM's), else TR_ENOTLEADER, TR_ECLOSED,
 * TR_ETIMEDOUT, TR_EINVAL (unverifiable buffer: never proposed). */
struct tr_state_reply {
    int32_t status;
    int32_t verdict;         /* enum tr_fsm_verdict */
    uint64_t raft_index;     /* the entry's index (read-your-writes) */
    uint64_t run_id;         /* RunCreate: the run (new, or existing for EXISTS) */
    uint64_t seq;            /* append: the seq applied; else the run's last seq */
};

enum tr_state_note_kind {
    TR_NOTE_READY = 1,       /* startup replay done: scan the store for owned runs */
    TR_NOTE_RUN_CREATED,     /* a run was created with `owner` */
    TR_NOTE_RUN_EVENT,       /* the FSM itself journaled event `seq` of `type` (cancel, approval decided) */
    TR_NOTE_RUN_ASSIGNED,    /* the run moved to `owner` at `epoch` */
    TR_NOTE_RUN_ENDED,       /* the run reached a terminal status */
    TR_NOTE_TOOLS_CHANGED,   /* the tool registry changed */
    TR_NOTE_NODES_CHANGED,   /* the node table changed */
    TR_NOTE_FENCED,          /* no live leader for the fence time: stop every run actor now */
};

struct tr_state_note {
    int32_t kind;            /* enum tr_state_note_kind */
    int32_t event_type;      /* troupe.journal.Data tag for TR_NOTE_RUN_EVENT */
    uint64_t run_id;
    uint64_t owner;
    uint64_t epoch;
    uint64_t seq;
    uint64_t raft_index;
};


/* ---- opening the state service ------------------------------------------------ */

struct tr_store;
struct tr_store_opts;
struct tr_state;

struct tr_state_opts {
    uint64_t node_id;
    const char *data_dir;           /* holds db/ (RocksDB) and raft/ (the raft log) */
    const char *raft_address;       /* "host:port" */
    int bootstrap;                  /* new one-voter cluster if data_dir is pristine */
    tr_actor_id listener;           /* gets TR_MSG_STATE_NOTE; may be set later */
    const struct tr_store_opts *store_opts; /* NULL: defaults */
    unsigned election_timeout_ms;   /* 0: raft's default (see struct tr_raft_opts) */
    unsigned heartbeat_timeout_ms;
    unsigned snapshot_threshold;
    unsigned snapshot_trailing;
    uint32_t max_batch_appends;     /* appends per raft entry; 0 = 4096 */
    uint32_t max_batch_bytes;       /* bytes per raft entry; 0 = 4 MiB */
    uint32_t max_inflight;          /* raft entries in flight; 0 = 2 */
    int linger_ms;                  /* longest wait of a lazy append; 0 = 2, < 0: none */
    int no_compress;                /* big entries not LZ4-compressed (raft/entry.c) */
    int no_prefill;                 /* see struct tr_raft_opts */
    const unsigned char *cluster_key; /* see struct tr_raft_opts; NULL: none */
    /* Called when the store fails: the node must stop. NULL: log and abort. */
    void (*on_fatal)(void *ud, const char *msg);
    void *fatal_ud;
};

/* Open the store and raft on the calling scheduler's loop (call it from a
 * callback on the scheduler that will own raft: scheduler 0 by convention)
 * and spawn the service actor there. Everything is closed by tr_state_close;
 * the node calls it from a tr_rt_on_shutdown hook. */
int tr_state_open(struct tr_ctx *ctx, const struct tr_state_opts *opts, struct tr_state **out,
                  struct tr_err *err);
/* Close raft, then the store; cb(arg) when done (never from inside). */
void tr_state_close(struct tr_state *s, void (*cb)(void *arg), void *arg);

tr_actor_id tr_state_actor(struct tr_state *s);
struct tr_store *tr_state_store(struct tr_state *s);
/* The FSM the service applies through (raft/fsm.h; raft's thread only). */
struct tr_fsm;
struct tr_fsm *tr_state_fsm(struct tr_state *s);
struct tr_raft *tr_state_raft(struct tr_state *s);
void tr_state_set_listener(struct tr_state *s, tr_actor_id listener);
/* Live updates (the gateway's streams): cb(ud, index, run_ids, n) runs on the
 * service's loop right after entry `index` is committed to the store, with
 * the runs whose record the entry changed (every journal append changes
 * next_seq), each once however many events the entry added to it. Their
 * journal and record are readable when cb runs. cb must not propose or
 * re-enter the service; it should only note the runs and return. One
 * callback per service; cb NULL removes it. Loop thread only. */
typedef void (*tr_state_applied_fn)(void *ud, uint64_t index, const uint64_t *run_ids, size_t n);
void tr_state_on_applied(struct tr_state *s, tr_state_applied_fn cb, void *ud);
/* 1 while this node may act on its runs (TR_NOTE_READY sent; not fenced since). */
int tr_state_ready(struct tr_state *s);

/* Propose a troupe.cmd.Command (TRC1) from the service's own thread outside
 * any actor (the node's HTTP handlers). cmd is copied. cb runs once, later,
 * on that thread (never from inside this call), with the reply. */
typedef void (*tr_state_cb)(void *ud, const struct tr_state_reply *reply);
int tr_state_propose(struct tr_state *s, const void *cmd, size_t len, tr_state_cb cb, void *ud);

/* Group-commit statistics. */
struct tr_state_stats {
    uint64_t entries;       /* raft entries proposed */
    uint64_t appends;       /* journal appends proposed */
    uint64_t commands;      /* other commands proposed */
    uint64_t max_batch;     /* largest number of appends in one entry */
    uint64_t forwarded;     /* entries forwarded to the leader */
    uint64_t compressed;    /* entries proposed LZ4-compressed (raft/entry.c) */
    uint64_t polls;         /* readiness polls run (every 10 ms) */
};

/* ---- the cluster's seams ----------------------------------------------------------
 *
 * Followers. A follower cannot propose: with a forwarder set (cluster/), the
 * service hands each entry it would have proposed (an AppendBatch of the
 * appends queued in one loop turn, or one command) to the forwarder, which
 * sends it to the leader and completes it with tr_state_forward_done. The
 * requesters are answered as if the entry were proposed here, with one
 * difference: an answer that makes its requester re-read the store (a
 * command; an append refused with BAD_SEQ or STALE_EPOCH) is held until this
 * node has applied the entry. An OK append is answered at once.
 *
 * Liveness. With a forwarder set the node is "clustered": the forwarder
 * reports each sign of a live leader with tr_state_leader_contact, and how
 * long it vouches for (a deadline on the monotonic clock). A node past the
 * latest deadline it was given is fenced (TR_NOTE_FENCED to the listener)
 * and later ready again (TR_NOTE_READY); cluster/ decides the deadlines. */

struct tr_state_verdict {
    uint64_t seq;
    int32_t verdict;        /* enum tr_fsm_verdict */
};

/* The whole outcome of one entry. status as in struct tr_state_reply. */
struct tr_state_result {
    int32_t status;
    int32_t verdict;
    uint64_t raft_index;
    uint64_t run_id;
    uint64_t seq;
    uint32_t n_appends;                     /* AppendBatch: one verdict per append */
    const struct tr_state_verdict *appends; /* valid during the callback */
};

struct tr_state_fwd; /* one forwarded entry; completed exactly once */
/* Take cmd[0..len) (a verified Command; copy it) to the leader. TR_OK: f will
 * be completed later (never from inside this call); else the entry fails
 * with the returned status. */
typedef int (*tr_state_forward_fn)(void *ud, const void *cmd, size_t len, struct tr_state_fwd *f);
void tr_state_set_forwarder(struct tr_state *s, tr_state_forward_fn fn, void *ud);
void tr_state_forward_done(struct tr_state_fwd *f, const struct tr_state_result *res);
/* A sign of a live leader, good until until_us (uv_hrtime() / 1000); the
 * latest deadline given counts. */
void tr_state_leader_contact(struct tr_state *s, uint64_t commit_index, uint64_t until_us);
/* Thread-safe, for executors on any scheduler: 1 while this node may start a
 * side effect — it is ready and, in a cluster, before the deadline of its last
 * leader contact by the monotonic clock (so a node resumed after a SIGSTOP
 * answers 0 at once, before its loops notice anything). */
int tr_state_may_act(struct tr_state *s);
uint64_t tr_state_applied(struct tr_state *s);

/* The node table (written by NodeAdd/NodeUp/NodeDown/NodeDrain), read from
 * the store. state: enum troupe_state_NodeState. Addresses are "" when unknown. */
struct tr_node_rec {
    uint64_t id;
    int8_t state;
    uint32_t capacity;
    int64_t since_us;
    char raft_address[64], peer_address[64], client_address[64], http_address[64];
};
/* TR_ENOTFOUND when there is no such node. */
int tr_node_get(struct tr_store *st, uint64_t id, struct tr_node_rec *out);
/* Up to cap records in id order into out; *n gets the number found (may be
 * more than cap: only cap are written). */
int tr_node_list(struct tr_store *st, struct tr_node_rec *out, unsigned cap, unsigned *n);

/* Checkpoints: a mark in the log at which every node digests its state
 * (storage/storage.h tr_store_digest over a view as of the mark).
 * tr_state_checkpoint proposes one (forwarded on a follower); the reply's
 * raft_index names it. tr_state_digest_at answers, later and once, with this
 * node's digest at mark `index`: TR_OK, TR_ENOTFOUND (no such mark kept here:
 * too old — the last 8 are kept — or this node skipped it by snapshot),
 * TR_ETIMEDOUT (not applied within timeout_ms), TR_EIO, TR_ECLOSED. */
typedef void (*tr_state_digest_cb)(void *ud, int status, uint64_t index, const unsigned char *digest,
                                   uint64_t last_applied, const char *msg);
int tr_state_checkpoint(struct tr_state *s, tr_state_cb cb, void *ud);
/* Finish a troupe.cmd.Command around op in b, stamped by this node: the wall
 * clock (the only clock the FSM sees), raft's current term, this node as
 * leader and origin. Then tr_fb_builder_data(b) is the command to propose. */
struct tr_fb_builder;
void tr_state_command_finish(struct tr_state *s, struct tr_fb_builder *b, uint8_t op_type, uint32_t op);
/* Read-your-writes on any node: cb(ud, status) once this node has applied
 * raft index `index` (TR_OK), or TR_ETIMEDOUT after timeout_ms, TR_ECLOSED.
 * Never from inside this call: answered by the service's poll (10 ms). */
typedef void (*tr_state_wait_cb)(void *ud, int status);
int tr_state_wait_applied(struct tr_state *s, uint64_t index, unsigned timeout_ms, tr_state_wait_cb cb, void *ud);
int tr_state_digest_at(struct tr_state *s, uint64_t index, unsigned timeout_ms, tr_state_digest_cb cb, void *ud);

/* Leader only (TR_ENOTLEADER otherwise; never forwarded): propose cmd and get
 * the whole outcome — the leader's half of forwarding. */
typedef void (*tr_state_result_cb)(void *ud, const struct tr_state_result *res);
int tr_state_propose_full(struct tr_state *s, const void *cmd, size_t len, tr_state_result_cb cb, void *ud);
void tr_state_stats(struct tr_state *s, struct tr_state_stats *out);

/* Text form of a run id: "run_" + 16 lowercase hex digits (API.md "id"). */
#define TR_RUN_ID_TEXT_LEN 21
void tr_run_id_text(uint64_t id, char out[TR_RUN_ID_TEXT_LEN]);
int tr_run_id_from_text(const char *s, size_t len, uint64_t *out);

#endif /* TR_RAFT_H */
