/* The fixture of the run behaviour tests (issue 4): one troupe node, one
 * troupe-mockllm and one troupe-toolserver on loopback in a fresh temporary
 * directory, the toolserver's tools registered as http tools, and helpers
 * that read runs, journals and the helpers' counters.
 *
 * Every wait polls a condition with a guard against hangs; nothing sleeps a
 * fixed time. Only the processes started here are ever signalled. */
#ifndef TR_IT_RUN_FIXTURE_H
#define TR_IT_RUN_FIXTURE_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "harness.h"

/* Guards against hangs (never expected to be reached). */
#define FX_WAIT_MS 60000

struct fx {
    char *dir;
    struct h_proc mock, tools;
    char mock_base[128];   /* http://127.0.0.1:P/v1 */
    char mock_root[128];   /* http://127.0.0.1:P */
    char tools_base[128];  /* http://127.0.0.1:P */
    struct h_node node;
    bool node_up;
};

/* Start the three processes; node_args: extra troupe options (NULL-
 * terminated, may be NULL). Registers the tools echo, add, pay (payment,
 * irreversible), slow (sleep, timeout_ms 300) and nap (sleep, timeout_ms
 * 30000). Returns 0 or -1 (logs dumped). */
int fx_start(struct fx *f, const char *tag, char *const node_args[]);
/* Stop the node with SIGTERM and check that it exited 0 and that no
 * sanitizer report is in any log; stop the helpers; remove the directory
 * (unless TROUPE_KEEP_TMP). Returns 0 when the node shut down cleanly. */
int fx_stop(struct fx *f);

/* POST /v1/runs for script `script` (a [mock:script] marker in the system
 * prompt) with goal and the agent's tools (a JSON array text, may be NULL) and
 * extra agent fields (JSON object members without braces, e.g.
 * "\"max_steps\": 2", may be NULL). Returns the run id (caller frees). */
char *fx_run(struct fx *f, const char *script, const char *goal, const char *tools, const char *extra);

/* The run object (caller decrefs), NULL on failure. */
json_t *fx_get_run(struct fx *f, const char *id);
/* Poll until the run's status is `status`; 0 or -1 after FX_WAIT_MS. */
int fx_wait_status(struct fx *f, const char *id, const char *status);
/* Poll until the run is terminal; its status (caller frees) or NULL. */
char *fx_wait_terminal(struct fx *f, const char *id);
/* The journal as a JSON array (caller decrefs). */
json_t *fx_events(struct fx *f, const char *id);
/* Poll until the journal holds `n`-th (1-based) event of type `type`; that
 * event (new reference) or NULL after FX_WAIT_MS. */
json_t *fx_wait_event(struct fx *f, const char *id, const char *type, int n);
/* How many events of `type` the journal holds. */
int fx_count(json_t *events, const char *type);
/* The k-th (0-based) event of `type` (borrowed) or NULL. */
json_t *fx_nth(json_t *events, const char *type, int k);
/* The journal's types joined by spaces (caller frees), for messages. */
char *fx_types(json_t *events);
/* 1 when the types of events are exactly `expected` (NULL-terminated); prints
 * both lists when not. */
int fx_types_equal(json_t *events, const char *const *expected);
/* seq is 1..N without gaps, every run_id is id. */
int fx_seq_ok(json_t *events, const char *id);

/* GET or POST on one of the servers; the parsed body (caller decrefs) or
 * NULL; *status the HTTP status when not NULL. */
json_t *fx_call(const char *method, const char *url, const char *body, long *status);
/* GET /_stats of the toolserver. */
json_t *fx_tool_stats(struct fx *f);
/* GET /_keys/<key> of the toolserver; NULL when it never saw the key. */
json_t *fx_tool_key(struct fx *f, const char *key);
/* GET /_mock/stats of the mockllm. */
json_t *fx_mock_stats(struct fx *f);
/* A short pause between two polls. */
void fx_pause(void);
/* An integer member (0 when absent). */
long long fx_int(json_t *o, const char *name);
/* A string member or "". */
const char *fx_str(json_t *o, const char *name);
/* data.<name> of an event as a string or "". */
const char *fx_data_str(json_t *ev, const char *name);
long long fx_data_int(json_t *ev, const char *name);

#endif
