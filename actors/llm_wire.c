/* The llm gateway's wire helpers, all pure: the Chat Completions request
 * body, the response parser, provider error messages, Retry-After and the
 * backoff schedule. Nothing here reads the clock, the RNG or a socket. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "actors/llm.h"

#define MODEL_MAX 256
#define MESSAGES_MAX 100000
#define TOOLS_MAX 1024

/* ---- request -------------------------------------------------------------- */

static size_t min_len(const char *s, size_t max)
{
    return s ? strnlen(s, max) : 0;
}

struct tr_msg *tr_llm_call_msg(const char *model, const char *tenant, const char *run_id, uint32_t step,
                               const char *body, size_t body_len)
{
    struct tr_llm_call h = {.magic = TR_LLM_CALL_MAGIC, .step = step};
    size_t ml = min_len(model, UINT16_MAX), tl = min_len(tenant, TR_LLM_CALL_TENANT_MAX),
           rl = min_len(run_id, TR_LLM_CALL_RUN_ID_MAX);
    struct tr_msg *m;
    char *p;

    h.body_len = (uint32_t)(body_len > UINT32_MAX ? UINT32_MAX : body_len);
    h.model_len = (uint16_t)ml;
    h.tenant_len = (uint16_t)tl;
    h.run_id_len = (uint16_t)rl;
    m = tr_msg_new(TR_MSG_LLM_CALL, (uint32_t)(sizeof h + ml + tl + rl + h.body_len));
    p = (char *)m->data;
    memcpy(p, &h, sizeof h);
    p += sizeof h;
    if (ml)
        memcpy(p, model, ml); /* model may be NULL (no model chosen) */
    p += ml;
    if (tl)
        memcpy(p, tenant, tl);
    p += tl;
    if (rl)
        memcpy(p, run_id, rl);
    p += rl;
    if (h.body_len)
        memcpy(p, body, h.body_len);
    return m;
}

/* The model of a TR_MSG_LLM_CALL holds no control characters. */
static int model_has_control(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return 1;
    }
    return 0;
}

int tr_llm_call_parse(const void *data, size_t len, struct tr_llm_call_view *out, struct tr_err *err)
{
    const char *p = data;
    struct tr_llm_call h;

    memset(out, 0, sizeof *out);
    out->run_id = "?";
    out->run_id_len = 1;
    if (len > TR_LLM_MAX_CALL_BYTES)
        return tr_err_set(err, TR_EINVAL, "call of %zu bytes is over the %u byte limit", len, TR_LLM_MAX_CALL_BYTES);
    if (len < sizeof h)
        return tr_err_set(err, TR_EINVAL, "call of %zu bytes is shorter than its header", len);
    memcpy(&h, p, sizeof h);
    if (h.magic != TR_LLM_CALL_MAGIC)
        return tr_err_set(err, TR_EINVAL, "call does not start with the TR_MSG_LLM_CALL header");
    if ((uint64_t)sizeof h + h.model_len + h.tenant_len + h.run_id_len + h.body_len != len)
        return tr_err_set(err, TR_EINVAL, "call header's lengths do not add up to the %zu byte payload", len);
    p += sizeof h;
    if (h.run_id_len > 0 && h.run_id_len <= TR_LLM_CALL_RUN_ID_MAX) {
        out->run_id = p + h.model_len + h.tenant_len;
        out->run_id_len = h.run_id_len;
    }
    if (h.model_len == 0 || h.model_len > TR_LLM_CALL_MODEL_MAX)
        return tr_err_set(err, TR_EINVAL, "\"model\" must be a string of 1 to %d bytes", TR_LLM_CALL_MODEL_MAX);
    if (model_has_control(p, h.model_len))
        return tr_err_set(err, TR_EINVAL, "\"model\" holds a control character");
    if (h.tenant_len > TR_LLM_CALL_TENANT_MAX || h.run_id_len > TR_LLM_CALL_RUN_ID_MAX)
        return tr_err_set(err, TR_EINVAL, "tenant or run id over its limit");
    out->step = h.step;
    out->model = p;
    out->model_len = h.model_len;
    out->tenant = p + h.model_len;
    out->tenant_len = h.tenant_len;
    out->body = p + h.model_len + h.tenant_len + h.run_id_len;
    out->body_len = h.body_len;
    if (h.body_len < 2 || out->body[0] != '{' || out->body[h.body_len - 1] != '}')
        return tr_err_set(err, TR_EINVAL, "the body is not a JSON object");
    return 0;
}

