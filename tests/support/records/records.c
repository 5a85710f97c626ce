/* Actor message records from and to the JSON the tests script. See
 * records.h. */
#include <stdlib.h>
#include <string.h>

#include "records.h"
#include "schemas/journal_generated.h"

/* ---- JSON -> struct (the shape actors.h documents for each field) ------------------- */

static char *jdup(json_t *o, const char *key)
{
    const char *v = json_string_value(json_object_get(o, key));
    return v ? tr_strdup(v) : NULL;
}

static uint64_t juint(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_integer(v) && json_integer_value(v) > 0 ? (uint64_t)json_integer_value(v) : 0;
}

static void llm_from_json(const char *json, size_t len, struct tr_run_llm_result *out, char **finish)
{
    json_t *r = json_loadb(json, len, 0, NULL);
    json_t *calls, *usage, *err;

    memset(out, 0, sizeof *out);
    if (!json_is_object(r)) {
        out->error_code = tr_strdup("bad_response");
        out->error_message = tr_strdup("the llm actor's reply is not a JSON object");
        out->retryable = true;
        json_decref(r);
        return;
    }
    out->ok = json_is_true(json_object_get(r, "ok"));
    if (!out->ok) {
        err = json_object_get(r, "error");
        out->error_code = jdup(err, "code");
        out->error_message = jdup(err, "message");
        out->retryable = json_is_true(json_object_get(err, "retryable"));
        out->retry_after_ms = (uint32_t)juint(err, "retry_after_ms");
        if (!out->error_code)
            out->error_code = tr_strdup("unavailable");
        json_decref(r);
        return;
    }
    out->content = jdup(r, "content");
    out->model = jdup(r, "model");
    out->request_id = jdup(r, "request_id");
    *finish = jdup(r, "finish_reason");
    out->attempts = (uint32_t)juint(r, "attempts");
    usage = json_object_get(r, "usage");
    out->prompt_tokens = juint(usage, "prompt_tokens");
    out->completion_tokens = juint(usage, "completion_tokens");
    out->cost_micro_usd = juint(r, "cost_micro_usd");
    out->latency_ms = (uint32_t)juint(r, "latency_ms");
    out->latency_us = juint(r, "latency_us");
    calls = json_object_get(r, "tool_calls");
    for (size_t i = 0; i < json_array_size(calls) && out->n_calls < TR_RUN_MAX_CALLS; i++) {
        json_t *c = json_array_get(calls, i);
        json_t *a = json_object_get(c, "arguments");
        uint32_t k = out->n_calls++;

        out->calls[k].id = jdup(c, "id");
        out->calls[k].name = jdup(c, "name");
        if (json_is_string(a)) {
            out->calls[k].arguments = tr_strdup(json_string_value(a));
        } else if (a) {
            char *t = json_dumps(a, JSON_COMPACT | JSON_ENCODE_ANY);
            out->calls[k].arguments = tr_strdup(t ? t : "");
            free(t); /* jansson's allocator */
        }
    }
    json_decref(r);
}

static void tool_from_json(const char *json, size_t len, struct tr_run_tool_result *out)
{
    json_t *r = json_loadb(json, len, 0, NULL);
    json_t *res;

    memset(out, 0, sizeof *out);
    if (!json_is_object(r)) {
        out->is_error = true;
        out->error = tr_strdup("the tool executor sent an unreadable reply");
        json_decref(r);
        return;
    }
    out->ok = json_is_true(json_object_get(r, "ok"));
    out->is_error = !out->ok || json_is_true(json_object_get(r, "is_error"));
    out->truncated = json_is_true(json_object_get(r, "truncated"));
    out->status = (int32_t)json_integer_value(json_object_get(r, "status"));
    out->attempts = (uint32_t)juint(r, "attempts");
    res = json_object_get(r, "result");
    if (json_is_string(res)) {
        out->result_len = json_string_length(res);
        out->result = tr_memdup(json_string_value(res), out->result_len + 1);
    } else if (res && !json_is_null(res)) {
        char *t = json_dumps(res, JSON_COMPACT | JSON_ENCODE_ANY);
        out->result = tr_strdup(t ? t : "");
        out->result_len = strlen(out->result);
        free(t);
    }
    out->error = jdup(r, "error");
    if (out->is_error && !out->error)
        out->error = tr_strdup(out->result && out->result[0] ? out->result : "the tool call failed");
    out->duration_ms = (uint32_t)juint(r, "duration_ms");
    out->duration_us = juint(r, "duration_us");
    json_decref(r);
}


/* ---- struct -> record -> struct ----------------------------------------------------- */

void h_llm_result(const char *json, struct tr_run_llm_result *out)
{
    struct tr_run_llm_result r;
    char *finish = NULL;
    llm_from_json(json, strlen(json), &r, &finish);
    struct tr_msg *m = tr_run_llm_result_msg(&r, finish);
    tr_run_llm_result_read(m->data, m->len, out);
    tr_msg_free(m);
    tr_run_llm_result_free(&r);
    tr_free(finish);
}

struct tr_msg *h_llm_result_msg(const char *json)
{
    struct tr_run_llm_result r;
    char *finish = NULL;
    llm_from_json(json, strlen(json), &r, &finish);
    struct tr_msg *m = tr_run_llm_result_msg(&r, finish);
    tr_run_llm_result_free(&r);
    tr_free(finish);
    return m;
}

