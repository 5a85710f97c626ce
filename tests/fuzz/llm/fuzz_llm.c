/* libFuzzer target: the parsers of what the LLM provider and tool
 * configuration send in (actors/llm_wire.c, actors/llm_models.c,
 * actors/tool_http.c).
 *
 * data[0] % 8 picks the parser that gets data[1..] (seeds start with the
 * ASCII digit of their mode):
 *   0  tr_llm_parse_response: a Chat Completions body
 *   1  tr_llm_error_message: an error body, into buffers of several sizes
 *   2  tr_llm_parse_retry_after / _ms: a header value (NUL-terminated)
 *   3  tr_llm_call_from_json, then tr_llm_call_parse of the message it built
 *   4  tr_llm_call_parse: a raw TR_MSG_LLM_CALL payload
 *   5  tr_llm_models_parse, then find and cost on the names it holds
 *   6  tool_http_cfg_parse of the bytes as JSON, then tool_http_decide
 *   7  tool_host_normalize, tool_host_allowed, tool_url_host on a string
 * Checked: a success yields consistent output (strings terminated, lengths
 * within bounds, counts matching an independent parse, cost exact); a
 * failure carries a non-empty error and leaves nothing allocated. The bytes
 * are copied into a malloc'd buffer of exactly their size so that ASan sees
 * any over-read. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "actors/llm.h"
#include "actors/tool.h"
#include "tests/fuzz/fuzz.h"

/* A JSON string value is NUL-terminated at its length. */
static void check_jstr(const json_t *s)
{
    CHECK(json_is_string(s));
    CHECK(json_string_value(s)[json_string_length(s)] == '\0');
}

static void check_failed(int rv, int code, const struct tr_err *err)
{
    CHECK(rv == code);
    CHECK(err->code == code);
    CHECK(memchr(err->msg, '\0', sizeof err->msg) != NULL);
    CHECK(err->msg[0] != '\0');
}

/* ---- 0: response ---------------------------------------------------------- */

