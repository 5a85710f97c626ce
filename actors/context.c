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
 *
 * The prompt is built as text, once per llm.requested: the request body the
 * llm actor sends as is. A step's block is encoded once and kept in the
 * run's vol (struct tr_run_vol_block), named by the seqs of the events it
 * comes from; so are the head (model, system message, goal) and the tool
 * definitions (named by the registry entries they come from). The text is
 * the same with the cache as without it.
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
        size_t keep = tr_run_utf8_cut(text, n, cap);

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
    for (uint32_t k = 0; k < n && at < sizeof buf - 64; k++) {
        /* One name that is not UTF-8, or cut inside a character, would
         * make the whole summary unusable (jstr). */
        const char *name = names[k];
        size_t keep = tr_run_utf8_cut(name, strlen(name), 60);
        json_t *probe = json_stringn(name, keep);
        if (!probe) {
            name = "(a name that is not UTF-8)";
            keep = strlen(name);
        }
        json_decref(probe);
        at += (size_t)snprintf(buf + at, sizeof buf - at, "%s%.*s x%u", k ? ", " : "", (int)keep, name, counts[k]);
    }
    if (other && at < sizeof buf - 32)
        at += (size_t)snprintf(buf + at, sizeof buf - at, ", %u more", other);
    if (at < sizeof buf - 32)
        snprintf(buf + at, sizeof buf - at, "; results omitted.");
    return message("system", buf);
}

/* ---- text ------------------------------------------------------------------ */

/* Compact JSON text of j (tr_malloc'd); aborts if it does not encode. */
static char *dump(const json_t *j, size_t *len)
{
    char *t = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
    char *out;

    if (!t) {
        tr_log(TR_LOG_ERROR, "context: a prompt part does not encode as JSON");
        abort();
    }
    *len = strlen(t);
    out = tr_memdup(t, *len + 1);
    free(t); /* jansson's allocator */
    return out;
}

/* The messages of step st without the enclosing brackets (block text). */
static char *block_text(const struct tr_run_step *st, const struct tr_run_env *env, size_t cap,
                        uint32_t *truncated, uint32_t *messages, size_t *len)
{
    json_t *block = step_block(st, env, cap, truncated);
    size_t n;
    char *t = dump(block, &n);

    *messages = (uint32_t)json_array_size(block);
    json_decref(block);
    memmove(t, t + 1, n - 2); /* "[...]" -> "..." */
    t[n - 2] = '\0';
    *len = n - 2;
    return t;
}

static uint64_t mix(uint64_t h, uint64_t x)
{
    h ^= x + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    h ^= h >> 31;
    return h * 0xbf58476d1ce4e5b9ull;
}

/* Names the step's content within one fold of the journal: every part of a
 * block comes from the events at these seqs (llm.completed, tool.completed,
 * loop.detected), and one fold holds one event per seq. */
static uint64_t block_key(const struct tr_run_step *st)
{
    uint64_t h = mix(mix(mix(0, st->n), st->llm_done_seq), st->loop_seq);

    h = mix(mix(h, st->loops), st->n_calls);
    for (uint32_t i = 0; i < st->n_calls; i++) {
        const struct tr_run_call *c = &st->calls[i];
        h = mix(mix(mix(h, c->done_seq), c->result_size), (uint64_t)c->is_error << 1 | c->has_digest);
    }
    return h | 1;
}

/* Block i of s at the full result cap: from v's cache when it holds it. The
 * returned text belongs to v when v is given, else to the caller (*own). It
 * may be NULL when !need_text (the cache keeps only the sizes of blocks
 * that were left out of the prompt). */
static const char *block_get(const struct tr_run_state *s, struct tr_run_vol *v, const struct tr_run_env *env,
                             uint32_t i, bool need_text, uint32_t *truncated, uint32_t *messages, size_t *len,
                             char **own)
{
    const struct tr_run_step *st = &s->steps[i];
    uint64_t key = v ? block_key(st) : 0;
    struct tr_run_vol_block *b;
    char *t;

    *own = NULL;
    if (v && i < v->n_blocks && v->blocks[i].key == key && (v->blocks[i].text || !need_text)) {
        b = &v->blocks[i];
        *truncated = b->truncated;
        *messages = b->messages;
        *len = b->len;
        return b->text;
    }
    t = block_text(st, env, TR_RUN_PROMPT_RESULT_MAX, truncated, messages, len);
    if (!v) {
        *own = t;
        return t;
    }
    if (i >= v->n_blocks) {
        uint32_t n = s->n_steps > i + 1 ? s->n_steps : i + 1;
        v->blocks = tr_realloc(v->blocks, n * sizeof *v->blocks);
        memset(v->blocks + v->n_blocks, 0, (n - v->n_blocks) * sizeof *v->blocks);
        v->n_blocks = n;
    }
    b = &v->blocks[i];
    tr_free(b->text);
    *b = (struct tr_run_vol_block){ .key = key, .text = t, .len = *len, .truncated = *truncated,
                                    .messages = *messages };
    return t;
}

