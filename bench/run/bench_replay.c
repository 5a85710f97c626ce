/* bench_replay: how long a run actor takes to rebuild a run's state from its
 * journal — read every event from RocksDB and fold it (verify + apply), as
 * recovery and failover do.
 *
 *   bench_replay DB_DIR RUN_ID [repeats]
 *
 * The first pass runs on a cold RocksDB block cache (the store was just
 * opened); the figure is the median of the later passes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "actors/run.h"
#include "raft/raft.h"
#include "storage/storage.h"

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* One replay; returns the event count or -1. */
static long replay(struct tr_store *st, uint64_t run)
{
    struct tr_run_state s;
    struct tr_journal_iter *it;
    struct tr_err err = { 0 };
    long n = 0;
    tr_run_state_init(&s, run, 1);
    if (tr_journal_iter_open(st, NULL, run, 1, &it, &err) != TR_OK) {
        fprintf(stderr, "bench_replay: %s\n", err.msg);
        return -1;
    }
    uint64_t seq;
    const void *ev;
    size_t len;
    int rv;
    while ((rv = tr_journal_iter_next(it, &seq, &ev, &len, &err)) == 1) {
        if (tr_run_fold(&s, ev, len) != TR_OK) {
            fprintf(stderr, "bench_replay: fold seq %llu: %s\n", (unsigned long long)seq, s.fold_error);
            n = -1;
            break;
        }
        n++;
    }
    tr_journal_iter_close(it);
    tr_run_state_free(&s);
    return rv < 0 ? -1 : n;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: bench_replay DB_DIR RUN_ID [repeats]\n");
        return 2;
    }
    int repeats = argc > 3 ? atoi(argv[3]) : 21;
    uint64_t run;
    if (tr_run_id_from_text(argv[2], strlen(argv[2]), &run) != TR_OK) {
        fprintf(stderr, "bench_replay: bad run id %s\n", argv[2]);
        return 2;
    }
    struct tr_store *st;
    struct tr_err err = { 0 };
    if (tr_store_open(argv[1], NULL, &st, &err) != TR_OK) {
        fprintf(stderr, "bench_replay: %s\n", err.msg);
        return 1;
    }
    double *t = calloc((size_t)repeats, sizeof *t);
    long events = 0;
    for (int i = 0; i < repeats; i++) {
        double t0 = now_ms();
        events = replay(st, run);
        t[i] = now_ms() - t0;
        if (events < 0)
            return 1;
    }
    double cold = t[0];
    qsort(t + 1, (size_t)(repeats - 1), sizeof *t, cmp_d);
    double med = t[1 + (repeats - 1) / 2];
    printf("replay: %ld events: cold %.3f ms, then median %.3f ms of %d passes\n", events, cold, med, repeats - 1);
    /* Per 1,000 events, so the figure is comparable whatever the run's length. */
    printf("bench: run.replay_1000_ms %.3f ms\n", events > 0 ? med * 1000.0 / (double)events : 0.0);
    free(t);
    tr_store_close(st);
    return 0;
}
