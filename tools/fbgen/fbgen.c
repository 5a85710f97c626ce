/* fbgen: C code from a binary FlatBuffers schema.
 *
 *   fbgen --bfbs journal.bfbs --name journal --out DIR
 *       writes DIR/journal_generated.h and DIR/journal_generated.c
 *   fbgen --bfbs journal.bfbs --name journal --interop-c F.c --interop-py F.py
 *       writes the interop-test cases (tests/unit/schemas)
 *
 * The bfbs must come from `flatc -b --schema --bfbs-filenames DIR`, so that
 * every type knows the file that declares it: only the types declared in
 * <name>.fbs are generated; included files get an #include of their own
 * generated header. See schemas/schemas.h for the API this writes. */
#include "tools/fbgen/fbgen.h"

#include "schemas/schemas.h"

#include <ctype.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const struct fbg_scalar scalars[] = {
    [FBG_UTYPE] = {"uint8_t", "u8", 1, "Uint8Flags", "Uint8"},
    [FBG_BOOL] = {"bool", "bool", 1, "BoolFlags", "Bool"},
    [FBG_BYTE] = {"int8_t", "i8", 1, "Int8Flags", "Int8"},
    [FBG_UBYTE] = {"uint8_t", "u8", 1, "Uint8Flags", "Uint8"},
    [FBG_SHORT] = {"int16_t", "i16", 2, "Int16Flags", "Int16"},
    [FBG_USHORT] = {"uint16_t", "u16", 2, "Uint16Flags", "Uint16"},
    [FBG_INT] = {"int32_t", "i32", 4, "Int32Flags", "Int32"},
    [FBG_UINT] = {"uint32_t", "u32", 4, "Uint32Flags", "Uint32"},
    [FBG_LONG] = {"int64_t", "i64", 8, "Int64Flags", "Int64"},
    [FBG_ULONG] = {"uint64_t", "u64", 8, "Uint64Flags", "Uint64"},
    [FBG_FLOAT] = {"float", "f32", 4, "Float32Flags", "Float32"},
    [FBG_DOUBLE] = {"double", "f64", 8, "Float64Flags", "Float64"},
};

bool fbg_is_scalar(int base) { return base >= FBG_UTYPE && base <= FBG_DOUBLE; }

const struct fbg_scalar *fbg_scalar_info(int base) {
  return fbg_is_scalar(base) ? &scalars[base] : NULL;
}

const char *fbg_cname(const char *name) {
  static char bufs[4][256];
  static int at;
  char *b = bufs[at++ & 3];
  snprintf(b, sizeof bufs[0], "%s", name);
  for (char *p = b; *p; p++)
    if (*p == '.')
      *p = '_';
  return b;
}

const char *fbg_short(const char *name) {
  const char *d = strrchr(name, '.');
  return d ? d + 1 : name;
}

bool fbg_declared_in(const char *decl_file, const char *decl) {
  return decl_file && !strcmp(decl_file, decl);
}

int fbg_nested_object(const struct fbg_schema *s, const struct fbg_object *o,
                      const char *nested) {
  int i = fbg_find_object(s, nested);
  if (i >= 0)
    return i;
  char buf[512];
  const char *dot = strrchr(o->name, '.');
  if (!dot)
    return -1;
  snprintf(buf, sizeof buf, "%.*s.%s", (int)(dot - o->name), o->name, nested);
  return fbg_find_object(s, buf);
}

const struct fbg_enum *fbg_union_of(const struct fbg_schema *s,
                                    const struct fbg_field *f) {
  if ((f->type.base == FBG_UTYPE || f->type.base == FBG_UNION) &&
      f->type.index >= 0 && (size_t)f->type.index < s->nenums)
    return &s->enums[f->type.index];
  return NULL;
}

static _Noreturn void die(const char *fmt, const char *a, const char *b) {
  fprintf(stderr, "fbgen: ");
  fprintf(stderr, fmt, a, b);
  fprintf(stderr, "\n");
  exit(1);
}

/* ---- literals ----------------------------------------------------------- */

static void print_default(FILE *f, const struct fbg_field *fd) {
  int base = fd->type.base;
  const char *ct = scalars[base].ctype;
  switch (base) {
  case FBG_BOOL:
    fprintf(f, "%s", fd->def_int ? "true" : "false");
    break;
  case FBG_FLOAT:
  case FBG_DOUBLE:
    if (isnan(fd->def_real))
      fprintf(f, "((%s)NAN)", ct);
    else if (isinf(fd->def_real))
      fprintf(f, "((%s)%sINFINITY)", ct, fd->def_real < 0 ? "-" : "");
    else
      fprintf(f, "((%s)%.17g)", ct, fd->def_real);
    break;
  case FBG_ULONG:
    fprintf(f, "UINT64_C(%" PRIu64 ")", (uint64_t)fd->def_int);
    break;
  case FBG_LONG:
    if (fd->def_int == INT64_MIN)
      fprintf(f, "INT64_MIN");
    else
      fprintf(f, "INT64_C(%" PRId64 ")", fd->def_int);
    break;
  default:
    fprintf(f, "((%s)%" PRId64 ")", ct, fd->def_int);
  }
}

