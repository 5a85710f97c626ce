/* The FlatBuffers client protocol of a real `troupe` process, driven by the
 * troupectl binary (runs, tools, approvals, cluster; exit statuses) and by
 * raw sockets sending bad frames: a truncated buffer, an oversized length
 * prefix, a wrong file identifier, an unknown union tag, garbage. Each gets
 * an error Response or a close, and the node keeps serving. The LLM
 * endpoint accepts connections and never answers, so runs stay live until
 * cancelled. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"
#include "schemas/protocol_generated.h"

#define TOKEN "proto-token-1"

static struct h_node node;
static char *dir;
static int client_port;
static int llm_fd = -1;      /* listens, never accepts: LLM calls hang */
static char server[64];

/* ---- troupectl ----------------------------------------------------------------- */

/* Run troupectl with args (a format string); its stdout into *out (caller
 * frees, may be NULL); returns the exit status. */
__attribute__((format(printf, 3, 4))) static int ctl(char **out, int with_token, const char *fmt, ...)
{
    char args[2048], cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "%s --server %s %s %s", getenv("TROUPECTL_BIN"), server,
             with_token ? "--token " TOKEN : "", args);
    FILE *f = popen(cmd, "r");
    assert_non_null(f);
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    size_t n;
    while ((n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += n;
        if (cap - len < 2) {
            cap *= 2;
            buf = realloc(buf, cap);
        }
    }
    buf[len] = '\0';
    int st = pclose(f);
    if (out != NULL)
        *out = buf;
    else
        free(buf);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* troupectl --json ...: the parsed output; fails unless it exits 0. */
__attribute__((format(printf, 1, 2))) static json_t *ctl_json(const char *fmt, ...)
{
    char args[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    char *out;
    int rc = ctl(&out, 1, "--json %s", args);
    if (rc != 0)
        fail_msg("troupectl --json %s: exit %d: %s", args, rc, out);
    json_t *j = json_loads(out, 0, NULL);
    if (j == NULL)
        fail_msg("troupectl --json %s: not JSON: %s", args, out);
    free(out);
    return j;
}

static const char *jstr(json_t *o, const char *k) { return json_string_value(json_object_get(o, k)); }

/* ---- raw frames ------------------------------------------------------------------ */

static int dial(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)client_port) };
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    struct timeval tv = { .tv_sec = 10 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

static void send_all(int fd, const void *p, size_t n)
{
    assert_int_equal(send(fd, p, n, MSG_NOSIGNAL), (ssize_t)n);
}

static int recv_all(int fd, uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t r = recv(fd, p, n, 0);
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

struct answer {
    int closed;          /* the server closed instead of answering */
    uint64_t id;
    int error;           /* ErrorCode, 0: none */
    uint8_t result_type;
};

static struct answer read_answer(int fd)
{
    struct answer a = { 0 };
    uint8_t head[4];
    if (recv_all(fd, head, 4) != 0) {
        a.closed = 1;
        return a;
    }
    uint32_t n;
    memcpy(&n, head, 4);
    assert_true(n <= (16u << 20));
    uint8_t *frame = malloc(4 + (size_t)n);
    memcpy(frame, head, 4);
    assert_int_equal(recv_all(fd, frame + 4, n), 0);
    const struct troupe_proto_Frame *f = troupe_proto_Frame_verify_as_root_sized(frame, 4 + (size_t)n, NULL);
    assert_non_null(f);
    const struct troupe_proto_Response *r = troupe_proto_Frame_body_as_Response(f);
    assert_non_null(r);
    a.id = troupe_proto_Response_id(r);
    const struct troupe_proto_Error *e = troupe_proto_Response_error(r);
    a.error = e != NULL ? troupe_proto_Error_code(e) : 0;
    a.result_type = troupe_proto_Response_result_type(r);
    free(frame);
    return a;
}

/* A ClusterStatus request frame; op_type overrides the union tag when not 0;
 * ident is the file identifier. */
static uint8_t *status_frame(uint64_t id, uint8_t op_type, const char *ident, size_t *len)
{
    struct tr_fb_builder b;
    tr_fb_builder_init(&b);
    tr_fb_ref key = tr_fb_create_str(&b, TOKEN);
    troupe_proto_ClusterStatus_start(&b);
    tr_fb_ref op = troupe_proto_ClusterStatus_end(&b);
    troupe_proto_Request_start(&b);
    troupe_proto_Request_add_id(&b, id);
    troupe_proto_Request_add_api_key(&b, key);
    troupe_proto_Request_add_op_type(&b, op_type ? op_type : troupe_proto_Op_ClusterStatus);
    troupe_proto_Request_add_op(&b, op);
    tr_fb_ref rq = troupe_proto_Request_end(&b);
    troupe_proto_Frame_start(&b);
    troupe_proto_Frame_add_body_Request(&b, rq);
    tr_fb_finish_sized(&b, troupe_proto_Frame_end(&b), ident);
    const uint8_t *d = tr_fb_builder_data(&b, len);
    uint8_t *copy = malloc(*len);
    memcpy(copy, d, *len);
    tr_fb_builder_free(&b);
    return copy;
}

/* A valid request on fd answers with the cluster. */
static void expect_serving(int fd, uint64_t id)
{
    size_t len;
    uint8_t *f = status_frame(id, 0, "TRP1", &len);
    send_all(fd, f, len);
    free(f);
    struct answer a = read_answer(fd);
    assert_false(a.closed);
    assert_int_equal(a.error, 0);
    assert_int_equal(a.id, id);
    assert_int_equal(a.result_type, troupe_proto_Result_ClusterInfo);
}

static void expect_closed(int fd)
{
    uint8_t byte;
    assert_true(recv(fd, &byte, 1, 0) <= 0);
}

/* ---- tests ------------------------------------------------------------------------ */

static int setup(void **st)
{
    (void)st;
    if (h_bin("troupe") == NULL || getenv("TROUPECTL_BIN") == NULL)
        return 0;
    dir = h_tmpdir("proto");
    char data[512], client[64];
    snprintf(data, sizeof data, "%s/n1", dir);
    client_port = h_free_port();
    snprintf(client, sizeof client, "127.0.0.1:%d", client_port);
    snprintf(server, sizeof server, "127.0.0.1:%d", client_port);
    char *const args[] = { "--client", client, NULL };
    int llm_port = h_free_port();
    llm_fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in la = { .sin_family = AF_INET, .sin_port = htons((uint16_t)llm_port) };
    inet_pton(AF_INET, "127.0.0.1", &la.sin_addr);
    if (bind(llm_fd, (struct sockaddr *)&la, sizeof la) != 0 || listen(llm_fd, 64) != 0)
        return -1;
    char llm[96];
    snprintf(llm, sizeof llm, "OPENAI_BASE_URL=http://127.0.0.1:%d/v1", llm_port);
    char *const env[] = { "TROUPE_ADMIN_TOKEN=" TOKEN, llm, "OPENAI_API_KEY=test", NULL };
    return h_node_start(&node, data, args, env);
}

static int teardown(void **st)
{
    (void)st;
    if (dir != NULL) {
        h_node_free(&node);
        h_tmpdir_remove(dir);
    }
    if (llm_fd >= 0)
        close(llm_fd);
    return 0;
}

static void test_cli_runs(void **st)
{
    (void)st;
    if (dir == NULL)
        skip();
    char *out;
    /* auth, usage */
    assert_int_equal(ctl(NULL, 0, "run list 2>/dev/null"), 1);
    assert_int_equal(ctl(NULL, 1, "run 2>/dev/null"), 2);
    assert_int_equal(ctl(NULL, 1, "run list --status bogus 2>/dev/null"), 2);
    assert_int_equal(ctl(NULL, 1, "nosuchgroup x 2>/dev/null"), 2);
    assert_int_equal(ctl(&out, 1, "run create --help"), 0);
    assert_non_null(strstr(out, "--goal"));
    free(out);

    json_t *run = ctl_json("run create --goal 'talk over flatbuffers' --model m1 --idempotency-key k1");
    assert_string_equal(jstr(run, "status"), "queued");
    assert_string_equal(jstr(run, "goal"), "talk over flatbuffers");
    char *id = strdup(jstr(run, "id"));
    json_decref(run);
    /* the same idempotency key and body: the same run */
    run = ctl_json("run create --goal 'talk over flatbuffers' --model m1 --idempotency-key k1");
    assert_string_equal(jstr(run, "id"), id);
    json_decref(run);
    assert_int_equal(ctl(NULL, 1, "run create --goal other --idempotency-key k1 2>/dev/null"), 1);

    run = ctl_json("run get %s", id);
    assert_string_equal(jstr(run, "id"), id);
    json_decref(run);
    assert_int_equal(ctl(NULL, 1, "run get run_0000000000000001 2>/dev/null"), 1);

    json_t *list = ctl_json("run list");
    json_t *runs = json_object_get(list, "runs");
    bool found = false;
    for (size_t i = 0; i < json_array_size(runs); i++)
        found |= strcmp(jstr(json_array_get(runs, i), "id"), id) == 0;
    assert_true(found);
    json_decref(list);

    json_t *events = ctl_json("run events %s", id);
    assert_true(json_array_size(events) >= 1);
    assert_string_equal(jstr(json_array_get(events, 0), "type"), "run.created");
    json_decref(events);

    run = ctl_json("run cancel %s --reason enough", id);
    assert_string_equal(jstr(run, "status"), "cancelled");
    json_decref(run);
    run = ctl_json("run cancel %s", id); /* idempotent */
    assert_string_equal(jstr(run, "status"), "cancelled");
    json_decref(run);
    list = ctl_json("run list --status cancelled");
    assert_true(json_array_size(json_object_get(list, "runs")) >= 1);
    json_decref(list);

    assert_int_equal(ctl(&out, 1, "run get %s", id), 0); /* human output */
    assert_non_null(strstr(out, "cancelled"));
    free(out);
    free(id);
}

static void test_cli_tools_approvals_cluster(void **st)
{
    (void)st;
    if (dir == NULL)
        skip();
    char path[600];
    snprintf(path, sizeof path, "%s/tool.json", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("{\"name\": \"lookup\", \"description\": \"looks things up\", \"risk\": \"read\", \"kind\": \"http\","
          " \"input_schema\": {\"type\": \"object\", \"properties\": {\"q\": {\"type\": \"string\"}}},"
          " \"config\": {\"url\": \"http://127.0.0.1:9/lookup\", \"allow\": [\"127.0.0.1\"]}}\n",
          f);
    fclose(f);
    json_t *t = ctl_json("tool register %s", path);
    assert_string_equal(jstr(t, "name"), "lookup");
    assert_int_equal(json_integer_value(json_object_get(t, "version")), 1);
    assert_true(json_is_true(json_object_get(t, "enabled")));
    json_decref(t);

    json_t *list = ctl_json("tool list");
    json_t *tools = json_object_get(list, "tools");
    bool found = false;
    for (size_t i = 0; i < json_array_size(tools); i++)
        found |= strcmp(jstr(json_array_get(tools, i), "name"), "lookup") == 0;
    assert_true(found);
    json_decref(list);

    t = ctl_json("tool disable lookup");
    assert_true(json_is_false(json_object_get(t, "enabled")));
    json_decref(t);
    t = ctl_json("tool get lookup");
    assert_true(json_is_false(json_object_get(t, "enabled")));
    json_decref(t);
    t = ctl_json("tool enable lookup");
    assert_true(json_is_true(json_object_get(t, "enabled")));
    json_decref(t);
    assert_int_equal(ctl(NULL, 1, "tool disable no-such-tool 2>/dev/null"), 1);

    /* a bad tool: the server's validation (shared with HTTP) refuses it */
    snprintf(path, sizeof path, "%s/bad.json", dir);
    f = fopen(path, "w");
    fputs("{\"name\": \"bad name!\"}\n", f);
    fclose(f);
    assert_int_equal(ctl(NULL, 1, "tool register %s 2>/dev/null", path), 1);

    json_t *ap = ctl_json("approval list");
    assert_true(json_is_array(json_object_get(ap, "approvals")));
    json_decref(ap);
    assert_int_equal(ctl(NULL, 1, "approval approve no-such-approval 2>/dev/null"), 1);

    json_t *c = ctl_json("cluster status");
    assert_int_equal(json_integer_value(json_object_get(c, "leader")), 1);
    assert_int_equal(json_array_size(json_object_get(c, "nodes")), 1);
    json_decref(c);
}

/* run events --follow: the history, then live events (Subscribe and
 * EventPush), ending when the run does. */
static void test_follow(void **st)
{
    (void)st;
    if (dir == NULL)
        skip();
    json_t *run = ctl_json("run create --goal 'follow me' --model m1");
    char *id = strdup(jstr(run, "id"));
    json_decref(run);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s --server %s --token " TOKEN " --json run events %s --follow", getenv("TROUPECTL_BIN"),
             server, id);
    FILE *f = popen(cmd, "r");
    assert_non_null(f);
    char line[4096], last[4096] = "";
    assert_non_null(fgets(line, sizeof line, f)); /* history: run.created */
    json_t *ev = json_loads(line, 0, NULL);
    assert_non_null(ev);
    assert_string_equal(jstr(ev, "type"), "run.created");
    json_decref(ev);
    assert_int_equal(ctl(NULL, 1, "run cancel %s >/dev/null", id), 0);
    int lines = 1;
    while (fgets(line, sizeof line, f) != NULL) {
        snprintf(last, sizeof last, "%s", line);
        lines++;
    }
    int st2 = pclose(f);
    assert_true(WIFEXITED(st2) && WEXITSTATUS(st2) == 0);
    assert_true(lines >= 2);
    ev = json_loads(last, 0, NULL);
    assert_non_null(ev);
    assert_string_equal(jstr(ev, "type"), "run.cancelled");
    json_decref(ev);
    /* a subscription to a run that is over: its history, then the end */
    char *out;
    assert_int_equal(ctl(&out, 1, "run events %s --follow", id), 0);
    assert_non_null(strstr(out, "run.cancelled"));
    free(out);
    assert_int_equal(ctl(NULL, 1, "run events run_0000000000000001 --follow 2>/dev/null"), 1);
    free(id);
}

static void test_bad_frames(void **st)
{
    (void)st;
    if (dir == NULL)
        skip();
    size_t len;
    uint8_t *good = status_frame(41, 0, "TRP1", &len);

    /* truncated: the prefix matches what is sent, the buffer inside is cut */
    int fd = dial();
    {
        uint8_t *t = malloc(len);
        uint32_t half = (uint32_t)(len - 4) / 2;
        memcpy(t, &half, 4);
        memcpy(t + 4, good + 4, half);
        send_all(fd, t, 4 + half);
        free(t);
        struct answer a = read_answer(fd);
        assert_false(a.closed);
        assert_int_equal(a.error, troupe_proto_ErrorCode_BadRequest);
        assert_int_equal(a.id, 0);
        expect_serving(fd, 1);
    }

    /* wrong file identifier */
    {
        size_t n;
        uint8_t *f = status_frame(42, 0, "XXXX", &n);
        send_all(fd, f, n);
        free(f);
        struct answer a = read_answer(fd);
        assert_int_equal(a.error, troupe_proto_ErrorCode_BadRequest);
        expect_serving(fd, 2);
    }

    /* an unknown union tag */
    {
        size_t n;
        uint8_t *f = status_frame(43, 200, "TRP1", &n);
        send_all(fd, f, n);
        free(f);
        struct answer a = read_answer(fd);
        assert_int_equal(a.error, troupe_proto_ErrorCode_BadRequest);
        expect_serving(fd, 3);
    }

    /* an empty frame; an op whose table is empty (every field at its
     * default: ClusterVerify index 0 makes a checkpoint and answers this
     * node's digest there) */
    {
        uint32_t zero = 0;
        send_all(fd, &zero, 4);
        struct answer a = read_answer(fd);
        assert_int_equal(a.error, troupe_proto_ErrorCode_BadRequest);
        size_t n;
        uint8_t *f = status_frame(44, troupe_proto_Op_ClusterVerify, "TRP1", &n);
        send_all(fd, f, n);
        free(f);
        a = read_answer(fd);
        assert_int_equal(a.id, 44);
        assert_int_equal(a.error, 0);
        assert_int_equal(a.result_type, troupe_proto_Result_ClusterVerifyResult);
        expect_serving(fd, 4);
    }

    /* multiplexed: two requests in one write, each answered with its id */
    {
        size_t n1, n2;
        uint8_t *f1 = status_frame(70, 0, "TRP1", &n1), *f2 = status_frame(71, 0, "TRP1", &n2);
        uint8_t *both = malloc(n1 + n2);
        memcpy(both, f1, n1);
        memcpy(both + n1, f2, n2);
        send_all(fd, both, n1 + n2);
        free(both);
        free(f1);
        free(f2);
        struct answer a = read_answer(fd), b = read_answer(fd);
        assert_int_equal(a.error, 0);
        assert_int_equal(b.error, 0);
        assert_true((a.id == 70 && b.id == 71) || (a.id == 71 && b.id == 70));
    }

    /* without the token: Unauthorized, with the request's id */
    {
        struct tr_fb_builder b;
        tr_fb_builder_init(&b);
        troupe_proto_ClusterStatus_start(&b);
        tr_fb_ref op = troupe_proto_ClusterStatus_end(&b);
        troupe_proto_Request_start(&b);
        troupe_proto_Request_add_id(&b, 99);
        troupe_proto_Request_add_op_ClusterStatus(&b, op);
        tr_fb_ref rq = troupe_proto_Request_end(&b);
        troupe_proto_Frame_start(&b);
        troupe_proto_Frame_add_body_Request(&b, rq);
        troupe_proto_Frame_finish_sized(&b, troupe_proto_Frame_end(&b));
        size_t n;
        const uint8_t *d = tr_fb_builder_data(&b, &n);
        send_all(fd, d, n);
        tr_fb_builder_free(&b);
        struct answer a = read_answer(fd);
        assert_int_equal(a.id, 99);
        assert_int_equal(a.error, troupe_proto_ErrorCode_Unauthorized);
    }
    close(fd);

    /* oversized length prefix: an error, then the connection closes */
    fd = dial();
    {
        uint32_t big = (16u << 20) + 1;
        send_all(fd, &big, 4);
        struct answer a = read_answer(fd);
        assert_false(a.closed);
        assert_int_equal(a.error, troupe_proto_ErrorCode_TooLarge);
        expect_closed(fd);
    }
    close(fd);

    /* garbage (an HTTP request): its first bytes read as a huge length */
    fd = dial();
    {
        static const char http[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        send_all(fd, http, sizeof http - 1);
        struct answer a = read_answer(fd);
        if (!a.closed)
            assert_int_equal(a.error, troupe_proto_ErrorCode_TooLarge);
        expect_closed(fd);
    }
    close(fd);

    /* a frame cut short by the client leaving */
    fd = dial();
    {
        uint32_t n = 1000;
        send_all(fd, &n, 4);
        send_all(fd, good + 4, 10);
    }
    close(fd);

    /* the node keeps serving */
    fd = dial();
    expect_serving(fd, 5);
    close(fd);
    free(good);
    assert_int_equal(ctl(NULL, 1, "cluster status >/dev/null"), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cli_runs),
        cmocka_unit_test(test_cli_tools_approvals_cluster),
        cmocka_unit_test(test_follow),
        cmocka_unit_test(test_bad_frames),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
