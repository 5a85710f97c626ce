/* Test harness for tests that run real processes: troupe nodes,
 * troupe-mockllm, troupe-toolserver. Loopback only; every process it starts
 * is tracked by PID and only those PIDs are ever signalled.
 *
 * Nothing here sleeps for a fixed time to "let things settle": waits poll a
 * condition (a port file appears, /healthz answers, a run is terminal) with
 * a generous guard against hangs. */
#ifndef TR_HARNESS_H
#define TR_HARNESS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

/* Paths of the programs under test, from the environment that ctest sets
 * (TROUPE_BIN, TROUPE_MOCKLLM_BIN, TROUPE_TOOLSERVER_BIN); NULL if unset. */
const char *h_bin(const char *which); /* "troupe", "mockllm", "toolserver" */

/* A fresh temporary directory (under /tmp), removed by h_tmpdir_remove. */
char *h_tmpdir(const char *tag);
void h_tmpdir_remove(char *dir);

/* A port that was free a moment ago on 127.0.0.1. */
int h_free_port(void);

/* ---- processes ------------------------------------------------------------------ */

struct h_proc {
    pid_t pid;
    char *log;          /* stdout+stderr go here */
    char **argv;        /* owned copies, for restarts */
    char **envp;        /* extra "K=V" entries, NULL-terminated (owned) */
};

/* Start argv[0] with argv and the current environment plus env (NULL-
 * terminated "K=V", may be NULL); output to log_path. Returns 0 or -1. */
int h_proc_start(struct h_proc *p, char *const argv[], char *const env[], const char *log_path);
/* Start it again with the same arguments (after it exited). */
int h_proc_restart(struct h_proc *p);
/* Send sig; with wait != 0 reap it too. Returns its wait status or -1. */
int h_proc_kill(struct h_proc *p, int sig, int wait);
/* SIGTERM, wait up to timeout_ms, then SIGKILL. Returns its wait status. */
int h_proc_stop(struct h_proc *p, int timeout_ms);
/* 1 while the process runs. */
int h_proc_alive(struct h_proc *p);
void h_proc_free(struct h_proc *p);
/* Print the last lines of the process log to stderr (for failures). */
void h_proc_dump_log(struct h_proc *p, int lines);

/* Wait until file exists and holds an integer (after an optional word);
 * returns it, or -1 after timeout_ms. */
int h_wait_port_file(const char *path, const char *word, int timeout_ms);

/* ---- HTTP ------------------------------------------------------------------------ */

struct h_resp {
    long status;        /* 0: no answer (connection refused, timeout) */
    char *body;         /* NUL-terminated */
    size_t len;
    json_t *json;       /* parsed body, or NULL */
    char raft_index[32];/* Troupe-Raft-Index header, if any */
};

/* One request. body may be NULL; headers NULL-terminated "Name: value". */
int h_http(struct h_resp *r, const char *method, const char *url, const char *body, const char *const *headers,
           long timeout_ms);
void h_resp_free(struct h_resp *r);

/* Poll GET url until it answers 200 or timeout_ms passes. */
int h_wait_http_ok(const char *url, int timeout_ms);

/* ---- troupe nodes ----------------------------------------------------------------- */

struct h_node {
    struct h_proc proc;
    uint64_t id;
    char *data;
    int raft_port;
    int http_port;
    char base[64];      /* "http://127.0.0.1:PORT" */
};

/* Start a single bootstrapped node in `data` with the given extra arguments
 * (NULL-terminated, may be NULL) and environment (may be NULL); waits for
 * /healthz to report ready. Returns 0 or -1 (log dumped). */
int h_node_start(struct h_node *n, const char *data, char *const extra_args[], char *const env[]);
/* Restart after a crash or stop, same ports and data; waits for ready. */
int h_node_restart(struct h_node *n);
void h_node_free(struct h_node *n);

/* POST /v1/runs with a JSON body (a format string); returns the run id
 * (caller frees) or NULL. */
char *h_create_run(struct h_node *n, const char *body_json, const char *idem_key);
/* GET /v1/runs/{id}; the parsed run object (caller decrefs) or NULL. */
json_t *h_get_run(struct h_node *n, const char *id);
/* Wait until the run's status is terminal; returns its status string copy
 * (caller frees) or NULL after timeout_ms. */
char *h_wait_run_terminal(struct h_node *n, const char *id, int timeout_ms);
/* GET /v1/runs/{id}/events: the array (caller decrefs) or NULL. */
json_t *h_get_events(struct h_node *n, const char *id);

/* ---- helper servers ------------------------------------------------------------------- */

/* troupe-mockllm with script file; fills base ("http://127.0.0.1:PORT/v1"). */
int h_mockllm_start(struct h_proc *p, const char *script, const char *dir, char *base, size_t cap);
/* troupe-toolserver; fills base ("http://127.0.0.1:PORT"); log_path gets one
 * JSON line per receipt (may be NULL). */
int h_toolserver_start(struct h_proc *p, const char *dir, const char *receipts, char *base, size_t cap);

/* Monotonic milliseconds. */
uint64_t h_now_ms(void);

#endif
