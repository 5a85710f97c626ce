/* Troupe's FlatBuffers runtime: builder, verifier and readers, wire-compatible
 * with Google's runtime. Generated code (tools/fbgen) sits on top of it.
 *
 * Schemas: schemas/journal.fbs (troupe.journal, TRJ1), command.fbs
 * (troupe.cmd, TRC1), peer.fbs (troupe.peer, TRN1), protocol.fbs
 * (troupe.proto, TRP1). Include "schemas/<name>_generated.h" for one of them;
 * the build generates these headers (link tr_schemas).
 *
 * ---- Generated API --------------------------------------------------------
 * Namespace N (dots become '_', e.g. troupe_journal), table T, field f:
 *
 * Verify, then read. No field may be read from a buffer that was not
 * verified: every buffer from the network, the disk or raft goes through
 *   const struct N_T *t = N_T_verify_as_root(buf, len, &err);   NULL: rejected
 * which checks the file identifier when T is its schema's root type, the
 * limits of tr_fb_default_limits and every offset reachable from the root;
 * `err` (struct tr_fb_error *, may be NULL) says why and where. Use
 * N_T_verify_as_root_opts(buf, len, ident, &limits, &err) for other limits
 * or identifiers (ident NULL: no identifier check). Troupe's TCP and peer
 * frames are size-prefixed buffers (4-byte little-endian length, then the
 * buffer, written by N_T_finish_sized or Google's FinishSizePrefixed): verify
 * a whole frame, prefix included, with N_T_verify_as_root_sized(frame, len,
 * &err); alignment is then relative to the frame's start. N_T_as_root(buf) reads
 * without verifying: only for buffers this process has just built.
 *
 * Readers (static inline, never fail on a verified buffer; t may not be NULL):
 *   scalar / enum     N_T_f(t)           the value, or the schema default
 *   any field         N_T_has_f(t)       present in the buffer
 *   string            N_T_f(t)           struct tr_fb_str {ptr, len}; ptr is
 *                                        NUL-terminated in the buffer, NULL when absent
 *   table             N_T_f(t)           const struct N_U *, NULL when absent
 *   struct            N_T_f(t)           struct N_S by value (zeroes when absent)
 *   vector            N_T_f_len(t)       element count (0 when absent)
 *                     N_T_f_at(t, i)     element i (as the scalar, string, table
 *                                        or struct readers above; i < len)
 *                     N_T_f(t)           struct tr_fb_vec {data, len}: raw little-
 *                                        endian elements, e.g. bytes of [ubyte];
 *                                        in loops fetch it once and use
 *                                        tr_fb_vec_str / tr_fb_vec_table(v, i)
 *   union u           N_T_u_type(t)      the member tag: enum N_U (N_U_NONE = 0)
 *                     N_T_u(t)           const void * to the member table or NULL
 *                     N_T_u_as_M(t)      const struct N_M *, NULL unless tag is M
 *   nested buffer     N_T_f(t)           its bytes (struct tr_fb_vec); it was
 *                                        verified with the outer buffer, so
 *                                        N_M_as_root(v.data) is safe.
 *   struct S fields   plain C members of struct N_S (host is little-endian).
 * Required fields (strings, tables, structs, vectors marked `required`) are
 * read without the absent checks: every buffer a reader may see has them
 * (the verifier rejects one that lacks any, N_T_end aborts before writing
 * one), so their readers go straight to the slot (tr_fb_field_req). On such
 * a buffer they return what the checked form would; N_T_has_f still checks.
 *
 * View readers (static inline): the same readers on a table whose vtable was
 * resolved once. Every reader above has a twin N_T_view_<reader>(&v), with
 * the same result, defaults and absent-field behaviour (required fields are
 * read without absent checks in both forms):
 *   struct N_T_view v = N_T_view(t);        t verified (or just built), not NULL
 *   N_T_view_f(&v), N_T_view_has_f(&v), N_T_view_f_len(&v), N_T_view_f_at(&v, i),
 *   N_T_view_u_type(&v), N_T_view_u_as_M(&v) ...
 * A view is a small value (table pointer, vtable pointer, vtable size) that
 * lives on the caller's stack and points into the buffer: valid while the
 * buffer is. Child tables come back as pointers; take their own view:
 *   struct troupe_proto_Request_view r =
 *       troupe_proto_Request_view(troupe_proto_Frame_view_body_as_Request(&f));
 * (after checking the pointer). Use a view when reading several fields of a
 * table, especially with calls or stores between the reads (copying strings
 * out, filling a struct): the plain readers re-read the table's soffset and
 * the vtable's size from the buffer at every call unless the compiler can
 * prove nothing wrote to memory in between; a view keeps both in registers.
 * Tables may not have a field named `view` or `view_*` (fbgen refuses them).
 *
 * Builders (struct tr_fb_builder *b; children before parents, one table open
 * at a time):
 *   N_T_start(b); N_T_add_f(b, v) ...; tr_fb_ref r = N_T_end(b);
 *     scalars: value (equal to the default: not written unless
 *       b->force_defaults); strings, vectors, tables: a tr_fb_ref (0: absent);
 *       structs: const struct N_S *; unions: N_T_add_u_M(b, ref) sets tag and value.
 *     N_T_end aborts when a required field is missing (a programming error).
 *   strings:  tr_fb_create_string(b, ptr, len), tr_fb_create_str(b, cstr)
 *   vectors:  N_T_create_f(b, const elem *v, n) for scalars and structs,
 *             N_T_create_f(b, const tr_fb_ref *refs, n) for strings and tables,
 *             tr_fb_create_bytes(b, p, n) for [ubyte].
 *   finish:   N_T_finish(b, r) (root types: with the file identifier),
 *             tr_fb_finish(b, r, ident), tr_fb_finish_sized(b, r, ident) (with
 *             the 4-byte length prefix of Troupe's frames); then
 *             tr_fb_builder_data(b, &len). tr_fb_builder_reset(b) reuses memory.
 *
 * Enums and unions: enum N_E { N_E_Value = ... }; N_E_name(v) returns the
 * schema name or NULL; N_U_name(tag) the member name ("NONE" for 0).
 * Root types: N_T_IDENTIFIER is the file identifier ("TRJ1" ...).
 * A union member tag the reader does not know is rejected by the verifier:
 * when a union grows, upgrade readers before writers. So is a member tag
 * whose value is absent (Google's verifier lets it pass, and every reader of
 * N_T_f_as_M would then have to expect NULL for a tag that names M).
 *
 * Example (journal event):
 *   struct tr_fb_builder b;
 *   tr_fb_builder_init(&b);
 *   tr_fb_ref reason = tr_fb_create_str(&b, "user asked");
 *   troupe_journal_RunCancelled_start(&b);
 *   troupe_journal_RunCancelled_add_reason(&b, reason);
 *   tr_fb_ref data = troupe_journal_RunCancelled_end(&b);
 *   tr_fb_ref run = tr_fb_create_str(&b, run_id);
 *   troupe_journal_Event_start(&b);
 *   troupe_journal_Event_add_seq(&b, seq);
 *   troupe_journal_Event_add_run_id(&b, run);
 *   troupe_journal_Event_add_data_RunCancelled(&b, data);
 *   troupe_journal_Event_finish(&b, troupe_journal_Event_end(&b));
 *   ... = tr_fb_builder_data(&b, &len);
 *   ...
 *   struct tr_fb_error err;
 *   const struct troupe_journal_Event *ev =
 *       troupe_journal_Event_verify_as_root(val, val_len, &err);
 *   if (!ev) { char m[128]; log(tr_fb_error_format(&err, m, sizeof m)); }
 *   switch (troupe_journal_Event_data_type(ev)) {
 *   case troupe_journal_Data_RunCancelled: ...
 *
 * Reading the .fbs: journal.fbs holds the shared records (AgentConfig,
 * Usage, RunStatus, Risk ...); command.fbs includes it, peer.fbs and
 * protocol.fbs include command.fbs. Fields marked troupe_nested hold a whole
 * buffer of another root type, verified with the outer one.
 *
 * Memory: the builder owns its buffer; allocation failure aborts
 * (tr_fb_oom). Readers return pointers into the caller's buffer, valid while
 * it lives.
 */
