/* The llm actor: TR_MSG_LLM_CALL in, one Chat Completions exchange (or a few,
 * with backoff) out, TR_MSG_LLM_RESULT back. See actors/llm.h for the retry,
 * breaker and error rules, and actors/actors.h for the message shapes.
 *
 * Invariants
 *   1. Every request gets exactly one tr_reply: from finish_ok or
 *      finish_error, which also free the call; nothing else frees a call
 *      except fini.
 *   2. A call waits on at most one thing: an HTTP exchange (http_active) or
 *      a backoff timer (timer_active), never both.
 *   3. An exchange the breaker let through as its probe always has its
 *      outcome recorded (probe cleared right after), including when the
 *      actor stops with the probe in flight (recorded as a failure).
 *   4. Nothing is called back from inside a submitting call: HTTP results and
 *      timers arrive as messages.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "actors/llm.h"
#include "actors/run.h"

#define DEF_TIMEOUT_MS 60000u
#define DEF_CONNECT_MS 10000u
#define DEF_MAX_RESPONSE (8u << 20)
#define DEF_ATTEMPTS 4u
#define DEF_BACKOFF_BASE 200u
#define DEF_BACKOFF_CAP 10000u
#define DEF_MAX_RETRY_WAIT 30000u
#define DEF_MAX_INFLIGHT 4096u
#define MAX_ATTEMPTS_LIMIT 32u
#define BUCKETS 256u

/* ------------------------------------------------------------------------ */
/* Profiles: a spawned actor's fixed data, interned for the process.          */

struct llm_profile {
    struct llm_profile *next;
    struct tr_llm_config cfg;     /* resolved: no zero fields; strings owned */
    char *url;                    /* base_url + "/chat/completions" */
    char *auth;                   /* "Authorization: Bearer ..." or NULL */
    struct tr_llm_models *models;
    struct tr_llm_models *models_owned; /* loaded from models_path, else NULL */
    const void *env_models;       /* the node's table when it gave one */
    struct tr_llm_endpoint *ep;
};

static struct llm_profile *profiles;
static uv_mutex_t profiles_mu;
static uv_once_t profiles_once = UV_ONCE_INIT;

static void profiles_init(void)
{
    if (uv_mutex_init(&profiles_mu) != 0) {
        tr_log(TR_LOG_ERROR, "llm: profile registry mutex init failed");
        abort();
    }
}

