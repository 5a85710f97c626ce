/* Request bodies and the raft commands built from them.
 *
 * Bodies are strict: the body must be a JSON object; a field of the wrong
 * type, out of range, or not part of the API is refused with 400 and a
 * message naming the field ("agent.max_steps: must be an integer from 1 to
 * 10000"). Unknown fields are refused rather than ignored so that a typo
 * ("max_step") cannot silently drop a cap. null counts as absent for optional
 * fields. Duplicate keys are refused (JSON_REJECT_DUPLICATES). */
#include <math.h>
#include <string.h>

#include <sodium.h>

#include "actors/jsonschema.h"
#include "gateway/gw_int.h"

static json_t *parse_object(const char *body, size_t len, struct gw_error *e)
{
    json_error_t jerr;
    if (len == 0)
        return gw_fail(e, 400, "invalid_json", "request body is empty; a JSON object is expected"), NULL;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        gw_fail(e, 400, "invalid_json", "malformed JSON at line %d column %d: %s", jerr.line, jerr.column, jerr.text);
        return NULL;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        gw_fail(e, 400, "invalid_json", "request body must be a JSON object");
        return NULL;
    }
    return root;
}

/* Refuse members of obj not in allowed (NULL-terminated). */
static int only_fields(json_t *obj, const char *const *allowed, const char *where, struct gw_error *e)
{
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v) {
        bool ok = false;
        for (const char *const *a = allowed; *a != NULL && !ok; a++)
            ok = strcmp(*a, key) == 0;
        if (!ok)
            return gw_fail(e, 400, "unknown_field", "unknown field \"%s%s%.64s\"", where, *where ? "." : "", key);
    }
    return 0;
}

static json_t *present(json_t *obj, const char *name)
{
    json_t *v = json_object_get(obj, name);
    return json_is_null(v) ? NULL : v;
}

/* An optional string of at most max bytes; *out NULL when absent. */
static int opt_string(json_t *obj, const char *name, const char *where, size_t max, bool nonempty,
                      const char **out, size_t *len, struct gw_error *e)
{
    json_t *v = present(obj, name);
    *out = NULL;
    if (len != NULL)
        *len = 0;
    if (v == NULL)
        return 0;
    if (!json_is_string(v))
        return gw_fail(e, 400, "invalid_field", "%s%s%s: must be a string", where, *where ? "." : "", name);
    size_t n = json_string_length(v);
    if (n > max)
        return gw_fail(e, 400, "invalid_field", "%s%s%s: longer than %zu bytes", where, *where ? "." : "", name, max);
    if (nonempty && n == 0)
        return gw_fail(e, 400, "invalid_field", "%s%s%s: must not be empty", where, *where ? "." : "", name);
    *out = json_string_value(v);
    if (len != NULL)
        *len = n;
    return 0;
}

static int opt_uint(json_t *obj, const char *name, const char *where, uint64_t lo, uint64_t hi, bool *has,
                    uint64_t *out, struct gw_error *e)
{
    json_t *v = present(obj, name);
    *has = v != NULL;
    if (v == NULL)
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 0 || (uint64_t)json_integer_value(v) < lo ||
        (uint64_t)json_integer_value(v) > hi)
        return gw_fail(e, 400, "invalid_field", "%s%s%s: must be an integer from %llu to %llu", where,
                       *where ? "." : "", name, (unsigned long long)lo, (unsigned long long)hi);
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

static int opt_number(json_t *obj, const char *name, const char *where, double lo, double hi, bool *has,
                      double *out, struct gw_error *e)
{
    json_t *v = present(obj, name);
    *has = v != NULL;
    if (v == NULL)
        return 0;
    double d = json_is_number(v) ? json_number_value(v) : NAN;
    if (!json_is_number(v) || !isfinite(d) || d < lo || d > hi)
        return gw_fail(e, 400, "invalid_field", "%s%s%s: must be a number from %g to %g", where, *where ? "." : "",
                       name, lo, hi);
    *out = d;
    return 0;
}

bool gw_tool_name_ok(const char *s, size_t len)
{
    if (len == 0 || len > GW_TOOL_NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
            return false;
    }
    return true;
}

/* ---- POST /v1/runs ----------------------------------------------------------------- */

