/* Troupe's C FlatBuffers: encode, verify and read a typical journal event
 * (llm.completed) and a typical protocol frame (a CreateRun request).
 * Prints `bench: schemas.<what> <value> <unit>` lines; bench_schemas_cpp does
 * the same work with Google's C++ runtime. */
#include "bench/schemas/bench_data.h"
#include "schemas/journal_generated.h"
#include "schemas/protocol_generated.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

#define S(b, lit) tr_fb_create_string(b, lit, sizeof lit - 1)

/* Not inlined, so that bench/schemas/insns can count it per call. */
__attribute__((noinline)) static void encode_event(struct tr_fb_builder *b) {
  tr_fb_builder_reset(b);
  tr_fb_ref c1id = S(b, BD_CALL1_ID), c1n = S(b, BD_CALL1_NAME),
            c1a = S(b, BD_CALL1_ARGS);
  troupe_journal_ToolCall_start(b);
  troupe_journal_ToolCall_add_id(b, c1id);
  troupe_journal_ToolCall_add_name(b, c1n);
  troupe_journal_ToolCall_add_arguments(b, c1a);
  tr_fb_ref c1 = troupe_journal_ToolCall_end(b);
  tr_fb_ref c2id = S(b, BD_CALL2_ID), c2n = S(b, BD_CALL2_NAME),
            c2a = S(b, BD_CALL2_ARGS);
  troupe_journal_ToolCall_start(b);
  troupe_journal_ToolCall_add_id(b, c2id);
  troupe_journal_ToolCall_add_name(b, c2n);
  troupe_journal_ToolCall_add_arguments(b, c2a);
  tr_fb_ref c2 = troupe_journal_ToolCall_end(b);
  tr_fb_ref calls[2] = {c1, c2};
  tr_fb_ref vcalls = troupe_journal_LlmCompleted_create_tool_calls(b, calls, 2);
  troupe_journal_Usage_start(b);
  troupe_journal_Usage_add_prompt_tokens(b, 1834);
  troupe_journal_Usage_add_completion_tokens(b, 212);
  troupe_journal_Usage_add_cost_micro_usd(b, 3170);
  tr_fb_ref usage = troupe_journal_Usage_end(b);
  tr_fb_ref model = S(b, BD_MODEL), content = S(b, BD_CONTENT),
            req = S(b, BD_REQ_ID);
  troupe_journal_LlmCompleted_start(b);
  troupe_journal_LlmCompleted_add_step(b, BD_STEP);
  troupe_journal_LlmCompleted_add_model(b, model);
  troupe_journal_LlmCompleted_add_content(b, content);
  troupe_journal_LlmCompleted_add_tool_calls(b, vcalls);
  troupe_journal_LlmCompleted_add_finish_reason(
      b, troupe_journal_FinishReason_ToolCalls);
  troupe_journal_LlmCompleted_add_usage(b, usage);
  troupe_journal_LlmCompleted_add_latency_ms(b, 1234);
  troupe_journal_LlmCompleted_add_provider_request_id(b, req);
  troupe_journal_LlmCompleted_add_attempt(b, 1);
  tr_fb_ref data = troupe_journal_LlmCompleted_end(b);
  tr_fb_ref run = S(b, BD_RUN_ID);
  troupe_journal_Event_start(b);
  troupe_journal_Event_add_seq(b, BD_SEQ);
  troupe_journal_Event_add_time_us(b, BD_TIME);
  troupe_journal_Event_add_run_id(b, run);
  troupe_journal_Event_add_epoch(b, BD_EPOCH);
  troupe_journal_Event_add_data_LlmCompleted(b, data);
  troupe_journal_Event_finish(b, troupe_journal_Event_end(b));
}

/* The readers use the view form (schemas/schemas.h): each table's vtable is
 * resolved once, as Google's C++ code does when it keeps a table's vtable in
 * a register. The fields read are exactly those bench_schemas_cpp.cc reads,
 * with the same treatment of absence: optional fields may be absent (a
 * string reads as {NULL, 0}, as the C++ side's null checks do); required
 * ones (run_id, a tool call's id and name) are present in every verified
 * buffer, which the C++ side relies on by dereferencing them unchecked and
 * the generated C readers by reading their slots without absent checks. */