int tr_llm_call_from_json(const char *call, size_t len, struct tr_msg **msg, struct tr_err *err)
{
    json_error_t jerr;
    json_t *in, *out, *v, *messages, *tools;
    const char *tenant, *run_id;
    char *text;
    size_t i, body_len;
    int rv;

    *msg = NULL;
    if (len > TR_LLM_MAX_CALL_BYTES)
        return tr_err_set(err, TR_EINVAL, "call of %zu bytes is over the %u byte limit", len, TR_LLM_MAX_CALL_BYTES);
    in = json_loadb(call, len, 0, &jerr);
    if (in == NULL)
        return tr_err_set(err, TR_EINVAL, "call is not JSON: %s", jerr.text);
    if (!json_is_object(in)) {
        rv = tr_err_set(err, TR_EINVAL, "call must be a JSON object");
        goto err_after_in;
    }
    v = json_object_get(in, "model");
    if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > MODEL_MAX) {
        rv = tr_err_set(err, TR_EINVAL, "\"model\" must be a string of 1 to %d bytes", MODEL_MAX);
        goto err_after_in;
    }
    if (model_has_control(json_string_value(v), json_string_length(v))) {
        /* tr_llm_call_parse would refuse the message built with it */
        rv = tr_err_set(err, TR_EINVAL, "\"model\" holds a control character");
        goto err_after_in;
    }
    messages = json_object_get(in, "messages");
    if (!json_is_array(messages) || json_array_size(messages) == 0 || json_array_size(messages) > MESSAGES_MAX) {
        rv = tr_err_set(err, TR_EINVAL, "\"messages\" must be a non-empty array (at most %d)", MESSAGES_MAX);
        goto err_after_in;
    }
    json_array_foreach(messages, i, v) {
        if (!json_is_object(v) || !json_is_string(json_object_get(v, "role"))) {
            rv = tr_err_set(err, TR_EINVAL, "messages[%zu] must be an object with a string \"role\"", i);
            goto err_after_in;
        }
    }
    tools = json_object_get(in, "tools");
    if (tools != NULL && !json_is_null(tools)) {
        if (!json_is_array(tools) || json_array_size(tools) > TOOLS_MAX) {
            rv = tr_err_set(err, TR_EINVAL, "\"tools\" must be an array (at most %d)", TOOLS_MAX);
            goto err_after_in;
        }
        json_array_foreach(tools, i, v) {
            if (!json_is_object(v)) {
                rv = tr_err_set(err, TR_EINVAL, "tools[%zu] must be an object", i);
                goto err_after_in;
            }
        }
    }
    v = json_object_get(in, "temperature");
    if (v != NULL && !json_is_null(v) &&
        (!json_is_number(v) || json_number_value(v) < 0 || json_number_value(v) > 2)) {
        rv = tr_err_set(err, TR_EINVAL, "\"temperature\" must be a number from 0 to 2");
        goto err_after_in;
    }

    out = json_object();
    json_object_set(out, "model", json_object_get(in, "model"));
    json_object_set(out, "messages", messages);
    if (json_is_array(tools) && json_array_size(tools) > 0) {
        json_object_set(out, "tools", tools);
        json_object_set_new(out, "tool_choice", json_string("auto"));
    }
    if (json_is_number(v))
        json_object_set(out, "temperature", v);
    json_object_set_new(out, "stream", json_false());
    text = json_dumps(out, JSON_COMPACT);
    if (text == NULL) {
        json_decref(out);
        rv = tr_err_set(err, TR_EINVAL, "call does not encode as JSON");
        goto err_after_in;
    }
    tenant = json_string_value(json_object_get(in, "tenant"));
    run_id = json_string_value(json_object_get(in, "run_id"));
    /* The body can be longer than the call ("1e-7" encodes as
     * "9.9999999999999995e-08"): keep the message within what
     * tr_llm_call_parse accepts. */
    body_len = strlen(text);
    if (sizeof(struct tr_llm_call) + json_string_length(json_object_get(out, "model")) +
            min_len(tenant, TR_LLM_CALL_TENANT_MAX) + min_len(run_id, TR_LLM_CALL_RUN_ID_MAX) + body_len >
        TR_LLM_MAX_CALL_BYTES) {
        free(text);
        json_decref(out);
        rv = tr_err_set(err, TR_EINVAL, "call's body of %zu bytes is over the %u byte limit", body_len,
                        TR_LLM_MAX_CALL_BYTES);
        goto err_after_in;
    }
    v = json_object_get(in, "step");
    *msg = tr_llm_call_msg(json_string_value(json_object_get(out, "model")), tenant, run_id,
                           json_is_integer(v) ? (uint32_t)json_integer_value(v) : 0, text, body_len);
    free(text); /* jansson's allocator */
    json_decref(out);
    json_decref(in);
    return 0;

