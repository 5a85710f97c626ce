/* Test harness: real processes and HTTP over loopback. See harness.h. */
#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

extern char **environ;

uint64_t h_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void nap_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

const char *h_bin(const char *which)
{
    if (strcmp(which, "troupe") == 0)
        return getenv("TROUPE_BIN");
    if (strcmp(which, "mockllm") == 0)
        return getenv("TROUPE_MOCKLLM_BIN");
    if (strcmp(which, "toolserver") == 0)
        return getenv("TROUPE_TOOLSERVER_BIN");
    return NULL;
}

char *h_tmpdir(const char *tag)
{
    char *d = malloc(128);
    snprintf(d, 128, "/tmp/troupe-%s-XXXXXX", tag);
    if (mkdtemp(d) == NULL) {
        free(d);
        return NULL;
    }
    return d;
}

void h_tmpdir_remove(char *dir)
{
    if (dir == NULL)
        return;
    if (getenv("TROUPE_KEEP_TMP") == NULL) {
        char cmd[256];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0)
            fprintf(stderr, "harness: could not remove %s\n", dir);
    } else {
        fprintf(stderr, "harness: kept %s\n", dir);
    }
    free(dir);
}

/* A free port, never one this process was given before: the probe socket
 * is closed on return, so the kernel may hand the same port out again, and
 * two listeners of one node once got the same one ("address already in
 * use"). */
static int probe_port(void);

int h_free_port(void)
{
    static int given[1024];
    static unsigned n_given;
    for (;;) {
        int p = probe_port(), seen = 0;
        for (unsigned i = 0; i < n_given && i < 1024 && !seen; i++)
            seen = given[i] == p;
        if (p <= 0 || !seen) {
            if (p > 0)
                given[n_given++ % 1024] = p;
            return p;
        }
    }
}

static int probe_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = 0 };
    socklen_t len = sizeof a;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    return ntohs(a.sin_port);
}

/* ---- processes ----------------------------------------------------------------- */

static char **strv_dup(char *const v[])
{
    size_t n = 0;
    while (v != NULL && v[n] != NULL)
        n++;
    char **out = calloc(n + 1, sizeof *out);
    for (size_t i = 0; i < n; i++)
        out[i] = strdup(v[i]);
    return out;
}

static void strv_free(char **v)
{
    for (size_t i = 0; v != NULL && v[i] != NULL; i++)
        free(v[i]);
    free(v);
}

static int spawn(struct h_proc *p)
{
    /* environment = ours + extras (extras win: later entries are found last
     * by getenv, so put them first). */
    size_t ne = 0, nx = 0;
    while (environ[ne] != NULL)
        ne++;
    while (p->envp != NULL && p->envp[nx] != NULL)
        nx++;
    char **envv = calloc(ne + nx + 1, sizeof *envv);
    size_t k = 0;
    for (size_t i = 0; i < nx; i++)
        envv[k++] = p->envp[i];
    for (size_t i = 0; i < ne; i++)
        envv[k++] = environ[i];

    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, p->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    int rv = posix_spawn(&p->pid, p->argv[0], &fa, NULL, p->argv, envv);
    posix_spawn_file_actions_destroy(&fa);
    free(envv);
    if (rv != 0) {
        fprintf(stderr, "harness: spawn %s: %s\n", p->argv[0], strerror(rv));
        p->pid = 0;
        return -1;
    }
    return 0;
}

int h_proc_start(struct h_proc *p, char *const argv[], char *const env[], const char *log_path)
{
    memset(p, 0, sizeof *p);
    p->argv = strv_dup(argv);
    p->envp = strv_dup(env);
    p->log = strdup(log_path);
    return spawn(p);
}

int h_proc_restart(struct h_proc *p)
{
    if (p->pid != 0)
        return -1;
    return spawn(p);
}

int h_proc_kill(struct h_proc *p, int sig, int wait)
{
    int status = -1;
    if (p->pid <= 0)
        return -1;
    kill(p->pid, sig);
    if (wait) {
        while (waitpid(p->pid, &status, 0) < 0 && errno == EINTR)
            ;
        p->pid = 0;
    }
    return status;
}

