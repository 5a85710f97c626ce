/* Private to raft/: the FSM that applies committed commands to the store,
 * and the codec of the records it keeps. cluster/ uses only the read-only
 * placement and rebalancing section at the end, on raft's thread. */
#ifndef TR_RAFT_FSM_H
#define TR_RAFT_FSM_H

#include <stdbool.h>
#include <stdint.h>

#include <raft.h>

#include "raft/raft.h"
#include "schemas/schemas.h"
#include "storage/storage.h"

/* ---- records ---------------------------------------------------------------- */

/* A decoded troupe.journal.AgentConfig; owns its strings. */
struct agent_rec {
    bool present;
    char *model;
    char *system;
    char *provider;
    char **tools;
    uint32_t n_tools;
    uint32_t max_steps;
    uint64_t max_tokens;
    double max_cost_usd;
    uint32_t timeout_s;
    float temperature;
};

/* A decoded troupe.state.Run; owns its strings. */
struct run_rec {
    uint64_t key;               /* the numeric run id */
    char *run_id;
    char *tenant;
    char *goal;
    char *metadata;
    char *idempotency_key;
    char *created_by;
    char *output;
    char *error;
    char *error_code;
    char *pending_approval;
    struct agent_rec agent;
    int8_t status;              /* enum troupe_journal_RunStatus */
    uint64_t owner_node;
    uint64_t epoch;
    uint64_t next_seq;
    uint64_t last_writer;       /* Append.writer of the event at next_seq - 1 (0: none) */
    uint32_t step;
    uint64_t prompt_tokens;
    uint64_t completion_tokens;
    uint64_t cost_micro_usd;
    int64_t created_at_us;
    int64_t updated_at_us;
    bool cancel_requested;
};

/* Verify and decode a stored Run; TR_ECORRUPT when it does not verify. */
int tr_run_rec_decode(const void *buf, size_t len, struct run_rec *out);
/* Build r into b (reset first) and finish it with identifier TRR1. */
void tr_run_rec_encode(const struct run_rec *r, struct tr_fb_builder *b);
void tr_run_rec_free(struct run_rec *r);
bool tr_run_status_terminal(int8_t status);

/* Copy a reader's AgentConfig (may be NULL) into a record. */
struct troupe_journal_AgentConfig;
void tr_agent_rec_from(struct agent_rec *a, const struct troupe_journal_AgentConfig *cfg);
/* Build an AgentConfig table from a record; 0 when absent. */
tr_fb_ref tr_agent_rec_build(struct tr_fb_builder *b, const struct agent_rec *a);
void tr_agent_rec_free(struct agent_rec *a);

/* The 8-byte big-endian key of TR_CF_RUNS. */
void tr_run_key(uint64_t id, unsigned char out[8]);

/* ---- the FSM ---------------------------------------------------------------- */

struct tr_fsm_append_result {
    int32_t verdict;
    uint64_t seq;
};

/* What one applied entry produced. Owned by the FSM: valid until
 * TR_FSM_RESULT_RING more entries are applied (the proposer copies it in its
 * callback, which raft 0.15 runs right after the apply). */
struct tr_fsm_result {
    uint64_t index;
    int32_t verdict;            /* for single commands */
    uint64_t run_id;            /* RunCreate */
    uint64_t seq;               /* run's last seq after the command */
    uint32_t version;           /* ToolRegister: the tool version */
    uint32_t n_appends;         /* AppendBatch: one verdict per append, in order */
    struct tr_fsm_append_result *appends;
    uint32_t cap_appends;
};
#define TR_FSM_RESULT_RING 64

struct tr_fsm;

struct tr_fsm_opts {
    struct tr_store *store;
    struct tr_rt *rt;
    tr_actor_id listener;       /* receives TR_MSG_STATE_NOTE; 0 = nobody */
    /* Called when the store fails a write: the node must stop (fail-stop;
     * raft re-applies on restart). Default: log and abort(). */
    void (*on_fatal)(void *ud, const char *msg);
    void *ud;
};