void tr_run_vol_forget_prompt(struct tr_run_vol *v)
{
    for (uint32_t i = 0; i < v->n_blocks; i++)
        tr_free(v->blocks[i].text);
    tr_free(v->blocks);
    v->blocks = NULL;
    v->n_blocks = 0;
    tr_free(v->head);
    v->head = NULL;
    v->head_len = 0;
    tr_free(v->tools);
    v->tools = NULL;
    v->tools_len = 0;
    v->tools_key = 0;
}

/* The start of the body, {"model":M,"messages":[SYSTEM,GOAL, into out;
 * *tokens: of "[SYSTEM,GOAL]". Returns the length of the part before
 * SYSTEM. A function of run.created alone. */
static size_t head_put(const struct tr_run_state *s, struct tr_run_vol *v, struct tr_buf *out, uint32_t *tokens)
{
    struct tr_buf h = { 0 };
    json_t *j;
    size_t n, at;
    char *sys, *t;

    if (v && v->head) {
        tr_buf_add(out, v->head, v->head_len);
        *tokens = v->head_tokens;
        return v->head_len - v->head_msgs_len;
    }
    tr_buf_adds(&h, "{\"model\":");
    j = jstr(s->model);
    t = dump(j, &n);
    json_decref(j);
    tr_buf_add(&h, t, n);
    tr_free(t);
    tr_buf_adds(&h, ",\"messages\":[");
    at = h.len;
    sys = tr_malloc(strlen(s->system ? s->system : "") + sizeof tool_note + 4);
    sprintf(sys, "%s%s%s", s->system ? s->system : "", s->system && s->system[0] ? "\n\n" : "", tool_note);
    j = message("system", sys);
    tr_free(sys);
    t = dump(j, &n);
    json_decref(j);
    tr_buf_add(&h, t, n);
    tr_free(t);
    tr_buf_adds(&h, ",");
    j = message("user", s->goal);
    t = dump(j, &n);
    json_decref(j);
    tr_buf_add(&h, t, n);
    tr_free(t);
    *tokens = tr_context_tokens(h.len - at + 2);
    tr_buf_add(out, h.p, h.len);
    if (v) {
        v->head = h.p;
        v->head_len = h.len;
        v->head_tokens = *tokens;
        v->head_msgs_len = (uint32_t)(h.len - at);
    } else {
        tr_free(h.p);
    }
    return at;
}

static uint32_t summary_len(const struct tr_run_state *s, uint32_t dropped, char **text)
{
    json_t *sm = summary(s, dropped);
    size_t n;
    char *t = dump(sm, &n);

    json_decref(sm);
    if (text)
        *text = t;
    else
        tr_free(t);
    return (uint32_t)n;
}

/* Append to out the messages of the prompt after the first `upto` steps,
 * after the head (head_put) and without the closing bracket; tools_tokens
 * counts the tool definitions. */
static void messages_put(const struct tr_run_state *s, struct tr_run_vol *v, uint32_t upto, uint32_t tools_tokens,
                         uint32_t budget, const struct tr_run_env *env, struct tr_buf *out,
                         struct tr_context_stats *st)
{
    const char **text;
    char **own;
    size_t *len, msgs_start;
    uint32_t *cost, *nmsg, head_tokens, fixed, total, dropped = 0, truncated = 0, messages = 2;
    char *shrunk = NULL, *sm_text = NULL;

    if (!budget)
        budget = DEFAULT_BUDGET;
    if (upto > s->n_steps)
        upto = s->n_steps;
    msgs_start = out->len;
    msgs_start += head_put(s, v, out, &head_tokens);
    fixed = head_tokens + tools_tokens;

