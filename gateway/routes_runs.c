/* /v1/runs: create, read (with long poll), list, events, cancel. */
#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "gateway/gw_int.h"

#define CREATE_ATTEMPTS 3 /* fresh run ids tried when a random id collides */

void gw_answer_run(struct gw_call *c, int status, uint64_t key)
{
    void *buf;
    const struct troupe_state_Run *r;
    char text[TR_RUN_ID_TEXT_LEN];
    tr_run_id_text(key, text);
    int rv = gw_load_run(c->g->store, key, &buf, &r);
    if (rv == TR_ENOTFOUND || (rv == TR_OK && !gw_run_visible(&c->who, r))) {
        tr_free(buf);
        gw_respond_error(c, 404, "not_found", "no run %s", text);
        return;
    }
    if (rv != TR_OK) {
        gw_respond_error(c, 500, "internal", "run %s cannot be read: %s", text, tr_strerror(rv));
        return;
    }
    json_t *j = gw_render_run(r);
    tr_free(buf);
    gw_respond_json(c, status, j);
}

/* The {id} of the route as a run id; answers 404 and returns -1 if it is not one. */
static int run_param(struct gw_call *c, uint64_t *key)
{
    if (tr_run_id_from_text(c->m.param, c->m.param_len, key) != TR_OK) {
        gw_respond_error(c, 404, "not_found", "no run %.64s", c->m.param);
        return -1;
    }
    return 0;
}

/* A query parameter as an integer in [lo, hi]; dflt when absent. Answers 400
 * and returns -1 when malformed. */
static int query_uint(struct gw_call *c, const char *name, uint64_t lo, uint64_t hi, uint64_t dflt, uint64_t *out)
{
    char buf[32];
    int q = gw_query_get(c->req->query, name, buf, sizeof buf);
    *out = dflt;
    if (q == 0)
        return 0;
    if (q < 0 || gw_parse_u64(buf, out) != TR_OK || *out < lo || *out > hi) {
        gw_respond_error(c, 400, "invalid_query", "%s: must be an integer from %llu to %llu", name,
                         (unsigned long long)lo, (unsigned long long)hi);
        return -1;
    }
    return 0;
}

/* ---- POST /v1/runs ------------------------------------------------------------------- */

static void create_done(struct gw_call *c, const struct tr_state_reply *r);

static void create_propose(struct gw_call *c)
{
    uint64_t id = 0;
    while (id == 0)
        randombytes_buf(&id, sizeof id);
    c->run_id = id;
    struct gw_cmd_head h = gw_cmd_head(c);
    struct gw_run_create_args a = { .run_id = id, .tenant = c->who.tenant, .idempotency_key = c->text,
                                    .owner_node = 0 /* placed by the FSM */, .created_by = c->who.name };
    gw_build_run_create(&c->g->b, &h, &c->run, &a);
    gw_propose(c, &c->g->b, create_done);
}

static void create_done(struct gw_call *c, const struct tr_state_reply *r)
{
    char text[TR_RUN_ID_TEXT_LEN];
    switch (r->verdict) {
    case TR_FSM_OK:
        c->g->created++;
        gw_answer_run(c, 201, r->run_id);
        return;
    case TR_FSM_EXISTS:
        if (c->text == NULL || r->run_id == c->run_id) {
            /* No key: our random id collided with an existing run. */
            if (++c->attempts < CREATE_ATTEMPTS) {
                create_propose(c);
                return;
            }
            gw_respond_error(c, 500, "internal", "could not pick a free run id");
            return;
        }
        gw_answer_run(c, 200, r->run_id);
        return;
    case TR_FSM_CONFLICT:
        c->g->conflicts++;
        tr_run_id_text(r->run_id, text);
        gw_respond_error(c, 409, "idempotency_conflict",
                         "Idempotency-Key was already used with another request body (run %s)", text);
        return;
    default:
        gw_respond_error(c, 500, "internal", "the run was refused: %s", tr_fsm_verdict_name(r->verdict));
        return;
    }
}

/* The tenant's max_active_runs (tenant keys only; the cluster admin is not
 * limited): 429 too_many_active_runs when the tenant has that many runs not
 * yet terminal. A request whose Idempotency-Key is already taken is not
 * counted: it creates nothing. Checked against this node's applied state,
 * so concurrent creates may pass it together (by at most those in flight). */
