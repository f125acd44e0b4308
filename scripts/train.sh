#!/usr/bin/env bash
# train.sh - the main job: install what is missing, build, and run a real training.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh build
bash scripts/build.sh
exec ./build/examples/mlp_digits "$@"
