/* libFuzzer target: every parser of gateway/ that takes bytes from an HTTP or
 * protocol client (validate.c, auth.c, route.c, render.c).
 *
 * Input: data[0] picks the parser, ((data[0] - 1) & 31) % MODE_COUNT, so that
 * 'A' is mode 0, 'B' mode 1 ... (see enum mode); the rest is its input. The
 * route mode takes the HTTP method from data[1], the cursor mode its key
 * capacity; everything after is the path or the cursor text.
 *
 * Checked, besides ASan/UBSan (inputs are copied into buffers of exactly
 * their size, C strings into size + 1 with the NUL):
 *   - a body parser that fails returns -1 with a 400, a non-empty code and
 *     message, and leaves nothing allocated (its out pointers NULL); one that
 *     succeeds yields fields within the documented limits, and is freed with
 *     its *_free;
 *   - a parsed body, written back as JSON (the canonical text for runs, the
 *     fields for the others), parses again to the same request: runs keep
 *     their digest whatever the key order, and a tool read back can be posted
 *     again;
 *   - the raft command built from a parsed body verifies as a TRC1
 *     troupe.cmd.Command and reads back the parsed fields;
 *   - an error's code and message always make a JSON error body
 *     (gw_error_json), also when the message quotes client bytes;
 *   - the small parsers (API keys, tool and tenant names, Idempotency-Key,
 *     decimal integers, enum names, routes, query strings, cursors) agree
 *     with a plain reference written here from their documented contracts;
 *     cursors and routes round-trip through their encoders, run ids in
 *     run routes through tr_run_id_text. */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "actors/jsonschema.h"
#include "gateway/gw_int.h"
#include "tests/fuzz/fuzz.h"

enum mode {
    M_RUN,            /* A: POST /v1/runs body */
    M_TOOL,           /* B: POST /v1/tools body */
    M_DECIDE,         /* C: POST /v1/approvals/{id} body */
    M_CANCEL,         /* D: POST /v1/runs/{id}/cancel body */
    M_TENANT_CREATE,  /* E: POST /v1/tenants body */
    M_TENANT_UPDATE,  /* F: POST /v1/tenants/{id} body */
    M_KEY_REQ,        /* G: POST /v1/keys body */
    M_IDEM,           /* H: Idempotency-Key header */
    M_TOOL_NAME,      /* I: gw_tool_name_ok */
    M_TENANT_NAME,    /* J: gw_tenant_name_ok */
    M_API_KEY,        /* K: gw_key_parse */
    M_NAMES,          /* L: role, run status, risk, kind, approval status names */
    M_U64,            /* M: gw_parse_u64 */
    M_ROUTE,          /* N: gw_route (data[1]: method) */
    M_QUERY,          /* O: gw_query_get and what the handlers do with the values */
    M_CURSOR,         /* P: gw_cursor_decode / encode (data[1]: capacity) */
    M_JSON_TEXT,      /* Q: gw_json_text_value */
    MODE_COUNT
};

static const struct gw_cmd_head head = { .time_us = 1700000000000123LL, .origin_node = 7 };

/* ---- helpers ------------------------------------------------------------------------ */

static char *exact_copy(const uint8_t *p, size_t n)
{
    return (char *)fuzz_copy(p, n);
}

