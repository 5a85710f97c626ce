/* Troupe's actor runtime: actors, mailboxes, schedulers, timers, supervision,
 * passivation, and async adapters (HTTP client, child processes, HTTP server).
 * It knows nothing about agents, raft or storage; everything above may use it.
 *
 * Model
 * -----
 * An actor is a behavior (a table of callbacks) plus inline state, pinned to one
 * scheduler thread for its whole life. Each scheduler thread runs one libuv loop.
 * Actors are named by 64-bit ids that are never reused while a runtime lives.
 * A message sent by one actor to another is delivered at most once, and messages
 * from one sender to one receiver arrive in the order they were sent.
 *
 * Threads: callbacks of an actor run only on its scheduler thread, one at a
 * time, so actor state needs no locks. Functions taking a `struct tr_ctx *` may
 * be called only from inside a callback of the actor the context belongs to.
 * Functions taking a `struct tr_rt *` are thread-safe unless they say otherwise.
 *
 * Memory: allocation failure aborts the process with a message (tr_malloc);
 * callers never test for NULL. Every queue is bounded.
 */
#ifndef TR_RUNTIME_H
#define TR_RUNTIME_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#define TR_API __attribute__((visibility("default")))

/* ------------------------------------------------------------------------ */
/* Errors: one enum for the whole project; strings from the X-macro.         */

#define TR_ERRNO_MAP(X)                                             \
    X(OK, 0, "ok")                                                  \
    X(ENOMEM, -1, "out of memory")                                  \
    X(EINVAL, -2, "invalid argument")                               \
    X(EFULL, -3, "mailbox full")                                    \
    X(ENOACTOR, -4, "no such actor")                                \
    X(ETIMEDOUT, -5, "timed out")                                   \
    X(ECLOSED, -6, "shutting down")                                 \
    X(EIO, -7, "i/o error")                                         \
    X(ETOOBIG, -8, "too large")                                     \
    X(ECANCELED, -9, "canceled")                                    \
    X(ENOTFOUND, -10, "not found")                                  \
    X(EEXIST, -11, "already exists")                                \
    X(EPROTO, -12, "protocol error")                                \
    X(EBUSY, -13, "busy")                                           \
    X(ESTALE, -14, "stale epoch")                                   \
    X(ECORRUPT, -15, "corrupt data")                                \
    X(EDENIED, -16, "permission denied")                            \
    X(EUNAVAIL, -17, "unavailable")                                 \
    X(ELIMIT, -18, "limit reached")                                 \
    X(ENOTSUP, -19, "not supported")                                \
    X(ECONFLICT, -20, "conflict")                                   \
    X(ENOTLEADER, -21, "not the leader")                            \
    X(ESYS, -22, "system call failed")

enum {
#define TR__ERR_ENUM(name, value, str) TR_##name = (value),
    TR_ERRNO_MAP(TR__ERR_ENUM)
#undef TR__ERR_ENUM
};

/* Name of an error code ("mailbox full"); never NULL. */
TR_API const char *tr_strerror(int rv);
/* Short symbolic name of an error code ("EFULL"); never NULL. */
TR_API const char *tr_errname(int rv);

/* An error with a message that each layer wraps with its own context:
 *   tr_err_set(e, TR_EIO, "fsync %s: %s", path, strerror(errno));
 *   tr_err_wrap(e, "append run %llu", id);   -> "append run 7: fsync ...: ..."
 */
