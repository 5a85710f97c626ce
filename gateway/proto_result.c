/* The client protocol's results (protocol.fbs Result) from the records the
 * HTTP handlers answered about: the HTTP answer names them (a run's id, a
 * tool's name and version ...), the store holds them whole. Reads only. */
#include <stdio.h>
#include <string.h>

#include "gateway/gw_int.h"
#include "schemas/protocol_generated.h"

static tr_fb_ref opt_str(struct tr_fb_builder *b, struct tr_fb_str s)
{
    return s.ptr != NULL ? tr_fb_create_string(b, s.ptr, s.len) : 0;
}

static tr_fb_ref copy_agent(struct tr_fb_builder *b, const struct troupe_journal_AgentConfig *a)
{
    if (a == NULL)
        return 0;
    tr_fb_ref model = opt_str(b, troupe_journal_AgentConfig_model(a));
    tr_fb_ref system = opt_str(b, troupe_journal_AgentConfig_system(a));
    tr_fb_ref provider = opt_str(b, troupe_journal_AgentConfig_provider(a));
    tr_fb_ref tools = 0;
    uint32_t n = troupe_journal_AgentConfig_tools_len(a);
    if (troupe_journal_AgentConfig_has_tools(a)) {
        tr_fb_ref *refs = tr_calloc(n + 1, sizeof *refs);
        for (uint32_t i = 0; i < n; i++)
            refs[i] = opt_str(b, troupe_journal_AgentConfig_tools_at(a, i));
        tools = troupe_journal_AgentConfig_create_tools(b, refs, n);
        tr_free(refs);
    }
    troupe_journal_AgentConfig_start(b);
    troupe_journal_AgentConfig_add_model(b, model);
    troupe_journal_AgentConfig_add_system(b, system);
    troupe_journal_AgentConfig_add_provider(b, provider);
    troupe_journal_AgentConfig_add_tools(b, tools);
    troupe_journal_AgentConfig_add_max_steps(b, troupe_journal_AgentConfig_max_steps(a));
    troupe_journal_AgentConfig_add_max_tokens(b, troupe_journal_AgentConfig_max_tokens(a));
    troupe_journal_AgentConfig_add_max_cost_usd(b, troupe_journal_AgentConfig_max_cost_usd(a));
    troupe_journal_AgentConfig_add_timeout_s(b, troupe_journal_AgentConfig_timeout_s(a));
    troupe_journal_AgentConfig_add_temperature(b, troupe_journal_AgentConfig_temperature(a));
    return troupe_journal_AgentConfig_end(b);
}

static tr_fb_ref build_run_info(struct tr_fb_builder *b, const struct troupe_state_Run *r)
{
    tr_fb_ref id = opt_str(b, troupe_state_Run_run_id(r));
    tr_fb_ref tenant = opt_str(b, troupe_state_Run_tenant(r));
    tr_fb_ref goal = opt_str(b, troupe_state_Run_goal(r));
    tr_fb_ref output = opt_str(b, troupe_state_Run_output(r));
    tr_fb_ref error = opt_str(b, troupe_state_Run_error(r));
    tr_fb_ref metadata = opt_str(b, troupe_state_Run_metadata(r));
    tr_fb_ref agent = copy_agent(b, troupe_state_Run_agent(r));
    tr_fb_ref usage = 0;
    const struct troupe_journal_Usage *u = troupe_state_Run_usage(r);
    if (u != NULL) {
        troupe_journal_Usage_start(b);
        troupe_journal_Usage_add_prompt_tokens(b, troupe_journal_Usage_prompt_tokens(u));
        troupe_journal_Usage_add_completion_tokens(b, troupe_journal_Usage_completion_tokens(u));
        troupe_journal_Usage_add_cost_micro_usd(b, troupe_journal_Usage_cost_micro_usd(u));
        usage = troupe_journal_Usage_end(b);
    }
    troupe_proto_RunInfo_start(b);
    troupe_proto_RunInfo_add_id(b, id);
    troupe_proto_RunInfo_add_tenant(b, tenant);
    troupe_proto_RunInfo_add_status(b, troupe_state_Run_status(r));
    troupe_proto_RunInfo_add_goal(b, goal);
    troupe_proto_RunInfo_add_step(b, troupe_state_Run_step(r));
    troupe_proto_RunInfo_add_usage(b, usage);
    troupe_proto_RunInfo_add_owner_node(b, troupe_state_Run_owner_node(r));
    troupe_proto_RunInfo_add_epoch(b, troupe_state_Run_epoch(r));
    troupe_proto_RunInfo_add_created_at_us(b, troupe_state_Run_created_at_us(r));
    troupe_proto_RunInfo_add_updated_at_us(b, troupe_state_Run_updated_at_us(r));
    troupe_proto_RunInfo_add_output(b, output);
    troupe_proto_RunInfo_add_error(b, error);
    troupe_proto_RunInfo_add_agent(b, agent);
    troupe_proto_RunInfo_add_metadata(b, metadata);
    uint64_t next = troupe_state_Run_next_seq(r);
    troupe_proto_RunInfo_add_last_seq(b, next > 0 ? next - 1 : 0);
    return troupe_proto_RunInfo_end(b);
}

