/* The state service end to end in one process: real runtime, real RocksDB,
 * real raft (one voter) and the FSM. A client actor sends appends and
 * commands like a run actor would; a listener actor records the notes. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"

#include "fsm_fixture.h"
#include "raft/fsm.h"
#include "raft/raft.h"
#include "schemas/command_generated.h"
#include "schemas/journal_generated.h"
#include "schemas/state_generated.h"
#include "storage/storage.h"

enum { MSG_SEND_APPEND = TR_MSG_USER + 1, MSG_SEND_PROPOSE, MSG_SEND_URGE, MSG_SEND_APPENDS };

/* ---- shared test state ------------------------------------------------------ */

#define MAX_REPLIES 4096
#define MAX_NOTES 4096

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct tr_state_reply replies[MAX_REPLIES];
static int n_replies;
static struct tr_state_note notes[MAX_NOTES];
static int n_notes;

static struct tr_rt *rt;
static struct tr_state *state;
static tr_actor_id client, listener;
static char dir[64];
static char raft_addr[32];
static unsigned snapshot_threshold;
static int linger_ms;
static int no_bootstrap; /* a node that never leads: a follower with a forwarder */

static int count_replies(void)
{
    pthread_mutex_lock(&mu);
    int n = n_replies;
    pthread_mutex_unlock(&mu);
    return n;
}

static struct tr_state_reply reply_at(int i)
{
    pthread_mutex_lock(&mu);
    struct tr_state_reply r = replies[i];
    pthread_mutex_unlock(&mu);
    return r;
}

static int count_notes(int kind)
{
    int n = 0;
    pthread_mutex_lock(&mu);
    for (int i = 0; i < n_notes; i++)
        if (kind == 0 || notes[i].kind == kind)
            n++;
    pthread_mutex_unlock(&mu);
    return n;
}

/* Poll until cond() or ~20 s; never a fixed sleep. */
static int wait_for(int (*cond)(void *), void *arg)
{
    for (int i = 0; i < 20000; i++) {
        if (cond(arg))
            return 1;
        uv_sleep(1);
    }
    return cond(arg);
}

static int replies_at_least(void *arg) { return count_replies() >= *(int *)arg; }

struct note_want {
    int kind, n;
};
static int notes_at_least(void *arg)
{
    struct note_want *w = arg;
    return count_notes(w->kind) >= w->n;
}
/* Notes reach the listener (on another scheduler) independently of replies. */
static int wait_notes(int kind, int n)
{
    struct note_want w = { kind, n };
    return wait_for(notes_at_least, &w);
}
static int ready_note(void *arg) { return count_notes(TR_NOTE_READY) >= *(int *)arg; }

/* ---- actors ----------------------------------------------------------------- */

/* Send one request to the state service; a refusal is recorded as a reply. */
static void client_request(struct tr_ctx *ctx, int type, const void *data, uint32_t len)
{
    struct tr_msg *m = tr_msg_make(type, data, len);
    uint64_t corr;
    int rv = tr_request(ctx, tr_state_actor(state), m, 10000, &corr);
    if (rv != TR_OK) {
        tr_msg_free(m);
        struct tr_state_reply r = { .status = rv };
        pthread_mutex_lock(&mu);
        replies[n_replies++] = r;
        pthread_mutex_unlock(&mu);
    }
}

static int client_receive(struct tr_ctx *ctx, void *st, struct tr_msg *msg)
{
    if (msg->type == MSG_SEND_URGE)
        return tr_tell(ctx, tr_state_actor(state), TR_MSG_STATE_URGE, NULL, 0) == TR_OK ? 0 : -1;
    if (msg->type == MSG_SEND_APPEND || msg->type == MSG_SEND_PROPOSE) {
        client_request(ctx, msg->type == MSG_SEND_APPEND ? TR_MSG_STATE_APPEND : TR_MSG_STATE_PROPOSE, msg->data,
                       msg->len);
        return 0;
    }
    if (msg->type == MSG_SEND_APPENDS) { /* records of [u64 length][append], 8-aligned; all sent in this turn */
        const uint8_t *p = msg->data, *end = p + msg->len;
        while (end - p >= 8) {
            uint64_t n;
            memcpy(&n, p, 8);
            p += 8;
            assert_true(n <= (size_t)(end - p));
            client_request(ctx, TR_MSG_STATE_APPEND, p, (uint32_t)n);
            p += (n + 7) & ~(uint64_t)7;
        }
        return 0;
    }
    if (msg->type == TR_MSG_STATE_REPLY || msg->type == TR_MSG_TIMEOUT) {
        struct tr_state_reply r = { .status = TR_ETIMEDOUT };
        if (msg->type == TR_MSG_STATE_REPLY)
            memcpy(&r, msg->data, sizeof r);
        pthread_mutex_lock(&mu);
        replies[n_replies++] = r;
        pthread_mutex_unlock(&mu);
    }
    return 0;
}

