/* The raft unit tests' shared fixture (fsm_fixture.c): an FSM over a real
 * RocksDB store in a temporary directory, its notes recorded by a real
 * listener actor on a deterministic runtime, and builders for the commands
 * and journal events the tests apply.
 *
 * Happy path (a cmocka test of test_fsm_nodes.c / test_fsm_rebalance.c):
 *
 *     setup:    fx_setup                   runtime + listener, notes cleared
 *     test:     struct fx_env e;
 *               fx_env_open(&e, "tag", fx_listener, tick);
 *               fx_node_add(&e, 1, 2, false); fx_run_create(&e, 7, 1, 1, 1);
 *               ... fx_append(&e, 7, 1, 2, FX_EV_LLM) ...
 *               fx_env_close(&e);
 *     teardown: fx_teardown
 *
 * Lower-level builders (fx_command_finish, fx_run_create_start,
 * fx_event_finish, fx_read_run) serve tests that drive the FSM another way
 * (through raft in test_snapshot.c, through the state service in
 * test_state.c) and need no fx_env.
 *
 * Ownership: the fixture owns the runtime, the listener and the notes (one
 * set per process: cmocka runs one test at a time). An fx_env owns its temp
 * directory, store and FSM until fx_env_close. fx_apply and the command
 * helpers take the builder they are given and free it.
 *
 * Failure modes: every step asserts (cmocka); an FSM fatal error fails the
 * test with its message. Nothing here returns an error to handle. */
#ifndef TR_TESTS_RAFT_FSM_FIXTURE_H
#define TR_TESTS_RAFT_FSM_FIXTURE_H

#include <stdbool.h>
#include <stdint.h>

#include "raft/fsm.h"
#include "raft/raft.h"
#include "schemas/command_generated.h"
#include "storage/storage.h"

/* ---- the runtime and the notes listener ---------------------------------------- */

#define FX_MAX_NOTES 8192

extern struct tr_state_note fx_notes[FX_MAX_NOTES]; /* the listener's notes, in order */
extern int fx_n_notes;                               /* how many (at most FX_MAX_NOTES) */
extern struct tr_rt *fx_rt;                          /* deterministic runtime */
extern tr_actor_id fx_listener;                      /* records TR_MSG_STATE_NOTE */

/* A cmocka setup: a deterministic runtime seeded with the uint64_t *st
 * points to (cmocka_unit_test_prestate_setup_teardown(test, fx_setup,
 * fx_teardown, &seed)) and the listener spawned on it, notes cleared: 0, or
 * -1 if either could not be made. */
int fx_setup(void **st);
/* A cmocka teardown: shut the runtime down; 0. */
int fx_teardown(void **st);

/* ---- an FSM over a store ------------------------------------------------------- */

#define FX_START_US 1700000000000000LL

struct fx_env {
    char *dir;                  /* h_tmpdir: removed by fx_env_close */
    char path[160];             /* dir/db */
    struct tr_store *store;
    struct tr_fsm *fsm;
    struct raft_fsm *rf;        /* what raft would drive (restore) */
    uint64_t index;             /* last applied raft index */
    int64_t now_us;             /* the last command's time_us */
    bool tick;                  /* each command one microsecond after the last;
                                   otherwise every command at FX_START_US */
};

/* Open a store in a new temp dir (tag names it) and an FSM over it whose
 * notes go to `to` (0: none; otherwise the notes are cleared). With tick,
 * command n is at FX_START_US + n and an owner event at the time of the
 * command before it; without, commands are at FX_START_US and events one
 * microsecond later. */
void fx_env_open(struct fx_env *e, const char *tag, tr_actor_id to, bool tick);
void fx_env_close(struct fx_env *e);
/* Close the FSM and the store and open both again (the FSM's load index is
 * then rebuilt from the store on first use); notes go to `to`. */
void fx_env_reopen(struct fx_env *e, tr_actor_id to);