#ifndef TR_SCHEMAS_H
#define TR_SCHEMAS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "Troupe's FlatBuffers runtime assumes a little-endian host"
#endif

/* ---- errors -------------------------------------------------------------- */

#define TR_FB_ERRORS(X)                                                        \
  X(TR_FB_OK, "ok")                                                            \
  X(TR_FB_E_TRUNCATED, "buffer too short")                                     \
  X(TR_FB_E_OVERSIZED, "buffer larger than the size limit")                    \
  X(TR_FB_E_IDENT, "wrong file identifier")                                    \
  X(TR_FB_E_ALIGN, "misaligned offset")                                        \
  X(TR_FB_E_BOUNDS, "offset past the end of the buffer")                       \
  X(TR_FB_E_CYCLE, "offset does not point forward (cyclic)")                   \
  X(TR_FB_E_VTABLE, "malformed vtable")                                        \
  X(TR_FB_E_FIELD, "field outside its table")                                  \
  X(TR_FB_E_REQUIRED, "required field missing")                                \
  X(TR_FB_E_STRING, "string not NUL-terminated")                               \
  X(TR_FB_E_DEPTH, "nesting deeper than the depth limit")                      \
  X(TR_FB_E_TOO_MANY, "more objects than the table-count limit")               \
  X(TR_FB_E_UNION, "union type out of range")                                  \
  X(TR_FB_E_NESTED, "nested buffer invalid")                                  \
  X(TR_FB_E_SIZE, "size prefix does not match the buffer")                    \
  X(TR_FB_E_UNION_VALUE, "union type set but its value absent")

