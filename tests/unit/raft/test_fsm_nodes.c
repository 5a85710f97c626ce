/* Placement and failover in the FSM (raft/fsm_nodes.c), driven through
 * tr_fsm_apply_at on a real RocksDB store in a temporary directory. The
 * FSM's notes go to a real listener actor on a deterministic runtime
 * (both from fsm_fixture.h).
 *
 * What is checked: runs created with owner 0 spread by load and capacity;
 * Draining and Down nodes get no new runs; NodeDown/NodeDrain move every
 * active run (epoch + 1, run.assigned journaled, TR_NOTE_RUN_ASSIGNED) and
 * leave terminal ones; the old owner is fenced (STALE_EPOCH); runs of Down
 * nodes come back when a node comes Up; NodeRemove's rules; the load index
 * rebuilt from the store (reopen, snapshot restore) decides as the live one
 * did, and FSMs fed the same commands end with the same state digest. */
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

static int count_notes(int kind, uint64_t run_id, uint64_t owner)
{
    int n = 0;
    for (int i = 0; i < fx_n_notes; i++)
        if (fx_notes[i].kind == kind && (run_id == 0 || fx_notes[i].run_id == run_id) &&
            (owner == 0 || fx_notes[i].owner == owner))
            n++;
    return n;
}

/* Every command at the same time (FX_START_US). */
static void env_open(struct fx_env *e, const char *tag, tr_actor_id to)
{
    fx_env_open(e, tag, to, false);
}

/* Close the FSM and the store, open both again: the index must be rebuilt. */
static void env_reopen(struct fx_env *e, tr_actor_id to)
{
    fx_env_reopen(e, to);
    assert_int_equal(tr_store_last_applied(e->store), e->index);
}

/* ---- commands ------------------------------------------------------------------------ */

static int node_add(struct fx_env *e, uint64_t id, uint32_t capacity)
{
    return fx_node_add(e, id, capacity, true);
}

static int node_up(struct fx_env *e, uint64_t id)
{
    return fx_node_up(e, id);
}

static int node_remove(struct fx_env *e, uint64_t id)
{
    struct tr_fb_builder b;
    tr_fb_builder_init(&b);
    troupe_cmd_NodeRemove_start(&b);
    troupe_cmd_NodeRemove_add_node_id(&b, id);
    fx_finish(e, &b, troupe_cmd_Op_NodeRemove, troupe_cmd_NodeRemove_end(&b), 1, 1);
    return fx_apply(e, &b).verdict;
}

/* NodeDown (drain = false, reason "silent") or NodeDrain of id, with at
 * most one explicit reassignment (run 0: none). */
static int node_down_drain(struct fx_env *e, uint64_t id, bool drain, uint64_t run, uint64_t to, uint64_t epoch)
{
    return fx_node_down_drain(e, id, drain, "silent", run, to, epoch);
}

static int node_down(struct fx_env *e, uint64_t id)
{
    return node_down_drain(e, id, false, 0, 0, 0);
}

static int node_drain(struct fx_env *e, uint64_t id)
{
    return node_down_drain(e, id, true, 0, 0, 0);
}

static int run_reassign(struct fx_env *e, uint64_t run, uint64_t from, uint64_t to, uint64_t epoch)
{
    return fx_run_reassign(e, run, from, to, epoch, false);
}

/* RunCreate of run `id` with owner_node `owner` (0: place it). */
static int run_create_from(struct fx_env *e, uint64_t id, uint64_t owner, uint64_t origin, uint64_t leader)
{
    struct tr_fsm_result r = fx_run_create(e, id, owner, origin, leader);
    if (r.verdict == TR_FSM_OK)
        assert_int_equal(r.run_id, id);
    return r.verdict;
}

static int run_create(struct fx_env *e, uint64_t id, uint64_t owner)
{
    return run_create_from(e, id, owner, 1, 1);
}

static int run_cancel(struct fx_env *e, uint64_t id)
{
    struct tr_fb_builder b;
    char text[TR_RUN_ID_TEXT_LEN];
    tr_fb_builder_init(&b);
    tr_run_id_text(id, text);
    tr_fb_ref rid = tr_fb_create_str(&b, text);
    troupe_cmd_RunCancel_start(&b);
    troupe_cmd_RunCancel_add_run_id(&b, rid);
    fx_finish(e, &b, troupe_cmd_Op_RunCancel, troupe_cmd_RunCancel_end(&b), 1, 1);
    return fx_apply(e, &b).verdict;
}

/* One owner append (llm.requested, or run.succeeded when `end`) at
 * (epoch, seq); the append's verdict. */
static int run_append(struct fx_env *e, uint64_t id, uint64_t epoch, uint64_t seq, bool end)
{
    struct tr_fsm_result r = fx_append(e, id, epoch, seq, end ? FX_EV_END : FX_EV_LLM);
    assert_int_equal(r.n_appends, 1);
    return r.verdict;
}

