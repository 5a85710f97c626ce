/* raft/auth.h: nodes authenticate each other with a cluster secret.
 *
 * Three parts, all usable from raft/, cluster/ and node/:
 *
 * 1. The cluster key. Every node of a cluster holds the same secret file; the
 *    32-byte cluster key is derived from its contents (BLAKE2b-256,
 *    personalised). The file is text: the secret is its bytes with trailing
 *    whitespace removed, at least TR_CLUSTER_SECRET_MIN bytes.
 *    tr_cluster_secret_create writes 32 random bytes as 64 lowercase hex digits
 *    and a newline, mode 0600, atomically (temporary file, fsync, rename that
 *    never replaces an existing file, fsync of the directory). An operator may
 *    also write the file by hand (any text; `head -c 32 /dev/urandom | xxd -p
 *    -c 64`); a file that group or others may access is refused.
 *
 * 2. A mutual challenge-response handshake over a connected libuv stream,
 *    run by both ends right after TCP connect/accept, before any other byte:
 *
 *      connector -> acceptor  HELLO     "TRAU" ver service 0 0  nonce_c[32]
 *      acceptor  -> connector CHALLENGE "TRAU" ver service 0 0  nonce_s[32]
 *      connector -> acceptor  PROOF     id[8] addr_len[2] addr  mac_c[32]
 *      acceptor  -> connector CONFIRM   id[8]                   mac_s[32]
 *
 *    (integers big-endian.) mac_c and mac_s are HMAC-SHA-512-256 under the
 *    cluster key over a direction label and the whole transcript: magic,
 *    version, service, both nonces, the connector's id and address (and, for
 *    mac_s, the acceptor's id). Both nonces are fresh random bytes, so a
 *    recorded handshake cannot be replayed in either direction, and the labels
 *    keep one side's proof from serving as the other's. MACs are compared in
 *    constant time.
 *
 *    Lockstep: each side sends a message only after reading the other's
 *    previous one, and the connector sends nothing after PROOF until it has
 *    read CONFIRM. So the acceptor may read greedily: a byte beyond the message
 *    it waits for is a protocol violation and fails the handshake. The
 *    connector reads CONFIRM with exactly sized reads, so no byte the acceptor
 *    sends after the handshake is consumed by it. On success the stream is
 *    handed back with reading stopped and nothing buffered.
 *
 *    What it gives: both ends know the other holds the cluster key and which
 *    node id it claims. What it does not: the bytes after the handshake are
 *    neither encrypted nor integrity-protected (an active attacker on the path
 *    could take over an authenticated TCP connection); run the cluster on a
 *    trusted network or under a tunnel.
 *
 * 3. An authenticated raft transport: tr_auth_transport_init fills a
 *    struct raft_uv_transport (raft/uv.h) that does what raft_uv_tcp does
 *    (TCP listen/connect on "host:port" addresses) with the handshake above in
 *    place of raft_uv_tcp's plain preamble. Connections that fail it are
 *    closed, logged (rate-limited) and never reach raft.
 *
 * Everything here runs on the stream's (or transport's) loop thread.
 */
#ifndef TR_RAFT_AUTH_H
#define TR_RAFT_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "runtime/runtime.h"

#define TR_CLUSTER_KEY_LEN 32
#define TR_CLUSTER_SECRET_MIN 16   /* bytes of secret text, at least */
#define TR_CLUSTER_SECRET_MAX 4096 /* bytes of secret file, at most */

/* ---- the cluster key -------------------------------------------------------- */

/* key = BLAKE2b-256(secret[0..len)) personalised for Troupe's cluster key.
 * TR_EINVAL (err says why) when len < TR_CLUSTER_SECRET_MIN. */
int tr_cluster_key_derive(const void *secret, size_t len, unsigned char key[TR_CLUSTER_KEY_LEN],
                          struct tr_err *err);

/* Read the secret file at path and derive the key. Errors: TR_ENOTFOUND (no
 * such file), TR_EDENIED (group/other may access it, or unreadable),
 * TR_EINVAL (not a regular file, too short, too long), TR_ESYS. */
int tr_cluster_secret_load(const char *path, unsigned char key[TR_CLUSTER_KEY_LEN],
                           struct tr_err *err);

/* Create a new secret file at path (see the top of this file) and derive its
 * key into key (NULL: not wanted). TR_EEXIST if path exists: an existing
 * secret is never replaced. */
int tr_cluster_secret_create(const char *path, unsigned char key[TR_CLUSTER_KEY_LEN],
                             struct tr_err *err);

/* ---- the handshake ---------------------------------------------------------- */