void h_tool_result(const char *json, struct tr_run_tool_result *out)
{
    struct tr_msg *m = h_tool_result_msg(json);
    tr_run_tool_result_read(m->data, m->len, out);
    tr_msg_free(m);
}

struct tr_msg *h_tool_result_msg(const char *json)
{
    struct tr_run_tool_result r;
    tool_from_json(json, strlen(json), &r);
    struct tr_msg *m = tr_run_tool_result_msg(&r);
    tr_run_tool_result_free(&r);
    return m;
}

/* ---- record -> JSON ----------------------------------------------------------------- */

static json_t *str_or_null(const char *s)
{
    return s != NULL ? json_string(s) : json_null();
}

static const char *finish_word(uint8_t f)
{
    switch (f) {
    case troupe_journal_FinishReason_Stop:
        return "stop";
    case troupe_journal_FinishReason_ToolCalls:
        return "tool_calls";
    case troupe_journal_FinishReason_Length:
        return "length";
    case troupe_journal_FinishReason_ContentFilter:
        return "content_filter";
    default:
        return "unknown";
    }
}

json_t *h_llm_result_json(const void *data, size_t len)
{
    struct tr_run_llm_result r;
    json_t *j;
    tr_run_llm_result_read(data, len, &r);
    if (!r.ok) {
        j = json_pack("{sbs{sosssbsI}}", "ok", 0, "error", "code", str_or_null(r.error_code), "message",
                      r.error_message != NULL ? r.error_message : "", "retryable", r.retryable, "retry_after_ms",
                      (json_int_t)r.retry_after_ms);
    } else {
        json_t *calls = json_array();
        for (uint32_t i = 0; i < r.n_calls; i++)
            json_array_append_new(calls, json_pack("{soso so}", "id", str_or_null(r.calls[i].id), "name",
                                                   str_or_null(r.calls[i].name), "arguments",
                                                   str_or_null(r.calls[i].arguments)));
        j = json_pack("{sbsosossso s{sIsI}sIsIsIsIso}", "ok", 1, "content", str_or_null(r.content), "tool_calls",
                      calls, "finish_reason", finish_word(r.finish_reason), "model", str_or_null(r.model), "usage",
                      "prompt_tokens", (json_int_t)r.prompt_tokens, "completion_tokens",
                      (json_int_t)r.completion_tokens, "cost_micro_usd", (json_int_t)r.cost_micro_usd, "latency_ms",
                      (json_int_t)r.latency_ms, "latency_us", (json_int_t)r.latency_us, "attempts",
                      (json_int_t)r.attempts, "request_id", str_or_null(r.request_id));
    }
    tr_run_llm_result_free(&r);
    return j;
}

json_t *h_tool_result_json(const void *data, size_t len)
{
    struct tr_run_tool_result r;
    tr_run_tool_result_read(data, len, &r);
    json_t *j = json_pack("{sbsssbsosIsIsIsbsI}", "ok", r.ok, "result", "", "is_error", r.is_error, "error",
                          str_or_null(r.error), "status", (json_int_t)r.status, "duration_ms",
                          (json_int_t)r.duration_ms, "duration_us", (json_int_t)r.duration_us, "truncated",
                          r.truncated, "attempts", (json_int_t)r.attempts);
    json_object_set_new(j, "result", json_stringn(r.result != NULL ? r.result : "", r.result_len));
    tr_run_tool_result_free(&r);
    return j;
}

/* ---- tool calls ----------------------------------------------------------------------- */

static char *dump_or_null(json_t *v)
{
    if (v == NULL)
        return NULL;
    char *t = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY); /* in the order written */
    char *c = t != NULL ? tr_strdup(t) : NULL;
    free(t); /* jansson's allocator */
    return c;
}

static uint64_t u64_of(json_t *v)
{
    return json_is_integer(v) && json_integer_value(v) > 0 ? (uint64_t)json_integer_value(v) : 0;
}

struct tr_msg *h_tool_call_msg(const char *json)
{
    json_t *r = json_loads(json, 0, NULL);
    if (!json_is_object(r)) {
        json_decref(r);
        return tr_msg_make(TR_MSG_TOOL_CALL, json, (uint32_t)strlen(json));
    }
    json_t *tool = json_object_get(r, "tool");
    struct tr_tool_call_rec c = {
        .name = jdup(tool, "name"),
        .kind = jdup(tool, "kind"),
        .risk = jdup(tool, "risk"),
        .config = dump_or_null(json_object_get(tool, "config")),
        .arguments = dump_or_null(json_object_get(r, "arguments")),
        .idempotency_key = jdup(r, "idempotency_key"),
        .run_id = jdup(r, "run_id"),
        .tenant = jdup(r, "tenant"),
        .version = u64_of(json_object_get(tool, "version")),
        .timeout_ms = u64_of(json_object_get(tool, "timeout_ms")),
        .step = u64_of(json_object_get(r, "step")),
        .call_index = u64_of(json_object_get(r, "call_index")),
    };
    c.arguments_len = c.arguments != NULL ? strlen(c.arguments) : 0;
    size_t len;
    char *bytes = tr_tool_call_bytes(&c, &len);
    struct tr_msg *m = tr_msg_make(TR_MSG_TOOL_CALL, bytes, (uint32_t)len);
    tr_free(bytes);
    tr_tool_call_free(&c);
    json_decref(r);
    return m;
}