/* ---- reading the store ----------------------------------------------------------------- */

static void read_run(struct fx_env *e, uint64_t id, struct run_rec *out)
{
    fx_read_run(e->store, id, out);
}

static uint64_t owner_of(struct fx_env *e, uint64_t id)
{
    struct run_rec r;
    read_run(e, id, &r);
    uint64_t o = r.owner_node;
    tr_run_rec_free(&r);
    return o;
}

static uint64_t epoch_of(struct fx_env *e, uint64_t id)
{
    struct run_rec r;
    read_run(e, id, &r);
    uint64_t ep = r.epoch;
    tr_run_rec_free(&r);
    return ep;
}

/* Journal event `seq` of run id: its type, and the owner it names
 * (RunCreated.owner_node, RunAssigned.owner_node / previous_owner). */
struct ev_info {
    uint8_t type;
    uint64_t epoch;
    uint64_t owner;
    uint64_t previous;
    char reason[64];
};

static struct ev_info read_event(struct fx_env *e, uint64_t id, uint64_t seq)
{
    struct tr_journal_iter *it;
    struct ev_info out = { 0 };
    assert_int_equal(tr_journal_iter_open(e->store, NULL, id, seq, &it, NULL), TR_OK);
    uint64_t got;
    const void *ev;
    size_t len;
    assert_int_equal(tr_journal_iter_next(it, &got, &ev, &len, NULL), 1);
    assert_int_equal(got, seq);
    const struct troupe_journal_Event *E = troupe_journal_Event_verify_as_root(ev, len, NULL);
    assert_non_null(E);
    out.type = troupe_journal_Event_data_type(E);
    out.epoch = troupe_journal_Event_epoch(E);
    if (out.type == troupe_journal_Data_RunCreated) {
        out.owner = troupe_journal_RunCreated_owner_node(troupe_journal_Event_data_as_RunCreated(E));
    } else if (out.type == troupe_journal_Data_RunAssigned) {
        const struct troupe_journal_RunAssigned *ra = troupe_journal_Event_data_as_RunAssigned(E);
        out.owner = troupe_journal_RunAssigned_owner_node(ra);
        out.previous = troupe_journal_RunAssigned_previous_owner(ra);
        struct tr_fb_str why = troupe_journal_RunAssigned_reason(ra);
        snprintf(out.reason, sizeof out.reason, "%.*s", (int)why.len, why.ptr ? why.ptr : "");
    }
    tr_journal_iter_close(it);
    return out;
}

static uint64_t last_seq(struct fx_env *e, uint64_t id)
{
    uint64_t seq = 0;
    assert_int_equal(tr_journal_last_seq(e->store, NULL, id, &seq, NULL), TR_OK);
    return seq;
}

static bool node_record_exists(struct fx_env *e, uint64_t id)
{
    unsigned char k[13];
    memcpy(k, "node/", 5);
    tr_run_key(id, k + 5);
    void *val = NULL;
    size_t vlen;
    int rv = tr_store_get(e->store, NULL, TR_CF_META, k, sizeof k, &val, &vlen, NULL);
    tr_free(val);
    assert_true(rv == TR_OK || rv == TR_ENOTFOUND);
    return rv == TR_OK;
}

static void digest(struct fx_env *e, unsigned char out[TR_STATE_DIGEST_LEN])
{
    assert_int_equal(tr_store_digest(e->store, NULL, out, NULL, NULL), TR_OK);
}

/* The run created with owner 0 shows its owner in the record, in run.created
 * and in TR_NOTE_RUN_CREATED; returns it. */
static uint64_t placed(struct fx_env *e, uint64_t id)
{
    uint64_t o = owner_of(e, id);
    assert_true(o != 0);
    struct ev_info ev = read_event(e, id, 1);
    assert_int_equal(ev.type, troupe_journal_Data_RunCreated);
    assert_int_equal(ev.owner, o);
    assert_int_equal(count_notes(TR_NOTE_RUN_CREATED, id, o), 1);
    return o;
}

/* ---- tests ------------------------------------------------------------------------------------ */

/* The runtime's seed (fx_setup). */
static uint64_t seed = 7;

/* Equal capacities: round robin by load; capacities 10 and 30: 1:3; all
 * full: the least loaded still gets the run. */
