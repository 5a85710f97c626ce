/* The run actor and the run manager in the runtime's deterministic mode,
 * against the real FSM (raft/fsm.c, applied through its test seam
 * tr_fsm_apply_at by a small state-service double) and llm/tool actor
 * doubles that speak the actors.h protocols. Virtual time: timers (approval
 * deadlines, retries, backoffs) fire only when the test advances it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "actors/llm.h"
#include "actors/run.h"
#include "raft/fsm.h"
#include "records.h"
#include "schemas/command_generated.h"
#include "schemas/journal_generated.h"
#include "storage/storage.h"

#define J(x) troupe_journal_##x
#define C(x) troupe_cmd_##x
#define MAX_KEYS 256

struct world {
    struct tr_rt *rt;
    struct tr_store *store;
    struct tr_fsm *fsm;
    char dir[64];
    uint64_t index;
    tr_actor_id svc, llm, tool, mgr;
    struct tr_node_env env;
    /* knobs of the state-service double */
    uint32_t appends_seen;
    uint32_t faulty;            /* the first n appends may fail: */
    uint32_t fail_one_in;       /* refused, not applied (TR_ENOTLEADER), about one in n */
    uint32_t lose_one_in;       /* applied, reply lost (the requester times out), one in n */
    uint64_t rng;
    uint32_t failed, lost;
    /* observations */
    char keys[MAX_KEYS][65];
    uint32_t n_keys;
    uint32_t dup_keys;
    uint32_t llm_calls;
    uint32_t max_active;
    uint64_t writers[16];       /* distinct writer ids seen in appends (raft.h "Writer ids") */
    uint32_t n_writers;
    uint32_t writerless;        /* appends without one */
    uint64_t seen_runs[64];
    uint32_t n_seen;
    /* the llm double keeps a "flip" run's first call unanswered until
     * MSG_RELEASE (test_registry_change_reaches_a_live_run) */
    struct tr_msg *held;
    char *held_answer;
    /* test_pipelined_after_a_lost_leader: the state double answers the next
     * tool.completed TR_ENOTLEADER but keeps its entry (stash), then holds
     * every append for OUTAGE_MS (no leader), then commits the stash first. */
    bool defer_armed;
    uint8_t *stash;
    size_t stash_len;
    bool outage;
    struct tr_msg *queued[32];
    uint32_t n_queued;
    bool stash_applied;
    /* the tool double answers "lag" LAG_MS late */
    struct tr_msg *lag_held;
};

enum { MSG_RELEASE = TR_MSG_USER + 900, MSG_OUTAGE_END, MSG_LAG };
#define OUTAGE_MS 1000
#define LAG_MS 5

static struct world W;

/* ---- helpers ------------------------------------------------------------------ */

static bool run_terminal(uint64_t id, struct run_rec *out)
{
    unsigned char key[8];
    void *val = NULL;
    size_t len = 0;
    struct run_rec r;

    tr_run_key(id, key);
    if (tr_store_get(W.store, NULL, TR_CF_RUNS, key, 8, &val, &len, NULL) != 0)
        return false;
    assert_int_equal(tr_run_rec_decode(val, len, &r), 0);
    tr_free(val);
    bool t = tr_run_status_terminal(r.status);
    if (out)
        *out = r;
    else
        tr_run_rec_free(&r);
    return t;
}

static const struct tr_fsm_result *apply(const void *buf, size_t len)
{
    struct tr_fsm_result *res = NULL;
    assert_int_equal(tr_fsm_apply_at(W.fsm, ++W.index, buf, len, &res), 0);
    return res;
}

static const struct tr_fsm_result *apply_cmd(struct tr_fb_builder *b, uint8_t type, tr_fb_ref op)
{
    size_t len;
    C(Command_start)(b);
    C(Command_add_time_us)(b, (int64_t)1767225600000000LL);
    C(Command_add_op_type)(b, type);
    C(Command_add_op)(b, op);
    C(Command_finish)(b, C(Command_end)(b));
    const uint8_t *p = tr_fb_builder_data(b, &len);
    const struct tr_fsm_result *r = apply(p, len);
    tr_fb_builder_free(b);
    return r;
}

static void register_tool(const char *name, int8_t risk, uint32_t timeout_ms, const char *schema)
{
    struct tr_fb_builder b;
    tr_fb_builder_init(&b);
    tr_fb_ref n = tr_fb_create_str(&b, name);
    tr_fb_ref d = tr_fb_create_str(&b, "a test tool");
    tr_fb_ref s = tr_fb_create_str(&b, schema);
    tr_fb_ref cfg = tr_fb_create_str(&b, "{\"url\":\"http://127.0.0.1:9/\"}");
    C(Tool_start)(&b);
    C(Tool_add_name)(&b, n);
    C(Tool_add_description)(&b, d);
    C(Tool_add_input_schema)(&b, s);
    C(Tool_add_risk)(&b, risk);
    C(Tool_add_config)(&b, cfg);
    C(Tool_add_timeout_ms)(&b, timeout_ms);
    tr_fb_ref t = C(Tool_end)(&b);
    C(ToolRegister_start)(&b);
    C(ToolRegister_add_tool)(&b, t);
    const struct tr_fsm_result *r = apply_cmd(&b, C(Op_ToolRegister), C(ToolRegister_end)(&b));
    assert_int_equal(r->verdict, TR_FSM_OK);
}

