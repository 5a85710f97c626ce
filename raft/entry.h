/* Private to raft/: raft entries as written to the log, plain or
 * LZ4-compressed (raft/entry.c says why and the format). */
#ifndef TR_RAFT_ENTRY_H
#define TR_RAFT_ENTRY_H

#include <raft.h>
#include <stddef.h>
#include <stdint.h>

#include "runtime/runtime.h"

#define TR_ENTRY_MAGIC "TRCZ"
/* Largest command an entry may expand to. */
#define TR_ENTRY_RAW_MAX (64u << 20)
/* Commands of at least this many bytes are compressed by default. */
#define TR_ENTRY_COMPRESS_MIN (16u << 10)

/* The entry for command data[0..len): a raft_malloc'd buffer of *out_len
 * bytes (a multiple of 8), compressed when len >= min_compress (0: never)
 * and compressing shrinks it, or when the bytes would read as a compressed
 * header (so tr_entry_decode always gives them back). NULL when memory runs
 * out, or for such bytes above TR_ENTRY_RAW_MAX. */
uint8_t *tr_entry_encode(const uint8_t *data, size_t len, size_t min_compress, size_t *out_len);

/* 1 if buf holds a compressed entry (by its header). */
int tr_entry_is_compressed(const void *buf, size_t len);

/* The command in entry buf[0..len): *raw and *raw_len point into buf (plain) or
 * into *owned (compressed: the caller tr_free()s *owned). TR_ECORRUPT with a
 * reason in why for a compressed entry that does not decode. */
int tr_entry_decode(const void *buf, size_t len, const void **raw, size_t *raw_len, void **owned,
                    char *why, size_t why_cap);

#endif /* TR_RAFT_ENTRY_H */
