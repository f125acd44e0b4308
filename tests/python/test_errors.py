"""test_errors.py - every way a Python caller can go wrong raises a whale.Error subclass with a
message saying what was expected; nothing crashes, and the objects stay usable after a refusal."""
import numpy as np
import pytest

import whale
from conftest import batch_data, mlp
from whale._lib import cstr, lib


@pytest.fixture
def fed(ctx):
    m = mlp(ctx)
    s = m.g.session(batch=8)
    xb, yb = batch_data()
    s.feed(m.x, xb)
    s.feed(m.y, yb)
    return m, s, xb, yb


def test_one_class_per_status():
    seen = set()
    for st in range(1, 14):
        cls = whale.error_class(st)
        assert issubclass(cls, whale.Error) and cls is not whale.Error and cls.status == st
        e = cls("detail")
        assert e.status_name == cstr(lib.wh_status_str(st)) == whale.status_str(st)
        assert str(e) == "detail" and e.message == "detail"
        seen.add(cls)
    assert len(seen) == 13
    assert issubclass(whale.ShapeError, ValueError) and issubclass(whale.DtypeError, TypeError)
    assert issubclass(whale.CommTimeoutError, TimeoutError) and issubclass(whale.FileError, OSError)


def test_wrong_dtype(fed):
    m, s, xb, yb = fed
    with pytest.raises(whale.DtypeError, match=r"input 'x': expected a C-contiguous float32 numpy array of shape "
                                               r"\(8, 8\) at batch 8, got .*float64"):
        s.feed(m.x, xb.astype(np.float64))
    with pytest.raises(whale.DtypeError, match="int32"):
        s.feed(m.y, yb.astype(np.int64))
    with pytest.raises(whale.DtypeError, match="float32"):
        s.fetch(m.logits, out=np.empty((8, 4), np.float64))


def test_non_contiguous(fed):
    m, s, xb, yb = fed
    wide = np.zeros((8, 16), np.float32)
    with pytest.raises(whale.InvalidArgumentError, match="non-contiguous.*borrowed, not copied"):
        s.feed(m.x, wide[:, ::2])
    with pytest.raises(whale.InvalidArgumentError, match="non-contiguous"):
        s.feed(m.x, np.asfortranarray(np.zeros((8, 8), np.float32)))
    s.feed(m.x, wide[:, ::2], convert=True)  # a copy when asked
    with pytest.raises(whale.InvalidArgumentError, match="writable C-contiguous"):
        s.fetch(m.logits, out=np.zeros((4, 8), np.float32).T)
    ro = np.zeros((8, 4), np.float32)
    ro.flags.writeable = False
    with pytest.raises(whale.InvalidArgumentError, match="read-only"):
        s.fetch(m.logits, out=ro)
    with pytest.raises(whale.InvalidArgumentError, match="got a list"):
        s.feed(m.x, [[0.0] * 8] * 8)


def test_wrong_shape(fed):
    m, s, xb, yb = fed
    with pytest.raises(whale.ShapeError, match=r"shape \(8, 8\) at batch 8, got .*shape \(4, 8\)"):
        s.feed(m.x, xb[:4])
    with pytest.raises(whale.ShapeError, match=r"\(8,\)"):
        s.feed(m.y, yb.reshape(2, 4))
    with pytest.raises(whale.ShapeError):
        s.fetch(m.logits, out=np.empty((8, 5), np.float32))
    with pytest.raises(whale.ShapeError):
        s.set_param(m.params[0], np.zeros((8, 16), np.float32))
    s.step()  # the refusals left the session as it was


def test_freed_handles(ctx):
    m = mlp(ctx)
    s = m.g.session(batch=8)
    s.close()
    s.close()  # twice is fine
    for call in (s.step, lambda: s.run("eval"), lambda: s.fetch(m.loss), lambda: s.feed(m.x, batch_data()[0]),
                 lambda: s.memory()):
        with pytest.raises(whale.StateError, match="Session is closed"):
            call()
    m.g.close()
    with pytest.raises(whale.StateError, match="Graph is closed"):
        m.g.input("z", whale.f32, (4,))
    with pytest.raises(whale.StateError, match="Graph is closed"):
        m.x.shape
    with pytest.raises(whale.StateError):
        m.g.session()
    # closing a context closes what depends on it, first
    m2 = mlp(ctx)
    s2 = m2.g.session(batch=8)
    c = whale.Cluster(ctx).add("CPU", 0, 1)
    ctx.close()
    assert s2.closed and m2.g.closed and c.closed and ctx.closed
    with pytest.raises(whale.StateError, match="Context is closed"):
        whale.Graph(ctx)
    with pytest.raises(whale.StateError):
        len(c)


