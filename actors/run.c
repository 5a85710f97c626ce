/* The run actor: the thin shell around the agent loop's pure core (run.h).
 *
 * Happy path. init reads the run record and folds the whole journal from the
 * local store; a kick message starts the pump. The pump asks the core for
 * the next action and carries it out until the core says WAIT or EXIT:
 * appends go to the state service (pipelined; the appends of one pump are
 * sent together when it ends, so that they reach the group-commit batcher
 * together and share one raft entry — one fsync — instead of racing it one
 * by one: a step's tool.completed and the next llm.requested used to take
 * two entries, the second queued behind the first's write), llm and tool calls to this
 * scheduler's llm and tool actors, deadlines become timers. Every reply,
 * note and timer folds what it brings into the core's inputs and pumps
 * again.
 *
 * Failure modes.
 *  - Verdict TR_FSM_STALE_EPOCH: another node owns the run now. Stop at once
 *    and touch nothing (exit reason 1).
 *  - TR_FSM_TERMINAL, a run.cancelled / run-ended note: stop (reason 0).
 *  - TR_FSM_BAD_SEQ, or a note that the FSM journaled something (approval
 *    decided): refold the store's journal once no append is in flight, keep
 *    the replies that are not journaled yet, continue.
 *  - Transport errors (TR_ENOTLEADER, TR_ECLOSED, TR_ETIMEDOUT, a request
 *    timeout): the append may or may not have been applied. Wait a little,
 *    refold, continue: a re-emitted event that was in fact applied gets
 *    BAD_SEQ and one more refold.
 *  - The actor crashes: its supervisor (restart ON_FAILURE) re-runs init,
 *    which is replay.
 * A run waiting only for a human decision passivates; its deadline timer or
 * the manager's next note re-creates it by replay.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "actors/llm.h"
#include "actors/run.h"
#include "raft/raft.h"
#include "schemas/journal_generated.h"
#include "schemas/state_generated.h"
#include "storage/storage.h"

#define APPEND_TIMEOUT_MS 15000
#define PROPOSE_TIMEOUT_MS 15000
#define BACKOFF_MS 200
#define MAX_TIMERS 40
#define MAX_APPENDS TR_RUN_MAX_APPENDS_INFLIGHT
#define PUMP_LIMIT 4096
#define BUDGET_RECHECK_MS 1000 /* a run waiting on its tenant's budget looks again this often */
#define DAY_US (86400LL * 1000000LL)

struct pending_append {
    uint64_t corr;
    uint64_t seq;
    bool lazy;                  /* sent TR_APPEND_LAZY and not urged since */
};

/* An append decided (and folded) in this pump, not sent yet. */
struct unsent_append {
    struct tr_msg *m;
    uint64_t seq;
};

struct tool_entry {
    char *name;
    uint32_t version;
    char *schema_text;
    struct tr_schema *schema;
    char schema_error[200];
    void *buf;                  /* the registry value the view points into */
    struct tr_run_tool view;
    uint64_t store_gen;         /* tr_store_cf_gen(TR_CF_TOOLS) before it was read */
    bool newest;                /* the newest version when read */
};

struct run_actor {
    const struct tr_node_env *env;
    uint64_t run_id;
    uint64_t writer;            /* this reading of the journal's writer id (raft.h "Writer ids") */
    uint64_t base_seq;          /* the last seq it read */
    struct tr_run_state s;
    struct tr_run_vol v;
    struct tr_run_env renv;
    struct pending_append appends[MAX_APPENDS];
    struct unsent_append unsent[MAX_APPENDS];
    uint32_t n_unsent;
    uint64_t llm_corr;
    uint32_t llm_step;
    uint64_t tool_corr[TR_RUN_MAX_CALLS];
    uint32_t tool_step[TR_RUN_MAX_CALLS];
    uint64_t propose_corr[TR_RUN_MAX_CALLS];
    uint64_t timers[MAX_TIMERS];  /* 0: free slot */
    int64_t resync_at_us;
    bool refold_wanted;
    bool stopping;
    struct tool_entry *tools;
    uint32_t n_tools;
    bool budget_timer;            /* a TR_RUN_TIMER_BUDGET is armed */
};

/* ---- registry and blobs ---------------------------------------------------- */

static struct tool_entry *tool_entry_for(struct run_actor *r, const char *name, uint32_t version)
{
    for (uint32_t i = 0; i < r->n_tools; i++)
        if (strcmp(r->tools[i].name, name) == 0 && r->tools[i].version == version)
            return &r->tools[i];
    r->tools = tr_realloc(r->tools, (r->n_tools + 1) * sizeof *r->tools);
    struct tool_entry *e = &r->tools[r->n_tools++];
    memset(e, 0, sizeof *e);
    e->name = tr_strdup(name);
    e->version = version;
    return e;
}

