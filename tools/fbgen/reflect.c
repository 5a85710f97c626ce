/* Hand-written verifier and reader for the subset of reflection.fbs fbgen
 * uses. Field ids follow reflection.fbs (Schema, Object, Field, Type, Enum,
 * EnumVal, KeyValue); fields fbgen does not read are not verified, and are
 * never read. flatc 2.0.8 writes declared attributes into the binary schema
 * but not its own nested_flatbuffer: schemas mark nested buffers with the
 * declared attribute `troupe_nested` (nested_flatbuffer is honoured too, for
 * a flatc that keeps it). */
#include "tools/fbgen/reflect.h"

#include "schemas/schemas.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- verification ------------------------------------------------------- */

enum { F_STR, F_U8, F_U16, F_I32, F_U32, F_I64, F_F64 };

struct fdesc {
  unsigned id;
  int kind; /* F_* scalar or string; tables are checked by hand */
};

static int check_scalars(struct tr_fb_verifier *v, const struct tr_fb_vtab *tv,
                         const char *type, const struct fdesc *f, size_t n) {
  static const uint32_t size[] = {4, 1, 2, 4, 4, 8, 8};
  for (size_t i = 0; i < n; i++) {
    uint32_t p = 0;
    int rc = tr_fb_verify_field(v, tv, f[i].id, size[f[i].kind],
                                size[f[i].kind], false, type, "field", &p);
    if (rc)
      return rc;
    if (p && f[i].kind == F_STR && (rc = tr_fb_verify_string(v, p, type, "")))
      return rc;
  }
  return 0;
}

static int v_table_field(struct tr_fb_verifier *v, const struct tr_fb_vtab *tv,
                         unsigned id, const char *type, tr_fb_verify_table_fn fn) {
  uint32_t p = 0, t = 0;
  int rc = tr_fb_verify_field(v, tv, id, 4, 4, false, type, "table", &p);
  if (rc || !p)
    return rc;
  if ((rc = tr_fb_verify_offset(v, p, type, "table", &t)))
    return rc;
  return fn(v, t);
}

static int v_vec_field(struct tr_fb_verifier *v, const struct tr_fb_vtab *tv,
                       unsigned id, const char *type, tr_fb_verify_table_fn fn) {
  uint32_t p = 0;
  int rc = tr_fb_verify_field(v, tv, id, 4, 4, false, type, "vector", &p);
  if (rc || !p)
    return rc;
  return tr_fb_verify_table_vector(v, p, fn, type, "vector");
}

static int v_type(struct tr_fb_verifier *v, uint32_t pos) {
  static const struct fdesc f[] = {{0, F_U8}, {1, F_U8}, {2, F_I32}};
  struct tr_fb_vtab tv = {0, 0, 0, 0};
  int rc = tr_fb_verify_table_enter(v, pos, "reflection.Type", &tv);
  if (!rc)
    rc = check_scalars(v, &tv, "reflection.Type", f, 3);
  tr_fb_verify_table_leave(v);
  return rc;
}

static int v_keyvalue(struct tr_fb_verifier *v, uint32_t pos) {
  static const struct fdesc f[] = {{0, F_STR}, {1, F_STR}};
  struct tr_fb_vtab tv = {0, 0, 0, 0};
  int rc = tr_fb_verify_table_enter(v, pos, "reflection.KeyValue", &tv);
  if (!rc)
    rc = check_scalars(v, &tv, "reflection.KeyValue", f, 2);
  tr_fb_verify_table_leave(v);
  return rc;
}

static int v_field(struct tr_fb_verifier *v, uint32_t pos) {
  static const struct fdesc f[] = {{0, F_STR}, {2, F_U16}, {3, F_U16},
                                   {4, F_I64}, {5, F_F64}, {6, F_U8},
                                   {7, F_U8},  {12, F_U16}};
  const char *ty = "reflection.Field";
  struct tr_fb_vtab tv = {0, 0, 0, 0};
  int rc = tr_fb_verify_table_enter(v, pos, ty, &tv);
  if (!rc)
    rc = check_scalars(v, &tv, ty, f, sizeof f / sizeof f[0]);
  if (!rc)
    rc = v_table_field(v, &tv, 1, ty, v_type);
  if (!rc)
    rc = v_vec_field(v, &tv, 9, ty, v_keyvalue);
  tr_fb_verify_table_leave(v);
  return rc;
}

