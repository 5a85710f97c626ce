/* The run core: fold + decide on journals built by the harness (run.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "harness.h"
#include "scripts.h"
#include "schemas/command_generated.h"
#include "schemas/journal_generated.h"

#define J(x) troupe_journal_##x

static const char search_schema[] =
    "{\"type\":\"object\",\"properties\":{\"q\":{\"type\":\"string\",\"minLength\":1}},"
    "\"required\":[\"q\"],\"additionalProperties\":false}";

static const struct J(Event) *ev(const struct harness *h, uint32_t i)
{
    const struct J(Event) *e = J(Event_verify_as_root)(h->ev[i], h->len[i], NULL);
    assert_non_null(e);
    return e;
}

static const struct J(Event) *last_ev(const struct harness *h)
{
    return ev(h, h->n - 1);
}

/* The error_code of the run.failed that ends the journal. */
static const char *failed_code(const struct harness *h)
{
    const struct J(RunFailed) *f = J(Event_data_as_RunFailed)(last_ev(h));
    assert_non_null(f);
    return J(RunFailed_error_code)(f).ptr;
}

/* The last tool.completed of the journal. */
static const struct J(ToolCompleted) *last_completed(const struct harness *h)
{
    for (uint32_t i = h->n; i-- > 0;) {
        const struct J(ToolCompleted) *c = J(Event_data_as_ToolCompleted)(ev(h, i));
        if (c)
            return c;
    }
    fail_msg("no tool.completed");
    return NULL;
}

/* ---- scripted llms and tools ------------------------------------------------ */

static const struct h_agent agent_search = { .goal = "What is the answer?", .system = "You are careful.",
                                             .tools = { "search", "wire" } };

static void setup_ten(struct harness *h)
{
    h_init(h, &agent_search, llm_ten, tool_echo);
    h_add_tool(h, "search", search_schema, J(Risk_Read));
}

/* ---- tests -------------------------------------------------------------------- */

static void test_run_id(void **st)
{
    char t[TR_RUN_ID_TEXT_LEN];
    uint64_t v = 0;

    tr_run_id_text(UINT64_C(0x0123456789abcdef), t);
    assert_string_equal(t, "run_0123456789abcdef");
    assert_int_equal(tr_run_id_from_text(t, strlen(t), &v), 0);
    assert_true(v == UINT64_C(0x0123456789abcdef));
    tr_run_id_text(0, t);
    assert_string_equal(t, "run_0000000000000000");
    assert_int_equal(tr_run_id_from_text(t, strlen(t), &v), TR_EINVAL); /* 0 is never a run */
    tr_run_id_text(UINT64_MAX, t);
    assert_int_equal(tr_run_id_from_text(t, strlen(t), &v), 0);
    assert_true(v == UINT64_MAX);
    assert_int_equal(tr_run_id_from_text("run_0123456789ABCDEF", 20, &v), TR_EINVAL);
    assert_int_equal(tr_run_id_from_text("run_0123456789abcde", 19, &v), TR_EINVAL);
    assert_int_equal(tr_run_id_from_text("run_0123456789abcdef0", 21, &v), TR_EINVAL);
    assert_int_equal(tr_run_id_from_text("rux_0123456789abcdef", 20, &v), TR_EINVAL);
    assert_int_equal(tr_run_id_from_text("run_0123456789abcdeg", 20, &v), TR_EINVAL);
    assert_int_equal(tr_run_id_from_text(NULL, 0, &v), TR_EINVAL);
}

static void test_ten_steps(void **st)
{
    struct harness h;
    struct tr_run_action a;

    setup_ten(&h);
    assert_int_equal(h_drive(&h, 1000, &a), TR_RUN_EXIT);
    assert_int_equal(a.exit_reason, 0);
    assert_int_equal(h.s.n_steps, 10);
    assert_int_equal(h.llm_calls, 10);
    assert_int_equal(h.tool_calls, 9); /* finish is a builtin */
    assert_int_equal(h_count(&h, J(Data_LlmRequested)), 10);
    assert_int_equal(h_count(&h, J(Data_LlmCompleted)), 10);
    assert_int_equal(h_count(&h, J(Data_ToolRequested)), 10);
    assert_int_equal(h_count(&h, J(Data_ToolStarted)), 9);
    assert_int_equal(h_count(&h, J(Data_ToolCompleted)), 10);
    const struct J(RunSucceeded) *ok = J(Event_data_as_RunSucceeded)(last_ev(&h));
    assert_non_null(ok);
    assert_string_equal(J(RunSucceeded_output)(ok).ptr, "42");
    assert_int_equal(J(RunSucceeded_steps)(ok), 10);
    /* Exact accounting: 9 steps at 1234 micro-USD, the finish step at 1000. */
    const struct J(Usage) *u = J(RunSucceeded_usage)(ok);
    assert_int_equal(J(Usage_cost_micro_usd)(u), 9 * 1234 + 1000);
    assert_int_equal(J(Usage_prompt_tokens)(u), 9 * 100 + 45 + 100);
    assert_int_equal(J(Usage_completion_tokens)(u), 100);
    assert_true(h.s.terminal);
    tr_run_action_free(&a);
    /* Terminal: nothing more happens. */
    h_decide(&h, &a);
    assert_int_equal(a.kind, TR_RUN_EXIT);
    h_free(&h);
}

/* A crash after any event: replay the prefix, continue, and get the same
 * journal, byte for byte (time is an input: a function of the seq here). */
static void test_replay_every_prefix(void **st)
{
    struct harness h;

    setup_ten(&h);
    assert_int_equal(h_drive(&h, 1000, NULL), TR_RUN_EXIT);
    for (uint32_t k = 1; k <= h.n; k++) {
        struct harness r;
        struct tr_run_action first;

        h_replay(&r, &h, k);
        h_decide(&r, &first);
        if (k < h.n && first.kind == TR_RUN_APPEND) {
            /* The next action is the very event the live run wrote. */
            assert_int_equal(first.len, h.len[k]);
            assert_memory_equal(first.buf, h.ev[k], first.len);
        }
        if (first.kind == TR_RUN_CALL_TOOL) /* tool.started without tool.completed */
            assert_int_equal(h_type(&h, k - 1), J(Data_ToolStarted));
        if (first.kind == TR_RUN_CALL_LLM)
            assert_int_equal(h_type(&h, k - 1), J(Data_LlmRequested));
        assert_true(first.kind != TR_RUN_WAIT);
        tr_run_action_free(&first);
        assert_int_equal(h_drive(&r, 1000, NULL), TR_RUN_EXIT);
        assert_int_equal(r.n, h.n);
        for (uint32_t i = 0; i < h.n; i++) {
            assert_int_equal(r.len[i], h.len[i]);
            assert_memory_equal(r.ev[i], h.ev[i], h.len[i]);
        }
        h_free(&r);
    }
    h_free(&h);
}

/* The same over a journal with every kind of step: parallel calls, an
 * approval granted and one denied, builtins, an invalid call. */
static void test_replay_every_prefix_mixed(void **st)
{
    struct harness h;

    h_init(&h, &agent_search, llm_mixed, tool_echo);
    h_add_tool(&h, "search", search_schema, J(Risk_Read));
    h_add_tool(&h, "wire", "{\"type\":\"object\"}", J(Risk_Irreversible));
    h.decide_approval = approve_small;
    assert_int_equal(h_drive(&h, 1000, NULL), TR_RUN_EXIT);
    assert_string_equal(J(RunSucceeded_output)(J(Event_data_as_RunSucceeded)(last_ev(&h))).ptr, "mixed");
    assert_int_equal(h_count(&h, J(Data_ApprovalRequested)), 2);
    assert_int_equal(h_count(&h, J(Data_ApprovalDecided)), 2);
    assert_int_equal(h.tool_calls, 2); /* search, and the approved wire */
    for (uint32_t k = 1; k <= h.n; k++) {
        struct harness r;

        h_replay(&r, &h, k);
        assert_int_equal(h_drive(&r, 1000, NULL), TR_RUN_EXIT);
        assert_int_equal(r.n, h.n);
        for (uint32_t i = 0; i < h.n; i++) {
            assert_int_equal(r.len[i], h.len[i]);
            assert_memory_equal(r.ev[i], h.ev[i], h.len[i]);
        }
        h_free(&r);
    }
    h_free(&h);
}

