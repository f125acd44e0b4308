/* elementwise.cu - CUDA kernels for elementwise ops: broadcasting binaries, scale, bias, activations
 * and their gradients, dropout, the mean squared error loss with its gradient, and casts. Contiguous maps
 * move float4s when every pointer allows it; results match the CPU kernels element for element. */
#include "../../base/half.h"
#include "common.cuh"
#include "../kmath.h"

#define THREADS 256

static inline int aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }

/* e^x clamped to the range the CPU's wh__expf accepts (NaN passes through) */
static __device__ __forceinline__ float dexp(float x) {
  x = x < -87.0f ? -87.0f : x;
  x = x > 88.0f ? 88.0f : x;
  return expf(x);
}

static __device__ __forceinline__ float dsigmoid(float x) { return 1.0f / (1.0f + dexp(-x)); }

/* ---- contiguous maps: y[i] = f(x[i], i) and y[i] = f(a[i], b[i]). Outputs may alias inputs
 * (every element is read before it is written by the same thread), so no __restrict__. */

struct fn_base {
  __device__ void init() {}
};

template <class F>
__global__ void map1_k(const float *x, float *y, int64_t n, int vec, F f) {
  f.init();
  int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, stride = (int64_t)gridDim.x * blockDim.x;
  int64_t done = 0;
  if (vec) {
    int64_t n4 = n >> 2;
    for (int64_t q = t; q < n4; q += stride) {
      float4 v = reinterpret_cast<const float4 *>(x)[q];
      int64_t i = q << 2;
      v.x = f(v.x, i);
      v.y = f(v.y, i + 1);
      v.z = f(v.z, i + 2);
      v.w = f(v.w, i + 3);
      reinterpret_cast<float4 *>(y)[q] = v;
    }
    done = n4 << 2;
  }
  for (int64_t i = done + t; i < n; i += stride) y[i] = f(x[i], i);
}

template <class F>
__global__ void map2_k(const float *a, const float *b, float *y, int64_t n, int vec, F f) {
  f.init();
  int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, stride = (int64_t)gridDim.x * blockDim.x;
  int64_t done = 0;
  if (vec) {
    int64_t n4 = n >> 2;
    for (int64_t q = t; q < n4; q += stride) {
      float4 u = reinterpret_cast<const float4 *>(a)[q], v = reinterpret_cast<const float4 *>(b)[q];
      u.x = f(u.x, v.x);
      u.y = f(u.y, v.y);
      u.z = f(u.z, v.z);
      u.w = f(u.w, v.w);
      reinterpret_cast<float4 *>(y)[q] = u;
    }
    done = n4 << 2;
  }
  for (int64_t i = done + t; i < n; i += stride) y[i] = f(a[i], b[i]);
}

template <class F>
static wh_status map1(wh__exec *ex, const float *x, float *y, int64_t n, F f, const char *what) {
  if (n <= 0) return WH_OK;
  int vec = aligned16(x) && aligned16(y);
  unsigned blocks = wh__cu_blocks(ex, vec ? (n + 3) / 4 : n, THREADS);
  map1_k<F><<<blocks, THREADS, 0, wh__cu_stream(ex)>>>(x, y, n, vec, f);
  WH_CU_LAUNCHED(ex, what);
  return WH_OK;
}

template <class F>
static wh_status map2(wh__exec *ex, const float *a, const float *b, float *y, int64_t n, F f,
                      const char *what) {
  if (n <= 0) return WH_OK;
  int vec = aligned16(a) && aligned16(b) && aligned16(y);
  unsigned blocks = wh__cu_blocks(ex, vec ? (n + 3) / 4 : n, THREADS);
  map2_k<F><<<blocks, THREADS, 0, wh__cu_stream(ex)>>>(a, b, y, n, vec, f);
  WH_CU_LAUNCHED(ex, what);
  return WH_OK;
}

/* ---- broadcasting binary ops */

template <int OP>
struct bin_f : fn_base {
  __device__ float operator()(float x, float y) const {
    if (OP == WH_OP_ADD) return x + y;
    if (OP == WH_OP_SUB) return x - y;
    if (OP == WH_OP_MUL) return x * y;
    return x / y;
  }
};

