/* actors/llm: the model gateway (private to actors/ and its tests).
 *
 * An llm actor (one per scheduler, tr_llm_spawn in actors.h) answers
 * TR_MSG_LLM_CALL requests by calling an OpenAI-compatible Chat Completions
 * endpoint through the runtime's curl adapter. This header holds its parts
 * that are useful on their own or to tests: the configuration, the price
 * table and models file, the per-endpoint circuit breaker, and the pure
 * helpers (request body, response parsing, Retry-After, backoff, cost).
 *
 * Happy path: LLM_CALL -> check its header (the body is sent as is) -> breaker allows
 * -> POST base_url/chat/completions -> 2xx with a well-formed body -> reply
 * {"ok": true, ...} with usage and cost.
 *
 * Failure modes, per attempt (an attempt is one HTTP exchange):
 *   transport error, connect failure   -> "unavailable", retried
 *   curl timeout                        -> "timeout", retried
 *   429                                 -> "rate_limited", retried
 *   5xx                                 -> "unavailable", retried
 *   2xx with an invalid body, 1xx/3xx,
 *   a body over the size cap            -> "bad_response", retried
 *   other 4xx                           -> "rejected", answered at once
 * Retries wait full-jitter exponential backoff, or the provider's
 * Retry-After / retry-after-ms when longer, on a runtime timer. A wait longer
 * than max_retry_wait_ms is not taken in place: the call is answered
 * retryable with that retry_after_ms, so the durable run waits instead.
 * After max_attempts the last failure is answered: "bad_response" with
 * retryable false (the provider keeps answering garbage to this request:
 * the run fails), anything else retryable true.
 *
 * Circuit breaker: one per endpoint (base URL), shared by every llm actor of
 * the process. closed --threshold consecutive failures--> open --cool-down-->
 * half-open: one probe passes, others are refused --probe ok--> closed;
 * --probe failed--> open with the cool-down doubled (up to its max). A call
 * refused by the breaker is answered at once: "breaker_open", retryable,
 * retry_after_ms = time left until half-open. Only signals of the
 * provider's health count as failures for the breaker: transport errors
 * (connect failures, resets, a body cut short), timeouts and 5xx. 429 and
 * other 4xx show the endpoint is up and count as successes. An answer that
 * is unusable for this call (a 2xx whose body is not a valid completion, a
 * body over max_response, a 1xx/3xx) is a per-call failure: retried and
 * answered "bad_response" as above, but it does not count for the breaker,
 * which every run on the node shares (one run's prompt that makes the
 * provider answer garbage must not refuse the endpoint to all the others);
 * a half-open probe that gets one reports the endpoint up.
 */
#ifndef TR_ACTORS_LLM_H
#define TR_ACTORS_LLM_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <uv.h>

#include "actors/actors.h"
#include "runtime/runtime.h"

/* ------------------------------------------------------------------------ */
/* Configuration.                                                             */

#define TR_LLM_DEFAULT_BASE_URL "https://api.openai.com/v1"

/* Zero fields take the default in brackets. Strings are copied at spawn. */
struct tr_llm_config {
    const char *base_url;          /* [$OPENAI_BASE_URL, else TR_LLM_DEFAULT_BASE_URL]; http(s) */
    const char *api_key;           /* [$OPENAI_API_KEY]; NULL or "": no Authorization header */
    const char *models_path;       /* price table file when env->models is NULL [$TROUPE_MODELS,
                                      else the built-in table] */
    uint32_t timeout_ms;           /* one attempt [env->llm_timeout_ms, else 60000] */
    uint32_t connect_timeout_ms;   /* [10000] */
    uint32_t max_response;         /* response body cap in bytes [8 MiB] */
    uint32_t max_attempts;         /* HTTP exchanges per call [4] */
    uint32_t backoff_base_ms;      /* [200] */
    uint32_t backoff_cap_ms;       /* [10000] */
    uint32_t max_retry_wait_ms;    /* longest Retry-After honoured in place [30000] */
    uint32_t breaker_threshold;    /* consecutive failures that open it [5] */
    uint32_t breaker_cooldown_ms;  /* first open period [2000] */
    uint32_t breaker_cooldown_max_ms; /* [30000] */
    uint32_t max_inflight;         /* calls per actor; more are answered "unavailable" [4096] */
};