static void test_reexecute_same_key(void **st)
{
    struct harness h, r;
    struct tr_run_action a;
    unsigned char key[TR_RUN_DIGEST];
    char hex[2 * TR_RUN_DIGEST + 1], first[2 * TR_RUN_DIGEST + 1];

    setup_ten(&h);
    h.manual_tools = true;
    assert_int_equal(h_drive(&h, 100, &a), TR_RUN_CALL_TOOL);
    assert_int_equal(a.step, 1);
    assert_int_equal(a.call_index, 0);
    tr_run_action_free(&a);
    assert_int_equal(h_type(&h, h.n - 1), J(Data_ToolStarted));
    tr_run_idem_key(h.s.run_text, 1, 0, key);
    tr_run_hex(key, sizeof key, hex);
    assert_string_equal(h.last_key, hex);
    strcpy(first, h.last_key);
    /* The key is journaled in tool.started. */
    const struct J(ToolStarted) *ts = J(Event_data_as_ToolStarted)(last_ev(&h));
    assert_int_equal(J(ToolStarted_idempotency_key)(ts).len, TR_RUN_DIGEST);
    assert_memory_equal(J(ToolStarted_idempotency_key)(ts).data, key, TR_RUN_DIGEST);
    /* The actor dies with the call out; its replacement calls again. */
    h_replay(&r, &h, h.n);
    r.manual_tools = true;
    assert_int_equal(h_drive(&r, 100, &a), TR_RUN_CALL_TOOL);
    assert_int_equal(a.step, 1);
    tr_run_action_free(&a);
    assert_string_equal(r.last_key, first);
    assert_int_equal(r.n, h.n); /* nothing journaled again */
    /* Keys differ per step and per call. */
    unsigned char k2[TR_RUN_DIGEST];
    tr_run_idem_key(h.s.run_text, 1, 1, k2);
    assert_memory_not_equal(key, k2, TR_RUN_DIGEST);
    tr_run_idem_key(h.s.run_text, 2, 0, k2);
    assert_memory_not_equal(key, k2, TR_RUN_DIGEST);
    h_free(&r);
    h_free(&h);
}

/* ---- approvals ---------------------------------------------------------------- */

static void setup_wire(struct harness *h)
{
    h_init(h, &agent_search, llm_wire, tool_echo);
    h_add_tool(h, "search", search_schema, J(Risk_Read));
    h_add_tool(h, "wire", "{\"type\":\"object\"}", J(Risk_Irreversible));
}

static const struct J(ApprovalRequested) *wait_for_approval(struct harness *h)
{
    struct tr_run_action a;

    assert_int_equal(h_drive(h, 100, &a), TR_RUN_ARM_DEADLINE);
    const struct J(ApprovalRequested) *ar = J(Event_data_as_ApprovalRequested)(last_ev(h));
    assert_non_null(ar);
    assert_true(a.at_us == J(ApprovalRequested_expires_at_us)(ar));
    assert_true(a.at_us == J(Event_time_us)(last_ev(h)) + 60000 * 1000);
    assert_int_equal(J(ApprovalRequested_risk)(ar), J(Risk_Irreversible));
    tr_run_action_free(&a);
    /* Nothing else to do: idle, so the shell may passivate. */
    assert_int_equal(h_drive(h, 100, &a), TR_RUN_WAIT);
    assert_true(a.idle);
    tr_run_action_free(&a);
    assert_int_equal(h->tool_calls, 0);
    char id[TR_RUN_APPROVAL_ID];
    tr_run_approval_id(h->s.run_text, 1, 0, id);
    assert_string_equal(J(ApprovalRequested_approval_id)(ar).ptr, id);
    return ar;
}

static void test_approval_approve(void **st)
{
    struct harness h;

    setup_wire(&h);
    const struct J(ApprovalRequested) *ar = wait_for_approval(&h);
    h_fsm_decided(&h, J(ApprovalRequested_approval_id)(ar).ptr, J(Decision_Approve), "ok");
    assert_int_equal(h_drive(&h, 100, NULL), TR_RUN_EXIT);
    assert_int_equal(h.tool_calls, 1);
    assert_int_equal(h_count(&h, J(Data_ToolStarted)), 1);
    assert_non_null(J(Event_data_as_RunSucceeded)(last_ev(&h)));
    h_free(&h);
}

static void test_approval_deny(void **st)
{
    struct harness h;
    struct tr_run_action a;

    setup_wire(&h);
    const struct J(ApprovalRequested) *ar = wait_for_approval(&h);
    h_fsm_decided(&h, J(ApprovalRequested_approval_id)(ar).ptr, J(Decision_Deny), "too much money");
    h.manual_llm = true;
    assert_int_equal(h_drive(&h, 100, &a), TR_RUN_CALL_LLM);
    /* The agent is told, and may continue. */
    const struct J(ToolCompleted) *c = last_completed(&h);
    assert_true(J(ToolCompleted_is_error)(c));
    assert_string_equal(J(ToolCompleted_error)(c).ptr, "denied by a human: too much money");
    assert_non_null(strstr(a.json, "denied by a human: too much money"));
    assert_int_equal(a.step, 2);
    tr_run_action_free(&a);
    h.manual_llm = false;
    char *reply = h_llm_text("ok, not wiring", 1, 1, 1);
    h_llm_reply(&h, reply);
    tr_free(reply);
    assert_int_equal(h_drive(&h, 100, NULL), TR_RUN_EXIT);
    assert_int_equal(h.tool_calls, 0);
    assert_int_equal(h_count(&h, J(Data_ToolStarted)), 0);
    assert_non_null(J(Event_data_as_RunSucceeded)(last_ev(&h)));
    h_free(&h);
}

static void test_approval_expired(void **st)
{
    struct harness h;
    struct tr_run_action a;

    setup_wire(&h);
    const struct J(ApprovalRequested) *ar = wait_for_approval(&h);
    int64_t expires = J(ApprovalRequested_expires_at_us)(ar);
    char id[TR_RUN_APPROVAL_ID];
    snprintf(id, sizeof id, "%s", J(ApprovalRequested_approval_id)(ar).ptr);
    /* The deadline passes: propose Expired, once. */
    h.fixed_now = expires + 1;
    assert_int_equal(h_drive(&h, 100, &a), TR_RUN_PROPOSE_EXPIRE);
    const struct troupe_cmd_Command *cmd = troupe_cmd_Command_verify_as_root(a.buf, a.len, NULL);
    assert_non_null(cmd);
    const struct troupe_cmd_ApprovalDecide *d = troupe_cmd_Command_op_as_ApprovalDecide(cmd);
    assert_non_null(d);
    assert_string_equal(troupe_cmd_ApprovalDecide_approval_id(d).ptr, id);
    assert_string_equal(troupe_cmd_ApprovalDecide_run_id(d).ptr, h.s.run_text);
    assert_int_equal(troupe_cmd_ApprovalDecide_decision(d), J(Decision_Expired));
    assert_string_equal(troupe_cmd_ApprovalDecide_decided_by(d).ptr, "timeout");
    tr_run_action_free(&a);
    assert_int_equal(h_drive(&h, 100, &a), TR_RUN_WAIT);
    assert_false(a.idle); /* a proposal is out */
    tr_run_action_free(&a);
    /* The FSM applies it (the first decision wins). */
    h_fsm_decided(&h, id, J(Decision_Expired), "no decision before the deadline");
    h.fixed_now = 0;
    assert_int_equal(h_drive(&h, 100, NULL), TR_RUN_EXIT);
    assert_int_equal(h.tool_calls, 0);
    bool found = false;
    for (uint32_t i = 0; i < h.n; i++) {
        const struct J(ToolCompleted) *c = J(Event_data_as_ToolCompleted)(ev(&h, i));
        if (c) {
            assert_string_equal(J(ToolCompleted_error)(c).ptr, "approval expired (default deny)");
            found = true;
        }
    }
    assert_true(found);
    h_free(&h);
}