/* output dims with the element strides of a and b (0 where one broadcasts), size-1 dims dropped and
 * neighbours that both inputs walk contiguously merged */
template <typename I>
struct bshape {
  int nd;
  I d[WH_MAX_DIMS], sa[WH_MAX_DIMS], sb[WH_MAX_DIMS];
};

template <int OP, typename I>
__global__ void bin_bcast_k(const float *a, const float *b, float *y, I n, bshape<I> g) {
  bin_f<OP> f;
  I stride = (I)gridDim.x * blockDim.x;
  for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
    I rem = i, oa = 0, ob = 0;
    for (int k = g.nd - 1; k > 0; k--) {
      I q = rem / g.d[k], idx = rem - q * g.d[k];
      rem = q;
      oa += idx * g.sa[k];
      ob += idx * g.sb[k];
    }
    oa += rem * g.sa[0];
    ob += rem * g.sb[0];
    y[i] = f(a[oa], b[ob]);
  }
}

template <int OP, typename I>
static wh_status bin_bcast(wh__exec *ex, const wh__tensor *in, wh__tensor *out) {
  int64_t sa[WH_MAX_DIMS], sb[WH_MAX_DIMS];
  wh__bcast_strides(&in[0], out->ndim, out->d, sa);
  wh__bcast_strides(&in[1], out->ndim, out->d, sb);
  bshape<I> g;
  g.nd = 0;
  for (int k = 0; k < out->ndim; k++) {
    int64_t d = out->d[k];
    if (d == 1) continue;
    int c = g.nd - 1;
    if (c >= 0 && (int64_t)g.sa[c] == sa[k] * d && (int64_t)g.sb[c] == sb[k] * d) {
      g.d[c] = (I)((int64_t)g.d[c] * d);
      g.sa[c] = (I)sa[k];
      g.sb[c] = (I)sb[k];
    } else {
      g.d[g.nd] = (I)d;
      g.sa[g.nd] = (I)sa[k];
      g.sb[g.nd] = (I)sb[k];
      g.nd++;
    }
  }
  if (g.nd == 0) {
    g.nd = 1;
    g.d[0] = 1;
    g.sa[0] = g.sb[0] = 0;
  }
  int64_t n = out->numel;
  bin_bcast_k<OP, I><<<wh__cu_blocks(ex, n, THREADS), THREADS, 0, wh__cu_stream(ex)>>>(
      wh__f32(&in[0]), wh__f32(&in[1]), wh__f32(out), (I)n, g);
  WH_CU_LAUNCHED(ex, "binary (broadcast)");
  return WH_OK;
}

template <int OP>
static wh_status binary_op(wh__exec *ex, const wh__tensor *in, wh__tensor *out) {
  if (in[0].numel == out->numel && in[1].numel == out->numel)
    return map2(ex, wh__f32(&in[0]), wh__f32(&in[1]), wh__f32(out), out->numel, bin_f<OP>(), "binary");
  /* inputs never hold more elements than the output, so 32-bit offsets do when its count does */
  if (out->numel <= INT32_MAX) return bin_bcast<OP, uint32_t>(ex, in, out);
  return bin_bcast<OP, int64_t>(ex, in, out);
}

extern "C" wh_status wh__cuk_binary(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out) {
  if (out->numel == 0) return WH_OK;
  switch (n->op) {
    case WH_OP_ADD: return binary_op<WH_OP_ADD>(ex, in, out);
    case WH_OP_SUB: return binary_op<WH_OP_SUB>(ex, in, out);
    case WH_OP_MUL: return binary_op<WH_OP_MUL>(ex, in, out);
    default: return binary_op<WH_OP_DIV>(ex, in, out);
  }
}

/* ---- scale and bias */

struct scale_f : fn_base {
  float k;
  __device__ float operator()(float x, int64_t) const { return x * k; }
};