/* ---- header ------------------------------------------------------------- */

static void gen_enum(FILE *h, const struct fbg_enum *e) {
  const char *n = fbg_cname(e->name);
  fprintf(h, "enum %s {\n", n);
  for (size_t i = 0; i < e->nvals; i++)
    fprintf(h, "  %s_%s = %" PRId64 ",\n", n, e->vals[i].name,
            e->vals[i].value);
  fprintf(h, "};\n\n");
  fprintf(h, "static inline const char *%s_name(int64_t v) {\n  switch (v) {\n",
          n);
  for (size_t i = 0; i < e->nvals; i++)
    fprintf(h, "  case %" PRId64 ":\n    return \"%s\";\n", e->vals[i].value,
            e->vals[i].name);
  fprintf(h, "  default:\n    return NULL;\n  }\n}\n\n");
}

static void gen_struct(FILE *h, const struct fbg_schema *s,
                       const struct fbg_object *o) {
  const char *n = fbg_cname(o->name);
  fprintf(h, "struct %s {\n", n);
  for (size_t i = 0; i < o->nfields; i++) {
    const struct fbg_field *f = &o->fields[i];
    const char *align = i == 0 ? "" : NULL;
    char al[32] = "";
    if (align)
      snprintf(al, sizeof al, "_Alignas(%d) ", o->minalign);
    if (fbg_is_scalar(f->type.base))
      fprintf(h, "  %s%s %s;\n", al, scalars[f->type.base].ctype, f->name);
    else if (f->type.base == FBG_OBJ)
      fprintf(h, "  %sstruct %s %s;\n", al,
              fbg_cname(s->objects[f->type.index].name), f->name);
    else
      die("%s.%s: unsupported struct member type (arrays?)", o->name, f->name);
    if (f->padding)
      fprintf(h, "  uint8_t pad_%s_[%u];\n", f->name, f->padding);
  }
  fprintf(h, "};\n");
  fprintf(h, "_Static_assert(sizeof(struct %s) == %d, \"%s layout\");\n", n,
          o->bytesize, o->name);
  for (size_t i = 0; i < o->nfields; i++)
    fprintf(h, "_Static_assert(offsetof(struct %s, %s) == %u, \"%s layout\");\n",
            n, o->fields[i].name, o->fields[i].offset, o->name);
  fprintf(h, "\n");
}

static const char *elem_ctype(const struct fbg_schema *s, int elem, int index,
                              char *buf, size_t n) {
  if (fbg_is_scalar(elem))
    return scalars[elem].ctype;
  if (elem == FBG_OBJ) {
    snprintf(buf, n, "struct %s", fbg_cname(s->objects[index].name));
    return buf;
  }
  return NULL;
}

/* How gen_table_readers names and reaches the fields: the plain readers
 * take the table (N_T_f(t)), the view readers a resolved view
 * (N_T_view_f(&v)); both emit the same code over different primitives. */
struct rd_mode {
  const char *pre;    /* between N_T_ and the field's name: "" or "view_" */
  const char *param;  /* suffix of the parameter's struct: "" or "_view" */
  const char *arg;    /* what the primitives take: "t" or "&t->v" */
  const char *field;  /* tr_fb_field / tr_fb_view_field */
  const char *ref;    /* tr_fb_field_ref / tr_fb_view_ref */
  const char *str;    /* tr_fb_field_str / tr_fb_view_str */
  const char *vec;    /* tr_fb_field_vec / tr_fb_view_vec */
  const char *uni;    /* tr_fb_field_union / tr_fb_view_union */
  const char *req;    /* tr_fb_field_req / tr_fb_view_field_req */
  const char *in;     /* tr_fb_field_in / tr_fb_view_field_in */
};

static const struct rd_mode rd_table = {
    "",           "",   "t", "tr_fb_field", "tr_fb_field_ref", "tr_fb_field_str",
    "tr_fb_field_vec", "tr_fb_field_union", "tr_fb_field_req", "tr_fb_field_in"};
static const struct rd_mode rd_view = {
    "view_", "_view", "&t->v", "tr_fb_view_field", "tr_fb_view_ref",
    "tr_fb_view_str", "tr_fb_view_vec", "tr_fb_view_union",
    "tr_fb_view_field_req", "tr_fb_view_field_in"};

/* The highest id of a required field of o, or -1: every field with an id up
 * to it has its slot in any vtable a reader may see (tr_fb_field_in). */
static int required_cover(const struct fbg_object *o) {
  int cover = -1;
  for (size_t i = 0; i < o->nfields; i++)
    if (o->fields[i].required && !o->fields[i].deprecated &&
        (int)o->fields[i].id > cover)
      cover = (int)o->fields[i].id;
  return cover;
}

