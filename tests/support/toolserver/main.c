/* troupe-toolserver: a deduplicating HTTP tool server for tests, the demo and
 * the chaos suite, on tr_httpd.
 *
 *   troupe-toolserver [--listen 127.0.0.1:PORT] [--port-file F] [--log F]
 *
 * POST (or PUT, PATCH, DELETE) /tools/<name> with header Idempotency-Key performs the tool's effect
 * once per key: the first receipt runs it and records the answer; later
 * receipts of the key (resends) get the recorded answer, or wait for it while
 * the first is still running. 5xx answers record nothing (nothing was done),
 * so a resend runs the tool again. A request without a key is refused (400)
 * and counted. Every receipt is appended to the --log file as one JSON line
 *   {"key": str, "tool": str, "receipt": "first"|"resend", "time": RFC 3339, ...}
 * and flushed, so a test can check "no effect twice" across kills of the
 * troupe nodes that call this server. The line also has "time_us" (the same
 * instant in microseconds since the epoch) and, when the request carried
 * X-Troupe-Caller (troupe's tool executor sends "node=N run=ID"), "caller":
 * the chaos suite checks with it which node acted for a run, and when.
 *
 * Tools (arguments are the JSON body):
 *   echo      the body, unchanged (must be JSON)
 *   add       {"a": num, "b": num} -> {"sum": num}
 *   sleep     {"ms": int} -> {"slept_ms": int} after ms (a uv timer)
 *   fail      always 500, never recorded
 *   flaky     {"fail_times": n}: 503 for the first n receipts of a key, then
 *             performs the effect -> {"ok": true, "receipts": int}
 *   payment   {"amount": int > 0}: the "irreversible" effect; adds amount to
 *             the balance once per key -> {"charged", "balance"}
 *   big       {"bytes": N} -> N bytes of text/plain, "0123456789" repeated
 *   status    {"code": int, "body": str} -> that status and body
 *   redirect  {"location": str} -> 302 with that Location
 *
 * GET /_stats: {"requests", "keys", "effects", "resends",
 *   "duplicates_performed" (must stay 0), "missing_keys", "conflicts",
 *   "balance", "by_tool": {name: receipts}}.
 * GET /_keys/<key>: {"key", "tool", "received", "effects", "done", "status",
 *   and of the first receipt: "method", "content_type", "x_headers": {}}.
 *
 * Exit status: 0 after SIGINT/SIGTERM, 1 when it cannot start, 2 on bad usage. */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>

#include <jansson.h>

#include "runtime/runtime.h"

#define BUCKETS 4096
#define MAX_KEY 256
#define MAX_SLEEP_MS 600000
#define MAX_BIG (64u * 1024 * 1024)

struct waiter {
    struct waiter *prev, *next;
    struct tr_httpd_req *req;
    struct record *rec;
};

struct sleeper {
    uv_timer_t timer;
    struct sleeper *prev, *next;
    struct record *rec;
    struct app *app;
    int64_t ms;
};

struct record {
    struct record *next;   /* hash chain */
    char *key;
    char *tool;
    uint64_t received;
    uint64_t effects;
    int running;           /* a sleep is in progress */
    int done;              /* answer recorded */
    int status;
    char *body;
    size_t body_len;
    char *location;
    int text;              /* text/plain, not JSON */
    struct waiter *waiters;
    json_t *seen;          /* first receipt: method, content_type, x-* headers */
};

struct app {
    uv_loop_t loop;
    uv_signal_t sigint, sigterm;
    struct tr_httpd *server;
    FILE *log;
    int stopping;
    struct record *buckets[BUCKETS];
    struct sleeper *sleepers;
    json_t *by_tool;
    uint64_t requests, keys, effects, resends, duplicates, missing_keys, conflicts;
    int64_t balance;
};

struct answer {
    int status;
    char *body;            /* tr_malloc'd */
    size_t len;
    int text;
    char *location;
    int record;            /* keep it for resends */
};

