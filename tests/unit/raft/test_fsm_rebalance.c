/* Rebalancing queued runs in the FSM (raft/fsm_nodes.c, raft/fsm_runs.c),
 * driven through tr_fsm_apply_at on a real RocksDB store in a temporary
 * directory; the FSM's notes go to a real listener actor on a deterministic
 * runtime.
 *
 * What is checked:
 *  - RunReassign with only_if_queued is applied while the run is Queued, its
 *    owner over capacity and the target Up with room: owner and epoch + 1 in
 *    the record, run.assigned with reason "rebalanced", TR_NOTE_RUN_ASSIGNED;
 *    the old owner's appends are then refused STALE_EPOCH (an owner that had
 *    admitted the run is fenced), the new owner's accepted;
 *  - it is refused, changing nothing, once the run is running or waiting for
 *    approval (STALE_EPOCH), terminal (TERMINAL), when the epoch or from_node
 *    is stale, the target is full, Draining or Down, or the owner is no longer
 *    over capacity; the same command without the flag still moves a running
 *    run (failover's explicit reassignments are unchanged);
 *  - tr_fsm_rebalance_plan: the queued runs beyond the owner's capacity,
 *    oldest first by created_at (not run id), at most the receivers' room,
 *    to the least-loaded receiver; pending moves are left out and their room
 *    counted; may_receive can exclude a node; after the moves apply a new
 *    plan is empty (nothing travels back);
 *  - the queued counts and the plan are the same from an index rebuilt from
 *    the store. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "harness.h"

#include "raft/fsm.h"
#include "raft/raft.h"
#include "schemas/command_generated.h"
#include "schemas/journal_generated.h"
#include "schemas/state_generated.h"
#include "storage/storage.h"

/* ---- the listener: a real actor on a deterministic runtime -------------------- */

#define MAX_NOTES 4096
static struct tr_state_note notes[MAX_NOTES];
static int n_notes;
static struct tr_rt *rt;
static tr_actor_id listener;

static int listener_receive(struct tr_ctx *ctx, void *state, struct tr_msg *m)
{
    (void)ctx;
    (void)state;
    if (m->type == TR_MSG_STATE_NOTE && m->len == sizeof(struct tr_state_note) && n_notes < MAX_NOTES)
        memcpy(&notes[n_notes++], m->data, sizeof(struct tr_state_note));
    return 0;
}

static const struct tr_behavior listener_behavior = { .name = "notes", .receive = listener_receive };

static int count_assigned(uint64_t run_id, uint64_t owner, uint64_t epoch)
{
    int n = 0;
    for (int i = 0; i < n_notes; i++)
        if (notes[i].kind == TR_NOTE_RUN_ASSIGNED && notes[i].run_id == run_id && notes[i].owner == owner &&
            notes[i].epoch == epoch)
            n++;
    return n;
}

/* ---- an FSM over a store ---------------------------------------------------------- */

struct env {
    char *dir;
    char path[160];
    struct tr_store *store;
    struct tr_fsm *fsm;
    uint64_t index;
    int64_t now_us;             /* each command's time: one microsecond later than the last */
};

static void on_fatal(void *ud, const char *msg)
{
    (void)ud;
    fail_msg("fsm fatal: %s", msg);
}

static void fsm_open(struct env *e)
{
    struct tr_fsm_opts o = { .store = e->store, .rt = rt, .listener = listener, .on_fatal = on_fatal };
    assert_non_null(tr_fsm_new(&o, &e->fsm));
}

static void env_open(struct env *e, const char *tag)
{
    memset(e, 0, sizeof *e);
    n_notes = 0;
    e->dir = h_tmpdir(tag);
    assert_non_null(e->dir);
    snprintf(e->path, sizeof e->path, "%s/db", e->dir);
    assert_int_equal(tr_store_open(e->path, NULL, &e->store, NULL), TR_OK);
    e->index = tr_store_last_applied(e->store);
    e->now_us = 1700000000000000LL;
    fsm_open(e);
}

static void env_close(struct env *e)
{
    tr_fsm_free(e->fsm);
    tr_store_close(e->store);
    h_tmpdir_remove(e->dir);
}

