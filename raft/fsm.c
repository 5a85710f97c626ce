/* The FSM: applies committed raft entries (troupe.cmd.Command buffers) to the
 * store.
 *
 * Invariants
 *  1. Apply is deterministic: the same entry on the same state writes the same
 *     bytes on every replica. The FSM reads no clock and no randomness; the
 *     only time it uses is the command's time_us, stamped by the proposer.
 *  2. One entry, one atomic store write: every put of an entry and
 *     meta.last_applied = its index go in one tr_batch_commit. After a crash
 *     the store holds every entry up to some index L and nothing after.
 *  3. Entries at or below the store's last_applied are skipped: raft
 *     re-applies its log after a restart and the store may already hold them.
 *  4. A journal append lands only if its epoch is the run's current epoch and
 *     its seq is the run's next seq; otherwise nothing of it is written and its
 *     verdict says why (STALE_EPOCH fences an old owner).
 *  5. No field is read from an unverified buffer: the command, each nested
 *     event and each record read back from the store are verified first.
 *  6. Listeners hear of an entry only after it is committed to the store.
 *  7. A failed store write stops the node (on_fatal): carrying on would let
 *     replicas diverge; raft re-applies the entry after a restart.
 *  8. Placement and failover (fsm_nodes.c) read only the load index, which is
 *     derived from the store: rebuilt after creation, a snapshot restore or a
 *     failed commit, and synced with every run record an entry writes.
 */
#include <stdlib.h>
#include <string.h>

#include "raft/entry.h"
#include "raft/fsm_int.h"

static const char *const verdict_names[] = {
    [TR_FSM_OK] = "ok",
    [TR_FSM_STALE_EPOCH] = "stale_epoch",
    [TR_FSM_BAD_SEQ] = "bad_seq",
    [TR_FSM_NO_RUN] = "no_run",
    [TR_FSM_TERMINAL] = "terminal",
    [TR_FSM_EXISTS] = "exists",
    [TR_FSM_CONFLICT] = "conflict",
    [TR_FSM_INVALID] = "invalid",
    [TR_FSM_NOT_PENDING] = "not_pending",
    [TR_FSM_NOT_FOUND] = "not_found",
};

const char *tr_fsm_verdict_name(int v)
{
    if (v < 0 || (size_t)v >= sizeof verdict_names / sizeof verdict_names[0] || verdict_names[v] == NULL)
        return "unknown";
    return verdict_names[v];
}

/* ---- the run cache of one entry ----------------------------------------------- */

static uint32_t hash_key(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    return (uint32_t)k;
}

static void index_rebuild(struct tr_fsm *f)
{
    tr_free(f->index);
    f->index_cap = 16;
    while (f->index_cap < 2 * f->cap_runs + 2)
        f->index_cap *= 2;
    f->index = tr_calloc(f->index_cap, sizeof *f->index);
    for (uint32_t i = 0; i < f->n_runs; i++) {
        uint32_t h = hash_key(f->runs[i].rec.key) & (f->index_cap - 1);
        while (f->index[h] != 0)
            h = (h + 1) & (f->index_cap - 1);
        f->index[h] = (int32_t)i + 1;
    }
}

static struct run_slot *run_find(struct tr_fsm *f, uint64_t key)
{
    if (f->index == NULL)
        return NULL;
    uint32_t h = hash_key(key) & (f->index_cap - 1);
    while (f->index[h] != 0) {
        struct run_slot *s = &f->runs[f->index[h] - 1];
        if (s->rec.key == key)
            return s;
        h = (h + 1) & (f->index_cap - 1);
    }
    return NULL;
}

static struct run_slot *run_add(struct tr_fsm *f)
{
    if (f->n_runs == f->cap_runs) {
        f->cap_runs = f->cap_runs ? 2 * f->cap_runs : 16;
        f->runs = tr_realloc(f->runs, f->cap_runs * sizeof *f->runs);
    }
    struct run_slot *s = &f->runs[f->n_runs++];
    memset(s, 0, sizeof *s);
    return s;
}

