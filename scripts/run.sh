#!/usr/bin/env bash
# Installs the dependencies, builds, and runs canopyd in its embedded default: no
# configuration file, state under .canopy-root/ in the checkout, in the foreground,
# logs on the console. Stop it with Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/build.sh
exec ./build/src/main/canopyd --root "$PWD/.canopy-root" --foreground "$@"
