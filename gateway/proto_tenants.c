/* The client protocol's tenant operations (protocol.fbs CreateTenant,
 * ListTenants, UpdateTenant, CreateKey, RevokeKey) as the HTTP requests of
 * routes_tenants.c, and their results (TenantInfo, TenantPage, KeyCreated,
 * KeyInfo) from the answer and the records it names. Authentication, roles
 * and validation are the HTTP API's: nothing is decided here.
 *
 * Mapping: CreateTenant -> POST /v1/tenants (every limit is sent: a
 * FlatBuffers reader cannot tell an absent field from its default);
 * ListTenants -> GET /v1/tenants?limit&cursor; UpdateTenant -> POST
 * /v1/tenants/{tenant} with the fields that are not -1; CreateKey -> POST
 * /v1/keys; RevokeKey -> POST /v1/keys/{key_id}/revoke. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "gateway/gw_int.h"
#include "schemas/protocol_generated.h"

/* "/v1/<a><s percent-encoded><b>" (caller frees). */
static char *path_of(const char *a, struct tr_fb_str p, const char *b)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = strlen(a) + 3 * p.len + strlen(b) + 8;
    char *out = tr_malloc(n), *o = out;
    o += snprintf(o, n, "/v1/%s", a);
    for (size_t i = 0; i < p.len; i++) {
        unsigned char ch = (unsigned char)p.ptr[i];
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' ||
            ch == '_' || ch == '.' || ch == '~') {
            *o++ = (char)ch;
        } else {
            *o++ = '%';
            *o++ = hex[ch >> 4];
            *o++ = hex[ch & 15];
        }
    }
    snprintf(o, n - (size_t)(o - out), "%s", b);
    return out;
}

static char *dump(json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(17));
    json_decref(j);
    char *out = tr_strdup(s != NULL ? s : "{}");
    free(s);
    return out;
}

static json_t *limits_json(const struct troupe_cmd_TenantLimits *l)
{
    /* An absent table reads as every default. */
    int8_t pol = l != NULL ? troupe_cmd_TenantLimits_budget_policy(l) : troupe_cmd_BudgetPolicy_Fail;
    return json_pack("{s:I, s:I, s:f, s:s}", "max_active_runs",
                     (json_int_t)(l != NULL ? troupe_cmd_TenantLimits_max_active_runs(l) : 100), "requests_per_s",
                     (json_int_t)(l != NULL ? troupe_cmd_TenantLimits_requests_per_s(l) : 50), "budget_usd_per_day",
                     l != NULL ? troupe_cmd_TenantLimits_budget_usd_per_day(l) : 0.0, "budget_policy",
                     pol == troupe_cmd_BudgetPolicy_Wait ? "wait" : "fail");
}

