#!/usr/bin/env bash
# Installs the AWS IoT Device SDK for JavaScript v2 (the reference IPC test client) into
# tests/js/node_modules from the committed package-lock.json. Run by scripts/setup.sh.
# Idempotent: does nothing while node_modules is newer than package-lock.json.
set -euo pipefail

js_dir=$(cd "$(dirname "$0")/../../tests/js" && pwd)
lock="$js_dir/package-lock.json"
modules="$js_dir/node_modules"

if ! command -v npm >/dev/null 2>&1; then
  echo "setup.d/js-sdk.sh: npm not found (setup.sh installs Debian's nodejs and npm)" >&2
  exit 1
fi
if [ -d "$modules" ] && [ "$modules" -nt "$lock" ] && [ -d "$modules/aws-iot-device-sdk-v2" ]; then
  echo "setup.d/js-sdk.sh: tests/js/node_modules up to date"
  exit 0
fi

echo "setup.d/js-sdk.sh: installing tests/js (npm ci)"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! (cd "$js_dir" && npm ci --no-audit --no-fund --loglevel=error) >"$log" 2>&1; then
  echo "setup.d/js-sdk.sh: 'npm ci' in $js_dir failed:" >&2
  cat "$log" >&2
  exit 1
fi
if ! (cd "$js_dir" && node -e "require('aws-iot-device-sdk-v2').greengrasscoreipc.createDefaultClientConfig") >"$log" 2>&1; then
  echo "setup.d/js-sdk.sh: aws-iot-device-sdk-v2 installed but does not load:" >&2
  cat "$log" >&2
  exit 1
fi
# npm ci may leave node_modules' own mtime older than the lock file: mark the install.
touch "$modules"
echo "setup.d/js-sdk.sh: aws-iot-device-sdk-v2 $(cd "$js_dir" && node -p "require('aws-iot-device-sdk-v2/package.json').version") installed"
