/* Private structures of the runtime core, shared by its .c files.
 *
 * Invariants
 * ----------
 * 1. An actor id is gen(30 bits) << 32 | sched(8) << 24 | slot(24). gen >= 1, so
 *    no id is 0. A slot's generation grows by one each time it is freed and a
 *    slot whose generation would wrap is retired, so no id is ever reused.
 * 2. A slot's tag is gen << 2 | state. Any thread may read tags (acquire);
 *    they are written under the slot mutex, except LIVE <-> PASSIVE, which
 *    only the owner thread writes. A send targets a slot only if the tag's
 *    gen matches the id and the state is LIVE or PASSIVE.
 * 3. slot.avail = cap - (messages accepted for the slot and not yet handed to
 *    receive or dropped). Senders take a credit with fetch_sub before pushing
 *    (capped sends give it back and fail with TR_EFULL when none was left);
 *    the owner gives it back when it drops the message, or at the end of
 *    the turn in which it handed the message to receive. When a slot is
 *    freed its cap is taken away and the next spawn adds its own, so the
 *    count stays exact while stale messages of an old incarnation drain.
 *    System deliveries take a credit without checking (avail may go < 0).
 * 4. slot.ptr, the actor, its mailbox, the run queue, the timer heap and the
 *    request table are touched only by the owning scheduler thread. Other
 *    threads reach a scheduler only through its inbox (and its slot mutex).
 * 5. An actor is in the run queue at most once (F_INRQ) and never while it
 *    runs (F_RUNNING); it is there iff it has mail or must (re)start (not
 *    a passivated one: its next message queues it), or it stopped while
 *    queued (F_DEAD: freed when popped).
 * 6. Inside a callback, ctx.cur is the message being handled; once it is
 *    handed off (send/request/reply/keep) ctx.taken is set and the runtime
 *    never touches it again.
 * 7. Timers and request timeouts carry their owner's incarnation, which
 *    each restart bumps: after a restart they are dropped when they fire,
 *    and a reply to a request of an old incarnation is dropped like a late
 *    one. Passivation keeps the incarnation.
 * 8. A request with a timeout has an entry keyed by its corr (= its timer
 *    id, low bit set) until the reply or the timeout; a request without a
 *    timeout has none, and its reply is always delivered.
 */
#ifndef TR_RUNTIME_CORE_H
#define TR_RUNTIME_CORE_H

#include <stdatomic.h>
#include <stdint.h>

#include "internal.h"
#include "mpsc.h"

#define TR__SCHED_MAX 256
#define TR__SLOT_BITS 24
#define TR__CHUNK_BITS 12
#define TR__CHUNK_SLOTS (1u << TR__CHUNK_BITS)
#define TR__DIR_SIZE (1u << (TR__SLOT_BITS - TR__CHUNK_BITS))
#define TR__GEN_MAX ((1u << 30) - 1)

enum { SLOT_FREE = 0, SLOT_LIVE = 1, SLOT_PASSIVE = 2 };

/* Runtime-internal bits of tr_msg.flags. */
#define TR__MSGF_CTRL (1u << 31) /* a command to a scheduler, never delivered */
#define TR__MSGF_CALL (1u << 30) /* a tr_rt_call request to the system actor */
#define TR__MSGF_VIA (1u << 29)  /* a local send queued behind the inbox */
#define TR__MSGF_INTERNAL (TR__MSGF_CTRL | TR__MSGF_CALL | TR__MSGF_VIA)

/* Types of control messages (with TR__MSGF_CTRL). */
enum { CTRL_SPAWN = 1, CTRL_STOP, CTRL_WAKE };

/* corr / timer ids: seq << 9 | sched << 1 | has_timer. */
#define TR__CORR_TIMER 1u

struct tr_slot {
    _Atomic uint32_t tag;
    _Atomic int32_t avail;
    struct tr_actor *ptr; /* owner thread only; NULL until the spawn is attached */
};

/* Actor flags. */
enum {
    F_INRQ = 1u << 0,
    F_RUNNING = 1u << 1,
    F_INITED = 1u << 2,     /* init succeeded and fini has not run */
    F_NEEDS_INIT = 1u << 3, /* run init before the next message */
    F_PASSIVE = 1u << 4,    /* state memory freed */
    F_DEAD = 1u << 5,       /* stopped; memory freed when it leaves the run queue */
    F_STOP_REQ = 1u << 6,
    F_PASSIVATE_REQ = 1u << 7,
    F_SYSTEM = 1u << 8
};

