/* Run journals in TR_CF_JOURNAL: key run_id || seq, both big-endian, so a
 * run's events are contiguous and in seq order. A run's iterator is bounded
 * below by run||from_seq and above by run||ff*8||00, a key greater than every
 * key of the run and smaller than every key of the next one, so it can never
 * return another run's events, even for run UINT64_MAX. */
#include <string.h>

#include "internal.h"

#define UPPER_LEN (TR_JOURNAL_KEY_LEN + 1)

struct tr_journal_iter {
    struct tr_store_iter *it;
};

void tr_journal_key(tr_run_id run, uint64_t seq, unsigned char out[TR_JOURNAL_KEY_LEN])
{
    tr__put_be64(out, run);
    tr__put_be64(out + 8, seq);
}

static void run_upper(tr_run_id run, unsigned char out[UPPER_LEN])
{
    tr__put_be64(out, run);
    memset(out + 8, 0xff, 8);
    out[16] = 0;
}

int tr_batch_journal_append(struct tr_batch *b, tr_run_id run, uint64_t seq, const void *event,
                            size_t len)
{
    unsigned char k[TR_JOURNAL_KEY_LEN];
    tr_journal_key(run, seq, k);
    return tr__batch_put_any(b, TR_CF_JOURNAL, k, sizeof(k), event, len);
}

int tr_journal_iter_open(struct tr_store *s, struct tr_store_view *v, tr_run_id run,
                         uint64_t from_seq, struct tr_journal_iter **out, struct tr_err *err)
{
    unsigned char lower[TR_JOURNAL_KEY_LEN], upper[UPPER_LEN];
    struct tr_store_iter *it = NULL;

    TR__ERR_OR_LOCAL(err);
    *out = NULL;
    tr_journal_key(run, from_seq, lower);
    run_upper(run, upper);
    /* Within one run: prefix mode is exact and can use the prefix bloom. */
    int rv = tr__iter_open_raw(s, v, TR_CF_JOURNAL, lower, sizeof(lower), upper, sizeof(upper),
                               1, &it, err);
    if (rv != TR_OK)
        return tr_err_wrap(err, "journal of run %llu", (unsigned long long)run);
    struct tr_journal_iter *j = tr_malloc(sizeof(*j));
    j->it = it;
    *out = j;
    return TR_OK;
}

int tr_journal_iter_next(struct tr_journal_iter *j, uint64_t *seq, const void **event,
                         size_t *len, struct tr_err *err)
{
    const void *k = NULL;
    size_t klen = 0;

    TR__ERR_OR_LOCAL(err);
    int rv = tr_store_iter_next(j->it, &k, &klen, event, len, err);
    if (rv <= 0)
        return rv < 0 ? tr_err_wrap(err, "journal") : 0;
    if (klen != TR_JOURNAL_KEY_LEN)
        return tr_err_set(err, TR_ECORRUPT, "journal key of %zu bytes", klen);
    if (seq != NULL)
        *seq = tr__get_be64((const unsigned char *)k + 8);
    return 1;
}

void tr_journal_iter_close(struct tr_journal_iter *j)
{
    if (j == NULL)
        return;
    tr_store_iter_close(j->it);
    tr_free(j);
}

int tr_journal_last_seq(struct tr_store *s, struct tr_store_view *v, tr_run_id run,
                        uint64_t *seq, struct tr_err *err)
{
    unsigned char lower[TR_JOURNAL_KEY_LEN], upper[UPPER_LEN];
    int rv = TR_OK;

    TR__ERR_OR_LOCAL(err);
    tr_journal_key(run, 0, lower);
    run_upper(run, upper);
    rocksdb_readoptions_t *r = tr__ropts_new(s, v);
    rocksdb_readoptions_set_iterate_lower_bound(r, (const char *)lower, sizeof(lower));
    rocksdb_readoptions_set_iterate_upper_bound(r, (const char *)upper, sizeof(upper));
    rocksdb_readoptions_set_prefix_same_as_start(r, 1);
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(s->db, r, s->cf[TR_CF_JOURNAL]);
    rocksdb_iter_seek_for_prev(it, (const char *)upper, sizeof(upper));
    if (rocksdb_iter_valid(it)) {
        size_t klen = 0;
        const char *k = rocksdb_iter_key(it, &klen);
        if (klen != TR_JOURNAL_KEY_LEN)
            rv = tr_err_set(err, TR_ECORRUPT, "journal key of %zu bytes", klen);
        else
            *seq = tr__get_be64((const unsigned char *)k + 8);
    } else {
        char *e = NULL;
        rocksdb_iter_get_error(it, &e);
        if (e != NULL)
            rv = tr__rdb_err(err, e, "journal of run %llu", (unsigned long long)run);
        else
            rv = tr_err_set(err, TR_ENOTFOUND, "run %llu has no journal",
                            (unsigned long long)run);
    }
    rocksdb_iter_destroy(it);
    rocksdb_readoptions_destroy(r);
    return rv;
}

int tr_journal_count(struct tr_store *s, struct tr_store_view *v, tr_run_id run,
                     uint64_t *count, struct tr_err *err)
{
    struct tr_journal_iter *j = NULL;
    uint64_t n = 0;

    TR__ERR_OR_LOCAL(err);
    *count = 0;
    int rv = tr_journal_iter_open(s, v, run, 0, &j, err);
    if (rv != TR_OK)
        return rv;
    while ((rv = tr_journal_iter_next(j, NULL, NULL, NULL, err)) == 1)
        n++;
    tr_journal_iter_close(j);
    if (rv < 0)
        return rv;
    *count = n;
    return TR_OK;
}
