/* The llm gateway's circuit breaker: a pure state machine fed the time, and
 * the process-wide registry that gives each endpoint (base URL) one breaker
 * shared by every llm actor.
 *
 *   CLOSED    -- threshold consecutive failures -->  OPEN (cool-down = base)
 *   OPEN      -- now >= opened_at + cool-down    -->  HALF_OPEN (on the next allow)
 *   HALF_OPEN -- first allow                     -->  the probe goes; others refused
 *   HALF_OPEN -- probe succeeded                 -->  CLOSED
 *   HALF_OPEN -- probe failed                    -->  OPEN (cool-down doubled, capped)
 *
 * Outcomes of requests that were let through before the breaker opened are
 * counted but do not move an open breaker: only the probe decides. */
#include <stdlib.h>
#include <string.h>

#include "actors/llm.h"

void tr_llm_breaker_init(struct tr_llm_breaker *b, uint32_t threshold, uint32_t cooldown_ms,
                         uint32_t cooldown_max_ms)
{
    memset(b, 0, sizeof *b);
    b->threshold = threshold ? threshold : 5;
    b->cooldown_base_ms = cooldown_ms ? cooldown_ms : 2000;
    b->cooldown_max_ms = cooldown_max_ms ? cooldown_max_ms : 30000;
    if (b->cooldown_max_ms < b->cooldown_base_ms)
        b->cooldown_max_ms = b->cooldown_base_ms;
    b->cooldown_ms = b->cooldown_base_ms;
    b->state = TR_LLM_BREAKER_CLOSED;
}

static void open_at(struct tr_llm_breaker *b, uint64_t now_ms, uint32_t cooldown_ms)
{
    b->state = TR_LLM_BREAKER_OPEN;
    b->opened_at_ms = now_ms;
    b->cooldown_ms = cooldown_ms;
    b->probe_in_flight = 0;
    b->cooldown_over = 0;
    b->opens++;
}

enum tr_llm_breaker_state tr_llm_breaker_state_at(const struct tr_llm_breaker *b, uint64_t now_ms)
{
    if (b->state == TR_LLM_BREAKER_OPEN && (b->cooldown_over || now_ms >= b->opened_at_ms + b->cooldown_ms))
        return TR_LLM_BREAKER_HALF_OPEN;
    return b->state;
}

int tr_llm_breaker_allow(struct tr_llm_breaker *b, uint64_t now_ms, int *probe, uint64_t *retry_after_ms)
{
    *probe = 0;
    *retry_after_ms = 0;
    switch (b->state) {
    case TR_LLM_BREAKER_CLOSED:
        return 1;
    case TR_LLM_BREAKER_OPEN:
        if (!b->cooldown_over && now_ms < b->opened_at_ms + b->cooldown_ms) {
            b->rejected++;
            *retry_after_ms = b->opened_at_ms + b->cooldown_ms - now_ms;
            return 0;
        }
        b->state = TR_LLM_BREAKER_HALF_OPEN;
        b->probe_in_flight = 0;
        /* fall through */
    case TR_LLM_BREAKER_HALF_OPEN:
        if (b->probe_in_flight) {
            b->rejected++;
            /* Ask again once a probe could have answered, never sooner than 1 ms. */
            *retry_after_ms = b->cooldown_base_ms;
            return 0;
        }
        b->probe_in_flight = 1;
        *probe = 1;
        return 1;
    }
    return 1;
}

void tr_llm_breaker_record(struct tr_llm_breaker *b, uint64_t now_ms, int ok, int probe)
{
    if (ok) {
        b->successes++;
        b->consecutive_failures = 0;
        if (probe && b->state == TR_LLM_BREAKER_HALF_OPEN) {
            b->state = TR_LLM_BREAKER_CLOSED;
            b->probe_in_flight = 0;
            b->cooldown_ms = b->cooldown_base_ms;
        }
        return;
    }
    b->failures++;
    if (probe && b->state == TR_LLM_BREAKER_HALF_OPEN) {
        uint64_t next = (uint64_t)b->cooldown_ms * 2;
        open_at(b, now_ms, next > b->cooldown_max_ms ? b->cooldown_max_ms : (uint32_t)next);
        return;
    }
    if (b->state != TR_LLM_BREAKER_CLOSED)
        return;
    b->consecutive_failures++;
    if (b->consecutive_failures >= b->threshold)
        open_at(b, now_ms, b->cooldown_base_ms);
}

const char *tr_llm_breaker_state_name(enum tr_llm_breaker_state s)
{
    switch (s) {
    case TR_LLM_BREAKER_CLOSED:
        return "closed";
    case TR_LLM_BREAKER_OPEN:
        return "open";
    case TR_LLM_BREAKER_HALF_OPEN:
        return "half_open";
    }
    return "unknown";
}

/* ---- the registry --------------------------------------------------------- */

