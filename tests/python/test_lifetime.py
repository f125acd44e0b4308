"""test_lifetime.py - handles are released through ffi.gc in the right order: a session keeps its
graph and context alive, reference cycles free in dependency order, and a thousand graphs and
sessions created and dropped leave the resident memory flat."""
import gc
import weakref

import numpy as np

import whale
from conftest import batch_data, mlp


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def one_round(ctx, xb, yb):
    m = mlp(ctx)
    s = m.g.session(batch=8)
    s.feed(m.x, xb)
    s.feed(m.y, yb)
    s.step()
    return float(s.fetch(m.loss))


def test_session_keeps_graph_and_context_alive():
    xb, yb = batch_data()

    def make():
        ctx = whale.Context(threads=1)
        m = mlp(ctx)
        s = m.g.session(batch=8)
        return s, m.x, m.y, m.loss, weakref.ref(ctx), weakref.ref(m.g)

    s, x, y, loss, ctx_ref, g_ref = make()
    gc.collect()
    assert ctx_ref() is not None and g_ref() is not None  # held by the session (and the values)
    s.feed(x, xb)
    s.feed(y, yb)
    s.step()
    assert np.isfinite(float(s.fetch(loss)))
    del s, x, y, loss
    gc.collect()
    assert ctx_ref() is None and g_ref() is None


def test_cycles_free_in_dependency_order():
    """Wrappers caught in a reference cycle are freed by the collector in an arbitrary order; the
    C handles still go session, graph, context (a wrong order would crash or show in valgrind)."""
    xb, yb = batch_data()
    for _ in range(50):
        ctx = whale.Context(threads=1)
        m = mlp(ctx)
        s = m.g.session(batch=8)
        s.feed(m.x, xb)
        s.feed(m.y, yb)
        s.step()
        box = {"s": s, "g": m.g, "ctx": ctx}
        box["self"] = box
        ctx.cycle = box
        s.cycle = box
        del ctx, m, s, box
        gc.collect()


def test_thousand_graphs_and_sessions_memory_flat():
    ctx = whale.Context(threads=1)
    xb, yb = batch_data()
    for _ in range(100):  # warm up the allocator and the caches
        one_round(ctx, xb, yb)
    gc.collect()
    before = rss_bytes()
    for i in range(1000):
        one_round(ctx, xb, yb)
        if i % 100 == 99:
            gc.collect()
    gc.collect()
    grown = rss_bytes() - before
    print("RSS after 1000 graphs and sessions: %+d KiB" % (grown // 1024))
    assert grown < 2 << 20, "resident memory grew by %d KiB over 1000 graphs and sessions" % (grown // 1024)


def test_contexts_created_and_dropped_memory_flat():
    for _ in range(20):
        whale.Context(threads=2).close()
    gc.collect()
    before = rss_bytes()
    for _ in range(200):
        c = whale.Context(threads=2)
        whale.Graph(c).input("x", whale.f32, (4,))
        del c
    gc.collect()
    grown = rss_bytes() - before
    assert grown < 2 << 20, "resident memory grew by %d KiB over 200 contexts" % (grown // 1024)


def test_close_order_by_hand():
    ctx = whale.Context(threads=1)
    m = mlp(ctx)
    s = m.g.session(batch=8)
    cl = whale.Cluster(ctx).add("CPU", 0, 2)
    p = whale.Plan(m.g, cl, 8, stages=1)
    m.g.close()                  # takes its sessions with it
    assert s.closed and not p.closed and not cl.closed
    p.close()
    cl.close()
    with ctx:
        pass
    assert ctx.closed
