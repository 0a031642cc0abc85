#!/bin/sh
# verify_unit.sh <build>/packaging/install-paths.sh <built canopyd>
#
# Runs `systemd-analyze verify` on the unit configured in the build tree and fails on ANY
# output: verify exits 0 on unknown keys and bad values and only prints a warning
# (toolchain.md, pitfall 11).
#
# verify also insists that ExecStart names an existing executable, and the configured unit
# names the installed path (/usr/bin/canopyd), which does not exist on a build machine. So
# the unit is verified as a copy in which exactly that one path, and nothing else, is
# replaced by the built canopyd. Before that, the script checks that the unit's ExecStart
# really is the installed path, so the substitution cannot hide a wrong path.
# shellcheck disable=SC2154  # build_dir, version, bindir, ...: from install-paths.sh
set -eu

# shellcheck disable=SC1090  # written by packaging/CPackConfig.cmake
. "$1"
built=$2
installed=$bindir/canopyd

fail() {
    echo "verify_unit.sh: FAIL: $*" >&2
    exit 1
}

[ -f "$unit" ] || fail "no unit at $unit"
[ -x "$built" ] || fail "no built canopyd at $built (build the canopyd target first)"
command -v systemd-analyze >/dev/null || fail "systemd-analyze not found (apt-get install systemd)"

exec_start=$(sed -n 's/^ExecStart=//p' "$unit")
if [ -z "$exec_start" ] || [ "$(printf '%s\n' "$exec_start" | wc -l)" -ne 1 ]; then
    fail "expected exactly one ExecStart= line in $unit, got: $exec_start"
fi
case "$exec_start" in
    "$installed "* | "$installed") ;;
    *) fail "ExecStart does not start with the installed canopyd $installed: $exec_start" ;;
esac

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
sed "s|^ExecStart=$installed|ExecStart=$built|" "$unit" >"$tmp/canopyd.service"
changed=$(diff "$unit" "$tmp/canopyd.service" | grep -c '^>' || true)
[ "$changed" -eq 1 ] || fail "substituting ExecStart changed $changed lines, expected 1"

status=0
out=$(cd "$tmp" && systemd-analyze verify "$tmp/canopyd.service" 2>&1) || status=$?
if [ "$status" -ne 0 ] || [ -n "$out" ]; then
    printf '%s\n' "$out" >&2
    fail "systemd-analyze verify exited with $status and printed the above for $unit"
fi
echo "verify_unit.sh: systemd-analyze verify: no findings for $unit"

# The exposure figure documented at the top of the unit must be the current one, so that a
# hardening change cannot leave a stale number behind.
score=$(cd "$tmp" && systemd-analyze security --offline=true --no-pager "$tmp/canopyd.service" 2>&1 |
    sed -n 's/.*Overall exposure level for canopyd.service: \([0-9.]*\).*/\1/p')
[ -n "$score" ] || fail "systemd-analyze security printed no exposure level"
grep -q "exposure $score " "$unit" ||
    fail "systemd-analyze security says exposure $score; update the figure at the top of systemd/canopyd.service.in"
echo "verify_unit.sh: systemd-analyze security: exposure $score (as documented)"
