/* libFuzzer target: one root type's verifier, then every reader on what it
 * accepts. Built once per root type with FUZZ_SCHEMA (journal, command, peer,
 * protocol, state) and FUZZ_ROOT (its root table). No input may crash, read outside
 * the buffer (ASan) or take unbounded time. */
#include "schemas/command_generated.h"
#include "schemas/journal_generated.h"
#include "schemas/peer_generated.h"
#include "schemas/protocol_generated.h"
#include "schemas/state_generated.h"
#include "tests/unit/schemas/interop.h"

#define CAT3(a, b, c) a##b##c
#define XCAT3(a, b, c) CAT3(a, b, c)
#define VERIFY XCAT3(FUZZ_ROOT, _verify_as_root, )
#define VERIFY_SIZED XCAT3(FUZZ_ROOT, _verify_as_root_sized, )
#define VERIFY_OPTS XCAT3(FUZZ_ROOT, _verify_as_root_opts, )
#define WALK XCAT3(interop_, FUZZ_SCHEMA, _walk)

void interop_mismatch(const char *where, const char *what) {
  (void)where;
  (void)what;
}

static volatile uint64_t sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  struct tr_fb_error err;
  const void *root = VERIFY(data, size, &err);
  if (root)
    sink += WALK(root);
  else
    sink += tr_fb_strerror(err.code)[0];
  /* the same bytes as a size-prefixed frame, and without the identifier */
  root = VERIFY_SIZED(data, size, &err);
  if (root)
    sink += WALK(root);
  root = VERIFY_OPTS(data, size, NULL, NULL, &err);
  if (root)
    sink += WALK(root);
  return 0;
}
