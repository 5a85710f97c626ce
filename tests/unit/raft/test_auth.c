/* The cluster handshake (raft/auth.h) over real TCP on 127.0.0.1: both ends
 * with tr_auth, and one end scripted byte by byte in a helper thread with
 * blocking sockets (a wrong key, an impostor acceptor, garbage, truncation,
 * oversized fields, extra bytes, replay, silence). After each refusal the
 * same listener still completes a good handshake. Also the cluster key and
 * the secret files. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <cmocka.h>
#include <sodium.h>

#include "harness.h"

#include "raft/auth.h"
#include "raft/auth_int.h"

static const unsigned char KEY[32] = "0123456789abcdef0123456789abcdef";
static const unsigned char WRONG[32] = "fedcba9876543210fedcba9876543210";

/* --- results ---------------------------------------------------------------- */

struct result {
    int done;
    int status;
    uint64_t peer_id;
    char addr[TR_AUTH_ADDRESS_MAX + 1];
    char msg[160];
};

static void record(struct result *r, int status, uint64_t peer_id, const char *addr, const char *msg)
{
    assert_false(r->done); /* exactly once */
    r->done = 1;
    r->status = status;
    r->peer_id = peer_id;
    snprintf(r->addr, sizeof r->addr, "%s", addr);
    snprintf(r->msg, sizeof r->msg, "%s", msg);
}

/* --- the accepting side: a listener on the test's loop ------------------------ */

#define MAX_CONNS 64

struct conn {
    uv_tcp_t tcp;
    struct srv *srv;
    int idx;
    int open;
    char rbuf[16];
    size_t rlen;
    uv_write_t wr;
};

struct srv {
    uv_loop_t *loop;
    uv_tcp_t listener;
    int port;
    unsigned char key[32];
    struct tr_auth_self self;
    struct result res[MAX_CONNS];
    struct conn *conns[MAX_CONNS];
    int n;
    char got_after[16];       /* what a good client sent after the handshake */
};

static const char AFTER_S[] = "S-AFTER"; /* acceptor -> connector, right after success */
static const char AFTER_C[] = "C-AFTER"; /* connector -> acceptor */

static void conn_closed_cb(uv_handle_t *h)
{
    struct conn *c = h->data;
    c->srv->conns[c->idx] = NULL;
    free(c);
}

static void conn_alloc_cb(uv_handle_t *h, size_t sz, uv_buf_t *buf)
{
    struct conn *c = h->data;
    (void)sz;
    buf->base = c->rbuf + c->rlen;
    buf->len = sizeof c->rbuf - 1 - c->rlen;
}

static void conn_read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct conn *c = s->data;
    (void)buf;
    if (n > 0) {
        c->rlen += (size_t)n;
        c->rbuf[c->rlen] = '\0';
        if (c->rlen >= strlen(AFTER_C))
            snprintf(c->srv->got_after, sizeof c->srv->got_after, "%s", c->rbuf);
        return;
    }
    if (n < 0 && c->open) {
        c->open = 0;
        uv_close((uv_handle_t *)&c->tcp, conn_closed_cb);
    }
}

static void conn_write_cb(uv_write_t *w, int status)
{
    (void)w;
    (void)status;
}

static void accept_done_cb(void *arg, int status, uint64_t peer_id, const char *addr, const char *msg)
{
    struct conn *c = arg;
    record(&c->srv->res[c->idx], status, peer_id, addr, msg);
    if (status != TR_OK) {
        /* The handshake closed the stream. */
        c->srv->conns[c->idx] = NULL;
        free(c);
        return;
    }
    /* Ours again: data restored, reading stopped. Write at once (the
     * connector must not swallow it) and read what the connector sends. */
    assert_ptr_equal(c->tcp.data, c);
    uv_buf_t b = uv_buf_init((char *)AFTER_S, (unsigned)strlen(AFTER_S));
    assert_int_equal(uv_write(&c->wr, (uv_stream_t *)&c->tcp, &b, 1, conn_write_cb), 0);
    assert_int_equal(uv_read_start((uv_stream_t *)&c->tcp, conn_alloc_cb, conn_read_cb), 0);
}

static void on_connection(uv_stream_t *l, int status)
{
    struct srv *s = l->data;
    assert_int_equal(status, 0);
    assert_true(s->n < MAX_CONNS);
    struct conn *c = calloc(1, sizeof *c);
    c->srv = s;
    c->idx = s->n++;
    c->open = 1;
    uv_tcp_init(s->loop, &c->tcp);
    c->tcp.data = c;
    assert_int_equal(uv_accept(l, (uv_stream_t *)&c->tcp), 0);
    s->conns[c->idx] = c;
    assert_int_equal(tr_auth_accept((uv_stream_t *)&c->tcp, &s->self, accept_done_cb, c, NULL), TR_OK);
}

