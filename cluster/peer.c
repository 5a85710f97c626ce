/* The peer channel's connections: TCP, the cluster-key handshake, then
 * length-prefixed troupe.peer.Message frames (see cluster.h).
 *
 * Lifecycle of a struct pconn:
 *   CONNECTING (outbound: uv_tcp_connect) -> AUTH (tr_auth_connect/accept)
 *   -> OPEN (frames both ways) -> CLOSING (uv_close) -> freed in its close
 *   callback, which tells the cluster (cl_conn_closed) first.
 * A failed handshake closes the stream itself (raft/auth.h): the pconn is
 * then freed from the handshake's callback.
 *
 * Bounds: a frame is at most PEER_FRAME_MAX bytes (an AppendBatch entry is at
 * most 4 MiB plus one 8 MiB append); bytes queued for writing on one
 * connection at most PEER_WQUEUE_MAX — beyond that the peer is not reading
 * and the connection is dropped (its forwarded writes fail and are retried
 * by their requesters).
 */
#include "cluster/cluster_int.h"

#include <stdio.h>
#include <string.h>

#include "schemas/peer_generated.h"

#define PEER_FRAME_MAX (32u << 20)
#define PEER_WQUEUE_MAX (64u << 20)

static void pc_closed(uv_handle_t *h)
{
    struct pconn *pc = h->data;
    cl_conn_closed(pc->c, pc);
    tr_free(pc->rbuf);
    tr_free(pc);
}

void pc_close(struct pconn *pc, const char *why)
{
    if (pc->st == PC_CLOSING)
        return;
    if (why != NULL)
        tr_log(pc->st == PC_OPEN ? TR_LOG_INFO : TR_LOG_DEBUG, "cluster: peer %s (node %llu): closing: %s",
               pc->addr, (unsigned long long)pc->peer_id, why);
    if (pc->st == PC_AUTH) {
        pc->st = PC_CLOSING;
        tr_auth_cancel(pc->auth); /* its callback frees pc */
        return;
    }
    pc->st = PC_CLOSING;
    /* The connection to the leader goes with a reset: the writes sent on it
     * are failed as of now (outcome unknown), and a plain close would let
     * the kernel go on sending what it still holds of them, to land later
     * (after a partition heals, say) behind the back of the state service,
     * which has counted them out. */
    if (pc == pc->c->lead && uv_tcp_close_reset(&pc->tcp, pc_closed) == 0)
        return;
    uv_close((uv_handle_t *)&pc->tcp, pc_closed);
}

/* ---- reading ----------------------------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct pconn *pc = h->data;
    if (pc->rcap - pc->rlen < 65536) {
        size_t cap = pc->rcap ? pc->rcap * 2 : 131072;
        while (cap - pc->rlen < 65536)
            cap *= 2;
        pc->rbuf = tr_realloc(pc->rbuf, cap);
        pc->rcap = cap;
    }
    *buf = uv_buf_init((char *)pc->rbuf + pc->rlen, (unsigned)(pc->rcap - pc->rlen));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct pconn *pc = s->data;
    if (n < 0) {
        pc->gone = n == UV_EOF || n == UV_ECONNRESET;
        pc_close(pc, n == UV_EOF ? "closed by peer" : uv_strerror((int)n));
        return;
    }
    pc->rlen += (size_t)n;
    size_t off = 0;
    while (pc->st == PC_OPEN && pc->rlen - off >= 4) {
        const uint8_t *p = pc->rbuf + off;
        uint32_t len = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
        if (len > PEER_FRAME_MAX || len < 8) {
            pc_close(pc, "bad frame length");
            return;
        }
        if (pc->rlen - off - 4 < len)
            break;
        struct tr_fb_error ferr;
        const struct troupe_peer_Message *m =
            troupe_peer_Message_verify_as_root_opts(p + 4, len, "TRN1", &tr_fb_default_limits, &ferr);
        if (m == NULL) {
            char why[160];
            snprintf(why, sizeof why, "bad message: %s at %u", tr_fb_strerror(ferr.code), (unsigned)ferr.offset);
            pc_close(pc, why);
            return;
        }
        off += 4 + (size_t)len;
        cl_dispatch(pc->c, pc, m);
    }
    if (off > 0 && pc->st != PC_CLOSING) {
        memmove(pc->rbuf, pc->rbuf + off, pc->rlen - off);
        pc->rlen -= off;
    }
    /* Shrink a big buffer once it has drained. */
    if (pc->rlen == 0 && pc->rcap > (1u << 20)) {
        tr_free(pc->rbuf);
        pc->rbuf = NULL;
        pc->rcap = 0;
    }
}

/* ---- writing ----------------------------------------------------------------------- */

struct wreq {
    uv_write_t w;
    struct pconn *pc;
    size_t len;
    uint8_t data[];
};

static void on_written(uv_write_t *w, int status)
{
    struct wreq *r = w->data;
    r->pc->wqueued -= r->len;
    if (status < 0 && status != UV_ECANCELED) {
        r->pc->gone = status == UV_EPIPE || status == UV_ECONNRESET;
        pc_close(r->pc, uv_strerror(status));
    }
    tr_free(r);
}

