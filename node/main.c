/* troupe: the node daemon. Wires the runtime, the state service (store +
 * raft + FSM on scheduler 0), the llm and tool actors (one each per
 * scheduler), the run manager, and the HTTP gateway, then waits for SIGTERM
 * or SIGINT and shuts down cleanly. A SIGKILL at any instant loses nothing
 * committed: on restart raft replays its log into the store and the run
 * manager resumes every active run from its journal.
 *
 *   troupe --id 1 --data DIR --raft 127.0.0.1:7101 --peer 127.0.0.1:7201 \
 *          --client 127.0.0.1:7301 --http 127.0.0.1:7401 [--bootstrap | --join HOST:PORT]
 *
 * Start-up order matters: every actor reads struct tr_node_env, so it is
 * complete before the run manager (the only spawner of run actors) starts;
 * the manager becomes the FSM's listener last, and the state service sends
 * TR_NOTE_READY only once it has a listener. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "actors/actors.h"
#include "cluster/cluster.h"
#include "gateway/gateway.h"
#include "raft/auth.h"
#include "raft/raft.h"
#include "runtime/runtime.h"

struct node_opts {
    uint64_t id;
    const char *data;
    const char *raft;
    const char *peer;
    const char *client;
    const char *http;
    const char *join;
    const char *ports_file;
    int bootstrap;
    int schedulers;
    uint32_t max_active_runs;
    uint32_t approval_timeout_s;
    uint32_t llm_timeout_s;
    uint32_t context_tokens;
    const char *secret_file;
    uint32_t failure_timeout_ms;
    uint32_t election_timeout_ms;
    uint32_t heartbeat_ms;
    uint32_t max_connections;     /* --max-connections: HTTP (and WebSocket) connections */
    uint32_t stream_stall_ms;     /* --stream-stall-ms: slow readers of live streams */
    uint32_t snapshot_threshold;  /* --snapshot-threshold: raft entries between snapshots */
    uint32_t snapshot_trailing;   /* --snapshot-trailing: entries kept in the log after one */
    int append_linger_ms;         /* --append-linger-ms: 0 = default (2), -1 = off */
};

struct node {
    struct node_opts o;
    struct tr_rt *rt;
    struct tr_node_env env;
    tr_actor_id *llm_ids;
    tr_actor_id *tool_ids;
    struct tr_state *state;
    struct tr_gateway *gateway;
    struct tr_cluster *cluster;
    unsigned char key[TR_CLUSTER_KEY_LEN];
    char peer_host[64];
    int peer_port;
    char http_host[64];
    int http_port;
    char client_host[64];
    int client_port;
    atomic_int step_done;   /* a tr_rt_call finished: 1 ok, -1 failed */
    struct tr_err err;
};

static struct node node;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: troupe --id N --data DIR --raft HOST:PORT --http HOST:PORT\n"
            "              [--peer HOST:PORT] [--client HOST:PORT] [--bootstrap | --join HOST:PORT]\n"
            "              [--schedulers N (default: cores - 1, at least 1)] [--max-active-runs N]\n"
            "              [--approval-timeout S]\n"
            "              [--llm-timeout S] [--context-tokens N] [--ports-file F]\n"
            "              [--max-connections N] [--stream-stall-ms MS]\n"
            "              [--cluster-secret-file F] [--failure-timeout MS] [--election-timeout MS]\n"
            "              [--heartbeat MS] [--snapshot-threshold N] [--snapshot-trailing N]\n"
            "              [--append-linger-ms MS (0: none)]\n"
            "environment: OPENAI_BASE_URL, OPENAI_API_KEY, TROUPE_MODELS, TROUPE_ADMIN_TOKEN,\n"
            "             TROUPE_CLUSTER_SECRET, TROUPE_RAFT_PREFILL=0 (raft segments not zero-filled),\n"
            "             TROUPE_RAFT_COMPRESS=0 (big raft entries not LZ4-compressed),\n"
            "             TROUPE_LOG=debug|info|warn|error\n");
}

static int parse_u32(const char *s, uint32_t *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno != 0 || *s == '\0' || *end != '\0' || v > UINT32_MAX)
        return -1;
    *out = (uint32_t)v;
    return 0;
}

