/* Troupe's replicated state on RocksDB: run journals, run and registry records,
 * content-addressed blobs, the idempotency index, a state digest and raft
 * snapshots. Values are opaque bytes here; the layers above define them.
 *
 * Model
 * -----
 * One RocksDB database per node, one column family per kind of state (enum
 * tr_cf). Every replicated write goes through a struct tr_batch that the raft
 * FSM fills while applying one committed entry and commits with
 * tr_batch_commit(batch, raft_index): the batch and meta.last_applied = index
 * land in one atomic RocksDB write. After a crash the store holds every
 * committed batch up to some index L = tr_store_last_applied() and nothing of
 * any later one; raft re-applies the entries above L from its own log, and the
 * FSM skips entries at or below L.
 *
 * Durability (struct tr_store_opts.sync): raft fsyncs its log before an entry
 * counts as committed, so by default an FSM commit only writes the RocksDB WAL
 * (into the OS page cache) without fsync. A process crash loses nothing; a
 * power loss or kernel crash may lose the WAL tail, i.e. a suffix of applied
 * batches, which raft re-applies from its log on restart (recovery is
 * point-in-time: a batch is never half present). This relies on raft never
 * discarding log entries that are not covered by a snapshot; raft 0.15 only
 * truncates its log after persisting a snapshot taken from this store.
 * tr_store_restore always syncs. Set sync=1 when the store must be durable on
 * its own (e.g. no raft log underneath).
 *
 * No WAL (struct tr_store_opts.no_wal, what the raft state service uses):
 * batch commits skip RocksDB's WAL altogether — the raft log already holds
 * every entry, so writing each one a second time only halves the disk's
 * bandwidth (bench/cluster: 2,680 -> 1,530 bytes written per journal append
 * on three nodes). A commit then lives in the memtable until RocksDB flushes
 * it, and a process crash loses every batch since the last flush: the store
 * reopens at the L of that flush. That is still a consistent cut, because
 * atomic_flush is on (every automatic flush persists all families together,
 * meta.last_applied included), and raft re-applies the rest: the entries
 * after L that its log still holds, and a snapshot (restored because its
 * index is above L) for those it has truncated. tr_store_flush persists
 * everything now, so that a restart after the next crash starts from there;
 * the FSM calls it whenever raft takes a snapshot. A clean tr_store_close
 * flushes too. sync and no_wal are exclusive (no_wal wins).
 *
 * Threads: reads (get, iterators, views, digest, snapshot) may run on any
 * thread concurrently. Writes (tr_batch_commit, tr_store_restore) must come
 * from one thread at a time (the FSM). tr_store_close must not race with
 * anything.
 *
 * Errors: functions return 0 or a negative TR_E* code and fill `err` when it
 * is not NULL. A failed write leaves the store in a sticky failed state: every
 * later write returns the same code until the store is closed and reopened.
 * Reads keep working.
 *
 * Memory: values returned as `void **` are allocated with tr_malloc and owned
 * by the caller (tr_free). Pointers returned by iterators stay valid until the
 * next call on that iterator or its close.
 */
#ifndef TR_STORAGE_H
#define TR_STORAGE_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/runtime.h"

typedef uint64_t tr_run_id;

/* On-disk format version written into meta. A store whose version is higher
 * than this is refused with TR_ENOTSUP. */
#define TR_STORE_FORMAT 1

/* Input limits. Keys longer than TR_STORE_KEY_MAX or values longer than
 * TR_STORE_VALUE_MAX are refused with TR_ETOOBIG; a batch refuses to grow
 * past TR_BATCH_MAX bytes. */
#define TR_STORE_KEY_MAX 1024
#define TR_STORE_VALUE_MAX (64u << 20)
#define TR_BATCH_MAX (512u << 20)

/* Payloads larger than this are stored as blobs; the event keeps the digest. */
#define TR_BLOB_THRESHOLD 4096
#define TR_BLOB_DIGEST_LEN 32 /* BLAKE2b-256 */
#define TR_STATE_DIGEST_LEN 32
#define TR_IDEM_HASH_LEN 32
#define TR_IDEM_TENANT_MAX 128
#define TR_IDEM_KEY_MAX 255
#define TR_JOURNAL_KEY_LEN 16 /* run_id (8 bytes BE) || seq (8 bytes BE) */

/* The column families. The order is part of the digest and snapshot format:
 * append new families at the end and bump TR_STORE_FORMAT. */
enum tr_cf {
    TR_CF_META = 0,    /* replicated cluster metadata; see below */
    TR_CF_RUNS,        /* run_id -> run record */
    TR_CF_JOURNAL,     /* run_id || seq -> journal event */
    TR_CF_BLOBS,       /* BLAKE2b-256 digest -> payload */
    TR_CF_IDEM,        /* tenant || 0x00 || idempotency key -> run_id || request hash */
    TR_CF_TOOLS,
    TR_CF_TENANTS,
    TR_CF_CREDENTIALS,
    TR_CF_APPROVALS,
    TR_CF_MEMORY,
    TR_CF_COUNT
};

