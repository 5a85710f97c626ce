/* The "format" keyword: which names we check, and the checks. */
#include <arpa/inet.h>
#include <string.h>

#include "actors/jsonschema_int.h"

static const struct {
    const char *name;
    enum js_format fmt;
    const char *describe;
} formats[] = {
    {"date-time", JS_FMT_DATE_TIME, "a date-time (RFC 3339), such as 2024-01-31T12:00:00Z"},
    {"date", JS_FMT_DATE, "a full-date (RFC 3339), such as 2024-01-31"},
    {"time", JS_FMT_TIME, "a full-time (RFC 3339), such as 12:00:00Z or 12:00:00+01:00"},
    {"email", JS_FMT_EMAIL, "an email address, such as user@example.com"},
    {"hostname", JS_FMT_HOSTNAME, "a host name (RFC 1123), such as api.example.com"},
    {"ipv4", JS_FMT_IPV4, "an IPv4 address in dotted-quad form, such as 192.0.2.1"},
    {"ipv6", JS_FMT_IPV6, "an IPv6 address, such as 2001:db8::1"},
    {"uri", JS_FMT_URI, "an absolute URI (RFC 3986), such as https://example.com/a"},
    {"uri-reference", JS_FMT_URI_REFERENCE, "a URI or relative reference (RFC 3986)"},
    {"uuid", JS_FMT_UUID, "a UUID, such as 123e4567-e89b-12d3-a456-426614174000"},
    {"json-pointer", JS_FMT_JSON_POINTER, "a JSON pointer (RFC 6901), such as /a/0"},
    {"relative-json-pointer", JS_FMT_REL_JSON_POINTER, "a relative JSON pointer, such as 1/a"},
    {"regex", JS_FMT_REGEX, "a regular expression in the supported ECMA-262 subset"},
    {"iri", JS_FMT_IRI, "an absolute IRI (RFC 3987), such as https://example.com/a"},
    {"iri-reference", JS_FMT_IRI_REFERENCE, "an IRI or relative reference (RFC 3987)"},
    {"idn-hostname", JS_FMT_IDN_HOSTNAME, "an internationalized host name"},
    {"idn-email", JS_FMT_IDN_EMAIL, "an internationalized email address"},
    {"uri-template", JS_FMT_URI_TEMPLATE, "a URI template (RFC 6570), such as /users/{id}"},
};

enum js_format js_format_lookup(const char *name)
{
    for (size_t i = 0; i < sizeof formats / sizeof formats[0]; i++) {
        if (strcmp(formats[i].name, name) == 0) {
            return formats[i].fmt;
        }
    }
    return JS_FMT_NONE;
}

