/* /v1/tenants and /v1/keys: tenants with their limits and spend, API keys.
 *
 *   POST /v1/tenants            cluster admin: {"name", "limits"} -> 201
 *                               {"id", "name", "api_key", "key_id", "limits",
 *                               "created_at", "spend"}; the key is the
 *                               tenant's first admin key, shown only here
 *   GET  /v1/tenants            cluster admin: every tenant; a tenant admin:
 *                               its own
 *   GET  /v1/tenants/{ref}      one tenant by id or name (a tenant admin:
 *                               only its own, else 404)
 *   POST /v1/tenants/{ref}      cluster admin: {"limits": {...}}, merged
 *                               field by field into the current limits
 *   POST /v1/keys               a tenant admin (its tenant) or the cluster
 *                               admin (any): {"tenant", "role"} -> 201
 *                               {"api_key", "key_id", "tenant", "role"}
 *   POST /v1/keys/{id}/revoke   the same callers: 200 {"key_id", "tenant",
 *                               "role", "revoked": true}; idempotent
 *
 * Secrets: a new key's text lives in the call (c->text) only until it is
 * answered, and is wiped then; the command carries only its hash
 * (gw_key_new). Another tenant's tenant or key answers 404, as if absent.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "gateway/gw_int.h"

static int64_t wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void wipe_text(struct gw_call *c)
{
    if (c->text != NULL) {
        sodium_memzero(c->text, strlen(c->text));
        tr_free(c->text);
        c->text = NULL;
    }
}

/* May p see tenant id? */
static bool tenant_mine(const struct gw_principal *p, struct tr_fb_str id)
{
    return gw_tenant_visible(p, id);
}

/* Answer with the tenant of id as stored; extra (stolen, may be NULL) is
 * merged in. */
static void answer_tenant(struct gw_call *c, int status, const char *id, json_t *extra)
{
    void *buf;
    const struct troupe_state_Tenant *t;
    int rv = gw_load_tenant(c->g->store, id, &buf, &t);
    if (rv != TR_OK) {
        json_decref(extra);
        if (rv == TR_ENOTFOUND)
            gw_respond_error(c, 404, "not_found", "no tenant %.64s", id);
        else
            gw_respond_error(c, 500, "internal", "tenant %.64s cannot be read: %s", id, tr_strerror(rv));
        return;
    }
    json_t *j = gw_render_tenant(t, wall_us());
    tr_free(buf);
    if (extra != NULL) {
        json_object_update(j, extra);
        json_decref(extra);
    }
    gw_respond_json(c, status, j);
}

/* ---- POST /v1/tenants ------------------------------------------------------------------- */

static void create_done(struct gw_call *c, const struct tr_state_reply *r)
{
    /* c->text: "<tenant id>\n<api key>" */
    char *nl = strchr(c->text, '\n');
    *nl = '\0';
    const char *key = nl + 1;
    switch (r->verdict) {
    case TR_FSM_OK: {
        char key_id[GW_KEY_ID_LEN + 1];
        memcpy(key_id, key + 4, GW_KEY_ID_LEN);
        key_id[GW_KEY_ID_LEN] = '\0';
        json_t *extra = json_pack("{s:s, s:s}", "api_key", key, "key_id", key_id);
        char id[GW_TENANT_ID_LEN + 1];
        snprintf(id, sizeof id, "%s", c->text);
        wipe_text(c);
        answer_tenant(c, 201, id, extra);
        return;
    }
    case TR_FSM_EXISTS:
        wipe_text(c);
        gw_respond_error(c, 409, "tenant_exists", "a tenant with that name exists");
        return;
    default:
        wipe_text(c);
        gw_respond_error(c, 500, "internal", "the tenant was refused: %s", tr_fsm_verdict_name(r->verdict));
        return;
    }
}