static void run_index(struct tr_fsm *f, struct run_slot *s)
{
    if (f->index == NULL || f->index_cap < 2 * f->cap_runs + 2) {
        index_rebuild(f); /* includes s */
        return;
    }
    uint32_t h = hash_key(s->rec.key) & (f->index_cap - 1);
    while (f->index[h] != 0)
        h = (h + 1) & (f->index_cap - 1);
    f->index[h] = (int32_t)(s - f->runs) + 1;
}

/* ---- record cache ------------------------------------------------------------------------
 *
 * Each entry reads the records of the runs it touches and writes back the
 * ones it changed: a RocksDB Get per run per entry, on the path every commit
 * takes. The cache keeps the encoded bytes last written (runs_flush) or read
 * (fsm_run_get), so the next entry decodes them without the Get. It is only
 * trusted while the runs family's generation (tr_store_cf_gen) is the one it
 * was last in step with: any write not made through runs_flush — a snapshot
 * restore — empties it. Bytes, not decoded records: a slot is changed in
 * place during an entry, and an entry that fails leaves the cache emptied. */
#define RC_CAP 16384

static void rc_clear(struct tr_fsm *f)
{
    for (uint32_t i = 0; i < f->rc_cap; i++) {
        tr_free(f->rc[i].val);
        f->rc[i] = (struct rc_ent){ 0 };
    }
    f->rc_n = 0;
}

/* Empty the cache unless the runs family is as the cache last saw it. */
static void rc_sync(struct tr_fsm *f)
{
    uint64_t gen = tr_store_cf_gen(f->store, TR_CF_RUNS);
    if (gen != f->rc_gen) {
        rc_clear(f);
        f->rc_gen = gen;
    }
}

static struct rc_ent *rc_slot(struct tr_fsm *f, uint64_t key)
{
    if (f->rc == NULL) {
        f->rc_cap = RC_CAP;
        f->rc = tr_calloc(f->rc_cap, sizeof *f->rc);
    }
    uint32_t i = (uint32_t)(key * 0x9e3779b97f4a7c15ULL >> 32) & (f->rc_cap - 1);
    while (f->rc[i].key != 0 && f->rc[i].key != key)
        i = (i + 1) & (f->rc_cap - 1);
    return &f->rc[i];
}

/* Keep val (tr_malloc'd; the cache owns it now) as key's record. */
static void rc_put(struct tr_fsm *f, uint64_t key, void *val, size_t len)
{
    if (f->rc_n >= RC_CAP / 2)
        rc_clear(f);
    struct rc_ent *e = rc_slot(f, key);
    if (e->key == 0) {
        e->key = key;
        f->rc_n++;
    }
    tr_free(e->val);
    e->val = val;
    e->len = len;
}

struct run_slot *fsm_run_get(struct tr_fsm *f, uint64_t key)
{
    struct run_slot *s = run_find(f, key);
    if (s != NULL)
        return s;
    unsigned char k[8];
    void *val = NULL;
    size_t vlen = 0;
    rc_sync(f);
    struct rc_ent *c = f->rc != NULL ? rc_slot(f, key) : NULL;
    if (c != NULL && c->key == key) {
        val = c->val; /* decoding copies what it keeps */
        vlen = c->len;
    } else {
        tr_run_key(key, k);
        if (fsm_get(f, TR_CF_RUNS, k, sizeof k, &val, &vlen) != TR_OK)
            return NULL;
        rc_put(f, key, val, vlen);
    }
    struct run_rec rec;
    int rv = tr_run_rec_decode(val, vlen, &rec);
    if (rv != TR_OK || rec.key != key) {
        tr_log(TR_LOG_ERROR, "fsm: run record %016llx does not verify; treated as absent",
               (unsigned long long)key);
        if (rv == TR_OK)
            tr_run_rec_free(&rec);
        return NULL;
    }
    s = run_add(f);
    s->rec = rec;
    run_index(f, s);
    return s;
}

struct run_slot *fsm_run_new(struct tr_fsm *f, uint64_t key)
{
    struct run_slot *s = run_add(f);
    s->rec.key = key;
    s->is_new = true;
    s->dirty = true;
    run_index(f, s);
    return s;
}

