/* The state service: store + raft + FSM behind one actor on raft's loop, with
 * group commit of journal appends.
 *
 * Happy path: run actors send TR_MSG_STATE_APPEND requests; the service keeps
 * each request message and queues it; a FLUSH message it sends itself (one
 * at a time, so it lands behind every append already in the mailbox) packs
 * the queue into one AppendBatch command — one raft entry, one fsync — and
 * proposes it. raft commits and the FSM applies the entry; raft's callback
 * copies the FSM's verdicts into the entry and queues it as done; the actor
 * answers each kept request with its verdict (tr_reply) and frees it.
 *
 * Why replies go through the actor: raft's callbacks run on this loop but
 * outside any actor, and a reply must be sent from the requester's
 * correspondent (tr_reply) so that the runtime can match it with its request
 * and its timeout.
 *
 * Failure modes: not the leader -> TR_ENOTLEADER at once (the cluster issue
 * adds forwarding); raft refusing or closing -> every kept request of the
 * entry gets the error; shutdown -> kept requests are freed unanswered (the
 * requesters are being stopped too).
 */
#include <stdatomic.h>
#include <stddef.h>
#include <string.h>
#include <errno.h>
#include <time.h>

#include <sodium.h>
#include <stdio.h>
#include <sys/stat.h>

#include "raft/entry.h"
#include "raft/fsm.h"
#include "raft/fsm_int.h"
#include "raft/raft.h"
#include "schemas/command_generated.h"
#include "schemas/state_generated.h"

_Static_assert(offsetof(struct tr_append_msg, event) == sizeof(struct tr_append_msg),
               "senders put the event at sizeof (struct tr_append_msg)");

enum {
    MSG_FLUSH = TR_MSG_USER + 190, /* self: pack queued appends into entries */
    MSG_DONE,                      /* self: entries completed by raft */
    MSG_POLL,                      /* self: timer until this node leads, then barrier */
    MSG_LINGER,                    /* self: timer: lazy appends have waited enough */
};

enum entry_kind { ENTRY_APPENDS, ENTRY_COMMAND };

/* One raft entry in flight: proposed here (leader) or forwarded to the
 * leader (follower; then it is the struct tr_state_fwd the forwarder
 * completes). */
struct entry {
    struct tr_raft_propose p;
    struct tr_state *s;
    enum entry_kind kind;
    int forwarded;
    bool tracked;                /* counted in live_cur / live_old (below) */
    bool pre_fence;              /* holds appends queued before the last fence */
    uint32_t era;                /* s->era when it went out */
    struct tr_msg **reqs;        /* kept requests, in order (appends), or one */
    uint32_t n_reqs;
    tr_state_cb cb;              /* ENTRY_COMMAND from tr_state_propose */
    tr_state_result_cb rcb;      /* ENTRY_COMMAND from tr_state_propose_full */
    void *ud;
    int status;
    struct tr_state_reply reply; /* ENTRY_COMMAND */
    struct tr_fsm_append_result *verdicts; /* ENTRY_APPENDS: n_reqs; full: n_verdicts */
    uint32_t n_verdicts;
    struct entry *next;
};

struct tr_state {
    struct tr_rt *rt;
    uv_loop_t *loop;
    uint64_t node_id;
    struct tr_store *store;
    struct tr_fsm *fsm;
    struct raft_fsm *raft_fsm;
    struct tr_raft *raft;
    tr_actor_id actor;
    tr_actor_id listener;
    uint32_t max_batch_appends, max_batch_bytes, max_inflight;

    struct tr_msg **queue;        /* appends waiting for an entry (kept) */
    uint32_t q_head, q_len, q_cap; /* ring */
    int flush_pending;
    int urgent;                   /* the queue goes out as soon as an entry may */
    int linger_ms;                /* 0: lazy appends are not held */
    int linger_armed;             /* a MSG_LINGER timer is pending */
    size_t compress_min;          /* entries of this many bytes are compressed (0: none) */
    uint32_t inflight;
    struct entry *done_head, *done_tail;
    int done_signalled;
    int ready;
    int barrier_pending;
    int closing;
    struct tr_fb_builder b;
    struct tr_state_stats stats;

    /* Cluster (see "Followers" below). */
    tr_state_forward_fn fwd;
    void *fwd_ud;
    int clustered;                /* a forwarder is set: liveness rules apply */
    uint64_t contact_ms;          /* when the last sign of a live leader came (0: never) */
    uint64_t contact_index;       /* the leader's commit index then */
    struct entry *held_head, *held_tail; /* forwarded replies waiting for apply */
    /* What was sent before the last fence. The run actors that sent it are
     * gone; new ones replay the journal once the node is ready again, so it
     * must not become ready while any of it can still land: a completion
     * committed after a replay read the journal makes the new actor redo the
     * call (the chaos suite's partition_blip saw that resend). era counts
     * fences; live_old counts the entries out from earlier eras, live_cur
     * this era's; q_old the appends queued before the fence, still queued.
     * An earlier era's entry that lands has landed at the leader only: this
     * node must also have applied it (old_landed, its raft index) before a
     * replay may read the journal (the soak saw a tool call re-sent when a
     * completion forwarded during a partition_blip landed just before the
     * node was ready again, at an index it applied just after). */
    uint32_t era, live_cur, live_old, q_old;
    uint64_t old_landed;
    int fenced_noted;
    _Atomic uint64_t contact_until_us; /* monotonic µs (uv_hrtime / 1000) the contact vouches up to */
    _Atomic int act_ready;           /* ready, mirrored for other threads */

    /* Digests as of Checkpoint entries (see "checkpoints" below). */
    struct mark {
        uint64_t index;
        int state;                /* MARK_* */
        struct tr_store_view *view;
        unsigned char digest[TR_STATE_DIGEST_LEN];
        uint64_t last_applied;
        char err[512];
        uv_work_t work;
        struct tr_state *s;
    } marks[8];
    struct digest_wait *digest_waits;
    struct applied_wait *applied_waits;
    unsigned digest_jobs;         /* marks being computed on the thread pool */
    int close_deferred;           /* raft closed; the store waits for digest_jobs */
    void (*close_cb)(void *);
    void *close_arg;
    uv_timer_t close_timer;       /* closing: wait for in-flight entries, bounded */
    int close_timer_on;
    int raft_closing;
};

#define CLOSE_DRAIN_MS 3000

/* ---- run id text ----------------------------------------------------------------- */
/* (tr_run_id_text / tr_run_id_from_text live in fsm_records.c) */

/* ---- the append queue ------------------------------------------------------------ */

