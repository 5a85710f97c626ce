/* Records and journal events as the JSON of API.md: snake_case fields, times
 * in RFC 3339 UTC, costs in USD (with the exact micro-USD alongside), JSON
 * text fields (metadata, arguments, schemas, configs) as JSON values.
 *
 * Strings from records are whatever the writers stored; text that is not
 * valid UTF-8 is rendered with U+FFFD for each bad byte rather than dropped,
 * so a response is always valid JSON. */
#include <math.h>
#include <string.h>

#include "actors/tool.h"
#include "gateway/gw_int.h"

/* ---- names ------------------------------------------------------------------------ */

static const char *const status_names[] = { "queued", "running", "waiting_approval",
                                            "succeeded", "failed", "cancelled" };
static const char *const event_names[] = {
    NULL, "run.created", "run.assigned", "llm.requested", "llm.completed", "tool.requested",
    "tool.started", "tool.completed", "approval.requested", "approval.decided", "memory.written",
    "run.succeeded", "run.failed", "run.cancelled", "budget.exceeded", "loop.detected",
};
static const char *const risk_names[] = { "read", "write", "irreversible" };
static const char *const kind_names[] = { "http", "sandbox", "mcp", "builtin" };
static const char *const approval_names[] = { "pending", "approved", "denied", "expired" };
static const char *const decision_names[] = { "approve", "deny", "expired" };
static const char *const finish_names[] = { "unknown", "stop", "tool_calls", "length", "content_filter", "error" };
static const char *const cap_names[] = { "steps", "tokens", "cost", "wall_time", "tenant_budget" };

#define NAME_OF(table, v, dflt) \
    ((v) >= 0 && (size_t)(v) < sizeof table / sizeof table[0] && table[v] != NULL ? table[v] : (dflt))

static int parse_name(const char *const *table, size_t n, const char *s, int8_t *out)
{
    for (size_t i = 0; i < n; i++) {
        if (table[i] != NULL && strcmp(table[i], s) == 0) {
            *out = (int8_t)i;
            return TR_OK;
        }
    }
    return TR_EINVAL;
}

const char *gw_run_status_name(int v) { return NAME_OF(status_names, v, "unknown"); }
const char *gw_event_type_name(int v) { return NAME_OF(event_names, v, "unknown"); }
const char *gw_risk_name(int v) { return NAME_OF(risk_names, v, "unknown"); }
const char *gw_kind_name(int v) { return NAME_OF(kind_names, v, "unknown"); }
const char *gw_approval_status_name(int v) { return NAME_OF(approval_names, v, "unknown"); }

int gw_run_status_parse(const char *s, int8_t *out)
{
    return parse_name(status_names, sizeof status_names / sizeof status_names[0], s, out);
}
int gw_risk_parse(const char *s, int8_t *out)
{
    return parse_name(risk_names, sizeof risk_names / sizeof risk_names[0], s, out);
}
int gw_kind_parse(const char *s, int8_t *out)
{
    return parse_name(kind_names, sizeof kind_names / sizeof kind_names[0], s, out);
}
int gw_approval_status_parse(const char *s, int8_t *out)
{
    return parse_name(approval_names, sizeof approval_names / sizeof approval_names[0], s, out);
}

/* ---- values ------------------------------------------------------------------------ */

json_t *gw_json_stringn(const char *s, size_t n)
{
    json_t *j = json_stringn(s, n);
    return j != NULL ? j : tool_json_text(s, n);
}

static json_t *jstr(struct tr_fb_str s)
{
    return s.ptr != NULL ? gw_json_stringn(s.ptr, s.len) : json_null();
}

static json_t *juint(uint64_t v)
{
    return json_integer(v > (uint64_t)INT64_MAX ? INT64_MAX : (json_int_t)v);
}

static json_t *jtime(int64_t us)
{
    if (us == 0)
        return json_null();
    char t[GW_TIME_TEXT];
    gw_time_text(us, t);
    return json_string(t);
}