static bool active_runs_full(struct gw_call *c)
{
    if (c->who.cluster_admin)
        return false;
    if (c->text != NULL) {
        uint64_t run;
        unsigned char hash[32];
        if (tr_idem_get(c->g->store, NULL, c->who.tenant, strlen(c->who.tenant), c->text, strlen(c->text), &run, hash,
                        NULL) == TR_OK)
            return false;
    }
    void *buf;
    const struct troupe_state_Tenant *t;
    if (gw_load_tenant(c->g->store, c->who.tenant, &buf, &t) != TR_OK)
        return false;
    const struct troupe_cmd_TenantLimits *l = troupe_state_Tenant_limits(t);
    uint32_t max = l != NULL ? troupe_cmd_TenantLimits_max_active_runs(l) : 0;
    tr_free(buf);
    if (max == 0)
        return false;
    uint64_t n = gw_count_active_runs(c->g->store, c->who.tenant, max);
    if (n < max)
        return false;
    gw_respond_error(c, 429, "too_many_active_runs",
                     "tenant %s has %u active runs, its max_active_runs; wait for one to end or cancel one",
                     c->who.tenant, max);
    return true;
}

void gw_h_runs_create(struct gw_call *c)
{
    struct gw_error e;
    const char *idem = tr_httpd_header(c->req, "Idempotency-Key");
    if (idem != NULL && gw_idem_key_check(idem, &e) != 0) {
        gw_respond_gw_error(c, &e);
        return;
    }
    if (gw_run_req_parse(c->req->body, c->req->body_len, &c->run, &e) != 0) {
        gw_respond_gw_error(c, &e);
        return;
    }
    c->text = idem != NULL ? tr_strdup(idem) : NULL;
    if (active_runs_full(c))
        return;
    create_propose(c);
}

/* ---- GET /v1/runs/{id} ---------------------------------------------------------------- */

void gw_h_run_get(struct gw_call *c)
{
    uint64_t key, wait;
    if (run_param(c, &key) != 0 || query_uint(c, "wait", 1, GW_WAIT_MAX_S, 0, &wait) != 0)
        return;
    if (wait > 0) {
        void *buf;
        const struct troupe_state_Run *r;
        if (gw_load_run(c->g->store, key, &buf, &r) == TR_OK && gw_run_visible(&c->who, r) &&
            !gw_run_terminal(troupe_state_Run_status(r))) {
            tr_free(buf);
            gw_wait_run(c, key, gw_loop_now_ms(c) + wait * 1000);
            return;
        }
        tr_free(buf);
    }
    gw_answer_run(c, 200, key);
}

/* ---- GET /v1/runs --------------------------------------------------------------------- */

void gw_h_runs_list(struct gw_call *c)
{
    char status_text[32], cursor[GW_CURSOR_MAX];
    int8_t status = -1;
    uint64_t limit;
    int q = gw_query_get(c->req->query, "status", status_text, sizeof status_text);
    if (q < 0 || (q > 0 && gw_run_status_parse(status_text, &status) != TR_OK)) {
        gw_respond_error(c, 400, "invalid_query",
                         "status: one of queued, running, waiting_approval, succeeded, failed, cancelled");
        return;
    }
    if (query_uint(c, "limit", 1, GW_LIST_MAX, GW_LIST_DEFAULT, &limit) != 0)
        return;
    unsigned char lower[9];
    size_t llen = 0;
    q = gw_query_get(c->req->query, "cursor", cursor, sizeof cursor);
    if (q != 0) {
        if (q < 0 || gw_cursor_decode(cursor, lower, 8, &llen) != TR_OK || llen != 8) {
            gw_respond_error(c, 400, "invalid_cursor", "cursor: not a cursor this API returned");
            return;
        }
        lower[8] = 0; /* the first key after the cursor's */
        llen = 9;
    }
    struct tr_store_iter *it;
    struct tr_err err = { 0 };
    if (tr_store_iter_open(c->g->store, NULL, TR_CF_RUNS, llen ? lower : NULL, llen, NULL, 0, &it, &err) != TR_OK) {
        gw_respond_error(c, 500, "internal", "cannot list runs: %s", err.msg);
        return;
    }
    json_t *runs = json_array();
    unsigned char last[8];
    bool more = false;
    uint64_t n = 0, scanned = 0;
    const void *k, *v;
    size_t klen, vlen;
    int rv;
    while ((rv = tr_store_iter_next(it, &k, &klen, &v, &vlen, NULL)) > 0) {
        if (n == limit || scanned == GW_SCAN_MAX) {
            more = true; /* a next page may hold more */
            break;
        }
        scanned++;
        if (klen == 8)
            memcpy(last, k, 8);
        const struct troupe_state_Run *r = troupe_state_Run_verify_as_root(v, vlen, NULL);
        if (r == NULL || klen != 8 || !gw_run_visible(&c->who, r))
            continue;
        if (status >= 0 && troupe_state_Run_status(r) != status)
            continue;
        json_array_append_new(runs, gw_render_run(r));
        n++;
    }
    tr_store_iter_close(it);
    if (rv < 0) {
        json_decref(runs);
        gw_respond_error(c, 500, "internal", "cannot list runs: %s", tr_strerror(rv));
        return;
    }
    json_t *next = json_null();
    if (more && scanned > 0 && gw_cursor_encode(last, 8, cursor, sizeof cursor) == TR_OK) {
        json_decref(next);
        next = json_string(cursor);
    }
    gw_respond_json(c, 200, json_pack("{s:o, s:o}", "runs", runs, "next_cursor", next));
}

