/* Compiling a JSON Schema (draft 7): from a json_t document to a graph of
 * struct js_node.
 *
 * 1. The schema is measured (size and depth bounds) and deep-copied; nodes
 *    borrow strings and values from the copy, which the schema owns.
 * 2. A keyword-aware walk compiles every subschema of the document, records
 *    each "$id" (and "#name" anchor) it meets, and queues every "$ref". A
 *    keyword we do not know is noted, not yet refused (see 4).
 * 3. The queued references are resolved in order against the recorded ids;
 *    a target that the walk did not reach (a JSON pointer into an unknown
 *    member, or the built-in draft-07 meta-schema) is compiled then, which may
 *    queue more references. The queue is a loop, not recursion.
 * 4. An unknown keyword is refused unless a $ref reached into its value (it
 *    is then a container of definitions).
 * 5. $ref, allOf, anyOf, oneOf, not, if/then/else and schema dependencies
 *    apply a subschema to the same instance; a cycle among those edges would
 *    recurse forever, so it is refused.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "actors/jsonschema_int.h"

#define JS_DEFAULT_BASE "urn:troupe:schema"

/* ------------------------------------------------------------------------ */
/* Pointer map (open addressing), compile-time only.                          */

struct ptrmap {
    const void **keys;
    void **vals;
    size_t cap, n;
};

static size_t ptr_hash(const void *p, size_t cap)
{
    uint64_t x = (uint64_t)(uintptr_t)p;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return (size_t)x & (cap - 1);
}

static void *ptrmap_get(const struct ptrmap *m, const void *k)
{
    if (m->cap == 0) {
        return NULL;
    }
    for (size_t i = ptr_hash(k, m->cap);; i = (i + 1) & (m->cap - 1)) {
        if (m->keys[i] == k) {
            return m->vals[i];
        }
        if (!m->keys[i]) {
            return NULL;
        }
    }
}

static void ptrmap_put(struct ptrmap *m, const void *k, void *v)
{
    if ((m->n + 1) * 2 > m->cap) {
        struct ptrmap old = *m;
        m->cap = old.cap ? old.cap * 2 : 64;
        m->keys = tr_calloc(m->cap, sizeof *m->keys);
        m->vals = tr_calloc(m->cap, sizeof *m->vals);
        m->n = 0;
        for (size_t i = 0; i < old.cap; i++) {
            if (old.keys[i]) {
                ptrmap_put(m, old.keys[i], old.vals[i]);
            }
        }
        tr_free(old.keys);
        tr_free(old.vals);
    }
    size_t i = ptr_hash(k, m->cap);
    while (m->keys[i] && m->keys[i] != k) {
        i = (i + 1) & (m->cap - 1);
    }
    if (!m->keys[i]) {
        m->n++;
    }
    m->keys[i] = k;
    m->vals[i] = v;
}

static void ptrmap_free(struct ptrmap *m)
{
    tr_free(m->keys);
    tr_free(m->vals);
}

/* ------------------------------------------------------------------------ */
/* Compile context.                                                          */

struct pending_ref {
    struct js_node *node;
    char *uri;        /* resolved, with fragment */
};

struct unknown_kw {
    const json_t *parent;
    const json_t *value;
    const char *key;  /* borrowed from the copy */
    char *loc;        /* of the object holding it */
};

struct cc {
    struct tr_schema *s;
    struct tr_err *err;
    struct ptrmap nodes;      /* const json_t * -> struct js_node * */
    struct ptrmap reached;    /* json values a $ref pointer walked through */
    json_t *reached_members;  /* "<object>/<key>" of those that are singletons */
    json_t *ids;              /* uri -> index into id_json */
    const json_t **id_json;
    size_t n_ids, cap_ids;
    char *root_base;          /* base URI of the root document (no fragment) */
    struct pending_ref *refs;
    size_t n_refs, cap_refs;
    struct unknown_kw *unknown;
    size_t n_unknown, cap_unknown;
    bool meta_loaded;
};

#define GROW(arr, n, cap)                                              \
    do {                                                               \
        if ((n) == (cap)) {                                            \
            (cap) = (cap) ? (cap) * 2 : 16;                            \
            (arr) = tr_realloc((arr), (cap) * sizeof *(arr));          \
        }                                                              \
    } while (0)

static const char *type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "object";
    case JSON_ARRAY: return "array";
    case JSON_STRING: return "string";
    case JSON_INTEGER: return "integer";
    case JSON_REAL: return "number";
    case JSON_TRUE:
    case JSON_FALSE: return "boolean";
    default: return "null";
    }
}

/* loc + "/" + escaped key; a new string. */
static char *loc_child(const char *loc, const char *key, size_t len)
{
    struct tr_buf b = {0};
    tr_buf_adds(&b, loc);
    tr_buf_add(&b, "/", 1);
    for (size_t i = 0; i < len; i++) {
        if (key[i] == '~') {
            tr_buf_add(&b, "~0", 2);
        } else if (key[i] == '/') {
            tr_buf_add(&b, "~1", 2);
        } else {
            tr_buf_add(&b, key + i, 1);
        }
    }
    return b.p;
}

