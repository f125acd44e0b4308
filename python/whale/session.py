"""session.py - running a graph: zero-copy feeds, steps and runs (the GIL released), fetches."""
import enum

import numpy as np

from ._handle import Handle
from ._lib import ffi, lib, take_str
from .dtypes import DType, as_dtype
from .errors import DtypeError, InvalidArgumentError, ShapeError, closed
from .graph import Value, format_code


class RunMode(enum.IntEnum):
    """What Session.run computes: TRAIN (forward, backward, update), GRAD (forward and backward,
    no update), EVAL (forward only, dropout off)."""

    TRAIN = lib.WH_RUN_TRAIN
    GRAD = lib.WH_RUN_GRAD
    EVAL = lib.WH_RUN_EVAL


TRAIN, GRAD, EVAL = RunMode.TRAIN, RunMode.GRAD, RunMode.EVAL
_MODES = {"train": RunMode.TRAIN, "grad": RunMode.GRAD, "eval": RunMode.EVAL}
_DEVICES = {"cpu": lib.WH_DEVICE_CPU, "cuda": lib.WH_DEVICE_CUDA}
_PRECISIONS = {"f32": lib.WH_PRECISION_F32, "tf32": lib.WH_PRECISION_TF32, "bf16": lib.WH_PRECISION_BF16}


def _choice(table, x, what):
    if isinstance(x, str):
        try:
            return table[x.lower()]
        except KeyError:
            pass
    elif isinstance(x, int) and x in table.values():
        return int(x)
    raise InvalidArgumentError("%s must be one of %s, got %r" % (what, ", ".join(map(repr, table)), x))


class MemoryStats:
    """What a session's static memory plan needs (wh_memory_stats): arena_bytes (the one arena
    for every intermediate), intermediate_bytes (their sum without reuse), param_bytes,
    state_bytes (optimizer state), num_intermediates, live_peak_bytes (the most bytes alive at one
    node: the lower bound), inplace_ops, recomputed_ops, saved_bytes (activations kept from forward
    for backward: what mixed precision halves)."""

    FIELDS = ("arena_bytes", "intermediate_bytes", "param_bytes", "state_bytes", "num_intermediates",
              "live_peak_bytes", "inplace_ops", "recomputed_ops", "saved_bytes")

    def __init__(self, c):
        for f in self.FIELDS:
            setattr(self, f, int(getattr(c, f)))

    def __repr__(self):
        return "MemoryStats(%s)" % ", ".join("%s=%d" % (f, getattr(self, f)) for f in self.FIELDS)


class CommStats:
    """This rank's communication over a session's runs (wh_comm_stats): busy_s (every operation's
    seconds from its start to when it was seen done), exposed_s (the part the steps spent waiting),
    ops (operations counted); hidden is the share that ran behind compute, 1 - exposed_s / busy_s."""

    def __init__(self, c):
        self.busy_s, self.exposed_s, self.ops = c.busy_s, c.exposed_s, int(c.ops)

    @property
    def hidden(self):
        """The share of the communication hidden behind compute (0 when there was none)."""
        return 1.0 - self.exposed_s / self.busy_s if self.busy_s > 0 else 0.0

    def __repr__(self):
        return "CommStats(busy_s=%g, exposed_s=%g, ops=%d)" % (self.busy_s, self.exposed_s, self.ops)


def _describe(a):
    if not isinstance(a, np.ndarray):
        return "a %s" % type(a).__name__
    layout = "C-contiguous" if a.flags.c_contiguous else "non-contiguous"
    if not a.flags.aligned:
        layout = "unaligned"
    return "a %s %s array of shape %s" % (layout, a.dtype, tuple(a.shape))