static tr_fb_ref build_approval(struct tr_fb_builder *b, const struct troupe_state_Approval *a)
{
    tr_fb_ref id = opt_str(b, troupe_state_Approval_approval_id(a));
    tr_fb_ref run = opt_str(b, troupe_state_Approval_run_id(a));
    tr_fb_ref tool = opt_str(b, troupe_state_Approval_tool(a));
    tr_fb_ref args = opt_str(b, troupe_state_Approval_arguments(a));
    tr_fb_ref reason = opt_str(b, troupe_state_Approval_reason(a));
    troupe_proto_Approval_start(b);
    troupe_proto_Approval_add_id(b, id);
    troupe_proto_Approval_add_run_id(b, run);
    troupe_proto_Approval_add_tool(b, tool);
    troupe_proto_Approval_add_arguments(b, args);
    troupe_proto_Approval_add_risk(b, troupe_state_Approval_risk(a));
    troupe_proto_Approval_add_requested_at_us(b, troupe_state_Approval_requested_at_us(a));
    troupe_proto_Approval_add_expires_at_us(b, troupe_state_Approval_expires_at_us(a));
    troupe_proto_Approval_add_status(b, troupe_state_Approval_status(a));
    troupe_proto_Approval_add_reason(b, reason);
    return troupe_proto_Approval_end(b);
}

static tr_fb_ref copy_tool(struct tr_fb_builder *b, const struct troupe_cmd_Tool *t)
{
    tr_fb_ref name = opt_str(b, troupe_cmd_Tool_name(t));
    tr_fb_ref desc = opt_str(b, troupe_cmd_Tool_description(t));
    tr_fb_ref schema = opt_str(b, troupe_cmd_Tool_input_schema(t));
    tr_fb_ref config = opt_str(b, troupe_cmd_Tool_config(t));
    troupe_cmd_Tool_start(b);
    troupe_cmd_Tool_add_name(b, name);
    troupe_cmd_Tool_add_version(b, troupe_cmd_Tool_version(t));
    troupe_cmd_Tool_add_description(b, desc);
    troupe_cmd_Tool_add_input_schema(b, schema);
    troupe_cmd_Tool_add_risk(b, troupe_cmd_Tool_risk(t));
    troupe_cmd_Tool_add_kind(b, troupe_cmd_Tool_kind(t));
    troupe_cmd_Tool_add_config(b, config);
    troupe_cmd_Tool_add_timeout_ms(b, troupe_cmd_Tool_timeout_ms(t));
    troupe_cmd_Tool_add_enabled(b, troupe_cmd_Tool_enabled(t));
    return troupe_cmd_Tool_end(b);
}

/* The run named by `j`'s "id", as a RunInfo; 0 when it cannot be read. */
static tr_fb_ref run_from_json(struct tr_fb_builder *b, struct tr_store *s, json_t *j)
{
    const char *text = json_string_value(json_object_get(j, "id"));
    uint64_t key;
    void *buf;
    const struct troupe_state_Run *r;
    if (text == NULL || tr_run_id_from_text(text, strlen(text), &key) != TR_OK ||
        gw_load_run(s, key, &buf, &r) != TR_OK)
        return 0;
    tr_fb_ref ref = build_run_info(b, r);
    tr_free(buf);
    return ref;
}

