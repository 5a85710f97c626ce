/* The http tool's pure parts: its config, the host a URL names, and the
 * allowlist decision. Everything here reads only its arguments; the executor
 * (tool.c) makes the request. See tool.h for the decisions. */
#include <ctype.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "actors/tool.h"

/* Characters a host name or IP literal may hold (after lower-casing).
 * Bytes >= 0x80 pass: internationalised names are compared as given. */
static int host_char_ok(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_' ||
           c == ':' || c >= 0x80;
}

int tool_host_normalize(const char *in, char *out, size_t cap)
{
    size_t n;
    if (!in || !out || cap == 0)
        return TR_EINVAL;
    n = strlen(in);
    if (n >= 2 && in[0] == '[' && in[n - 1] == ']') { /* IPv6 literal */
        in++;
        n -= 2;
    }
    const char *zone = memchr(in, '%', n);
    if (zone && memchr(in, ':', n))
        n = (size_t)(zone - in);
    if (n > 0 && in[n - 1] == '.')
        n--;
    if (n == 0 || n >= cap)
        return TR_EINVAL;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)tolower((unsigned char)in[i]);
        if (!host_char_ok(c))
            return TR_EINVAL;
        out[i] = (char)c;
    }
    out[n] = '\0';
    return 0;
}

int tool_url_host(const char *url, char *host, size_t cap, char **norm_url, struct tr_err *err)
{
    CURLU *u;
    CURLUcode uc;
    char *scheme = NULL, *h = NULL, *full = NULL;
    int rv = TR_EINVAL;

    if (norm_url)
        *norm_url = NULL;
    if (!url || !*url)
        return tr_err_set(err, TR_EINVAL, "empty url");
    if (strlen(url) > TOOL_MAX_URL)
        return tr_err_set(err, TR_EINVAL, "url longer than %u bytes", TOOL_MAX_URL);
    u = curl_url();
    if (!u)
        return tr_err_set(err, TR_ENOMEM, "curl_url: out of memory");
    uc = curl_url_set(u, CURLUPART_URL, url, 0);
    if (uc != CURLUE_OK) {
        tr_err_set(err, TR_EINVAL, "url %s: %s", url, curl_url_strerror(uc));
        goto out;
    }
    if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        (strcasecmp(scheme, "http") != 0 && strcasecmp(scheme, "https") != 0)) {
        tr_err_set(err, TR_EINVAL, "url %s: scheme must be http or https", url);
        goto out;
    }
    /* The host is read from the URL as curl writes it back, which is the
     * URL the call uses: a host written percent-encoded ("%35") comes back
     * decoded, and only then does curl read it as an address ("0.0.0.5"). */
    uc = curl_url_get(u, CURLUPART_URL, &full, 0);
    if (uc == CURLUE_OK)
        uc = curl_url_set(u, CURLUPART_URL, full, 0);
    if (uc != CURLUE_OK) {
        tr_err_set(err, TR_EINVAL, "url %s: %s", url, curl_url_strerror(uc));
        goto out;
    }
    uc = curl_url_get(u, CURLUPART_HOST, &h, 0);
    if (uc != CURLUE_OK) {
        tr_err_set(err, TR_EINVAL, "url %s: no host: %s", url, curl_url_strerror(uc));
        goto out;
    }
    if (tool_host_normalize(h, host, cap) != 0) {
        tr_err_set(err, TR_EINVAL, "url %s: bad host", url);
        goto out;
    }
    if (norm_url)
        *norm_url = tr_strdup(full);
    rv = 0;
out:
    curl_free(full);
    curl_free(h);
    curl_free(scheme);
    curl_url_cleanup(u);
    return rv;
}

int tool_host_allowed(const char *host, char *const *allow, size_t n)
{
    char norm[TOOL_MAX_HOST];
    if (tool_host_normalize(host, norm, sizeof(norm)) != 0)
        return TOOL_HTTP_REFUSED;
    for (size_t i = 0; i < n; i++)
        if (allow[i] && strcmp(norm, allow[i]) == 0)
            return TOOL_HTTP_ALLOWED;
    return TOOL_HTTP_REFUSED;
}

/* ------------------------------------------------------------------------ */
/* Config.                                                                    */

/* RFC 9110 token characters. */
static int token_ok(const char *s)
{
    if (!*s)
        return 0;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (!(isalnum(c) || strchr("!#$%&'*+-.^_`|~", c)))
            return 0;
    }
    return 1;
}

static int value_ok(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\r' || c == '\n' || c == '\0' || (c < 0x20 && c != '\t') || c == 0x7f)
            return 0;
    }
    return 1;
}

/* Headers the executor owns: a tool may not set or override them. */
static const char *const reserved_headers[] = {
    "idempotency-key", "content-type", "content-length", "host", "transfer-encoding",
    "connection", "expect", "te", "upgrade", "keep-alive", "proxy-connection",
};

static int header_reserved(const char *name)
{
    for (size_t i = 0; i < sizeof(reserved_headers) / sizeof(reserved_headers[0]); i++)
        if (strcasecmp(name, reserved_headers[i]) == 0)
            return 1;
    return 0;
}

static int parse_method(const json_t *v, struct tool_http_cfg *cfg, struct tr_err *err)
{
    static const char *const methods[] = {"POST", "PUT", "PATCH", "DELETE"};
    if (!v) {
        memcpy(cfg->method, "POST", 5);
        return 0;
    }
    if (!json_is_string(v))
        return tr_err_set(err, TR_EINVAL, "config.method must be a string");
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        if (strcasecmp(json_string_value(v), methods[i]) == 0) {
            memcpy(cfg->method, methods[i], strlen(methods[i]) + 1);
            return 0;
        }
    }
    return tr_err_set(err, TR_EINVAL, "config.method must be POST, PUT, PATCH or DELETE");
}

