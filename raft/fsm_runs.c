/* FSM handlers for runs: create, journal appends, approvals, cancel,
 * reassignment. A RunCreate with owner_node 0 is placed by the FSM
 * (fsm_nodes.c); every owner change goes through fsm_run_move.
 *
 * Run status transitions the FSM makes (API.md statuses):
 *
 *   (RunCreate) -> queued --first owner append--> running
 *   running --approval.requested--> waiting_approval --approval.decided--> running
 *   queued|running|waiting_approval --run.succeeded--> succeeded
 *                                   --run.failed-----> failed
 *                                   --RunCancel------> cancelled
 *
 * Terminal statuses never change again; appends to a terminal run get
 * TR_FSM_TERMINAL. Events the FSM journals itself: run.created, run.assigned,
 * approval.decided, run.cancelled; an owner appending one of those is refused.
 */
#include <string.h>

#include "raft/fsm_int.h"

static char *dup_str(struct tr_fb_str s)
{
    return s.ptr != NULL ? tr_strndup(s.ptr, s.len) : NULL;
}

static void set_str(char **dst, struct tr_fb_str s)
{
    tr_free(*dst);
    *dst = dup_str(s);
}

static int parse_run_id(struct tr_fb_str s, uint64_t *key)
{
    return s.ptr != NULL ? tr_run_id_from_text(s.ptr, s.len, key) : TR_EINVAL;
}

