/* gateway/: the pure parts of tenants and keys — key generation and parsing,
 * tenant names, roles, the role each route needs, tenant and key bodies, the
 * commands built from them (verified as TRC1), and the tenant's JSON with
 * today's spend. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "gateway/gw_int.h"

#define DAY_US (86400LL * 1000000LL)

static void test_keys(void **st)
{
    (void)st;
    char id[GW_KEY_ID_LEN + 1], text[GW_KEY_TEXT], id2[GW_KEY_ID_LEN + 1], text2[GW_KEY_TEXT];
    unsigned char hash[32], hash2[32], back[32];
    gw_key_new(id, text, hash);
    gw_key_new(id2, text2, hash2);
    assert_int_equal(strlen(text), GW_KEY_TEXT - 1);
    assert_memory_equal(text, "trk_", 4);
    assert_memory_equal(text + 4, id, GW_KEY_ID_LEN);
    assert_string_not_equal(text, text2); /* random */
    assert_memory_not_equal(hash, hash2, 32);

    char pid[GW_KEY_ID_LEN + 1];
    assert_int_equal(gw_key_parse(text, strlen(text), pid, back), TR_OK);
    assert_string_equal(pid, id);
    assert_memory_equal(back, hash, 32);
    /* one changed secret digit: same id, another hash */
    text[GW_KEY_TEXT - 2] = text[GW_KEY_TEXT - 2] == '0' ? '1' : '0';
    assert_int_equal(gw_key_parse(text, strlen(text), pid, back), TR_OK);
    assert_memory_not_equal(back, hash, 32);
    /* not keys */
    assert_int_equal(gw_key_parse("", 0, pid, back), TR_EINVAL);
    assert_int_equal(gw_key_parse(text, strlen(text) - 1, pid, back), TR_EINVAL);
    char bad[GW_KEY_TEXT];
    memcpy(bad, text2, sizeof bad);
    bad[0] = 'x';
    assert_int_equal(gw_key_parse(bad, strlen(bad), pid, back), TR_EINVAL);
    memcpy(bad, text2, sizeof bad);
    bad[4 + GW_KEY_ID_LEN] = '-';
    assert_int_equal(gw_key_parse(bad, strlen(bad), pid, back), TR_EINVAL);
    memcpy(bad, text2, sizeof bad);
    bad[10] = 'G'; /* not lower-case hex */
    assert_int_equal(gw_key_parse(bad, strlen(bad), pid, back), TR_EINVAL);

    char tid[GW_TENANT_ID_LEN + 1];
    gw_tenant_id_new(tid);
    assert_int_equal(strlen(tid), GW_TENANT_ID_LEN);
    assert_memory_equal(tid, "ten_", 4);
}

