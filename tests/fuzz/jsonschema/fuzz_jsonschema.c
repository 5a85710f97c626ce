/* libFuzzer target: compile a schema and validate an instance.
 *
 * Input: SCHEMA \x01 INSTANCE, both JSON texts. Without the \x01 separator
 * the whole input is used as a regular expression ({"pattern": input}) and
 * matched against a few strings, to reach the ECMA-262 translator directly.
 * Every outcome is fine except a crash, a leak, undefined behaviour or a hang.
 */
#include <stdint.h>
#include <string.h>

#include "actors/jsonschema.h"

static void run(const json_t *schema, const json_t *instance)
{
    struct tr_schema *s;
    struct tr_err err;
    if (tr_schema_compile(schema, &s, &err) != 0) {
        return;
    }
    struct tr_schema_errors errs;
    int rv = tr_schema_validate(s, instance, &errs);
    if (rv != 0) {
        char buf[4096];
        tr_schema_errors_format(&errs, buf, sizeof buf);
        if (errs.count == 0) {
            __builtin_trap(); /* an invalid verdict must say why */
        }
    }
    tr_schema_free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data;
    const char *sep = memchr(p, '\x01', size);
    if (!sep) {
        json_t *pat = json_stringn(p, size); /* NULL unless valid UTF-8 */
        if (!pat) {
            return 0;
        }
        json_t *schema = json_pack("{s:o}", "pattern", pat);
        static const char *const subjects[] = {"", "a", "abc-123", "A_b c\n", "\xc3\xa9\xe6\x97\xa5"};
        for (size_t i = 0; i < sizeof subjects / sizeof subjects[0]; i++) {
            json_t *inst = json_string(subjects[i]);
            run(schema, inst);
            json_decref(inst);
        }
        json_decref(schema);
        return 0;
    }
    json_error_t jerr;
    json_t *schema = json_loadb(p, (size_t)(sep - p), JSON_DECODE_ANY, &jerr);
    json_t *instance = json_loadb(sep + 1, size - (size_t)(sep - p) - 1, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    if (schema && instance) {
        run(schema, instance);
    }
    json_decref(schema);
    json_decref(instance);
    return 0;
}
