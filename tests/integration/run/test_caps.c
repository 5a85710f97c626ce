/* Issue 4, real processes: every cap of a run (max_steps, max_tokens,
 * max_cost_usd with the priced mock model, timeout_s) fails it with
 * error_code "budget_exceeded" after a budget.exceeded event naming the cap;
 * and loop detection: the same call three times is a loop.detected whose
 * correction reaches the model's next request, and a loop that persists
 * fails the run with "loop_detected". One node for the file. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fixture.h"

static struct fx F;

static int setup(void **state)
{
    (void)state;
    if (fx_start(&F, "it-run-caps", NULL) != 0) {
        fx_stop(&F);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    return fx_stop(&F);
}

/* Run script with the agent fields `extra` to its end: it must fail with
 * budget_exceeded after `tool_steps` complete tool steps, the cap named
 * `cap`. Returns the journal (new reference); *run_out the run object. */
static json_t *run_to_cap(const char *script, const char *extra, int tool_steps, const char *cap, json_t **run_out)
{
    char *id = fx_run(&F, script, "never stop", "[\"echo\"]", extra);
    assert_non_null(id);
    char *st = fx_wait_terminal(&F, id);
    assert_non_null(st);
    json_t *run = fx_get_run(&F, id);
    json_t *ev = fx_events(&F, id);
    if (strcmp(st, "failed") != 0 || strcmp(fx_str(run, "error_code"), "budget_exceeded") != 0) {
        char *t = fx_types(ev);
        fprintf(stderr, "%s: status %s error_code %s error %s\njournal: %s\n", script, st, fx_str(run, "error_code"),
                fx_str(run, "error"), t);
        free(t);
    }
    assert_string_equal(st, "failed");
    assert_string_equal(fx_str(run, "error_code"), "budget_exceeded");
    const char *expected[64];
    int n = 0;
    expected[n++] = "run.created";
    for (int s = 0; s < tool_steps; s++) {
        expected[n++] = "llm.requested";
        expected[n++] = "llm.completed";
        expected[n++] = "tool.requested";
        expected[n++] = "tool.started";
        expected[n++] = "tool.completed";
    }
    if (tool_steps == 0)
        expected[n++] = "llm.requested"; /* the wall clock ran out while waiting */
    expected[n++] = "budget.exceeded";
    expected[n++] = "run.failed";
    expected[n] = NULL;
    assert_true(fx_types_equal(ev, expected));
    assert_true(fx_seq_ok(ev, id));
    json_t *b = fx_nth(ev, "budget.exceeded", 0);
    assert_string_equal(fx_data_str(b, "cap"), cap);
    json_t *f = fx_nth(ev, "run.failed", 0);
    assert_string_equal(fx_data_str(f, "error_code"), "budget_exceeded");
    *run_out = run;
    free(st);
    free(id);
    return ev;
}

static double data_num(json_t *ev, const char *name)
{
    return json_number_value(json_object_get(json_object_get(ev, "data"), name));
}

static void max_steps(void **state)
{
    (void)state;
    json_t *run;
    json_t *ev = run_to_cap("steps_forever", "\"max_steps\": 3", 3, "steps", &run);
    json_t *b = fx_nth(ev, "budget.exceeded", 0);
    assert_true(data_num(b, "limit") == 3);
    assert_true(data_num(b, "used") == 3);
    assert_int_equal(fx_int(run, "step"), 3);
    json_decref(run);
    json_decref(ev);
}

static void max_tokens(void **state)
{
    (void)state;
    json_t *run;
    /* 600 tokens a step: 1200 >= 1000 after the second step. */
    json_t *ev = run_to_cap("tokens", "\"max_tokens\": 1000", 2, "tokens", &run);
    json_t *b = fx_nth(ev, "budget.exceeded", 0);
    assert_true(data_num(b, "limit") == 1000);
    assert_true(data_num(b, "used") == 1200);
    json_t *u = json_object_get(run, "usage");
    assert_int_equal(fx_int(u, "prompt_tokens"), 800);
    assert_int_equal(fx_int(u, "completion_tokens"), 400);
    json_decref(run);
    json_decref(ev);
}

static void max_cost_usd(void **state)
{
    (void)state;
    json_t *run;
    /* mock-priced: $1 / $2 per 1M tokens; 100k + 100k tokens = $0.30 a
     * step: $0.60 >= $0.50 after the second step. */
    json_t *ev = run_to_cap("cost", "\"model\": \"mock-priced\", \"max_cost_usd\": 0.5", 2, "cost", &run);
    json_t *b = fx_nth(ev, "budget.exceeded", 0);
    assert_true(data_num(b, "limit") == 0.5);
    assert_true(fabs(data_num(b, "used") - 0.6) < 1e-9);
    json_t *u = json_object_get(run, "usage");
    assert_int_equal(fx_int(u, "cost_micro_usd"), 600000);
    assert_true(fabs(json_number_value(json_object_get(u, "cost_usd")) - 0.6) < 1e-9);
    for (int s = 0; s < 2; s++) {
        json_t *cu = json_object_get(json_object_get(fx_nth(ev, "llm.completed", s), "data"), "usage");
        assert_int_equal(fx_int(cu, "cost_micro_usd"), 300000);
    }
    json_decref(run);
    json_decref(ev);
}

