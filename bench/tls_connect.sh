#!/usr/bin/env bash
# TLS connect time of the cloud link, file key vs TPM key, one run:
#   tls_connect_bench loads canopy::trust::TlsIdentity (the SSL_CTX canopyd's link uses) for the
#   test PKI's file key and for a TPM key (persistent handle 0x81000001 in a software TPM: swtpm
#   + a private dbus-daemon + tpm2-abrmd, as tests/support/tpm.cpp does) and makes K fresh
#   TCP + TLS + MQTT CONNECT/CONNACK connections to the TLS Mosquitto "cloud" (require_certificate).
#   Cross-check: canopyd itself with logging.level debug, once per key kind; its link logs
#   "TLS ... established in X ms" (TCP connect done -> handshake done, one sample each).
#   bench/tls_connect.sh [BUILD_DIR] [K]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build-release}
K=${2:-20}
BENCH=$BUILD/bench/tls_connect_bench
T=$(mktemp -d /tmp/canopy-tls-bench-XXXXXX)
case "$T" in /tmp/canopy-tls-bench-*) ;; *) echo "tls_connect.sh: mktemp failed" >&2; exit 1 ;; esac
. bench/cloud_lib.sh
for b in "$CANOPYD" "$CLI" "$BENCH" /usr/bin/swtpm /usr/bin/swtpm_setup /usr/bin/dbus-daemon /usr/sbin/tpm2-abrmd /usr/bin/tpm2_createprimary; do
  [ -x "$b" ] || { echo "tls_connect.sh: $b is missing" >&2; exit 2; }
done
SWTPM_PID="" DBUS_PID="" ABRMD_PID=""
cleanup() {
  cloud_cleanup
  stop_pid "$ABRMD_PID"; stop_pid "$DBUS_PID"; stop_pid "$SWTPM_PID"
  rm -rf "$T"
}
trap cleanup EXIT

make_pki
PORT=$(free_port)
start_broker "$PORT"

# --- the software TPM (tests/support/tpm.cpp; notes tpm-and-tls.md §1) ----------------------
L=$T/tpm
mkdir -p "$L/tpmstate" "$L/conf" "$L/localca" "$L/keys"
cat > "$L/conf/swtpm-localca.conf" <<CONF
statedir = $L/localca
signingkey = $L/localca/signkey.pem
issuercert = $L/localca/issuercert.pem
certserial = $L/localca/certserial
CONF
printf -- '--platform-manufacturer Canopy-Bench\n--platform-version 2.1\n--platform-model swtpm\n' > "$L/conf/swtpm-localca.options"
cat > "$L/conf/swtpm_setup.conf" <<CONF
create_certs_tool = /usr/bin/swtpm_localca
create_certs_tool_config = $L/conf/swtpm-localca.conf
create_certs_tool_options = $L/conf/swtpm-localca.options
active_pcr_banks = sha256
CONF
XDG_CONFIG_HOME=$L/conf HOME=$L swtpm_setup --tpm2 --tpmstate "$L/tpmstate" --config "$L/conf/swtpm_setup.conf" \
  --createek --create-ek-cert --create-platform-cert --lock-nvram --overwrite > "$L/swtpm_setup.log" 2>&1 \
  || { cat "$L/swtpm_setup.log" >&2; exit 1; }
while :; do  # the swtpm TCTI takes the control port as server port + 1
  TPM_PORT=$(free_port)
  python3 -c "import socket,sys; s=socket.socket(); s.bind(('127.0.0.1',$TPM_PORT+1))" 2>/dev/null && break
done
swtpm socket --tpm2 --tpmstate dir="$L/tpmstate" --server type=tcp,port=$TPM_PORT,bindaddr=127.0.0.1 \
  --ctrl type=tcp,port=$((TPM_PORT + 1)),bindaddr=127.0.0.1 --flags not-need-init,startup-clear \
  --log file="$L/swtpm.log",level=1 > "$L/swtpm.out" 2>&1 &
