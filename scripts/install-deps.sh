#!/usr/bin/env bash
# Installs the Debian 12 packages the build and the tests need, only those missing.
# Runs as root, or through sudo otherwise. Safe to run again.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config
  qt6-base-dev qt6-multimedia-dev libopencv-dev nlohmann-json3-dev
  libopenblas-dev libicu-dev libgtest-dev libgmock-dev
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good
  xvfb xauth x11-apps imagemagick fonts-dejavu-core dpkg-dev file
  qt6-image-formats-plugins patchelf lintian desktop-file-utils appstream
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: everything needed is installed"
  exit 0
fi

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: run as root or install sudo" >&2; exit 1; }
  sudo_cmd=(sudo)
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
