/* FSM handlers for the registries: tools (versioned, with a kill switch),
 * tenants and API keys. The node table is in fsm_nodes.c. */
#include <string.h>

#include "raft/fsm_int.h"

static tr_fb_ref copy_str(struct tr_fb_builder *b, struct tr_fb_str s)
{
    return s.ptr != NULL ? tr_fb_create_string(b, s.ptr, s.len) : 0;
}

static bool str_eq(struct tr_fb_str a, struct tr_fb_str b)
{
    if ((a.ptr == NULL) != (b.ptr == NULL))
        return false;
    return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

static void put_built(struct tr_fsm *f, enum tr_cf cf, const void *key, size_t klen)
{
    size_t len;
    const uint8_t *data = tr_fb_builder_data(&f->b, &len);
    fsm_put(f, cf, key, klen, data, len);
}

/* ---- tools ------------------------------------------------------------------------ */

static const struct troupe_state_ToolVersions *tools_load(struct tr_fsm *f, struct tr_fb_str name, void **val)
{
    size_t vlen = 0;
    *val = NULL;
    if (fsm_get(f, TR_CF_TOOLS, name.ptr, name.len, val, &vlen) != TR_OK)
        return NULL;
    struct tr_fb_error ferr;
    const struct troupe_state_ToolVersions *tv =
        troupe_state_ToolVersions_verify_as_root_opts(*val, vlen, "TRT1", &tr_fb_default_limits, &ferr);
    if (tv == NULL) {
        tr_log(TR_LOG_ERROR, "fsm: tool record %.*s does not verify; treated as absent", (int)name.len, name.ptr);
        tr_free(*val);
        *val = NULL;
    }
    return tv;
}

/* Copy a Tool table into b, with its version and enabled flag overridden. */
static tr_fb_ref tool_copy(struct tr_fb_builder *b, const struct troupe_cmd_Tool *t, uint32_t version, bool enabled)
{
    tr_fb_ref name = copy_str(b, troupe_cmd_Tool_name(t));
    tr_fb_ref desc = copy_str(b, troupe_cmd_Tool_description(t));
    tr_fb_ref schema = copy_str(b, troupe_cmd_Tool_input_schema(t));
    tr_fb_ref config = copy_str(b, troupe_cmd_Tool_config(t));
    troupe_cmd_Tool_start(b);
    troupe_cmd_Tool_add_name(b, name);
    troupe_cmd_Tool_add_version(b, version);
    troupe_cmd_Tool_add_description(b, desc);
    troupe_cmd_Tool_add_input_schema(b, schema);
    troupe_cmd_Tool_add_risk(b, troupe_cmd_Tool_risk(t));
    troupe_cmd_Tool_add_kind(b, troupe_cmd_Tool_kind(t));
    troupe_cmd_Tool_add_config(b, config);
    troupe_cmd_Tool_add_timeout_ms(b, troupe_cmd_Tool_timeout_ms(t));
    troupe_cmd_Tool_add_enabled(b, enabled);
    return troupe_cmd_Tool_end(b);
}

/* Same definition (what a new version would change)? */
static bool tool_same(const struct troupe_cmd_Tool *a, const struct troupe_cmd_Tool *b)
{
    return str_eq(troupe_cmd_Tool_description(a), troupe_cmd_Tool_description(b)) &&
           str_eq(troupe_cmd_Tool_input_schema(a), troupe_cmd_Tool_input_schema(b)) &&
           str_eq(troupe_cmd_Tool_config(a), troupe_cmd_Tool_config(b)) &&
           troupe_cmd_Tool_risk(a) == troupe_cmd_Tool_risk(b) && troupe_cmd_Tool_kind(a) == troupe_cmd_Tool_kind(b) &&
           troupe_cmd_Tool_timeout_ms(a) == troupe_cmd_Tool_timeout_ms(b);
}

/* Write ToolVersions for `name`: the old versions (with the last one's
 * enabled flag possibly replaced) plus an optional new one. */
static void tools_store(struct tr_fsm *f, struct tr_fb_str name, const struct troupe_state_ToolVersions *old,
                        int last_enabled, const struct troupe_cmd_Tool *add, uint32_t add_version)
{
    struct tr_fb_builder *b = &f->b;
    uint32_t n_old = old != NULL ? troupe_state_ToolVersions_versions_len(old) : 0;
    uint32_t n = n_old + (add != NULL ? 1 : 0);
    tr_fb_builder_reset(b);
    tr_fb_ref *refs = tr_malloc((n ? n : 1) * sizeof *refs);
    for (uint32_t i = 0; i < n_old; i++) {
        const struct troupe_cmd_Tool *t = troupe_state_ToolVersions_versions_at(old, i);
        bool enabled = troupe_cmd_Tool_enabled(t);
        if (i == n_old - 1 && last_enabled >= 0)
            enabled = last_enabled != 0;
        refs[i] = tool_copy(b, t, troupe_cmd_Tool_version(t), enabled);
    }
    if (add != NULL)
        refs[n_old] = tool_copy(b, add, add_version, troupe_cmd_Tool_enabled(add));
    tr_fb_ref versions = troupe_state_ToolVersions_create_versions(b, refs, n);
    tr_free(refs);
    tr_fb_ref nref = copy_str(b, name);
    troupe_state_ToolVersions_start(b);
    troupe_state_ToolVersions_add_name(b, nref);
    troupe_state_ToolVersions_add_versions(b, versions);
    tr_fb_finish(b, troupe_state_ToolVersions_end(b), "TRT1");
    put_built(f, TR_CF_TOOLS, name.ptr, name.len);
}

int fsm_tool_register(struct tr_fsm *f, const struct troupe_cmd_ToolRegister *c, struct tr_fsm_result *res)
{
    const struct troupe_cmd_Tool *t = troupe_cmd_ToolRegister_tool(c);
    struct tr_fb_str name = troupe_cmd_Tool_name(t);
    if (name.len == 0 || name.len > 128)
        return TR_FSM_INVALID;
    void *val;
    const struct troupe_state_ToolVersions *old = tools_load(f, name, &val);
    uint32_t n_old = old != NULL ? troupe_state_ToolVersions_versions_len(old) : 0;
    const struct troupe_cmd_Tool *last = n_old > 0 ? troupe_state_ToolVersions_versions_at(old, n_old - 1) : NULL;
    int verdict = TR_FSM_OK;
    if (last != NULL && tool_same(last, t)) {
        /* Unchanged definition: same version; registering may re-enable it. */
        res->version = troupe_cmd_Tool_version(last);
        if (troupe_cmd_Tool_enabled(last) != troupe_cmd_Tool_enabled(t))
            tools_store(f, name, old, troupe_cmd_Tool_enabled(t), NULL, 0);
        else
            verdict = TR_FSM_EXISTS;
    } else {
        res->version = last != NULL ? troupe_cmd_Tool_version(last) + 1 : 1;
        tools_store(f, name, old, -1, t, res->version);
    }
    tr_free(val);
    if (verdict == TR_FSM_OK)
        fsm_note(f, TR_NOTE_TOOLS_CHANGED, NULL, 0, 0);
    return verdict;
}

int fsm_tool_set_enabled(struct tr_fsm *f, const struct troupe_cmd_ToolSetEnabled *c)
{
    struct tr_fb_str name = troupe_cmd_ToolSetEnabled_name(c);
    void *val;
    const struct troupe_state_ToolVersions *old = tools_load(f, name, &val);
    if (old == NULL || troupe_state_ToolVersions_versions_len(old) == 0) {
        tr_free(val);
        return TR_FSM_NOT_FOUND;
    }
    tools_store(f, name, old, troupe_cmd_ToolSetEnabled_enabled(c), NULL, 0);
    tr_free(val);
    fsm_note(f, TR_NOTE_TOOLS_CHANGED, NULL, 0, 0);
    return TR_FSM_OK;
}

/* ---- tenants and keys -------------------------------------------------------------- */

static tr_fb_ref limits_copy(struct tr_fb_builder *b, const struct troupe_cmd_TenantLimits *l)
{
    if (l == NULL)
        return 0;
    troupe_cmd_TenantLimits_start(b);
    troupe_cmd_TenantLimits_add_max_active_runs(b, troupe_cmd_TenantLimits_max_active_runs(l));
    troupe_cmd_TenantLimits_add_requests_per_s(b, troupe_cmd_TenantLimits_requests_per_s(l));
    troupe_cmd_TenantLimits_add_budget_usd_per_day(b, troupe_cmd_TenantLimits_budget_usd_per_day(l));
    return troupe_cmd_TenantLimits_end(b);
}

static void tenant_store(struct tr_fsm *f, struct tr_fb_str id, struct tr_fb_str name,
                         const struct troupe_cmd_TenantLimits *limits, int64_t created_at)
{
    struct tr_fb_builder *b = &f->b;
    tr_fb_builder_reset(b);
    tr_fb_ref idr = copy_str(b, id);
    tr_fb_ref nr = copy_str(b, name);
    tr_fb_ref lr = limits_copy(b, limits);
    troupe_state_Tenant_start(b);
    troupe_state_Tenant_add_tenant_id(b, idr);
    troupe_state_Tenant_add_name(b, nr);
    troupe_state_Tenant_add_limits(b, lr);
    troupe_state_Tenant_add_created_at_us(b, created_at);
    tr_fb_finish(b, troupe_state_Tenant_end(b), "TRE1");
    put_built(f, TR_CF_TENANTS, id.ptr, id.len);
}

static void key_store(struct tr_fsm *f, struct tr_fb_str key_id, struct tr_fb_str tenant, int8_t role,
                      struct tr_fb_vec hash, int64_t created_at, bool revoked)
{
    struct tr_fb_builder *b = &f->b;
    tr_fb_builder_reset(b);
    tr_fb_ref kr = copy_str(b, key_id);
    tr_fb_ref tr = copy_str(b, tenant);
    tr_fb_ref hr = hash.data != NULL ? tr_fb_create_bytes(b, hash.data, hash.len) : 0;
    troupe_state_Key_start(b);
    troupe_state_Key_add_key_id(b, kr);
    troupe_state_Key_add_tenant_id(b, tr);
    troupe_state_Key_add_role(b, role);
    troupe_state_Key_add_key_hash(b, hr);
    troupe_state_Key_add_created_at_us(b, created_at);
    troupe_state_Key_add_revoked(b, revoked);
    tr_fb_finish(b, troupe_state_Key_end(b), "TRK1");
    char k[8 + 256];
    size_t klen = strlen(FSM_KEY_PREFIX);
    memcpy(k, FSM_KEY_PREFIX, klen);
    memcpy(k + klen, key_id.ptr, key_id.len);
    put_built(f, TR_CF_CREDENTIALS, k, klen + key_id.len);
}

static int key_exists(struct tr_fsm *f, struct tr_fb_str key_id, void **val, size_t *vlen)
{
    char k[8 + 256];
    size_t klen = strlen(FSM_KEY_PREFIX);
    memcpy(k, FSM_KEY_PREFIX, klen);
    memcpy(k + klen, key_id.ptr, key_id.len);
    return fsm_get(f, TR_CF_CREDENTIALS, k, klen + key_id.len, val, vlen) == TR_OK;
}

static bool id_ok(struct tr_fb_str s)
{
    return s.ptr != NULL && s.len > 0 && s.len <= 128;
}

int fsm_tenant_create(struct tr_fsm *f, const struct troupe_cmd_TenantCreate *c)
{
    struct tr_fb_str id = troupe_cmd_TenantCreate_tenant_id(c);
    struct tr_fb_str key_id = troupe_cmd_TenantCreate_key_id(c);
    if (!id_ok(id) || (key_id.ptr != NULL && !id_ok(key_id)))
        return TR_FSM_INVALID;
    void *val = NULL;
    size_t vlen;
    if (fsm_get(f, TR_CF_TENANTS, id.ptr, id.len, &val, &vlen) == TR_OK) {
        tr_free(val);
        return TR_FSM_EXISTS;
    }
    tenant_store(f, id, troupe_cmd_TenantCreate_name(c), troupe_cmd_TenantCreate_limits(c), f->now_us);
    if (key_id.ptr != NULL)
        key_store(f, key_id, id, troupe_cmd_KeyRole_Admin, troupe_cmd_TenantCreate_key_hash(c), f->now_us, false);
    return TR_FSM_OK;
}

int fsm_tenant_update(struct tr_fsm *f, const struct troupe_cmd_TenantUpdate *c)
{
    struct tr_fb_str id = troupe_cmd_TenantUpdate_tenant_id(c);
    void *val = NULL;
    size_t vlen;
    if (!id_ok(id) || fsm_get(f, TR_CF_TENANTS, id.ptr, id.len, &val, &vlen) != TR_OK)
        return TR_FSM_NOT_FOUND;
    struct tr_fb_error ferr;
    const struct troupe_state_Tenant *t =
        troupe_state_Tenant_verify_as_root_opts(val, vlen, "TRE1", &tr_fb_default_limits, &ferr);
    int verdict = TR_FSM_INVALID;
    if (t != NULL) {
        /* tenant_store resets f->b, but t lives in val, not in f->b. */
        tenant_store(f, id, troupe_state_Tenant_name(t), troupe_cmd_TenantUpdate_limits(c),
                     troupe_state_Tenant_created_at_us(t));
        verdict = TR_FSM_OK;
    }
    tr_free(val);
    return verdict;
}

int fsm_key_create(struct tr_fsm *f, const struct troupe_cmd_KeyCreate *c)
{
    struct tr_fb_str key_id = troupe_cmd_KeyCreate_key_id(c);
    struct tr_fb_str tenant = troupe_cmd_KeyCreate_tenant_id(c);
    if (!id_ok(key_id) || !id_ok(tenant))
        return TR_FSM_INVALID;
    void *val = NULL;
    size_t vlen;
    if (key_exists(f, key_id, &val, &vlen)) {
        tr_free(val);
        return TR_FSM_EXISTS;
    }
    if (fsm_get(f, TR_CF_TENANTS, tenant.ptr, tenant.len, &val, &vlen) != TR_OK)
        return TR_FSM_NOT_FOUND;
    tr_free(val);
    key_store(f, key_id, tenant, troupe_cmd_KeyCreate_role(c), troupe_cmd_KeyCreate_key_hash(c), f->now_us, false);
    return TR_FSM_OK;
}

int fsm_key_revoke(struct tr_fsm *f, const struct troupe_cmd_KeyRevoke *c)
{
    struct tr_fb_str key_id = troupe_cmd_KeyRevoke_key_id(c);
    void *val = NULL;
    size_t vlen;
    if (!id_ok(key_id) || !key_exists(f, key_id, &val, &vlen))
        return TR_FSM_NOT_FOUND;
    struct tr_fb_error ferr;
    const struct troupe_state_Key *k = troupe_state_Key_verify_as_root_opts(val, vlen, "TRK1", &tr_fb_default_limits, &ferr);
    int verdict = TR_FSM_INVALID;
    if (k != NULL) {
        key_store(f, key_id, troupe_state_Key_tenant_id(k), troupe_state_Key_role(k), troupe_state_Key_key_hash(k),
                  troupe_state_Key_created_at_us(k), true);
        verdict = TR_FSM_OK;
    }
    tr_free(val);
    return verdict;
}
