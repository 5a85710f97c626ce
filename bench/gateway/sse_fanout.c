/* SSE fan-out subscriber driver: N Server-Sent Events streams of one run in
 * one process on one libuv loop, timing each event's arrival on each stream.
 *
 * usage: sse_fanout HOST PORT RUN_ID N SHM_FILE
 *
 * SHM_FILE is a struct fanout_shm (fanout.h) shared with the bench's driver
 * (bench_gateway.c), which appends the events: for each seq it stores the
 * CLOCK_MONOTONIC time at which it submitted the append, BEFORE submitting
 * it. Latency of (stream, seq) = arrival of "id: seq" on the stream - that
 * submission time. So it covers the raft commit (fsync) and apply, the
 * gateway's wake-up round and the write to each socket, and the loopback.
 *
 * Happy path: connect N sockets, at most CONNECT_WINDOW in flight (the
 * listen backlog is 511) -> each sends GET /v1/runs/{id}/events with
 * Accept: text/event-stream and ?after=<shm->after> (live events only) ->
 * shm->connected counts streams whose 200 arrived -> the driver appends ->
 * every "id: N" seen records a latency -> when shm->last_seq is set and
 * every stream has seen it (or shm->deadline passes) we print the figures.
 *
 * Output (stdout, one per line): "subscribers N", "received N", "expected N",
 * "p50_us X", "p99_us X", "max_us X".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <uv.h>

#include "fanout.h"

#define CONNECT_WINDOW 256

struct sub {
    uv_tcp_t tcp;
    uv_connect_t creq;
    uv_write_t wreq;
    int ok;          /* got the 200 */
    int closed;
    uint64_t last;   /* last seq seen */
    int st;          /* scan(): 0 line start, 1-3 "id:" so far, 4 digits, 5 another line */
    uint64_t v;
    int digits;
    char hdr[8];     /* "HTTP/1.1 200" prefix check */
    size_t hdr_len;
};

static struct fanout_shm *shm;
static struct sub *subs;
static int n_subs, next_connect, in_flight, n_connected, n_done;
static struct sockaddr_in addr;
static char request[512];
static size_t request_len;
static uint32_t *lat_us;
static size_t n_lat, cap_lat;
static uv_loop_t *loop;
static uv_timer_t watch;
static char rbuf[1 << 16];

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void start_connects(void);

static void alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    b->base = rbuf;
    b->len = sizeof rbuf;
}

static void closed_cb(uv_handle_t *h) {}

static void sub_close(struct sub *s)
{
    if (s->closed)
        return;
    s->closed = 1;
    uv_close((uv_handle_t *)&s->tcp, closed_cb);
}

static void on_id(struct sub *s, uint64_t seq)
{
    uint64_t t = now_ns();
    if (seq <= s->last || seq >= FANOUT_MAX_EVENTS)
        return;
    s->last = seq;
    uint64_t t0 = shm->submit_ns[seq];
    if (t0 != 0 && t >= t0) {
        if (n_lat == cap_lat) {
            cap_lat = cap_lat ? 2 * cap_lat : 1 << 16;
            lat_us = realloc(lat_us, cap_lat * sizeof *lat_us);
        }
        lat_us[n_lat++] = (uint32_t)((t - t0) / 1000);
    }
    if (shm->last_seq != 0 && seq >= shm->last_seq)
        n_done++;
}

/* A line-start state machine: "id: <digits>\n" lines are event ids. */
static void scan(struct sub *s, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (c == '\n') {
            if (s->st == 4 && s->digits > 0)
                on_id(s, s->v);
            s->st = 0;
            continue;
        }
        switch (s->st) {
        case 0: s->st = c == 'i' ? 1 : 5; break;
        case 1: s->st = c == 'd' ? 2 : 5; break;
        case 2: s->st = c == ':' ? 3 : 5; break;
        case 3:
            s->st = c == ' ' ? 4 : 5;
            s->v = 0;
            s->digits = 0;
            break;
        case 4:
            if (c >= '0' && c <= '9') {
                s->v = s->v * 10 + (uint64_t)(c - '0');
                s->digits++;
            } else {
                s->st = 5;
            }
            break;
        default: break;
        }
    }
}

