/* actors/llm, the pure parts: request building, response parsing (every
 * shape, malformed ones included), provider error messages, Retry-After,
 * backoff bounds, breaker transitions on a fake clock, cost arithmetic,
 * models file parsing and its errors. No sockets, no clock. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "actors/llm.h"
#include "records.h"

#define S(lit) lit, sizeof(lit) - 1

/* ---- request -------------------------------------------------------------- */

/* A JSON call through tr_llm_call_from_json, then back through the checks
 * the llm actor makes: the body it would send, parsed. */
static json_t *wire_body(struct tr_msg *m, struct tr_llm_call_view *cv)
{
    struct tr_err err = {0};
    if (tr_llm_call_parse(m->data, m->len, cv, &err) != 0)
        fail_msg("parse failed: %s", err.msg);
    json_t *body = json_loadb(cv->body, cv->body_len, 0, NULL);
    assert_non_null(body);
    return body;
}

static json_t *build_ok(const char *call)
{
    struct tr_msg *m = NULL;
    struct tr_llm_call_view cv;
    struct tr_err err = {0};
    int rv = tr_llm_call_from_json(call, strlen(call), &m, &err);
    if (rv != 0)
        fail_msg("build failed: %s", err.msg);
    assert_int_equal(m->type, TR_MSG_LLM_CALL);
    json_t *body = wire_body(m, &cv);
    assert_int_equal(cv.model_len, json_string_length(json_object_get(body, "model")));
    assert_memory_equal(cv.model, json_string_value(json_object_get(body, "model")), cv.model_len);
    tr_msg_free(m);
    return body;
}

static void build_fails(const char *call, const char *needle)
{
    struct tr_msg *m = (struct tr_msg *)1;
    struct tr_err err = {0};
    int rv = tr_llm_call_from_json(call, strlen(call), &m, &err);
    assert_int_equal(rv, TR_EINVAL);
    assert_null(m);
    if (strstr(err.msg, needle) == NULL)
        fail_msg("error \"%s\" does not mention \"%s\"", err.msg, needle);
}

static void test_build_minimal(void **state)
{
    struct tr_msg *m = NULL;
    struct tr_llm_call_view cv;
    const char *call = "{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
                       "\"tenant\":\"t1\",\"run_id\":\"run_00000000000000ab\",\"step\":3}";
    assert_int_equal(tr_llm_call_from_json(call, strlen(call), &m, NULL), 0);
    json_t *body = wire_body(m, &cv);
    assert_int_equal(cv.run_id_len, strlen("run_00000000000000ab"));
    assert_memory_equal(cv.run_id, "run_00000000000000ab", cv.run_id_len);
    assert_int_equal(cv.tenant_len, 2);
    assert_memory_equal(cv.tenant, "t1", 2);
    assert_int_equal(cv.step, 3);
    assert_int_equal(cv.model_len, strlen("gpt-4o-mini"));
    assert_memory_equal(cv.model, "gpt-4o-mini", cv.model_len);
    assert_int_equal(json_object_size(body), 3); /* model, messages, stream */
    assert_true(json_is_false(json_object_get(body, "stream")));
    assert_null(json_object_get(body, "tools"));
    assert_null(json_object_get(body, "tool_choice"));
    assert_null(json_object_get(body, "temperature"));
    assert_null(json_object_get(body, "tenant"));
    json_t *msg = json_array_get(json_object_get(body, "messages"), 0);
    assert_string_equal(json_string_value(json_object_get(msg, "content")), "hi");
    json_decref(body);
    tr_msg_free(m);
}

static void test_build_tools_and_temperature(void **state)
{
    json_t *body = build_ok("{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"s\"},"
                            "{\"role\":\"user\",\"content\":\"u\"}],\"temperature\":0.2,"
                            "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":{}}}]}");
    assert_int_equal(json_array_size(json_object_get(body, "tools")), 1);
    assert_string_equal(json_string_value(json_object_get(body, "tool_choice")), "auto");
    assert_true(json_number_value(json_object_get(body, "temperature")) == 0.2);
    assert_int_equal(json_array_size(json_object_get(body, "messages")), 2);
    json_decref(body);

    /* An empty tools array (or null) sends no tools and no tool_choice. */
    body = build_ok("{\"model\":\"m\",\"messages\":[{\"role\":\"user\"}],\"tools\":[],\"temperature\":null}");
    assert_null(json_object_get(body, "tools"));
    assert_null(json_object_get(body, "tool_choice"));
    assert_null(json_object_get(body, "temperature"));
    json_decref(body);
    body = build_ok("{\"model\":\"m\",\"messages\":[{\"role\":\"user\"}],\"tools\":null,\"temperature\":0}");
    assert_null(json_object_get(body, "tools"));
    assert_int_equal(json_integer_value(json_object_get(body, "temperature")), 0);
    json_decref(body);
}

static void test_build_errors(void **state)
{
    build_fails("", "not JSON");
    build_fails("{\"model\":", "not JSON");
    build_fails("[1]", "object");
    build_fails("{\"messages\":[{\"role\":\"user\"}]}", "model");
    build_fails("{\"model\":\"\",\"messages\":[{\"role\":\"user\"}]}", "model");
    build_fails("{\"model\":7,\"messages\":[{\"role\":\"user\"}]}", "model");
    /* A model tr_llm_call_parse would refuse is refused here already. */
    build_fails("{\"model\":\"a\\nb\",\"messages\":[{\"role\":\"user\"}]}", "control");
    build_fails("{\"model\":\"gpt\\u007f\",\"messages\":[{\"role\":\"user\"}]}", "control");
    build_fails("{\"model\":\"m\"}", "messages");
    build_fails("{\"model\":\"m\",\"messages\":[]}", "messages");
    build_fails("{\"model\":\"m\",\"messages\":{}}", "messages");
    build_fails("{\"model\":\"m\",\"messages\":[{\"content\":\"x\"}]}", "messages[0]");
    build_fails("{\"model\":\"m\",\"messages\":[{\"role\":\"user\"},3]}", "messages[1]");
    build_fails("{\"model\":\"m\",\"messages\":[{\"role\":\"user\"}],\"tools\":{}}", "tools");
    build_fails("{\"model\":\"m\",\"messages\":[{\"role\":\"user\"}],\"tools\":[1]}", "tools[0]");
    build_fails("{\"model\":\"m\",\"messages\":[{\"role\":\"user\"}],\"temperature\":\"hot\"}", "temperature");
    build_fails("{\"model\":\"m\",\"messages\":[{\"role\":\"user\"}],\"temperature\":2.5}", "temperature");
    build_fails("{\"model\":\"m\",\"messages\":[{\"role\":\"user\"}],\"temperature\":-1}", "temperature");

    char model[400];
    char call[600];
    memset(model, 'a', 300);
    model[300] = '\0';
    snprintf(call, sizeof call, "{\"model\":\"%s\",\"messages\":[{\"role\":\"user\"}]}", model);
    build_fails(call, "model");

    /* Over the size limit: refused before parsing. */
    struct tr_msg *m;
    struct tr_err err;
    assert_int_equal(tr_llm_call_from_json("{}", (size_t)TR_LLM_MAX_CALL_BYTES + 1, &m, &err), TR_EINVAL);
    assert_non_null(strstr(err.msg, "limit"));

    /* A call under the limit whose body is over it ("1e-7" encodes as
     * "9.9999999999999995e-08"): refused, not built into a message that
     * tr_llm_call_parse refuses. */
    size_t n = 800000, off = 0, cap = n * 5 + 128;
    char *big = malloc(cap);
    off += (size_t)snprintf(big, cap, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"x\":[1e-7");
    for (size_t i = 1; i < n; i++) {
        memcpy(big + off, ",1e-7", 5);
        off += 5;
    }
    off += (size_t)snprintf(big + off, cap - off, "]}]}");
    assert_true(off < TR_LLM_MAX_CALL_BYTES);
    m = (struct tr_msg *)1;
    assert_int_equal(tr_llm_call_from_json(big, off, &m, &err), TR_EINVAL);
    assert_null(m);
    assert_non_null(strstr(err.msg, "body"));
    free(big);
}