static int split_hostport(const char *s, char *host, size_t cap, int *port)
{
    const char *colon = strrchr(s, ':');
    uint32_t p;
    if (colon == NULL || (size_t)(colon - s) >= cap || colon == s || parse_u32(colon + 1, &p) != 0 || p > 65535)
        return -1;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    *port = (int)p;
    return 0;
}

static int parse_args(int argc, char **argv, struct node_opts *o)
{
    enum { O_ID = 1000, O_DATA, O_RAFT, O_PEER, O_CLIENT, O_HTTP, O_BOOT, O_JOIN, O_SCHED, O_MAXRUNS, O_APPROVAL,
           O_LLMTIMEOUT, O_CTX, O_PORTS, O_SECRET, O_FAILURE, O_ELECTION, O_HEARTBEAT, O_MAXCONNS, O_STALL, O_SNAP, O_TRAIL, O_LINGER, O_HELP };
    static const struct option longopts[] = {
        { "id", required_argument, NULL, O_ID },
        { "data", required_argument, NULL, O_DATA },
        { "raft", required_argument, NULL, O_RAFT },
        { "peer", required_argument, NULL, O_PEER },
        { "client", required_argument, NULL, O_CLIENT },
        { "http", required_argument, NULL, O_HTTP },
        { "bootstrap", no_argument, NULL, O_BOOT },
        { "join", required_argument, NULL, O_JOIN },
        { "schedulers", required_argument, NULL, O_SCHED },
        { "max-active-runs", required_argument, NULL, O_MAXRUNS },
        { "approval-timeout", required_argument, NULL, O_APPROVAL },
        { "llm-timeout", required_argument, NULL, O_LLMTIMEOUT },
        { "context-tokens", required_argument, NULL, O_CTX },
        { "ports-file", required_argument, NULL, O_PORTS },
        { "max-connections", required_argument, NULL, O_MAXCONNS },
        { "stream-stall-ms", required_argument, NULL, O_STALL },
        { "cluster-secret-file", required_argument, NULL, O_SECRET },
        { "failure-timeout", required_argument, NULL, O_FAILURE },
        { "election-timeout", required_argument, NULL, O_ELECTION },
        { "heartbeat", required_argument, NULL, O_HEARTBEAT },
        { "snapshot-threshold", required_argument, NULL, O_SNAP },
        { "snapshot-trailing", required_argument, NULL, O_TRAIL },
        { "append-linger-ms", required_argument, NULL, O_LINGER },
        { "help", no_argument, NULL, O_HELP },
        { NULL, 0, NULL, 0 },
    };
    uint32_t v;
    int c;
    memset(o, 0, sizeof *o);
    o->max_active_runs = 1000;
    o->approval_timeout_s = 3600;
    o->llm_timeout_s = 60;
    o->context_tokens = 32000;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case O_ID:
            if (parse_u32(optarg, &v) != 0 || v == 0)
                goto bad;
            o->id = v;
            break;
        case O_DATA: o->data = optarg; break;
        case O_RAFT: o->raft = optarg; break;
        case O_PEER: o->peer = optarg; break;
        case O_CLIENT: o->client = optarg; break;
        case O_HTTP: o->http = optarg; break;
        case O_BOOT: o->bootstrap = 1; break;
        case O_JOIN: o->join = optarg; break;
        case O_PORTS: o->ports_file = optarg; break;
        case O_SECRET: o->secret_file = optarg; break;
        case O_FAILURE:
            if (parse_u32(optarg, &v) != 0 || v < 100 || v > 600000)
                goto bad;
            o->failure_timeout_ms = v;
            break;
        case O_ELECTION:
            if (parse_u32(optarg, &v) != 0 || v < 50 || v > 600000)
                goto bad;
            o->election_timeout_ms = v;
            break;
        case O_HEARTBEAT:
            if (parse_u32(optarg, &v) != 0 || v < 5 || v > 60000)
                goto bad;
            o->heartbeat_ms = v;
            break;
        case O_SNAP:
            if (parse_u32(optarg, &v) != 0 || v < 2)
                goto bad;
            o->snapshot_threshold = v;
            break;
        case O_TRAIL:
            if (parse_u32(optarg, &v) != 0 || v == 0)
                goto bad;
            o->snapshot_trailing = v;
            break;
        case O_LINGER:
            if (parse_u32(optarg, &v) != 0 || v > 1000)
                goto bad;
            o->append_linger_ms = v == 0 ? -1 : (int)v;
            break;
        case O_SCHED:
            if (parse_u32(optarg, &v) != 0 || v > 64) /* 0: the default */
                goto bad;
            o->schedulers = (int)v;
            break;
        case O_MAXCONNS:
            if (parse_u32(optarg, &v) != 0 || v == 0 || v > 1000000)
                goto bad;
            o->max_connections = v;
            break;
        case O_STALL:
            if (parse_u32(optarg, &v) != 0 || v == 0)
                goto bad;
            o->stream_stall_ms = v;
            break;
        case O_MAXRUNS:
            if (parse_u32(optarg, &v) != 0 || v == 0)
                goto bad;
            o->max_active_runs = v;
            break;
        case O_APPROVAL:
            if (parse_u32(optarg, &v) != 0 || v == 0)
                goto bad;
            o->approval_timeout_s = v;
            break;
        case O_LLMTIMEOUT:
            if (parse_u32(optarg, &v) != 0 || v == 0)
                goto bad;
            o->llm_timeout_s = v;
            break;
        case O_CTX:
            if (parse_u32(optarg, &v) != 0 || v < 512)
                goto bad;
            o->context_tokens = v;
            break;
        case O_HELP:
            usage(stdout);
            exit(0);
        default:
            goto bad;
        }
    }
    if (optind != argc || o->id == 0 || o->data == NULL || o->raft == NULL || o->http == NULL)
        goto bad;
    if (o->bootstrap && o->join != NULL) {
        fprintf(stderr, "troupe: --bootstrap and --join exclude each other\n");
        return -1;
    }
    if (o->join != NULL && o->peer == NULL) {
        fprintf(stderr, "troupe: --join needs --peer (the address other nodes reach this one at)\n");
        return -1;
    }
    return 0;
