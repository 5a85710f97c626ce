/* The tool executor's pure parts: URL host extraction (tricky URLs), host
 * normalisation, the allowlist decision, http and sandbox config parsing,
 * the sandbox command line, and result text sanitising. No runtime. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "actors/run.h"
#include "actors/tool.h"
#include "actors/wire.h"

static void expect_host(const char *url, const char *want)
{
    char host[TOOL_MAX_HOST];
    char *norm = NULL;
    struct tr_err err = {0};
    int rv = tool_url_host(url, host, sizeof(host), &norm, &err);
    if (rv != 0)
        fail_msg("%s: %s", url, err.msg);
    assert_string_equal(host, want);
    assert_non_null(norm);
    /* The URL the request is made with names the same host. */
    char again[TOOL_MAX_HOST];
    assert_int_equal(tool_url_host(norm, again, sizeof(again), NULL, &err), 0);
    assert_string_equal(again, want);
    tr_free(norm);
}

static void expect_bad_url(const char *url)
{
    char host[TOOL_MAX_HOST];
    char *norm = (char *)"unset";
    struct tr_err err = {0};
    assert_int_equal(tool_url_host(url, host, sizeof(host), &norm, &err), TR_EINVAL);
    assert_null(norm);
    assert_true(err.msg[0] != '\0');
}

static void test_url_host_plain(void **state)
{
    expect_host("http://example.com/x", "example.com");
    expect_host("https://example.com", "example.com");
    expect_host("http://example.com:8080/a?b=c", "example.com");
    expect_host("HTTP://EXAMPLE.COM", "example.com");
    expect_host("http://Api.Example.COM/v1", "api.example.com");
}

static void test_url_host_tricky(void **state)
{
    /* userinfo: the host is after the '@' */
    expect_host("http://user:pw@evil.com/", "evil.com");
    expect_host("http://allowed.com:80@evil.com/", "evil.com");
    /* '#' and '?' end the authority */
    expect_host("http://allowed.com#@evil.com/", "allowed.com");
    expect_host("http://allowed.com?@evil.com/", "allowed.com");
    /* IPv6 literals: brackets and zone dropped, lower case */
    expect_host("http://[::1]:8080/", "::1");
    expect_host("http://[FE80::1%25eth0]/", "fe80::1");
    expect_host("https://[::ffff:127.0.0.1]/", "::ffff:127.0.0.1");
    /* trailing dot: one is dropped */
    expect_host("http://example.com./", "example.com");
    expect_host("http://example.com../", "example.com.");
    /* IPv4 shorthands are what curl would connect to */
    expect_host("http://127.1/", "127.0.0.1");
    expect_host("http://2130706433/", "127.0.0.1");
    expect_host("http://0x7f.1/", "127.0.0.1");
    /* percent-encoded host names are decoded */
    expect_host("http://%65vil.com/", "evil.com");
    /* ... and an address written percent-encoded is read as curl will,
     * once decoded (found by tests/fuzz/llm) */
    expect_host("http://%35/", "0.0.0.5");
    expect_host("http:/%35//", "0.0.0.5");
    expect_host("http://%32%31%33%30%37%30%36%34%33%33/", "127.0.0.1");
}

static void test_url_host_bad(void **state)
{
    expect_bad_url("");
    expect_bad_url("ftp://example.com/");
    expect_bad_url("file:///etc/passwd");
    expect_bad_url("gopher://example.com/");
    expect_bad_url("example.com/no-scheme");
    expect_bad_url("http://exa mple.com/");
    expect_bad_url("http://user:pw@a.com@b.com/");
    expect_bad_url("http://evil.com%00.allowed.com/");
    char *huge = malloc(TOOL_MAX_URL + 100);
    memset(huge, 'a', TOOL_MAX_URL + 99);
    memcpy(huge, "http://", 7);
    huge[TOOL_MAX_URL + 99] = '\0';
    expect_bad_url(huge);
    free(huge);
    char host[TOOL_MAX_HOST];
    struct tr_err err = {0};
    assert_int_equal(tool_url_host(NULL, host, sizeof(host), NULL, &err), TR_EINVAL);
}