static const struct tr_behavior client_behavior = { .name = "client", .receive = client_receive };

static int listener_receive(struct tr_ctx *ctx, void *st, struct tr_msg *msg)
{
    if (msg->type == TR_MSG_STATE_NOTE) {
        pthread_mutex_lock(&mu);
        if (n_notes < MAX_NOTES)
            memcpy(&notes[n_notes++], msg->data, sizeof notes[0]);
        pthread_mutex_unlock(&mu);
    }
    return 0;
}

static const struct tr_behavior listener_behavior = { .name = "listener", .receive = listener_receive };

/* ---- node lifecycle ------------------------------------------------------------- */

static atomic_int opened;

static void open_cb(struct tr_ctx *ctx, void *arg)
{
    struct tr_err err = { 0 };
    struct tr_state_opts o = { .node_id = 1, .data_dir = dir, .raft_address = raft_addr,
                               .bootstrap = !no_bootstrap, .listener = listener,
                               .snapshot_threshold = snapshot_threshold,
                               .snapshot_trailing = snapshot_threshold ? snapshot_threshold / 2 : 0,
                               .linger_ms = linger_ms };
    int rv = tr_state_open(ctx, &o, &state, &err);
    if (rv != TR_OK)
        fprintf(stderr, "open: %s\n", err.msg);
    atomic_store(&opened, rv == TR_OK ? 1 : -1);
}

static void close_hook(void *arg)
{
    tr_state_close(state, NULL, NULL);
}

static void hook_cb(struct tr_ctx *ctx, void *arg)
{
    tr_rt_on_shutdown(ctx, close_hook, NULL);
    atomic_store(&opened, 2);
}

static int is_opened(void *arg) { return atomic_load(&opened) == *(int *)arg || atomic_load(&opened) < 0; }

static void node_start(void)
{
    struct tr_rt_opts ro = { .schedulers = 2 };
    assert_int_equal(tr_rt_new(&ro, &rt), TR_OK);
    assert_int_equal(tr_rt_start(rt), TR_OK);
    struct tr_spawn_opts lo = { .behavior = &listener_behavior, .sched = 1 };
    assert_int_equal(tr_spawn(rt, &lo, &listener), TR_OK);
    struct tr_spawn_opts co = { .behavior = &client_behavior, .sched = 0 };
    assert_int_equal(tr_spawn(rt, &co, &client), TR_OK);
    atomic_store(&opened, 0);
    assert_int_equal(tr_rt_call(rt, 0, open_cb, NULL, NULL), TR_OK);
    int one = 1, two = 2;
    assert_true(wait_for(is_opened, &one));
    assert_int_equal(atomic_load(&opened), 1);
    assert_int_equal(tr_rt_call(rt, 0, hook_cb, NULL, NULL), TR_OK);
    assert_true(wait_for(is_opened, &two));
}

static void node_stop(void)
{
    tr_rt_shutdown(rt);
    rt = NULL;
    state = NULL;
}

/* ---- builders ------------------------------------------------------------------ */

static void send_to_client(int type, const void *data, size_t len)
{
    assert_int_equal(tr_rt_send(rt, client, tr_msg_make(type, data, (uint32_t)len)), TR_OK);
}

/* Propose a command through the client actor and wait for its reply. */
static struct tr_state_reply propose(struct tr_fb_builder *b)
{
    size_t len;
    const uint8_t *data = tr_fb_builder_data(b, &len);
    int want = count_replies() + 1;
    send_to_client(MSG_SEND_PROPOSE, data, len);
    assert_true(wait_for(replies_at_least, &want));
    return reply_at(want - 1);
}

static void cmd_finish(struct tr_fb_builder *b, uint8_t type, tr_fb_ref op)
{
    fx_command_finish(b, FX_START_US, 0, 0, type, op);
}

static struct tr_state_reply create_run(uint64_t id, const char *idem, uint8_t digest_byte)
{
    struct tr_fb_builder b;
    tr_fb_builder_init(&b);
    tr_fb_ref ik = idem ? tr_fb_create_str(&b, idem) : 0;
    uint8_t dig[32];
    memset(dig, digest_byte, sizeof dig);
    tr_fb_ref d = tr_fb_create_bytes(&b, dig, sizeof dig);
    tr_fb_ref model = tr_fb_create_str(&b, "mock");
    troupe_journal_AgentConfig_start(&b);
    troupe_journal_AgentConfig_add_model(&b, model);
    troupe_journal_AgentConfig_add_max_steps(&b, 7);
    tr_fb_ref agent = troupe_journal_AgentConfig_end(&b);
    fx_run_create_start(&b, id, "write a haiku", 1);
    troupe_cmd_RunCreate_add_idempotency_key(&b, ik);
    troupe_cmd_RunCreate_add_request_digest(&b, d);
    troupe_cmd_RunCreate_add_agent(&b, agent);
    troupe_cmd_RunCreate_add_epoch(&b, 1);
    cmd_finish(&b, troupe_cmd_Op_RunCreate, troupe_cmd_RunCreate_end(&b));
    struct tr_state_reply r = propose(&b);
    tr_fb_builder_free(&b);
    return r;
}

