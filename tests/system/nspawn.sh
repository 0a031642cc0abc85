#!/usr/bin/env bash
# nspawn.sh [CANOPY_DEB | BUILD_DIR]
#
# System test of the Debian package: installs the .deb in a booted Debian 12 (bookworm)
# container (systemd-nspawn, systemd as PID 1) and runs tests/system/smoke.sh inside it:
#   boot 1: apt-get install /debs/canopy_*.deb (Depends from Debian), smoke.sh install
#   boot 2: (same container state) smoke.sh reboot, then smoke.sh purge
# Builds nothing: pass the .deb, or a build folder holding canopy_*.deb (default: ./build).
#
# The bookworm rootfs is debootstrapped once into $CANOPY_SYSTEST_CACHE (default
# /var/cache/canopy-systest), reused between runs and rebuilt when missing, incomplete or
# older than 30 days (first run: ~40 s of debootstrap, ~240 MB). Each run works on a copy of
# it in a mktemp folder, so the cache stays pristine. Needs root, systemd-nspawn
# (systemd-container) and debootstrap; prints SKIP and exits 77 when they cannot work here.
#
# Environment: CANOPY_SYSTEST_CACHE, CANOPY_SYSTEST_MIRROR (default: the host's apt mirror),
# CANOPY_SYSTEST_KEEP=1 (keep the temporary folder for inspection).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
smoke=$here/smoke.sh
t0=$(date +%s)

log() { echo "nspawn.sh: [$(( $(date +%s) - t0 ))s] $*"; }
skip() { echo "SKIP: nspawn.sh: $*"; exit 77; }
die() { echo "nspawn.sh: FAIL: $*" >&2; exit 1; }

# --- prerequisites -----------------------------------------------------------------------
[ "$(id -u)" -eq 0 ] || skip "needs root (debootstrap and systemd-nspawn)"
command -v systemd-nspawn >/dev/null || skip "systemd-nspawn not found (apt-get install systemd-container)"
command -v debootstrap >/dev/null || skip "debootstrap not found (apt-get install debootstrap)"
command -v nsenter >/dev/null || skip "nsenter not found (util-linux)"

# shellcheck source=tests/system/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
resolve_deb "${1:-build}"
host_mirror

# --- temporary folder, cleanup --------------------------------------------------------------
tmp=$(mktemp -d /var/tmp/canopy-systest.XXXXXX)
np=          # the systemd-nspawn process of the running boot
cloud_pid=   # the host-side "cloud" Mosquitto
sub_pid=     # its subscriber
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    for p in $sub_pid $cloud_pid; do
        kill -TERM "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    if [ -n "$np" ] && kill -0 "$np" 2>/dev/null; then
        log "stopping the container (nspawn pid $np)"
        leader=$(container_leader) || true
        if [ -n "$leader" ]; then nsenter -t "$leader" -m -u -i -n -p systemctl poweroff >/dev/null 2>&1 || true; fi
        for _ in $(seq 1 30); do kill -0 "$np" 2>/dev/null || break; sleep 1; done
        if kill -0 "$np" 2>/dev/null; then kill -TERM "$np" 2>/dev/null || true; sleep 3; fi
        if kill -0 "$np" 2>/dev/null; then kill -KILL "$np" 2>/dev/null || true; fi
        wait "$np" 2>/dev/null || true
    fi
    if [ "${CANOPY_SYSTEST_KEEP:-0}" = 1 ]; then
        log "kept $tmp"
    elif [ -n "$tmp" ] && [ -d "$tmp" ] && case "$tmp" in /var/tmp/canopy-systest.*) true ;; *) false ;; esac; then
        rm -rf --one-file-system "$tmp"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- the cached rootfs ---------------------------------------------------------------------
cached_rootfs

# --- the container ----------------------------------------------------------------------
root=$tmp/root
log "copying the rootfs to $root"
cp -a --reflink=auto "$rootfs" "$root"
mkdir -p "$tmp/debs" "$tmp/smoke"
cp "$deb" "$tmp/debs/"
cp "$smoke" "$tmp/smoke/smoke.sh"
# Files the container's apt must not try to reconfigure interactively.
echo 'APT::Install-Recommends "false";' >"$root/etc/apt/apt.conf.d/90canopy-systest"

# Free ports (host and container share the network) for the managed Mosquitto. They are used
# only after the container has booted, so they come from below the kernel's ephemeral range
# (ip_local_port_range, 32768 by default), where no concurrently running test's connection or
# bind-to-port-0 can take one meanwhile.
port_free() { ! grep -qi ":$(printf '%04X' "$1") " /proc/net/tcp /proc/net/tcp6 2>/dev/null; }
ephemeral_low=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
[ "$ephemeral_low" -gt 21000 ] 2>/dev/null || ephemeral_low=50000  # an unusual range: the old 20000-49999
pick_port() {
    local p
    for _ in $(seq 1 200); do
        p=$(( 20000 + RANDOM % (ephemeral_low - 20000) ))
        if port_free "$p" && [ "$p" != "${1:-}" ]; then echo "$p"; return 0; fi
    done
    die "no free TCP port found"
}
local_port=$(pick_port)
tls_port=$(pick_port "$local_port")
log "broker ports: localPort $local_port, tlsPort $tls_port"

