#!/usr/bin/env bash
# vm.sh [CANOPY_DEB | BUILD_DIR]
#
# System test of the Debian package in a QEMU virtual machine (TCG emulation, a real Debian 12
# kernel, systemd as PID 1, a pure cgroup v2 hierarchy), driven by tests/system/vm-guest.sh
# inside the guest, which runs tests/system/smoke.sh:
#   boot 1: dpkg -i canopy_*.deb (offline: the image has its Depends), smoke.sh install, and a
#           component memory limit (--systemLimits) enforced by the kernel under cgroup v2
#   boot 2: (the same disk) smoke.sh reboot, then smoke.sh purge
# Builds nothing: pass the .deb, or a build folder holding canopy_*.deb (default: ./build).
#
# Image: the bookworm rootfs of nspawn.sh (debootstrapped once into $CANOPY_SYSTEST_CACHE,
# default /var/cache/canopy-systest) is copied, linux-image-amd64, initramfs-tools and the
# package's Depends are installed into the copy with systemd-nspawn (from the mirror), the
# test service systest.service is added, and the tree becomes an ext4 image (mkfs.ext4 -d) in
# $CANOPY_SYSTEST_CACHE/vm-<hash>/ with the kernel and initrd beside it (hash: the rootfs's
# key and date, the Depends and $image_version below; first run about 2-3 min, ~1 GB). Each
# run boots a qcow2 overlay of that image in a mktemp folder (so the second boot keeps the
# first one's state while the cache stays pristine) plus a small read-only "payload" disk
# with the .deb, smoke.sh and vm-guest.sh. The guest has no network. QEMU always runs with
# -accel tcg (this machine kind's KVM cannot boot a stock kernel and hangs), inside timeout.
#
# Prints the guest's "ok"/"not ok" lines; exits 1 if a check failed or a boot did not print
# "SYSTEST RESULT: PASS" on its serial console; SKIP (exit 77) when it cannot run here (not
# root, no qemu-system-x86_64/qemu-img/mkfs.ext4/systemd-nspawn/debootstrap, or the rootfs
# or image cannot be built).
#
# Environment: CANOPY_SYSTEST_CACHE, CANOPY_SYSTEST_MIRROR (default: the host's apt mirror),
# CANOPY_SYSTEST_KEEP=1 (keep the temporary folder with the serial logs),
# CANOPY_SYSTEST_VM_TIMEOUT (seconds per boot, default 900).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
image_version=vm1          # bump when the image recipe below changes
boot_timeout=${CANOPY_SYSTEST_VM_TIMEOUT:-900}
t0=$(date +%s)

log() { echo "vm.sh: [$(( $(date +%s) - t0 ))s] $*"; }
skip() { echo "SKIP: vm.sh: $*"; exit 77; }
die() { echo "vm.sh: FAIL: $*" >&2; exit 1; }

# --- prerequisites -----------------------------------------------------------------------
[ "$(id -u)" -eq 0 ] || skip "needs root (debootstrap and systemd-nspawn for the image)"
for tool in qemu-system-x86_64:qemu-system-x86 qemu-img:qemu-utils mkfs.ext4:e2fsprogs \
    systemd-nspawn:systemd-container debootstrap:debootstrap; do
    command -v "${tool%%:*}" >/dev/null || skip "${tool%%:*} not found (apt-get install ${tool#*:})"
done

# shellcheck source=tests/system/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
resolve_deb "${1:-build}"
host_mirror

# --- temporary folder, cleanup --------------------------------------------------------------
tmp=$(mktemp -d /var/tmp/canopy-systest-vm.XXXXXX)
new=       # an image being built in the cache (removed if the build does not finish)
qemu_pid=
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -n "$qemu_pid" ] && kill -0 "$qemu_pid" 2>/dev/null; then
        kill -TERM "$qemu_pid" 2>/dev/null || true
        wait "$qemu_pid" 2>/dev/null || true
    fi
    if [ -n "$new" ] && [ -d "$new" ]; then
        case "$new" in "$cache"/vm-build.*|"$cache"/build.*) rm -rf --one-file-system "$new" ;; esac
    fi
    if [ "${CANOPY_SYSTEST_KEEP:-0}" = 1 ]; then
        log "kept $tmp"
    elif [ -n "$tmp" ] && [ -d "$tmp" ] && case "$tmp" in /var/tmp/canopy-systest-vm.*) true ;; *) false ;; esac; then
        rm -rf --one-file-system "$tmp"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- the cached rootfs ---------------------------------------------------------------------
cached_rootfs

# --- the cached VM image -----------------------------------------------------------------------
# The package's Depends (names only: the first of each alternative, no versions), installed
# into the image because the guest is offline.
depends=$( { dpkg-deb -f "$deb" Pre-Depends; dpkg-deb -f "$deb" Depends; } | tr ',' '\n' |
    sed 's/|.*//; s/(.*)//; s/:any//; s/[[:space:]]//g' | grep -v '^$' | sort -u | tr '\n' ' ')
vmkey=$(printf '%s\n' "$image_version" "$key" "$(cat "$stamp")" "$depends" | sha256sum | cut -c1-12)
vm=$cache/vm-$vmkey
if [ -f "$vm/complete" ] && [ -f "$vm/disk.img" ] && [ -f "$vm/vmlinuz" ] && [ -f "$vm/initrd.img" ]; then
    log "cached VM image $vm ($(cat "$vm/complete"))"