static void test_placement_spreads_by_load(void **st)
{
    (void)st;
    struct fx_env e;
    env_open(&e, "fsmnodes-spread", fx_listener);
    for (uint64_t n = 1; n <= 3; n++)
        assert_int_equal(node_add(&e, n, 0), TR_FSM_OK);
    uint32_t per[4] = { 0 };
    for (uint64_t id = 1; id <= 9; id++) {
        assert_int_equal(run_create(&e, id, 0), TR_FSM_OK);
        uint64_t o = placed(&e, id);
        assert_true(o >= 1 && o <= 3);
        per[o]++;
        /* Ties go to the lowest id: 1, 2, 3, 1, 2, 3, ... */
        assert_int_equal(o, (id - 1) % 3 + 1);
    }
    assert_int_equal(per[1], 3);
    assert_int_equal(per[2], 3);
    assert_int_equal(per[3], 3);
    for (uint64_t n = 1; n <= 3; n++)
        assert_int_equal(fx_active(&e, n), 3);

    /* An explicit owner is kept as given and counted. */
    assert_int_equal(run_create(&e, 50, 2), TR_FSM_OK);
    assert_int_equal(owner_of(&e, 50), 2);
    assert_int_equal(fx_active(&e, 2), 4);
    fx_env_close(&e);

    env_open(&e, "fsmnodes-cap", fx_listener);
    assert_int_equal(node_add(&e, 1, 10), TR_FSM_OK);
    assert_int_equal(node_add(&e, 2, 30), TR_FSM_OK);
    uint32_t c1 = 0, c2 = 0;
    for (uint64_t id = 1; id <= 40; id++) {
        assert_int_equal(run_create(&e, id, 0), TR_FSM_OK);
        if (placed(&e, id) == 1)
            c1++;
        else
            c2++;
        /* Never more than its share: node 1 holds at most a quarter (+1). */
        assert_true(c1 * 4 <= (uint32_t)id + 3);
    }
    assert_int_equal(c1, 10);
    assert_int_equal(c2, 30);
    uint32_t active, cap;
    int8_t state;
    assert_int_equal(tr_fsm_node_load(e.fsm, 2, &active, &cap, &state), TR_OK);
    assert_int_equal(active, 30);
    assert_int_equal(cap, 30);
    assert_int_equal(state, troupe_state_NodeState_Up);
    /* Both full (ratio 1): fewer active runs wins, so node 1 takes it; the
     * run is created all the same (queued until the owner has room). */
    assert_int_equal(run_create(&e, 41, 0), TR_FSM_OK);
    assert_int_equal(placed(&e, 41), 1);
    /* A node with room beats full ones whatever its ratio weight. */
    assert_int_equal(node_add(&e, 3, 0), TR_FSM_OK);
    assert_int_equal(run_create(&e, 42, 0), TR_FSM_OK);
    assert_int_equal(placed(&e, 42), 3);
    fx_env_close(&e);
}

/* Draining and Down nodes get no new runs; with none Up, the origin does. */
static void test_no_runs_on_draining_or_down(void **st)
{
    (void)st;
    struct fx_env e;
    env_open(&e, "fsmnodes-skip", fx_listener);
    for (uint64_t n = 1; n <= 3; n++)
        assert_int_equal(node_add(&e, n, 0), TR_FSM_OK);
    assert_int_equal(node_drain(&e, 2), TR_FSM_OK);
    assert_int_equal(node_down(&e, 3), TR_FSM_OK);
    for (uint64_t id = 1; id <= 6; id++) {
        assert_int_equal(run_create(&e, id, 0), TR_FSM_OK);
        assert_int_equal(placed(&e, id), 1);
    }
    uint32_t active, cap;
    int8_t state;
    assert_int_equal(tr_fsm_node_load(e.fsm, 2, &active, &cap, &state), TR_OK);
    assert_int_equal(state, troupe_state_NodeState_Draining);
    assert_int_equal(active, 0);
    assert_int_equal(tr_fsm_node_load(e.fsm, 3, &active, &cap, &state), TR_OK);
    assert_int_equal(state, troupe_state_NodeState_Down);
    assert_int_equal(tr_fsm_node_load(e.fsm, 99, &active, &cap, &state), TR_ENOTFOUND);
    assert_int_equal(tr_fsm_node_next(e.fsm, 0), 1);
    assert_int_equal(tr_fsm_node_next(e.fsm, 1), 2);
    assert_int_equal(tr_fsm_node_next(e.fsm, 3), 0);

    /* NodeUp of the drained node: it takes new runs again. */
    assert_int_equal(node_up(&e, 2), TR_FSM_OK);
    assert_int_equal(run_create(&e, 7, 0), TR_FSM_OK);
    assert_int_equal(placed(&e, 7), 2);

    /* Nobody Up: the node that took the request (origin, else leader). */
    assert_int_equal(node_down(&e, 1), TR_FSM_OK);
    assert_int_equal(node_down(&e, 2), TR_FSM_OK);
    assert_int_equal(run_create_from(&e, 8, 0, 5, 4), TR_FSM_OK);
    assert_int_equal(placed(&e, 8), 5);
    fx_env_close(&e);

    /* An empty node table: origin, else leader; neither: refused. */
    env_open(&e, "fsmnodes-empty", fx_listener);
    assert_int_equal(run_create_from(&e, 1, 0, 7, 3), TR_FSM_OK);
    assert_int_equal(placed(&e, 1), 7);
    assert_int_equal(run_create_from(&e, 2, 0, 0, 3), TR_FSM_OK);
    assert_int_equal(placed(&e, 2), 3);
    assert_int_equal(run_create_from(&e, 3, 0, 0, 0), TR_FSM_INVALID);
    /* A lone node registering after it created runs finds them its own. */
    assert_int_equal(node_add(&e, 7, 0), TR_FSM_OK);
    assert_int_equal(fx_active(&e, 7), 1);
    assert_int_equal(owner_of(&e, 1), 7);
    /* Bad input: node id 0, reassignment to node 0. */
    assert_int_equal(node_add(&e, 0, 0), TR_FSM_INVALID);
    assert_int_equal(run_reassign(&e, 1, 7, 0, 2), TR_FSM_INVALID);
    assert_int_equal(node_up(&e, 42), TR_FSM_NOT_FOUND);
    assert_int_equal(node_down(&e, 42), TR_FSM_NOT_FOUND);
    fx_env_close(&e);
}

