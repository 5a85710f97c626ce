/* Live updates end to end in one process: real runtime, RocksDB, raft (one
 * voter), FSM and gateway; events appended through the state service as a
 * run's owner appends them (TR_MSG_STATE_APPEND, group-committed); clients
 * over loopback sockets (SSE and WebSocket by hand, so that the test sees
 * the bytes and can refuse to read). Nothing here sleeps for a result: each
 * wait polls for a condition with a generous bound. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <cmocka.h>
#include <openssl/sha.h>
#include <sodium.h>

#include "harness.h"
#include <curl/curl.h>

#include "gateway/gateway.h"
#include "gateway/gw_int.h"
#include "raft/raft.h"
#include "schemas/protocol_generated.h"

#define TOKEN "live-token"
#define STALL_MS 300
#define BIG (48u << 10) /* content bytes of a big event */

static struct tr_rt *rt;
static struct tr_state *state;
static struct tr_gateway *gw;
static tr_actor_id client;
static char dir[64], raft_addr[32];
static int port, cport;
static atomic_int phase;
static atomic_int n_replies, n_bad;

/* ---- the node ------------------------------------------------------------------ */

static int client_receive(struct tr_ctx *ctx, void *st, struct tr_msg *msg)
{
    if (msg->type == TR_MSG_USER + 1) {
        struct tr_msg *m = tr_msg_make(TR_MSG_STATE_APPEND, msg->data, msg->len);
        uint64_t corr;
        if (tr_request(ctx, tr_state_actor(state), m, 30000, &corr) != TR_OK) {
            tr_msg_free(m);
            atomic_fetch_add(&n_bad, 1);
            atomic_fetch_add(&n_replies, 1);
        }
    } else if (msg->type == TR_MSG_STATE_REPLY) {
        struct tr_state_reply r;
        memcpy(&r, msg->data, sizeof r);
        if (r.status != TR_OK || r.verdict != TR_FSM_OK)
            atomic_fetch_add(&n_bad, 1);
        atomic_fetch_add(&n_replies, 1);
    } else if (msg->type == TR_MSG_TIMEOUT) {
        atomic_fetch_add(&n_bad, 1);
        atomic_fetch_add(&n_replies, 1);
    }
    return 0;
}
static const struct tr_behavior client_behavior = { .name = "client", .receive = client_receive };

static void gw_closed(void *arg) { tr_state_close(state, NULL, NULL); }
static void close_hook(void *arg) { tr_gateway_close(gw, gw_closed, NULL); }

static void open_cb(struct tr_ctx *ctx, void *arg)
{
    struct tr_err err = { 0 };
    struct tr_state_opts so = { .node_id = 1, .data_dir = dir, .raft_address = raft_addr, .bootstrap = 1 };
    if (tr_state_open(ctx, &so, &state, &err) != TR_OK) {
        fprintf(stderr, "state: %s\n", err.msg);
        atomic_store(&phase, -1);
        return;
    }
    struct tr_gateway_opts go = { .rt = rt, .state = state, .host = "127.0.0.1", .port = 0, .admin_token = TOKEN,
                                  .node_id = 1, .stream_stall_ms = STALL_MS, .max_connections = 4096, .request_timeout_ms = 1000,
                                  .stream_keepalive_ms = 200,
                                  .client_host = "127.0.0.1", .client_port = 0 };
    if (tr_gateway_start(ctx, &go, &gw, &err) != TR_OK) {
        fprintf(stderr, "gateway: %s\n", err.msg);
        tr_state_close(state, NULL, NULL);
        atomic_store(&phase, -1);
        return;
    }
    tr_rt_on_shutdown(ctx, close_hook, NULL);
    port = tr_gateway_port(gw);
    cport = tr_gateway_client_port(gw);
    atomic_store(&phase, 1);
}

/* ---- HTTP with libcurl (plain requests) ----------------------------------------- */

struct resp {
    long status;
    char *body;
    size_t len;
    json_t *json;
};

static size_t body_cb(char *p, size_t size, size_t n, void *ud)
{
    struct resp *r = ud;
    r->body = realloc(r->body, r->len + size * n + 1);
    memcpy(r->body + r->len, p, size * n);
    r->len += size * n;
    r->body[r->len] = 0;
    return size * n;
}

static struct resp req(const char *method, const char *path, const char *body)
{
    struct resp r = { 0 };
    CURL *c = curl_easy_init();
    char url[512];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    struct curl_slist *h = curl_slist_append(NULL, "Authorization: Bearer " TOKEN);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, body_cb);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 90000L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    if (body != NULL)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    (void)curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
    curl_easy_cleanup(c);
    curl_slist_free_all(h);
    if (r.body != NULL)
        r.json = json_loadb(r.body, r.len, JSON_DECODE_ANY, NULL);
    return r;
}

