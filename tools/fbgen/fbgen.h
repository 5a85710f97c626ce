/* fbgen internals shared by the C generator and the interop-test generator. */
#ifndef TR_FBGEN_H
#define TR_FBGEN_H

#include "tools/fbgen/reflect.h"

#include <stdio.h>

struct fbg_scalar {
  const char *ctype;   /* C type */
  const char *load;    /* tr_fb_read_<load>, tr_fb_add_<load> */
  unsigned size;
  const char *pyflags; /* flatbuffers.number_types.<pyflags> */
  const char *pyprep;  /* builder.Prepend<pyprep> */
};

bool fbg_is_scalar(int base);
const struct fbg_scalar *fbg_scalar_info(int base);
/* "troupe.journal.Event" -> "troupe_journal_Event" (static buffer, 4 slots) */
const char *fbg_cname(const char *name);
/* Last component of a dotted name. */
const char *fbg_short(const char *name);
/* Index of the object a nested_flatbuffer attribute names, or -1. */
int fbg_nested_object(const struct fbg_schema *s, const struct fbg_object *o,
                      const char *nested);
/* True when the object/enum is declared in file `decl` ("//x.fbs"). */
bool fbg_declared_in(const char *decl_file, const char *decl);
/* The union enum of a UType or Union field, or NULL. */
const struct fbg_enum *fbg_union_of(const struct fbg_schema *s,
                                    const struct fbg_field *f);

/* Interop tests: C and Python that build and check the same values. */
int fbg_gen_interop(const struct fbg_schema *s, const char *name,
                    const char *decl, FILE *c, FILE *py);

#endif