/* Required strings, tables, structs and vectors (not unions: a tag may name
 * a member the value does not match) are read without the absent checks:
 * the verifier and N_T_end guarantee them (schemas.h, tr_fb_field_req).
 * Other fields `in` the vtable (at or before a required one) skip only the
 * vtable-size check (tr_fb_field_in). Writes into str/vec/ref the
 * expressions that reach field `id`'s string, vector and table in mode m. */
static void field_exprs(const struct rd_mode *m, const struct fbg_field *f,
                        bool in, char *str, char *vec, char *ref, size_t n) {
  if (f->required && f->type.base != FBG_UNION) {
    snprintf(str, n, "tr_fb_str_at(%s(%s, %u))", m->req, m->arg, f->id);
    snprintf(vec, n, "tr_fb_vec_at(%s(%s, %u))", m->req, m->arg, f->id);
    snprintf(ref, n, "tr_fb_deref(%s(%s, %u))", m->req, m->arg, f->id);
  } else if (in) {
    snprintf(str, n, "tr_fb_str_opt(%s(%s, %u))", m->in, m->arg, f->id);
    snprintf(vec, n, "tr_fb_vec_opt(%s(%s, %u))", m->in, m->arg, f->id);
    snprintf(ref, n, "tr_fb_ref_opt(%s(%s, %u))", m->in, m->arg, f->id);
  } else {
    snprintf(str, n, "%s(%s, %u)", m->str, m->arg, f->id);
    snprintf(vec, n, "%s(%s, %u)", m->vec, m->arg, f->id);
    snprintf(ref, n, "%s(%s, %u)", m->ref, m->arg, f->id);
  }
}

static void gen_table_readers(FILE *h, const struct fbg_schema *s,
                              const struct fbg_object *o,
                              const struct rd_mode *m) {
  char tn[256], pt[300], fx[300];
  snprintf(tn, sizeof tn, "%s", fbg_cname(o->name));
  const char *T = tn;
  /* PT: the parameter's type; FX: the function names' prefix */
  snprintf(pt, sizeof pt, "%s%s", T, m->param);
  snprintf(fx, sizeof fx, "%s_%s", T, m->pre);
  const char *PT = pt, *FX = fx, *A = m->arg;
  int cover = required_cover(o);
  for (size_t i = 0; i < o->nfields; i++) {
    const struct fbg_field *f = &o->fields[i];
    const char *fn = f->name;
    unsigned id = f->id;
    if (f->deprecated)
      continue;
    bool in = (int)id <= cover;
    /* FLD: the primitive giving the field's address or NULL */
    const char *FLD = in ? m->in : m->field;
    char es[160], ev[160], er[160];
    field_exprs(m, f, in, es, ev, er, sizeof es);
    fprintf(h,
            "static inline bool %shas_%s(const struct %s *t) {\n"
            "  return %s(%s, %u) != NULL;\n}\n",
            FX, fn, PT, FLD, A, id);
    int base = f->type.base;
    if (fbg_is_scalar(base)) {
      const struct fbg_scalar *sc = &scalars[base];
      fprintf(h,
              "static inline %s %s%s(const struct %s *t) {\n"
              "  const uint8_t *p = %s(%s, %u);\n"
              "  return p ? tr_fb_read_%s(p) : ",
              sc->ctype, FX, fn, PT, FLD, A, id, sc->load);
      print_default(h, f);
      fprintf(h, ";\n}\n");
    } else if (base == FBG_STRING) {
      fprintf(h,
              "static inline struct tr_fb_str %s%s(const struct %s *t) {\n"
              "  return %s;\n}\n",
              FX, fn, PT, es);
    } else if (base == FBG_OBJ) {
      const struct fbg_object *so = &s->objects[f->type.index];
      const char *sn = fbg_cname(so->name);
      if (so->is_struct && f->required)
        fprintf(h,
                "static inline struct %s %s%s(const struct %s *t) {\n"
                "  struct %s v;\n"
                "  memcpy(&v, %s(%s, %u), sizeof v);\n"
                "  return v;\n}\n",
                sn, FX, fn, PT, sn, m->req, A, id);
      else if (so->is_struct)
        fprintf(h,
                "static inline struct %s %s%s(const struct %s *t) {\n"
                "  struct %s v;\n"
                "  const uint8_t *p = %s(%s, %u);\n"
                "  if (p)\n    memcpy(&v, p, sizeof v);\n"
                "  else\n    memset(&v, 0, sizeof v);\n"
                "  return v;\n}\n",
                sn, FX, fn, PT, sn, FLD, A, id);
      else
        fprintf(h,
                "static inline const struct %s *%s%s(const struct %s *t) {\n"
                "  return (const struct %s *)%s;\n}\n",
                sn, FX, fn, PT, sn, er);
    } else if (base == FBG_UNION) {
      const struct fbg_enum *u = fbg_union_of(s, f);
      fprintf(h,
              "static inline const void *%s%s(const struct %s *t) {\n"
              "  return %s;\n}\n",
              FX, fn, PT, er);
      for (size_t k = 0; u && k < u->nvals; k++) {
        if (u->vals[k].object < 0)
          continue;
        const char *mn = fbg_cname(s->objects[u->vals[k].object].name);
        fprintf(h,
                "static inline const struct %s *%s%s_as_%s(const struct %s "
                "*t) {\n"
                "  return (const struct %s *)%s(%s, %u, %" PRId64 ");\n}\n",
                mn, FX, fn, u->vals[k].name, PT, mn, m->uni, A, id,
                u->vals[k].value);
      }
    } else if (base == FBG_VECTOR) {
      int el = f->type.element;
      fprintf(h,
              "static inline struct tr_fb_vec %s%s(const struct %s *t) {\n"
              "  return %s;\n}\n"
              "static inline uint32_t %s%s_len(const struct %s *t) {\n"
              "  return %s.len;\n}\n",
              FX, fn, PT, ev, FX, fn, PT, ev);
      if (fbg_is_scalar(el)) {
        const struct fbg_scalar *sc = &scalars[el];
        fprintf(h,
                "static inline %s %s%s_at(const struct %s *t, uint32_t i) {\n"
                "  struct tr_fb_vec v = %s;\n"
                "  return i < v.len ? tr_fb_read_%s(v.data + (size_t)i * %u) "
                ": 0;\n}\n",
                sc->ctype, FX, fn, PT, ev, sc->load, sc->size);
      } else if (el == FBG_STRING) {
        fprintf(h,
                "static inline struct tr_fb_str %s%s_at(const struct %s *t, "
                "uint32_t i) {\n"
                "  return tr_fb_vec_str(%s, i);\n}\n",
                FX, fn, PT, ev);
      } else if (el == FBG_OBJ) {
        const struct fbg_object *so = &s->objects[f->type.index];
        const char *sn = fbg_cname(so->name);
        if (so->is_struct)
          fprintf(h,
                  "static inline struct %s %s%s_at(const struct %s *t, "
                  "uint32_t i) {\n"
                  "  struct %s e;\n"
                  "  struct tr_fb_vec v = %s;\n"
                  "  if (i < v.len)\n"
                  "    memcpy(&e, v.data + (size_t)i * sizeof e, sizeof e);\n"
                  "  else\n    memset(&e, 0, sizeof e);\n"
                  "  return e;\n}\n",
                  sn, FX, fn, PT, sn, ev);
        else
          fprintf(h,
                  "static inline const struct %s *%s%s_at(const struct %s "
                  "*t, uint32_t i) {\n"
                  "  return (const struct %s *)tr_fb_vec_table(%s, i);\n}\n",
                  sn, FX, fn, PT, sn, ev);
      } else {
        die("%s.%s: unsupported vector element (vector of unions?)", o->name,
            fn);
      }
    } else {
      die("%s.%s: unsupported field type (fixed arrays?)", o->name, fn);
    }
  }
}

