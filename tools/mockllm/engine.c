/* The engine: routes one HTTP request to an answer, keeping the only state the
 * mock has — fail_first attempt counters, statistics, and the down switch.
 *
 * Attempt counters are keyed by the hash of a request's messages array, so a
 * retry of the same request (same conversation, same step) counts up while
 * other conversations are unaffected. The table is bounded: when it holds
 * max_counters entries it is cleared, and conversations start counting anew. */
#include <stdio.h>
#include <string.h>

#include "tools/mockllm/mockllm.h"

#define DEFAULT_COUNTERS 65536

struct counter {
    uint64_t key;   /* 0: free (a hash of 0 is stored as 1) */
    uint32_t attempts;
};

struct mock_engine {
    struct mock_scripts *scripts;
    char *require_key;
    struct counter *counters;
    size_t cap;          /* slots, a power of two */
    size_t used;
    size_t max_used;
    int down;
    int down_retry_after;
    /* statistics */
    uint64_t requests, completions, streamed, injected_errors, malformed;
    json_t *by_script;   /* name -> count */
    json_t *by_status;   /* "200" -> count */
};

struct mock_engine *mock_engine_new(struct mock_scripts *scripts, const struct mock_engine_opts *opts)
{
    struct mock_engine *e = tr_calloc(1, sizeof(*e));
    e->scripts = scripts;
    e->require_key = opts->require_key != NULL ? tr_strdup(opts->require_key) : NULL;
    e->max_used = opts->max_counters != 0 ? opts->max_counters : DEFAULT_COUNTERS;
    e->cap = 16;
    while (e->cap < e->max_used * 2)
        e->cap *= 2;
    e->counters = tr_calloc(e->cap, sizeof(*e->counters));
    e->down_retry_after = -1;
    e->by_script = json_object();
    e->by_status = json_object();
    return e;
}

void mock_engine_free(struct mock_engine *e)
{
    if (e == NULL)
        return;
    mock_scripts_free(e->scripts);
    tr_free(e->require_key);
    tr_free(e->counters);
    json_decref(e->by_script);
    json_decref(e->by_status);
    tr_free(e);
}

/* Count one attempt of conversation `key`; returns the attempts before it. */
static uint32_t counter_bump(struct mock_engine *e, uint64_t key)
{
    if (key == 0)
        key = 1;
    size_t mask = e->cap - 1;
    for (size_t i = (size_t)key & mask;; i = (i + 1) & mask) {
        struct counter *c = &e->counters[i];
        if (c->key == key)
            return c->attempts++;
        if (c->key == 0) {
            if (e->used >= e->max_used) {
                memset(e->counters, 0, e->cap * sizeof(*e->counters));
                e->used = 0;
                return counter_bump(e, key);
            }
            c->key = key;
            c->attempts = 1;
            e->used++;
            return 0;
        }
    }
}

static void count_in(json_t *map, const char *key)
{
    json_t *v = json_object_get(map, key);
    json_object_set_new(map, key, json_integer(v != NULL ? json_integer_value(v) + 1 : 1));
}

static void count_status(struct mock_engine *e, int status)
{
    char k[16];
    snprintf(k, sizeof(k), "%d", status);
    count_in(e->by_status, k);
}

json_t *mock_engine_stats(const struct mock_engine *e)
{
    return mock_pack("{sIsIsIsIsIsososbsI}", "requests", (json_int_t)e->requests, "completions",
                     (json_int_t)e->completions, "streamed", (json_int_t)e->streamed,
                     "injected_errors", (json_int_t)e->injected_errors, "malformed",
                     (json_int_t)e->malformed, "by_script", json_deep_copy(e->by_script),
                     "by_status", json_deep_copy(e->by_status), "down", e->down, "conversations", (json_int_t)e->used);
}

static void reset(struct mock_engine *e)
{
    e->requests = e->completions = e->streamed = e->injected_errors = e->malformed = 0;
    json_object_clear(e->by_script);
    json_object_clear(e->by_status);
    memset(e->counters, 0, e->cap * sizeof(*e->counters));
    e->used = 0;
    e->down = 0;
    e->down_retry_after = -1;
}

static void reply_json(struct mock_reply *r, int status, json_t *j)
{
    memset(r, 0, sizeof(*r));
    r->status = status;
    r->content_type = "application/json";
    r->retry_after = -1;
    r->body_cut = SIZE_MAX;
    r->events_cut = SIZE_MAX;
    r->body = mock_dumps(j, JSON_COMPACT);
    r->body_len = strlen(r->body);
    json_decref(j);
}

static const char *malformed_name(enum mock_malformed m)
{
    static const char *const names[] = {"", "bad_json", "truncated", "unknown_tool",
                                        "bad_arguments", "empty_choices", "no_content"};
    return names[m];
}

static void control(struct mock_engine *e, const char *method, const char *path, const char *body,
                    size_t body_len, struct mock_reply *r)
{
    int is_post = strcmp(method, "POST") == 0;
    if (strcmp(path, "/_mock/stats") == 0 && strcmp(method, "GET") == 0) {
        reply_json(r, 200, mock_engine_stats(e));
    } else if (strcmp(path, "/_mock/down") == 0 && is_post) {
        e->down = 1;
        e->down_retry_after = -1;
        json_t *j = body_len > 0 ? json_loadb(body, body_len, 0, NULL) : NULL;
        json_t *ra = json_object_get(j, "retry_after");
        if (json_is_integer(ra) && json_integer_value(ra) >= 0 && json_integer_value(ra) <= 86400)
            e->down_retry_after = (int)json_integer_value(ra);
        json_decref(j);
        reply_json(r, 200, mock_pack("{sb}", "down", 1));
    } else if (strcmp(path, "/_mock/up") == 0 && is_post) {
        e->down = 0;
        reply_json(r, 200, mock_pack("{sb}", "down", 0));
    } else if (strcmp(path, "/_mock/reset") == 0 && is_post) {
        reset(e);
        reply_json(r, 200, mock_pack("{sb}", "reset", 1));
    } else {
        mock_reply_error(r, 404, NULL, "unknown_url", "Invalid URL (%s %s)", method, path);
    }
    snprintf(r->log, sizeof(r->log), "%.16s %.200s -> %d", method, path, r->status);
}

