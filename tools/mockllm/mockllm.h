/* troupe-mockllm's core: scripts, request parsing, and the replies it makes.
 *
 * Everything here is pure: no sockets, no clock, no filesystem except
 * mock_scripts_load. The server (server.c) feeds each HTTP request to
 * mock_engine_handle with the current time and carries out the reply it gets
 * back (delay, status, headers, body or stream events, early close).
 *
 * Step selection is stateless: a request's script comes from a `[mock:NAME]`
 * marker in its system prompt and its step from the number of assistant
 * messages it carries. The only state is the fail_first attempt counters
 * (keyed by a hash of the messages array), the statistics and the down flag.
 *
 * Not thread-safe: one engine belongs to one loop.
 */
#ifndef TR_MOCKLLM_H
#define TR_MOCKLLM_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "runtime/runtime.h"

/* ------------------------------------------------------------------------ */
/* Scripts.                                                                  */

enum mock_malformed {
    MOCK_MAL_NONE = 0,
    MOCK_MAL_BAD_JSON,      /* body (or one stream chunk) is not JSON */
    MOCK_MAL_TRUNCATED,     /* connection closed mid-body */
    MOCK_MAL_UNKNOWN_TOOL,  /* tool calls name a tool that was not offered */
    MOCK_MAL_BAD_ARGUMENTS, /* arguments string is not JSON */
    MOCK_MAL_EMPTY_CHOICES, /* "choices": [] */
    MOCK_MAL_NO_CONTENT     /* content null and no tool calls */
};

struct mock_tool_call {
    char *id;        /* NULL: generated */
    char *name;
    json_t *args;    /* an object (serialized on output) or a string (used raw) */
};

struct mock_error {
    int status;        /* 0: the step is not an error step */
    int retry_after;   /* seconds; -1: no Retry-After header */
    char *message;
    char *type;        /* NULL: derived from status */
    char *code;        /* NULL: derived from status */
};

struct mock_step {
    char *content;                 /* NULL: no content */
    struct mock_tool_call *calls;
    size_t n_calls;
    char *finish_reason;           /* NULL: "tool_calls" or "stop" */
    struct mock_error error;
    uint32_t fail_first;           /* first N attempts answer with `error` */
    enum mock_malformed malformed;
    uint64_t delay_ms;             /* before the response starts */
    uint64_t chunk_delay_ms;       /* between stream events */
    int pieces;                    /* content/argument pieces when streaming; 0 = 3 */
    int repeat;                    /* every later index stays on this step */
    int has_usage;
    int64_t usage_prompt, usage_completion; /* when has_usage; -1 = computed */
};

struct mock_script {
    char *name;
    struct mock_step *steps;
    size_t n_steps;               /* >= 1 */
};

struct mock_scripts {
    struct mock_script *scripts;
    size_t n_scripts;
    char *default_name;           /* the script used without a marker */
    char *model;                  /* reported when a request names none */
};

/* Parse a script document (see README.md). On error returns TR_EINVAL with a
 * message naming the offending script and step. *out is owned by the caller
 * (mock_scripts_free). */
int mock_scripts_parse(const char *text, size_t len, struct mock_scripts **out, struct tr_err *err);
int mock_scripts_load(const char *path, struct mock_scripts **out, struct tr_err *err);
void mock_scripts_free(struct mock_scripts *s);
/* The named script, or NULL. */
const struct mock_script *mock_scripts_find(const struct mock_scripts *s, const char *name);
/* The step a conversation with `assistant_msgs` assistant messages is at:
 * past the end the last step repeats; a step marked "repeat" holds. */
size_t mock_script_step_index(const struct mock_script *sc, size_t assistant_msgs);

/* ------------------------------------------------------------------------ */
/* Requests.                                                                 */

#define MOCK_NAME_MAX 64

struct mock_request {
    json_t *root;                  /* owned */
    const char *model;             /* borrowed from root; NULL when absent */
    int stream;
    int include_usage;
    char script[MOCK_NAME_MAX];    /* from the marker; "" when none */
    size_t assistant_msgs;
    uint64_t conv_hash;            /* FNV-1a over the canonical messages array */
    size_t prompt_chars;           /* compact messages array */
    char *user;                    /* first user message text (owned) */
    char *last_tool_result;        /* last tool message text (owned) */
};

/* Parse a Chat Completions request body. TR_EINVAL with a message the client
 * can read when the body is not a JSON object with a "messages" array. */
