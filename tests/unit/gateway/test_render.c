/* gateway/: JSON rendering of every journal event type and of run, approval
 * and tool records, built with the generated builders. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "gateway/gw_int.h"

#define T0 1700000000123456LL

static struct tr_fb_builder b;
static json_t *out;

static int setup(void **st)
{
    tr_fb_builder_init(&b);
    return 0;
}

static int teardown(void **st)
{
    tr_fb_builder_free(&b);
    json_decref(out);
    out = NULL;
    return 0;
}

/* Finish an Event around data of `type`, verify it and render it. */
static json_t *render(uint8_t type, tr_fb_ref data)
{
    tr_fb_ref rid = tr_fb_create_str(&b, "run_00000000000000aa");
    troupe_journal_Event_start(&b);
    troupe_journal_Event_add_seq(&b, 4);
    troupe_journal_Event_add_time_us(&b, T0);
    troupe_journal_Event_add_run_id(&b, rid);
    troupe_journal_Event_add_epoch(&b, 2);
    troupe_journal_Event_add_data_type(&b, type);
    troupe_journal_Event_add_data(&b, data);
    troupe_journal_Event_finish(&b, troupe_journal_Event_end(&b));
    size_t len;
    const uint8_t *buf = tr_fb_builder_data(&b, &len);
    const struct troupe_journal_Event *ev = troupe_journal_Event_verify_as_root(buf, len, NULL);
    assert_non_null(ev);
    json_decref(out);
    out = gw_render_event(ev);
    /* header */
    assert_int_equal(json_integer_value(json_object_get(out, "seq")), 4);
    assert_string_equal(json_string_value(json_object_get(out, "time")), "2023-11-14T22:13:20.123456Z");
    assert_string_equal(json_string_value(json_object_get(out, "run_id")), "run_00000000000000aa");
    assert_int_equal(json_integer_value(json_object_get(out, "epoch")), 2);
    assert_true(json_is_object(json_object_get(out, "data")));
    /* always serialisable */
    char *s = json_dumps(out, JSON_COMPACT);
    assert_non_null(s);
    free(s);
    tr_fb_builder_reset(&b);
    return json_object_get(out, "data");
}

static const char *type_of(void) { return json_string_value(json_object_get(out, "type")); }
static const char *s_of(json_t *o, const char *k) { return json_string_value(json_object_get(o, k)); }
static json_int_t i_of(json_t *o, const char *k) { return json_integer_value(json_object_get(o, k)); }

static tr_fb_ref usage(uint64_t p, uint64_t c, uint64_t cost)
{
    troupe_journal_Usage_start(&b);
    troupe_journal_Usage_add_prompt_tokens(&b, p);
    troupe_journal_Usage_add_completion_tokens(&b, c);
    troupe_journal_Usage_add_cost_micro_usd(&b, cost);
    return troupe_journal_Usage_end(&b);
}

static tr_fb_ref agent(void)
{
    tr_fb_ref model = tr_fb_create_str(&b, "gpt-x");
    tr_fb_ref t1 = tr_fb_create_str(&b, "search");
    tr_fb_ref tools = troupe_journal_AgentConfig_create_tools(&b, &t1, 1);
    troupe_journal_AgentConfig_start(&b);
    troupe_journal_AgentConfig_add_model(&b, model);
    troupe_journal_AgentConfig_add_tools(&b, tools);
    troupe_journal_AgentConfig_add_max_steps(&b, 9);
    troupe_journal_AgentConfig_add_max_cost_usd(&b, 1.5);
    return troupe_journal_AgentConfig_end(&b);
}