static char *cstr_copy(const uint8_t *p, size_t n)
{
    char *s = malloc(n + 1);
    CHECK(s != NULL);
    if (n > 0)
        memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

static void error_init(struct gw_error *e)
{
    memset(e, 0, sizeof *e);
}

/* The error body the client gets (gw_respond_gw_error): always JSON, even
 * when the message quotes client bytes. */
static void check_error_body(const char *code, const char *msg)
{
    json_t *j = gw_error_json(code, msg);
    CHECK(j != NULL);
    char *text = json_dumps(j, JSON_COMPACT);
    CHECK(text != NULL);
    free(text);
    json_decref(j);
}

/* A refusal: -1, a 400 with a code and a message, both NUL-terminated. */
static void check_refused(int rv, const struct gw_error *e)
{
    CHECK(rv == -1);
    CHECK(e->status == 400);
    CHECK(memchr(e->code, '\0', sizeof e->code) != NULL && e->code[0] != '\0');
    CHECK(memchr(e->msg, '\0', sizeof e->msg) != NULL && e->msg[0] != '\0');
    check_error_body(e->code, e->msg);
}

static void check_str(struct tr_fb_str s, const char *want)
{
    if (want == NULL) {
        CHECK(s.ptr == NULL);
        return;
    }
    CHECK(s.ptr != NULL);
    CHECK(s.len == strlen(want));
    CHECK(memcmp(s.ptr, want, s.len) == 0);
    CHECK(s.ptr[s.len] == '\0');
}

static bool opt_eq(const char *a, const char *b)
{
    return a == NULL ? b == NULL : b != NULL && strcmp(a, b) == 0;
}

/* The builder's command, copied to a buffer of its exact size and verified
 * as a TRC1 troupe.cmd.Command of op `op` with our head. *copy: caller frees. */
static const struct troupe_cmd_Command *verify_cmd(struct tr_fb_builder *b, uint8_t op, void **copy)
{
    size_t len;
    const uint8_t *data = tr_fb_builder_data(b, &len);
    CHECK(data != NULL && len > 0);
    *copy = fuzz_copy(data, len);
    struct tr_fb_error ferr;
    const struct troupe_cmd_Command *cmd =
        troupe_cmd_Command_verify_as_root_opts(*copy, len, "TRC1", &tr_fb_default_limits, &ferr);
    if (cmd == NULL) {
        char m[256];
        fprintf(stderr, "command does not verify: %s\n", tr_fb_error_format(&ferr, m, sizeof m));
        abort();
    }
    CHECK(troupe_cmd_Command_op_type(cmd) == op);
    CHECK(troupe_cmd_Command_time_us(cmd) == head.time_us);
    CHECK(troupe_cmd_Command_origin_node(cmd) == head.origin_node);
    return cmd;
}

/* ---- POST /v1/runs ------------------------------------------------------------------ */

static void check_run_fields(const struct gw_run_req *r)
{
    CHECK(json_is_object(r->root));
    CHECK(r->goal != NULL && r->goal_len >= 1 && r->goal_len <= GW_GOAL_MAX && strlen(r->goal) == r->goal_len);
    if (!r->has_agent)
        CHECK(r->model == NULL && r->system == NULL && r->provider == NULL && r->n_tools == 0 &&
              !r->has_max_steps && r->max_tokens == 0 && r->max_cost_usd == 0 && r->timeout_s == 0 &&
              !r->has_temperature);
    CHECK(r->model == NULL || (strlen(r->model) >= 1 && strlen(r->model) <= GW_MODEL_MAX));
    CHECK(r->system == NULL || strlen(r->system) <= GW_SYSTEM_MAX);
    CHECK(r->provider == NULL || (strlen(r->provider) >= 1 && strlen(r->provider) <= GW_MODEL_MAX));
    CHECK(r->n_tools <= GW_AGENT_TOOLS_MAX);
    for (size_t i = 0; i < r->n_tools; i++) {
        CHECK(r->tools[i] != NULL && gw_tool_name_ok(r->tools[i], strlen(r->tools[i])));
        for (size_t k = 0; k < i; k++)
            CHECK(strcmp(r->tools[i], r->tools[k]) != 0);
    }
    CHECK(!r->has_max_steps || (r->max_steps >= 1 && r->max_steps <= 10000));
    CHECK(r->max_tokens <= 1000000000000ull);
    CHECK(isfinite(r->max_cost_usd) && r->max_cost_usd >= 0 && r->max_cost_usd <= 1e6);
    CHECK(r->timeout_s <= 30 * 86400);
    if (r->has_temperature)
        CHECK(isfinite(r->temperature) && r->temperature >= 0 && r->temperature <= 2);
    else if (r->has_agent)
        CHECK(r->temperature == 1.0f); /* the schema's default */
    if (r->metadata != NULL) {
        CHECK(strlen(r->metadata) <= GW_METADATA_MAX);
        json_t *m = json_loads(r->metadata, JSON_REJECT_DUPLICATES, NULL);
        CHECK(json_is_object(m));
        json_decref(m);
    }
    /* The digest is that of the canonical body. */
    char *canon = json_dumps(r->root, JSON_COMPACT | JSON_SORT_KEYS);
    CHECK(canon != NULL);
    unsigned char d[32];
    crypto_generichash(d, sizeof d, (const unsigned char *)canon, strlen(canon), NULL, 0);
    CHECK(memcmp(d, r->digest, sizeof d) == 0);
    free(canon);
}

static void check_run_same(const struct gw_run_req *a, const struct gw_run_req *b)
{
    CHECK(a->goal_len == b->goal_len && memcmp(a->goal, b->goal, a->goal_len) == 0);
    CHECK(a->has_agent == b->has_agent);
    CHECK(opt_eq(a->model, b->model) && opt_eq(a->system, b->system) && opt_eq(a->provider, b->provider));
    CHECK(a->n_tools == b->n_tools);
    for (size_t i = 0; i < a->n_tools; i++)
        CHECK(strcmp(a->tools[i], b->tools[i]) == 0);
    CHECK(a->has_max_steps == b->has_max_steps && a->max_steps == b->max_steps);
    CHECK(a->max_tokens == b->max_tokens && a->max_cost_usd == b->max_cost_usd && a->timeout_s == b->timeout_s);
    CHECK(a->has_temperature == b->has_temperature && a->temperature == b->temperature);
    CHECK(opt_eq(a->metadata, b->metadata));
    CHECK(memcmp(a->digest, b->digest, sizeof a->digest) == 0);
}

static void check_run_command(const struct gw_run_req *r)
{
    struct tr_fb_builder b;
    tr_fb_builder_init(&b);
    struct gw_run_create_args a = { .run_id = 0x1234abcdULL,
                                    .tenant = "acme",
                                    .idempotency_key = r->goal_len % 2 ? "idem-key-1" : NULL,
                                    .owner_node = 9,
                                    .created_by = "key:0123456789abcdef" };
    gw_build_run_create(&b, &head, r, &a);
    void *copy;
    const struct troupe_cmd_Command *cmd = verify_cmd(&b, troupe_cmd_Op_RunCreate, &copy);
    const struct troupe_cmd_RunCreate *rc = troupe_cmd_Command_op_as_RunCreate(cmd);
    CHECK(rc != NULL);
    char rid[TR_RUN_ID_TEXT_LEN];
    tr_run_id_text(a.run_id, rid);
    check_str(troupe_cmd_RunCreate_run_id(rc), rid);
    check_str(troupe_cmd_RunCreate_tenant(rc), a.tenant);
    check_str(troupe_cmd_RunCreate_idempotency_key(rc), a.idempotency_key);
    struct tr_fb_vec dg = troupe_cmd_RunCreate_request_digest(rc);
    CHECK(dg.data != NULL && dg.len == 32 && memcmp(dg.data, r->digest, 32) == 0);
    struct tr_fb_str goal = troupe_cmd_RunCreate_goal(rc);
    CHECK(goal.ptr != NULL && goal.len == r->goal_len && memcmp(goal.ptr, r->goal, goal.len) == 0);
    check_str(troupe_cmd_RunCreate_metadata(rc), r->metadata);
    CHECK(troupe_cmd_RunCreate_owner_node(rc) == a.owner_node);
    CHECK(troupe_cmd_RunCreate_has_epoch(rc) && troupe_cmd_RunCreate_epoch(rc) == 1);
    check_str(troupe_cmd_RunCreate_created_by(rc), a.created_by);
    const struct troupe_journal_AgentConfig *ag = troupe_cmd_RunCreate_agent(rc);
    CHECK((ag != NULL) == r->has_agent);
    if (ag != NULL) {
        check_str(troupe_journal_AgentConfig_model(ag), r->model);
        check_str(troupe_journal_AgentConfig_system(ag), r->system);
        check_str(troupe_journal_AgentConfig_provider(ag), r->provider);
        CHECK(troupe_journal_AgentConfig_tools_len(ag) == r->n_tools);
        for (size_t i = 0; i < r->n_tools; i++)
            check_str(troupe_journal_AgentConfig_tools_at(ag, (uint32_t)i), r->tools[i]);
        CHECK(troupe_journal_AgentConfig_max_steps(ag) == (r->has_max_steps ? r->max_steps : 50));
        CHECK(troupe_journal_AgentConfig_max_tokens(ag) == r->max_tokens);
        CHECK(troupe_journal_AgentConfig_max_cost_usd(ag) == r->max_cost_usd);
        CHECK(troupe_journal_AgentConfig_timeout_s(ag) == r->timeout_s);
        CHECK(troupe_journal_AgentConfig_temperature(ag) == r->temperature);
    }
    free(copy);
    tr_fb_builder_free(&b);
}

static void fuzz_run(const uint8_t *p, size_t n)
{
    char *body = exact_copy(p, n);
    struct gw_run_req r;
    struct gw_error e;
    error_init(&e);
    int rv = gw_run_req_parse(body, n, &r, &e);
    free(body);
    if (rv != 0) {
        check_refused(rv, &e);
        CHECK(r.root == NULL && r.metadata == NULL);
        return;
    }
    check_run_fields(&r);
    /* Same body in canonical form: same request, same digest. */
    char *canon = json_dumps(r.root, JSON_COMPACT | JSON_SORT_KEYS);
    CHECK(canon != NULL);
    struct gw_run_req again;
    error_init(&e);
    if (gw_run_req_parse(canon, strlen(canon), &again, &e) != 0) {
        fprintf(stderr, "canonical run body refused: %s: %s\n", e.code, e.msg);
        abort();
    }
    check_run_same(&r, &again);
    gw_run_req_free(&again);
    free(canon);
    check_run_command(&r);
    gw_run_req_free(&r);
    CHECK(r.root == NULL && r.metadata == NULL);
}

/* ---- POST /v1/tools ----------------------------------------------------------------- */

static json_t *load_any(const char *s)
{
    return json_loads(s, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, NULL);
}

static void check_tool_fields(const struct gw_tool_req *t)
{
    CHECK(t->name != NULL && gw_tool_name_ok(t->name, strlen(t->name)));
    CHECK(t->description != NULL && strlen(t->description) <= GW_TOOL_DESC_MAX);
    CHECK(strcmp(gw_risk_name(t->risk), "unknown") != 0);
    CHECK(strcmp(gw_kind_name(t->kind), "unknown") != 0);
    CHECK(t->timeout_ms >= 1 && t->timeout_ms <= GW_TOOL_TIMEOUT_MAX);
    /* config: a canonical JSON object; an http tool has an http(s) url */
    CHECK(t->config != NULL && strlen(t->config) <= GW_TOOL_CONFIG_MAX);
    json_t *config = load_any(t->config);
    CHECK(json_is_object(config));
    char *again = json_dumps(config, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    CHECK(again != NULL && strcmp(again, t->config) == 0);
    free(again);
    if (t->kind == troupe_cmd_ToolKind_Http) {
        const char *url = json_string_value(json_object_get(config, "url"));
        CHECK(url != NULL && (strncmp(url, "http://", 7) == 0 || strncmp(url, "https://", 8) == 0));
    }
    json_decref(config);
    /* input_schema: canonical, and the stored text, read as any JSON value
     * (booleans are schemas too), compiles: the run actor compiles it later. */
    CHECK(t->input_schema != NULL && strlen(t->input_schema) <= GW_TOOL_SCHEMA_MAX);
    json_t *schema = load_any(t->input_schema);
    CHECK(json_is_object(schema) || json_is_boolean(schema));
    again = json_dumps(schema, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    CHECK(again != NULL && strcmp(again, t->input_schema) == 0);
    free(again);
    struct tr_schema *compiled = NULL;
    struct tr_err serr = { 0 };
    if (tr_schema_compile(schema, &compiled, &serr) != TR_OK) {
        fprintf(stderr, "stored input_schema does not compile: %s\n", serr.msg);
        abort();
    }
    tr_schema_free(compiled);
    json_decref(schema);
}

/* The tool as a body again, as GET shows it (with its version). */
static char *tool_body(const struct gw_tool_req *t)
{
    json_t *o = json_object();
    json_object_set_new(o, "name", json_string(t->name));
    json_object_set_new(o, "version", json_integer(3));
    json_object_set_new(o, "description", json_string(t->description));
    json_object_set_new(o, "input_schema", load_any(t->input_schema));
    json_object_set_new(o, "risk", json_string(gw_risk_name(t->risk)));
    json_object_set_new(o, "kind", json_string(gw_kind_name(t->kind)));
    json_object_set_new(o, "config", load_any(t->config));
    json_object_set_new(o, "timeout_ms", json_integer(t->timeout_ms));
    json_object_set_new(o, "enabled", json_boolean(t->enabled));
    char *s = json_dumps(o, JSON_COMPACT);
    CHECK(s != NULL);
    json_decref(o);
    return s;
}

static void check_tool_command(const struct gw_tool_req *t)
{
    struct tr_fb_builder b;
    tr_fb_builder_init(&b);
    const char *tenant = strlen(t->name) % 2 ? "ten_0123456789abcdef" : NULL;
    if (tenant != NULL)
        gw_build_tool_register_for(&b, &head, t, tenant);
    else
        gw_build_tool_register(&b, &head, t);
    void *copy;
    const struct troupe_cmd_Command *cmd = verify_cmd(&b, troupe_cmd_Op_ToolRegister, &copy);
    const struct troupe_cmd_ToolRegister *reg = troupe_cmd_Command_op_as_ToolRegister(cmd);
    CHECK(reg != NULL);
    check_str(troupe_cmd_ToolRegister_tenant(reg), tenant);
    const struct troupe_cmd_Tool *tool = troupe_cmd_ToolRegister_tool(reg);
    CHECK(tool != NULL);
    check_str(troupe_cmd_Tool_name(tool), t->name);
    check_str(troupe_cmd_Tool_description(tool), t->description);
    check_str(troupe_cmd_Tool_input_schema(tool), t->input_schema);
    check_str(troupe_cmd_Tool_config(tool), t->config);
    CHECK(troupe_cmd_Tool_risk(tool) == t->risk);
    CHECK(troupe_cmd_Tool_kind(tool) == t->kind);
    CHECK(troupe_cmd_Tool_timeout_ms(tool) == t->timeout_ms);
    CHECK(troupe_cmd_Tool_enabled(tool) == t->enabled);
    free(copy);
    tr_fb_builder_free(&b);
}

static void fuzz_tool(const uint8_t *p, size_t n)
{
    char *body = exact_copy(p, n);
    struct gw_tool_req t;
    struct gw_error e;
    error_init(&e);
    int rv = gw_tool_req_parse(body, n, &t, &e);
    free(body);
    if (rv != 0) {
        check_refused(rv, &e);
        CHECK(t.name == NULL && t.description == NULL && t.input_schema == NULL && t.config == NULL);
        return;
    }
    check_tool_fields(&t);
    char *again_body = tool_body(&t);
    struct gw_tool_req again;
    error_init(&e);
    if (gw_tool_req_parse(again_body, strlen(again_body), &again, &e) != 0) {
        fprintf(stderr, "tool read back refused: %s: %s\n", e.code, e.msg);
        abort();
    }
    CHECK(strcmp(t.name, again.name) == 0 && strcmp(t.description, again.description) == 0);
    CHECK(strcmp(t.input_schema, again.input_schema) == 0 && strcmp(t.config, again.config) == 0);
    CHECK(t.risk == again.risk && t.kind == again.kind && t.timeout_ms == again.timeout_ms &&
          t.enabled == again.enabled);
    gw_tool_req_free(&again);
    free(again_body);
    check_tool_command(&t);
    gw_tool_req_free(&t);
    CHECK(t.name == NULL && t.config == NULL);
}

/* ---- approvals and cancel ------------------------------------------------------------- */

static void fuzz_decide(const uint8_t *p, size_t n)
{
    char *body = exact_copy(p, n);
    struct gw_decide_req d;
    struct gw_error e;
    error_init(&e);
    int rv = gw_decide_req_parse(body, n, &d, &e);
    free(body);
    if (rv != 0) {
        check_refused(rv, &e);
        CHECK(d.reason == NULL);
        return;
    }
    CHECK(d.decision == troupe_journal_Decision_Approve || d.decision == troupe_journal_Decision_Deny);
    CHECK(d.reason == NULL || strlen(d.reason) <= GW_REASON_MAX);
    /* written back and parsed again */
    json_t *o = json_pack("{s:s}", "decision", d.decision == troupe_journal_Decision_Approve ? "approve" : "deny");
    if (d.reason != NULL)
        json_object_set_new(o, "reason", json_string(d.reason));
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    struct gw_decide_req again;
    CHECK(gw_decide_req_parse(s, strlen(s), &again, &e) == 0);
    CHECK(again.decision == d.decision && opt_eq(again.reason, d.reason));
    gw_decide_req_free(&again);
    free(s);

    struct tr_fb_builder b;
    tr_fb_builder_init(&b);
    gw_build_approval_decide(&b, &head, "apr-1", "run_0000000000000abc", d.decision, d.reason, "admin");
    void *copy;
    const struct troupe_cmd_Command *cmd = verify_cmd(&b, troupe_cmd_Op_ApprovalDecide, &copy);
    const struct troupe_cmd_ApprovalDecide *ad = troupe_cmd_Command_op_as_ApprovalDecide(cmd);
    CHECK(ad != NULL);
    CHECK(troupe_cmd_ApprovalDecide_decision(ad) == d.decision);
    check_str(troupe_cmd_ApprovalDecide_reason(ad), d.reason);
    free(copy);
    tr_fb_builder_free(&b);
    gw_decide_req_free(&d);
    CHECK(d.reason == NULL);
}

static void fuzz_cancel(const uint8_t *p, size_t n)
{
    char *body = exact_copy(p, n);
    char *reason = (char *)"sentinel";
    struct gw_error e;
    error_init(&e);
    int rv = gw_cancel_req_parse(body, n, &reason, &e);
    bool blank = true;
    for (size_t i = 0; i < n && blank; i++)
        blank = body[i] == ' ' || body[i] == '\t' || body[i] == '\r' || body[i] == '\n';
    free(body);
    if (rv != 0) {
        check_refused(rv, &e);
        CHECK(reason == NULL && !blank);
        return;
    }
    CHECK(rv == 0);
    if (blank)
        CHECK(reason == NULL);
    CHECK(reason == NULL || strlen(reason) <= GW_REASON_MAX);
    struct tr_fb_builder b;
    tr_fb_builder_init(&b);
    gw_build_run_cancel(&b, &head, 0xabc, reason, "admin");
    void *copy;
    const struct troupe_cmd_Command *cmd = verify_cmd(&b, troupe_cmd_Op_RunCancel, &copy);
    const struct troupe_cmd_RunCancel *rc = troupe_cmd_Command_op_as_RunCancel(cmd);
    CHECK(rc != NULL);
    check_str(troupe_cmd_RunCancel_reason(rc), reason);
    check_str(troupe_cmd_RunCancel_run_id(rc), "run_0000000000000abc");
    free(copy);
    tr_fb_builder_free(&b);
    tr_free(reason);
}

/* ---- tenants and keys ------------------------------------------------------------------- */

static bool ref_tenant_name_ok(const char *s, size_t len)
{
    if (len < 1 || len > GW_TENANT_NAME_MAX || memchr(s, '\0', len) != NULL)
        return false;
    if ((len == 7 && memcmp(s, "default", 7) == 0) || (len >= 4 && memcmp(s, "ten_", 4) == 0))
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        bool alnum = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
        if (!alnum && (i == 0 || !(c == '_' || c == '-' || c == '.')))
            return false;
    }
    return true;
}

static void check_limits(const struct troupe_cmd_TenantLimits *l, const struct gw_tenant_req *t)
{
    CHECK(l != NULL);
    CHECK(troupe_cmd_TenantLimits_max_active_runs(l) == (t->has_max_active_runs ? t->max_active_runs : 100));
    CHECK(troupe_cmd_TenantLimits_requests_per_s(l) == (t->has_rps ? t->requests_per_s : 50));
    CHECK(troupe_cmd_TenantLimits_budget_usd_per_day(l) == (t->has_budget ? t->budget_usd_per_day : 0));
    CHECK(troupe_cmd_TenantLimits_budget_policy(l) ==
          (t->has_policy ? t->budget_policy : troupe_cmd_BudgetPolicy_Fail));
}

static void fuzz_tenant(const uint8_t *p, size_t n, bool create)
{
    char *body = exact_copy(p, n);
    struct gw_tenant_req t;
    struct gw_error e;
    error_init(&e);
    int rv = gw_tenant_req_parse(body, n, create, &t, &e);
    free(body);
    if (rv != 0) {
        check_refused(rv, &e);
        CHECK(t.name == NULL);
        return;
    }
    if (create)
        CHECK(t.name != NULL && ref_tenant_name_ok(t.name, strlen(t.name)) &&
              gw_tenant_name_ok(t.name, strlen(t.name)));
    else
        CHECK(t.name == NULL);
    CHECK(!t.has_max_active_runs || t.max_active_runs <= GW_ACTIVE_RUNS_MAX);
    CHECK(!t.has_rps || t.requests_per_s <= GW_RPS_MAX);
    CHECK(!t.has_budget ||
          (isfinite(t.budget_usd_per_day) && t.budget_usd_per_day >= 0 && t.budget_usd_per_day <= GW_BUDGET_MAX));
    CHECK(!t.has_policy || t.budget_policy == troupe_cmd_BudgetPolicy_Fail ||
          t.budget_policy == troupe_cmd_BudgetPolicy_Wait);

    /* written back and parsed again */
    json_t *o = json_object(), *l = json_object();
    if (t.name != NULL)
        json_object_set_new(o, "name", json_string(t.name));
    if (t.has_max_active_runs)
        json_object_set_new(l, "max_active_runs", json_integer(t.max_active_runs));
    if (t.has_rps)
        json_object_set_new(l, "requests_per_s", json_integer(t.requests_per_s));
    if (t.has_budget)
        json_object_set_new(l, "budget_usd_per_day", json_real(t.budget_usd_per_day));
    if (t.has_policy)
        json_object_set_new(l, "budget_policy",
                            json_string(t.budget_policy == troupe_cmd_BudgetPolicy_Wait ? "wait" : "fail"));
    json_object_set_new(o, "limits", l);
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    struct gw_tenant_req again;
    error_init(&e);
    if (gw_tenant_req_parse(s, strlen(s), create, &again, &e) != 0) {
        fprintf(stderr, "tenant body written back refused: %s: %s (%s)\n", e.code, e.msg, s);
        abort();
    }
    CHECK(opt_eq(again.name, t.name));
    CHECK(again.has_max_active_runs == t.has_max_active_runs && again.max_active_runs == t.max_active_runs);
    CHECK(again.has_rps == t.has_rps && again.requests_per_s == t.requests_per_s);
    CHECK(again.has_budget == t.has_budget && again.budget_usd_per_day == t.budget_usd_per_day);
    CHECK(again.has_policy == t.has_policy && again.budget_policy == t.budget_policy);
    gw_tenant_req_free(&again);
    free(s);

    struct tr_fb_builder b;
    tr_fb_builder_init(&b);
    void *copy;
    if (create) {
        unsigned char hash[32];
        memset(hash, 0x5a, sizeof hash);
        gw_build_tenant_create(&b, &head, "ten_0123456789abcdef", &t, "0123456789abcdef", hash);
        const struct troupe_cmd_Command *cmd = verify_cmd(&b, troupe_cmd_Op_TenantCreate, &copy);
        const struct troupe_cmd_TenantCreate *tc = troupe_cmd_Command_op_as_TenantCreate(cmd);
        CHECK(tc != NULL);
        check_str(troupe_cmd_TenantCreate_tenant_id(tc), "ten_0123456789abcdef");
        check_str(troupe_cmd_TenantCreate_name(tc), t.name);
        struct tr_fb_vec h = troupe_cmd_TenantCreate_key_hash(tc);
        CHECK(h.data != NULL && h.len == 32 && memcmp(h.data, hash, 32) == 0);
        check_limits(troupe_cmd_TenantCreate_limits(tc), &t);
    } else {
        gw_build_tenant_update(&b, &head, "ten_0123456789abcdef", &t, NULL);
        const struct troupe_cmd_Command *cmd = verify_cmd(&b, troupe_cmd_Op_TenantUpdate, &copy);
        const struct troupe_cmd_TenantUpdate *tu = troupe_cmd_Command_op_as_TenantUpdate(cmd);
        CHECK(tu != NULL);
        check_str(troupe_cmd_TenantUpdate_tenant_id(tu), "ten_0123456789abcdef");
        check_limits(troupe_cmd_TenantUpdate_limits(tu), &t);
    }
    free(copy);
    tr_fb_builder_free(&b);
    gw_tenant_req_free(&t);
    CHECK(t.name == NULL);
}

static void fuzz_key_req(const uint8_t *p, size_t n)
{
    char *body = exact_copy(p, n);
    char *tenant = (char *)"sentinel";
    int8_t role = -1;
    struct gw_error e;
    error_init(&e);
    int rv = gw_key_req_parse(body, n, &tenant, &role, &e);
    free(body);
    if (rv != 0) {
        check_refused(rv, &e);
        CHECK(tenant == NULL);
        return;
    }
    CHECK(tenant != NULL && strlen(tenant) >= 1 && strlen(tenant) <= TR_IDEM_TENANT_MAX);
    CHECK(role >= GW_ROLE_VIEWER && role <= GW_ROLE_ADMIN);
    json_t *o = json_pack("{s:s, s:s}", "tenant", tenant, "role", gw_role_name(role));
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    char *t2;
    int8_t r2;
    CHECK(gw_key_req_parse(s, strlen(s), &t2, &r2, &e) == 0);
    CHECK(strcmp(t2, tenant) == 0 && r2 == role);
    tr_free(t2);
    free(s);

    struct tr_fb_builder b;
    tr_fb_builder_init(&b);
    unsigned char hash[32];
    memset(hash, 0xa5, sizeof hash);
    gw_build_key_create(&b, &head, tenant, "0123456789abcdef", hash, role);
    void *copy;
    const struct troupe_cmd_Command *cmd = verify_cmd(&b, troupe_cmd_Op_KeyCreate, &copy);
    const struct troupe_cmd_KeyCreate *kc = troupe_cmd_Command_op_as_KeyCreate(cmd);
    CHECK(kc != NULL);
    check_str(troupe_cmd_KeyCreate_tenant_id(kc), tenant);
    CHECK(troupe_cmd_KeyCreate_role(kc) == role);
    free(copy);
    tr_fb_builder_free(&b);
    tr_free(tenant);
}

/* ---- headers, names, numbers --------------------------------------------------------------- */

static void fuzz_idem(const uint8_t *p, size_t n)
{
    char *key = cstr_copy(p, n);
    size_t len = strlen(key);
    bool want = len >= 1 && len <= GW_IDEM_KEY_MAX;
    for (size_t i = 0; i < len && want; i++)
        want = (unsigned char)key[i] >= 0x21 && (unsigned char)key[i] <= 0x7e;
    struct gw_error e;
    error_init(&e);
    int rv = gw_idem_key_check(key, &e);
    if (want)
        CHECK(rv == 0);
    else
        check_refused(rv, &e);
    free(key);
}

static bool ref_tool_name_ok(const char *s, size_t n)
{
    if (n < 1 || n > GW_TOOL_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == '-'))
            return false;
    }
    return true;
}

