#!/usr/bin/env bash
# Installs what is missing, builds, and runs the whole test suite (tests needing a GPU skip
# themselves where there is none).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/install-deps.sh"
"$root/scripts/build.sh"
build="${MLMAMBA_BUILD_DIR:-$root/build}"
cd "$build"
ctest --output-on-failure -j "$(nproc)" --timeout 600
