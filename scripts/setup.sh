#!/usr/bin/env bash
# Installs every Debian 12 package cp2 needs to build, run and test; idempotent:
# `apt-get update` runs once, and only when something is missing.
set -euo pipefail
PKGS=(
  build-essential cmake ccache pkg-config
  libtorch-dev libgloo-dev libopenblas0-pthread   # LibTorch; c10d headers need gloo; fast BLAS
  libdnnl-dev                                      # oneDNN headers: Winograd convolutions (train.conv_algorithm)
  libcli11-dev nlohmann-json3-dev libyaml-cpp-dev libfmt-dev zlib1g-dev libpng-dev libjpeg-dev
  libopencv-dev
  libgtest-dev
  dataset-fashion-mnist                             # built-in real data (cp2 synth --source fashion-mnist)
  chromium                                          # tests only: renders cp2 report pages headless
  python3 python3-torch python3-torchvision        # tests only: PyTorch oracle for parity
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
else
  echo "setup: all ${#PKGS[@]} packages present"
fi