static void fuzz_response(const char *p, size_t n)
{
    struct tr_llm_response r;
    struct tr_err err = {0};
    int rv = tr_llm_parse_response(p, n, &r, &err);

    if (rv != 0) {
        check_failed(rv, TR_EPROTO, &err);
        CHECK(r.root == NULL && r.content == NULL && r.tool_calls == NULL);
        return;
    }
    /* The same body parsed on its own, to compare against. */
    json_t *root = json_loadb(p, n, 0, NULL);
    CHECK(root != NULL && json_is_object(r.root));
    json_t *msg = json_object_get(json_array_get(json_object_get(root, "choices"), 0), "message");
    CHECK(json_is_object(msg));

    CHECK(json_is_string(r.content) || json_is_null(r.content));
    json_t *c = json_object_get(msg, "content");
    if (json_is_string(c)) {
        check_jstr(r.content);
        CHECK(json_equal(c, r.content));
    } else if (json_is_array(c)) {
        size_t i, total = 0;
        json_t *part;
        json_array_foreach(c, i, part) {
            json_t *t = json_object_get(part, "text");
            if (json_is_string(t))
                total += json_string_length(t);
        }
        check_jstr(r.content);
        CHECK(json_string_length(r.content) == total);
    } else {
        CHECK(json_is_null(r.content));
    }

    CHECK(json_is_array(r.tool_calls));
    CHECK(json_array_size(r.tool_calls) <= TR_LLM_MAX_TOOL_CALLS);
    json_t *calls = json_object_get(msg, "tool_calls");
    CHECK(json_array_size(r.tool_calls) == (json_is_array(calls) ? json_array_size(calls) : 0));
    size_t i;
    json_t *tc;
    json_array_foreach(r.tool_calls, i, tc) {
        json_t *id = json_object_get(tc, "id"), *name = json_object_get(tc, "name"),
               *args = json_object_get(tc, "arguments");
        CHECK(json_object_size(tc) == 3);
        check_jstr(id);
        check_jstr(name);
        check_jstr(args);
        CHECK(json_string_length(id) > 0 && json_string_length(name) > 0);
        json_t *fn = json_object_get(json_array_get(calls, i), "function");
        CHECK(json_equal(name, json_object_get(fn, "name")));
        CHECK(json_equal(args, json_object_get(fn, "arguments")));
    }

    CHECK(r.finish_reason != NULL && r.finish_reason[0] != '\0');
    json_t *fr = json_object_get(json_array_get(json_object_get(root, "choices"), 0), "finish_reason");
    if (json_is_string(fr))
        CHECK(strcmp(r.finish_reason, json_string_value(fr)) == 0);
    if (r.refusal != NULL)
        CHECK(strcmp(r.refusal, json_string_value(json_object_get(msg, "refusal"))) == 0);
    if (json_is_null(r.content) && json_array_size(r.tool_calls) == 0 && r.refusal == NULL)
        CHECK(strcmp(r.finish_reason, "stop") != 0 && strcmp(r.finish_reason, "tool_calls") != 0);
    if (r.model != NULL) {
        CHECK(r.model[0] != '\0');
        CHECK(strcmp(r.model, json_string_value(json_object_get(root, "model"))) == 0);
    }
    CHECK(r.id != NULL);
    (void)strlen(r.id);

    json_t *usage = json_object_get(root, "usage");
    json_t *pt = json_object_get(usage, "prompt_tokens"), *ct = json_object_get(usage, "completion_tokens");
    CHECK(r.prompt_tokens == (json_is_integer(pt) ? (uint64_t)json_integer_value(pt) : 0));
    CHECK(r.completion_tokens == (json_is_integer(ct) ? (uint64_t)json_integer_value(ct) : 0));
    CHECK(r.prompt_tokens <= INT64_MAX && r.completion_tokens <= INT64_MAX);

    /* What the actor does next: price the call with the built-in table. */
    int unknown = -1;
    uint64_t cost = tr_llm_models_cost(tr_llm_models_builtin(), r.model, r.prompt_tokens, r.completion_tokens,
                                       &unknown);
    CHECK(unknown == 0 || unknown == 1);
    if (unknown)
        CHECK(cost == 0);

    json_decref(root);
    tr_llm_response_free(&r);
    CHECK(r.root == NULL && r.content == NULL && r.tool_calls == NULL);
}

/* ---- 1: error message ----------------------------------------------------- */

static void fuzz_error_message(const char *p, size_t n)
{
    static const size_t caps[] = {1, 2, 7, 64, 4096};
    char *big = NULL;
    size_t big_len = 0;
    char zero = 'x';

    tr_llm_error_message(p, n, &zero, 0); /* cap 0: nothing written */
    CHECK(zero == 'x');
    for (size_t k = sizeof caps / sizeof caps[0]; k-- > 0;) {
        char *buf = malloc(caps[k]);
        memset(buf, 0xa5, caps[k]);
        tr_llm_error_message(p, n, buf, caps[k]);
        CHECK(memchr(buf, '\0', caps[k]) != NULL);
        size_t len = strlen(buf);
        if (big == NULL) {
            big = buf;
            big_len = len;
            continue;
        }
        /* A smaller buffer holds the same message, cut at its size. */
        CHECK(len == (big_len < caps[k] - 1 ? big_len : caps[k] - 1));
        CHECK(memcmp(buf, big, len) == 0);
        free(buf);
    }
    /* The message is the one the body carries. */
    json_t *root = json_loadb(p, n, 0, NULL);
    json_t *e = json_object_get(root, "error");
    json_t *m = json_is_object(e) ? json_object_get(e, "message") : e;
    if (json_is_string(m))
        CHECK(strncmp(big, json_string_value(m), 4095) == 0);
    else
        CHECK(big_len == 0);
    json_decref(root);
    free(big);
}

/* ---- 2: Retry-After ------------------------------------------------------- */

#define YEAR_10000_MS 253402300800000ull