/* NodeDown moves every active run of the node (explicit reassignments
 * first), leaves terminal ones, and fences the old owner. */
static void test_node_down_reassigns(void **st)
{
    (void)st;
    struct fx_env e;
    env_open(&e, "fsmnodes-down", fx_listener);
    for (uint64_t n = 1; n <= 3; n++)
        assert_int_equal(node_add(&e, n, 0), TR_FSM_OK);
    for (uint64_t id = 1; id <= 12; id++)
        assert_int_equal(run_create(&e, id, 0), TR_FSM_OK);
    /* Node 2 owns 2, 5, 8, 11. Run 5 succeeds, run 8 is cancelled. */
    assert_int_equal(owner_of(&e, 5), 2);
    assert_int_equal(run_append(&e, 5, 1, 2, false), TR_FSM_OK);
    assert_int_equal(run_append(&e, 5, 1, 3, true), TR_FSM_OK);
    assert_int_equal(run_cancel(&e, 8), TR_FSM_OK);
    assert_int_equal(fx_active(&e, 2), 2);
    assert_int_equal(run_append(&e, 2, 1, 2, false), TR_FSM_OK);
    int before = count_notes(TR_NOTE_RUN_ASSIGNED, 0, 0);

    /* Down, with run 11 explicitly sent to node 3. */
    assert_int_equal(node_down_drain(&e, 2, false, 11, 3, 2), TR_FSM_OK);
    assert_int_equal(owner_of(&e, 11), 3);
    assert_int_equal(epoch_of(&e, 11), 2);
    /* Run 2 goes to the least-loaded Up node: 1 (4 runs) vs 3 (5 now). */
    assert_int_equal(owner_of(&e, 2), 1);
    assert_int_equal(epoch_of(&e, 2), 2);
    struct ev_info ev = read_event(&e, 2, last_seq(&e, 2));
    assert_int_equal(ev.type, troupe_journal_Data_RunAssigned);
    assert_int_equal(ev.owner, 1);
    assert_int_equal(ev.previous, 2);
    assert_int_equal(ev.epoch, 2);
    assert_string_equal(ev.reason, "owner node down");
    assert_int_equal(last_seq(&e, 2), 3);
    assert_int_equal(count_notes(TR_NOTE_RUN_ASSIGNED, 2, 1), 1);
    assert_int_equal(count_notes(TR_NOTE_RUN_ASSIGNED, 0, 0) - before, 2);

    /* Terminal runs stay where they ended. */
    assert_int_equal(owner_of(&e, 5), 2);
    assert_int_equal(epoch_of(&e, 5), 1);
    assert_int_equal(owner_of(&e, 8), 2);
    assert_int_equal(epoch_of(&e, 8), 1);
    assert_int_equal(fx_active(&e, 2), 0);
    assert_int_equal(fx_active(&e, 1), 5);
    assert_int_equal(fx_active(&e, 3), 5);

    /* The old owner is fenced; the new one appends at epoch 2. */
    assert_int_equal(run_append(&e, 2, 1, 4, false), TR_FSM_STALE_EPOCH);
    assert_int_equal(run_append(&e, 2, 2, 4, false), TR_FSM_OK);
    /* A stale explicit reassignment (made against epoch 1) is refused. */
    assert_int_equal(run_reassign(&e, 2, 2, 3, 2), TR_FSM_STALE_EPOCH);

    /* Spreading: node 3 goes down too; its 5 runs all go to node 1. */
    assert_int_equal(node_down(&e, 3), TR_FSM_OK);
    assert_int_equal(fx_active(&e, 1), 10);
    assert_int_equal(fx_active(&e, 3), 0);
    assert_int_equal(owner_of(&e, 11), 1);
    assert_int_equal(epoch_of(&e, 11), 3);

    /* A run created explicitly on the Down node stays until the node is
     * declared down again: the repeated NodeDown moves what is left. */
    assert_int_equal(run_create(&e, 60, 3), TR_FSM_OK);
    assert_int_equal(fx_active(&e, 3), 1);
    assert_int_equal(node_down(&e, 3), TR_FSM_OK);
    assert_int_equal(owner_of(&e, 60), 1);
    assert_int_equal(fx_active(&e, 3), 0);
    fx_env_close(&e);
}

