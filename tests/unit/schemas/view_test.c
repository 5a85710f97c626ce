/* The view readers (N_T_view: a table's vtable resolved once, then every
 * reader on it) against the plain readers, on buffers built by our builder
 * and verified: present fields, absent fields reading as their defaults,
 * required fields, vectors of scalars, strings, structs and tables, unions
 * (every member, a tag without a value, a value without a tag), nested tables
 * and nested buffers, vtables shorter than the schema's field count (a
 * writer that set only the first fields), and required fields of every kind
 * (read without absent checks; the verifier rejects buffers lacking one). The interop test compares the two
 * forms on every table of every schema; this file pins the edge cases. */
#include "fbgen_test_generated.h"
#include "schemas/journal_generated.h"
#include "schemas/protocol_generated.h"

#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

/* A verified copy of the builder's finished buffer (freed by the caller). */
static uint8_t *take(struct tr_fb_builder *b, size_t *len) {
  const uint8_t *d = tr_fb_builder_data(b, len);
  uint8_t *copy = malloc(*len);
  assert_non_null(copy);
  memcpy(copy, d, *len);
  return copy;
}

static bool str_is(struct tr_fb_str s, const char *want) {
  return s.ptr && s.len == strlen(want) && !memcmp(s.ptr, want, s.len) &&
         s.ptr[s.len] == 0;
}

static bool str_same(struct tr_fb_str a, struct tr_fb_str b) {
  return a.ptr == b.ptr && a.len == b.len;
}

/* An llm.completed event: two tool calls (the second without arguments),
 * usage without cost, no content. */
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
  tr_fb_ref nm2 = tr_fb_create_str(&b, "fetch");
  troupe_journal_ToolCall_start(&b);
  troupe_journal_ToolCall_add_id(&b, id2);
  troupe_journal_ToolCall_add_name(&b, nm2);
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
  troupe_journal_LlmCompleted_add_latency_us(&b, 987654321);
  tr_fb_ref data = troupe_journal_LlmCompleted_end(&b);
  tr_fb_ref run = tr_fb_create_str(&b, "r_0001");
  troupe_journal_Event_start(&b);
  troupe_journal_Event_add_seq(&b, 7);
  troupe_journal_Event_add_time_us(&b, -1700000000000000);
  troupe_journal_Event_add_run_id(&b, run);
  troupe_journal_Event_add_epoch(&b, 2);
  troupe_journal_Event_add_data_LlmCompleted(&b, data);
  troupe_journal_Event_finish(&b, troupe_journal_Event_end(&b));
  uint8_t *copy = take(&b, len);
  tr_fb_builder_free(&b);
  return copy;
}

static void test_event(void **state) {
  size_t len;
  uint8_t *buf = make_event(&len);
  const struct troupe_journal_Event *ev =
      troupe_journal_Event_verify_as_root(buf, len, NULL);
  assert_non_null(ev);
  struct troupe_journal_Event_view e = troupe_journal_Event_view(ev);
  /* scalars, a required string */
  assert_true(troupe_journal_Event_view_seq(&e) == 7);
  assert_true(troupe_journal_Event_view_time_us(&e) == -1700000000000000);
  assert_true(troupe_journal_Event_view_epoch(&e) == 2);
  assert_true(troupe_journal_Event_view_has_run_id(&e));
  assert_true(str_is(troupe_journal_Event_view_run_id(&e), "r_0001"));
  assert_true(str_same(troupe_journal_Event_view_run_id(&e),
                       troupe_journal_Event_run_id(ev)));
  /* the union: its tag, the member, every other member NULL */
  assert_int_equal(troupe_journal_Event_view_data_type(&e),
                   troupe_journal_Data_LlmCompleted);
  const struct troupe_journal_LlmCompleted *lcp =
      troupe_journal_Event_view_data_as_LlmCompleted(&e);
  assert_non_null(lcp);
  assert_ptr_equal(lcp, troupe_journal_Event_data_as_LlmCompleted(ev));
  assert_ptr_equal(troupe_journal_Event_view_data(&e), lcp);
  assert_null(troupe_journal_Event_view_data_as_RunCreated(&e));
  assert_null(troupe_journal_Event_view_data_as_LlmRequested(&e));
  assert_null(troupe_journal_Event_view_data_as_LoopDetected(&e));

  struct troupe_journal_LlmCompleted_view lc =
      troupe_journal_LlmCompleted_view(lcp);
  assert_int_equal(troupe_journal_LlmCompleted_view_step(&lc), 3);
  assert_true(str_is(troupe_journal_LlmCompleted_view_model(&lc),
                     "gpt-4o-mini"));
  assert_int_equal(troupe_journal_LlmCompleted_view_finish_reason(&lc),
                   troupe_journal_FinishReason_ToolCalls);
  assert_true(troupe_journal_LlmCompleted_view_latency_us(&lc) == 987654321);
  /* absent: a string is {NULL, 0}, scalars their defaults */
  assert_false(troupe_journal_LlmCompleted_view_has_content(&lc));
  struct tr_fb_str content = troupe_journal_LlmCompleted_view_content(&lc);
  assert_null(content.ptr);
  assert_int_equal(content.len, 0);
  assert_false(troupe_journal_LlmCompleted_view_has_latency_ms(&lc));
  assert_int_equal(troupe_journal_LlmCompleted_view_latency_ms(&lc), 0);
  assert_int_equal(troupe_journal_LlmCompleted_view_attempt(&lc), 0);
  assert_null(troupe_journal_LlmCompleted_view_provider_request_id(&lc).ptr);

  /* a nested table */
  const struct troupe_journal_Usage *up =
      troupe_journal_LlmCompleted_view_usage(&lc);
  assert_non_null(up);
  assert_ptr_equal(up, troupe_journal_LlmCompleted_usage(lcp));
  struct troupe_journal_Usage_view u = troupe_journal_Usage_view(up);
  assert_true(troupe_journal_Usage_view_prompt_tokens(&u) == 1200);
  assert_true(troupe_journal_Usage_view_completion_tokens(&u) == 80);
  assert_false(troupe_journal_Usage_view_has_cost_micro_usd(&u));
  assert_true(troupe_journal_Usage_view_cost_micro_usd(&u) == 0);

  /* a vector of tables, each with required strings */
  assert_int_equal(troupe_journal_LlmCompleted_view_tool_calls_len(&lc), 2);
  struct tr_fb_vec calls = troupe_journal_LlmCompleted_view_tool_calls(&lc);
  struct tr_fb_vec calls_plain = troupe_journal_LlmCompleted_tool_calls(lcp);
  assert_ptr_equal(calls.data, calls_plain.data);
  assert_int_equal(calls.len, calls_plain.len);
  const char *ids[] = {"call_1", "call_2"}, *names[] = {"search", "fetch"};
  for (uint32_t i = 0; i < 2; i++) {
    const struct troupe_journal_ToolCall *tcp =
        troupe_journal_LlmCompleted_view_tool_calls_at(&lc, i);
    assert_ptr_equal(tcp, tr_fb_vec_table(calls, i));
    struct troupe_journal_ToolCall_view tc = troupe_journal_ToolCall_view(tcp);
    assert_true(str_is(troupe_journal_ToolCall_view_id(&tc), ids[i]));
    assert_true(str_is(troupe_journal_ToolCall_view_name(&tc), names[i]));
    assert_int_equal(troupe_journal_ToolCall_view_has_arguments(&tc), i == 0);
  }
  /* past the end */
  assert_null(troupe_journal_LlmCompleted_view_tool_calls_at(&lc, 2));
  free(buf);
}

