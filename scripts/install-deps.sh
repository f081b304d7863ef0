#!/usr/bin/env bash
# Installs, from Debian 12's packages, whatever the build, tests, demo and benchmarks need and
# this machine lacks. Idempotent; quiet when everything is present. Needs root (or sudo).
set -euo pipefail
packages=(g++ clang cmake ninja-build pkg-config meson catch2 libeigen3-dev libxtensor-dev
          libbenchmark-dev libopenmpi-dev openmpi-bin libtorch-dev libgloo-dev python3 gnuplot-nox
          libespeak-ng-dev espeak-ng-data fortunes-min)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "steadyloss: installing ${missing[*]}" >&2
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