static void test_approval_replay_rearms(void **st)
{
    struct harness h, r;
    struct tr_run_action a;

    setup_wire(&h);
    const struct J(ApprovalRequested) *ar = wait_for_approval(&h);
    int64_t expires = J(ApprovalRequested_expires_at_us)(ar);
    /* A new incarnation (restart, reactivation) arms the deadline again. */
    h_replay(&r, &h, h.n);
    h_decide(&r, &a);
    assert_int_equal(a.kind, TR_RUN_ARM_DEADLINE);
    assert_true(a.at_us == expires);
    tr_run_action_free(&a);
    h_free(&r);
    /* Replayed after the deadline: propose Expired at once. */
    h_replay(&r, &h, h.n);
    r.fixed_now = expires + 5000000;
    h_decide(&r, &a);
    assert_int_equal(a.kind, TR_RUN_PROPOSE_EXPIRE);
    tr_run_action_free(&a);
    h_free(&r);
    /* A human decision while the run was down is in the journal already. */
    h_fsm_decided(&h, J(ApprovalRequested_approval_id)(ar).ptr, J(Decision_Approve), "fine");
    h_replay(&r, &h, h.n);
    assert_int_equal(h_drive(&r, 100, NULL), TR_RUN_EXIT);
    assert_int_equal(r.tool_calls, 1);
    h_free(&r);
    h_free(&h);
}

/* A write tool marked by policy waits for a human too. */
static void test_approval_policy_mark(void **st)
{
    struct harness h;
    struct tr_run_action a;
    struct h_agent ag = agent_search;

    ag.tools[1] = "post";
    h_init(&h, &ag, llm_post, tool_echo);
    h_add_tool(&h, "post", NULL, J(Risk_Write));
    h_tool(&h, "post")->config = "{\"url\":\"http://x/\",\"require_approval\":true}";
    assert_int_equal(h_drive(&h, 100, &a), TR_RUN_ARM_DEADLINE);
    tr_run_action_free(&a);
    const struct J(ApprovalRequested) *ar = J(Event_data_as_ApprovalRequested)(last_ev(&h));
    assert_non_null(ar);
    assert_int_equal(J(ApprovalRequested_risk)(ar), J(Risk_Write));
    assert_string_equal(J(ApprovalRequested_reason)(ar).ptr, "policy");
    h_fsm_decided(&h, J(ApprovalRequested_approval_id)(ar).ptr, J(Decision_Approve), "");
    assert_int_equal(h_drive(&h, 100, NULL), TR_RUN_EXIT);
    assert_int_equal(h.tool_calls, 1);
    h_free(&h);
}

/* While an approval is open, one append at a time (run.h invariant 6). */
static void test_open_approval_serializes(void **st)
{
    struct harness h;
    struct tr_run_action a;
    static const char *const names[] = { "wire", "search" };
    static const char *const args[] = { "{}", "{\"q\":\"x\"}" };
    char *reply = h_llm_calls(1, 1, 1, 2, names, args);

    setup_wire(&h);
    h.manual_llm = true;
    h.no_ack = true;
    /* The llm call does not wait for llm.requested's ack (invariant 2). */
    assert_int_equal(h_drive(&h, 100, &a), TR_RUN_CALL_LLM);
    assert_int_equal(h.v.appends_inflight, 1);
    tr_run_action_free(&a);
    h_llm_reply(&h, reply);
    tr_free(reply);
    assert_int_equal(h_drive(&h, 100, &a), TR_RUN_WAIT);
    tr_run_action_free(&a);
    assert_int_equal(h_type(&h, h.n - 1), J(Data_ApprovalRequested));
    assert_true(h.v.appends_inflight >= 2);
    h_ack_all(&h);
    /* The deadline, then one append at a time: tool.requested for the search call. */
    h_decide(&h, &a);
    assert_int_equal(a.kind, TR_RUN_ARM_DEADLINE);
    h_apply(&h, &a);
    tr_run_action_free(&a);
    h_decide(&h, &a);
    assert_int_equal(a.kind, TR_RUN_APPEND);
    assert_int_equal(a.event_type, J(Data_ToolRequested));
    assert_int_equal(a.call_index, 1);
    h_apply(&h, &a);
    tr_run_action_free(&a);
    h_decide(&h, &a);
    assert_int_equal(a.kind, TR_RUN_WAIT);
    tr_run_action_free(&a);
    h_free(&h);
}

/* ---- caps -------------------------------------------------------------------- */

static void run_capped(struct h_agent ag, uint32_t want_steps, int want_cap)
{
    struct harness h;

    h_init(&h, &ag, llm_forever, tool_echo);
    h_add_tool(&h, "search", search_schema, J(Risk_Read));
    assert_int_equal(h_drive(&h, 1000, NULL), TR_RUN_EXIT);
    assert_string_equal(failed_code(&h), "budget_exceeded");
    assert_int_equal(h.s.n_steps, want_steps);
    const struct J(BudgetExceeded) *b = J(Event_data_as_BudgetExceeded)(ev(&h, h.n - 2));
    assert_non_null(b);
    assert_int_equal(J(BudgetExceeded_cap)(b), want_cap);
    h_free(&h);
}

static void test_caps(void **st)
{
    struct h_agent ag = agent_search;

    ag.max_steps = 3;
    run_capped(ag, 3, J(Cap_Steps));
    ag = agent_search;
    ag.max_tokens = 250; /* 110 per step: 330 after step 3 */
    run_capped(ag, 3, J(Cap_Tokens));
    ag = agent_search;
    ag.max_cost_usd = 0.002; /* 1000 micro-USD per step */
    run_capped(ag, 2, J(Cap_Cost));
}

static void test_wall_time(void **st)
{
    struct harness h;
    struct h_agent ag = agent_search;
    struct tr_run_action a;

    ag.timeout_s = 10;
    h_init(&h, &ag, llm_forever, tool_echo);
    h_add_tool(&h, "search", search_schema, J(Risk_Read));
    h.manual_llm = true;
    assert_int_equal(h_drive(&h, 100, &a), TR_RUN_CALL_LLM);
    tr_run_action_free(&a);
    /* The llm hangs past the deadline (the shell's wall timer fires). */
    h.fixed_now = h.s.created_us + 10 * 1000000;
    assert_int_equal(h_drive(&h, 100, NULL), TR_RUN_EXIT);
    assert_string_equal(failed_code(&h), "budget_exceeded");
    const struct J(BudgetExceeded) *b = J(Event_data_as_BudgetExceeded)(ev(&h, h.n - 2));
    assert_int_equal(J(BudgetExceeded_cap)(b), J(Cap_WallTime));
    h_free(&h);
}

/* ---- loops --------------------------------------------------------------------- */

static char *tool_step(struct harness *h, const char *name, const char *args, const char *key, uint32_t step,
                       uint32_t idx)
{
    char buf[64];
    snprintf(buf, sizeof buf, "fresh %u", step);
    return h_tool_ok(buf);
}

static void test_loop_repeats(void **st)
{
    struct harness h;
    struct tr_run_action a;

    h_init(&h, &agent_search, llm_same, tool_step);
    h_add_tool(&h, "search", search_schema, J(Risk_Read));
    h.manual_llm = true;
    for (uint32_t step = 1; step <= 4; step++) {
        assert_int_equal(h_drive(&h, 100, &a), TR_RUN_CALL_LLM);
        assert_int_equal(a.step, step);
        /* The correction reaches the model at the step after the detection. */
        assert_true((strstr(a.json, "same arguments 3 times") != NULL) == (step == 4));
        tr_run_action_free(&a);
        char *reply = llm_same(&h, step, 1);
        h_llm_reply(&h, reply);
        tr_free(reply);
        if (step == 3)
            assert_int_equal(h_count(&h, J(Data_LoopDetected)), 0);
    }
    assert_int_equal(h_drive(&h, 100, NULL), TR_RUN_EXIT);
    assert_int_equal(h_count(&h, J(Data_LoopDetected)), 2);
    assert_string_equal(failed_code(&h), "loop_detected");
    const struct J(LoopDetected) *ld = J(Event_data_as_LoopDetected)(ev(&h, h.n - 2));
    assert_non_null(ld);
    assert_int_equal(J(LoopDetected_step)(ld), 4);
    assert_int_equal(J(LoopDetected_repeats)(ld), 4);
    assert_int_equal(J(LoopDetected_signature)(ld).len, TR_RUN_SIG);
    h_free(&h);
}