bad:
    usage(stderr);
    return -1;
}

/* ---- the cluster key ------------------------------------------------------------------ */

/* Write data to path (mode 0600) unless it exists: tmp file, fsync, rename. */
static int save_private(const char *path, const void *data, size_t len)
{
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    unlink(tmp);
    int fd = open(tmp, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    int ok = write(fd, data, len) == (ssize_t)len && fsync(fd) == 0;
    close(fd);
    if (!ok || link(tmp, path) != 0) {
        unlink(tmp);
        return errno == EEXIST ? 0 : -1;
    }
    unlink(tmp);
    return 0;
}

/* The cluster key authenticates raft and peer connections (raft/auth.h).
 * Sources, first found wins: --cluster-secret-file, TROUPE_CLUSTER_SECRET,
 * DATA/cluster.secret. A given secret is also saved as DATA/cluster.secret
 * (0600) so that a restart needs neither. With none, a new node creates a
 * random one there — except a joining node: it must be given its cluster's. */
static int setup_key(struct node *n)
{
    char path[4096];
    struct tr_err err = { 0 };
    snprintf(path, sizeof path, "%s/cluster.secret", n->o.data);
    const char *env = getenv("TROUPE_CLUSTER_SECRET");
    int rv;
    if (n->o.secret_file != NULL) {
        rv = tr_cluster_secret_load(n->o.secret_file, n->key, &err);
        if (rv == TR_OK) {
            FILE *f = fopen(n->o.secret_file, "rb");
            char buf[TR_CLUSTER_SECRET_MAX];
            size_t len = f != NULL ? fread(buf, 1, sizeof buf, f) : 0;
            if (f != NULL)
                fclose(f);
            if (len > 0 && save_private(path, buf, len) != 0)
                tr_log(TR_LOG_WARN, "troupe: cannot save the cluster secret in %s: %s", path, strerror(errno));
            sodium_memzero(buf, sizeof buf);
        }
    } else if (env != NULL && env[0] != '\0') {
        rv = tr_cluster_key_derive(env, strlen(env), n->key, &err);
        if (rv == TR_OK && save_private(path, env, strlen(env)) != 0)
            tr_log(TR_LOG_WARN, "troupe: cannot save the cluster secret in %s: %s", path, strerror(errno));
    } else {
        rv = tr_cluster_secret_load(path, n->key, &err);
        if (rv == TR_ENOTFOUND && n->o.join != NULL) {
            fprintf(stderr, "troupe: --join: give this node its cluster's secret (--cluster-secret-file F or "
                            "TROUPE_CLUSTER_SECRET); the first node keeps it in DATA/cluster.secret\n");
            return -1;
        }
        if (rv == TR_ENOTFOUND) {
            rv = tr_cluster_secret_create(path, n->key, &err);
            if (rv == TR_OK)
                tr_log(TR_LOG_INFO, "troupe: new cluster secret in %s: give it to the nodes that join", path);
        }
    }
    if (rv != TR_OK) {
        fprintf(stderr, "troupe: cluster secret: %s\n", err.msg[0] ? err.msg : tr_strerror(rv));
        return -1;
    }
    return 0;
}

/* ---- start-up steps on scheduler 0 ----------------------------------------------- */

static void fatal(void *ud, const char *msg)
{
    /* The store failed a write: stop at once. raft re-applies on restart. */
    fprintf(stderr, "troupe: fatal: %s\n", msg);
    fflush(stderr);
    _exit(3);
}

static void cluster_closed(void *arg)
{
    struct node *n = arg;
    n->cluster = NULL;
    if (n->state != NULL)
        tr_state_close(n->state, NULL, NULL);
    n->state = NULL;
}

static void gateway_closed(void *arg)
{
    struct node *n = arg;
    n->gateway = NULL;
    if (n->cluster != NULL)
        tr_cluster_close(n->cluster, cluster_closed, n);
    else
        cluster_closed(n);
}

/* Shutdown hook on scheduler 0: the gateway first (no new requests), then
 * the cluster (peer connections), then the state service (raft, then the
 * store). */
static void shutdown_hook(void *arg)
{
    struct node *n = arg;
    if (n->gateway != NULL)
        tr_gateway_close(n->gateway, gateway_closed, n);
    else
        gateway_closed(n);
}

/* 1 when the environment variable is "0" (a default-on feature turned off). */
static int env_off(const char *name)
{
    const char *v = getenv(name);
    return v != NULL && strcmp(v, "0") == 0;
}

static void open_state_cb(struct tr_ctx *ctx, void *arg)
{
    struct node *n = arg;
    struct tr_state_opts so = {
        .node_id = n->o.id, .data_dir = n->o.data, .raft_address = n->o.raft, .bootstrap = n->o.bootstrap,
        .on_fatal = fatal, .fatal_ud = n, .cluster_key = n->key,
        .election_timeout_ms = n->o.election_timeout_ms, .heartbeat_timeout_ms = n->o.heartbeat_ms,
        .snapshot_threshold = n->o.snapshot_threshold, .snapshot_trailing = n->o.snapshot_trailing,
        .linger_ms = n->o.append_linger_ms,
        .no_compress = env_off("TROUPE_RAFT_COMPRESS"), .no_prefill = env_off("TROUPE_RAFT_PREFILL"),
    };
    int rv = tr_state_open(ctx, &so, &n->state, &n->err);
    if (rv == TR_OK)
        rv = tr_rt_on_shutdown(ctx, shutdown_hook, n);
    atomic_store(&n->step_done, rv == TR_OK ? 1 : -1);
}

static void listen_cb(struct tr_ctx *ctx, void *arg)
{
    struct node *n = arg;
    tr_state_set_listener(n->state, n->env.manager_actor);
    struct tr_gateway_opts go = {
        .rt = n->rt, .state = n->state, .env = &n->env, .host = n->http_host, .port = n->http_port,
        .admin_token = getenv("TROUPE_ADMIN_TOKEN"), .node_id = n->o.id,
        .client_host = n->o.client != NULL ? n->client_host : NULL, .client_port = n->client_port,
        .max_connections = n->o.max_connections, .stream_stall_ms = n->o.stream_stall_ms,
    };
    int rv = tr_gateway_start(ctx, &go, &n->gateway, &n->err);
    if (rv == TR_OK && n->o.peer != NULL) {
        char client[80] = "", http[80];
        if (n->o.client != NULL)
            snprintf(client, sizeof client, "%s:%d", n->client_host, tr_gateway_client_port(n->gateway));
        snprintf(http, sizeof http, "%s:%d", n->http_host, tr_gateway_port(n->gateway));
        struct tr_cluster_opts co = {
            .state = n->state, .node_id = n->o.id, .listen_host = n->peer_host, .listen_port = n->peer_port,
            .raft_address = n->o.raft, .client_address = client, .http_address = http,
            .capacity = n->o.max_active_runs, .key = n->key, .join = n->o.join,
            .failure_timeout_ms = n->o.failure_timeout_ms,
        };
        rv = tr_cluster_start(ctx, &co, &n->cluster, &n->err);
        if (rv == TR_OK)
            tr_gateway_set_cluster(n->gateway, n->cluster);
    }
    atomic_store(&n->step_done, rv == TR_OK ? 1 : -1);
}

/* Run fn on scheduler 0 and wait for it to report. */
static int on_sched0(struct node *n, tr_call_fn fn)
{
    atomic_store(&n->step_done, 0);
    int rv = tr_rt_call(n->rt, 0, fn, NULL, n);
    if (rv != TR_OK)
        return rv;
    while (atomic_load(&n->step_done) == 0)
        uv_sleep(1);
    return atomic_load(&n->step_done) == 1 ? TR_OK : (n->err.code ? n->err.code : TR_EIO);
}

static int write_ports_file(struct node *n)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", n->o.ports_file);
    FILE *f = fopen(tmp, "w");
    if (f == NULL)
        return -1;
    fprintf(f, "http %d\n", tr_gateway_port(n->gateway));
    if (n->o.client != NULL)
        fprintf(f, "client %d\n", tr_gateway_client_port(n->gateway));
    if (n->cluster != NULL)
        fprintf(f, "peer %d\n", tr_cluster_peer_port(n->cluster));
    if (fclose(f) != 0 || rename(tmp, n->o.ports_file) != 0)
        return -1;
    return 0;
}

