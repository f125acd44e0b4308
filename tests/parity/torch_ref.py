#!/usr/bin/python3
"""torch_ref.py - PyTorch reference dumps for the libwhale parity tests (tests/parity/parity.c).

Usage: torch_ref.py OUTDIR  -> writes OUTDIR/mlp.whtd, OUTDIR/convnet.whtd and OUTDIR/gpt.whtd.

A dump ("WHTD", little endian) holds, per model: the initial parameters, x, labels, logits, loss
and grad.<param> from one forward/backward; train.x.<i>/train.labels.<i> (i = 0..9); and for
AdamW (warm-up + cosine lr) and SGD (Nesterov momentum, weight decay, clip_grad_norm_ 1.0) the
loss of each of the 10 steps (<opt>.loss, computed by that step's forward, before its update),
the lr used at each step (<opt>.lr), where clipping is on the global gradient norm before
clipping (<opt>.grad_norm), and the final parameters (<opt>.final.<param>).

For the GPT, x holds int32 token ids [B, T] and labels the int32 targets [B, T]; logits are
[B, T, V] and the loss is the mean cross-entropy over all B*T positions. Its AdamW run uses
GPT-2 settings (betas 0.9/0.95, weight decay 0.1, clip_grad_norm_ 1.0; GPT_ADAMW below).
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


# The GPT's AdamW: GPT-2 hyper-parameters, warm-up + cosine from 1e-3 to 1e-4, clipping at 1.0.
# With the seeds below its global gradient norm is above 1.0 at some steps and below at others
# (adamw.grad_norm in the dump), so both branches of the clipping get checked.
GPT_ADAMW = dict(lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
GPT_MIN_LR = 1e-4


def warmup_cosine_lr(t, base=ADAMW["lr"], min_lr=MIN_LR):
    """lr for step t = 1..STEPS: linear warm-up over WARMUP steps, cosine to min_lr at STEPS."""
    if t <= WARMUP:
        return base * t / WARMUP
    progress = (t - WARMUP) / (STEPS - WARMUP)
    return min_lr + 0.5 * (base - min_lr) * (1.0 + math.cos(math.pi * progress))


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


# A 2-layer GPT-2-style model as examples/gpt_text.c builds it: pre-norm blocks, fused qkv
# projection, causal multi-head attention, tanh-GELU MLP, final LayerNorm, logits through the
# tied token embedding.
GPT_V, GPT_T, GPT_C, GPT_HEADS, GPT_LAYERS, GPT_B = 64, 16, 32, 4, 2, 4
LN_EPS = 1e-5


def gpt_params():
    V, T, C, L = GPT_V, GPT_T, GPT_C, GPT_LAYERS
    std, proj_std = 0.02, 0.02 / math.sqrt(2.0 * L)

    def normal(shape, s):
        return torch.randn(*shape) * s

    # LayerNorm gains/shifts and biases start perturbed away from 1/0 so that their gradients
    # (and the gradients flowing through them) are tested non-trivially.
    def ln(prefix):
        return {prefix + ".g": 1.0 + normal((C,), 0.1), prefix + ".b": normal((C,), 0.1)}

    p = {"wte": normal((V, C), std), "wpe": normal((T, C), std)}
    for l in range(L):
        h = "h%d." % l
        p.update(ln(h + "ln1"))
        p[h + "attn.qkv.w"] = normal((3 * C, C), std)
        p[h + "attn.qkv.b"] = normal((3 * C,), 0.02)
        p[h + "attn.proj.w"] = normal((C, C), proj_std)
        p[h + "attn.proj.b"] = normal((C,), 0.02)
        p.update(ln(h + "ln2"))
        p[h + "mlp.fc.w"] = normal((4 * C, C), std)
        p[h + "mlp.fc.b"] = normal((4 * C,), 0.02)
        p[h + "mlp.proj.w"] = normal((C, 4 * C), proj_std)
        p[h + "mlp.proj.b"] = normal((C,), 0.02)
    p.update(ln("ln_f"))
    return p


def gpt_forward(p, tokens):
    B, T = tokens.shape
    C, H = GPT_C, GPT_HEADS
    D = C // H
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
    x = F.embedding(tokens, p["wte"]) + p["wpe"]
    for l in range(GPT_LAYERS):
        pre = "h%d." % l
        h = F.layer_norm(x, (C,), p[pre + "ln1.g"], p[pre + "ln1.b"], LN_EPS)
        qkv = h @ p[pre + "attn.qkv.w"].t() + p[pre + "attn.qkv.b"]
        q, k, v = qkv.split(C, dim=-1)
        q, k, v = (t.reshape(B, T, H, D).transpose(1, 2) for t in (q, k, v))  # [B, H, T, D]
        att = (q @ k.transpose(-2, -1)) / math.sqrt(D)
        att = torch.softmax(att.masked_fill(~causal, float("-inf")), dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        x = x + (y @ p[pre + "attn.proj.w"].t() + p[pre + "attn.proj.b"])
        h = F.layer_norm(x, (C,), p[pre + "ln2.g"], p[pre + "ln2.b"], LN_EPS)
        h = F.gelu(h @ p[pre + "mlp.fc.w"].t() + p[pre + "mlp.fc.b"], approximate="tanh")
        x = x + (h @ p[pre + "mlp.proj.w"].t() + p[pre + "mlp.proj.b"])
    x = F.layer_norm(x, (C,), p["ln_f.g"], p["ln_f.b"], LN_EPS)
    return x @ p["wte"].t()  # weight tying


def gpt_batch(gen, std=1.0):
    """Random byte-ish token windows: tokens and their next-token targets, both [B, T]."""
    del std  # token ids have no scale
    seq = torch.randint(0, GPT_V, (GPT_B, GPT_T + 1), generator=gen)
    return seq[:, :-1].contiguous(), seq[:, 1:].contiguous()


# name: (make_params, forward, make_batch, AdamW options, AdamW final lr, AdamW clip norm)
MODELS = {
    "mlp": (mlp_params, mlp_forward, mlp_batch, ADAMW, MIN_LR, 0.0),
    "convnet": (convnet_params, convnet_forward, convnet_batch, ADAMW, MIN_LR, 0.0),
    "gpt": (gpt_params, gpt_forward, gpt_batch, GPT_ADAMW, GPT_MIN_LR, CLIP),
}


def loss_fn(logits, labels):
    """Mean cross-entropy over every position ([N, V] logits or [B, T, V] for the GPT)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))


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