static void timeout_s(void **state)
{
    (void)state;
    json_t *run;
    /* The model takes 5 s to answer; the run has 1 s. */
    json_t *ev = run_to_cap("slow_llm", "\"timeout_s\": 1", 0, "wall_time", &run);
    assert_true(data_num(fx_nth(ev, "budget.exceeded", 0), "limit") == 1);
    json_decref(run);
    json_decref(ev);
}

/* ---- loop detection ------------------------------------------------------------------ */

static long long msgs(json_t *ev, int k)
{
    return fx_data_int(fx_nth(ev, "llm.requested", k), "message_count");
}

static void loop_that_persists_fails(void **state)
{
    (void)state;
    char *id = fx_run(&F, "loop_forever", "do the same thing", "[\"echo\"]", NULL);
    assert_non_null(id);
    char *st = fx_wait_terminal(&F, id);
    assert_non_null(st);
    assert_string_equal(st, "failed");
    json_t *run = fx_get_run(&F, id);
    json_t *ev = fx_events(&F, id);
    assert_string_equal(fx_str(run, "error_code"), "loop_detected");
    assert_non_null(strstr(fx_str(run, "error"), "echo"));
    const char *expected[] = {
        "run.created",
        "llm.requested", "llm.completed", "tool.requested", "tool.started", "tool.completed",
        "llm.requested", "llm.completed", "tool.requested", "tool.started", "tool.completed",
        "llm.requested", "llm.completed", "tool.requested", "tool.started", "tool.completed",
        "loop.detected",
        "llm.requested", "llm.completed", "tool.requested", "tool.started", "tool.completed",
        "loop.detected",
        "run.failed", NULL,
    };
    assert_true(fx_types_equal(ev, expected));
    assert_true(fx_seq_ok(ev, id));
    json_t *l1 = fx_nth(ev, "loop.detected", 0), *l2 = fx_nth(ev, "loop.detected", 1);
    assert_int_equal(fx_data_int(l1, "step"), 3);
    assert_int_equal(fx_data_int(l1, "repeats"), 3);
    assert_non_null(strstr(fx_data_str(l1, "detail"), "echo"));
    assert_int_equal(fx_data_int(l2, "step"), 4);
    assert_int_equal(fx_data_int(l2, "repeats"), 4);
    /* Each tool step adds two messages (the assistant's, the tool's); the
     * step after the detection carries one more: the correction. */
    assert_int_equal(msgs(ev, 1) - msgs(ev, 0), 2);
    assert_int_equal(msgs(ev, 2) - msgs(ev, 1), 2);
    assert_int_equal(msgs(ev, 3) - msgs(ev, 2), 3);
    json_decref(ev);
    json_decref(run);
    free(st);
    free(id);
}

static void loop_then_recovery_succeeds(void **state)
{
    (void)state;
    char *id = fx_run(&F, "loop_recover", "repeat, then think", "[\"echo\"]", NULL);
    assert_non_null(id);
    char *st = fx_wait_terminal(&F, id);
    assert_non_null(st);
    assert_string_equal(st, "succeeded");
    json_t *run = fx_get_run(&F, id);
    json_t *ev = fx_events(&F, id);
    assert_int_equal(fx_count(ev, "loop.detected"), 1);
    assert_int_equal(fx_count(ev, "llm.requested"), 4);
    /* loop.detected comes right after the third step's tool.completed, and
     * the fourth request carries the correction. */
    json_t *l = fx_nth(ev, "loop.detected", 0);
    json_t *prev = json_array_get(ev, (size_t)fx_int(l, "seq") - 2);
    json_t *next = json_array_get(ev, (size_t)fx_int(l, "seq"));
    assert_string_equal(fx_str(prev, "type"), "tool.completed");
    assert_string_equal(fx_str(next, "type"), "llm.requested");
    assert_int_equal(msgs(ev, 3) - msgs(ev, 2), 3);
    assert_string_equal(fx_str(run, "output"), "changed approach");
    json_decref(ev);
    json_decref(run);
    free(st);
    free(id);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(max_steps),
        cmocka_unit_test(max_tokens),
        cmocka_unit_test(max_cost_usd),
        cmocka_unit_test(timeout_s),
        cmocka_unit_test(loop_that_persists_fails),
        cmocka_unit_test(loop_then_recovery_succeeds),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
