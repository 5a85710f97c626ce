/* The run actor's private interface: the agent loop as a pure core (a fold
 * over the run's journal plus a decision function) and the thin actor shell
 * around it (run.c). Private to actors/.
 *
 * A run is the fold of its journal. The core never reads a clock, a random
 * source, the store or the network: time, tool registry entries, replies of
 * the llm and tool actors and acknowledgements of appends come in as inputs,
 * and what the run should do next comes out as one action at a time, which
 * the shell carries out (append an event, call the llm, call a tool, arm a
 * timer, propose an approval expiry, exit). Replay after a crash is the same
 * code path as normal operation: fold what the store holds, then decide.
 *
 * ---------------------------------------------------------------------------
 * The state machine of one run (one step = one LLM call and its tool calls)
 * ---------------------------------------------------------------------------
 *
 *                        run.created (FSM)
 *                              |
 *                              v
 *      +-------------> [BETWEEN STEPS] ---- cap hit ----> budget.exceeded ---+
 *      |                       |                                             |
 *      |                 llm.requested(n, a)  + the llm call, pipelined      |
 *      |                       v                                             |
 *      |               [AWAIT_LLM n, a] --- retryable error, wait -----+     |
 *      |                       |       <--- llm.requested(n, a+1) -----+     |
 *      |                       |--------- fatal error / a > max -------------+
 *      |                 llm.completed(n)                                    |
 *      |                       |---- no tool calls --> run.succeeded         |
 *      |                       v                                             |
 *      |                  [TOOLS n]  every call i, concurrently:             |
 *      |                       |       tool.requested(i)                     |
 *      |                       |       invalid? --> tool.completed(error)    |
 *      |                       |       builtin? --> tool.completed(result)   |
 *      |                       |       irreversible? --> approval.requested  |
 *      |                       |            [WAITING_APPROVAL i]             |
 *      |                       |            approval.decided (FSM):          |
 *      |                       |              deny/expired --> tool.completed(error)
 *      |                       |              approve --+                    |
 *      |                       |       tool.started(i, key) <---+            |
 *      |                       |         read: execute at once               |
 *      |                       |         write/irreversible: ** wait for its |
 *      |                       |           ack (TR_FSM_OK) **, then execute  |
 *      |                       |            [EXECUTING i] --> tool.completed(i)
 *      |                       v                                             |
 *      |               [STEP n COMPLETE]   (nothing waited for: the next     |
 *      |                       |            prompt comes from memory)        |
 *      |                       |---- 5 invalid calls in a row ---------------+
 *      |                       |---- loop (1st) --> loop.detected --+        |
 *      +-----------------------+<-----------------------------------+        |
 *                              |---- loop (2nd) --> loop.detected -----------+
 *                              |---- a valid finish call --> run.succeeded   |
 *                                                                            v
 *                                                                 run.failed [TERMINAL]
 *
 *   At any point: run.cancelled (FSM) -> TERMINAL; a stale epoch -> fenced
 *   (stop without touching anything); the wall-time cap -> budget.exceeded,
 *   run.failed.
 *
 * What waits for what. Appends are pipelined: every event is sent (and
 * folded) as soon as it is decided, in seq order, with nothing waiting for
 * acknowledgements, except in three places:
 *   - an external write/irreversible tool call waits for the ack of its
 *     tool.started (invariant 2): the one durable wait of a step;
 *   - EXIT waits for the ack of the terminal event;
 *   - while an approval is open, one append at a time (invariant 6).
 * So a step of a write tool costs one durable round trip (one group commit),
 * a step of read tools none: llm.requested + the llm call go out together;
 * llm.completed, tool.requested and tool.started go out together; then the
 * ack; then the tool; then tool.completed, the next llm.requested and the
 * next llm call go out together.
 *
 * ---------------------------------------------------------------------------
 * Invariants
 * ---------------------------------------------------------------------------
 *  1. The state (struct tr_run_state) is a function of the journal events
 *     folded into it, in seq order, and of nothing else. Events built by this
 *     actor are folded when they are sent (optimistically); on any doubt
 *     (TR_FSM_BAD_SEQ, a transport error, a note from the FSM) the shell
 *     drops the state and refolds the store's journal once no append is in
 *     flight.
 *  2. An external side effect (a write or irreversible tool call) starts
 *     only after its tool.started is acknowledged: reply TR_OK with verdict
 *     TR_FSM_OK (seq <= vol.acked_seq). Why that covers everything before
 *     it: the FSM applies an append only when its seq is the run's next one
 *     (raft/fsm_runs.c), and the state service answers only after the raft
 *     entry holding it is committed (raft/state.c; entries commit in log
 *     order, appends of one entry apply in order). So an OK for tool.started
 *     at seq k means seqs 1..k are durable: the llm.completed that named
 *     the call (decide emits tool.started only after llm.completed is folded,
 *     hence sent, at a lower seq), its tool.requested, and, for approved
 *     calls, the decision. The llm call is not a side effect: it goes out
 *     with its llm.requested, unacknowledged; if that append fails the
 *     refold may call again (cost, not correctness). Read tools have no
 *     side effect either: they run once tool.started is sent (it is still
 *     journaled, so replay keeps its one rule below).
 *  3. Every external tool call carries the idempotency key H(run_id, step,
 *     call_index) (tr_run_idem_key); a re-execution after replay carries the
 *     same key. Every external call journals tool.started, read tools too:
 *     replay needs no other rule than "started without completed -> execute".
 *  4. An llm response is journaled whole (llm.completed) before anything is
 *     done with it durably, so replay never re-samples it: tool.started (the
 *     only event whose ack releases a side effect) follows llm.completed in
 *     the pipeline (invariant 2). Each llm call attempt made on purpose (the
 *     first, or a retry after a retryable error) has its own llm.requested,
 *     which carries the prompt's digest; the call sends exactly that prompt
 *     (built once). A replay that finds llm.requested without llm.completed
 *     calls again under that same attempt.
 *  5. Steps are sequential: step n+1 is requested only when every call of
 *     step n has its tool.completed folded (sent; not necessarily
 *     acknowledged). The calls of one step run concurrently.
 *  6. While an approval is open (requested, not decided), at most one append
 *     is in flight: the FSM may journal approval.decided at any moment, and a
 *     pipelined append behind a rejected one could otherwise land on top of
 *     a state its author never saw. Without an open approval only this actor
 *     writes the journal (cancel and reassignment make every later append
 *     fail), so appends are pipelined.
 *  7. Replies that arrived (llm and tool replies) stay in struct tr_run_vol
 *     until the event that journals them is acknowledged, across step
 *     changes and refolds: those of the current step in its slots, those of
 *     other steps (an earlier step whose tool.completed is in flight, or a
 *     later one after a refold went back) in vol.held, put back into the
 *     slots when the fold reaches their step again. A refold therefore
 *     re-emits the lost events from memory and loses nothing that was paid
 *     for; since decide emits an event only when the fold lacks it, nothing
 *     is journaled twice.
 *  8. Terminal means terminal: after run.succeeded/failed/cancelled is folded
 *     the only action is EXIT (once the event is acknowledged). A fenced or
 *     stopped actor drops every reply that arrives later.
 */