static void models(struct mock_engine *e, struct mock_reply *r)
{
    json_t *m = mock_pack("{sssssIss}", "id", e->scripts->model, "object", "model", "created",
                          (json_int_t)0, "owned_by", "troupe-mockllm");
    reply_json(r, 200, mock_pack("{sss[o]}", "object", "list", "data", m));
}

static void completion(struct mock_engine *e, const char *path, const char *body, size_t body_len, int64_t now_s,
                       struct mock_reply *r)
{
    struct mock_request req;
    struct tr_err err = {0};
    const char *kind;

    e->completions++;
    if (e->down) {
        mock_reply_error(r, 503, NULL, NULL, "The server is overloaded or not ready yet.");
        r->retry_after = e->down_retry_after;
        snprintf(r->log, sizeof(r->log), "POST %.64s -> 503 (down)", path);
        return;
    }
    if (mock_request_parse(body, body_len, &req, &err) != 0) {
        mock_reply_error(r, 400, NULL, NULL, "%s", err.msg);
        snprintf(r->log, sizeof(r->log), "POST %.64s -> 400 (%.160s)", path, err.msg);
        return;
    }
    const char *name = req.script[0] != '\0' ? req.script : e->scripts->default_name;
    const struct mock_script *sc = mock_scripts_find(e->scripts, name);
    if (sc == NULL) {
        mock_reply_error(r, 400, NULL, "mock_unknown_script",
                         "troupe-mockllm: no script named \"%s\"", name);
        snprintf(r->log, sizeof(r->log), "POST %.64s -> 400 (no script %s)", path, name);
        mock_request_free(&req);
        return;
    }
    count_in(e->by_script, sc->name);
    if (req.stream)
        e->streamed++;
    size_t idx = mock_script_step_index(sc, req.assistant_msgs);
    const struct mock_step *st = &sc->steps[idx];
    const char *model = req.model != NULL ? req.model : e->scripts->model;
    int fail = st->error.status != 0 &&
               (st->fail_first == 0 || counter_bump(e, req.conv_hash) < st->fail_first);
    if (fail) {
        e->injected_errors++;
        const struct mock_error *er = &st->error;
        if (er->message != NULL)
            mock_reply_error(r, er->status, er->type, er->code, "%s", er->message);
        else
            mock_reply_error(r, er->status, er->type, er->code,
                             "troupe-mockllm: scripted error (script %s, step %zu)", sc->name,
                             idx);
        r->retry_after = er->retry_after;
        r->delay_ms = st->delay_ms;
        kind = "error";
    } else {
        mock_reply_completion(r, st, req.assistant_msgs, &req, model, now_s);
        if (st->malformed != MOCK_MAL_NONE) {
            e->malformed++;
            kind = malformed_name(st->malformed);
        } else {
            kind = st->n_calls > 0 ? "tool_calls" : "final";
        }
    }
    snprintf(r->log, sizeof(r->log), "POST %.64s script=%s step=%zu stream=%d -> %d %s", path,
             sc->name, idx, req.stream, r->status, kind);
    mock_request_free(&req);
}

void mock_engine_handle(struct mock_engine *e, const char *method, const char *path,
                        const char *authorization, const char *body, size_t body_len,
                        int64_t now_s, struct mock_reply *r)
{
    if (strncmp(path, "/_mock/", 7) == 0) {
        control(e, method, path, body, body_len, r);
        return;
    }
    e->requests++;
    int is_completions = strcmp(path, "/v1/chat/completions") == 0 ||
                         strcmp(path, "/chat/completions") == 0;
    int is_models = strcmp(path, "/v1/models") == 0 || strcmp(path, "/models") == 0;
    if (!is_completions && !is_models) {
        mock_reply_error(r, 404, NULL, "unknown_url", "Invalid URL (%s %s)", method, path);
    } else if (e->require_key != NULL &&
               (authorization == NULL || strncmp(authorization, "Bearer ", 7) != 0)) {
        mock_reply_error(r, 401, NULL, NULL,
                         "You didn't provide an API key. You need to provide your API key in an "
                         "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).");
    } else if (e->require_key != NULL && strcmp(authorization + 7, e->require_key) != 0) {
        mock_reply_error(r, 401, NULL, NULL, "Incorrect API key provided.");
    } else if (is_models && strcmp(method, "GET") == 0) {
        models(e, r);
    } else if (is_completions && strcmp(method, "POST") == 0) {
        completion(e, path, body, body_len, now_s, r);
        count_status(e, r->status);
        return;
    } else {
        mock_reply_error(r, 405, NULL, "method_not_allowed", "Method %s not allowed on %s",
                         method, path);
    }
    count_status(e, r->status);
    snprintf(r->log, sizeof(r->log), "%.16s %.200s -> %d", method, path, r->status);
}