/* An owner's event of `type` at (seq, epoch) as an append message. */
static size_t build_append(uint8_t *out, size_t cap, uint64_t id, uint64_t seq, uint64_t epoch, uint8_t type,
                           uint32_t step)
{
    struct tr_fb_builder b;
    tr_fb_builder_init(&b);
    tr_fb_ref data = 0;
    switch (type) {
    case troupe_journal_Data_LlmRequested:
        troupe_journal_LlmRequested_start(&b);
        troupe_journal_LlmRequested_add_step(&b, step);
        data = troupe_journal_LlmRequested_end(&b);
        break;
    case troupe_journal_Data_LlmCompleted:
        troupe_journal_Usage_start(&b);
        troupe_journal_Usage_add_prompt_tokens(&b, 100);
        troupe_journal_Usage_add_completion_tokens(&b, 20);
        troupe_journal_Usage_add_cost_micro_usd(&b, 7);
        {
            tr_fb_ref u = troupe_journal_Usage_end(&b);
            troupe_journal_LlmCompleted_start(&b);
            troupe_journal_LlmCompleted_add_step(&b, step);
            troupe_journal_LlmCompleted_add_usage(&b, u);
            data = troupe_journal_LlmCompleted_end(&b);
        }
        break;
    case troupe_journal_Data_ApprovalRequested: {
        char aid[64];
        snprintf(aid, sizeof aid, "apr-%llu-%u", (unsigned long long)id, step);
        tr_fb_ref a = tr_fb_create_str(&b, aid);
        tr_fb_ref tool = tr_fb_create_str(&b, "payment");
        troupe_journal_ApprovalRequested_start(&b);
        troupe_journal_ApprovalRequested_add_approval_id(&b, a);
        troupe_journal_ApprovalRequested_add_step(&b, step);
        troupe_journal_ApprovalRequested_add_tool(&b, tool);
        troupe_journal_ApprovalRequested_add_expires_at_us(&b, 1800000000000000LL);
        data = troupe_journal_ApprovalRequested_end(&b);
        break;
    }
    case troupe_journal_Data_RunSucceeded: {
        tr_fb_ref o = tr_fb_create_str(&b, "done");
        troupe_journal_RunSucceeded_start(&b);
        troupe_journal_RunSucceeded_add_output(&b, o);
        data = troupe_journal_RunSucceeded_end(&b);
        break;
    }
    case troupe_journal_Data_RunCancelled: /* not the owner's to write */
        troupe_journal_RunCancelled_start(&b);
        data = troupe_journal_RunCancelled_end(&b);
        break;
    default:
        fail();
    }
    fx_event_finish(&b, id, seq, FX_START_US + 1, epoch, type, data);
    size_t len;
    const uint8_t *ev = tr_fb_builder_data(&b, &len);
    struct tr_append_msg h = { .run_id = id, .epoch = epoch, .seq = seq, .len = (uint32_t)len };
    assert_true(sizeof h + len <= cap);
    memcpy(out, &h, sizeof h);
    memcpy(out + sizeof h, ev, len);
    tr_fb_builder_free(&b);
    return sizeof h + len;
}

static struct tr_state_reply append(uint64_t id, uint64_t seq, uint64_t epoch, uint8_t type, uint32_t step)
{
    uint8_t buf[4096];
    size_t n = build_append(buf, sizeof buf, id, seq, epoch, type, step);
    int want = count_replies() + 1;
    send_to_client(MSG_SEND_APPEND, buf, n);
    assert_true(wait_for(replies_at_least, &want));
    return reply_at(want - 1);
}

static void read_run(uint64_t id, struct run_rec *out)
{
    fx_read_run(tr_state_store(state), id, out);
}

static uint64_t journal_len(uint64_t id)
{
    uint64_t n = 0;
    assert_int_equal(tr_journal_count(tr_state_store(state), NULL, id, &n, NULL), TR_OK);
    return n;
}


static int setup(void **unused)
{
    snprintf(dir, sizeof dir, "/tmp/tr-state-test-XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(raft_addr, sizeof raft_addr, "127.0.0.1:%d", h_free_port());
    n_replies = 0;
    n_notes = 0;
    snapshot_threshold = 0;
    linger_ms = 0;
    no_bootstrap = 0;
    return 0;
}

static int teardown(void **unused)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
    return 0;
}

/* ---- tests ------------------------------------------------------------------------ */

