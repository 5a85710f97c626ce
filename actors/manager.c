/* The run manager: owns the run actors of this node.
 *
 * It is the state service's listener (raft.h, TR_MSG_STATE_NOTE). On
 * TR_NOTE_READY it scans the runs family for active runs owned by this node
 * and starts them, running and waiting ones first, then queued ones by
 * creation time, up to env->max_active_runs; the rest wait in a FIFO. A run
 * created for this node (TR_NOTE_RUN_CREATED) or assigned to it
 * (TR_NOTE_RUN_ASSIGNED) is started or queued the same way. Other notes about
 * a run go to its actor as TR_MSG_RUN_NOTE. When a run exits (its
 * TR_MSG_RUN_EXITED, or the runtime's TR_MSG_CHILD_EXIT when it failed past
 * its restart limit) the next queued run is admitted.
 *
 * Run actors are its children (restart ON_FAILURE: a crash is a replay).
 * A run that passivates while it waits for a human no longer counts against
 * the limit; a note forwarded to it (or its deadline timer) re-creates it.
 *
 * Entry lifecycle: QUEUED -> RUNNING <-> PASSIVE -> EXITING -> (removed on
 * TR_MSG_CHILD_EXIT, when the spawn argument is freed: the runtime hands it
 * to every init, so it lives as long as the actor).
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "actors/run.h"
#include "raft/raft.h"
#include "schemas/journal_generated.h"
#include "schemas/state_generated.h"
#include "storage/storage.h"

enum entry_state { E_FREE = 0, E_TOMB, E_QUEUED, E_RUNNING, E_PASSIVE, E_EXITING };

struct entry {
    uint64_t run_id;
    tr_actor_id actor;
    struct tr_run_arg *arg;
    uint8_t state;
    bool restart;       /* start again once the exiting actor is gone */
};

struct manager {
    const struct tr_node_env *env;
    struct entry *tab;  /* open addressing, linear probing, power-of-two size */
    uint32_t cap, used; /* used counts live entries and tombstones */
    uint64_t *queue;    /* FIFO ring of run ids */
    uint32_t q_cap, q_head, q_len;
    uint32_t active;
    bool fenced;        /* TR_NOTE_FENCED until the next TR_NOTE_READY */
};

/* ---- the run_id -> entry table ------------------------------------------- */

static uint32_t slot_of(uint64_t id, uint32_t cap)
{
    id ^= id >> 33;
    id *= UINT64_C(0xff51afd7ed558ccd);
    id ^= id >> 33;
    return (uint32_t)id & (cap - 1);
}

static struct entry *find(struct manager *m, uint64_t id)
{
    for (uint32_t i = slot_of(id, m->cap), n = 0; n < m->cap; i = (i + 1) & (m->cap - 1), n++) {
        if (m->tab[i].state == E_FREE)
            return NULL;
        if (m->tab[i].state != E_TOMB && m->tab[i].run_id == id)
            return &m->tab[i];
    }
    return NULL;
}

static void grow(struct manager *m)
{
    struct entry *old = m->tab;
    uint32_t ocap = m->cap;

    m->cap = ocap ? ocap * 2 : 64;
    m->tab = tr_calloc(m->cap, sizeof *m->tab);
    m->used = 0;
    for (uint32_t i = 0; i < ocap; i++) {
        if (old[i].state <= E_TOMB)
            continue;
        uint32_t j = slot_of(old[i].run_id, m->cap);
        while (m->tab[j].state != E_FREE)
            j = (j + 1) & (m->cap - 1);
        m->tab[j] = old[i];
        m->used++;
    }
    tr_free(old);
}

static struct entry *insert(struct manager *m, uint64_t id)
{
    struct entry *e = find(m, id);

    if (e)
        return e;
    if ((m->used + 1) * 2 > m->cap)
        grow(m);
    uint32_t i = slot_of(id, m->cap);
    while (m->tab[i].state > E_TOMB)
        i = (i + 1) & (m->cap - 1);
    if (m->tab[i].state == E_FREE)
        m->used++;
    memset(&m->tab[i], 0, sizeof m->tab[i]);
    m->tab[i].run_id = id;
    return &m->tab[i];
}

static void erase(struct entry *e)
{
    tr_free(e->arg);
    memset(e, 0, sizeof *e);
    e->state = E_TOMB;
}

/* ---- the FIFO ---------------------------------------------------------------- */