/* ---- cast between f32, bf16 and f16 (base/half.h's roundings, the same as the CPU's) */
__global__ void cast_k(const void *x, void *y, int64_t n, int from, int to) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    float v = from == WH_F32 ? ((const float *)x)[i]
              : from == WH_BF16 ? wh__bf16_to_f32(((const uint16_t *)x)[i]) : wh__f16_to_f32(((const uint16_t *)x)[i]);
    if (to == WH_F32) ((float *)y)[i] = v;
    else ((uint16_t *)y)[i] = to == WH_BF16 ? wh__f32_to_bf16(v) : wh__f32_to_f16(v);
  }
}

extern "C" wh_status wh__cuk_cast(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out) {
  int from = in[0].dtype, to = (int)n->ia[0];
  int ok = (from == WH_F32 || from == WH_BF16 || from == WH_F16) && (to == WH_F32 || to == WH_BF16 || to == WH_F16);
  if (!ok || to != (int)out->dtype) return wh__cu_msg(ex, WH_ERR_DTYPE, "cast from dtype %d to %d: f32, bf16 and f16 only", from, to);
  if (out->numel == 0) return WH_OK;
  int64_t blocks = (out->numel + 255) / 256;
  cast_k<<<(unsigned)(blocks < 4096 ? blocks : 4096), 256, 0, ex->dev->stream>>>(in[0].data, out->data, out->numel, from, to);
  WH_CU_LAUNCHED(ex, "cast");
  return WH_OK;
}

extern "C" wh_status wh__cuk_scale(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out) {
  scale_f f;
  f.k = (float)n->fa[0];
  return map1(ex, wh__f32(&in[0]), wh__f32(out), out->numel, f, "scale");
}

/* element e adds b[(e / inner) % axis_len]. vec: float4s, where either inner % 4 == 0 (four
 * elements share one bias) or inner == 1 and axis_len % 4 == 0 (four consecutive biases). */
template <typename I>
__global__ void bias_k(const float *x, const float *b, float *y, I n, I inner, I axis_len, int vec) {
  I t = (I)blockIdx.x * blockDim.x + threadIdx.x, stride = (I)gridDim.x * blockDim.x;
  if (vec) {
    I n4 = n >> 2;
    for (I q = t; q < n4; q += stride) {
      I e = q << 2;
      float4 v = reinterpret_cast<const float4 *>(x)[q];
      if (inner == 1) {
        float4 bv = reinterpret_cast<const float4 *>(b)[(e % axis_len) >> 2];
        v.x += bv.x;
        v.y += bv.y;
        v.z += bv.z;
        v.w += bv.w;
      } else {
        float bv = b[(e / inner) % axis_len];
        v.x += bv;
        v.y += bv;
        v.z += bv;
        v.w += bv;
      }
      reinterpret_cast<float4 *>(y)[q] = v;
    }
  } else if (inner == 1) {
    for (I e = t; e < n; e += stride) y[e] = x[e] + b[e % axis_len];
  } else {
    for (I e = t; e < n; e += stride) y[e] = x[e] + b[(e / inner) % axis_len];
  }
}

extern "C" wh_status wh__cuk_bias_add(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out) {
  int ax = (int)n->ia[0];
  if (ax < 0 || ax >= in[0].ndim)
    return wh__cu_msg(ex, WH_ERR_SHAPE, "bias_add: axis %d out of range for rank %d", ax, in[0].ndim);
  int64_t axis_len = in[0].d[ax], inner = 1;
  for (int k = ax + 1; k < in[0].ndim; k++) inner *= in[0].d[k];
  int64_t cnt = out->numel;
  if (cnt == 0) return WH_OK;
  const float *x = wh__f32(&in[0]), *b = wh__f32(&in[1]);
  float *y = wh__f32(out);
  int vec = aligned16(x) && aligned16(y) &&
            (inner % 4 == 0 || (inner == 1 && axis_len % 4 == 0 && aligned16(b)));
  unsigned blocks = wh__cu_blocks(ex, vec ? cnt / 4 : cnt, THREADS);
  if (cnt <= INT32_MAX)
    bias_k<uint32_t><<<blocks, THREADS, 0, wh__cu_stream(ex)>>>(x, b, y, (uint32_t)cnt, (uint32_t)inner,
                                                                (uint32_t)axis_len, vec);
  else
    bias_k<int64_t><<<blocks, THREADS, 0, wh__cu_stream(ex)>>>(x, b, y, cnt, inner, axis_len, vec);
  WH_CU_LAUNCHED(ex, "bias_add");
  return WH_OK;
}