/* A new FSM over the reopened store: its load index is rebuilt on first use. */
static void env_reopen(struct env *e)
{
    tr_fsm_free(e->fsm);
    tr_store_close(e->store);
    assert_int_equal(tr_store_open(e->path, NULL, &e->store, NULL), TR_OK);
    fsm_open(e);
}

static void finish(struct env *e, struct tr_fb_builder *b, uint8_t type, tr_fb_ref op)
{
    troupe_cmd_Command_start(b);
    troupe_cmd_Command_add_time_us(b, ++e->now_us);
    troupe_cmd_Command_add_leader_node(b, 1);
    troupe_cmd_Command_add_origin_node(b, 1);
    troupe_cmd_Command_add_op_type(b, type);
    troupe_cmd_Command_add_op(b, op);
    troupe_cmd_Command_finish(b, troupe_cmd_Command_end(b));
}

/* Apply the Command in b (then free b); the verdict (an AppendBatch's first). */
static int apply_b(struct env *e, struct tr_fb_builder *b)
{
    size_t len;
    const uint8_t *buf = tr_fb_builder_data(b, &len);
    struct tr_fsm_result *res;
    assert_int_equal(tr_fsm_apply_at(e->fsm, ++e->index, buf, len, &res), TR_OK);
    int v = res->n_appends > 0 ? res->appends[0].verdict : res->verdict;
    tr_fb_builder_free(b);
    tr_rt_run_until_idle(rt, 0);
    return v;
}

/* ---- commands ------------------------------------------------------------------------ */

static int node_add(struct env *e, uint64_t id, uint32_t capacity)
{
    struct tr_fb_builder b;
    tr_fb_builder_init(&b);
    troupe_cmd_NodeAdd_start(&b);
    troupe_cmd_NodeAdd_add_node_id(&b, id);
    troupe_cmd_NodeAdd_add_capacity(&b, capacity);
    finish(e, &b, troupe_cmd_Op_NodeAdd, troupe_cmd_NodeAdd_end(&b));
    return apply_b(e, &b);
}

/* NodeDrain, NodeDown or NodeUp of id. */
static int node_state(struct env *e, uint64_t id, uint8_t op)
{
    struct tr_fb_builder b;
    tr_fb_builder_init(&b);
    tr_fb_ref ref;
    if (op == troupe_cmd_Op_NodeDrain) {
        troupe_cmd_NodeDrain_start(&b);
        troupe_cmd_NodeDrain_add_node_id(&b, id);
        ref = troupe_cmd_NodeDrain_end(&b);
    } else if (op == troupe_cmd_Op_NodeDown) {
        troupe_cmd_NodeDown_start(&b);
        troupe_cmd_NodeDown_add_node_id(&b, id);
        ref = troupe_cmd_NodeDown_end(&b);
    } else {
        troupe_cmd_NodeUp_start(&b);
        troupe_cmd_NodeUp_add_node_id(&b, id);
        ref = troupe_cmd_NodeUp_end(&b);
    }
    finish(e, &b, op, ref);
    return apply_b(e, &b);
}

static int run_create(struct env *e, uint64_t id, uint64_t owner)
{
    struct tr_fb_builder b;
    char text[TR_RUN_ID_TEXT_LEN];
    tr_fb_builder_init(&b);
    tr_run_id_text(id, text);
    tr_fb_ref rid = tr_fb_create_str(&b, text);
    tr_fb_ref tenant = tr_fb_create_str(&b, "acme");
    tr_fb_ref goal = tr_fb_create_str(&b, "count the sheep");
    troupe_cmd_RunCreate_start(&b);
    troupe_cmd_RunCreate_add_run_id(&b, rid);
    troupe_cmd_RunCreate_add_tenant(&b, tenant);
    troupe_cmd_RunCreate_add_goal(&b, goal);
    troupe_cmd_RunCreate_add_owner_node(&b, owner);
    troupe_cmd_RunCreate_add_epoch(&b, 1);
    finish(e, &b, troupe_cmd_Op_RunCreate, troupe_cmd_RunCreate_end(&b));
    return apply_b(e, &b);
}

