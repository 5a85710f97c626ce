/* The Python client example against a real node (issue 6).
 *
 * Starts troupe-mockllm (mock.json beside this file), troupe-toolserver and a
 * troupe node with an admin token and a --client address; registers a read
 * tool; runs examples/python/troupe_client.py, which authenticates over the
 * FlatBuffers TCP protocol, creates a run that calls the tool, subscribes and
 * prints one line per event until the run ends. Checks: it exits 0; its
 * last event is run.succeeded; the events it printed are exactly the run's
 * journal as the HTTP API reads it (same seqs and types, in order), the
 * model's message and the tool's result among them. Then a wrong key: exit 1
 * with the server's Unauthorized on stderr, and the node keeps serving.
 *
 * Environment (set by CMake): TROUPE_BIN, TROUPE_MOCKLLM_BIN,
 * TROUPE_TOOLSERVER_BIN, TROUPE_PYTHON, TROUPE_PYGEN, TROUPE_PYCLIENT,
 * TROUPE_MOCK_SCRIPT. */
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

#define TOKEN "pyclient-test-token"

extern char **environ;

static int failures;
#define CHECK(cond, ...)                                                                   \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                           \
            fprintf(stderr, __VA_ARGS__);                                                  \
            fputc('\n', stderr);                                                           \
            failures++;                                                                    \
        }                                                                                  \
    } while (0)

/* Run argv with stdout and stderr to files; its exit status or -1. */
static int run_to_files(char *const argv[], const char *out, const char *err)
{
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&fa, 2, err, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    pid_t pid;
    int rv = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rv != 0) {
        fprintf(stderr, "cannot start %s: %s\n", argv[0], strerror(rv));
        return -1;
    }
    int st;
    if (waitpid(pid, &st, 0) != pid)
        return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return strdup("");
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        fwrite(chunk, 1, n, m);
    fclose(f);
    fclose(m);
    return buf;
}

static void print_file(const char *title, const char *text)
{
    fprintf(stderr, "---- %s ----\n%s---- end ----\n", title, text);
}

