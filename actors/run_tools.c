/* Tools as the run sees them: builtins, validation of a call against the
 * registry and its JSON Schema, the tool definitions offered to the model,
 * idempotency keys, and parsing of llm/tool replies. Pure functions of
 * their inputs (the registry comes through env->tool_lookup). */
#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "actors/run.h"
#include "schemas/command_generated.h"
#include "schemas/journal_generated.h"

static const struct {
    const char *name;
    int id;
    const char *description;
    const char *schema;
} builtins[] = {
    { "finish", TR_RUN_BUILTIN_FINISH,
      "Finish the run and give the final answer to the user.",
      "{\"type\":\"object\",\"properties\":{\"answer\":{\"type\":\"string\",\"description\":"
      "\"The final answer.\"}},\"required\":[\"answer\"]}" },
    { "scratchpad_write", TR_RUN_BUILTIN_SCRATCH_WRITE,
      "Remember a value under a key for the rest of this run (overwrites).",
      "{\"type\":\"object\",\"properties\":{\"key\":{\"type\":\"string\"},\"value\":{\"type\":"
      "\"string\"}},\"required\":[\"key\",\"value\"]}" },
    { "scratchpad_read", TR_RUN_BUILTIN_SCRATCH_READ,
      "Read a value written earlier in this run with scratchpad_write.",
      "{\"type\":\"object\",\"properties\":{\"key\":{\"type\":\"string\"}},\"required\":[\"key\"]}" },
    { "current_time", TR_RUN_BUILTIN_TIME, "The current date and time (UTC).",
      "{\"type\":\"object\",\"properties\":{}}" },
};

int tr_run_builtin(const char *name)
{
    if (!name)
        return TR_RUN_BUILTIN_NONE;
    for (size_t i = 0; i < sizeof builtins / sizeof builtins[0]; i++)
        if (strcmp(builtins[i].name, name) == 0)
            return builtins[i].id;
    return TR_RUN_BUILTIN_NONE;
}

void tr_run_hex(const unsigned char *p, size_t n, char *out)
{
    static const char hex[] = "0123456789abcdef";

    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[p[i] >> 4];
        out[2 * i + 1] = hex[p[i] & 15];
    }
    out[2 * n] = '\0';
}

static void put_be64(unsigned char *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (unsigned char)v;
}

static void keyed_hash(const char *tag, const char *run_text, uint32_t step, uint32_t idx,
                       unsigned char out[TR_RUN_DIGEST])
{
    crypto_generichash_state h;
    unsigned char zero = 0, be[16];

    put_be64(be, step);
    put_be64(be + 8, idx);
    crypto_generichash_init(&h, NULL, 0, TR_RUN_DIGEST);
    if (tag)
        crypto_generichash_update(&h, (const unsigned char *)tag, strlen(tag) + 1);
    crypto_generichash_update(&h, (const unsigned char *)run_text, strlen(run_text));
    crypto_generichash_update(&h, &zero, 1);
    crypto_generichash_update(&h, be, sizeof be);
    crypto_generichash_final(&h, out, TR_RUN_DIGEST);
}

void tr_run_idem_key(const char *run_text, uint32_t step, uint32_t call_index, unsigned char out[TR_RUN_DIGEST])
{
    keyed_hash(NULL, run_text, step, call_index, out);
}

void tr_run_approval_id(const char *run_text, uint32_t step, uint32_t call_index, char out[TR_RUN_APPROVAL_ID])
{
    unsigned char d[TR_RUN_DIGEST];

    keyed_hash("approval", run_text, step, call_index, d);
    memcpy(out, "apr_", 4);
    tr_run_hex(d, 16, out + 4);
}

static bool agent_allows(const struct tr_run_state *s, const char *name)
{
    for (uint32_t i = 0; i < s->n_tools; i++)
        if (s->tools[i] && strcmp(s->tools[i], name) == 0)
            return true;
    return false;
}

/* Arguments as a JSON object; "" counts as {} (models send it for tools
 * without parameters). NULL and a message in buf when they are not. */