    text = tr_calloc(upto ? upto : 1, sizeof *text);
    own = tr_calloc(upto ? upto : 1, sizeof *own);
    len = tr_calloc(upto ? upto : 1, sizeof *len);
    cost = tr_calloc(upto ? upto : 1, sizeof *cost);
    nmsg = tr_calloc(upto ? upto : 1, sizeof *nmsg);
    total = fixed;
    for (uint32_t i = 0; i < upto; i++) {
        uint32_t tr = 0;
        text[i] = block_get(s, v, env, i, false, &tr, &nmsg[i], &len[i], &own[i]);
        truncated += tr;
        cost[i] = tr_context_tokens(len[i] + 2);
        total += cost[i];
    }
    if (total > budget && upto > 1) {
        /* Drop the fewest oldest blocks that bring the prompt within budget. */
        uint32_t rest = total - fixed;
        for (dropped = 1; dropped < upto; dropped++) {
            rest -= cost[dropped - 1];
            uint32_t t = fixed + tr_context_tokens(summary_len(s, dropped, NULL)) + rest;
            if (t <= budget)
                break;
        }
        if (dropped == upto)
            dropped = upto - 1;
    }
    if (upto && total > budget) {
        /* Does the newest block fit now? If not, cut its results shorter. */
        uint32_t t = fixed + (dropped ? tr_context_tokens(summary_len(s, dropped, NULL)) : 0) + cost[upto - 1];
        for (uint32_t i = dropped; i + 1 < upto; i++)
            t += cost[i];
        if (t > budget) {
            uint32_t tr = 0, m = 0;
            shrunk = block_text(&s->steps[upto - 1], env, SHRUNK_RESULT_MAX, &tr, &m, &len[upto - 1]);
            truncated += tr;
            text[upto - 1] = shrunk;
            nmsg[upto - 1] = m;
        }
    }
    if (dropped) {
        size_t n = summary_len(s, dropped, &sm_text);
        tr_buf_adds(out, ",");
        tr_buf_add(out, sm_text, n);
        messages++;
    }
    for (uint32_t i = dropped; i < upto; i++) {
        if (!text[i]) {
            uint32_t tr = 0, m = 0;
            text[i] = block_get(s, v, env, i, true, &tr, &m, &len[i], &own[i]);
        }
        tr_buf_adds(out, ",");
        tr_buf_add(out, text[i], len[i]);
        messages += nmsg[i];
    }
    if (st) {
        st->tokens = tr_context_tokens(out->len - msgs_start + 2) + tools_tokens; /* "[" ... "]" */
        st->dropped_steps = dropped;
        st->truncated = truncated;
        st->messages = messages;
    }
    for (uint32_t i = 0; v && i < dropped; i++) {
        /* Summarised: keep its sizes (the budget counts them), not its text. */
        tr_free(v->blocks[i].text);
        v->blocks[i].text = NULL;
    }
    for (uint32_t i = 0; i < upto; i++)
        tr_free(own[i]);
    tr_free(shrunk);
    tr_free(sm_text);
    tr_free(text);
    tr_free(own);
    tr_free(len);
    tr_free(cost);
    tr_free(nmsg);
}

/* The tool definitions' JSON text: from v's cache while the registry
 * entries they come from are the same. Borrowed from v, or *own. */
static const char *tools_get(const struct tr_run_state *s, struct tr_run_vol *v, const struct tr_run_env *env,
                             size_t *len, char **own)
{
    uint64_t key = tr_run_tool_defs_key(s, env);
    json_t *tools;
    char *t;

    *own = NULL;
    if (v && v->tools && v->tools_key == key) {
        *len = v->tools_len;
        return v->tools;
    }
    tools = tr_run_tool_defs(s, env);
    t = dump(tools, len);
    json_decref(tools);
    if (!v) {
        *own = t;
        return t;
    }
    tr_free(v->tools);
    v->tools = t;
    v->tools_len = *len;
    v->tools_key = key;
    return t;
}

json_t *tr_context_messages(const struct tr_run_state *s, uint32_t upto, const json_t *tools, uint32_t budget,
                            const struct tr_run_env *env, struct tr_context_stats *st)
{
    struct tr_buf b = { 0 };
    size_t at, tools_len = 0;
    uint32_t head_tokens;
    json_error_t jerr;
    json_t *msgs;

    if (tools) {
        char *t = dump(tools, &tools_len);
        tr_free(t);
    }
    /* messages_put writes after a head; measure where the head's messages
     * start to give back only the array. */
    at = head_put(s, NULL, &b, &head_tokens);
    b.len = 0;
    messages_put(s, NULL, upto, tr_context_tokens(tools_len), budget, env, &b, st);
    tr_buf_adds(&b, "]");
    b.p[at - 1] = '[';
    msgs = json_loadb(b.p + at - 1, b.len - (at - 1), 0, &jerr);
    if (!msgs) {
        tr_log(TR_LOG_ERROR, "context: the messages do not parse back: %s", jerr.text);
        abort();
    }
    tr_free(b.p);
    return msgs;
}

char *tr_run_llm_request(const struct tr_run_state *s, struct tr_run_vol *v, const struct tr_run_env *env,
                         uint32_t step, size_t *len, unsigned char digest[TR_RUN_DIGEST],
                         struct tr_context_stats *st)
{
    struct tr_buf b = { 0 };
    size_t tools_len;
    char *tools_own, temp[64];
    const char *tools = tools_get(s, v, env, &tools_len, &tools_own);
    json_t *t;

    messages_put(s, v, step ? step - 1 : 0, tr_context_tokens(tools_len), env->context_tokens, env, &b, st);
    tr_buf_adds(&b, "]");
    if (tools_len > 2) { /* not "[]" */
        tr_buf_adds(&b, ",\"tools\":");
        tr_buf_add(&b, tools, tools_len);
        tr_buf_adds(&b, ",\"tool_choice\":\"auto\"");
    }
    tr_free(tools_own);
    t = json_real(s->temperature);
    if (t && json_dumpb(t, temp, sizeof temp, JSON_ENCODE_ANY) < sizeof temp) {
        size_t n = json_dumpb(t, temp, sizeof temp, JSON_ENCODE_ANY);
        tr_buf_adds(&b, ",\"temperature\":");
        tr_buf_add(&b, temp, n);
    }
    json_decref(t);
    tr_buf_adds(&b, ",\"stream\":false}");
    *len = b.len;
    crypto_generichash(digest, TR_RUN_DIGEST, (const unsigned char *)b.p, b.len, NULL, 0);
    return b.p;
}