static void resp_free(struct resp *r)
{
    free(r->body);
    json_decref(r->json);
    memset(r, 0, sizeof *r);
}

static char *create_run(void)
{
    struct resp r = req("POST", "/v1/runs", "{\"goal\":\"live updates\"}");
    assert_int_equal(r.status, 201);
    char *id = strdup(json_string_value(json_object_get(r.json, "id")));
    resp_free(&r);
    return id;
}

static void cancel_run(const char *id)
{
    char path[128];
    snprintf(path, sizeof path, "/v1/runs/%s/cancel", id);
    struct resp r = req("POST", path, NULL);
    assert_int_equal(r.status, 200);
    resp_free(&r);
}

/* A metric's value from /metrics (-1 when absent). */
static long long metric(const char *name)
{
    struct resp r = req("GET", "/metrics", NULL);
    long long v = -1;
    size_t n = strlen(name);
    for (char *p = r.body; p != NULL && *p != '\0'; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (strncmp(p, name, n) == 0 && p[n] == ' ')
            v = strtoll(p + n + 1, NULL, 10);
    resp_free(&r);
    return v;
}

/* ---- appends, as the run's owner ---------------------------------------------------- */

static uint64_t next_seq[16];
static char seq_run[16][TR_RUN_ID_TEXT_LEN];

static uint64_t *seq_of(const char *run)
{
    for (int i = 0; i < 16; i++) {
        if (strcmp(seq_run[i], run) == 0)
            return &next_seq[i];
        if (seq_run[i][0] == '\0') {
            snprintf(seq_run[i], sizeof seq_run[i], "%s", run);
            next_seq[i] = 2; /* run.created is 1 */
            return &next_seq[i];
        }
    }
    fail_msg("too many runs");
    return NULL;
}

/* Queue n llm.completed events with `size` bytes of content each (the
 * service group-commits them); wait until every one is applied. */
static void append_events(const char *run, int n, size_t size)
{
    uint64_t id, *seq = seq_of(run);
    assert_int_equal(tr_run_id_from_text(run, strlen(run), &id), TR_OK);
    char *content = malloc(size + 1);
    memset(content, 'x', size);
    content[size] = '\0';
    int want = atomic_load(&n_replies) + n;
    for (int i = 0; i < n; i++) {
        struct tr_fb_builder b;
        tr_fb_builder_init(&b);
        tr_fb_ref text = tr_fb_create_str(&b, content);
        tr_fb_ref model = tr_fb_create_str(&b, "mock");
        troupe_journal_LlmCompleted_start(&b);
        troupe_journal_LlmCompleted_add_step(&b, (uint32_t)*seq);
        troupe_journal_LlmCompleted_add_model(&b, model);
        troupe_journal_LlmCompleted_add_content(&b, text);
        tr_fb_ref data = troupe_journal_LlmCompleted_end(&b);
        tr_fb_ref rid = tr_fb_create_str(&b, run);
        troupe_journal_Event_start(&b);
        troupe_journal_Event_add_seq(&b, *seq);
        troupe_journal_Event_add_time_us(&b, 1700000000000000LL);
        troupe_journal_Event_add_run_id(&b, rid);
        troupe_journal_Event_add_epoch(&b, 1);
        troupe_journal_Event_add_data_type(&b, troupe_journal_Data_LlmCompleted);
        troupe_journal_Event_add_data(&b, data);
        troupe_journal_Event_finish(&b, troupe_journal_Event_end(&b));
        size_t len;
        const uint8_t *ev = tr_fb_builder_data(&b, &len);
        struct tr_append_msg h = { .run_id = id, .epoch = 1, .seq = *seq, .len = (uint32_t)len };
        struct tr_msg *m = tr_msg_new(TR_MSG_USER + 1, (uint32_t)(sizeof h + len));
        memcpy(m->data, &h, sizeof h);
        memcpy(m->data + sizeof h, ev, len);
        tr_fb_builder_free(&b);
        assert_int_equal(tr_rt_send(rt, client, m), TR_OK);
        (*seq)++;
    }
    free(content);
    for (int i = 0; i < 60000 && atomic_load(&n_replies) < want; i++)
        uv_sleep(1);
    assert_int_equal(atomic_load(&n_replies), want);
    assert_int_equal(atomic_load(&n_bad), 0);
}

/* ---- raw sockets -------------------------------------------------------------------- */

static void send_all(int fd, const void *p, size_t n);

static int dial_port(int p, int rcvbuf)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    if (rcvbuf > 0)
        assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf), 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)p) };
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

static int dial(int rcvbuf)
{
    return dial_port(port, rcvbuf);
}

