/* JSON Schema (draft 7) validation of tool-call arguments.
 *
 * A tool is registered with a JSON Schema for its arguments. The schema is
 * compiled once, at registration (tr_schema_compile); every argument object an
 * LLM proposes is validated against it (tr_schema_validate) before anything is
 * executed. The errors go back to the model so that it can fix its call, so
 * each one names the place in the arguments (a JSON pointer), the schema
 * keyword that failed, and says in words what was expected.
 *
 * Supported (draft 7, https://json-schema.org/draft-07/json-schema-validation)
 * ---------------------------------------------------------------------------
 *   type (a name or an array of names; 1.0 is an integer), enum, const,
 *   multipleOf, maximum, exclusiveMaximum, minimum, exclusiveMinimum,
 *   maxLength, minLength (Unicode code points, not bytes), pattern,
 *   items (one schema or an array of schemas), additionalItems, maxItems,
 *   minItems, uniqueItems, contains, maxProperties, minProperties, required,
 *   properties, patternProperties, additionalProperties, dependencies (arrays
 *   and schemas), propertyNames, if/then/else, allOf, anyOf, oneOf, not,
 *   boolean schemas, definitions (and "$defs", as another name for it),
 *   $ref and $id within the document (JSON pointers with ~0 ~1 and %-escapes,
 *   "#name" anchors, relative URIs resolved against $id), and the draft-07
 *   meta-schema itself ("$ref": "http://json-schema.org/draft-07/schema#" is
 *   built in). Numbers compare exactly between integers and reals; enum,
 *   const and uniqueItems treat 1 and 1.0 as equal.
 *
 *   Annotations are accepted and do not affect validation: title,
 *   description, default, examples, $comment, readOnly, writeOnly,
 *   contentMediaType, contentEncoding, and $schema (which must name draft 7
 *   if present).
 *
 *   format: validated for date-time, date, time (RFC 3339), email, hostname
 *   (RFC 1123), ipv4, ipv6, uri, uri-reference (RFC 3986), iri,
 *   iri-reference, idn-email, idn-hostname (these four as their ASCII forms
 *   plus any non-ASCII character: IDNA code point rules are not checked),
 *   uri-template (braces), uuid, json-pointer, relative-json-pointer and regex
 *   (the ECMA-262 subset below). Any other format name, e.g. OpenAPI's
 *   "int32", is an annotation, as draft 7 allows: the value is not checked.
 *
 * Refused at compile time (TR_ENOTSUP, naming the keyword and its location)
 * ---------------------------------------------------------------------------
 *   - any keyword we do not know: a misspelt "minimun", or a keyword of a
 *     later draft ("prefixItems", "unevaluatedProperties", "dependentRequired",
 *     "$anchor"...), would otherwise be ignored and let through arguments the
 *     tool author meant to forbid. The one exception is a member that only
 *     serves as a container for $ref targets (e.g. {"$ref": "#/my_defs/a",
 *     "my_defs": {...}}): it is accepted because a $ref reaches into it;
 *   - $ref to anything outside the document (http://..., other files): tools
 *     must be self-contained, and we never fetch at registration time;
 *   - $ref chains that can loop without descending into the instance
 *     ({"$ref": "#"} at the root, allOf cycles); cycles through properties,
 *     items etc. are fine;
 *   - "$schema" other than draft 7;
 *   - regular expressions outside the subset below;
 *   - keyword values of the wrong shape (TR_EINVAL): "minLength": -1,
 *     "type": "strng", "required": "a"...
 *
 * Regular expressions (pattern, patternProperties, format "regex")
 * ---------------------------------------------------------------------------
 *   ECMA-262 syntax is translated to POSIX extended syntax and compiled with
 *   regcomp(REG_EXTENDED) in the C.UTF-8 locale, so "." and bracket
 *   expressions match whole code points (ECMA-262 without the u flag matches
 *   UTF-16 units: they differ only outside the Basic Multilingual Plane;
 *   on a system without a UTF-8 locale, patterns fall back to bytes).
 *   Searches are unanchored, as in ECMA-262.
 *   Handled: literals, ".", (non-)greedy quantifiers * + ? {n} {n,} {n,m} (a
 *   lazy quantifier accepts the same strings as a greedy one when we only ask
 *   whether a match exists), groups, (?:...), (?<name>...), alternation, ^ $
 *   (no multiline), classes with ranges and \d \w \s inside, \d \D \w \W \s
 *   \S \b \B, \t \n \r \f \v \0 \cX \xHH \uHHHH, and escaped punctuation.
 *   "." excludes \n \r U+2028 U+2029 as in ECMA-262; \s is POSIX [:space:]
 *   (ECMA-262 also counts U+00A0, U+FEFF and other Unicode spaces).
 *   Refused: lookahead and lookbehind, backreferences, \p{...}, negated
 *   classes (\D \W \S) inside brackets and ranges ending at a class escape
 *   ([\d-z]), the empty class [] and [^], \0 and NUL, \u{...}, unknown letter
 *   escapes such as \a or \Z, inline flags, and patterns over 1 KiB or whose
 *   expansion of counted repetition is too large (regcomp expands x{n}:
 *   bounds over 1000, or more than 2000 atoms after expansion).
 *
 * Limits (each input has a bound; see TR_SCHEMA_* below)
 * ---------------------------------------------------------------------------
 *   A schema document may hold at most TR_SCHEMA_MAX_VALUES JSON values,
 *   nested at most TR_SCHEMA_MAX_JSON_DEPTH deep, with at most
 *   TR_SCHEMA_MAX_NODES subschemas. Validation applies at most
 *   TR_SCHEMA_MAX_STEPS subschemas in total and nests at most
 *   TR_SCHEMA_MAX_EVAL_DEPTH deep; beyond that it fails with TR_ELIMIT.
 *
 * Why our own validator
 * ---------------------------------------------------------------------------
 *   `apt-cache search json schema` on Debian bookworm finds no validator
 *   written in C. The nearest is libvalijson-dev 1.0, a header-only C++
 *   library (it has a jansson adapter). Using it would put C++ and its
 *   exceptions under a C code base, and we could not easily have what tool
 *   arguments need most: unknown keywords refused rather than ignored (it
 *   follows the specification and ignores them), bounded work on hostile
 *   schemas and values, regular expressions without std::regex's recursive
 *   backtracking, and errors worded for a model with JSON pointers on both
 *   sides. The subset tool arguments need is small enough to own.
 *
 * Threads and memory: a compiled schema is immutable; tr_schema_validate may
 * be called on it from several threads at once. Allocation goes through
 * tr_malloc (abort on failure).
 */
