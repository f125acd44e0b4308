#!/usr/bin/env bash
# train.sh - the main job: install what is missing, build, and train a byte-level GPT on the
# fortunes corpus across this machine's cores, one MPI rank per core (at most 4): libwhale probes
# the machine, plans the step, prints the plan, and trains. Extra arguments go to gpt_text
# (e.g. --steps 200, --cluster FILE). RANKS=1 trains in one process.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh build
bash scripts/build.sh
ranks=${RANKS:-$(nproc)}
[ "$ranks" -gt 4 ] && ranks=4
if [ "$ranks" -le 1 ]; then
  exec ./build/examples/gpt_text "$@"
fi
extra=(--oversubscribe --bind-to none)
[ "$(id -u)" = 0 ] && extra+=(--allow-run-as-root)
exec mpirun "${extra[@]}" -np "$ranks" ./build/examples/gpt_text "$@"