/* A writer that set only the first field of Usage: the vtable has one slot,
 * the other fields lie past its end and must read as absent. */
static void test_short_vtable(void **state) {
  struct tr_fb_builder b;
  tr_fb_builder_init(&b);
  troupe_journal_Usage_start(&b);
  troupe_journal_Usage_add_prompt_tokens(&b, 5);
  tr_fb_finish(&b, troupe_journal_Usage_end(&b), NULL);
  size_t len;
  uint8_t *buf = take(&b, &len);
  const struct troupe_journal_Usage *up =
      troupe_journal_Usage_verify_as_root_opts(buf, len, NULL, NULL, NULL);
  assert_non_null(up);
  struct troupe_journal_Usage_view u = troupe_journal_Usage_view(up);
  assert_int_equal(u.v.vt_len, 4 + 2 * 1);
  assert_true(troupe_journal_Usage_view_prompt_tokens(&u) == 5);
  assert_false(troupe_journal_Usage_view_has_completion_tokens(&u));
  assert_true(troupe_journal_Usage_view_completion_tokens(&u) == 0);
  assert_true(troupe_journal_Usage_view_cost_micro_usd(&u) == 0);
  free(buf);

  /* an empty AgentConfig: every field past the vtable, defaults not zero */
  tr_fb_builder_reset(&b);
  troupe_journal_AgentConfig_start(&b);
  tr_fb_finish(&b, troupe_journal_AgentConfig_end(&b), NULL);
  buf = take(&b, &len);
  const struct troupe_journal_AgentConfig *ap =
      troupe_journal_AgentConfig_verify_as_root_opts(buf, len, NULL, NULL,
                                                     NULL);
  assert_non_null(ap);
  struct troupe_journal_AgentConfig_view a = troupe_journal_AgentConfig_view(ap);
  assert_int_equal(a.v.vt_len, 4);
  assert_int_equal(troupe_journal_AgentConfig_view_max_steps(&a), 50);
  assert_true(troupe_journal_AgentConfig_view_temperature(&a) == 1.0f);
  assert_int_equal(troupe_journal_AgentConfig_view_tools_len(&a), 0);
  assert_null(troupe_journal_AgentConfig_view_tools(&a).data);
  assert_null(troupe_journal_AgentConfig_view_tools_at(&a, 0).ptr);
  assert_null(troupe_journal_AgentConfig_view_model(&a).ptr);
  free(buf);

  /* an Event without data: the union's slots lie past the vtable */
  tr_fb_builder_reset(&b);
  tr_fb_ref run = tr_fb_create_str(&b, "r_2");
  troupe_journal_Event_start(&b);
  troupe_journal_Event_add_run_id(&b, run);
  troupe_journal_Event_finish(&b, troupe_journal_Event_end(&b));
  buf = take(&b, &len);
  const struct troupe_journal_Event *ev =
      troupe_journal_Event_verify_as_root(buf, len, NULL);
  assert_non_null(ev);
  struct troupe_journal_Event_view e = troupe_journal_Event_view(ev);
  assert_true(e.v.vt_len < 4 + 2 * 5);
  assert_int_equal(troupe_journal_Event_view_data_type(&e),
                   troupe_journal_Data_NONE);
  assert_null(troupe_journal_Event_view_data(&e));
  assert_null(troupe_journal_Event_view_data_as_RunCancelled(&e));
  assert_true(str_is(troupe_journal_Event_view_run_id(&e), "r_2"));
  free(buf);
  tr_fb_builder_free(&b);
}

