/* Context assembly (actors/context.c): budget, what is always kept, the
 * summary of dropped steps, truncation of large results. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "harness.h"
#include "schemas/journal_generated.h"

#define J(x) troupe_journal_##x

static uint32_t n_steps_wanted;
static size_t result_size;

static char *llm_steps(struct harness *h, uint32_t step, uint32_t attempt)
{
    char args[64];
    const char *names[] = { step % 3 ? "search" : "fetch" }, *a = args;

    if (step > n_steps_wanted)
        return h_llm_text("done", 1, 1, 1);
    snprintf(args, sizeof args, "{\"q\":\"step %u\"}", step);
    return h_llm_calls(1, 1, 1, 1, names, &a);
}

static char *tool_sized(struct harness *h, const char *name, const char *args, const char *key, uint32_t step,
                        uint32_t idx)
{
    char *buf = tr_malloc(result_size + 1);
    memset(buf, 'a' + (char)(step % 26), result_size);
    buf[result_size] = '\0';
    char *j = h_tool_ok(buf);
    tr_free(buf);
    return j;
}

/* A run with n finished steps (the run is left before its next llm call). */
static void build(struct harness *h, uint32_t n, size_t size)
{
    static const struct h_agent ag = { .goal = "Summarise the news.", .system = "You are terse.",
                                       .tools = { "search", "fetch" } };
    struct tr_run_action a;

    n_steps_wanted = n;
    result_size = size;
    h_init(h, &ag, llm_steps, tool_sized);
    h_add_tool(h, "search", "{\"type\":\"object\",\"properties\":{\"q\":{\"type\":\"string\"}}}", J(Risk_Read));
    h_add_tool(h, "fetch", "{\"type\":\"object\"}", J(Risk_Read));
    h->manual_llm = true;
    for (uint32_t s = 1; s <= n; s++) {
        assert_int_equal(h_drive(h, 100, &a), TR_RUN_CALL_LLM);
        tr_run_action_free(&a);
        char *r = llm_steps(h, s, 1);
        h_llm_reply(h, r);
        tr_free(r);
    }
    assert_int_equal(h_drive(h, 100, &a), TR_RUN_CALL_LLM);
    tr_run_action_free(&a);
    assert_int_equal(h->s.n_steps, n + 1);
}

static const char *content(json_t *msgs, size_t i)
{
    return json_string_value(json_object_get(json_array_get(msgs, i), "content"));
}

static const char *role(json_t *msgs, size_t i)
{
    return json_string_value(json_object_get(json_array_get(msgs, i), "role"));
}

static void test_tokens(void **st)
{
    assert_int_equal(tr_context_tokens(0), 0);
    assert_int_equal(tr_context_tokens(1), 1);
    assert_int_equal(tr_context_tokens(4), 1);
    assert_int_equal(tr_context_tokens(5), 2);
}

static void test_everything_fits(void **st)
{
    struct harness h;
    struct tr_context_stats cs;

    build(&h, 3, 100);
    json_t *tools = tr_run_tool_defs(&h.s, &h.env);
    json_t *m = tr_context_messages(&h.s, 3, tools, 100000, &h.env, &cs);
    assert_int_equal(cs.dropped_steps, 0);
    assert_int_equal(cs.truncated, 0);
    assert_int_equal(json_array_size(m), 2 + 3 * 2);
    assert_string_equal(role(m, 0), "system");
    assert_non_null(strstr(content(m, 0), "You are terse."));
    assert_non_null(strstr(content(m, 0), "call finish"));
    assert_string_equal(role(m, 1), "user");
    assert_string_equal(content(m, 1), "Summarise the news.");
    for (uint32_t s = 0; s < 3; s++) {
        json_t *am = json_array_get(m, 2 + 2 * s);
        json_t *tm = json_array_get(m, 3 + 2 * s);
        assert_string_equal(json_string_value(json_object_get(am, "role")), "assistant");
        json_t *tc = json_array_get(json_object_get(am, "tool_calls"), 0);
        assert_string_equal(json_string_value(json_object_get(tm, "role")), "tool");
        assert_string_equal(json_string_value(json_object_get(tm, "tool_call_id")),
                            json_string_value(json_object_get(tc, "id")));
        assert_int_equal(strlen(json_string_value(json_object_get(tm, "content"))), 100);
    }
    /* Tools: the agent's two, then the four builtins. */
    assert_int_equal(json_array_size(tools), 6);
    json_t *fn = json_object_get(json_array_get(tools, 0), "function");
    assert_string_equal(json_string_value(json_object_get(fn, "name")), "search");
    assert_string_equal(json_string_value(json_object_get(json_object_get(fn, "parameters"), "type")), "object");
    json_decref(m);
    json_decref(tools);
    h_free(&h);
}