static void test_host_normalize(void **state)
{
    char out[TOOL_MAX_HOST];
    assert_int_equal(tool_host_normalize("Example.COM.", out, sizeof(out)), 0);
    assert_string_equal(out, "example.com");
    assert_int_equal(tool_host_normalize("[::1]", out, sizeof(out)), 0);
    assert_string_equal(out, "::1");
    assert_int_equal(tool_host_normalize("fe80::1%eth0", out, sizeof(out)), 0);
    assert_string_equal(out, "fe80::1");
    assert_int_equal(tool_host_normalize("", out, sizeof(out)), TR_EINVAL);
    assert_int_equal(tool_host_normalize(".", out, sizeof(out)), TR_EINVAL);
    assert_int_equal(tool_host_normalize("a/b", out, sizeof(out)), TR_EINVAL);
    assert_int_equal(tool_host_normalize("a@b", out, sizeof(out)), TR_EINVAL);
    assert_int_equal(tool_host_normalize("a b", out, sizeof(out)), TR_EINVAL);
    assert_int_equal(tool_host_normalize("example.com", out, 5), TR_EINVAL);
}

static void test_host_allowed(void **state)
{
    char *allow[] = {"example.com", "127.0.0.1", "::1"};
    assert_int_equal(tool_host_allowed("example.com", allow, 3), TOOL_HTTP_ALLOWED);
    assert_int_equal(tool_host_allowed("EXAMPLE.com.", allow, 3), TOOL_HTTP_ALLOWED);
    assert_int_equal(tool_host_allowed("[::1]", allow, 3), TOOL_HTTP_ALLOWED);
    assert_int_equal(tool_host_allowed("127.0.0.1", allow, 3), TOOL_HTTP_ALLOWED);
    /* exact match only: no suffixes, no prefixes, no other spellings */
    assert_int_equal(tool_host_allowed("api.example.com", allow, 3), TOOL_HTTP_REFUSED);
    assert_int_equal(tool_host_allowed("example.com.evil.com", allow, 3), TOOL_HTTP_REFUSED);
    assert_int_equal(tool_host_allowed("xexample.com", allow, 3), TOOL_HTTP_REFUSED);
    assert_int_equal(tool_host_allowed("localhost", allow, 3), TOOL_HTTP_REFUSED);
    assert_int_equal(tool_host_allowed("::ffff:127.0.0.1", allow, 3), TOOL_HTTP_REFUSED);
    assert_int_equal(tool_host_allowed("example.com", allow, 0), TOOL_HTTP_REFUSED);
    assert_int_equal(tool_host_allowed("", allow, 3), TOOL_HTTP_REFUSED);
}

/* Parse config text; on success return 0 and fill cfg. */
static int parse_http(const char *text, struct tool_http_cfg *cfg, struct tr_err *err)
{
    json_error_t jerr;
    json_t *j = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    assert_non_null(j);
    int rv = tool_http_cfg_parse(j, cfg, err);
    json_decref(j);
    return rv;
}

static void expect_http_error(const char *text, const char *needle)
{
    struct tool_http_cfg cfg;
    struct tr_err err = {0};
    assert_int_equal(parse_http(text, &cfg, &err), TR_EINVAL);
    if (!strstr(err.msg, needle))
        fail_msg("config %s: error \"%s\" lacks \"%s\"", text, err.msg, needle);
    assert_null(cfg.url);
    assert_null(cfg.headers);
    assert_null(cfg.allow);
}

