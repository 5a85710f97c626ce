/* Queued runs move to a node that frees up (issue 5: "when the cluster is
 * full, runs wait queued" — and start as soon as any node has room).
 *
 * Two real troupe nodes (tests/support/harness cluster.c), each with
 * --max-active-runs 1, troupe-mockllm and the tool server (cluster_fixture.h).
 * Which run goes where follows from the FSM's placement rules alone, so the
 * test can name it in advance:
 *
 *   1. hold1 -> node 1 and hold2 -> node 2 (both idle; then node 1 full).
 *      A hold run calls the tool server's sleep tool for ten minutes at every
 *      step (script step with "repeat"): it keeps its node's only slot until
 *      the test cancels it. No timing is involved.
 *   2. q1..q4 (a one-step script) while both are full: the least loaded
 *      takes each, ties to the lower id: q1, q3 -> node 1; q2, q4 -> node 2.
 *      Both nodes are over capacity: nothing can move.
 *   3. Cancel hold2. Node 2 runs q2 and q4 (its own queue) and is then
 *      empty, while node 1 still holds hold1 with q1 and q3 queued behind it.
 *      Without rebalancing q1 and q3 would wait for hold1 for ever; the
 *      leader moves them to node 2, oldest first, one at a time (room 1).
 *   4. Checks: q1..q4 succeed while hold1 is still running on node 1; q1 and
 *      q3 end owned by node 2 with a run.assigned {previous_owner 1,
 *      owner_node 2, reason "rebalanced"} in their journals; hold1 never
 *      moved. Then hold1 is cancelled; every run is terminal, every journal
 *      gap-free and the same on both nodes, and `troupectl cluster verify`
 *      agrees.
 * Every wait polls a condition with a generous guard. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "cluster_fixture.h"

#define WAIT_MS 120000

static const char script[] =
    "{\"model\": \"mock-gpt\", \"default\": \"quick\", \"scripts\": {\n"
    " \"quick\": [{\"content\": \"done {{user}}\"}],\n"
    " \"hold\": [{\"repeat\": true, \"tool_calls\": [{\"name\": \"hold\", \"arguments\": {\"ms\": 600000}}]}]}}\n";

static struct cf_fixture F;

static int setup(void **state)
{
    (void)state;
    struct h_cluster_opts o = { .n = 2, .schedulers = 1, .capacity = 1 };
    if (cf_start(&F, "rebalance", script, NULL, &o) != 0)
        return -1;
    long st = cf_register_tool(&F, 1, "hold", "keeps the run busy", "sleep", "read", 900000);
    return st == 200 || st == 201 ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    cf_stop(&F);
    return 0;
}

/* Create a run through node `via`; its id into id. */
static void create(int via, const char *goal, bool hold, char id[32])
{
    char body[512];
    long st;
    snprintf(body, sizeof body, "{\"goal\": \"%s\", \"agent\": {\"model\": \"mock-gpt\"%s}}", goal,
             hold ? ", \"system\": \"[mock:hold] Keep busy.\", \"tools\": [\"hold\"], \"max_steps\": 1000" : "");
    json_t *j = cf_call(&F, "POST", via, "/v1/runs", body, &st);
    assert_int_equal(st, 201);
    snprintf(id, 32, "%s", json_string_value(json_object_get(j, "id")));
    json_decref(j);
}

/* GET /v1/runs/{id} on node i (waiting up to wait_s for a terminal status);
 * status and owner_node ("" and 0 while node i does not know the run yet). */
static void run_state(int i, const char *id, int wait_s, char *status, size_t cap, json_int_t *owner)
{
    char path[128];
    long st;
    if (wait_s > 0)
        snprintf(path, sizeof path, "/v1/runs/%s?wait=%d", id, wait_s);
    else
        snprintf(path, sizeof path, "/v1/runs/%s", id);
    json_t *j = cf_call(&F, "GET", i, path, NULL, &st);
    assert_true(st == 200 || st == 404);
    const char *v = json_string_value(json_object_get(j, "status"));
    snprintf(status, cap, "%s", st == 200 && v != NULL ? v : "");
    *owner = json_integer_value(json_object_get(j, "owner_node"));
    json_decref(j);
}

static bool terminal(const char *s)
{
    return !strcmp(s, "succeeded") || !strcmp(s, "failed") || !strcmp(s, "cancelled");
}

/* Poll until the run is terminal; its final status and owner. */
static void wait_terminal(const char *id, char *status, size_t cap, json_int_t *owner)
{
    for (uint64_t end = h_now_ms() + WAIT_MS;;) {
        run_state(0, id, 10, status, cap, owner);
        if (terminal(status))
            return;
        if (h_now_ms() > end) {
            h_cluster_dump_logs(&F.c, 40);
            fail_msg("run %s still %s", id, status);
        }
    }
}

/* Poll until the run's status is `want` (not terminal). */
static void wait_status(const char *id, const char *want)
{
    char s[32];
    json_int_t owner;
    for (uint64_t end = h_now_ms() + WAIT_MS;; usleep(20000)) {
        run_state(0, id, 0, s, sizeof s, &owner);
        if (!strcmp(s, want))
            return;
        assert_false(terminal(s));
        assert_true(h_now_ms() < end);
    }
}

static void cancel(const char *id)
{
    char path[128];
    long st;
    snprintf(path, sizeof path, "/v1/runs/%s/cancel", id);
    json_decref(cf_call(&F, "POST", 0, path, "{}", &st));
    assert_int_equal(st, 200);
}