static void q_push(struct manager *m, uint64_t id)
{
    if (m->q_len == m->q_cap) {
        uint32_t ncap = m->q_cap ? 2 * m->q_cap : 64;
        uint64_t *nq = tr_malloc(ncap * sizeof *nq);
        for (uint32_t i = 0; i < m->q_len; i++)
            nq[i] = m->queue[(m->q_head + i) % m->q_cap];
        tr_free(m->queue);
        m->queue = nq;
        m->q_cap = ncap;
        m->q_head = 0;
    }
    m->queue[(m->q_head + m->q_len++) % m->q_cap] = id;
}

static bool q_pop(struct manager *m, uint64_t *id)
{
    if (!m->q_len)
        return false;
    *id = m->queue[m->q_head];
    m->q_head = (m->q_head + 1) % m->q_cap;
    m->q_len--;
    return true;
}

/* ---- starting runs -------------------------------------------------------- */

static bool has_room(struct manager *m)
{
    return !m->env->max_active_runs || m->active < m->env->max_active_runs;
}

static void spawn_run(struct tr_ctx *ctx, struct manager *m, struct entry *e)
{
    struct tr_run_arg *arg = tr_malloc(sizeof *arg);
    struct tr_spawn_opts o = {
        .behavior = &tr_run_behavior,
        .arg = arg,
        .parent = tr_self(ctx),
        .sched = TR_SCHED_ANY,
        .restart = TR_RESTART_ON_FAILURE,
        .max_restarts = 3,
        .restart_window_ms = 5000,
    };
    tr_actor_id id = 0;
    int rv;

    arg->env = m->env;
    arg->run_id = e->run_id;
    if ((rv = tr_spawn(tr_ctx_rt(ctx), &o, &id)) != 0) {
        tr_log(TR_LOG_ERROR, "manager: spawn run %016" PRIx64 ": %s", e->run_id, tr_strerror(rv));
        tr_free(arg);
        erase(e);
        return;
    }
    e->actor = id;
    e->arg = arg;
    e->state = E_RUNNING;
    m->active++;
}

static void admit_next(struct tr_ctx *ctx, struct manager *m)
{
    uint64_t id;

    while (has_room(m) && q_pop(m, &id)) {
        struct entry *e = find(m, id);
        if (e && e->state == E_QUEUED)
            spawn_run(ctx, m, e);
    }
}

/* Start run `id` now or queue it; nothing if it is known already. */
static void want_run(struct tr_ctx *ctx, struct manager *m, uint64_t id)
{
    struct entry *e = find(m, id);

    if (e) {
        if (e->state == E_EXITING)
            e->restart = true;
        return;
    }
    e = insert(m, id);
    if (has_room(m) && !m->q_len) {
        spawn_run(ctx, m, e);
    } else {
        e->state = E_QUEUED;
        q_push(m, id);
    }
}

/* 1 when the record says this node owns the run and it has not ended. */
static int owned_active(struct manager *m, uint64_t id, int *status_out, int64_t *created_out)
{
    unsigned char key[8];
    void *val = NULL;
    size_t vlen = 0;
    int ok = 0;

    for (int i = 0; i < 8; i++)
        key[i] = (unsigned char)(id >> (56 - 8 * i));
    if (tr_store_get(m->env->store, NULL, TR_CF_RUNS, key, sizeof key, &val, &vlen, NULL) != 0)
        return 0;
    const struct troupe_state_Run *r = troupe_state_Run_verify_as_root_opts(val, vlen, NULL, &tr_fb_default_limits, NULL);
    if (r) {
        int st = troupe_state_Run_status(r);
        ok = troupe_state_Run_owner_node(r) == m->env->node_id && st != troupe_journal_RunStatus_Succeeded &&
             st != troupe_journal_RunStatus_Failed && st != troupe_journal_RunStatus_Cancelled;
        if (status_out)
            *status_out = st;
        if (created_out)
            *created_out = troupe_state_Run_created_at_us(r);
    }
    tr_free(val);
    return ok;
}

struct found {
    uint64_t id;
    int started;        /* running or waiting: resume first */
    int64_t created_us;
};

