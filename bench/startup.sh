#!/usr/bin/env bash
# bench/startup.sh [CANOPYD] [RUNS] — canopyd startup time (exec -> READY=1), idle RSS/PSS and
# stop time, over RUNS (default 10) runs on fresh temporary roots. Builds nothing.
#
#   CANOPYD   path to canopyd (default: build/src/main/canopyd, relative to the repository)
#   RUNS      number of runs (default 10)
#   STARTUP_BENCH=path   the startup_bench program (default: <build dir of CANOPYD>/bench/startup_bench)
#   IDLE_MS=ms           idle time after READY=1 before memory is read (default 1000)
#
# The measuring is done by bench/startup_bench.cpp (fork/exec, CLOCK_MONOTONIC, notify socket);
# build it next to canopyd, e.g.:
#   cmake -S . -B build-bench -G Ninja -DCMAKE_BUILD_TYPE=Release -DCANOPY_TESTS=OFF
#   ninja -C build-bench canopyd startup_bench
#   bench/startup.sh build-bench/src/main/canopyd
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
canopyd=${1:-$repo/build/src/main/canopyd}
runs=${2:-10}
idle_ms=${IDLE_MS:-1000}

if [ ! -x "$canopyd" ]; then
  echo "startup.sh: $canopyd is not an executable; build canopyd first (see the top of this script)" >&2
  exit 2
fi
# canopyd lives in <build>/src/main/; the bench program in <build>/bench/.
build_dir=$(cd "$(dirname "$canopyd")/../.." && pwd)
bench=${STARTUP_BENCH:-$build_dir/bench/startup_bench}
if [ ! -x "$bench" ]; then
  echo "startup.sh: $bench not found; build it with: ninja -C $build_dir startup_bench" >&2
  exit 2
fi

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(uname -sr)"
echo "build:   $(grep -m1 '^CMAKE_BUILD_TYPE' "$build_dir/CMakeCache.txt" 2>/dev/null | cut -d= -f2 || echo unknown) ($build_dir)"
echo "date:    $(date -u +%Y-%m-%dT%H:%MZ)"
echo
exec "$bench" --canopyd "$canopyd" --runs "$runs" --idle-ms "$idle_ms"