/* ---- GET /v1/runs/{id}/events ------------------------------------------------------------ */

void gw_h_run_events(struct gw_call *c)
{
    uint64_t key, after, limit;
    if (run_param(c, &key) != 0)
        return;
    const char *accept = tr_httpd_header(c->req, "Accept");
    bool sse = accept != NULL && strstr(accept, "text/event-stream") != NULL;
    if (query_uint(c, "after", 0, UINT64_MAX - 1, 0, &after) != 0 ||
        query_uint(c, "limit", 1, GW_EVENTS_MAX, GW_EVENTS_DEFAULT, &limit) != 0)
        return;
    const char *last_id = tr_httpd_header(c->req, "Last-Event-ID");
    if (sse && last_id != NULL && gw_parse_u64(last_id, &after) != TR_OK) {
        gw_respond_error(c, 400, "invalid_header", "Last-Event-ID: must be an event's seq");
        return;
    }
    void *buf;
    const struct troupe_state_Run *r;
    int rv = gw_load_run(c->g->store, key, &buf, &r);
    bool visible = rv == TR_OK && gw_run_visible(&c->who, r);
    tr_free(buf);
    if (!visible) {
        gw_respond_error(c, 404, "not_found", "no run %.64s", c->m.param);
        return;
    }
    if (sse) {
        gw_sse_start(c, key, after);
        return;
    }
    struct tr_journal_iter *it;
    struct tr_err err = { 0 };
    if (tr_journal_iter_open(c->g->store, NULL, key, after + 1, &it, &err) != TR_OK) {
        gw_respond_error(c, 500, "internal", "cannot read the journal: %s", err.msg);
        return;
    }
    json_t *events = json_array();
    uint64_t seq, n = 0;
    size_t bytes = 0;
    const void *ev;
    size_t len;
    while (n < limit && bytes < GW_EVENTS_BYTES && (rv = tr_journal_iter_next(it, &seq, &ev, &len, NULL)) > 0) {
        const struct troupe_journal_Event *e = troupe_journal_Event_verify_as_root(ev, len, NULL);
        if (e == NULL) {
            tr_log(TR_LOG_ERROR, "gateway: journal event %s/%llu does not verify", c->m.param,
                   (unsigned long long)seq);
            continue;
        }
        json_array_append_new(events, gw_render_event(e));
        bytes += len;
        n++;
    }
    tr_journal_iter_close(it);
    gw_respond_json(c, 200, events);
}

/* Server-Sent Events: gw_sse_start (http_api.c), live updates from live.c. */

/* ---- POST /v1/runs/{id}/cancel ------------------------------------------------------------ */

static void cancel_done(struct gw_call *c, const struct tr_state_reply *r)
{
    switch (r->verdict) {
    case TR_FSM_OK:
    case TR_FSM_TERMINAL:
        gw_answer_run(c, 200, c->run_id);
        return;
    case TR_FSM_NO_RUN:
        gw_respond_error(c, 404, "not_found", "no run %s", c->m.param);
        return;
    default:
        gw_respond_error(c, 500, "internal", "cancel was refused: %s", tr_fsm_verdict_name(r->verdict));
        return;
    }
}

void gw_h_run_cancel(struct gw_call *c)
{
    uint64_t key;
    struct gw_error e;
    if (run_param(c, &key) != 0)
        return;
    if (gw_cancel_req_parse(c->req->body, c->req->body_len, &c->text, &e) != 0) {
        gw_respond_gw_error(c, &e);
        return;
    }
    void *buf;
    const struct troupe_state_Run *r;
    int rv = gw_load_run(c->g->store, key, &buf, &r);
    bool visible = rv == TR_OK && gw_run_visible(&c->who, r);
    bool terminal = visible && gw_run_terminal(troupe_state_Run_status(r));
    tr_free(buf);
    if (!visible) {
        gw_respond_error(c, 404, "not_found", "no run %.64s", c->m.param);
        return;
    }
    if (terminal) {
        gw_answer_run(c, 200, key); /* idempotent: nothing to write */
        return;
    }
    c->run_id = key;
    struct gw_cmd_head h = gw_cmd_head(c);
    gw_build_run_cancel(&c->g->b, &h, key, c->text, c->who.name);
    gw_propose(c, &c->g->b, cancel_done);
}