static void test_names_and_roles(void **st)
{
    (void)st;
    assert_true(gw_tenant_name_ok("acme", 4));
    assert_true(gw_tenant_name_ok("a.b-c_d9", 8));
    assert_false(gw_tenant_name_ok("", 0));
    assert_false(gw_tenant_name_ok("default", 7));
    assert_false(gw_tenant_name_ok("ten_x", 5));
    assert_false(gw_tenant_name_ok("-a", 2));
    assert_false(gw_tenant_name_ok("a b", 3));
    assert_false(gw_tenant_name_ok("a/b", 3));
    char big[GW_TENANT_NAME_MAX + 2];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    assert_false(gw_tenant_name_ok(big, strlen(big))); /* 65 bytes */
    big[GW_TENANT_NAME_MAX] = '\0';
    assert_true(gw_tenant_name_ok(big, strlen(big))); /* 64 */

    int8_t r;
    assert_int_equal(gw_role_parse("viewer", &r), TR_OK);
    assert_int_equal(r, GW_ROLE_VIEWER);
    assert_int_equal(gw_role_parse("admin", &r), TR_OK);
    assert_int_equal(r, troupe_cmd_KeyRole_Admin);
    assert_int_equal(gw_role_parse("root", &r), TR_EINVAL);
    assert_string_equal(gw_role_name(GW_ROLE_OPERATOR), "operator");
    assert_string_equal(gw_role_name(9), "unknown");

    /* the role matrix */
    assert_int_equal(gw_route_role(GW_R_HEALTHZ, false), -1);
    assert_int_equal(gw_route_role(GW_R_RUNS, false), GW_ROLE_VIEWER);
    assert_int_equal(gw_route_role(GW_R_RUNS, true), GW_ROLE_OPERATOR);
    assert_int_equal(gw_route_role(GW_R_RUN_CANCEL, true), GW_ROLE_OPERATOR);
    assert_int_equal(gw_route_role(GW_R_APPROVAL, true), GW_ROLE_APPROVER);
    assert_int_equal(gw_route_role(GW_R_TOOLS, true), GW_ROLE_OPERATOR);
    assert_int_equal(gw_route_role(GW_R_TOOL_DISABLE, true), GW_ROLE_OPERATOR);
    assert_int_equal(gw_route_role(GW_R_KEYS, true), GW_ROLE_ADMIN);
    assert_int_equal(gw_route_role(GW_R_TENANTS, false), GW_ROLE_ADMIN);
    assert_true(gw_route_role(GW_R_TENANTS, true) > GW_ROLE_ADMIN);
    assert_true(gw_route_role(GW_R_TENANT, true) > GW_ROLE_ADMIN);
    assert_true(gw_route_role(GW_R_DIGEST, false) > GW_ROLE_ADMIN);

    struct gw_principal p = { .tenant = "ten_a", .role = GW_ROLE_ADMIN };
    struct tr_fb_str a = { .ptr = "ten_a", .len = 5 }, b = { .ptr = "ten_ab", .len = 6 }, none = { 0 };
    assert_true(gw_tenant_visible(&p, a));
    assert_false(gw_tenant_visible(&p, b));
    assert_false(gw_tenant_visible(&p, none));
    p.cluster_admin = true;
    assert_true(gw_tenant_visible(&p, b));
}

