/* Live updates: run id -> waiters, woken by the state service's after-commit
 * hook. See live.h for the model.
 *
 * Happy path: the FSM commits entry i that appended to run R ->
 * on_applied(R) marks R's watch and starts an idle handle -> round_cb
 * wakes every sub of R once -> each calls gw_live_read(after = its seq),
 * served from one journal read of R shared by the round -> each writes its
 * frames. Then the kicked subs (history starts, drained connections).
 *
 * Why a direct callback and not TR_MSG_STATE_NOTE messages: the FSM applies
 * on scheduler 0's loop, which is the gateway's loop, so a call costs nothing
 * and cannot be dropped (an actor mailbox can refuse a note when full), and
 * the run ids need no copy. The callback only marks watches (a hash lookup
 * per run the entry touched); all reading and writing happens in the round,
 * outside raft's apply path.
 *
 * Failure modes: the store cannot be read -> gw_live_read answers TR_EIO and
 * the stream ends; a waiter's connection goes away during its wake -> it is
 * removed from its watch (gw_sub_del is safe during a round: the round's
 * cursor skips it).
 *
 * Invariants:
 *  1. A watch exists while it has subs, and is freed when the last goes,
 *     unless a round is walking it (then at the round's end).
 *  2. The store does not change during a round (the FSM applies in other
 *     callbacks of the same loop), so one read per run per round is exact.
 *  3. A sub kicked during a round is woken in the next one, never twice in
 *     one, so a round always ends.
 *  4. A round wakes at most GW_LIVE_ROUND_WAKES subs; a walk cut short
 *     resumes in the next round (the next loop turn, so raft's and the
 *     servers' callbacks run in between) from w->iter, which gw_sub_del
 *     keeps pointing at a live sub. Its read is redone there (invariant 2
 *     holds per round, not across them).
 */
#include <stdio.h>
#include <string.h>

#include "gateway/gw_int.h"

struct gw_watch {
    uint64_t run_id;
    struct gw_watch *hnext;       /* hash chain */
    struct gw_watch *pnext;       /* pending list */
    struct gw_watch *lnext;       /* loaded list */
    struct gw_sub *subs;
    struct gw_sub *iter;          /* the round's next sub */
    unsigned n_subs;
    int pending, busy, loaded;
    /* The round's read. */
    uint64_t load_round;
    uint64_t first;               /* seq of ev[0] */
    struct gw_ev *ev;
    size_t n, cap;
    bool end, terminal, failed;
};

struct gw_live {
    struct tr_gateway *g;
    uv_idle_t idle;               /* a round per loop turn while there is work (an idle
                                     handle, not a 0 ms timer: libuv 1.44 runs a timer
                                     restarted from its own callback again in the same
                                     pass, so rounds would not interleave with raft) */
    uv_timer_t beat;              /* keep-alives (SSE), not reads: nothing polls the store */
    int handles;
    struct gw_watch **buckets;
    size_t n_buckets, n_watches;
    struct gw_watch *pending;     /* marked by on_applied */
    struct gw_watch *work;        /* taken from pending, not walked yet (still pending = 1) */
    struct gw_watch *cur;         /* the walk cut short by the budget (busy; iter: next sub) */
    struct gw_watch *loaded;
    struct gw_sub *khead, *ktail;
    uint64_t round;
    int closing;
    /* metrics */
    uint64_t rounds, wakes, reads, subs_by_kind[GW_SUB_KINDS];
};

/* ---- the hash ------------------------------------------------------------------------ */

static size_t bucket_of(const struct gw_live *L, uint64_t id)
{
    uint64_t h = id * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 32) & (L->n_buckets - 1);
}

static struct gw_watch *watch_find(struct gw_live *L, uint64_t id)
{
    for (struct gw_watch *w = L->buckets[bucket_of(L, id)]; w != NULL; w = w->hnext)
        if (w->run_id == id)
            return w;
    return NULL;
}

static void watch_grow(struct gw_live *L)
{
    size_t old = L->n_buckets;
    struct gw_watch **ob = L->buckets;
    L->n_buckets = old * 2;
    L->buckets = tr_calloc(L->n_buckets, sizeof *L->buckets);
    for (size_t i = 0; i < old; i++) {
        struct gw_watch *next;
        for (struct gw_watch *w = ob[i]; w != NULL; w = next) {
            next = w->hnext;
            size_t b = bucket_of(L, w->run_id);
            w->hnext = L->buckets[b];
            L->buckets[b] = w;
        }
    }
    tr_free(ob);
}

