/* embedding.cu - CUDA gather of table rows by index, and its gradient: a scatter-add with
 * atomics into a zeroed table (the sum's order, unlike the CPU's token order, is not fixed).
 * Indices are checked on the device, where an error cannot be returned: a row whose index is
 * outside the table comes out as zeros, and its gradient is dropped (the CPU kernels fail with
 * WH_ERR_INVALID_ARGUMENT instead). */
#include <stdint.h>

#include "common.cuh"

#define THREADS 256

static uint64_t addr(const void *p) { return (uint64_t)(uintptr_t)p; }

/* Floats per vector (4, 2 or 1) that the row width and the addresses allow. */
static int vec_of(int64_t d, const void *a, const void *b) {
  if (d % 4 == 0 && ((addr(a) | addr(b)) & 15) == 0) return 4;
  if (d % 2 == 0 && ((addr(a) | addr(b)) & 7) == 0) return 2;
  return 1;
}

/* ---------------------------------------------------------------- forward */

/* out[t, c] = tab[ix[t], c], in vectors V of floats; du vectors per row. */
template <typename V, typename I>
static __global__ void gather(const V *__restrict__ tab, V *__restrict__ out, const int32_t *__restrict__ ix,
                              int64_t rows, I du, I total) {
  for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (I)gridDim.x * blockDim.x) {
    I t = i / du;
    I c = i - t * du;
    int32_t v = ix[t];
    V r = V();
    if (v >= 0 && v < rows) r = tab[(I)v * du + c];
    out[i] = r;
  }
}

template <typename V>
static wh_status gather_launch(wh__exec *ex, const float *tab, float *out, const int32_t *ix, int64_t rows,
                               int64_t du, int64_t total) {
  unsigned blocks = wh__cu_blocks(ex, total, THREADS);
  cudaStream_t st = wh__cu_stream(ex);
  if (total < ((int64_t)1 << 31) && rows * du < ((int64_t)1 << 31))
    gather<V, uint32_t>
        <<<blocks, THREADS, 0, st>>>((const V *)tab, (V *)out, ix, rows, (uint32_t)du, (uint32_t)total);
  else
    gather<V, int64_t><<<blocks, THREADS, 0, st>>>((const V *)tab, (V *)out, ix, rows, du, total);
  WH_CU_LAUNCHED(ex, "embedding");
  return WH_OK;
}

extern "C" wh_status wh__cuk_embedding(wh__exec *ex, const wh__node *n, const wh__tensor *in,
                                       wh__tensor *out) {
  (void)n;
  if (out->numel == 0) return WH_OK;
  int64_t rows = in[0].d[0], d = in[0].d[1];
  const float *tab = wh__f32(&in[0]);
  float *y = wh__f32(out);
  const int32_t *ix = (const int32_t *)in[1].data;
  int w = vec_of(d, tab, y);
  int64_t du = d / w, total = in[1].numel * du;
  if (w == 4) return gather_launch<float4>(ex, tab, y, ix, rows, du, total);
  if (w == 2) return gather_launch<float2>(ex, tab, y, ix, rows, du, total);
  return gather_launch<float>(ex, tab, y, ix, rows, du, total);
}

/* ---------------------------------------------------------------- gradient */

/* out[ix[t], c] += dy[t, c], in vectors V of floats (vector atomics on sm_90). */
template <typename V, typename I>
static __global__ void scatter_add(const V *__restrict__ dy, V *__restrict__ out,
                                   const int32_t *__restrict__ ix, int64_t rows, I du, I total) {
  for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (I)gridDim.x * blockDim.x) {
    I t = i / du;
    I c = i - t * du;
    int32_t v = ix[t];
    if (v >= 0 && v < rows) atomicAdd(&out[(I)v * du + c], dy[i]);
  }
}

template <typename V>
static wh_status scatter_launch(wh__exec *ex, const float *dy, float *out, const int32_t *ix, int64_t rows,
                                int64_t du, int64_t total) {
  unsigned blocks = wh__cu_blocks(ex, total, THREADS);
  cudaStream_t st = wh__cu_stream(ex);
  if (total < ((int64_t)1 << 31) && rows * du < ((int64_t)1 << 31))
    scatter_add<V, uint32_t>
        <<<blocks, THREADS, 0, st>>>((const V *)dy, (V *)out, ix, rows, (uint32_t)du, (uint32_t)total);
  else
    scatter_add<V, int64_t><<<blocks, THREADS, 0, st>>>((const V *)dy, (V *)out, ix, rows, du, total);
  WH_CU_LAUNCHED(ex, "embedding gradient");
  return WH_OK;
}

extern "C" wh_status wh__cuk_embedding_grad(wh__exec *ex, const wh__node *n, const wh__tensor *in,
                                            wh__tensor *out) {
  if (out->numel == 0) return WH_OK;
  int64_t rows = n->ia[0], d = out->d[1];
  float *y = wh__f32(out);
  const float *dy = wh__f32(&in[1]);
  const int32_t *ix = (const int32_t *)in[0].data;
  cudaError_t e = cudaMemsetAsync(y, 0, sizeof(float) * (size_t)out->numel, wh__cu_stream(ex));
  if (e != cudaSuccess) return wh__cu_fail(ex, e, "embedding gradient: zeroing");
  if (in[0].numel == 0) return WH_OK;
  int w = vec_of(d, dy, y);
  int64_t du = d / w, total = in[0].numel * du;
  if (w == 4) return scatter_launch<float4>(ex, dy, y, ix, rows, du, total);
  if (w == 2) return scatter_launch<float2>(ex, dy, y, ix, rows, du, total);
  return scatter_launch<float>(ex, dy, y, ix, rows, du, total);
}
