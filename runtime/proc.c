/* Child process adapter: uv_spawn on the actor's scheduler loop.
 *
 * Happy path: tr_proc_spawn starts the program as the leader of a new session
 * (so of its own process group), writes stdin_data to its stdin and closes
 * it, captures stdout and stderr, and when the child has exited and both pipes
 * are drained sends the requester one TR_MSG_PROC_EXIT.
 *
 * Failure modes: the program cannot be started -> the result carries
 * TR_ESYS and the reason (tr_proc_spawn still returns 0 and an id); output
 * over a cap is discarded and flagged while the pipe keeps being drained, so
 * the child never blocks on a full pipe; the wall-clock timeout SIGKILLs the
 * whole group and sets timed_out; descendants that still hold the output
 * pipes a short grace period after the child exited are SIGKILLed with its
 * group (no orphans left behind), and the result is sent.
 *
 * Invariants
 *  1. Per-scheduler state lives in the TR_EXT_PROC slot and is touched only by
 *     its scheduler's thread; the shutdown hook kills every child's group,
 *     closes every handle, and the last close callback frees the state.
 *  2. A process record is freed only after all of its handles have closed.
 *  3. Each successful tr_proc_spawn yields exactly one TR_MSG_PROC_EXIT
 *     unless the runtime shuts down first.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>

#include "adapters.h"
#include "internal.h"

#define DEF_MAX_OUT (1024u * 1024)
#define MAX_OUT_LIMIT (256u * 1024 * 1024)
/* After the child exits, how long to wait for its pipes to reach EOF. */
#define DRAIN_GRACE_MS 200

struct proc_sched;

struct obuf {
    char *p;
    size_t len;
    size_t alloc;
    size_t cap; /* the capture limit */
    int truncated;
};

struct proc {
    struct proc *prev, *next;
    struct proc_sched *ps;
    uint64_t id;
    uint64_t tag;
    tr_actor_id owner;
    uv_process_t process;
    uv_pipe_t in, out, err;
    uv_timer_t timer;
    uv_write_t wreq;
    char *stdin_copy;
    int open_handles;
    int pid;
    int spawned;   /* uv_spawn succeeded */
    int exited;    /* exit_cb ran (or spawn failed) */
    int out_open, err_open, in_open;
    int timed_out;
    int reported;
    int64_t exit_status;
    int term_signal;
    int spawn_error;
    char errmsg[256];
    uint64_t start_ns;
    struct obuf o, e;
};

struct proc_sched {
    struct proc *procs;
    struct tr_rt *rt;
    void **slot;
    uv_loop_t *loop;
    uint64_t next_id;
    int sched;
    int closing;
    unsigned live; /* proc records not yet freed */
};

/* Wire layout of TR_MSG_PROC_EXIT: this header, then errmsg, NUL, stdout,
 * stderr. */
struct proc_wire {
    uint64_t id;
    uint64_t tag;
    uint64_t elapsed_us;
    int64_t exit_status;
    uint64_t out_len;
    uint64_t err_len;
    int32_t error;
    int32_t term_signal;
    uint32_t errmsg_len;
    uint8_t timed_out;
    uint8_t stdout_truncated;
    uint8_t stderr_truncated;
    uint8_t reserved_;
};

static void ps_maybe_free(struct proc_sched *ps)
{
    if (ps->closing && ps->live == 0)
        tr_free(ps);
}

static void proc_free(struct proc *p)
{
    struct proc_sched *ps = p->ps;
    if (p->prev)
        p->prev->next = p->next;
    else
        ps->procs = p->next;
    if (p->next)
        p->next->prev = p->prev;
    tr_free(p->stdin_copy);
    tr_free(p->o.p);
    tr_free(p->e.p);
    tr_free(p);
    ps->live--;
    ps_maybe_free(ps);
}

static void handle_close_cb(uv_handle_t *h)
{
    struct proc *p = h->data;
    if (--p->open_handles == 0)
        proc_free(p);
}

static void close_handle(struct proc *p, uv_handle_t *h)
{
    if (!uv_is_closing(h))
        uv_close(h, handle_close_cb);
}