static void call_parse_fails(const void *data, size_t len, const char *needle)
{
    struct tr_llm_call_view cv;
    struct tr_err err = {0};
    assert_int_equal(tr_llm_call_parse(data, len, &cv, &err), TR_EINVAL);
    if (strstr(err.msg, needle) == NULL)
        fail_msg("error \"%s\" does not mention \"%s\"", err.msg, needle);
}

/* The header the llm actor checks; the body is sent as is. */
static void test_call_header(void **state)
{
    const char body[] = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"stream\":false}";
    struct tr_msg *m = tr_llm_call_msg("m", "acme", "run_0000000000000001", 7, body, strlen(body));
    struct tr_llm_call_view cv;
    struct tr_llm_call h;

    assert_int_equal(m->type, TR_MSG_LLM_CALL);
    assert_int_equal(tr_llm_call_parse(m->data, m->len, &cv, NULL), 0);
    assert_int_equal(cv.step, 7);
    assert_int_equal(cv.body_len, strlen(body));
    assert_memory_equal(cv.body, body, cv.body_len); /* byte for byte */
    assert_memory_equal(cv.tenant, "acme", 4);
    assert_memory_equal(cv.run_id, "run_0000000000000001", cv.run_id_len);

    /* Not a header, short, lengths that do not add up, not an object. */
    call_parse_fails(body, strlen(body), "header");
    call_parse_fails(m->data, 10, "header");
    call_parse_fails(m->data, m->len - 1, "add up");
    memcpy(&h, m->data, sizeof h);
    h.body_len += 1;
    memcpy(m->data, &h, sizeof h);
    call_parse_fails(m->data, m->len, "add up");
    tr_msg_free(m);
    m = tr_llm_call_msg("m", NULL, NULL, 1, "[1]", 3);
    call_parse_fails(m->data, m->len, "object");
    tr_msg_free(m);
    /* The model: present, short, no control characters; the run id is
     * known for the log even then. */
    m = tr_llm_call_msg("", NULL, "run_x", 1, body, strlen(body));
    assert_int_equal(tr_llm_call_parse(m->data, m->len, &cv, NULL), TR_EINVAL);
    assert_memory_equal(cv.run_id, "run_x", 5);
    tr_msg_free(m);
    char model[400];
    memset(model, 'a', 300);
    model[300] = '\0';
    m = tr_llm_call_msg(model, NULL, NULL, 1, body, strlen(body));
    call_parse_fails(m->data, m->len, "model");
    tr_msg_free(m);
    m = tr_llm_call_msg("a\nb", NULL, NULL, 1, body, strlen(body));
    call_parse_fails(m->data, m->len, "control");
    tr_msg_free(m);
    /* Over the size limit: refused before anything else. */
    call_parse_fails(body, (size_t)TR_LLM_MAX_CALL_BYTES + 1, "limit");
}

/* ---- response ------------------------------------------------------------- */

static void parse_ok(const char *body, struct tr_llm_response *r)
{
    struct tr_err err = {0};
    if (tr_llm_parse_response(body, strlen(body), r, &err) != 0)
        fail_msg("parse failed: %s", err.msg);
}

static void parse_fails(const char *body, const char *needle)
{
    struct tr_llm_response r;
    struct tr_err err = {0};
    assert_int_equal(tr_llm_parse_response(body, strlen(body), &r, &err), TR_EPROTO);
    assert_null(r.root);
    assert_null(r.tool_calls);
    assert_null(r.content);
    if (strstr(err.msg, needle) == NULL)
        fail_msg("error \"%s\" does not mention \"%s\"", err.msg, needle);
}

static void test_parse_content(void **state)
{
    struct tr_llm_response r;
    parse_ok("{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"model\":\"gpt-4o-mini-2024-07-18\","
             "\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"Hello\",\"refusal\":null},"
             "\"logprobs\":null,\"finish_reason\":\"stop\"}],"
             "\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":3,\"total_tokens\":15}}",
             &r);
    assert_string_equal(json_string_value(r.content), "Hello");
    assert_int_equal(json_array_size(r.tool_calls), 0);
    assert_string_equal(r.finish_reason, "stop");
    assert_string_equal(r.model, "gpt-4o-mini-2024-07-18");
    assert_string_equal(r.id, "chatcmpl-1");
    assert_null(r.refusal);
    assert_int_equal(r.prompt_tokens, 12);
    assert_int_equal(r.completion_tokens, 3);
    tr_llm_response_free(&r);
    assert_null(r.root);
}