static void test_http_cfg_ok(void **state)
{
    struct tool_http_cfg cfg;
    struct tr_err err = {0};
    assert_int_equal(parse_http("{\"url\": \"http://API.example.com:81/x\", \"headers\": {\"Authorization\": "
                                "\"Bearer t\", \"X-A\": \"1\"}, \"allow\": [\"api.example.com.\"]}",
                                &cfg, &err),
                     0);
    assert_string_equal(cfg.method, "POST");
    assert_string_equal(cfg.host, "api.example.com");
    assert_int_equal(cfg.n_headers, 2);
    assert_string_equal(cfg.headers[0], "Authorization: Bearer t");
    assert_string_equal(cfg.headers[1], "X-A: 1");
    assert_int_equal(cfg.n_allow, 1);
    assert_string_equal(cfg.allow[0], "api.example.com");
    assert_int_equal(tool_http_decide(&cfg, NULL, 0, &err), TOOL_HTTP_ALLOWED);
    tool_http_cfg_free(&cfg);

    assert_int_equal(parse_http("{\"url\": \"https://x.org\", \"method\": \"put\"}", &cfg, &err), 0);
    assert_string_equal(cfg.method, "PUT");
    assert_int_equal(cfg.n_allow, 0);
    tool_http_cfg_free(&cfg);
}

static void test_http_cfg_bad(void **state)
{
    expect_http_error("null", "must be an object");
    expect_http_error("[]", "must be an object");
    expect_http_error("{}", "config.url must be a string");
    expect_http_error("{\"url\": 5}", "config.url must be a string");
    expect_http_error("{\"url\": \"file:///etc/passwd\"}", "scheme must be http or https");
    expect_http_error("{\"url\": \"http://a\\u0000b/\"}", "NUL");
    expect_http_error("{\"url\": \"http://a.com\", \"method\": \"GET\"}", "config.method");
    expect_http_error("{\"url\": \"http://a.com\", \"method\": 1}", "config.method");
    expect_http_error("{\"url\": \"http://a.com\", \"headers\": []}", "config.headers");
    expect_http_error("{\"url\": \"http://a.com\", \"headers\": {\"X\": 1}}", "must be a string");
    expect_http_error("{\"url\": \"http://a.com\", \"headers\": {\"Bad Name\": \"v\"}}", "bad header name");
    expect_http_error("{\"url\": \"http://a.com\", \"headers\": {\"X\": \"a\\r\\nHost: evil\"}}", "control");
    expect_http_error("{\"url\": \"http://a.com\", \"headers\": {\"Idempotency-Key\": \"1\"}}", "set by the executor");
    expect_http_error("{\"url\": \"http://a.com\", \"headers\": {\"content-type\": \"x\"}}", "set by the executor");
    expect_http_error("{\"url\": \"http://a.com\", \"headers\": {\"Host\": \"evil\"}}", "set by the executor");
    expect_http_error("{\"url\": \"http://a.com\", \"allow\": \"a.com\"}", "config.allow must be an array");
    expect_http_error("{\"url\": \"http://a.com\", \"allow\": [1]}", "config.allow[0]");
    expect_http_error("{\"url\": \"http://a.com\", \"allow\": [\"a.com\", \"a.com/x\"]}", "config.allow[1]");
    expect_http_error("{\"url\": \"http://a.com\", \"allow\": [\"\"]}", "config.allow[0]");
}

