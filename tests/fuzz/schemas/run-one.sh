#!/usr/bin/env bash
# Runs one schemas fuzz target for a bounded time.
#   run-one.sh FUZZER INTEROP_TEST SCHEMA WORK_DIR SECONDS
# Seeds: the buffers the interop test builds for the schema's root type
# (plain and size-prefixed); the corpus grows in WORK_DIR/corpus.
set -euo pipefail
fuzzer=$1 interop=$2 schema=$3 work=$4 secs=$5
mkdir -p "$work/seeds" "$work/corpus" "$work/all"
"$interop" write "$work/all" >/dev/null
# the root type's cases carry the identifier: they are the ones with .sized twins
for f in "$work/all/$schema".*.sized.bin; do
  base=${f%.sized.bin}
  cp "$f" "$base.bin" "$work/seeds/"
done
cd "$work"
"$fuzzer" -max_total_time="$secs" -timeout=5 -rss_limit_mb=1024 -max_len=65536 \
  -print_final_stats=1 corpus seeds 2>&1 | tail -n 15
