/* Raft entries in their log form (raft/entry.c): plain or LZ4-compressed,
 * and what the FSM does with a compressed entry that does not decode. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "raft/entry.h"
#include "raft/fsm.h"
#include "raft/raft.h"
#include "schemas/command_generated.h"
#include "storage/storage.h"

/* Text-like bytes: words from a small list (compressible, not constant). */
static uint8_t *texty(size_t n, uint32_t seed)
{
    static const char *w[] = { "alpha", "beta", "gamma", "delta", "run", "tool", "step", "model", "json", "ok" };
    uint8_t *p = malloc(n);
    for (size_t i = 0; i < n;) {
        seed = seed * 1103515245u + 12345u;
        const char *s = w[(seed >> 16) % 10];
        for (size_t k = 0; s[k] && i < n; k++)
            p[i++] = (uint8_t)s[k];
        if (i < n)
            p[i++] = ' ';
    }
    return p;
}

static void roundtrip(const uint8_t *data, size_t len, size_t min, int want_compressed)
{
    size_t elen = 0;
    uint8_t *e = tr_entry_encode(data, len, min, &elen);
    assert_non_null(e);
    assert_int_equal(elen % 8, 0);
    assert_int_equal(tr_entry_is_compressed(e, elen), want_compressed);
    if (want_compressed && len > 1000)
        assert_true(elen < len);
    const void *raw;
    size_t raw_len;
    void *owned;
    char why[160];
    assert_int_equal(tr_entry_decode(e, elen, &raw, &raw_len, &owned, why, sizeof why), TR_OK);
    if (want_compressed) {
        assert_non_null(owned);
        assert_int_equal(raw_len, len);
    } else {
        assert_null(owned);
        assert_int_equal(raw_len, elen); /* plain: the padded buffer itself */
    }
    assert_memory_equal(raw, data, len);
    free(owned);
    raft_free(e);
}

static void test_roundtrip(void **unused)
{
    uint8_t *t = texty(100000, 7);
    roundtrip(t, 100000, TR_ENTRY_COMPRESS_MIN, 1);    /* big, compressible */
    roundtrip(t, 1000, TR_ENTRY_COMPRESS_MIN, 0);      /* small: as it is */
    roundtrip(t, 100000, 0, 0);                        /* compression off */
    roundtrip(t, 17, 1, 0);                            /* too small to gain */
    uint8_t *rnd = malloc(70000);
    uint32_t x = 1;
    for (size_t i = 0; i < 70000; i++) {
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        rnd[i] = (uint8_t)x;
    }
    roundtrip(rnd, 70000, TR_ENTRY_COMPRESS_MIN, 0);   /* incompressible: as it is */
    memcpy(rnd + 4, TR_ENTRY_MAGIC, 4);                /* small, but reads as a header: */
    roundtrip(rnd, 40, TR_ENTRY_COMPRESS_MIN, 1);      /* compressed, even though larger */
    free(rnd);
    free(t);
}

/* Bad compressed entries are refused with a reason, never read past. */
static void test_bad_entries(void **unused)
{
    uint8_t *t = texty(50000, 3);
    size_t elen = 0;
    uint8_t *e = tr_entry_encode(t, 50000, TR_ENTRY_COMPRESS_MIN, &elen);
    assert_true(tr_entry_is_compressed(e, elen));
    const void *raw;
    size_t raw_len;
    void *owned;
    char why[160];

    uint8_t *c = malloc(elen);
    struct {
        size_t at;
        uint8_t v;
        const char *want;
    } cases[] = {
        { 0, 0x00, "expand" },       /* raw_len smaller than the block expands to */
        { 3, 0x7f, "bad header" },   /* raw_len far above TR_ENTRY_RAW_MAX */
        { 11, 0x7f, "bad header" },  /* comp_len past the entry */
        { 12, 0x01, "bad header" },  /* reserved word not zero */
        { 20, 0xff, NULL },          /* inside the block: refused or expands wrong */
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        memcpy(c, e, elen);
        c[cases[k].at] = cases[k].v;
        why[0] = '\0';
        int rv = tr_entry_decode(c, elen, &raw, &raw_len, &owned, why, sizeof why);
        if (rv == TR_OK) { /* a flipped literal can still expand to the right length */
            assert_null(cases[k].want);
            assert_int_equal(raw_len, 50000);
            free(owned);
            continue;
        }
        assert_int_equal(rv, TR_ECORRUPT);
        assert_null(owned);
        if (cases[k].want)
            assert_non_null(strstr(why, cases[k].want));
    }
    /* Cut short: comp_len now points past the end. */
    assert_int_equal(tr_entry_decode(e, 40, &raw, &raw_len, &owned, why, sizeof why), TR_ECORRUPT);
    free(c);
    raft_free(e);
    free(t);
}