static char *loc_index(const char *loc, size_t i)
{
    char n[32];
    snprintf(n, sizeof n, "%zu", i);
    return loc_child(loc, n, strlen(n));
}

static void add_id(struct cc *c, const char *uri, const json_t *j)
{
    if (json_object_get(c->ids, uri)) {
        return; /* the first one wins */
    }
    GROW(c->id_json, c->n_ids, c->cap_ids);
    c->id_json[c->n_ids] = j;
    json_object_set_new(c->ids, uri, json_integer((json_int_t)c->n_ids));
    c->n_ids++;
}

static const json_t *find_id(struct cc *c, const char *uri)
{
    json_t *i = json_object_get(c->ids, uri);
    return i ? c->id_json[json_integer_value(i)] : NULL;
}

static struct js_node *compile(struct cc *c, const json_t *j, const char *base, const char *loc);

/* A subschema under keyword kw (and, if name != NULL, member name). */
static struct js_node *sub(struct cc *c, const json_t *j, const char *base, const char *loc,
                           const char *kw, const char *name, size_t name_len)
{
    char *l1 = loc_child(loc, kw, strlen(kw));
    char *l2 = name ? loc_child(l1, name, name_len) : NULL;
    struct js_node *n = compile(c, j, base, l2 ? l2 : l1);
    tr_free(l2);
    tr_free(l1);
    return n;
}

static struct js_node *sub_index(struct cc *c, const json_t *j, const char *base, const char *loc,
                                 const char *kw, size_t i)
{
    char *l1 = loc_child(loc, kw, strlen(kw));
    char *l2 = loc_index(l1, i);
    struct js_node *n = compile(c, j, base, l2);
    tr_free(l2);
    tr_free(l1);
    return n;
}

static int bad(struct cc *c, const char *kw, const char *loc, const char *what)
{
    return tr_err_set(c->err, TR_EINVAL, "\"%s\" at %s must be %s", kw, loc, what);
}

/* A non-negative integer keyword (integral reals allowed, as in draft 7). */
static int get_count(struct cc *c, const json_t *v, const char *kw, const char *loc, int64_t *out)
{
    if (!js_is_integral(v) || (json_is_integer(v) ? json_integer_value(v) < 0 : json_real_value(v) < 0)) {
        return bad(c, kw, loc, "a non-negative integer");
    }
    if (json_is_integer(v)) {
        *out = json_integer_value(v);
    } else {
        double d = json_real_value(v);
        *out = d > 4e18 ? (int64_t)4e18 : (int64_t)d;
    }
    return 0;
}

static int schema_list(struct cc *c, const json_t *v, const char *base, const char *loc, const char *kw,
                       struct js_nodes *out)
{
    if (!json_is_array(v) || json_array_size(v) == 0) {
        return bad(c, kw, loc, "a non-empty array of schemas");
    }
    out->n = json_array_size(v);
    out->v = tr_calloc(out->n, sizeof *out->v);
    for (size_t i = 0; i < out->n; i++) {
        out->v[i] = sub_index(c, json_array_get(v, i), base, loc, kw, i);
        if (!out->v[i]) {
            return c->err->code;
        }
    }
    return 0;
}

static int string_set(struct cc *c, const json_t *v, const char *kw, const char *loc)
{
    if (!json_is_array(v)) {
        return bad(c, kw, loc, "an array of unique strings");
    }
    for (size_t i = 0; i < json_array_size(v); i++) {
        const json_t *e = json_array_get(v, i);
        if (!json_is_string(e)) {
            return bad(c, kw, loc, "an array of unique strings");
        }
        for (size_t k = 0; k < i; k++) {
            if (js_equal(e, json_array_get(v, k))) {
                return bad(c, kw, loc, "an array of unique strings");
            }
        }
    }
    return 0;
}

static int type_bits(const char *name)
{
    static const struct {
        const char *name;
        unsigned bit;
    } t[] = {{"null", JS_T_NULL},     {"boolean", JS_T_BOOLEAN}, {"object", JS_T_OBJECT},
             {"array", JS_T_ARRAY},   {"number", JS_T_NUMBER},   {"string", JS_T_STRING},
             {"integer", JS_T_INTEGER}};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        if (strcmp(t[i].name, name) == 0) {
            return (int)t[i].bit;
        }
    }
    return 0;
}

static int kw_type(struct cc *c, struct js_node *n, const json_t *v, const char *loc)
{
    static const char *what = "a type name (null, boolean, object, array, number, string, integer) "
                              "or a non-empty array of distinct type names";
    if (json_is_string(v)) {
        n->types = (unsigned)type_bits(json_string_value(v));
        return n->types ? 0 : bad(c, "type", loc, what);
    }
    if (!json_is_array(v) || json_array_size(v) == 0) {
        return bad(c, "type", loc, what);
    }
    for (size_t i = 0; i < json_array_size(v); i++) {
        const json_t *e = json_array_get(v, i);
        unsigned b = json_is_string(e) ? (unsigned)type_bits(json_string_value(e)) : 0;
        if (!b || (n->types & b)) {
            return bad(c, "type", loc, what);
        }
        n->types |= b;
    }
    return 0;
}

