/* common.cuh - what every CUDA kernel file shares: the device context, launch helpers, error
 * reporting into the session's kernel message, the device workspace, and the GEMM entry.
 * Kernels have the CPU kernels' signature and semantics (src/kernels/cpu/), with every tensor's
 * data in device memory; they enqueue on the context's stream and never synchronise. */
#ifndef WH_CUDA_COMMON_CUH
#define WH_CUDA_COMMON_CUH

#include <cuda_runtime.h>
#include <stdint.h>
#include <stdio.h>

extern "C" {
#include "../kernels.h"
#include "cuda.h"
}

struct wh__lt; /* cuBLASLt, loaded at open (matmul.cu) */

struct wh__cuda {
  int device, precision, sms;
  cudaStream_t stream;
  struct wh__lt *lt;
  void *scratch;        /* grow-only device workspace for kernels (wh__cuda_scratch) */
  size_t scratch_cap;
  float *reduce_buf;    /* small device buffer for kernels that reduce to a few floats */
  char err[512];
};

/* Write "what: CUDA's message" into the kernel message and return WH_ERR_INTERNAL. */
wh_status wh__cu_fail(wh__exec *ex, cudaError_t e, const char *what);
/* A message of the kernel's own (bad attributes, unsupported case), returning st. */
wh_status wh__cu_msg(wh__exec *ex, wh_status st, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* After a launch: report a launch failure (bad configuration, no kernel image) by name. */
#define WH_CU_LAUNCHED(ex, what)                         \
  do {                                                   \
    cudaError_t e_ = cudaGetLastError();                 \
    if (e_ != cudaSuccess) return wh__cu_fail(ex, e_, what); \
  } while (0)

static inline cudaStream_t wh__cu_stream(const wh__exec *ex) { return ex->dev->stream; }

/* Blocks for a grid-stride loop over n items with threads per block (at least 1, at most a few
 * waves of the device). */
static inline unsigned wh__cu_blocks(const wh__exec *ex, int64_t n, int threads) {
  int64_t b = (n + threads - 1) / threads;
  int64_t cap = (int64_t)ex->dev->sms * 32;
  if (b > cap) b = cap;
  if (b < 1) b = 1;
  return (unsigned)b;
}

/* Device workspace of at least bytes, valid until the next call (grow-only; growing waits for
 * the stream). NULL with the kernel message set when out of device memory. */
void *wh__cuda_scratch(wh__exec *ex, size_t bytes);

/* Row-major C = alpha op(A) op(B) + beta C for batch matrices apart by stride_a/b/c elements
 * (stride 0: the same matrix for every batch), through cuBLASLt in the session's precision:
 * fp32 exactly (WH_PRECISION_F32), TF32 or bf16 tensor cores with fp32 accumulation. */
wh_status wh__cuda_gemm(wh__exec *ex, int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha, const float *a,
                        int64_t lda, int64_t stride_a, const float *b, int64_t ldb, int64_t stride_b, float beta,
                        float *c, int64_t ldc, int64_t stride_c, int64_t batch);

/* The kernels themselves are declared in kernels.h: wh__cuk_X is the CUDA twin of wh__cpu_X, defined
 * extern "C" in this directory. */

#endif
