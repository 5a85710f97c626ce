/* Chat Completions requests: what the mock needs to know about one, and the
 * template substitution that lets a scripted answer echo the conversation. */
#include <stdio.h>
#include <string.h>

#include "tools/mockllm/mockllm.h"

#define MARKER "[mock:"

/* A message's text: a string content, or the "text" parts of an array
 * content joined. NULL when it has neither. Caller frees. */
static char *message_text(json_t *msg)
{
    json_t *c = json_object_get(msg, "content");
    if (json_is_string(c))
        return tr_strdup(json_string_value(c));
    if (!json_is_array(c))
        return NULL;
    size_t len = 0;
    size_t i;
    json_t *part;
    json_array_foreach(c, i, part) {
        const char *t = json_string_value(json_object_get(part, "text"));
        if (t != NULL)
            len += strlen(t);
    }
    char *out = tr_malloc(len + 1);
    size_t at = 0;
    json_array_foreach(c, i, part) {
        const char *t = json_string_value(json_object_get(part, "text"));
        if (t != NULL) {
            memcpy(out + at, t, strlen(t));
            at += strlen(t);
        }
    }
    out[at] = '\0';
    return out;
}

/* Copy the NAME of the first "[mock:NAME]" in text into out; 0 if found. */
static int find_marker(const char *text, char out[MOCK_NAME_MAX])
{
    const char *p = strstr(text, MARKER);
    while (p != NULL) {
        const char *name = p + strlen(MARKER);
        const char *end = strchr(name, ']');
        size_t n = end != NULL ? (size_t)(end - name) : 0;
        if (n > 0 && n < MOCK_NAME_MAX) {
            memcpy(out, name, n);
            out[n] = '\0';
            return 0;
        }
        p = strstr(name, MARKER);
    }
    return -1;
}

int mock_request_parse(const char *body, size_t len, struct mock_request *req, struct tr_err *err)
{
    json_error_t jerr;

    memset(req, 0, sizeof(*req));
    req->root = json_loadb(body, len, 0, &jerr);
    if (req->root == NULL)
        return tr_err_set(err, TR_EINVAL, "We could not parse the JSON body of your request. (%s)",
                          jerr.text);
    if (!json_is_object(req->root)) {
        tr_err_set(err, TR_EINVAL, "The request body must be a JSON object.");
        goto err_after_root;
    }
    json_t *msgs = json_object_get(req->root, "messages");
    if (!json_is_array(msgs) || json_array_size(msgs) == 0) {
        tr_err_set(err, TR_EINVAL, "'messages' must be a non-empty array.");
        goto err_after_root;
    }
    json_t *model = json_object_get(req->root, "model");
    if (model != NULL && !json_is_string(model)) {
        tr_err_set(err, TR_EINVAL, "'model' must be a string.");
        goto err_after_root;
    }
    req->model = json_string_value(model);
    req->stream = json_is_true(json_object_get(req->root, "stream"));
    req->include_usage =
        json_is_true(json_object_get(json_object_get(req->root, "stream_options"), "include_usage"));

    size_t i;
    json_t *m;
    json_array_foreach(msgs, i, m) {
        const char *role = json_string_value(json_object_get(m, "role"));
        if (!json_is_object(m) || role == NULL) {
            tr_err_set(err, TR_EINVAL, "messages[%zu] must be an object with a 'role'.", i);
            goto err_after_root;
        }
        if (strcmp(role, "assistant") == 0) {
            req->assistant_msgs++;
        } else if (strcmp(role, "system") == 0 || strcmp(role, "developer") == 0) {
            char *t = message_text(m);
            if (t != NULL && req->script[0] == '\0')
                find_marker(t, req->script);
            tr_free(t);
        } else if (strcmp(role, "user") == 0) {
            if (req->user == NULL)
                req->user = message_text(m);
        } else if (strcmp(role, "tool") == 0) {
            char *t = message_text(m);
            tr_free(req->last_tool_result);
            req->last_tool_result = t != NULL ? t : tr_strdup("");
        }
    }
    /* Canonical form: key order must not change a conversation's identity. */
    char *canon = mock_dumps(msgs, JSON_COMPACT | JSON_SORT_KEYS);
    req->prompt_chars = strlen(canon);
    req->conv_hash = mock_fnv1a(canon, req->prompt_chars, MOCK_FNV_SEED);
    tr_free(canon);
    return 0;

err_after_root:
    mock_request_free(req);
    return TR_EINVAL;
}

void mock_request_free(struct mock_request *req)
{
    json_decref(req->root);
    tr_free(req->user);
    tr_free(req->last_tool_result);
    memset(req, 0, sizeof(*req));
}

struct strbuf {
    char *p;
    size_t len, cap;
};

static void sb_add(struct strbuf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->p = tr_realloc(b->p, b->cap);
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

/* Append val, escaped as the inside of a JSON string literal when asked. */
static void sb_add_value(struct strbuf *b, const char *val, int escape)
{
    if (!escape) {
        sb_add(b, val, strlen(val));
        return;
    }
    json_t *j = json_string(val);
    char *quoted = j != NULL ? mock_dumps(j, JSON_ENCODE_ANY) : tr_strdup("\"\"");
    json_decref(j);
    sb_add(b, quoted + 1, strlen(quoted) - 2);
    tr_free(quoted);
}

static char *template(const char *tmpl, const struct mock_request *req, size_t step,
                      const char *model, int escape)
{
    struct strbuf b = {0};
    char num[32];

    sb_add(&b, "", 0);
    const char *p = tmpl;
    while (*p != '\0') {
        const char *open = strstr(p, "{{");
        if (open == NULL) {
            sb_add(&b, p, strlen(p));
            break;
        }
        sb_add(&b, p, (size_t)(open - p));
        const char *val = NULL;
        size_t skip = 0;
        if (strncmp(open, "{{step}}", 8) == 0) {
            snprintf(num, sizeof(num), "%zu", step);
            val = num;
            skip = 8;
        } else if (strncmp(open, "{{user}}", 8) == 0) {
            val = req->user != NULL ? req->user : "";
            skip = 8;
        } else if (strncmp(open, "{{last_tool_result}}", 20) == 0) {
            val = req->last_tool_result != NULL ? req->last_tool_result : "";
            skip = 20;
        } else if (strncmp(open, "{{model}}", 9) == 0) {
            val = model != NULL ? model : "";
            skip = 9;
        }
        if (val != NULL) {
            sb_add_value(&b, val, escape);
            p = open + skip;
        } else {
            sb_add(&b, open, 2);
            p = open + 2;
        }
    }
    return b.p;
}

char *mock_template(const char *tmpl, const struct mock_request *req, size_t step, const char *model)
{
    return template(tmpl, req, step, model, 0);
}

char *mock_template_json(const char *tmpl, const struct mock_request *req, size_t step,
                         const char *model)
{
    return template(tmpl, req, step, model, 1);
}
