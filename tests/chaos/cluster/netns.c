/* Network namespaces for the chaos suite: each troupe node in its own
 * namespace, the test process (and the tool server and mock LLM it starts)
 * in a private namespace of its own that routes between them, so that the
 * test can cut any set of nodes off from the others without touching the
 * machine's real network.
 *
 *   test ns (unshared by this process): lo (also 10.99.0.1: the tool server
 *     and the mock LLM), v1..vN (10.99.i.1/24), IPv4 forwarding on (a
 *     per-namespace setting)
 *   node ns i (/run/netns/trchaos-PID-i): eth0 10.99.i.2/24, default route
 *     via 10.99.i.1
 *
 * A partition is a pair of "blackhole" policy rules per (cut-off node, other
 * node) in the test ns, both directions: packets between the two nodes are
 * dropped silently (timeouts, as on a real network), while each node still
 * reaches the tool server, the mock LLM and the test. Healing deletes them.
 *
 * Failure modes: any step that fails (no CAP_SYS_ADMIN, no iproute2, no veth
 * support) makes cn_setup return -1 after printing what failed; the caller
 * fails the test (never skips it). cn_teardown deletes the node namespaces
 * (the test ns goes away with the process); namespaces left behind by a
 * killed run of the suite are removed at the next setup. */
#include "netns.h"

#include <dirent.h>
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int n_nodes;
static char names[CN_MAX][64];

__attribute__((format(printf, 1, 2))) static int sh(const char *fmt, ...)
{
    char cmd[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int rv = system(cmd);
    if (rv != 0)
        fprintf(stderr, "chaos/netns: `%s` failed (status %d)\n", cmd, rv);
    return rv == 0 ? 0 : -1;
}

/* Remove trchaos-PID-* namespaces of processes that are gone. */
static void remove_stale(void)
{
    DIR *d = opendir("/run/netns");
    if (d == NULL)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        int pid, i;
        if (sscanf(e->d_name, "trchaos-%d-%d", &pid, &i) == 2 && pid > 0 && kill(pid, 0) != 0 && errno == ESRCH)
            sh("ip netns del '%s' 2>/dev/null", e->d_name);
    }
    closedir(d);
}

int cn_setup(int n, char hosts[][64], char paths[][128])
{
    if (n < 1 || n > CN_MAX)
        return -1;
    remove_stale();
    if (unshare(CLONE_NEWNET) != 0) {
        fprintf(stderr, "chaos/netns: unshare(CLONE_NEWNET): %s (the chaos suite needs root: network "
                        "namespaces are how it partitions nodes)\n", strerror(errno));
        return -1;
    }
    if (sh("ip link set lo up") != 0 || sh("ip addr add " CN_SERVICE_HOST "/32 dev lo") != 0 ||
        sh("echo 1 > /proc/sys/net/ipv4/ip_forward") != 0)
        return -1;
    for (int i = 1; i <= n; i++) {
        snprintf(names[i - 1], sizeof names[i - 1], "trchaos-%d-%d", (int)getpid(), i);
        const char *ns = names[i - 1];
        n_nodes = i;
        if (sh("ip netns add %s", ns) != 0 || sh("ip link add v%d type veth peer name eth0 netns %s", i, ns) != 0 ||
            sh("ip addr add 10.99.%d.1/24 dev v%d", i, i) != 0 || sh("ip link set v%d up", i) != 0 ||
            sh("ip -n %s link set lo up", ns) != 0 || sh("ip -n %s addr add 10.99.%d.2/24 dev eth0", ns, i) != 0 ||
            sh("ip -n %s link set eth0 up", ns) != 0 ||
            sh("ip -n %s route add default via 10.99.%d.1", ns, i) != 0)
            return -1;
        snprintf(hosts[i - 1], 64, "10.99.%d.2", i);
        snprintf(paths[i - 1], 128, "/run/netns/%.60s", ns);
    }
    return 0;
}

static int rules(const char *op, const int *side, int n)
{
    int rv = 0;
    for (int x = 1; x <= n_nodes; x++) {
        for (int y = 1; y <= n_nodes; y++) {
            int xin = 0, yin = 0;
            for (int k = 0; k < n; k++) {
                xin |= side[k] == x - 1;
                yin |= side[k] == y - 1;
            }
            if (xin && !yin) {
                rv |= sh("ip rule %s pref 100 from 10.99.%d.2 to 10.99.%d.2 blackhole", op, x, y);
                rv |= sh("ip rule %s pref 100 from 10.99.%d.2 to 10.99.%d.2 blackhole", op, y, x);
            }
        }
    }
    return rv;
}

int cn_partition(const int *side, int n)
{
    return rules("add", side, n);
}

int cn_heal(const int *side, int n)
{
    return rules("del", side, n);
}

void cn_teardown(void)
{
    for (int i = 0; i < n_nodes; i++)
        sh("ip netns del %s", names[i]);
    n_nodes = 0;
}