static json_t *jhex(struct tr_fb_vec v)
{
    static const char hex[] = "0123456789abcdef";
    if (v.data == NULL)
        return json_null();
    char *s = tr_malloc(2 * (size_t)v.len + 1);
    for (uint32_t i = 0; i < v.len; i++) {
        s[2 * i] = hex[v.data[i] >> 4];
        s[2 * i + 1] = hex[v.data[i] & 15];
    }
    json_t *j = json_stringn(s, 2 * (size_t)v.len);
    tr_free(s);
    return j;
}

json_t *gw_json_text_value(struct tr_fb_str s)
{
    if (s.ptr == NULL)
        return json_null();
    json_t *v = json_loadb(s.ptr, s.len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, NULL);
    return v != NULL ? v : gw_json_stringn(s.ptr, s.len);
}

static json_t *render_usage(const struct troupe_journal_Usage *u)
{
    uint64_t p = 0, c = 0, cost = 0;
    if (u != NULL) {
        p = troupe_journal_Usage_prompt_tokens(u);
        c = troupe_journal_Usage_completion_tokens(u);
        cost = troupe_journal_Usage_cost_micro_usd(u);
    }
    json_t *o = json_object();
    json_object_set_new(o, "prompt_tokens", juint(p));
    json_object_set_new(o, "completion_tokens", juint(c));
    json_object_set_new(o, "cost_usd", json_real((double)cost / 1e6));
    json_object_set_new(o, "cost_micro_usd", juint(cost));
    return o;
}

json_t *gw_render_agent(const struct troupe_journal_AgentConfig *a)
{
    if (a == NULL)
        return json_null();
    json_t *o = json_object();
    json_object_set_new(o, "model", jstr(troupe_journal_AgentConfig_model(a)));
    json_object_set_new(o, "system", jstr(troupe_journal_AgentConfig_system(a)));
    json_t *tools = json_array();
    for (uint32_t i = 0; i < troupe_journal_AgentConfig_tools_len(a); i++)
        json_array_append_new(tools, jstr(troupe_journal_AgentConfig_tools_at(a, i)));
    json_object_set_new(o, "tools", tools);
    json_object_set_new(o, "max_steps", juint(troupe_journal_AgentConfig_max_steps(a)));
    json_object_set_new(o, "max_tokens", juint(troupe_journal_AgentConfig_max_tokens(a)));
    json_object_set_new(o, "max_cost_usd", json_real(troupe_journal_AgentConfig_max_cost_usd(a)));
    json_object_set_new(o, "timeout_s", juint(troupe_journal_AgentConfig_timeout_s(a)));
    /* a float: round away its binary noise (0.2f is 0.200000003) */
    json_object_set_new(o, "temperature", json_real(round(troupe_journal_AgentConfig_temperature(a) * 1e6) / 1e6));
    json_object_set_new(o, "provider", jstr(troupe_journal_AgentConfig_provider(a)));
    return o;
}

/* ---- records ----------------------------------------------------------------------- */

json_t *gw_render_run(const struct troupe_state_Run *r)
{
    json_t *o = json_object();
    json_object_set_new(o, "id", jstr(troupe_state_Run_run_id(r)));
    json_object_set_new(o, "tenant", jstr(troupe_state_Run_tenant(r)));
    json_object_set_new(o, "status", json_string(gw_run_status_name(troupe_state_Run_status(r))));
    json_object_set_new(o, "goal", jstr(troupe_state_Run_goal(r)));
    json_object_set_new(o, "step", juint(troupe_state_Run_step(r)));
    json_object_set_new(o, "usage", render_usage(troupe_state_Run_usage(r)));
    json_object_set_new(o, "owner_node", juint(troupe_state_Run_owner_node(r)));
    json_object_set_new(o, "created_at", jtime(troupe_state_Run_created_at_us(r)));
    json_object_set_new(o, "updated_at", jtime(troupe_state_Run_updated_at_us(r)));
    json_object_set_new(o, "output", jstr(troupe_state_Run_output(r)));
    json_object_set_new(o, "error", jstr(troupe_state_Run_error(r)));
    /* extensions */
    json_object_set_new(o, "error_code", jstr(troupe_state_Run_error_code(r)));
    json_object_set_new(o, "epoch", juint(troupe_state_Run_epoch(r)));
    uint64_t next = troupe_state_Run_next_seq(r);
    json_object_set_new(o, "last_seq", juint(next > 0 ? next - 1 : 0));
    json_object_set_new(o, "agent", gw_render_agent(troupe_state_Run_agent(r)));
    json_object_set_new(o, "metadata", gw_json_text_value(troupe_state_Run_metadata(r)));
    json_object_set_new(o, "idempotency_key", jstr(troupe_state_Run_idempotency_key(r)));
    json_object_set_new(o, "created_by", jstr(troupe_state_Run_created_by(r)));
    json_object_set_new(o, "pending_approval", jstr(troupe_state_Run_pending_approval(r)));
    json_object_set_new(o, "cancel_requested", json_boolean(troupe_state_Run_cancel_requested(r)));
    return o;
}

