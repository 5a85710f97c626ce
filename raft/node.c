/* The raft node: canonical raft with its libuv I/O and TCP transport on one loop.
 *
 * Happy path: tr_raft_propose queues a proposal and starts an idle handle
 * (so the loop does not block in poll); the idle callback, on the next loop
 * iteration, hands the queue to raft_apply; raft persists, replicates, commits
 * and applies the entry through the FSM, then calls apply_cb, which calls the
 * proposer's callback with the FSM's result.
 *
 * Failure modes: raft_apply refusing synchronously (not leader, shutting down)
 * completes the proposal from the idle callback; leadership lost while in
 * flight completes it from raft with RAFT_LEADERSHIPLOST -> TR_ENOTLEADER;
 * closing fails everything still queued with TR_ECLOSED after raft has
 * closed. Close order: raft first, then (in raft's close callback) its I/O
 * and transport, then our idle handle, then the user's callback. raft's
 * close callback waits for a snapshot being serialised on the thread pool.
 *
 * I/O: raft/io.c, the libuv io raised to version 2 (async_work on libuv's
 * thread pool), so that an FSM of version 3 (raft/fsm.c) serialises its
 * snapshots off the loop.
 *
 * Transport: raft_uv_tcp (anyone may connect) unless opts->cluster_key is
 * set; then raft/transport.c, which admits only nodes that prove they hold
 * the cluster key (raft/auth.h).
 */
#include "raft/raft.h"
#include "raft/auth.h"
#include "raft/io.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <raft/uv.h>

enum op_kind { OP_ADD, OP_REMOVE, OP_TRANSFER, OP_BARRIER };

/* A queued membership change, transfer or barrier. */
struct op {
    enum op_kind kind;
    struct tr_raft *node;
    uint64_t id;
    char *address;
    int voter;
    int stage;                  /* OP_ADD with voter: 0 = add, 1 = assign */
    tr_raft_change_cb cb;
    void *arg;
    struct raft_change change;
    struct raft_transfer transfer;
    struct raft_barrier barrier;
    struct op *next;
};

struct tr_raft {
    uv_loop_t *loop;
    struct raft_uv_transport transport;
    int authed;          /* transport is raft/transport.c's, not raft_uv_tcp */
    struct tr_raft_io io; /* raft/io.c: the libuv io with async_work */
    struct raft raft;
    uv_idle_t idle;      /* started while something is queued */
    int idle_on;
    struct tr_raft_propose *queue_head, *queue_tail; /* not yet given to raft */
    struct op *ops_head, *ops_tail;
    int closing;
    void (*close_cb)(void *arg);
    void *close_arg;
    char address[64];
    unsigned election_ms;      /* the configured election timeout */
    int hastened;              /* tr_raft_hasten_election: timeout shortened */
    uint64_t hastened_term;    /* the term then */
    uint64_t hastened_at;      /* raft's clock then */
};

int tr_raft_errno(int rv)
{
    switch (rv) {
    case 0: return TR_OK;
    case RAFT_NOMEM: return TR_ENOMEM;
    case RAFT_NOTLEADER:
    case RAFT_LEADERSHIPLOST: return TR_ENOTLEADER;
    case RAFT_SHUTDOWN:
    case RAFT_CANCELED: return TR_ECLOSED;
    case RAFT_BADID:
    case RAFT_BADROLE:
    case RAFT_INVALID:
    case RAFT_MALFORMED: return TR_EINVAL;
    case RAFT_DUPLICATEID:
    case RAFT_DUPLICATEADDRESS: return TR_EEXIST;
    case RAFT_CANTCHANGE:
    case RAFT_BUSY: return TR_EBUSY;
    case RAFT_NOTFOUND: return TR_ENOTFOUND;
    case RAFT_TOOBIG: return TR_ETOOBIG;
    case RAFT_CORRUPT: return TR_ECORRUPT;
    case RAFT_NOCONNECTION: return TR_EUNAVAIL;
    case RAFT_TOOMANY: return TR_ELIMIT;
    default: return TR_EIO;
    }
}

