/* Unit tests of actors/jsonschema: error reports, refusals, limits, regex. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "actors/jsonschema.h"
#include "actors/jsonschema_int.h"

static json_t *parse(const char *text)
{
    json_error_t jerr;
    json_t *j = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    if (!j) {
        fail_msg("bad test JSON %s: %s", text, jerr.text);
    }
    return j;
}

static struct tr_schema *compile_ok(const char *text)
{
    json_t *j = parse(text);
    struct tr_schema *s = NULL;
    struct tr_err err;
    int rv = tr_schema_compile(j, &s, &err);
    json_decref(j);
    if (rv != 0) {
        fail_msg("compile %s: %s: %s", text, tr_errname(rv), err.msg);
    }
    return s;
}

/* Compile must fail with code and a message containing each of the
 * NULL-terminated substrings. */
static void compile_fails(const char *text, int code, ...)
{
    json_t *j = parse(text);
    struct tr_schema *s = NULL;
    struct tr_err err;
    int rv = tr_schema_compile(j, &s, &err);
    json_decref(j);
    if (rv != code) {
        tr_schema_free(s);
        fail_msg("compile %s: want %s, got %s (%s)", text, tr_errname(code), tr_errname(rv), rv ? err.msg : "");
    }
    assert_null(s);
    va_list ap;
    va_start(ap, code);
    for (const char *want; (want = va_arg(ap, const char *));) {
        if (!strstr(err.msg, want)) {
            fail_msg("compile %s: message \"%s\" lacks \"%s\"", text, err.msg, want);
        }
    }
    va_end(ap);
}

static int validate(struct tr_schema *s, const char *instance, struct tr_schema_errors *errs)
{
    json_t *j = parse(instance);
    int rv = tr_schema_validate(s, j, errs);
    json_decref(j);
    return rv;
}

static void expect_valid(const char *schema, const char *instance)
{
    struct tr_schema *s = compile_ok(schema);
    struct tr_schema_errors errs;
    int rv = validate(s, instance, &errs);
    if (rv != 0) {
        char buf[2048];
        tr_schema_errors_format(&errs, buf, sizeof buf);
        fail_msg("%s against %s: want valid, got %s:\n%s", instance, schema, tr_errname(rv), buf);
    }
    assert_int_equal(errs.count, 0);
    tr_schema_free(s);
}

/* Invalid, and the first error is at instance_ptr/schema_ptr with a message
 * containing msg. */
static void expect_error(const char *schema, const char *instance, const char *instance_ptr,
                         const char *schema_ptr, const char *msg)
{
    struct tr_schema *s = compile_ok(schema);
    struct tr_schema_errors errs;
    int rv = validate(s, instance, &errs);
    if (rv != TR_EINVAL) {
        fail_msg("%s against %s: want EINVAL, got %s", instance, schema, tr_errname(rv));
    }
    assert_true(errs.count >= 1);
    const struct tr_schema_error *e = &errs.e[0];
    if (strcmp(e->instance_ptr, instance_ptr) != 0 || strcmp(e->schema_ptr, schema_ptr) != 0 ||
        !strstr(e->message, msg)) {
        fail_msg("%s against %s:\n  got  %s | %s | %s\n  want %s | %s | ...%s...", instance, schema,
                 e->instance_ptr, e->schema_ptr, e->message, instance_ptr, schema_ptr, msg);
    }
    tr_schema_free(s);
}

/* ------------------------------------------------------------------------ */

