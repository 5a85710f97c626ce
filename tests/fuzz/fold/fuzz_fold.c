/* libFuzzer target: the run actor's pure core (actors/run.h) on journals
 * read from disk. A corrupt or surprising store must give a clear error,
 * never a crash, a leak or a livelock.
 *
 * Input: a journal, as pieces of [2-byte little-endian length][that many
 * bytes], repeated (a trailing piece shorter than its length is ignored).
 * Each piece must pass the troupe.journal.Event verifier, as the node
 * checks everything it reads before folding it; those that do not are
 * skipped. tests/fuzz/fold/gen_seeds.c writes realistic journals in this
 * form (the committed corpus/).
 *
 * For each verified piece, in order, into one fresh state of run
 * 0xa11ce (the run the seeds belong to):
 *   - tr_run_fold either accepts the event (fold_error stays empty, the
 *     event's seq was next_seq and next_seq moves to seq + 1) or refuses it
 *     with TR_EINVAL and a fold_error that names the run and the event's
 *     seq; after a refusal it folds nothing more (the error is sticky and
 *     the state does not move). An accepted event leaves the state
 *     consistent (steps numbered 1..n, every step but the last complete,
 *     call seqs ordered, at most TR_RUN_MAX_CALLS calls, ...).
 *   - After each accepted event, as a run actor that has just loaded this
 *     prefix: tr_run_decide with a fresh vol and with a vol that has lived
 *     through the earlier prefixes (its prompt cache warm) give the same
 *     action, bytes included; the action is well formed (an APPEND is a
 *     verifying Event for seq next_seq of this run and epoch, never one of
 *     the FSM's own types; a blob matches its digest; CALL_* carry
 *     NUL-terminated JSON; a tool call carries its idempotency key and a
 *     write tool waits for the ack of its tool.started; a terminal run only
 *     waits or exits ...).
 *   - Context assembly for the next llm call: tr_run_llm_request with and
 *     without the cache gives the same bytes and stats, its digest is the
 *     BLAKE2b of the body, the body is a JSON request whose "messages" equal
 *     what tr_context_messages returns, with the system message and the
 *     goal first.
 *   - While every string the state holds is UTF-8, every text the core
 *     writes is too, and no prompt shows jansson's placeholder for text that
 *     is not (text cut at a byte count must not split a character).
 * At the end, the actor's pump on the final state: decide, check, carry out
 * (appends fold into the state: the core's own events must fold), answer
 * llm and tool calls from a small script, acknowledge appends, decide open
 * approvals as the FSM would; it must reach EXIT or a WAIT with nothing to
 * wait for within a bound. Everything is freed (ASan's leak check). */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <sodium.h>

#include "actors/run.h"
#include "records.h"
#include "schemas/command_generated.h"
#include "schemas/journal_generated.h"
#include "tests/fuzz/fuzz.h"

#define J(x) troupe_journal_##x
#define RUN_ID UINT64_C(0x00000000000a11ce) /* tests/unit/run/harness.c */
#define MAX_PIECES 160
#define PUMP_MAX 3000
#define FSM_DECISIONS_MAX 16

/* ---- the registry, blobs and budgets the core consults ------------------- */

static const char search_schema[] =
    "{\"type\":\"object\",\"properties\":{\"q\":{\"type\":\"string\",\"minLength\":1}},"
    "\"required\":[\"q\"],\"additionalProperties\":false}";

static struct tr_run_tool registry[] = {
    { .name = "search", .version = 1, .description = "a search", .input_schema = search_schema,
      .risk = J(Risk_Read), .kind = troupe_cmd_ToolKind_Http, .config = "{\"url\":\"http://127.0.0.1:9/s\"}",
      .timeout_ms = 1000, .enabled = true },
    { .name = "wire", .version = 1, .description = "moves money", .input_schema = "{\"type\":\"object\"}",
      .risk = J(Risk_Irreversible), .kind = troupe_cmd_ToolKind_Http, .config = "{\"url\":\"http://127.0.0.1:9/w\"}",
      .timeout_ms = 1000, .enabled = true },
    { .name = "post", .version = 1, .description = "posts", .risk = J(Risk_Write), .kind = troupe_cmd_ToolKind_Http,
      .config = "{\"url\":\"http://x/\",\"require_approval\":true}", .timeout_ms = 1000, .enabled = true },
    { .name = "write", .version = 1, .description = "writes", .risk = J(Risk_Write), .kind = troupe_cmd_ToolKind_Sandbox,
      .config = "{\"image\":\"x\"}", .timeout_ms = 0, .enabled = true },
    { .name = "fetch", .version = 2, .description = "fetches", .risk = J(Risk_Read), .kind = troupe_cmd_ToolKind_Mcp,
      .enabled = true },
    { .name = "off", .version = 1, .description = "disabled", .risk = J(Risk_Read), .kind = troupe_cmd_ToolKind_Http,
      .enabled = false },
    { .name = "broken", .version = 1, .description = "bad schema", .input_schema = "{\"type\":12}",
      .schema_error = "type must be a string or an array", .risk = J(Risk_Read), .kind = troupe_cmd_ToolKind_Http,
      .enabled = true },
    { .name = "native", .version = 1, .description = "a builtin kind", .risk = J(Risk_Read),
      .kind = troupe_cmd_ToolKind_Builtin, .enabled = true },
};
#define N_REGISTRY (sizeof registry / sizeof registry[0])

static const struct tr_run_tool *lookup(void *ud, const char *name, uint32_t version)
{
    (void)ud;
    for (size_t i = 0; i < N_REGISTRY; i++)
        if (strcmp(registry[i].name, name) == 0 && (version == 0 || version == registry[i].version))
            return &registry[i];
    return NULL;
}