/* ------------------------------------------------------------------------ */

static uint64_t hash(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static struct record *record_get(struct app *app, const char *key, int create)
{
    uint64_t b = hash(key) % BUCKETS;
    for (struct record *r = app->buckets[b]; r; r = r->next)
        if (strcmp(r->key, key) == 0)
            return r;
    if (!create)
        return NULL;
    struct record *r = tr_calloc(1, sizeof(*r));
    r->key = tr_strdup(key);
    r->next = app->buckets[b];
    app->buckets[b] = r;
    app->keys++;
    return r;
}

static void json_answer(struct answer *a, int status, json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(j);
    a->status = status;
    a->len = strlen(s);
    a->body = tr_memdup(s, a->len + 1);
    free(s);
}

static void error_answer(struct answer *a, int status, const char *msg)
{
    json_answer(a, status, json_pack("{s:s}", "error", msg));
}

static void respond(struct tr_httpd_req *req, int status, const char *body, size_t len, int text,
                    const char *location)
{
    char loc[1024];
    const char *h[2];
    size_t n = 0;
    h[n++] = text ? "Content-Type: text/plain" : "Content-Type: application/json";
    if (location) {
        snprintf(loc, sizeof(loc), "Location: %s", location);
        h[n++] = loc;
    }
    tr_httpd_respond(req, status, h, n, body, len);
}

static void respond_json(struct tr_httpd_req *req, int status, json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    respond(req, status, s, strlen(s), 0, NULL);
    free(s);
}

static void log_receipt(struct app *app, const char *key, const char *tool, int first, const char *caller)
{
    char when[64];
    struct timeval tv;
    struct tm tm;
    if (!app->log)
        return;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    size_t n = strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(when + n, sizeof(when) - n, ".%06ldZ", (long)tv.tv_usec);
    json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:I}", "key", key, "tool", tool, "receipt", first ? "first" : "resend",
                          "time", when, "time_us", (json_int_t)tv.tv_sec * 1000000 + tv.tv_usec);
    if (caller)
        json_object_set_new(j, "caller", json_string(caller));
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    fprintf(app->log, "%s\n", s);
    fflush(app->log);
    free(s);
}

/* ------------------------------------------------------------------------ */
/* Waiters: requests answered when their key's effect is recorded.            */

static void waiter_close_cb(struct tr_httpd_req *req, void *arg)
{
    struct waiter *w = arg;
    if (w->prev)
        w->prev->next = w->next;
    else
        w->rec->waiters = w->next;
    if (w->next)
        w->next->prev = w->prev;
    tr_free(w);
}

static void waiter_add(struct record *rec, struct tr_httpd_req *req)
{
    struct waiter *w = tr_calloc(1, sizeof(*w));
    w->req = req;
    w->rec = rec;
    w->next = rec->waiters;
    if (rec->waiters)
        rec->waiters->prev = w;
    rec->waiters = w;
    tr_httpd_on_close(req, waiter_close_cb, w);
}

static void answer_waiters(struct record *rec)
{
    while (rec->waiters) {
        struct waiter *w = rec->waiters;
        rec->waiters = w->next;
        if (rec->waiters)
            rec->waiters->prev = NULL;
        tr_httpd_on_close(w->req, NULL, NULL);
        respond(w->req, rec->status, rec->body, rec->body_len, rec->text, rec->location);
        tr_free(w);
    }
}

/* Record a's answer as the key's effect. */
static void perform(struct app *app, struct record *rec, struct answer *a)
{
    if (rec->effects > 0)
        app->duplicates++; /* would be a bug: counted, never hidden */
    rec->effects++;
    app->effects++;
    rec->done = 1;
    rec->status = a->status;
    rec->body = a->body;
    rec->body_len = a->len;
    rec->text = a->text;
    rec->location = a->location;
    a->body = NULL;
    a->location = NULL;
}

