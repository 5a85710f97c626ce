/* The llm gateway's price table: models file parsing, lookup, and exact
 * integer cost arithmetic. Lookups are read-only; the only shared mutable
 * part is the set of unknown model names already warned about (mutex). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "actors/llm.h"

#define MICRO 1000000ull
#define WARNED_MAX 64

struct tr_llm_models {
    struct tr_llm_model *v;       /* sorted by name */
    size_t n;
    int builtin;                  /* the process-wide table: never freed */
    uv_mutex_t mu;                /* guards warned / n_warned */
    char (*warned)[TR_LLM_MODEL_NAME_MAX + 1];
    size_t n_warned;
};

static int model_cmp(const void *a, const void *b)
{
    return strcmp(((const struct tr_llm_model *)a)->name, ((const struct tr_llm_model *)b)->name);
}

static struct tr_llm_models *models_new(size_t cap)
{
    struct tr_llm_models *m = tr_calloc(1, sizeof *m);
    m->v = tr_calloc(cap ? cap : 1, sizeof *m->v);
    m->warned = tr_calloc(WARNED_MAX, sizeof *m->warned);
    if (uv_mutex_init(&m->mu) != 0) {
        tr_log(TR_LOG_ERROR, "llm models: mutex init failed");
        abort();
    }
    return m;
}

static void models_destroy(struct tr_llm_models *m)
{
    uv_mutex_destroy(&m->mu);
    tr_free(m->warned);
    tr_free(m->v);
    tr_free(m);
}

void tr_llm_models_free(struct tr_llm_models *m)
{
    if (m == NULL || m->builtin)
        return;
    models_destroy(m);
}

size_t tr_llm_models_count(const struct tr_llm_models *m)
{
    return m ? m->n : 0;
}

/* ---- parsing -------------------------------------------------------------- */

/* A price in USD per 1M tokens -> micro-USD per 1M tokens. */
static int price_field(const char *model, const char *field, const json_t *v, uint64_t *out,
                       struct tr_err *err)
{
    double d;

    if (json_is_integer(v)) {
        json_int_t i = json_integer_value(v);
        if (i < 0 || (uint64_t)i > TR_LLM_MAX_PRICE_MICRO / MICRO)
            return tr_err_set(err, TR_EINVAL, "model \"%s\": \"%s\" must be between 0 and 1000000", model,
                              field);
        *out = (uint64_t)i * MICRO;
        return 0;
    }
    if (!json_is_real(v))
        return tr_err_set(err, TR_EINVAL, "model \"%s\": \"%s\" must be a number (USD per 1M tokens)", model,
                          field);
    d = json_real_value(v);
    if (!isfinite(d) || d < 0 || d > (double)(TR_LLM_MAX_PRICE_MICRO / MICRO))
        return tr_err_set(err, TR_EINVAL, "model \"%s\": \"%s\" must be between 0 and 1000000", model, field);
    *out = (uint64_t)llround(d * (double)MICRO);
    return 0;
}

static int parse_model(const char *name, const json_t *obj, struct tr_llm_model *out, struct tr_err *err)
{
    const char *key;
    json_t *v;
    int have_prompt = 0, have_completion = 0;

    if (name[0] == '\0' || strlen(name) > TR_LLM_MODEL_NAME_MAX)
        return tr_err_set(err, TR_EINVAL, "model name \"%.40s\" must have 1 to %d bytes", name,
                          TR_LLM_MODEL_NAME_MAX);
    if (!json_is_object(obj))
        return tr_err_set(err, TR_EINVAL, "model \"%s\": must be an object", name);
    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "%s", name);
    snprintf(out->provider, sizeof out->provider, "openai");
    json_object_foreach((json_t *)obj, key, v) {
        if (strcmp(key, "prompt_per_mtok") == 0) {
            if (price_field(name, key, v, &out->prompt_micro, err) != 0)
                return err ? err->code : TR_EINVAL;
            have_prompt = 1;
        } else if (strcmp(key, "completion_per_mtok") == 0) {
            if (price_field(name, key, v, &out->completion_micro, err) != 0)
                return err ? err->code : TR_EINVAL;
            have_completion = 1;
        } else if (strcmp(key, "provider") == 0) {
            const char *p = json_string_value(v);
            if (p == NULL || (strcmp(p, "openai") != 0 && strcmp(p, "anthropic") != 0 && strcmp(p, "mock") != 0))
                return tr_err_set(err, TR_EINVAL,
                                  "model \"%s\": \"provider\" must be \"openai\", \"anthropic\" or \"mock\"",
                                  name);
            snprintf(out->provider, sizeof out->provider, "%s", p);
        } else if (strcmp(key, "context_tokens") == 0) {
            if (!json_is_integer(v) || json_integer_value(v) <= 0 || json_integer_value(v) > UINT32_MAX)
                return tr_err_set(err, TR_EINVAL, "model \"%s\": \"context_tokens\" must be a positive integer",
                                  name);
            out->context_tokens = (uint32_t)json_integer_value(v);
        } else {
            return tr_err_set(err, TR_EINVAL, "model \"%s\": unknown key \"%.64s\"", name, key);
        }
    }
    if (!have_prompt)
        return tr_err_set(err, TR_EINVAL, "model \"%s\": \"prompt_per_mtok\" is required", name);
    if (!have_completion)
        return tr_err_set(err, TR_EINVAL, "model \"%s\": \"completion_per_mtok\" is required", name);
    return 0;
}

