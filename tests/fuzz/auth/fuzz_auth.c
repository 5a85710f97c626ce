/* libFuzzer target: the cluster handshake's protocol core (raft/auth_int.h),
 * the parser of every message an acceptor or a connector reads.
 *
 * data[0] picks the mode, data[1] the size of the chunks bytes arrive in,
 * data[2] where a valid message is cut before the fuzz bytes follow:
 *   0  an acceptor reads data[3..] from the start (HELLO, CHALLENGE sent, PROOF)
 *   1  a connector reads data[3..] (CHALLENGE, PROOF sent, CONFIRM)
 *   2  an acceptor reads a valid HELLO, then a valid PROOF cut at data[2],
 *      then data[3..]
 *   3  a connector gets a valid CHALLENGE, then a valid CONFIRM cut at
 *      data[2], then data[3..]
 * Checked on every step: reads never exceed the buffer; a core that fails
 * stays failed; a handshake that succeeds on fuzz bytes reports exactly the
 * id and address the MAC vouched for (fuzz bytes cannot forge a MAC). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "raft/auth_int.h"
#include "tests/fuzz/fuzz.h"

static const unsigned char key[TR_CLUSTER_KEY_LEN] = "fuzzing key fuzzing key fuzzing";
static const unsigned char nonce_c[TR_AUTH_NONCE_LEN] = "connector nonce connector nonce";
static const unsigned char nonce_s[TR_AUTH_NONCE_LEN] = "acceptor nonce acceptor nonce 12";

/* Feed bytes to c in chunks; stops at DONE or an error. Returns the last
 * step's result (TR_AUTH_MORE if the bytes ran out). */
static int feed(struct tr_auth_core *c, const unsigned char *p, size_t n, size_t chunk)
{
    int rv = TR_AUTH_MORE;
    while (n > 0) {
        size_t want = tr_auth_core_want(c);
        CHECK(want <= sizeof c->in - c->in_len);
        if (want == 0)
            break;
        size_t k = chunk < want ? chunk : want;
        k = k < n ? k : n;
        memcpy(c->in + c->in_len, p, k);
        c->in_len += k;
        p += k;
        n -= k;
        rv = tr_auth_core_step(c);
        CHECK(c->out_len <= sizeof c->out);
        if (rv == TR_AUTH_DONE || rv < 0)
            break;
    }
    if (rv < 0) {
        CHECK(c->state == TR_AUTH_S_FAILED);
        CHECK(c->errmsg[0] != '\0');
        CHECK(tr_auth_core_want(c) == 0);
        CHECK(tr_auth_core_step(c) < 0);
    }
    return rv;
}

static void init(struct tr_auth_core *c, int role)
{
    struct tr_auth_self self = { .key = key, .id = role == TR_AUTH_CONNECTOR ? 7 : 42,
                                 .address = "127.0.0.1:7007", .service = TR_AUTH_SERVICE_RAFT };
    CHECK(tr_auth_core_init(c, role, &self, role == TR_AUTH_CONNECTOR ? nonce_c : nonce_s) == TR_OK);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct tr_auth_core a, c;
    unsigned char msg[TR_AUTH_PROOF_MAX];
    size_t len;
    int rv;

    if (size < 3)
        return 0;
    int mode = data[0] % 4;
    size_t chunk = (size_t)data[1] + 1;
    size_t cut = data[2];
    const unsigned char *rest = data + 3;
    size_t n = size - 3;

    switch (mode) {
    case 0:
        init(&a, TR_AUTH_ACCEPTOR);
        rv = feed(&a, rest, n, chunk);
        CHECK(rv != TR_AUTH_DONE); /* no MAC can come from fuzz bytes */
        break;
    case 1:
        init(&c, TR_AUTH_CONNECTOR);
        rv = feed(&c, rest, n, chunk);
        CHECK(rv != TR_AUTH_DONE);
        break;
    case 2:
        init(&a, TR_AUTH_ACCEPTOR);
        init(&c, TR_AUTH_CONNECTOR);
        CHECK(feed(&a, c.out, c.out_len, 64) == TR_AUTH_SEND);
        CHECK(feed(&c, a.out, a.out_len, 64) == TR_AUTH_SEND);
        len = c.out_len;
        memcpy(msg, c.out, len);
        if (cut < len)
            len = cut;
        rv = feed(&a, msg, len, chunk);
        if (rv == TR_AUTH_MORE)
            rv = feed(&a, rest, n, chunk);
        if (rv == TR_AUTH_DONE) {
            CHECK(a.peer_id == 7);
            CHECK(strcmp(a.peer_addr, "127.0.0.1:7007") == 0);
            CHECK(a.out_len == TR_AUTH_CONFIRM_LEN);
        }
        break;
    case 3:
        init(&a, TR_AUTH_ACCEPTOR);
        init(&c, TR_AUTH_CONNECTOR);
        CHECK(feed(&a, c.out, c.out_len, 64) == TR_AUTH_SEND);
        CHECK(feed(&c, a.out, a.out_len, 64) == TR_AUTH_SEND);
        CHECK(feed(&a, c.out, c.out_len, 64) == TR_AUTH_DONE);
        len = a.out_len;
        memcpy(msg, a.out, len);
        if (cut < len)
            len = cut;
        rv = feed(&c, msg, len, chunk);
        if (rv == TR_AUTH_MORE)
            rv = feed(&c, rest, n, chunk);
        if (rv == TR_AUTH_DONE)
            CHECK(c.peer_id == 42);
        break;
    }
    tr_auth_core_wipe(&a);
    tr_auth_core_wipe(&c);
    return 0;
}