static void fuzz_tool_name(const uint8_t *p, size_t n)
{
    char *s = exact_copy(p, n);
    CHECK(gw_tool_name_ok(s, n) == ref_tool_name_ok(s, n));
    free(s);
}

static void fuzz_tenant_name(const uint8_t *p, size_t n)
{
    char *s = cstr_copy(p, n);
    CHECK(gw_tenant_name_ok(s, n) == ref_tenant_name_ok(s, n));
    free(s);
}

static bool lower_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

/* gw_key_parse of text[0..n) (a buffer of exactly n bytes). */
static void check_api_key(const char *text, size_t n)
{
    /* "trk_" + 16 hex digits + "_" + 64 hex digits, lower case */
    bool want = n == 4 + GW_KEY_ID_LEN + 1 + 2 * GW_KEY_SECRET_LEN && memcmp(text, "trk_", 4) == 0 &&
                lower_hex(text + 4, GW_KEY_ID_LEN) && text[4 + GW_KEY_ID_LEN] == '_' &&
                lower_hex(text + 5 + GW_KEY_ID_LEN, 2 * GW_KEY_SECRET_LEN);
    char id[GW_KEY_ID_LEN + 1];
    unsigned char hash[32];
    memset(id, 'X', sizeof id);
    int rv = gw_key_parse(text, n, id, hash);
    if (!want) {
        CHECK(rv == TR_EINVAL);
    } else {
        CHECK(rv == TR_OK);
        CHECK(memcmp(id, text + 4, GW_KEY_ID_LEN) == 0 && id[GW_KEY_ID_LEN] == '\0');
        unsigned char h[32];
        crypto_generichash(h, sizeof h, (const unsigned char *)text, n, NULL, 0);
        CHECK(memcmp(h, hash, sizeof h) == 0);
    }
}

