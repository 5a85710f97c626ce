/* Authentication, roles and per-tenant request rates of the client APIs
 * (HTTP and, through the same dispatch, the FlatBuffers protocol).
 *
 * Happy path: gw_call_dispatch -> gw_authenticate gets the value of
 * `Authorization: Bearer <key>` (or its WebSocket stand-in, http_api.c); the cluster admin token (TROUPE_ADMIN_TOKEN) is compared as
 * BLAKE2b digests with sodium_memcmp; an API key "trk_<key id>_<secret>"
 * names its record ("key/" + key id in the credentials family), whose
 * BLAKE2b-256 of the whole key text is compared with sodium_memcmp, then the
 * key must not be revoked and its tenant must exist. -> gw_authorize checks
 * the role the route needs (gw_route_role) and takes a token from the
 * tenant's bucket (requests_per_s, per node).
 *
 * The role matrix (docs/HTTP.md "Tenants, keys and roles"):
 *   viewer    every GET of its tenant (runs, events, approvals, tools, cluster)
 *   approver  + decide approvals
 *   operator  + create and cancel runs, register / enable / disable its tools
 *   admin     + create and revoke its tenant's keys, read its tenant
 *   cluster admin (the admin token): everything, every tenant; creates and
 *             updates tenants, the global tools, the state digest.
 *
 * Failure modes: no or malformed Authorization, an unknown key, a wrong
 * secret, a revoked key, a key of a deleted tenant: 401 `unauthorized` with
 * a message saying which; a role too low: 403 `forbidden`; over the rate:
 * 429 `rate_limited` with Retry-After. None of them changes any state but
 * the caller's bucket: the node keeps serving everyone else.
 *
 * Invariants: the secret is never stored or logged (only its hash is
 * compared); the comparison is constant-time in the secret; the cluster
 * admin is never rate-limited (it is how an operator gets in).
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <sodium.h>

#include "gateway/gw_int.h"

#define BUCKETS_MAX 4096

static const char *const role_names[] = { "viewer", "approver", "operator", "admin" };

const char *gw_role_name(int role)
{
    return role >= 0 && role <= GW_ROLE_ADMIN ? role_names[role] : "unknown";
}

int gw_role_parse(const char *s, int8_t *out)
{
    for (int i = 0; i <= GW_ROLE_ADMIN; i++) {
        if (strcmp(s, role_names[i]) == 0) {
            *out = (int8_t)i;
            return TR_OK;
        }
    }
    return TR_EINVAL;
}

/* ---- keys --------------------------------------------------------------------------- */

static bool is_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

void gw_key_new(char key_id[GW_KEY_ID_LEN + 1], char text[GW_KEY_TEXT], unsigned char hash[32])
{
    unsigned char id[GW_KEY_ID_LEN / 2], secret[GW_KEY_SECRET_LEN];
    randombytes_buf(id, sizeof id);
    randombytes_buf(secret, sizeof secret);
    sodium_bin2hex(key_id, GW_KEY_ID_LEN + 1, id, sizeof id);
    char sec[2 * GW_KEY_SECRET_LEN + 1];
    sodium_bin2hex(sec, sizeof sec, secret, sizeof secret);
    snprintf(text, GW_KEY_TEXT, "trk_%s_%s", key_id, sec);
    crypto_generichash(hash, 32, (const unsigned char *)text, strlen(text), NULL, 0);
    sodium_memzero(secret, sizeof secret);
    sodium_memzero(sec, sizeof sec);
}

int gw_key_parse(const char *text, size_t len, char key_id[GW_KEY_ID_LEN + 1], unsigned char hash[32])
{
    if (len != GW_KEY_TEXT - 1 || memcmp(text, "trk_", 4) != 0 || text[4 + GW_KEY_ID_LEN] != '_' ||
        !is_hex(text + 4, GW_KEY_ID_LEN) || !is_hex(text + 5 + GW_KEY_ID_LEN, 2 * GW_KEY_SECRET_LEN))
        return TR_EINVAL;
    memcpy(key_id, text + 4, GW_KEY_ID_LEN);
    key_id[GW_KEY_ID_LEN] = '\0';
    crypto_generichash(hash, 32, (const unsigned char *)text, len, NULL, 0);
    return TR_OK;
}

void gw_tenant_id_new(char out[GW_TENANT_ID_LEN + 1])
{
    unsigned char id[8];
    randombytes_buf(id, sizeof id);
    memcpy(out, "ten_", 4);
    sodium_bin2hex(out + 4, GW_TENANT_ID_LEN - 4 + 1, id, sizeof id);
}

