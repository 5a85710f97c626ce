/* The run core's test harness (harness.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "harness.h"
#include "schemas/journal_generated.h"

#define J(x) troupe_journal_##x
#define RUN_ID UINT64_C(0x00000000000a11ce)

static const struct tr_run_tool *lookup(void *ud, const char *name, uint32_t version)
{
    struct harness *h = ud;

    for (uint32_t i = 0; i < h->n_tools; i++)
        if (strcmp(h->tools[i].name, name) == 0 && (version == 0 || version == h->tools[i].version))
            return &h->tools[i];
    return NULL;
}

int64_t h_now(struct harness *h)
{
    return h->fixed_now ? h->fixed_now : h->base_us + 1000 * (int64_t)h->s.next_seq;
}

static void push(struct harness *h, const void *buf, size_t len)
{
    assert_true(h->n < H_MAX_EVENTS);
    h->ev[h->n] = tr_memdup(buf, len);
    h->len[h->n] = len;
    h->n++;
}

static void fold_push(struct harness *h, const void *buf, size_t len)
{
    assert_int_equal(tr_run_fold(&h->s, buf, len), 0);
    push(h, buf, len);
    h->v.acked_seq = h->s.next_seq - 1;
}

/* An FSM event (seq next, time now). */
static void fsm_event(struct harness *h, struct tr_fb_builder *b, uint8_t type, tr_fb_ref data)
{
    tr_fb_ref rid = tr_fb_create_str(b, h->s.run_text);
    size_t n;

    J(Event_start)(b);
    J(Event_add_seq)(b, h->s.next_seq);
    J(Event_add_time_us)(b, h_now(h));
    J(Event_add_run_id)(b, rid);
    J(Event_add_epoch)(b, h->s.epoch);
    J(Event_add_data_type)(b, type);
    J(Event_add_data)(b, data);
    J(Event_finish)(b, J(Event_end)(b));
    const uint8_t *p = tr_fb_builder_data(b, &n);
    fold_push(h, p, n);
    tr_fb_builder_free(b);
}

void h_init(struct harness *h, const struct h_agent *a, h_llm_fn llm, h_tool_fn tool)
{
    struct tr_fb_builder b;
    tr_fb_ref names[8];
    uint32_t nt = 0;

    memset(h, 0, sizeof *h);
    h->base_us = INT64_C(1767225600000000); /* 2026-01-01T00:00:00Z */
    tr_run_state_init(&h->s, RUN_ID, 1);
    h->env.context_tokens = 100000;
    h->env.approval_timeout_ms = 60000;
    h->env.llm_timeout_ms = 1000;
    h->env.tool_lookup = lookup;
    h->env.tool_ud = h;
    h->llm = llm;
    h->tool = tool;

    tr_fb_builder_init(&b);
    while (nt < 8 && a->tools[nt])
        nt++;
    for (uint32_t i = 0; i < nt; i++)
        names[i] = tr_fb_create_str(&b, a->tools[i]);
    tr_fb_ref tv = J(AgentConfig_create_tools)(&b, names, nt);
    tr_fb_ref model = tr_fb_create_str(&b, "gpt-test");
    tr_fb_ref sys = a->system ? tr_fb_create_str(&b, a->system) : 0;
    J(AgentConfig_start)(&b);
    J(AgentConfig_add_model)(&b, model);
    J(AgentConfig_add_system)(&b, sys);
    J(AgentConfig_add_tools)(&b, tv);
    J(AgentConfig_add_max_steps)(&b, a->max_steps ? a->max_steps : 50);
    J(AgentConfig_add_max_tokens)(&b, a->max_tokens);
    J(AgentConfig_add_max_cost_usd)(&b, a->max_cost_usd);
    J(AgentConfig_add_timeout_s)(&b, a->timeout_s);
    tr_fb_ref agent = J(AgentConfig_end)(&b);
    tr_fb_ref tenant = tr_fb_create_str(&b, "acme");
    tr_fb_ref goal = tr_fb_create_str(&b, a->goal ? a->goal : "Find the answer.");
    J(RunCreated_start)(&b);
    J(RunCreated_add_tenant)(&b, tenant);
    J(RunCreated_add_goal)(&b, goal);
    J(RunCreated_add_agent)(&b, agent);
    J(RunCreated_add_owner_node)(&b, 1);
    fsm_event(h, &b, J(Data_RunCreated), J(RunCreated_end)(&b));
}

void h_free(struct harness *h)
{
    tr_run_state_free(&h->s);
    tr_run_vol_free(&h->v);
    for (uint32_t i = 0; i < h->n; i++)
        tr_free(h->ev[i]);
    for (uint32_t i = 0; i < h->n_tools; i++) {
        tr_schema_free(h->schemas[i]);
        tr_free((char *)h->tools[i].name);
        tr_free((char *)h->tools[i].input_schema);
    }
}