/* Per input: every string the state holds is UTF-8 (so every text the core
 * writes must be, and no prompt may show a placeholder for text that is
 * not); a blob that is not UTF-8 was handed out (its result may show one). */
static bool state_utf8, blob_bad;

/* A blob for every digest but a quarter of them, some not UTF-8. */
static int blob_get(void *ud, const unsigned char digest[TR_RUN_DIGEST], void **data, size_t *len)
{
    (void)ud;
    if (digest[0] % 4 == 0)
        return TR_ENOTFOUND;
    size_t n = 600 + digest[1] * 16u;
    unsigned char *p = tr_malloc(n);
    for (size_t i = 0; i < n; i++)
        p[i] = digest[0] % 4 == 1 && i == n / 2 ? 0xff : (unsigned char)('a' + (digest[i % TR_RUN_DIGEST] + i) % 26);
    blob_bad |= digest[0] % 4 == 1;
    *data = p;
    *len = n;
    return 0;
}

static int budget_check(void *ud, const char *tenant, int64_t now_us, double *limit, double *used)
{
    (void)ud;
    (void)now_us;
    if (strcmp(tenant, "broke") == 0 || strcmp(tenant, "frugal") == 0) {
        *limit = 1.5;
        *used = 2.25;
        return tenant[0] == 'b' ? TR_RUN_BUDGET_FAIL : TR_RUN_BUDGET_WAIT;
    }
    return TR_RUN_BUDGET_OK;
}

static struct tr_run_env env = {
    .context_tokens = 1000, /* per input: small, so that older steps get summarised */
    .approval_timeout_ms = 60000,
    .llm_timeout_ms = 1000,
    .tool_lookup = lookup,
    .blob_get = blob_get,
    .budget_check = budget_check,
};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    static struct tr_schema *compiled[N_REGISTRY];
    (void)argc;
    (void)argv;
    CHECK(sodium_init() >= 0);
    for (size_t i = 0; i < N_REGISTRY; i++) {
        if (!registry[i].input_schema || registry[i].schema_error)
            continue;
        json_t *j = json_loads(registry[i].input_schema, 0, NULL);
        struct tr_err err;
        CHECK(j && tr_schema_compile(j, &compiled[i], &err) == 0);
        registry[i].schema = compiled[i];
        json_decref(j);
    }
    return 0;
}

/* ---- UTF-8 ----------------------------------------------------------------------- */

/* Valid UTF-8 as jansson checks it (no overlong forms, no surrogates, at
 * most U+10FFFF), up to the first NUL (the fold keeps strings up to it). */