static void close_all(struct proc *p)
{
    uv_timer_stop(&p->timer);
    close_handle(p, (uv_handle_t *)&p->timer);
    close_handle(p, (uv_handle_t *)&p->process);
    close_handle(p, (uv_handle_t *)&p->in);
    close_handle(p, (uv_handle_t *)&p->out);
    close_handle(p, (uv_handle_t *)&p->err);
    p->in_open = p->out_open = p->err_open = 0;
}

static void kill_group(struct proc *p, int sig)
{
    if (p->spawned && !p->exited && p->pid > 0)
        kill(-p->pid, sig);
}

/* Send the result once the child has exited and its output is drained. */
static void maybe_report(struct proc *p)
{
    if (p->reported || !p->exited || p->out_open || p->err_open)
        return;
    p->reported = 1;
    size_t errlen = p->spawn_error ? strlen(p->errmsg) : 0;
    size_t total = sizeof(struct proc_wire) + errlen + 1 + p->o.len + p->e.len;
    struct tr_msg *m = tr_msg_new(TR_MSG_PROC_EXIT, (uint32_t)total);
    struct proc_wire w = {
        .id = p->id,
        .tag = p->tag,
        .elapsed_us = (uv_hrtime() - p->start_ns) / 1000,
        .exit_status = p->exit_status,
        .out_len = p->o.len,
        .err_len = p->e.len,
        .error = p->spawn_error ? TR_ESYS : TR_OK,
        .term_signal = p->term_signal,
        .errmsg_len = (uint32_t)errlen,
        .timed_out = (uint8_t)p->timed_out,
        .stdout_truncated = (uint8_t)p->o.truncated,
        .stderr_truncated = (uint8_t)p->e.truncated,
    };
    unsigned char *d = m->data;
    memcpy(d, &w, sizeof(w));
    d += sizeof(w);
    memcpy(d, p->errmsg, errlen);
    d[errlen] = '\0';
    d += errlen + 1;
    if (p->o.len)
        memcpy(d, p->o.p, p->o.len);
    d += p->o.len;
    if (p->e.len)
        memcpy(d, p->e.p, p->e.len);
    tr__deliver_system(p->ps->rt, p->owner, m);
    close_all(p);
}

static void alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    static _Thread_local char scratch[65536];
    *b = uv_buf_init(scratch, sizeof(scratch));
}

static void capture(struct obuf *o, const char *data, size_t n)
{
    size_t room = o->cap - o->len;
    if (n > room) {
        o->truncated = 1;
        n = room;
    }
    if (!n)
        return;
    if (o->len + n > o->alloc) {
        size_t a = o->alloc ? o->alloc : 4096;
        while (a < o->len + n)
            a *= 2;
        if (a > o->cap)
            a = o->cap;
        o->p = tr_realloc(o->p, a);
        o->alloc = a;
    }
    memcpy(o->p + o->len, data, n);
    o->len += n;
}

static void pipe_done(struct proc *p, uv_pipe_t *pipe)
{
    uv_read_stop((uv_stream_t *)pipe);
    if (pipe == &p->out)
        p->out_open = 0;
    else
        p->err_open = 0;
    maybe_report(p);
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    struct proc *p = s->data;
    uv_pipe_t *pipe = (uv_pipe_t *)s;
    if (nread < 0) {
        pipe_done(p, pipe);
        return;
    }
    capture(pipe == &p->out ? &p->o : &p->e, b->base, (size_t)nread);
}

static void grace_cb(uv_timer_t *t)
{
    struct proc *p = t->data;
    /* Descendants still hold a pipe open after the leader exited: they are
     * members of its group (the group id cannot be reused while they live);
     * kill them rather than leave orphans, and stop waiting. */
    if (p->spawned && p->pid > 0)
        kill(-p->pid, SIGKILL);
    if (p->out_open)
        pipe_done(p, &p->out);
    if (p->err_open)
        pipe_done(p, &p->err);
}

static void timeout_cb(uv_timer_t *t)
{
    struct proc *p = t->data;
    p->timed_out = 1;
    kill_group(p, SIGKILL);
}