static int reassign(struct env *e, uint64_t run, uint64_t from, uint64_t to, uint64_t epoch, bool only_if_queued)
{
    struct tr_fb_builder b;
    char text[TR_RUN_ID_TEXT_LEN];
    tr_fb_builder_init(&b);
    tr_run_id_text(run, text);
    tr_fb_ref rid = tr_fb_create_str(&b, text);
    troupe_cmd_RunReassign_start(&b);
    troupe_cmd_RunReassign_add_run_id(&b, rid);
    troupe_cmd_RunReassign_add_from_node(&b, from);
    troupe_cmd_RunReassign_add_to_node(&b, to);
    troupe_cmd_RunReassign_add_epoch(&b, epoch);
    if (only_if_queued)
        troupe_cmd_RunReassign_add_only_if_queued(&b, true);
    finish(e, &b, troupe_cmd_Op_RunReassign, troupe_cmd_RunReassign_end(&b));
    return apply_b(e, &b);
}

static int rebalance(struct env *e, const struct tr_fsm_move *m)
{
    return reassign(e, m->run_id, m->from, m->to, m->epoch, true);
}

enum ev_kind { EV_LLM, EV_APPROVAL, EV_END };

/* One owner append at (epoch, seq); the verdict. */
static int run_append(struct env *e, uint64_t id, uint64_t epoch, uint64_t seq, enum ev_kind kind)
{
    struct tr_fb_builder eb, b;
    char text[TR_RUN_ID_TEXT_LEN], approval[48];
    tr_run_id_text(id, text);
    tr_fb_builder_init(&eb);
    tr_fb_ref data;
    uint8_t type;
    if (kind == EV_END) {
        tr_fb_ref o = tr_fb_create_str(&eb, "42 sheep");
        troupe_journal_RunSucceeded_start(&eb);
        troupe_journal_RunSucceeded_add_output(&eb, o);
        data = troupe_journal_RunSucceeded_end(&eb);
        type = troupe_journal_Data_RunSucceeded;
    } else if (kind == EV_APPROVAL) {
        snprintf(approval, sizeof approval, "apr_%016llx_%llu", (unsigned long long)id, (unsigned long long)seq);
        tr_fb_ref aid = tr_fb_create_str(&eb, approval);
        tr_fb_ref tool = tr_fb_create_str(&eb, "payment");
        troupe_journal_ApprovalRequested_start(&eb);
        troupe_journal_ApprovalRequested_add_approval_id(&eb, aid);
        troupe_journal_ApprovalRequested_add_tool(&eb, tool);
        troupe_journal_ApprovalRequested_add_step(&eb, 1);
        data = troupe_journal_ApprovalRequested_end(&eb);
        type = troupe_journal_Data_ApprovalRequested;
    } else {
        troupe_journal_LlmRequested_start(&eb);
        troupe_journal_LlmRequested_add_step(&eb, 1);
        data = troupe_journal_LlmRequested_end(&eb);
        type = troupe_journal_Data_LlmRequested;
    }
    tr_fb_ref erid = tr_fb_create_str(&eb, text);
    troupe_journal_Event_start(&eb);
    troupe_journal_Event_add_seq(&eb, seq);
    troupe_journal_Event_add_time_us(&eb, e->now_us);
    troupe_journal_Event_add_run_id(&eb, erid);
    troupe_journal_Event_add_epoch(&eb, epoch);
    troupe_journal_Event_add_data_type(&eb, type);
    troupe_journal_Event_add_data(&eb, data);
    troupe_journal_Event_finish(&eb, troupe_journal_Event_end(&eb));
    size_t elen;
    const uint8_t *ev = tr_fb_builder_data(&eb, &elen);

    tr_fb_builder_init(&b);
    tr_fb_ref rid = tr_fb_create_str(&b, text);
    tr_fb_ref evr = tr_fb_create_bytes(&b, ev, elen);
    troupe_cmd_Append_start(&b);
    troupe_cmd_Append_add_run_id(&b, rid);
    troupe_cmd_Append_add_epoch(&b, epoch);
    troupe_cmd_Append_add_seq(&b, seq);
    troupe_cmd_Append_add_event(&b, evr);
    tr_fb_ref a = troupe_cmd_Append_end(&b);
    tr_fb_ref vec = troupe_cmd_AppendBatch_create_appends(&b, &a, 1);
    troupe_cmd_AppendBatch_start(&b);
    troupe_cmd_AppendBatch_add_appends(&b, vec);
    finish(e, &b, troupe_cmd_Op_AppendBatch, troupe_cmd_AppendBatch_end(&b));
    tr_fb_builder_free(&eb);
    return apply_b(e, &b);
}

