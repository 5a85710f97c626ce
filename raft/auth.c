/* Cluster key, secret files and the mutual handshake (see raft/auth.h for the
 * protocol and raft/auth_int.h for the core's invariants).
 *
 * Happy path of a handshake (connector): tr_auth_connect builds HELLO, starts
 * reading and writes it; CHALLENGE arrives (read greedily: the acceptor sends
 * nothing more until PROOF), the core answers with PROOF; CONFIRM arrives
 * (read exactly), the core checks its MAC and the acceptor's id; reading
 * stops, the timer is closed, and once every write has completed cb runs with
 * TR_OK and the stream as it was handed in. The acceptor mirrors it: HELLO ->
 * CHALLENGE, PROOF -> CONFIRM; it succeeds once CONFIRM is written.
 *
 * Failure modes: a malformed, oversized or excess byte, a bad MAC, a wrong
 * service or peer id, EOF or a read/write error, the timer, or
 * tr_auth_cancel. Each fails the handshake: reading stops, the stream and the
 * timer are closed, and cb runs once both close callbacks (and every pending
 * write callback, which uv_close cancels) have run. So cb always runs from a
 * libuv callback, never from inside the call that started or cancelled the
 * handshake, and after it nothing of the handshake is left on the loop.
 */
#include "raft/auth.h"
#include "raft/auth_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

/* ---- small helpers ---------------------------------------------------------- */

static void put64(unsigned char *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (unsigned char)(v & 0xff);
        v >>= 8;
    }
}

static uint64_t get64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

static int printable(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e)
            return 0;
    return 1;
}

static int sodium_ready(void)
{
    return sodium_init() >= 0; /* idempotent and thread-safe */
}

/* ---- the cluster key -------------------------------------------------------- */

static const unsigned char key_personal[crypto_generichash_blake2b_PERSONALBYTES] = "troupe.clusterk1";

int tr_cluster_key_derive(const void *secret, size_t len, unsigned char key[TR_CLUSTER_KEY_LEN],
                          struct tr_err *err)
{
    if (len < TR_CLUSTER_SECRET_MIN)
        return tr_err_set(err, TR_EINVAL, "cluster secret too short (%zu bytes, at least %d)", len,
                          TR_CLUSTER_SECRET_MIN);
    if (!sodium_ready())
        return tr_err_set(err, TR_ESYS, "libsodium failed to initialise");
    if (crypto_generichash_blake2b_salt_personal(key, TR_CLUSTER_KEY_LEN, secret, len, NULL, 0, NULL,
                                                 key_personal) != 0)
        return tr_err_set(err, TR_ESYS, "cluster key: BLAKE2b failed");
    return TR_OK;
}

int tr_cluster_secret_load(const char *path, unsigned char key[TR_CLUSTER_KEY_LEN], struct tr_err *err)
{
    unsigned char buf[TR_CLUSTER_SECRET_MAX + 1];
    struct stat st;
    size_t n = 0;
    int rv;

    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int code = errno == ENOENT ? TR_ENOTFOUND : errno == EACCES ? TR_EDENIED : TR_ESYS;
        return tr_err_set(err, code, "cluster secret %s: %s", path, strerror(errno));
    }
    if (fstat(fd, &st) != 0) {
        rv = tr_err_set(err, TR_ESYS, "cluster secret %s: stat: %s", path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        rv = tr_err_set(err, TR_EINVAL, "cluster secret %s: not a regular file", path);
        goto out;
    }
    if ((st.st_mode & 077) != 0) {
        rv = tr_err_set(err, TR_EDENIED,
                        "cluster secret %s is accessible by group or others (mode %04o): chmod 600 it",
                        path, (unsigned)(st.st_mode & 07777));
        goto out;
    }
    for (;;) {
        ssize_t got = read(fd, buf + n, sizeof buf - n);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            rv = tr_err_set(err, TR_ESYS, "cluster secret %s: read: %s", path, strerror(errno));
            goto out;
        }
        if (got == 0)
            break;
        n += (size_t)got;
        if (n == sizeof buf) {
            rv = tr_err_set(err, TR_EINVAL, "cluster secret %s: larger than %d bytes", path,
                            TR_CLUSTER_SECRET_MAX);
            goto out;
        }
    }
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ' || buf[n - 1] == '\t'))
        n--;
    rv = tr_cluster_key_derive(buf, n, key, err);
    if (rv != TR_OK)
        tr_err_wrap(err, "cluster secret %s", path);
