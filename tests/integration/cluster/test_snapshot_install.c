/* A follower that fell behind the leader's compacted log catches up by
 * InstallSnapshot: three real troupe processes on loopback, snapshotting
 * every 64 entries and keeping 16 (--snapshot-threshold/--snapshot-trailing),
 * so snapshots are serialised on each node's thread pool over and over
 * while the cluster serves writes.
 *
 * A follower is killed (SIGKILL); a few hundred writes go through the
 * leader, which snapshots and truncates its log far past the follower's last
 * entry; the follower restarts. It must restore a snapshot whose index is
 * above anything it had applied before the kill (so it came from the leader,
 * not from its own disk), then converge to the same digest as the others,
 * and keep replicating. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "tests/support/harness/harness.h"

#define WRITES 400

static const char *const hdrs[] = { "Content-Type: application/json", NULL };

/* Register tool `name` through node i: one raft entry, no background work. */
static long register_tool(struct h_cluster *c, int i, const char *name)
{
    char url[256], body[512];
    struct h_resp r;
    snprintf(url, sizeof url, "%s/v1/tools", h_cluster_node(c, i)->base);
    snprintf(body, sizeof body,
             "{\"name\": \"%s\", \"description\": \"snapshot filler\", \"input_schema\": {\"type\": \"object\"},"
             " \"risk\": \"read\", \"kind\": \"http\","
             " \"config\": {\"url\": \"http://127.0.0.1:9/%s\", \"allow\": [\"127.0.0.1\"]}}",
             name, name);
    h_http(&r, "POST", url, body, hdrs, 30000);
    long st = r.status;
    h_resp_free(&r);
    return st;
}

/* The highest index in "fsm: restored snapshot at index N" lines of a log. */
static uint64_t max_restored_index(const char *log)
{
    FILE *f = fopen(log, "r");
    assert_non_null(f);
    char line[1024];
    uint64_t max = 0;
    while (fgets(line, sizeof line, f) != NULL) {
        const char *p = strstr(line, "fsm: restored snapshot at index ");
        if (p == NULL)
            continue;
        uint64_t v = strtoull(p + strlen("fsm: restored snapshot at index "), NULL, 10);
        if (v > max)
            max = v;
    }
    fclose(f);
    return max;
}

static void follower_catches_up(void **state)
{
    (void)state;
    char *dir = h_tmpdir("snapinstall");
    assert_non_null(dir);
    char *env[] = { "TROUPE_LOG=info", NULL };
    char *args[] = { "--snapshot-threshold", "64", "--snapshot-trailing", "16", NULL };
    struct h_cluster c;
    struct h_cluster_opts o = { .n = 3, .env = env, .args = args, .schedulers = 1 };
    int rv = h_cluster_start(&c, dir, &o);
    if (rv != 0)
        h_cluster_dump_logs(&c, 40);
    assert_int_equal(rv, 0);
    int leader = h_cluster_leader(&c, 30000);
    assert_true(leader >= 0);
    int victim = (leader + 1) % 3;

    /* Everyone level; note where the victim is, then kill it. */
    assert_int_equal(h_cluster_wait_converged(&c, 60000, NULL, 0), 0);
    char hex[128];
    uint64_t victim_applied = 0;
    assert_int_equal(h_cluster_digest(&c, victim, hex, sizeof hex, &victim_applied), 0);
    assert_int_equal(h_cluster_kill(&c, victim), 0);

    char name[64];
    for (int i = 0; i < WRITES; i++) {
        snprintf(name, sizeof name, "filler_%d", i);
        long st = register_tool(&c, leader, name);
        if (st != 200 && st != 201)
            fail_msg("write %d: HTTP %ld", i, st);
    }
    uint64_t leader_applied = 0;
    assert_int_equal(h_cluster_digest(&c, leader, hex, sizeof hex, &leader_applied), 0);
    assert_true(leader_applied > victim_applied + WRITES / 2);

    /* Back: raft on the leader no longer has the entries after
     * victim_applied, so the victim must be sent a snapshot. */
    rv = h_cluster_restart(&c, victim, 60000);
    if (rv != 0)
        h_cluster_dump_logs(&c, 40);
    assert_int_equal(rv, 0);
    char digest[128];
    rv = h_cluster_wait_converged(&c, 120000, digest, sizeof digest);
    if (rv != 0)
        h_cluster_dump_logs(&c, 40);
    assert_int_equal(rv, 0);
    uint64_t restored = max_restored_index(h_cluster_node(&c, victim)->proc.log);
    print_message("victim had applied %llu; restored a snapshot at %llu; leader at %llu\n",
                  (unsigned long long)victim_applied, (unsigned long long)restored,
                  (unsigned long long)leader_applied);
    assert_true(restored >= victim_applied + 64); /* past anything of its own */

    /* And it keeps replicating. */
    for (int i = 0; i < 5; i++) {
        snprintf(name, sizeof name, "after_%d", i);
        long st = register_tool(&c, leader, name);
        assert_true(st == 200 || st == 201);
    }
    char digest2[128];
    assert_int_equal(h_cluster_wait_converged(&c, 60000, digest2, sizeof digest2), 0);
    assert_string_not_equal(digest, digest2);

    h_cluster_free(&c);
    h_tmpdir_remove(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(follower_catches_up),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