enum tr_fb_status {
#define TR_FB_X_ENUM(code, text) code,
  TR_FB_ERRORS(TR_FB_X_ENUM)
#undef TR_FB_X_ENUM
};

/* Why and where verification failed. `type` and `field` name the schema
 * table and field being checked (static strings, may be NULL); `offset` is
 * the byte offset in the (innermost) buffer. */
struct tr_fb_error {
  enum tr_fb_status code;
  uint32_t offset;
  const char *type;
  const char *field;
};

const char *tr_fb_strerror(enum tr_fb_status code);
/* "verify troupe.journal.Event.run_id at 12: string not NUL-terminated" into
 * out (always NUL-terminated); returns out. */
char *tr_fb_error_format(const struct tr_fb_error *err, char *out, size_t n);

/* ---- reading ------------------------------------------------------------- */

/* Loads go through memcpy: a buffer may start at any address (after a frame's
 * length prefix, inside a RocksDB slice); verification checks alignment
 * relative to the buffer's start, as Google's verifier does. */
#define TR_FB_LOAD(name, type)                                                 \
  static inline type tr_fb_read_##name(const uint8_t *p) {                     \
    type v;                                                                    \
    memcpy(&v, p, sizeof v);                                                   \
    return v;                                                                  \
  }
TR_FB_LOAD(u8, uint8_t)
TR_FB_LOAD(i8, int8_t)
TR_FB_LOAD(u16, uint16_t)
TR_FB_LOAD(i16, int16_t)
TR_FB_LOAD(u32, uint32_t)
TR_FB_LOAD(i32, int32_t)
TR_FB_LOAD(u64, uint64_t)
TR_FB_LOAD(i64, int64_t)
TR_FB_LOAD(f32, float)
TR_FB_LOAD(f64, double)
#undef TR_FB_LOAD
static inline bool tr_fb_read_bool(const uint8_t *p) { return *p != 0; }

struct tr_fb_str {
  const char *ptr; /* NUL-terminated; NULL when absent */
  uint32_t len;
};

/* Copy s into dst (cap > 0 bytes with the NUL), truncated to fit; "" when absent. */
static inline void tr_fb_str_copy(char *dst, size_t cap, struct tr_fb_str s) {
  size_t n = s.ptr != NULL ? s.len : 0;
  if (n > cap - 1)
    n = cap - 1;
  if (n > 0)
    memcpy(dst, s.ptr, n);
  dst[n] = '\0';
}

struct tr_fb_vec {
  const uint8_t *data; /* first element; NULL when absent */
  uint32_t len;        /* element count */
};

/* The field with this id of table t, or NULL when absent. */
static inline const uint8_t *tr_fb_field(const void *t, unsigned id) {
  const uint8_t *tp = (const uint8_t *)t;
  const uint8_t *vt = tp - tr_fb_read_i32(tp);
  unsigned at = 4 + 2 * id;
  if (at + 2 > tr_fb_read_u16(vt))
    return NULL;
  uint16_t off = tr_fb_read_u16(vt + at);
  return off ? tp + off : NULL;
}

static inline const uint8_t *tr_fb_deref(const uint8_t *p) {
  return p + tr_fb_read_u32(p);
}

/* The string or vector whose uoffset is at p (a present field). */
static inline struct tr_fb_str tr_fb_str_at(const uint8_t *p) {
  const uint8_t *s = tr_fb_deref(p);
  struct tr_fb_str r = {(const char *)s + 4, tr_fb_read_u32(s)};
  return r;
}

static inline struct tr_fb_vec tr_fb_vec_at(const uint8_t *p) {
  const uint8_t *s = tr_fb_deref(p);
  struct tr_fb_vec r = {s + 4, tr_fb_read_u32(s)};
  return r;
}

/* What the field at p holds, p being a field's address or NULL (absent): a
 * table's, a string's or a vector's; NULL or {NULL, 0} when absent. */
static inline const uint8_t *tr_fb_ref_opt(const uint8_t *p) {
  return p ? tr_fb_deref(p) : NULL;
}

static inline struct tr_fb_str tr_fb_str_opt(const uint8_t *p) {
  struct tr_fb_str none = {NULL, 0};
  return p ? tr_fb_str_at(p) : none;
}

static inline struct tr_fb_vec tr_fb_vec_opt(const uint8_t *p) {
  struct tr_fb_vec none = {NULL, 0};
  return p ? tr_fb_vec_at(p) : none;
}

static inline const uint8_t *tr_fb_field_ref(const void *t, unsigned id) {
  return tr_fb_ref_opt(tr_fb_field(t, id));
}

/* The member table of the union whose value is field `id` (its tag is field
 * id - 1, as flatc lays unions out) when the tag equals `tag` (never 0: the
 * readers exist for members only), else NULL. Only the tag is checked: a
 * buffer a reader may see has a value for every member tag, because the
 * verifier refuses a tag without one (TR_FB_E_UNION_VALUE) and N_T_end
 * aborts before writing one (tr_fb_table_union). So the value's slot lies in
 * the vtable and is not 0 once the tag matches. */
