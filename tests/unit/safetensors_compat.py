#!/usr/bin/env python3
"""safetensors_compat.py - libwhale checkpoints read by the `safetensors` Python package: every rank
file opens with safetensors.numpy and safetensors.torch (PyTorch), every tensor is rebuilt whole
from the index's slice descriptions alone, equals what libwhale loads, and matches the index's
CRC-32C computed here independently.

    safetensors_compat.py COMMAND...      (runs COMMAND DIR, e.g. ckpt_export or mpirun ... ckpt_export)

Without the package (a venv made by scripts/deps.sh test: $WH_VENV, else ~/.cache/libwhale/venv) it
skips (exit 77). Ends with `safetensors: N passed, N failed`."""
import json
import os
import shutil
import subprocess
import sys
import tempfile


def venv_python():
    return os.path.join(os.environ.get("WH_VENV") or os.path.expanduser("~/.cache/libwhale/venv"), "bin", "python")


try:
    import numpy as np
    from safetensors import safe_open
    from safetensors.numpy import load_file
except ImportError:
    vp = venv_python()
    if os.path.exists(vp) and not os.environ.get("WH_REEXEC"):  # once: the venv sees Debian's numpy and torch
        os.environ["WH_REEXEC"] = "1"
        os.execv(vp, [vp] + sys.argv)
    print(f"skip: the safetensors Python package is not installed (scripts/deps.sh test makes {vp})")
    sys.exit(77)
try:
    import torch
except ImportError:
    torch = None

passed = failed = 0


def check(ok, what):
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
        print(f"FAIL {what}")
    return ok


def crc32c(data):
    """CRC-32C, bit by bit through a table: independent of libwhale's."""
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    c = 0xFFFFFFFF
    for b in data:
        c = table[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def place(whole, sl, data):
    """Put a slice's data into the whole tensor (flattened) as the index describes it."""
    lo, hi = sl["flat"]
    flat = whole.reshape(-1)
    if "split" not in sl:
        flat[lo:hi] = data.reshape(-1)
        return
    sp = sl["split"]
    d = whole.shape
    dim, groups, parts, index = sp["dim"], sp["groups"], sp["parts"], sp["index"]
    outer, inner = int(np.prod(d[:dim])), int(np.prod(d[dim + 1:]))
    c = d[dim] // (groups * parts)
    # this rank's part is [:, index, :] of the dimension viewed as [groups, parts, c], kept as
    # [outer, groups, c, inner]; the slice is the window [lo, hi) of that, flattened
    ids = np.arange(whole.size).reshape(outer, groups, parts, c, inner)[:, :, index].reshape(-1)[lo:hi]
    flat[ids] = data.reshape(-1)


def verify(d):
    latest = open(os.path.join(d, "latest")).read().split()[0]
    step = os.path.join(d, latest)
    index = json.load(open(os.path.join(step, "model.safetensors.index.json")))
    md = index["metadata"]
    check(md["format"] == "libwhale checkpoint" and md["step"] == 3, f"metadata: {md}")
    files = {}
    for name, info in index["files"].items():
        path = os.path.join(step, name)
        check(os.path.getsize(path) == info["bytes"], f"{name}: size {os.path.getsize(path)}, index {info['bytes']}")
        files[name] = load_file(path)
        with safe_open(path, framework="numpy") as f:
            meta = f.metadata()
            check(meta.get("format") == "pt" and meta.get("libwhale.step") == "3", f"{name}: __metadata__ {meta}")
            for k in f.keys():
                check(meta.get("crc32c:" + k) is not None, f"{name}: no checksum for {k} in __metadata__")
        if torch is not None:
            with safe_open(path, framework="pt") as f:
                for k in f.keys():
                    t = f.get_tensor(k)
                    check(t.dtype == torch.float32 and np.array_equal(t.numpy(), files[name][k]),
                          f"{name}: {k} through PyTorch differs from numpy")
    lines = [l.split() for l in open(os.path.join(d, "expect.txt"))]
    blob = open(os.path.join(d, "expect.bin"), "rb").read()
    expect, at = {}, 0
    for nm, nb in lines:
        expect[nm] = np.frombuffer(blob[at:at + int(nb)], dtype=np.float32)
        at += int(nb)
    tensors = index["tensors"]
    check(set(tensors) == set(expect), f"tensors: the index has {sorted(set(tensors) ^ set(expect))} unlike libwhale")
    sliced = 0
    for nm, t in tensors.items():
        whole = np.full(t["shape"], np.nan, dtype=np.float32)
        for sl in t["slices"]:
            data = files[sl["file"]][sl["key"]]
            check(int(sl["crc32c"], 16) == crc32c(data.tobytes()), f"{nm}: slice {sl['key']} fails its crc32c")
            if "start" in sl:  # a box: plain numpy slicing must agree
                box = tuple(slice(a, b) for a, b in zip(sl["start"], sl["stop"]))
                check(whole[box].shape == data.shape, f"{nm}: box {sl['start']}..{sl['stop']} vs {data.shape}")
            place(whole, sl, data)
        sliced += len(t["slices"]) > 1
        check(nm in expect and np.array_equal(whole.reshape(-1), expect[nm]),
              f"{nm}: rebuilt from {len(t['slices'])} slices, differs from libwhale's load")
    return len(files), len(tensors), sliced


def main():
    d = tempfile.mkdtemp(prefix="wh_safetensors_")
    try:
        r = subprocess.run(sys.argv[1:] + [os.path.join(d, "ck")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, timeout=120)
        print(r.stdout.strip())
        if not check(r.returncode == 0, f"{' '.join(sys.argv[1:])} exited {r.returncode}"):
            return 1
        nf, nt, sliced = verify(os.path.join(d, "ck"))
        import safetensors
        print(f"safetensors {safetensors.__version__}, numpy {np.__version__}"
              f"{', torch ' + torch.__version__ if torch is not None else ''}: {nf} files, {nt} tensors ({sliced} "
              f"sliced over files) rebuilt from the index, equal to libwhale's load, checksums matching")
    finally:
        shutil.rmtree(d, ignore_errors=True)
    print(f"safetensors: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