void gw_h_tenants_create(struct gw_call *c)
{
    struct gw_error e;
    struct gw_tenant_req t;
    if (gw_tenant_req_parse(c->req->body, c->req->body_len, true, &t, &e) != 0) {
        gw_respond_gw_error(c, &e);
        return;
    }
    void *buf;
    const struct troupe_state_Tenant *old;
    if (gw_find_tenant(c->g->store, t.name, &buf, &old) == TR_OK) {
        tr_free(buf);
        gw_respond_error(c, 409, "tenant_exists", "a tenant named %.64s exists", t.name);
        gw_tenant_req_free(&t);
        return;
    }
    char id[GW_TENANT_ID_LEN + 1], key_id[GW_KEY_ID_LEN + 1], key[GW_KEY_TEXT];
    unsigned char hash[32];
    gw_tenant_id_new(id);
    gw_key_new(key_id, key, hash);
    size_t n = strlen(id) + 1 + strlen(key) + 1;
    c->text = tr_malloc(n);
    snprintf(c->text, n, "%s\n%s", id, key);
    sodium_memzero(key, sizeof key);
    struct gw_cmd_head h = gw_cmd_head(c);
    gw_build_tenant_create(&c->g->b, &h, id, &t, key_id, hash);
    gw_tenant_req_free(&t);
    gw_propose(c, &c->g->b, create_done);
}

/* ---- GET /v1/tenants -------------------------------------------------------------------- */

void gw_h_tenants_list(struct gw_call *c)
{
    char lim[16], cursor[GW_CURSOR_MAX];
    uint64_t limit = GW_LIST_DEFAULT;
    int q = gw_query_get(c->req->query, "limit", lim, sizeof lim);
    if (q != 0 && (q < 0 || gw_parse_u64(lim, &limit) != TR_OK || limit < 1 || limit > GW_LIST_MAX)) {
        gw_respond_error(c, 400, "invalid_query", "limit: must be an integer from 1 to %d", GW_LIST_MAX);
        return;
    }
    unsigned char lower[TR_IDEM_TENANT_MAX + 2];
    size_t llen = 0;
    q = gw_query_get(c->req->query, "cursor", cursor, sizeof cursor);
    if (q != 0) {
        if (q < 0 || gw_cursor_decode(cursor, lower, TR_IDEM_TENANT_MAX, &llen) != TR_OK) {
            gw_respond_error(c, 400, "invalid_cursor", "cursor: not a cursor this API returned");
            return;
        }
        lower[llen++] = 0; /* the first key after the cursor's */
    }
    struct tr_store_iter *it;
    struct tr_err err = { 0 };
    if (tr_store_iter_open(c->g->store, NULL, TR_CF_TENANTS, llen ? lower : NULL, llen, NULL, 0, &it, &err) != TR_OK) {
        gw_respond_error(c, 500, "internal", "cannot list tenants: %s", err.msg);
        return;
    }
    int64_t now = wall_us();
    json_t *list = json_array();
    unsigned char last[TR_IDEM_TENANT_MAX];
    size_t last_len = 0;
    bool more = false;
    uint64_t n = 0, scanned = 0;
    const void *k, *v;
    size_t klen, vlen;
    while (tr_store_iter_next(it, &k, &klen, &v, &vlen, NULL) > 0) {
        if (n == limit || scanned == GW_SCAN_MAX) {
            more = true;
            break;
        }
        scanned++;
        if (klen == 0 || klen > sizeof last)
            continue;
        memcpy(last, k, klen);
        last_len = klen;
        const struct troupe_state_Tenant *t =
            troupe_state_Tenant_verify_as_root_opts(v, vlen, "TRE1", &tr_fb_default_limits, NULL);
        if (t == NULL || !tenant_mine(&c->who, troupe_state_Tenant_tenant_id(t)))
            continue;
        json_array_append_new(list, gw_render_tenant(t, now));
        n++;
    }
    tr_store_iter_close(it);
    json_t *next = json_null();
    if (more && last_len > 0 && gw_cursor_encode(last, last_len, cursor, sizeof cursor) == TR_OK) {
        json_decref(next);
        next = json_string(cursor);
    }
    gw_respond_json(c, 200, json_pack("{s:o, s:o}", "tenants", list, "next_cursor", next));
}

/* ---- GET and POST /v1/tenants/{ref} ------------------------------------------------------ */

/* The tenant named by the route's parameter as p may see it: its id in
 * out, or an answer (404) and -1. The "default" tenant resolves even
 * without a record when allow_default. */