static int parse_agent(json_t *a, struct gw_run_req *r, struct gw_error *e)
{
    static const char *const fields[] = { "model", "system", "tools", "max_steps", "max_tokens",
                                          "max_cost_usd", "timeout_s", "temperature", "provider", NULL };
    if (!json_is_object(a))
        return gw_fail(e, 400, "invalid_field", "agent: must be an object");
    if (only_fields(a, fields, "agent", e) != 0)
        return -1;
    r->has_agent = true;
    if (opt_string(a, "model", "agent", GW_MODEL_MAX, true, &r->model, NULL, e) != 0 ||
        opt_string(a, "system", "agent", GW_SYSTEM_MAX, false, &r->system, NULL, e) != 0 ||
        opt_string(a, "provider", "agent", GW_MODEL_MAX, true, &r->provider, NULL, e) != 0)
        return -1;
    json_t *tools = present(a, "tools");
    if (tools != NULL) {
        if (!json_is_array(tools))
            return gw_fail(e, 400, "invalid_field", "agent.tools: must be an array of tool names");
        if (json_array_size(tools) > GW_AGENT_TOOLS_MAX)
            return gw_fail(e, 400, "invalid_field", "agent.tools: more than %d tools", GW_AGENT_TOOLS_MAX);
        size_t i;
        json_t *t;
        json_array_foreach(tools, i, t) {
            if (!json_is_string(t) || !gw_tool_name_ok(json_string_value(t), json_string_length(t)))
                return gw_fail(e, 400, "invalid_field",
                               "agent.tools[%zu]: must be a tool name (1 to %d of A-Z a-z 0-9 _ -)", i,
                               GW_TOOL_NAME_MAX);
            for (size_t k = 0; k < i; k++)
                if (strcmp(r->tools[k], json_string_value(t)) == 0)
                    return gw_fail(e, 400, "invalid_field", "agent.tools[%zu]: \"%s\" is listed twice", i,
                                   json_string_value(t));
            r->tools[r->n_tools++] = json_string_value(t);
        }
    }
    bool has;
    uint64_t u;
    double d;
    if (opt_uint(a, "max_steps", "agent", 1, 10000, &r->has_max_steps, &u, e) != 0)
        return -1;
    if (r->has_max_steps)
        r->max_steps = (uint32_t)u;
    if (opt_uint(a, "max_tokens", "agent", 0, 1000000000000ull, &has, &u, e) != 0)
        return -1;
    r->max_tokens = has ? u : 0;
    if (opt_number(a, "max_cost_usd", "agent", 0, 1e6, &has, &d, e) != 0)
        return -1;
    r->max_cost_usd = has ? d : 0;
    if (opt_uint(a, "timeout_s", "agent", 0, 30 * 86400, &has, &u, e) != 0)
        return -1;
    r->timeout_s = has ? (uint32_t)u : 0;
    if (opt_number(a, "temperature", "agent", 0, 2, &r->has_temperature, &d, e) != 0)
        return -1;
    r->temperature = r->has_temperature ? (float)d : 1.0f;
    return 0;
}

int gw_run_req_parse(const char *body, size_t len, struct gw_run_req *r, struct gw_error *e)
{
    static const char *const fields[] = { "goal", "agent", "metadata", NULL };
    memset(r, 0, sizeof *r);
    r->root = parse_object(body, len, e);
    if (r->root == NULL)
        return -1;
    if (only_fields(r->root, fields, "", e) != 0)
        goto err;
    json_t *goal = json_object_get(r->root, "goal");
    if (goal == NULL || json_is_null(goal)) {
        gw_fail(e, 400, "missing_field", "goal: required");
        goto err;
    }
    if (opt_string(r->root, "goal", "", GW_GOAL_MAX, true, &r->goal, &r->goal_len, e) != 0)
        goto err;
    json_t *agent = present(r->root, "agent");
    if (agent != NULL && parse_agent(agent, r, e) != 0)
        goto err;
    json_t *meta = present(r->root, "metadata");
    if (meta != NULL) {
        if (!json_is_object(meta)) {
            gw_fail(e, 400, "invalid_field", "metadata: must be an object");
            goto err;
        }
        r->metadata = json_dumps(meta, JSON_COMPACT | JSON_SORT_KEYS);
        if (r->metadata == NULL || strlen(r->metadata) > GW_METADATA_MAX) {
            gw_fail(e, 400, "invalid_field", "metadata: larger than %u bytes as JSON", GW_METADATA_MAX);
            goto err;
        }
    }
    /* Same body, same digest, whatever the key order or spacing. */
    char *canon = json_dumps(r->root, JSON_COMPACT | JSON_SORT_KEYS);
    if (canon == NULL) {
        gw_fail(e, 400, "invalid_json", "request body cannot be serialised");
        goto err;
    }
    crypto_generichash(r->digest, sizeof r->digest, (const unsigned char *)canon, strlen(canon), NULL, 0);
    free(canon);
    return 0;
err:
    gw_run_req_free(r);
    return -1;
}

