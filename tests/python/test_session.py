"""test_session.py - running graphs: zero-copy feeds (proved), steps and runs, fetches into new or
given arrays, batch rebinding, parameters, memory, profiles, dumps and files."""
import gc
import weakref

import numpy as np
import pytest

import whale
from conftest import batch_data, mlp
from whale._lib import ffi


def test_feed_is_zero_copy(ctx):
    """feed borrows the array: the session reads the caller's memory, so a change made to the array
    after feeding shows in the next run without feeding again."""
    m = mlp(ctx)
    s = m.g.session(batch=8)
    xb, yb = batch_data()
    s.feed(m.x, xb)
    s.feed(m.y, yb)
    # the pointer handed to C is the array's own data
    assert int(ffi.cast("uintptr_t", s._fed[m.x.id][1])) == xb.ctypes.data
    s.run("eval")
    before = s.fetch(m.logits)
    xb *= 3.0                      # in place, no feed
    s.run("eval")
    after = s.fetch(m.logits)
    assert not np.allclose(before, after)
    fresh = m.g.session(batch=8)
    fresh.feed(m.x, xb.copy())
    fresh.feed(m.y, yb)
    fresh.run("eval")
    np.testing.assert_array_equal(after, fresh.fetch(m.logits))


def test_fed_array_lives_until_fed_again(ctx):
    m = mlp(ctx)
    s = m.g.session(batch=8)
    xb, yb = batch_data()
    tmp = xb.copy()
    ref = weakref.ref(tmp)
    s.feed(m.x, tmp)
    del tmp
    gc.collect()
    assert ref() is not None       # the session holds it
    s.feed(m.y, yb)
    s.run("eval")
    np.testing.assert_array_equal(s.fetch(m.x), xb)
    s.feed(m.x, xb)                # fed again: the first array is let go
    gc.collect()
    assert ref() is None


def test_convert_only_when_asked(ctx):
    m = mlp(ctx)
    s = m.g.session(batch=8)
    xb, yb = batch_data()
    x64 = xb.astype(np.float64)
    with pytest.raises(whale.DtypeError):
        s.feed(m.x, x64)
    s.feed(m.x, x64, convert=True)          # a float32 copy, kept by the session
    s.feed(m.y, yb.tolist(), convert=True)  # lists too
    s.run("eval")
    np.testing.assert_array_equal(s.fetch(m.x), xb)
    x64 *= 2                                 # the copy does not follow the original
    np.testing.assert_array_equal(s.fetch(m.x), xb)
    s.feed({m.x: xb, "y": yb})               # several at once, by Value or by name
    s.step()


def test_fetch_new_and_into(ctx):
    m = mlp(ctx)
    s = m.g.session(batch=8)
    xb, yb = batch_data()
    s.feed(m.x, xb)
    s.feed(m.y, yb)
    s.step()
    loss = s.fetch(m.loss)
    assert loss.shape == () and loss.dtype == np.float32 and np.isfinite(float(loss))
    out = np.empty((8, 4), np.float32)
    got = s.fetch(m.logits, out=out)
    assert got is out
    np.testing.assert_array_equal(out, s.fetch(m.logits))
    assert s.fetch(m.params[0]).shape == (16, 8)
    assert s.fetch(m.params[0].grad).shape == (16, 8)
    assert s.steps == 1


def test_run_modes_and_steps(ctx):
    m = mlp(ctx)
    s = m.g.session(batch=8)
    xb, yb = batch_data()
    s.feed(m.x, xb)
    s.feed(m.y, yb)
    w0 = s.get_param(m.params[0])
    s.run("eval")
    s.run(whale.GRAD)
    np.testing.assert_array_equal(s.get_param(m.params[0]), w0)  # no update
    assert s.steps == 0
    losses = []
    for _ in range(20):
        s.step()
        losses.append(float(s.fetch(m.loss)))
    assert s.steps == 20 and losses[-1] < losses[0]
    assert not np.array_equal(s.get_param(m.params[0]), w0)


