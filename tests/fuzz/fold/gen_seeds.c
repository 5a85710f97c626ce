/* Writes fuzz_fold's seed corpus: journals of run 0xa11ce in the target's
 * input form ([2-byte little-endian length][event], repeated).
 *
 * Usage: fold_seeds DIR
 *
 * The realistic journals come from the run core itself, driven through the
 * unit tests' harness (tests/unit/run/harness.c) with scripted llm and tool
 * replies, in the shapes tests/unit/run/test_core.c builds: a 10-step run
 * with tool calls, approvals approved, denied and expired, cancels, every
 * budget cap, both kinds of loop, malformed calls, llm retries, builtins, a
 * large result kept as a blob; some are cut where a replay is interesting
 * (waiting for the llm, a tool, a human). A few hand-made journals are
 * corrupt or surprising (a gap, another run's event, a second run.created,
 * an event whose type has no data, an event after the terminal one, a
 * creation time far in the past). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "harness.h"
#include "scripts.h"
#include "schemas/journal_generated.h"

#define J(x) troupe_journal_##x

static const char *out_dir;
static int written;

/* ---- output ------------------------------------------------------------------- */

struct journal {
    uint8_t *p;
    size_t n;
};

static void put_event(struct journal *j, const void *ev, size_t len)
{
    if (len > 0xffff) {
        fprintf(stderr, "fold_seeds: event of %zu bytes does not fit the input form\n", len);
        exit(1);
    }
    j->p = tr_realloc(j->p, j->n + 2 + len);
    j->p[j->n] = (uint8_t)len;
    j->p[j->n + 1] = (uint8_t)(len >> 8);
    memcpy(j->p + j->n + 2, ev, len);
    j->n += 2 + len;
}

static void put_harness(struct journal *j, const struct harness *h, uint32_t from, uint32_t to)
{
    for (uint32_t i = from; i < to && i < h->n; i++)
        put_event(j, h->ev[i], h->len[i]);
}

static void save(const char *name, struct journal *j)
{
    char path[1024];
    FILE *f;

    snprintf(path, sizeof path, "%s/%s", out_dir, name);
    if (!(f = fopen(path, "wb")) || fwrite(j->p, 1, j->n, f) != j->n || fclose(f) != 0) {
        perror(path);
        exit(1);
    }
    tr_free(j->p);
    j->p = NULL;
    j->n = 0;
    written++;
}

/* The first k events of h (all when k is 0). */
static void save_harness(const char *name, const struct harness *h, uint32_t k)
{
    struct journal j = { 0 };

    put_harness(&j, h, 0, k ? k : h->n);
    save(name, &j);
}

/* The index just after the first event of type `type` at or after `from`. */
static uint32_t after_first(const struct harness *h, int type, uint32_t from)
{
    for (uint32_t i = from; i < h->n; i++)
        if (h_type(h, i) == type)
            return i + 1;
    fprintf(stderr, "fold_seeds: no event of type %d\n", type);
    exit(1);
}

/* ---- scripted llms and tools ---------------------------------------------------- */

static const char search_schema[] =
    "{\"type\":\"object\",\"properties\":{\"q\":{\"type\":\"string\",\"minLength\":1}},"
    "\"required\":[\"q\"],\"additionalProperties\":false}";

static const struct h_agent agent = { .goal = "What is the answer?", .system = "You are careful.",
                                      .tools = { "search", "wire" } };

/* Searches for nine steps, then finishes. */
static char *tool_fresh(struct harness *h, const char *name, const char *args, const char *key, uint32_t step,
                        uint32_t idx)
{
    char buf[64];

    snprintf(buf, sizeof buf, "fresh %u", step);
    return h_tool_ok(buf);
}

