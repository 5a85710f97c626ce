/* gateway/: routing, query strings, cursors, times and request validation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "gateway/gw_int.h"

/* ---- routing ---------------------------------------------------------------- */

static void test_routes(void **st)
{
    struct gw_match m;
    assert_int_equal(gw_route("GET", "/healthz", &m), 200);
    assert_int_equal(m.route, GW_R_HEALTHZ);
    assert_int_equal(gw_route("GET", "/metrics", &m), 200);
    assert_int_equal(gw_route("GET", "/v1/cluster", &m), 200);
    assert_int_equal(gw_route("POST", "/v1/runs", &m), 200);
    assert_int_equal(m.route, GW_R_RUNS);
    assert_int_equal(gw_route("GET", "/v1/runs", &m), 200);
    assert_int_equal(gw_route("DELETE", "/v1/runs", &m), 405);
    assert_string_equal(m.allow, "GET, POST");
    assert_int_equal(gw_route("GET", "/v1/runs/run_00000000000000ff", &m), 200);
    assert_int_equal(m.route, GW_R_RUN);
    assert_string_equal(m.param, "run_00000000000000ff");
    assert_int_equal(gw_route("POST", "/v1/runs/run_1", &m), 405);
    assert_int_equal(gw_route("GET", "/v1/runs/x/events", &m), 200);
    assert_int_equal(m.route, GW_R_RUN_EVENTS);
    assert_string_equal(m.param, "x");
    assert_int_equal(gw_route("POST", "/v1/runs/x/cancel", &m), 200);
    assert_int_equal(m.route, GW_R_RUN_CANCEL);
    assert_int_equal(gw_route("GET", "/v1/runs/x/cancel", &m), 405);
    assert_int_equal(gw_route("GET", "/v1/runs/x/ws", &m), 200);
    assert_int_equal(m.route, GW_R_RUN_WS);
    assert_int_equal(gw_route("GET", "/v1/runs/x/y/events", &m), 404);
    assert_int_equal(gw_route("GET", "/v1/runs/", &m), 404);
    assert_int_equal(gw_route("GET", "/v1/runs//events", &m), 404);
    assert_int_equal(gw_route("GET", "/v1/approvals", &m), 200);
    assert_int_equal(gw_route("POST", "/v1/approvals/apr%2D1", &m), 200);
    assert_int_equal(m.route, GW_R_APPROVAL);
    assert_string_equal(m.param, "apr-1");
    assert_int_equal(gw_route("POST", "/v1/approvals/a%2Fb", &m), 404);   /* decoded '/' */
    assert_int_equal(gw_route("POST", "/v1/approvals/a%00b", &m), 404);   /* NUL */
    assert_int_equal(gw_route("POST", "/v1/approvals/a%zzb", &m), 404);   /* bad escape */
    assert_int_equal(gw_route("POST", "/v1/approvals/a%2", &m), 404);     /* short escape */
    assert_int_equal(gw_route("POST", "/v1/tools", &m), 200);
    assert_int_equal(gw_route("GET", "/v1/tools/search", &m), 200);
    assert_int_equal(m.route, GW_R_TOOL);
    assert_int_equal(gw_route("POST", "/v1/tools/search/disable", &m), 200);
    assert_int_equal(m.route, GW_R_TOOL_DISABLE);
    assert_int_equal(gw_route("POST", "/v1/tools/search/enable", &m), 200);
    assert_int_equal(m.route, GW_R_TOOL_ENABLE);
    assert_int_equal(gw_route("GET", "/v1/tools/search/enable", &m), 405);
    assert_int_equal(gw_route("GET", "/v1/nope", &m), 404);
    assert_int_equal(gw_route("GET", "/", &m), 200); /* the dashboard */
    assert_int_equal(m.route, GW_R_WEB_INDEX);
    assert_int_equal(gw_route("GET", "/ui/app.js", &m), 200);
    assert_int_equal(m.route, GW_R_WEB);
    assert_int_equal(gw_route("GET", "/ui/a/b.js", &m), 404);
    assert_int_equal(gw_route("GET", "/nope", &m), 404);
    assert_int_equal(gw_route("GET", "/v1/runsx", &m), 404);
    assert_int_equal(gw_route("POS", "/v1/runs", &m), 405);   /* a method that is a prefix of one */
    assert_int_equal(gw_route("", "/v1/runs", &m), 405);
    char long_path[600];
    memset(long_path, 'a', sizeof long_path);
    memcpy(long_path, "/v1/runs/", 9);
    long_path[sizeof long_path - 1] = 0;
    assert_int_equal(gw_route("GET", long_path, &m), 404); /* parameter too long */
    assert_string_equal(gw_route_name(GW_R_RUN_EVENTS), "run_events");
}

