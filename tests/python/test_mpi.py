"""test_mpi.py - the package under mpirun: a 2-rank data-parallel run equals one process, with
libwhale's own MPI and with an mpi4py communicator (the host owning MPI); the communicator API on
numpy arrays; the GIL released while a collective waits. Every run is bounded by
tests/mpi/mpirun.sh's timeout."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import whale
from conftest import SOURCE_DIR

HERE = os.path.dirname(os.path.abspath(__file__))
MPIRUN_SH = os.path.join(SOURCE_DIR, "tests", "mpi", "mpirun.sh")

pytestmark = pytest.mark.skipif(shutil.which("mpirun") is None or "mpi(" not in whale.build_info(),
                                reason="no mpirun, or libwhale built without MPI")


def run_ranks(np_, mode, tmp_path):
    out = tmp_path / ("result_%s_np%d.json" % (mode, np_))
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OPENBLAS_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path))
    r = subprocess.run(["bash", MPIRUN_SH, str(np_), "120", sys.executable, os.path.join(HERE, "mpi_worker.py"),
                        mode, str(out)], env=env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, "mpirun failed (%d):\n%s\n%s" % (r.returncode, r.stdout, r.stderr)
    with open(out) as f:
        return json.load(f)


def one_process():
    sys.path.insert(0, HERE)
    import mpi_worker
    ctx = whale.Context(threads=1)
    try:
        return mpi_worker.train(ctx)
    finally:
        ctx.close()


MODES = ["own", "mpi4py"]


@pytest.mark.parametrize("mode", MODES)
def test_two_ranks_data_parallel_equal_one(mode, tmp_path):
    if mode == "mpi4py":
        pytest.importorskip("mpi4py")
    ref_losses, ref_params = one_process()
    res = run_ranks(2, mode, tmp_path)
    assert res["size"] == 2 and res["launch"]["launcher"] == "openmpi"
    np.testing.assert_allclose(res["losses"], ref_losses, rtol=1e-5, atol=1e-6)
    assert res["losses"][3] < res["losses"][0]  # the same batch, after three steps of training
    for name, v in ref_params.items():
        np.testing.assert_allclose(res["params"][name], v, rtol=1e-4, atol=1e-6, err_msg=name)
    assert res["comm_api"] is True
    # rank 0 waited ~0.3 s for rank 1 inside allreduce while its other thread kept counting
    assert res["gil_wait_s"] > 0.1 and res["gil_count"] > 1000, res


def test_one_rank_under_mpirun(tmp_path):
    res = run_ranks(1, "own", tmp_path)
    ref_losses, _ = one_process()
    np.testing.assert_allclose(res["losses"], ref_losses, rtol=1e-6, atol=1e-7)
