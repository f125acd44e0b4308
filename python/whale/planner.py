"""planner.py - clusters (from code, a JSON file or probing), plans (searched or pinned) with
their explanation, dumps, files and simulation."""
import enum

from ._handle import Handle
from ._lib import cstr, ffi, lib, take_str
from .context import default_context
from .dtypes import DType, as_dtype
from .errors import InvalidArgumentError
from .graph import format_code


class Schedule(enum.IntEnum):
    """A pipeline schedule: AUTO (the search chooses), GPIPE, ONE_F_ONE_B (1F1B)."""

    AUTO = lib.WH_SCHEDULE_AUTO
    GPIPE = lib.WH_SCHEDULE_GPIPE
    ONE_F_ONE_B = lib.WH_SCHEDULE_1F1B


_SCHEDULES = {"auto": Schedule.AUTO, "gpipe": Schedule.GPIPE, "1f1b": Schedule.ONE_F_ONE_B}


def _schedule(x):
    if isinstance(x, Schedule):
        return x
    if isinstance(x, str) and x.lower() in _SCHEDULES:
        return _SCHEDULES[x.lower()]
    if isinstance(x, int) and x in {s.value for s in Schedule}:
        return Schedule(x)
    raise InvalidArgumentError("schedule must be 'auto', 'gpipe' or '1f1b', got %r" % (x,))


class DeviceDesc:
    """A device's figures (wh_device_desc): kind (a name), flops_f32 and flops_bf16 (peak FLOP/s;
    bf16 0: as f32), mem_bw (bytes/s), mem_bytes, link_bw (intra-node link, bytes/s; 0: PCIe
    Gen3 x16), eff_flops and eff_bw (sustained fractions of the peaks; 0: library default)."""

    FIELDS = ("kind", "flops_f32", "flops_bf16", "mem_bw", "mem_bytes", "link_bw", "eff_flops", "eff_bw")

    def __init__(self, kind="custom", flops_f32=0.0, flops_bf16=0.0, mem_bw=0.0, mem_bytes=0.0,
                 link_bw=0.0, eff_flops=0.0, eff_bw=0.0):
        self.kind = kind
        self.flops_f32, self.flops_bf16, self.mem_bw, self.mem_bytes = flops_f32, flops_bf16, mem_bw, mem_bytes
        self.link_bw, self.eff_flops, self.eff_bw = link_bw, eff_flops, eff_bw

    @classmethod
    def _from_c(cls, d):
        return cls(cstr(d.kind), d.flops_f32, d.flops_bf16, d.mem_bw, d.mem_bytes, d.link_bw,
                   d.eff_flops, d.eff_bw)

    def __repr__(self):
        return "DeviceDesc(%s)" % ", ".join("%s=%r" % (f, getattr(self, f)) for f in self.FIELDS)