static void test_bodies(void **st)
{
    (void)st;
    struct gw_tenant_req t;
    struct gw_error e;
#define PARSE(body, create) gw_tenant_req_parse(body, strlen(body), create, &t, &e)
    assert_int_equal(PARSE("{\"name\": \"acme\", \"limits\": {\"max_active_runs\": 3, \"requests_per_s\": 7, "
                           "\"budget_usd_per_day\": 1.5, \"budget_policy\": \"wait\"}}",
                           true),
                     0);
    assert_string_equal(t.name, "acme");
    assert_true(t.has_max_active_runs && t.has_rps && t.has_budget && t.has_policy);
    assert_int_equal(t.max_active_runs, 3);
    assert_int_equal(t.requests_per_s, 7);
    assert_true(t.budget_usd_per_day == 1.5);
    assert_int_equal(t.budget_policy, troupe_cmd_BudgetPolicy_Wait);

    /* the command: a verified TRC1 TenantCreate with the hash, never the key */
    struct tr_fb_builder b;
    tr_fb_builder_init(&b);
    unsigned char hash[32];
    memset(hash, 7, sizeof hash);
    struct gw_cmd_head h = { .time_us = 5, .origin_node = 1 };
    gw_build_tenant_create(&b, &h, "ten_0011223344556677", &t, "00112233aabbccdd", hash);
    size_t len;
    const uint8_t *buf = tr_fb_builder_data(&b, &len);
    const struct troupe_cmd_Command *c = troupe_cmd_Command_verify_as_root(buf, len, NULL);
    assert_non_null(c);
    assert_int_equal(troupe_cmd_Command_op_type(c), troupe_cmd_Op_TenantCreate);
    const struct troupe_cmd_TenantCreate *tc = troupe_cmd_Command_op_as_TenantCreate(c);
    assert_string_equal(troupe_cmd_TenantCreate_name(tc).ptr, "acme");
    assert_int_equal(troupe_cmd_TenantCreate_key_hash(tc).len, 32);
    const struct troupe_cmd_TenantLimits *l = troupe_cmd_TenantCreate_limits(tc);
    assert_int_equal(troupe_cmd_TenantLimits_requests_per_s(l), 7);
    assert_int_equal(troupe_cmd_TenantLimits_budget_policy(l), troupe_cmd_BudgetPolicy_Wait);
    gw_tenant_req_free(&t);

    /* a partial update keeps the current values of the fields it leaves out
     * (cur must outlive the builder's reset: a copy of the first command) */
    uint8_t *copy = malloc(len);
    memcpy(copy, buf, len);
    c = troupe_cmd_Command_verify_as_root(copy, len, NULL);
    l = troupe_cmd_TenantCreate_limits(troupe_cmd_Command_op_as_TenantCreate(c));
    assert_int_equal(PARSE("{\"limits\": {\"budget_usd_per_day\": 9}}", false), 0);
    gw_build_tenant_update(&b, &h, "ten_0011223344556677", &t, l);
    gw_tenant_req_free(&t);
    free(copy);
    buf = tr_fb_builder_data(&b, &len);
    c = troupe_cmd_Command_verify_as_root(buf, len, NULL);
    assert_non_null(c);
    assert_int_equal(troupe_cmd_Command_op_type(c), troupe_cmd_Op_TenantUpdate);
    l = troupe_cmd_TenantUpdate_limits(troupe_cmd_Command_op_as_TenantUpdate(c));
    assert_true(troupe_cmd_TenantLimits_budget_usd_per_day(l) == 9);
    assert_int_equal(troupe_cmd_TenantLimits_requests_per_s(l), 7);
    assert_int_equal(troupe_cmd_TenantLimits_max_active_runs(l), 3);
    assert_int_equal(troupe_cmd_TenantLimits_budget_policy(l), troupe_cmd_BudgetPolicy_Wait);

    /* defaults when created without limits */
    assert_int_equal(PARSE("{\"name\": \"bare\"}", true), 0);
    gw_build_tenant_create(&b, &h, "ten_0011223344556678", &t, "00112233aabbccde", hash);
    gw_tenant_req_free(&t);
    buf = tr_fb_builder_data(&b, &len);
    c = troupe_cmd_Command_verify_as_root(buf, len, NULL);
    l = troupe_cmd_TenantCreate_limits(troupe_cmd_Command_op_as_TenantCreate(c));
    assert_int_equal(troupe_cmd_TenantLimits_max_active_runs(l), 100);
    assert_int_equal(troupe_cmd_TenantLimits_requests_per_s(l), 50);
    assert_true(troupe_cmd_TenantLimits_budget_usd_per_day(l) == 0);

    /* refused */
    assert_int_equal(PARSE("{}", true), -1);
    assert_string_equal(e.code, "missing_field");
    assert_int_equal(PARSE("{\"name\": \"x\", \"limit\": {}}", true), -1);
    assert_string_equal(e.code, "unknown_field");
    assert_int_equal(PARSE("{\"name\": \"x\", \"limits\": {\"requests_per_s\": 1.5}}", true), -1);
    assert_string_equal(e.code, "invalid_field");
    assert_int_equal(PARSE("{\"name\": \"x\", \"limits\": {\"budget_usd_per_day\": -1}}", true), -1);
    assert_int_equal(PARSE("{\"name\": \"x\", \"limits\": []}", true), -1);
    assert_int_equal(PARSE("{\"name\": \"default\"}", true), -1);
    assert_int_equal(PARSE("{\"name\": \"x\"}", false), -1); /* an update takes limits only */
    assert_int_equal(PARSE("{}", false), -1);
    assert_string_equal(e.code, "missing_field");
    assert_int_equal(PARSE("nope", true), -1);
    assert_string_equal(e.code, "invalid_json");
#undef PARSE

    char *tenant;
    int8_t role;
    static const char kb[] = "{\"tenant\": \"acme\", \"role\": \"approver\"}";
    assert_int_equal(gw_key_req_parse(kb, strlen(kb), &tenant, &role, &e), 0);
    assert_string_equal(tenant, "acme");
    assert_int_equal(role, GW_ROLE_APPROVER);
    free(tenant);
    static const char kb2[] = "{\"tenant\": \"acme\", \"role\": \"god\"}";
    assert_int_equal(gw_key_req_parse(kb2, strlen(kb2), &tenant, &role, &e), -1);
    assert_null(tenant);
    static const char kb3[] = "{\"role\": \"viewer\", \"x\": 1}";
    assert_int_equal(gw_key_req_parse(kb3, strlen(kb3), &tenant, &role, &e), -1);
    assert_string_equal(e.code, "unknown_field");

    gw_build_key_create(&b, &h, "ten_1", "00112233aabbccdd", hash, GW_ROLE_VIEWER);
    buf = tr_fb_builder_data(&b, &len);
    assert_non_null(troupe_cmd_Command_verify_as_root(buf, len, NULL));
    gw_build_key_revoke(&b, &h, "00112233aabbccdd");
    buf = tr_fb_builder_data(&b, &len);
    assert_non_null(troupe_cmd_Command_verify_as_root(buf, len, NULL));
    tr_fb_builder_free(&b);
}

