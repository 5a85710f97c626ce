/* Actor message records (actors/wire.h) for tests: written from the JSON a
 * test scripts (the shapes actors.h documents, field for field: an llm
 * result {"ok", "content", "tool_calls": [{"id", "name", "arguments"}],
 * "finish_reason", "model", "usage": {...}, "cost_micro_usd", "latency_ms",
 * "latency_us", "attempts", "request_id"} or {"ok": false, "error": {"code",
 * "message", "retryable", "retry_after_ms"}}; a tool result {"ok", "result",
 * "is_error", "error", "status", "duration_ms", "duration_us", "truncated",
 * "attempts"}), and read back as such JSON to assert on. JSON that is not an
 * object gives the error result the run would make of a bad record. */
#ifndef TR_TEST_RECORDS_H
#define TR_TEST_RECORDS_H

#include <jansson.h>

#include "actors/actors.h"
#include "actors/run.h"
#include "actors/wire.h"

/* out: what the run actor reads from the record that JSON describes. */
void h_llm_result(const char *json, struct tr_run_llm_result *out);
void h_tool_result(const char *json, struct tr_run_tool_result *out);
/* The TR_MSG_LLM_RESULT / TR_MSG_TOOL_RESULT message of that record. */
struct tr_msg *h_llm_result_msg(const char *json);
struct tr_msg *h_tool_result_msg(const char *json);
/* A record as JSON (as the run actor reads it: a bad record reads as the
 * error it becomes). */
json_t *h_llm_result_json(const void *data, size_t len);
json_t *h_tool_result_json(const void *data, size_t len);

/* The TR_MSG_TOOL_CALL record of a call written as JSON: {"tool": {"name",
 * "version", "kind", "config", "timeout_ms", "risk"}, "arguments",
 * "idempotency_key", "run_id", "step", "call_index", "tenant"} (absent or
 * mistyped fields are absent from the record; config and arguments are
 * written as JSON text). Text that is not a JSON object is sent as it is,
 * which is not a record. */
struct tr_msg *h_tool_call_msg(const char *json);

#endif