json_t *gw_render_approval(const struct troupe_state_Approval *a)
{
    json_t *o = json_object();
    json_object_set_new(o, "id", jstr(troupe_state_Approval_approval_id(a)));
    json_object_set_new(o, "run_id", jstr(troupe_state_Approval_run_id(a)));
    json_object_set_new(o, "tool", jstr(troupe_state_Approval_tool(a)));
    json_object_set_new(o, "arguments", gw_json_text_value(troupe_state_Approval_arguments(a)));
    json_object_set_new(o, "risk", json_string(gw_risk_name(troupe_state_Approval_risk(a))));
    json_object_set_new(o, "requested_at", jtime(troupe_state_Approval_requested_at_us(a)));
    json_object_set_new(o, "expires_at", jtime(troupe_state_Approval_expires_at_us(a)));
    json_object_set_new(o, "status", json_string(gw_approval_status_name(troupe_state_Approval_status(a))));
    json_object_set_new(o, "decided_by", jstr(troupe_state_Approval_decided_by(a)));
    json_object_set_new(o, "reason", jstr(troupe_state_Approval_reason(a)));
    json_object_set_new(o, "decided_at", jtime(troupe_state_Approval_decided_at_us(a)));
    json_object_set_new(o, "step", juint(troupe_state_Approval_step(a)));
    json_object_set_new(o, "call_index", juint(troupe_state_Approval_call_index(a)));
    json_object_set_new(o, "call_id", jstr(troupe_state_Approval_call_id(a)));
    return o;
}

json_t *gw_render_tool(const struct troupe_cmd_Tool *t, uint32_t n_versions)
{
    json_t *o = json_object();
    json_object_set_new(o, "name", jstr(troupe_cmd_Tool_name(t)));
    json_object_set_new(o, "version", juint(troupe_cmd_Tool_version(t)));
    json_object_set_new(o, "description", jstr(troupe_cmd_Tool_description(t)));
    json_object_set_new(o, "input_schema", gw_json_text_value(troupe_cmd_Tool_input_schema(t)));
    json_object_set_new(o, "risk", json_string(gw_risk_name(troupe_cmd_Tool_risk(t))));
    json_object_set_new(o, "kind", json_string(gw_kind_name(troupe_cmd_Tool_kind(t))));
    json_object_set_new(o, "config", gw_json_text_value(troupe_cmd_Tool_config(t)));
    json_object_set_new(o, "timeout_ms", juint(troupe_cmd_Tool_timeout_ms(t)));
    json_object_set_new(o, "enabled", json_boolean(troupe_cmd_Tool_enabled(t)));
    if (n_versions > 0)
        json_object_set_new(o, "versions", juint(n_versions));
    return o;
}

/* ---- events ------------------------------------------------------------------------ */