/* Drain spreads runs over the others in run-id order by load. */
static void test_node_drain_spreads(void **st)
{
    (void)st;
    struct fx_env e;
    env_open(&e, "fsmnodes-drain", fx_listener);
    assert_int_equal(node_add(&e, 1, 0), TR_FSM_OK);
    for (uint64_t id = 1; id <= 6; id++)
        assert_int_equal(run_create(&e, id, 0), TR_FSM_OK);
    assert_int_equal(node_add(&e, 2, 0), TR_FSM_OK);
    assert_int_equal(node_add(&e, 3, 0), TR_FSM_OK);
    /* Nothing moved on its own. */
    assert_int_equal(fx_active(&e, 1), 6);
    assert_int_equal(node_drain(&e, 1), TR_FSM_OK);
    /* 1 -> 2, 2 -> 3, 3 -> 2, ... */
    for (uint64_t id = 1; id <= 6; id++) {
        assert_int_equal(owner_of(&e, id), (id - 1) % 2 + 2);
        struct ev_info ev = read_event(&e, id, 2);
        assert_int_equal(ev.type, troupe_journal_Data_RunAssigned);
        assert_string_equal(ev.reason, "owner node draining");
    }
    assert_int_equal(fx_active(&e, 1), 0);
    fx_env_close(&e);
}

/* With no other node Up the runs stay; a node coming Up takes the runs of
 * Down nodes (not of Draining ones). */
static void test_recovery_when_a_node_comes_up(void **st)
{
    (void)st;
    struct fx_env e;
    env_open(&e, "fsmnodes-recover", fx_listener);
    assert_int_equal(node_add(&e, 1, 0), TR_FSM_OK);
    assert_int_equal(node_add(&e, 2, 0), TR_FSM_OK);
    for (uint64_t id = 1; id <= 4; id++)
        assert_int_equal(run_create(&e, id, 0), TR_FSM_OK);
    assert_int_equal(node_down(&e, 1), TR_FSM_OK);
    assert_int_equal(fx_active(&e, 2), 4);
    assert_int_equal(node_down(&e, 2), TR_FSM_OK);
    /* Nobody to take them. */
    assert_int_equal(fx_active(&e, 2), 4);
    assert_int_equal(owner_of(&e, 1), 2);
    assert_int_equal(epoch_of(&e, 1), 2);
    /* Node 1 comes back: node 2's runs move to it. */
    assert_int_equal(node_up(&e, 1), TR_FSM_OK);
    assert_int_equal(fx_active(&e, 1), 4);
    assert_int_equal(fx_active(&e, 2), 0);
    for (uint64_t id = 1; id <= 4; id++)
        assert_int_equal(owner_of(&e, id), 1);
    assert_int_equal(epoch_of(&e, 1), 3); /* 1 -> 2 -> 1 */
    assert_int_equal(epoch_of(&e, 2), 2); /* 2 -> 1 */

    /* Drain 1 with nobody Up: its runs stay; a new node does not take them. */
    assert_int_equal(node_drain(&e, 1), TR_FSM_OK);
    assert_int_equal(fx_active(&e, 1), 4);
    assert_int_equal(node_add(&e, 3, 0), TR_FSM_OK);
    assert_int_equal(fx_active(&e, 1), 4);
    assert_int_equal(fx_active(&e, 3), 0);
    /* Node 2 comes up: still nothing moves (no Down node owns runs). */
    assert_int_equal(node_up(&e, 2), TR_FSM_OK);
    assert_int_equal(fx_active(&e, 2), 0);
    fx_env_close(&e);
}