SWTPM_PID=$!
cat > "$L/dbus.conf" <<CONF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path=$L/dbus.sock</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
CONF
dbus-daemon --config-file="$L/dbus.conf" --nofork --nopidfile > "$L/dbus.log" 2>&1 &
DBUS_PID=$!
export DBUS_SESSION_BUS_ADDRESS=unix:path=$L/dbus.sock TPM2TOOLS_TCTI=tabrmd:bus_type=session TPM2OPENSSL_TCTI=tabrmd:bus_type=session
until=$(( $(now_ms) + 20000 ))
until [ -S "$L/dbus.sock" ] && (exec 3<>"/dev/tcp/127.0.0.1/$TPM_PORT") 2>/dev/null; do
  [ "$(now_ms)" -lt "$until" ] || { echo "swtpm or dbus-daemon did not come up" >&2; cat "$L"/swtpm.* "$L/dbus.log" >&2; exit 1; }
  sleep 0.02
done
tpm2-abrmd --session --allow-root --tcti="swtpm:host=127.0.0.1,port=$TPM_PORT" > "$L/abrmd.log" 2>&1 &
ABRMD_PID=$!
until=$(( $(now_ms) + 30000 ))
until tpm2_getcap properties-fixed > /dev/null 2>&1; do
  [ "$(now_ms)" -lt "$until" ] || { echo "tpm2-abrmd did not become ready" >&2; cat "$L/abrmd.log" >&2; exit 1; }
  sleep 0.05
done
tpm2_createprimary -Q -C o -g sha256 -G ecc256:aes128cfb -c "$L/keys/srk.ctx" \
  -a "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|decrypt|noda"
tpm2_evictcontrol -Q -C o -c "$L/keys/srk.ctx" 0x81000000
tpm2_create -Q -C 0x81000000 -G ecc256:ecdsa-sha256 -u "$L/keys/device.pub" -r "$L/keys/device.priv" \
  -a "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign|noda"
tpm2_load -Q -C 0x81000000 -u "$L/keys/device.pub" -r "$L/keys/device.priv" -c "$L/keys/device.ctx"
tpm2_evictcontrol -Q -C o -c "$L/keys/device.ctx" 0x81000001
openssl req -provider tpm2 -provider default -new -key handle:0x81000001 -subj /CN=gw-bench-tpm -out "$L/tpm.csr"
printf 'basicConstraints = critical, CA:false\nkeyUsage = critical, digitalSignature\nextendedKeyUsage = clientAuth\nsubjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n' > "$L/client.ext"
openssl x509 -req -in "$L/tpm.csr" -CA "$T/pki/ca.crt" -CAkey "$T/pki/ca.key" -CAserial "$L/ca.srl" -CAcreateserial \
  -days 30 -sha256 -extfile "$L/client.ext" -out "$L/tpm.crt" 2> /dev/null

echo "== TLS connect to the TLS Mosquitto cloud on 127.0.0.1:$PORT (require_certificate), K=$K per key, P-256 keys =="
echo "+ $BENCH $PORT $T/pki/client.crt $T/pki/client.key $T/pki/ca.crt $K"
"$BENCH" "$PORT" "$T/pki/client.crt" "$T/pki/client.key" "$T/pki/ca.crt" "$K"
echo "+ $BENCH $PORT $L/tpm.crt handle:0x81000001 $T/pki/ca.crt $K tabrmd:bus_type=session"
"$BENCH" "$PORT" "$L/tpm.crt" handle:0x81000001 "$T/pki/ca.crt" "$K" tabrmd:bus_type=session

echo "== cross-check: canopyd's own first connect (logging.level debug) =="
for kind in file tpm; do
  if [ "$kind" = file ]; then CERT=$T/pki/client.crt key=$T/pki/client.key; else CERT=$L/tpm.crt key=handle:0x81000001; fi
  write_config "$PORT" "$key" "        tpmTcti: tabrmd:bus_type=session" "        durability: full" debug
  case "$T/root" in "$T"/root) rm -rf "$T/root" ;; esac
  start_canopyd
  wait_cloud connected 30
  echo "canopyd $kind key: $(cat "$T/canopyd.out" "$T"/root/logs/*.log 2>/dev/null | grep -m1 -o 'TLS .* established in [0-9.]* ms ([^)]*)')"
  stop_pid "$CANOPYD_PID"; CANOPYD_PID=""
done
