/* The decision: the next action of a run from its folded state, what is in
 * flight, and the time (run.h has the state diagram and the invariants).
 *
 * Pure. tr_run_decide reads s, env (the registry, through tool_lookup) and
 * now_us, and writes only *out and the lazily freed result slots of v. The
 * shell performs the action, records it (tr_run_performed), and asks again
 * until the answer is WAIT or EXIT.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "actors/run.h"
#include "actors/wire.h"
#include "schemas/command_generated.h"
#include "schemas/journal_generated.h"

#define J(x) troupe_journal_##x

#define DEFAULT_APPROVAL_MS (24u * 3600u * 1000u)

/* ---- event builders ------------------------------------------------------- */

static void emit(const struct tr_run_state *s, struct tr_fb_builder *b, int64_t now, uint8_t type,
                 tr_fb_ref data, struct tr_run_action *out)
{
    tr_fb_ref rid = tr_fb_create_str(b, s->run_text);
    const uint8_t *p;
    size_t n;

    J(Event_start)(b);
    J(Event_add_seq)(b, s->next_seq);
    J(Event_add_time_us)(b, now);
    J(Event_add_run_id)(b, rid);
    J(Event_add_epoch)(b, s->epoch);
    J(Event_add_data_type)(b, type);
    J(Event_add_data)(b, data);
    J(Event_finish)(b, J(Event_end)(b));
    p = tr_fb_builder_data(b, &n);
    out->kind = TR_RUN_APPEND;
    out->event_type = type;
    out->buf = tr_memdup(p, n);
    out->len = n;
    tr_fb_builder_free(b);
}

static tr_fb_ref str_or_0(struct tr_fb_builder *b, const char *s)
{
    return s ? tr_fb_create_str(b, s) : 0;
}

static tr_fb_ref usage_ref(struct tr_fb_builder *b, uint64_t p, uint64_t c, uint64_t cost)
{
    J(Usage_start)(b);
    J(Usage_add_prompt_tokens)(b, p);
    J(Usage_add_completion_tokens)(b, c);
    J(Usage_add_cost_micro_usd)(b, cost);
    return J(Usage_end)(b);
}

/* Text for an event (an error, a reason): at most max bytes, cut on a
 * character, every byte that is not UTF-8 replaced (it may quote a tool's
 * or a model's bytes; jansson would refuse the whole text in a prompt). */
static tr_fb_ref text_ref(struct tr_fb_builder *b, const char *s, size_t max)
{
    size_t n = (size_t)tr_run_utf8_shown(s, max);
    char *copy = tr_memdup(s, n);
    tr_run_utf8_scrub(copy, n);
    tr_fb_ref r = tr_fb_create_string(b, copy, n);
    tr_free(copy);
    return r;
}

/* llm.requested names its prompt by digest; the body is kept in v for the
 * call that follows (invariant 4), so the prompt is assembled once. */
static void ev_llm_requested(const struct tr_run_state *s, struct tr_run_vol *v, const struct tr_run_env *env,
                             int64_t now, uint32_t step, uint32_t attempt, struct tr_run_action *out)
{
    struct tr_fb_builder b;
    struct tr_context_stats st;
    unsigned char digest[TR_RUN_DIGEST];
    size_t len;
    char *body = tr_run_llm_request(s, v, env, step, &len, digest, &st);

    tr_free(v->prompt);
    v->prompt = body;
    v->prompt_len = len;
    memcpy(v->prompt_digest, digest, TR_RUN_DIGEST);
    tr_fb_builder_init(&b);
    tr_fb_ref model = str_or_0(&b, s->model), prov = str_or_0(&b, s->provider);
    tr_fb_ref dg = tr_fb_create_bytes(&b, digest, sizeof digest);
    J(LlmRequested_start)(&b);
    J(LlmRequested_add_step)(&b, step);
    J(LlmRequested_add_attempt)(&b, attempt);
    J(LlmRequested_add_model)(&b, model);
    J(LlmRequested_add_provider)(&b, prov);
    J(LlmRequested_add_prompt_digest)(&b, dg);
    J(LlmRequested_add_prompt_tokens_est)(&b, st.tokens);
    J(LlmRequested_add_message_count)(&b, st.messages);
    emit(s, &b, now, J(Data_LlmRequested), J(LlmRequested_end)(&b), out);
    out->step = step;
    out->attempt = attempt;
}