/* Unions written oddly: a tag without a value (the verifier refuses it,
 * stricter than Google's, and N_T_end will not write it: the member readers
 * rely on both, schemas.h tr_fb_union_at), and a value without a tag
 * (verifies; there is no member to read). */
static void test_union_halves(void **state) {
  struct tr_fb_builder b;
  tr_fb_builder_init(&b);
  tr_fb_ref run = tr_fb_create_str(&b, "r_3");
  tr_fb_table_start(&b, 6); /* Event_end would abort, as test_union_end shows */
  troupe_journal_Event_add_run_id(&b, run);
  troupe_journal_Event_add_data_type(&b, troupe_journal_Data_RunCancelled);
  troupe_journal_Event_finish(&b, tr_fb_table_end(&b));
  size_t len;
  uint8_t *buf = take(&b, &len);
  struct tr_fb_error err;
  assert_null(troupe_journal_Event_verify_as_root(buf, len, &err));
  assert_int_equal(err.code, TR_FB_E_UNION_VALUE);
  assert_string_equal(err.field, "data");
  free(buf);

  tr_fb_builder_reset(&b);
  troupe_journal_RunCancelled_start(&b);
  tr_fb_ref data = troupe_journal_RunCancelled_end(&b);
  run = tr_fb_create_str(&b, "r_4");
  troupe_journal_Event_start(&b);
  troupe_journal_Event_add_run_id(&b, run);
  troupe_journal_Event_add_data(&b, data); /* no tag */
  troupe_journal_Event_finish(&b, troupe_journal_Event_end(&b));
  buf = take(&b, &len);
  const struct troupe_journal_Event *ev =
      troupe_journal_Event_verify_as_root(buf, len, NULL);
  assert_non_null(ev);
  struct troupe_journal_Event_view e = troupe_journal_Event_view(ev);
  assert_int_equal(troupe_journal_Event_view_data_type(&e),
                   troupe_journal_Data_NONE);
  assert_null(troupe_journal_Event_view_data_as_RunCancelled(&e));
  assert_null(troupe_journal_Event_data_as_RunCancelled(ev));
  /* the raw value is there, as with the plain reader */
  assert_non_null(troupe_journal_Event_view_data(&e));
  assert_ptr_equal(troupe_journal_Event_view_data(&e),
                   troupe_journal_Event_data(ev));
  free(buf);
  tr_fb_builder_free(&b);
}

/* Optional fields at or before a required one are read without the vtable's
 * size check (tr_fb_field_in): present, absent inside the vtable, and after
 * the required field (tail: checked, past the vtable when unset). */