static void fuzz_api_key(const uint8_t *p, size_t n)
{
    char *text = exact_copy(p, n);
    check_api_key(text, n);
    free(text);
}

/* parse(s) succeeds exactly when s is one of name(0..)'s names, and then
 * name(result) is s. */
static void check_names(int (*parse)(const char *, int8_t *), const char *(*name)(int), const char *s)
{
    bool known = false;
    for (int i = -2; i < 40; i++)
        known |= strcmp(name(i), "unknown") != 0 && strcmp(name(i), s) == 0;
    int8_t v = -99;
    int rv = parse(s, &v);
    if (rv == TR_OK) {
        CHECK(known);
        CHECK(strcmp(name(v), s) == 0);
    } else {
        CHECK(rv == TR_EINVAL && !known && v == -99);
    }
}

static void check_all_names(const char *s)
{
    check_names(gw_role_parse, gw_role_name, s);
    check_names(gw_run_status_parse, gw_run_status_name, s);
    check_names(gw_risk_parse, gw_risk_name, s);
    check_names(gw_kind_parse, gw_kind_name, s);
    check_names(gw_approval_status_parse, gw_approval_status_name, s);
}

static void fuzz_names(const uint8_t *p, size_t n)
{
    char *s = cstr_copy(p, n);
    check_all_names(s);
    free(s);
}