static uint64_t read_event(const struct troupe_journal_Event *ev) {
  struct troupe_journal_Event_view e = troupe_journal_Event_view(ev);
  uint64_t acc = troupe_journal_Event_view_seq(&e) +
                 troupe_journal_Event_view_epoch(&e) +
                 (uint64_t)troupe_journal_Event_view_time_us(&e) +
                 troupe_journal_Event_view_run_id(&e).len;
  const struct troupe_journal_LlmCompleted *lcp =
      troupe_journal_Event_view_data_as_LlmCompleted(&e);
  if (!lcp)
    return acc;
  struct troupe_journal_LlmCompleted_view lc =
      troupe_journal_LlmCompleted_view(lcp);
  acc += troupe_journal_LlmCompleted_view_step(&lc);
  acc += troupe_journal_LlmCompleted_view_model(&lc).len;
  acc += troupe_journal_LlmCompleted_view_content(&lc).len;
  acc += (uint64_t)troupe_journal_LlmCompleted_view_finish_reason(&lc);
  acc += troupe_journal_LlmCompleted_view_latency_ms(&lc);
  acc += troupe_journal_LlmCompleted_view_provider_request_id(&lc).len;
  const struct troupe_journal_Usage *up =
      troupe_journal_LlmCompleted_view_usage(&lc);
  if (up) {
    struct troupe_journal_Usage_view u = troupe_journal_Usage_view(up);
    acc += troupe_journal_Usage_view_prompt_tokens(&u) +
           troupe_journal_Usage_view_completion_tokens(&u) +
           troupe_journal_Usage_view_cost_micro_usd(&u);
  }
  struct tr_fb_vec calls = troupe_journal_LlmCompleted_view_tool_calls(&lc);
  for (uint32_t i = 0; i < calls.len; i++) {
    struct troupe_journal_ToolCall_view tc =
        troupe_journal_ToolCall_view(tr_fb_vec_table(calls, i));
    acc += troupe_journal_ToolCall_view_id(&tc).len +
           troupe_journal_ToolCall_view_name(&tc).len +
           troupe_journal_ToolCall_view_arguments(&tc).len;
  }
  return acc;
}

/* Not inlined, so that bench/schemas/insns can count it per call. */
__attribute__((noinline)) static void encode_frame(struct tr_fb_builder *b) {
  tr_fb_builder_reset(b);
  tr_fb_ref t1 = S(b, BD_TOOL1), t2 = S(b, BD_TOOL2), t3 = S(b, BD_TOOL3);
  tr_fb_ref tl[3] = {t1, t2, t3};
  tr_fb_ref tools = troupe_journal_AgentConfig_create_tools(b, tl, 3);
  tr_fb_ref model = S(b, BD_MODEL), sys = S(b, BD_SYSTEM);
  troupe_journal_AgentConfig_start(b);
  troupe_journal_AgentConfig_add_model(b, model);
  troupe_journal_AgentConfig_add_system(b, sys);
  troupe_journal_AgentConfig_add_tools(b, tools);
  troupe_journal_AgentConfig_add_max_steps(b, 30);
  troupe_journal_AgentConfig_add_max_tokens(b, 200000);
  troupe_journal_AgentConfig_add_max_cost_usd(b, 2.5);
  troupe_journal_AgentConfig_add_timeout_s(b, 600);
  troupe_journal_AgentConfig_add_temperature(b, 0.2f);
  tr_fb_ref agent = troupe_journal_AgentConfig_end(b);
  tr_fb_ref goal = S(b, BD_GOAL), meta = S(b, BD_METADATA),
            idem = S(b, BD_IDEM);
  troupe_proto_CreateRun_start(b);
  troupe_proto_CreateRun_add_goal(b, goal);
  troupe_proto_CreateRun_add_agent(b, agent);
  troupe_proto_CreateRun_add_metadata(b, meta);
  troupe_proto_CreateRun_add_idempotency_key(b, idem);
  tr_fb_ref cr = troupe_proto_CreateRun_end(b);
  tr_fb_ref key = S(b, BD_API_KEY);
  troupe_proto_Request_start(b);
  troupe_proto_Request_add_id(b, 17);
  troupe_proto_Request_add_api_key(b, key);
  troupe_proto_Request_add_op_CreateRun(b, cr);
  tr_fb_ref rq = troupe_proto_Request_end(b);
  troupe_proto_Frame_start(b);
  troupe_proto_Frame_add_body_Request(b, rq);
  troupe_proto_Frame_finish(b, troupe_proto_Frame_end(b));
}

static uint64_t read_frame(const struct troupe_proto_Frame *fp) {
  struct troupe_proto_Frame_view f = troupe_proto_Frame_view(fp);
  const struct troupe_proto_Request *rqp =
      troupe_proto_Frame_view_body_as_Request(&f);
  if (!rqp)
    return 0;
  struct troupe_proto_Request_view rq = troupe_proto_Request_view(rqp);
  uint64_t acc = troupe_proto_Request_view_id(&rq) +
                 troupe_proto_Request_view_api_key(&rq).len;
  const struct troupe_proto_CreateRun *crp =
      troupe_proto_Request_view_op_as_CreateRun(&rq);
  if (!crp)
    return acc;
  struct troupe_proto_CreateRun_view cr = troupe_proto_CreateRun_view(crp);
  acc += troupe_proto_CreateRun_view_goal(&cr).len +
         troupe_proto_CreateRun_view_metadata(&cr).len +
         troupe_proto_CreateRun_view_idempotency_key(&cr).len;
  const struct troupe_journal_AgentConfig *ap =
      troupe_proto_CreateRun_view_agent(&cr);
  if (ap) {
    struct troupe_journal_AgentConfig_view a =
        troupe_journal_AgentConfig_view(ap);
    acc += troupe_journal_AgentConfig_view_model(&a).len +
           troupe_journal_AgentConfig_view_system(&a).len +
           troupe_journal_AgentConfig_view_max_steps(&a) +
           troupe_journal_AgentConfig_view_max_tokens(&a) +
           (uint64_t)troupe_journal_AgentConfig_view_max_cost_usd(&a) +
           troupe_journal_AgentConfig_view_timeout_s(&a) +
           (uint64_t)(troupe_journal_AgentConfig_view_temperature(&a) * 10);
    struct tr_fb_vec tools = troupe_journal_AgentConfig_view_tools(&a);
    for (uint32_t i = 0; i < tools.len; i++)
      acc += tr_fb_vec_str(tools, i).len;
  }
  return acc;
}