static void test_loop_nothing_new(void **st)
{
    struct harness h;

    h_init(&h, &agent_search, llm_forever, tool_same);
    h_add_tool(&h, "search", search_schema, J(Risk_Read));
    assert_int_equal(h_drive(&h, 1000, NULL), TR_RUN_EXIT);
    assert_string_equal(failed_code(&h), "loop_detected");
    uint32_t steps[2], n = 0;
    for (uint32_t i = 0; i < h.n; i++) {
        const struct J(LoopDetected) *ld = J(Event_data_as_LoopDetected)(ev(&h, i));
        if (ld) {
            assert_true(n < 2);
            steps[n++] = J(LoopDetected_step)(ld);
            assert_non_null(strstr(J(LoopDetected_detail)(ld).ptr, "nothing new"));
        }
    }
    assert_int_equal(n, 2);
    /* Step 1 is new; 2-6 bring nothing new; then 7-11 after the correction. */
    assert_int_equal(steps[0], 6);
    assert_int_equal(steps[1], 11);
    h_free(&h);
}

/* ---- malformed calls ----------------------------------------------------------- */

static const char *error_at_step(const struct harness *h, uint32_t step)
{
    for (uint32_t i = 0; i < h->n; i++) {
        const struct J(ToolCompleted) *c = J(Event_data_as_ToolCompleted)(ev(h, i));
        if (c && J(ToolCompleted_step)(c) == step)
            return J(ToolCompleted_is_error)(c) ? J(ToolCompleted_error)(c).ptr : NULL;
    }
    return NULL;
}

static void test_malformed_calls(void **st)
{
    struct harness h;
    struct tr_run_action a;

    h_init(&h, &agent_search, llm_malformed, tool_echo);
    h_add_tool(&h, "search", search_schema, J(Risk_Read));
    h.manual_llm = true;
    for (uint32_t step = 1; step <= 6; step++) {
        assert_int_equal(h_drive(&h, 100, &a), TR_RUN_CALL_LLM);
        if (step == 2) /* the model hears about its mistake */
            assert_non_null(strstr(a.json, "invalid tool call: unknown tool \\\"nope\\\""));
        tr_run_action_free(&a);
        char *reply = llm_malformed(&h, step, 1);
        h_llm_reply(&h, reply);
        tr_free(reply);
    }
    assert_int_equal(h_drive(&h, 100, NULL), TR_RUN_EXIT);
    assert_non_null(J(Event_data_as_RunSucceeded)(last_ev(&h)));
    assert_non_null(strstr(error_at_step(&h, 1), "invalid tool call: unknown tool \"nope\""));
    assert_non_null(strstr(error_at_step(&h, 2), "invalid tool call: arguments are not valid JSON"));
    const char *e3 = error_at_step(&h, 3);
    assert_non_null(strstr(e3, "invalid tool call: arguments do not match the schema of \"search\""));
    assert_non_null(strstr(e3, "/q"));
    assert_non_null(strstr(error_at_step(&h, 4), "must be a JSON object"));
    assert_null(error_at_step(&h, 5));
    assert_int_equal(h.tool_calls, 1);
    assert_int_equal(h.s.invalid_streak, 0);
    h_free(&h);
}

static void test_invalid_limit(void **st)
{
    struct harness h;

    h_init(&h, &agent_search, llm_nope, tool_echo);
    h_add_tool(&h, "search", search_schema, J(Risk_Read));
    assert_int_equal(h_drive(&h, 1000, NULL), TR_RUN_EXIT);
    assert_string_equal(failed_code(&h), "invalid_tool_calls");
    assert_int_equal(h.s.n_steps, TR_RUN_MAX_INVALID);
    assert_int_equal(h.tool_calls, 0);
    h_free(&h);
}

static void test_disabled_and_unlisted(void **st)
{
    struct harness h;
    struct h_agent ag = agent_search;

    ag.tools[0] = "search"; /* "other" is registered but not the agent's */
    ag.tools[1] = NULL;
    h_init(&h, &ag, llm_ten, tool_echo);
    h_add_tool(&h, "search", search_schema, J(Risk_Read));
    h_add_tool(&h, "other", NULL, J(Risk_Read));
    h_tool(&h, "search")->enabled = false; /* kill switch */
    h.manual_llm = true;
    struct tr_run_action a;
    assert_int_equal(h_drive(&h, 100, &a), TR_RUN_CALL_LLM);
    /* Neither is offered; builtins are. */
    assert_null(strstr(a.json, "\"name\":\"search\""));
    assert_null(strstr(a.json, "\"name\":\"other\""));
    assert_non_null(strstr(a.json, "\"name\":\"finish\""));
    assert_non_null(strstr(a.json, "\"name\":\"scratchpad_write\""));
    assert_non_null(strstr(a.json, "\"name\":\"current_time\""));
    tr_run_action_free(&a);
    char *reply = h_llm_call1("search", "{\"q\":\"x\"}");
    h_llm_reply(&h, reply);
    tr_free(reply);
    assert_int_equal(h_drive(&h, 100, &a), TR_RUN_CALL_LLM);
    tr_run_action_free(&a);
    assert_non_null(strstr(error_at_step(&h, 1), "disabled"));
    reply = h_llm_call1("other", "{}");
    h_llm_reply(&h, reply);
    tr_free(reply);
    assert_int_equal(h_drive(&h, 100, &a), TR_RUN_CALL_LLM);
    tr_run_action_free(&a);
    assert_non_null(strstr(error_at_step(&h, 2), "unknown tool \"other\""));
    assert_int_equal(h.tool_calls, 0);
    h_free(&h);
}

/* ---- parallel calls -------------------------------------------------------------- */

static void test_parallel_any_order(void **st)
{
    struct harness h;
    struct tr_run_action a;
    static const char *const names[] = { "search", "search", "search" };
    static const char *const args[] = { "{\"q\":\"a\"}", "{\"q\":\"b\"}", "{\"q\":\"c\"}" };
    char *reply = h_llm_calls(10, 10, 10, 3, names, args);

    setup_ten(&h);
    h.manual_llm = true;
    h.manual_tools = true;
    assert_int_equal(h_drive(&h, 100, &a), TR_RUN_CALL_LLM);
    tr_run_action_free(&a);
    h_llm_reply(&h, reply);
    tr_free(reply);
    /* All three go out before any answer. */
    for (uint32_t i = 0; i < 3; i++) {
        assert_int_equal(h_drive(&h, 100, &a), TR_RUN_CALL_TOOL);
        assert_int_equal(a.call_index, i);
        tr_run_action_free(&a);
    }
    assert_int_equal(h_drive(&h, 100, &a), TR_RUN_WAIT);
    assert_false(a.idle);
    tr_run_action_free(&a);
    /* Answers in the order 2, 0, 1. */
    static const uint32_t order[] = { 2, 0, 1 };
    for (int k = 0; k < 3; k++) {
        char res[16];
        snprintf(res, sizeof res, "R%u", order[k]);
        char *j = h_tool_ok(res);
        h_tool_reply(&h, order[k], j);
        tr_free(j);
        int want = k < 2 ? TR_RUN_WAIT : TR_RUN_CALL_LLM;
        assert_int_equal(h_drive(&h, 100, &a), want);
        assert_int_equal(J(ToolCompleted_call_index)(last_completed(&h)), order[k]);
        if (want == TR_RUN_CALL_LLM) {
            /* The next prompt lists the results in call order. */
            const char *p0 = strstr(a.json, "\"content\":\"R0\"");
            const char *p1 = strstr(a.json, "\"content\":\"R1\"");
            const char *p2 = strstr(a.json, "\"content\":\"R2\"");
            assert_true(p0 && p1 && p2 && p0 < p1 && p1 < p2);
            assert_int_equal(a.step, 2);
        }
        tr_run_action_free(&a);
    }
    h_free(&h);
}

/* Appends are pipelined; no write tool executes before its tool.started is
 * acked. */
