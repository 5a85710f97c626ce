/* Test helpers: a real troupe-toolserver process on an ephemeral loopback
 * port (found through its port file, polled, never slept on), and blocking
 * libcurl calls to it from the test thread. Only the PID started here is
 * ever signalled. */
#ifndef TR_TESTS_TOOLS_TSRV_H
#define TR_TESTS_TOOLS_TSRV_H

#include <stddef.h>
#include <sys/types.h>

#include <jansson.h>

struct toolsrv {
    pid_t pid;
    int port;
    char dir[256];
    char log[300];
};

/* Start bin (troupe-toolserver); 0 when it is listening. */
int toolsrv_start(struct toolsrv *s, const char *bin);
/* SIGTERM, wait; 0 when it exited cleanly with status 0. Removes its files. */
int toolsrv_stop(struct toolsrv *s);

/* A blocking request to the server; returns the HTTP status (0 on a
 * transport error) and the body (malloc'd, NUL-terminated) in *body. */
long toolsrv_http(const struct toolsrv *s, const char *method, const char *path, const char *key,
                  const char *body, char **out);
/* GET path and parse the JSON answer (NULL on failure). */
json_t *toolsrv_get_json(const struct toolsrv *s, const char *path);
/* An integer field of GET /_stats (-1 on failure). */
long long toolsrv_stat(const struct toolsrv *s, const char *field);
/* How many lines of the receipt log name key with this receipt kind
 * ("first", "resend" or NULL for any). */
int toolsrv_log_count(const struct toolsrv *s, const char *key, const char *receipt);

#endif
