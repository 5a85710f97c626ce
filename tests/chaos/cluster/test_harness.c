/* The cluster harness itself (tests/support/harness/cluster.c): three real
 * nodes start, agree on a leader, survive a follower's SIGKILL and restart,
 * and converge to one state digest. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "harness.h"

static void cluster_basics(void **state)
{
    (void)state;
    char *dir = h_tmpdir("chaos-h");
    assert_non_null(dir);
    struct h_cluster c;
    struct h_cluster_opts o = { .n = 3, .failure_timeout_ms = 3000 };
    int rv = h_cluster_start(&c, dir, &o);
    if (rv != 0)
        h_cluster_dump_logs(&c, 30);
    assert_int_equal(rv, 0);
    int leader = h_cluster_leader(&c, 60000);
    assert_true(leader >= 0);
    int f = (leader + 1) % 3;
    assert_int_equal(h_cluster_kill(&c, f), 0);
    assert_int_equal(h_cluster_node(&c, f)->state, H_NODE_DOWN);
    assert_int_equal(h_cluster_restart(&c, f, 60000), 0);
    assert_true(h_cluster_leader(&c, 60000) >= 0);
    char d[160];
    assert_int_equal(h_cluster_wait_converged(&c, 120000, d, sizeof d), 0);
    fprintf(stderr, "chaos_harness: leader node %d, converged at %s\n", leader + 1, d);
    h_cluster_free(&c);
    h_tmpdir_remove(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = { cmocka_unit_test(cluster_basics) };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