/* The registry entry of (name, version), read from the store again only
 * when the tools family has been written since (tr_store_cf_gen): a step
 * looks its tools up several times (the request's tool list, the call's
 * checks), and each store read was a RocksDB Get, two for a tool that has
 * no tenant override. An operator's change moves the generation when the
 * FSM applies it, so it is seen from the next lookup on. */
static const struct tr_run_tool *registry_lookup(void *ud, const char *name, uint32_t version)
{
    struct run_actor *r = ud;
    void *val = NULL;
    size_t vlen = 0;
    const struct troupe_state_ToolVersions *tv;
    const struct troupe_cmd_Tool *t = NULL;
    struct tool_entry *e;
    uint32_t n, at = 0;

    uint64_t gen = tr_store_cf_gen(r->env->store, TR_CF_TOOLS); /* before reading */
    for (uint32_t i = 0; i < r->n_tools; i++) {
        e = &r->tools[i];
        if (e->store_gen == gen && e->buf && strcmp(e->name, name) == 0 &&
            (version ? e->version == version : e->newest))
            return &e->view;
    }
    /* The tenant's own registry first ("<tenant>/<name>"), then the global
     * one (gateway/routes_tools.c). */
    char key[TR_IDEM_TENANT_MAX + 2 + 256];
    int kn = r->s.tenant ? snprintf(key, sizeof key, "%s/%s", r->s.tenant, name) : -1;
    if ((kn < 0 || (size_t)kn >= sizeof key ||
         tr_store_get(r->env->store, NULL, TR_CF_TOOLS, key, (size_t)kn, &val, &vlen, NULL) != 0) &&
        tr_store_get(r->env->store, NULL, TR_CF_TOOLS, name, strlen(name), &val, &vlen, NULL) != 0)
        return NULL;
    tv = troupe_state_ToolVersions_verify_as_root_opts(val, vlen, "TRT1", &tr_fb_default_limits, NULL);
    if (!tv)
        tv = troupe_state_ToolVersions_verify_as_root_opts(val, vlen, NULL, &tr_fb_default_limits, NULL);
    n = tv ? troupe_state_ToolVersions_versions_len(tv) : 0;
    for (uint32_t i = n; i-- > 0;) {
        const struct troupe_cmd_Tool *c = troupe_state_ToolVersions_versions_at(tv, i);
        if (version == 0 || troupe_cmd_Tool_version(c) == version) {
            t = c;
            at = i;
            break;
        }
    }
    if (!t) {
        tr_free(val);
        return NULL;
    }
    e = tool_entry_for(r, name, troupe_cmd_Tool_version(t));
    tr_free(e->buf);
    e->buf = val;
    e->store_gen = gen;
    e->newest = at + 1 == n;
    struct tr_fb_str schema = troupe_cmd_Tool_input_schema(t);
    if (schema.ptr && (!e->schema_text || strcmp(e->schema_text, schema.ptr) != 0)) {
        struct tr_err err;
        json_t *j = json_loads(schema.ptr, JSON_DECODE_ANY, NULL); /* true and false are schemas too */

        tr_schema_free(e->schema);
        e->schema = NULL;
        tr_free(e->schema_text);
        e->schema_text = tr_strdup(schema.ptr);
        e->schema_error[0] = '\0';
        if (!j)
            snprintf(e->schema_error, sizeof e->schema_error, "the schema is not JSON");
        else if (tr_schema_compile(j, &e->schema, &err) != 0)
            snprintf(e->schema_error, sizeof e->schema_error, "%.*s", tr_run_utf8_shown(err.msg, 190), err.msg);
        json_decref(j);
    }
    e->view = (struct tr_run_tool){
        .name = troupe_cmd_Tool_name(t).ptr,
        .version = troupe_cmd_Tool_version(t),
        .description = troupe_cmd_Tool_description(t).ptr,
        .input_schema = schema.ptr,
        .schema = schema.ptr ? e->schema : NULL,
        .schema_error = e->schema_error[0] ? e->schema_error : NULL,
        .risk = (uint8_t)troupe_cmd_Tool_risk(t),
        .kind = (uint8_t)troupe_cmd_Tool_kind(t),
        .config = troupe_cmd_Tool_config(t).ptr,
        .timeout_ms = troupe_cmd_Tool_timeout_ms(t),
        .enabled = troupe_cmd_Tool_enabled(t),
    };
    return &e->view;
}

/* The tenant's daily budget (gateway/routes_tenants.c sets it; the FSM
 * accounts the spend per UTC day of the command time, raft/fsm_registry.c):
 * spent when the record's day is today and its spend reached the budget. */
