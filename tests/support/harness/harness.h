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

/* A port that was free a moment ago on 127.0.0.1, and not one this process
 * was given before (so listeners chosen one after another never collide). */
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

/* ---- troupe clusters (cluster.c) ---------------------------------------------------
 * n real troupe processes forming one cluster: node i (0-based here, raft id
 * i + 1) in DIR/n<i+1> with its log in DIR/n<i+1>.log. Node 1 bootstraps,
 * the others join it one at a time; a restart reuses ports and data. */

#define H_CLUSTER_MAX 7

enum h_node_state { H_NODE_DOWN = 0, H_NODE_RUNNING, H_NODE_STOPPED /* SIGSTOP */ };

struct h_cluster_opts {
    int n;                            /* nodes, 1..H_CLUSTER_MAX */
    unsigned failure_timeout_ms;      /* --failure-timeout; 0: the node's default */
    unsigned election_timeout_ms;     /* --election-timeout; 0: default */
    unsigned heartbeat_ms;            /* --heartbeat; 0: default */
    unsigned capacity;                /* --max-active-runs; 0: default */
    int schedulers;                   /* --schedulers; 0: default */
    char *const *env;                 /* extra "K=V" for every node (NULL-terminated, may be NULL) */
    char *const *args;                /* extra arguments for every node (likewise) */
    const char *hosts[H_CLUSTER_MAX]; /* address node i binds and advertises; NULL: 127.0.0.1 */
    const char *netns[H_CLUSTER_MAX]; /* network namespace file to start node i in; NULL: ours */
};

struct h_cluster_node {
    struct h_proc proc;
    uint64_t id;                      /* raft id: index + 1 */
    char *data;
    char host[64];
    int raft_port, peer_port, client_port, http_port;
    char base[96];                    /* "http://HOST:PORT" */
    char *netns;
    enum h_node_state state;
};

struct h_cluster {
    int n;
    char *dir;
    struct h_cluster_opts opts;       /* env and args are owned copies */
    struct h_cluster_node nodes[H_CLUSTER_MAX];
};

/* Start the cluster in dir (which exists) and wait until every node is
 * ready and listed by node 1. Returns 0 or -1 (logs dumped); call
 * h_cluster_free either way. */
int h_cluster_start(struct h_cluster *c, const char *dir, const struct h_cluster_opts *o);
struct h_cluster_node *h_cluster_node(struct h_cluster *c, int i);
/* SIGKILL node i and reap it (also when stopped). */
int h_cluster_kill(struct h_cluster *c, int i);
/* Start a killed node again; with timeout_ms > 0 wait until it is ready. */
int h_cluster_restart(struct h_cluster *c, int i, int timeout_ms);
/* SIGSTOP / SIGCONT node i. */
int h_cluster_stop(struct h_cluster *c, int i);
int h_cluster_cont(struct h_cluster *c, int i);
/* Wait until node i (i < 0: every running node) reports ready on /healthz. */
int h_cluster_wait_ready(struct h_cluster *c, int i, int timeout_ms);
/* The index of the leader every running node agrees on, or -1 after timeout_ms. */
int h_cluster_leader(struct h_cluster *c, int timeout_ms);
/* GET path on node i: the parsed 200 answer (caller decrefs) or NULL. */
json_t *h_cluster_get(struct h_cluster *c, int i, const char *path);
/* GET /v1/cluster on node i (caller decrefs) or NULL. */
json_t *h_cluster_info(struct h_cluster *c, int i);
/* Node i's state digest (hex) and the index it was taken at. */
int h_cluster_digest(struct h_cluster *c, int i, char *hex, size_t cap, uint64_t *applied);
/* Wait until every running node answers the same digest at the same index
 * (the cluster is idle and converged); the digest into digest (may be NULL). */
int h_cluster_wait_converged(struct h_cluster *c, int timeout_ms, char *digest, size_t cap);
void h_cluster_dump_logs(struct h_cluster *c, int lines);
/* Stop every node (SIGTERM, then SIGKILL) and free everything. */
void h_cluster_free(struct h_cluster *c);

/* Monotonic milliseconds. */
uint64_t h_now_ms(void);

#endif