static void test_node_remove_rules(void **st)
{
    (void)st;
    struct fx_env e;
    env_open(&e, "fsmnodes-remove", fx_listener);
    assert_int_equal(node_remove(&e, 9), TR_FSM_NOT_FOUND);
    assert_int_equal(node_add(&e, 1, 0), TR_FSM_OK);
    for (uint64_t id = 1; id <= 3; id++)
        assert_int_equal(run_create(&e, id, 0), TR_FSM_OK);
    /* Up with active runs: refused, nothing changes. */
    assert_int_equal(node_remove(&e, 1), TR_FSM_INVALID);
    assert_true(node_record_exists(&e, 1));
    /* Draining, nobody to take them: refused. */
    assert_int_equal(node_drain(&e, 1), TR_FSM_OK);
    assert_int_equal(node_remove(&e, 1), TR_FSM_INVALID);
    assert_true(node_record_exists(&e, 1));
    assert_int_equal(fx_active(&e, 1), 3);
    /* A node joins (it does not take a Draining node's runs by itself);
     * removing node 1 now moves them first, then deletes the record. */
    assert_int_equal(node_add(&e, 2, 0), TR_FSM_OK);
    assert_int_equal(fx_active(&e, 1), 3);
    assert_int_equal(node_remove(&e, 1), TR_FSM_OK);
    assert_false(node_record_exists(&e, 1));
    for (uint64_t id = 1; id <= 3; id++) {
        assert_int_equal(owner_of(&e, id), 2);
        assert_int_equal(epoch_of(&e, id), 2);
    }
    uint32_t active, cap;
    int8_t state;
    assert_int_equal(tr_fsm_node_load(e.fsm, 1, &active, &cap, &state), TR_ENOTFOUND);
    assert_int_equal(tr_fsm_node_next(e.fsm, 0), 2);
    /* Down with runs and nobody Up: refused; an idle Up node goes. */
    assert_int_equal(node_down(&e, 2), TR_FSM_OK);
    assert_int_equal(node_remove(&e, 2), TR_FSM_INVALID);
    assert_int_equal(node_add(&e, 3, 0), TR_FSM_OK); /* takes node 2's runs */
    assert_int_equal(fx_active(&e, 3), 3);
    assert_int_equal(node_remove(&e, 2), TR_FSM_OK);
    assert_int_equal(node_add(&e, 4, 0), TR_FSM_OK);
    assert_int_equal(node_remove(&e, 4), TR_FSM_OK);
    assert_int_equal(node_remove(&e, 4), TR_FSM_NOT_FOUND);
    /* A removed node may register again. */
    assert_int_equal(node_add(&e, 1, 5), TR_FSM_OK);
    assert_int_equal(tr_fsm_node_load(e.fsm, 1, &active, &cap, &state), TR_OK);
    assert_int_equal(cap, 5);
    fx_env_close(&e);
}

/* The same mixed command sequence, with a step counter to vary it. */
static void workload(struct fx_env *e, uint64_t first_run, int phase)
{
    uint64_t id = first_run;
    if (phase == 0) {
        assert_int_equal(node_add(e, 1, 4), TR_FSM_OK);
        assert_int_equal(node_add(e, 2, 8), TR_FSM_OK);
        assert_int_equal(node_add(e, 3, 0), TR_FSM_OK);
    }
    for (int i = 0; i < 20; i++, id++) {
        assert_int_equal(run_create(e, id, 0), TR_FSM_OK);
        if (i % 5 == 1)
            assert_int_equal(run_cancel(e, id), TR_FSM_OK);
        else if (i % 7 == 2)
            assert_int_equal(run_append(e, id, epoch_of(e, id), last_seq(e, id) + 1, true), TR_FSM_OK);
    }
    if (phase == 0) {
        assert_int_equal(node_down(e, 2), TR_FSM_OK);
    } else {
        assert_int_equal(node_up(e, 2), TR_FSM_OK);
        assert_int_equal(node_drain(e, 3), TR_FSM_OK);
    }
}

/* The index rebuilt from the store (reopen; snapshot restore) decides as the
 * live one does, and replicas fed the same commands have the same digest. */
/* The FSM keeps run records between entries (fsm.c "record cache"); a
 * snapshot restore replaces them under it. A then follows B's history: its
 * next append must be judged by B's record (next_seq 5), not by the one A
 * cached (next_seq 3). */
