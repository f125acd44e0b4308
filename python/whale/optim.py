"""optim.py - optimizers (graph nodes added by Graph.optimizer) and learning-rate schedules."""
from ._lib import ffi, lib


class ConstantLR:
    """A constant learning rate."""

    def __init__(self, lr):
        self.lr = float(lr)

    def _fill(self, c):
        c.schedule, c.lr, c.warmup_steps, c.total_steps, c.min_lr = lib.WH_LR_CONSTANT, self.lr, 0, 0, 0.0

    def __repr__(self):
        return "ConstantLR(%g)" % self.lr


class WarmupCosine:
    """Linear warm-up from 0 to lr over warmup_steps, then cosine decay to min_lr at
    total_steps (WH_LR_WARMUP_COSINE)."""

    def __init__(self, lr, warmup_steps, total_steps, min_lr=0.0):
        self.lr, self.min_lr = float(lr), float(min_lr)
        self.warmup_steps, self.total_steps = int(warmup_steps), int(total_steps)

    def _fill(self, c):
        c.schedule, c.lr, c.min_lr = lib.WH_LR_WARMUP_COSINE, self.lr, self.min_lr
        c.warmup_steps, c.total_steps = self.warmup_steps, self.total_steps

    def __repr__(self):
        return "WarmupCosine(%g, warmup_steps=%d, total_steps=%d, min_lr=%g)" % (
            self.lr, self.warmup_steps, self.total_steps, self.min_lr)


def _schedule(lr):
    if isinstance(lr, (ConstantLR, WarmupCosine)):
        return lr
    return ConstantLR(lr)


class SGD:
    """Stochastic gradient descent as PyTorch's: momentum and dampening, Nesterov, L2 weight
    decay added to the gradient, optional global-norm clipping (clip_norm > 0). lr is a number
    or a schedule (ConstantLR, WarmupCosine)."""

    def __init__(self, lr=0.01, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0,
                 clip_norm=0.0):
        self.lr = _schedule(lr)
        self.momentum, self.dampening, self.nesterov = float(momentum), float(dampening), bool(nesterov)
        self.weight_decay, self.clip_norm = float(weight_decay), float(clip_norm)

    def _apply(self, graph):
        o = ffi.new("wh_sgd_options *", lib.whpy_wh_sgd_options_init())
        self.lr._fill(o.lr)
        o.momentum, o.dampening, o.nesterov = self.momentum, self.dampening, int(self.nesterov)
        o.weight_decay, o.clip_norm = self.weight_decay, self.clip_norm
        graph._call(lib.wh_optimizer_sgd, o)

    def __repr__(self):
        return "SGD(lr=%r, momentum=%g, weight_decay=%g)" % (self.lr, self.momentum, self.weight_decay)


class AdamW:
    """AdamW with decoupled weight decay and optional global-norm clipping (clip_norm > 0). lr
    is a number or a schedule (ConstantLR, WarmupCosine)."""

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, clip_norm=0.0):
        self.lr = _schedule(lr)
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps, self.weight_decay, self.clip_norm = float(eps), float(weight_decay), float(clip_norm)

    def _apply(self, graph):
        o = ffi.new("wh_adamw_options *", lib.whpy_wh_adamw_options_init())
        self.lr._fill(o.lr)
        o.beta1, o.beta2 = self.betas
        o.eps, o.weight_decay, o.clip_norm = self.eps, self.weight_decay, self.clip_norm
        graph._call(lib.wh_optimizer_adamw, o)

    def __repr__(self):
        return "AdamW(lr=%r, betas=%r, eps=%g, weight_decay=%g, clip_norm=%g)" % (
            self.lr, self.betas, self.eps, self.weight_decay, self.clip_norm)