/* ------------------------------------------------------------------------ */
/* Sleep.                                                                     */

static void sleeper_free_cb(uv_handle_t *h)
{
    tr_free(h->data);
}

static void sleeper_unlink(struct app *app, struct sleeper *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        app->sleepers = s->next;
    if (s->next)
        s->next->prev = s->prev;
}

static void sleep_cb(uv_timer_t *t)
{
    struct sleeper *s = t->data;
    struct answer a = {0};
    json_answer(&a, 200, json_pack("{s:I}", "slept_ms", (json_int_t)s->ms));
    s->rec->running = 0;
    perform(s->app, s->rec, &a);
    answer_waiters(s->rec);
    sleeper_unlink(s->app, s);
    uv_close((uv_handle_t *)&s->timer, sleeper_free_cb);
}

/* ------------------------------------------------------------------------ */
/* Tools: compute the answer of a first receipt (or of a resend after 5xx).   */

static void tool_add(json_t *args, struct answer *a)
{
    json_t *x = json_object_get(args, "a"), *y = json_object_get(args, "b");
    if (!json_is_number(x) || !json_is_number(y)) {
        error_answer(a, 400, "add needs numbers a and b");
        return;
    }
    if (json_is_integer(x) && json_is_integer(y))
        json_answer(a, 200, json_pack("{s:I}", "sum", json_integer_value(x) + json_integer_value(y)));
    else
        json_answer(a, 200, json_pack("{s:f}", "sum", json_number_value(x) + json_number_value(y)));
    a->record = 1;
}

static void tool_big(json_t *args, struct answer *a)
{
    json_t *n = json_object_get(args, "bytes");
    if (!json_is_integer(n) || json_integer_value(n) < 0 || json_integer_value(n) > MAX_BIG) {
        error_answer(a, 400, "big needs bytes between 0 and 64 MiB");
        return;
    }
    a->len = (size_t)json_integer_value(n);
    a->body = tr_malloc(a->len + 1);
    for (size_t i = 0; i < a->len; i++)
        a->body[i] = (char)('0' + i % 10);
    a->status = 200;
    a->text = 1;
    a->record = 1;
}

static void tool_status(json_t *args, struct answer *a)
{
    json_t *code = json_object_get(args, "code"), *body = json_object_get(args, "body");
    if (!json_is_integer(code) || json_integer_value(code) < 200 || json_integer_value(code) > 599) {
        error_answer(a, 400, "status needs code between 200 and 599");
        return;
    }
    a->status = (int)json_integer_value(code);
    a->text = 1;
    a->body = tr_strdup(json_is_string(body) ? json_string_value(body) : "");
    a->len = strlen(a->body);
    a->record = a->status < 500;
}

/* Run tool `name` for a receipt of rec. Returns 1 when the answer is in a,
 * 0 when it comes later (sleep). */
static int run_tool(struct app *app, struct record *rec, const char *name, const struct tr_httpd_req *req,
                    struct answer *a)
{
    json_error_t jerr;
    json_t *args = json_loadb(req->body, req->body_len, JSON_DECODE_ANY, &jerr);
    int now = 1;

