/* The tool executor: one actor per scheduler answers TR_MSG_TOOL_CALL
 * requests (actors.h) by calling an http endpoint or running a program in a
 * sandbox.
 *
 * Happy path (http): parse the call, refuse a host outside the allow list
 * before anything touches the network, POST the arguments with the call's
 * Idempotency-Key through the runtime's curl adapter (streamed, so the body
 * can be cut at the result cap), answer TR_MSG_TOOL_RESULT.
 * Happy path (sandbox): spawn bwrap or runsc with the arguments on stdin,
 * answer with stdout when the program exits.
 *
 * Failure modes: malformed calls and bad user config are answered at once
 * with ok false and the reason; connection failures and 5xx are retried
 * (tool.h) with the same key; timeouts, refused hosts and transport errors
 * are ok false; HTTP >= 400 is is_error; a body over the cap is cut and
 * flagged truncated.
 *
 * Invariants
 *  1. Each request is answered exactly once: every call lives in st->calls
 *     from its start until finish(), which replies and frees it; a call has
 *     at most one of {http request, backoff timer, process} outstanding.
 *  2. Adapter results are matched by tag (the call's seq) and id; results of
 *     calls that are gone are dropped.
 *  3. fini cancels what is outstanding and frees every call.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>

#include "actors/run.h"
#include "actors/tool.h"
#include "actors/wire.h"

#define BODY_CAP_TRANSPORT (1024u * 1024 * 1024) /* curl's cap; ours cuts first */
#define ERROR_TEXT_MAX 4096
#define STDERR_CAP (16u * 1024)

enum call_kind { CALL_HTTP, CALL_SANDBOX };

struct call {
    struct call *prev, *next;
    uint64_t seq;
    struct tr_msg *req;        /* kept; answered by finish() */
    enum call_kind kind;
    uint64_t start_ms;
    uint64_t start_us;
    uint64_t deadline_ms;
    uint32_t timeout_ms;
    char *body;                /* the arguments as JSON text */
    size_t body_len;
    /* http */
    struct cfg_entry *http;    /* the tool's parsed config, shared (below) */
    const char **hdrs;
    size_t n_hdrs;
    char *key_header;
    char *who_header;          /* "X-Troupe-Caller: node=N run=ID" */
    uint32_t attempts;
    int http_active;
    uint64_t http_id;
    int timer_active;
    uint64_t timer_id;
    char *out;
    size_t out_len;
    int truncated;
    /* sandbox */
    int proc_active;
    uint64_t proc_id;
    const char *prog;
    int gvisor;
};

struct tool_state {
    const struct tool_opts *opts;
    struct tool_opts own;      /* defaults, when spawned by tr_tool_spawn */
    struct call *calls;
    uint32_t n_calls;
    uint64_t next_seq;
    struct cfg_entry *cfgs;    /* parsed http configs, most recently used first */
    struct cfg_entry *cfgs_tail;
    uint32_t n_cfgs;
};

/* ------------------------------------------------------------------------ */
/* Parsed http configs, by their text. A run calls the same tool version     */
/* again and again, and parsing its config (JSON, then the URL through       */
/* curl's parser) took ~4 us of every call. The last CFG_CACHE_MAX distinct  */
/* texts stay parsed. An entry is shared by the calls using it: dropped from */
/* the cache, it lives on until the last of them ends. A text that does not  */
/* parse is not kept: its error is found again at each call.                 */

#define CFG_CACHE_MAX 64

struct cfg_entry {
    struct cfg_entry *prev, *next;
    char *text;
    size_t len;
    uint32_t refs;             /* calls holding it, + 1 while cached */
    struct tool_http_cfg cfg;
};

static void cfg_unref(struct cfg_entry *e)
{
    if (e == NULL || --e->refs > 0)
        return;
    tool_http_cfg_free(&e->cfg);
    tr_free(e->text);
    tr_free(e);
}