#ifndef TR_ACTORS_RUN_H
#define TR_ACTORS_RUN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "actors/actors.h"
#include "actors/jsonschema.h"

/* Limits of the loop. */
#define TR_RUN_MAX_CALLS 16            /* tool calls kept per step (more are dropped at llm.completed) */
#define TR_RUN_LOOP_REPEATS 3          /* same tool + same arguments this often -> loop */
#define TR_RUN_NOTHING_NEW_STEPS 5     /* consecutive steps whose results were all seen before */
#define TR_RUN_MAX_INVALID 5           /* consecutive invalid tool calls -> run.failed */
#define TR_RUN_LLM_MAX_ATTEMPTS 8      /* llm.requested per step */
#define TR_RUN_RETRY_FLOOR_MS 200      /* least wait before retrying the llm */
#define TR_RUN_RETRY_CAP_MS 60000
#define TR_RUN_CONTENT_MAX (1u << 20)  /* assistant text kept in llm.completed */
#define TR_RUN_ARGS_MAX (256u * 1024)  /* arguments kept per tool call (cut: the call is refused) */
#define TR_RUN_BLOB_MIN 4096           /* larger tool results go to the blobs family */
#define TR_RUN_BLOB_MAX (4u << 20)     /* tool result bytes kept at all */
#define TR_RUN_PROMPT_RESULT_MAX 2048  /* tool result bytes shown to the model */
#define TR_RUN_MAX_APPENDS_INFLIGHT 64
#define TR_RUN_SCRATCH_KEY_MAX 256
#define TR_RUN_SCRATCH_VALUE_MAX (16u * 1024)
#define TR_RUN_SCRATCH_KEYS 256
#define TR_RUN_DIGEST 32
#define TR_RUN_SIG 16

