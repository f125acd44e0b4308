"""test_graph.py - building graphs from Python: leaves, operators, ops, hint scopes, autodiff,
optimizers, inspection, dumps and files."""
import numpy as np
import pytest

import whale
from whale._lib import ffi, lib


def test_leaves_shapes_and_names(ctx):
    g = whale.Graph(ctx)
    x = g.input("x", whale.f32, (whale.BATCH, 3, 5))
    assert x.shape == (whale.BATCH, 3, 5) and x.dtype is whale.f32 and x.name == "x" and x.ndim == 3
    assert repr(x.shape[0]) == "BATCH"
    flat = x.reshape(whale.BATCH * 3, 5)
    assert flat.shape == (whale.BATCH * 3, 5) and flat.shape[0].k == 3 and int(flat.shape[0]) == -3
    assert whale.batch_times(3) == whale.BATCH * 3 == 3 * whale.BATCH
    w = g.param("w", (4, 5), whale.init.normal(0, 0.1, seed=3))
    c = g.constant("c", np.arange(6, dtype=np.float32).reshape(2, 3))
    assert c.shape == (2, 3) and c.dtype is whale.f32
    i = g.constant("i", np.arange(3, dtype=np.int32))
    assert i.dtype is whale.i32
    assert g.find("w") == w and g["x"] == x
    assert g.params == [w]
    flat.name = "flat"
    assert g.find("flat") == flat and flat.name == "flat"
    assert g.value(w.id) == w and {w: 1}[g.find("w")] == 1


def test_operators_build_the_ops(ctx):
    g = whale.Graph(ctx)
    a = g.input("a", whale.f32, (whale.BATCH, 4))
    b = g.input("b", whale.f32, (whale.BATCH, 4))
    w = g.param("w", (3, 4))
    n = g.num_nodes
    y = a @ w.T                      # folds into matmul's trans_b: one node, no transpose
    assert y.shape == (whale.BATCH, 3) and g.num_nodes == n + 1
    assert (a + b).shape == (whale.BATCH, 4)
    assert (a - 1.0).shape == (whale.BATCH, 4)
    assert (2.0 * a).shape == (a * 2).shape == (a / 2.0).shape == (1.0 / a).shape == (-a).shape
    assert (a * b).shape == (a / b).shape == (whale.BATCH, 4)
    assert (np.float32(2) * a).shape == (np.int64(1) + a).shape == (whale.BATCH, 4)  # numpy scalars too
    with pytest.raises(TypeError, match="g.constant|whale.Value"):
        np.ones(4, np.float32) + a
    assert a[:, 1:3].shape == (whale.BATCH, 2) and a[..., -1:].shape == (whale.BATCH, 1)
    t = w.T                          # anywhere else it is a transpose node
    assert (t + 0.0).shape == (4, 3)
    text = g.dump()
    assert "matmul" in text and "permute" in text
    assert "digraph" in g.dot()
    with pytest.raises(IndexError):
        a[0]
    with pytest.raises(IndexError):
        a[1:2]  # the batch axis


def test_every_op_from_python(ctx):
    g = whale.Graph(ctx)
    x = g.input("x", whale.f32, (whale.BATCH, 6))
    lab = g.input("lab", whale.i32, (whale.BATCH,))
    for f in ("relu", "gelu", "tanh", "sigmoid", "exp", "log", "softmax", "log_softmax"):
        assert getattr(x, f)().shape == (whale.BATCH, 6)
    assert x.sum().shape == () and x.mean(1).shape == (whale.BATCH,) and x.sum(1, keepdims=True).shape == (whale.BATCH, 1)
    assert x.transpose(0, 1).shape == (6, whale.BATCH) and x.permute(1, 0).shape == (6, whale.BATCH)
    assert g.concat([x, x], axis=1).shape == (whale.BATCH, 12)
    assert g.slice(x, 1, 0, 2).shape == (whale.BATCH, 2)
    assert g.scale(x, 3).shape == (whale.BATCH, 6)
    assert g.dropout(x, 0.1, seed=1).shape == (whale.BATCH, 6)
    assert g.mse(x, x).shape == ()
    assert g.cross_entropy(x, lab).shape == ()
    tab = g.param("tab", (10, 4))
    idx = g.input("idx", whale.i32, (whale.BATCH, 3))
    assert g.embedding(tab, idx).shape == (whale.BATCH, 3, 4)
    img = g.input("img", whale.f32, (whale.BATCH, 2, 8, 8))
    k = g.param("k", (3, 2, 3, 3))
    conv = g.conv2d(img, k, stride=1, padding=1)
    assert conv.shape == (whale.BATCH, 3, 8, 8)
    assert g.max_pool2d(conv, 2).shape == g.avg_pool2d(conv, 2).shape == (whale.BATCH, 3, 4, 4)
    seq = g.input("seq", whale.f32, (whale.BATCH, 5, 8))
    gam, bet = g.param("g", (8,), whale.init.ones()), g.param("b", (8,))
    assert g.layernorm(seq, gam, bet).shape == (whale.BATCH, 5, 8)
    qkv = g.input("qkv", whale.f32, (whale.BATCH, 5, 24))
    assert g.attention(qkv, 2).shape == (whale.BATCH, 5, 8)
    assert g.status == 0 and g.error == ""