static void test_run_created(void **st)
{
    tr_fb_ref tenant = tr_fb_create_str(&b, "default");
    tr_fb_ref goal = tr_fb_create_str(&b, "write a haiku");
    tr_fb_ref ag = agent();
    tr_fb_ref meta = tr_fb_create_str(&b, "{\"k\":[1,2]}");
    tr_fb_ref ik = tr_fb_create_str(&b, "key-1");
    troupe_journal_RunCreated_start(&b);
    troupe_journal_RunCreated_add_tenant(&b, tenant);
    troupe_journal_RunCreated_add_goal(&b, goal);
    troupe_journal_RunCreated_add_agent(&b, ag);
    troupe_journal_RunCreated_add_metadata(&b, meta);
    troupe_journal_RunCreated_add_idempotency_key(&b, ik);
    troupe_journal_RunCreated_add_owner_node(&b, 3);
    json_t *d = render(troupe_journal_Data_RunCreated, troupe_journal_RunCreated_end(&b));
    assert_string_equal(type_of(), "run.created");
    assert_string_equal(s_of(d, "tenant"), "default");
    assert_string_equal(s_of(d, "goal"), "write a haiku");
    assert_string_equal(s_of(json_object_get(d, "agent"), "model"), "gpt-x");
    assert_int_equal(i_of(json_object_get(d, "agent"), "max_steps"), 9);
    assert_string_equal(json_string_value(json_array_get(json_object_get(json_object_get(d, "agent"), "tools"), 0)),
                        "search");
    assert_int_equal(json_array_size(json_object_get(json_object_get(d, "metadata"), "k")), 2);
    assert_string_equal(s_of(d, "idempotency_key"), "key-1");
    assert_int_equal(i_of(d, "owner_node"), 3);
    assert_true(json_is_null(json_object_get(d, "created_by")));
}

static void test_run_assigned(void **st)
{
    tr_fb_ref reason = tr_fb_create_str(&b, "owner node down");
    troupe_journal_RunAssigned_start(&b);
    troupe_journal_RunAssigned_add_owner_node(&b, 2);
    troupe_journal_RunAssigned_add_previous_owner(&b, 1);
    troupe_journal_RunAssigned_add_reason(&b, reason);
    json_t *d = render(troupe_journal_Data_RunAssigned, troupe_journal_RunAssigned_end(&b));
    assert_string_equal(type_of(), "run.assigned");
    assert_int_equal(i_of(d, "owner_node"), 2);
    assert_int_equal(i_of(d, "previous_owner"), 1);
    assert_string_equal(s_of(d, "reason"), "owner node down");
}

static void test_llm_requested(void **st)
{
    uint8_t dig[4] = { 0xde, 0xad, 0xbe, 0xef };
    tr_fb_ref pd = tr_fb_create_bytes(&b, dig, 4);
    tr_fb_ref model = tr_fb_create_str(&b, "gpt-x");
    troupe_journal_LlmRequested_start(&b);
    troupe_journal_LlmRequested_add_step(&b, 3);
    troupe_journal_LlmRequested_add_attempt(&b, 2);
    troupe_journal_LlmRequested_add_model(&b, model);
    troupe_journal_LlmRequested_add_prompt_digest(&b, pd);
    troupe_journal_LlmRequested_add_prompt_tokens_est(&b, 1234);
    troupe_journal_LlmRequested_add_message_count(&b, 5);
    json_t *d = render(troupe_journal_Data_LlmRequested, troupe_journal_LlmRequested_end(&b));
    assert_string_equal(type_of(), "llm.requested");
    assert_int_equal(i_of(d, "step"), 3);
    assert_int_equal(i_of(d, "attempt"), 2);
    assert_string_equal(s_of(d, "model"), "gpt-x");
    assert_string_equal(s_of(d, "prompt_digest"), "deadbeef");
    assert_int_equal(i_of(d, "prompt_tokens_est"), 1234);
    assert_int_equal(i_of(d, "message_count"), 5);
    assert_true(json_is_null(json_object_get(d, "provider")));
}