static void retry_date_roundtrip(uint64_t at_ms, const char *fmt)
{
    time_t t = (time_t)(at_ms / 1000);
    struct tm tm;
    char s[64];
    uint64_t again = 1;

    CHECK(gmtime_r(&t, &tm) != NULL);
    CHECK(strftime(s, sizeof s, fmt, &tm) > 0);
    CHECK(tr_llm_parse_retry_after(s, 0, &again) == 0);
    CHECK(again == at_ms);
}

static void fuzz_retry_after(const char *s)
{
    uint64_t ms = 7, ra = 7, ra2 = 7;
    int ms_ok = tr_llm_parse_retry_after_ms(s, &ms) == 0;
    int ra_ok = tr_llm_parse_retry_after(s, 0, &ra) == 0;

    if (ms_ok) {
        /* Decimal seconds: ceil(x * 1000) ms, the same number as ceil(x) ms
         * after scaling, whatever the clock says. */
        CHECK(ra_ok);
        CHECK(ms <= 1000000001ull);
        CHECK(ra <= 1000000000000ull + 1000);
        CHECK((ra + 999) / 1000 == ms);
        CHECK(tr_llm_parse_retry_after(s, UINT64_MAX, &ra2) == 0 && ra2 == ra);
        return;
    }
    if (!ra_ok)
        return;
    /* An HTTP-date: whole seconds from 1970 to 9999, relative to now. */
    CHECK(ra % 1000 == 0 && ra < YEAR_10000_MS);
    const uint64_t nows[] = {ra - (ra > 1500 ? 1500 : ra), ra, ra + 1, UINT64_MAX};
    for (size_t i = 0; i < sizeof nows / sizeof nows[0]; i++) {
        CHECK(tr_llm_parse_retry_after(s, nows[i], &ra2) == 0);
        CHECK(ra2 == (ra > nows[i] ? ra - nows[i] : 0));
    }
    /* The same instant written by strftime in every form parses back. */
    retry_date_roundtrip(ra, "%a, %d %b %Y %H:%M:%S GMT");
    retry_date_roundtrip(ra, "%a %b %e %H:%M:%S %Y");
    if (ra < 3155760000000ull) /* 2070: two-digit years stop there */
        retry_date_roundtrip(ra, "%A, %d-%b-%y %H:%M:%S GMT");
}

/* ---- 3, 4: TR_MSG_LLM_CALL ------------------------------------------------ */

static int within(const void *base, size_t len, const char *p, size_t n)
{
    const char *b = base;
    return p >= b && n <= len && (size_t)(p - b) <= len - n;
}

/* A view that tr_llm_call_parse accepted describes data exactly. */
static void check_view(const void *data, size_t len, const struct tr_llm_call_view *cv)
{
    CHECK(len <= TR_LLM_MAX_CALL_BYTES);
    CHECK(within(data, len, cv->model, cv->model_len));
    CHECK(within(data, len, cv->tenant, cv->tenant_len));
    CHECK(within(data, len, cv->run_id, cv->run_id_len) || (cv->run_id_len == 1 && cv->run_id[0] == '?'));
    CHECK(within(data, len, cv->body, cv->body_len));
    CHECK(cv->model_len >= 1 && cv->model_len <= TR_LLM_CALL_MODEL_MAX);
    CHECK(cv->tenant_len <= TR_LLM_CALL_TENANT_MAX && cv->run_id_len <= TR_LLM_CALL_RUN_ID_MAX);
    CHECK(cv->model == (const char *)data + sizeof(struct tr_llm_call));
    CHECK(cv->tenant == cv->model + cv->model_len);
    CHECK(cv->body + cv->body_len == (const char *)data + len);
    CHECK(sizeof(struct tr_llm_call) + cv->model_len + cv->tenant_len + cv->body_len +
              (cv->run_id == cv->tenant + cv->tenant_len ? cv->run_id_len : 0) ==
          len);
    for (size_t i = 0; i < cv->model_len; i++)
        CHECK((unsigned char)cv->model[i] >= 0x20 && cv->model[i] != 0x7f);
    CHECK(cv->body_len >= 2 && cv->body[0] == '{' && cv->body[cv->body_len - 1] == '}');
}