static char *llm_parallel(struct harness *h, uint32_t step, uint32_t attempt)
{
    static const char *const names[] = { "search", "search", "search", "wire" };
    static const char *const args[] = { "{\"q\":\"a\"}", "{\"q\":\"b\"}", "{\"q\":\"c\"}", "{\"q\":\"d\"}" };

    if (step == 1)
        return h_llm_calls(10, 10, 10, 4, names, args);
    return h_llm_text("all four", 5, 5, 5);
}

/* ---- scenarios ------------------------------------------------------------------ */

static void setup(struct harness *h, const struct h_agent *a, h_llm_fn llm, h_tool_fn tool)
{
    h_init(h, a, llm, tool);
    h_add_tool(h, "search", search_schema, J(Risk_Read));
    h_add_tool(h, "wire", "{\"type\":\"object\"}", J(Risk_Irreversible));
}

static void ten_steps(void)
{
    struct harness h;

    setup(&h, &agent, llm_ten, tool_echo);
    h_drive(&h, 1000, NULL);
    save_harness("ten_steps", &h, 0);
    /* Replays: the llm call out, a tool call out, mid-run. */
    save_harness("ten_steps_llm_out", &h, after_first(&h, J(Data_LlmRequested), 0));
    save_harness("ten_steps_tool_out", &h, after_first(&h, J(Data_ToolStarted), 0));
    save_harness("ten_steps_step4", &h, after_first(&h, J(Data_LlmCompleted), 16));
    h_free(&h);
}

static void mixed(void)
{
    struct harness h;

    setup(&h, &agent, llm_mixed, tool_echo);
    h.decide_approval = approve_small;
    h_drive(&h, 1000, NULL);
    save_harness("mixed", &h, 0);
    h_free(&h);
}

/* Drives to the first approval and returns its id. */
static const char *to_approval(struct harness *h, h_llm_fn llm)
{
    struct tr_run_action a;

    setup(h, &agent, llm, tool_echo);
    h_drive(h, 100, &a);
    tr_run_action_free(&a);
    return tr_run_last_step(&h->s)->calls[0].approval_id;
}

static void approvals(void)
{
    struct harness h;
    struct tr_run_action a;

    to_approval(&h, llm_wire);
    save_harness("approval_waiting", &h, 0);
    h_fsm_decided(&h, tr_run_last_step(&h.s)->calls[0].approval_id, J(Decision_Approve), "ok");
    h_drive(&h, 100, NULL);
    save_harness("approval_approved", &h, 0);
    h_free(&h);

    to_approval(&h, llm_wire);
    h_fsm_decided(&h, tr_run_last_step(&h.s)->calls[0].approval_id, J(Decision_Deny), "too much money");
    save_harness("approval_denied_at_decision", &h, 0);
    h_drive(&h, 100, NULL);
    save_harness("approval_denied", &h, 0);
    h_free(&h);

    to_approval(&h, llm_wire);
    const struct tr_run_call *c = &tr_run_last_step(&h.s)->calls[0];
    h.fixed_now = c->apr_expires_us + 1;
    h_drive(&h, 100, &a); /* PROPOSE_EXPIRE */
    tr_run_action_free(&a);
    h_fsm_decided(&h, c->approval_id, J(Decision_Expired), "no decision before the deadline");
    h.fixed_now = 0;
    h_drive(&h, 100, NULL);
    save_harness("approval_expired", &h, 0);
    h_free(&h);

    struct h_agent ag = agent;
    ag.tools[1] = "post";
    h_init(&h, &ag, llm_post, tool_echo);
    h_add_tool(&h, "post", NULL, J(Risk_Write));
    h_tool(&h, "post")->config = "{\"url\":\"http://x/\",\"require_approval\":true}";
    h_drive(&h, 100, &a);
    tr_run_action_free(&a);
    h_fsm_decided(&h, tr_run_last_step(&h.s)->calls[0].approval_id, J(Decision_Approve), "");
    h_drive(&h, 100, NULL);
    save_harness("approval_policy_mark", &h, 0);
    h_free(&h);
}

