/* Timers and request timeouts of one scheduler: a binary min-heap ordered by
 * (deadline, id) and a map from id to entry, so that start and cancel are
 * O(log n) and timers due at the same instant fire in the order they were
 * started. One uv_timer_t is armed for the earliest deadline; in
 * deterministic mode tr_rt_advance drives tr__timers_fire instead.
 *
 * A fired entry is delivered to its owner only if the owner still exists in
 * the same incarnation: timers of a stopped actor are dropped, timers of a
 * restarted one too (its new state never asked for them), and a timer of a
 * passivated actor reactivates it (passivation keeps the incarnation). */
#include <string.h>

#include "core.h"

/* ---- map ---------------------------------------------------------------- */

static size_t map_hash(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    return (size_t)k;
}

static void map_grow(struct tr_map *m)
{
    size_t old_cap = m->mask ? m->mask + 1 : 0;
    size_t cap = old_cap ? old_cap * 2 : 16;
    uint64_t *keys = m->keys;
    void **vals = m->vals;

    m->keys = tr_calloc(cap, sizeof *m->keys);
    m->vals = tr_calloc(cap, sizeof *m->vals);
    m->mask = cap - 1;
    m->n = 0;
    for (size_t i = 0; i < old_cap; i++)
        if (keys[i] != 0)
            tr__map_put(m, keys[i], vals[i]);
    tr_free(keys);
    tr_free(vals);
}

void *tr__map_get(struct tr_map *m, uint64_t key)
{
    if (m->n == 0)
        return NULL;
    for (size_t i = map_hash(key) & m->mask;; i = (i + 1) & m->mask) {
        if (m->keys[i] == key)
            return m->vals[i];
        if (m->keys[i] == 0)
            return NULL;
    }
}

/* key must not be present. */
void tr__map_put(struct tr_map *m, uint64_t key, void *val)
{
    size_t i;

    if (m->mask == 0 || (m->n + 1) * 10 > (m->mask + 1) * 7)
        map_grow(m);
    for (i = map_hash(key) & m->mask; m->keys[i] != 0; i = (i + 1) & m->mask)
        ;
    m->keys[i] = key;
    m->vals[i] = val;
    m->n++;
}

/* Linear probing with backward-shift deletion: no tombstones. */
void tr__map_del(struct tr_map *m, uint64_t key)
{
    size_t i, j;

    if (m->n == 0)
        return;
    for (i = map_hash(key) & m->mask; m->keys[i] != key; i = (i + 1) & m->mask)
        if (m->keys[i] == 0)
            return;
    for (j = (i + 1) & m->mask; m->keys[j] != 0; j = (j + 1) & m->mask) {
        size_t home = map_hash(m->keys[j]) & m->mask;
        /* Move j into the hole at i unless its home lies cyclically in (i, j]. */
        if ((j > i && (home <= i || home > j)) || (j < i && (home <= i && home > j))) {
            m->keys[i] = m->keys[j];
            m->vals[i] = m->vals[j];
            i = j;
        }
    }
    m->keys[i] = 0;
    m->vals[i] = NULL;
    m->n--;
}

void tr__map_free(struct tr_map *m)
{
    tr_free(m->keys);
    tr_free(m->vals);
    memset(m, 0, sizeof *m);
}

/* ---- heap --------------------------------------------------------------- */

static int before(const struct tr_timer *a, const struct tr_timer *b)
{
    return a->deadline < b->deadline || (a->deadline == b->deadline && a->id < b->id);
}

static void heap_set(struct tr_sched *s, size_t i, struct tr_timer *t)
{
    s->heap[i] = t;
    t->idx = (uint32_t)i;
}

static void sift_up(struct tr_sched *s, size_t i)
{
    struct tr_timer *t = s->heap[i];

    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!before(t, s->heap[p]))
            break;
        heap_set(s, i, s->heap[p]);
        i = p;
    }
    heap_set(s, i, t);
}

static void sift_down(struct tr_sched *s, size_t i)
{
    struct tr_timer *t = s->heap[i];

    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= s->nheap)
            break;
        if (c + 1 < s->nheap && before(s->heap[c + 1], s->heap[c]))
            c++;
        if (!before(s->heap[c], t))
            break;
        heap_set(s, i, s->heap[c]);
        i = c;
    }
    heap_set(s, i, t);
}

uint64_t tr__next_id(struct tr_sched *s, int with_timer)
{
    return (++s->next_seq << 9) | ((uint64_t)s->index << 1) | (with_timer ? TR__CORR_TIMER : 0);
}

/* Insert an entry; msg (may be NULL for a request timeout) is owned by it. */
struct tr_timer *tr__timer_add(struct tr_sched *s, uint64_t id, uint64_t deadline, tr_actor_id owner,
                               uint32_t incarnation, struct tr_msg *msg)
{
    struct tr_timer *t = tr_malloc(sizeof *t);

    t->deadline = deadline;
    t->id = id;
    t->owner = owner;
    t->incarnation = incarnation;
    t->msg = msg;
    if (s->nheap == s->heap_cap) {
        s->heap_cap = s->heap_cap ? s->heap_cap * 2 : 64;
        s->heap = tr_realloc(s->heap, s->heap_cap * sizeof *s->heap);
    }
    heap_set(s, s->nheap++, t);
    sift_up(s, t->idx);
    tr__map_put(&s->timers, id, t);
    return t;
}

