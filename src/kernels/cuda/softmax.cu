/* softmax.cu - CUDA kernels over the last axis (softmax, log-softmax and their gradients) and
 * cross-entropy with integer labels, fused with log-softmax. A row up to 1024 wide is read once
 * into a warp's registers; a wider row takes a block, which finds the maximum and the sum of
 * exponentials in one read (a running maximum, the sum rescaled when it grows) and reads the row
 * again for the output. Sums run in double; the loss is a per-row loss in the workspace summed by
 * one block in a fixed order, so it is the same on every run.
 * Labels stay on the device: a label outside [0, classes) cannot be reported as an error without
 * a synchronisation, so it makes that row's loss NaN (hence the mean loss) and its gradient row
 * NaN instead. */
#include <math.h>

#include "common.cuh"

#define FULL 0xffffffffu
#define THREADS 256    /* per block; a wide row takes a block */
#define WARP_ROWS 1024 /* widest row given to one warp */
#define WROWS (THREADS / 32)

static __device__ __forceinline__ float warp_max(float v) {
  for (int k = 16; k > 0; k /= 2) v = fmaxf(v, __shfl_xor_sync(FULL, v, k));
  return v;
}

/* Butterfly sums: every lane ends with the same value, bit for bit. */
static __device__ __forceinline__ double warp_sum(double v) {
  for (int k = 16; k > 0; k /= 2) v += __shfl_xor_sync(FULL, v, k);
  return v;
}

/* Sum over the block, the same value in every thread. */
static __device__ double block_sum(double v) {
  __shared__ double sh[32];
  v = warp_sum(v);
  __syncthreads(); /* the previous use of sh is over */
  if ((threadIdx.x & 31) == 0) sh[threadIdx.x / 32] = v;
  __syncthreads();
  v = sh[0];
  for (int i = 1; i < (int)(blockDim.x / 32); i++) v += sh[i];
  return v;
}

/* ---- rows up to 1024 wide: a warp per row, K values per lane (element lane + 32 k) */

template <int K>
static __device__ __forceinline__ void warp_load(const float *p, int c, int lane, float pad, float (&v)[K]) {
#pragma unroll
  for (int k = 0; k < K; k++) v[k] = lane + 32 * k < c ? p[lane + 32 * k] : pad;
}

/* Row maximum and the sum of e^(v - max) in double; KEEP: the exponentials replace v. */
template <int K, bool KEEP>
static __device__ __forceinline__ void warp_exp(float (&v)[K], int c, int lane, float &mx, double &s) {
  float m = v[0];
#pragma unroll
  for (int k = 1; k < K; k++) m = fmaxf(m, v[k]);
  mx = warp_max(m);
  double a = 0;
#pragma unroll
  for (int k = 0; k < K; k++) {
    float e = expf(v[k] - mx);
    if (KEEP) v[k] = e;
    if (lane + 32 * k < c) a += (double)e;
  }
  s = warp_sum(a);
}

template <int K>
static __global__ void softmax_warp(const float *x, float *y, int64_t rows, int c, int logmode) {
  int lane = threadIdx.x & 31;
  for (int64_t r = (int64_t)blockIdx.x * WROWS + threadIdx.x / 32; r < rows; r += (int64_t)gridDim.x * WROWS) {
    float v[K], mx;
    double s;
    warp_load<K>(x + r * c, c, lane, -INFINITY, v);
    float *yr = y + r * c;
    if (logmode) {
      warp_exp<K, false>(v, c, lane, mx, s);
      float lse = mx + (float)log(s);
#pragma unroll
      for (int k = 0; k < K; k++)
        if (lane + 32 * k < c) yr[lane + 32 * k] = v[k] - lse;
    } else {
      warp_exp<K, true>(v, c, lane, mx, s);
      float inv = (float)(1.0 / s);
#pragma unroll
      for (int k = 0; k < K; k++)
        if (lane + 32 * k < c) yr[lane + 32 * k] = v[k] * inv;
    }
  }
}

