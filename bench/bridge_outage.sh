#!/usr/bin/env bash
# Cloud-hop outage, local broker -> cloud bridges side by side, one run. Each candidate reaches the
# TLS cloud Mosquitto through its own cuttable TCP hop (socat; cut = kill the listener and its
# forked children by PID). Per candidate: connect everything with the hop up, cut the hop, publish
# RATE msg/s for SECONDS to the candidate's local broker (QoS 1, 256 B, libmosquitto), restore the
# hop, wait for the drain at a cloud-side subscriber (until all arrived, or 20 s without a new
# one). Reports published, delivered, lost (missing sequence numbers), duplicates, drain time.
#   canopy:          local Mosquitto (max_inflight_messages 1000, max_queued_messages 1000000) ->
#                    canopyd canopy.MqttBridge -> spool (durability full) -> hop -> cloud;
#                    cloud reconnect backoff 100 ms .. 2 s, maxInflight 100.
#   mosquitto-q1000: edge Mosquitto with `connection cloud` via the hop, max_queued_messages
#                    DEFAULT (1000), max_inflight_messages 100, restart_timeout 1.
#   mosquitto-qbig:  the same with max_queued_messages 1000000 (skip with NO_QBIG=1).
#   bench/bridge_outage.sh [BUILD_DIR] [SECONDS] [RATE]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build-release}
SECS=${2:-60}
RATE=${3:-2000}
BENCH=$BUILD/bench/bridge_bench
T=$(mktemp -d /tmp/canopy-bridge-out-XXXXXX)
case "$T" in /tmp/canopy-bridge-out-*) ;; *) echo "bridge_outage.sh: mktemp failed" >&2; exit 1 ;; esac
. bench/cloud_lib.sh
. bench/bridge_lib.sh
for b in "$CANOPYD" "$CLI" "$BENCH"; do
  [ -x "$b" ] || { echo "bridge_outage.sh: $b is missing (build canopyd canopy_cli bridge_bench in $BUILD)" >&2; exit 2; }
done
BENCH_PID=""
cleanup() {
  stop_pid "$BENCH_PID"; cloud_cleanup; bridge_cleanup
  case "$T" in /tmp/canopy-bridge-out-*) [ -n "${KEEP:-}" ] && echo "kept $T" >&2 || rm -rf "$T" ;; esac
}
trap cleanup EXIT

# outage LABEL LOCAL_PORT HOP_PORT: runs the bench with the hop already cut; restores it when the
# bench has published (after running the hook `before_restore`).
outage() {
  local label=$1 local_port=$2 hop=$3 d=$T/run-$1
  mkdir -p "$d"
  echo "+ $BENCH outage $CLOUD $T/pki $local_port $label $SECS $RATE $d"
  "$BENCH" outage "$CLOUD" "$T/pki" "$local_port" "$label" "$SECS" "$RATE" "$d" &
  BENCH_PID=$!
  until [ -e "$d/published" ]; do
    kill -0 "$BENCH_PID" 2>/dev/null || { echo "bridge_bench exited early" >&2; exit 1; }
    sleep 0.05
  done
  before_restore
  hop_up "$hop" "$CLOUD"
  local t=${EPOCHREALTIME/[.,]/}; echo "${t}000" > "$d/restored.tmp"; mv "$d/restored.tmp" "$d/restored"
  local rc=0; wait "$BENCH_PID" || rc=$?
  BENCH_PID=""
  [ "$rc" -eq 0 ] || { echo "bridge_bench outage failed ($rc)" >&2; exit 1; }
}

make_pki
CLOUD=$(free_port); start_broker "$CLOUD"
echo "== cloud-hop outage: $SECS s at $RATE msg/s = $((SECS * RATE)) messages, QoS 1, 256 B, hop cut the whole time; cloud 127.0.0.1:$CLOUD (TLS) =="

# (a) canopy
HOP=$(free_port); hop_up "$HOP" "$CLOUD"
PA=$(free_port); start_local canopy-local "$PA" 1000000 1000
canopy_bridge_config "$HOP" "$PA"
start_canopyd
wait_cloud connected 30
wait_local_bridge 30
hop_cut
until=$(( $(now_ms) + 15000 ))
while [ "$(status_json | jq -r '.cloud.state')" = connected ]; do
  [ "$(now_ms)" -lt "$until" ] || { echo "canopyd still connected 15 s after the cut" >&2; exit 1; }
  sleep 0.1
done
echo "canopy: hop cut, cloud.state=$(status_json | jq -r '.cloud.state')"
before_restore() {
  echo "canopyd before the restore: $(bridge_status)"
  echo "canopyd spool files: $(du -cb "$T"/root/spool/spool.db* | awk 'END{printf "%.1f MiB", $1/1048576}'), VmHWM $(awk '/VmHWM/{print $2, $3}' /proc/$CANOPYD_PID/status)"
}
outage canopy "$PA" "$HOP"
echo "canopyd after the drain: $(bridge_status)"
stop_pid "$CANOPYD_PID"; CANOPYD_PID=""
hop_cut

# (b) Mosquitto's bridge, default max_queued_messages, then raised
mosq_outage() {
  local name=$1 queued=$2
  HOP=$(free_port); hop_up "$HOP" "$CLOUD"
  PB=$(free_port); start_local "$name" "$PB" "$queued" 100 "127.0.0.1:$HOP"
  local pid=$LAST_PID
  wait_bridge "$name" 30
  hop_cut
  sleep 1
  echo "$name: hop cut (max_queued_messages $queued)"
  before_restore() {
    # $SYS values are published only when they change: the first message is the retained
    # (possibly stale) value, a second one comes with the next sys_interval (10 s) if it changed
    local v
    v=$(timeout 15 mosquitto_sub -p "$PB" -t '$SYS/broker/publish/messages/dropped' -C 2 -W 12 2>/dev/null | tail -n 1 || true)
    echo "$name \$SYS/broker/publish/messages/dropped before the restore: ${v:-none published} (read while the hop stays cut, <= 12 s)"
  }
  outage "$name" "$PB" "$HOP"
  echo "$name log: $(grep -c 'Connecting bridge' "$T/$name/mosquitto.log") bridge connect attempts; $(grep -h 'dropped' "$T/$name/mosquitto.log" | head -n 2 | tr '\n' ' ')"
  hop_cut
  stop_pid "$pid"
}
mosq_outage mosquitto-q1000 1000
[ -n "${NO_QBIG:-}" ] || mosq_outage mosquitto-qbig 1000000
