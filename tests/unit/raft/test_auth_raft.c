/* raft over the authenticated transport (raft/transport.c): real tr_raft
 * nodes with real raft logs in temp dirs, on one loop, talking TCP on
 * 127.0.0.1. A three-node cluster grown from one bootstrapped voter elects a
 * leader and commits on all three (and again after its leader goes); a node
 * with the wrong cluster key never catches up, while the same setup with the
 * right key does; garbage on a raft port is refused without disturbing raft. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"

#include "raft/auth.h"
#include "raft/raft.h"

/* --- a tiny FSM: the sum and count of uint64 entries ------------------------- */

struct sum_fsm {
    uint64_t sum;
    uint64_t applied;
    uint64_t result;
};

static int sum_apply(struct raft_fsm *fsm, const struct raft_buffer *buf, void **result)
{
    struct sum_fsm *f = fsm->data;
    uint64_t v;
    if (buf->len != sizeof v)
        return RAFT_MALFORMED;
    memcpy(&v, buf->base, sizeof v);
    f->sum += v;
    f->applied++;
    f->result = f->sum;
    *result = &f->result;
    return 0;
}

static int sum_snapshot(struct raft_fsm *fsm, struct raft_buffer *bufs[], unsigned *n)
{
    struct sum_fsm *f = fsm->data;
    *bufs = raft_malloc(sizeof **bufs);
    (*bufs)[0].len = 16;
    (*bufs)[0].base = raft_malloc(16);
    memcpy((*bufs)[0].base, &f->sum, 8);
    memcpy((char *)(*bufs)[0].base + 8, &f->applied, 8);
    *n = 1;
    return 0;
}

static int sum_restore(struct raft_fsm *fsm, struct raft_buffer *buf)
{
    struct sum_fsm *f = fsm->data;
    if (buf->len != 16)
        return RAFT_MALFORMED;
    memcpy(&f->sum, buf->base, 8);
    memcpy(&f->applied, (char *)buf->base + 8, 8);
    raft_free(buf->base);
    return 0;
}

/* --- nodes ---------------------------------------------------------------------- */

struct node {
    uint64_t id;
    char *dir;
    char address[32];
    int port;
    unsigned char key[32];
    struct sum_fsm sum;
    struct raft_fsm fsm;
    struct tr_raft *raft;
    int closed;
};

static uv_loop_t loop;
static unsigned char KEY[32], WRONG[32];

static void node_open(struct node *n, uint64_t id, const unsigned char *key, int bootstrap)
{
    struct tr_err err = { 0 };
    memset(n, 0, sizeof *n);
    n->id = id;
    n->dir = h_tmpdir("auth-raft");
    n->port = h_free_port();
    snprintf(n->address, sizeof n->address, "127.0.0.1:%d", n->port);
    memcpy(n->key, key, 32);
    n->fsm = (struct raft_fsm){ .version = 1, .data = &n->sum, .apply = sum_apply,
                                .snapshot = sum_snapshot, .restore = sum_restore };
    struct tr_raft_opts o = { .id = id, .dir = n->dir, .address = n->address, .bootstrap = bootstrap,
                              .fsm = &n->fsm, .cluster_key = n->key,
                              .election_timeout_ms = 300, .heartbeat_timeout_ms = 50 };
    if (tr_raft_open(&loop, &o, &n->raft, &err) != TR_OK)
        fail_msg("open node %llu: %s", (unsigned long long)id, err.msg);
}

static void node_closed_cb(void *arg)
{
    struct node *n = arg;
    n->closed = 1;
}

static void tick_cb(uv_timer_t *t)
{
    (void)t;
}

/* Run the loop until cond(arg) holds or max_iters turns of <= 10 ms pass;
 * returns whether it holds. */
static int run_until(int (*cond)(void *), void *arg, int max_iters)
{
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    for (int i = 0; i < max_iters && !cond(arg); i++) {
        uv_timer_start(&t, tick_cb, 10, 0);
        uv_run(&loop, UV_RUN_ONCE);
    }
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
    return cond(arg);
}

