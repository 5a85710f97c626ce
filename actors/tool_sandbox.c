/* The sandbox tool's pure parts: its config and the command line that runs
 * a program without network, with a read-only /usr, a private /tmp and no
 * capabilities.
 *
 * bubblewrap (default): new user, pid, net, ipc, uts and cgroup namespaces,
 * uid/gid 65534, a new session, killed with its parent. gVisor ("runtime":
 * "gvisor"): `runsc --network=none do`, which gives the program a copy-on-
 * write view of the host's root and no network. The executor passes the
 * arguments on stdin, keeps stdout as the result and kills the process group
 * at the deadline (tool.c). */
#include <string.h>

#include "actors/tool.h"

static const char *const bwrap_prefix[] = {
    "--unshare-all", "--unshare-user", "--uid", "65534", "--gid", "65534",
    "--die-with-parent", "--new-session", "--cap-drop", "ALL",
    "--ro-bind", "/usr", "/usr",
    "--ro-bind-try", "/lib", "/lib",
    "--ro-bind-try", "/lib64", "/lib64",
    "--ro-bind-try", "/bin", "/bin",
    "--ro-bind-try", "/sbin", "/sbin",
    "--ro-bind-try", "/etc/alternatives", "/etc/alternatives",
    "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--chdir", "/tmp",
    "--",
};

static const char *const runsc_prefix[] = {"--network=none", "do"};

static char *const sandbox_env[] = {
    "PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/tmp", "LANG=C.UTF-8", "PYTHONDONTWRITEBYTECODE=1", NULL,
};

char *const *tool_sandbox_env(void)
{
    return sandbox_env;
}

static char **argv_new(size_t n)
{
    return tr_calloc(n + 1, sizeof(char *));
}

void tool_argv_free(char **argv)
{
    if (!argv)
        return;
    for (char **p = argv; *p; p++)
        tr_free(*p);
    tr_free(argv);
}

static int parse_command(const json_t *cmd, struct tool_sandbox_cfg *cfg, struct tr_err *err)
{
    size_t i, total = 0;
    json_t *e;
    if (!json_is_array(cmd) || json_array_size(cmd) == 0)
        return tr_err_set(err, TR_EINVAL, "config.command must be a non-empty array of strings");
    if (json_array_size(cmd) > TOOL_MAX_ARGV)
        return tr_err_set(err, TR_EINVAL, "config.command: more than %d words", TOOL_MAX_ARGV);
    cfg->argv = argv_new(json_array_size(cmd));
    json_array_foreach(cmd, i, e) {
        if (!json_is_string(e) || strlen(json_string_value(e)) != json_string_length(e))
            return tr_err_set(err, TR_EINVAL, "config.command[%zu] must be a string without NUL", i);
        total += json_string_length(e) + 1;
        if (total > TOOL_MAX_ARG_BYTES)
            return tr_err_set(err, TR_EINVAL, "config.command is longer than %u bytes", TOOL_MAX_ARG_BYTES);
        cfg->argv[cfg->argc++] = tr_strdup(json_string_value(e));
    }
    if (cfg->argv[0][0] == '\0')
        return tr_err_set(err, TR_EINVAL, "config.command[0] is empty");
    return 0;
}

static int parse_language(const json_t *lang, const json_t *code, struct tool_sandbox_cfg *cfg,
                          struct tr_err *err)
{
    const char *interp;
    if (!json_is_string(lang))
        return tr_err_set(err, TR_EINVAL, "config.language must be a string");
    if (strcmp(json_string_value(lang), "python") == 0)
        interp = "/usr/bin/python3";
    else if (strcmp(json_string_value(lang), "sh") == 0)
        interp = "/bin/sh";
    else
        return tr_err_set(err, TR_EINVAL, "config.language must be \"python\" or \"sh\"");
    if (!json_is_string(code) || strlen(json_string_value(code)) != json_string_length(code))
        return tr_err_set(err, TR_EINVAL, "config.code must be a string without NUL");
    if (json_string_length(code) > TOOL_MAX_ARG_BYTES)
        return tr_err_set(err, TR_EINVAL, "config.code is longer than %u bytes", TOOL_MAX_ARG_BYTES);
    cfg->argv = argv_new(3);
    cfg->argv[0] = tr_strdup(interp);
    cfg->argv[1] = tr_strdup("-c");
    cfg->argv[2] = tr_strdup(json_string_value(code));
    cfg->argc = 3;
    return 0;
}

int tool_sandbox_cfg_parse(const json_t *config, struct tool_sandbox_cfg *cfg, struct tr_err *err)
{
    const json_t *rt, *cmd, *lang;
    int rv;

    memset(cfg, 0, sizeof(*cfg));
    if (!json_is_object(config))
        return tr_err_set(err, TR_EINVAL, "sandbox tool config must be an object");
    rt = json_object_get(config, "runtime");
    if (rt && !json_is_null(rt)) {
        if (json_is_string(rt) && strcmp(json_string_value(rt), "gvisor") == 0)
            cfg->runtime = TOOL_SANDBOX_GVISOR;
        else if (json_is_string(rt) && strcmp(json_string_value(rt), "bwrap") == 0)
            cfg->runtime = TOOL_SANDBOX_BWRAP;
        else
            return tr_err_set(err, TR_EINVAL, "sandbox tool config: runtime must be \"bwrap\" or \"gvisor\"");
    }
    cmd = json_object_get(config, "command");
    lang = json_object_get(config, "language");
    if (cmd && lang)
        rv = tr_err_set(err, TR_EINVAL, "config has both command and language");
    else if (cmd)
        rv = parse_command(cmd, cfg, err);
    else if (lang)
        rv = parse_language(lang, json_object_get(config, "code"), cfg, err);
    else
        rv = tr_err_set(err, TR_EINVAL, "config needs command or language");
    if (rv != 0) {
        tr_err_wrap(err, "sandbox tool config");
        tool_sandbox_cfg_free(cfg);
    }
    return rv;
}

void tool_sandbox_cfg_free(struct tool_sandbox_cfg *cfg)
{
    tool_argv_free(cfg->argv);
    memset(cfg, 0, sizeof(*cfg));
}

char **tool_sandbox_argv(const struct tool_sandbox_cfg *cfg, const char *prog)
{
    const char *const *prefix = cfg->runtime == TOOL_SANDBOX_GVISOR ? runsc_prefix : bwrap_prefix;
    size_t np = cfg->runtime == TOOL_SANDBOX_GVISOR ? sizeof(runsc_prefix) / sizeof(runsc_prefix[0])
                                                      : sizeof(bwrap_prefix) / sizeof(bwrap_prefix[0]);
    char **argv = argv_new(1 + np + cfg->argc);
    size_t k = 0;
    argv[k++] = tr_strdup(prog);
    for (size_t i = 0; i < np; i++)
        argv[k++] = tr_strdup(prefix[i]);
    for (size_t i = 0; i < cfg->argc; i++)
        argv[k++] = tr_strdup(cfg->argv[i]);
    return argv;
}
