#!/usr/bin/env bash
# Installs what is missing, builds (Release), and makes both installers in the build folder's
# packages/ (build/packages/ unless MLMAMBA_BUILD_DIR says otherwise):
#   mlmamba-desktop_<version>-1_amd64.deb          the program for Debian 12 and its derivatives
#   mlmamba-desktop-cuda_<version>-1_amd64.deb     the CUDA backend (where nvcc was found)
#   mlmamba-desktop-<version>-linux-x86_64.sh      the offline bundle, self-extracting installer
#   mlmamba-desktop-<version>-linux-x86_64.tar.gz  the same bundle as an archive
# Extra arguments go to CMake's configure step. docs/install.md says how to install each.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/install-deps.sh"
"$root/scripts/build.sh" "$@"
build="${MLMAMBA_BUILD_DIR:-$root/build}"
rm -rf "$build/packages"
(cd "$build" && cpack --config CPackConfig.cmake)
# CPack leaves the self-extracting installer writable by everyone.
chmod 755 "$build"/packages/*.sh
echo
ls -l "$build/packages"
