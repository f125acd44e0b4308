"""init.py - parameter initializers (wh_init): seeded, so the same seed gives the same values on
every backend and layout. Fans follow PyTorch: for dims [d0, d1, rest...] fan_in = d1*prod(rest)
and fan_out = d0*prod(rest) (a weight stored [out, in], used with trans_b / ``x @ w.T``)."""
from ._lib import ffi, lib


class Init:
    """An initializer: kind (a WH_INIT_* code), a, b, seed, fan_in, fan_out (0: from the shape).
    Make one with the functions of whale.init (zeros, normal, kaiming_uniform, ...)."""

    __slots__ = ("kind", "a", "b", "seed", "fan_in", "fan_out")

    def __init__(self, kind, a=0.0, b=0.0, seed=0, fan_in=0, fan_out=0):
        self.kind, self.a, self.b, self.seed = int(kind), float(a), float(b), int(seed)
        self.fan_in, self.fan_out = int(fan_in), int(fan_out)

    def _c(self):
        return ffi.new("wh_init *", {"kind": self.kind, "a": self.a, "b": self.b, "seed": self.seed,
                                     "fan_in": self.fan_in, "fan_out": self.fan_out})[0]

    def __repr__(self):
        return "Init(kind=%d, a=%g, b=%g, seed=%d)" % (self.kind, self.a, self.b, self.seed)


def zeros():
    """All zeros."""
    return Init(lib.WH_INIT_ZEROS)


def ones():
    """All ones."""
    return Init(lib.WH_INIT_ONES)


def constant(value):
    """Every element equal to value."""
    return Init(lib.WH_INIT_CONSTANT, value)


def normal(mean=0.0, std=1.0, seed=0):
    """Normal(mean, std), seeded."""
    return Init(lib.WH_INIT_NORMAL, mean, std, seed)


def uniform(low=0.0, high=1.0, seed=0):
    """Uniform on [low, high), seeded."""
    return Init(lib.WH_INIT_UNIFORM, low, high, seed)


def xavier_uniform(gain=1.0, seed=0, fan_in=0, fan_out=0):
    """Glorot uniform: bound gain * sqrt(6 / (fan_in + fan_out))."""
    return Init(lib.WH_INIT_XAVIER_UNIFORM, gain, 0, seed, fan_in, fan_out)


def xavier_normal(gain=1.0, seed=0, fan_in=0, fan_out=0):
    """Glorot normal: std gain * sqrt(2 / (fan_in + fan_out))."""
    return Init(lib.WH_INIT_XAVIER_NORMAL, gain, 0, seed, fan_in, fan_out)


def kaiming_uniform(a=0.0, seed=0, fan_in=0):
    """He uniform, fan_in mode, for a leaky ReLU of slope a (0: ReLU)."""
    return Init(lib.WH_INIT_KAIMING_UNIFORM, a, 0, seed, fan_in)


def kaiming_normal(a=0.0, seed=0, fan_in=0):
    """He normal, fan_in mode, for a leaky ReLU of slope a (0: ReLU)."""
    return Init(lib.WH_INIT_KAIMING_NORMAL, a, 0, seed, fan_in)