static void cache_clear(struct gw_watch *w)
{
    for (size_t i = 0; i < w->n; i++) {
        tr_free(w->ev[i].raw);
        free(w->ev[i].json); /* json_dumps' */
        tr_free(w->ev[i].sse);
    }
    w->n = 0;
    w->loaded = 0;
}

static void watch_free(struct gw_live *L, struct gw_watch *w)
{
    struct gw_watch **pp = &L->buckets[bucket_of(L, w->run_id)];
    while (*pp != w)
        pp = &(*pp)->hnext;
    *pp = w->hnext;
    L->n_watches--;
    cache_clear(w);
    tr_free(w->ev);
    tr_free(w);
}

/* Free w if nothing needs it (invariant 1). */
static void watch_maybe_free(struct gw_live *L, struct gw_watch *w)
{
    if (w->subs == NULL && !w->busy && !w->pending && !w->loaded)
        watch_free(L, w);
}

/* ---- rounds ---------------------------------------------------------------------------- */

static void round_cb(uv_idle_t *t);

static void arm(struct gw_live *L)
{
    if (!L->closing && !uv_is_active((uv_handle_t *)&L->idle))
        uv_idle_start(&L->idle, round_cb);
}

static void on_applied(void *ud, uint64_t index, const uint64_t *ids, size_t n)
{
    struct gw_live *L = ud;
    for (size_t i = 0; i < n; i++) {
        struct gw_watch *w = watch_find(L, ids[i]);
        if (w == NULL || w->pending || w->subs == NULL)
            continue;
        w->pending = 1;
        w->pnext = L->pending;
        L->pending = w;
        arm(L);
    }
}

static void kick_unlink(struct gw_live *L, struct gw_sub *s)
{
    if (!s->kicked)
        return;
    s->kicked = 0;
    if (s->kprev != NULL)
        s->kprev->knext = s->knext;
    else
        L->khead = s->knext;
    if (s->knext != NULL)
        s->knext->kprev = s->kprev;
    else
        L->ktail = s->kprev;
    s->kprev = s->knext = NULL;
}

/* Wake w's subs from w->iter on, at most *budget of them; true when the
 * walk is over (w->iter NULL). */
static bool walk(struct gw_live *L, struct gw_watch *w, unsigned *budget)
{
    struct gw_sub *s;
    while ((s = w->iter) != NULL && *budget > 0) {
        w->iter = s->next;
        kick_unlink(L, s); /* woken now: no need for its own */
        L->wakes++;
        (*budget)--;
        s->wake(s); /* may remove s or others (gw_sub_del keeps w->iter right) */
    }
    return w->iter == NULL;
}

static void walk_done(struct gw_live *L, struct gw_watch *w)
{
    w->busy--;
    watch_maybe_free(L, w);
}

static void round_cb(uv_idle_t *t)
{
    struct gw_live *L = t->data;
    uv_idle_stop(t); /* arm() below restarts it when work is left */
    uint64_t round = ++L->round;
    unsigned budget = GW_LIVE_ROUND_WAKES;
    L->rounds++;
    /* Runs the applied entries changed: every sub of each, once; a walk cut
     * short by the budget goes on in the next round (raft and the other
     * servers run in between: a run with 10,000 streams does not stall the
     * loop). Entries applied meanwhile mark the watch again. */
    if (L->cur != NULL) {
        struct gw_watch *w = L->cur;
        if (!walk(L, w, &budget))
            goto out;
        L->cur = NULL;
        walk_done(L, w);
    }
    for (;;) {
        if (L->work == NULL) {
            L->work = L->pending;
            L->pending = NULL;
        }
        if (L->work == NULL || budget == 0)
            break;
        struct gw_watch *w = L->work;
        L->work = w->pnext;
        w->pending = 0;
        w->busy++;
        w->iter = w->subs;
        if (!walk(L, w, &budget)) {
            L->cur = w;
            goto out;
        }
        walk_done(L, w);
    }
    /* Subs that asked for a wake-up before this round (invariant 3). */
    while (budget > 0 && L->khead != NULL && L->khead->kick_round < round) {
        struct gw_sub *s = L->khead;
        kick_unlink(L, s);
        L->wakes++;
        budget--;
        s->wake(s);
    }
out:
    /* Drop the round's reads. */
    while (L->loaded != NULL) {
        struct gw_watch *w = L->loaded;
        L->loaded = w->lnext;
        cache_clear(w);
        watch_maybe_free(L, w);
    }
    if (L->cur != NULL || L->work != NULL || L->khead != NULL || L->pending != NULL)
        arm(L);
}

