#!/usr/bin/env bash
# Runs every test: installs dependencies, builds (release and ASan+UBSan), and
# runs the whole ctest suite on the release build.
#   TROUPE_TEST_LABEL=unit scripts/test.sh    only one label (unit, integration, chaos, fuzz)
# The chaos suite's bounded slice runs with the integration tests (its tests
# carry both labels; root is needed for its network namespaces): one schedule
# per fault kind plus TROUPE_CHAOS_ROUNDS random faults (default 2) seeded by
# TROUPE_CHAOS_SEED (default: the time, printed). The long run is
# tests/chaos/soak.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
jobs=$(nproc)
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$jobs"
args=(--test-dir build --output-on-failure -j"$jobs")
[ -n "${TROUPE_TEST_LABEL:-}" ] && args+=(-L "$TROUPE_TEST_LABEL")
ctest "${args[@]}"