/* y: forward output, dy: its gradient */
template <int K>
static __global__ void softmax_grad_warp(const float *y, const float *dy, float *dx, int64_t rows, int c,
                                         int logmode) {
  int lane = threadIdx.x & 31;
  for (int64_t r = (int64_t)blockIdx.x * WROWS + threadIdx.x / 32; r < rows; r += (int64_t)gridDim.x * WROWS) {
    float yv[K], dv[K];
    warp_load<K>(y + r * c, c, lane, 0.0f, yv);
    warp_load<K>(dy + r * c, c, lane, 0.0f, dv);
    float *dxr = dx + r * c;
    double a = 0;
    if (logmode) {
      /* dx = dy - softmax * sum(dy) */
#pragma unroll
      for (int k = 0; k < K; k++) a += (double)dv[k];
      float s = (float)warp_sum(a);
#pragma unroll
      for (int k = 0; k < K; k++)
        if (lane + 32 * k < c) dxr[lane + 32 * k] = dv[k] - expf(yv[k]) * s;
    } else {
      /* dx = y * (dy - sum(dy * y)) */
#pragma unroll
      for (int k = 0; k < K; k++) a += (double)dv[k] * yv[k];
      float s = (float)warp_sum(a);
#pragma unroll
      for (int k = 0; k < K; k++)
        if (lane + 32 * k < c) dxr[lane + 32 * k] = yv[k] * (dv[k] - s);
    }
  }
}

template <int K>
static __global__ void ce_loss_warp(const float *__restrict__ x, const int32_t *__restrict__ labels,
                                    double *__restrict__ row_loss, int64_t rows, int c) {
  int lane = threadIdx.x & 31;
  for (int64_t r = (int64_t)blockIdx.x * WROWS + threadIdx.x / 32; r < rows; r += (int64_t)gridDim.x * WROWS) {
    int32_t lab = labels[r];
    if (lab < 0 || lab >= c) {
      if (lane == 0) row_loss[r] = (double)NAN;
      continue;
    }
    float v[K], mx;
    double s;
    warp_load<K>(x + r * c, c, lane, -INFINITY, v);
    warp_exp<K, false>(v, c, lane, mx, s);
    if (lane == 0) row_loss[r] = (double)mx + log(s) - (double)x[r * c + lab];
  }
}

template <int K>
static __global__ void ce_grad_warp(const float *x, const int32_t *__restrict__ labels,
                                    const float *__restrict__ dloss, float *dx, int64_t rows, int c) {
  int lane = threadIdx.x & 31;
  float gscale = dloss[0] / (float)rows;
  for (int64_t r = (int64_t)blockIdx.x * WROWS + threadIdx.x / 32; r < rows; r += (int64_t)gridDim.x * WROWS) {
    int32_t lab = labels[r];
    float *dxr = dx + r * c;
    float v[K], mx;
    double s;
    if (lab < 0 || lab >= c) {
      for (int i = lane; i < c; i += 32) dxr[i] = NAN;
      continue;
    }
    warp_load<K>(x + r * c, c, lane, -INFINITY, v);
    warp_exp<K, true>(v, c, lane, mx, s);
    float kk = (float)(gscale / s);
#pragma unroll
    for (int k = 0; k < K; k++) {
      int i = lane + 32 * k;
      float g = v[k] * kk;
      if (i < c) dxr[i] = i == lab ? g - gscale : g;
    }
  }
}

/* ---- wider rows: a block per row, N consecutive floats at a time (4 when rows are 16-byte aligned) */

template <int N>
struct vec {
  float v[N];
};

template <int N>
static __device__ __forceinline__ vec<N> ld(const float *p) {
  vec<N> r;
  if constexpr (N == 4) {
    float4 q = *(const float4 *)p;
    r.v[0] = q.x, r.v[1] = q.y, r.v[2] = q.z, r.v[3] = q.w;
  } else {
    r.v[0] = *p;
  }
  return r;
}

template <int N>
static __device__ __forceinline__ void st(float *p, const vec<N> &r) {
  if constexpr (N == 4)
    *(float4 *)p = make_float4(r.v[0], r.v[1], r.v[2], r.v[3]);
  else
    *p = r.v[0];
}

/* f(i, v) over this thread's share of a row of c floats at p, N floats at i at a time, with a
 * few loads issued before their values are used. */
template <int N, typename F>
static __device__ __forceinline__ void row_each(const float *p, int64_t c, F f) {
  constexpr int U = N == 4 ? 2 : 4;
  const int64_t step = (int64_t)blockDim.x * N;
  int64_t i = (int64_t)threadIdx.x * N;
  for (; i + (U - 1) * step < c; i += U * step) {
    vec<N> v[U];
#pragma unroll
    for (int u = 0; u < U; u++) v[u] = ld<N>(p + i + u * step);
#pragma unroll
    for (int u = 0; u < U; u++) f(i + u * step, v[u]);
  }
  for (; i < c; i += step) f(i, ld<N>(p + i));
}

