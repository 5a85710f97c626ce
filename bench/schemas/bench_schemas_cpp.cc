// The same work as bench_schemas.c, with Google's C++ runtime and code from
// `flatc --cpp` for the same schemas. Prints `bench: schemas.cpp.<what>`.
#include "bench/schemas/bench_data.h"
#include "journal_generated.h"
#include "protocol_generated.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

using namespace troupe;

static double now() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

// The barrier after each call: as in bench_schemas.c (RATE), no loads carried
// from one iteration to the next.
template <typename F> static double rate(double secs, F fn) {
  uint64_t n = 0;
  double t0 = now(), t;
  do {
    for (int k = 0; k < 1000; k++) {
      fn();
      __asm__ volatile("" ::: "memory");
    }
    n += 1000;
  } while ((t = now() - t0) < secs);
  return (double)n / t;
}

#define S(b, lit) (b).CreateString(lit, sizeof lit - 1)

/* Not inlined, so that bench/schemas/insns can count it per call. */
__attribute__((noinline)) static void encode_event(flatbuffers::FlatBufferBuilder &b) {
  b.Clear();
  auto c1id = S(b, BD_CALL1_ID), c1n = S(b, BD_CALL1_NAME),
       c1a = S(b, BD_CALL1_ARGS);
  journal::ToolCallBuilder t1(b);
  t1.add_id(c1id);
  t1.add_name(c1n);
  t1.add_arguments(c1a);
  auto c1 = t1.Finish();
  auto c2id = S(b, BD_CALL2_ID), c2n = S(b, BD_CALL2_NAME),
       c2a = S(b, BD_CALL2_ARGS);
  journal::ToolCallBuilder t2(b);
  t2.add_id(c2id);
  t2.add_name(c2n);
  t2.add_arguments(c2a);
  auto c2 = t2.Finish();
  flatbuffers::Offset<journal::ToolCall> calls[2] = {c1, c2};
  auto vcalls = b.CreateVector(calls, 2);
  journal::UsageBuilder ub(b);
  ub.add_prompt_tokens(1834);
  ub.add_completion_tokens(212);
  ub.add_cost_micro_usd(3170);
  auto usage = ub.Finish();
  auto model = S(b, BD_MODEL), content = S(b, BD_CONTENT),
       req = S(b, BD_REQ_ID);
  journal::LlmCompletedBuilder lb(b);
  lb.add_step(BD_STEP);
  lb.add_model(model);
  lb.add_content(content);
  lb.add_tool_calls(vcalls);
  lb.add_finish_reason(journal::FinishReason_ToolCalls);
  lb.add_usage(usage);
  lb.add_latency_ms(1234);
  lb.add_provider_request_id(req);
  lb.add_attempt(1);
  auto data = lb.Finish();
  auto run = S(b, BD_RUN_ID);
  journal::EventBuilder eb(b);
  eb.add_seq(BD_SEQ);
  eb.add_time_us(BD_TIME);
  eb.add_run_id(run);
  eb.add_epoch(BD_EPOCH);
  eb.add_data_type(journal::Data_LlmCompleted);
  eb.add_data(data.Union());
  journal::FinishEventBuffer(b, eb.Finish());
}

static uint64_t read_event(const journal::Event *ev) {
  uint64_t acc = ev->seq() + ev->epoch() + (uint64_t)ev->time_us() +
                 ev->run_id()->size();
  auto lc = ev->data_as_LlmCompleted();
  if (!lc)
    return acc;
  acc += lc->step();
  acc += lc->model() ? lc->model()->size() : 0;
  acc += lc->content() ? lc->content()->size() : 0;
  acc += (uint64_t)lc->finish_reason();
  acc += lc->latency_ms();
  acc += lc->provider_request_id() ? lc->provider_request_id()->size() : 0;
  if (auto u = lc->usage())
    acc += u->prompt_tokens() + u->completion_tokens() + u->cost_micro_usd();
  if (auto v = lc->tool_calls())
    for (auto tc : *v)
      acc += tc->id()->size() + tc->name()->size() +
             (tc->arguments() ? tc->arguments()->size() : 0);
  return acc;
}

/* Not inlined, so that bench/schemas/insns can count it per call. */
__attribute__((noinline)) static void encode_frame(flatbuffers::FlatBufferBuilder &b) {
  b.Clear();
  flatbuffers::Offset<flatbuffers::String> tl[3] = {
      S(b, BD_TOOL1), S(b, BD_TOOL2), S(b, BD_TOOL3)};
  auto tools = b.CreateVector(tl, 3);
  auto model = S(b, BD_MODEL), sys = S(b, BD_SYSTEM);
  journal::AgentConfigBuilder ab(b);
  ab.add_model(model);
  ab.add_system(sys);
  ab.add_tools(tools);
  ab.add_max_steps(30);
  ab.add_max_tokens(200000);
  ab.add_max_cost_usd(2.5);
  ab.add_timeout_s(600);
  ab.add_temperature(0.2f);
  auto agent = ab.Finish();
  auto goal = S(b, BD_GOAL), meta = S(b, BD_METADATA), idem = S(b, BD_IDEM);
  proto::CreateRunBuilder cb(b);
  cb.add_goal(goal);
  cb.add_agent(agent);
  cb.add_metadata(meta);
  cb.add_idempotency_key(idem);
  auto cr = cb.Finish();
  auto key = S(b, BD_API_KEY);
  proto::RequestBuilder rb(b);
  rb.add_id(17);
  rb.add_api_key(key);
  rb.add_op_type(proto::Op_CreateRun);
  rb.add_op(cr.Union());
  auto rq = rb.Finish();
  proto::FrameBuilder fb(b);
  fb.add_body_type(proto::Body_Request);
  fb.add_body(rq.Union());
  proto::FinishFrameBuffer(b, fb.Finish());
}