int tr_llm_models_parse(const char *text, size_t len, struct tr_llm_models **out, struct tr_err *err)
{
    json_error_t jerr;
    json_t *root, *models, *v;
    const char *key;
    struct tr_llm_models *m;
    int rv;

    *out = NULL;
    if (len > TR_LLM_MODELS_FILE_MAX)
        return tr_err_set(err, TR_ETOOBIG, "models file over %u bytes", TR_LLM_MODELS_FILE_MAX);
    root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL)
        return tr_err_set(err, TR_EINVAL, "line %d column %d: %s", jerr.line, jerr.column, jerr.text);
    if (!json_is_object(root)) {
        rv = tr_err_set(err, TR_EINVAL, "the top level must be an object");
        goto err_after_root;
    }
    json_object_foreach(root, key, v) {
        if (strcmp(key, "models") != 0) {
            rv = tr_err_set(err, TR_EINVAL, "unknown top-level key \"%.64s\"", key);
            goto err_after_root;
        }
    }
    models = json_object_get(root, "models");
    if (!json_is_object(models)) {
        rv = tr_err_set(err, TR_EINVAL, "\"models\" must be an object of model name -> prices");
        goto err_after_root;
    }
    if (json_object_size(models) > TR_LLM_MODELS_MAX) {
        rv = tr_err_set(err, TR_ELIMIT, "more than %d models", TR_LLM_MODELS_MAX);
        goto err_after_root;
    }
    m = models_new(json_object_size(models));
    json_object_foreach(models, key, v) {
        rv = parse_model(key, v, &m->v[m->n], err);
        if (rv != 0)
            goto err_after_models;
        m->n++;
    }
    qsort(m->v, m->n, sizeof *m->v, model_cmp);
    json_decref(root);
    *out = m;
    return 0;

err_after_models:
    models_destroy(m);
err_after_root:
    json_decref(root);
    return rv;
}

int tr_llm_models_load(const char *path, struct tr_llm_models **out, struct tr_err *err)
{
    FILE *f;
    char *buf;
    size_t n;
    int rv;

    *out = NULL;
    f = fopen(path, "rb");
    if (f == NULL)
        return tr_err_set(err, TR_ENOTFOUND, "models file %s: %s", path, strerror(errno));
    buf = tr_malloc(TR_LLM_MODELS_FILE_MAX + 1);
    n = fread(buf, 1, TR_LLM_MODELS_FILE_MAX + 1, f);
    if (ferror(f)) {
        rv = tr_err_set(err, TR_EIO, "models file %s: read failed", path);
        goto out;
    }
    if (n > TR_LLM_MODELS_FILE_MAX) {
        rv = tr_err_set(err, TR_ETOOBIG, "models file %s: over %u bytes", path, TR_LLM_MODELS_FILE_MAX);
        goto out;
    }
    rv = tr_llm_models_parse(buf, n, out, err);
    if (rv != 0)
        tr_err_wrap(err, "models file %s", path);
out:
    tr_free(buf);
    fclose(f);
    return rv;
}

/* ---- built-in table ------------------------------------------------------- */

/* USD per 1M tokens, as published by the providers (prompt, completion). */
static const struct {
    const char *name;
    const char *provider;
    double prompt, completion;
    uint32_t context;
} builtin_rows[] = {
    {"gpt-4o", "openai", 2.5, 10.0, 128000},
    {"gpt-4o-mini", "openai", 0.15, 0.6, 128000},
    {"gpt-4.1", "openai", 2.0, 8.0, 1047576},
    {"gpt-4.1-mini", "openai", 0.4, 1.6, 1047576},
    {"gpt-4.1-nano", "openai", 0.1, 0.4, 1047576},
    {"o3-mini", "openai", 1.1, 4.4, 200000},
    {"o4-mini", "openai", 1.1, 4.4, 200000},
    {"mock-gpt", "mock", 0.0, 0.0, 128000},
    {"mock-priced", "mock", 1.0, 2.0, 128000},
};

