/* Rebalancing queued runs in the FSM (raft/fsm_nodes.c, raft/fsm_runs.c),
 * driven through tr_fsm_apply_at on a real RocksDB store in a temporary
 * directory; the FSM's notes go to a real listener actor on a deterministic
 * runtime (both from fsm_fixture.h).
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

#include "fsm_fixture.h"
#include "schemas/journal_generated.h"
#include "schemas/state_generated.h"

/* ---- the fixture (fsm_fixture.h): notes, an FSM over a store, commands ---------- */

static int count_assigned(uint64_t run_id, uint64_t owner, uint64_t epoch)
{
    int n = 0;
    for (int i = 0; i < fx_n_notes; i++)
        if (fx_notes[i].kind == TR_NOTE_RUN_ASSIGNED && fx_notes[i].run_id == run_id && fx_notes[i].owner == owner &&
            fx_notes[i].epoch == epoch)
            n++;
    return n;
}

/* Every command one microsecond after the last (created_at orders runs). */
static void env_open(struct fx_env *e, const char *tag)
{
    fx_env_open(e, tag, fx_listener, true);
}

static int node_add(struct fx_env *e, uint64_t id, uint32_t capacity)
{
    return fx_node_add(e, id, capacity, false);
}

/* NodeDrain, NodeDown or NodeUp of id. */
static int node_state(struct fx_env *e, uint64_t id, uint8_t op)
{
    if (op == troupe_cmd_Op_NodeUp)
        return fx_node_up(e, id);
    return fx_node_down_drain(e, id, op == troupe_cmd_Op_NodeDrain, NULL, 0, 0, 0);
}

static int run_create(struct fx_env *e, uint64_t id, uint64_t owner)
{
    return fx_run_create(e, id, owner, 1, 1).verdict;
}

static int rebalance(struct fx_env *e, const struct tr_fsm_move *m)
{
    return fx_run_reassign(e, m->run_id, m->from, m->to, m->epoch, true);
}

/* One owner append at (epoch, seq); the verdict. */
static int run_append(struct fx_env *e, uint64_t id, uint64_t epoch, uint64_t seq, enum fx_ev_kind kind)
{
    return fx_append(e, id, epoch, seq, kind).verdict;
}

/* ---- reading the store ----------------------------------------------------------------- */

struct run_view {
    uint64_t owner, epoch, last_seq;
    int8_t status;
};

static struct run_view run_view(struct fx_env *e, uint64_t id)
{
    struct run_rec r;
    fx_read_run(e->store, id, &r);
    struct run_view v = { r.owner_node, r.epoch, 0, r.status };
    tr_run_rec_free(&r);
    assert_int_equal(tr_journal_last_seq(e->store, NULL, id, &v.last_seq, NULL), TR_OK);
    return v;
}

/* The last journal event of run id is run.assigned at `epoch`, from
 * `previous` to `owner`, for `reason`. */
