/* Private to gateway/: the dashboard's files, embedded into the binary at
 * build time by gateway/web/embed.cmake (the generated web_files.c in the
 * build tree) and served by gateway/routes_web.c. Immutable for the life of
 * the process. */
#ifndef TR_GATEWAY_WEB_FILES_H
#define TR_GATEWAY_WEB_FILES_H

#include <stddef.h>

struct gw_web_file {
    const char *name;              /* "index.html", "app.js": a file of gateway/web/ */
    const unsigned char *data;     /* len bytes (plus a NUL not counted) */
    size_t len;
    const char *etag;              /* a quoted strong ETag: "\"<32 hex digits>\"" */
};

extern const struct gw_web_file gw_web_files[];
extern const size_t gw_web_n_files;

#endif /* TR_GATEWAY_WEB_FILES_H */
