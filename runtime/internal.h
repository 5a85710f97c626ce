/* Private seam between the runtime core and its adapters (http.c, proc.c).
 * Not for use outside runtime/. */
#ifndef TR_RUNTIME_INTERNAL_H
#define TR_RUNTIME_INTERNAL_H

#include "runtime.h"

/* Per-scheduler state slots owned by adapters. An adapter creates its state
 * lazily on first use (from a callback on that scheduler's thread), stores it
 * in its slot, and registers a tr_rt_on_shutdown hook that closes its handles
 * and frees it. Scheduler-thread only. */
enum tr_ext {
    TR_EXT_HTTP = 0,
    TR_EXT_PROC,
    TR_EXT_MAX
};
void **tr__ext_slot(struct tr_ctx *ctx, enum tr_ext which);

/* The runtime this context belongs to's deterministic flag. */
int tr__deterministic(struct tr_ctx *ctx);

/* Deliver a runtime-generated message (adapter results, timers, exit
 * notices) to an actor regardless of its mailbox cap: such messages answer
 * something the actor asked for and must not be lost to backpressure.
 * Thread-safe. On TR_ENOACTOR / TR_ECLOSED the message is freed here and
 * counted as a dead letter. */
int tr__deliver_system(struct tr_rt *rt, tr_actor_id to, struct tr_msg *msg);

#endif
