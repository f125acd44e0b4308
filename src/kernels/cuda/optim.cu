/* optim.cu - CUDA optimizer kernels: global-norm clipping coefficient, SGD (momentum, Nesterov,
 * weight decay) and AdamW, with the CPU kernels' arithmetic order. The clipping coefficient stays
 * on the device: the update kernels read it from there. */
#include <math.h>
#include <stdint.h>

#include "common.cuh"

#define THREADS 256
#define NORM_INPUTS 64 /* gradients per partial-sum launch */
#define NORM_FINAL 1024 /* threads of the final reduction */

/* ---------------------------------------------------------------- global_norm_clip */

/* Block b of a launch sums the squares of a strided share of gradient j, where
 * first[j] <= b < first[j + 1], into part[b] (b counted over all launches). */
struct norm_batch {
  const float *g[NORM_INPUTS];
  int64_t numel[NORM_INPUTS];
  int64_t first[NORM_INPUTS + 1];
  int n;
};

/* Sum of v over the block, valid in thread 0 (blockDim.x a multiple of 32, at most 1024). */
static __device__ double block_sum(double v) {
  __shared__ double w[32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) w[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < (int)(blockDim.x >> 5) ? w[lane] : 0.0;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  }
  return v;
}

static __global__ void sq_partials(const __grid_constant__ norm_batch nb, double *__restrict__ part) {
  int64_t b = nb.first[0] + blockIdx.x;
  int lo = 0, hi = nb.n;
  while (hi - lo > 1) {
    int mid = (lo + hi) >> 1;
    if (nb.first[mid] <= b)
      lo = mid;
    else
      hi = mid;
  }
  const float *g = nb.g[lo];
  int64_t n = nb.numel[lo], local = b - nb.first[lo];
  int64_t stride = (nb.first[lo + 1] - nb.first[lo]) * blockDim.x, k = local * blockDim.x + threadIdx.x;
  double a0 = 0, a1 = 0, a2 = 0, a3 = 0;
  int64_t head = 0;
  if (((uintptr_t)g & 15) == 0) { /* float4 over the first n / 4 * 4, the rest below */
    const float4 *g4 = (const float4 *)g;
    int64_t n4 = n / 4;
    head = n4 * 4;
    for (; k + stride < n4; k += 2 * stride) {
      float4 x = g4[k], y = g4[k + stride];
      a0 += (double)x.x * x.x + (double)x.y * x.y;
      a1 += (double)x.z * x.z + (double)x.w * x.w;
      a2 += (double)y.x * y.x + (double)y.y * y.y;
      a3 += (double)y.z * y.z + (double)y.w * y.w;
    }
    for (; k < n4; k += stride) {
      float4 x = g4[k];
      a0 += (double)x.x * x.x + (double)x.y * x.y;
      a1 += (double)x.z * x.z + (double)x.w * x.w;
    }
    k = head + local * blockDim.x + threadIdx.x;
  }
  for (; k + 3 * stride < n; k += 4 * stride) {
    float x0 = g[k], x1 = g[k + stride], x2 = g[k + 2 * stride], x3 = g[k + 3 * stride];
    a0 += (double)x0 * x0;
    a1 += (double)x1 * x1;
    a2 += (double)x2 * x2;
    a3 += (double)x3 * x3;
  }
  for (; k < n; k += stride) a0 += (double)g[k] * g[k];
  double s = block_sum((a0 + a1) + (a2 + a3));
  if (threadIdx.x == 0) part[b] = s;
}

/* coef = min(1, max_norm / (sqrt(sum of the partials) + 1e-6)), as the CPU writes it. */
static __global__ void clip_coef(const double *__restrict__ part, int64_t n, double max_norm,
                                 float *__restrict__ out) {
  double s = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += part[i];
  s = block_sum(s);
  if (threadIdx.x == 0) {
    double coef = max_norm / (sqrt(s) + 1e-6);
    out[0] = (float)(coef < 1.0 ? coef : 1.0);
  }
}

