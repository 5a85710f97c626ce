/* Replies in the OpenAI Chat Completions wire format: completions, their
 * streamed chunks, errors, and the deliberately broken variants.
 *
 * Streaming follows what OpenAI sends: a first chunk with the role, content
 * in pieces, each tool call as one chunk with index/id/type/name and empty
 * arguments followed by argument pieces, a chunk with an empty delta and the
 * finish_reason, with stream_options.include_usage a last chunk with empty
 * choices and the usage (every earlier chunk then says "usage": null), and
 * finally `data: [DONE]`. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "tools/mockllm/mockllm.h"

#define DEFAULT_PIECES 3

void mock_reply_free(struct mock_reply *r)
{
    tr_free(r->body);
    for (size_t i = 0; i < r->n_events; i++)
        tr_free(r->events[i]);
    tr_free(r->events);
    memset(r, 0, sizeof(*r));
}

static void reply_init(struct mock_reply *r, int status)
{
    memset(r, 0, sizeof(*r));
    r->status = status;
    r->content_type = "application/json";
    r->retry_after = -1;
    r->body_cut = SIZE_MAX;
    r->events_cut = SIZE_MAX;
}

/* Takes the reference to j. */
static void reply_set_json(struct mock_reply *r, json_t *j)
{
    r->body = mock_dumps(j, JSON_COMPACT);
    r->body_len = strlen(r->body);
    json_decref(j);
}

static void default_kind(int status, const char **type, const char **code)
{
    const char *t = "invalid_request_error", *c = NULL;
    if (status == 401)
        c = "invalid_api_key";
    else if (status == 429)
        t = "requests", c = "rate_limit_exceeded";
    else if (status >= 500)
        t = "server_error";
    if (*type == NULL)
        *type = t;
    if (*code == NULL)
        *code = c;
}

void mock_reply_error(struct mock_reply *r, int status, const char *type, const char *code,
                      const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    reply_init(r, status);
    default_kind(status, &type, &code);
    json_t *e = json_object();
    json_object_set_new(e, "message", json_string(msg));
    json_object_set_new(e, "type", json_string(type));
    json_object_set_new(e, "param", json_null());
    json_object_set_new(e, "code", code != NULL ? json_string(code) : json_null());
    json_t *root = json_object();
    json_object_set_new(root, "error", e);
    reply_set_json(r, root);
}

/* ------------------------------------------------------------------------ */
/* The answer a step gives, resolved against the request.                    */

struct call_out {
    char *id;
    const char *name;
    char *args;
};

struct answer {
    char *content;            /* NULL: JSON null */
    struct call_out *calls;
    size_t n_calls;
    const char *finish;
    int64_t prompt_tokens, completion_tokens;
    char id[48];
};

/* Apply templates to every string inside j; returns a new reference. */
static json_t *template_json(json_t *j, const struct mock_request *req, size_t step, const char *model)
{
    if (json_is_string(j)) {
        char *s = mock_template(json_string_value(j), req, step, model);
        json_t *out = json_string(s);
        tr_free(s);
        return out != NULL ? out : json_string("");
    }
    if (json_is_object(j)) {
        json_t *out = json_object();
        const char *k;
        json_t *v;
        json_object_foreach(j, k, v) json_object_set_new(out, k, template_json(v, req, step, model));
        return out;
    }
    if (json_is_array(j)) {
        json_t *out = json_array();
        size_t i;
        json_t *v;
        json_array_foreach(j, i, v) json_array_append_new(out, template_json(v, req, step, model));
        return out;
    }
    return json_incref(j);
}

/* Make arguments text that is certainly not JSON. */
static char *break_json(const char *s)
{
    size_t n = strlen(s);
    size_t keep = n > 0 ? n - 1 : 0;
    while (keep > 0 && ((unsigned char)s[keep] & 0xC0) == 0x80)
        keep--;
    char *out = tr_malloc(keep + 3);
    memcpy(out, s, keep);
    memcpy(out + keep, ",\"", 3);
    return out;
}

