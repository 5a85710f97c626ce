/* The view readers against the plain readers where they differ: a decoder
 * that copies a CreateRun's agent into a C struct. The copies are stores
 * that may alias the buffer (the decoder cannot know), so every plain reader
 * after one re-reads the table's soffset and vtable size; through a view
 * they stay in registers. The two decoders read the same fields into the
 * same struct. Prints `bench: schemas.agent_copy_{plain,view}_per_s`;
 * bench/schemas/insns counts their instructions per call. */
#include "bench/schemas/bench_data.h"
#include "schemas/journal_generated.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

struct agent {
  char model[64];
  char system[512];
  char provider[32];
  char tools[4][32];
  uint32_t ntools;
  uint32_t max_steps;
  uint64_t max_tokens;
  double max_cost_usd;
  uint32_t timeout_s;
  float temperature;
};

/* Not inlined: a decoder called with a buffer from elsewhere. */
__attribute__((noinline)) static void
copy_plain(struct agent *d, const struct troupe_journal_AgentConfig *a) {
  tr_fb_str_copy(d->model, sizeof d->model, troupe_journal_AgentConfig_model(a));
  tr_fb_str_copy(d->system, sizeof d->system,
                 troupe_journal_AgentConfig_system(a));
  tr_fb_str_copy(d->provider, sizeof d->provider,
                 troupe_journal_AgentConfig_provider(a));
  d->ntools = troupe_journal_AgentConfig_tools_len(a);
  if (d->ntools > 4)
    d->ntools = 4;
  for (uint32_t i = 0; i < d->ntools; i++)
    tr_fb_str_copy(d->tools[i], sizeof d->tools[i],
                   troupe_journal_AgentConfig_tools_at(a, i));
  d->max_steps = troupe_journal_AgentConfig_max_steps(a);
  d->max_tokens = troupe_journal_AgentConfig_max_tokens(a);
  d->max_cost_usd = troupe_journal_AgentConfig_max_cost_usd(a);
  d->timeout_s = troupe_journal_AgentConfig_timeout_s(a);
  d->temperature = troupe_journal_AgentConfig_temperature(a);
}

__attribute__((noinline)) static void
copy_view(struct agent *d, const struct troupe_journal_AgentConfig *ap) {
  struct troupe_journal_AgentConfig_view a = troupe_journal_AgentConfig_view(ap);
  tr_fb_str_copy(d->model, sizeof d->model,
                 troupe_journal_AgentConfig_view_model(&a));
  tr_fb_str_copy(d->system, sizeof d->system,
                 troupe_journal_AgentConfig_view_system(&a));
  tr_fb_str_copy(d->provider, sizeof d->provider,
                 troupe_journal_AgentConfig_view_provider(&a));
  d->ntools = troupe_journal_AgentConfig_view_tools_len(&a);
  if (d->ntools > 4)
    d->ntools = 4;
  for (uint32_t i = 0; i < d->ntools; i++)
    tr_fb_str_copy(d->tools[i], sizeof d->tools[i],
                   troupe_journal_AgentConfig_view_tools_at(&a, i));
  d->max_steps = troupe_journal_AgentConfig_view_max_steps(&a);
  d->max_tokens = troupe_journal_AgentConfig_view_max_tokens(&a);
  d->max_cost_usd = troupe_journal_AgentConfig_view_max_cost_usd(&a);
  d->timeout_s = troupe_journal_AgentConfig_view_timeout_s(&a);
  d->temperature = troupe_journal_AgentConfig_view_temperature(&a);
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Calls fn until `secs` have passed; returns calls per second. */
static double rate(double secs,
                   void (*fn)(struct agent *,
                              const struct troupe_journal_AgentConfig *),
                   struct agent *d, const struct troupe_journal_AgentConfig *a) {
  uint64_t n = 0;
  double t0 = now(), t;
  do {
    for (int k = 0; k < 1000; k++)
      fn(d, a);
    n += 1000;
  } while ((t = now() - t0) < secs);
  return (double)n / t;
}

#define S(b, lit) tr_fb_create_string(b, lit, sizeof lit - 1)

int main(int argc, char **argv) {
  double secs = argc > 1 ? atof(argv[1]) : 0.5;
  int rounds = argc > 2 ? atoi(argv[2]) : 3;
  struct tr_fb_builder b;
  tr_fb_builder_init(&b);
  tr_fb_ref tl[3] = {S(&b, BD_TOOL1), S(&b, BD_TOOL2), S(&b, BD_TOOL3)};
  tr_fb_ref tools = troupe_journal_AgentConfig_create_tools(&b, tl, 3);
  tr_fb_ref model = S(&b, BD_MODEL), sys = S(&b, BD_SYSTEM);
  tr_fb_ref provider = S(&b, "openai");
  troupe_journal_AgentConfig_start(&b);
  troupe_journal_AgentConfig_add_model(&b, model);
  troupe_journal_AgentConfig_add_system(&b, sys);
  troupe_journal_AgentConfig_add_tools(&b, tools);
  troupe_journal_AgentConfig_add_max_steps(&b, 30);
  troupe_journal_AgentConfig_add_max_tokens(&b, 200000);
  troupe_journal_AgentConfig_add_max_cost_usd(&b, 2.5);
  troupe_journal_AgentConfig_add_timeout_s(&b, 600);
  troupe_journal_AgentConfig_add_temperature(&b, 0.2f);
  troupe_journal_AgentConfig_add_provider(&b, provider);
  tr_fb_finish(&b, troupe_journal_AgentConfig_end(&b), NULL);
  size_t len;
  const uint8_t *d = tr_fb_builder_data(&b, &len);
  uint8_t *buf = malloc(len);
  if (!buf)
    return 1;
  memcpy(buf, d, len);
  const struct troupe_journal_AgentConfig *a =
      troupe_journal_AgentConfig_verify_as_root_opts(buf, len, NULL, NULL,
                                                     NULL);
  if (!a) {
    fprintf(stderr, "bench: agent does not verify\n");
    return 1;
  }
  /* both decoders fill the struct alike */
  static struct agent p, v;
  copy_plain(&p, a);
  copy_view(&v, a);
  if (memcmp(&p, &v, sizeof p) || strcmp(p.tools[2], BD_TOOL3)) {
    fprintf(stderr, "bench: the decoders disagree\n");
    return 1;
  }
  double best_p = 0, best_v = 0;
  for (int r = 0; r < rounds; r++) {
    double rp = rate(secs, copy_plain, &p, a), rv = rate(secs, copy_view, &v, a);
    best_p = rp > best_p ? rp : best_p;
    best_v = rv > best_v ? rv : best_v;
  }
  printf("bench: schemas.agent_copy_plain_per_s %.0f ops/s\n", best_p);
  printf("bench: schemas.agent_copy_view_per_s %.0f ops/s\n", best_v);
  free(buf);
  tr_fb_builder_free(&b);
  return 0;
}
