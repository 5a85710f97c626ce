/* Raft entries as written to the log: a command as is, or LZ4-compressed.
 *
 * Why. Every node runs each entry through libraft's byte-at-a-time CRC-32
 * when it writes it to its log, and the leader sends it to every follower:
 * on three nodes under load (bench/cluster) that checksum alone was ~20 % of
 * the machine's samples. Journal events compress well (field names, run ids,
 * model names and tool schemas repeat), so a big entry is compressed once,
 * by the node that proposes it, and expanded by each FSM when it applies it.
 * Small entries (one step of one run) go as they are: there compressing
 * costs more than it saves, and their commit latency is what a run waits on.
 *
 * Format of a compressed entry (all little-endian):
 *   u32 raw_len | "TRCZ" | u32 comp_len | u32 zero | comp_len bytes of LZ4
 *   block | zero padding to a multiple of 8
 * A plain command is a FlatBuffer with "TRC1" where "TRCZ" stands, so the
 * two cannot be confused, and logs written before this format read as they
 * were. Every node of a cluster must run a version that knows the format.
 *
 * Failure modes: tr_entry_decode refuses (TR_ECORRUPT, with a reason) a
 * header that does not add up (comp_len past the buffer, raw_len above
 * TR_ENTRY_RAW_MAX) and a block that does not expand to exactly raw_len.
 */
#include "raft/entry.h"

#include <lz4.h>
#include <stdio.h>
#include <string.h>

#define HDR 16

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint8_t *plain(const uint8_t *data, size_t len, size_t *out_len)
{
    size_t padded = (len + 7) & ~(size_t)7;
    uint8_t *buf = raft_malloc(padded);
    if (buf == NULL)
        return NULL;
    memcpy(buf, data, len);
    memset(buf + len, 0, padded - len);
    *out_len = padded;
    return buf;
}

uint8_t *tr_entry_encode(const uint8_t *data, size_t len, size_t min_compress, size_t *out_len)
{
    /* raft 0.15 pads each entry to 8 bytes in its segment layout but copies
     * only buf.len bytes (the check is an assert, compiled out): an entry
     * whose length is not a multiple of 8 shifts the next one in the batch
     * and the log reads back corrupt. So both forms are padded with zeros;
     * FlatBuffers ignore trailing bytes, and the compressed form says its
     * length. */
    /* Bytes that would read as a compressed header are always compressed,
     * so that every entry decodes to what was encoded. (A command never
     * looks so: it has "TRC1" there.) */
    int must = len >= 8 && memcmp(data + 4, TR_ENTRY_MAGIC, 4) == 0;
    if (len > TR_ENTRY_RAW_MAX)
        return must ? NULL : plain(data, len, out_len);
    if (!must && (min_compress == 0 || len < min_compress))
        return plain(data, len, out_len);
    int bound = LZ4_compressBound((int)len);
    size_t cap = ((HDR + (size_t)bound) + 7) & ~(size_t)7;
    uint8_t *buf = raft_malloc(cap);
    if (buf == NULL)
        return plain(data, len, out_len);
    int n = LZ4_compress_default((const char *)data, (char *)buf + HDR, (int)len, bound);
    if (n <= 0 || (!must && (size_t)n + HDR >= len)) { /* incompressible: as it is */
        raft_free(buf);
        return n <= 0 && must ? NULL : plain(data, len, out_len);
    }
    put32(buf, (uint32_t)len);
    memcpy(buf + 4, TR_ENTRY_MAGIC, 4);
    put32(buf + 8, (uint32_t)n);
    put32(buf + 12, 0);
    size_t used = HDR + (size_t)n, padded = (used + 7) & ~(size_t)7;
    memset(buf + used, 0, padded - used);
    *out_len = padded;
    return buf;
}

int tr_entry_is_compressed(const void *buf, size_t len)
{
    return len >= HDR && memcmp((const uint8_t *)buf + 4, TR_ENTRY_MAGIC, 4) == 0;
}

int tr_entry_decode(const void *buf, size_t len, const void **raw, size_t *raw_len, void **owned,
                    char *why, size_t why_cap)
{
    const uint8_t *p = buf;
    *owned = NULL;
    if (!tr_entry_is_compressed(buf, len)) {
        *raw = buf;
        *raw_len = len;
        return TR_OK;
    }
    uint32_t rlen = get32(p), clen = get32(p + 8);
    if (get32(p + 12) != 0 || clen == 0 || clen > len - HDR || rlen == 0 || rlen > TR_ENTRY_RAW_MAX ||
        clen > (uint32_t)LZ4_compressBound((int)rlen)) {
        snprintf(why, why_cap, "compressed entry: bad header (raw %u, compressed %u, entry %zu bytes)", rlen, clen,
                 len);
        return TR_ECORRUPT;
    }
    char *out = tr_malloc(rlen);
    int n = LZ4_decompress_safe((const char *)p + HDR, out, (int)clen, (int)rlen);
    if (n != (int)rlen) {
        tr_free(out);
        snprintf(why, why_cap, "compressed entry: the block does not expand to %u bytes (%d)", rlen, n);
        return TR_ECORRUPT;
    }
    *raw = out;
    *raw_len = rlen;
    *owned = out;
    return TR_OK;
}
