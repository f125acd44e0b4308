"""CPU training benchmark: libwhale (bench/cpu_train.c) against PyTorch (bench/torch_train.py),
measured in the same run with the same thread count, alternating sides over several rounds.
Prints a table and RESULT lines: time ratios libwhale/PyTorch (lower is better) and the GEMM
throughput ratio libwhale/raw cblas_sgemm (higher is better).

    cpu_bench.py PATH/TO/cpu_train [--threads N] [--steps N] [--rounds N]
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def run(cmd, env):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env, timeout=900).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cpu_train")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--steps", type=int, default=7)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(a.threads), OMP_NUM_THREADS=str(a.threads))
    # checked in a child, so this driver stays small
    if subprocess.run([sys.executable, "-c", "import torch"], capture_output=True).returncode != 0:
        print("PyTorch is not importable by", sys.executable, "- skipping")
        return 77
    wh = {"mlp": [], "gpt": []}
    th = {"mlp": [], "gpt": []}
    mem = {}
    for r in range(a.rounds):
        for model in ("mlp", "gpt"):
            w = run([a.cpu_train, str(a.threads), str(a.steps), model], env)
            t = run([sys.executable, os.path.join(HERE, "torch_train.py"), str(a.threads), str(a.steps), model], env)
            wh[model].append(w[model + "_step_s"])
            th[model].append(t[model + "_step_s"])
            mem[model] = (w[model + "_peak_rss_mb"], w[model + "_planned_mb"], t[model + "_peak_rss_mb"])
            print(f"round {r + 1} {model}: libwhale {w[model + '_step_s'] * 1e3:.1f} ms/step, "
                  f"PyTorch {t[model + '_step_s'] * 1e3:.1f} ms/step", flush=True)
    gemm = [run([a.cpu_train, str(a.threads), "9", "gemm"], env)["gemm_ratio"] for _ in range(a.rounds)]
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{a.threads} threads each side; medians of {a.steps} steps, {a.rounds} rounds")
    print(f"{'model':6} {'libwhale ms':>12} {'PyTorch ms':>11} {'ratio':>6} {'whale RSS MB':>13} "
          f"{'whale plan MB':>14} {'torch RSS MB':>13}")
    ratios = {}
    for model in ("mlp", "gpt"):
        mw, mt = statistics.median(wh[model]), statistics.median(th[model])
        ratios[model] = mw / mt
        rss, plan, trss = mem[model]
        print(f"{model:6} {mw * 1e3:12.1f} {mt * 1e3:11.1f} {mw / mt:6.3f} {rss:13.1f} {plan:14.1f} {trss:13.1f}")
    print(f"gemm   libwhale/cblas_sgemm throughput {statistics.median(gemm):.3f} (GPT shapes, medians)")
    print(f"RESULT cpu_mlp_ratio_vs_torch {ratios['mlp']:.3f}")
    print(f"RESULT cpu_gpt_ratio_vs_torch {ratios['gpt']:.3f}")
    print(f"RESULT gemm_ratio_vs_openblas {statistics.median(gemm):.3f}")
    print(f"RESULT cpu_mlp_peak_rss_mb_whale {mem['mlp'][0]:.1f}")
    print(f"RESULT cpu_mlp_peak_rss_mb_torch {mem['mlp'][2]:.1f}")
    print(f"RESULT cpu_gpt_peak_rss_mb_whale {mem['gpt'][0]:.1f}")
    print(f"RESULT cpu_gpt_peak_rss_mb_torch {mem['gpt'][2]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