static int64_t ceil4(size_t n)
{
    return (int64_t)((n + 3) / 4);
}

static void answer_build(struct answer *a, const struct mock_step *st, size_t step,
                         const struct mock_request *req, const char *model)
{
    size_t out_chars = 0;

    memset(a, 0, sizeof(*a));
    snprintf(a->id, sizeof(a->id), "chatcmpl-mock%016llx",
             (unsigned long long)mock_fnv1a(&step, sizeof(step), req->conv_hash));
    if (st->malformed == MOCK_MAL_NO_CONTENT) {
        a->finish = st->finish_reason != NULL ? st->finish_reason : "stop";
        goto usage;
    }
    if (st->content != NULL) {
        a->content = mock_template(st->content, req, step, model);
        out_chars += strlen(a->content);
    }
    size_t n = st->n_calls;
    int synth = n == 0 && (st->malformed == MOCK_MAL_UNKNOWN_TOOL ||
                           st->malformed == MOCK_MAL_BAD_ARGUMENTS);
    a->n_calls = synth ? 1 : n;
    a->calls = tr_calloc(a->n_calls > 0 ? a->n_calls : 1, sizeof(*a->calls));
    for (size_t i = 0; i < a->n_calls; i++) {
        struct call_out *c = &a->calls[i];
        const struct mock_tool_call *in = synth ? NULL : &st->calls[i];
        char idbuf[40];
        uint64_t h = mock_fnv1a(&i, sizeof(i), mock_fnv1a(&step, sizeof(step), req->conv_hash));
        snprintf(idbuf, sizeof(idbuf), "call_%016llx", (unsigned long long)h);
        c->id = tr_strdup(in != NULL && in->id != NULL ? in->id : idbuf);
        c->name = in != NULL ? in->name : "mock_tool";
        if (st->malformed == MOCK_MAL_UNKNOWN_TOOL)
            c->name = "mock_unknown_tool";
        if (in == NULL) {
            c->args = tr_strdup("{}");
        } else if (json_is_string(in->args)) {
            c->args = mock_template_json(json_string_value(in->args), req, step, model);
        } else {
            json_t *t = template_json(in->args, req, step, model);
            c->args = mock_dumps(t, JSON_COMPACT);
            json_decref(t);
        }
        if (st->malformed == MOCK_MAL_BAD_ARGUMENTS) {
            char *bad = break_json(c->args);
            tr_free(c->args);
            c->args = bad;
        }
        out_chars += strlen(c->name) + strlen(c->args);
    }
    a->finish = st->finish_reason != NULL ? st->finish_reason
                                          : (a->n_calls > 0 ? "tool_calls" : "stop");
usage:
    a->prompt_tokens = st->usage_prompt >= 0 ? st->usage_prompt : ceil4(req->prompt_chars);
    a->completion_tokens = st->usage_completion >= 0 ? st->usage_completion : ceil4(out_chars);
}

static void answer_free(struct answer *a)
{
    tr_free(a->content);
    for (size_t i = 0; i < a->n_calls; i++) {
        tr_free(a->calls[i].id);
        tr_free(a->calls[i].args);
    }
    tr_free(a->calls);
}

static json_t *usage_json(const struct answer *a)
{
    return mock_pack("{sIsIsI}", "prompt_tokens", (json_int_t)a->prompt_tokens,
                     "completion_tokens", (json_int_t)a->completion_tokens, "total_tokens",
                     (json_int_t)(a->prompt_tokens + a->completion_tokens));
}

static json_t *envelope(const struct answer *a, const char *object, const char *model,
                        int64_t created)
{
    json_t *j = json_object();
    json_object_set_new(j, "id", json_string(a->id));
    json_object_set_new(j, "object", json_string(object));
    json_object_set_new(j, "created", json_integer(created));
    json_object_set_new(j, "model", json_string(model));
    json_object_set_new(j, "system_fingerprint", json_string("fp_mockllm"));
    return j;
}