void gw_run_req_free(struct gw_run_req *r)
{
    free(r->metadata); /* jansson's allocator: malloc */
    json_decref(r->root);
    memset(r, 0, sizeof *r);
}

int gw_idem_key_check(const char *key, struct gw_error *e)
{
    size_t n = strlen(key);
    if (n == 0 || n > GW_IDEM_KEY_MAX)
        return gw_fail(e, 400, "invalid_header", "Idempotency-Key: must be 1 to %d bytes", GW_IDEM_KEY_MAX);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)key[i] < 0x21 || (unsigned char)key[i] > 0x7e)
            return gw_fail(e, 400, "invalid_header", "Idempotency-Key: printable ASCII without spaces only");
    return 0;
}

/* ---- POST /v1/tools ---------------------------------------------------------------- */

static char *dup_json(json_t *v)
{
    char *s = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    char *out = tr_strdup(s != NULL ? s : "null");
    free(s);
    return out;
}

int gw_tool_req_parse(const char *body, size_t len, struct gw_tool_req *t, struct gw_error *e)
{
    static const char *const fields[] = { "name", "description", "input_schema", "risk", "kind",
                                          "config", "timeout_ms", "enabled", "version", NULL };
    memset(t, 0, sizeof *t);
    t->risk = troupe_journal_Risk_Read;
    t->kind = troupe_cmd_ToolKind_Http;
    t->timeout_ms = 30000;
    t->enabled = true;
    json_t *root = parse_object(body, len, e);
    if (root == NULL)
        return -1;
    const char *s;
    size_t n;
    if (only_fields(root, fields, "", e) != 0)
        goto err;
    if (present(root, "name") == NULL) {
        gw_fail(e, 400, "missing_field", "name: required");
        goto err;
    }
    if (opt_string(root, "name", "", GW_TOOL_NAME_MAX, true, &s, &n, e) != 0)
        goto err;
    if (!gw_tool_name_ok(s, n)) {
        gw_fail(e, 400, "invalid_field", "name: 1 to %d of A-Z a-z 0-9 _ -", GW_TOOL_NAME_MAX);
        goto err;
    }
    t->name = tr_strdup(s);
    if (opt_string(root, "description", "", GW_TOOL_DESC_MAX, false, &s, NULL, e) != 0)
        goto err;
    t->description = tr_strdup(s != NULL ? s : "");
    if (opt_string(root, "risk", "", 32, true, &s, NULL, e) != 0)
        goto err;
    if (s != NULL && gw_risk_parse(s, &t->risk) != TR_OK) {
        gw_fail(e, 400, "invalid_field", "risk: must be \"read\", \"write\" or \"irreversible\"");
        goto err;
    }
    if (opt_string(root, "kind", "", 32, true, &s, NULL, e) != 0)
        goto err;
    if (s != NULL && gw_kind_parse(s, &t->kind) != TR_OK) {
        gw_fail(e, 400, "invalid_field", "kind: must be \"http\", \"sandbox\", \"mcp\" or \"builtin\"");
        goto err;
    }
    bool has;
    uint64_t u;
    if (opt_uint(root, "timeout_ms", "", 1, GW_TOOL_TIMEOUT_MAX, &has, &u, e) != 0)
        goto err;
    if (has)
        t->timeout_ms = (uint32_t)u;
    /* "version" is the registry's to assign; accepted so that a tool read
     * back from GET can be posted again, and otherwise ignored. */
    if (opt_uint(root, "version", "", 0, UINT32_MAX, &has, &u, e) != 0)
        goto err;
    json_t *en = present(root, "enabled");
    if (en != NULL) {
        if (!json_is_boolean(en)) {
            gw_fail(e, 400, "invalid_field", "enabled: must be a boolean");
            goto err;
        }
        t->enabled = json_is_true(en);
    }

    json_t *config = present(root, "config");
    if (config != NULL && !json_is_object(config)) {
        gw_fail(e, 400, "invalid_field", "config: must be an object");
        goto err;
    }
    if (t->kind == troupe_cmd_ToolKind_Http) {
        json_t *url = config != NULL ? json_object_get(config, "url") : NULL;
        const char *us = json_string_value(url);
        if (us == NULL || (strncmp(us, "http://", 7) != 0 && strncmp(us, "https://", 8) != 0)) {
            gw_fail(e, 400, "invalid_field", "config.url: an http tool needs an http:// or https:// URL");
            goto err;
        }
    }
    t->config = config != NULL ? dup_json(config) : tr_strdup("{}");
    if (strlen(t->config) > GW_TOOL_CONFIG_MAX) {
        gw_fail(e, 400, "invalid_field", "config: larger than %u bytes as JSON", GW_TOOL_CONFIG_MAX);
        goto err;
    }

    json_t *schema = present(root, "input_schema");
    json_t *dflt = NULL;
    if (schema == NULL)
        schema = dflt = json_pack("{s:s}", "type", "object");
    if (!json_is_object(schema) && !json_is_boolean(schema)) {
        gw_fail(e, 400, "invalid_field", "input_schema: must be a JSON Schema (an object)");
        goto err;
    }
    t->input_schema = dup_json(schema);
    if (strlen(t->input_schema) > GW_TOOL_SCHEMA_MAX) {
        json_decref(dflt);
        gw_fail(e, 400, "invalid_field", "input_schema: larger than %u bytes as JSON", GW_TOOL_SCHEMA_MAX);
        goto err;
    }
    struct tr_schema *compiled = NULL;
    struct tr_err serr = { 0 };
    int rv = tr_schema_compile(schema, &compiled, &serr);
    json_decref(dflt);
    tr_schema_free(compiled);
    if (rv != TR_OK) {
        const char *code = rv == TR_ENOTSUP ? "unsupported_schema" : rv == TR_ELIMIT ? "schema_too_large" : "invalid_schema";
        gw_fail(e, 400, code, "input_schema: %s", serr.msg[0] ? serr.msg : tr_strerror(rv));
        goto err;
    }
    json_decref(root);
    return 0;
err:
    json_decref(root);
    gw_tool_req_free(t);
    return -1;
}

