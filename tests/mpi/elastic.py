#!/usr/bin/env python3
"""elastic.py - the main job outlives a rank: gpt_text trains on 3 ranks with --checkpoint DIR
--every 10; one rank is SIGKILLed mid-training; every survivor must exit non-zero naming the dead
rank (WH_COMM_TIMEOUT_S=10); the job relaunched on 2 ranks re-plans for the new cluster, resumes
from the last complete checkpoint and trains on. Its losses must equal, within 1e-5, those of an
uninterrupted 2-rank run from a copy of the same checkpoint, and continue the 3-rank curve.

    elastic.py GPT_TEXT [--steps 60] [--kill-at 35] [--keep DIR]

Each launch is `mpirun --enable-recovery` (Open MPI then leaves the survivors to libwhale's deadline)
with a small shell wrapper recording every rank's output and real exit status. Prints the log
excerpts and the comparison, ends with `elastic: N passed, N failed`."""
import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

MODEL = ["--layers", "2", "--width", "64", "--heads", "4", "--context", "32", "--batch", "12", "--eval-every", "1",
         "--sample", "0", "--every", "10"]
WRAPPER = '"$0" "$@" > "$OUT/rank$OMPI_COMM_WORLD_RANK.log" 2>&1; rc=$?; echo $rc > "$OUT/exit$OMPI_COMM_WORLD_RANK"; exit $rc'
STEP_RE = re.compile(r"^step +(\d+) +train loss ([0-9.]+) +val loss ([0-9.]+)", re.M)

passed = failed = 0


def check(ok, what):
    global passed, failed
    if ok:
        passed += 1
        print(f"ok   {what}")
    else:
        failed += 1
        print(f"FAIL {what}")


def launch(exe, n, ckpt, out, steps, env):
    os.makedirs(out, exist_ok=True)
    cmd = ["mpirun", "--oversubscribe", "--bind-to", "none", "--enable-recovery", "-x", "OUT", "-x",
           "WH_COMM_TIMEOUT_S", "-x", "OPENBLAS_NUM_THREADS"]
    if os.geteuid() == 0:
        cmd.append("--allow-run-as-root")
    cmd += ["-np", str(n), "/bin/sh", "-c", WRAPPER, exe] + MODEL + ["--steps", str(steps), "--checkpoint", ckpt]
    e = dict(env, OUT=out)
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                            start_new_session=True, env=e)


def wait(p, limit):
    try:
        p.wait(timeout=limit)
        return True
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        return False


