/* The raft unit tests' shared fixture: see fsm_fixture.h for what it gives,
 * who owns what and how it fails (every step asserts). */
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

/* ---- the listener: a real actor on a deterministic runtime -------------------- */

struct tr_state_note fx_notes[FX_MAX_NOTES];
int fx_n_notes;
struct tr_rt *fx_rt;
tr_actor_id fx_listener;

static int listener_receive(struct tr_ctx *ctx, void *state, struct tr_msg *m)
{
    (void)ctx;
    (void)state;
    if (m->type == TR_MSG_STATE_NOTE && m->len == sizeof(struct tr_state_note) && fx_n_notes < FX_MAX_NOTES)
        memcpy(&fx_notes[fx_n_notes++], m->data, sizeof(struct tr_state_note));
    return 0;
}

static const struct tr_behavior listener_behavior = { .name = "notes", .receive = listener_receive };

int fx_setup(void **st)
{
    struct tr_rt_opts o = { .deterministic = 1, .seed = *(const uint64_t *)*st };
    if (tr_rt_new(&o, &fx_rt) != TR_OK)
        return -1;
    struct tr_spawn_opts so = { .behavior = &listener_behavior };
    if (tr_spawn(fx_rt, &so, &fx_listener) != TR_OK)
        return -1;
    tr_rt_run_until_idle(fx_rt, 0);
    fx_n_notes = 0;
    return 0;
}

int fx_teardown(void **st)
{
    (void)st;
    tr_rt_shutdown(fx_rt);
    fx_rt = NULL;
    return 0;
}

/* ---- an FSM over a store ---------------------------------------------------------- */

static void on_fatal(void *ud, const char *msg)
{
    (void)ud;
    fail_msg("fsm fatal: %s", msg);
}

static void fsm_open(struct fx_env *e, tr_actor_id to)
{
    struct tr_fsm_opts o = { .store = e->store, .rt = fx_rt, .listener = to, .on_fatal = on_fatal };
    e->rf = tr_fsm_new(&o, &e->fsm);
    assert_non_null(e->rf);
}

void fx_env_open(struct fx_env *e, const char *tag, tr_actor_id to, bool tick)
{
    memset(e, 0, sizeof *e);
    if (to != 0)
        fx_n_notes = 0;
    e->dir = h_tmpdir(tag);
    assert_non_null(e->dir);
    snprintf(e->path, sizeof e->path, "%s/db", e->dir);
    assert_int_equal(tr_store_open(e->path, NULL, &e->store, NULL), TR_OK);
    e->index = tr_store_last_applied(e->store);
    e->now_us = FX_START_US;
    e->tick = tick;
    fsm_open(e, to);
}

void fx_env_close(struct fx_env *e)
{
    tr_fsm_free(e->fsm);
    tr_store_close(e->store);
    h_tmpdir_remove(e->dir);
}

void fx_env_reopen(struct fx_env *e, tr_actor_id to)
{
    tr_fsm_free(e->fsm);
    tr_store_close(e->store);
    assert_int_equal(tr_store_open(e->path, NULL, &e->store, NULL), TR_OK);
    fsm_open(e, to);
}

uint32_t fx_active(struct fx_env *e, uint64_t node)
{
    uint32_t active, cap;
    int8_t state;
    int rv = tr_fsm_node_load(e->fsm, node, &active, &cap, &state);
    assert_true(rv == TR_OK || rv == TR_ENOTFOUND);
    return active;
}

void fx_command_finish(struct tr_fb_builder *b, int64_t time_us, uint64_t origin, uint64_t leader, uint8_t type,
                       tr_fb_ref op)
{
    troupe_cmd_Command_start(b);
    troupe_cmd_Command_add_time_us(b, time_us);
    troupe_cmd_Command_add_leader_node(b, leader);
    troupe_cmd_Command_add_origin_node(b, origin);
    troupe_cmd_Command_add_op_type(b, type);
    troupe_cmd_Command_add_op(b, op);
    troupe_cmd_Command_finish(b, troupe_cmd_Command_end(b));
}

void fx_finish(struct fx_env *e, struct tr_fb_builder *b, uint8_t type, tr_fb_ref op, uint64_t origin,
               uint64_t leader)
{
    if (e->tick)
        e->now_us++;
    fx_command_finish(b, e->now_us, origin, leader, type, op);
}

struct tr_fsm_result fx_apply(struct fx_env *e, struct tr_fb_builder *b)
{
    size_t len;
    const uint8_t *buf = tr_fb_builder_data(b, &len);
    struct tr_fsm_result *res;
    assert_int_equal(tr_fsm_apply_at(e->fsm, ++e->index, buf, len, &res), TR_OK);
    struct tr_fsm_result copy = *res;
    copy.appends = NULL;
    if (res->n_appends > 0)
        copy.verdict = res->appends[0].verdict;
    tr_fb_builder_free(b);
    tr_rt_run_until_idle(fx_rt, 0);
    return copy;
}

