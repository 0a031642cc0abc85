#!/usr/bin/env bash
# bench/https_artifact.sh [BUILD_DIR] [MIB] [RUNS]
# A local deployment whose one artifact (MIB MiB of random bytes, default 50) comes over https://
# from tests/support/https_server.py on 127.0.0.1 (test PKI; canopyd trusts its CA through
# deployment.downloadCaFile). Prints, per run, the CLI's time for `deployment create --wait`,
# canopyd's own queued -> succeeded time, and canopyd's peak RSS (VmHWM) before and after, to
# show that downloads stream to disk instead of memory. Each run uses a fresh root and canopyd.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-release}
mib=${2:-50}
runs=${3:-5}
canopyd=$PWD/$build/src/main/canopyd
cli=$PWD/$build/src/cli/canopy
for b in "$canopyd" "$cli" /usr/bin/python3; do
  [ -x "$b" ] || { echo "https_artifact.sh: $b is missing (build first: BUILD_TYPE=Release BUILD_DIR=$build ./scripts/build.sh)" >&2; exit 2; }
done
id ggc_user >/dev/null 2>&1 || { echo "https_artifact.sh: no ggc_user; run scripts/setup.d/users.sh" >&2; exit 2; }

T=$(mktemp -d /tmp/canopy-https-bench-XXXXXX)
case "$T" in /tmp/canopy-https-bench-*) ;; *) echo "https_artifact.sh: mktemp failed" >&2; exit 1 ;; esac
chmod 0755 "$T"
SERVER="" PID=""
cleanup() {
  [ -n "$PID" ] && { kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; }
  [ -n "$SERVER" ] && { kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; }
  rm -rf "$T"
}
trap cleanup EXIT

sh tests/pki/gen.sh "$T/pki" >/dev/null
mkdir -p "$T/served" "$T/recipes"
head -c "$((mib * 1048576))" /dev/urandom > "$T/served/big.bin"
digest=$(openssl dgst -sha256 -binary "$T/served/big.bin" | base64 -w0)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
/usr/bin/python3 tests/support/https_server.py --root "$T/served" --cert "$T/pki/server.crt" --key "$T/pki/server.key" \
  --port "$port" > "$T/server.log" 2>&1 &
SERVER=$!
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done
cat > "$T/recipes/bench.Big-1.0.0.yaml" <<YAML
RecipeFormatVersion: '2020-01-25'
ComponentName: bench.Big
ComponentVersion: '1.0.0'
Manifests:
  - Lifecycle:
      Run: exec sleep 3600
    Artifacts:
      - URI: https://127.0.0.1:$port/big.bin
        Digest: $digest
YAML
printf 'services:\n  canopy.Nucleus:\n    configuration:\n      deployment:\n        downloadCaFile: %s\n' \
  "$T/pki/ca.crt" > "$T/config.yaml"

hwm() { awk '/^VmHWM:/{print $2}' "/proc/$1/status"; }
log_ms() { sed -E 's/^[0-9-]+T([0-9]+):([0-9]+):([0-9]+)\.([0-9]+)Z.*/\1 \2 \3 \4/' | awk '{print (($1*60+$2)*60+$3)*1000+$4}'; }
printf '== %d MiB artifact over local HTTPS, %d runs ==\n' "$mib" "$runs"
printf '%4s %10s %10s %12s %12s\n' run cli_ms server_ms hwm_before_kB hwm_after_kB
for run in $(seq "$runs"); do
  root=$T/root-$run
  "$canopyd" --root "$root" --config "$T/config.yaml" --foreground > "$T/canopyd.out" 2>&1 &
  PID=$!
  for _ in $(seq 500); do "$cli" --root "$root" status >/dev/null 2>&1 && break; sleep 0.02; done
  before=$(hwm "$PID")
  a=${EPOCHREALTIME/[.,]/}
  "$cli" --root "$root" deployment create --recipeDir "$T/recipes" --merge bench.Big=1.0.0 --wait >/dev/null 2>"$T/err" \
    || { echo "deployment failed:" >&2; cat "$T/err" "$root/logs/canopyd.log" >&2; exit 1; }
  b=${EPOCHREALTIME/[.,]/}
  after=$(hwm "$PID")
  log=$root/logs/canopyd.log
  q=$(grep -m1 'deployment=.* queued' "$log" | log_ms)
  e=$(grep -m1 'deployment=.* succeeded' "$log" | log_ms)
  printf '%4d %10.1f %10d %12d %12d\n' "$run" "$(awk -v a="$a" -v b="$b" 'BEGIN{print (b-a)/1000}')" $((e - q)) "$before" "$after"
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
  case "$root" in "$T"/root-*) rm -rf "$root" ;; esac
done
