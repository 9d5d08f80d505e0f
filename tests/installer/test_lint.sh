#!/usr/bin/env bash
# Lints what the installers ship: lintian on each .deb (errors and warnings fail; the packages'
# overrides say why a tag does not apply), desktop-file-validate on the menu entry and
# appstreamcli on the metainfo, both as committed and as installed by the .deb.
# Usage: test_lint.sh PACKAGES_DIR SOURCE_DIR
set -euo pipefail
pkgs=$(readlink -f "${1:?usage: test_lint.sh PACKAGES_DIR SOURCE_DIR}")
src=$(readlink -f "${2:?source dir}")
fail() { echo "FAIL: $*"; exit 1; }
shopt -s nullglob
debs=("$pkgs"/*.deb)
[ ${#debs[@]} -ge 1 ] || fail "no .deb in $pkgs"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

bad=()
for deb in "${debs[@]}"; do
  echo "== lintian $(basename "$deb")"
  # --fail-on warning: a new warning needs a fix or an override with its reason.
  lintian --fail-on error,warning --display-info "$deb" || bad+=("$(basename "$deb")")
done
[ ${#bad[@]} -eq 0 ] || fail "lintian found errors or warnings in ${bad[*]}"

main=("$pkgs"/mlmamba-desktop_*.deb)
dpkg-deb -x "${main[0]}" "$work/deb"
for entry in "$src/resources/mlmamba-desktop.desktop" "$work/deb/usr/share/applications/mlmamba-desktop.desktop"; do
  echo "== desktop-file-validate ${entry#"$work"/}"
  out=$(desktop-file-validate "$entry" 2>&1) || fail "desktop-file-validate: $out"
  # It exits 0 on hints and warnings too: any output counts.
  [ -z "$out" ] || fail "desktop-file-validate: $out"
done
for meta in "$src/resources/mlmamba-desktop.metainfo.xml" "$work/deb/usr/share/metainfo/mlmamba-desktop.metainfo.xml"; do
  echo "== appstreamcli validate --no-net ${meta#"$work"/}"
  appstreamcli validate --no-net --pedantic "$meta" || fail "appstreamcli validate"
done
echo "PASS: lintian, desktop-file-validate and appstreamcli are clean"
