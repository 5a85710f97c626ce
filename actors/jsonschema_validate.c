/* Validating an instance against a compiled schema.
 *
 * v_node applies one node to one instance value and returns whether it
 * holds. Errors go to the current sink: the caller's struct
 * tr_schema_errors at the top, or a scratch sink while we only ask whether a
 * branch matches (anyOf, oneOf, not, if, contains, propertyNames). A scratch
 * sink stops at the first error; the top sink stops once it has found one
 * error more than it can keep. Running past TR_SCHEMA_MAX_STEPS or
 * TR_SCHEMA_MAX_EVAL_DEPTH aborts the whole validation with TR_ELIMIT.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "actors/jsonschema_int.h"

#define SHOW_MAX 80       /* bytes of a value quoted in a message */
#define BRANCH_MSG_MAX 160

struct sink {
    struct tr_schema_errors *errs; /* NULL for a scratch sink */
    unsigned found;
    bool stop;                     /* set when the sink wants no more */
    char *first;                   /* scratch: the first error, as text */
    size_t first_cap;
};

struct vctx {
    struct sink *sink;
    struct tr_schema_errors *top;  /* may be NULL */
    unsigned long steps;
    int depth;
    bool aborted;
    char *ptr;                     /* JSON pointer of the current value */
    size_t ptr_len, ptr_cap;
};

static void ptr_push(struct vctx *c, const char *key, size_t len)
{
    size_t need = c->ptr_len + 2 * len + 2;
    if (need > c->ptr_cap) {
        size_t cap = c->ptr_cap ? c->ptr_cap : 128;
        while (cap < need) {
            cap *= 2;
        }
        c->ptr = tr_realloc(c->ptr, cap);
        c->ptr_cap = cap;
    }
    c->ptr[c->ptr_len++] = '/';
    for (size_t i = 0; i < len; i++) {
        if (key[i] == '~' || key[i] == '/') {
            c->ptr[c->ptr_len++] = '~';
            c->ptr[c->ptr_len++] = key[i] == '~' ? '0' : '1';
        } else {
            c->ptr[c->ptr_len++] = key[i];
        }
    }
    c->ptr[c->ptr_len] = '\0';
}

static void ptr_push_index(struct vctx *c, size_t i)
{
    char b[32];
    snprintf(b, sizeof b, "%zu", i);
    ptr_push(c, b, strlen(b));
}

static void ptr_pop(struct vctx *c, size_t len)
{
    c->ptr_len = len;
    c->ptr[len] = '\0';
}

static void copy_trunc(char *dst, size_t cap, const char *src)
{
    size_t len = 0;
    dst[0] = '\0';
    js_bufcat(dst, cap, &len, "%s", src);
}

/* Add msg to sink s. Returns true if validation should stop now. */
static bool sink_add(struct vctx *c, struct sink *s, const struct js_node *n, const char *kw, const char *msg)
{
    s->found++;
    if (s->errs) {
        if (s->errs->count == TR_SCHEMA_MAX_ERRORS) {
            s->errs->truncated = 1;
            s->stop = true;
            return true;
        }
        struct tr_schema_error *e = &s->errs->e[s->errs->count++];
        copy_trunc(e->instance_ptr, sizeof e->instance_ptr, c->ptr);
        char sp[TR_SCHEMA_PTR_MAX];
        size_t len = 0;
        sp[0] = '\0';
        js_bufcat(sp, sizeof sp, &len, "%s%s%s", n->loc, *kw ? "/" : "", kw);
        copy_trunc(e->schema_ptr, sizeof e->schema_ptr, sp);
        copy_trunc(e->message, sizeof e->message, msg);
        return false;
    }
    if (s->first && s->found == 1) {
        size_t len = 0;
        if (c->ptr_len > 0) {
            js_bufcat(s->first, s->first_cap, &len, "at %s: %s", c->ptr, msg);
        } else {
            js_bufcat(s->first, s->first_cap, &len, "%s", msg);
        }
    }
    s->stop = true;
    return true;
}

