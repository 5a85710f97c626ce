/* Interop-test generator: for every table of a schema, C code (over the
 * generated C API) and Python code (over `flatc --python` output and
 * Google's Python runtime) that build the same values and check them field
 * by field. The values are fixed here, at generation time, and written into
 * both outputs as literals, so each side checks what the other built.
 *
 * Variants of a table T (depth d of nesting, at most MAXD):
 *   f<d>   every field set to a non-default value; tables, vectors of tables
 *          and unions filled with f<d+1> (left out at MAXD unless required)
 *   a      only required fields (absent fields must read as defaults)
 *   d      every scalar written with its default value (force_defaults),
 *          empty strings and vectors, tables as `a`
 *   u<id>_<k>  as f0, with union field <id> holding its k-th member
 * Cases (one buffer each) are T.full (f0), T.absent, T.defaults and every
 * union member of T, for the tables declared in the schema; the root type's
 * cases carry the file identifier. The C checks read every field twice,
 * through the plain readers (N_T_f(t)) and through a view (N_T_view_f(&w)).
 * The walkers (w_N_T, for the fuzz targets and interop_test) read every
 * field of any verified buffer both ways and abort when the two differ. */
#include "tools/fbgen/fbgen.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define MAXD 2

struct gen {
  const struct fbg_schema *s;
  const char *name;
  FILE *c;
  FILE *py;
};

enum vkind { V_FULL, V_ABSENT, V_DEFAULTS };

struct variant {
  enum vkind kind;
  int depth;
  int ufield; /* union field id overridden, -1 */
  int umember; /* object index of the member */
  char sfx[64];
};

static uint64_t fnv(const char *a, const char *b, int d, int e) {
  char buf[512];
  snprintf(buf, sizeof buf, "%s/%s/%d/%d", a, b, d, e);
  uint64_t h = 1469598103934665603ull;
  for (const char *p = buf; *p; p++) {
    h ^= (unsigned char)*p;
    h *= 1099511628211ull;
  }
  return h ^ (h >> 29);
}

/* ---- scalar values ------------------------------------------------------ */

struct sval {
  int64_t i; /* ints, bools (bit pattern for unsigned) */
  double d;  /* floats */
};

static bool is_float(int base) {
  return base == FBG_FLOAT || base == FBG_DOUBLE;
}

static struct sval pick_scalar(const struct fbg_schema *s,
                               const struct fbg_field *f, uint64_t h,
                               bool avoid_default) {
  struct sval v = {0, 0};
  int base = f->type.base;
  bool neg = (h >> 17) & 1;
  if (base == FBG_VECTOR)
    base = f->type.element;
  if (f->type.index >= 0 && fbg_is_scalar(base) && base != FBG_UTYPE) {
    const struct fbg_enum *e = &s->enums[f->type.index];
    size_t k = h % e->nvals;
    if (avoid_default && e->nvals > 1 && e->vals[k].value == f->def_int)
      k = (k + 1) % e->nvals;
    v.i = e->vals[k].value;
    return v;
  }
  switch (base) {
  case FBG_BOOL:
    v.i = avoid_default ? !f->def_int : (int64_t)(h & 1);
    return v;
  case FBG_BYTE:
    v.i = (int64_t)(h % 120) + 1;
    break;
  case FBG_UBYTE:
  case FBG_UTYPE:
    v.i = (int64_t)(h % 250) + 1;
    neg = false;
    break;
  case FBG_SHORT:
    v.i = (int64_t)(h % 30000) + 1;
    break;
  case FBG_USHORT:
    v.i = (int64_t)(h % 60000) + 1;
    neg = false;
    break;
  case FBG_INT:
    v.i = (int64_t)(h % 2000000000) + 1;
    break;
  case FBG_UINT:
    v.i = (int64_t)(0x80000000u + h % 1000000000u);
    neg = false;
    break;
  case FBG_LONG:
    v.i = (int64_t)(h % 9000000000000000000ull) + 1;
    break;
  case FBG_ULONG:
    v.i = (int64_t)(h | (1ull << 63));
    neg = false;
    break;
  case FBG_FLOAT:
    v.d = (double)(h % 100000) + 0.5;
    break;
  case FBG_DOUBLE:
    v.d = (double)(h % 1000000000000ull) + 0.25;
    break;
  }
  if (neg) {
    v.i = -v.i;
    v.d = -v.d;
  }
  if (avoid_default) {
    if (is_float(base) && v.d == f->def_real)
      v.d += 1;
    if (!is_float(base) && v.i == f->def_int)
      v.i += 1;
  }
  return v;
}

static struct sval default_of(const struct fbg_field *f) {
  struct sval v = {f->def_int, f->def_real};
  return v;
}

static void c_lit(FILE *o, int base, struct sval v) {
  switch (base) {
  case FBG_BOOL:
    fprintf(o, "%s", v.i ? "true" : "false");
    break;
  case FBG_FLOAT:
    fprintf(o, "(float)%.17g", v.d);
    break;
  case FBG_DOUBLE:
    fprintf(o, "%.17g", v.d);
    break;
  case FBG_LONG:
    if (v.i == INT64_MIN)
      fprintf(o, "INT64_MIN");
    else
      fprintf(o, "INT64_C(%" PRId64 ")", v.i);
    break;
  case FBG_ULONG:
    fprintf(o, "UINT64_C(%" PRIu64 ")", (uint64_t)v.i);
    break;
  case FBG_UINT:
    fprintf(o, "%" PRIu64 "u", (uint64_t)v.i);
    break;
  default:
    fprintf(o, "%" PRId64, v.i);
  }
}

static void py_lit(FILE *o, int base, struct sval v) {
  if (base == FBG_BOOL)
    fprintf(o, "%s", v.i ? "True" : "False");
  else if (is_float(base))
    fprintf(o, "%.17g", v.d);
  else if (base == FBG_ULONG)
    fprintf(o, "%" PRIu64, (uint64_t)v.i);
  else
    fprintf(o, "%" PRId64, v.i);
}

/* ---- strings ------------------------------------------------------------ */

static void make_string(char *out, size_t n, const char *t, const char *f,
                        uint64_t h) {
  /* UTF-8 (e-acute, check mark), a quote and a backslash, JSON-ish. */
  snprintf(out, n, "%s.%s#%" PRIx64 " \xc3\xa9\xe2\x9c\x93 {\"k\": \"v\\\\\"}",
           fbg_short(t), f, h & 0xffffff);
}

static void c_str(FILE *o, const char *s) {
  fputc('"', o);
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p == '"' || *p == '\\')
      fprintf(o, "\\%c", *p);
    else if (*p < 32 || *p > 126)
      fprintf(o, "\\%03o", *p);
    else
      fputc(*p, o);
  }
  fputc('"', o);
}

static void py_str(FILE *o, const char *s) {
  fputs("b'", o);
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p == '\'' || *p == '\\')
      fprintf(o, "\\%c", *p);
    else if (*p < 32 || *p > 126)
      fprintf(o, "\\x%02x", *p);
    else
      fputc(*p, o);
  }
  fputc('\'', o);
}

/* ---- names -------------------------------------------------------------- */

