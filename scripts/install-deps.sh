#!/usr/bin/env bash
# Installs every Debian package Troupe needs to build, test and benchmark.
# Idempotent: when everything is present it only checks (dpkg-query) and exits
# in well under a second; apt-get runs only for what is missing.
set -euo pipefail

# Build and runtime libraries.
PKGS_BUILD=(
  build-essential cmake pkg-config ninja-build clang libclang-rt-14-dev
  libuv1-dev libraft-dev librocksdb-dev
  flatbuffers-compiler libflatbuffers-dev
  libcurl4-openssl-dev libsodium-dev libhttp-parser-dev libwslay-dev
  libjansson-dev libcmocka-dev
)
# Tests, fuzzing, benchmarks and the sandbox.
PKGS_TEST=(
  python3 python3-flatbuffers json-schema-test-suite
  valgrind wrk bubblewrap runsc iproute2 procps curl
)

want=("${PKGS_BUILD[@]}" "${PKGS_TEST[@]}")
if [ "${TROUPE_WITH_BROWSER:-0}" = 1 ]; then
  want+=(chromium nodejs npm)
fi

missing=()
for p in "${want[@]}"; do
  st=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
  [ "$st" = installed ] || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
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
