/* Internals of the JSON Schema validator (jsonschema*.c); not for other files. */
#ifndef TR_ACTORS_JSONSCHEMA_INT_H
#define TR_ACTORS_JSONSCHEMA_INT_H

#include <regex.h>
#include <stdbool.h>
#include <stdint.h>

#include "actors/jsonschema.h"

/* Bit per JSON type, as named by the "type" keyword. */
enum {
    JS_T_NULL = 1u << 0,
    JS_T_BOOLEAN = 1u << 1,
    JS_T_OBJECT = 1u << 2,
    JS_T_ARRAY = 1u << 3,
    JS_T_NUMBER = 1u << 4,
    JS_T_STRING = 1u << 5,
    JS_T_INTEGER = 1u << 6,
};

enum js_format {
    JS_FMT_NONE = 0, /* absent, or an annotation only */
    JS_FMT_DATE_TIME,
    JS_FMT_DATE,
    JS_FMT_TIME,
    JS_FMT_EMAIL,
    JS_FMT_HOSTNAME,
    JS_FMT_IPV4,
    JS_FMT_IPV6,
    JS_FMT_URI,
    JS_FMT_URI_REFERENCE,
    JS_FMT_UUID,
    JS_FMT_JSON_POINTER,
    JS_FMT_REL_JSON_POINTER,
    JS_FMT_REGEX,
    JS_FMT_IRI,
    JS_FMT_IRI_REFERENCE,
    JS_FMT_IDN_HOSTNAME,
    JS_FMT_IDN_EMAIL,
    JS_FMT_URI_TEMPLATE,
};

/* A compiled regular expression; `src` is the ECMA-262 source. */
struct js_regex {
    regex_t re;
    char *src;
};

struct js_node;

struct js_prop {
    const char *name; /* borrowed from the schema copy */
    size_t len;
    struct js_node *node;
};

struct js_pprop {
    struct js_regex *re;
    struct js_node *node;
};

struct js_dep {
    const char *name;
    size_t len;
    struct js_node *node;   /* schema form, or NULL */
    const json_t *names;    /* array-of-names form, or NULL */
};

struct js_nodes {
    struct js_node **v;
    size_t n;
};

enum js_kind { JS_NODE_TRUE, JS_NODE_FALSE, JS_NODE_OBJECT };

/* One compiled (sub)schema. Everything it points to is owned by the
 * struct tr_schema it belongs to. */
struct js_node {
    enum js_kind kind;
    const json_t *json;     /* the schema value, inside the schema's copy */
    char *loc;              /* "#/properties/a", for error reports */

    /* $ref: when set, every other keyword is ignored (draft 7). */
    struct js_node *ref;
    const char *ref_str;

    unsigned types;         /* JS_T_* bits; 0 = no "type" keyword */
    const json_t *enum_;    /* array, or NULL */
    const json_t *const_;   /* or NULL (has_const tells a const of null) */
    bool has_const;

    const json_t *multiple_of, *maximum, *exclusive_maximum;
    const json_t *minimum, *exclusive_minimum;

    int64_t max_length, min_length; /* -1 = absent */
    struct js_regex *pattern;
    enum js_format format;
    const char *format_name;

    struct js_node *items;          /* "items": schema form */
    struct js_nodes items_list;     /* "items": array form */
    bool items_is_list;
    struct js_node *additional_items;
    int64_t max_items, min_items;
    bool unique_items;
    struct js_node *contains;

    int64_t max_props, min_props;
    const json_t *required;         /* array of strings, or NULL */
    struct js_prop *props;          /* sorted by (len, bytes) */
    size_t n_props;
    struct js_pprop *pprops;
    size_t n_pprops;
    struct js_node *additional_props;
    struct js_dep *deps;
    size_t n_deps;
    struct js_node *property_names;

    struct js_node *if_, *then_, *else_;
    struct js_nodes all_of, any_of, one_of;
    struct js_node *not_;

    /* Compile-time scratch for the cycle check. */
    uint8_t mark;
};

struct tr_schema {
    struct js_node *root;
    json_t *docs;            /* array of owned document copies */
    struct js_node **nodes;  /* every node, for freeing */
    size_t n_nodes, cap_nodes;
    struct js_regex **regexes;
    size_t n_regexes, cap_regexes;
};

/* jsonschema_regex.c: compile an ECMA-262 pattern. On failure returns
 * TR_ENOTSUP (a feature we refuse), TR_EINVAL (a syntax error) or TR_ELIMIT
 * with a message in err (not naming the location; the caller adds it). */
int js_regex_compile(const char *src, size_t len, struct js_regex **out, struct tr_err *err);
/* 1 if the pattern matches somewhere in s[0..len), 0 if not. */
int js_regex_search(const struct js_regex *re, const char *s, size_t len);
void js_regex_free(struct js_regex *re);

/* jsonschema_format.c */
enum js_format js_format_lookup(const char *name);
/* true if s[0..len) is valid for the format. */
bool js_format_check(enum js_format f, const char *s, size_t len);
/* "a date-time (RFC 3339), such as 2024-01-31T12:00:00Z". */
const char *js_format_describe(enum js_format f);

/* jsonschema_json.c: JSON helpers. */
/* Number of Unicode code points in a valid UTF-8 string. */
size_t js_utf8_len(const char *s, size_t len);
/* Is v an integer, or a real with no fractional part? */
bool js_is_integral(const json_t *v);
/* Compare two numbers exactly: <0, 0, >0. */
int js_num_cmp(const json_t *a, const json_t *b);
/* JSON equality with 1 == 1.0; depth-bounded (deeper values compare unequal). */
bool js_equal(const json_t *a, const json_t *b);
/* A hash consistent with js_equal. */
uint64_t js_hash(const json_t *v);
/* Write v compactly into buf, truncated with "..." past cap-1 bytes. */
void js_dump_short(const json_t *v, char *buf, size_t cap);
/* Write a number the shortest way that reads back the same. */
void js_num_str(const json_t *v, char *buf, size_t cap);
/* Truncate-safe append of a formatted string at buf+*len. */
void js_bufcat(char *buf, size_t cap, size_t *len, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Growing strings: struct tr_buf (runtime/runtime.h). */

/* jsonschema_uri.c: RFC 3986 reference resolution; results are new strings. */
/* Resolve ref against an absolute base URI. */
char *js_uri_resolve(const char *base, const char *ref);
/* The URI without its fragment. */
char *js_uri_strip_frag(const char *uri);
/* Percent-decode s (a fragment); *len_out gets the length (it may hold NULs). */
char *js_pct_decode(const char *s, size_t *len_out);

/* jsonschema_meta.c: the draft-07 meta-schema as text. */
extern const char js_draft7_meta[];
#define JS_DRAFT7_ID "http://json-schema.org/draft-07/schema"

#endif /* TR_ACTORS_JSONSCHEMA_INT_H */
