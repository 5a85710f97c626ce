/* FSM handlers for the node table (NodeAdd, NodeUp, NodeDown, NodeDrain,
 * NodeRemove), placement of new runs, and the load index both rest on.
 *
 * Node records live in the meta family under "node/" + id (8 bytes BE), so a
 * prefix scan returns them in id order.
 *
 * Placement (fsm_load_pick). Among the registered nodes in state Up, the one
 * with the lowest load wins, compared in this order:
 *   1. nodes with room (capacity 0 = unlimited, or active < capacity) before
 *      nodes at or over capacity;
 *   2. the lower ratio active / capacity (exact integer cross-multiplication,
 *      no floating point). A node with capacity 0 is weighed as if its
 *      capacity were the largest capacity among the Up candidates (1 when
 *      none has one: then the ratio is the plain active count);
 *   3. fewer active runs;
 *   4. the lower node id.
 * When every Up node is full the least-loaded one still gets the run: the
 * owner's run manager keeps it `queued` until it has room. RunCreate with
 * owner_node 0 is placed this way; with an empty node table (one node that
 * has not registered yet) or no node Up, the owner is the command's
 * origin_node (else leader_node).
 *
 * Failover. NodeDown and NodeDrain first apply the explicit reassignments
 * they carry, then move every remaining active run of the node, one at a
 * time in run-id order, to the least-loaded other Up node (epoch + 1,
 * run.assigned in the run's journal, TR_NOTE_RUN_ASSIGNED). With no other
 * node Up the runs stay where they are (logged). NodeUp and NodeAdd bring a
 * node Up and then move the active runs of every Down node the same way (so
 * a cluster whose other nodes were all down recovers); nothing else moves on
 * its own: a Draining node keeps the runs nobody could take. NodeRemove
 * deletes the record; it is refused (TR_FSM_INVALID) while the node owns
 * active runs and is Up, or is Down/Draining with no other node Up to take
 * them; a Down/Draining node's runs are moved first. One entry moves at most
 * FSM_MOVES_MAX runs (see there): the same command proposed again moves the
 * rest (NodeDown/NodeDrain of a node already in that state do just that).
 *
 * Rebalancing (tr_fsm_rebalance_plan, read-only; the cluster leader proposes
 * what it returns as RunReassign{only_if_queued}, which fsm_runs.c checks
 * again at apply time). Queued runs move from a full node to one with room:
 *   - a receiver is an Up node with room: capacity 0, or active (queued runs
 *     included) plus the moves to it still pending below its capacity;
 *   - a donor is an Up node with active > capacity > 0; of its runs still in
 *     status Queued, sorted oldest first (created_at, then run id), its run
 *     manager starts the first queued - min(queued, active - capacity)
 *     itself, and only the ones after those may move (less the pending ones);
 *   - the candidates of every donor go oldest first, each to the receiver
 *     placement would pick (the order of fsm_load_pick over the receivers,
 *     counting the moves planned so far), until no receiver has room.
 * Since active counts queued runs, a move never takes a receiver past its
 * capacity and a donor only gives runs beyond its own: a moved run never
 * makes its new owner a donor, so runs do not travel back and forth.
 *
 * The load index (struct fsm_load). Placement needs, for every node, its
 * state, capacity and active-run count; failover needs the active runs of one
 * node, and rebalancing the queued ones (status Queued, created_at) of each.
 * All are derived from the store and kept in memory: node records and
 * a scan of the whole runs family, read the first time the index is needed
 * after the FSM is created, after a snapshot restore and after a failed
 * commit. From then on every applied change keeps it current: run creation,
 * moves, and every status change of a run (runs_flush in fsm.c syncs each
 * record the entry wrote, whichever handler wrote it), node records written
 * here.
 *
 * Invariants
 *  1. The index equals what a fresh scan of the store would give, plus the
 *     changes of the entry being applied. Decisions read only the index, so
 *     every replica makes the same decisions whether its index is live or was
 *     just rebuilt.
 *  2. It is built before the first node record of an entry is written (each
 *     handler calls fsm_load_ensure first), so a scan never misses a node
 *     change of the current entry; run changes of the current entry are
 *     folded in from the entry's run cache right after a scan.
 *  3. A record that does not verify is skipped by the scan exactly as
 *     fsm_run_get treats it as absent.
 */
#include <stdlib.h>
#include <string.h>

#include "raft/fsm_int.h"

/* Runs one entry may move. Each move keeps its run in the entry's cache and
 * adds ~0.5 KB to its batch; an unbounded entry could outgrow TR_BATCH_MAX,
 * and a batch that fails to commit is fatal on every replica alike. Runs
 * beyond the bound stay put (logged); proposing the same NodeDown, NodeDrain
 * or NodeRemove again moves the next ones. */
#define FSM_MOVES_MAX 65536u

static tr_fb_ref copy_str(struct tr_fb_builder *b, struct tr_fb_str s)
{
    return s.ptr != NULL ? tr_fb_create_string(b, s.ptr, s.len) : 0;
}