/* ---- commands ------------------------------------------------------------------------ */

int fx_node_add(struct fx_env *e, uint64_t id, uint32_t capacity, bool with_address)
{
    struct tr_fb_builder b;
    tr_fb_builder_init(&b);
    tr_fb_ref a = 0;
    if (with_address) {
        char addr[32];
        snprintf(addr, sizeof addr, "127.0.0.1:%llu", (unsigned long long)(9000 + id));
        a = tr_fb_create_str(&b, addr);
    }
    troupe_cmd_NodeAdd_start(&b);
    troupe_cmd_NodeAdd_add_node_id(&b, id);
    troupe_cmd_NodeAdd_add_raft_address(&b, a);
    troupe_cmd_NodeAdd_add_capacity(&b, capacity);
    fx_finish(e, &b, troupe_cmd_Op_NodeAdd, troupe_cmd_NodeAdd_end(&b), 1, 1);
    return fx_apply(e, &b).verdict;
}

int fx_node_up(struct fx_env *e, uint64_t id)
{
    struct tr_fb_builder b;
    tr_fb_builder_init(&b);
    troupe_cmd_NodeUp_start(&b);
    troupe_cmd_NodeUp_add_node_id(&b, id);
    fx_finish(e, &b, troupe_cmd_Op_NodeUp, troupe_cmd_NodeUp_end(&b), 1, 1);
    return fx_apply(e, &b).verdict;
}

tr_fb_ref fx_reassign_ref(struct tr_fb_builder *b, uint64_t run, uint64_t from, uint64_t to, uint64_t epoch,
                          bool only_if_queued)
{
    char text[TR_RUN_ID_TEXT_LEN];
    tr_run_id_text(run, text);
    tr_fb_ref rid = tr_fb_create_str(b, text);
    troupe_cmd_RunReassign_start(b);
    troupe_cmd_RunReassign_add_run_id(b, rid);
    troupe_cmd_RunReassign_add_from_node(b, from);
    troupe_cmd_RunReassign_add_to_node(b, to);
    troupe_cmd_RunReassign_add_epoch(b, epoch);
    if (only_if_queued)
        troupe_cmd_RunReassign_add_only_if_queued(b, true);
    return troupe_cmd_RunReassign_end(b);
}

int fx_node_down_drain(struct fx_env *e, uint64_t id, bool drain, const char *reason, uint64_t run, uint64_t to,
                       uint64_t epoch)
{
    struct tr_fb_builder b;
    tr_fb_builder_init(&b);
    tr_fb_ref vec = 0;
    if (run != 0) {
        tr_fb_ref r = fx_reassign_ref(&b, run, id, to, epoch, false);
        vec = troupe_cmd_NodeDown_create_reassignments(&b, &r, 1);
    }
    if (drain) {
        troupe_cmd_NodeDrain_start(&b);
        troupe_cmd_NodeDrain_add_node_id(&b, id);
        troupe_cmd_NodeDrain_add_reassignments(&b, vec);
        fx_finish(e, &b, troupe_cmd_Op_NodeDrain, troupe_cmd_NodeDrain_end(&b), 1, 1);
    } else {
        tr_fb_ref why = reason != NULL ? tr_fb_create_str(&b, reason) : 0;
        troupe_cmd_NodeDown_start(&b);
        troupe_cmd_NodeDown_add_node_id(&b, id);
        troupe_cmd_NodeDown_add_reason(&b, why);
        troupe_cmd_NodeDown_add_reassignments(&b, vec);
        fx_finish(e, &b, troupe_cmd_Op_NodeDown, troupe_cmd_NodeDown_end(&b), 1, 1);
    }
    return fx_apply(e, &b).verdict;
}

int fx_run_reassign(struct fx_env *e, uint64_t run, uint64_t from, uint64_t to, uint64_t epoch,
                    bool only_if_queued)
{
    struct tr_fb_builder b;
    tr_fb_builder_init(&b);
    tr_fb_ref r = fx_reassign_ref(&b, run, from, to, epoch, only_if_queued);
    fx_finish(e, &b, troupe_cmd_Op_RunReassign, r, 1, 1);
    return fx_apply(e, &b).verdict;
}

