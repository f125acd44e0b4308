"""GPU benchmark: GPT-2 124M training steps, libwhale's CUDA backend against PyTorch on the same
card in the same run. PyTorch's model is the plain one (nanoGPT shape: fused qkv, scaled-dot-
product attention, tanh GELU, tied embeddings), bf16 autocast, AdamW; eager, then torch.compile
when it compiles within --compile-timeout seconds. Prints tokens/s and MFU (6N + attention FLOPs
per token over the card's bf16 dense peak) for each, then RESULT lines.

    gpu_bench.py GPU_GPT2_BINARY [--batch 16] [--steps 20] [--compile-timeout 240] [--profile]
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time

PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def peak_of(name):
    for k, v in PEAK_BF16.items():
        if k in name:
            return v
    return None


def flops_per_token(params, layers, width, context):
    # 6N for the weights' forward and backward; attention scores and values, 6 * 2 * L * T * C
    return 6 * params + 12 * layers * width * context


def torch_run(batch, steps, compiled, result_file=None):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class Block(nn.Module):
        def __init__(s, c, h):
            super().__init__()
            s.h = h
            s.ln1, s.ln2 = nn.LayerNorm(c), nn.LayerNorm(c)
            s.qkv, s.proj = nn.Linear(c, 3 * c), nn.Linear(c, c)
            s.fc, s.fcproj = nn.Linear(c, 4 * c), nn.Linear(4 * c, c)

        def forward(s, x):
            b, t, c = x.shape
            q, k, v = s.qkv(s.ln1(x)).split(c, dim=2)
            q, k, v = (z.view(b, t, s.h, c // s.h).transpose(1, 2) for z in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + s.proj(y.transpose(1, 2).contiguous().view(b, t, c))
            return x + s.fcproj(F.gelu(s.fc(s.ln2(x)), approximate="tanh"))

    class GPT(nn.Module):
        def __init__(s, v=50304, t=1024, c=768, layers=12, heads=12):
            super().__init__()
            s.wte, s.wpe = nn.Embedding(v, c), nn.Embedding(t, c)
            s.blocks = nn.ModuleList(Block(c, heads) for _ in range(layers))
            s.ln_f = nn.LayerNorm(c)

        def forward(s, idx, targets):
            b, t = idx.shape
            x = s.wte(idx) + s.wpe(torch.arange(t, device=idx.device))
            for blk in s.blocks:
                x = blk(x)
            logits = s.ln_f(x) @ s.wte.weight.t()
            return F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.view(-1))

    torch.manual_seed(0)
    dev = "cuda"
    model = GPT().to(dev)
    for p in model.parameters():  # GPT-2's initialisation, as libwhale's model has
        if p.dim() == 2:
            nn.init.normal_(p, 0.0, 0.02)
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4)
    fwd = torch.compile(model) if compiled else model
    idx = torch.randint(0, 50257, (batch, 1024), device=dev)
    tgt = torch.roll(idx, -1, 1)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = fwd(idx, tgt)
        loss.backward()
        opt.step()
        return loss

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        loss = step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    times.sort()
    med = times[len(times) // 2]
    r = {"impl": "torch.compile" if compiled else "torch eager", "step_ms": med * 1e3, "tok_s": batch * 1024 / med,
         "params": params, "loss_last": float(loss.detach()), "device": torch.cuda.get_device_name(0),
         "device_mb": torch.cuda.max_memory_allocated() / 2**20}
    if result_file:
        with open(result_file, "w") as f:
            json.dump(r, f)
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--compile-timeout", type=float, default=240)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--torch-only-compiled", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.torch_only_compiled:  # the child that compiles, so a slow compile can be cut off
        torch_run(a.batch, a.steps, True, a.torch_only_compiled)
        return 0
    try:
        import torch
        if not torch.cuda.is_available():
            raise ImportError
    except ImportError:
        print("no CUDA PyTorch / no GPU: skipped")
        return 77
    rows = []
    cmd = [a.binary, "--batch", str(a.batch), "--steps", str(a.steps)] + (["--profile"] if a.profile else [])
    p = subprocess.run(cmd, capture_output=True, text=True)
    sys.stderr.write(p.stderr)
    if p.returncode != 0:
        print("libwhale run failed (%d): %s" % (p.returncode, p.stdout.strip()))
        return 1
    wl = json.loads(p.stdout.strip().splitlines()[-1])
    rows.append(wl)
    te = torch_run(a.batch, a.steps, False)
    rows.append(te)
    device = te["device"]
    tc = None
    out = "/tmp/wh_torch_compile_%d.json" % os.getpid()
    try:
        subprocess.run([sys.executable, __file__, a.binary, "--batch", str(a.batch), "--steps", str(a.steps),
                        "--torch-only-compiled", out], timeout=a.compile_timeout, check=True,
                       capture_output=True, text=True)
        with open(out) as f:
            tc = json.load(f)
        rows.append(tc)
    except (subprocess.TimeoutExpired, subprocess.CalledProcessError) as e:
        print("torch.compile: not measured (%s)" % ("did not finish in %.0f s" % a.compile_timeout
                                                    if isinstance(e, subprocess.TimeoutExpired) else "failed"))
    peak = peak_of(device)
    fpt = flops_per_token(wl["params"], 12, 768, 1024)
    print("GPT-2 124M, B=%d, T=1024, AdamW, on %s (bf16 dense peak %s TFLOP/s)" %
          (a.batch, device, "%.0f" % (peak / 1e12) if peak else "unknown"))
    print("%-16s %10s %12s %8s %10s %10s" % ("impl", "step ms", "tokens/s", "MFU", "loss", "device MB"))
    for r in rows:
        mfu = r["tok_s"] * fpt / peak if peak else float("nan")
        print("%-16s %10.2f %12.0f %7.1f%% %10.4f %10.0f" % (r["impl"], r["step_ms"], r["tok_s"], 100 * mfu,
                                                          r["loss_last"], r["device_mb"]))
    print("RESULT gpt2_tok_s_libwhale %.0f" % wl["tok_s"])
    print("RESULT gpt2_tok_s_torch_eager %.0f" % te["tok_s"])
    if tc:
        print("RESULT gpt2_tok_s_torch_compile %.0f" % tc["tok_s"])
        print("RESULT gpt2_ratio_vs_torch_compile %.3f" % (wl["tok_s"] / tc["tok_s"]))
    print("RESULT gpt2_ratio_vs_torch_eager %.3f" % (wl["tok_s"] / te["tok_s"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
