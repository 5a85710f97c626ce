/* Issue 4, real processes: a 10-step run's journal is exactly what the loop
 * did; a tool that outlives its timeout_ms is an error the model sees;
 * malformed LLM output (bad JSON, no choices) fails the run with llm_error
 * after retries, while an unknown tool or unparsable arguments go back to
 * the model and the run recovers. One node, mockllm and toolserver for the
 * whole file; every test uses its own runs and toolserver keys. */
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
    if (fx_start(&F, "it-run-journal", NULL) != 0) {
        fx_stop(&F);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    json_t *st = fx_tool_stats(&F);
    long long dup = fx_int(st, "duplicates_performed");
    json_decref(st);
    int rv = fx_stop(&F);
    if (dup != 0)
        fprintf(stderr, "toolserver: %lld duplicates performed\n", dup);
    return rv == 0 && dup == 0 ? 0 : -1;
}

/* The answer the toolserver recorded for key: a resend with the same key
 * gets it back without a second effect. */
static json_t *recorded_answer(const char *tool_path, const char *key, json_t *args)
{
    char url[256], hdr[200];
    snprintf(url, sizeof url, "%s/tools/%s", F.tools_base, tool_path);
    snprintf(hdr, sizeof hdr, "Idempotency-Key: %s", key);
    const char *headers[] = { hdr, NULL };
    char *body = json_dumps(args, JSON_COMPACT | JSON_ENCODE_ANY);
    struct h_resp r;
    h_http(&r, "POST", url, body, headers, 10000);
    free(body);
    json_t *j = r.status == 200 && r.json != NULL ? json_incref(r.json) : NULL;
    h_resp_free(&r);
    return j;
}

static json_t *completed_for(json_t *events, long long step, long long idx)
{
    size_t i;
    json_t *e;
    json_array_foreach(events, i, e) {
        if (strcmp(fx_str(e, "type"), "tool.completed") == 0 && fx_data_int(e, "step") == step &&
            fx_data_int(e, "call_index") == idx)
            return e;
    }
    return NULL;
}

