"""mpi_worker.py MODE OUT - one rank of test_mpi.py's runs under mpirun (tests/mpi/mpirun.sh).

MODE 'own': libwhale initialises MPI itself; 'mpi4py': the host (mpi4py) owns MPI and hands its
communicator over. Every rank trains the MLP of train() data-parallel over the ranks (the plan
pinned to one stage with equal shares), checks the communicator API, and checks that another
Python thread keeps running while a collective waits; rank 0 writes the results to OUT as JSON.
"""
import json
import sys
import threading
import time

import numpy as np

import whale

STEPS, B = 6, 8


def model(ctx):
    g = whale.Graph(ctx)
    x = g.input("x", whale.f32, (whale.BATCH, 8))
    y = g.input("y", whale.i32, (whale.BATCH,))
    w1 = g.param("fc1.w", (16, 8), whale.init.kaiming_uniform(seed=1))
    b1 = g.param("fc1.b", (16,), whale.init.zeros())
    w2 = g.param("fc2.w", (4, 16), whale.init.xavier_uniform(seed=2))
    b2 = g.param("fc2.b", (4,), whale.init.zeros())
    loss = g.cross_entropy(g.bias_add(g.bias_add(x @ w1.T, b1).relu() @ w2.T, b2), y)
    g.backward(loss)
    g.optimizer(whale.AdamW(lr=1e-2))
    return g, x, y, loss


def batches():
    """Three batches, twice over: step 4 sees step 1's batch again."""
    r = np.random.default_rng(7)
    three = [(r.standard_normal((B, 8)).astype(np.float32), r.integers(0, 4, B).astype(np.int32)) for _ in range(3)]
    return (three * 2)[:STEPS]


def train(ctx, comm=None):
    """Losses and final parameters of STEPS steps: on one process (comm None) or data parallel."""
    g, x, y, loss = model(ctx)
    if comm is None:
        s = g.session(batch=B)
    else:
        cl = whale.Cluster(ctx).add("CPU", 0, comm.size)
        plan = whale.Plan.pinned(g, cl, B, stages=1)
        s = whale.Session(g, plan=plan, comm=comm, rebalance=False)
    losses = []
    for xb, yb in batches():
        s.feed(x, xb)  # every rank feeds the global batch
        s.feed(y, yb)
        s.step()
        losses.append(float(s.fetch(loss)))
    if comm is not None and comm.size > 1:
        cs = s.comm_stats()
        assert cs.ops > 0 and cs.busy_s > 0, cs  # the gradients' all-reduces were counted
        assert s.shares() == ([B // comm.size] * comm.size, 0)  # the plan's shares, kept
    return losses, {p.name: s.get_param(p).tolist() for p in g.params}


def comm_api(comm):
    n, r = comm.size, comm.rank
    a = np.full(5, r + 1.0, np.float32)
    assert np.all(comm.allreduce(a.copy()) == n * (n + 1) / 2)
    out = np.empty(5, np.float32)
    comm.allreduce(a, out, op="avg")
    assert np.allclose(out, (n + 1) / 2)
    g = comm.allgather(np.array([r, r], np.int32))
    assert g.tolist() == [k for k in range(n) for _ in range(2)]
    b = np.arange(4, dtype=np.float64) if r == 0 else np.zeros(4)
    assert comm.broadcast(b, root=0).tolist() == [0.0, 1.0, 2.0, 3.0]
    rs = np.empty(2, np.float32)
    comm.reduce_scatter(np.ones(2 * n, np.float32), rs)
    assert rs.tolist() == [n, n]
    if n >= 2:
        if r == 0:
            comm.send(np.arange(3, dtype=np.int32), peer=1, tag=5)
        elif r == 1:
            got = comm.recv(np.empty(3, np.int32), peer=0, tag=5)
            assert got.tolist() == [0, 1, 2]
    req = comm.iallreduce(np.ones(3, np.float32))
    while not req.test():
        time.sleep(0.001)
    assert req.done and req.result.tolist() == [n] * 3
    assert comm.ibroadcast(np.full(2, r, np.int32), root=n - 1).wait().tolist() == [n - 1] * 2
    comm.ibarrier().wait()
    assert comm.iallgather(np.array([r], np.int32)).wait().tolist() == list(range(n))
    counts = [k + 1 for k in range(n)]  # rank k contributes k + 1 elements
    uneven = comm.allgather(np.full(r + 1, r, np.int32), counts=counts)
    assert uneven.tolist() == [k for k in range(n) for _ in range(k + 1)]
    assert comm.ireduce_scatter(np.ones(3 * n, np.float64), np.empty(3)).wait().tolist() == [n] * 3
    f = comm.fusion(bucket_bytes=16, op="sum")
    ts = [np.full(3, r + 1.0, np.float32), np.full(5, 1.0, np.float32)]
    for t in ts:
        f.add(t)
    f.poll()
    f.wait()
    assert ts[0].tolist() == [n * (n + 1) / 2] * 3 and ts[1].tolist() == [n] * 5 and f.buckets_started >= 1
    sub = comm.split([0])
    assert (sub is not None) == (r == 0)
    if sub is not None:
        assert sub.size == 1 and sub.rank == 0
        sub.close()
    try:
        comm.allreduce(np.zeros((4, 4), np.float32)[:, ::2])
        raise AssertionError("a non-contiguous buffer was accepted")
    except whale.InvalidArgumentError:
        pass
    comm.barrier()
    return True


def gil_during_collective(comm):
    """Rank 0 waits in an allreduce for rank 1, which comes 0.3 s late; a thread of rank 0 keeps
    counting meanwhile. Returns rank 0's count during the wait."""
    count = [0]
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            count[0] += 1

    comm.barrier()
    t = threading.Thread(target=spin, daemon=True)
    t.start()
    if comm.rank == 1:
        time.sleep(0.3)
    c0 = count[0]
    t0 = time.perf_counter()
    comm.allreduce(np.ones(4, np.float32))
    waited = time.perf_counter() - t0
    c1 = count[0]
    stop.set()
    t.join()
    return c1 - c0, waited


def main(mode, out):
    ctx = whale.Context(threads=1)
    if mode == "mpi4py":
        from mpi4py import MPI
        comm = whale.Comm(ctx, mpi_comm=MPI.COMM_WORLD)
        host = MPI.COMM_WORLD.Get_rank()
        assert host == comm.rank
    else:
        comm = whale.Comm(ctx, timeout=60)
    res = {"size": comm.size, "launch": whale.launch_detect()._asdict()}
    res["losses"], res["params"] = train(ctx, comm)
    res["comm_api"] = comm_api(comm)
    if comm.size >= 2:
        res["gil_count"], res["gil_wait_s"] = gil_during_collective(comm)
    if comm.rank == 0:
        with open(out, "w") as f:
            json.dump(res, f)
    ctx.close()  # the communicator, then the context (which finalises MPI in mode 'own')


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