static int budget_check(void *ud, const char *tenant, int64_t now_us, double *limit, double *used)
{
    struct run_actor *r = ud;
    void *val = NULL;
    size_t vlen = 0;
    int verdict = TR_RUN_BUDGET_OK;

    if (tr_store_get(r->env->store, NULL, TR_CF_TENANTS, tenant, strlen(tenant), &val, &vlen, NULL) != 0)
        return TR_RUN_BUDGET_OK; /* no record: no budget */
    const struct troupe_state_Tenant *t =
        troupe_state_Tenant_verify_as_root_opts(val, vlen, "TRE1", &tr_fb_default_limits, NULL);
    const struct troupe_cmd_TenantLimits *l = t ? troupe_state_Tenant_limits(t) : NULL;
    double budget = l ? troupe_cmd_TenantLimits_budget_usd_per_day(l) : 0;
    if (budget > 0 && troupe_state_Tenant_spend_day(t) == now_us / DAY_US &&
        (double)troupe_state_Tenant_spend_micro_usd(t) >= budget * 1e6) {
        *limit = budget;
        *used = (double)troupe_state_Tenant_spend_micro_usd(t) / 1e6;
        verdict = troupe_cmd_TenantLimits_budget_policy(l) == troupe_cmd_BudgetPolicy_Wait ? TR_RUN_BUDGET_WAIT
                                                                                            : TR_RUN_BUDGET_FAIL;
    }
    tr_free(val);
    return verdict;
}

static int blob_lookup(void *ud, const unsigned char digest[TR_RUN_DIGEST], void **data, size_t *len)
{
    struct run_actor *r = ud;
    return tr_blob_get(r->env->store, NULL, digest, data, len, NULL);
}

static void tools_free(struct run_actor *r)
{
    for (uint32_t i = 0; i < r->n_tools; i++) {
        tr_free(r->tools[i].name);
        tr_free(r->tools[i].schema_text);
        tr_schema_free(r->tools[i].schema);
        tr_free(r->tools[i].buf);
    }
    tr_free(r->tools);
    r->tools = NULL;
    r->n_tools = 0;
}

/* ---- loading ---------------------------------------------------------------- */

static void record_key(uint64_t id, unsigned char key[8])
{
    for (int i = 0; i < 8; i++)
        key[i] = (unsigned char)(id >> (56 - 8 * i));
}

/* The record's owner and epoch; 0 when they cannot be read. */
static int record_owner(struct run_actor *r, uint64_t *owner, uint64_t *epoch)
{
    unsigned char key[8];
    void *val = NULL;
    size_t vlen = 0;
    const struct troupe_state_Run *rec;

    record_key(r->run_id, key);
    if (tr_store_get(r->env->store, NULL, TR_CF_RUNS, key, sizeof key, &val, &vlen, NULL) != 0)
        return 0;
    rec = troupe_state_Run_verify_as_root_opts(val, vlen, NULL, &tr_fb_default_limits, NULL);
    if (rec) {
        *owner = troupe_state_Run_owner_node(rec);
        *epoch = troupe_state_Run_epoch(rec);
    }
    tr_free(val);
    return rec != NULL;
}

/* Read the record and fold the journal into a fresh state. Returns the exit
 * reason when there is nothing to run (-1: run it). */
static int load(struct tr_ctx *ctx, struct run_actor *r)
{
    unsigned char key[8];
    void *val = NULL;
    size_t vlen = 0;
    struct tr_err err;
    struct tr_journal_iter *it = NULL;
    const struct troupe_state_Run *rec;
    int rv;

    record_key(r->run_id, key);
    if (tr_store_get(r->env->store, NULL, TR_CF_RUNS, key, sizeof key, &val, &vlen, &err) != 0) {
        tr_log(TR_LOG_WARN, "run %016" PRIx64 ": no run record", r->run_id);
        return 3;
    }
    rec = troupe_state_Run_verify_as_root_opts(val, vlen, NULL, &tr_fb_default_limits, NULL);
    if (!rec) {
        tr_log(TR_LOG_ERROR, "run %016" PRIx64 ": run record does not verify", r->run_id);
        tr_free(val);
        return 3;
    }
    uint64_t owner = troupe_state_Run_owner_node(rec), epoch = troupe_state_Run_epoch(rec);
    int status = troupe_state_Run_status(rec);
    tr_free(val);
    if (owner != r->env->node_id)
        return 1;
    if (status == troupe_journal_RunStatus_Succeeded || status == troupe_journal_RunStatus_Failed ||
        status == troupe_journal_RunStatus_Cancelled)
        return 0;

    tr_run_state_free(&r->s);
    tr_run_state_init(&r->s, r->run_id, epoch);
    tr_run_vol_forget_prompt(&r->v);
    if ((rv = tr_journal_iter_open(r->env->store, NULL, r->run_id, 1, &it, &err)) != 0) {
        tr_log(TR_LOG_ERROR, "run %s: journal: %s", r->s.run_text, err.msg);
        return 3;
    }
    for (;;) {
        uint64_t seq;
        const void *ev;
        size_t len;

        rv = tr_journal_iter_next(it, &seq, &ev, &len, &err);
        if (rv <= 0)
            break;
        if (tr_run_fold(&r->s, ev, len) != 0)
            break;
    }
    tr_journal_iter_close(it);
    if (rv < 0) {
        tr_log(TR_LOG_ERROR, "run %s: journal: %s", r->s.run_text, err.msg);
        return 3;
    }
    if (r->s.fold_error[0]) {
        tr_log(TR_LOG_ERROR, "%s", r->s.fold_error);
        return 3;
    }
    if (epoch > r->s.epoch)
        r->s.epoch = epoch;
    r->v.acked_seq = r->s.next_seq - 1;
    /* Appends from now on build on what was just read: a new writer id, so
     * that the FSM refuses them after one it refuses (raft.h "Writer ids"). */
    r->base_seq = r->s.next_seq - 1;
    do
        r->writer = tr_random(ctx);
    while (r->writer == 0);
    return -1;
}