/* ---- main ----------------------------------------------------------------------------- */

static uv_signal_t sigterm, sigint;
static int stop_signal;

static void on_signal(uv_signal_t *h, int signum)
{
    stop_signal = signum;
    uv_signal_stop(&sigterm);
    uv_signal_stop(&sigint);
}

int main(int argc, char **argv)
{
    struct node *n = &node;
    int rv;

    if (parse_args(argc, argv, &n->o) != 0)
        return 2;
    if (split_hostport(n->o.http, n->http_host, sizeof n->http_host, &n->http_port) != 0) {
        fprintf(stderr, "troupe: --http: expected HOST:PORT, got %s\n", n->o.http);
        return 2;
    }
    if (n->o.client != NULL &&
        split_hostport(n->o.client, n->client_host, sizeof n->client_host, &n->client_port) != 0) {
        fprintf(stderr, "troupe: --client: expected HOST:PORT, got %s\n", n->o.client);
        return 2;
    }
    if (n->o.peer != NULL && split_hostport(n->o.peer, n->peer_host, sizeof n->peer_host, &n->peer_port) != 0) {
        fprintf(stderr, "troupe: --peer: expected HOST:PORT, got %s\n", n->o.peer);
        return 2;
    }
    if (mkdir(n->o.data, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "troupe: --data %s: %s\n", n->o.data, strerror(errno));
        return 1;
    }
    if (sodium_init() < 0 || setup_key(n) != 0)
        return 1;
    signal(SIGPIPE, SIG_IGN);

    /* The main thread only waits for signals; actors run on the schedulers. */
    uv_loop_t *main_loop = uv_default_loop();
    uv_signal_init(main_loop, &sigterm);
    uv_signal_init(main_loop, &sigint);
    uv_signal_start(&sigterm, on_signal, SIGTERM);
    uv_signal_start(&sigint, on_signal, SIGINT);

    /* One scheduler per core but one by default: scheduler 0 carries raft's
     * loop, and a run on it commits without crossing threads (two wakeups
     * fewer per write step); the core left over serves libuv's thread pool
     * (raft's blocking writes, snapshots, digests) and RocksDB's background
     * work. Measured in docs/ARCHITECTURE.md ("Schedulers"). */
    int nsched_want = n->o.schedulers;
    if (nsched_want == 0) {
        unsigned cores = uv_available_parallelism();
        nsched_want = cores > 1 ? (int)cores - 1 : 1;
    }
    struct tr_rt_opts ro = { .schedulers = nsched_want };
    rv = tr_rt_new(&ro, &n->rt);
    if (rv == TR_OK)
        rv = tr_rt_start(n->rt);
    if (rv != TR_OK) {
        fprintf(stderr, "troupe: runtime: %s\n", tr_strerror(rv));
        return 1;
    }
    int nsched = tr_rt_schedulers(n->rt);

    rv = on_sched0(n, open_state_cb);
    if (rv != TR_OK) {
        fprintf(stderr, "troupe: %s\n", n->err.msg[0] ? n->err.msg : tr_strerror(rv));
        goto err_after_rt;
    }

    n->env.node_id = n->o.id;
    n->env.store = tr_state_store(n->state);
    n->env.state_actor = tr_state_actor(n->state);
    n->env.n_schedulers = nsched;
    n->env.max_active_runs = n->o.max_active_runs;
    n->env.llm_timeout_ms = n->o.llm_timeout_s * 1000;
    n->env.approval_timeout_ms = n->o.approval_timeout_s * 1000;
    n->env.context_tokens = n->o.context_tokens;
    n->env.state = n->state;
    n->llm_ids = tr_calloc((size_t)nsched, sizeof *n->llm_ids);
    n->tool_ids = tr_calloc((size_t)nsched, sizeof *n->tool_ids);
    n->env.llm_actors = n->llm_ids;
    n->env.tool_actors = n->tool_ids;
    for (int i = 0; i < nsched; i++) {
        rv = tr_llm_spawn(n->rt, &n->env, i, &n->llm_ids[i]);
        if (rv == TR_OK)
            rv = tr_tool_spawn(n->rt, &n->env, i, &n->tool_ids[i]);
        if (rv != TR_OK) {
            fprintf(stderr, "troupe: spawn llm/tool actors: %s\n", tr_strerror(rv));
            goto err_after_rt;
        }
    }
    rv = tr_run_manager_spawn(n->rt, &n->env, 0, &n->env.manager_actor);
    if (rv != TR_OK) {
        fprintf(stderr, "troupe: spawn run manager: %s\n", tr_strerror(rv));
        goto err_after_rt;
    }
    rv = on_sched0(n, listen_cb);
    if (rv != TR_OK) {
        fprintf(stderr, "troupe: %s\n", n->err.msg[0] ? n->err.msg : tr_strerror(rv));
        goto err_after_rt;
    }
    if (n->o.ports_file != NULL && write_ports_file(n) != 0) {
        fprintf(stderr, "troupe: --ports-file %s: %s\n", n->o.ports_file, strerror(errno));
        goto err_after_rt;
    }
    tr_log(TR_LOG_INFO, "troupe: node %llu up: http %s:%d raft %s (%d schedulers)", (unsigned long long)n->o.id,
           n->http_host, tr_gateway_port(n->gateway), n->o.raft, nsched);

    uv_run(main_loop, UV_RUN_DEFAULT);
    tr_log(TR_LOG_INFO, "troupe: %s: shutting down", strsignal(stop_signal));
    tr_rt_shutdown(n->rt);
    tr_free(n->llm_ids);
    tr_free(n->tool_ids);
    uv_close((uv_handle_t *)&sigterm, NULL);
    uv_close((uv_handle_t *)&sigint, NULL);
    uv_run(main_loop, UV_RUN_DEFAULT);
    uv_loop_close(main_loop);
    return 0;

err_after_rt:
    tr_rt_shutdown(n->rt);
    tr_free(n->llm_ids);
    tr_free(n->tool_ids);
    return 1;
}
