#!/usr/bin/env python3
"""kill_trials.py - kill one rank mid-allreduce and mid-receive, many times, and check that every
other rank leaves libwhale with an error naming the dead rank within the timeout + 5 s.

    kill_trials.py TEST_KILL [--trials 20] [--ranks 2,3,4] [--parallel 3] [--modes allreduce,recv,step,pipe]
                             [--keep DIR]

Each trial is `mpirun --enable-recovery -np N TEST_KILL MODE VICTIM OUTDIR` (see test_kill.c);
--enable-recovery stops Open MPI from killing the survivors itself, so only libwhale's deadline
(timeout_s = 10 in test_kill) can free them. mpirun's own exit code means nothing then: every rank
is judged by its result file and by its real exit code, which a small shell wrapper records.
The trials cycle through the rank counts and every victim rank. A trial that outlives
TIMEOUT + 5 + 15 s is a HANG: its whole process session is killed.

A few trials run at once (the waiting ranks back off to sleeping); the time asserted is measured
inside each rank, from the start of its failing wait to the failure, on its monotonic clock.
Prints a table per mode and ends with `kill: N passed, N failed`; exit status 1 on any failure."""
import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

TIMEOUT_S = 10.0            # wh_comm_options.timeout_s in test_kill.c
LIMIT_S = TIMEOUT_S + 5.0   # every survivor must have failed within this
HARD_S = LIMIT_S + 15.0     # a trial still running after this is a hang

# "... peer rank 2 did not answer ..." / "... peer ranks 1, 3 did not answer ..."
SILENT_RE = re.compile(r"peer ranks? ([0-9][0-9, ]*) did not answer")
# a backend error (WH_ERR_COMM) names the peer it waited for: "(mpi, peer rank 2)"
PEER_RE = re.compile(r"peer rank ([0-9]+)\)")

# Run the rank, then record its real exit status next to its result file.
WRAPPER = '"$0" "$@"; rc=$?; echo $rc > "$3/exit$OMPI_COMM_WORLD_RANK"; exit $rc'


def mpirun_cmd(exe, mode, n, victim, outdir):
    cmd = ["mpirun", "--oversubscribe", "--bind-to", "none", "--enable-recovery"]
    if os.geteuid() == 0:
        cmd.append("--allow-run-as-root")
    return cmd + ["-np", str(n), "/bin/sh", "-c", WRAPPER, exe, mode, str(victim), outdir]


def session_pids(sid, marker):
    """Processes of this trial: in the session mpirun leads, or naming the trial's own directory."""
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                stat = f.read()
            fields = stat[stat.rindex(b")") + 2:].split()
            mine = int(fields[3]) == sid  # field 6: session id
            if not mine:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    mine = marker.encode() in f.read()
            if mine:
                pids.append(int(d))
        except (OSError, ValueError, IndexError):
            pass
    return pids


def kill_trial(sid, marker):
    for _ in range(3):
        pids = session_pids(sid, marker)
        if not pids:
            return
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.2)


def read_kv(path):
    out = {}
    with open(path, errors="replace") as f:
        for line in f:
            k, _, v = line.rstrip("\n").partition("=")
            out[k] = v
    return out