/* The error text of a tool.completed that refused a malformed call starts
 * with this: the fold counts such calls toward TR_RUN_MAX_INVALID. */
#define TR_RUN_INVALID_PREFIX "invalid tool call: "

/* The builtin tools (run inline, never journal tool.started). */
enum tr_run_builtin {
    TR_RUN_BUILTIN_NONE = 0,
    TR_RUN_BUILTIN_FINISH,
    TR_RUN_BUILTIN_SCRATCH_WRITE,
    TR_RUN_BUILTIN_SCRATCH_READ,
    TR_RUN_BUILTIN_TIME,
};
int tr_run_builtin(const char *name); /* enum tr_run_builtin */

/* ---- the fold ------------------------------------------------------------ */

struct tr_run_call {
    char *call_id, *name, *args;        /* llm.completed */
    uint64_t req_seq;                   /* tool.requested (0: not yet) */
    int64_t req_time_us;
    uint8_t risk;                       /* troupe_journal_Risk */
    unsigned char sig[TR_RUN_SIG];      /* H(name, canonical arguments) */
    char *approval_id;                  /* approval.requested */
    uint64_t apr_seq;
    int64_t apr_expires_us;
    bool apr_decided;
    uint8_t decision;                   /* troupe_journal_Decision */
    char *decision_reason;
    uint64_t start_seq;                 /* tool.started */
    uint32_t version;
    uint64_t done_seq;                  /* tool.completed */
    char *result;                       /* inline result, or NULL */
    char *error;
    unsigned char result_digest[TR_RUN_DIGEST];
    bool has_digest;
    uint64_t result_size;
    bool is_error;
    bool invalid;                       /* refused as malformed (TR_RUN_INVALID_PREFIX) */
    bool seen_before;                   /* the same result came back earlier in the run */
};

struct tr_run_step {
    uint32_t n;                         /* 1-based */
    uint32_t attempt;                   /* of the last llm.requested */
    uint64_t llm_req_seq;
    unsigned char prompt_digest[TR_RUN_DIGEST]; /* of the last llm.requested */
    uint64_t llm_done_seq;              /* llm.completed (0: not yet) */
    char *content;
    uint8_t finish_reason;
    uint64_t prompt_tokens, completion_tokens, cost_micro_usd;
    struct tr_run_call *calls;
    uint32_t n_calls;
    uint32_t loops;                     /* loop.detected events at this step */
    char *loop_detail;
    uint64_t loop_seq;
};

struct tr_run_scratch {
    char *key;
    char *value;
};

struct tr_run_sigcount {
    unsigned char sig[TR_RUN_SIG];
    uint32_t count;
};

struct tr_run_state {
    uint64_t run_id;
    char run_text[TR_RUN_ID_TEXT_LEN];
    uint64_t epoch;                     /* epoch of our appends */
    uint64_t next_seq;                  /* seq of the next append (last folded + 1) */
    /* run.created */
    bool created;
    int64_t created_us;
    char *tenant, *goal;
    char *model, *system, *provider;
    char **tools;
    uint32_t n_tools;
    uint32_t max_steps;
    uint64_t max_tokens;
    double max_cost_usd;
    uint32_t timeout_s;
    float temperature;
    /* progress */
    struct tr_run_step *steps;
    uint32_t n_steps, cap_steps;
    uint64_t prompt_tokens, completion_tokens, cost_micro_usd;
    bool budget_exceeded;
    uint8_t cap;                        /* troupe_journal_Cap */
    char budget_detail[160];
    uint32_t loops_detected;            /* in the whole run */
    uint32_t invalid_streak;
    bool terminal;
    uint8_t final_type;                 /* troupe_journal_Data of the terminal event */
    uint64_t terminal_seq;
    /* scratchpad: part of the fold, rebuilt from tool.completed */
    struct tr_run_scratch *scratch;
    uint32_t n_scratch;
    /* loop detection */
    struct tr_run_sigcount *sigs;
    uint32_t n_sigs, cap_sigs;
    unsigned char (*results)[TR_RUN_SIG]; /* hashes of results seen */
    uint32_t n_results, cap_results;
    /* sticky: an event that cannot be folded (names it) */
    char fold_error[160];
};

