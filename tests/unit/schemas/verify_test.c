/* The verifier rejects each kind of bad input with its reason; the builder
 * deduplicates vtables, honours defaults and frames buffers. */
#include "schemas/command_generated.h"
#include "schemas/journal_generated.h"
#include "schemas/protocol_generated.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>

/* A typical llm.completed event; returns a malloc'd copy of the buffer. */
static uint8_t *make_event(size_t *len) {
  struct tr_fb_builder b;
  tr_fb_builder_init(&b);
  tr_fb_ref id1 = tr_fb_create_str(&b, "call_1");
  tr_fb_ref nm1 = tr_fb_create_str(&b, "search");
  tr_fb_ref ar1 = tr_fb_create_str(&b, "{\"q\":\"weather\"}");
  troupe_journal_ToolCall_start(&b);
  troupe_journal_ToolCall_add_id(&b, id1);
  troupe_journal_ToolCall_add_name(&b, nm1);
  troupe_journal_ToolCall_add_arguments(&b, ar1);
  tr_fb_ref tc1 = troupe_journal_ToolCall_end(&b);
  tr_fb_ref id2 = tr_fb_create_str(&b, "call_2");
  troupe_journal_ToolCall_start(&b);
  troupe_journal_ToolCall_add_id(&b, id2);
  troupe_journal_ToolCall_add_name(&b, nm1);
  tr_fb_ref tc2 = troupe_journal_ToolCall_end(&b);
  tr_fb_ref calls[] = {tc1, tc2};
  tr_fb_ref vcalls = troupe_journal_LlmCompleted_create_tool_calls(&b, calls, 2);
  troupe_journal_Usage_start(&b);
  troupe_journal_Usage_add_prompt_tokens(&b, 1200);
  troupe_journal_Usage_add_completion_tokens(&b, 80);
  tr_fb_ref usage = troupe_journal_Usage_end(&b);
  tr_fb_ref model = tr_fb_create_str(&b, "gpt-4o-mini");
  troupe_journal_LlmCompleted_start(&b);
  troupe_journal_LlmCompleted_add_step(&b, 3);
  troupe_journal_LlmCompleted_add_model(&b, model);
  troupe_journal_LlmCompleted_add_tool_calls(&b, vcalls);
  troupe_journal_LlmCompleted_add_finish_reason(
      &b, troupe_journal_FinishReason_ToolCalls);
  troupe_journal_LlmCompleted_add_usage(&b, usage);
  tr_fb_ref data = troupe_journal_LlmCompleted_end(&b);
  tr_fb_ref run = tr_fb_create_str(&b, "r_0001");
  troupe_journal_Event_start(&b);
  troupe_journal_Event_add_seq(&b, 7);
  troupe_journal_Event_add_time_us(&b, 1700000000000000);
  troupe_journal_Event_add_run_id(&b, run);
  troupe_journal_Event_add_epoch(&b, 2);
  troupe_journal_Event_add_data_LlmCompleted(&b, data);
  troupe_journal_Event_finish(&b, troupe_journal_Event_end(&b));
  const uint8_t *d = tr_fb_builder_data(&b, len);
  uint8_t *copy = malloc(*len);
  assert_non_null(copy);
  memcpy(copy, d, *len);
  tr_fb_builder_free(&b);
  return copy;
}

static enum tr_fb_status verify(const uint8_t *buf, size_t len) {
  struct tr_fb_error err;
  const struct troupe_journal_Event *ev =
      troupe_journal_Event_verify_as_root(buf, len, &err);
  if (ev)
    return TR_FB_OK;
  assert_int_not_equal(err.code, TR_FB_OK);
  char msg[256];
  tr_fb_error_format(&err, msg, sizeof msg);
  assert_true(strlen(msg) > 10);
  return err.code;
}

/* Position of the Event's field `id` (which must be present). */
static uint32_t field_pos(const uint8_t *buf, unsigned id) {
  const uint8_t *root = tr_fb_root(buf);
  const uint8_t *p = tr_fb_field(root, id);
  assert_non_null(p);
  return (uint32_t)(p - buf);
}