static int str_eq(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static int cfg_eq(const struct tr_llm_config *a, const struct tr_llm_config *b)
{
    return str_eq(a->base_url, b->base_url) && str_eq(a->api_key, b->api_key) &&
           str_eq(a->models_path, b->models_path) && a->timeout_ms == b->timeout_ms &&
           a->connect_timeout_ms == b->connect_timeout_ms && a->max_response == b->max_response &&
           a->max_attempts == b->max_attempts && a->backoff_base_ms == b->backoff_base_ms &&
           a->backoff_cap_ms == b->backoff_cap_ms && a->max_retry_wait_ms == b->max_retry_wait_ms &&
           a->breaker_threshold == b->breaker_threshold && a->breaker_cooldown_ms == b->breaker_cooldown_ms &&
           a->breaker_cooldown_max_ms == b->breaker_cooldown_max_ms && a->max_inflight == b->max_inflight;
}

#define DEFAULT_TO(field, def) ((field) ? (field) : (def))

/* cfg with every default applied; strings borrowed from cfg or static. */
static void resolve(const struct tr_node_env *env, const struct tr_llm_config *in, struct tr_llm_config *out)
{
    *out = *in;
    if (out->base_url == NULL || out->base_url[0] == '\0')
        out->base_url = TR_LLM_DEFAULT_BASE_URL;
    if (out->api_key != NULL && out->api_key[0] == '\0')
        out->api_key = NULL;
    if (env != NULL && env->models != NULL)
        out->models_path = NULL; /* the node's table wins */
    else if (out->models_path != NULL && out->models_path[0] == '\0')
        out->models_path = NULL;
    out->timeout_ms = DEFAULT_TO(out->timeout_ms, env && env->llm_timeout_ms ? env->llm_timeout_ms : DEF_TIMEOUT_MS);
    out->connect_timeout_ms = DEFAULT_TO(out->connect_timeout_ms, DEF_CONNECT_MS);
    out->max_response = DEFAULT_TO(out->max_response, DEF_MAX_RESPONSE);
    out->max_attempts = DEFAULT_TO(out->max_attempts, DEF_ATTEMPTS);
    if (out->max_attempts > MAX_ATTEMPTS_LIMIT)
        out->max_attempts = MAX_ATTEMPTS_LIMIT;
    out->backoff_base_ms = DEFAULT_TO(out->backoff_base_ms, DEF_BACKOFF_BASE);
    out->backoff_cap_ms = DEFAULT_TO(out->backoff_cap_ms, DEF_BACKOFF_CAP);
    out->max_retry_wait_ms = DEFAULT_TO(out->max_retry_wait_ms, DEF_MAX_RETRY_WAIT);
    out->breaker_threshold = DEFAULT_TO(out->breaker_threshold, 5);
    out->breaker_cooldown_ms = DEFAULT_TO(out->breaker_cooldown_ms, 2000);
    out->breaker_cooldown_max_ms = DEFAULT_TO(out->breaker_cooldown_max_ms, 30000);
    out->max_inflight = DEFAULT_TO(out->max_inflight, DEF_MAX_INFLIGHT);
}

static char *strip_slashes(const char *s)
{
    size_t n = strlen(s);
    while (n > 0 && s[n - 1] == '/')
        n--;
    return tr_strndup(s, n);
}

static int profile_get(const struct tr_node_env *env, const struct tr_llm_config *in, struct llm_profile **out)
{
    struct tr_llm_config c;
    struct llm_profile *p;
    struct tr_err err;
    const void *env_models = env ? env->models : NULL;
    char *base;
    int rv = 0;

    resolve(env, in, &c);
    if (strncmp(c.base_url, "http://", 7) != 0 && strncmp(c.base_url, "https://", 8) != 0) {
        tr_log(TR_LOG_ERROR, "llm: base URL \"%.200s\" is not http:// or https://", c.base_url);
        return TR_EINVAL;
    }
    base = strip_slashes(c.base_url);
    c.base_url = base;
    uv_once(&profiles_once, profiles_init);
    uv_mutex_lock(&profiles_mu);
    for (p = profiles; p != NULL; p = p->next) {
        if (cfg_eq(&p->cfg, &c) && p->env_models == env_models)
            break;
    }
    if (p == NULL) {
        p = tr_calloc(1, sizeof *p);
        p->cfg = c;
        p->cfg.base_url = tr_strdup(base);
        p->cfg.api_key = c.api_key ? tr_strdup(c.api_key) : NULL;
        p->cfg.models_path = c.models_path ? tr_strdup(c.models_path) : NULL;
        p->env_models = env_models;
        if (env_models != NULL) {
            p->models = env->models;
        } else if (c.models_path != NULL) {
            rv = tr_llm_models_load(c.models_path, &p->models_owned, &err);
            if (rv != 0) {
                tr_log(TR_LOG_ERROR, "llm: %s", err.msg);
                goto err_after_profile;
            }
            p->models = p->models_owned;
        } else {
            p->models = tr_llm_models_builtin();
        }
        size_t ul = strlen(base) + sizeof "/chat/completions";
        p->url = tr_malloc(ul);
        snprintf(p->url, ul, "%s/chat/completions", base);
        if (c.api_key != NULL) {
            size_t al = strlen(c.api_key) + sizeof "Authorization: Bearer ";
            p->auth = tr_malloc(al);
            snprintf(p->auth, al, "Authorization: Bearer %s", c.api_key);
        }
        p->ep = tr_llm_endpoint_get(base, c.breaker_threshold, c.breaker_cooldown_ms, c.breaker_cooldown_max_ms);
        p->next = profiles;
        profiles = p;
    }
    uv_mutex_unlock(&profiles_mu);
    tr_free(base);
    *out = p;
    return 0;

err_after_profile:
    uv_mutex_unlock(&profiles_mu);
    tr_free((char *)p->cfg.base_url);
    tr_free((char *)p->cfg.api_key);
    tr_free((char *)p->cfg.models_path);
    tr_free(p);
    tr_free(base);
    return rv;
}

void tr_llm_config_from_env(struct tr_llm_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->base_url = getenv("OPENAI_BASE_URL");
    cfg->api_key = getenv("OPENAI_API_KEY");
    cfg->models_path = getenv("TROUPE_MODELS");
}

/* ------------------------------------------------------------------------ */
/* The actor.                                                                 */

static _Atomic uint64_t tot_calls, tot_ok, tot_failed, tot_breaker, tot_attempts, tot_prompt, tot_completion,
    tot_cost;

void tr_llm_totals_get(struct tr_llm_totals *out)
{
    out->calls = atomic_load_explicit(&tot_calls, memory_order_relaxed);
    out->ok = atomic_load_explicit(&tot_ok, memory_order_relaxed);
    out->failed = atomic_load_explicit(&tot_failed, memory_order_relaxed);
    out->breaker_rejected = atomic_load_explicit(&tot_breaker, memory_order_relaxed);
    out->attempts = atomic_load_explicit(&tot_attempts, memory_order_relaxed);
    out->prompt_tokens = atomic_load_explicit(&tot_prompt, memory_order_relaxed);
    out->completion_tokens = atomic_load_explicit(&tot_completion, memory_order_relaxed);
    out->cost_micro_usd = atomic_load_explicit(&tot_cost, memory_order_relaxed);
}

static void count(_Atomic uint64_t *c, uint64_t n)
{
    atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

/* Failure classes of one attempt. */
enum fail_kind { F_UNAVAILABLE, F_TIMEOUT, F_RATE_LIMITED, F_GARBAGE };

static const char *const fail_code[] = {"unavailable", "timeout", "rate_limited", "bad_response"};

struct llm_call {
    struct llm_call *next;        /* hash chain */
    uint64_t tag;                 /* names the call in HTTP results and timers */
    struct tr_msg *req;           /* header-only copy of the request, for tr_reply */
    char *body;
    size_t body_len;
    char *model;
    char run_id[40];              /* for logs */
    uint64_t started_ms;
    uint64_t started_us;
    uint32_t attempts;
    uint32_t garbage;             /* attempts that got an unusable answer */
    uint64_t http_id;
    uint64_t timer_id;
    unsigned http_active : 1;
    unsigned timer_active : 1;
    unsigned probe : 1;
    enum fail_kind last_provider_kind; /* of the last attempt that was not garbage */
    uint64_t retry_after_ms;      /* the provider's, from the last failure; 0 if none */
    char last_error[256];
};

struct llm_state {
    const struct llm_profile *p;
    struct llm_call *buckets[BUCKETS];
    uint32_t n_calls;
    uint64_t next_tag;
};

static struct llm_call **slot_of(struct llm_state *st, uint64_t tag)
{
    struct llm_call **pp = &st->buckets[tag % BUCKETS];
    while (*pp != NULL && (*pp)->tag != tag)
        pp = &(*pp)->next;
    return pp;
}

static struct llm_call *call_find(struct llm_state *st, uint64_t tag)
{
    return *slot_of(st, tag);
}

static void call_free(struct llm_state *st, struct llm_call *c)
{
    struct llm_call **pp = slot_of(st, c->tag);
    if (*pp == c) {
        *pp = c->next;
        st->n_calls--;
    }
    tr_msg_free(c->req);
    tr_free(c->body);
    tr_free(c->model);
    tr_free(c);
}

static void send_reply(struct tr_ctx *ctx, const struct tr_msg *req, const struct tr_run_llm_result *res,
                       const char *finish_reason, const char *run_id)
{
    struct tr_msg *m = tr_run_llm_result_msg(res, finish_reason);
    int rv = tr_reply(ctx, req, m);
    if (rv != 0) {
        tr_msg_free(m);
        tr_log(TR_LOG_WARN, "llm: reply to run %s lost: %s", run_id, tr_strerror(rv));
    }
}

static void reply_error(struct tr_ctx *ctx, const struct tr_msg *req, const char *run_id, const char *code,
                        const char *message, int retryable, uint64_t retry_after_ms)
{
    struct tr_run_llm_result r = {
        .error_code = (char *)code,
        .error_message = (char *)message,
        .retryable = retryable != 0,
        .retry_after_ms = retry_after_ms > UINT32_MAX ? UINT32_MAX : (uint32_t)retry_after_ms,
    };
    count(&tot_failed, 1);
    if (strcmp(code, "breaker_open") == 0)
        count(&tot_breaker, 1);
    send_reply(ctx, req, &r, NULL, run_id);
}

static void finish_ok(struct tr_ctx *ctx, struct llm_state *st, struct llm_call *c, struct tr_llm_response *r,
                      const char *header_request_id)
{
    struct tr_llm_models *models = st->p->models;
    const char *price_name = c->model;
    uint64_t cost;

    if (tr_llm_models_find(models, c->model) == NULL && r->model != NULL &&
        tr_llm_models_find(models, r->model) != NULL)
        price_name = r->model;
    cost = tr_llm_models_cost(models, price_name, r->prompt_tokens, r->completion_tokens, NULL);
    uint64_t now_us = tr_wall_us(ctx), now_ms = tr_now_ms(ctx);
    /* The record borrows the response's strings: nothing here is freed
     * before it is written. */
    struct tr_run_llm_result res = {
        .ok = true,
        .content = (char *)json_string_value(r->content),
        .model = (char *)(r->model ? r->model : c->model),
        .request_id = (char *)(r->id[0] ? r->id : header_request_id),
        .prompt_tokens = r->prompt_tokens,
        .completion_tokens = r->completion_tokens,
        .cost_micro_usd = cost,
        .latency_ms = now_ms > c->started_ms ? (uint32_t)(now_ms - c->started_ms) : 0,
        .latency_us = now_us > c->started_us ? now_us - c->started_us : 0,
        .attempts = c->attempts,
    };
    for (size_t i = 0; i < json_array_size(r->tool_calls) && res.n_calls < TR_RUN_MAX_CALLS; i++) {
        json_t *tc = json_array_get(r->tool_calls, i);
        res.calls[res.n_calls].id = (char *)json_string_value(json_object_get(tc, "id"));
        res.calls[res.n_calls].name = (char *)json_string_value(json_object_get(tc, "name"));
        res.calls[res.n_calls].arguments = (char *)json_string_value(json_object_get(tc, "arguments"));
        res.n_calls++;
    }
    count(&tot_ok, 1);
    count(&tot_prompt, r->prompt_tokens);
    count(&tot_completion, r->completion_tokens);
    count(&tot_cost, cost);
    send_reply(ctx, c->req, &res, r->finish_reason, c->run_id);
    call_free(st, c);
}

static uint64_t exp_delay(const struct tr_llm_config *cfg, uint32_t n)
{
    uint64_t d = cfg->backoff_base_ms;
    for (uint32_t i = 0; i < n && d < cfg->backoff_cap_ms; i++)
        d *= 2;
    return d > cfg->backoff_cap_ms ? cfg->backoff_cap_ms : d;
}

/* Answer with the call's last failure. When every attempt got garbage the
 * provider is broken for this request: not retryable. Otherwise the run is
 * told to come back after the provider's Retry-After, or the next backoff
 * ceiling, or `wait_ms` when the caller computed a longer wait. */
static void finish_error(struct tr_ctx *ctx, struct llm_state *st, struct llm_call *c, uint64_t wait_ms)
{
    const struct tr_llm_config *cfg = &st->p->cfg;
    int all_garbage = c->garbage == c->attempts;
    enum fail_kind kind = all_garbage ? F_GARBAGE : c->last_provider_kind;
    uint64_t after = 0;
    char msg[512];

    if (!all_garbage) {
        after = exp_delay(cfg, c->attempts);
        if (c->retry_after_ms > after)
            after = c->retry_after_ms;
        if (wait_ms > after)
            after = wait_ms;
    }
    snprintf(msg, sizeof msg, "%.200s: %.250s (after %u attempt%s)", st->p->cfg.base_url, c->last_error, c->attempts,
             c->attempts == 1 ? "" : "s");
    tr_log(TR_LOG_WARN, "llm: run %s: %s", c->run_id, msg);
    reply_error(ctx, c->req, c->run_id, fail_code[kind], msg, !all_garbage, after);
    call_free(st, c);
}

static void record_breaker(struct tr_ctx *ctx, struct llm_state *st, struct llm_call *c, int ok)
{
    tr_llm_endpoint_record(st->p->ep, tr_now_ms(ctx), ok, c->probe);
    c->probe = 0;
}

/* The endpoint answered, but with something unusable for this call (a bad
 * body, a body over the cap, a 1xx/3xx): not a sign of the provider's
 * health, since one prompt can provoke it. It does not move the breaker;
 * a probe that got it reports the endpoint up (invariant 3). */
static void record_answered(struct tr_ctx *ctx, struct llm_state *st, struct llm_call *c)
{
    if (c->probe)
        record_breaker(ctx, st, c, 1);
}

static void attempt(struct tr_ctx *ctx, struct llm_state *st, struct llm_call *c);

/* One attempt failed: wait and try again, or answer. */
static void retry_or_finish(struct tr_ctx *ctx, struct llm_state *st, struct llm_call *c, enum fail_kind kind)
{
    const struct tr_llm_config *cfg = &st->p->cfg;
    uint64_t delay;
    struct tr_msg *m;
    int rv;

    if (kind == F_GARBAGE)
        c->garbage++;
    else
        c->last_provider_kind = kind;
    tr_log(TR_LOG_DEBUG, "llm: run %s attempt %u: %s", c->run_id, c->attempts, c->last_error);
    if (c->attempts >= cfg->max_attempts) {
        finish_error(ctx, st, c, 0);
        return;
    }
    delay = tr_llm_backoff_ms(c->attempts, cfg->backoff_base_ms, cfg->backoff_cap_ms, tr_random(ctx));
    if (c->retry_after_ms > delay)
        delay = c->retry_after_ms;
    if (delay > cfg->max_retry_wait_ms) {
        /* Too long to hold the call here: the durable run waits instead. */
        finish_error(ctx, st, c, delay);
        return;
    }
    m = tr_msg_make(TR_MSG_LLM_RETRY_TIMER, &c->tag, sizeof c->tag);
    rv = tr_timer_start(ctx, delay, m, &c->timer_id);
    if (rv != 0) {
        tr_msg_free(m);
        finish_error(ctx, st, c, delay);
        return;
    }
    c->timer_active = 1;
}

static void attempt(struct tr_ctx *ctx, struct llm_state *st, struct llm_call *c)
{
    const struct llm_profile *p = st->p;
    const char *headers[4];
    size_t nh = 0;
    uint64_t wait_ms;
    int probe, rv;

    if (!tr_llm_endpoint_allow(p->ep, tr_now_ms(ctx), &probe, &wait_ms)) {
        char msg[512];
        if (c->attempts == 0)
            snprintf(msg, sizeof msg, "%.200s: circuit breaker open", p->cfg.base_url);
        else
            snprintf(msg, sizeof msg, "%.200s: circuit breaker open (after %u attempt%s, last: %.250s)", p->cfg.base_url,
                     c->attempts, c->attempts == 1 ? "" : "s", c->last_error);
        if (wait_ms == 0)
            wait_ms = 1;
        reply_error(ctx, c->req, c->run_id, "breaker_open", msg, 1, wait_ms);
        call_free(st, c);
        return;
    }
    c->probe = probe != 0;
    c->attempts++;
    count(&tot_attempts, 1);
    c->retry_after_ms = 0;
    headers[nh++] = "Content-Type: application/json";
    headers[nh++] = "Accept: application/json";
    headers[nh++] = "User-Agent: troupe";
    if (p->auth != NULL)
        headers[nh++] = p->auth;
    struct tr_http_req hr = {
        .method = "POST",
        .url = p->url,
        .headers = headers,
        .n_headers = nh,
        .body = c->body,
        .body_len = c->body_len,
        .timeout_ms = p->cfg.timeout_ms,
        .connect_timeout_ms = p->cfg.connect_timeout_ms,
        .max_response = p->cfg.max_response,
        .tag = c->tag,
    };
    rv = tr_http_start(ctx, &hr, &c->http_id);
    if (rv != 0) {
        /* Not the endpoint's fault, but a probe must report: as a failure. */
        if (c->probe)
            record_breaker(ctx, st, c, 0);
        snprintf(c->last_error, sizeof c->last_error, "cannot start the request: %s", tr_strerror(rv));
        retry_or_finish(ctx, st, c, F_UNAVAILABLE);
        return;
    }
    c->http_active = 1;
}

static void provider_retry_after(struct tr_ctx *ctx, const struct tr_http_result *r, struct llm_call *c)
{
    char v[128];
    uint64_t ms;

    if (tr_http_header(r->headers, r->headers_len, "retry-after-ms", v, sizeof v) >= 0 &&
        tr_llm_parse_retry_after_ms(v, &ms) == 0) {
        c->retry_after_ms = ms;
        return;
    }
    if (tr_http_header(r->headers, r->headers_len, "retry-after", v, sizeof v) >= 0 &&
        tr_llm_parse_retry_after(v, tr_wall_us(ctx) / 1000, &ms) == 0)
        c->retry_after_ms = ms;
}

static void on_http_done(struct tr_ctx *ctx, struct llm_state *st, const struct tr_msg *msg)
{
    struct tr_http_result r;
    struct tr_llm_response resp;
    struct tr_err err;
    struct llm_call *c;
    char pmsg[200], reqid[128];

    if (tr_http_result(msg, &r) != 0)
        return;
    c = call_find(st, r.tag);
    if (c == NULL || !c->http_active || c->http_id != r.id)
        return; /* a call already answered */
    c->http_active = 0;
    if (r.error != TR_OK) {
        enum fail_kind kind = r.error == TR_ETIMEDOUT ? F_TIMEOUT : r.error == TR_ETOOBIG ? F_GARBAGE : F_UNAVAILABLE;
        if (kind == F_GARBAGE)
            record_answered(ctx, st, c);
        else
            record_breaker(ctx, st, c, 0);
        snprintf(c->last_error, sizeof c->last_error, "%s: %.200s", tr_strerror(r.error), r.errmsg);
        retry_or_finish(ctx, st, c, kind);
        return;
    }
    if (r.status >= 200 && r.status < 300) {
        if (tr_llm_parse_response(r.body, r.body_len, &resp, &err) == 0) {
            record_breaker(ctx, st, c, 1);
            if (tr_http_header(r.headers, r.headers_len, "x-request-id", reqid, sizeof reqid) < 0)
                reqid[0] = '\0';
            finish_ok(ctx, st, c, &resp, reqid);
            tr_llm_response_free(&resp);
            return;
        }
        record_answered(ctx, st, c);
        snprintf(c->last_error, sizeof c->last_error, "HTTP %d with a bad body: %.200s", r.status, err.msg);
        retry_or_finish(ctx, st, c, F_GARBAGE);
        return;
    }
    tr_llm_error_message(r.body, r.body_len, pmsg, sizeof pmsg);
    if (r.status == 429 || (r.status >= 500 && r.status <= 599)) {
        record_breaker(ctx, st, c, r.status == 429);
        provider_retry_after(ctx, &r, c);
        snprintf(c->last_error, sizeof c->last_error, "HTTP %d%s%.200s", r.status, pmsg[0] ? ": " : "", pmsg);
        retry_or_finish(ctx, st, c, r.status == 429 ? F_RATE_LIMITED : F_UNAVAILABLE);
        return;
    }
    if (r.status >= 400 && r.status <= 499) {
        char m[512];
        record_breaker(ctx, st, c, 1);
        snprintf(m, sizeof m, "%.200s: HTTP %d%s%.200s", st->p->cfg.base_url, r.status, pmsg[0] ? ": " : "", pmsg);
        tr_log(TR_LOG_WARN, "llm: run %s: %s", c->run_id, m);
        reply_error(ctx, c->req, c->run_id, "rejected", m, 0, 0);
        call_free(st, c);
        return;
    }
    record_answered(ctx, st, c);
    snprintf(c->last_error, sizeof c->last_error, "unexpected HTTP status %d", r.status);
    retry_or_finish(ctx, st, c, F_GARBAGE);
}

static void on_timer(struct tr_ctx *ctx, struct llm_state *st, const struct tr_msg *msg)
{
    uint64_t tag;
    struct llm_call *c;

    if (msg->len != sizeof tag)
        return;
    memcpy(&tag, msg->data, sizeof tag);
    c = call_find(st, tag);
    if (c == NULL || !c->timer_active)
        return;
    c->timer_active = 0;
    attempt(ctx, st, c);
}

static void on_call(struct tr_ctx *ctx, struct llm_state *st, const struct tr_msg *msg)
{
    const struct llm_profile *p = st->p;
    struct tr_llm_call_view cv;
    struct tr_err err;
    struct llm_call *c;
    char run_id[40];

    count(&tot_calls, 1);
    if (!(msg->flags & TR_MSGF_REQUEST)) {
        tr_log(TR_LOG_WARN, "llm: an LLM_CALL that is not a request (from %llx) is dropped",
               (unsigned long long)msg->from);
        return;
    }
    if (st->n_calls >= p->cfg.max_inflight) {
        reply_error(ctx, msg, "?", "unavailable", "llm gateway busy: too many calls in flight", 1,
                    p->cfg.backoff_cap_ms);
        return;
    }
    if (tr_llm_call_parse(msg->data, msg->len, &cv, &err) != 0) {
        char m[600];
        snprintf(run_id, sizeof run_id, "%.*s", (int)cv.run_id_len, cv.run_id);
        snprintf(m, sizeof m, "bad llm call: %.500s", err.msg);
        tr_log(TR_LOG_WARN, "llm: run %s: %s", run_id, m);
        reply_error(ctx, msg, run_id, "rejected", m, 0, 0);
        return;
    }
    c = tr_calloc(1, sizeof *c);
    c->tag = ++st->next_tag;
    c->req = tr_msg_new(msg->type, 0);
    c->req->from = msg->from;
    c->req->corr = msg->corr;
    c->req->flags = msg->flags;
    c->model = tr_strndup(cv.model, cv.model_len);
    c->body_len = cv.body_len;
    c->body = tr_memdup(cv.body, cv.body_len);
    snprintf(c->run_id, sizeof c->run_id, "%.*s", (int)cv.run_id_len, cv.run_id);
    c->started_ms = tr_now_ms(ctx);
    c->started_us = tr_wall_us(ctx);
    c->next = st->buckets[c->tag % BUCKETS];
    st->buckets[c->tag % BUCKETS] = c;
    st->n_calls++;
    attempt(ctx, st, c);
}

static int llm_init(struct tr_ctx *ctx, void *state, void *arg)
{
    struct llm_state *st = state;
    st->p = arg;
    return 0;
}

static int llm_receive(struct tr_ctx *ctx, void *state, struct tr_msg *msg)
{
    struct llm_state *st = state;

    switch (msg->type) {
    case TR_MSG_LLM_CALL:
        on_call(ctx, st, msg);
        break;
    case TR_MSG_HTTP_DONE:
        on_http_done(ctx, st, msg);
        break;
    case TR_MSG_LLM_RETRY_TIMER:
        on_timer(ctx, st, msg);
        break;
    default:
        break;
    }
    return 0;
}

/* Give back what in-flight calls hold; tell their requesters unless the
 * runtime is going away. */
static void llm_fini(struct tr_ctx *ctx, void *state, enum tr_stop_reason why)
{
    struct llm_state *st = state;

    for (uint32_t b = 0; b < BUCKETS; b++) {
        while (st->buckets[b] != NULL) {
            struct llm_call *c = st->buckets[b];
            if (c->http_active)
                tr_http_cancel(ctx, c->http_id);
            if (c->timer_active)
                tr_timer_cancel(ctx, c->timer_id);
            if (c->probe)
                record_breaker(ctx, st, c, 0);
            if (why != TR_STOP_SHUTDOWN)
                reply_error(ctx, c->req, c->run_id, "unavailable", "llm gateway stopped", 1,
                            st->p->cfg.backoff_base_ms);
            call_free(st, c);
        }
    }
}

static const struct tr_behavior llm_behavior = {
    .name = "llm",
    .state_size = sizeof(struct llm_state),
    .init = llm_init,
    .receive = llm_receive,
    .fini = llm_fini,
};

int tr_llm_spawn_config(struct tr_rt *rt, const struct tr_node_env *env, const struct tr_llm_config *cfg,
                        int sched, tr_actor_id *out)
{
    struct llm_profile *p;
    int rv;

    rv = profile_get(env, cfg, &p);
    if (rv != 0)
        return rv;
    struct tr_spawn_opts so = {
        .behavior = &llm_behavior,
        .arg = p,
        .sched = sched,
        .restart = TR_RESTART_ON_FAILURE,
    };
    return tr_spawn(rt, &so, out);
}

int tr_llm_spawn(struct tr_rt *rt, const struct tr_node_env *env, int sched, tr_actor_id *out)
{
    struct tr_llm_config cfg;

    tr_llm_config_from_env(&cfg);
    return tr_llm_spawn_config(rt, env, &cfg, sched, out);
}