err_after_in:
    json_decref(in);
    return rv;
}

/* ---- response ------------------------------------------------------------- */

void tr_llm_response_free(struct tr_llm_response *r)
{
    json_decref(r->tool_calls);
    json_decref(r->content);
    json_decref(r->root);
    memset(r, 0, sizeof *r);
}

/* message.content: a string, null, or (some compatible servers) an array of
 * parts whose "text" parts are joined. A new reference, or NULL if invalid. */
static json_t *content_value(json_t *c)
{
    size_t i, total = 0, off = 0;
    json_t *part, *out;
    char *buf;

    if (c == NULL || json_is_null(c))
        return json_null();
    if (json_is_string(c))
        return json_incref(c);
    if (!json_is_array(c))
        return NULL;
    json_array_foreach(c, i, part) {
        json_t *t = json_object_get(part, "text");
        if (!json_is_object(part))
            return NULL;
        if (json_is_string(t))
            total += json_string_length(t);
    }
    buf = tr_malloc(total + 1);
    json_array_foreach(c, i, part) {
        json_t *t = json_object_get(part, "text");
        if (json_is_string(t)) {
            memcpy(buf + off, json_string_value(t), json_string_length(t));
            off += json_string_length(t);
        }
    }
    out = json_stringn_nocheck(buf, off);
    tr_free(buf);
    return out;
}

static int parse_tool_calls(json_t *calls, json_t **out, struct tr_err *err)
{
    json_t *arr, *c, *fn, *id, *name, *args, *type;
    size_t i;

    arr = json_array();
    *out = arr;
    if (calls == NULL || json_is_null(calls))
        return 0;
    if (!json_is_array(calls))
        return tr_err_set(err, TR_EPROTO, "message.tool_calls is not an array");
    if (json_array_size(calls) > TR_LLM_MAX_TOOL_CALLS)
        return tr_err_set(err, TR_EPROTO, "more than %d tool calls", TR_LLM_MAX_TOOL_CALLS);
    json_array_foreach(calls, i, c) {
        if (!json_is_object(c))
            return tr_err_set(err, TR_EPROTO, "tool_calls[%zu] is not an object", i);
        type = json_object_get(c, "type");
        if (type != NULL && !json_is_null(type) &&
            (!json_is_string(type) || strcmp(json_string_value(type), "function") != 0))
            return tr_err_set(err, TR_EPROTO, "tool_calls[%zu].type is not \"function\"", i);
        id = json_object_get(c, "id");
        if (!json_is_string(id) || json_string_length(id) == 0)
            return tr_err_set(err, TR_EPROTO, "tool_calls[%zu].id is missing or not a string", i);
        fn = json_object_get(c, "function");
        if (!json_is_object(fn))
            return tr_err_set(err, TR_EPROTO, "tool_calls[%zu].function is missing or not an object", i);
        name = json_object_get(fn, "name");
        if (!json_is_string(name) || json_string_length(name) == 0)
            return tr_err_set(err, TR_EPROTO, "tool_calls[%zu].function.name is missing or not a string", i);
        args = json_object_get(fn, "arguments");
        if (!json_is_string(args))
            return tr_err_set(err, TR_EPROTO, "tool_calls[%zu].function.arguments is not a string", i);
        json_array_append_new(arr, json_pack("{sOsOsO}", "id", id, "name", name, "arguments", args));
    }
    return 0;
}