static inline const uint8_t *tr_fb_union_at(const uint8_t *tp,
                                            const uint8_t *vt, unsigned vt_len,
                                            unsigned id, uint8_t tag) {
  unsigned at = 4 + 2 * id;
  if (at > vt_len)
    return NULL;
  uint16_t toff = tr_fb_read_u16(vt + at - 2);
  if (!toff || tp[toff] != tag)
    return NULL;
  return tr_fb_deref(tp + tr_fb_read_u16(vt + at));
}

static inline const uint8_t *tr_fb_field_union(const void *t, unsigned id,
                                               uint8_t tag) {
  const uint8_t *tp = (const uint8_t *)t;
  const uint8_t *vt = tp - tr_fb_read_i32(tp);
  return tr_fb_union_at(tp, vt, tr_fb_read_u16(vt), id, tag);
}

static inline struct tr_fb_str tr_fb_field_str(const void *t, unsigned id) {
  return tr_fb_str_opt(tr_fb_field(t, id));
}

static inline struct tr_fb_vec tr_fb_field_vec(const void *t, unsigned id) {
  return tr_fb_vec_opt(tr_fb_field(t, id));
}

/* Required fields. A buffer a reader may see has every required field: the
 * verifier rejects one without it (TR_FB_E_REQUIRED: its slot is inside the
 * vtable and not 0) and N_T_end aborts before writing one. So the readers of
 * a required field read its slot directly: no vtable-size check, no zero
 * check, nothing to branch on (Google's C++ code keeps both checks). The
 * field with this id of table t, which must be present. */
static inline const uint8_t *tr_fb_field_req(const void *t, unsigned id) {
  const uint8_t *tp = (const uint8_t *)t;
  const uint8_t *vt = tp - tr_fb_read_i32(tp);
  return tp + tr_fb_read_u16(vt + 4 + 2 * id);
}

/* Fields before a required one. A vtable that holds a required field's slot
 * holds every slot before it, so for a field whose id is at most that of a
 * required field of its table the vtable-size check is settled: fbgen
 * reads those through tr_fb_field_in (and tr_fb_view_field_in), which keep
 * only the zero check. The field with this id of table t, or NULL. */
static inline const uint8_t *tr_fb_field_in(const void *t, unsigned id) {
  const uint8_t *tp = (const uint8_t *)t;
  const uint8_t *vt = tp - tr_fb_read_i32(tp);
  uint16_t off = tr_fb_read_u16(vt + 4 + 2 * id);
  return off ? tp + off : NULL;
}

static inline struct tr_fb_str tr_fb_vec_str(struct tr_fb_vec v, uint32_t i) {
  struct tr_fb_str s = {NULL, 0};
  if (i < v.len) {
    const uint8_t *p = tr_fb_deref(v.data + 4 * (size_t)i);
    s.len = tr_fb_read_u32(p);
    s.ptr = (const char *)p + 4;
  }
  return s;
}

static inline const void *tr_fb_vec_table(struct tr_fb_vec v, uint32_t i) {
  return i < v.len ? (const void *)tr_fb_deref(v.data + 4 * (size_t)i) : NULL;
}

/* A table with its vtable resolved once (the generated N_T_view types wrap
 * it): reading a field through a view costs no reload of the table's soffset
 * nor of the vtable's size, however many stores or calls come between the
 * reads, because both live in this struct (on the caller's stack, in
 * registers once inlined) rather than in the buffer. */
struct tr_fb_view {
  const uint8_t *t;  /* the table */
  const uint8_t *vt; /* its vtable */
  uint32_t vt_len;   /* the vtable's size in bytes (4 + 2 per slot) */
};

static inline struct tr_fb_view tr_fb_view_of(const void *t) {
  struct tr_fb_view v;
  v.t = (const uint8_t *)t;
  v.vt = v.t - tr_fb_read_i32(v.t);
  v.vt_len = tr_fb_read_u16(v.vt);
  return v;
}

/* tr_fb_field through a view: the field with this id, or NULL when absent. */
static inline const uint8_t *tr_fb_view_field(const struct tr_fb_view *v,
                                              unsigned id) {
  unsigned at = 4 + 2 * id;
  if (at + 2 > v->vt_len)
    return NULL;
  uint16_t off = tr_fb_read_u16(v->vt + at);
  return off ? v->t + off : NULL;
}

/* tr_fb_field_in through a view. */
static inline const uint8_t *tr_fb_view_field_in(const struct tr_fb_view *v,
                                                 unsigned id) {
  uint16_t off = tr_fb_read_u16(v->vt + 4 + 2 * id);
  return off ? v->t + off : NULL;
}

/* tr_fb_field_req through a view: the required field with this id. */
static inline const uint8_t *tr_fb_view_field_req(const struct tr_fb_view *v,
                                                  unsigned id) {
  return v->t + tr_fb_read_u16(v->vt + 4 + 2 * id);
}