/* flatc's Python names: snake_case -> CamelCase. */
static const char *camel(const char *n) {
  static char bufs[4][128];
  static int at;
  char *b = bufs[at++ & 3];
  size_t k = 0;
  bool up = true;
  for (const char *p = n; *p && k + 1 < sizeof bufs[0]; p++) {
    if (*p == '_') {
      up = true;
      continue;
    }
    b[k++] = up && *p >= 'a' && *p <= 'z' ? (char)(*p - 32) : *p;
    up = false;
  }
  b[k] = 0;
  return b;
}

static void vname(const struct variant *v, char *out, size_t n) {
  switch (v->kind) {
  case V_FULL:
    if (v->ufield >= 0)
      snprintf(out, n, "u%d_%d", v->ufield, v->umember);
    else
      snprintf(out, n, "f%d", v->depth);
    break;
  case V_ABSENT:
    snprintf(out, n, "a");
    break;
  case V_DEFAULTS:
    snprintf(out, n, "d");
    break;
  }
}

/* Python module alias of a table or struct */
static const char *pymod(const char *full) {
  static char bufs[4][256];
  static int at;
  char *b = bufs[at++ & 3];
  snprintf(b, sizeof bufs[0], "M_%s", fbg_cname(full));
  return b;
}

/* ---- what each variant puts in a field ---------------------------------- */

enum fill {
  FILL_NONE,    /* field left out */
  FILL_VALUE,   /* the variant's value */
};

static bool is_table(const struct fbg_schema *s, const struct fbg_field *f) {
  return f->type.base == FBG_OBJ && !s->objects[f->type.index].is_struct;
}

static bool is_table_vec(const struct fbg_schema *s,
                         const struct fbg_field *f) {
  return f->type.base == FBG_VECTOR && f->type.element == FBG_OBJ &&
         !s->objects[f->type.index].is_struct;
}

/* Child variant used for table fields, vector-of-table elements, unions. */
static bool child_variant(const struct variant *v, bool required,
                          struct variant *out) {
  memset(out, 0, sizeof *out);
  out->ufield = -1;
  if (v->kind == V_FULL && v->depth < MAXD) {
    out->kind = V_FULL;
    out->depth = v->depth + 1;
    return true;
  }
  if (v->kind == V_FULL && !required)
    return false;
  out->kind = V_ABSENT;
  return true;
}

static int union_member_pick(const struct gen *g, const struct fbg_object *o,
                             const struct fbg_field *f,
                             const struct variant *v) {
  if (v->ufield == (int)f->id)
    return v->umember;
  const struct fbg_enum *u = fbg_union_of(g->s, f);
  size_t nm = 0;
  for (size_t k = 0; k < u->nvals; k++)
    nm += u->vals[k].object >= 0;
  if (!nm)
    return -1;
  size_t want = fnv(o->name, f->name, v->depth, 0) % nm;
  for (size_t k = 0; k < u->nvals; k++)
    if (u->vals[k].object >= 0 && want-- == 0)
      return (int)k;
  return -1;
}

static enum fill field_fill(const struct gen *g, const struct fbg_object *o,
                            const struct fbg_field *f,
                            const struct variant *v) {
  (void)o;
  if (f->deprecated || f->type.base == FBG_UTYPE)
    return FILL_NONE;
  if (v->kind == V_ABSENT)
    return f->required ? FILL_VALUE : FILL_NONE;
  if (v->kind == V_DEFAULTS)
    return f->type.base == FBG_UNION ? FILL_NONE : FILL_VALUE;
  /* full */
  struct variant cv;
  if (is_table(g->s, f) || is_table_vec(g->s, f) || f->type.base == FBG_UNION)
    if (!child_variant(v, f->required, &cv))
      return FILL_NONE;
  if (f->type.base == FBG_UNION && union_member_pick(g, o, f, v) < 0)
    return FILL_NONE;
  return FILL_VALUE;
}

/* Elements in a vector for this variant. */
static int vec_count(const struct gen *g, const struct fbg_field *f,
                     const struct variant *v) {
  if (v->kind != V_FULL)
    return 0;
  if (f->nested)
    return -1; /* bytes of a nested buffer */
  int el = f->type.element;
  if (el == FBG_STRING || el == FBG_OBJ)
    return 2;
  return 3;
}

/* value a vector element / struct member / scalar field gets */
static uint64_t seed(const struct fbg_object *o, const struct fbg_field *f,
                     const struct variant *v, int e) {
  return fnv(o->name, f->name, v->kind == V_FULL ? v->depth : 9, e);
}

/* ---- C ------------------------------------------------------------------ */

static void c_fn_name(char *out, size_t n, char pre, const char *full,
                      const struct variant *v) {
  char vn[64];
  vname(v, vn, sizeof vn);
  snprintf(out, n, "%c_%s_%s", pre, fbg_cname(full), vn);
}

static void c_struct_init(const struct gen *g, const struct fbg_object *so,
                          const struct fbg_object *o, const struct fbg_field *f,
                          const struct variant *v, int e, bool zero) {
  FILE *c = g->c;
  fprintf(c, "{");
  for (size_t k = 0; k < so->nfields; k++) {
    const struct fbg_field *m = &so->fields[k];
    if (!fbg_is_scalar(m->type.base)) {
      fprintf(stderr, "fbgen: interop: nested structs unsupported (%s)\n",
              so->name);
      exit(1);
    }
    struct sval sv = {0, 0};
    if (!zero)
      sv = pick_scalar(g->s, m, fnv(o->name, f->name, e * 31 + (int)k,
                                    v->kind == V_FULL ? v->depth : 9),
                       false);
    fprintf(c, "%s.%s = ", k ? ", " : "", m->name);
    c_lit(c, m->type.base, sv);
  }
  fprintf(c, "}");
}

static void py_struct_args(const struct gen *g, const struct fbg_object *so,
                           const struct fbg_object *o,
                           const struct fbg_field *f, const struct variant *v,
                           int e, bool zero) {
  for (size_t k = 0; k < so->nfields; k++) {
    const struct fbg_field *m = &so->fields[k];
    struct sval sv = {0, 0};
    if (!zero)
      sv = pick_scalar(g->s, m, fnv(o->name, f->name, e * 31 + (int)k,
                                    v->kind == V_FULL ? v->depth : 9),
                       false);
    fprintf(g->py, ", ");
    py_lit(g->py, m->type.base, sv);
  }
}

static void py_struct_check(const struct gen *g, const struct fbg_object *so,
                            const struct fbg_object *o,
                            const struct fbg_field *f, const struct variant *v,
                            int e, bool zero, const char *expr,
                            const char *ind) {
  for (size_t k = 0; k < so->nfields; k++) {
    const struct fbg_field *m = &so->fields[k];
    struct sval sv = {0, 0};
    if (!zero)
      sv = pick_scalar(g->s, m, fnv(o->name, f->name, e * 31 + (int)k,
                                    v->kind == V_FULL ? v->depth : 9),
                       false);
    fprintf(g->py, "%sck(F, p, '%s[%d].%s', %s.%s() == ", ind, f->name, e,
            m->name, expr, camel(m->name));
    py_lit(g->py, m->type.base, sv);
    fprintf(g->py, ")\n");
  }
}