static void cancels(void)
{
    struct harness h;
    struct tr_run_action a;

    setup(&h, &agent, llm_ten, tool_echo);
    h.manual_llm = true;
    h_drive(&h, 100, &a);
    tr_run_action_free(&a);
    h_fsm_cancelled(&h);
    save_harness("cancelled_llm_out", &h, 0);
    h_free(&h);

    to_approval(&h, llm_wire);
    h_fsm_cancelled(&h);
    save_harness("cancelled_waiting_approval", &h, 0);
    h_free(&h);
}

static void capped(const char *name, struct h_agent ag)
{
    struct harness h;

    setup(&h, &ag, llm_forever, tool_echo);
    h_drive(&h, 1000, NULL);
    save_harness(name, &h, 0);
    h_free(&h);
}

static void caps(void)
{
    struct h_agent ag = agent;
    struct harness h;
    struct tr_run_action a;

    ag.max_steps = 3;
    capped("budget_steps", ag);
    ag = agent;
    ag.max_tokens = 250;
    capped("budget_tokens", ag);
    ag = agent;
    ag.max_cost_usd = 0.002;
    capped("budget_cost", ag);

    ag = agent;
    ag.timeout_s = 10;
    setup(&h, &ag, llm_forever, tool_echo);
    h.manual_llm = true;
    h_drive(&h, 100, &a);
    tr_run_action_free(&a);
    h.fixed_now = h.s.created_us + 10 * 1000000;
    h_drive(&h, 100, NULL);
    save_harness("budget_wall_time", &h, 0);
    /* Replayed just before the budget.exceeded. */
    save_harness("budget_wall_time_before", &h, h.n - 2);
    h_free(&h);
}

static void loops(void)
{
    struct harness h;
    struct tr_run_action a;

    setup(&h, &agent, llm_same, tool_fresh);
    h.manual_llm = true;
    for (uint32_t step = 1; step <= 4; step++) {
        h_drive(&h, 100, &a);
        tr_run_action_free(&a);
        char *reply = llm_same(&h, step, 1);
        h_llm_reply(&h, reply);
        tr_free(reply);
    }
    h_drive(&h, 100, NULL);
    save_harness("loop_repeats", &h, 0);
    save_harness("loop_repeats_first", &h, after_first(&h, J(Data_LoopDetected), 0));
    h_free(&h);

    setup(&h, &agent, llm_forever, tool_same);
    h_drive(&h, 1000, NULL);
    save_harness("loop_nothing_new", &h, 0);
    h_free(&h);
}

static void malformed(void)
{
    struct harness h;

    setup(&h, &agent, llm_malformed, tool_echo);
    h_drive(&h, 1000, NULL);
    save_harness("malformed_calls", &h, 0);
    h_free(&h);

    setup(&h, &agent, llm_nope, tool_echo);
    h_drive(&h, 1000, NULL);
    save_harness("invalid_limit", &h, 0);
    h_free(&h);
}

static void llm_errors(void)
{
    struct harness h;
    struct tr_run_action a;

    setup(&h, &agent, llm_ten, tool_echo);
    h.manual_llm = true;
    h_drive(&h, 100, &a);
    tr_run_action_free(&a);
    for (uint32_t i = 1; i <= 3; i++) {
        h_llm_reply(&h, "{\"ok\":false,\"error\":{\"code\":\"unavailable\",\"message\":\"503\",\"retryable\":true}}");
        h_drive(&h, 100, &a);
        tr_run_action_free(&a);
    }
    save_harness("llm_retries", &h, 0);
    h_llm_reply(&h, "{\"ok\":false,\"error\":{\"code\":\"rejected\",\"message\":\"400 bad model\",\"retryable\":false}}");
    h_drive(&h, 100, NULL);
    save_harness("llm_fatal", &h, 0);
    h_free(&h);
}

static void builtins(void)
{
    struct harness h;

    h_init(&h, &agent, llm_builtins, tool_echo);
    h_drive(&h, 100, NULL);
    save_harness("builtins", &h, 0);
    h_free(&h);
}