static void exit_cb(uv_process_t *h, int64_t exit_status, int term_signal)
{
    struct proc *p = h->data;
    p->exited = 1;
    p->exit_status = exit_status;
    p->term_signal = term_signal;
    uv_timer_stop(&p->timer);
    if (p->out_open || p->err_open)
        uv_timer_start(&p->timer, grace_cb, DRAIN_GRACE_MS, 0);
    maybe_report(p);
}

static void stdin_written_cb(uv_write_t *w, int status)
{
    struct proc *p = w->data;
    tr_free(p->stdin_copy);
    p->stdin_copy = NULL;
    /* EPIPE (the child did not read it all) is not an error of ours. */
    if (p->in_open) {
        p->in_open = 0;
        close_handle(p, (uv_handle_t *)&p->in);
    }
}

static void ps_shutdown(void *arg)
{
    struct proc_sched *ps = arg;
    ps->closing = 1;
    if (ps->slot)
        *ps->slot = NULL;
    for (struct proc *p = ps->procs; p; p = p->next) {
        if (p->spawned && !p->exited) {
            kill_group(p, SIGKILL);
            /* Once its handle is closed libuv will not reap it: do it here. */
            waitpid(p->pid, NULL, 0);
            p->exited = 1;
        }
        p->reported = 1;
        close_all(p);
    }
    ps_maybe_free(ps);
}

static struct proc_sched *ps_get(struct tr_ctx *ctx, int *rv)
{
    void **slot = tr__ext_slot(ctx, TR_EXT_PROC);
    struct proc_sched *ps = *slot;
    if (ps) {
        *rv = ps->closing ? TR_ECLOSED : 0;
        return ps->closing ? NULL : ps;
    }
    tr__sigpipe_ignore(); /* stdin of a child that exits early */
    ps = tr_calloc(1, sizeof(*ps));
    ps->rt = tr_ctx_rt(ctx);
    ps->loop = tr_ctx_loop(ctx);
    ps->sched = tr_ctx_sched(ctx);
    ps->slot = slot;
    *rv = tr_rt_on_shutdown(ctx, ps_shutdown, ps);
    if (*rv != 0) {
        tr_free(ps);
        return NULL;
    }
    *slot = ps;
    return ps;
}