static bool str_eq(struct tr_fb_str a, struct tr_fb_str b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

/* ---- approvals -------------------------------------------------------------------- */

struct approval_rec {
    char *approval_id, *run_id, *tenant, *tool, *arguments, *call_id, *decided_by, *reason;
    int8_t risk, status;
    uint32_t step, call_index;
    int64_t requested_at_us, expires_at_us, decided_at_us;
};

static void approval_free(struct approval_rec *a)
{
    tr_free(a->approval_id);
    tr_free(a->run_id);
    tr_free(a->tenant);
    tr_free(a->tool);
    tr_free(a->arguments);
    tr_free(a->call_id);
    tr_free(a->decided_by);
    tr_free(a->reason);
    memset(a, 0, sizeof *a);
}

static int approval_load(struct tr_fsm *f, struct tr_fb_str id, struct approval_rec *a)
{
    void *val = NULL;
    size_t vlen = 0;
    memset(a, 0, sizeof *a);
    if (id.ptr == NULL || id.len == 0)
        return TR_ENOTFOUND;
    int rv = fsm_get(f, TR_CF_APPROVALS, id.ptr, id.len, &val, &vlen);
    if (rv != TR_OK)
        return rv;
    struct tr_fb_error ferr;
    const struct troupe_state_Approval *r =
        troupe_state_Approval_verify_as_root_opts(val, vlen, "TRA1", &tr_fb_default_limits, &ferr);
    if (r == NULL) {
        tr_free(val);
        tr_log(TR_LOG_ERROR, "fsm: approval record %.*s does not verify", (int)id.len, id.ptr);
        return TR_ECORRUPT;
    }
    a->approval_id = dup_str(troupe_state_Approval_approval_id(r));
    a->run_id = dup_str(troupe_state_Approval_run_id(r));
    a->tenant = dup_str(troupe_state_Approval_tenant(r));
    a->tool = dup_str(troupe_state_Approval_tool(r));
    a->arguments = dup_str(troupe_state_Approval_arguments(r));
    a->call_id = dup_str(troupe_state_Approval_call_id(r));
    a->decided_by = dup_str(troupe_state_Approval_decided_by(r));
    a->reason = dup_str(troupe_state_Approval_reason(r));
    a->risk = troupe_state_Approval_risk(r);
    a->status = troupe_state_Approval_status(r);
    a->step = troupe_state_Approval_step(r);
    a->call_index = troupe_state_Approval_call_index(r);
    a->requested_at_us = troupe_state_Approval_requested_at_us(r);
    a->expires_at_us = troupe_state_Approval_expires_at_us(r);
    a->decided_at_us = troupe_state_Approval_decided_at_us(r);
    tr_free(val);
    return TR_OK;
}

static tr_fb_ref opt_str(struct tr_fb_builder *b, const char *s)
{
    return s != NULL ? tr_fb_create_str(b, s) : 0;
}

static void approval_store(struct tr_fsm *f, const struct approval_rec *a)
{
    struct tr_fb_builder *b = &f->b;
    tr_fb_builder_reset(b);
    tr_fb_ref id = tr_fb_create_str(b, a->approval_id);
    tr_fb_ref run_id = tr_fb_create_str(b, a->run_id != NULL ? a->run_id : "");
    tr_fb_ref tenant = opt_str(b, a->tenant);
    tr_fb_ref tool = opt_str(b, a->tool);
    tr_fb_ref args = opt_str(b, a->arguments);
    tr_fb_ref call_id = opt_str(b, a->call_id);
    tr_fb_ref decided_by = opt_str(b, a->decided_by);
    tr_fb_ref reason = opt_str(b, a->reason);
    troupe_state_Approval_start(b);
    troupe_state_Approval_add_approval_id(b, id);
    troupe_state_Approval_add_run_id(b, run_id);
    troupe_state_Approval_add_tenant(b, tenant);
    troupe_state_Approval_add_tool(b, tool);
    troupe_state_Approval_add_arguments(b, args);
    troupe_state_Approval_add_risk(b, a->risk);
    troupe_state_Approval_add_step(b, a->step);
    troupe_state_Approval_add_call_index(b, a->call_index);
    troupe_state_Approval_add_call_id(b, call_id);
    troupe_state_Approval_add_requested_at_us(b, a->requested_at_us);
    troupe_state_Approval_add_expires_at_us(b, a->expires_at_us);
    troupe_state_Approval_add_status(b, a->status);
    troupe_state_Approval_add_decided_by(b, decided_by);
    troupe_state_Approval_add_reason(b, reason);
    troupe_state_Approval_add_decided_at_us(b, a->decided_at_us);
    tr_fb_finish(b, troupe_state_Approval_end(b), "TRA1");
    size_t len;
    const uint8_t *data = tr_fb_builder_data(b, &len);
    fsm_put(f, TR_CF_APPROVALS, a->approval_id, strlen(a->approval_id), data, len);
}

/* Close the run's pending approval (if any) with `status` without journaling
 * approval.decided (the run is ending). */
static void approval_close_pending(struct tr_fsm *f, struct run_slot *s, int8_t status, const char *reason)
{
    if (s->rec.pending_approval == NULL)
        return;
    struct approval_rec a;
    struct tr_fb_str id = { s->rec.pending_approval, (uint32_t)strlen(s->rec.pending_approval) };
    if (approval_load(f, id, &a) == TR_OK) {
        if (a.status == troupe_state_ApprovalStatus_Pending) {
            a.status = status;
            tr_free(a.reason);
            a.reason = tr_strdup(reason);
            tr_free(a.decided_by);
            a.decided_by = tr_strdup("system");
            a.decided_at_us = f->now_us;
            approval_store(f, &a);
        }
        approval_free(&a);
    }
    tr_free(s->rec.pending_approval);
    s->rec.pending_approval = NULL;
}

/* ---- RunCreate -------------------------------------------------------------------- */

/* The owner of a run created with owner_node 0 (placement rules at the top of
 * fsm_nodes.c); 0 when there is nobody to give it to. */
static uint64_t place(struct tr_fsm *f)
{
    if (fsm_load_ensure(f) != TR_OK)
        return 0;
    uint64_t owner = fsm_load_pick(f, 0);
    if (owner == 0) {
        /* An empty node table (a lone node before it registered) or no node
         * Up: the node that took the request runs it. */
        owner = f->origin_node;
        if (fsm_load_registered(f) > 0)
            tr_log(TR_LOG_WARN, "fsm: no node is up; run placed on origin node %llu", (unsigned long long)owner);
    }
    return owner;
}

int fsm_run_create(struct tr_fsm *f, const struct troupe_cmd_RunCreate *c, struct tr_fsm_result *res)
{
    uint64_t key;
    if (parse_run_id(troupe_cmd_RunCreate_run_id(c), &key) != TR_OK)
        return TR_FSM_INVALID;
    struct tr_fb_str tenant = troupe_cmd_RunCreate_tenant(c);
    struct tr_fb_str idem = troupe_cmd_RunCreate_idempotency_key(c);
    if (tenant.len == 0 || tenant.len > TR_IDEM_TENANT_MAX || memchr(tenant.ptr, 0, tenant.len) != NULL)
        return TR_FSM_INVALID;
    if (idem.len > TR_IDEM_KEY_MAX)
        return TR_FSM_INVALID;

    unsigned char req_hash[TR_IDEM_HASH_LEN] = { 0 };
    struct tr_fb_vec digest = troupe_cmd_RunCreate_request_digest(c);
    memcpy(req_hash, digest.data != NULL ? digest.data : req_hash,
           digest.len < TR_IDEM_HASH_LEN ? digest.len : TR_IDEM_HASH_LEN);

    if (idem.len > 0) {
        tr_run_id existing;
        unsigned char seen_hash[TR_IDEM_HASH_LEN];
        struct tr_err err = { 0 };
        int rv = tr_idem_get(f->store, NULL, tenant.ptr, tenant.len, idem.ptr, idem.len, &existing,
                             seen_hash, &err);
        if (rv == TR_OK) {
            res->run_id = existing;
            return memcmp(seen_hash, req_hash, TR_IDEM_HASH_LEN) == 0 ? TR_FSM_EXISTS : TR_FSM_CONFLICT;
        }
        if (rv != TR_ENOTFOUND) {
            f->on_fatal(f->ud, err.msg);
            return TR_FSM_INVALID;
        }
    }
    if (fsm_run_get(f, key) != NULL) {
        res->run_id = key;
        return TR_FSM_EXISTS;
    }
    uint64_t owner = troupe_cmd_RunCreate_owner_node(c);
    if (owner == 0 && (owner = place(f)) == 0)
        return TR_FSM_INVALID;

    struct run_slot *s = fsm_run_new(f, key);
    struct run_rec *r = &s->rec;
    r->run_id = dup_str(troupe_cmd_RunCreate_run_id(c));
    r->tenant = dup_str(tenant);
    r->goal = dup_str(troupe_cmd_RunCreate_goal(c));
    r->metadata = dup_str(troupe_cmd_RunCreate_metadata(c));
    r->idempotency_key = idem.len > 0 ? dup_str(idem) : NULL;
    r->created_by = dup_str(troupe_cmd_RunCreate_created_by(c));
    tr_agent_rec_from(&r->agent, troupe_cmd_RunCreate_agent(c));
    r->status = troupe_journal_RunStatus_Queued;
    r->owner_node = owner;
    r->epoch = troupe_cmd_RunCreate_epoch(c);
    r->next_seq = 1;
    r->created_at_us = f->now_us;
    r->updated_at_us = f->now_us;

    /* run.created, seq 1. */
    fsm_event_begin(f);
    struct tr_fb_builder *b = &f->eb;
    tr_fb_ref t = tr_fb_create_str(b, r->tenant);
    tr_fb_ref goal = tr_fb_create_str(b, r->goal != NULL ? r->goal : "");
    tr_fb_ref agent = tr_agent_rec_build(b, &r->agent);
    tr_fb_ref meta = opt_str(b, r->metadata);
    tr_fb_ref ik = opt_str(b, r->idempotency_key);
    tr_fb_ref by = opt_str(b, r->created_by);
    troupe_journal_RunCreated_start(b);
    troupe_journal_RunCreated_add_tenant(b, t);
    troupe_journal_RunCreated_add_goal(b, goal);
    troupe_journal_RunCreated_add_agent(b, agent);
    troupe_journal_RunCreated_add_metadata(b, meta);
    troupe_journal_RunCreated_add_idempotency_key(b, ik);
    troupe_journal_RunCreated_add_owner_node(b, r->owner_node);
    troupe_journal_RunCreated_add_created_by(b, by);
    tr_fb_ref data = troupe_journal_RunCreated_end(b);
    res->seq = fsm_event_commit(f, s, troupe_journal_Data_RunCreated, data);
    res->run_id = key;

    if (idem.len > 0)
        (void)tr_batch_idem_put(f->batch, tenant.ptr, tenant.len, idem.ptr, idem.len, key, req_hash);
    fsm_load_sync_run(f, r);
    fsm_note(f, TR_NOTE_RUN_CREATED, r, troupe_journal_Data_RunCreated, res->seq);
    return TR_FSM_OK;
}

/* ---- journal appends ---------------------------------------------------------------- */

static void on_approval_requested(struct tr_fsm *f, struct run_slot *s, const struct troupe_journal_Event *ev,
                                  const struct troupe_journal_ApprovalRequested *ar)
{
    struct approval_rec a = { 0 };
    a.approval_id = dup_str(troupe_journal_ApprovalRequested_approval_id(ar));
    a.run_id = tr_strdup(s->rec.run_id);
    a.tenant = tr_strdup(s->rec.tenant);
    a.tool = dup_str(troupe_journal_ApprovalRequested_tool(ar));
    a.arguments = dup_str(troupe_journal_ApprovalRequested_arguments(ar));
    a.call_id = dup_str(troupe_journal_ApprovalRequested_call_id(ar));
    a.reason = dup_str(troupe_journal_ApprovalRequested_reason(ar));
    a.risk = troupe_journal_ApprovalRequested_risk(ar);
    a.step = troupe_journal_ApprovalRequested_step(ar);
    a.call_index = troupe_journal_ApprovalRequested_call_index(ar);
    a.requested_at_us = troupe_journal_Event_time_us(ev);
    a.expires_at_us = troupe_journal_ApprovalRequested_expires_at_us(ar);
    a.status = troupe_state_ApprovalStatus_Pending;
    approval_store(f, &a);
    tr_free(s->rec.pending_approval);
    s->rec.pending_approval = a.approval_id;
    a.approval_id = NULL;
    approval_free(&a);
    s->rec.status = troupe_journal_RunStatus_WaitingApproval;
}

static void step_max(struct run_rec *r, uint32_t step)
{
    if (step > r->step)
        r->step = step;
}

/* Check one append against the run and its event; on success journal it. */
static int append_one(struct tr_fsm *f, const struct troupe_cmd_Append *a, uint64_t *seq_out)
{
    uint64_t key;
    struct tr_fb_str rid = troupe_cmd_Append_run_id(a);
    if (parse_run_id(rid, &key) != TR_OK)
        return TR_FSM_INVALID;
    struct run_slot *s = fsm_run_get(f, key);
    if (s == NULL)
        return TR_FSM_NO_RUN;
    struct run_rec *r = &s->rec;
    *seq_out = r->next_seq - 1;
    uint64_t epoch = troupe_cmd_Append_epoch(a), seq = troupe_cmd_Append_seq(a);
    if (tr_run_status_terminal(r->status))
        return TR_FSM_TERMINAL;
    if (epoch < r->epoch)
        return TR_FSM_STALE_EPOCH;
    if (epoch > r->epoch)
        return TR_FSM_INVALID;
    if (seq != r->next_seq)
        return TR_FSM_BAD_SEQ;
    /* Built on the event before it? (raft.h, "Writer ids") */
    uint64_t writer = troupe_cmd_Append_writer(a);
    if (writer != 0 && seq - 1 > troupe_cmd_Append_base_seq(a) && r->last_writer != writer)
        return TR_FSM_BAD_SEQ;

    struct tr_fb_vec bytes = troupe_cmd_Append_event(a);
    struct tr_fb_error ferr;
    const struct troupe_journal_Event *ev = troupe_journal_Event_verify_as_root(bytes.data, bytes.len, &ferr);
    if (ev == NULL)
        return TR_FSM_INVALID;
    if (troupe_journal_Event_seq(ev) != seq || troupe_journal_Event_epoch(ev) != epoch ||
        !str_eq(troupe_journal_Event_run_id(ev), rid))
        return TR_FSM_INVALID;

    uint8_t type = troupe_journal_Event_data_type(ev);
    switch (type) {
    case troupe_journal_Data_NONE:
    case troupe_journal_Data_RunCreated:
    case troupe_journal_Data_RunAssigned:
    case troupe_journal_Data_ApprovalDecided:
    case troupe_journal_Data_RunCancelled:
        return TR_FSM_INVALID; /* the FSM's own events, or none */
    default:
        break;
    }

    /* A blob must be the payload the event names. */
    struct tr_fb_vec blob = troupe_cmd_Append_blob(a);
    if (blob.data != NULL) {
        const struct troupe_journal_ToolCompleted *tc = troupe_journal_Event_data_as_ToolCompleted(ev);
        struct tr_fb_vec want = tc != NULL ? troupe_journal_ToolCompleted_result_digest(tc) : (struct tr_fb_vec){ 0 };
        unsigned char got[TR_BLOB_DIGEST_LEN];
        tr_blob_digest(blob.data, blob.len, got);
        if (want.len != TR_BLOB_DIGEST_LEN || memcmp(want.data, got, TR_BLOB_DIGEST_LEN) != 0)
            return TR_FSM_INVALID;
    }
    /* An approval id is used once. */
    const struct troupe_journal_ApprovalRequested *ar = troupe_journal_Event_data_as_ApprovalRequested(ev);
    if (ar != NULL) {
        struct approval_rec old;
        if (approval_load(f, troupe_journal_ApprovalRequested_approval_id(ar), &old) == TR_OK) {
            approval_free(&old);
            return TR_FSM_INVALID;
        }
    }

    /* Accepted: journal it and fold it into the run record. */
    if (blob.data != NULL)
        (void)tr_batch_blob_put(f->batch, blob.data, blob.len, NULL);
    (void)tr_batch_journal_append(f->batch, key, seq, bytes.data, bytes.len);
    r->next_seq = seq + 1;
    r->last_writer = writer;
    r->updated_at_us = f->now_us;
    if (r->status == troupe_journal_RunStatus_Queued)
        r->status = troupe_journal_RunStatus_Running;
    s->dirty = true;
    *seq_out = seq;

    switch (type) {
    case troupe_journal_Data_LlmRequested:
        step_max(r, troupe_journal_LlmRequested_step(troupe_journal_Event_data_as_LlmRequested(ev)));
        break;
    case troupe_journal_Data_LlmCompleted: {
        const struct troupe_journal_LlmCompleted *lc = troupe_journal_Event_data_as_LlmCompleted(ev);
        step_max(r, troupe_journal_LlmCompleted_step(lc));
        const struct troupe_journal_Usage *u = troupe_journal_LlmCompleted_usage(lc);
        if (u != NULL) {
            r->prompt_tokens += troupe_journal_Usage_prompt_tokens(u);
            r->completion_tokens += troupe_journal_Usage_completion_tokens(u);
            r->cost_micro_usd += troupe_journal_Usage_cost_micro_usd(u);
        }
        break;
    }
    case troupe_journal_Data_ApprovalRequested:
        on_approval_requested(f, s, ev, ar);
        break;
    case troupe_journal_Data_RunSucceeded: {
        const struct troupe_journal_RunSucceeded *rs = troupe_journal_Event_data_as_RunSucceeded(ev);
        r->status = troupe_journal_RunStatus_Succeeded;
        set_str(&r->output, troupe_journal_RunSucceeded_output(rs));
        approval_close_pending(f, s, troupe_state_ApprovalStatus_Denied, "run ended");
        fsm_note(f, TR_NOTE_RUN_ENDED, r, type, seq);
        break;
    }
    case troupe_journal_Data_RunFailed: {
        const struct troupe_journal_RunFailed *rf = troupe_journal_Event_data_as_RunFailed(ev);
        r->status = troupe_journal_RunStatus_Failed;
        set_str(&r->error, troupe_journal_RunFailed_error(rf));
        set_str(&r->error_code, troupe_journal_RunFailed_error_code(rf));
        approval_close_pending(f, s, troupe_state_ApprovalStatus_Denied, "run ended");
        fsm_note(f, TR_NOTE_RUN_ENDED, r, type, seq);
        break;
    }
    default:
        break;
    }
    return TR_FSM_OK;
}

void fsm_append_batch(struct tr_fsm *f, const struct troupe_cmd_AppendBatch *c, struct tr_fsm_result *res)
{
    uint32_t n = troupe_cmd_AppendBatch_appends_len(c);
    if (n > res->cap_appends) {
        res->appends = tr_realloc(res->appends, n * sizeof *res->appends);
        res->cap_appends = n;
    }
    res->n_appends = n;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t seq = 0;
        res->appends[i].verdict = append_one(f, troupe_cmd_AppendBatch_appends_at(c, i), &seq);
        res->appends[i].seq = seq;
    }
    fsm_tenants_account(f, c, res); /* tenants' spend (fsm_registry.c) */
}

