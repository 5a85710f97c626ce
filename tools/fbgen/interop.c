#include "tools/fbgen/fbgen.h"
int fbg_gen_interop(const struct fbg_schema *s, const char *name,
                    const char *decl, FILE *c, FILE *py) {
  return 0;
}