static void test_covered(void **state) {
  struct tr_fb_builder b;
  tr_fb_builder_init(&b);
  tr_fb_ref ln = tr_fb_create_str(&b, "leaf");
  fbgen_test_Leaf_start(&b);
  fbgen_test_Leaf_add_n(&b, 3);
  fbgen_test_Leaf_add_name(&b, ln);
  tr_fb_ref leaf = fbgen_test_Leaf_end(&b);
  fbgen_test_Leaf_start(&b);
  tr_fb_ref picked = fbgen_test_Leaf_end(&b);
  static const int32_t nums[] = {4, -5};
  tr_fb_ref vnums = fbgen_test_Covered_create_nums(&b, nums, 2);
  tr_fb_ref str = tr_fb_create_str(&b, "s!"), key = tr_fb_create_str(&b, "k");
  tr_fb_ref tail = tr_fb_create_str(&b, "tail");
  struct fbgen_test_Outer pos = {.x = 2, .inner = {.a = 1, .b = 9}};
  fbgen_test_Covered_start(&b);
  fbgen_test_Covered_add_n(&b, 9);
  fbgen_test_Covered_add_s(&b, str);
  fbgen_test_Covered_add_leaf(&b, leaf);
  fbgen_test_Covered_add_nums(&b, vnums);
  fbgen_test_Covered_add_pos(&b, &pos);
  fbgen_test_Covered_add_pick_Leaf(&b, picked);
  fbgen_test_Covered_add_key(&b, key);
  fbgen_test_Covered_add_tail(&b, tail);
  tr_fb_finish(&b, fbgen_test_Covered_end(&b), NULL);
  size_t len;
  uint8_t *buf = take(&b, &len);
  const struct fbgen_test_Covered *c =
      fbgen_test_Covered_verify_as_root_opts(buf, len, NULL, NULL, NULL);
  assert_non_null(c);
  struct fbgen_test_Covered_view v = fbgen_test_Covered_view(c);
  assert_int_equal(fbgen_test_Covered_n(c), 9);
  assert_int_equal(fbgen_test_Covered_view_n(&v), 9);
  assert_true(str_is(fbgen_test_Covered_s(c), "s!"));
  assert_true(str_is(fbgen_test_Covered_view_s(&v), "s!"));
  assert_int_equal(fbgen_test_Leaf_n(fbgen_test_Covered_leaf(c)), 3);
  assert_ptr_equal(fbgen_test_Covered_view_leaf(&v), fbgen_test_Covered_leaf(c));
  assert_int_equal(fbgen_test_Covered_nums_len(c), 2);
  assert_int_equal(fbgen_test_Covered_view_nums_at(&v, 1), -5);
  assert_int_equal(fbgen_test_Covered_pos(c).inner.b, 9);
  assert_int_equal(fbgen_test_Covered_view_pos(&v).x, 2);
  assert_int_equal(fbgen_test_Covered_view_pick_type(&v), fbgen_test_Pick_Leaf);
  assert_non_null(fbgen_test_Covered_view_pick_as_Leaf(&v));
  assert_ptr_equal(fbgen_test_Covered_pick_as_Leaf(c),
                   fbgen_test_Covered_view_pick_as_Leaf(&v));
  assert_null(fbgen_test_Covered_view_pick_as_Root(&v));
  assert_true(str_is(fbgen_test_Covered_view_tail(&v), "tail"));
  free(buf);

  /* only the required key: everything before it absent inside the vtable,
   * the vtable ending at key's slot */
  tr_fb_builder_reset(&b);
  key = tr_fb_create_str(&b, "k2");
  fbgen_test_Covered_start(&b);
  fbgen_test_Covered_add_key(&b, key);
  tr_fb_finish(&b, fbgen_test_Covered_end(&b), NULL);
  buf = take(&b, &len);
  c = fbgen_test_Covered_verify_as_root_opts(buf, len, NULL, NULL, NULL);
  assert_non_null(c);
  v = fbgen_test_Covered_view(c);
  assert_int_equal(v.v.vt_len, 4 + 2 * 8);
  for (int form = 0; form < 2; form++) {
    bool view = form == 1;
    assert_int_equal(view ? fbgen_test_Covered_view_n(&v) : fbgen_test_Covered_n(c), 5);
    assert_false(view ? fbgen_test_Covered_view_has_s(&v) : fbgen_test_Covered_has_s(c));
    assert_null((view ? fbgen_test_Covered_view_s(&v) : fbgen_test_Covered_s(c)).ptr);
    assert_null(view ? fbgen_test_Covered_view_leaf(&v) : fbgen_test_Covered_leaf(c));
    assert_int_equal(view ? fbgen_test_Covered_view_nums_len(&v)
                          : fbgen_test_Covered_nums_len(c), 0);
    assert_int_equal((view ? fbgen_test_Covered_view_pos(&v) : fbgen_test_Covered_pos(c)).x, 0);
    assert_null(view ? fbgen_test_Covered_view_pick(&v) : fbgen_test_Covered_pick(c));
    assert_null(view ? fbgen_test_Covered_view_pick_as_Leaf(&v)
                     : fbgen_test_Covered_pick_as_Leaf(c));
    assert_true(str_is(view ? fbgen_test_Covered_view_key(&v) : fbgen_test_Covered_key(c), "k2"));
    assert_null((view ? fbgen_test_Covered_view_tail(&v) : fbgen_test_Covered_tail(c)).ptr);
  }
  free(buf);
  tr_fb_builder_free(&b);
}

/* Runs build(b) in a child; true when the child died of SIGABRT. */
static bool aborts(void (*build)(struct tr_fb_builder *, int), int arg) {
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    int fd = open("/dev/null", O_WRONLY);
    if (fd >= 0)
      dup2(fd, STDERR_FILENO); /* the abort's message is expected */
    struct tr_fb_builder b;
    tr_fb_builder_init(&b);
    build(&b, arg);
    tr_fb_builder_free(&b);
    _exit(0);
  }
  int st = 0;
  assert_int_equal(waitpid(pid, &st, 0), pid);
  return WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT;
}

/* An Event whose union has: 0 tag and value, 1 a member tag alone, 2 the
 * tag NONE written explicitly (force_defaults) and no value, 3 nothing. */
static void build_event_union(struct tr_fb_builder *b, int how) {
  tr_fb_ref data = 0;
  if (how == 0) {
    troupe_journal_RunCancelled_start(b);
    data = troupe_journal_RunCancelled_end(b);
  }
  tr_fb_ref run = tr_fb_create_str(b, "r_5");
  b->force_defaults = how == 2;
  troupe_journal_Event_start(b);
  troupe_journal_Event_add_run_id(b, run);
  if (how == 0)
    troupe_journal_Event_add_data_RunCancelled(b, data);
  else if (how == 1)
    troupe_journal_Event_add_data_type(b, troupe_journal_Data_RunCancelled);
  else if (how == 2)
    troupe_journal_Event_add_data_type(b, troupe_journal_Data_NONE);
  troupe_journal_Event_finish(b, troupe_journal_Event_end(b));
}

/* N_T_end refuses a member tag without its value, as the verifier does, and
 * nothing else about a union. Also a member added with a missing value
 * (ref 0) is such a tag. */
static void build_member_ref0(struct tr_fb_builder *b, int unused) {
  (void)unused;
  tr_fb_ref run = tr_fb_create_str(b, "r_6");
  troupe_journal_Event_start(b);
  troupe_journal_Event_add_run_id(b, run);
  troupe_journal_Event_add_data_RunCancelled(b, 0);
  troupe_journal_Event_end(b);
}

