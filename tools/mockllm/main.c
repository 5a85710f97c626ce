/* troupe-mockllm: a scripted server speaking the OpenAI Chat Completions wire
 * format, for tests and the offline demo. See tools/mockllm/README.md.
 *
 *   troupe-mockllm --listen 127.0.0.1:PORT --script FILE.json [--port-file F]
 *                  [--require-key K] [--max-body BYTES]
 *
 * Exit status: 0 after SIGINT/SIGTERM, 1 when it cannot start, 2 on bad usage. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/mockllm/mockllm.h"

struct opts {
    char host[256];
    int port;
    const char *script;
    const char *port_file;
    const char *require_key;
    size_t max_body;
};

struct app {
    uv_loop_t loop;
    uv_signal_t sigint, sigterm;
    struct mock_server *server;
    int stopping;
};

static int usage(void)
{
    fprintf(stderr, "usage: troupe-mockllm --listen HOST:PORT --script FILE.json "
                    "[--port-file FILE] [--require-key KEY] [--max-body BYTES]\n");
    return 2;
}

static int parse_listen(const char *s, struct opts *o)
{
    const char *colon = strrchr(s, ':');
    if (colon == NULL || colon == s || (size_t)(colon - s) >= sizeof(o->host))
        return -1;
    char *end;
    errno = 0;
    long port = strtol(colon + 1, &end, 10);
    if (errno != 0 || *end != '\0' || end == colon + 1 || port < 0 || port > 65535)
        return -1;
    memcpy(o->host, s, (size_t)(colon - s));
    o->host[colon - s] = '\0';
    o->port = (int)port;
    return 0;
}

static int parse_args(int argc, char **argv, struct opts *o)
{
    memset(o, 0, sizeof(*o));
    snprintf(o->host, sizeof(o->host), "127.0.0.1");
    for (int i = 1; i < argc; i += 2) { /* every option takes a value */
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (v == NULL)
            return -1;
        if (strcmp(a, "--listen") == 0) {
            if (parse_listen(v, o) != 0)
                return -1;
        } else if (strcmp(a, "--script") == 0) {
            o->script = v;
        } else if (strcmp(a, "--port-file") == 0) {
            o->port_file = v;
        } else if (strcmp(a, "--require-key") == 0) {
            o->require_key = v;
        } else if (strcmp(a, "--max-body") == 0) {
            char *end;
            unsigned long long n = strtoull(v, &end, 10);
            if (*end != '\0' || n == 0 || n > (1ull << 30))
                return -1;
            o->max_body = (size_t)n;
        } else {
            return -1;
        }
    }
    return o->script != NULL ? 0 : -1;
}

/* Write the port to path atomically, so a poller never reads half a number. */
static int write_port_file(const char *path, int port, struct tr_err *err)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
        return tr_err_set(err, TR_EINVAL, "port file path too long");
    FILE *f = fopen(tmp, "w");
    if (f == NULL)
        return tr_err_set(err, TR_EIO, "open %s: %s", tmp, strerror(errno));
    int bad = fprintf(f, "%d\n", port) < 0;
    bad |= fclose(f) != 0;
    if (bad || rename(tmp, path) != 0) {
        remove(tmp);
        return tr_err_set(err, TR_EIO, "write %s: %s", path, strerror(errno));
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
    tr_log(TR_LOG_INFO, "troupe-mockllm: signal %d, shutting down", signum);
    mock_server_close(app->server, server_closed_cb, app);
}

int main(int argc, char **argv)
{
    struct opts o;
    struct app app;
    struct tr_err err = {0};
    struct mock_scripts *scripts;

    if (parse_args(argc, argv, &o) != 0)
        return usage();
    signal(SIGPIPE, SIG_IGN);
    if (mock_scripts_load(o.script, &scripts, &err) != 0) {
        fprintf(stderr, "troupe-mockllm: script %s\n", err.msg);
        return 1;
    }
    struct mock_engine_opts eo = {.require_key = o.require_key};
    struct mock_engine *engine = mock_engine_new(scripts, &eo);

    memset(&app, 0, sizeof(app));
    if (uv_loop_init(&app.loop) != 0) {
        fprintf(stderr, "troupe-mockllm: uv_loop_init failed\n");
        goto err_after_engine;
    }
    struct mock_server_opts so = {.host = o.host, .port = o.port, .max_body_bytes = o.max_body};
    if (mock_server_start(&app.loop, &so, engine, &app.server, &err) != 0) {
        fprintf(stderr, "troupe-mockllm: listen %s:%d: %s\n", o.host, o.port, err.msg);
        goto err_after_loop;
    }
    int port = mock_server_port(app.server);
    if (o.port_file != NULL && write_port_file(o.port_file, port, &err) != 0) {
        fprintf(stderr, "troupe-mockllm: %s\n", err.msg);
        goto err_after_server;
    }
    uv_signal_init(&app.loop, &app.sigint);
    uv_signal_init(&app.loop, &app.sigterm);
    app.sigint.data = app.sigterm.data = &app;
    uv_signal_start(&app.sigint, signal_cb, SIGINT);
    uv_signal_start(&app.sigterm, signal_cb, SIGTERM);
    tr_log(TR_LOG_INFO, "troupe-mockllm: listening on %s:%d, %zu scripts from %s", o.host, port,
           scripts->n_scripts, o.script);

    uv_run(&app.loop, UV_RUN_DEFAULT);
    uv_loop_close(&app.loop);
    mock_engine_free(engine);
    return 0;

err_after_server:
    mock_server_close(app.server, NULL, NULL);
    uv_run(&app.loop, UV_RUN_DEFAULT);
err_after_loop:
    uv_loop_close(&app.loop);
err_after_engine:
    mock_engine_free(engine);
    return 1;
}