bool gw_tenant_name_ok(const char *s, size_t len)
{
    if (len == 0 || len > GW_TENANT_NAME_MAX || strlen(s) != len)
        return false;
    if (strcmp(s, GW_DEFAULT_TENANT) == 0 || strncmp(s, "ten_", 4) == 0)
        return false; /* names must not shadow an id */
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        bool alnum = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9');
        if (!alnum && (i == 0 || (ch != '_' && ch != '-' && ch != '.')))
            return false;
    }
    return true;
}

/* ---- records ------------------------------------------------------------------------- */

int gw_load_tenant(struct tr_store *s, const char *id, void **buf, const struct troupe_state_Tenant **out)
{
    size_t len = 0, n = strlen(id);
    *buf = NULL;
    if (n == 0 || n > TR_IDEM_TENANT_MAX)
        return TR_ENOTFOUND;
    int rv = tr_store_get(s, NULL, TR_CF_TENANTS, id, n, buf, &len, NULL);
    if (rv != TR_OK)
        return rv;
    *out = troupe_state_Tenant_verify_as_root_opts(*buf, len, "TRE1", &tr_fb_default_limits, NULL);
    if (*out == NULL) {
        tr_log(TR_LOG_ERROR, "gateway: tenant record %s does not verify", id);
        tr_free(*buf);
        *buf = NULL;
        return TR_ECORRUPT;
    }
    return TR_OK;
}

int gw_find_tenant(struct tr_store *s, const char *ref, void **buf, const struct troupe_state_Tenant **out)
{
    int rv = gw_load_tenant(s, ref, buf, out);
    if (rv != TR_ENOTFOUND)
        return rv;
    struct tr_store_iter *it;
    if (tr_store_iter_open(s, NULL, TR_CF_TENANTS, NULL, 0, NULL, 0, &it, NULL) != TR_OK)
        return TR_EIO;
    const void *v;
    size_t vlen;
    size_t n = strlen(ref);
    rv = TR_ENOTFOUND;
    while (rv == TR_ENOTFOUND && tr_store_iter_next(it, NULL, NULL, &v, &vlen, NULL) > 0) {
        const struct troupe_state_Tenant *t =
            troupe_state_Tenant_verify_as_root_opts(v, vlen, "TRE1", &tr_fb_default_limits, NULL);
        struct tr_fb_str name = t != NULL ? troupe_state_Tenant_name(t) : (struct tr_fb_str){ 0 };
        if (name.ptr != NULL && name.len == n && memcmp(name.ptr, ref, n) == 0) {
            *buf = tr_malloc(vlen);
            memcpy(*buf, v, vlen);
            *out = troupe_state_Tenant_as_root(*buf);
            rv = TR_OK;
        }
    }
    tr_store_iter_close(it);
    return rv;
}

uint64_t gw_count_active_runs(struct tr_store *s, const char *tenant, uint64_t stop)
{
    struct tr_store_iter *it;
    if (tr_store_iter_open(s, NULL, TR_CF_RUNS, NULL, 0, NULL, 0, &it, NULL) != TR_OK)
        return stop; /* cannot tell: as if at the limit */
    const void *v;
    size_t vlen;
    uint64_t n = 0;
    struct tr_fb_str want = { .ptr = tenant, .len = strlen(tenant) };
    while (n < stop && tr_store_iter_next(it, NULL, NULL, &v, &vlen, NULL) > 0) {
        const struct troupe_state_Run *r = troupe_state_Run_verify_as_root(v, vlen, NULL);
        if (r == NULL || gw_run_terminal(troupe_state_Run_status(r)))
            continue;
        struct tr_fb_str t = troupe_state_Run_tenant(r);
        if (t.len == want.len && memcmp(t.ptr, want.ptr, t.len) == 0)
            n++;
    }
    tr_store_iter_close(it);
    return n;
}

bool gw_tenant_visible(const struct gw_principal *p, struct tr_fb_str tenant)
{
    if (p->cluster_admin)
        return true;
    return tenant.ptr != NULL && tenant.len == strlen(p->tenant) && memcmp(tenant.ptr, p->tenant, tenant.len) == 0;
}

/* ---- authentication ------------------------------------------------------------------- */

static void cluster_admin(struct gw_principal *p)
{
    memset(p, 0, sizeof *p);
    snprintf(p->tenant, sizeof p->tenant, "%s", GW_DEFAULT_TENANT);
    snprintf(p->name, sizeof p->name, "admin");
    p->role = GW_ROLE_ADMIN;
    p->cluster_admin = true;
}

