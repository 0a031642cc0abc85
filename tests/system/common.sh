# Shared by nspawn.sh and vm.sh (sourced; they define log, die and skip first).

# resolve_deb ARG: sets deb to the absolute path of the package: ARG itself, or the one
# canopy_*.deb in the folder ARG.
resolve_deb() {
    local arg=$1
    if [ -d "$arg" ]; then
        shopt -s nullglob
        local debs=("$arg"/canopy_*.deb)
        shopt -u nullglob
        [ "${#debs[@]}" -eq 1 ] || die "expected exactly one canopy_*.deb in $arg, found ${#debs[@]} (cd $arg && cpack -G DEB)"
        deb=${debs[0]}
    else
        deb=$arg
    fi
    [ -f "$deb" ] || die "no such package: $deb"
    deb=$(cd "$(dirname "$deb")" && pwd)/$(basename "$deb")
    log "package $deb"
}

# host_mirror: sets mirror to $CANOPY_SYSTEST_MIRROR, else the Debian mirror the host's apt uses.
host_mirror() {
    mirror=${CANOPY_SYSTEST_MIRROR:-}
    if [ -z "$mirror" ]; then
        mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    fi
    if [ -z "$mirror" ]; then
        mirror=$(awk '$1=="deb" && $0 !~ /security/ {for (i=2;i<=NF;i++) if ($i ~ /^https?:/) {print $i; exit}}' \
            /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true)
    fi
    mirror=${mirror:-http://deb.debian.org/debian}
}

# The Debian rootfs both system tests start from (the same for both: one debootstrap per
# machine), cached under $cache and made again when older than $max_age_days.
suite=bookworm
include=systemd,systemd-sysv,dbus
cache=${CANOPY_SYSTEST_CACHE:-/var/cache/canopy-systest}
max_age_days=30

# cached_rootfs: sets key, base, rootfs and stamp, running debootstrap first if the cache has no
# complete, recent copy (needs $mirror: host_mirror). While it builds, $new names the unfinished
# folder, so that a caller's cleanup can remove it when interrupted; skips the test if
# debootstrap fails.
cached_rootfs() {
    key=$(printf '%s\n' v1 "$suite" minbase "$include" "$mirror" "$(dpkg --print-architecture)" | sha256sum | cut -c1-12)
    base=$cache/$suite-$key
    rootfs=$base/rootfs
    stamp=$base/complete
    if [ -f "$stamp" ] && [ -x "$rootfs/lib/systemd/systemd" ] && [ -z "$(find "$stamp" -mtime +"$max_age_days")" ]; then
        log "cached rootfs $rootfs ($(cat "$stamp"))"
    else
        log "debootstrap $suite ($mirror) into $base (about 40 s, once per machine)"
        mkdir -p "$cache"
        new=$(mktemp -d "$cache/build.XXXXXX")
        if ! debootstrap --variant=minbase --include="$include" "$suite" "$new/rootfs" "$mirror" >"$new/debootstrap.log" 2>&1; then
            tail -n 20 "$new/debootstrap.log" >&2
            case "$new" in "$cache"/build.*) rm -rf --one-file-system "$new" ;; esac
            new=
            skip "debootstrap $suite from $mirror failed (no network to the mirror?)"
        fi
        date -u +%Y-%m-%dT%H:%M:%SZ >"$new/complete"
        # Replace an old or incomplete copy (only folders made here: $cache/$suite-*).
        if [ -e "$base" ]; then
            case "$base" in "$cache"/"$suite"-*) rm -rf --one-file-system "$base" ;; esac
        fi
        mv "$new" "$base"
        new=
        log "rootfs ready"
    fi
    # Downloaded .debs (canopy's Depends) are kept between runs, outside the rootfs copy.
    mkdir -p "$cache/apt-archives/partial"
}
