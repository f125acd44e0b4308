"""conftest.py - what every Python test file shares: the package from the build tree (meson's test
environment puts build/python on PYTHONPATH), the paths of the build and of the sources, and a
context per test."""
import os
import sys

import pytest

SOURCE_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD_DIR = os.environ.get("WHALE_BUILD_DIR", os.path.join(SOURCE_DIR, "build"))
EXAMPLES = os.path.join(SOURCE_DIR, "examples", "python")
for p in (os.path.join(BUILD_DIR, "python"), EXAMPLES):
    if p not in sys.path:
        sys.path.insert(0, p)


@pytest.fixture
def ctx():
    import whale
    c = whale.Context(threads=1)
    yield c
    c.close()


def mlp(ctx, batch=None, hidden=16, n_in=8, n_out=4, opt=None, keep_logits=True):
    """A small two-layer MLP with its inputs, loss and logits (a namespace), trained by opt."""
    import whale
    g = whale.Graph(ctx)
    x = g.input("x", whale.f32, (whale.BATCH, n_in))
    y = g.input("y", whale.i32, (whale.BATCH,))
    w1 = g.param("fc1.w", (hidden, n_in), whale.init.kaiming_uniform(seed=1))
    b1 = g.param("fc1.b", (hidden,), whale.init.zeros())
    w2 = g.param("fc2.w", (n_out, hidden), whale.init.xavier_uniform(seed=2))
    b2 = g.param("fc2.b", (n_out,), whale.init.zeros())
    h = g.bias_add(x @ w1.T, b1).relu()
    logits = g.bias_add(h @ w2.T, b2)
    if keep_logits:
        logits.keep()
    loss = g.cross_entropy(logits, y)
    g.backward(loss)
    g.optimizer(opt if opt is not None else whale.SGD(lr=0.1))

    class M:
        pass
    m = M()
    m.g, m.x, m.y, m.logits, m.loss, m.h = g, x, y, logits, loss, h
    m.params = [w1, b1, w2, b2]
    return m


def batch_data(batch=8, n_in=8, n_out=4, seed=0):
    import numpy as np
    r = np.random.default_rng(seed)
    return (r.standard_normal((batch, n_in)).astype(np.float32),
            r.integers(0, n_out, batch).astype(np.int32))
