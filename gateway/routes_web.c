/* The dashboard's static files: GET / (index.html) and GET /ui/<file>.
 *
 * The files live in gateway/web/ and are compiled into the binary
 * (gateway/web/embed.cmake makes web_files.c), so a node serves exactly the
 * dashboard it was built with and reads no file at run time. They need no
 * token: they hold no data. Every API call the page makes sends the token
 * the user typed in (kept in the tab's sessionStorage) as
 * `Authorization: Bearer`, including the event stream, which the page reads
 * with fetch() rather than EventSource so that the header can be sent; no
 * route accepts a token in the URL.
 *
 * Answers: 200 with Content-Type by extension, a strong ETag (a digest of
 * the bytes) and `Cache-Control: no-cache` (the browser keeps the file and
 * revalidates it: 304 when If-None-Match names the ETag, so a new build is
 * picked up at once); 404 JSON for a name that is not embedded. A Content
 * Security Policy allows only this origin's scripts, styles and fetches,
 * which the page needs and nothing more (it has no inline script or style).
 *
 * Invariants: the table is immutable; the handler reads no store and
 * proposes nothing, so it answers at once. */
#include <stdio.h>
#include <string.h>

#include "gateway/gw_int.h"
#include "gateway/web/web_files.h"

static const struct gw_web_file *find_file(const char *name)
{
    for (size_t i = 0; i < gw_web_n_files; i++)
        if (strcmp(gw_web_files[i].name, name) == 0)
            return &gw_web_files[i];
    return NULL;
}

static const char *content_type(const char *name)
{
    static const struct {
        const char *ext, *type;
    } types[] = {
        { ".html", "text/html; charset=utf-8" },
        { ".css", "text/css; charset=utf-8" },
        { ".js", "text/javascript; charset=utf-8" },
        { ".svg", "image/svg+xml" },
        { ".png", "image/png" },
        { ".json", "application/json" },
    };
    const char *dot = strrchr(name, '.');
    for (size_t i = 0; dot != NULL && i < sizeof types / sizeof types[0]; i++)
        if (strcmp(dot, types[i].ext) == 0)
            return types[i].type;
    return "application/octet-stream";
}

/* Whether an If-None-Match header names etag: "*", or a comma-separated list
 * of entity tags compared weakly (RFC 9110 13.1.2: a W/ prefix is ignored). */
static bool etag_matches(const char *inm, const char *etag)
{
    size_t elen = strlen(etag);
    const char *p = inm;
    while (*p != '\0') {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        if (*p == '\0')
            break;
        if (*p == '*')
            return true;
        if (strncmp(p, "W/", 2) == 0)
            p += 2;
        const char *end = p;
        if (*end == '"') {
            const char *close = strchr(end + 1, '"');
            end = close != NULL ? close + 1 : end + strlen(end);
        } else {
            while (*end != '\0' && *end != ',')
                end++;
        }
        if ((size_t)(end - p) == elen && memcmp(p, etag, elen) == 0)
            return true;
        p = end;
    }
    return false;
}

void gw_h_web(struct gw_call *c)
{
    const char *name = c->m.route == GW_R_WEB_INDEX ? "index.html" : c->m.param;
    const struct gw_web_file *f = find_file(name);
    if (f == NULL || c->sink != NULL) {
        gw_respond_error(c, 404, "not_found", "no dashboard file %.64s", name);
        return;
    }
    char h_ctype[96], h_etag[96];
    snprintf(h_ctype, sizeof h_ctype, "Content-Type: %s", content_type(f->name));
    snprintf(h_etag, sizeof h_etag, "ETag: %s", f->etag);
    const char *const headers[] = {
        h_ctype,
        h_etag,
        "Cache-Control: no-cache",
        "X-Content-Type-Options: nosniff",
        "Referrer-Policy: no-referrer",
        "X-Frame-Options: DENY",
        "Content-Security-Policy: default-src 'none'; script-src 'self'; style-src 'self'; "
        "connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    };
    const char *inm = tr_httpd_header(c->req, "If-None-Match");
    int status = inm != NULL && etag_matches(inm, f->etag) ? 304 : 200;

    /* Answer outside respond_raw (http_api.c), whose headers are the API's
     * (no-store): count it as the API does, finish the request, then let the
     * call go (it holds nothing else). */
    struct tr_httpd_req *req = c->req;
    c->g->http_count[c->m.route][status / 100]++;
    c->req = NULL;
    (void)tr_httpd_respond(req, status, headers, sizeof headers / sizeof headers[0],
                           status == 304 ? NULL : f->data, status == 304 ? 0 : f->len);
    gw_call_abandon(c);
}