static void put_built(struct tr_fsm *f, enum tr_cf cf, const void *key, size_t klen)
{
    size_t len;
    const uint8_t *data = tr_fb_builder_data(&f->b, &len);
    fsm_put(f, cf, key, klen, data, len);
}

/* ---- the load index: nodes ---------------------------------------------------------- */

/* Index of the first node with id >= `id`. */
static uint32_t node_lower(const struct fsm_load *l, uint64_t id)
{
    uint32_t lo = 0, hi = l->n_nodes;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (l->nodes[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static struct fsm_node_load *node_find(struct fsm_load *l, uint64_t id)
{
    uint32_t i = node_lower(l, id);
    return i < l->n_nodes && l->nodes[i].id == id ? &l->nodes[i] : NULL;
}

/* The entry of `id`, added unregistered when missing. */
static struct fsm_node_load *node_get(struct fsm_load *l, uint64_t id)
{
    uint32_t i = node_lower(l, id);
    if (i < l->n_nodes && l->nodes[i].id == id)
        return &l->nodes[i];
    if (l->n_nodes == l->cap_nodes) {
        l->cap_nodes = l->cap_nodes ? 2 * l->cap_nodes : 8;
        l->nodes = tr_realloc(l->nodes, l->cap_nodes * sizeof *l->nodes);
    }
    memmove(&l->nodes[i + 1], &l->nodes[i], (l->n_nodes - i) * sizeof *l->nodes);
    l->n_nodes++;
    struct fsm_node_load *n = &l->nodes[i];
    memset(n, 0, sizeof *n);
    n->id = id;
    n->state = FSM_NODE_UNREGISTERED;
    return n;
}

/* Drop an unregistered entry that owns nothing (keeps the table canonical). */
static void node_tidy(struct fsm_load *l, struct fsm_node_load *n)
{
    if (n->state != FSM_NODE_UNREGISTERED || n->active != 0)
        return;
    uint32_t i = (uint32_t)(n - l->nodes);
    memmove(&l->nodes[i], &l->nodes[i + 1], (l->n_nodes - i - 1) * sizeof *l->nodes);
    l->n_nodes--;
}

/* ---- the load index: active runs ---------------------------------------------------- */

static uint32_t hash_run(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    return (uint32_t)k;
}

/* Slot of `key`, or of the empty slot where it would go. run_cap > 0. */
static uint32_t run_slot_of(const struct fsm_load *l, uint64_t key)
{
    uint32_t mask = l->run_cap - 1, h = hash_run(key) & mask;
    while (l->run_keys[h] != 0 && l->run_keys[h] != key)
        h = (h + 1) & mask;
    return h;
}

static void runs_grow(struct fsm_load *l)
{
    uint32_t old_cap = l->run_cap;
    uint64_t *old_keys = l->run_keys, *old_owners = l->run_owners;
    int64_t *old_created = l->run_created;
    uint8_t *old_queued = l->run_queued;
    l->run_cap = old_cap ? 2 * old_cap : 64;
    l->run_keys = tr_calloc(l->run_cap, sizeof *l->run_keys);
    l->run_owners = tr_calloc(l->run_cap, sizeof *l->run_owners);
    l->run_created = tr_calloc(l->run_cap, sizeof *l->run_created);
    l->run_queued = tr_calloc(l->run_cap, sizeof *l->run_queued);
    for (uint32_t i = 0; i < old_cap; i++) {
        if (old_keys[i] == 0)
            continue;
        uint32_t h = run_slot_of(l, old_keys[i]);
        l->run_keys[h] = old_keys[i];
        l->run_owners[h] = old_owners[i];
        l->run_created[h] = old_created[i];
        l->run_queued[h] = old_queued[i];
    }
    tr_free(old_keys);
    tr_free(old_owners);
    tr_free(old_created);
    tr_free(old_queued);
}

/* Record active run `key` owned by `owner` (not present yet); `queued`
 * while its status is Queued. */
static void run_insert(struct fsm_load *l, uint64_t key, uint64_t owner, bool queued, int64_t created_us)
{
    if (2 * ((uint64_t)l->n_active + 1) > l->run_cap)
        runs_grow(l);
    uint32_t h = run_slot_of(l, key);
    l->run_keys[h] = key;
    l->run_owners[h] = owner;
    l->run_created[h] = created_us;
    l->run_queued[h] = queued;
    l->n_active++;
    struct fsm_node_load *n = node_get(l, owner);
    n->active++;
    n->queued += queued;
}

/* Forget the active run in slot h: backward-shift deletion keeps every probe
 * chain unbroken without tombstones. */
static void run_erase(struct fsm_load *l, uint32_t h)
{
    uint32_t mask = l->run_cap - 1;
    struct fsm_node_load *n = node_find(l, l->run_owners[h]);
    if (n != NULL) {
        n->active--;
        n->queued -= l->run_queued[h];
        node_tidy(l, n);
    }
    l->run_keys[h] = 0;
    l->n_active--;
    uint32_t hole = h, j = h;
    for (;;) {
        j = (j + 1) & mask;
        if (l->run_keys[j] == 0)
            break;
        uint32_t home = hash_run(l->run_keys[j]) & mask;
        /* Leave j where it is when its home lies cyclically in (hole, j]. */
        bool stays = hole <= j ? (hole < home && home <= j) : (hole < home || home <= j);
        if (stays)
            continue;
        l->run_keys[hole] = l->run_keys[j];
        l->run_owners[hole] = l->run_owners[j];
        l->run_created[hole] = l->run_created[j];
        l->run_queued[hole] = l->run_queued[j];
        l->run_keys[j] = 0;
        hole = j;
    }
}

void fsm_load_sync_run(struct tr_fsm *f, const struct run_rec *r)
{
    struct fsm_load *l = &f->load;
    if (!l->valid || r->key == 0)
        return;
    bool want = !tr_run_status_terminal(r->status);
    bool queued = r->status == troupe_journal_RunStatus_Queued;
    uint32_t h = l->run_cap ? run_slot_of(l, r->key) : 0;
    bool have = l->run_cap && l->run_keys[h] == r->key;
    if (have && want && l->run_owners[h] == r->owner_node && l->run_queued[h] == queued)
        return;
    if (have)
        run_erase(l, h);
    if (want)
        run_insert(l, r->key, r->owner_node, queued, r->created_at_us);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The active runs owned by `owner`, in run-id order; *n of them (caller frees). */
static uint64_t *runs_of(struct fsm_load *l, uint64_t owner, uint32_t *n)
{
    struct fsm_node_load *nl = node_find(l, owner);
    uint32_t want = nl != NULL ? nl->active : 0, k = 0;
    *n = 0;
    if (want == 0)
        return NULL;
    uint64_t *out = tr_malloc(want * sizeof *out);
    for (uint32_t i = 0; i < l->run_cap && k < want; i++)
        if (l->run_keys[i] != 0 && l->run_owners[i] == owner)
            out[k++] = l->run_keys[i];
    qsort(out, k, sizeof *out, cmp_u64);
    *n = k;
    return out;
}

/* ---- the load index: build, invalidate -------------------------------------------------- */

static void load_clear(struct fsm_load *l)
{
    l->n_nodes = 0;
    l->n_active = 0;
    if (l->run_cap)
        memset(l->run_keys, 0, l->run_cap * sizeof *l->run_keys);
    l->valid = false;
}

void fsm_load_invalidate(struct tr_fsm *f)
{
    load_clear(&f->load);
}

void fsm_load_free(struct tr_fsm *f)
{
    struct fsm_load *l = &f->load;
    tr_free(l->nodes);
    tr_free(l->run_keys);
    tr_free(l->run_owners);
    tr_free(l->run_created);
    tr_free(l->run_queued);
    memset(l, 0, sizeof *l);
}

static const struct troupe_state_Node *node_verify(const void *val, size_t vlen)
{
    struct tr_fb_error ferr;
    return troupe_state_Node_verify_as_root_opts(val, vlen, "TRN2", &tr_fb_default_limits, &ferr);
}

static int scan_nodes(struct tr_fsm *f, struct tr_err *err)
{
    struct tr_store_iter *it;
    int rv = tr_store_iter_prefix(f->store, NULL, TR_CF_META, FSM_NODE_PREFIX, strlen(FSM_NODE_PREFIX), &it, err);
    if (rv != TR_OK)
        return rv;
    const void *key, *val;
    size_t klen, vlen;
    while ((rv = tr_store_iter_next(it, &key, &klen, &val, &vlen, err)) == 1) {
        const struct troupe_state_Node *n = node_verify(val, vlen);
        if (n == NULL) {
            tr_log(TR_LOG_ERROR, "fsm: a node record does not verify; left out of placement");
            continue;
        }
        int8_t state = troupe_state_Node_state(n);
        if (state == troupe_state_NodeState_Removed || troupe_state_Node_node_id(n) == 0)
            continue; /* written by older versions, which kept removed nodes */
        struct fsm_node_load *nl = node_get(&f->load, troupe_state_Node_node_id(n));
        nl->state = state;
        nl->capacity = troupe_state_Node_capacity(n);
    }
    tr_store_iter_close(it);
    return rv < 0 ? rv : TR_OK;
}

static int scan_runs(struct tr_fsm *f, struct tr_err *err)
{
    struct tr_store_iter *it;
    int rv = tr_store_iter_open(f->store, NULL, TR_CF_RUNS, NULL, 0, NULL, 0, &it, err);
    if (rv != TR_OK)
        return rv;
    const void *key, *val;
    size_t klen, vlen;
    while ((rv = tr_store_iter_next(it, &key, &klen, &val, &vlen, err)) == 1) {
        if (klen != 8)
            continue;
        uint64_t k = 0;
        for (int i = 0; i < 8; i++)
            k = (k << 8) | ((const unsigned char *)key)[i];
        struct tr_fb_error ferr;
        const struct troupe_state_Run *r = troupe_state_Run_verify_as_root(val, vlen, &ferr);
        uint64_t id = 0;
        struct tr_fb_str rid = r != NULL ? troupe_state_Run_run_id(r) : (struct tr_fb_str){ 0 };
        if (r == NULL || tr_run_id_from_text(rid.ptr, rid.len, &id) != TR_OK || id != k)
            continue; /* invariant 3: fsm_run_get logs it when it is read */
        int8_t status = troupe_state_Run_status(r);
        if (!tr_run_status_terminal(status))
            run_insert(&f->load, k, troupe_state_Run_owner_node(r), status == troupe_journal_RunStatus_Queued,
                       troupe_state_Run_created_at_us(r));
    }
    tr_store_iter_close(it);
    return rv < 0 ? rv : TR_OK;
}

int fsm_load_ensure(struct tr_fsm *f)
{
    struct fsm_load *l = &f->load;
    if (l->valid)
        return TR_OK;
    load_clear(l);
    struct tr_err err = { 0 };
    int rv = scan_nodes(f, &err);
    if (rv == TR_OK)
        rv = scan_runs(f, &err);
    if (rv != TR_OK) {
        /* As fatal as any other read error: decisions would depend on this
         * node's disk. */
        load_clear(l);
        tr_err_wrap(&err, "fsm: building the load index");
        f->on_fatal(f->ud, err.msg);
        return rv;
    }
    l->valid = true;
    /* Invariant 2: fold in what the current entry already changed. */
    for (uint32_t i = 0; i < f->n_runs; i++)
        if (f->runs[i].dirty)
            fsm_load_sync_run(f, &f->runs[i].rec);
    tr_log(TR_LOG_DEBUG, "fsm: load index built: %u nodes, %u active runs", l->n_nodes, l->n_active);
    return TR_OK;
}

/* ---- placement ------------------------------------------------------------------------- */

/* true when a is a better choice than b (eff_*: capacities to weigh by). */
static bool better(const struct fsm_node_load *a, uint64_t eff_a, const struct fsm_node_load *b, uint64_t eff_b)
{
    bool room_a = a->capacity == 0 || a->active < a->capacity;
    bool room_b = b->capacity == 0 || b->active < b->capacity;
    if (room_a != room_b)
        return room_a;
    uint64_t la = (uint64_t)a->active * eff_b, lb = (uint64_t)b->active * eff_a;
    if (la != lb)
        return la < lb;
    if (a->active != b->active)
        return a->active < b->active;
    return a->id < b->id;
}

uint64_t fsm_load_pick(struct tr_fsm *f, uint64_t exclude)
{
    struct fsm_load *l = &f->load;
    uint32_t cmax = 0;
    for (uint32_t i = 0; i < l->n_nodes; i++)
        if (l->nodes[i].state == troupe_state_NodeState_Up && l->nodes[i].id != exclude && l->nodes[i].capacity > cmax)
            cmax = l->nodes[i].capacity;
    if (cmax == 0)
        cmax = 1;
    const struct fsm_node_load *best = NULL;
    uint64_t best_eff = 0;
    for (uint32_t i = 0; i < l->n_nodes; i++) {
        const struct fsm_node_load *n = &l->nodes[i];
        if (n->state != troupe_state_NodeState_Up || n->id == exclude)
            continue;
        uint64_t eff = n->capacity ? n->capacity : cmax;
        if (best == NULL || better(n, eff, best, best_eff)) {
            best = n;
            best_eff = eff;
        }
    }
    return best != NULL ? best->id : 0;
}

uint32_t fsm_load_registered(struct tr_fsm *f)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < f->load.n_nodes; i++)
        if (f->load.nodes[i].state != FSM_NODE_UNREGISTERED)
            n++;
    return n;
}

/* ---- rebalancing queued runs ---------------------------------------------------------- */

bool fsm_load_may_rebalance(struct tr_fsm *f, uint64_t from, uint64_t to)
{
    if (from == to || fsm_load_ensure(f) != TR_OK)
        return false;
    const struct fsm_node_load *a = node_find(&f->load, from), *b = node_find(&f->load, to);
    return a != NULL && b != NULL && a->state == troupe_state_NodeState_Up && a->capacity > 0 &&
           a->active > a->capacity && b->state == troupe_state_NodeState_Up &&
           (b->capacity == 0 || b->active < b->capacity);
}

/* One node's part in a plan (indexes parallel to f->load.nodes). */
struct rb_node {
    uint32_t in, out;           /* pending moves to / from it */
    uint32_t assigned;          /* moves to it in this plan */
    uint32_t room;              /* receiver: runs it may still take */
    uint32_t keep, give;        /* donor: queued runs its owner admits itself; runs to give */
    bool receiver, donor;
};

struct rb_run {
    uint64_t key, owner;
    int64_t created;
};

/* Oldest first; equal times in run-id order. */
static int rb_age_cmp(const struct rb_run *x, const struct rb_run *y)
{
    if (x->created != y->created)
        return x->created < y->created ? -1 : 1;
    return x->key < y->key ? -1 : x->key > y->key;
}

static int rb_by_owner(const void *a, const void *b)
{
    const struct rb_run *x = a, *y = b;
    if (x->owner != y->owner)
        return x->owner < y->owner ? -1 : 1;
    return rb_age_cmp(x, y);
}

static int rb_by_age(const void *a, const void *b)
{
    return rb_age_cmp(a, b);
}

static bool rb_pending(const struct tr_fsm_move *p, uint32_t n, uint64_t key)
{
    for (uint32_t i = 0; i < n; i++)
        if (p[i].run_id == key)
            return true;
    return false;
}

/* The index in f->load.nodes of node id, or n_nodes. */
static uint32_t rb_index(const struct fsm_load *l, uint64_t id)
{
    uint32_t i = node_lower(l, id);
    return i < l->n_nodes && l->nodes[i].id == id ? i : l->n_nodes;
}

/* The run's current epoch when the store's record agrees with the index
 * (owned by `owner`, status Queued); 0 otherwise (logged). */
static uint64_t rb_queued_epoch(struct tr_fsm *f, uint64_t key, uint64_t owner)
{
    unsigned char k[8];
    void *val = NULL;
    size_t vlen = 0;
    tr_run_key(key, k);
    struct tr_err err = { 0 };
    int rv = tr_store_get(f->store, NULL, TR_CF_RUNS, k, sizeof k, &val, &vlen, &err);
    if (rv != TR_OK) {
        tr_log(TR_LOG_ERROR, "fsm: rebalancing: run %016llx: %s", (unsigned long long)key,
               rv == TR_ENOTFOUND ? "no record" : err.msg);
        return 0;
    }
    struct tr_fb_error ferr;
    const struct troupe_state_Run *r = troupe_state_Run_verify_as_root(val, vlen, &ferr);
    uint64_t epoch = 0;
    if (r != NULL && troupe_state_Run_owner_node(r) == owner &&
        troupe_state_Run_status(r) == troupe_journal_RunStatus_Queued)
        epoch = troupe_state_Run_epoch(r);
    else
        tr_log(TR_LOG_ERROR, "fsm: rebalancing: the load index is out of line for run %016llx",
               (unsigned long long)key);
    tr_free(val);
    return epoch;
}

uint32_t tr_fsm_rebalance_plan(struct tr_fsm *f, const struct tr_fsm_move *pending, uint32_t n_pending,
                               int (*may_receive)(void *ud, uint64_t node), void *ud, struct tr_fsm_move *out,
                               uint32_t cap)
{
    if (cap == 0 || fsm_load_ensure(f) != TR_OK)
        return 0;
    struct fsm_load *l = &f->load;
    uint32_t nn = l->n_nodes;
    if (nn < 2)
        return 0;
    struct rb_node *rb = tr_calloc(nn, sizeof *rb);
    for (uint32_t i = 0; i < n_pending; i++) {
        uint32_t a = rb_index(l, pending[i].from), b = rb_index(l, pending[i].to);
        if (a < nn)
            rb[a].out++;
        if (b < nn)
            rb[b].in++;
    }

    /* Receivers and donors, from the counters alone: most ticks end here. */
    uint64_t room_total = 0, give_total = 0, queued_total = 0;
    uint32_t cmax = 1;
    for (uint32_t i = 0; i < nn; i++) {
        const struct fsm_node_load *n = &l->nodes[i];
        struct rb_node *x = &rb[i];
        if (n->state != troupe_state_NodeState_Up)
            continue;
        uint64_t load = (uint64_t)n->active + x->in;
        if (n->capacity == 0 || load < n->capacity) {
            if (may_receive != NULL && !may_receive(ud, n->id))
                continue;
            x->receiver = true;
            x->room = n->capacity == 0 ? UINT32_MAX : (uint32_t)(n->capacity - load);
            room_total += x->room;
            if (n->capacity > cmax)
                cmax = n->capacity;
        } else if (n->active > n->capacity && n->queued > 0) {
            uint32_t beyond = n->active - n->capacity < n->queued ? n->active - n->capacity : n->queued;
            x->keep = n->queued - beyond;
            x->give = beyond > x->out ? beyond - x->out : 0;
            x->donor = x->give > 0;
            give_total += x->give;
            queued_total += x->donor ? n->queued : 0;
        }
    }
    uint64_t want = room_total < give_total ? room_total : give_total;
    if (want > cap)
        want = cap;
    uint32_t n_out = 0;
    if (want == 0)
        goto done;

    /* The donors' queued runs, per donor oldest first. */
    struct rb_run *runs = tr_malloc(queued_total * sizeof *runs);
    uint32_t n_runs = 0;
    for (uint32_t h = 0; h < l->run_cap && n_runs < queued_total; h++) {
        if (l->run_keys[h] == 0 || !l->run_queued[h])
            continue;
        uint32_t i = rb_index(l, l->run_owners[h]);
        if (i < nn && rb[i].donor)
            runs[n_runs++] = (struct rb_run){ l->run_keys[h], l->run_owners[h], l->run_created[h] };
    }
    qsort(runs, n_runs, sizeof *runs, rb_by_owner);
    /* Each donor keeps the oldest `keep` (its owner starts those first) and
     * offers the next `give` not already on their way: compacted in place. */
    uint32_t n_cand = 0;
    for (uint32_t s = 0; s < n_runs;) {
        uint32_t e = s;
        while (e < n_runs && runs[e].owner == runs[s].owner)
            e++;
        struct rb_node *x = &rb[rb_index(l, runs[s].owner)];
        uint32_t given = 0;
        for (uint32_t j = s + x->keep; j < e && given < x->give; j++) {
            if (rb_pending(pending, n_pending, runs[j].key))
                continue;
            runs[n_cand++] = runs[j];
            given++;
        }
        s = e;
    }
    qsort(runs, n_cand, sizeof *runs, rb_by_age);

    /* Oldest first, each to the least-loaded receiver (placement's order). */
    for (uint32_t c = 0; c < n_cand && n_out < want; c++) {
        const struct fsm_node_load *best = NULL;
        struct fsm_node_load best_now = { 0 };
        uint32_t best_i = 0;
        uint64_t best_eff = 0;
        for (uint32_t i = 0; i < nn; i++) {
            if (!rb[i].receiver || rb[i].room == 0 || l->nodes[i].id == runs[c].owner)
                continue;
            struct fsm_node_load now = l->nodes[i];
            now.active += rb[i].in + rb[i].assigned;
            uint64_t eff = now.capacity ? now.capacity : cmax;
            if (best == NULL || better(&now, eff, &best_now, best_eff)) {
                best = &l->nodes[i];
                best_now = now;
                best_eff = eff;
                best_i = i;
            }
        }
        if (best == NULL)
            break;
        uint64_t epoch = rb_queued_epoch(f, runs[c].key, runs[c].owner);
        if (epoch == 0)
            continue;
        out[n_out++] = (struct tr_fsm_move){ runs[c].key, runs[c].owner, best->id, epoch + 1 };
        rb[best_i].assigned++;
        rb[best_i].room--;
    }
    tr_free(runs);
done:
    tr_free(rb);
    return n_out;
}

/* Move every active run of `from`, in run-id order, to the least-loaded Up
 * node other than `from`, at most *budget of them (decremented). Returns how
 * many stayed (no node was Up, or the budget ran out). */
static uint32_t evacuate(struct tr_fsm *f, uint64_t from, const char *why, uint32_t *budget)
{
    uint32_t n;
    uint64_t *keys = runs_of(&f->load, from, &n);
    uint32_t i = 0;
    for (; i < n && *budget > 0; i++) {
        uint64_t to = fsm_load_pick(f, from);
        if (to == 0)
            break;
        struct run_slot *s = fsm_run_get(f, keys[i]);
        if (s == NULL || tr_run_status_terminal(s->rec.status) || s->rec.owner_node != from) {
            /* Cannot happen while invariant 1 holds; never move on a guess. */
            tr_log(TR_LOG_ERROR, "fsm: load index out of line for run %016llx", (unsigned long long)keys[i]);
            continue;
        }
        fsm_run_move(f, s, to, why);
        (*budget)--;
    }
    tr_free(keys);
    if (i < n)
        tr_log(TR_LOG_WARN, "fsm: %u active runs stay with node %llu (%s): %s", n - i, (unsigned long long)from, why,
               *budget == 0 ? "moved the most one entry may (re-propose the command)" : "no other node is up");
    return n - i;
}

/* After a node came Up: the runs of Down nodes move to Up nodes. */
static void rescue_down(struct tr_fsm *f, uint32_t *budget)
{
    struct fsm_load *l = &f->load;
    /* evacuate() reorders l->nodes (an entry may be added or dropped), so
     * walk ids, not pointers. */
    uint64_t id = 0;
    for (;;) {
        uint32_t i = node_lower(l, id + 1);
        while (i < l->n_nodes && !(l->nodes[i].state == troupe_state_NodeState_Down && l->nodes[i].active > 0))
            i++;
        if (i == l->n_nodes)
            return;
        id = l->nodes[i].id;
        evacuate(f, id, "owner node down", budget);
        if (id == UINT64_MAX || *budget == 0)
            return;
    }
}

/* ---- node records ------------------------------------------------------------------------ */

static size_t node_key(uint64_t id, unsigned char out[16])
{
    size_t n = strlen(FSM_NODE_PREFIX);
    memcpy(out, FSM_NODE_PREFIX, n);
    tr_run_key(id, out + n);
    return n + 8;
}

/* Write the record of node id and mirror it in the (valid) load index. */
static void node_store(struct tr_fsm *f, uint64_t id, struct tr_fb_str raft, struct tr_fb_str peer,
                       struct tr_fb_str client, struct tr_fb_str http, int8_t state, int64_t since,
                       uint32_t capacity)
{
    struct tr_fb_builder *b = &f->b;
    tr_fb_builder_reset(b);
    tr_fb_ref r = copy_str(b, raft), p = copy_str(b, peer), c = copy_str(b, client), h = copy_str(b, http);
    troupe_state_Node_start(b);
    troupe_state_Node_add_node_id(b, id);
    troupe_state_Node_add_raft_address(b, r);
    troupe_state_Node_add_peer_address(b, p);
    troupe_state_Node_add_client_address(b, c);
    troupe_state_Node_add_http_address(b, h);
    troupe_state_Node_add_state(b, state);
    troupe_state_Node_add_since_us(b, since);
    troupe_state_Node_add_capacity(b, capacity);
    tr_fb_finish(b, troupe_state_Node_end(b), "TRN2");
    unsigned char k[16];
    put_built(f, TR_CF_META, k, node_key(id, k));
    if (f->load.valid) { /* it is: every handler builds it first (invariant 2) */
        struct fsm_node_load *nl = node_get(&f->load, id);
        nl->state = state;
        nl->capacity = capacity;
    }
    fsm_note(f, TR_NOTE_NODES_CHANGED, NULL, 0, 0);
}

/* Read node id's record: TR_FSM_OK with *n (pointing into *val, which the
 * caller frees), TR_FSM_NOT_FOUND, or TR_FSM_INVALID when it does not verify. */
static int node_load(struct tr_fsm *f, uint64_t id, void **val, const struct troupe_state_Node **n)
{
    unsigned char k[16];
    size_t vlen;
    *val = NULL;
    *n = NULL;
    if (id == 0 || fsm_get(f, TR_CF_META, k, node_key(id, k), val, &vlen) != TR_OK)
        return TR_FSM_NOT_FOUND;
    *n = node_verify(*val, vlen);
    if (*n == NULL) {
        tr_log(TR_LOG_ERROR, "fsm: node record %llu does not verify", (unsigned long long)id);
        return TR_FSM_INVALID;
    }
    return TR_FSM_OK;
}

/* Set node id's state (the record must exist); since_us moves only when the
 * state changes. */
static int node_set_state(struct tr_fsm *f, uint64_t id, int8_t state)
{
    void *val;
    const struct troupe_state_Node *n;
    int verdict = node_load(f, id, &val, &n);
    if (verdict == TR_FSM_OK && troupe_state_Node_state(n) != state)
        node_store(f, id, troupe_state_Node_raft_address(n), troupe_state_Node_peer_address(n),
                   troupe_state_Node_client_address(n), troupe_state_Node_http_address(n), state, f->now_us,
                   troupe_state_Node_capacity(n));
    tr_free(val);
    return verdict;
}

/* ---- handlers ------------------------------------------------------------------------------ */

int fsm_node_add(struct tr_fsm *f, const struct troupe_cmd_NodeAdd *c)
{
    uint64_t id = troupe_cmd_NodeAdd_node_id(c);
    if (id == 0)
        return TR_FSM_INVALID;
    if (fsm_load_ensure(f) != TR_OK)
        return TR_FSM_INVALID;
    /* Re-registering an Up node keeps its since_us. */
    void *val;
    const struct troupe_state_Node *old;
    int64_t since = f->now_us;
    if (node_load(f, id, &val, &old) == TR_FSM_OK && troupe_state_Node_state(old) == troupe_state_NodeState_Up)
        since = troupe_state_Node_since_us(old);
    tr_free(val);
    node_store(f, id, troupe_cmd_NodeAdd_raft_address(c), troupe_cmd_NodeAdd_peer_address(c),
               troupe_cmd_NodeAdd_client_address(c), troupe_cmd_NodeAdd_http_address(c), troupe_state_NodeState_Up,
               since, troupe_cmd_NodeAdd_capacity(c));
    uint32_t budget = FSM_MOVES_MAX;
    rescue_down(f, &budget);
    return TR_FSM_OK;
}

int fsm_node_up(struct tr_fsm *f, const struct troupe_cmd_NodeUp *c)
{
    if (fsm_load_ensure(f) != TR_OK)
        return TR_FSM_INVALID;
    int verdict = node_set_state(f, troupe_cmd_NodeUp_node_id(c), troupe_state_NodeState_Up);
    uint32_t budget = FSM_MOVES_MAX;
    if (verdict == TR_FSM_OK)
        rescue_down(f, &budget);
    return verdict;
}

int fsm_node_down(struct tr_fsm *f, const struct troupe_cmd_NodeDown *c)
{
    uint64_t id = troupe_cmd_NodeDown_node_id(c);
    if (fsm_load_ensure(f) != TR_OK)
        return TR_FSM_INVALID;
    int verdict = node_set_state(f, id, troupe_state_NodeState_Down);
    if (verdict != TR_FSM_OK)
        return verdict;
    for (uint32_t i = 0; i < troupe_cmd_NodeDown_reassignments_len(c); i++)
        (void)fsm_reassign_cmd(f, troupe_cmd_NodeDown_reassignments_at(c, i), "owner node down", NULL);
    uint32_t budget = FSM_MOVES_MAX;
    evacuate(f, id, "owner node down", &budget);
    return TR_FSM_OK;
}

int fsm_node_drain(struct tr_fsm *f, const struct troupe_cmd_NodeDrain *c)
{
    uint64_t id = troupe_cmd_NodeDrain_node_id(c);
    if (fsm_load_ensure(f) != TR_OK)
        return TR_FSM_INVALID;
    int verdict = node_set_state(f, id, troupe_state_NodeState_Draining);
    if (verdict != TR_FSM_OK)
        return verdict;
    for (uint32_t i = 0; i < troupe_cmd_NodeDrain_reassignments_len(c); i++)
        (void)fsm_reassign_cmd(f, troupe_cmd_NodeDrain_reassignments_at(c, i), "owner node draining", NULL);
    uint32_t budget = FSM_MOVES_MAX;
    evacuate(f, id, "owner node draining", &budget);
    return TR_FSM_OK;
}

int fsm_node_remove(struct tr_fsm *f, const struct troupe_cmd_NodeRemove *c)
{
    uint64_t id = troupe_cmd_NodeRemove_node_id(c);
    if (fsm_load_ensure(f) != TR_OK)
        return TR_FSM_INVALID;
    void *val;
    const struct troupe_state_Node *n;
    int verdict = node_load(f, id, &val, &n);
    int8_t state = n != NULL ? troupe_state_Node_state(n) : FSM_NODE_UNREGISTERED;
    tr_free(val);
    if (verdict == TR_FSM_NOT_FOUND)
        return verdict;
    /* A record that does not verify may still go: removing it is the repair. */
    struct fsm_node_load *nl = node_find(&f->load, id);
    if (nl != NULL && nl->active > 0) {
        if (state == troupe_state_NodeState_Up) {
            tr_log(TR_LOG_WARN, "fsm: node %llu not removed: it is up and owns %u active runs (drain it first)",
                   (unsigned long long)id, nl->active);
            return TR_FSM_INVALID;
        }
        if (fsm_load_pick(f, id) == 0) {
            tr_log(TR_LOG_WARN, "fsm: node %llu not removed: it owns %u active runs and no other node is up",
                   (unsigned long long)id, nl->active);
            return TR_FSM_INVALID;
        }
        /* Down or Draining with somewhere to go: every run moves (the Up set
         * does not change while they do), up to the per-entry bound. */
        uint32_t budget = FSM_MOVES_MAX;
        if (evacuate(f, id, state == troupe_state_NodeState_Draining ? "owner node draining" : "owner node down",
                     &budget) > 0)
            return TR_FSM_INVALID; /* the moves made stand; propose it again */
    }
    unsigned char k[16];
    fsm_delete(f, TR_CF_META, k, node_key(id, k));
    nl = node_find(&f->load, id);
    if (nl != NULL) {
        nl->state = FSM_NODE_UNREGISTERED;
        nl->capacity = 0;
        node_tidy(&f->load, nl);
    }
    fsm_note(f, TR_NOTE_NODES_CHANGED, NULL, 0, 0);
    return TR_FSM_OK;
}

/* ---- read-only accessors ------------------------------------------------------------------- */

int tr_fsm_node_load(struct tr_fsm *f, uint64_t id, uint32_t *active, uint32_t *capacity, int8_t *state)
{
    *active = 0;
    *capacity = 0;
    *state = FSM_NODE_UNREGISTERED;
    int rv = fsm_load_ensure(f);
    if (rv != TR_OK)
        return rv;
    const struct fsm_node_load *n = node_find(&f->load, id);
    if (n == NULL)
        return TR_ENOTFOUND;
    *active = n->active;
    *capacity = n->capacity;
    *state = n->state;
    return n->state == FSM_NODE_UNREGISTERED ? TR_ENOTFOUND : TR_OK;
}

uint32_t tr_fsm_node_queued(struct tr_fsm *f, uint64_t id)
{
    if (fsm_load_ensure(f) != TR_OK)
        return 0;
    const struct fsm_node_load *n = node_find(&f->load, id);
    return n != NULL ? n->queued : 0;
}

uint64_t tr_fsm_node_next(struct tr_fsm *f, uint64_t after)
{
    if (fsm_load_ensure(f) != TR_OK || after == UINT64_MAX)
        return 0;
    struct fsm_load *l = &f->load;
    for (uint32_t i = node_lower(l, after + 1); i < l->n_nodes; i++)
        if (l->nodes[i].state != FSM_NODE_UNREGISTERED)
            return l->nodes[i].id;
    return 0;
}
