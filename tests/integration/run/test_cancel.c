/* Issue 4, real processes: cancel in every state — queued (the node admits
 * one active run), running with an LLM call in flight, waiting_approval,
 * and mid-tool — ends the run cancelled with run.cancelled as its last
 * event, nothing journaled after it even once the late replies arrive, and
 * a second cancel answers 200. One node started with --max-active-runs 1. */
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
    char *args[] = { "--max-active-runs", "1", NULL };
    if (fx_start(&F, "it-run-cancel", args) != 0) {
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

static void cancel(const char *id)
{
    char url[256];
    long st;
    snprintf(url, sizeof url, "%s/v1/runs/%s/cancel", F.node.base, id);
    json_t *j = fx_call("POST", url, NULL, &st);
    if (st != 200) {
        char *t = j ? json_dumps(j, 0) : NULL;
        fprintf(stderr, "cancel %s: HTTP %ld %s\n", id, st, t ? t : "");
        free(t);
    }
    assert_int_equal(st, 200);
    json_decref(j);
}

/* The run is cancelled, its journal is `expected` (ending in run.cancelled),
 * and a second cancel answers 200 without changing anything. */
static void assert_cancelled(const char *id, const char *const *expected)
{
    char *st = fx_wait_terminal(&F, id);
    assert_non_null(st);
    assert_string_equal(st, "cancelled");
    free(st);
    json_t *ev = fx_events(&F, id);
    assert_true(fx_types_equal(ev, expected));
    assert_true(fx_seq_ok(ev, id));
    cancel(id);
    json_t *ev2 = fx_events(&F, id);
    assert_int_equal(json_array_size(ev2), json_array_size(ev));
    json_t *run = fx_get_run(&F, id);
    assert_string_equal(fx_str(run, "status"), "cancelled");
    json_decref(run);
    json_decref(ev2);
    json_decref(ev);
}

/* A run that completes: everything queued before it has been dealt with. */
static void barrier_run(const char *script)
{
    char *id = fx_run(&F, script, "barrier", "[\"echo\", \"nap\"]", NULL);
    assert_non_null(id);
    char *st = fx_wait_terminal(&F, id);
    assert_non_null(st);
    assert_string_equal(st, "succeeded");
    free(st);
    free(id);
}

static void queued_and_running(void **state)
{
    (void)state;
    /* A holds the only slot: its model takes 5 s to answer. */
    char *a = fx_run(&F, "slow_llm", "think slowly", NULL, NULL);
    assert_non_null(a);
    json_t *e = fx_wait_event(&F, a, "llm.requested", 1);
    assert_non_null(e);
    json_decref(e);
    assert_int_equal(fx_wait_status(&F, a, "running"), 0);

    /* B waits for the slot. */
    char *b = fx_run(&F, "simple", "wait in line", "[\"echo\"]", NULL);
    assert_non_null(b);
    json_t *run = fx_get_run(&F, b);
    assert_string_equal(fx_str(run, "status"), "queued");
    json_decref(run);
    cancel(b);
    const char *b_expected[] = { "run.created", "run.cancelled", NULL };
    assert_cancelled(b, b_expected);

    /* A is cancelled while its llm call is in flight. */
    cancel(a);
    const char *a_expected[] = { "run.created", "llm.requested", "run.cancelled", NULL };
    assert_cancelled(a, a_expected);

    /* The slot is free, B never starts: a new run goes through; then one
     * more slow run, whose answer comes after A's would have. */
    barrier_run("simple");
    barrier_run("slow_llm");
    assert_cancelled(b, b_expected);
    assert_cancelled(a, a_expected);
    json_t *ts = fx_tool_stats(&F);
    assert_int_equal(fx_int(ts, "duplicates_performed"), 0);
    json_decref(ts);
    free(a);
    free(b);
}

static void waiting_approval(void **state)
{
    (void)state;
    json_t *ts = fx_tool_stats(&F);
    long long pays = fx_int(json_object_get(ts, "by_tool"), "payment");
    json_decref(ts);
    char *id = fx_run(&F, "approval", "pay, maybe", "[\"pay\"]", NULL);
    assert_non_null(id);
    assert_int_equal(fx_wait_status(&F, id, "waiting_approval"), 0);
    json_t *ar = fx_wait_event(&F, id, "approval.requested", 1);
    assert_non_null(ar);
    char apr[64];
    snprintf(apr, sizeof apr, "%s", fx_data_str(ar, "approval_id"));
    json_decref(ar);
    cancel(id);
    const char *expected[] = { "run.created",    "llm.requested",      "llm.completed",
                               "tool.requested", "approval.requested", "run.cancelled", NULL };
    assert_cancelled(id, expected);

    /* The approval is no longer pending; approving it now runs nothing. */
    char url[256];
    long st;
    snprintf(url, sizeof url, "%s/v1/approvals?status=pending", F.node.base);
    json_t *list = fx_call("GET", url, NULL, &st);
    assert_int_equal(st, 200);
    char *text = json_dumps(list, 0);
    if (strstr(text, apr) != NULL)
        fprintf(stderr, "approval %s of cancelled run %s still pending: %s\n", apr, id, text);
    assert_null(strstr(text, apr));
    free(text);
    json_decref(list);
    snprintf(url, sizeof url, "%s/v1/approvals/%s", F.node.base, apr);
    json_t *j = fx_call("POST", url, "{\"decision\": \"approve\", \"reason\": \"late\"}", &st);
    fprintf(stderr, "late approve of a cancelled run's approval: HTTP %ld\n", st);
    assert_int_not_equal(st, 500);
    json_decref(j);
    barrier_run("simple");
    assert_cancelled(id, expected);
    ts = fx_tool_stats(&F);
    assert_int_equal(fx_int(json_object_get(ts, "by_tool"), "payment"), pays);
    json_decref(ts);
    free(id);
}

static void mid_tool(void **state)
{
    (void)state;
    char *id = fx_run(&F, "nap", "take a nap", "[\"nap\"]", NULL);
    assert_non_null(id);
    json_t *sd = fx_wait_event(&F, id, "tool.started", 1);
    assert_non_null(sd);
    char key[80];
    snprintf(key, sizeof key, "%s", fx_data_str(sd, "idempotency_key"));
    json_decref(sd);
    /* The toolserver has the call and is sleeping on it. */
    uint64_t until = h_now_ms() + FX_WAIT_MS;
    json_t *k = NULL;
    while (k == NULL && h_now_ms() < until) {
        k = fx_tool_key(&F, key);
        if (k == NULL)
            fx_pause();
    }
    assert_non_null(k);
    json_decref(k);
    cancel(id);
    const char *expected[] = { "run.created",    "llm.requested", "llm.completed",
                               "tool.requested", "tool.started",  "run.cancelled", NULL };
    assert_cancelled(id, expected);
    /* The tool finishes later; its answer is not journaled. */
    int done = 0;
    while (!done && h_now_ms() < until) {
        k = fx_tool_key(&F, key);
        done = k != NULL && (json_is_true(json_object_get(k, "done")) || fx_int(k, "done") != 0);
        json_decref(k);
        if (!done)
            fx_pause();
    }
    assert_true(done);
    barrier_run("simple");
    assert_cancelled(id, expected);
    free(id);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(queued_and_running),
        cmocka_unit_test(waiting_approval),
        cmocka_unit_test(mid_tool),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
