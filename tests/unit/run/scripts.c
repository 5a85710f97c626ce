/* Scripted replies shared by the run core's tests and the fold fuzzer's
 * seed generator (scripts.h). */
#include <stdio.h>
#include <string.h>

#include "scripts.h"
#include "schemas/journal_generated.h"

#define J(x) troupe_journal_##x

char *llm_ten(struct harness *h, uint32_t step, uint32_t attempt)
{
    char args[64];
    const char *name = "search", *a = args;

    if (step >= 10)
        return h_llm_call1("finish", "{\"answer\":\"42\"}");
    snprintf(args, sizeof args, "{\"q\":\"step %u\"}", step);
    return h_llm_calls(100 + step, 10, 1234, 1, &name, &a);
}

char *tool_echo(struct harness *h, const char *name, const char *args, const char *key, uint32_t step,
                uint32_t idx)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s(%s) at step %u", name, args, step);
    return h_tool_ok(buf);
}

char *llm_mixed(struct harness *h, uint32_t step, uint32_t attempt)
{
    static const char *const n1[] = { "search", "wire", "scratchpad_write" };
    static const char *const a1[] = { "{\"q\":\"a\"}", "{\"amount\":1}", "{\"key\":\"k\",\"value\":\"v\"}" };
    static const char *const n2[] = { "wire", "current_time" };
    static const char *const a2[] = { "{\"amount\":99}", "{}" };

    switch (step) {
    case 1: return h_llm_calls(10, 1, 11, 3, n1, a1);
    case 2: return h_llm_calls(20, 2, 22, 2, n2, a2);
    case 3: return h_llm_call1("nope", "{}");
    case 4: return h_llm_call1("scratchpad_read", "{\"key\":\"k\"}");
    default: return h_llm_call1("finish", "{\"answer\":\"mixed\"}");
    }
}

int approve_small(struct harness *h, const struct tr_run_call *c)
{
    return strstr(c->args, "99") ? J(Decision_Deny) : J(Decision_Approve);
}

char *llm_wire(struct harness *h, uint32_t step, uint32_t attempt)
{
    if (step == 1)
        return h_llm_call1("wire", "{\"amount\":5}");
    return h_llm_text("done", 50, 5, 100);
}

char *llm_post(struct harness *h, uint32_t step, uint32_t attempt)
{
    if (step == 1)
        return h_llm_call1("post", "{}");
    return h_llm_text("posted", 1, 1, 1);
}

char *llm_forever(struct harness *h, uint32_t step, uint32_t attempt)
{
    char args[64];
    const char *name = "search", *a = args;
    snprintf(args, sizeof args, "{\"q\":\"s%u\"}", step);
    return h_llm_calls(100, 10, 1000, 1, &name, &a);
}

char *llm_same(struct harness *h, uint32_t step, uint32_t attempt)
{
    return h_llm_call1("search", "{ \"q\" : \"same\" }");
}

char *tool_same(struct harness *h, const char *name, const char *args, const char *key, uint32_t step,
                uint32_t idx)
{
    return h_tool_ok("nothing to see");
}

char *llm_malformed(struct harness *h, uint32_t step, uint32_t attempt)
{
    switch (step) {
    case 1: return h_llm_call1("nope", "{}");
    case 2: return h_llm_call1("search", "{q: unquoted");
    case 3: return h_llm_call1("search", "{\"q\":\"\",\"x\":1}");
    case 4: return h_llm_call1("search", "[1,2]");
    case 5: return h_llm_call1("search", "{\"q\":\"fine\"}");
    default: return h_llm_call1("finish", "{\"answer\":\"fixed it\"}");
    }
}

char *llm_nope(struct harness *h, uint32_t step, uint32_t attempt)
{
    return h_llm_call1(step % 2 ? "nope" : "search", step % 2 ? "{}" : "{\"bad\":1}");
}

char *llm_builtins(struct harness *h, uint32_t step, uint32_t attempt)
{
    static const char *const n1[] = { "scratchpad_write", "current_time" };
    static const char *const a1[] = { "{\"key\":\"plan\",\"value\":\"step one\"}", "" };
    static const char *const n2[] = { "scratchpad_read", "scratchpad_read" };
    static const char *const a2[] = { "{\"key\":\"plan\"}", "{\"key\":\"zz\"}" };

    switch (step) {
    case 1: return h_llm_calls(1, 1, 1, 2, n1, a1);
    case 2: return h_llm_calls(1, 1, 1, 2, n2, a2);
    default: return h_llm_call1("finish", "{\"output\":\"bye\"}");
    }
}