/* A client-protocol connection that subscribes to run's events (after 0). */
static int proto_subscribe(const char *run, int rcvbuf)
{
    int fd = dial_port(cport, rcvbuf);
    struct tr_fb_builder b;
    tr_fb_builder_init(&b);
    tr_fb_ref rid = tr_fb_create_str(&b, run);
    troupe_proto_Subscribe_start(&b);
    troupe_proto_Subscribe_add_run_id(&b, rid);
    troupe_proto_Subscribe_add_after_seq(&b, 0);
    tr_fb_ref sub = troupe_proto_Subscribe_end(&b);
    tr_fb_ref key = tr_fb_create_str(&b, TOKEN);
    troupe_proto_Request_start(&b);
    troupe_proto_Request_add_id(&b, 1);
    troupe_proto_Request_add_api_key(&b, key);
    troupe_proto_Request_add_op_Subscribe(&b, sub);
    tr_fb_ref rq = troupe_proto_Request_end(&b);
    troupe_proto_Frame_start(&b);
    troupe_proto_Frame_add_body_Request(&b, rq);
    troupe_proto_Frame_finish_sized(&b, troupe_proto_Frame_end(&b));
    size_t len;
    const uint8_t *data = tr_fb_builder_data(&b, &len);
    send_all(fd, data, len);
    tr_fb_builder_free(&b);
    return fd;
}

static void send_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
        assert_true(w > 0);
        c += w;
        n -= (size_t)w;
    }
}

/* A growing input buffer. */
struct inbuf {
    char *p;
    size_t len, off;
    int eof;
};

/* Read what is there within ms; 0 on data, -1 on EOF/error or nothing. */
static int fill(int fd, struct inbuf *b, int ms)
{
    struct pollfd pf = { .fd = fd, .events = POLLIN };
    if (poll(&pf, 1, ms) <= 0)
        return -1;
    b->p = realloc(b->p, b->len + 65536 + 1);
    ssize_t n = recv(fd, b->p + b->len, 65536, 0);
    if (n <= 0) {
        b->eof = 1;
        return -1;
    }
    b->len += (size_t)n;
    b->p[b->len] = '\0';
    return 0;
}

/* ---- SSE ------------------------------------------------------------------------------ */

struct sse {
    int fd;
    struct inbuf in;
    uint64_t *ids;
    size_t n, cap;
};

static void sse_open(struct sse *s, const char *run, const char *last_id, int rcvbuf)
{
    memset(s, 0, sizeof *s);
    s->fd = dial(rcvbuf);
    char rq[512], lid[64] = "";
    if (last_id != NULL)
        snprintf(lid, sizeof lid, "Last-Event-ID: %s\r\n", last_id);
    int n = snprintf(rq, sizeof rq,
                     "GET /v1/runs/%s/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n"
                     "Authorization: Bearer " TOKEN "\r\n%s\r\n",
                     run, lid);
    send_all(s->fd, rq, (size_t)n);
}

/* Parse the complete events buffered; ids in order. */
static void sse_parse(struct sse *s)
{
    while (s->in.p != NULL) {
        char *start = s->in.p + s->in.off;
        if (s->in.off == 0) {
            char *hend = strstr(start, "\r\n\r\n");
            if (hend == NULL)
                return;
            assert_true(strncmp(start, "HTTP/1.1 200", 12) == 0);
            s->in.off = (size_t)(hend + 4 - s->in.p);
            continue;
        }
        char *end = strstr(start, "\n\n");
        if (end == NULL)
            return;
        if (strncmp(start, "id: ", 4) == 0) {
            if (s->n == s->cap) {
                s->cap = s->cap ? 2 * s->cap : 64;
                s->ids = realloc(s->ids, s->cap * sizeof *s->ids);
            }
            s->ids[s->n++] = strtoull(start + 4, NULL, 10);
            assert_non_null(strstr(start, "\ndata: {"));
        }
        s->in.off = (size_t)(end + 2 - s->in.p);
    }
}

/* Read until the last id is `want` (or EOF when want is 0). */
static void sse_until(struct sse *s, uint64_t want)
{
    for (int i = 0; i < 600; i++) {
        sse_parse(s);
        if (want != 0 && s->n > 0 && s->ids[s->n - 1] >= want)
            return;
        if (s->in.eof) {
            if (want == 0)
                return;
            fail_msg("event stream ended at %llu before %llu", s->n ? (unsigned long long)s->ids[s->n - 1] : 0ull,
                     (unsigned long long)want);
        }
        (void)fill(s->fd, &s->in, 100);
    }
    fail_msg("event %llu never came (last %llu)", (unsigned long long)want,
             s->n ? (unsigned long long)s->ids[s->n - 1] : 0ull);
}