static inline const uint8_t *tr_fb_view_ref(const struct tr_fb_view *v,
                                            unsigned id) {
  return tr_fb_ref_opt(tr_fb_view_field(v, id));
}

static inline const uint8_t *tr_fb_view_union(const struct tr_fb_view *v,
                                              unsigned id, uint8_t tag) {
  return tr_fb_union_at(v->t, v->vt, v->vt_len, id, tag);
}

static inline struct tr_fb_str tr_fb_view_str(const struct tr_fb_view *v,
                                              unsigned id) {
  return tr_fb_str_opt(tr_fb_view_field(v, id));
}

static inline struct tr_fb_vec tr_fb_view_vec(const struct tr_fb_view *v,
                                              unsigned id) {
  return tr_fb_vec_opt(tr_fb_view_field(v, id));
}

/* The root table of a buffer (no verification). */
static inline const void *tr_fb_root(const void *buf) {
  return tr_fb_deref((const uint8_t *)buf);
}

/* True when buf (of len bytes) carries this 4-character file identifier. */
bool tr_fb_has_ident(const void *buf, size_t len, const char *ident);

/* ---- verifying ----------------------------------------------------------- */

/* The verifier's hot primitives are inlined into each generated verifier. */
#if defined(__GNUC__)
#define TR_FB_HOT static inline __attribute__((always_inline))
#else
#define TR_FB_HOT static inline
#endif

/* Bounds on a verification: total bytes, nesting depth (tables, vectors of
 * tables, nested buffers), and objects visited (tables plus elements of
 * offset vectors), so that no crafted buffer costs unbounded time. */
struct tr_fb_limits {
  uint32_t max_size;
  uint32_t max_depth;
  uint32_t max_objects;
};

extern const struct tr_fb_limits tr_fb_default_limits; /* 64 MiB, 64, 4 Mi */

struct tr_fb_verifier {
  const uint8_t *buf;
  uint32_t len;
  uint32_t depth;
  uint32_t objects;
  struct tr_fb_limits lim;
  struct tr_fb_error *err;
};

/* A verified table: its position and vtable. */
struct tr_fb_vtab {
  uint32_t pos;
  uint32_t vt;
  uint16_t vt_len;
  uint16_t t_len;
};

/* The primitives generated verifiers are made of. Each returns 0 or records
 * the failure in v->err and returns the error code. */
#if defined(__GNUC__)
__attribute__((cold))
#endif
int tr_fb_verify_fail(struct tr_fb_verifier *v, enum tr_fb_status code,
                      uint32_t off, const char *type, const char *field);
/* Checks the header and identifier (ident NULL: none), sets *root. */
int tr_fb_verify_begin(struct tr_fb_verifier *v, const void *buf, size_t len,
                       const char *ident, const struct tr_fb_limits *lim,
                       struct tr_fb_error *err, uint32_t *root);
TR_FB_HOT bool tr_fb_in_bounds(const struct tr_fb_verifier *v,
                                   uint64_t pos, uint64_t n) {
  return pos <= v->len && n <= v->len - pos;
}

/* The uoffset at pos: sets *target (strictly forward, inside the buffer). */
TR_FB_HOT int tr_fb_verify_offset(struct tr_fb_verifier *v, uint32_t pos,
                                      const char *type, const char *field,
                                      uint32_t *target) {
  if (pos & 3)
    return tr_fb_verify_fail(v, TR_FB_E_ALIGN, pos, type, field);
  if (!tr_fb_in_bounds(v, pos, 4))
    return tr_fb_verify_fail(v, TR_FB_E_BOUNDS, pos, type, field);
  uint32_t off = tr_fb_read_u32(v->buf + pos);
  if (off == 0 || off > INT32_MAX)
    return tr_fb_verify_fail(v, TR_FB_E_CYCLE, pos, type, field);
  uint64_t t = (uint64_t)pos + off;
  if (t >= v->len)
    return tr_fb_verify_fail(v, TR_FB_E_BOUNDS, pos, type, field);
  *target = (uint32_t)t;
  return 0;
}

