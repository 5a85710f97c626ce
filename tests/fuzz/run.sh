#!/usr/bin/env bash
# Builds every libFuzzer target with clang (ASan + UBSan) and runs each for a
# bounded time: FUZZ_TIME seconds (default 20). CI calls it; a longer soak is
#   FUZZ_TIME=600 tests/fuzz/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
dir=${BUILD_DIR:-build-fuzz}
CC=clang CXX=clang++ cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DTR_FUZZ=ON -DTR_SANITIZE=ON -DFUZZ_TIME="${FUZZ_TIME:-20}" >/dev/null
cmake --build "$dir" -j"${JOBS:-2}" --target fuzz_schemas_journal fuzz_schemas_command \
  fuzz_schemas_peer fuzz_schemas_protocol fuzz_schemas_state schemas_interop_test fuzz_jsonschema \
  fuzz_auth fuzz_entry fuzz_llm fuzz_gateway fuzz_fold fuzz_httpd fuzz_wire
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir "$dir" --output-on-failure -L fuzz
