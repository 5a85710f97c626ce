/* FSM handlers for the node table: NodeAdd, NodeUp, NodeDown, NodeDrain,
 * NodeRemove. Node records live in the meta family under "node/" + id. */
#include <string.h>

#include "raft/fsm_int.h"

static tr_fb_ref copy_str(struct tr_fb_builder *b, struct tr_fb_str s)
{
    return s.ptr != NULL ? tr_fb_create_string(b, s.ptr, s.len) : 0;
}

static void put_built(struct tr_fsm *f, enum tr_cf cf, const void *key, size_t klen)
{
    size_t len;
    const uint8_t *data = tr_fb_builder_data(&f->b, &len);
    fsm_put(f, cf, key, klen, data, len);
}

/* ---- nodes -------------------------------------------------------------------------- */

static size_t node_key(uint64_t id, unsigned char out[16])
{
    size_t n = strlen(FSM_NODE_PREFIX);
    memcpy(out, FSM_NODE_PREFIX, n);
    tr_run_key(id, out + n);
    return n + 8;
}

static void node_store(struct tr_fsm *f, uint64_t id, struct tr_fb_str raft, struct tr_fb_str peer,
                       struct tr_fb_str client, struct tr_fb_str http, int8_t state, int64_t since)
{
    struct tr_fb_builder *b = &f->b;
    tr_fb_builder_reset(b);
    tr_fb_ref r = copy_str(b, raft), p = copy_str(b, peer), c = copy_str(b, client), h = copy_str(b, http);
    troupe_state_Node_start(b);
    troupe_state_Node_add_node_id(b, id);
    troupe_state_Node_add_raft_address(b, r);
    troupe_state_Node_add_peer_address(b, p);
    troupe_state_Node_add_client_address(b, c);
    troupe_state_Node_add_http_address(b, h);
    troupe_state_Node_add_state(b, state);
    troupe_state_Node_add_since_us(b, since);
    tr_fb_finish(b, troupe_state_Node_end(b), "TRN2");
    unsigned char k[16];
    put_built(f, TR_CF_META, k, node_key(id, k));
}

int fsm_node_add(struct tr_fsm *f, const struct troupe_cmd_NodeAdd *c)
{
    uint64_t id = troupe_cmd_NodeAdd_node_id(c);
    if (id == 0)
        return TR_FSM_INVALID;
    node_store(f, id, troupe_cmd_NodeAdd_raft_address(c), troupe_cmd_NodeAdd_peer_address(c),
               troupe_cmd_NodeAdd_client_address(c), troupe_cmd_NodeAdd_http_address(c), troupe_state_NodeState_Up,
               f->now_us);
    fsm_note(f, TR_NOTE_NODES_CHANGED, NULL, 0, 0);
    return TR_FSM_OK;
}

int fsm_node_state(struct tr_fsm *f, uint64_t id, int8_t state)
{
    unsigned char k[16];
    void *val = NULL;
    size_t vlen;
    if (fsm_get(f, TR_CF_META, k, node_key(id, k), &val, &vlen) != TR_OK)
        return TR_FSM_NOT_FOUND;
    struct tr_fb_error ferr;
    const struct troupe_state_Node *n = troupe_state_Node_verify_as_root_opts(val, vlen, "TRN2", &tr_fb_default_limits, &ferr);
    int verdict = TR_FSM_INVALID;
    if (n != NULL) {
        node_store(f, id, troupe_state_Node_raft_address(n), troupe_state_Node_peer_address(n),
                   troupe_state_Node_client_address(n), troupe_state_Node_http_address(n), state, f->now_us);
        fsm_note(f, TR_NOTE_NODES_CHANGED, NULL, 0, 0);
        verdict = TR_FSM_OK;
    }
    tr_free(val);
    return verdict;
}
