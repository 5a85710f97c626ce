/* The fold: a run's state from its journal events, in seq order (run.h,
 * invariant 1). Pure: no clock, no store, no I/O. */
#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "actors/run.h"
#include "schemas/journal_generated.h"

#define J(x) troupe_journal_##x

static char *dup_str(struct tr_fb_str s)
{
    return s.ptr ? tr_strndup(s.ptr, s.len) : NULL;
}

static void set_str(char **dst, struct tr_fb_str s)
{
    tr_free(*dst);
    *dst = dup_str(s);
}

size_t tr_run_utf8_cut(const char *s, size_t n, size_t max)
{
    if (n <= max)
        return n;
    while (max > 0 && ((unsigned char)s[max] & 0xC0) == 0x80)
        max--;
    return max;
}

int tr_run_utf8_shown(const char *s, size_t max)
{
    return (int)tr_run_utf8_cut(s, strlen(s), max);
}

void tr_run_utf8_scrub(char *s, size_t n)
{
    unsigned char *p = (unsigned char *)s;

    for (size_t i = 0; i < n;) {
        size_t l = tr_utf8_seq(p + i, n - i);
        if (l == 0) {
            p[i++] = '?';
            continue;
        }
        i += l;
    }
}

void tr_run_state_init(struct tr_run_state *s, uint64_t run_id, uint64_t epoch)
{
    memset(s, 0, sizeof *s);
    s->run_id = run_id;
    tr_run_id_text(run_id, s->run_text);
    s->epoch = epoch;
    s->next_seq = 1;
    s->max_steps = 50;
    s->temperature = 1.0f;
}

static void call_free(struct tr_run_call *c)
{
    tr_free(c->call_id);
    tr_free(c->name);
    tr_free(c->args);
    tr_free(c->approval_id);
    tr_free(c->decision_reason);
    tr_free(c->result);
    tr_free(c->error);
}

void tr_run_state_free(struct tr_run_state *s)
{
    for (uint32_t i = 0; i < s->n_steps; i++) {
        struct tr_run_step *st = &s->steps[i];

        for (uint32_t j = 0; j < st->n_calls; j++)
            call_free(&st->calls[j]);
        tr_free(st->calls);
        tr_free(st->content);
        tr_free(st->loop_detail);
    }
    tr_free(s->steps);
    for (uint32_t i = 0; i < s->n_tools; i++)
        tr_free(s->tools[i]);
    tr_free(s->tools);
    for (uint32_t i = 0; i < s->n_scratch; i++) {
        tr_free(s->scratch[i].key);
        tr_free(s->scratch[i].value);
    }
    tr_free(s->scratch);
    tr_free(s->sigs);
    tr_free(s->results);
    tr_free(s->tenant);
    tr_free(s->goal);
    tr_free(s->model);
    tr_free(s->system);
    tr_free(s->provider);
    uint64_t id = s->run_id, epoch = s->epoch;
    tr_run_state_init(s, id, epoch);
}

struct tr_run_step *tr_run_last_step(const struct tr_run_state *s)
{
    return s->n_steps ? &s->steps[s->n_steps - 1] : NULL;
}

bool tr_run_step_complete(const struct tr_run_step *st)
{
    if (!st->llm_done_seq)
        return false;
    for (uint32_t i = 0; i < st->n_calls; i++)
        if (!st->calls[i].done_seq)
            return false;
    return true;
}

const char *tr_run_scratch_get(const struct tr_run_state *s, const char *key)
{
    for (uint32_t i = 0; i < s->n_scratch; i++)
        if (strcmp(s->scratch[i].key, key) == 0)
            return s->scratch[i].value;
    return NULL;
}

static void scratch_set(struct tr_run_state *s, const char *key, const char *value)
{
    for (uint32_t i = 0; i < s->n_scratch; i++) {
        if (strcmp(s->scratch[i].key, key) == 0) {
            tr_free(s->scratch[i].value);
            s->scratch[i].value = tr_strdup(value);
            return;
        }
    }
    if (s->n_scratch >= TR_RUN_SCRATCH_KEYS)
        return; /* the builtin refused it already (run_tools.c) */
    s->scratch = tr_realloc(s->scratch, (s->n_scratch + 1) * sizeof *s->scratch);
    s->scratch[s->n_scratch].key = tr_strdup(key);
    s->scratch[s->n_scratch].value = tr_strdup(value);
    s->n_scratch++;
}