static void create_run(uint64_t id, const char *goal)
{
    struct tr_fb_builder b;
    char text[TR_RUN_ID_TEXT_LEN];
    uint8_t dig[32];

    tr_run_id_text(id, text);
    memset(dig, (int)id, sizeof dig);
    tr_fb_builder_init(&b);
    tr_fb_ref rid = tr_fb_create_str(&b, text);
    tr_fb_ref tenant = tr_fb_create_str(&b, "acme");
    tr_fb_ref g = tr_fb_create_str(&b, goal);
    tr_fb_ref d = tr_fb_create_bytes(&b, dig, sizeof dig);
    tr_fb_ref model = tr_fb_create_str(&b, "mock");
    tr_fb_ref tools[6] = { tr_fb_create_str(&b, "search"), tr_fb_create_str(&b, "wire"),
                           tr_fb_create_str(&b, "slow"), tr_fb_create_str(&b, "big"),
                           tr_fb_create_str(&b, "flip"), tr_fb_create_str(&b, "lag") };
    tr_fb_ref tv = J(AgentConfig_create_tools)(&b, tools, 6);
    J(AgentConfig_start)(&b);
    J(AgentConfig_add_model)(&b, model);
    J(AgentConfig_add_tools)(&b, tv);
    if (strstr(goal, "cap"))
        J(AgentConfig_add_max_steps)(&b, 1);
    tr_fb_ref agent = J(AgentConfig_end)(&b);
    C(RunCreate_start)(&b);
    C(RunCreate_add_run_id)(&b, rid);
    C(RunCreate_add_tenant)(&b, tenant);
    C(RunCreate_add_goal)(&b, g);
    C(RunCreate_add_request_digest)(&b, d);
    C(RunCreate_add_agent)(&b, agent);
    C(RunCreate_add_owner_node)(&b, 1);
    C(RunCreate_add_epoch)(&b, 1);
    const struct tr_fsm_result *r = apply_cmd(&b, C(Op_RunCreate), C(RunCreate_end)(&b));
    assert_int_equal(r->verdict, TR_FSM_OK);
}

static void decide_approval(uint64_t id, int decision)
{
    struct tr_fb_builder b;
    struct run_rec r;
    char text[TR_RUN_ID_TEXT_LEN];

    assert_false(run_terminal(id, &r));
    assert_int_equal(r.status, J(RunStatus_WaitingApproval));
    assert_non_null(r.pending_approval);
    tr_run_id_text(id, text);
    tr_fb_builder_init(&b);
    tr_fb_ref aid = tr_fb_create_str(&b, r.pending_approval);
    tr_fb_ref rid = tr_fb_create_str(&b, text);
    tr_fb_ref by = tr_fb_create_str(&b, "alice");
    C(ApprovalDecide_start)(&b);
    C(ApprovalDecide_add_approval_id)(&b, aid);
    C(ApprovalDecide_add_run_id)(&b, rid);
    C(ApprovalDecide_add_decision)(&b, (int8_t)decision);
    C(ApprovalDecide_add_decided_by)(&b, by);
    const struct tr_fsm_result *res = apply_cmd(&b, C(Op_ApprovalDecide), C(ApprovalDecide_end)(&b));
    assert_int_equal(res->verdict, TR_FSM_OK);
    tr_run_rec_free(&r);
}

static void cancel_run(uint64_t id)
{
    struct tr_fb_builder b;
    char text[TR_RUN_ID_TEXT_LEN];

    tr_run_id_text(id, text);
    tr_fb_builder_init(&b);
    tr_fb_ref rid = tr_fb_create_str(&b, text);
    C(RunCancel_start)(&b);
    C(RunCancel_add_run_id)(&b, rid);
    const struct tr_fsm_result *res = apply_cmd(&b, C(Op_RunCancel), C(RunCancel_end)(&b));
    assert_int_equal(res->verdict, TR_FSM_OK);
}

/* Types of a run's journal, in order. */
static uint32_t journal_types(uint64_t id, int *types, uint32_t cap)
{
    struct tr_journal_iter *it;
    uint32_t n = 0;
    uint64_t seq;
    const void *ev;
    size_t len;

    assert_int_equal(tr_journal_iter_open(W.store, NULL, id, 1, &it, NULL), 0);
    while (tr_journal_iter_next(it, &seq, &ev, &len, NULL) == 1) {
        const struct J(Event) *e = J(Event_verify_as_root)(ev, len, NULL);
        assert_non_null(e);
        assert_int_equal(J(Event_seq)(e), n + 1);
        if (n < cap)
            types[n] = J(Event_data_type)(e);
        n++;
    }
    tr_journal_iter_close(it);
    return n;
}

/* The status of a run that has ended (-1 while it has not). */
static int terminal_status(uint64_t id)
{
    struct run_rec r;
    memset(&r, 0, sizeof r);
    int status = run_terminal(id, &r) ? r.status : -1;
    tr_run_rec_free(&r);
    return status;
}

/* A copy of the event at seq of a run's journal; false past its end. */
static bool journal_event(uint64_t id, uint64_t seq, uint8_t **out, size_t *out_len)
{
    struct tr_journal_iter *it;
    uint64_t at;
    const void *ev;
    size_t len;
    bool found = false;

    assert_int_equal(tr_journal_iter_open(W.store, NULL, id, seq, &it, NULL), 0);
    if (tr_journal_iter_next(it, &at, &ev, &len, NULL) == 1 && at == seq) {
        *out = tr_memdup(ev, len);
        *out_len = len;
        found = true;
    }
    tr_journal_iter_close(it);
    return found;
}