static bool utf8_ok(const char *p, size_t n)
{
    const unsigned char *u = (const unsigned char *)p;

    for (size_t i = 0; i < n && u[i];) {
        unsigned c = u[i], len, v;

        if (c < 0x80) {
            i++;
            continue;
        }
        if (c < 0xC2 || c > 0xF4)
            return false;
        len = c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
        if (len > n - i)
            return false;
        v = c & (0x7Fu >> len);
        for (unsigned k = 1; k < len; k++) {
            if ((u[i + k] & 0xC0) != 0x80)
                return false;
            v = v << 6 | (u[i + k] & 0x3F);
        }
        if ((len == 3 && v < 0x800) || (len == 4 && v < 0x10000) || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
            return false;
        i += len;
    }
    return true;
}

/* UTF-8, and free of the words of jansson's placeholders (the fuzzer
 * learns them from the checks below and writes them into journals). */
static bool str_ok(struct tr_fb_str x)
{
    static const char mark[] = "not valid UTF-8";

    return !x.ptr || (utf8_ok(x.ptr, x.len) && !memmem(x.ptr, x.len, mark, sizeof mark - 1));
}

/* Every string of a verified event that the core reads or writes. */
static bool event_utf8(const struct J(Event) *e)
{
    bool ok = str_ok(J(Event_run_id)(e));

    switch (J(Event_data_type)(e)) {
    case J(Data_RunCreated): {
        const struct J(RunCreated) *d = J(Event_data_as_RunCreated)(e);
        const struct J(AgentConfig) *a = d ? J(RunCreated_agent)(d) : NULL;
        if (d)
            ok = ok && str_ok(J(RunCreated_tenant)(d)) && str_ok(J(RunCreated_goal)(d));
        if (a) {
            ok = ok && str_ok(J(AgentConfig_model)(a)) && str_ok(J(AgentConfig_system)(a)) &&
                 str_ok(J(AgentConfig_provider)(a));
            for (uint32_t i = 0; i < J(AgentConfig_tools_len)(a); i++)
                ok = ok && str_ok(J(AgentConfig_tools_at)(a, i));
        }
        break;
    }
    case J(Data_LlmRequested): {
        const struct J(LlmRequested) *d = J(Event_data_as_LlmRequested)(e);
        if (d)
            ok = ok && str_ok(J(LlmRequested_model)(d)) && str_ok(J(LlmRequested_provider)(d));
        break;
    }
    case J(Data_LlmCompleted): {
        const struct J(LlmCompleted) *d = J(Event_data_as_LlmCompleted)(e);
        if (!d)
            break;
        ok = ok && str_ok(J(LlmCompleted_model)(d)) && str_ok(J(LlmCompleted_content)(d)) &&
             str_ok(J(LlmCompleted_provider_request_id)(d));
        for (uint32_t i = 0; i < J(LlmCompleted_tool_calls_len)(d); i++) {
            const struct J(ToolCall) *c = J(LlmCompleted_tool_calls_at)(d, i);
            ok = ok && str_ok(J(ToolCall_id)(c)) && str_ok(J(ToolCall_name)(c)) && str_ok(J(ToolCall_arguments)(c));
        }
        break;
    }
    case J(Data_ToolRequested): {
        const struct J(ToolRequested) *d = J(Event_data_as_ToolRequested)(e);
        if (d)
            ok = ok && str_ok(J(ToolRequested_call_id)(d)) && str_ok(J(ToolRequested_tool)(d)) &&
                 str_ok(J(ToolRequested_arguments)(d));
        break;
    }
    case J(Data_ToolStarted): {
        const struct J(ToolStarted) *d = J(Event_data_as_ToolStarted)(e);
        if (d)
            ok = ok && str_ok(J(ToolStarted_call_id)(d)) && str_ok(J(ToolStarted_tool)(d)) &&
                 str_ok(J(ToolStarted_arguments)(d));
        break;
    }
    case J(Data_ToolCompleted): {
        const struct J(ToolCompleted) *d = J(Event_data_as_ToolCompleted)(e);
        if (d)
            ok = ok && str_ok(J(ToolCompleted_call_id)(d)) && str_ok(J(ToolCompleted_result)(d)) &&
                 str_ok(J(ToolCompleted_error)(d));
        break;
    }
    case J(Data_ApprovalRequested): {
        const struct J(ApprovalRequested) *d = J(Event_data_as_ApprovalRequested)(e);
        if (d)
            ok = ok && str_ok(J(ApprovalRequested_approval_id)(d)) && str_ok(J(ApprovalRequested_call_id)(d)) &&
                 str_ok(J(ApprovalRequested_tool)(d)) && str_ok(J(ApprovalRequested_arguments)(d)) &&
                 str_ok(J(ApprovalRequested_reason)(d));
        break;
    }
    case J(Data_ApprovalDecided): {
        const struct J(ApprovalDecided) *d = J(Event_data_as_ApprovalDecided)(e);
        if (d)
            ok = ok && str_ok(J(ApprovalDecided_approval_id)(d)) && str_ok(J(ApprovalDecided_reason)(d));
        break;
    }
    case J(Data_RunSucceeded): {
        const struct J(RunSucceeded) *d = J(Event_data_as_RunSucceeded)(e);
        if (d)
            ok = ok && str_ok(J(RunSucceeded_output)(d));
        break;
    }
    case J(Data_RunFailed): {
        const struct J(RunFailed) *d = J(Event_data_as_RunFailed)(e);
        if (d)
            ok = ok && str_ok(J(RunFailed_error_code)(d)) && str_ok(J(RunFailed_error)(d));
        break;
    }
    case J(Data_LoopDetected): {
        const struct J(LoopDetected) *d = J(Event_data_as_LoopDetected)(e);
        if (d)
            ok = ok && str_ok(J(LoopDetected_detail)(d));
        break;
    }
    default:
        break;
    }
    return ok;
}

/* ---- state invariants ------------------------------------------------------- */

static void check_state(const struct tr_run_state *s)
{
    CHECK(s->next_seq >= 1);
    CHECK(s->n_steps <= s->cap_steps);
    if (s->created) {
        CHECK(s->tenant && s->goal);
        CHECK(s->n_tools == 0 || s->tools);
        for (uint32_t i = 0; i < s->n_tools; i++)
            CHECK(s->tools[i]);
    }
    for (uint32_t i = 0; i < s->n_steps; i++) {
        const struct tr_run_step *st = &s->steps[i];

        CHECK(st->n == i + 1);
        CHECK(st->llm_req_seq && st->llm_req_seq < s->next_seq);
        if (i + 1 < s->n_steps)
            CHECK(tr_run_step_complete(st));
        CHECK(st->n_calls <= TR_RUN_MAX_CALLS);
        if (!st->llm_done_seq) {
            CHECK(st->n_calls == 0 && st->calls == NULL && st->content == NULL);
            continue;
        }
        CHECK(st->llm_done_seq < s->next_seq && st->llm_done_seq > st->llm_req_seq);
        CHECK(st->calls);
        for (uint32_t j = 0; j < st->n_calls; j++) {
            const struct tr_run_call *c = &st->calls[j];

            CHECK(c->call_id && c->name && c->args);
            CHECK(c->req_seq == 0 || (c->req_seq > st->llm_done_seq && c->req_seq < s->next_seq));
            CHECK(c->start_seq == 0 || (c->req_seq && c->start_seq > c->req_seq));
            CHECK(c->apr_seq == 0 || (c->req_seq && c->apr_seq > c->req_seq && c->approval_id));
            CHECK(!c->apr_decided || c->approval_id);
            CHECK(c->done_seq == 0 || (c->req_seq && c->done_seq > c->req_seq && c->done_seq < s->next_seq));
            CHECK(c->done_seq || (!c->result && !c->error));
        }
        if (st->loops)
            CHECK(st->loop_seq && st->loop_seq < s->next_seq);
    }
    CHECK(s->n_scratch <= TR_RUN_SCRATCH_KEYS);
    for (uint32_t i = 0; i < s->n_scratch; i++)
        CHECK(s->scratch[i].key && s->scratch[i].value);
    CHECK(s->n_sigs <= s->cap_sigs && s->n_results <= s->cap_results);
    if (s->terminal) {
        CHECK(s->terminal_seq && s->terminal_seq == s->next_seq - 1);
        CHECK(s->final_type == J(Data_RunSucceeded) || s->final_type == J(Data_RunFailed) ||
              s->final_type == J(Data_RunCancelled));
    }
    CHECK(memchr(s->fold_error, '\0', sizeof s->fold_error));
}

/* Fold one verified event and check what the fold promises. */
static int fold_checked(struct tr_run_state *s, const uint8_t *buf, size_t len, const struct J(Event) *e)
{
    uint64_t seq = J(Event_seq)(e), before = s->next_seq;
    uint32_t steps = s->n_steps;
    bool had_error = s->fold_error[0] != '\0', was_terminal = s->terminal;
    char old_error[sizeof s->fold_error];

    memcpy(old_error, s->fold_error, sizeof old_error);
    int rv = tr_run_fold(s, buf, len);
    if (rv == TR_OK) {
        CHECK(!had_error && s->fold_error[0] == '\0');
        CHECK(!was_terminal);
        CHECK(seq == before && s->next_seq == seq + 1);
        CHECK(s->n_steps == steps || s->n_steps == steps + 1);
        check_state(s);
        return TR_OK;
    }
    CHECK(rv == TR_EINVAL);
    CHECK(s->next_seq == before);
    CHECK(s->n_steps == steps);
    if (had_error) {
        /* Sticky: the first error stays, nothing more is folded. */
        CHECK(memcmp(old_error, s->fold_error, sizeof old_error) == 0);
        return rv;
    }
    /* "run <run id> seq <seq>: <why>" */
    char want[96];
    int n = snprintf(want, sizeof want, "run %s seq %llu: ", s->run_text, (unsigned long long)seq);
    CHECK(n > 0 && strncmp(s->fold_error, want, (size_t)n) == 0);
    CHECK(s->fold_error[n] != '\0');
    return rv;
}

/* ---- actions ------------------------------------------------------------------ */

static const struct tr_run_call *last_call(const struct tr_run_state *s, uint32_t step, uint32_t idx)
{
    const struct tr_run_step *st = tr_run_last_step(s);

    CHECK(st && st->n == step && idx < st->n_calls);
    return &st->calls[idx];
}

static bool has_open_approval(const struct tr_run_state *s)
{
    const struct tr_run_step *st = tr_run_last_step(s);

    for (uint32_t i = 0; st && i < st->n_calls; i++)
        if (st->calls[i].approval_id && !st->calls[i].apr_decided && !st->calls[i].done_seq)
            return true;
    return false;
}

static void check_json_text(const char *text, size_t len, json_t **out)
{
    CHECK(text);
    CHECK(text[len] == '\0' && strlen(text) == len);
    json_error_t jerr;
    json_t *j = json_loadb(text, len, 0, &jerr);
    CHECK(j && json_is_object(j));
    if (out)
        *out = j;
    else
        json_decref(j);
}

/* An llm request body: {"model":..,"messages":[system, user, ...],...}. */
static void check_request_body(const char *body, size_t len, json_t **messages)
{
    json_t *j;

    check_json_text(body, len, &j);
    CHECK(json_is_string(json_object_get(j, "model")));
    json_t *m = json_object_get(j, "messages");
    CHECK(json_is_array(m) && json_array_size(m) >= 2);
    CHECK(strcmp(json_string_value(json_object_get(json_array_get(m, 0), "role")), "system") == 0);
    CHECK(strcmp(json_string_value(json_object_get(json_array_get(m, 1), "role")), "user") == 0);
    for (size_t i = 0; i < json_array_size(m); i++)
        CHECK(json_is_string(json_object_get(json_array_get(m, i), "role")));
    CHECK(json_is_array(json_object_get(j, "tools")));
    CHECK(json_is_false(json_object_get(j, "stream")));
    if (state_utf8) {
        CHECK(!strstr(body, "(text that is not valid UTF-8)"));
        CHECK(blob_bad || !strstr(body, "(the result is not valid UTF-8 text)"));
    }
    if (messages)
        *messages = json_incref(m);
    json_decref(j);
}

static void check_append(const struct tr_run_state *s, const struct tr_run_action *a, int64_t now)
{
    CHECK(a->buf && a->len > 0);
    const struct J(Event) *e = J(Event_verify_as_root)(a->buf, a->len, NULL);
    CHECK(e);
    CHECK(J(Event_seq)(e) == s->next_seq);
    CHECK(J(Event_epoch)(e) == s->epoch);
    CHECK(J(Event_time_us)(e) == now);
    struct tr_fb_str rid = J(Event_run_id)(e);
    CHECK(rid.len == strlen(s->run_text) && memcmp(rid.ptr, s->run_text, rid.len) == 0);
    uint8_t type = J(Event_data_type)(e);
    CHECK(type == a->event_type && J(Event_data)(e) != NULL);
    if (!event_utf8(e))
        CHECK(!state_utf8);
    /* The FSM's own events: it refuses them from a run. */
    CHECK(type != J(Data_NONE) && type != J(Data_RunCreated) && type != J(Data_RunAssigned) &&
          type != J(Data_ApprovalDecided) && type != J(Data_RunCancelled));
    const struct J(ToolCompleted) *tc = J(Event_data_as_ToolCompleted)(e);
    struct tr_fb_vec dg = tc ? J(ToolCompleted_result_digest)(tc) : (struct tr_fb_vec){ 0 };
    if (a->blob) {
        unsigned char d[TR_RUN_DIGEST];
        CHECK(tc && a->blob_len > TR_RUN_BLOB_MIN && a->blob_len <= TR_RUN_BLOB_MAX);
        crypto_generichash(d, sizeof d, a->blob, a->blob_len, NULL, 0);
        CHECK(dg.len == TR_RUN_DIGEST && memcmp(dg.data, d, TR_RUN_DIGEST) == 0);
        CHECK(J(ToolCompleted_result)(tc).len <= TR_RUN_PROMPT_RESULT_MAX);
    } else {
        CHECK(a->blob_len == 0 && dg.len == 0);
    }
}

/* What an action may be, given the state and vol it was decided on. */
static void check_action(const struct tr_run_state *s, const struct tr_run_vol *v, const struct tr_run_action *a,
                         int64_t now)
{
    CHECK(a->kind >= TR_RUN_WAIT && a->kind <= TR_RUN_EXIT);
    if (s->fold_error[0] || (!s->created && !s->terminal))
        CHECK(a->kind == TR_RUN_EXIT && a->exit_reason == 3);
    if (s->terminal)
        CHECK(a->kind == TR_RUN_WAIT || a->kind == TR_RUN_EXIT);
    if (a->kind != TR_RUN_APPEND && a->kind != TR_RUN_PROPOSE_EXPIRE)
        CHECK(a->buf == NULL && a->blob == NULL);
    if (a->kind != TR_RUN_CALL_LLM && a->kind != TR_RUN_CALL_TOOL)
        CHECK(a->json == NULL);
    switch (a->kind) {
    case TR_RUN_WAIT:
        if (a->idle)
            CHECK(has_open_approval(s) && !a->budget_wait);
        break;
    case TR_RUN_EXIT:
        CHECK(a->exit_reason == 0 || a->exit_reason == 3);
        if (a->exit_reason == 0)
            CHECK(s->terminal && s->terminal_seq <= v->acked_seq);
        else
            CHECK(s->fold_error[0] || !s->created);
        break;
    case TR_RUN_APPEND:
        check_append(s, a, now);
        break;
    case TR_RUN_CALL_LLM: {
        const struct tr_run_step *st = tr_run_last_step(s);
        CHECK(st && st->n == a->step && !st->llm_done_seq && a->attempt == st->attempt && a->timeout_ms > 0);
        check_request_body(a->json, a->json_len, NULL);
        break;
    }
    case TR_RUN_CALL_TOOL: {
        const struct tr_run_call *c = last_call(s, a->step, a->call_index);
        CHECK(c->start_seq && !c->done_seq && a->timeout_ms > 0);
        /* Invariant 2: a write or irreversible tool only once its
         * tool.started is acknowledged. */
        const struct tr_run_tool *t = lookup(NULL, c->name, c->version);
        CHECK(t && t->enabled);
        if (c->risk != J(Risk_Read) || t->risk != J(Risk_Read))
            CHECK(c->start_seq <= v->acked_seq);
        struct tr_tool_call_rec rec;
        CHECK(tr_tool_call_read(a->json, a->json_len, &rec) == 0);
        unsigned char key[TR_RUN_DIGEST];
        char hex[2 * TR_RUN_DIGEST + 1];
        tr_run_idem_key(s->run_text, a->step, a->call_index, key);
        tr_run_hex(key, sizeof key, hex);
        CHECK(rec.idempotency_key != NULL && strcmp(rec.idempotency_key, hex) == 0);
        CHECK(rec.name != NULL && strcmp(rec.name, c->name) == 0);
        CHECK(rec.step == a->step && rec.call_index == a->call_index);
        /* The body is the validated arguments, as JSON. */
        json_t *j;
        check_json_text(rec.arguments, rec.arguments_len, &j);
        json_decref(j);
        tr_tool_call_free(&rec);
        break;
    }
    case TR_RUN_ARM_DEADLINE: {
        const struct tr_run_call *c = last_call(s, a->step, a->call_index);
        CHECK(c->approval_id && !c->apr_decided && a->at_us == c->apr_expires_us);
        break;
    }
    case TR_RUN_PROPOSE_EXPIRE: {
        CHECK(tr_run_last_step(s));
        const struct tr_run_call *c = last_call(s, tr_run_last_step(s)->n, a->call_index);
        CHECK(c->approval_id && !c->apr_decided && now >= c->apr_expires_us);
        const struct troupe_cmd_Command *cmd = troupe_cmd_Command_verify_as_root(a->buf, a->len, NULL);
        CHECK(cmd);
        const struct troupe_cmd_ApprovalDecide *d = troupe_cmd_Command_op_as_ApprovalDecide(cmd);
        CHECK(d);
        CHECK(strcmp(troupe_cmd_ApprovalDecide_approval_id(d).ptr, c->approval_id) == 0);
        CHECK(strcmp(troupe_cmd_ApprovalDecide_run_id(d).ptr, s->run_text) == 0);
        CHECK(troupe_cmd_ApprovalDecide_decision(d) == J(Decision_Expired));
        break;
    }
    }
}

static bool same_bytes(const void *a, size_t an, const void *b, size_t bn)
{
    return an == bn && (an == 0 || memcmp(a, b, an) == 0);
}

/* ---- context assembly ------------------------------------------------------- */

static void check_context(const struct tr_run_state *s, struct tr_run_vol *warm)
{
    const struct tr_run_step *last = tr_run_last_step(s);
    uint32_t upto = last ? (tr_run_step_complete(last) ? s->n_steps : s->n_steps - 1) : 0;
    struct tr_context_stats st1, st2, st3;
    unsigned char d1[TR_RUN_DIGEST], d2[TR_RUN_DIGEST], d[TR_RUN_DIGEST];
    size_t n1, n2;

    char *cold = tr_run_llm_request(s, NULL, &env, upto + 1, &n1, d1, &st1);
    char *hot = tr_run_llm_request(s, warm, &env, upto + 1, &n2, d2, &st2);
    CHECK(same_bytes(cold, n1, hot, n2));
    CHECK(memcmp(d1, d2, sizeof d1) == 0 && memcmp(&st1, &st2, sizeof st1) == 0);
    crypto_generichash(d, sizeof d, (const unsigned char *)cold, n1, NULL, 0);
    CHECK(memcmp(d, d1, sizeof d) == 0);
    json_t *body_msgs;
    check_request_body(cold, n1, &body_msgs);
    CHECK(json_array_size(body_msgs) == st1.messages);
    CHECK(st1.dropped_steps == 0 || st1.dropped_steps < upto);
    CHECK(st1.tokens <= tr_context_tokens(n1) + 1);

    json_t *tools = tr_run_tool_defs(s, &env);
    json_t *msgs = tr_context_messages(s, upto, tools, env.context_tokens, &env, &st3);
    CHECK(json_is_array(msgs));
    CHECK(json_equal(msgs, body_msgs));
    CHECK(memcmp(&st3, &st1, sizeof st1) == 0);
    if (st1.dropped_steps) {
        const char *sum = json_string_value(json_object_get(json_array_get(msgs, 2), "content"));
        CHECK(sum && strncmp(sum, "Earlier step", 12) == 0);
    }
    json_decref(msgs);
    json_decref(tools);
    json_decref(body_msgs);
    tr_free(cold);
    tr_free(hot);
}

/* ---- one prefix: decide as a freshly loaded actor -------------------------- */

/* Returns true when the action needed context assembly (an llm.requested
 * or an llm call). */
static bool decide_prefix(const struct tr_run_state *s, struct tr_run_vol *warm, int64_t now)
{
    struct tr_run_vol cold = { 0 };
    struct tr_run_action a0, a1;
    const struct tr_run_step *st = tr_run_last_step(s);
    /* A warm vol may still hold the prompt an earlier llm.requested named;
     * the call then sends that text (invariant 4), not a rebuild. */
    bool warm_prompt = warm->prompt && st && memcmp(warm->prompt_digest, st->prompt_digest, TR_RUN_DIGEST) == 0;

    cold.acked_seq = s->next_seq - 1;
    warm->acked_seq = s->next_seq - 1;
    warm->appends_inflight = 0;
    warm->llm_out = 0;
    tr_run_decide(s, &cold, &env, now, &a0);
    check_action(s, &cold, &a0, now);
    tr_run_decide(s, warm, &env, now, &a1);
    check_action(s, warm, &a1, now);

    CHECK(a0.kind == a1.kind && a0.event_type == a1.event_type);
    CHECK(same_bytes(a0.buf, a0.len, a1.buf, a1.len));
    CHECK(same_bytes(a0.blob, a0.blob_len, a1.blob, a1.blob_len));
    if (a1.kind == TR_RUN_CALL_LLM && warm_prompt) {
        unsigned char d[TR_RUN_DIGEST];
        crypto_generichash(d, sizeof d, (const unsigned char *)a1.json, a1.json_len, NULL, 0);
        CHECK(memcmp(d, st->prompt_digest, TR_RUN_DIGEST) == 0);
    } else {
        CHECK(same_bytes(a0.json, a0.json_len, a1.json, a1.json_len));
    }
    CHECK(a0.step == a1.step && a0.call_index == a1.call_index && a0.attempt == a1.attempt);
    CHECK(a0.timeout_ms == a1.timeout_ms && a0.at_us == a1.at_us && a0.exit_reason == a1.exit_reason);
    CHECK(a0.idle == a1.idle && a0.budget_wait == a1.budget_wait);
    /* An llm.requested names the prompt it keeps for its call. */
    if (a0.kind == TR_RUN_APPEND && a0.event_type == J(Data_LlmRequested)) {
        const struct J(LlmRequested) *lr = J(Event_data_as_LlmRequested)(J(Event_verify_as_root)(a0.buf, a0.len, NULL));
        unsigned char d[TR_RUN_DIGEST];
        CHECK(cold.prompt && J(LlmRequested_prompt_digest)(lr).len == TR_RUN_DIGEST);
        crypto_generichash(d, sizeof d, (const unsigned char *)cold.prompt, cold.prompt_len, NULL, 0);
        CHECK(memcmp(d, J(LlmRequested_prompt_digest)(lr).data, TR_RUN_DIGEST) == 0);
        CHECK(memcmp(cold.prompt_digest, d, TR_RUN_DIGEST) == 0);
        check_request_body(cold.prompt, cold.prompt_len, NULL);
    }
    bool llm = a0.kind == TR_RUN_CALL_LLM || (a0.kind == TR_RUN_APPEND && a0.event_type == J(Data_LlmRequested));
    tr_run_action_free(&a0);
    tr_run_action_free(&a1);
    tr_run_vol_free(&cold);
    return llm;
}

/* ---- the pump ------------------------------------------------------------------- */

static void parse_llm(const char *json, struct tr_run_llm_result *r)
{
    h_llm_result(json, r);
}

/* The model's reply for step `step`: tool calls on odd steps (a valid search,
 * a scratchpad write, and once in a while a write tool), a retryable error
 * on the first attempt of every third step, finish otherwise. */
static struct tr_run_llm_result *llm_script(uint32_t step, uint32_t attempt, unsigned salt)
{
    struct tr_run_llm_result *r = tr_calloc(1, sizeof *r);
    char buf[768];

    if (step % 3 == 0 && attempt == 1) {
        parse_llm("{\"ok\":false,\"error\":{\"code\":\"rate_limited\",\"message\":\"slow down\","
                  "\"retryable\":true,\"retry_after_ms\":300}}",
                  r);
    } else if (step % 2 == 1) {
        snprintf(buf, sizeof buf,
                 "{\"ok\":true,\"content\":null,\"tool_calls\":["
                 "{\"id\":\"c%u\",\"name\":\"search\",\"arguments\":\"{\\\"q\\\":\\\"s%u\\\"}\"},"
                 "{\"id\":\"\",\"name\":\"scratchpad_write\",\"arguments\":\"{\\\"key\\\":\\\"k\\\",\\\"value\\\":\\\"v%u\\\"}\"},"
                 "{\"id\":\"w\",\"name\":\"%s\",\"arguments\":\"{}\"}],"
                 "\"finish_reason\":\"tool_calls\",\"model\":\"gpt-test\","
                 "\"usage\":{\"prompt_tokens\":100,\"completion_tokens\":10},\"cost_micro_usd\":50,\"latency_ms\":7}",
                 step, step, step, salt % 3 == 0 ? "write" : salt % 3 == 1 ? "post" : "current_time");
        parse_llm(buf, r);
    } else {
        parse_llm("{\"ok\":true,\"content\":\"done\",\"tool_calls\":[{\"id\":\"f\",\"name\":\"finish\","
                  "\"arguments\":\"{\\\"answer\\\":\\\"42\\\"}\"}],\"finish_reason\":\"tool_calls\","
                  "\"model\":\"gpt-test\",\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":1},"
                  "\"cost_micro_usd\":5,\"latency_ms\":7}",
                  r);
    }
    return r;
}

