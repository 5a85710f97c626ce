/* What several benchmarks share, so that their figures are computed the same
 * way: the mock model's ten-step scripts, step overhead and where it goes
 * (bench/run's bench_e2e, bench/cluster's bench_cluster), and the journal
 * event and append message the journal benchmarks send (bench_journal,
 * bench_cluster_journal).
 *
 * Step overhead of a finished run, from its events (GET .../events): for each
 * step, the time from its llm.requested to the next step's (or the run's end)
 * minus the model's latency and the longest tool duration, as journaled. The
 * gaps: the time between each pair of consecutive event types, the model's
 * latency and the tool's duration taken out of the pairs that contain them. */
#ifndef TR_BENCH_SUPPORT_H
#define TR_BENCH_SUPPORT_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "runtime/runtime.h"
#include "schemas/schemas.h"

/* troupe-mockllm script entries (members of "scripts", each followed by a
 * comma): "ten", nine calls of the write tool `add` and an answer; "tenread",
 * the same with the read tool `lookup`. */
#define BENCH_CALL(tool, a, b, extra) \
    "  {\"tool_calls\": [{\"name\": \"" tool "\", \"arguments\": {\"a\": " #a ", \"b\": " #b "}}]" extra "},"
#define BENCH_TEN_CALLS(tool, extra)                                                                         \
    BENCH_CALL(tool, 1, 2, extra) BENCH_CALL(tool, 2, 3, extra) BENCH_CALL(tool, 3, 4, extra)                \
    BENCH_CALL(tool, 4, 5, extra) BENCH_CALL(tool, 5, 6, extra) BENCH_CALL(tool, 6, 7, extra)                \
    BENCH_CALL(tool, 7, 8, extra) BENCH_CALL(tool, 8, 9, extra) BENCH_CALL(tool, 9, 10, extra)               \
    "  {\"content\": \"The last sum was {{last_tool_result}}\"" extra "}"
#define BENCH_SCRIPT_TEN " \"ten\": [" BENCH_TEN_CALLS("add", "") " ],"
#define BENCH_SCRIPT_TENREAD " \"tenread\": [" BENCH_TEN_CALLS("lookup", "") " ],"
/* "tenslow": "ten" with the model answering after 20 ms. */
#define BENCH_SCRIPT_TENSLOW " \"tenslow\": [" BENCH_TEN_CALLS("add", ", \"delay_ms\": 20") " ],"

/* A growing array of samples (exits on allocation failure). */
struct bench_samples {
    int64_t *v;
    size_t n, cap;
};
void bench_push(struct bench_samples *s, int64_t x);
void bench_sort(struct bench_samples *s);
/* The p-quantile of sorted samples (0 when there are none). */
int64_t bench_pct(const struct bench_samples *s, double p);
void bench_samples_free(struct bench_samples *s);

/* An event's "time" (RFC 3339, UTC, up to µs) in µs since the epoch; -1 if
 * it has none. */
int64_t bench_ev_time(json_t *event);

#define BENCH_GAP_KINDS 16
struct bench_gaps {
    char name[BENCH_GAP_KINDS][64];
    struct bench_samples s[BENCH_GAP_KINDS];
    int kinds;
};

/* Add the step overheads (µs) of one finished run to out, and its gaps to g
 * when g is not NULL. */
void bench_step_overheads(json_t *events, struct bench_samples *out, struct bench_gaps *g);
/* Print one line per pair of event types (p50, p99, max) and reset g. */
void bench_gaps_report(struct bench_gaps *g);

/* A typical journal event (llm.completed, ~300 bytes) of run_id at seq,
 * built in b; *out points into b. */
void bench_llm_event(struct tr_fb_builder *b, uint64_t run_id, uint64_t seq, uint8_t **out, size_t *len);
/* A TR_MSG_STATE_APPEND message carrying that event at epoch 1 (for
 * tr_request to the state service). */
struct tr_msg *bench_append_msg(struct tr_fb_builder *b, uint64_t run_id, uint64_t seq);

#endif /* TR_BENCH_SUPPORT_H */