/* A copy of the first event of `type` in a run's journal. */
static bool journal_find(uint64_t id, int type, uint8_t **out, size_t *out_len)
{
    uint8_t *ev;
    size_t len;

    for (uint64_t seq = 1; journal_event(id, seq, &ev, &len); seq++) {
        const struct J(Event) *e = J(Event_verify_as_root)(ev, len, NULL);
        if (e != NULL && J(Event_data_type)(e) == type) {
            *out = ev;
            *out_len = len;
            return true;
        }
        tr_free(ev);
    }
    return false;
}

static uint32_t count_type(uint64_t id, int type)
{
    int t[512];
    uint32_t n = journal_types(id, t, 512), c = 0;
    for (uint32_t i = 0; i < n && i < 512; i++)
        c += t[i] == type;
    return c;
}

/* Run the world until every listed run is terminal, advancing virtual time
 * in small steps when nothing is left to deliver. */
static void settle(const uint64_t *ids, int n, uint64_t max_ms)
{
    for (uint64_t t = 0; t <= max_ms; t += 50) {
        tr_rt_run_until_idle(W.rt, 1000000);
        bool all = true;
        for (int i = 0; i < n; i++)
            all = all && run_terminal(ids[i], NULL);
        if (all)
            return;
        tr_rt_advance(W.rt, 50);
    }
    for (int i = 0; i < n; i++) {
        int t[64];
        uint32_t k = journal_types(ids[i], t, 64);
        fprintf(stderr, "run %llu journal:", (unsigned long long)ids[i]);
        for (uint32_t j = 0; j < k && j < 64; j++)
            fprintf(stderr, " %s", J(Data_name)(t[j]));
        fprintf(stderr, "\n");
    }
    fail_msg("runs not terminal after %llu ms of virtual time", (unsigned long long)max_ms);
}

/* ---- the state-service double ------------------------------------------------- */

static void reply(struct tr_ctx *ctx, const struct tr_msg *req, const struct tr_state_reply *r)
{
    struct tr_msg *m = tr_msg_make(TR_MSG_STATE_REPLY, r, sizeof *r);
    if (tr_reply(ctx, req, m) != 0)
        tr_msg_free(m);
}

static bool is_tool_completed(const struct tr_append_msg *am)
{
    const struct J(Event) *e = J(Event_verify_as_root)(am->event, am->len, NULL);
    return e != NULL && J(Event_data_type)(e) == J(Data_ToolCompleted);
}

static void svc_append(struct tr_ctx *ctx, struct tr_msg *msg)
{
    struct tr_state_reply r = { .status = TR_OK };
    const struct tr_append_msg *am = (const struct tr_append_msg *)msg->data;
    struct tr_fb_builder b;
    char text[TR_RUN_ID_TEXT_LEN];
    size_t len;

    assert_true(msg->len >= sizeof *am + am->len + am->blob_len);
    W.appends_seen++;
    if (am->writer == 0)
        W.writerless++;
    /* It read at least run.created, and never past what it appends after. */
    assert_true(am->base_seq >= 1 && am->base_seq < am->seq);
    bool known = false;
    for (uint32_t i = 0; i < W.n_writers; i++)
        known = known || W.writers[i] == am->writer;
    if (!known && W.n_writers < 16)
        W.writers[W.n_writers++] = am->writer;
    W.rng = W.rng * 6364136223846793005ULL + 1442695040888963407ULL;
    uint32_t dice = (uint32_t)(W.rng >> 33);
    bool faulty = W.appends_seen <= W.faulty;
    bool lose = faulty && W.lose_one_in && dice % W.lose_one_in == 0;
    if (faulty && W.fail_one_in && (dice >> 8) % W.fail_one_in == 0) {
        W.failed++;
        r.status = TR_ENOTLEADER;
        reply(ctx, msg, &r);
        return;
    }
    tr_run_id_text(am->run_id, text);
    tr_fb_builder_init(&b);
    tr_fb_ref rid = tr_fb_create_str(&b, text);
    tr_fb_ref ev = C(Append_create_event)(&b, am->event, am->len);
    tr_fb_ref blob = am->blob_len ? tr_fb_create_bytes(&b, am->event + am->len, am->blob_len) : 0;
    C(Append_start)(&b);
    C(Append_add_run_id)(&b, rid);
    C(Append_add_epoch)(&b, am->epoch);
    C(Append_add_seq)(&b, am->seq);
    C(Append_add_writer)(&b, am->writer);
    C(Append_add_base_seq)(&b, am->base_seq);
    C(Append_add_event)(&b, ev);
    C(Append_add_blob)(&b, blob);
    tr_fb_ref a = C(Append_end)(&b);
    tr_fb_ref vec = C(AppendBatch_create_appends)(&b, &a, 1);
    C(AppendBatch_start)(&b);
    C(AppendBatch_add_appends)(&b, vec);
    tr_fb_ref batch = C(AppendBatch_end)(&b);
    C(Command_start)(&b);
    C(Command_add_time_us)(&b, (int64_t)tr_wall_us(ctx));
    C(Command_add_op_AppendBatch)(&b, batch);
    C(Command_finish)(&b, C(Command_end)(&b));
    const uint8_t *p = tr_fb_builder_data(&b, &len);
    if (W.defer_armed && is_tool_completed(am)) {
        /* The leader took it into its log and died: the sender hears
         * TR_ENOTLEADER; the entry is committed later, by the next
         * leader, before anything sent meanwhile. */
        W.defer_armed = false;
        W.stash = tr_memdup(p, len);
        W.stash_len = len;
        W.outage = true;
        uint64_t t;
        assert_int_equal(tr_timer_start(ctx, OUTAGE_MS, tr_msg_new(MSG_OUTAGE_END, 0), &t), 0);
        tr_fb_builder_free(&b);
        r.status = TR_ENOTLEADER;
        reply(ctx, msg, &r);
        return;
    }
    const struct tr_fsm_result *res = apply(p, len);
    tr_fb_builder_free(&b);
    assert_int_equal(res->n_appends, 1);
    r.verdict = res->appends[0].verdict;
    r.seq = res->appends[0].seq;
    r.raft_index = W.index;
    if (lose) {
        W.lost++;
        return; /* applied; the reply is lost: the requester times out */
    }
    reply(ctx, msg, &r);
}

