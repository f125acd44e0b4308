#!/usr/bin/python3
"""run_parity.py - meson's driver for one parity test: writes the PyTorch reference dumps into a
temporary directory (torch_ref.generate) and runs `PARITY_BINARY MODEL DUMP`, relaying its output
and exit code. Exits 77 (meson's "skip") when torch cannot be imported.

Usage: /usr/bin/python3 run_parity.py PARITY_BINARY MODEL
"""
import os
import subprocess
import sys
import tempfile

TIMEOUT_S = 120


def main(argv):
    if len(argv) != 3:
        sys.stderr.write("usage: run_parity.py PARITY_BINARY MODEL\n")
        return 2
    binary, model = argv[1], argv[2]
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    try:
        import torch_ref  # imports torch and numpy
    except ImportError as e:
        print("SKIP parity %s: cannot import the PyTorch reference (%s) under %s"
              % (model, e, sys.executable))
        return 77
    if model not in torch_ref.MODELS:
        sys.stderr.write("run_parity.py: unknown model %r (have %s)\n"
                         % (model, ", ".join(sorted(torch_ref.MODELS))))
        return 2
    with tempfile.TemporaryDirectory(prefix="whale-parity-") as tmp:
        paths = torch_ref.generate(tmp)
        sys.stdout.flush()
        try:
            proc = subprocess.run([binary, model, paths[model]], stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired as e:
            sys.stdout.write((e.stdout or b"").decode(errors="replace"))
            print("FAIL parity %s: %s did not finish within %d s" % (model, binary, TIMEOUT_S))
            return 1
        except OSError as e:
            print("FAIL parity %s: cannot run %s: %s" % (model, binary, e))
            return 1
    sys.stdout.write(proc.stdout.decode(errors="replace"))
    if proc.returncode < 0:
        print("FAIL parity %s: %s killed by signal %d" % (model, binary, -proc.returncode))
        return 1
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv))