static int mkdir_p(const char *path)
{
    char buf[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof buf)
        return -1;
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != '\0')
            continue;
        char c = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return -1;
        buf[i] = c;
    }
    return 0;
}

static void kick(struct tr_raft *r);
static void transport_free(struct tr_raft *r);

/* --- proposals --------------------------------------------------------------- */

static void apply_cb(struct raft_apply *req, int status, void *result)
{
    struct tr_raft_propose *p = req->data;
    p->cb(p, tr_raft_errno(status), status == 0 ? result : NULL);
}

static void issue_proposals(struct tr_raft *r)
{
    while (r->queue_head != NULL) {
        struct tr_raft_propose *p = r->queue_head;
        r->queue_head = p->next_;
        if (r->queue_head == NULL)
            r->queue_tail = NULL;
        p->next_ = NULL;
        p->req_.data = p;
        int rv = raft_apply(&r->raft, &p->req_, &p->buf_, 1, apply_cb);
        if (rv != 0) {
            /* Not taken: we still own the bytes. */
            raft_free(p->buf_.base);
            p->buf_.base = NULL;
            p->cb(p, tr_raft_errno(rv), NULL);
        }
    }
}

int tr_raft_propose(struct tr_raft *r, struct tr_raft_propose *p, void *buf, size_t len,
                    tr_raft_propose_cb cb)
{
    if (r->closing)
        return TR_ECLOSED;
    if (len == 0 || len % 8 != 0)
        return TR_EINVAL; /* see tr_raft_propose in raft.h */
    p->cb = cb;
    p->node_ = r;
    p->buf_.base = buf;
    p->buf_.len = len;
    p->next_ = NULL;
    if (r->queue_tail != NULL)
        r->queue_tail->next_ = p;
    else
        r->queue_head = p;
    r->queue_tail = p;
    kick(r);
    return TR_OK;
}

/* --- membership changes ------------------------------------------------------ */

static void op_finish(struct op *op, int raft_rv, const char *msg)
{
    op->cb(op->arg, tr_raft_errno(raft_rv), raft_rv == 0 ? "" : msg);
    tr_free(op->address);
    tr_free(op);
}

static void op_issue(struct op *op);

static void change_cb(struct raft_change *req, int status)
{
    struct op *op = req->data;
    if (status == 0 && op->kind == OP_ADD && op->voter && op->stage == 0) {
        op->stage = 1;
        op_issue(op);
        return;
    }
    op_finish(op, status, raft_errmsg(&op->node->raft));
}

static void transfer_cb(struct raft_transfer *req)
{
    struct op *op = req->data;
    raft_id leader;
    const char *address;
    raft_leader(&op->node->raft, &leader, &address);
    if (op->id != 0 && leader != op->id)
        op_finish(op, RAFT_NOTLEADER, "leadership did not move to the target");
    else
        op_finish(op, 0, "");
}

static void barrier_cb(struct raft_barrier *req, int status)
{
    struct op *op = req->data;
    op_finish(op, status, raft_errmsg(&op->node->raft));
}

static void op_issue(struct op *op)
{
    struct raft *raft = &op->node->raft;
    int rv;
    op->change.data = op;
    op->transfer.data = op;
    op->barrier.data = op;
    switch (op->kind) {
    case OP_ADD:
        if (op->stage == 0)
            rv = raft_add(raft, &op->change, op->id, op->address, change_cb);
        else
            rv = raft_assign(raft, &op->change, op->id, RAFT_VOTER, change_cb);
        break;
    case OP_REMOVE:
        rv = raft_remove(raft, &op->change, op->id, change_cb);
        break;
    case OP_TRANSFER:
        rv = raft_transfer(raft, &op->transfer, op->id, transfer_cb);
        break;
    case OP_BARRIER:
        rv = raft_barrier(raft, &op->barrier, barrier_cb);
        break;
    default:
        rv = RAFT_INVALID;
        break;
    }
    if (rv != 0)
        op_finish(op, rv, raft_errmsg(raft));
}

