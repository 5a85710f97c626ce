/* Internals of the FSM shared by fsm.c (apply loop, commit, snapshots) and
 * the command handlers (fsm_runs.c, fsm_registry.c, fsm_nodes.c). */
#ifndef TR_RAFT_FSM_INT_H
#define TR_RAFT_FSM_INT_H

#include <stdatomic.h>

#include "raft/fsm.h"
#include "schemas/command_generated.h"
#include "schemas/journal_generated.h"
#include "schemas/state_generated.h"

/* A run touched by the entry being applied: loaded once, written back once
 * when the entry commits. */
struct run_slot {
    struct run_rec rec;
    bool dirty;
    bool is_new;
};

/* The load index (fsm_nodes.c): derived from the store, kept in memory,
 * identical on every replica. Nodes are kept sorted by id; an entry exists
 * for every registered node and for every unregistered id that still owns
 * active runs. Active runs (non-terminal) map run key -> owner in an
 * open-addressing table (linear probing, key 0 = empty: run ids are > 0). */
struct fsm_node_load {
    uint64_t id;
    uint32_t capacity;          /* 0 = unlimited */
    uint32_t active;            /* non-terminal runs it owns */
    uint32_t queued;            /* of those, still in status Queued (no owner append yet) */
    int8_t state;               /* troupe_state_NodeState_*; FSM_NODE_UNREGISTERED */
};
#define FSM_NODE_UNREGISTERED ((int8_t)-1)

struct fsm_load {
    bool valid;                 /* false: rebuild from the store before use */
    struct fsm_node_load *nodes;
    uint32_t n_nodes, cap_nodes;
    uint64_t *run_keys;         /* run_cap slots; 0 = empty */
    uint64_t *run_owners;
    int64_t *run_created;       /* the run's created_at_us (rebalancing: oldest first) */
    uint8_t *run_queued;        /* 1 while its status is Queued */
    uint32_t run_cap;           /* power of two, or 0 */
    uint32_t n_active;
};

struct tr_fsm {
    struct raft_fsm fsm;
    struct tr_store *store;
    struct tr_rt *rt;
    tr_actor_id listener;
    struct raft *raft;
    void (*on_fatal)(void *ud, const char *msg);
    void *ud;

    struct tr_batch *batch;
    struct tr_fb_builder b;    /* records */
    struct tr_fb_builder eb;   /* events the FSM journals itself */

    /* Runs of the current entry: slots plus an open-addressing index. */
    struct run_slot *runs;
    uint32_t n_runs, cap_runs;
    int32_t *index;            /* slot number + 1, 0 = empty */
    uint32_t index_cap;        /* power of two, > 2 * cap_runs */

    struct tr_state_note *notes;
    uint32_t n_notes, cap_notes;

    /* Run records as last written or read (fsm.c "record cache"): key ->
     * encoded bytes, open addressing, no deletion (emptied when half full).
     * Valid while the runs family's generation is rc_gen. */
    struct rc_ent {
        uint64_t key;          /* 0: empty (run keys are > 0) */
        void *val;
        size_t len;
    } *rc;
    uint32_t rc_cap, rc_n;     /* rc_cap: power of two */
    uint64_t rc_gen;

    /* Live updates: the runs the entry changed, for on_applied. */
    void (*on_applied)(void *ud, uint64_t index, const uint64_t *run_ids, size_t n);
    void *applied_ud;
    /* Checkpoint commands: the state service takes a digest as of them. */
    void (*on_checkpoint)(void *ud, uint64_t index);
    void *checkpoint_ud;
    uint64_t *touched;
    uint32_t n_touched, cap_touched;

    struct tr_fsm_result ring[TR_FSM_RESULT_RING];
    uint64_t applied;
    int64_t now_us;            /* the command's time: the only clock the FSM reads */
    uint64_t origin_node;      /* the command's origin_node, else its leader_node */

    struct fsm_load load;      /* placement (fsm_nodes.c) */

    /* Snapshot in progress (raft calls snapshot, snapshot_async, finalize:
     * see fsm.c for which thread touches what) and counters for
     * tr_fsm_snap_stats, atomic because snapshot_async runs on the pool. */
    struct tr_store_view *snap_view;
    struct tr_snapshot_chunk *snap_chunks;
    unsigned snap_n;
    struct raft_buffer *snap_bufs;
    atomic_uint_fast64_t snap_taken, snap_written, snap_failed, snap_finalized;
    atomic_uint_fast64_t snap_last_index, snap_last_bytes;
    atomic_int snap_running;
};

/* The run with numeric id `key`, loaded into this entry's cache; NULL when
 * the store has none (or it is corrupt: logged). */
struct run_slot *fsm_run_get(struct tr_fsm *f, uint64_t key);
/* A new run slot for `key` (must not exist). */
struct run_slot *fsm_run_new(struct tr_fsm *f, uint64_t key);
/* Queue a note for the listener, sent after the entry commits. */
void fsm_note(struct tr_fsm *f, int kind, const struct run_rec *r, int event_type, uint64_t seq);

/* Journal an event built by the FSM itself at the run's next seq. `data` is
 * the union member already built in f->eb (call fsm_event_begin first). */