/* The key record of key_id: 0 and its fields, or -1 when absent or corrupt. */
static int key_load(struct tr_store *s, const char *key_id, unsigned char hash[32], char *tenant, size_t tcap,
                    int8_t *role, bool *revoked)
{
    char k[4 + GW_KEY_ID_LEN + 1];
    int n = snprintf(k, sizeof k, "key/%s", key_id);
    void *buf = NULL;
    size_t len = 0;
    if (tr_store_get(s, NULL, TR_CF_CREDENTIALS, k, (size_t)n, &buf, &len, NULL) != TR_OK)
        return -1;
    const struct troupe_state_Key *rec = troupe_state_Key_verify_as_root_opts(buf, len, "TRK1", &tr_fb_default_limits, NULL);
    struct tr_fb_vec h = rec != NULL ? troupe_state_Key_key_hash(rec) : (struct tr_fb_vec){ 0 };
    struct tr_fb_str t = rec != NULL ? troupe_state_Key_tenant_id(rec) : (struct tr_fb_str){ 0 };
    int rv = -1;
    if (rec != NULL && h.len == 32 && t.ptr != NULL && t.len > 0 && t.len < tcap) {
        memcpy(hash, h.data, 32);
        memcpy(tenant, t.ptr, t.len);
        tenant[t.len] = '\0';
        *role = troupe_state_Key_role(rec);
        *revoked = troupe_state_Key_revoked(rec);
        rv = 0;
    } else if (rec == NULL) {
        tr_log(TR_LOG_ERROR, "gateway: key record %s does not verify", key_id);
    }
    tr_free(buf);
    return rv;
}

int gw_authenticate(struct tr_gateway *g, const char *h, struct gw_principal *p, struct gw_error *e)
{
    cluster_admin(p);
    if (h == NULL) {
        if (!g->auth)
            return 0; /* no admin token configured: an open node */
        return gw_fail(e, 401, "unauthorized", "missing Authorization: Bearer <api key>");
    }
    if (g->auth) {
        unsigned char got[32];
        crypto_generichash(got, sizeof got, (const unsigned char *)h, strlen(h), NULL, 0);
        if (sodium_memcmp(got, g->token_hash, sizeof got) == 0)
            return 0;
    }
    if (strncasecmp(h, "Bearer ", 7) != 0)
        return gw_fail(e, 401, "unauthorized", "Authorization: expected \"Bearer <api key>\"");
    const char *key = h + 7;
    char key_id[GW_KEY_ID_LEN + 1];
    unsigned char want[32], got[32];
    if (gw_key_parse(key, strlen(key), key_id, got) != TR_OK)
        return gw_fail(e, 401, "unauthorized", "invalid API key");
    char tenant[TR_IDEM_TENANT_MAX + 1];
    int8_t role;
    bool revoked;
    if (key_load(g->store, key_id, want, tenant, sizeof tenant, &role, &revoked) != 0) {
        randombytes_buf(want, sizeof want); /* the same work as a wrong secret */
        if (sodium_memcmp(got, want, sizeof got) == 0)
            tr_log(TR_LOG_WARN, "gateway: a random hash matched"); /* never */
        return gw_fail(e, 401, "unauthorized", "invalid API key");
    }
    if (sodium_memcmp(got, want, sizeof got) != 0)
        return gw_fail(e, 401, "unauthorized", "invalid API key");
    if (revoked)
        return gw_fail(e, 401, "unauthorized", "this API key was revoked");
    if (role < GW_ROLE_VIEWER || role > GW_ROLE_ADMIN)
        return gw_fail(e, 401, "unauthorized", "this API key has an unknown role");
    if (strcmp(tenant, GW_DEFAULT_TENANT) != 0) {
        void *buf;
        const struct troupe_state_Tenant *t;
        int rv = gw_load_tenant(g->store, tenant, &buf, &t);
        tr_free(buf);
        if (rv != TR_OK)
            return gw_fail(e, 401, "unauthorized", "the tenant of this API key does not exist");
    }
    memset(p, 0, sizeof *p);
    snprintf(p->tenant, sizeof p->tenant, "%s", tenant);
    snprintf(p->name, sizeof p->name, "key:%s", key_id);
    p->role = (enum gw_role)role;
    return 0;
}

/* ---- authorization -------------------------------------------------------------------- */

#define CLUSTER_ADMIN_ONLY (GW_ROLE_ADMIN + 1)

