#!/usr/bin/env bash
# CI: builds the schemas fuzz targets with clang (libFuzzer + ASan + UBSan)
# and runs each for a bounded time (FUZZ_TIME seconds, default 20).
set -euo pipefail
cd "$(dirname "$0")/../.."
dir=${BUILD_DIR:-build-fb-fuzz}
CC=clang CXX=clang++ cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DTR_FUZZ=ON -DTR_SANITIZE=ON -DFUZZ_TIME="${FUZZ_TIME:-20}" >/dev/null
cmake --build "$dir" -j"${JOBS:-2}" --target fuzz_schemas_journal fuzz_schemas_command \
  fuzz_schemas_peer fuzz_schemas_protocol fuzz_schemas_state schemas_interop_test
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir "$dir" --output-on-failure -L fuzz -R '^fuzz_schemas_'