/* ---- activations */

template <int OP>
struct unary_f : fn_base {
  __device__ float operator()(float x, int64_t) const {
    if (OP == WH_OP_RELU) return x > 0 ? x : 0.0f;
    if (OP == WH_OP_GELU) return x * dsigmoid(wh__gelu_2u(x));
    if (OP == WH_OP_TANH) return tanhf(x);
    if (OP == WH_OP_SIGMOID) return dsigmoid(x);
    if (OP == WH_OP_EXP) return expf(x);
    return logf(x);
  }
};

extern "C" wh_status wh__cuk_unary(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out) {
  const float *x = wh__f32(&in[0]);
  float *y = wh__f32(out);
  int64_t cnt = out->numel;
  switch (n->op) {
    case WH_OP_RELU: return map1(ex, x, y, cnt, unary_f<WH_OP_RELU>(), "relu");
    case WH_OP_GELU: return map1(ex, x, y, cnt, unary_f<WH_OP_GELU>(), "gelu");
    case WH_OP_TANH: return map1(ex, x, y, cnt, unary_f<WH_OP_TANH>(), "tanh");
    case WH_OP_SIGMOID: return map1(ex, x, y, cnt, unary_f<WH_OP_SIGMOID>(), "sigmoid");
    case WH_OP_EXP: return map1(ex, x, y, cnt, unary_f<WH_OP_EXP>(), "exp");
    default: return map1(ex, x, y, cnt, unary_f<WH_OP_LOG>(), "log");
  }
}

/* s is the saved tensor (the forward's output for relu, tanh, sigmoid and exp; its input for gelu
 * and log: ops.c gr_unary), d is dy */
template <int OP>
struct unary_grad_f : fn_base {
  __device__ float operator()(float s, float d) const {
    if (OP == WH_OP_RELU) return s > 0 ? d : 0.0f;
    if (OP == WH_OP_GELU) return wh__gelu_grad(s, dsigmoid(wh__gelu_grad_2u(s)), d);
    if (OP == WH_OP_TANH) return d * (1.0f - s * s);
    if (OP == WH_OP_SIGMOID) return d * s * (1.0f - s);
    if (OP == WH_OP_EXP) return d * s;
    return d / s;
  }
};

extern "C" wh_status wh__cuk_unary_grad(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out) {
  const float *s = wh__f32(&in[0]), *dy = wh__f32(&in[1]);
  float *dx = wh__f32(out);
  int64_t cnt = out->numel;
  switch ((int)n->ia[0]) {
    case WH_OP_RELU: return map2(ex, s, dy, dx, cnt, unary_grad_f<WH_OP_RELU>(), "relu grad");
    case WH_OP_GELU: return map2(ex, s, dy, dx, cnt, unary_grad_f<WH_OP_GELU>(), "gelu grad");
    case WH_OP_TANH: return map2(ex, s, dy, dx, cnt, unary_grad_f<WH_OP_TANH>(), "tanh grad");
    case WH_OP_SIGMOID: return map2(ex, s, dy, dx, cnt, unary_grad_f<WH_OP_SIGMOID>(), "sigmoid grad");
    case WH_OP_EXP: return map2(ex, s, dy, dx, cnt, unary_grad_f<WH_OP_EXP>(), "exp grad");
    default: return map2(ex, s, dy, dx, cnt, unary_grad_f<WH_OP_LOG>(), "log grad");
  }
}

/* ---- dropout: the CPU's mask (../kmath.h), bit for bit */

struct dropout_f : fn_base {
  wh__dropout d;
  __device__ float operator()(float x, int64_t i) const { return wh__dropout_apply(&d, i, x); }
};

