/* Interop with Google's runtime, C side.
 *
 *   interop_test write DIR    C builds every case into DIR/<case>.bin
 *   interop_test check DIR    verifies and checks, field by field, the buffers
 *                             Python built in DIR (a missing file fails)
 *   interop_test selftest     C round trip of every case, and proof that the
 *                             checks discriminate: a table's `full` buffer
 *                             must fail its `absent` check and vice versa
 * Every check reads each field twice: through the plain readers and through
 * the view readers (N_T_view_*). check and selftest also walk every buffer
 * of a root type that passed (the fuzz targets' walker), which aborts when
 * the two forms disagree on any field.
 * Exit status 0 when everything passed. */
#include "tests/unit/schemas/interop.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct schema_cases {
  const struct interop_case *cases;
  const size_t *n;
  /* reads every field of a root through the plain and the view readers;
   * aborts when they disagree */
  uint64_t (*walk)(const void *root);
};

static const struct schema_cases all[] = {
    {interop_journal_cases, &interop_journal_ncases, interop_journal_walk},
    {interop_command_cases, &interop_command_ncases, interop_command_walk},
    {interop_peer_cases, &interop_peer_ncases, interop_peer_walk},
    {interop_protocol_cases, &interop_protocol_ncases, interop_protocol_walk},
    {interop_state_cases, &interop_state_ncases, interop_state_walk},
};

static volatile uint64_t walked;
static int nwalked;

/* After a check passed (the buffer verified): the walker over a root-type
 * case's buffer (cases with an identifier are of the schema's root type). */
static void walk(const struct schema_cases *sc, const struct interop_case *c,
                 const void *buf, bool sized) {
  if (c->ident) {
    walked += sc->walk(tr_fb_root((const uint8_t *)buf + (sized ? 4 : 0)));
    nwalked++;
  }
}

static int mismatches;
static bool quiet;

void interop_mismatch(const char *where, const char *what) {
  mismatches++;
  if (!quiet)
    fprintf(stderr, "    mismatch: %s: %s\n", where, what);
}

static void build_as(const struct interop_case *c, struct tr_fb_builder *b,
                     bool sized) {
  tr_fb_builder_reset(b);
  b->force_defaults = c->force_defaults;
  tr_fb_ref root = c->build(b);
  if (sized)
    tr_fb_finish_sized(b, root, c->ident);
  else
    tr_fb_finish(b, root, c->ident);
}

static void build(const struct interop_case *c, struct tr_fb_builder *b) {
  build_as(c, b, false);
}

/* 0 when the buffer passes the case's check. */
static int run_check_as(const struct interop_case *c, const void *buf,
                        size_t len, bool sized) {
  mismatches = 0;
  int rc = c->check(buf, len, sized);
  return rc || mismatches;
}

static int run_check(const struct interop_case *c, const void *buf,
                     size_t len) {
  return run_check_as(c, buf, len, false);
}

static uint8_t *slurp(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f)
    return NULL;
  if (fseek(f, 0, SEEK_END) || (*len = (size_t)ftell(f), fseek(f, 0, SEEK_SET))) {
    fclose(f);
    return NULL;
  }
  uint8_t *p = malloc(*len ? *len : 1);
  if (!p || fread(p, 1, *len, f) != *len) {
    free(p);
    fclose(f);
    return NULL;
  }
  fclose(f);
  return p;
}

static int write_file(const char *path, const uint8_t *d, size_t len) {
  FILE *f = fopen(path, "wb");
  if (!f || fwrite(d, 1, len, f) != len || fclose(f)) {
    fprintf(stderr, "write %s: %s\n", path, strerror(errno));
    return 1;
  }
  return 0;
}

/* Root-type cases also travel as size-prefixed frames. */
static int cmd_write(const char *dir) {
  struct tr_fb_builder b;
  tr_fb_builder_init(&b);
  int fails = 0, n = 0;
  for (size_t s = 0; s < sizeof all / sizeof all[0]; s++)
    for (size_t i = 0; i < *all[s].n; i++) {
      const struct interop_case *c = &all[s].cases[i];
      for (int sized = 0; sized < (c->ident ? 2 : 1); sized++) {
        build_as(c, &b, sized);
        size_t len;
        const uint8_t *d = tr_fb_builder_data(&b, &len);
        char path[1024];
        snprintf(path, sizeof path, "%s/%s%s.bin", dir, c->name,
                 sized ? ".sized" : "");
        fails += write_file(path, d, len);
        n++;
      }
    }
  tr_fb_builder_free(&b);
  printf("interop_test: wrote %d C buffers to %s\n", n, dir);
  return fails != 0;
}