static void test_llm_completed(void **st)
{
    tr_fb_ref id = tr_fb_create_str(&b, "call_1");
    tr_fb_ref name = tr_fb_create_str(&b, "search");
    tr_fb_ref args = tr_fb_create_str(&b, "{\"q\":\"x\"}");
    troupe_journal_ToolCall_start(&b);
    troupe_journal_ToolCall_add_id(&b, id);
    troupe_journal_ToolCall_add_name(&b, name);
    troupe_journal_ToolCall_add_arguments(&b, args);
    tr_fb_ref call = troupe_journal_ToolCall_end(&b);
    tr_fb_ref calls = troupe_journal_LlmCompleted_create_tool_calls(&b, &call, 1);
    tr_fb_ref content = tr_fb_create_string(&b, "caf\xc3\xa9 \xff!", 8); /* one bad UTF-8 byte */
    tr_fb_ref u = usage(100, 20, 1234567);
    troupe_journal_LlmCompleted_start(&b);
    troupe_journal_LlmCompleted_add_step(&b, 1);
    troupe_journal_LlmCompleted_add_content(&b, content);
    troupe_journal_LlmCompleted_add_tool_calls(&b, calls);
    troupe_journal_LlmCompleted_add_finish_reason(&b, troupe_journal_FinishReason_ToolCalls);
    troupe_journal_LlmCompleted_add_usage(&b, u);
    troupe_journal_LlmCompleted_add_latency_ms(&b, 42);
    json_t *d = render(troupe_journal_Data_LlmCompleted, troupe_journal_LlmCompleted_end(&b));
    assert_string_equal(type_of(), "llm.completed");
    assert_string_equal(s_of(d, "content"), "caf\xc3\xa9 \xef\xbf\xbd!");
    json_t *c0 = json_array_get(json_object_get(d, "tool_calls"), 0);
    assert_string_equal(s_of(c0, "id"), "call_1");
    assert_string_equal(s_of(c0, "name"), "search");
    assert_string_equal(s_of(c0, "arguments"), "{\"q\":\"x\"}"); /* the model's text */
    assert_string_equal(s_of(d, "finish_reason"), "tool_calls");
    json_t *us = json_object_get(d, "usage");
    assert_int_equal(i_of(us, "prompt_tokens"), 100);
    assert_int_equal(i_of(us, "completion_tokens"), 20);
    assert_true(json_real_value(json_object_get(us, "cost_usd")) == 1.234567);
    assert_int_equal(i_of(us, "cost_micro_usd"), 1234567);
    assert_int_equal(i_of(d, "latency_ms"), 42);
}

