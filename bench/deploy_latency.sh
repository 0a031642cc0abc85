#!/usr/bin/env bash
# bench/deploy_latency.sh [BUILD_DIR] [RUNS] — local deployment latency of 1 and 20 trivial
# components (`Run: exec sleep 3600`), measured from the outside and from canopyd's log.
#
#   BUILD_DIR   a build with canopyd and canopy (default build-release)
#   RUNS        runs per component count (default 10)
#   COUNTS="1 20"      the component counts
#   SETTLE_MS=500      idle time after canopyd is ready, before the deployment
#
# Every run uses a fresh root and a fresh canopyd (so every deployment is the first one on
# that root), then removes the components with `deployment create --remove ... --wait` and
# stops canopyd. Per run it prints:
#   cli      exec of `canopy deployment create --recipeDir D --merge ... --wait` -> its exit,
#            timed by bash ($EPOCHREALTIME read just before and after the command, no
#            subshell; the fork/exec floor of that is printed first). The CLI polls the
#            status every 100 ms, so this figure moves in steps of 100 ms.
#   server   canopyd's log: `deployment=ID queued` -> `deployment=ID succeeded` (ms timestamps),
#            split into queued -> started, started -> first component state, -> last RUNNING,
#            -> succeeded.
#   cpu      CPU time canopyd used (all threads, /proc/PID/task/*/schedstat) during the create.
#   fsync    one atomic file write (write, fsync, rename, fsync of the folder) in the root just
#            before the deployment, median of 5: the disk's speed at that moment.
#   remove   the CLI figure for `--remove` of every component (stopping N processes) and the
#            server figure of that removal from the log.
# Then min/median/max of each. Builds nothing; needs the ggc_user account
# (scripts/setup.d/users.sh) because components run as that user.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$repo/build-release}
runs=${2:-10}
counts=${COUNTS:-1 20}
settle_ms=${SETTLE_MS:-500}
canopyd=$build/src/main/canopyd
cli=$build/src/cli/canopy
if [ ! -x "$canopyd" ] || [ ! -x "$cli" ]; then
  echo "deploy_latency.sh: build canopyd and canopy first: ninja -C $build canopyd canopy_cli" >&2
  exit 2
fi
id ggc_user >/dev/null 2>&1 || { echo "deploy_latency.sh: no ggc_user; run scripts/setup.d/users.sh" >&2; exit 2; }

T=$(mktemp -d /tmp/canopy-deploy-bench-XXXXXX)
case "$T" in /tmp/canopy-deploy-bench-*) ;; *) echo "deploy_latency.sh: mktemp failed" >&2; exit 1 ;; esac  # never rm -rf anything else
chmod 0755 "$T"  # components run as ggc_user: the root's parents must be traversable
PID=""
stop_canopyd() {
  if [ -n "$PID" ]; then
    kill "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
    PID=""
  fi
}
trap 'stop_canopyd; rm -rf "$T"' EXIT

ms_between() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.1f", (b-a)/1000}'; }

# Milliseconds of the day of a log line's `2026-11-30T08:34:04.559Z` timestamp.
log_ms() { awk '{split(substr($1,12,12),t,":"); printf "%d\n", (t[1]*3600+t[2]*60+t[3])*1000 + 0.5}'; }

# min/median/max of the numbers on stdin (median of an even count: mean of the middle two).
summary() {
  sort -g | awk '{v[NR]=$1} END{if(!NR){print "-"; exit}
    m = NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2; printf "%8.1f %8.1f %8.1f\n", v[1], m, v[NR]}'
}