static int add_regex(struct cc *c, const json_t *v, const char *kw, const char *loc, struct js_regex **out)
{
    struct tr_err rerr;
    int rv = js_regex_compile(json_string_value(v), json_string_length(v), out, &rerr);
    if (rv != 0) {
        return tr_err_set(c->err, rv, "%s %s at %s: %s", rv == TR_ENOTSUP ? "unsupported regular expression in"
                                                                          : "invalid regular expression in",
                          kw, loc, rerr.msg);
    }
    GROW(c->s->regexes, c->s->n_regexes, c->s->cap_regexes);
    c->s->regexes[c->s->n_regexes++] = *out;
    return 0;
}

static int prop_cmp(const void *a, const void *b)
{
    const struct js_prop *x = a, *y = b;
    if (x->len != y->len) {
        return x->len < y->len ? -1 : 1;
    }
    return memcmp(x->name, y->name, x->len);
}

static int kw_properties(struct cc *c, struct js_node *n, const json_t *v, const char *base, const char *loc)
{
    if (!json_is_object(v)) {
        return bad(c, "properties", loc, "an object of schemas");
    }
    n->props = tr_calloc(json_object_size(v) + 1, sizeof *n->props);
    for (void *it = json_object_iter((json_t *)v); it; it = json_object_iter_next((json_t *)v, it)) {
        struct js_prop *p = &n->props[n->n_props++];
        p->name = json_object_iter_key(it);
        p->len = json_object_iter_key_len(it);
        p->node = sub(c, json_object_iter_value(it), base, loc, "properties", p->name, p->len);
        if (!p->node) {
            return c->err->code;
        }
    }
    qsort(n->props, n->n_props, sizeof *n->props, prop_cmp);
    return 0;
}

static int kw_pattern_properties(struct cc *c, struct js_node *n, const json_t *v, const char *base,
                                 const char *loc)
{
    if (!json_is_object(v)) {
        return bad(c, "patternProperties", loc, "an object of schemas");
    }
    n->pprops = tr_calloc(json_object_size(v) + 1, sizeof *n->pprops);
    for (void *it = json_object_iter((json_t *)v); it; it = json_object_iter_next((json_t *)v, it)) {
        struct js_pprop *p = &n->pprops[n->n_pprops++];
        json_t *key = json_stringn(json_object_iter_key(it), json_object_iter_key_len(it));
        int rv = add_regex(c, key, "patternProperties", loc, &p->re);
        json_decref(key);
        if (rv != 0) {
            return rv;
        }
        p->node = sub(c, json_object_iter_value(it), base, loc, "patternProperties", json_object_iter_key(it),
                      json_object_iter_key_len(it));
        if (!p->node) {
            return c->err->code;
        }
    }
    return 0;
}

static int kw_dependencies(struct cc *c, struct js_node *n, const json_t *v, const char *base, const char *loc)
{
    if (!json_is_object(v)) {
        return bad(c, "dependencies", loc, "an object of schemas or arrays of property names");
    }
    n->deps = tr_calloc(json_object_size(v) + 1, sizeof *n->deps);
    for (void *it = json_object_iter((json_t *)v); it; it = json_object_iter_next((json_t *)v, it)) {
        struct js_dep *d = &n->deps[n->n_deps++];
        const json_t *dv = json_object_iter_value(it);
        d->name = json_object_iter_key(it);
        d->len = json_object_iter_key_len(it);
        if (json_is_array(dv)) {
            int rv = string_set(c, dv, "dependencies", loc);
            if (rv != 0) {
                return rv;
            }
            d->names = dv;
        } else {
            d->node = sub(c, dv, base, loc, "dependencies", d->name, d->len);
            if (!d->node) {
                return c->err->code;
            }
        }
    }
    return 0;
}

static int kw_definitions(struct cc *c, const char *kw, const json_t *v, const char *base, const char *loc)
{
    if (!json_is_object(v)) {
        return bad(c, kw, loc, "an object of schemas");
    }
    for (void *it = json_object_iter((json_t *)v); it; it = json_object_iter_next((json_t *)v, it)) {
        if (!sub(c, json_object_iter_value(it), base, loc, kw, json_object_iter_key(it),
                 json_object_iter_key_len(it))) {
            return c->err->code;
        }
    }
    return 0;
}

static bool is_draft7_uri(const char *s)
{
    return strcmp(s, "http://json-schema.org/draft-07/schema#") == 0 ||
           strcmp(s, "http://json-schema.org/draft-07/schema") == 0 ||
           strcmp(s, "https://json-schema.org/draft-07/schema#") == 0 ||
           strcmp(s, "https://json-schema.org/draft-07/schema") == 0;
}