static void cfg_unlink(struct tool_state *st, struct cfg_entry *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        st->cfgs = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        st->cfgs_tail = e->prev;
    e->prev = e->next = NULL;
    st->n_cfgs--;
}

static void cfg_push(struct tool_state *st, struct cfg_entry *e)
{
    e->prev = NULL;
    e->next = st->cfgs;
    if (st->cfgs)
        st->cfgs->prev = e;
    else
        st->cfgs_tail = e;
    st->cfgs = e;
    st->n_cfgs++;
}

/* The cached parse of this config text, with a reference for the caller;
 * NULL when it was not parsed before (or text is NULL). */
static struct cfg_entry *cfg_lookup(struct tool_state *st, const char *text)
{
    if (text == NULL)
        return NULL;
    size_t len = strlen(text);
    for (struct cfg_entry *e = st->cfgs; e; e = e->next) {
        if (e->len == len && memcmp(e->text, text, len) == 0) {
            if (e != st->cfgs) {
                cfg_unlink(st, e);
                cfg_push(st, e);
            }
            e->refs++;
            return e;
        }
    }
    return NULL;
}

/* Parses config (the JSON of `text`) and caches it; returns it with a
 * reference for the caller, or NULL with err set. */
static struct cfg_entry *cfg_parse(struct tool_state *st, const char *text, const json_t *config,
                                   struct tr_err *err)
{
    struct cfg_entry *e = tr_calloc(1, sizeof(*e));
    if (tool_http_cfg_parse(config, &e->cfg, err) != 0) {
        tr_free(e);
        return NULL;
    }
    if (st->opts->cfg_parses)
        (*st->opts->cfg_parses)++;
    e->len = strlen(text); /* config parsed, so it came from text */
    e->text = tr_strdup(text);
    e->refs = 2;           /* the caller's and the cache's */
    cfg_push(st, e);
    if (st->n_cfgs > CFG_CACHE_MAX) {
        struct cfg_entry *old = st->cfgs_tail;
        cfg_unlink(st, old);
        cfg_unref(old);
    }
    return e;
}

static void cfg_cache_clear(struct tool_state *st)
{
    while (st->cfgs) {
        struct cfg_entry *e = st->cfgs;
        cfg_unlink(st, e);
        cfg_unref(e);
    }
}

/* ------------------------------------------------------------------------ */
/* Results.                                                                   */

char *tool_text_repair(const void *data, size_t len, size_t *out_len)
{
    const unsigned char *p = data;
    size_t i = 0, k = 0;
    char *buf;

    while (i < len) { /* the common case: already UTF-8 */
        size_t n = tr_utf8_seq(p + i, len - i);
        if (n == 0)
            break;
        i += n;
    }
    if (i == len)
        return NULL;
    buf = tr_malloc(len * 3 + 1); /* worst case: every byte becomes U+FFFD */
    memcpy(buf, p, i);
    k = i;
    while (i < len) {
        size_t n = tr_utf8_seq(p + i, len - i);
        if (n == 0) {
            memcpy(buf + k, "\xef\xbf\xbd", 3);
            k += 3;
            i++;
            continue;
        }
        memcpy(buf + k, p + i, n);
        k += n;
        i += n;
    }
    buf[k] = '\0';
    *out_len = k;
    return buf;
}

json_t *tool_json_text(const void *data, size_t len)
{
    size_t n;
    char *fixed;
    json_t *s;

    if (len == 0 || !data)
        return json_string("");
    fixed = tool_text_repair(data, len, &n);
    s = fixed != NULL ? json_stringn(fixed, n) : json_stringn(data, len);
    tr_free(fixed);
    return s ? s : json_string("");
}

struct outcome {
    int ok;
    int is_error;
    int status;
    int truncated;
    const void *result;
    size_t result_len;
    const char *error;    /* NULL: none */
};

/* The result and the error are what the model will read: bytes that are not
 * UTF-8 become U+FFFD here, once (tool_text_repair). */