class Cluster(Handle):
    """The devices a plan may use, by measured or datasheet numbers, and the links between them.

    ``Cluster()`` starts empty (add devices by catalogue kind or described), ``Cluster.load(path)``
    reads a JSON file (docs/cluster.md), ``Cluster.probe()`` measures this machine."""

    _kind = "Cluster"

    def __init__(self, ctx=None, _ptr=None):
        self.ctx = ctx if ctx is not None else default_context()
        if _ptr is None:
            out = ffi.new("wh_cluster **")
            with self.ctx._lock:
                st = lib.wh_cluster_create(self.ctx._p(), out)
                if st != lib.WH_OK:
                    raise self.ctx.error(st)
            _ptr = out[0]
        self._own(_ptr, lib.wh_cluster_destroy, (self.ctx,))
        self._close_lock = self.ctx._lock

    def _call(self, fn, *args):
        """fn(the cluster, *args) under the context's lock (which close() takes too); raise for a
        failure."""
        with self.ctx._lock:
            st = fn(self._p(), *args)
            if st != lib.WH_OK:
                raise self.ctx.error(st)

    @classmethod
    def load(cls, path, ctx=None):
        """A cluster from a JSON file (schema: docs/cluster.md). Errors name the file, the JSON
        path and what is wrong (FileError: unreadable; CorruptError: not the schema)."""
        ctx = ctx if ctx is not None else default_context()
        out = ffi.new("wh_cluster **")
        with ctx._lock:
            st = lib.wh_cluster_load(ctx._p(), str(path).encode(), out)
            if st != lib.WH_OK:
                raise ctx.error(st)
        return cls(ctx, _ptr=out[0])

    @classmethod
    def probe(cls, ctx=None):
        """This machine as a one-node cluster, measured here (the CPU on the context's threads,
        then each visible GPU). Takes about a second."""
        ctx = ctx if ctx is not None else default_context()
        out = ffi.new("wh_cluster **")
        with ctx._lock:
            st = lib.wh_cluster_probe(ctx._p(), out)
            if st != lib.WH_OK:
                raise ctx.error(st)
        return cls(ctx, _ptr=out[0])

    def add(self, kind, node=0, count=1):
        """Add count devices of a catalogue kind (P100-16GB, V100-16GB, V100-32GB, T4, A10,
        A100-40GB, A100-80GB, H100, H200, CPU) on node. Returns the cluster."""
        self._call(lib.wh_cluster_add, kind.encode(), int(node), int(count))
        return self

    def add_custom(self, desc=None, node=0, count=1, **fields):
        """Add count devices described by a DeviceDesc (or its fields as keywords) on node.
        Returns the cluster."""
        desc = desc if desc is not None else DeviceDesc(**fields)
        d = ffi.new("wh_device_desc *", lib.whpy_wh_device_desc_init())
        kind = ffi.new("char[]", desc.kind.encode())
        d.kind = kind
        for f in DeviceDesc.FIELDS[1:]:
            setattr(d, f, float(getattr(desc, f)))
        self._call(lib.wh_cluster_add_custom, d, int(node), int(count))
        return self

    def set_links(self, intra_bw, intra_lat, inter_bw, inter_lat):
        """Links within a node (intra_bw 0: each device's own link) and across nodes, in
        bytes/s and seconds. Returns the cluster."""
        self._call(lib.wh_cluster_set_links, float(intra_bw), float(intra_lat), float(inter_bw),
                   float(inter_lat))
        return self

    def __len__(self):
        with self.ctx._lock:
            return lib.wh_cluster_size(self._p())

    def device(self, i):
        """Device i's figures as a DeviceDesc."""
        d = ffi.new("wh_device_desc *", lib.whpy_wh_device_desc_init())
        self._call(lib.wh_cluster_device, int(i), d)
        return DeviceDesc._from_c(d)

    @property
    def devices(self):
        """Every device's figures, in cluster order."""
        return [self.device(i) for i in range(len(self))]

    def set_profile(self, device, graph, batch, report):
        """Replace the roofline per op kind by a measured profile: report is the text of
        Session.profile_report for a one-process training session of graph at batch on device's
        kind; it applies to every device of that kind."""
        with self.ctx._lock:
            st = lib.wh_cluster_set_profile(self._p(), int(device), graph._p(), int(batch), report.encode())
            if st != lib.WH_OK:
                raise self.ctx.error(st)

    def describe(self):
        """A readable listing of the cluster."""
        out = ffi.new("char **")
        self._call(lib.wh_cluster_describe, out)
        return take_str(out)

    def __str__(self):
        return self.describe()

    def save(self, path):
        """Write the cluster as JSON (docs/cluster.md); loading it gives the same cluster."""
        self._call(lib.wh_cluster_save, str(path).encode())

    def __repr__(self):
        return "<whale.Cluster closed>" if self.closed else "<whale.Cluster %d devices>" % len(self)


class SimResult:
    """The simulated step of a plan: step_time (seconds), bubble_fraction (idle share of the
    busiest device), num_devices and util (busy fraction per device, the first 64)."""

    def __init__(self, r):
        self.step_time, self.bubble_fraction = r.step_time, r.bubble_fraction
        self.num_devices = r.num_devices
        self.util = [r.util[i] for i in range(min(r.num_devices, 64))]

    def __repr__(self):
        return "SimResult(step_time=%g, bubble_fraction=%g, num_devices=%d)" % (
            self.step_time, self.bubble_fraction, self.num_devices)


def _zero1(z):
    if z == "search":
        return -1
    return int(bool(z))