static void assert_last_assigned(struct fx_env *e, uint64_t id, uint64_t previous, uint64_t owner, uint64_t epoch,
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

static uint32_t plan(struct fx_env *e, const struct tr_fsm_move *pending, uint32_t n_pending,
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

/* The runtime's seed (fx_setup). */
static uint64_t seed = 11;

/* Node 1 (capacity 1) holds run 100, running, and runs 101..103, queued;
 * node 2 (capacity 2) is empty. */
static void full_and_empty(struct fx_env *e, const char *tag)
{
    env_open(e, tag);
    assert_int_equal(node_add(e, 1, 1), TR_FSM_OK);
    assert_int_equal(node_add(e, 2, 2), TR_FSM_OK);
    for (uint64_t id = 100; id <= 103; id++)
        assert_int_equal(run_create(e, id, 1), TR_FSM_OK);
    assert_int_equal(run_append(e, 100, 1, 2, FX_EV_LLM), TR_FSM_OK);
    assert_int_equal(fx_active(e, 1), 4);
    assert_int_equal(tr_fsm_node_queued(e->fsm, 1), 3);
    assert_int_equal(tr_fsm_node_queued(e->fsm, 2), 0);
}

/* Applied while queued; the old owner, had it admitted the run, is fenced. */
static void test_only_if_queued_applies_when_queued(void **st)
{
    (void)st;
    struct fx_env e;
    full_and_empty(&e, "rebalance-apply");
    assert_int_equal(fx_run_reassign(&e, 101, 1, 2, 2, true), TR_FSM_OK);
    struct run_view v = run_view(&e, 101);
    assert_int_equal(v.owner, 2);
    assert_int_equal(v.epoch, 2);
    assert_int_equal(v.status, troupe_journal_RunStatus_Queued);
    assert_int_equal(v.last_seq, 2);
    assert_last_assigned(&e, 101, 1, 2, 2, "rebalanced");
    assert_int_equal(count_assigned(101, 2, 2), 1);
    assert_int_equal(fx_active(&e, 1), 3);
    assert_int_equal(fx_active(&e, 2), 1);
    assert_int_equal(tr_fsm_node_queued(e.fsm, 1), 2);
    assert_int_equal(tr_fsm_node_queued(e.fsm, 2), 1);

    /* Node 1 had admitted it: its first append carries epoch 1 and is
     * refused; the new owner's is accepted and the run is running. */
    assert_int_equal(run_append(&e, 101, 1, 3, FX_EV_LLM), TR_FSM_STALE_EPOCH);
    assert_int_equal(run_view(&e, 101).last_seq, 2);
    assert_int_equal(run_append(&e, 101, 2, 3, FX_EV_LLM), TR_FSM_OK);
    v = run_view(&e, 101);
    assert_int_equal(v.status, troupe_journal_RunStatus_Running);
    assert_int_equal(tr_fsm_node_queued(e.fsm, 2), 0);
    /* Ends on its new owner. */
    assert_int_equal(run_append(&e, 101, 2, 4, FX_EV_END), TR_FSM_OK);
    assert_int_equal(run_view(&e, 101).status, troupe_journal_RunStatus_Succeeded);
    assert_int_equal(fx_active(&e, 2), 0);
    fx_env_close(&e);
}

/* Refused, and nothing changes, whenever the decision is stale. */
static void test_only_if_queued_refusals(void **st)
{
    (void)st;
    struct fx_env e;
    full_and_empty(&e, "rebalance-refuse");
    assert_int_equal(node_add(&e, 3, 1), TR_FSM_OK);
    assert_int_equal(run_create(&e, 300, 3), TR_FSM_OK); /* node 3 is full */
    assert_int_equal(node_add(&e, 4, 5), TR_FSM_OK);
    int notes_before = fx_n_notes;

    /* Running (the owner appended): stays. */
    assert_int_equal(fx_run_reassign(&e, 100, 1, 2, 2, true), TR_FSM_STALE_EPOCH);
    /* Waiting for approval: stays. */
    assert_int_equal(run_append(&e, 101, 1, 2, FX_EV_APPROVAL), TR_FSM_OK);
    assert_int_equal(run_view(&e, 101).status, troupe_journal_RunStatus_WaitingApproval);
    assert_int_equal(fx_run_reassign(&e, 101, 1, 2, 2, true), TR_FSM_STALE_EPOCH);
    /* Terminal. */
    assert_int_equal(run_append(&e, 100, 1, 3, FX_EV_END), TR_FSM_OK);
    assert_int_equal(fx_run_reassign(&e, 100, 1, 2, 2, true), TR_FSM_TERMINAL);
    /* Node 1 now: 101 waiting, 102 and 103 queued: 3 active, capacity 1. */
    assert_int_equal(fx_active(&e, 1), 3);
    /* A stale epoch or owner. */
    assert_int_equal(fx_run_reassign(&e, 102, 1, 2, 1, true), TR_FSM_STALE_EPOCH);
    assert_int_equal(fx_run_reassign(&e, 102, 1, 2, 3, true), TR_FSM_STALE_EPOCH);
    assert_int_equal(fx_run_reassign(&e, 102, 3, 2, 2, true), TR_FSM_STALE_EPOCH);
    /* The target is full, is the owner itself, is not registered. */
    assert_int_equal(fx_run_reassign(&e, 102, 1, 3, 2, true), TR_FSM_STALE_EPOCH);
    assert_int_equal(fx_run_reassign(&e, 102, 1, 1, 2, true), TR_FSM_STALE_EPOCH);
    assert_int_equal(fx_run_reassign(&e, 102, 1, 9, 2, true), TR_FSM_STALE_EPOCH);
    /* Bad input stays bad input. */
    assert_int_equal(fx_run_reassign(&e, 102, 1, 0, 2, true), TR_FSM_INVALID);
    assert_int_equal(fx_run_reassign(&e, 999, 1, 2, 2, true), TR_FSM_NO_RUN);
    /* The target is Draining, then Down. */
    assert_int_equal(node_state(&e, 2, troupe_cmd_Op_NodeDrain), TR_FSM_OK);
    assert_int_equal(fx_run_reassign(&e, 102, 1, 2, 2, true), TR_FSM_STALE_EPOCH);
    assert_int_equal(node_state(&e, 2, troupe_cmd_Op_NodeDown), TR_FSM_OK);
    assert_int_equal(fx_run_reassign(&e, 102, 1, 2, 2, true), TR_FSM_STALE_EPOCH);
    for (uint64_t id = 102; id <= 103; id++) {
        struct run_view v = run_view(&e, id);
        assert_int_equal(v.owner, 1);
        assert_int_equal(v.epoch, 1);
        assert_int_equal(v.last_seq, 1);
    }
    for (int i = notes_before; i < fx_n_notes; i++)
        assert_int_not_equal(fx_notes[i].kind, TR_NOTE_RUN_ASSIGNED);

    /* The owner is no longer over capacity (101 and 102 end): 103 is its
     * own to start, so moving it is refused. */
    assert_int_equal(node_state(&e, 2, troupe_cmd_Op_NodeUp), TR_FSM_OK);
    assert_int_equal(run_append(&e, 101, 1, 3, FX_EV_END), TR_FSM_OK);
    assert_int_equal(run_append(&e, 102, 1, 2, FX_EV_END), TR_FSM_OK);
    assert_int_equal(fx_active(&e, 1), 1);
    assert_int_equal(fx_run_reassign(&e, 103, 1, 2, 2, true), TR_FSM_STALE_EPOCH);
    assert_int_equal(run_view(&e, 103).owner, 1);

    /* Without the flag the same command moves a run whatever its status
     * (the explicit reassignment failover uses). */
    assert_int_equal(run_append(&e, 103, 1, 2, FX_EV_LLM), TR_FSM_OK);
    assert_int_equal(fx_run_reassign(&e, 103, 1, 4, 2, false), TR_FSM_OK);
    assert_last_assigned(&e, 103, 1, 4, 2, "reassigned");
    assert_int_equal(run_append(&e, 103, 1, 4, FX_EV_LLM), TR_FSM_STALE_EPOCH);
    fx_env_close(&e);
}

/* The plan: queued runs beyond capacity, oldest first, into the room there is. */
static void test_plan(void **st)
{
    (void)st;
    struct fx_env e;
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
    assert_int_equal(run_append(&e, 10, 1, 2, FX_EV_LLM), TR_FSM_OK);
    const uint64_t order[5] = { 50, 20, 40, 30, 60 };
    for (int i = 0; i < 5; i++)
        assert_int_equal(run_create(&e, order[i], 1), TR_FSM_OK);
    assert_int_equal(run_create(&e, 70, 2), TR_FSM_OK);
    assert_int_equal(run_create(&e, 71, 2), TR_FSM_OK);
    assert_int_equal(node_state(&e, 3, troupe_cmd_Op_NodeDrain), TR_FSM_OK);
    assert_int_equal(fx_active(&e, 1), 6);
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
    assert_int_equal(run_append(&e, 70, 1, 2, FX_EV_END), TR_FSM_OK);
    assert_int_equal(run_append(&e, 71, 1, 2, FX_EV_END), TR_FSM_OK);
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
    assert_int_equal(fx_active(&e, 1), 2);
    assert_int_equal(fx_active(&e, 2), 2);
    assert_int_equal(fx_active(&e, 3), 2);
    assert_int_equal(plan(&e, NULL, 0, NULL, m, 8), 0);
    /* A plan made before is stale now: applying it again is refused. */
    for (uint32_t i = 0; i < n; i++)
        assert_int_equal(rebalance(&e, &m[i]), TR_FSM_STALE_EPOCH);
    fx_env_close(&e);
}

/* When the owner admitted runs beyond its queue's head (their first append
 * came), only queued ones move, and a run admitted meanwhile is refused. */
static void test_plan_race_with_owner(void **st)
{
    (void)st;
    struct fx_env e;
    full_and_empty(&e, "rebalance-race");
    struct tr_fsm_move m[8];
    /* Node 1: 100 running, 101..103 queued, capacity 1: all three beyond;
     * node 2 has room 2: 101, 102. */
    assert_int_equal(plan(&e, NULL, 0, NULL, m, 8), 2);
    assert_int_equal(m[0].run_id, 101);
    assert_int_equal(m[1].run_id, 102);
    /* Before the moves apply, run 100 ends and node 1 starts 101 (first
     * append): its move is refused, 102's still applies. */
    assert_int_equal(run_append(&e, 100, 1, 3, FX_EV_END), TR_FSM_OK);
    assert_int_equal(run_append(&e, 101, 1, 2, FX_EV_LLM), TR_FSM_OK);
    assert_int_equal(rebalance(&e, &m[0]), TR_FSM_STALE_EPOCH);
    assert_int_equal(run_view(&e, 101).owner, 1);
    assert_int_equal(rebalance(&e, &m[1]), TR_FSM_OK);
    assert_int_equal(run_view(&e, 102).owner, 2);
    /* Node 1 holds 101 (running) and 103 (queued): 2 > 1, so 103 may go. */
    assert_int_equal(plan(&e, NULL, 0, NULL, m, 8), 1);
    assert_int_equal(m[0].run_id, 103);
    assert_int_equal(m[0].to, 2);
    /* Node 1 admitted 103 itself first (101 ended): refused, stays. */
    assert_int_equal(run_append(&e, 101, 1, 3, FX_EV_END), TR_FSM_OK);
    assert_int_equal(rebalance(&e, &m[0]), TR_FSM_STALE_EPOCH);
    assert_int_equal(run_view(&e, 103).owner, 1);
    assert_int_equal(plan(&e, NULL, 0, NULL, m, 8), 0);
    fx_env_close(&e);
}

/* The index rebuilt from the store has the same queued counts and plans. */
static void test_rebuilt_index_plans_the_same(void **st)
{
    (void)st;
    struct fx_env e;
    full_and_empty(&e, "rebalance-rebuilt");
    struct tr_fsm_move a[8], b[8];
    uint32_t na = plan(&e, NULL, 0, NULL, a, 8);
    assert_int_equal(na, 2);
    fx_env_reopen(&e, fx_listener);
    assert_int_equal(tr_fsm_node_queued(e.fsm, 1), 3);
    assert_int_equal(plan(&e, NULL, 0, NULL, b, 8), na);
    assert_memory_equal(a, b, na * sizeof *a);
    /* And it stays current after a move applied on the rebuilt index. */
    assert_int_equal(rebalance(&e, &b[0]), TR_FSM_OK);
    assert_int_equal(tr_fsm_node_queued(e.fsm, 1), 2);
    assert_int_equal(tr_fsm_node_queued(e.fsm, 2), 1);
    fx_env_close(&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_prestate_setup_teardown(test_only_if_queued_applies_when_queued, fx_setup, fx_teardown, &seed),
        cmocka_unit_test_prestate_setup_teardown(test_only_if_queued_refusals, fx_setup, fx_teardown, &seed),
        cmocka_unit_test_prestate_setup_teardown(test_plan, fx_setup, fx_teardown, &seed),
        cmocka_unit_test_prestate_setup_teardown(test_plan_race_with_owner, fx_setup, fx_teardown, &seed),
        cmocka_unit_test_prestate_setup_teardown(test_rebuilt_index_plans_the_same, fx_setup, fx_teardown, &seed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