def test_poisoned_graph_after_a_failed_build(ctx):
    g = whale.Graph(ctx)
    x = g.input("x", whale.f32, (whale.BATCH, 4))
    w = g.param("w", (3, 5))
    with pytest.raises(whale.ShapeError, match="matmul") as first:
        x @ w.T
    assert g.status == lib.WH_ERR_SHAPE and first.value.message in g.error
    with pytest.raises(whale.PoisonedError, match="earlier error.*matmul"):
        x.relu()
    with pytest.raises(whale.PoisonedError):
        g.session()
    with pytest.raises(whale.PoisonedError):
        g.backward(x)


def test_use_after_failed_calls(fed, ctx):
    m, s, xb, yb = fed
    fresh = m.g.session(batch=8)
    with pytest.raises(whale.StateError, match="not fed"):
        fresh.step()
    fresh.feed(m.x, xb)
    fresh.feed(m.y, yb)
    fresh.step()                    # fine after the refusal
    with pytest.raises(whale.StateError, match="not kept"):
        fresh.fetch(m.h)            # an intermediate not kept
    assert np.isfinite(float(fresh.fetch(m.loss)))
    with pytest.raises(whale.StateError, match="frozen"):
        m.g.input("more", whale.f32, (4,))   # sessions freeze their graph
    with pytest.raises(whale.InvalidArgumentError, match="not an input"):
        s.feed(m.params[0], np.zeros((16, 8), np.float32))
    with pytest.raises(whale.InvalidArgumentError) as e:
        s.set_batch(0)
    assert e.value.message == ctx.last_error != ""  # the exception carries wh_last_error
    s.step()


def test_values_of_another_graph_and_names(fed, ctx):
    m, s, xb, yb = fed
    other = whale.Graph(ctx)
    z = other.input("x", whale.f32, (whale.BATCH, 8))
    with pytest.raises(whale.InvalidArgumentError, match="another graph"):
        s.feed(z, xb)
    with pytest.raises(whale.InvalidArgumentError, match="another graph"):
        other.add(z, m.x)
    with pytest.raises(whale.NotFoundError, match="nope"):
        s.fetch("nope")
    with pytest.raises(TypeError):
        s.fetch(3.5)
    with pytest.raises(TypeError):
        other.param("p", (2,), init="zeros")


def test_files_and_options(ctx, tmp_path):
    with pytest.raises(whale.FileError, match="missing.pb"):
        whale.Graph.load(tmp_path / "missing.pb", ctx)
    bad = tmp_path / "bad.pb"
    bad.write_bytes(b"\xff\x00 not a graph")
    with pytest.raises(whale.CorruptError):
        whale.Graph.load(bad, ctx)
    js = tmp_path / "c.json"
    js.write_text('{"version": 1, "nodes": [{"devices": [{"kind": "NoSuchGPU", "count": 1}]}]}')
    with pytest.raises(whale.Error, match="NoSuchGPU"):
        whale.Cluster.load(js, ctx)
    with pytest.raises(whale.CorruptError):
        js.write_text("{ not json")
        whale.Cluster.load(js, ctx)
    m = mlp(ctx)
    with pytest.raises(whale.InvalidArgumentError, match="device"):
        m.g.session(device="tpu")
    with pytest.raises(whale.InvalidArgumentError, match="mode"):
        s = m.g.session(batch=8)
        s.run("sideways")
    with pytest.raises(whale.InvalidArgumentError, match="format"):
        m.g.dump("svg")
    with pytest.raises(whale.Error):
        whale.Cluster(ctx).add("NoSuchGPU")
    with pytest.raises(whale.Error):
        whale.Plan(m.g, whale.Cluster(ctx).add("CPU", 0, 2), global_batch=0)