static void test_parse_tool_calls(void **state)
{
    struct tr_llm_response r;
    parse_ok("{\"choices\":[{\"message\":{\"content\":null,\"tool_calls\":["
             "{\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
             "\"arguments\":\"{\\\"city\\\": \\\"Paris\\\"}\"}},"
             "{\"id\":\"call_2\",\"function\":{\"name\":\"get_time\",\"arguments\":\"not json at all\"}}]},"
             "\"finish_reason\":\"tool_calls\"}]}",
             &r);
    assert_true(json_is_null(r.content));
    assert_int_equal(json_array_size(r.tool_calls), 2);
    json_t *c0 = json_array_get(r.tool_calls, 0), *c1 = json_array_get(r.tool_calls, 1);
    assert_int_equal(json_object_size(c0), 3);
    assert_string_equal(json_string_value(json_object_get(c0, "id")), "call_1");
    assert_string_equal(json_string_value(json_object_get(c0, "name")), "get_weather");
    assert_string_equal(json_string_value(json_object_get(c0, "arguments")), "{\"city\": \"Paris\"}");
    /* Arguments are passed through as the model sent them: the run validates. */
    assert_string_equal(json_string_value(json_object_get(c1, "arguments")), "not json at all");
    assert_string_equal(r.finish_reason, "tool_calls");
    assert_null(r.model);
    assert_string_equal(r.id, "");
    assert_int_equal(r.prompt_tokens, 0); /* no usage: zero */
    tr_llm_response_free(&r);
}

static void test_parse_lenient_shapes(void **state)
{
    struct tr_llm_response r;

    /* Content as an array of parts; no finish_reason: derived. */
    parse_ok("{\"choices\":[{\"message\":{\"content\":[{\"type\":\"text\",\"text\":\"ab\"},"
             "{\"type\":\"image_url\",\"image_url\":{}},{\"type\":\"text\",\"text\":\"cd\"}]}}]}",
             &r);
    assert_string_equal(json_string_value(r.content), "abcd");
    assert_string_equal(r.finish_reason, "stop");
    tr_llm_response_free(&r);

    parse_ok("{\"choices\":[{\"message\":{\"tool_calls\":[{\"id\":\"a\",\"type\":null,"
             "\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]},\"finish_reason\":null}],\"usage\":null}",
             &r);
    assert_string_equal(r.finish_reason, "tool_calls");
    assert_true(json_is_null(r.content));
    tr_llm_response_free(&r);

    /* A refusal is an answer. */
    parse_ok("{\"choices\":[{\"message\":{\"content\":null,\"refusal\":\"I can't help with that.\"},"
             "\"finish_reason\":\"stop\"}]}",
             &r);
    assert_string_equal(r.refusal, "I can't help with that.");
    tr_llm_response_free(&r);

    /* Out of tokens before any text: null content is fine with "length". */
    parse_ok("{\"choices\":[{\"message\":{\"content\":null},\"finish_reason\":\"length\"}],"
             "\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":null}}",
             &r);
    assert_string_equal(r.finish_reason, "length");
    assert_int_equal(r.prompt_tokens, 5);
    assert_int_equal(r.completion_tokens, 0);
    tr_llm_response_free(&r);

    /* Empty content is content. */
    parse_ok("{\"choices\":[{\"message\":{\"content\":\"\"},\"finish_reason\":\"stop\"}]}", &r);
    assert_string_equal(json_string_value(r.content), "");
    tr_llm_response_free(&r);
}

static void test_parse_malformed(void **state)
{
    struct tr_llm_response r;
    struct tr_err err;

    assert_int_equal(tr_llm_parse_response(NULL, 0, &r, &err), TR_EPROTO);
    parse_fails("{\"id\":\"chatcmpl-x\",\"choices\":[{\"message\":{\"content\":\"hal", "not JSON");
    parse_fails("[]", "not a JSON object");
    parse_fails("{\"id\":\"x\"}", "no choices");
    parse_fails("{\"choices\":[]}", "no choices");
    parse_fails("{\"choices\":{}}", "no choices");
    parse_fails("{\"error\":{\"message\":\"upstream exploded\",\"type\":\"server_error\"}}", "upstream exploded");
    parse_fails("{\"choices\":[7]}", "choices[0].message");
    parse_fails("{\"choices\":[{\"finish_reason\":\"stop\"}]}", "choices[0].message");
    parse_fails("{\"choices\":[{\"message\":{\"content\":42}}]}", "content");
    parse_fails("{\"choices\":[{\"message\":{\"content\":[1]}}]}", "content");
    parse_fails("{\"choices\":[{\"message\":{\"content\":null},\"finish_reason\":\"stop\"}]}", "no content");
    parse_fails("{\"choices\":[{\"message\":{},\"finish_reason\":\"tool_calls\"}]}", "no content");
    parse_fails("{\"choices\":[{\"message\":{\"content\":\"x\",\"tool_calls\":{}}}]}", "not an array");
    parse_fails("{\"choices\":[{\"message\":{\"tool_calls\":[3]}}]}", "tool_calls[0]");
    parse_fails("{\"choices\":[{\"message\":{\"tool_calls\":[{\"type\":\"function\","
                "\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]}}]}",
                "tool_calls[0].id");
    parse_fails("{\"choices\":[{\"message\":{\"tool_calls\":[{\"id\":\"\","
                "\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]}}]}",
                "tool_calls[0].id");
    parse_fails("{\"choices\":[{\"message\":{\"tool_calls\":[{\"id\":\"a\",\"type\":\"custom\","
                "\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]}}]}",
                "type");
    parse_fails("{\"choices\":[{\"message\":{\"tool_calls\":[{\"id\":\"a\"}]}}]}", "function");
    parse_fails("{\"choices\":[{\"message\":{\"tool_calls\":[{\"id\":\"a\",\"function\":{\"arguments\":\"{}\"}}]}}]}",
                "name");
    parse_fails("{\"choices\":[{\"message\":{\"tool_calls\":[{\"id\":\"a\",\"function\":{\"name\":\"f\","
                "\"arguments\":{\"city\":\"Paris\"}}}]}}]}",
                "arguments is not a string");
    parse_fails("{\"choices\":[{\"message\":{\"tool_calls\":[{\"id\":\"a\",\"function\":{\"name\":\"f\"}}]}}]}",
                "arguments is not a string");
    parse_fails("{\"choices\":[{\"message\":{\"content\":\"x\",\"refusal\":1}}]}", "refusal");
    parse_fails("{\"choices\":[{\"message\":{\"content\":\"x\"},\"finish_reason\":3}]}", "finish_reason");
    parse_fails("{\"choices\":[{\"message\":{\"content\":\"x\"}}],\"usage\":[]}", "usage");
    parse_fails("{\"choices\":[{\"message\":{\"content\":\"x\"}}],\"usage\":{\"prompt_tokens\":-1}}",
                "usage.prompt_tokens");
    parse_fails("{\"choices\":[{\"message\":{\"content\":\"x\"}}],\"usage\":{\"completion_tokens\":1.5}}",
                "usage.completion_tokens");

    /* Too many tool calls. */
    size_t cap = 64 + (TR_LLM_MAX_TOOL_CALLS + 1) * 64;
    char *big = malloc(cap);
    size_t off = (size_t)snprintf(big, cap, "{\"choices\":[{\"message\":{\"tool_calls\":[");
    for (int i = 0; i <= TR_LLM_MAX_TOOL_CALLS; i++)
        off += (size_t)snprintf(big + off, cap - off, "%s{\"id\":\"c%d\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}",
                                i ? "," : "", i);
    snprintf(big + off, cap - off, "]}}]}");
    parse_fails(big, "more than");
    free(big);
}

