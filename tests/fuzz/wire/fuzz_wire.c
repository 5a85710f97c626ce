/* libFuzzer target: the records actors send each other (actors/wire.h) —
 * a tool call, a tool result, an llm result — read from any bytes.
 *   - A read never goes outside the bytes given (ASan: they are a copy of
 *     exactly that size).
 *   - A call record that reads is written back to the very same bytes; one
 *     that does not read leaves nothing behind.
 *   - A result always reads as something the run can act on: a failed tool
 *     result has an error text, a failed llm result an error code; bytes
 *     without the record's magic read as the run's "unreadable reply" or a
 *     retryable "bad_response" and nothing else; what was read, written again
 *     and read back, reads the same.
 *   - Everything read is freed (ASan's leak check). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "actors/run.h"
#include "actors/wire.h"
#include "tests/fuzz/fuzz.h"

/* The bytes start with a record's magic (a u64, actors/wire.c). */
static int has_magic(const uint8_t *p, size_t n, uint64_t magic)
{
    uint64_t m;
    if (n < sizeof m)
        return 0;
    memcpy(&m, p, sizeof m);
    return m == magic;
}

static void tool_call(const uint8_t *p, size_t n)
{
    struct tr_tool_call_rec c;
    if (tr_tool_call_read(p, n, &c) != 0) {
        CHECK(c.name == NULL && c.arguments == NULL && c.idempotency_key == NULL);
        return;
    }
    size_t len;
    char *b = tr_tool_call_bytes(&c, &len);
    CHECK(len == n && memcmp(b, p, n) == 0);
    tr_free(b);
    tr_tool_call_free(&c);
}

static void tool_result(const uint8_t *p, size_t n)
{
    struct tr_run_tool_result r;
    tr_run_tool_result_read(p, n, &r);
    CHECK(r.ok || r.is_error);
    if (!has_magic(p, n, 0x31525454u)) /* "TTR1" */
        CHECK(!r.ok && r.result == NULL && strcmp(r.error, "the tool executor sent an unreadable reply") == 0);
    CHECK(!r.is_error || r.error != NULL);
    CHECK(r.result == NULL ? r.result_len == 0 : r.result[r.result_len] == '\0');
    /* What was read, written and read again, reads the same. */
    struct tr_msg *m = tr_run_tool_result_msg(&r);
    struct tr_run_tool_result r2;
    tr_run_tool_result_read(m->data, m->len, &r2);
    CHECK(r2.ok == r.ok && r2.is_error == r.is_error && r2.status == r.status && r2.result_len == r.result_len &&
          r2.duration_us == r.duration_us && (r.result_len == 0 || memcmp(r2.result, r.result, r.result_len) == 0) &&
          strcmp(r2.error ? r2.error : "", r.error ? r.error : "") == 0);
    tr_run_tool_result_free(&r2);
    tr_msg_free(m);
    tr_run_tool_result_free(&r);
}

static void llm_result(const uint8_t *p, size_t n)
{
    struct tr_run_llm_result r;
    tr_run_llm_result_read(p, n, &r);
    CHECK(r.ok || r.error_code != NULL);
    if (!has_magic(p, n, 0x31524c54u)) /* "TLR1": not a record at all */
        CHECK(!r.ok && r.retryable && strcmp(r.error_code, "bad_response") == 0 && r.content == NULL &&
              r.n_calls == 0 && r.model == NULL);
    CHECK(r.n_calls <= TR_RUN_MAX_CALLS);
    struct tr_msg *m = tr_run_llm_result_msg(&r, NULL);
    struct tr_run_llm_result r2;
    tr_run_llm_result_read(m->data, m->len, &r2);
    CHECK(r2.ok == r.ok && r2.n_calls == r.n_calls && r2.prompt_tokens == r.prompt_tokens &&
          r2.latency_us == r.latency_us && (r.content == NULL) == (r2.content == NULL));
    for (uint32_t i = 0; i < r.n_calls; i++)
        CHECK((r.calls[i].arguments == NULL) == (r2.calls[i].arguments == NULL));
    tr_run_llm_result_free(&r2);
    tr_msg_free(m);
    tr_run_llm_result_free(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *p = fuzz_copy(data, size);
    tool_call(p, size);
    tool_result(p, size);
    llm_result(p, size);
    free(p);
    return 0;
}
