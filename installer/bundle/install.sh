#!/bin/sh
# Installs the ML-Mamba Desktop offline bundle this script sits in.
#   install.sh                 for this user, under ~/.local
#   install.sh --prefix DIR    under DIR (system-wide: /usr/local or /opt/mlmamba-desktop, as root)
# Lays out PREFIX/lib/mlmamba-desktop/ (the bundle), PREFIX/bin/{mlmamba-desktop,mlmamba-cli}
# (links), the menu entry, icons and AppStream metainfo under PREFIX/share, and
# PREFIX/lib/mlmamba-desktop/uninstall.sh, which removes all of it. An earlier installation in
# the same place is removed first.
set -eu
usage() {
  sed -n '2,8s/^# \{0,1\}//p' "$0"
  exit "${1:-0}"
}
prefix=
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) [ $# -ge 2 ] || usage 2; prefix=$2; shift 2 ;;
    --prefix=*) prefix=${1#--prefix=}; shift ;;
    --user) prefix=; shift ;;
    -h | --help) usage 0 ;;
    *) echo "install.sh: unknown argument $1" >&2; usage 2 ;;
  esac
done
if [ -z "$prefix" ]; then
  [ -n "${HOME:-}" ] || { echo "install.sh: HOME is not set; give --prefix DIR" >&2; exit 2; }
  prefix=$HOME/.local
fi
src=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$prefix"
prefix=$(cd "$prefix" && pwd)
app=$prefix/lib/mlmamba-desktop

if [ -x "$app/uninstall.sh" ]; then
  echo "Removing the earlier installation in $prefix"
  "$app/uninstall.sh" >/dev/null
fi

echo "Installing ML-Mamba Desktop into $prefix"
mkdir -p "$app" "$prefix/bin" "$prefix/share/applications" "$prefix/share/metainfo"
for d in bin libexec lib share; do cp -a "$src/$d" "$app/"; done
manifest=$app/installed-files
: >"$manifest"

for program in mlmamba-desktop mlmamba-cli; do
  # Relative, so the installation also works seen from a chroot or a moved prefix.
  ln -sfn "../lib/mlmamba-desktop/bin/$program" "$prefix/bin/$program"
  echo "$prefix/bin/$program" >>"$manifest"
done
# The menu entry names the launcher by its full path: ~/.local/bin is not on every desktop's PATH.
sed -e "s|^Exec=mlmamba-desktop|Exec=$app/bin/mlmamba-desktop|" \
  -e "s|^TryExec=.*|TryExec=$app/bin/mlmamba-desktop|" \
  "$src/share/applications/mlmamba-desktop.desktop" >"$prefix/share/applications/mlmamba-desktop.desktop"
echo "$prefix/share/applications/mlmamba-desktop.desktop" >>"$manifest"
cp "$src/share/metainfo/mlmamba-desktop.metainfo.xml" "$prefix/share/metainfo/"
echo "$prefix/share/metainfo/mlmamba-desktop.metainfo.xml" >>"$manifest"
(cd "$src/share/icons" && find hicolor -type f) | while read -r icon; do
  mkdir -p "$prefix/share/icons/$(dirname "$icon")"
  cp "$src/share/icons/$icon" "$prefix/share/icons/$icon"
  echo "$prefix/share/icons/$icon" >>"$manifest"
done

cat >"$app/uninstall.sh" <<UNINSTALL
#!/bin/sh
# Removes the ML-Mamba Desktop installation in $prefix (written by install.sh).
set -eu
while read -r f; do rm -f "\$f"; done <"$manifest"
rm -rf "$app"
if command -v update-desktop-database >/dev/null; then
  update-desktop-database -q "$prefix/share/applications" 2>/dev/null || true
fi
if [ -f "$prefix/share/icons/hicolor/icon-theme.cache" ] && command -v gtk-update-icon-cache >/dev/null; then
  gtk-update-icon-cache -q "$prefix/share/icons/hicolor" 2>/dev/null || true
fi
echo "ML-Mamba Desktop removed from $prefix"
UNINSTALL
chmod 755 "$app/uninstall.sh"

# The menu's file associations ("Open with") are read from mimeinfo.cache. An icon cache is only
# refreshed where one is kept already: a new one would go stale when others add icons without it.
refresh_caches() {
  if command -v update-desktop-database >/dev/null; then
    update-desktop-database -q "$prefix/share/applications" 2>/dev/null || true
  fi
  if [ -f "$prefix/share/icons/hicolor/icon-theme.cache" ] && command -v gtk-update-icon-cache >/dev/null; then
    gtk-update-icon-cache -q "$prefix/share/icons/hicolor" 2>/dev/null || true
  fi
}
refresh_caches

echo "Installed. Start it from the menu, or run $prefix/bin/mlmamba-desktop"
case ":${PATH:-}:" in
  *":$prefix/bin:"*) ;;
  *) echo "($prefix/bin is not on PATH: add it to run mlmamba-desktop and mlmamba-cli by name)" ;;
esac
echo "To remove it: $app/uninstall.sh"