static void runs_flush(struct tr_fsm *f)
{
    f->n_touched = 0;
    rc_sync(f);
    for (uint32_t i = 0; i < f->n_runs; i++) {
        struct run_slot *s = &f->runs[i];
        if (!s->dirty)
            continue;
        /* Every status and owner change of the entry reaches the load index
         * here, whichever handler made it (appends ending a run, cancel). */
        fsm_load_sync_run(f, &s->rec);
        if (f->on_applied != NULL) {
            if (f->n_touched == f->cap_touched) {
                f->cap_touched = f->cap_touched ? 2 * f->cap_touched : 16;
                f->touched = tr_realloc(f->touched, f->cap_touched * sizeof *f->touched);
            }
            f->touched[f->n_touched++] = s->rec.key;
        }
        unsigned char k[8];
        size_t len;
        tr_run_key(s->rec.key, k);
        tr_run_rec_encode(&s->rec, &f->b);
        const uint8_t *data = tr_fb_builder_data(&f->b, &len);
        fsm_put(f, TR_CF_RUNS, k, sizeof k, data, len);
        rc_put(f, s->rec.key, tr_memdup(data, len), len);
    }
}

static void runs_reset(struct tr_fsm *f)
{
    for (uint32_t i = 0; i < f->n_runs; i++)
        tr_run_rec_free(&f->runs[i].rec);
    f->n_runs = 0;
    if (f->index != NULL)
        memset(f->index, 0, f->index_cap * sizeof *f->index);
}

/* ---- store access --------------------------------------------------------------- */

int fsm_get(struct tr_fsm *f, enum tr_cf cf, const void *key, size_t klen, void **val, size_t *vlen)
{
    struct tr_err err = { 0 };
    int rv = tr_store_get(f->store, NULL, cf, key, klen, val, vlen, &err);
    if (rv != TR_OK && rv != TR_ENOTFOUND) {
        /* A read error is as fatal as a write error: the verdict would depend
         * on this node's disk, not on the replicated state. */
        f->on_fatal(f->ud, err.msg);
    }
    return rv;
}

void fsm_put(struct tr_fsm *f, enum tr_cf cf, const void *key, size_t klen, const void *val, size_t vlen)
{
    /* A refused put is recorded in the batch and fails its commit (fatal). */
    (void)tr_batch_put(f->batch, cf, key, klen, val, vlen);
}

void fsm_delete(struct tr_fsm *f, enum tr_cf cf, const void *key, size_t klen)
{
    (void)tr_batch_delete(f->batch, cf, key, klen);
}

/* ---- notes ------------------------------------------------------------------------ */

void fsm_note(struct tr_fsm *f, int kind, const struct run_rec *r, int event_type, uint64_t seq)
{
    if (f->listener == 0)
        return;
    if (f->n_notes == f->cap_notes) {
        f->cap_notes = f->cap_notes ? 2 * f->cap_notes : 16;
        f->notes = tr_realloc(f->notes, f->cap_notes * sizeof *f->notes);
    }
    struct tr_state_note *n = &f->notes[f->n_notes++];
    memset(n, 0, sizeof *n);
    n->kind = kind;
    n->event_type = event_type;
    n->seq = seq;
    if (r != NULL) {
        n->run_id = r->key;
        n->owner = r->owner_node;
        n->epoch = r->epoch;
    }
}

static void notes_send(struct tr_fsm *f, uint64_t index)
{
    for (uint32_t i = 0; i < f->n_notes; i++) {
        f->notes[i].raft_index = index;
        struct tr_msg *m = tr_msg_make(TR_MSG_STATE_NOTE, &f->notes[i], sizeof f->notes[i]);
        int rv = tr_rt_send(f->rt, f->listener, m);
        if (rv != TR_OK) {
            /* The listener is overloaded or gone. Owners also rescan the store
             * when they start, so a lost note delays, never loses, work. */
            tr_log(TR_LOG_WARN, "fsm: note to listener dropped: %s", tr_strerror(rv));
            tr_msg_free(m);
        }
    }
    f->n_notes = 0;
}

/* ---- events the FSM journals itself ----------------------------------------------- */

void fsm_event_begin(struct tr_fsm *f)
{
    tr_fb_builder_reset(&f->eb);
}

