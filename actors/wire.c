/* Records between actors: see actors/wire.h. */
#include <string.h>

#include "actors/wire.h"

void tr_wire_u64(struct tr_buf *b, uint64_t v)
{
    tr_buf_add(b, &v, sizeof v);
}

void tr_wire_strn(struct tr_buf *b, const char *s, size_t n)
{
    uint32_t len = s == NULL ? TR_WIRE_NULL : (uint32_t)n;
    if (s != NULL && n >= TR_WIRE_NULL)
        len = TR_WIRE_NULL - 1; /* messages are capped far below 4 GiB */
    tr_buf_add(b, &len, sizeof len);
    if (s != NULL && len > 0)
        tr_buf_add(b, s, len);
}

void tr_wire_str(struct tr_buf *b, const char *s)
{
    tr_wire_strn(b, s, s != NULL ? strlen(s) : 0);
}

struct tr_msg *tr_wire_msg(uint32_t type, struct tr_buf *b)
{
    struct tr_msg *m = tr_msg_make(type, b->p, (uint32_t)b->len);
    tr_buf_free(b);
    return m;
}

void tr_wire_begin(struct tr_wire_r *r, const void *data, size_t len)
{
    r->p = data;
    r->left = data != NULL ? len : 0;
    r->bad = false;
}

static bool take(struct tr_wire_r *r, void *out, size_t n)
{
    if (r->bad || r->left < n) {
        r->bad = true;
        memset(out, 0, n);
        return false;
    }
    memcpy(out, r->p, n);
    r->p += n;
    r->left -= n;
    return true;
}

uint64_t tr_wire_get_u64(struct tr_wire_r *r)
{
    uint64_t v;
    take(r, &v, sizeof v);
    return v;
}

const char *tr_wire_get_view(struct tr_wire_r *r, size_t *len)
{
    uint32_t n;
    *len = 0;
    if (!take(r, &n, sizeof n) || n == TR_WIRE_NULL)
        return NULL;
    if (r->left < n) {
        r->bad = true;
        return NULL;
    }
    const char *s = (const char *)r->p;
    r->p += n;
    r->left -= n;
    *len = n;
    return s;
}

char *tr_wire_get_str(struct tr_wire_r *r, size_t *len)
{
    size_t n;
    const char *s = tr_wire_get_view(r, &n);
    if (len != NULL)
        *len = n;
    if (s == NULL)
        return NULL;
    char *c = tr_malloc(n + 1);
    memcpy(c, s, n);
    c[n] = '\0';
    return c;
}

char *tr_wire_get_cstr(struct tr_wire_r *r)
{
    size_t n;
    char *c = tr_wire_get_str(r, &n);
    if (c != NULL && strlen(c) != n) {
        r->bad = true;
        tr_free(c);
        return NULL;
    }
    return c;
}

bool tr_wire_end(const struct tr_wire_r *r)
{
    return !r->bad && r->left == 0;
}

/* ---- TR_MSG_LLM_RESULT ------------------------------------------------------------------ */

#include "actors/run.h"
#include "schemas/journal_generated.h"

#define LLM_RESULT_MAGIC 0x31524c54u  /* "TLR1" */
#define TOOL_RESULT_MAGIC 0x31525454u /* "TTR1" */

static uint8_t finish_reason(const char *r, size_t n)
{
    static const struct {
        const char *word;
        uint8_t value;
    } words[] = {
        { "stop", troupe_journal_FinishReason_Stop },
        { "tool_calls", troupe_journal_FinishReason_ToolCalls },
        { "function_call", troupe_journal_FinishReason_ToolCalls },
        { "length", troupe_journal_FinishReason_Length },
        { "content_filter", troupe_journal_FinishReason_ContentFilter },
    };
    for (size_t i = 0; r != NULL && i < sizeof words / sizeof words[0]; i++) {
        if (strlen(words[i].word) == n && memcmp(words[i].word, r, n) == 0)
            return words[i].value;
    }
    return troupe_journal_FinishReason_Unknown;
}

