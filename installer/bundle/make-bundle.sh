#!/usr/bin/env bash
# Turns an installed tree (cmake --install layout: bin/, lib/mlmamba/, share/) into the
# self-contained offline bundle, in place:
#   bin/mlmamba-desktop, bin/mlmamba-cli   launchers (shell), safe to link to from anywhere
#   libexec/                               the programs themselves, qt.conf, gst-plugin-scanner
#   lib/                                   every library they load that is not base system
#   lib/qt6/plugins/, lib/gstreamer-1.0/   the plugins loaded at run time, which ldd cannot see
#   install.sh                             per-user or system-wide installation, uninstaller
# Each ELF file gets a search path relative to itself ($ORIGIN), so the tree can be moved.
# Usage: make-bundle.sh ROOT QT_PLUGIN_DIR MULTIARCH_LIBDIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(readlink -f "${1:?usage: make-bundle.sh ROOT QT_PLUGIN_DIR MULTIARCH_LIBDIR}")
qt_plugins=${2:?Qt plugin directory}
libdir=${3:?multiarch library directory}
# shellcheck source=base.sh
. "$here/base.sh"
load_base "$here/base-libraries.txt"
command -v patchelf >/dev/null || { echo "make-bundle: patchelf is needed (apt-get install patchelf)" >&2; exit 1; }


# The programs move to libexec/; their places in bin/ take launchers.
mkdir -p "$root/libexec" "$root/lib"
for program in mlmamba-desktop mlmamba-cli; do
  mv "$root/bin/$program" "$root/libexec/$program"
  sed "s/@PROGRAM@/$program/g" "$here/launcher.sh.in" >"$root/bin/$program"
  chmod 755 "$root/bin/$program"
  patchelf --set-rpath '$ORIGIN/../lib' "$root/libexec/$program"
done
install -m 644 "$here/qt.conf" "$root/libexec/qt.conf"
install -m 755 "$here/install.sh" "$root/install.sh"
# Debian's own files have no use here.
rm -rf "$root/share/lintian" "$root/share/doc/mlmamba-desktop/changelog.Debian.gz" \
  "$root/share/doc/mlmamba-desktop-cuda/changelog.Debian.gz"

# Qt plugins: the display platforms (xcb for X11 and XWayland, wayland where the building
# machine has it, offscreen and minimal for headless use), GL on X11, input methods, picture
# formats (webp, tiff, ... when qt6-image-formats-plugins is installed) and icon engines.
for type in platforms xcbglintegrations platforminputcontexts imageformats iconengines \
  wayland-shell-integration wayland-decoration-client wayland-graphics-integration-client; do
  [ -d "$qt_plugins/$type" ] || continue
  mkdir -p "$root/lib/qt6/plugins/$type"
  for p in "$qt_plugins/$type"/*.so; do
    case "$(basename "$p")" in
      # Consoles and framebuffers, not desktops; they would pull in input and KMS stacks.
      libqeglfs.so | libqlinuxfb.so | libqvnc.so | libqvkkhrdisplay.so | libqminimalegl.so) continue ;;
    esac
    cp -L "$p" "$root/lib/qt6/plugins/$type/"
    patchelf --set-rpath '$ORIGIN/../../..' "$root/lib/qt6/plugins/$type/$(basename "$p")"
  done
done

# GStreamer, OpenCV's fallback for cameras V4L2 cannot open directly: the plugins of a camera
# pipeline (source, MJPG decoding, conversion, the sink OpenCV reads) and the scanner helper.
gst=$libdir/gstreamer-1.0
mkdir -p "$root/lib/gstreamer-1.0"
for p in coreelements app videoconvertscale video4linux2 jpeg typefindfunctions; do
  if [ -f "$gst/libgst$p.so" ]; then
    cp -L "$gst/libgst$p.so" "$root/lib/gstreamer-1.0/"
    patchelf --set-rpath '$ORIGIN/..' "$root/lib/gstreamer-1.0/libgst$p.so"
  fi
done
if [ -x "$libdir/gstreamer1.0/gstreamer-1.0/gst-plugin-scanner" ]; then
  cp -L "$libdir/gstreamer1.0/gstreamer-1.0/gst-plugin-scanner" "$root/libexec/"
  patchelf --set-rpath '$ORIGIN/../lib' "$root/libexec/gst-plugin-scanner"
fi

# Libraries: ldd gives each object's whole closure, so one pass over the programs and plugins
# finds everything; the bundled copies then search beside themselves.
is_elf() { [ "$(head -c 4 "$1" | od -An -c | tr -d ' \n')" = '177ELF' ]; }
mapfile -d '' -t objects < <(find "$root/libexec" "$root/lib" -type f -print0)
copied=0
for f in "${objects[@]}"; do
  is_elf "$f" || continue
  while read -r name arrow path _; do
    [ "$arrow" = "=>" ] || continue
    is_base "$name" && continue
    if [ "$path" = not ]; then
      echo "make-bundle: $name, needed by ${f#"$root"/}, is not installed here" >&2
      exit 1
    fi
    [[ $(readlink -f "$path") == "$root"/* ]] && continue
    [ -e "$root/lib/$name" ] && continue
    cp -L "$path" "$root/lib/$name"
    chmod 644 "$root/lib/$name"
    patchelf --set-rpath '$ORIGIN' "$root/lib/$name"
    copied=$((copied + 1))
  done < <(env -u LD_LIBRARY_PATH ldd "$f")
done
echo "make-bundle: $copied libraries copied into $root/lib"

"$here/check-libraries.sh" "$root"
