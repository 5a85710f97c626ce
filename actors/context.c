/* Context assembly: the prompt of the next llm call, from the folded run,
 * within a token budget.
 *
 * Kept whole, always: the system message (the agent's system prompt plus how
 * to use the tools), the goal (the first user message) and the tool
 * definitions. Then the steps, oldest first, each as one block: the
 * assistant message with its tool calls, one "tool" message per call, and
 * a correction note when a loop was detected at that step. A block is never
 * split (a tool_calls message without its tool messages is refused by
 * providers). Over budget, the oldest blocks are replaced by one summary
 * message naming the tools they called; the newest block always stays (its
 * tool results cut shorter when even it does not fit). Tool results over
 * TR_RUN_PROMPT_RESULT_MAX bytes are cut, with a marker naming the full size
 * and the blob digest.
 *
 * Tokens are estimated as ceil(bytes / 4) of the compact JSON of each part.
 */
#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "actors/run.h"

#define DEFAULT_BUDGET 8192
#define SHRUNK_RESULT_MAX 256

static const char tool_note[] =
    "Use the tools offered when they help. When you are done, call finish with your final "
    "answer (a reply without tool calls also ends the run, with that reply as the answer).";

static uint32_t json_tokens(const json_t *j)
{
    char *t = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
    uint32_t n = t ? tr_context_tokens(strlen(t)) : 0;

    free(t); /* jansson's allocator */
    return n;
}

/* A JSON string; text that is not UTF-8 is replaced, never dropped. */
static json_t *jstr(const char *s)
{
    json_t *v = json_string(s ? s : "");
    return v ? v : json_string("(text that is not valid UTF-8)");
}

static json_t *message(const char *role, const char *content)
{
    json_t *m = json_object();

    json_object_set_new(m, "role", json_string(role));
    json_object_set_new(m, "content", jstr(content));
    return m;
}

/* Length of the longest prefix of s[0..n) not longer than max that does not
 * split a UTF-8 sequence. */
static size_t utf8_cut(const char *s, size_t n, size_t max)
{
    if (n <= max)
        return n;
    while (max > 0 && ((unsigned char)s[max] & 0xC0) == 0x80)
        max--;
    return max;
}

/* The text of a tool result as the model sees it. */
static json_t *result_text(const struct tr_run_call *c, const struct tr_run_env *env, size_t cap,
                           uint32_t *truncated)
{
    const char *text = c->is_error ? c->error : c->result;
    void *blob = NULL;
    size_t n, total;
    char *buf;
    json_t *out;

    if (!c->is_error && !text && c->has_digest && env && env->blob_get) {
        size_t blen = 0;
        if (env->blob_get(env->blob_ud, c->result_digest, &blob, &blen) == 0) {
            buf = tr_malloc(blen + 1);
            memcpy(buf, blob, blen);
            buf[blen] = '\0';
            tr_free(blob);
            blob = buf;
            text = buf;
        }
    }
    if (!text)
        text = "";
    n = strlen(text);
    total = (!c->is_error && c->result_size > n) ? c->result_size : n;
    if (total <= cap && n <= cap) {
        out = c->is_error ? json_sprintf("error: %s", text) : json_string(text);
    } else {
        char hex[2 * TR_RUN_DIGEST + 1] = "";
        size_t keep = utf8_cut(text, n, cap);

        if (c->has_digest)
            tr_run_hex(c->result_digest, TR_RUN_DIGEST, hex);
        out = json_sprintf("%s%.*s\n[truncated: showing %zu of %zu bytes%s%s]", c->is_error ? "error: " : "",
                           (int)keep, text, keep, total, hex[0] ? "; full result in blob " : "", hex);
        (*truncated)++;
    }
    if (!out) /* not valid UTF-8: show it escaped rather than drop it */
        out = json_string("(the result is not valid UTF-8 text)");
    tr_free(blob);
    return out;
}

/* The messages of one step. */
static json_t *step_block(const struct tr_run_step *st, const struct tr_run_env *env, size_t cap,
                          uint32_t *truncated)
{
    json_t *block = json_array();
    json_t *am = json_object();

    json_object_set_new(am, "role", json_string("assistant"));
    json_object_set_new(am, "content", st->content ? jstr(st->content) : json_null());
    if (st->n_calls) {
        json_t *calls = json_array();
        for (uint32_t i = 0; i < st->n_calls; i++) {
            const struct tr_run_call *c = &st->calls[i];
            json_t *fn = json_object(), *tc = json_object();

            json_object_set_new(fn, "name", jstr(c->name));
            json_object_set_new(fn, "arguments", jstr(c->args));
            json_object_set_new(tc, "id", jstr(c->call_id));
            json_object_set_new(tc, "type", json_string("function"));
            json_object_set_new(tc, "function", fn);
            json_array_append_new(calls, tc);
        }
        json_object_set_new(am, "tool_calls", calls);
    }
    json_array_append_new(block, am);
    for (uint32_t i = 0; i < st->n_calls; i++) {
        const struct tr_run_call *c = &st->calls[i];
        json_t *tm = json_object();

        json_object_set_new(tm, "role", json_string("tool"));
        json_object_set_new(tm, "tool_call_id", jstr(c->call_id));
        json_object_set_new(tm, "content", result_text(c, env, cap, truncated));
        json_array_append_new(block, tm);
    }
    if (st->loops && st->loop_detail)
        json_array_append_new(block, message("system", st->loop_detail));
    return block;
}