static tr_fb_ref approval_from_json(struct tr_fb_builder *b, struct tr_store *s, json_t *j)
{
    const char *id = json_string_value(json_object_get(j, "id"));
    void *buf;
    const struct troupe_state_Approval *a;
    if (id == NULL || gw_load_approval(s, id, &buf, &a) != TR_OK)
        return 0;
    tr_fb_ref ref = build_approval(b, a);
    tr_free(buf);
    return ref;
}

/* The version named by j's "name" and "version" (absent: latest); 0 when
 * absent or filtered out (skip_disabled). */
static tr_fb_ref tool_from_json(struct tr_fb_builder *b, struct tr_store *s, json_t *j, bool skip_disabled)
{
    const char *name = json_string_value(json_object_get(j, "name"));
    const char *tenant = json_string_value(json_object_get(j, "tenant")); /* its own registry's */
    json_int_t version = json_integer_value(json_object_get(j, "version"));
    void *buf;
    const struct troupe_state_ToolVersions *tv;
    char key[TR_IDEM_TENANT_MAX + 2 + GW_PARAM_MAX];
    if (name == NULL)
        return 0;
    snprintf(key, sizeof key, "%s%s%s", tenant != NULL ? tenant : "", tenant != NULL ? "/" : "", name);
    if (gw_load_tools(s, key, &buf, &tv) != TR_OK)
        return 0;
    const struct troupe_cmd_Tool *t = NULL;
    uint32_t n = troupe_state_ToolVersions_versions_len(tv);
    for (uint32_t i = n; t == NULL && i > 0; i--) {
        const struct troupe_cmd_Tool *v = troupe_state_ToolVersions_versions_at(tv, i - 1);
        if (version == 0 || troupe_cmd_Tool_version(v) == (uint64_t)version)
            t = v;
    }
    tr_fb_ref ref = t != NULL && !(skip_disabled && !troupe_cmd_Tool_enabled(t)) ? copy_tool(b, t) : 0;
    tr_free(buf);
    return ref;
}

static tr_fb_ref cursor_of(struct tr_fb_builder *b, json_t *j)
{
    const char *s = json_string_value(json_object_get(j, "next_cursor"));
    return s != NULL ? tr_fb_create_str(b, s) : 0;
}

/* A page of records named by the objects of j[key]. */
static size_t collect(struct tr_fb_builder *b, struct tr_store *s, json_t *arr, tr_fb_ref **refs,
                      tr_fb_ref (*one)(struct tr_fb_builder *, struct tr_store *, json_t *))
{
    size_t n = 0, cap = json_array_size(arr);
    *refs = tr_calloc(cap + 1, sizeof **refs);
    for (size_t i = 0; i < cap; i++) {
        tr_fb_ref r = one(b, s, json_array_get(arr, i));
        if (r != 0)
            (*refs)[n++] = r;
    }
    return n;
}

static tr_fb_ref event_page(struct tr_fb_builder *b, struct tr_store *s, uint64_t key, uint64_t after, size_t want)
{
    struct tr_journal_iter *it;
    size_t n = 0;
    uint64_t last = after, seq;
    tr_fb_ref *refs = tr_calloc(want + 1, sizeof *refs);
    if (tr_journal_iter_open(s, NULL, key, after + 1, &it, NULL) == TR_OK) {
        const void *ev;
        size_t len;
        while (n < want && tr_journal_iter_next(it, &seq, &ev, &len, NULL) > 0) {
            if (troupe_journal_Event_verify_as_root(ev, len, NULL) == NULL)
                continue; /* the HTTP handler left it out too */
            tr_fb_ref bytes = tr_fb_create_bytes(b, ev, len);
            troupe_proto_EventBytes_start(b);
            troupe_proto_EventBytes_add_event(b, bytes);
            refs[n++] = troupe_proto_EventBytes_end(b);
            last = seq;
        }
        tr_journal_iter_close(it);
    }
    tr_fb_ref events = troupe_proto_EventPage_create_events(b, refs, n);
    tr_free(refs);
    troupe_proto_EventPage_start(b);
    troupe_proto_EventPage_add_events(b, events);
    troupe_proto_EventPage_add_last_seq(b, last);
    return troupe_proto_EventPage_end(b);
}

static int node_role(const char *s)
{
    if (s == NULL)
        return troupe_proto_NodeRole_Standby;
    if (strcmp(s, "leader") == 0)
        return troupe_proto_NodeRole_Leader;
    if (strcmp(s, "candidate") == 0)
        return troupe_proto_NodeRole_Candidate;
    if (strcmp(s, "follower") == 0)
        return troupe_proto_NodeRole_Follower;
    return troupe_proto_NodeRole_Standby;
}