static int svc_receive(struct tr_ctx *ctx, void *st, struct tr_msg *msg)
{
    struct tr_state_reply r = { .status = TR_OK };

    if (msg->type == MSG_OUTAGE_END) {
        /* A new leader: the old entry first, then what waited, in order. */
        apply(W.stash, W.stash_len);
        tr_free(W.stash);
        W.stash = NULL;
        W.stash_applied = true;
        W.outage = false;
        for (uint32_t i = 0; i < W.n_queued; i++) {
            svc_append(ctx, W.queued[i]);
            tr_msg_free(W.queued[i]);
        }
        W.n_queued = 0;
    } else if (msg->type == TR_MSG_STATE_APPEND && W.outage) {
        assert_true(W.n_queued < 32);
        tr_msg_keep(ctx, msg);
        W.queued[W.n_queued++] = msg;
    } else if (msg->type == TR_MSG_STATE_APPEND) {
        svc_append(ctx, msg);
    } else if (msg->type == TR_MSG_STATE_PROPOSE) {
        const struct tr_fsm_result *res = apply(msg->data, msg->len);
        r.verdict = res->verdict;
        r.raft_index = W.index;
        reply(ctx, msg, &r);
    }
    return 0;
}

static const struct tr_behavior svc_behavior = { .name = "state-double", .receive = svc_receive };

/* ---- the llm double: the goal names the script --------------------------------- */

static char *llm_answer(const char *goal, uint32_t step)
{
    json_t *r;
    const char *tool = strstr(goal, "wire")   ? "wire"
                       : strstr(goal, "hang") ? "slow"
                       : strstr(goal, "big")  ? "big"
                       : strstr(goal, "flip") ? "flip"
                                              : "search";

    if (step == 1 && strstr(goal, "pair"))
        r = json_pack("{s:b,s:n,s:[{s:s,s:s,s:s},{s:s,s:s,s:s}],s:s,s:{s:i,s:i},s:i}", "ok", 1, "content",
                      "tool_calls", "id", "c1", "name", "lag", "arguments", "{\"q\":\"x\"}", "id", "c2", "name",
                      "search", "arguments", "{\"q\":\"y\"}", "finish_reason", "tool_calls", "usage",
                      "prompt_tokens", 100, "completion_tokens", 10, "cost_micro_usd", 1500);
    else if (step == 1)
        r = json_pack("{s:b,s:n,s:[{s:s,s:s,s:s}],s:s,s:{s:i,s:i},s:i}", "ok", 1, "content", "tool_calls", "id",
                      "c1", "name", tool, "arguments", "{\"q\":\"x\"}", "finish_reason", "tool_calls", "usage",
                      "prompt_tokens", 100, "completion_tokens", 10, "cost_micro_usd", 1500);
    else
        r = json_pack("{s:b,s:s,s:[],s:s,s:{s:i,s:i},s:i}", "ok", 1, "content", "all done", "tool_calls",
                      "finish_reason", "stop", "usage", "prompt_tokens", 200, "completion_tokens", 20,
                      "cost_micro_usd", 2500);
    char *t = json_dumps(r, JSON_COMPACT);
    json_decref(r);
    return t;
}

static int llm_receive(struct tr_ctx *ctx, void *st, struct tr_msg *msg)
{
    if (msg->type == MSG_RELEASE && W.held != NULL) {
        struct tr_msg *m = h_llm_result_msg(W.held_answer);
        if (tr_reply(ctx, W.held, m) != 0)
            tr_msg_free(m);
        tr_msg_free(W.held);
        free(W.held_answer);
        W.held = NULL;
        W.held_answer = NULL;
        return 0;
    }
    if (msg->type != TR_MSG_LLM_CALL)
        return 0;
    struct tr_llm_call_view cv;
    assert_int_equal(tr_llm_call_parse(msg->data, msg->len, &cv, NULL), 0);
    json_t *req = json_loadb(cv.body, cv.body_len, 0, NULL);
    assert_non_null(req);
    uint64_t id = 0;
    assert_int_equal(tr_run_id_from_text(cv.run_id, cv.run_id_len, &id), 0);
    uint32_t step = cv.step;
    const char *goal = json_string_value(json_object_get(json_array_get(json_object_get(req, "messages"), 1), "content"));
    assert_non_null(goal);
    W.llm_calls++;
    /* Admission: at most max_active_runs runs in progress at once. */
    bool known = false;
    for (uint32_t i = 0; i < W.n_seen; i++)
        known = known || W.seen_runs[i] == id;
    if (!known && W.n_seen < 64)
        W.seen_runs[W.n_seen++] = id;
    uint32_t active = 0;
    for (uint32_t i = 0; i < W.n_seen; i++)
        active += !run_terminal(W.seen_runs[i], NULL);
    if (active > W.max_active)
        W.max_active = active;
    char *text = llm_answer(goal, step);
    if (strstr(goal, "flip") && step == 1 && W.held == NULL) {
        tr_msg_keep(ctx, msg);
        W.held = msg;
        W.held_answer = text;
        json_decref(req);
        return 0;
    }
    struct tr_msg *m = h_llm_result_msg(text);
    free(text);
    if (tr_reply(ctx, msg, m) != 0)
        tr_msg_free(m);
    json_decref(req);
    return 0;
}