static json_t *nullable_string(const char *s)
{
    return s != NULL ? json_string(s) : json_null();
}

/* ------------------------------------------------------------------------ */
/* Non-streamed.                                                             */

static void completion_body(struct mock_reply *r, const struct mock_step *st,
                            const struct answer *a, const char *model, int64_t created)
{
    json_t *root = envelope(a, "chat.completion", model, created);
    json_t *choices = json_array();
    if (st->malformed != MOCK_MAL_EMPTY_CHOICES) {
        json_t *msg = json_object();
        json_object_set_new(msg, "role", json_string("assistant"));
        json_object_set_new(msg, "content", nullable_string(a->content));
        json_object_set_new(msg, "refusal", json_null());
        if (a->n_calls > 0) {
            json_t *calls = json_array();
            for (size_t i = 0; i < a->n_calls; i++) {
                json_array_append_new(calls,
                                      mock_pack("{sssss{ssss}}", "id", a->calls[i].id, "type",
                                                "function", "function", "name", a->calls[i].name,
                                                "arguments", a->calls[i].args));
            }
            json_object_set_new(msg, "tool_calls", calls);
        }
        json_t *choice = json_object();
        json_object_set_new(choice, "index", json_integer(0));
        json_object_set_new(choice, "message", msg);
        json_object_set_new(choice, "logprobs", json_null());
        json_object_set_new(choice, "finish_reason", json_string(a->finish));
        json_array_append_new(choices, choice);
    }
    json_object_set_new(root, "choices", choices);
    json_object_set_new(root, "usage", usage_json(a));
    reply_set_json(r, root);
    if (st->malformed == MOCK_MAL_BAD_JSON) {
        /* A complete HTTP response whose body stops in the middle of the JSON. */
        r->body_len /= 2;
        r->body[r->body_len] = '\0';
    } else if (st->malformed == MOCK_MAL_TRUNCATED) {
        r->body_cut = r->body_len / 2;
    }
}

/* ------------------------------------------------------------------------ */
/* Streamed.                                                                 */

struct events {
    char **v;
    size_t n, cap;
};

static void ev_add_raw(struct events *ev, char *line)
{
    if (ev->n == ev->cap) {
        ev->cap = ev->cap != 0 ? ev->cap * 2 : 16;
        ev->v = tr_realloc(ev->v, ev->cap * sizeof(*ev->v));
    }
    ev->v[ev->n++] = line;
}

static void ev_add_text(struct events *ev, const char *data)
{
    size_t n = strlen(data);
    char *line = tr_malloc(n + 9);
    memcpy(line, "data: ", 6);
    memcpy(line + 6, data, n);
    memcpy(line + 6 + n, "\n\n", 3);
    ev_add_raw(ev, line);
}

/* A chunk with one choice carrying delta (reference taken), or with no
 * choices when delta is NULL; usage (reference taken) only on the last. */
static void ev_add_chunk(struct events *ev, const struct answer *a, const char *model,
                         int64_t created, int with_usage_field, json_t *delta, const char *finish,
                         json_t *usage)
{
    json_t *root = envelope(a, "chat.completion.chunk", model, created);
    json_t *choices = json_array();
    if (delta != NULL) {
        json_t *choice = json_object();
        json_object_set_new(choice, "index", json_integer(0));
        json_object_set_new(choice, "delta", delta);
        json_object_set_new(choice, "logprobs", json_null());
        json_object_set_new(choice, "finish_reason", nullable_string(finish));
        json_array_append_new(choices, choice);
    }
    json_object_set_new(root, "choices", choices);
    if (usage != NULL)
        json_object_set_new(root, "usage", usage);
    else if (with_usage_field)
        json_object_set_new(root, "usage", json_null());
    char *s = mock_dumps(root, JSON_COMPACT);
    json_decref(root);
    ev_add_text(ev, s);
    tr_free(s);
}

/* Split s into about `k` pieces on UTF-8 character boundaries; calls
 * fn(piece) for each non-empty piece. */