static void test_run_lifecycle(void **unused)
{
    int one = 1;
    node_start();
    assert_true(wait_for(ready_note, &one));

    struct tr_state_reply r = create_run(42, "key-1", 0xaa);
    assert_int_equal(r.status, TR_OK);
    assert_int_equal(r.verdict, TR_FSM_OK);
    assert_int_equal(r.run_id, 42);
    assert_int_equal(r.seq, 1);
    assert_true(wait_notes(TR_NOTE_RUN_CREATED, 1));

    /* Same key, same request: the same run. Same key, another request: 409. */
    r = create_run(43, "key-1", 0xaa);
    assert_int_equal(r.verdict, TR_FSM_EXISTS);
    assert_int_equal(r.run_id, 42);
    r = create_run(44, "key-1", 0xbb);
    assert_int_equal(r.verdict, TR_FSM_CONFLICT);

    struct run_rec rec;
    read_run(42, &rec);
    assert_int_equal(rec.status, troupe_journal_RunStatus_Queued);
    assert_int_equal(rec.next_seq, 2);
    assert_int_equal(rec.agent.max_steps, 7);
    assert_string_equal(rec.tenant, "acme");
    tr_run_rec_free(&rec);

    /* Owner appends: in order, right epoch. */
    r = append(42, 2, 1, troupe_journal_Data_LlmRequested, 1);
    assert_int_equal(r.status, TR_OK);
    assert_int_equal(r.verdict, TR_FSM_OK);
    assert_int_equal(r.seq, 2);
    assert_true(r.raft_index > 0);
    r = append(42, 3, 1, troupe_journal_Data_LlmCompleted, 1);
    assert_int_equal(r.verdict, TR_FSM_OK);
    /* A gap, a replay, a stale epoch, a future epoch, an FSM-only event. */
    assert_int_equal(append(42, 5, 1, troupe_journal_Data_LlmRequested, 2).verdict, TR_FSM_BAD_SEQ);
    assert_int_equal(append(42, 3, 1, troupe_journal_Data_LlmRequested, 2).verdict, TR_FSM_BAD_SEQ);
    assert_int_equal(append(42, 4, 0, troupe_journal_Data_LlmRequested, 2).verdict, TR_FSM_STALE_EPOCH);
    assert_int_equal(append(42, 4, 2, troupe_journal_Data_LlmRequested, 2).verdict, TR_FSM_INVALID);
    assert_int_equal(append(42, 4, 1, troupe_journal_Data_RunCancelled, 2).verdict, TR_FSM_INVALID);
    assert_int_equal(append(77, 2, 1, troupe_journal_Data_LlmRequested, 1).verdict, TR_FSM_NO_RUN);

    read_run(42, &rec);
    assert_int_equal(rec.status, troupe_journal_RunStatus_Running);
    assert_int_equal(rec.next_seq, 4);
    assert_int_equal(rec.prompt_tokens, 100);
    assert_int_equal(rec.completion_tokens, 20);
    assert_int_equal(rec.cost_micro_usd, 7);
    assert_int_equal(rec.step, 1);
    tr_run_rec_free(&rec);
    assert_int_equal(journal_len(42), 3);

    /* Success is terminal. */
    assert_int_equal(append(42, 4, 1, troupe_journal_Data_RunSucceeded, 1).verdict, TR_FSM_OK);
    assert_int_equal(append(42, 5, 1, troupe_journal_Data_LlmRequested, 2).verdict, TR_FSM_TERMINAL);
    read_run(42, &rec);
    assert_int_equal(rec.status, troupe_journal_RunStatus_Succeeded);
    assert_string_equal(rec.output, "done");
    tr_run_rec_free(&rec);
    assert_true(wait_notes(TR_NOTE_RUN_ENDED, 1));
    node_stop();
}

static struct tr_state_reply decide(const char *approval, int8_t decision)
{
    struct tr_fb_builder b;
    tr_fb_builder_init(&b);
    tr_fb_ref id = tr_fb_create_str(&b, approval);
    tr_fb_ref by = tr_fb_create_str(&b, "alice");
    troupe_cmd_ApprovalDecide_start(&b);
    troupe_cmd_ApprovalDecide_add_approval_id(&b, id);
    troupe_cmd_ApprovalDecide_add_decision(&b, decision);
    troupe_cmd_ApprovalDecide_add_decided_by(&b, by);
    cmd_finish(&b, troupe_cmd_Op_ApprovalDecide, troupe_cmd_ApprovalDecide_end(&b));
    struct tr_state_reply r = propose(&b);
    tr_fb_builder_free(&b);
    return r;
}

static struct tr_state_reply cancel(uint64_t id)
{
    struct tr_fb_builder b;
    char text[TR_RUN_ID_TEXT_LEN];
    tr_fb_builder_init(&b);
    tr_run_id_text(id, text);
    tr_fb_ref rid = tr_fb_create_str(&b, text);
    tr_fb_ref why = tr_fb_create_str(&b, "changed my mind");
    troupe_cmd_RunCancel_start(&b);
    troupe_cmd_RunCancel_add_run_id(&b, rid);
    troupe_cmd_RunCancel_add_reason(&b, why);
    cmd_finish(&b, troupe_cmd_Op_RunCancel, troupe_cmd_RunCancel_end(&b));
    struct tr_state_reply r = propose(&b);
    tr_fb_builder_free(&b);
    return r;
}