# A "cloud" on the host's loopback: a TLS Mosquitto requiring client certificates (the test
# PKI), which the container's canopyd bridges to. Its subscriber waits for the bridged message.
cloud_port=$(pick_port "$local_port")
[ "$cloud_port" != "$tls_port" ] || cloud_port=$(pick_port "$tls_port")
sh "$(dirname "$smoke")/../pki/gen.sh" "$tmp/smoke/pki" >/dev/null || die "tests/pki/gen.sh failed"
chmod 0755 "$tmp/smoke/pki"
printf '%s\n' "user root" "log_dest file $tmp/cloud.log" "listener $cloud_port 127.0.0.1" \
    "cafile $tmp/smoke/pki/ca.crt" "certfile $tmp/smoke/pki/server.crt" "keyfile $tmp/smoke/pki/server.key" \
    "require_certificate true" "allow_anonymous true" >"$tmp/cloud.conf"
mosquitto -c "$tmp/cloud.conf" >/dev/null 2>&1 &
cloud_pid=$!
for _ in $(seq 1 50); do port_free "$cloud_port" || break; sleep 0.1; done
port_free "$cloud_port" && die "the cloud Mosquitto did not start: $(cat "$tmp/cloud.log" 2>/dev/null)"
mosquitto_sub -h 127.0.0.1 -p "$cloud_port" --cafile "$tmp/smoke/pki/ca.crt" --cert "$tmp/smoke/pki/client.crt" \
    --key "$tmp/smoke/pki/client.key" -i systest-cloud-sub -q 1 -t 'gw/#' -v -C 1 -W 120 >"$tmp/cloud-sub.out" 2>&1 &
sub_pid=$!
log "cloud broker on 127.0.0.1:$cloud_port (pid $cloud_pid)"

container_leader() {
    # The container's PID 1: the child of nspawn whose comm is "systemd" (nspawn briefly
    # has an intermediate child that is not it).
    { ps --ppid "$np" -o pid=,comm= 2>/dev/null || true; } | awk '$2=="systemd"{print $1; exit}'
}

boot() {   # boot N
    log "boot $1"
    systemd-nspawn -q -D "$root" --boot --machine="canopy-systest-$$" --register=no --keep-unit \
        --bind-ro="$tmp/debs:/debs" --bind-ro="$tmp/smoke:/systest" \
        --bind="$cache/apt-archives:/var/cache/apt/archives" \
        >"$tmp/nspawn-$1.log" 2>&1 </dev/null &
    np=$!
    leader=
    for _ in $(seq 1 100); do
        leader=$(container_leader)
        [ -n "$leader" ] && break
        kill -0 "$np" 2>/dev/null || break
        sleep 0.1
    done
    if [ -z "$leader" ]; then
        cat "$tmp/nspawn-$1.log" >&2
        wait "$np" 2>/dev/null || true
        np=
        if [ "$1" = 1 ]; then skip "systemd-nspawn cannot boot a container here (log above)"; fi
        die "boot $1: the container did not start (log above)"
    fi
    E=(nsenter -t "$leader" -m -u -i -n -p)
    # systemctl fails at once (empty output) until the container's systemd listens on its
    # private socket; then --wait blocks until the boot is done.
    state=
    for _ in $(seq 1 120); do
        state=$(timeout 60 "${E[@]}" systemctl is-system-running --wait 2>/dev/null || true)
        case "$state" in running|degraded|maintenance|stopping) break ;; esac
        sleep 0.5
    done
    log "boot $1: system $state"
    case "$state" in
        running) ;;
        degraded) "${E[@]}" systemctl --failed --no-legend --no-pager || true ;;
        *) if [ "$1" = 1 ]; then skip "the container's systemd did not come up ($state)"; fi
           die "boot $1: the container's systemd is '$state'" ;;
    esac
}

run() { "${E[@]}" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"; }

poweroff() {
    log "poweroff"
    run systemctl poweroff >/dev/null 2>&1 || true
    for _ in $(seq 1 60); do kill -0 "$np" 2>/dev/null || break; sleep 1; done
    kill -0 "$np" 2>/dev/null && die "the container did not power off within 60 s"
    wait "$np" 2>/dev/null || true
    np=
}

failed=0
boot 1
# Debian's mosquitto.service (pulled in by Depends) starts on 127.0.0.1:1883 of the host's
# network (the container shares it) until canopy's postinst stops and disables it, which
# smoke.sh checks. canopyd's own broker uses the free ports picked above.
log "apt-get update and install $(basename "$deb")"
if ! run sh -c 'apt-get update -qq && apt-get install -y -qq /debs/'"$(basename "$deb")" >"$tmp/apt.log" 2>&1; then
    cat "$tmp/apt.log" >&2
    die "apt-get install /debs/$(basename "$deb") failed"
fi
sed -n '/^Setting up canopy /,$p' "$tmp/apt.log"
run sh /systest/smoke.sh install --local-port "$local_port" --tls-port "$tls_port" --cloud-port "$cloud_port" || failed=1
# The message smoke.sh published on the container's local broker, bridged to the host's cloud.
for _ in $(seq 1 150); do kill -0 "$sub_pid" 2>/dev/null || break; sleep 0.2; done
if grep -q '^gw/smoke/hello from-the-container$' "$tmp/cloud-sub.out"; then
    echo "ok - the bridge carried smoke/hello from the container's local broker to the cloud broker on the host (as gw/smoke/hello)"
else
    echo "not ok - the bridged message reached the cloud broker on the host (subscriber output: $(cat "$tmp/cloud-sub.out"))"
    failed=1
fi
poweroff
if [ "$failed" -eq 0 ]; then
    boot 2
    run sh /systest/smoke.sh reboot --local-port "$local_port" --tls-port "$tls_port" || failed=1
    run sh /systest/smoke.sh purge || failed=1
    poweroff
fi

if [ "$failed" -ne 0 ]; then
    log "FAIL (container logs: nspawn-*.log; CANOPY_SYSTEST_KEEP=1 keeps $tmp)"
    exit 1
fi
log "PASS"
