/* A blocking-socket HTTP/1.1 test client that parses responses with
 * http-parser. Waits poll for a condition; the only clock is a generous
 * guard against hangs (a hang fails the test; no timing is asserted). */
#ifndef TR_TEST_TCLIENT_H
#define TR_TEST_TCLIENT_H

#include <stddef.h>

#include <http_parser.h>

#define TC_MAX_RESP 16

struct tc_resp {
    int status;
    char *body; /* malloc'd, NUL-terminated */
    size_t body_len;
    int chunks; /* body callbacks seen */
    int chunked;
};

struct tclient {
    int fd;
    http_parser p;
    struct tc_resp r[TC_MAX_RESP];
    int n;       /* complete responses */
    int eof;     /* the server closed (or reset) */
    char *raw;   /* everything received, NUL-terminated */
    size_t raw_len;
    int parse_error;
};

int tc_connect(struct tclient *c, int port);
void tc_send(struct tclient *c, const void *p, size_t n);
void tc_sends(struct tclient *c, const char *s);
/* Read until n complete responses or EOF; returns the number of responses. */
int tc_wait(struct tclient *c, int n);
/* Read until raw contains needle or EOF; returns 1 if found. */
int tc_wait_raw(struct tclient *c, const char *needle);
/* Read until EOF; returns 1 if EOF came. */
int tc_wait_eof(struct tclient *c);
void tc_close(struct tclient *c);

#endif