/* "meta", "runs", ...; NULL for an out-of-range value. */
TR_API const char *tr_cf_name(enum tr_cf cf);

/* Meta keys whose first byte is 0x00 are node-local and belong to this module
 * (last_applied, format version): the generic API refuses them, and the
 * digest and snapshots leave them out. Every other meta key is replicated. */

/* ------------------------------------------------------------------------ */
/* Opening and closing.                                                       */

struct tr_store;

struct tr_store_opts {
    int sync;                  /* fsync the WAL on every commit (default 0, see above) */
    size_t block_cache_bytes;  /* shared block cache; 0 = 64 MiB */
    size_t write_buffer_bytes; /* memtable size per family; 0 = 16 MiB (journal x4) */
    int background_jobs;       /* flush + compaction threads; 0 = 2 */
    int rocksdb_log;           /* RocksDB's LOG file at WARN level instead of headers
                                  only (see store.c: risky when the disk fills) */
    int no_wal;                /* batch commits skip RocksDB's WAL (see "No WAL") */
};

/* Defaults: everything zero. */
TR_API void tr_store_opts_init(struct tr_store_opts *opts);

/* Open (creating if needed) the store in directory `path`, creating missing
 * column families. opts may be NULL for defaults. Refuses with TR_ENOTSUP a
 * store written by a newer format or holding unknown column families, with
 * TR_EBUSY one that another process holds open. On success *out is owned by
 * the caller (tr_store_close). */
TR_API int tr_store_open(const char *path, const struct tr_store_opts *opts,
                         struct tr_store **out, struct tr_err *err);

/* Close the store and release every RocksDB object. Every batch, view and
 * iterator of this store must have been freed first. NULL is a no-op. */
TR_API void tr_store_close(struct tr_store *s);

/* The raft index of the last committed batch (0 for a new store). */
TR_API uint64_t tr_store_last_applied(struct tr_store *s);

/* A family's generation: it moves on (any thread sees it) after every commit
 * or restore that wrote to the family, and only then. A reader that takes it
 * BEFORE reading the family may keep what it read for as long as the
 * generation stays the same: nothing newer was written there meanwhile. Not
 * persistent (it starts at 0 with each open). */
TR_API uint64_t tr_store_cf_gen(struct tr_store *s, enum tr_cf cf);

/* 0 when writable; otherwise the sticky error code, and its message in err. */
TR_API int tr_store_failed(struct tr_store *s, struct tr_err *err);

/* Persist every committed batch: after it returns TR_OK, a crash reopens the
 * store at a last_applied no lower than it was at the call. Flushes every
 * family in one atomic flush and waits for it (a checkpoint of the live store
 * under <path>.flush, removed again: RocksDB 7.8's C API has no multi-family
 * flush, and flushing families one by one could persist a cut in which they
 * disagree). Blocks for the flush: call it from a worker thread, not a loop.
 * Safe concurrently with commits (it persists at least what was committed
 * before the call), not with tr_store_close. */
TR_API int tr_store_flush(struct tr_store *s, struct tr_err *err);

/* ------------------------------------------------------------------------ */
/* Atomic write batches.                                                      */

struct tr_batch;

/* An empty batch for store s; free with tr_batch_free before closing s. */
TR_API struct tr_batch *tr_batch_new(struct tr_store *s);
TR_API void tr_batch_free(struct tr_batch *b);
/* Drop everything collected (and a recorded input error). */
TR_API void tr_batch_clear(struct tr_batch *b);
TR_API size_t tr_batch_count(struct tr_batch *b); /* operations collected */
TR_API size_t tr_batch_bytes(struct tr_batch *b); /* encoded size */

/* Collect a put or delete. Key and value are copied. Refused (TR_EINVAL,
 * TR_ETOOBIG) for bad input: reserved meta keys, puts into TR_CF_BLOBS (use
 * tr_batch_blob_put), oversize keys, values or batches. A refused operation
 * is also recorded in the batch, and tr_batch_commit then fails with it
 * without writing anything. */
TR_API int tr_batch_put(struct tr_batch *b, enum tr_cf cf, const void *key, size_t klen,
                        const void *val, size_t vlen);
TR_API int tr_batch_delete(struct tr_batch *b, enum tr_cf cf, const void *key, size_t klen);

/* Write everything collected plus meta.last_applied = raft_index in one
 * atomic write, then clear the batch for reuse. raft_index must be above
 * tr_store_last_applied() (TR_EINVAL otherwise; nothing written). A RocksDB
 * failure makes the store sticky-failed (see Errors). Writer thread only. */