/* ---- subs ------------------------------------------------------------------------------- */

void gw_sub_add(struct tr_gateway *g, struct gw_sub *s, enum gw_sub_kind kind, uint64_t run_id, gw_wake_fn wake,
                void *ud)
{
    struct gw_live *L = g->live;
    struct gw_watch *w = watch_find(L, run_id);
    if (w == NULL) {
        if (L->n_watches >= L->n_buckets)
            watch_grow(L);
        w = tr_calloc(1, sizeof *w);
        w->run_id = run_id;
        size_t b = bucket_of(L, run_id);
        w->hnext = L->buckets[b];
        L->buckets[b] = w;
        L->n_watches++;
    }
    s->live = L;
    s->w = w;
    s->run_id = run_id;
    s->kind = kind;
    s->wake = wake;
    s->ud = ud;
    s->kicked = 0;
    s->kprev = s->knext = NULL;
    s->prev = NULL;
    s->next = w->subs;
    if (w->subs != NULL)
        w->subs->prev = s;
    w->subs = s;
    w->n_subs++;
    L->subs_by_kind[kind]++;
}

static struct gw_live *live_of_sub(struct gw_sub *s)
{
    return s->live;
}

void gw_sub_del(struct gw_sub *s)
{
    struct gw_watch *w = s->w;
    if (w == NULL)
        return;
    struct gw_live *L = live_of_sub(s);
    kick_unlink(L, s);
    if (w->iter == s)
        w->iter = s->next;
    if (s->prev != NULL)
        s->prev->next = s->next;
    else
        w->subs = s->next;
    if (s->next != NULL)
        s->next->prev = s->prev;
    s->prev = s->next = NULL;
    s->w = NULL;
    w->n_subs--;
    L->subs_by_kind[s->kind]--;
    watch_maybe_free(L, w);
}

void gw_sub_kick(struct gw_sub *s)
{
    if (s->w == NULL || s->kicked)
        return;
    struct gw_live *L = live_of_sub(s);
    s->kicked = 1;
    s->kick_round = L->round;
    s->knext = NULL;
    s->kprev = L->ktail;
    if (L->ktail != NULL)
        L->ktail->knext = s;
    else
        L->khead = s;
    L->ktail = s;
    arm(L);
}

/* ---- reads -------------------------------------------------------------------------------- */

static void cache_load(struct gw_live *L, struct gw_watch *w, uint64_t after)
{
    struct tr_store *st = L->g->store;
    if (w->loaded)
        cache_clear(w);
    else {
        w->loaded = 1;
        w->lnext = L->loaded;
        L->loaded = w;
    }
    L->reads++;
    w->load_round = L->round;
    w->first = after + 1;
    w->end = false;
    w->failed = false;
    /* The status first: a terminal run has every event journaled. */
    void *buf;
    const struct troupe_state_Run *r;
    int rv = gw_load_run(st, w->run_id, &buf, &r);
    w->terminal = rv != TR_OK || gw_run_terminal(troupe_state_Run_status(r));
    tr_free(buf);
    struct tr_journal_iter *it;
    if (tr_journal_iter_open(st, NULL, w->run_id, after + 1, &it, NULL) != TR_OK) {
        w->failed = true;
        return;
    }
    uint64_t seq;
    const void *ev;
    size_t len, bytes = 0;
    for (;;) {
        if (w->n == GW_LIVE_CACHE_EVENTS || bytes >= GW_LIVE_CACHE_BYTES)
            break;
        rv = tr_journal_iter_next(it, &seq, &ev, &len, NULL);
        if (rv <= 0) {
            w->end = rv == 0;
            w->failed = rv < 0;
            break;
        }
        const struct troupe_journal_Event *e = troupe_journal_Event_verify_as_root(ev, len, NULL);
        if (e == NULL) {
            tr_log(TR_LOG_ERROR, "gateway: journal event %llu of run %016llx does not verify; skipped",
                   (unsigned long long)seq, (unsigned long long)w->run_id);
            continue;
        }
        if (w->n == w->cap) {
            w->cap = w->cap ? 2 * w->cap : 16;
            w->ev = tr_realloc(w->ev, w->cap * sizeof *w->ev);
        }
        struct gw_ev *x = &w->ev[w->n++];
        x->seq = seq;
        x->type = troupe_journal_Event_data_type(e);
        x->raw = tr_malloc(len);
        memcpy(x->raw, ev, len);
        x->raw_len = len;
        x->json = NULL;
        x->json_len = 0;
        x->sse = NULL;
        x->sse_len = 0;
        bytes += len;
    }
    tr_journal_iter_close(it);
    /* Skipped events must not be asked for again: the read covers up to the
     * last seq seen, which the subs' cursors move past. */
}