static int cmd_check(const char *dir) {
  int fails = 0, n = 0;
  for (size_t s = 0; s < sizeof all / sizeof all[0]; s++)
    for (size_t i = 0; i < *all[s].n; i++) {
      const struct interop_case *c = &all[s].cases[i];
      for (int sized = 0; sized < (c->ident ? 2 : 1); sized++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s%s.bin", dir, c->name,
                 sized ? ".sized" : "");
        size_t len;
        uint8_t *buf = slurp(path, &len);
        n++;
        if (!buf) {
          fprintf(stderr, "FAIL %s: cannot read %s\n", c->name, path);
          fails++;
          continue;
        }
        quiet = false;
        if (run_check_as(c, buf, len, sized)) {
          fprintf(stderr, "FAIL %s%s (Python-built, read by C)\n", c->name,
                  sized ? " (size-prefixed)" : "");
          fails++;
        } else {
          walk(&all[s], c, buf, sized);
        }
        free(buf);
      }
    }
  printf("interop_test: C checked %d Python buffers, %d failed; walked %d "
         "root buffers\n",
         n, fails, nwalked);
  return fails != 0;
}

static const struct interop_case *find_variant(const struct interop_case *cs,
                                               size_t n, const char *table,
                                               const char *variant) {
  for (size_t i = 0; i < n; i++) {
    const char *dot = strrchr(cs[i].name, '.');
    if (!strcmp(cs[i].table, table) && dot && !strcmp(dot + 1, variant))
      return &cs[i];
  }
  return NULL;
}

static int cmd_selftest(void) {
  struct tr_fb_builder b;
  tr_fb_builder_init(&b);
  int fails = 0, n = 0, discriminated = 0, tables = 0;
  for (size_t s = 0; s < sizeof all / sizeof all[0]; s++)
    for (size_t i = 0; i < *all[s].n; i++) {
      const struct interop_case *c = &all[s].cases[i];
      size_t len;
      build(c, &b);
      const uint8_t *d = tr_fb_builder_data(&b, &len);
      quiet = false;
      n++;
      if (run_check(c, d, len)) {
        fprintf(stderr, "FAIL %s (C round trip)\n", c->name);
        fails++;
      } else {
        walk(&all[s], c, d, false);
      }
      const char *dot = strrchr(c->name, '.');
      if (strcmp(dot + 1, "full"))
        continue;
      const struct interop_case *ab =
          find_variant(all[s].cases, *all[s].n, c->table, "absent");
      quiet = true;
      bool full_vs_absent = run_check(ab, d, len) != 0;
      build(ab, &b);
      d = tr_fb_builder_data(&b, &len);
      bool absent_vs_full = run_check(c, d, len) != 0;
      tables++;
      /* a table without fields has nothing to tell apart */
      build(c, &b);
      d = tr_fb_builder_data(&b, &len);
      uint16_t vt_len = tr_fb_read_u16(
          (const uint8_t *)tr_fb_root(d) - tr_fb_read_i32(tr_fb_root(d)));
      if (vt_len == 4)
        continue;
      if (full_vs_absent && absent_vs_full) {
        discriminated++;
      } else {
        fprintf(stderr, "FAIL %s: checks do not tell variants apart\n",
                c->table);
        fails++;
      }
    }
  tr_fb_builder_free(&b);
  printf("interop_test: selftest %d cases round-tripped, %d of %d tables "
         "discriminated, %d failures; walked %d root buffers\n",
         n, discriminated, tables, fails, nwalked);
  return fails != 0;
}

int main(int argc, char **argv) {
  if (argc == 3 && !strcmp(argv[1], "write"))
    return cmd_write(argv[2]);
  if (argc == 3 && !strcmp(argv[1], "check"))
    return cmd_check(argv[2]);
  if (argc == 2 && !strcmp(argv[1], "selftest"))
    return cmd_selftest();
  fprintf(stderr, "usage: interop_test write DIR | check DIR | selftest\n");
  return 2;
}