static const struct tr_behavior llm_behavior = { .name = "llm-double", .receive = llm_receive };

static const char tool_ok[] = "{\"ok\":true,\"result\":\"found it\",\"is_error\":false,\"error\":null,"
                              "\"status\":200,\"duration_ms\":4,\"truncated\":false}";

static int tool_receive(struct tr_ctx *ctx, void *st, struct tr_msg *msg)
{
    if (msg->type == MSG_LAG && W.lag_held != NULL) {
        struct tr_msg *m = h_tool_result_msg(tool_ok);
        if (tr_reply(ctx, W.lag_held, m) != 0)
            tr_msg_free(m);
        tr_msg_free(W.lag_held);
        W.lag_held = NULL;
        return 0;
    }
    if (msg->type != TR_MSG_TOOL_CALL)
        return 0;
    struct tr_tool_call_rec req;
    assert_int_equal(tr_tool_call_read(msg->data, msg->len, &req), 0);
    const char *key = req.idempotency_key, *name = req.name;
    assert_non_null(key);
    assert_non_null(name);
    assert_int_equal(strlen(key), 64);
    for (uint32_t i = 0; i < W.n_keys; i++)
        if (strcmp(W.keys[i], key) == 0)
            W.dup_keys++;
    if (W.n_keys < MAX_KEYS)
        snprintf(W.keys[W.n_keys++], 65, "%s", key);
    if (strcmp(name, "big") == 0) {
        char *big = tr_malloc(10001);
        memset(big, 'z', 10000);
        big[10000] = '\0';
        json_t *r = json_pack("{s:b,s:s,s:b}", "ok", 1, "result", big, "is_error", 0);
        char *t = json_dumps(r, JSON_COMPACT);
        struct tr_msg *m = h_tool_result_msg(t);
        if (tr_reply(ctx, msg, m) != 0)
            tr_msg_free(m);
        free(t);
        json_decref(r);
        tr_free(big);
    } else if (strcmp(name, "lag") == 0 && W.lag_held == NULL) {
        uint64_t t;
        tr_msg_keep(ctx, msg);
        W.lag_held = msg;
        assert_int_equal(tr_timer_start(ctx, LAG_MS, tr_msg_new(MSG_LAG, 0), &t), 0);
    } else if (strcmp(name, "slow") != 0) {
        struct tr_msg *m = h_tool_result_msg(tool_ok);
        if (tr_reply(ctx, msg, m) != 0)
            tr_msg_free(m);
    }
    tr_tool_call_free(&req);
    return 0;
}

static const struct tr_behavior tool_behavior = { .name = "tool-double", .receive = tool_receive };

/* ---- world ---------------------------------------------------------------------- */

static tr_actor_id spawn(const struct tr_behavior *b)
{
    struct tr_spawn_opts o = { .behavior = b };
    tr_actor_id id = 0;
    assert_int_equal(tr_spawn(W.rt, &o, &id), 0);
    return id;
}

static int setup(void **st)
{
    struct tr_rt_opts ro = { .deterministic = 1, .seed = 7, .start_wall_us = 1767225600000000ULL };
    struct tr_fsm_opts fo = { 0 };
    struct tr_err err;

    memset(&W, 0, sizeof W);
    snprintf(W.dir, sizeof W.dir, "/tmp/tr-run-actor-XXXXXX");
    assert_non_null(mkdtemp(W.dir));
    assert_int_equal(tr_store_open(W.dir, NULL, &W.store, &err), 0);
    assert_int_equal(tr_rt_new(&ro, &W.rt), 0);
    W.svc = spawn(&svc_behavior);
    W.llm = spawn(&llm_behavior);
    W.tool = spawn(&tool_behavior);
    W.env = (struct tr_node_env){
        .node_id = 1,
        .store = W.store,
        .state_actor = W.svc,
        .llm_actors = &W.llm,
        .tool_actors = &W.tool,
        .n_schedulers = 1,
        .max_active_runs = 2,
        .llm_timeout_ms = 1000,
        .approval_timeout_ms = 60000,
        .context_tokens = 8000,
    };
    assert_int_equal(tr_run_manager_spawn(W.rt, &W.env, 0, &W.mgr), 0);
    W.env.manager_actor = W.mgr;
    fo.store = W.store;
    fo.rt = W.rt;
    fo.listener = W.mgr;
    tr_fsm_new(&fo, &W.fsm);
    W.index = tr_store_last_applied(W.store);
    register_tool("search", J(Risk_Read), 1000, "{\"type\":\"object\"}");
    register_tool("wire", J(Risk_Irreversible), 1000, "{\"type\":\"object\"}");
    register_tool("slow", J(Risk_Write), 1000, "{\"type\":\"object\"}");
    register_tool("big", J(Risk_Read), 1000, "true"); /* a boolean schema: any arguments */
    register_tool("flip", J(Risk_Read), 1000, "{\"type\":\"object\"}");
    register_tool("lag", J(Risk_Read), 1000, "{\"type\":\"object\"}");
    return 0;
}

