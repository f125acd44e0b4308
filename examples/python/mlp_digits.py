#!/usr/bin/python3
"""mlp_digits.py - train a two-layer MLP on the handwritten-digits set (1797 8x8 images) shipped
with Debian's python3-sklearn, printing progress and the final test accuracy: the Python twin of
examples/mlp_digits.c (same data split, shuffles, graph, optimizer and schedule).

    PYTHONPATH=build/python /usr/bin/python3 examples/python/mlp_digits.py [digits.csv.gz] [epochs]
"""
import gzip
import sys
import time

import numpy as np

import whale

DEFAULT_PATH = "/usr/lib/python3/dist-packages/sklearn/datasets/data/digits.csv.gz"
NPIX, NCLASS, HIDDEN, BATCH = 64, 10, 128, 64
MASK = (1 << 64) - 1


class XorShift:
    """mlp_digits.c's generator: xorshift64, 32 bits taken from bit 16 up."""

    def __init__(self, seed=0x5EED):
        self.s = seed

    def u32(self):
        s = self.s
        s ^= (s << 13) & MASK
        s ^= s >> 7
        s ^= (s << 17) & MASK
        self.s = s
        return (s >> 16) & 0xFFFFFFFF

    def shuffle(self, idx, n):
        for i in range(n - 1, 0, -1):
            j = self.u32() % (i + 1)
            idx[i], idx[j] = idx[j], idx[i]


def load_digits(path):
    xs, ys = [], []
    with gzip.open(path, "rt") as f:
        for line in f:
            try:
                v = [float(t) for t in line.replace(",", " ").split()]
            except ValueError:
                continue
            if len(v) != NPIX + 1:
                continue  # blank or malformed line
            xs.append(v[:NPIX])
            ys.append(int(v[NPIX]))
    return np.asarray(xs, np.float32) / np.float32(16.0), np.asarray(ys, np.int32)


def main(argv):
    path = argv[1] if len(argv) > 1 else DEFAULT_PATH
    epochs = int(argv[2]) if len(argv) > 2 else 40
    try:
        all_x, all_y = load_digits(path)
    except OSError:
        print("cannot read the digits data at %s (Debian package python3-sklearn)" % path, file=sys.stderr)
        return 1
    # fixed split: shuffle once with a fixed seed, 80% train / 20% test
    rng = XorShift()
    order = list(range(len(all_y)))
    rng.shuffle(order, len(order))
    ntest = len(order) // 5
    ntrain = len(order) - ntest
    test_idx = np.asarray(order[ntrain:])
    test_x, test_y = np.ascontiguousarray(all_x[test_idx]), np.ascontiguousarray(all_y[test_idx])

    ctx = whale.Context()
    print("libwhale %s [%s], %d threads" % (whale.version(), whale.build_info(), ctx.threads))
    print("digits: %d images (%d train, %d test) from %s" % (len(all_y), ntrain, ntest, path))

    g = whale.Graph(ctx)
    x = g.input("x", whale.f32, (whale.BATCH, NPIX))
    y = g.input("labels", whale.i32, (whale.BATCH,))
    w1 = g.param("fc1.w", (HIDDEN, NPIX), whale.init.kaiming_uniform(seed=1))
    b1 = g.param("fc1.b", (HIDDEN,), whale.init.zeros())
    w2 = g.param("fc2.w", (NCLASS, HIDDEN), whale.init.xavier_uniform(seed=2))
    b2 = g.param("fc2.b", (NCLASS,), whale.init.zeros())
    h = g.bias_add(x @ w1.T, b1).relu()
    logits = g.bias_add(h @ w2.T, b2).keep()
    loss = g.cross_entropy(logits, y)
    g.backward(loss)
    steps_per_epoch = ntrain // BATCH
    g.optimizer(whale.AdamW(lr=whale.WarmupCosine(5e-3, steps_per_epoch, steps_per_epoch * epochs, 1e-4),
                            weight_decay=1e-4))

    s = g.session(batch=BATCH)
    m = s.memory()
    print("graph: %d values, %d nodes; memory plan: arena %d bytes for %d intermediates totalling %d bytes"
          % (g.num_values, g.num_nodes, m.arena_bytes, m.num_intermediates, m.intermediate_bytes))
    t0 = time.monotonic()
    acc = 0.0
    for ep in range(1, epochs + 1):
        rng.shuffle(order, ntrain)
        total = 0.0
        for b in range(steps_per_epoch):
            idx = order[b * BATCH:(b + 1) * BATCH]
            s.feed(x, all_x[idx])   # fancy indexing makes a fresh C-contiguous batch: fed as is
            s.feed(y, all_y[idx])
            s.step()
            total += float(s.fetch(loss))
        if ep % 5 == 0 or ep == 1 or ep == epochs:
            s.set_batch(ntest)
            s.feed(x, test_x)
            s.feed(y, test_y)
            s.run("eval")
            acc = float(np.mean(np.argmax(s.fetch(logits), axis=1) == test_y))
            print("epoch %3d  step %5d  train loss %.4f  test accuracy %.2f%%  (%.2f s)"
                  % (ep, s.steps, total / steps_per_epoch, 100.0 * acc, time.monotonic() - t0), flush=True)
            s.set_batch(BATCH)
    print("final test accuracy: %.2f%% after %d epochs in %.2f s" % (100.0 * acc, epochs, time.monotonic() - t0))
    return 0 if acc >= 0.95 else 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