static void queue_push(struct tr_state *s, struct tr_msg *m)
{
    if (s->q_len == s->q_cap) {
        uint32_t cap = s->q_cap ? 2 * s->q_cap : 256;
        struct tr_msg **q = tr_malloc(cap * sizeof *q);
        for (uint32_t i = 0; i < s->q_len; i++)
            q[i] = s->queue[(s->q_head + i) % s->q_cap];
        tr_free(s->queue);
        s->queue = q;
        s->q_cap = cap;
        s->q_head = 0;
    }
    s->queue[(s->q_head + s->q_len) % s->q_cap] = m;
    s->q_len++;
}

static struct tr_msg *queue_pop(struct tr_state *s, bool *pre_fence)
{
    struct tr_msg *m = s->queue[s->q_head];
    s->q_head = (s->q_head + 1) % s->q_cap;
    s->q_len--;
    if (s->q_old > 0) {
        s->q_old--;
        if (pre_fence != NULL)
            *pre_fence = true;
    }
    return m;
}

static struct tr_msg *queue_peek(struct tr_state *s)
{
    return s->queue[s->q_head];
}

static void close_timer_cb(uv_timer_t *t);

/* ---- raft completion ----------------------------------------------------------------- */

/* An entry goes out (proposed or forwarded): count it in its era. */
static void entry_track(struct tr_state *s, struct entry *e)
{
    e->tracked = true;
    e->era = e->pre_fence && s->era > 0 ? s->era - 1 : s->era;
    if (e->era < s->era)
        s->live_old++;
    else
        s->live_cur++;
}

static void entry_free(struct entry *e)
{
    if (e->tracked && e->s != NULL) {
        if (e->era < e->s->era) {
            e->s->live_old--;
            if (e->forwarded && e->status == TR_OK && e->reply.raft_index > e->s->old_landed)
                e->s->old_landed = e->reply.raft_index;
        } else {
            e->s->live_cur--;
        }
    }
    for (uint32_t i = 0; i < e->n_reqs; i++)
        if (e->reqs[i] != NULL)
            tr_msg_free(e->reqs[i]);
    tr_free(e->reqs);
    tr_free(e->verdicts);
    tr_free(e);
}

static void signal_done(struct tr_state *s)
{
    if (s->done_signalled || s->closing)
        return;
    struct tr_msg *m = tr_msg_new(MSG_DONE, 0);
    if (tr_rt_send(s->rt, s->actor, m) == TR_OK)
        s->done_signalled = 1;
    else
        tr_msg_free(m); /* the actor drains the done list at every message anyway */
}

static void entry_done(struct tr_state *s, struct entry *e);
static void answer_digest_waits(struct tr_state *s);
static void on_checkpoint(void *ud, uint64_t index);
static void answer_applied_waits(struct tr_state *s, int closing);

/* Raft's last applied index: it counts every entry (configuration changes
 * and barriers too), where the store's last_applied moves only with
 * entries that write. */
static uint64_t applied_index(const struct tr_state *s)
{
    struct raft *r = tr_raft_raw(s->raft);
    return r != NULL ? r->last_applied : 0;
}

static void propose_cb(struct tr_raft_propose *p, int status, void *result)
{
    struct entry *e = p->data;
    struct tr_state *s = e->s;
    const struct tr_fsm_result *res = result;
    e->status = status;
    s->inflight--;
    /* Closing waits for the last entry; close raft from a timer, not from
     * inside raft's own callback. */
    if (s->closing && s->inflight == 0 && s->close_timer_on && !s->raft_closing)
        uv_timer_start(&s->close_timer, close_timer_cb, 0, 0);
    if (status == TR_OK && res != NULL) {
        if (e->kind == ENTRY_APPENDS) {
            for (uint32_t i = 0; i < e->n_reqs; i++) {
                if (i < res->n_appends)
                    e->verdicts[i] = res->appends[i];
                else
                    e->verdicts[i].verdict = TR_FSM_INVALID;
            }
        } else {
            e->reply.verdict = res->verdict;
            e->reply.run_id = res->run_id;
            e->reply.seq = res->seq;
            if (e->rcb != NULL && res->n_appends > 0) {
                e->verdicts = tr_malloc(res->n_appends * sizeof *e->verdicts);
                memcpy(e->verdicts, res->appends, res->n_appends * sizeof *e->verdicts);
                e->n_verdicts = res->n_appends;
            }
        }
        e->reply.raft_index = res->index;
    }
    entry_done(s, e);
}

static void entry_done(struct tr_state *s, struct entry *e)
{
    if (s->done_tail != NULL)
        s->done_tail->next = e;
    else
        s->done_head = e;
    s->done_tail = e;
    signal_done(s);
}

/* ---- forwarding (followers) ----------------------------------------------------------- */

void tr_state_forward_done(struct tr_state_fwd *f, const struct tr_state_result *res)
{
    struct entry *e = (struct entry *)f;
    struct tr_state *s = e->s;
    s->inflight--;
    e->status = res->status;
    if (res->status == TR_OK) {
        e->reply.verdict = res->verdict;
        e->reply.run_id = res->run_id;
        e->reply.seq = res->seq;
        e->reply.raft_index = res->raft_index;
        if (e->kind == ENTRY_APPENDS) {
            for (uint32_t i = 0; i < e->n_reqs; i++) {
                if (i < res->n_appends)
                    e->verdicts[i] = (struct tr_fsm_append_result){ res->appends[i].verdict, res->appends[i].seq };
                else
                    e->verdicts[i].verdict = TR_FSM_INVALID;
            }
        }
    }
    if (s->closing && s->inflight == 0 && s->close_timer_on && !s->raft_closing)
        uv_timer_start(&s->close_timer, close_timer_cb, 0, 0);
    entry_done(s, e);
}

/* Hand an entry's command to the forwarder instead of raft. */
static int forward_entry(struct tr_state *s, struct entry *e, const uint8_t *data, size_t len)
{
    e->s = s;
    e->forwarded = 1;
    int rv = s->fwd(s->fwd_ud, data, len, (struct tr_state_fwd *)e);
    if (rv != TR_OK)
        return rv;
    entry_track(s, e);
    s->inflight++;
    s->stats.forwarded++;
    return TR_OK;
}

/* A forwarded write's reply whose verdict makes the requester re-read the
 * store (BAD_SEQ: refold; STALE_EPOCH: who owns the run now?) waits until
 * this node has applied the entry (so also everything before it, which is
 * what the re-read needs to see). Replies with TR_FSM_OK go at once: the run actor keeps
 * its own state and the leader's verdict is final. */
