#!/usr/bin/env bash
# tests/deps.sh - install everything autorthanc needs to build and test, from
# Debian's packages.  Idempotent: when every package is already installed it
# touches nothing (no apt-get at all).  Extra package names may be given as
# arguments.  The install never starts a system service (policy-rc.d), so the
# Debian `orthanc` package does not leave an Orthanc on the default ports; the
# tests start their own Orthancs on ports chosen at run time anyway.
set -euo pipefail

packages=(
  build-essential cmake pkg-config
  liblua5.4-dev lua5.4 lua-cjson lua-cjson-dev
  libcurl4-openssl-dev libyaml-dev libsqlite3-dev libssl-dev libreadline-dev
  libjansson-dev
  libyajl-dev
  orthanc dcmtk
  python3 python3-yaml
  curl ca-certificates
  # fuzzing (tests/fuzz/run.sh) and the benchmark's peak-RSS measure
  clang libclang-rt-14-dev time
  # the deployment stack run natively (tests/integration/test_stack.py)
  postgresql orthanc-postgresql nginx
)
packages+=("$@")

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)
  [[ "$status" == ii* ]] || missing+=("$p")
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "deps: all ${#packages[@]} packages already installed"
  exit 0
fi

echo "deps: installing ${missing[*]}"
sudo=()
if [[ $(id -u) -ne 0 ]]; then
  sudo=(sudo)
fi

# Forbid service starts during the install (invoke-rc.d honours exit 101),
# unless the machine already has a policy; ours is removed afterwards.
policy=/usr/sbin/policy-rc.d
own_policy=0
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\n# tests/deps.sh: no service starts during package installs\nexit 101\n' |
    "${sudo[@]}" tee "$policy" >/dev/null
  "${sudo[@]}" chmod 755 "$policy"
  own_policy=1
fi
cleanup() {
  if [[ $own_policy -eq 1 ]]; then "${sudo[@]}" rm -f "$policy"; fi
}
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -q
"${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
echo "deps: done"