/* Keywords that are only annotations, and the JSON type each must have
 * (0 = any). */
static const struct {
    const char *name;
    json_type type;
    bool any;
} annotations[] = {
    {"title", JSON_STRING, false},         {"description", JSON_STRING, false},
    {"default", JSON_NULL, true},          {"examples", JSON_ARRAY, false},
    {"$comment", JSON_STRING, false},      {"readOnly", JSON_TRUE, false},
    {"writeOnly", JSON_TRUE, false},       {"contentMediaType", JSON_STRING, false},
    {"contentEncoding", JSON_STRING, false},
};

static const char *const keywords[] = {
    "$id", "$schema", "$ref", "definitions", "$defs", "type", "enum", "const", "multipleOf", "maximum",
    "exclusiveMaximum", "minimum", "exclusiveMinimum", "maxLength", "minLength", "pattern", "format",
    "items", "additionalItems", "maxItems", "minItems", "uniqueItems", "contains", "maxProperties",
    "minProperties", "required", "properties", "patternProperties", "additionalProperties",
    "dependencies", "propertyNames", "if", "then", "else", "allOf", "anyOf", "oneOf", "not",
};

/* -1 unknown, else 0 (a keyword) or 1 (an annotation, index in *ann). */
static int keyword_kind(const char *k, size_t *ann)
{
    for (size_t i = 0; i < sizeof keywords / sizeof keywords[0]; i++) {
        if (strcmp(keywords[i], k) == 0) {
            return 0;
        }
    }
    for (size_t i = 0; i < sizeof annotations / sizeof annotations[0]; i++) {
        if (strcmp(annotations[i].name, k) == 0) {
            *ann = i;
            return 1;
        }
    }
    return -1;
}

static int check_annotation(struct cc *c, size_t a, const json_t *v, const char *loc)
{
    if (annotations[a].any) {
        return 0;
    }
    bool ok = annotations[a].type == JSON_TRUE ? json_is_boolean(v) : json_typeof(v) == annotations[a].type;
    if (!ok) {
        char what[32];
        snprintf(what, sizeof what, "a %s",
                 annotations[a].type == JSON_TRUE    ? "boolean"
                 : annotations[a].type == JSON_ARRAY ? "array"
                                                     : "string");
        return bad(c, annotations[a].name, loc, what);
    }
    return 0;
}

static void note_unknown(struct cc *c, const json_t *parent, const json_t *value, const char *key,
                         const char *loc)
{
    GROW(c->unknown, c->n_unknown, c->cap_unknown);
    c->unknown[c->n_unknown].parent = parent;
    c->unknown[c->n_unknown].value = value;
    c->unknown[c->n_unknown].key = key;
    c->unknown[c->n_unknown].loc = tr_strdup(loc);
    c->n_unknown++;
}

static struct js_node *new_node(struct cc *c, const json_t *j, const char *loc)
{
    struct tr_schema *s = c->s;
    struct js_node *n = tr_calloc(1, sizeof *n);
    n->json = j;
    n->loc = tr_strdup(loc);
    n->max_length = n->min_length = -1;
    n->max_items = n->min_items = -1;
    n->max_props = n->min_props = -1;
    GROW(s->nodes, s->n_nodes, s->cap_nodes);
    s->nodes[s->n_nodes++] = n;
    if (!json_is_boolean(j)) {
        /* jansson's true and false are singletons: one node per place */
        ptrmap_put(&c->nodes, j, n);
    }
    return n;
}

