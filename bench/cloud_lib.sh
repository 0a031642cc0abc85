# Shared by bench/cloud_e2e.sh, bench/cloud_drain.sh and bench/tls_connect.sh (sourced, not run).
# Expects: T (a folder from mktemp), BUILD (the build folder). Provides the test PKI, a TLS
# Mosquitto "cloud" with require_certificate, canopyd configured against it, and status polling.
# Every process started here is recorded by PID and stopped by cloud_cleanup.

CANOPYD=$BUILD/src/main/canopyd
CLI=$BUILD/src/cli/canopy
TOKEN=bench-pub-token-0123456789abcdef
CANOPYD_PID="" MOSQ_PID=""

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
now_ms() { local t=${EPOCHREALTIME/[.,]/}; echo $((t / 1000)); }

# make_pki: the test PKI in $T/pki, and the broker's copy in $T/broker (mosquitto, started as
# root, drops to user mosquitto before it opens its files: the folder is its own, $T is 0711).
make_pki() {
  chmod 0711 "$T"
  sh tests/pki/gen.sh "$T/pki" > /dev/null
  mkdir -p "$T/broker"
  cp "$T/pki/ca.crt" "$T/pki/server.crt" "$T/pki/server.key" "$T/broker/"
  chown -R mosquitto: "$T/broker"
  chmod 0700 "$T/broker"
}

# launch_broker PORT: starts the TLS "cloud" on 127.0.0.1:PORT in the background (no wait).
launch_broker() {
  local port=$1
  cat > "$T/broker/mosquitto.conf" <<CONF
persistence false
set_tcp_nodelay true
max_queued_messages 0
# AWS IoT Core accepts 100 unacknowledged publishes per connection (MQTT 5 Receive Maximum);
# Mosquitto announces max_inflight_messages, 20 by default.
max_inflight_messages 100
log_dest file $T/broker/mosquitto.log
log_type error
log_type warning
log_type notice
listener $port 127.0.0.1
allow_anonymous true
cafile $T/broker/ca.crt
certfile $T/broker/server.crt
keyfile $T/broker/server.key
require_certificate true
CONF
  chown mosquitto: "$T/broker/mosquitto.conf"
  /usr/sbin/mosquitto -c "$T/broker/mosquitto.conf" > "$T/mosquitto.out" 2>&1 &
  MOSQ_PID=$!
}

# start_broker PORT: launch_broker, then waits until it accepts TCP (20 s deadline).
start_broker() {
  local port=$1
  launch_broker "$port"
  local until=$(( $(now_ms) + 20000 ))
  until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    kill -0 "$MOSQ_PID" 2>/dev/null || { echo "mosquitto exited:" >&2; cat "$T/mosquitto.out" "$T/broker/mosquitto.log" >&2; exit 1; }
    [ "$(now_ms)" -lt "$until" ] || { echo "mosquitto did not listen on $port within 20 s" >&2; exit 1; }
    sleep 0.005
  done
}

# write_config PORT KEY EXTRA_MQTT_YAML EXTRA_SPOOLER_YAML [LOG_LEVEL]: canopyd's configuration,
# as in tests/integration/cloud_fixture.hpp, for thing gw-bench and component bench.Pub.
write_config() {
  cat > "$T/config.yaml" <<YAML
system:
  thingName: gw-bench
  certificateFilePath: ${CERT:-$T/pki/client.crt}
  privateKeyPath: "$2"
  rootCaPath: $T/pki/ca.crt
services:
  canopy.Nucleus:
    configuration:
      logging: {level: ${5:-info}}
      iotDataEndpoint: "127.0.0.1"
      mqtt:
        port: $1
$3
      spooler:
$4
      ipc:
        staticIdentities:
          bench.Pub: $TOKEN
  bench.Pub:
    configuration:
      accessControl:
        aws.greengrass.ipc.mqttproxy:
          p1:
            operations: ['aws.greengrass#PublishToIoTCore']
            resources: ['tele/#']
YAML
}

start_canopyd() {
  ${CANOPYD_ENV:-} "$CANOPYD" --root "$T/root" --config "$T/config.yaml" --foreground > "$T/canopyd.out" 2>&1 &
  CANOPYD_PID=$!
  local until=$(( $(now_ms) + 20000 ))
  until [ -S "$T/root/ipc.socket" ] && "$CLI" --root "$T/root" status > /dev/null 2>&1; do
    kill -0 "$CANOPYD_PID" 2>/dev/null || { echo "canopyd exited:" >&2; cat "$T/canopyd.out" >&2; exit 1; }
    [ "$(now_ms)" -lt "$until" ] || { echo "canopyd did not come up within 20 s" >&2; exit 1; }
    sleep 0.02
  done
}

status_json() { "$CLI" --root "$T/root" status --json 2>/dev/null | sed -n '/^{/,$p'; }

# wait_cloud STATE SECONDS: polls `canopy status --json` until cloud.state is STATE.
wait_cloud() {
  local until=$(( $(now_ms) + $2 * 1000 ))
  until [ "$(status_json | jq -r '.cloud.state' 2>/dev/null)" = "$1" ]; do
    [ "$(now_ms)" -lt "$until" ] || { echo "cloud.state is not $1 after $2 s:" >&2; status_json >&2; exit 1; }
    sleep 0.1
  done
}

stop_pid() {  # stop_pid PID: SIGTERM, 20 s, then SIGKILL
  local pid=$1 i
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null || return 0
  for i in $(seq 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

cloud_cleanup() {
  stop_pid "$CANOPYD_PID"; CANOPYD_PID=""
  stop_pid "$MOSQ_PID"; MOSQ_PID=""
}