/* Signature of a call: H(name, 0x00, arguments in canonical form (sorted
 * keys, compact); the raw text when it is not JSON). */
static void call_signature(const char *name, const char *args, unsigned char out[TR_RUN_SIG])
{
    crypto_generichash_state h;
    json_t *v = args ? json_loads(args, JSON_DECODE_ANY, NULL) : NULL;
    char *canon = v ? json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY) : NULL;
    const char *a = canon ? canon : (args ? args : "");

    crypto_generichash_init(&h, NULL, 0, TR_RUN_SIG);
    crypto_generichash_update(&h, (const unsigned char *)name, strlen(name) + 1);
    crypto_generichash_update(&h, (const unsigned char *)a, strlen(a));
    crypto_generichash_final(&h, out, TR_RUN_SIG);
    free(canon);
    json_decref(v);
}

static uint32_t sig_bump(struct tr_run_state *s, const unsigned char sig[TR_RUN_SIG])
{
    for (uint32_t i = 0; i < s->n_sigs; i++)
        if (memcmp(s->sigs[i].sig, sig, TR_RUN_SIG) == 0)
            return ++s->sigs[i].count;
    if (s->n_sigs == s->cap_sigs) {
        s->cap_sigs = s->cap_sigs ? 2 * s->cap_sigs : 16;
        s->sigs = tr_realloc(s->sigs, s->cap_sigs * sizeof *s->sigs);
    }
    memcpy(s->sigs[s->n_sigs].sig, sig, TR_RUN_SIG);
    s->sigs[s->n_sigs].count = 1;
    return s->sigs[s->n_sigs++].count;
}

/* 1 when this result was seen before in the run; records it either way. */
static bool result_seen(struct tr_run_state *s, const struct tr_run_call *c)
{
    unsigned char h[TR_RUN_SIG];
    crypto_generichash_state st;
    unsigned char flag = c->is_error ? 1 : 0;
    const char *text = c->is_error ? c->error : c->result;

    crypto_generichash_init(&st, NULL, 0, TR_RUN_SIG);
    crypto_generichash_update(&st, &flag, 1);
    if (text)
        crypto_generichash_update(&st, (const unsigned char *)text, strlen(text));
    if (c->has_digest)
        crypto_generichash_update(&st, c->result_digest, TR_RUN_DIGEST);
    crypto_generichash_final(&st, h, TR_RUN_SIG);
    for (uint32_t i = 0; i < s->n_results; i++)
        if (memcmp(s->results[i], h, TR_RUN_SIG) == 0)
            return true;
    if (s->n_results == s->cap_results) {
        s->cap_results = s->cap_results ? 2 * s->cap_results : 32;
        s->results = tr_realloc(s->results, s->cap_results * sizeof *s->results);
    }
    memcpy(s->results[s->n_results++], h, TR_RUN_SIG);
    return false;
}

static int fold_fail(struct tr_run_state *s, uint64_t seq, const char *what)
{
    if (!s->fold_error[0])
        snprintf(s->fold_error, sizeof s->fold_error, "run %s seq %llu: %s", s->run_text,
                 (unsigned long long)seq, what);
    return TR_EINVAL;
}

/* The call (step, call_index) of the last step, or NULL. */
static struct tr_run_call *find_call(struct tr_run_state *s, uint32_t step, uint32_t idx)
{
    struct tr_run_step *st = tr_run_last_step(s);

    if (!st || st->n != step || idx >= st->n_calls)
        return NULL;
    return &st->calls[idx];
}

