/* Internals of the FSM shared by fsm.c (apply loop, commit, snapshots) and
 * the command handlers (fsm_runs.c, fsm_registry.c, fsm_nodes.c). */
#ifndef TR_RAFT_FSM_INT_H
#define TR_RAFT_FSM_INT_H

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

    /* Live updates: the runs the entry changed, for on_applied. */
    void (*on_applied)(void *ud, uint64_t index, const uint64_t *run_ids, size_t n);
    void *applied_ud;
    uint64_t *touched;
    uint32_t n_touched, cap_touched;

    struct tr_fsm_result ring[TR_FSM_RESULT_RING];
    uint64_t applied;
    int64_t now_us;            /* the command's time: the only clock the FSM reads */

    /* Snapshot in progress (raft calls snapshot, snapshot_async, finalize). */
    struct tr_store_view *snap_view;
    struct tr_snapshot_chunk *snap_chunks;
    unsigned snap_n;
    struct raft_buffer *snap_bufs;
    int snap_rv;
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
int fsm_node_state(struct tr_fsm *f, uint64_t node_id, int8_t state);
int fsm_node_down(struct tr_fsm *f, const struct troupe_cmd_NodeDown *c);
int fsm_node_drain(struct tr_fsm *f, const struct troupe_cmd_NodeDrain *c);

/* Read a record from the store into a tr_malloc'd buffer; TR_ENOTFOUND. */
int fsm_get(struct tr_fsm *f, enum tr_cf cf, const void *key, size_t klen, void **val, size_t *vlen);
/* Queue a put into the entry's batch; a refused put is fatal for the entry. */
void fsm_put(struct tr_fsm *f, enum tr_cf cf, const void *key, size_t klen, const void *val,
             size_t vlen);

/* The approvals key is the approval id itself. */
#define FSM_NODE_PREFIX "node/"
#define FSM_KEY_PREFIX "key/"

#endif /* TR_RAFT_FSM_INT_H */
