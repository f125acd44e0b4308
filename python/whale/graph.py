"""graph.py - building a graph: values with Python operators, ops, Whale-style hint scopes,
autodiff and optimizers, files and dumps."""
import numpy as np

from ._handle import Handle
from ._lib import cstr, ffi, lib, take_str
from .context import default_context
from .dtypes import BATCH, DType, as_dtype, dims_in, dims_out
from .errors import InvalidArgumentError, PoisonedError, make_error
from .init import Init, zeros

_FORMATS = {"text": lib.WH_FORMAT_TEXT, "dot": lib.WH_FORMAT_DOT}
_HINTS = {lib.WH_HINT_REPLICATE: "replicate", lib.WH_HINT_SPLIT: "split",
          lib.WH_HINT_STAGE: "stage", lib.WH_HINT_RECOMPUTE: "recompute"}


def format_code(fmt):
    """WH_FORMAT_TEXT or WH_FORMAT_DOT from 'text' / 'dot'."""
    try:
        return _FORMATS[fmt]
    except KeyError:
        raise InvalidArgumentError("format must be 'text' or 'dot', got %r" % (fmt,)) from None


class Value:
    """A value of a graph (an input, parameter, constant or op output): a handle into its graph.

    Python operators build ops: ``a @ b`` (matmul; ``w.T`` folds into its transpose flag),
    ``a + b``, ``a - b``, ``a * b``, ``a / b`` (NumPy broadcasting; Python numbers become scalar
    constants, ``x * 2.0`` a scale), ``-a``, and ``x[:, 2:5]`` (slices with step 1). Methods name
    the other unary ops (``x.relu()``, ``x.sum(axes)``, ``x.reshape(...)``). Two Values are equal
    when they are the same value of the same graph, so they serve as dictionary keys."""

    __slots__ = ("graph", "_id")
    __array_ufunc__ = None  # numpy operands on the left defer to Value's reflected operators

    def __init__(self, graph, vid):
        self.graph = graph
        self._id = vid

    @property
    def id(self):
        """The wh_value index of this value in its graph."""
        return self._id

    @property
    def shape(self):
        """The shape as a tuple; the symbolic batch dimension shows as BATCH or BATCH*k."""
        nd = ffi.new("int *")
        dims = ffi.new("int64_t[]", lib.WH_MAX_DIMS)
        self.graph._call(lib.wh_value_shape, self._id, nd, dims)
        return dims_out(nd[0], dims)

    @property
    def ndim(self):
        """The number of dimensions."""
        return len(self.shape)

    @property
    def dtype(self):
        """The element type (a whale.DType)."""
        return DType(self.graph._get(lib.wh_value_dtype, self._id))

    @property
    def name(self):
        """The value's name ('' if unnamed); assign a str to name it (for find, dumps, feeds)."""
        return cstr(self.graph._get(lib.wh_value_name, self._id))

    @name.setter
    def name(self, name):
        self.graph._call(lib.wh_value_set_name, self._id, name.encode())

    @property
    def hints(self):
        """The hint scopes the value was built in, outermost first: [('stage', 0), ...]."""
        n = self.graph._get(lib.wh_value_hints, self._id, ffi.NULL, 0)
        out = ffi.new("wh_hint[]", max(n, 1))
        self.graph._get(lib.wh_value_hints, self._id, out, n)
        return [(_HINTS.get(out[i].kind, out[i].kind), out[i].n) for i in range(n)]

    @property
    def grad(self):
        """The gradient of the loss with respect to this value (after Graph.backward), or None."""
        v = self.graph._get(lib.wh_grad, self._id)
        return Value(self.graph, v) if v >= 0 else None

    @property
    def T(self):
        """The transpose of the last two axes. In ``a @ w.T`` it sets matmul's transpose flag
        (no transpose node); used anywhere else it becomes a transpose op."""
        return _Transposed(self)

    def keep(self):
        """Keep this value to the end of every run so a session can fetch it (before the session
        is created). Returns the value."""
        self.graph.keep(self)
        return self

    # operators ------------------------------------------------------------------------------
    def __matmul__(self, other):
        return self.graph.matmul(self, other)

    def __rmatmul__(self, other):
        return self.graph.matmul(other, self)

    def __add__(self, other):
        return self.graph.add(self, other)

    def __radd__(self, other):
        return self.graph.add(other, self)

    def __sub__(self, other):
        return self.graph.sub(self, other)

    def __rsub__(self, other):
        return self.graph.sub(other, self)

    def __mul__(self, other):
        if _is_number(other):
            return self.graph.scale(self, other)
        return self.graph.mul(self, other)

    def __rmul__(self, other):
        if _is_number(other):
            return self.graph.scale(self, other)
        return self.graph.mul(other, self)

    def __truediv__(self, other):
        return self.graph.div(self, other)

    def __rtruediv__(self, other):
        return self.graph.div(other, self)

    def __neg__(self):
        return self.graph.scale(self, -1.0)

    def __getitem__(self, index):
        return self.graph._index(self, index)

    def __eq__(self, other):
        return isinstance(other, Value) and other.graph is self.graph and other._id == self._id

    def __ne__(self, other):
        return not self.__eq__(other)

    def __hash__(self):
        return hash((id(self.graph), self._id))

    def __bool__(self):
        return True

    # unary ops as methods ----------------------------------------------------------------------
    def relu(self):
        """max(x, 0)."""
        return self.graph.relu(self)

    def gelu(self):
        """GELU, tanh approximation."""
        return self.graph.gelu(self)

    def tanh(self):
        """tanh(x)."""
        return self.graph.tanh(self)

    def sigmoid(self):
        """1 / (1 + exp(-x))."""
        return self.graph.sigmoid(self)

    def exp(self):
        """exp(x)."""
        return self.graph.exp(self)

    def log(self):
        """log(x)."""
        return self.graph.log(self)

    def softmax(self):
        """Softmax over the last axis."""
        return self.graph.softmax(self)

    def log_softmax(self):
        """Log-softmax over the last axis."""
        return self.graph.log_softmax(self)

    def sum(self, axes=None, keepdims=False):
        """Sum over axes (an int or a sequence; None: all)."""
        return self.graph.sum(self, axes, keepdims)

    def mean(self, axes=None, keepdims=False):
        """Mean over axes (an int or a sequence; None: all)."""
        return self.graph.mean(self, axes, keepdims)

    def reshape(self, *shape):
        """Same elements in a new shape (a tuple or dims as arguments; BATCH*k stays symbolic)."""
        if len(shape) == 1 and not isinstance(shape[0], int):
            shape = shape[0]
        return self.graph.reshape(self, shape)

    def permute(self, *perm):
        """Axes reordered: output axis i is input axis perm[i]."""
        if len(perm) == 1 and not isinstance(perm[0], int):
            perm = perm[0]
        return self.graph.permute(self, perm)

    def transpose(self, axis0=-2, axis1=-1):
        """Two axes swapped."""
        return self.graph.transpose(self, axis0, axis1)

    def __repr__(self):
        if self.graph.closed:
            return "<whale.Value %d of a closed graph>" % self._id
        name = self.name
        return "<whale.Value %d%s %s%s>" % (self._id, " '%s'" % name if name else "",
                                            self.dtype, list(self.shape))


