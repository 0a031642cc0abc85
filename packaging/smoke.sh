#!/bin/sh
# Smoke test of an installed canopy package on a host booted with systemd (the Vagrant box,
# the nspawn system test). Exits non-zero, naming the failed check, on the first failure.
set -eu

fail() {
    echo "smoke.sh: FAIL: $*" >&2
    systemctl status --no-pager canopyd.service >&2 || true
    journalctl -u canopyd.service --no-pager -n 50 >&2 || true
    exit 1
}

# Type=notify: active means canopyd sent READY=1. Allow a slow first start.
i=0
until [ "$(systemctl is-active canopyd.service || true)" = active ]; do
    i=$((i + 1))
    [ "$i" -le 30 ] || fail "canopyd.service is not active: $(systemctl is-active canopyd.service || true)"
    sleep 1
done
[ "$(systemctl is-enabled canopyd.service)" = enabled ] || fail "canopyd.service is not enabled"

# Both binaries run and report the installed package's upstream version.
ver=$(dpkg-query -W -f='${Version}' canopy) || fail "package canopy is not installed"
ver=${ver%-*}
for bin in canopy canopyd; do
    out=$("$bin" --version) || fail "$bin --version exited with $?"
    case "$out" in "$bin $ver "*) ;; *) fail "$bin --version printed '$out', expected '$bin $ver ...'" ;; esac
done

echo "smoke.sh: PASS (canopyd.service active and enabled; canopy $ver)"