static struct tr_run_tool_result *tool_script(uint32_t step, uint32_t idx)
{
    struct tr_run_tool_result *r = tr_calloc(1, sizeof *r);
    json_t *j;

    if (idx == 0 && step % 2 == 0) { /* large: goes to a blob */
        char *big = tr_malloc(TR_RUN_BLOB_MIN + 300);
        for (size_t i = 0; i < TR_RUN_BLOB_MIN + 299; i++)
            big[i] = (char)('a' + (i * 7 + step) % 26);
        big[TR_RUN_BLOB_MIN + 299] = '\0';
        j = json_pack("{s:b,s:s,s:b,s:i}", "ok", 1, "result", big, "is_error", 0, "duration_ms", 3);
        tr_free(big);
    } else if (idx == 2) {
        j = json_pack("{s:b,s:s,s:b,s:s,s:i}", "ok", 0, "result", "", "is_error", 1, "error", "boom", "duration_ms", 3);
    } else {
        char res[64];
        snprintf(res, sizeof res, "result %u.%u", step, idx);
        j = json_pack("{s:b,s:s,s:b,s:n,s:i}", "ok", 1, "result", res, "is_error", 0, "error", "duration_ms", 3);
    }
    char *text = json_dumps(j, JSON_COMPACT);
    h_tool_result(text, r);
    free(text);
    json_decref(j);
    return r;
}

