#!/bin/sh
# vm-guest.sh: the test driver INSIDE the QEMU guest of tests/system/vm.sh. The guest's
# systest.service runs it (as root, once the boot reached multi-user.target) from the payload
# disk mounted on /systest, which also holds canopy_*.deb and smoke.sh. The boot number comes
# from the kernel command line (systest.phase=1|2); the guest is offline, so the image has
# the package's Depends pre-installed.
#
#   boot 1: dpkg -i /systest/canopy_*.deb, smoke.sh install, then the component memory limit
#           under cgroup v2 (check_memory_limit below)
#   boot 2: (the same disk) smoke.sh reboot, then smoke.sh purge
#
# Prints "ok - ..."/"not ok - ..." lines and, last, "SYSTEST RESULT: PASS" or "SYSTEST RESULT:
# FAIL" (vm.sh greps the serial console for it), then powers the guest off.
set -u
export LANG=C.UTF-8 PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive

phase=$(sed -n 's/.*systest\.phase=\([0-9]*\).*/\1/p' /proc/cmdline)
UNIT=canopyd.service
HOG=com.example.MemHog
LIMIT_KB=32768                      # --systemLimits memory=KB: 32 MiB
LIMIT_BYTES=$((LIMIT_KB * 1024))
SIGNER_KEY=/var/lib/canopy-smoke/signer.key   # made and trusted by smoke.sh install

failures=0
ok() { echo "ok - $*"; }
not_ok() { echo "not ok - $1 ($2)"; failures=$((failures + 1)); }
check() { what=$1 why=$2; shift 2; if "$@"; then ok "$what"; else not_ok "$what" "$why"; fi; }
wait_for() { n=$1; shift; while [ "$n" -gt 0 ]; do "$@" && return 0; sleep 1; n=$((n - 1)); done; "$@"; }
detail() { canopy component details "$1" 2>/dev/null | awk -v k="$2" '$1==k {print $2; exit}'; }
running() { [ "$(detail "$1" State)" = RUNNING ]; }