/* Fill cfg with base_url and api_key from the environment (OPENAI_BASE_URL,
 * OPENAI_API_KEY) and models_path from TROUPE_MODELS; other fields zero. The
 * strings point into the environment: use them before the next setenv. */
void tr_llm_config_from_env(struct tr_llm_config *cfg);

/* tr_llm_spawn with an explicit configuration (tr_llm_spawn uses
 * tr_llm_config_from_env). TR_EINVAL (logged) when the base URL is not
 * http(s) or the models file cannot be loaded. The actor's fixed data (the
 * copied configuration and its price table) is interned for the life of the
 * process: spawning many actors with one configuration shares one copy. */
int tr_llm_spawn_config(struct tr_rt *rt, const struct tr_node_env *env, const struct tr_llm_config *cfg,
                        int sched, tr_actor_id *out);

/* Process-wide counters of every llm actor, for /metrics. Monotonic. */
struct tr_llm_totals {
    uint64_t calls;                /* TR_MSG_LLM_CALL requests received */
    uint64_t ok;                   /* answered ok */
    uint64_t failed;               /* answered with an error (breaker_open included) */
    uint64_t breaker_rejected;     /* answered breaker_open */
    uint64_t attempts;             /* HTTP exchanges started */
    uint64_t prompt_tokens;
    uint64_t completion_tokens;
    uint64_t cost_micro_usd;
};
void tr_llm_totals_get(struct tr_llm_totals *out);

/* Message type of the actor's own backoff timers (private to llm.c). */
#define TR_MSG_LLM_RETRY_TIMER (TR_MSG_LLM_CALL + 8)

/* ------------------------------------------------------------------------ */
/* Price table and models file.                                               */

/* Prices are kept in micro-USD per million tokens (USD per 1M tokens times
 * 10^6, rounded to the nearest integer), so that cost is exact integer
 * arithmetic. */
#define TR_LLM_MAX_PRICE_MICRO 1000000000000ull /* 10^6 USD per 1M tokens */
#define TR_LLM_MODEL_NAME_MAX 128
#define TR_LLM_MODELS_MAX 4096
#define TR_LLM_MODELS_FILE_MAX (1u << 20)

struct tr_llm_model {
    char name[TR_LLM_MODEL_NAME_MAX + 1];
    char provider[32];             /* "openai" unless the file says otherwise */
    uint64_t prompt_micro;         /* micro-USD per 1M prompt tokens */
    uint64_t completion_micro;     /* micro-USD per 1M completion tokens */
    uint32_t context_tokens;       /* 0 when unknown */
};

struct tr_llm_models; /* thread-safe for lookups and cost */

/* Parse a models file's JSON text:
 *   {"models": {"<name>": {"prompt_per_mtok": num, "completion_per_mtok": num,
 *                          "provider": str, "context_tokens": int}, ...}}
 * Both prices are required, non-negative and at most 10^6; provider
 * (openai|anthropic|mock) and context_tokens are optional. Unknown keys are
 * errors (a misspelt price must not silently cost 0). On error err names the
 * model and field. The caller frees *out with tr_llm_models_free. */
int tr_llm_models_parse(const char *text, size_t len, struct tr_llm_models **out, struct tr_err *err);
/* Read and parse a file (at most TR_LLM_MODELS_FILE_MAX bytes). */
int tr_llm_models_load(const char *path, struct tr_llm_models **out, struct tr_err *err);
/* The built-in table: a few OpenAI models, and "mock-gpt" (free) and
 * "mock-priced" (1 and 2 USD per 1M tokens) for troupe-mockllm. */
struct tr_llm_models *tr_llm_models_builtin(void);
void tr_llm_models_free(struct tr_llm_models *m);
size_t tr_llm_models_count(const struct tr_llm_models *m);

/* The entry for name: an exact match, else the longest entry that is a
 * prefix of name followed by "-" and a digit (dated snapshots such as
 * "gpt-4o-mini-2024-07-18"). NULL when unknown. */
const struct tr_llm_model *tr_llm_models_find(const struct tr_llm_models *m, const char *name);

/* ceil((prompt_tokens * prompt_micro + completion_tokens * completion_micro)
 * / 10^6): the exact cost in micro-USD rounded up once, saturating at
 * UINT64_MAX (prices up to TR_LLM_MAX_PRICE_MICRO never saturate below
 * 1.8 * 10^13 tokens). */
uint64_t tr_llm_cost(uint64_t prompt_tokens, uint64_t prompt_micro, uint64_t completion_tokens,
                     uint64_t completion_micro);