static void ev_llm_completed(const struct tr_run_state *s, int64_t now, const struct tr_run_step *st,
                             const struct tr_run_llm_result *r, struct tr_run_action *out)
{
    struct tr_fb_builder b;
    tr_fb_ref calls[TR_RUN_MAX_CALLS];

    tr_fb_builder_init(&b);
    for (uint32_t i = 0; i < r->n_calls; i++) {
        char gen[48];
        const char *id = r->calls[i].id;

        if (!id || !id[0]) {
            snprintf(gen, sizeof gen, "call_%u_%u", st->n, i);
            id = gen;
        }
        const char *an = r->calls[i].arguments;
        const char *nm = r->calls[i].name ? r->calls[i].name : "";
        tr_fb_ref rid = tr_fb_create_string(&b, id, (size_t)tr_run_utf8_shown(id, 256));
        tr_fb_ref name = tr_fb_create_string(&b, nm, (size_t)tr_run_utf8_shown(nm, 256));
        tr_fb_ref args = an ? tr_fb_create_string(&b, an, tr_run_utf8_cut(an, strlen(an), TR_RUN_ARGS_MAX)) : 0;
        J(ToolCall_start)(&b);
        J(ToolCall_add_id)(&b, rid);
        J(ToolCall_add_name)(&b, name);
        J(ToolCall_add_arguments)(&b, args);
        calls[i] = J(ToolCall_end)(&b);
    }
    tr_fb_ref vec = r->n_calls ? J(LlmCompleted_create_tool_calls)(&b, calls, r->n_calls) : 0;
    tr_fb_ref model = str_or_0(&b, r->model ? r->model : s->model);
    tr_fb_ref content =
        r->content ? tr_fb_create_string(&b, r->content, tr_run_utf8_cut(r->content, strlen(r->content), TR_RUN_CONTENT_MAX)) : 0;
    tr_fb_ref reqid = str_or_0(&b, r->request_id);
    tr_fb_ref usage = usage_ref(&b, r->prompt_tokens, r->completion_tokens, r->cost_micro_usd);
    J(LlmCompleted_start)(&b);
    J(LlmCompleted_add_step)(&b, st->n);
    J(LlmCompleted_add_model)(&b, model);
    J(LlmCompleted_add_content)(&b, content);
    J(LlmCompleted_add_tool_calls)(&b, vec);
    J(LlmCompleted_add_finish_reason)(&b, (int8_t)r->finish_reason);
    J(LlmCompleted_add_usage)(&b, usage);
    J(LlmCompleted_add_latency_ms)(&b, r->latency_ms);
    J(LlmCompleted_add_latency_us)(&b, r->latency_us);
    J(LlmCompleted_add_provider_request_id)(&b, reqid);
    J(LlmCompleted_add_attempt)(&b, st->attempt);
    emit(s, &b, now, J(Data_LlmCompleted), J(LlmCompleted_end)(&b), out);
    out->step = st->n;
}

static void ev_tool_requested(const struct tr_run_state *s, int64_t now, uint32_t step, uint32_t i,
                              const struct tr_run_call *c, uint8_t risk, struct tr_run_action *out)
{
    struct tr_fb_builder b;

    tr_fb_builder_init(&b);
    tr_fb_ref id = tr_fb_create_str(&b, c->call_id ? c->call_id : "");
    tr_fb_ref tool = tr_fb_create_str(&b, c->name ? c->name : "");
    tr_fb_ref args = str_or_0(&b, c->args);
    J(ToolRequested_start)(&b);
    J(ToolRequested_add_step)(&b, step);
    J(ToolRequested_add_call_index)(&b, i);
    J(ToolRequested_add_call_id)(&b, id);
    J(ToolRequested_add_tool)(&b, tool);
    J(ToolRequested_add_arguments)(&b, args);
    J(ToolRequested_add_risk)(&b, (int8_t)risk);
    emit(s, &b, now, J(Data_ToolRequested), J(ToolRequested_end)(&b), out);
    out->step = step;
    out->call_index = i;
}

static void ev_tool_started(const struct tr_run_state *s, int64_t now, uint32_t step, uint32_t i,
                            const struct tr_run_call *c, uint32_t version, struct tr_run_action *out)
{
    struct tr_fb_builder b;
    unsigned char key[TR_RUN_DIGEST];

    tr_run_idem_key(s->run_text, step, i, key);
    tr_fb_builder_init(&b);
    tr_fb_ref id = tr_fb_create_str(&b, c->call_id ? c->call_id : "");
    tr_fb_ref tool = tr_fb_create_str(&b, c->name ? c->name : "");
    tr_fb_ref args = str_or_0(&b, c->args);
    tr_fb_ref k = tr_fb_create_bytes(&b, key, sizeof key);
    J(ToolStarted_start)(&b);
    J(ToolStarted_add_step)(&b, step);
    J(ToolStarted_add_call_index)(&b, i);
    J(ToolStarted_add_call_id)(&b, id);
    J(ToolStarted_add_tool)(&b, tool);
    J(ToolStarted_add_version)(&b, version);
    J(ToolStarted_add_arguments)(&b, args);
    J(ToolStarted_add_idempotency_key)(&b, k);
    J(ToolStarted_add_attempt)(&b, 1);
    emit(s, &b, now, J(Data_ToolStarted), J(ToolStarted_end)(&b), out);
    out->step = step;
    out->call_index = i;
}