static void test_valid_and_read(void **state) {
  size_t len;
  uint8_t *buf = make_event(&len);
  struct tr_fb_error err;
  const struct troupe_journal_Event *ev =
      troupe_journal_Event_verify_as_root(buf, len, &err);
  assert_non_null(ev);
  assert_int_equal(troupe_journal_Event_seq(ev), 7);
  assert_int_equal(troupe_journal_Event_epoch(ev), 2);
  assert_string_equal(troupe_journal_Event_run_id(ev).ptr, "r_0001");
  assert_int_equal(troupe_journal_Event_data_type(ev),
                   troupe_journal_Data_LlmCompleted);
  assert_string_equal(troupe_journal_Data_name(troupe_journal_Event_data_type(ev)),
                      "LlmCompleted");
  assert_null(troupe_journal_Event_data_as_RunCreated(ev));
  const struct troupe_journal_LlmCompleted *lc =
      troupe_journal_Event_data_as_LlmCompleted(ev);
  assert_non_null(lc);
  assert_int_equal(troupe_journal_LlmCompleted_step(lc), 3);
  assert_int_equal(troupe_journal_LlmCompleted_tool_calls_len(lc), 2);
  const struct troupe_journal_ToolCall *tc =
      troupe_journal_LlmCompleted_tool_calls_at(lc, 1);
  assert_string_equal(troupe_journal_ToolCall_id(tc).ptr, "call_2");
  assert_null(troupe_journal_ToolCall_arguments(tc).ptr);
  assert_null(troupe_journal_LlmCompleted_tool_calls_at(lc, 2));
  assert_int_equal(troupe_journal_Usage_completion_tokens(
                       troupe_journal_LlmCompleted_usage(lc)),
                   80);
  assert_int_equal(troupe_journal_Usage_cost_micro_usd(
                       troupe_journal_LlmCompleted_usage(lc)),
                   0);
  assert_false(troupe_journal_LlmCompleted_has_latency_ms(lc));
  /* a buffer at an odd address still reads (loads go through memcpy) */
  uint8_t *odd = malloc(len + 1);
  memcpy(odd + 1, buf, len);
  ev = troupe_journal_Event_verify_as_root(odd + 1, len, &err);
  assert_non_null(ev);
  assert_int_equal(troupe_journal_Event_time_us(ev), 1700000000000000);
  free(odd);
  free(buf);
}

static void test_truncated(void **state) {
  size_t len;
  uint8_t *buf = make_event(&len);
  size_t last = len;
  while (last > 0 && buf[last - 1] == 0)
    last--;
  /* cutting only trailing padding leaves a valid buffer (as in Google's
   * verifier); any cut that loses content (or the NUL after it) fails */
  for (size_t n = 0; n <= last; n++) {
    uint8_t *cut = malloc(n ? n : 1);
    memcpy(cut, buf, n);
    enum tr_fb_status rc = verify(cut, n);
    assert_int_not_equal(rc, TR_FB_OK);
    free(cut);
  }
  assert_int_equal(verify(buf, 3), TR_FB_E_TRUNCATED);
  free(buf);
}

static void test_oversized(void **state) {
  size_t len;
  uint8_t *buf = make_event(&len);
  struct tr_fb_limits lim = tr_fb_default_limits;
  lim.max_size = (uint32_t)len - 1;
  struct tr_fb_error err;
  assert_null(troupe_journal_Event_verify_as_root_opts(buf, len, "TRJ1", &lim,
                                                       &err));
  assert_int_equal(err.code, TR_FB_E_OVERSIZED);
  free(buf);
}

static void test_misaligned(void **state) {
  size_t len;
  uint8_t *buf = make_event(&len);
  uint32_t root = tr_fb_read_u32(buf);
  root += 1;
  memcpy(buf, &root, 4);
  assert_int_equal(verify(buf, len), TR_FB_E_ALIGN);
  free(buf);
}

static void test_cyclic(void **state) {
  size_t len;
  uint8_t *buf = make_event(&len);
  /* the run_id offset pointing at itself */
  uint32_t p = field_pos(buf, 2), zero = 0;
  memcpy(buf + p, &zero, 4);
  assert_int_equal(verify(buf, len), TR_FB_E_CYCLE);
  free(buf);
}

static void test_offset_past_end(void **state) {
  size_t len;
  uint8_t *buf = make_event(&len);
  uint32_t p = field_pos(buf, 2), far = (uint32_t)len;
  memcpy(buf + p, &far, 4);
  assert_int_equal(verify(buf, len), TR_FB_E_BOUNDS);
  free(buf);
  /* a string length running past the end */
  buf = make_event(&len);
  p = field_pos(buf, 2);
  uint32_t s = p + tr_fb_read_u32(buf + p), huge = 0x7ffffff0;
  memcpy(buf + s, &huge, 4);
  assert_int_equal(verify(buf, len), TR_FB_E_BOUNDS);
  free(buf);
  /* a vtable outside the buffer */
  buf = make_event(&len);
  uint32_t root = tr_fb_read_u32(buf);
  int32_t so = -(int32_t)len;
  memcpy(buf + root, &so, 4);
  assert_int_equal(verify(buf, len), TR_FB_E_BOUNDS);
  free(buf);
}

static void test_not_nul_terminated(void **state) {
  size_t len;
  uint8_t *buf = make_event(&len);
  uint32_t p = field_pos(buf, 2);
  uint32_t s = p + tr_fb_read_u32(buf + p);
  buf[s + 4 + tr_fb_read_u32(buf + s)] = 'x';
  assert_int_equal(verify(buf, len), TR_FB_E_STRING);
  free(buf);
}