/* The tenant record's JSON: today's spend, or zero when it is of another day. */
static void test_render(void **st)
{
    (void)st;
    struct tr_fb_builder b;
    tr_fb_builder_init(&b);
    int64_t now = 19000 * DAY_US + 3600LL * 1000000;
    tr_fb_ref id = tr_fb_create_str(&b, "ten_a"), name = tr_fb_create_str(&b, "acme");
    troupe_cmd_TenantLimits_start(&b);
    troupe_cmd_TenantLimits_add_budget_usd_per_day(&b, 0.25);
    tr_fb_ref l = troupe_cmd_TenantLimits_end(&b);
    troupe_state_Tenant_start(&b);
    troupe_state_Tenant_add_tenant_id(&b, id);
    troupe_state_Tenant_add_name(&b, name);
    troupe_state_Tenant_add_limits(&b, l);
    troupe_state_Tenant_add_spend_day(&b, 19000);
    troupe_state_Tenant_add_spend_micro_usd(&b, 300000);
    troupe_state_Tenant_add_total_micro_usd(&b, 900000);
    tr_fb_finish(&b, troupe_state_Tenant_end(&b), "TRE1");
    size_t len;
    const uint8_t *buf = tr_fb_builder_data(&b, &len);
    const struct troupe_state_Tenant *t = troupe_state_Tenant_verify_as_root_opts(buf, len, "TRE1", NULL, NULL);
    assert_non_null(t);
    json_t *j = gw_render_tenant(t, now);
    json_t *sp = json_object_get(j, "spend");
    assert_int_equal(json_integer_value(json_object_get(sp, "cost_micro_usd")), 300000);
    assert_true(json_is_true(json_object_get(sp, "budget_exhausted")));
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "limits"), "budget_policy")), "fail");
    json_decref(j);
    /* the next day: nothing spent yet */
    j = gw_render_tenant(t, now + DAY_US);
    sp = json_object_get(j, "spend");
    assert_int_equal(json_integer_value(json_object_get(sp, "cost_micro_usd")), 0);
    assert_false(json_is_true(json_object_get(sp, "budget_exhausted")));
    assert_true(json_real_value(json_object_get(sp, "total_cost_usd")) == 0.9);
    json_decref(j);
    assert_int_equal(gw_tenant_spend_today(t, now), 300000);
    assert_int_equal(gw_tenant_spend_today(t, now - DAY_US), 0);
    tr_fb_builder_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keys),
        cmocka_unit_test(test_names_and_roles),
        cmocka_unit_test(test_bodies),
        cmocka_unit_test(test_render),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