def test_hint_scopes_are_context_managers(ctx):
    g = whale.Graph(ctx)
    x = g.input("x", whale.f32, (whale.BATCH, 4))
    with g.replicate(2):
        a = x.relu()
        with g.split(4):
            b = a.tanh()
    with g.stage():
        c = b.exp()
    with g.stage(), g.recompute():
        d = c.sigmoid()
    assert a.hints == [("replicate", 2)]
    assert b.hints == [("replicate", 2), ("split", 4)]
    assert c.hints == [("stage", 0)]
    assert d.hints == [("stage", 1), ("recompute", 1)]
    assert x.relu().hints == []
    assert g.pipeline == 0
    g.pipeline = 4
    assert g.pipeline == 4
    g.set_pipeline(2)
    assert g.pipeline == 2


def test_backward_grad_and_optimizers(ctx):
    from conftest import mlp
    m = mlp(ctx)
    for p in m.params:
        assert p.grad is not None and p.grad.shape == p.shape and m.g.grad(p) == p.grad
    assert m.h.grad is not None and m.h.grad.shape == m.h.shape  # so do activations on the path
    assert m.x.grad is None  # inputs have none
    for opt in (whale.SGD(lr=whale.WarmupCosine(0.1, 2, 10, 0.01), momentum=0.9, nesterov=True, weight_decay=1e-4,
                          clip_norm=1.0),
                whale.AdamW(lr=whale.ConstantLR(1e-3), betas=(0.8, 0.9), eps=1e-6, clip_norm=0.5)):
        mm = mlp(ctx, opt=opt)
        assert "optimizer=yes" in mm.g.dump()


def test_python_defaults_are_the_c_initializers():
    """The optimizers' keyword defaults are WH_SGD_OPTIONS_INIT's and WH_ADAMW_OPTIONS_INIT's."""
    import inspect
    sgd, adamw = lib.whpy_wh_sgd_options_init(), lib.whpy_wh_adamw_options_init()
    ps = inspect.signature(whale.SGD).parameters
    assert np.float32(ps["lr"].default) == np.float32(sgd.lr.lr)
    assert ps["momentum"].default == sgd.momentum and ps["weight_decay"].default == sgd.weight_decay
    assert ps["nesterov"].default == bool(sgd.nesterov) and ps["clip_norm"].default == sgd.clip_norm
    pa = inspect.signature(whale.AdamW).parameters
    assert np.float32(pa["lr"].default) == np.float32(adamw.lr.lr)
    assert tuple(np.float32(b) for b in pa["betas"].default) == (np.float32(adamw.beta1), np.float32(adamw.beta2))
    assert np.float32(pa["eps"].default) == np.float32(adamw.eps)
    assert np.float32(pa["weight_decay"].default) == np.float32(adamw.weight_decay)


def test_save_load_round_trip(ctx, tmp_path):
    from conftest import mlp
    m = mlp(ctx)
    path = tmp_path / "g.pb"
    m.g.save(path)
    g2 = whale.Graph.load(path, ctx)
    assert g2.num_values == m.g.num_values and g2.num_nodes == m.g.num_nodes
    assert [p.name for p in g2.params] == [p.name for p in m.params]
    assert g2.dump() == m.g.dump()


def test_dtypes_and_versions():
    assert whale.as_dtype("float32") is whale.f32 and whale.as_dtype(np.int32) is whale.i32
    assert whale.f64.numpy == np.float64 and whale.bf16.itemsize == 2
    with pytest.raises(TypeError):
        whale.as_dtype("complex64")
    assert whale.version() == whale.__version__ == "%d.%d.%d" % (lib.WH_VERSION_MAJOR, lib.WH_VERSION_MINOR,
                                                                   lib.WH_VERSION_PATCH)
    assert "cpu" in whale.build_info()
    assert whale.cuda_device_count() >= 0
    assert whale.NONE == -1 and whale.MAX_DIMS == 8


def test_every_public_name_has_a_docstring():
    import inspect
    missing = []
    for name in whale.__all__:
        obj = getattr(whale, name)
        if inspect.ismodule(obj) or not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        if not inspect.getdoc(obj):
            missing.append(name)
        if inspect.isclass(obj):
            for k, v in vars(obj).items():
                if k.startswith("_") or not (inspect.isfunction(v) or isinstance(v, (property, classmethod))):
                    continue
                if not inspect.getdoc(v.__func__ if isinstance(v, classmethod) else v):
                    missing.append("%s.%s" % (name, k))
    for k, v in vars(whale.init).items():
        if inspect.isfunction(v) and not k.startswith("_") and not v.__doc__:
            missing.append("init." + k)
    assert not missing, "no docstring: %s" % ", ".join(missing)
    assert "training step" in whale.Session.step.__doc__