static void srv_start(struct srv *s, uv_loop_t *loop, const unsigned char *key, unsigned timeout_ms)
{
    struct sockaddr_in a;
    memset(s, 0, sizeof *s);
    s->loop = loop;
    memcpy(s->key, key, 32);
    s->self = (struct tr_auth_self){ .key = s->key, .id = 42, .service = TR_AUTH_SERVICE_RAFT,
                                     .timeout_ms = timeout_ms };
    s->port = h_free_port();
    uv_tcp_init(loop, &s->listener);
    s->listener.data = s;
    uv_ip4_addr("127.0.0.1", s->port, &a);
    assert_int_equal(uv_tcp_bind(&s->listener, (struct sockaddr *)&a, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&s->listener, 16, on_connection), 0);
}

static void srv_stop(struct srv *s)
{
    uv_close((uv_handle_t *)&s->listener, NULL);
    for (int i = 0; i < MAX_CONNS; i++) {
        struct conn *c = s->conns[i];
        if (c != NULL && c->open && s->res[i].done) {
            c->open = 0;
            uv_close((uv_handle_t *)&c->tcp, conn_closed_cb);
        }
    }
}

/* --- loop helpers ------------------------------------------------------------- */

static void tick_cb(uv_timer_t *t)
{
    (void)t;
}

/* Run the loop until *flag is set; fail after max_iters turns of <= 10 ms. */
static void run_until_flag(uv_loop_t *loop, const volatile int *flag, int max_iters)
{
    uv_timer_t t;
    uv_timer_init(loop, &t);
    for (int i = 0; i < max_iters && !*flag; i++) {
        uv_timer_start(&t, tick_cb, 10, 0);
        uv_run(loop, UV_RUN_ONCE);
    }
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    assert_true(*flag);
}

static void drain_and_close(uv_loop_t *loop)
{
    for (int i = 0; i < 1000 && uv_loop_alive(loop); i++)
        uv_run(loop, UV_RUN_NOWAIT);
    assert_int_equal(uv_loop_close(loop), 0);
}

/* --- the connecting side with tr_auth on the test's loop ----------------------- */

struct cli {
    uv_tcp_t tcp;
    uv_connect_t creq;
    struct tr_auth_self self;
    unsigned char key[32];
    struct result res;
    char rbuf[16];
    size_t rlen;
    int got_after;
    int closed;
    uv_write_t wr;
};

static void cli_closed_cb(uv_handle_t *h)
{
    struct cli *c = h->data;
    c->closed = 1;
}

static void cli_alloc_cb(uv_handle_t *h, size_t sz, uv_buf_t *buf)
{
    struct cli *c = h->data;
    (void)sz;
    buf->base = c->rbuf + c->rlen;
    buf->len = sizeof c->rbuf - 1 - c->rlen;
}

static void cli_read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct cli *c = s->data;
    (void)buf;
    if (n > 0) {
        c->rlen += (size_t)n;
        c->rbuf[c->rlen] = '\0';
        if (c->rlen >= strlen(AFTER_S))
            c->got_after = 1;
    }
}

static void cli_done_cb(void *arg, int status, uint64_t peer_id, const char *addr, const char *msg)
{
    struct cli *c = arg;
    record(&c->res, status, peer_id, addr, msg);
    if (status != TR_OK) {
        c->closed = 1; /* the handshake closed it */
        return;
    }
    assert_ptr_equal(c->tcp.data, c);
    uv_buf_t b = uv_buf_init((char *)AFTER_C, (unsigned)strlen(AFTER_C));
    assert_int_equal(uv_write(&c->wr, (uv_stream_t *)&c->tcp, &b, 1, conn_write_cb), 0);
    assert_int_equal(uv_read_start((uv_stream_t *)&c->tcp, cli_alloc_cb, cli_read_cb), 0);
}

static void cli_connect_cb(uv_connect_t *req, int status)
{
    struct cli *c = req->data;
    assert_int_equal(status, 0);
    assert_int_equal(tr_auth_connect((uv_stream_t *)&c->tcp, &c->self, cli_done_cb, c, NULL), TR_OK);
}

static void cli_start(struct cli *c, uv_loop_t *loop, int port, const unsigned char *key, uint64_t expect)
{
    struct sockaddr_in a;
    memset(c, 0, sizeof *c);
    memcpy(c->key, key, 32);
    c->self = (struct tr_auth_self){ .key = c->key, .id = 7, .address = "127.0.0.1:7007",
                                     .service = TR_AUTH_SERVICE_RAFT, .expect_id = expect };
    uv_tcp_init(loop, &c->tcp);
    c->tcp.data = c;
    c->creq.data = c;
    uv_ip4_addr("127.0.0.1", port, &a);
    assert_int_equal(uv_tcp_connect(&c->creq, &c->tcp, (struct sockaddr *)&a, cli_connect_cb), 0);
}

