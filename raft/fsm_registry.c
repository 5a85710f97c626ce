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

/* The registry key of tool `name` of tenant `tenant` (absent: global):
 * "tenant/name" or "name". Returns the length, 0 when it does not fit. */
static size_t tool_key(struct tr_fb_str tenant, struct tr_fb_str name, char *out, size_t cap)
{
    size_t n = tenant.ptr != NULL ? tenant.len + 1 : 0;
    if (n + name.len > cap)
        return 0;
    if (tenant.ptr != NULL) {
        memcpy(out, tenant.ptr, tenant.len);
        out[tenant.len] = '/';
    }
    memcpy(out + n, name.ptr, name.len);
    return n + name.len;
}

static const struct troupe_state_ToolVersions *tools_load(struct tr_fsm *f, const char *key, size_t klen, void **val)
{
    size_t vlen = 0;
    *val = NULL;
    if (fsm_get(f, TR_CF_TOOLS, key, klen, val, &vlen) != TR_OK)
        return NULL;
    struct tr_fb_error ferr;
    const struct troupe_state_ToolVersions *tv =
        troupe_state_ToolVersions_verify_as_root_opts(*val, vlen, "TRT1", &tr_fb_default_limits, &ferr);
    if (tv == NULL) {
        tr_log(TR_LOG_ERROR, "fsm: tool record %.*s does not verify; treated as absent", (int)klen, key);
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
static void tools_store(struct tr_fsm *f, const char *key, size_t klen, struct tr_fb_str name, struct tr_fb_str tenant,
                        const struct troupe_state_ToolVersions *old, int last_enabled, const struct troupe_cmd_Tool *add,
                        uint32_t add_version)
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
    tr_fb_ref tref = copy_str(b, tenant);
    troupe_state_ToolVersions_start(b);
    troupe_state_ToolVersions_add_name(b, nref);
    troupe_state_ToolVersions_add_versions(b, versions);
    troupe_state_ToolVersions_add_tenant(b, tref);
    tr_fb_finish(b, troupe_state_ToolVersions_end(b), "TRT1");
    put_built(f, TR_CF_TOOLS, key, klen);
}

int fsm_tool_register(struct tr_fsm *f, const struct troupe_cmd_ToolRegister *c, struct tr_fsm_result *res)
{
    const struct troupe_cmd_Tool *t = troupe_cmd_ToolRegister_tool(c);
    struct tr_fb_str name = troupe_cmd_Tool_name(t);
    struct tr_fb_str tenant = troupe_cmd_ToolRegister_tenant(c);
    char key[128 + 1 + 128];
    size_t klen;
    if (name.len == 0 || name.len > 128 || memchr(name.ptr, '/', name.len) != NULL ||
        (tenant.ptr != NULL && (tenant.len == 0 || tenant.len > 128)) ||
        (klen = tool_key(tenant, name, key, sizeof key)) == 0)
        return TR_FSM_INVALID;
    void *val;
    const struct troupe_state_ToolVersions *old = tools_load(f, key, klen, &val);
    uint32_t n_old = old != NULL ? troupe_state_ToolVersions_versions_len(old) : 0;
    const struct troupe_cmd_Tool *last = n_old > 0 ? troupe_state_ToolVersions_versions_at(old, n_old - 1) : NULL;
    int verdict = TR_FSM_OK;
    if (last != NULL && tool_same(last, t)) {
        /* Unchanged definition: same version; registering may re-enable it. */
        res->version = troupe_cmd_Tool_version(last);
        if (troupe_cmd_Tool_enabled(last) != troupe_cmd_Tool_enabled(t))
            tools_store(f, key, klen, name, tenant, old, troupe_cmd_Tool_enabled(t), NULL, 0);
        else
            verdict = TR_FSM_EXISTS;
    } else {
        res->version = last != NULL ? troupe_cmd_Tool_version(last) + 1 : 1;
        tools_store(f, key, klen, name, tenant, old, -1, t, res->version);
    }
    tr_free(val);
    if (verdict == TR_FSM_OK)
        fsm_note(f, TR_NOTE_TOOLS_CHANGED, NULL, 0, 0);
    return verdict;
}

int fsm_tool_set_enabled(struct tr_fsm *f, const struct troupe_cmd_ToolSetEnabled *c)
{
    struct tr_fb_str name = troupe_cmd_ToolSetEnabled_name(c);
    struct tr_fb_str tenant = troupe_cmd_ToolSetEnabled_tenant(c);
    char key[128 + 1 + 128];
    size_t klen = name.len > 0 && name.len <= 128 && tenant.len <= 128 ? tool_key(tenant, name, key, sizeof key) : 0;
    if (klen == 0)
        return TR_FSM_NOT_FOUND;
    void *val;
    const struct troupe_state_ToolVersions *old = tools_load(f, key, klen, &val);
    if (old == NULL || troupe_state_ToolVersions_versions_len(old) == 0) {
        tr_free(val);
        return TR_FSM_NOT_FOUND;
    }
    tools_store(f, key, klen, name, tenant, old, troupe_cmd_ToolSetEnabled_enabled(c), NULL, 0);
    tr_free(val);
    fsm_note(f, TR_NOTE_TOOLS_CHANGED, NULL, 0, 0);
    return TR_FSM_OK;
}

/* ---- tenants and keys -------------------------------------------------------------- */

#define DAY_US (86400LL * 1000000LL)

static tr_fb_ref limits_copy(struct tr_fb_builder *b, const struct troupe_cmd_TenantLimits *l)
{
    if (l == NULL)
        return 0;
    troupe_cmd_TenantLimits_start(b);
    troupe_cmd_TenantLimits_add_max_active_runs(b, troupe_cmd_TenantLimits_max_active_runs(l));
    troupe_cmd_TenantLimits_add_requests_per_s(b, troupe_cmd_TenantLimits_requests_per_s(l));
    troupe_cmd_TenantLimits_add_budget_usd_per_day(b, troupe_cmd_TenantLimits_budget_usd_per_day(l));
    troupe_cmd_TenantLimits_add_budget_policy(b, troupe_cmd_TenantLimits_budget_policy(l));
    return troupe_cmd_TenantLimits_end(b);
}

/* A tenant record's spend counters. */
struct spend {
    int64_t day;
    uint64_t micro_usd, prompt, completion, total, calls;
};

static void spend_of(const struct troupe_state_Tenant *t, struct spend *sp)
{
    memset(sp, 0, sizeof *sp);
    if (t == NULL)
        return;
    sp->day = troupe_state_Tenant_spend_day(t);
    sp->micro_usd = troupe_state_Tenant_spend_micro_usd(t);
    sp->prompt = troupe_state_Tenant_spend_prompt_tokens(t);
    sp->completion = troupe_state_Tenant_spend_completion_tokens(t);
    sp->total = troupe_state_Tenant_total_micro_usd(t);
    sp->calls = troupe_state_Tenant_llm_calls(t);
}

static void tenant_store(struct tr_fsm *f, struct tr_fb_str id, struct tr_fb_str name,
                         const struct troupe_cmd_TenantLimits *limits, int64_t created_at, const struct spend *sp)
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
    if (sp != NULL) {
        troupe_state_Tenant_add_spend_day(b, sp->day);
        troupe_state_Tenant_add_spend_micro_usd(b, sp->micro_usd);
        troupe_state_Tenant_add_spend_prompt_tokens(b, sp->prompt);
        troupe_state_Tenant_add_spend_completion_tokens(b, sp->completion);
        troupe_state_Tenant_add_total_micro_usd(b, sp->total);
        troupe_state_Tenant_add_llm_calls(b, sp->calls);
    }
    tr_fb_finish(b, troupe_state_Tenant_end(b), "TRE1");
    put_built(f, TR_CF_TENANTS, id.ptr, id.len);
}