static int found_cmp(const void *a, const void *b)
{
    const struct found *x = a, *y = b;

    if (x->started != y->started)
        return y->started - x->started;
    if (x->created_us != y->created_us)
        return x->created_us < y->created_us ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

static void scan(struct tr_ctx *ctx, struct manager *m)
{
    struct tr_store_iter *it = NULL;
    struct tr_err err;
    struct found *f = NULL;
    size_t n = 0, cap = 0;
    const void *k, *v;
    size_t klen, vlen;
    int rv;

    if (tr_store_iter_open(m->env->store, NULL, TR_CF_RUNS, NULL, 0, NULL, 0, &it, &err) != 0) {
        tr_log(TR_LOG_ERROR, "manager: scan runs: %s", err.msg);
        return;
    }
    while ((rv = tr_store_iter_next(it, &k, &klen, &v, &vlen, &err)) == 1) {
        const struct troupe_state_Run *r;
        uint64_t id = 0;

        if (klen != 8)
            continue;
        for (int i = 0; i < 8; i++)
            id = (id << 8) | ((const unsigned char *)k)[i];
        r = troupe_state_Run_verify_as_root_opts(v, vlen, NULL, &tr_fb_default_limits, NULL);
        if (!r || troupe_state_Run_owner_node(r) != m->env->node_id)
            continue;
        int st = troupe_state_Run_status(r);
        if (st == troupe_journal_RunStatus_Succeeded || st == troupe_journal_RunStatus_Failed ||
            st == troupe_journal_RunStatus_Cancelled)
            continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            f = tr_realloc(f, cap * sizeof *f);
        }
        f[n++] = (struct found){ id, st != troupe_journal_RunStatus_Queued, troupe_state_Run_created_at_us(r) };
    }
    if (rv < 0)
        tr_log(TR_LOG_ERROR, "manager: scan runs: %s", err.msg);
    tr_store_iter_close(it);
    if (n)
        qsort(f, n, sizeof *f, found_cmp);
    for (size_t i = 0; i < n; i++)
        want_run(ctx, m, f[i].id);
    tr_free(f);
    tr_log(TR_LOG_INFO, "manager: node %" PRIu64 ": %zu active runs found, %u started, %u queued", m->env->node_id, n,
           m->active, m->q_len);
}

/* Fenced (no live leader for the fence time): stop every run actor now and
 * forget the queue; nothing starts until TR_NOTE_READY, which rescans. A
 * stopped actor's in-flight LLM or tool call may still complete at its
 * server: the next owner re-sends it with the same idempotency key. */
static void fence(struct tr_ctx *ctx, struct manager *m)
{
    uint32_t stopped = 0;

    m->fenced = true;
    for (uint32_t i = 0; i < m->cap; i++) {
        struct entry *e = &m->tab[i];
        if (e->state == E_QUEUED) {
            erase(e);
        } else if (e->state == E_RUNNING || e->state == E_PASSIVE) {
            if (e->state == E_RUNNING)
                m->active--;
            e->state = E_EXITING;
            e->restart = false;
            if (tr_stop(ctx, e->actor) == TR_OK)
                stopped++;
        } else if (e->state == E_EXITING) {
            e->restart = false;
        }
    }
    m->q_len = 0;
    m->q_head = 0;
    tr_log(TR_LOG_WARN, "manager: node %" PRIu64 ": fenced, %u run actors stopped", m->env->node_id, stopped);
}

/* ---- messages ----------------------------------------------------------------- */

static void forward(struct tr_ctx *ctx, struct manager *m, struct entry *e, const struct tr_state_note *n)
{
    if (e->state == E_PASSIVE) { /* the note re-creates it */
        e->state = E_RUNNING;
        m->active++;
    }
    int rv = tr_tell(ctx, e->actor, TR_MSG_RUN_NOTE, n, sizeof *n);
    /* ENOACTOR: it stopped on its own and its RUN_EXITED is on the way. */
    if (rv != 0)
        tr_log(rv == TR_ENOACTOR ? TR_LOG_DEBUG : TR_LOG_WARN, "manager: note for run %016" PRIx64 " dropped: %s",
               e->run_id, tr_strerror(rv));
}