/* Node `node`'s active runs (0 if it is not registered). */
uint32_t fx_active(struct fx_env *e, uint64_t node);

/* Finish b's Command around op (time from e, origin and leader nodes). */
void fx_finish(struct fx_env *e, struct tr_fb_builder *b, uint8_t type, tr_fb_ref op, uint64_t origin,
               uint64_t leader);
/* Apply the Command in b at the next index, free b, run the runtime until
 * idle (the notes are in). The result, with appends NULL and verdict the
 * first append's when there are appends. */
struct tr_fsm_result fx_apply(struct fx_env *e, struct tr_fb_builder *b);

/* ---- commands on an fx_env: each returns the verdict ----------------------------- */

/* NodeAdd of id with capacity; with_address: raft_address 127.0.0.1:<9000 + id>. */
int fx_node_add(struct fx_env *e, uint64_t id, uint32_t capacity, bool with_address);
int fx_node_up(struct fx_env *e, uint64_t id);
/* NodeDown (drain false; with `reason` unless NULL) or NodeDrain of id, with
 * at most one explicit reassignment of `run` to `to` at `epoch` (run 0: none). */
int fx_node_down_drain(struct fx_env *e, uint64_t id, bool drain, const char *reason, uint64_t run, uint64_t to,
                       uint64_t epoch);
/* A RunReassign table in b. */
tr_fb_ref fx_reassign_ref(struct tr_fb_builder *b, uint64_t run, uint64_t from, uint64_t to, uint64_t epoch,
                          bool only_if_queued);
int fx_run_reassign(struct fx_env *e, uint64_t run, uint64_t from, uint64_t to, uint64_t epoch,
                    bool only_if_queued);
/* RunCreate of run id (tenant "acme", goal "count the sheep") with
 * owner_node `owner` (0: the FSM places it); the whole result. */
struct tr_fsm_result fx_run_create(struct fx_env *e, uint64_t id, uint64_t owner, uint64_t origin, uint64_t leader);

enum fx_ev_kind {
    FX_EV_LLM,                  /* llm.requested, step 1 */
    FX_EV_APPROVAL,             /* approval.requested apr_<id hex>_<seq>, tool payment */
    FX_EV_END                   /* run.succeeded "42 sheep" */
};
/* An AppendBatch of one owner event of `kind` at (epoch, seq); the whole
 * result (verdict: the append's). */
struct tr_fsm_result fx_append(struct fx_env *e, uint64_t id, uint64_t epoch, uint64_t seq, enum fx_ev_kind kind);
/* The same from writer `writer` that read the journal up to base_seq (raft.h
 * "Writer ids"; fx_append sends writer 0: no check). */
struct tr_fsm_result fx_append_w(struct fx_env *e, uint64_t id, uint64_t epoch, uint64_t seq, enum fx_ev_kind kind,
                                 uint64_t writer, uint64_t base_seq);

/* ---- builders without an fx_env ----------------------------------------------------- */

/* Finish b's Command around op; origin and leader 0 leave them out. */
void fx_command_finish(struct tr_fb_builder *b, int64_t time_us, uint64_t origin, uint64_t leader, uint8_t type,
                       tr_fb_ref op);
/* Create run id's text, tenant "acme" and `goal`, start a RunCreate table
 * in b with them and owner_node. Objects the caller adds to it must be
 * built before; the caller ends it (troupe_cmd_RunCreate_end). */
void fx_run_create_start(struct tr_fb_builder *b, uint64_t id, const char *goal, uint64_t owner);
/* Finish b as a journal Event of run id at (seq, epoch, time_us) around
 * data of `type` (built in b before). */
void fx_event_finish(struct tr_fb_builder *b, uint64_t id, uint64_t seq, int64_t time_us, uint64_t epoch,
                     uint8_t type, tr_fb_ref data);
/* Run id's record in store s (asserts it is there); free with tr_run_rec_free. */
void fx_read_run(struct tr_store *s, uint64_t id, struct run_rec *out);

#endif