static uint64_t read_frame(const proto::Frame *f) {
  auto rq = f->body_as_Request();
  if (!rq)
    return 0;
  uint64_t acc = rq->id() + (rq->api_key() ? rq->api_key()->size() : 0);
  auto cr = rq->op_as_CreateRun();
  if (!cr)
    return acc;
  acc += cr->goal()->size() + (cr->metadata() ? cr->metadata()->size() : 0) +
         (cr->idempotency_key() ? cr->idempotency_key()->size() : 0);
  if (auto a = cr->agent()) {
    acc += (a->model() ? a->model()->size() : 0) +
           (a->system() ? a->system()->size() : 0) + a->max_steps() +
           a->max_tokens() + (uint64_t)a->max_cost_usd() + a->timeout_s() +
           (uint64_t)(a->temperature() * 10);
    if (auto t = a->tools())
      for (auto s : *t)
        acc += s->size();
  }
  return acc;
}

static volatile uint64_t sink;

// argv[2]: the one measurement to run, as in bench_schemas.c.
static const char *only;

static bool want(const char *what) { return !only || !strcmp(only, what); }

int main(int argc, char **argv) {
  double secs = argc > 1 ? atof(argv[1]) : 0.5;
  only = argc > 2 ? argv[2] : nullptr;
  if (only && !want("event_encode") && !want("event_verify") &&
      !want("event_read") && !want("frame_encode") && !want("frame_verify") &&
      !want("frame_read")) {
    fprintf(stderr, "bench: unknown measurement %s\n", only);
    return 2;
  }
  flatbuffers::FlatBufferBuilder b(1024);

  double ev_enc = rate(want("event_encode") ? secs : 0, [&] { encode_event(b); });
  encode_event(b);
  std::vector<uint8_t> ev(b.GetBufferPointer(), b.GetBufferPointer() + b.GetSize());
  double ev_ver = rate(want("event_verify") ? secs : 0, [&] {
    flatbuffers::Verifier v(ev.data(), ev.size());
    sink += journal::VerifyEventBuffer(v);
  });
  {
    flatbuffers::Verifier v(ev.data(), ev.size());
    if (!journal::VerifyEventBuffer(v)) {
      fprintf(stderr, "bench: event does not verify (C++)\n");
      return 1;
    }
  }
  const journal::Event *root = journal::GetEvent(ev.data());
  double ev_read = rate(want("event_read") ? secs : 0, [&] { sink += read_event(root); });

  double fr_enc = rate(want("frame_encode") ? secs : 0, [&] { encode_frame(b); });
  encode_frame(b);
  std::vector<uint8_t> fr(b.GetBufferPointer(), b.GetBufferPointer() + b.GetSize());
  double fr_ver = rate(want("frame_verify") ? secs : 0, [&] {
    flatbuffers::Verifier v(fr.data(), fr.size());
    sink += proto::VerifyFrameBuffer(v);
  });
  const proto::Frame *froot = proto::GetFrame(fr.data());
  double fr_read = rate(want("frame_read") ? secs : 0, [&] { sink += read_frame(froot); });

  if (!only)
    printf("bench: schemas.cpp.event_bytes %zu B\n", ev.size());
  if (want("event_encode"))
    printf("bench: schemas.cpp.event_encode_per_s %.0f ops/s\n", ev_enc);
  if (want("event_verify"))
    printf("bench: schemas.cpp.event_verify_mb_per_s %.1f MB/s\n",
           ev_ver * (double)ev.size() / 1e6);
  if (want("event_read"))
    printf("bench: schemas.cpp.event_read_per_s %.0f ops/s\n", ev_read);
  if (!only)
    printf("bench: schemas.cpp.frame_bytes %zu B\n", fr.size());
  if (want("frame_encode"))
    printf("bench: schemas.cpp.frame_encode_per_s %.0f ops/s\n", fr_enc);
  if (want("frame_verify"))
    printf("bench: schemas.cpp.frame_verify_mb_per_s %.1f MB/s\n",
           fr_ver * (double)fr.size() / 1e6);
  if (want("frame_read"))
    printf("bench: schemas.cpp.frame_read_per_s %.0f ops/s\n", fr_read);
  return 0;
}
