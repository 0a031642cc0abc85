#!/usr/bin/env bash
# Installs everything Canopy needs to build and test on Debian 12, from Debian's packages
# (and npm for the JavaScript SDK test client). Idempotent: a second run installs nothing.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config git
  libboost1.81-dev libssl-dev libpaho-mqttpp-dev libpaho-mqtt-dev nlohmann-json3-dev
  libsqlite3-dev libspdlog-dev libyaml-cpp-dev libgtest-dev libgmock-dev libsystemd-dev
  libcli11-dev zlib1g-dev libmosquitto-dev libsimdjson-dev libzip-dev libacl1-dev
  mosquitto mosquitto-clients
  # the cloud link's TPM path and its tests: software TPM, resource manager, OpenSSL provider
  swtpm swtpm-tools tpm2-tools tpm2-openssl tpm2-abrmd libtss2-tcti-tabrmd0 dbus socat
  # test and packaging tools
  systemd dpkg-dev file openssl procps iproute2 qemu-system-x86 qemu-utils
  # tests/system: a Debian 12 rootfs booted with systemd-nspawn
  debootstrap systemd-container
  # libFuzzer and sanitizer runtimes (g++ has no libFuzzer)
  clang libclang-rt-14-dev
)

if [ "$(id -u)" -ne 0 ]; then
  echo "setup.sh: run as root (it installs Debian packages)" >&2
  exit 1
fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node.js and npm for the AWS IoT Device SDK test client: Debian's unless a Node.js is present.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  missing+=(nodejs npm)
fi

if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup.sh: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "setup.sh: all Debian packages present"
fi

# Optional extra steps of later issues (test clients and so on) live beside this script.
for extra in "$(dirname "$0")"/setup.d/*.sh; do
  [ -e "$extra" ] || continue
  bash "$extra"
done
