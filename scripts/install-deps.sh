#!/usr/bin/env bash
# Installs every Debian package Troupe needs to build, test and benchmark.
# Idempotent: when everything is present it only checks (dpkg-query) and exits
# in well under a second; apt-get runs only for what is missing.
set -euo pipefail

# Build and runtime libraries.
PKGS_BUILD=(
  build-essential cmake pkg-config ninja-build clang libclang-rt-14-dev
  libuv1-dev libraft-dev librocksdb-dev liblz4-dev
  flatbuffers-compiler libflatbuffers-dev
  libcurl4-openssl-dev libssl-dev libsodium-dev libhttp-parser-dev libwslay-dev
  libjansson-dev libcmocka-dev
)
# Tests, fuzzing, benchmarks and the sandbox; chromium for the dashboard's
# browser test (tests/integration/browser).
PKGS_TEST=(
  python3 python3-flatbuffers json-schema-test-suite
  valgrind wrk bubblewrap runsc iproute2 procps curl chromium
)

want=("${PKGS_BUILD[@]}" "${PKGS_TEST[@]}")

missing=()
for p in "${want[@]}"; do
  st=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
  [ "$st" = installed ] || missing+=("$p")
done
# node and npm (the browser test's driver): any install will do (a machine
# may carry a Node.js package that provides npm and conflicts with Debian's).
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)

root=$(cd "$(dirname "$0")/.." && pwd)
# playwright-core, pinned in tests/integration/browser/package-lock.json,
# into that folder's node_modules/; skipped when that version is there.
npm_deps() {
  local dir=$root/tests/integration/browser
  local want_v have_v
  want_v=$(sed -n 's/.*"playwright-core": "\([0-9.]*\)".*/\1/p' "$dir/package.json")
  have_v=$(sed -n 's/^  "version": "\([^"]*\)".*/\1/p' "$dir/node_modules/playwright-core/package.json" 2>/dev/null || true)
  [ -n "$want_v" ] && [ "$want_v" = "$have_v" ] && return 0
  echo "install-deps: npm ci in tests/integration/browser (playwright-core $want_v)" >&2
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
}

if [ ${#missing[@]} -eq 0 ]; then
  npm_deps
  exit 0
fi

echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
# Refresh the package lists only when they are missing or older than a day.
if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mmin -1440 2>/dev/null | head -1)" ]; then
  $SUDO apt-get update -q
fi
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
npm_deps