static int v_object(struct tr_fb_verifier *v, uint32_t pos) {
  static const struct fdesc f[] = {
      {0, F_STR}, {2, F_U8}, {3, F_I32}, {4, F_I32}, {7, F_STR}};
  const char *ty = "reflection.Object";
  struct tr_fb_vtab tv = {0, 0, 0, 0};
  int rc = tr_fb_verify_table_enter(v, pos, ty, &tv);
  if (!rc)
    rc = check_scalars(v, &tv, ty, f, sizeof f / sizeof f[0]);
  if (!rc)
    rc = v_vec_field(v, &tv, 1, ty, v_field);
  tr_fb_verify_table_leave(v);
  return rc;
}

static int v_enumval(struct tr_fb_verifier *v, uint32_t pos) {
  static const struct fdesc f[] = {{0, F_STR}, {1, F_I64}};
  const char *ty = "reflection.EnumVal";
  struct tr_fb_vtab tv = {0, 0, 0, 0};
  int rc = tr_fb_verify_table_enter(v, pos, ty, &tv);
  if (!rc)
    rc = check_scalars(v, &tv, ty, f, 2);
  if (!rc)
    rc = v_table_field(v, &tv, 3, ty, v_type);
  tr_fb_verify_table_leave(v);
  return rc;
}

static int v_enum(struct tr_fb_verifier *v, uint32_t pos) {
  static const struct fdesc f[] = {{0, F_STR}, {2, F_U8}, {6, F_STR}};
  const char *ty = "reflection.Enum";
  struct tr_fb_vtab tv = {0, 0, 0, 0};
  int rc = tr_fb_verify_table_enter(v, pos, ty, &tv);
  if (!rc)
    rc = check_scalars(v, &tv, ty, f, 3);
  if (!rc)
    rc = v_vec_field(v, &tv, 1, ty, v_enumval);
  if (!rc)
    rc = v_table_field(v, &tv, 3, ty, v_type);
  tr_fb_verify_table_leave(v);
  return rc;
}

static int v_schema(struct tr_fb_verifier *v, uint32_t pos) {
  static const struct fdesc f[] = {{2, F_STR}};
  const char *ty = "reflection.Schema";
  struct tr_fb_vtab tv = {0, 0, 0, 0};
  int rc = tr_fb_verify_table_enter(v, pos, ty, &tv);
  if (!rc)
    rc = check_scalars(v, &tv, ty, f, 1);
  if (!rc)
    rc = v_vec_field(v, &tv, 0, ty, v_object);
  if (!rc)
    rc = v_vec_field(v, &tv, 1, ty, v_enum);
  if (!rc)
    rc = v_table_field(v, &tv, 4, ty, v_object);
  tr_fb_verify_table_leave(v);
  return rc;
}

/* ---- reading (verified buffers only) ------------------------------------ */

static char *dup_str(struct tr_fb_str s) {
  if (!s.ptr)
    return NULL;
  char *p = malloc(s.len + 1);
  if (!p)
    tr_fb_oom(s.len + 1);
  memcpy(p, s.ptr, s.len + 1);
  return p;
}

static int64_t get_i64(const void *t, unsigned id, int64_t def) {
  const uint8_t *p = tr_fb_field(t, id);
  return p ? tr_fb_read_i64(p) : def;
}

static int get_small(const void *t, unsigned id, int size, int def) {
  const uint8_t *p = tr_fb_field(t, id);
  if (!p)
    return def;
  if (size == 1)
    return tr_fb_read_u8(p);
  if (size == 2)
    return tr_fb_read_u16(p);
  return tr_fb_read_i32(p);
}