/* gw_parse_u64 agrees with a plain reading: digits only, no overflow. */
static void check_u64(const char *s)
{
    bool want = *s != '\0';
    uint64_t v = 0;
    for (const char *q = s; *q != '\0' && want; q++) {
        if (*q < '0' || *q > '9') {
            want = false;
            break;
        }
        unsigned __int128 w = (unsigned __int128)v * 10 + (unsigned)(*q - '0');
        if (w > UINT64_MAX)
            want = false;
        v = (uint64_t)w;
    }
    uint64_t got = 12345;
    int rv = gw_parse_u64(s, &got);
    if (!want) {
        CHECK(rv == TR_EINVAL && got == 12345);
        return;
    }
    CHECK(rv == TR_OK && got == v);
    char back[24];
    snprintf(back, sizeof back, "%llu", (unsigned long long)got);
    const char *z = s;
    while (z[0] == '0' && z[1] != '\0')
        z++;
    CHECK(strcmp(back, z) == 0);
}

static void fuzz_u64(const uint8_t *p, size_t n)
{
    char *s = cstr_copy(p, n);
    check_u64(s);
    free(s);
}

/* ---- routes -------------------------------------------------------------------------------- */

/* The routes of API.md: a parameter (suffix not NULL) is one non-empty path
 * segment, percent-decoded, neither '/' nor NUL once decoded, at most
 * GW_PARAM_MAX bytes. */