/* ---- reading the store ----------------------------------------------------------------- */

struct run_view {
    uint64_t owner, epoch, last_seq;
    int8_t status;
};

static struct run_view run_view(struct env *e, uint64_t id)
{
    unsigned char k[8];
    void *val;
    size_t vlen;
    struct run_rec r;
    tr_run_key(id, k);
    assert_int_equal(tr_store_get(e->store, NULL, TR_CF_RUNS, k, 8, &val, &vlen, NULL), TR_OK);
    assert_int_equal(tr_run_rec_decode(val, vlen, &r), TR_OK);
    tr_free(val);
    struct run_view v = { r.owner_node, r.epoch, 0, r.status };
    tr_run_rec_free(&r);
    assert_int_equal(tr_journal_last_seq(e->store, NULL, id, &v.last_seq, NULL), TR_OK);
    return v;
}

/* The last journal event of run id is run.assigned at `epoch`, from
 * `previous` to `owner`, for `reason`. */
static void assert_last_assigned(struct env *e, uint64_t id, uint64_t previous, uint64_t owner, uint64_t epoch,
                                 const char *reason)
{
    struct run_view v = run_view(e, id);
    struct tr_journal_iter *it;
    assert_int_equal(tr_journal_iter_open(e->store, NULL, id, v.last_seq, &it, NULL), TR_OK);
    uint64_t seq;
    const void *ev;
    size_t len;
    assert_int_equal(tr_journal_iter_next(it, &seq, &ev, &len, NULL), 1);
    const struct troupe_journal_Event *E = troupe_journal_Event_verify_as_root(ev, len, NULL);
    assert_non_null(E);
    assert_int_equal(troupe_journal_Event_data_type(E), troupe_journal_Data_RunAssigned);
    assert_int_equal(troupe_journal_Event_epoch(E), epoch);
    const struct troupe_journal_RunAssigned *ra = troupe_journal_Event_data_as_RunAssigned(E);
    assert_int_equal(troupe_journal_RunAssigned_owner_node(ra), owner);
    assert_int_equal(troupe_journal_RunAssigned_previous_owner(ra), previous);
    struct tr_fb_str why = troupe_journal_RunAssigned_reason(ra);
    assert_int_equal(why.len, strlen(reason));
    assert_memory_equal(why.ptr, reason, why.len);
    tr_journal_iter_close(it);
}

static uint32_t active_of(struct env *e, uint64_t node)
{
    uint32_t active, cap;
    int8_t state;
    int rv = tr_fsm_node_load(e->fsm, node, &active, &cap, &state);
    assert_true(rv == TR_OK || rv == TR_ENOTFOUND);
    return active;
}

static uint32_t plan(struct env *e, const struct tr_fsm_move *pending, uint32_t n_pending,
                     int (*may)(void *, uint64_t), struct tr_fsm_move *out, uint32_t cap)
{
    return tr_fsm_rebalance_plan(e->fsm, pending, n_pending, may, NULL, out, cap);
}

static int refuse_node_2(void *ud, uint64_t node)
{
    (void)ud;
    return node != 2;
}

/* ---- tests ------------------------------------------------------------------------------------ */

static int setup(void **st)
{
    (void)st;
    struct tr_rt_opts o = { .deterministic = 1, .seed = 11 };
    if (tr_rt_new(&o, &rt) != TR_OK)
        return -1;
    struct tr_spawn_opts so = { .behavior = &listener_behavior };
    if (tr_spawn(rt, &so, &listener) != TR_OK)
        return -1;
    tr_rt_run_until_idle(rt, 0);
    n_notes = 0;
    return 0;
}

