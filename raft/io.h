/* Private to raft/: the raft_io that raft's core is given (raft/io.c): the
 * libuv io of raft 0.15 (raft_uv_init) raised to version 2, with an
 * async_work method that runs work on libuv's thread pool and a close that
 * waits for that work. See io.c's top comment for who runs what on which
 * thread. */
#ifndef TR_RAFT_IO_H
#define TR_RAFT_IO_H

#include <raft.h>
#include <raft/uv.h>
#include <uv.h>

#include "runtime/runtime.h"

struct tr_io_work;

struct tr_raft_io {
    struct raft_io io;            /* first: what raft_init and raft's callbacks see */
    uv_loop_t *loop;
    void (*uv_close)(struct raft_io *io, raft_io_close_cb cb); /* the libuv io's close */
    raft_io_close_cb close_cb;    /* the core's, fired once everything has stopped */
    struct tr_io_work *works;     /* async_work requests not yet completed */
    unsigned n_works;
    int closing;                  /* the core called close */
    int uv_closed;                /* the libuv io's close callback has run */
    char *prefill_dir;            /* registered with raft/prefill.c (NULL: not) */
};

/* raft_uv_init on w->io with `dir` and transport t, then the upgrade; with
 * prefill, dir's open segments are zero-filled (raft/prefill.c). On failure
 * w->io.errmsg says why (a raft error code is returned) and nothing needs
 * freeing but the transport. */
int tr_raft_io_init(struct tr_raft_io *w, uv_loop_t *loop, const char *dir, struct raft_uv_transport *t,
                    int prefill);

/* After the close callback (or when raft was never started): release the
 * libuv io's memory (raft_uv_close). */
void tr_raft_io_free(struct tr_raft_io *w);

/* async_work requests started and not yet completed (tests, diagnostics). */
unsigned tr_raft_io_pending(const struct tr_raft_io *w);

/* raft/prefill.c: open segments created in a registered directory are
 * written with zeros when raft allocates them (see there why). */
int tr_raft_prefill_register(const char *dir);
void tr_raft_prefill_unregister(const char *dir);
/* Segments prefilled by this process so far. */
unsigned long tr_raft_prefill_count(void);

#endif /* TR_RAFT_IO_H */