static int must_hold(const struct tr_state *s, const struct entry *e)
{
    if (!e->forwarded || e->status != TR_OK || applied_index(s) >= e->reply.raft_index)
        return 0;
    if (e->kind == ENTRY_COMMAND)
        return 1; /* commands are rare, and their proposers read what they wrote */
    for (uint32_t i = 0; i < e->n_reqs; i++)
        if (e->verdicts[i].verdict != TR_FSM_OK)
            return 1;
    return 0;
}

static void reply_to(struct tr_ctx *ctx, struct tr_msg *req, const struct tr_state_reply *r)
{
    struct tr_msg *m = tr_msg_make(TR_MSG_STATE_REPLY, r, sizeof *r);
    int rv = tr_reply(ctx, req, m);
    if (rv != TR_OK)
        tr_msg_free(m); /* requester gone or flooded: it will time out and retry */
}

static void flush(struct tr_ctx *ctx, struct tr_state *s);

static void answer(struct tr_ctx *ctx, struct tr_state *s, struct entry *e);

/* Answer held replies whose wait is over (in order: they were held in order). */
static void release_held(struct tr_ctx *ctx, struct tr_state *s)
{
    while (s->held_head != NULL && applied_index(s) >= s->held_head->reply.raft_index) {
        struct entry *e = s->held_head;
        s->held_head = e->next;
        if (s->held_head == NULL)
            s->held_tail = NULL;
        e->next = NULL;
        e->forwarded = 0; /* answer now */
        answer(ctx, s, e);
    }
}

/* Answer the entries raft completed; if that freed room for another entry
 * in flight, propose what is queued. Only then: an append that arrives must
 * not push out the ones queued before it as an entry of their own (their
 * FLUSH is coming, behind whatever else was sent with them). */
static void drain_done(struct tr_ctx *ctx, struct tr_state *s)
{
    int completed = s->done_head != NULL;
    release_held(ctx, s);
    while (s->done_head != NULL) {
        struct entry *e = s->done_head;
        s->done_head = e->next;
        if (s->done_head == NULL)
            s->done_tail = NULL;
        e->next = NULL;
        if (must_hold(s, e)) {
            if (s->held_tail != NULL)
                s->held_tail->next = e;
            else
                s->held_head = e;
            s->held_tail = e;
            continue;
        }
        answer(ctx, s, e);
    }
    if (completed && s->q_len > 0 && s->urgent)
        flush(ctx, s);
}

static void answer(struct tr_ctx *ctx, struct tr_state *s, struct entry *e)
{
    {
        if (e->kind == ENTRY_APPENDS) {
            for (uint32_t i = 0; i < e->n_reqs; i++) {
                struct tr_state_reply r = { .status = e->status };
                if (e->status == TR_OK) {
                    r.verdict = e->verdicts[i].verdict;
                    r.seq = e->verdicts[i].seq;
                    r.raft_index = e->reply.raft_index;
                    const struct tr_append_msg *am = (const struct tr_append_msg *)e->reqs[i]->data;
                    r.run_id = am->run_id;
                }
                reply_to(ctx, e->reqs[i], &r);
            }
        } else {
            e->reply.status = e->status;
            if (e->rcb != NULL) {
                struct tr_state_verdict v[64];
                struct tr_state_result r = { .status = e->status, .verdict = e->reply.verdict,
                                             .raft_index = e->reply.raft_index, .run_id = e->reply.run_id,
                                             .seq = e->reply.seq, .n_appends = e->n_verdicts };
                struct tr_state_verdict *vs = e->n_verdicts <= 64 ? v : tr_malloc(e->n_verdicts * sizeof *vs);
                for (uint32_t i = 0; i < e->n_verdicts; i++)
                    vs[i] = (struct tr_state_verdict){ e->verdicts[i].seq, e->verdicts[i].verdict };
                r.appends = vs;
                e->rcb(e->ud, &r);
                if (vs != v)
                    tr_free(vs);
            } else if (e->cb != NULL) {
                e->cb(e->ud, &e->reply);
            } else if (e->n_reqs == 1) {
                reply_to(ctx, e->reqs[0], &e->reply);
            }
        }
        entry_free(e);
    }
}

/* ---- proposing ------------------------------------------------------------------------- */

/* The proposer writes the entry in its log form (raft/entry.c: padded to 8
 * bytes; compressed when big); every FSM decodes it. */
static int propose_entry(struct tr_state *s, struct entry *e, const uint8_t *data, size_t len)
{
    size_t padded;
    uint8_t *buf = tr_entry_encode(data, len, s->compress_min, &padded);
    if (buf == NULL)
        return TR_ENOMEM;
    if (tr_entry_is_compressed(buf, padded))
        s->stats.compressed++;
    e->s = s;
    e->p.data = e;
    int rv = tr_raft_propose(s->raft, &e->p, buf, padded, propose_cb);
    if (rv != TR_OK) {
        raft_free(buf);
        return rv;
    }
    entry_track(s, e);
    s->inflight++;
    s->stats.entries++;
    return TR_OK;
}

/* Pack queued appends into one AppendBatch entry. */
static void flush_one(struct tr_ctx *ctx, struct tr_state *s)
{
    struct tr_fb_builder *b = &s->b;
    uint32_t n = 0;
    size_t bytes = 0;
    while (n < s->q_len && n < s->max_batch_appends) {
        struct tr_msg *m = s->queue[(s->q_head + n) % s->q_cap];
        if (n > 0 && bytes + m->len > s->max_batch_bytes)
            break;
        bytes += m->len;
        n++;
    }
    struct entry *e = tr_calloc(1, sizeof *e);
    e->kind = ENTRY_APPENDS;
    e->reqs = tr_malloc(n * sizeof *e->reqs);
    e->verdicts = tr_calloc(n, sizeof *e->verdicts);
    e->n_reqs = n;

    tr_fb_builder_reset(b);
    tr_fb_ref *refs = tr_malloc(n * sizeof *refs);
    for (uint32_t i = 0; i < n; i++) {
        struct tr_msg *m = queue_pop(s, &e->pre_fence);
        e->reqs[i] = m;
        const struct tr_append_msg *am = (const struct tr_append_msg *)m->data;
        char text[TR_RUN_ID_TEXT_LEN];
        tr_run_id_text(am->run_id, text);
        tr_fb_ref rid = tr_fb_create_str(b, text);
        tr_fb_ref ev = troupe_cmd_Append_create_event(b, am->event, am->len);
        tr_fb_ref blob = am->blob_len > 0 ? tr_fb_create_bytes(b, am->event + am->len, am->blob_len) : 0;
        troupe_cmd_Append_start(b);
        troupe_cmd_Append_add_run_id(b, rid);
        troupe_cmd_Append_add_epoch(b, am->epoch);
        troupe_cmd_Append_add_seq(b, am->seq);
        troupe_cmd_Append_add_writer(b, am->writer);
        troupe_cmd_Append_add_base_seq(b, am->base_seq);
        troupe_cmd_Append_add_event(b, ev);
        troupe_cmd_Append_add_blob(b, blob);
        refs[i] = troupe_cmd_Append_end(b);
    }
    tr_fb_ref vec = troupe_cmd_AppendBatch_create_appends(b, refs, n);
    tr_free(refs);
    troupe_cmd_AppendBatch_start(b);
    troupe_cmd_AppendBatch_add_appends(b, vec);
    tr_fb_ref batch = troupe_cmd_AppendBatch_end(b);
    tr_state_command_finish(s, b, troupe_cmd_Op_AppendBatch, batch);
    size_t len;
    const uint8_t *data = tr_fb_builder_data(b, &len);

    s->stats.appends += n;
    if (n > s->stats.max_batch)
        s->stats.max_batch = n;
    int rv = tr_raft_is_leader(s->raft) ? propose_entry(s, e, data, len) : forward_entry(s, e, data, len);
    if (rv != TR_OK) {
        for (uint32_t i = 0; i < n; i++) {
            struct tr_state_reply r = { .status = rv };
            reply_to(ctx, e->reqs[i], &r);
        }
        entry_free(e);
    }
}