static int op_queue(struct tr_raft *r, enum op_kind kind, uint64_t id, const char *address, int voter,
                    tr_raft_change_cb cb, void *arg)
{
    if (r->closing)
        return TR_ECLOSED;
    struct op *op = tr_calloc(1, sizeof *op);
    op->kind = kind;
    op->node = r;
    op->id = id;
    op->address = address != NULL ? tr_strdup(address) : NULL;
    op->voter = voter;
    op->cb = cb;
    op->arg = arg;
    if (r->ops_tail != NULL)
        r->ops_tail->next = op;
    else
        r->ops_head = op;
    r->ops_tail = op;
    kick(r);
    return TR_OK;
}

int tr_raft_add(struct tr_raft *r, uint64_t id, const char *address, int voter, tr_raft_change_cb cb,
                void *arg)
{
    if (id == 0 || address == NULL)
        return TR_EINVAL;
    return op_queue(r, OP_ADD, id, address, voter, cb, arg);
}

int tr_raft_remove(struct tr_raft *r, uint64_t id, tr_raft_change_cb cb, void *arg)
{
    return op_queue(r, OP_REMOVE, id, NULL, 0, cb, arg);
}

int tr_raft_transfer(struct tr_raft *r, uint64_t id, tr_raft_change_cb cb, void *arg)
{
    return op_queue(r, OP_TRANSFER, id, NULL, 0, cb, arg);
}

int tr_raft_barrier(struct tr_raft *r, tr_raft_change_cb cb, void *arg)
{
    return op_queue(r, OP_BARRIER, 0, NULL, 0, cb, arg);
}

static void issue_ops(struct tr_raft *r)
{
    while (r->ops_head != NULL) {
        struct op *op = r->ops_head;
        r->ops_head = op->next;
        if (r->ops_head == NULL)
            r->ops_tail = NULL;
        op->next = NULL;
        op_issue(op);
    }
}

/* Issue everything queued, from the loop and never from a caller's stack
 * (not even raft's own callbacks, which may queue more). */
static void idle_cb(uv_idle_t *h)
{
    struct tr_raft *r = h->data;
    uv_idle_stop(&r->idle);
    r->idle_on = 0;
    if (r->closing)
        return;
    issue_proposals(r);
    issue_ops(r);
}

static void kick(struct tr_raft *r)
{
    if (!r->idle_on && !r->closing) {
        uv_idle_start(&r->idle, idle_cb);
        r->idle_on = 1;
    }
}

/* --- open and close ---------------------------------------------------------- */

