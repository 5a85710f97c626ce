/* The raft_io given to raft's core: raft 0.15's libuv io (raft_uv_init),
 * raised to version 2 with an async_work of our own, so that the core takes
 * snapshots through the FSM's snapshot_async on libuv's thread pool instead
 * of on the loop.
 *
 * Why. raft 0.15's core supports raft_fsm version 3 (snapshot in the loop,
 * snapshot_async through io->async_work, snapshot_finalize in the loop), but
 * raft_init refuses a version 3 FSM unless io->version >= 2 and
 * io->async_work is set ("async snapshot requires io->version > 1 and
 * async_work method"), and raft_uv_init reports version 1. (Debian's 0.15.0
 * fills in an async_work anyway; we do not use it: we could not check that
 * its close waits for work in flight, and ours must.)
 *
 * How. Not a second struct raft_io forwarding each method: the libuv io
 * itself is patched in place — version = 2, async_work = ours, close = ours
 * (which calls the libuv io's close). Every other method is the libuv io's
 * own, so there is nothing to forward and nothing to keep in sync: the core
 * sets io->data and reads io->errmsg on the very struct the libuv io fills,
 * and the libuv io calls the core's tick, recv and close callbacks with that
 * same pointer, in which the core finds its raft (io->data). Our state
 * lives around the struct (struct tr_raft_io, io first), found by a cast.
 *
 * Threads (raft 0.15's core with this io; checked against the library
 * Debian ships and the upstream sources):
 *   the loop:        every raft_io method, async_work and close included;
 *                    every callback into the core (tick, recv, send, append,
 *                    snapshot_put and snapshot_get completions, the
 *                    async_work callback, the close callback); so every FSM
 *                    method but one: apply, snapshot, restore,
 *                    snapshot_finalize.
 *   the thread pool: the request's work function, and nothing else. For the
 *                    core's snapshot request that is takeSnapshotAsync, which
 *                    calls fsm->snapshot_async(fsm, &pending.bufs,
 *                    &pending.n_bufs) and reads nothing else of raft's. (The
 *                    libuv io also writes its files from the thread pool;
 *                    it calls the core only from the loop.)
 * The core's snapshot sequence (replicationApply, on the loop, once
 * last_applied - last snapshot index >= threshold and no snapshot is being
 * taken or installed): fsm->snapshot; if fsm->version >= 3 and snapshot_async
 * is set, io->async_work; its callback with status != 0 finalizes
 * (snapshot_finalize) and gives up until the next threshold, with 0 calls
 * io->snapshot_put, whose callback truncates the log and finalizes. With an
 * FSM below version 3 the core calls snapshot_put right after snapshot, all
 * on the loop, and never async_work. While a snapshot is pending the core
 * keeps applying entries (the FSM must serialise a point-in-time view, not
 * its live state), takes no other snapshot and answers InstallSnapshot busy.
 *
 * Failure modes. uv_queue_work refusing: async_work returns RAFT_IOERR (the
 * core finalizes at once). A work function's non-zero return reaches the
 * callback as its status. Close with work in flight: work not started yet is
 * cancelled (uv_cancel); work running is waited for; either way its callback
 * gets RAFT_CANCELED (a finished snapshot must not go on to snapshot_put on
 * a closing io), before the core's close callback, which runs only once the
 * libuv io has closed AND no work is left. That is what makes close safe: the
 * core frees its state, and its owner the FSM, only after its close callback.
 *
 * Invariants: n_works counts the requests on the works list; the close
 * callback fires at most once, after every request's callback.
 */
#include "raft/io.h"

#include <stdio.h>
#include <string.h>

struct tr_io_work {
    uv_work_t work;
    struct tr_raft_io *w;
    struct raft_io_async_work *req;
    int status;                 /* the work function's return (thread pool) */
    struct tr_io_work *prev, *next;
};

static void maybe_closed(struct tr_raft_io *w)
{
    if (!w->closing || !w->uv_closed || w->n_works > 0 || w->close_cb == NULL)
        return;
    raft_io_close_cb cb = w->close_cb;
    w->close_cb = NULL;
    cb(&w->io);
}

/* Thread pool. */
static void work_run(uv_work_t *uw)
{
    struct tr_io_work *x = uw->data;
    x->status = x->req->work(x->req);
}

/* Loop. */
static void work_done(uv_work_t *uw, int uv_status)
{
    struct tr_io_work *x = uw->data;
    struct tr_raft_io *w = x->w;
    struct raft_io_async_work *req = x->req;
    int status = x->status;

    if (x->prev != NULL)
        x->prev->next = x->next;
    else
        w->works = x->next;
    if (x->next != NULL)
        x->next->prev = x->prev;
    w->n_works--;
    if (uv_status == UV_ECANCELED || (w->closing && status == 0))
        status = RAFT_CANCELED;
    tr_free(x);
    if (req->cb != NULL)
        req->cb(req, status);
    maybe_closed(w);
}

static int io_async_work(struct raft_io *io, struct raft_io_async_work *req, raft_io_async_work_cb cb)
{
    struct tr_raft_io *w = (struct tr_raft_io *)io;
    if (w->closing)
        return RAFT_CANCELED;
    struct tr_io_work *x = tr_calloc(1, sizeof *x);
    x->w = w;
    x->req = req;
    x->work.data = x;
    req->cb = cb;
    int rv = uv_queue_work(w->loop, &x->work, work_run, work_done);
    if (rv != 0) {
        tr_free(x);
        snprintf(io->errmsg, sizeof io->errmsg, "async work: %s", uv_strerror(rv));
        return RAFT_IOERR;
    }
    x->next = w->works;
    if (w->works != NULL)
        w->works->prev = x;
    w->works = x;
    w->n_works++;
    return 0;
}

static void uv_closed_cb(struct raft_io *io)
{
    struct tr_raft_io *w = (struct tr_raft_io *)io;
    w->uv_closed = 1;
    maybe_closed(w);
}

static void io_close(struct raft_io *io, raft_io_close_cb cb)
{
    struct tr_raft_io *w = (struct tr_raft_io *)io;
    w->closing = 1;
    w->close_cb = cb;
    /* Work not started yet completes with UV_ECANCELED; running work (EBUSY)
     * is waited for. Either way its callback comes later, from the loop. */
    for (struct tr_io_work *x = w->works; x != NULL; x = x->next)
        (void)uv_cancel((uv_req_t *)&x->work);
    w->uv_close(io, uv_closed_cb);
}

static void prefill_release(struct tr_raft_io *w)
{
    if (w->prefill_dir != NULL) {
        tr_raft_prefill_unregister(w->prefill_dir);
        tr_free(w->prefill_dir);
        w->prefill_dir = NULL;
    }
}

int tr_raft_io_init(struct tr_raft_io *w, uv_loop_t *loop, const char *dir, struct raft_uv_transport *t,
                    int prefill)
{
    memset(w, 0, sizeof *w);
    w->loop = loop;
    if (prefill && tr_raft_prefill_register(dir) == TR_OK)
        w->prefill_dir = tr_strdup(dir);
    int rv = raft_uv_init(&w->io, loop, dir, t);
    if (rv != 0) {
        prefill_release(w);
        return rv;
    }
    w->uv_close = w->io.close;
    w->io.close = io_close;
    w->io.async_work = io_async_work;
    w->io.version = 2;
    return 0;
}

void tr_raft_io_free(struct tr_raft_io *w)
{
    raft_uv_close(&w->io);
    prefill_release(w);
}

unsigned tr_raft_io_pending(const struct tr_raft_io *w)
{
    return w->n_works;
}
