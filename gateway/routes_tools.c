/* /v1/tools: register (a new version on change), list, read, kill switch.
 * Tools are node-wide (the registry is keyed by name); tenants may get their
 * own tools with the full gateway. */
#include <string.h>

#include "gateway/gw_int.h"

static const struct troupe_cmd_Tool *latest(const struct troupe_state_ToolVersions *tv)
{
    uint32_t n = troupe_state_ToolVersions_versions_len(tv);
    return n > 0 ? troupe_state_ToolVersions_versions_at(tv, n - 1) : NULL;
}

static uint32_t latest_version(struct tr_store *s, const char *name)
{
    void *buf;
    const struct troupe_state_ToolVersions *tv;
    uint32_t v = 0;
    if (gw_load_tools(s, name, &buf, &tv) == TR_OK)
        v = troupe_cmd_Tool_version(latest(tv));
    tr_free(buf);
    return v;
}

/* Answer with one version of tool `name` (0: the latest). */
static void answer_tool(struct gw_call *c, int status, const char *name, uint64_t version)
{
    void *buf;
    const struct troupe_state_ToolVersions *tv;
    int rv = gw_load_tools(c->g->store, name, &buf, &tv);
    if (rv == TR_ENOTFOUND) {
        gw_respond_error(c, 404, "not_found", "no tool %.64s", name);
        return;
    }
    if (rv != TR_OK) {
        gw_respond_error(c, 500, "internal", "tool %.64s cannot be read: %s", name, tr_strerror(rv));
        return;
    }
    uint32_t n = troupe_state_ToolVersions_versions_len(tv);
    const struct troupe_cmd_Tool *t = version == 0 ? latest(tv) : NULL;
    for (uint32_t i = 0; t == NULL && i < n; i++)
        if (troupe_cmd_Tool_version(troupe_state_ToolVersions_versions_at(tv, i)) == version)
            t = troupe_state_ToolVersions_versions_at(tv, i);
    if (t == NULL) {
        tr_free(buf);
        gw_respond_error(c, 404, "not_found", "tool %.64s has no version %llu", name, (unsigned long long)version);
        return;
    }
    json_t *j = gw_render_tool(t, n);
    tr_free(buf);
    gw_respond_json(c, status, j);
}

static void register_done(struct gw_call *c, const struct tr_state_reply *r)
{
    switch (r->verdict) {
    case TR_FSM_OK:
    case TR_FSM_EXISTS: {
        /* 201 when this registration made a new version, else 200. */
        uint32_t now = latest_version(c->g->store, c->text);
        answer_tool(c, now > c->version ? 201 : 200, c->text, 0);
        return;
    }
    case TR_FSM_INVALID:
        gw_respond_error(c, 400, "invalid_tool", "the tool registry refused %s", c->text);
        return;
    default:
        gw_respond_error(c, 500, "internal", "registration refused: %s", tr_fsm_verdict_name(r->verdict));
        return;
    }
}

void gw_h_tools_register(struct gw_call *c)
{
    struct gw_error e;
    struct gw_tool_req t;
    if (gw_tool_req_parse(c->req->body, c->req->body_len, &t, &e) != 0) {
        gw_respond_gw_error(c, &e);
        return;
    }
    c->text = tr_strdup(t.name);
    c->version = latest_version(c->g->store, t.name);
    struct gw_cmd_head h = gw_cmd_head(c);
    gw_build_tool_register(&c->g->b, &h, &t);
    gw_tool_req_free(&t);
    gw_propose(c, &c->g->b, register_done);
}

void gw_h_tools_list(struct gw_call *c)
{
    struct tr_store_iter *it;
    struct tr_err err = { 0 };
    if (tr_store_iter_open(c->g->store, NULL, TR_CF_TOOLS, NULL, 0, NULL, 0, &it, &err) != TR_OK) {
        gw_respond_error(c, 500, "internal", "cannot list tools: %s", err.msg);
        return;
    }
    json_t *tools = json_array();
    const void *v;
    size_t vlen;
    uint64_t scanned = 0;
    while (scanned++ < GW_SCAN_MAX && tr_store_iter_next(it, NULL, NULL, &v, &vlen, NULL) > 0) {
        const struct troupe_state_ToolVersions *tv =
            troupe_state_ToolVersions_verify_as_root_opts(v, vlen, "TRT1", &tr_fb_default_limits, NULL);
        if (tv == NULL || troupe_state_ToolVersions_versions_len(tv) == 0)
            continue;
        json_array_append_new(tools, gw_render_tool(latest(tv), troupe_state_ToolVersions_versions_len(tv)));
    }
    tr_store_iter_close(it);
    gw_respond_json(c, 200, json_pack("{s:o}", "tools", tools));
}

static int tool_param(struct gw_call *c)
{
    if (!gw_tool_name_ok(c->m.param, c->m.param_len)) {
        gw_respond_error(c, 404, "not_found", "no tool %.64s", c->m.param);
        return -1;
    }
    return 0;
}

void gw_h_tool_get(struct gw_call *c)
{
    char buf[16];
    uint64_t version = 0;
    if (tool_param(c) != 0)
        return;
    int q = gw_query_get(c->req->query, "version", buf, sizeof buf);
    if (q != 0 && (q < 0 || gw_parse_u64(buf, &version) != TR_OK || version < 1 || version > UINT32_MAX)) {
        gw_respond_error(c, 400, "invalid_query", "version: must be a positive integer");
        return;
    }
    answer_tool(c, 200, c->m.param, version);
}

static void set_enabled_done(struct gw_call *c, const struct tr_state_reply *r)
{
    if (r->verdict == TR_FSM_OK) {
        answer_tool(c, 200, c->m.param, 0);
        return;
    }
    if (r->verdict == TR_FSM_NOT_FOUND) {
        gw_respond_error(c, 404, "not_found", "no tool %.64s", c->m.param);
        return;
    }
    gw_respond_error(c, 500, "internal", "refused: %s", tr_fsm_verdict_name(r->verdict));
}

void gw_h_tool_set_enabled(struct gw_call *c, bool enabled)
{
    if (tool_param(c) != 0)
        return;
    if (latest_version(c->g->store, c->m.param) == 0) {
        gw_respond_error(c, 404, "not_found", "no tool %.64s", c->m.param);
        return;
    }
    struct gw_cmd_head h = gw_cmd_head(c);
    gw_build_tool_set_enabled(&c->g->b, &h, c->m.param, enabled);
    gw_propose(c, &c->g->b, set_enabled_done);
}