static void test_error_reports(void **state)
{
    (void)state;
    const char *tool = "{\"type\": \"object\", \"required\": [\"city\", \"days\"],"
                       " \"additionalProperties\": false,"
                       " \"properties\": {"
                       "   \"city\": {\"type\": \"string\", \"minLength\": 2},"
                       "   \"days\": {\"type\": \"integer\", \"minimum\": 1, \"maximum\": 14},"
                       "   \"units\": {\"enum\": [\"metric\", \"imperial\"]},"
                       "   \"tags\": {\"type\": \"array\", \"items\": {\"type\": \"string\"}, \"uniqueItems\": true}}}";
    expect_valid(tool, "{\"city\": \"Oslo\", \"days\": 3}");
    expect_valid(tool, "{\"city\": \"Oslo\", \"days\": 3.0, \"units\": \"metric\"}");
    expect_error(tool, "{\"city\": \"Oslo\"}", "", "#/required", "missing required property \"days\"");
    expect_error(tool, "{\"city\": \"O\", \"days\": 3}", "/city", "#/properties/city/minLength",
                 "must be at least 2 characters long, got 1");
    expect_error(tool, "{\"city\": \"Oslo\", \"days\": 30}", "/days", "#/properties/days/maximum",
                 "must be <= 14, got 30");
    expect_error(tool, "{\"city\": \"Oslo\", \"days\": 2.5}", "/days", "#/properties/days/type",
                 "must be of type integer, got number");
    expect_error(tool, "{\"city\": \"Oslo\", \"days\": 2, \"unit\": \"metric\"}", "/unit",
                 "#/additionalProperties", "property \"unit\" is not allowed (allowed: \"city\", \"days\", \"tags\", \"units\")");
    expect_error(tool, "{\"city\": \"Oslo\", \"days\": 2, \"units\": \"kelvin\"}", "/units",
                 "#/properties/units/enum", "must be one of [\"metric\",\"imperial\"], got \"kelvin\"");
    expect_error(tool, "{\"city\": \"Oslo\", \"days\": 2, \"tags\": [\"a\", 7]}", "/tags/1",
                 "#/properties/tags/items/type", "must be of type string, got integer");
    expect_error(tool, "{\"city\": \"Oslo\", \"days\": 2, \"tags\": [\"a\", \"b\", \"a\"]}", "/tags",
                 "#/properties/tags/uniqueItems", "items 0 and 2 are equal");
    expect_error(tool, "[]", "", "#/type", "must be of type object, got array");

    /* every error, in order, with pointers escaped per RFC 6901 */
    struct tr_schema *s = compile_ok("{\"properties\": {\"a/b\": {\"type\": \"string\"}, \"m~n\": {\"const\": 1}}}");
    struct tr_schema_errors errs;
    assert_int_equal(validate(s, "{\"a/b\": 1, \"m~n\": 2}", &errs), TR_EINVAL);
    assert_int_equal(errs.count, 2);
    assert_int_equal(errs.truncated, 0);
    assert_string_equal(errs.e[0].instance_ptr, "/a~1b");
    assert_string_equal(errs.e[0].schema_ptr, "#/properties/a~1b/type");
    assert_string_equal(errs.e[1].instance_ptr, "/m~0n");
    assert_string_equal(errs.e[1].message, "must be exactly 1, got 2");
    char buf[1024];
    size_t n = tr_schema_errors_format(&errs, buf, sizeof buf);
    assert_int_equal(n, strlen(buf));
    assert_string_equal(buf, "at /a~1b: must be of type string, got integer (schema #/properties/a~1b/type)\n"
                             "at /m~0n: must be exactly 1, got 2 (schema #/properties/m~0n/const)\n");
    char small[16];
    assert_int_equal(tr_schema_errors_format(&errs, small, sizeof small), n);
    assert_int_equal(strlen(small), sizeof small - 1);
    tr_schema_free(s);

    /* NULL errs is allowed */
    s = compile_ok("{\"type\": \"string\"}");
    json_t *one = json_integer(1);
    assert_int_equal(tr_schema_validate(s, one, NULL), TR_EINVAL);
    json_decref(one);
    tr_schema_free(s);
}

static void test_error_combinators(void **state)
{
    (void)state;
    expect_error("{\"anyOf\": [{\"type\": \"string\"}, {\"type\": \"integer\", \"minimum\": 10}]}", "3", "",
                 "#/anyOf",
                 "must match at least one of the 2 schemas in anyOf, but matches none; [0] must be of type string, "
                 "got integer; [1] must be >= 10, got 3");
    expect_error("{\"oneOf\": [{\"type\": \"integer\"}, {\"minimum\": 2}]}", "3", "", "#/oneOf",
                 "must match exactly one schema in oneOf, but matches 2 of them (0 and 1)");
    expect_error("{\"oneOf\": [{\"properties\": {\"a\": {\"type\": \"string\"}}}, {\"required\": [\"b\"]}]}",
                 "{\"a\": 1}", "", "#/oneOf", "[0] at /a: must be of type string, got integer; [1] missing required");
    expect_error("{\"not\": {\"type\": \"null\"}}", "null", "", "#/not", "must not match");
    expect_error("{\"if\": {\"properties\": {\"kind\": {\"const\": \"file\"}}}, \"then\": {\"required\": [\"path\"]}}",
                 "{\"kind\": \"file\"}", "", "#/then/required", "missing required property \"path\"");
    expect_error("{\"dependencies\": {\"card\": [\"billing\"]}}", "{\"card\": 1}", "", "#/dependencies",
                 "property \"card\" requires property \"billing\"");
    expect_error("{\"propertyNames\": {\"maxLength\": 3}}", "{\"abcd\": 1}", "/abcd", "#/propertyNames",
                 "property name \"abcd\" is not allowed: must be at most 3 characters long, got 4");
    expect_error("{\"items\": [{\"type\": \"string\"}], \"additionalItems\": false}", "[\"a\", 2]", "",
                 "#/additionalItems", "must have at most 1 items (additionalItems is false), got 2");
    expect_error("{\"contains\": {\"const\": 5}}", "[1, 2]", "", "#/contains", "must contain at least one item");
    expect_error("{\"properties\": {\"x\": false}}", "{\"x\": 1}", "/x", "#/properties/x",
                 "no value is allowed here");
    expect_error("{\"definitions\": {\"pos\": {\"type\": \"integer\", \"minimum\": 0}},"
                 " \"properties\": {\"n\": {\"$ref\": \"#/definitions/pos\"}}}",
                 "{\"n\": -1}", "/n", "#/definitions/pos/minimum", "must be >= 0, got -1");
    expect_error("{\"pattern\": \"^[a-z]+$\"}", "\"ABC\"", "", "#/pattern",
                 "must match the regular expression /^[a-z]+$/, got \"ABC\"");
    expect_error("{\"format\": \"date-time\"}", "\"yesterday\"", "", "#/format",
                 "must be a date-time (RFC 3339), such as 2024-01-31T12:00:00Z (format \"date-time\"), got \"yesterday\"");
    expect_error("{\"multipleOf\": 0.5}", "0.3", "", "#/multipleOf", "must be a multiple of 0.5, got 0.3");
    expect_error("{\"exclusiveMaximum\": 0.1}", "0.1", "", "#/exclusiveMaximum", "must be < 0.1, got 0.1");
}

