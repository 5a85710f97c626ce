/* Test harness: a cluster of real troupe processes. See harness.h,
 * "troupe clusters".
 *
 * Happy path: h_cluster_start bootstraps node 1, waits until it is ready,
 * then starts each other node with --join (node 1's peer address) and the
 * secret node 1 wrote into its data directory, one at a time (raft changes
 * its configuration one server at a time), and waits until it is ready and
 * the leader lists it. A restarted node gets the same ports and data and no
 * --bootstrap/--join (its raft log knows the cluster).
 *
 * Nodes may live in network namespaces (opts.netns[i], a path such as
 * /run/netns/NAME): the calling thread enters the namespace only around
 * posix_spawn, so the child starts there and everything else (HTTP polls)
 * happens in the caller's namespace, which must route to opts.hosts[i].
 *
 * Failure modes: a node that exits during start, or is not ready in time, has
 * the tail of its log dumped to stderr and the call returns -1. Every wait
 * polls a condition with a guard against hangs; nothing sleeps to let things
 * settle.
 *
 * Invariants: only the PIDs started here are ever signalled; a node's state
 * (H_NODE_RUNNING/STOPPED/DOWN) follows the signals sent to it, so waits
 * skip stopped and killed nodes. */
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void nap(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

static void strv_free(char **v)
{
    for (size_t i = 0; v != NULL && v[i] != NULL; i++)
        free(v[i]);
    free(v);
}

static char **strv_dup(char *const v[])
{
    size_t n = 0;
    while (v != NULL && v[n] != NULL)
        n++;
    char **out = calloc(n + 1, sizeof *out);
    for (size_t i = 0; i < n; i++)
        out[i] = strdup(v[i]);
    return out;
}

/* Run fn(p) with the calling thread in namespace ns (NULL: as is). */
static int in_netns(const char *ns, struct h_proc *p, int (*fn)(struct h_proc *))
{
    if (ns == NULL)
        return fn(p);
    int self = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    int target = open(ns, O_RDONLY | O_CLOEXEC);
    if (self < 0 || target < 0 || setns(target, CLONE_NEWNET) != 0) {
        fprintf(stderr, "harness: cannot enter network namespace %s: %s\n", ns, strerror(errno));
        if (self >= 0)
            close(self);
        if (target >= 0)
            close(target);
        return -1;
    }
    int rv = fn(p);
    if (setns(self, CLONE_NEWNET) != 0) {
        fprintf(stderr, "harness: cannot return to our network namespace: %s\n", strerror(errno));
        abort(); /* every later request would go to the wrong place */
    }
    close(self);
    close(target);
    return rv;
}

static int spawn_again(struct h_proc *p)
{
    return h_proc_restart(p);
}

/* argv of node i; first start (join_mode 1: bootstrap or join) or restart. */
static char **node_argv(struct h_cluster *c, int i, int first)
{
    struct h_cluster_node *n = &c->nodes[i];
    const struct h_cluster_opts *o = &c->opts;
    char *v[96];
    char buf[16][128];
    int k = 0, b = 0;
#define ARG(s) (v[k++] = (char *)(s))
#define ARGF(...) (snprintf(buf[b], sizeof buf[b], __VA_ARGS__), v[k++] = buf[b++])
    ARG(h_bin("troupe"));
    ARG("--id");
    ARGF("%llu", (unsigned long long)n->id);
    ARG("--data");
    ARG(n->data);
    ARG("--raft");
    ARGF("%s:%d", n->host, n->raft_port);
    ARG("--peer");
    ARGF("%s:%d", n->host, n->peer_port);
    ARG("--client");
    ARGF("%s:%d", n->host, n->client_port);
    ARG("--http");
    ARGF("%s:%d", n->host, n->http_port);
    if (o->failure_timeout_ms > 0) {
        ARG("--failure-timeout");
        ARGF("%u", o->failure_timeout_ms);
    }
    if (o->election_timeout_ms > 0) {
        ARG("--election-timeout");
        ARGF("%u", o->election_timeout_ms);
    }
    if (o->heartbeat_ms > 0) {
        ARG("--heartbeat");
        ARGF("%u", o->heartbeat_ms);
    }
    if (o->capacity > 0) {
        ARG("--max-active-runs");
        ARGF("%u", o->capacity);
    }
    if (o->schedulers > 0) {
        ARG("--schedulers");
        ARGF("%d", o->schedulers);
    }
    if (first && i == 0) {
        ARG("--bootstrap");
    } else if (first) {
        ARG("--join");
        ARGF("%s:%d", c->nodes[0].host, c->nodes[0].peer_port);
        ARG("--cluster-secret-file");
        ARGF("%s/cluster.secret", c->nodes[0].data);
    }
    for (size_t j = 0; o->args != NULL && o->args[j] != NULL && k < 94; j++)
        ARG(o->args[j]);
    v[k] = NULL;
#undef ARG
#undef ARGF
    return strv_dup(v);
}

int h_cluster_wait_ready(struct h_cluster *c, int i, int timeout_ms)
{
    if (i < 0) {
        for (int j = 0; j < c->n; j++)
            if (c->nodes[j].state == H_NODE_RUNNING && h_cluster_wait_ready(c, j, timeout_ms) != 0)
                return -1;
        return 0;
    }
    struct h_cluster_node *n = &c->nodes[i];
    char url[160];
    snprintf(url, sizeof url, "%s/healthz", n->base);
    uint64_t until = h_now_ms() + (uint64_t)timeout_ms;
    while (h_now_ms() < until) {
        if (!h_proc_alive(&n->proc)) {
            fprintf(stderr, "harness: node %llu exited\n", (unsigned long long)n->id);
            n->state = H_NODE_DOWN;
            h_proc_dump_log(&n->proc, 40);
            return -1;
        }
        struct h_resp r;
        h_http(&r, "GET", url, NULL, NULL, 2000);
        int ok = r.status == 200 && r.json != NULL && json_is_true(json_object_get(r.json, "ready"));
        h_resp_free(&r);
        if (ok)
            return 0;
        nap(20);
    }
    fprintf(stderr, "harness: node %llu not ready after %d ms\n", (unsigned long long)n->id, timeout_ms);
    h_proc_dump_log(&n->proc, 40);
    return -1;
}

/* Node i's view of the raft configuration size (nodes listed), or -1. */
static int listed_nodes(struct h_cluster *c, int i)
{
    json_t *j = h_cluster_info(c, i);
    int n = j != NULL ? (int)json_array_size(json_object_get(j, "nodes")) : -1;
    if (j != NULL)
        json_decref(j);
    return n;
}

static int start_node(struct h_cluster *c, int i, int timeout_ms)
{
    struct h_cluster_node *n = &c->nodes[i];
    char log[512];
    snprintf(log, sizeof log, "%s/n%d.log", c->dir, i + 1);
    char **argv = node_argv(c, i, 1);
    memset(&n->proc, 0, sizeof n->proc);
    /* h_proc_start spawns at once: do it inside the node's namespace. */
    n->proc.argv = argv;
    n->proc.envp = strv_dup(c->opts.env);
    n->proc.log = strdup(log);
    if (in_netns(n->netns, &n->proc, spawn_again) != 0)
        return -1;
    n->state = H_NODE_RUNNING;
    if (h_cluster_wait_ready(c, i, timeout_ms) != 0)
        return -1;
    /* The restart argv: no --bootstrap/--join. */
    strv_free(n->proc.argv);
    n->proc.argv = node_argv(c, i, 0);
    return 0;
}

int h_cluster_start(struct h_cluster *c, const char *dir, const struct h_cluster_opts *o)
{
    memset(c, 0, sizeof *c);
    if (o->n < 1 || o->n > H_CLUSTER_MAX || h_bin("troupe") == NULL) {
        fprintf(stderr, "harness: h_cluster_start: bad node count %d or TROUPE_BIN unset\n", o->n);
        return -1;
    }
    c->n = o->n;
    c->opts = *o;
    c->opts.env = strv_dup(o->env);
    c->opts.args = strv_dup(o->args);
    c->dir = strdup(dir);
    for (int i = 0; i < c->n; i++) {
        struct h_cluster_node *n = &c->nodes[i];
        char data[512];
        n->id = (uint64_t)i + 1;
        snprintf(data, sizeof data, "%s/n%d", dir, i + 1);
        n->data = strdup(data);
        snprintf(n->host, sizeof n->host, "%s", o->hosts[i] != NULL ? o->hosts[i] : "127.0.0.1");
        n->netns = o->netns[i] != NULL ? strdup(o->netns[i]) : NULL;
        n->raft_port = h_free_port();
        n->peer_port = h_free_port();
        n->client_port = h_free_port();
        n->http_port = h_free_port();
        char host[sizeof n->host]; /* a copy: GCC's -Wrestrict sees n->base and n->host as one object */
        memcpy(host, n->host, sizeof host);
        snprintf(n->base, sizeof n->base, "http://%s:%d", host, n->http_port);
    }
    for (int i = 0; i < c->n; i++) {
        if (start_node(c, i, 60000) != 0)
            return -1;
        /* Joined: the leader lists it (so the next join is a separate change). */
        uint64_t until = h_now_ms() + 60000;
        while (listed_nodes(c, 0) < i + 1) {
            if (h_now_ms() > until) {
                fprintf(stderr, "harness: node %d never appeared in the configuration\n", i + 1);
                return -1;
            }
            nap(20);
        }
    }
    return 0;
}

struct h_cluster_node *h_cluster_node(struct h_cluster *c, int i)
{
    return i >= 0 && i < c->n ? &c->nodes[i] : NULL;
}

int h_cluster_kill(struct h_cluster *c, int i)
{
    struct h_cluster_node *n = &c->nodes[i];
    if (n->state == H_NODE_DOWN)
        return -1;
    if (n->state == H_NODE_STOPPED)
        kill(n->proc.pid, SIGCONT); /* reaped below either way; SIGKILL works on stopped too */
    h_proc_kill(&n->proc, SIGKILL, 1);
    n->state = H_NODE_DOWN;
    return 0;
}

int h_cluster_restart(struct h_cluster *c, int i, int timeout_ms)
{
    struct h_cluster_node *n = &c->nodes[i];
    if (n->state != H_NODE_DOWN)
        return -1;
    if (in_netns(n->netns, &n->proc, spawn_again) != 0)
        return -1;
    n->state = H_NODE_RUNNING;
    return timeout_ms > 0 ? h_cluster_wait_ready(c, i, timeout_ms) : 0;
}

int h_cluster_stop(struct h_cluster *c, int i)
{
    struct h_cluster_node *n = &c->nodes[i];
    if (n->state != H_NODE_RUNNING)
        return -1;
    if (kill(n->proc.pid, SIGSTOP) != 0)
        return -1;
    n->state = H_NODE_STOPPED;
    return 0;
}

int h_cluster_cont(struct h_cluster *c, int i)
{
    struct h_cluster_node *n = &c->nodes[i];
    if (n->state != H_NODE_STOPPED)
        return -1;
    if (kill(n->proc.pid, SIGCONT) != 0)
        return -1;
    n->state = H_NODE_RUNNING;
    return 0;
}

json_t *h_cluster_get(struct h_cluster *c, int i, const char *path)
{
    char url[512];
    snprintf(url, sizeof url, "%s%s", c->nodes[i].base, path);
    struct h_resp r;
    h_http(&r, "GET", url, NULL, NULL, 5000);
    json_t *j = r.status == 200 && r.json != NULL ? json_incref(r.json) : NULL;
    h_resp_free(&r);
    return j;
}

json_t *h_cluster_info(struct h_cluster *c, int i)
{
    return h_cluster_get(c, i, "/v1/cluster");
}

int h_cluster_leader(struct h_cluster *c, int timeout_ms)
{
    uint64_t until = h_now_ms() + (uint64_t)timeout_ms;
    do {
        /* The leader: a running node that says it leads, and every other
         * running node that answers names it. */
        int leader = -1, agree = 1;
        for (int i = 0; i < c->n && agree; i++) {
            if (c->nodes[i].state != H_NODE_RUNNING)
                continue;
            json_t *j = h_cluster_info(c, i);
            if (j == NULL)
                continue;
            json_int_t l = json_integer_value(json_object_get(j, "leader"));
            json_decref(j);
            if (l <= 0 || l > c->n || c->nodes[l - 1].state != H_NODE_RUNNING)
                agree = 0;
            else if (leader < 0)
                leader = (int)l - 1;
            else if (leader != (int)l - 1)
                agree = 0;
        }
        if (agree && leader >= 0)
            return leader;
        nap(20);
    } while (h_now_ms() < until);
    return -1;
}

int h_cluster_digest(struct h_cluster *c, int i, char *hex, size_t cap, uint64_t *applied)
{
    json_t *j = h_cluster_get(c, i, "/v1/cluster/digest");
    const char *d = j != NULL ? json_string_value(json_object_get(j, "digest")) : NULL;
    int rv = -1;
    if (d != NULL) {
        snprintf(hex, cap, "%s", d);
        *applied = (uint64_t)json_integer_value(json_object_get(j, "last_applied"));
        rv = 0;
    }
    if (j != NULL)
        json_decref(j);
    return rv;
}

int h_cluster_wait_converged(struct h_cluster *c, int timeout_ms, char *digest, size_t cap)
{
    uint64_t until = h_now_ms() + (uint64_t)timeout_ms;
    char first[160] = "", d[160];
    uint64_t applied0 = 0, applied;
    int same = 0;
    while (h_now_ms() < until) {
        same = 1;
        int seen = 0;
        for (int i = 0; i < c->n && same; i++) {
            if (c->nodes[i].state != H_NODE_RUNNING)
                continue;
            if (h_cluster_digest(c, i, d, sizeof d, &applied) != 0) {
                same = 0;
                break;
            }
            if (seen++ == 0) {
                snprintf(first, sizeof first, "%s", d);
                applied0 = applied;
            } else if (applied != applied0 || strcmp(d, first) != 0) {
                same = 0;
            }
        }
        if (same && seen > 0) {
            if (digest != NULL)
                snprintf(digest, cap, "%s", first);
            return 0;
        }
        nap(50);
    }
    fprintf(stderr, "harness: the nodes' digests did not converge in %d ms:\n", timeout_ms);
    for (int i = 0; i < c->n; i++)
        if (c->nodes[i].state == H_NODE_RUNNING && h_cluster_digest(c, i, d, sizeof d, &applied) == 0)
            fprintf(stderr, "  node %d: %s at %llu\n", i + 1, d, (unsigned long long)applied);
    return -1;
}

void h_cluster_dump_logs(struct h_cluster *c, int lines)
{
    for (int i = 0; i < c->n; i++)
        h_proc_dump_log(&c->nodes[i].proc, lines);
}

void h_cluster_free(struct h_cluster *c)
{
    for (int i = 0; i < c->n; i++) {
        struct h_cluster_node *n = &c->nodes[i];
        if (n->state == H_NODE_STOPPED && n->proc.pid > 0)
            kill(n->proc.pid, SIGCONT);
        if (n->proc.pid > 0)
            h_proc_stop(&n->proc, 10000);
        h_proc_free(&n->proc);
        free(n->data);
        free(n->netns);
    }
    strv_free((char **)c->opts.env);
    strv_free((char **)c->opts.args);
    free(c->dir);
    memset(c, 0, sizeof *c);
}