void gw_tool_req_free(struct gw_tool_req *t)
{
    tr_free(t->name);
    tr_free(t->description);
    tr_free(t->input_schema);
    tr_free(t->config);
    memset(t, 0, sizeof *t);
}

/* ---- approvals and cancel --------------------------------------------------------------- */

int gw_decide_req_parse(const char *body, size_t len, struct gw_decide_req *d, struct gw_error *e)
{
    static const char *const fields[] = { "decision", "reason", NULL };
    memset(d, 0, sizeof *d);
    json_t *root = parse_object(body, len, e);
    if (root == NULL)
        return -1;
    const char *s;
    if (only_fields(root, fields, "", e) != 0)
        goto err;
    if (present(root, "decision") == NULL) {
        gw_fail(e, 400, "missing_field", "decision: required (\"approve\" or \"deny\")");
        goto err;
    }
    if (opt_string(root, "decision", "", 16, true, &s, NULL, e) != 0)
        goto err;
    if (strcmp(s, "approve") == 0)
        d->decision = troupe_journal_Decision_Approve;
    else if (strcmp(s, "deny") == 0)
        d->decision = troupe_journal_Decision_Deny;
    else {
        gw_fail(e, 400, "invalid_field", "decision: must be \"approve\" or \"deny\"");
        goto err;
    }
    if (opt_string(root, "reason", "", GW_REASON_MAX, false, &s, NULL, e) != 0)
        goto err;
    d->reason = s != NULL ? tr_strdup(s) : NULL;
    json_decref(root);
    return 0;
err:
    json_decref(root);
    return -1;
}

void gw_decide_req_free(struct gw_decide_req *d)
{
    tr_free(d->reason);
    d->reason = NULL;
}

int gw_cancel_req_parse(const char *body, size_t len, char **reason, struct gw_error *e)
{
    static const char *const fields[] = { "reason", NULL };
    *reason = NULL;
    size_t i = 0;
    while (i < len && (body[i] == ' ' || body[i] == '\t' || body[i] == '\r' || body[i] == '\n'))
        i++;
    if (i == len)
        return 0; /* no body */
    json_t *root = parse_object(body, len, e);
    if (root == NULL)
        return -1;
    const char *s;
    if (only_fields(root, fields, "", e) != 0 || opt_string(root, "reason", "", GW_REASON_MAX, false, &s, NULL, e) != 0) {
        json_decref(root);
        return -1;
    }
    *reason = s != NULL ? tr_strdup(s) : NULL;
    json_decref(root);
    return 0;
}