def run_trial(exe, mode, n, victim, base):
    outdir = tempfile.mkdtemp(prefix=f"{mode}-np{n}-v{victim}-", dir=base)
    log_path = os.path.join(outdir, "mpirun.log")
    t0 = time.monotonic()
    with open(log_path, "w") as log:
        p = subprocess.Popen(mpirun_cmd(exe, mode, n, victim, outdir), stdin=subprocess.DEVNULL, stdout=log,
                             stderr=subprocess.STDOUT, start_new_session=True)
        hang = False
        try:
            p.wait(timeout=HARD_S)
        except subprocess.TimeoutExpired:
            hang = True
        kill_trial(p.pid, outdir)  # a hang, or ranks left behind by mpirun
        p.wait()
    res = {"mode": mode, "n": n, "victim": victim, "dir": outdir, "hang": hang, "elapsed": time.monotonic() - t0,
           "where": "", "problems": [], "waits": [], "since_kill": [], "messages": [], "extra": []}
    probs = res["problems"]
    if hang:
        probs.append(f"HANG: still running after {HARD_S:.0f} s, killed")
    vpath = os.path.join(outdir, "victim.txt")
    kill_wall = None
    if os.path.exists(vpath):
        vkv = read_kv(vpath)
        kill_wall, res["where"] = float(vkv.get("error", "nan")), vkv.get("op", "")
    else:
        probs.append(f"victim rank {victim} never reached its kill")
    for r in range(n):
        if r == victim:
            continue
        rc_path, f_path = os.path.join(outdir, f"exit{r}"), os.path.join(outdir, f"rank{r}.txt")
        rc = None
        if os.path.exists(rc_path):
            try:
                rc = int(open(rc_path).read().strip())
            except ValueError:
                pass
        if not os.path.exists(f_path):
            probs.append(f"rank {r}: no result file (exit status {rc if rc is not None else 'unknown'})")
            continue
        kv = read_kv(f_path)
        err, wait_s = kv.get("error", ""), float(kv.get("wait_s", "nan"))
        res["messages"].append((r, kv.get("op", "?"), kv.get("status", "?"), wait_s, err))
        res["waits"].append(wait_s)
        if kill_wall is not None:
            res["since_kill"].append(float(kv.get("wall", "nan")) - kill_wall)
        if kv.get("exit") != "1":
            probs.append(f"rank {r}: reported exit {kv.get('exit')}: {err}")
        if rc is None:
            probs.append(f"rank {r}: exit status not recorded")
        elif rc == 0:
            probs.append(f"rank {r}: exited 0")
        if not wait_s <= LIMIT_S:
            probs.append(f"rank {r}: failed after {wait_s:.2f} s > {LIMIT_S:.0f} s")
        named = set()
        m = SILENT_RE.search(err)
        if m:
            named = {int(x) for x in m.group(1).replace(" ", "").split(",") if x}
        m = PEER_RE.search(err)
        if m:
            named.add(int(m.group(1)))
        if victim not in named:
            probs.append(f"rank {r}: message does not name rank {victim}: {err}")
        res["extra"] += sorted(named - {victim})
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("test_kill")
    ap.add_argument("--trials", type=int, default=20, help="trials per mode")
    ap.add_argument("--ranks", default="2,3,4", help="rank counts to cycle through (e.g. 3, or 2,3,4)")
    ap.add_argument("--parallel", type=int, default=3, help="trials at once")
    ap.add_argument("--modes", default="allreduce,recv,step,pipe")
    ap.add_argument("--keep", help="keep every trial's directory under this one (default: only failures)")
    a = ap.parse_args()
    exe = os.path.abspath(a.test_kill)
    if shutil.which("mpirun") is None:
        print("kill: mpirun not found")
        return 77
    ranks = [int(x) for x in a.ranks.split(",") if x]
    if not ranks or min(ranks) < 2:
        ap.error("--ranks needs counts of at least 2")
    modes = [m for m in a.modes.split(",") if m]
    combos = [(n, v) for n in ranks for v in range(n)]
    # every victim of every rank count in turn; the two modes interleaved so both see the same load
    jobs = [(m, *combos[i % len(combos)]) for i in range(a.trials) for m in modes]
    base = a.keep or tempfile.mkdtemp(prefix="whale-kill-")
    os.makedirs(base, exist_ok=True)
    print(f"kill: {len(jobs)} trials ({a.trials} per mode: {', '.join(modes)}), ranks {ranks}, "
          f"{a.parallel} at a time, timeout {TIMEOUT_S:.0f} s, limit {LIMIT_S:.0f} s, hang after {HARD_S:.0f} s",
          flush=True)
    t0 = time.monotonic()
    results = []
    with ThreadPoolExecutor(max_workers=max(1, a.parallel)) as pool:
        futs = [pool.submit(run_trial, exe, m, n, v, base) for m, n, v in jobs]
        for f in futs:
            r = f.result()
            results.append(r)
            ok = not r["problems"]
            worst = max(r["waits"], default=float("nan"))
            print(f"  {r['mode']:9s} np {r['n']} victim {r['victim']}: {'ok  ' if ok else 'FAIL'} "
                  f"worst wait {worst:5.2f} s, trial {r['elapsed']:5.1f} s, victim died {r['where'] or '?'}"
                  + (f", also named {sorted(set(r['extra']))}" if r["extra"] else ""), flush=True)
            for p in r["problems"]:
                print(f"      {p}", flush=True)
            if not ok:
                print(f"      (logs kept in {r['dir']})", flush=True)
                try:
                    tail = open(os.path.join(r["dir"], "mpirun.log"), errors="replace").read().splitlines()[-12:]
                except OSError:
                    tail = []
                for line in tail:
                    print(f"      | {line}", flush=True)
    total = time.monotonic() - t0
    print()
    print(f"{'mode':10s} {'trials':>6s} {'failed':>6s} {'hangs':>5s} {'worst wait s':>12s} {'worst since kill s':>18s}")
    for m in modes:
        rs = [r for r in results if r["mode"] == m]
        waits = [w for r in rs for w in r["waits"]]
        sk = [w for r in rs for w in r["since_kill"]]
        print(f"{m:10s} {len(rs):6d} {sum(1 for r in rs if r['problems']):6d} {sum(1 for r in rs if r['hang']):5d} "
              f"{max(waits, default=float('nan')):12.2f} {max(sk, default=float('nan')):18.2f}")
    print()
    print("messages seen (one per mode, op and status):")
    seen = set()
    for r in results:
        for rank, op, status, _w, err in r["messages"]:
            key = (r["mode"], op, status, bool(SILENT_RE.search(err)))
            if key not in seen:
                seen.add(key)
                print(f"  [{r['mode']} np {r['n']} victim {r['victim']}, rank {rank} in {op}] {status}: {err}")
    passed = sum(1 for r in results if not r["problems"])
    failed = len(results) - passed
    if not a.keep:
        for r in results:
            if not r["problems"]:
                shutil.rmtree(r["dir"], ignore_errors=True)
        if not failed:
            shutil.rmtree(base, ignore_errors=True)
    print(f"total {total:.0f} s")
    print(f"kill: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