static void ev_tool_completed(const struct tr_run_state *s, int64_t now, uint32_t step, uint32_t i,
                              const struct tr_run_call *c, const char *result, size_t rlen, const char *error,
                              bool is_error, uint32_t duration_ms, uint64_t duration_us, struct tr_run_action *out)
{
    struct tr_fb_builder b;
    unsigned char digest[TR_RUN_DIGEST];
    size_t keep = rlen;

    tr_fb_builder_init(&b);
    tr_fb_ref id = tr_fb_create_str(&b, c->call_id ? c->call_id : "");
    tr_fb_ref res = 0, dg = 0;
    if (result) {
        /* A large result: the whole of it (up to TR_RUN_BLOB_MAX) goes to the
         * blobs family with the append; the event keeps a prefix for
         * previews, its size and the digest. */
        if (rlen > TR_RUN_BLOB_MIN) {
            size_t stored = tr_run_utf8_cut(result, rlen, TR_RUN_BLOB_MAX);

            keep = tr_run_utf8_cut(result, rlen, TR_RUN_PROMPT_RESULT_MAX);
            crypto_generichash(digest, sizeof digest, (const unsigned char *)result, stored, NULL, 0);
            dg = tr_fb_create_bytes(&b, digest, sizeof digest);
            out->blob = tr_memdup(result, stored);
            out->blob_len = stored;
        }
        res = tr_fb_create_string(&b, result, keep);
    }
    tr_fb_ref err = 0;
    if (error)
        err = text_ref(&b, error, 4096);
    J(ToolCompleted_start)(&b);
    J(ToolCompleted_add_step)(&b, step);
    J(ToolCompleted_add_call_index)(&b, i);
    J(ToolCompleted_add_call_id)(&b, id);
    J(ToolCompleted_add_result)(&b, res);
    J(ToolCompleted_add_result_digest)(&b, dg);
    J(ToolCompleted_add_result_size)(&b, result ? rlen : 0);
    J(ToolCompleted_add_error)(&b, err);
    J(ToolCompleted_add_is_error)(&b, is_error);
    J(ToolCompleted_add_duration_ms)(&b, duration_ms);
    J(ToolCompleted_add_duration_us)(&b, duration_us);
    emit(s, &b, now, J(Data_ToolCompleted), J(ToolCompleted_end)(&b), out);
    out->step = step;
    out->call_index = i;
}

static void ev_tool_error(const struct tr_run_state *s, int64_t now, uint32_t step, uint32_t i,
                          const struct tr_run_call *c, const char *prefix, const char *why,
                          struct tr_run_action *out)
{
    size_t n = strlen(prefix) + strlen(why) + 1;
    char *msg = tr_malloc(n);

    snprintf(msg, n, "%s%s", prefix, why);
    ev_tool_completed(s, now, step, i, c, NULL, 0, msg, true, 0, 0, out);
    tr_free(msg);
}

static void ev_approval_requested(const struct tr_run_state *s, const struct tr_run_env *env, int64_t now,
                                  uint32_t step, uint32_t i, const struct tr_run_call *c, uint8_t risk,
                                  struct tr_run_action *out)
{
    struct tr_fb_builder b;
    char apr[TR_RUN_APPROVAL_ID];
    uint64_t ms = env->approval_timeout_ms ? env->approval_timeout_ms : DEFAULT_APPROVAL_MS;

    tr_run_approval_id(s->run_text, step, i, apr);
    tr_fb_builder_init(&b);
    tr_fb_ref id = tr_fb_create_str(&b, apr);
    tr_fb_ref cid = str_or_0(&b, c->call_id);
    tr_fb_ref tool = str_or_0(&b, c->name);
    tr_fb_ref args = str_or_0(&b, c->args);
    tr_fb_ref reason = tr_fb_create_str(&b, risk == J(Risk_Irreversible) ? "irreversible tool" : "policy");
    J(ApprovalRequested_start)(&b);
    J(ApprovalRequested_add_approval_id)(&b, id);
    J(ApprovalRequested_add_step)(&b, step);
    J(ApprovalRequested_add_call_index)(&b, i);
    J(ApprovalRequested_add_call_id)(&b, cid);
    J(ApprovalRequested_add_tool)(&b, tool);
    J(ApprovalRequested_add_arguments)(&b, args);
    J(ApprovalRequested_add_risk)(&b, (int8_t)risk);
    J(ApprovalRequested_add_reason)(&b, reason);
    J(ApprovalRequested_add_expires_at_us)(&b, now + (int64_t)ms * 1000);
    emit(s, &b, now, J(Data_ApprovalRequested), J(ApprovalRequested_end)(&b), out);
    out->step = step;
    out->call_index = i;
}

static void ev_succeeded(const struct tr_run_state *s, int64_t now, const char *output, struct tr_run_action *out)
{
    struct tr_fb_builder b;

    tr_fb_builder_init(&b);
    tr_fb_ref o = tr_fb_create_str(&b, output ? output : "");
    tr_fb_ref u = usage_ref(&b, s->prompt_tokens, s->completion_tokens, s->cost_micro_usd);
    J(RunSucceeded_start)(&b);
    J(RunSucceeded_add_output)(&b, o);
    J(RunSucceeded_add_steps)(&b, s->n_steps);
    J(RunSucceeded_add_usage)(&b, u);
    emit(s, &b, now, J(Data_RunSucceeded), J(RunSucceeded_end)(&b), out);
}

