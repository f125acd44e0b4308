"""whale - Python bindings of libwhale: describe a model once as a static graph, differentiate it,
and train it on one process or on many ranks under a plan.

    import whale, numpy as np
    g = whale.Graph()
    x = g.input("x", whale.f32, (whale.BATCH, 64))
    y = g.input("labels", whale.i32, (whale.BATCH,))
    w = g.param("fc.w", (10, 64), whale.init.kaiming_uniform(seed=1))
    b = g.param("fc.b", (10,))
    loss = g.cross_entropy(g.bias_add(x @ w.T, b), y)
    g.backward(loss)
    g.optimizer(whale.AdamW(lr=1e-3))
    s = g.session(batch=64)
    s.feed(x, xb)                     # borrowed: a C-contiguous float32 array of (64, 64)
    s.feed(y, yb)
    s.step()                          # the GIL is released while it runs
    print(float(s.fetch(loss)))

The binding is cffi in API mode, compiled against include/whale.h (see python/README.md). Every
failure raises a whale.Error subclass (one per wh_status) carrying libwhale's message; logging
goes to the 'whale' logger.
"""
from . import init
from ._lib import cstr as _cstr
from ._lib import lib as _lib
from .comm import Backend, Comm, Fusion, LaunchInfo, ReduceOp, Request, launch_detect
from .context import Context, default_context
from .dtypes import BATCH, BatchDim, DType, as_dtype
from .errors import (CommError, CommTimeoutError, CorruptError, DtypeError, Error, FileError,
                     InternalError, InvalidArgumentError, NotFoundError, OutOfMemoryError,
                     PoisonedError, ShapeError, StateError, UnsupportedError, error_class)
from .graph import Graph, Value
from .optim import SGD, AdamW, ConstantLR, WarmupCosine
from .planner import Cluster, DeviceDesc, Plan, Schedule, SimResult
from .session import (EVAL, GRAD, TRAIN, CheckpointInfo, CommStats, MemoryStats, RunMode, Session,
                      checkpoint_find)

f32, i32, bf16, f16, f64 = DType.F32, DType.I32, DType.BF16, DType.F16, DType.F64
NONE = _lib.WH_NONE
MAX_DIMS = _lib.WH_MAX_DIMS


def version():
    """libwhale's version, "MAJOR.MINOR.PATCH"."""
    return _cstr(_lib.wh_version())


def build_info():
    """The backends and engines compiled into libwhale, e.g. "cpu(openblas 0.3.21) mpi(...)"."""
    return _cstr(_lib.wh_build_info())


def cuda_device_count():
    """CUDA devices a session could use (0 in a build without the CUDA backend)."""
    return _lib.wh_cuda_device_count()


def status_str(status):
    """The static text of a wh_status code."""
    return _cstr(_lib.wh_status_str(int(status)))


def batch_times(k):
    """The symbolic dimension k*B (C's WH_BATCH_TIMES(k)); the same as BATCH * k."""
    return BatchDim(k)


__version__ = version()

__all__ = [
    "init", "Context", "default_context", "Graph", "Value", "Session", "RunMode", "TRAIN", "GRAD", "EVAL",
    "MemoryStats", "CommStats", "CheckpointInfo", "checkpoint_find", "SGD", "AdamW", "ConstantLR", "WarmupCosine", "Cluster", "DeviceDesc", "Plan", "Schedule",
    "SimResult", "Comm", "Fusion", "Request", "Backend", "ReduceOp", "LaunchInfo", "launch_detect",
    "DType", "as_dtype", "f32", "i32", "bf16", "f16", "f64", "BATCH", "BatchDim", "batch_times", "NONE",
    "MAX_DIMS", "Error", "InvalidArgumentError", "ShapeError", "DtypeError", "PoisonedError", "StateError",
    "OutOfMemoryError", "FileError", "CorruptError", "UnsupportedError", "NotFoundError", "CommError",
    "CommTimeoutError", "InternalError", "error_class", "version", "build_info", "cuda_device_count",
    "status_str",
]