#ifndef TR_ACTORS_JSONSCHEMA_H
#define TR_ACTORS_JSONSCHEMA_H

#include <stddef.h>

#include <jansson.h>

#include "runtime/runtime.h"

/* Bounds on a schema at compile time. */
#define TR_SCHEMA_MAX_VALUES 100000   /* JSON values in the schema document */
#define TR_SCHEMA_MAX_JSON_DEPTH 128  /* nesting of the schema document */
#define TR_SCHEMA_MAX_NODES 20000     /* subschemas */
#define TR_SCHEMA_MAX_PATTERN 1024    /* bytes of one regular expression */

/* Bounds on one validation. */
#define TR_SCHEMA_MAX_EVAL_DEPTH 256  /* nested subschema applications */
#define TR_SCHEMA_MAX_STEPS 1000000   /* subschema applications in total */

/* A compiled schema. */
struct tr_schema;

#define TR_SCHEMA_MAX_ERRORS 8
#define TR_SCHEMA_PTR_MAX 256
#define TR_SCHEMA_MSG_MAX 384

/* One validation error. Strings are NUL-terminated and truncated (ending in
 * "...") when they would not fit. */
struct tr_schema_error {
    /* JSON pointer (RFC 6901) to the offending value in the instance;
     * "" is the instance itself. */
    char instance_ptr[TR_SCHEMA_PTR_MAX];
    /* The failing keyword's location in the schema, as a URI fragment:
     * "#/properties/city/minLength". Locations outside the root document
     * carry that document's URI. */
    char schema_ptr[TR_SCHEMA_PTR_MAX];
    /* What was expected, in words: "must be at least 3 characters long,
     * got 2". */
    char message[TR_SCHEMA_MSG_MAX];
};

/* The first errors of one validation, in the order they were found.
 * Caller-owned (it is plain data; no cleanup). */
struct tr_schema_errors {
    unsigned count;      /* entries filled in e[] */
    unsigned truncated;  /* 1 if validation found more than it kept */
    struct tr_schema_error e[TR_SCHEMA_MAX_ERRORS];
};

/* Compile a draft-7 schema (an object or a boolean). The schema is copied;
 * the caller keeps ownership of its json_t. On success *out owns the
 * compiled schema (free it with tr_schema_free). On failure returns
 *   TR_ENOTSUP  a keyword, reference or pattern we do not support (refused);
 *   TR_EINVAL   the schema is malformed;
 *   TR_ELIMIT   the schema exceeds a TR_SCHEMA_MAX_* bound;
 * with err (if not NULL) saying which keyword at which location, e.g.
 *   "unsupported keyword \"prefixItems\" at #/properties/point". */
int tr_schema_compile(const json_t *schema, struct tr_schema **out, struct tr_err *err);

/* Validate instance against a compiled schema. Returns 0 if valid,
 * TR_EINVAL if not, TR_ELIMIT if validation hit a TR_SCHEMA_MAX_* bound
 * (the instance is then treated as invalid). errs, if not NULL, is reset and
 * receives the first TR_SCHEMA_MAX_ERRORS errors. */
int tr_schema_validate(const struct tr_schema *s, const json_t *instance,
                       struct tr_schema_errors *errs);

/* Write the errors as text for the model, one per line:
 *   "at /city: must be at least 3 characters long, got 2 (schema #/properties/city/minLength)"
 * Always NUL-terminates when cap > 0; returns the length it wanted (as snprintf). */
size_t tr_schema_errors_format(const struct tr_schema_errors *errs, char *buf, size_t cap);

/* Free a compiled schema; NULL is ignored. */
void tr_schema_free(struct tr_schema *s);

#endif /* TR_ACTORS_JSONSCHEMA_H */