static void ev_failed(const struct tr_run_state *s, int64_t now, const char *code, const char *msg,
                      struct tr_run_action *out)
{
    struct tr_fb_builder b;

    tr_fb_builder_init(&b);
    tr_fb_ref c = tr_fb_create_str(&b, code);
    tr_fb_ref m = text_ref(&b, msg ? msg : "", 4096);
    tr_fb_ref u = usage_ref(&b, s->prompt_tokens, s->completion_tokens, s->cost_micro_usd);
    J(RunFailed_start)(&b);
    J(RunFailed_add_error_code)(&b, c);
    J(RunFailed_add_error)(&b, m);
    J(RunFailed_add_steps)(&b, s->n_steps);
    J(RunFailed_add_usage)(&b, u);
    emit(s, &b, now, J(Data_RunFailed), J(RunFailed_end)(&b), out);
}

static void ev_budget(const struct tr_run_state *s, int64_t now, uint8_t cap, double limit, double used,
                      struct tr_run_action *out)
{
    struct tr_fb_builder b;

    tr_fb_builder_init(&b);
    J(BudgetExceeded_start)(&b);
    J(BudgetExceeded_add_cap)(&b, (int8_t)cap);
    J(BudgetExceeded_add_limit)(&b, limit);
    J(BudgetExceeded_add_used)(&b, used);
    emit(s, &b, now, J(Data_BudgetExceeded), J(BudgetExceeded_end)(&b), out);
}

static void ev_loop(const struct tr_run_state *s, int64_t now, uint32_t step, const unsigned char *sig,
                    uint32_t repeats, const char *detail, struct tr_run_action *out)
{
    struct tr_fb_builder b;

    tr_fb_builder_init(&b);
    tr_fb_ref sg = sig ? tr_fb_create_bytes(&b, sig, TR_RUN_SIG) : 0;
    tr_fb_ref d = tr_fb_create_str(&b, detail);
    J(LoopDetected_start)(&b);
    J(LoopDetected_add_step)(&b, step);
    J(LoopDetected_add_signature)(&b, sg);
    J(LoopDetected_add_repeats)(&b, repeats);
    J(LoopDetected_add_detail)(&b, d);
    emit(s, &b, now, J(Data_LoopDetected), J(LoopDetected_end)(&b), out);
    out->step = step;
}

static void propose_expire(const struct tr_run_state *s, int64_t now, const struct tr_run_call *c, uint32_t i,
                           struct tr_run_action *out)
{
    struct tr_fb_builder b;
    const uint8_t *p;
    size_t n;

    tr_fb_builder_init(&b);
    tr_fb_ref id = tr_fb_create_str(&b, c->approval_id);
    tr_fb_ref rid = tr_fb_create_str(&b, s->run_text);
    tr_fb_ref reason = tr_fb_create_str(&b, "no decision before the deadline");
    tr_fb_ref by = tr_fb_create_str(&b, "timeout");
    troupe_cmd_ApprovalDecide_start(&b);
    troupe_cmd_ApprovalDecide_add_approval_id(&b, id);
    troupe_cmd_ApprovalDecide_add_run_id(&b, rid);
    troupe_cmd_ApprovalDecide_add_decision(&b, (int8_t)J(Decision_Expired));
    troupe_cmd_ApprovalDecide_add_reason(&b, reason);
    troupe_cmd_ApprovalDecide_add_decided_by(&b, by);
    tr_fb_ref op = troupe_cmd_ApprovalDecide_end(&b);
    troupe_cmd_Command_start(&b);
    troupe_cmd_Command_add_time_us(&b, now);
    troupe_cmd_Command_add_op_ApprovalDecide(&b, op);
    troupe_cmd_Command_finish(&b, troupe_cmd_Command_end(&b));
    p = tr_fb_builder_data(&b, &n);
    out->kind = TR_RUN_PROPOSE_EXPIRE;
    out->buf = tr_memdup(p, n);
    out->len = n;
    out->call_index = i;
    tr_fb_builder_free(&b);
}

/* ---- requests to the llm and tool actors --------------------------------- */

static const char *kind_name(uint8_t k)
{
    switch (k) {
    case troupe_cmd_ToolKind_Http: return "http";
    case troupe_cmd_ToolKind_Sandbox: return "sandbox";
    case troupe_cmd_ToolKind_Mcp: return "mcp";
    default: return "builtin";
    }
}

static const char *risk_name(uint8_t r)
{
    switch (r) {
    case J(Risk_Write): return "write";
    case J(Risk_Irreversible): return "irreversible";
    default: return "read";
    }
}

/* The TR_MSG_TOOL_CALL record (actors/wire.h). The body the executor sends
 * is the arguments as validated, written again (compact, keys sorted), not
 * the model's text: what the tool reads is what the schema checked, even
 * when the model's text had a key twice. */
