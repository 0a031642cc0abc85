# Shared by nspawn.sh and vm.sh (sourced; they define log and die first).

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