/* ---- approvals decided -------------------------------------------------------------- */

int fsm_approval_decide(struct tr_fsm *f, const struct troupe_cmd_ApprovalDecide *c, struct tr_fsm_result *res)
{
    struct approval_rec a;
    int rv = approval_load(f, troupe_cmd_ApprovalDecide_approval_id(c), &a);
    if (rv == TR_ENOTFOUND)
        return TR_FSM_NOT_FOUND;
    if (rv != TR_OK)
        return TR_FSM_INVALID;
    int verdict = TR_FSM_OK;
    uint64_t key;
    struct run_slot *s = NULL;
    if (a.status != troupe_state_ApprovalStatus_Pending) {
        verdict = TR_FSM_NOT_PENDING;
        goto out;
    }
    if (a.run_id == NULL || tr_run_id_from_text(a.run_id, strlen(a.run_id), &key) != TR_OK ||
        (s = fsm_run_get(f, key)) == NULL) {
        verdict = TR_FSM_NO_RUN;
        goto out;
    }
    if (tr_run_status_terminal(s->rec.status)) {
        verdict = TR_FSM_TERMINAL;
        goto out;
    }

    int8_t decision = troupe_cmd_ApprovalDecide_decision(c);
    switch (decision) {
    case troupe_journal_Decision_Approve: a.status = troupe_state_ApprovalStatus_Approved; break;
    case troupe_journal_Decision_Deny: a.status = troupe_state_ApprovalStatus_Denied; break;
    case troupe_journal_Decision_Expired: a.status = troupe_state_ApprovalStatus_Expired; break;
    default: verdict = TR_FSM_INVALID; goto out;
    }
    set_str(&a.decided_by, troupe_cmd_ApprovalDecide_decided_by(c));
    set_str(&a.reason, troupe_cmd_ApprovalDecide_reason(c));
    a.decided_at_us = f->now_us;
    approval_store(f, &a);

    fsm_event_begin(f);
    struct tr_fb_builder *b = &f->eb;
    tr_fb_ref id = tr_fb_create_str(b, a.approval_id);
    tr_fb_ref reason = opt_str(b, a.reason);
    tr_fb_ref by = opt_str(b, a.decided_by);
    troupe_journal_ApprovalDecided_start(b);
    troupe_journal_ApprovalDecided_add_approval_id(b, id);
    troupe_journal_ApprovalDecided_add_decision(b, decision);
    troupe_journal_ApprovalDecided_add_reason(b, reason);
    troupe_journal_ApprovalDecided_add_decided_by(b, by);
    tr_fb_ref data = troupe_journal_ApprovalDecided_end(b);
    uint64_t seq = fsm_event_commit(f, s, troupe_journal_Data_ApprovalDecided, data);
    if (s->rec.pending_approval != NULL && strcmp(s->rec.pending_approval, a.approval_id) == 0) {
        tr_free(s->rec.pending_approval);
        s->rec.pending_approval = NULL;
        s->rec.status = troupe_journal_RunStatus_Running;
    }
    res->run_id = key;
    res->seq = seq;
    fsm_note(f, TR_NOTE_RUN_EVENT, &s->rec, troupe_journal_Data_ApprovalDecided, seq);
out:
    approval_free(&a);
    return verdict;
}

