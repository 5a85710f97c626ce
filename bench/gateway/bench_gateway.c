/* Gateway benchmark: one node (runtime, RocksDB, one-voter raft, FSM and
 * gateway, in this process, as in `troupe`) and
 *   - gateway.get_run_rps: wrk (Debian's) against GET /v1/runs/{id},
 *     keep-alive, 8 connections, 2 threads;
 *   - gateway.sse_subscribers / sse_p50_ms / sse_p99_ms: sse_fanout (a
 *     separate process, one libuv loop) holds N Server-Sent Events streams
 *     of one run; this process appends E events to the run as its owner
 *     would (TR_MSG_STATE_APPEND, one at a time, every interval), stamping
 *     each seq's submission time (CLOCK_MONOTONIC) in a shared file first.
 *     Latency = arrival on a stream - submission: raft commit (fsync) +
 *     apply + the gateway's wake-up round + writing to every socket +
 *     loopback, per (stream, event). gateway.append_ack_p50_ms is the
 *     commit part alone (submission to the append's reply).
 *
 * usage: bench_gateway [--subscribers N] [--events E] [--interval-ms I]
 *                      [--wrk-seconds S] [--fanout PATH]
 * Defaults: 10,000 subscribers, 100 events one every 200 ms (50,000
 * deliveries a second; on 2 cores shared with the subscriber process, one
 * every 100 ms comes close to saturating them and the tail becomes
 * queueing), wrk for 5 s.
 * Prints "bench: <name> <value> <unit>" lines.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>

#include "fanout.h"
#include "gateway/gateway.h"
#include "raft/raft.h"
#include "schemas/journal_generated.h"

static struct tr_rt *rt;
static struct tr_state *state;
static struct tr_gateway *gw;
static tr_actor_id appender;
static char dir[64], raft_addr[32];
static int port, n_subs = 10000, n_events = 100, interval_ms = 200, wrk_s = 5;
static atomic_int phase, n_replies, n_bad;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- the node --------------------------------------------------------------------- */

static int appender_receive(struct tr_ctx *ctx, void *st, struct tr_msg *msg)
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
static const struct tr_behavior appender_behavior = { .name = "appender", .receive = appender_receive };

static void gw_closed(void *arg) { tr_state_close(state, NULL, NULL); }
static void close_hook(void *arg) { tr_gateway_close(gw, gw_closed, NULL); }

static void open_cb(struct tr_ctx *ctx, void *arg)
{
    struct tr_err err = { 0 };
    struct tr_state_opts so = { .node_id = 1, .data_dir = dir, .raft_address = raft_addr, .bootstrap = 1 };
    if (tr_state_open(ctx, &so, &state, &err) != TR_OK) {
        fprintf(stderr, "bench_gateway: state: %s\n", err.msg);
        atomic_store(&phase, -1);
        return;
    }
    struct tr_gateway_opts go = { .rt = rt, .state = state, .host = "127.0.0.1", .port = 0, .node_id = 1,
                                  .max_connections = (uint32_t)n_subs + 256 };
    if (tr_gateway_start(ctx, &go, &gw, &err) != TR_OK) {
        fprintf(stderr, "bench_gateway: gateway: %s\n", err.msg);
        tr_state_close(state, NULL, NULL);
        atomic_store(&phase, -1);
        return;
    }
    tr_rt_on_shutdown(ctx, close_hook, NULL);
    port = tr_gateway_port(gw);
    atomic_store(&phase, 1);
}

static int free_port(void)
{
    uv_loop_t l;
    uv_tcp_t t;
    struct sockaddr_in a;
    struct sockaddr_storage ss;
    int len = sizeof ss, p = -1;
    uv_loop_init(&l);
    uv_tcp_init(&l, &t);
    uv_ip4_addr("127.0.0.1", 0, &a);
    if (uv_tcp_bind(&t, (const struct sockaddr *)&a, 0) == 0 && uv_tcp_getsockname(&t, (struct sockaddr *)&ss, &len) == 0)
        p = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&l, UV_RUN_DEFAULT);
    uv_loop_close(&l);
    return p;
}