static void flush(struct tr_ctx *ctx, struct tr_state *s)
{
    while (s->q_len > 0 && s->inflight < s->max_inflight) {
        if (!tr_raft_is_leader(s->raft) && s->fwd == NULL) {
            /* Not the leader and nobody to forward to: refuse. */
            while (s->q_len > 0) {
                struct tr_state_reply r = { .status = TR_ENOTLEADER };
                reply_to(ctx, queue_peek(s), &r);
                tr_msg_free(queue_pop(s, NULL));
            }
            break;
        }
        flush_one(ctx, s);
    }
    if (s->q_len == 0)
        s->urgent = 0;
}

/* The FLUSH goes behind the scheduler's inbox (tr_tell_self_behind): a plain
 * tell to itself would be handled in this very turn, before the scheduler
 * drains its inbox again, so of a run's appends sent back to back from
 * another thread (actors/run.c sends one pump's appends together) the first
 * would get an entry of its own and the rest another one, queued behind the
 * first's write. */
static void schedule_flush(struct tr_ctx *ctx, struct tr_state *s)
{
    if (s->flush_pending)
        return;
    if (tr_tell_self_behind(ctx, MSG_FLUSH, NULL, 0) == TR_OK)
        s->flush_pending = 1;
    else
        flush(ctx, s); /* mailbox full: flush now rather than never */
}

/* Lazy appends (TR_APPEND_LAZY) wait for the next entry that something
 * urgent starts — another run's append, their own run's next one, an URGE —
 * or for linger_ms, whichever comes first. The timer is not cancelled when
 * the queue goes out earlier: firing on an empty queue does nothing, and on
 * a newer one it only cuts that wait short. */
static void arm_linger(struct tr_ctx *ctx, struct tr_state *s)
{
    if (s->linger_armed || s->flush_pending)
        return;
    uint64_t t;
    if (tr_timer_start(ctx, (uint64_t)s->linger_ms, tr_msg_new(MSG_LINGER, 0), &t) == TR_OK) {
        s->linger_armed = 1;
    } else {
        s->urgent = 1; /* no timer: no waiting either */
        schedule_flush(ctx, s);
    }
}

static int command_entry(struct tr_state *s, const void *cmd, size_t len, struct entry *e)
{
    struct tr_fb_error ferr;
    if (troupe_cmd_Command_verify_as_root(cmd, len, &ferr) == NULL)
        return TR_EINVAL;
    e->kind = ENTRY_COMMAND;
    int rv;
    if (tr_raft_is_leader(s->raft))
        rv = propose_entry(s, e, cmd, len);
    else if (s->fwd != NULL)
        rv = forward_entry(s, e, cmd, len);
    else
        rv = TR_ENOTLEADER;
    if (rv == TR_OK)
        s->stats.commands++;
    return rv;
}

int tr_state_propose(struct tr_state *s, const void *cmd, size_t len, tr_state_cb cb, void *ud)
{
    if (s->closing)
        return TR_ECLOSED;
    struct entry *e = tr_calloc(1, sizeof *e);
    e->cb = cb;
    e->ud = ud;
    int rv = command_entry(s, cmd, len, e);
    if (rv != TR_OK)
        entry_free(e);
    return rv;
}

int tr_state_propose_full(struct tr_state *s, const void *cmd, size_t len, tr_state_result_cb cb, void *ud)
{
    if (s->closing)
        return TR_ECLOSED;
    if (!tr_raft_is_leader(s->raft))
        return TR_ENOTLEADER; /* never forwarded twice */
    struct entry *e = tr_calloc(1, sizeof *e);
    e->rcb = cb;
    e->ud = ud;
    int rv = command_entry(s, cmd, len, e);
    if (rv != TR_OK)
        entry_free(e);
    return rv;
}

void tr_state_set_forwarder(struct tr_state *s, tr_state_forward_fn fn, void *ud)
{
    s->fwd = fn;
    s->fwd_ud = ud;
    s->clustered = fn != NULL;
}

static uint64_t hr_us(void)
{
    return uv_hrtime() / 1000;
}

int tr_state_may_act(struct tr_state *s)
{
    if (!atomic_load(&s->act_ready))
        return 0;
    if (!s->clustered)
        return 1;
    return hr_us() < atomic_load(&s->contact_until_us);
}

void tr_state_leader_contact(struct tr_state *s, uint64_t commit_index, uint64_t until_us)
{
    if (until_us > atomic_load(&s->contact_until_us))
        atomic_store(&s->contact_until_us, until_us);
    s->contact_ms = uv_now(s->loop);
    if (commit_index > s->contact_index)
        s->contact_index = commit_index;
}

uint64_t tr_state_applied(struct tr_state *s)
{
    return applied_index(s);
}

/* ---- the service actor ----------------------------------------------------------------- */