static void large_result(void)
{
    struct harness h;
    struct tr_run_action a;
    char *big = tr_malloc(6001);

    for (int i = 0; i < 6000; i++)
        big[i] = (char)('a' + i % 23);
    big[6000] = '\0';
    setup(&h, &agent, llm_ten, tool_echo);
    h.manual_tools = true;
    h_drive(&h, 100, &a);
    tr_run_action_free(&a);
    char *j = h_tool_ok(big);
    h_tool_reply(&h, 0, j);
    tr_free(j);
    h.manual_tools = false;
    h.manual_llm = true;
    h_drive(&h, 100, &a);
    tr_run_action_free(&a);
    save_harness("large_result_blob", &h, 0);
    h_free(&h);
    tr_free(big);
}

static void parallel(void)
{
    struct harness h;

    setup(&h, &agent, llm_parallel, tool_echo);
    h.decide_approval = approve_small;
    h_drive(&h, 1000, NULL);
    save_harness("parallel_calls", &h, 0);
    h_free(&h);
}

/* ---- hand-made journals ------------------------------------------------------ */

/* An event of this run around `data` (0: a type without its table). */
static void craft(struct journal *j, struct tr_fb_builder *b, const char *run, uint64_t seq, int64_t t,
                  uint8_t type, tr_fb_ref data)
{
    tr_fb_ref rid = tr_fb_create_str(b, run);
    size_t n;

    J(Event_start)(b);
    J(Event_add_seq)(b, seq);
    J(Event_add_time_us)(b, t);
    J(Event_add_run_id)(b, rid);
    J(Event_add_epoch)(b, 1);
    J(Event_add_data_type)(b, type);
    J(Event_add_data)(b, data);
    J(Event_finish)(b, J(Event_end)(b));
    const uint8_t *p = tr_fb_builder_data(b, &n);
    put_event(j, p, n);
    tr_fb_builder_free(b);
}

static void craft_created(struct journal *j, const char *run, uint64_t seq, int64_t t, uint32_t timeout_s,
                          const char *tenant)
{
    struct tr_fb_builder b;

    tr_fb_builder_init(&b);
    tr_fb_ref names[] = { tr_fb_create_str(&b, "search"), tr_fb_create_str(&b, "post") };
    tr_fb_ref tv = J(AgentConfig_create_tools)(&b, names, 2);
    tr_fb_ref model = tr_fb_create_str(&b, "gpt-test");
    J(AgentConfig_start)(&b);
    J(AgentConfig_add_model)(&b, model);
    J(AgentConfig_add_tools)(&b, tv);
    J(AgentConfig_add_max_steps)(&b, 4);
    J(AgentConfig_add_timeout_s)(&b, timeout_s);
    tr_fb_ref agent_ref = J(AgentConfig_end)(&b);
    tr_fb_ref ten = tr_fb_create_str(&b, tenant);
    tr_fb_ref goal = tr_fb_create_str(&b, "Find it.");
    J(RunCreated_start)(&b);
    J(RunCreated_add_tenant)(&b, ten);
    J(RunCreated_add_goal)(&b, goal);
    J(RunCreated_add_agent)(&b, agent_ref);
    craft(j, &b, run, seq, t, J(Data_RunCreated), J(RunCreated_end)(&b));
}

static void craft_bare(struct journal *j, const char *run, uint64_t seq, int64_t t, uint8_t type)
{
    struct tr_fb_builder b;

    tr_fb_builder_init(&b);
    craft(j, &b, run, seq, t, type, 0);
}

static void craft_llm_requested(struct journal *j, const char *run, uint64_t seq, int64_t t, uint32_t step,
                                uint32_t attempt)
{
    struct tr_fb_builder b;

    tr_fb_builder_init(&b);
    J(LlmRequested_start)(&b);
    J(LlmRequested_add_step)(&b, step);
    J(LlmRequested_add_attempt)(&b, attempt);
    craft(j, &b, run, seq, t, J(Data_LlmRequested), J(LlmRequested_end)(&b));
}