static int parse_usage(json_t *u, struct tr_llm_response *r, struct tr_err *err)
{
    static const char *const keys[2] = {"prompt_tokens", "completion_tokens"};
    uint64_t *dst[2] = {&r->prompt_tokens, &r->completion_tokens};

    if (u == NULL || json_is_null(u))
        return 0;
    if (!json_is_object(u))
        return tr_err_set(err, TR_EPROTO, "usage is not an object");
    for (int i = 0; i < 2; i++) {
        json_t *v = json_object_get(u, keys[i]);
        if (v == NULL || json_is_null(v))
            continue;
        if (!json_is_integer(v) || json_integer_value(v) < 0)
            return tr_err_set(err, TR_EPROTO, "usage.%s is not a non-negative integer", keys[i]);
        *dst[i] = (uint64_t)json_integer_value(v);
    }
    return 0;
}

int tr_llm_parse_response(const void *body, size_t len, struct tr_llm_response *out, struct tr_err *err)
{
    json_error_t jerr;
    json_t *choices, *choice, *msg, *v;
    int rv;

    memset(out, 0, sizeof *out);
    if (body == NULL || len == 0)
        return tr_err_set(err, TR_EPROTO, "empty body");
    out->root = json_loadb(body, len, 0, &jerr);
    if (out->root == NULL)
        return tr_err_set(err, TR_EPROTO, "body is not JSON (line %d column %d: %s)", jerr.line, jerr.column,
                          jerr.text);
    if (!json_is_object(out->root)) {
        rv = tr_err_set(err, TR_EPROTO, "body is not a JSON object");
        goto err;
    }
    choices = json_object_get(out->root, "choices");
    if (!json_is_array(choices) || json_array_size(choices) == 0) {
        char pmsg[200];
        tr_llm_error_message(body, len, pmsg, sizeof pmsg);
        if (pmsg[0] != '\0')
            rv = tr_err_set(err, TR_EPROTO, "no choices; provider error: %s", pmsg);
        else
            rv = tr_err_set(err, TR_EPROTO, "no choices");
        goto err;
    }
    choice = json_array_get(choices, 0);
    msg = json_object_get(choice, "message");
    if (!json_is_object(choice) || !json_is_object(msg)) {
        rv = tr_err_set(err, TR_EPROTO, "choices[0].message is missing or not an object");
        goto err;
    }
    out->content = content_value(json_object_get(msg, "content"));
    if (out->content == NULL) {
        rv = tr_err_set(err, TR_EPROTO, "message.content is not a string, null or an array of parts");
        goto err;
    }
    rv = parse_tool_calls(json_object_get(msg, "tool_calls"), &out->tool_calls, err);
    if (rv != 0)
        goto err;
    v = json_object_get(msg, "refusal");
    if (json_is_string(v))
        out->refusal = json_string_value(v);
    else if (v != NULL && !json_is_null(v)) {
        rv = tr_err_set(err, TR_EPROTO, "message.refusal is not a string");
        goto err;
    }
    v = json_object_get(choice, "finish_reason");
    if (json_is_string(v) && json_string_length(v) > 0) {
        out->finish_reason = json_string_value(v);
    } else if (v == NULL || json_is_null(v)) {
        out->finish_reason = json_array_size(out->tool_calls) > 0 ? "tool_calls" : "stop";
    } else {
        rv = tr_err_set(err, TR_EPROTO, "finish_reason is not a string");
        goto err;
    }
    if (json_is_null(out->content) && json_array_size(out->tool_calls) == 0 && out->refusal == NULL &&
        (strcmp(out->finish_reason, "stop") == 0 || strcmp(out->finish_reason, "tool_calls") == 0)) {
        rv = tr_err_set(err, TR_EPROTO, "no content and no tool calls (finish_reason \"%s\")", out->finish_reason);
        goto err;
    }
    rv = parse_usage(json_object_get(out->root, "usage"), out, err);
    if (rv != 0)
        goto err;
    v = json_object_get(out->root, "model");
    out->model = json_is_string(v) && json_string_length(v) > 0 ? json_string_value(v) : NULL;
    v = json_object_get(out->root, "id");
    out->id = json_is_string(v) ? json_string_value(v) : "";
    return 0;

err:
    tr_llm_response_free(out);
    return rv;
}

void tr_llm_error_message(const void *body, size_t len, char *buf, size_t cap)
{
    json_t *root, *e, *m;

    if (cap == 0)
        return;
    buf[0] = '\0';
    if (body == NULL || len == 0)
        return;
    root = json_loadb(body, len, 0, NULL);
    if (root == NULL)
        return;
    e = json_object_get(root, "error");
    m = json_is_object(e) ? json_object_get(e, "message") : e;
    if (json_is_string(m))
        snprintf(buf, cap, "%s", json_string_value(m));
    json_decref(root);
}