/* A field named `view` or `view_*` would collide with the view readers'
 * names (N_T_view, N_T_view_<field>): refused before anything is written. */
static void check_view_names(const struct fbg_schema *s, const char *decl) {
  for (size_t k = 0; k < s->nobjects; k++) {
    const struct fbg_object *o = &s->objects[k];
    if (o->is_struct || !fbg_declared_in(o->decl_file, decl))
      continue;
    for (size_t i = 0; i < o->nfields; i++)
      if (!strcmp(o->fields[i].name, "view") ||
          !strncmp(o->fields[i].name, "view_", 5))
        die("%s.%s: field name collides with the view readers (N_T_view_*)",
            o->name, o->fields[i].name);
  }
}

/* The view form of a table's readers: struct N_T_view, N_T_view(t) resolving
 * the vtable once, then N_T_view_<reader>(&v) for every reader above. */
static void gen_table_view(FILE *h, const struct fbg_schema *s,
                           const struct fbg_object *o) {
  const char *T = fbg_cname(o->name);
  fprintf(h,
          "struct %s_view {\n  struct tr_fb_view v;\n};\n"
          "static inline struct %s_view %s_view(const struct %s *t) {\n"
          "  struct %s_view v = {tr_fb_view_of(t)};\n  return v;\n}\n",
          T, T, T, T, T);
  gen_table_readers(h, s, o, &rd_view);
}

static unsigned table_slots(const struct fbg_object *o) {
  unsigned n = 0;
  for (size_t i = 0; i < o->nfields; i++)
    if (o->fields[i].id + 1 > n)
      n = o->fields[i].id + 1;
  return n;
}