static int teardown(void **st)
{
    (void)st;
    tr_rt_shutdown(rt);
    rt = NULL;
    return 0;
}

/* Node 1 (capacity 1) holds run 100, running, and runs 101..103, queued;
 * node 2 (capacity 2) is empty. */
static void full_and_empty(struct env *e, const char *tag)
{
    env_open(e, tag);
    assert_int_equal(node_add(e, 1, 1), TR_FSM_OK);
    assert_int_equal(node_add(e, 2, 2), TR_FSM_OK);
    for (uint64_t id = 100; id <= 103; id++)
        assert_int_equal(run_create(e, id, 1), TR_FSM_OK);
    assert_int_equal(run_append(e, 100, 1, 2, EV_LLM), TR_FSM_OK);
    assert_int_equal(active_of(e, 1), 4);
    assert_int_equal(tr_fsm_node_queued(e->fsm, 1), 3);
    assert_int_equal(tr_fsm_node_queued(e->fsm, 2), 0);
}

/* Applied while queued; the old owner, had it admitted the run, is fenced. */
static void test_only_if_queued_applies_when_queued(void **st)
{
    (void)st;
    struct env e;
    full_and_empty(&e, "rebalance-apply");
    assert_int_equal(reassign(&e, 101, 1, 2, 2, true), TR_FSM_OK);
    struct run_view v = run_view(&e, 101);
    assert_int_equal(v.owner, 2);
    assert_int_equal(v.epoch, 2);
    assert_int_equal(v.status, troupe_journal_RunStatus_Queued);
    assert_int_equal(v.last_seq, 2);
    assert_last_assigned(&e, 101, 1, 2, 2, "rebalanced");
    assert_int_equal(count_assigned(101, 2, 2), 1);
    assert_int_equal(active_of(&e, 1), 3);
    assert_int_equal(active_of(&e, 2), 1);
    assert_int_equal(tr_fsm_node_queued(e.fsm, 1), 2);
    assert_int_equal(tr_fsm_node_queued(e.fsm, 2), 1);

    /* Node 1 had admitted it: its first append carries epoch 1 and is
     * refused; the new owner's is accepted and the run is running. */
    assert_int_equal(run_append(&e, 101, 1, 3, EV_LLM), TR_FSM_STALE_EPOCH);
    assert_int_equal(run_view(&e, 101).last_seq, 2);
    assert_int_equal(run_append(&e, 101, 2, 3, EV_LLM), TR_FSM_OK);
    v = run_view(&e, 101);
    assert_int_equal(v.status, troupe_journal_RunStatus_Running);
    assert_int_equal(tr_fsm_node_queued(e.fsm, 2), 0);
    /* Ends on its new owner. */
    assert_int_equal(run_append(&e, 101, 2, 4, EV_END), TR_FSM_OK);
    assert_int_equal(run_view(&e, 101).status, troupe_journal_RunStatus_Succeeded);
    assert_int_equal(active_of(&e, 2), 0);
    env_close(&e);
}