const char *js_format_describe(enum js_format f)
{
    for (size_t i = 0; i < sizeof formats / sizeof formats[0]; i++) {
        if (formats[i].fmt == f) {
            return formats[i].describe;
        }
    }
    return "a valid value";
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool is_alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_hex(char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* Exactly n digits at s[*i], as a number. */
static bool digits(const char *s, size_t len, size_t *i, int n, int *out)
{
    int v = 0;
    if (len - *i < (size_t)n) {
        return false;
    }
    for (int k = 0; k < n; k++) {
        if (!is_digit(s[*i + (size_t)k])) {
            return false;
        }
        v = v * 10 + (s[*i + (size_t)k] - '0');
    }
    *i += (size_t)n;
    *out = v;
    return true;
}

static bool lit(const char *s, size_t len, size_t *i, char c)
{
    if (*i < len && s[*i] == c) {
        (*i)++;
        return true;
    }
    return false;
}

static bool check_date(const char *s, size_t len, size_t *i)
{
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int y, m, d;
    if (!digits(s, len, i, 4, &y) || !lit(s, len, i, '-') || !digits(s, len, i, 2, &m) ||
        !lit(s, len, i, '-') || !digits(s, len, i, 2, &d)) {
        return false;
    }
    if (m < 1 || m > 12 || d < 1) {
        return false;
    }
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    int max = mdays[m - 1] + (m == 2 && leap);
    return d <= max;
}

static bool check_time(const char *s, size_t len, size_t *i)
{
    int h, m, sec;
    if (!digits(s, len, i, 2, &h) || !lit(s, len, i, ':') || !digits(s, len, i, 2, &m) ||
        !lit(s, len, i, ':') || !digits(s, len, i, 2, &sec)) {
        return false;
    }
    if (h > 23 || m > 59 || sec > 60) {
        return false;
    }
    if (lit(s, len, i, '.')) {
        size_t start = *i;
        while (*i < len && is_digit(s[*i])) {
            (*i)++;
        }
        if (*i == start) {
            return false;
        }
    }
    if (*i < len && (s[*i] == 'Z' || s[*i] == 'z')) {
        (*i)++;
        return true;
    }
    int oh, om;
    if (!(lit(s, len, i, '+') || lit(s, len, i, '-'))) {
        return false;
    }
    if (!digits(s, len, i, 2, &oh) || !lit(s, len, i, ':') || !digits(s, len, i, 2, &om)) {
        return false;
    }
    return oh <= 23 && om <= 59;
}

/* RFC 1123 host names; `idn` also allows non-ASCII labels, counting code
 * points (without checking which code points IDNA allows). */
static bool check_hostname(const char *s, size_t len, bool idn)
{
    if (len > 0 && s[len - 1] == '.') {
        len--; /* a fully qualified name may end in a dot */
    }
    if (len == 0 || len > 253) {
        return false;
    }
    size_t label = 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '.') {
            if (label == 0 || s[i - 1] == '-') {
                return false;
            }
            label = 0;
            continue;
        }
        bool cont = ((unsigned char)c & 0xC0) == 0x80;
        if (!(is_alpha(c) || is_digit(c) || c == '-' || (idn && (unsigned char)c >= 0x80))) {
            return false;
        }
        if (c == '-' && label == 0) {
            return false;
        }
        if (!cont && ++label > 63) {
            return false;
        }
    }
    return label > 0 && s[len - 1] != '-';
}

static bool check_ipv4(const char *s, size_t len)
{
    size_t i = 0;
    for (int part = 0; part < 4; part++) {
        if (part > 0 && !lit(s, len, &i, '.')) {
            return false;
        }
        size_t start = i;
        int v = 0;
        while (i < len && is_digit(s[i]) && i - start < 3) {
            v = v * 10 + (s[i] - '0');
            i++;
        }
        size_t n = i - start;
        if (n == 0 || v > 255 || (n > 1 && s[start] == '0')) {
            return false;
        }
    }
    return i == len;
}

static bool check_ipv6(const char *s, size_t len)
{
    char buf[64];
    unsigned char addr[16];
    if (len == 0 || len >= sizeof buf || memchr(s, '\0', len)) {
        return false;
    }
    memcpy(buf, s, len);
    buf[len] = '\0';
    return inet_pton(AF_INET6, buf, addr) == 1;
}

static bool check_email(const char *s, size_t len, bool idn)
{
    const char *at = memchr(s, '@', len);
    if (!at) {
        return false;
    }
    size_t local = (size_t)(at - s);
    const char *dom = at + 1;
    size_t dlen = len - local - 1;
    if (local == 0 || local > 64 || s[0] == '.' || s[local - 1] == '.') {
        return false;
    }
    for (size_t i = 0; i < local; i++) {
        char c = s[i];
        if (c == '.' && s[i + 1] == '.') {
            return false;
        }
        if (!(is_alpha(c) || is_digit(c) || strchr(".!#$%&'*+/=?^_`{|}~-", c) || (idn && (unsigned char)c >= 0x80))) {
            return false;
        }
    }
    if (dlen > 2 && dom[0] == '[' && dom[dlen - 1] == ']') {
        if (dlen > 7 && strncmp(dom + 1, "IPv6:", 5) == 0) {
            return check_ipv6(dom + 6, dlen - 7);
        }
        return check_ipv4(dom + 1, dlen - 2);
    }
    return check_hostname(dom, dlen, idn);
}