static void test_tool_events(void **st)
{
    tr_fb_ref cid = tr_fb_create_str(&b, "c1");
    tr_fb_ref tool = tr_fb_create_str(&b, "search");
    tr_fb_ref args = tr_fb_create_str(&b, "{\"q\":\"x\"}");
    troupe_journal_ToolRequested_start(&b);
    troupe_journal_ToolRequested_add_step(&b, 2);
    troupe_journal_ToolRequested_add_call_index(&b, 1);
    troupe_journal_ToolRequested_add_call_id(&b, cid);
    troupe_journal_ToolRequested_add_tool(&b, tool);
    troupe_journal_ToolRequested_add_arguments(&b, args);
    troupe_journal_ToolRequested_add_risk(&b, troupe_journal_Risk_Write);
    json_t *d = render(troupe_journal_Data_ToolRequested, troupe_journal_ToolRequested_end(&b));
    assert_string_equal(type_of(), "tool.requested");
    assert_int_equal(i_of(d, "call_index"), 1);
    assert_string_equal(s_of(json_object_get(d, "arguments"), "q"), "x"); /* a JSON value */
    assert_string_equal(s_of(d, "risk"), "write");

    uint8_t key[2] = { 0x01, 0xff };
    cid = tr_fb_create_str(&b, "c1");
    tool = tr_fb_create_str(&b, "search");
    args = tr_fb_create_str(&b, "not json");
    tr_fb_ref ik = tr_fb_create_bytes(&b, key, 2);
    troupe_journal_ToolStarted_start(&b);
    troupe_journal_ToolStarted_add_step(&b, 2);
    troupe_journal_ToolStarted_add_call_id(&b, cid);
    troupe_journal_ToolStarted_add_tool(&b, tool);
    troupe_journal_ToolStarted_add_version(&b, 3);
    troupe_journal_ToolStarted_add_arguments(&b, args);
    troupe_journal_ToolStarted_add_idempotency_key(&b, ik);
    troupe_journal_ToolStarted_add_attempt(&b, 1);
    d = render(troupe_journal_Data_ToolStarted, troupe_journal_ToolStarted_end(&b));
    assert_string_equal(type_of(), "tool.started");
    assert_int_equal(i_of(d, "version"), 3);
    assert_string_equal(s_of(d, "arguments"), "not json"); /* not JSON: the text */
    assert_string_equal(s_of(d, "idempotency_key"), "01ff");
    assert_int_equal(i_of(d, "attempt"), 1);

    cid = tr_fb_create_str(&b, "c1");
    tr_fb_ref res = tr_fb_create_str(&b, "42 results");
    troupe_journal_ToolCompleted_start(&b);
    troupe_journal_ToolCompleted_add_step(&b, 2);
    troupe_journal_ToolCompleted_add_call_id(&b, cid);
    troupe_journal_ToolCompleted_add_result(&b, res);
    troupe_journal_ToolCompleted_add_duration_ms(&b, 15);
    d = render(troupe_journal_Data_ToolCompleted, troupe_journal_ToolCompleted_end(&b));
    assert_string_equal(type_of(), "tool.completed");
    assert_string_equal(s_of(d, "result"), "42 results");
    assert_null(json_object_get(d, "result_digest"));
    assert_false(json_is_true(json_object_get(d, "is_error")));
    assert_int_equal(i_of(d, "duration_ms"), 15);

    /* blob-backed: digest and size, no inline result */
    uint8_t dig[32];
    memset(dig, 0xab, sizeof dig);
    cid = tr_fb_create_str(&b, "c2");
    tr_fb_ref rd = tr_fb_create_bytes(&b, dig, 32);
    tr_fb_ref er = tr_fb_create_str(&b, "HTTP 500");
    troupe_journal_ToolCompleted_start(&b);
    troupe_journal_ToolCompleted_add_call_id(&b, cid);
    troupe_journal_ToolCompleted_add_result_digest(&b, rd);
    troupe_journal_ToolCompleted_add_result_size(&b, 100000);
    troupe_journal_ToolCompleted_add_error(&b, er);
    troupe_journal_ToolCompleted_add_is_error(&b, true);
    d = render(troupe_journal_Data_ToolCompleted, troupe_journal_ToolCompleted_end(&b));
    assert_true(json_is_null(json_object_get(d, "result")));
    assert_int_equal(strlen(s_of(d, "result_digest")), 64);
    assert_int_equal(i_of(d, "result_size"), 100000);
    assert_string_equal(s_of(d, "error"), "HTTP 500");
    assert_true(json_is_true(json_object_get(d, "is_error")));
}

static void test_approval_events(void **st)
{
    tr_fb_ref aid = tr_fb_create_str(&b, "apr-1");
    tr_fb_ref tool = tr_fb_create_str(&b, "pay");
    tr_fb_ref args = tr_fb_create_str(&b, "{\"usd\":10}");
    troupe_journal_ApprovalRequested_start(&b);
    troupe_journal_ApprovalRequested_add_approval_id(&b, aid);
    troupe_journal_ApprovalRequested_add_step(&b, 4);
    troupe_journal_ApprovalRequested_add_tool(&b, tool);
    troupe_journal_ApprovalRequested_add_arguments(&b, args);
    troupe_journal_ApprovalRequested_add_expires_at_us(&b, T0 + 1000000);
    json_t *d = render(troupe_journal_Data_ApprovalRequested, troupe_journal_ApprovalRequested_end(&b));
    assert_string_equal(type_of(), "approval.requested");
    assert_string_equal(s_of(d, "approval_id"), "apr-1");
    assert_string_equal(s_of(d, "risk"), "irreversible"); /* the schema default */
    assert_int_equal(i_of(json_object_get(d, "arguments"), "usd"), 10);
    assert_string_equal(s_of(d, "expires_at"), "2023-11-14T22:13:21.123456Z");

    aid = tr_fb_create_str(&b, "apr-1");
    tr_fb_ref by = tr_fb_create_str(&b, "admin");
    troupe_journal_ApprovalDecided_start(&b);
    troupe_journal_ApprovalDecided_add_approval_id(&b, aid);
    troupe_journal_ApprovalDecided_add_decision(&b, troupe_journal_Decision_Deny);
    troupe_journal_ApprovalDecided_add_decided_by(&b, by);
    d = render(troupe_journal_Data_ApprovalDecided, troupe_journal_ApprovalDecided_end(&b));
    assert_string_equal(type_of(), "approval.decided");
    assert_string_equal(s_of(d, "decision"), "deny");
    assert_string_equal(s_of(d, "decided_by"), "admin");
    assert_true(json_is_null(json_object_get(d, "reason")));
}