int gw_live_read(struct gw_sub *s, uint64_t after, struct gw_evs *out)
{
    struct gw_live *L = live_of_sub(s);
    struct gw_watch *w = s->w;
    memset(out, 0, sizeof *out);
    if (w == NULL)
        return TR_EINVAL;
    bool valid = w->loaded && w->load_round == L->round && !w->failed;
    /* The read serves after when it starts at or before after + 1 and either
     * reached the journal's end or holds events past after. */
    if (!valid || after + 1 < w->first || (!w->end && (w->n == 0 || w->ev[w->n - 1].seq <= after)))
        cache_load(L, w, after);
    if (w->failed)
        return TR_EIO;
    size_t i = 0;
    while (i < w->n && w->ev[i].seq <= after)
        i++;
    out->ev = w->ev + i;
    out->n = w->n - i;
    out->end = w->end;
    out->terminal = w->terminal;
    return TR_OK;
}

const char *gw_ev_json(struct gw_ev *e, size_t *len)
{
    if (e->json == NULL) {
        const struct troupe_journal_Event *ev = troupe_journal_Event_as_root(e->raw);
        json_t *j = gw_render_event(ev);
        e->json = json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(12));
        json_decref(j);
        e->json_len = e->json != NULL ? strlen(e->json) : 0;
    }
    if (e->json == NULL) {
        *len = 2;
        return "{}";
    }
    *len = e->json_len;
    return e->json;
}

const char *gw_ev_sse(struct gw_ev *e, size_t *len)
{
    if (e->sse == NULL) {
        size_t jl;
        const char *j = gw_ev_json(e, &jl);
        struct tr_buf b = { 0 };
        tr_buf_printf(&b, "id: %llu\nevent: %s\ndata: ", (unsigned long long)e->seq, gw_event_type_name(e->type));
        tr_buf_add(&b, j, jl);
        tr_buf_add(&b, "\n\n", 2);
        e->sse = b.p;
        e->sse_len = b.len;
    }
    *len = e->sse_len;
    return e->sse;
}

/* ---- slow readers ---------------------------------------------------------------------------- */

void gw_live_pause(struct tr_gateway *g, struct gw_sub *s)
{
    if (!s->paused) {
        s->paused = 1;
        s->paused_at_ms = uv_now(g->loop);
    }
}

bool gw_live_stalled(struct tr_gateway *g, struct gw_sub *s)
{
    if (!s->paused || uv_now(g->loop) - s->paused_at_ms <= g->stall_ms)
        return false;
    g->slow_disconnects++;
    return true;
}

/* ---- lifecycle ---------------------------------------------------------------------------------- */

static void beat_cb(uv_timer_t *t)
{
    struct gw_live *L = t->data;
    /* A beat only queues a write (an error closes its connection later, from
     * a callback), so the lists do not change under this walk. */
    for (size_t b = 0; b < L->n_buckets; b++)
        for (struct gw_watch *w = L->buckets[b]; w != NULL; w = w->hnext)
            for (struct gw_sub *s = w->subs; s != NULL; s = s->next)
                if (s->beat != NULL)
                    s->beat(s);
}

int gw_live_start(struct tr_gateway *g)
{
    struct gw_live *L = tr_calloc(1, sizeof *L);
    L->g = g;
    L->n_buckets = 64;
    L->buckets = tr_calloc(L->n_buckets, sizeof *L->buckets);
    uv_idle_init(g->loop, &L->idle);
    L->idle.data = L;
    uv_timer_init(g->loop, &L->beat);
    L->beat.data = L;
    uv_timer_start(&L->beat, beat_cb, g->keepalive_ms, g->keepalive_ms);
    L->handles = 2;
    g->live = L;
    tr_state_on_applied(g->state, on_applied, L);
    return TR_OK;
}

static void live_closed(uv_handle_t *h)
{
    struct gw_live *L = h->data;
    if (--L->handles > 0)
        return;
    tr_free(L->buckets);
    tr_free(L);
}

