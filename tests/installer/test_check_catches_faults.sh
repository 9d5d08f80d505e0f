#!/usr/bin/env bash
# The library check must fail on a broken bundle: one with a library taken out, and one whose
# program searches a folder outside the bundle. Otherwise a passing check would prove nothing.
# Usage: test_check_catches_faults.sh PACKAGES_DIR SOURCE_DIR VERSION
set -euo pipefail
pkgs=$(readlink -f "${1:?usage: test_check_catches_faults.sh PACKAGES_DIR SOURCE_DIR VERSION}")
src=$(readlink -f "${2:?source dir}")
version=${3:?version}
fail() { echo "FAIL: $*"; exit 1; }
shopt -s nullglob
tgz=("$pkgs"/mlmamba-desktop-"$version"-linux-*.tar.gz)
[ ${#tgz[@]} -eq 1 ] || fail "expected one bundle .tar.gz in $pkgs"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tar -xzf "${tgz[0]}" -C "$work"
b=$(echo "$work"/mlmamba-desktop-*)
check="$src/installer/bundle/check-libraries.sh"

echo "== a library missing from the bundle"
mv "$b/lib/libQt6Core.so.6" "$work/"
if out=$("$check" "$b" 2>&1); then fail "the check passed without libQt6Core.so.6"; fi
echo "$out" | grep -q "libQt6Core.so.6 resolves outside the bundle" || fail "the check did not name libQt6Core.so.6: $out"
echo "$out" | tail -1
mv "$work/libQt6Core.so.6" "$b/lib/"

echo "== a search path outside the bundle"
patchelf --set-rpath /usr/lib/x86_64-linux-gnu "$b/libexec/mlmamba-cli"
if out=$("$check" "$b" 2>&1); then fail "the check passed with an absolute search path"; fi
echo "$out" | grep -q "search path outside the bundle" || fail "the check did not report the search path: $out"
echo "$out" | tail -1
echo "PASS: the library check fails on broken bundles"