/* ---- HTTP ---------------------------------------------------------------------------- */

static size_t body_cb(char *p, size_t size, size_t n, void *ud)
{
    struct tr_buf *b = ud;
    tr_buf_add(b, p, size * n);
    return size * n;
}

static long http(const char *method, const char *path, const char *body, json_t **out)
{
    CURL *c = curl_easy_init();
    char url[512];
    struct tr_buf b = { 0 };
    long status = 0;
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, body_cb);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 30000L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    if (body != NULL)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c);
    if (out != NULL)
        *out = b.p != NULL ? json_loadb(b.p, b.len, 0, NULL) : NULL;
    tr_buf_free(&b);
    return status;
}

/* ---- appends ---------------------------------------------------------------------------- */

/* Append llm.completed (seq) with `size` bytes of content; returns once it is
 * submitted (the reply is counted in n_replies). */
static void submit_event(uint64_t run, const char *run_text, uint64_t seq, size_t size)
{
    char *content = malloc(size + 1);
    memset(content, 'x', size);
    content[size] = '\0';
    struct tr_fb_builder b;
    tr_fb_builder_init(&b);
    tr_fb_ref text = tr_fb_create_str(&b, content);
    tr_fb_ref model = tr_fb_create_str(&b, "bench");
    troupe_journal_LlmCompleted_start(&b);
    troupe_journal_LlmCompleted_add_step(&b, (uint32_t)seq);
    troupe_journal_LlmCompleted_add_model(&b, model);
    troupe_journal_LlmCompleted_add_content(&b, text);
    tr_fb_ref data = troupe_journal_LlmCompleted_end(&b);
    tr_fb_ref rid = tr_fb_create_str(&b, run_text);
    troupe_journal_Event_start(&b);
    troupe_journal_Event_add_seq(&b, seq);
    troupe_journal_Event_add_time_us(&b, (int64_t)time(NULL) * 1000000);
    troupe_journal_Event_add_run_id(&b, rid);
    troupe_journal_Event_add_epoch(&b, 1);
    troupe_journal_Event_add_data_type(&b, troupe_journal_Data_LlmCompleted);
    troupe_journal_Event_add_data(&b, data);
    troupe_journal_Event_finish(&b, troupe_journal_Event_end(&b));
    size_t len;
    const uint8_t *ev = tr_fb_builder_data(&b, &len);
    struct tr_append_msg h = { .run_id = run, .epoch = 1, .seq = seq, .len = (uint32_t)len };
    struct tr_msg *m = tr_msg_new(TR_MSG_USER + 1, (uint32_t)(sizeof h + len));
    memcpy(m->data, &h, sizeof h);
    memcpy(m->data + sizeof h, ev, len);
    tr_fb_builder_free(&b);
    free(content);
    if (tr_rt_send(rt, appender, m) != TR_OK) {
        tr_msg_free(m);
        atomic_fetch_add(&n_bad, 1);
        atomic_fetch_add(&n_replies, 1);
    }
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* ---- the benchmarks ---------------------------------------------------------------------- */

static void bench_get_run(const char *run_text)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "wrk -t2 -c8 -d%ds http://127.0.0.1:%d/v1/runs/%s 2>&1", wrk_s, port, run_text);
    FILE *f = popen(cmd, "r");
    if (f == NULL) {
        fprintf(stderr, "bench_gateway: cannot run wrk\n");
        return;
    }
    char line[512];
    double rps = -1;
    long non2xx = 0;
    while (fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, "Requests/sec:", 13) == 0)
            rps = strtod(line + 13, NULL);
        if (strstr(line, "Non-2xx") != NULL)
            non2xx = strtol(strchr(line, ':') + 1, NULL, 10);
    }
    int rc = pclose(f);
    if (rps < 0 || rc != 0 || non2xx != 0) {
        fprintf(stderr, "bench_gateway: wrk failed (rc %d, non-2xx %ld)\n", rc, non2xx);
        return;
    }
    printf("bench: gateway.get_run_rps %.0f req/s\n", rps);
    fflush(stdout);
}