static int teardown(void **st)
{
    char cmd[128];

    tr_rt_shutdown(W.rt);
    for (uint32_t i = 0; i < W.n_queued; i++)
        tr_msg_free(W.queued[i]);
    if (W.lag_held != NULL)
        tr_msg_free(W.lag_held);
    tr_free(W.stash);
    tr_fsm_free(W.fsm);
    tr_store_close(W.store);
    snprintf(cmd, sizeof cmd, "rm -rf %s", W.dir);
    assert_int_equal(system(cmd), 0);
    return 0;
}

/* ---- tests ------------------------------------------------------------------------ */

static void test_runs_complete_within_capacity(void **st)
{
    const uint64_t ids[] = { 11, 12, 13, 14, 15 };

    for (int i = 0; i < 5; i++)
        create_run(ids[i], "plain question");
    settle(ids, 5, 10000);
    for (int i = 0; i < 5; i++) {
        struct run_rec r;
        assert_true(run_terminal(ids[i], &r));
        assert_int_equal(r.status, J(RunStatus_Succeeded));
        assert_string_equal(r.output, "all done");
        assert_int_equal(r.step, 2);
        assert_int_equal(r.cost_micro_usd, 1500 + 2500);
        assert_int_equal(r.prompt_tokens, 300);
        tr_run_rec_free(&r);
        assert_int_equal(count_type(ids[i], J(Data_ToolStarted)), 1);
        assert_int_equal(count_type(ids[i], J(Data_RunSucceeded)), 1);
    }
    assert_int_equal(W.n_keys, 5);
    assert_int_equal(W.dup_keys, 0);
    assert_true(W.max_active <= 2);
    assert_int_equal(W.llm_calls, 10);
    /* Every run actor is gone. */
    struct tr_rt_stats s;
    tr_rt_stats(W.rt, &s);
    assert_int_equal(s.actors, 4); /* the doubles and the manager */
}

static void test_approval_passivates_then_approved(void **st)
{
    const uint64_t id = 21;
    struct tr_rt_stats s;

    create_run(id, "wire the money");
    tr_rt_run_until_idle(W.rt, 1000000);
    tr_rt_stats(W.rt, &s);
    assert_int_equal(s.passivated, 1);
    assert_int_equal(W.n_keys, 0);
    decide_approval(id, J(Decision_Approve));
    settle(&id, 1, 5000);
    struct run_rec r;
    assert_true(run_terminal(id, &r));
    assert_int_equal(r.status, J(RunStatus_Succeeded));
    tr_run_rec_free(&r);
    assert_int_equal(W.n_keys, 1);
    assert_int_equal(count_type(id, J(Data_ApprovalDecided)), 1);
}

static void test_approval_expires(void **st)
{
    const uint64_t id = 31;

    create_run(id, "wire it");
    tr_rt_run_until_idle(W.rt, 1000000);
    /* Nobody decides: the deadline (60 s) re-creates the run, which asks
     * for Expired; the agent is told and finishes. */
    tr_rt_advance(W.rt, 61000);
    settle(&id, 1, 5000);
    struct run_rec r;
    assert_true(run_terminal(id, &r));
    assert_int_equal(r.status, J(RunStatus_Succeeded));
    tr_run_rec_free(&r);
    assert_int_equal(W.n_keys, 0);
    assert_int_equal(count_type(id, J(Data_ApprovalDecided)), 1);
    assert_int_equal(count_type(id, J(Data_ToolStarted)), 0);
}

/* A tool switched off while its run waits for the model: the run had read
 * the registry for the request's tool list, and must see the change when it
 * comes to the call (actors/run.c caches registry reads until the tools
 * family is written: tr_store_cf_gen). */
static void test_registry_change_reaches_a_live_run(void **st)
{
    const uint64_t id = 91;

    create_run(id, "flip it");
    tr_rt_run_until_idle(W.rt, 1000000);
    assert_non_null(W.held); /* the model has the request; the run waits */
    assert_int_equal(count_type(id, J(Data_LlmRequested)), 1);

    struct tr_fb_builder b;
    tr_fb_builder_init(&b);
    tr_fb_ref n = tr_fb_create_str(&b, "flip");
    C(ToolSetEnabled_start)(&b);
    C(ToolSetEnabled_add_name)(&b, n);
    C(ToolSetEnabled_add_enabled)(&b, false);
    const struct tr_fsm_result *r = apply_cmd(&b, C(Op_ToolSetEnabled), C(ToolSetEnabled_end)(&b));
    assert_int_equal(r->verdict, TR_FSM_OK);

    assert_int_equal(tr_rt_send(W.rt, W.llm, tr_msg_new(MSG_RELEASE, 0)), 0);
    settle(&id, 1, 5000);
    assert_int_equal(W.n_keys, 0); /* never called */
    assert_int_equal(count_type(id, J(Data_ToolCompleted)), 1);
    uint8_t *ev = NULL;
    size_t len = 0;
    assert_true(journal_find(id, J(Data_ToolCompleted), &ev, &len));
    const struct troupe_journal_Event *e = troupe_journal_Event_verify_as_root(ev, len, NULL);
    assert_non_null(e);
    const struct troupe_journal_ToolCompleted *tc = troupe_journal_Event_data_as_ToolCompleted(e);
    assert_non_null(tc);
    assert_non_null(strstr(troupe_journal_ToolCompleted_error(tc).ptr, "disabled by an operator"));
    tr_free(ev);
}

