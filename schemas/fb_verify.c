/* FlatBuffers verifier primitives. Invariants the generated verifiers rely on:
 *  1. every position handed on is inside [0, len) with the bytes it names;
 *  2. every uoffset points strictly forward, so offsets cannot form a cycle;
 *  3. depth and the object count only grow within their limits, so a crafted
 *     buffer (a DAG that shares one subtree many times) costs bounded time;
 *  4. alignment is checked relative to the buffer's start, as Google's
 *     verifier does; readers load through memcpy, so the start itself may be
 *     anywhere. */
#include "schemas/schemas.h"

#include <stdio.h>

const struct tr_fb_limits tr_fb_default_limits = {
    .max_size = 64u << 20,
    .max_depth = 64,
    .max_objects = 4u << 20,
};

const char *tr_fb_strerror(enum tr_fb_status code) {
  switch (code) {
#define TR_FB_X_CASE(c, text)                                                  \
  case c:                                                                      \
    return text;
    TR_FB_ERRORS(TR_FB_X_CASE)
#undef TR_FB_X_CASE
  }
  return "unknown error";
}

char *tr_fb_error_format(const struct tr_fb_error *err, char *out, size_t n) {
  if (!n)
    return out;
  if (err->type && err->field)
    snprintf(out, n, "verify %s.%s at %u: %s", err->type, err->field,
             err->offset, tr_fb_strerror(err->code));
  else if (err->type)
    snprintf(out, n, "verify %s at %u: %s", err->type, err->offset,
             tr_fb_strerror(err->code));
  else
    snprintf(out, n, "verify at %u: %s", err->offset,
             tr_fb_strerror(err->code));
  return out;
}

bool tr_fb_has_ident(const void *buf, size_t len, const char *ident) {
  return len >= 8 && !memcmp((const uint8_t *)buf + 4, ident, 4);
}

int tr_fb_verify_fail(struct tr_fb_verifier *v, enum tr_fb_status code,
                      uint32_t off, const char *type, const char *field) {
  if (v->err) {
    v->err->code = code;
    v->err->offset = off;
    v->err->type = type;
    v->err->field = field;
  }
  return (int)code;
}

#define FAIL(code, off) return tr_fb_verify_fail(v, code, off, type, field)
#define in_bounds tr_fb_in_bounds
#define vector_at tr_fb_verify_vector_at

static int begin(struct tr_fb_verifier *v, const void *buf, size_t len,
                 const char *ident, const struct tr_fb_limits *lim,
                 struct tr_fb_error *err, bool sized, uint32_t *root) {
  const char *type = NULL, *field = NULL;
  uint32_t hdr = sized ? 4 : 0;
  v->buf = buf;
  v->lim = lim ? *lim : tr_fb_default_limits;
  v->err = err;
  v->depth = 0;
  v->objects = 0;
  v->len = 0;
  if (err) {
    err->code = TR_FB_OK;
    err->offset = 0;
    err->type = err->field = NULL;
  }
  if (len > (uint64_t)v->lim.max_size + hdr || len > INT32_MAX)
    FAIL(TR_FB_E_OVERSIZED, 0);
  v->len = (uint32_t)len;
  if (!buf || len < hdr + (ident ? 8u : 4u))
    FAIL(TR_FB_E_TRUNCATED, 0);
  if (sized && tr_fb_read_u32(v->buf) != len - 4)
    FAIL(TR_FB_E_SIZE, 0);
  if (ident && memcmp(v->buf + hdr + 4, ident, 4))
    FAIL(TR_FB_E_IDENT, hdr + 4);
  return tr_fb_verify_offset(v, hdr, NULL, NULL, root);
}

int tr_fb_verify_begin(struct tr_fb_verifier *v, const void *buf, size_t len,
                       const char *ident, const struct tr_fb_limits *lim,
                       struct tr_fb_error *err, uint32_t *root) {
  return begin(v, buf, len, ident, lim, err, false, root);
}

int tr_fb_verify_string_vector(struct tr_fb_verifier *v, uint32_t pos,
                               const char *type, const char *field) {
  uint32_t start = 0, n = 0;
  int rc = vector_at(v, pos, 4, 4, true, type, field, &start, &n);
  for (uint32_t i = 0; !rc && i < n; i++)
    rc = tr_fb_verify_string(v, start + 4 * i, type, field);
  return rc;
}

int tr_fb_verify_table_vector(struct tr_fb_verifier *v, uint32_t pos,
                              tr_fb_verify_table_fn fn, const char *type,
                              const char *field) {
  uint32_t start = 0, n = 0, t = 0;
  int rc = vector_at(v, pos, 4, 4, true, type, field, &start, &n);
  if (rc)
    return rc;
  if (v->depth >= v->lim.max_depth)
    FAIL(TR_FB_E_DEPTH, pos);
  v->depth++;
  for (uint32_t i = 0; !rc && i < n; i++) {
    rc = tr_fb_verify_offset(v, start + 4 * i, type, field, &t);
    if (!rc)
      rc = fn(v, t);
  }
  v->depth--;
  return rc;
}

int tr_fb_verify_nested(struct tr_fb_verifier *v, uint32_t pos,
                        tr_fb_verify_table_fn fn, const char *type,
                        const char *field) {
  uint32_t start = 0, n = 0, root = 0;
  int rc = vector_at(v, pos, 1, 1, false, type, field, &start, &n);
  if (rc || n == 0)
    return rc;
  if (v->depth >= v->lim.max_depth)
    FAIL(TR_FB_E_DEPTH, pos);
  struct tr_fb_verifier sub = *v;
  sub.buf = v->buf + start;
  sub.len = n;
  sub.depth = v->depth + 1;
  if (n < 4) {
    rc = tr_fb_verify_fail(&sub, TR_FB_E_TRUNCATED, 0, type, field);
  } else {
    rc = tr_fb_verify_offset(&sub, 0, type, field, &root);
    if (!rc)
      rc = fn(&sub, root);
  }
  v->objects = sub.objects;
  if (rc && v->err) {
    /* report where in the outer buffer the nested one failed */
    v->err->offset += start;
  }
  return rc;
}

static const void *verify_root(const void *buf, size_t len, const char *ident,
                               const struct tr_fb_limits *lim,
                               struct tr_fb_error *err,
                               tr_fb_verify_table_fn fn, bool sized) {
  struct tr_fb_verifier v;
  uint32_t root = 0;
  if (begin(&v, buf, len, ident, lim, err, sized, &root))
    return NULL;
  if (fn(&v, root))
    return NULL;
  return v.buf + root;
}

const void *tr_fb_verify_root(const void *buf, size_t len, const char *ident,
                              const struct tr_fb_limits *lim,
                              struct tr_fb_error *err,
                              tr_fb_verify_table_fn fn) {
  return verify_root(buf, len, ident, lim, err, fn, false);
}

const void *tr_fb_verify_root_sized(const void *buf, size_t len,
                                    const char *ident,
                                    const struct tr_fb_limits *lim,
                                    struct tr_fb_error *err,
                                    tr_fb_verify_table_fn fn) {
  return verify_root(buf, len, ident, lim, err, fn, true);
}
