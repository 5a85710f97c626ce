/* actors/wire.h — private to actors/: records, the payload of the messages
 * actors of one process send each other (TR_MSG_LLM_RESULT,
 * TR_MSG_TOOL_CALL, TR_MSG_TOOL_RESULT; actors.h names their fields).
 *
 * A record is a u32 magic naming its kind, then its fields in a fixed order:
 * numbers as u64, strings as a u32 length (TR_WIRE_NULL for an absent one)
 * and that many bytes, not NUL-terminated. Native byte order, no alignment:
 * a record never leaves the process. The writer appends to a tr_buf; the
 * reader checks every length against what is left, and a record read to its
 * end with nothing left over and no field past it is whole (tr_wire_end).
 *
 * Why not JSON, as these messages were: the sender had its values in C
 * already, and the receiver wanted them in C again, so each message cost a
 * serialisation and a parse (jansson) on the path of every agent step; the
 * run's fields are journaled as FlatBuffers, not as this JSON, either way. */
#ifndef TR_ACTORS_WIRE_H
#define TR_ACTORS_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "runtime/runtime.h"

#define TR_WIRE_NULL UINT32_MAX

void tr_wire_u64(struct tr_buf *b, uint64_t v);
/* s[0..n), or an absent string when s is NULL. */
void tr_wire_strn(struct tr_buf *b, const char *s, size_t n);
/* A C string, or an absent one when s is NULL. */
void tr_wire_str(struct tr_buf *b, const char *s);
/* A message of `type` whose payload is b's bytes; b is released. */
struct tr_msg *tr_wire_msg(uint32_t type, struct tr_buf *b);

struct tr_wire_r {
    const unsigned char *p;
    size_t left;
    bool bad; /* a read went past the end: every later read gives 0 / NULL */
};
void tr_wire_begin(struct tr_wire_r *r, const void *data, size_t len);
uint64_t tr_wire_get_u64(struct tr_wire_r *r);
/* A string in place (not NUL-terminated): NULL for an absent one or a bad
 * record, with *len 0. */
const char *tr_wire_get_view(struct tr_wire_r *r, size_t *len);
/* A tr_malloc'd, NUL-terminated copy; NULL for an absent string or a bad
 * record. len (may be NULL) gets its length. */
char *tr_wire_get_str(struct tr_wire_r *r, size_t *len);
/* As tr_wire_get_str, for a field that is a C string: one with a NUL byte
 * inside makes the record bad. */
char *tr_wire_get_cstr(struct tr_wire_r *r);
/* The record was read whole: no read past its end, no byte left over. */
bool tr_wire_end(const struct tr_wire_r *r);

/* ---- TR_MSG_TOOL_CALL (actors.h) ----------------------------------------------------- */

/* A call as the tool executor reads it. Strings are NUL-terminated; NULL
 * when absent. config and arguments are JSON texts: the tool's registry
 * config, and the call's validated arguments as the body to send. */
struct tr_tool_call_rec {
    char *name, *kind, *risk, *config, *arguments, *idempotency_key, *run_id, *tenant;
    size_t arguments_len;
    uint64_t version, timeout_ms, step, call_index; /* timeout_ms 0: the executor's default */
};
/* The payload of c's message: tr_malloc'd bytes, *len of them. */
char *tr_tool_call_bytes(const struct tr_tool_call_rec *c, size_t *len);
/* The record of a TR_MSG_TOOL_CALL payload into out (owning copies): 0, or
 * -1 when it is not a whole record (out is then empty). */
int tr_tool_call_read(const void *data, size_t len, struct tr_tool_call_rec *out);
void tr_tool_call_free(struct tr_tool_call_rec *c);

#endif