extern "C" wh_status wh__cuk_global_norm_clip(wh__exec *ex, const wh__node *n, const wh__tensor *in,
                                              wh__tensor *out) {
  /* blocks per gradient: about 16 elements a thread, at most 8 per SM */
  int64_t cap = (int64_t)ex->dev->sms * 8, total = 0;
  for (int i = 0; i < n->n_in; i++) {
    int64_t b = (in[i].numel + THREADS * 16 - 1) / (THREADS * 16);
    total += b < cap ? b : cap;
  }
  double *part = (double *)wh__cuda_scratch(ex, sizeof(double) * (size_t)(total > 0 ? total : 1));
  if (!part) return WH_ERR_OUT_OF_MEMORY;
  cudaStream_t st = wh__cu_stream(ex);
  int64_t next = 0;
  for (int i = 0; i < n->n_in;) {
    norm_batch nb = {};
    nb.first[0] = next;
    for (; i < n->n_in && nb.n < NORM_INPUTS; i++) {
      if (in[i].numel == 0) continue;
      int64_t b = (in[i].numel + THREADS * 16 - 1) / (THREADS * 16);
      nb.g[nb.n] = wh__f32(&in[i]);
      nb.numel[nb.n] = in[i].numel;
      next += b < cap ? b : cap;
      nb.first[++nb.n] = next;
    }
    if (nb.n == 0) break;
    sq_partials<<<(unsigned)(next - nb.first[0]), THREADS, 0, st>>>(nb, part);
    WH_CU_LAUNCHED(ex, "global_norm_clip: sums of squares");
  }
  clip_coef<<<1, NORM_FINAL, 0, st>>>(part, next, n->fa[0], wh__f32(out));
  WH_CU_LAUNCHED(ex, "global_norm_clip: coefficient");
  return WH_OK;
}

/* ---------------------------------------------------------------- SGD */

struct sgd_args {
  float *p, *buf;
  const float *g, *clip; /* clip: a device scalar, or NULL */
  int64_t n;
  float lr, mom, damp, wd;
  int nesterov, first;
};

static __device__ __forceinline__ void sgd_one(const sgd_args &a, float clip, float &p, float &buf, float g) {
  float d = g * clip;
  if (a.wd != 0) d += a.wd * p;
  if (a.buf) {
    float bv = a.first ? d : a.mom * buf + (1.0f - a.damp) * d;
    buf = bv;
    d = a.nesterov ? d + a.mom * bv : bv;
  }
  p -= a.lr * d;
}

/* vec: every pointer is 16-byte aligned, so the first n / 4 * 4 elements go as float4 */
static __global__ void sgd_kernel(sgd_args a, int vec) {
  float clip = a.clip ? *a.clip : 1.0f;
  int64_t tid = blockIdx.x * (int64_t)blockDim.x + threadIdx.x, nt = (int64_t)gridDim.x * blockDim.x;
  int64_t head = 0;
  if (vec) {
    head = a.n / 4 * 4;
    float4 *p4 = (float4 *)a.p, *b4 = (float4 *)a.buf;
    const float4 *g4 = (const float4 *)a.g;
    for (int64_t i = tid; i < a.n / 4; i += nt) {
      float4 p = p4[i], g = g4[i], b = make_float4(0, 0, 0, 0);
      if (b4) b = b4[i];
      sgd_one(a, clip, p.x, b.x, g.x);
      sgd_one(a, clip, p.y, b.y, g.y);
      sgd_one(a, clip, p.z, b.z, g.z);
      sgd_one(a, clip, p.w, b.w, g.w);
      p4[i] = p;
      if (b4) b4[i] = b;
    }
  }
  for (int64_t i = head + tid; i < a.n; i += nt) {
    float p = a.p[i], b = a.buf ? a.buf[i] : 0.0f;
    sgd_one(a, clip, p, b, a.g[i]);
    a.p[i] = p;
    if (a.buf) a.buf[i] = b;
  }
}

extern "C" wh_status wh__cuk_sgd_update(wh__exec *ex, const wh__node *n, const wh__tensor *in,
                                        wh__tensor *out) {
  (void)out;
  if (in[0].numel == 0) return WH_OK;
  int has_buf = (int)n->ia[0], has_clip = (int)n->ia[1];
  sgd_args a;
  a.p = wh__f32(&in[0]);
  a.g = wh__f32(&in[1]);
  a.buf = has_buf ? wh__f32(&in[2]) : NULL;
  a.clip = has_clip ? wh__f32(&in[n->n_in - 1]) : NULL;
  a.n = in[0].numel;
  a.lr = (float)wh__lr_at(n->fa, ex->step);
  a.mom = (float)n->fa[5];
  a.damp = (float)n->fa[6];
  a.wd = (float)n->fa[7];
  a.nesterov = (int)n->ia[2];
  a.first = ex->step == 1;
  uintptr_t al = (uintptr_t)a.p | (uintptr_t)a.g | (uintptr_t)a.buf;
  int vec = (al & 15) == 0;
  int64_t work = vec ? (a.n + 3) / 4 : a.n;
  sgd_kernel<<<wh__cu_blocks(ex, work, THREADS), THREADS, 0, wh__cu_stream(ex)>>>(a, vec);
  WH_CU_LAUNCHED(ex, "sgd_update");
  return WH_OK;
}