static void call_tool(const struct tr_run_state *s, uint32_t step, uint32_t i, const struct tr_run_call *c,
                      const struct tr_run_tool *t, struct tr_run_action *out)
{
    unsigned char key[TR_RUN_DIGEST];
    char hex[2 * TR_RUN_DIGEST + 1];
    json_t *args = c->args && c->args[0] ? json_loads(c->args, JSON_DECODE_ANY, NULL) : json_object();
    char *body = args ? json_dumps(args, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY) : NULL;

    json_decref(args);
    tr_run_idem_key(s->run_text, step, i, key);
    tr_run_hex(key, sizeof key, hex);
    struct tr_tool_call_rec rec = {
        .name = (char *)t->name,
        .kind = (char *)kind_name(t->kind),
        .risk = (char *)risk_name(t->risk),
        .config = t->config ? (char *)t->config : "{}",
        .arguments = body ? body : "{}",
        .arguments_len = body ? strlen(body) : 2,
        .idempotency_key = hex,
        .run_id = (char *)s->run_text,
        .tenant = s->tenant ? (char *)s->tenant : "",
        .version = t->version,
        .timeout_ms = t->timeout_ms,
        .step = step,
        .call_index = i,
    };
    out->kind = TR_RUN_CALL_TOOL;
    out->json = tr_tool_call_bytes(&rec, &out->json_len);
    free(body); /* jansson's allocator */
    out->step = step;
    out->call_index = i;
    out->timeout_ms = (t->timeout_ms ? t->timeout_ms : 30000) + 10000;
}

/* ---- builtins ------------------------------------------------------------- */

static void run_builtin(const struct tr_run_state *s, int64_t now, uint32_t step, uint32_t i,
                        const struct tr_run_call *c, struct tr_run_action *out)
{
    json_t *a = c->args && c->args[0] ? json_loads(c->args, 0, NULL) : json_object();
    const char *key = json_string_value(json_object_get(a, "key"));
    char buf[160];

    switch (tr_run_builtin(c->name)) {
    case TR_RUN_BUILTIN_FINISH:
        ev_tool_completed(s, now, step, i, c, "ok", 2, NULL, false, 0, 0, out);
        break;
    case TR_RUN_BUILTIN_SCRATCH_WRITE:
        ev_tool_completed(s, now, step, i, c, "ok", 2, NULL, false, 0, 0, out);
        break;
    case TR_RUN_BUILTIN_SCRATCH_READ: {
        const char *v = key ? tr_run_scratch_get(s, key) : NULL;
        if (v) {
            ev_tool_completed(s, now, step, i, c, v, strlen(v), NULL, false, 0, 0, out);
        } else {
            snprintf(buf, sizeof buf, "no value under key \"%.*s\"", tr_run_utf8_shown(key ? key : "", 100), key ? key : "");
            ev_tool_completed(s, now, step, i, c, NULL, 0, buf, true, 0, 0, out);
        }
        break;
    }
    case TR_RUN_BUILTIN_TIME: {
        /* The time of this call's tool.requested: data, not the clock. */
        time_t secs = (time_t)(c->req_time_us / 1000000);
        struct tm tm;
        char iso[32];

        gmtime_r(&secs, &tm);
        strftime(iso, sizeof iso, "%Y-%m-%dT%H:%M:%SZ", &tm);
        snprintf(buf, sizeof buf, "{\"utc\":\"%s\",\"unix_us\":%lld}", iso, (long long)c->req_time_us);
        ev_tool_completed(s, now, step, i, c, buf, strlen(buf), NULL, false, 0, 0, out);
        break;
    }
    default:
        break;
    }
    json_decref(a);
}

/* ---- the decision --------------------------------------------------------- */

static bool open_approval(const struct tr_run_state *s)
{
    const struct tr_run_step *st = tr_run_last_step(s);

    for (uint32_t i = 0; st && i < st->n_calls; i++)
        if (st->calls[i].approval_id && !st->calls[i].apr_decided)
            return true;
    return false;
}

static bool nothing_new(const struct tr_run_step *st)
{
    if (!st->n_calls)
        return false;
    for (uint32_t i = 0; i < st->n_calls; i++)
        if (!st->calls[i].seen_before)
            return false;
    return true;
}

static uint32_t sig_count(const struct tr_run_state *s, const unsigned char *sig)
{
    for (uint32_t i = 0; i < s->n_sigs; i++)
        if (memcmp(s->sigs[i].sig, sig, TR_RUN_SIG) == 0)
            return s->sigs[i].count;
    return 0;
}

/* Loop detection at the end of step st: the same call TR_RUN_LOOP_REPEATS
 * times in the run, or TR_RUN_NOTHING_NEW_STEPS steps in a row (since the
 * last detection) that brought back only results seen before. */
static bool loop_found(const struct tr_run_state *s, const struct tr_run_step *st, const unsigned char **sig,
                       uint32_t *repeats, char *detail, size_t cap)
{
    uint32_t streak = 0;

    for (uint32_t i = 0; i < st->n_calls; i++) {
        uint32_t n = sig_count(s, st->calls[i].sig);
        if (n >= TR_RUN_LOOP_REPEATS) {
            *sig = st->calls[i].sig;
            *repeats = n;
            snprintf(detail, cap,
                     "You have called %.*s with the same arguments %u times; the result will not "
                     "change. Try something else or finish.",
                     tr_run_utf8_shown(st->calls[i].name, 100), st->calls[i].name, n);
            return true;
        }
    }
    for (uint32_t k = st->n; k >= 1; k--) {
        const struct tr_run_step *p = &s->steps[k - 1];
        if ((k != st->n && p->loops) || !nothing_new(p))
            break;
        streak++;
    }
    if (streak >= TR_RUN_NOTHING_NEW_STEPS) {
        *sig = NULL;
        *repeats = streak;
        snprintf(detail, cap,
                 "Your last %u steps brought back nothing new. Change your approach or finish "
                 "with what you have.",
                 streak);
        return true;
    }
    return false;
}