static void test_query(void **st)
{
    char v[16];
    assert_int_equal(gw_query_get("a=1&status=running&b", "status", v, sizeof v), 1);
    assert_string_equal(v, "running");
    assert_int_equal(gw_query_get("a=1&b", "b", v, sizeof v), 1);
    assert_string_equal(v, "");
    assert_int_equal(gw_query_get("", "b", v, sizeof v), 0);
    assert_int_equal(gw_query_get("bb=1", "b", v, sizeof v), 0);
    assert_int_equal(gw_query_get("x=a+b%21", "x", v, sizeof v), 1);
    assert_string_equal(v, "a b!");
    assert_int_equal(gw_query_get("x=%zz", "x", v, sizeof v), -1);
    assert_int_equal(gw_query_get("x=%00", "x", v, sizeof v), -1);
    assert_int_equal(gw_query_get("x=0123456789abcdef0123", "x", v, sizeof v), -1);
    uint64_t u;
    assert_int_equal(gw_parse_u64("0", &u), TR_OK);
    assert_int_equal(u, 0);
    assert_int_equal(gw_parse_u64("18446744073709551615", &u), TR_OK);
    assert_true(u == UINT64_MAX);
    assert_int_equal(gw_parse_u64("18446744073709551616", &u), TR_EINVAL);
    assert_int_equal(gw_parse_u64("-1", &u), TR_EINVAL);
    assert_int_equal(gw_parse_u64("+1", &u), TR_EINVAL);
    assert_int_equal(gw_parse_u64(" 1", &u), TR_EINVAL);
    assert_int_equal(gw_parse_u64("1.5", &u), TR_EINVAL);
    assert_int_equal(gw_parse_u64("", &u), TR_EINVAL);
}

static void test_cursor(void **st)
{
    unsigned char key[8] = { 0, 1, 2, 0xab, 0xcd, 0xef, 0xff, 0x10 }, back[16];
    char c[GW_CURSOR_MAX];
    size_t n;
    assert_int_equal(gw_cursor_encode(key, sizeof key, c, sizeof c), TR_OK);
    assert_int_equal(gw_cursor_decode(c, back, sizeof back, &n), TR_OK);
    assert_int_equal(n, 8);
    assert_memory_equal(back, key, 8);
    assert_int_equal(gw_cursor_decode("", back, sizeof back, &n), TR_EINVAL);
    assert_int_equal(gw_cursor_decode("c1", back, sizeof back, &n), TR_EINVAL);
    assert_int_equal(gw_cursor_decode("c1abc", back, sizeof back, &n), TR_EINVAL);
    assert_int_equal(gw_cursor_decode("c1zz", back, sizeof back, &n), TR_EINVAL);
    assert_int_equal(gw_cursor_decode("c1AB", back, sizeof back, &n), TR_EINVAL);
    assert_int_equal(gw_cursor_decode("x1ab", back, sizeof back, &n), TR_EINVAL);
    assert_int_equal(gw_cursor_decode("c1000102030405060708", back, 8, &n), TR_EINVAL); /* 9 > cap */
    assert_int_equal(gw_cursor_encode(key, 8, c, 10), TR_ETOOBIG);
    assert_int_equal(gw_cursor_encode(key, 0, c, sizeof c), TR_ETOOBIG);
}

