#!/usr/bin/env bash
# bench/kill9_rounds.sh [BUILD_DIR] [ROUNDS] — kill -9 canopyd at random points of a
# deployment and check that, after a restart, it always comes back to a consistent set.
#
#   BUILD_DIR   a build with canopyd and canopy (default build)
#   ROUNDS      number of kill rounds (default 20)
#
# Three components bench.K1..K3, each in 1.0.0 and 2.0.0 (DefaultConfiguration v = version,
# a few KiB app.sh; bench.K1 also downloads a 5 MiB artifact over https:// from a local test
# server (tests/support/https_server.py), so kills land mid-download too). Round 1 first deploys
# all three at 1.0.0 (--wait). Every round then: start canopyd on the same root, create a
# deployment switching all three to the other version (no --wait), sleep a random 0-120 ms,
# kill -9 canopyd, wait for it, start it again, wait (30 s deadline) until no deployment is
# QUEUED/IN_PROGRESS and every component is RUNNING or FINISHED, then check:
#   - all three components have the same version (never a mix),
#   - each component's configuration.v equals its version,
#   - exactly 3 `sleep 3600` processes of ggc_user (none left from the killed canopyd).
# One line per round; at the end "N rounds, M consistent"; exit 1 if any was inconsistent.
# Builds nothing (copies the two binaries into its temp folder first, so a concurrent rebuild
# of BUILD_DIR cannot swap them mid-run); needs the ggc_user account (components run as ggc_user).
set -uo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build}
rounds=${2:-20}
case "$build" in /*) ;; *) build=$repo/$build ;; esac
canopyd=$build/src/main/canopyd
cli=$build/src/cli/canopy
py=/usr/bin/python3
if [ ! -x "$canopyd" ] || [ ! -x "$cli" ]; then
  echo "kill9_rounds.sh: no canopyd/canopy in $build (build them first)" >&2
  exit 2
fi
id ggc_user >/dev/null 2>&1 || { echo "kill9_rounds.sh: no ggc_user" >&2; exit 2; }
if [ "$(ps -u ggc_user -o args= 2>/dev/null | grep -cx 'sleep 3600')" != 0 ]; then
  echo "kill9_rounds.sh: ggc_user already runs 'sleep 3600' processes; the count check would be wrong" >&2
  exit 2
fi

T=$(mktemp -d /tmp/canopy-kill9-XXXXXX)
case "$T" in /tmp/canopy-kill9-*) ;; *) echo "kill9_rounds.sh: mktemp failed" >&2; exit 1 ;; esac
chmod 0755 "$T"  # components run as ggc_user: the root's parents must be traversable
# Snapshot the binaries: a rebuild of BUILD_DIR during the run must not swap them mid-way.
mkdir -p "$T/bin"
cp "$canopyd" "$T/bin/canopyd" && cp "$cli" "$T/bin/canopy" || { echo "kill9_rounds.sh: cannot copy the binaries" >&2; exit 1; }
canopyd=$T/bin/canopyd
cli=$T/bin/canopy
"$cli" --version >/dev/null 2>&1 || { echo "kill9_rounds.sh: $cli does not run (being rebuilt?)" >&2; exit 1; }
root=$T/root
log=$root/logs/canopyd.log
PID=""
SERVER=""
stop_canopyd() {
  if [ -n "$PID" ]; then
    kill -TERM "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
    PID=""
  fi
}
cleanup() {
  stop_canopyd
  if [ -n "$SERVER" ]; then kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; fi
  case "$T" in /tmp/canopy-kill9-*) rm -rf "$T" ;; esac
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- recipes and artifacts ---------------------------------------------------------------
mkdir -p "$T/recipes" "$T/artifacts" "$T/served"
# bench.K1's 5 MiB artifact comes over https:// from a local test server, so kills also land in
# the middle of downloads (a different file per version: every switch downloads).
sh "$repo/tests/pki/gen.sh" "$T/pki" >/dev/null
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
for ver in 1.0.0 2.0.0; do head -c 5242880 /dev/urandom > "$T/served/big-$ver.bin"; done
/usr/bin/python3 "$repo/tests/support/https_server.py" --root "$T/served" --cert "$T/pki/server.crt" \
  --key "$T/pki/server.key" --port "$port" > "$T/https.log" 2>&1 &
SERVER=$!
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done
printf 'services:\n  canopy.Nucleus:\n    configuration:\n      deployment:\n        downloadCaFile: %s\n' \
  "$T/pki/ca.crt" > "$T/config.yaml"
for n in 1 2 3; do
  name=bench.K$n
  for ver in 1.0.0 2.0.0; do
    big_line=""
    if [ "$n" = 1 ]; then
      big_line="      - URI: https://127.0.0.1:$port/big-$ver.bin
        Digest: $(openssl dgst -sha256 -binary "$T/served/big-$ver.bin" | base64 -w0)"
    fi
    cat > "$T/recipes/$name-$ver.yaml" <<YAML
RecipeFormatVersion: '2020-01-25'
ComponentName: $name
ComponentVersion: '$ver'
ComponentConfiguration:
  DefaultConfiguration:
    v: "$ver"
Manifests:
  - Lifecycle:
      Install: sleep 0.05
      Run: sh {artifacts:path}/app.sh; exec sleep 3600
    Artifacts:
      - URI: s3://bucket/app.sh
$big_line
YAML
    a=$T/artifacts/$name/$ver
    mkdir -p "$a"
    { echo "#!/bin/sh"; echo "# $name $ver"; for i in $(seq 100); do echo ": padding line $i of $name $ver ................................"; done
      echo "exit 0"; } > "$a/app.sh"
  done
done

start_canopyd() {
  "$canopyd" --root "$root" --config "$T/config.yaml" --foreground >> "$T/canopyd.out" 2>&1 &
  PID=$!
  for _ in $(seq 500); do
    "$cli" --root "$root" status >/dev/null 2>&1 && return 0
    kill -0 "$PID" 2>/dev/null || break
    sleep 0.02
  done
  echo "kill9_rounds.sh: canopyd did not become ready:" >&2
  tail -n 30 "$T/canopyd.out" >&2
  exit 1
}

# deploy_args VERSION -> the create arguments switching all three to VERSION
deploy_args() {
  local ver=$1 cfg="{" sep=""
  args=(--recipeDir "$T/recipes" --artifactDir "$T/artifacts" --allow-downgrade)
  for n in 1 2 3; do
    args+=(--merge "bench.K$n=$ver")
    cfg+="$sep\"bench.K$n\":{\"MERGE\":{\"v\":\"$ver\"}}"; sep=","
  done
  args+=(--update-config "$cfg}")
}

# settled: 0 when no deployment is QUEUED/IN_PROGRESS and every component is RUNNING/FINISHED
settled() {
  local d c
  d=$("$cli" --root "$root" deployment list --json 2>/dev/null) || return 1
  c=$("$cli" --root "$root" component list --json 2>/dev/null) || return 1
  D="$d" C="$c" "$py" - <<'PY'
import json, os, sys
d = json.loads(os.environ["D"]); c = json.loads(os.environ["C"])
if any(x.get("status") in ("IN_PROGRESS", "QUEUED") for x in d.get("localDeployments", [])):
    sys.exit(1)
comps = [x for x in c.get("components", []) if x.get("componentName", "").startswith("bench.K")]
if len(comps) != 3 or any(x.get("state") not in ("RUNNING", "FINISHED") for x in comps):
    sys.exit(1)
PY
}

# versions: "K1=v K2=v K3=v" and cfgok: 0 if each configuration.v equals its version
state_report() {
  local c
  c=$("$cli" --root "$root" component list --json 2>/dev/null) || { echo "- - cli-failed"; return; }
  C="$c" "$py" - <<'PY'
import json, os
c = json.loads(os.environ["C"])
comps = sorted((x for x in c.get("components", []) if x.get("componentName", "").startswith("bench.K")),
               key=lambda x: x["componentName"])
vers = ",".join("%s=%s" % (x["componentName"][6:], x.get("version")) for x in comps) or "none"
cfg_bad = [x["componentName"][6:] + ":v=" + str((x.get("configuration") or {}).get("v"))
           for x in comps if (x.get("configuration") or {}).get("v") != x.get("version")]
same = len(comps) == 3 and len({x.get("version") for x in comps}) == 1
print(vers, "same" if same else "MIX", ("cfg_ok" if not cfg_bad else "CFG_BAD[" + ";".join(cfg_bad) + "]"))
PY
}

# outcome ID: status (and message) of deployment ID
outcome() {
  local d
  d=$("$cli" --root "$root" deployment list --json 2>/dev/null) || { echo "?"; return; }
  D="$d" ID="$1" "$py" - <<'PY'
import json, os
d = json.loads(os.environ["D"]); want = os.environ["ID"]
for x in d.get("localDeployments", []):
    if x.get("deploymentId") == want or x.get("id") == want:
        msg = x.get("message") or x.get("statusDetails") or x.get("reason") or ""
        if isinstance(msg, dict): msg = json.dumps(msg)
        print(x.get("status") + ((" (" + str(msg) + ")") if msg and x.get("status") != "SUCCEEDED" else ""))
        break
else:
    print("NOT_FOUND")
PY
}

sleeps() { ps -u ggc_user -o args= 2>/dev/null | grep -cx 'sleep 3600'; }

# --- round 0: all three at 1.0.0 ------------------------------------------------------------
start_canopyd
deploy_args 1.0.0
"$cli" --root "$root" deployment create "${args[@]}" --wait > "$T/create.out" 2>&1 || {
  echo "kill9_rounds.sh: initial deployment failed:" >&2; cat "$T/create.out" >&2; exit 1; }
cur=1.0.0
ok=0
for r in $(seq "$rounds"); do
  [ -n "$PID" ] || start_canopyd
  if [ "$cur" = 1.0.0 ]; then next=2.0.0; else next=1.0.0; fi
  deploy_args "$next"
  out=$("$cli" --root "$root" deployment create "${args[@]}" --json 2>&1) || true
  dep=$(printf '%s' "$out" | "$py" -c 'import json,sys
try:
  j=json.load(sys.stdin); print(j.get("deploymentId") or j.get("id") or "")
except Exception: print("")')
  delay=$((RANDOM % 121))
  sleep "$(awk -v m="$delay" 'BEGIN{printf "%.3f", m/1000}')"
  kill -9 "$PID" 2>/dev/null
  wait "$PID" 2>/dev/null
  PID=""
  echo "=== kill9_rounds.sh: round $r killed after ${delay} ms (deployment $dep) ===" >> "$T/canopyd.out"
  start_canopyd
  deadline=$((SECONDS + 30)); settled_ok=0
  while [ $SECONDS -lt $deadline ]; do
    if settled; then settled_ok=1; break; fi
    sleep 0.1
  done
  sleep 0.3  # let stray processes of the killed canopyd show up if any
  rep=$(state_report)
  ns=$(sleeps)
  oc=$(outcome "$dep")
  read -r vers same cfg <<<"$rep"
  res=OK
  { [ "$settled_ok" = 1 ] && [ "$same" = same ] && [ "$cfg" = cfg_ok ] && [ "$ns" = 3 ]; } || res=INCONSISTENT
  [ "$res" = OK ] && ok=$((ok + 1))
  extra=""
  [ "$settled_ok" = 1 ] || extra+=" not-settled-in-30s"
  [ "$same" = same ] || extra+=" version-mix"
  [ "$cfg" = cfg_ok ] || extra+=" $cfg"
  [ "$ns" = 3 ] || extra+=" sleep3600=$ns"
  printf 'round %-3d delay_ms=%-4d deployment=%s outcome=%s versions=%s sleep3600=%s %s%s\n' \
    "$r" "$delay" "${dep:-?}" "$oc" "$vers" "$ns" "$res" "$extra"
  if [ "$res" != OK ]; then
    echo "--- canopyd.log tail (round $r) ---"
    [ -n "$dep" ] && grep -n -- "$dep" "$log" | tail -n 20
    tail -n 40 "$log"
    echo "---"
  fi
  # the set we are now at
  case "$vers" in *=2.0.0,*=2.0.0,*=2.0.0) cur=2.0.0 ;; *=1.0.0,*=1.0.0,*=1.0.0) cur=1.0.0 ;; esac
done
stop_canopyd
echo "$rounds rounds, $ok consistent"
[ "$ok" = "$rounds" ] || exit 1
exit 0