static void test_http_decide(void **state)
{
    struct tool_http_cfg cfg;
    struct tr_err err = {0};
    const char *node[] = {"Internal.Example", "a.com"};

    /* no list: refused unless the node allows the host */
    assert_int_equal(parse_http("{\"url\": \"http://a.com/\"}", &cfg, &err), 0);
    assert_int_equal(tool_http_decide(&cfg, NULL, 0, &err), TOOL_HTTP_REFUSED);
    assert_non_null(strstr(err.msg, "no allow list"));
    assert_int_equal(tool_http_decide(&cfg, node, 2, &err), TOOL_HTTP_ALLOWED);
    tool_http_cfg_free(&cfg);

    /* an empty list is no list */
    assert_int_equal(parse_http("{\"url\": \"http://internal.example./\", \"allow\": []}", &cfg, &err), 0);
    assert_int_equal(tool_http_decide(&cfg, NULL, 0, &err), TOOL_HTTP_REFUSED);
    assert_int_equal(tool_http_decide(&cfg, node, 2, &err), TOOL_HTTP_ALLOWED);
    tool_http_cfg_free(&cfg);

    /* the tool's own list wins; the node list does not widen it */
    assert_int_equal(parse_http("{\"url\": \"http://a.com/\", \"allow\": [\"b.com\"]}", &cfg, &err), 0);
    assert_int_equal(tool_http_decide(&cfg, node, 2, &err), TOOL_HTTP_REFUSED);
    assert_non_null(strstr(err.msg, "a.com"));
    tool_http_cfg_free(&cfg);

    /* userinfo trick */
    assert_int_equal(parse_http("{\"url\": \"http://b.com@evil.com/\", \"allow\": [\"b.com\"]}", &cfg, &err), 0);
    assert_int_equal(tool_http_decide(&cfg, NULL, 0, &err), TOOL_HTTP_REFUSED);
    tool_http_cfg_free(&cfg);

    /* IPv6 entry with brackets matches the literal */
    assert_int_equal(parse_http("{\"url\": \"http://[::1]:9/\", \"allow\": [\"[::1]\"]}", &cfg, &err), 0);
    assert_int_equal(tool_http_decide(&cfg, NULL, 0, &err), TOOL_HTTP_ALLOWED);
    tool_http_cfg_free(&cfg);

    /* The host and the entries are normalised once, the tool's list like
     * the node's: "a.com.." is the host "a.com.", not "a.com". */
    assert_int_equal(parse_http("{\"url\": \"http://a.com../\", \"allow\": [\"a.com..\"]}", &cfg, &err), 0);
    assert_string_equal(cfg.host, "a.com.");
    assert_int_equal(tool_http_decide(&cfg, NULL, 0, &err), TOOL_HTTP_ALLOWED);
    tool_http_cfg_free(&cfg);
    assert_int_equal(parse_http("{\"url\": \"http://a.com../\", \"allow\": [\"a.com\"]}", &cfg, &err), 0);
    assert_int_equal(tool_http_decide(&cfg, NULL, 0, &err), TOOL_HTTP_REFUSED);
    tool_http_cfg_free(&cfg);
    assert_int_equal(parse_http("{\"url\": \"http://a.com../\"}", &cfg, &err), 0);
    assert_int_equal(tool_http_decide(&cfg, node, 2, &err), TOOL_HTTP_REFUSED);
    tool_http_cfg_free(&cfg);
}

static int parse_sandbox(const char *text, struct tool_sandbox_cfg *cfg, struct tr_err *err)
{
    json_error_t jerr;
    json_t *j = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    assert_non_null(j);
    int rv = tool_sandbox_cfg_parse(j, cfg, err);
    json_decref(j);
    return rv;
}

static void expect_sandbox_error(const char *text, const char *needle)
{
    struct tool_sandbox_cfg cfg;
    struct tr_err err = {0};
    assert_int_equal(parse_sandbox(text, &cfg, &err), TR_EINVAL);
    if (!strstr(err.msg, needle))
        fail_msg("config %s: error \"%s\" lacks \"%s\"", text, err.msg, needle);
    assert_null(cfg.argv);
}

static int argv_has(char **argv, const char *a, const char *b)
{
    for (size_t i = 0; argv[i]; i++)
        if (strcmp(argv[i], a) == 0 && (!b || (argv[i + 1] && strcmp(argv[i + 1], b) == 0)))
            return 1;
    return 0;
}

