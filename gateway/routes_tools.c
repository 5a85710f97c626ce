/* /v1/tools: register (a new version on change), list, read, kill switch.
 *
 * Registries: one global registry (keyed by name), written only by the
 * cluster admin, read by every tenant; and one per tenant (keyed
 * "<tenant id>/<name>"), written by that tenant's operators and admins,
 * seen by nobody else. A tenant sees its own tools and the global ones; its
 * own tool shadows a global one of the same name (also for its runs:
 * actors/run.c looks up the tenant's registry first). The cluster admin
 * manages the global registry (its runs live in tenant "default", whose
 * registry it does not write). A tenant cannot enable or disable a global
 * tool (403); another tenant's tool is simply not there (404). */
#include <stdio.h>
#include <string.h>

#include "gateway/gw_int.h"

/* The registry key of tool name in c's tenant's registry ("" for the
 * cluster admin: the global registry is the bare name). */
static void own_key(const struct gw_call *c, const char *name, char *out, size_t cap)
{
    if (c->who.cluster_admin)
        snprintf(out, cap, "%s", name);
    else
        snprintf(out, cap, "%s/%s", c->who.tenant, name);
}

/* Where `name` resolves for c: its own registry first, then the global
 * one. The key found goes to out; *global says which. */
static int resolve(struct gw_call *c, const char *name, char *out, size_t cap, bool *global, void **buf,
                   const struct troupe_state_ToolVersions **tv)
{
    own_key(c, name, out, cap);
    *global = c->who.cluster_admin;
    int rv = gw_load_tools(c->g->store, out, buf, tv);
    if (rv == TR_ENOTFOUND && !c->who.cluster_admin) {
        snprintf(out, cap, "%s", name);
        *global = true;
        rv = gw_load_tools(c->g->store, out, buf, tv);
    }
    return rv;
}

#define KEY_CAP (TR_IDEM_TENANT_MAX + 2 + GW_PARAM_MAX)

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

/* Answer with one version of tool `name` as c sees it (0: the latest). */
static void answer_tool(struct gw_call *c, int status, const char *name, uint64_t version)
{
    void *buf;
    const struct troupe_state_ToolVersions *tv;
    char key[KEY_CAP];
    bool global;
    int rv = resolve(c, name, key, sizeof key, &global, &buf, &tv);
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
    struct tr_fb_str owner = troupe_state_ToolVersions_tenant(tv);
    json_object_set_new(j, "tenant", owner.ptr != NULL ? json_stringn(owner.ptr, owner.len) : json_null());
    tr_free(buf);
    gw_respond_json(c, status, j);
}

static void register_done(struct gw_call *c, const struct tr_state_reply *r)
{
    switch (r->verdict) {
    case TR_FSM_OK:
    case TR_FSM_EXISTS: {
        /* 201 when this registration made a new version, else 200. */
        char key[KEY_CAP];
        own_key(c, c->text, key, sizeof key);
        uint32_t now = latest_version(c->g->store, key);
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
    char key[KEY_CAP];
    own_key(c, t.name, key, sizeof key);
    c->version = latest_version(c->g->store, key);
    struct gw_cmd_head h = gw_cmd_head(c);
    gw_build_tool_register_for(&c->g->b, &h, &t, c->who.cluster_admin ? NULL : c->who.tenant);
    gw_tool_req_free(&t);
    gw_propose(c, &c->g->b, register_done);
}

/* Append the latest version of every tool whose key starts with prefix
 * (plen bytes) and holds no further '/', skipping names in `skip`. */
static int list_range(struct gw_call *c, const char *prefix, size_t plen, json_t *tools, json_t *skip)
{
    struct tr_store_iter *it;
    struct tr_err err = { 0 };
    char upper[TR_IDEM_TENANT_MAX + 2];
    size_t ulen = 0;
    if (plen > 0) {
        /* tenant + '0' (the byte after '/'): the end of tenant/... */
        memcpy(upper, prefix, plen);
        upper[plen - 1] = '/' + 1;
        ulen = plen;
    }
    if (tr_store_iter_open(c->g->store, NULL, TR_CF_TOOLS, plen ? prefix : NULL, plen, ulen ? upper : NULL, ulen, &it,
                           &err) != TR_OK) {
        gw_respond_error(c, 500, "internal", "cannot list tools: %s", err.msg);
        return -1;
    }
    const void *k, *v;
    size_t klen, vlen;
    uint64_t scanned = 0;
    while (scanned++ < GW_SCAN_MAX && tr_store_iter_next(it, &k, &klen, &v, &vlen, NULL) > 0) {
        if (klen < plen || memchr((const char *)k + plen, '/', klen - plen) != NULL)
            continue; /* another tenant's (global listing) */
        const struct troupe_state_ToolVersions *tv =
            troupe_state_ToolVersions_verify_as_root_opts(v, vlen, "TRT1", &tr_fb_default_limits, NULL);
        if (tv == NULL || troupe_state_ToolVersions_versions_len(tv) == 0)
            continue;
        struct tr_fb_str name = troupe_state_ToolVersions_name(tv);
        if (skip != NULL && json_object_getn(skip, name.ptr, name.len) != NULL)
            continue;
        json_t *j = gw_render_tool(latest(tv), troupe_state_ToolVersions_versions_len(tv));
        struct tr_fb_str owner = troupe_state_ToolVersions_tenant(tv);
        json_object_set_new(j, "tenant", owner.ptr != NULL ? json_stringn(owner.ptr, owner.len) : json_null());
        json_array_append_new(tools, j);
    }
    tr_store_iter_close(it);
    return 0;
}

void gw_h_tools_list(struct gw_call *c)
{
    json_t *tools = json_array();
    json_t *own = json_object();
    if (!c->who.cluster_admin) {
        char prefix[TR_IDEM_TENANT_MAX + 2];
        int n = snprintf(prefix, sizeof prefix, "%s/", c->who.tenant);
        if (list_range(c, prefix, (size_t)n, tools, NULL) != 0)
            goto out;
        size_t i;
        json_t *t;
        json_array_foreach(tools, i, t)
            json_object_set(own, json_string_value(json_object_get(t, "name")), json_true());
    }
    if (list_range(c, "", 0, tools, own) != 0)
        goto out;
    json_decref(own);
    gw_respond_json(c, 200, json_pack("{s:o}", "tools", tools));
    return;
out:
    json_decref(own);
    json_decref(tools);
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
    char key[KEY_CAP];
    own_key(c, c->m.param, key, sizeof key);
    if (latest_version(c->g->store, key) == 0) {
        if (!c->who.cluster_admin && latest_version(c->g->store, c->m.param) > 0)
            gw_respond_error(c, 403, "forbidden", "%.64s is a global tool: only the cluster admin may %s it",
                             c->m.param, enabled ? "enable" : "disable");
        else
            gw_respond_error(c, 404, "not_found", "no tool %.64s", c->m.param);
        return;
    }
    struct gw_cmd_head h = gw_cmd_head(c);
    gw_build_tool_set_enabled_for(&c->g->b, &h, c->m.param, enabled, c->who.cluster_admin ? NULL : c->who.tenant);
    gw_propose(c, &c->g->b, set_enabled_done);
}