static void fold_created(struct tr_run_state *s, const struct J(Event) *e, const struct J(RunCreated) *d)
{
    const struct J(AgentConfig) *a = J(RunCreated_agent)(d);

    s->created = true;
    s->created_us = J(Event_time_us)(e);
    set_str(&s->tenant, J(RunCreated_tenant)(d));
    set_str(&s->goal, J(RunCreated_goal)(d));
    if (!a)
        return;
    set_str(&s->model, J(AgentConfig_model)(a));
    set_str(&s->system, J(AgentConfig_system)(a));
    set_str(&s->provider, J(AgentConfig_provider)(a));
    s->n_tools = J(AgentConfig_tools_len)(a);
    s->tools = tr_calloc(s->n_tools ? s->n_tools : 1, sizeof *s->tools);
    for (uint32_t i = 0; i < s->n_tools; i++)
        s->tools[i] = dup_str(J(AgentConfig_tools_at)(a, i));
    s->max_steps = J(AgentConfig_max_steps)(a);
    s->max_tokens = J(AgentConfig_max_tokens)(a);
    s->max_cost_usd = J(AgentConfig_max_cost_usd)(a);
    s->timeout_s = J(AgentConfig_timeout_s)(a);
    s->temperature = J(AgentConfig_temperature)(a);
}

static void prompt_digest(struct tr_run_step *st, const struct J(LlmRequested) *d)
{
    struct tr_fb_vec dg = J(LlmRequested_prompt_digest)(d);

    if (dg.len == TR_RUN_DIGEST)
        memcpy(st->prompt_digest, dg.data, TR_RUN_DIGEST);
    else
        memset(st->prompt_digest, 0, TR_RUN_DIGEST);
}

static int fold_llm_requested(struct tr_run_state *s, uint64_t seq, const struct J(LlmRequested) *d)
{
    uint32_t step = J(LlmRequested_step)(d);
    struct tr_run_step *last = tr_run_last_step(s);

    if (last && last->n == step && !last->llm_done_seq) {
        last->attempt = J(LlmRequested_attempt)(d);
        last->llm_req_seq = seq;
        prompt_digest(last, d);
        return TR_OK;
    }
    if (step != s->n_steps + 1 || (last && !tr_run_step_complete(last)))
        return fold_fail(s, seq, "llm.requested out of order");
    if (s->n_steps == s->cap_steps) {
        s->cap_steps = s->cap_steps ? 2 * s->cap_steps : 16;
        s->steps = tr_realloc(s->steps, s->cap_steps * sizeof *s->steps);
    }
    struct tr_run_step *st = &s->steps[s->n_steps++];
    memset(st, 0, sizeof *st);
    st->n = step;
    st->attempt = J(LlmRequested_attempt)(d);
    st->llm_req_seq = seq;
    prompt_digest(st, d);
    return TR_OK;
}

static int fold_llm_completed(struct tr_run_state *s, uint64_t seq, const struct J(LlmCompleted) *d)
{
    struct tr_run_step *st = tr_run_last_step(s);
    const struct J(Usage) *u = J(LlmCompleted_usage)(d);
    uint32_t n = J(LlmCompleted_tool_calls_len)(d);

    if (!st || st->n != J(LlmCompleted_step)(d) || st->llm_done_seq)
        return fold_fail(s, seq, "llm.completed without its llm.requested");
    st->llm_done_seq = seq;
    st->content = dup_str(J(LlmCompleted_content)(d));
    st->finish_reason = (uint8_t)J(LlmCompleted_finish_reason)(d);
    if (u) {
        st->prompt_tokens = J(Usage_prompt_tokens)(u);
        st->completion_tokens = J(Usage_completion_tokens)(u);
        st->cost_micro_usd = J(Usage_cost_micro_usd)(u);
        s->prompt_tokens += st->prompt_tokens;
        s->completion_tokens += st->completion_tokens;
        s->cost_micro_usd += st->cost_micro_usd;
    }
    if (n > TR_RUN_MAX_CALLS)
        n = TR_RUN_MAX_CALLS;
    st->calls = tr_calloc(n ? n : 1, sizeof *st->calls);
    st->n_calls = n;
    for (uint32_t i = 0; i < n; i++) {
        const struct J(ToolCall) *tc = J(LlmCompleted_tool_calls_at)(d, i);

        st->calls[i].call_id = dup_str(J(ToolCall_id)(tc));
        st->calls[i].name = dup_str(J(ToolCall_name)(tc));
        st->calls[i].args = dup_str(J(ToolCall_arguments)(tc));
        if (!st->calls[i].args)
            st->calls[i].args = tr_strdup("");
    }
    return TR_OK;
}

