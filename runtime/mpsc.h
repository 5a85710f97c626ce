/* An intrusive, unbounded, lock-free multi-producer single-consumer FIFO of
 * messages, linked through tr_msg.next (Vyukov's algorithm with a stub node).
 *
 * Producers (any thread) call tr__mpsc_push; only the owning thread calls
 * tr__mpsc_pop. A push is one atomic exchange plus one release store; the
 * order of the exchanges is the order of delivery, so each producer's pushes
 * come out in the order it made them.
 *
 * Between a producer's exchange and its link store, the queue is briefly
 * "in between": pop returns NULL although a message is on its way. The
 * producer always wakes the consumer after pushing, so the consumer retries
 * then; nothing is lost. Private to runtime/. */
#ifndef TR_RUNTIME_MPSC_H
#define TR_RUNTIME_MPSC_H

#include <stddef.h>

#include "runtime.h"

struct tr_mpsc {
    _Alignas(64) struct tr_msg *head; /* producers: last pushed; atomic */
    _Alignas(64) struct tr_msg *tail; /* consumer: next to pop */
    struct tr_msg *stub;              /* owned: see tr__mpsc_init */
};

/* stub: a message the queue uses as its dummy node; the caller frees it
 * after the last pop (a tr_msg has a flexible array member, so it cannot be
 * embedded here). */
static inline void tr__mpsc_init(struct tr_mpsc *q, struct tr_msg *stub)
{
    q->stub = stub;
    stub->next = NULL;
    q->head = stub;
    q->tail = stub;
}

static inline void tr__mpsc_push(struct tr_mpsc *q, struct tr_msg *m)
{
    struct tr_msg *prev;

    __atomic_store_n(&m->next, NULL, __ATOMIC_RELAXED);
    prev = __atomic_exchange_n(&q->head, m, __ATOMIC_ACQ_REL);
    __atomic_store_n(&prev->next, m, __ATOMIC_RELEASE);
}

/* The next message, or NULL when the queue is empty or in between. */
static inline struct tr_msg *tr__mpsc_pop(struct tr_mpsc *q)
{
    struct tr_msg *tail = q->tail;
    struct tr_msg *next = __atomic_load_n(&tail->next, __ATOMIC_ACQUIRE);

    if (tail == q->stub) {
        if (next == NULL)
            return NULL;
        q->tail = next;
        tail = next;
        next = __atomic_load_n(&next->next, __ATOMIC_ACQUIRE);
    }
    if (next != NULL) {
        q->tail = next;
        return tail;
    }
    if (tail != __atomic_load_n(&q->head, __ATOMIC_ACQUIRE))
        return NULL; /* in between: a producer has not linked yet */
    tr__mpsc_push(q, q->stub);
    next = __atomic_load_n(&tail->next, __ATOMIC_ACQUIRE);
    if (next != NULL) {
        q->tail = next;
        return tail;
    }
    return NULL;
}

/* Non-zero when a message is (or is about to be) in the queue. Consumer only. */
static inline int tr__mpsc_busy(struct tr_mpsc *q)
{
    return q->tail != q->stub || __atomic_load_n(&q->stub->next, __ATOMIC_ACQUIRE) != NULL ||
           __atomic_load_n(&q->head, __ATOMIC_ACQUIRE) != q->stub;
}

#endif