TR_API int tr_batch_commit(struct tr_batch *b, uint64_t raft_index, struct tr_err *err);

/* ------------------------------------------------------------------------ */
/* Consistent views and reads.                                                */

/* A point-in-time view (a RocksDB snapshot) across every family. Reads given
 * a view see exactly the state at tr_store_view_open; a NULL view reads the
 * latest state (each iterator is still internally consistent). Close every
 * view before tr_store_close. */
struct tr_store_view;
TR_API struct tr_store_view *tr_store_view_open(struct tr_store *s);
TR_API void tr_store_view_close(struct tr_store_view *v);
/* last_applied as of the view. */
TR_API uint64_t tr_store_view_last_applied(struct tr_store_view *v);

/* Read one value: *val (tr_malloc'd, caller frees) and *vlen. TR_ENOTFOUND
 * when absent (then *val is NULL). */
TR_API int tr_store_get(struct tr_store *s, struct tr_store_view *v, enum tr_cf cf,
                        const void *key, size_t klen, void **val, size_t *vlen,
                        struct tr_err *err);

/* Forward iteration over keys in [lower, upper) of one family, in bytewise
 * key order. lower NULL: from the first key; upper NULL: to the end. Reserved
 * meta keys are never returned. */
struct tr_store_iter;
TR_API int tr_store_iter_open(struct tr_store *s, struct tr_store_view *v, enum tr_cf cf,
                              const void *lower, size_t lower_len, const void *upper,
                              size_t upper_len, struct tr_store_iter **out, struct tr_err *err);
/* Every key starting with prefix (plen >= 1). */
TR_API int tr_store_iter_prefix(struct tr_store *s, struct tr_store_view *v, enum tr_cf cf,
                                const void *prefix, size_t plen, struct tr_store_iter **out,
                                struct tr_err *err);
/* 1 and the next entry, 0 at the end, or a negative error. Any pointer may
 * be NULL when the caller does not need it. */
TR_API int tr_store_iter_next(struct tr_store_iter *it, const void **key, size_t *klen,
                              const void **val, size_t *vlen, struct tr_err *err);
TR_API void tr_store_iter_close(struct tr_store_iter *it);

/* ------------------------------------------------------------------------ */
/* Run journals: TR_CF_JOURNAL, key run_id || seq, both big-endian.           */

TR_API void tr_journal_key(tr_run_id run, uint64_t seq, unsigned char out[TR_JOURNAL_KEY_LEN]);

/* Collect journal event (run, seq). Gap and epoch checks are the FSM's. */
TR_API int tr_batch_journal_append(struct tr_batch *b, tr_run_id run, uint64_t seq,
                                   const void *event, size_t len);

/* The events of one run with seq >= from_seq, in seq order; never another
 * run's. Close before tr_store_close. */
struct tr_journal_iter;
TR_API int tr_journal_iter_open(struct tr_store *s, struct tr_store_view *v, tr_run_id run,
                                uint64_t from_seq, struct tr_journal_iter **out,
                                struct tr_err *err);
/* 1 with the next event, 0 at the end, negative on error. */
TR_API int tr_journal_iter_next(struct tr_journal_iter *it, uint64_t *seq, const void **event,
                                size_t *len, struct tr_err *err);
TR_API void tr_journal_iter_close(struct tr_journal_iter *it);

/* Highest seq of a run's journal; TR_ENOTFOUND when it has none. */
TR_API int tr_journal_last_seq(struct tr_store *s, struct tr_store_view *v, tr_run_id run,
                               uint64_t *seq, struct tr_err *err);
/* Number of events of a run (walks them). */
TR_API int tr_journal_count(struct tr_store *s, struct tr_store_view *v, tr_run_id run,
                            uint64_t *count, struct tr_err *err);

/* ------------------------------------------------------------------------ */
/* Blobs: TR_CF_BLOBS, content-addressed by BLAKE2b-256.                      */

TR_API void tr_blob_digest(const void *data, size_t len, unsigned char out[TR_BLOB_DIGEST_LEN]);

/* Collect data as a blob unless the store already holds it; *digest_out (may
 * be NULL) receives its digest either way. */
TR_API int tr_batch_blob_put(struct tr_batch *b, const void *data, size_t len,
                             unsigned char digest_out[TR_BLOB_DIGEST_LEN]);

/* The payload of a blob (caller frees *data). TR_ENOTFOUND when absent,
 * TR_ECORRUPT when the stored bytes do not hash to the digest (nothing is
 * returned then). */
TR_API int tr_blob_get(struct tr_store *s, struct tr_store_view *v,
                       const unsigned char digest[TR_BLOB_DIGEST_LEN], void **data, size_t *len,
                       struct tr_err *err);

