#!/bin/sh
# smoke.sh PHASE [--local-port N] [--tls-port N]
#
# System test of an installed canopy package, run as root INSIDE the target system (a
# systemd-nspawn container from tests/system/nspawn.sh, or the Vagrant VM of
# packaging/vagrant/Vagrantfile). Prints one "ok - ..." or "not ok - ... (reason)" line per
# check and exits 1 if any check failed. The phases, in this order:
#
#   install  right after `apt-get install canopy_*.deb`: the unit is active and enabled,
#            started cleanly and logged "ready"; the CLI for root, for a member of group
#            canopy and (refused) for an ordinary user; a signed sample component deployed
#            through the CLI runs as ggc_user; the managed Mosquitto (canopy.LocalBroker)
#            runs and answers MQTT on its port; `systemctl restart` and `systemctl kill -s
#            KILL` (Restart=on-failure) both bring canopyd and the component back.
#   reboot   after a poweroff and a new boot of the same system: canopyd is enabled and
#            active again, with the component and the broker.
#   purge    `apt-get purge -y canopy`: no canopyd, component or canopy mosquitto process
#            is left, the unit, binaries, docs, the (modified) conffile /etc/canopy/config.yaml,
#            /var/lib/canopy, /var/log/canopy and /run/canopy are gone; the system users
#            canopy, ggc_user and groups canopy, ggc_group stay (packaging/debian/postrm
#            keeps them on purpose, as Debian practice recommends).
#
# The install phase changes the packaged configuration: it makes a signer key with `canopy
# keygen` (in /var/lib/canopy-smoke, this script's own folder, which the purge phase removes),
# lists its public key in deployment.trustedSigners (the packaged file requires signatures
# and trusts nobody), and sets services.canopy.LocalBroker.configuration.localPort/tlsPort
# to --local-port/--tls-port (default 21883/28883: Debian's own mosquitto.service, pulled in
# by Depends, may hold 1883; in a container sharing the host's network, the host may too).
# shellcheck disable=SC2317  # functions called through check/wait_for
set -u

PHASE=${1:-}
[ $# -gt 0 ] && shift
LOCAL_PORT=21883
TLS_PORT=28883
CLOUD_PORT=      # with it: a cloud link to 127.0.0.1:CLOUD_PORT (certificates in /systest/pki)
while [ $# -gt 0 ]; do
    case "$1" in
        --local-port) LOCAL_PORT=$2; shift 2 ;;
        --tls-port) TLS_PORT=$2; shift 2 ;;
        --cloud-port) CLOUD_PORT=$2; shift 2 ;;
        *) echo "smoke.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
case "$PHASE" in
    install|reboot|purge) ;;
    *) echo "usage: smoke.sh install|reboot|purge [--local-port N] [--tls-port N]" >&2; exit 2 ;;
esac
[ "$(id -u)" -eq 0 ] || { echo "smoke.sh: run as root" >&2; exit 2; }

UNIT=canopyd.service
CONFIG=/etc/canopy/config.yaml
SMOKE_DIR=/var/lib/canopy-smoke          # this script's own files (key, recipe)
COMPONENT=com.example.SmokeTest
OPERATOR=canopy-smoke-op                 # a member of group canopy
OTHER=canopy-smoke-other                 # an ordinary user
export LANG=C.UTF-8 PATH=/usr/sbin:/usr/bin:/sbin:/bin

failures=0
ok() { echo "ok - $*"; }
not_ok() {   # not_ok CHECK REASON
    echo "not ok - $1 ($2)"
    failures=$((failures + 1))
}
check() {    # check CHECK REASON-IF-FALSE COMMAND...
    what=$1 why=$2
    shift 2
    if "$@"; then ok "$what"; else not_ok "$what" "$why"; fi
}
diagnose() {
    echo "# --- systemctl status $UNIT"
    systemctl status --no-pager "$UNIT" 2>&1 | sed 's/^/# /' | tail -n 20
    echo "# --- journalctl -u $UNIT (last 30)"
    journalctl -u "$UNIT" --no-pager -n 30 2>&1 | sed 's/^/# /'
}
finish() {
    if [ "$failures" -ne 0 ]; then
        [ "$PHASE" != purge ] && diagnose
        echo "# smoke.sh $PHASE: $failures check(s) failed"
        exit 1
    fi
    echo "# smoke.sh $PHASE: all checks passed"
    exit 0
}