static void test_sandbox_cfg(void **state)
{
    struct tool_sandbox_cfg cfg;
    struct tr_err err = {0};

    assert_int_equal(parse_sandbox("{\"command\": [\"/bin/cat\", \"-\"]}", &cfg, &err), 0);
    assert_int_equal(cfg.runtime, TOOL_SANDBOX_BWRAP);
    assert_int_equal(cfg.argc, 2);
    char **argv = tool_sandbox_argv(&cfg, "bwrap");
    assert_string_equal(argv[0], "bwrap");
    assert_true(argv_has(argv, "--unshare-all", NULL));
    assert_true(argv_has(argv, "--die-with-parent", NULL));
    assert_true(argv_has(argv, "--cap-drop", "ALL"));
    assert_true(argv_has(argv, "--tmpfs", "/tmp"));
    assert_true(argv_has(argv, "--", "/bin/cat"));
    size_t n = 0;
    while (argv[n])
        n++;
    assert_string_equal(argv[n - 1], "-");
    tool_argv_free(argv);
    tool_sandbox_cfg_free(&cfg);

    assert_int_equal(parse_sandbox("{\"language\": \"python\", \"code\": \"print(1)\", \"runtime\": \"gvisor\"}",
                                   &cfg, &err),
                     0);
    assert_int_equal(cfg.runtime, TOOL_SANDBOX_GVISOR);
    argv = tool_sandbox_argv(&cfg, "runsc");
    assert_string_equal(argv[0], "runsc");
    assert_string_equal(argv[1], "--network=none");
    assert_string_equal(argv[2], "do");
    assert_string_equal(argv[3], "/usr/bin/python3");
    assert_string_equal(argv[4], "-c");
    assert_string_equal(argv[5], "print(1)");
    assert_null(argv[6]);
    tool_argv_free(argv);
    tool_sandbox_cfg_free(&cfg);

    assert_int_equal(parse_sandbox("{\"language\": \"sh\", \"code\": \"cat\"}", &cfg, &err), 0);
    assert_string_equal(cfg.argv[0], "/bin/sh");
    tool_sandbox_cfg_free(&cfg);

    expect_sandbox_error("5", "must be an object");
    expect_sandbox_error("{}", "needs command or language");
    expect_sandbox_error("{\"command\": []}", "non-empty array");
    expect_sandbox_error("{\"command\": \"ls\"}", "non-empty array");
    expect_sandbox_error("{\"command\": [\"ls\", 3]}", "config.command[1]");
    expect_sandbox_error("{\"command\": [\"\"]}", "config.command[0] is empty");
    expect_sandbox_error("{\"command\": [\"a\\u0000b\"]}", "without NUL");
    expect_sandbox_error("{\"language\": \"ruby\", \"code\": \"1\"}", "config.language");
    expect_sandbox_error("{\"language\": \"python\"}", "config.code");
    expect_sandbox_error("{\"language\": \"sh\", \"code\": \"x\", \"command\": [\"a\"]}", "both");
    expect_sandbox_error("{\"command\": [\"a\"], \"runtime\": \"docker\"}", "runtime");
}

/* Every field of both configs given every JSON type: a result, never a crash;
 * on error a message and nothing held. */
static void test_config_types(void **state)
{
    static const char *values[] = {"null", "true", "0", "-1", "1.5", "\"\"", "\"x\"", "\"http://a.com/\"",
                                   "[]", "[null]", "[\"a.com\"]", "[1, \"a\"]", "{}", "{\"a\": 1}",
                                   "{\"X-A\": \"v\"}", "\"POST\"", "\"python\"", "\"gvisor\""};
    static const char *http_fields[] = {"url", "method", "headers", "allow"};
    static const char *sb_fields[] = {"command", "language", "code", "runtime"};
    char text[512];
    struct tr_err err;
    for (size_t f = 0; f < 4; f++) {
        for (size_t v = 0; v < sizeof(values) / sizeof(values[0]); v++) {
            struct tool_http_cfg hc;
            snprintf(text, sizeof(text), "{\"url\": \"http://a.com/\", \"allow\": [\"a.com\"], \"%s\": %s}",
                     http_fields[f], values[v]);
            memset(&err, 0, sizeof(err));
            if (parse_http(text, &hc, &err) == 0) {
                assert_non_null(hc.url);
                tool_http_cfg_free(&hc);
            } else {
                assert_true(err.msg[0] != '\0');
                assert_null(hc.url);
            }
            struct tool_sandbox_cfg sc;
            snprintf(text, sizeof(text), "{\"language\": \"sh\", \"code\": \"true\", \"%s\": %s}", sb_fields[f],
                     values[v]);
            memset(&err, 0, sizeof(err));
            if (parse_sandbox(text, &sc, &err) == 0) {
                assert_non_null(sc.argv);
                char **argv = tool_sandbox_argv(&sc, "bwrap");
                tool_argv_free(argv);
                tool_sandbox_cfg_free(&sc);
            } else {
                assert_true(err.msg[0] != '\0');
                assert_null(sc.argv);
            }
        }
    }
}