static int fold_tool_completed(struct tr_run_state *s, uint64_t seq, const struct J(ToolCompleted) *d)
{
    struct tr_run_call *c = find_call(s, J(ToolCompleted_step)(d), J(ToolCompleted_call_index)(d));
    struct tr_fb_vec dg = J(ToolCompleted_result_digest)(d);

    if (!c || !c->req_seq || c->done_seq)
        return fold_fail(s, seq, "tool.completed without its tool.requested");
    c->done_seq = seq;
    c->result = dup_str(J(ToolCompleted_result)(d));
    c->error = dup_str(J(ToolCompleted_error)(d));
    c->is_error = J(ToolCompleted_is_error)(d);
    c->result_size = J(ToolCompleted_result_size)(d);
    if (dg.len == TR_RUN_DIGEST) {
        memcpy(c->result_digest, dg.data, TR_RUN_DIGEST);
        c->has_digest = true;
    }
    c->invalid = c->is_error && c->error &&
                 strncmp(c->error, TR_RUN_INVALID_PREFIX, strlen(TR_RUN_INVALID_PREFIX)) == 0;
    s->invalid_streak = c->invalid ? s->invalid_streak + 1 : 0;
    c->seen_before = result_seen(s, c);
    if (!c->is_error && tr_run_builtin(c->name) == TR_RUN_BUILTIN_SCRATCH_WRITE) {
        json_t *a = json_loads(c->args, 0, NULL);
        const char *k = json_string_value(json_object_get(a, "key"));
        const char *v = json_string_value(json_object_get(a, "value"));

        if (k && v)
            scratch_set(s, k, v);
        json_decref(a);
    }
    return TR_OK;
}

static int fold_terminal(struct tr_run_state *s, uint64_t seq, uint8_t type)
{
    s->terminal = true;
    s->final_type = type;
    s->terminal_seq = seq;
    return TR_OK;
}

