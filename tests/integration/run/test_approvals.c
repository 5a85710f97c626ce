/* Issue 4, real processes: approvals. An irreversible tool (or one whose
 * config carries "require_approval": true) puts the run in waiting_approval
 * and lists the request under GET /v1/approvals; approve runs the tool once
 * and the run succeeds; deny tells the model (the tool is never executed)
 * and the run goes on to its final answer; no decision before the deadline
 * (a node started with --approval-timeout 1) is a default deny. */
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
    if (fx_start(&F, "it-run-approvals", NULL) != 0) {
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

/* The pending approval of run id from GET /v1/approvals?status=pending
 * (new reference), NULL when none is listed. */
static json_t *pending_for(struct fx *f, const char *id)
{
    char url[256];
    long st;
    snprintf(url, sizeof url, "%s/v1/approvals?status=pending", f->node.base);
    json_t *j = fx_call("GET", url, NULL, &st);
    assert_int_equal(st, 200);
    json_t *list = json_is_array(j) ? j : json_object_get(j, "approvals");
    assert_true(json_is_array(list));
    size_t i;
    json_t *a, *found = NULL;
    json_array_foreach(list, i, a) {
        if (strcmp(fx_str(a, "run_id"), id) == 0)
            found = json_incref(a);
    }
    json_decref(j);
    return found;
}

static long decide(struct fx *f, const char *apr, const char *decision, const char *reason)
{
    char url[256], body[256];
    long st;
    snprintf(url, sizeof url, "%s/v1/approvals/%s", f->node.base, apr);
    snprintf(body, sizeof body, "{\"decision\": \"%s\", \"reason\": \"%s\"}", decision, reason);
    json_t *j = fx_call("POST", url, body, &st);
    if (st != 200) {
        char *t = j ? json_dumps(j, 0) : NULL;
        fprintf(stderr, "POST %s: HTTP %ld %s\n", url, st, t ? t : "");
        free(t);
    }
    json_decref(j);
    return st;
}

/* Start a run that needs an approval and wait for it; returns the approval
 * (new reference) after checking what is listed and journaled. */
static json_t *wait_for_approval(struct fx *f, const char *id, const char *tool, long long amount)
{
    assert_int_equal(fx_wait_status(f, id, "waiting_approval"), 0);
    json_t *a = pending_for(f, id);
    assert_non_null(a);
    assert_string_equal(fx_str(a, "tool"), tool);
    assert_int_equal(fx_int(json_object_get(a, "arguments"), "amount"), amount);
    assert_true(strncmp(fx_str(a, "id"), "apr_", 4) == 0);
    assert_true(json_is_string(json_object_get(a, "requested_at")));
    assert_true(json_is_string(json_object_get(a, "expires_at")));
    json_t *run = fx_get_run(f, id);
    assert_string_equal(fx_str(run, "pending_approval"), fx_str(a, "id"));
    json_decref(run);
    json_t *ev = fx_events(f, id);
    const char *expected[] = { "run.created",    "llm.requested",      "llm.completed",
                               "tool.requested", "approval.requested", NULL };
    assert_true(fx_types_equal(ev, expected));
    json_t *ar = fx_nth(ev, "approval.requested", 0);
    assert_string_equal(fx_data_str(ar, "approval_id"), fx_str(a, "id"));
    json_decref(ev);
    return a;
}

static long long balance(struct fx *f)
{
    json_t *s = fx_tool_stats(f);
    long long b = fx_int(s, "balance");
    json_decref(s);
    return b;
}

static long long payments(struct fx *f)
{
    json_t *s = fx_tool_stats(f);
    long long n = fx_int(json_object_get(s, "by_tool"), "payment");
    json_decref(s);
    return n;
}

static void approve_runs_the_tool_once(void **state)
{
    (void)state;
    long long bal0 = balance(&F), pay0 = payments(&F);
    char *id = fx_run(&F, "approval", "pay the invoice", "[\"pay\"]", NULL);
    assert_non_null(id);
    json_t *a = wait_for_approval(&F, id, "pay", 5);
    assert_string_equal(fx_str(a, "risk"), "irreversible");
    /* Nothing was paid while waiting. */
    assert_int_equal(payments(&F), pay0);

    assert_int_equal(decide(&F, fx_str(a, "id"), "approve", "looks right"), 200);
    char *st = fx_wait_terminal(&F, id);
    assert_non_null(st);
    assert_string_equal(st, "succeeded");
    json_t *ev = fx_events(&F, id);
    const char *expected[] = { "run.created",      "llm.requested", "llm.completed",  "tool.requested",
                               "approval.requested", "approval.decided", "tool.started", "tool.completed",
                               "llm.requested",    "llm.completed", "run.succeeded",  NULL };
    assert_true(fx_types_equal(ev, expected));
    assert_true(fx_seq_ok(ev, id));
    json_t *d = fx_nth(ev, "approval.decided", 0);
    assert_string_equal(fx_data_str(d, "decision"), "approve");
    assert_string_equal(fx_data_str(d, "approval_id"), fx_str(a, "id"));
    assert_string_equal(fx_data_str(d, "reason"), "looks right");

    /* The tool ran once, under the journaled key. */
    const char *key = fx_data_str(fx_nth(ev, "tool.started", 0), "idempotency_key");
    json_t *k = fx_tool_key(&F, key);
    assert_non_null(k);
    assert_int_equal(fx_int(k, "effects"), 1);
    assert_int_equal(fx_int(k, "received"), 1);
    json_decref(k);
    assert_int_equal(balance(&F), bal0 + 5);
    assert_int_equal(payments(&F), pay0 + 1);
    json_t *done = fx_nth(ev, "tool.completed", 0);
    assert_false(json_is_true(json_object_get(json_object_get(done, "data"), "is_error")));
    json_t *run = fx_get_run(&F, id);
    assert_non_null(strstr(fx_str(run, "output"), "outcome: "));
    assert_non_null(strstr(fx_str(run, "output"), "charged"));
    assert_string_equal(fx_str(run, "pending_approval"), "");
    json_decref(run);
    json_t *p = pending_for(&F, id);
    assert_null(p);

    /* A second decision on a decided approval changes nothing. */
    assert_int_not_equal(decide(&F, fx_str(a, "id"), "approve", "again"), 500);
    json_t *ev2 = fx_events(&F, id);
    assert_int_equal(json_array_size(ev2), json_array_size(ev));
    json_decref(ev2);
    assert_int_equal(payments(&F), pay0 + 1);

    json_decref(ev);
    json_decref(a);
    free(st);
    free(id);
}

static void deny_tells_the_model(void **state)
{
    (void)state;
    long long bal0 = balance(&F), pay0 = payments(&F);
    char *id = fx_run(&F, "approval", "pay the other invoice", "[\"pay\"]", NULL);
    assert_non_null(id);
    json_t *a = wait_for_approval(&F, id, "pay", 5);
    assert_int_equal(decide(&F, fx_str(a, "id"), "deny", "too expensive"), 200);
    char *st = fx_wait_terminal(&F, id);
    assert_non_null(st);
    assert_string_equal(st, "succeeded");
    json_t *ev = fx_events(&F, id);
    const char *expected[] = { "run.created",        "llm.requested",    "llm.completed",  "tool.requested",
                               "approval.requested", "approval.decided", "tool.completed", "llm.requested",
                               "llm.completed",      "run.succeeded",    NULL };
    assert_true(fx_types_equal(ev, expected));
    assert_true(fx_seq_ok(ev, id));
    assert_string_equal(fx_data_str(fx_nth(ev, "approval.decided", 0), "decision"), "deny");
    json_t *done = fx_nth(ev, "tool.completed", 0);
    assert_true(json_is_true(json_object_get(json_object_get(done, "data"), "is_error")));
    assert_non_null(strstr(fx_data_str(done, "error"), "denied"));
    assert_non_null(strstr(fx_data_str(done, "error"), "too expensive"));
    /* The next request carried the denial: the model's answer quotes it. */
    json_t *run = fx_get_run(&F, id);
    assert_non_null(strstr(fx_str(run, "output"), "outcome: "));
    assert_non_null(strstr(fx_str(run, "output"), "too expensive"));
    json_decref(run);
    /* Never executed. */
    assert_int_equal(payments(&F), pay0);
    assert_int_equal(balance(&F), bal0);
    assert_null(pending_for(&F, id));
    json_decref(ev);
    json_decref(a);
    free(st);
    free(id);
}

static void policy_marked_tool_waits_too(void **state)
{
    (void)state;
    char url[256], body[1024];
    long st;
    snprintf(url, sizeof url, "%s/v1/tools", F.node.base);
    snprintf(body, sizeof body,
             "{\"name\": \"pay_marked\", \"description\": \"a write tool marked for approval\","
             " \"input_schema\": {\"type\": \"object\"}, \"risk\": \"write\", \"kind\": \"http\","
             " \"config\": {\"url\": \"%s/tools/payment\", \"allow\": [\"127.0.0.1\"], \"require_approval\": true},"
             " \"timeout_ms\": 10000}",
             F.tools_base);
    json_t *j = fx_call("POST", url, body, &st);
    json_decref(j);
    assert_true(st == 200 || st == 201);
    long long bal0 = balance(&F);
    char *id = fx_run(&F, "approval_marked", "pay with a marked tool", "[\"pay_marked\"]", NULL);
    assert_non_null(id);
    json_t *a = wait_for_approval(&F, id, "pay_marked", 7);
    assert_string_equal(fx_str(a, "risk"), "write");
    assert_int_equal(balance(&F), bal0);
    assert_int_equal(decide(&F, fx_str(a, "id"), "approve", "fine"), 200);
    char *s = fx_wait_terminal(&F, id);
    assert_non_null(s);
    assert_string_equal(s, "succeeded");
    assert_int_equal(balance(&F), bal0 + 7);
    json_decref(a);
    free(s);
    free(id);
}

/* --approval-timeout 1: nobody decides, the run is told "expired" and goes
 * on; the tool never runs. */
static void timeout_is_a_default_deny(void **state)
{
    (void)state;
    struct fx T;
    char *args[] = { "--approval-timeout", "1", NULL };
    assert_int_equal(fx_start(&T, "it-run-apr-timeout", args), 0);
    char *id = fx_run(&T, "approval", "pay if someone agrees", "[\"pay\"]", NULL);
    assert_non_null(id);
    char *st = fx_wait_terminal(&T, id);
    assert_non_null(st);
    assert_string_equal(st, "succeeded");
    json_t *ev = fx_events(&T, id);
    const char *expected[] = { "run.created",        "llm.requested",    "llm.completed",  "tool.requested",
                               "approval.requested", "approval.decided", "tool.completed", "llm.requested",
                               "llm.completed",      "run.succeeded",    NULL };
    assert_true(fx_types_equal(ev, expected));
    assert_true(fx_seq_ok(ev, id));
    json_t *d = fx_nth(ev, "approval.decided", 0);
    const char *decision = fx_data_str(d, "decision");
    assert_true(strcmp(decision, "expired") == 0 || strcmp(decision, "deny") == 0);
    assert_string_equal(fx_data_str(d, "decided_by"), "timeout");
    json_t *done = fx_nth(ev, "tool.completed", 0);
    assert_true(json_is_true(json_object_get(json_object_get(done, "data"), "is_error")));
    assert_non_null(strstr(fx_data_str(done, "error"), "expired"));
    json_t *run = fx_get_run(&T, id);
    assert_non_null(strstr(fx_str(run, "output"), "expired"));
    json_decref(run);
    assert_int_equal(payments(&T), 0);
    json_t *s = fx_tool_stats(&T);
    assert_int_equal(fx_int(s, "requests"), 0);
    json_decref(s);
    assert_null(pending_for(&T, id));
    json_decref(ev);
    free(st);
    free(id);
    assert_int_equal(fx_stop(&T), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(approve_runs_the_tool_once),
        cmocka_unit_test(deny_tells_the_model),
        cmocka_unit_test(policy_marked_tool_waits_too),
        cmocka_unit_test(timeout_is_a_default_deny),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