static void read_type(const void *t, struct fbg_type *ty) {
  ty->base = ty->element = FBG_NONE;
  ty->index = -1;
  if (!t)
    return;
  ty->base = get_small(t, 0, 1, 0);
  ty->element = get_small(t, 1, 1, 0);
  ty->index = get_small(t, 2, 4, -1);
}

static void *xcalloc(size_t n, size_t size) {
  void *p = calloc(n ? n : 1, size);
  if (!p)
    tr_fb_oom(n * size);
  return p;
}

static int by_id(const void *a, const void *b) {
  const struct fbg_field *x = a, *y = b;
  return (int)x->id - (int)y->id;
}

static int by_offset(const void *a, const void *b) {
  const struct fbg_field *x = a, *y = b;
  return (int)x->offset - (int)y->offset;
}

static void read_object(const void *t, struct fbg_object *o) {
  o->name = dup_str(tr_fb_field_str(t, 0));
  o->is_struct = get_small(t, 2, 1, 0) != 0;
  o->minalign = get_small(t, 3, 4, 0);
  o->bytesize = get_small(t, 4, 4, 0);
  o->decl_file = dup_str(tr_fb_field_str(t, 7));
  struct tr_fb_vec fv = tr_fb_field_vec(t, 1);
  o->nfields = fv.len;
  o->fields = xcalloc(fv.len, sizeof *o->fields);
  for (uint32_t i = 0; i < fv.len; i++) {
    const void *ft = tr_fb_vec_table(fv, i);
    struct fbg_field *f = &o->fields[i];
    f->name = dup_str(tr_fb_field_str(ft, 0));
    read_type(tr_fb_field_ref(ft, 1), &f->type);
    f->id = (unsigned)get_small(ft, 2, 2, 0);
    f->offset = (unsigned)get_small(ft, 3, 2, 0);
    f->def_int = get_i64(ft, 4, 0);
    const uint8_t *dr = tr_fb_field(ft, 5);
    f->def_real = dr ? tr_fb_read_f64(dr) : 0.0;
    f->deprecated = get_small(ft, 6, 1, 0) != 0;
    f->required = get_small(ft, 7, 1, 0) != 0;
    f->padding = (unsigned)get_small(ft, 12, 2, 0);
    struct tr_fb_vec av = tr_fb_field_vec(ft, 9);
    for (uint32_t k = 0; k < av.len; k++) {
      const void *kv = tr_fb_vec_table(av, k);
      struct tr_fb_str key = tr_fb_field_str(kv, 0);
      if (key.ptr && (!strcmp(key.ptr, "nested_flatbuffer") ||
                      !strcmp(key.ptr, "troupe_nested")))
        f->nested = dup_str(tr_fb_field_str(kv, 1));
    }
  }
  qsort(o->fields, o->nfields, sizeof *o->fields,
        o->is_struct ? by_offset : by_id);
}

static void read_enum(const void *t, struct fbg_enum *e) {
  e->name = dup_str(tr_fb_field_str(t, 0));
  e->is_union = get_small(t, 2, 1, 0) != 0;
  struct fbg_type ut;
  read_type(tr_fb_field_ref(t, 3), &ut);
  e->underlying = ut.base;
  e->decl_file = dup_str(tr_fb_field_str(t, 6));
  struct tr_fb_vec vv = tr_fb_field_vec(t, 1);
  e->nvals = vv.len;
  e->vals = xcalloc(vv.len, sizeof *e->vals);
  for (uint32_t i = 0; i < vv.len; i++) {
    const void *et = tr_fb_vec_table(vv, i);
    struct fbg_enumval *ev = &e->vals[i];
    ev->name = dup_str(tr_fb_field_str(et, 0));
    ev->value = get_i64(et, 1, 0);
    struct fbg_type ty;
    read_type(tr_fb_field_ref(et, 3), &ty);
    ev->object = ty.base == FBG_OBJ ? ty.index : -1;
  }
}

