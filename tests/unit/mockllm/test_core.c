/* troupe-mockllm's pure core: scripts, request parsing, step selection,
 * fail_first, replies (plain and streamed), malformed kinds, control
 * endpoints and statistics — all without a socket. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "tools/mockllm/mockllm.h"

static const char *const doc =
    "{\"model\": \"mock-4\", \"scripts\": {"
    " \"default\": [{\"content\": \"hello {{user}}\"}],"
    " \"weather\": ["
    "   {\"content\": \"Let me check.\", \"tool_calls\": [{\"name\": \"get_weather\","
    "     \"arguments\": {\"city\": \"Paris\", \"note\": \"step {{step}}\"}}]},"
    "   {\"tool_calls\": [{\"name\": \"a\", \"arguments\": {\"x\": 1}},"
    "                     {\"name\": \"b\", \"arguments\": \"{\\\"raw\\\": true}\", \"id\": \"call_fixed\"}]},"
    "   {\"content\": \"It is {{last_tool_result}} in Paris.\", \"usage\": {\"prompt_tokens\": 7, \"completion_tokens\": 3}}],"
    " \"flaky\": [{\"content\": \"finally\", \"fail_first\": 2,"
    "   \"error\": {\"status\": 429, \"retry_after\": 3, \"message\": \"slow down\"}}],"
    " \"broken\": [{\"content\": \"x\", \"error\": {\"status\": 503}, \"delay_ms\": 250}],"
    " \"sticky\": [{\"content\": \"one\"}, {\"content\": \"two\", \"repeat\": true}, {\"content\": \"three\"}],"
    " \"long\": [{\"content\": \"cut short\", \"finish_reason\": \"length\"}],"
    " \"m_bad_json\": [{\"content\": \"a\", \"malformed\": \"bad_json\"}],"
    " \"m_truncated\": [{\"content\": \"abcdefghijklmnop\", \"malformed\": \"truncated\"}],"
    " \"m_unknown_tool\": [{\"tool_calls\": [{\"name\": \"real\"}], \"malformed\": \"unknown_tool\"}],"
    " \"m_bad_arguments\": [{\"tool_calls\": [{\"name\": \"real\", \"arguments\": {\"k\": \"v\"}}], \"malformed\": \"bad_arguments\"}],"
    " \"m_empty_choices\": [{\"content\": \"a\", \"malformed\": \"empty_choices\"}],"
    " \"m_no_content\": [{\"content\": \"a\", \"malformed\": \"no_content\"}]"
    "}}";

static struct mock_engine *engine_with(const char *text, const char *key)
{
    struct mock_scripts *s = NULL;
    struct tr_err err = {0};
    int rv = mock_scripts_parse(text, strlen(text), &s, &err);
    if (rv != 0)
        fail_msg("parse: %s", err.msg);
    struct mock_engine_opts o = {.require_key = key};
    return mock_engine_new(s, &o);
}

/* POST a completion; returns the parsed body (NULL when it is not JSON). */
static json_t *post(struct mock_engine *e, const char *body, struct mock_reply *r)
{
    mock_engine_handle(e, "POST", "/v1/chat/completions", NULL, body, strlen(body), 1700000000, r);
    if (r->streaming)
        return NULL;
    return json_loadb(r->body, r->body_len, 0, NULL);
}

static const char *path_str(json_t *j, const char *path)
{
    json_t *v = j;
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", path);
    for (char *tok = strtok(buf, "."); tok != NULL && v != NULL; tok = strtok(NULL, ".")) {
        if (tok[0] >= '0' && tok[0] <= '9')
            v = json_array_get(v, (size_t)atoi(tok));
        else
            v = json_object_get(v, tok);
    }
    return json_string_value(v);
}

static json_int_t path_int(json_t *j, const char *a, const char *b)
{
    return json_integer_value(json_object_get(json_object_get(j, a), b));
}

/* ------------------------------------------------------------------------ */

static void test_scripts_parse(void **state)
{
    struct mock_scripts *s = NULL;
    struct tr_err err = {0};
    assert_int_equal(mock_scripts_parse(doc, strlen(doc), &s, &err), 0);
    assert_string_equal(s->model, "mock-4");
    assert_string_equal(s->default_name, "default");
    const struct mock_script *w = mock_scripts_find(s, "weather");
    assert_non_null(w);
    assert_int_equal(w->n_steps, 3);
    assert_int_equal(w->steps[1].n_calls, 2);
    assert_true(json_is_string(w->steps[1].calls[1].args));
    const struct mock_script *f = mock_scripts_find(s, "flaky");
    assert_int_equal(f->steps[0].fail_first, 2);
    assert_int_equal(f->steps[0].error.status, 429);
    assert_int_equal(f->steps[0].error.retry_after, 3);
    assert_null(mock_scripts_find(s, "nope"));
    mock_scripts_free(s);
}