int mock_request_parse(const char *body, size_t len, struct mock_request *req, struct tr_err *err);
void mock_request_free(struct mock_request *req);

/* Substitute {{step}}, {{user}}, {{last_tool_result}} and {{model}}.
 * Returns a new string (tr_free). Unknown placeholders stay as they are. */
char *mock_template(const char *tmpl, const struct mock_request *req, size_t step, const char *model);
/* The same for a template that is JSON text (raw tool call arguments): each
 * value is escaped as the inside of a JSON string literal. */
char *mock_template_json(const char *tmpl, const struct mock_request *req, size_t step,
                         const char *model);

/* ------------------------------------------------------------------------ */
/* Replies.                                                                  */

/* What the server must do with one request. */
struct mock_reply {
    int status;
    const char *content_type;
    int retry_after;           /* seconds; -1: no header */
    uint64_t delay_ms;         /* wait before starting */
    uint64_t chunk_delay_ms;   /* streaming: wait between events */
    int streaming;             /* body is `events`, not `body` */
    char *body;                /* owned; non-streaming */
    size_t body_len;
    /* Non-streaming truncation: announce body_len but send only this many
     * bytes, then close. SIZE_MAX: send everything. */
    size_t body_cut;
    char **events;             /* owned; each a complete "data: ...\n\n" */
    size_t n_events;
    /* Streaming truncation: send only this many events, then close without
     * the terminating chunk. SIZE_MAX: all, then end the stream normally. */
    size_t events_cut;
    char log[256];             /* one line for the request log */
};

void mock_reply_free(struct mock_reply *r);

/* Build an OpenAI-style error reply: {"error": {"message", "type", "param", "code"}}.
 * type/code NULL: derived from the status. */
void mock_reply_error(struct mock_reply *r, int status, const char *type, const char *code,
                      const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* The completion a step produces for a request (success path of the step:
 * error steps and fail_first are decided by the engine). `created` is the
 * Unix time to stamp. */
void mock_reply_completion(struct mock_reply *r, const struct mock_step *st, size_t step,
                           const struct mock_request *req, const char *model, int64_t created);

/* ------------------------------------------------------------------------ */
/* The engine: scripts plus counters, statistics and the down switch.        */

struct mock_engine;

struct mock_engine_opts {
    const char *require_key;   /* NULL: no auth check */
    size_t max_counters;       /* fail_first table size; 0 = 65536 */
};

/* Takes ownership of scripts. */
struct mock_engine *mock_engine_new(struct mock_scripts *scripts, const struct mock_engine_opts *opts);
void mock_engine_free(struct mock_engine *e);

/* Answer one HTTP request. `authorization` is the header's value or NULL.
 * `now_s` is the Unix time (an input: the engine never reads the clock).
 * Fills *r (mock_reply_free it). */
void mock_engine_handle(struct mock_engine *e, const char *method, const char *path,
                        const char *authorization, const char *body, size_t body_len,
                        int64_t now_s, struct mock_reply *r);

/* Statistics as a JSON object (caller json_decref's it). */
json_t *mock_engine_stats(const struct mock_engine *e);

/* ------------------------------------------------------------------------ */
/* The HTTP side (server.c): the engine behind a tr_httpd on one loop.       */

struct mock_server;

struct mock_server_opts {
    const char *host;          /* "127.0.0.1" when NULL */
    int port;                  /* 0: ephemeral */
    size_t max_body_bytes;     /* 0: 4 MiB */
};

/* Serve engine (borrowed; it must outlive the server) on loop. */
int mock_server_start(uv_loop_t *loop, const struct mock_server_opts *opts,
                      struct mock_engine *engine, struct mock_server **out, struct tr_err *err);
int mock_server_port(const struct mock_server *s);
/* Close the listener and every connection, cancel pending delays, free s,
 * then cb(arg) (never from inside this call). */
void mock_server_close(struct mock_server *s, void (*cb)(void *arg), void *arg);

/* ------------------------------------------------------------------------ */
/* Small helpers shared by the files of this folder.                         */

uint64_t mock_fnv1a(const void *p, size_t n, uint64_t h);
#define MOCK_FNV_SEED 0xcbf29ce484222325ULL
/* json_pack that aborts with jansson's message when the format and the
 * arguments disagree (a programming error, never an input error). */
json_t *mock_pack(const char *fmt, ...);
/* json_dumps with our allocator semantics: aborts on failure; tr_free it. */
char *mock_dumps(const json_t *j, size_t flags);

#endif