static const char *finish_answer(const struct tr_run_step *st, char **owned)
{
    *owned = NULL;
    for (uint32_t i = 0; i < st->n_calls; i++) {
        const struct tr_run_call *c = &st->calls[i];
        if (tr_run_builtin(c->name) != TR_RUN_BUILTIN_FINISH || c->is_error)
            continue;
        json_t *a = json_loads(c->args, 0, NULL);
        const char *v = json_string_value(json_object_get(a, "answer"));
        if (!v)
            v = json_string_value(json_object_get(a, "output"));
        *owned = tr_strdup(v ? v : "");
        json_decref(a);
        return *owned;
    }
    return NULL;
}

/* The tenant's daily budget before a new model call: false to go on; true
 * when out is set instead (budget.exceeded under policy fail, a WAIT with
 * budget_wait under policy wait). */
static bool tenant_budget_stops(const struct tr_run_state *s, const struct tr_run_env *env, int64_t now,
                                struct tr_run_action *out)
{
    double limit = 0, used = 0;
    int verdict = env->budget_check && s->tenant ? env->budget_check(env->budget_ud, s->tenant, now, &limit, &used)
                                                 : TR_RUN_BUDGET_OK;
    if (verdict == TR_RUN_BUDGET_FAIL) {
        ev_budget(s, now, J(Cap_TenantBudget), limit, used, out);
        return true;
    }
    if (verdict == TR_RUN_BUDGET_WAIT) {
        out->kind = TR_RUN_WAIT;
        out->budget_wait = true;
        return true;
    }
    return false;
}

static void between_steps(const struct tr_run_state *s, struct tr_run_vol *v, const struct tr_run_env *env,
                          int64_t now, struct tr_run_action *out)
{
    const struct tr_run_step *st = tr_run_last_step(s);
    uint32_t n = st ? st->n : 0;
    char detail[320];

    /* Nothing waits here (invariant 5): the results of step n are folded,
     * and vol keeps them until they are acknowledged (invariant 7). */
    if (st) {
        char *answer = NULL;

        if (!st->n_calls) {
            ev_succeeded(s, now, st->content, out);
            return;
        }
        if (finish_answer(st, &answer)) {
            ev_succeeded(s, now, answer, out);
            tr_free(answer);
            return;
        }
        if (s->invalid_streak >= TR_RUN_MAX_INVALID) {
            const struct tr_run_call *last = &st->calls[st->n_calls - 1];
            const char *le = last->error ? last->error : "";
            snprintf(detail, sizeof detail, "%u invalid tool calls in a row; the last: %.*s", s->invalid_streak,
                     tr_run_utf8_shown(le, 200), le);
            ev_failed(s, now, "invalid_tool_calls", detail, out);
            return;
        }
        if (!st->loops) {
            const unsigned char *sig = NULL;
            uint32_t repeats = 0;
            if (loop_found(s, st, &sig, &repeats, detail, sizeof detail)) {
                ev_loop(s, now, n, sig, repeats, detail, out);
                return;
            }
        } else if (s->loops_detected >= 2) {
            ev_failed(s, now, "loop_detected", st->loop_detail ? st->loop_detail : "loop detected twice", out);
            return;
        }
    }
    if (s->max_steps && n >= s->max_steps) {
        ev_budget(s, now, J(Cap_Steps), s->max_steps, n, out);
        return;
    }
    if (s->max_tokens && s->prompt_tokens + s->completion_tokens >= s->max_tokens) {
        ev_budget(s, now, J(Cap_Tokens), (double)s->max_tokens, (double)(s->prompt_tokens + s->completion_tokens),
                  out);
        return;
    }
    if (s->max_cost_usd > 0 && (double)s->cost_micro_usd >= s->max_cost_usd * 1e6) {
        ev_budget(s, now, J(Cap_Cost), s->max_cost_usd, (double)s->cost_micro_usd / 1e6, out);
        return;
    }
    if (tenant_budget_stops(s, env, now, out))
        return;
    ev_llm_requested(s, v, env, now, n + 1, 1, out);
}