/* One keyword of a schema object; 0 or an error code (c->err set). */
static int keyword(struct cc *c, struct js_node *n, const char *k, const json_t *v, const char *base,
                   const char *loc)
{
#define SUB(field)                                   \
    do {                                             \
        n->field = sub(c, v, base, loc, k, NULL, 0); \
        return n->field ? 0 : c->err->code;          \
    } while (0)
#define NUMBER(field)                                \
    do {                                             \
        if (!json_is_number(v)) {                    \
            return bad(c, k, loc, "a number");       \
        }                                            \
        n->field = v;                                \
        return 0;                                    \
    } while (0)
#define COUNT(field) return get_count(c, v, k, loc, &n->field)

    if (strcmp(k, "type") == 0) {
        return kw_type(c, n, v, loc);
    } else if (strcmp(k, "enum") == 0) {
        if (!json_is_array(v)) {
            return bad(c, k, loc, "an array");
        }
        n->enum_ = v;
        return 0;
    } else if (strcmp(k, "const") == 0) {
        n->const_ = v;
        n->has_const = true;
        return 0;
    } else if (strcmp(k, "multipleOf") == 0) {
        if (!json_is_number(v) || (json_is_integer(v) ? json_integer_value(v) <= 0 : json_real_value(v) <= 0)) {
            return bad(c, k, loc, "a number greater than 0");
        }
        n->multiple_of = v;
        return 0;
    } else if (strcmp(k, "maximum") == 0) {
        NUMBER(maximum);
    } else if (strcmp(k, "exclusiveMaximum") == 0) {
        NUMBER(exclusive_maximum);
    } else if (strcmp(k, "minimum") == 0) {
        NUMBER(minimum);
    } else if (strcmp(k, "exclusiveMinimum") == 0) {
        NUMBER(exclusive_minimum);
    } else if (strcmp(k, "maxLength") == 0) {
        COUNT(max_length);
    } else if (strcmp(k, "minLength") == 0) {
        COUNT(min_length);
    } else if (strcmp(k, "pattern") == 0) {
        if (!json_is_string(v)) {
            return bad(c, k, loc, "a string");
        }
        return add_regex(c, v, k, loc, &n->pattern);
    } else if (strcmp(k, "format") == 0) {
        if (!json_is_string(v)) {
            return bad(c, k, loc, "a string");
        }
        n->format = js_format_lookup(json_string_value(v));
        n->format_name = json_string_value(v);
        return 0;
    } else if (strcmp(k, "items") == 0) {
        if (json_is_array(v)) {
            n->items_is_list = true;
            n->items_list.n = json_array_size(v);
            n->items_list.v = tr_calloc(n->items_list.n + 1, sizeof *n->items_list.v);
            for (size_t i = 0; i < n->items_list.n; i++) {
                n->items_list.v[i] = sub_index(c, json_array_get(v, i), base, loc, k, i);
                if (!n->items_list.v[i]) {
                    return c->err->code;
                }
            }
            return 0;
        }
        SUB(items);
    } else if (strcmp(k, "additionalItems") == 0) {
        SUB(additional_items);
    } else if (strcmp(k, "maxItems") == 0) {
        COUNT(max_items);
    } else if (strcmp(k, "minItems") == 0) {
        COUNT(min_items);
    } else if (strcmp(k, "uniqueItems") == 0) {
        if (!json_is_boolean(v)) {
            return bad(c, k, loc, "a boolean");
        }
        n->unique_items = json_is_true(v);
        return 0;
    } else if (strcmp(k, "contains") == 0) {
        SUB(contains);
    } else if (strcmp(k, "maxProperties") == 0) {
        COUNT(max_props);
    } else if (strcmp(k, "minProperties") == 0) {
        COUNT(min_props);
    } else if (strcmp(k, "required") == 0) {
        int rv = string_set(c, v, k, loc);
        n->required = v;
        return rv;
    } else if (strcmp(k, "properties") == 0) {
        return kw_properties(c, n, v, base, loc);
    } else if (strcmp(k, "patternProperties") == 0) {
        return kw_pattern_properties(c, n, v, base, loc);
    } else if (strcmp(k, "additionalProperties") == 0) {
        SUB(additional_props);
    } else if (strcmp(k, "dependencies") == 0) {
        return kw_dependencies(c, n, v, base, loc);
    } else if (strcmp(k, "propertyNames") == 0) {
        SUB(property_names);
    } else if (strcmp(k, "if") == 0) {
        SUB(if_);
    } else if (strcmp(k, "then") == 0) {
        SUB(then_);
    } else if (strcmp(k, "else") == 0) {
        SUB(else_);
    } else if (strcmp(k, "allOf") == 0) {
        return schema_list(c, v, base, loc, k, &n->all_of);
    } else if (strcmp(k, "anyOf") == 0) {
        return schema_list(c, v, base, loc, k, &n->any_of);
    } else if (strcmp(k, "oneOf") == 0) {
        return schema_list(c, v, base, loc, k, &n->one_of);
    } else if (strcmp(k, "not") == 0) {
        SUB(not_);
    } else if (strcmp(k, "definitions") == 0 || strcmp(k, "$defs") == 0) {
        return kw_definitions(c, k, v, base, loc);
    } else if (strcmp(k, "$schema") == 0) {
        if (!json_is_string(v)) {
            return bad(c, k, loc, "a string");
        }
        if (!is_draft7_uri(json_string_value(v))) {
            return tr_err_set(c->err, TR_ENOTSUP, "unsupported \"$schema\" at %s: \"%s\" (only draft 7, "
                              "http://json-schema.org/draft-07/schema#, is supported)", loc, json_string_value(v));
        }
        return 0;
    }
    return 0; /* $id, $ref: handled by compile() */
#undef SUB
#undef NUMBER
#undef COUNT
}

static struct js_node *compile(struct cc *c, const json_t *j, const char *base, const char *loc)
{
    struct js_node *n = ptrmap_get(&c->nodes, j);
    if (n) {
        return n;
    }
    if (c->s->n_nodes >= TR_SCHEMA_MAX_NODES) {
        tr_err_set(c->err, TR_ELIMIT, "schema has more than %d subschemas", TR_SCHEMA_MAX_NODES);
        return NULL;
    }
    if (json_is_boolean(j)) {
        n = new_node(c, j, loc);
        n->kind = json_is_true(j) ? JS_NODE_TRUE : JS_NODE_FALSE;
        return n;
    }
    if (!json_is_object(j)) {
        tr_err_set(c->err, TR_EINVAL, "schema at %s must be an object or a boolean, got %s", loc, type_name(j));
        return NULL;
    }
    n = new_node(c, j, loc);
    n->kind = JS_NODE_OBJECT;