# What canopyd pays per file it writes atomically (deployer.cpp write_atomic: tmp, fsync,
# rename, fsync of the folder), in folder $1, $2 times: one line of milliseconds each.
atomic_write_ms() {
  python3 - "$1" "$2" <<'PY'
import os, sys, time
d, n = sys.argv[1], int(sys.argv[2])
for _ in range(n):
    a = time.monotonic()
    fd = os.open(d + "/f.tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, b"x" * 300)
    os.fsync(fd)
    os.close(fd)
    os.rename(d + "/f.tmp", d + "/f")
    dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    os.fsync(dfd)
    os.close(dfd)
    print("%.2f" % ((time.monotonic() - a) * 1000))
os.unlink(d + "/f")
PY
}
# CPU time canopyd has used so far, all threads, in ns (/proc/PID/task/*/schedstat).
cpu_ns() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{s+=$1} END{printf "%d\n", s}'; }

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(uname -sr)"
echo "build:   $(grep -m1 '^CMAKE_BUILD_TYPE' "$build/CMakeCache.txt" 2>/dev/null | cut -d= -f2 || echo unknown) ($build)"
echo "fs:      $(df -T "$T" | awk 'NR==2{print $2, $1}') for the roots in $T"
echo "date:    $(date -u +%Y-%m-%dT%H:%MZ), load average $(cut -d' ' -f1-3 /proc/loadavg)"

# The floor of the CLI figure: bash's own fork/exec/wait around a program that does nothing.
for _ in $(seq 20); do a=${EPOCHREALTIME/[.,]/}; /bin/true; b=${EPOCHREALTIME/[.,]/}; ms_between "$a" "$b"; echo; done > "$T/floor"
echo "fork/exec floor of the timing (/bin/true, 20 runs; min median max ms): $(summary < "$T/floor")"
atomic_write_ms "$T" 50 > "$T/fsync"
echo "one atomic file write (write, fsync, rename, fsync dir; 50 runs; min median max ms): $(summary < "$T/fsync")"
echo "(on a shared virtual disk this can change tenfold from one minute to the next: each run"
echo " below re-measures it, median of 5, in its root just before its deployment: column fsync_ms)"
echo

for n in $counts; do
  rdir=$T/recipes-$n
  mkdir -p "$rdir"
  merges=()
  removes=()
  for i in $(seq "$n"); do
    name=bench.Sleep$i
    cat > "$rdir/$name-1.0.0.yaml" <<YAML
RecipeFormatVersion: '2020-01-25'
ComponentName: $name
ComponentVersion: '1.0.0'
ComponentDescription: deploy_latency.sh component
Manifests:
  - Platform: {os: linux}
    Lifecycle:
      Run: exec sleep 3600
YAML
    merges+=(--merge "$name=1.0.0")
    removes+=(--remove "$name")
  done

  printf '== %d component(s), %d runs, fresh root and canopyd each run ==\n' "$n" "$runs"
  printf '%4s %8s %9s   %8s %9s %8s %7s   %7s %8s   %9s %9s\n' run cli_ms server_ms q-\>start start-\>1st -\>allRUN -\>succ \
    cpu_ms fsync_ms remove_ms rm_server
  : > "$T/cli-$n"; : > "$T/server-$n"; : > "$T/remove-$n"; : > "$T/cpu-$n"; : > "$T/fs-$n"; : > "$T/rms-$n"
  : > "$T/qs-$n"; : > "$T/s1-$n"; : > "$T/1r-$n"; : > "$T/rs-$n"
  for run in $(seq "$runs"); do
    root=$T/root-$n-$run
    "$canopyd" --root "$root" --foreground > "$T/canopyd.out" 2>&1 &
    PID=$!
    ready=0
    for _ in $(seq 500); do
      if "$cli" --root "$root" status > /dev/null 2>&1; then ready=1; break; fi
      sleep 0.02
    done
    if [ "$ready" != 1 ]; then echo "canopyd did not become ready:" >&2; cat "$T/canopyd.out" >&2; exit 1; fi
    sleep "$(awk -v m="$settle_ms" 'BEGIN{print m/1000}')"
    fsync_ms=$(atomic_write_ms "$root" 5 | sort -g | sed -n 3p)

    c0=$(cpu_ns "$PID")
    a=${EPOCHREALTIME/[.,]/}
    "$cli" --root "$root" deployment create --recipeDir "$rdir" "${merges[@]}" --wait > "$T/create.out" 2> "$T/create.err" \
      || { echo "deployment failed:" >&2; cat "$T/create.out" "$T/create.err" >&2; exit 1; }
    b=${EPOCHREALTIME/[.,]/}
    c1=$(cpu_ns "$PID")
    cli_ms=$(ms_between "$a" "$b")
    cpu_ms=$(ms_between "$((c0 / 1000))" "$((c1 / 1000))")

    log=$root/logs/canopyd.log
    id=$(awk '/deployment=.* queued/{sub(/.*deployment=/,""); print $1; exit}' "$log")
    q=$(grep -m1 "deployment=$id queued" "$log" | log_ms)
    s=$(grep -m1 "deployment=$id started" "$log" | log_ms)
    f=$(grep -m1 'component=bench.Sleep.* state ' "$log" | log_ms)
    r=$(grep 'component=bench.Sleep.* state STARTING -> RUNNING' "$log" | tail -n1 | log_ms)
    e=$(grep -m1 "deployment=$id succeeded" "$log" | log_ms)
    server=$((e - q))

    a=${EPOCHREALTIME/[.,]/}
    "$cli" --root "$root" deployment create "${removes[@]}" --wait > "$T/remove.out" 2> "$T/remove.err" \
      || { echo "removal failed:" >&2; cat "$T/remove.out" "$T/remove.err" >&2; exit 1; }
    b=${EPOCHREALTIME/[.,]/}
    remove_ms=$(ms_between "$a" "$b")
    rid=$(awk '/deployment=.* queued/{sub(/.*deployment=/,""); id=$1} END{print id}' "$log")
    rm_server=$(( $(grep -m1 "deployment=$rid succeeded" "$log" | log_ms) - $(grep -m1 "deployment=$rid queued" "$log" | log_ms) ))
    stop_canopyd
    case "$root" in "$T"/root-*) rm -rf "$root" ;; esac

    printf '%4d %8s %9d   %8d %9d %8d %7d   %7s %8s   %9s %9d\n' "$run" "$cli_ms" "$server" $((s - q)) $((f - s)) $((r - f)) \
      $((e - r)) "$cpu_ms" "$fsync_ms" "$remove_ms" "$rm_server"
    echo "$cli_ms" >> "$T/cli-$n"; echo "$server" >> "$T/server-$n"; echo "$remove_ms" >> "$T/remove-$n"
    echo "$cpu_ms" >> "$T/cpu-$n"; echo "$rm_server" >> "$T/rms-$n"; echo "$fsync_ms" >> "$T/fs-$n"
    echo $((s - q)) >> "$T/qs-$n"; echo $((f - s)) >> "$T/s1-$n"; echo $((r - f)) >> "$T/1r-$n"; echo $((e - r)) >> "$T/rs-$n"
  done
  printf '\n%-48s %8s %8s %8s\n' "summary, $n component(s) (ms)" min median max
  printf '%-48s %s\n' "cli: exec -> exit of create --wait" "$(summary < "$T/cli-$n")"
  printf '%-48s %s\n' "server: queued -> succeeded (canopyd log)" "$(summary < "$T/server-$n")"
  printf '%-48s %s\n' "  queued -> started" "$(summary < "$T/qs-$n")"
  printf '%-48s %s\n' "  started -> first component state change" "$(summary < "$T/s1-$n")"
  printf '%-48s %s\n' "  first state change -> last RUNNING" "$(summary < "$T/1r-$n")"
  printf '%-48s %s\n' "  last RUNNING -> succeeded" "$(summary < "$T/rs-$n")"
  printf '%-48s %s\n' "canopyd CPU time during the create (all threads)" "$(summary < "$T/cpu-$n")"
  printf '%-48s %s\n' "one atomic file write just before (fsync_ms)" "$(summary < "$T/fs-$n")"
  printf '%-48s %s\n' "cli: exec -> exit of --remove (all) --wait" "$(summary < "$T/remove-$n")"
  printf '%-48s %s\n' "server: the removal, queued -> succeeded" "$(summary < "$T/rms-$n")"
  echo
done

cat <<'EOF'
Context, quoted and not measured here (../shared/notes/greengrass-semantics.md §13.1; no
Greengrass peer runs on this machine, and these are cloud deployments with downloads, not
local ones): a user reports that "a nucleus deployment takes about 2-3 minutes" on Greengrass
v2 (2.7.0, Yocto) against "10-20 seconds in greengrass version 1" (aws-greengrass-nucleus
issue #1356); Greengrass Lite's own benchmark report gives ~67 s for a cloud deployment on
x86_64. The goal for Canopy: under 200 ms for one component.
EOF
