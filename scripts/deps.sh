#!/usr/bin/env bash
# deps.sh - install the Debian 12 packages libwhale needs, only those missing (idempotent).
#   deps.sh build   compilers, meson, OpenBLAS, protobuf-c, json-c, Open MPI, zlib, the digits data
#   deps.sh test    build + PyTorch and NumPy for the parity tests, valgrind, what the Python package
#                   (python/) needs to build and be tested (cffi, the Python headers, pytest, venv for
#                   the pip install test, mpi4py for the host-owned-MPI path), and a venv with PyPI's
#                   safetensors (not packaged by Debian 12) for the checkpoint format test:
#                   $WH_VENV, default ~/.cache/libwhale/venv (that test skips without it)
set -euo pipefail
profile=${1:-build}
pkgs=(gcc libc6-dev pkg-config meson ninja-build libopenblas-dev libprotobuf-c-dev protobuf-c-compiler libjson-c-dev
      zlib1g-dev libopenmpi-dev openmpi-bin python3 python3-sklearn fortunes)
if [ "$profile" = test ]; then
  pkgs+=(python3-torch python3-numpy python3-cffi python3-dev python3-pytest python3-venv python3-mpi4py valgrind)
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ "$profile" = test ]; then
  venv=${WH_VENV:-$HOME/.cache/libwhale/venv}
  if ! "$venv/bin/python" -c 'import safetensors' 2>/dev/null; then
    echo "making $venv with safetensors (PyPI)"
    { /usr/bin/python3 -m venv --system-site-packages "$venv" && "$venv/bin/pip" install -q safetensors; } ||
      echo "warning: no safetensors venv in $venv: the checkpoint format test will skip" >&2
  fi
fi
