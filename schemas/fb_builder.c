/* FlatBuffers builder: back to front, as the format wants, with vtable
 * deduplication. A buffer never exceeds 2 GiB (FlatBuffers' own limit);
 * allocation failure and misuse (nested tables, a missing required field)
 * abort with a message. */
#include "schemas/schemas.h"

#include <stdio.h>
#include <stdlib.h>

#define TR_FB_MAX_BUFFER ((size_t)INT32_MAX)

void tr_fb_oom(size_t n) {
  fprintf(stderr, "troupe: out of memory allocating %zu bytes (flatbuffers)\n",
          n);
  abort();
}

void tr_fb_misuse(const char *what) {
  fprintf(stderr, "troupe: flatbuffers builder misuse: %s\n", what);
  abort();
}

static void *xrealloc(void *p, size_t n) {
  void *q = realloc(p, n ? n : 1);
  if (!q)
    tr_fb_oom(n);
  return q;
}

void tr_fb_builder_init(struct tr_fb_builder *b) {
  memset(b, 0, sizeof *b);
  b->minalign = 1;
}

void tr_fb_builder_reset(struct tr_fb_builder *b) {
  if ((b->state & TR_FB_IN_TABLE) && b->slots)
    memset(b->slots, 0, b->slot_cap * sizeof *b->slots);
  b->used = 0;
  b->minalign = 1;
  b->state = 0;
  b->nvtables = 0;
}

void tr_fb_builder_free(struct tr_fb_builder *b) {
  free(b->buf);
  free(b->slots);
  free(b->vtables);
  tr_fb_builder_init(b);
}

const uint8_t *tr_fb_builder_data(const struct tr_fb_builder *b, size_t *len) {
  if (!(b->state & TR_FB_FINISHED))
    tr_fb_misuse("buffer read before finish");
  *len = b->used;
  return b->buf + b->cap - b->used;
}

void tr_fb_grow(struct tr_fb_builder *b, size_t n) {
  if (n > TR_FB_MAX_BUFFER - b->used)
    tr_fb_misuse("buffer over 2 GiB");
  size_t cap = b->cap ? b->cap : 256;
  while (cap - b->used < n)
    cap *= 2;
  uint8_t *nb = xrealloc(NULL, cap);
  if (b->used)
    memcpy(nb + cap - b->used, b->buf + b->cap - b->used, b->used);
  free(b->buf);
  b->buf = nb;
  b->cap = cap;
}

void tr_fb_push_big(struct tr_fb_builder *b, const void *p, size_t n) {
  tr_fb_push(b, p, n);
}

static void check_open(struct tr_fb_builder *b, const char *what) {
  if (b->state & TR_FB_IN_TABLE)
    tr_fb_misuse(what);
  if (b->state & TR_FB_FINISHED)
    tr_fb_misuse("builder used after finish without reset");
}

void tr_fb_table_start(struct tr_fb_builder *b, unsigned nfields) {
  check_open(b, "table started inside a table");
  if (nfields > UINT16_MAX)
    tr_fb_misuse("table with over 65535 fields");
  if (nfields > b->slot_cap) {
    b->slots = xrealloc(b->slots, nfields * sizeof *b->slots);
    memset(b->slots + b->slot_cap, 0,
           (nfields - b->slot_cap) * sizeof *b->slots);
    b->slot_cap = (uint16_t)nfields;
  }
  b->nslots = (uint16_t)nfields;
  b->max_slot = 0;
  b->state |= TR_FB_IN_TABLE;
  b->table_start = (uint32_t)b->used;
}

void tr_fb_table_require(struct tr_fb_builder *b, unsigned id,
                         const char *what) {
  if (id >= b->nslots || !b->slots[id]) {
    fprintf(stderr, "troupe: flatbuffers: required field %s missing\n", what);
    abort();
  }
}

void tr_fb_table_union(struct tr_fb_builder *b, unsigned id,
                       const char *what) {
  if (id == 0 || id >= b->nslots || b->slots[id] || !b->slots[id - 1])
    return;
  /* the tag's byte, written back to front: slots hold b->used after it */
  if (b->buf[b->cap - b->slots[id - 1]] != 0) {
    fprintf(stderr, "troupe: flatbuffers: union %s has a tag but no value\n",
            what);
    abort();
  }
}