static void cli_close(struct cli *c, uv_loop_t *loop)
{
    if (!c->closed) {
        uv_close((uv_handle_t *)&c->tcp, cli_closed_cb);
        run_until_flag(loop, &c->closed, 1000);
    }
}

/* A good handshake on s's listener from a tr_auth client; both ends then
 * exchange bytes over the stream to show the handshake consumed none. */
static void good_handshake(uv_loop_t *loop, struct srv *s)
{
    struct cli c;
    int idx = s->n;
    s->got_after[0] = '\0';
    cli_start(&c, loop, s->port, KEY, 42);
    run_until_flag(loop, &c.res.done, 1000);
    assert_int_equal(c.res.status, TR_OK);
    assert_true(c.res.peer_id == 42);
    assert_string_equal(c.res.addr, "");
    run_until_flag(loop, &s->res[idx].done, 1000);
    assert_int_equal(s->res[idx].status, TR_OK);
    assert_true(s->res[idx].peer_id == 7);
    assert_string_equal(s->res[idx].addr, "127.0.0.1:7007");
    run_until_flag(loop, &c.got_after, 1000);
    assert_string_equal(c.rbuf, AFTER_S);
    int got = 0;
    for (int i = 0; i < 1000 && !got; i++) {
        uv_run(loop, UV_RUN_NOWAIT);
        got = strcmp(s->got_after, AFTER_C) == 0;
        if (!got)
            usleep(1000);
    }
    assert_string_equal(s->got_after, AFTER_C);
    cli_close(&c, loop);
}

/* --- scripted raw peers in a helper thread --------------------------------------- */

struct raw {
    pthread_t th;
    int port;
    int listen_fd;
    void (*script)(struct raw *r, int fd);
    volatile int finished;
    int ok;                      /* the script's own checks passed */
    char note[256];
    unsigned char saved[TR_AUTH_PROOF_MAX]; /* shared between two scripts */
    size_t saved_len;
    unsigned char hello[TR_AUTH_HELLO_LEN];
};

static int raw_fd_setup(int fd)
{
    struct timeval tv = { .tv_sec = 30 }; /* only so a broken test cannot hang */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static int raw_connect(int port)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0)
        return -1;
    return raw_fd_setup(fd);
}

static int raw_send(int fd, const void *p, size_t n)
{
    return send(fd, p, n, MSG_NOSIGNAL) == (ssize_t)n ? 0 : -1;
}

static int raw_recv(int fd, void *p, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t k = recv(fd, (char *)p + got, n - got, 0);
        if (k <= 0)
            return -1;
        got += (size_t)k;
    }
    return 0;
}

/* 1 when the other end closed the connection (EOF or reset). */
static int raw_closed(int fd)
{
    char b[64];
    for (;;) {
        ssize_t k = recv(fd, b, sizeof b, 0);
        if (k == 0 || (k < 0 && errno == ECONNRESET))
            return 1;
        if (k < 0)
            return 0; /* timeout */
    }
}

static void *raw_main(void *arg)
{
    struct raw *r = arg;
    int fd;
    if (r->listen_fd >= 0) {
        fd = accept(r->listen_fd, NULL, NULL);
        if (fd >= 0)
            raw_fd_setup(fd);
    } else {
        fd = raw_connect(r->port);
    }
    if (fd < 0) {
        snprintf(r->note, sizeof r->note, "no connection: %s", strerror(errno));
    } else {
        r->script(r, fd);
        close(fd);
    }
    r->finished = 1;
    return NULL;
}

static void raw_start(struct raw *r, int port, int listen_fd, void (*script)(struct raw *, int))
{
    r->port = port;
    r->listen_fd = listen_fd;
    r->script = script;
    r->finished = 0;
    r->ok = 0;
    r->note[0] = '\0';
    assert_int_equal(pthread_create(&r->th, NULL, raw_main, r), 0);
}

static void raw_join(struct raw *r, uv_loop_t *loop)
{
    run_until_flag(loop, &r->finished, 3000);
    pthread_join(r->th, NULL);
    if (!r->ok)
        fail_msg("raw peer: %s", r->note);
}

/* A connector core (the real protocol code) to make valid messages. */
static void make_connector(struct tr_auth_core *core, const unsigned char *key, uint64_t id,
                           const char *addr, int service)
{
    unsigned char nonce[TR_AUTH_NONCE_LEN];
    struct tr_auth_self self = { .key = key, .id = id, .address = addr, .service = service };
    randombytes_buf(nonce, sizeof nonce);
    assert_int_equal(tr_auth_core_init(core, TR_AUTH_CONNECTOR, &self, nonce), TR_OK);
}