static void gen_table_builders(FILE *h, const struct fbg_schema *s,
                               const struct fbg_object *o, bool is_root) {
  char tn[256];
  snprintf(tn, sizeof tn, "%s", fbg_cname(o->name));
  const char *T = tn;
  fprintf(h,
          "static inline void %s_start(struct tr_fb_builder *b) {\n"
          "  tr_fb_table_start(b, %u);\n}\n",
          T, table_slots(o));
  for (size_t i = 0; i < o->nfields; i++) {
    const struct fbg_field *f = &o->fields[i];
    const char *fn = f->name;
    unsigned id = f->id;
    int base = f->type.base;
    if (f->deprecated)
      continue;
    if (fbg_is_scalar(base)) {
      const struct fbg_scalar *sc = &scalars[base];
      fprintf(h,
              "static inline void %s_add_%s(struct tr_fb_builder *b, %s v) {\n"
              "  tr_fb_add_%s(b, %u, v, ",
              T, fn, sc->ctype, sc->load, id);
      print_default(h, f);
      fprintf(h, ");\n}\n");
    } else if (base == FBG_OBJ && s->objects[f->type.index].is_struct) {
      const struct fbg_object *so = &s->objects[f->type.index];
      fprintf(h,
              "static inline void %s_add_%s(struct tr_fb_builder *b, "
              "const struct %s *v) {\n"
              "  tr_fb_add_struct(b, %u, v, sizeof *v, %d);\n}\n",
              T, fn, fbg_cname(so->name), id, so->minalign);
    } else {
      fprintf(h,
              "static inline void %s_add_%s(struct tr_fb_builder *b, "
              "tr_fb_ref r) {\n"
              "  tr_fb_add_ref(b, %u, r);\n}\n",
              T, fn, id);
    }
    if (base == FBG_UNION) {
      const struct fbg_enum *u = fbg_union_of(s, f);
      for (size_t k = 0; u && k < u->nvals; k++) {
        if (u->vals[k].object < 0)
          continue;
        fprintf(h,
                "static inline void %s_add_%s_%s(struct tr_fb_builder *b, "
                "tr_fb_ref r) {\n"
                "  tr_fb_add_u8(b, %u, %" PRId64 ", 0);\n"
                "  tr_fb_add_ref(b, %u, r);\n}\n",
                T, fn, u->vals[k].name, id - 1, u->vals[k].value, id);
      }
    }
    if (base == FBG_VECTOR) {
      int el = f->type.element;
      char eb[300];
      if (fbg_is_scalar(el)) {
        fprintf(h,
                "static inline tr_fb_ref %s_create_%s(struct tr_fb_builder *b, "
                "const %s *v, size_t n) {\n"
                "  return tr_fb_create_vector(b, v, n, %u, %u);\n}\n",
                T, fn, scalars[el].ctype, scalars[el].size, scalars[el].size);
      } else if (el == FBG_OBJ && s->objects[f->type.index].is_struct) {
        const struct fbg_object *so = &s->objects[f->type.index];
        fprintf(h,
                "static inline tr_fb_ref %s_create_%s(struct tr_fb_builder *b, "
                "const %s *v, size_t n) {\n"
                "  return tr_fb_create_vector(b, v, n, %d, %d);\n}\n",
                T, fn, elem_ctype(s, el, f->type.index, eb, sizeof eb),
                so->bytesize, so->minalign);
      } else {
        fprintf(h,
                "static inline tr_fb_ref %s_create_%s(struct tr_fb_builder *b, "
                "const tr_fb_ref *refs, size_t n) {\n"
                "  return tr_fb_create_ref_vector(b, refs, n);\n}\n",
                T, fn);
      }
    }
  }
  fprintf(h, "static inline tr_fb_ref %s_end(struct tr_fb_builder *b) {\n", T);
  for (size_t i = 0; i < o->nfields; i++)
    if (o->fields[i].required && !o->fields[i].deprecated)
      fprintf(h, "  tr_fb_table_require(b, %u, \"%s.%s\");\n", o->fields[i].id,
              o->name, o->fields[i].name);
  for (size_t i = 0; i < o->nfields; i++)
    if (o->fields[i].type.base == FBG_UNION && !o->fields[i].deprecated)
      fprintf(h, "  tr_fb_table_union(b, %u, \"%s.%s\");\n", o->fields[i].id,
              o->name, o->fields[i].name);
  fprintf(h, "  return tr_fb_table_end(b);\n}\n");
  const char *ident = is_root && s->file_ident ? s->file_ident : NULL;
  char q[16] = "NULL";
  if (ident)
    snprintf(q, sizeof q, "\"%.4s\"", ident);
  fprintf(h,
          "static inline void %s_finish(struct tr_fb_builder *b, tr_fb_ref r) "
          "{\n  tr_fb_finish(b, r, %s);\n}\n"
          "static inline void %s_finish_sized(struct tr_fb_builder *b, "
          "tr_fb_ref r) {\n  tr_fb_finish_sized(b, r, %s);\n}\n",
          T, q, T, q);
  fprintf(h,
          "int %s_verify_table(struct tr_fb_verifier *v, uint32_t pos);\n"
          "/* The root table after verifying the whole buffer, or NULL (err says "
          "why). */\n"
          "const struct %s *%s_verify_as_root(const void *buf, size_t len, "
          "struct tr_fb_error *err);\n"
          "const struct %s *%s_verify_as_root_opts(const void *buf, size_t len, "
          "const char *ident, const struct tr_fb_limits *lim, struct "
          "tr_fb_error *err);\n"
          "/* A size-prefixed buffer (a frame), prefix included. */\n"
          "const struct %s *%s_verify_as_root_sized(const void *buf, size_t "
          "len, struct tr_fb_error *err);\n"
          "/* Trusted buffers only (built by this process). */\n"
          "static inline const struct %s *%s_as_root(const void *buf) {\n"
          "  return (const struct %s *)tr_fb_root(buf);\n}\n",
          T, T, T, T, T, T, T, T, T, T);
}