/* The FSM refuses a compressed entry that does not decode (verdict
 * INVALID, last_applied still moves on: every node refuses it alike) and
 * applies a good one as the command it holds. */
static void test_fsm_applies_compressed(void **unused)
{
    char dir[64];
    snprintf(dir, sizeof dir, "/tmp/tr-entry-test-XXXXXX");
    assert_non_null(mkdtemp(dir));
    struct tr_store *store;
    struct tr_err err;
    assert_int_equal(tr_store_open(dir, NULL, &store, &err), TR_OK);
    struct tr_fsm_opts fo = { .store = store };
    struct tr_fsm *f;
    tr_fsm_new(&fo, &f);

    /* A command big enough to be compressed: a tool with a long description. */
    struct tr_fb_builder b;
    tr_fb_builder_init(&b);
    uint8_t *t = texty(40000, 11);
    char *desc = malloc(40001);
    memcpy(desc, t, 40000);
    desc[40000] = '\0';
    tr_fb_ref n = tr_fb_create_str(&b, "bigtool");
    tr_fb_ref d = tr_fb_create_str(&b, desc);
    tr_fb_ref s = tr_fb_create_str(&b, "{\"type\":\"object\"}");
    tr_fb_ref cfg = tr_fb_create_str(&b, "{\"url\":\"http://127.0.0.1:9/\"}");
    troupe_cmd_Tool_start(&b);
    troupe_cmd_Tool_add_name(&b, n);
    troupe_cmd_Tool_add_description(&b, d);
    troupe_cmd_Tool_add_input_schema(&b, s);
    troupe_cmd_Tool_add_config(&b, cfg);
    tr_fb_ref tool = troupe_cmd_Tool_end(&b);
    troupe_cmd_ToolRegister_start(&b);
    troupe_cmd_ToolRegister_add_tool(&b, tool);
    tr_fb_ref op = troupe_cmd_ToolRegister_end(&b);
    troupe_cmd_Command_start(&b);
    troupe_cmd_Command_add_time_us(&b, 1700000000000000LL);
    troupe_cmd_Command_add_op_type(&b, troupe_cmd_Op_ToolRegister);
    troupe_cmd_Command_add_op(&b, op);
    troupe_cmd_Command_finish(&b, troupe_cmd_Command_end(&b));
    size_t len;
    const uint8_t *cmd = tr_fb_builder_data(&b, &len);
    size_t elen;
    uint8_t *e = tr_entry_encode(cmd, len, TR_ENTRY_COMPRESS_MIN, &elen);
    assert_true(tr_entry_is_compressed(e, elen));

    struct tr_fsm_result *res;
    uint8_t *bad = malloc(elen);
    memcpy(bad, e, elen);
    bad[0] ^= 0x01; /* raw_len off by one: the block expands to another length */
    assert_int_equal(tr_fsm_apply_at(f, 1, bad, elen, &res), TR_OK);
    assert_int_equal(res->verdict, TR_FSM_INVALID);
    assert_int_equal(tr_store_last_applied(store), 1);
    void *val = NULL;
    size_t vlen = 0;
    assert_int_not_equal(tr_store_get(store, NULL, TR_CF_TOOLS, "bigtool", 7, &val, &vlen, NULL), TR_OK);

    assert_int_equal(tr_fsm_apply_at(f, 2, e, elen, &res), TR_OK);
    assert_int_equal(res->verdict, TR_FSM_OK);
    assert_int_equal(tr_store_get(store, NULL, TR_CF_TOOLS, "bigtool", 7, &val, &vlen, NULL), TR_OK);
    tr_free(val);

    free(bad);
    raft_free(e);
    free(desc);
    free(t);
    tr_fb_builder_free(&b);
    tr_fsm_free(f);
    tr_store_close(store);
    char rm[128];
    snprintf(rm, sizeof rm, "rm -rf %s", dir);
    assert_int_equal(system(rm), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_bad_entries),
        cmocka_unit_test(test_fsm_applies_compressed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
