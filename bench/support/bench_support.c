/* What several benchmarks share: see bench_support.h. */
#include "bench_support.h"

#include <stdio.h>
#include <stdlib.h>
#include <pthread.h>
#include <string.h>
#include <time.h>

#include "raft/raft.h"
#include "schemas/journal_generated.h"

void bench_push(struct bench_samples *s, int64_t x)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 1024;
        s->v = realloc(s->v, s->cap * sizeof *s->v);
        if (s->v == NULL) {
            perror("realloc");
            exit(1);
        }
    }
    s->v[s->n++] = x;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

void bench_sort(struct bench_samples *s)
{
    if (s->n > 0)
        qsort(s->v, s->n, sizeof *s->v, cmp_i64);
}

int64_t bench_pct(const struct bench_samples *s, double p)
{
    if (s->n == 0)
        return 0;
    return s->v[(size_t)(p * (double)(s->n - 1) + 0.5)];
}

void bench_samples_free(struct bench_samples *s)
{
    free(s->v);
    memset(s, 0, sizeof *s);
}

int64_t bench_ev_time(json_t *e)
{
    const char *s = json_string_value(json_object_get(e, "time"));
    struct tm tm = { 0 };
    long usec = 0;
    if (s == NULL || sscanf(s, "%d-%d-%dT%d:%d:%d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min,
                            &tm.tm_sec) != 6)
        return -1;
    const char *dot = strchr(s, '.');
    if (dot != NULL) {
        size_t digits = strspn(dot + 1, "0123456789");
        usec = strtol(dot + 1, NULL, 10);
        for (size_t d = digits; d < 6; d++)
            usec *= 10;
    }
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (int64_t)timegm(&tm) * 1000000 + usec;
}

static int64_t data_int(json_t *e, const char *key)
{
    return (int64_t)json_integer_value(json_object_get(json_object_get(e, "data"), key));
}

static void gap_add(struct bench_gaps *g, const char *from, const char *to, int64_t us)
{
    char name[64];
    int k;
    snprintf(name, sizeof name, "%s -> %s", from, to);
    for (k = 0; k < g->kinds; k++)
        if (!strcmp(g->name[k], name))
            break;
    if (k == g->kinds) {
        if (k == BENCH_GAP_KINDS)
            return;
        snprintf(g->name[k], sizeof g->name[k], "%s", name);
        g->kinds++;
    }
    bench_push(&g->s[k], us > 0 ? us : 0);
}

void bench_step_overheads(json_t *events, struct bench_samples *out, struct bench_gaps *g)
{
    int64_t start = -1, llm_us = 0, tool_us = 0, prev_t = -1;
    const char *prev_type = NULL;
    for (size_t i = 0; i < json_array_size(events); i++) {
        json_t *e = json_array_get(events, i);
        const char *type = json_string_value(json_object_get(e, "type"));
        int64_t t = bench_ev_time(e);
        if (type == NULL)
            continue;
        if (g != NULL && prev_type != NULL) {
            int64_t d = t - prev_t;
            if (!strcmp(type, "llm.completed"))
                d -= data_int(e, "latency_us");
            else if (!strcmp(type, "tool.completed"))
                d -= data_int(e, "duration_us");
            gap_add(g, prev_type, type, d);
        }
        prev_type = type;
        prev_t = t;
        int boundary = !strcmp(type, "llm.requested") || !strcmp(type, "run.succeeded") || !strcmp(type, "run.failed");
        if (boundary && start >= 0) {
            int64_t o = t - start - llm_us - tool_us;
            bench_push(out, o > 0 ? o : 0);
        }
        if (!strcmp(type, "llm.requested")) {
            start = t;
            llm_us = tool_us = 0;
        } else if (!strcmp(type, "llm.completed")) {
            llm_us = data_int(e, "latency_us");
        } else if (!strcmp(type, "tool.completed")) {
            int64_t dur = data_int(e, "duration_us");
            if (dur > tool_us)
                tool_us = dur; /* parallel calls overlap: the longest */
        }
    }
}

void bench_gaps_report(struct bench_gaps *g)
{
    for (int k = 0; k < g->kinds; k++) {
        struct bench_samples *s = &g->s[k];
        bench_sort(s);
        printf("  %-40s %5zu gaps: p50 %.3f ms, p99 %.3f ms, max %.3f ms\n", g->name[k], s->n,
               bench_pct(s, 0.5) / 1000.0, bench_pct(s, 0.99) / 1000.0, s->n ? s->v[s->n - 1] / 1000.0 : 0.0);
        bench_samples_free(s);
    }
    g->kinds = 0;
}

/* Words for the events' text, drawn uniformly, so that compression (raft
 * entries are LZ4-compressed when big: raft/entry.c) meets text that varies
 * from event to event as real model output does, not one sentence repeated.
 * Measured: 4,096 of these events (1.57 MB) LZ4-compress 3.0x; with the one
 * fixed sentence used before, 49x. */
