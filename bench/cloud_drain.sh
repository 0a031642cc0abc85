#!/usr/bin/env bash
# Backlog drain of the cloud link, one run:
#   1. canopyd starts with its cloud endpoint on a free port where nothing listens yet
#      (mqtt.reconnectBaseMs 100, reconnectMaxMs 2000, maxPublishRate 0, maxInflight 100;
#      spool durability full, maxSizeInBytes 2 GiB, maxMessages 2,000,000);
#   2. M PublishToIoTCore calls (QoS 1, 256 B) through IPC, 256 outstanding: the fill rate, then
#      the spool's files on disk (spool.db + -wal + -shm);
#   3. the TLS "cloud" broker starts on that port, right after one of canopyd's failed attempts
#      whose next attempt is at least 700 ms away (from `canopy status --json`), so that the
#      cloud-side subscriber is connected and subscribed before canopyd reconnects;
#   4. time from the broker's start until the subscriber has all M distinct sequence numbers,
#      and the spool's queued count afterwards.
#   bench/cloud_drain.sh [BUILD_DIR] [M]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build-release}
M=${2:-1000000}
BENCH=$BUILD/bench/cloud_e2e_bench
T=$(mktemp -d /tmp/canopy-cloud-drain-XXXXXX)
case "$T" in /tmp/canopy-cloud-drain-*) ;; *) echo "cloud_drain.sh: mktemp failed" >&2; exit 1 ;; esac
. bench/cloud_lib.sh
for b in "$CANOPYD" "$CLI" "$BENCH"; do
  [ -x "$b" ] || { echo "cloud_drain.sh: $b is missing (build canopyd canopy_cli cloud_e2e_bench in $BUILD)" >&2; exit 2; }
done
SUB_PID=""
cleanup() { stop_pid "$SUB_PID"; cloud_cleanup; rm -rf "$T"; }
trap cleanup EXIT

make_pki
PORT=$(free_port)
write_config "$PORT" "$T/pki/client.key" "        maxPublishRate: 0
        maxInflight: 100
        reconnectBaseMs: 100
        reconnectMaxMs: 2000" "        durability: full
        maxSizeInBytes: 2147483648
        maxMessages: 2000000"
start_canopyd
echo "== cloud link backlog drain: M=$M, QoS 1, 256 B; cloud 127.0.0.1:$PORT not listening yet =="
echo "+ $BENCH fill $T/root/ipc.socket <token> $M 256"
"$BENCH" fill "$T/root/ipc.socket" "$TOKEN" "$M" 256
queued=$(status_json | jq -r '.spool.queued')
echo "spool after the fill: queued=$queued, cloud.state=$(status_json | jq -r '.cloud.state')"
echo "spool files before the drain: $(du -cb "$T"/root/spool/spool.db* | awk 'END{printf "%.1f MiB", $1/1048576}') ($(cd "$T/root/spool" && ls -l spool.db* | awk '{printf "%s %s B; ", $9, $5}'))"

# Wait for a moment when canopyd's next connection attempt is >= 700 ms away (60 s deadline).
until=$(( $(now_ms) + 60000 ))
while :; do
  next=$(status_json | jq -r '.cloud.nextAttemptUnixMs // 0')
  [ "$next" -gt 0 ] && [ $((next - $(now_ms))) -ge 700 ] && break
  [ "$(now_ms)" -lt "$until" ] || { echo "no reconnect gap of 700 ms seen in 60 s" >&2; status_json >&2; exit 1; }
  sleep 0.02
done
echo "broker starts $((next - $(now_ms))) ms before canopyd's next attempt"
t=${EPOCHREALTIME/[.,]/}; echo "${t}000" > "$T/broker_start"
launch_broker "$PORT"
"$BENCH" drain "$PORT" "$T/pki" "$M" "$T/broker_start" 1800 &
SUB_PID=$!
echo "+ $BENCH drain $PORT $T/pki $M $T/broker_start 1800"
rc=0; wait "$SUB_PID" || rc=$?
SUB_PID=""
echo "spool after the drain: $(status_json | jq -c '.spool | {queued, delivered, resent, duplicates_suspected}'), cloud: $(status_json | jq -c '.cloud | {state, connects, disconnects}')"
echo "canopyd VmHWM $(awk '/VmHWM/{print $2, $3}' /proc/$CANOPYD_PID/status)"
exit "$rc"