int fbg_schema_read(const uint8_t *buf, size_t len, struct fbg_schema *s,
                    char *err, size_t errlen) {
  struct tr_fb_error e;
  struct tr_fb_limits lim = tr_fb_default_limits;
  memset(s, 0, sizeof *s);
  s->root = -1;
  const void *root = tr_fb_verify_root(buf, len, "BFBS", &lim, &e, v_schema);
  if (!root) {
    tr_fb_error_format(&e, err, errlen);
    return -1;
  }
  struct tr_fb_vec ov = tr_fb_field_vec(root, 0);
  s->nobjects = ov.len;
  s->objects = xcalloc(ov.len, sizeof *s->objects);
  for (uint32_t i = 0; i < ov.len; i++)
    read_object(tr_fb_vec_table(ov, i), &s->objects[i]);
  struct tr_fb_vec ev = tr_fb_field_vec(root, 1);
  s->nenums = ev.len;
  s->enums = xcalloc(ev.len, sizeof *s->enums);
  for (uint32_t i = 0; i < ev.len; i++)
    read_enum(tr_fb_vec_table(ev, i), &s->enums[i]);
  s->file_ident = dup_str(tr_fb_field_str(root, 2));
  if (s->file_ident && !s->file_ident[0]) {
    free(s->file_ident);
    s->file_ident = NULL;
  }
  const void *rt = tr_fb_field_ref(root, 4);
  if (rt) {
    struct tr_fb_str rn = tr_fb_field_str(rt, 0);
    if (rn.ptr)
      s->root = fbg_find_object(s, rn.ptr);
  }
  /* sanity: indices in range */
  for (size_t i = 0; i < s->nobjects; i++) {
    const struct fbg_object *o = &s->objects[i];
    if (!o->name) {
      snprintf(err, errlen, "object %zu without a name", i);
      return -1;
    }
    for (size_t k = 0; k < o->nfields; k++) {
      const struct fbg_field *f = &o->fields[k];
      bool obj = f->type.base == FBG_OBJ ||
                 (f->type.base == FBG_VECTOR && f->type.element == FBG_OBJ);
      bool bad = obj ? (f->type.index < 0 || f->type.index >= (int)s->nobjects)
                     : f->type.index >= (int)s->nenums;
      if (!f->name || bad) {
        snprintf(err, errlen, "%s: field %zu malformed", o->name, k);
        return -1;
      }
    }
  }
  for (size_t i = 0; i < s->nenums; i++) {
    if (!s->enums[i].name) {
      snprintf(err, errlen, "enum %zu without a name", i);
      return -1;
    }
    for (size_t k = 0; k < s->enums[i].nvals; k++)
      if (!s->enums[i].vals[k].name ||
          s->enums[i].vals[k].object >= (int)s->nobjects) {
        snprintf(err, errlen, "%s: value %zu malformed", s->enums[i].name, k);
        return -1;
      }
  }
  return 0;
}

int fbg_find_object(const struct fbg_schema *s, const char *name) {
  for (size_t i = 0; i < s->nobjects; i++)
    if (!strcmp(s->objects[i].name, name))
      return (int)i;
  return -1;
}

void fbg_schema_free(struct fbg_schema *s) {
  for (size_t i = 0; i < s->nobjects; i++) {
    struct fbg_object *o = &s->objects[i];
    for (size_t k = 0; k < o->nfields; k++) {
      free(o->fields[k].name);
      free(o->fields[k].nested);
    }
    free(o->fields);
    free(o->name);
    free(o->decl_file);
  }
  for (size_t i = 0; i < s->nenums; i++) {
    struct fbg_enum *e = &s->enums[i];
    for (size_t k = 0; k < e->nvals; k++)
      free(e->vals[k].name);
    free(e->vals);
    free(e->name);
    free(e->decl_file);
  }
  free(s->objects);
  free(s->enums);
  free(s->file_ident);
  memset(s, 0, sizeof *s);
}