static const struct route_spec {
    enum gw_route_id id;
    const char *prefix, *suffix, *allow;
} specs[] = {
    { GW_R_HEALTHZ, "/healthz", NULL, "GET" },
    { GW_R_METRICS, "/metrics", NULL, "GET" },
    { GW_R_CLUSTER, "/v1/cluster", NULL, "GET" },
    { GW_R_DIGEST, "/v1/cluster/digest", NULL, "GET" },
    { GW_R_CLUSTER_NODES, "/v1/cluster/nodes", NULL, "POST" },
    { GW_R_CLUSTER_NODE_REMOVE, "/v1/cluster/nodes/", "/remove", "POST" },
    { GW_R_CLUSTER_NODE_DRAIN, "/v1/cluster/nodes/", "/drain", "POST" },
    { GW_R_CLUSTER_TRANSFER, "/v1/cluster/transfer", NULL, "POST" },
    { GW_R_CLUSTER_CHECKPOINT, "/v1/cluster/checkpoint", NULL, "POST" },
    { GW_R_RUNS, "/v1/runs", NULL, "GET, POST" },
    { GW_R_RUN, "/v1/runs/", "", "GET" },
    { GW_R_RUN_EVENTS, "/v1/runs/", "/events", "GET" },
    { GW_R_RUN_CANCEL, "/v1/runs/", "/cancel", "POST" },
    { GW_R_RUN_WS, "/v1/runs/", "/ws", "GET" },
    { GW_R_APPROVALS, "/v1/approvals", NULL, "GET" },
    { GW_R_APPROVAL, "/v1/approvals/", "", "POST" },
    { GW_R_TOOLS, "/v1/tools", NULL, "GET, POST" },
    { GW_R_TOOL, "/v1/tools/", "", "GET" },
    { GW_R_TOOL_DISABLE, "/v1/tools/", "/disable", "POST" },
    { GW_R_TOOL_ENABLE, "/v1/tools/", "/enable", "POST" },
    { GW_R_TENANTS, "/v1/tenants", NULL, "GET, POST" },
    { GW_R_TENANT, "/v1/tenants/", "", "GET, POST" },
    { GW_R_KEYS, "/v1/keys", NULL, "POST" },
    { GW_R_KEY_REVOKE, "/v1/keys/", "/revoke", "POST" },
    { GW_R_WEB_INDEX, "/", NULL, "GET" },
    { GW_R_WEB, "/ui/", "", "GET" },
};

