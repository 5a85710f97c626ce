#!/usr/bin/env bash
# The main job: install dependencies, build, start a Troupe node with a
# scripted LLM (troupe-mockllm) and a tool server, and run agents durably:
#   1. a support agent looks up an order, then asks to issue a refund — an
#      irreversible tool, so the run waits for a human; the node is killed
#      with SIGKILL while it waits and restarted; the approval then lets the
#      run finish, and the refund was performed exactly once;
#   2. twenty research agents run in parallel; the node is SIGKILLed in the
#      middle of them and restarted; every run finishes and no tool effect is
#      performed twice;
#   3. a three-node cluster: writes through a follower, runs placed on every
#      node, one node SIGKILLed with runs in flight: the leader moves its runs
#      to the survivors, every run finishes, `troupectl cluster verify` agrees.
# Everything runs on 127.0.0.1 and stops at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
scripts/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" --target troupe troupe-mockllm troupe-toolserver troupe-showcase troupectl

B=$root/build
work=$(mktemp -d /tmp/troupe-demo-XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
py=/usr/bin/python3
json() { $py -c "import sys,json; d=json.load(sys.stdin); print($1)"; }
free_port() { $py -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
wait_file() { for _ in $(seq 1 200); do [ -s "$1" ] && return 0; sleep 0.05; done; echo "demo: $1 never appeared" >&2; return 1; }

echo "== the actor runtime"
"$B/tools/troupe-showcase"
echo

echo "== starting troupe-mockllm, troupe-toolserver and a troupe node in $work"
"$B/tools/troupe-mockllm" --listen 127.0.0.1:0 --script tools/demo/agent.json --port-file "$work/llm.port" \
  >"$work/llm.log" 2>&1 & pids+=($!)
"$B/tests/support/toolserver/troupe-toolserver" --listen 127.0.0.1:0 --port-file "$work/tools.port" \
  --log "$work/receipts.jsonl" >"$work/tools.log" 2>&1 & pids+=($!)
wait_file "$work/llm.port"; wait_file "$work/tools.port"
llm=$(cat "$work/llm.port"); tools=$(cat "$work/tools.port")
raft=$(free_port); http=$(free_port)
api=http://127.0.0.1:$http
node_args=(--id 1 --data "$work/node" --raft "127.0.0.1:$raft" --http "127.0.0.1:$http")
start_node() {
  OPENAI_BASE_URL=http://127.0.0.1:$llm/v1 OPENAI_API_KEY=demo TROUPE_LOG=warn \
    "$B/node/troupe" "${node_args[@]}" "$@" >>"$work/node.log" 2>&1 &
  node_pid=$!
  for _ in $(seq 1 400); do
    curl -sf "$api/healthz" 2>/dev/null | grep -q '"ready":true' && return 0
    sleep 0.05
  done
  echo "demo: the node did not become ready:" >&2; tail -20 "$work/node.log" >&2; return 1
}
kill_node() { kill -9 "$node_pid"; wait "$node_pid" 2>/dev/null || true; }
start_node --bootstrap
echo "node 1 is up: HTTP API on $api"

post() { curl -sf -X POST "$api$1" -H 'Content-Type: application/json' -d "$2"; }
post /v1/tools "{\"name\":\"lookup_order\",\"description\":\"Look an order up\",\"risk\":\"read\",\"kind\":\"http\",
  \"input_schema\":{\"type\":\"object\",\"properties\":{\"order\":{\"type\":\"string\"}},\"required\":[\"order\"]},
  \"config\":{\"url\":\"http://127.0.0.1:$tools/tools/echo\",\"allow\":[\"127.0.0.1\"]}}" >/dev/null
post /v1/tools "{\"name\":\"issue_refund\",\"description\":\"Refund an order (moves money)\",\"risk\":\"irreversible\",
  \"kind\":\"http\",\"input_schema\":{\"type\":\"object\",\"properties\":{\"order\":{\"type\":\"string\"},
  \"amount\":{\"type\":\"integer\",\"minimum\":1}},\"required\":[\"order\",\"amount\"]},
  \"config\":{\"url\":\"http://127.0.0.1:$tools/tools/payment\",\"allow\":[\"127.0.0.1\"]}}" >/dev/null
post /v1/tools "{\"name\":\"slow_report\",\"description\":\"Build a report (slow)\",\"risk\":\"write\",\"kind\":\"http\",
  \"input_schema\":{\"type\":\"object\"},\"config\":{\"url\":\"http://127.0.0.1:$tools/tools/sleep\",
  \"allow\":[\"127.0.0.1\"]}}" >/dev/null
echo "registered tools: lookup_order (read), issue_refund (irreversible), slow_report (write)"
echo

echo "== 1. a refund that waits for a human, across a SIGKILL"
run=$(post /v1/runs '{"goal":"Customer says order A-1234 arrived broken; refund it if policy allows.",
  "agent":{"model":"mock-gpt","system":"[mock:refund] You are a support agent.",
  "tools":["lookup_order","issue_refund"]}}' | json 'd["id"]')
echo "created $run"
for _ in $(seq 1 200); do
  st=$(curl -sf "$api/v1/runs/$run" | json 'd["status"]')
  [ "$st" = waiting_approval ] && break; sleep 0.05
done
echo "status: $st"
curl -sf "$api/v1/approvals?status=pending" | json '"\n".join("  pending approval %s: %s %s (risk %s)" % (a["id"], a["tool"], json.dumps(a["arguments"]), a["risk"]) for a in d["approvals"])'
echo "killing the node with SIGKILL while the run waits for a human..."
kill_node
start_node
echo "restarted: the run is still $(curl -sf "$api/v1/runs/$run" | json 'd["status"]')"
approval=$(curl -sf "$api/v1/approvals?status=pending" | json 'd["approvals"][0]["id"]')
post "/v1/approvals/$approval" '{"decision":"approve","reason":"policy allows it"}' >/dev/null
echo "approved $approval"
curl -sf "$api/v1/runs/$run?wait=30" | json '"status: %s\noutput: %s\nusage: %s" % (d["status"], d["output"], json.dumps(d["usage"]))'
echo "journal:"
curl -sf "$api/v1/runs/$run/events" | json '"\n".join("  %2d %s" % (e["seq"], e["type"]) for e in d)'
curl -sf "http://127.0.0.1:$tools/_stats" | json '"tool server: %d payment(s) performed, balance %d, duplicates performed %d" % (d["by_tool"].get("payment",0), d["balance"], d["duplicates_performed"])'
echo

echo "== 2. twenty agents in parallel, SIGKILL in the middle"
ids=()
for i in $(seq 1 20); do
  ids+=("$(post /v1/runs "{\"goal\":\"customer-$i\",\"agent\":{\"model\":\"mock-gpt\",\"system\":\"[mock:research]\",
    \"tools\":[\"lookup_order\",\"slow_report\"]}}" | json 'd["id"]')")
done
sleep 0.5
echo "killing the node with SIGKILL with 20 runs in flight..."
kill_node
start_node
for id in "${ids[@]}"; do curl -sf "$api/v1/runs/$id?wait=60" >/dev/null; done
curl -sf "$api/v1/runs?limit=100" | json '"runs by status: %s" % json.dumps(__import__("collections").Counter(r["status"] for r in d["runs"]))'
curl -sf "http://127.0.0.1:$tools/_stats" | json '"tool server: %d effects for %d keys, %d re-sent after the kill, duplicates performed: %d" % (d["effects"], d["keys"], d["resends"], d["duplicates_performed"])'
curl -sf "$api/v1/cluster/digest" | json '"state digest %s at raft index %d" % (d["digest"][:16], d["last_applied"])'
kill "$node_pid"; wait "$node_pid" 2>/dev/null || true
echo

echo "== 3. a three-node cluster: a node dies with runs in flight"
ctl() { "$B/tools/troupectl" --server "127.0.0.1:${cport[1]}" "$@"; }
declare -A cpid hport cport pport
for i in 1 2 3; do hport[$i]=$(free_port); cport[$i]=$(free_port); pport[$i]=$(free_port); done
start_member() { # i extra-args...
  local i=$1; shift
  OPENAI_BASE_URL=http://127.0.0.1:$llm/v1 OPENAI_API_KEY=demo TROUPE_LOG=warn \
    "$B/node/troupe" --id "$i" --data "$work/c$i" --raft "127.0.0.1:$(free_port)" --peer "127.0.0.1:${pport[$i]}" \
    --client "127.0.0.1:${cport[$i]}" --http "127.0.0.1:${hport[$i]}" "$@" >>"$work/c$i.log" 2>&1 &
  cpid[$i]=$!; pids+=("${cpid[$i]}")
  for _ in $(seq 1 400); do
    curl -sf "http://127.0.0.1:${hport[$i]}/healthz" 2>/dev/null | grep -q '"ready":true' && return 0
    sleep 0.05
  done
  echo "demo: node $i did not become ready:" >&2; tail -20 "$work/c$i.log" >&2; return 1
}
start_member 1 --bootstrap
start_member 2 --join "127.0.0.1:${pport[1]}" --cluster-secret-file "$work/c1/cluster.secret"
start_member 3 --join "127.0.0.1:${pport[1]}" --cluster-secret-file "$work/c1/cluster.secret"
ctl cluster status
capi=http://127.0.0.1:${hport[2]}   # a follower: writes are forwarded to the leader
cpost() { curl -sf -X POST "$capi$1" -H 'Content-Type: application/json' -d "$2"; }
cpost /v1/tools "{\"name\":\"lookup_order\",\"description\":\"Look an order up\",\"risk\":\"read\",\"kind\":\"http\",
  \"input_schema\":{\"type\":\"object\"},\"config\":{\"url\":\"http://127.0.0.1:$tools/tools/echo\",\"allow\":[\"127.0.0.1\"]}}" >/dev/null
cpost /v1/tools "{\"name\":\"slow_report\",\"description\":\"Build a report (slow)\",\"risk\":\"write\",\"kind\":\"http\",
  \"input_schema\":{\"type\":\"object\"},\"config\":{\"url\":\"http://127.0.0.1:$tools/tools/sleep\",\"allow\":[\"127.0.0.1\"]}}" >/dev/null
before=$(curl -sf "http://127.0.0.1:$tools/_stats" | json 'd["resends"]')
cids=()
for i in $(seq 1 30); do
  cids+=("$(cpost /v1/runs "{\"goal\":\"cluster-customer-$i\",\"agent\":{\"model\":\"mock-gpt\",\"system\":\"[mock:research]\",
    \"tools\":[\"lookup_order\",\"slow_report\"]}}" | json 'd["id"]')")
done
sleep 0.4
echo "killing node 3 with SIGKILL (it owns runs mid-step)..."
kill -9 "${cpid[3]}"; wait "${cpid[3]}" 2>/dev/null || true
for id in "${cids[@]}"; do curl -sf "$capi/v1/runs/$id?wait=60" >/dev/null; done
curl -sf "$capi/v1/runs?limit=200" | json '"cluster runs by status: %s" % json.dumps(__import__("collections").Counter(r["status"] for r in d["runs"] if r["goal"].startswith("cluster-")))'
moved=0; placed=""
for id in "${cids[@]}"; do
  read -r first n < <(curl -sf "$capi/v1/runs/$id/events" |
    json '"%d %d" % (d[0]["data"]["owner_node"], sum(1 for e in d if e["type"] == "run.assigned"))')
  moved=$((moved + n)); placed="$placed $first"
done
echo "runs placed at creation on nodes:$(echo $placed | tr ' ' '\n' | sort | uniq -c | awk '{printf " node %s: %s", $2, $1}')"
echo "runs moved off node 3 by the leader: $moved"
curl -sf "http://127.0.0.1:$tools/_stats" | json '"tool server: duplicates performed %d, keys re-sent after this kill %d" % (d["duplicates_performed"], d["resends"] - '"$before"')'
ctl cluster verify
echo
echo "demo done. API reference: ../shared/API.md; design: docs/ARCHITECTURE.md"