def train(name, init, batches, opt_name):
    _, forward, _, adamw, adamw_min_lr, adamw_clip = MODELS[name]
    p = clone_params(init)
    params = list(p.values())
    if opt_name == "adamw":
        opt = torch.optim.AdamW(params, **adamw)
        clip = adamw_clip
    else:
        opt = torch.optim.SGD(params, **SGD)
        clip = CLIP
    losses, lrs, gnorms = [], [], []
    for t, (x, labels) in enumerate(batches, start=1):
        lr = warmup_cosine_lr(t, adamw["lr"], adamw_min_lr) if opt_name == "adamw" else SGD["lr"]
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(forward(p, x), labels)
        loss.backward()
        if clip > 0:
            gnorms.append(float(torch.nn.utils.clip_grad_norm_(params, clip)))
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
    make_params, forward, make_batch = MODELS[name][:3]
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED + 1)
    init = {k: v.detach().clone() for k, v in make_params().items()}
    x, labels = make_batch(gen)
    batches = [make_batch(gen, TRAIN_X_STD) for _ in range(STEPS)]

    p = clone_params(init)
    logits = forward(p, x)
    loss = loss_fn(logits, labels)
    loss.backward()

    out = list(init.items())
    out += [("x", x), ("labels", labels), ("logits", logits), ("loss", loss)]
    out += [("grad." + k, v.grad) for k, v in p.items()]
    for i, (bx, bl) in enumerate(batches):
        out += [("train.x.%d" % i, bx), ("train.labels.%d" % i, bl)]
    out += train(name, init, batches, "adamw")
    out += train(name, init, batches, "sgd")
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