static void test_approval_and_cancel(void **unused)
{
    int one = 1;
    node_start();
    assert_true(wait_for(ready_note, &one));
    assert_int_equal(create_run(7, NULL, 0).verdict, TR_FSM_OK);
    assert_int_equal(append(7, 2, 1, troupe_journal_Data_ApprovalRequested, 1).verdict, TR_FSM_OK);

    struct run_rec rec;
    read_run(7, &rec);
    assert_int_equal(rec.status, troupe_journal_RunStatus_WaitingApproval);
    assert_string_equal(rec.pending_approval, "apr-7-1");
    tr_run_rec_free(&rec);

    /* The first decision wins; later ones are refused. */
    struct tr_state_reply r = decide("apr-7-1", troupe_journal_Decision_Approve);
    assert_int_equal(r.verdict, TR_FSM_OK);
    assert_int_equal(r.seq, 3);
    assert_int_equal(decide("apr-7-1", troupe_journal_Decision_Expired).verdict, TR_FSM_NOT_PENDING);
    assert_int_equal(decide("nope", troupe_journal_Decision_Deny).verdict, TR_FSM_NOT_FOUND);
    read_run(7, &rec);
    assert_int_equal(rec.status, troupe_journal_RunStatus_Running);
    assert_null(rec.pending_approval);
    assert_int_equal(rec.next_seq, 4);
    tr_run_rec_free(&rec);
    assert_true(wait_notes(TR_NOTE_RUN_EVENT, 1));

    /* The owner's next append must come after the FSM's event. */
    assert_int_equal(append(7, 3, 1, troupe_journal_Data_LlmRequested, 2).verdict, TR_FSM_BAD_SEQ);
    assert_int_equal(append(7, 4, 1, troupe_journal_Data_LlmRequested, 2).verdict, TR_FSM_OK);

    /* Cancel journals run.cancelled; idempotent; later appends are refused. */
    r = cancel(7);
    assert_int_equal(r.verdict, TR_FSM_OK);
    assert_int_equal(r.seq, 5);
    assert_int_equal(cancel(7).verdict, TR_FSM_TERMINAL);
    assert_int_equal(append(7, 6, 1, troupe_journal_Data_LlmRequested, 3).verdict, TR_FSM_TERMINAL);
    read_run(7, &rec);
    assert_int_equal(rec.status, troupe_journal_RunStatus_Cancelled);
    tr_run_rec_free(&rec);
    assert_int_equal(journal_len(7), 5);
    node_stop();
}

/* Appends sent together from one actor on raft's scheduler land in one
 * entry (group commit), in order. */
static void test_group_commit(void **unused)
{
    int one = 1;
    node_start();
    assert_true(wait_for(ready_note, &one));
    enum { RUNS = 20, PER = 10 };
    for (uint64_t i = 1; i <= RUNS; i++)
        assert_int_equal(create_run(100 + i, NULL, 0).verdict, TR_FSM_OK);

    /* One message carrying all appends: the client sends them back to back,
     * in one turn, so they are all in the service's mailbox before the flush
     * it schedules behind its scheduler's inbox (sent one message each, the
     * service could run between them on a busy machine). */
    int base = count_replies();
    size_t used = 0;
    uint64_t *all = malloc((size_t)RUNS * PER * (8 + 4096)); /* 8-aligned records: build_append writes a struct */
    assert_non_null(all);
    for (int k = 0; k < PER; k++)
        for (uint64_t i = 1; i <= RUNS; i++) {
            uint8_t *rec = (uint8_t *)all + used;
            uint64_t n = build_append(rec + 8, 4096, 100 + i, 2 + (uint64_t)k, 1, troupe_journal_Data_LlmRequested,
                                      (uint32_t)k + 1);
            memcpy(rec, &n, 8);
            used += 8 + ((n + 7) & ~(uint64_t)7);
        }
    send_to_client(MSG_SEND_APPENDS, all, used);
    free(all);
    int want = base + RUNS * PER;
    assert_true(wait_for(replies_at_least, &want));
    for (int i = base; i < want; i++) {
        struct tr_state_reply r = reply_at(i);
        assert_int_equal(r.status, TR_OK);
        assert_int_equal(r.verdict, TR_FSM_OK);
    }
    for (uint64_t i = 1; i <= RUNS; i++)
        assert_int_equal(journal_len(100 + i), 1 + PER);
    struct tr_state_stats st;
    tr_state_stats(state, &st);
    assert_int_equal(st.appends, RUNS * PER);
    assert_true(st.entries < st.appends + st.commands); /* some entry held several appends */
    assert_true(st.max_batch > 1);
    /* The first entry held them all (they were sent back to back): big
     * enough to go LZ4-compressed (raft/entry.c), and read back right above. */
    assert_true(st.compressed > 0);
    node_stop();
}