static void test_error_message(void **state)
{
    char buf[32];
    tr_llm_error_message(S("{\"error\":{\"message\":\"Rate limit reached\",\"type\":\"requests\"}}"), buf, sizeof buf);
    assert_string_equal(buf, "Rate limit reached");
    tr_llm_error_message(S("{\"error\":\"plain string error\"}"), buf, sizeof buf);
    assert_string_equal(buf, "plain string error");
    tr_llm_error_message(S("{\"error\":{\"message\":\"a long message that will not fit in the buffer\"}}"), buf,
                         sizeof buf);
    assert_int_equal(strlen(buf), sizeof buf - 1);
    tr_llm_error_message(S("<html>502 Bad Gateway</html>"), buf, sizeof buf);
    assert_string_equal(buf, "");
    tr_llm_error_message(NULL, 0, buf, sizeof buf);
    assert_string_equal(buf, "");
}

/* ---- Retry-After ---------------------------------------------------------- */

/* 1994-11-06T08:49:37Z */
#define T1994 784111777000ull

static void test_retry_after(void **state)
{
    uint64_t ms = 99;
    assert_int_equal(tr_llm_parse_retry_after("0", 0, &ms), 0);
    assert_int_equal(ms, 0);
    assert_int_equal(tr_llm_parse_retry_after("5", 0, &ms), 0);
    assert_int_equal(ms, 5000);
    assert_int_equal(tr_llm_parse_retry_after("  120 ", 0, &ms), 0);
    assert_int_equal(ms, 120000);
    assert_int_equal(tr_llm_parse_retry_after("1.5", 0, &ms), 0);
    assert_int_equal(ms, 1500);
    assert_int_equal(tr_llm_parse_retry_after("0.0001", 0, &ms), 0);
    assert_int_equal(ms, 1); /* rounded up */

    assert_int_equal(tr_llm_parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", T1994 - 3000, &ms), 0);
    assert_int_equal(ms, 3000);
    assert_int_equal(tr_llm_parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", T1994 + 5000, &ms), 0);
    assert_int_equal(ms, 0); /* in the past */
    assert_int_equal(tr_llm_parse_retry_after("Sunday, 06-Nov-94 08:49:37 GMT", T1994 - 1000, &ms), 0);
    assert_int_equal(ms, 1000);
    assert_int_equal(tr_llm_parse_retry_after("Sun Nov  6 08:49:37 1994", T1994 - 2000, &ms), 0);
    assert_int_equal(ms, 2000);
    /* Leap year day, far future. */
    assert_int_equal(tr_llm_parse_retry_after("Thu, 29 Feb 2024 00:00:00 GMT", 1709164800000ull - 10, &ms), 0);
    assert_int_equal(ms, 10);
    assert_int_equal(tr_llm_parse_retry_after("Fri, 01 Jan 2100 00:00:01 GMT", 4102444800000ull, &ms), 0);
    assert_int_equal(ms, 1000);

    const char *bad[] = {"", " ", "abc", "-1", "+1", "1e3", "1.", "5 s", "0x10", "99999999999",
                         "Sun, 06 Nov 1994 08:49:37 UTC", "Sun, 06 Foo 1994 08:49:37 GMT",
                         "Sun, 32 Nov 1994 08:49:37 GMT", "Sun, 06 Nov 1994 24:49:37 GMT",
                         "Sun, 06 Nov 1994 08:49:37 GMT junk", "Sun, 06 Nov 1969 08:49:37 GMT"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (tr_llm_parse_retry_after(bad[i], T1994, &ms) != -1)
            fail_msg("\"%s\" was accepted", bad[i]);
    }
    assert_int_equal(tr_llm_parse_retry_after(NULL, 0, &ms), -1);

    assert_int_equal(tr_llm_parse_retry_after_ms("250", &ms), 0);
    assert_int_equal(ms, 250);
    assert_int_equal(tr_llm_parse_retry_after_ms("1.2", &ms), 0);
    assert_int_equal(ms, 2);
    assert_int_equal(tr_llm_parse_retry_after_ms("soon", &ms), -1);
    assert_int_equal(tr_llm_parse_retry_after_ms(NULL, &ms), -1);
}

/* ---- backoff -------------------------------------------------------------- */

static void test_backoff_bounds(void **state)
{
    const uint64_t rnds[] = {0, 1, 199, 200, 201, 12345, 0x7fffffffffffffffull, UINT64_MAX};
    for (uint32_t retry = 1; retry <= 40; retry++) {
        uint64_t ceiling = 200;
        for (uint32_t i = 1; i < retry && ceiling < 10000; i++)
            ceiling *= 2;
        if (ceiling > 10000)
            ceiling = 10000;
        for (size_t k = 0; k < sizeof rnds / sizeof rnds[0]; k++) {
            uint64_t d = tr_llm_backoff_ms(retry, 200, 10000, rnds[k]);
            assert_true(d <= ceiling);
        }
        /* Full jitter reaches both ends. */
        assert_int_equal(tr_llm_backoff_ms(retry, 200, 10000, 0), 0);
        assert_int_equal(tr_llm_backoff_ms(retry, 200, 10000, ceiling), ceiling);
    }
    assert_int_equal(tr_llm_backoff_ms(1, 200, 10000, 200), 200);
    assert_int_equal(tr_llm_backoff_ms(2, 200, 10000, 400), 400);
    assert_int_equal(tr_llm_backoff_ms(3, 200, 10000, 800), 800);
    assert_int_equal(tr_llm_backoff_ms(7, 200, 10000, 10000), 10000);
    assert_int_equal(tr_llm_backoff_ms(UINT32_MAX, 200, 10000, 10001), 0);
    /* A base over the cap is capped. */
    assert_int_equal(tr_llm_backoff_ms(1, 500, 100, 100), 100);
}

/* ---- breaker -------------------------------------------------------------- */

static void test_breaker_transitions(void **state)
{
    struct tr_llm_breaker b;
    uint64_t now = 1000, wait;
    int probe;

    tr_llm_breaker_init(&b, 3, 100, 350);
    assert_int_equal(b.state, TR_LLM_BREAKER_CLOSED);
    /* Failures below the threshold, then a success: the count starts over. */
    for (int i = 0; i < 2; i++) {
        assert_true(tr_llm_breaker_allow(&b, now, &probe, &wait));
        assert_false(probe);
        tr_llm_breaker_record(&b, now, 0, 0);
    }
    assert_int_equal(b.consecutive_failures, 2);
    tr_llm_breaker_record(&b, now, 1, 0);
    assert_int_equal(b.consecutive_failures, 0);
    assert_int_equal(b.state, TR_LLM_BREAKER_CLOSED);

    /* Three in a row open it. */
    for (int i = 0; i < 3; i++)
        tr_llm_breaker_record(&b, now, 0, 0);
    assert_int_equal(b.state, TR_LLM_BREAKER_OPEN);
    assert_int_equal(b.opens, 1);
    assert_false(tr_llm_breaker_allow(&b, now, &probe, &wait));
    assert_int_equal(wait, 100);
    now += 60;
    assert_false(tr_llm_breaker_allow(&b, now, &probe, &wait));
    assert_int_equal(wait, 40);
    assert_int_equal(b.rejected, 2);
    assert_int_equal(tr_llm_breaker_state_at(&b, now), TR_LLM_BREAKER_OPEN);
    /* Late outcomes of requests sent before it opened change nothing. */
    tr_llm_breaker_record(&b, now, 1, 0);
    tr_llm_breaker_record(&b, now, 0, 0);
    assert_int_equal(b.state, TR_LLM_BREAKER_OPEN);

    /* Cool-down over: half-open, one probe, the rest refused. */
    now += 40;
    assert_int_equal(tr_llm_breaker_state_at(&b, now), TR_LLM_BREAKER_HALF_OPEN);
    assert_int_equal(b.state, TR_LLM_BREAKER_OPEN); /* state_at does not change it */
    assert_true(tr_llm_breaker_allow(&b, now, &probe, &wait));
    assert_true(probe);
    assert_int_equal(b.state, TR_LLM_BREAKER_HALF_OPEN);
    assert_false(tr_llm_breaker_allow(&b, now, &probe, &wait));
    assert_false(probe);
    assert_true(wait > 0);

    /* The probe fails: open again, cool-down doubled. */
    tr_llm_breaker_record(&b, now, 0, 1);
    assert_int_equal(b.state, TR_LLM_BREAKER_OPEN);
    assert_int_equal(b.cooldown_ms, 200);
    assert_int_equal(b.opens, 2);
    assert_false(tr_llm_breaker_allow(&b, now + 199, &probe, &wait));
    assert_int_equal(wait, 1);
    now += 200;
    assert_true(tr_llm_breaker_allow(&b, now, &probe, &wait));
    assert_true(probe);
    tr_llm_breaker_record(&b, now, 0, 1);
    assert_int_equal(b.cooldown_ms, 350); /* capped */
    now += 350;
    assert_true(tr_llm_breaker_allow(&b, now, &probe, &wait));
    tr_llm_breaker_record(&b, now, 0, 1);
    assert_int_equal(b.cooldown_ms, 350);

    /* The probe succeeds: closed, cool-down back to its base. */
    now += 350;
    assert_true(tr_llm_breaker_allow(&b, now, &probe, &wait));
    assert_true(probe);
    tr_llm_breaker_record(&b, now, 1, 1);
    assert_int_equal(b.state, TR_LLM_BREAKER_CLOSED);
    assert_int_equal(b.cooldown_ms, 100);
    assert_true(tr_llm_breaker_allow(&b, now, &probe, &wait));
    assert_false(probe);
    for (int i = 0; i < 3; i++)
        tr_llm_breaker_record(&b, now, 0, 0);
    assert_int_equal(b.state, TR_LLM_BREAKER_OPEN);
    assert_int_equal(b.cooldown_ms, 100);
    assert_string_equal(tr_llm_breaker_state_name(TR_LLM_BREAKER_HALF_OPEN), "half_open");
}

static void test_breaker_defaults(void **state)
{
    struct tr_llm_breaker b;
    tr_llm_breaker_init(&b, 0, 0, 0);
    assert_int_equal(b.threshold, 5);
    assert_int_equal(b.cooldown_base_ms, 2000);
    assert_int_equal(b.cooldown_max_ms, 30000);
    tr_llm_breaker_init(&b, 1, 5000, 10);
    assert_int_equal(b.cooldown_max_ms, 5000);
}

static void count_cb(const char *url, const struct tr_llm_breaker *b, void *arg)
{
    if (strcmp(url, "http://unit.invalid/v1") == 0)
        (*(int *)arg)++;
}

static void test_endpoint_registry(void **state)
{
    const char *url = "http://unit.invalid/v1";
    struct tr_llm_breaker b;
    uint64_t wait;
    int probe, n = 0;

    assert_int_equal(tr_llm_endpoint_stats(url, 0, &b), TR_ENOTFOUND);
    assert_int_equal(tr_llm_endpoint_reset(url), TR_ENOTFOUND);
    assert_int_equal(tr_llm_endpoint_end_cooldown(url), TR_ENOTFOUND);
    struct tr_llm_endpoint *ep = tr_llm_endpoint_get(url, 2, 1000, 4000);
    assert_ptr_equal(tr_llm_endpoint_get(url, 9, 9, 9), ep); /* one per URL; the first parameters stay */
    assert_int_equal(tr_llm_endpoint_end_cooldown(url), TR_EINVAL);
    tr_llm_endpoint_record(ep, 10, 0, 0);
    tr_llm_endpoint_record(ep, 10, 0, 0);
    assert_int_equal(tr_llm_endpoint_stats(url, 10, &b), 0);
    assert_int_equal(b.state, TR_LLM_BREAKER_OPEN);
    assert_int_equal(b.threshold, 2);
    assert_int_equal(b.failures, 2);
    assert_int_equal(tr_llm_endpoint_stats(url, 1010, &b), 0);
    assert_int_equal(b.state, TR_LLM_BREAKER_HALF_OPEN);
    assert_false(tr_llm_endpoint_allow(ep, 500, &probe, &wait));
    assert_int_equal(wait, 510);
    /* Skipping the cool-down makes the next call the probe. */
    assert_int_equal(tr_llm_endpoint_end_cooldown(url), 0);
    assert_int_equal(tr_llm_endpoint_stats(url, 11, &b), 0);
    assert_int_equal(b.state, TR_LLM_BREAKER_HALF_OPEN);
    assert_true(tr_llm_endpoint_allow(ep, 11, &probe, &wait));
    assert_true(probe);
    tr_llm_endpoint_record(ep, 12, 1, 1);
    assert_int_equal(tr_llm_endpoint_stats(url, 12, &b), 0);
    assert_int_equal(b.state, TR_LLM_BREAKER_CLOSED);
    tr_llm_endpoint_foreach(12, count_cb, &n);
    assert_int_equal(n, 1);
    assert_int_equal(tr_llm_endpoint_reset(url), 0);
    assert_int_equal(tr_llm_endpoint_stats(url, 12, &b), 0);
    assert_int_equal(b.failures, 0);
    assert_int_equal(b.successes, 0);
    assert_int_equal(b.threshold, 2);
}

/* ---- cost and models ------------------------------------------------------ */

static void test_cost_arithmetic(void **state)
{
    /* Prices in micro-USD per 1M tokens: 0.15 USD -> 150000. */
    assert_int_equal(tr_llm_cost(0, 150000, 0, 600000), 0);
    assert_int_equal(tr_llm_cost(1000, 150000, 0, 600000), 150);
    assert_int_equal(tr_llm_cost(1000, 150000, 1000, 600000), 750);
    assert_int_equal(tr_llm_cost(1, 150000, 0, 0), 1);          /* 0.15 rounds up */
    assert_int_equal(tr_llm_cost(1, 500000, 1, 500000), 1);     /* 0.5 + 0.5: one rounding */
    assert_int_equal(tr_llm_cost(3, 333333, 0, 0), 1);          /* 0.999999 */
    assert_int_equal(tr_llm_cost(1000001, 1000000, 0, 0), 1000001);
    assert_int_equal(tr_llm_cost(1234567, 2500000, 7654321, 10000000), 3086418 + 76543210);
    assert_int_equal(tr_llm_cost(0, 0, 0, 0), 0);
    /* Large but exact: 10^12 tokens at the price ceiling. */
    assert_int_equal(tr_llm_cost(1000000000000ull, TR_LLM_MAX_PRICE_MICRO, 0, 0), 1000000000000000000ull);
    assert_int_equal(tr_llm_cost(UINT64_MAX, TR_LLM_MAX_PRICE_MICRO, 0, 0), UINT64_MAX);
    assert_int_equal(tr_llm_cost(1, UINT64_MAX, 0, 0), 18446744073710ull); /* ceil(UINT64_MAX / 10^6) */
    assert_int_equal(tr_llm_cost(UINT64_MAX, UINT64_MAX, 0, 0), UINT64_MAX);
}

static void test_builtin_models(void **state)
{
    struct tr_llm_models *m = tr_llm_models_builtin();
    int unknown = -1;

    assert_ptr_equal(tr_llm_models_builtin(), m);
    assert_true(tr_llm_models_count(m) >= 5);
    const struct tr_llm_model *e = tr_llm_models_find(m, "gpt-4o-mini");
    assert_non_null(e);
    assert_int_equal(e->prompt_micro, 150000);
    assert_int_equal(e->completion_micro, 600000);
    assert_int_equal(e->context_tokens, 128000);
    assert_string_equal(e->provider, "openai");
    /* A dated snapshot takes its family's price; the longest prefix wins. */
    assert_ptr_equal(tr_llm_models_find(m, "gpt-4o-mini-2024-07-18"), e);
    assert_string_equal(tr_llm_models_find(m, "gpt-4o-2024-08-06")->name, "gpt-4o");
    assert_null(tr_llm_models_find(m, "gpt-4o-minix"));
    assert_null(tr_llm_models_find(m, "gpt-4o-mini-x"));
    assert_null(tr_llm_models_find(m, "gpt"));
    assert_null(tr_llm_models_find(m, ""));
    assert_null(tr_llm_models_find(NULL, "gpt-4o"));

    assert_int_equal(tr_llm_models_cost(m, "gpt-4o-mini", 1000, 1000, &unknown), 750);
    assert_int_equal(unknown, 0);
    assert_int_equal(tr_llm_models_cost(m, "mock-gpt", 1000, 1000, &unknown), 0);
    assert_int_equal(unknown, 0);
    assert_int_equal(tr_llm_models_cost(m, "mock-priced", 1000, 1000, &unknown), 3000);
    /* Unknown: free, flagged every time (logged once). */
    assert_int_equal(tr_llm_models_cost(m, "no-such-model", 1000, 1000, &unknown), 0);
    assert_int_equal(unknown, 1);
    assert_int_equal(tr_llm_models_cost(m, "no-such-model", 1, 1, &unknown), 0);
    assert_int_equal(unknown, 1);
    tr_llm_models_free(m); /* a no-op for the built-in table */
    assert_non_null(tr_llm_models_find(tr_llm_models_builtin(), "gpt-4o"));
}

static void models_fail(const char *text, int code, const char *needle)
{
    struct tr_llm_models *m = (struct tr_llm_models *)1;
    struct tr_err err = {0};
    assert_int_equal(tr_llm_models_parse(text, strlen(text), &m, &err), code);
    assert_null(m);
    if (strstr(err.msg, needle) == NULL)
        fail_msg("error \"%s\" does not mention \"%s\"", err.msg, needle);
}

static void test_models_parse(void **state)
{
    const char *text = "{\"models\": {"
                       "\"gpt-4o-mini\": {\"prompt_per_mtok\": 0.15, \"completion_per_mtok\": 0.6,"
                       " \"provider\": \"openai\", \"context_tokens\": 128000},"
                       "\"claude-x\": {\"prompt_per_mtok\": 3, \"completion_per_mtok\": 15, \"provider\": \"anthropic\"},"
                       "\"tiny\": {\"prompt_per_mtok\": 0.000001, \"completion_per_mtok\": 0}}}";
    struct tr_llm_models *m = NULL;
    struct tr_err err = {0};

    if (tr_llm_models_parse(text, strlen(text), &m, &err) != 0)
        fail_msg("%s", err.msg);
    assert_int_equal(tr_llm_models_count(m), 3);
    const struct tr_llm_model *e = tr_llm_models_find(m, "claude-x");
    assert_non_null(e);
    assert_int_equal(e->prompt_micro, 3000000);
    assert_int_equal(e->completion_micro, 15000000);
    assert_int_equal(e->context_tokens, 0);
    assert_string_equal(e->provider, "anthropic");
    e = tr_llm_models_find(m, "tiny");
    assert_int_equal(e->prompt_micro, 1);
    assert_null(tr_llm_models_find(m, "gpt-4o")); /* a file replaces the built-in table */
    assert_int_equal(tr_llm_models_cost(m, "gpt-4o-mini", 2000000, 1000000, NULL), 900000);
    assert_int_equal(tr_llm_models_cost(m, "tiny", 1, 0, NULL), 1);
    tr_llm_models_free(m);

    assert_int_equal(tr_llm_models_parse(S("{\"models\": {}}"), &m, &err), 0);
    assert_int_equal(tr_llm_models_count(m), 0);
    tr_llm_models_free(m);

    models_fail("", TR_EINVAL, "line");
    models_fail("{\"models\": ", TR_EINVAL, "line");
    models_fail("[]", TR_EINVAL, "top level");
    models_fail("{}", TR_EINVAL, "\"models\"");
    models_fail("{\"models\": []}", TR_EINVAL, "\"models\"");
    models_fail("{\"models\": {}, \"extra\": 1}", TR_EINVAL, "extra");
    models_fail("{\"models\": {\"a\": 1}}", TR_EINVAL, "model \"a\"");
    models_fail("{\"models\": {\"a\": {\"completion_per_mtok\": 1}}}", TR_EINVAL, "prompt_per_mtok");
    models_fail("{\"models\": {\"a\": {\"prompt_per_mtok\": 1}}}", TR_EINVAL, "completion_per_mtok");
    models_fail("{\"models\": {\"a\": {\"prompt_per_mtok\": -1, \"completion_per_mtok\": 1}}}", TR_EINVAL,
                "prompt_per_mtok");
    models_fail("{\"models\": {\"a\": {\"prompt_per_mtok\": 1, \"completion_per_mtok\": -0.5}}}", TR_EINVAL,
                "completion_per_mtok");
    models_fail("{\"models\": {\"a\": {\"prompt_per_mtok\": 1000001, \"completion_per_mtok\": 1}}}", TR_EINVAL,
                "1000000");
    models_fail("{\"models\": {\"a\": {\"prompt_per_mtok\": 1e7, \"completion_per_mtok\": 1}}}", TR_EINVAL,
                "1000000");
    models_fail("{\"models\": {\"a\": {\"prompt_per_mtok\": \"1\", \"completion_per_mtok\": 1}}}", TR_EINVAL,
                "number");
    models_fail("{\"models\": {\"a\": {\"prompt_per_mtok\": 1, \"completion_per_mtok\": 1, \"promt\": 1}}}",
                TR_EINVAL, "unknown key \"promt\"");
    models_fail("{\"models\": {\"a\": {\"prompt_per_mtok\": 1, \"completion_per_mtok\": 1, \"provider\": \"x\"}}}",
                TR_EINVAL, "provider");
    models_fail("{\"models\": {\"a\": {\"prompt_per_mtok\": 1, \"completion_per_mtok\": 1, \"context_tokens\": 0}}}",
                TR_EINVAL, "context_tokens");
    models_fail("{\"models\": {\"a\": {\"prompt_per_mtok\": 1, \"completion_per_mtok\": 1, \"context_tokens\": 1.5}}}",
                TR_EINVAL, "context_tokens");
    models_fail("{\"models\": {\"\": {\"prompt_per_mtok\": 1, \"completion_per_mtok\": 1}}}", TR_EINVAL,
                "model name");
    models_fail("{\"models\": {\"a\": {\"prompt_per_mtok\": 1, \"completion_per_mtok\": 1},"
                " \"a\": {\"prompt_per_mtok\": 2, \"completion_per_mtok\": 2}}}",
                TR_EINVAL, "duplicate");

    char name[200], doc[400];
    memset(name, 'n', TR_LLM_MODEL_NAME_MAX + 1);
    name[TR_LLM_MODEL_NAME_MAX + 1] = '\0';
    snprintf(doc, sizeof doc, "{\"models\": {\"%s\": {\"prompt_per_mtok\": 1, \"completion_per_mtok\": 1}}}", name);
    models_fail(doc, TR_EINVAL, "model name");
    assert_int_equal(tr_llm_models_parse("{}", TR_LLM_MODELS_FILE_MAX + 1, &m, &err), TR_ETOOBIG);
}

static void test_models_limits(void **state)
{
    /* One model over the count limit. */
    size_t cap = (size_t)(TR_LLM_MODELS_MAX + 1) * 80 + 64;
    char *doc = malloc(cap);
    size_t off = (size_t)snprintf(doc, cap, "{\"models\": {");
    for (int i = 0; i <= TR_LLM_MODELS_MAX; i++)
        off += (size_t)snprintf(doc + off, cap - off, "%s\"m%d\": {\"prompt_per_mtok\": 1, \"completion_per_mtok\": 2}",
                                i ? "," : "", i);
    snprintf(doc + off, cap - off, "}}");
    models_fail(doc, TR_ELIMIT, "more than");
    free(doc);
}

static void test_models_load(void **state)
{
    char dir[] = "/tmp/llm-unit-XXXXXX", path[64];
    struct tr_llm_models *m = NULL;
    struct tr_err err = {0};
    FILE *f;

    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/models.json", dir);
    assert_int_equal(tr_llm_models_load(path, &m, &err), TR_ENOTFOUND);
    assert_non_null(strstr(err.msg, path));

    f = fopen(path, "w");
    fputs("{\"models\": {\"x\": {\"prompt_per_mtok\": 2, \"completion_per_mtok\": 4}}}", f);
    fclose(f);
    assert_int_equal(tr_llm_models_load(path, &m, &err), 0);
    assert_int_equal(tr_llm_models_count(m), 1);
    assert_int_equal(tr_llm_models_cost(m, "x", 500000, 250000, NULL), 2000000);
    tr_llm_models_free(m);

    f = fopen(path, "w");
    fputs("{\"models\": {\"x\": {\"prompt_per_mtok\": 2}}}", f);
    fclose(f);
    assert_int_equal(tr_llm_models_load(path, &m, &err), TR_EINVAL);
    assert_non_null(strstr(err.msg, path));           /* the file is named */
    assert_non_null(strstr(err.msg, "completion_per_mtok")); /* and the field */
    unlink(path);
    rmdir(dir);
}

/* ---- the actor in deterministic mode ---------------------------------------
 * No I/O there (tr_http_start answers TR_ENOTSUP), so every attempt fails
 * to start: this drives the retry timers and the answers on virtual time. */

struct det_call {
    tr_actor_id llm;
    const char *req;
    int done;
    char reply[1024];
    size_t reply_len;
};

static int det_client_init(struct tr_ctx *ctx, void *state, void *arg)
{
    struct det_call *c = arg;
    uint64_t corr;
    *(struct det_call **)state = c;
    struct tr_msg *m = NULL;
    if (tr_llm_call_from_json(c->req, strlen(c->req), &m, NULL) != 0) /* a malformed call, sent as is */
        m = tr_msg_make(TR_MSG_LLM_CALL, c->req, (uint32_t)strlen(c->req));
    assert_int_equal(tr_tell(ctx, c->llm, TR_MSG_LLM_CALL, m->data, m->len), 0);
    /* A one-way LLM_CALL cannot be answered: it is dropped (above); a
     * request is answered. */
    assert_int_equal(tr_request(ctx, c->llm, m, 0, &corr), 0);
    return 0;
}

static int det_client_receive(struct tr_ctx *ctx, void *state, struct tr_msg *msg)
{
    struct det_call *c = *(struct det_call **)state;
    assert_int_equal(msg->type, TR_MSG_LLM_RESULT);
    assert_true(msg->len < sizeof c->reply);
    memcpy(c->reply, msg->data, msg->len);
    c->reply_len = msg->len;
    c->done++;
    return 0;
}

static const struct tr_behavior det_client = {
    .name = "det-client",
    .state_size = sizeof(struct det_call *),
    .init = det_client_init,
    .receive = det_client_receive,
};

static json_t *det_run(struct tr_rt *rt, struct det_call *c, uint64_t *elapsed)
{
    tr_actor_id id;
    struct tr_spawn_opts so = {.behavior = &det_client, .arg = c};
    uint64_t t0 = tr_rt_now_ms(rt);
    assert_int_equal(tr_spawn(rt, &so, &id), 0);
    for (int i = 0; i < 10000 && !c->done; i++) {
        tr_rt_run_until_idle(rt, 100000);
        if (!c->done)
            tr_rt_advance(rt, 1);
    }
    tr_rt_run_until_idle(rt, 100000);
    assert_int_equal(c->done, 1);
    *elapsed = tr_rt_now_ms(rt) - t0;
    json_t *r = h_llm_result_json(c->reply, c->reply_len);
    assert_non_null(r);
    return r;
}

static void test_actor_deterministic(void **state)
{
    const char *url = "http://det.invalid/v1";
    struct tr_rt *rt;
    struct tr_rt_opts o = {.deterministic = 1, .seed = 42};
    struct tr_node_env env = {.llm_timeout_ms = 1000};
    struct tr_llm_config cfg = {.base_url = url, .max_attempts = 4, .backoff_base_ms = 100,
                                .backoff_cap_ms = 1000, .breaker_threshold = 2};
    tr_actor_id llm;
    uint64_t elapsed;

    assert_int_equal(tr_rt_new(&o, &rt), 0);
    assert_int_equal(tr_llm_spawn_config(rt, &env, &cfg, 0, &llm), 0);

    /* Four attempts that cannot start, three backoff waits on virtual time:
     * each at most 100, 200, 400 ms. */
    struct det_call c1 = {.llm = llm,
                          .req = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
                                 "\"run_id\":\"run_1\"}"};
    json_t *r = det_run(rt, &c1, &elapsed);
    assert_true(json_is_false(json_object_get(r, "ok")));
    json_t *e = json_object_get(r, "error");
    assert_string_equal(json_string_value(json_object_get(e, "code")), "unavailable");
    assert_true(json_is_true(json_object_get(e, "retryable")));
    assert_non_null(strstr(json_string_value(json_object_get(e, "message")), "4 attempts"));
    assert_non_null(strstr(json_string_value(json_object_get(e, "message")), "cannot start"));
    assert_int_equal(json_integer_value(json_object_get(e, "retry_after_ms")), 1000); /* min(cap, 100 * 2^4) */
    assert_true(elapsed <= 100 + 200 + 400 + 3);
    json_decref(r);
    /* Failures to start are not the endpoint's: the breaker stays closed. */
    struct tr_llm_breaker b;
    assert_int_equal(tr_llm_endpoint_stats(url, tr_rt_now_ms(rt), &b), 0);
    assert_int_equal(b.state, TR_LLM_BREAKER_CLOSED);
    assert_int_equal(b.failures, 0);

    /* An open breaker answers at once, with the time left. */
    struct tr_llm_endpoint *ep = tr_llm_endpoint_get(url, 0, 0, 0);
    tr_llm_endpoint_record(ep, tr_rt_now_ms(rt), 0, 0);
    tr_llm_endpoint_record(ep, tr_rt_now_ms(rt), 0, 0);
    struct det_call c2 = {.llm = llm, .req = c1.req};
    r = det_run(rt, &c2, &elapsed);
    e = json_object_get(r, "error");
    assert_string_equal(json_string_value(json_object_get(e, "code")), "breaker_open");
    assert_int_equal(json_integer_value(json_object_get(e, "retry_after_ms")), 2000);
    assert_int_equal(elapsed, 0);
    json_decref(r);

    /* A call that is not well formed is rejected without an attempt. */
    struct det_call c3 = {.llm = llm, .req = "{\"model\":\"m\",\"messages\":[]}"};
    r = det_run(rt, &c3, &elapsed);
    e = json_object_get(r, "error");
    assert_string_equal(json_string_value(json_object_get(e, "code")), "rejected");
    assert_true(json_is_false(json_object_get(e, "retryable")));
    json_decref(r);
    tr_rt_shutdown(rt);
}

int main(void)
{
    tr_log_set_level(TR_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_build_minimal),
        cmocka_unit_test(test_build_tools_and_temperature),
        cmocka_unit_test(test_build_errors),
        cmocka_unit_test(test_call_header),
        cmocka_unit_test(test_parse_content),
        cmocka_unit_test(test_parse_tool_calls),
        cmocka_unit_test(test_parse_lenient_shapes),
        cmocka_unit_test(test_parse_malformed),
        cmocka_unit_test(test_error_message),
        cmocka_unit_test(test_retry_after),
        cmocka_unit_test(test_backoff_bounds),
        cmocka_unit_test(test_breaker_transitions),
        cmocka_unit_test(test_breaker_defaults),
        cmocka_unit_test(test_endpoint_registry),
        cmocka_unit_test(test_cost_arithmetic),
        cmocka_unit_test(test_builtin_models),
        cmocka_unit_test(test_models_parse),
        cmocka_unit_test(test_models_limits),
        cmocka_unit_test(test_models_load),
        cmocka_unit_test(test_actor_deterministic),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