static volatile uint64_t sink;

/* Runs fn until `secs` have passed; returns operations per second. The
 * barrier after each operation keeps the compiler from carrying loads of the
 * buffer from one iteration to the next (bench_schemas_cpp.cc has the same). */
#define RATE(secs, body)                                                       \
  ({                                                                           \
    uint64_t n_ = 0;                                                           \
    double t0_ = now(), t_;                                                    \
    do {                                                                       \
      for (int k_ = 0; k_ < 1000; k_++) {                                      \
        body;                                                                  \
        __asm__ volatile("" ::: "memory");                                     \
      }                                                                        \
      n_ += 1000;                                                              \
    } while ((t_ = now() - t0_) < (secs));                                     \
    (double)n_ / t_;                                                           \
  })

/* argv[2], when given, names the one measurement to run (event_encode,
 * event_verify, event_read, frame_encode, frame_verify, frame_read); the
 * others then run one batch of 1000 untimed (the read and verify loops need
 * the buffers the encode loops leave) and print nothing. bench_schemas_cpp
 * takes the same switch. */
static const char *only;

static bool want(const char *what) { return !only || !strcmp(only, what); }

int main(int argc, char **argv) {
  double secs = argc > 1 ? atof(argv[1]) : 0.5;
  only = argc > 2 ? argv[2] : NULL;
  if (only && !want("event_encode") && !want("event_verify") &&
      !want("event_read") && !want("frame_encode") && !want("frame_verify") &&
      !want("frame_read")) {
    fprintf(stderr, "bench: unknown measurement %s\n", only);
    return 2;
  }
  struct tr_fb_builder b;
  tr_fb_builder_init(&b);
  size_t len;

  double ev_enc = RATE(want("event_encode") ? secs : 0, encode_event(&b));
  encode_event(&b);
  const uint8_t *d = tr_fb_builder_data(&b, &len);
  uint8_t *ev = malloc(len);
  memcpy(ev, d, len);
  size_t ev_len = len;
  double ev_ver = RATE(want("event_verify") ? secs : 0, sink += troupe_journal_Event_verify_as_root(
                                         ev, ev_len, NULL) != NULL);
  const struct troupe_journal_Event *root =
      troupe_journal_Event_verify_as_root(ev, ev_len, NULL);
  if (!root) {
    fprintf(stderr, "bench: event does not verify\n");
    return 1;
  }
  double ev_read = RATE(want("event_read") ? secs : 0, sink += read_event(root));

  double fr_enc = RATE(want("frame_encode") ? secs : 0, encode_frame(&b));
  encode_frame(&b);
  d = tr_fb_builder_data(&b, &len);
  uint8_t *fr = malloc(len);
  memcpy(fr, d, len);
  size_t fr_len = len;
  double fr_ver = RATE(want("frame_verify") ? secs : 0, sink += troupe_proto_Frame_verify_as_root(
                                         fr, fr_len, NULL) != NULL);
  const struct troupe_proto_Frame *froot =
      troupe_proto_Frame_verify_as_root(fr, fr_len, NULL);
  if (!froot) {
    fprintf(stderr, "bench: frame does not verify\n");
    return 1;
  }
  double fr_read = RATE(want("frame_read") ? secs : 0, sink += read_frame(froot));

  if (!only)
    printf("bench: schemas.event_bytes %zu B\n", ev_len);
  if (want("event_encode"))
    printf("bench: schemas.event_encode_per_s %.0f ops/s\n", ev_enc);
  if (want("event_verify"))
    printf("bench: schemas.event_verify_mb_per_s %.1f MB/s\n",
           ev_ver * (double)ev_len / 1e6);
  if (want("event_read"))
    printf("bench: schemas.event_read_per_s %.0f ops/s\n", ev_read);
  if (!only)
    printf("bench: schemas.frame_bytes %zu B\n", fr_len);
  if (want("frame_encode"))
    printf("bench: schemas.frame_encode_per_s %.0f ops/s\n", fr_enc);
  if (want("frame_verify"))
    printf("bench: schemas.frame_verify_mb_per_s %.1f MB/s\n",
           fr_ver * (double)fr_len / 1e6);
  if (want("frame_read"))
    printf("bench: schemas.frame_read_per_s %.0f ops/s\n", fr_read);
  free(ev);
  free(fr);
  tr_fb_builder_free(&b);
  return 0;
}
