"""comm.py - communicators over MPI (the host's, e.g. an mpi4py communicator, or libwhale's own)
and NCCL: collectives and point-to-point on numpy arrays, the GIL released while they wait."""
import collections
import enum

import numpy as np

from ._handle import Handle
from ._lib import cstr, ffi, lib
from .context import default_context
from .dtypes import DType, as_dtype
from .errors import InvalidArgumentError


class Backend(enum.IntEnum):
    """A communication engine: MPI (host buffers) or NCCL (CUDA device buffers)."""

    MPI = lib.WH_COMM_MPI
    NCCL = lib.WH_COMM_NCCL


class ReduceOp(enum.IntEnum):
    """How collectives combine: SUM or AVG."""

    SUM = lib.WH_REDUCE_SUM
    AVG = lib.WH_REDUCE_AVG


_OPS = {"sum": ReduceOp.SUM, "avg": ReduceOp.AVG, "mean": ReduceOp.AVG}
_BACKENDS = {"mpi": Backend.MPI, "nccl": Backend.NCCL}

LaunchInfo = collections.namedtuple("LaunchInfo", "rank size local_rank local_size launcher")
LaunchInfo.__doc__ = """What the launcher says about this process (rank, size, local_rank,
local_size, launcher: 'openmpi', 'mpich', 'slurm', 'torchrun' or 'none')."""


def launch_detect():
    """What the launcher (Open MPI, MPICH/PMI, Slurm, torchrun) says about this process, from the
    environment, as a LaunchInfo; a single process when none."""
    li = lib.wh_launch_detect()
    return LaunchInfo(li.rank, li.size, li.local_rank, li.local_size, cstr(li.launcher))


def _op(op):
    if isinstance(op, ReduceOp):
        return op
    if isinstance(op, str) and op.lower() in _OPS:
        return _OPS[op.lower()]
    raise InvalidArgumentError("op must be 'sum' or 'avg', got %r" % (op,))


def _mpi_comm_address(mpi_comm):
    """The address of the MPI_Comm behind an mpi4py communicator (or an int address)."""
    if isinstance(mpi_comm, int):
        return mpi_comm
    try:
        from mpi4py import MPI
    except ImportError:
        raise InvalidArgumentError("mpi_comm: %r is not an mpi4py communicator (mpi4py is not installed)"
                                   % (mpi_comm,)) from None
    if not isinstance(mpi_comm, MPI.Comm):
        raise InvalidArgumentError("mpi_comm must be an mpi4py MPI.Comm, got %s" % type(mpi_comm).__name__)
    return MPI._addressof(mpi_comm)


class Request:
    """A non-blocking operation in flight: wait() completes it, test() says whether it has (both
    free it). Its buffers stay referenced by the communicator until then."""

    __slots__ = ("comm", "_req", "_bufs", "result")

    def __init__(self, comm, req, bufs, result):
        self.comm, self._req, self._bufs, self.result = comm, req, bufs, result
        comm._pending.add(self)

    @property
    def done(self):
        """True once wait() or a successful test() completed the operation."""
        return self._req is None

    def wait(self):
        """Block until the operation completes (the GIL released); returns its result array."""
        if self._req is None:
            return self.result
        c = self.comm
        with c.ctx._lock:
            c._p()  # under the lock: the request dies with its communicator
            req, self._req = self._req, None
            st = lib.wh_request_wait(req)
            c._pending.discard(self)
            if st != lib.WH_OK:
                raise c.ctx.error(st)
        self._bufs = None
        return self.result

    def test(self):
        """True (and the request freed) if the operation has completed; never blocks."""
        if self._req is None:
            return True
        c = self.comm
        done = ffi.new("int *")
        with c.ctx._lock:
            c._p()
            st = lib.wh_request_test(self._req, done)
            if st != lib.WH_OK:
                self._req = None
                c._pending.discard(self)
                raise c.ctx.error(st)
        if done[0]:
            self._req = None
            self._bufs = None
            c._pending.discard(self)
        return bool(done[0])


def _buf(a, what, writable=False):
    if not isinstance(a, np.ndarray):
        raise InvalidArgumentError("%s: expected a numpy array, got %s" % (what, type(a).__name__))
    if not (a.flags.c_contiguous and a.flags.aligned):
        raise InvalidArgumentError("%s: expected a C-contiguous array (communication borrows the buffer), "
                                   "got a non-contiguous one of shape %s" % (what, a.shape))
    if writable and not a.flags.writeable:
        raise InvalidArgumentError("%s: the array is read-only" % what)
    return ffi.from_buffer(a, require_writable=writable)