static void fuzz_call_from_json(const char *p, size_t n)
{
    struct tr_msg *m = (struct tr_msg *)&m;
    struct tr_err err = {0};
    int rv = tr_llm_call_from_json(p, n, &m, &err);

    if (rv != 0) {
        check_failed(rv, TR_EINVAL, &err);
        CHECK(m == NULL);
        return;
    }
    CHECK(m != NULL && m->type == TR_MSG_LLM_CALL);
    struct tr_llm_call_view cv;
    rv = tr_llm_call_parse(m->data, m->len, &cv, &err);
    if (rv != 0)
        fprintf(stderr, "fuzz_llm: from_json built a call that does not parse: %s\n", err.msg);
    CHECK(rv == 0);
    check_view(m->data, m->len, &cv);

    json_t *in = json_loadb(p, n, 0, NULL);
    json_t *body = json_loadb(cv.body, cv.body_len, 0, NULL);
    CHECK(in != NULL && json_is_object(body));
    json_t *model = json_object_get(in, "model");
    CHECK(cv.model_len == json_string_length(model));
    CHECK(memcmp(cv.model, json_string_value(model), cv.model_len) == 0);
    CHECK(json_equal(json_object_get(body, "model"), model));
    CHECK(json_equal(json_object_get(body, "messages"), json_object_get(in, "messages")));
    CHECK(json_is_false(json_object_get(body, "stream")));
    json_t *tools = json_object_get(in, "tools");
    if (json_array_size(tools) > 0) {
        CHECK(json_equal(json_object_get(body, "tools"), tools));
        CHECK(strcmp(json_string_value(json_object_get(body, "tool_choice")), "auto") == 0);
    } else {
        CHECK(json_object_get(body, "tools") == NULL && json_object_get(body, "tool_choice") == NULL);
    }
    json_t *temp = json_object_get(in, "temperature");
    CHECK(json_is_number(temp) ? json_equal(json_object_get(body, "temperature"), temp)
                               : json_object_get(body, "temperature") == NULL);
    const char *tenant = json_string_value(json_object_get(in, "tenant"));
    const char *run_id = json_string_value(json_object_get(in, "run_id"));
    CHECK(cv.tenant_len == (tenant ? strnlen(tenant, TR_LLM_CALL_TENANT_MAX) : 0));
    CHECK(cv.tenant_len == 0 || memcmp(cv.tenant, tenant, cv.tenant_len) == 0);
    if (run_id != NULL && run_id[0] != '\0') {
        CHECK(cv.run_id_len == strnlen(run_id, TR_LLM_CALL_RUN_ID_MAX));
        CHECK(memcmp(cv.run_id, run_id, cv.run_id_len) == 0);
    }
    json_t *step = json_object_get(in, "step");
    CHECK(cv.step == (json_is_integer(step) ? (uint32_t)json_integer_value(step) : 0));
    json_decref(body);
    json_decref(in);
    tr_msg_free(m);
}

static void fuzz_call_parse(const char *p, size_t n)
{
    struct tr_llm_call_view cv;
    struct tr_err err = {0};
    int rv = tr_llm_call_parse(p, n, &cv, &err);

    CHECK(within(p, n, cv.run_id, cv.run_id_len) || (cv.run_id_len == 1 && cv.run_id[0] == '?'));
    if (rv != 0) {
        check_failed(rv, TR_EINVAL, &err);
        return;
    }
    check_view(p, n, &cv);
    /* Built again from its parts, a call without NULs in its names and with
     * a zero reserved field is the same bytes. */
    struct tr_llm_call h;
    memcpy(&h, p, sizeof h);
    if (h.reserved_ != 0 || memchr(cv.tenant, '\0', cv.tenant_len) || memchr(cv.run_id, '\0', cv.run_id_len))
        return;
    char model[TR_LLM_CALL_MODEL_MAX + 1], tenant[TR_LLM_CALL_TENANT_MAX + 1], run_id[TR_LLM_CALL_RUN_ID_MAX + 1];
    memcpy(model, cv.model, cv.model_len);
    model[cv.model_len] = '\0';
    memcpy(tenant, cv.tenant, cv.tenant_len);
    tenant[cv.tenant_len] = '\0';
    size_t rl = h.run_id_len > 0 ? cv.run_id_len : 0; /* else the view says "?" */
    memcpy(run_id, cv.run_id, rl);
    run_id[rl] = '\0';
    struct tr_msg *m = tr_llm_call_msg(model, tenant, run_id, cv.step, cv.body, cv.body_len);
    CHECK(m->len == n && memcmp(m->data, p, n) == 0);
    tr_msg_free(m);
}

