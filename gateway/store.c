/* Reads of replicated records for the handlers: verified before any field
 * is read, scoped by the caller's tenant. */
#include <string.h>

#include "gateway/gw_int.h"

void gw_run_key(uint64_t id, unsigned char out[8])
{
    for (int i = 7; i >= 0; i--) {
        out[i] = (unsigned char)(id & 0xff);
        id >>= 8;
    }
}

int gw_load_run(struct tr_store *s, uint64_t key, void **buf, const struct troupe_state_Run **out)
{
    unsigned char k[8];
    size_t len = 0;
    gw_run_key(key, k);
    *buf = NULL;
    int rv = tr_store_get(s, NULL, TR_CF_RUNS, k, sizeof k, buf, &len, NULL);
    if (rv != TR_OK)
        return rv;
    *out = troupe_state_Run_verify_as_root(*buf, len, NULL);
    if (*out == NULL) {
        tr_log(TR_LOG_ERROR, "gateway: run record %016llx does not verify", (unsigned long long)key);
        tr_free(*buf);
        *buf = NULL;
        return TR_ECORRUPT;
    }
    return TR_OK;
}

int gw_load_approval(struct tr_store *s, const char *id, void **buf, const struct troupe_state_Approval **out)
{
    size_t len = 0;
    *buf = NULL;
    size_t n = strlen(id);
    if (n == 0 || n > TR_STORE_KEY_MAX)
        return TR_ENOTFOUND;
    int rv = tr_store_get(s, NULL, TR_CF_APPROVALS, id, n, buf, &len, NULL);
    if (rv != TR_OK)
        return rv;
    *out = troupe_state_Approval_verify_as_root_opts(*buf, len, "TRA1", &tr_fb_default_limits, NULL);
    if (*out == NULL) {
        tr_log(TR_LOG_ERROR, "gateway: approval record %s does not verify", id);
        tr_free(*buf);
        *buf = NULL;
        return TR_ECORRUPT;
    }
    return TR_OK;
}

int gw_load_tools(struct tr_store *s, const char *name, void **buf, const struct troupe_state_ToolVersions **out)
{
    size_t len = 0;
    *buf = NULL;
    size_t n = strlen(name);
    if (n == 0 || n > TR_STORE_KEY_MAX)
        return TR_ENOTFOUND;
    int rv = tr_store_get(s, NULL, TR_CF_TOOLS, name, n, buf, &len, NULL);
    if (rv != TR_OK)
        return rv;
    *out = troupe_state_ToolVersions_verify_as_root_opts(*buf, len, "TRT1", &tr_fb_default_limits, NULL);
    if (*out == NULL || troupe_state_ToolVersions_versions_len(*out) == 0) {
        if (*out == NULL)
            tr_log(TR_LOG_ERROR, "gateway: tool record %s does not verify", name);
        tr_free(*buf);
        *buf = NULL;
        return *out == NULL ? TR_ECORRUPT : TR_ENOTFOUND;
    }
    return TR_OK;
}

bool gw_run_visible(const struct gw_principal *p, const struct troupe_state_Run *r)
{
    return gw_tenant_visible(p, troupe_state_Run_tenant(r)); /* auth.c */
}