    if (!args) {
        error_answer(a, 400, "body is not JSON");
        return 1;
    }
    if (strcmp(name, "echo") == 0) {
        a->status = 200;
        a->body = tr_memdup(req->body, req->body_len + 1);
        a->len = req->body_len;
        a->record = 1;
    } else if (strcmp(name, "add") == 0) {
        tool_add(args, a);
    } else if (strcmp(name, "sleep") == 0) {
        json_t *ms = json_object_get(args, "ms");
        if (!json_is_integer(ms) || json_integer_value(ms) < 0 || json_integer_value(ms) > MAX_SLEEP_MS) {
            error_answer(a, 400, "sleep needs ms between 0 and 600000");
        } else {
            struct sleeper *s = tr_calloc(1, sizeof(*s));
            s->app = app;
            s->rec = rec;
            s->ms = json_integer_value(ms);
            s->timer.data = s;
            uv_timer_init(&app->loop, &s->timer);
            uv_timer_start(&s->timer, sleep_cb, (uint64_t)s->ms, 0);
            s->next = app->sleepers;
            if (app->sleepers)
                app->sleepers->prev = s;
            app->sleepers = s;
            rec->running = 1;
            now = 0;
        }
    } else if (strcmp(name, "fail") == 0) {
        error_answer(a, 500, "fail: this tool always fails");
    } else if (strcmp(name, "flaky") == 0) {
        json_t *n = json_object_get(args, "fail_times");
        json_int_t times = json_is_integer(n) ? json_integer_value(n) : 1;
        if ((json_int_t)rec->received <= times) {
            error_answer(a, 503, "flaky: failing this receipt on purpose");
        } else {
            json_answer(a, 200, json_pack("{s:b, s:I}", "ok", 1, "receipts", (json_int_t)rec->received));
            a->record = 1;
        }
    } else if (strcmp(name, "payment") == 0) {
        json_t *amt = json_object_get(args, "amount");
        json_int_t v = amt ? (json_is_integer(amt) ? json_integer_value(amt) : -1) : 1;
        if (v <= 0 || v > 1000000000) {
            error_answer(a, 400, "payment needs a positive integer amount");
        } else {
            app->balance += v;
            json_answer(a, 200, json_pack("{s:I, s:I}", "charged", v, "balance", (json_int_t)app->balance));
            a->record = 1;
        }
    } else if (strcmp(name, "big") == 0) {
        tool_big(args, a);
    } else if (strcmp(name, "status") == 0) {
        tool_status(args, a);
    } else if (strcmp(name, "redirect") == 0) {
        json_t *loc = json_object_get(args, "location");
        if (!json_is_string(loc) || strpbrk(json_string_value(loc), "\r\n")) {
            error_answer(a, 400, "redirect needs a location");
        } else {
            json_answer(a, 302, json_pack("{s:s}", "redirect", json_string_value(loc)));
            a->location = tr_strdup(json_string_value(loc));
            a->record = 1;
        }
    } else {
        error_answer(a, 404, "no such tool");
    }
    json_decref(args);
    return now;
}

/* ------------------------------------------------------------------------ */
/* Routes.                                                                    */

/* What a test may want to check about the first receipt of a key. */
static json_t *describe(const struct tr_httpd_req *req)
{
    const char *ct = tr_httpd_header(req, "Content-Type");
    json_t *x = json_object();
    for (size_t i = 0; i < req->n_headers; i++)
        if (strncasecmp(req->headers[i].name, "x-", 2) == 0)
            json_object_set_new(x, req->headers[i].name, json_string(req->headers[i].value));
    return json_pack("{s:s, s:s, s:o}", "method", req->method, "content_type", ct ? ct : "", "x_headers", x);
}

static void on_tool(struct app *app, struct tr_httpd_req *req, const char *name)
{
    const char *key = tr_httpd_header(req, "Idempotency-Key");
    struct answer a = {0};

    app->requests++;
    json_t *cnt = json_object_get(app->by_tool, name);
    json_object_set_new(app->by_tool, name, json_integer((cnt ? json_integer_value(cnt) : 0) + 1));
    if (!key || !*key || strlen(key) > MAX_KEY) {
        app->missing_keys++;
        respond_json(req, 400, json_pack("{s:s}", "error", "missing or over-long Idempotency-Key"));
        return;
    }
    struct record *rec = record_get(app, key, 1);
    if (!rec->tool)
        rec->tool = tr_strdup(name);
    if (strcmp(rec->tool, name) != 0) {
        app->conflicts++;
        respond_json(req, 422, json_pack("{s:s}", "error", "Idempotency-Key reused for another tool"));
        return;
    }
    rec->received++;
    if (!rec->seen)
        rec->seen = describe(req);
    if (rec->received > 1)
        app->resends++;
    log_receipt(app, key, name, rec->received == 1, tr_httpd_header(req, "X-Troupe-Caller"));

    if (rec->done) {
        respond(req, rec->status, rec->body, rec->body_len, rec->text, rec->location);
        return;
    }
    if (rec->running) {
        waiter_add(rec, req);
        return;
    }
    if (!run_tool(app, rec, name, req, &a)) {
        waiter_add(rec, req);
        return;
    }
    if (a.record) {
        perform(app, rec, &a);
        respond(req, rec->status, rec->body, rec->body_len, rec->text, rec->location);
        return;
    }
    respond(req, a.status, a.body, a.len, a.text, a.location);
    tr_free(a.body);
    tr_free(a.location);
}