/* A fresh state for run `run_id` appending at `epoch`. */
void tr_run_state_init(struct tr_run_state *s, uint64_t run_id, uint64_t epoch);
void tr_run_state_free(struct tr_run_state *s);

/* Fold one event (a TRJ1 buffer; verified here). TR_EINVAL for a buffer
 * that does not verify, names another run, or breaks the seq order;
 * s->fold_error says why. Events of unknown types are skipped. */
int tr_run_fold(struct tr_run_state *s, const void *event, size_t len);

/* The last step, or NULL before the first llm.requested. */
struct tr_run_step *tr_run_last_step(const struct tr_run_state *s);
/* 1 when every call of step st has its tool.completed (and llm.completed is in). */
bool tr_run_step_complete(const struct tr_run_step *st);
/* The scratchpad value of key, or NULL. */
const char *tr_run_scratch_get(const struct tr_run_state *s, const char *key);
/* Length of the longest prefix of s[0..n) no longer than max bytes that does
 * not split a UTF-8 sequence: text cut inside a character is not UTF-8, and
 * jansson would refuse all of it. */
size_t tr_run_utf8_cut(const char *s, size_t n, size_t max);
/* The same for "%.*s" on a NUL-terminated s. */
int tr_run_utf8_shown(const char *s, size_t max);
/* Replace each byte of s[0..n) that is not part of a valid UTF-8 sequence
 * (overlong forms, surrogates and code points past U+10FFFF included) with
 * '?', in place. */
void tr_run_utf8_scrub(char *s, size_t n);

/* ---- inputs the core does not own ---------------------------------------- */

/* One version of a registered tool, as the core needs it. Strings point into
 * the registry entry held by the lookup; valid until the next lookup. */
struct tr_run_tool {
    const char *name;
    uint32_t version;
    const char *description;
    const char *input_schema;           /* JSON text, may be NULL */
    const struct tr_schema *schema;     /* compiled, NULL when absent or broken */
    const char *schema_error;           /* why it did not compile, or NULL */
    uint8_t risk;                       /* troupe_journal_Risk */
    uint8_t kind;                       /* troupe_cmd_ToolKind */
    const char *config;                 /* JSON text, may be NULL */
    uint32_t timeout_ms;
    bool enabled;
};

/* What the core may consult. */
struct tr_run_env {
    uint32_t context_tokens;            /* prompt budget (0: 8192) */
    uint32_t approval_timeout_ms;       /* 0: 24 h */
    uint32_t llm_timeout_ms;
    /* The registry entry for name: version 0 means the newest. NULL when
     * unknown. */
    const struct tr_run_tool *(*tool_lookup)(void *ud, const char *name, uint32_t version);
    void *tool_ud;
    /* The payload of a blob (caller frees *data), for results kept only by
     * digest. May be NULL. */
    int (*blob_get)(void *ud, const unsigned char digest[TR_RUN_DIGEST], void **data, size_t *len);
    void *blob_ud;
    /* The tenant's daily budget, asked before every new model call (a new
     * step or a retry; not the re-call of a journaled llm.requested after a
     * replay): TR_RUN_BUDGET_OK, or TR_RUN_BUDGET_FAIL / _WAIT (the
     * tenant's budget_policy) with *limit and *used in USD when today's
     * spend reached the budget. May be NULL (no budget). */
    int (*budget_check)(void *ud, const char *tenant, int64_t now_us, double *limit, double *used);
    void *budget_ud;
};
enum { TR_RUN_BUDGET_OK = 0, TR_RUN_BUDGET_FAIL, TR_RUN_BUDGET_WAIT };