class Session(Handle):
    """A session runs a graph on this process, or this rank's part of a plan.

    ``batch`` binds the symbolic batch dimension. With ``plan`` and ``comm`` (a whale.Plan and a
    whale.Comm) it runs this rank's share of every step: every rank feeds the global batch and the
    loss fetched is the global mean. ``recompute`` honours recompute scopes, ``inplace`` lets
    elementwise ops overwrite dying inputs (neither changes results). ``device`` 'cpu' or 'cuda'
    (``device_index``: the GPU, -1 the communicator's local rank), ``precision`` of matrix
    products on CUDA: 'f32', 'tf32' or 'bf16'. ``deterministic``: data-parallel gradients reduced
    in rank order, bit for bit repeatable. ``rebalance``: a data-parallel session on the
    planner's shares moves rows to the replicas it measures faster (False: the plan's shares
    throughout). ``mixed``: the dtype activations and gradients are stored in between nodes
    (whale.f32: none; whale.bf16 or whale.f16, fp32 master weights, f16 with loss scaling; a plan
    made with one sets it).

    The session keeps its graph, context, plan and communicator alive, and freezes the graph
    while it lives. feed() borrows arrays without copying them; step() and run() release the GIL
    while libwhale computes."""

    _kind = "Session"

    def __init__(self, graph, batch=1, plan=None, comm=None, recompute=True, inplace=True,
                 device="cpu", device_index=-1, precision="f32", deterministic=False, rebalance=True,
                 mixed=DType.F32):
        self.graph = graph
        self.ctx = ctx = graph.ctx
        self.plan, self.comm = plan, comm
        o = ffi.new("wh_session_options *", lib.whpy_wh_session_options_init())
        o.batch = int(batch)
        o.recompute, o.inplace, o.deterministic = int(bool(recompute)), int(bool(inplace)), int(bool(deterministic))
        o.device = _choice(_DEVICES, device, "device")
        o.device_index = int(device_index)
        o.precision = _choice(_PRECISIONS, precision, "precision")
        o.rebalance, o.mixed = int(bool(rebalance)), as_dtype(mixed)
        parents = [graph, ctx] + [h for h in (plan, comm) if h is not None]
        out = ffi.new("wh_session **")
        with ctx._lock:
            if plan is not None:
                o.plan = plan._p()
            if comm is not None:
                o.comm = comm._p()
            st = lib.wh_session_create(ctx._p(), graph._p(), o, out)
            if st != lib.WH_OK:
                raise graph._build_error() if st == lib.WH_ERR_POISONED else ctx.error(st)
        self._own(out[0], lib.wh_session_destroy, parents)
        self._lock = self._close_lock = ctx._lock
        self._batch = int(batch) if plan is None else getattr(plan, "global_batch", None)
        self._fed = {}    # input -> the borrowed buffer, alive until fed again
        self._in = {}     # input -> (shape or None, numpy dtype)
        self._out = {}    # value -> (shape, numpy dtype, bytes)

    # ids and specs -----------------------------------------------------------------------------
    def _vid(self, v):
        if isinstance(v, Value):
            if v.graph is not self.graph:
                raise InvalidArgumentError("value %d belongs to another graph than the session's" % v._id)
            return v._id
        if isinstance(v, str):
            return self.graph.find(v)._id
        raise TypeError("expected a whale.Value of the session's graph or a value name, got %s"
                        % type(v).__name__)

    def _dims(self, vid):
        nd = ffi.new("int *")
        dims = ffi.new("int64_t[]", lib.WH_MAX_DIMS)
        self.graph._call(lib.wh_value_shape, vid, nd, dims)
        return [dims[i] for i in range(nd[0])], DType(self.graph._get(lib.wh_value_dtype, vid)).numpy

    def _input_spec(self, vid):
        dims, dt = self._dims(vid)
        b = self._batch
        shape = None if b is None and any(d < 0 for d in dims) else tuple(-d * b if d < 0 else d for d in dims)
        spec = self._in[vid] = (shape, dt)
        return spec

    def _output_spec(self, vid):
        dims, dt = self._dims(vid)
        with self._lock:
            nbytes = lib.wh_session_bytes(self._p(), vid)
        if any(d < 0 for d in dims):
            known = 1
            for d in dims:
                known *= d if d > 0 else 1
            n = nbytes // dt.itemsize
            dims = [n // known if d < 0 and known else (0 if d < 0 else d) for d in dims]
        spec = self._out[vid] = (tuple(dims), dt, nbytes)
        return spec

    def _expected(self, vid, shape, dt):
        name = self.graph.value(vid).name or "value %d" % vid
        if shape is None:
            dims, _ = self._dims(vid)
            shape = "(%s)" % ", ".join("%d*B" % -d if d < 0 else str(d) for d in dims)
            return "input '%s': expected a C-contiguous %s numpy array of shape %s, B the plan's global batch" % (
                name, dt, shape)
        batch = "" if self._batch is None else " at batch %d" % self._batch
        return "input '%s': expected a C-contiguous %s numpy array of shape %s%s" % (name, dt, shape, batch)

    def _admit(self, vid, a, spec, convert):
        """The array to feed for a, or the error saying what was expected."""
        shape, dt = spec
        if convert:
            a = np.ascontiguousarray(a, dtype=dt)
            if shape is not None and a.shape != shape and a.size == int(np.prod(shape)):
                a = a.reshape(shape)
        what = self._expected(vid, shape, dt)
        if not isinstance(a, np.ndarray):
            raise InvalidArgumentError("%s, got %s (pass convert=True to copy it into one)" % (what, _describe(a)))
        if a.dtype != dt:
            raise DtypeError("%s, got %s (pass convert=True to copy it into one)" % (what, _describe(a)))
        if not (a.flags.c_contiguous and a.flags.aligned):
            raise InvalidArgumentError("%s, got %s: feeds are borrowed, not copied (pass convert=True "
                                       "to copy it, or np.ascontiguousarray)" % (what, _describe(a)))
        if shape is None:
            dims, _ = self._dims(vid)
            if a.ndim == len(dims) and all(d < 0 or d == s for d, s in zip(dims, a.shape)):
                return a
            raise ShapeError("%s, got %s" % (what, _describe(a)))
        if a.shape != shape:
            raise ShapeError("%s, got %s" % (what, _describe(a)))
        return a

    # running -----------------------------------------------------------------------------------
    def feed(self, value, array=None, *, convert=False):
        """Bind an input (a Value or its name) to a numpy array, borrowed without a copy until the
        input is fed again: the array must be C-contiguous, of the input's dtype and shape at the
        bound batch; anything else is refused with a message saying what was expected, unless
        convert=True asks for a copy in that form. ``feed({x: a, y: b})`` feeds several."""
        p = self._ptr
        if p is None:
            raise closed("Session")
        if type(value) is Value and value.graph is self.graph:
            vid = value._id
        elif array is None and isinstance(value, dict):
            for k, a in value.items():
                self.feed(k, a, convert=convert)
            return
        else:
            vid = self._vid(value)
        spec = self._in.get(vid)
        if spec is None:
            spec = self._input_spec(vid)
        # the fast path: the array as expected (numpy's builtin dtypes are singletons)
        if (not convert and type(array) is np.ndarray and array.dtype is spec[1] and array.shape == spec[0]):
            fl = array.flags
            if not (fl.c_contiguous and fl.aligned):
                array = self._admit(vid, array, spec, convert)
        else:
            array = self._admit(vid, array, spec, convert)
        prev = self._fed.get(vid)
        if prev is not None and prev[0] is array:
            held = prev  # fed again: its buffer is already held
        else:
            held = (array, ffi.from_buffer(array))
        lock = self._lock
        lock.acquire()
        try:
            p = self._ptr  # again under the lock: a close() from another thread may have come first
            if p is None:
                raise closed("Session")
            st = lib.wh_session_feed(p, vid, held[1], array.nbytes)
            if st:
                raise self.ctx.error(st)
        finally:
            lock.release()
        self._fed[vid] = held

    def run(self, mode=RunMode.TRAIN):
        """One run over the fed inputs: 'train' (forward, backward, update; the step count grows),
        'grad' (forward and backward, no update) or 'eval' (forward only, dropout off). The GIL is
        released while it runs, so other Python threads keep running."""
        p = self._ptr
        if p is None:
            raise closed("Session")
        m = mode if type(mode) is RunMode else RunMode(_choice(_MODES, mode, "mode"))
        lock = self._lock
        lock.acquire()
        try:
            p = self._ptr
            if p is None:
                raise closed("Session")
            st = lib.wh_session_run(p, m)
            if st:
                raise self.ctx.error(st)
        finally:
            lock.release()

    def step(self):
        """One training step over the fed inputs: forward, backward and the optimizer update
        (run('train')). The GIL is released while it runs, so other Python threads keep running;
        a distributed session runs this rank's part of the plan with its collectives."""
        p = self._ptr
        if p is None:
            raise closed("Session")
        lock = self._lock
        lock.acquire()
        try:
            p = self._ptr
            if p is None:
                raise closed("Session")
            st = lib.wh_session_step(p)
            if st:
                raise self.ctx.error(st)
        finally:
            lock.release()

    def fetch(self, value, out=None):
        """A value of the last run (a Value or its name) as a numpy array: into out (a C-contiguous
        writable array of the value's dtype and shape) or a new array. Parameters, gradients, the
        loss and kept values (Value.keep) are always fetchable; a scalar comes as a 0-d array."""
        p = self._ptr
        if p is None:
            raise closed("Session")
        vid = value._id if type(value) is Value and value.graph is self.graph else self._vid(value)
        spec = self._out.get(vid)
        if spec is None:
            spec = self._output_spec(vid)
        if out is None:
            out = np.empty(spec[0], spec[1])
        elif not (type(out) is np.ndarray and out.dtype is spec[1] and out.shape == spec[0]
                  and out.flags.c_contiguous and out.flags.writeable):
            if not (isinstance(out, np.ndarray) and out.dtype == spec[1] and out.shape == spec[0]
                    and out.flags.c_contiguous and out.flags.writeable):
                self._refuse_out(vid, out, spec[0], spec[1])
        buf = ffi.from_buffer(out, require_writable=True)
        lock = self._lock
        lock.acquire()
        try:
            p = self._ptr
            if p is None:
                raise closed("Session")
            st = lib.wh_session_fetch(p, vid, buf, spec[2])
            if st:
                raise self.ctx.error(st)
        finally:
            lock.release()
        return out

    def _refuse_out(self, vid, out, shape, dt):
        name = self.graph.value(vid).name or "value %d" % vid
        what = "fetch '%s': out must be a writable C-contiguous %s numpy array of shape %s" % (name, dt, shape)
        if not isinstance(out, np.ndarray):
            raise InvalidArgumentError("%s, got %s" % (what, _describe(out)))
        if out.dtype != dt:
            raise DtypeError("%s, got %s" % (what, _describe(out)))
        if out.shape != shape:
            raise ShapeError("%s, got %s" % (what, _describe(out)))
        raise InvalidArgumentError("%s, got %s%s" % (what, _describe(out), "" if out.flags.writeable else " (read-only)"))

    def get_param(self, p):
        """A parameter's (or optimizer state's) current values, as a new array. A split parameter
        is gathered: every rank of its replica must call this."""
        vid = self._vid(p)
        shape, dt, nbytes = self._output_spec(vid)
        out = np.empty(shape, dt)
        with self._lock:
            st = lib.wh_session_get_param(self._p(), vid, ffi.from_buffer(out, require_writable=True), nbytes)
            if st:
                raise self.ctx.error(st)
        return out

    def set_param(self, p, values):
        """Set a parameter's values (copied; array-likes are converted to its dtype; the shape must
        match). A split parameter keeps this rank's shard."""
        vid = self._vid(p)
        shape, dt, nbytes = self._output_spec(vid)
        a = np.ascontiguousarray(values, dtype=dt)
        if a.shape != shape:
            name = self.graph.value(vid).name
            raise ShapeError("set_param '%s': expected shape %s, got %s" % (name, shape, a.shape))
        with self._lock:
            st = lib.wh_session_set_param(self._p(), vid, ffi.from_buffer(a), nbytes)
            if st:
                raise self.ctx.error(st)

    def comm_stats(self, reset=False):
        """This rank's communication counters so far, a CommStats (reset: then start them again
        from zero). A session without a plan communicates nothing: zeros."""
        c = ffi.new("wh_comm_stats *", lib.whpy_wh_comm_stats_init())
        with self._lock:
            st = lib.wh_session_comm_stats(self._p(), c, int(bool(reset)))
            if st:
                raise self.ctx.error(st)
        return CommStats(c)

    def shares(self, n=None):
        """(shares, rebalances): the rows per micro-batch each device of this rank's stage takes now,
        indexed like the cluster (a single process: its batch in shares[0]), and how often the
        session has rebalanced them. n defaults to the plan's cluster size."""
        if n is None:
            cl = getattr(self.plan, "cluster", None)
            n = len(cl) if cl is not None else (1 if self.plan is None else 64)
        out = ffi.new("int64_t[]", max(int(n), 1))
        nrb = ffi.new("int *")
        with self._lock:
            st = lib.wh_session_shares(self._p(), out, int(n), nrb)
            if st:
                raise self.ctx.error(st)
        return [out[i] for i in range(int(n))], nrb[0]

    def loss_scale(self):
        """(scale, skipped): with fp16 mixed precision the loss scale the next step uses and how
        many steps an overflow skipped; other sessions (1.0, 0)."""
        scale, skipped = ffi.new("double *"), ffi.new("int64_t *")
        with self._lock:
            st = lib.wh_session_loss_scale(self._p(), scale, skipped)
            if st:
                raise self.ctx.error(st)
        return scale[0], skipped[0]

    def set_batch(self, batch):
        """Rebind the batch dimension (re-plans memory; parameters and state are kept). Inputs
        must be fed again at the new size."""
        with self._lock:
            st = lib.wh_session_set_batch(self._p(), int(batch))
            if st:
                raise self.ctx.error(st)
        self._batch = int(batch)
        self._in.clear()
        self._out.clear()
        self._fed.clear()

    @property
    def batch(self):
        """The bound batch size (a distributed session: the plan's global batch, None if the plan
        was loaded from a file)."""
        return self._batch

    @property
    def distributed(self):
        """True for a session running a plan."""
        return self.plan is not None

    @property
    def steps(self):
        """Optimizer steps taken."""
        with self._lock:
            return lib.wh_session_steps(self._p())

    def nbytes(self, value):
        """Size in bytes of a value at the bound batch."""
        vid = self._vid(value)
        with self._lock:
            return lib.wh_session_bytes(self._p(), vid)

    def memory(self):
        """The static memory plan's figures, a MemoryStats."""
        m = ffi.new("wh_memory_stats *", lib.whpy_wh_memory_stats_init())
        with self._lock:
            st = lib.wh_session_memory(self._p(), m)
            if st:
                raise self.ctx.error(st)
        return MemoryStats(m)

    def profile(self, on=True):
        """Time every node of later runs (on) or stop and clear (off)."""
        with self._lock:
            st = lib.wh_session_profile(self._p(), int(bool(on)))
            if st:
                raise self.ctx.error(st)

    def profile_report(self):
        """The per-op-kind timing of the profiled runs, as text."""
        out = ffi.new("char **")
        with self._lock:
            st = lib.wh_session_profile_report(self._p(), out)
            if st:
                raise self.ctx.error(st)
        return take_str(out)

    def dump(self, fmt="text"):
        """This rank's program as it runs ('text' or 'dot'): nodes at their local shapes, and in a
        distributed session every collective, send and receive with its peers and bytes."""
        out = ffi.new("char **")
        with self._lock:
            st = lib.wh_session_dump(self._p(), format_code(fmt), out)
            if st:
                raise self.ctx.error(st)
        return take_str(out)

    def checkpoint_save(self, directory, meta=b"", keep=2):
        """Save the whole training state - parameters, every optimizer state, the step, fp16's loss
        scale - into directory as step-<steps> (wh_checkpoint_save: one safetensors file per rank
        that owns a slice, an index, crash-safe). meta: the host's bytes (a data cursor), at most
        16 MiB; keep: complete checkpoints kept (0: all). Collective over a distributed session."""
        meta = bytes(meta)
        o = ffi.new("wh_checkpoint_options *", lib.whpy_wh_checkpoint_options_init())
        buf = ffi.from_buffer(meta) if meta else ffi.NULL
        o.meta, o.meta_bytes, o.keep = buf, len(meta), int(keep)
        with self._lock:
            st = lib.wh_checkpoint_save(self._p(), str(directory).encode(), o)
            if st:
                raise self.ctx.error(st)

    def checkpoint_load(self, directory, meta_cap=16 << 20):
        """Load the checkpoint directory/latest names (or directory itself, a step directory) into
        this session, whatever layout saved it; returns the host's bytes saved with it. Raises
        NotFoundError when there is none. Collective over a distributed session."""
        meta = ffi.new("char[]", max(int(meta_cap), 1))
        n = ffi.new("size_t *")
        with self._lock:
            st = lib.wh_checkpoint_load(self._p(), str(directory).encode(), meta, int(meta_cap), n)
            if st:
                raise self.ctx.error(st)
        return bytes(ffi.buffer(meta, n[0]))

    def save(self, path):
        """Save the graph with the session's current parameter values (Graph.load reads it)."""
        with self._lock:
            st = lib.wh_session_save(self._p(), str(path).encode())
            if st:
                raise self.ctx.error(st)

    def __repr__(self):
        if self.closed:
            return "<whale.Session closed>"
        return "<whale.Session batch %s, %d steps%s>" % (self._batch, self.steps,
                                                         ", distributed" if self.plan is not None else "")


class CheckpointInfo:
    """What a checkpoint directory holds (wh_checkpoint_info): step, ranks (that saved it), files,
    tensors, data_bytes, meta_bytes, name (the step directory) and layout (as its rank 0 saw it)."""

    def __init__(self, c):
        self.step, self.ranks, self.files, self.tensors = int(c.step), int(c.ranks), int(c.files), int(c.tensors)
        self.data_bytes, self.meta_bytes = int(c.data_bytes), int(c.meta_bytes)
        self.name = ffi.string(c.name).decode()
        self.layout = ffi.string(c.layout).decode()

    def __repr__(self):
        return "CheckpointInfo(%s: step %d, %d ranks, %d files, %d tensors, %d bytes)" % (
            self.name, self.step, self.ranks, self.files, self.tensors, self.data_bytes)


def checkpoint_find(directory, ctx=None):
    """The CheckpointInfo of directory's latest complete checkpoint (its index checked), or None
    when it holds none."""
    from .context import default_context
    ctx = ctx if ctx is not None else default_context()
    info = ffi.new("wh_checkpoint_info *", lib.whpy_wh_checkpoint_info_init())
    with ctx._lock:
        st = lib.wh_checkpoint_find(ctx._p(), str(directory).encode(), info)
        if st == lib.WH_ERR_NOT_FOUND:
            return None
        if st:
            raise ctx.error(st)
    return CheckpointInfo(info)