static void bench_sse(uint64_t run, const char *run_text, const char *fanout)
{
    char shm_path[128];
    snprintf(shm_path, sizeof shm_path, "%s/fanout.shm", dir);
    int fd = open(shm_path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || ftruncate(fd, sizeof(struct fanout_shm)) != 0) {
        perror("bench_gateway: shm");
        return;
    }
    struct fanout_shm *shm = mmap(NULL, sizeof *shm, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (shm == MAP_FAILED) {
        perror("bench_gateway: mmap");
        return;
    }
    shm->after = 1; /* run.created */
    int out[2];
    if (pipe(out) != 0) {
        perror("bench_gateway: pipe");
        return;
    }
    char port_text[16], n_text[16];
    snprintf(port_text, sizeof port_text, "%d", port);
    snprintf(n_text, sizeof n_text, "%d", n_subs);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(out[1], 1);
        close(out[0]);
        close(out[1]);
        execl(fanout, fanout, "127.0.0.1", port_text, run_text, n_text, shm_path, (char *)NULL);
        _exit(127);
    }
    close(out[1]);
    /* Wait for the streams: until all are up, or no progress for 20 s. */
    uint64_t seen = 0, t_prog = now_ns();
    for (;;) {
        uint64_t c = __atomic_load_n(&shm->connected, __ATOMIC_ACQUIRE);
        if (c >= (uint64_t)n_subs)
            break;
        if (c != seen) {
            seen = c;
            t_prog = now_ns();
        }
        if (now_ns() - t_prog > 20000000000ull)
            break;
        uv_sleep(10);
    }
    fprintf(stderr, "bench_gateway: %llu streams open; appending %d events every %d ms\n",
            (unsigned long long)__atomic_load_n(&shm->connected, __ATOMIC_ACQUIRE), n_events, interval_ms);
    uint64_t *ack = calloc((size_t)n_events, sizeof *ack);
    int n_ack = 0;
    for (int i = 0; i < n_events; i++) {
        uint64_t seq = shm->after + 1 + (uint64_t)i;
        int want = atomic_load(&n_replies) + 1;
        uint64_t t0 = now_ns();
        __atomic_store_n(&shm->submit_ns[seq], t0, __ATOMIC_RELEASE);
        submit_event(run, run_text, seq, 200);
        while (atomic_load(&n_replies) < want)
            uv_sleep(0);
        ack[n_ack++] = now_ns() - t0;
        uint64_t until = t0 + (uint64_t)interval_ms * 1000000ull;
        while (now_ns() < until)
            uv_sleep(1);
    }
    __atomic_store_n(&shm->deadline_ns, now_ns() + 60000000000ull, __ATOMIC_RELEASE);
    __atomic_store_n(&shm->last_seq, shm->after + (uint64_t)n_events, __ATOMIC_RELEASE);
    FILE *f = fdopen(out[0], "r");
    char line[256];
    long subs = -1, p50 = -1, p99 = -1;
    long long received = 0, expected = 0;
    while (f != NULL && fgets(line, sizeof line, f) != NULL) {
        sscanf(line, "subscribers %ld", &subs);
        sscanf(line, "received %lld", &received);
        sscanf(line, "expected %lld", &expected);
        sscanf(line, "p50_us %ld", &p50);
        sscanf(line, "p99_us %ld", &p99);
    }
    if (f != NULL)
        fclose(f);
    int status;
    waitpid(pid, &status, 0);
    qsort(ack, (size_t)n_ack, sizeof *ack, cmp_u64);
    if (atomic_load(&n_bad) != 0)
        fprintf(stderr, "bench_gateway: %d appends failed\n", atomic_load(&n_bad));
    if (subs < 0 || p50 < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "bench_gateway: sse_fanout failed\n");
    } else {
        printf("bench: gateway.sse_subscribers %ld subscribers\n", subs);
        printf("bench: gateway.sse_p50_ms %.2f ms\n", p50 / 1000.0);
        printf("bench: gateway.sse_p99_ms %.2f ms\n", p99 / 1000.0);
        printf("bench: gateway.sse_delivered %.4f ratio\n", expected > 0 ? (double)received / (double)expected : 0.0);
        if (n_ack > 0)
            printf("bench: gateway.append_ack_p50_ms %.2f ms\n", (double)ack[n_ack / 2] / 1e6);
    }
    free(ack);
    munmap(shm, sizeof *shm);
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "subscribers", required_argument, NULL, 's' }, { "events", required_argument, NULL, 'e' },
        { "interval-ms", required_argument, NULL, 'i' }, { "wrk-seconds", required_argument, NULL, 'w' },
        { "fanout", required_argument, NULL, 'f' },       { NULL, 0, NULL, 0 },
    };
    char fanout[PATH_MAX];
    ssize_t self = readlink("/proc/self/exe", fanout, sizeof fanout - 32);
    if (self <= 0)
        return 2;
    fanout[self] = '\0';
    snprintf(strrchr(fanout, '/') + 1, 32, "sse_fanout");
    int c;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 's': n_subs = atoi(optarg); break;
        case 'e': n_events = atoi(optarg); break;
        case 'i': interval_ms = atoi(optarg); break;
        case 'w': wrk_s = atoi(optarg); break;
        case 'f': snprintf(fanout, sizeof fanout, "%s", optarg); break;
        default:
            fprintf(stderr, "usage: bench_gateway [--subscribers N] [--events E] [--interval-ms I] "
                            "[--wrk-seconds S] [--fanout PATH]\n");
            return 2;
        }
    }
    if (n_subs <= 0 || n_events <= 0 || n_events >= FANOUT_MAX_EVENTS - 2 || interval_ms < 0 || wrk_s <= 0)
        return 2;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);
    tr_log_set_level(TR_LOG_WARN);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    snprintf(dir, sizeof dir, "/tmp/troupe-bench-gw-XXXXXX");
    if (mkdtemp(dir) == NULL)
        return 1;
    snprintf(raft_addr, sizeof raft_addr, "127.0.0.1:%d", free_port());
    struct tr_rt_opts ro = { .schedulers = 2 };
    if (tr_rt_new(&ro, &rt) != TR_OK || tr_rt_start(rt) != TR_OK)
        return 1;
    struct tr_spawn_opts ao = { .behavior = &appender_behavior, .sched = 1 };
    if (tr_spawn(rt, &ao, &appender) != TR_OK || tr_rt_call(rt, 0, open_cb, NULL, NULL) != TR_OK)
        return 1;
    while (atomic_load(&phase) == 0)
        uv_sleep(1);
    int rc = 1;
    if (atomic_load(&phase) != 1)
        goto out;
    for (int i = 0; i < 3000; i++) {
        json_t *j = NULL;
        long st = http("GET", "/healthz", NULL, &j);
        const char *role = json_string_value(json_object_get(j, "role"));
        bool leader = st == 200 && role != NULL && strcmp(role, "leader") == 0;
        json_decref(j);
        if (leader)
            break;
        uv_sleep(10);
    }
    json_t *run = NULL;
    if (http("POST", "/v1/runs", "{\"goal\":\"gateway bench\"}", &run) != 201) {
        fprintf(stderr, "bench_gateway: cannot create a run\n");
        json_decref(run);
        goto out;
    }
    char run_text[TR_RUN_ID_TEXT_LEN];
    snprintf(run_text, sizeof run_text, "%s", json_string_value(json_object_get(run, "id")));
    json_decref(run);
    uint64_t run_id;
    if (tr_run_id_from_text(run_text, strlen(run_text), &run_id) != TR_OK)
        goto out;
    bench_get_run(run_text);
    bench_sse(run_id, run_text, fanout);
    rc = 0;
out:
    tr_rt_shutdown(rt);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "bench_gateway: could not remove %s\n", dir);
    curl_global_cleanup();
    return rc;
}