uint64_t fsm_event_commit(struct tr_fsm *f, struct run_slot *s, uint8_t type, tr_fb_ref data)
{
    struct tr_fb_builder *b = &f->eb;
    uint64_t seq = s->rec.next_seq;
    tr_fb_ref run_id = tr_fb_create_str(b, s->rec.run_id);
    troupe_journal_Event_start(b);
    troupe_journal_Event_add_seq(b, seq);
    troupe_journal_Event_add_time_us(b, f->now_us);
    troupe_journal_Event_add_run_id(b, run_id);
    troupe_journal_Event_add_epoch(b, s->rec.epoch);
    troupe_journal_Event_add_data_type(b, type);
    troupe_journal_Event_add_data(b, data);
    troupe_journal_Event_finish(b, troupe_journal_Event_end(b));
    size_t len;
    const uint8_t *bytes = tr_fb_builder_data(b, &len);
    (void)tr_batch_journal_append(f->batch, s->rec.key, seq, bytes, len);
    s->rec.next_seq = seq + 1;
    s->rec.last_writer = 0;
    s->rec.updated_at_us = f->now_us;
    s->dirty = true;
    return seq;
}

/* ---- apply ---------------------------------------------------------------------------- */

static struct tr_fsm_result *result_slot(struct tr_fsm *f, uint64_t index)
{
    struct tr_fsm_result *r = &f->ring[index % TR_FSM_RESULT_RING];
    struct tr_fsm_append_result *keep = r->appends;
    uint32_t cap = r->cap_appends;
    memset(r, 0, sizeof *r);
    r->appends = keep;
    r->cap_appends = cap;
    r->index = index;
    return r;
}

static int apply_command(struct tr_fsm *f, const struct troupe_cmd_Command *cmd, struct tr_fsm_result *res)
{
    f->now_us = troupe_cmd_Command_time_us(cmd);
    f->origin_node = troupe_cmd_Command_origin_node(cmd);
    if (f->origin_node == 0)
        f->origin_node = troupe_cmd_Command_leader_node(cmd);
    switch (troupe_cmd_Command_op_type(cmd)) {
    case troupe_cmd_Op_RunCreate:
        return fsm_run_create(f, troupe_cmd_Command_op_as_RunCreate(cmd), res);
    case troupe_cmd_Op_AppendBatch:
        fsm_append_batch(f, troupe_cmd_Command_op_as_AppendBatch(cmd), res);
        return TR_FSM_OK;
    case troupe_cmd_Op_ApprovalDecide:
        return fsm_approval_decide(f, troupe_cmd_Command_op_as_ApprovalDecide(cmd), res);
    case troupe_cmd_Op_ToolRegister:
        return fsm_tool_register(f, troupe_cmd_Command_op_as_ToolRegister(cmd), res);
    case troupe_cmd_Op_ToolSetEnabled:
        return fsm_tool_set_enabled(f, troupe_cmd_Command_op_as_ToolSetEnabled(cmd));
    case troupe_cmd_Op_TenantCreate:
        return fsm_tenant_create(f, troupe_cmd_Command_op_as_TenantCreate(cmd));
    case troupe_cmd_Op_TenantUpdate:
        return fsm_tenant_update(f, troupe_cmd_Command_op_as_TenantUpdate(cmd));
    case troupe_cmd_Op_KeyCreate:
        return fsm_key_create(f, troupe_cmd_Command_op_as_KeyCreate(cmd));
    case troupe_cmd_Op_KeyRevoke:
        return fsm_key_revoke(f, troupe_cmd_Command_op_as_KeyRevoke(cmd));
    case troupe_cmd_Op_NodeAdd:
        return fsm_node_add(f, troupe_cmd_Command_op_as_NodeAdd(cmd));
    case troupe_cmd_Op_NodeRemove:
        return fsm_node_remove(f, troupe_cmd_Command_op_as_NodeRemove(cmd));
    case troupe_cmd_Op_NodeUp:
        return fsm_node_up(f, troupe_cmd_Command_op_as_NodeUp(cmd));
    case troupe_cmd_Op_NodeDown:
        return fsm_node_down(f, troupe_cmd_Command_op_as_NodeDown(cmd));
    case troupe_cmd_Op_NodeDrain:
        return fsm_node_drain(f, troupe_cmd_Command_op_as_NodeDrain(cmd));
    case troupe_cmd_Op_RunCancel:
        return fsm_run_cancel(f, troupe_cmd_Command_op_as_RunCancel(cmd), res);
    case troupe_cmd_Op_RunReassign:
        return fsm_run_reassign(f, troupe_cmd_Command_op_as_RunReassign(cmd), res);
    case troupe_cmd_Op_Checkpoint:
        if (f->on_checkpoint != NULL)
            f->on_checkpoint(f->checkpoint_ud, res->index);
        return TR_FSM_OK;
    default:
        return TR_FSM_INVALID;
    }
}