int main(void)
{
    const char *py = getenv("TROUPE_PYTHON"), *gen = getenv("TROUPE_PYGEN"), *client = getenv("TROUPE_PYCLIENT"),
               *script = getenv("TROUPE_MOCK_SCRIPT");
    if (py == NULL || gen == NULL || client == NULL || script == NULL) {
        fprintf(stderr, "TROUPE_PYTHON, TROUPE_PYGEN, TROUPE_PYCLIENT and TROUPE_MOCK_SCRIPT must be set (ctest sets them)\n");
        return 1;
    }
    char *dir = h_tmpdir("pyclient");
    struct h_proc mock, tools;
    char mock_base[128], tools_base[128], data[512], env_url[200], client_addr[64];
    if (dir == NULL || h_mockllm_start(&mock, script, dir, mock_base, sizeof mock_base) != 0 ||
        h_toolserver_start(&tools, dir, NULL, tools_base, sizeof tools_base) != 0)
        return 1;
    snprintf(data, sizeof data, "%s/node", dir);
    snprintf(env_url, sizeof env_url, "OPENAI_BASE_URL=%s", mock_base);
    snprintf(client_addr, sizeof client_addr, "127.0.0.1:%d", h_free_port());
    char *env[] = { env_url, "OPENAI_API_KEY=test-key", "TROUPE_ADMIN_TOKEN=" TOKEN, "TROUPE_LOG=warn", NULL };
    char *args[] = { "--client", client_addr, NULL };
    struct h_node n;
    if (h_node_start(&n, data, args, env) != 0)
        return 1;

    /* The tool, over HTTP (the example only creates and follows runs). */
    static const char *const auth[] = { "Authorization: Bearer " TOKEN, NULL };
    char url[256], body[512];
    struct h_resp r;
    snprintf(url, sizeof url, "%s/v1/tools", n.base);
    snprintf(body, sizeof body,
             "{\"name\": \"lookup_order\", \"risk\": \"read\", \"kind\": \"http\","
             " \"config\": {\"url\": \"%s/tools/echo\", \"allow\": [\"127.0.0.1\"]}}",
             tools_base);
    h_http(&r, "POST", url, body, auth, 15000);
    CHECK(r.status == 201, "register lookup_order: HTTP %ld %s", r.status, r.body);
    h_resp_free(&r);

    char out[600], err[600];
    snprintf(out, sizeof out, "%s/client.out", dir);
    snprintf(err, sizeof err, "%s/client.err", dir);
    char *argv[] = { (char *)py, (char *)client, "--gen", (char *)gen, "--server", client_addr, "--token", TOKEN,
                     "--model", "mock-gpt", "--system", "[mock:lookup] You look orders up.", "--tool",
                     "lookup_order", "A-1234", NULL };
    int rc = run_to_files(argv, out, err);
    char *o = slurp(out), *e = slurp(err);
    printf("%s", o);
    CHECK(rc == 0, "troupe_client.py exited %d", rc);

    /* "created <id> (...)", then "<seq> <type> <summary>" lines, then "run <id> ended: <type>". */
    char id[64] = "";
    CHECK(sscanf(o, "created %63s", id) == 1, "no 'created' line");
    char want_end[128];
    snprintf(want_end, sizeof want_end, "run %s ended: run.succeeded\n", id);
    CHECK(strstr(o, want_end) != NULL, "the client did not see run.succeeded");
    CHECK(strstr(o, "\"Looking the order up.\"; calls lookup_order(") != NULL, "no model message and tool call");
    CHECK(strstr(o, "tool.completed") != NULL && strstr(o, "A-1234") != NULL, "no tool result");

    snprintf(url, sizeof url, "%s/v1/runs/%s/events", n.base, id);
    h_http(&r, "GET", url, NULL, auth, 15000);
    CHECK(r.status == 200 && json_is_array(r.json), "GET events: HTTP %ld", r.status);
    size_t i;
    json_t *ev;
    const char *line = strchr(o, '\n');
    json_array_foreach(r.json, i, ev)
    {
        long long seq = json_integer_value(json_object_get(ev, "seq"));
        const char *type = json_string_value(json_object_get(ev, "type"));
        long long got_seq = -1;
        char got_type[64] = "";
        if (line != NULL && sscanf(line + 1, "%lld %63s", &got_seq, got_type) == 2) {
            CHECK(got_seq == seq && strcmp(got_type, type) == 0, "event %zu: the client printed %lld %s, the journal has %lld %s",
                  i, got_seq, got_type, seq, type);
        } else {
            CHECK(0, "the client printed no line for event %lld %s", seq, type);
        }
        line = line != NULL ? strchr(line + 1, '\n') : NULL;
    }
    CHECK(json_array_size(r.json) >= 7, "only %zu events", json_array_size(r.json));
    CHECK(line != NULL && strncmp(line + 1, "run ", 4) == 0, "the client printed more events than the journal has");
    h_resp_free(&r);
    if (failures)
        print_file("client stderr", e);
    free(o);
    free(e);

    /* A wrong key: a clear error and exit 1; the node keeps serving. */
    argv[7] = "not-the-token";
    rc = run_to_files(argv, out, err);
    e = slurp(err);
    CHECK(rc == 1, "with a wrong key the client exited %d", rc);
    CHECK(strstr(e, "Unauthorized") != NULL, "no Unauthorized error: %s", e);
    free(e);
    snprintf(url, sizeof url, "%s/healthz", n.base);
    CHECK(h_wait_http_ok(url, 10000) == 0, "the node stopped serving");

    int st = h_proc_stop(&n.proc, 20000);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the node did not exit cleanly (0x%x)", (unsigned)st);
    if (failures)
        h_proc_dump_log(&n.proc, 30);
    h_proc_stop(&mock, 10000);
    h_proc_stop(&tools, 10000);
    h_node_free(&n);
    h_proc_free(&mock);
    h_proc_free(&tools);
    h_tmpdir_remove(dir);
    printf("%s: %d failure(s)\n", failures ? "FAILED" : "ok", failures);
    return failures ? 1 : 0;
}