/* ---- verifiers ---------------------------------------------------------- */

static void gen_verifier(FILE *c, const struct fbg_schema *s,
                         const struct fbg_object *o, bool is_root) {
  char tn[256];
  snprintf(tn, sizeof tn, "%s", fbg_cname(o->name));
  const char *T = tn;
  fprintf(c,
          "int %s_verify_table(struct tr_fb_verifier *v, uint32_t pos) {\n"
          "  static const char T[] = \"%s\";\n"
          "  struct tr_fb_vtab tv = {0, 0, 0, 0};\n"
          "  uint32_t p = 0;\n"
          "  int rc = tr_fb_verify_table_enter(v, pos, T, &tv);\n"
          "  if (rc)\n    return rc;\n"
          "  (void)p;\n",
          T, o->name);
  for (size_t i = 0; i < o->nfields; i++) {
    const struct fbg_field *f = &o->fields[i];
    int base = f->type.base;
    if (f->deprecated)
      continue;
    const char *fn = f->name;
    unsigned size = 4, align = 4;
    if (fbg_is_scalar(base)) {
      size = align = scalars[base].size;
    } else if (base == FBG_OBJ && s->objects[f->type.index].is_struct) {
      size = (unsigned)s->objects[f->type.index].bytesize;
      align = (unsigned)s->objects[f->type.index].minalign;
    }
    fprintf(c,
            "  if ((rc = tr_fb_verify_field(v, &tv, %u, %u, %u, %s, T, \"%s\", "
            "&p)))\n    return rc;\n",
            f->id, size, align, f->required ? "true" : "false", fn);
    if (base == FBG_UTYPE) {
      const struct fbg_enum *u = fbg_union_of(s, f);
      fprintf(c,
              "  uint8_t tag%u = p ? v->buf[p] : 0;\n"
              "  if (!%s_name(tag%u))\n"
              "    return tr_fb_verify_fail(v, TR_FB_E_UNION, p, T, \"%s\");\n",
              f->id, fbg_cname(u->name), f->id, fn);
    } else if (base == FBG_STRING) {
      fprintf(c,
              "  if (p && (rc = tr_fb_verify_string(v, p, T, \"%s\")))\n"
              "    return rc;\n",
              fn);
    } else if (base == FBG_OBJ && !s->objects[f->type.index].is_struct) {
      fprintf(c,
              "  if (p) {\n"
              "    uint32_t t = 0;\n"
              "    if ((rc = tr_fb_verify_offset(v, p, T, \"%s\", &t)) ||\n"
              "        (rc = %s_verify_table(v, t)))\n"
              "      return rc;\n  }\n",
              fn, fbg_cname(s->objects[f->type.index].name));
    } else if (base == FBG_UNION) {
      const struct fbg_enum *u = fbg_union_of(s, f);
      fprintf(c,
              "  if (!p && tag%u)\n"
              "    return tr_fb_verify_fail(v, TR_FB_E_UNION_VALUE, tv.pos, T, \"%s\");\n",
              f->id - 1, fn);
      fprintf(c,
              "  if (p && tag%u) {\n"
              "    uint32_t t = 0;\n"
              "    if ((rc = tr_fb_verify_offset(v, p, T, \"%s\", &t)))\n"
              "      return rc;\n"
              "    switch (tag%u) {\n",
              f->id - 1, fn, f->id - 1);
      for (size_t k = 0; k < u->nvals; k++)
        if (u->vals[k].object >= 0)
          fprintf(c,
                  "    case %" PRId64 ":\n"
                  "      rc = %s_verify_table(v, t);\n      break;\n",
                  u->vals[k].value,
                  fbg_cname(s->objects[u->vals[k].object].name));
      fprintf(c, "    }\n    if (rc)\n      return rc;\n  }\n");
    } else if (base == FBG_VECTOR) {
      int el = f->type.element;
      if (f->nested) {
        int no = fbg_nested_object(s, o, f->nested);
        if (no < 0)
          die("%s: nested_flatbuffer type %s not found", o->name, f->nested);
        fprintf(c,
                "  if (p && (rc = tr_fb_verify_nested(v, p, %s_verify_table, "
                "T, \"%s\")))\n    return rc;\n",
                fbg_cname(s->objects[no].name), fn);
      } else if (fbg_is_scalar(el)) {
        fprintf(c,
                "  if (p) {\n    uint32_t n = 0;\n"
                "    if ((rc = tr_fb_verify_vector(v, p, %u, %u, false, T, "
                "\"%s\", &n)))\n      return rc;\n  }\n",
                scalars[el].size, scalars[el].size, fn);
      } else if (el == FBG_STRING) {
        fprintf(c,
                "  if (p && (rc = tr_fb_verify_string_vector(v, p, T, "
                "\"%s\")))\n    return rc;\n",
                fn);
      } else if (el == FBG_OBJ && s->objects[f->type.index].is_struct) {
        const struct fbg_object *so = &s->objects[f->type.index];
        fprintf(c,
                "  if (p) {\n    uint32_t n = 0;\n"
                "    if ((rc = tr_fb_verify_vector(v, p, %d, %d, false, T, "
                "\"%s\", &n)))\n      return rc;\n  }\n",
                so->bytesize, so->minalign, fn);
      } else if (el == FBG_OBJ) {
        fprintf(c,
                "  if (p && (rc = tr_fb_verify_table_vector(v, p, "
                "%s_verify_table, T, \"%s\")))\n    return rc;\n",
                fbg_cname(s->objects[f->type.index].name), fn);
      }
    }
  }
  fprintf(c, "  tr_fb_verify_table_leave(v);\n  return 0;\n}\n\n");
  const char *ident = is_root && s->file_ident ? s->file_ident : NULL;
  char q[16] = "NULL";
  if (ident)
    snprintf(q, sizeof q, "\"%.4s\"", ident);
  fprintf(c,
          "const struct %s *%s_verify_as_root(const void *buf, size_t len, "
          "struct tr_fb_error *err) {\n"
          "  return tr_fb_verify_root(buf, len, %s, NULL, err, "
          "%s_verify_table);\n}\n\n"
          "const struct %s *%s_verify_as_root_opts(const void *buf, size_t len, "
          "const char *ident, const struct tr_fb_limits *lim, struct "
          "tr_fb_error *err) {\n"
          "  return tr_fb_verify_root(buf, len, ident, lim, err, "
          "%s_verify_table);\n}\n\n"
          "const struct %s *%s_verify_as_root_sized(const void *buf, size_t "
          "len, struct tr_fb_error *err) {\n"
          "  return tr_fb_verify_root_sized(buf, len, %s, NULL, err, "
          "%s_verify_table);\n}\n\n",
          T, T, q, T, T, T, T, T, T, q, T);
}

