/* troupectl: the command-line client of a Troupe cluster (API.md "CLI").
 *
 *   troupectl [--server HOST:PORT] [--token KEY] [--json] <group> <command> ...
 *
 * It speaks the FlatBuffers client protocol (API.md "FlatBuffers client
 * protocol") to any node's client address, one request at a time over a
 * blocking socket. Exit status: 0 success, 1 the operation failed (the
 * server's error on stderr), 2 bad usage.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "schemas/protocol_generated.h"
#include "schemas/schemas.h"

#define FRAME_MAX (16u << 20)
#define EXIT_FAILED 1
#define EXIT_USAGE 2

struct cli {
    const char *server;
    const char *token;
    int json;
    int fd;
    uint64_t next_id;
    struct tr_fb_builder b;
    uint8_t *frame;           /* the last response frame */
    int quiet;                /* call(): keep the error in err_* instead of printing it */
    int err_code;             /* troupe_proto_ErrorCode of the last failed call */
    char err_msg[512];
};

static const char *const run_status_names[] = { "queued", "running", "waiting_approval",
                                                "succeeded", "failed", "cancelled" };
static const char *const approval_status_names[] = { "pending", "approved", "denied", "expired" };
static const char *const risk_names[] = { "read", "write", "irreversible" };
static const char *const kind_names[] = { "http", "sandbox", "mcp", "builtin" };
static const char *const role_names[] = { "follower", "candidate", "leader", "spare", "standby" };

#define NAME_OF(tab, v) ((v) >= 0 && (size_t)(v) < sizeof(tab) / sizeof(tab[0]) ? (tab)[v] : "unknown")

static int index_of(const char *const *tab, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(tab[i], s) == 0)
            return (int)i;
    return -1;
}
#define INDEX_OF(tab, s) index_of(tab, sizeof(tab) / sizeof(tab[0]), s)

__attribute__((format(printf, 1, 2))) static int usage_error(const char *fmt, ...)
{
    va_list ap;
    fputs("troupectl: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\n(see troupectl --help)\n", stderr);
    return EXIT_USAGE;
}