/* Enters the table at pos (depth + 1); pair with tr_fb_verify_table_leave. */
TR_FB_HOT int tr_fb_verify_table_enter(struct tr_fb_verifier *v,
                                           uint32_t pos, const char *type,
                                           struct tr_fb_vtab *tv) {
  if (pos & 3)
    return tr_fb_verify_fail(v, TR_FB_E_ALIGN, pos, type, NULL);
  if (!tr_fb_in_bounds(v, pos, 4))
    return tr_fb_verify_fail(v, TR_FB_E_BOUNDS, pos, type, NULL);
  if (v->depth >= v->lim.max_depth)
    return tr_fb_verify_fail(v, TR_FB_E_DEPTH, pos, type, NULL);
  if (v->objects >= v->lim.max_objects)
    return tr_fb_verify_fail(v, TR_FB_E_TOO_MANY, pos, type, NULL);
  int64_t vt = (int64_t)pos - tr_fb_read_i32(v->buf + pos);
  if (vt < 0 || !tr_fb_in_bounds(v, (uint64_t)vt, 4))
    return tr_fb_verify_fail(v, TR_FB_E_BOUNDS, pos, type, NULL);
  if (vt & 1)
    return tr_fb_verify_fail(v, TR_FB_E_ALIGN, pos, type, NULL);
  uint16_t vt_len = tr_fb_read_u16(v->buf + vt);
  uint16_t t_len = tr_fb_read_u16(v->buf + vt + 2);
  if (vt_len < 4 || (vt_len & 1) || t_len < 4)
    return tr_fb_verify_fail(v, TR_FB_E_VTABLE, (uint32_t)vt, type, NULL);
  if (!tr_fb_in_bounds(v, (uint64_t)vt, vt_len))
    return tr_fb_verify_fail(v, TR_FB_E_BOUNDS, (uint32_t)vt, type, NULL);
  if (!tr_fb_in_bounds(v, pos, t_len))
    return tr_fb_verify_fail(v, TR_FB_E_BOUNDS, pos, type, NULL);
  tv->pos = pos;
  tv->vt = (uint32_t)vt;
  tv->vt_len = vt_len;
  tv->t_len = t_len;
  v->depth++;
  v->objects++;
  return 0;
}

static inline void tr_fb_verify_table_leave(struct tr_fb_verifier *v) {
  v->depth--;
}

/* Field `id` of a verified table: *pos = 0 when absent, else its position
 * after checking that `size` bytes lie in the table, aligned to `align`. */
TR_FB_HOT int tr_fb_verify_field(struct tr_fb_verifier *v,
                                     const struct tr_fb_vtab *tv, unsigned id,
                                     uint32_t size, uint32_t align,
                                     bool required, const char *type,
                                     const char *field, uint32_t *pos) {
  uint32_t at = 4 + 2 * id;
  uint16_t off = 0;
  if (at + 2 <= tv->vt_len)
    off = tr_fb_read_u16(v->buf + tv->vt + at);
  if (!off) {
    *pos = 0;
    if (required)
      return tr_fb_verify_fail(v, TR_FB_E_REQUIRED, tv->pos, type, field);
    return 0;
  }
  if (off < 4 || (uint32_t)off + size > tv->t_len)
    return tr_fb_verify_fail(v, TR_FB_E_FIELD, tv->pos, type, field);
  uint32_t p = tv->pos + off;
  if (p & (align - 1))
    return tr_fb_verify_fail(v, TR_FB_E_ALIGN, p, type, field);
  *pos = p;
  return 0;
}

/* The string whose uoffset is at pos. */
TR_FB_HOT int tr_fb_verify_string(struct tr_fb_verifier *v, uint32_t pos,
                                      const char *type, const char *field) {
  uint32_t s = 0;
  int rc = tr_fb_verify_offset(v, pos, type, field, &s);
  if (rc)
    return rc;
  if (s & 3)
    return tr_fb_verify_fail(v, TR_FB_E_ALIGN, s, type, field);
  if (!tr_fb_in_bounds(v, s, 4))
    return tr_fb_verify_fail(v, TR_FB_E_BOUNDS, s, type, field);
  uint32_t n = tr_fb_read_u32(v->buf + s);
  if (!tr_fb_in_bounds(v, (uint64_t)s + 4, (uint64_t)n + 1))
    return tr_fb_verify_fail(v, TR_FB_E_BOUNDS, s, type, field);
  if (v->buf[(uint64_t)s + 4 + n] != 0)
    return tr_fb_verify_fail(v, TR_FB_E_STRING, s, type, field);
  return 0;
}

/* The vector whose uoffset is at pos: elements aligned and inside the
 * buffer; sets *start (its first element) and *n. offsets: the elements are
 * uoffsets (counted against max_objects). */
TR_FB_HOT int tr_fb_verify_vector_at(struct tr_fb_verifier *v,
                                         uint32_t pos, uint32_t elem_size,
                                         uint32_t align, bool offsets,
                                         const char *type, const char *field,
                                         uint32_t *start, uint32_t *n) {
  uint32_t s = 0;
  int rc = tr_fb_verify_offset(v, pos, type, field, &s);
  if (rc)
    return rc;
  if ((s & 3) || ((s + 4) & (align - 1)))
    return tr_fb_verify_fail(v, TR_FB_E_ALIGN, s, type, field);
  if (!tr_fb_in_bounds(v, s, 4))
    return tr_fb_verify_fail(v, TR_FB_E_BOUNDS, s, type, field);
  uint32_t count = tr_fb_read_u32(v->buf + s);
  if (!tr_fb_in_bounds(v, (uint64_t)s + 4, (uint64_t)count * elem_size))
    return tr_fb_verify_fail(v, TR_FB_E_BOUNDS, s, type, field);
  if (offsets) {
    if (count > v->lim.max_objects - v->objects)
      return tr_fb_verify_fail(v, TR_FB_E_TOO_MANY, s, type, field);
    v->objects += count;
  }
  *start = s + 4;
  *n = count;
  return 0;
}

