/* The cluster's behaviour with real processes: three troupe nodes on
 * loopback (tests/support/harness cluster.c), troupe-mockllm and the
 * deduplicating tool server (cluster_fixture.h).
 *
 *  - writes through any node (followers forward to the leader), runs placed
 *    on every node, journals identical everywhere, `troupectl cluster verify`
 *    agreeing at one checkpoint;
 *  - an owner killed with runs in flight: its runs move and finish on the
 *    survivors, no effect performed twice; the node comes back Up;
 *  - the peer channel and raft refuse a node with another cluster secret
 *    (the same node with the right secret joins), and garbage on the peer
 *    port: the node keeps serving;
 *  - troupectl cluster transfer / add / drain;
 *  - the leader killed with runs in flight: the survivors elect a new leader
 *    long before raft's election timeout (a hastened election), and the dead
 *    leader's runs move as an owner's do.
 * One cluster for the whole file; each test leaves it whole. */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "cluster_fixture.h"

#define RUN_TIMEOUT_MS 120000

static const char script[] =
    "{\"model\": \"mock-gpt\", \"default\": \"work\", \"scripts\": {\n"
    " \"work\": [\n"
    "  {\"delay_ms\": 100, \"tool_calls\": [{\"name\": \"lookup\", \"arguments\": {\"q\": \"{{user}}\"}}]},\n"
    "  {\"delay_ms\": 100, \"tool_calls\": [{\"name\": \"report\", \"arguments\": {\"ms\": 300}}]},\n"
    "  {\"delay_ms\": 100, \"content\": \"done {{user}}: {{last_tool_result}}\"}]}}\n";

static struct cf_fixture F;

/* The nodes run without TROUPE_ADMIN_TOKEN (the harness's cluster helpers
 * speak without a key): every caller is the cluster admin. */
static const char *const auth[] = { "Content-Type: application/json", NULL };

static const char *base(int i)
{
    return h_cluster_node(&F.c, i)->base;
}

static void register_tool(int node, const char *name, const char *path, const char *risk)
{
    long st = cf_register_tool(&F, node, name, name, path, risk, 0);
    assert_true(st == 200 || st == 201);
}

static int setup(void **state)
{
    /* Raft's own election would take 60-120 s: leader_killed passes only if
     * the survivors hasten theirs. */
    struct h_cluster_opts o = { .n = 3, .schedulers = 1, .election_timeout_ms = 60000 };
    if (cf_start(&F, "cluster", script, "receipts.jsonl", &o) != 0)
        return -1;
    /* Through a follower: forwarded to the leader. */
    int leader = h_cluster_leader(&F.c, 30000);
    int follower = (leader + 1) % 3;
    register_tool(follower, "lookup", "echo", "read");
    register_tool(follower, "report", "sleep", "write");
    return 0;
}

static int teardown(void **state)
{
    cf_stop(&F);
    return 0;
}

/* Create n runs, round robin over the running nodes; ids into out. */
static void create_runs(int n, char ids[][32], const int *nodes, int n_nodes)
{
    for (int i = 0; i < n; i++) {
        char body[256];
        long st;
        snprintf(body, sizeof body, "{\"goal\": \"g%d-%d\", \"agent\": {\"model\": \"mock-gpt\", \"tools\": [\"lookup\", \"report\"]}}",
                 i, rand());
        json_t *j = cf_call(&F, "POST", nodes[i % n_nodes], "/v1/runs", body, &st);
        assert_int_equal(st, 201);
        snprintf(ids[i], 32, "%s", json_string_value(json_object_get(j, "id")));
        json_decref(j);
    }
}

static char *wait_terminal(int node, const char *id)
{
    char path[256];
    uint64_t deadline = h_now_ms() + RUN_TIMEOUT_MS;
    while (h_now_ms() < deadline) {
        long st;
        snprintf(path, sizeof path, "/v1/runs/%s?wait=10", id);
        json_t *j = cf_call(&F, "GET", node, path, NULL, &st);
        const char *s = json_string_value(json_object_get(j, "status"));
        if (s != NULL && (!strcmp(s, "succeeded") || !strcmp(s, "failed") || !strcmp(s, "cancelled"))) {
            char *out = strdup(s);
            json_decref(j);
            return out;
        }
        json_decref(j);
    }
    return NULL;
}