static void await_llm(const struct tr_run_state *s, struct tr_run_vol *v, const struct tr_run_env *env,
                      int64_t now, const struct tr_run_step *st, struct tr_run_action *out)
{
    if (v->llm && v->llm->ok) {
        ev_llm_completed(s, now, st, v->llm, out);
        return;
    }
    if (v->llm) {
        char msg[512];

        snprintf(msg, sizeof msg, "%s: %s", v->llm->error_code ? v->llm->error_code : "error",
                 v->llm->error_message ? v->llm->error_message : "");
        if (!v->llm->retryable) {
            ev_failed(s, now, "llm_error", msg, out);
        } else if (st->attempt >= TR_RUN_LLM_MAX_ATTEMPTS) {
            char m2[600];
            snprintf(m2, sizeof m2, "gave up after %u attempts: %s", st->attempt, msg);
            ev_failed(s, now, "llm_error", m2, out);
        } else if (now >= v->retry_at_us && !v->appends_inflight && !tenant_budget_stops(s, env, now, out)) {
            ev_llm_requested(s, v, env, now, st->n, st->attempt + 1, out);
        }
        return;
    }
    /* Invariant 2: the call is not a side effect; it does not wait for the
     * ack of its llm.requested. */
    if (v->llm_out == st->n)
        return;
    out->kind = TR_RUN_CALL_LLM;
    if (v->prompt && memcmp(v->prompt_digest, st->prompt_digest, TR_RUN_DIGEST) == 0) {
        out->json = v->prompt;
        out->json_len = v->prompt_len;
        v->prompt = NULL;
    } else { /* replay, or the llm.requested of another incarnation */
        out->json = tr_run_llm_request(s, v, env, st->n, &out->json_len, (unsigned char[TR_RUN_DIGEST]){ 0 }, NULL);
    }
    out->step = st->n;
    out->attempt = st->attempt;
    /* A safety net only: the llm actor always answers, after up to four
     * attempts of llm_timeout_ms each plus backoff (actors/llm.h). A reply
     * after this is dropped, and the retry may call the model twice. */
    out->timeout_ms = 4 * (env->llm_timeout_ms ? env->llm_timeout_ms : 60000) + 60000;
}

/* Irreversible tools wait for a human; so does any tool whose registry
 * config carries "require_approval": true (the policy mark). */
static bool needs_approval(const struct tr_run_tool *t)
{
    json_t *cfg;
    bool marked;

    if (t->risk == J(Risk_Irreversible))
        return true;
    if (!t->config || !strstr(t->config, "require_approval"))
        return false;
    cfg = json_loads(t->config, 0, NULL);
    marked = json_is_true(json_object_get(cfg, "require_approval"));
    json_decref(cfg);
    return marked;
}

/* One call of the current step; true when it produced an action. */
static bool advance_call(const struct tr_run_state *s, struct tr_run_vol *v, const struct tr_run_env *env,
                         int64_t now, const struct tr_run_step *st, uint32_t i, bool *busy, bool *waiting,
                         struct tr_run_action *out)
{
    const struct tr_run_call *c = &st->calls[i];
    struct tr_run_vol_call *vc = &v->calls[i];
    const struct tr_run_tool *t = NULL;
    char buf[1024];
    const char *why;

    if (c->done_seq)
        return false;
    if (!c->req_seq) {
        uint8_t risk = J(Risk_Read);
        if (!tr_run_builtin(c->name) && env->tool_lookup && c->name) {
            const struct tr_run_tool *rt = env->tool_lookup(env->tool_ud, c->name, 0);
            if (rt)
                risk = rt->risk;
        }
        ev_tool_requested(s, now, st->n, i, c, risk, out);
        return true;
    }
    if (!c->start_seq && !c->approval_id) {
        if ((why = tr_run_validate_call(s, env, c, &t, buf, sizeof buf))) {
            ev_tool_error(s, now, st->n, i, c, TR_RUN_INVALID_PREFIX, why, out);
            return true;
        }
        if (!t) {
            run_builtin(s, now, st->n, i, c, out);
            return true;
        }
        if (needs_approval(t)) {
            ev_approval_requested(s, env, now, st->n, i, c, t->risk, out);
            return true;
        }
        ev_tool_started(s, now, st->n, i, c, t->version, out);
        return true;
    }
    if (!c->start_seq) {
        if (!c->apr_decided) {
            if (c->apr_seq > v->acked_seq) {
                *busy = true;
                return false;
            }
            if (now >= c->apr_expires_us && !vc->expire_proposed) {
                propose_expire(s, now, c, i, out);
                return true;
            }
            if (!vc->deadline_armed) {
                out->kind = TR_RUN_ARM_DEADLINE;
                out->at_us = c->apr_expires_us;
                out->step = st->n;
                out->call_index = i;
                return true;
            }
            if (vc->expire_proposed)
                *busy = true;
            else
                *waiting = true;
            return false;
        }
        if (c->decision == J(Decision_Deny)) {
            const char *r = c->decision_reason && c->decision_reason[0] ? c->decision_reason : "no reason given";
            snprintf(buf, sizeof buf, "denied by a human: %.*s", tr_run_utf8_shown(r, 400), r);
            ev_tool_error(s, now, st->n, i, c, "", buf, out);
            return true;
        }
        if (c->decision != J(Decision_Approve)) {
            ev_tool_error(s, now, st->n, i, c, "", "approval expired (default deny)", out);
            return true;
        }
        /* Approved: the registry may have changed while a human thought. */
        if ((why = tr_run_validate_call(s, env, c, &t, buf, sizeof buf)) || !t) {
            ev_tool_error(s, now, st->n, i, c, TR_RUN_INVALID_PREFIX, why ? why : "not an external tool", out);
            return true;
        }
        ev_tool_started(s, now, st->n, i, c, t->version, out);
        return true;
    }
    /* Started. Invariant 2: a write or irreversible tool executes only once
     * tool.started is acknowledged; a read tool (as journaled in
     * tool.requested and as registered in the version started) at once. */
    if (vc->res) {
        ev_tool_completed(s, now, st->n, i, c, vc->res->result, vc->res->result_len, vc->res->error,
                          vc->res->is_error, vc->res->duration_ms, vc->res->duration_us, out);
        return true;
    }
    *busy = true;
    if (vc->inflight)
        return false;
    if (c->start_seq > v->acked_seq && c->risk != J(Risk_Read))
        return false;
    t = env->tool_lookup ? env->tool_lookup(env->tool_ud, c->name, c->version) : NULL;
    if (t && t->risk != J(Risk_Read) && c->start_seq > v->acked_seq)
        return false;
    if (!t || !t->enabled) {
        snprintf(buf, sizeof buf, "tool \"%.*s\" (version %u) is %s", tr_run_utf8_shown(c->name, 100), c->name, c->version,
                 t ? "disabled by an operator" : "no longer registered");
        ev_tool_error(s, now, st->n, i, c, "", buf, out);
        return true;
    }
    call_tool(s, st->n, i, c, t, out);
    return true;
}