/* Record an error at the current value for keyword kw of node n ("" for the
 * node itself). Returns true if validation should stop now. */
__attribute__((format(printf, 4, 5))) static bool report(struct vctx *c, const struct js_node *n,
                                                         const char *kw, const char *fmt, ...)
{
    char msg[TR_SCHEMA_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (k >= (int)sizeof msg) {
        size_t cut = sizeof msg - 4;
        while (cut > 0 && ((unsigned char)msg[cut] & 0xC0) == 0x80) {
            cut--;
        }
        memcpy(msg + cut, "...", 4);
    }
    return sink_add(c, c->sink, n, kw, msg);
}

/* Abort the whole validation: a bound was hit. The error goes to the
 * caller's list whatever sink is current. */
static bool abort_limit(struct vctx *c, const struct js_node *n, const char *what)
{
    if (!c->aborted) {
        c->aborted = true;
        if (c->top) {
            struct sink top = {.errs = c->top};
            if (c->top->count == TR_SCHEMA_MAX_ERRORS) {
                c->top->count--; /* the limit is the error that matters */
                c->top->truncated = 1;
            }
            sink_add(c, &top, n, "", what);
        }
    }
    return false;
}

static bool halted(const struct vctx *c)
{
    return c->aborted || c->sink->stop;
}

static const char *inst_type(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "object";
    case JSON_ARRAY: return "array";
    case JSON_STRING: return "string";
    case JSON_INTEGER: return "integer";
    case JSON_REAL: return js_is_integral(v) ? "integer" : "number";
    case JSON_TRUE:
    case JSON_FALSE: return "boolean";
    default: return "null";
    }
}

static bool type_ok(unsigned types, const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return types & JS_T_OBJECT;
    case JSON_ARRAY: return types & JS_T_ARRAY;
    case JSON_STRING: return types & JS_T_STRING;
    case JSON_INTEGER:
    case JSON_REAL: return (types & JS_T_NUMBER) || ((types & JS_T_INTEGER) && js_is_integral(v));
    case JSON_TRUE:
    case JSON_FALSE: return types & JS_T_BOOLEAN;
    default: return types & JS_T_NULL;
    }
}

static void type_list(unsigned types, char *buf, size_t cap)
{
    static const char *const names[] = {"null", "boolean", "object", "array", "number", "string", "integer"};
    size_t len = 0;
    int n = 0, total = __builtin_popcount(types);
    buf[0] = '\0';
    for (int i = 0; i < 7; i++) {
        if (types & (1u << i)) {
            js_bufcat(buf, cap, &len, "%s%s", n == 0 ? "" : n == total - 1 ? " or " : ", ", names[i]);
            n++;
        }
    }
}

static bool v_node(struct vctx *c, const struct js_node *n, const json_t *v);

/* Does v match n? Errors go nowhere; *why, if not NULL, gets the first. */
static bool v_probe(struct vctx *c, const struct js_node *n, const json_t *v, char *why, size_t why_cap)
{
    struct sink *saved = c->sink;
    struct sink scratch = {.first = why, .first_cap = why_cap};
    if (why) {
        why[0] = '\0';
    }
    c->sink = &scratch;
    bool ok = v_node(c, n, v);
    c->sink = saved;
    return ok && !c->aborted;
}