static int is_closed(void *arg)
{
    return ((struct node *)arg)->closed;
}

static void node_close(struct node *n)
{
    if (n->raft == NULL)
        return;
    tr_raft_close(n->raft, node_closed_cb, n);
    assert_true(run_until(is_closed, n, 2000));
    n->raft = NULL;
    h_tmpdir_remove(n->dir);
    n->dir = NULL;
}

static int is_leader(void *arg)
{
    return tr_raft_is_leader(((struct node *)arg)->raft);
}

/* --- membership and proposals ----------------------------------------------------- */

struct change {
    int done;
    int status;
    char msg[128];
};

static void change_cb(void *arg, int status, const char *msg)
{
    struct change *c = arg;
    c->done = 1;
    c->status = status;
    snprintf(c->msg, sizeof c->msg, "%s", msg);
}

static int change_done(void *arg)
{
    return ((struct change *)arg)->done;
}

static void add_voter(struct node *leader, struct node *n)
{
    struct change c = { 0 };
    assert_int_equal(tr_raft_add(leader->raft, n->id, n->address, 1, change_cb, &c), TR_OK);
    assert_true(run_until(change_done, &c, 3000));
    if (c.status != TR_OK)
        fail_msg("add node %llu: %s %s", (unsigned long long)n->id, tr_errname(c.status), c.msg);
}

struct prop {
    struct tr_raft_propose p;
    int done;
    int status;
};

static void prop_cb(struct tr_raft_propose *p, int status, void *result)
{
    struct prop *x = p->data;
    (void)result;
    x->done = 1;
    x->status = status;
}

static int prop_done(void *arg)
{
    return ((struct prop *)arg)->done;
}

static void propose(struct node *leader, uint64_t v)
{
    struct prop x = { .p.data = &x };
    uint64_t *buf = raft_malloc(sizeof v);
    *buf = v;
    assert_int_equal(tr_raft_propose(leader->raft, &x.p, buf, sizeof v, prop_cb), TR_OK);
    assert_true(run_until(prop_done, &x, 3000));
    assert_int_equal(x.status, TR_OK);
}

struct applied_cond {
    struct node **nodes;
    int n;
    uint64_t count;
};

static int all_applied(void *arg)
{
    struct applied_cond *a = arg;
    for (int i = 0; i < a->n; i++)
        if (a->nodes[i]->sum.applied < a->count)
            return 0;
    return 1;
}

/* --- log capture: what the transport refused --------------------------------------- */

static char log_want[64];
static int log_hits;

static void log_sink(void *ud, enum tr_log_level level, const char *msg)
{
    (void)ud;
    if (log_want[0] != '\0' && strstr(msg, log_want) != NULL)
        log_hits++;
    fprintf(stderr, "%s\n", msg);
    (void)level;
}

static void expect_log(const char *what)
{
    snprintf(log_want, sizeof log_want, "%s", what);
    log_hits = 0;
}

static int log_seen(void *arg)
{
    return log_hits >= *(int *)arg;
}

/* --- setup ------------------------------------------------------------------------- */