/* ---- timers ----------------------------------------------------------------- */

static void arm(struct tr_ctx *ctx, struct run_actor *r, uint32_t kind, uint32_t step, uint32_t idx, uint64_t ms)
{
    struct tr_run_timer t = { .kind = kind, .step = step, .call_index = idx };
    int slot = -1;

    for (int i = 0; i < MAX_TIMERS && slot < 0; i++)
        if (!r->timers[i])
            slot = i;
    if (slot < 0) /* full: the timer still runs; fini just cannot cancel the one in slot 0 */
        slot = 0;
    t.reserved_ = (uint32_t)slot + 1;
    struct tr_msg *m = tr_msg_make(TR_MSG_RUN_TIMER, &t, sizeof t);
    if (tr_timer_start(ctx, ms, m, &r->timers[slot]) != 0) {
        tr_msg_free(m);
        r->timers[slot] = 0;
    }
}

static void timers_cancel(struct tr_ctx *ctx, struct run_actor *r)
{
    for (int i = 0; i < MAX_TIMERS; i++) {
        if (r->timers[i])
            tr_timer_cancel(ctx, r->timers[i]);
        r->timers[i] = 0;
    }
}

/* ---- exit ------------------------------------------------------------------- */

static void run_exit(struct tr_ctx *ctx, struct run_actor *r, int reason)
{
    struct tr_run_exit ex = { .run_id = r->run_id, .reason = reason };

    if (r->stopping)
        return;
    r->stopping = true;
    if (reason == 1)
        tr_log(TR_LOG_WARN, "run %s: fenced (epoch %" PRIu64 " is stale); stopping", r->s.run_text, r->s.epoch);
    if (r->env->manager_actor)
        tr_tell(ctx, r->env->manager_actor, TR_MSG_RUN_EXITED, &ex, sizeof ex);
    tr_stop(ctx, tr_self(ctx));
}

/* ---- the pump --------------------------------------------------------------- */

static void want_refold(struct tr_ctx *ctx, struct run_actor *r, uint64_t delay_ms)
{
    r->refold_wanted = true;
    r->v.resync = true;
    r->resync_at_us = (int64_t)tr_wall_us(ctx) + (int64_t)delay_ms * 1000;
    if (delay_ms)
        arm(ctx, r, TR_RUN_TIMER_KICK, 0, 0, delay_ms);
}

/* Queue the append of action a for send_unsent. Its slot in r->appends is
 * taken only when it is sent; the core counts it in flight from now on
 * (tr_run_performed), and never has more than MAX_APPENDS in flight. */
static int queue_append(struct run_actor *r, const struct tr_run_action *a)
{
    if (r->n_unsent >= MAX_APPENDS)
        return TR_EFULL;
    struct tr_msg *m = tr_msg_new(TR_MSG_STATE_APPEND, (uint32_t)(sizeof(struct tr_append_msg) + a->len + a->blob_len));
    struct tr_append_msg *am = (struct tr_append_msg *)m->data;

    memset(am, 0, sizeof *am);
    am->run_id = r->run_id;
    am->epoch = r->s.epoch;
    am->seq = r->s.next_seq;
    am->writer = r->writer;
    am->base_seq = r->base_seq;
    am->len = (uint32_t)a->len;
    am->blob_len = (uint32_t)a->blob_len;
    memcpy(am->event, a->buf, a->len);
    if (a->blob_len)
        memcpy(am->event + a->len, a->blob, a->blob_len);
    r->unsent[r->n_unsent].m = m;
    r->unsent[r->n_unsent].seq = r->s.next_seq;
    r->n_unsent++;
    return TR_OK;
}