void gw_live_close(struct tr_gateway *g)
{
    struct gw_live *L = g->live;
    if (L == NULL)
        return;
    g->live = NULL;
    L->closing = 1;
    tr_state_on_applied(g->state, NULL, NULL);
    uv_idle_stop(&L->idle);
    uv_timer_stop(&L->beat);
    for (size_t b = 0; b < L->n_buckets; b++) {
        while (L->buckets[b] != NULL) {
            struct gw_watch *w = L->buckets[b];
            for (struct gw_sub *s = w->subs; s != NULL; s = s->next)
                s->w = NULL; /* dropped silently (none are expected) */
            w->subs = NULL;
            watch_free(L, w);
        }
    }
    L->pending = L->work = L->cur = L->loaded = NULL;
    L->khead = L->ktail = NULL;
    uv_close((uv_handle_t *)&L->idle, live_closed);
    uv_close((uv_handle_t *)&L->beat, live_closed);
}

static size_t queued_of(struct gw_sub *s)
{
    return s->queued != NULL ? s->queued(s) : 0;
}

char *gw_live_metrics(struct tr_gateway *g)
{
    struct gw_live *L = g->live;
    struct tr_buf t = { 0 };
    if (L == NULL)
        return tr_strdup("");
    static const char *const kinds[GW_SUB_KINDS] = { "long_poll", "sse", "websocket", "protocol" };
    size_t queued = 0, max_queued = 0;
    unsigned paused = 0;
    for (size_t b = 0; b < L->n_buckets; b++)
        for (struct gw_watch *w = L->buckets[b]; w != NULL; w = w->hnext)
            for (struct gw_sub *s = w->subs; s != NULL; s = s->next) {
                size_t q = queued_of(s);
                queued += q;
                if (q > max_queued)
                    max_queued = q;
                paused += s->paused != 0;
            }
    tr_buf_printf(&t, "# HELP troupe_gateway_live_subscribers Waiters on live run updates, by kind.\n"
                      "# TYPE troupe_gateway_live_subscribers gauge\n");
    for (int k = 0; k < GW_SUB_KINDS; k++)
        tr_buf_printf(&t, "troupe_gateway_live_subscribers{kind=\"%s\"} %llu\n", kinds[k],
                      (unsigned long long)L->subs_by_kind[k]);
    tr_buf_printf(&t,
                  "# HELP troupe_gateway_live_queued_bytes Unsent bytes of the connections of live streams.\n"
                  "# TYPE troupe_gateway_live_queued_bytes gauge\n"
                  "troupe_gateway_live_queued_bytes %zu\n"
                  "# HELP troupe_gateway_live_max_queued_bytes Unsent bytes of the most backed-up live stream.\n"
                  "# TYPE troupe_gateway_live_max_queued_bytes gauge\n"
                  "troupe_gateway_live_max_queued_bytes %zu\n"
                  "# HELP troupe_gateway_live_paused Live streams paused for a drain.\n"
                  "# TYPE troupe_gateway_live_paused gauge\n"
                  "troupe_gateway_live_paused %u\n"
                  "# HELP troupe_gateway_slow_disconnects_total Streams dropped for not reading.\n"
                  "# TYPE troupe_gateway_slow_disconnects_total counter\n"
                  "troupe_gateway_slow_disconnects_total %llu\n"
                  "# HELP troupe_gateway_live_rounds_total Wake-up rounds run.\n"
                  "# TYPE troupe_gateway_live_rounds_total counter\n"
                  "troupe_gateway_live_rounds_total %llu\n"
                  "# HELP troupe_gateway_live_wakes_total Waiters woken.\n"
                  "# TYPE troupe_gateway_live_wakes_total counter\n"
                  "troupe_gateway_live_wakes_total %llu\n"
                  "# HELP troupe_gateway_live_reads_total Journal reads shared by the waiters of a run.\n"
                  "# TYPE troupe_gateway_live_reads_total counter\n"
                  "troupe_gateway_live_reads_total %llu\n"
                  "# HELP troupe_gateway_websockets Open WebSocket connections.\n"
                  "# TYPE troupe_gateway_websockets gauge\n"
                  "troupe_gateway_websockets %u\n",
                  queued, max_queued, paused, (unsigned long long)g->slow_disconnects,
                  (unsigned long long)L->rounds, (unsigned long long)L->wakes, (unsigned long long)L->reads,
                  gw_ws_count(g));
    return t.p;
}