int tr_fsm_apply_at(struct tr_fsm *f, uint64_t index, const void *buf, size_t len,
                    struct tr_fsm_result **result)
{
    struct tr_fsm_result *res = result_slot(f, index);
    *result = res;
    f->applied++;
    if (index <= tr_store_last_applied(f->store))
        return TR_OK; /* invariant 3 */

    struct tr_fb_error ferr;
    const void *raw;
    size_t raw_len;
    void *owned = NULL;
    char why[160];
    const struct troupe_cmd_Command *cmd = NULL;
    if (tr_entry_decode(buf, len, &raw, &raw_len, &owned, why, sizeof why) != TR_OK) {
        tr_log(TR_LOG_WARN, "fsm: entry %llu refused: %s", (unsigned long long)index, why);
        res->verdict = TR_FSM_INVALID;
    } else if ((cmd = troupe_cmd_Command_verify_as_root(raw, raw_len, &ferr)) == NULL) {
        tr_log(TR_LOG_WARN, "fsm: entry %llu refused: %s", (unsigned long long)index,
               tr_fb_error_format(&ferr, why, sizeof why));
        res->verdict = TR_FSM_INVALID;
    } else {
        res->verdict = apply_command(f, cmd, res);
    }

    runs_flush(f);
    struct tr_err err = { 0 };
    int rv = tr_batch_commit(f->batch, index, &err);
    runs_reset(f);
    if (rv != TR_OK) {
        f->n_notes = 0;
        fsm_load_invalidate(f); /* it holds this entry's changes; the store does not */
        rc_clear(f);            /* likewise */
        tr_err_wrap(&err, "fsm: commit entry %llu", (unsigned long long)index);
        tr_free(owned);
        f->on_fatal(f->ud, err.msg);
        return rv;
    }
    f->rc_gen = tr_store_cf_gen(f->store, TR_CF_RUNS); /* our own write: still in step */
    notes_send(f, index);
    if (f->on_applied != NULL && f->n_touched > 0)
        f->on_applied(f->applied_ud, index, f->touched, f->n_touched);
    tr_free(owned);
    return TR_OK;
}

void tr_fsm_on_checkpoint(struct tr_fsm *f, void (*cb)(void *ud, uint64_t index), void *ud)
{
    f->on_checkpoint = cb;
    f->checkpoint_ud = ud;
}

void tr_fsm_on_applied(struct tr_fsm *f, tr_fsm_applied_fn cb, void *ud)
{
    f->on_applied = cb;
    f->applied_ud = ud;
}

static int fsm_apply(struct raft_fsm *rf, const struct raft_buffer *buf, void **result)
{
    struct tr_fsm *f = rf->data;
    /* raft 0.15 advances last_applied after this call returns: the entry
     * being applied is the next one. */
    uint64_t index = raft_last_applied(f->raft) + 1;
    struct tr_fsm_result *res;
    int rv = tr_fsm_apply_at(f, index, buf->base, buf->len, &res);
    *result = res;
    return rv == TR_OK ? 0 : RAFT_IOERR;
}