/* ---------------------------------------------------------------- AdamW */

struct adamw_args {
  float *p, *m, *v;
  const float *g, *clip; /* clip: a device scalar, or NULL */
  int64_t n;
  float lr, wd, b1, b2, eps, bc2sqrt, step_size;
};

static __device__ __forceinline__ void adamw_one(const adamw_args &a, float clip, float &p, float &m,
                                                 float &v, float g) {
  g = g * clip;
  p = p * (1.0f - a.lr * a.wd);
  m = a.b1 * m + (1.0f - a.b1) * g;
  v = a.b2 * v + (1.0f - a.b2) * g * g;
  float denom = sqrtf(v) / a.bc2sqrt + a.eps;
  p = p - a.step_size * m / denom;
}

/* vec: every pointer is 16-byte aligned, so the first n / 4 * 4 elements go as float4 */
static __global__ void adamw_kernel(adamw_args a, int vec) {
  float clip = a.clip ? *a.clip : 1.0f;
  int64_t tid = blockIdx.x * (int64_t)blockDim.x + threadIdx.x, nt = (int64_t)gridDim.x * blockDim.x;
  int64_t head = 0;
  if (vec) {
    head = a.n / 4 * 4;
    float4 *p4 = (float4 *)a.p, *m4 = (float4 *)a.m, *v4 = (float4 *)a.v;
    const float4 *g4 = (const float4 *)a.g;
    for (int64_t i = tid; i < a.n / 4; i += nt) {
      float4 p = p4[i], m = m4[i], v = v4[i], g = g4[i];
      adamw_one(a, clip, p.x, m.x, v.x, g.x);
      adamw_one(a, clip, p.y, m.y, v.y, g.y);
      adamw_one(a, clip, p.z, m.z, v.z, g.z);
      adamw_one(a, clip, p.w, m.w, v.w, g.w);
      p4[i] = p;
      m4[i] = m;
      v4[i] = v;
    }
  }
  for (int64_t i = head + tid; i < a.n; i += nt) {
    float p = a.p[i], m = a.m[i], v = a.v[i];
    adamw_one(a, clip, p, m, v, a.g[i]);
    a.p[i] = p;
    a.m[i] = m;
    a.v[i] = v;
  }
}

extern "C" wh_status wh__cuk_adamw_update(wh__exec *ex, const wh__node *n, const wh__tensor *in,
                                          wh__tensor *out) {
  (void)out;
  if (in[0].numel == 0) return WH_OK;
  double b1 = n->fa[5], b2 = n->fa[6];
  double t = (double)ex->step;
  adamw_args a;
  a.p = wh__f32(&in[0]);
  a.g = wh__f32(&in[1]);
  a.m = wh__f32(&in[2]);
  a.v = wh__f32(&in[3]);
  a.clip = n->ia[0] ? wh__f32(&in[4]) : NULL;
  a.n = in[0].numel;
  a.lr = (float)wh__lr_at(n->fa, ex->step);
  a.b1 = (float)b1;
  a.b2 = (float)b2;
  a.eps = (float)n->fa[7];
  a.wd = (float)n->fa[8];
  float bc1 = (float)(1.0 - pow(b1, t));
  a.bc2sqrt = (float)sqrt(1.0 - pow(b2, t));
  a.step_size = a.lr / bc1;
  uintptr_t al = (uintptr_t)a.p | (uintptr_t)a.g | (uintptr_t)a.m | (uintptr_t)a.v;
  int vec = (al & 15) == 0;
  int64_t work = vec ? (a.n + 3) / 4 : a.n;
  adamw_kernel<<<wh__cu_blocks(ex, work, THREADS), THREADS, 0, wh__cu_stream(ex)>>>(a, vec);
  WH_CU_LAUNCHED(ex, "adamw_update");
  return WH_OK;
}
