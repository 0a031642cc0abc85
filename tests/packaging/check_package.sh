#!/bin/sh
# check_package.sh <build>/packaging/install-paths.sh
#
# Builds the Debian package with `cpack -G DEB` into a temporary folder and checks it with
# dpkg-deb: the files and their modes, the control fields (Depends from dpkg-shlibdeps plus
# mosquitto), conffiles, the maintainer scripts, and that the packaged binaries run.
# The expected paths are the configured ones from install-paths.sh (/usr/bin, /etc,
# /usr/lib/systemd/system for the default prefix /usr). Every temporary file is removed.
# shellcheck disable=SC2154  # build_dir, version, bindir, ...: from install-paths.sh
set -eu

# shellcheck disable=SC1090  # written by packaging/CPackConfig.cmake
. "$1"    # build_dir version bindir sysconfdir unitdir

failures=0
fail() {
    echo "check_package.sh: FAIL: $*" >&2
    failures=$((failures + 1))
}
die() {
    echo "check_package.sh: FAIL: $*" >&2
    exit 1
}
pass() {
    echo "check_package.sh: ok: $*"
}

for tool in cpack dpkg-deb dpkg-shlibdeps readelf; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install cmake dpkg-dev binutils)"
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM

# --- build ------------------------------------------------------------------------------
if ! (cd "$build_dir" && cpack -G DEB -B "$tmp/out") >"$tmp/cpack.log" 2>&1; then
    cat "$tmp/cpack.log" >&2
    die "cpack -G DEB failed in $build_dir"
fi
set -- "$tmp"/out/canopy_*.deb
if [ "$#" -ne 1 ] || [ ! -f "$1" ]; then die "expected one canopy_*.deb from cpack, found: $*"; fi
deb=$1
pass "built $(basename "$deb")"

# --- control fields ---------------------------------------------------------------------
field() { dpkg-deb --field "$deb" "$1"; }
[ "$(field Package)" = canopy ] || fail "Package is '$(field Package)', expected canopy"
[ "$(field Version)" = "$version-1" ] || fail "Version is '$(field Version)', expected $version-1"
[ "$(field Architecture)" = "$(dpkg --print-architecture)" ] || fail "Architecture is '$(field Architecture)'"
for f in Maintainer Section Priority Description; do
    [ -n "$(field "$f")" ] || fail "control field $f is empty"
done
depends=$(field Depends)
echo "check_package.sh: Depends: $depends"
# Depends as one package name per line, without versions and alternatives' bars.
depnames=$(printf '%s\n' "$depends" | tr '|' ',' | tr ',' '\n' | sed 's/(.*//; s/[[:space:]]//g; s/:.*//' | grep -v '^$')
has_dep() { printf '%s\n' "$depnames" | grep -Eq "^($1)\$"; }       # ERE
has_dep_name() { printf '%s\n' "$depnames" | grep -Fxq "$1"; }       # exact name
# Debian names: libspdlog1.10-fmt9 (an ABI name libspdlog1.10 provides), libyaml-cpp0.7.
for want in 'libc6' 'libspdlog[0-9.]+(-fmt[0-9]+)?' 'libyaml-cpp[0-9.]+' 'libsystemd0' 'mosquitto' 'adduser'; do
    has_dep "$want" || fail "Depends lacks $want"
done