/* Send an append without waiting for its reply; lazy sets TR_APPEND_LAZY. */
static void send_append(uint64_t id, uint64_t seq, bool lazy)
{
    uint8_t buf[4096];
    size_t n = build_append(buf, sizeof buf, id, seq, 1, troupe_journal_Data_LlmRequested, (uint32_t)seq);
    ((struct tr_append_msg *)buf)->flags = lazy ? TR_APPEND_LAZY : 0;
    send_to_client(MSG_SEND_APPEND, buf, n);
}

/* Lazy appends wait for the next urgent one, an URGE, or linger_ms. That one
 * is still held is seen by order: a command proposed after it is answered
 * first (an entry proposed before the command's would be applied, and its
 * replies sent, before the command's). */
static void test_lazy_appends(void **unused)
{
    int one = 1;
    linger_ms = 600000; /* only urgency moves them */
    node_start();
    assert_true(wait_for(ready_note, &one));
    assert_int_equal(create_run(7, NULL, 0).verdict, TR_FSM_OK);

    /* Held until an URGE. */
    int base = count_replies();
    send_append(7, 2, true);
    assert_int_equal(create_run(8, NULL, 0).verdict, TR_FSM_OK);
    assert_int_equal(reply_at(base).run_id, 8); /* the first reply is the command's */
    send_to_client(MSG_SEND_URGE, NULL, 0);
    int want = base + 2;
    assert_true(wait_for(replies_at_least, &want));
    assert_int_equal(reply_at(base + 1).status, TR_OK);
    assert_int_equal(reply_at(base + 1).verdict, TR_FSM_OK);
    assert_int_equal(reply_at(base + 1).run_id, 7);
    assert_int_equal(journal_len(7), 2);

    /* Held until an urgent append, then both in one entry, in order. */
    struct tr_state_stats st0, st1;
    tr_state_stats(state, &st0);
    base = count_replies();
    send_append(7, 3, true);
    send_append(8, 2, true);
    assert_int_equal(create_run(9, NULL, 0).verdict, TR_FSM_OK);
    assert_int_equal(reply_at(base).run_id, 9);
    send_append(7, 4, false);
    want = base + 4;
    assert_true(wait_for(replies_at_least, &want));
    for (int i = base + 1; i < want; i++) {
        assert_int_equal(reply_at(i).status, TR_OK);
        assert_int_equal(reply_at(i).verdict, TR_FSM_OK);
    }
    assert_int_equal(reply_at(base + 1).raft_index, reply_at(base + 3).raft_index);
    tr_state_stats(state, &st1);
    assert_int_equal(st1.appends - st0.appends, 3);
    assert_int_equal(st1.entries - st0.entries, 2); /* the command's and the appends' */
    assert_int_equal(journal_len(7), 4);
    assert_int_equal(journal_len(8), 2);
    node_stop();

    /* With a short linger, a lazy append alone goes out by itself. */
    linger_ms = 1;
    n_notes = 0;
    node_start();
    assert_true(wait_for(ready_note, &one));
    base = count_replies();
    send_append(7, 5, true);
    want = base + 1;
    assert_true(wait_for(replies_at_least, &want));
    assert_int_equal(reply_at(base).verdict, TR_FSM_OK);
    assert_int_equal(journal_len(7), 5);
    node_stop();
}

/* Everything survives a restart; snapshots (taken every few entries here)
 * are restored or skipped without changing the state. */
static void test_restart_and_snapshots(void **unused)
{
    int one = 1;
    unsigned char before[TR_STATE_DIGEST_LEN], after[TR_STATE_DIGEST_LEN];
    uint64_t applied_before, applied_after;
    snapshot_threshold = 8;
    node_start();
    assert_true(wait_for(ready_note, &one));
    for (uint64_t i = 1; i <= 10; i++) {
        assert_int_equal(create_run(i, NULL, 0).verdict, TR_FSM_OK);
        for (uint64_t s = 2; s <= 4; s++)
            assert_int_equal(append(i, s, 1, troupe_journal_Data_LlmRequested, (uint32_t)s).verdict, TR_FSM_OK);
    }
    assert_int_equal(tr_store_digest(tr_state_store(state), NULL, before, &applied_before, NULL), TR_OK);
    node_stop();

    n_notes = 0;
    node_start();
    assert_true(wait_for(ready_note, &one));
    assert_int_equal(tr_store_digest(tr_state_store(state), NULL, after, &applied_after, NULL), TR_OK);
    assert_memory_equal(before, after, sizeof before);
    for (uint64_t i = 1; i <= 10; i++)
        assert_int_equal(journal_len(i), 4);
    /* And it carries on where it was. */
    assert_int_equal(append(3, 5, 1, troupe_journal_Data_LlmRequested, 5).verdict, TR_FSM_OK);
    assert_int_equal(append(3, 5, 1, troupe_journal_Data_LlmRequested, 5).verdict, TR_FSM_BAD_SEQ);
    node_stop();
}


