#!/usr/bin/env bash
# Cloud link end to end, QoS 1, 256-byte payloads, one run:
#   (a) a component's PublishToIoTCore through canopyd's IPC -> spool -> cloud link (Paho over
#       Canopy's TLS) -> TLS Mosquitto "cloud" (require_certificate) -> a cloud-side subscriber;
#   (b) the peer: Paho C++ publishing the same messages straight to the same broker over TLS
#       (file key, same PKI), same window, same subscriber.
# Throughput at the subscriber, latency p50/p99 send -> receipt, missing and duplicates.
#   bench/cloud_e2e.sh [BUILD_DIR] [N] [WINDOW] [RATE]
# canopyd: mqtt.maxPublishRate 0 (unlimited), mqtt.maxInflight 100, spool defaults (durability full).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build-release}
N=${2:-20000}
WINDOW=${3:-64}
RATE=${4:-0}   # msgs/s; 0 = as fast as the window allows (then latency includes queueing)
BENCH=$BUILD/bench/cloud_e2e_bench
T=$(mktemp -d /tmp/canopy-cloud-bench-XXXXXX)
case "$T" in /tmp/canopy-cloud-bench-*) ;; *) echo "cloud_e2e.sh: mktemp failed" >&2; exit 1 ;; esac
. bench/cloud_lib.sh
for b in "$CANOPYD" "$CLI" "$BENCH"; do
  [ -x "$b" ] || { echo "cloud_e2e.sh: $b is missing (build canopyd canopy_cli cloud_e2e_bench in $BUILD)" >&2; exit 2; }
done
cleanup() { cloud_cleanup; [ -n "${SHOW_BROKER_LOG:-}" ] && tail -n 20 "$T/broker/mosquitto.log"; rm -rf "$T"; }
trap cleanup EXIT

make_pki
PORT=$(free_port)
start_broker "$PORT"
write_config "$PORT" "$T/pki/client.key" "        maxPublishRate: 0
        maxInflight: ${MAX_INFLIGHT:-100}" "        durability: full"
start_canopyd
wait_cloud connected 30
echo "== cloud link end to end: $N messages, QoS 1, 256 B, window $WINDOW; broker 127.0.0.1:$PORT (TLS, require_certificate) =="
echo "+ $BENCH e2e $T/root/ipc.socket <token> $PORT $T/pki $N $WINDOW $RATE"
"$BENCH" e2e "$T/root/ipc.socket" "$TOKEN" "$PORT" "$T/pki" "$N" "$WINDOW" "$RATE"
echo "canopyd: $(status_json | jq -c '{cloud: .cloud | {state, connects, disconnects, inflightLimit}, spool: .spool}')"
echo "canopyd VmRSS $(awk '/VmRSS/{print $2, $3}' /proc/$CANOPYD_PID/status), VmHWM $(awk '/VmHWM/{print $2, $3}' /proc/$CANOPYD_PID/status)"
