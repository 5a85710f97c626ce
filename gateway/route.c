/* Routing, query strings, cursors, times and error bodies: the pure edges of
 * the HTTP API. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "gateway/gw_int.h"

int gw_fail(struct gw_error *e, int status, const char *code, const char *fmt, ...)
{
    e->status = status;
    snprintf(e->code, sizeof e->code, "%s", code);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return -1;
}

json_t *gw_error_json(const char *code, const char *msg)
{
    return json_pack("{s:{s:s, s:o}}", "error", "code", code, "message", gw_json_stringn(msg, strlen(msg)));
}

/* ---- routes ----------------------------------------------------------------------- */

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Percent-decode src[0..n) into out (cap bytes with the NUL); plus: '+' is a
 * space. Refuses NUL bytes, bad escapes and overflow. Returns the length or -1. */
static long pct_decode(const char *src, size_t n, char *out, size_t cap, bool plus)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = src[i];
        if (ch == '%') {
            if (i + 2 >= n)
                return -1;
            int hi = hexval(src[i + 1]), lo = hexval(src[i + 2]);
            if (hi < 0 || lo < 0)
                return -1;
            ch = (char)(hi << 4 | lo);
            i += 2;
        } else if (ch == '+' && plus) {
            ch = ' ';
        }
        if (ch == '\0' || o + 1 >= cap)
            return -1;
        out[o++] = ch;
    }
    out[o] = '\0';
    return (long)o;
}

struct route_def {
    enum gw_route_id id;
    const char *prefix;   /* path up to the parameter (or the whole path) */
    const char *suffix;   /* after the parameter; NULL: no parameter */
    const char *allow;
};

/* Order matters only among routes sharing a prefix: longer suffixes first. */
static const struct route_def routes[] = {
    { GW_R_HEALTHZ, "/healthz", NULL, "GET" },
    { GW_R_METRICS, "/metrics", NULL, "GET" },
    { GW_R_DIGEST, "/v1/cluster/digest", NULL, "GET" },
    { GW_R_CLUSTER_NODES, "/v1/cluster/nodes", NULL, "POST" },
    { GW_R_CLUSTER_NODE_REMOVE, "/v1/cluster/nodes/", "/remove", "POST" },
    { GW_R_CLUSTER_NODE_DRAIN, "/v1/cluster/nodes/", "/drain", "POST" },
    { GW_R_CLUSTER_TRANSFER, "/v1/cluster/transfer", NULL, "POST" },
    { GW_R_CLUSTER_CHECKPOINT, "/v1/cluster/checkpoint", NULL, "POST" },
    { GW_R_CLUSTER, "/v1/cluster", NULL, "GET" },
    { GW_R_RUNS, "/v1/runs", NULL, "GET, POST" },
    { GW_R_RUN_EVENTS, "/v1/runs/", "/events", "GET" },
    { GW_R_RUN_CANCEL, "/v1/runs/", "/cancel", "POST" },
    { GW_R_RUN_WS, "/v1/runs/", "/ws", "GET" },
    { GW_R_RUN, "/v1/runs/", "", "GET" },
    { GW_R_APPROVALS, "/v1/approvals", NULL, "GET" },
    { GW_R_APPROVAL, "/v1/approvals/", "", "POST" },
    { GW_R_TOOLS, "/v1/tools", NULL, "GET, POST" },
    { GW_R_TOOL_DISABLE, "/v1/tools/", "/disable", "POST" },
    { GW_R_TOOL_ENABLE, "/v1/tools/", "/enable", "POST" },
    { GW_R_TOOL, "/v1/tools/", "", "GET" },
    { GW_R_TENANTS, "/v1/tenants", NULL, "GET, POST" },
    { GW_R_TENANT, "/v1/tenants/", "", "GET, POST" },
    { GW_R_KEYS, "/v1/keys", NULL, "POST" },
    { GW_R_KEY_REVOKE, "/v1/keys/", "/revoke", "POST" },
    { GW_R_WEB_INDEX, "/", NULL, "GET" },
    { GW_R_WEB, "/ui/", "", "GET" },
};

static const char *const route_names[GW_R_COUNT] = {
    [GW_R_NONE] = "none",           [GW_R_HEALTHZ] = "healthz",
    [GW_R_METRICS] = "metrics",     [GW_R_CLUSTER] = "cluster", [GW_R_DIGEST] = "digest",
    [GW_R_RUNS] = "runs",           [GW_R_RUN] = "run",
    [GW_R_RUN_EVENTS] = "run_events", [GW_R_RUN_CANCEL] = "run_cancel",
    [GW_R_RUN_WS] = "run_ws",       [GW_R_APPROVALS] = "approvals",
    [GW_R_APPROVAL] = "approval",   [GW_R_TOOLS] = "tools",
    [GW_R_TOOL] = "tool",           [GW_R_TOOL_DISABLE] = "tool_disable",
    [GW_R_TOOL_ENABLE] = "tool_enable", [GW_R_TENANTS] = "tenants",
    [GW_R_KEYS] = "keys",           [GW_R_WEB_INDEX] = "web_index", [GW_R_WEB] = "web_file",
    [GW_R_TENANT] = "tenant",       [GW_R_KEY_REVOKE] = "key_revoke",
    [GW_R_CLUSTER_NODES] = "cluster_nodes", [GW_R_CLUSTER_NODE_REMOVE] = "cluster_node_remove",
    [GW_R_CLUSTER_NODE_DRAIN] = "cluster_node_drain", [GW_R_CLUSTER_TRANSFER] = "cluster_transfer",
    [GW_R_CLUSTER_CHECKPOINT] = "cluster_checkpoint",
};

