/* The cluster integration tests' shared fixture: see cluster_fixture.h for
 * what it gives, who owns what and how it fails. */
#include <stdio.h>
#include <string.h>

#include "cluster_fixture.h"

/* The nodes run without TROUPE_ADMIN_TOKEN (the harness's cluster helpers
 * speak without a key): every caller is the cluster admin. */
static const char *const hdrs[] = { "Content-Type: application/json", NULL };

static int write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return -1;
    fputs(text, f);
    return fclose(f);
}

int cf_start(struct cf_fixture *f, const char *tag, const char *script, const char *receipts,
             const struct h_cluster_opts *o)
{
    char path[512];
    f->dir = h_tmpdir(tag);
    if (f->dir == NULL)
        return -1;
    snprintf(path, sizeof path, "%s/script.json", f->dir);
    if (write_file(path, script) != 0 || h_mockllm_start(&f->mock, path, f->dir, f->mock_base, sizeof f->mock_base) != 0)
        return -1;
    if (receipts != NULL)
        snprintf(path, sizeof path, "%s/%s", f->dir, receipts);
    if (h_toolserver_start(&f->tools, f->dir, receipts != NULL ? path : NULL, f->tools_base, sizeof f->tools_base) != 0)
        return -1;
    snprintf(f->env_url, sizeof f->env_url, "OPENAI_BASE_URL=%s", f->mock_base);
    char *env[] = { f->env_url, "OPENAI_API_KEY=test", NULL };
    struct h_cluster_opts co = *o;
    co.env = env;
    return h_cluster_start(&f->c, f->dir, &co) != 0 ? -1 : 0;
}

void cf_stop(struct cf_fixture *f)
{
    h_cluster_free(&f->c);
    h_proc_stop(&f->tools, 5000);
    h_proc_stop(&f->mock, 5000);
    h_proc_free(&f->tools);
    h_proc_free(&f->mock);
    h_tmpdir_remove(f->dir);
}

json_t *cf_call(struct cf_fixture *f, const char *method, int i, const char *path, const char *body, long *status)
{
    char url[512];
    struct h_resp r;
    snprintf(url, sizeof url, "%s%s", h_cluster_node(&f->c, i)->base, path);
    h_http(&r, method, url, body, hdrs, 30000);
    *status = r.status;
    json_t *j = r.json;
    r.json = NULL;
    h_resp_free(&r);
    return j;
}

long cf_register_tool(struct cf_fixture *f, int i, const char *name, const char *description, const char *tool_path,
                      const char *risk, unsigned timeout_ms)
{
    char body[1024], timeout[48] = "";
    long st;
    if (timeout_ms > 0)
        snprintf(timeout, sizeof timeout, ", \"timeout_ms\": %u", timeout_ms);
    snprintf(body, sizeof body,
             "{\"name\": \"%s\", \"description\": \"%s\", \"input_schema\": {\"type\": \"object\"},"
             " \"risk\": \"%s\", \"kind\": \"http\"%s, \"config\": {\"url\": \"%s/tools/%s\", \"allow\": [\"127.0.0.1\"]}}",
             name, description, risk, timeout, f->tools_base, tool_path);
    json_decref(cf_call(f, "POST", i, "/v1/tools", body, &st));
    return st;
}