static json_t *parse_args(const char *args, char *buf, size_t cap)
{
    json_error_t jerr;
    json_t *v;

    if (!args || !args[0])
        return json_object();
    v = json_loads(args, JSON_DECODE_ANY, &jerr);
    if (!v) {
        snprintf(buf, cap, "arguments are not valid JSON: %s (at byte %d)", jerr.text, jerr.position);
        return NULL;
    }
    if (!json_is_object(v)) {
        snprintf(buf, cap, "arguments must be a JSON object");
        json_decref(v);
        return NULL;
    }
    return v;
}

static const char *validate_builtin(const struct tr_run_state *s, int id, json_t *a, char *buf, size_t cap)
{
    const char *key = json_string_value(json_object_get(a, "key"));
    const char *value = json_string_value(json_object_get(a, "value"));

    switch (id) {
    case TR_RUN_BUILTIN_FINISH:
        if (!json_is_string(json_object_get(a, "answer")) && !json_is_string(json_object_get(a, "output")))
            return "finish needs a string \"answer\"";
        return NULL;
    case TR_RUN_BUILTIN_SCRATCH_WRITE:
        if (!key || !value)
            return "scratchpad_write needs string \"key\" and \"value\"";
        if (!key[0] || strlen(key) > TR_RUN_SCRATCH_KEY_MAX)
            return "scratchpad key must be 1 to 256 bytes";
        if (strlen(value) > TR_RUN_SCRATCH_VALUE_MAX)
            return "scratchpad value over 16 KiB";
        if (!tr_run_scratch_get(s, key) && s->n_scratch >= TR_RUN_SCRATCH_KEYS) {
            snprintf(buf, cap, "the scratchpad is full (%d keys)", TR_RUN_SCRATCH_KEYS);
            return buf;
        }
        return NULL;
    case TR_RUN_BUILTIN_SCRATCH_READ:
        return key ? NULL : "scratchpad_read needs a string \"key\"";
    default:
        return NULL;
    }
}

const char *tr_run_validate_call(const struct tr_run_state *s, const struct tr_run_env *env,
                                 const struct tr_run_call *c, const struct tr_run_tool **tool,
                                 char *buf, size_t cap)
{
    int b = tr_run_builtin(c->name);
    const char *why = NULL;
    json_t *a;

    *tool = NULL;
    if (!c->name || !c->name[0])
        return "the call names no tool";
    if (!b) {
        const struct tr_run_tool *t = NULL;

        if (agent_allows(s, c->name) && env->tool_lookup)
            t = env->tool_lookup(env->tool_ud, c->name, c->start_seq ? c->version : 0);
        if (!t || t->kind == troupe_cmd_ToolKind_Builtin) {
            snprintf(buf, cap, "unknown tool \"%.*s\": use one of the tools offered", tr_run_utf8_shown(c->name, 100),
                     c->name);
            return buf;
        }
        if (!t->enabled) {
            snprintf(buf, cap, "tool \"%.*s\" is disabled by an operator", tr_run_utf8_shown(c->name, 100), c->name);
            return buf;
        }
        if (t->input_schema && !t->schema) {
            const char *why_not = t->schema_error ? t->schema_error : "does not compile";
            snprintf(buf, cap, "tool \"%.*s\" has an unusable schema: %.*s", tr_run_utf8_shown(c->name, 100), c->name,
                     tr_run_utf8_shown(why_not, 200), why_not);
            return buf;
        }
        *tool = t;
    }
    if (!(a = parse_args(c->args, buf, cap)))
        return buf;
    if (b) {
        why = validate_builtin(s, b, a, buf, cap);
    } else if ((*tool)->schema) {
        struct tr_schema_errors errs;

        if (tr_schema_validate((*tool)->schema, a, &errs) != 0) {
            int n = snprintf(buf, cap, "arguments do not match the schema of \"%.*s\":\n",
                             tr_run_utf8_shown(c->name, 100), c->name);
            if (n > 0 && (size_t)n < cap)
                tr_schema_errors_format(&errs, buf + n, cap - (size_t)n);
            why = buf;
        }
    }
    json_decref(a);
    if (why)
        *tool = NULL;
    return why;
}