static void test_pipelined_appends(void **st)
{
    struct harness h;
    struct tr_run_action a;
    static const char *const names[] = { "wire", "wire" };
    static const char *const args[] = { "{\"q\":\"a\"}", "{\"q\":\"b\"}" };

    setup_ten(&h);
    h_add_tool(&h, "wire", "{\"type\":\"object\"}", J(Risk_Write));
    h.manual_llm = true;
    assert_int_equal(h_drive(&h, 100, &a), TR_RUN_CALL_LLM);
    tr_run_action_free(&a);
    char *reply = h_llm_calls(10, 10, 10, 2, names, args);
    h_llm_reply(&h, reply);
    tr_free(reply);
    h.no_ack = true;
    h.manual_tools = true;
    assert_int_equal(h_drive(&h, 100, &a), TR_RUN_WAIT);
    tr_run_action_free(&a);
    /* llm.completed, 2 x tool.requested, 2 x tool.started, all in flight. */
    assert_int_equal(h.v.appends_inflight, 5);
    assert_int_equal(h.tool_calls, 0);
    h_ack_all(&h);
    assert_int_equal(h_drive(&h, 100, &a), TR_RUN_CALL_TOOL);
    tr_run_action_free(&a);
    h_free(&h);
}


/* The llm call goes out with its llm.requested, before the ack, and sends
 * exactly the prompt that event names (invariants 2 and 4). */
static void test_llm_call_before_ack(void **st)
{
    struct harness h;
    struct tr_run_action a;
    unsigned char d[TR_RUN_DIGEST];

    setup_ten(&h);
    h.manual_llm = true;
    h.no_ack = true;
    assert_int_equal(h_drive(&h, 100, &a), TR_RUN_CALL_LLM);
    assert_int_equal(a.step, 1);
    assert_int_equal(h.v.appends_inflight, 1);
    assert_int_equal(h_type(&h, h.n - 1), J(Data_LlmRequested));
    assert_true(tr_run_last_step(&h.s)->llm_req_seq > h.v.acked_seq);
    crypto_generichash(d, sizeof d, (const unsigned char *)a.json, a.json_len, NULL, 0);
    assert_memory_equal(d, tr_run_last_step(&h.s)->prompt_digest, TR_RUN_DIGEST);
    assert_memory_equal(d, J(LlmRequested_prompt_digest)(J(Event_data_as_LlmRequested)(last_ev(&h))).data,
                        TR_RUN_DIGEST);
    tr_run_action_free(&a);
    /* One call at a time. */
    h_decide(&h, &a);
    assert_int_equal(a.kind, TR_RUN_WAIT);
    assert_false(a.idle);
    tr_run_action_free(&a);
    h_free(&h);
}

/* A read tool runs once its tool.started is sent; it is still journaled. */
static void test_read_tool_at_once(void **st)
{
    struct harness h;
    struct tr_run_action a;

    setup_ten(&h);
    h.manual_llm = true;
    h.manual_tools = true;
    h.no_ack = true;
    assert_int_equal(h_drive(&h, 100, &a), TR_RUN_CALL_LLM);
    tr_run_action_free(&a);
    char *reply = llm_ten(&h, 1, 1);
    h_llm_reply(&h, reply);
    tr_free(reply);
    assert_int_equal(h_drive(&h, 100, &a), TR_RUN_CALL_TOOL);
    tr_run_action_free(&a);
    /* llm.requested, llm.completed, tool.requested, tool.started: none acked. */
    assert_int_equal(h.v.appends_inflight, 4);
    assert_int_equal(h_type(&h, h.n - 1), J(Data_ToolStarted));
    assert_int_equal(h.tool_calls, 1);
    h_free(&h);
}

static void setup_write(struct harness *h)
{
    h_init(h, &agent_search, llm_wire, tool_echo);
    h_add_tool(h, "wire", "{\"type\":\"object\"}", J(Risk_Write));
}

/* llm.requested fails after its call went out: the refold journals the
 * reply that arrived, without a second call or a second llm.completed; the
 * write tool waits for the ack of the tool.started written again. */
static void test_refold_after_call(void **st)
{
    struct harness h;
    struct tr_run_action a;

    setup_write(&h);
    h.manual_llm = true;
    h.no_ack = true;
    assert_int_equal(h_drive(&h, 100, &a), TR_RUN_CALL_LLM);
    tr_run_action_free(&a);
    uint32_t keep = h.n - 1; /* the store has run.created only */
    char *reply = llm_wire(&h, 1, 1);
    h_llm_reply(&h, reply);
    tr_free(reply);
    assert_int_equal(h_drive(&h, 100, &a), TR_RUN_WAIT);
    tr_run_action_free(&a);
    assert_int_equal(h_type(&h, h.n - 1), J(Data_ToolStarted));
    assert_int_equal(h.tool_calls, 0);
    /* BAD_SEQ for llm.requested, and so for everything behind it. */
    h_refold(&h, keep);
    assert_int_equal(h.s.n_steps, 0);
    h.no_ack = false;
    assert_int_equal(h_drive(&h, 100, &a), TR_RUN_CALL_LLM);
    assert_int_equal(a.step, 2);
    tr_run_action_free(&a);
    assert_int_equal(h.llm_calls, 2); /* step 1 once, step 2 */
    assert_int_equal(h.tool_calls, 1);
    assert_int_equal(h_count(&h, J(Data_LlmRequested)), 2);
    assert_int_equal(h_count(&h, J(Data_LlmCompleted)), 1);
    assert_int_equal(h_count(&h, J(Data_ToolStarted)), 1);
    assert_int_equal(h_count(&h, J(Data_ToolCompleted)), 1);
    reply = llm_wire(&h, 2, 1);
    h_llm_reply(&h, reply);
    tr_free(reply);
    assert_int_equal(h_drive(&h, 100, NULL), TR_RUN_EXIT);
    assert_int_equal(h_count(&h, J(Data_LlmCompleted)), 2);
    assert_non_null(J(Event_data_as_RunSucceeded)(last_ev(&h)));
    h_free(&h);
}

/* After tool.completed the next llm call goes out at once. Then
 * tool.completed fails: the refold goes back a step; the tool's result and
 * the next step's llm reply (arriving meanwhile) are kept and journaled
 * again, neither repeated. */
static void test_refold_across_steps(void **st)
{
    struct harness h;
    struct tr_run_action a;

    setup_write(&h);
    h.manual_llm = true;
    h.manual_tools = true;
    assert_int_equal(h_drive(&h, 100, &a), TR_RUN_CALL_LLM);
    tr_run_action_free(&a);
    char *reply = llm_wire(&h, 1, 1);
    h_llm_reply(&h, reply);
    tr_free(reply);
    assert_int_equal(h_drive(&h, 100, &a), TR_RUN_CALL_TOOL);
    tr_run_action_free(&a);
    uint32_t keep = h.n; /* up to tool.started, acked */
    h.no_ack = true;
    reply = h_tool_ok("wired");
    h_tool_reply(&h, 0, reply);
    tr_free(reply);
    assert_int_equal(h_drive(&h, 100, &a), TR_RUN_CALL_LLM);
    assert_int_equal(a.step, 2);
    assert_non_null(strstr(a.json, "wired"));
    tr_run_action_free(&a);
    assert_int_equal(h.v.appends_inflight, 2); /* tool.completed, llm.requested */
    /* tool.completed is refused: back to step 1. */
    h_refold(&h, keep);
    assert_int_equal(h.s.n_steps, 1);
    h_decide(&h, &a);
    assert_int_equal(a.kind, TR_RUN_APPEND);
    assert_int_equal(a.event_type, J(Data_ToolCompleted));
    h_apply(&h, &a);
    tr_run_action_free(&a);
    /* The step-2 reply arrives while the fold is at step 1: held. */
    struct tr_run_llm_result *res = tr_calloc(1, sizeof *res);
    reply = llm_wire(&h, 2, 1);
    h_llm_result(reply, res);
    tr_free(reply);
    assert_false(tr_run_vol_llm_reply(&h.v, 2, res));
    assert_int_equal(h.v.n_held, 1);
    assert_int_equal(h_drive(&h, 100, &a), TR_RUN_WAIT); /* run.succeeded, waiting for its ack */
    tr_run_action_free(&a);
    h_ack_all(&h);
    assert_int_equal(h_drive(&h, 100, NULL), TR_RUN_EXIT);
    assert_int_equal(h.tool_calls, 1);
    assert_int_equal(h.llm_calls, 2);
    assert_int_equal(h_count(&h, J(Data_ToolCompleted)), 1);
    assert_int_equal(h_count(&h, J(Data_LlmRequested)), 2);
    assert_int_equal(h_count(&h, J(Data_LlmCompleted)), 2);
    assert_non_null(J(Event_data_as_RunSucceeded)(last_ev(&h)));
    assert_int_equal(h.v.n_held, 0);
    h_free(&h);
}