static bool v_number(struct vctx *c, const struct js_node *n, const json_t *v)
{
    bool ok = true;
    char a[64], b[64];
    js_num_str(v, a, sizeof a);
    if (n->maximum && js_num_cmp(v, n->maximum) > 0) {
        js_num_str(n->maximum, b, sizeof b);
        ok = false;
        if (report(c, n, "maximum", "must be <= %s, got %s", b, a)) {
            return false;
        }
    }
    if (n->exclusive_maximum && js_num_cmp(v, n->exclusive_maximum) >= 0) {
        js_num_str(n->exclusive_maximum, b, sizeof b);
        ok = false;
        if (report(c, n, "exclusiveMaximum", "must be < %s, got %s", b, a)) {
            return false;
        }
    }
    if (n->minimum && js_num_cmp(v, n->minimum) < 0) {
        js_num_str(n->minimum, b, sizeof b);
        ok = false;
        if (report(c, n, "minimum", "must be >= %s, got %s", b, a)) {
            return false;
        }
    }
    if (n->exclusive_minimum && js_num_cmp(v, n->exclusive_minimum) <= 0) {
        js_num_str(n->exclusive_minimum, b, sizeof b);
        ok = false;
        if (report(c, n, "exclusiveMinimum", "must be > %s, got %s", b, a)) {
            return false;
        }
    }
    if (n->multiple_of) {
        bool mult;
        if (json_is_integer(v) && json_is_integer(n->multiple_of)) {
            mult = json_integer_value(v) % json_integer_value(n->multiple_of) == 0;
        } else {
            double x = json_number_value(v), m = json_number_value(n->multiple_of);
            double q = x / m;
            mult = isfinite(q) && fabs(q - nearbyint(q)) <= 1e-9 * fmax(1.0, fabs(q));
        }
        if (!mult) {
            js_num_str(n->multiple_of, b, sizeof b);
            ok = false;
            if (report(c, n, "multipleOf", "must be a multiple of %s, got %s", b, a)) {
                return false;
            }
        }
    }
    return ok;
}

static bool v_string(struct vctx *c, const struct js_node *n, const json_t *v)
{
    bool ok = true;
    const char *s = json_string_value(v);
    size_t blen = json_string_length(v);
    if (n->max_length >= 0 || n->min_length >= 0) {
        size_t len = js_utf8_len(s, blen);
        if (n->max_length >= 0 && len > (uint64_t)n->max_length) {
            ok = false;
            if (report(c, n, "maxLength", "must be at most %lld characters long, got %zu",
                       (long long)n->max_length, len)) {
                return false;
            }
        }
        if (n->min_length >= 0 && len < (uint64_t)n->min_length) {
            ok = false;
            if (report(c, n, "minLength", "must be at least %lld characters long, got %zu",
                       (long long)n->min_length, len)) {
                return false;
            }
        }
    }
    if (n->pattern && !js_regex_search(n->pattern, s, blen)) {
        char show[SHOW_MAX];
        js_dump_short(v, show, sizeof show);
        ok = false;
        if (report(c, n, "pattern", "must match the regular expression /%s/, got %s", n->pattern->src, show)) {
            return false;
        }
    }
    if (n->format != JS_FMT_NONE && !js_format_check(n->format, s, blen)) {
        char show[SHOW_MAX];
        js_dump_short(v, show, sizeof show);
        ok = false;
        if (report(c, n, "format", "must be %s (format \"%s\"), got %s", js_format_describe(n->format),
                   n->format_name, show)) {
            return false;
        }
    }
    return ok;
}

static int hash_cmp(const void *a, const void *b, void *ud)
{
    const uint64_t *h = ud;
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    if (h[x] != h[y]) {
        return h[x] < h[y] ? -1 : 1;
    }
    return (x > y) - (x < y);
}

/* Find two equal items; true with *i < *j if there are. */
static bool find_duplicate(const json_t *v, size_t *i_out, size_t *j_out)
{
    size_t n = json_array_size(v);
    if (n <= 16) {
        for (size_t j = 1; j < n; j++) {
            for (size_t i = 0; i < j; i++) {
                if (js_equal(json_array_get(v, i), json_array_get(v, j))) {
                    *i_out = i;
                    *j_out = j;
                    return true;
                }
            }
        }
        return false;
    }
    uint64_t *h = tr_malloc(n * sizeof *h);
    size_t *idx = tr_malloc(n * sizeof *idx);
    for (size_t i = 0; i < n; i++) {
        h[i] = js_hash(json_array_get(v, i));
        idx[i] = i;
    }
    qsort_r(idx, n, sizeof *idx, hash_cmp, h);
    bool found = false;
    for (size_t a = 0; a < n && !found; a++) {
        for (size_t b = a + 1; b < n && h[idx[b]] == h[idx[a]]; b++) {
            if (js_equal(json_array_get(v, idx[a]), json_array_get(v, idx[b]))) {
                *i_out = idx[a];
                *j_out = idx[b];
                found = true;
                break;
            }
        }
    }
    tr_free(idx);
    tr_free(h);
    return found;
}