static const char *const methods[] = { "GET", "POST", "DELETE", "HEAD", "PUT", "PATCH", "OPTIONS", "CONNECT", "TRACE" };

static int hexdigit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Percent-decode s[0..n) ('+' a space when plus) into out (cap bytes with
 * the NUL). -1: a bad or short escape, a NUL byte, or no room. */
static long ref_decode(const char *s, size_t n, bool plus, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)s[i];
        if (c == '%') {
            if (n - i < 3 || hexdigit(s[i + 1]) < 0 || hexdigit(s[i + 2]) < 0)
                return -1;
            c = hexdigit(s[i + 1]) * 16 + hexdigit(s[i + 2]);
            i += 2;
        } else if (c == '+' && plus) {
            c = ' ';
        }
        if (c == 0 || o + 1 >= cap)
            return -1;
        out[o++] = (char)c;
    }
    out[o] = '\0';
    return (long)o;
}

static bool method_in(const char *allow, const char *method)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%s", allow);
    for (char *save = NULL, *tok = strtok_r(buf, ", ", &save); tok != NULL; tok = strtok_r(NULL, ", ", &save))
        if (strcmp(tok, method) == 0)
            return true;
    return false;
}

/* The spec matching path (NULL: none) and the raw parameter in it. */
static const struct route_spec *spec_match(const char *path, const char **raw, size_t *raw_len)
{
    size_t plen = strlen(path);
    const struct route_spec *found = NULL;
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
        const struct route_spec *s = &specs[i];
        size_t pre = strlen(s->prefix);
        bool hit;
        if (s->suffix == NULL) {
            hit = strcmp(path, s->prefix) == 0;
        } else {
            size_t suf = strlen(s->suffix);
            hit = plen > pre + suf && memcmp(path, s->prefix, pre) == 0 &&
                  memcmp(path + plen - suf, s->suffix, suf) == 0 && memchr(path + pre, '/', plen - pre - suf) == NULL;
            if (hit) {
                *raw = path + pre;
                *raw_len = plen - pre - suf;
            }
        }
        if (hit) {
            CHECK(found == NULL); /* the patterns do not overlap */
            found = s;
        }
    }
    return found;
}

static void check_route(const char *method, const char *path, bool again)
{
    struct gw_match m;
    int st = gw_route(method, path, &m);
    const char *raw = NULL;
    size_t raw_len = 0;
    const struct route_spec *s = spec_match(path, &raw, &raw_len);
    char param[GW_PARAM_MAX + 1];
    long pl = 0;
    if (s != NULL && s->suffix != NULL) {
        pl = ref_decode(raw, raw_len, false, param, sizeof param);
        if (pl <= 0 || memchr(param, '/', (size_t)pl) != NULL)
            s = NULL; /* a malformed parameter: 404 */
    }
    if (s == NULL) {
        CHECK(st == 404);
        CHECK(m.route == GW_R_NONE && m.allow == NULL);
        return;
    }
    CHECK(st == (method_in(s->allow, method) ? 200 : 405));
    CHECK(m.route == s->id && m.allow != NULL && strcmp(m.allow, s->allow) == 0);
    CHECK(strcmp(gw_route_name(m.route), "none") != 0);
    CHECK(m.param_len <= GW_PARAM_MAX && memchr(m.param, '\0', sizeof m.param) != NULL);
    CHECK(strlen(m.param) == m.param_len);
    if (s->suffix == NULL) {
        CHECK(m.param_len == 0);
        return;
    }
    CHECK(m.param_len == (size_t)pl && memcmp(m.param, param, m.param_len) == 0);
    /* the handlers' 404 quotes the parameter (routes_*.c: "no run %.64s") */
    char msg[512];
    snprintf(msg, sizeof msg, "no run %.64s", m.param);
    check_error_body("not_found", msg);
    if (s->id == GW_R_RUN || s->id == GW_R_RUN_EVENTS || s->id == GW_R_RUN_CANCEL || s->id == GW_R_RUN_WS) {
        /* routes_runs.c reads the parameter as a run id: "run_" + 16
         * lowercase hex digits, not zero; it reads back as itself */
        uint64_t id = 77;
        bool want = m.param_len == 20 && memcmp(m.param, "run_", 4) == 0 && lower_hex(m.param + 4, 16) &&
                    strcmp(m.param, "run_0000000000000000") != 0;
        int rv = tr_run_id_from_text(m.param, m.param_len, &id);
        if (!want) {
            CHECK(rv == TR_EINVAL && id == 77);
        } else {
            char text[TR_RUN_ID_TEXT_LEN];
            CHECK(rv == TR_OK);
            tr_run_id_text(id, text);
            CHECK(strcmp(text, m.param) == 0);
        }
    }
    if (again)
        return;
    /* Every byte of the parameter escaped: the same route and parameter. */
    size_t cap = strlen(s->prefix) + 3 * m.param_len + strlen(s->suffix) + 1;
    char *enc = malloc(cap);
    CHECK(enc != NULL);
    size_t o = (size_t)snprintf(enc, cap, "%s", s->prefix);
    for (size_t i = 0; i < m.param_len; i++)
        o += (size_t)snprintf(enc + o, cap - o, i % 2 ? "%%%02x" : "%%%02X", (unsigned char)m.param[i]);
    snprintf(enc + o, cap - o, "%s", s->suffix);
    struct gw_match m2;
    CHECK(gw_route(method, enc, &m2) == st);
    CHECK(m2.route == m.route && m2.param_len == m.param_len && memcmp(m2.param, m.param, m.param_len) == 0);
    check_route(method, enc, true);
    free(enc);
}

static void fuzz_route(const uint8_t *p, size_t n)
{
    if (n == 0)
        return;
    const char *method = methods[(uint8_t)(p[0] - '0') % (sizeof methods / sizeof methods[0])];
    char *path = cstr_copy(p + 1, n - 1);
    check_route(method, path, false);
    free(path);
}

/* ---- query strings and cursors ------------------------------------------------------------- */