/* ---- cancel, llm errors, builtins -------------------------------------------------- */

static void test_cancel(void **st)
{
    struct harness h, r;
    struct tr_run_action a;

    setup_ten(&h);
    h.manual_llm = true;
    assert_int_equal(h_drive(&h, 100, &a), TR_RUN_CALL_LLM);
    tr_run_action_free(&a);
    h_fsm_cancelled(&h);
    h_decide(&h, &a);
    assert_int_equal(a.kind, TR_RUN_EXIT);
    assert_int_equal(a.exit_reason, 0);
    /* A late llm answer changes nothing. */
    char *reply = h_llm_text("late", 1, 1, 1);
    h_llm_reply(&h, reply);
    tr_free(reply);
    h_decide(&h, &a);
    assert_int_equal(a.kind, TR_RUN_EXIT);
    /* Replay of a cancelled run: exit at once. */
    h_replay(&r, &h, h.n);
    h_decide(&r, &a);
    assert_int_equal(a.kind, TR_RUN_EXIT);
    h_free(&r);
    h_free(&h);
    /* Cancelled while waiting for a human. */
    setup_wire(&h);
    wait_for_approval(&h);
    h_fsm_cancelled(&h);
    assert_int_equal(h_drive(&h, 10, NULL), TR_RUN_EXIT);
    assert_int_equal(h.tool_calls, 0);
    h_free(&h);
}

static void test_llm_errors(void **st)
{
    struct harness h;
    struct tr_run_action a;

    setup_ten(&h);
    h.manual_llm = true;
    assert_int_equal(h_drive(&h, 100, &a), TR_RUN_CALL_LLM);
    tr_run_action_free(&a);
    h_llm_reply(&h, "{\"ok\":false,\"error\":{\"code\":\"rate_limited\",\"message\":\"slow down\","
                    "\"retryable\":true,\"retry_after_ms\":500}}");
    h.fixed_now = h_now(&h);
    h.v.retry_at_us = h.fixed_now + 500000; /* the shell's timer */
    h_decide(&h, &a);
    assert_int_equal(a.kind, TR_RUN_WAIT);
    h.fixed_now += 500000;
    assert_int_equal(h_drive(&h, 100, &a), TR_RUN_CALL_LLM);
    assert_int_equal(a.attempt, 2);
    tr_run_action_free(&a);
    assert_int_equal(h_count(&h, J(Data_LlmRequested)), 2);
    /* Retry until the attempt limit. */
    for (uint32_t i = 2; i <= TR_RUN_LLM_MAX_ATTEMPTS; i++) {
        h_llm_reply(&h, "{\"ok\":false,\"error\":{\"code\":\"unavailable\",\"message\":\"503\",\"retryable\":true}}");
        int k = h_drive(&h, 100, &a);
        tr_run_action_free(&a);
        if (i < TR_RUN_LLM_MAX_ATTEMPTS)
            assert_int_equal(k, TR_RUN_CALL_LLM);
        else
            assert_int_equal(k, TR_RUN_EXIT);
    }
    assert_string_equal(failed_code(&h), "llm_error");
    h_free(&h);

    setup_ten(&h);
    h.manual_llm = true;
    assert_int_equal(h_drive(&h, 100, &a), TR_RUN_CALL_LLM);
    tr_run_action_free(&a);
    h_llm_reply(&h, "{\"ok\":false,\"error\":{\"code\":\"rejected\",\"message\":\"400 bad model\",\"retryable\":false}}");
    assert_int_equal(h_drive(&h, 100, NULL), TR_RUN_EXIT);
    assert_string_equal(failed_code(&h), "llm_error");
    const struct J(RunFailed) *f = J(Event_data_as_RunFailed)(last_ev(&h));
    assert_string_equal(J(RunFailed_error)(f).ptr, "rejected: 400 bad model");
    h_free(&h);
}

static void test_builtins(void **st)
{
    struct harness h, r;

    h_init(&h, &agent_search, llm_builtins, tool_echo);
    assert_int_equal(h_drive(&h, 100, NULL), TR_RUN_EXIT);
    assert_int_equal(h.tool_calls, 0);
    assert_string_equal(J(RunSucceeded_output)(J(Event_data_as_RunSucceeded)(last_ev(&h))).ptr, "bye");
    int seen = 0;
    for (uint32_t i = 0; i < h.n; i++) {
        const struct J(ToolCompleted) *c = J(Event_data_as_ToolCompleted)(ev(&h, i));
        if (!c)
            continue;
        uint32_t s = J(ToolCompleted_step)(c), k = J(ToolCompleted_call_index)(c);
        if (s == 1 && k == 1) { /* the time of its tool.requested, not the clock */
            assert_non_null(strstr(J(ToolCompleted_result)(c).ptr, "\"utc\":\"2026-01-01T00:00:00Z\""));
            seen++;
        } else if (s == 2 && k == 0) {
            assert_string_equal(J(ToolCompleted_result)(c).ptr, "step one");
            seen++;
        } else if (s == 2 && k == 1) {
            assert_true(J(ToolCompleted_is_error)(c));
            assert_non_null(strstr(J(ToolCompleted_error)(c).ptr, "no value under key"));
            seen++;
        }
    }
    assert_int_equal(seen, 3);
    /* The scratchpad is part of the fold. */
    h_replay(&r, &h, h.n);
    assert_string_equal(tr_run_scratch_get(&r.s, "plan"), "step one");
    h_free(&r);
    h_free(&h);
}

/* A large result: a prefix in the event, the whole in a blob named by digest. */
static void test_large_result_blob(void **st)
{
    struct harness h;
    struct tr_run_action a;
    char *big = tr_malloc(10001);

    memset(big, 'x', 10000);
    big[10000] = '\0';
    setup_ten(&h);
    h.manual_tools = true;
    assert_int_equal(h_drive(&h, 100, &a), TR_RUN_CALL_TOOL);
    tr_run_action_free(&a);
    char *j = h_tool_ok(big);
    h_tool_reply(&h, 0, j);
    tr_free(j);
    h_decide(&h, &a);
    assert_int_equal(a.kind, TR_RUN_APPEND);
    assert_int_equal(a.event_type, J(Data_ToolCompleted));
    assert_int_equal(a.blob_len, 10000);
    const struct J(Event) *e = J(Event_verify_as_root)(a.buf, a.len, NULL);
    const struct J(ToolCompleted) *c = J(Event_data_as_ToolCompleted)(e);
    unsigned char d[TR_RUN_DIGEST];
    crypto_generichash(d, sizeof d, (const unsigned char *)big, 10000, NULL, 0);
    assert_int_equal(J(ToolCompleted_result_digest)(c).len, TR_RUN_DIGEST);
    assert_memory_equal(J(ToolCompleted_result_digest)(c).data, d, TR_RUN_DIGEST);
    assert_int_equal(J(ToolCompleted_result_size)(c), 10000);
    assert_int_equal(J(ToolCompleted_result)(c).len, TR_RUN_PROMPT_RESULT_MAX);
    h_apply(&h, &a);
    tr_run_action_free(&a);
    h.manual_llm = true;
    assert_int_equal(h_drive(&h, 100, &a), TR_RUN_CALL_LLM);
    char hex[2 * TR_RUN_DIGEST + 1], marker[200];
    tr_run_hex(d, sizeof d, hex);
    snprintf(marker, sizeof marker, "[truncated: showing 2048 of 10000 bytes; full result in blob %s]", hex);
    assert_non_null(strstr(a.json, marker));
    tr_run_action_free(&a);
    tr_free(big);
    h_free(&h);
}