/* ---- snapshots --------------------------------------------------------------------------
 * Version 3, with the io of raft/io.c (raft 0.15's core; which call runs on
 * which thread is in that file's top comment):
 *   fsm_snapshot           loop: open a point-in-time view of the store (a
 *                          RocksDB snapshot: cheap); no buffers yet.
 *   fsm_snapshot_async     libuv's thread pool: serialise the view into
 *                          chunks (~80 MB/s, bench/storage), then
 *                          tr_store_flush, so that the store's durable
 *                          last_applied is at or past the snapshot (its
 *                          commits skip RocksDB's WAL: storage.h "No WAL")
 *                          and a restart after kill -9 need not restore it.
 *   fsm_snapshot_finalize  loop: free chunks, buffers and view, after raft
 *                          has written them, or after the job failed or was
 *                          cancelled by a close.
 * The loop keeps applying entries meanwhile. The thread touches only the
 * view (immutable), the store (reads and tr_store_flush are thread-safe,
 * storage.h) and the snap_chunks/snap_n/snap_bufs it fills, which nothing on
 * the loop reads before finalize (uv_queue_work orders the two). The run
 * cache, the load index, the batch and the builders are loop-only.
 * A failed job logs and returns RAFT_IOERR: raft finalizes, keeps its log
 * and tries again at the next threshold. The flush failing fails the
 * snapshot too: raft must not truncate its log past what the store holds
 * durably while the store cannot flush.
 * Close: raft's close callback waits for the job and its finalize
 * (raft/io.c), and tr_fsm_free runs after it (raft/state.c), so no job is
 * in flight when the FSM is freed; tr_fsm_free still releases a view that
 * was never finalized.
 * restore() gets the whole stream back (loop). */

static void snap_release(struct tr_fsm *f)
{
    if (f->snap_chunks != NULL)
        tr_snapshot_chunks_free(f->snap_chunks, f->snap_n);
    f->snap_chunks = NULL;
    f->snap_n = 0;
    tr_free(f->snap_bufs);
    f->snap_bufs = NULL;
    if (f->snap_view != NULL)
        tr_store_view_close(f->snap_view);
    f->snap_view = NULL;
}

static int fsm_snapshot(struct raft_fsm *rf, struct raft_buffer *bufs[], unsigned *n)
{
    struct tr_fsm *f = rf->data;
    *bufs = NULL;
    *n = 0;
    if (f->snap_view != NULL)
        return RAFT_BUSY; /* raft takes one at a time; never expected */
    f->snap_view = tr_store_view_open(f->store);
    if (f->snap_view == NULL) {
        tr_log(TR_LOG_ERROR, "fsm: snapshot: cannot open a store view");
        return RAFT_IOERR;
    }
    atomic_fetch_add(&f->snap_taken, 1);
    return 0;
}

/* Thread pool: see above for what it may touch. */
static int fsm_snapshot_async(struct raft_fsm *rf, struct raft_buffer *bufs[], unsigned *n)
{
    struct tr_fsm *f = rf->data;
    struct tr_err err = { 0 };
    uint64_t index = 0;
    size_t bytes = 0;

    atomic_store(&f->snap_running, 1);
    int rv = tr_store_snapshot_chunks(f->store, f->snap_view, 0, &f->snap_chunks, &f->snap_n, &index, &err);
    if (rv == TR_OK) {
        f->snap_bufs = tr_calloc(f->snap_n ? f->snap_n : 1, sizeof *f->snap_bufs);
        for (unsigned i = 0; i < f->snap_n; i++) {
            f->snap_bufs[i].base = f->snap_chunks[i].base;
            f->snap_bufs[i].len = f->snap_chunks[i].len;
            bytes += f->snap_chunks[i].len;
        }
        rv = tr_store_flush(f->store, &err);
    }
    if (rv != TR_OK) {
        tr_log(TR_LOG_ERROR, "fsm: snapshot at %llu: %s", (unsigned long long)index, err.msg);
        atomic_fetch_add(&f->snap_failed, 1);
        atomic_store(&f->snap_running, 0);
        return RAFT_IOERR; /* finalize frees what was made */
    }
    *bufs = f->snap_bufs;
    *n = f->snap_n;
    atomic_store(&f->snap_last_index, index);
    atomic_store(&f->snap_last_bytes, (uint64_t)bytes);
    atomic_fetch_add(&f->snap_written, 1);
    atomic_store(&f->snap_running, 0);
    return 0;
}

