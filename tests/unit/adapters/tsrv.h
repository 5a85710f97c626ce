/* A test HTTP server built on tr_httpd, running its own loop on its own thread.
 *
 * Routes (all GET unless said):
 *   /hello?i=N          200 "hello N"
 *   POST /echo          200 with the request body
 *   /delay?ms=M&i=N     200 "delayed N" after M ms (an async answer)
 *   /big?n=N            200 with N bytes of 'x'
 *   /stream?n=N&ms=M    chunked: N chunks "chunk I\n", one every M ms
 *   /sse                raw stream: "data: tick\n\n" every 5 ms until the client leaves
 *   /flood              chunked, 64 KiB per 1 ms tick until the connection drops
 *   /upgrade            101, then the socket answers "upgraded:" + bytes read past the request
 *   anything else       404
 */
#ifndef TR_TEST_TSRV_H
#define TR_TEST_TSRV_H

#include <stdatomic.h>

#include "runtime/runtime.h"

struct tsrv {
    uv_loop_t loop;
    uv_async_t wake;
    uv_thread_t thread;
    uv_sem_t ready;
    struct tr_httpd *httpd;
    struct tr_httpd_opts opts;
    int port;
    int start_rv;
    atomic_int stopping;
    atomic_ullong requests; /* requests handled by a route */
    atomic_ullong hello;    /* /hello requests */
    atomic_ullong gone;     /* close callbacks of unfinished requests */
    atomic_ullong streams_ended;
    atomic_uint max_conns;  /* most connections open at once, seen at requests */
    atomic_uint conns_seen; /* connections open at the latest request */
    struct tr_httpd_stats stats; /* copied at stop */
};

/* Start with opts (on_request/ud are filled in by tsrv). 0 or an error. */
int tsrv_start(struct tsrv *s, const struct tr_httpd_opts *opts);
/* Close the server and every connection, join the thread. */
void tsrv_stop(struct tsrv *s);

#endif