static void test_error_truncation(void **state)
{
    (void)state;
    struct tr_schema *s = compile_ok("{\"required\": [\"a\",\"b\",\"c\",\"d\",\"e\",\"f\",\"g\",\"h\",\"i\",\"j\"]}");
    struct tr_schema_errors errs;
    assert_int_equal(validate(s, "{}", &errs), TR_EINVAL);
    assert_int_equal(errs.count, TR_SCHEMA_MAX_ERRORS);
    assert_int_equal(errs.truncated, 1);
    char buf[4096];
    tr_schema_errors_format(&errs, buf, sizeof buf);
    assert_non_null(strstr(buf, "(more errors not shown)"));
    tr_schema_free(s);

    /* exactly MAX errors: not truncated */
    s = compile_ok("{\"required\": [\"a\",\"b\",\"c\",\"d\",\"e\",\"f\",\"g\",\"h\"]}");
    assert_int_equal(validate(s, "{}", &errs), TR_EINVAL);
    assert_int_equal(errs.count, TR_SCHEMA_MAX_ERRORS);
    assert_int_equal(errs.truncated, 0);
    tr_schema_free(s);

    /* a long value is cut in the message, on a UTF-8 boundary */
    s = compile_ok("{\"const\": \"x\"}");
    char inst[2000];
    size_t k = 0;
    inst[k++] = '"';
    for (int i = 0; i < 400; i++) {
        memcpy(inst + k, "\xc3\xa9", 2);
        k += 2;
    }
    inst[k++] = '"';
    inst[k] = '\0';
    assert_int_equal(validate(s, inst, &errs), TR_EINVAL);
    assert_true(strlen(errs.e[0].message) < 200);
    assert_non_null(strstr(errs.e[0].message, "..."));
    json_t *m = json_string(errs.e[0].message); /* still valid UTF-8 */
    assert_non_null(m);
    json_decref(m);
    tr_schema_free(s);
}

static void test_refuse_unknown(void **state)
{
    (void)state;
    compile_fails("{\"properties\": {\"x\": {\"minimun\": 3}}}", TR_ENOTSUP, "unsupported keyword \"minimun\"",
                  "#/properties/x", NULL);
    compile_fails("{\"type\": \"array\", \"prefixItems\": [{\"type\": \"string\"}]}", TR_ENOTSUP,
                  "\"prefixItems\"", "at #", NULL);
    compile_fails("{\"unevaluatedProperties\": false}", TR_ENOTSUP, "unevaluatedProperties", NULL);
    compile_fails("{\"dependentRequired\": {\"a\": [\"b\"]}}", TR_ENOTSUP, "dependentRequired", NULL);
    compile_fails("{\"items\": [{\"$anchor\": \"x\"}]}", TR_ENOTSUP, "\"$anchor\"", "#/items/0", NULL);
    compile_fails("{\"definitions\": {\"a\": {\"nullable\": true}}}", TR_ENOTSUP, "\"nullable\"",
                  "#/definitions/a", NULL);
    /* even beside $ref, whose siblings draft 7 ignores, a typo is refused */
    compile_fails("{\"definitions\": {\"a\": {}}, \"properties\": {\"p\": {\"$ref\": \"#/definitions/a\", \"tyep\": 1}}}",
                  TR_ENOTSUP, "\"tyep\"", NULL);
    compile_fails("{\"$schema\": \"http://json-schema.org/draft-04/schema#\"}", TR_ENOTSUP, "$schema", NULL);
    compile_fails("{\"$schema\": \"https://json-schema.org/draft/2020-12/schema\"}", TR_ENOTSUP, "only draft 7",
                  NULL);
    /* remote references */
    compile_fails("{\"$ref\": \"http://example.com/schema.json\"}", TR_ENOTSUP, "remote references", NULL);
    compile_fails("{\"properties\": {\"a\": {\"$ref\": \"other.json#/x\"}}}", TR_ENOTSUP, "\"other.json#/x\"",
                  "#/properties/a", NULL);

    /* accepted: $defs, annotations, containers that a $ref reaches into */
    struct tr_schema *s = compile_ok(
        "{\"$schema\": \"http://json-schema.org/draft-07/schema#\", \"$id\": \"https://troupe.dev/tools/x\","
        " \"title\": \"t\", \"description\": \"d\", \"$comment\": \"c\", \"default\": {}, \"examples\": [1],"
        " \"readOnly\": false, \"writeOnly\": false,"
        " \"contentMediaType\": \"text/plain\", \"contentEncoding\": \"base64\", \"format\": \"int32\","
        " \"$defs\": {\"A\": {\"type\": \"string\"}}, \"components\": {\"B\": {\"type\": \"integer\"}},"
        " \"properties\": {\"a\": {\"$ref\": \"#/$defs/A\"}, \"b\": {\"$ref\": \"#/components/B\"}}}");
    struct tr_schema_errors errs;
    assert_int_equal(validate(s, "{\"a\": \"x\", \"b\": 1}", &errs), 0);
    assert_int_equal(validate(s, "{\"a\": 1}", &errs), TR_EINVAL);
    assert_int_equal(validate(s, "{\"b\": \"x\"}", &errs), TR_EINVAL);
    tr_schema_free(s);
}