static const char *const words[] = {
    "the", "of", "and", "to", "a", "in", "is", "it", "you", "that", "he", "was", "for", "on", "are",
    "with", "as", "I", "his", "they", "be", "at", "one", "have", "this", "from", "or", "had", "by",
    "hot", "word", "but", "what", "some", "we", "can", "out", "other", "were", "all", "there", "when",
    "up", "use", "your", "how", "said", "an", "each", "she", "which", "do", "their", "time", "if",
    "will", "way", "about", "many", "then", "them", "write", "would", "like", "so", "these", "her",
    "long", "make", "thing", "see", "him", "two", "has", "look", "more", "day", "could", "go", "come",
    "did", "number", "sound", "no", "most", "people", "my", "over", "know", "water", "than", "call",
    "first", "who", "may", "down", "side", "been", "now", "find", "any", "new", "work", "part", "take",
    "get", "place", "made", "live", "where", "after", "back", "little", "only", "round", "man", "year",
    "came", "show", "every", "good", "me", "give", "our", "under", "name", "very", "through", "just",
    "form", "sentence", "great", "think", "say", "help", "low", "line", "differ", "turn", "cause",
    "much", "mean", "before", "move", "right", "boy", "old", "too", "same", "tell", "does", "set",
    "three", "want", "air", "well", "also", "play", "small", "end", "put", "home", "read", "hand",
    "port", "large", "spell", "add", "even", "land", "here", "must", "big", "high", "such", "follow",
    "act", "why", "ask", "men", "change", "went", "light", "kind", "off", "need", "house", "picture",
    "try", "us", "again", "animal", "point", "mother", "world", "near", "build", "self", "earth",
    "father", "search", "document", "result", "summary", "invoice", "customer", "refund", "order",
    "ticket", "alert", "service", "latency", "error", "deploy", "metric", "report", "account",
};

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    return x ^ (x >> 33);
}

/* 4,096 texts of ~180 characters, made once: an event takes one by a hash
 * of (run, seq), so that neighbouring events in an entry differ (LZ4 looks
 * back 64 KiB, ~170 events) without the appenders, which run inside the
 * measured nodes, building text for every append. */
#define POOL 4096
static char pool[POOL][200];
static pthread_once_t pool_once = PTHREAD_ONCE_INIT;

static void pool_fill(void)
{
    const size_t n_words = sizeof words / sizeof words[0];
    for (uint64_t i = 0; i < POOL; i++) {
        char *content = pool[i];
        size_t at = 0;
        uint64_t r = mix64(i + 1);
        while (at < 180) {
            r = mix64(r + 1);
            double u = (double)(r >> 11) / 9007199254740992.0;
            const char *w = words[(size_t)(u * (double)n_words)];
            size_t wl = strlen(w);
            if (at + wl + 2 > sizeof pool[i])
                break;
            if (at > 0)
                content[at++] = ' ';
            memcpy(content + at, w, wl);
            at += wl;
        }
        content[at] = '\0';
    }
}

void bench_llm_event(struct tr_fb_builder *b, uint64_t run_id, uint64_t seq, uint8_t **out, size_t *len)
{
    char text[TR_RUN_ID_TEXT_LEN];
    uint64_t r = mix64(run_id * 0x9e3779b97f4a7c15ULL + seq);
    pthread_once(&pool_once, pool_fill);
    const char *content = pool[r % POOL];

    tr_fb_builder_reset(b);
    tr_run_id_text(run_id, text);
    tr_fb_ref c = tr_fb_create_str(b, content);
    tr_fb_ref model = tr_fb_create_str(b, "gpt-4o-mini");
    troupe_journal_Usage_start(b);
    troupe_journal_Usage_add_prompt_tokens(b, 800 + (uint32_t)(r % 1600));
    troupe_journal_Usage_add_completion_tokens(b, 20 + (uint32_t)((r >> 16) % 120));
    troupe_journal_Usage_add_cost_micro_usd(b, 100 + (r >> 32) % 400);
    tr_fb_ref u = troupe_journal_Usage_end(b);
    troupe_journal_LlmCompleted_start(b);
    troupe_journal_LlmCompleted_add_step(b, (uint32_t)seq);
    troupe_journal_LlmCompleted_add_model(b, model);
    troupe_journal_LlmCompleted_add_content(b, c);
    troupe_journal_LlmCompleted_add_usage(b, u);
    tr_fb_ref data = troupe_journal_LlmCompleted_end(b);
    tr_fb_ref rid = tr_fb_create_str(b, text);
    troupe_journal_Event_start(b);
    troupe_journal_Event_add_seq(b, seq);
    troupe_journal_Event_add_time_us(b, 1700000000000000LL + (int64_t)seq);
    troupe_journal_Event_add_run_id(b, rid);
    troupe_journal_Event_add_epoch(b, 1);
    troupe_journal_Event_add_data_type(b, troupe_journal_Data_LlmCompleted);
    troupe_journal_Event_add_data(b, data);
    troupe_journal_Event_finish(b, troupe_journal_Event_end(b));
    *out = (uint8_t *)tr_fb_builder_data(b, len);
}

struct tr_msg *bench_append_msg(struct tr_fb_builder *b, uint64_t run_id, uint64_t seq)
{
    uint8_t *ev;
    size_t len;
    bench_llm_event(b, run_id, seq, &ev, &len);
    struct tr_msg *m = tr_msg_new(TR_MSG_STATE_APPEND, (uint32_t)(sizeof(struct tr_append_msg) + len));
    struct tr_append_msg *am = (struct tr_append_msg *)m->data;
    memset(am, 0, sizeof *am);
    am->run_id = run_id;
    am->epoch = 1;
    am->seq = seq;
    am->len = (uint32_t)len;
    am->blob_len = 0;
    memcpy(am->event, ev, len);
    return m;
}