def _dtype_of(a, dtype, what):
    if dtype is not None:
        dt = as_dtype(dtype)
        if a.dtype != dt.numpy:
            raise InvalidArgumentError("%s: dtype %s travels in %s arrays, got %s" % (what, dt, dt.numpy, a.dtype))
        return dt
    try:
        return as_dtype(a.dtype)
    except TypeError:
        raise InvalidArgumentError("%s: arrays of float32, float64 or int32 (bf16: uint16 with "
                                   "dtype=whale.bf16), got %s" % (what, a.dtype)) from None


class Comm(Handle):
    """A communicator over the ranks of an MPI communicator: ``mpi_comm`` an mpi4py communicator
    (the host owns MPI; libwhale works on a duplicate) or None for MPI_COMM_WORLD, initialising
    MPI if nobody did (and finalising it when the context closes). ``backend`` 'mpi' or 'nccl'
    (device buffers), ``timeout`` the deadline of every wait in seconds (0: 600 s or
    WH_COMM_TIMEOUT_S), ``device`` the CUDA device for NCCL (-1: the local rank).

    Collectives take numpy arrays (float32, float64, int32; bf16 as uint16 with dtype=whale.bf16)
    and must be called in the same order on every rank. The GIL is released while they wait; a
    dead peer raises CommTimeoutError naming it, after which the communicator only closes."""

    _kind = "Comm"

    def __init__(self, ctx=None, mpi_comm=None, backend="mpi", timeout=0.0, device=-1, _ptr=None):
        self.ctx = ctx if ctx is not None else default_context()
        self._pending = set()
        if _ptr is None:
            o = ffi.new("wh_comm_options *", lib.whpy_wh_comm_options_init())
            o.backend = backend if isinstance(backend, Backend) else _BACKENDS.get(str(backend).lower(), -1)
            if o.backend not in (Backend.MPI, Backend.NCCL):
                raise InvalidArgumentError("backend must be 'mpi' or 'nccl', got %r" % (backend,))
            o.timeout_s, o.device = float(timeout), int(device)
            self._host = mpi_comm  # the host's communicator, alive while we are
            if mpi_comm is not None:
                addr = _mpi_comm_address(mpi_comm)
                o.mpi_comm = ffi.cast("const void *", addr)
            out = ffi.new("wh_comm **")
            with self.ctx._lock:
                st = lib.wh_comm_create(self.ctx._p(), o, out)
                if st != lib.WH_OK:
                    raise self.ctx.error(st)
            _ptr = out[0]
        self._own(_ptr, lib.wh_comm_destroy, (self.ctx,))
        self._close_lock = self.ctx._lock

    def _call(self, fn, *args):
        """fn(the communicator, *args) under the context's lock (which close() takes too); raise
        for a failure."""
        with self.ctx._lock:
            st = fn(self._p(), *args)
            if st != lib.WH_OK:
                raise self.ctx.error(st)

    @property
    def rank(self):
        """This process's rank in the communicator."""
        with self.ctx._lock:
            return lib.wh_comm_rank(self._p())

    @property
    def size(self):
        """Ranks in the communicator."""
        with self.ctx._lock:
            return lib.wh_comm_size(self._p())

    @property
    def local_rank(self):
        """Rank among the ranks on this node."""
        with self.ctx._lock:
            return lib.wh_comm_local_rank(self._p())

    @property
    def local_size(self):
        """Ranks on this node."""
        with self.ctx._lock:
            return lib.wh_comm_local_size(self._p())

    @property
    def backend(self):
        """The engine, a Backend."""
        with self.ctx._lock:
            return Backend(lib.wh_comm_backend_of(self._p()))

    def split(self, ranks):
        """A sub-communicator of the listed ranks (new rank i is ranks[i]); collective over every
        rank, each passing the same list. Non-members get None."""
        ranks = [int(r) for r in ranks]
        out = ffi.new("wh_comm **")
        self._call(lib.wh_comm_split, len(ranks), ranks, out)
        if out[0] == ffi.NULL:
            return None
        return Comm(self.ctx, _ptr=out[0])

    # blocking ----------------------------------------------------------------------------------
    def allreduce(self, send, recv=None, op="sum", dtype=None):
        """Reduce send over the ranks into recv (None: in place in send); returns recv."""
        dt = _dtype_of(send, dtype, "allreduce")
        s = _buf(send, "allreduce send", writable=recv is None)
        r = s if recv is None else self._recv_like(recv, send.size, send.dtype, "allreduce recv")
        self._call(lib.wh_comm_allreduce, s, r, send.size, dt, _op(op))
        return send if recv is None else recv

    def reduce_scatter(self, send, recv, op="sum", dtype=None):
        """send holds size * recv.size elements; rank r receives the reduced block r into recv."""
        dt = _dtype_of(send, dtype, "reduce_scatter")
        if send.size != recv.size * self.size:
            raise InvalidArgumentError("reduce_scatter: send has %d elements, expected %d ranks x %d"
                                       % (send.size, self.size, recv.size))
        r = self._recv_like(recv, recv.size, send.dtype, "reduce_scatter recv")
        self._call(lib.wh_comm_reduce_scatter, _buf(send, "reduce_scatter send"), r, recv.size, dt, _op(op))
        return recv

    def allgather(self, send, recv=None, counts=None, dtype=None):
        """Every rank's block of send, in rank order, into recv (None: a new array of size *
        send.size, or sum(counts) when ranks contribute counts[r] elements)."""
        dt = _dtype_of(send, dtype, "allgather")
        total = send.size * self.size if counts is None else int(sum(counts))
        if recv is None:
            recv = np.empty(total, send.dtype)
        r = self._recv_like(recv, total, send.dtype, "allgather recv")
        cnt = ffi.NULL if counts is None else ffi.new("size_t[]", [int(c) for c in counts])
        self._call(lib.wh_comm_allgather, _buf(send, "allgather send"), r, send.size, cnt, dt)
        return recv

    def broadcast(self, buf, root=0, dtype=None):
        """buf from rank root to every rank, in place; returns buf."""
        dt = _dtype_of(buf, dtype, "broadcast")
        self._call(lib.wh_comm_broadcast, _buf(buf, "broadcast", writable=True), buf.size, dt, int(root))
        return buf

    def barrier(self):
        """Wait until every rank has reached the barrier."""
        self._call(lib.wh_comm_barrier)

    def send(self, buf, peer, tag=0, dtype=None):
        """Send buf to rank peer."""
        dt = _dtype_of(buf, dtype, "send")
        self._call(lib.wh_comm_send, _buf(buf, "send"), buf.size, dt, int(peer), int(tag))

    def recv(self, buf, peer, tag=0, dtype=None):
        """Receive from rank peer into buf; returns buf."""
        dt = _dtype_of(buf, dtype, "recv")
        self._call(lib.wh_comm_recv, _buf(buf, "recv", writable=True), buf.size, dt, int(peer), int(tag))
        return buf

    def _recv_like(self, recv, count, dtype, what):
        if not isinstance(recv, np.ndarray) or recv.dtype != dtype or recv.size != count:
            raise InvalidArgumentError("%s: expected a %s array of %d elements, got %s" % (
                what, dtype, count, "%s %s" % (recv.dtype, recv.shape) if isinstance(recv, np.ndarray)
                else type(recv).__name__))
        return _buf(recv, what, writable=True)

    # non-blocking ------------------------------------------------------------------------------
    def _start(self, fn, args, bufs, result):
        req = ffi.new("wh_request **")
        self._call(fn, *args, req)
        return Request(self, req[0], bufs, result)

    def iallreduce(self, send, recv=None, op="sum", dtype=None):
        """Start an allreduce; returns a Request whose wait() gives recv (or send, in place)."""
        dt = _dtype_of(send, dtype, "iallreduce")
        s = _buf(send, "iallreduce send", writable=recv is None)
        r = s if recv is None else self._recv_like(recv, send.size, send.dtype, "iallreduce recv")
        out = send if recv is None else recv
        return self._start(lib.wh_comm_iallreduce, (s, r, send.size, dt, _op(op)), (send, recv, s, r), out)

    def ireduce_scatter(self, send, recv, op="sum", dtype=None):
        """Start a reduce_scatter (send holds size * recv.size elements); returns a Request."""
        dt = _dtype_of(send, dtype, "ireduce_scatter")
        if send.size != recv.size * self.size:
            raise InvalidArgumentError("ireduce_scatter: send has %d elements, expected %d ranks x %d"
                                       % (send.size, self.size, recv.size))
        sb = _buf(send, "ireduce_scatter send")
        r = self._recv_like(recv, recv.size, send.dtype, "ireduce_scatter recv")
        return self._start(lib.wh_comm_ireduce_scatter, (sb, r, recv.size, dt, _op(op)), (send, recv, sb, r), recv)

    def iallgather(self, send, recv=None, counts=None, dtype=None):
        """Start an allgather (as allgather); returns a Request whose wait() gives recv."""
        dt = _dtype_of(send, dtype, "iallgather")
        total = send.size * self.size if counts is None else int(sum(counts))
        if recv is None:
            recv = np.empty(total, send.dtype)
        r = self._recv_like(recv, total, send.dtype, "iallgather recv")
        sb = _buf(send, "iallgather send")
        cnt = ffi.NULL if counts is None else ffi.new("size_t[]", [int(c) for c in counts])
        return self._start(lib.wh_comm_iallgather, (sb, r, send.size, cnt, dt), (send, recv, sb, r, cnt), recv)

    def ibroadcast(self, buf, root=0, dtype=None):
        """Start a broadcast from root; returns a Request."""
        dt = _dtype_of(buf, dtype, "ibroadcast")
        b = _buf(buf, "ibroadcast", writable=True)
        return self._start(lib.wh_comm_ibroadcast, (b, buf.size, dt, int(root)), (buf, b), buf)

    def isend(self, buf, peer, tag=0, dtype=None):
        """Start sending buf to peer; returns a Request."""
        dt = _dtype_of(buf, dtype, "isend")
        b = _buf(buf, "isend")
        return self._start(lib.wh_comm_isend, (b, buf.size, dt, int(peer), int(tag)), (buf, b), buf)

    def irecv(self, buf, peer, tag=0, dtype=None):
        """Start receiving from peer into buf; returns a Request."""
        dt = _dtype_of(buf, dtype, "irecv")
        b = _buf(buf, "irecv", writable=True)
        return self._start(lib.wh_comm_irecv, (b, buf.size, dt, int(peer), int(tag)), (buf, b), buf)

    def ibarrier(self):
        """Start a barrier; returns a Request."""
        return self._start(lib.wh_comm_ibarrier, (), (), None)

    def fusion(self, bucket_bytes=25 << 20, dtype=DType.F32, op="avg"):
        """A Fusion packing tensors into buckets whose allreduce starts as each fills."""
        return Fusion(self, bucket_bytes, dtype, op)

    def close(self):
        """Release the communicator (local only, never waits on peers); pending requests are
        dropped with it."""
        Handle.close(self)
        self._pending.clear()  # the buffers of unfinished requests outlive the C communicator

    def __repr__(self):
        if self.closed:
            return "<whale.Comm closed>"
        return "<whale.Comm %s rank %d of %d>" % (self.backend.name.lower(), self.rank, self.size)