static void test_fold_rejects(void **st)
{
    struct harness h, other;
    struct tr_run_state s;

    setup_ten(&h);
    assert_int_equal(h_drive(&h, 1000, NULL), TR_RUN_EXIT);
    /* A gap. */
    tr_run_state_init(&s, h.s.run_id, 1);
    assert_int_equal(tr_run_fold(&s, h.ev[0], h.len[0]), 0);
    assert_int_equal(tr_run_fold(&s, h.ev[2], h.len[2]), TR_EINVAL);
    assert_non_null(strstr(s.fold_error, "seq"));
    tr_run_state_free(&s);
    /* Another run's events. */
    tr_run_state_init(&s, 77, 1);
    assert_int_equal(tr_run_fold(&s, h.ev[0], h.len[0]), TR_EINVAL);
    tr_run_state_free(&s);
    /* Garbage. */
    tr_run_state_init(&s, h.s.run_id, 1);
    assert_int_equal(tr_run_fold(&s, "garbage!", 8), TR_EINVAL);
    tr_run_state_free(&s);
    /* A journal without run.created cannot run. */
    tr_run_state_init(&other.s, 5, 1);
    memset(&other.v, 0, sizeof other.v);
    struct tr_run_action a;
    tr_run_decide(&other.s, &other.v, &h.env, 0, &a);
    assert_int_equal(a.kind, TR_RUN_EXIT);
    assert_int_equal(a.exit_reason, 3);
    tr_run_state_free(&other.s);
    h_free(&h);
}

/* An event of run `run` at `seq`: run.created (with a wall-time cap) or
 * llm.requested of step 1, or only the type tag when !with_data. */
static uint8_t *raw_event(const char *run, uint64_t seq, int64_t t, uint8_t type, bool with_data, uint32_t timeout_s,
                          size_t *len)
{
    struct tr_fb_builder b;
    tr_fb_ref data = 0;

    tr_fb_builder_init(&b);
    if (with_data && type == J(Data_RunCreated)) {
        tr_fb_ref names[] = { tr_fb_create_str(&b, "search") };
        tr_fb_ref tv = J(AgentConfig_create_tools)(&b, names, 1);
        J(AgentConfig_start)(&b);
        J(AgentConfig_add_tools)(&b, tv);
        J(AgentConfig_add_timeout_s)(&b, timeout_s);
        tr_fb_ref agent = J(AgentConfig_end)(&b);
        tr_fb_ref tenant = tr_fb_create_str(&b, "acme"), goal = tr_fb_create_str(&b, "g");
        J(RunCreated_start)(&b);
        J(RunCreated_add_tenant)(&b, tenant);
        J(RunCreated_add_goal)(&b, goal);
        J(RunCreated_add_agent)(&b, agent);
        data = J(RunCreated_end)(&b);
    } else if (with_data) {
        J(LlmRequested_start)(&b);
        J(LlmRequested_add_step)(&b, 1);
        J(LlmRequested_add_attempt)(&b, 1);
        data = J(LlmRequested_end)(&b);
    }
    tr_fb_ref rid = tr_fb_create_str(&b, run);
    J(Event_start)(&b);
    J(Event_add_seq)(&b, seq);
    J(Event_add_time_us)(&b, t);
    J(Event_add_run_id)(&b, rid);
    J(Event_add_epoch)(&b, 1);
    J(Event_add_data_type)(&b, type);
    J(Event_add_data)(&b, data);
    /* a tag without its data is what a corrupt store holds: Event_end would
     * refuse to write it, the bare table end does not */
    J(Event_finish)(&b, with_data ? J(Event_end)(&b) : tr_fb_table_end(&b));
    const uint8_t *p = tr_fb_builder_data(&b, len);
    uint8_t *out = tr_memdup(p, *len);
    tr_fb_builder_free(&b);
    return out;
}

/* Journals from a corrupt store (found by tests/fuzz/fold): a clear error,
 * never a crash or a leak, and nothing folded after it. */
static void test_fold_corrupt_journal(void **st)
{
    struct tr_run_state s;
    size_t n1, n2, n3;
    uint8_t *e1, *e2, *e3;

    /* A union tag whose table is absent (Google's verifier lets it pass; the
     * fold read NULL): the verifier refuses it, so the fold does. */
    tr_run_state_init(&s, 5, 1);
    e1 = raw_event(s.run_text, 1, 1000, J(Data_RunCreated), true, 0, &n1);
    e2 = raw_event(s.run_text, 2, 2000, J(Data_LlmRequested), false, 0, &n2);
    assert_null(J(Event_verify_as_root)(e2, n2, NULL));
    assert_int_equal(tr_run_fold(&s, e1, n1), 0);
    assert_int_equal(tr_run_fold(&s, e2, n2), TR_EINVAL);
    assert_non_null(strstr(s.fold_error, "seq 2: "));
    assert_non_null(strstr(s.fold_error, "union type set but its value absent"));
    tr_free(e2);
    e2 = raw_event(s.run_text, 1, 2000, J(Data_RunCreated), false, 0, &n2);
    tr_run_state_free(&s);
    assert_int_equal(tr_run_fold(&s, e2, n2), TR_EINVAL);
    assert_false(s.created);
    tr_free(e2);
    tr_run_state_free(&s);

    /* run.created twice: refused (its agent's tools leaked). */
    e2 = raw_event(s.run_text, 2, 2000, J(Data_RunCreated), true, 0, &n2);
    assert_int_equal(tr_run_fold(&s, e1, n1), 0);
    assert_int_equal(tr_run_fold(&s, e2, n2), TR_EINVAL);
    assert_non_null(strstr(s.fold_error, "seq 2: run.created twice"));
    assert_int_equal(s.next_seq, 2);
    tr_free(e2);
    tr_run_state_free(&s);

    /* Sticky: after a refused event (a gap), the one that would have been
     * next is refused too, and the state and the first error stay. */
    e2 = raw_event(s.run_text, 3, 3000, J(Data_LlmRequested), true, 0, &n2);
    e3 = raw_event(s.run_text, 2, 2000, J(Data_LlmRequested), true, 0, &n3);
    assert_int_equal(tr_run_fold(&s, e1, n1), 0);
    assert_int_equal(tr_run_fold(&s, e2, n2), TR_EINVAL);
    char first[sizeof s.fold_error];
    memcpy(first, s.fold_error, sizeof first);
    assert_non_null(strstr(first, "seq 3: seq out of order"));
    assert_int_equal(tr_run_fold(&s, e3, n3), TR_EINVAL);
    assert_string_equal(s.fold_error, first);
    assert_int_equal(s.next_seq, 2);
    assert_int_equal(s.n_steps, 0);
    tr_free(e1);
    tr_free(e2);
    tr_free(e3);
    tr_run_state_free(&s);
}

/* A creation time far in the past (a corrupt store): now - created_us does
 * not fit an int64_t; the wall-time cap is simply reached. */
static void test_wall_time_far_past(void **st)
{
    struct tr_run_state s;
    struct tr_run_vol v = { 0 };
    struct tr_run_env env = { 0 };
    struct tr_run_action a;
    size_t n;

    tr_run_state_init(&s, 5, 1);
    uint8_t *e = raw_event(s.run_text, 1, INT64_MIN, J(Data_RunCreated), true, 30, &n);
    assert_int_equal(tr_run_fold(&s, e, n), 0);
    v.acked_seq = 1;
    tr_run_decide(&s, &v, &env, 1000, &a);
    assert_int_equal(a.kind, TR_RUN_APPEND);
    assert_int_equal(a.event_type, J(Data_BudgetExceeded));
    const struct J(BudgetExceeded) *b = J(Event_data_as_BudgetExceeded)(J(Event_verify_as_root)(a.buf, a.len, NULL));
    assert_int_equal(J(BudgetExceeded_cap)(b), J(Cap_WallTime));
    tr_run_action_free(&a);
    tr_free(e);
    tr_run_state_free(&s);
    tr_run_vol_free(&v);

    /* Created in the future: not timed out. */
    tr_run_state_init(&s, 5, 1);
    e = raw_event(s.run_text, 1, INT64_MAX, J(Data_RunCreated), true, 30, &n);
    assert_int_equal(tr_run_fold(&s, e, n), 0);
    v.acked_seq = 1;
    tr_run_decide(&s, &v, &env, 1000, &a);
    assert_int_equal(a.kind, TR_RUN_APPEND);
    assert_int_equal(a.event_type, J(Data_LlmRequested));
    tr_run_action_free(&a);
    tr_free(e);
    tr_run_state_free(&s);
    tr_run_vol_free(&v);
}

