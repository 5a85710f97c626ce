/* raft/auth_int.h: the handshake's protocol core, private to raft/auth.c
 * and its tests and fuzz target.
 *
 * The core is pure: bytes in, bytes out, no I/O, no clock; the nonce comes
 * from the caller (auth.c fills it from randombytes_buf). auth.c feeds it
 * what the stream reads and writes what it asks to send.
 *
 * Invariants:
 *  1. in[0..in_len) holds only bytes of the message the core waits for (plus,
 *     on the acceptor and the connector's CHALLENGE wait, any excess that
 *     makes tr_auth_core_step fail).
 *  2. tr_auth_core_want tells how many more bytes may be read: exactly the
 *     rest of the message when the next byte after it must not be consumed
 *     (the connector's CONFIRM), else the room left in in[] so that excess is
 *     seen.
 *  3. Once step returns DONE or an error, the core is finished: further
 *     steps return the same error (TR_EPROTO) and nothing is sent.
 */
#ifndef TR_RAFT_AUTH_INT_H
#define TR_RAFT_AUTH_INT_H

#include <stddef.h>
#include <stdint.h>

#include "raft/auth.h"

#define TR_AUTH_MAGIC "TRAU"
#define TR_AUTH_VERSION 1
#define TR_AUTH_NONCE_LEN 32
#define TR_AUTH_MAC_LEN 32
#define TR_AUTH_HELLO_LEN (4 + 1 + 1 + 2 + TR_AUTH_NONCE_LEN)          /* also CHALLENGE */
#define TR_AUTH_PROOF_HEAD (8 + 2)
#define TR_AUTH_PROOF_MAX (TR_AUTH_PROOF_HEAD + TR_AUTH_ADDRESS_MAX + TR_AUTH_MAC_LEN)
#define TR_AUTH_CONFIRM_LEN (8 + TR_AUTH_MAC_LEN)

enum tr_auth_role { TR_AUTH_CONNECTOR = 1, TR_AUTH_ACCEPTOR = 2 };

enum tr_auth_state {
    TR_AUTH_S_HELLO = 1,    /* acceptor: waiting for HELLO */
    TR_AUTH_S_PROOF,        /* acceptor: CHALLENGE sent, waiting for PROOF */
    TR_AUTH_S_CHALLENGE,    /* connector: HELLO sent, waiting for CHALLENGE */
    TR_AUTH_S_CONFIRM,      /* connector: PROOF sent, waiting for CONFIRM */
    TR_AUTH_S_DONE,
    TR_AUTH_S_FAILED,
};

/* Results of tr_auth_core_step besides errors (< 0). */
enum { TR_AUTH_MORE = 1, TR_AUTH_SEND = 2, TR_AUTH_DONE = 3 };

struct tr_auth_core {
    int role;
    int state;
    int service;
    unsigned char key[TR_CLUSTER_KEY_LEN];
    uint64_t self_id;
    uint64_t expect_id;
    uint64_t peer_id;
    size_t self_addr_len;
    char self_addr[TR_AUTH_ADDRESS_MAX + 1];
    char peer_addr[TR_AUTH_ADDRESS_MAX + 1];
    unsigned char nonce_c[TR_AUTH_NONCE_LEN];
    unsigned char nonce_s[TR_AUTH_NONCE_LEN];
    unsigned char in[TR_AUTH_PROOF_MAX + 1]; /* one spare byte to see excess */
    size_t in_len;
    unsigned char out[TR_AUTH_PROOF_MAX];    /* a message to send */
    size_t out_len;
    char errmsg[160];
};

/* Set up a core. self is validated (TR_EINVAL, errmsg says why). nonce is
 * this side's fresh nonce. A connector's HELLO is in out[0..out_len) when
 * this returns TR_OK. */
int tr_auth_core_init(struct tr_auth_core *c, int role, const struct tr_auth_self *self,
                      const unsigned char nonce[TR_AUTH_NONCE_LEN]);

/* How many bytes may be appended at in + in_len now (see invariant 2). */
size_t tr_auth_core_want(const struct tr_auth_core *c);

/* Process in[0..in_len) after bytes were appended. Returns TR_AUTH_MORE (read
 * more), TR_AUTH_SEND (out[0..out_len) must be sent; in is consumed),
 * TR_AUTH_DONE (success; on the acceptor out holds CONFIRM, which must be
 * sent before the stream is used), or an error code with errmsg set. */
int tr_auth_core_step(struct tr_auth_core *c);

/* Wipe the key and nonces. */
void tr_auth_core_wipe(struct tr_auth_core *c);

#endif /* TR_RAFT_AUTH_INT_H */