static void test_time(void **st)
{
    char t[GW_TIME_TEXT];
    gw_time_text(0, t);
    assert_string_equal(t, "1970-01-01T00:00:00.000000Z");
    gw_time_text(1700000000123456LL, t);
    assert_string_equal(t, "2023-11-14T22:13:20.123456Z");
    gw_time_text(-1, t);
    assert_string_equal(t, "1969-12-31T23:59:59.999999Z");
}

/* ---- POST /v1/runs bodies -------------------------------------------------------- */

static struct gw_error err;

static int run_body(const char *body)
{
    struct gw_run_req r;
    memset(&err, 0, sizeof err);
    int rv = gw_run_req_parse(body, strlen(body), &r, &err);
    if (rv == 0)
        gw_run_req_free(&r);
    return rv;
}

#define REFUSED(body, code_, needle)                                        \
    do {                                                                    \
        assert_int_equal(run_body(body), -1);                              \
        assert_int_equal(err.status, 400);                                  \
        assert_string_equal(err.code, code_);                               \
        if (strstr(err.msg, needle) == NULL)                                \
            fail_msg("message \"%s\" lacks \"%s\"", err.msg, needle);      \
    } while (0)

static void test_run_body_ok(void **st)
{
    struct gw_run_req r;
    const char *b = "{\"goal\":\"write a haiku\",\"agent\":{\"model\":\"gpt\",\"system\":\"be brief\","
                    "\"tools\":[\"search\",\"finish\"],\"max_steps\":7,\"max_tokens\":1000,"
                    "\"max_cost_usd\":0.5,\"timeout_s\":60,\"temperature\":0.2},\"metadata\":{\"b\":1,\"a\":[true]}}";
    assert_int_equal(gw_run_req_parse(b, strlen(b), &r, &err), 0);
    assert_string_equal(r.goal, "write a haiku");
    assert_true(r.has_agent);
    assert_string_equal(r.model, "gpt");
    assert_int_equal(r.n_tools, 2);
    assert_string_equal(r.tools[1], "finish");
    assert_int_equal(r.max_steps, 7);
    assert_int_equal(r.max_tokens, 1000);
    assert_true(r.max_cost_usd == 0.5);
    assert_int_equal(r.timeout_s, 60);
    assert_string_equal(r.metadata, "{\"a\":[true],\"b\":1}");
    unsigned char d1[32];
    memcpy(d1, r.digest, 32);
    gw_run_req_free(&r);
    /* Same content, other key order and spacing: same digest. */
    const char *b2 = "{ \"metadata\":{\"a\":[true],\"b\":1}, \"agent\":{\"temperature\":0.2,\"timeout_s\":60,"
                     "\"max_cost_usd\":0.5,\"max_tokens\":1000,\"max_steps\":7,\"tools\":[\"search\",\"finish\"],"
                     "\"system\":\"be brief\",\"model\":\"gpt\"}, \"goal\":\"write a haiku\" }";
    assert_int_equal(gw_run_req_parse(b2, strlen(b2), &r, &err), 0);
    assert_memory_equal(d1, r.digest, 32);
    gw_run_req_free(&r);
    /* Another goal: another digest. */
    const char *b3 = "{\"goal\":\"write two haikus\"}";
    assert_int_equal(gw_run_req_parse(b3, strlen(b3), &r, &err), 0);
    assert_memory_not_equal(d1, r.digest, 32);
    assert_false(r.has_agent);
    assert_null(r.metadata);
    gw_run_req_free(&r);
    /* null counts as absent */
    assert_int_equal(run_body("{\"goal\":\"g\",\"agent\":null,\"metadata\":null}"), 0);
    assert_int_equal(run_body("{\"goal\":\"g\",\"agent\":{\"model\":null,\"tools\":null}}"), 0);
    assert_int_equal(run_body("{\"goal\":\"g\",\"agent\":{\"max_cost_usd\":2}}"), 0); /* integer as number */
}

