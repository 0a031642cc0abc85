# Shared by bench/bridge_compare.sh and bench/bridge_outage.sh (sourced after cloud_lib.sh, not
# run). Expects T (from mktemp) and the test PKI (make_pki). Provides: plain local Mosquitto
# brokers (canopyd's local bus, or an edge broker with a `connection` bridge to the TLS cloud),
# canopyd configured with canopy.MqttBridge against a local broker, a cuttable socat hop, and
# PID-based cleanup of all of it.

EXTRA_PIDS=()   # local brokers and socat listeners, stopped by bridge_cleanup

# wait_port PORT PID WHAT: until 127.0.0.1:PORT accepts TCP (20 s), while PID lives.
wait_port() {
  local until=$(( $(now_ms) + 20000 ))
  until (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
    kill -0 "$2" 2>/dev/null || { echo "$3 exited" >&2; return 1; }
    [ "$(now_ms)" -lt "$until" ] || { echo "$3 did not listen on $1 within 20 s" >&2; return 1; }
    sleep 0.005
  done
}

# start_local NAME PORT MAX_QUEUED MAX_INFLIGHT [CLOUD_ADDR]: a plain-TCP Mosquitto on
# 127.0.0.1:PORT in $T/NAME (owned by user mosquitto). With CLOUD_ADDR (host:port) it bridges
# bench/# out at QoS 1 to the TLS cloud with the test PKI's client certificate. Sets LAST_PID.
start_local() {
  local name=$1 port=$2 queued=$3 inflight=$4 cloud=${5:-}
  local d=$T/$name
  mkdir -p "$d"
  cp "$T/pki/ca.crt" "$T/pki/client.crt" "$T/pki/client.key" "$d/"
  {
    echo "persistence false"
    echo "set_tcp_nodelay true"
    echo "max_inflight_messages $inflight"
    echo "max_queued_messages $queued"
    echo "log_dest file $d/mosquitto.log"
    echo "log_type error"
    echo "log_type warning"
    echo "log_type notice"
    echo "listener $port 127.0.0.1"
    echo "allow_anonymous true"
    if [ -n "$cloud" ]; then
      echo "connection cloud"
      echo "address $cloud"
      echo "topic bench/# out 1"
      echo "cleansession false"
      echo "remote_clientid edge-bridge-$name"
      echo "try_private false"
      echo "notifications false"
      echo "restart_timeout 1"
      echo "bridge_cafile $d/ca.crt"
      echo "bridge_certfile $d/client.crt"
      echo "bridge_keyfile $d/client.key"
    fi
  } > "$d/mosquitto.conf"
  chown -R mosquitto: "$d"
  chmod 0700 "$d"
  /usr/sbin/mosquitto -c "$d/mosquitto.conf" > "$d/mosquitto.out" 2>&1 &
  LAST_PID=$!
  EXTRA_PIDS+=("$LAST_PID")
  wait_port "$port" "$LAST_PID" "mosquitto $name" || { cat "$d/mosquitto.out" "$d/mosquitto.log" >&2; exit 1; }
}

# wait_bridge NAME SECONDS: until the cloud broker's log shows edge-bridge-NAME connected
# (COUNT-th time, default 1).
wait_bridge() {
  local until=$(( $(now_ms) + $2 * 1000 )) want=${3:-1}
  until [ "$(grep -c "as edge-bridge-$1 " "$T/broker/mosquitto.log" 2>/dev/null)" -ge "$want" ]; do
    [ "$(now_ms)" -lt "$until" ] || { echo "bridge $1 not connected to the cloud after $2 s:" >&2; tail -n 5 "$T/$1/mosquitto.log" >&2; exit 1; }
    sleep 0.05
  done
}

# canopy_bridge_config CLOUD_PORT LOCAL_PORT: canopyd's configuration (write_config of
# cloud_lib.sh) plus canopy.MqttBridge (bench/# LocalMqtt -> IotCore from mqtt://127.0.0.1:LOCAL_PORT)
# with its managed broker disabled. Cloud: maxPublishRate 0, maxInflight 100, reconnect backoff
# 100 ms .. 2 s; spool durability full (env SPOOL_DURABILITY), group commit interval 2 ms (env
# SPOOL_GROUP_COMMIT_MS, canopyd's default).
canopy_bridge_config() {
  write_config "$1" "$T/pki/client.key" "        maxPublishRate: 0
        maxInflight: 100
        reconnectBaseMs: 100
        reconnectMaxMs: 2000" "        durability: ${SPOOL_DURABILITY:-full}
        groupCommitIntervalMs: ${SPOOL_GROUP_COMMIT_MS:-2}"
  cat >> "$T/config.yaml" <<YAML
  canopy.LocalBroker:
    configuration:
      enabled: false
  canopy.MqttBridge:
    configuration:
      brokerUri: "mqtt://127.0.0.1:$2"
      mqttTopicMapping:
        toCloud: {topic: "bench/#", source: LocalMqtt, target: IotCore}
YAML
}

# wait_local_bridge SECONDS: until canopyd's bridge is connected to the local broker.
wait_local_bridge() {
  local until=$(( $(now_ms) + $1 * 1000 ))
  until [ "$(status_json | jq -r '.bridge.localBroker.state' 2>/dev/null)" = connected ]; do
    [ "$(now_ms)" -lt "$until" ] || { echo "bridge.localBroker.state is not connected after $1 s:" >&2; status_json | jq -c .bridge >&2; exit 1; }
    sleep 0.1
  done
  sleep 0.5   # the SUBACK
}

bridge_status() { status_json | jq -c '{cloud: .cloud | {state, connects, disconnects}, bridge: {mappings: [.bridge.mappings[] | {name, received, forwarded, failed}], localBroker: .bridge.localBroker | {state, connects, received, acknowledged}}, spool: .spool}'; }

# The cuttable "WAN": socat LISTEN_PORT -> TARGET_PORT. Cutting kills the listener AND its forked
# children (one per connection), by PID.
SOCAT_PID=""
hop_up() {
  socat "TCP-LISTEN:$1,fork,reuseaddr,bind=127.0.0.1" "TCP:127.0.0.1:$2" > /dev/null 2>&1 &
  SOCAT_PID=$!
  wait_port "$1" "$SOCAT_PID" socat || exit 1
}
hop_cut() {
  [ -n "$SOCAT_PID" ] || return 0
  local kids
  kids=$(pgrep -P "$SOCAT_PID" || true)
  kill "$SOCAT_PID" $kids 2>/dev/null || true
  wait "$SOCAT_PID" 2>/dev/null || true
  SOCAT_PID=""
}

bridge_cleanup() {
  hop_cut
  local p
  for p in "${EXTRA_PIDS[@]}"; do stop_pid "$p"; done
  EXTRA_PIDS=()
}