/* The same over two rows read together. */
template <int N, typename F>
static __device__ __forceinline__ void row_each2(const float *p, const float *q, int64_t c, F f) {
  constexpr int U = N == 4 ? 2 : 4;
  const int64_t step = (int64_t)blockDim.x * N;
  int64_t i = (int64_t)threadIdx.x * N;
  for (; i + (U - 1) * step < c; i += U * step) {
    vec<N> v[U], w[U];
#pragma unroll
    for (int u = 0; u < U; u++) {
      v[u] = ld<N>(p + i + u * step);
      w[u] = ld<N>(q + i + u * step);
    }
#pragma unroll
    for (int u = 0; u < U; u++) f(i + u * step, v[u], w[u]);
  }
  for (; i < c; i += step) f(i, ld<N>(p + i), ld<N>(q + i));
}

/* (m, s) stands for s e^m: merge two such partial sums of exponentials. An empty part (s = 0)
 * adds nothing; NaN propagates. */
static __device__ __forceinline__ void ms_merge(float &m, double &s, float m2, double s2) {
  float mm = fmaxf(m, m2);
  double a = s == 0 ? 0.0 : s * exp((double)m - (double)mm);
  double b = s2 == 0 ? 0.0 : s2 * exp((double)m2 - (double)mm);
  m = mm;
  s = a + b;
}

/* Row maximum mx and s = sum of expf(x - mx) in double, in one read of the row. */
template <int N>
static __device__ void block_stats(const float *x, int64_t c, float &mx, double &s) {
  float m = -INFINITY;
  double a = 0;
  row_each<N>(x, c, [&](int64_t, const vec<N> &v) {
    float g = v.v[0];
#pragma unroll
    for (int q = 1; q < N; q++) g = fmaxf(g, v.v[q]);
    if (g > m) {
      a = a * exp((double)m - (double)g); /* 0 while nothing is summed (m = -inf) */
      m = g;
    }
#pragma unroll
    for (int q = 0; q < N; q++) a += (double)expf(v.v[q] - m);
  });
  for (int k = 16; k > 0; k /= 2) {
    float m2 = __shfl_xor_sync(FULL, m, k);
    double a2 = __shfl_xor_sync(FULL, a, k);
    ms_merge(m, a, m2, a2);
  }
  __shared__ float shm[32];
  __shared__ double sha[32];
  __syncthreads(); /* the previous row's use of shm/sha is over */
  if ((threadIdx.x & 31) == 0) {
    shm[threadIdx.x / 32] = m;
    sha[threadIdx.x / 32] = a;
  }
  __syncthreads();
  m = shm[0];
  a = sha[0];
  for (int i = 1; i < (int)(blockDim.x / 32); i++) ms_merge(m, a, shm[i], sha[i]);
  mx = m;
  s = a;
}

template <int N>
static __global__ void softmax_block(const float *x, float *y, int64_t rows, int64_t c, int logmode) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float *xr = x + r * c;
    float *yr = y + r * c;
    float mx;
    double s;
    block_stats<N>(xr, c, mx, s);
    if (logmode) {
      float lse = mx + (float)log(s);
      row_each<N>(xr, c, [&](int64_t i, vec<N> v) {
#pragma unroll
        for (int q = 0; q < N; q++) v.v[q] = v.v[q] - lse;
        st<N>(yr + i, v);
      });
    } else {
      float inv = (float)(1.0 / s);
      row_each<N>(xr, c, [&](int64_t i, vec<N> v) {
#pragma unroll
        for (int q = 0; q < N; q++) v.v[q] = expf(v.v[q] - mx) * inv;
        st<N>(yr + i, v);
      });
    }
  }
}

template <int N>
static __global__ void softmax_grad_block(const float *y, const float *dy, float *dx, int64_t rows, int64_t c,
                                          int logmode) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float *yr = y + r * c, *dyr = dy + r * c;
    float *dxr = dx + r * c;
    double a = 0;
    if (logmode) {
      /* dx = dy - softmax * sum(dy) */
      row_each<N>(dyr, c, [&](int64_t, const vec<N> &d) {
#pragma unroll
        for (int q = 0; q < N; q++) a += (double)d.v[q];
      });
      float s = (float)block_sum(a);
      row_each2<N>(yr, dyr, c, [&](int64_t i, const vec<N> &v, vec<N> d) {
#pragma unroll
        for (int q = 0; q < N; q++) d.v[q] = d.v[q] - expf(v.v[q]) * s;
        st<N>(dxr + i, d);
      });
    } else {
      /* dx = y * (dy - sum(dy * y)) */
      row_each2<N>(yr, dyr, c, [&](int64_t, const vec<N> &v, const vec<N> &d) {
#pragma unroll
        for (int q = 0; q < N; q++) a += (double)d.v[q] * v.v[q];
      });
      float s = (float)block_sum(a);
      row_each2<N>(yr, dyr, c, [&](int64_t i, vec<N> v, const vec<N> &d) {
#pragma unroll
        for (int q = 0; q < N; q++) v.v[q] = v.v[q] * (d.v[q] - s);
        st<N>(dxr + i, v);
      });
    }
  }
}