/* "Earlier steps (1-7) called: search x3, fetch x2; results omitted." */
static json_t *summary(const struct tr_run_state *s, uint32_t dropped)
{
    const char *names[64];
    uint32_t counts[64], n = 0, other = 0;
    char buf[1024];
    size_t at;

    for (uint32_t i = 0; i < dropped; i++) {
        const struct tr_run_step *st = &s->steps[i];
        for (uint32_t j = 0; j < st->n_calls; j++) {
            const char *name = st->calls[j].name ? st->calls[j].name : "?";
            uint32_t k = 0;
            while (k < n && strcmp(names[k], name) != 0)
                k++;
            if (k == n) {
                if (n == 64) {
                    other++;
                    continue;
                }
                names[n] = name;
                counts[n++] = 0;
            }
            counts[k]++;
        }
    }
    if (dropped == 1)
        at = (size_t)snprintf(buf, sizeof buf, "Earlier step (1) called: ");
    else
        at = (size_t)snprintf(buf, sizeof buf, "Earlier steps (1-%u) called: ", dropped);
    if (n == 0)
        at += (size_t)snprintf(buf + at, sizeof buf - at, "no tools");
    for (uint32_t k = 0; k < n && at < sizeof buf - 64; k++)
        at += (size_t)snprintf(buf + at, sizeof buf - at, "%s%.60s x%u", k ? ", " : "", names[k], counts[k]);
    if (other && at < sizeof buf - 32)
        at += (size_t)snprintf(buf + at, sizeof buf - at, ", %u more", other);
    if (at < sizeof buf - 32)
        snprintf(buf + at, sizeof buf - at, "; results omitted.");
    return message("system", buf);
}

json_t *tr_context_messages(const struct tr_run_state *s, uint32_t upto, const json_t *tools, uint32_t budget,
                            const struct tr_run_env *env, struct tr_context_stats *st)
{
    json_t *msgs = json_array();
    json_t **blocks;
    uint32_t *cost, fixed, total, dropped = 0, truncated = 0;
    char *sys;

    if (!budget)
        budget = DEFAULT_BUDGET;
    if (upto > s->n_steps)
        upto = s->n_steps;
    sys = tr_malloc(strlen(s->system ? s->system : "") + sizeof tool_note + 4);
    sprintf(sys, "%s%s%s", s->system ? s->system : "", s->system && s->system[0] ? "\n\n" : "", tool_note);
    json_array_append_new(msgs, message("system", sys));
    tr_free(sys);
    json_array_append_new(msgs, message("user", s->goal));
    fixed = json_tokens(msgs) + (tools ? json_tokens(tools) : 0);

    blocks = tr_calloc(upto ? upto : 1, sizeof *blocks);
    cost = tr_calloc(upto ? upto : 1, sizeof *cost);
    total = fixed;
    for (uint32_t i = 0; i < upto; i++) {
        blocks[i] = step_block(&s->steps[i], env, TR_RUN_PROMPT_RESULT_MAX, &truncated);
        cost[i] = json_tokens(blocks[i]);
        total += cost[i];
    }
    if (total > budget && upto > 1) {
        /* Drop the fewest oldest blocks that bring the prompt within budget. */
        uint32_t rest = total - fixed;
        for (dropped = 1; dropped < upto; dropped++) {
            json_t *sm = summary(s, dropped);
            rest -= cost[dropped - 1];
            uint32_t t = fixed + json_tokens(sm) + rest;
            json_decref(sm);
            if (t <= budget)
                break;
        }
        if (dropped == upto)
            dropped = upto - 1;
    }
    if (upto && total > budget) {
        /* Does the newest block fit now? If not, cut its results shorter. */
        json_t *sm = dropped ? summary(s, dropped) : NULL;
        uint32_t t = fixed + (sm ? json_tokens(sm) : 0) + cost[upto - 1];
        json_decref(sm);
        for (uint32_t i = dropped; i + 1 < upto; i++)
            t += cost[i];
        if (t > budget) {
            json_decref(blocks[upto - 1]);
            blocks[upto - 1] = step_block(&s->steps[upto - 1], env, SHRUNK_RESULT_MAX, &truncated);
        }
    }
    if (dropped)
        json_array_append_new(msgs, summary(s, dropped));
    for (uint32_t i = 0; i < upto; i++) {
        if (i >= dropped)
            json_array_extend(msgs, blocks[i]);
        json_decref(blocks[i]);
    }
    tr_free(blocks);
    tr_free(cost);
    if (st) {
        st->tokens = json_tokens(msgs) + (tools ? json_tokens(tools) : 0);
        st->dropped_steps = dropped;
        st->truncated = truncated;
        st->messages = (uint32_t)json_array_size(msgs);
    }
    return msgs;
}

char *tr_run_llm_request(const struct tr_run_state *s, const struct tr_run_env *env, uint32_t step, size_t *len,
                         unsigned char digest[TR_RUN_DIGEST], struct tr_context_stats *st)
{
    json_t *tools = tr_run_tool_defs(s, env);
    json_t *msgs = tr_context_messages(s, step ? step - 1 : 0, tools, env->context_tokens, env, st);
    json_t *body = json_object();
    char *text, *out;

    json_object_set_new(body, "model", jstr(s->model));
    json_object_set_new(body, "messages", msgs);
    if (json_array_size(tools))
        json_object_set(body, "tools", tools);
    json_object_set_new(body, "temperature", json_real(s->temperature));
    json_object_set_new(body, "tenant", jstr(s->tenant));
    json_object_set_new(body, "run_id", json_string(s->run_text));
    json_object_set_new(body, "step", json_integer(step));
    text = json_dumps(body, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(body);
    json_decref(tools);
    if (!text) {
        tr_log(TR_LOG_ERROR, "run %s: the prompt does not encode as JSON", s->run_text);
        abort();
    }
    *len = strlen(text);
    out = tr_memdup(text, *len + 1);
    free(text);
    crypto_generichash(digest, TR_RUN_DIGEST, (const unsigned char *)out, *len, NULL, 0);
    return out;
}