/* A TR_MSG_LLM_RESULT: the llm actor's answer, a record (actors/wire.h). */
struct tr_run_llm_result {
    bool ok;
    char *content;                      /* NULL: the model sent none */
    struct {
        char *id, *name, *arguments;
    } calls[TR_RUN_MAX_CALLS];
    uint32_t n_calls;
    uint8_t finish_reason;              /* troupe_journal_FinishReason */
    char *model, *request_id;
    uint64_t prompt_tokens, completion_tokens, cost_micro_usd;
    uint32_t latency_ms;
    uint64_t latency_us;
    uint32_t attempts;                  /* HTTP exchanges the call took */
    /* ok false */
    char *error_code, *error_message;
    bool retryable;
    uint32_t retry_after_ms;
};
/* The record of r as a TR_MSG_LLM_RESULT message. finish_reason is the
 * provider's word ("stop", "tool_calls", ...; NULL: none), which the reader
 * maps to r->finish_reason; r->finish_reason itself is not written. */
struct tr_msg *tr_run_llm_result_msg(const struct tr_run_llm_result *r, const char *finish_reason);
/* Read a record into out (zeroed first; owns its strings). A record that is
 * not whole becomes a retryable "bad_response" error. */
void tr_run_llm_result_read(const void *data, size_t len, struct tr_run_llm_result *out);
void tr_run_llm_result_free(struct tr_run_llm_result *r);

/* A TR_MSG_TOOL_RESULT: the tool executor's answer, a record. */
struct tr_run_tool_result {
    bool ok;                            /* the call was made and did not fail */
    bool is_error;                      /* as read: !ok or the tool said so */
    bool truncated;                     /* result cut at the executor's cap */
    int32_t status;                     /* HTTP status or exit code; 0: none */
    uint32_t attempts;
    char *result;                       /* the whole result text */
    size_t result_len;
    char *error;
    uint32_t duration_ms;
    uint64_t duration_us;
};
/* The record of r as a TR_MSG_TOOL_RESULT message (result: result_len
 * bytes; NULL with 0 for none). */
struct tr_msg *tr_run_tool_result_msg(const struct tr_run_tool_result *r);
/* Read a record into out (zeroed first; owns its strings). A record that is
 * not whole becomes an error result. */
void tr_run_tool_result_read(const void *data, size_t len, struct tr_run_tool_result *out);
void tr_run_tool_result_free(struct tr_run_tool_result *r);

/* What is in flight and what arrived but is not journaled yet: the shell's
 * state that is not a fold of the journal (invariant 7). Zero = a fresh
 * actor that has just folded its journal (then acked_seq = next_seq - 1). */
struct tr_run_vol_call {
    bool inflight;                      /* a tool request is out */
    bool deadline_armed;                /* approval timer armed */
    bool expire_proposed;               /* ApprovalDecide{Expired} sent */
    struct tr_run_tool_result *res;     /* reply waiting for tool.completed */
};

#define TR_RUN_VOL_LLM UINT32_MAX       /* call_index of a held llm reply */

/* A reply of a step other than vol.step, kept until its event is acked. */
struct tr_run_vol_held {
    uint32_t step;
    uint32_t call_index;                /* TR_RUN_VOL_LLM: llm, else tool */
    struct tr_run_llm_result *llm;
    struct tr_run_tool_result *tool;
};

struct tr_run_vol {
    uint64_t acked_seq;                 /* every seq <= this is in the journal */
    uint32_t appends_inflight;
    bool resync;                        /* refold wanted: send nothing */
    uint32_t step;                      /* the step the slots below belong to */
    uint32_t llm_out;                   /* step of the llm call that is out (0: none) */
    struct tr_run_llm_result *llm;      /* reply waiting to be journaled */
    int64_t retry_at_us;                /* retryable llm error: not before */
    struct tr_run_vol_call calls[TR_RUN_MAX_CALLS];
    struct tr_run_vol_held *held;       /* replies of other steps (invariant 7) */
    uint32_t n_held, cap_held;
    /* The body of the last llm call decided with its llm.requested, named
     * by that event's prompt digest: the call sends it, not a rebuild. */
    char *prompt;
    size_t prompt_len;
    unsigned char prompt_digest[TR_RUN_DIGEST];
    /* Context assembly's cache (context.c): parts of the prompt that are a
     * function of the folded state alone, so that a step does not encode
     * every earlier step again. Dropped with tr_run_vol_forget_prompt
     * whenever the state is refolded. */
    struct tr_run_vol_block *blocks;    /* by step index */
    uint32_t n_blocks;
    char *head;                         /* {"model":..,"messages":[system,goal */
    size_t head_len;
    uint32_t head_tokens;               /* of "[system,goal]" */
    uint32_t head_msgs_len;             /* bytes of "system,goal" in head */
    char *tools;                        /* the tool definitions' JSON */
    size_t tools_len;
    uint64_t tools_key;                 /* of the registry entries they came from */
};
/* One step's messages as JSON text, without the enclosing brackets. */
struct tr_run_vol_block {
    uint64_t key;                       /* of the step's events (0: empty slot) */
    char *text;
    size_t len;
    uint32_t truncated, messages;
};
/* Drop what context assembly cached (the state was refolded). */
void tr_run_vol_forget_prompt(struct tr_run_vol *v);
/* Make `step` the slots' step: the replies of the old step go to held, those
 * of `step` come back from held. */