static void event_data(json_t *d, const struct troupe_journal_Event *ev)
{
    switch (troupe_journal_Event_data_type(ev)) {
    case troupe_journal_Data_RunCreated: {
        const struct troupe_journal_RunCreated *e = troupe_journal_Event_data_as_RunCreated(ev);
        json_object_set_new(d, "tenant", jstr(troupe_journal_RunCreated_tenant(e)));
        json_object_set_new(d, "goal", jstr(troupe_journal_RunCreated_goal(e)));
        json_object_set_new(d, "agent", gw_render_agent(troupe_journal_RunCreated_agent(e)));
        json_object_set_new(d, "metadata", gw_json_text_value(troupe_journal_RunCreated_metadata(e)));
        json_object_set_new(d, "idempotency_key", jstr(troupe_journal_RunCreated_idempotency_key(e)));
        json_object_set_new(d, "owner_node", juint(troupe_journal_RunCreated_owner_node(e)));
        json_object_set_new(d, "created_by", jstr(troupe_journal_RunCreated_created_by(e)));
        break;
    }
    case troupe_journal_Data_RunAssigned: {
        const struct troupe_journal_RunAssigned *e = troupe_journal_Event_data_as_RunAssigned(ev);
        json_object_set_new(d, "owner_node", juint(troupe_journal_RunAssigned_owner_node(e)));
        json_object_set_new(d, "previous_owner", juint(troupe_journal_RunAssigned_previous_owner(e)));
        json_object_set_new(d, "reason", jstr(troupe_journal_RunAssigned_reason(e)));
        break;
    }
    case troupe_journal_Data_LlmRequested: {
        const struct troupe_journal_LlmRequested *e = troupe_journal_Event_data_as_LlmRequested(ev);
        json_object_set_new(d, "step", juint(troupe_journal_LlmRequested_step(e)));
        json_object_set_new(d, "attempt", juint(troupe_journal_LlmRequested_attempt(e)));
        json_object_set_new(d, "model", jstr(troupe_journal_LlmRequested_model(e)));
        json_object_set_new(d, "provider", jstr(troupe_journal_LlmRequested_provider(e)));
        json_object_set_new(d, "prompt_digest", jhex(troupe_journal_LlmRequested_prompt_digest(e)));
        json_object_set_new(d, "prompt_tokens_est", juint(troupe_journal_LlmRequested_prompt_tokens_est(e)));
        json_object_set_new(d, "message_count", juint(troupe_journal_LlmRequested_message_count(e)));
        break;
    }
    case troupe_journal_Data_LlmCompleted: {
        const struct troupe_journal_LlmCompleted *e = troupe_journal_Event_data_as_LlmCompleted(ev);
        json_object_set_new(d, "step", juint(troupe_journal_LlmCompleted_step(e)));
        json_object_set_new(d, "model", jstr(troupe_journal_LlmCompleted_model(e)));
        json_object_set_new(d, "content", jstr(troupe_journal_LlmCompleted_content(e)));
        json_t *calls = json_array();
        for (uint32_t i = 0; i < troupe_journal_LlmCompleted_tool_calls_len(e); i++) {
            const struct troupe_journal_ToolCall *tc = troupe_journal_LlmCompleted_tool_calls_at(e, i);
            /* arguments stay the text the model sent, as in Chat Completions */
            json_array_append_new(calls, json_pack("{s:o, s:o, s:o}", "id", jstr(troupe_journal_ToolCall_id(tc)),
                                                   "name", jstr(troupe_journal_ToolCall_name(tc)), "arguments",
                                                   jstr(troupe_journal_ToolCall_arguments(tc))));
        }
        json_object_set_new(d, "tool_calls", calls);
        json_object_set_new(d, "finish_reason",
                            json_string(NAME_OF(finish_names, troupe_journal_LlmCompleted_finish_reason(e), "unknown")));
        json_object_set_new(d, "usage", render_usage(troupe_journal_LlmCompleted_usage(e)));
        json_object_set_new(d, "latency_ms", juint(troupe_journal_LlmCompleted_latency_ms(e)));
        json_object_set_new(d, "latency_us", juint(troupe_journal_LlmCompleted_latency_us(e)));
        json_object_set_new(d, "provider_request_id", jstr(troupe_journal_LlmCompleted_provider_request_id(e)));
        json_object_set_new(d, "attempt", juint(troupe_journal_LlmCompleted_attempt(e)));
        break;
    }
    case troupe_journal_Data_ToolRequested: {
        const struct troupe_journal_ToolRequested *e = troupe_journal_Event_data_as_ToolRequested(ev);
        json_object_set_new(d, "step", juint(troupe_journal_ToolRequested_step(e)));
        json_object_set_new(d, "call_index", juint(troupe_journal_ToolRequested_call_index(e)));
        json_object_set_new(d, "call_id", jstr(troupe_journal_ToolRequested_call_id(e)));
        json_object_set_new(d, "tool", jstr(troupe_journal_ToolRequested_tool(e)));
        json_object_set_new(d, "arguments", gw_json_text_value(troupe_journal_ToolRequested_arguments(e)));
        json_object_set_new(d, "risk", json_string(gw_risk_name(troupe_journal_ToolRequested_risk(e))));
        break;
    }
    case troupe_journal_Data_ToolStarted: {
        const struct troupe_journal_ToolStarted *e = troupe_journal_Event_data_as_ToolStarted(ev);
        json_object_set_new(d, "step", juint(troupe_journal_ToolStarted_step(e)));
        json_object_set_new(d, "call_index", juint(troupe_journal_ToolStarted_call_index(e)));
        json_object_set_new(d, "call_id", jstr(troupe_journal_ToolStarted_call_id(e)));
        json_object_set_new(d, "tool", jstr(troupe_journal_ToolStarted_tool(e)));
        json_object_set_new(d, "version", juint(troupe_journal_ToolStarted_version(e)));
        json_object_set_new(d, "arguments", gw_json_text_value(troupe_journal_ToolStarted_arguments(e)));
        json_object_set_new(d, "idempotency_key", jhex(troupe_journal_ToolStarted_idempotency_key(e)));
        json_object_set_new(d, "attempt", juint(troupe_journal_ToolStarted_attempt(e)));
        break;
    }
    case troupe_journal_Data_ToolCompleted: {
        const struct troupe_journal_ToolCompleted *e = troupe_journal_Event_data_as_ToolCompleted(ev);
        json_object_set_new(d, "step", juint(troupe_journal_ToolCompleted_step(e)));
        json_object_set_new(d, "call_index", juint(troupe_journal_ToolCompleted_call_index(e)));
        json_object_set_new(d, "call_id", jstr(troupe_journal_ToolCompleted_call_id(e)));
        json_object_set_new(d, "result", jstr(troupe_journal_ToolCompleted_result(e)));
        struct tr_fb_vec dig = troupe_journal_ToolCompleted_result_digest(e);
        if (dig.data != NULL) {
            json_object_set_new(d, "result_digest", jhex(dig));
            json_object_set_new(d, "result_size", juint(troupe_journal_ToolCompleted_result_size(e)));
        }
        json_object_set_new(d, "error", jstr(troupe_journal_ToolCompleted_error(e)));
        json_object_set_new(d, "is_error", json_boolean(troupe_journal_ToolCompleted_is_error(e)));
        json_object_set_new(d, "duration_ms", juint(troupe_journal_ToolCompleted_duration_ms(e)));
        json_object_set_new(d, "duration_us", juint(troupe_journal_ToolCompleted_duration_us(e)));
        break;
    }
    case troupe_journal_Data_ApprovalRequested: {
        const struct troupe_journal_ApprovalRequested *e = troupe_journal_Event_data_as_ApprovalRequested(ev);
        json_object_set_new(d, "approval_id", jstr(troupe_journal_ApprovalRequested_approval_id(e)));
        json_object_set_new(d, "step", juint(troupe_journal_ApprovalRequested_step(e)));
        json_object_set_new(d, "call_index", juint(troupe_journal_ApprovalRequested_call_index(e)));
        json_object_set_new(d, "call_id", jstr(troupe_journal_ApprovalRequested_call_id(e)));
        json_object_set_new(d, "tool", jstr(troupe_journal_ApprovalRequested_tool(e)));
        json_object_set_new(d, "arguments", gw_json_text_value(troupe_journal_ApprovalRequested_arguments(e)));
        json_object_set_new(d, "risk", json_string(gw_risk_name(troupe_journal_ApprovalRequested_risk(e))));
        json_object_set_new(d, "reason", jstr(troupe_journal_ApprovalRequested_reason(e)));
        json_object_set_new(d, "expires_at", jtime(troupe_journal_ApprovalRequested_expires_at_us(e)));
        break;
    }
    case troupe_journal_Data_ApprovalDecided: {
        const struct troupe_journal_ApprovalDecided *e = troupe_journal_Event_data_as_ApprovalDecided(ev);
        json_object_set_new(d, "approval_id", jstr(troupe_journal_ApprovalDecided_approval_id(e)));
        json_object_set_new(d, "decision",
                            json_string(NAME_OF(decision_names, troupe_journal_ApprovalDecided_decision(e), "unknown")));
        json_object_set_new(d, "reason", jstr(troupe_journal_ApprovalDecided_reason(e)));
        json_object_set_new(d, "decided_by", jstr(troupe_journal_ApprovalDecided_decided_by(e)));
        break;
    }
    case troupe_journal_Data_MemoryWritten: {
        const struct troupe_journal_MemoryWritten *e = troupe_journal_Event_data_as_MemoryWritten(ev);
        json_object_set_new(d, "memory_id", jstr(troupe_journal_MemoryWritten_memory_id(e)));
        json_object_set_new(d, "scope", jstr(troupe_journal_MemoryWritten_scope(e)));
        json_object_set_new(d, "key", jstr(troupe_journal_MemoryWritten_key(e)));
        json_object_set_new(d, "content", jstr(troupe_journal_MemoryWritten_content(e)));
        json_t *tags = json_array();
        for (uint32_t i = 0; i < troupe_journal_MemoryWritten_tags_len(e); i++)
            json_array_append_new(tags, jstr(troupe_journal_MemoryWritten_tags_at(e, i)));
        json_object_set_new(d, "tags", tags);
        /* the vector itself is large and of no use to a client */
        json_object_set_new(d, "embedding_dims", juint(troupe_journal_MemoryWritten_embedding_len(e)));
        break;
    }
    case troupe_journal_Data_RunSucceeded: {
        const struct troupe_journal_RunSucceeded *e = troupe_journal_Event_data_as_RunSucceeded(ev);
        json_object_set_new(d, "output", jstr(troupe_journal_RunSucceeded_output(e)));
        json_object_set_new(d, "steps", juint(troupe_journal_RunSucceeded_steps(e)));
        json_object_set_new(d, "usage", render_usage(troupe_journal_RunSucceeded_usage(e)));
        break;
    }
    case troupe_journal_Data_RunFailed: {
        const struct troupe_journal_RunFailed *e = troupe_journal_Event_data_as_RunFailed(ev);
        json_object_set_new(d, "error_code", jstr(troupe_journal_RunFailed_error_code(e)));
        json_object_set_new(d, "error", jstr(troupe_journal_RunFailed_error(e)));
        json_object_set_new(d, "steps", juint(troupe_journal_RunFailed_steps(e)));
        json_object_set_new(d, "usage", render_usage(troupe_journal_RunFailed_usage(e)));
        break;
    }
    case troupe_journal_Data_RunCancelled: {
        const struct troupe_journal_RunCancelled *e = troupe_journal_Event_data_as_RunCancelled(ev);
        json_object_set_new(d, "reason", jstr(troupe_journal_RunCancelled_reason(e)));
        json_object_set_new(d, "cancelled_by", jstr(troupe_journal_RunCancelled_cancelled_by(e)));
        break;
    }
    case troupe_journal_Data_BudgetExceeded: {
        const struct troupe_journal_BudgetExceeded *e = troupe_journal_Event_data_as_BudgetExceeded(ev);
        json_object_set_new(d, "cap", json_string(NAME_OF(cap_names, troupe_journal_BudgetExceeded_cap(e), "unknown")));
        json_object_set_new(d, "limit", json_real(troupe_journal_BudgetExceeded_limit(e)));
        json_object_set_new(d, "used", json_real(troupe_journal_BudgetExceeded_used(e)));
        break;
    }
    case troupe_journal_Data_LoopDetected: {
        const struct troupe_journal_LoopDetected *e = troupe_journal_Event_data_as_LoopDetected(ev);
        json_object_set_new(d, "step", juint(troupe_journal_LoopDetected_step(e)));
        json_object_set_new(d, "signature", jhex(troupe_journal_LoopDetected_signature(e)));
        json_object_set_new(d, "repeats", juint(troupe_journal_LoopDetected_repeats(e)));
        json_object_set_new(d, "detail", jstr(troupe_journal_LoopDetected_detail(e)));
        break;
    }
    default:
        break; /* a type this build does not know: clients ignore it */
    }
}