static int setup(void **state)
{
    (void)state;
    struct tr_err err = { 0 };
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(tr_cluster_key_derive("the right cluster secret", 24, KEY, &err), TR_OK);
    assert_int_equal(tr_cluster_key_derive("some other cluster secret", 25, WRONG, &err), TR_OK);
    tr_log_set_sink(log_sink, NULL);
    log_want[0] = '\0';
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    tr_log_set_sink(NULL, NULL);
    for (int i = 0; i < 100 && uv_loop_alive(&loop); i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    assert_int_equal(uv_loop_close(&loop), 0);
    return 0;
}

/* --- tests ------------------------------------------------------------------------- */

static int raw_connect(int port)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int raw_garbage(int port)
{
    int fd = raw_connect(port);
    if (fd < 0)
        return -1;
    /* A plain raft_uv_tcp preamble: protocol 1, id 9, address length 16. */
    unsigned char p[40] = { 1, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 16 };
    memcpy(p + 24, "127.0.0.1:9999", 14);
    int rv = send(fd, p, sizeof p, MSG_NOSIGNAL) == (ssize_t)sizeof p ? 0 : -1;
    return rv == 0 ? fd : (close(fd), -1);
}

static void test_three_nodes(void **state)
{
    (void)state;
    struct node n[3];
    node_open(&n[0], 1, KEY, 1);
    node_open(&n[1], 2, KEY, 0);
    node_open(&n[2], 3, KEY, 0);
    assert_true(run_until(is_leader, &n[0], 3000));

    add_voter(&n[0], &n[1]);
    add_voter(&n[0], &n[2]);
    struct tr_raft_info info;
    tr_raft_info(n[0].raft, &info);
    assert_int_equal(info.n_servers, 3);

    for (uint64_t v = 1; v <= 20; v++)
        propose(&n[0], v);
    struct node *all[] = { &n[0], &n[1], &n[2] };
    struct applied_cond ac = { all, 3, 20 };
    assert_true(run_until(all_applied, &ac, 3000));
    for (int i = 0; i < 3; i++)
        assert_true(n[i].sum.sum == 210);

    /* A plain raft client (no handshake) on a follower's port is refused,
     * and raft goes on. */
    expect_log("bad magic");
    int fd = raw_garbage(n[1].port);
    assert_true(fd >= 0);
    int one = 1;
    assert_true(run_until(log_seen, &one, 3000));
    close(fd);
    for (uint64_t v = 21; v <= 25; v++)
        propose(&n[0], v);
    ac.count = 25;
    assert_true(run_until(all_applied, &ac, 3000));

    /* The leader goes: the other two elect one over the authenticated
     * transport and commit. */
    node_close(&n[0]);
    struct node *rest[] = { &n[1], &n[2] };
    struct node *leader = NULL;
    for (int i = 0; i < 3000 && leader == NULL; i++) {
        run_until(is_leader, &n[1], 1);
        if (tr_raft_is_leader(n[1].raft))
            leader = &n[1];
        else if (tr_raft_is_leader(n[2].raft))
            leader = &n[2];
    }
    assert_non_null(leader);
    propose(leader, 100);
    struct applied_cond ac2 = { rest, 2, 26 };
    assert_true(run_until(all_applied, &ac2, 3000));
    assert_true(n[1].sum.sum == 425 && n[2].sum.sum == 425);

    node_close(&n[1]);
    node_close(&n[2]);
}

struct stays_empty {
    struct node *n;
    int refusals;
};

static int refused_enough(void *arg)
{
    struct stays_empty *s = arg;
    struct tr_raft_info info;
    tr_raft_info(s->n->raft, &info);
    /* Fails fast if the node ever got an entry. */
    return info.last_index > 0 || s->n->sum.applied > 0 || log_hits >= s->refusals;
}

static void test_wrong_key_cannot_join(void **state)
{
    (void)state;
    struct node n[4];
    node_open(&n[0], 1, KEY, 1);
    assert_true(run_until(is_leader, &n[0], 3000));
    for (uint64_t v = 1; v <= 5; v++)
        propose(&n[0], v);

    /* Control: the same steps with the right key do catch up (twice: a
     * three-node cluster). */
    node_open(&n[1], 2, KEY, 0);
    add_voter(&n[0], &n[1]);
    node_open(&n[2], 3, KEY, 0);
    add_voter(&n[0], &n[2]);
    struct node *good[] = { &n[0], &n[1], &n[2] };
    struct applied_cond ac = { good, 3, 5 };
    assert_true(run_until(all_applied, &ac, 3000));
    struct tr_raft_info info;
    tr_raft_info(n[2].raft, &info);
    assert_true(info.last_index > 0);

    /* A fourth node with the wrong key: the leader's connections are
     * refused by it (bad MAC), again and again, and its log stays empty. */
    expect_log("bad MAC: wrong cluster secret?");
    node_open(&n[3], 4, WRONG, 0);
    struct change c = { 0 };
    assert_int_equal(tr_raft_add(n[0].raft, 4, n[3].address, 1, change_cb, &c), TR_OK);
    struct stays_empty se = { &n[3], 3 };
    assert_true(run_until(refused_enough, &se, 6000));
    tr_raft_info(n[3].raft, &info);
    assert_true(info.last_index == 0);
    assert_true(n[3].sum.applied == 0);
    assert_true(log_hits >= 3);

    /* The three right-key nodes still commit. */
    propose(&n[0], 10);
    ac.count = 6;
    assert_true(run_until(all_applied, &ac, 3000));
    tr_raft_info(n[3].raft, &info);
    assert_true(info.last_index == 0);

    node_close(&n[3]);
    node_close(&n[2]);
    node_close(&n[1]);
    node_close(&n[0]);
    /* The promotion of node 4 never completed; closing ended it. */
    assert_true(c.done);
    assert_int_not_equal(c.status, TR_OK);
}

/* Closing a node while handshakes are in flight both ways (a connect to an
 * acceptor that never answers, a client that never speaks) completes and
 * leaves nothing behind (ASan checks the leaks). */
static void test_close_with_handshakes_in_flight(void **state)
{
    (void)state;
    struct node n;
    node_open(&n, 1, KEY, 1);
    assert_true(run_until(is_leader, &n, 3000));

    struct sockaddr_in a = { .sin_family = AF_INET };
    socklen_t alen = sizeof a;
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    assert_true(lfd >= 0);
    assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(lfd, 4), 0);
    assert_int_equal(getsockname(lfd, (struct sockaddr *)&a, &alen), 0);
    char silent[32];
    snprintf(silent, sizeof silent, "127.0.0.1:%d", ntohs(a.sin_port));

    struct change c = { 0 };
    assert_int_equal(tr_raft_add(n.raft, 2, silent, 1, change_cb, &c), TR_OK);
    int cfd = raw_connect(n.port); /* connects and never speaks */
    assert_true(cfd >= 0);

    /* The leader dials node 2: wait for its connection to arrive. */
    int afd = -1;
    for (int i = 0; i < 3000 && afd < 0; i++) {
        run_until(change_done, &c, 1);
        afd = accept(lfd, NULL, NULL);
    }
    assert_true(afd >= 0);
    assert_false(c.done);

    node_close(&n);
    assert_true(c.done);
    assert_int_not_equal(c.status, TR_OK);
    close(afd);
    close(lfd);
    close(cfd);
}