static void barrier_cb(void *arg, int status, const char *msg)
{
    struct tr_state *s = arg;
    s->barrier_pending = 0;
    if (status != TR_OK || s->closing || s->listener == 0 || s->ready)
        return; /* the poll timer tries again (with a listener to tell) */
    s->ready = 1;
    atomic_store(&s->act_ready, 1);
    {
        struct tr_state_note n = { .kind = TR_NOTE_READY };
        struct tr_raft_info info;
        tr_raft_info(s->raft, &info);
        n.raft_index = info.last_applied;
        struct tr_msg *m = tr_msg_make(TR_MSG_STATE_NOTE, &n, sizeof n);
        if (tr_rt_send(s->rt, s->listener, m) != TR_OK) {
            tr_msg_free(m);
            s->ready = 0; /* try again on the next poll */
        }
    }
}

static void note_listener(struct tr_state *s, int kind)
{
    struct tr_state_note n = { .kind = kind, .raft_index = applied_index(s) };
    struct tr_msg *m = tr_msg_make(TR_MSG_STATE_NOTE, &n, sizeof n);
    if (tr_rt_send(s->rt, s->listener, m) != TR_OK)
        tr_msg_free(m);
}

/* Every POLL_MS: readiness and fencing.
 *
 *  - A leader becomes ready after a barrier (everything before its term is
 *    applied here), then tells the listener (TR_NOTE_READY).
 *  - In a cluster (a forwarder is set), a follower becomes ready once it has
 *    heard from a live leader (tr_state_leader_contact) and applied that
 *    leader's commit index, and (after a fence) every entry it sent before
 *    the fence has landed or failed, and it has applied those that landed.
 *  - A clustered node that has not heard from a leader for fence_ms, and is
 *    not the leader itself, is fenced: it stops being ready and tells the
 *    listener (TR_NOTE_FENCED), which stops every run actor before the leader
 *    can declare this node down and give its runs to others (the leader
 *    waits twice as long). It becomes ready again as above. */
#define POLL_MS 10
static int poll_ready(struct tr_ctx *ctx, struct tr_state *s)
{
    if (s->closing)
        return TR_OK;
    s->stats.polls++;
    release_held(ctx, s);
    if (s->digest_waits != NULL)
        answer_digest_waits(s);
    if (s->applied_waits != NULL)
        answer_applied_waits(s, 0);
    uint64_t now = uv_now(s->loop);
    int leader = tr_raft_is_leader(s->raft);
    if (leader && !s->clustered)
        s->contact_ms = now;
    int fresh = !s->clustered || hr_us() < atomic_load(&s->contact_until_us);
    if (s->ready && !fresh) {
        s->ready = 0;
        atomic_store(&s->act_ready, 0);
        s->era++;
        s->live_old += s->live_cur;
        s->live_cur = 0;
        s->q_old = s->q_len;
        tr_log(TR_LOG_WARN, "state: node %llu: no leader for %llu ms: fenced (run actors stop)",
               (unsigned long long)s->node_id, (unsigned long long)(now - s->contact_ms));
        note_listener(s, TR_NOTE_FENCED);
    } else if (!s->ready && fresh && s->listener != 0 && s->live_old == 0 && s->q_old == 0) {
        if (leader && !s->barrier_pending) {
            if (tr_raft_barrier(s->raft, barrier_cb, s) == TR_OK)
                s->barrier_pending = 1;
        } else if (!leader && s->clustered && applied_index(s) >= s->contact_index &&
                   applied_index(s) >= s->old_landed) {
            s->ready = 1;
            tr_log(TR_LOG_INFO, "state: node %llu: following, applied %llu: ready", (unsigned long long)s->node_id,
                   (unsigned long long)applied_index(s));
            note_listener(s, TR_NOTE_READY);
        }
    }
    atomic_store(&s->act_ready, s->ready);
    uint64_t t;
    return tr_timer_start(ctx, POLL_MS, tr_msg_new(MSG_POLL, 0), &t);
}

static int service_init(struct tr_ctx *ctx, void *state, void *arg)
{
    *(struct tr_state **)state = arg;
    return poll_ready(ctx, arg);
}

static int service_receive(struct tr_ctx *ctx, void *state, struct tr_msg *msg)
{
    struct tr_state *s = *(struct tr_state **)state;
    drain_done(ctx, s);
    switch (msg->type) {
    case TR_MSG_STATE_APPEND: {
        const struct tr_append_msg *am = (const struct tr_append_msg *)msg->data;
        if (!(msg->flags & TR_MSGF_REQUEST) || msg->len < sizeof *am ||
            (uint64_t)am->len + am->blob_len > msg->len - sizeof *am || msg->len > TR_APPEND_MAX) {
            struct tr_state_reply r = { .status = TR_EINVAL };
            if (msg->flags & TR_MSGF_REQUEST)
                reply_to(ctx, msg, &r);
            return 0;
        }
        tr_msg_keep(ctx, msg);
        queue_push(s, msg);
        if (!(am->flags & TR_APPEND_LAZY) || s->linger_ms <= 0 || s->q_len >= s->max_batch_appends) {
            s->urgent = 1;
            schedule_flush(ctx, s);
        } else {
            arm_linger(ctx, s);
        }
        return 0;
    }
    case TR_MSG_STATE_URGE:
        if (s->q_len > 0) {
            s->urgent = 1;
            schedule_flush(ctx, s);
        }
        return 0;
    case MSG_LINGER:
        s->linger_armed = 0;
        if (s->q_len > 0) {
            s->urgent = 1;
            flush(ctx, s);
        }
        return 0;
    case TR_MSG_STATE_PROPOSE: {
        if (!(msg->flags & TR_MSGF_REQUEST))
            return 0;
        struct entry *e = tr_calloc(1, sizeof *e);
        e->reqs = tr_malloc(sizeof *e->reqs);
        e->reqs[0] = msg;
        e->n_reqs = 1;
        int rv = command_entry(s, msg->data, msg->len, e);
        if (rv != TR_OK) {
            e->reqs[0] = NULL;
            entry_free(e);
            struct tr_state_reply r = { .status = rv };
            reply_to(ctx, msg, &r);
            return 0;
        }
        tr_msg_keep(ctx, msg);
        return 0;
    }
    case MSG_FLUSH:
        s->flush_pending = 0;
        flush(ctx, s);
        return 0;
    case MSG_DONE:
        s->done_signalled = 0;
        drain_done(ctx, s);
        return 0;
    case MSG_POLL:
        return poll_ready(ctx, s);
    default:
        return 0;
    }
}

static void service_fini(struct tr_ctx *ctx, void *state, enum tr_stop_reason why)
{
    struct tr_state *s = *(struct tr_state **)state;
    /* Appends not yet proposed die with the service; those in flight are
     * freed when raft has closed (tr_state_close). */
    while (s->q_len > 0)
        tr_msg_free(queue_pop(s, NULL));
}