static void test_json_text(void **state)
{
    json_t *s = tool_json_text("plain", 5);
    assert_string_equal(json_string_value(s), "plain");
    json_decref(s);
    s = tool_json_text("h\xc3\xa9!", 4); /* valid UTF-8 kept */
    assert_string_equal(json_string_value(s), "h\xc3\xa9!");
    json_decref(s);
    s = tool_json_text("a\xff" "b\0c\xc3", 6); /* bad byte, NUL, cut sequence */
    assert_string_equal(json_string_value(s), "a\xef\xbf\xbd" "b\xef\xbf\xbd" "c\xef\xbf\xbd");
    json_decref(s);
    s = tool_json_text("\xed\xa0\x80", 3); /* a surrogate is not UTF-8 */
    assert_int_equal(json_string_length(s), 9);
    json_decref(s);
    s = tool_json_text(NULL, 0);
    assert_string_equal(json_string_value(s), "");
    json_decref(s);
}

/* Records between actors (actors/wire.h): what is written reads back field
 * for field, and a record cut short or with a byte too many is refused
 * whole: a call is not made, a result becomes an error. */
static void test_call_record(void **state)
{
    struct tr_tool_call_rec c = {
        .name = "add", .kind = "http", .risk = "write", .config = "{\"url\":\"http://a/\"}",
        .arguments = "{\"a\":\"x\0y\"}", .arguments_len = 11, .idempotency_key = "ab01", .run_id = "run_1",
        .tenant = NULL, .version = 3, .timeout_ms = 1500, .step = 7, .call_index = 2,
    };
    size_t len;
    char *b = tr_tool_call_bytes(&c, &len);
    struct tr_tool_call_rec r;
    assert_int_equal(tr_tool_call_read(b, len, &r), 0);
    assert_string_equal(r.name, "add");
    assert_string_equal(r.kind, "http");
    assert_string_equal(r.risk, "write");
    assert_string_equal(r.config, "{\"url\":\"http://a/\"}");
    assert_int_equal(r.arguments_len, 11);
    assert_memory_equal(r.arguments, "{\"a\":\"x\0y\"}", 11);
    assert_string_equal(r.idempotency_key, "ab01");
    assert_string_equal(r.run_id, "run_1");
    assert_null(r.tenant);
    assert_int_equal(r.version, 3);
    assert_int_equal(r.timeout_ms, 1500);
    assert_int_equal(r.step, 7);
    assert_int_equal(r.call_index, 2);
    tr_tool_call_free(&r);
    for (size_t cut = 0; cut < len; cut++) {
        assert_int_equal(tr_tool_call_read(b, cut, &r), -1);
        assert_null(r.name);
    }
    char *longer = tr_malloc(len + 1);
    memcpy(longer, b, len);
    longer[len] = 0;
    assert_int_equal(tr_tool_call_read(longer, len + 1, &r), -1);
    tr_free(longer);
    tr_free(b);
}