/* Send the queued appends, in order. They are folded already, so one that
 * cannot be sent (nor any after it: their seqs would leave a gap) is
 * dropped and the run refolds from the store, as after a transport error.
 *
 * Lazy or urgent: appends are lazy (TR_APPEND_LAZY, raft.h) when the run
 * goes on to wait for its model call, which does not wait for them
 * (invariant 2 of run_decide.c); the state service then holds them briefly
 * for the entry that the reply's urgent appends start, and a write step
 * costs one raft entry instead of two. Appends are urgent otherwise, and an
 * urgent send carries the lazy ones before it along (the service keeps
 * order). A run that comes to wait on lazy appends without sending any new
 * ones (a retry that waits for its acks) urges them. */
static void send_unsent(struct tr_ctx *ctx, struct run_actor *r, bool lazy)
{
    uint32_t i = 0;
    int rv = TR_OK;

    if (!lazy)
        for (int k = 0; k < MAX_APPENDS; k++)
            r->appends[k].lazy = false;
    for (; i < r->n_unsent; i++) {
        int slot = -1;
        uint64_t corr = 0;
        for (int k = 0; k < MAX_APPENDS && slot < 0; k++)
            if (!r->appends[k].corr)
                slot = k;
        if (slot < 0) {
            rv = TR_EFULL;
            break;
        }
        ((struct tr_append_msg *)r->unsent[i].m->data)->flags = lazy ? TR_APPEND_LAZY : 0;
        if ((rv = tr_request(ctx, r->env->state_actor, r->unsent[i].m, APPEND_TIMEOUT_MS, &corr)) != TR_OK)
            break;
        r->appends[slot].corr = corr;
        r->appends[slot].seq = r->unsent[i].seq;
        r->appends[slot].lazy = lazy;
    }
    if (i < r->n_unsent) {
        tr_log(TR_LOG_DEBUG, "run %s: %u append(s) not sent: %s", r->s.run_text, r->n_unsent - i, tr_strerror(rv));
        for (; i < r->n_unsent; i++) {
            tr_msg_free(r->unsent[i].m);
            r->v.appends_inflight--;
        }
        want_refold(ctx, r, BACKOFF_MS);
    }
    r->n_unsent = 0;
}

static int send_call(struct tr_ctx *ctx, const tr_actor_id *actors, uint32_t type, const struct tr_run_action *a,
                     uint64_t *corr)
{
    int sched = tr_ctx_sched(ctx);
    struct tr_msg *m;
    int rv;

    if (!actors || !actors[sched])
        return TR_ENOACTOR;
    m = tr_msg_make(type, a->json, (uint32_t)a->json_len);
    if ((rv = tr_request(ctx, actors[sched], m, a->timeout_ms, corr)) != 0)
        tr_msg_free(m);
    return rv;
}

/* The llm call of action a: its body as is behind the TR_MSG_LLM_CALL
 * header (actors.h). */
static int send_llm_call(struct tr_ctx *ctx, struct run_actor *r, const struct tr_run_action *a)
{
    const tr_actor_id *actors = r->env->llm_actors;
    int sched = tr_ctx_sched(ctx);
    struct tr_msg *m;
    int rv;

    if (!actors || !actors[sched])
        return TR_ENOACTOR;
    m = tr_llm_call_msg(r->s.model, r->s.tenant, r->s.run_text, a->step, a->json, a->json_len);
    if ((rv = tr_request(ctx, actors[sched], m, a->timeout_ms, &r->llm_corr)) != 0)
        tr_msg_free(m);
    return rv;
}

static void pump_actions(struct tr_ctx *ctx, struct run_actor *r);

/* Tell the state service to send the lazy appends still waiting there. */
static void urge_lazy(struct tr_ctx *ctx, struct run_actor *r)
{
    bool any = false;
    for (int k = 0; k < MAX_APPENDS; k++) {
        any |= r->appends[k].corr && r->appends[k].lazy;
        r->appends[k].lazy = false;
    }
    if (any)
        (void)tr_tell(ctx, r->env->state_actor, TR_MSG_STATE_URGE, NULL, 0); /* else: linger_ms bounds it */
}

static void pump(struct tr_ctx *ctx, struct run_actor *r)
{
    pump_actions(ctx, r);
    if (r->stopping) { /* exiting: nothing more will be journaled from here */
        for (uint32_t i = 0; i < r->n_unsent; i++)
            tr_msg_free(r->unsent[i].m);
        r->n_unsent = 0;
        return;
    }
    bool lazy = r->v.llm_out != 0;
    if (r->n_unsent > 0)
        send_unsent(ctx, r, lazy);
    else if (!lazy)
        urge_lazy(ctx, r);
}