/* A raft port already taken: tr_raft_open fails with a clear error and
 * leaves nothing running. */
static void test_listen_error(void **state)
{
    (void)state;
    struct sockaddr_in a = { .sin_family = AF_INET };
    socklen_t alen = sizeof a;
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(lfd >= 0);
    assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(lfd, 4), 0);
    assert_int_equal(getsockname(lfd, (struct sockaddr *)&a, &alen), 0);

    struct node n;
    struct tr_err err = { 0 };
    memset(&n, 0, sizeof n);
    n.dir = h_tmpdir("auth-raft");
    snprintf(n.address, sizeof n.address, "127.0.0.1:%d", ntohs(a.sin_port));
    n.fsm = (struct raft_fsm){ .version = 1, .data = &n.sum, .apply = sum_apply,
                               .snapshot = sum_snapshot, .restore = sum_restore };
    struct tr_raft_opts o = { .id = 1, .dir = n.dir, .address = n.address, .bootstrap = 1,
                              .fsm = &n.fsm, .cluster_key = KEY };
    assert_int_not_equal(tr_raft_open(&loop, &o, &n.raft, &err), TR_OK);
    if (strstr(err.msg, "listen on") == NULL)
        fail_msg("err: %s", err.msg);
    close(lfd);
    h_tmpdir_remove(n.dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_three_nodes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_key_cannot_join, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_with_handshakes_in_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_listen_error, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