void fsm_event_begin(struct tr_fsm *f);
uint64_t fsm_event_commit(struct tr_fsm *f, struct run_slot *s, uint8_t type, tr_fb_ref data);

/* Command handlers: return a verdict; fill res where documented. */
int fsm_run_create(struct tr_fsm *f, const struct troupe_cmd_RunCreate *c, struct tr_fsm_result *res);
void fsm_append_batch(struct tr_fsm *f, const struct troupe_cmd_AppendBatch *c, struct tr_fsm_result *res);
int fsm_approval_decide(struct tr_fsm *f, const struct troupe_cmd_ApprovalDecide *c, struct tr_fsm_result *res);
int fsm_run_cancel(struct tr_fsm *f, const struct troupe_cmd_RunCancel *c, struct tr_fsm_result *res);
int fsm_run_reassign(struct tr_fsm *f, const struct troupe_cmd_RunReassign *c, struct tr_fsm_result *res);
int fsm_tool_register(struct tr_fsm *f, const struct troupe_cmd_ToolRegister *c, struct tr_fsm_result *res);
int fsm_tool_set_enabled(struct tr_fsm *f, const struct troupe_cmd_ToolSetEnabled *c);
int fsm_tenant_create(struct tr_fsm *f, const struct troupe_cmd_TenantCreate *c);
int fsm_tenant_update(struct tr_fsm *f, const struct troupe_cmd_TenantUpdate *c);
int fsm_key_create(struct tr_fsm *f, const struct troupe_cmd_KeyCreate *c);
int fsm_key_revoke(struct tr_fsm *f, const struct troupe_cmd_KeyRevoke *c);
/* Add the usage of the batch's accepted llm.completed events to their
 * tenants' spend (fsm_registry.c); called once at the end of an AppendBatch. */
void fsm_tenants_account(struct tr_fsm *f, const struct troupe_cmd_AppendBatch *c, const struct tr_fsm_result *res);
int fsm_node_add(struct tr_fsm *f, const struct troupe_cmd_NodeAdd *c);
int fsm_node_up(struct tr_fsm *f, const struct troupe_cmd_NodeUp *c);
int fsm_node_down(struct tr_fsm *f, const struct troupe_cmd_NodeDown *c);
int fsm_node_drain(struct tr_fsm *f, const struct troupe_cmd_NodeDrain *c);
int fsm_node_remove(struct tr_fsm *f, const struct troupe_cmd_NodeRemove *c);

/* An explicit RunReassign (also inside NodeDown/NodeDrain), journaled with
 * reason `why`; res may be NULL. */
int fsm_reassign_cmd(struct tr_fsm *f, const struct troupe_cmd_RunReassign *c, const char *why,
                     struct tr_fsm_result *res);
/* Move the active run in slot s to node `to` at epoch + 1: journal
 * run.assigned (reason `why`), note TR_NOTE_RUN_ASSIGNED, update the load
 * index. Returns the event's seq. */
uint64_t fsm_run_move(struct tr_fsm *f, struct run_slot *s, uint64_t to, const char *why);

/* ---- the load index (fsm_nodes.c) ----
 * Build it from the store if it is not valid (then fold in the runs this
 * entry already changed); TR_OK or a store error (already reported fatal). */
int fsm_load_ensure(struct tr_fsm *f);
/* Forget it: rebuilt on next use (after a snapshot restore, a failed commit). */
void fsm_load_invalidate(struct tr_fsm *f);
void fsm_load_free(struct tr_fsm *f);
/* Bring the index in line with run record r (active or not, its owner). A
 * no-op while the index is not valid. Idempotent. */
void fsm_load_sync_run(struct tr_fsm *f, const struct run_rec *r);
/* Placement: the Up node with the lowest load, `exclude` left out; 0 when no
 * node is Up. The index must be valid. */
uint64_t fsm_load_pick(struct tr_fsm *f, uint64_t exclude);
/* Number of registered nodes (any state). The index must be valid. */
uint32_t fsm_load_registered(struct tr_fsm *f);
/* Rebalancing guard (RunReassign with only_if_queued): true when `from` is
 * Up and still holds more active runs than its capacity (> 0), and `to` is
 * another Up node with room (capacity 0, or active < capacity). */
bool fsm_load_may_rebalance(struct tr_fsm *f, uint64_t from, uint64_t to);

/* Read a record from the store into a tr_malloc'd buffer; TR_ENOTFOUND. */
int fsm_get(struct tr_fsm *f, enum tr_cf cf, const void *key, size_t klen, void **val, size_t *vlen);
/* Queue a put into the entry's batch; a refused put is fatal for the entry. */
void fsm_put(struct tr_fsm *f, enum tr_cf cf, const void *key, size_t klen, const void *val,
             size_t vlen);
/* Queue a delete into the entry's batch. */
void fsm_delete(struct tr_fsm *f, enum tr_cf cf, const void *key, size_t klen);

/* The approvals key is the approval id itself. */
#define FSM_NODE_PREFIX "node/"
#define FSM_KEY_PREFIX "key/"

#endif /* TR_RAFT_FSM_INT_H */
