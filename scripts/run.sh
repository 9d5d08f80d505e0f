#!/usr/bin/env bash
# The main job: installs what is missing, builds, and answers a question with the engine.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/install-deps.sh"
"$root/scripts/build.sh"
build="${MLMAMBA_BUILD_DIR:-$root/build}"
model="${MLMAMBA_MODEL:-$root/tests/fixtures/mamba2_tiny_g1}"
prompt="${1:-What color is the circle?}"
echo
echo "== mlmamba-cli info"
"$build/app/mlmamba-cli" info --model "$model"
echo
echo "== mlmamba-cli generate --prompt \"$prompt\""
# The model the tests use has random weights: the answer is not meaningful text, the pipeline is real.
"$build/app/mlmamba-cli" generate --model "$model" --prompt "$prompt" --max-tokens 24 --ignore-eos