/* This node's digest at a checkpoint (routes_cluster.c) as a one-node
 * ClusterVerifyResult: troupectl gathers every node's and compares. */
static tr_fb_ref verify_result(struct tr_fb_builder *b, json_t *j)
{
    const char *hex = json_string_value(json_object_get(j, "digest"));
    uint8_t d[32];
    size_t n = 0;
    for (; hex != NULL && n < sizeof d && hex[2 * n] != '\0' && hex[2 * n + 1] != '\0'; n++) {
        unsigned v;
        if (sscanf(hex + 2 * n, "%2x", &v) != 1)
            return 0;
        d[n] = (uint8_t)v;
    }
    if (n != sizeof d)
        return 0;
    tr_fb_ref dv = troupe_proto_NodeDigest_create_digest(b, d, n);
    troupe_proto_NodeDigest_start(b);
    troupe_proto_NodeDigest_add_node_id(b, (uint64_t)json_integer_value(json_object_get(j, "node")));
    troupe_proto_NodeDigest_add_applied_index(b, (uint64_t)json_integer_value(json_object_get(j, "last_applied")));
    troupe_proto_NodeDigest_add_digest(b, dv);
    tr_fb_ref nd = troupe_proto_NodeDigest_end(b);
    tr_fb_ref vec = troupe_proto_ClusterVerifyResult_create_nodes(b, &nd, 1);
    troupe_proto_ClusterVerifyResult_start(b);
    troupe_proto_ClusterVerifyResult_add_consistent(b, true);
    troupe_proto_ClusterVerifyResult_add_nodes(b, vec);
    troupe_proto_ClusterVerifyResult_add_index(b, (uint64_t)json_integer_value(json_object_get(j, "index")));
    return troupe_proto_ClusterVerifyResult_end(b);
}

static tr_fb_ref cluster_info(struct tr_fb_builder *b, json_t *j)
{
    json_t *nodes = json_object_get(j, "nodes");
    size_t n = json_array_size(nodes);
    tr_fb_ref *refs = tr_calloc(n + 1, sizeof *refs);
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_array_get(nodes, i);
        tr_fb_ref a[4];
        static const char *const names[4] = { "raft_address", "peer_address", "client_address", "http_address" };
        for (int k = 0; k < 4; k++) {
            const char *s = json_string_value(json_object_get(o, names[k]));
            a[k] = s != NULL ? tr_fb_create_str(b, s) : 0;
        }
        const char *state = json_string_value(json_object_get(o, "state"));
        troupe_proto_NodeInfo_start(b);
        troupe_proto_NodeInfo_add_id(b, (uint64_t)json_integer_value(json_object_get(o, "id")));
        troupe_proto_NodeInfo_add_raft_address(b, a[0]);
        troupe_proto_NodeInfo_add_peer_address(b, a[1]);
        troupe_proto_NodeInfo_add_client_address(b, a[2]);
        troupe_proto_NodeInfo_add_http_address(b, a[3]);
        troupe_proto_NodeInfo_add_draining(b, state != NULL && strcmp(state, "draining") == 0);
        troupe_proto_NodeInfo_add_role(b, (int8_t)node_role(json_string_value(json_object_get(o, "role"))));
        troupe_proto_NodeInfo_add_alive(b, json_is_true(json_object_get(o, "alive")));
        troupe_proto_NodeInfo_add_runs(b, (uint32_t)json_integer_value(json_object_get(o, "runs")));
        refs[i] = troupe_proto_NodeInfo_end(b);
    }
    tr_fb_ref vec = troupe_proto_ClusterInfo_create_nodes(b, refs, n);
    tr_free(refs);
    troupe_proto_ClusterInfo_start(b);
    troupe_proto_ClusterInfo_add_leader_id(b, (uint64_t)json_integer_value(json_object_get(j, "leader")));
    troupe_proto_ClusterInfo_add_term(b, (uint64_t)json_integer_value(json_object_get(j, "term")));
    troupe_proto_ClusterInfo_add_commit_index(b, (uint64_t)json_integer_value(json_object_get(j, "commit_index")));
    troupe_proto_ClusterInfo_add_applied_index(b, (uint64_t)json_integer_value(json_object_get(j, "last_applied")));
    troupe_proto_ClusterInfo_add_nodes(b, vec);
    return troupe_proto_ClusterInfo_end(b);
}

