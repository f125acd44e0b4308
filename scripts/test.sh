#!/usr/bin/env bash
# test.sh - install what is missing, build, run every test suite, end with the counts line.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh test || exit 1
bash scripts/build.sh || exit 1
export OPENBLAS_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
meson test -C build --print-errorlogs --num-processes 2 "$@"
rc=$?
/usr/bin/python3 - build/meson-logs/testlog.json <<'PY'
import json, sys
counts = {"passed": 0, "failed": 0, "skipped": 0}
for line in open(sys.argv[1]):
    r = json.loads(line)["result"]
    if r in ("OK", "EXPECTEDFAIL"): counts["passed"] += 1
    elif r == "SKIP": counts["skipped"] += 1
    else: counts["failed"] += 1
line = "tests: %d passed, %d failed" % (counts["passed"], counts["failed"])
if counts["skipped"]: line += ", %d skipped" % counts["skipped"]
print(line)
PY
exit $rc