static const struct tr_behavior service_behavior = {
    .name = "state",
    .state_size = sizeof(struct tr_state *),
    .init = service_init,
    .receive = service_receive,
    .fini = service_fini,
};

static void raft_closed(void *arg);

static void fsm_on_init(struct raft *raft, void *arg)
{
    tr_fsm_set_raft(arg, raft);
}

/* ---- open and close ----------------------------------------------------------------------- */

int tr_state_open(struct tr_ctx *ctx, const struct tr_state_opts *opts, struct tr_state **out, struct tr_err *err)
{
    char path[4096];
    int rv;
    uv_loop_t *loop = tr_ctx_loop(ctx);
    if (loop == NULL)
        return tr_err_set(err, TR_ENOTSUP, "state: needs a scheduler loop");
    if (opts->data_dir == NULL || opts->raft_address == NULL || opts->node_id == 0)
        return tr_err_set(err, TR_EINVAL, "state: node id, data dir and raft address are required");
    if (mkdir(opts->data_dir, 0755) != 0 && errno != EEXIST)
        return tr_err_set(err, TR_ESYS, "state: create %s: %s", opts->data_dir, strerror(errno));

    struct tr_state *s = tr_calloc(1, sizeof *s);
    s->rt = tr_ctx_rt(ctx);
    s->loop = loop;
    s->node_id = opts->node_id;
    s->listener = opts->listener;
    s->max_batch_appends = opts->max_batch_appends ? opts->max_batch_appends : 4096;
    s->max_batch_bytes = opts->max_batch_bytes ? opts->max_batch_bytes : (4u << 20);
    /* Two entries in flight: one being written, one filling. More only
     * splits concurrent appends into more, smaller entries (measured:
     * bench/run/bench_journal with BJ_INFLIGHT). */
    s->max_inflight = opts->max_inflight ? opts->max_inflight : 2;
    /* Long enough to span a fast model's reply (the step's next, urgent
     * appends then carry the lazy ones), short against a real model call. */
    s->linger_ms = opts->linger_ms == 0 ? 2 : opts->linger_ms < 0 ? 0 : opts->linger_ms;
    s->compress_min = opts->no_compress ? 0 : TR_ENTRY_COMPRESS_MIN;
    tr_fb_builder_init(&s->b);

    /* The raft log is the store's WAL (storage.h "No WAL"): the FSM's
     * commits skip RocksDB's own, and snapshots flush the store. */
    struct tr_store_opts sopts;
    if (opts->store_opts != NULL)
        sopts = *opts->store_opts;
    else
        tr_store_opts_init(&sopts);
    sopts.no_wal = 1;
    snprintf(path, sizeof path, "%s/db", opts->data_dir);
    rv = tr_store_open(path, &sopts, &s->store, err);
    if (rv != TR_OK) {
        tr_err_wrap(err, "state");
        goto err_after_alloc;
    }
    struct tr_fsm_opts fo = { .store = s->store, .rt = s->rt, .listener = opts->listener,
                              .on_fatal = opts->on_fatal, .ud = opts->fatal_ud };
    s->raft_fsm = tr_fsm_new(&fo, &s->fsm);
    tr_fsm_on_checkpoint(s->fsm, on_checkpoint, s);

    snprintf(path, sizeof path, "%s/raft", opts->data_dir);
    struct tr_raft_opts ro = {
        .id = opts->node_id, .dir = path, .address = opts->raft_address, .bootstrap = opts->bootstrap,
        .election_timeout_ms = opts->election_timeout_ms, .heartbeat_timeout_ms = opts->heartbeat_timeout_ms,
        .snapshot_threshold = opts->snapshot_threshold, .snapshot_trailing = opts->snapshot_trailing,
        .fsm = s->raft_fsm, .on_init = fsm_on_init, .on_init_arg = s->fsm,
        .cluster_key = opts->cluster_key, .no_prefill = opts->no_prefill,
    };
    rv = tr_raft_open(loop, &ro, &s->raft, err);
    if (rv != TR_OK) {
        tr_err_wrap(err, "state");
        goto err_after_store;
    }

    struct tr_spawn_opts so = { .behavior = &service_behavior, .arg = s, .sched = TR_SCHED_SELF,
                                .mailbox_cap = 1u << 20 };
    rv = tr_spawn(s->rt, &so, &s->actor);
    if (rv != TR_OK) {
        tr_err_set(err, rv, "state: spawn service actor: %s", tr_strerror(rv));
        /* raft still references the FSM: close it first, then the rest,
         * asynchronously on this loop (raft_closed frees s). */
        s->closing = 1;
        s->raft_closing = 1;
        s->close_timer.data = s;
        tr_raft_close(s->raft, raft_closed, s);
        return rv;
    }
    *out = s;
    return TR_OK;

err_after_store:
    tr_fsm_free(s->fsm);
    tr_store_close(s->store);
err_after_alloc:
    tr_fb_builder_free(&s->b);
    tr_free(s);
    return err->code;
}

static void state_freed(uv_handle_t *h)
{
    struct tr_state *s = h->data;
    void (*cb)(void *) = s->close_cb;
    void *cb_arg = s->close_arg;
    tr_free(s);
    if (cb != NULL)
        cb(cb_arg);
}

static void finish_close(struct tr_state *s);
static void fail_digest_waits(struct tr_state *s, int status);

static void raft_closed(void *arg)
{
    struct tr_state *s = arg;
    while (s->held_head != NULL) {
        struct entry *e = s->held_head;
        s->held_head = e->next;
        if (e->cb != NULL) {
            e->reply.status = TR_ECLOSED;
            e->cb(e->ud, &e->reply);
        }
        entry_free(e);
    }
    s->held_tail = NULL;
    /* raft has failed or finished every entry: they are on the done list. */
    while (s->done_head != NULL) {
        struct entry *e = s->done_head;
        s->done_head = e->next;
        if (e->cb != NULL) {
            e->reply.status = TR_ECLOSED;
            e->cb(e->ud, &e->reply);
        } else if (e->rcb != NULL) {
            struct tr_state_result r = { .status = TR_ECLOSED };
            e->rcb(e->ud, &r);
        }
        entry_free(e);
    }
    while (s->q_len > 0)
        tr_msg_free(queue_pop(s, NULL));
    tr_free(s->queue);
    fail_digest_waits(s, TR_ECLOSED);
    answer_applied_waits(s, 1);
    if (s->digest_jobs > 0) {
        s->close_deferred = 1; /* the last digest job finishes the close */
        return;
    }
    finish_close(s);
}

