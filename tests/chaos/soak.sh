#!/usr/bin/env bash
# The chaos soak: randomised fault schedules against a 3-node cluster for a
# given time (tests/chaos/cluster/test_chaos.c, scenario "random"; the CI
# runs a bounded slice of the same program through ctest -L chaos).
#
#   tests/chaos/soak.sh [SECONDS] [BUILD_DIR]
#     SECONDS    how long to keep starting schedules (default 1800)
#     BUILD_DIR  a configured build with troupe, troupe-mockllm,
#                troupe-toolserver and chaos_schedules (default build; it is
#                built here)
#   TROUPE_CHAOS_ROUNDS  faults per schedule (default 6)
#   TROUPE_CHAOS_FAILURE_MS  the nodes' --failure-timeout (default 3000)
#   TROUPE_CHAOS_RUNS    runs per fault: 3 + a random number below this (default 4)
#   TROUPE_CHAOS_FLAKY=0 no run makes the call that fails once (503) and is
#                        retried by the tool executor
#   TROUPE_CHAOS_SEED    seed of the first schedule (default: the time);
#                        schedule k uses seed + k
#
# Each schedule starts its own cluster in fresh network namespaces (root
# needed), so a failure leaves nothing behind that the next one sees. The
# first failing schedule stops the soak: its seed, its output and its
# directory (node logs, tool server receipts) are kept and printed.
# Exit status: 0 when every schedule passed, 1 otherwise.
set -uo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-1800}
build=${2:-build}
rounds=${TROUPE_CHAOS_ROUNDS:-6}
seed=${TROUPE_CHAOS_SEED:-$(date +%s)}
cmake --build "$build" --target troupe troupe-mockllm troupe-toolserver chaos_schedules >/dev/null || exit 1
bin=$(find "$build/tests/chaos" -name chaos_schedules -type f | head -n1)
export TROUPE_BIN=$build/node/troupe
export TROUPE_MOCKLLM_BIN=$(find "$build/tools" -name troupe-mockllm -type f | head -n1)
export TROUPE_TOOLSERVER_BIN=$build/tests/support/toolserver/troupe-toolserver
out=$(mktemp -d /tmp/troupe-soak-XXXXXX)
end=$(( $(date +%s) + secs ))
n=0
while [ "$(date +%s)" -lt "$end" ]; do
  s=$((seed + n))
  log=$out/schedule-$n.log
  if TROUPE_CHAOS_SEED=$s TROUPE_CHAOS_ROUNDS=$rounds "$bin" random >"$log" 2>&1; then
    echo "soak: schedule $n (seed $s, $rounds faults) passed: $(grep -o 'chaos: [0-9]* runs.*' "$log")"
    rm -f "$log"
  else
    echo "soak: schedule $n FAILED (TROUPE_CHAOS_SEED=$s TROUPE_CHAOS_ROUNDS=$rounds); output in $log:" >&2
    grep -E 'VIOLATION|fault|FAIL|kept|harness' "$log" >&2
    exit 1
  fi
  n=$((n + 1))
done
echo "soak: $n schedules of $rounds faults passed in ${secs}s"
rmdir "$out" 2>/dev/null || true
exit 0