int pc_send(struct pconn *pc, const uint8_t *msg, size_t len)
{
    if (pc->st != PC_OPEN)
        return TR_ECLOSED;
    if (len > PEER_FRAME_MAX)
        return TR_ETOOBIG;
    if (pc->wqueued + len + 4 > PEER_WQUEUE_MAX) {
        pc_close(pc, "peer does not read: send queue full");
        return TR_ECLOSED;
    }
    struct wreq *r = tr_malloc(sizeof *r + 4 + len);
    r->pc = pc;
    r->len = 4 + len;
    r->data[0] = (uint8_t)len;
    r->data[1] = (uint8_t)(len >> 8);
    r->data[2] = (uint8_t)(len >> 16);
    r->data[3] = (uint8_t)(len >> 24);
    memcpy(r->data + 4, msg, len);
    r->w.data = r;
    uv_buf_t b = uv_buf_init((char *)r->data, (unsigned)r->len);
    int rv = uv_write(&r->w, (uv_stream_t *)&pc->tcp, &b, 1, on_written);
    if (rv != 0) {
        tr_free(r);
        pc_close(pc, uv_strerror(rv));
        return TR_EIO;
    }
    pc->wqueued += r->len;
    return TR_OK;
}

/* ---- the handshake ----------------------------------------------------------------- */

static void on_auth(void *arg, int status, uint64_t peer_id, const char *peer_address, const char *msg)
{
    struct pconn *pc = arg;
    pc->auth = NULL;
    if (status != TR_OK) {
        /* The stream is closed already. */
        if (status != TR_ECANCELED)
            cl_log_refused(pc->c, pc, msg);
        pc->gone = status == TR_EIO; /* the peer closed or reset it mid-handshake */
        pc->st = PC_CLOSING;
        cl_conn_closed(pc->c, pc);
        tr_free(pc->rbuf);
        tr_free(pc);
        return;
    }
    pc->peer_id = peer_id;
    pc->tcp.data = pc;
    if (pc->st == PC_CLOSING) { /* closed while the handshake finished */
        uv_close((uv_handle_t *)&pc->tcp, pc_closed);
        return;
    }
    pc->st = PC_OPEN;
    int rv = uv_read_start((uv_stream_t *)&pc->tcp, on_alloc, on_read);
    if (rv != 0) {
        pc_close(pc, uv_strerror(rv));
        return;
    }
    cl_conn_open(pc->c, pc);
}

static int start_auth(struct pconn *pc)
{
    struct tr_auth_self self = {
        .key = pc->c->key, .id = pc->c->node_id, .address = pc->c->peer_address,
        .service = TR_AUTH_SERVICE_PEER, .expect_id = pc->expect_id,
    };
    pc->st = PC_AUTH;
    int rv = pc->outbound ? tr_auth_connect((uv_stream_t *)&pc->tcp, &self, on_auth, pc, &pc->auth)
                          : tr_auth_accept((uv_stream_t *)&pc->tcp, &self, on_auth, pc, &pc->auth);
    if (rv != TR_OK) {
        pc->st = PC_OPEN; /* so that pc_close closes the handle itself */
        pc_close(pc, "handshake did not start");
    }
    return rv;
}

/* ---- connecting and accepting ------------------------------------------------------ */

static void on_connect(uv_connect_t *req, int status)
{
    struct pconn *pc = req->data;
    if (pc->st == PC_CLOSING)
        return; /* uv_close is under way */
    if (status < 0) {
        pc->refused = status == UV_ECONNREFUSED;
        pc_close(pc, uv_strerror(status));
        return;
    }
    start_auth(pc);
}

struct pconn *pc_connect(struct tr_cluster *c, const char *addr, uint64_t expect_id)
{
    char host[64];
    int port;
    struct sockaddr_storage sa;
    if (cl_split_addr(addr, host, sizeof host, &port) != 0 || cl_resolve(host, port, &sa) != 0) {
        tr_log(TR_LOG_WARN, "cluster: bad peer address '%s'", addr);
        return NULL;
    }
    struct pconn *pc = tr_calloc(1, sizeof *pc);
    pc->c = c;
    pc->outbound = 1;
    pc->expect_id = expect_id;
    snprintf(pc->addr, sizeof pc->addr, "%s", addr);
    pc->gen = ++c->next_gen;
    uv_tcp_init(c->loop, &pc->tcp);
    pc->tcp.data = pc;
    pc->st = PC_CONNECTING;
    cl_conn_link(c, pc);
    pc->creq.data = pc;
    int rv = uv_tcp_connect(&pc->creq, &pc->tcp, (const struct sockaddr *)&sa, on_connect);
    if (rv != 0) {
        pc->st = PC_OPEN;
        pc_close(pc, uv_strerror(rv));
        return NULL;
    }
    uv_tcp_nodelay(&pc->tcp, 1);
    return pc;
}

void pc_on_connection(uv_stream_t *server, int status)
{
    struct tr_cluster *c = server->data;
    if (status < 0) {
        tr_log(TR_LOG_WARN, "cluster: accept: %s", uv_strerror(status));
        return;
    }
    struct pconn *pc = tr_calloc(1, sizeof *pc);
    pc->c = c;
    pc->gen = ++c->next_gen;
    uv_tcp_init(c->loop, &pc->tcp);
    pc->tcp.data = pc;
    pc->st = PC_OPEN;
    cl_conn_link(c, pc);
    if (uv_accept(server, (uv_stream_t *)&pc->tcp) != 0) {
        pc_close(pc, "accept failed");
        return;
    }
    uv_tcp_nodelay(&pc->tcp, 1);
    struct sockaddr_storage sa;
    int salen = sizeof sa;
    if (uv_tcp_getpeername(&pc->tcp, (struct sockaddr *)&sa, &salen) == 0 && sa.ss_family == AF_INET) {
        char ip[32];
        uv_ip4_name((const struct sockaddr_in *)&sa, ip, sizeof ip);
        snprintf(pc->addr, sizeof pc->addr, "%s:%d", ip, ntohs(((struct sockaddr_in *)&sa)->sin_port));
    } else {
        snprintf(pc->addr, sizeof pc->addr, "(inbound)");
    }
    start_auth(pc);
}