static void send_reply(struct tr_ctx *ctx, const struct tr_msg *req, uint64_t start_ms, uint64_t start_us,
                       uint32_t attempts,
                       const struct outcome *o)
{
    uint64_t now = tr_now_ms(ctx), now_us = tr_wall_us(ctx);
    size_t result_len = o->result != NULL ? o->result_len : 0, error_len = 0;
    char *result = o->result != NULL ? tool_text_repair(o->result, o->result_len, &result_len) : NULL;
    char *error = o->error != NULL ? tool_text_repair(o->error, strlen(o->error), &error_len) : NULL;
    struct tr_run_tool_result r = {
        .ok = o->ok != 0,
        .is_error = o->is_error != 0,
        .truncated = o->truncated != 0,
        .status = o->status,
        .attempts = attempts,
        .result = result != NULL ? result : (char *)o->result,
        .result_len = result_len,
        .error = error != NULL ? error : (char *)o->error,
        .duration_ms = now >= start_ms ? (uint32_t)(now - start_ms) : 0,
        .duration_us = now_us >= start_us ? now_us - start_us : 0,
    };
    struct tr_msg *m = tr_run_tool_result_msg(&r);
    tr_free(result);
    tr_free(error);
    int rv = tr_reply(ctx, req, m);
    if (rv != 0) {
        tr_log(TR_LOG_DEBUG, "tool: reply to actor %" PRIu64 " dropped: %s", req->from, tr_strerror(rv));
        tr_msg_free(m);
    }
}