/* ---- commands ------------------------------------------------------------------------- */

static tr_fb_ref opt_str(struct tr_fb_builder *b, const char *s)
{
    return s != NULL ? tr_fb_create_str(b, s) : 0;
}

static void finish(struct tr_fb_builder *b, const struct gw_cmd_head *h, uint8_t type, tr_fb_ref op)
{
    troupe_cmd_Command_start(b);
    troupe_cmd_Command_add_time_us(b, h->time_us);
    troupe_cmd_Command_add_origin_node(b, h->origin_node);
    troupe_cmd_Command_add_op_type(b, type);
    troupe_cmd_Command_add_op(b, op);
    troupe_cmd_Command_finish(b, troupe_cmd_Command_end(b));
}

void gw_build_run_create(struct tr_fb_builder *b, const struct gw_cmd_head *h, const struct gw_run_req *r,
                         const struct gw_run_create_args *a)
{
    char text[TR_RUN_ID_TEXT_LEN];
    tr_fb_builder_reset(b);
    tr_run_id_text(a->run_id, text);
    tr_fb_ref rid = tr_fb_create_str(b, text);
    tr_fb_ref tenant = tr_fb_create_str(b, a->tenant);
    tr_fb_ref idem = opt_str(b, a->idempotency_key);
    tr_fb_ref digest = tr_fb_create_bytes(b, r->digest, sizeof r->digest);
    tr_fb_ref goal = tr_fb_create_string(b, r->goal, r->goal_len);
    tr_fb_ref meta = opt_str(b, r->metadata);
    tr_fb_ref by = opt_str(b, a->created_by);
    tr_fb_ref agent = 0;
    if (r->has_agent) {
        tr_fb_ref model = opt_str(b, r->model), system = opt_str(b, r->system), provider = opt_str(b, r->provider);
        tr_fb_ref tools = 0;
        if (r->n_tools > 0) {
            tr_fb_ref refs[GW_AGENT_TOOLS_MAX];
            for (size_t i = 0; i < r->n_tools; i++)
                refs[i] = tr_fb_create_str(b, r->tools[i]);
            tools = troupe_journal_AgentConfig_create_tools(b, refs, r->n_tools);
        }
        troupe_journal_AgentConfig_start(b);
        troupe_journal_AgentConfig_add_model(b, model);
        troupe_journal_AgentConfig_add_system(b, system);
        troupe_journal_AgentConfig_add_tools(b, tools);
        if (r->has_max_steps)
            troupe_journal_AgentConfig_add_max_steps(b, r->max_steps);
        troupe_journal_AgentConfig_add_max_tokens(b, r->max_tokens);
        troupe_journal_AgentConfig_add_max_cost_usd(b, r->max_cost_usd);
        troupe_journal_AgentConfig_add_timeout_s(b, r->timeout_s);
        troupe_journal_AgentConfig_add_temperature(b, r->temperature);
        troupe_journal_AgentConfig_add_provider(b, provider);
        agent = troupe_journal_AgentConfig_end(b);
    }
    troupe_cmd_RunCreate_start(b);
    troupe_cmd_RunCreate_add_run_id(b, rid);
    troupe_cmd_RunCreate_add_tenant(b, tenant);
    troupe_cmd_RunCreate_add_idempotency_key(b, idem);
    troupe_cmd_RunCreate_add_request_digest(b, digest);
    troupe_cmd_RunCreate_add_goal(b, goal);
    troupe_cmd_RunCreate_add_agent(b, agent);
    troupe_cmd_RunCreate_add_metadata(b, meta);
    troupe_cmd_RunCreate_add_owner_node(b, a->owner_node);
    b->force_defaults = true; /* epoch 1 is the schema default: write it anyway */
    troupe_cmd_RunCreate_add_epoch(b, 1);
    b->force_defaults = false;
    troupe_cmd_RunCreate_add_created_by(b, by);
    finish(b, h, troupe_cmd_Op_RunCreate, troupe_cmd_RunCreate_end(b));
}

void gw_build_run_cancel(struct tr_fb_builder *b, const struct gw_cmd_head *h, uint64_t run_id,
                         const char *reason, const char *requested_by)
{
    char text[TR_RUN_ID_TEXT_LEN];
    tr_fb_builder_reset(b);
    tr_run_id_text(run_id, text);
    tr_fb_ref rid = tr_fb_create_str(b, text);
    tr_fb_ref rs = opt_str(b, reason);
    tr_fb_ref by = opt_str(b, requested_by);
    troupe_cmd_RunCancel_start(b);
    troupe_cmd_RunCancel_add_run_id(b, rid);
    troupe_cmd_RunCancel_add_reason(b, rs);
    troupe_cmd_RunCancel_add_requested_by(b, by);
    finish(b, h, troupe_cmd_Op_RunCancel, troupe_cmd_RunCancel_end(b));
}