/* ---- a follower's fence ------------------------------------------------------------
 *
 * A follower (no bootstrap: it never leads) with a forwarder that keeps what it
 * is given; the test completes the forwarded entries and gives leader contact
 * by hand, on the service's scheduler. Rule under test (raft/state.c, "What was
 * sent before the last fence"): once fenced, the node becomes ready again only
 * when every entry it had out, and every append it had queued, at the fence
 * has landed or failed, however fresh its leader contact. */

#define MAX_FWD 64
#define MAX_BATCH 8 /* appends per forwarded entry, at most, in this test */
static struct tr_state_fwd *fwd[MAX_FWD];
static int n_fwd;

static int keep_forward(void *ud, const void *cmd, size_t len, struct tr_state_fwd *f)
{
    pthread_mutex_lock(&mu);
    int ok = n_fwd < MAX_FWD;
    if (ok)
        fwd[n_fwd++] = f;
    pthread_mutex_unlock(&mu);
    return ok ? TR_OK : TR_ENOMEM;
}

static int count_fwd(void)
{
    pthread_mutex_lock(&mu);
    int n = n_fwd;
    pthread_mutex_unlock(&mu);
    return n;
}
static int fwd_at_least(void *arg) { return count_fwd() >= *(int *)arg; }

static void set_forwarder_cb(struct tr_ctx *ctx, void *arg) { tr_state_set_forwarder(state, keep_forward, NULL); }

static uint64_t mono_us(void) { return uv_hrtime() / 1000; }

static void contact_cb(struct tr_ctx *ctx, void *arg)
{
    tr_state_leader_contact(state, 0, mono_us() + *(uint64_t *)arg);
}

/* Leader contact good for `us` from now. */
static void give_contact(uint64_t us)
{
    static uint64_t span; /* read on the scheduler before the next call can run */
    span = us;
    assert_int_equal(tr_rt_call(rt, 0, contact_cb, NULL, &span), TR_OK);
}

/* Complete forwarded entry i: every append it carried is accepted, at raft
 * index `landed_at` (0 by default: this node, which applies nothing here,
 * has applied it). */
static uint64_t landed_at;
static void forward_ok_cb(struct tr_ctx *ctx, void *arg)
{
    struct tr_state_fwd *f = fwd[(intptr_t)arg];
    struct tr_state_verdict v[MAX_BATCH];
    for (unsigned i = 0; i < MAX_BATCH; i++)
        v[i] = (struct tr_state_verdict){ .seq = 0, .verdict = TR_FSM_OK };
    struct tr_state_result res = { .status = TR_OK, .verdict = TR_FSM_OK, .raft_index = landed_at,
                                   .n_appends = MAX_BATCH, .appends = v };
    tr_state_forward_done(f, &res);
}
static void forward_ok(int i)
{
    assert_int_equal(tr_rt_call(rt, 0, forward_ok_cb, NULL, (void *)(intptr_t)i), TR_OK);
}

/* The service's readiness polls run on its scheduler; read the count there. */
static _Atomic uint64_t polls_seen;
static void polls_cb(struct tr_ctx *ctx, void *arg)
{
    struct tr_state_stats st;
    tr_state_stats(state, &st);
    atomic_store(&polls_seen, st.polls);
}
static uint64_t polls_now(void)
{
    atomic_store(&polls_seen, UINT64_MAX);
    assert_int_equal(tr_rt_call(rt, 0, polls_cb, NULL, NULL), TR_OK);
    while (atomic_load(&polls_seen) == UINT64_MAX)
        uv_sleep(1);
    return atomic_load(&polls_seen);
}
/* Wait until the service has run `n` more readiness polls. */
static int polls_past(void *arg) { return polls_now() >= *(uint64_t *)arg; }
static void wait_polls(uint64_t n)
{
    uint64_t want = polls_now() + n;
    assert_true(wait_for(polls_past, &want));
}