static void ten_step_journal(void **state)
{
    (void)state;
    char *id = fx_run(&F, "tenstep", "walk ten steps", "[\"echo\", \"add\"]", NULL);
    assert_non_null(id);
    char *st = fx_wait_terminal(&F, id);
    assert_non_null(st);
    json_t *run = fx_get_run(&F, id);
    json_t *ev = fx_events(&F, id);
    if (strcmp(st, "succeeded") != 0) {
        char *t = fx_types(ev);
        fprintf(stderr, "status %s error %s; journal: %s\n", st, fx_str(run, "error"), t);
        free(t);
    }
    assert_string_equal(st, "succeeded");

    /* The exact sequence: 9 tool steps, then the answer. */
    const char *expected[64];
    int n = 0;
    expected[n++] = "run.created";
    for (int s = 0; s < 9; s++) {
        expected[n++] = "llm.requested";
        expected[n++] = "llm.completed";
        expected[n++] = "tool.requested";
        expected[n++] = "tool.started";
        expected[n++] = "tool.completed";
    }
    expected[n++] = "llm.requested";
    expected[n++] = "llm.completed";
    expected[n++] = "run.succeeded";
    expected[n] = NULL;
    assert_true(fx_types_equal(ev, expected));
    assert_true(fx_seq_ok(ev, id));
    assert_int_equal(fx_int(run, "last_seq"), n);

    /* Every step's llm events carry its number; attempts are first attempts. */
    for (int s = 0; s < 10; s++) {
        json_t *rq = fx_nth(ev, "llm.requested", s), *cp = fx_nth(ev, "llm.completed", s);
        assert_int_equal(fx_data_int(rq, "step"), s + 1);
        assert_int_equal(fx_data_int(rq, "attempt"), 1);
        assert_int_equal(fx_data_int(cp, "step"), s + 1);
    }

    /* Each call: requested with the model's arguments, started with a key
     * the toolserver received exactly once, completed with the toolserver's
     * answer. */
    for (int s = 0; s < 9; s++) {
        json_t *cp = fx_nth(ev, "llm.completed", s);
        json_t *calls = json_object_get(json_object_get(cp, "data"), "tool_calls");
        assert_int_equal(json_array_size(calls), 1);
        json_t *call = json_array_get(calls, 0);
        const char *name = fx_str(call, "name");
        assert_string_equal(name, s % 2 == 0 ? "echo" : "add");
        json_t *model_args = json_loads(fx_str(call, "arguments"), 0, NULL);
        assert_non_null(model_args);

        json_t *rq = fx_nth(ev, "tool.requested", s);
        assert_int_equal(fx_data_int(rq, "step"), s + 1);
        assert_string_equal(fx_data_str(rq, "tool"), name);
        assert_string_equal(fx_data_str(rq, "call_id"), fx_str(call, "id"));
        assert_true(json_equal(json_object_get(json_object_get(rq, "data"), "arguments"), model_args));

        json_t *sd = fx_nth(ev, "tool.started", s);
        assert_int_equal(fx_data_int(sd, "step"), s + 1);
        assert_int_equal(fx_data_int(sd, "call_index"), 0);
        assert_string_equal(fx_data_str(sd, "tool"), name);
        const char *key = fx_data_str(sd, "idempotency_key");
        assert_int_equal(strlen(key), 64);

        json_t *k = fx_tool_key(&F, key);
        assert_non_null(k);
        assert_string_equal(fx_str(k, "tool"), name);
        assert_int_equal(fx_int(k, "received"), 1);
        assert_int_equal(fx_int(k, "effects"), 1);
        json_decref(k);

        json_t *done = completed_for(ev, s + 1, 0);
        assert_non_null(done);
        assert_false(json_is_true(json_object_get(json_object_get(done, "data"), "is_error")));
        json_t *result = json_loads(fx_data_str(done, "result"), JSON_DECODE_ANY, NULL);
        assert_non_null(result);
        json_t *answer = recorded_answer(name, key, model_args);
        assert_non_null(answer);
        if (!json_equal(result, answer)) {
            char *a = json_dumps(answer, JSON_COMPACT), *b = json_dumps(result, JSON_COMPACT);
            fprintf(stderr, "step %d: journal result %s, toolserver answer %s\n", s + 1, b, a);
            free(a);
            free(b);
        }
        assert_true(json_equal(result, answer));
        if (s % 2 == 0) /* echo: its arguments */
            assert_true(json_equal(result, model_args));
        else /* add: the sum */
            assert_non_null(json_object_get(result, "sum"));
        json_decref(answer);
        json_decref(result);
        json_decref(model_args);
    }

    /* Usage: the run's totals are the sums of what each llm call reported. */
    long long pt = 0, ct = 0;
    for (int s = 0; s < 10; s++) {
        json_t *u = json_object_get(json_object_get(fx_nth(ev, "llm.completed", s), "data"), "usage");
        assert_true(fx_int(u, "prompt_tokens") > 0);
        assert_true(fx_int(u, "completion_tokens") > 0);
        pt += fx_int(u, "prompt_tokens");
        ct += fx_int(u, "completion_tokens");
    }
    json_t *ru = json_object_get(run, "usage");
    assert_int_equal(fx_int(ru, "prompt_tokens"), pt);
    assert_int_equal(fx_int(ru, "completion_tokens"), ct);
    json_t *su = json_object_get(json_object_get(fx_nth(ev, "run.succeeded", 0), "data"), "usage");
    assert_int_equal(fx_int(su, "prompt_tokens"), pt);
    assert_int_equal(fx_int(su, "completion_tokens"), ct);

    /* Output: the final content, which quotes the last tool result. */
    const char *final = fx_data_str(fx_nth(ev, "llm.completed", 9), "content");
    assert_string_equal(fx_str(run, "output"), final);
    assert_string_equal(fx_data_str(fx_nth(ev, "run.succeeded", 0), "output"), final);
    assert_non_null(strstr(final, "final after 9 steps: "));
    assert_non_null(strstr(final, "\"n\""));
    assert_int_equal(fx_int(run, "step"), 10);
    assert_int_equal(fx_data_int(fx_nth(ev, "run.succeeded", 0), "steps"), 10);

    json_decref(ev);
    json_decref(run);
    free(st);
    free(id);
}

static void tool_timeout_is_an_error_the_model_sees(void **state)
{
    (void)state;
    char *id = fx_run(&F, "tool_timeout", "be patient", "[\"slow\"]", NULL);
    assert_non_null(id);
    char *st = fx_wait_terminal(&F, id);
    assert_non_null(st);
    assert_string_equal(st, "succeeded");
    json_t *ev = fx_events(&F, id);
    const char *expected[] = { "run.created",    "llm.requested", "llm.completed", "tool.requested",
                               "tool.started",   "tool.completed", "llm.requested", "llm.completed",
                               "run.succeeded",  NULL };
    assert_true(fx_types_equal(ev, expected));
    json_t *done = fx_nth(ev, "tool.completed", 0);
    assert_true(json_is_true(json_object_get(json_object_get(done, "data"), "is_error")));
    const char *err = fx_data_str(done, "error");
    assert_non_null(strstr(err, "timed out"));
    /* The call did go out (with its key); the model was told. */
    json_t *k = fx_tool_key(&F, fx_data_str(fx_nth(ev, "tool.started", 0), "idempotency_key"));
    assert_non_null(k);
    json_decref(k);
    json_t *run = fx_get_run(&F, id);
    assert_non_null(strstr(fx_str(run, "output"), "after the timeout: "));
    assert_non_null(strstr(fx_str(run, "output"), "timed out"));
    json_decref(run);
    json_decref(ev);
    free(st);
    free(id);
}