static void expect_parse_error(const char *text, const char *needle)
{
    struct mock_scripts *s = NULL;
    struct tr_err err = {0};
    assert_int_equal(mock_scripts_parse(text, strlen(text), &s, &err), TR_EINVAL);
    if (strstr(err.msg, needle) == NULL)
        fail_msg("error \"%s\" lacks \"%s\"", err.msg, needle);
}

static void test_scripts_errors(void **state)
{
    expect_parse_error("{", "line 1");
    expect_parse_error("{\"scripts\": {}}", "non-empty \"scripts\"");
    expect_parse_error("{\"scripts\": {\"a\": []}}", "non-empty array");
    expect_parse_error("{\"scripts\": {\"a\": [{\"content\": \"x\"}, {\"contnet\": \"y\"}]}}",
                       "script \"a\" step 1: unknown key \"contnet\"");
    expect_parse_error("{\"scripts\": {\"a\": [{\"malformed\": \"weird\"}]}}", "bad_json");
    expect_parse_error("{\"scripts\": {\"a\": [{\"error\": {\"status\": 200}}]}}", "400..599");
    expect_parse_error("{\"scripts\": {\"a\": [{\"tool_calls\": [{\"arguments\": {}}]}]}}",
                       "\"name\"");
    expect_parse_error("{\"scripts\": {\"a\": [{\"tool_calls\": [{\"name\": \"t\", \"arguments\": 3}]}]}}",
                       "object or a string");
    expect_parse_error("{\"default\": \"zz\", \"scripts\": {\"a\": [{}]}}", "names no script");
    expect_parse_error("{\"scripts\": {\"a\": [{\"delay_ms\": -1}]}}", "delay_ms");
}

static void test_step_index(void **state)
{
    struct mock_scripts *s = NULL;
    struct tr_err err = {0};
    assert_int_equal(mock_scripts_parse(doc, strlen(doc), &s, &err), 0);
    const struct mock_script *w = mock_scripts_find(s, "weather");
    assert_int_equal(mock_script_step_index(w, 0), 0);
    assert_int_equal(mock_script_step_index(w, 2), 2);
    assert_int_equal(mock_script_step_index(w, 9), 2);
    const struct mock_script *st = mock_scripts_find(s, "sticky");
    assert_int_equal(mock_script_step_index(st, 0), 0);
    assert_int_equal(mock_script_step_index(st, 1), 1);
    assert_int_equal(mock_script_step_index(st, 2), 1);
    assert_int_equal(mock_script_step_index(st, 7), 1);
    mock_scripts_free(s);
}

static void test_request_parse(void **state)
{
    struct mock_request req;
    struct tr_err err = {0};
    const char *body =
        "{\"model\": \"gpt-x\", \"stream\": true, \"stream_options\": {\"include_usage\": true},"
        " \"messages\": ["
        "  {\"role\": \"system\", \"content\": \"You are helpful. [mock:weather]\"},"
        "  {\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"Weather \"},"
        "                                     {\"type\": \"text\", \"text\": \"in Paris?\"}]},"
        "  {\"role\": \"assistant\", \"content\": null, \"tool_calls\": []},"
        "  {\"role\": \"tool\", \"tool_call_id\": \"c1\", \"content\": \"first\"},"
        "  {\"role\": \"assistant\", \"content\": \"ok\"},"
        "  {\"role\": \"user\", \"content\": \"second user\"},"
        "  {\"role\": \"tool\", \"tool_call_id\": \"c2\", \"content\": \"21C\"}]}";
    assert_int_equal(mock_request_parse(body, strlen(body), &req, &err), 0);
    assert_string_equal(req.model, "gpt-x");
    assert_true(req.stream);
    assert_true(req.include_usage);
    assert_string_equal(req.script, "weather");
    assert_int_equal(req.assistant_msgs, 2);
    assert_string_equal(req.user, "Weather in Paris?");
    assert_string_equal(req.last_tool_result, "21C");
    assert_true(req.prompt_chars > 100);

    char *t = mock_template("{{step}}|{{user}}|{{last_tool_result}}|{{model}}|{{other}}|{{", &req,
                            4, "m");
    assert_string_equal(t, "4|Weather in Paris?|21C|m|{{other}}|{{");
    tr_free(t);
    tr_free(req.user);
    req.user = tr_strdup("say \"hi\"\n");
    t = mock_template_json("{\"q\": \"{{user}}\"}", &req, 0, "m");
    assert_string_equal(t, "{\"q\": \"say \\\"hi\\\"\\n\"}");
    json_t *parsed = json_loads(t, 0, NULL);
    assert_non_null(parsed);
    assert_string_equal(json_string_value(json_object_get(parsed, "q")), "say \"hi\"\n");
    json_decref(parsed);
    tr_free(t);
    mock_request_free(&req);

    assert_int_equal(mock_request_parse("{nope", 5, &req, &err), TR_EINVAL);
    assert_non_null(strstr(err.msg, "parse the JSON"));
    assert_int_equal(mock_request_parse("[]", 2, &req, &err), TR_EINVAL);
    assert_int_equal(mock_request_parse("{\"messages\": []}", 16, &req, &err), TR_EINVAL);
    assert_int_equal(mock_request_parse("{\"messages\": [3]}", 17, &req, &err), TR_EINVAL);
}