static bool v_array(struct vctx *c, const struct js_node *n, const json_t *v)
{
    bool ok = true;
    size_t size = json_array_size(v);
    size_t base = c->ptr_len;
    if (n->max_items >= 0 && size > (uint64_t)n->max_items) {
        ok = false;
        if (report(c, n, "maxItems", "must have at most %lld items, got %zu", (long long)n->max_items, size)) {
            return false;
        }
    }
    if (n->min_items >= 0 && size < (uint64_t)n->min_items) {
        ok = false;
        if (report(c, n, "minItems", "must have at least %lld items, got %zu", (long long)n->min_items, size)) {
            return false;
        }
    }
    if (n->unique_items) {
        size_t i, j;
        if (find_duplicate(v, &i, &j)) {
            ok = false;
            if (report(c, n, "uniqueItems", "items must be unique, but items %zu and %zu are equal", i, j)) {
                return false;
            }
        }
    }
    if (n->items && n->items->kind != JS_NODE_TRUE) {
        for (size_t i = 0; i < size; i++) {
            ptr_push_index(c, i);
            bool r = v_node(c, n->items, json_array_get(v, i));
            ptr_pop(c, base);
            if (!r) {
                ok = false;
                if (halted(c)) {
                    return false;
                }
            }
        }
    } else if (n->items_is_list) {
        size_t k = n->items_list.n;
        for (size_t i = 0; i < size && i < k; i++) {
            ptr_push_index(c, i);
            bool r = v_node(c, n->items_list.v[i], json_array_get(v, i));
            ptr_pop(c, base);
            if (!r) {
                ok = false;
                if (halted(c)) {
                    return false;
                }
            }
        }
        const struct js_node *add = n->additional_items;
        if (add && size > k && add->kind == JS_NODE_FALSE) {
            ok = false;
            if (report(c, n, "additionalItems", "must have at most %zu items (additionalItems is false), got %zu",
                       k, size)) {
                return false;
            }
        } else if (add && add->kind != JS_NODE_TRUE) {
            for (size_t i = k; i < size; i++) {
                ptr_push_index(c, i);
                bool r = v_node(c, add, json_array_get(v, i));
                ptr_pop(c, base);
                if (!r) {
                    ok = false;
                    if (halted(c)) {
                        return false;
                    }
                }
            }
        }
    }
    if (n->contains) {
        bool any = false;
        for (size_t i = 0; i < size && !any; i++) {
            ptr_push_index(c, i);
            any = v_probe(c, n->contains, json_array_get(v, i), NULL, 0);
            ptr_pop(c, base);
            if (c->aborted) {
                return false;
            }
        }
        if (!any) {
            ok = false;
            if (report(c, n, "contains", "must contain at least one item that matches the \"contains\" schema")) {
                return false;
            }
        }
    }
    return ok;
}

static const struct js_node *find_prop(const struct js_node *n, const char *key, size_t len)
{
    size_t lo = 0, hi = n->n_props;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        const struct js_prop *p = &n->props[mid];
        int r = p->len != len ? (p->len < len ? -1 : 1) : memcmp(p->name, key, len);
        if (r == 0) {
            return p->node;
        }
        if (r < 0) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return NULL;
}