static void on_stats(struct app *app, struct tr_httpd_req *req)
{
    json_t *j = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:O}", "requests", (json_int_t)app->requests,
                          "keys", (json_int_t)app->keys, "effects", (json_int_t)app->effects, "resends",
                          (json_int_t)app->resends, "duplicates_performed", (json_int_t)app->duplicates,
                          "missing_keys", (json_int_t)app->missing_keys, "conflicts", (json_int_t)app->conflicts,
                          "balance", (json_int_t)app->balance, "by_tool", app->by_tool);
    respond_json(req, 200, j);
}

static void on_key(struct app *app, struct tr_httpd_req *req, const char *key)
{
    struct record *rec = record_get(app, key, 0);
    if (!rec) {
        respond_json(req, 404, json_pack("{s:s}", "error", "unknown key"));
        return;
    }
    json_t *j = json_pack("{s:s, s:s, s:I, s:I, s:b, s:i}", "key", rec->key, "tool", rec->tool ? rec->tool : "",
                          "received", (json_int_t)rec->received, "effects", (json_int_t)rec->effects, "done",
                          rec->done, "status", rec->status);
    if (rec->seen)
        json_object_update(j, rec->seen);
    respond_json(req, 200, j);
}

static void on_request(struct tr_httpd_req *req, void *ud)
{
    struct app *app = ud;
    const char *p = req->path;
    int tool_method = strcmp(req->method, "POST") == 0 || strcmp(req->method, "PUT") == 0 ||
                      strcmp(req->method, "PATCH") == 0 || strcmp(req->method, "DELETE") == 0;
    if (tool_method && strncmp(p, "/tools/", 7) == 0 && p[7]) {
        on_tool(app, req, p + 7);
    } else if (strcmp(req->method, "GET") == 0 && strcmp(p, "/_stats") == 0) {
        on_stats(app, req);
    } else if (strcmp(req->method, "GET") == 0 && strncmp(p, "/_keys/", 7) == 0 && p[7]) {
        on_key(app, req, p + 7);
    } else {
        respond_json(req, 404, json_pack("{s:s}", "error", "not found"));
    }
}

/* ------------------------------------------------------------------------ */
/* Process.                                                                   */

static int usage(void)
{
    fprintf(stderr, "usage: troupe-toolserver [--listen HOST:PORT] [--port-file FILE] [--log FILE]\n");
    return 2;
}

static int parse_listen(const char *s, char *host, size_t cap, int *port)
{
    const char *colon = strrchr(s, ':');
    char *end;
    if (!colon || colon == s || (size_t)(colon - s) >= cap)
        return -1;
    errno = 0;
    long v = strtol(colon + 1, &end, 10);
    if (errno || *end || end == colon + 1 || v < 0 || v > 65535)
        return -1;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    *port = (int)v;
    return 0;
}

static int write_port_file(const char *path, int port)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
        return -1;
    FILE *f = fopen(tmp, "w");
    if (!f)
        return -1;
    int bad = fprintf(f, "%d\n", port) < 0;
    bad |= fclose(f) != 0;
    if (bad || rename(tmp, path) != 0) {
        remove(tmp);
        return -1;
    }
    return 0;
}