static void test_wrong_identifier(void **state) {
  size_t len;
  uint8_t *buf = make_event(&len);
  /* an event is not a protocol frame */
  struct tr_fb_error err;
  assert_null(troupe_proto_Frame_verify_as_root(buf, len, &err));
  assert_int_equal(err.code, TR_FB_E_IDENT);
  memcpy(buf + 4, "TRP1", 4);
  assert_int_equal(verify(buf, len), TR_FB_E_IDENT);
  free(buf);
}

static void test_union_out_of_range(void **state) {
  size_t len;
  uint8_t *buf = make_event(&len);
  buf[field_pos(buf, 4)] = 200;
  assert_int_equal(verify(buf, len), TR_FB_E_UNION);
  free(buf);
}

static void test_too_deep_and_too_many(void **state) {
  size_t len;
  uint8_t *buf = make_event(&len);
  struct tr_fb_limits lim = tr_fb_default_limits;
  struct tr_fb_error err;
  lim.max_depth = 2; /* Event -> LlmCompleted -> [ToolCall] is deeper */
  assert_null(troupe_journal_Event_verify_as_root_opts(buf, len, "TRJ1", &lim,
                                                       &err));
  assert_int_equal(err.code, TR_FB_E_DEPTH);
  lim = tr_fb_default_limits;
  lim.max_objects = 3;
  assert_null(troupe_journal_Event_verify_as_root_opts(buf, len, "TRJ1", &lim,
                                                       &err));
  assert_int_equal(err.code, TR_FB_E_TOO_MANY);
  free(buf);
}

static void test_required_missing(void **state) {
  struct tr_fb_builder b;
  tr_fb_builder_init(&b);
  tr_fb_table_start(&b, 6); /* an Event without its required run_id */
  tr_fb_add_u64(&b, 0, 1, 0);
  tr_fb_ref r = tr_fb_table_end(&b);
  tr_fb_finish(&b, r, "TRJ1");
  size_t len;
  const uint8_t *d = tr_fb_builder_data(&b, &len);
  struct tr_fb_error err;
  assert_null(troupe_journal_Event_verify_as_root(d, len, &err));
  assert_int_equal(err.code, TR_FB_E_REQUIRED);
  assert_string_equal(err.field, "run_id");
  tr_fb_builder_free(&b);
}

static void test_nested(void **state) {
  size_t elen;
  uint8_t *ev = make_event(&elen);
  struct tr_fb_builder b;
  tr_fb_builder_init(&b);
  tr_fb_ref run = tr_fb_create_str(&b, "r_0001");
  tr_fb_ref bytes = tr_fb_create_bytes(&b, ev, elen);
  troupe_cmd_Append_start(&b);
  troupe_cmd_Append_add_run_id(&b, run);
  troupe_cmd_Append_add_event(&b, bytes);
  troupe_cmd_Append_add_epoch(&b, 2);
  troupe_cmd_Append_add_seq(&b, 7);
  tr_fb_ref ap = troupe_cmd_Append_end(&b);
  tr_fb_ref v = troupe_cmd_AppendBatch_create_appends(&b, &ap, 1);
  troupe_cmd_AppendBatch_start(&b);
  troupe_cmd_AppendBatch_add_appends(&b, v);
  tr_fb_ref batch = troupe_cmd_AppendBatch_end(&b);
  troupe_cmd_Command_start(&b);
  troupe_cmd_Command_add_time_us(&b, 5);
  troupe_cmd_Command_add_op_AppendBatch(&b, batch);
  troupe_cmd_Command_finish_sized(&b, troupe_cmd_Command_end(&b));
  size_t len;
  const uint8_t *d = tr_fb_builder_data(&b, &len);
  assert_int_equal(tr_fb_read_u32(d), len - 4);
  uint8_t *copy = malloc(len);
  memcpy(copy, d, len);
  struct tr_fb_error err;
  const struct troupe_cmd_Command *c =
      troupe_cmd_Command_verify_as_root_sized(copy, len, &err);
  assert_non_null(c);
  const struct troupe_cmd_Append *a = troupe_cmd_AppendBatch_appends_at(
      troupe_cmd_Command_op_as_AppendBatch(c), 0);
  struct tr_fb_vec nb = troupe_cmd_Append_event(a);
  assert_int_equal(nb.len, elen);
  const struct troupe_journal_Event *e = troupe_journal_Event_as_root(nb.data);
  assert_int_equal(troupe_journal_Event_seq(e), 7);
  /* corrupt the nested event's union tag: the outer verify fails */
  size_t at = (size_t)(nb.data - copy) + field_pos(ev, 4);
  copy[at] = 99;
  assert_null(troupe_cmd_Command_verify_as_root_sized(copy, len, &err));
  assert_int_equal(err.code, TR_FB_E_UNION);
  assert_string_equal(err.type, "troupe.journal.Event");
  copy[at] = troupe_journal_Data_LlmCompleted;
  assert_non_null(troupe_cmd_Command_verify_as_root_sized(copy, len, &err));
  /* a size prefix that does not match */
  assert_null(troupe_cmd_Command_verify_as_root_sized(copy, len - 1, &err));
  assert_int_equal(err.code, TR_FB_E_SIZE);
  free(copy);
  free(ev);
  tr_fb_builder_free(&b);
}

