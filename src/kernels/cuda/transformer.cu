/* transformer.cu - CUDA kernels for the transformer block's own ops: layer normalisation over the
 * last axis (one warp per row, double accumulation like the CPU kernels) and causal multi-head
 * self-attention over a fused [.., T, 3C] q|k|v tensor, as GEMMs through wh__cuda_gemm around a
 * row softmax. Like the CPU kernel, backward recomputes the probabilities from q and k. */
#include <math.h>

#include "common.cuh"

#define WARPS 8 /* warps per block for the one-warp-per-row kernels */

static __device__ __forceinline__ double warp_sum(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

static __device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

/* ---- layernorm */

/* mean and 1/sqrt(var + eps) of a row of c, as row_stats on the CPU; every lane gets the result */
static __device__ __forceinline__ void row_stats(const float *x, int64_t c, float eps, int lane, float *mean,
                                                 float *rstd) {
  double s = 0;
  for (int64_t i = lane; i < c; i += 32) s += x[i];
  s = warp_sum(s);
  float m = (float)(s / (double)c);
  double v = 0;
  for (int64_t i = lane; i < c; i += 32) {
    float d = x[i] - m;
    v += (double)d * d;
  }
  v = warp_sum(v);
  *mean = m;
  *rstd = (float)(1.0 / sqrt(v / (double)c + eps));
}

static __global__ void ln_fwd_k(const float *__restrict__ x, const float *__restrict__ g,
                                const float *__restrict__ b, float *__restrict__ y, int64_t rows, int64_t c,
                                float eps) {
  int lane = threadIdx.x & 31;
  int64_t warp = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  int64_t nw = ((int64_t)gridDim.x * blockDim.x) >> 5;
  for (int64_t r = warp; r < rows; r += nw) {
    const float *xr = x + r * c;
    float *yr = y + r * c, m, rs;
    row_stats(xr, c, eps, lane, &m, &rs);
    for (int64_t i = lane; i < c; i += 32) yr[i] = (xr[i] - m) * rs * g[i] + b[i];
  }
}

static __global__ void ln_dx_k(const float *__restrict__ x, const float *__restrict__ g,
                               const float *__restrict__ dy, float *__restrict__ dx, int64_t rows, int64_t c,
                               float eps) {
  int lane = threadIdx.x & 31;
  int64_t warp = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  int64_t nw = ((int64_t)gridDim.x * blockDim.x) >> 5;
  for (int64_t r = warp; r < rows; r += nw) {
    const float *xr = x + r * c, *dyr = dy + r * c;
    float *dxr = dx + r * c, m, rs;
    row_stats(xr, c, eps, lane, &m, &rs);
    double s1 = 0, s2 = 0;
    for (int64_t i = lane; i < c; i += 32) {
      float dxh = dyr[i] * g[i];
      s1 += dxh;
      s2 += (double)dxh * ((xr[i] - m) * rs);
    }
    s1 = warp_sum(s1);
    s2 = warp_sum(s2);
    float a = (float)(s1 / (double)c), bb = (float)(s2 / (double)c);
    for (int64_t i = lane; i < c; i += 32) {
      float xh = (xr[i] - m) * rs;
      dxr[i] = rs * (dyr[i] * g[i] - a - xh * bb);
    }
  }
}

static __global__ void ln_stats_k(const float *__restrict__ x, float *__restrict__ mean, float *__restrict__ rstd,
                                  int64_t rows, int64_t c, float eps) {
  int lane = threadIdx.x & 31;
  int64_t warp = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  int64_t nw = ((int64_t)gridDim.x * blockDim.x) >> 5;
  for (int64_t r = warp; r < rows; r += nw) {
    float m, rs;
    row_stats(x + r * c, c, eps, lane, &m, &rs);
    if (lane == 0) mean[r] = m, rstd[r] = rs;
  }
}

#define DG_ROWS 8 /* block (32, DG_ROWS): 32 columns, rows of a chunk strided by DG_ROWS */

/* partial[chunk][col] = sum over the chunk's rows of dy * x_hat, in double; fixed order throughout */
static __global__ void ln_dgamma_part_k(const float *__restrict__ x, const float *__restrict__ dy,
                                        const float *__restrict__ mean, const float *__restrict__ rstd,
                                        double *__restrict__ partial, int64_t rows, int64_t c, int64_t per_chunk) {
  __shared__ double red[DG_ROWS][33];
  int tx = threadIdx.x, ty = threadIdx.y;
  int64_t col = (int64_t)blockIdx.x * 32 + tx;
  int64_t r0 = (int64_t)blockIdx.y * per_chunk, r1 = r0 + per_chunk < rows ? r0 + per_chunk : rows;
  double acc = 0;
  if (col < c)
    for (int64_t r = r0 + ty; r < r1; r += DG_ROWS) {
      int64_t o = r * c + col;
      acc += dy[o] * ((x[o] - mean[r]) * rstd[r]);
    }
  red[ty][tx] = acc;
  __syncthreads();
  if (ty == 0 && col < c) {
    double s = 0;
    for (int i = 0; i < DG_ROWS; i++) s += red[i][tx];
    partial[(int64_t)blockIdx.y * c + col] = s;
  }
}

static __global__ void ln_dgamma_sum_k(const double *__restrict__ partial, float *__restrict__ out, int64_t c,
                                       int chunks) {
  int64_t step = (int64_t)gridDim.x * blockDim.x;
  for (int64_t col = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; col < c; col += step) {
    double s = 0;
    for (int k = 0; k < chunks; k++) s += partial[(int64_t)k * c + col];
    out[col] = (float)s;
  }
}

extern "C" wh_status wh__cuk_layernorm(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out) {
  int64_t c = in[0].d[in[0].ndim - 1];
  if (out->numel == 0 || c == 0) return WH_OK;
  int64_t rows = out->numel / c;
  ln_fwd_k<<<wh__cu_blocks(ex, rows, WARPS), 32 * WARPS, 0, wh__cu_stream(ex)>>>(
      wh__f32(&in[0]), wh__f32(&in[1]), wh__f32(&in[2]), wh__f32(out), rows, c, (float)n->fa[0]);
  WH_CU_LAUNCHED(ex, "layernorm");
  return WH_OK;
}

extern "C" wh_status wh__cuk_layernorm_grad_input(wh__exec *ex, const wh__node *n, const wh__tensor *in,
                                                  wh__tensor *out) {
  int64_t c = in[0].d[in[0].ndim - 1];
  if (out->numel == 0 || c == 0) return WH_OK;
  int64_t rows = out->numel / c;
  ln_dx_k<<<wh__cu_blocks(ex, rows, WARPS), 32 * WARPS, 0, wh__cu_stream(ex)>>>(
      wh__f32(&in[0]), wh__f32(&in[1]), wh__f32(&in[2]), wh__f32(out), rows, c, (float)n->fa[0]);
  WH_CU_LAUNCHED(ex, "layernorm_grad_input");
  return WH_OK;
}

/* Row statistics first, then per-chunk column sums, then the chunks summed in order: deterministic. */
extern "C" wh_status wh__cuk_layernorm_grad_gamma(wh__exec *ex, const wh__node *n, const wh__tensor *in,
                                                  wh__tensor *out) {
  int64_t c = in[0].d[in[0].ndim - 1], rows = c ? in[0].numel / c : 0;
  float eps = (float)n->fa[0];
  if (out->numel == 0) return WH_OK;
  if (rows == 0) { /* the CPU kernel writes zeros */
    cudaError_t e = cudaMemsetAsync(out->data, 0, sizeof(float) * (size_t)out->numel, wh__cu_stream(ex));
    if (e != cudaSuccess) return wh__cu_fail(ex, e, "layernorm_grad_gamma zero fill");
    return WH_OK;
  }
  int64_t colb = (c + 31) / 32, target = (int64_t)ex->dev->sms * 4;
  int64_t chunks = target / colb, most = (rows + 63) / 64; /* at least 64 rows a chunk */
  if (chunks > most) chunks = most;
  if (chunks < 1) chunks = 1;
  int64_t per_chunk = (rows + chunks - 1) / chunks;
  chunks = (rows + per_chunk - 1) / per_chunk;
  size_t bytes = sizeof(double) * (size_t)(chunks * c) + sizeof(float) * 2 * (size_t)rows;
  double *partial = (double *)wh__cuda_scratch(ex, bytes);
  if (!partial) return WH_ERR_OUT_OF_MEMORY;
  float *mean = (float *)(partial + chunks * c), *rstd = mean + rows;
  const float *x = wh__f32(&in[0]), *dy = wh__f32(&in[1]);
  cudaStream_t st = wh__cu_stream(ex);
  ln_stats_k<<<wh__cu_blocks(ex, rows, WARPS), 32 * WARPS, 0, st>>>(x, mean, rstd, rows, c, eps);
  WH_CU_LAUNCHED(ex, "layernorm_grad_gamma stats");
  dim3 grid((unsigned)colb, (unsigned)chunks), block(32, DG_ROWS);
  ln_dgamma_part_k<<<grid, block, 0, st>>>(x, dy, mean, rstd, partial, rows, c, per_chunk);
  WH_CU_LAUNCHED(ex, "layernorm_grad_gamma partial sums");
  ln_dgamma_sum_k<<<wh__cu_blocks(ex, c, 256), 256, 0, st>>>(partial, wh__f32(out), c, (int)chunks);
  WH_CU_LAUNCHED(ex, "layernorm_grad_gamma");
  return WH_OK;
}

/* ---- causal self-attention over qkv [.., T, 3C]: q | k | v, each split into H heads of C/H */

/* Rows of T-wide score matrices, row r being query r % T: each lane holds up to PER entries
 * (j = lane + 32 k) in registers; PER = 0 is the fallback for any T, reading the row again. */

/* P = causal softmax of the row in place, as att_probs on the CPU: entries past the query are 0 */
template <int PER>
static __global__ void att_softmax_k(float *__restrict__ s, int64_t rows, int64_t t) {
  int lane = threadIdx.x & 31;
  int64_t warp = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  int64_t nw = ((int64_t)gridDim.x * blockDim.x) >> 5;
  for (int64_t r = warp; r < rows; r += nw) {
    float *p = s + r * t;
    int64_t len = r % t + 1;
    float mx = -INFINITY;
    double sum = 0;
    if (PER > 0) {
      float v[PER > 0 ? PER : 1];
#pragma unroll
      for (int k = 0; k < PER; k++) {
        int64_t j = lane + 32 * k;
        v[k] = j < len ? p[j] : -INFINITY;
        mx = fmaxf(mx, v[k]);
      }
      mx = warp_max(mx);
#pragma unroll
      for (int k = 0; k < PER; k++) {
        int64_t j = lane + 32 * k;
        if (j < len) {
          v[k] = expf(v[k] - mx);
          sum += v[k];
        }
      }
      float inv = (float)(1.0 / warp_sum(sum));
#pragma unroll
      for (int k = 0; k < PER; k++) {
        int64_t j = lane + 32 * k;
        if (j < t) p[j] = j < len ? v[k] * inv : 0.0f;
      }
    } else {
      for (int64_t j = lane; j < len; j += 32) mx = fmaxf(mx, p[j]);
      mx = warp_max(mx);
      for (int64_t j = lane; j < len; j += 32) {
        float e = expf(p[j] - mx);
        p[j] = e;
        sum += e;
      }
      float inv = (float)(1.0 / warp_sum(sum));
      for (int64_t j = lane; j < t; j += 32) p[j] = j < len ? p[j] * inv : 0.0f;
    }
  }
}

/* dS = P * (dP - rowsum(dP * P)) * scale over the causal part, 0 past it; dS replaces dP */
template <int PER>
static __global__ void att_dscores_k(const float *__restrict__ pm, float *__restrict__ dpm, int64_t rows,
                                     int64_t t, float scale) {
  int lane = threadIdx.x & 31;
  int64_t warp = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  int64_t nw = ((int64_t)gridDim.x * blockDim.x) >> 5;
  for (int64_t r = warp; r < rows; r += nw) {
    const float *p = pm + r * t;
    float *d = dpm + r * t;
    int64_t len = r % t + 1;
    double s = 0;
    if (PER > 0) {
      float pv[PER > 0 ? PER : 1], dv[PER > 0 ? PER : 1];
#pragma unroll
      for (int k = 0; k < PER; k++) {
        int64_t j = lane + 32 * k;
        pv[k] = j < len ? p[j] : 0.0f;
        dv[k] = j < len ? d[j] : 0.0f;
        s += (double)pv[k] * dv[k];
      }
      float sf = (float)warp_sum(s);
#pragma unroll
      for (int k = 0; k < PER; k++) {
        int64_t j = lane + 32 * k;
        if (j < t) d[j] = j < len ? pv[k] * (dv[k] - sf) * scale : 0.0f;
      }
    } else {
      for (int64_t j = lane; j < len; j += 32) s += (double)p[j] * d[j];
      float sf = (float)warp_sum(s);
      for (int64_t j = lane; j < t; j += 32) d[j] = j < len ? p[j] * (d[j] - sf) * scale : 0.0f;
    }
  }
}

/* the register-held variant for rows of t, PER = 0 when t exceeds 1024 */
static int att_per(int64_t t) {
  int64_t need = (t + 31) / 32;
  if (need > 32) return 0;
  int per = 1;
  while (per < need) per *= 2;
  return per;
}

static wh_status att_softmax(wh__exec *ex, float *s, int64_t rows, int64_t t) {
  unsigned blocks = wh__cu_blocks(ex, rows, WARPS);
  cudaStream_t st = wh__cu_stream(ex);
  switch (att_per(t)) {
    case 1: att_softmax_k<1><<<blocks, 32 * WARPS, 0, st>>>(s, rows, t); break;
    case 2: att_softmax_k<2><<<blocks, 32 * WARPS, 0, st>>>(s, rows, t); break;
    case 4: att_softmax_k<4><<<blocks, 32 * WARPS, 0, st>>>(s, rows, t); break;
    case 8: att_softmax_k<8><<<blocks, 32 * WARPS, 0, st>>>(s, rows, t); break;
    case 16: att_softmax_k<16><<<blocks, 32 * WARPS, 0, st>>>(s, rows, t); break;
    case 32: att_softmax_k<32><<<blocks, 32 * WARPS, 0, st>>>(s, rows, t); break;
    default: att_softmax_k<0><<<blocks, 32 * WARPS, 0, st>>>(s, rows, t); break;
  }
  WH_CU_LAUNCHED(ex, "attention softmax");
  return WH_OK;
}

static wh_status att_dscores(wh__exec *ex, const float *p, float *dp, int64_t rows, int64_t t, float scale) {
  unsigned blocks = wh__cu_blocks(ex, rows, WARPS);
  cudaStream_t st = wh__cu_stream(ex);
  switch (att_per(t)) {
    case 1: att_dscores_k<1><<<blocks, 32 * WARPS, 0, st>>>(p, dp, rows, t, scale); break;
    case 2: att_dscores_k<2><<<blocks, 32 * WARPS, 0, st>>>(p, dp, rows, t, scale); break;
    case 4: att_dscores_k<4><<<blocks, 32 * WARPS, 0, st>>>(p, dp, rows, t, scale); break;
    case 8: att_dscores_k<8><<<blocks, 32 * WARPS, 0, st>>>(p, dp, rows, t, scale); break;
    case 16: att_dscores_k<16><<<blocks, 32 * WARPS, 0, st>>>(p, dp, rows, t, scale); break;
    case 32: att_dscores_k<32><<<blocks, 32 * WARPS, 0, st>>>(p, dp, rows, t, scale); break;
    default: att_dscores_k<0><<<blocks, 32 * WARPS, 0, st>>>(p, dp, rows, t, scale); break;
  }
  WH_CU_LAUNCHED(ex, "attention_grad scores");
  return WH_OK;
}

/* Geometry, and how the (sample, head) pairs of a group of samples are walked: one batched GEMM
 * per outer index over the inner ones (heads within a sample, or samples within a head, whichever
 * gives fewer calls). Score matrix (outer o, inner i) sits at (o * ninner + i) * T * T. */
typedef struct {
  int64_t t, c, h, hd, nb;
  float scale;
  int64_t group;                   /* samples per pass, bounded by the score buffers' size */
  int64_t nouter, ninner;          /* of the current group */
  int64_t qo, qi, yo, yi;          /* outer and inner strides in qkv (ld 3C) and in y (ld C) */
} att_geom;

#define ATT_SCORES_CAP ((int64_t)1 << 28) /* floats per score buffer before samples go in groups */

/* flash.cu: the fused path of the bf16 precision mode, for the shapes and pointers it fits */
bool wh__cu_flash_fits(int64_t nb, int64_t t, int64_t h, int64_t hd, const void *p0, const void *p1,
                       const void *p2);
wh_status wh__cu_flash_attention(wh__exec *ex, const float *qkv, float *y, int64_t nb, int64_t t, int64_t h,
                                 int64_t hd);
wh_status wh__cu_flash_attention_grad(wh__exec *ex, const float *qkv, const float *dy, float *dqkv, int64_t nb,
                                      int64_t t, int64_t h, int64_t hd);

static wh_status att_setup(wh__exec *ex, const wh__node *n, const wh__tensor *qkv, att_geom *a) {
  a->t = qkv->d[qkv->ndim - 2];
  a->c = qkv->d[qkv->ndim - 1] / 3;
  a->h = n->ia[0];
  if (a->h < 1 || a->c % a->h)
    return wh__cu_msg(ex, WH_ERR_SHAPE, "attention: %lld heads do not divide C = %lld", (long long)a->h,
                      (long long)a->c);
  a->hd = a->c / a->h;
  a->scale = (float)(1.0 / sqrt((double)a->hd));
  a->nb = a->t ? qkv->numel / (a->t * 3 * a->c) : 0;
  int64_t per = a->h * a->t * a->t;
  a->group = ATT_SCORES_CAP / per;
  if (a->group > a->nb) a->group = a->nb;
  if (a->group < 1) a->group = 1;
  return WH_OK;
}

static void att_walk(att_geom *a, int64_t g) {
  int64_t sq = a->t * 3 * a->c, sy = a->t * a->c;
  if (g <= a->h) {
    a->nouter = g, a->ninner = a->h;
    a->qo = sq, a->qi = a->hd, a->yo = sy, a->yi = a->hd;
  } else {
    a->nouter = a->h, a->ninner = g;
    a->qo = a->hd, a->qi = sq, a->yo = a->hd, a->yi = sy;
  }
}

/* S = scale Q K^T for every (sample, head) of the group whose q block starts at q */
static wh_status att_scores(wh__exec *ex, const att_geom *a, const float *q, float *s) {
  int64_t tt = a->t * a->t, ld = 3 * a->c;
  for (int64_t o = 0; o < a->nouter; o++) {
    const float *qo = q + o * a->qo;
    wh_status r = wh__cuda_gemm(ex, 0, 1, a->t, a->t, a->hd, a->scale, qo, ld, a->qi, qo + a->c, ld, a->qi, 0.0f,
                                s + o * a->ninner * tt, a->t, tt, a->ninner);
    if (r != WH_OK) return r;
  }
  return WH_OK;
}

extern "C" wh_status wh__cuk_attention(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out) {
  if (out->numel == 0) return WH_OK;
  att_geom a;
  wh_status r = att_setup(ex, n, &in[0], &a);
  if (r != WH_OK) return r;
  if (ex->dev->precision == WH_PRECISION_BF16 &&
      wh__cu_flash_fits(a.nb, a.t, a.h, a.hd, in[0].data, out->data, out->data))
    return wh__cu_flash_attention(ex, wh__f32(&in[0]), wh__f32(out), a.nb, a.t, a.h, a.hd);
  int64_t tt = a.t * a.t, ld = 3 * a.c;
  float *s = (float *)wh__cuda_scratch(ex, sizeof(float) * (size_t)(a.group * a.h * tt));
  if (!s) return WH_ERR_OUT_OF_MEMORY;
  for (int64_t b0 = 0; b0 < a.nb; b0 += a.group) {
    int64_t g = a.nb - b0 < a.group ? a.nb - b0 : a.group;
    const float *q = wh__f32(&in[0]) + b0 * a.t * ld;
    float *y = wh__f32(out) + b0 * a.t * a.c;
    att_walk(&a, g);
    if ((r = att_scores(ex, &a, q, s)) != WH_OK) return r;
    if ((r = att_softmax(ex, s, g * a.h * a.t, a.t)) != WH_OK) return r;
    /* Y = P V */
    for (int64_t o = 0; o < a.nouter; o++) {
      r = wh__cuda_gemm(ex, 0, 0, a.t, a.hd, a.t, 1.0f, s + o * a.ninner * tt, a.t, tt, q + o * a.qo + 2 * a.c, ld,
                        a.qi, 0.0f, y + o * a.yo, a.c, a.yi, a.ninner);
      if (r != WH_OK) return r;
    }
  }
  return WH_OK;
}

extern "C" wh_status wh__cuk_attention_grad(wh__exec *ex, const wh__node *n, const wh__tensor *in,
                                            wh__tensor *out) {
  if (out->numel == 0) return WH_OK;
  att_geom a;
  wh_status r = att_setup(ex, n, &in[0], &a);
  if (r != WH_OK) return r;
  if (ex->dev->precision == WH_PRECISION_BF16 &&
      wh__cu_flash_fits(a.nb, a.t, a.h, a.hd, in[0].data, in[1].data, out->data))
    return wh__cu_flash_attention_grad(ex, wh__f32(&in[0]), wh__f32(&in[1]), wh__f32(out), a.nb, a.t, a.h, a.hd);
  int64_t tt = a.t * a.t, ld = 3 * a.c, per = a.group * a.h * tt;
  float *p = (float *)wh__cuda_scratch(ex, sizeof(float) * 2 * (size_t)per);
  if (!p) return WH_ERR_OUT_OF_MEMORY;
  float *dp = p + per;
  for (int64_t b0 = 0; b0 < a.nb; b0 += a.group) {
    int64_t g = a.nb - b0 < a.group ? a.nb - b0 : a.group;
    const float *q = wh__f32(&in[0]) + b0 * a.t * ld, *dy = wh__f32(&in[1]) + b0 * a.t * a.c;
    float *dq = wh__f32(out) + b0 * a.t * ld;
    att_walk(&a, g);
    if ((r = att_scores(ex, &a, q, p)) != WH_OK) return r;
    if ((r = att_softmax(ex, p, g * a.h * a.t, a.t)) != WH_OK) return r;
    /* dV = P^T dY ; dP = dY V^T */
    for (int64_t o = 0; o < a.nouter; o++) {
      const float *po = p + o * a.ninner * tt, *dyo = dy + o * a.yo, *vo = q + o * a.qo + 2 * a.c;
      float *dvo = dq + o * a.qo + 2 * a.c, *dpo = dp + o * a.ninner * tt;
      r = wh__cuda_gemm(ex, 1, 0, a.t, a.hd, a.t, 1.0f, po, a.t, tt, dyo, a.c, a.yi, 0.0f, dvo, ld, a.qi,
                        a.ninner);
      if (r != WH_OK) return r;
      r = wh__cuda_gemm(ex, 0, 1, a.t, a.t, a.hd, 1.0f, dyo, a.c, a.yi, vo, ld, a.qi, 0.0f, dpo, a.t, tt,
                        a.ninner);
      if (r != WH_OK) return r;
    }
    if ((r = att_dscores(ex, p, dp, g * a.h * a.t, a.t, a.scale)) != WH_OK) return r;
    /* dQ = dS K ; dK = dS^T Q */
    for (int64_t o = 0; o < a.nouter; o++) {
      const float *dso = dp + o * a.ninner * tt, *qo = q + o * a.qo;
      float *dqo = dq + o * a.qo;
      r = wh__cuda_gemm(ex, 0, 0, a.t, a.hd, a.t, 1.0f, dso, a.t, tt, qo + a.c, ld, a.qi, 0.0f, dqo, ld, a.qi,
                        a.ninner);
      if (r != WH_OK) return r;
      r = wh__cuda_gemm(ex, 1, 0, a.t, a.hd, a.t, 1.0f, dso, a.t, tt, qo, ld, a.qi, 0.0f, dqo + a.c, ld, a.qi,
                        a.ninner);
      if (r != WH_OK) return r;
    }
  }
  return WH_OK;
}