template <int N>
static __global__ void ce_loss_block(const float *__restrict__ x, const int32_t *__restrict__ labels,
                                     double *__restrict__ row_loss, int64_t rows, int64_t c) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    int32_t lab = labels[r];
    if (lab < 0 || lab >= c) { /* the same for the whole block */
      if (threadIdx.x == 0) row_loss[r] = (double)NAN;
      continue;
    }
    float mx;
    double s;
    block_stats<N>(x + r * c, c, mx, s);
    if (threadIdx.x == 0) row_loss[r] = (double)mx + log(s) - (double)x[r * c + lab];
  }
}

template <int N>
static __global__ void ce_grad_block(const float *x, const int32_t *__restrict__ labels,
                                     const float *__restrict__ dloss, float *dx, int64_t rows, int64_t c) {
  float gscale = dloss[0] / (float)rows;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float *xr = x + r * c;
    float *dxr = dx + r * c;
    int32_t lab = labels[r];
    if (lab < 0 || lab >= c) {
      for (int64_t i = threadIdx.x; i < c; i += blockDim.x) dxr[i] = NAN;
      continue;
    }
    float mx;
    double s;
    block_stats<N>(xr, c, mx, s);
    float k = (float)(gscale / s);
    row_each<N>(xr, c, [&](int64_t i, vec<N> v) {
#pragma unroll
      for (int q = 0; q < N; q++) {
        float g = expf(v.v[q] - mx) * k;
        v.v[q] = i + q == lab ? g - gscale : g;
      }
      st<N>(dxr + i, v);
    });
  }
}

/* One block: the mean of the row losses, summed in a fixed order. */
static __global__ void ce_mean_kernel(const double *__restrict__ row_loss, int64_t rows, float *__restrict__ out) {
  double a = 0;
  for (int64_t r = threadIdx.x; r < rows; r += blockDim.x) a += row_loss[r];
  a = block_sum(a);
  if (threadIdx.x == 0) out[0] = (float)(a / (double)rows);
}

/* ---- launches */

static int64_t last_dim(const wh__tensor *t) { return t->ndim ? t->d[t->ndim - 1] : 1; }

/* Values per lane for a warp row (a power of two), 0 for a block row. */
static int warp_k(int64_t c) {
  if (c > WARP_ROWS) return 0;
  int k = 1;
  while (32 * k < c) k *= 2;
  return k;
}

/* 4 when every row of c floats at each pointer starts 16-byte aligned. */
static int vec_width(int64_t c, const void *a, const void *b, const void *d) {
  uintptr_t any = (uintptr_t)a | (uintptr_t)b | (uintptr_t)d;
  return c % 4 == 0 && (any & 15) == 0 ? 4 : 1;
}

#define WARP_LAUNCH(kern, k, blocks, st, ...)                                      \
  switch (k) {                                                                     \
    case 1: kern<1><<<blocks, THREADS, 0, st>>>(__VA_ARGS__); break;               \
    case 2: kern<2><<<blocks, THREADS, 0, st>>>(__VA_ARGS__); break;               \
    case 4: kern<4><<<blocks, THREADS, 0, st>>>(__VA_ARGS__); break;               \
    case 8: kern<8><<<blocks, THREADS, 0, st>>>(__VA_ARGS__); break;               \
    case 16: kern<16><<<blocks, THREADS, 0, st>>>(__VA_ARGS__); break;             \
    default: kern<32><<<blocks, THREADS, 0, st>>>(__VA_ARGS__); break;             \
  }

#define BLOCK_LAUNCH(kern, n, blocks, st, ...)                                     \
  do {                                                                             \
    if (n == 4)                                                                    \
      kern<4><<<blocks, THREADS, 0, st>>>(__VA_ARGS__);                            \
    else                                                                           \
      kern<1><<<blocks, THREADS, 0, st>>>(__VA_ARGS__);                            \
  } while (0)

static wh_status softmax_any(wh__exec *ex, const wh__tensor *in, wh__tensor *out, int logmode) {
  int64_t c = last_dim(&in[0]);
  if (out->numel == 0) return WH_OK;
  int64_t rows = out->numel / c;
  const float *x = wh__f32(&in[0]);
  float *y = wh__f32(out);
  cudaStream_t st = wh__cu_stream(ex);
  int k = warp_k(c);
  if (k) {
    WARP_LAUNCH(softmax_warp, k, wh__cu_blocks(ex, rows, WROWS), st, x, y, rows, (int)c, logmode);
  } else {
    BLOCK_LAUNCH(softmax_block, vec_width(c, x, y, y), wh__cu_blocks(ex, rows, 1), st, x, y, rows, c, logmode);
  }
  WH_CU_LAUNCHED(ex, logmode ? "log_softmax" : "softmax");
  return WH_OK;
}