class Fusion(Handle):
    """Gradient fusion: arrays added in order are packed into buckets of bucket_bytes; each
    bucket's allreduce starts as soon as it is full, overlapping what the caller does next.
    wait() flushes the last bucket, waits for all and writes the reduced values back into the
    arrays (borrowed until then)."""

    _kind = "Fusion"

    def __init__(self, comm, bucket_bytes, dtype=DType.F32, op="avg"):
        self.comm = comm
        self.dtype = as_dtype(dtype)
        out = ffi.new("wh_fusion **")
        comm._call(lib.wh_fusion_create, int(bucket_bytes), self.dtype, _op(op), out)
        self._own(out[0], lib.wh_fusion_destroy, (comm,))
        self._close_lock = comm.ctx._lock
        self._tensors = []

    def _call(self, fn, *args):
        with self.comm.ctx._lock:
            st = fn(self._p(), *args)
            if st != lib.WH_OK:
                raise self.comm.ctx.error(st)

    def add(self, array):
        """Add an array (C-contiguous, of the fusion's dtype) to the current bucket."""
        if not isinstance(array, np.ndarray) or array.dtype != self.dtype.numpy:
            raise InvalidArgumentError("Fusion.add: expected a %s array" % self.dtype.numpy)
        b = _buf(array, "Fusion.add", writable=True)
        self._call(lib.wh_fusion_add, b, array.size)
        self._tensors.append((array, b))

    def poll(self):
        """Make progress on started buckets without blocking."""
        self._call(lib.wh_fusion_poll)

    def wait(self):
        """Flush, wait for every bucket and write the reduced values back into the arrays."""
        self._call(lib.wh_fusion_wait)
        self._tensors = []

    @property
    def buckets_started(self):
        """Buckets whose allreduce has started."""
        with self.comm.ctx._lock:
            return lib.wh_fusion_buckets_started(self._p())


__all__ = ["Backend", "ReduceOp", "LaunchInfo", "launch_detect", "Request", "Comm", "Fusion"]