/* Send HELLO from core, read CHALLENGE, compute PROOF into core->out. */
static int raw_hello_challenge(struct raw *r, int fd, struct tr_auth_core *core)
{
    if (raw_send(fd, core->out, core->out_len) != 0 || raw_recv(fd, core->in, TR_AUTH_HELLO_LEN) != 0) {
        snprintf(r->note, sizeof r->note, "no CHALLENGE");
        return -1;
    }
    core->in_len = TR_AUTH_HELLO_LEN;
    if (tr_auth_core_step(core) != TR_AUTH_SEND) {
        snprintf(r->note, sizeof r->note, "bad CHALLENGE: %s", core->errmsg);
        return -1;
    }
    return 0;
}

static void expect_closed(struct raw *r, int fd)
{
    if (raw_closed(fd))
        r->ok = 1;
    else
        snprintf(r->note, sizeof r->note, "the acceptor did not close the connection");
}

/* Run script against the listener and expect the acceptor to refuse with
 * status and a message containing why; then a good client still works. */
static void refused_by_acceptor(uv_loop_t *loop, struct srv *s, void (*script)(struct raw *, int),
                                struct raw *r, int status, const char *why)
{
    int idx = s->n;
    raw_start(r, s->port, -1, script);
    raw_join(r, loop);
    run_until_flag(loop, &s->res[idx].done, 3000);
    if (s->res[idx].status != status || strstr(s->res[idx].msg, why) == NULL)
        fail_msg("expected %s \"%s\", got %s \"%s\"", tr_errname(status), why,
                 tr_errname(s->res[idx].status), s->res[idx].msg);
    good_handshake(loop, s);
}

/* --- tests: both ends with tr_auth ------------------------------------------------ */

static void test_handshake_ok(void **state)
{
    (void)state;
    uv_loop_t loop;
    struct srv s;
    uv_loop_init(&loop);
    srv_start(&s, &loop, KEY, 0);
    for (int i = 0; i < 3; i++)
        good_handshake(&loop, &s);
    srv_stop(&s);
    drain_and_close(&loop);
}

static void test_client_wrong_key(void **state)
{
    (void)state;
    uv_loop_t loop;
    struct srv s;
    struct cli c;
    uv_loop_init(&loop);
    srv_start(&s, &loop, KEY, 0);
    cli_start(&c, &loop, s.port, WRONG, 0);
    run_until_flag(&loop, &s.res[0].done, 1000);
    assert_int_equal(s.res[0].status, TR_EDENIED);
    assert_string_equal(s.res[0].msg, "bad MAC: wrong cluster secret?");
    run_until_flag(&loop, &c.res.done, 1000);
    assert_int_not_equal(c.res.status, TR_OK); /* the acceptor hung up */
    cli_close(&c, &loop);
    good_handshake(&loop, &s);
    srv_stop(&s);
    drain_and_close(&loop);
}

static void test_server_wrong_key(void **state)
{
    (void)state;
    uv_loop_t loop;
    struct srv s;
    struct cli c;
    uv_loop_init(&loop);
    srv_start(&s, &loop, WRONG, 0);
    cli_start(&c, &loop, s.port, KEY, 0);
    run_until_flag(&loop, &c.res.done, 1000);
    assert_int_not_equal(c.res.status, TR_OK);
    run_until_flag(&loop, &s.res[0].done, 1000);
    assert_int_equal(s.res[0].status, TR_EDENIED);
    cli_close(&c, &loop);
    srv_stop(&s);
    drain_and_close(&loop);
}

static void test_wrong_service(void **state)
{
    (void)state;
    uv_loop_t loop;
    struct srv s;
    struct cli c;
    uv_loop_init(&loop);
    srv_start(&s, &loop, KEY, 0);
    cli_start(&c, &loop, s.port, KEY, 0);
    c.self.service = TR_AUTH_SERVICE_PEER; /* read when the TCP connect completes */
    run_until_flag(&loop, &s.res[0].done, 1000);
    assert_int_equal(s.res[0].status, TR_EDENIED);
    assert_non_null(strstr(s.res[0].msg, "wrong service"));
    run_until_flag(&loop, &c.res.done, 1000);
    assert_int_not_equal(c.res.status, TR_OK);
    cli_close(&c, &loop);
    good_handshake(&loop, &s);
    srv_stop(&s);
    drain_and_close(&loop);
}