/* Refused, and nothing changes, whenever the decision is stale. */
static void test_only_if_queued_refusals(void **st)
{
    (void)st;
    struct env e;
    full_and_empty(&e, "rebalance-refuse");
    assert_int_equal(node_add(&e, 3, 1), TR_FSM_OK);
    assert_int_equal(run_create(&e, 300, 3), TR_FSM_OK); /* node 3 is full */
    assert_int_equal(node_add(&e, 4, 5), TR_FSM_OK);
    int notes_before = n_notes;

    /* Running (the owner appended): stays. */
    assert_int_equal(reassign(&e, 100, 1, 2, 2, true), TR_FSM_STALE_EPOCH);
    /* Waiting for approval: stays. */
    assert_int_equal(run_append(&e, 101, 1, 2, EV_APPROVAL), TR_FSM_OK);
    assert_int_equal(run_view(&e, 101).status, troupe_journal_RunStatus_WaitingApproval);
    assert_int_equal(reassign(&e, 101, 1, 2, 2, true), TR_FSM_STALE_EPOCH);
    /* Terminal. */
    assert_int_equal(run_append(&e, 100, 1, 3, EV_END), TR_FSM_OK);
    assert_int_equal(reassign(&e, 100, 1, 2, 2, true), TR_FSM_TERMINAL);
    /* Node 1 now: 101 waiting, 102 and 103 queued: 3 active, capacity 1. */
    assert_int_equal(active_of(&e, 1), 3);
    /* A stale epoch or owner. */
    assert_int_equal(reassign(&e, 102, 1, 2, 1, true), TR_FSM_STALE_EPOCH);
    assert_int_equal(reassign(&e, 102, 1, 2, 3, true), TR_FSM_STALE_EPOCH);
    assert_int_equal(reassign(&e, 102, 3, 2, 2, true), TR_FSM_STALE_EPOCH);
    /* The target is full, is the owner itself, is not registered. */
    assert_int_equal(reassign(&e, 102, 1, 3, 2, true), TR_FSM_STALE_EPOCH);
    assert_int_equal(reassign(&e, 102, 1, 1, 2, true), TR_FSM_STALE_EPOCH);
    assert_int_equal(reassign(&e, 102, 1, 9, 2, true), TR_FSM_STALE_EPOCH);
    /* Bad input stays bad input. */
    assert_int_equal(reassign(&e, 102, 1, 0, 2, true), TR_FSM_INVALID);
    assert_int_equal(reassign(&e, 999, 1, 2, 2, true), TR_FSM_NO_RUN);
    /* The target is Draining, then Down. */
    assert_int_equal(node_state(&e, 2, troupe_cmd_Op_NodeDrain), TR_FSM_OK);
    assert_int_equal(reassign(&e, 102, 1, 2, 2, true), TR_FSM_STALE_EPOCH);
    assert_int_equal(node_state(&e, 2, troupe_cmd_Op_NodeDown), TR_FSM_OK);
    assert_int_equal(reassign(&e, 102, 1, 2, 2, true), TR_FSM_STALE_EPOCH);
    for (uint64_t id = 102; id <= 103; id++) {
        struct run_view v = run_view(&e, id);
        assert_int_equal(v.owner, 1);
        assert_int_equal(v.epoch, 1);
        assert_int_equal(v.last_seq, 1);
    }
    for (int i = notes_before; i < n_notes; i++)
        assert_int_not_equal(notes[i].kind, TR_NOTE_RUN_ASSIGNED);

    /* The owner is no longer over capacity (101 and 102 end): 103 is its
     * own to start, so moving it is refused. */
    assert_int_equal(node_state(&e, 2, troupe_cmd_Op_NodeUp), TR_FSM_OK);
    assert_int_equal(run_append(&e, 101, 1, 3, EV_END), TR_FSM_OK);
    assert_int_equal(run_append(&e, 102, 1, 2, EV_END), TR_FSM_OK);
    assert_int_equal(active_of(&e, 1), 1);
    assert_int_equal(reassign(&e, 103, 1, 2, 2, true), TR_FSM_STALE_EPOCH);
    assert_int_equal(run_view(&e, 103).owner, 1);

    /* Without the flag the same command moves a run whatever its status
     * (the explicit reassignment failover uses). */
    assert_int_equal(run_append(&e, 103, 1, 2, EV_LLM), TR_FSM_OK);
    assert_int_equal(reassign(&e, 103, 1, 4, 2, false), TR_FSM_OK);
    assert_last_assigned(&e, 103, 1, 4, 2, "reassigned");
    assert_int_equal(run_append(&e, 103, 1, 4, EV_LLM), TR_FSM_STALE_EPOCH);
    env_close(&e);
}

