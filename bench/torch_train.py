"""PyTorch's side of the CPU training benchmark: the same MLP and GPT as bench/cpu_train.c,
AdamW, median seconds per training step after warm-up. Prints one JSON object.

    torch_train.py THREADS STEPS {mlp,gpt}
"""
import json
import math
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, c, h):
        super().__init__()
        self.h = h
        self.ln1, self.ln2 = nn.LayerNorm(c), nn.LayerNorm(c)
        self.qkv, self.proj = nn.Linear(c, 3 * c), nn.Linear(c, c)
        self.fc, self.fcproj = nn.Linear(c, 4 * c), nn.Linear(4 * c, c)

    def forward(self, x, mask):
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.h, c // self.h).transpose(1, 2) for z in (q, k, v))
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(c // self.h))
        att = F.softmax(att.masked_fill(mask[:, :, :t, :t] == 0, float("-inf")), dim=-1)
        y = (att @ v).transpose(1, 2).contiguous().view(b, t, c)
        x = x + self.proj(y)
        return x + self.fcproj(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, v=256, t=128, c=256, layers=4, heads=4):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(v, c), nn.Embedding(t, c)
        self.blocks = nn.ModuleList(Block(c, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(c)
        self.register_buffer("mask", torch.tril(torch.ones(t, t)).view(1, 1, t, t))

    def forward(self, idx, targets):
        b, t = idx.shape
        x = self.wte(idx) + self.wpe(torch.arange(t))
        for blk in self.blocks:
            x = blk(x, self.mask)
        logits = self.ln_f(x) @ self.wte.weight.t()  # weight tying
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def mlp_case():
    model = nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10))
    x = torch.randn(256, 784)
    y = torch.arange(256) % 10
    return model, lambda: F.cross_entropy(model(x), y)


def gpt_case():
    model = GPT()
    idx = (torch.arange(16 * 128) * 7 % 256).view(16, 128)
    tgt = ((torch.arange(16 * 128) * 7 + 1) % 256).view(16, 128)
    return model, lambda: model(idx, tgt)


def main():
    threads, steps, which = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model, loss_fn = mlp_case() if which == "mlp" else gpt_case()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    times = []
    for i in range(3 + steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        opt.step()
        if i >= 3:
            times.append(time.perf_counter() - t0)
    times.sort()
    med = times[len(times) // 2] if len(times) % 2 else 0.5 * (times[len(times) // 2 - 1] + times[len(times) // 2])
    # VmHWM: the peak of this process image (ru_maxrss would carry the parent's over exec)
    with open("/proc/self/status") as f:
        peak = next(int(l.split()[1]) for l in f if l.startswith("VmHWM")) / 1024.0
    print(json.dumps({"threads": threads, which + "_step_s": med, which + "_peak_rss_mb": peak,
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()