static tr_fb_ref run_one(struct tr_fb_builder *b, struct tr_store *s, json_t *j) { return run_from_json(b, s, j); }
static tr_fb_ref approval_one(struct tr_fb_builder *b, struct tr_store *s, json_t *j)
{
    return approval_from_json(b, s, j);
}
static tr_fb_ref tool_one(struct tr_fb_builder *b, struct tr_store *s, json_t *j)
{
    return tool_from_json(b, s, j, false);
}
static tr_fb_ref enabled_tool_one(struct tr_fb_builder *b, struct tr_store *s, json_t *j)
{
    return tool_from_json(b, s, j, true);
}

tr_fb_ref gw_proto_result(struct tr_fb_builder *b, const struct gw_call *c, uint8_t op, json_t *j, uint64_t after,
                          bool skip_disabled, uint8_t *rtype)
{
    struct tr_store *s = c->g->store;
    *rtype = troupe_proto_Result_NONE;
    tr_fb_ref res = 0, *refs = NULL;
    size_t n;
    switch (op) {
    case troupe_proto_Op_CreateRun:
    case troupe_proto_Op_GetRun:
    case troupe_proto_Op_CancelRun:
        *rtype = troupe_proto_Result_RunInfo;
        res = run_from_json(b, s, j);
        break;
    case troupe_proto_Op_ListRuns: {
        n = collect(b, s, json_object_get(j, "runs"), &refs, run_one);
        tr_fb_ref vec = troupe_proto_RunPage_create_runs(b, refs, n);
        tr_fb_ref cur = cursor_of(b, j);
        troupe_proto_RunPage_start(b);
        troupe_proto_RunPage_add_runs(b, vec);
        troupe_proto_RunPage_add_next_cursor(b, cur);
        *rtype = troupe_proto_Result_RunPage;
        res = troupe_proto_RunPage_end(b);
        break;
    }
    case troupe_proto_Op_GetEvents: {
        uint64_t key;
        if (tr_run_id_from_text(c->m.param, c->m.param_len, &key) != TR_OK)
            break;
        *rtype = troupe_proto_Result_EventPage;
        res = event_page(b, s, key, after, json_array_size(j));
        break;
    }
    case troupe_proto_Op_ListApprovals: {
        n = collect(b, s, json_object_get(j, "approvals"), &refs, approval_one);
        tr_fb_ref vec = troupe_proto_ApprovalPage_create_approvals(b, refs, n);
        tr_fb_ref cur = cursor_of(b, j);
        troupe_proto_ApprovalPage_start(b);
        troupe_proto_ApprovalPage_add_approvals(b, vec);
        troupe_proto_ApprovalPage_add_next_cursor(b, cur);
        *rtype = troupe_proto_Result_ApprovalPage;
        res = troupe_proto_ApprovalPage_end(b);
        break;
    }
    case troupe_proto_Op_DecideApproval:
        *rtype = troupe_proto_Result_Approval;
        res = approval_from_json(b, s, j);
        break;
    case troupe_proto_Op_RegisterTool:
    case troupe_proto_Op_GetTool:
    case troupe_proto_Op_SetToolEnabled:
        *rtype = troupe_proto_Result_Tool;
        res = tool_from_json(b, s, j, false);
        break;
    case troupe_proto_Op_ListTools: {
        n = collect(b, s, json_object_get(j, "tools"), &refs, skip_disabled ? enabled_tool_one : tool_one);
        tr_fb_ref vec = troupe_proto_ToolPage_create_tools(b, refs, n);
        troupe_proto_ToolPage_start(b);
        troupe_proto_ToolPage_add_tools(b, vec);
        *rtype = troupe_proto_Result_ToolPage;
        res = troupe_proto_ToolPage_end(b);
        break;
    }
    case troupe_proto_Op_ClusterStatus:
        *rtype = troupe_proto_Result_ClusterInfo;
        res = cluster_info(b, j);
        break;
    case troupe_proto_Op_ClusterVerify:
        *rtype = troupe_proto_Result_ClusterVerifyResult;
        res = verify_result(b, j);
        break;
    default:
        res = gw_proto_tenant_result(b, op, j, rtype); /* proto_tenants.c */
        break;
    }
    tr_free(refs);
    return res;
}