tr_fb_ref tr_fb_table_end(struct tr_fb_builder *b) {
  if (!(b->state & TR_FB_IN_TABLE))
    tr_fb_misuse("table end without start");
  int32_t zero = 0;
  tr_fb_prep(b, 4, 0);
  tr_fb_push(b, &zero, 4);
  uint32_t tref = (uint32_t)b->used;
  size_t tsize = tref - b->table_start;
  if (tsize > UINT16_MAX)
    tr_fb_misuse("table inline data over 64 KiB");

  unsigned n = b->max_slot;
  uint16_t vt[2 + 256];
  uint16_t *vtp = vt;
  size_t vt_bytes = 4 + 2 * (size_t)n;
  if (vt_bytes > UINT16_MAX)
    tr_fb_misuse("vtable over 64 KiB");
  if (n > 256)
    vtp = xrealloc(NULL, vt_bytes);
  vtp[0] = (uint16_t)vt_bytes;
  vtp[1] = (uint16_t)tsize;
  for (unsigned i = 0; i < n; i++) {
    vtp[2 + i] = b->slots[i] ? (uint16_t)(tref - b->slots[i]) : 0;
    b->slots[i] = 0;
  }

  /* An identical vtable already in the buffer serves this table too. */
  uint32_t found = 0;
  for (size_t i = 0; i < b->nvtables; i++) {
    const uint8_t *old = b->buf + b->cap - b->vtables[i];
    if (tr_fb_read_u16(old) != vt_bytes)
      continue;
    size_t k = 1;
    while (k < vt_bytes / 2 && tr_fb_read_u16(old + 2 * k) == vtp[k])
      k++;
    if (k == vt_bytes / 2) {
      found = b->vtables[i];
      break;
    }
  }
  if (!found) {
    tr_fb_ensure(b, vt_bytes);
    tr_fb_push(b, vtp, vt_bytes);
    found = (uint32_t)b->used;
    if (b->nvtables == b->vt_cap) {
      b->vt_cap = b->vt_cap ? 2 * b->vt_cap : 16;
      b->vtables = xrealloc(b->vtables, b->vt_cap * sizeof *b->vtables);
    }
    b->vtables[b->nvtables++] = found;
  }
  if (vtp != vt)
    free(vtp);
  /* table address - vtable address, both measured from the end */
  int32_t soff = (int32_t)((int64_t)found - (int64_t)tref);
  memcpy(b->buf + b->cap - tref, &soff, 4);
  b->state &= (uint8_t)~TR_FB_IN_TABLE;
  return tref;
}

tr_fb_ref tr_fb_create_str(struct tr_fb_builder *b, const char *cstr) {
  return tr_fb_create_string(b, cstr, strlen(cstr));
}

tr_fb_ref tr_fb_create_vector(struct tr_fb_builder *b, const void *elems,
                              size_t n, size_t elem_size, size_t align) {
  check_open(b, "vector created inside a table");
  if (elem_size && n > TR_FB_MAX_BUFFER / elem_size)
    tr_fb_misuse("vector over 2 GiB");
  size_t bytes = n * elem_size;
  tr_fb_prep(b, align < 4 ? 4 : align, bytes);
  if (bytes)
    tr_fb_push(b, elems, bytes);
  uint32_t len = (uint32_t)n;
  tr_fb_push(b, &len, 4);
  return (tr_fb_ref)b->used;
}

tr_fb_ref tr_fb_create_bytes(struct tr_fb_builder *b, const void *p,
                             size_t n) {
  return tr_fb_create_vector(b, p, n, 1, 1);
}

tr_fb_ref tr_fb_create_ref_vector(struct tr_fb_builder *b,
                                  const tr_fb_ref *refs, size_t n) {
  check_open(b, "vector created inside a table");
  if (n > TR_FB_MAX_BUFFER / 4)
    tr_fb_misuse("vector over 2 GiB");
  tr_fb_prep(b, 4, 4 * n);
  for (size_t i = n; i-- > 0;) {
    if (!refs[i] || refs[i] > b->used)
      tr_fb_misuse("vector element is not an object of this buffer");
    uint32_t off = (uint32_t)(b->used + 4 - refs[i]);
    tr_fb_push(b, &off, 4);
  }
  uint32_t len = (uint32_t)n;
  tr_fb_push(b, &len, 4);
  return (tr_fb_ref)b->used;
}

static void finish(struct tr_fb_builder *b, tr_fb_ref root, const char *ident,
                   bool sized) {
  check_open(b, "finish inside a table");
  if (!root || root > b->used)
    tr_fb_misuse("finish without a root table");
  size_t extra = 4 + (ident ? 4 : 0) + (sized ? 4 : 0);
  tr_fb_prep(b, b->minalign < 4 ? 4 : b->minalign, extra);
  if (ident)
    tr_fb_push(b, ident, 4);
  uint32_t off = (uint32_t)(b->used + 4 - root);
  tr_fb_push(b, &off, 4);
  if (sized) {
    uint32_t len = (uint32_t)b->used;
    tr_fb_push(b, &len, 4);
  }
  b->state |= TR_FB_FINISHED;
}

void tr_fb_finish(struct tr_fb_builder *b, tr_fb_ref root, const char *ident) {
  finish(b, root, ident, false);
}

void tr_fb_finish_sized(struct tr_fb_builder *b, tr_fb_ref root,
                        const char *ident) {
  finish(b, root, ident, true);
}
