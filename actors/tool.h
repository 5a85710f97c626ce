/* actors/tool.h — private to actors/: the tool executor (TR_MSG_TOOL_CALL).
 *
 * The executor actor (tool.c) parses a call, picks the kind's runner and
 * answers exactly once. The runners keep their pure parts here so tests can
 * reach them without a runtime:
 *   tool_http.c     config, URL host extraction, allowlist decision
 *   tool_sandbox.c  config and the sandbox command line (bwrap / gVisor)
 *
 * Decisions (also in docs for users of the tools API):
 *  - Allowlist. An http tool's host must equal (after normalisation: lower
 *    case, IPv6 brackets and zone dropped, one trailing dot dropped) an entry
 *    of config.allow. A tool without an allow list (missing or empty) falls
 *    back to the node's list (struct tool_opts.node_allow), which is empty by
 *    default: such a tool is refused everything. Ports are not part of the
 *    match. The check runs on the URL as curl parses it, and the request is
 *    made with curl's own re-serialisation of that parse, so the host checked
 *    is the host connected to. Redirects are never followed.
 *  - Retries. Connection failures (refused, reset, empty reply) and 5xx
 *    answers are tried again, up to tool_opts.attempts in all (default 3),
 *    after backoff_ms, 4x backoff_ms, ... plus up to 50% jitter, always with
 *    the same Idempotency-Key. tool.timeout_ms bounds the whole call, retries
 *    and backoff included: a retry that cannot fit is not made. Timeouts are
 *    not retried (the deadline is spent).
 */
#ifndef TR_ACTORS_TOOL_H
#define TR_ACTORS_TOOL_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "actors/actors.h"

#define TOOL_MAX_RESULT_DEFAULT (1024u * 1024)   /* result bytes kept */
#define TOOL_TIMEOUT_DEFAULT_MS 30000u
#define TOOL_TIMEOUT_MAX_MS (10u * 60 * 1000)
#define TOOL_MAX_REQUEST (8u * 1024 * 1024)      /* TR_MSG_TOOL_CALL payload */
#define TOOL_MAX_HOST 256
#define TOOL_MAX_URL 8192
#define TOOL_MAX_HEADERS 32
#define TOOL_MAX_HEADER_LINE 8192
#define TOOL_MAX_ALLOW 256
#define TOOL_MAX_KEY 128                         /* idempotency key hex digits */
#define TOOL_MAX_ARGV 256
#define TOOL_MAX_ARG_BYTES (256u * 1024)         /* sum over a sandbox argv */

/* Private message type: a retry backoff timer of the executor itself. */
#define TOOL_MSG_RETRY (TR_MSG_TOOL_CALL + 5)

/* Knobs of one executor. Zero fields take the defaults. The struct and
 * everything it points to must outlive the actor (tool_spawn_opts). */
struct tool_opts {
    const struct tr_node_env *env;
    const char *const *node_allow; /* hosts for http tools without their own list */
    size_t n_node_allow;
    uint32_t attempts;             /* http attempts in all; 0 = 3 */
    uint32_t backoff_ms;           /* first retry delay; 0 = 200 */
    size_t max_result;             /* result bytes kept; 0 = 1 MiB */
    uint32_t max_inflight;         /* concurrent calls; more are refused; 0 = 1024 */
    const char *bwrap;             /* program names; NULL = "bwrap", "runsc" */
    const char *runsc;
    uint64_t *cfg_parses;          /* tests: counts http configs parsed (not found
                                      among the last 64 distinct ones); may be NULL */
};

/* tr_tool_spawn with explicit knobs (tests). */
int tool_spawn_opts(struct tr_rt *rt, const struct tool_opts *opts, int sched, tr_actor_id *out);

/* ------------------------------------------------------------------------ */
/* http                                                                       */

enum { TOOL_HTTP_ALLOWED = 0, TOOL_HTTP_REFUSED = 1 };

struct tool_http_cfg {
    char *url;                 /* curl's re-serialisation of config.url */
    char host[TOOL_MAX_HOST];  /* normalised host of url */
    char method[8];            /* POST, PUT, PATCH or DELETE */
    char **headers;            /* "Name: value", n_headers of them */
    size_t n_headers;
    char **allow;              /* normalised entries of config.allow */
    size_t n_allow;
};

/* Normalise a host name or IP literal for comparison: lower case, without
 * IPv6 brackets or zone id, without one trailing dot. TR_EINVAL for an empty
 * or over-long name, or one with characters no host has. */
int tool_host_normalize(const char *in, char *out, size_t cap);

/* Parse an http(s) URL with curl_url(). On success *host is the normalised
 * host and, when norm_url is not NULL, *norm_url (tr_free) is curl's
 * re-serialisation of the URL. Other schemes, missing hosts and malformed
 * URLs are TR_EINVAL with a message in err. */
int tool_url_host(const char *url, char *host, size_t cap, char **norm_url, struct tr_err *err);

/* TOOL_HTTP_ALLOWED when host (normalised) equals one of allow[0..n). */
int tool_host_allowed(const char *host, char *const *allow, size_t n);

/* Parse config (a user's JSON, may be anything). On error *cfg holds
 * nothing and err says which field is wrong. */
int tool_http_cfg_parse(const json_t *config, struct tool_http_cfg *cfg, struct tr_err *err);
void tool_http_cfg_free(struct tool_http_cfg *cfg);

/* The allowlist decision for cfg: its own list, else node_allow. Returns
 * TOOL_HTTP_ALLOWED, or TOOL_HTTP_REFUSED with the reason in err. */
int tool_http_decide(const struct tool_http_cfg *cfg, const char *const *node_allow, size_t n_node_allow,
                     struct tr_err *err);

/* ------------------------------------------------------------------------ */
/* sandbox                                                                    */

enum tool_sandbox_runtime { TOOL_SANDBOX_BWRAP = 0, TOOL_SANDBOX_GVISOR };

struct tool_sandbox_cfg {
    enum tool_sandbox_runtime runtime;
    char **argv;   /* the program inside the sandbox; NULL-terminated */
    size_t argc;
};

/* config: {"command": [str, ...]} or {"language": "python"|"sh", "code": str},
 * optional "runtime": "bwrap" (default) | "gvisor". */
int tool_sandbox_cfg_parse(const json_t *config, struct tool_sandbox_cfg *cfg, struct tr_err *err);
void tool_sandbox_cfg_free(struct tool_sandbox_cfg *cfg);

/* The full command line that runs cfg's program in its sandbox, NULL-
 * terminated; free with tool_argv_free. prog names bwrap or runsc. */
char **tool_sandbox_argv(const struct tool_sandbox_cfg *cfg, const char *prog);
void tool_argv_free(char **argv);

/* The environment a sandboxed program gets (static, NULL-terminated). */
char *const *tool_sandbox_env(void);

/* ------------------------------------------------------------------------ */
/* shared                                                                     */

/* data[0..len) with invalid UTF-8 and NUL bytes as U+FFFD: a tr_malloc'd,
 * NUL-terminated copy and its length in *out_len, or NULL when data needs no
 * repair (use it as it is). */
char *tool_text_repair(const void *data, size_t len, size_t *out_len);
/* A JSON string of data[0..len), repaired as above, so any body can be
 * carried. Never NULL. */
json_t *tool_json_text(const void *data, size_t len);

#endif /* TR_ACTORS_TOOL_H */