/* ---- Retry-After ---------------------------------------------------------- */

/* Digits with an optional fraction -> value * scale, rounded up. -1 if not
 * of that form or absurdly large. */
static int parse_decimal(const char *s, uint64_t scale, uint64_t *out)
{
    uint64_t whole = 0, frac = 0, div = 1;
    const char *p = s;

    while (*p == ' ' || *p == '\t')
        p++;
    if (!isdigit((unsigned char)*p))
        return -1;
    for (; isdigit((unsigned char)*p); p++) {
        whole = whole * 10 + (uint64_t)(*p - '0');
        if (whole > 1000000000ull) /* about 32 years */
            return -1;
    }
    if (*p == '.') {
        p++;
        if (!isdigit((unsigned char)*p))
            return -1;
        for (; isdigit((unsigned char)*p); p++) {
            if (div < 1000000000ull) {
                frac = frac * 10 + (uint64_t)(*p - '0');
                div *= 10;
            }
        }
    }
    while (*p == ' ' || *p == '\t')
        p++;
    if (*p != '\0')
        return -1;
    *out = whole * scale + (frac * scale + div - 1) / div;
    return 0;
}

static int month_index(const char *m)
{
    static const char *const names[12] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                          "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    for (int i = 0; i < 12; i++) {
        if (strcmp(m, names[i]) == 0)
            return i + 1;
    }
    return -1;
}

/* Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar. */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    int64_t era, yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* An HTTP-date -> milliseconds since the epoch. */
static int parse_http_date(const char *s, uint64_t *out_ms)
{
    char wk[16], mon[4], tz[4];
    int d, y, hh, mm, ss, n = -1;
    size_t len = strlen(s);

    while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t'))
        len--;
    if (sscanf(s, " %15[A-Za-z], %2d %3s %4d %2d:%2d:%2d %3s%n", wk, &d, mon, &y, &hh, &mm, &ss, tz, &n) == 8 &&
        (size_t)n == len && strcmp(tz, "GMT") == 0) {
        /* IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT */
    } else if (n = -1, sscanf(s, " %15[A-Za-z], %2d-%3s-%2d %2d:%2d:%2d %3s%n", wk, &d, mon, &y, &hh, &mm, &ss,
                              tz, &n) == 8 &&
               (size_t)n == len && strcmp(tz, "GMT") == 0) {
        /* RFC 850: Sunday, 06-Nov-94 08:49:37 GMT */
        y += y < 70 ? 2000 : 1900;
    } else if (n = -1, sscanf(s, " %15[A-Za-z] %3s %2d %2d:%2d:%2d %4d%n", wk, mon, &d, &hh, &mm, &ss, &y, &n) == 7 &&
               (size_t)n == len) {
        /* asctime: Sun Nov  6 08:49:37 1994 */
    } else {
        return -1;
    }
    int m = month_index(mon);
    if (m < 0 || d < 1 || d > 31 || hh < 0 || hh > 23 || mm < 0 || mm > 59 || ss < 0 || ss > 60 || y < 1970)
        return -1;
    int64_t secs = days_from_civil(y, m, d) * 86400 + hh * 3600 + mm * 60 + ss;
    *out_ms = (uint64_t)secs * 1000;
    return 0;
}

int tr_llm_parse_retry_after(const char *value, uint64_t now_wall_ms, uint64_t *out_ms)
{
    uint64_t at;

    if (value == NULL)
        return -1;
    if (parse_decimal(value, 1000, out_ms) == 0)
        return 0;
    if (parse_http_date(value, &at) != 0)
        return -1;
    *out_ms = at > now_wall_ms ? at - now_wall_ms : 0;
    return 0;
}

int tr_llm_parse_retry_after_ms(const char *value, uint64_t *out_ms)
{
    return value ? parse_decimal(value, 1, out_ms) : -1;
}

/* ---- backoff -------------------------------------------------------------- */

uint64_t tr_llm_backoff_ms(uint32_t retry, uint32_t base_ms, uint32_t cap_ms, uint64_t rnd)
{
    uint64_t ceiling = base_ms;

    for (uint32_t i = 1; i < retry && ceiling < cap_ms; i++)
        ceiling *= 2;
    if (ceiling > cap_ms)
        ceiling = cap_ms;
    return rnd % (ceiling + 1);
}