static void test_record_cache_after_restore(void **st)
{
    struct fx_env a, b;
    fx_env_open(&a, "cache-a", 0, false);
    fx_env_open(&b, "cache-b", 0, false);
    assert_int_equal(fx_node_add(&a, 1, 0, false), TR_FSM_OK);
    assert_int_equal(fx_node_add(&b, 1, 0, false), TR_FSM_OK);
    assert_int_equal(fx_run_create(&a, 77, 1, 0, 0).verdict, TR_FSM_OK);
    assert_int_equal(fx_run_create(&b, 77, 1, 0, 0).verdict, TR_FSM_OK);
    assert_int_equal(fx_append(&a, 77, 1, 2, FX_EV_LLM).verdict, TR_FSM_OK); /* A: next_seq 3, cached */
    for (uint64_t seq = 2; seq <= 4; seq++)
        assert_int_equal(fx_append(&b, 77, 1, seq, FX_EV_LLM).verdict, TR_FSM_OK);
    assert_true(b.index > a.index);

    struct tr_snapshot_chunk *chunks = NULL;
    unsigned n = 0;
    uint64_t snap_index = 0;
    struct tr_err err;
    assert_int_equal(tr_store_snapshot_chunks(b.store, NULL, 0, &chunks, &n, &snap_index, &err), TR_OK);
    size_t total = 0;
    for (unsigned i = 0; i < n; i++)
        total += chunks[i].len;
    struct raft_buffer buf = { .base = raft_malloc(total), .len = total };
    size_t at = 0;
    for (unsigned i = 0; i < n; i++) {
        memcpy((char *)buf.base + at, chunks[i].base, chunks[i].len);
        at += chunks[i].len;
    }
    tr_snapshot_chunks_free(chunks, n);
    assert_int_equal(a.rf->restore(a.rf, &buf), 0);
    a.index = snap_index;

    assert_int_equal(fx_append(&a, 77, 1, 3, FX_EV_LLM).verdict, TR_FSM_BAD_SEQ);
    assert_int_equal(fx_append(&a, 77, 1, 5, FX_EV_LLM).verdict, TR_FSM_OK);
    struct run_rec r;
    fx_read_run(a.store, 77, &r);
    assert_int_equal(r.next_seq, 6);
    tr_run_rec_free(&r);
    fx_env_close(&a);
    fx_env_close(&b);
}

/* Writer ids (raft.h): the chaos suite's kill_two found this. A run's
 * pipelined append (writer W1, seq 2) went to a leader that died; W1 read the
 * journal back (seq 1: it did not see 2 yet) as writer W2 and appended its own
 * seq 2 and 3. W1's seq 2 was committed after all, so W2's seq 2 is refused,
 * and W2's seq 3 — built on W2's seq 2 — must be refused too, though 3 is the
 * run's next seq: it was accepted, and the journal held a call's completion
 * twice and the other call's never. */
static void test_writer_ids(void **st)
{
    struct fx_env e;
    fx_env_open(&e, "writers", 0, false);
    assert_int_equal(fx_node_add(&e, 1, 0, false), TR_FSM_OK);
    assert_int_equal(fx_node_add(&e, 2, 0, false), TR_FSM_OK);
    assert_int_equal(fx_run_create(&e, 9, 1, 0, 0).verdict, TR_FSM_OK); /* run.created: seq 1 */
    const uint64_t w1 = 0x1111, w2 = 0x2222, w3 = 0x3333;
    assert_int_equal(fx_append_w(&e, 9, 1, 2, FX_EV_LLM, w1, 1).verdict, TR_FSM_OK);
    assert_int_equal(fx_append_w(&e, 9, 1, 2, FX_EV_LLM, w2, 1).verdict, TR_FSM_BAD_SEQ);
    assert_int_equal(fx_append_w(&e, 9, 1, 3, FX_EV_LLM, w2, 1).verdict, TR_FSM_BAD_SEQ);
    /* W1 goes on building on its own event. */
    assert_int_equal(fx_append_w(&e, 9, 1, 3, FX_EV_LLM, w1, 1).verdict, TR_FSM_OK);
    /* A writer that read up to seq 3 may follow any writer's seq 3... */
    assert_int_equal(fx_append_w(&e, 9, 1, 4, FX_EV_LLM, w3, 3).verdict, TR_FSM_OK);
    assert_int_equal(fx_append_w(&e, 9, 1, 5, FX_EV_LLM, w3, 3).verdict, TR_FSM_OK);
    struct run_rec r;
    fx_read_run(e.store, 9, &r);
    assert_int_equal(r.next_seq, 6);
    assert_int_equal(r.last_writer, w3);
    tr_run_rec_free(&r);
    /* ...and the FSM's own events (run.assigned here, seq 6) are no writer's. */
    assert_int_equal(run_reassign(&e, 9, 1, 2, 2), TR_FSM_OK);
    fx_read_run(e.store, 9, &r);
    assert_int_equal(r.next_seq, 7);
    assert_int_equal(r.last_writer, 0);
    uint64_t epoch = r.epoch;
    tr_run_rec_free(&r);
    assert_int_equal(fx_append_w(&e, 9, epoch, 7, FX_EV_LLM, w3, 5).verdict, TR_FSM_BAD_SEQ);
    assert_int_equal(fx_append_w(&e, 9, epoch, 7, FX_EV_LLM, w3, 6).verdict, TR_FSM_OK);
    /* Writer 0: no check (senders without writer ids). */
    assert_int_equal(fx_append_w(&e, 9, epoch, 8, FX_EV_LLM, 0, 0).verdict, TR_FSM_OK);
    fx_env_close(&e);
}