/* ---- 5: models file ------------------------------------------------------- */

static void check_cost(struct tr_llm_models *m, const char *name, const struct tr_llm_model *e)
{
    static const uint64_t tokens[] = {0, 1, 999999, 1000000, 1234567891ull, 18000000000000ull, UINT64_MAX};
    const size_t nt = sizeof tokens / sizeof tokens[0];

    for (size_t i = 0; i < nt; i++) {
        uint64_t pt = tokens[i], ct = tokens[(i * 3 + 1) % nt];
        unsigned __int128 exact = (unsigned __int128)pt * e->prompt_micro + (unsigned __int128)ct * e->completion_micro;
        unsigned __int128 want = (exact + 999999) / 1000000;
        int unknown = -1;
        uint64_t got = tr_llm_models_cost(m, name, pt, ct, &unknown);
        CHECK(unknown == 0);
        CHECK(got == (want > UINT64_MAX ? UINT64_MAX : (uint64_t)want));
    }
}

/* tr_llm_models_find(q): exact, else the longest entry that is a prefix of
 * q followed by "-<digit>". */
static void check_find(struct tr_llm_models *m, const char *q)
{
    const struct tr_llm_model *e = tr_llm_models_find(m, q);
    int unknown = -1;

    if (e == NULL) {
        CHECK(tr_llm_models_cost(m, q, 1000, 1000, &unknown) == 0 && unknown == 1);
        return;
    }
    size_t el = strlen(e->name);
    CHECK(el >= 1 && el <= TR_LLM_MODEL_NAME_MAX);
    CHECK(strncmp(e->name, q, el) == 0);
    if (q[el] != '\0') {
        CHECK(q[el] == '-' && q[el + 1] >= '0' && q[el + 1] <= '9');
        for (size_t i = strlen(q); i-- > el + 1;) /* no longer entry fits */
            if (q[i] == '-' && q[i + 1] >= '0' && q[i + 1] <= '9' && i <= TR_LLM_MODEL_NAME_MAX) {
                char pre[TR_LLM_MODEL_NAME_MAX + 1];
                memcpy(pre, q, i);
                pre[i] = '\0';
                const struct tr_llm_model *o = tr_llm_models_find(m, pre);
                CHECK(o == NULL || strcmp(o->name, pre) != 0);
            }
    }
    check_cost(m, q, e);
}