/* The FSM journals a decision on the open approval of call c. */
static void fsm_decide(struct tr_run_state *s, const struct tr_run_call *c, int decision, int64_t now)
{
    struct tr_fb_builder b;
    size_t n;

    tr_fb_builder_init(&b);
    tr_fb_ref id = tr_fb_create_str(&b, c->approval_id);
    tr_fb_ref why = tr_fb_create_str(&b, decision == J(Decision_Deny) ? "too risky" : "fine");
    tr_fb_ref by = tr_fb_create_str(&b, decision == J(Decision_Expired) ? "timeout" : "alice");
    J(ApprovalDecided_start)(&b);
    J(ApprovalDecided_add_approval_id)(&b, id);
    J(ApprovalDecided_add_decision)(&b, (int8_t)decision);
    J(ApprovalDecided_add_reason)(&b, why);
    J(ApprovalDecided_add_decided_by)(&b, by);
    tr_fb_ref data = J(ApprovalDecided_end)(&b);
    tr_fb_ref rid = tr_fb_create_str(&b, s->run_text);
    J(Event_start)(&b);
    J(Event_add_seq)(&b, s->next_seq);
    J(Event_add_time_us)(&b, now);
    J(Event_add_run_id)(&b, rid);
    J(Event_add_epoch)(&b, s->epoch);
    J(Event_add_data_type)(&b, J(Data_ApprovalDecided));
    J(Event_add_data)(&b, data);
    J(Event_finish)(&b, J(Event_end)(&b));
    const uint8_t *p = tr_fb_builder_data(&b, &n);
    uint8_t *copy = tr_memdup(p, n);
    tr_fb_builder_free(&b);
    CHECK(fold_checked(s, copy, n, J(Event_verify_as_root)(copy, n, NULL)) == TR_OK);
    tr_free(copy);
}

