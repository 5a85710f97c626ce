/* The HTTP API of a real `troupe` process: auth with TROUPE_ADMIN_TOKEN,
 * idempotent creation, cancel, tools, bad inputs (the node keeps serving),
 * and that everything acknowledged survives a SIGKILL and restart. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "harness.h"

#define TOKEN "proc-token-1"

static const char *const auth[] = { "Authorization: Bearer " TOKEN, NULL };

static struct h_resp call(struct h_node *n, const char *method, const char *path, const char *body,
                          const char *const *headers)
{
    struct h_resp r;
    char url[512];
    snprintf(url, sizeof url, "%s%s", n->base, path);
    h_http(&r, method, url, body, headers, 30000);
    return r;
}

static void expect(struct h_node *n, const char *method, const char *path, const char *body, long status)
{
    struct h_resp r = call(n, method, path, body, auth);
    if (r.status != status)
        fail_msg("%s %s: expected %ld, got %ld: %s", method, path, status, r.status, r.body ? r.body : "");
    h_resp_free(&r);
    r = call(n, "GET", "/healthz", NULL, NULL);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
}

static const char *jstr(json_t *o, const char *k) { return json_string_value(json_object_get(o, k)); }

static void test_process(void **st)
{
    if (h_bin("troupe") == NULL)
        skip();
    char *dir = h_tmpdir("gw-proc");
    char data[512];
    snprintf(data, sizeof data, "%s/n1", dir);
    char *const env[] = { "TROUPE_ADMIN_TOKEN=" TOKEN, NULL };
    struct h_node n = { 0 };
    assert_int_equal(h_node_start(&n, data, NULL, env), 0);

    /* auth */
    struct h_resp r = call(&n, "GET", "/v1/runs", NULL, NULL);
    assert_int_equal(r.status, 401);
    h_resp_free(&r);

    /* create, same key again, other body */
    const char *const idem[] = { "Authorization: Bearer " TOKEN, "Idempotency-Key: proc-1", NULL };
    r = call(&n, "POST", "/v1/runs", "{\"goal\":\"survive a crash\"}", idem);
    assert_int_equal(r.status, 201);
    assert_true(r.raft_index[0] != 0);
    char *id = strdup(jstr(r.json, "id"));
    h_resp_free(&r);
    r = call(&n, "POST", "/v1/runs", "{\"goal\": \"survive a crash\"}", idem);
    assert_int_equal(r.status, 200);
    assert_string_equal(jstr(r.json, "id"), id);
    h_resp_free(&r);
    r = call(&n, "POST", "/v1/runs", "{\"goal\":\"another goal\"}", idem);
    assert_int_equal(r.status, 409);
    h_resp_free(&r);

    /* cancel (idempotent) */
    char path[256];
    snprintf(path, sizeof path, "/v1/runs/%s/cancel", id);
    r = call(&n, "POST", path, NULL, auth);
    assert_int_equal(r.status, 200);
    char *st1 = strdup(jstr(r.json, "status"));
    assert_true(strcmp(st1, "cancelled") == 0 || strcmp(st1, "failed") == 0 || strcmp(st1, "succeeded") == 0);
    h_resp_free(&r);
    expect(&n, "POST", path, NULL, 200);

    /* a tool */
    r = call(&n, "POST", "/v1/tools", "{\"name\":\"calc\",\"kind\":\"builtin\",\"risk\":\"read\"}", auth);
    assert_int_equal(r.status, 201);
    h_resp_free(&r);

    /* bad inputs */
    expect(&n, "POST", "/v1/runs", "{", 400);
    expect(&n, "POST", "/v1/runs", "{\"goal\":\"g\",\"nope\":1}", 400);
    expect(&n, "GET", "/v1/runs/run_zz", NULL, 404);
    expect(&n, "GET", "/v1/nothing", NULL, 404);
    expect(&n, "DELETE", "/v1/tools", NULL, 405);

    /* SIGKILL and restart: what was acknowledged is still there */
    h_proc_kill(&n.proc, SIGKILL, 1);
    assert_int_equal(h_node_restart(&n), 0);
    snprintf(path, sizeof path, "/v1/runs/%s", id);
    r = call(&n, "GET", path, NULL, auth);
    assert_int_equal(r.status, 200);
    assert_string_equal(jstr(r.json, "status"), st1);
    h_resp_free(&r);
    r = call(&n, "POST", "/v1/runs", "{\"goal\": \"survive a crash\"}", idem);
    assert_int_equal(r.status, 200);
    assert_string_equal(jstr(r.json, "id"), id);
    h_resp_free(&r);
    r = call(&n, "GET", "/v1/tools/calc", NULL, auth);
    assert_int_equal(r.status, 200);
    assert_int_equal(json_integer_value(json_object_get(r.json, "version")), 1);
    h_resp_free(&r);

    /* a clean stop */
    int ws = h_proc_stop(&n.proc, 20000);
    assert_true(WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
    free(st1);
    free(id);
    h_node_free(&n);
    h_tmpdir_remove(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = { cmocka_unit_test(test_process) };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