    const json_t *ref = json_object_get(j, "$ref");
    char *own_base = NULL;
    const json_t *id = json_object_get(j, "$id");
    if (ref) {
        if (!json_is_string(ref)) {
            bad(c, "$ref", loc, "a string");
            return NULL;
        }
        n->ref_str = json_string_value(ref);
        GROW(c->refs, c->n_refs, c->cap_refs);
        c->refs[c->n_refs].node = n;
        c->refs[c->n_refs].uri = js_uri_resolve(base, n->ref_str);
        c->n_refs++;
    } else if (id) {
        if (!json_is_string(id)) {
            bad(c, "$id", loc, "a string");
            return NULL;
        }
        char *full = js_uri_resolve(base, json_string_value(id));
        own_base = js_uri_strip_frag(full);
        const char *frag = strchr(full, '#');
        if (frag && frag[1] != '\0') {
            if (frag[1] == '/') {
                tr_err_set(c->err, TR_EINVAL, "\"$id\" at %s must not hold a JSON pointer fragment", loc);
                tr_free(full);
                tr_free(own_base);
                return NULL;
            }
            add_id(c, full, j);
        }
        if (json_string_value(id)[0] != '#') {
            add_id(c, own_base, j);
        }
        tr_free(full);
        base = own_base;
    }

    for (void *it = json_object_iter((json_t *)j); it; it = json_object_iter_next((json_t *)j, it)) {
        const char *k = json_object_iter_key(it);
        const json_t *v = json_object_iter_value(it);
        size_t ann;
        int kind = strlen(k) == json_object_iter_key_len(it) ? keyword_kind(k, &ann) : -1;
        if (kind < 0) {
            note_unknown(c, j, v, k, loc);
            continue;
        }
        if (ref) {
            continue; /* draft 7: $ref makes its siblings ignored */
        }
        int rv = kind == 1 ? check_annotation(c, ann, v, loc) : keyword(c, n, k, v, base, loc);
        if (rv != 0) {
            tr_free(own_base);
            return NULL;
        }
    }
    tr_free(own_base);
    return n;
}

/* ------------------------------------------------------------------------ */
/* References.                                                               */

static int walk_document(struct cc *c, const json_t *doc, const char *base, const char *loc,
                         struct js_node **root)
{
    add_id(c, base, doc);
    *root = compile(c, doc, base, loc);
    return *root ? 0 : c->err->code;
}

static int load_meta(struct cc *c)
{
    json_error_t jerr;
    json_t *meta = json_loads(js_draft7_meta, 0, &jerr);
    if (!meta) {
        return tr_err_set(c->err, TR_EINVAL, "built-in meta-schema: %s", jerr.text);
    }
    json_array_append_new(c->s->docs, meta);
    c->meta_loaded = true;
    struct js_node *root;
    return walk_document(c, meta, JS_DRAFT7_ID, JS_DRAFT7_ID "#", &root);
}

/* The key under which reached_members records parent[key]. */
static char *member_key(const json_t *parent, const char *key)
{
    size_t n = strlen(key) + 32;
    char *k = tr_malloc(n);
    snprintf(k, n, "%p/%s", (const void *)parent, key);
    return k;
}

static bool was_reached(struct cc *c, const struct unknown_kw *u)
{
    if (!json_is_boolean(u->value) && !json_is_null(u->value)) {
        return ptrmap_get(&c->reached, u->value) != NULL;
    }
    char *k = member_key(u->parent, u->key);
    bool r = json_object_get(c->reached_members, k) != NULL;
    tr_free(k);
    return r;
}

/* Follow a JSON pointer (already percent-decoded) from doc. */
static const json_t *follow_pointer(struct cc *c, const json_t *doc, const char *p, size_t len)
{
    const json_t *cur = doc;
    size_t i = 0;
    ptrmap_put(&c->reached, cur, (void *)1);
    while (i < len) {
        if (p[i] != '/') {
            return NULL;
        }
        i++;
        struct tr_buf tok = {0};
        tr_buf_add(&tok, "", 0);
        while (i < len && p[i] != '/') {
            if (p[i] == '~' && i + 1 < len && (p[i + 1] == '0' || p[i + 1] == '1')) {
                tr_buf_add(&tok, p[i + 1] == '0' ? "~" : "/", 1);
                i += 2;
            } else {
                tr_buf_add(&tok, p + i, 1);
                i++;
            }
        }
        const json_t *prev = cur;
        if (json_is_object(cur)) {
            cur = json_object_getn(cur, tok.p, tok.len);
        } else if (json_is_array(cur)) {
            char *end;
            unsigned long idx = strtoul(tok.p, &end, 10);
            bool digits = tok.len > 0 && *end == '\0' && tok.p[0] >= '0' && tok.p[0] <= '9' &&
                          (tok.len == 1 || tok.p[0] != '0');
            cur = digits ? json_array_get(cur, idx) : NULL;
        } else {
            cur = NULL;
        }
        if (cur) {
            ptrmap_put(&c->reached, cur, (void *)1);
            if (json_is_boolean(cur) || json_is_null(cur)) {
                char *k = member_key(prev, tok.p);
                json_object_set_new(c->reached_members, k, json_true());
                tr_free(k);
            }
        }
        tr_free(tok.p);
        if (!cur) {
            return NULL;
        }
    }
    return cur;
}

