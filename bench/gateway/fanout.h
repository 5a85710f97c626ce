/* Shared between bench_gateway (the appender) and sse_fanout (the
 * subscribers): a file both map. */
#ifndef TR_BENCH_FANOUT_H
#define TR_BENCH_FANOUT_H

#include <stdbool.h>
#include <stdint.h>

#define FANOUT_MAX_EVENTS 100000

struct fanout_shm {
    uint64_t after;                        /* the run's last seq before the bench: streams start there */
    uint64_t connected;                    /* streams whose 200 arrived (written by sse_fanout) */
    uint64_t last_seq;                     /* set once every event was appended */
    uint64_t deadline_ns;                  /* CLOCK_MONOTONIC: give up then */
    uint64_t submit_ns[FANOUT_MAX_EVENTS]; /* CLOCK_MONOTONIC when seq's append was submitted */
};

#endif