/* ---- cancel --------------------------------------------------------------------------- */

int fsm_run_cancel(struct tr_fsm *f, const struct troupe_cmd_RunCancel *c, struct tr_fsm_result *res)
{
    uint64_t key;
    if (parse_run_id(troupe_cmd_RunCancel_run_id(c), &key) != TR_OK)
        return TR_FSM_INVALID;
    struct run_slot *s = fsm_run_get(f, key);
    if (s == NULL)
        return TR_FSM_NO_RUN;
    res->run_id = key;
    if (tr_run_status_terminal(s->rec.status)) {
        res->seq = s->rec.next_seq - 1;
        return TR_FSM_TERMINAL;
    }
    approval_close_pending(f, s, troupe_state_ApprovalStatus_Denied, "run cancelled");

    fsm_event_begin(f);
    struct tr_fb_builder *b = &f->eb;
    struct tr_fb_str reason = troupe_cmd_RunCancel_reason(c);
    struct tr_fb_str by = troupe_cmd_RunCancel_requested_by(c);
    tr_fb_ref rref = reason.ptr != NULL ? tr_fb_create_string(b, reason.ptr, reason.len) : 0;
    tr_fb_ref bref = by.ptr != NULL ? tr_fb_create_string(b, by.ptr, by.len) : 0;
    troupe_journal_RunCancelled_start(b);
    troupe_journal_RunCancelled_add_reason(b, rref);
    troupe_journal_RunCancelled_add_cancelled_by(b, bref);
    tr_fb_ref data = troupe_journal_RunCancelled_end(b);
    uint64_t seq = fsm_event_commit(f, s, troupe_journal_Data_RunCancelled, data);

    s->rec.status = troupe_journal_RunStatus_Cancelled;
    s->rec.cancel_requested = true;
    set_str(&s->rec.error, reason.ptr != NULL ? reason : (struct tr_fb_str){ "cancelled", 9 });
    tr_free(s->rec.error_code);
    s->rec.error_code = tr_strdup("cancelled");
    res->seq = seq;
    fsm_note(f, TR_NOTE_RUN_EVENT, &s->rec, troupe_journal_Data_RunCancelled, seq);
    fsm_note(f, TR_NOTE_RUN_ENDED, &s->rec, troupe_journal_Data_RunCancelled, seq);
    return TR_FSM_OK;
}