static int resolve_ref(struct cc *c, size_t ri)
{
    /* c->refs may move while targets compile: copy what we need */
    struct pending_ref *r = &c->refs[ri];
    struct js_node *node = r->node;
    const char *uri = r->uri;
    char *doc_uri = js_uri_strip_frag(uri);
    const char *hash = strchr(uri, '#');
    const char *frag = hash ? hash + 1 : "";
    const json_t *doc = find_id(c, doc_uri);
    int rv = 0;
    if (!doc && !c->meta_loaded && is_draft7_uri(doc_uri)) {
        rv = load_meta(c);
        if (rv != 0) {
            goto out;
        }
        doc = find_id(c, JS_DRAFT7_ID);
    }
    if (!doc) {
        rv = tr_err_set(c->err, TR_ENOTSUP, "unsupported \"$ref\" at %s: \"%s\" is outside this schema "
                        "(remote references are not supported)", node->loc, node->ref_str);
        goto out;
    }
    size_t flen;
    char *f = js_pct_decode(frag, &flen);
    const json_t *target;
    if (flen == 0) {
        target = doc;
        ptrmap_put(&c->reached, doc, (void *)1);
    } else if (f[0] == '/') {
        target = follow_pointer(c, doc, f, flen);
    } else {
        target = find_id(c, uri);
    }
    if (!target) {
        tr_free(f);
        rv = tr_err_set(c->err, TR_EINVAL, "\"$ref\" at %s: \"%s\" points to nothing in this schema",
                        node->loc, node->ref_str);
        goto out;
    }
    struct js_node *t = ptrmap_get(&c->nodes, target);
    if (!t) {
        struct tr_buf loc = {0};
        tr_buf_adds(&loc, strcmp(doc_uri, c->root_base) == 0 ? "" : doc_uri);
        tr_buf_add(&loc, "#", 1);
        tr_buf_adds(&loc, f);
        t = compile(c, target, doc_uri, loc.p);
        tr_free(loc.p);
    }
    tr_free(f);
    if (!t) {
        rv = c->err->code;
        goto out;
    }
    node->ref = t;
out:
    tr_free(doc_uri);
    return rv;
}

/* ------------------------------------------------------------------------ */
/* Cycles of in-place applicators.                                           */

static size_t n_edges(const struct js_node *n)
{
    return 1 + n->all_of.n + n->any_of.n + n->one_of.n + 4 + n->n_deps;
}

static struct js_node *edge(const struct js_node *n, size_t i)
{
    if (i == 0) {
        return n->ref;
    }
    i--;
    if (i < n->all_of.n) {
        return n->all_of.v[i];
    }
    i -= n->all_of.n;
    if (i < n->any_of.n) {
        return n->any_of.v[i];
    }
    i -= n->any_of.n;
    if (i < n->one_of.n) {
        return n->one_of.v[i];
    }
    i -= n->one_of.n;
    switch (i) {
    case 0: return n->not_;
    case 1: return n->if_;
    case 2: return n->then_;
    case 3: return n->else_;
    default: return n->deps[i - 4].node;
    }
}

static int check_cycles(struct cc *c)
{
    struct tr_schema *s = c->s;
    struct frame {
        struct js_node *n;
        size_t next;
    } *stack = tr_malloc((s->n_nodes + 1) * sizeof *stack);
    int rv = 0;
    for (size_t i = 0; i < s->n_nodes && rv == 0; i++) {
        if (s->nodes[i]->mark) {
            continue;
        }
        size_t top = 0;
        stack[top++] = (struct frame){s->nodes[i], 0};
        s->nodes[i]->mark = 1;
        while (top > 0 && rv == 0) {
            struct frame *f = &stack[top - 1];
            if (f->next == n_edges(f->n)) {
                f->n->mark = 2;
                top--;
                continue;
            }
            struct js_node *t = edge(f->n, f->next++);
            if (!t || t->mark == 2) {
                continue;
            }
            if (t->mark == 1) {
                char msg[sizeof c->err->msg];
                size_t len = 0;
                size_t from = 0;
                while (stack[from].n != t) {
                    from++;
                }
                js_bufcat(msg, sizeof msg, &len, "unsupported schema: a cycle of $ref/allOf/anyOf/oneOf/not/"
                          "if/dependencies that never descends into the instance:");
                for (size_t k = from; k < top; k++) {
                    js_bufcat(msg, sizeof msg, &len, " %s ->", stack[k].n->loc);
                }
                js_bufcat(msg, sizeof msg, &len, " %s", t->loc);
                rv = tr_err_set(c->err, TR_ENOTSUP, "%s", msg);
                break;
            }
            t->mark = 1;
            stack[top++] = (struct frame){t, 0};
        }
    }
    tr_free(stack);
    return rv;
}