static void test_refuse_malformed(void **state)
{
    (void)state;
    compile_fails("{\"minLength\": -1}", TR_EINVAL, "\"minLength\" at # must be a non-negative integer", NULL);
    compile_fails("{\"maxItems\": 1.5}", TR_EINVAL, "maxItems", NULL);
    compile_fails("{\"type\": \"strng\"}", TR_EINVAL, "\"type\"", NULL);
    compile_fails("{\"type\": [\"string\", \"string\"]}", TR_EINVAL, "\"type\"", NULL);
    compile_fails("{\"type\": []}", TR_EINVAL, "\"type\"", NULL);
    compile_fails("{\"required\": \"a\"}", TR_EINVAL, "\"required\"", NULL);
    compile_fails("{\"required\": [\"a\", \"a\"]}", TR_EINVAL, "\"required\"", NULL);
    compile_fails("{\"multipleOf\": 0}", TR_EINVAL, "greater than 0", NULL);
    compile_fails("{\"exclusiveMaximum\": true}", TR_EINVAL, "a number", NULL);
    compile_fails("{\"anyOf\": []}", TR_EINVAL, "non-empty", NULL);
    compile_fails("{\"properties\": {\"a\": 3}}", TR_EINVAL, "schema at #/properties/a must be an object or a boolean",
                  NULL);
    compile_fails("{\"title\": 3}", TR_EINVAL, "\"title\"", NULL);
    compile_fails("{\"$ref\": \"#/definitions/missing\"}", TR_EINVAL, "points to nothing", NULL);
    compile_fails("{\"$ref\": \"#nope\"}", TR_EINVAL, "points to nothing", NULL);
    compile_fails("3", TR_EINVAL, "must be an object or a boolean", NULL);
    compile_fails("{\"pattern\": \"(a\"}", TR_EINVAL, "#", "missing )", NULL);
    compile_fails("{\"patternProperties\": {\"a**\": {}}}", TR_EINVAL, "nothing to repeat", NULL);
}

static void test_refs(void **state)
{
    (void)state;
    /* recursion through properties is fine */
    const char *tree = "{\"definitions\": {\"node\": {\"type\": \"object\", \"required\": [\"v\"],"
                       "  \"properties\": {\"v\": {\"type\": \"integer\"},"
                       "                  \"kids\": {\"type\": \"array\", \"items\": {\"$ref\": \"#/definitions/node\"}}}}},"
                       " \"$ref\": \"#/definitions/node\"}";
    expect_valid(tree, "{\"v\": 1, \"kids\": [{\"v\": 2}, {\"v\": 3, \"kids\": []}]}");
    expect_error(tree, "{\"v\": 1, \"kids\": [{\"v\": 2}, {\"v\": \"x\"}]}", "/kids/1/v",
                 "#/definitions/node/properties/v/type", "must be of type integer");
    /* $id-based references and anchors */
    expect_valid("{\"$id\": \"http://x.test/root.json\", \"properties\": {\"a\": {\"$ref\": \"item.json\"},"
                 " \"b\": {\"$ref\": \"#pos\"}},"
                 " \"definitions\": {\"i\": {\"$id\": \"item.json\", \"type\": \"string\"},"
                 "                 \"p\": {\"$id\": \"#pos\", \"minimum\": 0}}}",
                 "{\"a\": \"s\", \"b\": 3}");
    expect_error("{\"$id\": \"http://x.test/root.json\", \"properties\": {\"b\": {\"$ref\": \"#pos\"}},"
                 " \"definitions\": {\"p\": {\"$id\": \"#pos\", \"minimum\": 0}}}",
                 "{\"b\": -3}", "/b", "#/definitions/p/minimum", "must be >= 0");
    /* the draft-07 meta-schema is built in */
    struct tr_schema *meta = compile_ok("{\"$ref\": \"http://json-schema.org/draft-07/schema#\"}");
    struct tr_schema_errors errs;
    assert_int_equal(validate(meta, "{\"type\": \"string\", \"minLength\": 2}", &errs), 0);
    assert_int_equal(validate(meta, "{\"minLength\": -2}", &errs), TR_EINVAL);
    assert_string_equal(errs.e[0].instance_ptr, "/minLength");
    tr_schema_free(meta);

    /* cycles that never descend into the instance are refused */
    compile_fails("{\"$ref\": \"#\"}", TR_ENOTSUP, "cycle", NULL);
    compile_fails("{\"definitions\": {\"a\": {\"allOf\": [{\"$ref\": \"#/definitions/b\"}]},"
                  " \"b\": {\"anyOf\": [{\"type\": \"null\"}, {\"$ref\": \"#/definitions/a\"}]}}}",
                  TR_ENOTSUP, "cycle", "#/definitions/a", "#/definitions/b", NULL);
    compile_fails("{\"not\": {\"$ref\": \"#\"}}", TR_ENOTSUP, "cycle", NULL);
}