static json_t *tool_stats(void)
{
    struct h_resp r;
    char url[256];
    snprintf(url, sizeof url, "%s/_stats", F.tools_base);
    h_http(&r, "GET", url, NULL, NULL, 10000);
    json_t *j = r.json;
    r.json = NULL;
    h_resp_free(&r);
    return j;
}

/* Every running node holds the same journal for id (gap-free, seq 1..n). */
static void journals_agree(const char *id)
{
    char path[256], *ref = NULL;
    snprintf(path, sizeof path, "/v1/runs/%s/events", id);
    for (int i = 0; i < F.c.n; i++) {
        if (h_cluster_node(&F.c, i)->state != H_NODE_RUNNING)
            continue;
        long st;
        json_t *ev = NULL;
        /* A follower may lag the leader by a few entries: poll. */
        for (uint64_t end = h_now_ms() + 20000; h_now_ms() < end;) {
            json_decref(ev);
            ev = cf_call(&F, "GET", i, path, NULL, &st);
            size_t n = json_array_size(ev);
            if (st == 200 && n > 0 &&
                !strcmp(json_string_value(json_object_get(json_array_get(ev, n - 1), "type")), "run.succeeded"))
                break;
            usleep(20000);
        }
        assert_int_equal(st, 200);
        for (size_t k = 0; k < json_array_size(ev); k++)
            assert_int_equal(json_integer_value(json_object_get(json_array_get(ev, k), "seq")), (json_int_t)k + 1);
        char *s = json_dumps(ev, JSON_SORT_KEYS | JSON_COMPACT);
        json_decref(ev);
        if (ref == NULL) {
            ref = s;
        } else {
            assert_string_equal(s, ref);
            free(s);
        }
    }
    free(ref);
}

static int troupectl(const char *server, const char *args, char *out, size_t cap)
{
    char cmd[1024];
    const char *bin = getenv("TROUPECTL_BIN");
    assert_non_null(bin);
    snprintf(cmd, sizeof cmd, "%s --server %s %s 2>&1", bin, server, args);
    FILE *p = popen(cmd, "r");
    if (p == NULL)
        return -1;
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static const char *client_addr(int i, char *buf, size_t cap)
{
    struct h_cluster_node *n = h_cluster_node(&F.c, i);
    snprintf(buf, cap, "%s:%d", n->host, n->client_port);
    return buf;
}

static void runs_everywhere(void **state)
{
    char ids[18][32];
    int nodes[3] = { 0, 1, 2 };
    create_runs(18, ids, nodes, 3);
    int owners[4] = { 0 };
    for (int i = 0; i < 18; i++) {
        char *s = wait_terminal(i % 3, ids[i]);
        assert_non_null(s);
        assert_string_equal(s, "succeeded");
        free(s);
        long st;
        char path[256];
        snprintf(path, sizeof path, "/v1/runs/%.31s", ids[i]);
        json_t *j = cf_call(&F, "GET", 0, path, NULL, &st);
        json_int_t owner = json_integer_value(json_object_get(j, "owner_node"));
        assert_true(owner >= 1 && owner <= 3);
        owners[owner]++;
        json_decref(j);
        journals_agree(ids[i]);
    }
    /* Placement used every node. */
    assert_true(owners[1] > 0 && owners[2] > 0 && owners[3] > 0);
    char out[4096], addr[96];
    int rc = troupectl(client_addr(1, addr, sizeof addr), "cluster verify", out, sizeof out);
    if (rc != 0)
        fprintf(stderr, "%s", out);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "consistent: 3 nodes agree"));
}

/* Kill node `victim` with runs in flight: its runs move and finish on the
 * survivors, journals agree, no effect performed twice; it comes back Up and
 * `cluster verify` agrees. When the victim leads, the survivors elect a new
 * leader first: the nodes run with a 60 s election timeout (setup), so
 * that happens only through a hastened election (cluster/: the dead leader's
 * peer port refuses connections). */