static void craft_cancelled(struct journal *j, const char *run, uint64_t seq, int64_t t)
{
    struct tr_fb_builder b;

    tr_fb_builder_init(&b);
    tr_fb_ref r = tr_fb_create_str(&b, "user asked");
    J(RunCancelled_start)(&b);
    J(RunCancelled_add_reason)(&b, r);
    craft(j, &b, run, seq, t, J(Data_RunCancelled), J(RunCancelled_end)(&b));
}

static void hand_made(void)
{
    static const char run[] = "run_00000000000a11ce", other[] = "run_00000000000b0b00";
    const int64_t t0 = INT64_C(1767225600000000);
    struct journal j = { 0 };
    struct harness h;

    /* A gap in the seqs. */
    craft_created(&j, run, 1, t0, 0, "acme");
    craft_llm_requested(&j, run, 3, t0 + 2000, 1, 1);
    save("corrupt_gap", &j);
    /* Another run's event in the middle. */
    craft_created(&j, run, 1, t0, 0, "acme");
    craft_llm_requested(&j, other, 2, t0 + 1000, 1, 1);
    craft_llm_requested(&j, run, 2, t0 + 2000, 1, 1);
    save("corrupt_other_run", &j);
    /* run.created twice (the tools of the first must not leak). */
    craft_created(&j, run, 1, t0, 0, "acme");
    craft_created(&j, run, 2, t0 + 1000, 0, "acme");
    save("corrupt_created_twice", &j);
    /* An event whose type names a table that is absent (verifies). */
    craft_created(&j, run, 1, t0, 0, "acme");
    craft_bare(&j, run, 2, t0 + 1000, J(Data_LlmRequested));
    save("corrupt_type_without_data", &j);
    craft_bare(&j, run, 1, t0, J(Data_RunCreated));
    save("corrupt_created_without_data", &j);
    /* Something after the terminal event. */
    craft_created(&j, run, 1, t0, 0, "acme");
    craft_cancelled(&j, run, 2, t0 + 1000);
    craft_llm_requested(&j, run, 3, t0 + 2000, 1, 1);
    save("corrupt_after_terminal", &j);
    /* Steps before run.created; then a retry of step 1. */
    craft_llm_requested(&j, run, 1, t0, 1, 1);
    craft_created(&j, run, 2, t0 + 1000, 0, "acme");
    craft_llm_requested(&j, run, 3, t0 + 2000, 1, 2);
    save("surprise_step_before_created", &j);
    /* Created at the dawn of time, with a wall-time cap. */
    craft_created(&j, run, 1, INT64_MIN, 30, "acme");
    save("surprise_created_long_ago", &j);
    /* Tenants whose daily budget is spent (fuzz_fold's budget check). */
    craft_created(&j, run, 1, t0, 0, "broke");
    save("tenant_budget_fail", &j);
    craft_created(&j, run, 1, t0, 0, "frugal");
    save("tenant_budget_wait", &j);
    /* Nothing but garbage around a real journal's first events. */
    setup(&h, &agent, llm_ten, tool_echo);
    h_drive(&h, 1000, NULL);
    put_event(&j, "garbage!", 8);
    put_harness(&j, &h, 0, 3);
    put_event(&j, h.ev[3], h.len[3] / 2);
    put_harness(&j, &h, 3, 6);
    save("garbage_between", &j);
    h_free(&h);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: fold_seeds DIR\n");
        return 2;
    }
    out_dir = argv[1];
    ten_steps();
    mixed();
    approvals();
    cancels();
    caps();
    loops();
    malformed();
    llm_errors();
    builtins();
    large_result();
    parallel();
    hand_made();
    printf("fold_seeds: %d journals in %s\n", written, out_dir);
    return 0;
}