static void test_conv_hash_canonical(void **state)
{
    struct mock_request a, b, c;
    const char *ja = "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}";
    const char *jb = "{\"model\": \"m\", \"messages\": [{\"content\": \"hi\", \"role\": \"user\"}]}";
    const char *jc = "{\"messages\": [{\"role\": \"user\", \"content\": \"hi!\"}]}";
    assert_int_equal(mock_request_parse(ja, strlen(ja), &a, NULL), 0);
    assert_int_equal(mock_request_parse(jb, strlen(jb), &b, NULL), 0);
    assert_int_equal(mock_request_parse(jc, strlen(jc), &c, NULL), 0);
    assert_true(a.conv_hash == b.conv_hash);
    assert_true(a.conv_hash != c.conv_hash);
    assert_int_equal(a.script[0], '\0');
    mock_request_free(&a);
    mock_request_free(&b);
    mock_request_free(&c);
}

static void test_final_answer(void **state)
{
    struct mock_engine *e = engine_with(doc, NULL);
    struct mock_reply r;
    json_t *j = post(e, "{\"model\": \"gpt-4o\", \"messages\": [{\"role\": \"user\", \"content\": \"Bob\"}]}", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.content_type, "application/json");
    assert_non_null(j);
    assert_string_equal(path_str(j, "object"), "chat.completion");
    assert_string_equal(path_str(j, "model"), "gpt-4o");
    assert_int_equal(json_integer_value(json_object_get(j, "created")), 1700000000);
    assert_non_null(strstr(path_str(j, "id"), "chatcmpl-"));
    assert_string_equal(path_str(j, "choices.0.message.role"), "assistant");
    assert_string_equal(path_str(j, "choices.0.message.content"), "hello Bob");
    assert_string_equal(path_str(j, "choices.0.finish_reason"), "stop");
    assert_null(json_object_get(json_object_get(json_array_get(json_object_get(j, "choices"), 0),
                                                "message"),
                                "tool_calls"));
    /* prompt: ceil(compact messages / 4); completion: ceil(9 / 4) */
    size_t compact = strlen("[{\"content\":\"Bob\",\"role\":\"user\"}]");
    assert_int_equal(path_int(j, "usage", "prompt_tokens"), (compact + 3) / 4);
    assert_int_equal(path_int(j, "usage", "completion_tokens"), 3);
    assert_int_equal(path_int(j, "usage", "total_tokens"), (compact + 3) / 4 + 3);
    json_decref(j);
    mock_reply_free(&r);
    mock_engine_free(e);
}

#define WEATHER_SYS "{\"role\": \"system\", \"content\": \"[mock:weather]\"}, {\"role\": \"user\", \"content\": \"Paris?\"}"

