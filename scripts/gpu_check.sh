#!/usr/bin/env bash
# gpu_check.sh - on a machine with a CUDA GPU: build libwhale with nvcc, check the CUDA backend
# against the CPU backend (every op of the per-op table; a GPT's training steps in fp32, tf32 and
# bf16; data parallelism over NCCL and MPI), the NCCL communication tests and the cluster probe,
# then time GPT-2 124M against PyTorch on the same card. Prints a short table last; full logs
# go to $OUT (or build-gpu/logs). Aims at under 6 minutes.
#
# Where the machine lacks protobuf-c or json-c, Debian's packages unpacked into .gpu-deps serve:
#   mkdir -p .gpu-deps && cd .gpu-deps && apt-get download libprotobuf-c1 libprotobuf-c-dev \
#     protobuf-c-compiler libprotoc32 libprotobuf32 libjson-c5 libjson-c-dev zlib1g-dev && \
#     for d in *.deb; do dpkg -x "$d" .; done
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-build-gpu/logs}
mkdir -p "$out"
t_start=$(date +%s)
deps=$PWD/.gpu-deps
if [ -d "$deps/usr" ]; then
  export PATH="$deps/usr/bin:$PATH" LD_LIBRARY_PATH="$deps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
  mkdir -p "$deps/pc"
  for f in "$deps"/usr/lib/x86_64-linux-gnu/pkgconfig/*.pc; do
    sed "s|^prefix=.*|prefix=$deps/usr|" "$f" >"$deps/pc/$(basename "$f")"
  done
  export PKG_CONFIG_PATH="$deps/pc${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}" LIBRARY_PATH="$deps/usr/lib/x86_64-linux-gnu${LIBRARY_PATH:+:$LIBRARY_PATH}"
fi
export PATH="$PATH:${CUDA_HOME:-/usr/local/cuda}/bin" OPENBLAS_NUM_THREADS=1
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv >"$out/gpu.txt" 2>&1
cat "$out/gpu.txt"

rows=()
row() { rows+=("$(printf '%-12s %-5s %6ss  %s' "$1" "$2" "$3" "$4")"); }

t0=$(date +%s)
if [ ! -f build-gpu/build.ninja ]; then
  meson setup build-gpu --buildtype=release >"$out/setup.log" 2>&1 || {
    tail -40 "$out/setup.log"
    echo "meson setup failed"
    exit 1
  }
fi
if ! ninja -C build-gpu >"$out/build.log" 2>&1; then
  grep -E "error|FAILED" -A4 "$out/build.log" | head -60
  echo "build failed"
  exit 1
fi
grep -q "WH_HAVE_CUDA_KERNELS 1" build-gpu/wh_config.h && kern=yes || kern=no
row build ok $(($(date +%s) - t0)) "nvcc $(nvcc --version | grep -o 'release [0-9.]*'), CUDA kernels: $kern"

# check NAME SECONDS CMD...: run, keep the log, record status and the last line
check() {
  local name=$1 limit=$2
  shift 2
  local t=$(date +%s)
  timeout "$limit" "$@" >"$out/$name.log" 2>&1
  local rc=$? st=ok
  [ $rc -eq 77 ] && st=skip
  [ $rc -ne 0 ] && [ $rc -ne 77 ] && st="FAIL"
  [ $rc -eq 124 ] && st="TIME"
  row "$name" "$st" $(($(date +%s) - t)) "$(grep -v '^\s*$' "$out/$name.log" | tail -1 | cut -c1-90)"
  if [ "$st" = FAIL ] || [ "$st" = TIME ]; then
    echo "== $name (rc $rc)"
    grep -E "FAIL|rror" "$out/$name.log" | head -25
  fi
}

check nccl 120 build-gpu/tests/gpu/test_nccl
check cuda_ops 240 env TEST_OPS_DEVICE=cuda build-gpu/tests/test_ops
check cuda_bf16 120 env TEST_OPS_DEVICE=cuda TEST_OPS_PRECISION=bf16 TEST_OPS_TOL=3e-2 \
  build-gpu/tests/test_ops --case '*attention*'
check cuda_gpt 180 build-gpu/tests/gpu/test_cuda_gpt
check cuda_tp 180 bash tests/mpi/mpirun.sh 2 170 build-gpu/tests/gpu/test_cuda_tp
cat "$out/cuda_gpt.log" | grep -E "loss|FAIL" | head -12
check probe 90 build-gpu/examples/probe "$out/cluster.json"
grep -m1 "probed" "$out/probe.log"
check gpt2 ${GPT2_LIMIT:-420} python3 bench/gpu_bench.py build-gpu/bench/gpu_gpt2 --batch "${GPT2_BATCH:-16}" --steps "${GPT2_STEPS:-10}" \
  --compile-timeout "${COMPILE_TIMEOUT:-150}" --profile
sed -n '/^profile:/,/^$/p' "$out/gpt2.log" | head -24
grep -E "^GPT-2|^impl|^libwhale|^torch|^RESULT" "$out/gpt2.log"

echo
echo "gpu_check: $(head -2 "$out/gpu.txt" | tail -1), $(($(date +%s) - t_start)) s"
printf '%s\n' "${rows[@]}"