static void test_union_end(void **state) {
  assert_false(aborts(build_event_union, 0));
  assert_true(aborts(build_event_union, 1));
  assert_false(aborts(build_event_union, 2));
  assert_false(aborts(build_event_union, 3));
  assert_true(aborts(build_member_ref0, 0));
  /* and what it lets through verifies */
  static const int fine[] = {0, 2, 3};
  for (size_t k = 0; k < sizeof fine / sizeof fine[0]; k++) {
    int how = fine[k];
    struct tr_fb_builder b;
    tr_fb_builder_init(&b);
    build_event_union(&b, how);
    size_t len;
    uint8_t *buf = take(&b, &len);
    const struct troupe_journal_Event *ev =
        troupe_journal_Event_verify_as_root(buf, len, NULL);
    assert_non_null(ev);
    struct troupe_journal_Event_view e = troupe_journal_Event_view(ev);
    if (how == 0) {
      assert_non_null(troupe_journal_Event_view_data_as_RunCancelled(&e));
      assert_ptr_equal(troupe_journal_Event_view_data_as_RunCancelled(&e),
                       troupe_journal_Event_data_as_RunCancelled(ev));
    } else {
      assert_null(troupe_journal_Event_view_data_as_RunCancelled(&e));
      assert_null(troupe_journal_Event_data_as_RunCancelled(ev));
    }
    free(buf);
    tr_fb_builder_free(&b);
  }
}

/* The protocol frame of bench/schemas, size-prefixed as on the wire: unions
 * two levels deep, a nested table from another schema, a vector of
 * strings. */
static void test_frame(void **state) {
  struct tr_fb_builder b;
  tr_fb_builder_init(&b);
  const char *tool_names[] = {"web_search", "http_get", "draft_po"};
  tr_fb_ref tl[3];
  for (int i = 0; i < 3; i++)
    tl[i] = tr_fb_create_str(&b, tool_names[i]);
  tr_fb_ref tools = troupe_journal_AgentConfig_create_tools(&b, tl, 3);
  tr_fb_ref model = tr_fb_create_str(&b, "m1");
  troupe_journal_AgentConfig_start(&b);
  troupe_journal_AgentConfig_add_model(&b, model);
  troupe_journal_AgentConfig_add_tools(&b, tools);
  troupe_journal_AgentConfig_add_max_steps(&b, 30);
  troupe_journal_AgentConfig_add_max_cost_usd(&b, 2.5);
  tr_fb_ref agent = troupe_journal_AgentConfig_end(&b);
  tr_fb_ref goal = tr_fb_create_str(&b, "find bearings");
  troupe_proto_CreateRun_start(&b);
  troupe_proto_CreateRun_add_goal(&b, goal);
  troupe_proto_CreateRun_add_agent(&b, agent);
  tr_fb_ref cr = troupe_proto_CreateRun_end(&b);
  troupe_proto_Request_start(&b);
  troupe_proto_Request_add_id(&b, 17);
  troupe_proto_Request_add_op_CreateRun(&b, cr);
  tr_fb_ref rq = troupe_proto_Request_end(&b);
  troupe_proto_Frame_start(&b);
  troupe_proto_Frame_add_body_Request(&b, rq);
  tr_fb_finish_sized(&b, troupe_proto_Frame_end(&b),
                     troupe_proto_Frame_IDENTIFIER);
  size_t len;
  uint8_t *buf = take(&b, &len);
  struct tr_fb_error err;
  const struct troupe_proto_Frame *fp =
      troupe_proto_Frame_verify_as_root_sized(buf, len, &err);
  assert_non_null(fp);
  struct troupe_proto_Frame_view f = troupe_proto_Frame_view(fp);
  assert_null(troupe_proto_Frame_view_body_as_Response(&f));
  assert_null(troupe_proto_Frame_view_body_as_EventPush(&f));
  const struct troupe_proto_Request *rqp =
      troupe_proto_Frame_view_body_as_Request(&f);
  assert_non_null(rqp);
  struct troupe_proto_Request_view r = troupe_proto_Request_view(rqp);
  assert_true(troupe_proto_Request_view_id(&r) == 17);
  assert_false(troupe_proto_Request_view_has_api_key(&r));
  assert_int_equal(troupe_proto_Request_view_op_type(&r),
                   troupe_proto_Op_CreateRun);
  assert_null(troupe_proto_Request_view_op_as_Auth(&r));
  const struct troupe_proto_CreateRun *crp =
      troupe_proto_Request_view_op_as_CreateRun(&r);
  assert_non_null(crp);
  struct troupe_proto_CreateRun_view c = troupe_proto_CreateRun_view(crp);
  assert_true(str_is(troupe_proto_CreateRun_view_goal(&c), "find bearings"));
  assert_null(troupe_proto_CreateRun_view_metadata(&c).ptr);
  const struct troupe_journal_AgentConfig *ap =
      troupe_proto_CreateRun_view_agent(&c);
  assert_non_null(ap);
  struct troupe_journal_AgentConfig_view a = troupe_journal_AgentConfig_view(ap);
  assert_true(str_is(troupe_journal_AgentConfig_view_model(&a), "m1"));
  assert_int_equal(troupe_journal_AgentConfig_view_max_steps(&a), 30);
  assert_true(troupe_journal_AgentConfig_view_max_cost_usd(&a) == 2.5);
  assert_true(troupe_journal_AgentConfig_view_max_tokens(&a) == 0);
  assert_true(troupe_journal_AgentConfig_view_temperature(&a) == 1.0f);
  assert_int_equal(troupe_journal_AgentConfig_view_tools_len(&a), 3);
  for (uint32_t i = 0; i < 3; i++) {
    assert_true(str_is(troupe_journal_AgentConfig_view_tools_at(&a, i),
                       tool_names[i]));
    assert_true(str_same(troupe_journal_AgentConfig_view_tools_at(&a, i),
                         troupe_journal_AgentConfig_tools_at(ap, i)));
  }
  assert_null(troupe_journal_AgentConfig_view_tools_at(&a, 3).ptr);
  free(buf);
  tr_fb_builder_free(&b);
}

