#!/usr/bin/env bash
# The main job: installs what is missing, builds, then opens the desktop program where there is a
# display, otherwise answers a question about a picture in the terminal.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/install-deps.sh"
"$root/scripts/build.sh"
build="${MLMAMBA_BUILD_DIR:-$root/build}"
cli="$build/app/mlmamba-cli"

demo="$root/resources/models/shapes-demo"
if [ -f "$demo/config.json" ]; then
  model="${MLMAMBA_MODEL:-$demo}"
  picture="${MLMAMBA_IMAGE:-$(ls "$root"/resources/samples/*.png 2>/dev/null | head -n 1)}"
  note=""
else
  # Until the trained demo model ships: the tiny package the tests use (random weights, so the
  # answer is not meaningful text; the pipeline that produces it is the real one).
  model="${MLMAMBA_MODEL:-$root/tests/fixtures/mlmamba_tiny_dual}"
  picture="${MLMAMBA_IMAGE:-$model/shapes_96x80.png}"
  note=" (random-weight test model)"
fi
question="${1:-What shapes do you see?}"
if [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ] && [ -z "${MLMAMBA_NO_GUI:-}" ]; then
  # A display: the desktop program, with the picture attached and the model loading.
  echo "== starting mlmamba-desktop$note"
  exec "$build/app/mlmamba-desktop" "$picture"
fi
echo
echo "== model$note"
"$cli" info --model "$model"
echo
echo "== $(basename "$picture"): $question"
"$cli" generate --model "$model" --image "$picture" --prompt "$question" --max-tokens 48