__attribute__((format(printf, 1, 2))) static int failed(const char *fmt, ...)
{
    va_list ap;
    fputs("troupectl: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return EXIT_FAILED;
}

/* ---- help ------------------------------------------------------------------------------ */

static const char help_main[] =
    "usage: troupectl [--server HOST:PORT] [--token KEY] [--json] <group> <command> ...\n"
    "\n"
    "  --server HOST:PORT  a node's client address (default $TROUPE_SERVER or 127.0.0.1:7301)\n"
    "  --token KEY         API key (default $TROUPE_TOKEN)\n"
    "  --json              machine-readable output\n"
    "\n"
    "groups:\n"
    "  run       create, get, list, cancel, events\n"
    "  approval  list, approve, deny\n"
    "  tool      register, list, get, disable, enable\n"
    "  tenant    create, list, budget, update (cluster admin; list/budget: a tenant admin too)\n"
    "  key       create, revoke (a tenant admin, or the cluster admin)\n"
    "  cluster   status\n"
    "\n"
    "`troupectl <group> --help` lists a group's commands. Exit status: 0 success,\n"
    "1 the operation failed (the server's error on stderr), 2 bad usage.\n";

static const char help_run[] =
    "usage: troupectl run <command> ...\n"
    "  create --goal G [--model M] [--system S] [--tool T]... [--max-steps N]\n"
    "         [--idempotency-key K] [--metadata JSON]     create a run\n"
    "  get ID [--wait S]                                  the run (S <= 60: wait until terminal)\n"
    "  list [--status S] [--limit N] [--cursor C]         runs (S: queued, running, waiting_approval,\n"
    "                                                     succeeded, failed, cancelled)\n"
    "  cancel ID [--reason R]                             cancel (idempotent)\n"
    "  events ID [--after SEQ] [--limit N] [--follow]     the run's journal; --follow: then live\n"
    "                                                     events until the run ends\n";

static const char help_approval[] =
    "usage: troupectl approval <command> ...\n"
    "  list [--status pending|approved|denied|expired] [--limit N]\n"
    "  approve ID [--reason R]\n"
    "  deny ID [--reason R]\n";

static const char help_tool[] =
    "usage: troupectl tool <command> ...\n"
    "  register FILE.json    register a tool (API.md tool object; a new version on change)\n"
    "  list                  every tool, latest version\n"
    "  get NAME [--version V]\n"
    "  disable NAME          kill switch: no run may call it\n"
    "  enable NAME\n";

static const char help_cluster[] =
    "usage: troupectl cluster status\n"
    "       troupectl cluster add ID --raft HOST:PORT [--peer HOST:PORT]\n"
    "       troupectl cluster remove ID      its runs move to live nodes, then it leaves\n"
    "       troupectl cluster drain ID       no new runs; its runs move; then it leaves\n"
    "       troupectl cluster transfer [ID]  hand leadership to ID (default: raft picks)\n"
    "       troupectl cluster verify         compare every node's state digest at one checkpoint\n"
    "                                        (exit 1 when two differ or a live node cannot answer)\n"
    "Membership changes go to the leader (followed once when the server is not it).\n"
    "They need the cluster admin key.\n";

static const char help_tenant[] =
    "usage: troupectl tenant <command> ...\n"
    "  create NAME [--max-active-runs N] [--rps N] [--budget-usd-per-day X] [--budget-policy fail|wait]\n"
    "                              a new tenant; prints its first admin API key (shown once)\n"
    "  list [--limit N]            tenants with their limits and today's spend\n"
    "  budget TENANT [--set USD] [--policy fail|wait]\n"
    "                              today's spend against budget_usd_per_day; --set changes the budget\n"
    "                              (0: none); TENANT is an id or a name\n"
    "  update TENANT [--max-active-runs N] [--rps N] [--budget-usd-per-day X] [--budget-policy P]\n"
    "                              change limits (the others stay)\n";

static const char help_key[] =
    "usage: troupectl key <command> ...\n"
    "  create --tenant T --role admin|operator|approver|viewer   a new API key (shown once)\n"
    "  revoke KEY_ID                                             the key stops working at once\n";

static int wants_help(int argc, char **argv)
{
    for (int i = 0; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return 1;
    return 0;
}

/* ---- the connection ------------------------------------------------------------------------ */

static int dial(struct cli *cli)
{
    char host[256];
    const char *colon = strrchr(cli->server, ':');
    if (colon == NULL || colon == cli->server || (size_t)(colon - cli->server) >= sizeof host || colon[1] == '\0')
        return usage_error("--server: expected HOST:PORT, got %s", cli->server);
    memcpy(host, cli->server, (size_t)(colon - cli->server));
    host[colon - cli->server] = '\0';
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *res;
    int rv = getaddrinfo(host, colon + 1, &hints, &res);
    if (rv != 0)
        return failed("%s: %s", cli->server, gai_strerror(rv));
    int fd = -1, err = 0;
    for (struct addrinfo *a = res; a != NULL && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd >= 0 && connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
            err = errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0)
        return failed("cannot connect to %s: %s", cli->server, strerror(err));
    cli->fd = fd;
    return 0;
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int read_all(int fd, uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t r = recv(fd, p, n, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

/* Read one frame into cli->frame and verify it; NULL after printing why. */
static const struct troupe_proto_Frame *read_frame(struct cli *cli)
{
    uint8_t head[4];
    if (read_all(cli->fd, head, 4) != 0) {
        failed("%s: the server closed the connection", cli->server);
        return NULL;
    }
    uint32_t n;
    memcpy(&n, head, 4);
    if (n > FRAME_MAX) {
        failed("%s: a frame of %u bytes is over the 16 MiB limit", cli->server, n);
        return NULL;
    }
    free(cli->frame);
    cli->frame = malloc(4 + (size_t)n);
    if (cli->frame == NULL) {
        failed("out of memory");
        return NULL;
    }
    memcpy(cli->frame, head, 4);
    if (read_all(cli->fd, cli->frame + 4, n) != 0) {
        failed("%s: the server closed the connection", cli->server);
        return NULL;
    }
    struct tr_fb_error fe;
    const struct troupe_proto_Frame *f = troupe_proto_Frame_verify_as_root_sized(cli->frame, 4 + (size_t)n, &fe);
    if (f == NULL) {
        char m[256];
        failed("%s: a bad frame: %s", cli->server, tr_fb_error_format(&fe, m, sizeof m));
        return NULL;
    }
    return f;
}

/* The server's error of the last call (cli->err_msg) on stderr, as JSON with --json. */
static void print_error(const struct cli *cli, const char *code)
{
    if (cli->json) {
        json_t *j = json_pack("{s:{s:s, s:s}}", "error", "code", code ? code : "Unknown", "message", cli->err_msg);
        char *s = json_dumps(j, JSON_COMPACT);
        fprintf(stderr, "%s\n", s ? s : "");
        free(s);
        json_decref(j);
    } else {
        fprintf(stderr, "troupectl: %s: %s\n", code ? code : "error", cli->err_msg);
    }
}

/* Send the op just built (op_type, op) as a Request; wait for its Response.
 * Returns the verified Response, or NULL after printing why (exit 1). */
static const struct troupe_proto_Response *call(struct cli *cli, uint8_t op_type, tr_fb_ref op)
{
    struct tr_fb_builder *b = &cli->b;
    uint64_t id = ++cli->next_id;
    cli->err_code = 0;
    cli->err_msg[0] = '\0';
    tr_fb_ref key = cli->token != NULL ? tr_fb_create_str(b, cli->token) : 0;
    troupe_proto_Request_start(b);
    troupe_proto_Request_add_id(b, id);
    troupe_proto_Request_add_api_key(b, key);
    troupe_proto_Request_add_op_type(b, op_type);
    troupe_proto_Request_add_op(b, op);
    tr_fb_ref rq = troupe_proto_Request_end(b);
    troupe_proto_Frame_start(b);
    troupe_proto_Frame_add_body_Request(b, rq);
    troupe_proto_Frame_finish_sized(b, troupe_proto_Frame_end(b));
    size_t len;
    const uint8_t *data = tr_fb_builder_data(b, &len);
    if (write_all(cli->fd, data, len) != 0) {
        failed("%s: send: %s", cli->server, strerror(errno));
        return NULL;
    }
    for (;;) {
        const struct troupe_proto_Frame *f = read_frame(cli);
        if (f == NULL)
            return NULL;
        const struct troupe_proto_Response *r = troupe_proto_Frame_body_as_Response(f);
        if (r == NULL)
            continue; /* pushes of subscriptions: none asked for */
        if (troupe_proto_Response_id(r) != id && troupe_proto_Response_id(r) != 0)
            continue;
        const struct troupe_proto_Error *e = troupe_proto_Response_error(r);
        if (e != NULL) {
            const char *code = troupe_proto_ErrorCode_name(troupe_proto_Error_code(e));
            struct tr_fb_str m = troupe_proto_Error_message(e);
            cli->err_code = troupe_proto_Error_code(e);
            snprintf(cli->err_msg, sizeof cli->err_msg, "%s", m.ptr ? m.ptr : "");
            if (!cli->quiet) /* else the caller decides */
                print_error(cli, code);
            return NULL;
        }
        return r;
    }
}

/* ---- rendering ---------------------------------------------------------------------------- */

static void time_text(int64_t us, char out[40])
{
    if (us <= 0) {
        snprintf(out, 40, "-");
        return;
    }
    time_t s = (time_t)(us / 1000000);
    struct tm tm;
    gmtime_r(&s, &tm);
    size_t n = strftime(out, 40, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, 40 - n, ".%06lldZ", (long long)(us % 1000000));
}

static json_t *jstr(struct tr_fb_str s)
{
    return s.ptr != NULL ? json_stringn(s.ptr, s.len) : json_null();
}

static json_t *jtime(int64_t us)
{
    char t[40];
    time_text(us, t);
    return us > 0 ? json_string(t) : json_null();
}

/* A JSON text field: its value when it parses, else the text. */
static json_t *jtext(struct tr_fb_str s)
{
    if (s.ptr == NULL)
        return json_null();
    json_t *v = json_loadb(s.ptr, s.len, JSON_DECODE_ANY, NULL);
    return v != NULL ? v : json_stringn(s.ptr, s.len);
}

static json_t *run_json(const struct troupe_proto_RunInfo *r)
{
    const struct troupe_journal_Usage *u = troupe_proto_RunInfo_usage(r);
    json_t *usage = json_pack("{s:I, s:I, s:f}", "prompt_tokens",
                              (json_int_t)(u ? troupe_journal_Usage_prompt_tokens(u) : 0), "completion_tokens",
                              (json_int_t)(u ? troupe_journal_Usage_completion_tokens(u) : 0), "cost_usd",
                              (u ? troupe_journal_Usage_cost_micro_usd(u) : 0) / 1e6);
    json_t *j = json_object();
    json_object_set_new(j, "id", jstr(troupe_proto_RunInfo_id(r)));
    json_object_set_new(j, "tenant", jstr(troupe_proto_RunInfo_tenant(r)));
    json_object_set_new(j, "status", json_string(NAME_OF(run_status_names, troupe_proto_RunInfo_status(r))));
    json_object_set_new(j, "goal", jstr(troupe_proto_RunInfo_goal(r)));
    json_object_set_new(j, "step", json_integer(troupe_proto_RunInfo_step(r)));
    json_object_set_new(j, "usage", usage);
    json_object_set_new(j, "owner_node", json_integer((json_int_t)troupe_proto_RunInfo_owner_node(r)));
    json_object_set_new(j, "created_at", jtime(troupe_proto_RunInfo_created_at_us(r)));
    json_object_set_new(j, "updated_at", jtime(troupe_proto_RunInfo_updated_at_us(r)));
    json_object_set_new(j, "output", jstr(troupe_proto_RunInfo_output(r)));
    json_object_set_new(j, "error", jstr(troupe_proto_RunInfo_error(r)));
    json_object_set_new(j, "last_seq", json_integer((json_int_t)troupe_proto_RunInfo_last_seq(r)));
    return j;
}

static void print_json(json_t *j)
{
    char *s = json_dumps(j, JSON_INDENT(2) | JSON_ENCODE_ANY | JSON_REAL_PRECISION(12));
    printf("%s\n", s ? s : "null");
    free(s);
    json_decref(j);
}

static void print_run(const struct troupe_proto_RunInfo *r)
{
    char c[40], u[40];
    const struct troupe_journal_Usage *us = troupe_proto_RunInfo_usage(r);
    time_text(troupe_proto_RunInfo_created_at_us(r), c);
    time_text(troupe_proto_RunInfo_updated_at_us(r), u);
    printf("id:       %s\n", troupe_proto_RunInfo_id(r).ptr);
    printf("status:   %s\n", NAME_OF(run_status_names, troupe_proto_RunInfo_status(r)));
    printf("goal:     %s\n", troupe_proto_RunInfo_goal(r).ptr ? troupe_proto_RunInfo_goal(r).ptr : "");
    printf("step:     %u\n", troupe_proto_RunInfo_step(r));
    printf("usage:    %llu prompt + %llu completion tokens, $%.6f\n",
           (unsigned long long)(us ? troupe_journal_Usage_prompt_tokens(us) : 0),
           (unsigned long long)(us ? troupe_journal_Usage_completion_tokens(us) : 0),
           (us ? troupe_journal_Usage_cost_micro_usd(us) : 0) / 1e6);
    printf("owner:    node %llu\n", (unsigned long long)troupe_proto_RunInfo_owner_node(r));
    printf("created:  %s\nupdated:  %s\n", c, u);
    if (troupe_proto_RunInfo_output(r).ptr != NULL)
        printf("output:   %s\n", troupe_proto_RunInfo_output(r).ptr);
    if (troupe_proto_RunInfo_error(r).ptr != NULL)
        printf("error:    %s\n", troupe_proto_RunInfo_error(r).ptr);
}

static json_t *approval_json(const struct troupe_proto_Approval *a)
{
    json_t *j = json_object();
    json_object_set_new(j, "id", jstr(troupe_proto_Approval_id(a)));
    json_object_set_new(j, "run_id", jstr(troupe_proto_Approval_run_id(a)));
    json_object_set_new(j, "tool", jstr(troupe_proto_Approval_tool(a)));
    json_object_set_new(j, "arguments", jtext(troupe_proto_Approval_arguments(a)));
    json_object_set_new(j, "risk", json_string(NAME_OF(risk_names, troupe_proto_Approval_risk(a))));
    json_object_set_new(j, "status", json_string(NAME_OF(approval_status_names, troupe_proto_Approval_status(a))));
    json_object_set_new(j, "requested_at", jtime(troupe_proto_Approval_requested_at_us(a)));
    json_object_set_new(j, "expires_at", jtime(troupe_proto_Approval_expires_at_us(a)));
    json_object_set_new(j, "reason", jstr(troupe_proto_Approval_reason(a)));
    return j;
}

static void print_approval_row(const struct troupe_proto_Approval *a)
{
    char t[40];
    time_text(troupe_proto_Approval_requested_at_us(a), t);
    printf("%-36s %-20s %-16s %-12s %-9s %s\n", troupe_proto_Approval_id(a).ptr,
           troupe_proto_Approval_run_id(a).ptr ? troupe_proto_Approval_run_id(a).ptr : "-",
           troupe_proto_Approval_tool(a).ptr ? troupe_proto_Approval_tool(a).ptr : "-",
           NAME_OF(risk_names, troupe_proto_Approval_risk(a)),
           NAME_OF(approval_status_names, troupe_proto_Approval_status(a)), t);
}

static json_t *tool_json(const struct troupe_cmd_Tool *t)
{
    json_t *j = json_object();
    json_object_set_new(j, "name", jstr(troupe_cmd_Tool_name(t)));
    json_object_set_new(j, "version", json_integer(troupe_cmd_Tool_version(t)));
    json_object_set_new(j, "description", jstr(troupe_cmd_Tool_description(t)));
    json_object_set_new(j, "input_schema", jtext(troupe_cmd_Tool_input_schema(t)));
    json_object_set_new(j, "risk", json_string(NAME_OF(risk_names, troupe_cmd_Tool_risk(t))));
    json_object_set_new(j, "kind", json_string(NAME_OF(kind_names, troupe_cmd_Tool_kind(t))));
    json_object_set_new(j, "config", jtext(troupe_cmd_Tool_config(t)));
    json_object_set_new(j, "timeout_ms", json_integer(troupe_cmd_Tool_timeout_ms(t)));
    json_object_set_new(j, "enabled", json_boolean(troupe_cmd_Tool_enabled(t)));
    return j;
}

static void print_tool_row(const struct troupe_cmd_Tool *t)
{
    printf("%-24s %-7u %-12s %-8s %-8s %s\n", troupe_cmd_Tool_name(t).ptr, troupe_cmd_Tool_version(t),
           NAME_OF(risk_names, troupe_cmd_Tool_risk(t)), NAME_OF(kind_names, troupe_cmd_Tool_kind(t)),
           troupe_cmd_Tool_enabled(t) ? "enabled" : "disabled",
           troupe_cmd_Tool_description(t).ptr ? troupe_cmd_Tool_description(t).ptr : "");
}

/* "RunCreated" -> "run.created", "LlmRequested" -> "llm.requested". */
static void event_type(int tag, char out[64])
{
    const char *n = troupe_journal_Data_name(tag);
    size_t o = 0;
    if (n == NULL || tag == 0) {
        snprintf(out, 64, "unknown");
        return;
    }
    int dotted = 0;
    for (size_t i = 0; n[i] != '\0' && o < 62; i++) {
        char ch = n[i];
        if (ch >= 'A' && ch <= 'Z') {
            if (i > 0) {
                out[o++] = dotted ? '_' : '.';
                dotted = 1;
            }
            ch = (char)(ch - 'A' + 'a');
        }
        out[o++] = ch;
    }
    out[o] = '\0';
}

/* ---- argument helpers ------------------------------------------------------------------------ */

/* Options of a command: --name VALUE pairs and positionals, in any order. */
struct args {
    int argc;
    char **argv;
    const char *pos[4];
    int n_pos;
};

/* Split argv into positionals and options; options named in `known` (with a
 * value each) are checked. Returns 0 or a usage error. */
static int args_parse(struct args *a, int argc, char **argv, const char *const *known, int max_pos)
{
    a->argc = argc;
    a->argv = argv;
    a->n_pos = 0;
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "--", 2) == 0) {
            int ok = 0;
            for (const char *const *k = known; *k != NULL; k++)
                ok |= strcmp(argv[i] + 2, *k) == 0;
            if (!ok)
                return usage_error("unknown option %s", argv[i]);
            if (i + 1 >= argc)
                return usage_error("%s needs a value", argv[i]);
            i++;
            continue;
        }
        if (a->n_pos >= max_pos)
            return usage_error("unexpected argument %s", argv[i]);
        a->pos[a->n_pos++] = argv[i];
    }
    return 0;
}

/* The last value of --name, or NULL. */
static const char *opt(const struct args *a, const char *name)
{
    const char *v = NULL;
    for (int i = 0; i + 1 < a->argc; i++)
        if (strncmp(a->argv[i], "--", 2) == 0) {
            if (strcmp(a->argv[i] + 2, name) == 0)
                v = a->argv[i + 1];
            i++;
        }
    return v;
}

static int opt_uint(const struct args *a, const char *name, unsigned long long max, unsigned long long *out)
{
    const char *v = opt(a, name);
    if (v == NULL)
        return 0;
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (*v < '0' || *v > '9' || *end != '\0' || errno != 0 || x > max)
        return usage_error("--%s: expected an integer up to %llu, got %s", name, max, v);
    *out = x;
    return 0;
}

static tr_fb_ref opt_fb_str(struct tr_fb_builder *b, const char *s)
{
    return s != NULL ? tr_fb_create_str(b, s) : 0;
}

/* ---- run -------------------------------------------------------------------------------------- */

static int run_create(struct cli *cli, int argc, char **argv)
{
    static const char *const known[] = { "goal", "model", "system", "tool", "max-steps", "idempotency-key",
                                         "metadata", NULL };
    struct args a;
    int rv = args_parse(&a, argc, argv, known, 0);
    if (rv != 0)
        return rv;
    const char *goal = opt(&a, "goal");
    if (goal == NULL)
        return usage_error("run create: --goal is required");
    unsigned long long max_steps = 0;
    if (opt_uint(&a, "max-steps", 10000, &max_steps) != 0)
        return EXIT_USAGE;
    struct tr_fb_builder *b = &cli->b;
    tr_fb_ref tools[128];
    size_t n_tools = 0;
    for (int i = 0; i + 1 < argc; i++)
        if (strcmp(argv[i], "--tool") == 0) {
            if (n_tools == 128)
                return usage_error("at most 128 --tool");
            tools[n_tools++] = tr_fb_create_str(b, argv[++i]);
        } else if (strncmp(argv[i], "--", 2) == 0) {
            i++;
        }
    const char *model = opt(&a, "model"), *system = opt(&a, "system");
    tr_fb_ref agent = 0;
    if (model != NULL || system != NULL || n_tools > 0 || max_steps > 0) {
        tr_fb_ref tv = n_tools > 0 ? troupe_journal_AgentConfig_create_tools(b, tools, n_tools) : 0;
        tr_fb_ref m = opt_fb_str(b, model), s = opt_fb_str(b, system);
        troupe_journal_AgentConfig_start(b);
        troupe_journal_AgentConfig_add_model(b, m);
        troupe_journal_AgentConfig_add_system(b, s);
        troupe_journal_AgentConfig_add_tools(b, tv);
        if (max_steps > 0) {
            b->force_defaults = true;
            troupe_journal_AgentConfig_add_max_steps(b, (uint32_t)max_steps);
            b->force_defaults = false;
        }
        agent = troupe_journal_AgentConfig_end(b);
    }
    tr_fb_ref g = tr_fb_create_str(b, goal);
    tr_fb_ref meta = opt_fb_str(b, opt(&a, "metadata"));
    tr_fb_ref idem = opt_fb_str(b, opt(&a, "idempotency-key"));
    troupe_proto_CreateRun_start(b);
    troupe_proto_CreateRun_add_goal(b, g);
    troupe_proto_CreateRun_add_agent(b, agent);
    troupe_proto_CreateRun_add_metadata(b, meta);
    troupe_proto_CreateRun_add_idempotency_key(b, idem);
    const struct troupe_proto_Response *r = call(cli, troupe_proto_Op_CreateRun, troupe_proto_CreateRun_end(b));
    const struct troupe_proto_RunInfo *run = r ? troupe_proto_Response_result_as_RunInfo(r) : NULL;
    if (run == NULL)
        return r != NULL ? failed("the server answered without a run") : EXIT_FAILED;
    if (cli->json)
        print_json(run_json(run));
    else
        print_run(run);
    return 0;
}

static int run_get(struct cli *cli, int argc, char **argv)
{
    static const char *const known[] = { "wait", NULL };
    struct args a;
    unsigned long long wait = 0;
    int rv = args_parse(&a, argc, argv, known, 1);
    if (rv != 0 || (rv = opt_uint(&a, "wait", 60, &wait)) != 0)
        return rv;
    if (a.n_pos != 1)
        return usage_error("run get: expected a run id");
    struct tr_fb_builder *b = &cli->b;
    tr_fb_ref id = tr_fb_create_str(b, a.pos[0]);
    troupe_proto_GetRun_start(b);
    troupe_proto_GetRun_add_run_id(b, id);
    troupe_proto_GetRun_add_wait_s(b, (uint32_t)wait);
    const struct troupe_proto_Response *r = call(cli, troupe_proto_Op_GetRun, troupe_proto_GetRun_end(b));
    const struct troupe_proto_RunInfo *run = r ? troupe_proto_Response_result_as_RunInfo(r) : NULL;
    if (run == NULL)
        return r != NULL ? failed("the server answered without a run") : EXIT_FAILED;
    if (cli->json)
        print_json(run_json(run));
    else
        print_run(run);
    return 0;
}

static int run_list(struct cli *cli, int argc, char **argv)
{
    static const char *const known[] = { "status", "limit", "cursor", NULL };
    struct args a;
    unsigned long long limit = 50;
    int rv = args_parse(&a, argc, argv, known, 0);
    if (rv != 0 || (rv = opt_uint(&a, "limit", 500, &limit)) != 0)
        return rv;
    struct tr_fb_builder *b = &cli->b;
    tr_fb_ref statuses = 0;
    const char *st = opt(&a, "status");
    if (st != NULL) {
        int s = INDEX_OF(run_status_names, st);
        if (s < 0)
            return usage_error("--status: one of queued, running, waiting_approval, succeeded, failed, cancelled");
        int8_t v = (int8_t)s;
        statuses = troupe_proto_ListRuns_create_statuses(b, &v, 1);
    }
    tr_fb_ref cur = opt_fb_str(b, opt(&a, "cursor"));
    troupe_proto_ListRuns_start(b);
    troupe_proto_ListRuns_add_statuses(b, statuses);
    b->force_defaults = true;
    troupe_proto_ListRuns_add_limit(b, (uint32_t)limit);
    b->force_defaults = false;
    troupe_proto_ListRuns_add_cursor(b, cur);
    const struct troupe_proto_Response *r = call(cli, troupe_proto_Op_ListRuns, troupe_proto_ListRuns_end(b));
    const struct troupe_proto_RunPage *p = r ? troupe_proto_Response_result_as_RunPage(r) : NULL;
    if (p == NULL)
        return r != NULL ? failed("the server answered without a page") : EXIT_FAILED;
    uint32_t n = troupe_proto_RunPage_runs_len(p);
    struct tr_fb_str next = troupe_proto_RunPage_next_cursor(p);
    if (cli->json) {
        json_t *runs = json_array();
        for (uint32_t i = 0; i < n; i++)
            json_array_append_new(runs, run_json(troupe_proto_RunPage_runs_at(p, i)));
        print_json(json_pack("{s:o, s:o}", "runs", runs, "next_cursor", jstr(next)));
        return 0;
    }
    printf("%-20s %-17s %-5s %s\n", "ID", "STATUS", "STEP", "GOAL");
    for (uint32_t i = 0; i < n; i++) {
        const struct troupe_proto_RunInfo *run = troupe_proto_RunPage_runs_at(p, i);
        struct tr_fb_str goal = troupe_proto_RunInfo_goal(run);
        printf("%-20s %-17s %-5u %.60s\n", troupe_proto_RunInfo_id(run).ptr,
               NAME_OF(run_status_names, troupe_proto_RunInfo_status(run)), troupe_proto_RunInfo_step(run),
               goal.ptr ? goal.ptr : "");
    }
    if (next.ptr != NULL)
        printf("(more: --cursor %s)\n", next.ptr);
    return 0;
}

static int run_cancel(struct cli *cli, int argc, char **argv)
{
    static const char *const known[] = { "reason", NULL };
    struct args a;
    int rv = args_parse(&a, argc, argv, known, 1);
    if (rv != 0)
        return rv;
    if (a.n_pos != 1)
        return usage_error("run cancel: expected a run id");
    struct tr_fb_builder *b = &cli->b;
    tr_fb_ref id = tr_fb_create_str(b, a.pos[0]);
    tr_fb_ref reason = opt_fb_str(b, opt(&a, "reason"));
    troupe_proto_CancelRun_start(b);
    troupe_proto_CancelRun_add_run_id(b, id);
    troupe_proto_CancelRun_add_reason(b, reason);
    const struct troupe_proto_Response *r = call(cli, troupe_proto_Op_CancelRun, troupe_proto_CancelRun_end(b));
    const struct troupe_proto_RunInfo *run = r ? troupe_proto_Response_result_as_RunInfo(r) : NULL;
    if (run == NULL)
        return r != NULL ? failed("the server answered without a run") : EXIT_FAILED;
    if (cli->json)
        print_json(run_json(run));
    else
        print_run(run);
    return 0;
}

/* One journal event: a line, or an element of all (--json). */
static void show_event(const struct troupe_journal_Event *ev, json_t *all)
{
    char type[64], t[40];
    event_type(troupe_journal_Event_data_type(ev), type);
    time_text(troupe_journal_Event_time_us(ev), t);
    if (all != NULL)
        json_array_append_new(all, json_pack("{s:I, s:s, s:s, s:o, s:I}", "seq", (json_int_t)troupe_journal_Event_seq(ev),
                                             "type", type, "time", t, "run_id", jstr(troupe_journal_Event_run_id(ev)),
                                             "epoch", (json_int_t)troupe_journal_Event_epoch(ev)));
    else
        printf("%-6llu %-28s %-20s %s\n", (unsigned long long)troupe_journal_Event_seq(ev), t, type,
               troupe_journal_Event_run_id(ev).ptr);
}

/* --follow: history then live events until the run ends; with --json one
 * compact JSON object per line. */
static int follow_events(struct cli *cli, const char *run, uint64_t after)
{
    struct tr_fb_builder *b = &cli->b;
    tr_fb_ref id = tr_fb_create_str(b, run);
    troupe_proto_Subscribe_start(b);
    troupe_proto_Subscribe_add_run_id(b, id);
    troupe_proto_Subscribe_add_after_seq(b, after);
    const struct troupe_proto_Response *r = call(cli, troupe_proto_Op_Subscribe, troupe_proto_Subscribe_end(b));
    const struct troupe_proto_Subscribed *sub = r ? troupe_proto_Response_result_as_Subscribed(r) : NULL;
    if (sub == NULL)
        return r != NULL ? failed("the server answered without a subscription") : EXIT_FAILED;
    uint64_t sub_id = troupe_proto_Subscribed_subscription_id(sub);
    for (;;) {
        const struct troupe_proto_Frame *f = read_frame(cli);
        if (f == NULL)
            return EXIT_FAILED;
        const struct troupe_proto_SubscriptionEnd *end = troupe_proto_Frame_body_as_SubscriptionEnd(f);
        if (end != NULL && troupe_proto_SubscriptionEnd_subscription_id(end) == sub_id)
            return 0;
        const struct troupe_proto_EventPush *push = troupe_proto_Frame_body_as_EventPush(f);
        if (push == NULL || troupe_proto_EventPush_subscription_id(push) != sub_id ||
            troupe_proto_EventPush_event(push).data == NULL)
            continue;
        const struct troupe_journal_Event *ev = troupe_journal_Event_as_root(troupe_proto_EventPush_event(push).data);
        if (cli->json) {
            json_t *one = json_array();
            show_event(ev, one);
            char *line = json_dumps(json_array_get(one, 0), JSON_COMPACT);
            printf("%s\n", line ? line : "{}");
            free(line);
            json_decref(one);
        } else {
            show_event(ev, NULL);
        }
        fflush(stdout);
    }
}

static int run_events(struct cli *cli, int argc, char **argv)
{
    static const char *const known[] = { "after", "limit", NULL };
    struct args a;
    unsigned long long after = 0, limit = 1000;
    int follow = 0, k = 0;
    for (int i = 0; i < argc; i++) /* the one flag without a value */
        if (strcmp(argv[i], "--follow") == 0)
            follow = 1;
        else
            argv[k++] = argv[i];
    int rv = args_parse(&a, k, argv, known, 1);
    if (rv != 0 || (rv = opt_uint(&a, "after", UINT64_MAX - 1, &after)) != 0 ||
        (rv = opt_uint(&a, "limit", 10000, &limit)) != 0)
        return rv;
    if (a.n_pos != 1)
        return usage_error("run events: expected a run id");
    if (follow)
        return follow_events(cli, a.pos[0], after);
    struct tr_fb_builder *b = &cli->b;
    tr_fb_ref id = tr_fb_create_str(b, a.pos[0]);
    troupe_proto_GetEvents_start(b);
    troupe_proto_GetEvents_add_run_id(b, id);
    troupe_proto_GetEvents_add_after_seq(b, after);
    b->force_defaults = true;
    troupe_proto_GetEvents_add_limit(b, (uint32_t)limit);
    b->force_defaults = false;
    const struct troupe_proto_Response *r = call(cli, troupe_proto_Op_GetEvents, troupe_proto_GetEvents_end(b));
    const struct troupe_proto_EventPage *p = r ? troupe_proto_Response_result_as_EventPage(r) : NULL;
    if (p == NULL)
        return r != NULL ? failed("the server answered without events") : EXIT_FAILED;
    uint32_t n = troupe_proto_EventPage_events_len(p);
    json_t *all = cli->json ? json_array() : NULL;
    for (uint32_t i = 0; i < n; i++) {
        struct tr_fb_vec v = troupe_proto_EventBytes_event(troupe_proto_EventPage_events_at(p, i));
        show_event(troupe_journal_Event_as_root(v.data), all); /* verified with the frame */
    }
    if (all != NULL)
        print_json(all);
    return 0;
}

/* ---- approvals ---------------------------------------------------------------------------------- */

static int approval_list(struct cli *cli, int argc, char **argv)
{
    static const char *const known[] = { "status", "limit", NULL };
    struct args a;
    unsigned long long limit = 50;
    int rv = args_parse(&a, argc, argv, known, 0);
    if (rv != 0 || (rv = opt_uint(&a, "limit", 500, &limit)) != 0)
        return rv;
    int status = 0;
    const char *st = opt(&a, "status");
    if (st != NULL && (status = INDEX_OF(approval_status_names, st)) < 0)
        return usage_error("--status: one of pending, approved, denied, expired");
    struct tr_fb_builder *b = &cli->b;
    troupe_proto_ListApprovals_start(b);
    troupe_proto_ListApprovals_add_status(b, (int8_t)status);
    b->force_defaults = true;
    troupe_proto_ListApprovals_add_limit(b, (uint32_t)limit);
    b->force_defaults = false;
    const struct troupe_proto_Response *r =
        call(cli, troupe_proto_Op_ListApprovals, troupe_proto_ListApprovals_end(b));
    const struct troupe_proto_ApprovalPage *p = r ? troupe_proto_Response_result_as_ApprovalPage(r) : NULL;
    if (p == NULL)
        return r != NULL ? failed("the server answered without a page") : EXIT_FAILED;
    uint32_t n = troupe_proto_ApprovalPage_approvals_len(p);
    if (cli->json) {
        json_t *list = json_array();
        for (uint32_t i = 0; i < n; i++)
            json_array_append_new(list, approval_json(troupe_proto_ApprovalPage_approvals_at(p, i)));
        print_json(json_pack("{s:o, s:o}", "approvals", list, "next_cursor",
                             jstr(troupe_proto_ApprovalPage_next_cursor(p))));
        return 0;
    }
    printf("%-36s %-20s %-16s %-12s %-9s %s\n", "ID", "RUN", "TOOL", "RISK", "STATUS", "REQUESTED");
    for (uint32_t i = 0; i < n; i++)
        print_approval_row(troupe_proto_ApprovalPage_approvals_at(p, i));
    return 0;
}

static int approval_decide(struct cli *cli, int argc, char **argv, int decision)
{
    static const char *const known[] = { "reason", NULL };
    struct args a;
    int rv = args_parse(&a, argc, argv, known, 1);
    if (rv != 0)
        return rv;
    if (a.n_pos != 1)
        return usage_error("expected an approval id");
    struct tr_fb_builder *b = &cli->b;
    tr_fb_ref id = tr_fb_create_str(b, a.pos[0]);
    tr_fb_ref reason = opt_fb_str(b, opt(&a, "reason"));
    troupe_proto_DecideApproval_start(b);
    troupe_proto_DecideApproval_add_approval_id(b, id);
    troupe_proto_DecideApproval_add_decision(b, (int8_t)decision);
    troupe_proto_DecideApproval_add_reason(b, reason);
    const struct troupe_proto_Response *r =
        call(cli, troupe_proto_Op_DecideApproval, troupe_proto_DecideApproval_end(b));
    const struct troupe_proto_Approval *ap = r ? troupe_proto_Response_result_as_Approval(r) : NULL;
    if (ap == NULL)
        return r != NULL ? failed("the server answered without an approval") : EXIT_FAILED;
    if (cli->json)
        print_json(approval_json(ap));
    else
        print_approval_row(ap);
    return 0;
}

/* ---- tools ----------------------------------------------------------------------------------------- */

static char *dump_compact(json_t *v)
{
    return v != NULL && !json_is_null(v) ? json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY) : NULL;
}

static int print_tool_result(struct cli *cli, const struct troupe_proto_Response *r)
{
    const struct troupe_cmd_Tool *t = r ? troupe_proto_Response_result_as_Tool(r) : NULL;
    if (t == NULL)
        return r != NULL ? failed("the server answered without a tool") : EXIT_FAILED;
    if (cli->json)
        print_json(tool_json(t));
    else
        print_tool_row(t);
    return 0;
}

static int tool_register(struct cli *cli, int argc, char **argv)
{
    static const char *const known[] = { NULL };
    struct args a;
    int rv = args_parse(&a, argc, argv, known, 1);
    if (rv != 0)
        return rv;
    if (a.n_pos != 1)
        return usage_error("tool register: expected FILE.json");
    json_error_t je;
    json_t *j = json_load_file(a.pos[0], 0, &je);
    if (j == NULL)
        return usage_error("%s:%d: %s", a.pos[0], je.line, je.text);
    if (!json_is_object(j)) {
        json_decref(j);
        return usage_error("%s: expected a JSON object", a.pos[0]);
    }
    rv = 0;
    const char *name = json_string_value(json_object_get(j, "name"));
    const char *desc = json_string_value(json_object_get(j, "description"));
    const char *risk = json_string_value(json_object_get(j, "risk"));
    const char *kind = json_string_value(json_object_get(j, "kind"));
    json_t *timeout = json_object_get(j, "timeout_ms"), *enabled = json_object_get(j, "enabled");
    int risk_v = risk != NULL ? INDEX_OF(risk_names, risk) : 0;
    int kind_v = kind != NULL ? INDEX_OF(kind_names, kind) : 0;
    if (name == NULL)
        rv = usage_error("%s: \"name\" (a string) is required", a.pos[0]);
    else if (risk_v < 0)
        rv = usage_error("%s: risk: one of read, write, irreversible", a.pos[0]);
    else if (kind_v < 0)
        rv = usage_error("%s: kind: one of http, sandbox, mcp, builtin", a.pos[0]);
    else if (timeout != NULL && (!json_is_integer(timeout) || json_integer_value(timeout) < 0 ||
                                 json_integer_value(timeout) > UINT32_MAX))
        rv = usage_error("%s: timeout_ms: a positive integer", a.pos[0]);
    else if (enabled != NULL && !json_is_boolean(enabled))
        rv = usage_error("%s: enabled: true or false", a.pos[0]);
    if (rv != 0) {
        json_decref(j);
        return rv;
    }
    struct tr_fb_builder *b = &cli->b;
    char *schema = dump_compact(json_object_get(j, "input_schema"));
    char *config = dump_compact(json_object_get(j, "config"));
    tr_fb_ref n = tr_fb_create_str(b, name), d = opt_fb_str(b, desc), s = opt_fb_str(b, schema),
              c = opt_fb_str(b, config);
    free(schema);
    free(config);
    troupe_cmd_Tool_start(b);
    b->force_defaults = true; /* every field given is sent, defaults included */
    troupe_cmd_Tool_add_name(b, n);
    troupe_cmd_Tool_add_description(b, d);
    troupe_cmd_Tool_add_input_schema(b, s);
    if (risk != NULL)
        troupe_cmd_Tool_add_risk(b, (int8_t)risk_v);
    if (kind != NULL)
        troupe_cmd_Tool_add_kind(b, (int8_t)kind_v);
    troupe_cmd_Tool_add_config(b, c);
    if (timeout != NULL)
        troupe_cmd_Tool_add_timeout_ms(b, (uint32_t)json_integer_value(timeout));
    if (enabled != NULL)
        troupe_cmd_Tool_add_enabled(b, json_is_true(enabled));
    b->force_defaults = false;
    tr_fb_ref tool = troupe_cmd_Tool_end(b);
    json_decref(j);
    troupe_proto_RegisterTool_start(b);
    troupe_proto_RegisterTool_add_tool(b, tool);
    return print_tool_result(cli, call(cli, troupe_proto_Op_RegisterTool, troupe_proto_RegisterTool_end(b)));
}

static int tool_list(struct cli *cli, int argc, char **argv)
{
    static const char *const known[] = { NULL };
    struct args a;
    int rv = args_parse(&a, argc, argv, known, 0);
    if (rv != 0)
        return rv;
    struct tr_fb_builder *b = &cli->b;
    troupe_proto_ListTools_start(b);
    const struct troupe_proto_Response *r = call(cli, troupe_proto_Op_ListTools, troupe_proto_ListTools_end(b));
    const struct troupe_proto_ToolPage *p = r ? troupe_proto_Response_result_as_ToolPage(r) : NULL;
    if (p == NULL)
        return r != NULL ? failed("the server answered without a page") : EXIT_FAILED;
    uint32_t n = troupe_proto_ToolPage_tools_len(p);
    if (cli->json) {
        json_t *list = json_array();
        for (uint32_t i = 0; i < n; i++)
            json_array_append_new(list, tool_json(troupe_proto_ToolPage_tools_at(p, i)));
        print_json(json_pack("{s:o}", "tools", list));
        return 0;
    }
    printf("%-24s %-7s %-12s %-8s %-8s %s\n", "NAME", "VERSION", "RISK", "KIND", "STATE", "DESCRIPTION");
    for (uint32_t i = 0; i < n; i++)
        print_tool_row(troupe_proto_ToolPage_tools_at(p, i));
    return 0;
}

static int tool_get(struct cli *cli, int argc, char **argv)
{
    static const char *const known[] = { "version", NULL };
    struct args a;
    unsigned long long version = 0;
    int rv = args_parse(&a, argc, argv, known, 1);
    if (rv != 0 || (rv = opt_uint(&a, "version", UINT32_MAX, &version)) != 0)
        return rv;
    if (a.n_pos != 1)
        return usage_error("tool get: expected a tool name");
    struct tr_fb_builder *b = &cli->b;
    tr_fb_ref name = tr_fb_create_str(b, a.pos[0]);
    troupe_proto_GetTool_start(b);
    troupe_proto_GetTool_add_name(b, name);
    troupe_proto_GetTool_add_version(b, (uint32_t)version);
    return print_tool_result(cli, call(cli, troupe_proto_Op_GetTool, troupe_proto_GetTool_end(b)));
}

static int tool_set_enabled(struct cli *cli, int argc, char **argv, bool enabled)
{
    static const char *const known[] = { NULL };
    struct args a;
    int rv = args_parse(&a, argc, argv, known, 1);
    if (rv != 0)
        return rv;
    if (a.n_pos != 1)
        return usage_error("expected a tool name");
    struct tr_fb_builder *b = &cli->b;
    tr_fb_ref name = tr_fb_create_str(b, a.pos[0]);
    troupe_proto_SetToolEnabled_start(b);
    troupe_proto_SetToolEnabled_add_name(b, name);
    troupe_proto_SetToolEnabled_add_enabled(b, enabled);
    return print_tool_result(cli, call(cli, troupe_proto_Op_SetToolEnabled, troupe_proto_SetToolEnabled_end(b)));
}

/* ---- cluster ------------------------------------------------------------------------------------- */

static int cluster_status(struct cli *cli, int argc, char **argv)
{
    static const char *const known[] = { NULL };
    struct args a;
    int rv = args_parse(&a, argc, argv, known, 0);
    if (rv != 0)
        return rv;
    struct tr_fb_builder *b = &cli->b;
    troupe_proto_ClusterStatus_start(b);
    const struct troupe_proto_Response *r =
        call(cli, troupe_proto_Op_ClusterStatus, troupe_proto_ClusterStatus_end(b));
    const struct troupe_proto_ClusterInfo *ci = r ? troupe_proto_Response_result_as_ClusterInfo(r) : NULL;
    if (ci == NULL)
        return r != NULL ? failed("the server answered without cluster information") : EXIT_FAILED;
    uint32_t n = troupe_proto_ClusterInfo_nodes_len(ci);
    if (cli->json) {
        json_t *nodes = json_array();
        for (uint32_t i = 0; i < n; i++) {
            const struct troupe_proto_NodeInfo *ni = troupe_proto_ClusterInfo_nodes_at(ci, i);
            json_array_append_new(nodes, json_pack("{s:I, s:o, s:s, s:b, s:I}", "id",
                                                   (json_int_t)troupe_proto_NodeInfo_id(ni), "raft_address",
                                                   jstr(troupe_proto_NodeInfo_raft_address(ni)), "role",
                                                   NAME_OF(role_names, troupe_proto_NodeInfo_role(ni)), "alive",
                                                   troupe_proto_NodeInfo_alive(ni), "runs",
                                                   (json_int_t)troupe_proto_NodeInfo_runs(ni)));
        }
        uint64_t leader = troupe_proto_ClusterInfo_leader_id(ci);
        print_json(json_pack("{s:o, s:I, s:I, s:o}", "leader",
                             leader ? json_integer((json_int_t)leader) : json_null(), "term",
                             (json_int_t)troupe_proto_ClusterInfo_term(ci), "commit_index",
                             (json_int_t)troupe_proto_ClusterInfo_commit_index(ci), "nodes", nodes));
        return 0;
    }
    printf("leader: %llu  term: %llu  commit index: %llu  applied: %llu\n",
           (unsigned long long)troupe_proto_ClusterInfo_leader_id(ci),
           (unsigned long long)troupe_proto_ClusterInfo_term(ci),
           (unsigned long long)troupe_proto_ClusterInfo_commit_index(ci),
           (unsigned long long)troupe_proto_ClusterInfo_applied_index(ci));
    printf("%-6s %-24s %-10s %-6s %s\n", "NODE", "RAFT ADDRESS", "ROLE", "ALIVE", "RUNS");
    for (uint32_t i = 0; i < n; i++) {
        const struct troupe_proto_NodeInfo *ni = troupe_proto_ClusterInfo_nodes_at(ci, i);
        struct tr_fb_str addr = troupe_proto_NodeInfo_raft_address(ni);
        printf("%-6llu %-24s %-10s %-6s %u\n", (unsigned long long)troupe_proto_NodeInfo_id(ni),
               addr.ptr ? addr.ptr : "-", NAME_OF(role_names, troupe_proto_NodeInfo_role(ni)),
               troupe_proto_NodeInfo_alive(ni) ? "yes" : "no", troupe_proto_NodeInfo_runs(ni));
    }
    return 0;
}

/* Membership changes run on the leader. Send the op built by build(); when
 * the server is not the leader and names it ("(client HOST:PORT"), follow it
 * once. */
typedef tr_fb_ref (*op_builder)(struct tr_fb_builder *b, const void *arg);

static const struct troupe_proto_Response *call_leader(struct cli *cli, uint8_t op_type, op_builder build,
                                                       const void *arg)
{
    cli->quiet = 1;
    const struct troupe_proto_Response *r = call(cli, op_type, build(&cli->b, arg));
    cli->quiet = 0;
    if (r != NULL)
        return r;
    const char *hint = strstr(cli->err_msg, "(client ");
    static char leader[128];
    if (cli->err_code == troupe_proto_ErrorCode_NotLeader && hint != NULL) {
        hint += strlen("(client ");
        size_t n = strcspn(hint, ",)");
        if (n > 0 && n < sizeof leader && strncmp(hint, "-", n) != 0) {
            memcpy(leader, hint, n);
            leader[n] = '\0';
            close(cli->fd);
            cli->fd = -1;
            cli->server = leader;
            if (dial(cli) != 0)
                return NULL;
            tr_fb_builder_reset(&cli->b);
            return call(cli, op_type, build(&cli->b, arg));
        }
    }
    /* Not redirectable: print it as call() would have (a failure to talk
     * to the server was printed already and left no error code). */
    if (cli->err_code != 0)
        print_error(cli, troupe_proto_ErrorCode_name((uint16_t)cli->err_code));
    return NULL;
}

static int done_ok(struct cli *cli, const char *what, unsigned long long id)
{
    if (cli->json)
        print_json(json_pack("{s:b, s:s, s:I}", "ok", 1, "action", what, "node", (json_int_t)id));
    else
        printf("%s node %llu: done\n", what, id);
    return 0;
}

struct add_arg {
    unsigned long long id;
    const char *raft, *peer;
};

static tr_fb_ref build_add(struct tr_fb_builder *b, const void *arg)
{
    const struct add_arg *x = arg;
    tr_fb_ref raft = tr_fb_create_str(b, x->raft), peer = opt_fb_str(b, x->peer);
    troupe_proto_ClusterAddNode_start(b);
    troupe_proto_ClusterAddNode_add_node_id(b, x->id);
    troupe_proto_ClusterAddNode_add_raft_address(b, raft);
    troupe_proto_ClusterAddNode_add_peer_address(b, peer);
    return troupe_proto_ClusterAddNode_end(b);
}

static int node_arg(const struct args *a, unsigned long long *id)
{
    char *end;
    if (a->n_pos < 1)
        return usage_error("a node id is required");
    *id = strtoull(a->pos[0], &end, 10);
    if (a->pos[0][0] == '\0' || *end != '\0' || *id == 0)
        return usage_error("node id: expected a positive integer, got %s", a->pos[0]);
    return 0;
}

static int cluster_add(struct cli *cli, int argc, char **argv)
{
    static const char *const known[] = { "raft", "peer", NULL };
    struct args a;
    int rv = args_parse(&a, argc, argv, known, 1);
    if (rv != 0)
        return rv;
    struct add_arg x = { 0, opt(&a, "raft"), opt(&a, "peer") };
    if ((rv = node_arg(&a, &x.id)) != 0)
        return rv;
    if (x.raft == NULL)
        return usage_error("cluster add: --raft HOST:PORT is required");
    if (call_leader(cli, troupe_proto_Op_ClusterAddNode, build_add, &x) == NULL)
        return EXIT_FAILED;
    return done_ok(cli, "added", x.id);
}

static tr_fb_ref build_remove(struct tr_fb_builder *b, const void *arg)
{
    troupe_proto_ClusterRemoveNode_start(b);
    troupe_proto_ClusterRemoveNode_add_node_id(b, *(const unsigned long long *)arg);
    return troupe_proto_ClusterRemoveNode_end(b);
}

static tr_fb_ref build_drain(struct tr_fb_builder *b, const void *arg)
{
    troupe_proto_ClusterDrain_start(b);
    troupe_proto_ClusterDrain_add_node_id(b, *(const unsigned long long *)arg);
    return troupe_proto_ClusterDrain_end(b);
}

static tr_fb_ref build_transfer(struct tr_fb_builder *b, const void *arg)
{
    troupe_proto_ClusterTransfer_start(b);
    troupe_proto_ClusterTransfer_add_node_id(b, *(const unsigned long long *)arg);
    return troupe_proto_ClusterTransfer_end(b);
}

static int node_op(struct cli *cli, int argc, char **argv, int optional, uint8_t op_type, op_builder build,
                   const char *what)
{
    static const char *const known[] = { NULL };
    struct args a;
    int rv = args_parse(&a, argc, argv, known, 1);
    if (rv != 0)
        return rv;
    unsigned long long id = 0;
    if ((a.n_pos > 0 || !optional) && (rv = node_arg(&a, &id)) != 0)
        return rv;
    if (call_leader(cli, op_type, build, &id) == NULL)
        return EXIT_FAILED;
    return done_ok(cli, what, id);
}

static int cluster_remove(struct cli *cli, int argc, char **argv)
{
    return node_op(cli, argc, argv, 0, troupe_proto_Op_ClusterRemoveNode, build_remove, "removed");
}

static int cluster_drain(struct cli *cli, int argc, char **argv)
{
    return node_op(cli, argc, argv, 0, troupe_proto_Op_ClusterDrain, build_drain, "drained and removed");
}

static int cluster_transfer(struct cli *cli, int argc, char **argv)
{
    return node_op(cli, argc, argv, 1, troupe_proto_Op_ClusterTransfer, build_transfer, "leadership to");
}

/* ---- cluster verify ---------------------------------------------------------------------------- */

#define VERIFY_MAX_NODES 64

struct node_digest {
    unsigned long long id;
    char client[128];
    int alive;
    int answered;
    unsigned char digest[32];
    unsigned long long applied;
    char error[600];
};

/* Ask the node at cli->server for its digest at checkpoint index (0: make
 * one). Fills d; returns the checkpoint's index, or 0 after a failure (its
 * reason in d->error). */
static unsigned long long ask_digest(struct cli *cli, unsigned long long index, struct node_digest *d)
{
    struct tr_fb_builder *b = &cli->b;
    tr_fb_builder_reset(b);
    troupe_proto_ClusterVerify_start(b);
    troupe_proto_ClusterVerify_add_index(b, index);
    cli->quiet = 1;
    const struct troupe_proto_Response *r = call(cli, troupe_proto_Op_ClusterVerify, troupe_proto_ClusterVerify_end(b));
    cli->quiet = 0;
    const struct troupe_proto_ClusterVerifyResult *v = r ? troupe_proto_Response_result_as_ClusterVerifyResult(r) : NULL;
    if (v == NULL || troupe_proto_ClusterVerifyResult_nodes_len(v) != 1) {
        snprintf(d->error, sizeof d->error, "%s", r == NULL ? cli->err_msg : "no digest in the answer");
        if (d->error[0] == '\0')
            snprintf(d->error, sizeof d->error, "no answer");
        return 0;
    }
    const struct troupe_proto_NodeDigest *nd = troupe_proto_ClusterVerifyResult_nodes_at(v, 0);
    struct tr_fb_vec dg = troupe_proto_NodeDigest_digest(nd);
    if (dg.len != sizeof d->digest) {
        snprintf(d->error, sizeof d->error, "a digest of %u bytes", (unsigned)dg.len);
        return 0;
    }
    memcpy(d->digest, dg.data, sizeof d->digest);
    d->applied = troupe_proto_NodeDigest_applied_index(nd);
    d->answered = 1;
    return troupe_proto_ClusterVerifyResult_index(v);
}

static int cluster_verify(struct cli *cli, int argc, char **argv)
{
    static const char *const known[] = { NULL };
    struct args a;
    int rv = args_parse(&a, argc, argv, known, 0);
    if (rv != 0)
        return rv;
    struct tr_fb_builder *b = &cli->b;
    troupe_proto_ClusterStatus_start(b);
    const struct troupe_proto_Response *r = call(cli, troupe_proto_Op_ClusterStatus, troupe_proto_ClusterStatus_end(b));
    const struct troupe_proto_ClusterInfo *ci = r ? troupe_proto_Response_result_as_ClusterInfo(r) : NULL;
    if (ci == NULL)
        return r != NULL ? failed("the server answered without cluster information") : EXIT_FAILED;
    static struct node_digest nodes[VERIFY_MAX_NODES];
    uint32_t n = troupe_proto_ClusterInfo_nodes_len(ci);
    if (n > VERIFY_MAX_NODES)
        n = VERIFY_MAX_NODES;
    for (uint32_t i = 0; i < n; i++) {
        const struct troupe_proto_NodeInfo *ni = troupe_proto_ClusterInfo_nodes_at(ci, i);
        struct tr_fb_str cl = troupe_proto_NodeInfo_client_address(ni);
        nodes[i] = (struct node_digest){ .id = troupe_proto_NodeInfo_id(ni), .alive = troupe_proto_NodeInfo_alive(ni) };
        snprintf(nodes[i].client, sizeof nodes[i].client, "%s", cl.ptr ? cl.ptr : "");
    }
    /* A new checkpoint through the node asked; then every other node's digest there. */
    struct node_digest first = { 0 };
    unsigned long long index = ask_digest(cli, 0, &first);
    if (index == 0)
        return failed("cluster verify: the checkpoint failed: %s", first.error);
    const char *server = cli->server;
    for (uint32_t i = 0; i < n; i++) {
        struct node_digest *d = &nodes[i];
        if (d->client[0] == '\0') {
            snprintf(d->error, sizeof d->error, "no client address known");
            continue;
        }
        if (strcmp(d->client, server) == 0) {
            memcpy(d->digest, first.digest, sizeof d->digest);
            d->applied = first.applied;
            d->answered = 1;
            continue;
        }
        struct cli other = { .server = d->client, .token = cli->token, .fd = -1 };
        tr_fb_builder_init(&other.b);
        int saved = dup(2), devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
        if (saved >= 0 && devnull >= 0)
            dup2(devnull, 2); /* dial() reports failures itself: keep them for the table */
        int drv = dial(&other);
        if (saved >= 0) {
            dup2(saved, 2);
            close(saved);
        }
        if (devnull >= 0)
            close(devnull);
        if (drv != 0) {
            char addr[sizeof d->client]; /* a copy: GCC's -Wrestrict sees d->error and d->client as one object */
            memcpy(addr, d->client, sizeof addr);
            snprintf(d->error, sizeof d->error, "cannot connect to %s", addr);
        }
        else
            ask_digest(&other, index, d);
        tr_fb_builder_free(&other.b);
        free(other.frame);
        if (other.fd >= 0)
            close(other.fd);
    }
    int consistent = 1, compared = 0;
    const unsigned char *ref = NULL;
    for (uint32_t i = 0; i < n; i++) {
        if (!nodes[i].answered) {
            if (nodes[i].alive)
                consistent = 0; /* a live node that cannot show its digest: not verified */
            continue;
        }
        compared++;
        if (ref == NULL)
            ref = nodes[i].digest;
        else if (memcmp(ref, nodes[i].digest, 32) != 0)
            consistent = 0;
    }
    if (compared == 0)
        consistent = 0;
    if (cli->json) {
        json_t *arr = json_array();
        for (uint32_t i = 0; i < n; i++) {
            char hex[65] = "";
            for (int k = 0; k < 32 && nodes[i].answered; k++)
                snprintf(hex + 2 * k, 3, "%02x", nodes[i].digest[k]);
            json_t *o = json_pack("{s:I, s:b}", "node", (json_int_t)nodes[i].id, "alive", nodes[i].alive);
            if (nodes[i].answered) {
                json_object_set_new(o, "digest", json_string(hex));
                json_object_set_new(o, "last_applied", json_integer((json_int_t)nodes[i].applied));
            } else {
                json_object_set_new(o, "error", json_string(nodes[i].error));
            }
            json_array_append_new(arr, o);
        }
        print_json(json_pack("{s:b, s:I, s:o}", "consistent", consistent, "index", (json_int_t)index, "nodes", arr));
    } else {
        printf("checkpoint at raft index %llu\n", index);
        printf("%-6s %-6s %-66s %s\n", "NODE", "ALIVE", "DIGEST", "STATE APPLIED");
        for (uint32_t i = 0; i < n; i++) {
            char hex[65] = "";
            for (int k = 0; k < 32 && nodes[i].answered; k++)
                snprintf(hex + 2 * k, 3, "%02x", nodes[i].digest[k]);
            if (nodes[i].answered)
                printf("%-6llu %-6s %-66s %llu\n", nodes[i].id, nodes[i].alive ? "yes" : "no", hex, nodes[i].applied);
            else
                printf("%-6llu %-6s (%s)\n", nodes[i].id, nodes[i].alive ? "yes" : "no", nodes[i].error);
        }
        printf(consistent ? "consistent: %d nodes agree\n" : "NOT consistent (%d digests compared)\n", compared);
    }
    return consistent ? 0 : EXIT_FAILED;
}

/* ---- tenant and key ---------------------------------------------------------------------------- */

static const char *const key_role_names[] = { "viewer", "approver", "operator", "admin" };

static int opt_double(const struct args *a, const char *name, double *out, int *has)
{
    const char *v = opt(a, name);
    *has = v != NULL;
    if (v == NULL)
        return 0;
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (*v == '\0' || *end != '\0' || errno != 0 || !(x >= 0) || x > 1e9)
        return usage_error("--%s: expected a number from 0 to 1e9, got %s", name, v);
    *out = x;
    return 0;
}

static int opt_policy(const struct args *a, const char *name, const char **out)
{
    *out = opt(a, name);
    if (*out != NULL && strcmp(*out, "fail") != 0 && strcmp(*out, "wait") != 0)
        return usage_error("--%s: fail or wait, got %s", name, *out);
    return 0;
}

static json_t *tenant_json(const struct troupe_proto_TenantInfo *t)
{
    const struct troupe_cmd_TenantLimits *l = troupe_proto_TenantInfo_limits(t);
    json_t *j = json_object();
    json_object_set_new(j, "id", jstr(troupe_proto_TenantInfo_id(t)));
    json_object_set_new(j, "name", jstr(troupe_proto_TenantInfo_name(t)));
    if (l != NULL)
        json_object_set_new(
            j, "limits",
            json_pack("{s:I, s:I, s:f, s:s}", "max_active_runs", (json_int_t)troupe_cmd_TenantLimits_max_active_runs(l),
                      "requests_per_s", (json_int_t)troupe_cmd_TenantLimits_requests_per_s(l), "budget_usd_per_day",
                      troupe_cmd_TenantLimits_budget_usd_per_day(l), "budget_policy",
                      troupe_cmd_TenantLimits_budget_policy(l) == troupe_cmd_BudgetPolicy_Wait ? "wait" : "fail"));
    else
        json_object_set_new(j, "limits", json_null());
    json_object_set_new(j, "created_at", jtime(troupe_proto_TenantInfo_created_at_us(t)));
    json_object_set_new(
        j, "spend",
        json_pack("{s:o, s:f, s:I, s:I, s:f, s:b}", "day", jtime(troupe_proto_TenantInfo_spend_day_us(t)), "cost_usd",
                  troupe_proto_TenantInfo_spend_micro_usd(t) / 1e6, "prompt_tokens",
                  (json_int_t)troupe_proto_TenantInfo_spend_prompt_tokens(t), "completion_tokens",
                  (json_int_t)troupe_proto_TenantInfo_spend_completion_tokens(t), "total_cost_usd",
                  troupe_proto_TenantInfo_total_micro_usd(t) / 1e6, "budget_exhausted",
                  troupe_proto_TenantInfo_budget_exhausted(t)));
    struct tr_fb_str key = troupe_proto_TenantInfo_api_key(t);
    if (key.ptr != NULL) {
        json_object_set_new(j, "api_key", jstr(key));
        json_object_set_new(j, "key_id", jstr(troupe_proto_TenantInfo_key_id(t)));
    }
    return j;
}

static void print_tenant_row(const struct troupe_proto_TenantInfo *t)
{
    const struct troupe_cmd_TenantLimits *l = troupe_proto_TenantInfo_limits(t);
    struct tr_fb_str id = troupe_proto_TenantInfo_id(t), name = troupe_proto_TenantInfo_name(t);
    char budget[32];
    double b = l != NULL ? troupe_cmd_TenantLimits_budget_usd_per_day(l) : 0;
    if (b > 0)
        snprintf(budget, sizeof budget, "%.2f/%s", b,
                 troupe_cmd_TenantLimits_budget_policy(l) == troupe_cmd_BudgetPolicy_Wait ? "wait" : "fail");
    else
        snprintf(budget, sizeof budget, "-");
    printf("%-22.*s %-20.*s %-11u %-7u %-14s %.6f%s\n", (int)id.len, id.ptr ? id.ptr : "", (int)name.len,
           name.ptr ? name.ptr : "", l ? troupe_cmd_TenantLimits_max_active_runs(l) : 0,
           l ? troupe_cmd_TenantLimits_requests_per_s(l) : 0, budget, troupe_proto_TenantInfo_spend_micro_usd(t) / 1e6,
           troupe_proto_TenantInfo_budget_exhausted(t) ? " (spent)" : "");
}

static void print_tenant_head(void)
{
    printf("%-22s %-20s %-11s %-7s %-14s %s\n", "ID", "NAME", "MAX_ACTIVE", "RPS", "BUDGET/DAY", "SPENT_TODAY_USD");
}

/* The arguments of tenant create / update: one positional (what) and the
 * limit options; absent ones keep the values *l holds. */
struct tenant_limits {
    unsigned long long active, rps;
    double budget;
    int has_budget;
    const char *policy;
};

static int tenant_args(struct args *a, int argc, char **argv, const char *what, struct tenant_limits *l)
{
    static const char *const known[] = { "max-active-runs", "rps", "budget-usd-per-day", "budget-policy", NULL };
    int rv = args_parse(a, argc, argv, known, 1);
    if (rv != 0)
        return rv;
    if (a->n_pos != 1)
        return usage_error("tenant %s is required", what);
    if ((rv = opt_uint(a, "max-active-runs", 1000000, &l->active)) != 0 ||
        (rv = opt_uint(a, "rps", 1000000, &l->rps)) != 0 ||
        (rv = opt_double(a, "budget-usd-per-day", &l->budget, &l->has_budget)) != 0 ||
        (rv = opt_policy(a, "budget-policy", &l->policy)) != 0)
        return rv;
    return 0;
}

static int tenant_create(struct cli *cli, int argc, char **argv)
{
    struct args a;
    struct tenant_limits l = { .active = 100, .rps = 50 };
    int rv = tenant_args(&a, argc, argv, "create: NAME", &l);
    if (rv != 0)
        return rv;
    unsigned long long active = l.active, rps = l.rps;
    double budget = l.budget;
    const char *policy = l.policy;
    struct tr_fb_builder *b = &cli->b;
    tr_fb_ref name = tr_fb_create_str(b, a.pos[0]);
    troupe_cmd_TenantLimits_start(b);
    troupe_cmd_TenantLimits_add_max_active_runs(b, (uint32_t)active);
    troupe_cmd_TenantLimits_add_requests_per_s(b, (uint32_t)rps);
    troupe_cmd_TenantLimits_add_budget_usd_per_day(b, budget);
    troupe_cmd_TenantLimits_add_budget_policy(b, policy != NULL && strcmp(policy, "wait") == 0
                                                     ? troupe_cmd_BudgetPolicy_Wait
                                                     : troupe_cmd_BudgetPolicy_Fail);
    tr_fb_ref limits = troupe_cmd_TenantLimits_end(b);
    troupe_proto_CreateTenant_start(b);
    troupe_proto_CreateTenant_add_name(b, name);
    troupe_proto_CreateTenant_add_limits(b, limits);
    const struct troupe_proto_Response *r =
        call(cli, troupe_proto_Op_CreateTenant, troupe_proto_CreateTenant_end(b));
    const struct troupe_proto_TenantInfo *t = r ? troupe_proto_Response_result_as_TenantInfo(r) : NULL;
    if (t == NULL)
        return r != NULL ? failed("the server answered without a tenant") : EXIT_FAILED;
    if (cli->json) {
        print_json(tenant_json(t));
        return 0;
    }
    struct tr_fb_str id = troupe_proto_TenantInfo_id(t), key = troupe_proto_TenantInfo_api_key(t);
    printf("tenant %.*s (%s) created\n", (int)id.len, id.ptr ? id.ptr : "", a.pos[0]);
    printf("admin API key (shown only now; keep it): %.*s\n", (int)key.len, key.ptr ? key.ptr : "");
    return 0;
}

/* ListTenants; r is the response (NULL: failed, reported). */
static const struct troupe_proto_TenantPage *tenant_page(struct cli *cli, unsigned long long limit)
{
    struct tr_fb_builder *b = &cli->b;
    troupe_proto_ListTenants_start(b);
    troupe_proto_ListTenants_add_limit(b, (uint32_t)limit);
    const struct troupe_proto_Response *r = call(cli, troupe_proto_Op_ListTenants, troupe_proto_ListTenants_end(b));
    const struct troupe_proto_TenantPage *p = r ? troupe_proto_Response_result_as_TenantPage(r) : NULL;
    if (r != NULL && p == NULL)
        failed("the server answered without a page");
    return p;
}

static int tenant_list(struct cli *cli, int argc, char **argv)
{
    static const char *const known[] = { "limit", NULL };
    struct args a;
    int rv = args_parse(&a, argc, argv, known, 0);
    if (rv != 0)
        return rv;
    unsigned long long limit = 50;
    if ((rv = opt_uint(&a, "limit", 500, &limit)) != 0)
        return rv;
    if (limit == 0)
        return usage_error("--limit: at least 1");
    const struct troupe_proto_TenantPage *p = tenant_page(cli, limit);
    if (p == NULL)
        return EXIT_FAILED;
    uint32_t n = troupe_proto_TenantPage_tenants_len(p);
    if (cli->json) {
        json_t *list = json_array();
        for (uint32_t i = 0; i < n; i++)
            json_array_append_new(list, tenant_json(troupe_proto_TenantPage_tenants_at(p, i)));
        print_json(json_pack("{s:o, s:o}", "tenants", list, "next_cursor",
                             jstr(troupe_proto_TenantPage_next_cursor(p))));
        return 0;
    }
    print_tenant_head();
    for (uint32_t i = 0; i < n; i++)
        print_tenant_row(troupe_proto_TenantPage_tenants_at(p, i));
    return 0;
}

/* UpdateTenant with the limits given (-1 / NULL: unchanged). */
static int tenant_set(struct cli *cli, const char *tenant, long long active, long long rps, double budget,
                      const char *policy)
{
    struct tr_fb_builder *b = &cli->b;
    tr_fb_ref t = tr_fb_create_str(b, tenant);
    tr_fb_ref pol = opt_fb_str(b, policy);
    troupe_proto_UpdateTenant_start(b);
    troupe_proto_UpdateTenant_add_tenant(b, t);
    troupe_proto_UpdateTenant_add_max_active_runs(b, active);
    troupe_proto_UpdateTenant_add_requests_per_s(b, rps);
    troupe_proto_UpdateTenant_add_budget_usd_per_day(b, budget);
    if (pol != 0)
        troupe_proto_UpdateTenant_add_budget_policy(b, pol);
    const struct troupe_proto_Response *r = call(cli, troupe_proto_Op_UpdateTenant, troupe_proto_UpdateTenant_end(b));
    const struct troupe_proto_TenantInfo *ti = r ? troupe_proto_Response_result_as_TenantInfo(r) : NULL;
    if (ti == NULL)
        return r != NULL ? failed("the server answered without a tenant") : EXIT_FAILED;
    if (cli->json) {
        print_json(tenant_json(ti));
        return 0;
    }
    print_tenant_head();
    print_tenant_row(ti);
    return 0;
}

static int tenant_budget(struct cli *cli, int argc, char **argv)
{
    static const char *const known[] = { "set", "policy", NULL };
    struct args a;
    int rv = args_parse(&a, argc, argv, known, 1);
    if (rv != 0)
        return rv;
    if (a.n_pos != 1)
        return usage_error("tenant budget: TENANT is required");
    double set = 0;
    int has_set;
    const char *policy;
    if ((rv = opt_double(&a, "set", &set, &has_set)) != 0 || (rv = opt_policy(&a, "policy", &policy)) != 0)
        return rv;
    if (has_set || policy != NULL)
        return tenant_set(cli, a.pos[0], -1, -1, has_set ? set : -1, policy);
    const struct troupe_proto_TenantPage *p = tenant_page(cli, 500);
    if (p == NULL)
        return EXIT_FAILED;
    for (uint32_t i = 0; i < troupe_proto_TenantPage_tenants_len(p); i++) {
        const struct troupe_proto_TenantInfo *t = troupe_proto_TenantPage_tenants_at(p, i);
        struct tr_fb_str id = troupe_proto_TenantInfo_id(t), name = troupe_proto_TenantInfo_name(t);
        if ((id.ptr != NULL && strcmp(id.ptr, a.pos[0]) == 0) || (name.ptr != NULL && strcmp(name.ptr, a.pos[0]) == 0)) {
            if (cli->json) {
                print_json(tenant_json(t));
                return 0;
            }
            const struct troupe_cmd_TenantLimits *l = troupe_proto_TenantInfo_limits(t);
            double b = l != NULL ? troupe_cmd_TenantLimits_budget_usd_per_day(l) : 0;
            printf("tenant %.*s (%.*s)\n", (int)id.len, id.ptr, (int)name.len, name.ptr ? name.ptr : "");
            if (b > 0)
                printf("budget:      %.6f USD per UTC day (when spent: %s)\n", b,
                       troupe_cmd_TenantLimits_budget_policy(l) == troupe_cmd_BudgetPolicy_Wait ? "runs wait"
                                                                                                : "runs fail");
            else
                printf("budget:      none\n");
            printf("spent today: %.6f USD (%llu prompt + %llu completion tokens)%s\n",
                   troupe_proto_TenantInfo_spend_micro_usd(t) / 1e6,
                   (unsigned long long)troupe_proto_TenantInfo_spend_prompt_tokens(t),
                   (unsigned long long)troupe_proto_TenantInfo_spend_completion_tokens(t),
                   troupe_proto_TenantInfo_budget_exhausted(t) ? " -- spent: no new model calls" : "");
            printf("spent total: %.6f USD\n", troupe_proto_TenantInfo_total_micro_usd(t) / 1e6);
            return 0;
        }
    }
    return failed("NotFound: no tenant %s", a.pos[0]);
}

static int tenant_update(struct cli *cli, int argc, char **argv)
{
    struct args a;
    struct tenant_limits l = { 0 };
    int rv = tenant_args(&a, argc, argv, "update: TENANT", &l);
    if (rv != 0)
        return rv;
    return tenant_set(cli, a.pos[0], opt(&a, "max-active-runs") ? (long long)l.active : -1,
                      opt(&a, "rps") ? (long long)l.rps : -1, l.has_budget ? l.budget : -1, l.policy);
}

static int key_create(struct cli *cli, int argc, char **argv)
{
    static const char *const known[] = { "tenant", "role", NULL };
    struct args a;
    int rv = args_parse(&a, argc, argv, known, 0);
    if (rv != 0)
        return rv;
    const char *tenant = opt(&a, "tenant"), *role = opt(&a, "role");
    if (tenant == NULL || role == NULL)
        return usage_error("key create: --tenant and --role are required");
    int ri = INDEX_OF(key_role_names, role);
    if (ri < 0)
        return usage_error("--role: admin, operator, approver or viewer, got %s", role);
    struct tr_fb_builder *b = &cli->b;
    tr_fb_ref t = tr_fb_create_str(b, tenant);
    troupe_proto_CreateKey_start(b);
    troupe_proto_CreateKey_add_tenant(b, t);
    troupe_proto_CreateKey_add_role(b, (int8_t)ri);
    const struct troupe_proto_Response *r = call(cli, troupe_proto_Op_CreateKey, troupe_proto_CreateKey_end(b));
    const struct troupe_proto_KeyCreated *k = r ? troupe_proto_Response_result_as_KeyCreated(r) : NULL;
    if (k == NULL)
        return r != NULL ? failed("the server answered without a key") : EXIT_FAILED;
    if (cli->json) {
        print_json(json_pack("{s:o, s:o, s:o, s:s}", "api_key", jstr(troupe_proto_KeyCreated_api_key(k)), "key_id",
                             jstr(troupe_proto_KeyCreated_key_id(k)), "tenant", jstr(troupe_proto_KeyCreated_tenant(k)),
                             "role", NAME_OF(key_role_names, troupe_proto_KeyCreated_role(k))));
        return 0;
    }
    struct tr_fb_str key = troupe_proto_KeyCreated_api_key(k), kid = troupe_proto_KeyCreated_key_id(k);
    printf("%s key %.*s created\n", NAME_OF(key_role_names, troupe_proto_KeyCreated_role(k)), (int)kid.len,
           kid.ptr ? kid.ptr : "");
    printf("API key (shown only now; keep it): %.*s\n", (int)key.len, key.ptr);
    return 0;
}

static int key_revoke(struct cli *cli, int argc, char **argv)
{
    static const char *const known[] = { NULL };
    struct args a;
    int rv = args_parse(&a, argc, argv, known, 1);
    if (rv != 0)
        return rv;
    if (a.n_pos != 1)
        return usage_error("key revoke: KEY_ID is required");
    struct tr_fb_builder *b = &cli->b;
    tr_fb_ref k = tr_fb_create_str(b, a.pos[0]);
    troupe_proto_RevokeKey_start(b);
    troupe_proto_RevokeKey_add_key_id(b, k);
    const struct troupe_proto_Response *r = call(cli, troupe_proto_Op_RevokeKey, troupe_proto_RevokeKey_end(b));
    const struct troupe_proto_KeyInfo *ki = r ? troupe_proto_Response_result_as_KeyInfo(r) : NULL;
    if (ki == NULL)
        return r != NULL ? failed("the server answered without a key") : EXIT_FAILED;
    if (cli->json) {
        print_json(json_pack("{s:o, s:o, s:s, s:b}", "key_id", jstr(troupe_proto_KeyInfo_key_id(ki)), "tenant",
                             jstr(troupe_proto_KeyInfo_tenant(ki)), "role",
                             NAME_OF(key_role_names, troupe_proto_KeyInfo_role(ki)), "revoked",
                             troupe_proto_KeyInfo_revoked(ki)));
        return 0;
    }
    printf("key %s revoked\n", a.pos[0]);
    return 0;
}

/* ---- main ----------------------------------------------------------------------------------------- */

typedef int (*cmd_fn)(struct cli *, int, char **);

static int run_group(struct cli *cli, const char *group, int argc, char **argv)
{
    const char *help = strcmp(group, "run") == 0        ? help_run
                       : strcmp(group, "approval") == 0 ? help_approval
                       : strcmp(group, "tool") == 0     ? help_tool
                       : strcmp(group, "cluster") == 0  ? help_cluster
                       : strcmp(group, "tenant") == 0   ? help_tenant
                       : strcmp(group, "key") == 0      ? help_key
                                                        : NULL;
    if (help == NULL)
        return usage_error("unknown group %s", group);
    if (argc < 1 || strcmp(argv[0], "--help") == 0 || strcmp(argv[0], "-h") == 0) {
        fputs(help, argc < 1 ? stderr : stdout);
        return argc < 1 ? EXIT_USAGE : 0;
    }
    const char *cmd = argv[0];
    cmd_fn fn = NULL;
    int decide = -1, enable = -1;
    if (strcmp(group, "run") == 0) {
        fn = strcmp(cmd, "create") == 0   ? run_create
             : strcmp(cmd, "get") == 0    ? run_get
             : strcmp(cmd, "list") == 0   ? run_list
             : strcmp(cmd, "cancel") == 0 ? run_cancel
             : strcmp(cmd, "events") == 0 ? run_events
                                          : NULL;
    } else if (strcmp(group, "approval") == 0) {
        fn = strcmp(cmd, "list") == 0 ? approval_list : NULL;
        decide = strcmp(cmd, "approve") == 0 ? troupe_journal_Decision_Approve
                 : strcmp(cmd, "deny") == 0  ? troupe_journal_Decision_Deny
                                             : -1;
    } else if (strcmp(group, "tool") == 0) {
        fn = strcmp(cmd, "register") == 0 ? tool_register
             : strcmp(cmd, "list") == 0   ? tool_list
             : strcmp(cmd, "get") == 0    ? tool_get
                                          : NULL;
        enable = strcmp(cmd, "enable") == 0 ? 1 : strcmp(cmd, "disable") == 0 ? 0 : -1;
    } else if (strcmp(group, "tenant") == 0) {
        fn = strcmp(cmd, "create") == 0   ? tenant_create
             : strcmp(cmd, "list") == 0   ? tenant_list
             : strcmp(cmd, "budget") == 0 ? tenant_budget
             : strcmp(cmd, "update") == 0 ? tenant_update
                                          : NULL;
    } else if (strcmp(group, "key") == 0) {
        fn = strcmp(cmd, "create") == 0 ? key_create : strcmp(cmd, "revoke") == 0 ? key_revoke : NULL;
    } else if (strcmp(group, "cluster") == 0) {
        fn = strcmp(cmd, "status") == 0     ? cluster_status
             : strcmp(cmd, "add") == 0      ? cluster_add
             : strcmp(cmd, "remove") == 0   ? cluster_remove
             : strcmp(cmd, "drain") == 0    ? cluster_drain
             : strcmp(cmd, "transfer") == 0 ? cluster_transfer
             : strcmp(cmd, "verify") == 0   ? cluster_verify
                                            : NULL;
    }
    if (fn == NULL && decide < 0 && enable < 0)
        return usage_error("%s: unknown command %s", group, cmd);
    if (wants_help(argc - 1, argv + 1)) {
        fputs(help, stdout);
        return 0;
    }
    int rv = dial(cli);
    if (rv != 0)
        return rv;
    if (fn != NULL)
        return fn(cli, argc - 1, argv + 1);
    if (decide >= 0)
        return approval_decide(cli, argc - 1, argv + 1, decide);
    return tool_set_enabled(cli, argc - 1, argv + 1, enable == 1);
}

int main(int argc, char **argv)
{
    struct cli cli = { .server = getenv("TROUPE_SERVER"), .token = getenv("TROUPE_TOKEN"), .fd = -1 };
    if (cli.server == NULL || cli.server[0] == '\0')
        cli.server = "127.0.0.1:7301";
    if (cli.token != NULL && cli.token[0] == '\0')
        cli.token = NULL;
    enum { O_SERVER = 1, O_TOKEN, O_JSON, O_HELP };
    static const struct option longopts[] = {
        { "server", required_argument, NULL, O_SERVER },
        { "token", required_argument, NULL, O_TOKEN },
        { "json", no_argument, NULL, O_JSON },
        { "help", no_argument, NULL, O_HELP },
        { NULL, 0, NULL, 0 },
    };
    int c;
    /* '+': stop at the group, whose options are its own. */
    while ((c = getopt_long(argc, argv, "+h", longopts, NULL)) != -1) {
        switch (c) {
        case O_SERVER: cli.server = optarg; break;
        case O_TOKEN: cli.token = optarg; break;
        case O_JSON: cli.json = 1; break;
        case O_HELP:
        case 'h': fputs(help_main, stdout); return 0;
        default: fputs(help_main, stderr); return EXIT_USAGE;
        }
    }
    if (optind >= argc) {
        fputs(help_main, stderr);
        return EXIT_USAGE;
    }
    tr_fb_builder_init(&cli.b);
    int rv = run_group(&cli, argv[optind], argc - optind - 1, argv + optind + 1);
    tr_fb_builder_free(&cli.b);
    free(cli.frame);
    if (cli.fd >= 0)
        close(cli.fd);
    return rv;
}