out:
    sodium_memzero(buf, sizeof buf);
    close(fd);
    return rv;
}

static int write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -1;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

static int fsync_dir_of(const char *path)
{
    char dir[4096];
    const char *slash = strrchr(path, '/');
    if (slash == NULL) {
        snprintf(dir, sizeof dir, ".");
    } else if (slash == path) {
        snprintf(dir, sizeof dir, "/");
    } else {
        size_t n = (size_t)(slash - path);
        if (n >= sizeof dir)
            return -1;
        memcpy(dir, path, n);
        dir[n] = '\0';
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rv = fsync(fd);
    close(fd);
    return rv;
}

/* Move tmp to path unless path exists (then EEXIST): renameat2 with
 * RENAME_NOREPLACE, or link + unlink where the file system lacks it. */
static int rename_noreplace(const char *tmp, const char *path)
{
    if (renameat2(AT_FDCWD, tmp, AT_FDCWD, path, RENAME_NOREPLACE) == 0)
        return 0;
    if (errno != EINVAL && errno != ENOSYS)
        return -1;
    if (link(tmp, path) != 0)
        return -1;
    unlink(tmp);
    return 0;
}

int tr_cluster_secret_create(const char *path, unsigned char key[TR_CLUSTER_KEY_LEN], struct tr_err *err)
{
    unsigned char raw[32];
    char text[2 * sizeof raw + 2];
    char tmp[4096];
    int rv;

    if (!sodium_ready())
        return tr_err_set(err, TR_ESYS, "libsodium failed to initialise");
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= sizeof tmp)
        return tr_err_set(err, TR_EINVAL, "cluster secret: path too long");
    if (access(path, F_OK) == 0)
        return tr_err_set(err, TR_EEXIST, "cluster secret %s already exists", path);

    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return tr_err_set(err, TR_ESYS, "cluster secret: create %s: %s", tmp, strerror(errno));
    randombytes_buf(raw, sizeof raw);
    sodium_bin2hex(text, sizeof text, raw, sizeof raw);
    text[2 * sizeof raw] = '\n';
    if (fchmod(fd, 0600) != 0 || write_all(fd, text, 2 * sizeof raw + 1) != 0 || fsync(fd) != 0) {
        rv = tr_err_set(err, TR_ESYS, "cluster secret: write %s: %s", tmp, strerror(errno));
        close(fd);
        unlink(tmp);
        goto out;
    }
    if (close(fd) != 0) {
        rv = tr_err_set(err, TR_ESYS, "cluster secret: close %s: %s", tmp, strerror(errno));
        unlink(tmp);
        goto out;
    }
    if (rename_noreplace(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        rv = tr_err_set(err, e == EEXIST ? TR_EEXIST : TR_ESYS, "cluster secret: rename to %s: %s",
                        path, strerror(e));
        goto out;
    }
    if (fsync_dir_of(path) != 0) {
        rv = tr_err_set(err, TR_ESYS, "cluster secret: fsync the directory of %s: %s", path,
                        strerror(errno));
        goto out;
    }
    rv = TR_OK;
    if (key != NULL)
        rv = tr_cluster_key_derive(text, 2 * sizeof raw, key, err);
out:
    sodium_memzero(raw, sizeof raw);
    sodium_memzero(text, sizeof text);
    return rv;
}

/* ---- the protocol core ------------------------------------------------------ */

static const char label_connector[] = "troupe auth v1: connector proof";
static const char label_acceptor[] = "troupe auth v1: acceptor proof";

static const char *service_name(int service)
{
    switch (service) {
    case TR_AUTH_SERVICE_RAFT: return "raft";
    case TR_AUTH_SERVICE_PEER: return "peer";
    default: return "unknown";
    }
}

static int core_fail(struct tr_auth_core *c, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int core_fail(struct tr_auth_core *c, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->errmsg, sizeof c->errmsg, fmt, ap);
    va_end(ap);
    c->state = TR_AUTH_S_FAILED;
    c->out_len = 0;
    return code;
}

/* The MAC over the transcript. The connector's id and address are the
 * connector's (self on the connector, peer on the acceptor); with_sid adds
 * the acceptor's id for CONFIRM. */
static void transcript_mac(const struct tr_auth_core *c, const char *label, uint64_t cid,
                           const char *caddr, size_t caddr_len, int with_sid, uint64_t sid,
                           unsigned char mac[TR_AUTH_MAC_LEN])
{
    crypto_auth_hmacsha512256_state st;
    unsigned char head[8], num[8];

    crypto_auth_hmacsha512256_init(&st, c->key, TR_CLUSTER_KEY_LEN);
    crypto_auth_hmacsha512256_update(&st, (const unsigned char *)label, strlen(label) + 1);
    memcpy(head, TR_AUTH_MAGIC, 4);
    head[4] = TR_AUTH_VERSION;
    head[5] = (unsigned char)c->service;
    head[6] = head[7] = 0;
    crypto_auth_hmacsha512256_update(&st, head, sizeof head);
    crypto_auth_hmacsha512256_update(&st, c->nonce_c, TR_AUTH_NONCE_LEN);
    crypto_auth_hmacsha512256_update(&st, c->nonce_s, TR_AUTH_NONCE_LEN);
    put64(num, cid);
    crypto_auth_hmacsha512256_update(&st, num, 8);
    num[0] = (unsigned char)(caddr_len >> 8);
    num[1] = (unsigned char)caddr_len;
    crypto_auth_hmacsha512256_update(&st, num, 2);
    crypto_auth_hmacsha512256_update(&st, (const unsigned char *)caddr, caddr_len);
    if (with_sid) {
        put64(num, sid);
        crypto_auth_hmacsha512256_update(&st, num, 8);
    }
    crypto_auth_hmacsha512256_final(&st, mac);
    sodium_memzero(&st, sizeof st);
}

static void put_hello(struct tr_auth_core *c, const unsigned char nonce[TR_AUTH_NONCE_LEN])
{
    memcpy(c->out, TR_AUTH_MAGIC, 4);
    c->out[4] = TR_AUTH_VERSION;
    c->out[5] = (unsigned char)c->service;
    c->out[6] = c->out[7] = 0;
    memcpy(c->out + 8, nonce, TR_AUTH_NONCE_LEN);
    c->out_len = TR_AUTH_HELLO_LEN;
}

int tr_auth_core_init(struct tr_auth_core *c, int role, const struct tr_auth_self *self,
                      const unsigned char nonce[TR_AUTH_NONCE_LEN])
{
    memset(c, 0, sizeof *c);
    c->role = role;
    if (role != TR_AUTH_CONNECTOR && role != TR_AUTH_ACCEPTOR)
        return core_fail(c, TR_EINVAL, "bad role");
    if (self == NULL || self->key == NULL)
        return core_fail(c, TR_EINVAL, "no cluster key");
    if (self->id == 0)
        return core_fail(c, TR_EINVAL, "node id 0");
    if (self->service != TR_AUTH_SERVICE_RAFT && self->service != TR_AUTH_SERVICE_PEER)
        return core_fail(c, TR_EINVAL, "bad service %d", self->service);
    c->service = self->service;
    c->self_id = self->id;
    c->expect_id = self->expect_id;
    memcpy(c->key, self->key, TR_CLUSTER_KEY_LEN);
    if (role == TR_AUTH_CONNECTOR) {
        size_t n = self->address != NULL ? strlen(self->address) : 0;
        if (n == 0 || n > TR_AUTH_ADDRESS_MAX || !printable(self->address, n))
            return core_fail(c, TR_EINVAL, "bad advertised address (1..%d printable bytes)",
                             TR_AUTH_ADDRESS_MAX);
        memcpy(c->self_addr, self->address, n + 1);
        c->self_addr_len = n;
        memcpy(c->nonce_c, nonce, TR_AUTH_NONCE_LEN);
        put_hello(c, c->nonce_c);
        c->state = TR_AUTH_S_CHALLENGE;
    } else {
        memcpy(c->nonce_s, nonce, TR_AUTH_NONCE_LEN);
        c->state = TR_AUTH_S_HELLO;
    }
    return TR_OK;
}

size_t tr_auth_core_want(const struct tr_auth_core *c)
{
    switch (c->state) {
    case TR_AUTH_S_HELLO:
    case TR_AUTH_S_PROOF:
    case TR_AUTH_S_CHALLENGE:
        return sizeof c->in - c->in_len;
    case TR_AUTH_S_CONFIRM:
        return c->in_len < TR_AUTH_CONFIRM_LEN ? TR_AUTH_CONFIRM_LEN - c->in_len : 0;
    default:
        return 0;
    }
}

/* HELLO or CHALLENGE: the same layout. Checks every byte as soon as it is
 * there, so garbage fails at once rather than at the timeout. */
static int step_hello(struct tr_auth_core *c, const char *what)
{
    size_t n = c->in_len;
    if (memcmp(c->in, TR_AUTH_MAGIC, n < 4 ? n : 4) != 0)
        return core_fail(c, TR_EPROTO, "bad magic in %s (not a Troupe node?)", what);
    if (n >= 5 && c->in[4] != TR_AUTH_VERSION)
        return core_fail(c, TR_EPROTO, "unsupported handshake version %u in %s", c->in[4], what);
    if (n >= 6 && c->in[5] != c->service)
        return core_fail(c, TR_EDENIED, "wrong service: a %s connection, a %s listener",
                         service_name(c->role == TR_AUTH_ACCEPTOR ? c->in[5] : c->service),
                         service_name(c->role == TR_AUTH_ACCEPTOR ? c->service : c->in[5]));
    if (n >= 8 && (c->in[6] != 0 || c->in[7] != 0))
        return core_fail(c, TR_EPROTO, "bad reserved bytes in %s", what);
    if (n < TR_AUTH_HELLO_LEN)
        return TR_AUTH_MORE;
    if (n > TR_AUTH_HELLO_LEN)
        return core_fail(c, TR_EPROTO, "protocol violation: extra bytes after %s", what);
    return TR_OK;
}

static int step_acceptor_hello(struct tr_auth_core *c)
{
    int rv = step_hello(c, "HELLO");
    if (rv != TR_OK)
        return rv;
    memcpy(c->nonce_c, c->in + 8, TR_AUTH_NONCE_LEN);
    put_hello(c, c->nonce_s);
    c->in_len = 0;
    c->state = TR_AUTH_S_PROOF;
    return TR_AUTH_SEND;
}

static int step_connector_challenge(struct tr_auth_core *c)
{
    int rv = step_hello(c, "CHALLENGE");
    if (rv != TR_OK)
        return rv;
    memcpy(c->nonce_s, c->in + 8, TR_AUTH_NONCE_LEN);
    if (sodium_memcmp(c->nonce_s, c->nonce_c, TR_AUTH_NONCE_LEN) == 0)
        return core_fail(c, TR_EDENIED, "reflected nonce in CHALLENGE");
    unsigned char *p = c->out;
    put64(p, c->self_id);
    p[8] = (unsigned char)(c->self_addr_len >> 8);
    p[9] = (unsigned char)c->self_addr_len;
    memcpy(p + TR_AUTH_PROOF_HEAD, c->self_addr, c->self_addr_len);
    transcript_mac(c, label_connector, c->self_id, c->self_addr, c->self_addr_len, 0, 0,
                   p + TR_AUTH_PROOF_HEAD + c->self_addr_len);
    c->out_len = TR_AUTH_PROOF_HEAD + c->self_addr_len + TR_AUTH_MAC_LEN;
    c->in_len = 0;
    c->state = TR_AUTH_S_CONFIRM;
    return TR_AUTH_SEND;
}

static int step_acceptor_proof(struct tr_auth_core *c)
{
    unsigned char mac[TR_AUTH_MAC_LEN];
    if (c->in_len < TR_AUTH_PROOF_HEAD)
        return TR_AUTH_MORE;
    uint64_t id = get64(c->in);
    size_t alen = ((size_t)c->in[8] << 8) | c->in[9];
    if (alen == 0)
        return core_fail(c, TR_EPROTO, "empty address in PROOF");
    if (alen > TR_AUTH_ADDRESS_MAX)
        return core_fail(c, TR_EPROTO, "address too long in PROOF (%zu bytes, at most %d)", alen,
                         TR_AUTH_ADDRESS_MAX);
    size_t total = TR_AUTH_PROOF_HEAD + alen + TR_AUTH_MAC_LEN;
    if (c->in_len < total)
        return TR_AUTH_MORE;
    if (c->in_len > total)
        return core_fail(c, TR_EPROTO, "protocol violation: extra bytes after PROOF");
    const char *addr = (const char *)c->in + TR_AUTH_PROOF_HEAD;
    transcript_mac(c, label_connector, id, addr, alen, 0, 0, mac);
    int ok = crypto_verify_32(mac, c->in + TR_AUTH_PROOF_HEAD + alen) == 0;
    sodium_memzero(mac, sizeof mac);
    if (!ok)
        return core_fail(c, TR_EDENIED, "bad MAC: wrong cluster secret?");
    if (id == 0)
        return core_fail(c, TR_EPROTO, "node id 0 in PROOF");
    if (!printable(addr, alen))
        return core_fail(c, TR_EPROTO, "unprintable address in PROOF");
    c->peer_id = id;
    memcpy(c->peer_addr, addr, alen);
    c->peer_addr[alen] = '\0';
    put64(c->out, c->self_id);
    transcript_mac(c, label_acceptor, id, addr, alen, 1, c->self_id, c->out + 8);
    c->out_len = TR_AUTH_CONFIRM_LEN;
    c->in_len = 0;
    c->state = TR_AUTH_S_DONE;
    return TR_AUTH_DONE;
}

static int step_connector_confirm(struct tr_auth_core *c)
{
    unsigned char mac[TR_AUTH_MAC_LEN];
    if (c->in_len < TR_AUTH_CONFIRM_LEN)
        return TR_AUTH_MORE;
    if (c->in_len > TR_AUTH_CONFIRM_LEN)
        return core_fail(c, TR_EPROTO, "protocol violation: extra bytes after CONFIRM");
    uint64_t sid = get64(c->in);
    transcript_mac(c, label_acceptor, c->self_id, c->self_addr, c->self_addr_len, 1, sid, mac);
    int ok = crypto_verify_32(mac, c->in + 8) == 0;
    sodium_memzero(mac, sizeof mac);
    if (!ok)
        return core_fail(c, TR_EDENIED, "bad MAC from the acceptor: wrong cluster secret?");
    if (sid == 0)
        return core_fail(c, TR_EPROTO, "node id 0 in CONFIRM");
    if (c->expect_id != 0 && sid != c->expect_id)
        return core_fail(c, TR_EDENIED, "peer id mismatch: expected node %llu, reached node %llu",
                         (unsigned long long)c->expect_id, (unsigned long long)sid);
    c->peer_id = sid;
    c->peer_addr[0] = '\0';
    c->out_len = 0;
    c->in_len = 0;
    c->state = TR_AUTH_S_DONE;
    return TR_AUTH_DONE;
}

int tr_auth_core_step(struct tr_auth_core *c)
{
    c->out_len = 0;
    switch (c->state) {
    case TR_AUTH_S_HELLO: return step_acceptor_hello(c);
    case TR_AUTH_S_PROOF: return step_acceptor_proof(c);
    case TR_AUTH_S_CHALLENGE: return step_connector_challenge(c);
    case TR_AUTH_S_CONFIRM: return step_connector_confirm(c);
    default: return core_fail(c, TR_EPROTO, "handshake already finished");
    }
}

void tr_auth_core_wipe(struct tr_auth_core *c)
{
    sodium_memzero(c->key, sizeof c->key);
    sodium_memzero(c->nonce_c, sizeof c->nonce_c);
    sodium_memzero(c->nonce_s, sizeof c->nonce_s);
}

/* ---- the handshake on a libuv stream ----------------------------------------- */

enum phase { RUNNING, SUCCEEDING, FAILING };

struct tr_auth {
    struct tr_auth_core core;
    uv_stream_t *stream;
    void *saved_data;            /* the caller's stream->data */
    uv_timer_t timer;
    struct {
        uv_write_t req;
        unsigned char buf[TR_AUTH_PROOF_MAX];
        int busy;
    } w[2];                      /* at most two messages each way */
    int writes;                  /* write callbacks pending */
    int closes;                  /* close callbacks pending */
    enum phase phase;
    int status;
    char errmsg[160];
    tr_auth_cb cb;
    void *arg;
};

static void maybe_finish(struct tr_auth *a)
{
    if (a->phase == RUNNING || a->writes > 0 || a->closes > 0)
        return;
    a->stream->data = a->saved_data;
    if (a->phase == SUCCEEDING)
        a->cb(a->arg, TR_OK, a->core.peer_id, a->core.peer_addr, "");
    else
        a->cb(a->arg, a->status, 0, "", a->errmsg);
    tr_auth_core_wipe(&a->core);
    tr_free(a);
}

static void closed_cb(uv_handle_t *h)
{
    struct tr_auth *a = h->data;
    a->closes--;
    maybe_finish(a);
}

static void fail(struct tr_auth *a, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fail(struct tr_auth *a, int status, const char *fmt, ...)
{
    if (a->phase == FAILING)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(a->errmsg, sizeof a->errmsg, fmt, ap);
    va_end(ap);
    a->status = status;
    if (a->phase == RUNNING) {
        uv_read_stop(a->stream);
        uv_timer_stop(&a->timer);
        a->closes++;
        uv_close((uv_handle_t *)&a->timer, closed_cb);
    }
    /* SUCCEEDING: reading stopped and the timer closing already. */
    a->phase = FAILING;
    a->closes++;
    uv_close((uv_handle_t *)a->stream, closed_cb);
}

static void succeed(struct tr_auth *a)
{
    uv_read_stop(a->stream);
    uv_timer_stop(&a->timer);
    a->phase = SUCCEEDING;
    a->closes++;
    uv_close((uv_handle_t *)&a->timer, closed_cb);
}

static void write_cb(uv_write_t *req, int status)
{
    struct tr_auth *a = req->data;
    for (int i = 0; i < 2; i++)
        if (&a->w[i].req == req)
            a->w[i].busy = 0;
    a->writes--;
    if (status < 0)
        fail(a, TR_EIO, "write: %s", uv_strerror(status));
    maybe_finish(a);
}

/* Send the core's out[]. */
static int send_out(struct tr_auth *a)
{
    int i = a->w[0].busy ? 1 : 0;
    if (a->w[i].busy)
        return UV_EBUSY; /* cannot happen: two messages per side */
    memcpy(a->w[i].buf, a->core.out, a->core.out_len);
    uv_buf_t b = uv_buf_init((char *)a->w[i].buf, (unsigned)a->core.out_len);
    a->w[i].req.data = a;
    int rv = uv_write(&a->w[i].req, a->stream, &b, 1, write_cb);
    if (rv == 0) {
        a->w[i].busy = 1;
        a->writes++;
    }
    return rv;
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct tr_auth *a = h->data;
    (void)suggested;
    buf->base = (char *)a->core.in + a->core.in_len;
    buf->len = tr_auth_core_want(&a->core);
}

/* The acceptor has the whole PROOF. An honest connector sends nothing more
 * until it reads CONFIRM: a byte already waiting in the socket is a
 * violation. (Peeking does not consume it.) */
static int bytes_waiting(uv_stream_t *s)
{
    uv_os_fd_t fd;
    char b;
    if (uv_fileno((uv_handle_t *)s, &fd) != 0)
        return 0;
    ssize_t n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    return n > 0;
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct tr_auth *a = s->data;
    int rv;
    (void)buf;
    if (a->phase != RUNNING || nread == 0)
        return;
    if (nread < 0) {
        if (nread == UV_EOF)
            fail(a, TR_EIO, "connection closed by the peer during the handshake");
        else
            fail(a, TR_EIO, "read: %s", uv_strerror((int)nread));
        return;
    }
    a->core.in_len += (size_t)nread;
    rv = tr_auth_core_step(&a->core);
    switch (rv) {
    case TR_AUTH_MORE:
        return;
    case TR_AUTH_SEND:
        rv = send_out(a);
        if (rv != 0)
            fail(a, TR_EIO, "write: %s", uv_strerror(rv));
        return;
    case TR_AUTH_DONE:
        if (a->core.role == TR_AUTH_ACCEPTOR && bytes_waiting(s)) {
            fail(a, TR_EPROTO, "protocol violation: extra bytes after PROOF");
            return;
        }
        if (a->core.out_len > 0) {
            rv = send_out(a);
            if (rv != 0) {
                fail(a, TR_EIO, "write: %s", uv_strerror(rv));
                return;
            }
        }
        succeed(a);
        maybe_finish(a);
        return;
    default:
        fail(a, rv, "%s", a->core.errmsg);
        return;
    }
}

static void timer_cb(uv_timer_t *t)
{
    struct tr_auth *a = t->data;
    fail(a, TR_ETIMEDOUT, "timeout: no complete handshake within %llu ms",
         (unsigned long long)uv_timer_get_repeat(t));
}

static int start(int role, uv_stream_t *s, const struct tr_auth_self *self, tr_auth_cb cb, void *arg,
                 struct tr_auth **out)
{
    unsigned char nonce[TR_AUTH_NONCE_LEN];
    int rv;

    if (s == NULL || cb == NULL || !sodium_ready())
        return TR_EINVAL;
    struct tr_auth *a = tr_calloc(1, sizeof *a);
    randombytes_buf(nonce, sizeof nonce);
    rv = tr_auth_core_init(&a->core, role, self, nonce);
    sodium_memzero(nonce, sizeof nonce);
    if (rv != TR_OK) {
        tr_log(TR_LOG_WARN, "auth: %s", a->core.errmsg);
        goto err;
    }
    a->stream = s;
    a->cb = cb;
    a->arg = arg;
    a->phase = RUNNING;
    a->saved_data = s->data;
    s->data = a;
    if (uv_read_start(s, alloc_cb, read_cb) != 0) {
        rv = TR_EIO;
        goto err_restore;
    }
    if (role == TR_AUTH_CONNECTOR && send_out(a) != 0) {
        uv_read_stop(s);
        rv = TR_EIO;
        goto err_restore;
    }
    uv_timer_init(s->loop, &a->timer);
    a->timer.data = a;
    unsigned ms = self->timeout_ms ? self->timeout_ms : TR_AUTH_TIMEOUT_MS;
    uv_timer_start(&a->timer, timer_cb, ms, ms); /* repeat: only to report ms */
    if (out != NULL)
        *out = a;
    return TR_OK;

err_restore:
    s->data = a->saved_data;
err:
    tr_auth_core_wipe(&a->core);
    tr_free(a);
    return rv;
}

int tr_auth_connect(uv_stream_t *s, const struct tr_auth_self *self, tr_auth_cb cb, void *arg,
                    struct tr_auth **out)
{
    return start(TR_AUTH_CONNECTOR, s, self, cb, arg, out);
}

int tr_auth_accept(uv_stream_t *s, const struct tr_auth_self *self, tr_auth_cb cb, void *arg,
                   struct tr_auth **out)
{
    return start(TR_AUTH_ACCEPTOR, s, self, cb, arg, out);
}

void tr_auth_cancel(struct tr_auth *a)
{
    fail(a, TR_ECANCELED, "canceled");
}