static json_t *function_def(const char *name, const char *description, const char *schema)
{
    json_t *params = schema ? json_loads(schema, 0, NULL) : NULL;
    json_t *fn = json_object();
    json_t *def = json_object();

    if (!json_is_object(params)) {
        json_decref(params);
        params = json_pack("{s:s}", "type", "object");
    }
    json_object_set_new(fn, "name", json_string(name));
    if (description)
        json_object_set_new(fn, "description", json_string(description));
    json_object_set_new(fn, "parameters", params);
    json_object_set_new(def, "type", json_string("function"));
    json_object_set_new(def, "function", fn);
    return def;
}

/* The registry entry of the i-th tool of the agent that is offered to the
 * model, or NULL (a builtin, a duplicate, unknown or disabled). */
static const struct tr_run_tool *offered(const struct tr_run_state *s, const struct tr_run_env *env, uint32_t i)
{
    const char *name = s->tools[i];
    const struct tr_run_tool *t;

    if (!name || tr_run_builtin(name) || !env->tool_lookup)
        return NULL;
    for (uint32_t j = 0; j < i; j++)
        if (s->tools[j] && strcmp(s->tools[j], name) == 0)
            return NULL;
    t = env->tool_lookup(env->tool_ud, name, 0);
    if (!t || !t->enabled || t->kind == troupe_cmd_ToolKind_Builtin)
        return NULL;
    return t;
}

json_t *tr_run_tool_defs(const struct tr_run_state *s, const struct tr_run_env *env)
{
    json_t *defs = json_array();

    for (uint32_t i = 0; i < s->n_tools; i++) {
        const struct tr_run_tool *t = offered(s, env, i);
        if (t)
            json_array_append_new(defs, function_def(t->name, t->description, t->input_schema));
    }
    for (size_t i = 0; i < sizeof builtins / sizeof builtins[0]; i++)
        json_array_append_new(defs, function_def(builtins[i].name, builtins[i].description, builtins[i].schema));
    return defs;
}

static uint64_t fnv(uint64_t h, const char *p)
{
    if (!p)
        return (h ^ 0x100) * 0x100000001b3ull;
    for (; *p; p++)
        h = (h ^ (unsigned char)*p) * 0x100000001b3ull;
    return (h ^ 0x1ff) * 0x100000001b3ull; /* end of string, never a byte */
}

uint64_t tr_run_tool_defs_key(const struct tr_run_state *s, const struct tr_run_env *env)
{
    uint64_t h = 0xcbf29ce484222325ull;

    for (uint32_t i = 0; i < s->n_tools; i++) {
        const struct tr_run_tool *t = offered(s, env, i);
        if (t) {
            h = fnv(h, t->name);
            h = fnv(h, t->description);
            h = fnv(h, t->input_schema);
        }
    }
    return h | 1;
}

/* ---- replies -------------------------------------------------------------- */

void tr_run_llm_result_free(struct tr_run_llm_result *r)
{
    if (!r)
        return;
    tr_free(r->content);
    for (uint32_t i = 0; i < r->n_calls; i++) {
        tr_free(r->calls[i].id);
        tr_free(r->calls[i].name);
        tr_free(r->calls[i].arguments);
    }
    tr_free(r->model);
    tr_free(r->request_id);
    tr_free(r->error_code);
    tr_free(r->error_message);
    memset(r, 0, sizeof *r);
}

void tr_run_tool_result_free(struct tr_run_tool_result *r)
{
    if (!r)
        return;
    tr_free(r->result);
    tr_free(r->error);
    memset(r, 0, sizeof *r);
}

/* ---- replies waiting for their events (run.h invariant 7) ----------------- */

static void llm_drop(struct tr_run_llm_result **r)
{
    if (*r) {
        tr_run_llm_result_free(*r);
        tr_free(*r);
        *r = NULL;
    }
}

static void tool_drop(struct tr_run_tool_result **r)
{
    if (*r) {
        tr_run_tool_result_free(*r);
        tr_free(*r);
        *r = NULL;
    }
}

static void hold(struct tr_run_vol *v, uint32_t step, uint32_t idx, struct tr_run_llm_result *llm,
                 struct tr_run_tool_result *tool)
{
    for (uint32_t i = 0; i < v->n_held; i++) {
        struct tr_run_vol_held *h = &v->held[i];
        if (h->step == step && h->call_index == idx) { /* the first reply wins */
            llm_drop(&llm);
            tool_drop(&tool);
            return;
        }
    }
    if (v->n_held == v->cap_held) {
        v->cap_held = v->cap_held ? 2 * v->cap_held : 8;
        v->held = tr_realloc(v->held, v->cap_held * sizeof *v->held);
    }
    v->held[v->n_held++] = (struct tr_run_vol_held){ .step = step, .call_index = idx, .llm = llm, .tool = tool };
}

