/* The official JSON-Schema-Test-Suite, draft 7, against actors/jsonschema.
 *
 *   jsonschema_suite [DIR]     DIR defaults to Debian's json-schema-test-suite
 *
 * Every test group whose schema compiles must give the expected outcome for
 * every test. A group whose schema we refuse (TR_ENOTSUP) must be listed in
 * `refusals` below with the reason; a wrong outcome must be listed in
 * `deviations`. Anything else fails the run: nothing is skipped silently.
 * Files under optional/ run too, under the same rules.
 */
#include <dirent.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "actors/jsonschema.h"

#ifndef TR_JSONSCHEMA_SUITE_DIR
#define TR_JSONSCHEMA_SUITE_DIR "/usr/share/json-schema-test-suite/tests/draft7"
#endif

/* Groups we refuse at compile time: file (relative to DIR), group ("*" for
 * every group), why. */
static const struct {
    const char *file, *group, *why;
} refusals[] = {
    {"refRemote.json", "*", "remote $ref (the suite serves these from http://localhost:1234)"},
};

/* Outcomes that differ from the suite, on purpose: file, group, test, why. */
static const struct {
    const char *file, *group, *test, *why;
} deviations[] = {
    {"optional/format/idn-hostname.json", "validation of internationalized host names",
     "illegal first char U+302E Hangul single dot tone mark", "idn-hostname does not check IDNA code point rules"},
    {"optional/format/idn-hostname.json", "validation of internationalized host names",
     "contains illegal char U+302E Hangul single dot tone mark", "idn-hostname does not check IDNA code point rules"},
    {"optional/content.json", "validation of string-encoded content based on media type",
     "an invalid JSON document", "contentMediaType is an annotation here (draft 7 allows either)"},
    {"optional/content.json", "validation of binary string-encoding", "an invalid base64 string (% is not a valid character)",
     "contentEncoding is an annotation here"},
    {"optional/content.json", "validation of binary-encoded media type documents",
     "a validly-encoded invalid JSON document", "contentMediaType is an annotation here"},
    {"optional/content.json", "validation of binary-encoded media type documents",
     "an invalid base64 string that is valid JSON", "contentEncoding is an annotation here"},
};

#define N(a) (sizeof(a) / sizeof((a)[0]))

struct totals {
    unsigned files, groups, tests, passed, refused_groups, refused_tests, deviated, failed;
};

static const char *refusal_for(const char *file, const char *group)
{
    for (size_t i = 0; i < N(refusals); i++) {
        if (strcmp(refusals[i].file, file) == 0 &&
            (strcmp(refusals[i].group, "*") == 0 || strcmp(refusals[i].group, group) == 0)) {
            return refusals[i].why;
        }
    }
    return NULL;
}

static int deviation_for(const char *file, const char *group, const char *test)
{
    for (size_t i = 0; i < N(deviations); i++) {
        if (strcmp(deviations[i].file, file) == 0 && strcmp(deviations[i].group, group) == 0 &&
            strcmp(deviations[i].test, test) == 0) {
            return (int)i;
        }
    }
    return -1;
}

static unsigned deviation_seen[N(deviations) + 1];