# --- helpers ------------------------------------------------------------------------------
# wait_for SECONDS COMMAND...: poll once a second until COMMAND succeeds.
wait_for() {
    n=$1
    shift
    while [ "$n" -gt 0 ]; do
        "$@" && return 0
        sleep 1
        n=$((n - 1))
    done
    "$@"
}
is_active() { [ "$(systemctl is-active "$UNIT" 2>/dev/null)" = active ]; }
prop() { systemctl show -p "$1" --value "$UNIT"; }
# A component's field from `canopy component details` (State, PID, Restarts, ...).
detail() { canopy component details "$1" 2>/dev/null | awk -v k="$2" '$1==k {print $2; exit}'; }
state_is() { [ "$(detail "$1" State)" = "$2" ]; }
running() { state_is "$1" RUNNING; }
has_group() { getent group "$1" >/dev/null; }
proc_user() { ps -o user= -p "$1" 2>/dev/null | tr -d ' '; }

# The LISTEN socket inodes for TCP port $1 (IPv4 and IPv6).
listen_inodes() {
    hex=$(printf '%04X' "$1")
    cat /proc/net/tcp /proc/net/tcp6 2>/dev/null |
        awk -v p=":$hex" 'substr($2, length($2) - 4) == p && $4 == "0A" {print $10}'
}
# Does process $1 own a listening socket on port $2?
pid_listens_on() {
    for ino in $(listen_inodes "$2"); do
        for fd in /proc/"$1"/fd/*; do
            [ "$(readlink "$fd" 2>/dev/null)" = "socket:[$ino]" ] && return 0
        done
    done
    return 1
}
# An MQTT 3.1.1 CONNECT (clean session, empty client id) to 127.0.0.1:$1; prints the CONNACK
# bytes. "20 02 00 00" is "connection accepted".
mqtt_connack() {
    # shellcheck disable=SC2016  # $1 is bash's
    timeout 5 bash -c '
        exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        printf "\020\014\000\004MQTT\004\002\000\074\000\000" >&3
        head -c 4 <&3 | od -An -tx1' _ "$1" 2>/dev/null | tr -s ' \n' ' ' | sed 's/^ //; s/ $//'
}

check_service_up() {   # after a start: active, enabled, clean
    if wait_for 30 is_active; then ok "$UNIT is active"; else not_ok "$UNIT is active" "is-active: $(systemctl is-active "$UNIT")"; fi
    en=$(systemctl is-enabled "$UNIT" 2>&1)
    check "$UNIT is enabled" "is-enabled: $en" [ "$en" = enabled ]
    res=$(prop Result)
    check "$UNIT Result=success (NRestarts=$(prop NRestarts), SubState=$(prop SubState))" "Result=$res" [ "$res" = success ]
}

check_component() {    # check_component WHEN
    if wait_for 60 running "$COMPONENT"; then
        ok "$COMPONENT is RUNNING ($1)"
    else
        not_ok "$COMPONENT is RUNNING ($1)" "state: $(detail "$COMPONENT" State) $(canopy component details "$COMPONENT" 2>&1 | awk '$1=="Reason"' | head -n 1)"
        return 1
    fi
    cpid=$(detail "$COMPONENT" PID)
    u=$(proc_user "${cpid:-0}")
    check "$COMPONENT process $cpid runs as ggc_user ($1): $(ps -o user=,args= -p "${cpid:-0}" 2>/dev/null)" "user '$u'" [ "$u" = ggc_user ]
}

check_broker() {       # check_broker WHEN
    if wait_for 30 running canopy.LocalBroker; then
        ok "canopy.LocalBroker is RUNNING ($1)"
    else
        not_ok "canopy.LocalBroker is RUNNING ($1)" "state: $(detail canopy.LocalBroker State); $(canopy component details canopy.LocalBroker 2>&1 | awk '$1=="Reason"' | head -n 1)"
        return 1
    fi
    bpid=$(detail canopy.LocalBroker PID)
    bcomm=$(ps -o comm= -p "${bpid:-0}" 2>/dev/null)
    bu=$(proc_user "${bpid:-0}")
    check "broker process $bpid is mosquitto running as user mosquitto ($1)" "comm '$bcomm', user '$bu'" \
        [ "$bcomm/$bu" = mosquitto/mosquitto ]
    check "broker pid $bpid listens on localPort $LOCAL_PORT ($1)" "no listening socket of pid $bpid on port $LOCAL_PORT" \
        pid_listens_on "$bpid" "$LOCAL_PORT"
    check "broker pid $bpid listens on tlsPort $TLS_PORT ($1)" "no listening socket of pid $bpid on port $TLS_PORT" \
        pid_listens_on "$bpid" "$TLS_PORT"
    ack=$(mqtt_connack "$LOCAL_PORT")
    check "MQTT CONNECT to 127.0.0.1:$LOCAL_PORT is accepted ($1)" "CONNACK bytes '$ack', expected '20 02 00 00'" \
        [ "$ack" = "20 02 00 00" ]
}

# ================================================================================ install
phase_install() {
    check_service_up
    # The package's postinst hands port 1883 over from Debian's own mosquitto.service.
    if [ -f /lib/systemd/system/mosquitto.service ]; then
        en=$(systemctl is-enabled mosquitto.service 2>/dev/null); act=$(systemctl is-active mosquitto.service 2>/dev/null)
        check "Debian's mosquitto.service is disabled and stopped by the package" "is-enabled=$en is-active=$act" \
            [ "$en" != enabled -a "$act" != active ]
    fi
    nr=$(prop NRestarts)
    check "$UNIT NRestarts=0 after installation" "NRestarts=$nr" [ "$nr" = 0 ]
    if journalctl -u "$UNIT" --no-pager -o cat 2>/dev/null | grep -q 'canopyd .* ready root=/var/lib/canopy '; then
        ok "journal has canopyd's start line: $(journalctl -u "$UNIT" --no-pager -o cat | grep 'ready root=' | tail -n 1)"
    else
        not_ok "journal has canopyd's start line" "no 'canopyd ... ready root=/var/lib/canopy' in journalctl -u $UNIT"
    fi

    ver=$(dpkg-query -W -f='${Version}' canopy 2>/dev/null)
    ver=${ver%-*}
    for bin in canopy canopyd; do
        out=$("$bin" --version 2>&1)
        case "$out" in
            "$bin $ver "*) ok "$bin --version: $out" ;;
            *) not_ok "$bin --version" "printed '$out', expected '$bin $ver ...'" ;;
        esac
    done

    # --- the CLI for root, an operator (group canopy) and an ordinary user
    out=$(canopy status 2>&1); rc=$?
    check "canopy status as root" "exit $rc: $(echo "$out" | head -n 2)" [ "$rc" -eq 0 ]
    getent passwd "$OPERATOR" >/dev/null || useradd --no-create-home --shell /bin/sh --groups canopy "$OPERATOR"
    getent passwd "$OTHER" >/dev/null || useradd --no-create-home --shell /bin/sh "$OTHER"
    out=$(runuser -u "$OPERATOR" -- canopy status 2>&1); rc=$?
    check "canopy status as $OPERATOR (group canopy)" "exit $rc: $(echo "$out" | head -n 2)" [ "$rc" -eq 0 ]
    out=$(runuser -u "$OTHER" -- canopy status 2>&1); rc=$?
    if [ "$rc" -ne 0 ] && echo "$out" | grep -q 'permission denied.*run as root or as a member of the canopy group'; then
        ok "canopy status as $OTHER is refused (exit $rc): $out"
    else
        not_ok "canopy status as $OTHER is refused with a clear message" "exit $rc: $out"
    fi

    # --- configuration: a trusted signer and the broker's ports, then a restart
    rm -rf "${SMOKE_DIR:?}"
    mkdir -p "$SMOKE_DIR/recipes"
    chmod 0700 "$SMOKE_DIR"
    canopy keygen --out "$SMOKE_DIR/signer" >/dev/null 2>&1 ||
        not_ok "canopy keygen" "canopy keygen --out $SMOKE_DIR/signer failed"
    if grep -q '^        trustedSigners: \[\]$' "$CONFIG" && ! grep -q 'canopy.LocalBroker:' "$CONFIG"; then
        sed -i "s|^        trustedSigners: \[\]\$|        trustedSigners:\n          - publicKeyPath: $SMOKE_DIR/signer.pub|" "$CONFIG"
        # services: is the file's last top-level key, so the broker's section goes at the end.
        printf '  canopy.LocalBroker:\n    configuration:\n      localPort: %s\n      tlsPort: %s\n' \
            "$LOCAL_PORT" "$TLS_PORT" >>"$CONFIG"
        ok "configured $CONFIG: trustedSigners $SMOKE_DIR/signer.pub, broker ports $LOCAL_PORT/$TLS_PORT"
        if [ -n "$CLOUD_PORT" ]; then
            # The cloud link (device certificate from the caller's test PKI) and a bridge mapping.
            # (in this script's folder, not /etc/canopy: files the package does not own would
            # keep /etc/canopy after a purge, as Debian policy says they must)
            install -m 0644 /systest/pki/ca.crt /systest/pki/client.crt "$SMOKE_DIR/"
            install -m 0600 /systest/pki/client.key "$SMOKE_DIR/"
            sed -i -e "s|^  certificateFilePath: \"\"\$|  certificateFilePath: $SMOKE_DIR/client.crt|" \
                -e "s|^  privateKeyPath: \"\"\$|  privateKeyPath: $SMOKE_DIR/client.key|" \
                -e "s|^  rootCaPath: \"\"\$|  rootCaPath: $SMOKE_DIR/ca.crt|" \
                -e 's|^      iotDataEndpoint: ""$|      iotDataEndpoint: "127.0.0.1"|' \
                -e "s|^        port: 8883\$|        port: $CLOUD_PORT|" "$CONFIG"
            printf '  canopy.MqttBridge:\n    configuration:\n      mqttTopicMapping:\n        smoke: {topic: "smoke/#", source: LocalMqtt, target: IotCore, targetTopicPrefix: "gw/"}\n' >>"$CONFIG"
            ok "configured the cloud link to 127.0.0.1:$CLOUD_PORT and a bridge mapping smoke/# -> IotCore"
        fi
    else
        not_ok "configure $CONFIG" "it is not the packaged file (no 'trustedSigners: []', or a canopy.LocalBroker section already)"
    fi
    systemctl restart "$UNIT"
    check_service_up

    # --- a signed local deployment
    cat >"$SMOKE_DIR/recipes/$COMPONENT-1.0.0.yaml" <<'RECIPE'
---
RecipeFormatVersion: '2020-01-25'
ComponentName: com.example.SmokeTest
ComponentVersion: '1.0.0'
ComponentDescription: System test component (tests/system/smoke.sh).
ComponentPublisher: Canopy
Manifests:
  - Platform:
      os: linux
Lifecycle:
  Run: |
    echo "smoke test component up as $(id -un)"
    exec sleep 86400
RECIPE
    canopy sign "$SMOKE_DIR/recipes/$COMPONENT-1.0.0.yaml" --key "$SMOKE_DIR/signer.key" >/dev/null 2>&1 ||
        not_ok "canopy sign" "canopy sign failed"
    out=$(canopy deployment create --recipeDir "$SMOKE_DIR/recipes" --merge "$COMPONENT=1.0.0" --wait --timeout 120 2>&1); rc=$?
    check "canopy deployment create --merge $COMPONENT=1.0.0 --wait succeeds" "exit $rc: $(echo "$out" | tail -n 3 | tr '\n' ' ')" [ "$rc" -eq 0 ]
    check_component "after deployment"
    check_broker "after deployment"
    check_bridge

    # --- systemctl restart
    old=$(detail "$COMPONENT" PID)
    systemctl restart "$UNIT"; rc=$?
    check "systemctl restart $UNIT" "exit $rc" [ "$rc" -eq 0 ]
    check_service_up
    check_component "after systemctl restart"
    new=$(detail "$COMPONENT" PID)
    check "the component was restarted (pid $old -> $new)" "same pid $new" [ "$old" != "$new" ]
    check_broker "after systemctl restart"

    # --- measured (docs/PERFORMANCE.md): stop, then start to active (READY=1) and to the
    # component RUNNING; canopyd's PSS once settled. Printed, never asserted.
    systemctl stop "$UNIT"
    t0=$(date +%s%N)
    systemctl start "$UNIT"
    t1=$(date +%s%N)
    component_running() { [ "$(detail "$COMPONENT" State)" = RUNNING ]; }
    n=0
    while ! component_running && [ "$n" -lt 300 ]; do sleep 0.05; n=$((n + 1)); done
    t2=$(date +%s%N)
    sleep 2
    pss=$(awk '/^Pss:/{print $2}' "/proc/$(prop MainPID)/smaps_rollup" 2>/dev/null)
    echo "# measure: systemctl start -> active $(( (t1 - t0) / 1000000 )) ms, -> $COMPONENT RUNNING $(( (t2 - t0) / 1000000 )) ms (state polled every 50 ms through the CLI), canopyd PSS ${pss:-?} kB"
    check_service_up

    # --- SIGKILL: systemd restarts canopyd (Restart=on-failure, RestartSec=10s)
    before=$(prop NRestarts)
    old=$(detail "$COMPONENT" PID)
    systemctl kill -s KILL "$UNIT"
    restarted() { [ "$(prop NRestarts)" -gt "$before" ] && is_active; }
    if wait_for 60 restarted; then
        ok "after systemctl kill -s KILL, systemd restarted $UNIT (NRestarts $before -> $(prop NRestarts))"
    else
        not_ok "systemd restarts $UNIT after SIGKILL" "NRestarts $(prop NRestarts), is-active $(systemctl is-active "$UNIT")"
    fi
    check_component "after SIGKILL and restart"
    check "the old component process $old is gone" "pid $old still runs: $(ps -o user=,args= -p "$old")" \
        sh -c "! kill -0 $old 2>/dev/null"
    check_broker "after SIGKILL and restart"
}

# ================================================================================ reboot
# MQTT 3.1.1 CONNECT, then a QoS 0 PUBLISH of "from-the-container" on smoke/hello, to
# 127.0.0.1:$1 (the bridge maps smoke/# to the cloud).
mqtt_publish_hello() {
    # shellcheck disable=SC2016  # $1 is bash's
    timeout 5 bash -c '
        exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        printf "\020\014\000\004MQTT\004\002\000\074\000\000" >&3
        head -c 4 <&3 >/dev/null
        printf "\060\037\000\013smoke/hellofrom-the-container" >&3
        sleep 0.5
        printf "\340\000" >&3' _ "$1"
}

# The cloud link is up and the bridge has the local broker: then publish the hello.
check_bridge() {
    [ -n "$CLOUD_PORT" ] || return 0
    bridge_ready() { canopy status 2>/dev/null | grep -q '^cloud link *connected' &&
        canopy status 2>/dev/null | grep -q '^MQTT bridge .*local broker 127.0.0.1:[0-9]* connected'; }
    if wait_for 30 bridge_ready; then ok "the cloud link and the bridge are connected"; else not_ok "the cloud link and the bridge are connected" "$(canopy status 2>&1 | grep -i -e cloud -e bridge)"; fi
    if mqtt_publish_hello "$LOCAL_PORT"; then ok "published smoke/hello on the local broker"; else not_ok "published smoke/hello on the local broker" "no connection to 127.0.0.1:$LOCAL_PORT"; fi
}

phase_reboot() {
    check_service_up
    nr=$(prop NRestarts)
    check "$UNIT NRestarts=0 in this boot" "NRestarts=$nr" [ "$nr" = 0 ]
    if journalctl -b -u "$UNIT" --no-pager -o cat 2>/dev/null | grep -q 'canopyd .* ready root='; then
        ok "journal of this boot has canopyd's start line"
    else
        not_ok "journal of this boot has canopyd's start line" "no 'ready root=' in journalctl -b -u $UNIT"
    fi
    check_component "after reboot"
    check_broker "after reboot"
}

# ================================================================================ purge
phase_purge() {
    cpid=$(detail "$COMPONENT" PID)
    bpid=$(detail canopy.LocalBroker PID)
    dpid=$(prop MainPID)
    echo "# before purge: canopyd $dpid, $COMPONENT ${cpid:-none}, broker ${bpid:-none}"
    out=$(DEBIAN_FRONTEND=noninteractive apt-get purge -y canopy 2>&1); rc=$?
    check "apt-get purge -y canopy" "exit $rc: $(echo "$out" | tail -n 3 | tr '\n' ' ')" [ "$rc" -eq 0 ]
    st=$(dpkg-query -W -f='${db:Status-Abbrev}' canopy 2>/dev/null)
    check "canopy is not installed any more (dpkg status '${st:-unknown}')" "dpkg status '$st'" \
        sh -c "[ -z '$st' ] || [ '$st' = 'un ' ] || [ '$st' = 'pn ' ]"

    # Processes: canopyd, the component and canopy's mosquitto are gone.
    for p in "$dpid:canopyd" "$cpid:$COMPONENT" "$bpid:canopy.LocalBroker mosquitto"; do
        pid=${p%%:*}
        if [ -z "$pid" ] || [ "$pid" = 0 ]; then continue; fi
        check "${p#*:} (pid $pid) is gone" "still runs: $(ps -o user=,args= -p "$pid")" sh -c "! kill -0 $pid 2>/dev/null"
    done
    left=$(pgrep -a -x canopyd)
    check "no canopyd process is left" "$left" [ -z "$left" ]
    left=$(pgrep -a -u ggc_user)
    check "no ggc_user process is left" "$left" [ -z "$left" ]
    # Debian's own mosquitto.service (the mosquitto package stays installed) is not canopy's.
    deb_mosq=$(systemctl show -p MainPID --value mosquitto.service 2>/dev/null)
    left=$(pgrep -x mosquitto | grep -vx "${deb_mosq:-0}" | tr '\n' ' ')
    check "no mosquitto process is left (other than Debian's mosquitto.service)" "pids $left" [ -z "$left" ]

    # The unit and its enablement.
    check "the unit file is removed" "/usr/lib/systemd/system/$UNIT or /lib/systemd/system/$UNIT exists" \
        sh -c "[ ! -e /usr/lib/systemd/system/$UNIT ] && [ ! -e /lib/systemd/system/$UNIT ]"
    load=$(systemctl show -p LoadState --value "$UNIT")
    check "systemd no longer knows $UNIT (LoadState=$load)" "LoadState=$load" [ "$load" = not-found ]
    links=$(find /etc/systemd/system -name "$UNIT*" 2>/dev/null | tr '\n' ' ')
    check "no enablement symlink is left in /etc/systemd/system" "$links" [ -z "$links" ]
    state=$(find /var/lib/systemd/deb-systemd-helper-enabled /var/lib/systemd/deb-systemd-helper-masked \
        -name "$UNIT*" 2>/dev/null | tr '\n' ' ')
    check "deb-systemd-helper forgot $UNIT" "$state" [ -z "$state" ]

    # The package's files, the (modified) conffile, the state, the logs.
    for f in /usr/bin/canopyd /usr/bin/canopy /usr/share/doc/canopy /etc/canopy/config.yaml /etc/canopy \
        /var/lib/canopy /var/log/canopy /run/canopy; do
        check "$f is removed" "it exists" sh -c "[ ! -e '$f' ] && [ ! -L '$f' ]"
    done

    # The system users and groups stay (packaging/debian/postrm), locked and without a shell.
    for u in canopy ggc_user; do
        sh_=$(getent passwd "$u" | cut -d: -f7)
        check "system user $u is kept, with shell /usr/sbin/nologin" "getent passwd $u: '$(getent passwd "$u")'" \
            [ "$sh_" = /usr/sbin/nologin ]
    done
    for g in canopy ggc_group; do
        check "system group $g is kept" "no group $g" has_group "$g"
    done

    # This script's own leftovers.
    for u in "$OPERATOR" "$OTHER"; do
        if getent passwd "$u" >/dev/null; then userdel "$u" >/dev/null 2>&1 || true; fi
    done
    rm -rf "${SMOKE_DIR:?}"
}

case "$PHASE" in
    install) phase_install ;;
    reboot) phase_reboot ;;
    purge) phase_purge ;;
esac
finish