static void unhold(struct tr_run_vol *v, uint32_t i)
{
    v->held[i] = v->held[--v->n_held];
}

void tr_run_vol_sync(struct tr_run_vol *v, uint32_t step)
{
    if (v->step == step)
        return;
    /* The old step's replies: an llm error is not kept (the retry it asks
     * for is decided again from the fold); everything else was paid for. */
    if (v->llm && v->llm->ok)
        hold(v, v->step, TR_RUN_VOL_LLM, v->llm, NULL);
    else
        llm_drop(&v->llm);
    v->llm = NULL;
    v->retry_at_us = 0;
    for (int i = 0; i < TR_RUN_MAX_CALLS; i++) {
        if (v->calls[i].res)
            hold(v, v->step, (uint32_t)i, NULL, v->calls[i].res);
        memset(&v->calls[i], 0, sizeof v->calls[i]);
    }
    v->step = step;
    for (uint32_t i = 0; i < v->n_held;) {
        struct tr_run_vol_held *h = &v->held[i];
        if (h->step != step) {
            i++;
            continue;
        }
        if (h->call_index == TR_RUN_VOL_LLM && !v->llm)
            v->llm = h->llm;
        else if (h->call_index < TR_RUN_MAX_CALLS && !v->calls[h->call_index].res)
            v->calls[h->call_index].res = h->tool;
        else {
            llm_drop(&h->llm);
            tool_drop(&h->tool);
        }
        unhold(v, i);
    }
}

void tr_run_vol_gc(const struct tr_run_state *s, struct tr_run_vol *v)
{
    for (uint32_t i = 0; i < v->n_held;) {
        struct tr_run_vol_held *h = &v->held[i];
        const struct tr_run_step *st = h->step >= 1 && h->step <= s->n_steps ? &s->steps[h->step - 1] : NULL;
        uint64_t done = 0;

        if (st)
            done = h->call_index == TR_RUN_VOL_LLM ? st->llm_done_seq
                   : h->call_index < st->n_calls   ? st->calls[h->call_index].done_seq
                                                   : 0;
        if (done && done <= v->acked_seq) {
            llm_drop(&h->llm);
            tool_drop(&h->tool);
            unhold(v, i);
        } else {
            i++;
        }
    }
}

bool tr_run_vol_llm_reply(struct tr_run_vol *v, uint32_t step, struct tr_run_llm_result *res)
{
    bool out = v->llm_out == step;

    if (out)
        v->llm_out = 0;
    if (out && step == v->step) {
        llm_drop(&v->llm);
        v->llm = res;
        return true;
    }
    if (out && res->ok && step > v->step) /* a refold went back: keep it for later */
        hold(v, step, TR_RUN_VOL_LLM, res, NULL);
    else
        llm_drop(&res);
    return false;
}

void tr_run_vol_tool_reply(struct tr_run_vol *v, uint32_t step, uint32_t idx, struct tr_run_tool_result *res)
{
    if (idx < TR_RUN_MAX_CALLS && step == v->step && v->calls[idx].inflight && !v->calls[idx].res) {
        v->calls[idx].inflight = false;
        v->calls[idx].res = res;
        return;
    }
    if (idx < TR_RUN_MAX_CALLS && step > v->step) /* a refold went back: keep it for later */
        hold(v, step, idx, NULL, res);
    else
        tool_drop(&res);
}

void tr_run_vol_free(struct tr_run_vol *v)
{
    llm_drop(&v->llm);
    for (int i = 0; i < TR_RUN_MAX_CALLS; i++)
        tool_drop(&v->calls[i].res);
    for (uint32_t i = 0; i < v->n_held; i++) {
        llm_drop(&v->held[i].llm);
        tool_drop(&v->held[i].tool);
    }
    tr_free(v->held);
    tr_free(v->prompt);
    tr_run_vol_forget_prompt(v);
    memset(v, 0, sizeof *v);
}
