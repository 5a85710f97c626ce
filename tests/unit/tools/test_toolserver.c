/* troupe-toolserver as a process: one effect per Idempotency-Key, resends
 * answered from the record (also while the first is still running), 5xx not
 * recorded, missing keys refused and counted, the receipt log, the built-in
 * tools, and a clean exit on SIGTERM with requests in flight.
 * argv[1] is the binary. Waits poll the server's own counters. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <curl/curl.h>

#include "tsrv.h"

static const char *server_bin;
static struct toolsrv srv;

static void tick(void)
{
    struct timespec t = {0, 5 * 1000 * 1000};
    nanosleep(&t, NULL);
}

static long long key_field(const struct toolsrv *s, const char *key, const char *field)
{
    char path[300];
    snprintf(path, sizeof(path), "/_keys/%s", key);
    json_t *j = toolsrv_get_json(s, path);
    json_t *v = json_object_get(j, field);
    long long n = json_is_integer(v) ? json_integer_value(v) : -1;
    json_decref(j);
    return n;
}

/* Poll until key has been received n times (the server's own counter). */
static void wait_received(const struct toolsrv *s, const char *key, long long n)
{
    for (int i = 0; i < 6000 && key_field(s, key, "received") < n; i++)
        tick();
    assert_true(key_field(s, key, "received") >= n);
}

static void test_one_effect_per_key(void **state)
{
    char *b1, *b2;
    long long effects = toolsrv_stat(&srv, "effects");
    long long resends = toolsrv_stat(&srv, "resends");
    assert_int_equal(toolsrv_http(&srv, "POST", "/tools/payment", "p1", "{\"amount\": 40}", &b1), 200);
    assert_int_equal(toolsrv_http(&srv, "POST", "/tools/payment", "p1", "{\"amount\": 40}", &b2), 200);
    assert_string_equal(b1, b2);
    json_error_t jerr;
    json_t *j = json_loads(b1, 0, &jerr);
    assert_int_equal(json_integer_value(json_object_get(j, "charged")), 40);
    json_decref(j);
    free(b1);
    free(b2);
    assert_int_equal(key_field(&srv, "p1", "received"), 2);
    assert_int_equal(key_field(&srv, "p1", "effects"), 1);
    assert_int_equal(toolsrv_stat(&srv, "effects"), effects + 1);
    assert_int_equal(toolsrv_stat(&srv, "resends"), resends + 1);
    assert_int_equal(toolsrv_stat(&srv, "balance"), 40);
    assert_int_equal(toolsrv_log_count(&srv, "p1", "first"), 1);
    assert_int_equal(toolsrv_log_count(&srv, "p1", "resend"), 1);

    /* another key is another effect */
    assert_int_equal(toolsrv_http(&srv, "POST", "/tools/payment", "p2", "{\"amount\": 2}", NULL), 200);
    assert_int_equal(toolsrv_stat(&srv, "balance"), 42);
    assert_int_equal(toolsrv_stat(&srv, "duplicates_performed"), 0);
}

static void test_missing_key_and_conflict(void **state)
{
    long long missing = toolsrv_stat(&srv, "missing_keys");
    long long effects = toolsrv_stat(&srv, "effects");
    assert_int_equal(toolsrv_http(&srv, "POST", "/tools/payment", NULL, "{\"amount\": 1}", NULL), 400);
    assert_int_equal(toolsrv_stat(&srv, "missing_keys"), missing + 1);
    assert_int_equal(toolsrv_stat(&srv, "effects"), effects);

    assert_int_equal(toolsrv_http(&srv, "POST", "/tools/echo", "c1", "{}", NULL), 200);
    assert_int_equal(toolsrv_http(&srv, "POST", "/tools/add", "c1", "{\"a\":1,\"b\":1}", NULL), 422);
    assert_int_equal(toolsrv_stat(&srv, "conflicts"), 1);
}

static void test_5xx_not_recorded(void **state)
{
    assert_int_equal(toolsrv_http(&srv, "POST", "/tools/fail", "x1", "{}", NULL), 500);
    assert_int_equal(toolsrv_http(&srv, "POST", "/tools/fail", "x1", "{}", NULL), 500);
    assert_int_equal(key_field(&srv, "x1", "received"), 2);
    assert_int_equal(key_field(&srv, "x1", "effects"), 0);

    char *b;
    assert_int_equal(toolsrv_http(&srv, "POST", "/tools/flaky", "fl1", "{\"fail_times\": 1}", NULL), 503);
    assert_int_equal(toolsrv_http(&srv, "POST", "/tools/flaky", "fl1", "{\"fail_times\": 1}", &b), 200);
    assert_string_equal(b, "{\"ok\":true,\"receipts\":2}");
    free(b);
    assert_int_equal(toolsrv_http(&srv, "POST", "/tools/flaky", "fl1", "{\"fail_times\": 1}", &b), 200);
    assert_string_equal(b, "{\"ok\":true,\"receipts\":2}"); /* from the record */
    free(b);
    assert_int_equal(key_field(&srv, "fl1", "effects"), 1);
}

