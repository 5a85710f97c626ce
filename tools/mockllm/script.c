/* Script documents: parse, validate, look up, and pick a step.
 *
 * A document is checked whole when it is loaded, so a typo in a test's script
 * fails at startup with the script and step named, not at the request that
 * reaches the bad step. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/mockllm/mockllm.h"

#define SCRIPT_FILE_MAX (16u << 20)

static const struct {
    const char *name;
    enum mock_malformed kind;
} malformed_names[] = {
    {"bad_json", MOCK_MAL_BAD_JSON},
    {"truncated", MOCK_MAL_TRUNCATED},
    {"unknown_tool", MOCK_MAL_UNKNOWN_TOOL},
    {"bad_arguments", MOCK_MAL_BAD_ARGUMENTS},
    {"empty_choices", MOCK_MAL_EMPTY_CHOICES},
    {"no_content", MOCK_MAL_NO_CONTENT},
};

static const char *const step_keys[] = {
    "content", "tool_calls", "finish_reason", "error", "fail_first", "malformed", "delay_ms",
    "chunk_delay_ms", "pieces", "repeat", "usage", "comment",
};

uint64_t mock_fnv1a(const void *p, size_t n, uint64_t h)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

json_t *mock_pack(const char *fmt, ...)
{
    json_error_t jerr;
    va_list ap;

    va_start(ap, fmt);
    json_t *j = json_vpack_ex(&jerr, 0, fmt, ap);
    va_end(ap);
    if (j == NULL) {
        tr_log(TR_LOG_ERROR, "mockllm: json_pack \"%s\": %s", fmt, jerr.text);
        abort();
    }
    return j;
}

char *mock_dumps(const json_t *j, size_t flags)
{
    char *s = json_dumps(j, flags);
    if (s == NULL) {
        tr_log(TR_LOG_ERROR, "mockllm: json_dumps failed (out of memory)");
        abort();
    }
    char *copy = tr_strdup(s);
    free(s);
    return copy;
}

/* An optional non-negative integer member. */
static int get_uint(json_t *obj, const char *key, uint64_t max, uint64_t *out, struct tr_err *err)
{
    json_t *v = json_object_get(obj, key);
    if (v == NULL || json_is_null(v))
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 0 || (uint64_t)json_integer_value(v) > max)
        return tr_err_set(err, TR_EINVAL, "\"%s\" must be an integer in 0..%llu", key,
                          (unsigned long long)max);
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

static int get_str(json_t *obj, const char *key, char **out, struct tr_err *err)
{
    json_t *v = json_object_get(obj, key);
    if (v == NULL || json_is_null(v))
        return 0;
    if (!json_is_string(v))
        return tr_err_set(err, TR_EINVAL, "\"%s\" must be a string", key);
    *out = tr_strdup(json_string_value(v));
    return 0;
}

static int parse_error(json_t *v, struct mock_error *e, struct tr_err *err)
{
    uint64_t status = 500, retry = 0;
    if (!json_is_object(v))
        return tr_err_set(err, TR_EINVAL, "\"error\" must be an object");
    int rv = get_uint(v, "status", 599, &status, err);
    if (rv == 0 && status < 400)
        rv = tr_err_set(err, TR_EINVAL, "\"error.status\" must be 400..599");
    if (rv == 0)
        rv = get_uint(v, "retry_after", 86400, &retry, err);
    if (rv == 0)
        rv = get_str(v, "message", &e->message, err);
    if (rv == 0)
        rv = get_str(v, "type", &e->type, err);
    if (rv == 0)
        rv = get_str(v, "code", &e->code, err);
    if (rv != 0)
        return tr_err_wrap(err, "error");
    e->status = (int)status;
    e->retry_after = json_object_get(v, "retry_after") != NULL ? (int)retry : -1;
    return 0;
}

static int parse_calls(json_t *v, struct mock_step *st, struct tr_err *err)
{
    if (!json_is_array(v) || json_array_size(v) == 0 || json_array_size(v) > 128)
        return tr_err_set(err, TR_EINVAL, "\"tool_calls\" must be an array of 1..128 calls");
    st->n_calls = json_array_size(v);
    st->calls = tr_calloc(st->n_calls, sizeof(*st->calls));
    for (size_t i = 0; i < st->n_calls; i++) {
        json_t *c = json_array_get(v, i);
        struct mock_tool_call *call = &st->calls[i];
        if (!json_is_object(c) || !json_is_string(json_object_get(c, "name")))
            return tr_err_set(err, TR_EINVAL, "tool_calls[%zu] needs a \"name\" string", i);
        call->name = tr_strdup(json_string_value(json_object_get(c, "name")));
        if (get_str(c, "id", &call->id, err) != 0)
            return tr_err_wrap(err, "tool_calls[%zu]", i);
        json_t *a = json_object_get(c, "arguments");
        if (a == NULL || json_is_null(a))
            call->args = json_object();
        else if (json_is_object(a) || json_is_string(a))
            call->args = json_incref(a);
        else
            return tr_err_set(err, TR_EINVAL,
                              "tool_calls[%zu].arguments must be an object or a string", i);
    }
    return 0;
}