int gw_proto_tenant_request(uint8_t op, const void *request, const char **method, char **path, char **query,
                            char **body, const char **why)
{
    const struct troupe_proto_Request *rq = request;
    switch (op) {
    case troupe_proto_Op_CreateTenant: {
        const struct troupe_proto_CreateTenant *o = troupe_proto_Request_op_as_CreateTenant(rq);
        struct tr_fb_str name = troupe_proto_CreateTenant_name(o);
        json_t *j = json_object();
        json_t *n = json_stringn(name.ptr, name.len);
        if (n == NULL) {
            json_decref(j);
            *why = "name: not UTF-8";
            return -1;
        }
        json_object_set_new(j, "name", n);
        json_object_set_new(j, "limits", limits_json(troupe_proto_CreateTenant_limits(o)));
        *method = "POST";
        *path = tr_strdup("/v1/tenants");
        *body = dump(j);
        return 0;
    }
    case troupe_proto_Op_ListTenants: {
        const struct troupe_proto_ListTenants *o = troupe_proto_Request_op_as_ListTenants(rq);
        struct tr_fb_str cur = troupe_proto_ListTenants_cursor(o);
        char *c = cur.ptr != NULL ? path_of("", cur, "") : NULL; /* "/v1/" + encoded */
        size_t n = 64 + (c != NULL ? strlen(c) : 0);
        *query = tr_malloc(n);
        snprintf(*query, n, "limit=%u%s%s", troupe_proto_ListTenants_limit(o), c != NULL ? "&cursor=" : "",
                 c != NULL ? c + 4 : "");
        tr_free(c);
        *method = "GET";
        *path = tr_strdup("/v1/tenants");
        return 0;
    }
    case troupe_proto_Op_UpdateTenant: {
        const struct troupe_proto_UpdateTenant *o = troupe_proto_Request_op_as_UpdateTenant(rq);
        json_t *l = json_object();
        int64_t active = troupe_proto_UpdateTenant_max_active_runs(o);
        int64_t rps = troupe_proto_UpdateTenant_requests_per_s(o);
        double budget = troupe_proto_UpdateTenant_budget_usd_per_day(o);
        struct tr_fb_str pol = troupe_proto_UpdateTenant_budget_policy(o);
        if (active != -1)
            json_object_set_new(l, "max_active_runs", json_integer(active));
        if (rps != -1)
            json_object_set_new(l, "requests_per_s", json_integer(rps));
        if (budget != -1)
            json_object_set_new(l, "budget_usd_per_day", json_real(budget));
        if (pol.ptr != NULL) {
            json_t *p = json_stringn(pol.ptr, pol.len);
            if (p == NULL) {
                json_decref(l);
                *why = "budget_policy: not UTF-8";
                return -1;
            }
            json_object_set_new(l, "budget_policy", p);
        }
        *method = "POST";
        *path = path_of("tenants/", troupe_proto_UpdateTenant_tenant(o), "");
        *body = dump(json_pack("{s:o}", "limits", l));
        return 0;
    }
    case troupe_proto_Op_CreateKey: {
        const struct troupe_proto_CreateKey *o = troupe_proto_Request_op_as_CreateKey(rq);
        struct tr_fb_str t = troupe_proto_CreateKey_tenant(o);
        json_t *tj = json_stringn(t.ptr, t.len);
        if (tj == NULL) {
            *why = "tenant: not UTF-8";
            return -1;
        }
        *method = "POST";
        *path = tr_strdup("/v1/keys");
        *body = dump(json_pack("{s:o, s:s}", "tenant", tj, "role", gw_role_name(troupe_proto_CreateKey_role(o))));
        return 0;
    }
    case troupe_proto_Op_RevokeKey: {
        const struct troupe_proto_RevokeKey *o = troupe_proto_Request_op_as_RevokeKey(rq);
        *method = "POST";
        *path = path_of("keys/", troupe_proto_RevokeKey_key_id(o), "/revoke");
        return 0;
    }
    default:
        return 1;
    }
}

/* ---- results ---------------------------------------------------------------------------- */

static tr_fb_ref str_of(struct tr_fb_builder *b, json_t *j, const char *name)
{
    const char *s = json_string_value(json_object_get(j, name));
    return s != NULL ? tr_fb_create_string(b, s, json_string_length(json_object_get(j, name))) : 0;
}

static uint64_t u64_of(json_t *j, const char *name)
{
    json_int_t v = json_integer_value(json_object_get(j, name));
    return v > 0 ? (uint64_t)v : 0;
}

/* RFC 3339 "YYYY-MM-DDTHH:MM:SS.uuuuuuZ" (gw_time_text) to microseconds; 0
 * when it is not one. */
static int64_t time_of(json_t *j, const char *name)
{
    const char *s = json_string_value(json_object_get(j, name));
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    long us = 0;
    if (s == NULL || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d.%6ldZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
                            &tm.tm_min, &tm.tm_sec, &us) != 7)
        return 0;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (int64_t)timegm(&tm) * 1000000 + us;
}