void h_add_tool(struct harness *h, const char *name, const char *schema, uint8_t risk)
{
    struct tr_run_tool *t = &h->tools[h->n_tools];
    struct tr_err err;

    assert_true(h->n_tools < H_MAX_TOOLS);
    memset(t, 0, sizeof *t);
    t->name = tr_strdup(name);
    t->version = 1;
    t->description = "a test tool";
    t->risk = risk;
    t->kind = 0; /* http */
    t->config = "{\"url\":\"http://127.0.0.1:9/x\"}";
    t->timeout_ms = 1000;
    t->enabled = true;
    if (schema) {
        json_t *j = json_loads(schema, 0, NULL);
        assert_non_null(j);
        t->input_schema = tr_strdup(schema);
        assert_int_equal(tr_schema_compile(j, &h->schemas[h->n_tools], &err), 0);
        t->schema = h->schemas[h->n_tools];
        json_decref(j);
    }
    h->n_tools++;
}

struct tr_run_tool *h_tool(struct harness *h, const char *name)
{
    for (uint32_t i = 0; i < h->n_tools; i++)
        if (strcmp(h->tools[i].name, name) == 0)
            return &h->tools[i];
    return NULL;
}

void h_decide(struct harness *h, struct tr_run_action *a)
{
    tr_run_decide(&h->s, &h->v, &h->env, h_now(h), a);
}

void h_apply(struct harness *h, const struct tr_run_action *a)
{
    if (a->kind == TR_RUN_APPEND)
        push(h, a->buf, a->len);
    tr_run_performed(&h->s, &h->v, a);
    assert_string_equal(h->s.fold_error, "");
    if (a->kind == TR_RUN_APPEND && !h->no_ack)
        h_ack_all(h);
}

void h_ack_all(struct harness *h)
{
    h->v.acked_seq = h->s.next_seq - 1;
    h->v.appends_inflight = 0;
}

void h_refold(struct harness *h, uint32_t keep)
{
    assert_true(keep >= 1 && keep <= h->n);
    for (uint32_t i = keep; i < h->n; i++)
        tr_free(h->ev[i]);
    h->n = keep;
    tr_run_state_free(&h->s);
    for (uint32_t i = 0; i < keep; i++)
        assert_int_equal(tr_run_fold(&h->s, h->ev[i], h->len[i]), 0);
    h->v.acked_seq = h->s.next_seq - 1;
    h->v.appends_inflight = 0;
    h->v.resync = false;
}

void h_llm_reply(struct harness *h, const char *json)
{
    struct tr_run_llm_result *r = tr_calloc(1, sizeof *r);

    h_llm_result(json, r);
    h->v.llm_out = 0;
    if (h->v.llm) {
        tr_run_llm_result_free(h->v.llm);
        tr_free(h->v.llm);
    }
    h->v.llm = r;
}

void h_tool_reply(struct harness *h, uint32_t idx, const char *json)
{
    struct tr_run_tool_result *r = tr_calloc(1, sizeof *r);

    h_tool_result(json, r);
    h->v.calls[idx].inflight = false;
    h->v.calls[idx].res = r;
}

int h_drive(struct harness *h, int max, struct tr_run_action *last)
{
    struct tr_run_action a;

    for (int n = 0; n < max; n++) {
        h_decide(h, &a);
        if (a.kind == TR_RUN_ARM_DEADLINE && h->decide_approval) {
            const struct tr_run_call *c = &tr_run_last_step(&h->s)->calls[a.call_index];
            h_apply(h, &a);
            tr_run_action_free(&a);
            h_fsm_decided(h, c->approval_id, h->decide_approval(h, c), "by the script");
            continue;
        }
        switch (a.kind) {
        case TR_RUN_WAIT:
        case TR_RUN_EXIT:
        case TR_RUN_ARM_DEADLINE:
        case TR_RUN_PROPOSE_EXPIRE:
            if (a.kind == TR_RUN_ARM_DEADLINE || a.kind == TR_RUN_PROPOSE_EXPIRE)
                h_apply(h, &a);
            int kind = a.kind;
            if (last)
                *last = a;
            else
                tr_run_action_free(&a);
            return kind;
        case TR_RUN_APPEND:
            h_apply(h, &a);
            break;
        case TR_RUN_CALL_LLM:
            h_apply(h, &a);
            h->llm_calls++;
            if (h->manual_llm || !h->llm) {
                if (last)
                    *last = a;
                else
                    tr_run_action_free(&a);
                return TR_RUN_CALL_LLM;
            } else {
                char *reply = h->llm(h, a.step, a.attempt);
                h_llm_reply(h, reply);
                tr_free(reply);
            }
            break;
        case TR_RUN_CALL_TOOL: {
            h_apply(h, &a);
            h->tool_calls++;
            struct tr_tool_call_rec req;
            assert_int_equal(tr_tool_call_read(a.json, a.json_len, &req), 0);
            const char *key = req.idempotency_key, *name = req.name, *args = req.arguments;
            snprintf(h->last_key, sizeof h->last_key, "%s", key ? key : "");
            if (h->manual_tools || !h->tool) {
                tr_tool_call_free(&req);
                if (last)
                    *last = a;
                else
                    tr_run_action_free(&a);
                return TR_RUN_CALL_TOOL;
            }
            char *res = h->tool(h, name, args, key, a.step, a.call_index);
            h_tool_reply(h, a.call_index, res);
            tr_free(res);
            tr_tool_call_free(&req);
            break;
        }
        }
        tr_run_action_free(&a);
    }
    fail_msg("h_drive: no WAIT or EXIT after %d actions", max);
    return -1;
}