void tr_run_decide(const struct tr_run_state *s, struct tr_run_vol *v, const struct tr_run_env *env, int64_t now,
                   struct tr_run_action *out)
{
    const struct tr_run_step *st;

    memset(out, 0, sizeof *out);
    if (s->fold_error[0]) {
        out->kind = TR_RUN_EXIT;
        out->exit_reason = 3;
        return;
    }
    if (v->resync)
        return;
    tr_run_vol_gc(s, v);
    if (s->terminal) {
        if (s->terminal_seq <= v->acked_seq) {
            out->kind = TR_RUN_EXIT;
            out->exit_reason = 0;
        }
        return;
    }
    if (!s->created) {
        out->kind = TR_RUN_EXIT;
        out->exit_reason = 3;
        return;
    }
    /* Invariant 6. */
    if (v->appends_inflight >= TR_RUN_MAX_APPENDS_INFLIGHT || (v->appends_inflight && open_approval(s)))
        return;
    if (s->budget_exceeded) {
        ev_failed(s, now, "budget_exceeded", s->budget_detail, out);
        return;
    }
    /* The creation time is journal data: now - created_us may not fit. */
    if (s->timeout_s && now >= s->created_us &&
        (uint64_t)now - (uint64_t)s->created_us >= (uint64_t)s->timeout_s * 1000000) {
        ev_budget(s, now, J(Cap_WallTime), s->timeout_s, (double)((uint64_t)now - (uint64_t)s->created_us) / 1e6,
                  out);
        return;
    }
    st = tr_run_last_step(s);
    tr_run_vol_sync(v, st ? st->n : 0);
    if (!st || tr_run_step_complete(st)) {
        between_steps(s, v, env, now, out);
        return;
    }
    if (!st->llm_done_seq) {
        await_llm(s, v, env, now, st, out);
        return;
    }
    bool busy = v->appends_inflight || v->llm_out, waiting = false;
    for (uint32_t i = 0; i < st->n_calls; i++)
        if (advance_call(s, v, env, now, st, i, &busy, &waiting, out))
            return;
    out->idle = waiting && !busy;
}

void tr_run_performed(struct tr_run_state *s, struct tr_run_vol *v, const struct tr_run_action *a)
{
    struct tr_run_vol_call *vc = a->call_index < TR_RUN_MAX_CALLS ? &v->calls[a->call_index] : NULL;

    switch (a->kind) {
    case TR_RUN_APPEND:
        if (tr_run_fold(s, a->buf, a->len) != 0)
            tr_log(TR_LOG_ERROR, "run %s: own event does not fold: %s", s->run_text, s->fold_error);
        v->appends_inflight++;
        if (a->event_type == J(Data_LlmRequested) && v->llm && !v->llm->ok) {
            tr_run_llm_result_free(v->llm);
            tr_free(v->llm);
            v->llm = NULL;
            v->retry_at_us = 0;
        }
        break;
    case TR_RUN_CALL_LLM:
        v->llm_out = a->step;
        break;
    case TR_RUN_CALL_TOOL:
        if (vc)
            vc->inflight = true;
        break;
    case TR_RUN_ARM_DEADLINE:
        if (vc)
            vc->deadline_armed = true;
        break;
    case TR_RUN_PROPOSE_EXPIRE:
        if (vc)
            vc->expire_proposed = true;
        break;
    default:
        break;
    }
}

void tr_run_action_free(struct tr_run_action *a)
{
    tr_free(a->buf);
    tr_free(a->blob);
    tr_free(a->json);
    memset(a, 0, sizeof *a);
}
