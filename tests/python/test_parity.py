"""test_parity.py - an MLP built and trained from Python matches PyTorch: the loss, every gradient,
and the losses and parameters of several SGD (momentum, weight decay) and AdamW steps."""
import numpy as np
import pytest

import whale

torch = pytest.importorskip("torch")

B, IN, H, OUT = 16, 12, 32, 5


def weights(seed=0):
    r = np.random.default_rng(seed)
    return [(r.standard_normal((H, IN)) * 0.3).astype(np.float32), (r.standard_normal(H) * 0.1).astype(np.float32),
            (r.standard_normal((OUT, H)) * 0.3).astype(np.float32), (r.standard_normal(OUT) * 0.1).astype(np.float32)]


def data(seed=1, steps=6):
    r = np.random.default_rng(seed)
    return [(r.standard_normal((B, IN)).astype(np.float32), r.integers(0, OUT, B).astype(np.int32))
            for _ in range(steps)]


def whale_run(opt, ws, batches):
    ctx = whale.Context(threads=1)
    g = whale.Graph(ctx)
    x = g.input("x", whale.f32, (whale.BATCH, IN))
    y = g.input("y", whale.i32, (whale.BATCH,))
    ps = [g.param("fc1.w", (H, IN)), g.param("fc1.b", (H,)), g.param("fc2.w", (OUT, H)), g.param("fc2.b", (OUT,))]
    h = g.bias_add(x @ ps[0].T, ps[1]).relu()
    loss = g.cross_entropy(g.bias_add(h @ ps[2].T, ps[3]), y)
    g.backward(loss)
    g.optimizer(opt)
    s = g.session(batch=B)
    for p, w in zip(ps, ws):
        s.set_param(p, w)
    s.feed(x, batches[0][0])
    s.feed(y, batches[0][1])
    s.run("grad")
    grads = [s.fetch(p.grad) for p in ps]
    losses = []
    for xb, yb in batches:
        s.feed(x, xb)
        s.feed(y, yb)
        s.step()
        losses.append(float(s.fetch(loss)))
    return grads, losses, [s.get_param(p) for p in ps]


def torch_run(make_opt, ws, batches):
    torch.manual_seed(0)
    ps = [torch.tensor(w, requires_grad=True) for w in ws]

    def fwd(xb, yb):
        h = torch.relu(torch.from_numpy(xb) @ ps[0].T + ps[1])
        return torch.nn.functional.cross_entropy(h @ ps[2].T + ps[3], torch.from_numpy(yb).long())

    loss = fwd(*batches[0])
    loss.backward()
    grads = [p.grad.detach().numpy().copy() for p in ps]
    for p in ps:
        p.grad = None
    opt = make_opt(ps)
    losses = []
    for xb, yb in batches:
        opt.zero_grad()
        loss = fwd(xb, yb)
        loss.backward()
        opt.step()
        losses.append(float(loss))
    return grads, losses, [p.detach().numpy() for p in ps]


CASES = {
    "sgd_momentum_wd": (whale.SGD(lr=0.1, momentum=0.9, weight_decay=1e-3),
                        lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=1e-3)),
    "sgd_nesterov": (whale.SGD(lr=0.05, momentum=0.8, nesterov=True),
                     lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.8, nesterov=True)),
    "adamw": (whale.AdamW(lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1),
              lambda ps: torch.optim.AdamW(ps, lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_mlp_matches_pytorch(case):
    ws, batches = weights(), data()
    wopt, topt = CASES[case]
    wg, wl, wp = whale_run(wopt, ws, batches)
    tg, tl, tp = torch_run(topt, ws, batches)
    for a, b in zip(wg, tg):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(wl, tl, rtol=1e-5, atol=1e-6)
    for a, b in zip(wp, tp):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert wl[-1] < wl[0]