static void run_file(const char *dir, const char *rel, struct totals *t)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    json_error_t jerr;
    json_t *doc = json_load_file(path, 0, &jerr);
    if (!doc) {
        /* jansson cannot hold integers past 64 bits (optional/bignum.json) */
        doc = json_load_file(path, JSON_DECODE_INT_AS_REAL, &jerr);
        if (!doc) {
            printf("FAIL %s: cannot load: %s\n", rel, jerr.text);
            t->failed++;
            return;
        }
        printf("note %s: loaded with integers as reals (%s)\n", rel, "beyond 64-bit integers");
    }
    t->files++;
    size_t gi;
    json_t *group;
    json_array_foreach(doc, gi, group) {
        const char *gdesc = json_string_value(json_object_get(group, "description"));
        json_t *tests = json_object_get(group, "tests");
        t->groups++;
        t->tests += (unsigned)json_array_size(tests);
        struct tr_schema *s;
        struct tr_err err;
        int rv = tr_schema_compile(json_object_get(group, "schema"), &s, &err);
        if (rv != 0) {
            const char *why = refusal_for(rel, gdesc);
            if (rv == TR_ENOTSUP && why) {
                printf("refused %s / %s: %s [%s]\n", rel, gdesc, err.msg, why);
                t->refused_groups++;
                t->refused_tests += (unsigned)json_array_size(tests);
            } else {
                printf("FAIL %s / %s: compile: %s: %s\n", rel, gdesc, tr_errname(rv), err.msg);
                t->failed += (unsigned)json_array_size(tests);
            }
            continue;
        }
        if (refusal_for(rel, gdesc)) {
            printf("stale refusal entry: %s / %s now compiles\n", rel, gdesc);
        }
        size_t ti;
        json_t *test;
        json_array_foreach(tests, ti, test) {
            const char *tdesc = json_string_value(json_object_get(test, "description"));
            int want = json_is_true(json_object_get(test, "valid"));
            struct tr_schema_errors errs;
            int vr = tr_schema_validate(s, json_object_get(test, "data"), &errs);
            int got = vr == 0;
            bool sane = got ? errs.count == 0 : errs.count > 0 && errs.e[0].message[0] != '\0' &&
                                                    errs.e[0].schema_ptr[0] != '\0';
            if (got == want && sane) {
                t->passed++;
                continue;
            }
            int d = deviation_for(rel, gdesc, tdesc);
            if (got != want && d >= 0) {
                deviation_seen[d]++;
                t->deviated++;
                printf("deviation %s / %s / %s: %s\n", rel, gdesc, tdesc, deviations[d].why);
                continue;
            }
            t->failed++;
            printf("FAIL %s / %s / %s: expected %s, got %s (%s)%s\n", rel, gdesc, tdesc, want ? "valid" : "invalid",
                   got ? "valid" : "invalid", tr_errname(vr), sane ? "" : " [no error reported]");
            if (!got) {
                char buf[2048];
                tr_schema_errors_format(&errs, buf, sizeof buf);
                printf("    %s", buf);
            }
        }
        tr_schema_free(s);
    }
    json_decref(doc);
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The .json files of dir/sub, sorted, relative to dir. */
static size_t list_json(const char *dir, const char *sub, char ***out)
{
    char path[4096];
    snprintf(path, sizeof path, "%s%s%s", dir, *sub ? "/" : "", sub);
    DIR *d = opendir(path);
    size_t n = 0;
    *out = NULL;
    if (!d) {
        return 0;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len > 5 && strcmp(e->d_name + len - 5, ".json") == 0) {
            *out = realloc(*out, (n + 1) * sizeof **out);
            char rel[1024];
            snprintf(rel, sizeof rel, "%s%s%s", sub, *sub ? "/" : "", e->d_name);
            (*out)[n++] = strdup(rel);
        }
    }
    closedir(d);
    qsort(*out, n, sizeof **out, name_cmp);
    return n;
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : TR_JSONSCHEMA_SUITE_DIR;
    const char *subs[] = {"", "optional", "optional/format"};
    struct totals all = {0}, part[3] = {{0}};
    for (size_t k = 0; k < N(subs); k++) {
        char **files;
        size_t n = list_json(dir, subs[k], &files);
        if (k == 0 && n == 0) {
            printf("no test files in %s (install json-schema-test-suite)\n", dir);
            return 77;
        }
        for (size_t i = 0; i < n; i++) {
            run_file(dir, files[i], &part[k]);
            free(files[i]);
        }
        free(files);
    }
    const char *names[] = {"mandatory", "optional", "optional/format"};
    printf("\nJSON-Schema-Test-Suite draft 7 (%s)\n", dir);
    for (size_t k = 0; k < N(subs); k++) {
        struct totals *t = &part[k];
        printf("  %-16s files %3u  groups %3u  tests %4u  passed %4u  refused groups %2u (%u tests)  "
               "deviations %2u  FAILED %u\n",
               names[k], t->files, t->groups, t->tests, t->passed, t->refused_groups, t->refused_tests,
               t->deviated, t->failed);
        all.files += t->files;
        all.groups += t->groups;
        all.tests += t->tests;
        all.passed += t->passed;
        all.refused_groups += t->refused_groups;
        all.refused_tests += t->refused_tests;
        all.deviated += t->deviated;
        all.failed += t->failed;
    }
    printf("  %-16s files %3u  groups %3u  tests %4u  passed %4u  refused groups %2u (%u tests)  "
           "deviations %2u  FAILED %u\n",
           "total", all.files, all.groups, all.tests, all.passed, all.refused_groups, all.refused_tests,
           all.deviated, all.failed);
    for (size_t i = 0; i < N(deviations); i++) {
        if (!deviation_seen[i]) {
            printf("stale deviation entry: %s / %s / %s\n", deviations[i].file, deviations[i].group,
                   deviations[i].test);
        }
    }
    return all.failed ? 1 : 0;
}
