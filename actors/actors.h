/* actors/: Troupe's domain actors — the run (the agent loop), the llm
 * gateway, the tool executors, and the run manager that owns run actors on
 * a node. This header is the contract between them and the node that wires
 * them (node/). Internal headers of the folder (jsonschema.h, run_*.h, ...)
 * are private to it.
 *
 * Messages between these actors carry JSON text (UTF-8, not NUL-terminated,
 * msg->len bytes) unless a struct is named: the shapes are documented at each
 * type. Message types live in [TR_MSG_USER + 200, TR_MSG_USER + 300).
 */
#ifndef TR_ACTORS_H
#define TR_ACTORS_H

#include <stdint.h>

#include "raft/raft.h"
#include "runtime/runtime.h"

struct tr_store;

enum tr_actors_msg {
    /* --- llm actor ----------------------------------------------------------
     * TR_MSG_LLM_CALL (tr_request to an llm actor): a struct tr_llm_call
     * header (below), then model_len bytes of model name, tenant_len of
     * tenant, run_id_len of run id (none NUL-terminated), then body_len bytes
     * of body: the exact OpenAI Chat Completions request body, JSON
     *   {"model": str, "messages": [OpenAI chat messages], "tools": [OpenAI
     *    tool definitions], "tool_choice": "auto", "temperature": num,
     *    "stream": false}
     * ("tools" and "tool_choice" only when there are tools; "temperature"
     * optional). The llm actor checks the header and POSTs the body bytes
     * unchanged, without parsing them: the sender vouches for the body (the
     * run actor builds it, and journals its digest with llm.requested). The
     * header's model names the price of the call.
     * The llm actor calls the provider (OpenAI-compatible Chat Completions),
     * retrying 429/5xx/timeouts/unparseable bodies with jittered backoff
     * (honouring Retry-After) up to its attempt limit, behind a circuit
     * breaker per endpoint. Reply TR_MSG_LLM_RESULT, a record
     * (actors/wire.h; written and read by tr_run_llm_result_msg/_read,
     * actors/run.h): ok, retryable, retry_after_ms, prompt_tokens,
     * completion_tokens, cost_micro_usd, latency_ms, latency_us, attempts,
     * then the strings content (absent: none), finish_reason (the provider's
     * word: "stop", "tool_calls", "length", ...), model, request_id,
     * error_code ("breaker_open"|"unavailable"|"timeout"|"bad_response"|
     * "rejected"|"rate_limited"), error_message, then the tool calls, each
     * id, name and arguments (the raw JSON text the model sent).
     * ok false: "retryable" true means the run should wait retry_after_ms
     * and ask again (the provider is down or overloaded); false means the
     * request itself is wrong (a malformed header, 4xx other than 429) or the
     * provider kept answering garbage. */
    TR_MSG_LLM_CALL = TR_MSG_USER + 200,
    TR_MSG_LLM_RESULT,

    /* --- tool executor -----------------------------------------------------
     * TR_MSG_TOOL_CALL (tr_request to a tool actor), a record (struct
     * tr_tool_call_rec, actors/wire.h): the tool's name, version, kind
     * ("http"|"sandbox"), risk, config (its registry JSON) and timeout_ms
     * (0: the executor's default); the arguments as the body to send (the
     * validated JSON, written again by the run); idempotency_key (hex),
     * run_id, step, call_index, tenant.
     * Executes one call of an external tool (builtins run inside the run
     * actor). http: POSTs the arguments as the JSON body to config.url with
     * header Idempotency-Key; a host outside config.allow is refused before
     * any connection. Reply TR_MSG_TOOL_RESULT, a record (struct
     * tr_run_tool_result, actors/run.h): ok, is_error, truncated, status,
     * attempts, duration_ms, duration_us, result (the response body, capped;
     * bytes that are not UTF-8 as U+FFFD), error (absent: none).
     * ok false: the call could not be made or failed (timeout, refused host,
     * 5xx, transport error); the error text is what the model will be told. */
    TR_MSG_TOOL_CALL = TR_MSG_USER + 210,
    TR_MSG_TOOL_RESULT,

    /* --- run actor ----------------------------------------------------------
     * TR_MSG_RUN_NOTE: a struct tr_state_note forwarded by the run manager
     * (cancelled, approval decided, reassigned away). */
    TR_MSG_RUN_NOTE = TR_MSG_USER + 220,
    /* TR_MSG_RUN_TIMER: the run actor's own timers; payload is the run's
     * business (approval deadline, retry backoff, wall-time cap). */
    TR_MSG_RUN_TIMER,
    /* TR_MSG_RUN_EXITED: run actor -> run manager, struct tr_run_exit. */
    TR_MSG_RUN_EXITED,
};

/* The fixed header of a TR_MSG_LLM_CALL payload (see above). Native byte
 * order: the message never leaves the process. Read it with memcpy (the
 * payload need not be aligned). */
#define TR_LLM_CALL_MAGIC 0x314c4c54u /* "TLL1" */
struct tr_llm_call {
    uint32_t magic;       /* TR_LLM_CALL_MAGIC */
    uint32_t step;        /* of the run, for logs */
    uint32_t body_len;
    uint16_t model_len;   /* 1..256 */
    uint16_t tenant_len;  /* 0..256 */
    uint16_t run_id_len;  /* 0..64 */
    uint16_t reserved_;   /* 0 */
};

/* What every actor of a node shares. Owned by the node; outlives every actor.
 * Immutable after the node starts, except where noted. */
struct tr_node_env {
    uint64_t node_id;
    struct tr_store *store;        /* replicated state: read-only for actors */
    tr_actor_id state_actor;       /* the state service (raft/raft.h) */
    tr_actor_id manager_actor;     /* the run manager of this node */
    const tr_actor_id *llm_actors; /* one per scheduler: use llm_actors[tr_ctx_sched(ctx)] */
    const tr_actor_id *tool_actors;/* one per scheduler, likewise */
    int n_schedulers;
    uint32_t max_active_runs;      /* per-node limit; queued runs wait */
    uint32_t llm_timeout_ms;       /* per request */
    uint32_t approval_timeout_ms;  /* default deadline of approval requests */
    uint32_t context_tokens;       /* prompt budget for context assembly */
    void *models;                  /* the price table (actors/llm.h) */
    struct tr_state *state;        /* tr_state_may_act before a side effect; NULL: always */
};

/* TR_MSG_RUN_EXITED payload. */
struct tr_run_exit {
    uint64_t run_id;
    int32_t reason;   /* 0 terminal, 1 fenced (stale epoch), 2 passivated, 3 failed to start */
    int32_t reserved_;
};

/* Run ids are 64-bit; their text form (API.md "id") is "run_" followed by 16
 * lowercase hex digits: tr_run_id_text / tr_run_id_from_text (raft/raft.h). */

/* Spawn the run manager on scheduler `sched`. It is the state service's
 * listener: on TR_NOTE_READY it scans the store for active runs owned by
 * env->node_id and starts them (up to max_active_runs, the rest wait queued);
 * on TR_NOTE_RUN_CREATED for this node it starts or queues the run; it
 * forwards other notes to the run's actor; when a run exits it admits the
 * next queued one. */
int tr_run_manager_spawn(struct tr_rt *rt, const struct tr_node_env *env, int sched, tr_actor_id *out);

/* Spawn the llm actors and tool actors, one per scheduler. */
int tr_llm_spawn(struct tr_rt *rt, const struct tr_node_env *env, int sched, tr_actor_id *out);
int tr_tool_spawn(struct tr_rt *rt, const struct tr_node_env *env, int sched, tr_actor_id *out);

#endif /* TR_ACTORS_H */