class Plan(Handle):
    """A distributed training plan of a graph (after backward and an optimizer) on a cluster:
    stages, replicas and their batch shares, operator sharding, micro-batches and schedule,
    recomputation, the predicted time and memory, and why it won.

    ``Plan(graph, cluster, global_batch, ...)`` searches (stages, micro_batches 0: search;
    schedule 'auto'; zero1 True, False or 'search'; mixed whale.bf16 or whale.f16 costs the
    model in mixed precision, which its sessions then run); ``Plan.pinned(...)`` costs a layout the
    caller fixes; ``Plan.load(path)`` reads a saved plan. A session runs it with a Comm."""

    _kind = "Plan"

    def __init__(self, graph, cluster, global_batch, stages=0, micro_batches=0, schedule="auto",
                 allow_tp=True, allow_recompute=True, zero1=False, even_shares=False, even_layers=False,
                 mixed=DType.F32, _ptr=None, _ctx=None):
        self.ctx = ctx = _ctx if _ctx is not None else graph.ctx
        self.cluster = cluster
        self.global_batch = int(global_batch) if global_batch is not None else None
        if _ptr is None:
            o = ffi.new("wh_plan_options *", lib.whpy_wh_plan_options_init())
            o.global_batch = self.global_batch
            o.stages, o.micro_batches, o.schedule = int(stages), int(micro_batches), _schedule(schedule)
            o.allow_tp, o.allow_recompute = int(bool(allow_tp)), int(bool(allow_recompute))
            o.zero1, o.even_shares, o.even_layers = _zero1(zero1), int(bool(even_shares)), int(bool(even_layers))
            o.mixed = as_dtype(mixed)
            out = ffi.new("wh_plan **")
            with ctx._lock:
                st = lib.wh_plan_create(ctx._p(), graph._p(), cluster._p(), o, out)
                if st != lib.WH_OK:
                    raise ctx.error(st)
            _ptr = out[0]
        self._own(_ptr, lib.wh_plan_destroy, (ctx,))
        self._close_lock = ctx._lock

    @classmethod
    def pinned(cls, graph, cluster, global_batch, stages=1, last_segment=None, devices=None, shares=None,
               micro_batches=1, schedule="1f1b", tp=1, recompute=False, zero1=False, mixed=DType.F32):
        """A plan whose layout the caller fixes (the planner only costs and checks it): stages;
        last_segment per stage (None: an even split); devices, every cluster device once in
        stage-major groups (None: the planner's order); shares per stage per replica, samples
        per micro-batch (None: the planner's); micro_batches; schedule 'gpipe' or '1f1b'; tp
        devices per replica (operator sharding); recompute; zero1; mixed (as Plan)."""
        ctx = graph.ctx
        lay = ffi.new("wh_plan_layout *", lib.whpy_wh_plan_layout_init())
        keep = []
        if last_segment is not None:
            keep.append(ffi.new("int[]", [int(x) for x in last_segment]))
            lay.last_segment = keep[-1]
        if devices is not None:
            keep.append(ffi.new("int[]", [int(x) for x in devices]))
            lay.devices = keep[-1]
        if shares is not None:
            keep.append(ffi.new("int64_t[]", [int(x) for x in shares]))
            lay.shares = keep[-1]
        lay.stages, lay.micro_batches, lay.schedule = int(stages), int(micro_batches), _schedule(schedule)
        lay.tp, lay.recompute, lay.zero1 = int(tp), int(bool(recompute)), int(bool(zero1))
        lay.mixed = as_dtype(mixed)
        out = ffi.new("wh_plan **")
        with ctx._lock:
            st = lib.wh_plan_create_pinned(ctx._p(), graph._p(), cluster._p(), int(global_batch), lay, out)
            if st != lib.WH_OK:
                raise ctx.error(st)
        return cls(graph, cluster, global_batch, _ptr=out[0])

    @classmethod
    def load(cls, path, ctx=None, cluster=None):
        """A plan saved by Plan.save; it explains, dumps and simulates like the saved one
        (CorruptError for a truncated or corrupt file). Its global batch is not recorded: a
        session running it checks the fed batch itself."""
        ctx = ctx if ctx is not None else default_context()
        out = ffi.new("wh_plan **")
        with ctx._lock:
            st = lib.wh_plan_load(ctx._p(), str(path).encode(), out)
            if st != lib.WH_OK:
                raise ctx.error(st)
        return cls(None, cluster, None, _ptr=out[0], _ctx=ctx)

    def _text(self, fn, *args):
        out = ffi.new("char **")
        with self.ctx._lock:
            st = fn(self._p(), *args, out)
            if st != lib.WH_OK:
                raise self.ctx.error(st)
        return take_str(out)

    def explain(self):
        """Per stage and replica: devices, segments, batch share, predicted compute /
        communication / bubble, memory against capacity, and why it beat the runner-up."""
        return self._text(lib.wh_plan_explain)

    def dump(self, fmt="text"):
        """The plan as text or as Graphviz DOT ('dot')."""
        return self._text(lib.wh_plan_dump, format_code(fmt))

    def dot(self):
        """The plan in Graphviz DOT."""
        return self.dump("dot")

    def save(self, path):
        """Save the plan as protobuf (message Plan in proto/whale.proto)."""
        with self.ctx._lock:
            st = lib.wh_plan_save(self._p(), str(path).encode())
            if st != lib.WH_OK:
                raise self.ctx.error(st)

    def simulate(self, cluster=None):
        """A discrete-event simulation of one step on cluster (default: the one it was planned
        for), as a SimResult."""
        cluster = cluster if cluster is not None else self.cluster
        if cluster is None:
            raise InvalidArgumentError("simulate: this plan was loaded from a file: pass its cluster")
        r = ffi.new("wh_sim_result *", lib.whpy_wh_sim_result_init())
        with self.ctx._lock:
            st = lib.wh_plan_simulate(self._p(), cluster._p(), r)
            if st != lib.WH_OK:
                raise self.ctx.error(st)
        return SimResult(r)

    @property
    def step_time(self):
        """The search's estimate of one step, seconds."""
        with self.ctx._lock:
            return lib.wh_plan_step_time(self._p())

    @property
    def num_stages(self):
        """Pipeline stages."""
        with self.ctx._lock:
            return lib.wh_plan_num_stages(self._p())

    @property
    def micro_batches(self):
        """Micro-batches per step."""
        with self.ctx._lock:
            return lib.wh_plan_micro_batches(self._p())

    @property
    def schedule(self):
        """The pipeline schedule (a Schedule)."""
        with self.ctx._lock:
            return Schedule(lib.wh_plan_schedule(self._p()))

    @property
    def tp(self):
        """Devices that share each replica's operators (operator sharding; 1: none)."""
        with self.ctx._lock:
            return lib.wh_plan_tp(self._p())

    @property
    def zero1(self):
        """Whether the optimizer state is sharded over the data-parallel replicas (ZeRO-1)."""
        with self.ctx._lock:
            return bool(lib.wh_plan_zero1(self._p()))

    @property
    def mixed(self):
        """The mixed precision the plan was costed for and its sessions run (whale.f32: none)."""
        with self.ctx._lock:
            return DType(lib.wh_plan_mixed(self._p()))

    @property
    def num_segments(self):
        """Segments of the graph's forward chain (what pinned last_segment indexes)."""
        with self.ctx._lock:
            return lib.wh_plan_num_segments(self._p())

    def shares(self, n=None):
        """Samples per micro-batch of each device, indexed like the cluster (0 for unused
        devices); n defaults to the cluster's size."""
        if n is None:
            if self.cluster is None:
                raise InvalidArgumentError("shares: this plan was loaded from a file: pass n, the device count")
            n = len(self.cluster)
        out = ffi.new("int64_t[]", max(int(n), 1))
        with self.ctx._lock:
            st = lib.wh_plan_shares(self._p(), out, int(n))
            if st != lib.WH_OK:
                raise self.ctx.error(st)
        return [out[i] for i in range(int(n))]

    def __str__(self):
        return self.explain()

    def __repr__(self):
        if self.closed:
            return "<whale.Plan closed>"
        return "<whale.Plan %d stage(s), %d micro-batch(es), %.3g ms predicted>" % (
            self.num_stages, self.micro_batches, 1e3 * self.step_time)