/* ---- reassignment (failover, drain, rebalancing) ---------------------------------------- *
 *
 * Every move goes through fsm_run_move: owner and epoch + 1 in the record,
 * run.assigned journaled with the reason, TR_NOTE_RUN_ASSIGNED, the load
 * index synced. An explicit RunReassign (alone, or inside NodeDown/NodeDrain)
 * is applied only against the state it was decided on: from_node is still
 * the owner and epoch is the current one + 1 (else STALE_EPOCH).
 *
 * Rebalancing (RunReassign with only_if_queued, proposed by the cluster
 * leader for a run queued on a full node while another node has room) adds
 * three conditions, checked here at apply time because the proposal may be
 * stale by then: the run is still Queued (its owner has not appended: once
 * it has, the run stays), from_node still holds more active runs than its
 * capacity, and to_node is another Up node with room. Any of them false:
 * STALE_EPOCH, nothing changes. A run its old owner had admitted but not yet
 * appended to is fenced by the epoch bump: its first append gets STALE_EPOCH
 * and the TR_NOTE_RUN_ASSIGNED away stops its actor; it cannot have had a
 * side effect (a tool call needs tool.started committed first, which would
 * have made the run Running). Journaled with reason "rebalanced".
 */

uint64_t fsm_run_move(struct tr_fsm *f, struct run_slot *s, uint64_t to, const char *why)
{
    struct run_rec *r = &s->rec;
    uint64_t from = r->owner_node;
    r->owner_node = to;
    r->epoch++;

    fsm_event_begin(f);
    struct tr_fb_builder *b = &f->eb;
    tr_fb_ref reason = tr_fb_create_str(b, why);
    troupe_journal_RunAssigned_start(b);
    troupe_journal_RunAssigned_add_owner_node(b, r->owner_node);
    troupe_journal_RunAssigned_add_previous_owner(b, from);
    troupe_journal_RunAssigned_add_reason(b, reason);
    tr_fb_ref data = troupe_journal_RunAssigned_end(b);
    uint64_t seq = fsm_event_commit(f, s, troupe_journal_Data_RunAssigned, data);
    fsm_load_sync_run(f, r);
    fsm_note(f, TR_NOTE_RUN_ASSIGNED, r, troupe_journal_Data_RunAssigned, seq);
    return seq;
}

