#!/usr/bin/env bash
# Installs the dependencies, builds, starts canopyd (state under .canopy-root/ in the checkout,
# logs on the console, recipes must be signed by the local key in .canopy-keys/), and deploys the sample
# components of recipes/ and artifacts/: com.example.HelloWorld, com.example.Sensor and
# com.example.Subscriber (the last two use the JS SDK in tests/js/node_modules). Then it waits
# for canopyd; Ctrl-C stops canopyd and its components. Arguments go to canopyd.
#
# As root, canopyd runs components as ggc_user, which must be able to traverse every folder
# above .canopy-root/ and tests/js/node_modules. When it cannot (a checkout under /root, mode
# 0700), the samples are not deployed and the script says which folder to open.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
./scripts/setup.sh
./scripts/build.sh

root="$repo/.canopy-root"
canopyd="$repo/build/src/main/canopyd"
canopy=("$repo/build/src/cli/canopy" --root "$root")
sdk="$repo/tests/js/node_modules"

mkdir -p "$root"
chmod 0755 "$root"  # components running as ggc_user traverse it

# The first folder on the way to $1 that ggc_user cannot enter (empty when it can read $1).
blocked_for_ggc_user() {
  local target=$1 dir=/ part
  runuser -u ggc_user -- test -r "$target" 2>/dev/null && return 0
  IFS=/ read -ra parts <<<"${target#/}"
  for part in "${parts[@]}"; do
    dir="${dir%/}/$part"
    if ! runuser -u ggc_user -- test -x "$dir" 2>/dev/null; then
      echo "$dir"
      return 0
    fi
  done
  echo "$target"
}

deploy_samples=1
if [ "$(id -u)" -eq 0 ]; then
  for target in "$root" "$sdk/aws-iot-device-sdk-v2/package.json"; do
    blocked=$(blocked_for_ggc_user "$target")
    if [ -n "$blocked" ]; then
      cat >&2 <<EOF
run.sh: WARNING: components run as ggc_user, which cannot reach $target
run.sh: because of $blocked ($(stat -c '%A %U' "$blocked" 2>/dev/null || echo 'missing')).
run.sh: Fix: let others traverse it (chmod o+x $blocked — or a+rx for node_modules), or check
run.sh: the repository out somewhere readable, e.g. /opt/canopy. canopyd starts anyway, without the samples.
EOF
      deploy_samples=0
      break
    fi
  done
fi

canopyd_pid=
stop_canopyd() {
  trap - EXIT INT TERM
  if [ -n "$canopyd_pid" ] && kill -0 "$canopyd_pid" 2>/dev/null; then
    kill -TERM "$canopyd_pid" 2>/dev/null || true
    wait "$canopyd_pid" 2>/dev/null || true
  fi
}
trap stop_canopyd EXIT
trap 'stop_canopyd; exit 130' INT
trap 'stop_canopyd; exit 143' TERM

# Signed deployments are the default path: a local signer key is made on the first run (kept in
# .canopy-keys/, never on a real device), canopyd trusts only it, and the samples are signed
# into .canopy-keys/recipes/ before they are deployed.
keys="$repo/.canopy-keys"
mkdir -p "$keys"
chmod 0700 "$keys"
if [ ! -f "$keys/signer.key" ]; then
  "${canopy[0]}" keygen --out "$keys/signer"
fi
rm -rf "$keys/recipes"
mkdir -p "$keys/recipes"
cp recipes/*.yaml recipes/*.json "$keys/recipes/" 2>/dev/null || true
for r in "$keys"/recipes/*.yaml "$keys"/recipes/*.json; do
  if [ -f "$r" ]; then "${canopy[0]}" sign "$r" --key "$keys/signer.key" >/dev/null; fi
done
printf 'services:\n  canopy.Nucleus:\n    configuration:\n      deployment:\n        requireSignatures: true\n        trustedSigners:\n          - publicKeyPath: %s\n' \
  "$keys/signer.pub" > "$keys/config.yaml"

"$canopyd" --root "$root" --config "$keys/config.yaml" --foreground "$@" &
canopyd_pid=$!

ready=0
for _ in $(seq 1 40); do  # 20 s
  if ! kill -0 "$canopyd_pid" 2>/dev/null; then
    status=0
    wait "$canopyd_pid" || status=$?
    canopyd_pid=
    echo "run.sh: canopyd exited with code $status before it was ready" >&2
    exit "$status"
  fi
  if "${canopy[@]}" status >/dev/null 2>&1; then
    ready=1
    break
  fi
  sleep 0.5
done
if [ "$ready" -ne 1 ]; then
  echo "run.sh: canopyd did not answer 'canopy status' within 20 s; stopping it" >&2
  exit 1
fi

if [ "$deploy_samples" -eq 1 ]; then
  update_config=$(printf '{"com.example.Sensor":{"MERGE":{"nodeModules":"%s"}},"com.example.Subscriber":{"MERGE":{"nodeModules":"%s"}}}' "$sdk" "$sdk")
  if ! "${canopy[@]}" deployment create --recipeDir "$keys/recipes" --artifactDir artifacts \
      --merge com.example.HelloWorld=1.0.0 --merge com.example.Sensor=1.0.0 --merge com.example.Subscriber=1.0.0 \
      --update-config "$update_config" --wait; then
    echo "run.sh: the sample deployment failed (see above); canopyd keeps running" >&2
  fi
fi

echo
echo "canopyd is running (pid $canopyd_pid, root $root). Try:"
echo "  ${canopy[*]} component list"
if [ "$deploy_samples" -eq 1 ]; then echo "  ${canopy[*]} logs com.example.Subscriber -f"; fi
echo "Ctrl-C stops canopyd and its components."

status=0
wait "$canopyd_pid" || status=$?
canopyd_pid=
exit "$status"