const char *gw_route_name(enum gw_route_id r)
{
    return (unsigned)r < GW_R_COUNT ? route_names[r] : "none";
}

static bool method_allowed(const char *allow, const char *method)
{
    size_t n = strlen(method);
    if (n == 0)
        return false;
    for (const char *p = allow; (p = strstr(p, method)) != NULL; p += n) {
        bool start = p == allow || p[-1] == ' ';
        bool end = p[n] == '\0' || p[n] == ',';
        if (start && end)
            return true;
    }
    return false;
}

int gw_route(const char *method, const char *path, struct gw_match *m)
{
    memset(m, 0, sizeof *m);
    size_t plen = strlen(path);
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        const struct route_def *r = &routes[i];
        size_t pre = strlen(r->prefix);
        if (plen < pre || memcmp(path, r->prefix, pre) != 0)
            continue;
        if (r->suffix == NULL) {
            if (plen != pre)
                continue;
        } else {
            size_t suf = strlen(r->suffix);
            if (plen < pre + suf + 1 || memcmp(path + plen - suf, r->suffix, suf) != 0)
                continue;
            const char *param = path + pre;
            size_t n = plen - pre - suf;
            if (memchr(param, '/', n) != NULL)
                continue; /* a deeper path: not this route */
            long dl = pct_decode(param, n, m->param, sizeof m->param, false);
            if (dl <= 0 || memchr(m->param, '/', (size_t)dl) != NULL)
                return 404;
            m->param_len = (size_t)dl;
        }
        m->route = r->id;
        m->allow = r->allow;
        return method_allowed(r->allow, method) ? 200 : 405;
    }
    return 404;
}

/* ---- query strings ------------------------------------------------------------------ */

int gw_query_get(const char *query, const char *name, char *out, size_t cap)
{
    size_t nlen = strlen(name);
    const char *p = query;
    while (p != NULL && *p != '\0') {
        const char *amp = strchr(p, '&');
        size_t plen = amp != NULL ? (size_t)(amp - p) : strlen(p);
        const char *eq = memchr(p, '=', plen);
        size_t klen = eq != NULL ? (size_t)(eq - p) : plen;
        if (klen == nlen && memcmp(p, name, nlen) == 0) {
            const char *v = eq != NULL ? eq + 1 : p + plen;
            size_t vlen = eq != NULL ? plen - klen - 1 : 0;
            return pct_decode(v, vlen, out, cap, true) < 0 ? -1 : 1;
        }
        p = amp != NULL ? amp + 1 : NULL;
    }
    return 0;
}

int gw_parse_u64(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    if (s == NULL || *s == '\0')
        return TR_EINVAL;
    for (const char *p = s; *p != '\0'; p++) {
        if (*p < '0' || *p > '9')
            return TR_EINVAL;
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            return TR_EINVAL;
        v = v * 10 + d;
    }
    *out = v;
    return TR_OK;
}

/* ---- cursors ------------------------------------------------------------------------ */

#define CURSOR_TAG "c1"

int gw_cursor_encode(const void *key, size_t len, char *out, size_t cap)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *k = key;
    size_t tag = strlen(CURSOR_TAG);
    if (len == 0 || tag + 2 * len + 1 > cap)
        return TR_ETOOBIG;
    memcpy(out, CURSOR_TAG, tag);
    for (size_t i = 0; i < len; i++) {
        out[tag + 2 * i] = hex[k[i] >> 4];
        out[tag + 2 * i + 1] = hex[k[i] & 15];
    }
    out[tag + 2 * len] = '\0';
    return TR_OK;
}

int gw_cursor_decode(const char *s, void *key, size_t cap, size_t *len)
{
    size_t tag = strlen(CURSOR_TAG);
    size_t n = strlen(s);
    if (n <= tag || memcmp(s, CURSOR_TAG, tag) != 0 || (n - tag) % 2 != 0 || (n - tag) / 2 > cap)
        return TR_EINVAL;
    unsigned char *k = key;
    for (size_t i = 0; i < (n - tag) / 2; i++) {
        int hi = hexval(s[tag + 2 * i]), lo = hexval(s[tag + 2 * i + 1]);
        if (hi < 0 || lo < 0 || (s[tag + 2 * i] >= 'A' && s[tag + 2 * i] <= 'F') ||
            (s[tag + 2 * i + 1] >= 'A' && s[tag + 2 * i + 1] <= 'F'))
            return TR_EINVAL;
        k[i] = (unsigned char)(hi << 4 | lo);
    }
    *len = (n - tag) / 2;
    return TR_OK;
}

/* ---- time --------------------------------------------------------------------------- */

void gw_time_text(int64_t us, char out[GW_TIME_TEXT])
{
    int64_t secs = us / 1000000, frac = us % 1000000;
    if (frac < 0) {
        frac += 1000000;
        secs -= 1;
    }
    time_t t = (time_t)secs;
    struct tm tm;
    if (gmtime_r(&t, &tm) == NULL) {
        snprintf(out, GW_TIME_TEXT, "1970-01-01T00:00:00.000000Z");
        return;
    }
    snprintf(out, GW_TIME_TEXT, "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)frac);
}