static void test_memory_written(void **st)
{
    tr_fb_ref key = tr_fb_create_str(&b, "fact");
    tr_fb_ref content = tr_fb_create_str(&b, "the sky is blue");
    tr_fb_ref t1 = tr_fb_create_str(&b, "a");
    tr_fb_ref tags = troupe_journal_MemoryWritten_create_tags(&b, &t1, 1);
    float emb[3] = { 1, 2, 3 };
    tr_fb_ref e = troupe_journal_MemoryWritten_create_embedding(&b, emb, 3);
    troupe_journal_MemoryWritten_start(&b);
    troupe_journal_MemoryWritten_add_key(&b, key);
    troupe_journal_MemoryWritten_add_content(&b, content);
    troupe_journal_MemoryWritten_add_tags(&b, tags);
    troupe_journal_MemoryWritten_add_embedding(&b, e);
    json_t *d = render(troupe_journal_Data_MemoryWritten, troupe_journal_MemoryWritten_end(&b));
    assert_string_equal(type_of(), "memory.written");
    assert_string_equal(s_of(d, "key"), "fact");
    assert_string_equal(s_of(d, "content"), "the sky is blue");
    assert_int_equal(json_array_size(json_object_get(d, "tags")), 1);
    assert_int_equal(i_of(d, "embedding_dims"), 3);
}

