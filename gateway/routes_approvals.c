/* /v1/approvals: list and decide. */
#include <string.h>

#include "gateway/gw_int.h"

/* Another tenant's approval is not there (404); the cluster admin sees all. */
static bool approval_visible(const struct gw_principal *p, const struct troupe_state_Approval *a)
{
    return gw_tenant_visible(p, troupe_state_Approval_tenant(a));
}

void gw_h_approvals_list(struct gw_call *c)
{
    char status_text[32], cursor[GW_CURSOR_MAX];
    int8_t status = troupe_state_ApprovalStatus_Pending;
    int q = gw_query_get(c->req->query, "status", status_text, sizeof status_text);
    if (q > 0 && strcmp(status_text, "all") == 0)
        status = -1;
    else if (q < 0 || (q > 0 && gw_approval_status_parse(status_text, &status) != TR_OK)) {
        gw_respond_error(c, 400, "invalid_query", "status: one of pending, approved, denied, expired, all");
        return;
    }
    char lim[16];
    uint64_t limit = GW_LIST_DEFAULT;
    q = gw_query_get(c->req->query, "limit", lim, sizeof lim);
    if (q != 0 && (q < 0 || gw_parse_u64(lim, &limit) != TR_OK || limit < 1 || limit > GW_LIST_MAX)) {
        gw_respond_error(c, 400, "invalid_query", "limit: must be an integer from 1 to %d", GW_LIST_MAX);
        return;
    }
    unsigned char lower[GW_PARAM_MAX + 1];
    size_t llen = 0;
    q = gw_query_get(c->req->query, "cursor", cursor, sizeof cursor);
    if (q != 0) {
        if (q < 0 || gw_cursor_decode(cursor, lower, GW_PARAM_MAX, &llen) != TR_OK) {
            gw_respond_error(c, 400, "invalid_cursor", "cursor: not a cursor this API returned");
            return;
        }
        lower[llen++] = 0;
    }
    struct tr_store_iter *it;
    struct tr_err err = { 0 };
    if (tr_store_iter_open(c->g->store, NULL, TR_CF_APPROVALS, llen ? lower : NULL, llen, NULL, 0, &it, &err) !=
        TR_OK) {
        gw_respond_error(c, 500, "internal", "cannot list approvals: %s", err.msg);
        return;
    }
    json_t *list = json_array();
    unsigned char last[GW_PARAM_MAX];
    size_t last_len = 0;
    bool more = false;
    uint64_t n = 0, scanned = 0;
    const void *k, *v;
    size_t klen, vlen;
    while (tr_store_iter_next(it, &k, &klen, &v, &vlen, NULL) > 0) {
        if (n == limit || scanned == GW_SCAN_MAX) {
            more = true;
            break;
        }
        scanned++;
        if (klen == 0 || klen > GW_PARAM_MAX)
            continue; /* not an id the API can name */
        memcpy(last, k, klen);
        last_len = klen;
        const struct troupe_state_Approval *a =
            troupe_state_Approval_verify_as_root_opts(v, vlen, "TRA1", &tr_fb_default_limits, NULL);
        if (a == NULL || !approval_visible(&c->who, a))
            continue;
        if (status >= 0 && troupe_state_Approval_status(a) != status)
            continue;
        json_array_append_new(list, gw_render_approval(a));
        n++;
    }
    tr_store_iter_close(it);
    json_t *next = json_null();
    if (more && last_len > 0 && gw_cursor_encode(last, last_len, cursor, sizeof cursor) == TR_OK) {
        json_decref(next);
        next = json_string(cursor);
    }
    gw_respond_json(c, 200, json_pack("{s:o, s:o}", "approvals", list, "next_cursor", next));
}

static void answer_approval(struct gw_call *c, int status)
{
    void *buf;
    const struct troupe_state_Approval *a;
    int rv = gw_load_approval(c->g->store, c->m.param, &buf, &a);
    if (rv == TR_ENOTFOUND || (rv == TR_OK && !approval_visible(&c->who, a))) {
        tr_free(buf);
        gw_respond_error(c, 404, "not_found", "no approval %.64s", c->m.param);
        return;
    }
    if (rv != TR_OK) {
        gw_respond_error(c, 500, "internal", "approval %.64s cannot be read: %s", c->m.param, tr_strerror(rv));
        return;
    }
    json_t *j = gw_render_approval(a);
    tr_free(buf);
    gw_respond_json(c, status, j);
}

static void decide_done(struct gw_call *c, const struct tr_state_reply *r)
{
    switch (r->verdict) {
    case TR_FSM_OK:
        answer_approval(c, 200);
        return;
    case TR_FSM_NOT_PENDING:
        gw_respond_error(c, 409, "not_pending", "approval %.64s was already decided", c->m.param);
        return;
    case TR_FSM_TERMINAL:
        gw_respond_error(c, 409, "run_ended", "the run of approval %.64s has ended", c->m.param);
        return;
    case TR_FSM_NOT_FOUND:
    case TR_FSM_NO_RUN:
        gw_respond_error(c, 404, "not_found", "no approval %.64s", c->m.param);
        return;
    default:
        gw_respond_error(c, 500, "internal", "the decision was refused: %s", tr_fsm_verdict_name(r->verdict));
        return;
    }
}

void gw_h_approval_decide(struct gw_call *c)
{
    struct gw_error e;
    struct gw_decide_req d;
    if (gw_decide_req_parse(c->req->body, c->req->body_len, &d, &e) != 0) {
        gw_respond_gw_error(c, &e);
        return;
    }
    void *buf;
    const struct troupe_state_Approval *a;
    int rv = gw_load_approval(c->g->store, c->m.param, &buf, &a);
    if (rv != TR_OK || !approval_visible(&c->who, a)) {
        tr_free(buf);
        gw_decide_req_free(&d);
        gw_respond_error(c, 404, "not_found", "no approval %.64s", c->m.param);
        return;
    }
    if (troupe_state_Approval_status(a) != troupe_state_ApprovalStatus_Pending) {
        const char *st = gw_approval_status_name(troupe_state_Approval_status(a));
        tr_free(buf);
        gw_decide_req_free(&d);
        gw_respond_error(c, 409, "not_pending", "approval %.64s is %s, not pending", c->m.param, st);
        return;
    }
    struct gw_cmd_head h = gw_cmd_head(c);
    gw_build_approval_decide(&c->g->b, &h, c->m.param, troupe_state_Approval_run_id(a).ptr, d.decision, d.reason,
                             c->who.name);
    tr_free(buf);
    gw_decide_req_free(&d);
    gw_propose(c, &c->g->b, decide_done);
}
