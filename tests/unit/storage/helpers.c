#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ftw.h>
#include <unistd.h>

#include <cmocka.h>
#include <rocksdb/c.h>

#include "helpers.h"

char *tdir_new(void)
{
    char tmpl[] = "/tmp/tr-storage-XXXXXX";
    char *d = mkdtemp(tmpl);
    assert_non_null(d);
    return tr_strdup(d);
}

static int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

void tdir_remove(char *dir)
{
    if (dir == NULL)
        return;
    nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    tr_free(dir);
}

char *tdir_join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = tr_malloc(n);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

struct tr_store *open_or_die(const char *dir, const struct tr_store_opts *opts)
{
    struct tr_store *s = NULL;
    struct tr_err err = {0};
    int rv = tr_store_open(dir, opts, &s, &err);
    if (rv != 0)
        fail_msg("open %s: %s (%d)", dir, err.msg, rv);
    return s;
}

void raw_put(const char *dir, const char *cf, const void *key, size_t klen, const void *val,
             size_t vlen, int create_cf)
{
    char *e = NULL;
    size_t n = 0;
    rocksdb_options_t *o = rocksdb_options_create();
    char **names = rocksdb_list_column_families(o, dir, &n, &e);
    assert_null(e);
    const rocksdb_options_t **opts = tr_calloc(n, sizeof(*opts));
    rocksdb_column_family_handle_t **h = tr_calloc(n, sizeof(*h));
    for (size_t i = 0; i < n; i++)
        opts[i] = o;
    rocksdb_t *db = rocksdb_open_column_families(o, dir, (int)n, (const char *const *)names,
                                                 opts, h, &e);
    if (e != NULL)
        fail_msg("raw open: %s", e);
    rocksdb_column_family_handle_t *target = NULL, *created = NULL;
    for (size_t i = 0; i < n; i++)
        if (strcmp(names[i], cf) == 0)
            target = h[i];
    if (target == NULL && create_cf) {
        created = rocksdb_create_column_family(db, o, cf, &e);
        assert_null(e);
        target = created;
    }
    assert_non_null(target);
    rocksdb_writeoptions_t *w = rocksdb_writeoptions_create();
    rocksdb_put_cf(db, w, target, key, klen, val, vlen, &e);
    assert_null(e);
    rocksdb_writeoptions_destroy(w);
    if (created != NULL)
        rocksdb_column_family_handle_destroy(created);
    for (size_t i = 0; i < n; i++)
        rocksdb_column_family_handle_destroy(h[i]);
    rocksdb_close(db);
    rocksdb_list_column_families_destroy(names, n);
    tr_free(opts);
    tr_free(h);
    rocksdb_options_destroy(o);
}
