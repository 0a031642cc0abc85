#!/usr/bin/env bash
# Local broker -> cloud bridges side by side, one run, same machine, same payload (QoS 1, 256 B
# with sequence number and send time), same pipelined publisher (libmosquitto, WINDOW unacked by
# the local broker), same TLS cloud Mosquitto (require_certificate), same cloud-side subscriber:
#   (a) canopy:    publisher -> local Mosquitto A -> canopyd canopy.MqttBridge -> SQLite spool
#                  (durability full) -> TLS -> cloud -> subscriber;
#   (b) mosquitto: publisher -> local Mosquitto B with `connection cloud` (topic bench/# out 1,
#                  TLS client cert, try_private false, cleansession false) -> cloud -> subscriber.
# Both local brokers: persistence false, set_tcp_nodelay, max_inflight_messages 100 (B: the
# bridge's in-flight window to the cloud, like canopyd's mqtt.maxInflight 100; A: 1000, canopyd
# acks each message only after the spool commit), max_queued_messages 1000000 (so that neither
# drops in a burst; Mosquitto's default 1000 drops, see bridge_outage.sh).
#   bench/bridge_compare.sh [BUILD_DIR] [N] [WINDOW] [RATE]
# RATE (msg/s, default 0 = unpaced): with 0 the publisher outruns the slower bridge and latency
# includes the backlog; a RATE below both bridges' capacity gives the path latency.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build-release}
N=${2:-50000}
WINDOW=${3:-100}
RATE=${4:-0}
BENCH=$BUILD/bench/bridge_bench
T=$(mktemp -d /tmp/canopy-bridge-cmp-XXXXXX)
case "$T" in /tmp/canopy-bridge-cmp-*) ;; *) echo "bridge_compare.sh: mktemp failed" >&2; exit 1 ;; esac
. bench/cloud_lib.sh
. bench/bridge_lib.sh
for b in "$CANOPYD" "$CLI" "$BENCH"; do
  [ -x "$b" ] || { echo "bridge_compare.sh: $b is missing (build canopyd canopy_cli bridge_bench in $BUILD)" >&2; exit 2; }
done
cleanup() {
  cloud_cleanup; bridge_cleanup
  case "$T" in /tmp/canopy-bridge-cmp-*) [ -n "${KEEP:-}" ] && echo "kept $T" >&2 || rm -rf "$T" ;; esac
}
trap cleanup EXIT

make_pki
CLOUD=$(free_port); start_broker "$CLOUD"
PA=$(free_port); start_local canopy-local "$PA" 1000000 1000; PID_A=$LAST_PID
PB=$(free_port); start_local mosq-edge "$PB" 1000000 100 "127.0.0.1:$CLOUD"; PID_B=$LAST_PID
canopy_bridge_config "$CLOUD" "$PA"
start_canopyd
wait_cloud connected 30
wait_local_bridge 30
wait_bridge mosq-edge 30
echo "== local broker -> cloud bridge: N=$N, QoS 1, 256 B, publisher window $WINDOW; cloud 127.0.0.1:$CLOUD (TLS, require_certificate); canopy local broker :$PA, mosquitto edge :$PB =="
# CPU time (user + system, clock ticks) of a process so far.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# Per thread of canopyd (named spool, cloud-link; the main thread runs IPC and the bridge's
# local MQTT client), as "name ticks" lines.
thread_ticks() { for t in /proc/"$1"/task/*; do awk '{ sub(/^[0-9]+ \(/, ""); n = $0; sub(/\).*/, "", n); sub(/^[^)]*\) /, ""); print n, $12 + $13 }' "$t/stat"; done | sort; }
A0=$(ticks "$PID_A"); C0=$(ticks "$CANOPYD_PID"); B0=$(ticks "$PID_B"); TT0=$(thread_ticks "$CANOPYD_PID")
echo "+ $BENCH compare $CLOUD $T/pki $N $WINDOW $RATE canopy=$PA mosquitto=$PB"
"$BENCH" compare "$CLOUD" "$T/pki" "$N" "$WINDOW" "$RATE" "canopy=$PA" "mosquitto=$PB"
# Each candidate's own processes work only during its own run: their CPU per message is what
# the bridging costs (the publisher, the cloud broker and the subscriber are shared).
HZ=$(getconf CLK_TCK)
us_per_msg() { awk -v t="$1" -v hz="$HZ" -v n="$N" 'BEGIN { printf "%.1f", t * 1e6 / hz / n }'; }
A1=$(ticks "$PID_A"); C1=$(ticks "$CANOPYD_PID"); B1=$(ticks "$PID_B")
echo "CPU per message: canopy = canopyd $(us_per_msg $((C1 - C0))) us + its local broker $(us_per_msg $((A1 - A0))) us; mosquitto = its bridging broker $(us_per_msg $((B1 - B0))) us (clock ticks of $HZ Hz)"
TT1=$(thread_ticks "$CANOPYD_PID")
echo "canopyd per thread: $(join <(echo "$TT0" | awk '{a[$1] += $2} END {for (k in a) print k, a[k]}' | sort) \
  <(echo "$TT1" | awk '{a[$1] += $2} END {for (k in a) print k, a[k]}' | sort) |
  while read -r name t0 t1; do [ "$t1" -gt "$t0" ] && printf '%s %s us, ' "$name" "$(us_per_msg $((t1 - t0)))"; done | sed 's/, $//')"
echo "canopyd: $(bridge_status)"
echo "canopyd VmHWM $(awk '/VmHWM/{print $2, $3}' /proc/$CANOPYD_PID/status)"
grep -h "dropped" "$T"/*/mosquitto.log "$T/broker/mosquitto.log" 2>/dev/null | sed 's/^/broker log: /' || true