static void c_struct_check(const struct gen *g, const struct fbg_object *so,
                           const struct fbg_object *o,
                           const struct fbg_field *f, const struct variant *v,
                           int e, bool zero, const char *expr) {
  for (size_t k = 0; k < so->nfields; k++) {
    const struct fbg_field *m = &so->fields[k];
    struct sval sv = {0, 0};
    if (!zero)
      sv = pick_scalar(g->s, m, fnv(o->name, f->name, e * 31 + (int)k,
                                    v->kind == V_FULL ? v->depth : 9),
                       false);
    fprintf(g->c, "  CHK(%s.%s == ", expr, m->name);
    c_lit(g->c, m->type.base, sv);
    fprintf(g->c, ", \"%s[%d].%s\");\n", f->name, e, m->name);
  }
}

/* The builder function of object o in variant v, in C and Python. */
static void gen_build(const struct gen *g, const struct fbg_object *o,
                      const struct variant *v) {
  const struct fbg_schema *s = g->s;
  FILE *c = g->c, *py = g->py;
  char fn[300];
  c_fn_name(fn, sizeof fn, 'b', o->name, v);
  const char *T = fbg_cname(o->name);
  char Tn[256];
  snprintf(Tn, sizeof Tn, "%s", T);
  fprintf(c, "static tr_fb_ref %s(struct tr_fb_builder *b) {\n", fn);
  fprintf(py, "def %s(b):\n", fn);
  /* children first */
  for (size_t i = 0; i < o->nfields; i++) {
    const struct fbg_field *f = &o->fields[i];
    if (field_fill(g, o, f, v) != FILL_VALUE)
      continue;
    int base = f->type.base;
    unsigned id = f->id;
    if (base == FBG_STRING) {
      char str[256] = "";
      if (v->kind != V_DEFAULTS)
        make_string(str, sizeof str, o->name, f->name, seed(o, f, v, 0));
      fprintf(c, "  tr_fb_ref r%u = tr_fb_create_string(b, ", id);
      c_str(c, str);
      fprintf(c, ", %zu);\n", strlen(str));
      fprintf(py, "    r%u = b.CreateString(", id);
      py_str(py, str);
      fprintf(py, ")\n");
    } else if (is_table(s, f) || base == FBG_UNION) {
      const struct fbg_object *m;
      struct variant cv;
      child_variant(v, f->required, &cv);
      if (base == FBG_UNION) {
        const struct fbg_enum *u = fbg_union_of(s, f);
        m = &s->objects[u->vals[union_member_pick(g, o, f, v)].object];
      } else {
        m = &s->objects[f->type.index];
      }
      char cf[300];
      c_fn_name(cf, sizeof cf, 'b', m->name, &cv);
      fprintf(c, "  tr_fb_ref r%u = %s(b);\n", id, cf);
      fprintf(py, "    r%u = %s(b)\n", id, cf);
    } else if (base == FBG_VECTOR) {
      int n = vec_count(g, f, v);
      int el = f->type.element;
      if (f->nested) {
        int no = fbg_nested_object(s, o, f->nested);
        const struct fbg_object *m = &s->objects[no];
        struct variant cv = {.kind = V_ABSENT, .ufield = -1};
        if (v->kind == V_FULL)
          cv = (struct variant){.kind = V_FULL, .depth = MAXD, .ufield = -1};
        char cf[300];
        c_fn_name(cf, sizeof cf, 'b', m->name, &cv);
        if (v->kind == V_DEFAULTS) {
          fprintf(c, "  tr_fb_ref r%u = tr_fb_create_bytes(b, \"\", 0);\n", id);
          fprintf(py, "    r%u = b.CreateByteVector(b'')\n", id);
        } else {
          fprintf(c,
                  "  tr_fb_ref r%u;\n  {\n"
                  "    struct tr_fb_builder nb;\n"
                  "    tr_fb_builder_init(&nb);\n"
                  "    nb.force_defaults = b->force_defaults;\n"
                  "    tr_fb_finish(&nb, %s(&nb), NULL);\n"
                  "    size_t nl;\n"
                  "    const uint8_t *nd = tr_fb_builder_data(&nb, &nl);\n"
                  "    r%u = tr_fb_create_bytes(b, nd, nl);\n"
                  "    tr_fb_builder_free(&nb);\n  }\n",
                  id, cf, id);
          fprintf(py,
                  "    nb = flatbuffers.Builder(256)\n"
                  "    nb.ForceDefaults(b.forceDefaults)\n"
                  "    nb.Finish(%s(nb))\n"
                  "    r%u = b.CreateByteVector(bytes(nb.Output()))\n",
                  cf, id);
        }
        continue;
      }
      if (fbg_is_scalar(el)) {
        const struct fbg_scalar *sc = fbg_scalar_info(el);
        fprintf(c, "  static const %s v%u[%d] = {", sc->ctype, id, n ? n : 1);
        fprintf(py, "    %s.Start%sVector(b, %d)\n", pymod(o->name),
                camel(f->name), n);
        for (int e = 0; e < n; e++) {
          struct sval sv = pick_scalar(s, f, seed(o, f, v, e), false);
          fprintf(c, "%s", e ? ", " : "");
          c_lit(c, el, sv);
        }
        for (int e = n - 1; e >= 0; e--) {
          struct sval sv = pick_scalar(s, f, seed(o, f, v, e), false);
          fprintf(py, "    b.Prepend%s(", sc->pyprep);
          py_lit(py, el, sv);
          fprintf(py, ")\n");
        }
        if (!n)
          fprintf(c, "0");
        fprintf(c, "};\n  tr_fb_ref r%u = %s_create_%s(b, v%u, %d);\n", id, Tn,
                f->name, id, n);
        fprintf(py, "    r%u = b.EndVector()\n", id);
      } else if (el == FBG_STRING) {
        fprintf(c, "  tr_fb_ref e%u[%d] = {0};\n", id, n ? n : 1);
        for (int e = 0; e < n; e++) {
          char str[256];
          make_string(str, sizeof str, o->name, f->name, seed(o, f, v, e));
          fprintf(c, "  e%u[%d] = tr_fb_create_string(b, ", id, e);
          c_str(c, str);
          fprintf(c, ", %zu);\n", strlen(str));
          fprintf(py, "    e%u_%d = b.CreateString(", id, e);
          py_str(py, str);
          fprintf(py, ")\n");
        }
        fprintf(c, "  tr_fb_ref r%u = %s_create_%s(b, e%u, %d);\n", id, Tn,
                f->name, id, n);
        fprintf(py, "    %s.Start%sVector(b, %d)\n", pymod(o->name),
                camel(f->name), n);
        for (int e = n - 1; e >= 0; e--)
          fprintf(py, "    b.PrependUOffsetTRelative(e%u_%d)\n", id, e);
        fprintf(py, "    r%u = b.EndVector()\n", id);
      } else if (el == FBG_OBJ && s->objects[f->type.index].is_struct) {
        const struct fbg_object *so = &s->objects[f->type.index];
        fprintf(c, "  static const struct %s v%u[%d] = {",
                fbg_cname(so->name), id, n ? n : 1);
        for (int e = 0; e < n; e++) {
          fprintf(c, "%s", e ? ", " : "");
          c_struct_init(g, so, o, f, v, e, false);
        }
        if (!n)
          fprintf(c, "{0}");
        fprintf(c, "};\n  tr_fb_ref r%u = %s_create_%s(b, v%u, %d);\n", id, Tn,
                f->name, id, n);
        fprintf(py, "    %s.Start%sVector(b, %d)\n", pymod(o->name),
                camel(f->name), n);
        for (int e = n - 1; e >= 0; e--) {
          fprintf(py, "    %s.Create%s(b", pymod(so->name),
                  fbg_short(so->name));
          py_struct_args(g, so, o, f, v, e, false);
          fprintf(py, ")\n");
        }
        fprintf(py, "    r%u = b.EndVector()\n", id);
      } else {
        const struct fbg_object *m = &s->objects[f->type.index];
        struct variant cv;
        child_variant(v, f->required, &cv);
        char cf[300];
        c_fn_name(cf, sizeof cf, 'b', m->name, &cv);
        fprintf(c, "  tr_fb_ref e%u[%d] = {0};\n", id, n ? n : 1);
        for (int e = 0; e < n; e++) {
          fprintf(c, "  e%u[%d] = %s(b);\n", id, e, cf);
          fprintf(py, "    e%u_%d = %s(b)\n", id, e, cf);
        }
        fprintf(c, "  tr_fb_ref r%u = %s_create_%s(b, e%u, %d);\n", id, Tn,
                f->name, id, n);
        fprintf(py, "    %s.Start%sVector(b, %d)\n", pymod(o->name),
                camel(f->name), n);
        for (int e = n - 1; e >= 0; e--)
          fprintf(py, "    b.PrependUOffsetTRelative(e%u_%d)\n", id, e);
        fprintf(py, "    r%u = b.EndVector()\n", id);
      }
    }
  }
  /* the table */
  fprintf(c, "  %s_start(b);\n", Tn);
  fprintf(py, "    %s.Start(b)\n", pymod(o->name));
  for (size_t i = 0; i < o->nfields; i++) {
    const struct fbg_field *f = &o->fields[i];
    if (field_fill(g, o, f, v) != FILL_VALUE)
      continue;
    int base = f->type.base;
    unsigned id = f->id;
    if (fbg_is_scalar(base)) {
      struct sval sv = v->kind == V_DEFAULTS
                           ? default_of(f)
                           : pick_scalar(s, f, seed(o, f, v, 0), true);
      fprintf(c, "  %s_add_%s(b, ", Tn, f->name);
      c_lit(c, base, sv);
      fprintf(c, ");\n");
      fprintf(py, "    %s.Add%s(b, ", pymod(o->name), camel(f->name));
      py_lit(py, base, sv);
      fprintf(py, ")\n");
    } else if (base == FBG_OBJ && s->objects[f->type.index].is_struct) {
      const struct fbg_object *so = &s->objects[f->type.index];
      fprintf(c, "  {\n    static const struct %s sv = ", fbg_cname(so->name));
      c_struct_init(g, so, o, f, v, 0, v->kind == V_DEFAULTS);
      fprintf(c, ";\n    %s_add_%s(b, &sv);\n  }\n", Tn, f->name);
      fprintf(py, "    %s.Add%s(b, %s.Create%s(b", pymod(o->name),
              camel(f->name), pymod(so->name), fbg_short(so->name));
      py_struct_args(g, so, o, f, v, 0, v->kind == V_DEFAULTS);
      fprintf(py, "))\n");
    } else if (base == FBG_UNION) {
      const struct fbg_enum *u = fbg_union_of(s, f);
      const struct fbg_enumval *ev = &u->vals[union_member_pick(g, o, f, v)];
      fprintf(c, "  %s_add_%s_%s(b, r%u);\n", Tn, f->name, ev->name, id);
      fprintf(py, "    %s.Add%sType(b, %" PRId64 ")\n", pymod(o->name),
              camel(f->name), ev->value);
      fprintf(py, "    %s.Add%s(b, r%u)\n", pymod(o->name), camel(f->name),
              id);
    } else {
      fprintf(c, "  %s_add_%s(b, r%u);\n", Tn, f->name, id);
      fprintf(py, "    %s.Add%s(b, r%u)\n", pymod(o->name), camel(f->name),
              id);
    }
  }
  fprintf(c, "  return %s_end(b);\n}\n\n", Tn);
  fprintf(py, "    return %s.End(b)\n\n\n", pymod(o->name));
}