static void split_pieces(const char *s, int k, void (*fn)(void *arg, const char *piece), void *arg)
{
    size_t n = strlen(s);
    size_t start = 0;
    if (k <= 0)
        k = DEFAULT_PIECES;
    for (int i = 1; i <= k && start < n; i++) {
        size_t end = i == k ? n : n * (size_t)i / (size_t)k;
        while (end < n && ((unsigned char)s[end] & 0xC0) == 0x80)
            end++;
        if (end <= start)
            continue;
        char *piece = tr_strndup(s + start, end - start);
        fn(arg, piece);
        tr_free(piece);
        start = end;
    }
}

struct piece_ctx {
    struct events *ev;
    const struct answer *a;
    const char *model;
    int64_t created;
    int usage_field;
    size_t call; /* SIZE_MAX: content pieces */
};

static void piece_cb(void *arg, const char *piece)
{
    struct piece_ctx *pc = arg;
    json_t *delta;
    if (pc->call == SIZE_MAX)
        delta = mock_pack("{ss}", "content", piece);
    else
        delta = mock_pack("{s[{sIs{ss}}]}", "tool_calls", "index", (json_int_t)pc->call,
                          "function", "arguments", piece);
    ev_add_chunk(pc->ev, pc->a, pc->model, pc->created, pc->usage_field, delta, NULL, NULL);
}

static void completion_events(struct mock_reply *r, const struct mock_step *st,
                              const struct answer *a, const struct mock_request *req,
                              const char *model, int64_t created)
{
    struct events ev = {0};
    int uf = req->include_usage;
    struct piece_ctx pc = {&ev, a, model, created, uf, SIZE_MAX};

    if (st->malformed == MOCK_MAL_EMPTY_CHOICES) {
        ev_add_chunk(&ev, a, model, created, uf, NULL, NULL, NULL);
    } else {
        ev_add_chunk(&ev, a, model, created, uf,
                     mock_pack("{ssss}", "role", "assistant", "content", ""), NULL, NULL);
        if (st->malformed == MOCK_MAL_BAD_JSON) {
            char broken[160];
            snprintf(broken, sizeof(broken), "{\"id\":\"%s\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"delta\":",
                     a->id);
            ev_add_text(&ev, broken);
        }
        if (a->content != NULL)
            split_pieces(a->content, st->pieces, piece_cb, &pc);
        for (size_t i = 0; i < a->n_calls; i++) {
            json_t *delta = mock_pack("{s[{sIsssss{ssss}}]}", "tool_calls", "index", (json_int_t)i,
                                      "id", a->calls[i].id, "type", "function", "function",
                                      "name", a->calls[i].name, "arguments", "");
            ev_add_chunk(&ev, a, model, created, uf, delta, NULL, NULL);
            pc.call = i;
            split_pieces(a->calls[i].args, st->pieces, piece_cb, &pc);
        }
        ev_add_chunk(&ev, a, model, created, uf, json_object(), a->finish, NULL);
    }
    if (req->include_usage)
        ev_add_chunk(&ev, a, model, created, uf, NULL, NULL, usage_json(a));
    ev_add_raw(&ev, tr_strdup("data: [DONE]\n\n"));

    r->streaming = 1;
    r->content_type = "text/event-stream";
    r->events = ev.v;
    r->n_events = ev.n;
    if (st->malformed == MOCK_MAL_TRUNCATED)
        r->events_cut = ev.n / 2 > 0 ? ev.n / 2 : 1;
}

void mock_reply_completion(struct mock_reply *r, const struct mock_step *st, size_t step,
                           const struct mock_request *req, const char *model, int64_t created)
{
    struct answer a;

    reply_init(r, 200);
    answer_build(&a, st, step, req, model);
    if (req->stream)
        completion_events(r, st, &a, req, model, created);
    else
        completion_body(r, st, &a, model, created);
    r->delay_ms = st->delay_ms;
    r->chunk_delay_ms = st->chunk_delay_ms;
    answer_free(&a);
}