static void test_limits(void **state)
{
    (void)state;
    /* deep schema */
    char *deep = malloc(64 * 1024);
    size_t k = 0;
    for (int i = 0; i < 200; i++) {
        k += (size_t)sprintf(deep + k, "{\"not\":");
    }
    k += (size_t)sprintf(deep + k, "{}");
    for (int i = 0; i < 200; i++) {
        deep[k++] = '}';
    }
    deep[k] = '\0';
    compile_fails(deep, TR_ELIMIT, "nested deeper", NULL);

    /* huge schema: too many values */
    json_t *big = json_object();
    json_t *e = json_array();
    for (int i = 0; i < TR_SCHEMA_MAX_VALUES + 1; i++) {
        json_array_append_new(e, json_integer(i));
    }
    json_object_set_new(big, "enum", e);
    struct tr_schema *s = NULL;
    struct tr_err err;
    assert_int_equal(tr_schema_compile(big, &s, &err), TR_ELIMIT);
    assert_non_null(strstr(err.msg, "more than"));
    json_decref(big);

    /* too many subschemas */
    big = json_object();
    json_t *props = json_object();
    for (int i = 0; i < TR_SCHEMA_MAX_NODES + 1; i++) {
        char name[32];
        snprintf(name, sizeof name, "p%d", i);
        json_object_set_new(props, name, json_object());
    }
    json_object_set_new(big, "properties", props);
    assert_int_equal(tr_schema_compile(big, &s, &err), TR_ELIMIT);
    assert_non_null(strstr(err.msg, "subschemas"));
    json_decref(big);

    /* a deep instance against a recursive schema hits the evaluation depth */
    s = compile_ok("{\"type\": \"array\", \"items\": {\"$ref\": \"#\"}}");
    k = 0;
    for (int i = 0; i < 600; i++) {
        deep[k++] = '[';
    }
    for (int i = 0; i < 600; i++) {
        deep[k++] = ']';
    }
    deep[k] = '\0';
    struct tr_schema_errors errs;
    assert_int_equal(validate(s, deep, &errs), TR_ELIMIT);
    assert_int_equal(errs.count, 1);
    assert_non_null(strstr(errs.e[0].message, "nested too deeply"));
    assert_int_equal(validate(s, "[[[[[]]]], []]", &errs), 0);
    tr_schema_free(s);
    free(deep);

    /* exponential work through shared definitions hits the step bound */
    json_t *defs = json_object();
    for (int i = 0; i < 40; i++) {
        char name[16], ref[48];
        snprintf(name, sizeof name, "d%d", i);
        snprintf(ref, sizeof ref, "#/definitions/d%d", i + 1);
        json_object_set_new(defs, name,
                            json_pack("{s:[{s:s},{s:s}]}", "anyOf", "$ref", ref, "$ref", ref));
    }
    json_object_set_new(defs, "d40", json_pack("{s:s}", "type", "string"));
    big = json_pack("{s:o, s:s}", "definitions", defs, "$ref", "#/definitions/d0");
    assert_int_equal(tr_schema_compile(big, &s, &err), 0);
    json_decref(big);
    assert_int_equal(validate(s, "1", &errs), TR_ELIMIT);
    assert_non_null(strstr(errs.e[errs.count - 1].message, "too much work"));
    assert_int_equal(validate(s, "\"ok\"", &errs), 0);
    tr_schema_free(s);

    /* regular expressions: counted repetition that regcomp would expand */
    compile_fails("{\"pattern\": \"(a{255}){255}\"}", TR_ELIMIT, "#", NULL);
    compile_fails("{\"pattern\": \"a{1001}\"}", TR_ELIMIT, "repetition", NULL);
    char *longpat = malloc(TR_SCHEMA_MAX_PATTERN + 64);
    k = (size_t)sprintf(longpat, "{\"pattern\": \"");
    for (int i = 0; i < TR_SCHEMA_MAX_PATTERN + 1; i++) {
        longpat[k++] = 'a';
    }
    sprintf(longpat + k, "\"}");
    compile_fails(longpat, TR_ELIMIT, "longer than", NULL);
    free(longpat);
}