/* ------------------------------------------------------------------------ */
/* Idempotency index: TR_CF_IDEM, tenant || 0x00 || key -> run_id || hash.    */

/* Record that (tenant, key) created `run` from a request hashing to
 * req_hash (e.g. tr_blob_digest of the canonical request body). tenant:
 * 1..TR_IDEM_TENANT_MAX bytes without 0x00; key: 1..TR_IDEM_KEY_MAX bytes. */
TR_API int tr_batch_idem_put(struct tr_batch *b, const void *tenant, size_t tlen,
                             const void *key, size_t klen, tr_run_id run,
                             const unsigned char req_hash[TR_IDEM_HASH_LEN]);
/* Look up (tenant, key): *run and req_hash_out (may be NULL). TR_ENOTFOUND
 * when unknown; TR_ECORRUPT for a malformed record. */
TR_API int tr_idem_get(struct tr_store *s, struct tr_store_view *v, const void *tenant,
                       size_t tlen, const void *key, size_t klen, tr_run_id *run,
                       unsigned char req_hash_out[TR_IDEM_HASH_LEN], struct tr_err *err);

/* ------------------------------------------------------------------------ */
/* State digest.                                                              */

/* BLAKE2b-256 over every replicated family from one point-in-time view: for
 * each family in enum order its name, then each entry's key and value with
 * their lengths, then the entry count. Node-local meta keys (last_applied,
 * format) are excluded, so replicas holding the same replicated content have
 * the same digest whatever raft entries that touch no state they applied;
 * compare *last_applied_out too when equal indexes matter. v may be NULL (a
 * fresh view). last_applied_out may be NULL. */
TR_API int tr_store_digest(struct tr_store *s, struct tr_store_view *v,
                           unsigned char out[TR_STATE_DIGEST_LEN], uint64_t *last_applied_out,
                           struct tr_err *err);

/* ------------------------------------------------------------------------ */
/* Raft snapshots.                                                            */

/* A snapshot is one self-describing byte stream (format in snapshot.c): a
 * header with last_applied, every replicated family's entries, and a footer
 * with the state digest and a BLAKE2b checksum of the stream. It can be cut
 * into chunks at any byte boundary and concatenated again.
 *
 * For raft 0.15: call tr_store_view_open in fsm->snapshot (cheap, on the
 * loop), stream the view with tr_store_snapshot_chunks in
 * fsm->snapshot_async, and free in snapshot_finalize. fsm->restore gets the
 * concatenation: pass it to tr_store_restore. */

/* Receives the stream in order. Non-zero aborts the snapshot with that code. */
typedef int (*tr_snapshot_sink_fn)(void *ud, const void *data, size_t len, struct tr_err *err);

/* Stream a snapshot of view v (NULL: a fresh view) to sink in pieces of at
 * most chunk bytes (0 = 1 MiB). *index_out (may be NULL): its last_applied. */
TR_API int tr_store_snapshot(struct tr_store *s, struct tr_store_view *v, size_t chunk,
                             tr_snapshot_sink_fn sink, void *ud, uint64_t *index_out,
                             struct tr_err *err);

/* The same collected in memory: *chunks is an array of *n buffers, free with
 * tr_snapshot_chunks_free. */
struct tr_snapshot_chunk {
    void *base;
    size_t len;
};
TR_API int tr_store_snapshot_chunks(struct tr_store *s, struct tr_store_view *v, size_t chunk,
                                    struct tr_snapshot_chunk **chunks, unsigned *n,
                                    uint64_t *index_out, struct tr_err *err);
TR_API void tr_snapshot_chunks_free(struct tr_snapshot_chunk *chunks, unsigned n);

/* The same written to a file: path.tmp, fsync, rename to path, fsync dir. */
TR_API int tr_store_snapshot_file(struct tr_store *s, struct tr_store_view *v, const char *path,
                                  uint64_t *index_out, struct tr_err *err);

/* The last_applied recorded in a snapshot's header (no full check). */
TR_API int tr_snapshot_peek(const void *data, size_t len, uint64_t *index_out,
                            struct tr_err *err);

/* Replace all replicated state by the snapshot's, and last_applied by its
 * index, in one synced atomic write. The whole stream is checked (framing,
 * order, limits, checksum, digest) before anything is written: a bad snapshot
 * returns TR_ECORRUPT (or TR_ENOTSUP for a newer format) and leaves the store
 * untouched and writable. Memory: about the snapshot's size for the batch.
 * Writer thread only. */
TR_API int tr_store_restore(struct tr_store *s, const void *data, size_t len,
                            struct tr_err *err);
/* The same from a file written by tr_store_snapshot_file (mapped, not read). */
TR_API int tr_store_restore_file(struct tr_store *s, const char *path, struct tr_err *err);

#endif