static void test_endings(void **st)
{
    tr_fb_ref o = tr_fb_create_str(&b, "done");
    tr_fb_ref u = usage(1, 2, 3);
    troupe_journal_RunSucceeded_start(&b);
    troupe_journal_RunSucceeded_add_output(&b, o);
    troupe_journal_RunSucceeded_add_steps(&b, 5);
    troupe_journal_RunSucceeded_add_usage(&b, u);
    json_t *d = render(troupe_journal_Data_RunSucceeded, troupe_journal_RunSucceeded_end(&b));
    assert_string_equal(type_of(), "run.succeeded");
    assert_string_equal(s_of(d, "output"), "done");
    assert_int_equal(i_of(d, "steps"), 5);
    assert_int_equal(i_of(json_object_get(d, "usage"), "completion_tokens"), 2);

    tr_fb_ref code = tr_fb_create_str(&b, "llm_unavailable");
    tr_fb_ref er = tr_fb_create_str(&b, "provider down");
    troupe_journal_RunFailed_start(&b);
    troupe_journal_RunFailed_add_error_code(&b, code);
    troupe_journal_RunFailed_add_error(&b, er);
    d = render(troupe_journal_Data_RunFailed, troupe_journal_RunFailed_end(&b));
    assert_string_equal(type_of(), "run.failed");
    assert_string_equal(s_of(d, "error_code"), "llm_unavailable");
    assert_string_equal(s_of(d, "error"), "provider down");
    assert_int_equal(i_of(json_object_get(d, "usage"), "prompt_tokens"), 0);

    tr_fb_ref r = tr_fb_create_str(&b, "user asked");
    tr_fb_ref by = tr_fb_create_str(&b, "admin");
    troupe_journal_RunCancelled_start(&b);
    troupe_journal_RunCancelled_add_reason(&b, r);
    troupe_journal_RunCancelled_add_cancelled_by(&b, by);
    d = render(troupe_journal_Data_RunCancelled, troupe_journal_RunCancelled_end(&b));
    assert_string_equal(type_of(), "run.cancelled");
    assert_string_equal(s_of(d, "reason"), "user asked");
    assert_string_equal(s_of(d, "cancelled_by"), "admin");

    troupe_journal_BudgetExceeded_start(&b);
    troupe_journal_BudgetExceeded_add_cap(&b, troupe_journal_Cap_WallTime);
    troupe_journal_BudgetExceeded_add_limit(&b, 60);
    troupe_journal_BudgetExceeded_add_used(&b, 61.5);
    d = render(troupe_journal_Data_BudgetExceeded, troupe_journal_BudgetExceeded_end(&b));
    assert_string_equal(type_of(), "budget.exceeded");
    assert_string_equal(s_of(d, "cap"), "wall_time");
    assert_true(json_real_value(json_object_get(d, "used")) == 61.5);

    uint8_t sig[1] = { 0x0f };
    tr_fb_ref s = tr_fb_create_bytes(&b, sig, 1);
    tr_fb_ref det = tr_fb_create_str(&b, "same call 3 times");
    troupe_journal_LoopDetected_start(&b);
    troupe_journal_LoopDetected_add_step(&b, 7);
    troupe_journal_LoopDetected_add_signature(&b, s);
    troupe_journal_LoopDetected_add_repeats(&b, 3);
    troupe_journal_LoopDetected_add_detail(&b, det);
    d = render(troupe_journal_Data_LoopDetected, troupe_journal_LoopDetected_end(&b));
    assert_string_equal(type_of(), "loop.detected");
    assert_string_equal(s_of(d, "signature"), "0f");
    assert_int_equal(i_of(d, "repeats"), 3);
    assert_string_equal(s_of(d, "detail"), "same call 3 times");
}

static void test_names(void **st)
{
    /* every union member has its API.md name */
    for (int t = 1; t <= troupe_journal_Data_LoopDetected; t++)
        assert_string_not_equal(gw_event_type_name(t), "unknown");
    assert_string_equal(gw_event_type_name(0), "unknown");
    assert_string_equal(gw_event_type_name(200), "unknown");
    int8_t v;
    assert_int_equal(gw_run_status_parse("waiting_approval", &v), TR_OK);
    assert_int_equal(v, troupe_journal_RunStatus_WaitingApproval);
    assert_int_equal(gw_run_status_parse("done", &v), TR_EINVAL);
    assert_string_equal(gw_run_status_name(troupe_journal_RunStatus_Cancelled), "cancelled");
    assert_string_equal(gw_run_status_name(99), "unknown");
    assert_int_equal(gw_approval_status_parse("expired", &v), TR_OK);
    assert_int_equal(v, troupe_state_ApprovalStatus_Expired);
    assert_int_equal(gw_kind_parse("mcp", &v), TR_OK);
    assert_int_equal(v, troupe_cmd_ToolKind_Mcp);
}

/* ---- records ------------------------------------------------------------------- */

