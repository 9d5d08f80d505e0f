#!/usr/bin/env bash
# The offline bundle: the .tar.gz unpacked into a fresh folder passes the library check and runs
# in place; the self-extracting .sh installs it for a user (~/.local), it runs from there, and its
# uninstaller removes every file it put there.
# Usage: test_bundle.sh PACKAGES_DIR SOURCE_DIR VERSION
set -euo pipefail
pkgs=$(readlink -f "${1:?usage: test_bundle.sh PACKAGES_DIR SOURCE_DIR VERSION}")
src=$(readlink -f "${2:?source dir}")
version=${3:?version}
fail() { echo "FAIL: $*"; exit 1; }
# The "text" of mlmamba-cli generate --json (compact JSON, one object): printed, and non-empty.
answer_of() {
  local text
  text=$(sed -n 's/.*"text":"\([^"]*\)".*/\1/p')
  echo "answer: $text"
  [ -n "${text// /}" ]
}
shopt -s nullglob
tgz=("$pkgs"/mlmamba-desktop-"$version"-linux-*.tar.gz)
sh=("$pkgs"/mlmamba-desktop-"$version"-linux-*.sh)
[ ${#tgz[@]} -eq 1 ] && [ ${#sh[@]} -eq 1 ] || fail "expected one bundle .tar.gz and one .sh in $pkgs"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Answers a question about a sample with the bundle's own default model; prints the answer.
ask() {
  local cli=$1 sample=$2 out
  out=$(env -u LD_LIBRARY_PATH -u QT_PLUGIN_PATH "$cli" generate --image "$sample" \
    --prompt "How many shapes are there?" --max-tokens 24 --device cpu --json) || return 1
  echo "$out" | answer_of
}
self_check() {
  local desktop=$1 sample=$2
  env -u LD_LIBRARY_PATH -u QT_PLUGIN_PATH QT_QPA_PLATFORM=offscreen XDG_DATA_HOME="$work/data" \
    XDG_CONFIG_HOME="$work/config" XDG_RUNTIME_DIR="$work" "$desktop" --self-check "$sample"
}

echo "== .tar.gz: unpack into a fresh folder"
mkdir "$work/tgz"
tar -xzf "${tgz[0]}" -C "$work/tgz"
bundle=("$work"/tgz/*)
[ ${#bundle[@]} -eq 1 ] && [ -d "${bundle[0]}" ] || fail "the .tar.gz does not hold one top folder"
b=${bundle[0]}
for f in bin/mlmamba-desktop bin/mlmamba-cli libexec/qt.conf install.sh lib/qt6/plugins/platforms/libqxcb.so \
  lib/qt6/plugins/platforms/libqoffscreen.so lib/qt6/plugins/imageformats/libqjpeg.so \
  share/mlmamba/models/shapes-demo/config.json; do
  [ -e "$b/$f" ] || fail "the bundle lacks $f"
done
[ ! -e "$b/lib/mlmamba/libmlmamba-cuda.so" ] || fail "the CUDA module is in the bundle (see installer/CMakeLists.txt)"
for lib in libQt6Core.so.6 libQt6Widgets.so.6 libopencv_core.so.406 libopencv_imgcodecs.so.406 libopenblas.so.0; do
  [ -e "$b/lib/$lib" ] || fail "the bundle lacks $lib"
done

echo "== every library resolves inside the bundle or to the base system"
"$src/installer/bundle/check-libraries.sh" "$b"

echo "== it runs in place"
[ "$(env -u LD_LIBRARY_PATH "$b/bin/mlmamba-cli" --version)" = "mlmamba-cli $version" ] || fail "version"
ask "$b/bin/mlmamba-cli" "$b/share/mlmamba/samples/shapes-2.png" || fail "mlmamba-cli in the unpacked bundle"
self_check "$b/bin/mlmamba-desktop" "$b/share/mlmamba/samples/shapes-2.png" || fail "self-check in the unpacked bundle"

echo "== .sh: install for a user (HOME=$work/home)"
mkdir "$work/home"
HOME=$work/home sh "${sh[0]}" >"$work/install.log" || { cat "$work/install.log"; fail "the .sh installer"; }
cat "$work/install.log"
local_=$work/home/.local
for f in bin/mlmamba-desktop bin/mlmamba-cli share/applications/mlmamba-desktop.desktop \
  share/icons/hicolor/scalable/apps/mlmamba-desktop.svg share/icons/hicolor/256x256/apps/mlmamba-desktop.png \
  share/metainfo/mlmamba-desktop.metainfo.xml lib/mlmamba-desktop/uninstall.sh; do
  [ -e "$local_/$f" ] || fail "~/.local/$f was not installed"
done
entry=$local_/share/applications/mlmamba-desktop.desktop
grep -qx "Exec=$local_/lib/mlmamba-desktop/bin/mlmamba-desktop %F" "$entry" || fail "menu entry Exec: $(grep ^Exec "$entry")"
desktop-file-validate "$entry" || fail "the installed menu entry does not validate"
ask "$local_/bin/mlmamba-cli" "$src/resources/samples/shapes-3.png" || fail "the installed mlmamba-cli"
self_check "$local_/bin/mlmamba-desktop" "$src/resources/samples/shapes-3.png" || fail "the installed mlmamba-desktop"

echo "== a second install replaces the first"
HOME=$work/home sh "${sh[0]}" >/dev/null || fail "installing again"

echo "== uninstall"
"$local_/lib/mlmamba-desktop/uninstall.sh"
# The menu's association index (mimeinfo.cache) is the desktop's, refreshed without the entry.
left=$(find "$local_" \( -type f -o -type l \) ! -name mimeinfo.cache)
[ -z "$left" ] || fail "left after uninstall: $left"
if grep -rqs mlmamba "$local_/share/applications"; then fail "the menu index still names the program"; fi
echo "PASS: the bundle unpacks, installs, runs and uninstalls"