static int parse_usage(json_t *v, struct mock_step *st, struct tr_err *err)
{
    uint64_t p = 0, c = 0;
    if (!json_is_object(v))
        return tr_err_set(err, TR_EINVAL, "\"usage\" must be an object");
    if (get_uint(v, "prompt_tokens", INT32_MAX, &p, err) != 0 ||
        get_uint(v, "completion_tokens", INT32_MAX, &c, err) != 0)
        return tr_err_wrap(err, "usage");
    st->has_usage = 1;
    st->usage_prompt = json_object_get(v, "prompt_tokens") != NULL ? (int64_t)p : -1;
    st->usage_completion = json_object_get(v, "completion_tokens") != NULL ? (int64_t)c : -1;
    return 0;
}

static int parse_step(json_t *v, struct mock_step *st, struct tr_err *err)
{
    uint64_t n;
    int rv;

    if (!json_is_object(v))
        return tr_err_set(err, TR_EINVAL, "a step must be an object");
    const char *key;
    json_t *member;
    json_object_foreach(v, key, member) {
        size_t k = 0;
        while (k < sizeof(step_keys) / sizeof(step_keys[0]) && strcmp(step_keys[k], key) != 0)
            k++;
        if (k == sizeof(step_keys) / sizeof(step_keys[0]))
            return tr_err_set(err, TR_EINVAL, "unknown key \"%s\"", key);
    }
    st->error.retry_after = -1;
    st->usage_prompt = st->usage_completion = -1;
    if ((rv = get_str(v, "content", &st->content, err)) != 0 ||
        (rv = get_str(v, "finish_reason", &st->finish_reason, err)) != 0)
        return rv;
    json_t *calls = json_object_get(v, "tool_calls");
    if (calls != NULL && (rv = parse_calls(calls, st, err)) != 0)
        return rv;
    json_t *e = json_object_get(v, "error");
    if (e != NULL && (rv = parse_error(e, &st->error, err)) != 0)
        return rv;
    n = 0;
    if ((rv = get_uint(v, "fail_first", 1000000, &n, err)) != 0)
        return rv;
    st->fail_first = (uint32_t)n;
    if ((rv = get_uint(v, "delay_ms", 600000, &st->delay_ms, err)) != 0 ||
        (rv = get_uint(v, "chunk_delay_ms", 60000, &st->chunk_delay_ms, err)) != 0)
        return rv;
    n = 0;
    if ((rv = get_uint(v, "pieces", 1000, &n, err)) != 0)
        return rv;
    st->pieces = (int)n;
    json_t *rep = json_object_get(v, "repeat");
    if (rep != NULL && !json_is_boolean(rep))
        return tr_err_set(err, TR_EINVAL, "\"repeat\" must be true or false");
    st->repeat = rep != NULL && json_is_true(rep);
    json_t *u = json_object_get(v, "usage");
    if (u != NULL && (rv = parse_usage(u, st, err)) != 0)
        return rv;
    json_t *m = json_object_get(v, "malformed");
    if (m != NULL) {
        const char *s = json_string_value(m);
        size_t k = 0;
        while (s != NULL && k < sizeof(malformed_names) / sizeof(malformed_names[0]) &&
               strcmp(malformed_names[k].name, s) != 0)
            k++;
        if (s == NULL || k == sizeof(malformed_names) / sizeof(malformed_names[0]))
            return tr_err_set(err, TR_EINVAL,
                              "\"malformed\" must be one of bad_json, truncated, unknown_tool, "
                              "bad_arguments, empty_choices, no_content");
        st->malformed = malformed_names[k].kind;
    }
    if (st->fail_first > 0 && st->error.status == 0) {
        st->error.status = 500;
        st->error.retry_after = -1;
    }
    return 0;
}

static int parse_script(const char *name, json_t *v, struct mock_script *sc, struct tr_err *err)
{
    sc->name = tr_strdup(name);
    if (strlen(name) == 0 || strlen(name) >= MOCK_NAME_MAX)
        return tr_err_set(err, TR_EINVAL, "script name must be 1..%d bytes", MOCK_NAME_MAX - 1);
    if (!json_is_array(v) || json_array_size(v) == 0)
        return tr_err_set(err, TR_EINVAL, "script \"%s\" must be a non-empty array of steps",
                          name);
    sc->n_steps = json_array_size(v);
    sc->steps = tr_calloc(sc->n_steps, sizeof(*sc->steps));
    for (size_t i = 0; i < sc->n_steps; i++) {
        if (parse_step(json_array_get(v, i), &sc->steps[i], err) != 0)
            return tr_err_wrap(err, "script \"%s\" step %zu", name, i);
    }
    return 0;
}