TR_FB_HOT int tr_fb_verify_vector(struct tr_fb_verifier *v, uint32_t pos,
                                      uint32_t elem_size, uint32_t align,
                                      bool offsets, const char *type,
                                      const char *field, uint32_t *n) {
  uint32_t start = 0;
  return tr_fb_verify_vector_at(v, pos, elem_size, align, offsets, type,
                                field, &start, n);
}

/* A vector of strings at pos. */
int tr_fb_verify_string_vector(struct tr_fb_verifier *v, uint32_t pos,
                               const char *type, const char *field);

typedef int (*tr_fb_verify_table_fn)(struct tr_fb_verifier *v, uint32_t pos);
/* A vector of tables at pos, each checked by fn. */
int tr_fb_verify_table_vector(struct tr_fb_verifier *v, uint32_t pos,
                              tr_fb_verify_table_fn fn, const char *type,
                              const char *field);
/* A nested buffer: the byte vector at pos holds a buffer whose root table fn
 * checks (empty vector: accepted, nothing to read). */
int tr_fb_verify_nested(struct tr_fb_verifier *v, uint32_t pos,
                        tr_fb_verify_table_fn fn, const char *type,
                        const char *field);
/* Whole-buffer verification of a root table; returns the root or NULL. */
const void *tr_fb_verify_root(const void *buf, size_t len, const char *ident,
                              const struct tr_fb_limits *lim,
                              struct tr_fb_error *err,
                              tr_fb_verify_table_fn fn);

/* The same for a size-prefixed buffer (a 4-byte little-endian length, then
 * the buffer, as tr_fb_finish_sized and Google's FinishSizePrefixed write it):
 * buf and len include the prefix, which must equal len - 4; alignment is
 * checked relative to buf. Returns the root or NULL. */
const void *tr_fb_verify_root_sized(const void *buf, size_t len,
                                    const char *ident,
                                    const struct tr_fb_limits *lim,
                                    struct tr_fb_error *err,
                                    tr_fb_verify_table_fn fn);

/* ---- building ------------------------------------------------------------ */

/* Offset of an object in a buffer under construction (distance from the
 * buffer's end); 0 means "none". */
typedef uint32_t tr_fb_ref;

/* Buffers grow downwards: the data is buf[cap - used, cap). */
struct tr_fb_builder {
  uint8_t *buf;
  size_t cap;
  size_t used;
  size_t minalign;
  bool force_defaults; /* write scalars equal to their default */
  /* TR_FB_IN_TABLE | TR_FB_FINISHED, in one byte: every write and every check
   * touches that byte alone (two adjacent bools read as one word after two
   * byte stores stall the load: ~15 % of an encode, by perf). */
  uint8_t state;
  uint32_t table_start;
  uint16_t nslots;
  uint16_t slot_cap;
  uint16_t max_slot; /* 1 + the highest id added to the open table */
  uint32_t *slots;   /* per field id: ref of its data, 0 = absent; all zero
                        outside a table */
  /* written vtables, for deduplication */
  uint32_t *vtables;
  size_t nvtables, vt_cap;
};

enum { TR_FB_IN_TABLE = 1, TR_FB_FINISHED = 2 };

void tr_fb_builder_init(struct tr_fb_builder *b);
/* Forget the content, keep the memory. */
void tr_fb_builder_reset(struct tr_fb_builder *b);
void tr_fb_builder_free(struct tr_fb_builder *b);
/* The finished buffer, valid until the next reset or free. */
const uint8_t *tr_fb_builder_data(const struct tr_fb_builder *b, size_t *len);

_Noreturn void tr_fb_oom(size_t n);
_Noreturn void tr_fb_misuse(const char *what);
void tr_fb_grow(struct tr_fb_builder *b, size_t n);

static inline void tr_fb_ensure(struct tr_fb_builder *b, size_t n) {
  if (b->cap - b->used < n)
    tr_fb_grow(b, n);
}

/* Pads so that, once `additional` more bytes are written, the next write
 * lands aligned to `align`; reserves room for the padding, `additional`
 * bytes and one element of `align` bytes. */
static inline void tr_fb_prep(struct tr_fb_builder *b, size_t align,
                              size_t additional) {
  if (align > b->minalign)
    b->minalign = align;
  size_t pad = (~(b->used + additional) + 1) & (align - 1);
  tr_fb_ensure(b, pad + additional + align + 8);
  if (align <= 8) /* pad < 8: one store clears it */
    memset(b->buf + b->cap - b->used - 8, 0, 8);
  else
    memset(b->buf + b->cap - b->used - pad, 0, pad);
  b->used += pad;
}