static void test_tool_calls_by_step(void **state)
{
    struct mock_engine *e = engine_with(doc, NULL);
    struct mock_reply r;

    /* step 0: content plus one tool call; arguments are a JSON string */
    json_t *j = post(e, "{\"messages\": [" WEATHER_SYS "]}", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(path_str(j, "model"), "mock-4");
    assert_string_equal(path_str(j, "choices.0.finish_reason"), "tool_calls");
    assert_string_equal(path_str(j, "choices.0.message.content"), "Let me check.");
    assert_string_equal(path_str(j, "choices.0.message.tool_calls.0.type"), "function");
    assert_string_equal(path_str(j, "choices.0.message.tool_calls.0.function.name"), "get_weather");
    const char *args = path_str(j, "choices.0.message.tool_calls.0.function.arguments");
    json_t *a = json_loads(args, 0, NULL);
    assert_non_null(a);
    assert_string_equal(json_string_value(json_object_get(a, "city")), "Paris");
    assert_string_equal(json_string_value(json_object_get(a, "note")), "step 0");
    json_decref(a);
    char id0[64];
    snprintf(id0, sizeof(id0), "%s", path_str(j, "choices.0.message.tool_calls.0.id"));
    assert_memory_equal(id0, "call_", 5);
    json_decref(j);
    mock_reply_free(&r);

    /* the same request again: the same ids (replay-safe) */
    j = post(e, "{\"messages\": [" WEATHER_SYS "]}", &r);
    assert_string_equal(path_str(j, "choices.0.message.tool_calls.0.id"), id0);
    json_decref(j);
    mock_reply_free(&r);

    /* step 1: two parallel calls, one raw arguments string, one fixed id */
    j = post(e, "{\"messages\": [" WEATHER_SYS ", {\"role\": \"assistant\", \"content\": null},"
                " {\"role\": \"tool\", \"tool_call_id\": \"x\", \"content\": \"sunny\"}]}", &r);
    assert_string_equal(path_str(j, "choices.0.message.tool_calls.0.function.name"), "a");
    assert_string_equal(path_str(j, "choices.0.message.tool_calls.0.function.arguments"), "{\"x\":1}");
    assert_string_equal(path_str(j, "choices.0.message.tool_calls.1.function.name"), "b");
    assert_string_equal(path_str(j, "choices.0.message.tool_calls.1.function.arguments"), "{\"raw\": true}");
    assert_string_equal(path_str(j, "choices.0.message.tool_calls.1.id"), "call_fixed");
    assert_true(json_is_null(json_object_get(
        json_object_get(json_array_get(json_object_get(j, "choices"), 0), "message"), "content")));
    json_decref(j);
    mock_reply_free(&r);

    /* step 2 and beyond: the final answer reflects the last tool result */
    for (int extra = 0; extra < 2; extra++) {
        j = post(e, extra == 0
                        ? "{\"messages\": [" WEATHER_SYS ", {\"role\": \"assistant\", \"content\": \"1\"},"
                          " {\"role\": \"assistant\", \"content\": \"2\"}, {\"role\": \"tool\", \"content\": \"21C\"}]}"
                        : "{\"messages\": [" WEATHER_SYS ", {\"role\": \"assistant\", \"content\": \"1\"},"
                          " {\"role\": \"assistant\", \"content\": \"2\"}, {\"role\": \"assistant\", \"content\": \"3\"},"
                          " {\"role\": \"tool\", \"content\": \"21C\"}]}",
                 &r);
        assert_string_equal(path_str(j, "choices.0.message.content"), "It is 21C in Paris.");
        assert_int_equal(path_int(j, "usage", "prompt_tokens"), 7);
        assert_int_equal(path_int(j, "usage", "completion_tokens"), 3);
        assert_int_equal(path_int(j, "usage", "total_tokens"), 10);
        json_decref(j);
        mock_reply_free(&r);
    }
    mock_engine_free(e);
}

static void test_fail_first(void **state)
{
    struct mock_engine *e = engine_with(doc, NULL);
    struct mock_reply r;
    const char *conv1 = "{\"messages\": [{\"role\": \"system\", \"content\": \"[mock:flaky]\"}, {\"role\": \"user\", \"content\": \"1\"}]}";
    const char *conv2 = "{\"messages\": [{\"role\": \"system\", \"content\": \"[mock:flaky]\"}, {\"role\": \"user\", \"content\": \"2\"}]}";

    for (int i = 0; i < 2; i++) {
        json_t *j = post(e, conv1, &r);
        assert_int_equal(r.status, 429);
        assert_int_equal(r.retry_after, 3);
        assert_string_equal(path_str(j, "error.message"), "slow down");
        assert_string_equal(path_str(j, "error.type"), "requests");
        assert_string_equal(path_str(j, "error.code"), "rate_limit_exceeded");
        json_decref(j);
        mock_reply_free(&r);
    }
    /* another conversation counts on its own */
    json_t *j = post(e, conv2, &r);
    assert_int_equal(r.status, 429);
    json_decref(j);
    mock_reply_free(&r);
    for (int i = 0; i < 2; i++) {
        j = post(e, conv1, &r);
        assert_int_equal(r.status, 200);
        assert_string_equal(path_str(j, "choices.0.message.content"), "finally");
        json_decref(j);
        mock_reply_free(&r);
    }
    /* reset forgets the attempts */
    mock_engine_handle(e, "POST", "/_mock/reset", NULL, "", 0, 0, &r);
    assert_int_equal(r.status, 200);
    mock_reply_free(&r);
    j = post(e, conv1, &r);
    assert_int_equal(r.status, 429);
    json_decref(j);
    mock_reply_free(&r);
    mock_engine_free(e);
}

static void test_fail_first_table_bounded(void **state)
{
    struct mock_scripts *s = NULL;
    const char *text = "{\"scripts\": {\"a\": [{\"content\": \"ok\", \"fail_first\": 1}]}}";
    assert_int_equal(mock_scripts_parse(text, strlen(text), &s, NULL), 0);
    struct mock_engine_opts o = {.max_counters = 8};
    struct mock_engine *e = mock_engine_new(s, &o);
    struct mock_reply r;
    char body[128];
    for (int i = 0; i < 100; i++) {
        snprintf(body, sizeof(body), "{\"messages\": [{\"role\": \"user\", \"content\": \"%d\"}]}", i);
        mock_engine_handle(e, "POST", "/chat/completions", NULL, body, strlen(body), 0, &r);
        assert_int_equal(r.status, 500); /* default error for fail_first */
        mock_reply_free(&r);
        mock_engine_handle(e, "POST", "/chat/completions", NULL, body, strlen(body), 0, &r);
        assert_int_equal(r.status, 200);
        mock_reply_free(&r);
    }
    json_t *st = mock_engine_stats(e);
    assert_true(json_integer_value(json_object_get(st, "conversations")) <= 8);
    json_decref(st);
    mock_engine_free(e);
}

static void test_errors_and_delay(void **state)
{
    struct mock_engine *e = engine_with(doc, NULL);
    struct mock_reply r;
    json_t *j = post(e, "{\"stream\": true, \"messages\": [{\"role\": \"system\", \"content\": \"x [mock:broken] y\"}]}", &r);
    /* errors are plain JSON even for a streamed request */
    assert_false(r.streaming);
    assert_int_equal(r.status, 503);
    assert_int_equal(r.retry_after, -1);
    assert_int_equal(r.delay_ms, 250);
    assert_string_equal(path_str(j, "error.type"), "server_error");
    json_decref(j);
    mock_reply_free(&r);

    j = post(e, "{\"messages\": [{\"role\": \"system\", \"content\": \"[mock:long]\"}]}", &r);
    assert_string_equal(path_str(j, "choices.0.finish_reason"), "length");
    json_decref(j);
    mock_reply_free(&r);

    j = post(e, "{\"messages\": [{\"role\": \"system\", \"content\": \"[mock:missing]\"}]}", &r);
    assert_int_equal(r.status, 400);
    assert_string_equal(path_str(j, "error.code"), "mock_unknown_script");
    json_decref(j);
    mock_reply_free(&r);

    j = post(e, "{\"messages\": ", &r);
    assert_int_equal(r.status, 400);
    assert_string_equal(path_str(j, "error.type"), "invalid_request_error");
    json_decref(j);
    mock_reply_free(&r);
    mock_engine_free(e);
}

/* Decode a stream: check framing, return the chunks as a JSON array. */
static json_t *decode_events(const struct mock_reply *r, int *done)
{
    json_t *chunks = json_array();
    *done = 0;
    assert_true(r->streaming);
    assert_string_equal(r->content_type, "text/event-stream");
    for (size_t i = 0; i < r->n_events; i++) {
        const char *ev = r->events[i];
        size_t n = strlen(ev);
        assert_memory_equal(ev, "data: ", 6);
        assert_true(n > 8 && ev[n - 1] == '\n' && ev[n - 2] == '\n');
        if (strcmp(ev, "data: [DONE]\n\n") == 0) {
            assert_int_equal(i, r->n_events - 1);
            *done = 1;
            continue;
        }
        json_t *c = json_loadb(ev + 6, n - 8, 0, NULL);
        if (c == NULL)
            json_array_append_new(chunks, json_string("BAD"));
        else
            json_array_append_new(chunks, c);
    }
    return chunks;
}

static void test_streaming(void **state)
{
    struct mock_engine *e = engine_with(doc, NULL);
    struct mock_reply r;
    int done;

    post(e, "{\"stream\": true, \"stream_options\": {\"include_usage\": true}, \"messages\": [" WEATHER_SYS "]}", &r);
    assert_int_equal(r.status, 200);
    assert_true(r.events_cut == SIZE_MAX);
    json_t *chunks = decode_events(&r, &done);
    assert_true(done);
    size_t n = json_array_size(chunks);
    assert_true(n >= 6);
    char content[256] = "", args[256] = "";
    const char *finish = NULL;
    size_t i;
    json_t *c;
    json_array_foreach(chunks, i, c) {
        assert_true(json_is_object(c));
        assert_string_equal(path_str(c, "object"), "chat.completion.chunk");
        assert_string_equal(path_str(c, "id"), path_str(json_array_get(chunks, 0), "id"));
        json_t *choices = json_object_get(c, "choices");
        if (i == n - 1) {
            /* the usage chunk */
            assert_int_equal(json_array_size(choices), 0);
            assert_int_equal(path_int(c, "usage", "completion_tokens") > 0, 1);
            continue;
        }
        assert_true(json_is_null(json_object_get(c, "usage")));
        json_t *delta = json_object_get(json_array_get(choices, 0), "delta");
        if (i == 0)
            assert_string_equal(json_string_value(json_object_get(delta, "role")), "assistant");
        else
            assert_null(json_object_get(delta, "role"));
        const char *piece = json_string_value(json_object_get(delta, "content"));
        if (piece != NULL)
            strcat(content, piece);
        json_t *tc = json_array_get(json_object_get(delta, "tool_calls"), 0);
        if (tc != NULL) {
            assert_int_equal(json_integer_value(json_object_get(tc, "index")), 0);
            const char *name = path_str(tc, "function.name");
            if (name != NULL) {
                assert_string_equal(name, "get_weather");
                assert_string_equal(path_str(tc, "type"), "function");
                assert_memory_equal(path_str(tc, "id"), "call_", 5);
            } else {
                assert_null(json_object_get(tc, "id"));
            }
            strcat(args, path_str(tc, "function.arguments"));
        }
        const char *f = path_str(c, "choices.0.finish_reason");
        if (f != NULL) {
            assert_int_equal(i, n - 2);
            assert_int_equal(json_object_size(delta), 0);
            finish = f;
        }
    }
    assert_string_equal(content, "Let me check.");
    assert_string_equal(args, "{\"city\":\"Paris\",\"note\":\"step 0\"}");
    assert_string_equal(finish, "tool_calls");
    json_decref(chunks);
    mock_reply_free(&r);

    /* without include_usage: no usage field, no usage chunk */
    post(e, "{\"stream\": true, \"messages\": [{\"role\": \"user\", \"content\": \"Al\"}]}", &r);
    chunks = decode_events(&r, &done);
    assert_true(done);
    json_array_foreach(chunks, i, c) {
        assert_null(json_object_get(c, "usage"));
        assert_int_equal(json_array_size(json_object_get(c, "choices")), 1);
    }
    assert_string_equal(path_str(json_array_get(chunks, json_array_size(chunks) - 1),
                                 "choices.0.finish_reason"),
                        "stop");
    json_decref(chunks);
    mock_reply_free(&r);
    mock_engine_free(e);
}

static json_t *post_script(struct mock_engine *e, const char *name, int stream, struct mock_reply *r)
{
    char body[256];
    snprintf(body, sizeof(body),
             "{\"stream\": %s, \"messages\": [{\"role\": \"system\", \"content\": \"[mock:%s]\"}]}",
             stream ? "true" : "false", name);
    return post(e, body, r);
}

static void test_malformed(void **state)
{
    struct mock_engine *e = engine_with(doc, NULL);
    struct mock_reply r;
    int done;

    json_t *j = post_script(e, "m_bad_json", 0, &r);
    assert_int_equal(r.status, 200);
    assert_null(j);
    assert_int_equal(strlen(r.body), r.body_len);
    mock_reply_free(&r);

    j = post_script(e, "m_truncated", 0, &r);
    assert_non_null(j); /* the reply holds the whole body ... */
    assert_true(r.body_cut < r.body_len); /* ... and the server sends only part */
    json_decref(j);
    mock_reply_free(&r);

    j = post_script(e, "m_unknown_tool", 0, &r);
    assert_string_equal(path_str(j, "choices.0.message.tool_calls.0.function.name"), "mock_unknown_tool");
    json_decref(j);
    mock_reply_free(&r);

    j = post_script(e, "m_bad_arguments", 0, &r);
    const char *args = path_str(j, "choices.0.message.tool_calls.0.function.arguments");
    assert_non_null(args);
    json_t *parsed = json_loads(args, JSON_DECODE_ANY, NULL);
    assert_null(parsed);
    json_decref(j);
    mock_reply_free(&r);

    j = post_script(e, "m_empty_choices", 0, &r);
    assert_int_equal(json_array_size(json_object_get(j, "choices")), 0);
    assert_non_null(json_object_get(j, "usage"));
    json_decref(j);
    mock_reply_free(&r);

    j = post_script(e, "m_no_content", 0, &r);
    json_t *msg = json_object_get(json_array_get(json_object_get(j, "choices"), 0), "message");
    assert_true(json_is_null(json_object_get(msg, "content")));
    assert_null(json_object_get(msg, "tool_calls"));
    json_decref(j);
    mock_reply_free(&r);

    /* streamed variants */
    post_script(e, "m_truncated", 1, &r);
    assert_true(r.events_cut < r.n_events);
    mock_reply_free(&r);

    post_script(e, "m_bad_json", 1, &r);
    json_t *chunks = decode_events(&r, &done);
    int bad = 0;
    size_t i;
    json_t *c;
    json_array_foreach(chunks, i, c) bad += json_is_string(c);
    assert_int_equal(bad, 1);
    json_decref(chunks);
    mock_reply_free(&r);

    post_script(e, "m_empty_choices", 1, &r);
    chunks = decode_events(&r, &done);
    assert_true(done);
    json_array_foreach(chunks, i, c) assert_int_equal(json_array_size(json_object_get(c, "choices")), 0);
    json_decref(chunks);
    mock_reply_free(&r);

    json_t *st = mock_engine_stats(e);
    assert_int_equal(json_integer_value(json_object_get(st, "malformed")), 9);
    assert_int_equal(json_integer_value(json_object_get(st, "streamed")), 3);
    json_decref(st);
    mock_engine_free(e);
}

static void test_down_up_stats(void **state)
{
    struct mock_engine *e = engine_with(doc, NULL);
    struct mock_reply r;
    const char *q = "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}";

    json_t *j = post(e, q, &r);
    json_decref(j);
    mock_reply_free(&r);
    mock_engine_handle(e, "POST", "/_mock/down", NULL, "{\"retry_after\": 2}", 18, 0, &r);
    assert_int_equal(r.status, 200);
    mock_reply_free(&r);
    for (int i = 0; i < 3; i++) {
        j = post(e, q, &r);
        assert_int_equal(r.status, 503);
        assert_int_equal(r.retry_after, 2);
        json_decref(j);
        mock_reply_free(&r);
    }
    mock_engine_handle(e, "POST", "/_mock/up", NULL, "", 0, 0, &r);
    mock_reply_free(&r);
    j = post(e, q, &r);
    assert_int_equal(r.status, 200);
    json_decref(j);
    mock_reply_free(&r);

    mock_engine_handle(e, "GET", "/v1/models", NULL, "", 0, 0, &r);
    assert_int_equal(r.status, 200);
    j = json_loadb(r.body, r.body_len, 0, NULL);
    assert_string_equal(path_str(j, "data.0.id"), "mock-4");
    json_decref(j);
    mock_reply_free(&r);

    mock_engine_handle(e, "GET", "/v1/chat/completions", NULL, "", 0, 0, &r);
    assert_int_equal(r.status, 405);
    mock_reply_free(&r);
    mock_engine_handle(e, "POST", "/v1/embeddings", NULL, "", 0, 0, &r);
    assert_int_equal(r.status, 404);
    mock_reply_free(&r);

    mock_engine_handle(e, "GET", "/_mock/stats", NULL, "", 0, 0, &r);
    j = json_loadb(r.body, r.body_len, 0, NULL);
    assert_int_equal(json_integer_value(json_object_get(j, "requests")), 8);
    assert_int_equal(json_integer_value(json_object_get(j, "completions")), 5);
    assert_int_equal(path_int(j, "by_status", "200"), 3);
    assert_int_equal(path_int(j, "by_status", "503"), 3);
    assert_int_equal(path_int(j, "by_status", "405"), 1);
    assert_int_equal(path_int(j, "by_script", "default"), 2);
    assert_true(json_is_false(json_object_get(j, "down")));
    json_decref(j);
    mock_reply_free(&r);
    mock_engine_free(e);
}

static void test_require_key(void **state)
{
    struct mock_engine *e = engine_with(doc, "sk-test");
    struct mock_reply r;
    const char *q = "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}";

    mock_engine_handle(e, "POST", "/v1/chat/completions", NULL, q, strlen(q), 0, &r);
    assert_int_equal(r.status, 401);
    mock_reply_free(&r);
    mock_engine_handle(e, "POST", "/v1/chat/completions", "Bearer nope", q, strlen(q), 0, &r);
    assert_int_equal(r.status, 401);
    json_t *j = json_loadb(r.body, r.body_len, 0, NULL);
    assert_string_equal(path_str(j, "error.code"), "invalid_api_key");
    json_decref(j);
    mock_reply_free(&r);
    mock_engine_handle(e, "POST", "/v1/chat/completions", "Bearer sk-test", q, strlen(q), 0, &r);
    assert_int_equal(r.status, 200);
    mock_reply_free(&r);
    /* control endpoints need no key */
    mock_engine_handle(e, "GET", "/_mock/stats", NULL, "", 0, 0, &r);
    assert_int_equal(r.status, 200);
    mock_reply_free(&r);
    mock_engine_free(e);
}

static void test_stream_pieces_utf8(void **state)
{
    const char *text = "{\"scripts\": {\"a\": [{\"content\": \"\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\", \"pieces\": 4,"
                       " \"chunk_delay_ms\": 5}]}}";
    struct mock_engine *e = engine_with(text, NULL);
    struct mock_reply r;
    int done;
    post(e, "{\"stream\": true, \"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}", &r);
    assert_int_equal(r.chunk_delay_ms, 5);
    json_t *chunks = decode_events(&r, &done);
    char content[64] = "";
    int pieces = 0;
    size_t i;
    json_t *c;
    json_array_foreach(chunks, i, c) {
        assert_true(json_is_object(c)); /* every piece is valid UTF-8 JSON */
        const char *p = path_str(c, "choices.0.delta.content");
        if (p != NULL && p[0] != '\0') {
            strcat(content, p);
            pieces++;
        }
    }
    assert_string_equal(content, "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9");
    assert_true(pieces >= 2 && pieces <= 4);
    json_decref(chunks);
    mock_reply_free(&r);
    mock_engine_free(e);
}

static const char *example_path;

/* The shipped example script loads, and its research script uses the tool result. */
static void test_example_script(void **state)
{
    struct mock_scripts *s = NULL;
    struct tr_err err = {0};
    if (example_path == NULL)
        skip();
    if (mock_scripts_load(example_path, &s, &err) != 0)
        fail_msg("%s", err.msg);
    assert_non_null(mock_scripts_find(s, "research"));
    struct mock_engine_opts o = {0};
    struct mock_engine *e = mock_engine_new(s, &o);
    struct mock_reply r;
    json_t *j = post(e, "{\"messages\": [{\"role\": \"user\", \"content\": \"tides\"},"
                        " {\"role\": \"assistant\", \"content\": null},"
                        " {\"role\": \"tool\", \"content\": \"twice a day\"}]}", &r);
    assert_string_equal(path_str(j, "choices.0.message.content"),
                        "Here is what I found about \"tides\": twice a day");
    json_decref(j);
    mock_reply_free(&r);
    mock_engine_free(e);

    struct tr_err err2 = {0};
    assert_int_equal(mock_scripts_load("/nonexistent/x.json", &s, &err2), TR_EIO);
    assert_non_null(strstr(err2.msg, "/nonexistent/x.json"));
}

int main(int argc, char **argv)
{
    example_path = argc > 1 ? argv[1] : NULL;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scripts_parse),
        cmocka_unit_test(test_scripts_errors),
        cmocka_unit_test(test_step_index),
        cmocka_unit_test(test_request_parse),
        cmocka_unit_test(test_conv_hash_canonical),
        cmocka_unit_test(test_final_answer),
        cmocka_unit_test(test_tool_calls_by_step),
        cmocka_unit_test(test_fail_first),
        cmocka_unit_test(test_fail_first_table_bounded),
        cmocka_unit_test(test_errors_and_delay),
        cmocka_unit_test(test_streaming),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_down_up_stats),
        cmocka_unit_test(test_require_key),
        cmocka_unit_test(test_stream_pieces_utf8),
        cmocka_unit_test(test_example_script),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