/* "a, b, c" from the declared property names and patterns. */
static void allowed_list(const struct js_node *n, char *buf, size_t cap)
{
    size_t len = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < n->n_props; i++) {
        js_bufcat(buf, cap, &len, "%s\"%.*s\"", i ? ", " : "", (int)n->props[i].len, n->props[i].name);
    }
    for (size_t i = 0; i < n->n_pprops; i++) {
        js_bufcat(buf, cap, &len, "%snames matching /%s/", len ? ", " : "", n->pprops[i].re->src);
    }
    if (len == 0) {
        js_bufcat(buf, cap, &len, "none");
    }
}

static bool v_object(struct vctx *c, const struct js_node *n, const json_t *v)
{
    bool ok = true;
    size_t size = json_object_size(v);
    size_t base = c->ptr_len;
    if (n->max_props >= 0 && size > (uint64_t)n->max_props) {
        ok = false;
        if (report(c, n, "maxProperties", "must have at most %lld properties, got %zu", (long long)n->max_props,
                   size)) {
            return false;
        }
    }
    if (n->min_props >= 0 && size < (uint64_t)n->min_props) {
        ok = false;
        if (report(c, n, "minProperties", "must have at least %lld properties, got %zu",
                   (long long)n->min_props, size)) {
            return false;
        }
    }
    for (size_t i = 0; n->required && i < json_array_size(n->required); i++) {
        const json_t *name = json_array_get(n->required, i);
        if (!json_object_getn(v, json_string_value(name), json_string_length(name))) {
            char show[SHOW_MAX];
            js_dump_short(name, show, sizeof show);
            ok = false;
            if (report(c, n, "required", "missing required property %s", show)) {
                return false;
            }
        }
    }
    for (size_t i = 0; i < n->n_deps; i++) {
        const struct js_dep *d = &n->deps[i];
        if (!json_object_getn(v, d->name, d->len)) {
            continue;
        }
        if (d->names) {
            for (size_t k = 0; k < json_array_size(d->names); k++) {
                const json_t *need = json_array_get(d->names, k);
                if (!json_object_getn(v, json_string_value(need), json_string_length(need))) {
                    ok = false;
                    if (report(c, n, "dependencies", "property \"%.*s\" requires property \"%s\" as well",
                               (int)d->len, d->name, json_string_value(need))) {
                        return false;
                    }
                }
            }
        } else if (!v_node(c, d->node, v)) {
            ok = false;
            if (halted(c)) {
                return false;
            }
        }
    }
    for (void *it = json_object_iter((json_t *)v); it; it = json_object_iter_next((json_t *)v, it)) {
        const char *key = json_object_iter_key(it);
        size_t klen = json_object_iter_key_len(it);
        const json_t *val = json_object_iter_value(it);
        if (n->property_names) {
            json_t *name = json_stringn(key, klen);
            char why[BRANCH_MSG_MAX];
            bool good = v_probe(c, n->property_names, name, why, sizeof why);
            if (!good) {
                char show[SHOW_MAX];
                js_dump_short(name, show, sizeof show);
                ok = false;
                ptr_push(c, key, klen);
                bool stop = c->aborted || report(c, n, "propertyNames", "property name %s is not allowed: %s",
                                                 show, why);
                ptr_pop(c, base);
                if (stop) {
                    json_decref(name);
                    return false;
                }
            }
            json_decref(name);
        }
        ptr_push(c, key, klen);
        bool matched = false;
        const struct js_node *p = n->n_props ? find_prop(n, key, klen) : NULL;
        if (p) {
            matched = true;
            if (!v_node(c, p, val)) {
                ok = false;
                if (halted(c)) {
                    ptr_pop(c, base);
                    return false;
                }
            }
        }
        for (size_t i = 0; i < n->n_pprops; i++) {
            if (!js_regex_search(n->pprops[i].re, key, klen)) {
                continue;
            }
            matched = true;
            if (!v_node(c, n->pprops[i].node, val)) {
                ok = false;
                if (halted(c)) {
                    ptr_pop(c, base);
                    return false;
                }
            }
        }
        const struct js_node *add = n->additional_props;
        if (!matched && add && add->kind == JS_NODE_FALSE) {
            char allowed[200];
            allowed_list(n, allowed, sizeof allowed);
            ok = false;
            if (report(c, n, "additionalProperties", "property \"%.*s\" is not allowed (allowed: %s)",
                       (int)(klen > 64 ? 64 : klen), key, allowed)) {
                ptr_pop(c, base);
                return false;
            }
        } else if (!matched && add && add->kind != JS_NODE_TRUE) {
            if (!v_node(c, add, val)) {
                ok = false;
                if (halted(c)) {
                    ptr_pop(c, base);
                    return false;
                }
            }
        }
        ptr_pop(c, base);
    }
    return ok;
}

