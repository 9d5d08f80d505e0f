#!/usr/bin/env bash
# The offline bundle on a machine without Qt, OpenCV, OpenBLAS or any other library it carries:
# a minimal root holding only the base-system libraries (installer/bundle/base-libraries.txt, with
# what they need themselves), a shell and the few tools the installer uses. The .sh installs the
# bundle system-wide into it (--prefix); chrooted there, mlmamba-cli answers about a sample with
# its default model and mlmamba-desktop passes its self-check offscreen. Needs root (chroot and a
# private mount namespace); exits 77 (skipped) otherwise.
# Usage: test_bundle_isolated.sh PACKAGES_DIR SOURCE_DIR VERSION
set -euo pipefail
pkgs=$(readlink -f "${1:?usage: test_bundle_isolated.sh PACKAGES_DIR SOURCE_DIR VERSION}")
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
if [ "$(id -u)" -ne 0 ] || ! unshare -m true 2>/dev/null; then
  echo "SKIP: needs root with chroot and mount namespaces"
  exit 77
fi
shopt -s nullglob
sh=("$pkgs"/mlmamba-desktop-"$version"-linux-*.sh)
[ ${#sh[@]} -eq 1 ] || fail "expected one bundle .sh in $pkgs"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
jail=$work/root
multiarch=$(gcc -print-multiarch)
mkdir -p "$jail"/{bin,lib64,tmp,proc,sys,dev,etc,home/user,run/user} "$jail/lib/$multiarch" "$jail/usr/share/fonts"
ln -s ../lib "$jail/usr/lib"
ln -s ../bin "$jail/usr/bin"
chmod 1777 "$jail/tmp"
chmod 700 "$jail/run/user"

# A library and, from ldd, everything it loads: a real machine has a library's own dependencies.
copy_with_deps() {
  local f dep
  for f in "$@"; do
    for dep in "$f" $(ldd "$f" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do
      local name=${dep##*/}
      if [[ $name == ld-linux* ]]; then
        [ -e "$jail/lib64/$name" ] || cp -L "$dep" "$jail/lib64/$name"
      else
        [ -e "$jail/lib/$multiarch/$name" ] || cp -L "$dep" "$jail/lib/$multiarch/$name"
      fi
    done
  done
}
# shellcheck source=../../installer/bundle/base.sh
. "$src/installer/bundle/base.sh"
load_base "$src/installer/bundle/base-libraries.txt"
# This machine's copy of each base library where it has one (GL and X11 libraries are installed
# here as dependencies of the build; a server may lack some, and so does this root).
for path in $(base_paths); do
  copy_with_deps "$path"
done
tools=(sh readlink dirname mktemp tail gzip tar cp ln sed mkdir find cat rm chmod sort id)
for t in "${tools[@]}"; do
  p=$(command -v "$t")
  cp -L "$p" "$jail/bin/$t"
  copy_with_deps "$p"
done
cp -a /etc/fonts "$jail/etc/"
cp -a /usr/share/fonts/truetype "$jail/usr/share/fonts/" 2>/dev/null || true
echo "root:x:0:0:root:/home/user:/bin/sh" >"$jail/etc/passwd"

echo "== the minimal root has none of the bundled libraries"
for lib in libQt6Core.so.6 libopencv_core.so.406 libopenblas.so.0 libicuuc.so.72 libgomp.so.1; do
  [ ! -e "$jail/lib/$multiarch/$lib" ] || fail "$lib is in the minimal root"
done
ls "$jail/lib/$multiarch" | tr '\n' ' '
echo

echo "== install with the .sh, system-wide (--prefix /opt/mlmamba-desktop inside the root)"
cp "${sh[0]}" "$jail/tmp/installer.sh"
run_in_jail() {
  # A private mount namespace: /proc (the programs find their files through /proc/self/exe), /sys
  # (OpenBLAS and OpenMP count the processors there) and /dev are bound into the root and vanish
  # with the namespace.
  unshare -m sh -c 'j=$1; shift; mount --rbind /proc "$j/proc" && mount --rbind /sys "$j/sys" &&
    mount --rbind /dev "$j/dev" &&
    exec chroot "$j" /usr/bin/env -i PATH=/bin HOME=/home/user "$@"' sh "$jail" "$@"
}
cp -L "$(command -v env)" "$jail/bin/env"
run_in_jail sh /tmp/installer.sh --prefix /opt/mlmamba-desktop || fail "the .sh installer in the minimal root"

echo "== mlmamba-cli answers with its default model"
out=$(run_in_jail /opt/mlmamba-desktop/bin/mlmamba-cli generate \
  --image /opt/mlmamba-desktop/lib/mlmamba-desktop/share/mlmamba/samples/shapes-1.png \
  --prompt "How many shapes are there?" --max-tokens 24 --device cpu --json) || fail "mlmamba-cli in the minimal root"
echo "$out" | answer_of || fail "mlmamba-cli gave no answer"

echo "== mlmamba-desktop --self-check, offscreen"
run_in_jail QT_QPA_PLATFORM=offscreen XDG_RUNTIME_DIR=/run/user /opt/mlmamba-desktop/bin/mlmamba-desktop \
  --self-check /opt/mlmamba-desktop/lib/mlmamba-desktop/share/mlmamba/samples/shapes-1.png ||
  fail "mlmamba-desktop in the minimal root"

echo "== uninstall"
run_in_jail /opt/mlmamba-desktop/lib/mlmamba-desktop/uninstall.sh || fail "uninstall"
left=$(find "$jail/opt" \( -type f -o -type l \) ! -name mimeinfo.cache)
[ -z "$left" ] || fail "left after uninstall: $left"
echo "PASS: the bundle installs and runs where only the base system is"