static int parse_headers(const json_t *v, struct tool_http_cfg *cfg, struct tr_err *err)
{
    const char *name;
    json_t *val;
    if (!v)
        return 0;
    if (!json_is_object(v))
        return tr_err_set(err, TR_EINVAL, "config.headers must be an object of strings");
    if (json_object_size(v) > TOOL_MAX_HEADERS)
        return tr_err_set(err, TR_EINVAL, "config.headers: more than %d headers", TOOL_MAX_HEADERS);
    cfg->headers = tr_calloc(json_object_size(v) + 1, sizeof(char *));
    json_object_foreach((json_t *)v, name, val) {
        if (!token_ok(name))
            return tr_err_set(err, TR_EINVAL, "config.headers: bad header name");
        if (header_reserved(name))
            return tr_err_set(err, TR_EINVAL, "config.headers: %s is set by the executor", name);
        if (!json_is_string(val))
            return tr_err_set(err, TR_EINVAL, "config.headers.%s must be a string", name);
        size_t nl = strlen(name), vl = json_string_length(val);
        if (nl + vl + 2 > TOOL_MAX_HEADER_LINE)
            return tr_err_set(err, TR_EINVAL, "config.headers.%s is too long", name);
        if (!value_ok(json_string_value(val), vl))
            return tr_err_set(err, TR_EINVAL, "config.headers.%s: control characters", name);
        char *line = tr_malloc(nl + vl + 3);
        memcpy(line, name, nl);
        memcpy(line + nl, ": ", 2);
        memcpy(line + nl + 2, json_string_value(val), vl);
        line[nl + vl + 2] = '\0';
        cfg->headers[cfg->n_headers++] = line;
    }
    return 0;
}

static int parse_allow(const json_t *v, struct tool_http_cfg *cfg, struct tr_err *err)
{
    size_t i;
    json_t *e;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_array(v))
        return tr_err_set(err, TR_EINVAL, "config.allow must be an array of host names");
    if (json_array_size(v) > TOOL_MAX_ALLOW)
        return tr_err_set(err, TR_EINVAL, "config.allow: more than %d hosts", TOOL_MAX_ALLOW);
    cfg->allow = tr_calloc(json_array_size(v) + 1, sizeof(char *));
    json_array_foreach(v, i, e) {
        char norm[TOOL_MAX_HOST];
        if (!json_is_string(e))
            return tr_err_set(err, TR_EINVAL, "config.allow[%zu] must be a string", i);
        if (strlen(json_string_value(e)) != json_string_length(e) ||
            tool_host_normalize(json_string_value(e), norm, sizeof(norm)) != 0)
            return tr_err_set(err, TR_EINVAL, "config.allow[%zu] is not a host name", i);
        cfg->allow[cfg->n_allow++] = tr_strdup(norm);
    }
    return 0;
}

int tool_http_cfg_parse(const json_t *config, struct tool_http_cfg *cfg, struct tr_err *err)
{
    const json_t *url;
    int rv;

    memset(cfg, 0, sizeof(*cfg));
    if (!json_is_object(config))
        return tr_err_set(err, TR_EINVAL, "http tool config must be an object");
    url = json_object_get(config, "url");
    if (!json_is_string(url))
        return tr_err_set(err, TR_EINVAL, "config.url must be a string");
    if (strlen(json_string_value(url)) != json_string_length(url))
        return tr_err_set(err, TR_EINVAL, "config.url holds a NUL byte");
    rv = tool_url_host(json_string_value(url), cfg->host, sizeof(cfg->host), &cfg->url, err);
    if (rv == 0)
        rv = parse_method(json_object_get(config, "method"), cfg, err);
    if (rv == 0)
        rv = parse_headers(json_object_get(config, "headers"), cfg, err);
    if (rv == 0)
        rv = parse_allow(json_object_get(config, "allow"), cfg, err);
    if (rv != 0) {
        tr_err_wrap(err, "http tool config");
        tool_http_cfg_free(cfg);
    }
    return rv;
}

void tool_http_cfg_free(struct tool_http_cfg *cfg)
{
    for (size_t i = 0; i < cfg->n_headers; i++)
        tr_free(cfg->headers[i]);
    for (size_t i = 0; i < cfg->n_allow; i++)
        tr_free(cfg->allow[i]);
    tr_free(cfg->headers);
    tr_free(cfg->allow);
    tr_free(cfg->url);
    memset(cfg, 0, sizeof(*cfg));
}

int tool_http_decide(const struct tool_http_cfg *cfg, const char *const *node_allow, size_t n_node_allow,
                     struct tr_err *err)
{
    if (cfg->n_allow > 0) {
        /* Both sides are normalised already; normalising the host again
         * would drop a second trailing dot ("a.." -> "a." -> "a"). */
        for (size_t i = 0; i < cfg->n_allow; i++)
            if (strcmp(cfg->host, cfg->allow[i]) == 0)
                return TOOL_HTTP_ALLOWED;
        tr_err_set(err, TR_EDENIED, "host %s is not in the tool's allow list", cfg->host);
        return TOOL_HTTP_REFUSED;
    }
    for (size_t i = 0; i < n_node_allow; i++) {
        char norm[TOOL_MAX_HOST];
        if (node_allow[i] && tool_host_normalize(node_allow[i], norm, sizeof(norm)) == 0 &&
            strcmp(norm, cfg->host) == 0)
            return TOOL_HTTP_ALLOWED;
    }
    tr_err_set(err, TR_EDENIED,
               "host %s refused: the tool has no allow list and the node allows no such host", cfg->host);
    return TOOL_HTTP_REFUSED;
}