struct tr_err {
    int code;
    char msg[512];
};
TR_API int tr_err_set(struct tr_err *e, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
TR_API int tr_err_wrap(struct tr_err *e, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
TR_API void tr_err_clear(struct tr_err *e);

/* ------------------------------------------------------------------------ */
/* Memory and logging seams.                                                  */

/* Abort with a message on failure; never return NULL (size 0 is allowed). */
TR_API void *tr_malloc(size_t n);
TR_API void *tr_calloc(size_t count, size_t size);
TR_API void *tr_realloc(void *p, size_t n);
TR_API void tr_free(void *p);
TR_API char *tr_strdup(const char *s);
TR_API char *tr_strndup(const char *s, size_t n);
TR_API void *tr_memdup(const void *p, size_t n);
/* Length (1 to 4) of the valid UTF-8 sequence at p[0..n), or 0 when there is
 * none: a NUL, a stray or missing continuation byte, an overlong form, a
 * surrogate, past U+10FFFF. n must be at least 1. */
TR_API size_t tr_utf8_seq(const void *p, size_t n);

enum tr_log_level { TR_LOG_DEBUG, TR_LOG_INFO, TR_LOG_WARN, TR_LOG_ERROR };
typedef void (*tr_log_fn)(void *ud, enum tr_log_level level, const char *msg);
/* Default sink: stderr, level INFO (TROUPE_LOG=debug|info|warn|error). */
TR_API void tr_log_set_sink(tr_log_fn fn, void *ud);
TR_API void tr_log_set_level(enum tr_log_level level);
TR_API int tr_log_enabled(enum tr_log_level level);
TR_API void tr_log(enum tr_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* A growable byte buffer, NUL-terminated whenever p is not NULL (so text
 * built in it is a C string). Zero-initialise it; tr_buf_free releases it. */
struct tr_buf {
    char *p;
    size_t len;
    size_t cap;
};
TR_API void tr_buf_reserve(struct tr_buf *b, size_t extra); /* room for extra more bytes */
TR_API void tr_buf_add(struct tr_buf *b, const void *data, size_t n);
TR_API void tr_buf_adds(struct tr_buf *b, const char *s);
TR_API void tr_buf_addc(struct tr_buf *b, char c);
TR_API void tr_buf_printf(struct tr_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
TR_API void tr_buf_free(struct tr_buf *b);

/* ------------------------------------------------------------------------ */
/* Messages.                                                                  */

typedef uint64_t tr_actor_id; /* 0 is never a valid actor */

/* Message types below TR_MSG_USER belong to the runtime. */
enum tr_msg_type {
    TR_MSG_NONE = 0,
    TR_MSG_CHILD_EXIT,     /* payload struct tr_exit_info: a child stopped for good */
    TR_MSG_CHILD_RESTART,  /* payload struct tr_exit_info: a child failed and was restarted */
    TR_MSG_TIMEOUT,        /* a tr_request timed out; corr names it; no payload */
    TR_MSG_HTTP_DONE,      /* payload: see tr_http_result() */
    TR_MSG_HTTP_CHUNK,     /* a streamed response body chunk: see tr_http_chunk() */
    TR_MSG_PROC_EXIT,      /* payload: see tr_proc_result() */
    TR_MSG_CALL,           /* internal: tr_rt_call */
    TR_MSG_USER = 1024     /* first type available to users */
};

enum tr_msg_flags {
    TR_MSGF_REQUEST = 1u << 0, /* sent with tr_request: answer with tr_reply */
    TR_MSGF_REPLY = 1u << 1    /* an answer to a tr_request; corr names it */
};

/* A message. Allocated with tr_msg_new; the payload follows the header,
 * aligned for any type. Ownership passes to the runtime on a successful send;
 * on a failed send the caller still owns it. */
struct tr_msg {
    struct tr_msg *next;  /* runtime-owned link; do not touch */
    tr_actor_id to;
    tr_actor_id from;     /* 0 when sent from outside any actor */
    uint64_t corr;        /* correlation id of a request/reply/timeout, else 0 */
    uint32_t type;
    uint32_t flags;
    uint32_t len;         /* payload bytes */
    uint32_t reserved_;
    _Alignas(16) unsigned char data[];
};

/* A message with `len` bytes of uninitialised payload. */
TR_API struct tr_msg *tr_msg_new(uint32_t type, uint32_t len);
/* A message whose payload is a copy of data[0..len). */
TR_API struct tr_msg *tr_msg_make(uint32_t type, const void *data, uint32_t len);
TR_API void tr_msg_free(struct tr_msg *m);

/* ------------------------------------------------------------------------ */
/* Actors.                                                                    */

struct tr_rt;  /* the runtime */
struct tr_ctx; /* an actor's view of the runtime, valid during a callback */

/* Why init was called. */
enum tr_start_reason {
    TR_START_NEW = 0,    /* first start after tr_spawn */
    TR_START_RESTART,    /* after a failure, under the restart policy */
    TR_START_REACTIVATE  /* a message arrived for a passivated actor */
};

/* Why fini was called. */
enum tr_stop_reason {
    TR_STOP_NORMAL = 0,  /* tr_stop */
    TR_STOP_FAILED,      /* init or receive returned non-zero */
    TR_STOP_PASSIVATE,   /* tr_passivate: state dropped, id stays */
    TR_STOP_SHUTDOWN     /* the runtime is shutting down */
};

/* How an actor's behaviour is defined. Static storage duration expected. */
struct tr_behavior {
    const char *name;    /* for logs and stats */
    uint32_t state_size; /* bytes of state kept inline with the actor, zeroed before init */
    /* Set up state. Called on first start, after each restart, and on
     * reactivation after passivation (tr_start_reason(ctx) tells which).
     * Non-zero means the start failed; it counts as a failure for the
     * restart policy. May be NULL. */
    int (*init)(struct tr_ctx *ctx, void *state, void *arg);
    /* Handle one message. The runtime frees msg when this returns unless the
     * handler passed it on with tr_send/tr_request/tr_reply or kept it with
     * tr_msg_keep. Non-zero means the actor failed: fini(TR_STOP_FAILED) runs,
     * then the restart policy decides. Never blocks. */
    int (*receive)(struct tr_ctx *ctx, void *state, struct tr_msg *msg);
    /* Release what state holds. Called exactly once for every successful
     * init, with the reason. May be NULL. */
    void (*fini)(struct tr_ctx *ctx, void *state, enum tr_stop_reason why);
};

enum tr_restart {
    TR_RESTART_NEVER = 0,  /* a failure stops the actor for good */
    TR_RESTART_ON_FAILURE, /* restart after a failure, within the intensity limit */
};

#define TR_SCHED_ANY (-1)  /* round-robin over schedulers */
#define TR_SCHED_SELF (-2) /* the calling scheduler when called from one, else ANY */

struct tr_spawn_opts {
    const struct tr_behavior *behavior; /* required */
    void *arg;              /* passed to every init; the runtime never frees it */
    tr_actor_id parent;     /* told of exits and restarts with TR_MSG_CHILD_*; 0 = none */
    int sched;              /* scheduler index, TR_SCHED_ANY or TR_SCHED_SELF */
    uint32_t mailbox_cap;   /* max queued messages; 0 = runtime default */
    enum tr_restart restart;
    uint32_t max_restarts;  /* failures allowed within restart_window_ms (default 3) */
    uint32_t restart_window_ms; /* default 5000 */
};

/* Payload of TR_MSG_CHILD_EXIT and TR_MSG_CHILD_RESTART. */
struct tr_exit_info {
    tr_actor_id child;
    int32_t reason;   /* enum tr_stop_reason */
    int32_t code;     /* the non-zero value init/receive returned, else 0 */
    uint32_t restarts; /* restarts within the current window */
    uint32_t reserved_;
};

/* Create an actor. Its init runs later on its scheduler thread, before any
 * message; messages sent to the new id before then wait in its mailbox.
 * Thread-safe. Returns TR_ECLOSED during shutdown. */
TR_API int tr_spawn(struct tr_rt *rt, const struct tr_spawn_opts *opts, tr_actor_id *id_out);

/* Stop an actor: fini(TR_STOP_NORMAL) runs after its current message, queued
 * messages become dead letters, the parent gets TR_MSG_CHILD_EXIT.
 * Thread-safe; stopping an unknown or stopped actor returns TR_ENOACTOR. */
TR_API int tr_rt_stop_actor(struct tr_rt *rt, tr_actor_id id);
TR_API int tr_stop(struct tr_ctx *ctx, tr_actor_id id); /* id may be tr_self(ctx) */

/* Drop this actor's state after the current callback: fini(TR_STOP_PASSIVATE)
 * runs and the state memory is freed; the id stays valid and the next message
 * (or timer) for it re-creates the state with init(TR_START_REACTIVATE) and
 * the same arg. Ignored if messages are waiting in the mailbox. */
TR_API int tr_passivate(struct tr_ctx *ctx);

/* The current callback's context. */
TR_API tr_actor_id tr_self(struct tr_ctx *ctx);
TR_API struct tr_rt *tr_ctx_rt(struct tr_ctx *ctx);
TR_API int tr_ctx_sched(struct tr_ctx *ctx);               /* scheduler index */
TR_API enum tr_start_reason tr_start_reason(struct tr_ctx *ctx); /* valid in init */
/* The scheduler's libuv loop; NULL in deterministic mode. */
TR_API uv_loop_t *tr_ctx_loop(struct tr_ctx *ctx);
/* Monotonic milliseconds (virtual in deterministic mode). */
TR_API uint64_t tr_now_ms(struct tr_ctx *ctx);
/* Wall-clock microseconds since the epoch (virtual in deterministic mode). */
TR_API uint64_t tr_wall_us(struct tr_ctx *ctx);
/* 64 random bits: seeded per scheduler; reproducible in deterministic mode. */
TR_API uint64_t tr_random(struct tr_ctx *ctx);

/* ------------------------------------------------------------------------ */
/* Sending.                                                                   */

/* Send msg to `to`, from the current actor. On success the runtime owns msg.
 * TR_EFULL: the receiver's mailbox is at its cap (backpressure: retry later,
 * drop, or fail); TR_ENOACTOR: no such live actor (counted as a dead letter);
 * TR_ECLOSED: shutting down. On any error the caller still owns msg. */
TR_API int tr_send(struct tr_ctx *ctx, tr_actor_id to, struct tr_msg *msg);
/* The same from outside any actor, from any thread (msg->from = 0). */
TR_API int tr_rt_send(struct tr_rt *rt, tr_actor_id to, struct tr_msg *msg);
/* Copy data into a new message and send it; frees the copy on error. */
TR_API int tr_tell(struct tr_ctx *ctx, tr_actor_id to, uint32_t type, const void *data, uint32_t len);
/* tr_tell to this actor itself, delivered after every message that other
 * threads have already sent to this scheduler (a plain tell to oneself is
 * handled in the same turn, before the scheduler looks at its inbox again).
 * For batching: "act once what others sent in the meantime is queued". */
TR_API int tr_tell_self_behind(struct tr_ctx *ctx, uint32_t type, const void *data, uint32_t len);

/* Keep msg past the end of receive; the actor frees it later (tr_msg_free). */
TR_API void tr_msg_keep(struct tr_ctx *ctx, struct tr_msg *msg);

/* Request/reply. Sends msg with a fresh correlation id (*corr_out) and flag
 * TR_MSGF_REQUEST. Exactly one of these arrives later at the requester:
 * the reply (flag TR_MSGF_REPLY, same corr) or, after timeout_ms, a
 * TR_MSG_TIMEOUT message with that corr. A reply after the timeout is dropped.
 * timeout_ms 0 means no timeout. */
TR_API int tr_request(struct tr_ctx *ctx, tr_actor_id to, struct tr_msg *msg, uint32_t timeout_ms,
                      uint64_t *corr_out);
/* Answer a request (req must carry TR_MSGF_REQUEST). Ownership of reply as in tr_send. */
TR_API int tr_reply(struct tr_ctx *ctx, const struct tr_msg *req, struct tr_msg *reply);

/* ------------------------------------------------------------------------ */
/* Timers: deliver msg to this actor after delay_ms. Ownership of msg passes on
 * success. A timer of a stopped actor is dropped; one of a passivated actor
 * reactivates it. */
TR_API int tr_timer_start(struct tr_ctx *ctx, uint64_t delay_ms, struct tr_msg *msg, uint64_t *timer_out);
/* Cancel a pending timer and free its message; TR_ENOTFOUND if it fired or
 * was cancelled already. */
TR_API int tr_timer_cancel(struct tr_ctx *ctx, uint64_t timer);

/* ------------------------------------------------------------------------ */
/* The runtime.                                                               */

struct tr_rt_opts {
    int schedulers;          /* threads; 0 = one per core */
    int deterministic;       /* one scheduler, no threads, virtual clock; see below */
    uint64_t seed;           /* RNG seed (deterministic mode; 0 = random otherwise) */
    uint32_t turn_budget;    /* messages an actor handles per turn; 0 = 64 */
    uint32_t mailbox_cap;    /* default per-actor mailbox cap; 0 = 4096 */
    uint64_t start_wall_us;  /* deterministic mode: wall clock at virtual time 0 */
};

struct tr_rt_stats {
    uint64_t actors;          /* live (including passivated) */
    uint64_t passivated;
    uint64_t delivered;       /* messages handed to receive */
    uint64_t dead_letters;    /* messages for actors that were gone */
    uint64_t full_rejects;    /* sends refused with TR_EFULL */
    uint64_t restarts;
    uint64_t failures;
};

/* Create a runtime; schedulers are not running yet. */
TR_API int tr_rt_new(const struct tr_rt_opts *opts, struct tr_rt **out);
/* Start the scheduler threads (not in deterministic mode). */
TR_API int tr_rt_start(struct tr_rt *rt);
/* Stop every actor (fini(TR_STOP_SHUTDOWN)), run shutdown hooks, drop messages
 * in flight, close every handle, join the threads and free everything.
 * Call from a thread that is not a scheduler thread. rt is gone afterwards. */
TR_API void tr_rt_shutdown(struct tr_rt *rt);

TR_API int tr_rt_schedulers(struct tr_rt *rt);
TR_API void tr_rt_stats(struct tr_rt *rt, struct tr_rt_stats *out);

/* Run fn(ctx, arg) on scheduler `sched`'s thread, in the context of a
 * runtime-owned system actor (so fn may spawn, send, start timers, and use the
 * loop). Thread-safe; fn runs once, or never if shutdown starts first (then
 * `dropped`, if not NULL, is called with arg from the shutting-down thread). */
typedef void (*tr_call_fn)(struct tr_ctx *ctx, void *arg);
TR_API int tr_rt_call(struct tr_rt *rt, int sched, tr_call_fn fn, void (*dropped)(void *arg), void *arg);

/* Register fn to run on scheduler `sched`'s thread when shutdown begins,
 * after actors are stopped and before the loop is closed: the place to close
 * libuv handles that live on that loop (raft, servers). Call on that
 * scheduler's thread (e.g. from tr_rt_call). Hooks run in reverse order. */
TR_API int tr_rt_on_shutdown(struct tr_ctx *ctx, void (*fn)(void *arg), void *arg);

/* Deterministic mode (opts.deterministic): nothing runs by itself; the caller
 * drives the one scheduler from its own thread. Time moves only by
 * tr_rt_advance. The I/O adapters return TR_ENOTSUP. */
TR_API int tr_rt_step(struct tr_rt *rt);                    /* deliver one message; 0 if none */
TR_API uint64_t tr_rt_run_until_idle(struct tr_rt *rt, uint64_t max_steps); /* messages delivered */
TR_API void tr_rt_advance(struct tr_rt *rt, uint64_t ms);   /* fire timers due within ms */
TR_API uint64_t tr_rt_now_ms(struct tr_rt *rt);             /* virtual time */

/* ------------------------------------------------------------------------ */
/* HTTP client adapter: libcurl multi on the actor's scheduler loop.           */

struct tr_http_req {
    const char *method;            /* "GET" when NULL */
    const char *url;               /* http:// or https:// only */
    const char *const *headers;    /* "Name: value" strings, copied */
    size_t n_headers;
    const void *body;              /* copied */
    size_t body_len;
    uint32_t timeout_ms;           /* whole request; 0 = 30000 */
    uint32_t connect_timeout_ms;   /* 0 = 10000 */
    size_t max_response;           /* body cap; exceeding fails with TR_ETOOBIG; 0 = 8 MiB */
    int stream;                    /* deliver body as TR_MSG_HTTP_CHUNK messages as it arrives */
    uint64_t tag;                  /* echoed in the result */
};

/* Start a request; its result comes to this actor as TR_MSG_HTTP_DONE (and,
 * when streaming, TR_MSG_HTTP_CHUNK messages before it). */
TR_API int tr_http_start(struct tr_ctx *ctx, const struct tr_http_req *req, uint64_t *id_out);
/* Abort a request; its TR_MSG_HTTP_DONE then carries TR_ECANCELED. */
TR_API int tr_http_cancel(struct tr_ctx *ctx, uint64_t id);

struct tr_http_result {
    uint64_t id;
    uint64_t tag;
    int error;            /* TR_OK, or TR_ETIMEDOUT / TR_ETOOBIG / TR_ECANCELED / TR_EIO ... */
    int status;           /* HTTP status, 0 if none arrived */
    const char *errmsg;   /* human-readable detail when error != TR_OK */
    const char *headers;  /* raw response header block, NUL-terminated */
    size_t headers_len;
    const void *body;     /* NULL when streaming */
    size_t body_len;
    uint64_t elapsed_us;
};
/* Decode a TR_MSG_HTTP_DONE message; pointers stay valid while msg lives. */
TR_API int tr_http_result(const struct tr_msg *msg, struct tr_http_result *out);
/* Case-insensitive lookup of a response header's value in a header block.
 * Returns the length copied into buf (NUL-terminated, truncated), or -1. */
TR_API int tr_http_header(const char *headers, size_t headers_len, const char *name, char *buf, size_t cap);

struct tr_http_chunk {
    uint64_t id;
    uint64_t tag;
    const void *data;
    size_t len;
};
TR_API int tr_http_chunk(const struct tr_msg *msg, struct tr_http_chunk *out);

/* ------------------------------------------------------------------------ */
/* Child process adapter: uv_spawn on the actor's scheduler loop.              */

struct tr_proc_opts {
    const char *file;           /* program; PATH is searched */
    char *const *argv;          /* NULL-terminated; argv[0] conventional */
    char *const *env;           /* NULL-terminated "K=V"; NULL inherits */
    const char *cwd;
    const void *stdin_data;     /* written then closed; copied */
    size_t stdin_len;
    size_t max_stdout;          /* capture caps; output beyond is discarded and flagged */
    size_t max_stderr;          /* 0 = 1 MiB each */
    uint32_t timeout_ms;        /* wall clock; then SIGKILL to the process group; 0 = none */
    uint64_t tag;
};

TR_API int tr_proc_spawn(struct tr_ctx *ctx, const struct tr_proc_opts *opts, uint64_t *id_out);
/* Send signum to the child's process group. */
TR_API int tr_proc_kill(struct tr_ctx *ctx, uint64_t id, int signum);

struct tr_proc_result {
    uint64_t id;
    uint64_t tag;
    int error;                  /* TR_OK, or TR_ESYS when spawn failed */
    const char *errmsg;
    int64_t exit_status;
    int term_signal;
    int timed_out;
    int stdout_truncated;
    int stderr_truncated;
    const void *out;
    size_t out_len;
    const void *err;
    size_t err_len;
    uint64_t elapsed_us;
};
TR_API int tr_proc_result(const struct tr_msg *msg, struct tr_proc_result *out);

/* ------------------------------------------------------------------------ */
/* HTTP/1.1 server on any libuv loop (needs no actor runtime).                 */
/*
 * One loop, one thread: every function below is called on the loop's thread,
 * and every callback runs there. Requests on one connection are handed to the
 * app one at a time, in order; the next is parsed only after the previous one
 * is answered (pipelining-safe). The app answers a request whenever it likes:
 * inside on_request or later, with tr_httpd_respond or a streamed response.
 *
 * Lifetime of a struct tr_httpd_req: from on_request until the app finishes
 * it (tr_httpd_respond, tr_httpd_stream_end, tr_httpd_upgrade), or until its
 * close callback returns if the connection goes away first (client gone, error,
 * write buffer over its cap, server closing). After either, req is freed and
 * must not be touched. Requests that have no close callback set are freed
 * silently.
 */

struct tr_httpd;
struct tr_httpd_conn;

struct tr_httpd_header {
    const char *name;   /* as sent */
    const char *value;  /* leading/trailing blanks trimmed */
};

struct tr_httpd_req {
    void *data;                 /* the app's; the server never touches it */
    const char *method;         /* "GET", "POST", ... */
    const char *target;         /* path and query as sent: "/v1/runs?limit=5" */
    const char *path;           /* target before '?' */
    const char *query;          /* after '?', "" when none */
    const struct tr_httpd_header *headers;
    size_t n_headers;
    const char *body;           /* NUL-terminated for convenience; "" when none */
    size_t body_len;
    int http_minor;             /* 0 or 1 (HTTP/1.x) */
    int upgrade;                /* the client asked for a protocol upgrade */
    struct tr_httpd_conn *conn_; /* private */
};

struct tr_httpd_opts {
    const char *host;               /* bind address; "127.0.0.1" when NULL */
    int port;                       /* 0 = ephemeral: see tr_httpd_port */
    uint32_t max_connections;       /* more are accepted and closed at once; 0 = 1024 */
    size_t max_header_bytes;        /* request line + headers; over -> 431, close; 0 = 16 KiB */
    size_t max_body_bytes;          /* over -> 413, close; 0 = 8 MiB */
    uint32_t idle_timeout_ms;       /* no request in progress and no output moving; then close; 0 = 60000 */
    uint32_t request_timeout_ms;    /* first byte to complete request; then 408, close; 0 = 30000 */
    size_t max_write_queue;         /* unsent response bytes per connection; over -> close; 0 = 16 MiB */
    /* A complete request. Answer it now or later (see above). */
    void (*on_request)(struct tr_httpd_req *req, void *ud);
    void *ud;
};

/* Bind, listen and start accepting on loop. The server lives until
 * tr_httpd_close. Returns TR_ESYS (message in err, if not NULL) when it
 * cannot bind; nothing is left running then. */
TR_API int tr_httpd_start(uv_loop_t *loop, const struct tr_httpd_opts *opts, struct tr_httpd **out,
                          struct tr_err *err);
/* The bound port (useful with port 0). */
TR_API int tr_httpd_port(const struct tr_httpd *s);
/* Stop accepting and close every connection; close callbacks of unanswered
 * requests run; then s is freed and cb(arg) is called (never from inside this
 * call). cb may be NULL. */
TR_API void tr_httpd_close(struct tr_httpd *s, void (*cb)(void *arg), void *arg);

struct tr_httpd_stats {
    uint64_t accepted;        /* connections accepted and served */
    uint64_t refused;         /* connections closed at once for the limit */
    uint64_t requests;        /* complete requests handed to the app */
    uint64_t bad_requests;    /* 400/408/413/431 sent */
    uint32_t connections;     /* open now */
};
TR_API void tr_httpd_stats(const struct tr_httpd *s, struct tr_httpd_stats *out);

/* Case-insensitive lookup of a request header; the first match, or NULL. */
TR_API const char *tr_httpd_header(const struct tr_httpd_req *req, const char *name);

/* Called once if req's connection closes before the app finished req;
 * req is freed when cb returns. Replaces any earlier callback. */
TR_API void tr_httpd_on_close(struct tr_httpd_req *req, void (*cb)(struct tr_httpd_req *req, void *arg),
                              void *arg);

/* Answer req: status line, the app's headers ("Name: value" strings, copied),
 * Content-Length, Connection, then body (copied). req is finished. Returns
 * TR_EINVAL for a bad status; TR_ECLOSED if the write buffer cap was hit
 * (the connection is closing: req is finished all the same). */
TR_API int tr_httpd_respond(struct tr_httpd_req *req, int status, const char *const *headers,
                            size_t n_headers, const void *body, size_t len);

enum tr_httpd_stream_mode {
    TR_HTTPD_CHUNKED = 0, /* Transfer-Encoding: chunked; the connection stays usable */
    TR_HTTPD_RAW          /* bytes as written (SSE, legacy); ends by closing the connection */
};
/* Send the status line and headers of a streamed response. Then
 * tr_httpd_stream_write any number of times, then tr_httpd_stream_end.
 * Until the end, the close callback tells the app that the client left. */
TR_API int tr_httpd_stream_start(struct tr_httpd_req *req, int status, const char *const *headers,
                                 size_t n_headers, enum tr_httpd_stream_mode mode);
/* Queue data (copied). TR_ECLOSED when the connection is going away (the close
 * callback will follow; keep req until then). A zero-length write is a no-op. */
TR_API int tr_httpd_stream_write(struct tr_httpd_req *req, const void *data, size_t len);
/* Bytes queued on req's connection and not yet written: for app-side pacing. */
TR_API size_t tr_httpd_queued(const struct tr_httpd_req *req);
/* Finish the streamed response; req is finished. */
TR_API int tr_httpd_stream_end(struct tr_httpd_req *req);
/* Called (from a write callback, never from inside the app's calls) each
 * time every byte queued on a streaming req's connection has been written:
 * for app-side pacing without polling. cb may write or end req. */
TR_API void tr_httpd_on_drain(struct tr_httpd_req *req, void (*cb)(struct tr_httpd_req *req, void *arg),
                              void *arg);
/* Close req's connection now, dropping unsent output (a reader too slow for
 * a stream). The close callback runs later, as when the client leaves. */
TR_API void tr_httpd_abort(struct tr_httpd_req *req);

/* Take the connection over for another protocol (WebSocket). head (copied,
 * may be empty) is written first, typically the "101 Switching Protocols"
 * response. Once it is flushed, cb gets the socket and the bytes already read
 * past the request (valid during the call only); it is never called from
 * inside tr_httpd_upgrade. From then on the app owns tcp: its data field is
 * the app's, and it must uv_close it and tr_free it in the close callback.
 * If the connection fails first, cb gets tcp == NULL. req is finished. */
typedef void (*tr_httpd_upgrade_cb)(uv_tcp_t *tcp, const void *rest, size_t rest_len, void *arg);
TR_API int tr_httpd_upgrade(struct tr_httpd_req *req, const void *head, size_t head_len,
                            tr_httpd_upgrade_cb cb, void *arg);

/* Reason phrase for a status code ("Not Found"); never NULL. */
TR_API const char *tr_httpd_reason(int status);

#endif /* TR_RUNTIME_H */
