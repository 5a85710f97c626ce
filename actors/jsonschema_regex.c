/* ECMA-262 regular expressions for JSON Schema, run by POSIX regcomp.
 *
 * A recursive-descent parser reads the ECMA-262 subset that jsonschema.h
 * documents and writes the equivalent POSIX extended expression; anything
 * outside the subset is refused rather than guessed. The translation keeps
 * the set of strings in which a match exists, which is all JSON Schema asks.
 * regcomp and regexec run in the C.UTF-8 locale so that "." and bracket
 * expressions take whole code points.
 */
#include <locale.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "actors/jsonschema_int.h"

#define RX_MAX_GROUP_DEPTH 32
#define RX_MAX_REPEAT 1000    /* bound of one {n,m} */
#define RX_MAX_WEIGHT 2000    /* atoms after regcomp expands counted repeats */

static pthread_once_t utf8_once = PTHREAD_ONCE_INIT;
static locale_t utf8_locale; /* (locale_t)0 if the system has none */

static void utf8_init(void)
{
    static const char *const names[] = {"C.UTF-8", "C.utf8", "en_US.UTF-8"};
    for (size_t i = 0; i < sizeof names / sizeof names[0] && !utf8_locale; i++) {
        utf8_locale = newlocale(LC_CTYPE_MASK | LC_COLLATE_MASK, names[i], (locale_t)0);
    }
}

struct rx {
    const char *p, *end;
    const char *src;
    struct tr_buf out; /* the POSIX ERE */
    int depth;
    struct tr_err *err;
    int rv;
};

static void emit(struct rx *x, const char *s, size_t n)
{
    tr_buf_add(&x->out, s, n);
}

static void emits(struct rx *x, const char *s)
{
    emit(x, s, strlen(s));
}

__attribute__((format(printf, 3, 4))) static int fail(struct rx *x, int code, const char *fmt, ...)
{
    if (x->rv == 0) {
        char what[256];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(what, sizeof what, fmt, ap);
        va_end(ap);
        x->rv = code;
        tr_err_set(x->err, code, "%s at offset %td", what, x->p - x->src);
    }
    return x->rv;
}

