#!/usr/bin/env bash
# Installs the .deb packages into a throw-away root with dpkg, runs both programs from there
# (a question about a sample picture; the window's self-check, offscreen), checks versions and
# the CUDA package's pick-up, and removes everything again.
# Usage: test_deb.sh PACKAGES_DIR SOURCE_DIR VERSION
set -euo pipefail
pkgs=$(readlink -f "${1:?usage: test_deb.sh PACKAGES_DIR SOURCE_DIR VERSION}")
src=${2:?source dir}
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
debs=("$pkgs"/mlmamba-desktop_*.deb)
[ ${#debs[@]} -eq 1 ] || fail "expected one mlmamba-desktop_*.deb in $pkgs, found ${#debs[@]}"
deb=${debs[0]}
cuda_debs=("$pkgs"/mlmamba-desktop-cuda_*.deb)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/root

echo "== control fields"
dpkg-deb -f "$deb" Package Version Depends Recommends
[ "$(dpkg-deb -f "$deb" Version)" = "$version-1" ] || fail "package version is not $version-1"
depends=$(dpkg-deb -f "$deb" Depends)
for need in libc6 libqt6widgets6 libqt6gui6 libopencv-imgcodecs libopencv-videoio libopenblas0 \
  qt6-image-formats-plugins; do
  [[ $depends == *"$need"* ]] || fail "Depends lacks $need"
done
echo "== the dependencies resolve against this machine's Debian"
apt-get install --simulate --no-install-recommends "$deb" >"$work/apt.log" 2>&1 ||
  { cat "$work/apt.log"; fail "apt cannot satisfy the package's dependencies"; }

echo "== dpkg --root install"
mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates"
touch "$root/var/lib/dpkg/status" "$root/var/lib/dpkg/available"
# The throw-away root has an empty package database; the dependencies were checked above.
dpkg_root=(dpkg --root="$root" --force-depends --force-not-root)
"${dpkg_root[@]}" -i "$deb"
"${dpkg_root[@]}" -s mlmamba-desktop | grep -q '^Status: install ok installed' || fail "not installed"
for f in usr/bin/mlmamba-desktop usr/bin/mlmamba-cli usr/share/mlmamba/models/shapes-demo/config.json \
  usr/share/mlmamba/samples/shapes-1.png usr/share/applications/mlmamba-desktop.desktop \
  usr/share/metainfo/mlmamba-desktop.metainfo.xml usr/share/icons/hicolor/scalable/apps/mlmamba-desktop.svg \
  usr/share/icons/hicolor/48x48/apps/mlmamba-desktop.png usr/share/doc/mlmamba-desktop/copyright \
  usr/share/man/man1/mlmamba-cli.1.gz; do
  [ -e "$root/$f" ] || fail "$f is not installed"
done

echo "== versions agree"
cli_version=$("$root/usr/bin/mlmamba-cli" --version)
desktop_version=$(QT_QPA_PLATFORM=offscreen "$root/usr/bin/mlmamba-desktop" --version)
echo "$cli_version / $desktop_version"
[ "$cli_version" = "mlmamba-cli $version" ] || fail "mlmamba-cli --version: $cli_version"
[ "$desktop_version" = "mlmamba-desktop $version" ] || fail "mlmamba-desktop --version: $desktop_version"
grep -q "<release version=\"$version\"" "$root/usr/share/metainfo/mlmamba-desktop.metainfo.xml" ||
  fail "the metainfo has no release $version"

sample=$root/usr/share/mlmamba/samples/shapes-1.png
ask() {
  # The installed program's default model, with the source tree's copy hidden where a private
  # mount namespace can be had, so only the installed one can answer.
  local out
  if unshare -m true 2>/dev/null; then
    out=$(unshare -m sh -c 'mount -t tmpfs none "$1/resources/models" && shift && exec "$@"' sh "$src" \
      "$root/usr/bin/mlmamba-cli" generate --image "$sample" --prompt "How many shapes are there?" \
      --max-tokens 24 --device cpu --json)
  else
    out=$("$root/usr/bin/mlmamba-cli" generate --model "$root/usr/share/mlmamba/models/shapes-demo" \
      --image "$sample" --prompt "How many shapes are there?" --max-tokens 24 --device cpu --json)
  fi
  echo "$out" | answer_of
}
echo "== mlmamba-cli answers about a sample picture"
ask || fail "mlmamba-cli generate"

echo "== mlmamba-desktop --self-check (offscreen)"
env QT_QPA_PLATFORM=offscreen XDG_DATA_HOME="$work/data" XDG_CONFIG_HOME="$work/config" \
  XDG_RUNTIME_DIR="$work" "$root/usr/bin/mlmamba-desktop" --self-check "$sample" >"$work/self-check.log" 2>&1 ||
  { cat "$work/self-check.log"; fail "self-check"; }
cat "$work/self-check.log"
grep -q "Shapes demo" "$work/self-check.log" || fail "self-check did not report the model"

reason() { "$root/usr/bin/mlmamba-cli" info --json --model "$root/usr/share/mlmamba/models/shapes-demo" |
  sed -n 's/.*"fallback_reason":"\([^"]*\)".*/\1/p'; }
if [ ${#cuda_debs[@]} -eq 1 ]; then
  echo "== the CUDA package is picked up when present"
  without=$(reason)
  echo "without: $without"
  [[ $without == *"could not be loaded"* ]] || fail "without the CUDA package: $without"
  "${dpkg_root[@]}" -i "${cuda_debs[0]}"
  module=$root/usr/lib/mlmamba/libmlmamba-cuda.so
  [ -f "$module" ] || fail "the CUDA module is not installed"
  readelf -d "$module" | grep -q 'RUNPATH.*\[\$ORIGIN\]' || fail "the CUDA module does not search beside itself"
  # Its Depends are written by hand (no shlibdeps): the glibc they name must cover the module.
  declared=$(dpkg-deb -f "${cuda_debs[0]}" Depends | sed -n 's/.*libc6 (>= \([0-9.]*\)).*/\1/p')
  needed=$(objdump -T "$module" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -1)
  echo "CUDA module needs glibc $needed, its package declares libc6 (>= $declared)"
  [ "$(printf '%s\n%s\n' "$needed" "$declared" | sort -V | tail -1)" = "$declared" ] ||
    fail "the CUDA package's libc6 dependency is older than the module needs"
  with=$(reason)
  echo "with: $with"
  [[ $with != *"could not be loaded"* ]] || fail "the installed CUDA module was not loaded: $with"
  "${dpkg_root[@]}" -P mlmamba-desktop-cuda
  [ ! -e "$module" ] || fail "the CUDA module stayed after removal"
  [[ $(reason) == *"could not be loaded"* ]] || fail "after removing the CUDA package"
else
  echo "== no CUDA package (built without nvcc): skipped its checks"
fi

echo "== removal"
"${dpkg_root[@]}" -P mlmamba-desktop
left=$(find "$root" -path "$root/var" -prune -o -type f -print)
[ -z "$left" ] || fail "files left after removal: $left"
echo "PASS: .deb installs, runs and removes cleanly"