static void test_rebuilt_index_decides_the_same(void **st)
{
    (void)st;
    struct fx_env live, again;
    env_open(&live, "fsmnodes-live", fx_listener);
    env_open(&again, "fsmnodes-again", 0);
    workload(&live, 1, 0);
    workload(&again, 1, 0);
    unsigned char d1[TR_STATE_DIGEST_LEN], d2[TR_STATE_DIGEST_LEN];
    digest(&live, d1);
    digest(&again, d2);
    assert_memory_equal(d1, d2, sizeof d1);

    /* `again` forgets its index: a new FSM over the reopened store. */
    env_reopen(&again, 0);
    for (uint64_t n = 1; n <= 4; n++) {
        uint32_t a1, c1, a2, c2;
        int8_t s1, s2;
        int r1 = tr_fsm_node_load(live.fsm, n, &a1, &c1, &s1);
        int r2 = tr_fsm_node_load(again.fsm, n, &a2, &c2, &s2);
        assert_int_equal(r1, r2);
        assert_int_equal(a1, a2);
        assert_int_equal(c1, c2);
        assert_int_equal(s1, s2);
    }
    /* A fresh FSM whose first use of the index is a placement. */
    env_reopen(&again, 0);
    workload(&live, 100, 1);
    workload(&again, 100, 1);
    for (uint64_t id = 100; id < 120; id++)
        assert_int_equal(owner_of(&live, id), owner_of(&again, id));
    digest(&live, d1);
    digest(&again, d2);
    assert_memory_equal(d1, d2, sizeof d1);

    /* Snapshot restore: a third store with its own (different) history and
     * a built index gets live's snapshot; its next decisions are live's. */
    struct fx_env third;
    env_open(&third, "fsmnodes-third", 0);
    assert_int_equal(node_add(&third, 9, 0), TR_FSM_OK);
    assert_int_equal(run_create(&third, 500, 0), TR_FSM_OK);
    struct tr_snapshot_chunk *chunks;
    unsigned n;
    uint64_t snap_index;
    assert_int_equal(tr_store_snapshot_chunks(live.store, NULL, 0, &chunks, &n, &snap_index, NULL), TR_OK);
    size_t total = 0;
    for (unsigned i = 0; i < n; i++)
        total += chunks[i].len;
    struct raft_buffer buf = { .base = raft_malloc(total), .len = total };
    assert_non_null(buf.base);
    size_t off = 0;
    for (unsigned i = 0; i < n; i++) {
        memcpy((char *)buf.base + off, chunks[i].base, chunks[i].len);
        off += chunks[i].len;
    }
    tr_snapshot_chunks_free(chunks, n);
    assert_true(snap_index > third.index);
    assert_int_equal(third.rf->restore(third.rf, &buf), 0);
    third.index = snap_index;
    for (uint64_t id = 200; id < 215; id++) {
        assert_int_equal(run_create(&live, id, 0), TR_FSM_OK);
        assert_int_equal(run_create(&third, id, 0), TR_FSM_OK);
        assert_int_equal(owner_of(&live, id), owner_of(&third, id));
    }
    assert_int_equal(node_down(&live, 1), TR_FSM_OK);
    assert_int_equal(node_down(&third, 1), TR_FSM_OK);
    digest(&live, d1);
    digest(&third, d2);
    assert_memory_equal(d1, d2, sizeof d1);
    fx_env_close(&third);
    fx_env_close(&again);
    fx_env_close(&live);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_prestate_setup_teardown(test_placement_spreads_by_load, fx_setup, fx_teardown, &seed),
        cmocka_unit_test_prestate_setup_teardown(test_no_runs_on_draining_or_down, fx_setup, fx_teardown, &seed),
        cmocka_unit_test_prestate_setup_teardown(test_node_down_reassigns, fx_setup, fx_teardown, &seed),
        cmocka_unit_test_prestate_setup_teardown(test_node_drain_spreads, fx_setup, fx_teardown, &seed),
        cmocka_unit_test_prestate_setup_teardown(test_recovery_when_a_node_comes_up, fx_setup, fx_teardown, &seed),
        cmocka_unit_test_prestate_setup_teardown(test_node_remove_rules, fx_setup, fx_teardown, &seed),
        cmocka_unit_test_prestate_setup_teardown(test_rebuilt_index_decides_the_same, fx_setup, fx_teardown, &seed),
        cmocka_unit_test_prestate_setup_teardown(test_record_cache_after_restore, fx_setup, fx_teardown, &seed),
        cmocka_unit_test_prestate_setup_teardown(test_writer_ids, fx_setup, fx_teardown, &seed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