/* The check function of object o in variant v, in C and Python. */
/* Writes checks written with placeholders: @R@ becomes the readers' prefix
 * (N_T_ or N_T_view_), @X@ their argument (t or &w), @C@ the check macro
 * (CHK, or CHKV whose mismatches say "view"). */
static void emit_checks(FILE *out, const char *body, const char *r,
                        const char *x, const char *chk) {
  for (const char *p = body; *p; p++) {
    if (p[0] == '@' && p[1] && p[2] == '@') {
      const char *sub = p[1] == 'R' ? r : p[1] == 'X' ? x : p[1] == 'C' ? chk
                                                                        : NULL;
      if (sub) {
        fputs(sub, out);
        p += 2;
        continue;
      }
    }
    fputc(*p, out);
  }
}

static void gen_check(const struct gen *g, const struct fbg_object *o,
                      const struct variant *v) {
  const struct fbg_schema *s = g->s;
  FILE *py = g->py;
  char fn[300];
  c_fn_name(fn, sizeof fn, 'c', o->name, v);
  char Tn[256];
  snprintf(Tn, sizeof Tn, "%s", fbg_cname(o->name));
  const char *P = pymod(o->name);
  char Pn[256];
  snprintf(Pn, sizeof Pn, "%s", P);
  fprintf(g->c,
          "static void %s(const struct %s *t) {\n"
          "  static const char T[] = \"%s\";\n"
          "  if (!t) {\n    mismatch(T, \"(table missing)\");\n    return;\n  }\n"
          "  struct %s_view w = %s_view(t);\n"
          "  (void)w;\n",
          fn, Tn, o->name, Tn, Tn);
  /* The C checks are written once with placeholders (see emit_checks) and
   * emitted twice: through the plain readers, then through the view. */
  char *cbody = NULL;
  size_t cblen = 0;
  FILE *c = open_memstream(&cbody, &cblen);
  if (!c) {
    perror("fbgen: open_memstream");
    exit(1);
  }
  struct gen gm = *g;
  gm.c = c;
  fprintf(py,
          "def %s(t, F):\n"
          "    p = '%s'\n"
          "    if t is None:\n        F.append(p + ': table missing')\n"
          "        return\n",
          fn, o->name);
  for (size_t i = 0; i < o->nfields; i++) {
    const struct fbg_field *f = &o->fields[i];
    if (f->deprecated)
      continue;
    int base = f->type.base;
    unsigned id = f->id;
    const char *cf = camel(f->name);
    char CF[128];
    snprintf(CF, sizeof CF, "%s", cf);
    bool set = field_fill(g, o, f, v) == FILL_VALUE;
    if (base == FBG_UTYPE) {
      /* checked with its union */
      continue;
    }
    /* presence, through the Google runtime's vtable lookup */
    fprintf(c, "  @C@(@R@has_%s(@X@) == %s, \"%s present\");\n", f->name,
            set ? "true" : "false", f->name);
    fprintf(py, "    ck(F, p, '%s present', (t._tab.Offset(%u) != 0) == %s)\n",
            f->name, 4 + 2 * id, set ? "True" : "False");
    if (fbg_is_scalar(base)) {
      struct sval sv = set && v->kind == V_FULL
                           ? pick_scalar(s, f, seed(o, f, v, 0), true)
                           : default_of(f);
      fprintf(c, "  @C@(@R@%s(@X@) == ", f->name);
      c_lit(c, base, sv);
      fprintf(c, ", \"%s\");\n", f->name);
      fprintf(py, "    ck(F, p, '%s', t.%s() == ", f->name, CF);
      py_lit(py, base, sv);
      fprintf(py, ")\n");
    } else if (base == FBG_STRING) {
      if (!set) {
        fprintf(c, "  @C@(@R@%s(@X@).ptr == NULL, \"%s\");\n", f->name,
                f->name);
        fprintf(py, "    ck(F, p, '%s', t.%s() is None)\n", f->name, CF);
        continue;
      }
      char str[256] = "";
      if (v->kind != V_DEFAULTS)
        make_string(str, sizeof str, o->name, f->name, seed(o, f, v, 0));
      fprintf(c, "  @C@(str_eq(@R@%s(@X@), ", f->name);
      c_str(c, str);
      fprintf(c, ", %zu), \"%s\");\n", strlen(str), f->name);
      fprintf(py, "    ck(F, p, '%s', t.%s() == ", f->name, CF);
      py_str(py, str);
      fprintf(py, ")\n");
    } else if (base == FBG_OBJ && s->objects[f->type.index].is_struct) {
      const struct fbg_object *so = &s->objects[f->type.index];
      bool zero = !set || v->kind == V_DEFAULTS;
      fprintf(c, "  {\n  struct %s sv = @R@%s(@X@);\n", fbg_cname(so->name),
              f->name);
      c_struct_check(&gm, so, o, f, v, 0, zero, "sv");
      fprintf(c, "  }\n");
      if (set) {
        fprintf(py, "    sv = t.%s()\n", CF);
        fprintf(py, "    ck(F, p, '%s', sv is not None)\n", f->name);
        fprintf(py, "    if sv is not None:\n");
        py_struct_check(g, so, o, f, v, 0, zero, "sv", "        ");
      } else {
        fprintf(py, "    ck(F, p, '%s', t.%s() is None)\n", f->name, CF);
      }
    } else if (is_table(s, f)) {
      const struct fbg_object *m = &s->objects[f->type.index];
      if (!set) {
        fprintf(c, "  @C@(@R@%s(@X@) == NULL, \"%s\");\n", f->name, f->name);
        fprintf(py, "    ck(F, p, '%s', t.%s() is None)\n", f->name, CF);
        continue;
      }
      struct variant cv;
      child_variant(v, f->required, &cv);
      char cfn[300];
      c_fn_name(cfn, sizeof cfn, 'c', m->name, &cv);
      fprintf(c, "  %s(@R@%s(@X@));\n", cfn, f->name);
      fprintf(py, "    %s(t.%s(), F)\n", cfn, CF);
    } else if (base == FBG_UNION) {
      const struct fbg_enum *u = fbg_union_of(s, f);
      if (!set) {
        fprintf(c, "  @C@(@R@%s_type(@X@) == 0, \"%s_type\");\n", f->name,
                f->name);
        fprintf(c, "  @C@(@R@%s(@X@) == NULL, \"%s\");\n", f->name, f->name);
        for (size_t k = 0; k < u->nvals; k++)
          if (u->vals[k].object >= 0)
            fprintf(c, "  @C@(@R@%s_as_%s(@X@) == NULL, \"%s\");\n", f->name,
                    u->vals[k].name, f->name);
        fprintf(py, "    ck(F, p, '%s_type', t.%sType() == 0)\n", f->name, CF);
        fprintf(py, "    ck(F, p, '%s', t.%s() is None)\n", f->name, CF);
        continue;
      }
      const struct fbg_enumval *ev = &u->vals[union_member_pick(g, o, f, v)];
      const struct fbg_object *m = &s->objects[ev->object];
      struct variant cv;
      child_variant(v, f->required, &cv);
      char cfn[300];
      c_fn_name(cfn, sizeof cfn, 'c', m->name, &cv);
      fprintf(c, "  @C@(@R@%s_type(@X@) == %" PRId64 ", \"%s_type\");\n",
              f->name, ev->value, f->name);
      fprintf(c, "  %s(@R@%s_as_%s(@X@));\n", cfn, f->name, ev->name);
      /* the other members read as NULL */
      for (size_t k = 0; k < u->nvals; k++)
        if (u->vals[k].object >= 0 && &u->vals[k] != ev)
          fprintf(c, "  @C@(@R@%s_as_%s(@X@) == NULL, \"%s as %s\");\n",
                  f->name, u->vals[k].name, f->name, u->vals[k].name);
      fprintf(py,
              "    ck(F, p, '%s_type', t.%sType() == %" PRId64 ")\n"
              "    u = t.%s()\n"
              "    if u is None:\n"
              "        F.append(p + ': %s missing')\n"
              "    else:\n"
              "        m = %s.%s()\n"
              "        m.Init(u.Bytes, u.Pos)\n"
              "        %s(m, F)\n",
              f->name, CF, ev->value, CF, f->name, pymod(m->name),
              fbg_short(m->name), cfn);
    } else if (base == FBG_VECTOR) {
      int el = f->type.element;
      int n = set ? vec_count(g, f, v) : 0;
      fprintf(py, "    ck(F, p, '%s none', t.%sIsNone() == %s)\n", f->name, CF,
              set ? "False" : "True");
      if (f->nested) {
        if (!set || v->kind == V_DEFAULTS) {
          fprintf(c, "  @C@(@R@%s(@X@).len == 0, \"%s len\");\n", f->name,
                  f->name);
          fprintf(py, "    ck(F, p, '%s len', t.%sLength() == 0)\n", f->name,
                  CF);
          continue;
        }
        int no = fbg_nested_object(s, o, f->nested);
        const struct fbg_object *m = &s->objects[no];
        struct variant cv = {.kind = V_ABSENT, .ufield = -1};
        if (v->kind == V_FULL)
          cv = (struct variant){.kind = V_FULL, .depth = MAXD, .ufield = -1};
        char cfn[300];
        c_fn_name(cfn, sizeof cfn, 'c', m->name, &cv);
        fprintf(c,
                "  {\n    struct tr_fb_vec nv = @R@%s(@X@);\n"
                "    @C@(nv.len > 0, \"%s len\");\n"
                "    if (nv.len)\n"
                "      %s((const struct %s *)tr_fb_root(nv.data));\n  }\n",
                f->name, f->name, cfn, fbg_cname(m->name));
        fprintf(py,
                "    nv = bytes(bytearray(t.%s(j) for j in range(t.%sLength())))\n"
                "    ck(F, p, '%s len', len(nv) > 0)\n"
                "    if nv:\n"
                "        %s(%s.%s.GetRootAs(nv, 0), F)\n",
                CF, CF, f->name, cfn, pymod(m->name), fbg_short(m->name));
        continue;
      }
      fprintf(c, "  @C@(@R@%s_len(@X@) == %d, \"%s len\");\n", f->name, n,
              f->name);
      fprintf(py, "    ck(F, p, '%s len', t.%sLength() == %d)\n", f->name, CF,
              n);
      if (!n)
        continue;
      fprintf(py, "    if t.%sLength() == %d:\n", CF, n);
      fprintf(c, "  if (@R@%s_len(@X@) == %d) {\n", f->name, n);
      for (int e = 0; e < n; e++) {
        if (fbg_is_scalar(el)) {
          struct sval sv = pick_scalar(s, f, seed(o, f, v, e), false);
          fprintf(c, "  @C@(@R@%s_at(@X@, %d) == ", f->name, e);
          c_lit(c, el, sv);
          fprintf(c, ", \"%s[%d]\");\n", f->name, e);
          fprintf(py, "        ck(F, p, '%s[%d]', t.%s(%d) == ", f->name, e,
                  CF, e);
          py_lit(py, el, sv);
          fprintf(py, ")\n");
        } else if (el == FBG_STRING) {
          char str[256];
          make_string(str, sizeof str, o->name, f->name, seed(o, f, v, e));
          fprintf(c, "  @C@(str_eq(@R@%s_at(@X@, %d), ", f->name, e);
          c_str(c, str);
          fprintf(c, ", %zu), \"%s[%d]\");\n", strlen(str), f->name, e);
          fprintf(py, "        ck(F, p, '%s[%d]', t.%s(%d) == ", f->name, e,
                  CF, e);
          py_str(py, str);
          fprintf(py, ")\n");
        } else if (s->objects[f->type.index].is_struct) {
          const struct fbg_object *so = &s->objects[f->type.index];
          char ex[300];
          snprintf(ex, sizeof ex, "@R@%s_at(@X@, %d)", f->name, e);
          c_struct_check(&gm, so, o, f, v, e, false, ex);
          snprintf(ex, sizeof ex, "t.%s(%d)", CF, e);
          py_struct_check(g, so, o, f, v, e, false, ex, "        ");
        } else {
          const struct fbg_object *m = &s->objects[f->type.index];
          struct variant cv;
          child_variant(v, f->required, &cv);
          char cfn[300];
          c_fn_name(cfn, sizeof cfn, 'c', m->name, &cv);
          fprintf(c, "  %s(@R@%s_at(@X@, %d));\n", cfn, f->name, e);
          fprintf(py, "        %s(t.%s(%d), F)\n", cfn, CF, e);
        }
      }
      fprintf(c, "  }\n");
    }
  }
  if (ferror(c) || fclose(c)) {
    fprintf(stderr, "fbgen: interop: out of memory\n");
    exit(1);
  }
  char rp[300], rv[300];
  snprintf(rp, sizeof rp, "%s_", Tn);
  snprintf(rv, sizeof rv, "%s_view_", Tn);
  emit_checks(g->c, cbody, rp, "t", "CHK");
  emit_checks(g->c, cbody, rv, "&w", "CHKV");
  free(cbody);
  fprintf(g->c, "}\n\n");
  fprintf(py, "\n\n");
}