static struct tr_llm_models *builtin_table;
static uv_once_t builtin_once = UV_ONCE_INIT;

static void builtin_build(void)
{
    size_t n = sizeof builtin_rows / sizeof builtin_rows[0];
    struct tr_llm_models *m = models_new(n);

    for (size_t i = 0; i < n; i++) {
        struct tr_llm_model *e = &m->v[i];
        snprintf(e->name, sizeof e->name, "%s", builtin_rows[i].name);
        snprintf(e->provider, sizeof e->provider, "%s", builtin_rows[i].provider);
        e->prompt_micro = (uint64_t)llround(builtin_rows[i].prompt * (double)MICRO);
        e->completion_micro = (uint64_t)llround(builtin_rows[i].completion * (double)MICRO);
        e->context_tokens = builtin_rows[i].context;
    }
    m->n = n;
    m->builtin = 1;
    qsort(m->v, m->n, sizeof *m->v, model_cmp);
    builtin_table = m;
}

struct tr_llm_models *tr_llm_models_builtin(void)
{
    uv_once(&builtin_once, builtin_build);
    return builtin_table;
}

/* ---- lookup and cost ------------------------------------------------------ */

static const struct tr_llm_model *find_exact(const struct tr_llm_models *m, const char *name, size_t len)
{
    struct tr_llm_model key;

    if (len > TR_LLM_MODEL_NAME_MAX)
        return NULL;
    memcpy(key.name, name, len);
    key.name[len] = '\0';
    return bsearch(&key, m->v, m->n, sizeof *m->v, model_cmp);
}

const struct tr_llm_model *tr_llm_models_find(const struct tr_llm_models *m, const char *name)
{
    const struct tr_llm_model *e;
    size_t len;

    if (m == NULL || name == NULL)
        return NULL;
    len = strlen(name);
    e = find_exact(m, name, len);
    if (e != NULL)
        return e;
    /* Dated snapshots: the longest known prefix followed by "-<digit>". */
    for (size_t i = len; i-- > 1;) {
        if (name[i] == '-' && i + 1 < len && name[i + 1] >= '0' && name[i + 1] <= '9') {
            e = find_exact(m, name, i);
            if (e != NULL)
                return e;
        }
    }
    return NULL;
}

uint64_t tr_llm_cost(uint64_t prompt_tokens, uint64_t prompt_micro, uint64_t completion_tokens,
                     uint64_t completion_micro)
{
    uint64_t w1, w2, f1, f2, whole, frac;

    /* t * p / 10^6 = (t / 10^6) * p + (t % 10^6) * p / 10^6: the whole parts
     * are exact, and the remainders are summed before the one rounding up. */
    if (__builtin_mul_overflow(prompt_tokens / MICRO, prompt_micro, &w1) ||
        __builtin_mul_overflow(completion_tokens / MICRO, completion_micro, &w2) ||
        __builtin_mul_overflow(prompt_tokens % MICRO, prompt_micro, &f1) ||
        __builtin_mul_overflow(completion_tokens % MICRO, completion_micro, &f2) ||
        __builtin_add_overflow(w1, w2, &whole) || __builtin_add_overflow(f1, f2, &frac))
        return UINT64_MAX;
    if (__builtin_add_overflow(whole, frac / MICRO + (frac % MICRO != 0), &whole))
        return UINT64_MAX;
    return whole;
}

/* Warn once per unknown name (for the first WARNED_MAX names). */
static void warn_unknown(struct tr_llm_models *m, const char *model)
{
    int first = 1;

    uv_mutex_lock(&m->mu);
    for (size_t i = 0; i < m->n_warned; i++) {
        if (strncmp(m->warned[i], model, TR_LLM_MODEL_NAME_MAX) == 0) {
            first = 0;
            break;
        }
    }
    if (first) {
        if (m->n_warned < WARNED_MAX) {
            snprintf(m->warned[m->n_warned], sizeof m->warned[0], "%s", model);
            m->n_warned++;
        } else {
            first = 0;
        }
    }
    uv_mutex_unlock(&m->mu);
    if (first)
        tr_log(TR_LOG_WARN, "llm: model \"%.128s\" is not in the price table: its calls cost 0", model);
}

uint64_t tr_llm_models_cost(struct tr_llm_models *m, const char *model, uint64_t prompt_tokens,
                            uint64_t completion_tokens, int *unknown)
{
    const struct tr_llm_model *e = tr_llm_models_find(m, model);

    if (unknown)
        *unknown = e == NULL;
    if (e == NULL) {
        if (m != NULL && model != NULL)
            warn_unknown(m, model);
        return 0;
    }
    return tr_llm_cost(prompt_tokens, e->prompt_micro, completion_tokens, e->completion_micro);
}