static void test_unexpected_peer_id(void **state)
{
    (void)state;
    uv_loop_t loop;
    struct srv s;
    struct cli c;
    uv_loop_init(&loop);
    srv_start(&s, &loop, KEY, 0);
    cli_start(&c, &loop, s.port, KEY, 43); /* the acceptor is 42 */
    run_until_flag(&loop, &c.res.done, 1000);
    assert_int_equal(c.res.status, TR_EDENIED);
    assert_non_null(strstr(c.res.msg, "peer id mismatch"));
    cli_close(&c, &loop);
    srv_stop(&s);
    drain_and_close(&loop);
}

/* --- tests: scripted connectors against the tr_auth acceptor ----------------------- */

static void script_garbage(struct raw *r, int fd)
{
    const char *g = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    if (raw_send(fd, g, strlen(g)) == 0)
        expect_closed(r, fd);
}

static void script_raft_preamble(struct raw *r, int fd)
{
    /* What a plain raft_uv_tcp client sends first: protocol 1 as u64 LE. */
    unsigned char p[24] = { 1 };
    p[8] = 2;
    if (raw_send(fd, p, sizeof p) == 0)
        expect_closed(r, fd);
}

static void script_bad_version(struct raw *r, int fd)
{
    struct tr_auth_core core;
    make_connector(&core, KEY, 9, "127.0.0.1:9", TR_AUTH_SERVICE_RAFT);
    core.out[4] = 9;
    if (raw_send(fd, core.out, core.out_len) == 0)
        expect_closed(r, fd);
}

static void script_truncated_hello_eof(struct raw *r, int fd)
{
    struct tr_auth_core core;
    make_connector(&core, KEY, 9, "127.0.0.1:9", TR_AUTH_SERVICE_RAFT);
    if (raw_send(fd, core.out, 20) == 0 && shutdown(fd, SHUT_WR) == 0)
        expect_closed(r, fd);
}

static void script_hello_extra(struct raw *r, int fd)
{
    struct tr_auth_core core;
    unsigned char buf[TR_AUTH_HELLO_LEN + 5];
    make_connector(&core, KEY, 9, "127.0.0.1:9", TR_AUTH_SERVICE_RAFT);
    memcpy(buf, core.out, TR_AUTH_HELLO_LEN);
    memset(buf + TR_AUTH_HELLO_LEN, 'x', 5);
    if (raw_send(fd, buf, sizeof buf) == 0)
        expect_closed(r, fd);
}

static void script_proof_extra(struct raw *r, int fd)
{
    struct tr_auth_core core;
    unsigned char buf[TR_AUTH_PROOF_MAX + 8];
    make_connector(&core, KEY, 9, "127.0.0.1:9", TR_AUTH_SERVICE_RAFT);
    if (raw_hello_challenge(r, fd, &core) != 0)
        return;
    memcpy(buf, core.out, core.out_len);
    memcpy(buf + core.out_len, "raft!", 5); /* a connector must wait for CONFIRM */
    if (raw_send(fd, buf, core.out_len + 5) == 0)
        expect_closed(r, fd);
}

static void script_oversized_address(struct raw *r, int fd)
{
    struct tr_auth_core core;
    unsigned char buf[TR_AUTH_PROOF_HEAD];
    make_connector(&core, KEY, 9, "127.0.0.1:9", TR_AUTH_SERVICE_RAFT);
    if (raw_hello_challenge(r, fd, &core) != 0)
        return;
    memcpy(buf, core.out, 8);
    buf[8] = 0x01; /* 300 bytes */
    buf[9] = 0x2c;
    if (raw_send(fd, buf, sizeof buf) == 0)
        expect_closed(r, fd);
}

static void script_truncated_proof_eof(struct raw *r, int fd)
{
    struct tr_auth_core core;
    make_connector(&core, KEY, 9, "127.0.0.1:9", TR_AUTH_SERVICE_RAFT);
    if (raw_hello_challenge(r, fd, &core) != 0)
        return;
    if (raw_send(fd, core.out, core.out_len - 10) == 0 && shutdown(fd, SHUT_WR) == 0)
        expect_closed(r, fd);
}

static void script_bad_mac(struct raw *r, int fd)
{
    struct tr_auth_core core;
    make_connector(&core, KEY, 9, "127.0.0.1:9", TR_AUTH_SERVICE_RAFT);
    if (raw_hello_challenge(r, fd, &core) != 0)
        return;
    core.out[core.out_len - 1] ^= 1;
    if (raw_send(fd, core.out, core.out_len) == 0)
        expect_closed(r, fd);
}

static void script_tampered_address(struct raw *r, int fd)
{
    struct tr_auth_core core;
    make_connector(&core, KEY, 9, "127.0.0.1:9", TR_AUTH_SERVICE_RAFT);
    if (raw_hello_challenge(r, fd, &core) != 0)
        return;
    core.out[TR_AUTH_PROOF_HEAD + 10] = '8'; /* "127.0.0.1:8": the MAC covers it */
    if (raw_send(fd, core.out, core.out_len) == 0)
        expect_closed(r, fd);
}