static void test_result_records(void **state)
{
    struct tr_run_tool_result t = { .ok = true, .status = 201, .attempts = 2, .result = "{\"sum\":42}",
                                    .result_len = 10, .duration_ms = 4, .duration_us = 4100 };
    struct tr_msg *m = tr_run_tool_result_msg(&t);
    struct tr_run_tool_result tr;
    tr_run_tool_result_read(m->data, m->len, &tr);
    assert_true(tr.ok);
    assert_false(tr.is_error);
    assert_int_equal(tr.status, 201);
    assert_int_equal(tr.attempts, 2);
    assert_int_equal(tr.result_len, 10);
    assert_string_equal(tr.result, "{\"sum\":42}");
    assert_null(tr.error);
    assert_int_equal(tr.duration_us, 4100);
    tr_run_tool_result_free(&tr);
    for (uint32_t cut = 0; cut < m->len; cut++) {
        tr_run_tool_result_read(m->data, cut, &tr);
        assert_true(tr.is_error);
        assert_false(tr.ok);
        assert_null(tr.result);
        assert_string_equal(tr.error, "the tool executor sent an unreadable reply");
        tr_run_tool_result_free(&tr);
    }
    tr_msg_free(m);
    /* Failed without an error text: the reader names the result. */
    t = (struct tr_run_tool_result){ .ok = false, .result = "503 busy", .result_len = 8 };
    m = tr_run_tool_result_msg(&t);
    tr_run_tool_result_read(m->data, m->len, &tr);
    assert_true(tr.is_error);
    assert_string_equal(tr.error, "503 busy");
    tr_run_tool_result_free(&tr);
    tr_msg_free(m);

    struct tr_run_llm_result l = { .ok = true, .content = "hi", .n_calls = 1, .model = "m", .request_id = "r",
                                   .prompt_tokens = 10, .completion_tokens = 2, .cost_micro_usd = 7,
                                   .latency_ms = 3, .latency_us = 3100, .attempts = 1 };
    l.calls[0].id = "c1";
    l.calls[0].name = "add";
    l.calls[0].arguments = "{}";
    m = tr_run_llm_result_msg(&l, "tool_calls");
    struct tr_run_llm_result lr;
    tr_run_llm_result_read(m->data, m->len, &lr);
    assert_true(lr.ok);
    assert_string_equal(lr.content, "hi");
    assert_int_equal(lr.n_calls, 1);
    assert_string_equal(lr.calls[0].id, "c1");
    assert_string_equal(lr.calls[0].name, "add");
    assert_string_equal(lr.calls[0].arguments, "{}");
    assert_int_equal(lr.finish_reason, 2); /* troupe_journal_FinishReason_ToolCalls */
    assert_string_equal(lr.model, "m");
    assert_int_equal(lr.prompt_tokens, 10);
    assert_int_equal(lr.cost_micro_usd, 7);
    assert_int_equal(lr.latency_us, 3100);
    tr_run_llm_result_free(&lr);
    for (uint32_t cut = 0; cut < m->len; cut++) {
        tr_run_llm_result_read(m->data, cut, &lr);
        assert_false(lr.ok);
        assert_true(lr.retryable);
        assert_string_equal(lr.error_code, "bad_response");
        assert_int_equal(lr.n_calls, 0);
        assert_null(lr.content);
        tr_run_llm_result_free(&lr);
    }
    tr_msg_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_url_host_plain),  cmocka_unit_test(test_url_host_tricky),
        cmocka_unit_test(test_url_host_bad),    cmocka_unit_test(test_host_normalize),
        cmocka_unit_test(test_host_allowed),    cmocka_unit_test(test_http_cfg_ok),
        cmocka_unit_test(test_http_cfg_bad),    cmocka_unit_test(test_http_decide),
        cmocka_unit_test(test_sandbox_cfg),     cmocka_unit_test(test_json_text),
        cmocka_unit_test(test_config_types),    cmocka_unit_test(test_call_record),
        cmocka_unit_test(test_result_records),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