int mock_scripts_parse(const char *text, size_t len, struct mock_scripts **out, struct tr_err *err)
{
    json_error_t jerr;
    struct tr_err local;

    if (err == NULL)
        err = &local;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL)
        return tr_err_set(err, TR_EINVAL, "line %d column %d: %s", jerr.line, jerr.column,
                          jerr.text);

    struct mock_scripts *s = tr_calloc(1, sizeof(*s));
    int rv = 0;
    json_t *scripts = json_object_get(root, "scripts");
    if (!json_is_object(root) || !json_is_object(scripts) || json_object_size(scripts) == 0) {
        rv = tr_err_set(err, TR_EINVAL, "the document needs a non-empty \"scripts\" object");
        goto err_after_alloc;
    }
    if ((rv = get_str(root, "default", &s->default_name, err)) != 0 ||
        (rv = get_str(root, "model", &s->model, err)) != 0)
        goto err_after_alloc;
    if (s->model == NULL)
        s->model = tr_strdup("mock-gpt");
    s->scripts = tr_calloc(json_object_size(scripts), sizeof(*s->scripts));
    const char *name;
    json_t *v;
    json_object_foreach(scripts, name, v) {
        rv = parse_script(name, v, &s->scripts[s->n_scripts++], err);
        if (rv != 0)
            goto err_after_alloc;
    }
    if (s->default_name == NULL)
        s->default_name = tr_strdup(mock_scripts_find(s, "default") != NULL
                                        ? "default"
                                        : s->scripts[0].name);
    if (mock_scripts_find(s, s->default_name) == NULL) {
        rv = tr_err_set(err, TR_EINVAL, "\"default\" names no script (\"%s\")", s->default_name);
        goto err_after_alloc;
    }
    json_decref(root);
    *out = s;
    return 0;

err_after_alloc:
    mock_scripts_free(s);
    json_decref(root);
    return rv;
}

int mock_scripts_load(const char *path, struct mock_scripts **out, struct tr_err *err)
{
    struct tr_err local;

    if (err == NULL)
        err = &local;
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return tr_err_set(err, TR_EIO, "open %s: %s", path, strerror(errno));
    char *buf = tr_malloc(SCRIPT_FILE_MAX + 1);
    size_t n = fread(buf, 1, SCRIPT_FILE_MAX + 1, f);
    int rv = 0;
    if (ferror(f))
        rv = tr_err_set(err, TR_EIO, "read %s: %s", path, strerror(errno));
    else if (n > SCRIPT_FILE_MAX)
        rv = tr_err_set(err, TR_ETOOBIG, "%s: larger than %u bytes", path, SCRIPT_FILE_MAX);
    else if ((rv = mock_scripts_parse(buf, n, out, err)) != 0)
        tr_err_wrap(err, "%s", path);
    tr_free(buf);
    fclose(f);
    return rv;
}

static void free_step(struct mock_step *st)
{
    tr_free(st->content);
    tr_free(st->finish_reason);
    for (size_t i = 0; i < st->n_calls; i++) {
        tr_free(st->calls[i].id);
        tr_free(st->calls[i].name);
        json_decref(st->calls[i].args);
    }
    tr_free(st->calls);
    tr_free(st->error.message);
    tr_free(st->error.type);
    tr_free(st->error.code);
}

void mock_scripts_free(struct mock_scripts *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->n_scripts; i++) {
        struct mock_script *sc = &s->scripts[i];
        for (size_t k = 0; sc->steps != NULL && k < sc->n_steps; k++)
            free_step(&sc->steps[k]);
        tr_free(sc->steps);
        tr_free(sc->name);
    }
    tr_free(s->scripts);
    tr_free(s->default_name);
    tr_free(s->model);
    tr_free(s);
}

const struct mock_script *mock_scripts_find(const struct mock_scripts *s, const char *name)
{
    for (size_t i = 0; i < s->n_scripts; i++) {
        if (strcmp(s->scripts[i].name, name) == 0)
            return &s->scripts[i];
    }
    return NULL;
}

size_t mock_script_step_index(const struct mock_script *sc, size_t assistant_msgs)
{
    size_t last = sc->n_steps - 1;
    size_t idx = assistant_msgs < last ? assistant_msgs : last;
    for (size_t i = 0; i < idx; i++) {
        if (sc->steps[i].repeat)
            return i;
    }
    return idx;
}