/* ---- driver ------------------------------------------------------------- */

static void for_variants(const struct gen *g, const struct fbg_object *o,
                         void (*fn)(const struct gen *,
                                    const struct fbg_object *,
                                    const struct variant *)) {
  struct variant v = {.ufield = -1};
  for (int d = 0; d <= MAXD; d++) {
    v.kind = V_FULL;
    v.depth = d;
    fn(g, o, &v);
  }
  v.depth = 0;
  v.kind = V_ABSENT;
  fn(g, o, &v);
  v.kind = V_DEFAULTS;
  fn(g, o, &v);
}

static void for_sweeps(const struct gen *g, const struct fbg_object *o,
                       void (*fn)(const struct gen *, const struct fbg_object *,
                                  const struct variant *)) {
  for (size_t i = 0; i < o->nfields; i++) {
    const struct fbg_field *f = &o->fields[i];
    if (f->type.base != FBG_UNION || f->deprecated)
      continue;
    const struct fbg_enum *u = fbg_union_of(g->s, f);
    for (size_t k = 0; k < u->nvals; k++) {
      if (u->vals[k].object < 0)
        continue;
      struct variant v = {.kind = V_FULL, .depth = 0, .ufield = (int)f->id,
                          .umember = (int)k};
      fn(g, o, &v);
    }
  }
}

