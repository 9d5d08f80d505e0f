#!/usr/bin/env bash
# Makes .devdeps/engine-deps.tar.xz: what the GPU machine lacks to build the engine and its tests
# (scripts/cuda_engine_check.sh), taken from the Debian 12 packages installed here by
# scripts/install-deps.sh: OpenBLAS (cblas.h, libopenblas and the Fortran runtime it needs), ICU 72
# (headers, libicuuc / libicui18n / libicudata), nlohmann/json headers, GoogleTest (headers, static
# libraries, CMake files). Also the demo model's held-out pictures decoded here by the engine's own
# decoder into binary PPM, with their eval.jsonl, for the build without OpenCV to read the same
# pixels. Run here (not on the GPU machine); then carry `.devdeps` to the GPU machine.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/.devdeps"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
stage="$work/pack"
mkdir -p "$stage" "$out"

packages="libopenblas0-pthread libopenblas-pthread-dev libicu72 libicu-dev nlohmann-json3-dev
  libgtest-dev libgfortran5 libquadmath0"
for p in $packages; do
  dpkg -s "$p" >/dev/null 2>&1 || { echo "missing package $p (scripts/install-deps.sh)"; exit 1; }
  # Files and links only, without documentation, static ICU libraries or programs.
  dpkg -L "$p" | while read -r f; do
    [ -f "$f" ] || [ -L "$f" ] || continue
    case "$f" in
      /usr/share/doc/* | /usr/share/man/* | /usr/bin/* | /usr/share/lintian/*) continue ;;
      *.a) case "$f" in *libgtest*.a | *libgmock*.a) ;; *) continue ;; esac ;;
      *libicutu* | *libicutest* | *libicuio* | *liblapack* | *libblas* | */pkgconfig/*) continue ;;
    esac
    mkdir -p "$stage$(dirname "$f")"
    cp -a "$f" "$stage$f"
  done
done
# The linker and CMake's FindBLAS look for libopenblas.so in the library folder itself.
lib="$stage/usr/lib/x86_64-linux-gnu"
ln -sf openblas-pthread/libopenblas.so.0 "$lib/libopenblas.so.0"
ln -sf libopenblas.so.0 "$lib/libopenblas.so"
ln -sf openblas-pthread/cblas.h "$stage/usr/include/x86_64-linux-gnu/cblas.h" 2>/dev/null || true

# The held-out set as PPM.
data="$stage/shapes_eval"
mkdir -p "$data/img"
g++ -std=c++20 -O2 -w -DMLMAMBA_WITH_OPENCV=1 -I"$root/engine/src" -I"$root/engine/include" \
  -I/usr/include/opencv4 "$root/tools/cuda/decode_to_ppm.cpp" "$root/engine/src/image.cpp" \
  "$root/engine/src/result.cpp" -lopencv_core -lopencv_imgcodecs -o "$work/decode_to_ppm"
args=()
for f in "$root"/tests/data/shapes_eval/img/*; do
  b=$(basename "$f")
  args+=("$f" "$data/img/${b%.*}.ppm")
done
"$work/decode_to_ppm" "${args[@]}"
sed -E 's#"image": "img/([^".]+)\.[A-Za-z]+"#"image": "img/\1.ppm"#' \
  "$root/tests/data/shapes_eval/eval.jsonl" >"$data/eval.jsonl"

tar -C "$stage" -cJf "$out/engine-deps.tar.xz" .
du -h "$out/engine-deps.tar.xz"
