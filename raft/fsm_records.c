/* Codec of the FSM's run records (troupe.state.Run) and agent configs. */
#include <stdio.h>
#include <string.h>

#include "raft/fsm.h"
#include "schemas/journal_generated.h"
#include "schemas/state_generated.h"

static char *dup_str(struct tr_fb_str s)
{
    return s.ptr != NULL ? tr_strndup(s.ptr, s.len) : NULL;
}

static tr_fb_ref make_str(struct tr_fb_builder *b, const char *s)
{
    return s != NULL ? tr_fb_create_str(b, s) : 0;
}

void tr_run_key(uint64_t id, unsigned char out[8])
{
    for (int i = 7; i >= 0; i--) {
        out[i] = (unsigned char)(id & 0xff);
        id >>= 8;
    }
}

void tr_run_id_text(uint64_t id, char out[TR_RUN_ID_TEXT_LEN])
{
    /* On the append path for every event: no printf. */
    static const char hex[] = "0123456789abcdef";
    memcpy(out, "run_", 4);
    for (int i = 0; i < 16; i++)
        out[4 + i] = hex[(id >> (60 - 4 * i)) & 0xf];
    out[20] = '\0';
}

int tr_run_id_from_text(const char *s, size_t len, uint64_t *out)
{
    uint64_t v = 0;
    if (s == NULL || len != 20 || memcmp(s, "run_", 4) != 0)
        return TR_EINVAL;
    for (size_t i = 4; i < len; i++) {
        char c = s[i];
        unsigned d;
        if (c >= '0' && c <= '9')
            d = (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            d = (unsigned)(c - 'a' + 10);
        else
            return TR_EINVAL;
        v = (v << 4) | d;
    }
    if (v == 0)
        return TR_EINVAL;
    *out = v;
    return TR_OK;
}

bool tr_run_status_terminal(int8_t status)
{
    return status == troupe_journal_RunStatus_Succeeded || status == troupe_journal_RunStatus_Failed ||
           status == troupe_journal_RunStatus_Cancelled;
}

/* ---- agent config ------------------------------------------------------------ */

void tr_agent_rec_from(struct agent_rec *a, const struct troupe_journal_AgentConfig *cfg)
{
    memset(a, 0, sizeof *a);
    if (cfg == NULL) {
        a->max_steps = 50;
        a->temperature = 1.0f;
        return;
    }
    a->present = true;
    a->model = dup_str(troupe_journal_AgentConfig_model(cfg));
    a->system = dup_str(troupe_journal_AgentConfig_system(cfg));
    a->provider = dup_str(troupe_journal_AgentConfig_provider(cfg));
    a->n_tools = troupe_journal_AgentConfig_tools_len(cfg);
    if (a->n_tools > 0) {
        a->tools = tr_calloc(a->n_tools, sizeof *a->tools);
        for (uint32_t i = 0; i < a->n_tools; i++)
            a->tools[i] = dup_str(troupe_journal_AgentConfig_tools_at(cfg, i));
    }
    a->max_steps = troupe_journal_AgentConfig_max_steps(cfg);
    a->max_tokens = troupe_journal_AgentConfig_max_tokens(cfg);
    a->max_cost_usd = troupe_journal_AgentConfig_max_cost_usd(cfg);
    a->timeout_s = troupe_journal_AgentConfig_timeout_s(cfg);
    a->temperature = troupe_journal_AgentConfig_temperature(cfg);
}

tr_fb_ref tr_agent_rec_build(struct tr_fb_builder *b, const struct agent_rec *a)
{
    if (!a->present)
        return 0;
    tr_fb_ref model = make_str(b, a->model);
    tr_fb_ref system = make_str(b, a->system);
    tr_fb_ref provider = make_str(b, a->provider);
    tr_fb_ref tools = 0;
    if (a->n_tools > 0) {
        tr_fb_ref *refs = tr_malloc(a->n_tools * sizeof *refs);
        for (uint32_t i = 0; i < a->n_tools; i++)
            refs[i] = tr_fb_create_str(b, a->tools[i] != NULL ? a->tools[i] : "");
        tools = troupe_journal_AgentConfig_create_tools(b, refs, a->n_tools);
        tr_free(refs);
    }
    troupe_journal_AgentConfig_start(b);
    troupe_journal_AgentConfig_add_model(b, model);
    troupe_journal_AgentConfig_add_system(b, system);
    troupe_journal_AgentConfig_add_tools(b, tools);
    troupe_journal_AgentConfig_add_max_steps(b, a->max_steps);
    troupe_journal_AgentConfig_add_max_tokens(b, a->max_tokens);
    troupe_journal_AgentConfig_add_max_cost_usd(b, a->max_cost_usd);
    troupe_journal_AgentConfig_add_timeout_s(b, a->timeout_s);
    troupe_journal_AgentConfig_add_temperature(b, a->temperature);
    troupe_journal_AgentConfig_add_provider(b, provider);
    return troupe_journal_AgentConfig_end(b);
}

void tr_agent_rec_free(struct agent_rec *a)
{
    tr_free(a->model);
    tr_free(a->system);
    tr_free(a->provider);
    for (uint32_t i = 0; i < a->n_tools; i++)
        tr_free(a->tools[i]);
    tr_free(a->tools);
    memset(a, 0, sizeof *a);
}

/* ---- run records ------------------------------------------------------------- */

int tr_run_rec_decode(const void *buf, size_t len, struct run_rec *out)
{
    struct tr_fb_error ferr;
    const struct troupe_state_Run *r = troupe_state_Run_verify_as_root(buf, len, &ferr);
    memset(out, 0, sizeof *out);
    if (r == NULL)
        return TR_ECORRUPT;
    out->run_id = dup_str(troupe_state_Run_run_id(r));
    if (tr_run_id_from_text(out->run_id, strlen(out->run_id), &out->key) != TR_OK) {
        tr_run_rec_free(out);
        return TR_ECORRUPT;
    }
    out->tenant = dup_str(troupe_state_Run_tenant(r));
    out->goal = dup_str(troupe_state_Run_goal(r));
    out->metadata = dup_str(troupe_state_Run_metadata(r));
    out->idempotency_key = dup_str(troupe_state_Run_idempotency_key(r));
    out->created_by = dup_str(troupe_state_Run_created_by(r));
    out->output = dup_str(troupe_state_Run_output(r));
    out->error = dup_str(troupe_state_Run_error(r));
    out->error_code = dup_str(troupe_state_Run_error_code(r));
    out->pending_approval = dup_str(troupe_state_Run_pending_approval(r));
    tr_agent_rec_from(&out->agent, troupe_state_Run_agent(r));
    out->status = troupe_state_Run_status(r);
    out->owner_node = troupe_state_Run_owner_node(r);
    out->epoch = troupe_state_Run_epoch(r);
    out->next_seq = troupe_state_Run_next_seq(r);
    out->last_writer = troupe_state_Run_last_writer(r);
    out->step = troupe_state_Run_step(r);
    const struct troupe_journal_Usage *u = troupe_state_Run_usage(r);
    if (u != NULL) {
        out->prompt_tokens = troupe_journal_Usage_prompt_tokens(u);
        out->completion_tokens = troupe_journal_Usage_completion_tokens(u);
        out->cost_micro_usd = troupe_journal_Usage_cost_micro_usd(u);
    }
    out->created_at_us = troupe_state_Run_created_at_us(r);
    out->updated_at_us = troupe_state_Run_updated_at_us(r);
    out->cancel_requested = troupe_state_Run_cancel_requested(r);
    return TR_OK;
}

void tr_run_rec_encode(const struct run_rec *r, struct tr_fb_builder *b)
{
    tr_fb_builder_reset(b);
    tr_fb_ref run_id = make_str(b, r->run_id);
    tr_fb_ref tenant = make_str(b, r->tenant != NULL ? r->tenant : "");
    tr_fb_ref goal = make_str(b, r->goal);
    tr_fb_ref metadata = make_str(b, r->metadata);
    tr_fb_ref idem = make_str(b, r->idempotency_key);
    tr_fb_ref created_by = make_str(b, r->created_by);
    tr_fb_ref output = make_str(b, r->output);
    tr_fb_ref error = make_str(b, r->error);
    tr_fb_ref error_code = make_str(b, r->error_code);
    tr_fb_ref pending = make_str(b, r->pending_approval);
    tr_fb_ref agent = tr_agent_rec_build(b, &r->agent);
    troupe_journal_Usage_start(b);
    troupe_journal_Usage_add_prompt_tokens(b, r->prompt_tokens);
    troupe_journal_Usage_add_completion_tokens(b, r->completion_tokens);
    troupe_journal_Usage_add_cost_micro_usd(b, r->cost_micro_usd);
    tr_fb_ref usage = troupe_journal_Usage_end(b);

    troupe_state_Run_start(b);
    troupe_state_Run_add_run_id(b, run_id);
    troupe_state_Run_add_tenant(b, tenant);
    troupe_state_Run_add_status(b, r->status);
    troupe_state_Run_add_goal(b, goal);
    troupe_state_Run_add_agent(b, agent);
    troupe_state_Run_add_metadata(b, metadata);
    troupe_state_Run_add_idempotency_key(b, idem);
    troupe_state_Run_add_created_by(b, created_by);
    troupe_state_Run_add_owner_node(b, r->owner_node);
    troupe_state_Run_add_epoch(b, r->epoch);
    troupe_state_Run_add_next_seq(b, r->next_seq);
    troupe_state_Run_add_last_writer(b, r->last_writer);
    troupe_state_Run_add_step(b, r->step);
    troupe_state_Run_add_usage(b, usage);
    troupe_state_Run_add_created_at_us(b, r->created_at_us);
    troupe_state_Run_add_updated_at_us(b, r->updated_at_us);
    troupe_state_Run_add_output(b, output);
    troupe_state_Run_add_error(b, error);
    troupe_state_Run_add_error_code(b, error_code);
    troupe_state_Run_add_pending_approval(b, pending);
    troupe_state_Run_add_cancel_requested(b, r->cancel_requested);
    troupe_state_Run_finish(b, troupe_state_Run_end(b));
}

void tr_run_rec_free(struct run_rec *r)
{
    tr_free(r->run_id);
    tr_free(r->tenant);
    tr_free(r->goal);
    tr_free(r->metadata);
    tr_free(r->idempotency_key);
    tr_free(r->created_by);
    tr_free(r->output);
    tr_free(r->error);
    tr_free(r->error_code);
    tr_free(r->pending_approval);
    tr_agent_rec_free(&r->agent);
    memset(r, 0, sizeof *r);
}
