#!/usr/bin/env bash
# bench/components_pss.sh [BUILD_DIR] [COMPONENTS] — canopyd's memory (PSS from
# /proc/PID/smaps_rollup, and RSS) idle with no components, then with COMPONENTS trivial
# components running (`Run: exec sleep 3600`), then after removing them again; and, apart,
# the PSS of the components' own processes (not canopyd's).
#
#   BUILD_DIR    a build with canopyd and canopy (default build-release)
#   COMPONENTS   number of components (default 10)
#   SAMPLES=5    samples per state, one a second
#   SETTLE_MS=2000   wait before the first sample of each state
#
# One fresh root and one canopyd for the whole run. Builds nothing; needs the ggc_user account
# (scripts/setup.d/users.sh) because components run as that user.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$repo/build-release}
count=${2:-10}
samples=${SAMPLES:-5}
settle_ms=${SETTLE_MS:-2000}
canopyd=$build/src/main/canopyd
cli=$build/src/cli/canopy
if [ ! -x "$canopyd" ] || [ ! -x "$cli" ]; then
  echo "components_pss.sh: build canopyd and canopy first: ninja -C $build canopyd canopy_cli" >&2
  exit 2
fi
id ggc_user >/dev/null 2>&1 || { echo "components_pss.sh: no ggc_user; run scripts/setup.d/users.sh" >&2; exit 2; }

T=$(mktemp -d /tmp/canopy-pss-bench-XXXXXX)
case "$T" in /tmp/canopy-pss-bench-*) ;; *) echo "components_pss.sh: mktemp failed" >&2; exit 1 ;; esac  # never rm -rf anything else
chmod 0755 "$T"  # components run as ggc_user: the root's parents must be traversable
root=$T/root
PID=""
cleanup() {
  if [ -n "$PID" ]; then
    kill "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
  fi
  rm -rf "$T"
}
trap cleanup EXIT

pss_kb() { awk '/^Pss:/{print $2}' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }
rss_kb() { awk '/^VmRSS:/{print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
settle() { sleep "$(awk -v m="$settle_ms" 'BEGIN{print m/1000}')"; }
median() { sort -n | awk '{v[NR]=$1} END{print NR%2 ? v[(NR+1)/2] : int((v[NR/2]+v[NR/2+1])/2)}'; }
mib() { awk -v k="$1" 'BEGIN{printf "%.1f MiB", k/1024}'; }

# The processes of the running components: every process in the process group of each
# component's main process (a Run step is its own process group).
component_pids() {
  "$cli" --root "$root" component list --json |
    python3 -c 'import json,sys; print("\n".join(str(c["pid"]) for c in json.load(sys.stdin)["components"] if c.get("pid")))' \
    > "$T/groups"
  ps -e -o pid=,pgid= | awk 'NR==FNR{g[$1]=1; next} ($2 in g){print $1}' "$T/groups" -
}

# sample LABEL WITH_COMPONENTS: SAMPLES rows of canopyd PSS/RSS (and the components' PSS sum).
sample() {
  local label=$1 with=$2 i p r c n
  : > "$T/pss"; : > "$T/rss"; : > "$T/cpss"
  for i in $(seq "$samples"); do
    p=$(pss_kb "$PID"); r=$(rss_kb "$PID")
    c=0; n=0
    if [ "$with" = 1 ]; then
      for q in $(component_pids); do c=$((c + $(pss_kb "$q"))); n=$((n + 1)); done
    fi
    printf '%-34s %2d %12d %12d %14s\n' "$label" "$i" "$p" "$r" "$([ "$with" = 1 ] && echo "$c ($n procs)" || echo -)"
    echo "$p" >> "$T/pss"; echo "$r" >> "$T/rss"; echo "$c" >> "$T/cpss"
    [ "$i" -lt "$samples" ] && sleep 1
  done
  eval "${3}_pss=$(median < "$T/pss") ${3}_rss=$(median < "$T/rss") ${3}_cpss=$(median < "$T/cpss")"
}

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(uname -sr)"
echo "build:   $(grep -m1 '^CMAKE_BUILD_TYPE' "$build/CMakeCache.txt" 2>/dev/null | cut -d= -f2 || echo unknown) ($build)"
echo "date:    $(date -u +%Y-%m-%dT%H:%MZ), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo

mkdir -p "$T/recipes"
merges=(); removes=()
for i in $(seq "$count"); do
  name=bench.Sleep$i
  cat > "$T/recipes/$name-1.0.0.yaml" <<YAML
RecipeFormatVersion: '2020-01-25'
ComponentName: $name
ComponentVersion: '1.0.0'
ComponentDescription: components_pss.sh component
Manifests:
  - Platform: {os: linux}
    Lifecycle:
      Run: exec sleep 3600
YAML
  merges+=(--merge "$name=1.0.0"); removes+=(--remove "$name")
done

"$canopyd" --root "$root" --foreground > "$T/canopyd.out" 2>&1 &
PID=$!
for _ in $(seq 500); do "$cli" --root "$root" status > /dev/null 2>&1 && break; sleep 0.02; done
"$cli" --root "$root" status > /dev/null 2>&1 || { echo "canopyd did not become ready:" >&2; cat "$T/canopyd.out" >&2; exit 1; }

printf '%-34s %2s %12s %12s %14s\n' state n "canopyd PSS" "canopyd RSS" "components PSS"
printf '%-34s %2s %12s %12s %14s\n' "" "" kB kB "kB (sum)"
settle
sample "idle, 0 components" 0 idle

"$cli" --root "$root" deployment create --recipeDir "$T/recipes" "${merges[@]}" --wait > /dev/null 2> "$T/create.err" \
  || { echo "deployment failed:" >&2; cat "$T/create.err" >&2; exit 1; }
settle
sample "$count components RUNNING" 1 running

"$cli" --root "$root" deployment create "${removes[@]}" --wait > /dev/null 2> "$T/remove.err" \
  || { echo "removal failed:" >&2; cat "$T/remove.err" >&2; exit 1; }
settle
sample "after removing them" 0 removed

echo
echo "medians:"
printf '  %-40s %6d kB (%s), RSS %d kB\n' "canopyd PSS, idle with 0 components:" "$idle_pss" "$(mib "$idle_pss")" "$idle_rss"
printf '  %-40s %6d kB (%s), RSS %d kB; +%d kB, %d kB per component\n' "canopyd PSS, $count components running:" \
  "$running_pss" "$(mib "$running_pss")" "$running_rss" $((running_pss - idle_pss)) $(((running_pss - idle_pss) / count))
printf '  %-40s %6d kB (%s), RSS %d kB\n' "canopyd PSS, after removing them:" "$removed_pss" "$(mib "$removed_pss")" "$removed_rss"
printf '  %-40s %6d kB (%s, %d kB each; identical sleep processes share their pages)\n' \
  "the components' own processes, summed:" "$running_cpss" "$(mib "$running_cpss")" $((running_cpss / count))
echo "  (the last figure is the components' memory, NOT canopyd's)"