struct tr_actor {
    tr_actor_id id;
    const struct tr_behavior *beh;
    void *arg;
    tr_actor_id parent;
    struct tr_msg *mb_head; /* mailbox: intrusive FIFO through tr_msg.next */
    struct tr_msg *mb_tail;
    struct tr_actor *rq_next;
    uint64_t window_start_ms; /* restart intensity window */
    uint32_t cap;
    uint32_t incarnation; /* bumped by each restart; stale timers/requests see it */
    uint32_t window_ms;
    uint16_t max_restarts;
    uint16_t restarts; /* restarts in the current window */
    uint16_t flags;
    uint8_t restart;      /* enum tr_restart */
    uint8_t start_reason; /* enum tr_start_reason of the pending init */
};

#define TR__ACTOR_HDR ((sizeof(struct tr_actor) + 15u) & ~(size_t)15u)

static inline void *tr__state(struct tr_actor *a)
{
    return (char *)a + TR__ACTOR_HDR;
}

struct tr_ctx {
    struct tr_sched *s;
    struct tr_actor *a;
    struct tr_msg *cur; /* message being handled, or NULL */
    int taken;
};

/* A timer-heap entry: a user timer (msg != NULL) or a request timeout. */
struct tr_timer {
    uint64_t deadline;
    uint64_t id;
    tr_actor_id owner;
    uint32_t incarnation;
    uint32_t idx; /* position in the heap */
    struct tr_msg *msg;
};

/* Open-addressing map u64 (non-zero) -> pointer. */
struct tr_map {
    uint64_t *keys;
    void **vals;
    size_t mask; /* capacity - 1; capacity is a power of two or 0 */
    size_t n;
};

/* Payload of a tr_rt_call message. */
struct tr__call {
    tr_call_fn fn;
    void (*dropped)(void *arg);
    void *arg;
};

struct tr_hook {
    void (*fn)(void *arg);
    void *arg;
};

/* Counters: written by the owner with relaxed stores, read by tr_rt_stats. */
struct tr_sched_stats {
    _Atomic uint64_t delivered;
    _Atomic uint64_t restarts;
    _Atomic uint64_t failures;
    _Atomic int64_t passivated;
    _Atomic int64_t live; /* any thread: spawn counts up */
};

struct tr_sched {
    struct tr_mpsc inbox; /* first: own cache lines */
    struct tr_rt *rt;
    int index;
    tr_actor_id sys_id;

    /* Any thread. */
    uv_async_t wake;
    uv_mutex_t slot_mu;
    struct tr_slot *_Atomic dir[TR__DIR_SIZE];
    uint32_t slot_next; /* under slot_mu */
    uint32_t *free_idx;
    uint32_t nfree, free_cap;
    struct tr_sched_stats st;

    /* Owner thread. */
    uv_loop_t loop;
    uv_idle_t idle;
    uv_timer_t timer;
    int idle_on;
    int handles_open;
    uint64_t armed; /* deadline the uv timer is armed for, UINT64_MAX if none */
    struct tr_actor *rq_head, *rq_tail;
    size_t rq_len;
    struct tr_ctx ctx;
    struct tr_timer **heap;
    size_t nheap, heap_cap;
    struct tr_map timers; /* timer id / corr -> struct tr_timer */
    uint64_t next_seq;
    uint64_t rng[4];
    struct tr_hook *hooks;
    size_t nhooks, hooks_cap;
    void *ext[TR_EXT_MAX];
    struct tr_msg *dropped_calls; /* CALL messages dropped at shutdown */
    int closing;                  /* this scheduler is tearing down */
    size_t via_inbox;             /* TR__MSGF_VIA messages still in the inbox */
    uv_thread_t thread;
};

struct tr_rt {
    int n;
    int det;
    int started;
    uint32_t budget;
    uint32_t cap;
    uint64_t start_wall_us;
    uint64_t vnow; /* deterministic virtual time */
    _Atomic int closing;
    _Atomic int64_t foreign; /* calls in progress from non-scheduler threads */
    _Atomic uint32_t rr;
    _Atomic uint64_t dead_letters;
    _Atomic uint64_t full_rejects;
    uv_barrier_t barrier;
    struct tr_sched *s[];
};

