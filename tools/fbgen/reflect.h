/* fbgen's model of a schema, read from the binary schema that
 * `flatc -b --schema` writes (a FlatBuffer of reflection.fbs). The reader is
 * hand-written over the runtime in schemas/ (fbgen cannot generate its own
 * input's reader), and verifies the whole file before reading a field. */
#ifndef TR_FBGEN_REFLECT_H
#define TR_FBGEN_REFLECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* reflection.fbs BaseType */
enum fbg_base {
  FBG_NONE = 0,
  FBG_UTYPE,
  FBG_BOOL,
  FBG_BYTE,
  FBG_UBYTE,
  FBG_SHORT,
  FBG_USHORT,
  FBG_INT,
  FBG_UINT,
  FBG_LONG,
  FBG_ULONG,
  FBG_FLOAT,
  FBG_DOUBLE,
  FBG_STRING,
  FBG_VECTOR,
  FBG_OBJ,
  FBG_UNION,
  FBG_ARRAY
};

struct fbg_type {
  int base;      /* enum fbg_base */
  int element;   /* element base type of a vector */
  int index;     /* object or enum index, -1 when none */
};

struct fbg_field {
  char *name;
  struct fbg_type type;
  unsigned id;
  unsigned offset;      /* vtable slot (tables) or byte offset (structs) */
  int64_t def_int;
  double def_real;
  bool deprecated;
  bool required;
  unsigned padding;     /* structs: bytes after this field */
  char *nested;         /* nested_flatbuffer attribute, or NULL */
};

struct fbg_object {
  char *name;           /* fully qualified, with dots */
  struct fbg_field *fields; /* sorted by id (tables) or offset (structs) */
  size_t nfields;
  bool is_struct;
  int minalign;
  int bytesize;
  char *decl_file;      /* "//journal.fbs", or NULL */
};

struct fbg_enumval {
  char *name;
  int64_t value;
  int object;           /* unions: member table index, -1 for NONE */
};

struct fbg_enum {
  char *name;
  struct fbg_enumval *vals;
  size_t nvals;
  bool is_union;
  int underlying;       /* base type */
  char *decl_file;
};

struct fbg_schema {
  struct fbg_object *objects;
  size_t nobjects;
  struct fbg_enum *enums;
  size_t nenums;
  char *file_ident;     /* NULL when none */
  int root;             /* object index, -1 when none */
};

/* Reads and verifies a bfbs image. Returns 0, or -1 with a message in err. */
int fbg_schema_read(const uint8_t *buf, size_t len, struct fbg_schema *s,
                    char *err, size_t errlen);
void fbg_schema_free(struct fbg_schema *s);
/* Index of the object with this fully qualified name, or -1. */
int fbg_find_object(const struct fbg_schema *s, const char *name);

#endif
