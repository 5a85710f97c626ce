/* The cluster integration tests' shared fixture (cluster_fixture.c): real
 * troupe nodes (tests/support/harness cluster.c) with troupe-mockllm playing
 * a given script and the tool server, all on loopback in one temp dir.
 *
 * Happy path (a cmocka group setup / teardown):
 *
 *     static struct cf_fixture F;
 *     setup:    struct h_cluster_opts o = { .n = 3, .schedulers = 1 };
 *               cf_start(&F, "tag", script, "receipts.jsonl", &o);
 *               cf_register_tool(&F, 0, "lookup", "lookup", "echo", "read", 0);
 *     tests:    cf_call(&F, "POST", 1, "/v1/runs", body, &status) ...
 *     teardown: cf_stop(&F);
 *
 * Ownership: F owns its temp dir, the cluster and both helper processes
 * until cf_stop, which stops and frees them all (also after a cf_start that
 * failed part way, f having started zeroed). cf_call's JSON is the caller's (json_decref).
 *
 * Failure modes: cf_start returns -1 when any piece does not start;
 * cf_call and cf_register_tool report the HTTP status (0: no answer), never
 * assert: the caller decides. */
#ifndef TR_TESTS_CLUSTER_FIXTURE_H
#define TR_TESTS_CLUSTER_FIXTURE_H

#include <jansson.h>

#include "tests/support/harness/harness.h"

struct cf_fixture {
    char *dir;                        /* h_tmpdir: removed by cf_stop */
    struct h_cluster c;
    struct h_proc mock, tools;
    char mock_base[128], tools_base[128];
    char env_url[256];                /* "OPENAI_BASE_URL=<mock_base>" */
};

/* A temp dir named after tag; dir/script.json holding `script` and
 * troupe-mockllm on it; the tool server (its receipts in dir/<receipts>
 * unless NULL); then the cluster with o, every node's env set to
 * OPENAI_BASE_URL=<mock> and OPENAI_API_KEY=test (o->env is ignored).
 * 0, or -1; cf_stop cleans up either way (f must start zeroed: a static). */
int cf_start(struct cf_fixture *f, const char *tag, const char *script, const char *receipts,
             const struct h_cluster_opts *o);
void cf_stop(struct cf_fixture *f);

/* `method` path on node i's HTTP API with a JSON body (or NULL); the
 * response's JSON (NULL if none) and its status into *status. */
json_t *cf_call(struct cf_fixture *f, const char *method, int i, const char *path, const char *body, long *status);

/* POST /v1/tools through node i: an http tool `name` calling the tool
 * server's /tools/<tool_path>, allowed to 127.0.0.1, of `risk`, with
 * timeout_ms unless 0. The HTTP status. */
long cf_register_tool(struct cf_fixture *f, int i, const char *name, const char *description, const char *tool_path,
                      const char *risk, unsigned timeout_ms);

#endif