static void pump_actions(struct tr_ctx *ctx, struct run_actor *r)
{
    struct tr_run_action a;

    if (r->stopping)
        return;
    if (r->refold_wanted && !r->v.appends_inflight && (int64_t)tr_wall_us(ctx) >= r->resync_at_us) {
        int why = load(ctx, r);
        r->refold_wanted = false;
        r->v.resync = false;
        if (why >= 0) {
            run_exit(ctx, r, why);
            return;
        }
    }
    for (int n = 0; n < PUMP_LIMIT; n++) {
        int rv = TR_OK;

        tr_run_decide(&r->s, &r->v, &r->renv, (int64_t)tr_wall_us(ctx), &a);
        switch (a.kind) {
        case TR_RUN_WAIT:
            if (a.budget_wait && !r->budget_timer) {
                tr_log(TR_LOG_INFO, "run %s: tenant %s's budget is spent; waiting", r->s.run_text, r->s.tenant);
                r->budget_timer = true;
                arm(ctx, r, TR_RUN_TIMER_BUDGET, 0, 0, BUDGET_RECHECK_MS);
            }
            /* Only a human can move the run on: free the memory. The
             * runtime ignores the request if a message is already waiting;
             * fini tells the manager when it does happen. */
            if (a.idle && r->env->manager_actor)
                tr_passivate(ctx);
            tr_run_action_free(&a);
            return;
        case TR_RUN_EXIT:
            if (a.exit_reason == 3)
                tr_log(TR_LOG_ERROR, "run %s: cannot continue: %s", r->s.run_text,
                       r->s.fold_error[0] ? r->s.fold_error : "no run.created");
            run_exit(ctx, r, a.exit_reason);
            tr_run_action_free(&a);
            return;
        case TR_RUN_APPEND:
            rv = queue_append(r, &a);
            break;
        case TR_RUN_CALL_LLM:
            rv = send_llm_call(ctx, r, &a);
            r->llm_step = a.step;
            break;
        case TR_RUN_CALL_TOOL:
            rv = send_call(ctx, r->env->tool_actors, TR_MSG_TOOL_CALL, &a, &r->tool_corr[a.call_index]);
            r->tool_step[a.call_index] = a.step;
            break;
        case TR_RUN_ARM_DEADLINE: {
            int64_t now = (int64_t)tr_wall_us(ctx);
            uint64_t ms = a.at_us > now ? (uint64_t)(a.at_us - now + 999) / 1000 : 0;
            arm(ctx, r, TR_RUN_TIMER_DEADLINE, a.step, a.call_index, ms + 1);
            break;
        }
        case TR_RUN_PROPOSE_EXPIRE: {
            /* The state service sees this run's messages in the order decided. */
            send_unsent(ctx, r, false);
            struct tr_msg *m = tr_msg_make(TR_MSG_STATE_PROPOSE, a.buf, (uint32_t)a.len);
            if ((rv = tr_request(ctx, r->env->state_actor, m, PROPOSE_TIMEOUT_MS, &r->propose_corr[a.call_index])))
                tr_msg_free(m);
            break;
        }
        }
        if (rv != TR_OK) {
            /* Not started: nothing to undo; try again a little later. */
            tr_log(TR_LOG_DEBUG, "run %s: action %d not sent: %s", r->s.run_text, a.kind, tr_strerror(rv));
            arm(ctx, r, TR_RUN_TIMER_KICK, 0, 0, BACKOFF_MS);
            tr_run_action_free(&a);
            return;
        }
        tr_run_performed(&r->s, &r->v, &a);
        tr_run_action_free(&a);
    }
    arm(ctx, r, TR_RUN_TIMER_KICK, 0, 0, 1);
}

/* ---- messages --------------------------------------------------------------- */

static void on_append_reply(struct tr_ctx *ctx, struct run_actor *r, int slot, const struct tr_state_reply *rep)
{
    uint64_t seq = r->appends[slot].seq;

    r->appends[slot].corr = 0;
    r->v.appends_inflight--;
    if (rep && (rep->status == TR_EINVAL || rep->status == TR_ETOOBIG)) {
        /* Never proposed: sending it again would fail again. */
        tr_log(TR_LOG_ERROR, "run %s: append %" PRIu64 " refused by the state service: %s", r->s.run_text, seq,
               tr_strerror(rep->status));
        run_exit(ctx, r, 3);
        return;
    }
    if (!rep || rep->status != TR_OK) {
        tr_log(TR_LOG_DEBUG, "run %s: append %" PRIu64 ": %s", r->s.run_text, seq,
               rep ? tr_strerror(rep->status) : "timed out");
        want_refold(ctx, r, BACKOFF_MS);
        return;
    }
    switch (rep->verdict) {
    case TR_FSM_OK:
        if (seq > r->v.acked_seq)
            r->v.acked_seq = seq;
        break;
    case TR_FSM_BAD_SEQ:
        want_refold(ctx, r, 0);
        break;
    case TR_FSM_STALE_EPOCH: {
        /* Fenced, unless the run was moved back to this node under a newer
         * epoch (its note may still be on the way): then start over. */
        uint64_t owner = 0, epoch = 0;
        if (record_owner(r, &owner, &epoch) && owner == r->env->node_id && epoch > r->s.epoch)
            want_refold(ctx, r, 0);
        else
            run_exit(ctx, r, 1);
        break;
    }
    case TR_FSM_TERMINAL:
        run_exit(ctx, r, 0);
        break;
    default:
        tr_log(TR_LOG_ERROR, "run %s: append %" PRIu64 " refused: %s", r->s.run_text, seq,
               tr_fsm_verdict_name(rep->verdict));
        run_exit(ctx, r, 3);
        break;
    }
}