def read(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def losses(text):
    return {int(m.group(1)): (float(m.group(2)), float(m.group(3))) for m in STEP_RE.finditer(text)}


def rank_pid(exe, rank, marker):
    """The gpt_text process of this rank of the launch (the wrapper shell has the same environment)."""
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            if os.path.realpath(f"/proc/{d}/exe") != os.path.realpath(exe):
                continue
            env = open(f"/proc/{d}/environ", "rb").read().split(b"\0")
            if f"OMPI_COMM_WORLD_RANK={rank}".encode() in env and f"OUT={marker}".encode() in env:
                return int(d)
        except OSError:
            pass
    return None


def rel(a, b):
    return abs(a - b) / max(abs(b), 1e-30)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("gpt_text")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--kill-at", type=int, default=35)
    ap.add_argument("--victim", type=int, default=2)
    ap.add_argument("--keep")
    a = ap.parse_args()
    exe = os.path.abspath(a.gpt_text)
    base = a.keep or tempfile.mkdtemp(prefix="wh_elastic_")
    os.makedirs(base, exist_ok=True)
    ckpt, ref = os.path.join(base, "ckpt"), os.path.join(base, "ckpt_ref")
    for d in (ckpt, ref):
        shutil.rmtree(d, ignore_errors=True)
    env = dict(os.environ, WH_COMM_TIMEOUT_S="10", OPENBLAS_NUM_THREADS="1")
    t0 = time.monotonic()

    # 1. three ranks, one killed once the job is past step kill-at
    out1 = os.path.join(base, "run3")
    p = launch(exe, 3, ckpt, out1, a.steps, env)
    killed_at = None
    while p.poll() is None and time.monotonic() - t0 < 240:
        seen = losses(read(os.path.join(out1, "rank0.log")))
        if seen and max(seen) >= a.kill_at:
            pid = rank_pid(exe, a.victim, out1)
            if pid:
                os.kill(pid, signal.SIGKILL)
                killed_at = max(seen)
                break
        time.sleep(0.05)
    check(killed_at is not None, f"3 ranks: rank {a.victim} SIGKILLed after step {killed_at}")
    finished = wait(p, 120)
    check(finished, "3 ranks: every survivor left within the deadline")
    log1 = read(os.path.join(out1, "rank0.log"))
    for r in range(3):
        if r == a.victim:
            continue
        rc = read(os.path.join(out1, f"exit{r}")).strip()
        text = read(os.path.join(out1, f"rank{r}.log"))
        err = [l for l in text.splitlines() if "failed:" in l]
        named = bool(err) and re.search(rf"\brank {a.victim}\b|ranks? [0-9, ]*\b{a.victim}\b", err[-1]) is not None
        check(rc not in ("", "0") and named, f"3 ranks: survivor rank {r} exited {rc or '?'} naming rank {a.victim}: "
              f"{err[-1][:300] if err else '(no error line)'}")
    info = read(os.path.join(ckpt, "latest")).split()
    resumed_step = int(info[0].split("-")[1].split(".")[0]) if info else -1
    check(resumed_step > 0 and resumed_step % 10 == 0 and resumed_step <= killed_at,
          f"the last complete checkpoint is step {resumed_step} (the kill came after step {killed_at})")
    shutil.copytree(ckpt, ref)

    # 2. the same job relaunched on two ranks, and an uninterrupted 2-rank run from a copy of the checkpoint
    out2, out_ref = os.path.join(base, "run2"), os.path.join(base, "ref2")
    p = launch(exe, 2, ckpt, out2, a.steps, env)
    ok2 = wait(p, 240)
    p = launch(exe, 2, ref, out_ref, a.steps, env)
    okr = wait(p, 240)
    log2, logr = read(os.path.join(out2, "rank0.log")), read(os.path.join(out_ref, "rank0.log"))
    rc2, rcr = read(os.path.join(out2, "exit0")).strip(), read(os.path.join(out_ref, "exit0")).strip()
    check(ok2 and okr and rc2 in ("0", "3") and rcr in ("0", "3"),
          f"2 ranks: the relaunch and the reference ran to step {a.steps} (exit {rc2}, {rcr}: 0 beat the unigram "
          f"baseline, 3 did not)")
    m = re.search(r"^resumed from .*", log2, re.M)
    check(m is not None and f"at step {resumed_step} " in m.group(0) and "saved by 3 ranks" in m.group(0)
          and "this run: 2 ranks" in m.group(0), f"2 ranks: {m.group(0) if m else 'no resume line'}")
    planned = re.search(r"^stage 0: .* on 2 devices .*", log2, re.M)
    check(planned is not None, f"2 ranks: the planner planned for the new cluster: {planned.group(0) if planned else '?'}")
    l1, l2, lr = losses(log1), losses(log2), losses(logr)
    steps = list(range(resumed_step + 1, a.steps + 1))
    have = all(k in l2 and k in lr for k in steps)
    worst = max((max(rel(l2[k][0], lr[k][0]), rel(l2[k][1], lr[k][1])) for k in steps), default=1) if have else 1
    check(have and worst <= 1e-5, f"2 ranks: steps {steps[0]}..{steps[-1]}, train and validation loss against the "
          f"uninterrupted 2-rank reference from the same checkpoint: worst rel err {worst:.2e} (<= 1e-5)")
    overlap = [k for k in steps if k in l1]
    cont = max((rel(l2[k][0], l1[k][0]) for k in overlap), default=0) if overlap and have else 1
    check(overlap and cont <= 1e-4, f"the curve continues: steps {overlap[0] if overlap else '-'}.."
          f"{overlap[-1] if overlap else '-'} on 2 ranks against the 3-rank run before its kill: worst rel err "
          f"{cont:.2e}")

    print("\n---- 3 ranks (rank 0's log, from the last checkpoint on) ----")
    lines = log1.splitlines()
    start = max([i for i, l in enumerate(lines) if l.startswith("checkpoint: step")] or [0])
    print("\n".join(lines[max(start - 2, 0):]))
    for r in range(3):
        if r != a.victim:
            err = [l for l in read(os.path.join(out1, f"rank{r}.log")).splitlines() if "failed:" in l]
            print(f"rank {r}: {err[-1] if err else '(none)'}")
    print("\n---- relaunched on 2 ranks (rank 0's log, around the resume) ----")
    lines = log2.splitlines()
    at = next((i for i, l in enumerate(lines) if l.startswith("resumed from")), 0)
    print("\n".join(lines[max(at - 1, 0):at + 6]))
    print("...")
    print("\n".join(lines[-4:]))
    print("\n step   3 ranks (killed)   2 ranks (relaunched)   2 ranks (reference)")
    for k in steps[:8] + steps[-2:]:
        print(f"{k:5d}   {l1[k][0] if k in l1 else float('nan'):16.6f}   {l2.get(k, (float('nan'),))[0]:20.6f}   "
              f"{lr.get(k, (float('nan'),))[0]:19.6f}")
    print(f"({time.monotonic() - t0:.0f} s)")
    if not a.keep:
        shutil.rmtree(base, ignore_errors=True)
    print(f"elastic: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