static void test_run_record(void **st)
{
    tr_fb_ref rid = tr_fb_create_str(&b, "run_00000000000000aa");
    tr_fb_ref tenant = tr_fb_create_str(&b, "default");
    tr_fb_ref goal = tr_fb_create_str(&b, "g");
    tr_fb_ref ag = agent();
    tr_fb_ref meta = tr_fb_create_str(&b, "{\"a\":1}");
    tr_fb_ref outp = tr_fb_create_str(&b, "the answer");
    tr_fb_ref u = usage(10, 5, 2500000);
    troupe_state_Run_start(&b);
    troupe_state_Run_add_run_id(&b, rid);
    troupe_state_Run_add_tenant(&b, tenant);
    troupe_state_Run_add_status(&b, troupe_journal_RunStatus_Succeeded);
    troupe_state_Run_add_goal(&b, goal);
    troupe_state_Run_add_agent(&b, ag);
    troupe_state_Run_add_metadata(&b, meta);
    troupe_state_Run_add_owner_node(&b, 1);
    troupe_state_Run_add_epoch(&b, 3);
    troupe_state_Run_add_next_seq(&b, 8);
    troupe_state_Run_add_step(&b, 4);
    troupe_state_Run_add_usage(&b, u);
    troupe_state_Run_add_created_at_us(&b, T0);
    troupe_state_Run_add_updated_at_us(&b, T0 + 1000);
    troupe_state_Run_add_output(&b, outp);
    troupe_state_Run_finish(&b, troupe_state_Run_end(&b));
    size_t len;
    const uint8_t *buf = tr_fb_builder_data(&b, &len);
    const struct troupe_state_Run *r = troupe_state_Run_verify_as_root(buf, len, NULL);
    assert_non_null(r);
    out = gw_render_run(r);
    assert_string_equal(s_of(out, "id"), "run_00000000000000aa");
    assert_string_equal(s_of(out, "tenant"), "default");
    assert_string_equal(s_of(out, "status"), "succeeded");
    assert_string_equal(s_of(out, "goal"), "g");
    assert_int_equal(i_of(out, "step"), 4);
    assert_true(json_real_value(json_object_get(json_object_get(out, "usage"), "cost_usd")) == 2.5);
    assert_int_equal(i_of(out, "owner_node"), 1);
    assert_string_equal(s_of(out, "created_at"), "2023-11-14T22:13:20.123456Z");
    assert_string_equal(s_of(out, "updated_at"), "2023-11-14T22:13:20.124456Z");
    assert_string_equal(s_of(out, "output"), "the answer");
    assert_true(json_is_null(json_object_get(out, "error")));
    assert_int_equal(i_of(out, "epoch"), 3);
    assert_int_equal(i_of(out, "last_seq"), 7);
    assert_int_equal(i_of(json_object_get(out, "metadata"), "a"), 1);
    assert_string_equal(s_of(json_object_get(out, "agent"), "model"), "gpt-x");
}

static void test_approval_record(void **st)
{
    tr_fb_ref id = tr_fb_create_str(&b, "apr-9");
    tr_fb_ref rid = tr_fb_create_str(&b, "run_00000000000000aa");
    tr_fb_ref tenant = tr_fb_create_str(&b, "default");
    tr_fb_ref tool = tr_fb_create_str(&b, "pay");
    tr_fb_ref args = tr_fb_create_str(&b, "[1,2]");
    tr_fb_ref by = tr_fb_create_str(&b, "admin");
    tr_fb_ref reason = tr_fb_create_str(&b, "ok");
    troupe_state_Approval_start(&b);
    troupe_state_Approval_add_approval_id(&b, id);
    troupe_state_Approval_add_run_id(&b, rid);
    troupe_state_Approval_add_tenant(&b, tenant);
    troupe_state_Approval_add_tool(&b, tool);
    troupe_state_Approval_add_arguments(&b, args);
    troupe_state_Approval_add_risk(&b, troupe_journal_Risk_Write);
    troupe_state_Approval_add_requested_at_us(&b, T0);
    troupe_state_Approval_add_expires_at_us(&b, T0 + 60000000);
    troupe_state_Approval_add_status(&b, troupe_state_ApprovalStatus_Approved);
    troupe_state_Approval_add_decided_by(&b, by);
    troupe_state_Approval_add_reason(&b, reason);
    tr_fb_finish(&b, troupe_state_Approval_end(&b), "TRA1");
    size_t len;
    const uint8_t *buf = tr_fb_builder_data(&b, &len);
    const struct troupe_state_Approval *a =
        troupe_state_Approval_verify_as_root_opts(buf, len, "TRA1", &tr_fb_default_limits, NULL);
    assert_non_null(a);
    out = gw_render_approval(a);
    assert_string_equal(s_of(out, "id"), "apr-9");
    assert_string_equal(s_of(out, "run_id"), "run_00000000000000aa");
    assert_string_equal(s_of(out, "tool"), "pay");
    assert_int_equal(json_array_size(json_object_get(out, "arguments")), 2);
    assert_string_equal(s_of(out, "risk"), "write");
    assert_string_equal(s_of(out, "requested_at"), "2023-11-14T22:13:20.123456Z");
    assert_string_equal(s_of(out, "expires_at"), "2023-11-14T22:14:20.123456Z");
    assert_string_equal(s_of(out, "status"), "approved");
    assert_string_equal(s_of(out, "decided_by"), "admin");
    assert_string_equal(s_of(out, "reason"), "ok");
}