static void test_run_body_refused(void **st)
{
    REFUSED("", "invalid_json", "empty");
    REFUSED("{", "invalid_json", "malformed JSON");
    REFUSED("[1]", "invalid_json", "JSON object");
    REFUSED("\"goal\"", "invalid_json", "malformed");
    REFUSED("{\"goal\":\"a\",\"goal\":\"b\"}", "invalid_json", "duplicate");
    REFUSED("{}", "missing_field", "goal");
    REFUSED("{\"goal\":null}", "missing_field", "goal");
    REFUSED("{\"goal\":\"\"}", "invalid_field", "goal: must not be empty");
    REFUSED("{\"goal\":1}", "invalid_field", "goal: must be a string");
    REFUSED("{\"goal\":[\"a\"]}", "invalid_field", "goal: must be a string");
    REFUSED("{\"goal\":\"g\",\"gaol\":1}", "unknown_field", "\"gaol\"");
    REFUSED("{\"goal\":\"g\",\"agent\":[]}", "invalid_field", "agent: must be an object");
    REFUSED("{\"goal\":\"g\",\"agent\":\"gpt\"}", "invalid_field", "agent: must be an object");
    REFUSED("{\"goal\":\"g\",\"agent\":{\"max_step\":3}}", "unknown_field", "agent.max_step");
    REFUSED("{\"goal\":\"g\",\"agent\":{\"model\":1}}", "invalid_field", "agent.model: must be a string");
    REFUSED("{\"goal\":\"g\",\"agent\":{\"model\":\"\"}}", "invalid_field", "agent.model");
    REFUSED("{\"goal\":\"g\",\"agent\":{\"system\":false}}", "invalid_field", "agent.system");
    REFUSED("{\"goal\":\"g\",\"agent\":{\"provider\":{}}}", "invalid_field", "agent.provider");
    REFUSED("{\"goal\":\"g\",\"agent\":{\"tools\":\"search\"}}", "invalid_field", "agent.tools");
    REFUSED("{\"goal\":\"g\",\"agent\":{\"tools\":[1]}}", "invalid_field", "agent.tools[0]");
    REFUSED("{\"goal\":\"g\",\"agent\":{\"tools\":[\"a b\"]}}", "invalid_field", "agent.tools[0]");
    REFUSED("{\"goal\":\"g\",\"agent\":{\"tools\":[\"a\",\"a\"]}}", "invalid_field", "twice");
    REFUSED("{\"goal\":\"g\",\"agent\":{\"max_steps\":\"7\"}}", "invalid_field", "agent.max_steps");
    REFUSED("{\"goal\":\"g\",\"agent\":{\"max_steps\":7.5}}", "invalid_field", "agent.max_steps");
    REFUSED("{\"goal\":\"g\",\"agent\":{\"max_steps\":0}}", "invalid_field", "agent.max_steps");
    REFUSED("{\"goal\":\"g\",\"agent\":{\"max_steps\":-1}}", "invalid_field", "agent.max_steps");
    REFUSED("{\"goal\":\"g\",\"agent\":{\"max_steps\":true}}", "invalid_field", "agent.max_steps");
    REFUSED("{\"goal\":\"g\",\"agent\":{\"max_tokens\":-5}}", "invalid_field", "agent.max_tokens");
    REFUSED("{\"goal\":\"g\",\"agent\":{\"max_tokens\":1e3}}", "invalid_field", "agent.max_tokens");
    REFUSED("{\"goal\":\"g\",\"agent\":{\"max_cost_usd\":\"1\"}}", "invalid_field", "agent.max_cost_usd");
    REFUSED("{\"goal\":\"g\",\"agent\":{\"max_cost_usd\":-0.1}}", "invalid_field", "agent.max_cost_usd");
    REFUSED("{\"goal\":\"g\",\"agent\":{\"max_cost_usd\":1e300}}", "invalid_field", "agent.max_cost_usd");
    REFUSED("{\"goal\":\"g\",\"agent\":{\"timeout_s\":[]}}", "invalid_field", "agent.timeout_s");
    REFUSED("{\"goal\":\"g\",\"agent\":{\"timeout_s\":99999999999}}", "invalid_field", "agent.timeout_s");
    REFUSED("{\"goal\":\"g\",\"agent\":{\"temperature\":3}}", "invalid_field", "agent.temperature");
    REFUSED("{\"goal\":\"g\",\"metadata\":[]}", "invalid_field", "metadata: must be an object");
    REFUSED("{\"goal\":\"g\",\"metadata\":\"x\"}", "invalid_field", "metadata");
    REFUSED("{\"goal\":\"g\\u0000x\"}", "invalid_json", "malformed");

    /* huge values */
    size_t n = GW_GOAL_MAX + 100;
    char *b = malloc(n + 32);
    strcpy(b, "{\"goal\":\"");
    memset(b + 9, 'x', GW_GOAL_MAX + 1);
    strcpy(b + 9 + GW_GOAL_MAX + 1, "\"}");
    REFUSED(b, "invalid_field", "goal: longer than");
    strcpy(b + 9 + GW_GOAL_MAX, "\"}"); /* exactly the limit */
    assert_int_equal(run_body(b), 0);
    free(b);
    b = malloc(GW_METADATA_MAX + 64);
    int o = sprintf(b, "{\"goal\":\"g\",\"metadata\":{\"k\":\"");
    memset(b + o, 'm', GW_METADATA_MAX);
    strcpy(b + o + GW_METADATA_MAX, "\"}}");
    REFUSED(b, "invalid_field", "metadata: larger than");
    free(b);
    char tools[4096];
    o = sprintf(tools, "{\"goal\":\"g\",\"agent\":{\"tools\":[");
    for (int i = 0; i <= GW_AGENT_TOOLS_MAX; i++)
        o += sprintf(tools + o, "%s\"t%d\"", i ? "," : "", i);
    strcpy(tools + o, "]}}");
    REFUSED(tools, "invalid_field", "more than");
}