static void fuzz_models(const char *p, size_t n, const char *str)
{
    struct tr_llm_models *m = (struct tr_llm_models *)&m;
    struct tr_err err = {0};
    int rv = tr_llm_models_parse(p, n, &m, &err);

    if (rv != 0) {
        CHECK(m == NULL);
        CHECK(rv == TR_EINVAL || rv == TR_ELIMIT || rv == TR_ETOOBIG);
        check_failed(rv, rv, &err);
        return;
    }
    json_t *root = json_loadb(p, n, JSON_REJECT_DUPLICATES, NULL);
    json_t *models = json_object_get(root, "models");
    CHECK(json_is_object(models));
    CHECK(tr_llm_models_count(m) == json_object_size(models));
    CHECK(tr_llm_models_count(m) <= TR_LLM_MODELS_MAX);
    const char *name;
    json_t *v;
    json_object_foreach(models, name, v) {
        const struct tr_llm_model *e = tr_llm_models_find(m, name);
        CHECK(e != NULL && strcmp(e->name, name) == 0);
        CHECK(memchr(e->provider, '\0', sizeof e->provider) != NULL);
        CHECK(strcmp(e->provider, "openai") == 0 || strcmp(e->provider, "anthropic") == 0 ||
              strcmp(e->provider, "mock") == 0);
        CHECK(e->prompt_micro <= TR_LLM_MAX_PRICE_MICRO && e->completion_micro <= TR_LLM_MAX_PRICE_MICRO);
        json_t *ctx = json_object_get(v, "context_tokens");
        CHECK(e->context_tokens == (ctx ? (uint32_t)json_integer_value(ctx) : 0));
        check_cost(m, name, e);

        char q[TR_LLM_MODEL_NAME_MAX + 32];
        snprintf(q, sizeof q, "%s-2024-07-18", name); /* a dated snapshot */
        e = tr_llm_models_find(m, q);
        CHECK(e != NULL);
        check_find(m, q);
        size_t half = strlen(name) / 2;
        memcpy(q, name, half);
        q[half] = '\0';
        check_find(m, q);
    }
    check_find(m, str); /* the bytes themselves, up to their first NUL */
    json_decref(root);
    tr_llm_models_free(m);
}

/* ---- 6: http tool config -------------------------------------------------- */