class _Transposed(Value):
    """``v.T``: matmul folds it into a transpose flag; anything else makes a transpose node."""

    __slots__ = ("base", "_made")

    def __init__(self, base):
        self.graph = base.graph
        self.base = base
        self._made = None

    @property
    def _id(self):
        if self._made is None:
            self._made = self.graph.transpose(self.base, -2, -1)._id
        return self._made


def _is_number(x):
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


class _Scope:
    """A hint scope: opened on entering the with block, closed (wh_scope_end) on leaving it."""

    __slots__ = ("graph", "_open", "_what")

    def __init__(self, graph, open_fn, what):
        self.graph, self._open, self._what = graph, open_fn, what

    def __enter__(self):
        self.graph._call(self._open)
        return self

    def __exit__(self, *exc):
        self.graph._call(lib.wh_scope_end)
        return False

    def __repr__(self):
        return "<whale hint scope %s>" % self._what


def _axes(axes):
    if axes is None:
        return 0, ffi.NULL
    if isinstance(axes, int):
        axes = (axes,)
    axes = [int(a) for a in axes]
    return len(axes), ffi.new("int[]", axes)


class Graph(Handle):
    """A static graph built once, as if for one device; libwhale differentiates it, plans its
    memory and trains it, on one process or on many ranks under a plan.

    A builder that fails raises (ShapeError, DtypeError, ...) with libwhale's message and poisons
    the graph: later builders raise PoisonedError repeating the first message. A session freezes
    its graph while it lives."""

    _kind = "Graph"

    def __init__(self, ctx=None, _ptr=None):
        self.ctx = ctx if ctx is not None else default_context()
        if _ptr is None:
            out = ffi.new("wh_graph **")
            self._ctx_check(lib.wh_graph_create(self.ctx._p(), out))
            _ptr = out[0]
        self._own(_ptr, lib.wh_graph_destroy, (self.ctx,))
        self._lock = self._close_lock = self.ctx._lock
        self._poisoned = False

    @classmethod
    def load(cls, path, ctx=None):
        """A graph from a file written by Graph.save or Session.save (parameters saved with
        values start from them)."""
        ctx = ctx if ctx is not None else default_context()
        out = ffi.new("wh_graph **")
        with ctx._lock:
            ctx.check(lib.wh_graph_load(ctx._p(), str(path).encode(), out))
        return cls(ctx, _ptr=out[0])

    # calls -------------------------------------------------------------------------------------
    # Every call that hands libwhale the graph holds the context's lock, which close() takes too:
    # the GIL is released during the call, and another thread must not free the graph meanwhile.
    def _build(self, fn, *args):
        """A builder's new Value, or the building error raised."""
        with self._lock:
            v = fn(self._p(), *args)
            if v < 0:
                raise self._build_error()
        return Value(self, v)

    def _call(self, fn, *args):
        """A call returning a wh_status; raise for a failure."""
        with self._lock:
            self._check(fn(self._p(), *args))

    def _get(self, fn, *args):
        """A call returning what it returns."""
        with self._lock:
            return fn(self._p(), *args)

    # errors ------------------------------------------------------------------------------------
    def _ctx_check(self, st):
        if st != lib.WH_OK:
            with self.ctx._lock:
                raise self.ctx.error(st)

    def _check(self, st):
        """Raise for a failed graph call: the graph's own error when it holds one, else the
        context's last error."""
        if st == lib.WH_OK:
            return
        p = self._p()
        gst = lib.wh_graph_status(p)
        if gst != lib.WH_OK and st in (gst, lib.WH_ERR_POISONED):
            raise self._build_error()
        raise make_error(st, cstr(lib.wh_last_error(self.ctx._p())))

    def _build_error(self):
        p = self._p()
        if lib.wh_graph_status(p) == lib.WH_OK:  # refused without poisoning (a frozen graph)
            return make_error(lib.WH_ERR_STATE, cstr(lib.wh_last_error(self.ctx._p())))
        msg = cstr(lib.wh_graph_error(p))
        if self._poisoned:
            return PoisonedError("graph poisoned by an earlier error: " + msg)
        self._poisoned = True
        return make_error(lib.wh_graph_status(p), msg)

    def _id(self, x):
        """The wh_value of x: a Value of this graph, or a Python number (a scalar constant)."""
        if isinstance(x, Value):
            if x.graph is not self:
                raise InvalidArgumentError("value %d belongs to another graph" % x._id)
            return x._id
        if _is_number(x):
            return self.scalar(x)._id
        if isinstance(x, str):
            return self.find(x)._id
        hint = " (an array becomes a value with g.constant(name, array))" if isinstance(x, np.ndarray) else ""
        raise TypeError("expected a whale.Value of this graph or a number, got %s%s" % (type(x).__name__, hint))

    @property
    def status(self):
        """The first error met while building (0, WH_OK, if none)."""
        return self._get(lib.wh_graph_status)

    @property
    def error(self):
        """The message of the first building error ('' if none)."""
        return cstr(self._get(lib.wh_graph_error))

    # leaves ------------------------------------------------------------------------------------
    def input(self, name, dtype=DType.F32, shape=(BATCH,)):
        """A fed input; shape may hold one symbolic dimension (BATCH or BATCH*k)."""
        d = dims_in(shape)
        return self._build(lib.wh_input, name.encode(), as_dtype(dtype), len(d), d)

    def param(self, name, shape, init=None, dtype=DType.F32):
        """A trainable parameter (no symbolic dimension) with a seeded initializer from
        whale.init (default: zeros)."""
        d = dims_in(shape)
        init = init if init is not None else zeros()
        if not isinstance(init, Init):
            raise TypeError("init must come from whale.init (zeros, normal, ...), got %r" % (init,))
        return self._build(lib.wh_param, name.encode(), as_dtype(dtype), len(d), d, init._c())

    def constant(self, name, array, dtype=None):
        """A constant holding a copy of array (numpy or nested lists)."""
        dt = as_dtype(dtype) if dtype is not None else None
        a = np.ascontiguousarray(array, dtype=dt.numpy if dt is not None else None)
        if dt is None:
            dt = as_dtype(a.dtype)
        return self._build(lib.wh_constant, name.encode() if name else ffi.NULL, dt, a.ndim, a.shape,
                           ffi.from_buffer(a))

    def scalar(self, x):
        """A scalar f32 constant."""
        return self._build(lib.wh_scalar, float(x))

    # ops ---------------------------------------------------------------------------------------
    def matmul(self, a, b, trans_a=False, trans_b=False):
        """op(a) @ op(b): a [..., M, K] ([..., K, M] with trans_a), b [K, N] ([N, K] with trans_b)
        shared by every leading index, or batched with a's leading dims. ``x.T`` operands set
        the flags."""
        if isinstance(a, _Transposed):
            a, trans_a = a.base, not trans_a
        if isinstance(b, _Transposed):
            b, trans_b = b.base, not trans_b
        return self._build(lib.wh_matmul, self._id(a), self._id(b), int(trans_a), int(trans_b))

    def add(self, a, b):
        """a + b with NumPy broadcasting."""
        return self._build(lib.wh_add, self._id(a), self._id(b))

    def sub(self, a, b):
        """a - b with NumPy broadcasting."""
        return self._build(lib.wh_sub, self._id(a), self._id(b))

    def mul(self, a, b):
        """a * b elementwise with NumPy broadcasting."""
        return self._build(lib.wh_mul, self._id(a), self._id(b))

    def div(self, a, b):
        """a / b elementwise with NumPy broadcasting."""
        return self._build(lib.wh_div, self._id(a), self._id(b))

    def scale(self, x, s):
        """x * s for a Python number s."""
        return self._build(lib.wh_scale, self._id(x), float(s))

    def bias_add(self, x, b, axis=-1):
        """x + b, b 1-D along x's axis (negative counts from the end)."""
        return self._build(lib.wh_bias_add, self._id(x), self._id(b), int(axis))

    def relu(self, x):
        """max(x, 0)."""
        return self._build(lib.wh_relu, self._id(x))

    def gelu(self, x):
        """GELU, tanh approximation."""
        return self._build(lib.wh_gelu, self._id(x))

    def tanh(self, x):
        """tanh(x)."""
        return self._build(lib.wh_tanh, self._id(x))

    def sigmoid(self, x):
        """1 / (1 + exp(-x))."""
        return self._build(lib.wh_sigmoid, self._id(x))

    def exp(self, x):
        """exp(x)."""
        return self._build(lib.wh_exp, self._id(x))

    def log(self, x):
        """log(x)."""
        return self._build(lib.wh_log, self._id(x))

    def softmax(self, x):
        """Softmax over the last axis."""
        return self._build(lib.wh_softmax, self._id(x))

    def log_softmax(self, x):
        """Log-softmax over the last axis."""
        return self._build(lib.wh_log_softmax, self._id(x))

    def sum(self, x, axes=None, keepdims=False):
        """Sum over axes (an int or a sequence; None: all axes)."""
        n, a = _axes(axes)
        return self._build(lib.wh_sum, self._id(x), n, a, int(keepdims))

    def mean(self, x, axes=None, keepdims=False):
        """Mean over axes (an int or a sequence; None: all axes)."""
        n, a = _axes(axes)
        return self._build(lib.wh_mean, self._id(x), n, a, int(keepdims))

    def reshape(self, x, shape):
        """Same elements, new shape; a symbolic dimension stays symbolic (BATCH*k)."""
        d = dims_in(shape)
        return self._build(lib.wh_reshape, self._id(x), len(d), d)

    def permute(self, x, perm):
        """Axes reordered: output axis i is input axis perm[i] (one entry per axis of x)."""
        perm = [int(p) for p in perm]
        x = self._id(x)
        nd = ffi.new("int *")
        dims = ffi.new("int64_t[]", lib.WH_MAX_DIMS)
        self._call(lib.wh_value_shape, x, nd, dims)
        if len(perm) != nd[0]:
            raise InvalidArgumentError("permute: %d axes given for a value of %d" % (len(perm), nd[0]))
        return self._build(lib.wh_permute, x, perm)

    def transpose(self, x, axis0=-2, axis1=-1):
        """x with two axes swapped (negative counts from the end)."""
        return self._build(lib.wh_transpose, self._id(x), int(axis0), int(axis1))

    def slice(self, x, axis, start, end):
        """x[..., start:end, ...] along a non-symbolic axis."""
        return self._build(lib.wh_slice, self._id(x), int(axis), int(start), int(end))

    def _index(self, x, index):
        if not isinstance(index, tuple):
            index = (index,)
        shape = x.shape
        if sum(i is Ellipsis for i in index) > 1:
            raise IndexError("an index can only have a single ellipsis")
        if Ellipsis in index:
            k = index.index(Ellipsis)
            index = index[:k] + (slice(None),) * (len(shape) - len(index) + 1) + index[k + 1:]
        if len(index) > len(shape):
            raise IndexError("too many indices: %d for a value of %d axes" % (len(index), len(shape)))
        out = x
        for axis, s in enumerate(index):
            if not isinstance(s, slice):
                raise IndexError("whale values take slices (x[:, a:b]), not %r" % (s,))
            if s == slice(None):
                continue
            if s.step not in (None, 1):
                raise IndexError("slices take step 1 only")
            if shape[axis] < 0:
                raise IndexError("axis %d is the symbolic batch dimension: it cannot be sliced" % axis)
            start, stop, _ = s.indices(shape[axis])
            out = self.slice(out, axis, start, max(start, stop))
        return out

    def concat(self, xs, axis=0):
        """The values xs joined along axis."""
        ids = [self._id(x) for x in xs]
        return self._build(lib.wh_concat, len(ids), ids, int(axis))

    def embedding(self, table, indices):
        """table [V, D] gathered by int32 indices [...] -> [..., D]."""
        return self._build(lib.wh_embedding, self._id(table), self._id(indices))

    def cross_entropy(self, logits, labels):
        """Mean over rows of -log softmax(logits)[label]; logits [..., C] f32, labels [...] i32."""
        return self._build(lib.wh_cross_entropy, self._id(logits), self._id(labels))

    def mse(self, pred, target):
        """Mean of (pred - target)^2 over all elements."""
        return self._build(lib.wh_mse, self._id(pred), self._id(target))

    def dropout(self, x, p, seed=0):
        """Train mode: zero with probability p and scale the rest by 1/(1-p); eval: identity.
        The mask is a function of (seed, step, element)."""
        return self._build(lib.wh_dropout, self._id(x), float(p), int(seed))

    def conv2d(self, x, w, stride=1, padding=0):
        """x [N, C, H, W], w [O, C, KH, KW] -> [N, O, OH, OW]."""
        return self._build(lib.wh_conv2d, self._id(x), self._id(w), int(stride), int(padding))

    def max_pool2d(self, x, kernel, stride=None, padding=0):
        """Max pooling over kernel x kernel windows (stride default: kernel)."""
        stride = kernel if stride is None else stride
        return self._build(lib.wh_max_pool2d, self._id(x), int(kernel), int(stride), int(padding))

    def avg_pool2d(self, x, kernel, stride=None, padding=0):
        """Average pooling; padding counts in the divisor (count_include_pad=True)."""
        stride = kernel if stride is None else stride
        return self._build(lib.wh_avg_pool2d, self._id(x), int(kernel), int(stride), int(padding))

    def layernorm(self, x, gamma, beta, eps=1e-5):
        """(x - mean) / sqrt(var + eps) * gamma + beta over the last axis."""
        return self._build(lib.wh_layernorm, self._id(x), self._id(gamma), self._id(beta), float(eps))

    def attention(self, qkv, heads):
        """Causal multi-head self-attention of a fused qkv [.., T, 3C] -> [.., T, C]."""
        return self._build(lib.wh_attention, self._id(qkv), int(heads))

    # hints -------------------------------------------------------------------------------------
    def replicate(self, n):
        """``with g.replicate(n):`` nodes built inside carry a data-parallel hint of n replicas."""
        return _Scope(self, lambda p: lib.wh_scope_replicate(p, int(n)), "replicate(%d)" % n)

    def split(self, n):
        """``with g.split(n):`` nodes built inside carry an operator-sharding hint of n parts."""
        return _Scope(self, lambda p: lib.wh_scope_split(p, int(n)), "split(%d)" % n)

    def stage(self):
        """``with g.stage():`` nodes built inside form one pipeline stage (a cut the planner may
        use); stages are numbered in the order they are opened."""
        return _Scope(self, lib.wh_scope_stage, "stage")

    def recompute(self):
        """``with g.recompute():`` activations made inside are recomputed in backward instead of
        kept (in sessions with recompute on): same results, lower memory peak."""
        return _Scope(self, lib.wh_scope_recompute, "recompute")

    @property
    def pipeline(self):
        """Micro-batches of the pipeline hint (0 when unset); assign an int to set it."""
        return self._get(lib.wh_graph_pipeline)

    @pipeline.setter
    def pipeline(self, micro_batches):
        self._call(lib.wh_set_pipeline, int(micro_batches))

    def set_pipeline(self, micro_batches):
        """Set the pipeline hint: micro-batches per step."""
        self.pipeline = micro_batches

    # training ----------------------------------------------------------------------------------
    def backward(self, loss):
        """Add the gradient nodes of the scalar loss (once per graph)."""
        self._call(lib.wh_backward, self._id(loss))

    def grad(self, v):
        """The gradient of the loss with respect to v (after backward), or None."""
        g = self._get(lib.wh_grad, self._id(v))
        return Value(self, g) if g >= 0 else None

    def optimizer(self, opt):
        """Add the update nodes of opt (a whale.SGD or whale.AdamW) for every parameter with a
        gradient (after backward; once per graph)."""
        opt._apply(self)

    def keep(self, v):
        """Keep v to the end of every run so a session can fetch it (before the session)."""
        self._call(lib.wh_graph_keep, self._id(v))

    # inspection --------------------------------------------------------------------------------
    def find(self, name):
        """The value with that name (inputs, parameters, constants, named ops); NotFoundError if
        none."""
        v = self._get(lib.wh_graph_find, name.encode())
        if v < 0:
            raise make_error(lib.WH_ERR_NOT_FOUND, "no value named %r in the graph" % name)
        return Value(self, v)

    def __getitem__(self, name):
        return self.find(name)

    @property
    def params(self):
        """The parameters in creation order."""
        with self._lock:
            p = self._p()
            ids = [lib.wh_graph_param(p, i) for i in range(lib.wh_graph_num_params(p))]
        return [Value(self, v) for v in ids]

    @property
    def num_values(self):
        """How many values the graph holds."""
        return self._get(lib.wh_graph_num_values)

    @property
    def num_nodes(self):
        """How many nodes the graph holds."""
        return self._get(lib.wh_graph_num_nodes)

    def value(self, vid):
        """The Value with index vid."""
        if not 0 <= int(vid) < self.num_values:
            raise InvalidArgumentError("no value %r in a graph of %d" % (vid, self.num_values))
        return Value(self, int(vid))

    # files -------------------------------------------------------------------------------------
    def save(self, path):
        """Save the structure, hints and initializers (no trained values) as protobuf."""
        self._call(lib.wh_graph_save, str(path).encode())

    def dump(self, fmt="text"):
        """A readable dump: fmt 'text' or 'dot' (Graphviz)."""
        out = ffi.new("char **")
        self._call(lib.wh_graph_dump, format_code(fmt), out)
        return take_str(out)

    def dot(self):
        """The graph in Graphviz DOT."""
        return self.dump("dot")

    def session(self, **options):
        """A Session running this graph; options as whale.Session."""
        from .session import Session
        return Session(self, **options)

    def __repr__(self):
        if self.closed:
            return "<whale.Graph closed>"
        return "<whale.Graph %d values, %d nodes%s>" % (
            self.num_values, self.num_nodes, ", poisoned" if self.status else "")