/* Error bodies quote client bytes; they stay JSON when those bytes are not
 * UTF-8 (found by fuzz_gateway: the answer was a 500 "cannot encode"). */
static void test_error_json(void **st)
{
    (void)st;
    struct {
        const char *msg, *want;
    } cases[] = {
        { "no run caf\xc3\xa9", "no run caf\xc3\xa9" },           /* valid: unchanged */
        { "no run \xff", "no run \xef\xbf\xbd" },                  /* GET /v1/runs/%FF */
        { "caf\xc3", "caf\xef\xbf\xbd" },                          /* cut in a character */
        { "\xed\xa0\x80x", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbdx" }, /* a surrogate */
        { "\xc0\xafok", "\xef\xbf\xbd\xef\xbf\xbdok" },              /* overlong '/' */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *j = gw_error_json("not_found", cases[i].msg);
        assert_non_null(j);
        assert_string_equal(json_string_value(json_object_get(json_object_get(j, "error"), "code")), "not_found");
        assert_string_equal(json_string_value(json_object_get(json_object_get(j, "error"), "message")), cases[i].want);
        json_decref(j);
    }
    /* an unknown field quoted at 64 bytes, cut inside its last character */
    char body[128];
    snprintf(body, sizeof body, "{\"goal\":\"g\",\"%s\xc3\xa9\":1}",
             "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk"); /* 63 k */
    assert_int_equal(run_body(body), -1);
    assert_string_equal(err.code, "unknown_field");
    json_t *j = gw_error_json(err.code, err.msg);
    assert_non_null(j);
    json_decref(j);
}

static void test_idem_key(void **st)
{
    assert_int_equal(gw_idem_key_check("abc-123", &err), 0);
    assert_int_equal(gw_idem_key_check("", &err), -1);
    assert_int_equal(gw_idem_key_check("a b", &err), -1);
    assert_int_equal(gw_idem_key_check("a\x7f", &err), -1);
    char k[300];
    memset(k, 'k', sizeof k);
    k[255] = 0;
    assert_int_equal(gw_idem_key_check(k, &err), 0);
    k[255] = 'k';
    k[256] = 0;
    assert_int_equal(gw_idem_key_check(k, &err), -1);
    assert_string_equal(err.code, "invalid_header");
}

/* ---- POST /v1/tools bodies -------------------------------------------------------- */

static int tool_body(const char *body, struct gw_tool_req *t)
{
    memset(&err, 0, sizeof err);
    return gw_tool_req_parse(body, strlen(body), t, &err);
}

#define TOOL_REFUSED(body, code_, needle)                                   \
    do {                                                                    \
        struct gw_tool_req t_;                                              \
        assert_int_equal(tool_body(body, &t_), -1);                        \
        assert_int_equal(err.status, 400);                                  \
        assert_string_equal(err.code, code_);                               \
        if (strstr(err.msg, needle) == NULL)                                \
            fail_msg("message \"%s\" lacks \"%s\"", err.msg, needle);      \
    } while (0)

static void test_tool_body(void **st)
{
    struct gw_tool_req t;
    assert_int_equal(tool_body("{\"name\":\"search\",\"description\":\"web\",\"input_schema\":{\"type\":\"object\","
                               "\"properties\":{\"q\":{\"type\":\"string\"}},\"required\":[\"q\"]},\"risk\":\"write\","
                               "\"kind\":\"http\",\"config\":{\"url\":\"http://127.0.0.1:1/x\",\"allow\":[\"127.0.0.1\"]},"
                               "\"timeout_ms\":5000,\"enabled\":false}",
                               &t),
                     0);
    assert_string_equal(t.name, "search");
    assert_int_equal(t.risk, troupe_journal_Risk_Write);
    assert_int_equal(t.kind, troupe_cmd_ToolKind_Http);
    assert_int_equal(t.timeout_ms, 5000);
    assert_false(t.enabled);
    /* canonical: sorted keys */
    assert_string_equal(t.input_schema,
                        "{\"properties\":{\"q\":{\"type\":\"string\"}},\"required\":[\"q\"],\"type\":\"object\"}");
    gw_tool_req_free(&t);
    assert_int_equal(tool_body("{\"name\":\"calc\",\"kind\":\"builtin\"}", &t), 0);
    assert_string_equal(t.input_schema, "{\"type\":\"object\"}");
    assert_string_equal(t.config, "{}");
    assert_int_equal(t.risk, troupe_journal_Risk_Read);
    assert_true(t.enabled);
    assert_int_equal(t.timeout_ms, 30000);
    gw_tool_req_free(&t);

    TOOL_REFUSED("{}", "missing_field", "name");
    TOOL_REFUSED("{\"name\":5}", "invalid_field", "name");
    TOOL_REFUSED("{\"name\":\"a.b\",\"kind\":\"builtin\"}", "invalid_field", "name");
    TOOL_REFUSED("{\"name\":\"a\",\"kind\":\"builtin\",\"x\":1}", "unknown_field", "\"x\"");
    TOOL_REFUSED("{\"name\":\"a\",\"kind\":\"builtin\",\"risk\":\"high\"}", "invalid_field", "risk");
    TOOL_REFUSED("{\"name\":\"a\",\"kind\":\"builtin\",\"risk\":1}", "invalid_field", "risk");
    TOOL_REFUSED("{\"name\":\"a\",\"kind\":\"ftp\"}", "invalid_field", "kind");
    TOOL_REFUSED("{\"name\":\"a\",\"kind\":\"builtin\",\"timeout_ms\":0}", "invalid_field", "timeout_ms");
    TOOL_REFUSED("{\"name\":\"a\",\"kind\":\"builtin\",\"timeout_ms\":\"5\"}", "invalid_field", "timeout_ms");
    TOOL_REFUSED("{\"name\":\"a\",\"kind\":\"builtin\",\"enabled\":1}", "invalid_field", "enabled");
    TOOL_REFUSED("{\"name\":\"a\",\"kind\":\"builtin\",\"description\":[]}", "invalid_field", "description");
    TOOL_REFUSED("{\"name\":\"a\",\"kind\":\"builtin\",\"config\":[]}", "invalid_field", "config");
    TOOL_REFUSED("{\"name\":\"a\"}", "invalid_field", "config.url");
    TOOL_REFUSED("{\"name\":\"a\",\"config\":{\"url\":\"file:///etc/passwd\"}}", "invalid_field", "config.url");
    TOOL_REFUSED("{\"name\":\"a\",\"kind\":\"builtin\",\"input_schema\":\"object\"}", "invalid_field", "input_schema");
    TOOL_REFUSED("{\"name\":\"a\",\"kind\":\"builtin\",\"input_schema\":{\"prefixItems\":[]}}", "unsupported_schema",
                 "prefixItems");
    TOOL_REFUSED("{\"name\":\"a\",\"kind\":\"builtin\",\"input_schema\":{\"type\":\"strng\"}}", "invalid_schema",
                 "input_schema");
    TOOL_REFUSED("{\"name\":\"a\",\"kind\":\"builtin\",\"input_schema\":{\"$ref\":\"http://x/y\"}}",
                 "unsupported_schema", "input_schema");
}

static void test_decide_and_cancel_bodies(void **st)
{
    struct gw_decide_req d;
    const char *ok = "{\"decision\":\"approve\",\"reason\":\"fine\"}";
    assert_int_equal(gw_decide_req_parse(ok, strlen(ok), &d, &err), 0);
    assert_int_equal(d.decision, troupe_journal_Decision_Approve);
    assert_string_equal(d.reason, "fine");
    gw_decide_req_free(&d);
    const char *deny = "{\"decision\":\"deny\"}";
    assert_int_equal(gw_decide_req_parse(deny, strlen(deny), &d, &err), 0);
    assert_int_equal(d.decision, troupe_journal_Decision_Deny);
    assert_null(d.reason);
    const char *bad[] = { "{}", "{\"decision\":\"maybe\"}", "{\"decision\":1}", "{\"decision\":\"deny\",\"why\":1}",
                          "{\"decision\":\"deny\",\"reason\":5}", "[]", "", "{\"decision\":\"expired\"}" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(gw_decide_req_parse(bad[i], strlen(bad[i]), &d, &err), -1);
        assert_int_equal(err.status, 400);
    }
    char *reason;
    assert_int_equal(gw_cancel_req_parse("", 0, &reason, &err), 0);
    assert_null(reason);
    assert_int_equal(gw_cancel_req_parse(" \n", 2, &reason, &err), 0);
    assert_int_equal(gw_cancel_req_parse("{\"reason\":\"stop\"}", 17, &reason, &err), 0);
    assert_string_equal(reason, "stop");
    tr_free(reason);
    assert_int_equal(gw_cancel_req_parse("{\"x\":1}", 7, &reason, &err), -1);
    assert_string_equal(err.code, "unknown_field");
    assert_int_equal(gw_cancel_req_parse("{\"reason\":1}", 12, &reason, &err), -1);
}

/* ---- commands ------------------------------------------------------------------------ */

static void test_commands(void **st)
{
    struct tr_fb_builder b;
    tr_fb_builder_init(&b);
    struct gw_run_req r;
    const char *body = "{\"goal\":\"g\",\"agent\":{\"model\":\"m\",\"tools\":[\"a\"],\"max_steps\":3},\"metadata\":{\"k\":1}}";
    assert_int_equal(gw_run_req_parse(body, strlen(body), &r, &err), 0);
    struct gw_cmd_head h = { .time_us = 1700000000000000LL, .origin_node = 3 };
    struct gw_run_create_args a = { .run_id = 0xabc, .tenant = "default", .idempotency_key = "k1", .owner_node = 3,
                                    .created_by = "admin" };
    gw_build_run_create(&b, &h, &r, &a);
    size_t len;
    const uint8_t *data = tr_fb_builder_data(&b, &len);
    const struct troupe_cmd_Command *cmd = troupe_cmd_Command_verify_as_root(data, len, NULL);
    assert_non_null(cmd);
    assert_int_equal(troupe_cmd_Command_time_us(cmd), 1700000000000000LL);
    assert_int_equal(troupe_cmd_Command_origin_node(cmd), 3);
    const struct troupe_cmd_RunCreate *rc = troupe_cmd_Command_op_as_RunCreate(cmd);
    assert_non_null(rc);
    assert_string_equal(troupe_cmd_RunCreate_run_id(rc).ptr, "run_0000000000000abc");
    assert_string_equal(troupe_cmd_RunCreate_tenant(rc).ptr, "default");
    assert_string_equal(troupe_cmd_RunCreate_idempotency_key(rc).ptr, "k1");
    assert_int_equal(troupe_cmd_RunCreate_request_digest(rc).len, 32);
    assert_memory_equal(troupe_cmd_RunCreate_request_digest(rc).data, r.digest, 32);
    assert_string_equal(troupe_cmd_RunCreate_goal(rc).ptr, "g");
    assert_string_equal(troupe_cmd_RunCreate_metadata(rc).ptr, "{\"k\":1}");
    assert_int_equal(troupe_cmd_RunCreate_owner_node(rc), 3);
    assert_int_equal(troupe_cmd_RunCreate_epoch(rc), 1);
    assert_true(troupe_cmd_RunCreate_has_epoch(rc));
    const struct troupe_journal_AgentConfig *ag = troupe_cmd_RunCreate_agent(rc);
    assert_non_null(ag);
    assert_string_equal(troupe_journal_AgentConfig_model(ag).ptr, "m");
    assert_int_equal(troupe_journal_AgentConfig_max_steps(ag), 3);
    assert_int_equal(troupe_journal_AgentConfig_tools_len(ag), 1);
    gw_run_req_free(&r);

    gw_build_run_cancel(&b, &h, 0xabc, "stop", "admin");
    data = tr_fb_builder_data(&b, &len);
    cmd = troupe_cmd_Command_verify_as_root(data, len, NULL);
    assert_non_null(troupe_cmd_Command_op_as_RunCancel(cmd));
    assert_string_equal(troupe_cmd_RunCancel_reason(troupe_cmd_Command_op_as_RunCancel(cmd)).ptr, "stop");

    gw_build_approval_decide(&b, &h, "apr-1", "run_0000000000000abc", troupe_journal_Decision_Deny, NULL, "admin");
    data = tr_fb_builder_data(&b, &len);
    cmd = troupe_cmd_Command_verify_as_root(data, len, NULL);
    const struct troupe_cmd_ApprovalDecide *ad = troupe_cmd_Command_op_as_ApprovalDecide(cmd);
    assert_non_null(ad);
    assert_int_equal(troupe_cmd_ApprovalDecide_decision(ad), troupe_journal_Decision_Deny);
    assert_null(troupe_cmd_ApprovalDecide_reason(ad).ptr);

    gw_build_tool_set_enabled(&b, &h, "search", false);
    data = tr_fb_builder_data(&b, &len);
    cmd = troupe_cmd_Command_verify_as_root(data, len, NULL);
    assert_false(troupe_cmd_ToolSetEnabled_enabled(troupe_cmd_Command_op_as_ToolSetEnabled(cmd)));

    struct gw_tool_req t;
    assert_int_equal(tool_body("{\"name\":\"x\",\"kind\":\"sandbox\",\"risk\":\"irreversible\",\"timeout_ms\":9}", &t), 0);
    gw_build_tool_register(&b, &h, &t);
    data = tr_fb_builder_data(&b, &len);
    cmd = troupe_cmd_Command_verify_as_root(data, len, NULL);
    const struct troupe_cmd_Tool *tool = troupe_cmd_ToolRegister_tool(troupe_cmd_Command_op_as_ToolRegister(cmd));
    assert_string_equal(troupe_cmd_Tool_name(tool).ptr, "x");
    assert_int_equal(troupe_cmd_Tool_kind(tool), troupe_cmd_ToolKind_Sandbox);
    assert_int_equal(troupe_cmd_Tool_risk(tool), troupe_journal_Risk_Irreversible);
    assert_int_equal(troupe_cmd_Tool_timeout_ms(tool), 9);
    gw_tool_req_free(&t);
    tr_fb_builder_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_routes),         cmocka_unit_test(test_query),
        cmocka_unit_test(test_cursor),         cmocka_unit_test(test_time),
        cmocka_unit_test(test_run_body_ok),    cmocka_unit_test(test_run_body_refused),
        cmocka_unit_test(test_error_json),
        cmocka_unit_test(test_idem_key),       cmocka_unit_test(test_tool_body),
        cmocka_unit_test(test_decide_and_cancel_bodies), cmocka_unit_test(test_commands),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
