#!/usr/bin/env bash
# build.sh - configure (once) and build libwhale into ./build.
set -euo pipefail
cd "$(dirname "$0")/.."
# nvcc builds the CUDA kernels where the toolkit is installed (meson finds it on PATH)
cuda_bin="${CUDA_HOME:-/usr/local/cuda}/bin"
[ -x "$cuda_bin/nvcc" ] && case ":$PATH:" in *":$cuda_bin:"*) ;; *) export PATH="$PATH:$cuda_bin" ;; esac
[ -f build/build.ninja ] || meson setup build --buildtype=release >/dev/null
ninja -C build >/dev/null