static inline void tr_fb_push(struct tr_fb_builder *b, const void *p,
                              size_t n) {
  b->used += n;
  memcpy(b->buf + b->cap - b->used, p, n);
}

void tr_fb_push_big(struct tr_fb_builder *b, const void *p, size_t n);

static inline void tr_fb_slot(struct tr_fb_builder *b, unsigned id) {
  if (id >= b->nslots)
    tr_fb_misuse("field id outside the open table");
  b->slots[id] = (uint32_t)b->used;
  if (id >= b->max_slot)
    b->max_slot = (uint16_t)(id + 1);
}

#define TR_FB_ADD(name, type)                                                  \
  static inline void tr_fb_add_##name(struct tr_fb_builder *b, unsigned id,    \
                                      type v, type def) {                      \
    if (v == def && !b->force_defaults)                                        \
      return;                                                                  \
    tr_fb_prep(b, sizeof v, 0);                                                \
    tr_fb_push(b, &v, sizeof v);                                               \
    tr_fb_slot(b, id);                                                         \
  }
TR_FB_ADD(u8, uint8_t)
TR_FB_ADD(i8, int8_t)
TR_FB_ADD(u16, uint16_t)
TR_FB_ADD(i16, int16_t)
TR_FB_ADD(u32, uint32_t)
TR_FB_ADD(i32, int32_t)
TR_FB_ADD(u64, uint64_t)
TR_FB_ADD(i64, int64_t)
TR_FB_ADD(f32, float)
TR_FB_ADD(f64, double)
#undef TR_FB_ADD
static inline void tr_fb_add_bool(struct tr_fb_builder *b, unsigned id, bool v,
                                  bool def) {
  tr_fb_add_u8(b, id, v ? 1 : 0, def ? 1 : 0);
}

/* A uoffset field to an object built earlier (ref 0: nothing written). */
static inline void tr_fb_add_ref(struct tr_fb_builder *b, unsigned id,
                                 tr_fb_ref r) {
  if (!r)
    return;
  if (r > b->used)
    tr_fb_misuse("reference to an object not in this buffer");
  tr_fb_prep(b, 4, 0);
  uint32_t off = (uint32_t)(b->used + 4 - r);
  tr_fb_push(b, &off, 4);
  tr_fb_slot(b, id);
}

/* A struct stored inline in the table. */
static inline void tr_fb_add_struct(struct tr_fb_builder *b, unsigned id,
                                    const void *s, size_t size, size_t align) {
  if (!s)
    return;
  tr_fb_prep(b, align, size);
  tr_fb_push(b, s, size);
  tr_fb_slot(b, id);
}

void tr_fb_table_start(struct tr_fb_builder *b, unsigned nfields);
/* Aborts naming `type.field` when field `id` was not added. */
void tr_fb_table_require(struct tr_fb_builder *b, unsigned id,
                         const char *what);
/* Aborts naming `type.field` when the union whose value is field `id` has a
 * member tag (not 0) but no value: the verifier would refuse the buffer, and
 * the readers of its members rely on that (tr_fb_union_at). */
void tr_fb_table_union(struct tr_fb_builder *b, unsigned id, const char *what);
tr_fb_ref tr_fb_table_end(struct tr_fb_builder *b);

/* A string (len bytes at s, NUL added); not inside an open table. */
static inline tr_fb_ref tr_fb_create_string(struct tr_fb_builder *b,
                                            const char *s, size_t len) {
  if (b->state != 0 || len > INT32_MAX)
    tr_fb_misuse("string inside a table, after finish, or over 2 GiB");
  tr_fb_prep(b, 4, len + 1);
  b->used += 1;
  b->buf[b->cap - b->used] = 0;
  if (len > 64) /* libc's copy, not an inlined `rep movs` */
    tr_fb_push_big(b, s, len);
  else
    tr_fb_push(b, s, len);
  uint32_t n = (uint32_t)len;
  tr_fb_push(b, &n, 4);
  return (tr_fb_ref)b->used;
}
tr_fb_ref tr_fb_create_str(struct tr_fb_builder *b, const char *cstr);
/* n elements of elem_size bytes each, already little-endian. */
tr_fb_ref tr_fb_create_vector(struct tr_fb_builder *b, const void *elems,
                              size_t n, size_t elem_size, size_t align);
tr_fb_ref tr_fb_create_bytes(struct tr_fb_builder *b, const void *p, size_t n);
tr_fb_ref tr_fb_create_ref_vector(struct tr_fb_builder *b,
                                  const tr_fb_ref *refs, size_t n);

/* Ends the buffer with its root (and identifier when ident is not NULL). */
void tr_fb_finish(struct tr_fb_builder *b, tr_fb_ref root, const char *ident);
/* The same, preceded by a 4-byte little-endian length of the rest. */
void tr_fb_finish_sized(struct tr_fb_builder *b, tr_fb_ref root,
                        const char *ident);

#endif
