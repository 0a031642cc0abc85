#!/usr/bin/env bash
# Local pub/sub, one publisher to one subscriber: canopyd's IPC (C++ client) next to
# Mosquitto QoS 0 (libmosquitto), measured in the same run with the same payloads.
#   bench/ipc_pubsub.sh [BUILD_DIR] [COUNT]
# Use a Release build: BUILD_TYPE=Release BUILD_DIR=build-release ./scripts/build.sh
set -euo pipefail
BUILD=${1:-build-release}
COUNT=${2:-200000}
CANOPYD=$BUILD/src/main/canopyd
BENCH=$BUILD/bench/ipc_pubsub_bench
[ -x "$CANOPYD" ] && [ -x "$BENCH" ] || { echo "build $BUILD first (canopyd, ipc_pubsub_bench)" >&2; exit 1; }

T=$(mktemp -d /tmp/canopy-bench-XXXXXX)
CANOPYD_PID=""; MOSQ_PID=""
cleanup() {
  [ -n "$CANOPYD_PID" ] && kill "$CANOPYD_PID" 2>/dev/null && wait "$CANOPYD_PID" 2>/dev/null || true
  [ -n "$MOSQ_PID" ] && kill "$MOSQ_PID" 2>/dev/null && wait "$MOSQ_PID" 2>/dev/null || true
  rm -rf "$T"
}
trap cleanup EXIT

PUB=bench-pub-token-0123456789
SUB=bench-sub-token-0123456789
cat > "$T/config.yaml" <<YAML
services:
  canopy.Nucleus:
    configuration:
      logging: {level: warn}
      ipc:
        staticIdentities: {bench.Pub: $PUB, bench.Sub: $SUB}
        # The publisher may run 1000 messages ahead: keep 4 KiB messages from hitting the
        # slow-reader limit (that would measure drops, not throughput).
        maxQueuedBytesPerConnection: 67108864
  bench.Pub:
    configuration:
      accessControl:
        aws.greengrass.ipc.pubsub:
          p: {operations: ["aws.greengrass#PublishToTopic"], resources: ["bench/*"]}
  bench.Sub:
    configuration:
      accessControl:
        aws.greengrass.ipc.pubsub:
          s: {operations: ["aws.greengrass#SubscribeToTopic"], resources: ["bench/*"]}
YAML
"$CANOPYD" --root "$T/root" --config "$T/config.yaml" --foreground > "$T/canopyd.log" 2>&1 &
CANOPYD_PID=$!
for _ in $(seq 200); do [ -S "$T/root/ipc.socket" ] && break; sleep 0.05; done

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages 100000\n' "$PORT" > "$T/mosquitto.conf"
/usr/sbin/mosquitto -c "$T/mosquitto.conf" > "$T/mosquitto.log" 2>&1 &
MOSQ_PID=$!
for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.05; done

echo "== throughput, $COUNT messages, publisher at most 1000 ahead of the subscriber =="
for size in 64 4096; do
  "$BENCH" canopy "$T/root/ipc.socket" "$PUB" "$SUB" "$size" "$COUNT"
  "$BENCH" mosquitto "$PORT" "$size" "$COUNT"
done
echo "== latency at 10,000 msg/s for 5 s =="
for size in 64 4096; do
  "$BENCH" canopy "$T/root/ipc.socket" "$PUB" "$SUB" "$size" 50000 10000
  "$BENCH" mosquitto "$PORT" "$size" 50000 10000
done
echo "canopyd RSS after the run: $(awk '/VmRSS/{print $2, $3}' /proc/$CANOPYD_PID/status)"
