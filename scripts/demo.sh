#!/usr/bin/env bash
# The main job: install dependencies, build, and run the showcase.
# Today the showcase is a tour of the actor runtime; as the durable-run issue
# lands this script starts a troupe node and runs an agent against
# troupe-mockllm.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)"
echo
build/tools/troupe-showcase