/* ------------------------------------------------------------------------ */
/* Bounds and the entry points.                                              */

static int measure(const json_t *v, int depth, size_t *count, struct tr_err *err)
{
    if (++*count > TR_SCHEMA_MAX_VALUES) {
        return tr_err_set(err, TR_ELIMIT, "schema has more than %d JSON values", TR_SCHEMA_MAX_VALUES);
    }
    if (depth > TR_SCHEMA_MAX_JSON_DEPTH) {
        return tr_err_set(err, TR_ELIMIT, "schema is nested deeper than %d", TR_SCHEMA_MAX_JSON_DEPTH);
    }
    if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++) {
            int rv = measure(json_array_get(v, i), depth + 1, count, err);
            if (rv != 0) {
                return rv;
            }
        }
    } else if (json_is_object(v)) {
        for (void *it = json_object_iter((json_t *)v); it; it = json_object_iter_next((json_t *)v, it)) {
            int rv = measure(json_object_iter_value(it), depth + 1, count, err);
            if (rv != 0) {
                return rv;
            }
        }
    }
    return 0;
}

static void node_free(struct js_node *n)
{
    tr_free(n->loc);
    tr_free(n->items_list.v);
    tr_free(n->props);
    tr_free(n->pprops);
    tr_free(n->deps);
    tr_free(n->all_of.v);
    tr_free(n->any_of.v);
    tr_free(n->one_of.v);
    tr_free(n);
}

void tr_schema_free(struct tr_schema *s)
{
    if (!s) {
        return;
    }
    for (size_t i = 0; i < s->n_nodes; i++) {
        node_free(s->nodes[i]);
    }
    for (size_t i = 0; i < s->n_regexes; i++) {
        js_regex_free(s->regexes[i]);
    }
    tr_free(s->nodes);
    tr_free(s->regexes);
    json_decref(s->docs);
    tr_free(s);
}

static void cc_free(struct cc *c)
{
    ptrmap_free(&c->nodes);
    ptrmap_free(&c->reached);
    json_decref(c->ids);
    json_decref(c->reached_members);
    tr_free(c->id_json);
    tr_free(c->root_base);
    for (size_t i = 0; i < c->n_refs; i++) {
        tr_free(c->refs[i].uri);
    }
    tr_free(c->refs);
    for (size_t i = 0; i < c->n_unknown; i++) {
        tr_free(c->unknown[i].loc);
    }
    tr_free(c->unknown);
}

int tr_schema_compile(const json_t *schema, struct tr_schema **out, struct tr_err *err)
{
    struct tr_err local;
    if (!err) {
        err = &local;
    }
    tr_err_clear(err);
    *out = NULL;
    if (!schema) {
        return tr_err_set(err, TR_EINVAL, "no schema");
    }
    size_t count = 0;
    int rv = measure(schema, 0, &count, err);
    if (rv != 0) {
        return rv;
    }

    struct tr_schema *s = tr_calloc(1, sizeof *s);
    s->docs = json_array();
    json_t *doc = json_deep_copy(schema);
    if (!doc || !s->docs) {
        tr_log(TR_LOG_ERROR, "out of memory copying a JSON schema");
        abort();
    }
    json_array_append_new(s->docs, doc);

    struct cc c = {.s = s, .err = err, .ids = json_object(), .reached_members = json_object()};
    const json_t *id = json_is_object(doc) ? json_object_get(doc, "$id") : NULL;
    if (json_is_string(id) && !json_object_get(doc, "$ref")) {
        char *full = js_uri_resolve(JS_DEFAULT_BASE, json_string_value(id));
        c.root_base = js_uri_strip_frag(full);
        tr_free(full);
    } else {
        c.root_base = tr_strdup(JS_DEFAULT_BASE);
    }

    struct js_node *root = NULL;
    rv = walk_document(&c, doc, c.root_base, "#", &root);
    for (size_t i = 0; rv == 0 && i < c.n_refs; i++) {
        rv = resolve_ref(&c, i);
    }
    for (size_t i = 0; rv == 0 && i < c.n_unknown; i++) {
        struct unknown_kw *u = &c.unknown[i];
        if (!was_reached(&c, u)) {
            rv = tr_err_set(err, TR_ENOTSUP, "unsupported keyword \"%s\" at %s", u->key, u->loc);
        }
    }
    if (rv == 0) {
        rv = check_cycles(&c);
    }
    if (rv == 0) {
        s->root = root;
    }
    cc_free(&c);
    if (rv != 0) {
        tr_schema_free(s);
        return rv;
    }
    *out = s;
    return 0;
}