/* Unlink and free an entry; its message, if any, must have been taken. */
void tr__timer_remove(struct tr_sched *s, struct tr_timer *t)
{
    size_t i = t->idx;

    tr__map_del(&s->timers, t->id);
    s->nheap--;
    if (i != s->nheap) {
        heap_set(s, i, s->heap[s->nheap]);
        if (i > 0 && before(s->heap[i], s->heap[(i - 1) / 2]))
            sift_up(s, i);
        else
            sift_down(s, i);
    }
    tr_free(t);
}

/* Deliver a fired entry's message to its owner, bypassing the cap. */
static void fire_one(struct tr_sched *s, tr_actor_id owner, uint32_t incarnation, struct tr_msg *m)
{
    struct tr_slot *sl = tr__slot_of(s->rt, owner);
    struct tr_actor *a = sl ? sl->ptr : NULL;

    if (a == NULL || a->id != owner || a->incarnation != incarnation || (a->flags & F_DEAD)) {
        tr_msg_free(m);
        return;
    }
    atomic_fetch_sub_explicit(&sl->avail, 1, memory_order_relaxed);
    tr__mailbox_push(s, a, m);
}

/* Fire every entry due at or before now, earliest first. */
void tr__timers_fire(struct tr_sched *s, uint64_t now)
{
    while (s->nheap > 0 && s->heap[0]->deadline <= now) {
        struct tr_timer *t = s->heap[0];
        tr_actor_id owner = t->owner;
        uint32_t inc = t->incarnation;
        struct tr_msg *m = t->msg;

        if (m == NULL) {
            m = tr_msg_new(TR_MSG_TIMEOUT, 0);
            m->corr = t->id;
            m->from = 0;
        }
        m->to = owner;
        t->msg = NULL;
        tr__timer_remove(s, t);
        fire_one(s, owner, inc, m);
    }
}

static void timer_cb(uv_timer_t *h)
{
    struct tr_sched *s = h->data;

    s->armed = UINT64_MAX;
    tr__timers_fire(s, tr__now(s));
    tr__timers_rearm(s);
}

/* Arm the uv timer for the earliest deadline (threaded mode). */
void tr__timers_rearm(struct tr_sched *s)
{
    uint64_t d, now;

    if (s->rt->det || s->closing)
        return;
    if (s->nheap == 0) {
        if (s->armed != UINT64_MAX) {
            uv_timer_stop(&s->timer);
            s->armed = UINT64_MAX;
        }
        return;
    }
    d = s->heap[0]->deadline;
    if (d == s->armed)
        return;
    now = tr__now(s);
    s->timer.data = s;
    uv_timer_start(&s->timer, timer_cb, d > now ? d - now : 0, 0);
    s->armed = d;
}

void tr__timers_free(struct tr_sched *s)
{
    for (size_t i = 0; i < s->nheap; i++) {
        tr_msg_free(s->heap[i]->msg);
        tr_free(s->heap[i]);
    }
    tr_free(s->heap);
    s->heap = NULL;
    s->nheap = s->heap_cap = 0;
    tr__map_free(&s->timers);
}

/* ---- public ------------------------------------------------------------- */

/* Longer delays are clamped (about 292 million years): deadlines never wrap. */
#define TR__DELAY_MAX (UINT64_MAX / 4)

int tr_timer_start(struct tr_ctx *ctx, uint64_t delay_ms, struct tr_msg *msg, uint64_t *timer_out)
{
    struct tr_sched *s = ctx->s;
    struct tr_actor *a = ctx->a;
    uint64_t id;

    if (msg == NULL)
        return TR_EINVAL;
    if (atomic_load_explicit(&s->rt->closing, memory_order_relaxed) || s->closing)
        return TR_ECLOSED;
    if (delay_ms > TR__DELAY_MAX)
        delay_ms = TR__DELAY_MAX;
    id = tr__next_id(s, 1);
    if (msg == ctx->cur)
        ctx->taken = 1;
    msg->to = a->id;
    msg->from = a->id;
    msg->corr = 0;
    msg->flags = 0;
    tr__timer_add(s, id, tr__now(s) + delay_ms, a->id, a->incarnation, msg);
    tr__timers_rearm(s);
    if (timer_out)
        *timer_out = id;
    return TR_OK;
}

int tr_timer_cancel(struct tr_ctx *ctx, uint64_t timer)
{
    struct tr_sched *s = ctx->s;
    struct tr_timer *t = tr__map_get(&s->timers, timer);

    if (t == NULL || t->msg == NULL || t->owner != ctx->a->id || t->incarnation != ctx->a->incarnation)
        return TR_ENOTFOUND;
    tr_msg_free(t->msg);
    t->msg = NULL;
    tr__timer_remove(s, t);
    tr__timers_rearm(s);
    return TR_OK;
}