static void server_closed_cb(void *arg)
{
    struct app *app = arg;
    uv_close((uv_handle_t *)&app->sigint, NULL);
    uv_close((uv_handle_t *)&app->sigterm, NULL);
}

static void signal_cb(uv_signal_t *h, int signum)
{
    struct app *app = h->data;
    if (app->stopping)
        return;
    app->stopping = 1;
    tr_log(TR_LOG_INFO, "troupe-toolserver: signal %d, shutting down", signum);
    while (app->sleepers) {
        struct sleeper *s = app->sleepers;
        sleeper_unlink(app, s);
        uv_close((uv_handle_t *)&s->timer, sleeper_free_cb);
    }
    tr_httpd_close(app->server, server_closed_cb, app);
}

static void free_records(struct app *app)
{
    for (size_t b = 0; b < BUCKETS; b++) {
        while (app->buckets[b]) {
            struct record *r = app->buckets[b];
            app->buckets[b] = r->next;
            tr_free(r->key);
            tr_free(r->tool);
            tr_free(r->body);
            tr_free(r->location);
            json_decref(r->seen);
            tr_free(r);
        }
    }
}

int main(int argc, char **argv)
{
    static struct app app;
    char host[256] = "127.0.0.1";
    int port = 0;
    const char *port_file = NULL, *log_path = NULL;
    struct tr_err err = {0};

    for (int i = 1; i < argc; i += 2) {
        if (i + 1 >= argc)
            return usage();
        if (strcmp(argv[i], "--listen") == 0) {
            if (parse_listen(argv[i + 1], host, sizeof(host), &port) != 0)
                return usage();
        } else if (strcmp(argv[i], "--port-file") == 0) {
            port_file = argv[i + 1];
        } else if (strcmp(argv[i], "--log") == 0) {
            log_path = argv[i + 1];
        } else {
            return usage();
        }
    }
    signal(SIGPIPE, SIG_IGN);
    if (log_path && !(app.log = fopen(log_path, "a"))) {
        fprintf(stderr, "troupe-toolserver: open %s: %s\n", log_path, strerror(errno));
        return 1;
    }
    app.by_tool = json_object();
    if (uv_loop_init(&app.loop) != 0) {
        fprintf(stderr, "troupe-toolserver: uv_loop_init failed\n");
        return 1;
    }
    struct tr_httpd_opts so = {.host = host, .port = port, .on_request = on_request, .ud = &app};
    if (tr_httpd_start(&app.loop, &so, &app.server, &err) != 0) {
        fprintf(stderr, "troupe-toolserver: listen %s:%d: %s\n", host, port, err.msg);
        uv_loop_close(&app.loop);
        return 1;
    }
    port = tr_httpd_port(app.server);
    uv_signal_init(&app.loop, &app.sigint);
    uv_signal_init(&app.loop, &app.sigterm);
    app.sigint.data = app.sigterm.data = &app;
    uv_signal_start(&app.sigint, signal_cb, SIGINT);
    uv_signal_start(&app.sigterm, signal_cb, SIGTERM);
    if (port_file && write_port_file(port_file, port) != 0) {
        fprintf(stderr, "troupe-toolserver: cannot write port file %s\n", port_file);
        signal_cb(&app.sigterm, SIGTERM);
        uv_run(&app.loop, UV_RUN_DEFAULT);
        uv_loop_close(&app.loop);
        return 1;
    }
    tr_log(TR_LOG_INFO, "troupe-toolserver: listening on %s:%d", host, port);
    uv_run(&app.loop, UV_RUN_DEFAULT);
    uv_loop_close(&app.loop);
    free_records(&app);
    json_decref(app.by_tool);
    if (app.log)
        fclose(app.log);
    return 0;
}