struct tr_msg *tr_run_llm_result_msg(const struct tr_run_llm_result *r, const char *finish)
{
    struct tr_buf b = { 0 };
    uint32_t n = r->n_calls < TR_RUN_MAX_CALLS ? r->n_calls : TR_RUN_MAX_CALLS;
    tr_wire_u64(&b, LLM_RESULT_MAGIC);
    tr_wire_u64(&b, r->ok);
    tr_wire_u64(&b, r->retryable);
    tr_wire_u64(&b, r->retry_after_ms);
    tr_wire_u64(&b, r->prompt_tokens);
    tr_wire_u64(&b, r->completion_tokens);
    tr_wire_u64(&b, r->cost_micro_usd);
    tr_wire_u64(&b, r->latency_ms);
    tr_wire_u64(&b, r->latency_us);
    tr_wire_u64(&b, r->attempts);
    tr_wire_str(&b, r->content);
    tr_wire_str(&b, finish);
    tr_wire_str(&b, r->model);
    tr_wire_str(&b, r->request_id);
    tr_wire_str(&b, r->error_code);
    tr_wire_str(&b, r->error_message);
    tr_wire_u64(&b, n);
    for (uint32_t i = 0; i < n; i++) {
        tr_wire_str(&b, r->calls[i].id);
        tr_wire_str(&b, r->calls[i].name);
        tr_wire_str(&b, r->calls[i].arguments);
    }
    return tr_wire_msg(TR_MSG_LLM_RESULT, &b);
}

static uint32_t u32_sat(uint64_t v)
{
    return v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
}

void tr_run_llm_result_read(const void *data, size_t len, struct tr_run_llm_result *out)
{
    struct tr_wire_r r;
    size_t fl;

    memset(out, 0, sizeof *out);
    tr_wire_begin(&r, data, len);
    if (tr_wire_get_u64(&r) != LLM_RESULT_MAGIC)
        goto bad;
    out->ok = tr_wire_get_u64(&r) != 0;
    out->retryable = tr_wire_get_u64(&r) != 0;
    out->retry_after_ms = u32_sat(tr_wire_get_u64(&r));
    out->prompt_tokens = tr_wire_get_u64(&r);
    out->completion_tokens = tr_wire_get_u64(&r);
    out->cost_micro_usd = tr_wire_get_u64(&r);
    out->latency_ms = u32_sat(tr_wire_get_u64(&r));
    out->latency_us = tr_wire_get_u64(&r);
    out->attempts = u32_sat(tr_wire_get_u64(&r));
    out->content = tr_wire_get_cstr(&r);
    const char *finish = tr_wire_get_view(&r, &fl);
    out->finish_reason = finish_reason(finish, fl);
    out->model = tr_wire_get_cstr(&r);
    out->request_id = tr_wire_get_cstr(&r);
    out->error_code = tr_wire_get_cstr(&r);
    out->error_message = tr_wire_get_cstr(&r);
    uint64_t n = tr_wire_get_u64(&r);
    if (n > TR_RUN_MAX_CALLS)
        goto bad;
    for (uint32_t i = 0; i < n; i++) {
        out->n_calls++;
        out->calls[i].id = tr_wire_get_cstr(&r);
        out->calls[i].name = tr_wire_get_cstr(&r);
        out->calls[i].arguments = tr_wire_get_cstr(&r);
    }
    if (!tr_wire_end(&r))
        goto bad;
    if (!out->ok && out->error_code == NULL)
        out->error_code = tr_strdup("unavailable");
    return;
bad:
    tr_run_llm_result_free(out);
    out->error_code = tr_strdup("bad_response");
    out->error_message = tr_strdup("the llm actor's reply is not a whole result record");
    out->retryable = true;
}

/* ---- TR_MSG_TOOL_RESULT ----------------------------------------------------------------- */

struct tr_msg *tr_run_tool_result_msg(const struct tr_run_tool_result *r)
{
    struct tr_buf b = { 0 };
    tr_wire_u64(&b, TOOL_RESULT_MAGIC);
    tr_wire_u64(&b, r->ok);
    tr_wire_u64(&b, r->is_error);
    tr_wire_u64(&b, r->truncated);
    tr_wire_u64(&b, (uint64_t)(int64_t)r->status);
    tr_wire_u64(&b, r->attempts);
    tr_wire_u64(&b, r->duration_ms);
    tr_wire_u64(&b, r->duration_us);
    tr_wire_strn(&b, r->result != NULL ? r->result : "", r->result != NULL ? r->result_len : 0);
    tr_wire_str(&b, r->error);
    return tr_wire_msg(TR_MSG_TOOL_RESULT, &b);
}