extern "C" wh_status wh__cuk_dropout(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out) {
  double p = n->fa[0];
  if (out->numel == 0) return WH_OK;
  if (!ex->train || p == 0) {
    if (out->data == in[0].data) return WH_OK;
    cudaError_t e = cudaMemcpyAsync(out->data, in[0].data, (size_t)out->numel * sizeof(float),
                                    cudaMemcpyDeviceToDevice, wh__cu_stream(ex));
    if (e != cudaSuccess) return wh__cu_fail(ex, e, "dropout (copy)");
    return WH_OK;
  }
  dropout_f f;
  f.d = wh__dropout_of(ex, n, out->numel);
  return map1(ex, wh__f32(&in[0]), wh__f32(out), out->numel, f, "dropout");
}

/* ---- mean squared error: per-block double partials in a fixed order, then one block sums them, so
 * the loss does not change from run to run */

#define MSE_MAX_BLOCKS 1024

static __device__ __forceinline__ double block_sum(double v, double *sh) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  if (lane == 0) sh[w] = v;
  __syncthreads();
  v = 0;
  if (w == 0) {
    if (lane < (int)(blockDim.x >> 5)) v = sh[lane];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  }
  return v; /* valid in thread 0 */
}

__global__ void mse_partial_k(const float *p, const float *t, int64_t n, double *part) {
  __shared__ double sh[32];
  double acc = 0;
  int64_t stride = (int64_t)gridDim.x * blockDim.x;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
    double d = (double)p[i] - t[i];
    acc += d * d;
  }
  acc = block_sum(acc, sh);
  if (threadIdx.x == 0) part[blockIdx.x] = acc;
}

__global__ void mse_final_k(const double *part, int nparts, int64_t n, float *y) {
  __shared__ double sh[32];
  double acc = 0;
  for (int i = threadIdx.x; i < nparts; i += blockDim.x) acc += part[i];
  acc = block_sum(acc, sh);
  if (threadIdx.x == 0) y[0] = (float)(acc / (double)n);
}

extern "C" wh_status wh__cuk_mse(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out) {
  (void)n;
  int64_t cnt = in[0].numel;
  cudaStream_t st = wh__cu_stream(ex);
  if (cnt == 0) {
    cudaError_t e = cudaMemsetAsync(out->data, 0, sizeof(float), st);
    if (e != cudaSuccess) return wh__cu_fail(ex, e, "mse (empty)");
    return WH_OK;
  }
  unsigned blocks = wh__cu_blocks(ex, cnt, THREADS);
  if (blocks > MSE_MAX_BLOCKS) blocks = MSE_MAX_BLOCKS;
  double *part = (double *)wh__cuda_scratch(ex, blocks * sizeof(double));
  if (!part) return WH_ERR_OUT_OF_MEMORY;
  mse_partial_k<<<blocks, THREADS, 0, st>>>(wh__f32(&in[0]), wh__f32(&in[1]), cnt, part);
  WH_CU_LAUNCHED(ex, "mse (partial sums)");
  mse_final_k<<<1, THREADS, 0, st>>>(part, (int)blocks, cnt, wh__f32(out));
  WH_CU_LAUNCHED(ex, "mse (total)");
  return WH_OK;
}

/* dx = k (p - t) with k = sign 2 dy / count, dy read on the device; same float steps as the CPU */
struct mse_grad_f : fn_base {
  const float *dy;
  float sign, cnt;
  float k;
  __device__ void init() { k = sign * 2.0f * dy[0] / cnt; }
  __device__ float operator()(float p, float t) const { return k * (p - t); }
};

extern "C" wh_status wh__cuk_mse_grad(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out) {
  int64_t cnt = in[0].numel;
  if (cnt == 0) return WH_OK;
  mse_grad_f f;
  f.dy = wh__f32(&in[2]);
  f.sign = (float)(n->ia[0]);
  f.cnt = (float)cnt;
  f.k = 0;
  return map2(ex, wh__f32(&in[0]), wh__f32(&in[1]), wh__f32(out), cnt, f, "mse_grad");
}