struct bg {
    const struct toolsrv *s;
    const char *key;
    const char *body;
    long status;
    char *out;
};

static void *bg_post_sleep(void *arg)
{
    struct bg *b = arg;
    b->status = toolsrv_http(b->s, "POST", "/tools/sleep", b->key, b->body, &b->out);
    return NULL;
}

static void test_resend_while_running(void **state)
{
    pthread_t t;
    struct bg b = {.s = &srv, .key = "s1", .body = "{\"ms\": 1500}"};
    char *out;
    assert_int_equal(pthread_create(&t, NULL, bg_post_sleep, &b), 0);
    wait_received(&srv, "s1", 1);
    assert_int_equal(key_field(&srv, "s1", "effects"), 0); /* still running */
    assert_int_equal(toolsrv_http(&srv, "POST", "/tools/sleep", "s1", "{\"ms\": 1500}", &out), 200);
    pthread_join(t, NULL);
    assert_int_equal(b.status, 200);
    assert_string_equal(out, b.out);
    assert_string_equal(out, "{\"slept_ms\":1500}");
    free(out);
    free(b.out);
    assert_int_equal(key_field(&srv, "s1", "received"), 2);
    assert_int_equal(key_field(&srv, "s1", "effects"), 1);
}

static void test_builtin_tools(void **state)
{
    char *b;
    assert_int_equal(toolsrv_http(&srv, "POST", "/tools/echo", "e1", "{\"x\": [1, 2]}", &b), 200);
    assert_string_equal(b, "{\"x\": [1, 2]}");
    free(b);
    assert_int_equal(toolsrv_http(&srv, "POST", "/tools/add", "a1", "{\"a\": 2, \"b\": 3}", &b), 200);
    assert_string_equal(b, "{\"sum\":5}");
    free(b);
    assert_int_equal(toolsrv_http(&srv, "POST", "/tools/add", "a2", "{\"a\": \"x\"}", NULL), 400);
    assert_int_equal(toolsrv_http(&srv, "POST", "/tools/big", "g1", "{\"bytes\": 123457}", &b), 200);
    assert_int_equal(strlen(b), 123457);
    assert_int_equal(b[123456], '6');
    free(b);
    assert_int_equal(toolsrv_http(&srv, "POST", "/tools/status", "st1", "{\"code\": 418, \"body\": \"tea\"}", &b),
                     418);
    assert_string_equal(b, "tea");
    free(b);
    assert_int_equal(toolsrv_http(&srv, "POST", "/tools/redirect", "r1", "{\"location\": \"http://x/\"}", NULL), 302);
    assert_int_equal(toolsrv_http(&srv, "POST", "/tools/nope", "n1", "{}", NULL), 404);
    assert_int_equal(toolsrv_http(&srv, "POST", "/tools/echo", "e2", "not json", NULL), 400);
    assert_int_equal(toolsrv_http(&srv, "GET", "/elsewhere", NULL, NULL, NULL), 404);

    json_t *st = toolsrv_get_json(&srv, "/_stats");
    const char *fields[] = {"requests", "keys", "effects", "resends", "duplicates_performed", "missing_keys"};
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
        assert_true(json_is_integer(json_object_get(st, fields[i])));
    assert_true(json_is_object(json_object_get(st, "by_tool")));
    assert_int_equal(json_integer_value(json_object_get(st, "duplicates_performed")), 0);
    json_decref(st);
}

static void test_sigterm_in_flight(void **state)
{
    struct toolsrv other;
    pthread_t t;
    assert_int_equal(toolsrv_start(&other, server_bin), 0);
    struct bg b = {.s = &other, .key = "long", .body = "{\"ms\": 600000}"};
    assert_int_equal(pthread_create(&t, NULL, bg_post_sleep, &b), 0);
    wait_received(&other, "long", 1);
    assert_int_equal(toolsrv_stop(&other), 0); /* exits 0 with a sleep pending */
    pthread_join(t, NULL);
    assert_int_equal(b.status, 0);
    free(b.out);
}

static int setup(void **state)
{
    return toolsrv_start(&srv, server_bin);
}

static int teardown(void **state)
{
    return toolsrv_stop(&srv);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s TROUPE-TOOLSERVER\n", argv[0]);
        return 2;
    }
    server_bin = argv[1];
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_effect_per_key),   cmocka_unit_test(test_missing_key_and_conflict),
        cmocka_unit_test(test_5xx_not_recorded),     cmocka_unit_test(test_resend_while_running),
        cmocka_unit_test(test_builtin_tools),        cmocka_unit_test(test_sigterm_in_flight),
    };
    int rv = cmocka_run_group_tests(tests, setup, teardown);
    curl_global_cleanup();
    return rv;
}