/* A provider answering garbage on every attempt: retried by the llm actor,
 * then the run fails with llm_error and says why. Invalid bodies are
 * per-call failures that do not count for the llm circuit breaker (per
 * endpoint, shared by every run of the node, actors/llm.h), so these runs
 * share the node with the others: the runs after them are not held up. */
static void garbage_fails_with_llm_error(const char *script)
{
    struct fx *f = &F;
    json_t *ms = fx_mock_stats(f);
    long long before = fx_int(ms, "malformed");
    json_decref(ms);
    char *id = fx_run(f, script, "say something", "[\"echo\"]", NULL);
    assert_non_null(id);
    char *st = fx_wait_terminal(f, id);
    assert_non_null(st);
    assert_string_equal(st, "failed");
    json_t *run = fx_get_run(f, id);
    assert_string_equal(fx_str(run, "error_code"), "llm_error");
    const char *err = fx_str(run, "error");
    fprintf(stderr, "%s: run error: %s\n", script, err);
    assert_true(strlen(err) > 10);
    assert_non_null(strstr(err, "bad_response"));
    json_t *ev = fx_events(f, id);
    assert_int_equal(fx_count(ev, "llm.completed"), 0);
    assert_int_equal(fx_count(ev, "tool.requested"), 0);
    assert_string_equal(fx_str(json_array_get(ev, json_array_size(ev) - 1), "type"), "run.failed");
    json_t *last = json_array_get(ev, json_array_size(ev) - 1);
    assert_string_equal(fx_data_str(last, "error_code"), "llm_error");
    assert_true(fx_seq_ok(ev, id));
    ms = fx_mock_stats(f);
    long long after = fx_int(ms, "malformed");
    json_decref(ms);
    assert_true(after - before >= 2); /* retried before giving up */
    json_decref(ev);
    json_decref(run);
    free(st);
    free(id);
}

static void bad_json_fails_with_llm_error(void **state)
{
    (void)state;
    garbage_fails_with_llm_error("bad_json");
}

static void empty_choices_fails_with_llm_error(void **state)
{
    (void)state;
    garbage_fails_with_llm_error("empty_choices");
}

/* A call the run refuses goes back to the model as an error; the next step
 * is fine and the run succeeds. Nothing reached the toolserver. */
static void refused_call_recovers(const char *script, const char *why)
{
    json_t *ts = fx_tool_stats(&F);
    long long before = fx_int(ts, "requests");
    json_decref(ts);
    char *id = fx_run(&F, script, "try a tool", "[\"echo\"]", NULL);
    assert_non_null(id);
    char *st = fx_wait_terminal(&F, id);
    assert_non_null(st);
    assert_string_equal(st, "succeeded");
    json_t *ev = fx_events(&F, id);
    const char *expected[] = { "run.created",   "llm.requested", "llm.completed", "tool.requested", "tool.completed",
                               "llm.requested", "llm.completed", "run.succeeded", NULL };
    assert_true(fx_types_equal(ev, expected));
    json_t *done = fx_nth(ev, "tool.completed", 0);
    assert_true(json_is_true(json_object_get(json_object_get(done, "data"), "is_error")));
    const char *err = fx_data_str(done, "error");
    fprintf(stderr, "%s: tool error: %s\n", script, err);
    assert_true(strncmp(err, "invalid tool call: ", 19) == 0);
    assert_non_null(strstr(err, why));
    json_t *run = fx_get_run(&F, id);
    /* The model saw the error (its answer quotes the tool message). */
    assert_non_null(strstr(fx_str(run, "output"), "recovered: "));
    assert_non_null(strstr(fx_str(run, "output"), why));
    json_decref(run);
    ts = fx_tool_stats(&F);
    assert_int_equal(fx_int(ts, "requests"), before);
    json_decref(ts);
    json_decref(ev);
    free(st);
    free(id);
}

static void unknown_tool_goes_back_to_the_model(void **state)
{
    (void)state;
    refused_call_recovers("unknown_tool", "unknown tool \"mock_unknown_tool\"");
}

static void bad_arguments_go_back_to_the_model(void **state)
{
    (void)state;
    refused_call_recovers("bad_args", "not valid JSON");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(ten_step_journal),
        cmocka_unit_test(tool_timeout_is_an_error_the_model_sees),
        cmocka_unit_test(bad_json_fails_with_llm_error),
        cmocka_unit_test(empty_choices_fails_with_llm_error),
        cmocka_unit_test(unknown_tool_goes_back_to_the_model),
        cmocka_unit_test(bad_arguments_go_back_to_the_model),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
