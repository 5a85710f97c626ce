/* Private helpers shared by the I/O adapters (http.c, proc.c, httpd.c).
 * Not for use outside runtime/. */
#ifndef TR_RUNTIME_ADAPTERS_H
#define TR_RUNTIME_ADAPTERS_H

#include <stdint.h>

/* Writes to a closed pipe or socket must fail with EPIPE, not kill the
 * process: set SIGPIPE to ignored unless the application chose a handler.
 * Thread-safe; does its work once per process. */
void tr__sigpipe_ignore(void);

/* The HTTP client's counters for the calling actor's scheduler (all zero
 * before its first request). Call from an actor callback. For tests. */
struct tr__http_stats {
    uint64_t polls_created;  /* uv_poll_t handles initialised */
    uint64_t polls_open;     /* of those, not closed yet: one per tracked socket */
    uint64_t sockets_closed; /* connection sockets closed through curl's close callback */
    uint64_t easy_created;   /* curl easy handles made (the others were reused) */
};
struct tr_ctx;
void tr__http_stats(struct tr_ctx *ctx, struct tr__http_stats *out);

#endif