extern _Thread_local struct tr_sched *tr__tl_sched;

static inline void tr__stat_inc(_Atomic uint64_t *c, uint64_t by)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + by,
                          memory_order_relaxed);
}

static inline struct tr_slot *tr__slot(struct tr_sched *s, uint32_t idx)
{
    struct tr_slot *chunk = atomic_load_explicit(&s->dir[idx >> TR__CHUNK_BITS], memory_order_acquire);

    return chunk ? &chunk[idx & (TR__CHUNK_SLOTS - 1)] : NULL;
}

static inline int tr__id_sched(tr_actor_id id)
{
    return (int)((id >> TR__SLOT_BITS) & 0xff);
}

static inline uint32_t tr__id_slot(tr_actor_id id)
{
    return (uint32_t)(id & ((1u << TR__SLOT_BITS) - 1));
}

static inline uint32_t tr__id_gen(tr_actor_id id)
{
    return (uint32_t)(id >> 32);
}

/* The slot of a live or passive actor `id`, or NULL. Any thread. */
static inline struct tr_slot *tr__slot_of(struct tr_rt *rt, tr_actor_id id)
{
    int si = tr__id_sched(id);
    struct tr_slot *sl;
    uint32_t tag;

    if (si >= rt->n || tr__id_gen(id) == 0)
        return NULL;
    sl = tr__slot(rt->s[si], tr__id_slot(id));
    if (sl == NULL)
        return NULL;
    tag = atomic_load_explicit(&sl->tag, memory_order_acquire);
    if ((tag >> 2) != tr__id_gen(id) || (tag & 3) == SLOT_FREE)
        return NULL;
    return sl;
}

/* slots (actor.c) */
struct tr_actor *tr__actor_new(struct tr_rt *rt, struct tr_sched *s, const struct tr_spawn_opts *o,
                               uint16_t extra_flags);
void tr__attach(struct tr_sched *s, struct tr_actor *a);
void tr__actor_stop(struct tr_sched *s, struct tr_actor *a, int reason, int code);
void tr__run_turn(struct tr_sched *s, struct tr_actor *a, uint32_t budget, uint64_t *delivered);
void tr__actor_free_mem(struct tr_sched *s, struct tr_actor *a);
void tr__slot_release(struct tr_sched *s, struct tr_actor *a);

/* run queue and delivery (sched.c) */
void tr__rq_push(struct tr_sched *s, struct tr_actor *a);
struct tr_actor *tr__rq_pop(struct tr_sched *s);
void tr__kick(struct tr_sched *s);
void tr__post(struct tr_sched *s, struct tr_msg *m);
void tr__mailbox_push(struct tr_sched *s, struct tr_actor *a, struct tr_msg *m);
void tr__drop(struct tr_sched *s, struct tr_msg *m, int dead_letter);
void tr__drain_inbox(struct tr_sched *s, size_t max);
void tr__sched_run(struct tr_sched *s);
int tr__sched_open(struct tr_sched *s);
void tr__sched_teardown(struct tr_sched *s);
void tr__sched_loop_finish(struct tr_sched *s);
void tr__sched_free(struct tr_sched *s);
uint64_t tr__now(struct tr_sched *s);
uint64_t tr__rand(struct tr_sched *s);

/* timers (timer.c) */
uint64_t tr__next_id(struct tr_sched *s, int with_timer);
struct tr_timer *tr__timer_add(struct tr_sched *s, uint64_t id, uint64_t deadline, tr_actor_id owner,
                               uint32_t incarnation, struct tr_msg *msg);
void tr__timer_remove(struct tr_sched *s, struct tr_timer *t);
void tr__timers_fire(struct tr_sched *s, uint64_t now);
void tr__timers_rearm(struct tr_sched *s);
void tr__timers_free(struct tr_sched *s);
void *tr__map_get(struct tr_map *m, uint64_t key);
void tr__map_put(struct tr_map *m, uint64_t key, void *val);
void tr__map_del(struct tr_map *m, uint64_t key);
void tr__map_free(struct tr_map *m);

/* sending (send.c) */
int tr__send(struct tr_rt *rt, tr_actor_id to, struct tr_msg *m, int capped);

#endif