int tr_raft_open(uv_loop_t *loop, const struct tr_raft_opts *opts, struct tr_raft **out, struct tr_err *err)
{
    struct tr_raft *r;
    int rv;

    if (opts->id == 0 || opts->dir == NULL || opts->address == NULL || opts->fsm == NULL)
        return tr_err_set(err, TR_EINVAL, "raft: id, dir, address and fsm are required");
    if (strlen(opts->address) >= sizeof r->address)
        return tr_err_set(err, TR_EINVAL, "raft: address too long: %s", opts->address);
    if (mkdir_p(opts->dir) != 0)
        return tr_err_set(err, TR_ESYS, "raft: create %s: %s", opts->dir, strerror(errno));

    r = tr_calloc(1, sizeof *r);
    r->loop = loop;
    snprintf(r->address, sizeof r->address, "%s", opts->address);

    if (opts->cluster_key != NULL) {
        rv = tr_auth_transport_init(&r->transport, loop, opts->cluster_key, err);
        if (rv != TR_OK)
            goto err_after_alloc;
        r->authed = 1;
    } else {
        rv = raft_uv_tcp_init(&r->transport, loop);
        if (rv != 0) {
            tr_err_set(err, tr_raft_errno(rv), "raft: transport: %s", raft_strerror(rv));
            goto err_after_alloc;
        }
    }
    rv = tr_raft_io_init(&r->io, loop, opts->dir, &r->transport, !opts->no_prefill);
    if (rv != 0) {
        tr_err_set(err, tr_raft_errno(rv), "raft: open log in %s: %s", opts->dir, r->io.io.errmsg);
        goto err_after_transport;
    }
    rv = raft_init(&r->raft, &r->io.io, opts->fsm, opts->id, r->address);
    if (rv != 0) {
        tr_err_set(err, tr_raft_errno(rv), "raft: init: %s", raft_errmsg(&r->raft));
        goto err_after_io;
    }
    r->raft.data = r;
    r->election_ms = opts->election_timeout_ms ? opts->election_timeout_ms : 1000;
    raft_set_election_timeout(&r->raft, r->election_ms);
    raft_set_heartbeat_timeout(&r->raft, opts->heartbeat_timeout_ms ? opts->heartbeat_timeout_ms : 100);
    raft_set_snapshot_threshold(&r->raft, opts->snapshot_threshold ? opts->snapshot_threshold : 65536);
    raft_set_snapshot_trailing(&r->raft, opts->snapshot_trailing ? opts->snapshot_trailing : 8192);
    raft_set_pre_vote(&r->raft, true);

    if (opts->bootstrap) {
        struct raft_configuration conf;
        raft_configuration_init(&conf);
        rv = raft_configuration_add(&conf, opts->id, r->address, RAFT_VOTER);
        if (rv == 0)
            rv = raft_bootstrap(&r->raft, &conf);
        raft_configuration_close(&conf);
        if (rv != 0 && rv != RAFT_CANTBOOTSTRAP) { /* CANTBOOTSTRAP: already has state */
            tr_err_set(err, tr_raft_errno(rv), "raft: bootstrap: %s", raft_errmsg(&r->raft));
            goto err_after_raft;
        }
    }

    uv_idle_init(loop, &r->idle);
    r->idle.data = r;

    if (opts->on_init != NULL)
        opts->on_init(&r->raft, opts->on_init_arg);
    rv = raft_start(&r->raft);
    if (rv != 0) {
        /* raft 0.15 does not always carry the io's or transport's message up. */
        const char *why = raft_errmsg(&r->raft);
        if (why == NULL || why[0] == '\0')
            why = r->io.io.errmsg[0] != '\0' ? r->io.io.errmsg : r->transport.errmsg;
        tr_err_set(err, tr_raft_errno(rv), "raft: start: %s", why[0] != '\0' ? why : raft_strerror(rv));
        /* raft is initialised: it must be closed asynchronously. */
        tr_raft_close(r, NULL, NULL);
        return err->code;
    }
    *out = r;
    return TR_OK;

err_after_raft:
    /* raft_init done but not started: raft_close still has to run, async. */
    uv_idle_init(loop, &r->idle);
    r->idle.data = r;
    tr_raft_close(r, NULL, NULL);
    return err->code;
err_after_io:
    tr_raft_io_free(&r->io);
err_after_transport:
    transport_free(r);
err_after_alloc:
    tr_free(r);
    return err->code;
}

static void transport_free(struct tr_raft *r)
{
    if (r->authed)
        tr_auth_transport_free(&r->transport);
    else
        raft_uv_tcp_close(&r->transport);
}

static void idle_closed_cb(uv_handle_t *h)
{
    struct tr_raft *r = h->data;
    void (*cb)(void *) = r->close_cb;
    void *arg = r->close_arg;
    tr_free(r);
    if (cb != NULL)
        cb(arg);
}

static void raft_closed_cb(struct raft *raft)
{
    struct tr_raft *r = raft->data;
    /* raft_close has closed the io, which closed the transport, and waited
     * for its async work (a snapshot being serialised: raft/io.c): only
     * their memory is left (io first: it refers to the transport). */
    tr_raft_io_free(&r->io);
    transport_free(r);
    /* What never reached raft fails now, outside any caller's stack. */
    while (r->queue_head != NULL) {
        struct tr_raft_propose *p = r->queue_head;
        r->queue_head = p->next_;
        raft_free(p->buf_.base);
        p->buf_.base = NULL;
        p->cb(p, TR_ECLOSED, NULL);
    }
    r->queue_tail = NULL;
    while (r->ops_head != NULL) {
        struct op *op = r->ops_head;
        r->ops_head = op->next;
        op_finish(op, RAFT_SHUTDOWN, "closing");
    }
    r->ops_tail = NULL;
    uv_close((uv_handle_t *)&r->idle, idle_closed_cb);
}