static void test_regex(void **state)
{
    (void)state;
    static const struct {
        const char *pattern, *match, *nomatch;
    } cases[] = {
        {"^\\\\d{3}-\\\\d{4}$", "555-1234", "555-12345"},
        {"^\\\\w+$", "a_B9", "a-b"},
        {"\\\\s", "a b", "ab"},
        {"^\\\\S+$", "ab", "a b"},
        {"^\\\\D+$", "ab", "a1"},
        {"^[^\\\\]]+$", "ab", "a]"},
        {"^[\\\\d.-]+$", "1.2-3", "1a"},
        {"^[a\\\\-z]+$", "a-z", "b"},
        {"^[\\\\^]$", "^", "a"},
        {"^(?:ab)+$", "abab", "aba"},
        {"^(?<word>[a-z]+)$", "abc", "ab1"},
        {"^a.c$", "a\xc3\xa9" "c", "a\\nc"},
        {"^.{3}$", "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e", "ab"},
        {"^\\\\u00e9$", "\xc3\xa9", "e"},
        {"^\\\\x41\\\\t$", "A\\t", "A "},
        {"a+?b", "aab", "ba"},
        {"x{2,}?", "xxx", "x"},
        {"a{,2}", "a{,2}", "aa"},
        {"^\\\\$\\\\.\\\\*\\\\/$", "$.*/", "x"},
        {"\\\\bfoo\\\\b", "a foo b", "afoob"},
        {"^[[]$", "[", "a"},
        {"^(a|)$", "", "b"},
        {"^\\\\cJ$", "\\n", "J"},
        {"}", "}", "a"},
        {"^[.]$", ".", "a"},
        {"^[=:]+$", "=:", "a"},
        {"^[a-]+$", "a-", "b"},
        {"^[\\\\]\\\\[]+$", "][", "a"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char schema[256], yes[128], no[128];
        snprintf(schema, sizeof schema, "{\"pattern\": \"%s\"}", cases[i].pattern);
        snprintf(yes, sizeof yes, "\"%s\"", cases[i].match);
        snprintf(no, sizeof no, "\"%s\"", cases[i].nomatch);
        struct tr_schema *s = compile_ok(schema);
        struct tr_schema_errors errs;
        if (validate(s, yes, &errs) != 0) {
            fail_msg("pattern %s should match %s", cases[i].pattern, yes);
        }
        if (validate(s, no, &errs) != TR_EINVAL) {
            fail_msg("pattern %s should not match %s", cases[i].pattern, no);
        }
        tr_schema_free(s);
    }
    static const struct {
        const char *pattern;
        int code;
        const char *msg;
    } refused[] = {
        {"a(?=b)", TR_ENOTSUP, "lookahead"},
        {"a(?!b)", TR_ENOTSUP, "lookahead"},
        {"(?<=a)b", TR_ENOTSUP, "lookbehind"},
        {"(a)\\\\1", TR_ENOTSUP, "backreferences"},
        {"\\\\p{L}", TR_ENOTSUP, "Unicode property"},
        {"[\\\\D]", TR_ENOTSUP, "inside a character class"},
        {"\\\\a", TR_ENOTSUP, "unsupported escape \\a"},
        {"\\\\Z", TR_ENOTSUP, "unsupported escape"},
        {"[]", TR_ENOTSUP, "empty class"},
        {"\\\\u{61}", TR_ENOTSUP, "u flag"},
        {"\\\\0", TR_ENOTSUP, "NUL"},
        {"[z-a]", TR_EINVAL, "out of order"},
        {"a{3,2}", TR_EINVAL, "out of order"},
        {"*a", TR_EINVAL, "nothing to repeat"},
        {"^*", TR_EINVAL, "nothing to repeat"},
        {"a)", TR_EINVAL, "unmatched )"},
        {"[ab", TR_EINVAL, "missing ]"},
        {"\\\\", TR_EINVAL, "backslash"},
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        char schema[256];
        snprintf(schema, sizeof schema, "{\"properties\": {\"p\": {\"pattern\": \"%s\"}}}", refused[i].pattern);
        compile_fails(schema, refused[i].code, refused[i].msg, "#/properties/p", NULL);
    }
    /* format "regex" uses the same dialect */
    expect_valid("{\"format\": \"regex\"}", "\"^[a-z]+\\\\d?$\"");
    expect_error("{\"format\": \"regex\"}", "\"(?=x)\"", "", "#/format", "regular expression");
}

static void test_values(void **state)
{
    (void)state;
    /* integer vs number, exact comparisons */
    expect_valid("{\"type\": \"integer\"}", "1.0");
    expect_valid("{\"type\": \"integer\"}", "-9223372036854775808");
    expect_error("{\"type\": \"integer\"}", "1.5", "", "#/type", "got number");
    expect_valid("{\"maximum\": 9007199254740993}", "9007199254740993");
    expect_error("{\"maximum\": 9007199254740992}", "9007199254740993", "", "#/maximum",
                 "must be <= 9007199254740992, got 9007199254740993");
    expect_error("{\"minimum\": 1e300}", "9223372036854775807", "", "#/minimum", "must be >= 1e+300");
    expect_valid("{\"exclusiveMinimum\": 2.5}", "3");
    expect_error("{\"exclusiveMinimum\": 3}", "3.0", "", "#/exclusiveMinimum", "must be > 3");
    expect_valid("{\"multipleOf\": 0.01}", "19.99");
    expect_valid("{\"multipleOf\": 3}", "-9");
    expect_valid("{\"multipleOf\": 1e-300}", "1");
    expect_error("{\"multipleOf\": 0.123456789}", "1e308", "", "#/multipleOf", "multiple");
    /* enum/const equality: 1 == 1.0, objects unordered */
    expect_valid("{\"enum\": [1, {\"a\": [1, 2], \"b\": null}]}", "{\"b\": null, \"a\": [1.0, 2]}");
    expect_valid("{\"const\": 0}", "-0.0");
    expect_error("{\"const\": [1]}", "[true]", "", "#/const", "must be exactly [1], got [true]");
    /* uniqueItems: many items, hashed path */
    char buf[8192];
    size_t k = 0;
    buf[k++] = '[';
    for (int i = 0; i < 200; i++) {
        k += (size_t)sprintf(buf + k, "%s{\"x\": %d}", i ? "," : "", i);
    }
    k += (size_t)sprintf(buf + k, ",{\"x\": 17.0}]");
    expect_error("{\"uniqueItems\": true}", buf, "", "#/uniqueItems", "items 17 and 200 are equal");
    buf[k - 13] = ']';
    buf[k - 12] = '\0';
    expect_valid("{\"uniqueItems\": true}", buf);
    /* lengths count code points */
    expect_valid("{\"maxLength\": 3}", "\"\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\"");
    expect_error("{\"maxLength\": 2}", "\"\xf0\x9f\x98\x80\xf0\x9f\x98\x80x\"", "", "#/maxLength",
                 "at most 2 characters long, got 3");
    expect_valid("{\"minLength\": 2}", "\"a\\u0000\"");
    /* property names with NUL (the parser refuses them; an API caller may not) */
    struct tr_schema *s = compile_ok("{\"properties\": {\"a\": {\"type\": \"string\"}}, \"additionalProperties\": false}");
    json_t *obj = json_object();
    json_object_setn_new(obj, "a\0b", 3, json_integer(1));
    struct tr_schema_errors errs;
    assert_int_equal(tr_schema_validate(s, obj, &errs), TR_EINVAL);
    assert_string_equal(errs.e[0].schema_ptr, "#/additionalProperties");
    json_object_clear(obj);
    json_object_set_new(obj, "a", json_string("x"));
    assert_int_equal(tr_schema_validate(s, obj, &errs), 0);
    json_decref(obj);
    tr_schema_free(s);
}

static void test_formats(void **state)
{
    (void)state;
    static const struct {
        const char *format, *good, *bad;
    } cases[] = {
        {"date-time", "2024-02-29T23:59:60.123+01:00", "2023-02-29T10:00:00Z"},
        {"date-time", "2024-01-31t12:00:00z", "2024-01-31 12:00:00Z"},
        {"date", "2000-02-29", "2024-13-01"},
        {"time", "08:30:06Z", "08:30:06"},
        {"email", "joe.bloggs@example.com", "joe..bloggs@example.com"},
        {"hostname", "api.example.com", "-bad.example.com"},
        {"ipv4", "192.0.2.1", "192.0.2.01"},
        {"ipv6", "2001:db8::1", "2001:db8:::1"},
        {"uri", "https://user@example.com:8080/a/b?q=1#frag", "/relative/path"},
        {"uri", "urn:isbn:0451450523", "http://exa mple.com"},
        {"uri-reference", "../a?b#c", "a\\\\b"},
        {"uuid", "123e4567-e89b-12d3-a456-426614174000", "123e4567e89b12d3a456426614174000"},
        {"json-pointer", "/a/~0b/~1c", "a/b"},
        {"relative-json-pointer", "0#", "01/a"},
        {"uri-template", "/users/{id}{?q}", "/users/{id"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char schema[128], good[128], bad[128];
        snprintf(schema, sizeof schema, "{\"format\": \"%s\"}", cases[i].format);
        snprintf(good, sizeof good, "\"%s\"", cases[i].good);
        snprintf(bad, sizeof bad, "\"%s\"", cases[i].bad);
        expect_valid(schema, good);
        expect_error(schema, bad, "", "#/format", cases[i].format);
    }
    /* formats apply to strings only; unknown formats are annotations */
    expect_valid("{\"format\": \"ipv4\"}", "12");
    expect_valid("{\"format\": \"int64\"}", "\"anything\"");
}

static void test_boolean_and_misc(void **state)
{
    (void)state;
    expect_valid("true", "{\"x\": [1, 2]}");
    expect_error("false", "0", "", "#", "no value is allowed here");
    expect_valid("{}", "null");
    /* true and false are singletons in jansson; errors still name their place */
    expect_error("{\"properties\": {\"a\": false, \"b\": false}}", "{\"b\": 1}", "/b", "#/properties/b",
                 "no value is allowed here");
    /* a boolean reached by $ref inside an otherwise unknown member */
    expect_error("{\"my\": {\"no\": false}, \"properties\": {\"x\": {\"$ref\": \"#/my/no\"}}}", "{\"x\": 1}",
                 "/x", "#/my/no", "no value is allowed here");
    compile_fails("{\"my\": {\"no\": false}, \"other\": false, \"properties\": {\"x\": {\"$ref\": \"#/my/no\"}}}",
                  TR_ENOTSUP, "\"other\"", NULL);
    /* $ref siblings are ignored in draft 7 */
    expect_valid("{\"definitions\": {\"a\": {\"type\": \"array\"}},"
                 " \"properties\": {\"p\": {\"$ref\": \"#/definitions/a\", \"maxItems\": 1}}}",
                 "{\"p\": [1, 2, 3]}");
    /* the caller's schema may change or go away after compile */
    json_t *j = parse("{\"properties\": {\"a\": {\"enum\": [\"x\"]}}}");
    struct tr_schema *s = NULL;
    assert_int_equal(tr_schema_compile(j, &s, NULL), 0);
    json_object_clear(j);
    json_decref(j);
    struct tr_schema_errors errs;
    assert_int_equal(validate(s, "{\"a\": \"y\"}", &errs), TR_EINVAL);
    assert_int_equal(validate(s, "{\"a\": \"x\"}", &errs), 0);
    tr_schema_free(s);
    tr_schema_free(NULL);
}

static void test_uri_resolve(void **state)
{
    (void)state;
    /* RFC 3986 section 5.4 */
    static const char *const cases[][2] = {
        {"g:h", "g:h"},           {"g", "http://a/b/c/g"},       {"./g", "http://a/b/c/g"},
        {"g/", "http://a/b/c/g/"}, {"/g", "http://a/g"},          {"//g", "http://g"},
        {"?y", "http://a/b/c/d;p?y"}, {"g?y", "http://a/b/c/g?y"}, {"#s", "http://a/b/c/d;p?q#s"},
        {"g#s", "http://a/b/c/g#s"}, {";x", "http://a/b/c/;x"},   {"", "http://a/b/c/d;p?q"},
        {".", "http://a/b/c/"},    {"./", "http://a/b/c/"},       {"..", "http://a/b/"},
        {"../", "http://a/b/"},    {"../g", "http://a/b/g"},      {"../..", "http://a/"},
        {"../../g", "http://a/g"}, {"../../../g", "http://a/g"},  {"/./g", "http://a/g"},
        {"/../g", "http://a/g"},   {"g.", "http://a/b/c/g."},     {".g", "http://a/b/c/.g"},
        {"./../g", "http://a/b/g"}, {"g/./h", "http://a/b/c/g/h"}, {"g/../h", "http://a/b/c/h"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *r = js_uri_resolve("http://a/b/c/d;p?q", cases[i][0]);
        if (strcmp(r, cases[i][1]) != 0) {
            fail_msg("resolve \"%s\": got %s, want %s", cases[i][0], r, cases[i][1]);
        }
        tr_free(r);
    }
    size_t len;
    char *d = js_pct_decode("/a%25b%2Fc%zz%4", &len);
    assert_string_equal(d, "/a%b/c%zz%4");
    assert_int_equal(len, strlen(d));
    tr_free(d);
}

struct thread_arg {
    struct tr_schema *s;
    int failures;
};

static void *validate_thread(void *p)
{
    struct thread_arg *a = p;
    json_t *good = parse("{\"id\": \"ab-12\", \"n\": [1, 2, 3]}");
    json_t *bad = parse("{\"id\": \"AB\", \"n\": [1, 1]}");
    for (int i = 0; i < 2000; i++) {
        struct tr_schema_errors errs;
        if (tr_schema_validate(a->s, good, &errs) != 0 || tr_schema_validate(a->s, bad, &errs) != TR_EINVAL ||
            errs.count != 2) {
            a->failures++;
        }
    }
    json_decref(good);
    json_decref(bad);
    return NULL;
}

/* A compiled schema is shared by threads without locks. */
static void test_threads(void **state)
{
    (void)state;
    struct tr_schema *s = compile_ok("{\"properties\": {\"id\": {\"pattern\": \"^[a-z]+-\\\\d+$\"},"
                                     " \"n\": {\"uniqueItems\": true, \"items\": {\"type\": \"integer\"}}}}");
    pthread_t t[4];
    struct thread_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (struct thread_arg){s, 0};
        assert_int_equal(pthread_create(&t[i], NULL, validate_thread, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(args[i].failures, 0);
    }
    tr_schema_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_error_reports),   cmocka_unit_test(test_error_combinators),
        cmocka_unit_test(test_error_truncation), cmocka_unit_test(test_refuse_unknown),
        cmocka_unit_test(test_refuse_malformed), cmocka_unit_test(test_refs),
        cmocka_unit_test(test_limits),           cmocka_unit_test(test_regex),
        cmocka_unit_test(test_values),           cmocka_unit_test(test_formats),
        cmocka_unit_test(test_boolean_and_misc), cmocka_unit_test(test_uri_resolve),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