/* The journal of id on node i once its last event is `last_type`. */
static json_t *journal(int i, const char *id, const char *last_type)
{
    char path[128];
    snprintf(path, sizeof path, "/v1/runs/%s/events", id);
    for (uint64_t end = h_now_ms() + 20000;; usleep(20000)) {
        long st;
        json_t *ev = cf_call(&F, "GET", i, path, NULL, &st);
        size_t n = json_array_size(ev);
        if (st == 200 && n > 0 &&
            !strcmp(json_string_value(json_object_get(json_array_get(ev, n - 1), "type")), last_type))
            return ev;
        json_decref(ev);
        assert_true(h_now_ms() < end);
    }
}

/* Both nodes hold the same gap-free journal for id, ending in last_type;
 * returns how many run.assigned events carry reason "rebalanced" from node
 * `from` to node `to`, and how many run.assigned events there are at all. */
static int journals_agree(const char *id, const char *last_type, int from, int to, int *assigned)
{
    json_t *a = journal(0, id, last_type), *b = journal(1, id, last_type);
    assert_true(json_equal(a, b));
    int rebalanced = 0;
    *assigned = 0;
    for (size_t k = 0; k < json_array_size(a); k++) {
        json_t *e = json_array_get(a, k);
        assert_int_equal(json_integer_value(json_object_get(e, "seq")), (json_int_t)k + 1);
        if (strcmp(json_string_value(json_object_get(e, "type")), "run.assigned") != 0)
            continue;
        (*assigned)++;
        json_t *d = json_object_get(e, "data");
        const char *why = json_string_value(json_object_get(d, "reason"));
        if (why != NULL && !strcmp(why, "rebalanced") && json_integer_value(json_object_get(d, "previous_owner")) == from &&
            json_integer_value(json_object_get(d, "owner_node")) == to)
            rebalanced++;
    }
    json_decref(a);
    json_decref(b);
    return rebalanced;
}

static int troupectl_verify(void)
{
    char cmd[1024], out[4096];
    const char *bin = getenv("TROUPECTL_BIN");
    assert_non_null(bin);
    struct h_cluster_node *n = h_cluster_node(&F.c, 1);
    snprintf(cmd, sizeof cmd, "%s --server %s:%d cluster verify 2>&1", bin, n->host, n->client_port);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t len = fread(out, 1, sizeof out - 1, p);
    out[len] = '\0';
    int st = pclose(p);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0 || strstr(out, "consistent: 2 nodes agree") == NULL) {
        fprintf(stderr, "troupectl cluster verify: %s", out);
        return -1;
    }
    return 0;
}

static void queued_runs_move_to_a_node_with_room(void **state)
{
    (void)state;
    char hold1[32], hold2[32], q[4][32], s[32];
    json_int_t owner;

    /* 1. One hold run per node. */
    create(1, "hold one", true, hold1); /* the creating node has applied it when it answers */
    create(0, "hold two", true, hold2);
    run_state(1, hold1, 0, s, sizeof s, &owner);
    assert_int_equal(owner, 1);
    run_state(0, hold2, 0, s, sizeof s, &owner);
    assert_int_equal(owner, 2);
    wait_status(hold1, "running");
    wait_status(hold2, "running");

    /* 2. Four quick runs while both nodes are full: they queue. */
    const json_int_t placed[4] = { 1, 2, 1, 2 };
    for (int i = 0; i < 4; i++) {
        char goal[16];
        snprintf(goal, sizeof goal, "q%d", i + 1);
        create(i % 2, goal, false, q[i]);
        run_state(i % 2, q[i], 0, s, sizeof s, &owner);
        assert_int_equal(owner, placed[i]);
    }

    /* 3. Node 2 frees up: its own queue first, then node 1's queued runs. */
    cancel(hold2);
    for (int i = 0; i < 4; i++) {
        wait_terminal(q[i], s, sizeof s, &owner);
        assert_string_equal(s, "succeeded");
        assert_int_equal(owner, 2); /* every quick run ran on node 2 */
    }
    /* 4. hold1 kept node 1 busy all along and never moved. */
    run_state(0, hold1, 0, s, sizeof s, &owner);
    assert_string_equal(s, "running");
    assert_int_equal(owner, 1);
    int assigned;
    for (int i = 0; i < 4; i++) {
        int moved = journals_agree(q[i], "run.succeeded", 1, 2, &assigned);
        assert_int_equal(moved, placed[i] == 1 ? 1 : 0);
        assert_int_equal(assigned, moved);
    }

    cancel(hold1);
    wait_terminal(hold1, s, sizeof s, &owner);
    assert_string_equal(s, "cancelled");
    assert_int_equal(owner, 1);
    assert_int_equal(journals_agree(hold1, "run.cancelled", 1, 2, &assigned), 0);
    assert_int_equal(assigned, 0);
    assert_int_equal(journals_agree(hold2, "run.cancelled", 1, 2, &assigned), 0);
    assert_int_equal(assigned, 0);
    assert_int_equal(troupectl_verify(), 0);
    assert_int_equal(h_cluster_wait_converged(&F.c, 60000, NULL, 0), 0);
}

int main(void)
{
    if (h_bin("troupe") == NULL || h_bin("mockllm") == NULL || h_bin("toolserver") == NULL) {
        fprintf(stderr, "TROUPE_BIN, TROUPE_MOCKLLM_BIN and TROUPE_TOOLSERVER_BIN must be set (run through ctest)\n");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(queued_runs_move_to_a_node_with_room),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