void gw_build_approval_decide(struct tr_fb_builder *b, const struct gw_cmd_head *h, const char *approval_id,
                              const char *run_id, int8_t decision, const char *reason, const char *decided_by)
{
    tr_fb_builder_reset(b);
    tr_fb_ref id = tr_fb_create_str(b, approval_id);
    tr_fb_ref rid = opt_str(b, run_id);
    tr_fb_ref rs = opt_str(b, reason);
    tr_fb_ref by = opt_str(b, decided_by);
    troupe_cmd_ApprovalDecide_start(b);
    troupe_cmd_ApprovalDecide_add_approval_id(b, id);
    troupe_cmd_ApprovalDecide_add_run_id(b, rid);
    troupe_cmd_ApprovalDecide_add_decision(b, decision);
    troupe_cmd_ApprovalDecide_add_reason(b, rs);
    troupe_cmd_ApprovalDecide_add_decided_by(b, by);
    finish(b, h, troupe_cmd_Op_ApprovalDecide, troupe_cmd_ApprovalDecide_end(b));
}

void gw_build_tool_register(struct tr_fb_builder *b, const struct gw_cmd_head *h, const struct gw_tool_req *t)
{
    gw_build_tool_register_for(b, h, t, NULL);
}

void gw_build_tool_set_enabled(struct tr_fb_builder *b, const struct gw_cmd_head *h, const char *name,
                               bool enabled)
{
    gw_build_tool_set_enabled_for(b, h, name, enabled, NULL);
}

void gw_build_tool_register_for(struct tr_fb_builder *b, const struct gw_cmd_head *h, const struct gw_tool_req *t,
                                const char *tenant)
{
    tr_fb_builder_reset(b);
    tr_fb_ref name = tr_fb_create_str(b, t->name);
    tr_fb_ref desc = tr_fb_create_str(b, t->description);
    tr_fb_ref schema = tr_fb_create_str(b, t->input_schema);
    tr_fb_ref config = tr_fb_create_str(b, t->config);
    tr_fb_ref owner = opt_str(b, tenant);
    troupe_cmd_Tool_start(b);
    troupe_cmd_Tool_add_name(b, name);
    troupe_cmd_Tool_add_description(b, desc);
    troupe_cmd_Tool_add_input_schema(b, schema);
    troupe_cmd_Tool_add_risk(b, t->risk);
    troupe_cmd_Tool_add_kind(b, t->kind);
    troupe_cmd_Tool_add_config(b, config);
    troupe_cmd_Tool_add_timeout_ms(b, t->timeout_ms);
    troupe_cmd_Tool_add_enabled(b, t->enabled);
    tr_fb_ref tool = troupe_cmd_Tool_end(b);
    troupe_cmd_ToolRegister_start(b);
    troupe_cmd_ToolRegister_add_tool(b, tool);
    if (owner != 0)
        troupe_cmd_ToolRegister_add_tenant(b, owner);
    finish(b, h, troupe_cmd_Op_ToolRegister, troupe_cmd_ToolRegister_end(b));
}

void gw_build_tool_set_enabled_for(struct tr_fb_builder *b, const struct gw_cmd_head *h, const char *name,
                                   bool enabled, const char *tenant)
{
    tr_fb_builder_reset(b);
    tr_fb_ref n = tr_fb_create_str(b, name);
    tr_fb_ref owner = opt_str(b, tenant);
    troupe_cmd_ToolSetEnabled_start(b);
    troupe_cmd_ToolSetEnabled_add_name(b, n);
    troupe_cmd_ToolSetEnabled_add_enabled(b, enabled);
    if (owner != 0)
        troupe_cmd_ToolSetEnabled_add_tenant(b, owner);
    finish(b, h, troupe_cmd_Op_ToolSetEnabled, troupe_cmd_ToolSetEnabled_end(b));
}

/* ---- tenants and keys ------------------------------------------------------------------ */