/* Record a valid HELLO and PROOF (and complete that handshake) ... */
static void script_record(struct raw *r, int fd)
{
    struct tr_auth_core core;
    make_connector(&core, KEY, 9, "127.0.0.1:9", TR_AUTH_SERVICE_RAFT);
    memcpy(r->hello, core.out, TR_AUTH_HELLO_LEN);
    if (raw_hello_challenge(r, fd, &core) != 0)
        return;
    memcpy(r->saved, core.out, core.out_len);
    r->saved_len = core.out_len;
    unsigned char confirm[TR_AUTH_CONFIRM_LEN];
    if (raw_send(fd, core.out, core.out_len) != 0 || raw_recv(fd, confirm, sizeof confirm) != 0) {
        snprintf(r->note, sizeof r->note, "no CONFIRM");
        return;
    }
    memcpy(core.in, confirm, sizeof confirm);
    core.in_len = sizeof confirm;
    if (tr_auth_core_step(&core) != TR_AUTH_DONE) {
        snprintf(r->note, sizeof r->note, "bad CONFIRM: %s", core.errmsg);
        return;
    }
    r->ok = 1;
}

/* ... and replay them on a new connection: the acceptor's fresh nonce makes
 * the old PROOF worthless. */
static void script_replay(struct raw *r, int fd)
{
    unsigned char challenge[TR_AUTH_HELLO_LEN];
    if (raw_send(fd, r->hello, sizeof r->hello) != 0 || raw_recv(fd, challenge, sizeof challenge) != 0) {
        snprintf(r->note, sizeof r->note, "no CHALLENGE");
        return;
    }
    if (raw_send(fd, r->saved, r->saved_len) == 0)
        expect_closed(r, fd);
}

static void script_silent(struct raw *r, int fd)
{
    expect_closed(r, fd);
}

static void test_acceptor_refusals(void **state)
{
    (void)state;
    uv_loop_t loop;
    struct srv s;
    struct raw r;
    uv_loop_init(&loop);
    srv_start(&s, &loop, KEY, 0);

    refused_by_acceptor(&loop, &s, script_garbage, &r, TR_EPROTO, "bad magic");
    refused_by_acceptor(&loop, &s, script_raft_preamble, &r, TR_EPROTO, "bad magic");
    refused_by_acceptor(&loop, &s, script_bad_version, &r, TR_EPROTO, "unsupported handshake version 9");
    refused_by_acceptor(&loop, &s, script_truncated_hello_eof, &r, TR_EIO, "connection closed by the peer");
    refused_by_acceptor(&loop, &s, script_hello_extra, &r, TR_EPROTO, "extra bytes after HELLO");
    refused_by_acceptor(&loop, &s, script_proof_extra, &r, TR_EPROTO, "extra bytes after PROOF");
    refused_by_acceptor(&loop, &s, script_oversized_address, &r, TR_EPROTO, "address too long");
    refused_by_acceptor(&loop, &s, script_truncated_proof_eof, &r, TR_EIO, "connection closed by the peer");
    refused_by_acceptor(&loop, &s, script_bad_mac, &r, TR_EDENIED, "bad MAC: wrong cluster secret?");
    refused_by_acceptor(&loop, &s, script_tampered_address, &r, TR_EDENIED, "bad MAC");

    /* Replay: first prove the recorded exchange was good, then replay it. */
    int idx = s.n;
    raw_start(&r, s.port, -1, script_record);
    raw_join(&r, &loop);
    run_until_flag(&loop, &s.res[idx].done, 1000);
    assert_int_equal(s.res[idx].status, TR_OK);
    assert_true(s.res[idx].peer_id == 9);
    refused_by_acceptor(&loop, &s, script_replay, &r, TR_EDENIED, "bad MAC");

    srv_stop(&s);
    drain_and_close(&loop);
}

static void test_acceptor_timeout(void **state)
{
    (void)state;
    uv_loop_t loop;
    struct srv s;
    struct raw r;
    uv_loop_init(&loop);
    srv_start(&s, &loop, KEY, 300);
    refused_by_acceptor(&loop, &s, script_silent, &r, TR_ETIMEDOUT, "timeout");
    srv_stop(&s);
    drain_and_close(&loop);
}

/* --- tests: the tr_auth connector against scripted acceptors ----------------------- */