int h_proc_alive(struct h_proc *p)
{
    int status;
    if (p->pid <= 0)
        return 0;
    pid_t r = waitpid(p->pid, &status, WNOHANG);
    if (r == p->pid) {
        p->pid = 0;
        return 0;
    }
    return 1;
}

int h_proc_stop(struct h_proc *p, int timeout_ms)
{
    int status = -1;
    if (p->pid <= 0)
        return -1;
    kill(p->pid, SIGTERM);
    uint64_t until = h_now_ms() + (uint64_t)timeout_ms;
    while (h_now_ms() < until) {
        pid_t r = waitpid(p->pid, &status, WNOHANG);
        if (r == p->pid) {
            p->pid = 0;
            return status;
        }
        nap_ms(5);
    }
    fprintf(stderr, "harness: %s did not stop in %d ms: SIGKILL\n", p->argv[0], timeout_ms);
    return h_proc_kill(p, SIGKILL, 1);
}

void h_proc_free(struct h_proc *p)
{
    if (p->pid > 0)
        h_proc_kill(p, SIGKILL, 1);
    strv_free(p->argv);
    strv_free(p->envp);
    free(p->log);
    memset(p, 0, sizeof *p);
}

void h_proc_dump_log(struct h_proc *p, int lines)
{
    char cmd[512];
    if (p->log == NULL)
        return;
    fprintf(stderr, "---- last %d lines of %s ----\n", lines, p->log);
    snprintf(cmd, sizeof cmd, "tail -n %d '%s' >&2", lines, p->log);
    if (system(cmd) != 0)
        fprintf(stderr, "(could not read the log)\n");
}

int h_wait_port_file(const char *path, const char *word, int timeout_ms)
{
    uint64_t until = h_now_ms() + (uint64_t)timeout_ms;
    while (h_now_ms() < until) {
        FILE *f = fopen(path, "r");
        if (f != NULL) {
            char buf[128] = { 0 };
            size_t n = fread(buf, 1, sizeof buf - 1, f);
            fclose(f);
            buf[n] = '\0';
            const char *s = buf;
            if (word != NULL) {
                s = strstr(buf, word);
                if (s != NULL)
                    s += strlen(word);
            }
            if (s != NULL) {
                int port = atoi(s);
                if (port > 0)
                    return port;
            }
        }
        nap_ms(5);
    }
    return -1;
}

/* ---- HTTP ------------------------------------------------------------------------ */

struct buf {
    char *p;
    size_t len;
};

static size_t body_cb(char *data, size_t size, size_t n, void *ud)
{
    struct buf *b = ud;
    size_t add = size * n;
    b->p = realloc(b->p, b->len + add + 1);
    memcpy(b->p + b->len, data, add);
    b->len += add;
    b->p[b->len] = '\0';
    return add;
}

static size_t header_cb(char *data, size_t size, size_t n, void *ud)
{
    struct h_resp *r = ud;
    size_t len = size * n;
    const char *name = "troupe-raft-index:";
    size_t nl = strlen(name);
    if (len > nl && strncasecmp(data, name, nl) == 0) {
        size_t i = nl, j = 0;
        while (i < len && (data[i] == ' ' || data[i] == '\t'))
            i++;
        while (i < len && data[i] >= '0' && data[i] <= '9' && j + 1 < sizeof r->raft_index)
            r->raft_index[j++] = data[i++];
        r->raft_index[j] = '\0';
    }
    return len;
}

int h_http(struct h_resp *r, const char *method, const char *url, const char *body, const char *const *headers,
           long timeout_ms)
{
    memset(r, 0, sizeof *r);
    CURL *c = curl_easy_init();
    struct buf b = { 0 };
    struct curl_slist *hl = NULL;
    if (body != NULL)
        hl = curl_slist_append(hl, "Content-Type: application/json");
    for (size_t i = 0; headers != NULL && headers[i] != NULL; i++)
        hl = curl_slist_append(hl, headers[i]);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (body != NULL) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, body_cb);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, header_cb);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_PROXY, "");
    CURLcode cc = curl_easy_perform(c);
    if (cc == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    curl_slist_free_all(hl);
    curl_easy_cleanup(c);
    r->body = b.p != NULL ? b.p : strdup("");
    r->len = b.len;
    if (r->len > 0)
        r->json = json_loadb(r->body, r->len, 0, NULL);
    return cc == CURLE_OK ? 0 : -1;
}