static void gen_proto(const struct gen *g, const struct fbg_object *o,
                      const struct variant *v) {
  char b[300], c[300];
  c_fn_name(b, sizeof b, 'b', o->name, v);
  c_fn_name(c, sizeof c, 'c', o->name, v);
  fprintf(g->c, "static tr_fb_ref %s(struct tr_fb_builder *b);\n", b);
  fprintf(g->c, "static void %s(const struct %s *t);\n", c,
          fbg_cname(o->name));
}

static void gen_both(const struct gen *g, const struct fbg_object *o,
                     const struct variant *v) {
  gen_build(g, o, v);
  gen_check(g, o, v);
}

static void emit_case(const struct gen *g, const struct fbg_object *o,
                      const struct variant *v, bool root, bool second) {
  char vn[64], cname[300], bf[300], cf[300];
  vname(v, vn, sizeof vn);
  const char *label = vn;
  char lb[128];
  if (v->kind == V_FULL && v->ufield < 0)
    label = "full";
  else if (v->kind == V_ABSENT)
    label = "absent";
  else if (v->kind == V_DEFAULTS)
    label = "defaults";
  else {
    const struct fbg_field *uf = NULL;
    for (size_t i = 0; i < o->nfields; i++)
      if ((int)o->fields[i].id == v->ufield)
        uf = &o->fields[i];
    const struct fbg_enum *u = fbg_union_of(g->s, uf);
    snprintf(lb, sizeof lb, "%s.%s", uf->name, u->vals[v->umember].name);
    label = lb;
  }
  snprintf(cname, sizeof cname, "%s.%s.%s", g->name, fbg_short(o->name), label);
  c_fn_name(bf, sizeof bf, 'b', o->name, v);
  c_fn_name(cf, sizeof cf, 'c', o->name, v);
  const char *ident = root ? g->s->file_ident : NULL;
  if (!second) {
    /* verify-and-check wrapper */
    fprintf(g->c,
            "static int k_%s_%s(const void *buf, size_t len, bool sized) {\n"
            "  struct tr_fb_error err;\n"
            "  const struct %s *t = sized ? %s_verify_as_root_sized(buf, len, "
            "&err) : %s_verify_as_root_opts(buf, len, ",
            fbg_cname(o->name), vn, fbg_cname(o->name), fbg_cname(o->name),
            fbg_cname(o->name));
    if (ident)
      fprintf(g->c, "\"%.4s\"", ident);
    else
      fprintf(g->c, "NULL");
    fprintf(g->c,
            ", NULL, &err);\n"
            "  if (!t) {\n"
            "    char m[256];\n"
            "    mismatch(\"verify\", tr_fb_error_format(&err, m, sizeof m));\n"
            "    return -1;\n  }\n"
            "  %s(t);\n  return 0;\n}\n\n",
            cf);
    fprintf(g->py, "def k_%s_%s(buf, F, off=0):\n", fbg_cname(o->name), vn);
    fprintf(g->py,
            "    if off and int.from_bytes(buf[0:4], 'little') != len(buf) - 4:\n"
            "        F.append('size prefix')\n");
    if (ident)
      fprintf(g->py,
              "    if bytes(buf[off + 4:off + 8]) != b'%.4s':\n"
              "        F.append('identifier')\n",
              ident);
    fprintf(g->py, "    %s(%s.%s.GetRootAs(buf, off), F)\n\n\n", cf,
            pymod(o->name), fbg_short(o->name));
    return;
  }
  char q[16] = "NULL";
  if (ident)
    snprintf(q, sizeof q, "\"%.4s\"", ident);
  fprintf(g->c, "  {\"%s\", \"%s\", %s, %s, k_%s_%s, %s},\n", cname,
          fbg_short(o->name), q, bf, fbg_cname(o->name), vn,
          v->kind == V_DEFAULTS ? "true" : "false");
  char pq[16] = "None";
  if (ident)
    snprintf(pq, sizeof pq, "b'%.4s'", ident);
  fprintf(g->py, "    ('%s', '%s', %s, %s, k_%s_%s, %s),\n", cname,
          fbg_short(o->name), pq, bf, fbg_cname(o->name), vn,
          v->kind == V_DEFAULTS ? "True" : "False");
}