static void test_cancel_while_tool_runs(void **st)
{
    const uint64_t id = 41;
    struct tr_rt_stats s;

    create_run(id, "hang forever");
    tr_rt_run_until_idle(W.rt, 1000000);
    assert_int_equal(W.n_keys, 1); /* the slow tool got the call */
    assert_false(run_terminal(id, NULL));
    cancel_run(id);
    tr_rt_run_until_idle(W.rt, 1000000);
    struct run_rec r;
    assert_true(run_terminal(id, &r));
    assert_int_equal(r.status, J(RunStatus_Cancelled));
    tr_run_rec_free(&r);
    tr_rt_stats(W.rt, &s);
    assert_int_equal(s.actors, 4);
    /* The late tool timeout finds nobody. */
    tr_rt_advance(W.rt, 20000);
    tr_rt_run_until_idle(W.rt, 1000000);
    assert_int_equal(count_type(id, J(Data_ToolCompleted)), 0);
}

static void test_transport_errors(void **st)
{
    const uint64_t ids[] = { 51, 52 };
    uint32_t failed = 0, lost = 0, reruns = 0;

    for (uint64_t seed = 1; seed <= 12; seed++) {
        if (seed > 1) {
            teardown(st);
            setup(st);
        }
        W.faulty = 100;
        W.fail_one_in = 4; /* refused before apply */
        W.lose_one_in = 5; /* applied, reply lost */
        W.rng = seed;
        create_run(ids[0], "plain one");
        create_run(ids[1], "plain two");
        settle(ids, 2, 300000);
        for (int i = 0; i < 2; i++) {
            struct run_rec r;
            assert_true(run_terminal(ids[i], &r));
            assert_int_equal(r.status, J(RunStatus_Succeeded));
            tr_run_rec_free(&r);
            assert_int_equal(count_type(ids[i], J(Data_LlmCompleted)), 2);
            assert_int_equal(count_type(ids[i], J(Data_ToolStarted)), 1);
            assert_int_equal(count_type(ids[i], J(Data_ToolCompleted)), 1);
            assert_int_equal(count_type(ids[i], J(Data_RunSucceeded)), 1);
        }
        /* A tool may run again after a lost reply, never under another
         * key: two distinct keys in all. */
        assert_int_equal(W.n_keys - W.dup_keys, 2);
        /* Every append names its writer, and each reading of the journal
         * back (two initial ones, one after each failure) is a new one. */
        assert_int_equal(W.writerless, 0);
        if (W.failed + W.lost > 0)
            assert_true(W.n_writers > 2);
        failed += W.failed;
        lost += W.lost;
        reruns += W.dup_keys;
    }
    assert_true(failed >= 10);
    assert_true(lost >= 10);
    (void)reruns;
}

/* The chaos suite's kill_two, step by step. A step calls `lag` (call 0,
 * answered LAG_MS late) and `search` (call 1, at once). search's
 * tool.completed reaches a leader that takes it into its log and dies: the run
 * hears TR_ENOTLEADER, reads its journal back without it and sends, from the
 * replies it still holds, call 0's completion, then call 1's, then the next
 * llm.requested — all waiting for a leader. The next leader commits the old
 * entry first (call 1 complete at that seq). Call 0's event is then refused;
 * the events sent after it must be refused too, though the next of them fits
 * the seq after (raft.h "Writer ids"): accepted, the journal would hold call
 * 1's completion twice and call 0's never, and the run could not go on. */
static void test_pipelined_after_a_lost_leader(void **st)
{
    const uint64_t id = 61;
    W.defer_armed = true;
    create_run(id, "pair question");
    settle(&id, 1, 60000);
    assert_true(W.stash_applied);
    assert_int_equal(terminal_status(id), J(RunStatus_Succeeded));
    /* Each call completed exactly once, in the journal. */
    int done[2] = { 0, 0 };
    uint8_t *ev = NULL;
    size_t len;
    for (uint64_t seq = 1; journal_event(id, seq, &ev, &len); seq++) {
        const struct J(Event) *e = J(Event_verify_as_root)(ev, len, NULL);
        assert_non_null(e);
        const struct J(ToolCompleted) *tc = J(Event_data_as_ToolCompleted)(e);
        if (tc != NULL && J(ToolCompleted_step)(tc) == 1 && J(ToolCompleted_call_index)(tc) < 2)
            done[J(ToolCompleted_call_index)(tc)]++;
        tr_free(ev);
    }
    assert_int_equal(done[0], 1);
    assert_int_equal(done[1], 1);
}