static void kill_owner(int victim)
{
    int nodes[3] = { 0, 1, 2 };
    char ids[24][32];
    create_runs(24, ids, nodes, 3);
    /* Kill it while its runs are mid-step. */
    usleep(300000);
    assert_int_equal(h_cluster_kill(&F.c, victim), 0);
    int leader = h_cluster_leader(&F.c, 30000);
    assert_true(leader >= 0);
    assert_int_not_equal(leader, victim);
    int moved = 0;
    for (int i = 0; i < 24; i++) {
        char *s = wait_terminal(leader, ids[i]);
        assert_non_null(s);
        assert_string_equal(s, "succeeded");
        free(s);
        long st;
        char path[256];
        snprintf(path, sizeof path, "/v1/runs/%.31s/events", ids[i]);
        json_t *ev = cf_call(&F, "GET", leader, path, NULL, &st);
        for (size_t k = 0; k < json_array_size(ev); k++)
            moved += !strcmp(json_string_value(json_object_get(json_array_get(ev, k), "type")), "run.assigned");
        json_decref(ev);
        journals_agree(ids[i]);
    }
    assert_true(moved > 0); /* the victim owned some of them */
    json_t *stats = tool_stats();
    assert_non_null(stats);
    assert_int_equal(json_integer_value(json_object_get(stats, "duplicates_performed")), 0);
    assert_int_equal(json_integer_value(json_object_get(stats, "conflicts")), 0);
    json_decref(stats);
    /* It comes back, marked Up again, and the digests agree. */
    assert_int_equal(h_cluster_restart(&F.c, victim, 60000), 0);
    for (uint64_t end = h_now_ms() + 30000;; usleep(50000)) {
        json_t *ci = h_cluster_info(&F.c, leader);
        json_t *nodes_j = json_object_get(ci, "nodes");
        int up = 0;
        for (size_t k = 0; k < json_array_size(nodes_j); k++) {
            json_t *nj = json_array_get(nodes_j, k);
            if (json_integer_value(json_object_get(nj, "id")) == (json_int_t)(victim + 1))
                up = json_is_string(json_object_get(nj, "state")) &&
                     !strcmp(json_string_value(json_object_get(nj, "state")), "up");
        }
        json_decref(ci);
        if (up)
            break;
        assert_true(h_now_ms() < end);
    }
    char out[4096], addr[96];
    int rc = troupectl(client_addr(victim, addr, sizeof addr), "cluster verify", out, sizeof out);
    if (rc != 0)
        fprintf(stderr, "%s", out);
    assert_int_equal(rc, 0);
}

static void owner_killed(void **state)
{
    int leader = h_cluster_leader(&F.c, 30000);
    assert_true(leader >= 0);
    kill_owner((leader + 1) % 3);
}

static void leader_killed(void **state)
{
    int leader = h_cluster_leader(&F.c, 30000);
    assert_true(leader >= 0);
    kill_owner(leader);
}

/* A raw TCP connection to node i's peer port; sends bytes, returns 1 when the
 * node closed the connection within a few seconds. */
static int peer_garbage_closed(int i, const void *bytes, size_t len)
{
    struct h_cluster_node *n = h_cluster_node(&F.c, i);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)n->peer_port) };
    inet_pton(AF_INET, n->host, &sa.sin_addr);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return 0;
    }
    struct timeval tv = { .tv_sec = 10 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    (void)!write(fd, bytes, len);
    char buf[256];
    int closed = 0;
    for (;;) {
        ssize_t r = read(fd, buf, sizeof buf); /* the acceptor's challenge first */
        if (r == 0 || (r < 0 && errno == ECONNRESET)) {
            closed = 1;
            break;
        }
        if (r < 0)
            break; /* timeout: not closed */
    }
    close(fd);
    return closed;
}