static int tenant_param(struct gw_call *c, char out[TR_IDEM_TENANT_MAX + 1], bool allow_default,
                        const struct troupe_cmd_TenantLimits **limits, void **buf)
{
    const struct troupe_state_Tenant *t;
    *buf = NULL;
    *limits = NULL;
    int rv = gw_find_tenant(c->g->store, c->m.param, buf, &t);
    if (rv == TR_OK && tenant_mine(&c->who, troupe_state_Tenant_tenant_id(t))) {
        struct tr_fb_str id = troupe_state_Tenant_tenant_id(t);
        snprintf(out, TR_IDEM_TENANT_MAX + 1, "%.*s", (int)id.len, id.ptr);
        *limits = troupe_state_Tenant_limits(t);
        return 0;
    }
    tr_free(*buf);
    *buf = NULL;
    if (rv == TR_ENOTFOUND && allow_default && strcmp(c->m.param, GW_DEFAULT_TENANT) == 0) {
        snprintf(out, TR_IDEM_TENANT_MAX + 1, "%s", GW_DEFAULT_TENANT);
        return 0;
    }
    if (rv != TR_OK && rv != TR_ENOTFOUND)
        gw_respond_error(c, 500, "internal", "tenants cannot be read: %s", tr_strerror(rv));
    else
        gw_respond_error(c, 404, "not_found", "no tenant %.64s", c->m.param);
    return -1;
}

void gw_h_tenant_get(struct gw_call *c)
{
    char id[TR_IDEM_TENANT_MAX + 1];
    const struct troupe_cmd_TenantLimits *l;
    void *buf;
    if (tenant_param(c, id, false, &l, &buf) != 0)
        return;
    tr_free(buf);
    answer_tenant(c, 200, id, NULL);
}

static void update_done(struct gw_call *c, const struct tr_state_reply *r)
{
    if (r->verdict == TR_FSM_OK) {
        answer_tenant(c, 200, c->text, NULL);
        return;
    }
    if (r->verdict == TR_FSM_NOT_FOUND) {
        gw_respond_error(c, 404, "not_found", "no tenant %.64s", c->m.param);
        return;
    }
    gw_respond_error(c, 500, "internal", "the update was refused: %s", tr_fsm_verdict_name(r->verdict));
}

void gw_h_tenant_update(struct gw_call *c)
{
    struct gw_error e;
    struct gw_tenant_req t;
    if (gw_tenant_req_parse(c->req->body, c->req->body_len, false, &t, &e) != 0) {
        gw_respond_gw_error(c, &e);
        return;
    }
    char id[TR_IDEM_TENANT_MAX + 1];
    const struct troupe_cmd_TenantLimits *cur;
    void *buf;
    if (tenant_param(c, id, true, &cur, &buf) != 0) {
        gw_tenant_req_free(&t);
        return;
    }
    c->text = tr_strdup(id);
    struct gw_cmd_head h = gw_cmd_head(c);
    gw_build_tenant_update(&c->g->b, &h, id, &t, cur);
    tr_free(buf);
    gw_tenant_req_free(&t);
    gw_propose(c, &c->g->b, update_done);
}

/* ---- POST /v1/keys ------------------------------------------------------------------------ */

static void key_done(struct gw_call *c, const struct tr_state_reply *r)
{
    /* c->text: "<tenant id>\n<role>\n<api key>" */
    char *a = strchr(c->text, '\n');
    *a = '\0';
    char *b = strchr(a + 1, '\n');
    *b = '\0';
    if (r->verdict != TR_FSM_OK) {
        wipe_text(c);
        if (r->verdict == TR_FSM_NOT_FOUND)
            gw_respond_error(c, 404, "not_found", "no such tenant");
        else
            gw_respond_error(c, 500, "internal", "the key was refused: %s", tr_fsm_verdict_name(r->verdict));
        return;
    }
    char key_id[GW_KEY_ID_LEN + 1];
    memcpy(key_id, b + 1 + 4, GW_KEY_ID_LEN);
    key_id[GW_KEY_ID_LEN] = '\0';
    json_t *j = json_pack("{s:s, s:s, s:s, s:s}", "api_key", b + 1, "key_id", key_id, "tenant", c->text, "role", a + 1);
    wipe_text(c);
    gw_respond_json(c, 201, j);
}