/* The "limits" object of a tenant body. */
static int parse_limits(json_t *l, struct gw_tenant_req *t, struct gw_error *e)
{
    static const char *const allowed[] = { "max_active_runs", "requests_per_s", "budget_usd_per_day",
                                           "budget_policy", NULL };
    if (!json_is_object(l))
        return gw_fail(e, 400, "invalid_field", "limits: must be an object");
    if (only_fields(l, allowed, "limits", e) != 0)
        return -1;
    uint64_t v;
    if (opt_uint(l, "max_active_runs", "limits", 0, GW_ACTIVE_RUNS_MAX, &t->has_max_active_runs, &v, e) != 0)
        return -1;
    if (t->has_max_active_runs)
        t->max_active_runs = (uint32_t)v;
    if (opt_uint(l, "requests_per_s", "limits", 0, GW_RPS_MAX, &t->has_rps, &v, e) != 0)
        return -1;
    if (t->has_rps)
        t->requests_per_s = (uint32_t)v;
    if (opt_number(l, "budget_usd_per_day", "limits", 0, GW_BUDGET_MAX, &t->has_budget, &t->budget_usd_per_day, e) !=
        0)
        return -1;
    const char *pol;
    if (opt_string(l, "budget_policy", "limits", 16, true, &pol, NULL, e) != 0)
        return -1;
    if (pol != NULL) {
        t->has_policy = true;
        if (strcmp(pol, "fail") == 0)
            t->budget_policy = troupe_cmd_BudgetPolicy_Fail;
        else if (strcmp(pol, "wait") == 0)
            t->budget_policy = troupe_cmd_BudgetPolicy_Wait;
        else
            return gw_fail(e, 400, "invalid_field", "limits.budget_policy: one of \"fail\", \"wait\"");
    }
    return 0;
}

int gw_tenant_req_parse(const char *body, size_t len, bool create, struct gw_tenant_req *t, struct gw_error *e)
{
    static const char *const create_fields[] = { "name", "limits", NULL };
    static const char *const update_fields[] = { "limits", NULL };
    memset(t, 0, sizeof *t);
    json_t *root = parse_object(body, len, e);
    if (root == NULL)
        return -1;
    if (only_fields(root, create ? create_fields : update_fields, "", e) != 0)
        goto bad;
    if (create) {
        const char *name;
        size_t n;
        if (opt_string(root, "name", "", GW_TENANT_NAME_MAX, true, &name, &n, e) != 0)
            goto bad;
        if (name == NULL) {
            gw_fail(e, 400, "missing_field", "name: required");
            goto bad;
        }
        if (!gw_tenant_name_ok(name, n)) {
            gw_fail(e, 400, "invalid_field",
                    "name: 1 to %d of [A-Za-z0-9_.-], starting with a letter or digit; not \"default\", not \"ten_...\"",
                    GW_TENANT_NAME_MAX);
            goto bad;
        }
        t->name = tr_strdup(name);
    }
    json_t *l = present(root, "limits");
    if (l == NULL && !create) {
        gw_fail(e, 400, "missing_field", "limits: required");
        goto bad;
    }
    if (l != NULL && parse_limits(l, t, e) != 0)
        goto bad;
    json_decref(root);
    return 0;
bad:
    json_decref(root);
    gw_tenant_req_free(t);
    return -1;
}

void gw_tenant_req_free(struct gw_tenant_req *t)
{
    tr_free(t->name);
    t->name = NULL;
}

int gw_key_req_parse(const char *body, size_t len, char **tenant, int8_t *role, struct gw_error *e)
{
    static const char *const allowed[] = { "tenant", "role", NULL };
    *tenant = NULL;
    json_t *root = parse_object(body, len, e);
    if (root == NULL)
        return -1;
    const char *t, *r;
    if (only_fields(root, allowed, "", e) != 0 || opt_string(root, "tenant", "", TR_IDEM_TENANT_MAX, true, &t, NULL, e) != 0 ||
        opt_string(root, "role", "", 16, true, &r, NULL, e) != 0)
        goto bad;
    if (t == NULL || r == NULL) {
        gw_fail(e, 400, "missing_field", "%s: required", t == NULL ? "tenant" : "role");
        goto bad;
    }
    if (gw_role_parse(r, role) != TR_OK) {
        gw_fail(e, 400, "invalid_field", "role: one of \"admin\", \"operator\", \"approver\", \"viewer\"");
        goto bad;
    }
    *tenant = tr_strdup(t);
    json_decref(root);
    return 0;
bad:
    json_decref(root);
    return -1;
}

