#!/usr/bin/env bash
# The main job: installs what is missing, builds, then opens the desktop program where there is a
# display, otherwise asks the bundled demo model about a sample picture in the terminal.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/install-deps.sh"
"$root/scripts/build.sh"
build="${MLMAMBA_BUILD_DIR:-$root/build}"
model="${MLMAMBA_MODEL:-$root/resources/models/shapes-demo}"
picture="${MLMAMBA_IMAGE:-$root/resources/samples/shapes-1.png}"
question="${1:-Describe the image.}"

if [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ] && [ -z "${MLMAMBA_NO_GUI:-}" ]; then
  echo "== starting mlmamba-desktop with $(basename "$picture") attached"
  exec "$build/app/mlmamba-desktop" "$picture"
fi
echo
echo "== $(basename "$picture"): $question"
"$build/app/mlmamba-cli" generate --model "$model" --image "$picture" --prompt "$question"
