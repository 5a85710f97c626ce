/* See tsrv.h. */
#include "tsrv.h"

#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void tick(void)
{
    struct timespec t = {0, 5 * 1000 * 1000};
    nanosleep(&t, NULL); /* poll interval, bounded by a deadline */
}

static void dump_stderr(const struct toolsrv *s)
{
    char path[300], line[512];
    snprintf(path, sizeof(path), "%s/stderr", s->dir);
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    fprintf(stderr, "---- troupe-toolserver stderr ----\n");
    while (fgets(line, sizeof(line), f))
        fputs(line, stderr);
    fclose(f);
}

int toolsrv_start(struct toolsrv *s, const char *bin)
{
    char port_file[300], err_path[300];
    memset(s, 0, sizeof(*s));
    s->pid = -1;
    snprintf(s->dir, sizeof(s->dir), "/tmp/toolsrv-XXXXXX");
    if (!mkdtemp(s->dir))
        return -1;
    snprintf(port_file, sizeof(port_file), "%s/port", s->dir);
    snprintf(err_path, sizeof(err_path), "%s/stderr", s->dir);
    snprintf(s->log, sizeof(s->log), "%s/receipts.log", s->dir);
    s->pid = fork();
    if (s->pid < 0)
        return -1;
    if (s->pid == 0) {
        int fd = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 2);
            close(fd);
        }
        execl(bin, bin, "--listen", "127.0.0.1:0", "--port-file", port_file, "--log", s->log, (char *)NULL);
        _exit(127);
    }
    uint64_t deadline = now_ms() + 20000;
    while (now_ms() < deadline) {
        FILE *f = fopen(port_file, "r");
        if (f) {
            int ok = fscanf(f, "%d", &s->port) == 1;
            fclose(f);
            if (ok && s->port > 0)
                return 0;
        }
        int st;
        if (waitpid(s->pid, &st, WNOHANG) == s->pid) {
            s->pid = -1;
            dump_stderr(s);
            return -1;
        }
        tick();
    }
    dump_stderr(s);
    return -1;
}

int toolsrv_stop(struct toolsrv *s)
{
    int st = 0, rv = 0;
    char path[300];
    if (s->pid > 0) {
        kill(s->pid, SIGTERM);
        uint64_t deadline = now_ms() + 10000;
        pid_t got;
        while ((got = waitpid(s->pid, &st, WNOHANG)) == 0 && now_ms() < deadline)
            tick();
        if (got == 0) {
            kill(s->pid, SIGKILL);
            waitpid(s->pid, &st, 0);
            fprintf(stderr, "troupe-toolserver did not stop on SIGTERM\n");
            rv = -1;
        } else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            fprintf(stderr, "troupe-toolserver exited with status %d\n", st);
            rv = -1;
        }
        if (rv != 0)
            dump_stderr(s);
        s->pid = -1;
    }
    snprintf(path, sizeof(path), "%s/port", s->dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/stderr", s->dir);
    unlink(path);
    unlink(s->log);
    rmdir(s->dir);
    return rv;
}

struct buf {
    char *p;
    size_t len;
};

static size_t body_cb(char *p, size_t size, size_t n, void *ud)
{
    struct buf *b = ud;
    b->p = realloc(b->p, b->len + size * n + 1);
    memcpy(b->p + b->len, p, size * n);
    b->len += size * n;
    b->p[b->len] = '\0';
    return size * n;
}

long toolsrv_http(const struct toolsrv *s, const char *method, const char *path, const char *key,
                  const char *body, char **out)
{
    char url[512], hdr[512];
    struct buf b = {0};
    struct curl_slist *hl = NULL;
    long status = 0;
    CURL *h = curl_easy_init();
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", s->port, path);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, body_cb);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 30000L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    hl = curl_slist_append(hl, "Content-Type: application/json");
    if (key) {
        snprintf(hdr, sizeof(hdr), "Idempotency-Key: %s", key);
        hl = curl_slist_append(hl, hdr);
    }
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
    if (body)
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    if (curl_easy_perform(h) == CURLE_OK)
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(hl);
    curl_easy_cleanup(h);
    if (!b.p)
        b.p = calloc(1, 1);
    if (out)
        *out = b.p;
    else
        free(b.p);
    return status;
}

json_t *toolsrv_get_json(const struct toolsrv *s, const char *path)
{
    char *body = NULL;
    json_error_t jerr;
    if (toolsrv_http(s, "GET", path, NULL, NULL, &body) == 0) {
        free(body);
        return NULL;
    }
    json_t *j = json_loads(body, 0, &jerr);
    free(body);
    return j;
}

long long toolsrv_stat(const struct toolsrv *s, const char *field)
{
    json_t *j = toolsrv_get_json(s, "/_stats");
    json_t *v = json_object_get(j, field);
    long long n = json_is_integer(v) ? json_integer_value(v) : -1;
    json_decref(j);
    return n;
}

int toolsrv_log_count(const struct toolsrv *s, const char *key, const char *receipt)
{
    char line[4096];
    int n = 0;
    FILE *f = fopen(s->log, "r");
    if (!f)
        return 0;
    while (fgets(line, sizeof(line), f)) {
        json_error_t jerr;
        json_t *j = json_loads(line, 0, &jerr);
        const char *k = json_string_value(json_object_get(j, "key"));
        const char *r = json_string_value(json_object_get(j, "receipt"));
        if (k && strcmp(k, key) == 0 && (!receipt || (r && strcmp(r, receipt) == 0)))
            n++;
        json_decref(j);
    }
    fclose(f);
    return n;
}