static void sse_close(struct sse *s)
{
    close(s->fd);
    free(s->in.p);
    free(s->ids);
}

/* ids must be from..to, each once, in order. */
static void expect_ids(const uint64_t *ids, size_t n, uint64_t from, uint64_t to)
{
    assert_int_equal(n, to - from + 1);
    for (size_t i = 0; i < n; i++)
        if (ids[i] != from + i)
            fail_msg("event %zu is seq %llu, expected %llu", i, (unsigned long long)ids[i],
                     (unsigned long long)(from + i));
}

/* ---- WebSocket -------------------------------------------------------------------------- */

struct ws {
    int fd;
    struct inbuf in;
    uint64_t *ids;
    size_t n, cap;
    int close_code;              /* 0 until a close frame came */
    int pongs;
};

/* The handshake; returns the HTTP status (101 on success). */
static int ws_open(struct ws *w, const char *target, const char *extra, int rcvbuf)
{
    memset(w, 0, sizeof *w);
    w->fd = dial(rcvbuf);
    static const char key[] = "dGhlIHNhbXBsZSBub25jZQ==";
    char rq[1024];
    int n = snprintf(rq, sizeof rq,
                     "GET %s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n"
                     "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: %s\r\n%s\r\n",
                     target, key, extra ? extra : "");
    send_all(w->fd, rq, (size_t)n);
    char *hend = NULL;
    while ((hend = w->in.p ? strstr(w->in.p, "\r\n\r\n") : NULL) == NULL)
        if (fill(w->fd, &w->in, 10000) != 0)
            fail_msg("no handshake answer");
    int status = atoi(w->in.p + 9);
    if (status == 101) {
        /* RFC 6455's own example: this key gives this accept value. */
        assert_non_null(strstr(w->in.p, "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        unsigned char d[SHA_DIGEST_LENGTH];
        const char *cat = "dGhlIHNhbXBsZSBub25jZQ==258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
        SHA1((const unsigned char *)cat, strlen(cat), d);
        char b64[64];
        sodium_bin2base64(b64, sizeof b64, d, sizeof d, sodium_base64_VARIANT_ORIGINAL);
        assert_string_equal(b64, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }
    w->in.off = (size_t)(hend + 4 - w->in.p);
    return status;
}

/* A masked client frame. */
static void ws_send(struct ws *w, uint8_t opcode, const void *p, size_t n)
{
    uint8_t f[14 + 125];
    assert_true(n <= 125);
    f[0] = (uint8_t)(0x80 | opcode);
    f[1] = (uint8_t)(0x80 | n);
    uint8_t mask[4] = { 0x12, 0x34, 0x56, 0x78 };
    memcpy(f + 2, mask, 4);
    for (size_t i = 0; i < n; i++)
        f[6 + i] = ((const uint8_t *)p)[i] ^ mask[i % 4];
    send_all(w->fd, f, 6 + n);
}

/* Parse complete server frames (unmasked). */
static void ws_parse(struct ws *w)
{
    for (;;) {
        const uint8_t *p = (const uint8_t *)w->in.p + w->in.off;
        size_t have = w->in.len - w->in.off, hl = 2;
        if (have < 2)
            return;
        assert_int_equal(p[1] & 0x80, 0); /* servers do not mask */
        uint64_t len = p[1] & 0x7f;
        if (len == 126) {
            if (have < 4)
                return;
            len = ((uint64_t)p[2] << 8) | p[3];
            hl = 4;
        } else if (len == 127) {
            if (have < 10)
                return;
            len = 0;
            for (int i = 0; i < 8; i++)
                len = (len << 8) | p[2 + i];
            hl = 10;
        }
        if (have < hl + len)
            return;
        uint8_t op = p[0] & 0x0f;
        assert_true(p[0] & 0x80); /* no fragments from us */
        const char *payload = (const char *)p + hl;
        if (op == 0x1) {
            json_t *j = json_loadb(payload, (size_t)len, 0, NULL);
            assert_non_null(j);
            if (w->n == w->cap) {
                w->cap = w->cap ? 2 * w->cap : 64;
                w->ids = realloc(w->ids, w->cap * sizeof *w->ids);
            }
            w->ids[w->n++] = (uint64_t)json_integer_value(json_object_get(j, "seq"));
            assert_non_null(json_object_get(j, "type"));
            json_decref(j);
        } else if (op == 0x8) {
            w->close_code = len >= 2 ? ((uint8_t)payload[0] << 8) | (uint8_t)payload[1] : 1005;
        } else if (op == 0xA) {
            w->pongs++;
        }
        w->in.off += hl + (size_t)len;
    }
}

static void ws_until(struct ws *w, uint64_t want_seq, int want_close)
{
    for (int i = 0; i < 600; i++) {
        ws_parse(w);
        if (want_seq != 0 && w->n > 0 && w->ids[w->n - 1] >= want_seq)
            return;
        if (want_close && w->close_code != 0)
            return;
        if (w->in.eof)
            fail_msg("the WebSocket closed (last seq %llu)", w->n ? (unsigned long long)w->ids[w->n - 1] : 0ull);
        (void)fill(w->fd, &w->in, 100);
    }
    fail_msg("seq %llu / close never came", (unsigned long long)want_seq);
}

static void ws_close(struct ws *w)
{
    close(w->fd);
    free(w->in.p);
    free(w->ids);
}

/* ---- setup ------------------------------------------------------------------------------- */

static int setup(void **st)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    snprintf(dir, sizeof dir, "/tmp/troupe-live-XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(raft_addr, sizeof raft_addr, "127.0.0.1:%d", h_free_port());
    struct tr_rt_opts ro = { .schedulers = 2 };
    assert_int_equal(tr_rt_new(&ro, &rt), TR_OK);
    assert_int_equal(tr_rt_start(rt), TR_OK);
    struct tr_spawn_opts co = { .behavior = &client_behavior, .sched = 1 };
    assert_int_equal(tr_spawn(rt, &co, &client), TR_OK);
    assert_int_equal(tr_rt_call(rt, 0, open_cb, NULL, NULL), TR_OK);
    for (int i = 0; i < 20000 && atomic_load(&phase) == 0; i++)
        uv_sleep(1);
    assert_int_equal(atomic_load(&phase), 1);
    for (int i = 0; i < 2000; i++) {
        struct resp h = req("GET", "/healthz", NULL);
        const char *role = json_string_value(json_object_get(h.json, "role"));
        bool leader = h.status == 200 && role != NULL && strcmp(role, "leader") == 0;
        resp_free(&h);
        if (leader)
            return 0;
        uv_sleep(10);
    }
    fail_msg("node never became leader");
    return 0;
}

static int teardown(void **st)
{
    tr_rt_shutdown(rt);

    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    curl_global_cleanup();
    return 0;
}

/* ---- tests ---------------------------------------------------------------------------------- */

/* SSE: history, live events in the same stream, a resume with Last-Event-ID
 * that misses and repeats nothing, and the end once the run is terminal. */
static void test_sse_history_live_resume(void **st)
{
    char *run = create_run();
    append_events(run, 5, 100); /* seq 2..6 */
    struct sse a;
    sse_open(&a, run, NULL, 0);
    sse_until(&a, 6);
    append_events(run, 40, 200); /* 7..46, live */
    sse_until(&a, 46);
    expect_ids(a.ids, a.n, 1, 46);
    /* Leave after 46; more events come meanwhile; resume from 46. */
    sse_close(&a);
    append_events(run, 10, 100); /* 47..56 */
    struct sse b;
    sse_open(&b, run, "46", 0);
    sse_until(&b, 56);
    /* An idle stream gets keep-alive comments (every 200 ms here). */
    for (int i = 0; i < 100 && strstr(b.in.p, "\n\n:\n\n") == NULL; i++)
        (void)fill(b.fd, &b.in, 100);
    assert_non_null(strstr(b.in.p, "\n\n:\n\n"));
    append_events(run, 10, 100); /* 57..66 */
    cancel_run(run);             /* 67: run.cancelled, then the end */
    sse_until(&b, 0);
    assert_true(b.in.eof);
    expect_ids(b.ids, b.n, 47, 67);
    assert_non_null(strstr(b.in.p, "id: 67\nevent: run.cancelled\n"));
    sse_close(&b);
    free(run);
}

/* Long poll: answered as soon as the run ends, not at its deadline. */
struct poll_arg {
    char path[128];
    struct resp r;
    atomic_int done;
};

static void *long_poll(void *p)
{
    struct poll_arg *a = p;
    a->r = req("GET", a->path, NULL);
    atomic_store(&a->done, 1);
    return NULL;
}

static void test_long_poll_wakes_on_end(void **st)
{
    char *run = create_run();
    struct poll_arg a = { 0 };
    snprintf(a.path, sizeof a.path, "/v1/runs/%s?wait=60", run);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, long_poll, &a), 0);
    /* Held while the run lives, through appends that do not end it. */
    for (int i = 0; i < 2000 && metric("troupe_gateway_live_subscribers{kind=\"long_poll\"}") < 1; i++)
        uv_sleep(5);
    assert_int_equal(metric("troupe_gateway_live_subscribers{kind=\"long_poll\"}"), 1);
    append_events(run, 3, 10);
    assert_int_equal(atomic_load(&a.done), 0);
    uint64_t t0 = uv_hrtime();
    cancel_run(run);
    pthread_join(th, NULL);
    uint64_t ms = (uv_hrtime() - t0) / 1000000;
    assert_int_equal(a.r.status, 200);
    assert_string_equal(json_string_value(json_object_get(a.r.json, "status")), "cancelled");
    assert_true(ms < 30000); /* woken by the end, long before the 60 s deadline */
    resp_free(&a.r);
    assert_int_equal(metric("troupe_gateway_live_subscribers{kind=\"long_poll\"}"), 0);
    free(run);
}

/* WebSocket: handshake checks, token in the query, history then live, a
 * resume with ?after, ping/pong, and the close handshake at the end. */
static void test_websocket(void **st)
{
    char *run = create_run();
    append_events(run, 4, 100); /* 2..5 */
    char target[256];
    struct ws w;
    /* no credentials: 401; bad version: 426; no key: 400; unknown run: 404 */
    snprintf(target, sizeof target, "/v1/runs/%s/ws", run);
    assert_int_equal(ws_open(&w, target, NULL, 0), 401);
    ws_close(&w);
    snprintf(target, sizeof target, "/v1/runs/%s/ws?token=nope", run);
    assert_int_equal(ws_open(&w, target, NULL, 0), 401);
    ws_close(&w);
    snprintf(target, sizeof target, "/v1/runs/0000000000000001/ws?token=" TOKEN);
    assert_int_equal(ws_open(&w, target, NULL, 0), 404);
    ws_close(&w);
    snprintf(target, sizeof target, "/v1/runs/%s/ws?after=x1&token=" TOKEN, run);
    assert_int_equal(ws_open(&w, target, NULL, 0), 400);
    ws_close(&w);
    {
        int fd = dial(0);
        char rq[512];
        int n = snprintf(rq, sizeof rq,
                         "GET /v1/runs/%s/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         "Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                         "Authorization: Bearer " TOKEN "\r\n\r\n",
                         run);
        send_all(fd, rq, (size_t)n);
        struct inbuf in = { 0 };
        while (in.p == NULL || strstr(in.p, "\r\n\r\n") == NULL)
            assert_int_equal(fill(fd, &in, 10000), 0);
        assert_int_equal(atoi(in.p + 9), 426);
        free(in.p);
        close(fd);
        fd = dial(0);
        n = snprintf(rq, sizeof rq,
                     "GET /v1/runs/%s/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Version: 13\r\nAuthorization: Bearer " TOKEN "\r\n\r\n",
                     run);
        send_all(fd, rq, (size_t)n);
        memset(&in, 0, sizeof in);
        while (in.p == NULL || strstr(in.p, "\r\n\r\n") == NULL)
            assert_int_equal(fill(fd, &in, 10000), 0);
        assert_int_equal(atoi(in.p + 9), 400);
        free(in.p);
        close(fd);
    }
    /* the token as a subprotocol, as a browser would send it */
    snprintf(target, sizeof target, "/v1/runs/%s/ws", run);
    assert_int_equal(ws_open(&w, target, "Sec-WebSocket-Protocol: troupe, bearer." TOKEN "\r\n", 0), 101);
    assert_non_null(strstr(w.in.p, "Sec-WebSocket-Protocol: troupe\r\n"));
    ws_until(&w, 5, 0);
    append_events(run, 30, 300); /* 6..35 live */
    ws_until(&w, 35, 0);
    expect_ids(w.ids, w.n, 1, 35);
    ws_send(&w, 0x9, "hi", 2); /* ping */
    for (int i = 0; i < 100 && w.pongs == 0; i++) {
        (void)fill(w.fd, &w.in, 100);
        ws_parse(&w);
    }
    assert_int_equal(w.pongs, 1);
    ws_close(&w); /* gone without a close frame: the node forgets it */
    /* resume after 20 with the token in the query */
    snprintf(target, sizeof target, "/v1/runs/%s/ws?after=20&token=" TOKEN, run);
    assert_int_equal(ws_open(&w, target, NULL, 0), 101);
    ws_until(&w, 35, 0);
    append_events(run, 5, 10); /* 36..40 */
    cancel_run(run);           /* 41 */
    ws_until(&w, 0, 1);
    assert_int_equal(w.close_code, 1000);
    expect_ids(w.ids, w.n, 21, 41);
    ws_send(&w, 0x8, "\x03\xe8", 2); /* our close answers the node's */
    for (int i = 0; i < 100 && !w.in.eof; i++)
        (void)fill(w.fd, &w.in, 100);
    assert_true(w.in.eof); /* the node closed the TCP connection after the handshake */
    ws_close(&w);
    for (int i = 0; i < 200 && metric("troupe_gateway_websockets") != 0; i++)
        uv_sleep(10);
    assert_int_equal(metric("troupe_gateway_websockets"), 0);
    free(run);
}

/* Readers that do not read: an SSE and a WebSocket client with tiny receive
 * buffers subscribe to a busy run and never read. The node pauses them at
 * the high-water mark (unsent bytes stay bounded), then drops them once
 * events keep coming past the stall limit; a reader that reads gets every
 * event, and the node keeps serving. */
static void test_slow_readers(void **st)
{
    char *run = create_run();
    long long before = metric("troupe_gateway_slow_disconnects_total");
    assert_true(before >= 0);
    struct sse slow, good;
    sse_open(&slow, run, NULL, 4096);
    struct ws w;
    char target[256];
    snprintf(target, sizeof target, "/v1/runs/%s/ws?token=" TOKEN, run);
    assert_int_equal(ws_open(&w, target, NULL, 4096), 101);
    sse_open(&good, run, NULL, 0);
    int pfd = proto_subscribe(run, 4096);
    for (int i = 0; i < 2000 && metric("troupe_gateway_live_subscribers{kind=\"protocol\"}") < 1; i++)
        uv_sleep(5);
    long long max_queued = 0;
    uint64_t last = 1;
    for (int round = 0; round < 400; round++) {
        append_events(run, 8, BIG);
        last += 8;
        sse_until(&good, last); /* the reader that reads is served throughout */
        long long q = metric("troupe_gateway_live_max_queued_bytes");
        if (q > max_queued)
            max_queued = q;
        if (metric("troupe_gateway_slow_disconnects_total") >= before + 3)
            break;
        uv_sleep(STALL_MS / 4);
    }
    assert_int_equal(metric("troupe_gateway_slow_disconnects_total"), before + 3);
    /* Bounded: the mark, plus one event's frame, plus small control frames. */
    assert_true(max_queued > 0);
    assert_true(max_queued <= (long long)(GW_LIVE_HIGH_WATER + 2 * BIG + 4096));
    /* The slow clients find their connections closed once they read. */
    for (int i = 0; i < 100000 && !slow.in.eof; i++) {
        slow.in.len = slow.in.off = 0; /* discard */
        (void)fill(slow.fd, &slow.in, 1000);
    }
    assert_true(slow.in.eof);
    for (int i = 0; i < 100000 && !w.in.eof; i++) {
        w.in.len = w.in.off = 0;
        (void)fill(w.fd, &w.in, 1000);
    }
    assert_true(w.in.eof);
    struct inbuf pin = { 0 };
    for (int i = 0; i < 100000 && !pin.eof; i++) {
        pin.len = pin.off = 0;
        (void)fill(pfd, &pin, 1000);
    }
    assert_true(pin.eof); /* the protocol connection was dropped */
    free(pin.p);
    close(pfd);
    assert_int_equal(metric("troupe_gateway_live_subscribers{kind=\"protocol\"}"), 0);
    cancel_run(run);
    sse_until(&good, 0);
    expect_ids(good.ids, good.n, 1, last + 1);
    sse_close(&slow);
    ws_close(&w);
    sse_close(&good);
    struct resp h = req("GET", "/healthz", NULL);
    assert_int_equal(h.status, 200);
    resp_free(&h);
    free(run);
}

/* Many subscribers of one run: each append batch is one read of the
 * journal per round, shared (not one per subscriber); more subscribers than
 * one round wakes (GW_LIVE_ROUND_WAKES), so walks resume across rounds, and
 * still every stream gets every event once. */
static void test_fanout_shares_reads(void **st)
{
    char *run = create_run();
    enum { N = GW_LIVE_ROUND_WAKES + 76 };
    static struct sse s[N];
    for (int i = 0; i < N; i++)
        sse_open(&s[i], run, NULL, 0);
    for (int i = 0; i < N; i++)
        sse_until(&s[i], 1);
    long long reads0 = metric("troupe_gateway_live_reads_total");
    long long wakes0 = metric("troupe_gateway_live_wakes_total");
    append_events(run, 20, 50);
    for (int i = 0; i < N; i++)
        sse_until(&s[i], 21);
    long long reads = metric("troupe_gateway_live_reads_total") - reads0;
    long long wakes = metric("troupe_gateway_live_wakes_total") - wakes0;
    assert_true(wakes >= N);     /* each subscriber woken ... */
    assert_true(reads >= 1);
    assert_true(reads * 10 <= wakes); /* ... but the journal read once per round, not per subscriber */
    cancel_run(run);
    for (int i = 0; i < N; i++) {
        sse_until(&s[i], 0);
        expect_ids(s[i].ids, s[i].n, 1, 22);
        sse_close(&s[i]);
    }
    free(run);
}

/* Slowloris: headers dribbled a byte at a time never make a request; the
 * node answers 408 after request_timeout_ms (1 s here) and closes, serving
 * others meanwhile. */
static void test_slowloris(void **st)
{
    int fd = dial(0);
    static const char head[] = "GET /v1/runs HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    send_all(fd, head, sizeof head - 1);
    struct inbuf in = { 0 };
    int served = 0;
    for (int i = 0; i < 600 && !in.eof; i++) {
        if (send(fd, "a", 1, MSG_NOSIGNAL) != 1)
            break;
        struct resp h = req("GET", "/healthz", NULL); /* others are served meanwhile */
        served += h.status == 200;
        resp_free(&h);
        (void)fill(fd, &in, 50);
    }
    for (int i = 0; i < 100 && !in.eof; i++)
        (void)fill(fd, &in, 100);
    assert_non_null(in.p);
    assert_int_equal(atoi(in.p + 9), 408);
    assert_true(in.eof);
    assert_true(served > 0);
    free(in.p);
    close(fd);
}

/* The same on a real `troupe` process (the hook wired by node/main.c): a run
 * followed over SSE and WebSocket from its start, a long poll, and the run's
 * end (it fails on its own, its LLM endpoint being closed, or is
 * cancelled): both streams end having carried exactly GET .../events. */
static void test_process_streams(void **st)
{
    if (h_bin("troupe") == NULL)
        skip(); /* only when the daemon is not built in this tree */
    char *pdir = h_tmpdir("live-proc");
    char data[512], llm[128];
    snprintf(data, sizeof data, "%s/n1", pdir);
    snprintf(llm, sizeof llm, "OPENAI_BASE_URL=http://127.0.0.1:%d/v1", h_free_port());
    char *const env[] = { "TROUPE_ADMIN_TOKEN=" TOKEN, llm, "OPENAI_API_KEY=k", "TROUPE_LOG=warn", NULL };
    char *const args[] = { "--stream-stall-ms", "500", "--max-connections", "64", NULL };
    struct h_node n = { 0 };
    assert_int_equal(h_node_start(&n, data, args, env), 0);
    int saved = port;
    port = n.http_port;
    char *run = create_run();
    struct sse s;
    sse_open(&s, run, NULL, 0);
    struct ws w;
    char target[256];
    snprintf(target, sizeof target, "/v1/runs/%s/ws", run);
    assert_int_equal(ws_open(&w, target, "Sec-WebSocket-Protocol: troupe, bearer." TOKEN "\r\n", 0), 101);
    sse_until(&s, 1);
    ws_until(&w, 1, 0);
    struct poll_arg a = { 0 };
    snprintf(a.path, sizeof a.path, "/v1/runs/%s?wait=60", run);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, long_poll, &a), 0);
    cancel_run(run);
    pthread_join(th, NULL);
    assert_int_equal(a.r.status, 200);
    const char *status = json_string_value(json_object_get(a.r.json, "status"));
    assert_true(strcmp(status, "cancelled") == 0 || strcmp(status, "failed") == 0);
    resp_free(&a.r);
    sse_until(&s, 0);
    ws_until(&w, 0, 1);
    assert_int_equal(w.close_code, 1000);
    char path[128];
    snprintf(path, sizeof path, "/v1/runs/%s/events", run);
    struct resp ev = req("GET", path, NULL);
    assert_int_equal(ev.status, 200);
    size_t n_ev = json_array_size(ev.json);
    assert_true(n_ev >= 2);
    assert_int_equal(s.n, n_ev);
    assert_int_equal(w.n, n_ev);
    for (size_t i = 0; i < n_ev; i++) {
        uint64_t seq = (uint64_t)json_integer_value(json_object_get(json_array_get(ev.json, i), "seq"));
        assert_int_equal(s.ids[i], seq);
        assert_int_equal(w.ids[i], seq);
    }
    resp_free(&ev);
    sse_close(&s);
    ws_close(&w);
    port = saved;
    int ws_status = h_proc_stop(&n.proc, 20000);
    assert_true(WIFEXITED(ws_status) && WEXITSTATUS(ws_status) == 0);
    h_node_free(&n);
    h_tmpdir_remove(pdir);
    free(run);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sse_history_live_resume),
        cmocka_unit_test(test_long_poll_wakes_on_end),
        cmocka_unit_test(test_websocket),
        cmocka_unit_test(test_fanout_shares_reads),
        cmocka_unit_test(test_slow_readers),
        cmocka_unit_test(test_slowloris),
        cmocka_unit_test(test_process_streams),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