static void bad_peers_refused(void **state)
{
    /* Garbage where the handshake belongs: closed; the node still serves. */
    static const char junk[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_true(peer_garbage_closed(0, junk, sizeof junk - 1));
    unsigned char big[4096];
    memset(big, 0xff, sizeof big);
    assert_true(peer_garbage_closed(1, big, sizeof big));
    char url[256];
    snprintf(url, sizeof url, "%s/healthz", base(0));
    assert_int_equal(h_wait_http_ok(url, 10000), 0);

    /* Node 4 with another cluster's secret cannot join; with the right one
     * (as `troupectl cluster add` + --join with the secret) it does. */
    char data[512], log[512], raft[64], peer[64], http[64], client[64], join[96];
    int rp = h_free_port(), pp = h_free_port(), hp = h_free_port(), cp = h_free_port();
    snprintf(data, sizeof data, "%s/n4", F.dir);
    snprintf(log, sizeof log, "%s/n4.log", F.dir);
    snprintf(raft, sizeof raft, "127.0.0.1:%d", rp);
    snprintf(peer, sizeof peer, "127.0.0.1:%d", pp);
    snprintf(http, sizeof http, "127.0.0.1:%d", hp);
    snprintf(client, sizeof client, "127.0.0.1:%d", cp);
    snprintf(join, sizeof join, "%s:%d", h_cluster_node(&F.c, 0)->host, h_cluster_node(&F.c, 0)->peer_port);
    char *argv[] = { (char *)h_bin("troupe"), "--id", "4", "--data", data, "--raft", raft, "--peer", peer,
                     "--http", http, "--client", client, "--join", join, "--schedulers", "1", NULL };
    char *env_bad[] = { F.env_url, "OPENAI_API_KEY=test",
                        "TROUPE_CLUSTER_SECRET=not-the-secret-of-this-cluster", NULL };
    struct h_proc p4;
    assert_int_equal(h_proc_start(&p4, argv, env_bad, log), 0);
    /* Node 1 logs the refusal; node 4 is never listed. */
    char n1log[512];
    snprintf(n1log, sizeof n1log, "%s/n1.log", F.dir);
    int refused = 0;
    for (uint64_t end = h_now_ms() + 30000; h_now_ms() < end && !refused; usleep(50000)) {
        FILE *f = fopen(n1log, "r");
        char line[1024];
        while (f != NULL && fgets(line, sizeof line, f) != NULL)
            refused |= strstr(line, "refused: bad MAC") != NULL || strstr(line, "wrong cluster secret") != NULL;
        if (f != NULL)
            fclose(f);
    }
    assert_true(refused);
    json_t *ci = h_cluster_info(&F.c, 0);
    assert_int_equal(json_array_size(json_object_get(ci, "nodes")), 3);
    json_decref(ci);
    h_proc_kill(&p4, SIGKILL, 1);
    h_proc_free(&p4);

    /* The same node, a new data dir, the right secret file: it joins. */
    char secret[512], data2[512];
    snprintf(secret, sizeof secret, "%s/n1/cluster.secret", F.dir);
    snprintf(data2, sizeof data2, "%s/n4b", F.dir);
    char *argv2[] = { (char *)h_bin("troupe"), "--id", "4", "--data", data2, "--raft", raft, "--peer", peer,
                      "--http", http, "--client", client, "--join", join, "--schedulers", "1",
                      "--cluster-secret-file", secret, NULL };
    char *env_ok[] = { F.env_url, "OPENAI_API_KEY=test", NULL };
    assert_int_equal(h_proc_start(&p4, argv2, env_ok, log), 0);
    int listed = 0;
    for (uint64_t end = h_now_ms() + 60000; h_now_ms() < end && !listed; usleep(50000)) {
        ci = h_cluster_info(&F.c, 0);
        listed = json_array_size(json_object_get(ci, "nodes")) == 4;
        json_decref(ci);
    }
    assert_true(listed);
    snprintf(url, sizeof url, "http://%s/healthz", http);
    for (uint64_t end = h_now_ms() + 60000;; usleep(50000)) {
        struct h_resp r;
        h_http(&r, "GET", url, NULL, NULL, 5000);
        int ready = r.json != NULL && json_is_true(json_object_get(r.json, "ready"));
        h_resp_free(&r);
        if (ready)
            break;
        assert_true(h_now_ms() < end);
    }

    /* Drain it through a follower's client address (troupectl follows the
     * leader): it leaves the cluster. */
    char out[4096], addr[96];
    int leader = h_cluster_leader(&F.c, 30000);
    int rc = troupectl(client_addr((leader + 1) % 3, addr, sizeof addr), "cluster drain 4", out, sizeof out);
    if (rc != 0)
        fprintf(stderr, "%s", out);
    assert_int_equal(rc, 0);
    ci = h_cluster_info(&F.c, leader);
    assert_int_equal(json_array_size(json_object_get(ci, "nodes")), 3);
    json_decref(ci);
    h_proc_kill(&p4, SIGKILL, 1);
    h_proc_free(&p4);
}

/* A write's Troupe-Raft-Index, given back as Troupe-Min-Index on a read at
 * another node, makes that read see the write. */
static void read_your_writes(void **state)
{
    int leader = h_cluster_leader(&F.c, 30000);
    assert_true(leader >= 0);
    for (int k = 0; k < 10; k++) {
        int writer = (leader + k) % 3, reader = (leader + k + 1) % 3;
        char url[256], body[256], hdr[64];
        struct h_resp w, r;
        snprintf(url, sizeof url, "%s/v1/runs", base(writer));
        snprintf(body, sizeof body, "{\"goal\": \"ryw-%d\", \"agent\": {\"model\": \"mock-gpt\"}}", k);
        h_http(&w, "POST", url, body, auth, 30000);
        assert_int_equal(w.status, 201);
        assert_true(w.raft_index[0] != '\0');
        const char *id = json_string_value(json_object_get(w.json, "id"));
        assert_non_null(id);
        snprintf(hdr, sizeof hdr, "Troupe-Min-Index: %s", w.raft_index);
        const char *const hdrs[] = { hdr, NULL };
        snprintf(url, sizeof url, "%s/v1/runs/%s", base(reader), id);
        h_http(&r, "GET", url, NULL, hdrs, 30000);
        assert_int_equal(r.status, 200);
        assert_string_equal(json_string_value(json_object_get(r.json, "id")), id);
        h_resp_free(&r);
        h_resp_free(&w);
    }
    /* An index far ahead: 503 timeout (after the bounded wait); a bad one: 400. */
    char url[256];
    struct h_resp r;
    snprintf(url, sizeof url, "%s/v1/cluster", base(0));
    const char *const far[] = { "Troupe-Min-Index: 999999999", NULL };
    h_http(&r, "GET", url, NULL, far, 30000);
    assert_int_equal(r.status, 503);
    h_resp_free(&r);
    const char *const bad[] = { "Troupe-Min-Index: soon", NULL };
    h_http(&r, "GET", url, NULL, bad, 30000);
    assert_int_equal(r.status, 400);
    h_resp_free(&r);
    /* A digest at an index that is no checkpoint: 404, not a hang. */
    snprintf(url, sizeof url, "%s/v1/cluster/digest?index=1", base(0));
    h_http(&r, "GET", url, NULL, NULL, 30000);
    assert_int_equal(r.status, 404);
    h_resp_free(&r);
}

static void transfer_leadership(void **state)
{
    int leader = h_cluster_leader(&F.c, 30000);
    assert_true(leader >= 0);
    int to = (leader + 2) % 3;
    char out[4096], addr[96], args[64];
    snprintf(args, sizeof args, "cluster transfer %d", to + 1);
    int rc = troupectl(client_addr(leader, addr, sizeof addr), args, out, sizeof out);
    if (rc != 0)
        fprintf(stderr, "%s", out);
    assert_int_equal(rc, 0);
    assert_int_equal(h_cluster_leader(&F.c, 30000), to);
    /* Bad usage: exit 2; an unknown node: exit 1. */
    assert_int_equal(troupectl(client_addr(0, addr, sizeof addr), "cluster drain x", out, sizeof out), 2);
    assert_int_equal(troupectl(client_addr(0, addr, sizeof addr), "cluster transfer 9", out, sizeof out), 1);
    /* Runs still work after the change. */
    char ids[3][32];
    int nodes[3] = { 0, 1, 2 };
    create_runs(3, ids, nodes, 3);
    for (int i = 0; i < 3; i++) {
        char *s = wait_terminal(to, ids[i]);
        assert_non_null(s);
        assert_string_equal(s, "succeeded");
        free(s);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(runs_everywhere),
        cmocka_unit_test(owner_killed),
        cmocka_unit_test(bad_peers_refused),
        cmocka_unit_test(read_your_writes),
        cmocka_unit_test(transfer_leadership),
        cmocka_unit_test(leader_killed),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