extern "C" wh_status wh__cuk_softmax(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out) {
  (void)n;
  return softmax_any(ex, in, out, 0);
}

extern "C" wh_status wh__cuk_log_softmax(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out) {
  (void)n;
  return softmax_any(ex, in, out, 1);
}

static wh_status softmax_grad_any(wh__exec *ex, const wh__tensor *in, wh__tensor *out, int logmode) {
  int64_t c = last_dim(&in[0]);
  if (out->numel == 0) return WH_OK;
  int64_t rows = out->numel / c;
  const float *y = wh__f32(&in[0]), *dy = wh__f32(&in[1]);
  float *dx = wh__f32(out);
  cudaStream_t st = wh__cu_stream(ex);
  int k = warp_k(c);
  if (k) {
    WARP_LAUNCH(softmax_grad_warp, k, wh__cu_blocks(ex, rows, WROWS), st, y, dy, dx, rows, (int)c, logmode);
  } else {
    BLOCK_LAUNCH(softmax_grad_block, vec_width(c, y, dy, dx), wh__cu_blocks(ex, rows, 1), st, y, dy, dx, rows, c,
                 logmode);
  }
  WH_CU_LAUNCHED(ex, logmode ? "log_softmax_grad" : "softmax_grad");
  return WH_OK;
}

extern "C" wh_status wh__cuk_softmax_grad(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out) {
  (void)n;
  return softmax_grad_any(ex, in, out, 0);
}

extern "C" wh_status wh__cuk_log_softmax_grad(wh__exec *ex, const wh__node *n, const wh__tensor *in,
                                              wh__tensor *out) {
  (void)n;
  return softmax_grad_any(ex, in, out, 1);
}

extern "C" wh_status wh__cuk_cross_entropy(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out) {
  (void)n;
  int64_t c = in[0].d[in[0].ndim - 1], rows = c ? in[0].numel / c : 0;
  cudaStream_t st = wh__cu_stream(ex);
  if (rows == 0) {
    cudaError_t e = cudaMemsetAsync(out->data, 0, sizeof(float), st); /* 0.0f */
    return e == cudaSuccess ? WH_OK : wh__cu_fail(ex, e, "cross_entropy: zero loss");
  }
  double *rl = (double *)wh__cuda_scratch(ex, sizeof(double) * (size_t)rows);
  if (!rl) return WH_ERR_OUT_OF_MEMORY;
  const float *x = wh__f32(&in[0]);
  const int32_t *lab = (const int32_t *)in[1].data;
  int k = warp_k(c);
  if (k) {
    WARP_LAUNCH(ce_loss_warp, k, wh__cu_blocks(ex, rows, WROWS), st, x, lab, rl, rows, (int)c);
  } else {
    BLOCK_LAUNCH(ce_loss_block, vec_width(c, x, x, x), wh__cu_blocks(ex, rows, 1), st, x, lab, rl, rows, c);
  }
  WH_CU_LAUNCHED(ex, "cross_entropy");
  ce_mean_kernel<<<1, 1024, 0, st>>>(rl, rows, wh__f32(out));
  WH_CU_LAUNCHED(ex, "cross_entropy: mean");
  return WH_OK;
}

extern "C" wh_status wh__cuk_cross_entropy_grad(wh__exec *ex, const wh__node *n, const wh__tensor *in,
                                                wh__tensor *out) {
  (void)n;
  int64_t c = in[0].d[in[0].ndim - 1], rows = c ? in[0].numel / c : 0;
  if (rows == 0) return WH_OK;
  const float *x = wh__f32(&in[0]), *dloss = wh__f32(&in[2]);
  const int32_t *lab = (const int32_t *)in[1].data;
  float *dx = wh__f32(out);
  cudaStream_t st = wh__cu_stream(ex);
  int k = warp_k(c);
  if (k) {
    WARP_LAUNCH(ce_grad_warp, k, wh__cu_blocks(ex, rows, WROWS), st, x, lab, dloss, dx, rows, (int)c);
  } else {
    BLOCK_LAUNCH(ce_grad_block, vec_width(c, x, dx, dx), wh__cu_blocks(ex, rows, 1), st, x, lab, dloss, dx, rows,
                 c);
  }
  WH_CU_LAUNCHED(ex, "cross_entropy_grad");
  return WH_OK;
}