static int ref_query_get(const char *q, const char *name, char *out, size_t cap)
{
    size_t nlen = strlen(name);
    for (const char *seg = q; seg != NULL;) {
        const char *amp = strchr(seg, '&');
        size_t slen = amp != NULL ? (size_t)(amp - seg) : strlen(seg);
        if (slen >= nlen && memcmp(seg, name, nlen) == 0 && (slen == nlen || seg[nlen] == '=')) {
            const char *v = slen == nlen ? seg + slen : seg + nlen + 1;
            size_t vlen = slen == nlen ? 0 : slen - nlen - 1;
            return ref_decode(v, vlen, true, out, cap) < 0 ? -1 : 1;
        }
        seg = amp != NULL ? amp + 1 : NULL;
    }
    return 0;
}

/* A cursor decodes into at most cap bytes and encodes back to itself. */
static void check_cursor(const char *s, size_t cap)
{
    unsigned char *key = malloc(cap > 0 ? cap : 1);
    CHECK(key != NULL);
    size_t len = 99999;
    int rv = gw_cursor_decode(s, key, cap, &len);
    if (rv != TR_OK) {
        CHECK(rv == TR_EINVAL && len == 99999);
    } else {
        CHECK(len >= 1 && len <= cap);
        size_t ecap = 2 + 2 * len + 1;
        char *back = malloc(ecap);
        CHECK(back != NULL);
        CHECK(gw_cursor_encode(key, len, back, ecap) == TR_OK);
        CHECK(strcmp(back, s) == 0);
        CHECK(gw_cursor_encode(key, len, back, ecap - 1) == TR_ETOOBIG);
        free(back);
    }
    free(key);
}

/* What the list handlers do with a query (routes_*.c, ws.c, http_api.c):
 * every value they read, at the sizes they read it with, then parsed. */
static void fuzz_query(const uint8_t *p, size_t n)
{
    static const struct {
        const char *name;
        size_t cap;
        char then; /* u: gw_parse_u64, c: cursor, s: status names, k: API key */
    } reads[] = {
        { "status", 32, 's' }, { "limit", 16, 'u' },  { "limit", 32, 'u' },        { "cursor", GW_CURSOR_MAX, 'c' },
        { "after", 32, 'u' },  { "wait", 32, 'u' },   { "version", 16, 'u' },      { "index", 32, 'u' },
        { "token", GW_PARAM_MAX + 1, 'k' }, /* a WebSocket's stand-in for Authorization */
    };
    char *q = cstr_copy(p, n);
    for (size_t i = 0; i < sizeof reads / sizeof reads[0]; i++) {
        size_t cap = reads[i].cap;
        char *out = malloc(cap), *want = malloc(cap);
        CHECK(out != NULL && want != NULL);
        int rv = gw_query_get(q, reads[i].name, out, cap);
        int ref = ref_query_get(q, reads[i].name, want, cap);
        CHECK(rv == ref);
        if (rv == 1) {
            CHECK(memchr(out, '\0', cap) != NULL && strcmp(out, want) == 0);
            if (reads[i].then == 'u')
                check_u64(out);
            else if (reads[i].then == 's')
                check_all_names(out);
            else if (reads[i].then == 'k') {
                size_t klen = strlen(out);
                char *key = exact_copy((const uint8_t *)out, klen);
                check_api_key(key, klen);
                free(key);
            } else if (reads[i].then == 'c') {
                check_cursor(out, 8);
                check_cursor(out, GW_PARAM_MAX);
                check_cursor(out, TR_IDEM_TENANT_MAX);
            }
        }
        free(out);
        free(want);
    }
    free(q);
}

static void fuzz_cursor(const uint8_t *p, size_t n)
{
    if (n == 0)
        return;
    static const size_t caps[] = { 8, GW_PARAM_MAX, TR_IDEM_TENANT_MAX, 1, 0 };
    size_t cap = p[0] < 5 * 40 ? caps[p[0] % 5] : p[0];
    char *s = cstr_copy(p + 1, n - 1);
    check_cursor(s, cap);
    free(s);
    /* the bytes as a key: encoded, then decoded back */
    size_t len = n - 1;
    size_t ecap = 2 + 2 * len + 1;
    char *enc = malloc(ecap);
    CHECK(enc != NULL);
    int rv = gw_cursor_encode(p + 1, len, enc, ecap);
    if (len == 0) {
        CHECK(rv == TR_ETOOBIG);
    } else {
        CHECK(rv == TR_OK && strlen(enc) == ecap - 1);
        unsigned char *key = malloc(len);
        CHECK(key != NULL);
        size_t got = 0;
        CHECK(gw_cursor_decode(enc, key, len, &got) == TR_OK && got == len && memcmp(key, p + 1, len) == 0);
        CHECK(gw_cursor_decode(enc, key, len - 1, &got) == TR_EINVAL);
        free(key);
    }
    free(enc);
}

/* ---- JSON text fields -------------------------------------------------------------------------- */

static void fuzz_json_text(const uint8_t *p, size_t n)
{
    char *s = exact_copy(p, n);
    struct tr_fb_str fs = { .ptr = s, .len = (uint32_t)n };
    json_t *v = gw_json_text_value(fs);
    CHECK(v != NULL);
    json_t *parsed = json_loadb(s, n, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, NULL);
    if (parsed == NULL)
        CHECK(json_is_string(v)); /* the text itself, bad bytes replaced */
    json_decref(parsed);
    char *out = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
    CHECK(out != NULL); /* always valid JSON to send */
    free(out);
    json_decref(v);
    free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    switch ((enum mode)((((unsigned)data[0] - 1) & 31) % MODE_COUNT)) {
    case M_RUN: fuzz_run(p, n); break;
    case M_TOOL: fuzz_tool(p, n); break;
    case M_DECIDE: fuzz_decide(p, n); break;
    case M_CANCEL: fuzz_cancel(p, n); break;
    case M_TENANT_CREATE: fuzz_tenant(p, n, true); break;
    case M_TENANT_UPDATE: fuzz_tenant(p, n, false); break;
    case M_KEY_REQ: fuzz_key_req(p, n); break;
    case M_IDEM: fuzz_idem(p, n); break;
    case M_TOOL_NAME: fuzz_tool_name(p, n); break;
    case M_TENANT_NAME: fuzz_tenant_name(p, n); break;
    case M_API_KEY: fuzz_api_key(p, n); break;
    case M_NAMES: fuzz_names(p, n); break;
    case M_U64: fuzz_u64(p, n); break;
    case M_ROUTE: fuzz_route(p, n); break;
    case M_QUERY: fuzz_query(p, n); break;
    case M_CURSOR: fuzz_cursor(p, n); break;
    case M_JSON_TEXT: fuzz_json_text(p, n); break;
    case MODE_COUNT: break;
    }
    return 0;
}