/* fbgen_test.fbs: the default of every scalar type, structs, vectors of
 * structs and of bytes, a nested buffer. */
static void test_defaults_structs_nested(void **state) {
  struct tr_fb_builder b;
  tr_fb_builder_init(&b);
  fbgen_test_Root_start(&b);
  fbgen_test_Root_finish(&b, fbgen_test_Root_end(&b));
  size_t len;
  uint8_t *buf = take(&b, &len);
  const struct fbgen_test_Root *r = fbgen_test_Root_verify_as_root(buf, len, NULL);
  assert_non_null(r);
  struct fbgen_test_Root_view v = fbgen_test_Root_view(r);
  assert_true(fbgen_test_Root_view_b(&v));
  assert_int_equal(fbgen_test_Root_view_i8(&v), -1);
  assert_int_equal(fbgen_test_Root_view_u16(&v), 65535);
  assert_true(fbgen_test_Root_view_i64(&v) == INT64_C(-9000000000));
  assert_true(fbgen_test_Root_view_u64(&v) == UINT64_C(9000000000000000000));
  assert_true(fbgen_test_Root_view_f(&v) == 1.5f);
  assert_true(fbgen_test_Root_view_d(&v) == -2.25);
  assert_int_equal(fbgen_test_Root_view_color(&v), fbgen_test_Color_Blue);
  struct fbgen_test_Outer zero, o = fbgen_test_Root_view_outer(&v);
  memset(&zero, 0, sizeof zero);
  assert_memory_equal(&o, &zero, sizeof o);
  assert_int_equal(fbgen_test_Root_view_outers_len(&v), 0);
  o = fbgen_test_Root_view_outers_at(&v, 0);
  assert_memory_equal(&o, &zero, sizeof o);
  assert_null(fbgen_test_Root_view_leaf(&v));
  assert_int_equal(fbgen_test_Root_view_payload_len(&v), 0);
  free(buf);

  /* present: structs, a vector of structs, a table, a nested buffer */
  struct tr_fb_builder nb;
  tr_fb_builder_init(&nb);
  tr_fb_ref lname = tr_fb_create_str(&nb, "inner leaf");
  fbgen_test_Leaf_start(&nb);
  fbgen_test_Leaf_add_n(&nb, 42);
  fbgen_test_Leaf_add_name(&nb, lname);
  tr_fb_finish(&nb, fbgen_test_Leaf_end(&nb), NULL);
  size_t nlen;
  const uint8_t *nd = tr_fb_builder_data(&nb, &nlen);
  tr_fb_builder_reset(&b);
  struct fbgen_test_Outer os[2] = {
      {.x = -3, .inner = {.a = 9, .b = -5}, .c = fbgen_test_Color_Red},
      {.x = 4, .inner = {.a = 1, .b = INT64_MAX}, .c = fbgen_test_Color_Green}};
  struct fbgen_test_Wide wd = {.v = 77};
  tr_fb_ref outs = fbgen_test_Root_create_outers(&b, os, 2);
  tr_fb_ref payload = tr_fb_create_bytes(&b, nd, nlen);
  tr_fb_ref leaf_name = tr_fb_create_str(&b, "leaf");
  fbgen_test_Leaf_start(&b);
  fbgen_test_Leaf_add_name(&b, leaf_name);
  tr_fb_ref leaf = fbgen_test_Leaf_end(&b);
  fbgen_test_Root_start(&b);
  fbgen_test_Root_add_leaf(&b, leaf);
  fbgen_test_Root_add_payload(&b, payload);
  fbgen_test_Root_add_outer(&b, &os[0]);
  fbgen_test_Root_add_wide(&b, &wd);
  fbgen_test_Root_add_outers(&b, outs);
  fbgen_test_Root_add_b(&b, false);
  fbgen_test_Root_add_color(&b, fbgen_test_Color_Black);
  fbgen_test_Root_finish(&b, fbgen_test_Root_end(&b));
  buf = take(&b, &len);
  r = fbgen_test_Root_verify_as_root(buf, len, NULL);
  assert_non_null(r);
  v = fbgen_test_Root_view(r);
  assert_false(fbgen_test_Root_view_b(&v));
  assert_int_equal(fbgen_test_Root_view_color(&v), fbgen_test_Color_Black);
  o = fbgen_test_Root_view_outer(&v);
  assert_memory_equal(&o, &os[0], sizeof o);
  assert_int_equal(fbgen_test_Root_view_wide(&v).v, 77);
  assert_int_equal(fbgen_test_Root_view_outers_len(&v), 2);
  for (uint32_t i = 0; i < 2; i++) {
    o = fbgen_test_Root_view_outers_at(&v, i);
    assert_memory_equal(&o, &os[i], sizeof o);
  }
  o = fbgen_test_Root_view_outers_at(&v, 2);
  assert_memory_equal(&o, &zero, sizeof o);
  /* a table whose n is absent: its default, -7 */
  const struct fbgen_test_Leaf *lp = fbgen_test_Root_view_leaf(&v);
  assert_non_null(lp);
  struct fbgen_test_Leaf_view lv = fbgen_test_Leaf_view(lp);
  assert_int_equal(fbgen_test_Leaf_view_n(&lv), -7);
  assert_true(str_is(fbgen_test_Leaf_view_name(&lv), "leaf"));
  /* the nested buffer, byte by byte, then its root through a view */
  assert_int_equal(fbgen_test_Root_view_payload_len(&v), nlen);
  for (uint32_t i = 0; i < nlen; i++)
    assert_int_equal(fbgen_test_Root_view_payload_at(&v, i), nd[i]);
  assert_int_equal(fbgen_test_Root_view_payload_at(&v, (uint32_t)nlen), 0);
  struct tr_fb_vec pv = fbgen_test_Root_view_payload(&v);
  struct fbgen_test_Leaf_view nl =
      fbgen_test_Leaf_view(fbgen_test_Leaf_as_root(pv.data));
  assert_int_equal(fbgen_test_Leaf_view_n(&nl), 42);
  assert_true(str_is(fbgen_test_Leaf_view_name(&nl), "inner leaf"));
  free(buf);
  tr_fb_builder_free(&nb);
  tr_fb_builder_free(&b);
}