/* Encode code point cp as UTF-8 into b; returns the length. */
static size_t utf8_put(uint32_t cp, char *b)
{
    if (cp < 0x80) {
        b[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        b[0] = (char)(0xC0 | (cp >> 6));
        b[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        b[0] = (char)(0xE0 | (cp >> 12));
        b[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        b[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    b[0] = (char)(0xF0 | (cp >> 18));
    b[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    b[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    b[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Decode one UTF-8 code point at x->p (the source is valid UTF-8). */
static uint32_t utf8_get(struct rx *x)
{
    const unsigned char *s = (const unsigned char *)x->p;
    uint32_t cp;
    size_t n;
    if (s[0] < 0x80) {
        cp = s[0], n = 1;
    } else if (s[0] < 0xE0) {
        cp = s[0] & 0x1F, n = 2;
    } else if (s[0] < 0xF0) {
        cp = s[0] & 0x0F, n = 3;
    } else {
        cp = s[0] & 0x07, n = 4;
    }
    if ((size_t)(x->end - x->p) < n) {
        n = (size_t)(x->end - x->p);
    }
    for (size_t i = 1; i < n; i++) {
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    x->p += n;
    return cp;
}

static int hexval(char c)
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

static int read_hex(struct rx *x, int digits, uint32_t *out)
{
    uint32_t v = 0;
    if (x->end - x->p < digits) {
        return -1;
    }
    for (int i = 0; i < digits; i++) {
        int h = hexval(x->p[i]);
        if (h < 0) {
            return -1;
        }
        v = v * 16 + (uint32_t)h;
    }
    x->p += digits;
    *out = v;
    return 0;
}

/* Class escapes \d \w \s (and negations), as bracket contents. */
static const char *class_body(char c)
{
    switch (c) {
    case 'd':
    case 'D':
        return "0-9";
    case 'w':
    case 'W':
        return "A-Za-z0-9_";
    case 's':
    case 'S':
        return "[:space:]";
    default:
        return NULL;
    }
}

/* A character escape (after the backslash, x->p at the letter) that stands
 * for one code point: \t \n \v \f \r \cX \xHH \uHHHH and escaped punctuation.
 * Returns 1 with *cp set, 0 if it is not a character escape, or -1 after
 * fail(). \b is handled by the callers (backspace in a class, an assertion
 * outside). */
static int char_escape(struct rx *x, uint32_t *cp)
{
    char c = *x->p;
    switch (c) {
    case 't': x->p++; *cp = '\t'; return 1;
    case 'n': x->p++; *cp = '\n'; return 1;
    case 'v': x->p++; *cp = '\v'; return 1;
    case 'f': x->p++; *cp = '\f'; return 1;
    case 'r': x->p++; *cp = '\r'; return 1;
    case 'c':
        if (x->end - x->p >= 2 && ((x->p[1] >= 'a' && x->p[1] <= 'z') || (x->p[1] >= 'A' && x->p[1] <= 'Z'))) {
            *cp = (uint32_t)(x->p[1] & 31);
            x->p += 2;
            return 1;
        }
        fail(x, TR_ENOTSUP, "\\c must be followed by a letter");
        return -1;
    case 'x':
        x->p++;
        if (read_hex(x, 2, cp) < 0) {
            fail(x, TR_EINVAL, "\\x needs two hex digits");
            return -1;
        }
        break;
    case 'u': {
        x->p++;
        if (x->p < x->end && *x->p == '{') {
            fail(x, TR_ENOTSUP, "\\u{...} needs the u flag, which JSON Schema does not set");
            return -1;
        }
        if (read_hex(x, 4, cp) < 0) {
            fail(x, TR_EINVAL, "\\u needs four hex digits");
            return -1;
        }
        if (*cp >= 0xD800 && *cp <= 0xDBFF) {
            uint32_t lo;
            if (x->end - x->p >= 6 && x->p[0] == '\\' && x->p[1] == 'u') {
                x->p += 2;
                if (read_hex(x, 4, &lo) == 0 && lo >= 0xDC00 && lo <= 0xDFFF) {
                    *cp = 0x10000 + ((*cp - 0xD800) << 10) + (lo - 0xDC00);
                    break;
                }
            }
            fail(x, TR_ENOTSUP, "lone UTF-16 surrogate in \\u escape");
            return -1;
        }
        if (*cp >= 0xDC00 && *cp <= 0xDFFF) {
            fail(x, TR_ENOTSUP, "lone UTF-16 surrogate in \\u escape");
            return -1;
        }
        break;
    }
    case '0':
        if (x->end - x->p >= 2 && x->p[1] >= '0' && x->p[1] <= '9') {
            fail(x, TR_ENOTSUP, "octal escapes are not supported");
            return -1;
        }
        fail(x, TR_ENOTSUP, "\\0 (NUL) is not supported in patterns");
        return -1;
    default:
        if ((unsigned char)c >= 0x80 || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
            (c >= '0' && c <= '9') || c == '_') {
            return 0;
        }
        /* escaped punctuation stands for itself */
        x->p++;
        *cp = (uint32_t)(unsigned char)c;
        return 1;
    }
    if (*cp == 0) {
        fail(x, TR_ENOTSUP, "NUL is not supported in patterns");
        return -1;
    }
    return 1;
}

/* Write code point cp as a literal outside brackets. */
static void emit_literal(struct rx *x, uint32_t cp)
{
    char b[8];
    if (cp < 0x80 && strchr(".[\\()*+?{|^$", (int)cp)) {
        b[0] = '\\';
        b[1] = (char)cp;
        emit(x, b, 2);
        return;
    }
    emit(x, b, utf8_put(cp, b));
}

/* Write code point cp inside a bracket expression. */
static void emit_bracket_char(struct rx *x, uint32_t cp)
{
    char b[8];
    if (cp < 0x80 && strchr("]-^[", (int)cp)) {
        b[0] = '[';
        b[1] = '.';
        b[2] = (char)cp;
        b[3] = '.';
        b[4] = ']';
        emit(x, b, 5);
        return;
    }
    emit(x, b, utf8_put(cp, b));
}

/* One class member: a code point (returns 1), a class escape written
 * directly (returns 2), or -1 after fail(). */
static int class_atom(struct rx *x, uint32_t *cp)
{
    if (*x->p != '\\') {
        *cp = utf8_get(x);
        return 1;
    }
    x->p++;
    if (x->p >= x->end) {
        fail(x, TR_EINVAL, "pattern ends with a backslash");
        return -1;
    }
    char c = *x->p;
    if (c == 'b') {
        x->p++;
        *cp = '\b';
        return 1;
    }
    if (c == '-') {
        x->p++;
        *cp = '-';
        return 1;
    }
    const char *body = class_body(c);
    if (body) {
        if (c == 'D' || c == 'W' || c == 'S') {
            fail(x, TR_ENOTSUP, "\\%c inside a character class is not supported", c);
            return -1;
        }
        x->p++;
        emits(x, body);
        return 2;
    }
    int r = char_escape(x, cp);
    if (r == 0) {
        fail(x, TR_ENOTSUP, "unsupported escape \\%c in a character class", c);
        return -1;
    }
    return r < 0 ? -1 : 1;
}

/* A class "[...]"; x->p is past the '['. */
static int parse_class(struct rx *x)
{
    emits(x, "[");
    if (x->p < x->end && *x->p == '^') {
        x->p++;
        emits(x, "^");
        if (x->p < x->end && *x->p == ']') {
            return fail(x, TR_ENOTSUP, "the class [^] is not supported");
        }
    }
    if (x->p < x->end && *x->p == ']') {
        return fail(x, TR_ENOTSUP, "the empty class [] is not supported");
    }
    while (x->p < x->end && *x->p != ']') {
        uint32_t lo, hi;
        int r = class_atom(x, &lo);
        if (r < 0) {
            return x->rv;
        }
        bool range = x->end - x->p >= 2 && x->p[0] == '-' && x->p[1] != ']';
        if (r == 2) {
            if (range) {
                return fail(x, TR_ENOTSUP, "a range cannot start at a class escape");
            }
            continue;
        }
        if (!range) {
            emit_bracket_char(x, lo);
            continue;
        }
        x->p++; /* '-' */
        r = class_atom(x, &hi);
        if (r < 0) {
            return x->rv;
        }
        if (r == 2) {
            return fail(x, TR_ENOTSUP, "a range cannot end at a class escape");
        }
        if (lo > hi) {
            return fail(x, TR_EINVAL, "range out of order in character class");
        }
        emit_bracket_char(x, lo);
        emits(x, "-");
        emit_bracket_char(x, hi);
    }
    if (x->p >= x->end) {
        return fail(x, TR_EINVAL, "missing ] at the end of a character class");
    }
    x->p++;
    emits(x, "]");
    return 0;
}

static int parse_disjunction(struct rx *x, unsigned long *weight);

/* Read a decimal number of at most 9 digits; -1 if none. */
static long read_num(struct rx *x)
{
    long v = 0;
    int n = 0;
    while (x->p < x->end && *x->p >= '0' && *x->p <= '9') {
        if (n < 9) {
            v = v * 10 + (*x->p - '0');
        } else {
            v = RX_MAX_REPEAT + 1L;
        }
        n++;
        x->p++;
    }
    return n ? v : -1;
}

/* "{n}", "{n,}", "{n,m}" at x->p: 1 with bounds (max -1 = unbounded), or 0
 * with x->p unchanged if it is not a quantifier (then '{' is a literal). */
static int read_braces(struct rx *x, long *min, long *max)
{
    const char *save = x->p;
    x->p++;
    *min = read_num(x);
    *max = *min;
    if (*min >= 0 && x->p < x->end && *x->p == ',') {
        x->p++;
        *max = read_num(x);
    }
    if (*min < 0 || x->p >= x->end || *x->p != '}') {
        x->p = save;
        return 0;
    }
    x->p++;
    return 1;
}

/* Does a quantifier start at x->p? */
static bool at_quantifier(struct rx *x)
{
    if (x->p >= x->end) {
        return false;
    }
    if (*x->p == '*' || *x->p == '+' || *x->p == '?') {
        return true;
    }
    if (*x->p != '{') {
        return false;
    }
    const char *save = x->p;
    long min, max;
    int r = read_braces(x, &min, &max);
    x->p = save;
    return r;
}

/* An optional quantifier after an atom of the given weight. */
static int parse_quantifier(struct rx *x, unsigned long *weight)
{
    if (x->p >= x->end) {
        return 0;
    }
    char c = *x->p;
    if (c == '*' || c == '?') {
        x->p++;
        emit(x, &c, 1);
    } else if (c == '+') {
        x->p++;
        emit(x, &c, 1);
        *weight *= 2;
    } else if (c == '{') {
        long min, max;
        if (!read_braces(x, &min, &max)) {
            return 0;
        }
        if (min > RX_MAX_REPEAT || max > RX_MAX_REPEAT) {
            return fail(x, TR_ELIMIT, "repetition count over %d", RX_MAX_REPEAT);
        }
        if (max >= 0 && max < min) {
            return fail(x, TR_EINVAL, "numbers out of order in {} quantifier");
        }
        char b[48];
        if (max < 0) {
            snprintf(b, sizeof b, "{%ld,}", min);
            *weight *= (unsigned long)min + 1;
        } else if (max == min) {
            snprintf(b, sizeof b, "{%ld}", min);
            *weight *= (unsigned long)(min ? min : 1);
        } else {
            snprintf(b, sizeof b, "{%ld,%ld}", min, max);
            *weight *= (unsigned long)max;
        }
        emits(x, b);
    } else {
        return 0;
    }
    if (x->p < x->end && *x->p == '?') {
        x->p++; /* lazy: the same strings match */
    }
    if (at_quantifier(x)) {
        return fail(x, TR_EINVAL, "nothing to repeat");
    }
    if (*weight > RX_MAX_WEIGHT) {
        return fail(x, TR_ELIMIT, "counted repetition expands too far (limit %d)", RX_MAX_WEIGHT);
    }
    return 0;
}

/* A group; x->p is past the '('. */
static int parse_group(struct rx *x, unsigned long *weight)
{
    if (x->p < x->end && *x->p == '?') {
        const char *q = x->p + 1;
        if (q < x->end && *q == ':') {
            x->p += 2;
        } else if (q < x->end && (*q == '=' || *q == '!')) {
            return fail(x, TR_ENOTSUP, "lookahead (?%c...) is not supported", *q);
        } else if (q + 1 < x->end && *q == '<' && (q[1] == '=' || q[1] == '!')) {
            return fail(x, TR_ENOTSUP, "lookbehind (?<%c...) is not supported", q[1]);
        } else if (q < x->end && *q == '<') {
            const char *e = memchr(q, '>', (size_t)(x->end - q));
            if (!e || e == q + 1) {
                return fail(x, TR_EINVAL, "bad group name");
            }
            x->p = e + 1;
        } else {
            return fail(x, TR_EINVAL, "invalid group");
        }
    }
    if (++x->depth > RX_MAX_GROUP_DEPTH) {
        return fail(x, TR_ELIMIT, "groups nested deeper than %d", RX_MAX_GROUP_DEPTH);
    }
    emits(x, "(");
    if (parse_disjunction(x, weight) != 0) {
        return x->rv;
    }
    if (x->p >= x->end || *x->p != ')') {
        return fail(x, TR_EINVAL, "missing )");
    }
    x->p++;
    x->depth--;
    emits(x, ")");
    return 0;
}

/* An escape outside a class; x->p is past the backslash. Sets *atom to
 * false for assertions (\b \B), which cannot be quantified. */
static int parse_escape(struct rx *x, bool *atom)
{
    if (x->p >= x->end) {
        return fail(x, TR_EINVAL, "pattern ends with a backslash");
    }
    char c = *x->p;
    *atom = true;
    if (c == 'b' || c == 'B') {
        x->p++;
        emits(x, c == 'b' ? "\\b" : "\\B");
        *atom = false;
        return 0;
    }
    const char *body = class_body(c);
    if (body) {
        x->p++;
        emits(x, (c == 'D' || c == 'W' || c == 'S') ? "[^" : "[");
        emits(x, body);
        emits(x, "]");
        return 0;
    }
    if (c >= '1' && c <= '9') {
        return fail(x, TR_ENOTSUP, "backreferences are not supported");
    }
    if (c == 'k') {
        return fail(x, TR_ENOTSUP, "named backreferences are not supported");
    }
    if (c == 'p' || c == 'P') {
        return fail(x, TR_ENOTSUP, "Unicode property escapes \\%c{...} are not supported", c);
    }
    uint32_t cp;
    int r = char_escape(x, &cp);
    if (r < 0) {
        return x->rv;
    }
    if (r == 0) {
        return fail(x, TR_ENOTSUP, "unsupported escape \\%c", c);
    }
    emit_literal(x, cp);
    return 0;
}

static int parse_alternative(struct rx *x, unsigned long *weight)
{
    *weight = 0;
    while (x->p < x->end && *x->p != '|' && *x->p != ')') {
        unsigned long w = 1;
        bool atom = true;
        char c = *x->p;
        switch (c) {
        case '^':
        case '$':
            x->p++;
            emit(x, &c, 1);
            atom = false;
            break;
        case '.':
            x->p++;
            emits(x, utf8_locale ? "[^\n\r\xe2\x80\xa8\xe2\x80\xa9]" : "[^\n\r]");
            break;
        case '(':
            x->p++;
            if (parse_group(x, &w) != 0) {
                return x->rv;
            }
            if (w == 0) {
                w = 1;
            }
            break;
        case '[':
            x->p++;
            if (parse_class(x) != 0) {
                return x->rv;
            }
            break;
        case '\\':
            x->p++;
            if (parse_escape(x, &atom) != 0) {
                return x->rv;
            }
            break;
        case '*':
        case '+':
        case '?':
            return fail(x, TR_EINVAL, "nothing to repeat");
        case '{': {
            if (at_quantifier(x)) {
                return fail(x, TR_EINVAL, "nothing to repeat");
            }
            x->p++;
            emits(x, "\\{");
            break;
        }
        default:
            emit_literal(x, utf8_get(x));
            break;
        }
        if (atom) {
            if (parse_quantifier(x, &w) != 0) {
                return x->rv;
            }
        } else if (at_quantifier(x)) {
            return fail(x, TR_EINVAL, "nothing to repeat");
        }
        *weight += w;
        if (*weight > RX_MAX_WEIGHT) {
            return fail(x, TR_ELIMIT, "pattern expands too far (limit %d)", RX_MAX_WEIGHT);
        }
    }
    return 0;
}

static int parse_disjunction(struct rx *x, unsigned long *weight)
{
    unsigned long total = 0;
    for (;;) {
        unsigned long w;
        if (parse_alternative(x, &w) != 0) {
            return x->rv;
        }
        total += w;
        if (x->p >= x->end || *x->p != '|') {
            break;
        }
        x->p++;
        emits(x, "|");
    }
    *weight = total;
    return 0;
}

int js_regex_compile(const char *src, size_t len, struct js_regex **out, struct tr_err *err)
{
    *out = NULL;
    if (len > TR_SCHEMA_MAX_PATTERN) {
        return tr_err_set(err, TR_ELIMIT, "pattern longer than %d bytes", TR_SCHEMA_MAX_PATTERN);
    }
    if (memchr(src, '\0', len)) {
        return tr_err_set(err, TR_ENOTSUP, "NUL is not supported in patterns");
    }
    pthread_once(&utf8_once, utf8_init);

    struct rx x = {.p = src, .end = src + len, .src = src, .err = err};
    emits(&x, "");
    unsigned long weight;
    if (parse_disjunction(&x, &weight) == 0 && x.p < x.end) {
        fail(&x, TR_EINVAL, "unmatched )");
    }
    if (x.rv != 0) {
        tr_buf_free(&x.out);
        return x.rv;
    }

    struct js_regex *re = tr_calloc(1, sizeof *re);
    locale_t old = utf8_locale ? uselocale(utf8_locale) : (locale_t)0;
    int rc = regcomp(&re->re, x.out.p, REG_EXTENDED | REG_NOSUB);
    if (utf8_locale) {
        uselocale(old);
    }
    if (rc != 0) {
        char msg[128];
        regerror(rc, &re->re, msg, sizeof msg);
        tr_buf_free(&x.out);
        tr_free(re);
        return tr_err_set(err, rc == REG_ESPACE ? TR_ELIMIT : TR_EINVAL, "regcomp: %s", msg);
    }
    tr_buf_free(&x.out);
    re->src = tr_strndup(src, len);
    *out = re;
    return 0;
}

int js_regex_search(const struct js_regex *re, const char *s, size_t len)
{
    regmatch_t m[1];
    m[0].rm_so = 0;
    m[0].rm_eo = (regoff_t)len;
    locale_t old = utf8_locale ? uselocale(utf8_locale) : (locale_t)0;
    int rc = regexec(&re->re, s, 1, m, REG_STARTEND);
    if (utf8_locale) {
        uselocale(old);
    }
    return rc == 0;
}

void js_regex_free(struct js_regex *re)
{
    if (!re) {
        return;
    }
    regfree(&re->re);
    tr_free(re->src);
    tr_free(re);
}