static void case_variants(const struct gen *g, const struct fbg_object *o,
                          bool root, bool second) {
  struct variant v = {.kind = V_FULL, .depth = 0, .ufield = -1};
  emit_case(g, o, &v, root, second);
  v.kind = V_ABSENT;
  emit_case(g, o, &v, root, second);
  v.kind = V_DEFAULTS;
  emit_case(g, o, &v, root, second);
  for (size_t i = 0; i < o->nfields; i++) {
    const struct fbg_field *f = &o->fields[i];
    if (f->type.base != FBG_UNION || f->deprecated)
      continue;
    const struct fbg_enum *u = fbg_union_of(g->s, f);
    for (size_t k = 0; k < u->nvals; k++) {
      if (u->vals[k].object < 0)
        continue;
      struct variant sv = {.kind = V_FULL, .depth = 0, .ufield = (int)f->id,
                           .umember = (int)k};
      emit_case(g, o, &sv, root, second);
    }
  }
}

/* ---- walkers: read every field of a verified buffer (fuzz targets) ---- */

/* Every field is read through the plain readers and through the view; the
 * two must agree (same value, same pointer into the buffer) on any buffer
 * the verifier accepted, else the walker aborts (SAME). */
static void gen_walk(const struct gen *g, const struct fbg_object *o,
                     bool proto) {
  const struct fbg_schema *s = g->s;
  FILE *c = g->c;
  char Tn[256];
  snprintf(Tn, sizeof Tn, "%s", fbg_cname(o->name));
  fprintf(c, "static uint64_t w_%s(const struct %s *t)%s\n", Tn, Tn,
          proto ? ";" : " {");
  if (proto)
    return;
  fprintf(c,
          "  uint64_t acc = 0;\n  if (!t)\n    return 0;\n"
          "  struct %s_view w = %s_view(t);\n  (void)w;\n",
          Tn, Tn);
  for (size_t i = 0; i < o->nfields; i++) {
    const struct fbg_field *f = &o->fields[i];
    if (f->deprecated)
      continue;
    int base = f->type.base;
    const char *fn = f->name;
    fprintf(c, "  SAME(%s_has_%s(t), %s_view_has_%s(&w));\n", Tn, fn, Tn, fn);
    if (fbg_is_scalar(base)) {
      fprintf(c,
              "  {\n    %s x = %s_%s(t), y = %s_view_%s(&w);\n"
              "    SAME_BYTES(x, y);\n",
              fbg_scalar_info(base)->ctype, Tn, fn, Tn, fn);
      if (is_float(base))
        fprintf(c, "    acc += x > 0;\n  }\n");
      else
        fprintf(c, "    acc += (uint64_t)x;\n  }\n");
    } else if (base == FBG_STRING) {
      fprintf(c,
              "  {\n    struct tr_fb_str x = %s_%s(t), y = %s_view_%s(&w);\n"
              "    SAME(x.ptr, y.ptr);\n    SAME(x.len, y.len);\n"
              "    if (x.ptr)\n      acc += x.len + (uint8_t)x.ptr[x.len] + "
              "(x.len ? (uint8_t)x.ptr[x.len - 1] : 0);\n  }\n",
              Tn, fn, Tn, fn);
    } else if (base == FBG_OBJ && s->objects[f->type.index].is_struct) {
      fprintf(c,
              "  {\n    struct %s x = %s_%s(t), y = %s_view_%s(&w);\n"
              "    SAME_BYTES(x, y);\n"
              "    const uint8_t *p = (const uint8_t *)&x;\n"
              "    for (size_t k = 0; k < sizeof x; k++)\n      acc += p[k];\n"
              "  }\n",
              fbg_cname(s->objects[f->type.index].name), Tn, fn, Tn, fn);
    } else if (base == FBG_OBJ) {
      fprintf(c,
              "  SAME(%s_%s(t), %s_view_%s(&w));\n"
              "  acc += w_%s(%s_%s(t));\n",
              Tn, fn, Tn, fn, fbg_cname(s->objects[f->type.index].name), Tn,
              fn);
    } else if (base == FBG_UNION) {
      const struct fbg_enum *u = fbg_union_of(s, f);
      fprintf(c, "  SAME(%s_%s(t), %s_view_%s(&w));\n", Tn, fn, Tn, fn);
      for (size_t k = 0; k < u->nvals; k++)
        if (u->vals[k].object >= 0)
          fprintf(c,
                  "  SAME(%s_%s_as_%s(t), %s_view_%s_as_%s(&w));\n"
                  "  acc += w_%s(%s_%s_as_%s(t));\n",
                  Tn, fn, u->vals[k].name, Tn, fn, u->vals[k].name,
                  fbg_cname(s->objects[u->vals[k].object].name), Tn, fn,
                  u->vals[k].name);
    } else if (base == FBG_VECTOR) {
      int el = f->type.element;
      fprintf(c,
              "  {\n    struct tr_fb_vec x = %s_%s(t), y = %s_view_%s(&w);\n"
              "    SAME(x.data, y.data);\n    SAME(x.len, y.len);\n"
              "    SAME(%s_%s_len(t), %s_view_%s_len(&w));\n  }\n",
              Tn, fn, Tn, fn, Tn, fn, Tn, fn);
      fprintf(c, "  for (uint32_t i = 0; i < %s_%s_len(t); i++) {\n", Tn, fn);
      if (fbg_is_scalar(el)) {
        fprintf(c,
                "    %s x = %s_%s_at(t, i), y = %s_view_%s_at(&w, i);\n"
                "    SAME_BYTES(x, y);\n",
                fbg_scalar_info(el)->ctype, Tn, fn, Tn, fn);
        if (is_float(el))
          fprintf(c, "    acc += x > 0;\n");
        else
          fprintf(c, "    acc += (uint64_t)x;\n");
      } else if (el == FBG_STRING) {
        fprintf(c,
                "    struct tr_fb_str x = %s_%s_at(t, i), y = "
                "%s_view_%s_at(&w, i);\n"
                "    SAME(x.ptr, y.ptr);\n"
                "    acc += x.len + (uint8_t)x.ptr[x.len];\n",
                Tn, fn, Tn, fn);
      } else if (s->objects[f->type.index].is_struct) {
        fprintf(c,
                "    struct %s x = %s_%s_at(t, i), y = %s_view_%s_at(&w, i);\n"
                "    SAME_BYTES(x, y);\n"
                "    acc += ((const uint8_t *)&x)[sizeof x - 1];\n",
                fbg_cname(s->objects[f->type.index].name), Tn, fn, Tn, fn);
      } else {
        fprintf(c,
                "    SAME(%s_%s_at(t, i), %s_view_%s_at(&w, i));\n"
                "    acc += w_%s(%s_%s_at(t, i));\n",
                Tn, fn, Tn, fn, fbg_cname(s->objects[f->type.index].name), Tn,
                fn);
      }
      fprintf(c, "  }\n");
      if (f->nested) {
        int no = fbg_nested_object(s, o, f->nested);
        fprintf(c,
                "  {\n    struct tr_fb_vec nv = %s_%s(t);\n"
                "    if (nv.len)\n"
                "      acc += w_%s((const struct %s *)tr_fb_root(nv.data));\n"
                "  }\n",
                Tn, fn, fbg_cname(s->objects[no].name),
                fbg_cname(s->objects[no].name));
      }
    }
  }
  fprintf(c, "  return acc;\n}\n\n");
}