# Every shared library the binaries need must come from a package in Depends: this is what
# catches libssl3 (libcrypto.so.3/libssl.so.3) and anything added later.
root=$tmp/root
dpkg-deb -x "$deb" "$root"
for bin in canopyd canopy; do
    for soname in $(readelf -d "$root$bindir/$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
        owners=$(dpkg -S "*/$soname" 2>/dev/null | sed 's|: /.*||' | tr ',' '\n' | sed 's/:.*//; s/ //g' | sort -u)
        [ -n "$owners" ] || { fail "$bin needs $soname, which no installed package owns"; continue; }
        # The owning package, or a name it Provides (libspdlog1.10 provides libspdlog1.10-fmt9).
        found=
        for o in $owners; do
            for name in "$o" $(dpkg-query -W -f='${Provides}' "$o" 2>/dev/null | tr ',' '\n' | sed 's/(.*//; s/ //g'); do
                if has_dep_name "$name"; then found=$name; fi
            done
        done
        if [ -n "$found" ]; then pass "$bin needs $soname: Depends has $found"; else fail "$bin needs $soname ($(printf "%s" "$owners" | tr "\n" " ")), not in Depends"; fi
    done
done
if readelf -d "$root$bindir/canopyd" | grep -Eq 'NEEDED.*\[lib(ssl|crypto)\.so\.3\]'; then
    has_dep_name libssl3 || fail "canopyd links OpenSSL 3 but Depends lacks libssl3"
fi

# --- files ------------------------------------------------------------------------------
dpkg-deb --contents "$deb" >"$tmp/contents"
# mode, owner, path for regular files ("./usr/bin/canopyd" -> "/usr/bin/canopyd")
entry() { awk -v p=".$1" '$NF == p { print $1, $2 }' "$tmp/contents"; }
check_file() { # path mode
    e=$(entry "$1")
    if [ -z "$e" ]; then fail "$1 is not in the package"; return; fi
    [ "$e" = "$2 root/root" ] || fail "$1 is '$e', expected '$2 root/root'"
}
check_file "$bindir/canopyd" -rwxr-xr-x
check_file "$bindir/canopy" -rwxr-xr-x
check_file "$unitdir/canopyd.service" -rw-r--r--
check_file "$sysconfdir/canopy/config.yaml" -rw-r-----
[ "$failures" -eq 0 ] && pass "binaries, unit and configuration present with the expected modes"

# The packaged unit starts the packaged binary with the packaged configuration.
exec_start=$(sed -n 's/^ExecStart=//p' "$root$unitdir/canopyd.service")
[ "$exec_start" = "$bindir/canopyd --config $sysconfdir/canopy/config.yaml" ] ||
    fail "packaged unit has ExecStart=$exec_start"
# The packaged default configuration uses the unit's StateDirectory as its root.
grep -q '^  rootPath: /var/lib/canopy$' "$root$sysconfdir/canopy/config.yaml" ||
    fail "packaged config.yaml does not set rootPath: /var/lib/canopy"

# --- control files ----------------------------------------------------------------------
mkdir "$tmp/control"
dpkg-deb --ctrl-tarfile "$deb" | tar -x -C "$tmp/control"
[ "$(cat "$tmp/control/conffiles" 2>/dev/null)" = "$sysconfdir/canopy/config.yaml" ] ||
    fail "conffiles is '$(cat "$tmp/control/conffiles" 2>/dev/null)', expected $sysconfdir/canopy/config.yaml"
for script in postinst prerm postrm; do
    s=$tmp/control/$script
    if [ ! -f "$s" ]; then fail "control file $script missing"; continue; fi
    [ -x "$s" ] || fail "control file $script is not executable"
    sh -n "$s" || fail "control file $script has a syntax error"
done
dpkg-deb --ctrl-tarfile "$deb" | tar -tvf - >"$tmp/control.list"
for script in postinst prerm postrm; do
    grep -Eq "^-rwxr-xr-x .* \./$script\$" "$tmp/control.list" || fail "control file $script is not mode 0755"
done

# --- the binaries run -------------------------------------------------------------------
for bin in canopyd canopy; do
    out=$("$root$bindir/$bin" --version 2>&1) || { fail "packaged $bin --version exited with $?: $out"; continue; }
    case "$out" in
        "$bin $version "*) pass "packaged $bin --version: $out" ;;
        *) fail "packaged $bin --version printed '$out', expected '$bin $version ...'" ;;
    esac
done

if [ "$failures" -ne 0 ]; then
    echo "check_package.sh: $failures check(s) failed; package contents:" >&2
    cat "$tmp/contents" >&2
    exit 1
fi
echo "check_package.sh: PASS"