void gw_h_keys_create(struct gw_call *c)
{
    struct gw_error e;
    char *ref;
    int8_t role;
    if (gw_key_req_parse(c->req->body, c->req->body_len, &ref, &role, &e) != 0) {
        gw_respond_gw_error(c, &e);
        return;
    }
    void *buf;
    const struct troupe_state_Tenant *t;
    int rv = gw_find_tenant(c->g->store, ref, &buf, &t);
    if (rv != TR_OK || !tenant_mine(&c->who, troupe_state_Tenant_tenant_id(t))) {
        tr_free(buf);
        if (rv != TR_OK && rv != TR_ENOTFOUND)
            gw_respond_error(c, 500, "internal", "tenants cannot be read: %s", tr_strerror(rv));
        else
            gw_respond_error(c, 404, "not_found", "no tenant %.64s", ref);
        tr_free(ref);
        return;
    }
    struct tr_fb_str id = troupe_state_Tenant_tenant_id(t);
    char tid[TR_IDEM_TENANT_MAX + 1];
    snprintf(tid, sizeof tid, "%.*s", (int)id.len, id.ptr);
    tr_free(buf);
    tr_free(ref);
    char key_id[GW_KEY_ID_LEN + 1], key[GW_KEY_TEXT];
    unsigned char hash[32];
    gw_key_new(key_id, key, hash);
    size_t n = strlen(tid) + 16 + strlen(key) + 3;
    c->text = tr_malloc(n);
    snprintf(c->text, n, "%s\n%s\n%s", tid, gw_role_name(role), key);
    sodium_memzero(key, sizeof key);
    struct gw_cmd_head h = gw_cmd_head(c);
    gw_build_key_create(&c->g->b, &h, tid, key_id, hash, role);
    gw_propose(c, &c->g->b, key_done);
}

/* ---- POST /v1/keys/{id}/revoke --------------------------------------------------------------- */

/* The key record of the route's key id as c may see it; answers 404 and
 * returns -1 otherwise. */
static int load_key(struct gw_call *c, void **buf, const struct troupe_state_Key **out)
{
    char k[4 + GW_PARAM_MAX + 1];
    int n = snprintf(k, sizeof k, "key/%s", c->m.param);
    size_t len = 0;
    *buf = NULL;
    *out = NULL;
    if (tr_store_get(c->g->store, NULL, TR_CF_CREDENTIALS, k, (size_t)n, buf, &len, NULL) == TR_OK)
        *out = troupe_state_Key_verify_as_root_opts(*buf, len, "TRK1", &tr_fb_default_limits, NULL);
    if (*out == NULL || !tenant_mine(&c->who, troupe_state_Key_tenant_id(*out))) {
        tr_free(*buf);
        *buf = NULL;
        gw_respond_error(c, 404, "not_found", "no key %.64s", c->m.param);
        return -1;
    }
    return 0;
}

static void answer_key(struct gw_call *c, int status)
{
    void *buf;
    const struct troupe_state_Key *k;
    if (load_key(c, &buf, &k) != 0)
        return;
    struct tr_fb_str t = troupe_state_Key_tenant_id(k);
    json_t *j = json_pack("{s:s, s:s%, s:s, s:b}", "key_id", c->m.param, "tenant", t.ptr != NULL ? t.ptr : "",
                          (size_t)t.len, "role", gw_role_name(troupe_state_Key_role(k)), "revoked",
                          troupe_state_Key_revoked(k));
    tr_free(buf);
    gw_respond_json(c, status, j);
}

static void revoke_done(struct gw_call *c, const struct tr_state_reply *r)
{
    if (r->verdict == TR_FSM_OK) {
        answer_key(c, 200);
        return;
    }
    if (r->verdict == TR_FSM_NOT_FOUND) {
        gw_respond_error(c, 404, "not_found", "no key %.64s", c->m.param);
        return;
    }
    gw_respond_error(c, 500, "internal", "the revocation was refused: %s", tr_fsm_verdict_name(r->verdict));
}

void gw_h_key_revoke(struct gw_call *c)
{
    void *buf;
    const struct troupe_state_Key *k;
    if (load_key(c, &buf, &k) != 0)
        return;
    bool revoked = troupe_state_Key_revoked(k);
    tr_free(buf);
    if (revoked) {
        answer_key(c, 200); /* idempotent: nothing to write */
        return;
    }
    struct gw_cmd_head h = gw_cmd_head(c);
    gw_build_key_revoke(&c->g->b, &h, c->m.param);
    gw_propose(c, &c->g->b, revoke_done);
}