json_t *gw_render_event(const struct troupe_journal_Event *ev)
{
    json_t *o = json_object();
    json_object_set_new(o, "seq", juint(troupe_journal_Event_seq(ev)));
    json_object_set_new(o, "type", json_string(gw_event_type_name(troupe_journal_Event_data_type(ev))));
    json_object_set_new(o, "time", jtime(troupe_journal_Event_time_us(ev)));
    json_object_set_new(o, "run_id", jstr(troupe_journal_Event_run_id(ev)));
    json_object_set_new(o, "epoch", juint(troupe_journal_Event_epoch(ev)));
    json_t *d = json_object();
    event_data(d, ev);
    json_object_set_new(o, "data", d);
    return o;
}

/* ---- tenants ----------------------------------------------------------------------- */

#define DAY_US (86400LL * 1000000LL)

uint64_t gw_tenant_spend_today(const struct troupe_state_Tenant *t, int64_t now_us)
{
    return troupe_state_Tenant_spend_day(t) == now_us / DAY_US ? troupe_state_Tenant_spend_micro_usd(t) : 0;
}

json_t *gw_render_tenant(const struct troupe_state_Tenant *t, int64_t now_us)
{
    json_t *o = json_object();
    json_object_set_new(o, "id", jstr(troupe_state_Tenant_tenant_id(t)));
    json_object_set_new(o, "name", jstr(troupe_state_Tenant_name(t)));
    const struct troupe_cmd_TenantLimits *l = troupe_state_Tenant_limits(t);
    double budget = l != NULL ? troupe_cmd_TenantLimits_budget_usd_per_day(l) : 0;
    if (l != NULL) {
        int8_t pol = troupe_cmd_TenantLimits_budget_policy(l);
        json_object_set_new(o, "limits",
                            json_pack("{s:I, s:I, s:f, s:s}", "max_active_runs",
                                      (json_int_t)troupe_cmd_TenantLimits_max_active_runs(l), "requests_per_s",
                                      (json_int_t)troupe_cmd_TenantLimits_requests_per_s(l), "budget_usd_per_day",
                                      budget, "budget_policy",
                                      pol == troupe_cmd_BudgetPolicy_Wait ? "wait" : "fail"));
    } else {
        json_object_set_new(o, "limits", json_null()); /* none: the default tenant before any update */
    }
    json_object_set_new(o, "created_at", jtime(troupe_state_Tenant_created_at_us(t)));
    uint64_t today = gw_tenant_spend_today(t, now_us);
    bool fresh = today > 0 || troupe_state_Tenant_spend_day(t) == now_us / DAY_US;
    json_t *sp = json_object();
    json_object_set_new(sp, "day", jtime((now_us / DAY_US) * DAY_US));
    json_object_set_new(sp, "cost_usd", json_real((double)today / 1e6));
    json_object_set_new(sp, "cost_micro_usd", juint(today));
    json_object_set_new(sp, "prompt_tokens", juint(fresh ? troupe_state_Tenant_spend_prompt_tokens(t) : 0));
    json_object_set_new(sp, "completion_tokens", juint(fresh ? troupe_state_Tenant_spend_completion_tokens(t) : 0));
    json_object_set_new(sp, "total_cost_usd", json_real((double)troupe_state_Tenant_total_micro_usd(t) / 1e6));
    json_object_set_new(sp, "llm_calls", juint(troupe_state_Tenant_llm_calls(t)));
    json_object_set_new(sp, "budget_exhausted", json_boolean(budget > 0 && (double)today >= budget * 1e6));
    json_object_set_new(o, "spend", sp);
    return o;
}