static bool on_reply(struct tr_ctx *ctx, struct run_actor *r, struct tr_msg *msg, bool timeout)
{
    const struct tr_state_reply *rep = NULL;

    if (!timeout && msg->type == TR_MSG_STATE_REPLY && msg->len >= sizeof *rep)
        rep = (const struct tr_state_reply *)msg->data;
    for (int i = 0; i < MAX_APPENDS; i++) {
        if (r->appends[i].corr == msg->corr) {
            on_append_reply(ctx, r, i, rep);
            return true;
        }
    }
    for (int i = 0; i < TR_RUN_MAX_CALLS; i++) {
        if (r->propose_corr[i] && r->propose_corr[i] == msg->corr) {
            /* The outcome comes as an approval.decided note; on a transport
             * error, allow another proposal after a pause. */
            r->propose_corr[i] = 0;
            if (!rep || rep->status != TR_OK) {
                r->v.calls[i].expire_proposed = false;
                arm(ctx, r, TR_RUN_TIMER_KICK, 0, 0, BACKOFF_MS);
            } else {
                want_refold(ctx, r, 0);
            }
            return true;
        }
    }
    if (r->llm_corr && msg->corr == r->llm_corr) {
        struct tr_run_llm_result *res = tr_calloc(1, sizeof *res);

        r->llm_corr = 0;
        if (timeout) {
            res->error_code = tr_strdup("timeout");
            res->error_message = tr_strdup("no answer from the llm actor");
            res->retryable = true;
        } else {
            tr_run_llm_result_read(msg->data, msg->len, res);
        }
        if (tr_run_vol_llm_reply(&r->v, r->llm_step, res) && !res->ok && res->retryable) {
            uint64_t ms = res->retry_after_ms;
            ms = ms < TR_RUN_RETRY_FLOOR_MS ? TR_RUN_RETRY_FLOOR_MS : ms > TR_RUN_RETRY_CAP_MS ? TR_RUN_RETRY_CAP_MS : ms;
            r->v.retry_at_us = (int64_t)tr_wall_us(ctx) + (int64_t)ms * 1000;
            arm(ctx, r, TR_RUN_TIMER_RETRY, r->v.step, 0, ms);
        }
        return true;
    }
    for (int i = 0; i < TR_RUN_MAX_CALLS; i++) {
        if (r->tool_corr[i] && r->tool_corr[i] == msg->corr) {
            struct tr_run_tool_result *res = tr_calloc(1, sizeof *res);

            r->tool_corr[i] = 0;
            if (timeout) {
                res->is_error = true;
                res->error = tr_strdup("the tool call timed out; it may or may not have taken effect");
            } else {
                tr_run_tool_result_read(msg->data, msg->len, res);
            }
            tr_run_vol_tool_reply(&r->v, r->tool_step[i], (uint32_t)i, res);
            return true;
        }
    }
    return false;
}

static void on_note(struct tr_ctx *ctx, struct run_actor *r, const struct tr_state_note *n)
{
    if (n->kind == TR_NOTE_RUN_ENDED ||
        (n->kind == TR_NOTE_RUN_EVENT && n->event_type == troupe_journal_Data_RunCancelled)) {
        run_exit(ctx, r, 0);
        return;
    }
    if (n->kind == TR_NOTE_RUN_ASSIGNED && n->owner != r->env->node_id) {
        run_exit(ctx, r, 1);
        return;
    }
    /* An approval decided, or the run (re)assigned to us under a new epoch:
     * the refold reads the record's epoch and the journal again. */
    want_refold(ctx, r, 0);
}


/* When the run's wall-time cap ends (µs since the epoch). created_us is
 * journal data: the sum saturates rather than overflow. */
static int64_t wall_end(const struct tr_run_state *rs)
{
    int64_t span = (int64_t)rs->timeout_s * 1000000;
    return rs->created_us > INT64_MAX - span ? INT64_MAX : rs->created_us + span;
}