void h_resp_free(struct h_resp *r)
{
    free(r->body);
    if (r->json != NULL)
        json_decref(r->json);
    memset(r, 0, sizeof *r);
}

int h_wait_http_ok(const char *url, int timeout_ms)
{
    uint64_t until = h_now_ms() + (uint64_t)timeout_ms;
    while (h_now_ms() < until) {
        struct h_resp r;
        h_http(&r, "GET", url, NULL, NULL, 1000);
        long st = r.status;
        h_resp_free(&r);
        if (st == 200)
            return 0;
        nap_ms(10);
    }
    return -1;
}

/* ---- troupe nodes ------------------------------------------------------------------ */

static int wait_ready(struct h_node *n, int timeout_ms)
{
    char url[128];
    snprintf(url, sizeof url, "%s/healthz", n->base);
    uint64_t until = h_now_ms() + (uint64_t)timeout_ms;
    while (h_now_ms() < until) {
        if (!h_proc_alive(&n->proc)) {
            fprintf(stderr, "harness: node %llu exited during start\n", (unsigned long long)n->id);
            h_proc_dump_log(&n->proc, 40);
            return -1;
        }
        struct h_resp r;
        h_http(&r, "GET", url, NULL, NULL, 1000);
        int ok = r.status == 200 && r.json != NULL && json_is_true(json_object_get(r.json, "ready"));
        h_resp_free(&r);
        if (ok)
            return 0;
        nap_ms(10);
    }
    fprintf(stderr, "harness: node %llu not ready after %d ms\n", (unsigned long long)n->id, timeout_ms);
    h_proc_dump_log(&n->proc, 40);
    return -1;
}

int h_node_start(struct h_node *n, const char *data, char *const extra_args[], char *const env[])
{
    char id[24], raft[64], http[64], log[512];
    const char *bin = h_bin("troupe");
    memset(n, 0, sizeof *n);
    if (bin == NULL) {
        fprintf(stderr, "harness: TROUPE_BIN is not set\n");
        return -1;
    }
    n->id = 1;
    n->data = strdup(data);
    n->raft_port = h_free_port();
    n->http_port = h_free_port();
    snprintf(id, sizeof id, "%llu", (unsigned long long)n->id);
    snprintf(raft, sizeof raft, "127.0.0.1:%d", n->raft_port);
    snprintf(http, sizeof http, "127.0.0.1:%d", n->http_port);
    snprintf(n->base, sizeof n->base, "http://127.0.0.1:%d", n->http_port);
    snprintf(log, sizeof log, "%s.log", data);
    char *argv[64] = { (char *)bin, "--id", id, "--data", (char *)data, "--raft", raft, "--http", http,
                       "--bootstrap" };
    int k = 10;
    for (size_t i = 0; extra_args != NULL && extra_args[i] != NULL && k < 62; i++)
        argv[k++] = extra_args[i];
    argv[k] = NULL;
    if (h_proc_start(&n->proc, argv, env, log) != 0)
        return -1;
    return wait_ready(n, 30000);
}

int h_node_restart(struct h_node *n)
{
    if (h_proc_restart(&n->proc) != 0)
        return -1;
    return wait_ready(n, 60000);
}

void h_node_free(struct h_node *n)
{
    h_proc_free(&n->proc);
    free(n->data);
    memset(n, 0, sizeof *n);
}