void tr_raft_close(struct tr_raft *r, void (*cb)(void *arg), void *arg)
{
    if (r->closing)
        return;
    r->closing = 1;
    r->close_cb = cb;
    r->close_arg = arg;
    uv_idle_stop(&r->idle);
    r->idle_on = 0;
    raft_close(&r->raft, raft_closed_cb);
}

/* --- inspection -------------------------------------------------------------- */

void tr_raft_info(struct tr_raft *r, struct tr_raft_info *out)
{
    raft_id leader = 0;
    const char *address = NULL;
    memset(out, 0, sizeof *out);
    out->role = raft_state(&r->raft);
    raft_leader(&r->raft, &leader, &address);
    out->leader_id = leader;
    if (address != NULL)
        snprintf(out->leader_address, sizeof out->leader_address, "%s", address);
    out->term = r->raft.current_term;
    out->commit_index = r->raft.commit_index;
    out->last_applied = raft_last_applied(&r->raft);
    out->last_index = raft_last_index(&r->raft);
    out->n_servers = r->raft.configuration.n;
}

/* raft 0.15 has no call that starts an election now. Its election timer is
 * two fields of struct raft (raft.h): the start (election_timer_start) and a
 * timeout drawn from [election_timeout, 2 * election_timeout] at each reset
 * (follower_state / candidate_state.randomized_election_timeout, the same
 * place in both); a tick converts the follower once the time since the start
 * reaches it. Hastening shortens the base, so that every later draw is short,
 * and brings the current deadline forward to a random point within the short
 * timeout, so that two followers hastening together rarely stand at once. */
int tr_raft_hasten_election(struct tr_raft *r, uint64_t leader_id)
{
    struct raft *raw = &r->raft;
    if (r->closing || (raw->state != RAFT_FOLLOWER && raw->state != RAFT_CANDIDATE))
        return 0;
    if (raw->state == RAFT_FOLLOWER && raw->follower_state.current_leader.id != 0 &&
        raw->follower_state.current_leader.id != leader_id)
        return 0; /* it follows someone else: old news */
    unsigned quick = 2 * raw->heartbeat_timeout;
    if (quick >= r->election_ms)
        return 0; /* the configured timeout is as short already */
    raw->election_timeout = quick;
    raft_time now = raw->io->time(raw->io);
    raft_time elapsed = now >= raw->election_timer_start ? now - raw->election_timer_start : 0;
    unsigned *deadline = raw->state == RAFT_FOLLOWER ? &raw->follower_state.randomized_election_timeout
                                                     : &raw->candidate_state.randomized_election_timeout;
    raft_time soon = elapsed + (raft_time)raw->io->random(raw->io, 0, (int)quick);
    if (soon < *deadline)
        *deadline = (unsigned)soon;
    if (r->hastened)
        return 0;
    r->hastened = 1;
    r->hastened_term = raw->current_term;
    r->hastened_at = now;
    return 1;
}

void tr_raft_hasten_settle(struct tr_raft *r)
{
    struct raft *raw = &r->raft;
    if (!r->hastened || r->closing)
        return;
    raft_time now = raw->io->time(raw->io);
    int led = raw->current_term > r->hastened_term &&
              (raw->state == RAFT_LEADER ||
               (raw->state == RAFT_FOLLOWER && raw->follower_state.current_leader.id != 0));
    if (led || now - r->hastened_at > 2 * (raft_time)r->election_ms) {
        raw->election_timeout = r->election_ms;
        r->hastened = 0;
    }
}

int tr_raft_is_leader(struct tr_raft *r)
{
    return raft_state(&r->raft) == RAFT_LEADER;
}

struct raft *tr_raft_raw(struct tr_raft *r)
{
    return &r->raft;
}