struct tr_llm_endpoint {
    struct tr_llm_endpoint *next;
    char *base_url;
    struct tr_llm_breaker b;
};

/* Entries are never removed: pointers handed out stay valid. */
static struct tr_llm_endpoint *endpoints;
static uv_mutex_t reg_mu;
static uv_once_t reg_once = UV_ONCE_INIT;

static void reg_init(void)
{
    if (uv_mutex_init(&reg_mu) != 0) {
        tr_log(TR_LOG_ERROR, "llm: breaker registry mutex init failed");
        abort();
    }
}

static struct tr_llm_endpoint *find_locked(const char *base_url)
{
    for (struct tr_llm_endpoint *ep = endpoints; ep != NULL; ep = ep->next) {
        if (strcmp(ep->base_url, base_url) == 0)
            return ep;
    }
    return NULL;
}

struct tr_llm_endpoint *tr_llm_endpoint_get(const char *base_url, uint32_t threshold, uint32_t cooldown_ms,
                                            uint32_t cooldown_max_ms)
{
    struct tr_llm_endpoint *ep;

    uv_once(&reg_once, reg_init);
    uv_mutex_lock(&reg_mu);
    ep = find_locked(base_url);
    if (ep == NULL) {
        ep = tr_calloc(1, sizeof *ep);
        ep->base_url = tr_strdup(base_url);
        tr_llm_breaker_init(&ep->b, threshold, cooldown_ms, cooldown_max_ms);
        ep->next = endpoints;
        endpoints = ep;
    }
    uv_mutex_unlock(&reg_mu);
    return ep;
}

int tr_llm_endpoint_allow(struct tr_llm_endpoint *ep, uint64_t now_ms, int *probe, uint64_t *retry_after_ms)
{
    int rv;

    uv_mutex_lock(&reg_mu);
    rv = tr_llm_breaker_allow(&ep->b, now_ms, probe, retry_after_ms);
    uv_mutex_unlock(&reg_mu);
    return rv;
}

void tr_llm_endpoint_record(struct tr_llm_endpoint *ep, uint64_t now_ms, int ok, int probe)
{
    enum tr_llm_breaker_state before, after;

    uv_mutex_lock(&reg_mu);
    before = ep->b.state;
    tr_llm_breaker_record(&ep->b, now_ms, ok, probe);
    after = ep->b.state;
    uv_mutex_unlock(&reg_mu);
    if (before != after)
        tr_log(after == TR_LLM_BREAKER_CLOSED ? TR_LOG_INFO : TR_LOG_WARN, "llm: breaker of %s: %s -> %s",
               ep->base_url, tr_llm_breaker_state_name(before), tr_llm_breaker_state_name(after));
}

int tr_llm_endpoint_stats(const char *base_url, uint64_t now_ms, struct tr_llm_breaker *out)
{
    struct tr_llm_endpoint *ep;

    uv_once(&reg_once, reg_init);
    uv_mutex_lock(&reg_mu);
    ep = find_locked(base_url);
    if (ep != NULL) {
        *out = ep->b;
        out->state = tr_llm_breaker_state_at(&ep->b, now_ms);
    }
    uv_mutex_unlock(&reg_mu);
    return ep ? 0 : TR_ENOTFOUND;
}

int tr_llm_endpoint_reset(const char *base_url)
{
    struct tr_llm_endpoint *ep;

    uv_once(&reg_once, reg_init);
    uv_mutex_lock(&reg_mu);
    ep = find_locked(base_url);
    if (ep != NULL)
        tr_llm_breaker_init(&ep->b, ep->b.threshold, ep->b.cooldown_base_ms, ep->b.cooldown_max_ms);
    uv_mutex_unlock(&reg_mu);
    return ep ? 0 : TR_ENOTFOUND;
}

int tr_llm_endpoint_end_cooldown(const char *base_url)
{
    struct tr_llm_endpoint *ep;
    int rv = 0;

    uv_once(&reg_once, reg_init);
    uv_mutex_lock(&reg_mu);
    ep = find_locked(base_url);
    if (ep == NULL)
        rv = TR_ENOTFOUND;
    else if (ep->b.state != TR_LLM_BREAKER_OPEN)
        rv = TR_EINVAL;
    else
        ep->b.cooldown_over = 1;
    uv_mutex_unlock(&reg_mu);
    return rv;
}

void tr_llm_endpoint_foreach(uint64_t now_ms,
                             void (*fn)(const char *base_url, const struct tr_llm_breaker *b, void *arg),
                             void *arg)
{
    struct tr_llm_breaker copy;

    uv_once(&reg_once, reg_init);
    uv_mutex_lock(&reg_mu);
    for (struct tr_llm_endpoint *ep = endpoints; ep != NULL; ep = ep->next) {
        copy = ep->b;
        copy.state = tr_llm_breaker_state_at(&ep->b, now_ms);
        fn(ep->base_url, &copy, arg);
    }
    uv_mutex_unlock(&reg_mu);
}
