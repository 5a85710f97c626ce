/* fbgen on a schema with a nested buffer, nested and force_align structs and
 * defaults of every scalar type. */
#include "fbgen_test_generated.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>

#include <cmocka.h>

static void build_leaf(struct tr_fb_builder *b, int32_t n) {
  tr_fb_ref name = tr_fb_create_str(b, "leaf");
  fbgen_test_Leaf_start(b);
  fbgen_test_Leaf_add_n(b, n);
  fbgen_test_Leaf_add_name(b, name);
  tr_fb_finish(b, fbgen_test_Leaf_end(b), NULL);
}

static void test_defaults_and_structs(void **state) {
  struct tr_fb_builder b;
  tr_fb_builder_init(&b);
  struct fbgen_test_Outer o = {.x = -3, .inner = {.a = 9, .b = -5}, .c = 2};
  struct fbgen_test_Wide w = {.v = 77};
  tr_fb_ref outs = fbgen_test_Root_create_outers(&b, &o, 1);
  fbgen_test_Root_start(&b);
  fbgen_test_Root_add_outer(&b, &o);
  fbgen_test_Root_add_wide(&b, &w);
  fbgen_test_Root_add_outers(&b, outs);
  fbgen_test_Root_finish(&b, fbgen_test_Root_end(&b));
  size_t len;
  const uint8_t *d = tr_fb_builder_data(&b, &len);
  struct tr_fb_error err;
  const struct fbgen_test_Root *r = fbgen_test_Root_verify_as_root(d, len, &err);
  assert_non_null(r);
  assert_memory_equal(d + 4, fbgen_test_Root_IDENTIFIER, 4);
  assert_true(fbgen_test_Root_b(r));
  assert_int_equal(fbgen_test_Root_i8(r), -1);
  assert_int_equal(fbgen_test_Root_u16(r), 65535);
  assert_true(fbgen_test_Root_i64(r) == INT64_C(-9000000000));
  assert_true(fbgen_test_Root_u64(r) == UINT64_C(9000000000000000000));
  assert_true(fbgen_test_Root_f(r) == 1.5f);
  assert_true(fbgen_test_Root_d(r) == -2.25);
  assert_int_equal(fbgen_test_Root_color(r), fbgen_test_Color_Blue);
  assert_string_equal(fbgen_test_Color_name(8), "Blue");
  assert_null(fbgen_test_Color_name(3));
  struct fbgen_test_Outer ro = fbgen_test_Root_outer(r);
  assert_int_equal(ro.x, -3);
  assert_int_equal(ro.inner.a, 9);
  assert_true(ro.inner.b == -5);
  assert_int_equal(fbgen_test_Root_wide(r).v, 77);
  assert_int_equal(fbgen_test_Root_outers_len(r), 1);
  assert_int_equal(fbgen_test_Root_outers_at(r, 0).c, 2);
  /* the Wide struct is 16-aligned relative to the buffer */
  assert_int_equal((tr_fb_field(r, 4) - d) % 16, 0);
  tr_fb_builder_free(&b);
}

static void test_nested_flatbuffer(void **state) {
  struct tr_fb_builder nb, b;
  tr_fb_builder_init(&nb);
  tr_fb_builder_init(&b);
  build_leaf(&nb, 42);
  size_t nlen;
  const uint8_t *nd = tr_fb_builder_data(&nb, &nlen);
  tr_fb_ref payload = tr_fb_create_bytes(&b, nd, nlen);
  fbgen_test_Root_start(&b);
  fbgen_test_Root_add_payload(&b, payload);
  fbgen_test_Root_finish(&b, fbgen_test_Root_end(&b));
  size_t len;
  const uint8_t *d = tr_fb_builder_data(&b, &len);
  uint8_t *copy = malloc(len);
  memcpy(copy, d, len);
  struct tr_fb_error err;
  const struct fbgen_test_Root *r =
      fbgen_test_Root_verify_as_root(copy, len, &err);
  if (!r) {
    char m[200];
    print_error("%s\n", tr_fb_error_format(&err, m, sizeof m));
  }
  assert_non_null(r);
  struct tr_fb_vec v = fbgen_test_Root_payload(r);
  assert_int_equal(fbgen_test_Leaf_n(fbgen_test_Leaf_as_root(v.data)), 42);
  /* break the nested buffer's root offset: the outer verify fails */
  uint32_t bad = 0x7fff0000;
  memcpy((uint8_t *)v.data, &bad, 4);
  assert_null(fbgen_test_Root_verify_as_root(copy, len, &err));
  assert_int_equal(err.code, TR_FB_E_BOUNDS);
  free(copy);
  tr_fb_builder_free(&nb);
  tr_fb_builder_free(&b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_defaults_and_structs),
      cmocka_unit_test(test_nested_flatbuffer),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