int fbg_gen_interop(const struct fbg_schema *s, const char *name,
                    const char *decl, FILE *c, FILE *py) {
  struct gen g = {s, name, c, py};
  fprintf(c,
          "/* Generated by tools/fbgen --interop-c from schemas/%s.fbs. */\n"
          "#include \"schemas/%s_generated.h\"\n"
          "#include \"tests/unit/schemas/interop.h\"\n\n"
          "#include <stdio.h>\n#include <stdlib.h>\n\n"
          "/* every variant is generated; not every one is used */\n"
          "#pragma GCC diagnostic ignored \"-Wunused-function\"\n"
          "#define mismatch(what, detail) interop_mismatch(what, detail)\n"
          "#define CHK(cond, what)                                        \\\n"
          "  do {                                                         \\\n"
          "    if (!(cond))                                               \\\n"
          "      interop_mismatch(T, what);                               \\\n"
          "  } while (0)\n"
          "#define CHKV(cond, what) CHK(cond, \"view \" what)\n"
          "/* walkers: the plain and the view readers disagree -> abort */\n"
          "#define SAME(a, b)                                              \\\n"
          "  do {                                                         \\\n"
          "    if ((a) != (b))                                            \\\n"
          "      walk_mismatch(__LINE__);                                 \\\n"
          "  } while (0)\n"
          "#define SAME_BYTES(a, b)                                       \\\n"
          "  do {                                                         \\\n"
          "    if (memcmp(&(a), &(b), sizeof(a)))                         \\\n"
          "      walk_mismatch(__LINE__);                                 \\\n"
          "  } while (0)\n"
          "static _Noreturn void walk_mismatch(int line) {\n"
          "  fprintf(stderr, \"interop_%s.c:%%d: the plain and the view readers \"\n"
          "          \"disagree\\n\", line);\n"
          "  abort();\n}\n\n"
          "static inline bool str_eq(struct tr_fb_str s, const char *want, "
          "size_t n) {\n"
          "  return s.ptr && s.len == n && !memcmp(s.ptr, want, n) && "
          "s.ptr[n] == 0;\n}\n\n",
          name, name, name);
  fprintf(py,
          "# Generated by tools/fbgen --interop-py from schemas/%s.fbs.\n"
          "import flatbuffers\n\n",
          name);
  /* imports: every object of the bfbs */
  for (size_t i = 0; i < s->nobjects; i++)
    fprintf(py, "import %s as %s\n", s->objects[i].name,
            pymod(s->objects[i].name));
  fprintf(py,
          "\n\ndef ck(F, p, what, ok):\n"
          "    if not ok:\n"
          "        F.append(p + '.' + what)\n\n\n");
  for (size_t i = 0; i < s->nobjects; i++)
    if (!s->objects[i].is_struct)
      for_variants(&g, &s->objects[i], gen_proto);
  for (size_t i = 0; i < s->nobjects; i++)
    if (!s->objects[i].is_struct && fbg_declared_in(s->objects[i].decl_file, decl))
      for_sweeps(&g, &s->objects[i], gen_proto);
  for (size_t i = 0; i < s->nobjects; i++)
    if (!s->objects[i].is_struct)
      gen_walk(&g, &s->objects[i], true);
  fprintf(c, "\n");
  for (size_t i = 0; i < s->nobjects; i++)
    if (!s->objects[i].is_struct)
      gen_walk(&g, &s->objects[i], false);
  if (s->root >= 0 && fbg_declared_in(s->objects[s->root].decl_file, decl))
    fprintf(c,
            "uint64_t interop_%s_walk(const void *root) {\n"
            "  return w_%s((const struct %s *)root);\n}\n\n",
            name, fbg_cname(s->objects[s->root].name),
            fbg_cname(s->objects[s->root].name));
  for (size_t i = 0; i < s->nobjects; i++)
    if (!s->objects[i].is_struct)
      for_variants(&g, &s->objects[i], gen_both);
  for (size_t i = 0; i < s->nobjects; i++)
    if (!s->objects[i].is_struct && fbg_declared_in(s->objects[i].decl_file, decl))
      for_sweeps(&g, &s->objects[i], gen_both);
  for (int pass = 0; pass < 2; pass++) {
    if (pass == 1) {
      fprintf(c, "const struct interop_case interop_%s_cases[] = {\n", name);
      fprintf(py, "CASES = [\n");
    }
    for (size_t i = 0; i < s->nobjects; i++) {
      const struct fbg_object *o = &s->objects[i];
      if (o->is_struct || !fbg_declared_in(o->decl_file, decl))
        continue;
      case_variants(&g, o, (int)i == s->root, pass == 1);
    }
  }
  fprintf(c, "};\nconst size_t interop_%s_ncases =\n"
             "    sizeof interop_%s_cases / sizeof interop_%s_cases[0];\n",
          name, name, name);
  fprintf(py, "]\n");
  return 0;
}