/* TenantInfo from the JSON of gw_render_tenant (plus api_key and key_id). */
static tr_fb_ref tenant_info(struct tr_fb_builder *b, json_t *j)
{
    if (json_string_value(json_object_get(j, "id")) == NULL)
        return 0;
    tr_fb_ref id = str_of(b, j, "id"), name = str_of(b, j, "name"), key = str_of(b, j, "api_key"),
              kid = str_of(b, j, "key_id");
    json_t *l = json_object_get(j, "limits");
    tr_fb_ref limits = 0;
    if (json_is_object(l)) {
        const char *pol = json_string_value(json_object_get(l, "budget_policy"));
        troupe_cmd_TenantLimits_start(b);
        troupe_cmd_TenantLimits_add_max_active_runs(b, (uint32_t)u64_of(l, "max_active_runs"));
        troupe_cmd_TenantLimits_add_requests_per_s(b, (uint32_t)u64_of(l, "requests_per_s"));
        troupe_cmd_TenantLimits_add_budget_usd_per_day(b, json_number_value(json_object_get(l, "budget_usd_per_day")));
        troupe_cmd_TenantLimits_add_budget_policy(b, pol != NULL && strcmp(pol, "wait") == 0
                                                         ? troupe_cmd_BudgetPolicy_Wait
                                                         : troupe_cmd_BudgetPolicy_Fail);
        limits = troupe_cmd_TenantLimits_end(b);
    }
    json_t *sp = json_object_get(j, "spend");
    troupe_proto_TenantInfo_start(b);
    troupe_proto_TenantInfo_add_id(b, id);
    troupe_proto_TenantInfo_add_name(b, name);
    if (limits != 0)
        troupe_proto_TenantInfo_add_limits(b, limits);
    troupe_proto_TenantInfo_add_created_at_us(b, time_of(j, "created_at"));
    if (key != 0)
        troupe_proto_TenantInfo_add_api_key(b, key);
    if (kid != 0)
        troupe_proto_TenantInfo_add_key_id(b, kid);
    troupe_proto_TenantInfo_add_spend_day_us(b, time_of(sp, "day"));
    troupe_proto_TenantInfo_add_spend_micro_usd(b, u64_of(sp, "cost_micro_usd"));
    troupe_proto_TenantInfo_add_spend_prompt_tokens(b, u64_of(sp, "prompt_tokens"));
    troupe_proto_TenantInfo_add_spend_completion_tokens(b, u64_of(sp, "completion_tokens"));
    troupe_proto_TenantInfo_add_total_micro_usd(
        b, (uint64_t)(json_number_value(json_object_get(sp, "total_cost_usd")) * 1e6 + 0.5));
    troupe_proto_TenantInfo_add_budget_exhausted(b, json_is_true(json_object_get(sp, "budget_exhausted")));
    return troupe_proto_TenantInfo_end(b);
}

static int8_t role_of(json_t *j)
{
    const char *r = json_string_value(json_object_get(j, "role"));
    int8_t role = troupe_cmd_KeyRole_Viewer;
    if (r != NULL)
        (void)gw_role_parse(r, &role);
    return role;
}

tr_fb_ref gw_proto_tenant_result(struct tr_fb_builder *b, uint8_t op, json_t *j, uint8_t *rtype)
{
    switch (op) {
    case troupe_proto_Op_CreateTenant:
    case troupe_proto_Op_UpdateTenant:
        *rtype = troupe_proto_Result_TenantInfo;
        return tenant_info(b, j);
    case troupe_proto_Op_ListTenants: {
        json_t *arr = json_object_get(j, "tenants");
        size_t n = json_array_size(arr), k = 0;
        tr_fb_ref *refs = tr_calloc(n + 1, sizeof *refs);
        for (size_t i = 0; i < n; i++) {
            tr_fb_ref r = tenant_info(b, json_array_get(arr, i));
            if (r != 0)
                refs[k++] = r;
        }
        tr_fb_ref vec = troupe_proto_TenantPage_create_tenants(b, refs, k);
        tr_free(refs);
        tr_fb_ref cur = str_of(b, j, "next_cursor");
        troupe_proto_TenantPage_start(b);
        troupe_proto_TenantPage_add_tenants(b, vec);
        if (cur != 0)
            troupe_proto_TenantPage_add_next_cursor(b, cur);
        *rtype = troupe_proto_Result_TenantPage;
        return troupe_proto_TenantPage_end(b);
    }
    case troupe_proto_Op_CreateKey: {
        if (json_string_value(json_object_get(j, "api_key")) == NULL)
            return 0;
        tr_fb_ref key = str_of(b, j, "api_key"), kid = str_of(b, j, "key_id"), t = str_of(b, j, "tenant");
        troupe_proto_KeyCreated_start(b);
        troupe_proto_KeyCreated_add_api_key(b, key);
        troupe_proto_KeyCreated_add_key_id(b, kid);
        troupe_proto_KeyCreated_add_tenant(b, t);
        troupe_proto_KeyCreated_add_role(b, role_of(j));
        *rtype = troupe_proto_Result_KeyCreated;
        return troupe_proto_KeyCreated_end(b);
    }
    case troupe_proto_Op_RevokeKey: {
        if (json_string_value(json_object_get(j, "key_id")) == NULL)
            return 0;
        tr_fb_ref kid = str_of(b, j, "key_id"), t = str_of(b, j, "tenant");
        troupe_proto_KeyInfo_start(b);
        troupe_proto_KeyInfo_add_key_id(b, kid);
        troupe_proto_KeyInfo_add_tenant(b, t);
        troupe_proto_KeyInfo_add_role(b, role_of(j));
        troupe_proto_KeyInfo_add_revoked(b, json_is_true(json_object_get(j, "revoked")));
        *rtype = troupe_proto_Result_KeyInfo;
        return troupe_proto_KeyInfo_end(b);
    }
    default:
        return 0;
    }
}
