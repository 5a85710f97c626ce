/* The logging seam. Library code logs only through tr_log; the sink and the
 * level are process-wide and meant to be set once at startup. The default
 * sink writes one line per message to stderr; TROUPE_LOG=debug|info|warn|error
 * sets the initial level. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "runtime.h"

static uv_once_t log_once = UV_ONCE_INIT;
static _Atomic int log_level = TR_LOG_INFO;
static uv_mutex_t log_mu; /* serialises sink changes against calls */
static tr_log_fn log_sink;
static void *log_ud;

static const char *level_name(enum tr_log_level level)
{
    switch (level) {
    case TR_LOG_DEBUG:
        return "debug";
    case TR_LOG_INFO:
        return "info";
    case TR_LOG_WARN:
        return "warn";
    case TR_LOG_ERROR:
        return "error";
    }
    return "?";
}

static void stderr_sink(void *ud, enum tr_log_level level, const char *msg)
{
    struct timespec ts;
    struct tm tm;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    fprintf(stderr, "%02d:%02d:%02d.%03ld %-5s %s\n", tm.tm_hour, tm.tm_min, tm.tm_sec,
            ts.tv_nsec / 1000000, level_name(level), msg);
}

static void log_init(void)
{
    const char *env = getenv("TROUPE_LOG");

    if (uv_mutex_init(&log_mu) != 0)
        abort();
    log_sink = stderr_sink;
    if (env == NULL)
        return;
    if (strcasecmp(env, "debug") == 0)
        log_level = TR_LOG_DEBUG;
    else if (strcasecmp(env, "info") == 0)
        log_level = TR_LOG_INFO;
    else if (strcasecmp(env, "warn") == 0)
        log_level = TR_LOG_WARN;
    else if (strcasecmp(env, "error") == 0)
        log_level = TR_LOG_ERROR;
}

void tr_log_set_sink(tr_log_fn fn, void *ud)
{
    uv_once(&log_once, log_init);
    uv_mutex_lock(&log_mu);
    log_sink = fn ? fn : stderr_sink;
    log_ud = fn ? ud : NULL;
    uv_mutex_unlock(&log_mu);
}

void tr_log_set_level(enum tr_log_level level)
{
    uv_once(&log_once, log_init);
    log_level = level;
}

int tr_log_enabled(enum tr_log_level level)
{
    uv_once(&log_once, log_init);
    return (int)level >= log_level;
}

void tr_log(enum tr_log_level level, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;

    if (!tr_log_enabled(level))
        return;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    uv_mutex_lock(&log_mu);
    log_sink(log_ud, level, buf);
    uv_mutex_unlock(&log_mu);
}