static void read_cb(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    struct sub *s = st->data;
    if (n < 0) {
        sub_close(s);
        return;
    }
    const char *p = b->base;
    size_t len = (size_t)n;
    if (!s->ok) {
        while (s->hdr_len < 12 && len > 0) {
            if (s->hdr_len < sizeof s->hdr)
                s->hdr[s->hdr_len] = *p;
            s->hdr_len++;
            p++;
            len--;
        }
        if (s->hdr_len < 12)
            return;
        if (memcmp(s->hdr, "HTTP/1.1", 8) != 0) {
            sub_close(s);
            return;
        }
        s->ok = 1;
        n_connected++;
        __atomic_store_n(&shm->connected, (uint64_t)n_connected, __ATOMIC_RELEASE);
    }
    scan(s, p, len);
}

static void write_cb(uv_write_t *w, int status)
{
    struct sub *s = w->data;
    if (status != 0)
        sub_close(s);
}

static void connect_cb(uv_connect_t *c, int status)
{
    struct sub *s = c->data;
    in_flight--;
    if (status != 0) {
        fprintf(stderr, "sse_fanout: connect: %s\n", uv_strerror(status));
        sub_close(s);
    } else {
        s->tcp.data = s;
        uv_buf_t b = uv_buf_init(request, (unsigned)request_len);
        s->wreq.data = s;
        if (uv_write(&s->wreq, (uv_stream_t *)&s->tcp, &b, 1, write_cb) != 0 ||
            uv_read_start((uv_stream_t *)&s->tcp, alloc_cb, read_cb) != 0)
            sub_close(s);
    }
    start_connects();
}

static void start_connects(void)
{
    while (next_connect < n_subs && in_flight < CONNECT_WINDOW) {
        struct sub *s = &subs[next_connect++];
        uv_tcp_init(loop, &s->tcp);
        s->tcp.data = s;
        s->creq.data = s;
        if (uv_tcp_connect(&s->creq, &s->tcp, (const struct sockaddr *)&addr, connect_cb) != 0) {
            sub_close(s);
            continue;
        }
        in_flight++;
    }
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static void watch_cb(uv_timer_t *t)
{
    uint64_t last = __atomic_load_n(&shm->last_seq, __ATOMIC_ACQUIRE);
    bool over = shm->deadline_ns != 0 && now_ns() > shm->deadline_ns;
    if (last != 0 && n_done < n_connected) {
        /* Streams that saw last before it was published were not counted. */
        n_done = 0;
        for (int i = 0; i < n_subs; i++)
            n_done += subs[i].ok && subs[i].last >= last;
    }
    if (!(last != 0 && n_done >= n_connected) && !over)
        return;
    uv_timer_stop(t);
    uv_close((uv_handle_t *)t, NULL);
    for (int i = 0; i < n_subs; i++)
        if (!subs[i].closed && next_connect > i)
            sub_close(&subs[i]);
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: sse_fanout HOST PORT RUN_ID N SHM_FILE\n");
        return 2;
    }
    n_subs = atoi(argv[4]);
    int fd = open(argv[5], O_RDWR);
    if (fd < 0 || n_subs <= 0) {
        perror("sse_fanout: shm");
        return 2;
    }
    shm = mmap(NULL, sizeof *shm, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (shm == MAP_FAILED) {
        perror("sse_fanout: mmap");
        return 2;
    }
    if (uv_ip4_addr(argv[1], atoi(argv[2]), &addr) != 0) {
        fprintf(stderr, "sse_fanout: bad address\n");
        return 2;
    }
    request_len = (size_t)snprintf(request, sizeof request,
                                   "GET /v1/runs/%s/events?after=%llu HTTP/1.1\r\nHost: bench\r\n"
                                   "Accept: text/event-stream\r\n\r\n",
                                   argv[3], (unsigned long long)shm->after);
    subs = calloc((size_t)n_subs, sizeof *subs);
    loop = uv_default_loop();
    uv_timer_init(loop, &watch);
    uv_timer_start(&watch, watch_cb, 10, 10);
    start_connects();
    uv_run(loop, UV_RUN_DEFAULT);
    size_t expected = 0;
    uint64_t last = shm->last_seq;
    if (last > shm->after)
        expected = (size_t)n_connected * (size_t)(last - shm->after);
    qsort(lat_us, n_lat, sizeof *lat_us, cmp_u32);
    printf("subscribers %d\nreceived %zu\nexpected %zu\n", n_connected, n_lat, expected);
    if (n_lat > 0)
        printf("p50_us %u\np99_us %u\nmax_us %u\n", lat_us[n_lat / 2], lat_us[(size_t)((double)n_lat * 0.99)],
               lat_us[n_lat - 1]);
    free(lat_us);
    free(subs);
    uv_loop_close(loop);
    munmap(shm, sizeof *shm);
    return 0;
}