/* ---- files -------------------------------------------------------------- */

static FILE *open_out(const char *path) {
  FILE *f = fopen(path, "w");
  if (!f)
    die("cannot write %s%s", path, "");
  return f;
}

static void close_out(FILE *f, const char *path) {
  if (ferror(f) || fclose(f))
    die("error writing %s%s", path, "");
}

static void gen_c(const struct fbg_schema *s, const char *name,
                  const char *decl, const char *outdir) {
  char hpath[1024], cpath[1024], guard[256];
  snprintf(hpath, sizeof hpath, "%s/%s_generated.h", outdir, name);
  snprintf(cpath, sizeof cpath, "%s/%s_generated.c", outdir, name);
  snprintf(guard, sizeof guard, "TR_SCHEMAS_%s_GENERATED_H", name);
  for (char *p = guard; *p; p++)
    *p = (char)toupper((unsigned char)*p);
  check_view_names(s, decl);
  FILE *h = open_out(hpath);
  fprintf(h,
          "/* Generated by tools/fbgen from schemas/%s.fbs. Do not edit.\n"
          " * API: see schemas/schemas.h. */\n"
          "#ifndef %s\n#define %s\n\n#include \"schemas/schemas.h\"\n",
          name, guard, guard);
  /* included schemas, each once */
  for (size_t i = 0; i < s->nobjects + s->nenums; i++) {
    const char *df = i < s->nobjects ? s->objects[i].decl_file
                                     : s->enums[i - s->nobjects].decl_file;
    if (!df || !strcmp(df, decl))
      continue;
    bool seen = false;
    for (size_t k = 0; k < i && !seen; k++) {
      const char *d2 = k < s->nobjects ? s->objects[k].decl_file
                                       : s->enums[k - s->nobjects].decl_file;
      seen = d2 && !strcmp(d2, df);
    }
    if (seen)
      continue;
    const char *base = strrchr(df, '/');
    base = base ? base + 1 : df;
    const char *dot = strrchr(base, '.');
    fprintf(h, "#include \"schemas/%.*s_generated.h\"\n",
            (int)(dot ? dot - base : (ptrdiff_t)strlen(base)), base);
  }
  fprintf(h, "\n#include <math.h>\n\n");
  const struct fbg_object *root = s->root >= 0 ? &s->objects[s->root] : NULL;
  if (root && !fbg_declared_in(root->decl_file, decl))
    root = NULL;
  if (root && s->file_ident)
    fprintf(h, "#define %s_IDENTIFIER \"%.4s\"\n\n", fbg_cname(root->name),
            s->file_ident);
  for (size_t i = 0; i < s->nenums; i++)
    if (fbg_declared_in(s->enums[i].decl_file, decl))
      gen_enum(h, &s->enums[i]);
  for (size_t i = 0; i < s->nobjects; i++)
    if (fbg_declared_in(s->objects[i].decl_file, decl) &&
        !s->objects[i].is_struct)
      fprintf(h, "struct %s; /* table, opaque */\n",
              fbg_cname(s->objects[i].name));
  fprintf(h, "\n");
  /* structs may contain structs: emit in dependency order */
  bool *done = calloc(s->nobjects ? s->nobjects : 1, 1);
  if (!done)
    tr_fb_oom(s->nobjects);
  for (bool progress = true; progress;) {
    progress = false;
    for (size_t i = 0; i < s->nobjects; i++) {
      const struct fbg_object *o = &s->objects[i];
      if (done[i] || !o->is_struct)
        continue;
      bool ready = true;
      for (size_t k = 0; k < o->nfields; k++)
        if (o->fields[k].type.base == FBG_OBJ &&
            !done[o->fields[k].type.index] &&
            fbg_declared_in(s->objects[o->fields[k].type.index].decl_file,
                            decl))
          ready = false;
      if (!ready)
        continue;
      done[i] = true;
      progress = true;
      if (fbg_declared_in(o->decl_file, decl))
        gen_struct(h, s, o);
    }
  }
  free(done);
  for (size_t i = 0; i < s->nobjects; i++) {
    const struct fbg_object *o = &s->objects[i];
    if (!fbg_declared_in(o->decl_file, decl) || o->is_struct)
      continue;
    fprintf(h, "/* ---- %s ---- */\n", o->name);
    gen_table_readers(h, s, o, &rd_table);
    gen_table_view(h, s, o);
    gen_table_builders(h, s, o, o == root);
    fprintf(h, "\n");
  }
  fprintf(h, "#endif\n");
  close_out(h, hpath);

  FILE *c = open_out(cpath);
  fprintf(c,
          "/* Generated by tools/fbgen from schemas/%s.fbs. Do not edit. */\n"
          "#include \"schemas/%s_generated.h\"\n\n",
          name, name);
  for (size_t i = 0; i < s->nobjects; i++) {
    const struct fbg_object *o = &s->objects[i];
    if (fbg_declared_in(o->decl_file, decl) && !o->is_struct)
      gen_verifier(c, s, o, o == root);
  }
  close_out(c, cpath);
}