static void test_fence_waits_for_old_writes(void **unused)
{
    no_bootstrap = 1;
    node_start();
    assert_int_equal(tr_rt_call(rt, 0, set_forwarder_cb, NULL, NULL), TR_OK);
    int one = 1, two = 2, three = 3;

    /* Contact for 400 ms: ready. Two appends go out (one entry each: the
     * second is sent after the first was forwarded), a third stays queued
     * (two entries in flight at most). */
    give_contact(400 * 1000);
    assert_true(wait_for(ready_note, &one));
    send_append(7, 2, false);
    assert_true(wait_for(fwd_at_least, &one));
    send_append(7, 3, false);
    assert_true(wait_for(fwd_at_least, &two));
    send_append(7, 4, false);

    /* The contact lapses: fenced. */
    assert_true(wait_notes(TR_NOTE_FENCED, 1));
    assert_int_equal(count_fwd(), 2);

    /* Fresh contact, but entry 0 is still out: not ready, poll after poll. */
    give_contact(60 * 1000 * 1000);
    wait_polls(5);
    assert_int_equal(count_notes(TR_NOTE_READY), 1);

    /* Entry 0 lands; entry 1 is still out and the queued append now goes
     * out as entry 2 (queued before the fence, so it counts as old): still
     * not ready. */
    forward_ok(0);
    assert_true(wait_for(fwd_at_least, &three));
    assert_true(wait_for(replies_at_least, &one));
    wait_polls(5);
    assert_int_equal(count_notes(TR_NOTE_READY), 1);

    /* An append sent after the fence waits in the queue (two entries out),
     * then goes out as entry 3 when entry 1 lands. It is this era's: it does
     * not hold readiness back. */
    send_append(8, 2, false);
    forward_ok(1);
    int four = 4;
    assert_true(wait_for(fwd_at_least, &four));
    assert_true(wait_for(replies_at_least, &two));
    wait_polls(5);
    assert_int_equal(count_notes(TR_NOTE_READY), 1);

    /* The last of what was sent before the fence lands: ready again, with
     * entry 3 still out. */
    forward_ok(2);
    assert_true(wait_for(ready_note, &two));
    assert_int_equal(count_replies(), 3);
    forward_ok(3);
    int all = 4;
    assert_true(wait_for(replies_at_least, &all));
    for (int i = 0; i < 4; i++) {
        assert_int_equal(reply_at(i).status, TR_OK);
        assert_int_equal(reply_at(i).verdict, TR_FSM_OK);
    }
    assert_int_equal(count_notes(TR_NOTE_FENCED), 1);
    node_stop();
    n_fwd = 0;
}


/* The same rule for an append still queued at the fence (a lazy one waiting
 * for company, with nothing out): fresh contact does not make the node ready
 * until that append has gone out and landed. */
static void test_fence_waits_for_queued_appends(void **unused)
{
    no_bootstrap = 1;
    linger_ms = 60 * 1000; /* the lazy append waits for the URGE below */
    node_start();
    assert_int_equal(tr_rt_call(rt, 0, set_forwarder_cb, NULL, NULL), TR_OK);
    int one = 1, two = 2;

    give_contact(400 * 1000);
    assert_true(wait_for(ready_note, &one));
    send_append(9, 2, true);
    assert_true(wait_notes(TR_NOTE_FENCED, 1));
    assert_int_equal(count_fwd(), 0);

    give_contact(60 * 1000 * 1000);
    wait_polls(5);
    assert_int_equal(count_notes(TR_NOTE_READY), 1);

    /* Out, but not landed: still not ready. */
    send_to_client(MSG_SEND_URGE, NULL, 0);
    assert_true(wait_for(fwd_at_least, &one));
    wait_polls(5);
    assert_int_equal(count_notes(TR_NOTE_READY), 1);

    forward_ok(0);
    assert_true(wait_for(ready_note, &two));
    assert_true(wait_for(replies_at_least, &one));
    assert_int_equal(reply_at(0).verdict, TR_FSM_OK);
    node_stop();
    n_fwd = 0;
}

/* An append sent before the fence lands, but at an index this node has not
 * applied: fresh contact does not make the node ready (a replay then would
 * not see it, and redo what it recorded). An append of this era landing
 * there would not hold readiness back; this node applies nothing, so it
 * stays fenced to the end. */
static void test_fence_waits_for_old_writes_applied(void **unused)
{
    no_bootstrap = 1;
    node_start();
    assert_int_equal(tr_rt_call(rt, 0, set_forwarder_cb, NULL, NULL), TR_OK);
    int one = 1;

    give_contact(400 * 1000);
    assert_true(wait_for(ready_note, &one));
    send_append(10, 2, false);
    assert_true(wait_for(fwd_at_least, &one));
    assert_true(wait_notes(TR_NOTE_FENCED, 1));

    give_contact(60 * 1000 * 1000);
    landed_at = 7;
    forward_ok(0);
    assert_true(wait_for(replies_at_least, &one));
    assert_int_equal(reply_at(0).verdict, TR_FSM_OK);
    wait_polls(10);
    assert_int_equal(count_notes(TR_NOTE_READY), 1);
    landed_at = 0;
    node_stop();
    n_fwd = 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_run_lifecycle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_approval_and_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_group_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lazy_appends, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restart_and_snapshots, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fence_waits_for_old_writes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fence_waits_for_queued_appends, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fence_waits_for_old_writes_applied, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