static tr_fb_ref build_limits(struct tr_fb_builder *b, const struct gw_tenant_req *t,
                              const struct troupe_cmd_TenantLimits *cur)
{
    /* The schema's defaults when there is no current value. */
    uint32_t active = cur != NULL ? troupe_cmd_TenantLimits_max_active_runs(cur) : 100;
    uint32_t rps = cur != NULL ? troupe_cmd_TenantLimits_requests_per_s(cur) : 50;
    double budget = cur != NULL ? troupe_cmd_TenantLimits_budget_usd_per_day(cur) : 0;
    int8_t policy = cur != NULL ? troupe_cmd_TenantLimits_budget_policy(cur) : troupe_cmd_BudgetPolicy_Fail;
    troupe_cmd_TenantLimits_start(b);
    troupe_cmd_TenantLimits_add_max_active_runs(b, t->has_max_active_runs ? t->max_active_runs : active);
    troupe_cmd_TenantLimits_add_requests_per_s(b, t->has_rps ? t->requests_per_s : rps);
    troupe_cmd_TenantLimits_add_budget_usd_per_day(b, t->has_budget ? t->budget_usd_per_day : budget);
    troupe_cmd_TenantLimits_add_budget_policy(b, t->has_policy ? t->budget_policy : policy);
    return troupe_cmd_TenantLimits_end(b);
}

void gw_build_tenant_create(struct tr_fb_builder *b, const struct gw_cmd_head *h, const char *tenant_id,
                            const struct gw_tenant_req *t, const char *key_id, const unsigned char key_hash[32])
{
    tr_fb_builder_reset(b);
    tr_fb_ref id = tr_fb_create_str(b, tenant_id);
    tr_fb_ref name = tr_fb_create_str(b, t->name);
    tr_fb_ref kid = tr_fb_create_str(b, key_id);
    tr_fb_ref hash = tr_fb_create_bytes(b, key_hash, 32);
    tr_fb_ref limits = build_limits(b, t, NULL);
    troupe_cmd_TenantCreate_start(b);
    troupe_cmd_TenantCreate_add_tenant_id(b, id);
    troupe_cmd_TenantCreate_add_name(b, name);
    troupe_cmd_TenantCreate_add_limits(b, limits);
    troupe_cmd_TenantCreate_add_key_id(b, kid);
    troupe_cmd_TenantCreate_add_key_hash(b, hash);
    finish(b, h, troupe_cmd_Op_TenantCreate, troupe_cmd_TenantCreate_end(b));
}

void gw_build_tenant_update(struct tr_fb_builder *b, const struct gw_cmd_head *h, const char *tenant_id,
                            const struct gw_tenant_req *t, const struct troupe_cmd_TenantLimits *cur)
{
    tr_fb_builder_reset(b);
    tr_fb_ref id = tr_fb_create_str(b, tenant_id);
    tr_fb_ref limits = build_limits(b, t, cur);
    troupe_cmd_TenantUpdate_start(b);
    troupe_cmd_TenantUpdate_add_tenant_id(b, id);
    troupe_cmd_TenantUpdate_add_limits(b, limits);
    finish(b, h, troupe_cmd_Op_TenantUpdate, troupe_cmd_TenantUpdate_end(b));
}

void gw_build_key_create(struct tr_fb_builder *b, const struct gw_cmd_head *h, const char *tenant_id,
                         const char *key_id, const unsigned char key_hash[32], int8_t role)
{
    tr_fb_builder_reset(b);
    tr_fb_ref t = tr_fb_create_str(b, tenant_id);
    tr_fb_ref k = tr_fb_create_str(b, key_id);
    tr_fb_ref hash = tr_fb_create_bytes(b, key_hash, 32);
    troupe_cmd_KeyCreate_start(b);
    troupe_cmd_KeyCreate_add_tenant_id(b, t);
    troupe_cmd_KeyCreate_add_key_id(b, k);
    troupe_cmd_KeyCreate_add_key_hash(b, hash);
    troupe_cmd_KeyCreate_add_role(b, role);
    finish(b, h, troupe_cmd_Op_KeyCreate, troupe_cmd_KeyCreate_end(b));
}

void gw_build_key_revoke(struct tr_fb_builder *b, const struct gw_cmd_head *h, const char *key_id)
{
    tr_fb_builder_reset(b);
    tr_fb_ref k = tr_fb_create_str(b, key_id);
    troupe_cmd_KeyRevoke_start(b);
    troupe_cmd_KeyRevoke_add_key_id(b, k);
    finish(b, h, troupe_cmd_Op_KeyRevoke, troupe_cmd_KeyRevoke_end(b));
}