int tr_proc_spawn(struct tr_ctx *ctx, const struct tr_proc_opts *opts, uint64_t *id_out)
{
    struct proc_sched *ps;
    struct proc *p;
    uv_process_options_t po;
    uv_stdio_container_t stdio[3];
    int rv;

    if (!ctx || !opts || !opts->file || !opts->argv || !opts->argv[0] || !id_out ||
        (opts->stdin_len && !opts->stdin_data) || opts->max_stdout > MAX_OUT_LIMIT ||
        opts->max_stderr > MAX_OUT_LIMIT)
        return TR_EINVAL;
    if (tr__deterministic(ctx))
        return TR_ENOTSUP;
    ps = ps_get(ctx, &rv);
    if (!ps)
        return rv;

    p = tr_calloc(1, sizeof(*p));
    p->ps = ps;
    p->id = ((uint64_t)(ps->sched + 1) << 48) | ++ps->next_id;
    p->tag = opts->tag;
    p->owner = tr_self(ctx);
    p->o.cap = opts->max_stdout ? opts->max_stdout : DEF_MAX_OUT;
    p->e.cap = opts->max_stderr ? opts->max_stderr : DEF_MAX_OUT;
    p->start_ns = uv_hrtime();
    p->next = ps->procs;
    if (ps->procs)
        ps->procs->prev = p;
    ps->procs = p;
    ps->live++;

    uv_timer_init(ps->loop, &p->timer);
    uv_pipe_init(ps->loop, &p->in, 0);
    uv_pipe_init(ps->loop, &p->out, 0);
    uv_pipe_init(ps->loop, &p->err, 0);
    p->timer.data = p->in.data = p->out.data = p->err.data = p->process.data = p;
    p->open_handles = 5;

    memset(&po, 0, sizeof(po));
    po.file = opts->file;
    po.args = (char **)opts->argv;
    po.env = (char **)opts->env;
    po.cwd = opts->cwd;
    po.exit_cb = exit_cb;
    /* setsid() in the child: it leads its own group, which kill(-pid) reaches. */
    po.flags = UV_PROCESS_DETACHED;
    if (opts->stdin_len) {
        stdio[0].flags = UV_CREATE_PIPE | UV_READABLE_PIPE;
        stdio[0].data.stream = (uv_stream_t *)&p->in;
    } else {
        stdio[0].flags = UV_IGNORE;
    }
    stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[1].data.stream = (uv_stream_t *)&p->out;
    stdio[2].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[2].data.stream = (uv_stream_t *)&p->err;
    po.stdio = stdio;
    po.stdio_count = 3;

    rv = uv_spawn(ps->loop, &p->process, &po);
    if (rv != 0) {
        /* Reported as a result, like any other outcome. */
        p->spawn_error = 1;
        p->exited = 1;
        p->exit_status = -1;
        snprintf(p->errmsg, sizeof(p->errmsg), "spawn %s: %s", opts->file, uv_strerror(rv));
        maybe_report(p);
        *id_out = p->id;
        return 0;
    }
    p->spawned = 1;
    p->pid = p->process.pid;
    p->out_open = p->err_open = 1;
    uv_read_start((uv_stream_t *)&p->out, alloc_cb, read_cb);
    uv_read_start((uv_stream_t *)&p->err, alloc_cb, read_cb);
    if (opts->stdin_len) {
        p->in_open = 1;
        p->stdin_copy = tr_memdup(opts->stdin_data, opts->stdin_len);
        uv_buf_t b = uv_buf_init(p->stdin_copy, (unsigned)opts->stdin_len);
        p->wreq.data = p;
        if (uv_write(&p->wreq, (uv_stream_t *)&p->in, &b, 1, stdin_written_cb) != 0) {
            p->in_open = 0;
            close_handle(p, (uv_handle_t *)&p->in);
        }
    }
    if (opts->timeout_ms)
        uv_timer_start(&p->timer, timeout_cb, opts->timeout_ms, 0);
    *id_out = p->id;
    return 0;
}

int tr_proc_kill(struct tr_ctx *ctx, uint64_t id, int signum)
{
    if (!ctx)
        return TR_EINVAL;
    if (tr__deterministic(ctx))
        return TR_ENOTSUP;
    struct proc_sched *ps = *tr__ext_slot(ctx, TR_EXT_PROC);
    if (!ps || ps->closing)
        return TR_ENOTFOUND;
    tr_actor_id self = tr_self(ctx);
    for (struct proc *p = ps->procs; p; p = p->next) {
        if (p->id != id || p->owner != self)
            continue;
        if (!p->spawned || p->exited)
            return TR_ENOTFOUND;
        if (kill(-p->pid, signum) != 0)
            return errno == EINVAL ? TR_EINVAL : TR_ESYS;
        return 0;
    }
    return TR_ENOTFOUND;
}

int tr_proc_result(const struct tr_msg *msg, struct tr_proc_result *out)
{
    struct proc_wire w;
    if (!msg || !out || msg->type != TR_MSG_PROC_EXIT || msg->len < sizeof(w))
        return TR_EINVAL;
    memcpy(&w, msg->data, sizeof(w));
    if ((uint64_t)sizeof(w) + w.errmsg_len + 1 + w.out_len + w.err_len != msg->len)
        return TR_ECORRUPT;
    const char *d = (const char *)msg->data + sizeof(w);
    memset(out, 0, sizeof(*out));
    out->id = w.id;
    out->tag = w.tag;
    out->error = w.error;
    out->errmsg = d;
    d += w.errmsg_len + 1;
    out->exit_status = w.exit_status;
    out->term_signal = w.term_signal;
    out->timed_out = w.timed_out;
    out->stdout_truncated = w.stdout_truncated;
    out->stderr_truncated = w.stderr_truncated;
    out->out = d;
    out->out_len = w.out_len;
    d += w.out_len;
    out->err = d;
    out->err_len = w.err_len;
    out->elapsed_us = w.elapsed_us;
    return 0;
}
