#!/usr/bin/python3
"""torch_ref.py - PyTorch reference dumps for the libwhale parity tests (tests/parity/parity.c).

Usage: torch_ref.py OUTDIR  -> writes OUTDIR/mlp.whtd and OUTDIR/convnet.whtd.

A dump ("WHTD", little endian) holds, per model: the initial parameters, x, labels, logits, loss
and grad.<param> from one forward/backward; train.x.<i>/train.labels.<i> (i = 0..9); and for
AdamW (warm-up + cosine lr) and SGD (Nesterov momentum, weight decay, clip_grad_norm_ 1.0) the
loss of each of the 10 steps (<opt>.loss, computed by that step's forward, before its update),
the lr used at each step (<opt>.lr), for SGD the global gradient norm before clipping
(sgd.grad_norm), and the final parameters (<opt>.final.<param>).
"""
import math
import os
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F

SEED = 20240611
STEPS = 10
DT_F32, DT_I32 = 0, 1

ADAMW = dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
WARMUP, MIN_LR = 3, 1e-3
SGD = dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4, dampening=0)
CLIP = 1.0
# Training inputs are drawn with this std so the global gradient norm crosses CLIP: the MLP's SGD
# run clips at every step, the conv net's at some steps only (both branches get checked).
TRAIN_X_STD = 2.0


def warmup_cosine_lr(t):
    """lr for step t = 1..STEPS: linear warm-up over WARMUP steps, cosine to MIN_LR at STEPS."""
    base = ADAMW["lr"]
    if t <= WARMUP:
        return base * t / WARMUP
    progress = (t - WARMUP) / (STEPS - WARMUP)
    return MIN_LR + 0.5 * (base - MIN_LR) * (1.0 + math.cos(math.pi * progress))


# ------------------------------------------------------------------ models
# Parameters are plain tensors in PyTorch layout, ordered as parity.c creates them.

def mlp_params():
    l1 = torch.nn.Linear(64, 32)
    l2 = torch.nn.Linear(32, 32)
    l3 = torch.nn.Linear(32, 10)
    return {"l1.w": l1.weight, "l1.b": l1.bias, "l2.w": l2.weight, "l2.b": l2.bias,
            "l3.w": l3.weight, "l3.b": l3.bias}


def mlp_forward(p, x):
    h1 = torch.relu(x @ p["l1.w"].t() + p["l1.b"])
    h2 = torch.tanh(h1 @ p["l2.w"].t() + p["l2.b"])
    return h2 @ p["l3.w"].t() + p["l3.b"]


def mlp_batch(gen, std=1.0):
    x = torch.randn(16, 64, generator=gen) * std
    labels = torch.randint(0, 10, (16,), generator=gen)
    return x, labels


def convnet_params():
    c1 = torch.nn.Conv2d(1, 4, 3, padding=1)
    c2 = torch.nn.Conv2d(4, 8, 3, padding=1)
    fc = torch.nn.Linear(32, 10)
    return {"c1.w": c1.weight, "c1.b": c1.bias, "c2.w": c2.weight, "c2.b": c2.bias,
            "fc.w": fc.weight, "fc.b": fc.bias}


def convnet_forward(p, x):
    h = F.conv2d(x, p["c1.w"], p["c1.b"], stride=1, padding=1)
    h = F.max_pool2d(torch.relu(h), 2, 2)
    h = F.conv2d(h, p["c2.w"], p["c2.b"], stride=1, padding=1)
    h = F.avg_pool2d(torch.relu(h), 2, 2)  # [8, 8, 2, 2]
    h = h.reshape(h.shape[0], 32)
    return h @ p["fc.w"].t() + p["fc.b"]


def convnet_batch(gen, std=1.0):
    x = torch.randn(8, 1, 8, 8, generator=gen) * std
    labels = torch.randint(0, 10, (8,), generator=gen)
    return x, labels


MODELS = {
    "mlp": (mlp_params, mlp_forward, mlp_batch),
    "convnet": (convnet_params, convnet_forward, convnet_batch),
}


# ------------------------------------------------------------------- dumps

def write_dump(path, tensors):
    """tensors: list of (name, array-like); float -> f32, integer -> i32."""
    with open(path, "wb") as f:
        f.write(b"WHTD")
        f.write(struct.pack("<I", len(tensors)))
        for name, t in tensors:
            if isinstance(t, torch.Tensor):
                t = t.detach().cpu().numpy()
            a = np.asarray(t)
            if np.issubdtype(a.dtype, np.integer):
                assert a.min(initial=0) >= -2**31 and a.max(initial=0) < 2**31, name
                a, dt = a.astype("<i4"), DT_I32
            else:
                a, dt = a.astype("<f4"), DT_F32
            nb = name.encode()
            f.write(struct.pack("<I", len(nb)))
            f.write(nb)
            f.write(struct.pack("<II", dt, a.ndim))
            f.write(struct.pack("<%dq" % a.ndim, *a.shape))
            f.write(np.ascontiguousarray(a).tobytes())


def clone_params(p):
    return {k: v.detach().clone().requires_grad_(True) for k, v in p.items()}


def train(forward, init, batches, opt_name):
    p = clone_params(init)
    params = list(p.values())
    if opt_name == "adamw":
        opt = torch.optim.AdamW(params, **ADAMW)
    else:
        opt = torch.optim.SGD(params, **SGD)
    losses, lrs, gnorms = [], [], []
    for t, (x, labels) in enumerate(batches, start=1):
        lr = warmup_cosine_lr(t) if opt_name == "adamw" else SGD["lr"]
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(forward(p, x), labels)
        loss.backward()
        if opt_name == "sgd":
            gnorms.append(float(torch.nn.utils.clip_grad_norm_(params, CLIP)))
        opt.step()
        losses.append(loss.item())
        lrs.append(lr)
    out = [(opt_name + ".loss", np.array(losses, dtype=np.float32)),
           (opt_name + ".lr", np.array(lrs, dtype=np.float32))]
    if gnorms:  # the global gradient norm before clipping, for diagnosis
        out.append((opt_name + ".grad_norm", np.array(gnorms, dtype=np.float32)))
    out += [("%s.final.%s" % (opt_name, k), v) for k, v in p.items()]
    return out


def model_dump(name):
    make_params, forward, make_batch = MODELS[name]
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED + 1)
    init = {k: v.detach().clone() for k, v in make_params().items()}
    x, labels = make_batch(gen)
    batches = [make_batch(gen, TRAIN_X_STD) for _ in range(STEPS)]

    p = clone_params(init)
    logits = forward(p, x)
    loss = F.cross_entropy(logits, labels)
    loss.backward()

    out = list(init.items())
    out += [("x", x), ("labels", labels), ("logits", logits), ("loss", loss)]
    out += [("grad." + k, v.grad) for k, v in p.items()]
    for i, (bx, bl) in enumerate(batches):
        out += [("train.x.%d" % i, bx), ("train.labels.%d" % i, bl)]
    out += train(forward, init, batches, "adamw")
    out += train(forward, init, batches, "sgd")
    return out


def generate(outdir):
    """Write OUTDIR/<model>.whtd for every model; returns {model: path}."""
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float32)
    os.makedirs(outdir, exist_ok=True)
    paths = {}
    for name in MODELS:
        path = os.path.join(outdir, name + ".whtd")
        write_dump(path, model_dump(name))
        paths[name] = path
    return paths


def main(argv):
    if len(argv) != 2:
        sys.stderr.write("usage: torch_ref.py OUTDIR\n")
        return 2
    for name, path in generate(argv[1]).items():
        print("%s: %s" % (name, path))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