/* The plan: queued runs beyond capacity, oldest first, into the room there is. */
static void test_plan(void **st)
{
    (void)st;
    struct env e;
    env_open(&e, "rebalance-plan");
    assert_int_equal(node_add(&e, 1, 2), TR_FSM_OK);
    assert_int_equal(node_add(&e, 2, 2), TR_FSM_OK);
    assert_int_equal(node_add(&e, 3, 4), TR_FSM_OK);
    struct tr_fsm_move m[8], pend[2];
    /* Nothing queued anywhere. */
    assert_int_equal(plan(&e, NULL, 0, NULL, m, 8), 0);

    /* Node 1 (capacity 2): run 10 running; queued, created in this order:
     * 50, 20, 40, 30, 60. Node 2 is full (its own two runs, queued), node 3
     * is Draining: no receiver, no plan. */
    assert_int_equal(run_create(&e, 10, 1), TR_FSM_OK);
    assert_int_equal(run_append(&e, 10, 1, 2, EV_LLM), TR_FSM_OK);
    const uint64_t order[5] = { 50, 20, 40, 30, 60 };
    for (int i = 0; i < 5; i++)
        assert_int_equal(run_create(&e, order[i], 1), TR_FSM_OK);
    assert_int_equal(run_create(&e, 70, 2), TR_FSM_OK);
    assert_int_equal(run_create(&e, 71, 2), TR_FSM_OK);
    assert_int_equal(node_state(&e, 3, troupe_cmd_Op_NodeDrain), TR_FSM_OK);
    assert_int_equal(active_of(&e, 1), 6);
    assert_int_equal(tr_fsm_node_queued(e.fsm, 1), 5);
    assert_int_equal(plan(&e, NULL, 0, NULL, m, 8), 0);

    /* Node 3 is Up with room 4. Node 1 starts 50 itself (one free slot
     * beside run 10); 20, 40, 30, 60 are beyond: the oldest goes first. */
    assert_int_equal(node_state(&e, 3, troupe_cmd_Op_NodeUp), TR_FSM_OK);
    assert_int_equal(plan(&e, NULL, 0, NULL, m, 8), 4);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(m[i].run_id, order[i + 1]);
        assert_int_equal(m[i].from, 1);
        assert_int_equal(m[i].to, 3);
        assert_int_equal(m[i].epoch, 2);
    }
    /* cap bounds it; a pending move is left out and takes its room. */
    assert_int_equal(plan(&e, NULL, 0, NULL, m, 2), 2);
    assert_int_equal(m[0].run_id, 20);
    assert_int_equal(m[1].run_id, 40);
    pend[0] = (struct tr_fsm_move){ 20, 1, 3, 2 };
    assert_int_equal(plan(&e, pend, 1, NULL, m, 8), 3);
    assert_int_equal(m[0].run_id, 40);
    assert_int_equal(m[1].run_id, 30);
    assert_int_equal(m[2].run_id, 60);
    /* Room taken by pending moves from elsewhere limits it. */
    pend[1] = (struct tr_fsm_move){ 71, 2, 3, 2 };
    assert_int_equal(plan(&e, pend, 2, NULL, m, 8), 2);
    assert_int_equal(m[0].run_id, 40);
    assert_int_equal(m[1].run_id, 30);

    /* Node 2 frees up (its runs end). Each run goes where placement would
     * put it, counting the moves planned before it: 0/2 and 0/4 tie (lower
     * id: 2); then 0/4 < 1/2 (3); 1/4 < 1/2 (3); 1/2 and 2/4 tie (fewer
     * active: 2). */
    assert_int_equal(run_append(&e, 70, 1, 2, EV_END), TR_FSM_OK);
    assert_int_equal(run_append(&e, 71, 1, 2, EV_END), TR_FSM_OK);
    assert_int_equal(plan(&e, NULL, 0, NULL, m, 8), 4);
    const uint64_t to_want[4] = { 2, 3, 3, 2 };
    for (int i = 0; i < 4; i++) {
        assert_int_equal(m[i].run_id, order[i + 1]);
        assert_int_equal(m[i].to, to_want[i]);
    }
    /* may_receive leaves node 2 out. */
    assert_int_equal(plan(&e, NULL, 0, refuse_node_2, m, 8), 4);
    for (int i = 0; i < 4; i++)
        assert_int_equal(m[i].to, 3);

    /* Applied: every move goes through, runs leave node 1 down to its
     * capacity and the next plan is empty. */
    uint32_t n = plan(&e, NULL, 0, NULL, m, 8);
    for (uint32_t i = 0; i < n; i++) {
        assert_int_equal(rebalance(&e, &m[i]), TR_FSM_OK);
        assert_last_assigned(&e, m[i].run_id, 1, m[i].to, 2, "rebalanced");
    }
    assert_int_equal(active_of(&e, 1), 2);
    assert_int_equal(active_of(&e, 2), 2);
    assert_int_equal(active_of(&e, 3), 2);
    assert_int_equal(plan(&e, NULL, 0, NULL, m, 8), 0);
    /* A plan made before is stale now: applying it again is refused. */
    for (uint32_t i = 0; i < n; i++)
        assert_int_equal(rebalance(&e, &m[i]), TR_FSM_STALE_EPOCH);
    env_close(&e);
}