/* Required fields are read without absent checks (tr_fb_field_req): what
 * makes that safe is that no buffer a reader may see lacks one. Every kind
 * of required field (struct, table, string, vectors of strings, tables,
 * bytes, scalars and structs) reads the same through the plain and the view
 * readers; a buffer missing any one of them, its slot 0 inside the vtable or
 * past a vtable that ends early, is rejected by the verifier naming it. */
#define REQ_FIELDS 8 /* ids 1..8; id 0 (opt) is optional */

/* A Req with the fields whose bit is set in `have` (bit id), written with
 * the runtime's primitives so that required ones can be left out (Req_end
 * would abort). */
static uint8_t *make_req(unsigned have, size_t *len) {
  static const char *names[] = {"n0", "n1", "n2"};
  static const uint8_t bytes[] = {1, 2, 3, 4, 5};
  static const int32_t nums[] = {-1, 7, INT32_MAX};
  struct fbgen_test_Wide wides[2] = {{.v = 11}, {.v = 12}};
  struct fbgen_test_Outer s = {.x = -9, .inner = {.a = 3, .b = -4},
                               .c = fbgen_test_Color_Green};
  struct tr_fb_builder b;
  tr_fb_builder_init(&b);
  tr_fb_ref leaves[2];
  for (int i = 0; i < 2; i++) {
    tr_fb_ref ln = tr_fb_create_str(&b, names[i]);
    fbgen_test_Leaf_start(&b);
    fbgen_test_Leaf_add_n(&b, 100 + i);
    fbgen_test_Leaf_add_name(&b, ln);
    leaves[i] = fbgen_test_Leaf_end(&b);
  }
  tr_fb_ref sv[3];
  for (int i = 0; i < 3; i++)
    sv[i] = tr_fb_create_str(&b, names[i]);
  tr_fb_ref vnames = fbgen_test_Req_create_names(&b, sv, 3);
  tr_fb_ref vleaves = fbgen_test_Req_create_leaves(&b, leaves, 2);
  tr_fb_ref vbytes = tr_fb_create_bytes(&b, bytes, sizeof bytes);
  tr_fb_ref vnums = fbgen_test_Req_create_nums(&b, nums, 3);
  tr_fb_ref vwides = fbgen_test_Req_create_wides(&b, wides, 2);
  tr_fb_ref name = tr_fb_create_str(&b, "required name");
  tr_fb_table_start(&b, 1 + REQ_FIELDS);
  fbgen_test_Req_add_opt(&b, 6);
  if (have & 1u << 1)
    fbgen_test_Req_add_s(&b, &s);
  if (have & 1u << 2)
    fbgen_test_Req_add_leaf(&b, leaves[0]);
  if (have & 1u << 3)
    fbgen_test_Req_add_name(&b, name);
  if (have & 1u << 4)
    fbgen_test_Req_add_names(&b, vnames);
  if (have & 1u << 5)
    fbgen_test_Req_add_leaves(&b, vleaves);
  if (have & 1u << 6)
    fbgen_test_Req_add_bytes(&b, vbytes);
  if (have & 1u << 7)
    fbgen_test_Req_add_nums(&b, vnums);
  if (have & 1u << 8)
    fbgen_test_Req_add_wides(&b, vwides);
  tr_fb_finish(&b, tr_fb_table_end(&b), NULL);
  uint8_t *copy = take(&b, len);
  tr_fb_builder_free(&b);
  return copy;
}