/* RFC 3986 character classes. */
static bool uri_unreserved(char c)
{
    return is_alpha(c) || is_digit(c) || c == '-' || c == '.' || c == '_' || c == '~';
}

static bool uri_subdelim(char c)
{
    return c != '\0' && strchr("!$&'()*+,;=", c) != NULL;
}

/* Characters allowed in a part: pchar plus `extra`; %HH escapes checked. */
static bool uri_part(const char *s, size_t len, const char *extra, bool iri)
{
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '%') {
            if (i + 2 >= len) {
                return false;
            }
            if (!is_hex(s[i + 1]) || !is_hex(s[i + 2])) {
                return false;
            }
            i += 2;
            continue;
        }
        if (uri_unreserved(c) || uri_subdelim(c) || c == ':' || c == '@' || (iri && (unsigned char)c >= 0x80)) {
            continue;
        }
        if (c != '\0' && strchr(extra, c)) {
            continue;
        }
        return false;
    }
    return true;
}

static bool check_authority(const char *s, size_t len, bool iri)
{
    const char *at = memchr(s, '@', len);
    if (at) {
        size_t u = (size_t)(at - s);
        for (size_t i = 0; i < u; i++) {
            if (s[i] == '@') {
                return false;
            }
        }
        if (!uri_part(s, u, "", iri)) {
            return false;
        }
        len -= u + 1;
        s = at + 1;
    }
    size_t hostlen = len;
    if (len > 0 && s[0] == '[') {
        const char *close = memchr(s, ']', len);
        if (!close) {
            return false;
        }
        hostlen = (size_t)(close - s) + 1;
        if (!check_ipv6(s + 1, hostlen - 2)) {
            return false;
        }
    } else {
        const char *colon = memchr(s, ':', len);
        hostlen = colon ? (size_t)(colon - s) : len;
        for (size_t i = 0; i < hostlen; i++) {
            if (s[i] == '%') {
                if (i + 2 >= hostlen || !is_hex(s[i + 1]) || !is_hex(s[i + 2])) {
                    return false;
                }
                i += 2;
            } else if (!uri_unreserved(s[i]) && !uri_subdelim(s[i]) && !(iri && (unsigned char)s[i] >= 0x80)) {
                return false;
            }
        }
    }
    if (hostlen < len) {
        if (s[hostlen] != ':') {
            return false;
        }
        for (size_t i = hostlen + 1; i < len; i++) {
            if (!is_digit(s[i])) {
                return false;
            }
        }
    }
    return true;
}

/* A URI reference; `absolute` requires a scheme; `iri` allows non-ASCII
 * characters (RFC 3987, without checking which ones). */
static bool check_uri(const char *s, size_t len, bool absolute, bool iri)
{
    size_t i = 0;
    /* scheme */
    size_t colon = 0;
    bool has_scheme = false;
    if (len > 0 && is_alpha(s[0])) {
        size_t k = 1;
        while (k < len && (is_alpha(s[k]) || is_digit(s[k]) || s[k] == '+' || s[k] == '-' || s[k] == '.')) {
            k++;
        }
        if (k < len && s[k] == ':') {
            has_scheme = true;
            colon = k;
        }
    }
    if (absolute && !has_scheme) {
        return false;
    }
    if (has_scheme) {
        i = colon + 1;
    }
    const char *frag = memchr(s + i, '#', len - i);
    size_t end = frag ? (size_t)(frag - s) : len;
    if (frag && !uri_part(frag + 1, len - end - 1, "/?", iri)) {
        return false;
    }
    const char *query = memchr(s + i, '?', end - i);
    size_t pend = query ? (size_t)(query - s) : end;
    if (query && !uri_part(query + 1, end - pend - 1, "/?", iri)) {
        return false;
    }
    if (pend - i >= 2 && s[i] == '/' && s[i + 1] == '/') {
        i += 2;
        const char *slash = memchr(s + i, '/', pend - i);
        size_t aend = slash ? (size_t)(slash - s) : pend;
        if (!check_authority(s + i, aend - i, iri)) {
            return false;
        }
        i = aend;
    } else if (!has_scheme) {
        /* relative-path reference: no ':' in the first segment */
        const char *slash = memchr(s + i, '/', pend - i);
        size_t seg = slash ? (size_t)(slash - s) : pend;
        if (memchr(s + i, ':', seg - i)) {
            return false;
        }
    }
    return uri_part(s + i, pend - i, "/", iri);
}