static void check_host_chars(const char *h, size_t cap)
{
    CHECK(strnlen(h, cap) < cap);
    CHECK(h[0] != '\0');
    for (const char *c = h; *c; c++)
        CHECK((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || strchr(".-_:", *c) || (unsigned char)*c >= 0x80);
}

static void fuzz_http_cfg(const char *p, size_t n)
{
    json_t *config = json_loadb(p, n, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    struct tool_http_cfg cfg;
    struct tr_err err = {0};

    if (config == NULL)
        return;
    int rv = tool_http_cfg_parse(config, &cfg, &err);
    if (rv != 0) {
        check_failed(rv, TR_EINVAL, &err);
        CHECK(cfg.url == NULL && cfg.headers == NULL && cfg.allow == NULL);
        CHECK(cfg.n_headers == 0 && cfg.n_allow == 0);
        json_decref(config);
        return;
    }
    check_host_chars(cfg.host, sizeof cfg.host);
    CHECK(cfg.url != NULL);
    /* The URL the request is made with names the host that was checked. */
    char again[TOOL_MAX_HOST];
    CHECK(tool_url_host(cfg.url, again, sizeof again, NULL, &err) == 0);
    CHECK(strcmp(again, cfg.host) == 0);
    CHECK(memchr(cfg.method, '\0', sizeof cfg.method) != NULL);
    CHECK(strcmp(cfg.method, "POST") == 0 || strcmp(cfg.method, "PUT") == 0 || strcmp(cfg.method, "PATCH") == 0 ||
          strcmp(cfg.method, "DELETE") == 0);

    json_t *headers = json_object_get(config, "headers");
    CHECK(cfg.n_headers == json_object_size(headers) && cfg.n_headers <= TOOL_MAX_HEADERS);
    for (size_t i = 0; i < cfg.n_headers; i++) {
        const char *h = cfg.headers[i];
        CHECK(strlen(h) <= TOOL_MAX_HEADER_LINE && strstr(h, ": ") != NULL);
        CHECK(strpbrk(h, "\r\n") == NULL);
    }
    CHECK(cfg.n_headers == 0 || cfg.headers[cfg.n_headers] == NULL);

    json_t *allow = json_object_get(config, "allow");
    CHECK(cfg.n_allow == json_array_size(allow) && cfg.n_allow <= TOOL_MAX_ALLOW);
    int listed = 0;
    for (size_t i = 0; i < cfg.n_allow; i++) {
        check_host_chars(cfg.allow[i], TOOL_MAX_HOST);
        listed |= strcmp(cfg.allow[i], cfg.host) == 0;
    }
    CHECK(cfg.n_allow == 0 || cfg.allow[cfg.n_allow] == NULL);

    /* The tool's own list decides alone; without one, the node's does. The
     * node's entries are raw: the host with one more trailing dot is a
     * spelling of it. */
    char dotted[TOOL_MAX_HOST + 1];
    snprintf(dotted, sizeof dotted, "%s.", cfg.host);
    const char *node[] = {dotted};
    for (size_t k = 0; k < 2; k++) {
        err.msg[0] = '\0';
        rv = tool_http_decide(&cfg, node, k, &err);
        int want = cfg.n_allow > 0 ? listed : (int)k;
        CHECK(rv == (want ? TOOL_HTTP_ALLOWED : TOOL_HTTP_REFUSED));
        if (rv == TOOL_HTTP_REFUSED)
            check_failed(TR_EDENIED, TR_EDENIED, &err);
    }
    tool_http_cfg_free(&cfg);
    CHECK(cfg.url == NULL && cfg.headers == NULL && cfg.allow == NULL);
    json_decref(config);
}

/* ---- 7: hosts and URLs ---------------------------------------------------- */

static void fuzz_hosts(const char *s)
{
    static const size_t caps[] = {1, 2, 16, TOOL_MAX_HOST};
    char *norm[sizeof caps / sizeof caps[0]];
    int ok[sizeof caps / sizeof caps[0]];
    const size_t last = sizeof caps / sizeof caps[0] - 1;

    for (size_t k = 0; k <= last; k++) {
        norm[k] = malloc(caps[k]);
        ok[k] = tool_host_normalize(s, norm[k], caps[k]) == 0;
        if (!ok[k])
            continue;
        check_host_chars(norm[k], caps[k]);
    }
    for (size_t k = 0; k < last; k++) {
        /* A small buffer refuses what does not fit and holds the rest. */
        if (ok[last])
            CHECK(ok[k] == (strlen(norm[last]) < caps[k]));
        else
            CHECK(!ok[k]);
        if (ok[k])
            CHECK(strcmp(norm[k], norm[last]) == 0);
    }
    CHECK(tool_host_allowed(s, norm + last, ok[last]) == (ok[last] ? TOOL_HTTP_ALLOWED : TOOL_HTTP_REFUSED));
    for (size_t k = 0; k <= last; k++)
        free(norm[k]);

    char host[TOOL_MAX_HOST], again[TOOL_MAX_HOST];
    char *url = (char *)&url;
    struct tr_err err = {0};
    int rv = tool_url_host(s, host, sizeof host, &url, &err);
    if (rv != 0) {
        check_failed(rv, TR_EINVAL, &err);
        CHECK(url == NULL);
        return;
    }
    check_host_chars(host, sizeof host);
    CHECK(url != NULL);
    CHECK(tool_url_host(url, again, sizeof again, NULL, &err) == 0);
    CHECK(strcmp(again, host) == 0);
    tr_free(url);
}

/* ------------------------------------------------------------------------ */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    tr_log_set_level(TR_LOG_ERROR); /* unknown models are warned about */
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int mode = data[0] % 8;
    size_t n = size - 1;
    /* Exactly n bytes for the parsers of sized input; n + 1 with a NUL for
     * those that take a C string. */
    char *p = malloc(n + 1);
    memcpy(p, data + 1, n);
    p[n] = '\0';
    char *exact = (char *)fuzz_copy(data + 1, n);

    switch (mode) {
    case 0:
        fuzz_response(exact, n);
        break;
    case 1:
        fuzz_error_message(exact, n);
        break;
    case 2:
        fuzz_retry_after(p);
        break;
    case 3:
        fuzz_call_from_json(exact, n);
        break;
    case 4:
        fuzz_call_parse(exact, n);
        break;
    case 5:
        fuzz_models(exact, n, p);
        break;
    case 6:
        fuzz_http_cfg(exact, n);
        break;
    case 7:
        fuzz_hosts(p);
        break;
    }
    free(exact);
    free(p);
    return 0;
}