static void finish_close(struct tr_state *s)
{
    for (unsigned i = 0; i < sizeof s->marks / sizeof s->marks[0]; i++)
        if (s->marks[i].view != NULL)
            tr_store_view_close(s->marks[i].view);
    tr_fsm_free(s->fsm);
    tr_store_close(s->store);
    tr_fb_builder_free(&s->b);
    if (s->close_timer_on) {
        uv_close((uv_handle_t *)&s->close_timer, state_freed);
        return;
    }
    state_freed((uv_handle_t *)&s->close_timer);
}

static void close_timer_cb(uv_timer_t *t)
{
    struct tr_state *s = t->data;
    if (s->raft_closing)
        return;
    if (s->inflight > 0)
        tr_log(TR_LOG_WARN, "state: closing with %u raft entries still in flight", s->inflight);
    s->raft_closing = 1;
    uv_timer_stop(&s->close_timer);
    tr_raft_close(s->raft, raft_closed, s);
}

/* Stop taking work; let the entries raft already has finish (at most
 * CLOSE_DRAIN_MS), then close raft, then the store. */
void tr_state_close(struct tr_state *s, void (*cb)(void *arg), void *arg)
{
    if (s->closing)
        return;
    s->closing = 1;
    s->close_cb = cb;
    s->close_arg = arg;
    uv_timer_init(s->loop, &s->close_timer);
    s->close_timer.data = s;
    s->close_timer_on = 1;
    uv_timer_start(&s->close_timer, close_timer_cb, s->inflight == 0 ? 0 : CLOSE_DRAIN_MS, 0);
}

tr_actor_id tr_state_actor(struct tr_state *s) { return s->actor; }
struct tr_store *tr_state_store(struct tr_state *s) { return s->store; }
struct tr_fsm *tr_state_fsm(struct tr_state *s) { return s->fsm; }
struct tr_raft *tr_state_raft(struct tr_state *s) { return s->raft; }
int tr_state_ready(struct tr_state *s) { return s->ready; }

void tr_state_on_applied(struct tr_state *s, tr_state_applied_fn cb, void *ud)
{
    tr_fsm_on_applied(s->fsm, cb, ud);
}

void tr_state_set_listener(struct tr_state *s, tr_actor_id listener)
{
    s->listener = listener;
    tr_fsm_set_listener(s->fsm, listener);
}

void tr_state_stats(struct tr_state *s, struct tr_state_stats *out)
{
    *out = s->stats;
}

/* ---- the node table ----------------------------------------------------------------- */

static int node_decode(const void *val, size_t len, struct tr_node_rec *out)
{
    const struct troupe_state_Node *n =
        troupe_state_Node_verify_as_root_opts(val, len, "TRN2", &tr_fb_default_limits, NULL);
    if (n == NULL)
        return TR_ECORRUPT;
    memset(out, 0, sizeof *out);
    out->id = troupe_state_Node_node_id(n);
    out->state = troupe_state_Node_state(n);
    out->capacity = troupe_state_Node_capacity(n);
    out->since_us = troupe_state_Node_since_us(n);
    tr_fb_str_copy(out->raft_address, sizeof out->raft_address, troupe_state_Node_raft_address(n));
    tr_fb_str_copy(out->peer_address, sizeof out->peer_address, troupe_state_Node_peer_address(n));
    tr_fb_str_copy(out->client_address, sizeof out->client_address, troupe_state_Node_client_address(n));
    tr_fb_str_copy(out->http_address, sizeof out->http_address, troupe_state_Node_http_address(n));
    return TR_OK;
}

int tr_node_get(struct tr_store *st, uint64_t id, struct tr_node_rec *out)
{
    unsigned char k[32];
    size_t plen = strlen(FSM_NODE_PREFIX);
    memcpy(k, FSM_NODE_PREFIX, plen);
    tr_run_key(id, k + plen);
    void *val = NULL;
    size_t len = 0;
    int rv = tr_store_get(st, NULL, TR_CF_META, k, plen + 8, &val, &len, NULL);
    if (rv != TR_OK)
        return rv;
    rv = node_decode(val, len, out);
    tr_free(val);
    return rv;
}

int tr_node_list(struct tr_store *st, struct tr_node_rec *out, unsigned cap, unsigned *n)
{
    struct tr_store_iter *it = NULL;
    struct tr_err err;
    *n = 0;
    int rv = tr_store_iter_prefix(st, NULL, TR_CF_META, FSM_NODE_PREFIX, strlen(FSM_NODE_PREFIX), &it, &err);
    if (rv != TR_OK)
        return rv;
    const void *k, *v;
    size_t klen, vlen;
    while ((rv = tr_store_iter_next(it, &k, &klen, &v, &vlen, &err)) == 1) {
        struct tr_node_rec r;
        if (node_decode(v, vlen, &r) != TR_OK)
            continue;
        if (*n < cap)
            out[*n] = r;
        (*n)++;
    }
    tr_store_iter_close(it);
    return rv < 0 ? TR_EIO : TR_OK;
}

/* ---- checkpoints --------------------------------------------------------------------
 *
 * tr_state_checkpoint proposes a Checkpoint command. When the FSM applies it
 * (on every node, at the same index), on_checkpoint opens a store view —
 * the state as of that entry — and a thread-pool job digests the view. The
 * last few marks are kept; tr_state_digest_at answers with the digest of a
 * mark once it is ready. Nodes that applied the same log agree on it, under
 * any load: this is what `troupectl cluster verify` compares. */

enum { MARK_EMPTY = 0, MARK_COMPUTING, MARK_DONE, MARK_FAILED };

struct digest_wait {
    uint64_t index;
    uint64_t deadline_ms;
    tr_state_digest_cb cb;
    void *ud;
    struct digest_wait *next;
};

#define N_MARKS (sizeof ((struct tr_state *)0)->marks / sizeof ((struct tr_state *)0)->marks[0])

static void digest_work(uv_work_t *w)
{
    struct mark *m = w->data;
    struct tr_err err = { 0 };
    if (tr_store_digest(m->s->store, m->view, m->digest, &m->last_applied, &err) != TR_OK) {
        snprintf(m->err, sizeof m->err, "%s", err.msg[0] ? err.msg : "digest failed");
        m->state = MARK_FAILED;
    } else {
        m->state = MARK_DONE;
    }
}

static void answer_digest_waits(struct tr_state *s);

static void digest_after(uv_work_t *w, int status)
{
    struct mark *m = w->data;
    struct tr_state *s = m->s;
    tr_store_view_close(m->view);
    m->view = NULL;
    if (status != 0) {
        m->state = MARK_FAILED;
        snprintf(m->err, sizeof m->err, "cancelled");
    }
    s->digest_jobs--;
    if (s->close_deferred) {
        if (s->digest_jobs == 0)
            finish_close(s);
        return;
    }
    answer_digest_waits(s);
}

