/* Issue 4, real processes: the provider goes down. While troupe-mockllm
 * answers 503 to everything, runs stay running and make no progress (no
 * llm.completed) while the llm actor's retries fail and its circuit breaker
 * opens (5 consecutive failures); once the provider is up again the runs
 * resume and succeed. The test brings the provider back as soon as the
 * breaker has seen enough failures to open, so it waits for one cool-down
 * (2 s) at most, not for the doubled ones. A node of its own: the breaker is
 * process-wide. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fixture.h"

#define RUNS 3

static long long status_count(struct fx *f, const char *code)
{
    json_t *s = fx_mock_stats(f);
    long long n = fx_int(json_object_get(s, "by_status"), code);
    json_decref(s);
    return n;
}

static void mock_switch(struct fx *f, const char *what)
{
    char url[256];
    long st;
    snprintf(url, sizeof url, "%s/_mock/%s", f->mock_root, what);
    json_t *j = fx_call("POST", url, NULL, &st);
    json_decref(j);
    assert_int_equal(st, 200);
}

static void down_then_up(void **state)
{
    (void)state;
    struct fx F;
    assert_int_equal(fx_start(&F, "it-run-provider", NULL), 0);
    mock_switch(&F, "down");

    char *ids[RUNS];
    for (int i = 0; i < RUNS; i++) {
        ids[i] = fx_run(&F, "simple", "survive an outage", "[\"echo\"]", NULL);
        assert_non_null(ids[i]);
    }
    /* Wait for the breaker's threshold of failures: 5 answers of 503. */
    uint64_t until = h_now_ms() + FX_WAIT_MS;
    while (status_count(&F, "503") < 5 && h_now_ms() < until)
        fx_pause();
    assert_true(status_count(&F, "503") >= 5);
    /* ... and for a run to have been answered (it retries: a second
     * attempt of step 1 is journaled). */
    int retried = 0;
    while (!retried && h_now_ms() < until) {
        for (int i = 0; i < RUNS && !retried; i++) {
            json_t *ev = fx_events(&F, ids[i]);
            int n = fx_count(ev, "llm.requested");
            retried = n >= 2 && fx_data_int(fx_nth(ev, "llm.requested", n - 1), "attempt") >= 2;
            json_decref(ev);
        }
        if (!retried)
            fx_pause();
    }
    assert_true(retried);

    /* No progress, nothing terminal. */
    for (int i = 0; i < RUNS; i++) {
        json_t *run = fx_get_run(&F, ids[i]);
        assert_string_equal(fx_str(run, "status"), "running");
        json_decref(run);
        json_t *ev = fx_events(&F, ids[i]);
        assert_int_equal(fx_count(ev, "llm.completed"), 0);
        assert_true(fx_count(ev, "llm.requested") >= 1);
        assert_int_equal(fx_count(ev, "run.failed"), 0);
        json_decref(ev);
    }
    long long failures = status_count(&F, "503");

    mock_switch(&F, "up");
    for (int i = 0; i < RUNS; i++) {
        char *st = fx_wait_terminal(&F, ids[i]);
        json_t *ev = fx_events(&F, ids[i]);
        if (st == NULL) {
            char *t = json_dumps(ev, JSON_COMPACT);
            json_t *ms = fx_mock_stats(&F);
            char *m = json_dumps(ms, JSON_COMPACT);
            fprintf(stderr, "run %s journal: %s\nmock: %s\n", ids[i], t, m);
            free(t);
            free(m);
            json_decref(ms);
        }
        assert_non_null(st);
        if (strcmp(st, "succeeded") != 0) {
            json_t *run = fx_get_run(&F, ids[i]);
            char *t = fx_types(ev);
            fprintf(stderr, "run %s: %s (%s)\njournal: %s\n", ids[i], st, fx_str(run, "error"), t);
            free(t);
            json_decref(run);
        }
        assert_string_equal(st, "succeeded");
        assert_true(fx_seq_ok(ev, ids[i]));
        assert_int_equal(fx_count(ev, "llm.completed"), 2);
        assert_int_equal(fx_count(ev, "tool.completed"), 1);
        /* Every llm.requested of step 1 came before any llm.completed; the
         * retries after the outage are new attempts of the same step. */
        json_t *first = fx_nth(ev, "llm.completed", 0);
        assert_int_equal(fx_data_int(first, "step"), 1);
        int k = fx_count(ev, "llm.requested");
        json_t *last_rq1 = fx_nth(ev, "llm.requested", k - 2);
        assert_int_equal(fx_data_int(last_rq1, "step"), 1);
        assert_true(fx_data_int(last_rq1, "attempt") >= 1);
        json_decref(ev);
        free(st);
        free(ids[i]);
    }
    fprintf(stderr, "503 answers while down: %lld (at the threshold check), %lld in all\n", failures,
            status_count(&F, "503"));
    /* The breaker did open: without it every run's first call alone would
     * have made 4 attempts (the llm actor's retries) against the dead
     * provider. */
    assert_true(status_count(&F, "503") < RUNS * 4);
    json_t *ts = fx_tool_stats(&F);
    assert_int_equal(fx_int(ts, "duplicates_performed"), 0);
    assert_int_equal(fx_int(ts, "effects"), RUNS);
    json_decref(ts);
    assert_int_equal(fx_stop(&F), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(down_then_up),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