static void test_tool_record(void **st)
{
    tr_fb_ref name = tr_fb_create_str(&b, "search");
    tr_fb_ref desc = tr_fb_create_str(&b, "web search");
    tr_fb_ref schema = tr_fb_create_str(&b, "{\"type\":\"object\"}");
    tr_fb_ref config = tr_fb_create_str(&b, "{\"url\":\"http://x\"}");
    troupe_cmd_Tool_start(&b);
    troupe_cmd_Tool_add_name(&b, name);
    troupe_cmd_Tool_add_version(&b, 2);
    troupe_cmd_Tool_add_description(&b, desc);
    troupe_cmd_Tool_add_input_schema(&b, schema);
    troupe_cmd_Tool_add_risk(&b, troupe_journal_Risk_Irreversible);
    troupe_cmd_Tool_add_kind(&b, troupe_cmd_ToolKind_Sandbox);
    troupe_cmd_Tool_add_config(&b, config);
    troupe_cmd_Tool_add_enabled(&b, false);
    tr_fb_ref t = troupe_cmd_Tool_end(&b);
    tr_fb_ref versions = troupe_state_ToolVersions_create_versions(&b, &t, 1);
    tr_fb_ref n2 = tr_fb_create_str(&b, "search");
    troupe_state_ToolVersions_start(&b);
    troupe_state_ToolVersions_add_name(&b, n2);
    troupe_state_ToolVersions_add_versions(&b, versions);
    tr_fb_finish(&b, troupe_state_ToolVersions_end(&b), "TRT1");
    size_t len;
    const uint8_t *buf = tr_fb_builder_data(&b, &len);
    const struct troupe_state_ToolVersions *tv =
        troupe_state_ToolVersions_verify_as_root_opts(buf, len, "TRT1", &tr_fb_default_limits, NULL);
    assert_non_null(tv);
    out = gw_render_tool(troupe_state_ToolVersions_versions_at(tv, 0), 1);
    assert_string_equal(s_of(out, "name"), "search");
    assert_int_equal(i_of(out, "version"), 2);
    assert_string_equal(s_of(out, "description"), "web search");
    assert_string_equal(s_of(json_object_get(out, "input_schema"), "type"), "object");
    assert_string_equal(s_of(out, "risk"), "irreversible");
    assert_string_equal(s_of(out, "kind"), "sandbox");
    assert_string_equal(s_of(json_object_get(out, "config"), "url"), "http://x");
    assert_int_equal(i_of(out, "timeout_ms"), 30000);
    assert_false(json_is_true(json_object_get(out, "enabled")));
    assert_int_equal(i_of(out, "versions"), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_run_created, setup, teardown),
        cmocka_unit_test_setup_teardown(test_run_assigned, setup, teardown),
        cmocka_unit_test_setup_teardown(test_llm_requested, setup, teardown),
        cmocka_unit_test_setup_teardown(test_llm_completed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tool_events, setup, teardown),
        cmocka_unit_test_setup_teardown(test_approval_events, setup, teardown),
        cmocka_unit_test_setup_teardown(test_memory_written, setup, teardown),
        cmocka_unit_test_setup_teardown(test_endings, setup, teardown),
        cmocka_unit_test_setup_teardown(test_names, setup, teardown),
        cmocka_unit_test_setup_teardown(test_run_record, setup, teardown),
        cmocka_unit_test_setup_teardown(test_approval_record, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tool_record, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