static void test_vtable_dedup_and_defaults(void **state) {
  struct tr_fb_builder b;
  tr_fb_builder_init(&b);
  tr_fb_ref r[3];
  /* 4-byte fields only: the same shape every time, one vtable */
  for (int i = 0; i < 3; i++) {
    tr_fb_ref id = tr_fb_create_str(&b, "r_1");
    troupe_proto_GetRun_start(&b);
    troupe_proto_GetRun_add_run_id(&b, id);
    troupe_proto_GetRun_add_wait_s(&b, 10 + (uint32_t)i);
    r[i] = troupe_proto_GetRun_end(&b);
  }
  assert_int_equal(b.nvtables, 1);
  size_t before = b.nvtables;
  tr_fb_ref id = tr_fb_create_str(&b, "r_1");
  troupe_proto_GetRun_start(&b);
  troupe_proto_GetRun_add_run_id(&b, id);
  troupe_proto_GetRun_add_wait_s(&b, 0); /* the default: not written */
  troupe_proto_GetRun_end(&b);
  assert_int_equal(b.nvtables, before + 1);
  tr_fb_builder_reset(&b);
  b.force_defaults = true;
  troupe_journal_AgentConfig_start(&b);
  troupe_journal_AgentConfig_add_max_steps(&b, 50);
  tr_fb_finish(&b, troupe_journal_AgentConfig_end(&b), NULL);
  size_t len;
  const uint8_t *d = tr_fb_builder_data(&b, &len);
  const struct troupe_journal_AgentConfig *ac =
      troupe_journal_AgentConfig_verify_as_root(d, len, NULL);
  assert_non_null(ac);
  assert_true(troupe_journal_AgentConfig_has_max_steps(ac));
  assert_int_equal(troupe_journal_AgentConfig_max_steps(ac), 50);
  assert_false(troupe_journal_AgentConfig_has_temperature(ac));
  assert_true(troupe_journal_AgentConfig_temperature(ac) == 1.0f);
  tr_fb_builder_free(&b);
  (void)r;
}

/* Every single-byte corruption is either accepted or rejected, never a
 * crash or a read outside the buffer (ASan). */
static void test_byte_flips(void **state) {
  size_t len;
  uint8_t *buf = make_event(&len);
  uint8_t *m = malloc(len);
  static const uint8_t vals[] = {0x00, 0x01, 0x7f, 0x80, 0xff};
  int rejected = 0;
  for (size_t i = 0; i < len; i++)
    for (size_t k = 0; k < sizeof vals; k++) {
      memcpy(m, buf, len);
      m[i] = vals[k];
      struct tr_fb_error err;
      const struct troupe_journal_Event *ev =
          troupe_journal_Event_verify_as_root(m, len, &err);
      if (!ev) {
        rejected++;
        continue;
      }
      /* accepted: every reader stays inside the buffer */
      troupe_journal_Event_run_id(ev);
      const struct troupe_journal_LlmCompleted *lc =
          troupe_journal_Event_data_as_LlmCompleted(ev);
      if (lc)
        for (uint32_t j = 0; j < troupe_journal_LlmCompleted_tool_calls_len(lc);
             j++)
          troupe_journal_ToolCall_name(
              troupe_journal_LlmCompleted_tool_calls_at(lc, j));
    }
  assert_true(rejected > 0);
  free(m);
  free(buf);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_valid_and_read),
      cmocka_unit_test(test_truncated),
      cmocka_unit_test(test_oversized),
      cmocka_unit_test(test_misaligned),
      cmocka_unit_test(test_cyclic),
      cmocka_unit_test(test_offset_past_end),
      cmocka_unit_test(test_not_nul_terminated),
      cmocka_unit_test(test_wrong_identifier),
      cmocka_unit_test(test_union_out_of_range),
      cmocka_unit_test(test_too_deep_and_too_many),
      cmocka_unit_test(test_required_missing),
      cmocka_unit_test(test_nested),
      cmocka_unit_test(test_vtable_dedup_and_defaults),
      cmocka_unit_test(test_byte_flips),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