/* Text cut at a byte count must not split a UTF-8 character: jansson
 * refuses such text, and the prompt showed a placeholder instead of all of
 * it (found by tests/fuzz/fold). A human's denial reason: */
static void test_denial_reason_utf8(void **st)
{
    struct harness h;
    struct tr_run_action a;
    char reason[1 + 2 * 300 + 1];

    reason[0] = 'a'; /* so that the 400-byte cut falls inside a character */
    for (int i = 0; i < 300; i++)
        memcpy(reason + 1 + 2 * i, "\xc3\xa9", 2);
    reason[sizeof reason - 1] = '\0';
    setup_wire(&h);
    const struct J(ApprovalRequested) *ar = wait_for_approval(&h);
    h_fsm_decided(&h, J(ApprovalRequested_approval_id)(ar).ptr, J(Decision_Deny), reason);
    h.manual_llm = true;
    assert_int_equal(h_drive(&h, 100, &a), TR_RUN_CALL_LLM);
    const char *err = J(ToolCompleted_error)(last_completed(&h)).ptr;
    json_t *j = json_string(err);
    assert_non_null(j); /* UTF-8 */
    json_decref(j);
    assert_int_equal(strlen(err), strlen("denied by a human: a") + 2 * 199);
    assert_null(strstr(a.json, "not valid UTF-8"));
    assert_non_null(strstr(a.json, "denied by a human: a\xc3\xa9"));
    tr_run_action_free(&a);
    h_free(&h);
}

/* ... and a long tool name in the summary of dropped steps. */
static char *llm_long_name(struct harness *h, uint32_t step, uint32_t attempt)
{
    char args[32];
    const char *name = h->ud, *a = args;

    snprintf(args, sizeof args, "{\"n\":%u}", step);
    return h_llm_calls(10, 10, 10, 1, &name, &a);
}

static void test_summary_utf8(void **st)
{
    struct harness h;
    struct tr_run_action a;
    char name[1 + 2 * 40 + 1]; /* "x" then 40 x U+00E9: byte 60 is inside one */
    struct h_agent ag = agent_search;

    name[0] = 'x';
    for (int i = 0; i < 40; i++)
        memcpy(name + 1 + 2 * i, "\xc3\xa9", 2);
    name[sizeof name - 1] = '\0';
    ag.tools[0] = name;
    ag.tools[1] = NULL;
    h_init(&h, &ag, llm_long_name, tool_echo);
    h_add_tool(&h, name, NULL, J(Risk_Read));
    h.ud = name;
    h.env.context_tokens = 700;
    h.manual_llm = true;
    for (uint32_t step = 1; step <= 4; step++) {
        assert_int_equal(h_drive(&h, 100, &a), TR_RUN_CALL_LLM);
        tr_run_action_free(&a);
        char *reply = llm_long_name(&h, step, 1);
        h_llm_reply(&h, reply);
        tr_free(reply);
    }
    assert_int_equal(h_drive(&h, 100, &a), TR_RUN_CALL_LLM);
    assert_non_null(strstr(a.json, "\"Earlier step"));
    assert_null(strstr(a.json, "not valid UTF-8"));
    tr_run_action_free(&a);
    h_free(&h);
}


/* ... and an unknown tool's long name in the refusal the model reads (cut at
 * 100 bytes, which falls inside a character here). */
static char *llm_long_unknown(struct harness *h, uint32_t step, uint32_t attempt)
{
    return step == 1 ? h_llm_call1(h->ud, "{}") : h_llm_call1("finish", "{\"answer\":\"ok\"}");
}

static void test_refusal_utf8(void **st)
{
    struct harness h;
    struct tr_run_action a;
    char name[1 + 2 * 60 + 1];

    name[0] = 'x';
    for (int i = 0; i < 60; i++)
        memcpy(name + 1 + 2 * i, "\xc3\xa9", 2);
    name[sizeof name - 1] = '\0';
    h_init(&h, &agent_search, llm_long_unknown, tool_echo);
    h_add_tool(&h, "search", search_schema, J(Risk_Read));
    h.ud = name;
    h.manual_llm = true;
    assert_int_equal(h_drive(&h, 100, &a), TR_RUN_CALL_LLM);
    tr_run_action_free(&a);
    char *reply = llm_long_unknown(&h, 1, 1);
    h_llm_reply(&h, reply);
    tr_free(reply);
    assert_int_equal(h_drive(&h, 100, &a), TR_RUN_CALL_LLM);
    const char *err = error_at_step(&h, 1);
    assert_non_null(err);
    json_t *j = json_string(err);
    assert_non_null(j); /* UTF-8 */
    json_decref(j);
    char want[160]; /* cut on a character: "x" and 49 of the 60, nothing replaced */
    snprintf(want, sizeof want, "unknown tool \"%.99s\":", name);
    assert_non_null(strstr(err, want));
    assert_null(strchr(err, '?'));
    assert_null(strstr(a.json, "not valid UTF-8"));
    tr_run_action_free(&a);
    h_free(&h);
}

/* tr_run_utf8_scrub keeps UTF-8 and replaces each byte of anything else. */
static void test_utf8_scrub(void **st)
{
    static const struct {
        const char *in, *out;
    } cases[] = {
        { "plain", "plain" },
        { "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80" },
        { "a\x80z", "a?z" },                 /* a lone continuation byte */
        { "\xc0\x80", "??" },                /* an overlong NUL */
        { "\xe0\x80\xaf", "???" },           /* an overlong '/' */
        { "\xed\xa0\x80", "???" },           /* a surrogate */
        { "\xf4\x90\x80\x80", "????" },      /* past U+10FFFF */
        { "\xf5\x80", "??" },                /* no such lead byte */
        { "ok\xe2\x82", "ok??" },            /* cut at the end */
        { "\xc3(", "?(" },                   /* a lead byte without its continuation */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *t = tr_strdup(cases[i].in);
        tr_run_utf8_scrub(t, strlen(t));
        assert_string_equal(t, cases[i].out);
        tr_free(t);
    }
    assert_int_equal(tr_run_utf8_cut("a\xc3\xa9", 3, 2), 1);
    assert_int_equal(tr_run_utf8_cut("a\xc3\xa9", 3, 3), 3);
    assert_int_equal(tr_run_utf8_shown("\xe2\x82\xac\xe2\x82\xac", 5), 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_run_id),
        cmocka_unit_test(test_ten_steps),
        cmocka_unit_test(test_replay_every_prefix),
        cmocka_unit_test(test_replay_every_prefix_mixed),
        cmocka_unit_test(test_reexecute_same_key),
        cmocka_unit_test(test_approval_approve),
        cmocka_unit_test(test_approval_deny),
        cmocka_unit_test(test_approval_expired),
        cmocka_unit_test(test_approval_replay_rearms),
        cmocka_unit_test(test_approval_policy_mark),
        cmocka_unit_test(test_open_approval_serializes),
        cmocka_unit_test(test_caps),
        cmocka_unit_test(test_wall_time),
        cmocka_unit_test(test_loop_repeats),
        cmocka_unit_test(test_loop_nothing_new),
        cmocka_unit_test(test_malformed_calls),
        cmocka_unit_test(test_refusal_utf8),
        cmocka_unit_test(test_utf8_scrub),
        cmocka_unit_test(test_invalid_limit),
        cmocka_unit_test(test_disabled_and_unlisted),
        cmocka_unit_test(test_parallel_any_order),
        cmocka_unit_test(test_pipelined_appends),
        cmocka_unit_test(test_llm_call_before_ack),
        cmocka_unit_test(test_read_tool_at_once),
        cmocka_unit_test(test_refold_after_call),
        cmocka_unit_test(test_refold_across_steps),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_llm_errors),
        cmocka_unit_test(test_builtins),
        cmocka_unit_test(test_large_result_blob),
        cmocka_unit_test(test_fold_rejects),
        cmocka_unit_test(test_fold_corrupt_journal),
        cmocka_unit_test(test_wall_time_far_past),
        cmocka_unit_test(test_denial_reason_utf8),
        cmocka_unit_test(test_summary_utf8),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