static void on_checkpoint(void *ud, uint64_t index)
{
    struct tr_state *s = ud;
    /* The oldest mark that is not being computed makes room. */
    struct mark *m = NULL;
    for (unsigned i = 0; i < N_MARKS; i++) {
        struct mark *c = &s->marks[i];
        if (c->state == MARK_COMPUTING)
            continue;
        if (m == NULL || c->state == MARK_EMPTY || (m->state != MARK_EMPTY && c->index < m->index))
            m = c;
    }
    if (m == NULL) {
        tr_log(TR_LOG_WARN, "state: checkpoint %llu: %u digests still being computed: skipped",
               (unsigned long long)index, (unsigned)N_MARKS);
        return;
    }
    memset(m, 0, sizeof *m);
    m->s = s;
    m->index = index;
    m->view = tr_store_view_open(s->store);
    m->state = MARK_COMPUTING;
    m->work.data = m;
    if (m->view == NULL || uv_queue_work(s->loop, &m->work, digest_work, digest_after) != 0) {
        if (m->view != NULL)
            tr_store_view_close(m->view);
        m->view = NULL;
        m->state = MARK_FAILED;
        snprintf(m->err, sizeof m->err, "cannot start the digest");
        return;
    }
    s->digest_jobs++;
}

static void fail_digest_waits(struct tr_state *s, int status)
{
    while (s->digest_waits != NULL) {
        struct digest_wait *w = s->digest_waits;
        s->digest_waits = w->next;
        w->cb(w->ud, status, w->index, NULL, 0, tr_strerror(status));
        tr_free(w);
    }
}

/* Answer every wait whose mark is ready, unknown or past its deadline. */
static void answer_digest_waits(struct tr_state *s)
{
    uint64_t now = uv_now(s->loop), applied = applied_index(s);
    struct digest_wait **pp = &s->digest_waits;
    while (*pp != NULL) {
        struct digest_wait *w = *pp;
        const struct mark *m = NULL;
        for (unsigned i = 0; i < N_MARKS; i++)
            if (s->marks[i].state != MARK_EMPTY && s->marks[i].index == w->index)
                m = &s->marks[i];
        int status = TR_OK, decided = 1; /* TR_* errors are negative: a separate flag */
        const char *msg = NULL;
        if (m != NULL && m->state == MARK_DONE)
            status = TR_OK;
        else if (m != NULL && m->state == MARK_FAILED)
            status = TR_EIO, msg = m->err;
        else if (m == NULL && applied >= w->index)
            status = TR_ENOTFOUND, msg = "no digest kept for that index (too old, or this node caught up by snapshot)";
        else if (now >= w->deadline_ms)
            status = TR_ETIMEDOUT, msg = "this node has not applied that index yet";
        else
            decided = 0;
        if (!decided) {
            pp = &w->next;
            continue;
        }
        *pp = w->next;
        if (status == TR_OK)
            w->cb(w->ud, TR_OK, w->index, m->digest, m->last_applied, NULL);
        else
            w->cb(w->ud, status, w->index, NULL, 0, msg);
        tr_free(w);
    }
}

int tr_state_digest_at(struct tr_state *s, uint64_t index, unsigned timeout_ms, tr_state_digest_cb cb, void *ud)
{
    if (s->closing)
        return TR_ECLOSED;
    if (index == 0)
        return TR_EINVAL;
    struct digest_wait *w = tr_malloc(sizeof *w);
    *w = (struct digest_wait){ index, uv_now(s->loop) + timeout_ms, cb, ud, s->digest_waits };
    s->digest_waits = w; /* answered by the next poll or digest job, never from here */
    return TR_OK;
}

void tr_state_command_finish(struct tr_state *s, struct tr_fb_builder *b, uint8_t op_type, uint32_t op)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tr_raft_info info;
    tr_raft_info(s->raft, &info);
    troupe_cmd_Command_start(b);
    troupe_cmd_Command_add_time_us(b, (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000);
    troupe_cmd_Command_add_term(b, info.term);
    troupe_cmd_Command_add_leader_node(b, s->node_id);
    troupe_cmd_Command_add_origin_node(b, s->node_id);
    troupe_cmd_Command_add_op_type(b, op_type);
    troupe_cmd_Command_add_op(b, op);
    troupe_cmd_Command_finish(b, troupe_cmd_Command_end(b));
}

int tr_state_checkpoint(struct tr_state *s, tr_state_cb cb, void *ud)
{
    struct tr_fb_builder b;
    tr_fb_builder_init(&b);
    uint64_t nonce;
    randombytes_buf(&nonce, sizeof nonce);
    troupe_cmd_Checkpoint_start(&b);
    troupe_cmd_Checkpoint_add_nonce(&b, nonce);
    tr_state_command_finish(s, &b, troupe_cmd_Op_Checkpoint, troupe_cmd_Checkpoint_end(&b));
    size_t len;
    const uint8_t *data = tr_fb_builder_data(&b, &len);
    int rv = tr_state_propose(s, data, len, cb, ud);
    tr_fb_builder_free(&b);
    return rv;
}

/* ---- read-your-writes -------------------------------------------------------------------- */

struct applied_wait {
    uint64_t index;
    uint64_t deadline_ms;
    tr_state_wait_cb cb;
    void *ud;
    struct applied_wait *next;
};

static void answer_applied_waits(struct tr_state *s, int closing)
{
    /* Closing: raft is gone already (raft_closed); only fail the waits. */
    uint64_t now = uv_now(s->loop), applied = closing ? 0 : applied_index(s);
    struct applied_wait **pp = &s->applied_waits;
    while (*pp != NULL) {
        struct applied_wait *w = *pp;
        int decided = closing || applied >= w->index || now >= w->deadline_ms; /* TR_* errors are negative */
        int status = closing ? TR_ECLOSED : applied >= w->index ? TR_OK : TR_ETIMEDOUT;
        if (!decided) {
            pp = &w->next;
            continue;
        }
        *pp = w->next;
        w->cb(w->ud, status);
        tr_free(w);
    }
}

int tr_state_wait_applied(struct tr_state *s, uint64_t index, unsigned timeout_ms, tr_state_wait_cb cb, void *ud)
{
    if (s->closing)
        return TR_ECLOSED;
    struct applied_wait *w = tr_malloc(sizeof *w);
    *w = (struct applied_wait){ index, uv_now(s->loop) + timeout_ms, cb, ud, s->applied_waits };
    s->applied_waits = w;
    return TR_OK;
}
