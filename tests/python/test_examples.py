"""test_examples.py - the Python examples run and agree with their C twins: the digits MLP prints
what examples/mlp_digits.c prints, and the fortunes GPT auto-planned over 2 ranks under mpirun
gives the C example's losses to 1e-6 for the same seed and plan."""
import os
import re
import shutil
import subprocess
import sys

import pytest

import whale
from conftest import BUILD_DIR, EXAMPLES, SOURCE_DIR

DIGITS = "/usr/lib/python3/dist-packages/sklearn/datasets/data/digits.csv.gz"
FORTUNES = "/usr/share/games/fortunes"
MPIRUN_SH = os.path.join(SOURCE_DIR, "tests", "mpi", "mpirun.sh")
# the arguments of the C example's own test (tests/meson.build)
GPT_ARGS = ["--layers", "2", "--width", "64", "--context", "32", "--batch", "8", "--steps", "150",
            "--eval-every", "50", "--sample", "40", "--recompute", "1"]


def env():
    return dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
                OPENBLAS_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path))


def run(cmd, timeout=300, ok=(0,)):
    r = subprocess.run(cmd, env=env(), capture_output=True, timeout=timeout)
    assert r.returncode in ok, "%s exited %d:\n%s\n%s" % (cmd, r.returncode, r.stdout.decode(errors="replace"),
                                                         r.stderr.decode(errors="replace"))
    return r.stdout.decode("latin-1")


def untimed(text):
    """The output without what depends on the clock (seconds, tokens/s, the cost model's error, the
    communication's timing)."""
    text = re.sub(r"\(\d+\.\d+ s\)|in \d+\.\d+ s|\d+ tokens/s", "", text)
    return [l for l in text.splitlines()
            if not l.startswith(("cost model:", "RESULT costmodel", "communication (rank 0)", "RESULT comm_hidden"))]


@pytest.mark.skipif(not os.path.exists(DIGITS), reason="no digits data (python3-sklearn)")
def test_mlp_digits_matches_c():
    c = run([os.path.join(BUILD_DIR, "examples", "mlp_digits"), DIGITS, "40"])
    py = run([sys.executable, os.path.join(EXAMPLES, "mlp_digits.py"), DIGITS, "40"])
    assert untimed(py) == untimed(c)
    assert "final test accuracy" in py


def read_log(path):
    rows = []
    with open(path) as f:
        for line in f:
            kind, step, value = line.split()
            rows.append((kind, int(step), float(value)))
    return rows


@pytest.mark.skipif(not os.path.isdir(FORTUNES) or shutil.which("mpirun") is None, reason="no fortunes or mpirun")
def test_gpt_text_two_ranks_matches_c(tmp_path):
    cluster = tmp_path / "two_cpus.json"
    whale.Cluster().add("CPU", 0, 2).set_links(5e9, 5e-6, 5e9, 5e-6).save(cluster)
    # the same plan for both: a fixed cluster, and the plan's shares kept (no rebalancing by timing)
    args = GPT_ARGS + ["--cluster", str(cluster), "--rebalance", "0"]
    c_log, py_log = tmp_path / "c.log", tmp_path / "py.log"
    c = run(["bash", MPIRUN_SH, "2", "240", os.path.join(BUILD_DIR, "examples", "gpt_text")] + args
            + ["--loss-log", str(c_log)])
    py = run(["bash", MPIRUN_SH, "2", "240", sys.executable, os.path.join(EXAMPLES, "gpt_text.py")] + args
             + ["--loss-log", str(py_log)])
    cl, pl = read_log(c_log), read_log(py_log)
    assert len(cl) == 150 + 4 and [r[:2] for r in pl] == [r[:2] for r in cl]
    worst = max(abs(a[2] - b[2]) for a, b in zip(cl, pl))
    print("largest loss difference, Python against C, over %d losses: %g" % (len(cl), worst))
    assert worst <= 1e-6
    assert untimed(py) == untimed(c)  # the plan, the losses printed, the sample
    assert "2 ranks" in py and "sample:" in py


@pytest.mark.skipif(not os.path.isdir(FORTUNES) or shutil.which("mpirun") is None, reason="no fortunes or mpirun")
def test_gpt_text_probes_and_plans_itself():
    out = run(["bash", MPIRUN_SH, "2", "240", sys.executable, os.path.join(EXAMPLES, "gpt_text.py")] + GPT_ARGS)
    assert "probed:" in out and "calibration:" in out and "final validation loss" in out


@pytest.mark.skipif(not os.path.isdir(FORTUNES), reason="no fortunes")
def test_gpt_text_one_process():
    out = run([sys.executable, os.path.join(EXAMPLES, "gpt_text.py"), "--steps", "20", "--eval-every", "10",
               "--layers", "1", "--width", "32", "--context", "16", "--sample", "10"], ok=(0, 3))
    assert "step    20" in out and "sample:" in out


@pytest.mark.skipif(not os.path.isdir(FORTUNES), reason="no fortunes")
def test_gpt_text_resumes_from_the_c_checkpoint(tmp_path):
    """The C example stops at step 10 of 20 and saves; the Python one resumes from it and trains steps 11..20 to
    the losses of the C example's uninterrupted 20 steps (the sampler's position rides along)."""
    args = ["--layers", "1", "--width", "32", "--context", "16", "--batch", "4", "--eval-every", "10",
            "--sample", "0"]
    gpt_c = os.path.join(BUILD_DIR, "examples", "gpt_text")
    ck, full_log, c_log, py_log = tmp_path / "ck", tmp_path / "full.log", tmp_path / "c.log", tmp_path / "py.log"
    ok = (0, 3)  # 3: a run this short does not beat the unigram baseline
    run([gpt_c] + args + ["--steps", "20", "--loss-log", str(full_log)], ok=ok)
    run([gpt_c] + args + ["--steps", "20", "--stop-at", "10", "--checkpoint", str(ck), "--loss-log", str(c_log)],
        ok=ok)
    info = whale.checkpoint_find(ck)
    assert info is not None and info.step == 10 and info.ranks == 1 and info.meta_bytes == 8
    out = run([sys.executable, os.path.join(EXAMPLES, "gpt_text.py")] + args
              + ["--steps", "20", "--checkpoint", str(ck), "--loss-log", str(py_log)], ok=ok)
    assert "resumed from" in out and "at step 10" in out
    full = {(k, s): v for k, s, v in read_log(full_log)}
    resumed = [r for r in read_log(py_log) if r[0] == "train"]
    assert [r[1] for r in resumed] == list(range(11, 21))
    worst = max(abs(v - full[("train", s)]) for _, s, v in resumed)
    print("steps 11..20 resumed in Python from C's checkpoint against C uninterrupted: largest difference %g" % worst)
    assert worst <= 1e-6
    assert whale.checkpoint_find(ck).step == 20