/* Cost of one call in micro-USD. An unknown model costs 0; the first time a
 * name is missed it is logged as a warning (*unknown set to 1 every time). */
uint64_t tr_llm_models_cost(struct tr_llm_models *m, const char *model, uint64_t prompt_tokens,
                            uint64_t completion_tokens, int *unknown);

/* ------------------------------------------------------------------------ */
/* Circuit breaker (pure: time is an argument; no locking).                   */

enum tr_llm_breaker_state { TR_LLM_BREAKER_CLOSED, TR_LLM_BREAKER_OPEN, TR_LLM_BREAKER_HALF_OPEN };

struct tr_llm_breaker {
    uint32_t threshold;
    uint32_t cooldown_base_ms;
    uint32_t cooldown_max_ms;
    enum tr_llm_breaker_state state;
    uint32_t consecutive_failures;
    uint32_t cooldown_ms;          /* of the current open period */
    uint64_t opened_at_ms;
    int probe_in_flight;           /* half-open: the one probe was let through */
    int cooldown_over;             /* tr_llm_endpoint_end_cooldown was called */
    /* counters since creation or reset */
    uint64_t successes;
    uint64_t failures;
    uint64_t rejected;
    uint64_t opens;
};

/* A closed breaker; zero arguments take the defaults (5, 2000, 30000). */
void tr_llm_breaker_init(struct tr_llm_breaker *b, uint32_t threshold, uint32_t cooldown_ms,
                         uint32_t cooldown_max_ms);
/* May a request go out at now_ms? 1: yes (*probe set when it is the
 * half-open probe: its outcome must be recorded with probe 1); 0: refused,
 * *retry_after_ms is the time until the next probe may go. */
int tr_llm_breaker_allow(struct tr_llm_breaker *b, uint64_t now_ms, int *probe, uint64_t *retry_after_ms);
/* Record the outcome of an allowed request. */
void tr_llm_breaker_record(struct tr_llm_breaker *b, uint64_t now_ms, int ok, int probe);
/* The state as seen at now_ms (an open breaker past its cool-down reads
 * half-open); does not change b. */
enum tr_llm_breaker_state tr_llm_breaker_state_at(const struct tr_llm_breaker *b, uint64_t now_ms);
const char *tr_llm_breaker_state_name(enum tr_llm_breaker_state s);

/* The process-wide registry of endpoints: one mutex-protected breaker per
 * base URL. Entries live until the process exits. */
struct tr_llm_endpoint;
/* The endpoint of base_url, created with these breaker parameters if new
 * (an existing endpoint keeps its own). Thread-safe; never NULL. */
struct tr_llm_endpoint *tr_llm_endpoint_get(const char *base_url, uint32_t threshold, uint32_t cooldown_ms,
                                            uint32_t cooldown_max_ms);
int tr_llm_endpoint_allow(struct tr_llm_endpoint *ep, uint64_t now_ms, int *probe, uint64_t *retry_after_ms);
void tr_llm_endpoint_record(struct tr_llm_endpoint *ep, uint64_t now_ms, int ok, int probe);
/* A copy of the breaker of base_url as of now_ms, with state as seen at
 * now_ms; TR_ENOTFOUND when no actor has used that endpoint. For tests and
 * /metrics. now_ms is on the runtime's monotonic clock (uv_now of a loop or
 * tr_now_ms): the one the actors use. */
int tr_llm_endpoint_stats(const char *base_url, uint64_t now_ms, struct tr_llm_breaker *out);
/* Close the breaker of base_url and zero its counters (operators, tests). */
int tr_llm_endpoint_reset(const char *base_url);
/* End the current cool-down of an open breaker now: the next call is the
 * half-open probe (operators, tests). TR_ENOTFOUND for an unknown endpoint,
 * TR_EINVAL when the breaker is not open. */
int tr_llm_endpoint_end_cooldown(const char *base_url);
/* Calls fn for every endpoint (under the registry lock: fn must not call
 * back into the registry). */
void tr_llm_endpoint_foreach(uint64_t now_ms, void (*fn)(const char *base_url, const struct tr_llm_breaker *b,
                                                         void *arg),
                             void *arg);

/* ------------------------------------------------------------------------ */
/* Wire helpers (pure).                                                       */

#define TR_LLM_MAX_CALL_BYTES (16u << 20)  /* a TR_MSG_LLM_CALL payload */
#define TR_LLM_MAX_TOOL_CALLS 256          /* per response */