void fx_run_create_start(struct tr_fb_builder *b, uint64_t id, const char *goal, uint64_t owner)
{
    char text[TR_RUN_ID_TEXT_LEN];
    tr_run_id_text(id, text);
    tr_fb_ref rid = tr_fb_create_str(b, text);
    tr_fb_ref tenant = tr_fb_create_str(b, "acme");
    tr_fb_ref g = tr_fb_create_str(b, goal);
    troupe_cmd_RunCreate_start(b);
    troupe_cmd_RunCreate_add_run_id(b, rid);
    troupe_cmd_RunCreate_add_tenant(b, tenant);
    troupe_cmd_RunCreate_add_goal(b, g);
    troupe_cmd_RunCreate_add_owner_node(b, owner);
}

struct tr_fsm_result fx_run_create(struct fx_env *e, uint64_t id, uint64_t owner, uint64_t origin, uint64_t leader)
{
    struct tr_fb_builder b;
    tr_fb_builder_init(&b);
    fx_run_create_start(&b, id, "count the sheep", owner);
    fx_finish(e, &b, troupe_cmd_Op_RunCreate, troupe_cmd_RunCreate_end(&b), origin, leader);
    return fx_apply(e, &b);
}

void fx_event_finish(struct tr_fb_builder *b, uint64_t id, uint64_t seq, int64_t time_us, uint64_t epoch,
                     uint8_t type, tr_fb_ref data)
{
    char text[TR_RUN_ID_TEXT_LEN];
    tr_run_id_text(id, text);
    tr_fb_ref rid = tr_fb_create_str(b, text);
    troupe_journal_Event_start(b);
    troupe_journal_Event_add_seq(b, seq);
    troupe_journal_Event_add_time_us(b, time_us);
    troupe_journal_Event_add_run_id(b, rid);
    troupe_journal_Event_add_epoch(b, epoch);
    troupe_journal_Event_add_data_type(b, type);
    troupe_journal_Event_add_data(b, data);
    troupe_journal_Event_finish(b, troupe_journal_Event_end(b));
}

struct tr_fsm_result fx_append(struct fx_env *e, uint64_t id, uint64_t epoch, uint64_t seq, enum fx_ev_kind kind)
{
    return fx_append_w(e, id, epoch, seq, kind, 0, 0);
}

struct tr_fsm_result fx_append_w(struct fx_env *e, uint64_t id, uint64_t epoch, uint64_t seq, enum fx_ev_kind kind,
                                 uint64_t writer, uint64_t base_seq)
{
    struct tr_fb_builder eb, b;
    tr_fb_builder_init(&eb);
    tr_fb_ref data;
    uint8_t type;
    if (kind == FX_EV_END) {
        tr_fb_ref o = tr_fb_create_str(&eb, "42 sheep");
        troupe_journal_RunSucceeded_start(&eb);
        troupe_journal_RunSucceeded_add_output(&eb, o);
        data = troupe_journal_RunSucceeded_end(&eb);
        type = troupe_journal_Data_RunSucceeded;
    } else if (kind == FX_EV_APPROVAL) {
        char approval[48];
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
    fx_event_finish(&eb, id, seq, e->tick ? e->now_us : e->now_us + 1, epoch, type, data);
    size_t elen;
    const uint8_t *ev = tr_fb_builder_data(&eb, &elen);

    char text[TR_RUN_ID_TEXT_LEN];
    tr_run_id_text(id, text);
    tr_fb_builder_init(&b);
    tr_fb_ref rid = tr_fb_create_str(&b, text);
    tr_fb_ref evr = tr_fb_create_bytes(&b, ev, elen);
    troupe_cmd_Append_start(&b);
    troupe_cmd_Append_add_run_id(&b, rid);
    troupe_cmd_Append_add_epoch(&b, epoch);
    troupe_cmd_Append_add_seq(&b, seq);
    troupe_cmd_Append_add_writer(&b, writer);
    troupe_cmd_Append_add_base_seq(&b, base_seq);
    troupe_cmd_Append_add_event(&b, evr);
    tr_fb_ref a = troupe_cmd_Append_end(&b);
    tr_fb_ref vec = troupe_cmd_AppendBatch_create_appends(&b, &a, 1);
    troupe_cmd_AppendBatch_start(&b);
    troupe_cmd_AppendBatch_add_appends(&b, vec);
    fx_finish(e, &b, troupe_cmd_Op_AppendBatch, troupe_cmd_AppendBatch_end(&b), 1, 1);
    tr_fb_builder_free(&eb);
    return fx_apply(e, &b);
}

/* ---- reading the store ----------------------------------------------------------------- */

void fx_read_run(struct tr_store *s, uint64_t id, struct run_rec *out)
{
    unsigned char k[8];
    void *val;
    size_t vlen;
    tr_run_key(id, k);
    assert_int_equal(tr_store_get(s, NULL, TR_CF_RUNS, k, 8, &val, &vlen, NULL), TR_OK);
    assert_int_equal(tr_run_rec_decode(val, vlen, out), TR_OK);
    tr_free(val);
}