def test_set_batch_params_memory_profile_dump(ctx, tmp_path):
    m = mlp(ctx)
    s = m.g.session(batch=8)
    assert s.batch == 8 and not s.distributed
    s.set_batch(3)
    assert s.batch == 3
    xb, yb = batch_data(3)
    s.feed(m.x, xb)
    s.feed(m.y, yb)
    s.run("eval")
    assert s.fetch(m.logits).shape == (3, 4) and s.nbytes(m.logits) == 48
    w = np.full((16, 8), 0.25, np.float32)
    s.set_param(m.params[0], w)
    np.testing.assert_array_equal(s.get_param("fc1.w"), w)
    mem = s.memory()
    assert mem.param_bytes == 4 * (16 * 8 + 16 + 4 * 16 + 4) and mem.arena_bytes > 0
    s.profile(True)
    s.step()
    assert "matmul" in s.profile_report()
    s.profile(False)
    assert "matmul" in s.dump() and "digraph" in s.dump("dot")
    path = tmp_path / "trained.pb"
    s.save(path)
    g2 = whale.Graph.load(path, ctx)
    s2 = g2.session(batch=3)
    np.testing.assert_array_equal(s2.get_param("fc1.w"), s.get_param("fc1.w"))


def test_counters_shares_loss_scale_and_mixed_precision(ctx):
    m = mlp(ctx)
    s = m.g.session(batch=8)
    xb, yb = batch_data()
    s.feed(m.x, xb)
    s.feed(m.y, yb)
    s.step()
    cs = s.comm_stats(reset=True)
    assert (cs.busy_s, cs.exposed_s, cs.ops, cs.hidden) == (0, 0, 0, 0.0)  # no plan: no communication
    assert s.shares() == ([8], 0)
    assert s.loss_scale() == (1.0, 0)
    f32 = s.memory().saved_bytes
    assert f32 > 0
    for dt in (whale.bf16, whale.f16):
        mm = mlp(ctx)
        ms = mm.g.session(batch=8, mixed=dt)
        ms.feed(mm.x, xb)
        ms.feed(mm.y, yb)
        losses = []
        for _ in range(10):
            ms.step()
            losses.append(float(ms.fetch(mm.loss)))
        assert losses[-1] < losses[0] and ms.memory().saved_bytes < f32
        scale, skipped = ms.loss_scale()
        assert scale >= 1.0 and skipped >= 0 and (dt == whale.f16 or scale == 1.0)


def test_checkpoint_save_find_load(ctx, tmp_path):
    """5 steps, a checkpoint with the host's bytes, 5 more in a fresh session loaded from it: the
    same parameters as 10 uninterrupted, bit for bit; find reports it; an empty directory has none;
    a too small buffer for the host's bytes is refused by name."""
    m = mlp(ctx)
    xb, yb = batch_data()
    full = m.g.session(batch=8)
    full.feed(m.x, xb)
    full.feed(m.y, yb)
    for _ in range(10):
        full.step()
    a = m.g.session(batch=8)
    a.feed(m.x, xb)
    a.feed(m.y, yb)
    for _ in range(5):
        a.step()
    d = tmp_path / "ck"
    assert whale.checkpoint_find(tmp_path, ctx) is None
    a.checkpoint_save(d, meta=b"cursor=42")
    info = whale.checkpoint_find(d, ctx)
    assert info.step == 5 and info.ranks == 1 and info.meta_bytes == 9 and info.name.startswith("step-")
    b = m.g.session(batch=8)
    with pytest.raises(whale.Error, match="meta"):
        b.checkpoint_load(d, meta_cap=4)
    assert b.checkpoint_load(d) == b"cursor=42" and b.steps == 5
    b.feed(m.x, xb)
    b.feed(m.y, yb)
    for _ in range(5):
        b.step()
    for p in m.g.params:
        np.testing.assert_array_equal(b.get_param(p), full.get_param(p))