int gw_route_role(enum gw_route_id r, bool post)
{
    switch (r) {
    case GW_R_NONE:
    case GW_R_HEALTHZ:
    case GW_R_METRICS:
    case GW_R_WEB_INDEX:
    case GW_R_WEB:
        return -1;
    case GW_R_DIGEST:
    case GW_R_CLUSTER_NODES:
    case GW_R_CLUSTER_NODE_REMOVE:
    case GW_R_CLUSTER_NODE_DRAIN:
    case GW_R_CLUSTER_TRANSFER:
    case GW_R_CLUSTER_CHECKPOINT:
        return CLUSTER_ADMIN_ONLY;
    case GW_R_APPROVAL:
        return GW_ROLE_APPROVER;
    case GW_R_RUN_CANCEL:
    case GW_R_TOOL_DISABLE:
    case GW_R_TOOL_ENABLE:
        return GW_ROLE_OPERATOR;
    case GW_R_RUNS:
    case GW_R_TOOLS:
        return post ? GW_ROLE_OPERATOR : GW_ROLE_VIEWER;
    case GW_R_TENANTS:
    case GW_R_TENANT:
        return post ? CLUSTER_ADMIN_ONLY : GW_ROLE_ADMIN;
    case GW_R_KEYS:
    case GW_R_KEY_REVOKE:
        return GW_ROLE_ADMIN;
    case GW_R_RUN:
    case GW_R_RUN_EVENTS:
    case GW_R_RUN_WS:
    case GW_R_APPROVALS:
    case GW_R_TOOL:
    case GW_R_CLUSTER:
        return GW_ROLE_VIEWER;
    default:
        /* Any other route (cluster management ...): reads for every role,
         * writes for the cluster admin only, unless listed above. */
        return post ? CLUSTER_ADMIN_ONLY : GW_ROLE_VIEWER;
    }
}

struct bucket {
    char tenant[TR_IDEM_TENANT_MAX + 1];
    double tokens;
    uint64_t at_ms;
};

struct gw_limits {
    struct bucket *b;
    size_t n, cap;
};

void gw_limits_free(struct tr_gateway *g)
{
    if (g->limits == NULL)
        return;
    tr_free(g->limits->b);
    tr_free(g->limits);
    g->limits = NULL;
}

/* Take a token from tenant's bucket (rps tokens a second, at most rps held).
 * 0, or the seconds until one is there. */
static uint32_t take_token(struct tr_gateway *g, const char *tenant, uint32_t rps)
{
    struct gw_limits *l = g->limits;
    if (l == NULL)
        l = g->limits = tr_calloc(1, sizeof *l);
    uint64_t now = uv_now(g->loop);
    struct bucket *b = NULL;
    for (size_t i = 0; i < l->n && b == NULL; i++)
        if (strcmp(l->b[i].tenant, tenant) == 0)
            b = &l->b[i];
    if (b == NULL) {
        if (l->n == BUCKETS_MAX) {
            /* Reuse the bucket idle longest: a full one after a second. */
            size_t old = 0;
            for (size_t i = 1; i < l->n; i++)
                if (l->b[i].at_ms < l->b[old].at_ms)
                    old = i;
            b = &l->b[old];
        } else {
            if (l->n == l->cap) {
                l->cap = l->cap ? 2 * l->cap : 16;
                l->b = tr_realloc(l->b, l->cap * sizeof *l->b);
            }
            b = &l->b[l->n++];
        }
        snprintf(b->tenant, sizeof b->tenant, "%s", tenant);
        b->tokens = rps;
        b->at_ms = now;
    }
    if (now > b->at_ms) {
        b->tokens += (double)(now - b->at_ms) * rps / 1000.0;
        if (b->tokens > rps)
            b->tokens = rps;
        b->at_ms = now;
    }
    if (b->tokens >= 1.0) {
        b->tokens -= 1.0;
        return 0;
    }
    double wait_s = (1.0 - b->tokens) / rps;
    uint32_t s = (uint32_t)wait_s;
    return s < wait_s ? s + 1 : (s > 0 ? s : 1);
}

int gw_authorize(struct gw_call *c, struct gw_error *e)
{
    const struct gw_principal *p = &c->who;
    bool post = c->req != NULL && strcmp(c->req->method, "POST") == 0;
    int need = gw_route_role(c->m.route, post);
    if (need < 0 || p->cluster_admin)
        return 0;
    if (need == CLUSTER_ADMIN_ONLY)
        return gw_fail(e, 403, "forbidden", "%s %s needs the cluster admin token", post ? "POST" : "GET",
                       gw_route_name(c->m.route));
    if ((int)p->role < need)
        return gw_fail(e, 403, "forbidden", "a %s key may not do this; it needs the %s role", gw_role_name(p->role),
                       gw_role_name(need));
    /* The tenant's request rate. */
    void *buf;
    const struct troupe_state_Tenant *t;
    if (gw_load_tenant(c->g->store, p->tenant, &buf, &t) == TR_OK) {
        const struct troupe_cmd_TenantLimits *l = troupe_state_Tenant_limits(t);
        uint32_t rps = l != NULL ? troupe_cmd_TenantLimits_requests_per_s(l) : 0;
        tr_free(buf);
        uint32_t wait = rps > 0 ? take_token(c->g, p->tenant, rps) : 0;
        if (wait > 0) {
            c->retry_after_s = wait;
            return gw_fail(e, 429, "rate_limited", "tenant %s is over its %u requests per second; retry after %u s",
                           p->tenant, rps, wait);
        }
    }
    return 0;
}