static int raw_listen(int *port)
{
    struct sockaddr_in a = { .sin_family = AF_INET };
    socklen_t len = sizeof a;
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(fd, 4), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

/* An impostor acceptor without the key: a real CHALLENGE, then a CONFIRM whose
 * MAC it cannot compute. */
static void script_impostor(struct raw *r, int fd)
{
    unsigned char hello[TR_AUTH_HELLO_LEN], proof[TR_AUTH_PROOF_MAX], confirm[TR_AUTH_CONFIRM_LEN];
    if (raw_recv(fd, hello, sizeof hello) != 0) {
        snprintf(r->note, sizeof r->note, "no HELLO");
        return;
    }
    memcpy(hello + 8, "impostor nonce impostor nonce 32", 32);
    if (raw_send(fd, hello, sizeof hello) != 0 || raw_recv(fd, proof, TR_AUTH_PROOF_HEAD) != 0) {
        snprintf(r->note, sizeof r->note, "no PROOF");
        return;
    }
    size_t alen = ((size_t)proof[8] << 8) | proof[9];
    if (raw_recv(fd, proof + TR_AUTH_PROOF_HEAD, alen + TR_AUTH_MAC_LEN) != 0) {
        snprintf(r->note, sizeof r->note, "short PROOF");
        return;
    }
    memset(confirm, 0, 8);
    confirm[7] = 42;
    randombytes_buf(confirm + 8, TR_AUTH_MAC_LEN);
    if (raw_send(fd, confirm, sizeof confirm) == 0)
        expect_closed(r, fd);
}

/* An acceptor that echoes the connector's HELLO as its CHALLENGE. */
static void script_reflect(struct raw *r, int fd)
{
    unsigned char hello[TR_AUTH_HELLO_LEN];
    if (raw_recv(fd, hello, sizeof hello) == 0 && raw_send(fd, hello, sizeof hello) == 0)
        expect_closed(r, fd);
}

/* An acceptor that sends more than a CHALLENGE before the PROOF. */
static void script_challenge_extra(struct raw *r, int fd)
{
    unsigned char hello[TR_AUTH_HELLO_LEN + 4];
    if (raw_recv(fd, hello, TR_AUTH_HELLO_LEN) != 0)
        return;
    hello[8] ^= 0xff;
    memcpy(hello + TR_AUTH_HELLO_LEN, "more", 4);
    if (raw_send(fd, hello, sizeof hello) == 0)
        expect_closed(r, fd);
}

static void refused_by_connector(void (*script)(struct raw *, int), int status, const char *why)
{
    uv_loop_t loop;
    struct raw r;
    struct cli c;
    int port;
    uv_loop_init(&loop);
    int lfd = raw_listen(&port);
    raw_start(&r, 0, lfd, script);
    cli_start(&c, &loop, port, KEY, 0);
    run_until_flag(&loop, &c.res.done, 3000);
    if (c.res.status != status || strstr(c.res.msg, why) == NULL)
        fail_msg("expected %s \"%s\", got %s \"%s\"", tr_errname(status), why, tr_errname(c.res.status),
                 c.res.msg);
    raw_join(&r, &loop);
    close(lfd);
    cli_close(&c, &loop);
    drain_and_close(&loop);
}

static void test_connector_refusals(void **state)
{
    (void)state;
    refused_by_connector(script_impostor, TR_EDENIED, "bad MAC from the acceptor: wrong cluster secret?");
    refused_by_connector(script_reflect, TR_EDENIED, "reflected nonce");
    refused_by_connector(script_challenge_extra, TR_EPROTO, "extra bytes after CHALLENGE");
    refused_by_connector(script_garbage, TR_EPROTO, "bad magic");
}

/* --- cancel ------------------------------------------------------------------------ */

static void test_cancel(void **state)
{
    (void)state;
    uv_loop_t loop;
    struct cli c;
    struct raw r;
    int port;
    uv_loop_init(&loop);
    int lfd = raw_listen(&port);
    raw_start(&r, 0, lfd, script_silent); /* accepts and waits */
    cli_start(&c, &loop, port, KEY, 0);
    /* Wait until the TCP connect completed and the handshake runs. */
    uv_tcp_t *t = &c.tcp;
    for (int i = 0; i < 1000 && t->data == (void *)&c; i++)
        uv_run(&loop, UV_RUN_ONCE);
    assert_ptr_not_equal(t->data, &c);
    tr_auth_cancel(t->data);
    assert_false(c.res.done); /* never from inside */
    run_until_flag(&loop, &c.res.done, 1000);
    assert_int_equal(c.res.status, TR_ECANCELED);
    raw_join(&r, &loop);
    close(lfd);
    drain_and_close(&loop);
}

/* --- bad arguments ----------------------------------------------------------------- */

static void test_bad_self(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_tcp_t t;
    uv_loop_init(&loop);
    uv_tcp_init(&loop, &t);
    t.data = &t;
    char big[300];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    struct tr_auth_self bad[] = {
        { .key = NULL, .id = 1, .address = "a:1", .service = TR_AUTH_SERVICE_RAFT },
        { .key = KEY, .id = 0, .address = "a:1", .service = TR_AUTH_SERVICE_RAFT },
        { .key = KEY, .id = 1, .address = NULL, .service = TR_AUTH_SERVICE_RAFT },
        { .key = KEY, .id = 1, .address = big, .service = TR_AUTH_SERVICE_RAFT },
        { .key = KEY, .id = 1, .address = "a b", .service = TR_AUTH_SERVICE_RAFT },
        { .key = KEY, .id = 1, .address = "a:1", .service = 7 },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(tr_auth_connect((uv_stream_t *)&t, &bad[i], cli_done_cb, NULL, NULL), TR_EINVAL);
    assert_ptr_equal(t.data, &t);
    uv_close((uv_handle_t *)&t, NULL);
    drain_and_close(&loop);
}

/* --- the cluster key and secret files ------------------------------------------------ */

static void test_secret_files(void **state)
{
    (void)state;
    struct tr_err err = { 0 };
    unsigned char k1[32], k2[32], k3[32];
    char *dir = h_tmpdir("auth");
    char path[512], path2[512];
    snprintf(path, sizeof path, "%s/cluster.secret", dir);
    snprintf(path2, sizeof path2, "%s/own.secret", dir);

    assert_int_equal(tr_cluster_secret_load(path, k1, &err), TR_ENOTFOUND);
    assert_int_equal(tr_cluster_secret_create(path, k1, &err), TR_OK);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(st.st_size, 65);
    assert_int_equal(tr_cluster_secret_load(path, k2, &err), TR_OK);
    assert_memory_equal(k1, k2, 32);
    /* Never replaced. */
    assert_int_equal(tr_cluster_secret_create(path, k3, &err), TR_EEXIST);
    assert_int_equal(tr_cluster_secret_load(path, k3, &err), TR_OK);
    assert_memory_equal(k1, k3, 32);
    /* A second file has another key. */
    assert_int_equal(tr_cluster_secret_create(path2, k3, &err), TR_OK);
    assert_memory_not_equal(k1, k3, 32);

    /* Hand-written: trailing whitespace is not part of the secret. */
    FILE *f = fopen(path2, "w");
    fputs("correct horse battery staple\r\n\n", f);
    fclose(f);
    assert_int_equal(tr_cluster_secret_load(path2, k2, &err), TR_OK);
    assert_int_equal(tr_cluster_key_derive("correct horse battery staple", 28, k3, &err), TR_OK);
    assert_memory_equal(k2, k3, 32);

    /* Readable by others: refused with a clear message. */
    assert_int_equal(chmod(path2, 0644), 0);
    assert_int_equal(tr_cluster_secret_load(path2, k2, &err), TR_EDENIED);
    assert_non_null(strstr(err.msg, "chmod 600"));
    assert_int_equal(chmod(path2, 0600), 0);

    /* Too short. */
    f = fopen(path2, "w");
    fputs("short\n", f);
    fclose(f);
    assert_int_equal(tr_cluster_secret_load(path2, k2, &err), TR_EINVAL);
    assert_non_null(strstr(err.msg, "too short"));
    assert_int_equal(tr_cluster_key_derive("x", 1, k2, &err), TR_EINVAL);

    /* Too long. */
    f = fopen(path2, "w");
    for (int i = 0; i < TR_CLUSTER_SECRET_MAX + 10; i++)
        fputc('a', f);
    fclose(f);
    assert_int_equal(tr_cluster_secret_load(path2, k2, &err), TR_EINVAL);

    /* A directory. */
    assert_int_equal(tr_cluster_secret_load(dir, k2, &err), TR_EINVAL);

    /* The derivation is a pure function of the secret. */
    assert_int_equal(tr_cluster_key_derive("0123456789abcdef", 16, k1, &err), TR_OK);
    assert_int_equal(tr_cluster_key_derive("0123456789abcdef", 16, k2, &err), TR_OK);
    assert_memory_equal(k1, k2, 32);
    assert_int_equal(tr_cluster_key_derive("0123456789abcdeF", 16, k2, &err), TR_OK);
    assert_memory_not_equal(k1, k2, 32);
    h_tmpdir_remove(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_handshake_ok),
        cmocka_unit_test(test_client_wrong_key),
        cmocka_unit_test(test_server_wrong_key),
        cmocka_unit_test(test_wrong_service),
        cmocka_unit_test(test_unexpected_peer_id),
        cmocka_unit_test(test_acceptor_refusals),
        cmocka_unit_test(test_acceptor_timeout),
        cmocka_unit_test(test_connector_refusals),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_bad_self),
        cmocka_unit_test(test_secret_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
