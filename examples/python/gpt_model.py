"""gpt_model.py - the GPT of examples/models/gpt.c, built through the Python package: GPT-2 shaped
(learned positions, pre-LayerNorm blocks, fused-qkv causal attention, tanh GELU, tied embedding).

The order of nodes and parameters, their names and seeds are gpt.c's, option for option, so the
same options give bitwise the graph the C builder makes (graph construction order decides
parameter init, node order and the optimizer's clipping sum).
"""
import collections
import contextlib

import numpy as np

import whale

GPT = collections.namedtuple("GPT", "tokens targets logits loss params")


def build_gpt(g, vocab=50304, context=1024, width=768, layers=12, heads=12, names="short", std=0.02,
              pos_std=0.01, scaled_proj=False, zero_init=False, ln_gain_first=False, stage_per_block=False,
              recompute_per_block=False):
    """Build the GPT into graph g (gpt_options' fields as keywords, GPT_OPTIONS_INIT's defaults;
    names 'long' is GPT_NAMES_LONG). Returns GPT(tokens, targets, logits, loss, params)."""
    T, C = context, width
    short = names == "short"
    # gpt.c computes in float: std / sqrtf(2.0f * layers), each step rounded to float32
    proj_std = float(np.float32(std) / np.sqrt(np.float32(2.0 * layers))) if scaled_proj else std

    def param(name, shape, init):
        return g.param(name, shape, whale.init.zeros() if zero_init else init)

    def linear(x, name, n_in, n_out, seed, s):
        w = param(name + ".w", (n_out, n_in), whale.init.normal(0.0, s, seed))
        b = param(name + ".b", (n_out,), whale.init.zeros())
        return g.bias_add(x @ w.T, b)

    def layernorm(x, name):
        gain = bias = None
        if ln_gain_first:
            gain = param(name + ".g", (C,), whale.init.ones())
        bias = param(name + ".b", (C,), whale.init.zeros())
        if not ln_gain_first:
            gain = param(name + ".g", (C,), whale.init.ones())
        return g.layernorm(x, gain, bias, 1e-5)

    def block(x, l, seed):
        h = layernorm(x, "h%d.ln1" % l)
        a = g.attention(linear(h, "h%d.qkv" % l if short else "h%d.attn.qkv" % l, C, 3 * C, seed + 1, std), heads)
        x = x + linear(a, "h%d.proj" % l if short else "h%d.attn.proj" % l, C, C, seed + 2, proj_std)
        h = layernorm(x, "h%d.ln2" % l)
        h = linear(h, "h%d.fc" % l if short else "h%d.mlp.fc" % l, C, 4 * C, seed + 3, std).gelu()
        return x + linear(h, "h%d.fcproj" % l if short else "h%d.mlp.proj" % l, 4 * C, C, seed + 4, proj_std)

    tokens = g.input("tokens", whale.i32, (whale.BATCH, T))
    targets = g.input("targets", whale.i32, (whale.BATCH, T))
    wte = param("wte", (vocab, C), whale.init.normal(0.0, std, 1))
    wpe = param("wpe", (T, C), whale.init.normal(0.0, pos_std, 2))
    x = g.embedding(wte, tokens) + wpe  # [B,T,C] + [T,C]
    for l in range(layers):
        seed = 100 + 10 * l
        with contextlib.ExitStack() as scopes:
            if stage_per_block:
                scopes.enter_context(g.stage())
            if recompute_per_block:
                scopes.enter_context(g.recompute())
            x = block(x, l, seed)
    x = layernorm(x, "ln_f")
    logits = x @ wte.T  # weight tying: wte is used twice
    loss = g.cross_entropy(logits, targets)
    params = 0
    for p in g.params:
        n = 1
        for d in p.shape:
            n *= d
        params += n
    return GPT(tokens, targets, logits, loss, params)