void tr_run_vol_sync(struct tr_run_vol *v, uint32_t step);
/* Free the held replies whose event is in s and acknowledged. */
void tr_run_vol_gc(const struct tr_run_state *s, struct tr_run_vol *v);
/* A reply of the llm call for `step` arrived (res: tr_malloc'd, taken).
 * Returns true when it went to the current slot (the caller may arm the
 * retry timer of an error); false when held or dropped. */
bool tr_run_vol_llm_reply(struct tr_run_vol *v, uint32_t step, struct tr_run_llm_result *res);
/* A reply of tool call (step, idx) arrived (res taken). */
void tr_run_vol_tool_reply(struct tr_run_vol *v, uint32_t step, uint32_t idx, struct tr_run_tool_result *res);
void tr_run_vol_free(struct tr_run_vol *v);

/* ---- the decision -------------------------------------------------------- */

enum tr_run_act {
    TR_RUN_WAIT = 0,        /* nothing to do until a reply, note or timer */
    TR_RUN_APPEND,          /* append buf (a TRJ1 event for seq s->next_seq) */
    TR_RUN_CALL_LLM,        /* send json (the request body) to the llm actor (step, attempt) */
    TR_RUN_CALL_TOOL,       /* send json, a TR_MSG_TOOL_CALL record (actors/wire.h), to the
                               tool actor (step, call_index) */
    TR_RUN_ARM_DEADLINE,    /* arm a timer for at_us (approval of call_index) */
    TR_RUN_PROPOSE_EXPIRE,  /* propose buf (a TRC1 ApprovalDecide{Expired}) */
    TR_RUN_EXIT,            /* stop; exit_reason as struct tr_run_exit */
};

struct tr_run_action {
    int kind;               /* enum tr_run_act */
    int event_type;         /* APPEND: troupe_journal_Data tag */
    uint8_t *buf;           /* APPEND, PROPOSE_EXPIRE: tr_malloc'd */
    size_t len;
    uint8_t *blob;          /* APPEND of tool.completed: the whole result, named by
                               its result_digest (tr_malloc'd), or NULL */
    size_t blob_len;
    char *json;             /* CALL_*: tr_malloc'd, NUL-terminated (CALL_TOOL: a record) */
    size_t json_len;
    uint32_t step, call_index, attempt;
    uint32_t timeout_ms;    /* CALL_*: how long to wait for the reply */
    int64_t at_us;          /* ARM_DEADLINE */
    int exit_reason;        /* EXIT */
    bool idle;              /* WAIT: nothing in flight but approvals (may passivate) */
    bool budget_wait;       /* WAIT: the tenant's budget is spent (policy wait): look again later */
};
void tr_run_action_free(struct tr_run_action *a);

/* The next action for state s with in-flight state v at time now_us. Pure:
 * the same inputs give the same action (bytes included). It writes only the
 * bookkeeping of v (slots moved to and from held, held replies freed, the
 * prompt of an llm.requested kept for its call, context assembly's cache). For APPEND the caller
 * sends the event, folds it (tr_run_fold) and counts it in
 * v->appends_inflight; for CALL_LLM it sets v->llm_out, for CALL_TOOL the
 * in-flight flag of v->calls; for ARM_DEADLINE and PROPOSE_EXPIRE the
 * matching flag of v->calls. */
void tr_run_decide(const struct tr_run_state *s, struct tr_run_vol *v, const struct tr_run_env *env,
                   int64_t now_us, struct tr_run_action *out);