# A component with a 32 MiB memory limit (--systemLimits) whose Run step first allocates 4 MiB
# (within the limit), then doubles a string up to 128 MiB (far beyond it; the bounded size keeps
# the 1 GiB guest alive should the limit not apply), reports the second awk's exit status, and
# stays RUNNING. Under cgroup v2 the kernel's memory-cgroup OOM killer must kill that awk
# (SIGKILL: status 137), and only it.
check_memory_limit() {
    echo "# --- component memory limit (cgroup v2)"
    fstype=$(stat -fc %T /sys/fs/cgroup 2>/dev/null)
    check "/sys/fs/cgroup is a pure cgroup v2 hierarchy" "file system type '$fstype'" [ "$fstype" = cgroup2fs ]
    dpid=$(systemctl show -p MainPID --value "$UNIT")
    dcg=$(sed -n 's/^0:://p' "/proc/$dpid/cgroup" 2>/dev/null)
    check "canopyd (pid $dpid) moved itself into the leaf $dcg of its delegated cgroup" "cgroup '$dcg'" \
        [ "$dcg" = /system.slice/canopyd.service/canopyd ]

    dir=$(mktemp -d /var/lib/canopy-smoke/memhog.XXXXXX)
    chmod 0755 "$dir"
    cat >"$dir/$HOG-1.0.0.yaml" <<'RECIPE'
---
RecipeFormatVersion: '2020-01-25'
ComponentName: com.example.MemHog
ComponentVersion: '1.0.0'
ComponentDescription: Allocates beyond its memory limit (tests/system/vm-guest.sh).
ComponentPublisher: Canopy
Manifests:
  - Platform:
      os: linux
Lifecycle:
  Run: |
    awk 'BEGIN { s = "x"; while (length(s) < 4194304) s = s s; print "memhog small allocation ok " length(s) " bytes" }'
    awk 'BEGIN { s = "x"; while (length(s) < 134217728) s = s s; print "memhog big allocation NOT stopped " length(s) " bytes" }'
    echo "memhog big allocation exit status $?"
    exec sleep 86400
RECIPE
    canopy sign "$dir/$HOG-1.0.0.yaml" --key "$SIGNER_KEY" >/dev/null 2>&1 || not_ok "canopy sign $HOG" "canopy sign failed"
    out=$(canopy deployment create --recipeDir "$dir" --merge "$HOG=1.0.0" --systemLimits "$HOG:memory=$LIMIT_KB" \
        --wait --timeout 120 2>&1); rc=$?
    check "deployment of $HOG with --systemLimits $HOG:memory=$LIMIT_KB succeeds" \
        "exit $rc: $(echo "$out" | tail -n 3 | tr '\n' ' ')" [ "$rc" -eq 0 ]
    if wait_for 60 running "$HOG"; then ok "$HOG is RUNNING"; else not_ok "$HOG is RUNNING" "state $(detail "$HOG" State)"; fi

    hpid=$(detail "$HOG" PID)
    cg=$(sed -n 's/^0:://p' "/proc/${hpid:-0}/cgroup" 2>/dev/null)
    check "$HOG (pid $hpid) runs in its own cgroup $cg" "cgroup '$cg'" \
        [ "$cg" = "/system.slice/canopyd.service/components/$HOG" ]
    max=$(cat "/sys/fs/cgroup$cg/memory.max" 2>/dev/null)
    check "its memory.max is the configured limit $LIMIT_BYTES ($LIMIT_KB KB)" "memory.max '$max'" [ "$max" = "$LIMIT_BYTES" ]

    logged() { canopy logs "$HOG" 2>/dev/null | grep -q 'memhog big allocation'; }
    wait_for 90 logged >/dev/null
    log=$(canopy logs "$HOG" 2>&1 | grep memhog)
    echo "$log" | sed 's/^/# component log: /'
    in_log() { printf '%s\n' "$log" | grep -q "$1"; }
    not_in_log() { ! in_log "$1"; }
    check "the allocation within the limit succeeded" "no 'small allocation ok' in the component log" \
        in_log 'memhog small allocation ok 4194304 bytes'
    check "the allocation beyond the limit was SIGKILLed (exit status 137)" "component log: $(echo "$log" | tr '\n' ' ')" \
        in_log 'memhog big allocation exit status 137'
    check "the allocation beyond the limit never completed" "it did: the limit is not enforced" \
        not_in_log 'NOT stopped'
    kills=$(awk '$1=="oom_kill" {print $2}' "/sys/fs/cgroup$cg/memory.events" 2>/dev/null)
    check "memory.events of its cgroup counts the kill (oom_kill $kills)" "oom_kill '$kills'" [ "${kills:-0}" -ge 1 ]
    in_klog() { printf '%s\n' "$klog" | grep -q "$1"; }
    klog=$(journalctl -k -b --no-pager -o cat 2>/dev/null | grep 'Memory cgroup out of memory' | tail -n 1)
    check "the kernel logged a memory-cgroup OOM kill of awk: $klog" "no 'Memory cgroup out of memory: Killed process ... (awk)' in the kernel log" \
        in_klog '(awk)'
    check "the component survived (the shell of its Run step is still pid $hpid, RUNNING)" \
        "state $(detail "$HOG" State), pid $(detail "$HOG" PID)" \
        sh -c "[ '$(detail "$HOG" State)' = RUNNING ] && [ '$(detail "$HOG" PID)' = '$hpid' ] && kill -0 $hpid"

    # Remove it again, so that boot 2 sees only smoke.sh's state: no process may be left, and
    # its cgroup goes with it.
    out=$(canopy deployment create --remove "$HOG" --wait --timeout 120 2>&1); rc=$?
    check "deployment --remove $HOG succeeds" "exit $rc: $(echo "$out" | tail -n 3 | tr '\n' ' ')" [ "$rc" -eq 0 ]
    empty() { [ ! -d "/sys/fs/cgroup$cg" ] || [ -z "$(cat "/sys/fs/cgroup$cg/cgroup.procs" 2>/dev/null)" ]; }
    if [ -n "$cg" ] && wait_for 30 empty; then
        ok "no process is left in its cgroup (pid $hpid gone: $(kill -0 "$hpid" 2>/dev/null && echo no || echo yes))"
    else
        not_ok "no process is left in its cgroup" "cgroup.procs: $(tr '\n' ' ' <"/sys/fs/cgroup$cg/cgroup.procs")"
    fi
    gone() { [ ! -d "/sys/fs/cgroup$cg" ]; }
    if [ -n "$cg" ] && wait_for 10 gone; then ok "its cgroup $cg is removed"; else not_ok "its cgroup $cg is removed" "/sys/fs/cgroup$cg still exists"; fi
    case "$dir" in /var/lib/canopy-smoke/memhog.*) rm -rf "$dir" ;; esac
}

echo "# vm-guest.sh: boot ${phase:-?}, kernel $(uname -r), $(systemctl --version | head -n 1)"
case "$phase" in
    1)
        deb=; for f in /systest/canopy_*.deb; do deb=$f; done
        if dpkg -i "$deb" >/tmp/systest-dpkg.log 2>&1; then
            ok "dpkg -i $(basename "$deb") (offline; the Depends are in the image)"
            sed -n '/^Setting up canopy /,$p' /tmp/systest-dpkg.log | sed 's/^/# /'
            sh /systest/smoke.sh install || failures=$((failures + 1))
            check_memory_limit
        else
            sed 's/^/# /' /tmp/systest-dpkg.log
            not_ok "dpkg -i $(basename "$deb")" "see above"
        fi
        ;;
    2)
        sh /systest/smoke.sh reboot || failures=$((failures + 1))
        sh /systest/smoke.sh purge || failures=$((failures + 1))
        ;;
    *) not_ok "systest.phase on the kernel command line" "'$(cat /proc/cmdline)'" ;;
esac

if [ "$failures" -eq 0 ]; then echo "SYSTEST RESULT: PASS"; else echo "SYSTEST RESULT: FAIL"; fi
sync
systemctl --no-block poweroff