static void test_budget_drops_oldest(void **st)
{
    struct harness h;
    struct tr_context_stats cs;
    const uint32_t budget = 3000;

    build(&h, 30, 1000); /* about 300 tokens per step */
    json_t *tools = tr_run_tool_defs(&h.s, &h.env);
    json_t *m = tr_context_messages(&h.s, 30, tools, budget, &h.env, &cs);
    assert_true(cs.dropped_steps > 0 && cs.dropped_steps < 30);
    assert_true(cs.tokens <= budget);
    /* Kept whole: system, goal (and the tools, counted in the budget). */
    assert_string_equal(role(m, 0), "system");
    assert_string_equal(content(m, 1), "Summarise the news.");
    /* The summary of the dropped steps. */
    char want[64];
    snprintf(want, sizeof want, "Earlier steps (1-%u) called: ", cs.dropped_steps);
    assert_string_equal(role(m, 2), "system");
    assert_ptr_equal(strstr(content(m, 2), want), content(m, 2));
    assert_non_null(strstr(content(m, 2), "search x"));
    assert_non_null(strstr(content(m, 2), "fetch x"));
    assert_non_null(strstr(content(m, 2), "results omitted."));
    /* Then whole steps only, and the newest is there. */
    assert_string_equal(role(m, 3), "assistant");
    assert_int_equal(json_array_size(m), 3 + 2 * (30 - cs.dropped_steps));
    char last_q[32];
    snprintf(last_q, sizeof last_q, "step 30");
    json_t *am = json_array_get(m, json_array_size(m) - 2);
    const char *args = json_string_value(json_object_get(
        json_object_get(json_array_get(json_object_get(am, "tool_calls"), 0), "function"), "arguments"));
    assert_non_null(strstr(args, last_q));
    /* One more dropped step would be needed for a smaller budget. */
    struct tr_context_stats cs2;
    json_t *m2 = tr_context_messages(&h.s, 30, tools, budget - 400, &h.env, &cs2);
    assert_true(cs2.dropped_steps > cs.dropped_steps);
    assert_true(cs2.tokens <= budget - 400);
    json_decref(m2);
    json_decref(m);
    json_decref(tools);
    h_free(&h);
}

static void test_truncation(void **st)
{
    struct harness h;
    struct tr_context_stats cs;

    build(&h, 2, 3000); /* over the 2 KiB shown, under the blob threshold */
    json_t *m = tr_context_messages(&h.s, 2, NULL, 100000, &h.env, &cs);
    assert_int_equal(cs.truncated, 2);
    const char *t = content(m, 3);
    assert_non_null(t);
    assert_non_null(strstr(t, "\n[truncated: showing 2048 of 3000 bytes]"));
    assert_true(strlen(t) < 2048 + 64);
    json_decref(m);
    /* The newest step alone over budget: kept, its results cut shorter. */
    m = tr_context_messages(&h.s, 2, NULL, 300, &h.env, &cs);
    assert_int_equal(cs.dropped_steps, 1);
    t = content(m, json_array_size(m) - 1);
    assert_non_null(strstr(t, "[truncated: showing 256 of 3000 bytes]"));
    json_decref(m);
    h_free(&h);
}

static void test_request_is_canonical(void **st)
{
    struct harness h;
    struct tr_run_vol v = { 0 };
    size_t l1, l2, l3;
    unsigned char d1[TR_RUN_DIGEST], d2[TR_RUN_DIGEST], d3[TR_RUN_DIGEST], d[TR_RUN_DIGEST];

    build(&h, 2, 10);
    /* The same bytes without the cache, with a cold one and a warm one. */
    char *a = tr_run_llm_request(&h.s, NULL, &h.env, 3, &l1, d1, NULL);
    char *b = tr_run_llm_request(&h.s, &v, &h.env, 3, &l2, d2, NULL);
    char *c = tr_run_llm_request(&h.s, &v, &h.env, 3, &l3, d3, NULL);
    assert_int_equal(l1, l2);
    assert_int_equal(l1, l3);
    assert_memory_equal(a, b, l1);
    assert_memory_equal(a, c, l1);
    assert_memory_equal(d1, d2, sizeof d1);
    assert_memory_equal(d1, d3, sizeof d1);
    assert_int_equal(strlen(a), l1);
    crypto_generichash(d, sizeof d, (const unsigned char *)a, l1, NULL, 0); /* of the bytes sent */
    assert_memory_equal(d, d1, sizeof d);
    /* The Chat Completions body itself; the run's id, step and tenant go in
     * the TR_MSG_LLM_CALL header (actors.h). */
    json_t *j = json_loads(a, 0, NULL);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "model")), "gpt-test");
    assert_true(json_is_false(json_object_get(j, "stream")));
    assert_string_equal(json_string_value(json_object_get(j, "tool_choice")), "auto");
    assert_true(json_array_size(json_object_get(j, "tools")) > 0);
    assert_true(json_is_number(json_object_get(j, "temperature")));
    assert_null(json_object_get(j, "run_id"));
    assert_null(json_object_get(j, "tenant"));
    assert_int_equal(json_array_size(json_object_get(j, "messages")), 2 + 2 * 2);
    json_decref(j);
    tr_free(a);
    tr_free(b);
    tr_free(c);

    /* Over budget (oldest steps summarised, the newest cut shorter): still
     * the same bytes and stats with the cache as without. */
    tr_run_vol_forget_prompt(&v);
    h_free(&h);
    build(&h, 12, 3000);
    for (uint32_t budget = 100000; budget >= 200; budget /= 2) {
        struct tr_context_stats s1, s2;
        h.env.context_tokens = budget;
        for (uint32_t step = 1; step <= 13; step++) {
            a = tr_run_llm_request(&h.s, NULL, &h.env, step, &l1, d1, &s1);
            b = tr_run_llm_request(&h.s, &v, &h.env, step, &l2, d2, &s2);
            assert_int_equal(l1, l2);
            assert_memory_equal(a, b, l1);
            assert_memory_equal(&s1, &s2, sizeof s1);
            j = json_loads(a, 0, NULL);
            assert_non_null(j);
            assert_int_equal(json_array_size(json_object_get(j, "messages")), s1.messages);
            json_decref(j);
            tr_free(a);
            tr_free(b);
        }
    }
    tr_run_vol_free(&v);
    h_free(&h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tokens),
        cmocka_unit_test(test_everything_fits),
        cmocka_unit_test(test_budget_drops_oldest),
        cmocka_unit_test(test_truncation),
        cmocka_unit_test(test_request_is_canonical),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