char *h_create_run(struct h_node *n, const char *body_json, const char *idem_key)
{
    char url[128], hdr[320];
    const char *headers[2] = { NULL, NULL };
    snprintf(url, sizeof url, "%s/v1/runs", n->base);
    if (idem_key != NULL) {
        snprintf(hdr, sizeof hdr, "Idempotency-Key: %s", idem_key);
        headers[0] = hdr;
    }
    struct h_resp r;
    h_http(&r, "POST", url, body_json, headers, 10000);
    char *id = NULL;
    if ((r.status == 201 || r.status == 200) && r.json != NULL) {
        const char *s = json_string_value(json_object_get(r.json, "id"));
        if (s != NULL)
            id = strdup(s);
    }
    if (id == NULL)
        fprintf(stderr, "harness: create run: HTTP %ld %s\n", r.status, r.body);
    h_resp_free(&r);
    return id;
}

json_t *h_get_run(struct h_node *n, const char *id)
{
    char url[256];
    snprintf(url, sizeof url, "%s/v1/runs/%s", n->base, id);
    struct h_resp r;
    h_http(&r, "GET", url, NULL, NULL, 10000);
    json_t *j = NULL;
    if (r.status == 200 && r.json != NULL)
        j = json_incref(r.json);
    h_resp_free(&r);
    return j;
}

static int terminal(const char *s)
{
    return s != NULL && (strcmp(s, "succeeded") == 0 || strcmp(s, "failed") == 0 || strcmp(s, "cancelled") == 0);
}

char *h_wait_run_terminal(struct h_node *n, const char *id, int timeout_ms)
{
    uint64_t until = h_now_ms() + (uint64_t)timeout_ms;
    while (h_now_ms() < until) {
        json_t *j = h_get_run(n, id);
        const char *st = j != NULL ? json_string_value(json_object_get(j, "status")) : NULL;
        if (terminal(st)) {
            char *out = strdup(st);
            json_decref(j);
            return out;
        }
        if (j != NULL)
            json_decref(j);
        nap_ms(20);
    }
    return NULL;
}

json_t *h_get_events(struct h_node *n, const char *id)
{
    char url[256];
    snprintf(url, sizeof url, "%s/v1/runs/%s/events", n->base, id);
    struct h_resp r;
    h_http(&r, "GET", url, NULL, NULL, 10000);
    json_t *j = NULL;
    if (r.status == 200 && json_is_array(r.json))
        j = json_incref(r.json);
    h_resp_free(&r);
    return j;
}

/* ---- helper servers --------------------------------------------------------------- */

int h_mockllm_start(struct h_proc *p, const char *script, const char *dir, char *base, size_t cap)
{
    char pf[512], log[512];
    snprintf(pf, sizeof pf, "%s/mockllm.port", dir);
    snprintf(log, sizeof log, "%s/mockllm.log", dir);
    char *argv[] = { (char *)h_bin("mockllm"), "--listen", "127.0.0.1:0", "--script", (char *)script,
                     "--port-file", pf, NULL };
    if (argv[0] == NULL || h_proc_start(p, argv, NULL, log) != 0)
        return -1;
    int port = h_wait_port_file(pf, NULL, 10000);
    if (port < 0) {
        h_proc_dump_log(p, 20);
        return -1;
    }
    snprintf(base, cap, "http://127.0.0.1:%d/v1", port);
    return 0;
}

int h_toolserver_start(struct h_proc *p, const char *dir, const char *receipts, char *base, size_t cap)
{
    char pf[512], log[512];
    snprintf(pf, sizeof pf, "%s/toolserver.port", dir);
    snprintf(log, sizeof log, "%s/toolserver.log", dir);
    char *argv[10] = { (char *)h_bin("toolserver"), "--listen", "127.0.0.1:0", "--port-file", pf, NULL };
    if (receipts != NULL) {
        argv[5] = "--log";
        argv[6] = (char *)receipts;
        argv[7] = NULL;
    }
    if (argv[0] == NULL || h_proc_start(p, argv, NULL, log) != 0)
        return -1;
    int port = h_wait_port_file(pf, NULL, 10000);
    if (port < 0) {
        h_proc_dump_log(p, 20);
        return -1;
    }
    snprintf(base, cap, "http://127.0.0.1:%d", port);
    return 0;
}