static void test_ready_scan_starts_owned_runs(void **st)
{
    const uint64_t ids[] = { 61, 62, 63 };
    struct tr_state_note ready = { .kind = TR_NOTE_READY };

    tr_fsm_set_listener(W.fsm, 0); /* created while nobody listens: a restart */
    for (int i = 0; i < 3; i++)
        create_run(ids[i], "plain again");
    tr_rt_run_until_idle(W.rt, 1000000);
    assert_int_equal(W.llm_calls, 0);
    tr_fsm_set_listener(W.fsm, W.mgr);
    assert_int_equal(tr_rt_send(W.rt, W.mgr, tr_msg_make(TR_MSG_STATE_NOTE, &ready, sizeof ready)), 0);
    settle(ids, 3, 10000);
    for (int i = 0; i < 3; i++) {
        struct run_rec r;
        assert_true(run_terminal(ids[i], &r));
        assert_int_equal(r.status, J(RunStatus_Succeeded));
        tr_run_rec_free(&r);
    }
    assert_true(W.max_active <= 2);
}

static void test_cap_and_blob_through_the_fsm(void **st)
{
    const uint64_t ids[] = { 71, 72 };
    struct run_rec r;

    create_run(ids[0], "cap me");
    create_run(ids[1], "big result");
    settle(ids, 2, 10000);
    assert_true(run_terminal(ids[0], &r));
    assert_int_equal(r.status, J(RunStatus_Failed));
    assert_string_equal(r.error_code, "budget_exceeded");
    tr_run_rec_free(&r);
    assert_int_equal(count_type(ids[0], J(Data_BudgetExceeded)), 1);
    assert_true(run_terminal(ids[1], &r));
    assert_int_equal(r.status, J(RunStatus_Succeeded));
    tr_run_rec_free(&r);
    /* The whole result is in the blobs family under the event's digest. */
    struct tr_journal_iter *it;
    uint64_t seq;
    const void *ev;
    size_t len;
    int found = 0;
    assert_int_equal(tr_journal_iter_open(W.store, NULL, ids[1], 1, &it, NULL), 0);
    while (tr_journal_iter_next(it, &seq, &ev, &len, NULL) == 1) {
        const struct J(ToolCompleted) *c = J(Event_data_as_ToolCompleted)(J(Event_verify_as_root)(ev, len, NULL));
        if (!c)
            continue;
        struct tr_fb_vec d = J(ToolCompleted_result_digest)(c);
        void *data = NULL;
        size_t dlen = 0;
        assert_int_equal(d.len, 32);
        assert_int_equal(tr_blob_get(W.store, NULL, d.data, &data, &dlen, NULL), 0);
        assert_int_equal(dlen, 10000);
        assert_int_equal(J(ToolCompleted_result_size)(c), 10000);
        tr_free(data);
        found++;
    }
    tr_journal_iter_close(it);
    assert_int_equal(found, 1);
}

static void reassign(uint64_t id, uint64_t from, uint64_t to, uint64_t epoch)
{
    struct tr_fb_builder b;
    char text[TR_RUN_ID_TEXT_LEN];

    tr_run_id_text(id, text);
    tr_fb_builder_init(&b);
    tr_fb_ref rid = tr_fb_create_str(&b, text);
    C(RunReassign_start)(&b);
    C(RunReassign_add_run_id)(&b, rid);
    C(RunReassign_add_from_node)(&b, from);
    C(RunReassign_add_to_node)(&b, to);
    C(RunReassign_add_epoch)(&b, epoch);
    const struct tr_fsm_result *res = apply_cmd(&b, C(Op_RunReassign), C(RunReassign_end)(&b));
    assert_int_equal(res->verdict, TR_FSM_OK);
}

/* Moved away while waiting for a human: this node lets go; moved back under
 * a newer epoch: it picks the run up again by replay and finishes it. */
static void test_reassigned_away_and_back(void **st)
{
    const uint64_t id = 81;
    struct tr_rt_stats s;
    struct run_rec r;

    create_run(id, "wire it later");
    tr_rt_run_until_idle(W.rt, 1000000);
    tr_rt_stats(W.rt, &s);
    assert_int_equal(s.passivated, 1);
    reassign(id, 1, 2, 2);
    tr_rt_run_until_idle(W.rt, 1000000);
    tr_rt_stats(W.rt, &s);
    assert_int_equal(s.actors, 4); /* let go */
    uint32_t before = journal_types(id, (int[1]){ 0 }, 0);
    /* Node 2 would run it now; nothing more comes from node 1, not even at
     * the approval deadline. */
    tr_rt_advance(W.rt, 61000);
    tr_rt_run_until_idle(W.rt, 1000000);
    assert_int_equal(journal_types(id, (int[1]){ 0 }, 0), before);
    reassign(id, 2, 1, 3);
    tr_rt_run_until_idle(W.rt, 1000000);
    /* Back here: past the deadline, so it proposes Expired and carries on. */
    settle(&id, 1, 5000);
    assert_true(run_terminal(id, &r));
    assert_int_equal(r.status, J(RunStatus_Succeeded));
    assert_int_equal(r.epoch, 3);
    tr_run_rec_free(&r);
    assert_int_equal(count_type(id, J(Data_RunAssigned)), 2);
    assert_int_equal(W.n_keys, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_runs_complete_within_capacity, setup, teardown),
        cmocka_unit_test_setup_teardown(test_approval_passivates_then_approved, setup, teardown),
        cmocka_unit_test_setup_teardown(test_approval_expires, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_while_tool_runs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_registry_change_reaches_a_live_run, setup, teardown),
        cmocka_unit_test_setup_teardown(test_transport_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pipelined_after_a_lost_leader, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ready_scan_starts_owned_runs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cap_and_blob_through_the_fsm, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reassigned_away_and_back, setup, teardown),
    };
    if (!getenv("TROUPE_LOG"))
        tr_log_set_level(TR_LOG_WARN);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