static bool check_uri_template(const char *s, size_t len)
{
    bool in_expr = false;
    size_t expr_start = 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '{') {
            if (in_expr) {
                return false;
            }
            in_expr = true;
            expr_start = i + 1;
        } else if (c == '}') {
            if (!in_expr || i == expr_start) {
                return false;
            }
            in_expr = false;
        } else if (c == '\0' || c == ' ' || c == '"' || c == '<' || c == '>' || c == '\\' || c == '^' ||
                   c == '`' || c == '|' || (unsigned char)c < 0x20) {
            return false;
        }
    }
    return !in_expr;
}

static bool check_uuid(const char *s, size_t len)
{
    if (len != 36) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? s[i] != '-' : !is_hex(s[i])) {
            return false;
        }
    }
    return true;
}

static bool check_json_pointer(const char *s, size_t len)
{
    if (len > 0 && s[0] != '/') {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '~' && (i + 1 >= len || (s[i + 1] != '0' && s[i + 1] != '1'))) {
            return false;
        }
    }
    return true;
}

static bool check_rel_json_pointer(const char *s, size_t len)
{
    size_t i = 0;
    while (i < len && is_digit(s[i])) {
        i++;
    }
    if (i == 0 || (i > 1 && s[0] == '0')) {
        return false;
    }
    if (i < len && s[i] == '#') {
        return i + 1 == len;
    }
    return check_json_pointer(s + i, len - i);
}

bool js_format_check(enum js_format f, const char *s, size_t len)
{
    size_t i = 0;
    switch (f) {
    case JS_FMT_NONE:
        return true;
    case JS_FMT_DATE_TIME:
        if (!check_date(s, len, &i)) {
            return false;
        }
        if (i >= len || (s[i] != 'T' && s[i] != 't')) {
            return false;
        }
        i++;
        return check_time(s, len, &i) && i == len;
    case JS_FMT_DATE:
        return check_date(s, len, &i) && i == len;
    case JS_FMT_TIME:
        return check_time(s, len, &i) && i == len;
    case JS_FMT_EMAIL:
        return check_email(s, len, false);
    case JS_FMT_HOSTNAME:
        return check_hostname(s, len, false);
    case JS_FMT_IPV4:
        return check_ipv4(s, len);
    case JS_FMT_IPV6:
        return check_ipv6(s, len);
    case JS_FMT_URI:
        return check_uri(s, len, true, false);
    case JS_FMT_URI_REFERENCE:
        return check_uri(s, len, false, false);
    case JS_FMT_IRI:
        return check_uri(s, len, true, true);
    case JS_FMT_IRI_REFERENCE:
        return check_uri(s, len, false, true);
    case JS_FMT_URI_TEMPLATE:
        return check_uri_template(s, len);
    case JS_FMT_IDN_HOSTNAME:
        return check_hostname(s, len, true);
    case JS_FMT_IDN_EMAIL:
        return check_email(s, len, true);
    case JS_FMT_UUID:
        return check_uuid(s, len);
    case JS_FMT_JSON_POINTER:
        return check_json_pointer(s, len);
    case JS_FMT_REL_JSON_POINTER:
        return check_rel_json_pointer(s, len);
    case JS_FMT_REGEX: {
        struct js_regex *re;
        struct tr_err err;
        if (js_regex_compile(s, len, &re, &err) != 0) {
            return false;
        }
        js_regex_free(re);
        return true;
    }
    }
    return true;
}