static void on_note(struct tr_ctx *ctx, struct manager *m, const struct tr_state_note *n)
{
    struct entry *e;

    if (n->kind == TR_NOTE_FENCED) {
        fence(ctx, m);
        return;
    }
    if (n->kind == TR_NOTE_READY)
        m->fenced = false;
    else if (m->fenced)
        return; /* READY rescans the store */
    switch (n->kind) {
    case TR_NOTE_READY:
        scan(ctx, m);
        return;
    case TR_NOTE_RUN_CREATED:
        if (n->owner == m->env->node_id)
            want_run(ctx, m, n->run_id);
        return;
    case TR_NOTE_RUN_ASSIGNED:
        e = find(m, n->run_id);
        if (e && (e->state == E_RUNNING || e->state == E_PASSIVE))
            forward(ctx, m, e, n);
        else if (e && e->state == E_QUEUED && n->owner != m->env->node_id)
            erase(e); /* its id stays in the FIFO; admit_next skips it */
        else if (n->owner == m->env->node_id)
            want_run(ctx, m, n->run_id);
        return;
    case TR_NOTE_RUN_EVENT:
    case TR_NOTE_RUN_ENDED:
        e = find(m, n->run_id);
        if (e && (e->state == E_RUNNING || e->state == E_PASSIVE))
            forward(ctx, m, e, n);
        else if (e && e->state == E_QUEUED && n->kind == TR_NOTE_RUN_ENDED)
            erase(e);
        else if (!e && n->kind == TR_NOTE_RUN_EVENT && owned_active(m, n->run_id, NULL, NULL))
            want_run(ctx, m, n->run_id);
        return;
    default:
        return;
    }
}

static void on_run_exited(struct tr_ctx *ctx, struct manager *m, const struct tr_run_exit *x)
{
    struct entry *e = find(m, x->run_id);

    if (!e)
        return;
    if (x->reason == 2) {
        if (e->state == E_RUNNING) {
            e->state = E_PASSIVE;
            m->active--;
        }
    } else if (e->state == E_RUNNING || e->state == E_PASSIVE) {
        if (e->state == E_RUNNING)
            m->active--;
        e->state = E_EXITING;
    }
    admit_next(ctx, m);
}

static void on_child_exit(struct tr_ctx *ctx, struct manager *m, const struct tr_exit_info *x)
{
    for (uint32_t i = 0; i < m->cap; i++) {
        struct entry *e = &m->tab[i];
        if (e->state <= E_TOMB || e->actor != x->child)
            continue;
        uint64_t id = e->run_id;
        bool again = e->restart;
        if (e->state == E_RUNNING)
            m->active--;
        if (e->state != E_EXITING)
            tr_log(TR_LOG_ERROR, "manager: run %016" PRIx64 " stopped (reason %d, code %d) before it finished", id,
                   x->reason, x->code);
        erase(e);
        if (again && owned_active(m, id, NULL, NULL))
            want_run(ctx, m, id);
        break;
    }
    admit_next(ctx, m);
}

static int manager_init(struct tr_ctx *ctx, void *state, void *arg)
{
    struct manager *m = state;

    m->env = arg;
    grow(m);
    return 0;
}

static int manager_receive(struct tr_ctx *ctx, void *state, struct tr_msg *msg)
{
    struct manager *m = state;

    switch (msg->type) {
    case TR_MSG_STATE_NOTE:
        if (msg->len >= sizeof(struct tr_state_note))
            on_note(ctx, m, (const struct tr_state_note *)msg->data);
        break;
    case TR_MSG_RUN_EXITED:
        if (msg->len >= sizeof(struct tr_run_exit))
            on_run_exited(ctx, m, (const struct tr_run_exit *)msg->data);
        break;
    case TR_MSG_CHILD_EXIT:
        if (msg->len >= sizeof(struct tr_exit_info))
            on_child_exit(ctx, m, (const struct tr_exit_info *)msg->data);
        break;
    default:
        break;
    }
    return 0;
}

static void manager_fini(struct tr_ctx *ctx, void *state, enum tr_stop_reason why)
{
    struct manager *m = state;

    for (uint32_t i = 0; i < m->cap; i++)
        if (m->tab[i].state > E_TOMB)
            tr_free(m->tab[i].arg);
    tr_free(m->tab);
    tr_free(m->queue);
}

static const struct tr_behavior manager_behavior = {
    .name = "run-manager",
    .state_size = sizeof(struct manager),
    .init = manager_init,
    .receive = manager_receive,
    .fini = manager_fini,
};

int tr_run_manager_spawn(struct tr_rt *rt, const struct tr_node_env *env, int sched, tr_actor_id *out)
{
    struct tr_spawn_opts o = {
        .behavior = &manager_behavior,
        .arg = (void *)env,
        .sched = sched,
        .restart = TR_RESTART_ON_FAILURE,
    };
    return tr_spawn(rt, &o, out);
}