/* The tenant record of id: *val (caller frees) and the verified root, or
 * NULL when absent (or corrupt: logged, treated as absent). */
static const struct troupe_state_Tenant *tenant_load(struct tr_fsm *f, struct tr_fb_str id, void **val)
{
    size_t vlen = 0;
    *val = NULL;
    if (fsm_get(f, TR_CF_TENANTS, id.ptr, id.len, val, &vlen) != TR_OK)
        return NULL;
    const struct troupe_state_Tenant *t =
        troupe_state_Tenant_verify_as_root_opts(*val, vlen, "TRE1", &tr_fb_default_limits, NULL);
    if (t == NULL) {
        tr_log(TR_LOG_ERROR, "fsm: tenant record %.*s does not verify; treated as absent", (int)id.len, id.ptr);
        tr_free(*val);
        *val = NULL;
    }
    return t;
}

/* Is `name` the name of a tenant already? Tenants are few: a scan. */
static bool tenant_name_taken(struct tr_fsm *f, struct tr_fb_str name)
{
    struct tr_store_iter *it;
    struct tr_err err = { 0 };
    if (tr_store_iter_open(f->store, NULL, TR_CF_TENANTS, NULL, 0, NULL, 0, &it, &err) != TR_OK) {
        f->on_fatal(f->ud, err.msg);
        return true;
    }
    bool taken = false;
    const void *v;
    size_t vlen;
    int rv;
    while (!taken && (rv = tr_store_iter_next(it, NULL, NULL, &v, &vlen, &err)) > 0) {
        const struct troupe_state_Tenant *t =
            troupe_state_Tenant_verify_as_root_opts(v, vlen, "TRE1", &tr_fb_default_limits, NULL);
        taken = t != NULL && str_eq(troupe_state_Tenant_name(t), name);
    }
    tr_store_iter_close(it);
    if (rv < 0) {
        f->on_fatal(f->ud, err.msg);
        return true;
    }
    return taken;
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

/* A new tenant; EXISTS when the id or the name is taken (names are unique
 * so that people can name tenants). With key_id, its first admin key. */
int fsm_tenant_create(struct tr_fsm *f, const struct troupe_cmd_TenantCreate *c)
{
    struct tr_fb_str id = troupe_cmd_TenantCreate_tenant_id(c);
    struct tr_fb_str name = troupe_cmd_TenantCreate_name(c);
    struct tr_fb_str key_id = troupe_cmd_TenantCreate_key_id(c);
    if (!id_ok(id) || !id_ok(name) || (key_id.ptr != NULL && !id_ok(key_id)) || memchr(id.ptr, '/', id.len) != NULL)
        return TR_FSM_INVALID;
    void *val = NULL;
    size_t vlen;
    if (fsm_get(f, TR_CF_TENANTS, id.ptr, id.len, &val, &vlen) == TR_OK) {
        tr_free(val);
        return TR_FSM_EXISTS;
    }
    if (tenant_name_taken(f, name))
        return TR_FSM_EXISTS;
    if (key_id.ptr != NULL && key_exists(f, key_id, &val, &vlen)) {
        tr_free(val);
        return TR_FSM_EXISTS;
    }
    tenant_store(f, id, name, troupe_cmd_TenantCreate_limits(c), f->now_us, NULL);
    if (key_id.ptr != NULL)
        key_store(f, key_id, id, troupe_cmd_KeyRole_Admin, troupe_cmd_TenantCreate_key_hash(c), f->now_us, false);
    return TR_FSM_OK;
}

static bool is_default(struct tr_fb_str id)
{
    return id.len == 7 && memcmp(id.ptr, "default", 7) == 0;
}

/* New limits, the spend kept. The "default" tenant gets its record here if
 * it has none yet. */
int fsm_tenant_update(struct tr_fsm *f, const struct troupe_cmd_TenantUpdate *c)
{
    struct tr_fb_str id = troupe_cmd_TenantUpdate_tenant_id(c);
    if (!id_ok(id))
        return TR_FSM_NOT_FOUND;
    void *val;
    const struct troupe_state_Tenant *t = tenant_load(f, id, &val);
    if (t == NULL && !is_default(id))
        return TR_FSM_NOT_FOUND;
    struct spend sp;
    spend_of(t, &sp);
    /* tenant_store resets f->b, but t lives in val, not in f->b. */
    tenant_store(f, id, t != NULL ? troupe_state_Tenant_name(t) : id, troupe_cmd_TenantUpdate_limits(c),
                 t != NULL ? troupe_state_Tenant_created_at_us(t) : f->now_us, &sp);
    tr_free(val);
    return TR_FSM_OK;
}

/* ---- spend ------------------------------------------------------------------------------ */

struct tenant_usage {
    const char *tenant;          /* points into a run slot of this entry */
    uint64_t micro_usd, prompt, completion, calls;
};

static void usage_add(struct tr_fsm *f, const struct tenant_usage *u)
{
    struct tr_fb_str id = { .ptr = u->tenant, .len = strlen(u->tenant) };
    void *val;
    const struct troupe_state_Tenant *t = tenant_load(f, id, &val);
    struct spend sp;
    spend_of(t, &sp);
    int64_t day = f->now_us >= 0 ? f->now_us / DAY_US : -((-f->now_us + DAY_US - 1) / DAY_US);
    if (sp.day != day) {
        sp.day = day;
        sp.micro_usd = sp.prompt = sp.completion = 0;
    }
    sp.micro_usd += u->micro_usd;
    sp.prompt += u->prompt;
    sp.completion += u->completion;
    sp.total += u->micro_usd;
    sp.calls += u->calls;
    tenant_store(f, id, t != NULL ? troupe_state_Tenant_name(t) : id, t != NULL ? troupe_state_Tenant_limits(t) : NULL,
                 t != NULL ? troupe_state_Tenant_created_at_us(t) : f->now_us, &sp);
    tr_free(val);
}

void fsm_tenants_account(struct tr_fsm *f, const struct troupe_cmd_AppendBatch *c, const struct tr_fsm_result *res)
{
    struct tenant_usage one[8], *u = one;
    uint32_t n = 0, cap = 8;
    for (uint32_t i = 0; i < res->n_appends; i++) {
        if (res->appends[i].verdict != TR_FSM_OK)
            continue;
        const struct troupe_cmd_Append *a = troupe_cmd_AppendBatch_appends_at(c, i);
        /* Accepted appends were verified by append_one. */
        const struct troupe_journal_Event *ev = troupe_journal_Event_as_root(troupe_cmd_Append_event(a).data);
        const struct troupe_journal_LlmCompleted *lc = troupe_journal_Event_data_as_LlmCompleted(ev);
        if (lc == NULL)
            continue;
        uint64_t key;
        struct tr_fb_str rid = troupe_cmd_Append_run_id(a);
        if (tr_run_id_from_text(rid.ptr, rid.len, &key) != TR_OK)
            continue;
        struct run_slot *s = fsm_run_get(f, key);
        if (s == NULL || s->rec.tenant == NULL || s->rec.tenant[0] == '\0')
            continue;
        const struct troupe_journal_Usage *us = troupe_journal_LlmCompleted_usage(lc);
        uint32_t k = 0;
        while (k < n && strcmp(u[k].tenant, s->rec.tenant) != 0)
            k++;
        if (k == n) {
            if (n == cap) {
                struct tenant_usage *bigger = tr_malloc(2 * cap * sizeof *bigger);
                memcpy(bigger, u, n * sizeof *u);
                if (u != one)
                    tr_free(u);
                u = bigger;
                cap *= 2;
            }
            memset(&u[n], 0, sizeof u[n]);
            u[n++].tenant = s->rec.tenant;
        }
        if (us != NULL) {
            u[k].micro_usd += troupe_journal_Usage_cost_micro_usd(us);
            u[k].prompt += troupe_journal_Usage_prompt_tokens(us);
            u[k].completion += troupe_journal_Usage_completion_tokens(us);
        }
        u[k].calls++;
    }
    for (uint32_t k = 0; k < n; k++)
        usage_add(f, &u[k]);
    if (u != one)
        tr_free(u);
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
