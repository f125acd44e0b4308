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
import json, re, sys
counts = {"passed": 0, "failed": 0, "skipped": 0}
py = {"passed": 0, "failed": 0, "skipped": 0, "error": 0}
files = 0
for line in open(sys.argv[1]):
    t = json.loads(line)
    r = t["result"]
    if r in ("OK", "EXPECTEDFAIL"): counts["passed"] += 1
    elif r == "SKIP": counts["skipped"] += 1
    else: counts["failed"] += 1
    if t["name"].split(" / ")[-1].startswith("py_"):  # one pytest file of tests/python: count its cases too
        files += 1
        tail = (t.get("stdout") or "").strip().splitlines()[-1:]
        for n, what in re.findall(r"(\d+) (passed|failed|skipped|error)", tail[0] if tail else ""):
            py[what] += int(n)
if files:
    print("pytest cases (%d files, one test each in the line below): %d passed, %d failed, %d skipped" %
          (files, py["passed"], py["failed"] + py["error"], py["skipped"]))
line = "tests: %d passed, %d failed" % (counts["passed"], counts["failed"])
if counts["skipped"]: line += ", %d skipped" % counts["skipped"]
print(line)
PY
exit $rc