static void reply_error(struct tr_ctx *ctx, const struct tr_msg *req, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void reply_error(struct tr_ctx *ctx, const struct tr_msg *req, const char *fmt, ...)
{
    char buf[ERROR_TEXT_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    struct outcome o = {.ok = 0, .is_error = 1, .error = buf};
    send_reply(ctx, req, tr_now_ms(ctx), tr_wall_us(ctx), 0, &o);
}

/* ------------------------------------------------------------------------ */
/* Calls.                                                                     */

static void call_free(struct call *c)
{
    cfg_unref(c->http);
    tr_free(c->hdrs);
    tr_free(c->key_header);
    tr_free(c->who_header);
    tr_free(c->body);
    tr_free(c->out);
    if (c->req)
        tr_msg_free(c->req);
    tr_free(c);
}

static void call_unlink(struct tool_state *st, struct call *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        st->calls = c->next;
    if (c->next)
        c->next->prev = c->prev;
    st->n_calls--;
}

static struct call *call_find(struct tool_state *st, uint64_t seq)
{
    for (struct call *c = st->calls; c; c = c->next)
        if (c->seq == seq)
            return c;
    return NULL;
}

/* Answer c's request and forget c. */
static void finish(struct tr_ctx *ctx, struct tool_state *st, struct call *c, const struct outcome *o)
{
    send_reply(ctx, c->req, c->start_ms, c->start_us, c->kind == CALL_HTTP ? c->attempts : 0, o);
    call_unlink(st, c);
    call_free(c);
}

static void finish_error(struct tr_ctx *ctx, struct tool_state *st, struct call *c, int status,
                         const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static void finish_error(struct tr_ctx *ctx, struct tool_state *st, struct call *c, int status,
                         const char *fmt, ...)
{
    char buf[ERROR_TEXT_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    struct outcome o = {.ok = 0, .is_error = 1, .status = status, .error = buf};
    finish(ctx, st, c, &o);
}

/* ------------------------------------------------------------------------ */
/* http                                                                       */

static uint32_t attempts_max(const struct tool_state *st)
{
    return st->opts->attempts ? st->opts->attempts : 3;
}

static size_t result_cap(const struct tool_state *st)
{
    return st->opts->max_result ? st->opts->max_result : TOOL_MAX_RESULT_DEFAULT;
}

/* 0 (and c answered) when this node must not start a side effect now: it is
 * fenced or not yet ready (raft/raft.h tr_state_may_act). The run that asked
 * is being stopped; its next owner sends the call with the same key. */
static int may_act(struct tr_ctx *ctx, struct tool_state *st, struct call *c)
{
    const struct tr_node_env *env = st->opts->env;
    if (env == NULL || env->state == NULL || tr_state_may_act(env->state))
        return 1;
    finish_error(ctx, st, c, 0, "not sent: this node is fenced (no live leader); the run's next owner will send it");
    return 0;
}

static void http_attempt(struct tr_ctx *ctx, struct tool_state *st, struct call *c)
{
    if (!may_act(ctx, st, c))
        return;
    uint64_t now = tr_now_ms(ctx);
    if (now >= c->deadline_ms) {
        finish_error(ctx, st, c, 0, "tool timed out after %u ms (%u attempts)", c->timeout_ms, c->attempts);
        return;
    }
    uint64_t left = c->deadline_ms - now;
    struct tr_http_req r = {
        .method = c->http->cfg.method,
        .url = c->http->cfg.url,
        .headers = c->hdrs,
        .n_headers = c->n_hdrs,
        .body = c->body,
        .body_len = c->body_len,
        .timeout_ms = (uint32_t)left,
        .connect_timeout_ms = (uint32_t)(left < 10000 ? left : 10000),
        .max_response = BODY_CAP_TRANSPORT,
        .stream = 1,
        .tag = c->seq,
    };
    c->out_len = 0;
    c->truncated = 0;
    int rv = tr_http_start(ctx, &r, &c->http_id);
    if (rv != 0) {
        finish_error(ctx, st, c, 0, "http tool %s: request not started: %s", c->http->cfg.host, tr_strerror(rv));
        return;
    }
    c->attempts++;
    c->http_active = 1;
}

/* Retry c after a backoff if attempts and time are left; else 0. */
static int http_retry(struct tr_ctx *ctx, struct tool_state *st, struct call *c)
{
    if (c->attempts >= attempts_max(st))
        return 0;
    uint64_t base = st->opts->backoff_ms ? st->opts->backoff_ms : 200;
    for (uint32_t i = 1; i < c->attempts && base < 60000; i++)
        base *= 4;
    uint64_t delay = base + tr_random(ctx) % (base / 2 + 1);
    if (tr_now_ms(ctx) + delay >= c->deadline_ms)
        return 0;
    struct tr_msg *m = tr_msg_make(TOOL_MSG_RETRY, &c->seq, sizeof(c->seq));
    if (tr_timer_start(ctx, delay, m, &c->timer_id) != 0) {
        tr_msg_free(m);
        return 0;
    }
    c->timer_active = 1;
    return 1;
}

static void on_http_chunk(struct tr_ctx *ctx, struct tool_state *st, const struct tr_msg *msg)
{
    struct tr_http_chunk ch;
    struct call *c;
    if (tr_http_chunk(msg, &ch) != 0 || !(c = call_find(st, ch.tag)) || !c->http_active ||
        c->http_id != ch.id || c->truncated)
        return;
    size_t cap = result_cap(st);
    size_t room = cap - c->out_len;
    size_t take = ch.len < room ? ch.len : room;
    if (take) {
        if (!c->out)
            c->out = tr_malloc(cap);
        memcpy(c->out + c->out_len, ch.data, take);
        c->out_len += take;
    }
    if (take < ch.len) {
        c->truncated = 1;
        tr_http_cancel(ctx, c->http_id);
    }
}

static void on_http_done(struct tr_ctx *ctx, struct tool_state *st, const struct tr_msg *msg)
{
    struct tr_http_result res;
    struct call *c;
    char text[ERROR_TEXT_MAX];

    if (tr_http_result(msg, &res) != 0 || !(c = call_find(st, res.tag)) || !c->http_active ||
        c->http_id != res.id)
        return;
    c->http_active = 0;
    int status = res.status;
    struct outcome o = {.ok = 1, .status = status, .truncated = c->truncated, .result = c->out,
                        .result_len = c->out_len};

    if (res.error != TR_OK && !(c->truncated && status > 0)) {
        if ((res.error == TR_EUNAVAIL || res.error == TR_EIO) && http_retry(ctx, st, c))
            return;
        if (res.error == TR_ETIMEDOUT)
            finish_error(ctx, st, c, status, "http tool %s: timed out after %u ms (%u attempts)", c->http->cfg.host,
                         c->timeout_ms, c->attempts);
        else
            finish_error(ctx, st, c, status, "http tool %s: %s: %s (%u attempts)", c->http->cfg.host,
                         tr_strerror(res.error), res.errmsg, c->attempts);
        return;
    }
    if (status >= 500) {
        if (http_retry(ctx, st, c))
            return;
        snprintf(text, sizeof(text), "HTTP %d %s after %u attempts: %.*s", status, tr_httpd_reason(status),
                 c->attempts, (int)(c->out_len < 2048 ? c->out_len : 2048), c->out ? c->out : "");
        o.ok = 0;
        o.is_error = 1;
        o.error = text;
    } else if (status >= 400) {
        if (c->out_len)
            snprintf(text, sizeof(text), "%.*s", (int)(c->out_len < sizeof(text) - 1 ? c->out_len : sizeof(text) - 1),
                     c->out);
        else
            snprintf(text, sizeof(text), "HTTP %d %s", status, tr_httpd_reason(status));
        o.is_error = 1;
        o.error = text;
    } else if (status >= 300) {
        char loc[512];
        if (tr_http_header(res.headers, res.headers_len, "location", loc, sizeof(loc)) < 0)
            snprintf(loc, sizeof(loc), "(none)");
        snprintf(text, sizeof(text), "HTTP %d redirect to %s not followed", status, loc);
        o.is_error = 1;
        o.error = text;
    }
    finish(ctx, st, c, &o);
}

static void on_retry_timer(struct tr_ctx *ctx, struct tool_state *st, const struct tr_msg *msg)
{
    uint64_t seq;
    struct call *c;
    if (msg->len != sizeof(seq))
        return;
    memcpy(&seq, msg->data, sizeof(seq));
    c = call_find(st, seq);
    if (!c || !c->timer_active)
        return;
    c->timer_active = 0;
    http_attempt(ctx, st, c);
}

static int key_ok(const char *k, size_t n)
{
    if (n == 0 || n > TOOL_MAX_KEY)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = k[i];
        if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F')))
            return 0;
    }
    return 1;
}

/* cached: the config's parse when cfg_lookup had it (the call takes that
 * reference), else NULL and config is parsed here. */
static void start_http(struct tr_ctx *ctx, struct tool_state *st, struct call *c, struct cfg_entry *cached,
                       const char *text, const json_t *config, const char *key, const char *name,
                       const char *run_id)
{
    struct tr_err err = {0};
    c->http = cached != NULL ? cached : cfg_parse(st, text, config, &err);
    if (c->http == NULL) {
        finish_error(ctx, st, c, 0, "tool %s: %s", name, err.msg);
        return;
    }
    const struct tool_http_cfg *cfg = &c->http->cfg;
    if (tool_http_decide(cfg, st->opts->node_allow, st->opts->n_node_allow, &err) != TOOL_HTTP_ALLOWED) {
        finish_error(ctx, st, c, 0, "tool %s: %s", name, err.msg);
        return;
    }
    size_t kl = strlen(key);
    c->key_header = tr_malloc(kl + sizeof("Idempotency-Key: "));
    memcpy(c->key_header, "Idempotency-Key: ", sizeof("Idempotency-Key: ") - 1);
    memcpy(c->key_header + sizeof("Idempotency-Key: ") - 1, key, kl + 1);
    /* Who calls: the node and the run (API.md "Tools that call out"); the
     * chaos suite's tool server checks with it that no two nodes act for
     * one run at once. */
    char who[160];
    snprintf(who, sizeof who, "X-Troupe-Caller: node=%llu run=%.64s",
             (unsigned long long)(st->opts->env ? st->opts->env->node_id : 0), run_id ? run_id : "");
    c->who_header = tr_strdup(who);
    c->hdrs = tr_calloc(cfg->n_headers + 3, sizeof(char *));
    for (size_t i = 0; i < cfg->n_headers; i++)
        c->hdrs[c->n_hdrs++] = cfg->headers[i];
    c->hdrs[c->n_hdrs++] = "Content-Type: application/json";
    c->hdrs[c->n_hdrs++] = c->key_header;
    c->hdrs[c->n_hdrs++] = c->who_header;
    http_attempt(ctx, st, c);
}

/* ------------------------------------------------------------------------ */
/* sandbox                                                                    */

static void start_sandbox(struct tr_ctx *ctx, struct tool_state *st, struct call *c, const json_t *config,
                          const char *name)
{
    struct tool_sandbox_cfg cfg;
    struct tr_err err = {0};
    if (!may_act(ctx, st, c))
        return;
    if (tool_sandbox_cfg_parse(config, &cfg, &err) != 0) {
        finish_error(ctx, st, c, 0, "tool %s: %s", name, err.msg);
        return;
    }
    c->gvisor = cfg.runtime == TOOL_SANDBOX_GVISOR;
    if (c->gvisor)
        c->prog = st->opts->runsc ? st->opts->runsc : "runsc";
    else
        c->prog = st->opts->bwrap ? st->opts->bwrap : "bwrap";
    char **argv = tool_sandbox_argv(&cfg, c->prog);
    struct tr_proc_opts po = {
        .file = c->prog,
        .argv = argv,
        .env = tool_sandbox_env(),
        .cwd = "/",
        .stdin_data = c->body,
        .stdin_len = c->body_len,
        .max_stdout = result_cap(st),
        .max_stderr = STDERR_CAP,
        .timeout_ms = c->timeout_ms,
        .tag = c->seq,
    };
    int rv = tr_proc_spawn(ctx, &po, &c->proc_id);
    tool_argv_free(argv);
    tool_sandbox_cfg_free(&cfg);
    if (rv != 0) {
        finish_error(ctx, st, c, 0, "tool %s: sandbox %s not started: %s", name, c->prog, tr_strerror(rv));
        return;
    }
    c->proc_active = 1;
}

static void on_proc_exit(struct tr_ctx *ctx, struct tool_state *st, const struct tr_msg *msg)
{
    struct tr_proc_result res;
    struct call *c;
    char text[ERROR_TEXT_MAX];

    if (tr_proc_result(msg, &res) != 0 || !(c = call_find(st, res.tag)) || !c->proc_active ||
        c->proc_id != res.id)
        return;
    c->proc_active = 0;
    if (res.error != TR_OK) {
        finish_error(ctx, st, c, 0, "sandbox %s could not start%s: %s", c->prog,
                     c->gvisor ? " (is gVisor installed and usable here?)" : "", res.errmsg);
        return;
    }
    if (res.timed_out) {
        finish_error(ctx, st, c, 0, "sandbox timed out after %u ms and was killed", c->timeout_ms);
        return;
    }
    if (res.term_signal) {
        finish_error(ctx, st, c, 0, "sandboxed program killed by signal %d", res.term_signal);
        return;
    }
    struct outcome o = {.ok = 1, .status = (int)res.exit_status, .truncated = res.stdout_truncated,
                        .result = res.out, .result_len = res.out_len};
    if (res.exit_status != 0) {
        size_t n = res.err_len < 2048 ? res.err_len : 2048;
        const char *e = (const char *)res.err + (res.err_len - n); /* the tail says most */
        snprintf(text, sizeof(text), "exit status %" PRId64 "%s%.*s", res.exit_status, n ? ": " : "", (int)n,
                 n ? e : "");
        o.is_error = 1;
        o.error = text;
    }
    finish(ctx, st, c, &o);
}

/* ------------------------------------------------------------------------ */
/* The actor.                                                                 */

static void on_call(struct tr_ctx *ctx, struct tool_state *st, struct tr_msg *msg)
{
    struct tr_tool_call_rec rec;
    json_error_t jerr;
    json_t *config = NULL;

    if (!(msg->flags & TR_MSGF_REQUEST)) {
        tr_log(TR_LOG_WARN, "tool: TR_MSG_TOOL_CALL from actor %" PRIu64 " is not a request; dropped", msg->from);
        return;
    }
    uint32_t max_inflight = st->opts->max_inflight ? st->opts->max_inflight : 1024;
    if (st->n_calls >= max_inflight) {
        reply_error(ctx, msg, "tool executor busy: %u calls in flight", st->n_calls);
        return;
    }
    if (msg->len > TOOL_MAX_REQUEST) {
        reply_error(ctx, msg, "tool call of %u bytes is over the %u byte limit", msg->len, TOOL_MAX_REQUEST);
        return;
    }
    if (tr_tool_call_read(msg->data, msg->len, &rec) != 0) {
        reply_error(ctx, msg, "tool call is not a whole call record (actors/wire.h)");
        return;
    }
    const char *tname = rec.name != NULL ? rec.name : "(unnamed)";
    if (rec.arguments == NULL) {
        reply_error(ctx, msg, "tool %.100s: call has no arguments", tname);
        goto out;
    }
    if (rec.idempotency_key == NULL || !key_ok(rec.idempotency_key, strlen(rec.idempotency_key))) {
        reply_error(ctx, msg, "tool %.100s: idempotency_key must be 1 to %d hex digits", tname, TOOL_MAX_KEY);
        goto out;
    }
    if (rec.kind == NULL) {
        reply_error(ctx, msg, "tool %.100s: the call names no kind", tname);
        goto out;
    }
    enum call_kind ck;
    if (strcmp(rec.kind, "http") == 0) {
        ck = CALL_HTTP;
    } else if (strcmp(rec.kind, "sandbox") == 0) {
        ck = CALL_SANDBOX;
    } else {
        reply_error(ctx, msg, "tool %.100s: kind \"%.64s\" is not run by the tool executor (http, sandbox)", tname,
                    rec.kind);
        goto out;
    }
    struct cfg_entry *cached = ck == CALL_HTTP ? cfg_lookup(st, rec.config) : NULL;
    if (cached == NULL && rec.config != NULL && (config = json_loads(rec.config, 0, &jerr)) == NULL) {
        reply_error(ctx, msg, "tool %.100s: config is not JSON: %s", tname, jerr.text);
        goto out;
    }
    uint32_t timeout_ms = TOOL_TIMEOUT_DEFAULT_MS;
    if (rec.timeout_ms != 0)
        timeout_ms = rec.timeout_ms > TOOL_TIMEOUT_MAX_MS ? TOOL_TIMEOUT_MAX_MS : (uint32_t)rec.timeout_ms;

    struct call *c = tr_calloc(1, sizeof(*c));
    c->seq = st->next_seq++;
    c->kind = ck;
    c->start_ms = tr_now_ms(ctx);
    c->start_us = tr_wall_us(ctx);
    c->timeout_ms = timeout_ms;
    c->deadline_ms = c->start_ms + timeout_ms;
    c->body_len = rec.arguments_len;
    c->body = rec.arguments; /* the body: the arguments as the run validated them */
    rec.arguments = NULL;
    tr_msg_keep(ctx, msg);
    c->req = msg;
    c->next = st->calls;
    if (st->calls)
        st->calls->prev = c;
    st->calls = c;
    st->n_calls++;
    if (ck == CALL_HTTP)
        start_http(ctx, st, c, cached, rec.config, config, rec.idempotency_key, tname, rec.run_id);
    else
        start_sandbox(ctx, st, c, config, tname);
out:
    json_decref(config);
    tr_tool_call_free(&rec);
}

static int tool_receive(struct tr_ctx *ctx, void *state, struct tr_msg *msg)
{
    struct tool_state *st = state;
    switch (msg->type) {
    case TR_MSG_TOOL_CALL:
        on_call(ctx, st, msg);
        break;
    case TR_MSG_HTTP_CHUNK:
        on_http_chunk(ctx, st, msg);
        break;
    case TR_MSG_HTTP_DONE:
        on_http_done(ctx, st, msg);
        break;
    case TR_MSG_PROC_EXIT:
        on_proc_exit(ctx, st, msg);
        break;
    case TOOL_MSG_RETRY:
        on_retry_timer(ctx, st, msg);
        break;
    default:
        if (msg->flags & TR_MSGF_REQUEST)
            reply_error(ctx, msg, "tool executor: unexpected message type %u", msg->type);
        break;
    }
    return 0;
}

static void start_state(struct tr_ctx *ctx, struct tool_state *st)
{
    /* Tags of a previous incarnation's requests must not match new calls. */
    st->next_seq = (tr_random(ctx) >> 16) << 16;
}

static int tool_init_env(struct tr_ctx *ctx, void *state, void *arg)
{
    struct tool_state *st = state;
    st->own.env = arg;
    st->opts = &st->own;
    start_state(ctx, st);
    return 0;
}

static int tool_init_opts(struct tr_ctx *ctx, void *state, void *arg)
{
    struct tool_state *st = state;
    st->opts = arg;
    start_state(ctx, st);
    return 0;
}

static void tool_fini(struct tr_ctx *ctx, void *state, enum tr_stop_reason why)
{
    struct tool_state *st = state;
    while (st->calls) {
        struct call *c = st->calls;
        if (c->http_active)
            tr_http_cancel(ctx, c->http_id);
        if (c->proc_active)
            tr_proc_kill(ctx, c->proc_id, SIGKILL);
        if (c->timer_active)
            tr_timer_cancel(ctx, c->timer_id);
        if (why != TR_STOP_SHUTDOWN) {
            struct outcome o = {.ok = 0, .is_error = 1, .error = "tool executor stopped"};
            send_reply(ctx, c->req, c->start_ms, c->start_us, 0, &o);
        }
        call_unlink(st, c);
        call_free(c);
    }
    cfg_cache_clear(st);
}

static const struct tr_behavior tool_behavior_env = {
    .name = "tool",
    .state_size = sizeof(struct tool_state),
    .init = tool_init_env,
    .receive = tool_receive,
    .fini = tool_fini,
};

static const struct tr_behavior tool_behavior_opts = {
    .name = "tool",
    .state_size = sizeof(struct tool_state),
    .init = tool_init_opts,
    .receive = tool_receive,
    .fini = tool_fini,
};

static int spawn(struct tr_rt *rt, const struct tr_behavior *b, void *arg, int sched, tr_actor_id *out)
{
    struct tr_spawn_opts so = {
        .behavior = b,
        .arg = arg,
        .sched = sched,
        .restart = TR_RESTART_ON_FAILURE,
    };
    return tr_spawn(rt, &so, out);
}

int tr_tool_spawn(struct tr_rt *rt, const struct tr_node_env *env, int sched, tr_actor_id *out)
{
    if (!rt || !out)
        return TR_EINVAL;
    return spawn(rt, &tool_behavior_env, (void *)env, sched, out);
}

int tool_spawn_opts(struct tr_rt *rt, const struct tool_opts *opts, int sched, tr_actor_id *out)
{
    if (!rt || !opts || !out)
        return TR_EINVAL;
    return spawn(rt, &tool_behavior_opts, (void *)opts, sched, out);
}