/* anyOf / oneOf: which branches match, with the first error of the others. */
static bool v_choice(struct vctx *c, const struct js_node *n, const json_t *v, bool one)
{
    const struct js_nodes *list = one ? &n->one_of : &n->any_of;
    const char *kw = one ? "oneOf" : "anyOf";
    char why[TR_SCHEMA_MSG_MAX];
    size_t wlen = 0;
    size_t matched = 0, first = 0, second = 0;
    why[0] = '\0';
    for (size_t i = 0; i < list->n; i++) {
        char b[BRANCH_MSG_MAX];
        if (v_probe(c, list->v[i], v, b, sizeof b)) {
            if (matched == 0) {
                first = i;
            } else if (matched == 1) {
                second = i;
            }
            matched++;
            if (!one) {
                return true;
            }
        } else {
            if (c->aborted) {
                return false;
            }
            js_bufcat(why, sizeof why, &wlen, "; [%zu] %s", i, b);
        }
    }
    if (matched == 1 || (!one && matched > 0)) {
        return true;
    }
    if (matched > 1) {
        report(c, n, kw, "must match exactly one schema in oneOf, but matches %zu of them (%zu and %zu%s)", matched,
               first, second, matched > 2 ? ", ..." : "");
        return false;
    }
    report(c, n, kw, "must match %s of the %zu schemas in %s, but matches none%s", one ? "exactly one" : "at least one",
           list->n, kw, why);
    return false;
}

