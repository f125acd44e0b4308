"""dtypes.py - element types (wh_dtype) and the symbolic batch dimension (WH_BATCH)."""
import enum

import numpy as np

from ._lib import lib


class DType(enum.IntEnum):
    """An element type (wh_dtype). ``numpy`` is the numpy dtype of its arrays (BF16 has none in
    numpy: its raw bits travel as uint16)."""

    F32 = lib.WH_F32
    I32 = lib.WH_I32
    BF16 = lib.WH_BF16
    F16 = lib.WH_F16
    F64 = lib.WH_F64

    @property
    def numpy(self):
        """The numpy dtype holding this type's elements."""
        return _NUMPY[self]

    @property
    def itemsize(self):
        """Bytes per element."""
        return _NUMPY[self].itemsize

    def __repr__(self):
        return "whale." + self.name.lower()

    __str__ = __repr__


_NUMPY = {DType.F32: np.dtype(np.float32), DType.I32: np.dtype(np.int32),
          DType.BF16: np.dtype(np.uint16), DType.F16: np.dtype(np.float16),
          DType.F64: np.dtype(np.float64)}
_NAMES = {"f32": DType.F32, "float32": DType.F32, "i32": DType.I32, "int32": DType.I32,
          "bf16": DType.BF16, "bfloat16": DType.BF16, "f16": DType.F16, "float16": DType.F16,
          "f64": DType.F64, "float64": DType.F64}
_FROM_NUMPY = {np.dtype(np.float32): DType.F32, np.dtype(np.int32): DType.I32,
               np.dtype(np.float16): DType.F16, np.dtype(np.float64): DType.F64}


def as_dtype(x):
    """A DType from a DType, its name ('f32', 'float32', 'i32', ...) or a numpy dtype."""
    if isinstance(x, DType):
        return x
    if isinstance(x, str) and x.lower() in _NAMES:
        return _NAMES[x.lower()]
    if isinstance(x, int) and not isinstance(x, bool):
        return DType(x)
    try:
        return _FROM_NUMPY[np.dtype(x)]
    except (TypeError, KeyError):
        raise TypeError("not a whale dtype: %r (use whale.f32, whale.i32, whale.bf16, "
                        "whale.f16, whale.f64 or the numpy types float32, int32, float16, "
                        "float64)" % (x,)) from None


class BatchDim(int):
    """The symbolic batch dimension in a shape: ``whale.BATCH`` is B (C's WH_BATCH) and
    ``whale.BATCH * k`` is k*B (WH_BATCH_TIMES(k)), e.g. the B*T rows of a flattened [B, T, C]
    tensor. A session binds B. It is an int (-k), so it passes to C as is."""

    def __new__(cls, k=1):
        if int(k) < 1:
            raise ValueError("BatchDim: the multiple k must be >= 1, got %r" % (k,))
        return int.__new__(cls, -int(k))

    @property
    def k(self):
        """The multiple of the batch size this dimension stands for."""
        return -int(self)

    def __mul__(self, n):
        if isinstance(n, BatchDim) or not isinstance(n, int):
            return NotImplemented
        return BatchDim(self.k * n)

    __rmul__ = __mul__

    def __repr__(self):
        return "BATCH" if self.k == 1 else "BATCH*%d" % self.k

    __str__ = __repr__


BATCH = BatchDim(1)


def dims_in(shape):
    """A Python shape as a tuple of C dims (BATCH, BATCH*k and negative ints pass as they are)."""
    if isinstance(shape, int):
        shape = (shape,)
    return tuple(int(d) for d in shape)


def dims_out(ndim, dims):
    """C dims as a Python shape: symbolic dims become BatchDim."""
    return tuple(BatchDim(-d) if d < 0 else d for d in (dims[i] for i in range(ndim)))
