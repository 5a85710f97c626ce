#!/usr/bin/env bash
# Both directions of the interop test, then both self-tests.
#   interop.sh INTEROP_TEST_BIN GEN_DIR WORK_DIR [--mutate]
# With --mutate, Python writes deliberately wrong buffers: the C check must
# fail (the ctest that runs this is marked WILL_FAIL).
set -euo pipefail
bin=$1 gen=$2 work=$3 mutate=${4:-}
here=$(cd "$(dirname "$0")" && pwd)
py=/usr/bin/python3   # Debian's python3-flatbuffers lives here
rm -rf "$work"
mkdir -p "$work/py" "$work/c"
"$py" "$here/interop.py" --gen "$gen" write "$work/py" $mutate
"$bin" check "$work/py"
"$bin" write "$work/c"
"$py" "$here/interop.py" --gen "$gen" check "$work/c"
"$bin" selftest
"$py" "$here/interop.py" --gen "$gen" selftest