else
    log "building the VM image in $vm (kernel, initramfs-tools, Depends: $depends; about 2-3 min, once)"
    new=$(mktemp -d "$cache/vm-build.XXXXXX")
    tree=$new/tree
    cp -a --reflink=auto "$rootfs" "$tree"
    echo 'APT::Install-Recommends "false";' >"$tree/etc/apt/apt.conf.d/90canopy-systest"
    # shellcheck disable=SC2086  # $depends is a word list
    if ! systemd-nspawn -q -D "$tree" --register=no --keep-unit --machine="canopy-vmbuild-$$" \
        --bind="$cache/apt-archives:/var/cache/apt/archives" --setenv=DEBIAN_FRONTEND=noninteractive \
        sh -c 'apt-get update -qq && apt-get install -y -qq linux-image-amd64 initramfs-tools "$@"' sh $depends \
        >"$new/build.log" 2>&1 </dev/null; then
        tail -n 30 "$new/build.log" >&2
        skip "could not install the kernel and the Depends into the image (no network to the mirror?)"
    fi
    rm -rf --one-file-system "${tree:?}/var/lib/apt/lists/"*
    cp "$tree"/boot/vmlinuz-* "$new/vmlinuz"
    cp "$tree"/boot/initrd.img-* "$new/initrd.img"
    echo canopy-vm >"$tree/etc/hostname"
    printf '%s\n' '/dev/vda / ext4 rw,errors=remount-ro 0 1' \
        'LABEL=canopy-payload /systest ext4 ro,nofail,x-systemd.device-timeout=20s 0 0' >"$tree/etc/fstab"
    mkdir -p "$tree/systest"
    cat >"$tree/etc/systemd/system/systest.service" <<'UNIT'
[Unit]
Description=Canopy VM system test (tests/system/vm-guest.sh from the payload disk)
After=multi-user.target
RequiresMountsFor=/systest
ConditionPathExists=/systest/vm-guest.sh

[Service]
Type=oneshot
ExecStart=/bin/sh /systest/vm-guest.sh
StandardOutput=journal+console
StandardError=journal+console
TimeoutStartSec=infinity

[Install]
WantedBy=multi-user.target
UNIT
    mkdir -p "$tree/etc/systemd/system/multi-user.target.wants"
    ln -s /etc/systemd/system/systest.service "$tree/etc/systemd/system/multi-user.target.wants/systest.service"
    if ! mkfs.ext4 -q -F -L canopy-systest -d "$tree" "$new/disk.img" 3G >>"$new/build.log" 2>&1; then
        tail -n 10 "$new/build.log" >&2
        die "mkfs.ext4 -d of the image tree failed"
    fi
    rm -rf --one-file-system "${tree:?}"
    date -u +%Y-%m-%dT%H:%M:%SZ >"$new/complete"
    # Older images (another key) are this script's: replace them.
    for old in "$cache"/vm-*; do
        [ -d "$old" ] || continue
        case "$old" in "$cache"/vm-build.*) continue ;; "$cache"/vm-[0-9a-f]*) rm -rf --one-file-system "$old" ;; esac
    done
    # (another run may have finished the same image meanwhile: then ours is dropped by cleanup)
    if mv -T "$new" "$vm" 2>/dev/null; then new=; fi
    log "VM image ready ($(du -sh "$vm" | cut -f1))"
fi

# --- this run's disks ----------------------------------------------------------------------------
qemu-img create -q -f qcow2 -F raw -b "$vm/disk.img" "$tmp/disk.qcow2"
mkdir -p "$tmp/payload"
cp "$deb" "$here/smoke.sh" "$here/vm-guest.sh" "$tmp/payload/"
mkfs.ext4 -q -F -L canopy-payload -d "$tmp/payload" "$tmp/payload.img" 64M >/dev/null

failed=0
boot() {   # boot N
    local n=$1 serial=$tmp/serial-$1.log rc=0 b0
    b0=$(date +%s)
    log "boot $n (qemu -accel tcg, timeout ${boot_timeout}s)"
    timeout --kill-after=10 "$boot_timeout" qemu-system-x86_64 -accel tcg -smp 2 -m 1024 -nographic -no-reboot \
        -kernel "$vm/vmlinuz" -initrd "$vm/initrd.img" \
        -append "console=ttyS0 root=/dev/vda rw panic=-1 loglevel=3 systest.phase=$n" \
        -drive "file=$tmp/disk.qcow2,format=qcow2,if=virtio" \
        -drive "file=$tmp/payload.img,format=raw,if=virtio,readonly=on" \
        -nic none >"$serial" 2>&1 </dev/null &
    qemu_pid=$!
    wait "$qemu_pid" || rc=$?
    qemu_pid=
    # Console lines forwarded by journald carry "[ uptime] sh[pid]: "; drop that prefix.
    tr -d '\r' <"$serial" | sed -E 's/^\[ *[0-9]+\.[0-9]+\] [^ :]+\[[0-9]+\]: //' >"$serial.txt"
    grep -E '^(ok|not ok) - |^# ' "$serial.txt" || true
    if grep -q '^SYSTEST RESULT: PASS' "$serial.txt"; then
        log "boot $n: SYSTEST RESULT: PASS ($(( $(date +%s) - b0 )) s)"
    else
        if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then log "boot $n: timed out after ${boot_timeout}s"; fi
        log "boot $n: no PASS marker (qemu exit $rc); the last serial lines:"
        tail -n 40 "$serial.txt" | sed 's/^/| /'
        failed=1
    fi
}

boot 1
[ "$failed" -eq 0 ] && boot 2

if [ "$failed" -ne 0 ]; then
    log "FAIL (serial logs: serial-*.log; CANOPY_SYSTEST_KEEP=1 keeps $tmp)"
    exit 1
fi
log "PASS"
