/* A harness for the run core: a journal in memory, a fake tool registry, a
 * scripted llm and tool executor, and FSM-written events built with the
 * generated builders. Time is an input: by default it is a function of the
 * journal length, so that replays produce byte-identical events. */
#ifndef TR_TEST_RUN_HARNESS_H
#define TR_TEST_RUN_HARNESS_H

#include "actors/run.h"
#include "records.h"

#define H_MAX_TOOLS 8
#define H_MAX_EVENTS 4096

struct harness;
/* Result JSON (a TR_MSG_TOOL_RESULT body, tr_malloc'd) for one execution. */
typedef char *(*h_tool_fn)(struct harness *h, const char *name, const char *args, const char *key, uint32_t step,
                           uint32_t idx);
/* Reply JSON (a TR_MSG_LLM_RESULT body, tr_malloc'd) for step `step`. */
typedef char *(*h_llm_fn)(struct harness *h, uint32_t step, uint32_t attempt);

struct h_agent {
    const char *goal;
    const char *system;
    const char *tools[8];
    uint32_t max_steps;     /* 0: schema default (50) */
    uint64_t max_tokens;
    double max_cost_usd;
    uint32_t timeout_s;
};

struct harness {
    struct tr_run_state s;
    struct tr_run_vol v;
    struct tr_run_env env;
    int64_t base_us;
    int64_t fixed_now;          /* when non-zero: the time, else base + 1000 * next_seq */
    uint8_t *ev[H_MAX_EVENTS];
    size_t len[H_MAX_EVENTS];
    uint32_t n;
    struct tr_run_tool tools[H_MAX_TOOLS];
    struct tr_schema *schemas[H_MAX_TOOLS];
    uint32_t n_tools;
    h_llm_fn llm;
    h_tool_fn tool;
    bool manual_tools;          /* h_drive returns at CALL_TOOL */
    bool manual_llm;            /* h_drive returns at CALL_LLM */
    bool no_ack;                /* appends stay in flight (h_ack_all acks) */
    /* When set, h_drive answers an approval as the FSM would after a human
     * decided: the callback returns the decision (troupe_journal_Decision). */
    int (*decide_approval)(struct harness *h, const struct tr_run_call *c);
    uint32_t llm_calls, tool_calls;
    char last_key[2 * TR_RUN_DIGEST + 1];
    void *ud;
};

void h_init(struct harness *h, const struct h_agent *a, h_llm_fn llm, h_tool_fn tool);
void h_free(struct harness *h);
void h_add_tool(struct harness *h, const char *name, const char *schema, uint8_t risk);
struct tr_run_tool *h_tool(struct harness *h, const char *name);
int64_t h_now(struct harness *h);

/* Decide with the harness's clock. */
void h_decide(struct harness *h, struct tr_run_action *a);
/* Carry out a: appends go to the journal (acked unless no_ack). */
void h_apply(struct harness *h, const struct tr_run_action *a);
/* Acknowledge every append in flight. */
void h_ack_all(struct harness *h);
/* Decide and apply until WAIT or EXIT (answering llm and tool calls through
 * the callbacks unless manual). Returns the last action's kind; *last (may
 * be NULL) gets it (the caller frees it). */
int h_drive(struct harness *h, int max, struct tr_run_action *last);

/* The store kept only the first `keep` events (a failed append and all
 * behind it): drop the rest and refold, as the shell does; vol survives. */
void h_refold(struct harness *h, uint32_t keep);

/* Answer an outstanding call of the current step. */
void h_llm_reply(struct harness *h, const char *json);
void h_tool_reply(struct harness *h, uint32_t idx, const char *json);

/* FSM-written events. */
void h_fsm_decided(struct harness *h, const char *approval_id, int decision, const char *reason);
void h_fsm_cancelled(struct harness *h);

/* A fresh harness with the registry, callbacks and the first k events of src. */
void h_replay(struct harness *dst, const struct harness *src, uint32_t k);

/* The type (troupe_journal_Data) of event i. */
int h_type(const struct harness *h, uint32_t i);
/* Count of events of a type. */
uint32_t h_count(const struct harness *h, int type);

/* Reply JSON builders (tr_malloc'd). calls: "name", "args" pairs. */
char *h_llm_text(const char *content, uint64_t pt, uint64_t ct, uint64_t cost);
char *h_llm_calls(uint64_t pt, uint64_t ct, uint64_t cost, int n, const char *const *names,
                  const char *const *args);
char *h_llm_call1(const char *name, const char *args);
char *h_tool_ok(const char *result);
char *h_tool_err(const char *error);

#endif
