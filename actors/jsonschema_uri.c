/* URI references for $id and $ref (RFC 3986 section 5). */
#include <ctype.h>
#include <string.h>

#include "actors/jsonschema_int.h"

struct uri {
    const char *s;
    size_t scheme_len;         /* 0 = none */
    const char *auth;          /* NULL = none */
    size_t auth_len;
    const char *path;
    size_t path_len;
    const char *query;         /* NULL = none; points past '?' */
    size_t query_len;
    const char *frag;          /* NULL = none; points past '#' */
    size_t frag_len;
};

static void uri_parse(const char *s, struct uri *u)
{
    memset(u, 0, sizeof *u);
    u->s = s;
    size_t len = strlen(s);
    const char *end = s + len;
    const char *hash = memchr(s, '#', len);
    if (hash) {
        u->frag = hash + 1;
        u->frag_len = (size_t)(end - hash - 1);
        end = hash;
    }
    const char *q = memchr(s, '?', (size_t)(end - s));
    if (q) {
        u->query = q + 1;
        u->query_len = (size_t)(end - q - 1);
        end = q;
    }
    const char *p = s;
    size_t k = 0;
    while (p + k < end && (isalnum((unsigned char)s[k]) || s[k] == '+' || s[k] == '-' || s[k] == '.')) {
        k++;
    }
    if (k > 0 && isalpha((unsigned char)s[0]) && p + k < end && s[k] == ':') {
        u->scheme_len = k;
        p = s + k + 1;
    }
    if (end - p >= 2 && p[0] == '/' && p[1] == '/') {
        p += 2;
        const char *slash = memchr(p, '/', (size_t)(end - p));
        const char *aend = slash ? slash : end;
        u->auth = p;
        u->auth_len = (size_t)(aend - p);
        p = aend;
    }
    u->path = p;
    u->path_len = (size_t)(end - p);
}

/* RFC 3986 5.2.4, appending the result to out. */
static void remove_dots(const char *in, size_t len, struct tr_buf *out)
{
    size_t start = out->len;
    size_t i = 0;
    while (i < len) {
        const char *p = in + i;
        size_t rest = len - i;
        if (rest >= 3 && memcmp(p, "../", 3) == 0) {
            i += 3;
        } else if (rest >= 2 && memcmp(p, "./", 2) == 0) {
            i += 2;
        } else if ((rest >= 3 && memcmp(p, "/./", 3) == 0)) {
            i += 2;
        } else if (rest == 2 && memcmp(p, "/.", 2) == 0) {
            i += 1;
            tr_buf_add(out, "/", 1);
            break;
        } else if ((rest >= 4 && memcmp(p, "/../", 4) == 0) || (rest == 3 && memcmp(p, "/..", 3) == 0)) {
            i += 3;
            while (out->len > start && out->p[out->len - 1] != '/') {
                out->len--;
            }
            if (out->len > start) {
                out->len--;
            }
            out->p[out->len] = '\0';
            if (rest == 3) {
                tr_buf_add(out, "/", 1);
                break;
            }
        } else if ((rest == 1 && p[0] == '.') || (rest == 2 && memcmp(p, "..", 2) == 0)) {
            break;
        } else {
            size_t k = 1;
            while (k < rest && p[k] != '/') {
                k++;
            }
            if (p[0] != '/') {
                k = 0;
                while (k < rest && p[k] != '/') {
                    k++;
                }
            }
            tr_buf_add(out, p, k);
            i += k;
        }
    }
    if (!out->p) {
        tr_buf_add(out, "", 0);
    }
}

/* Resolve ref against an absolute base; a new string. */
char *js_uri_resolve(const char *base, const char *ref)
{
    struct uri b, r;
    uri_parse(base, &b);
    uri_parse(ref, &r);
    struct tr_buf out = {0};
    const struct uri *query_from;
    tr_buf_add(&out, r.scheme_len ? r.s : b.s, r.scheme_len ? r.scheme_len : b.scheme_len);
    tr_buf_add(&out, ":", 1);
    if (r.scheme_len || r.auth) {
        query_from = &r;
        if (r.auth) {
            tr_buf_add(&out, "//", 2);
            tr_buf_add(&out, r.auth, r.auth_len);
        }
        remove_dots(r.path, r.path_len, &out);
    } else {
        if (b.auth) {
            tr_buf_add(&out, "//", 2);
            tr_buf_add(&out, b.auth, b.auth_len);
        }
        if (r.path_len == 0) {
            tr_buf_add(&out, b.path, b.path_len);
            query_from = r.query ? &r : &b;
        } else {
            query_from = &r;
            if (r.path[0] == '/') {
                remove_dots(r.path, r.path_len, &out);
            } else {
                struct tr_buf merged = {0};
                if (b.auth && b.path_len == 0) {
                    tr_buf_add(&merged, "/", 1);
                } else {
                    const char *slash = NULL;
                    for (size_t i = b.path_len; i > 0; i--) {
                        if (b.path[i - 1] == '/') {
                            slash = b.path + i - 1;
                            break;
                        }
                    }
                    if (slash) {
                        tr_buf_add(&merged, b.path, (size_t)(slash - b.path) + 1);
                    }
                }
                tr_buf_add(&merged, r.path, r.path_len);
                remove_dots(merged.p, merged.len, &out);
                tr_free(merged.p);
            }
        }
    }
    if (query_from->query) {
        tr_buf_add(&out, "?", 1);
        tr_buf_add(&out, query_from->query, query_from->query_len);
    }
    if (r.frag) {
        tr_buf_add(&out, "#", 1);
        tr_buf_add(&out, r.frag, r.frag_len);
    }
    return out.p;
}

/* The URI without its fragment; a new string. */
char *js_uri_strip_frag(const char *u)
{
    const char *h = strchr(u, '#');
    return h ? tr_strndup(u, (size_t)(h - u)) : tr_strdup(u);
}

static int hexv(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

/* Percent-decode s (a fragment); a new string. */
char *js_pct_decode(const char *s, size_t *len_out)
{
    size_t n = strlen(s);
    char *out = tr_malloc(n + 1);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%' && i + 2 < n && hexv(s[i + 1]) >= 0 && hexv(s[i + 2]) >= 0) {
            out[k++] = (char)(hexv(s[i + 1]) * 16 + hexv(s[i + 2]));
            i += 2;
        } else {
            out[k++] = s[i];
        }
    }
    out[k] = '\0';
    *len_out = k;
    return out;
}
