"""test_install.py - `pip install ./python` into a venv builds the cffi module against this build's
libwhale and gives a package that trains with nothing else set (no PYTHONPATH, no
LD_LIBRARY_PATH). Offline: the venv sees Debian's cffi, numpy and setuptools
(--system-site-packages) and pip builds without an isolated environment."""
import os
import shutil
import subprocess
import sys

import pytest

import whale
from conftest import BUILD_DIR, SOURCE_DIR

SCRIPT = r"""
import numpy as np, os, sys, whale
assert whale.__file__.startswith(sys.prefix), whale.__file__
ctx = whale.Context(threads=1)
g = whale.Graph(ctx)
x = g.input("x", whale.f32, (whale.BATCH, 4))
w = g.param("w", (1, 4), whale.init.normal(0, 0.1, 1))
t = g.input("t", whale.f32, (whale.BATCH, 1))
loss = g.mse(x @ w.T, t)
g.backward(loss)
g.optimizer(whale.SGD(lr=0.1))
s = g.session(batch=2)
s.feed(x, np.ones((2, 4), np.float32))
s.feed(t, np.ones((2, 1), np.float32))
first = None
for _ in range(20):
    s.step()
    l = float(s.fetch(loss))
    first = l if first is None else first
assert l < first, (first, l)
print("installed", whale.__version__, whale.__file__)
"""


@pytest.mark.skipif(subprocess.run([sys.executable, "-c", "import venv, ensurepip"]).returncode != 0,
                    reason="python3-venv is not installed")
def test_pip_install_into_a_venv(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(os.path.join(SOURCE_DIR, "python"), src / "python",
                    ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", "meson.build"))
    shutil.copytree(os.path.join(SOURCE_DIR, "include"), src / "include")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=120)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LD_LIBRARY_PATH")}
    env["WHALE_BUILD_DIR"] = BUILD_DIR
    pip = subprocess.run([str(venv / "bin" / "pip"), "install", "--no-build-isolation", "--no-index",
                          "--no-deps", str(src / "python")], env=env, capture_output=True, text=True, timeout=600)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    env.pop("WHALE_BUILD_DIR")
    r = subprocess.run([str(venv / "bin" / "python"), "-c", SCRIPT], env=env, cwd=str(tmp_path),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "installed %s" % whale.__version__ in r.stdout


def test_package_version_is_libwhale_version():
    from whale import _version
    assert _version.VERSION == whale.version()