static void test_required(void **state) {
  const unsigned all = ((1u << REQ_FIELDS) - 1) << 1;
  size_t len;
  uint8_t *buf = make_req(all, &len);
  struct tr_fb_error err;
  const struct fbgen_test_Req *r =
      fbgen_test_Req_verify_as_root_opts(buf, len, NULL, NULL, &err);
  assert_non_null(r);
  struct fbgen_test_Req_view v = fbgen_test_Req_view(r);
  assert_int_equal(fbgen_test_Req_opt(r), 6);
  assert_int_equal(fbgen_test_Req_view_opt(&v), 6);

  struct fbgen_test_Outer s = fbgen_test_Req_s(r), sv = fbgen_test_Req_view_s(&v);
  assert_int_equal(s.x, -9);
  assert_int_equal(s.inner.a, 3);
  assert_true(s.inner.b == -4);
  assert_int_equal(s.c, fbgen_test_Color_Green);
  assert_memory_equal(&s, &sv, sizeof s);
  assert_true(fbgen_test_Req_has_s(r) && fbgen_test_Req_view_has_s(&v));

  const struct fbgen_test_Leaf *lp = fbgen_test_Req_leaf(r);
  assert_ptr_equal(lp, fbgen_test_Req_view_leaf(&v));
  assert_int_equal(fbgen_test_Leaf_n(lp), 100);
  assert_true(str_is(fbgen_test_Leaf_name(lp), "n0"));

  assert_true(str_is(fbgen_test_Req_name(r), "required name"));
  assert_true(str_same(fbgen_test_Req_name(r), fbgen_test_Req_view_name(&v)));

  assert_int_equal(fbgen_test_Req_names_len(r), 3);
  assert_int_equal(fbgen_test_Req_view_names_len(&v), 3);
  const char *want[] = {"n0", "n1", "n2"};
  for (uint32_t i = 0; i < 3; i++) {
    assert_true(str_is(fbgen_test_Req_names_at(r, i), want[i]));
    assert_true(str_same(fbgen_test_Req_view_names_at(&v, i),
                         fbgen_test_Req_names_at(r, i)));
  }
  assert_null(fbgen_test_Req_view_names_at(&v, 3).ptr);

  assert_int_equal(fbgen_test_Req_view_leaves_len(&v), 2);
  for (uint32_t i = 0; i < 2; i++) {
    const struct fbgen_test_Leaf *e = fbgen_test_Req_view_leaves_at(&v, i);
    assert_ptr_equal(e, fbgen_test_Req_leaves_at(r, i));
    assert_int_equal(fbgen_test_Leaf_n(e), 100 + (int)i);
  }
  assert_ptr_equal(fbgen_test_Req_view_leaves_at(&v, 0), lp);
  assert_null(fbgen_test_Req_view_leaves_at(&v, 2));

  struct tr_fb_vec bv = fbgen_test_Req_view_bytes(&v);
  assert_ptr_equal(bv.data, fbgen_test_Req_bytes(r).data);
  assert_int_equal(bv.len, 5);
  for (uint32_t i = 0; i < 5; i++) {
    assert_int_equal(fbgen_test_Req_bytes_at(r, i), i + 1);
    assert_int_equal(fbgen_test_Req_view_bytes_at(&v, i), i + 1);
  }
  assert_int_equal(fbgen_test_Req_view_bytes_at(&v, 5), 0);

  assert_int_equal(fbgen_test_Req_nums_len(r), 3);
  assert_int_equal(fbgen_test_Req_view_nums_at(&v, 0), -1);
  assert_int_equal(fbgen_test_Req_nums_at(r, 1), 7);
  assert_int_equal(fbgen_test_Req_view_nums_at(&v, 2), INT32_MAX);

  assert_int_equal(fbgen_test_Req_view_wides_len(&v), 2);
  assert_int_equal(fbgen_test_Req_wides_at(r, 0).v, 11);
  assert_int_equal(fbgen_test_Req_view_wides_at(&v, 1).v, 12);
  free(buf);

  /* each required field missing in turn: rejected, naming it */
  static const char *fields[] = {NULL,     "s",      "leaf",  "name", "names",
                                 "leaves", "bytes", "nums", "wides"};
  for (unsigned id = 1; id <= REQ_FIELDS; id++) {
    buf = make_req(all & ~(1u << id), &len);
    if (id == REQ_FIELDS) /* the last: the vtable ends before its slot */
      assert_int_equal(tr_fb_view_of(tr_fb_root(buf)).vt_len, 4 + 2 * id);
    memset(&err, 0, sizeof err);
    assert_null(fbgen_test_Req_verify_as_root_opts(buf, len, NULL, NULL, &err));
    assert_int_equal(err.code, TR_FB_E_REQUIRED);
    assert_string_equal(err.field, fields[id]);
    free(buf);
  }
  /* only the optional field: the vtable ends before every required slot */
  buf = make_req(0, &len);
  assert_int_equal(tr_fb_view_of(tr_fb_root(buf)).vt_len, 4 + 2 * 1);
  memset(&err, 0, sizeof err);
  assert_null(fbgen_test_Req_verify_as_root_opts(buf, len, NULL, NULL, &err));
  assert_int_equal(err.code, TR_FB_E_REQUIRED);
  assert_string_equal(err.field, "s");
  free(buf);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_event),
      cmocka_unit_test(test_short_vtable),
      cmocka_unit_test(test_union_halves),
      cmocka_unit_test(test_union_end),
      cmocka_unit_test(test_covered),
      cmocka_unit_test(test_frame),
      cmocka_unit_test(test_defaults_structs_nested),
      cmocka_unit_test(test_required),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