#define TR_LLM_CALL_MODEL_MAX 256
#define TR_LLM_CALL_TENANT_MAX 256
#define TR_LLM_CALL_RUN_ID_MAX 64

/* A checked TR_MSG_LLM_CALL payload (actors.h); pointers into it, not
 * NUL-terminated. */
struct tr_llm_call_view {
    uint32_t step;
    const char *model, *tenant, *run_id, *body;
    size_t model_len, tenant_len, run_id_len, body_len;
};

/* Check a TR_MSG_LLM_CALL payload: the header, that the lengths add up to
 * len (at most TR_LLM_MAX_CALL_BYTES), a model of 1 to
 * TR_LLM_CALL_MODEL_MAX bytes without control characters, and a body that
 * looks like a JSON object ('{' ... '}'). The body is not parsed: its
 * sender built it. TR_EINVAL with err saying what is wrong; out->run_id is
 * set as soon as it can be read (for logs), else points to "?". */
int tr_llm_call_parse(const void *data, size_t len, struct tr_llm_call_view *out, struct tr_err *err);

/* A TR_MSG_LLM_CALL message (tr_msg_new'd; the caller sends or frees it)
 * carrying body (body_len bytes, the Chat Completions request body) as is.
 * tenant and run_id may be NULL; longer than their maximum they are cut
 * (they only name the call in logs). A model longer than
 * TR_LLM_CALL_MODEL_MAX makes a payload that tr_llm_call_parse refuses. */
struct tr_msg *tr_llm_call_msg(const char *model, const char *tenant, const char *run_id, uint32_t step,
                               const char *body, size_t body_len);

/* A call in JSON, {"model", "messages", "tools", "temperature", "tenant",
 * "run_id", "step"} (the shape TR_MSG_LLM_CALL had before it carried the
 * body as is; for tests and tools), validated and turned into a
 * TR_MSG_LLM_CALL message (*out, as tr_llm_call_msg) whose body is
 * {"model", "messages", "tools"+"tool_choice":"auto" when tools is a
 * non-empty array, "temperature" when given, "stream": false}. TR_EINVAL
 * with err saying what is wrong. */
int tr_llm_call_from_json(const char *call, size_t len, struct tr_msg **out, struct tr_err *err);

/* A parsed, valid completion. Strings point into root (a reference held). */
struct tr_llm_response {
    json_t *root;
    json_t *content;               /* JSON string or JSON null */
    json_t *tool_calls;            /* a new array of {"id","name","arguments"} */
    const char *refusal;           /* NULL when none */
    const char *finish_reason;
    const char *model;             /* NULL when the body names none */
    const char *id;                /* "" when the body has none */
    uint64_t prompt_tokens;
    uint64_t completion_tokens;
};
/* Parse a 2xx body. TR_EPROTO with err saying what is wrong when the body is
 * not a usable completion (not JSON, no choices, tool call fields missing or
 * not strings, arguments not a string, usage negative, content and tool
 * calls both missing while finish_reason is "stop" or "tool_calls"...). On
 * success release with tr_llm_response_free. */
int tr_llm_parse_response(const void *body, size_t len, struct tr_llm_response *out, struct tr_err *err);
void tr_llm_response_free(struct tr_llm_response *r);

/* The provider's error message in an error body ({"error": {"message"}}),
 * copied into buf (truncated); "" when the body has none. */
void tr_llm_error_message(const void *body, size_t len, char *buf, size_t cap);

/* Retry-After: delta seconds or an HTTP-date (IMF-fixdate, RFC 850 or
 * asctime), relative to now_wall_ms (milliseconds since the epoch). A date
 * in the past gives 0. Returns 0 and *out_ms, or -1 when value is not one of
 * those forms. */
int tr_llm_parse_retry_after(const char *value, uint64_t now_wall_ms, uint64_t *out_ms);
/* retry-after-ms: a non-negative decimal number of milliseconds. */
int tr_llm_parse_retry_after_ms(const char *value, uint64_t *out_ms);

/* Full-jitter backoff before retry number `retry` (1 for the first retry):
 * rnd mod (min(cap, base * 2^(retry-1)) + 1). */
uint64_t tr_llm_backoff_ms(uint32_t retry, uint32_t base_ms, uint32_t cap_ms, uint64_t rnd);

#endif /* TR_ACTORS_LLM_H */