void h_fsm_decided(struct harness *h, const char *approval_id, int decision, const char *reason)
{
    struct tr_fb_builder b;

    tr_fb_builder_init(&b);
    tr_fb_ref id = tr_fb_create_str(&b, approval_id);
    tr_fb_ref r = tr_fb_create_str(&b, reason ? reason : "");
    tr_fb_ref by = tr_fb_create_str(&b, decision == J(Decision_Expired) ? "timeout" : "alice");
    J(ApprovalDecided_start)(&b);
    J(ApprovalDecided_add_approval_id)(&b, id);
    J(ApprovalDecided_add_decision)(&b, (int8_t)decision);
    J(ApprovalDecided_add_reason)(&b, r);
    J(ApprovalDecided_add_decided_by)(&b, by);
    fsm_event(h, &b, J(Data_ApprovalDecided), J(ApprovalDecided_end)(&b));
}

void h_fsm_cancelled(struct harness *h)
{
    struct tr_fb_builder b;

    tr_fb_builder_init(&b);
    tr_fb_ref r = tr_fb_create_str(&b, "user asked");
    J(RunCancelled_start)(&b);
    J(RunCancelled_add_reason)(&b, r);
    fsm_event(h, &b, J(Data_RunCancelled), J(RunCancelled_end)(&b));
}

void h_replay(struct harness *dst, const struct harness *src, uint32_t k)
{
    memset(dst, 0, sizeof *dst);
    dst->base_us = src->base_us;
    dst->fixed_now = src->fixed_now;
    tr_run_state_init(&dst->s, RUN_ID, 1);
    dst->env = src->env;
    dst->env.tool_ud = dst;
    dst->llm = src->llm;
    dst->tool = src->tool;
    dst->ud = src->ud;
    dst->decide_approval = src->decide_approval;
    for (uint32_t i = 0; i < src->n_tools; i++) {
        const struct tr_run_tool *t = &src->tools[i];
        h_add_tool(dst, t->name, t->input_schema, t->risk);
        dst->tools[i].enabled = t->enabled;
        dst->tools[i].version = t->version;
    }
    for (uint32_t i = 0; i < k; i++)
        fold_push(dst, src->ev[i], src->len[i]);
}

int h_type(const struct harness *h, uint32_t i)
{
    const struct J(Event) *e = J(Event_verify_as_root)(h->ev[i], h->len[i], NULL);
    assert_non_null(e);
    return J(Event_data_type)(e);
}

uint32_t h_count(const struct harness *h, int type)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < h->n; i++)
        n += h_type(h, i) == type;
    return n;
}

static char *dump(json_t *j)
{
    char *t = json_dumps(j, JSON_COMPACT);
    char *out = tr_strdup(t);
    free(t);
    json_decref(j);
    return out;
}

char *h_llm_text(const char *content, uint64_t pt, uint64_t ct, uint64_t cost)
{
    return dump(json_pack("{s:b,s:s,s:[],s:s,s:s,s:{s:I,s:I},s:I,s:i}", "ok", 1, "content", content, "tool_calls",
                          "finish_reason", "stop", "model", "gpt-test", "usage", "prompt_tokens", (json_int_t)pt,
                          "completion_tokens", (json_int_t)ct, "cost_micro_usd", (json_int_t)cost, "latency_ms", 7));
}

char *h_llm_calls(uint64_t pt, uint64_t ct, uint64_t cost, int n, const char *const *names, const char *const *args)
{
    json_t *calls = json_array();
    for (int i = 0; i < n; i++) {
        char id[32];
        snprintf(id, sizeof id, "call_%d", i);
        json_array_append_new(calls, json_pack("{s:s,s:s,s:s}", "id", id, "name", names[i], "arguments", args[i]));
    }
    return dump(json_pack("{s:b,s:n,s:o,s:s,s:s,s:{s:I,s:I},s:I,s:i}", "ok", 1, "content", "tool_calls", calls,
                          "finish_reason", "tool_calls", "model", "gpt-test", "usage", "prompt_tokens",
                          (json_int_t)pt, "completion_tokens", (json_int_t)ct, "cost_micro_usd", (json_int_t)cost,
                          "latency_ms", 7));
}

char *h_llm_call1(const char *name, const char *args)
{
    return h_llm_calls(100, 10, 1000, 1, &name, &args);
}

char *h_tool_ok(const char *result)
{
    return dump(json_pack("{s:b,s:s,s:b,s:n,s:i}", "ok", 1, "result", result, "is_error", 0, "error", "duration_ms", 3));
}

char *h_tool_err(const char *error)
{
    return dump(json_pack("{s:b,s:s,s:b,s:s,s:i}", "ok", 0, "result", "", "is_error", 1, "error", error,
                          "duration_ms", 3));
}