static int run_init(struct tr_ctx *ctx, void *state, void *arg)
{
    struct run_actor *r = state;
    const struct tr_run_arg *a = arg;
    struct tr_run_timer kick = { .kind = TR_RUN_TIMER_KICK };
    int why;

    r->env = a->env;
    r->run_id = a->run_id;
    tr_run_state_init(&r->s, a->run_id, 1);
    r->renv = (struct tr_run_env){
        .context_tokens = r->env->context_tokens,
        .approval_timeout_ms = r->env->approval_timeout_ms,
        .llm_timeout_ms = r->env->llm_timeout_ms,
        .tool_lookup = registry_lookup,
        .tool_ud = r,
        .blob_get = blob_lookup,
        .blob_ud = r,
        .budget_check = budget_check,
        .budget_ud = r,
    };
    why = load(ctx, r);
    if (why >= 0) {
        run_exit(ctx, r, why);
        return 0;
    }
    if (r->s.timeout_s && !r->s.terminal) {
        int64_t end = wall_end(&r->s), now = (int64_t)tr_wall_us(ctx);
        arm(ctx, r, TR_RUN_TIMER_WALL, 0, 0, end > now ? (uint64_t)(end - now) / 1000 + 1 : 0);
    }
    tr_tell(ctx, tr_self(ctx), TR_MSG_RUN_TIMER, &kick, sizeof kick);
    return 0;
}

/* The runtime's timers run on the loop's clock, which lags the wall clock
 * that decide compares deadlines with (the loop caches its time per
 * iteration, and the two clocks may drift apart): a timer can fire a little
 * before the wall-clock instant it was armed for, and decide then waits for
 * an event that nothing would send. Arm the timer again for what is left. */
static uint64_t ms_until(int64_t at_us, int64_t now_us)
{
    return at_us > now_us ? (uint64_t)(at_us - now_us + 999) / 1000 + 1 : 0;
}

static void rearm_early(struct tr_ctx *ctx, struct run_actor *r, const struct tr_run_timer *t)
{
    int64_t now = (int64_t)tr_wall_us(ctx);

    if (r->stopping)
        return;
    switch (t->kind) {
    case TR_RUN_TIMER_RETRY:
        if (r->v.llm && !r->v.llm->ok && r->v.llm->retryable && now < r->v.retry_at_us)
            arm(ctx, r, TR_RUN_TIMER_RETRY, r->v.step, 0, ms_until(r->v.retry_at_us, now));
        break;
    case TR_RUN_TIMER_WALL:
        if (r->s.timeout_s && !r->s.terminal) {
            int64_t end = wall_end(&r->s);
            if (now < end)
                arm(ctx, r, TR_RUN_TIMER_WALL, 0, 0, ms_until(end, now));
        }
        break;
    case TR_RUN_TIMER_KICK:
        if (r->refold_wanted && now < r->resync_at_us)
            arm(ctx, r, TR_RUN_TIMER_KICK, 0, 0, ms_until(r->resync_at_us, now));
        break;
    default:
        break;
    }
}

static int run_receive(struct tr_ctx *ctx, void *state, struct tr_msg *msg)
{
    struct run_actor *r = state;

    if (r->stopping)
        return 0;
    if (msg->type == TR_MSG_TIMEOUT) {
        on_reply(ctx, r, msg, true);
    } else if (msg->flags & TR_MSGF_REPLY) {
        on_reply(ctx, r, msg, false);
    } else if (msg->type == TR_MSG_RUN_NOTE && msg->len >= sizeof(struct tr_state_note)) {
        on_note(ctx, r, (const struct tr_state_note *)msg->data);
    } else if (msg->type == TR_MSG_RUN_TIMER && msg->len >= sizeof(struct tr_run_timer)) {
        const struct tr_run_timer *t = (const struct tr_run_timer *)msg->data;
        if (t->reserved_ >= 1 && t->reserved_ <= MAX_TIMERS)
            r->timers[t->reserved_ - 1] = 0;
        /* A deadline timer lets decide look again: it proposes the expiry,
         * or arms a new timer if the deadline is not reached yet. */
        if (t->kind == TR_RUN_TIMER_DEADLINE && t->step == r->v.step && t->call_index < TR_RUN_MAX_CALLS)
            r->v.calls[t->call_index].deadline_armed = false;
        if (t->kind == TR_RUN_TIMER_BUDGET)
            r->budget_timer = false;
        pump(ctx, r);
        rearm_early(ctx, r, t);
        return 0;
    }
    pump(ctx, r);
    return 0;
}

static void run_fini(struct tr_ctx *ctx, void *state, enum tr_stop_reason why)
{
    struct run_actor *r = state;

    /* A passivated run keeps its timers: a deadline re-creates it. */
    if (why == TR_STOP_PASSIVATE) {
        struct tr_run_exit ex = { .run_id = r->run_id, .reason = 2 };
        tr_tell(ctx, r->env->manager_actor, TR_MSG_RUN_EXITED, &ex, sizeof ex);
    } else {
        timers_cancel(ctx, r);
    }
    tr_run_state_free(&r->s);
    tr_run_vol_free(&r->v);
    tools_free(r);
}

const struct tr_behavior tr_run_behavior = {
    .name = "run",
    .state_size = sizeof(struct run_actor),
    .init = run_init,
    .receive = run_receive,
    .fini = run_fini,
};
