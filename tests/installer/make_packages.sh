#!/usr/bin/env bash
# Builds the installers from this build folder (as scripts/package.sh does), fresh: the tests
# that follow install and run what this writes to BUILD_DIR/packages.
set -euo pipefail
build=${1:?usage: make_packages.sh BUILD_DIR}
rm -rf "$build/packages"
cd "$build"
start=$SECONDS
cpack --config CPackConfig.cmake
chmod 755 packages/*.sh  # CPack leaves it writable by everyone
ls -l packages/
n=$(find packages -maxdepth 1 \( -name '*.deb' -o -name '*.tar.gz' -o -name '*.sh' \) | wc -l)
[ "$n" -ge 3 ] || { echo "FAIL: expected a .deb, a .tar.gz and a .sh, found $n packages"; exit 1; }
echo "packages made in $((SECONDS - start)) s"
