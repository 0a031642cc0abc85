#!/usr/bin/env bash
# Installs the dependencies, builds, and runs every test through ctest. Exits non-zero on
# any failure. Also builds the libFuzzer targets with clang (build-fuzz/) and fuzzes each
# for CANOPY_FUZZ_SECONDS (20 by default) through ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
# Integration tests run components as ggc_user and the CLI as other users; they must reach this
# checkout (build/, tests/js/node_modules). A folder above it that others cannot traverse (a
# `mktemp -d`, mode 0700) would fail those tests with "Permission denied": make each such
# folder traversable (o+x only: its listing stays private), and say so.
dir=$(pwd)
while [ "$dir" != / ]; do
  if [ "$(stat -c %A "$dir" | cut -c10)" != x ] && [ "$(stat -c %A "$dir" | cut -c10)" != t ]; then
    echo "test.sh: making $dir traversable by other users (chmod o+x) so that ggc_user and the test users reach the checkout"
    chmod o+x "$dir"
  fi
  dir=$(dirname "$dir")
done
start=$(date +%s)
./scripts/build.sh
echo "test.sh: build took $(( $(date +%s) - start )) s"

status=0
(cd build && ctest --output-on-failure -j "${JOBS:-$(nproc)}" ${CTEST_ARGS:-}) || status=1

if [ "${CANOPY_SKIP_FUZZ:-0}" != "1" ]; then
  cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCANOPY_FUZZ=ON -DCANOPY_TESTS=OFF \
    -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
    -DCANOPY_FUZZ_SECONDS="${CANOPY_FUZZ_SECONDS:-20}" >/dev/null
  targets=$(cd build-fuzz && ninja -t targets all | sed -n 's/^\([a-z_]*_fuzz\): phony$/\1/p' | grep -v '^cmake_' | sort -u)
  if [ -n "$targets" ]; then
    cmake --build build-fuzz -j "${JOBS:-$(nproc)}" --target $targets
    (cd build-fuzz && ctest --output-on-failure -L fuzz -j "${JOBS:-$(nproc)}") || status=1
  fi
fi
echo "test.sh: finished in $(( $(date +%s) - start )) s, status $status"
exit $status