/* Record the shell's bookkeeping for an action it carried out (the flags
 * named above); keeps tests and the shell in step. */
void tr_run_performed(struct tr_run_state *s, struct tr_run_vol *v, const struct tr_run_action *a);

/* ---- helpers shared by the core, the shell and the tests ----------------- */

/* Idempotency key H(run_id text, step, call_index): BLAKE2b-256 over the run
 * id text, a 0x00 byte, then step and call_index as 8-byte big-endian. */
void tr_run_idem_key(const char *run_text, uint32_t step, uint32_t call_index,
                     unsigned char out[TR_RUN_DIGEST]);
/* "apr_" + 32 hex digits, derived like the key (with a different prefix). */
#define TR_RUN_APPROVAL_ID 37
void tr_run_approval_id(const char *run_text, uint32_t step, uint32_t call_index,
                        char out[TR_RUN_APPROVAL_ID]);
void tr_run_hex(const unsigned char *p, size_t n, char *out); /* out: 2n + 1 */

/* Why a call cannot run, or NULL when it is valid. *tool gets the registry
 * entry of an external tool (NULL for builtins). The text (static or in buf)
 * goes to the model after TR_RUN_INVALID_PREFIX. */
const char *tr_run_validate_call(const struct tr_run_state *s, const struct tr_run_env *env,
                                 const struct tr_run_call *c, const struct tr_run_tool **tool,
                                 char *buf, size_t cap);

/* The OpenAI tool definitions offered to the model: the agent's tools found
 * (and enabled) in the registry, then the builtins. New reference. */
json_t *tr_run_tool_defs(const struct tr_run_state *s, const struct tr_run_env *env);
/* A digest of what tr_run_tool_defs would build from (the registry entries
 * offered): equal keys, equal definitions. Never 0. */
uint64_t tr_run_tool_defs_key(const struct tr_run_state *s, const struct tr_run_env *env);

/* ---- context assembly (context.c) ---------------------------------------- */

struct tr_context_stats {
    uint32_t tokens;        /* estimate of the whole prompt (messages + tools) */
    uint32_t dropped_steps; /* oldest steps replaced by the summary */
    uint32_t truncated;     /* tool results cut to TR_RUN_PROMPT_RESULT_MAX */
    uint32_t messages;
};

/* Token estimate of n bytes: ceil(n / 4). */
static inline uint32_t tr_context_tokens(size_t n) { return (uint32_t)((n + 3) / 4); }

/* The messages of the prompt for the next llm call after the first `upto`
 * steps of s (those must be complete), within `budget` tokens counting the
 * tool definitions `tools`. New reference. */
json_t *tr_context_messages(const struct tr_run_state *s, uint32_t upto, const json_t *tools,
                            uint32_t budget, const struct tr_run_env *env,
                            struct tr_context_stats *st);

/* The Chat Completions request body of the llm call for step `step` (JSON
 * text, tr_malloc'd, NUL-terminated; the bytes the llm actor POSTs as is,
 * see TR_MSG_LLM_CALL in actors.h) and its BLAKE2b digest; stats as above.
 * v (may be NULL) caches the parts of earlier steps across calls: the text
 * is the same with or without it. */
char *tr_run_llm_request(const struct tr_run_state *s, struct tr_run_vol *v, const struct tr_run_env *env,
                         uint32_t step, size_t *len, unsigned char digest[TR_RUN_DIGEST],
                         struct tr_context_stats *st);

/* ---- the actor (run.c) --------------------------------------------------- */

/* Spawn argument of a run actor; owned by the manager, outlives the actor. */
struct tr_run_arg {
    const struct tr_node_env *env;
    uint64_t run_id;
};
extern const struct tr_behavior tr_run_behavior;

/* TR_MSG_RUN_TIMER payload. */
enum tr_run_timer_kind { TR_RUN_TIMER_KICK = 1, TR_RUN_TIMER_DEADLINE, TR_RUN_TIMER_RETRY, TR_RUN_TIMER_WALL,
                        TR_RUN_TIMER_BUDGET };
struct tr_run_timer {
    uint32_t kind;
    uint32_t step;
    uint32_t call_index;
    uint32_t reserved_;
};

#endif /* TR_ACTORS_RUN_H */