/* When the owner admitted runs beyond its queue's head (their first append
 * came), only queued ones move, and a run admitted meanwhile is refused. */
static void test_plan_race_with_owner(void **st)
{
    (void)st;
    struct env e;
    full_and_empty(&e, "rebalance-race");
    struct tr_fsm_move m[8];
    /* Node 1: 100 running, 101..103 queued, capacity 1: all three beyond;
     * node 2 has room 2: 101, 102. */
    assert_int_equal(plan(&e, NULL, 0, NULL, m, 8), 2);
    assert_int_equal(m[0].run_id, 101);
    assert_int_equal(m[1].run_id, 102);
    /* Before the moves apply, run 100 ends and node 1 starts 101 (first
     * append): its move is refused, 102's still applies. */
    assert_int_equal(run_append(&e, 100, 1, 3, EV_END), TR_FSM_OK);
    assert_int_equal(run_append(&e, 101, 1, 2, EV_LLM), TR_FSM_OK);
    assert_int_equal(rebalance(&e, &m[0]), TR_FSM_STALE_EPOCH);
    assert_int_equal(run_view(&e, 101).owner, 1);
    assert_int_equal(rebalance(&e, &m[1]), TR_FSM_OK);
    assert_int_equal(run_view(&e, 102).owner, 2);
    /* Node 1 holds 101 (running) and 103 (queued): 2 > 1, so 103 may go. */
    assert_int_equal(plan(&e, NULL, 0, NULL, m, 8), 1);
    assert_int_equal(m[0].run_id, 103);
    assert_int_equal(m[0].to, 2);
    /* Node 1 admitted 103 itself first (101 ended): refused, stays. */
    assert_int_equal(run_append(&e, 101, 1, 3, EV_END), TR_FSM_OK);
    assert_int_equal(rebalance(&e, &m[0]), TR_FSM_STALE_EPOCH);
    assert_int_equal(run_view(&e, 103).owner, 1);
    assert_int_equal(plan(&e, NULL, 0, NULL, m, 8), 0);
    env_close(&e);
}

/* The index rebuilt from the store has the same queued counts and plans. */
static void test_rebuilt_index_plans_the_same(void **st)
{
    (void)st;
    struct env e;
    full_and_empty(&e, "rebalance-rebuilt");
    struct tr_fsm_move a[8], b[8];
    uint32_t na = plan(&e, NULL, 0, NULL, a, 8);
    assert_int_equal(na, 2);
    env_reopen(&e);
    assert_int_equal(tr_fsm_node_queued(e.fsm, 1), 3);
    assert_int_equal(plan(&e, NULL, 0, NULL, b, 8), na);
    assert_memory_equal(a, b, na * sizeof *a);
    /* And it stays current after a move applied on the rebuilt index. */
    assert_int_equal(rebalance(&e, &b[0]), TR_FSM_OK);
    assert_int_equal(tr_fsm_node_queued(e.fsm, 1), 2);
    assert_int_equal(tr_fsm_node_queued(e.fsm, 2), 1);
    env_close(&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_only_if_queued_applies_when_queued, setup, teardown),
        cmocka_unit_test_setup_teardown(test_only_if_queued_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_plan, setup, teardown),
        cmocka_unit_test_setup_teardown(test_plan_race_with_owner, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rebuilt_index_plans_the_same, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