static uint8_t *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f)
    die("cannot open %s%s", path, "");
  size_t cap = 1 << 16, n = 0;
  uint8_t *buf = malloc(cap);
  if (!buf)
    tr_fb_oom(cap);
  for (;;) {
    if (n == cap) {
      if (cap > (64u << 20))
        die("%s: too large%s", path, "");
      cap *= 2;
      uint8_t *nb = realloc(buf, cap);
      if (!nb)
        tr_fb_oom(cap);
      buf = nb;
    }
    size_t r = fread(buf + n, 1, cap - n, f);
    if (!r)
      break;
    n += r;
  }
  if (ferror(f))
    die("cannot read %s%s", path, "");
  fclose(f);
  *len = n;
  return buf;
}

int main(int argc, char **argv) {
  const char *bfbs = NULL, *name = NULL, *out = NULL, *ic = NULL, *ipy = NULL;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--bfbs"))
      bfbs = argv[i + 1];
    else if (!strcmp(argv[i], "--name"))
      name = argv[i + 1];
    else if (!strcmp(argv[i], "--out"))
      out = argv[i + 1];
    else if (!strcmp(argv[i], "--interop-c"))
      ic = argv[i + 1];
    else if (!strcmp(argv[i], "--interop-py"))
      ipy = argv[i + 1];
    else
      die("unknown option %s%s", argv[i], "");
  }
  if (!bfbs || !name || (!out && !(ic && ipy))) {
    fprintf(stderr, "usage: fbgen --bfbs F.bfbs --name NAME (--out DIR | "
                    "--interop-c F.c --interop-py F.py)\n");
    return 2;
  }
  size_t len;
  uint8_t *buf = read_file(bfbs, &len);
  struct fbg_schema s;
  char err[256];
  if (fbg_schema_read(buf, len, &s, err, sizeof err))
    die("%s: %s", bfbs, err);
  char decl[300];
  snprintf(decl, sizeof decl, "//%s.fbs", name);
  if (out)
    gen_c(&s, name, decl, out);
  if (ic && ipy) {
    FILE *c = open_out(ic), *py = open_out(ipy);
    int rc = fbg_gen_interop(&s, name, decl, c, py);
    close_out(c, ic);
    close_out(py, ipy);
    if (rc)
      return 1;
  }
  fbg_schema_free(&s);
  free(buf);
  return 0;
}
