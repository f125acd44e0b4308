"""python_bench.py PYTHON_STEP - what the Python package costs at run time, against C in the same run.

1. One GPT training step (the model and optimizer of examples/gpt_text.c; per step feed tokens,
   feed targets, step, fetch the loss) from Python against the same loop in C (python_step.c,
   running beside this process): C and Python take turns one step at a time, so neighbouring
   steps see the same load of a shared machine; the ratio is the median of the turns' Python/C
   ratios (required <= 1.03), and both sides must reach the same loss at every step.
2. feed+feed+step+fetch on a tiny graph (python_step.c's), microseconds per iteration from
   Python and from C, turns of ITERS iterations: their difference is the binding's per-call
   overhead.

Ends with RESULT lines. Environment: WHALE_BENCH_THREADS (default 1: steadier on a shared
machine), WHALE_BENCH_STEPS (default 40 measured turns after 3 warm-up steps).
"""
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np

import whale
from gpt_model import build_gpt

THREADS = int(os.environ.get("WHALE_BENCH_THREADS", "1"))
STEPS = int(os.environ.get("WHALE_BENCH_STEPS", "40"))
WARMUP = 3
TINY_TURNS, TINY_ITERS = 15, 5000
GPT = dict(layers=4, heads=4, width=128, context=64, batch=16)  # gpt_text's defaults


class CPeer:
    """python_step.c serving measurements: one per go()."""

    def __init__(self, args):
        self.p = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        if self.p.stdout.readline().strip() != "ready":
            raise SystemExit("python_step did not start: %s" % args)

    def go(self):
        self.p.stdin.write("go\n")
        self.p.stdin.flush()
        t, loss = self.p.stdout.readline().split()
        return float(t), float(loss)

    def close(self):
        self.p.stdin.close()
        if self.p.wait(60) != 0:
            raise SystemExit("python_step failed")


class PyGPT:
    """Python's twin of python_step.c's gpt()."""

    def __init__(self, steps):
        self.ctx = whale.Context(threads=THREADS)
        g = whale.Graph(self.ctx)
        m = build_gpt(g, vocab=256, context=GPT["context"], width=GPT["width"], layers=GPT["layers"],
                      heads=GPT["heads"], names="long", pos_std=0.02, scaled_proj=True, stage_per_block=True,
                      recompute_per_block=True)
        g.backward(m.loss)
        lr = np.float32(3e-3)
        g.optimizer(whale.AdamW(lr=whale.WarmupCosine(float(lr), steps // 20 + 1, steps, float(np.float32(3e-4))),
                                betas=(0.9, 0.95), weight_decay=0.1, clip_norm=1.0))
        self.s = g.session(batch=GPT["batch"])
        n = GPT["batch"] * GPT["context"]
        i = np.arange(n, dtype=np.int64)
        self.tok = ((i * 7 + 3) % 256).astype(np.int32).reshape(GPT["batch"], GPT["context"])
        self.tgt = ((i * 7 + 4) % 256).astype(np.int32).reshape(GPT["batch"], GPT["context"])
        self.m = m

    def go(self):
        s, m = self.s, self.m
        t0 = time.perf_counter()
        s.feed(m.tokens, self.tok)
        s.feed(m.targets, self.tgt)
        s.step()
        loss = s.fetch(m.loss)
        return time.perf_counter() - t0, float(loss)


class PyTiny:
    """Python's twin of python_step.c's tiny()."""

    def __init__(self, iters):
        self.ctx = whale.Context(threads=THREADS)
        g = whale.Graph(self.ctx)
        self.x = g.input("x", whale.f32, (whale.BATCH, 16))
        self.y = g.input("y", whale.f32, (whale.BATCH, 4))
        w = g.param("w", (4, 16), whale.init.normal(0, 0.1, 1))
        self.loss = g.mse(self.x @ w.T, self.y)
        g.backward(self.loss)
        g.optimizer(whale.SGD())
        self.s = g.session(batch=4)
        self.xd = ((np.arange(64) % 5).astype(np.float32) * np.float32(0.1)).reshape(4, 16)
        self.yd = (np.arange(16) % 3).astype(np.float32).reshape(4, 4)
        self.iters = iters

    def go(self):
        feed, step, fetch = self.s.feed, self.s.step, self.s.fetch
        x, y, xd, yd, loss = self.x, self.y, self.xd, self.yd, self.loss
        t0 = time.perf_counter()
        for _ in range(self.iters):
            feed(x, xd)
            feed(y, yd)
            step()
            out = fetch(loss)
        return (time.perf_counter() - t0) / self.iters, float(out)


def take_turns(c, py, warmup, turns, what):
    """(C seconds, Python seconds) per turn, the order alternating; the losses must agree."""
    cs, ps = [], []
    for k in range(warmup + turns):
        first, second = (c, py) if k % 2 == 0 else (py, c)
        a, b = first.go(), second.go()
        (ct, cl), (pt, pl) = (a, b) if first is c else (b, a)
        if np.float32(cl) != np.float32(pl):
            raise SystemExit("FAIL: %s turn %d: Python's loss %.9g is not C's %.9g: not the same computation"
                             % (what, k, pl, cl))
        if k >= warmup:
            cs.append(ct)
            ps.append(pt)
    return cs, ps


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(exe):
    print("libwhale %s [%s]" % (whale.version(), whale.build_info()))
    print("machine: %s, %d cores online, load %.2f; %d thread(s) per side; Python %s"
          % (cpu_name(), os.cpu_count(), os.getloadavg()[0], THREADS, platform.python_version()))
    print("GPT %s: %d turns each of C and Python, one step per turn, after %d warm-up steps" % (GPT, STEPS, WARMUP))
    n = WARMUP + STEPS
    c = CPeer([exe, "gpt", str(THREADS), str(n), str(GPT["layers"]), str(GPT["heads"]), str(GPT["width"]),
               str(GPT["context"]), str(GPT["batch"])])
    py = PyGPT(n)
    cs, ps = take_turns(c, py, WARMUP, STEPS, "GPT")
    c.close()
    py.ctx.close()
    ratios = [p / q for p, q in zip(ps, cs)]
    ratio = statistics.median(ratios)
    q = statistics.quantiles(ratios, n=4)
    print("GPT step: C %.2f ms, Python %.2f ms (medians); Python/C per turn: median %.4f, quartiles %.4f..%.4f "
          "(required <= 1.03); the same loss at every step" % (1e3 * statistics.median(cs), 1e3 * statistics.median(ps),
                                                                ratio, q[0], q[2]))

    c = CPeer([exe, "tiny", str(THREADS), str(TINY_ITERS)])
    py = PyTiny(TINY_ITERS)
    cs, ps = take_turns(c, py, 1, TINY_TURNS, "tiny")
    c.close()
    py.ctx.close()
    c_us, py_us = 1e6 * statistics.median(cs), 1e6 * statistics.median(ps)
    print("tiny graph, feed+feed+step+fetch: C %.2f us, Python %.2f us per iteration (medians of %d turns of %d): "
          "%.2f us of binding overhead" % (c_us, py_us, TINY_TURNS, TINY_ITERS, py_us - c_us))
    print("RESULT python_step_ratio_vs_c %.4f" % ratio)
    print("RESULT python_feed_step_fetch_us %.2f" % py_us)
    print("RESULT python_call_overhead_us %.2f" % (py_us - c_us))
    return 0 if ratio <= 1.03 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