static bool v_node(struct vctx *c, const struct js_node *n, const json_t *v)
{
    if (c->aborted) {
        return false;
    }
    if (++c->steps > TR_SCHEMA_MAX_STEPS) {
        return abort_limit(c, n, "validation needs too much work for this schema and value (limit reached)");
    }
    if (n->kind == JS_NODE_TRUE) {
        return true;
    }
    if (n->kind == JS_NODE_FALSE) {
        report(c, n, "", "no value is allowed here (the schema is false)");
        return false;
    }
    if (c->depth >= TR_SCHEMA_MAX_EVAL_DEPTH) {
        return abort_limit(c, n, "value or schema nested too deeply to validate (limit reached)");
    }
    c->depth++;
    bool ok = true;
    if (n->ref) {
        ok = v_node(c, n->ref, v);
        c->depth--;
        return ok;
    }

#define CHECK(expr)                   \
    do {                              \
        if (!(expr)) {                \
            ok = false;               \
            if (halted(c)) {          \
                goto out;             \
            }                         \
        }                             \
    } while (0)
#define REPORT(...)                   \
    do {                              \
        ok = false;                   \
        if (report(c, n, __VA_ARGS__)) { \
            goto out;                 \
        }                             \
    } while (0)

    if (n->types && !type_ok(n->types, v)) {
        char want[128];
        type_list(n->types, want, sizeof want);
        REPORT("type", "must be of type %s, got %s", want, inst_type(v));
    }
    if (n->has_const && !js_equal(v, n->const_)) {
        char want[SHOW_MAX], got[SHOW_MAX];
        js_dump_short(n->const_, want, sizeof want);
        js_dump_short(v, got, sizeof got);
        REPORT("const", "must be exactly %s, got %s", want, got);
    }
    if (n->enum_) {
        bool found = false;
        for (size_t i = 0; i < json_array_size(n->enum_) && !found; i++) {
            found = js_equal(v, json_array_get(n->enum_, i));
        }
        if (!found) {
            char want[200], got[SHOW_MAX];
            js_dump_short(n->enum_, want, sizeof want);
            js_dump_short(v, got, sizeof got);
            REPORT("enum", "must be one of %s, got %s", want, got);
        }
    }
    switch (json_typeof(v)) {
    case JSON_INTEGER:
    case JSON_REAL:
        CHECK(v_number(c, n, v));
        break;
    case JSON_STRING:
        CHECK(v_string(c, n, v));
        break;
    case JSON_ARRAY:
        CHECK(v_array(c, n, v));
        break;
    case JSON_OBJECT:
        CHECK(v_object(c, n, v));
        break;
    default:
        break;
    }
    for (size_t i = 0; i < n->all_of.n; i++) {
        CHECK(v_node(c, n->all_of.v[i], v));
    }
    if (n->any_of.n) {
        CHECK(v_choice(c, n, v, false));
    }
    if (n->one_of.n) {
        CHECK(v_choice(c, n, v, true));
    }
    if (n->not_) {
        if (v_probe(c, n->not_, v, NULL, 0)) {
            REPORT("not", "must not match the schema in \"not\"");
        }
        if (c->aborted) {
            ok = false;
            goto out;
        }
    }
    if (n->if_ && (n->then_ || n->else_)) {
        bool cond = v_probe(c, n->if_, v, NULL, 0);
        if (c->aborted) {
            ok = false;
            goto out;
        }
        const struct js_node *branch = cond ? n->then_ : n->else_;
        if (branch) {
            CHECK(v_node(c, branch, v));
        }
    }
out:
    c->depth--;
    return ok && !c->aborted;
#undef CHECK
#undef REPORT
}

int tr_schema_validate(const struct tr_schema *s, const json_t *instance, struct tr_schema_errors *errs)
{
    struct sink top = {.errs = errs};
    struct vctx c = {.sink = &top, .top = errs};
    if (errs) {
        memset(errs, 0, sizeof *errs);
    }
    ptr_push(&c, "", 0);
    ptr_pop(&c, 0);
    bool ok = instance && v_node(&c, s->root, instance);
    if (!instance && errs) {
        errs->count = 1;
        snprintf(errs->e[0].message, sizeof errs->e[0].message, "no value");
        snprintf(errs->e[0].schema_ptr, sizeof errs->e[0].schema_ptr, "#");
    }
    bool aborted = c.aborted;
    tr_free(c.ptr);
    if (aborted) {
        return TR_ELIMIT;
    }
    return ok ? 0 : TR_EINVAL;
}

size_t tr_schema_errors_format(const struct tr_schema_errors *errs, char *buf, size_t cap)
{
    size_t need = 0;
    for (unsigned i = 0; i <= errs->count; i++) {
        char line[TR_SCHEMA_PTR_MAX * 2 + TR_SCHEMA_MSG_MAX + 32];
        int n;
        if (i == errs->count) {
            if (!errs->truncated) {
                break;
            }
            n = snprintf(line, sizeof line, "(more errors not shown)\n");
        } else {
            const struct tr_schema_error *e = &errs->e[i];
            n = snprintf(line, sizeof line, "at %s: %s (schema %s)\n", e->instance_ptr[0] ? e->instance_ptr : "(root)",
                         e->message, e->schema_ptr);
        }
        if (n < 0) {
            continue;
        }
        size_t len = (size_t)n < sizeof line ? (size_t)n : sizeof line - 1;
        if (need < cap) {
            size_t room = cap - need - 1;
            memcpy(buf + need, line, len < room ? len : room);
        }
        need += len;
    }
    if (cap > 0) {
        buf[need < cap ? need : cap - 1] = '\0';
    }
    return need;
}