static const struct tr_run_call *open_approval_call(const struct tr_run_state *s)
{
    const struct tr_run_step *st = tr_run_last_step(s);

    for (uint32_t i = 0; st && i < st->n_calls; i++)
        if (st->calls[i].approval_id && !st->calls[i].apr_decided)
            return &st->calls[i];
    return NULL;
}

/* The actor's pump on the folded journal, with scripted replies. */
static void pump(struct tr_run_state *s, struct tr_run_vol *v, int64_t now, unsigned salt)
{
    uint64_t own_from = s->next_seq; /* events from here on are the core's */
    int decisions = 0;

    v->acked_seq = s->next_seq - 1;
    v->appends_inflight = 0;
    v->llm_out = 0;
    for (int n = 0; n < PUMP_MAX; n++) {
        struct tr_run_action a;

        now += 1000;
        tr_run_decide(s, v, &env, now, &a);
        check_action(s, v, &a, now);
        switch (a.kind) {
        case TR_RUN_EXIT:
            tr_run_action_free(&a);
            return;
        case TR_RUN_WAIT: {
            const struct tr_run_call *c;
            tr_run_action_free(&a);
            if (v->appends_inflight) { /* the store acknowledges */
                v->acked_seq = s->next_seq - 1;
                v->appends_inflight = 0;
                continue;
            }
            if (v->llm && !v->llm->ok && v->llm->retryable && now < v->retry_at_us) {
                now = v->retry_at_us; /* the retry timer fires */
                continue;
            }
            if (!s->terminal && !s->fold_error[0] && (c = open_approval_call(s)) && decisions < FSM_DECISIONS_MAX &&
                c->apr_seq <= v->acked_seq) {
                static const int order[] = { J(Decision_Approve), J(Decision_Deny), J(Decision_Expired) };
                fsm_decide(s, c, order[(salt + (unsigned)decisions) % 3], now);
                v->acked_seq = s->next_seq - 1;
                decisions++;
                continue;
            }
            /* Nothing will come: the run waits for a human, its budget,
             * or a reply that this script does not give. */
            CHECK(!s->terminal);
            return;
        }
        case TR_RUN_APPEND: {
            uint64_t seq = s->next_seq;
            if (!event_utf8(J(Event_verify_as_root)(a.buf, a.len, NULL)))
                state_utf8 = false;
            tr_run_performed(s, v, &a);
            /* The core's own event folds. */
            CHECK(s->fold_error[0] == '\0' && s->next_seq == seq + 1);
            check_state(s);
            break;
        }
        case TR_RUN_CALL_LLM: {
            const struct tr_run_step *st = tr_run_last_step(s);
            if (st->llm_req_seq >= own_from) { /* invariant 4: the prompt its llm.requested named */
                unsigned char d[TR_RUN_DIGEST];
                crypto_generichash(d, sizeof d, (const unsigned char *)a.json, a.json_len, NULL, 0);
                CHECK(memcmp(d, st->prompt_digest, TR_RUN_DIGEST) == 0);
            }
            tr_run_performed(s, v, &a);
            CHECK(v->llm_out == a.step);
            struct tr_run_llm_result *r = llm_script(a.step, a.attempt, salt);
            if (tr_run_vol_llm_reply(v, a.step, r) && !r->ok && r->retryable)
                v->retry_at_us = now + (int64_t)r->retry_after_ms * 1000;
            break;
        }
        case TR_RUN_CALL_TOOL:
            tr_run_performed(s, v, &a);
            tr_run_vol_tool_reply(v, a.step, a.call_index, tool_script(a.step, a.call_index));
            break;
        case TR_RUN_ARM_DEADLINE:
            tr_run_performed(s, v, &a);
            break;
        case TR_RUN_PROPOSE_EXPIRE: {
            tr_run_performed(s, v, &a);
            const struct tr_run_call *c = last_call(s, tr_run_last_step(s)->n, a.call_index);
            if (v->appends_inflight) {
                v->acked_seq = s->next_seq - 1;
                v->appends_inflight = 0;
            }
            fsm_decide(s, c, J(Decision_Expired), now);
            v->acked_seq = s->next_seq - 1;
            break;
        }
        }
        tr_run_action_free(&a);
    }
    fprintf(stderr, "fuzz_fold: the pump found no WAIT or EXIT in %d actions\n", PUMP_MAX);
    abort();
}

