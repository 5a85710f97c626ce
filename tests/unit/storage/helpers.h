/* Shared helpers of the storage tests. */
#ifndef TR_TEST_STORAGE_HELPERS_H
#define TR_TEST_STORAGE_HELPERS_H

#include "storage/storage.h"

/* A fresh empty directory under /tmp (caller frees with tdir_remove). */
char *tdir_new(void);
/* Remove the directory tree and free the name. */
void tdir_remove(char *dir);
/* path + "/" + name, tr_malloc'd. */
char *tdir_join(const char *dir, const char *name);

/* Open a store or fail the test. */
struct tr_store *open_or_die(const char *dir, const struct tr_store_opts *opts);

/* Raw RocksDB access beside the store (to damage it on purpose): open the
 * database at dir with every troupe family, put key->val into family `cf`
 * (a name), optionally creating it, then close. */
void raw_put(const char *dir, const char *cf, const void *key, size_t klen, const void *val,
             size_t vlen, int create_cf);

#endif