void tr_run_tool_result_read(const void *data, size_t len, struct tr_run_tool_result *out)
{
    struct tr_wire_r r;

    memset(out, 0, sizeof *out);
    tr_wire_begin(&r, data, len);
    if (tr_wire_get_u64(&r) != TOOL_RESULT_MAGIC)
        goto bad;
    out->ok = tr_wire_get_u64(&r) != 0;
    out->is_error = tr_wire_get_u64(&r) != 0 || !out->ok;
    out->truncated = tr_wire_get_u64(&r) != 0;
    out->status = (int32_t)(int64_t)tr_wire_get_u64(&r);
    out->attempts = u32_sat(tr_wire_get_u64(&r));
    out->duration_ms = u32_sat(tr_wire_get_u64(&r));
    out->duration_us = tr_wire_get_u64(&r);
    out->result = tr_wire_get_str(&r, &out->result_len);
    out->error = tr_wire_get_cstr(&r);
    if (!tr_wire_end(&r))
        goto bad;
    if (out->is_error && out->error == NULL)
        out->error = tr_strdup(out->result != NULL && out->result[0] ? out->result : "the tool call failed");
    return;
bad:
    tr_run_tool_result_free(out);
    out->is_error = true;
    out->error = tr_strdup("the tool executor sent an unreadable reply");
}

/* ---- TR_MSG_TOOL_CALL ------------------------------------------------------------------- */

#define TOOL_CALL_MAGIC 0x31435454u /* "TTC1" */

static void call_payload(struct tr_buf *b, const struct tr_tool_call_rec *c)
{
    tr_wire_u64(b, TOOL_CALL_MAGIC);
    tr_wire_u64(b, c->version);
    tr_wire_u64(b, c->timeout_ms);
    tr_wire_u64(b, c->step);
    tr_wire_u64(b, c->call_index);
    tr_wire_str(b, c->name);
    tr_wire_str(b, c->kind);
    tr_wire_str(b, c->risk);
    tr_wire_str(b, c->config);
    tr_wire_strn(b, c->arguments, c->arguments != NULL ? c->arguments_len : 0);
    tr_wire_str(b, c->idempotency_key);
    tr_wire_str(b, c->run_id);
    tr_wire_str(b, c->tenant);
}

char *tr_tool_call_bytes(const struct tr_tool_call_rec *c, size_t *len)
{
    struct tr_buf b = { 0 };
    call_payload(&b, c);
    *len = b.len;
    return b.p; /* tr_buf's bytes are tr_malloc'd */
}

int tr_tool_call_read(const void *data, size_t len, struct tr_tool_call_rec *out)
{
    struct tr_wire_r r;

    memset(out, 0, sizeof *out);
    tr_wire_begin(&r, data, len);
    if (tr_wire_get_u64(&r) != TOOL_CALL_MAGIC)
        return -1;
    out->version = tr_wire_get_u64(&r);
    out->timeout_ms = tr_wire_get_u64(&r);
    out->step = tr_wire_get_u64(&r);
    out->call_index = tr_wire_get_u64(&r);
    out->name = tr_wire_get_cstr(&r);
    out->kind = tr_wire_get_cstr(&r);
    out->risk = tr_wire_get_cstr(&r);
    out->config = tr_wire_get_cstr(&r);
    out->arguments = tr_wire_get_str(&r, &out->arguments_len);
    out->idempotency_key = tr_wire_get_cstr(&r);
    out->run_id = tr_wire_get_cstr(&r);
    out->tenant = tr_wire_get_cstr(&r);
    if (!tr_wire_end(&r)) {
        tr_tool_call_free(out);
        return -1;
    }
    return 0;
}

void tr_tool_call_free(struct tr_tool_call_rec *c)
{
    tr_free(c->name);
    tr_free(c->kind);
    tr_free(c->risk);
    tr_free(c->config);
    tr_free(c->arguments);
    tr_free(c->idempotency_key);
    tr_free(c->run_id);
    tr_free(c->tenant);
    memset(c, 0, sizeof *c);
}
