/* The test client: see tclient.h. */
#include "tclient.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define GUARD_MS 60000

static int on_headers_complete(http_parser *p)
{
    struct tclient *c = p->data;
    if (c->n < TC_MAX_RESP) {
        c->r[c->n].status = p->status_code;
        c->r[c->n].chunked = (p->flags & F_CHUNKED) != 0;
    }
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    struct tclient *c = p->data;
    if (c->n >= TC_MAX_RESP)
        return 0;
    struct tc_resp *r = &c->r[c->n];
    r->body = realloc(r->body, r->body_len + len + 1);
    memcpy(r->body + r->body_len, at, len);
    r->body_len += len;
    r->body[r->body_len] = '\0';
    r->chunks++;
    return 0;
}

static int on_message_complete(http_parser *p)
{
    struct tclient *c = p->data;
    if (c->n < TC_MAX_RESP && !c->r[c->n].body) {
        c->r[c->n].body = calloc(1, 1);
    }
    c->n++;
    return 0;
}

static const http_parser_settings settings = {
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

int tc_connect(struct tclient *c, int port)
{
    struct sockaddr_in sa;
    memset(c, 0, sizeof(*c));
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        return -1;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(c->fd);
        c->fd = -1;
        return -1;
    }
    http_parser_init(&c->p, HTTP_RESPONSE);
    c->p.data = c;
    c->raw = calloc(1, 1);
    return 0;
}

void tc_send(struct tclient *c, const void *p, size_t n)
{
    const char *s = p;
    while (n > 0) {
        ssize_t w = send(c->fd, s, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return; /* the peer went away; reads will tell */
        }
        s += w;
        n -= (size_t)w;
    }
}

void tc_sends(struct tclient *c, const char *s)
{
    tc_send(c, s, strlen(s));
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Read once (waiting up to 50 ms); returns 0 when nothing new. */
static int tc_pump(struct tclient *c)
{
    struct pollfd pf = {.fd = c->fd, .events = POLLIN};
    char buf[65536];
    if (c->eof)
        return 0;
    if (poll(&pf, 1, 50) <= 0)
        return 0;
    ssize_t r = recv(c->fd, buf, sizeof(buf), 0);
    if (r < 0 && errno == EINTR)
        return 0;
    if (r <= 0) {
        c->eof = 1;
        http_parser_execute(&c->p, &settings, NULL, 0);
        return 1;
    }
    c->raw = realloc(c->raw, c->raw_len + (size_t)r + 1);
    memcpy(c->raw + c->raw_len, buf, (size_t)r);
    c->raw_len += (size_t)r;
    c->raw[c->raw_len] = '\0';
    if (!c->parse_error) {
        size_t n = http_parser_execute(&c->p, &settings, buf, (size_t)r);
        if (n != (size_t)r || HTTP_PARSER_ERRNO(&c->p) != HPE_OK)
            c->parse_error = 1;
    }
    return 1;
}

int tc_wait(struct tclient *c, int n)
{
    uint64_t end = now_ms() + GUARD_MS;
    while (c->n < n && !c->eof && now_ms() < end)
        tc_pump(c);
    return c->n;
}

int tc_wait_raw(struct tclient *c, const char *needle)
{
    uint64_t end = now_ms() + GUARD_MS;
    while (!strstr(c->raw, needle) && !c->eof && now_ms() < end)
        tc_pump(c);
    return strstr(c->raw, needle) != NULL;
}

int tc_wait_eof(struct tclient *c)
{
    uint64_t end = now_ms() + GUARD_MS;
    while (!c->eof && now_ms() < end)
        tc_pump(c);
    return c->eof;
}

void tc_close(struct tclient *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    for (int i = 0; i < TC_MAX_RESP; i++)
        free(c->r[i].body);
    free(c->raw);
    memset(c->r, 0, sizeof(c->r));
    c->raw = NULL;
}