int tr_run_fold(struct tr_run_state *s, const void *event, size_t len)
{
    struct tr_fb_error err;
    const struct J(Event) *e;

    if (s->fold_error[0]) /* sticky: nothing is folded after a refused event */
        return TR_EINVAL;
    e = J(Event_verify_as_root)(event, len, &err);
    if (!e) {
        char why[128];
        return fold_fail(s, s->next_seq, tr_fb_error_format(&err, why, sizeof why));
    }
    uint64_t seq = J(Event_seq)(e);
    struct tr_fb_str rid = J(Event_run_id)(e);
    if (rid.len != TR_RUN_ID_TEXT_LEN - 1 || memcmp(rid.ptr, s->run_text, rid.len) != 0)
        return fold_fail(s, seq, "event of another run");
    if (seq != s->next_seq)
        return fold_fail(s, seq, "seq out of order");
    if (s->terminal)
        return fold_fail(s, seq, "event after the terminal one");

    int rv = TR_OK;
    uint8_t type = J(Event_data_type)(e);
    switch (type) {
    case J(Data_RunCreated):
        if (s->created)
            return fold_fail(s, seq, "run.created twice");
        fold_created(s, e, J(Event_data_as_RunCreated)(e));
        break;
    case J(Data_LlmRequested):
        rv = fold_llm_requested(s, seq, J(Event_data_as_LlmRequested)(e));
        break;
    case J(Data_LlmCompleted):
        rv = fold_llm_completed(s, seq, J(Event_data_as_LlmCompleted)(e));
        break;
    case J(Data_ToolRequested): {
        const struct J(ToolRequested) *d = J(Event_data_as_ToolRequested)(e);
        struct tr_run_call *c = find_call(s, J(ToolRequested_step)(d), J(ToolRequested_call_index)(d));

        if (!c || c->req_seq)
            return fold_fail(s, seq, "tool.requested of no call");
        c->req_seq = seq;
        c->req_time_us = J(Event_time_us)(e);
        c->risk = (uint8_t)J(ToolRequested_risk)(d);
        call_signature(c->name, c->args, c->sig);
        sig_bump(s, c->sig);
        break;
    }
    case J(Data_ToolStarted): {
        const struct J(ToolStarted) *d = J(Event_data_as_ToolStarted)(e);
        struct tr_run_call *c = find_call(s, J(ToolStarted_step)(d), J(ToolStarted_call_index)(d));

        if (!c || !c->req_seq || c->done_seq)
            return fold_fail(s, seq, "tool.started of no open call");
        c->start_seq = seq;
        c->version = J(ToolStarted_version)(d);
        break;
    }
    case J(Data_ToolCompleted):
        rv = fold_tool_completed(s, seq, J(Event_data_as_ToolCompleted)(e));
        break;
    case J(Data_ApprovalRequested): {
        const struct J(ApprovalRequested) *d = J(Event_data_as_ApprovalRequested)(e);
        struct tr_run_call *c = find_call(s, J(ApprovalRequested_step)(d), J(ApprovalRequested_call_index)(d));

        if (!c || !c->req_seq || c->approval_id)
            return fold_fail(s, seq, "approval.requested of no call");
        c->approval_id = dup_str(J(ApprovalRequested_approval_id)(d));
        c->apr_seq = seq;
        c->apr_expires_us = J(ApprovalRequested_expires_at_us)(d);
        break;
    }
    case J(Data_ApprovalDecided): {
        const struct J(ApprovalDecided) *d = J(Event_data_as_ApprovalDecided)(e);
        struct tr_fb_str id = J(ApprovalDecided_approval_id)(d);
        struct tr_run_step *st = tr_run_last_step(s);

        /* A decision for an approval we do not know is the FSM's business. */
        for (uint32_t i = 0; st && i < st->n_calls; i++) {
            struct tr_run_call *c = &st->calls[i];
            if (c->approval_id && !c->apr_decided && strcmp(c->approval_id, id.ptr) == 0) {
                c->apr_decided = true;
                c->decision = (uint8_t)J(ApprovalDecided_decision)(d);
                c->decision_reason = dup_str(J(ApprovalDecided_reason)(d));
            }
        }
        break;
    }
    case J(Data_RunSucceeded):
    case J(Data_RunFailed):
    case J(Data_RunCancelled):
        rv = fold_terminal(s, seq, type);
        break;
    case J(Data_BudgetExceeded): {
        const struct J(BudgetExceeded) *d = J(Event_data_as_BudgetExceeded)(e);
        const char *cap = J(Cap_name)(J(BudgetExceeded_cap)(d));

        s->budget_exceeded = true;
        s->cap = (uint8_t)J(BudgetExceeded_cap)(d);
        snprintf(s->budget_detail, sizeof s->budget_detail, "%s cap reached: used %.6g of %.6g",
                 cap ? cap : "a", J(BudgetExceeded_used)(d), J(BudgetExceeded_limit)(d));
        break;
    }
    case J(Data_LoopDetected): {
        const struct J(LoopDetected) *d = J(Event_data_as_LoopDetected)(e);
        uint32_t step = J(LoopDetected_step)(d);

        if (step == 0 || step > s->n_steps)
            return fold_fail(s, seq, "loop.detected of no step");
        struct tr_run_step *st = &s->steps[step - 1];
        st->loops++;
        st->loop_seq = seq;
        set_str(&st->loop_detail, J(LoopDetected_detail)(d));
        s->loops_detected++;
        break;
    }
    default: /* run.assigned (epoch taken below), memory.written, newer types */
        break;
    }
    if (rv != TR_OK)
        return rv;
    if (J(Event_epoch)(e) > s->epoch)
        s->epoch = J(Event_epoch)(e);
    s->next_seq = seq + 1;
    return TR_OK;
}