/* A new FSM over opts->store. *out owns the struct raft_fsm it returns. */
struct raft_fsm *tr_fsm_new(const struct tr_fsm_opts *opts, struct tr_fsm **out);
/* The raft instance whose entries it applies (for entry indexes). */
void tr_fsm_set_raft(struct tr_fsm *f, struct raft *raft);
void tr_fsm_set_listener(struct tr_fsm *f, tr_actor_id listener);
/* After each committed entry: the runs it changed (tr_state_on_applied). */
typedef void (*tr_fsm_applied_fn)(void *ud, uint64_t index, const uint64_t *run_ids, size_t n);
void tr_fsm_on_applied(struct tr_fsm *f, tr_fsm_applied_fn cb, void *ud);
/* When a Checkpoint command is applied, at its index, before anything after
 * it: cb(ud, index). The store then holds exactly the state as of it. */
void tr_fsm_on_checkpoint(struct tr_fsm *f, void (*cb)(void *ud, uint64_t index), void *ud);
void tr_fsm_free(struct tr_fsm *f);
/* Entries applied through this FSM since it was created (skipped ones too). */
uint64_t tr_fsm_applied(struct tr_fsm *f);

/* Raft snapshots taken through this FSM; safe from any thread. */
struct tr_fsm_snap_stats {
    uint64_t taken;             /* views opened (fsm->snapshot, on the loop) */
    uint64_t written;           /* serialised and flushed (snapshot_async succeeded) */
    uint64_t failed;            /* snapshot_async failed */
    uint64_t finalized;         /* released (snapshot_finalize, on the loop) */
    int running;                /* snapshot_async is running on the thread pool now */
    uint64_t last_index;        /* store last_applied of the last snapshot written */
    uint64_t last_bytes;        /* its size */
};
void tr_fsm_snap_stats(struct tr_fsm *f, struct tr_fsm_snap_stats *out);

/* ---- placement, read-only (raft's thread, between entries) ----
 * The FSM places runs created with owner_node 0 and moves the runs of Down
 * and Draining nodes itself (rules at the top of raft/fsm_nodes.c), from an
 * in-memory load index it builds from the store on first use.
 *
 * tr_fsm_node_load: node id's state (troupe_state_NodeState_*), capacity
 * (0 = unlimited) and active runs (non-terminal runs it owns). TR_OK;
 * TR_ENOTFOUND when id is not in the node table (then *state is -1 and
 * *active the runs it still owns, e.g. before it registered); or a store
 * error building the index (already reported through on_fatal). */
int tr_fsm_node_load(struct tr_fsm *f, uint64_t id, uint32_t *active, uint32_t *capacity, int8_t *state);
/* The smallest registered node id above `after` (0 to start); 0 at the end. */
uint64_t tr_fsm_node_next(struct tr_fsm *f, uint64_t after);
/* Of node id's active runs, how many are still in status Queued (no owner
 * append yet); 0 for an unknown node or when the index cannot be built. */
uint32_t tr_fsm_node_queued(struct tr_fsm *f, uint64_t id);

/* ---- rebalancing queued runs (the cluster leader, raft's thread) ----
 * A run placed on a full node waits there `queued`; when another Up node has
 * room, the leader moves it with RunReassign{only_if_queued} (rules at the
 * top of raft/fsm_nodes.c). tr_fsm_rebalance_plan proposes nothing itself:
 * it fills out[0..cap) with moves, oldest run first, each against the run's
 * current owner and epoch (epoch is the new one: current + 1), leaving out
 * the runs of `pending` (moves proposed and not answered yet, whose `to`
 * already counts as taken room and whose `from` as given up). Receivers are
 * Up nodes with room for which may_receive(ud, id) is nonzero (NULL: all);
 * donors are Up nodes with more active runs than their capacity, and give
 * only the queued runs beyond it (their owner admits the oldest ones
 * itself). Returns the number of moves. */
struct tr_fsm_move {
    uint64_t run_id;
    uint64_t from;
    uint64_t to;
    uint64_t epoch;
};
uint32_t tr_fsm_rebalance_plan(struct tr_fsm *f, const struct tr_fsm_move *pending, uint32_t n_pending,
                               int (*may_receive)(void *ud, uint64_t node), void *ud, struct tr_fsm_move *out,
                               uint32_t cap);

/* Apply one Command buffer at raft index `index` (what fsm->apply does; also
 * the seam for tests without raft). */
int tr_fsm_apply_at(struct tr_fsm *f, uint64_t index, const void *buf, size_t len,
                    struct tr_fsm_result **result);

#endif /* TR_RAFT_FSM_H */