/* ---- the input -------------------------------------------------------------- */

/* now: a little after the last event (the wall clock is never far off). */
static int64_t now_after(int64_t t)
{
    const int64_t hi = INT64_C(1) << 62;

    if (t < 0)
        return 1000;
    return t > hi ? hi : t + 1000;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct tr_run_state s;
    struct tr_run_vol warm = { 0 };
    int64_t now = 1000;
    unsigned salt = 0, pieces = 0;
    size_t at = 0;

    env.context_tokens = 500 + (uint32_t)(size % 7) * 200;
    state_utf8 = true;
    blob_bad = false;
    tr_run_state_init(&s, RUN_ID, 1);
    while (at + 2 <= size && pieces < MAX_PIECES) {
        size_t len = (size_t)data[at] | (size_t)data[at + 1] << 8;

        at += 2;
        if (len > size - at)
            break;
        /* A copy of exactly its size, so that ASan sees any over-read. */
        uint8_t *buf = tr_malloc(len ? len : 1);
        memcpy(buf, data + at, len);
        at += len;
        pieces++;
        salt = salt * 31 + (unsigned)len;
        struct tr_fb_error err;
        const struct J(Event) *e = J(Event_verify_as_root)(buf, len, &err);
        if (!e) {
            char why[128];
            CHECK(tr_fb_error_format(&err, why, sizeof why)[0] != '\0');
            tr_free(buf);
            continue;
        }
        if (fold_checked(&s, buf, len, e) == TR_OK) {
            state_utf8 = state_utf8 && event_utf8(e);
            now = now_after(J(Event_time_us)(e));
            if (decide_prefix(&s, &warm, now))
                check_context(&s, &warm);
        }
        tr_free(buf);
    }
    if (s.created && !s.fold_error[0])
        check_context(&s, &warm);
    pump(&s, &warm, now, salt);
    tr_run_vol_free(&warm);
    tr_run_state_free(&s);
    return 0;
}
