/* Scripted model and tool replies for the run core's tests (test_core.c)
 * and the fold fuzzer's seed generator (tests/fuzz/fold/gen_seeds.c): each
 * llm_* answers step `step` of a run, each tool_* a call, approve_* an
 * approval, through the harness (harness.h). */
#ifndef TR_TEST_RUN_SCRIPTS_H
#define TR_TEST_RUN_SCRIPTS_H

#include "harness.h"

char *llm_ten(struct harness *h, uint32_t step, uint32_t attempt);
char *tool_echo(struct harness *h, const char *name, const char *args, const char *key, uint32_t step,
                uint32_t idx);
char *llm_mixed(struct harness *h, uint32_t step, uint32_t attempt);
int approve_small(struct harness *h, const struct tr_run_call *c);
char *llm_wire(struct harness *h, uint32_t step, uint32_t attempt);
char *llm_post(struct harness *h, uint32_t step, uint32_t attempt);
char *llm_forever(struct harness *h, uint32_t step, uint32_t attempt);
char *llm_same(struct harness *h, uint32_t step, uint32_t attempt);
char *tool_same(struct harness *h, const char *name, const char *args, const char *key, uint32_t step,
                uint32_t idx);
char *llm_malformed(struct harness *h, uint32_t step, uint32_t attempt);
char *llm_nope(struct harness *h, uint32_t step, uint32_t attempt);
char *llm_builtins(struct harness *h, uint32_t step, uint32_t attempt);

#endif