int fsm_reassign_cmd(struct tr_fsm *f, const struct troupe_cmd_RunReassign *c, const char *why,
                     struct tr_fsm_result *res)
{
    uint64_t key;
    if (parse_run_id(troupe_cmd_RunReassign_run_id(c), &key) != TR_OK)
        return TR_FSM_INVALID;
    struct run_slot *s = fsm_run_get(f, key);
    if (s == NULL)
        return TR_FSM_NO_RUN;
    struct run_rec *r = &s->rec;
    if (tr_run_status_terminal(r->status))
        return TR_FSM_TERMINAL;
    /* The decision was made against (from_node, epoch - 1): anything else
     * means the run moved since, and this reassignment is stale. */
    uint64_t epoch = troupe_cmd_RunReassign_epoch(c);
    if (epoch != r->epoch + 1 || troupe_cmd_RunReassign_from_node(c) != r->owner_node)
        return TR_FSM_STALE_EPOCH;
    uint64_t to = troupe_cmd_RunReassign_to_node(c);
    if (to == 0)
        return TR_FSM_INVALID;
    if (troupe_cmd_RunReassign_only_if_queued(c)) {
        if (r->status != troupe_journal_RunStatus_Queued || !fsm_load_may_rebalance(f, r->owner_node, to)) {
            tr_log(TR_LOG_DEBUG, "fsm: rebalancing run %s from node %llu to %llu refused: %s", r->run_id,
                   (unsigned long long)r->owner_node, (unsigned long long)to,
                   r->status != troupe_journal_RunStatus_Queued ? "it is no longer queued"
                                                                 : "the nodes' load changed");
            return TR_FSM_STALE_EPOCH;
        }
        why = "rebalanced";
    }
    uint64_t seq = fsm_run_move(f, s, to, why);
    if (res != NULL) {
        res->run_id = key;
        res->seq = seq;
    }
    return TR_FSM_OK;
}

int fsm_run_reassign(struct tr_fsm *f, const struct troupe_cmd_RunReassign *c, struct tr_fsm_result *res)
{
    return fsm_reassign_cmd(f, c, "reassigned", res);
}