#define TR_AUTH_ADDRESS_MAX 255      /* bytes of an advertised address */
#define TR_AUTH_TIMEOUT_MS 5000      /* default handshake timeout */

/* What the connection is for. Both ends must agree: a raft connection is
 * refused by a peer-channel listener and the other way round. */
enum tr_auth_service {
    TR_AUTH_SERVICE_RAFT = 1,
    TR_AUTH_SERVICE_PEER = 2,
};

/* This end of a handshake. Everything is copied by tr_auth_connect/accept. */
struct tr_auth_self {
    const unsigned char *key;   /* TR_CLUSTER_KEY_LEN bytes */
    uint64_t id;                /* this node's id, > 0 */
    const char *address;        /* connector: the address it advertises (1..255
                                   printable bytes); acceptor: unused */
    int service;                /* enum tr_auth_service */
    uint64_t expect_id;         /* connector: the acceptor must have this id
                                   (0 = any); acceptor: unused */
    unsigned timeout_ms;        /* whole handshake; 0 = TR_AUTH_TIMEOUT_MS */
};

struct tr_auth; /* one handshake in progress */

/* Called exactly once per handshake started, on the stream's loop, never from
 * inside tr_auth_connect/accept/cancel.
 *
 * status TR_OK: peer_id is the other end's node id; peer_address its
 * advertised address (acceptor side; "" on the connector side). The stream is
 * open, reading stopped, nothing buffered, stream->data restored; the caller
 * owns it again.
 *
 * Otherwise the handshake failed and THE STREAM HAS BEEN CLOSED (uv_close has
 * completed): the caller only releases its memory. msg says why ("bad MAC:
 * wrong cluster secret?", "timeout", "bad magic", ...). Codes: TR_EDENIED (bad
 * MAC, wrong service, unexpected peer id), TR_EPROTO (malformed or extra
 * bytes), TR_ETIMEDOUT, TR_ECANCELED (tr_auth_cancel), TR_EIO (the
 * connection failed or closed).
 *
 * peer_address and msg are valid during the call only. The struct tr_auth
 * is freed right after cb returns. */
typedef void (*tr_auth_cb)(void *arg, int status, uint64_t peer_id, const char *peer_address,
                           const char *msg);

/* Run the connecting side of the handshake on a connected stream s, or the
 * accepting side on an accepted one. Until cb runs the handshake owns
 * s->data and s's read callbacks; the caller must not read, write or close s
 * (use tr_auth_cancel). *out (may be NULL) names the handshake for
 * tr_auth_cancel; valid until cb runs.
 *
 * Returns TR_OK, or an error (TR_EINVAL: bad self; TR_EIO: the stream
 * refused to read or write) and then nothing was started: no callback, s
 * untouched and still open. */
int tr_auth_connect(uv_stream_t *s, const struct tr_auth_self *self, tr_auth_cb cb, void *arg,
                    struct tr_auth **out);
int tr_auth_accept(uv_stream_t *s, const struct tr_auth_self *self, tr_auth_cb cb, void *arg,
                   struct tr_auth **out);

/* Abort a handshake in progress: cb runs later with TR_ECANCELED and the
 * stream closed (also when the exchange had just succeeded but cb has not
 * run yet), unless the handshake already failed (then cb gets its own
 * error). Never calls cb itself. a must be a handshake whose cb has not run. */
void tr_auth_cancel(struct tr_auth *a);

/* ---- the authenticated raft transport --------------------------------------- */

struct raft_uv_transport;

/* Fill t with a TCP transport for raft_uv_init that authenticates every
 * connection with key (copied) before raft sees it. Like raft_uv_tcp:
 * listen() binds the address given to init(); connect() dials "host:port"
 * (IPv4, [IPv6], or a name: getaddrinfo on the thread pool, the first
 * address) and gives raft the
 * stream after the handshake; accept gives raft the peer's authenticated id
 * and advertised address. A connect whose acceptor proves a different node id
 * than the one raft asked for fails.
 *
 * raft's close (t->close) stops listening, cancels pending connects
 * (RAFT_CANCELED) and handshakes, and calls back once every handle is
 * closed. Then, or if t->init was never called, tr_auth_transport_free
 * releases t's memory. */
int tr_auth_transport_init(struct raft_uv_transport *t, uv_loop_t *loop,
                           const unsigned char key[TR_CLUSTER_KEY_LEN], struct tr_err *err);
void tr_auth_transport_free(struct raft_uv_transport *t);

/* Connections refused by t so far (failed handshakes; for tests and stats). */
uint64_t tr_auth_transport_refused(struct raft_uv_transport *t);

#endif /* TR_RAFT_AUTH_H */