static int fsm_snapshot_finalize(struct raft_fsm *rf, struct raft_buffer *bufs[], unsigned *n)
{
    struct tr_fsm *f = rf->data;
    snap_release(f);
    *bufs = NULL;
    *n = 0;
    atomic_fetch_add(&f->snap_finalized, 1);
    return 0;
}

void tr_fsm_snap_stats(struct tr_fsm *f, struct tr_fsm_snap_stats *out)
{
    out->taken = atomic_load(&f->snap_taken);
    out->written = atomic_load(&f->snap_written);
    out->failed = atomic_load(&f->snap_failed);
    out->finalized = atomic_load(&f->snap_finalized);
    out->running = atomic_load(&f->snap_running);
    out->last_index = atomic_load(&f->snap_last_index);
    out->last_bytes = atomic_load(&f->snap_last_bytes);
}

static int fsm_restore(struct raft_fsm *rf, struct raft_buffer *buf)
{
    struct tr_fsm *f = rf->data;
    struct tr_err err = { 0 };
    uint64_t snap_index = 0;
    int rv = tr_snapshot_peek(buf->base, buf->len, &snap_index, &err);
    if (rv != TR_OK) {
        tr_log(TR_LOG_ERROR, "fsm: restore: %s", err.msg);
        return RAFT_CORRUPT;
    }
    /* raft 0.15 restores its latest snapshot at every start: the store is
     * persistent, so a snapshot it already covers changes nothing. */
    if (snap_index > tr_store_last_applied(f->store)) {
        rv = tr_store_restore(f->store, buf->base, buf->len, &err);
        if (rv != TR_OK) {
            tr_log(TR_LOG_ERROR, "fsm: restore: %s", err.msg);
            return RAFT_IOERR;
        }
        /* The load index and the record cache describe the state before
         * the snapshot (the cache would notice by its generation too). */
        fsm_load_invalidate(f);
        rc_clear(f);
        tr_log(TR_LOG_INFO, "fsm: restored snapshot at index %llu", (unsigned long long)snap_index);
    }
    raft_free(buf->base); /* ours on success */
    return 0;
}

/* ---- lifecycle ------------------------------------------------------------------------------- */

static void default_fatal(void *ud, const char *msg)
{
    tr_log(TR_LOG_ERROR, "fsm: fatal: %s", msg);
    abort();
}

struct raft_fsm *tr_fsm_new(const struct tr_fsm_opts *opts, struct tr_fsm **out)
{
    struct tr_fsm *f = tr_calloc(1, sizeof *f);
    f->store = opts->store;
    f->rt = opts->rt;
    f->listener = opts->listener;
    f->on_fatal = opts->on_fatal != NULL ? opts->on_fatal : default_fatal;
    f->ud = opts->ud;
    f->batch = tr_batch_new(f->store);
    tr_fb_builder_init(&f->b);
    tr_fb_builder_init(&f->eb);
    f->fsm.version = 3; /* snapshot_async: needs raft/io.c's io */
    f->fsm.data = f;
    f->fsm.apply = fsm_apply;
    f->fsm.snapshot = fsm_snapshot;
    f->fsm.snapshot_async = fsm_snapshot_async;
    f->fsm.snapshot_finalize = fsm_snapshot_finalize;
    f->fsm.restore = fsm_restore;
    *out = f;
    return &f->fsm;
}

void tr_fsm_set_raft(struct tr_fsm *f, struct raft *raft)
{
    f->raft = raft;
}

void tr_fsm_set_listener(struct tr_fsm *f, tr_actor_id listener)
{
    f->listener = listener;
}

uint64_t tr_fsm_applied(struct tr_fsm *f)
{
    return f->applied;
}

void tr_fsm_free(struct tr_fsm *f)
{
    if (f == NULL)
        return;
    snap_release(f);
    runs_reset(f);
    tr_free(f->runs);
    tr_free(f->index);
    tr_free(f->notes);
    rc_clear(f);
    tr_free(f->rc);
    fsm_load_free(f);
    tr_free(f->touched);
    for (int i = 0; i < TR_FSM_RESULT_RING; i++)
        tr_free(f->ring[i].appends);
    tr_fb_builder_free(&f->b);
    tr_fb_builder_free(&f->eb);
    tr_batch_free(f->batch);
    tr_free(f);
}
