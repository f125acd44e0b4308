/* conv.cu - CUDA kernels for conv2d (im2col + GEMM, col2im by gathering) and 2-D max/avg pooling,
 * forward and backward. Every output element is written by one thread that sums its terms in the
 * CPU kernels' order, so nothing uses atomics and results do not depend on the launch shape. */
#include <limits.h>
#include <math.h>

#include "common.cuh"
#include "../conv_geom.h"
#include "../kmath.h"

#define WH__CONV_THREADS 256
/* Column matrices are built for as many images at once as fit this many bytes (at least one). */
#ifndef WH__CONV_COL_BUDGET
#define WH__CONV_COL_BUDGET ((size_t)256 << 20)
#endif

static wh_status fail(wh__exec *ex, wh_status s, const char *op, const char *what) {
  return wh__cu_msg(ex, s, "%s: %s", op, what);
}

static wh_status zero_fill(wh__exec *ex, wh__tensor *t, const char *op) {
  cudaError_t e = cudaMemsetAsync(t->data, 0, (size_t)t->numel * sizeof(float), wh__cu_stream(ex));
  return e == cudaSuccess ? WH_OK : wh__cu_fail(ex, e, op);
}

/* ---- the three conv kernels (geometry: ../conv_geom.h) */

/* Empty sums are zero: covers N, C, O or a spatial size of 0. *done is set when nothing is left. */
static wh_status conv_degenerate(wh__exec *ex, const char *op, const wh__tensor *in, int n_in, wh__tensor *out,
                                 int *done) {
  *done = 1;
  if (out->numel == 0) return WH_OK;
  for (int i = 0; i < n_in; i++)
    if (in[i].numel == 0) return zero_fill(ex, out, op);
  *done = 0;
  return WH_OK;
}

/* The checked geometry of conv kernel k; *done when nothing is left to compute (conv_degenerate). */
static wh_status conv_begin(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out, const char *op,
                            conv_kind k, conv_geom *g, int *done) {
  const char *why;
  *done = 1;
  wh_status st = conv_setup(k, n, in, out, g, &why);
  if (st != WH_OK) return fail(ex, st, op, why);
  return conv_degenerate(ex, op, in, 2, out, done);
}

/* Images per column chunk when one image needs per_image floats of workspace. */
static int64_t conv_chunk(const conv_geom *g, int64_t per_image) {
  int64_t nb = (int64_t)(WH__CONV_COL_BUDGET / sizeof(float)) / (per_image > 0 ? per_image : 1);
  if (nb > g->N) nb = g->N;
  return nb < 1 ? 1 : nb;
}

static float *conv_scratch(wh__exec *ex, const char *op, size_t floats) {
  float *p = (float *)wh__cuda_scratch(ex, floats * sizeof(float));
  if (!p) fail(ex, WH_ERR_OUT_OF_MEMORY, op, "no device memory for the im2col workspace");
  return p;
}

/* Column matrix of nb images starting at x: row r = (c*KH + kh)*KW + kw, column q = oh*OW + ow.
 * wide = 0: one [C*KH*KW, OH*OW] matrix per image, one after another;
 * wide = 1: a single [C*KH*KW, nb*OH*OW] matrix, image i at columns i*OH*OW .. (i+1)*OH*OW - 1. */
static __global__ void im2col_kernel(conv_geom g, const float *__restrict__ x, float *__restrict__ col, int64_t nb,
                              int wide) {
  int64_t ohw = g.OH * g.OW, ckk = g.C * g.KH * g.KW, total = nb * ckk * ohw;
  for (int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
       idx += (int64_t)gridDim.x * blockDim.x) {
    int64_t q = idx % ohw, rest = idx / ohw, i, r;
    if (wide) {
      i = rest % nb;
      r = rest / nb;
    } else {
      r = rest % ckk;
      i = rest / ckk;
    }
    int64_t ow = q % g.OW, oh = q / g.OW;
    int64_t kw = r % g.KW, t = r / g.KW, kh = t % g.KH, c = t / g.KH;
    int64_t ih = oh * g.s - g.p + kh, iw = ow * g.s - g.p + kw;
    float v = 0.0f;
    if (ih >= 0 && ih < g.H && iw >= 0 && iw < g.W) v = x[((i * g.C + c) * g.H + ih) * g.W + iw];
    col[idx] = v;
  }
}

/* The adjoint of im2col (per-image layout) for nb images: each input pixel sums the column
 * entries that read it, in (kh, kw) order as the CPU's col2im adds them. */
static __global__ void col2im_kernel(conv_geom g, const float *__restrict__ col, float *__restrict__ dx, int64_t nb) {
  int64_t ohw = g.OH * g.OW, ckk = g.C * g.KH * g.KW, total = nb * g.C * g.H * g.W;
  for (int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
       idx += (int64_t)gridDim.x * blockDim.x) {
    int64_t iw = idx % g.W, t = idx / g.W, ih = t % g.H;
    t /= g.H;
    int64_t c = t % g.C, i = t / g.C;
    const float *ci = col + i * ckk * ohw + c * g.KH * g.KW * ohw;
    float acc = 0.0f;
    for (int64_t kh = 0; kh < g.KH; kh++) {
      int64_t th = ih + g.p - kh;
      if (th < 0) break;
      if (th % g.s) continue;
      int64_t oh = th / g.s;
      if (oh >= g.OH) continue;
      for (int64_t kw = 0; kw < g.KW; kw++) {
        int64_t tw = iw + g.p - kw;
        if (tw < 0) break;
        if (tw % g.s) continue;
        int64_t ow = tw / g.s;
        if (ow >= g.OW) continue;
        acc += ci[(kh * g.KW + kw) * ohw + oh * g.OW + ow];
      }
    }
    dx[idx] = acc;
  }
}

/* dy of nb images [nb, O, OH*OW] -> [O, nb*OH*OW], matching the wide column matrix. */
static __global__ void dy_wide_kernel(conv_geom g, const float *__restrict__ dy, float *__restrict__ dyt, int64_t nb) {
  int64_t ohw = g.OH * g.OW, total = g.O * nb * ohw;
  for (int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
       idx += (int64_t)gridDim.x * blockDim.x) {
    int64_t q = idx % ohw, rest = idx / ohw, i = rest % nb, o = rest / nb;
    dyt[idx] = dy[(i * g.O + o) * ohw + q];
  }
}

static wh_status im2col(wh__exec *ex, const conv_geom *g, const float *x, float *col, int64_t nb, int wide) {
  int64_t total = nb * g->C * g->KH * g->KW * g->OH * g->OW;
  im2col_kernel<<<wh__cu_blocks(ex, total, WH__CONV_THREADS), WH__CONV_THREADS, 0, wh__cu_stream(ex)>>>(
      *g, x, col, nb, wide);
  WH_CU_LAUNCHED(ex, "conv2d im2col");
  return WH_OK;
}

extern "C" wh_status wh__cuk_conv2d(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out) {
  static const char op[] = "conv2d";
  conv_geom g;
  int done;
  wh_status st = conv_begin(ex, n, in, out, op, CONV_FORWARD, &g, &done);
  if (st != WH_OK || done) return st;
  const wh__tensor *x = &in[0], *w = &in[1];
  int64_t ckk = g.C * g.KH * g.KW, ohw = g.OH * g.OW, chw = g.C * g.H * g.W;
  const float *xd = wh__f32(x), *wd = wh__f32(w);
  float *y = wh__f32(out);
  /* y_i [O, OH*OW] = W [O, C*KH*KW] . col_i, batched over images with W shared */
  if (conv_is_pointwise(&g))
    return wh__cuda_gemm(ex, 0, 0, g.O, ohw, ckk, 1.0f, wd, ckk, 0, xd, ohw, chw, 0.0f, y, ohw, g.O * ohw, g.N);
  int64_t nb_max = conv_chunk(&g, ckk * ohw);
  float *col = conv_scratch(ex, op, (size_t)(nb_max * ckk * ohw));
  if (!col) return WH_ERR_OUT_OF_MEMORY;
  for (int64_t i0 = 0; i0 < g.N; i0 += nb_max) {
    int64_t nb = g.N - i0 < nb_max ? g.N - i0 : nb_max;
    if ((st = im2col(ex, &g, xd + i0 * chw, col, nb, 0)) != WH_OK) return st;
    st = wh__cuda_gemm(ex, 0, 0, g.O, ohw, ckk, 1.0f, wd, ckk, 0, col, ohw, ckk * ohw, 0.0f, y + i0 * g.O * ohw,
                       ohw, g.O * ohw, nb);
    if (st != WH_OK) return st;
  }
  return WH_OK;
}

extern "C" wh_status wh__cuk_conv2d_grad_input(wh__exec *ex, const wh__node *n, const wh__tensor *in,
                                               wh__tensor *out) {
  static const char op[] = "conv2d_grad_input";
  conv_geom g;
  int done;
  wh_status st = conv_begin(ex, n, in, out, op, CONV_GRAD_INPUT, &g, &done);
  if (st != WH_OK || done) return st;
  const wh__tensor *dy = &in[0], *w = &in[1];
  int64_t ckk = g.C * g.KH * g.KW, ohw = g.OH * g.OW, chw = g.C * g.H * g.W;
  const float *dyd = wh__f32(dy), *wd = wh__f32(w);
  float *dx = wh__f32(out);
  /* col_i [C*KH*KW, OH*OW] = W^T . dy_i, written straight into dx_i when the geometry is 1x1 */
  if (conv_is_pointwise(&g))
    return wh__cuda_gemm(ex, 1, 0, ckk, ohw, g.O, 1.0f, wd, ckk, 0, dyd, ohw, g.O * ohw, 0.0f, dx, ohw, chw,
                         g.N);
  int64_t nb_max = conv_chunk(&g, ckk * ohw);
  float *col = conv_scratch(ex, op, (size_t)(nb_max * ckk * ohw));
  if (!col) return WH_ERR_OUT_OF_MEMORY;
  for (int64_t i0 = 0; i0 < g.N; i0 += nb_max) {
    int64_t nb = g.N - i0 < nb_max ? g.N - i0 : nb_max;
    st = wh__cuda_gemm(ex, 1, 0, ckk, ohw, g.O, 1.0f, wd, ckk, 0, dyd + i0 * g.O * ohw, ohw, g.O * ohw, 0.0f,
                       col, ohw, ckk * ohw, nb);
    if (st != WH_OK) return st;
    int64_t total = nb * chw;
    col2im_kernel<<<wh__cu_blocks(ex, total, WH__CONV_THREADS), WH__CONV_THREADS, 0, wh__cu_stream(ex)>>>(
        g, col, dx + i0 * chw, nb);
    WH_CU_LAUNCHED(ex, "conv2d_grad_input col2im");
  }
  return WH_OK;
}

extern "C" wh_status wh__cuk_conv2d_grad_weight(wh__exec *ex, const wh__node *n, const wh__tensor *in,
                                                wh__tensor *out) {
  static const char op[] = "conv2d_grad_weight";
  conv_geom g;
  int done;
  wh_status st = conv_begin(ex, n, in, out, op, CONV_GRAD_WEIGHT, &g, &done);
  if (st != WH_OK || done) return st;
  const wh__tensor *x = &in[0], *dy = &in[1];
  int64_t ckk = g.C * g.KH * g.KW, ohw = g.OH * g.OW, chw = g.C * g.H * g.W;
  /* A chunk of nb images is one GEMM: dW [O, C*KH*KW] (+)= dy [O, nb*OH*OW] . col^T, with dy and
   * the columns laid out image after image along the summed dimension; chunks add in order. */
  int64_t nb_max = conv_chunk(&g, (ckk + g.O) * ohw);
  if (nb_max > INT_MAX / ohw) nb_max = INT_MAX / ohw;
  size_t col_floats = ((size_t)(nb_max * ckk * ohw) + 63) & ~(size_t)63;
  float *col = conv_scratch(ex, op, col_floats + (size_t)(nb_max * g.O * ohw));
  if (!col) return WH_ERR_OUT_OF_MEMORY;
  float *dyt = col + col_floats;
  for (int64_t i0 = 0; i0 < g.N; i0 += nb_max) {
    int64_t nb = g.N - i0 < nb_max ? g.N - i0 : nb_max, k = nb * ohw;
    if ((st = im2col(ex, &g, wh__f32(x) + i0 * chw, col, nb, 1)) != WH_OK) return st;
    int64_t total = g.O * k;
    dy_wide_kernel<<<wh__cu_blocks(ex, total, WH__CONV_THREADS), WH__CONV_THREADS, 0, wh__cu_stream(ex)>>>(
        g, wh__f32(dy) + i0 * g.O * ohw, dyt, nb);
    WH_CU_LAUNCHED(ex, "conv2d_grad_weight dy layout");
    st = wh__cuda_gemm(ex, 0, 1, g.O, ckk, k, 1.0f, dyt, k, 0, col, k, 0, i0 == 0 ? 0.0f : 1.0f, wh__f32(out),
                       ckk, 0, 1);
    if (st != WH_OK) return st;
  }
  return WH_OK;
}

/* ---- pooling: one thread per output element (forward) or per input element (backward);
 * geometry: ../conv_geom.h, windows: ../kmath.h */

/* The checked geometry of pooling kernel k. */
static wh_status pool_begin(wh__exec *ex, const wh__node *n, const wh__tensor *in, const wh__tensor *out,
                            const char *op, pool_kind k, pool_geom *j) {
  const char *why;
  wh_status st = pool_setup(k, n, in, out, j, &why);
  return st == WH_OK ? WH_OK : fail(ex, st, op, why);
}

#define WH__GRID_LOOP(idx, total)                                                   \
  for (int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; idx < (total); \
       idx += (int64_t)gridDim.x * blockDim.x)

static __global__ void max_fwd_kernel(pool_geom j, const float *__restrict__ x, float *__restrict__ y, int64_t total) {
  WH__GRID_LOOP(idx, total) {
    int64_t ow = idx % j.OW, t = idx / j.OW, oh = t % j.OH, pl = t / j.OH;
    const float *xp = x + pl * j.H * j.W;
    int64_t a = wh__pool_argmax(xp, j.H, j.W, j.k, j.s, j.p, oh, ow);
    /* an all-padding window has no input to pick; 0 keeps it finite */
    y[idx] = a < 0 ? 0.0f : xp[a];
  }
}

static __global__ void max_argmax_kernel(pool_geom j, const float *__restrict__ x, int64_t *__restrict__ arg,
                                  int64_t total) {
  WH__GRID_LOOP(idx, total) {
    int64_t ow = idx % j.OW, t = idx / j.OW, oh = t % j.OH, pl = t / j.OH;
    arg[idx] = wh__pool_argmax(x + pl * j.H * j.W, j.H, j.W, j.k, j.s, j.p, oh, ow);
  }
}

/* Each input element sums the gradients of the windows that picked it, in row-major window order. */
static __global__ void max_bwd_kernel(pool_geom j, const int64_t *__restrict__ arg, const float *__restrict__ dy,
                               float *__restrict__ dx, int64_t total) {
  WH__GRID_LOOP(idx, total) {
    int64_t iw = idx % j.W, t = idx / j.W, ih = t % j.H, pl = t / j.H;
    int64_t h0, h1, w0, w1, me = ih * j.W + iw;
    wh__pool_covering(ih, j.k, j.s, j.p, j.OH, &h0, &h1);
    wh__pool_covering(iw, j.k, j.s, j.p, j.OW, &w0, &w1);
    const int64_t *ap = arg + pl * j.OH * j.OW;
    const float *dyp = dy + pl * j.OH * j.OW;
    float acc = 0.0f;
    for (int64_t oh = h0; oh < h1; oh++)
      for (int64_t ow = w0; ow < w1; ow++)
        if (ap[oh * j.OW + ow] == me) acc += dyp[oh * j.OW + ow];
    dx[idx] = acc;
  }
}

static __global__ void avg_fwd_kernel(pool_geom j, const float *__restrict__ x, float *__restrict__ y, int64_t total) {
  float inv = 1.0f / (float)(j.k * j.k); /* count_include_pad: padding counts in the divisor */
  WH__GRID_LOOP(idx, total) {
    int64_t ow = idx % j.OW, t = idx / j.OW, oh = t % j.OH, pl = t / j.OH;
    const float *xp = x + pl * j.H * j.W;
    int64_t h0, h1, w0, w1;
    wh__pool_window(oh, j.k, j.s, j.p, j.H, &h0, &h1);
    wh__pool_window(ow, j.k, j.s, j.p, j.W, &w0, &w1);
    float acc = 0.0f;
    for (int64_t ih = h0; ih < h1; ih++)
      for (int64_t iw = w0; iw < w1; iw++) acc += xp[ih * j.W + iw];
    y[idx] = acc * inv;
  }
}

static __global__ void avg_bwd_kernel(pool_geom j, const float *__restrict__ dy, float *__restrict__ dx, int64_t total) {
  float inv = 1.0f / (float)(j.k * j.k);
  WH__GRID_LOOP(idx, total) {
    int64_t iw = idx % j.W, t = idx / j.W, ih = t % j.H, pl = t / j.H;
    int64_t h0, h1, w0, w1;
    wh__pool_covering(ih, j.k, j.s, j.p, j.OH, &h0, &h1);
    wh__pool_covering(iw, j.k, j.s, j.p, j.OW, &w0, &w1);
    const float *dyp = dy + pl * j.OH * j.OW;
    float acc = 0.0f;
    /* the product is rounded before the add, as on the CPU (no contraction into an fma) */
    for (int64_t oh = h0; oh < h1; oh++)
      for (int64_t ow = w0; ow < w1; ow++) acc += __fmul_rn(dyp[oh * j.OW + ow], inv);
    dx[idx] = acc;
  }
}

/* Forward pooling (max or avg): kernel computes each of the N*C*OH*OW outputs. */
static wh_status pool_forward(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out, const char *op,
                              void (*kernel)(pool_geom, const float *, float *, int64_t)) {
  pool_geom j;
  wh_status st = pool_begin(ex, n, in, out, op, POOL_FORWARD, &j);
  if (st != WH_OK) return st;
  int64_t total = in[0].d[0] * in[0].d[1] * j.OH * j.OW;
  if (total <= 0) return WH_OK;
  kernel<<<wh__cu_blocks(ex, total, WH__CONV_THREADS), WH__CONV_THREADS, 0, wh__cu_stream(ex)>>>(
      j, wh__f32(&in[0]), wh__f32(out), total);
  WH_CU_LAUNCHED(ex, op);
  return WH_OK;
}

extern "C" wh_status wh__cuk_max_pool2d(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out) {
  return pool_forward(ex, n, in, out, "max_pool2d", max_fwd_kernel);
}

extern "C" wh_status wh__cuk_max_pool2d_grad(wh__exec *ex, const wh__node *n, const wh__tensor *in,
                                             wh__tensor *out) {
  static const char op[] = "max_pool2d_grad";
  pool_geom j;
  wh_status st = pool_begin(ex, n, in, out, op, POOL_MAX_GRAD, &j);
  if (st != WH_OK) return st;
  int64_t planes = out->d[0] * out->d[1], n_out = planes * j.OH * j.OW, n_in = planes * j.H * j.W;
  if (n_in <= 0) return WH_OK;
  if (n_out <= 0) return zero_fill(ex, out, op);
  int64_t *arg = (int64_t *)wh__cuda_scratch(ex, (size_t)n_out * sizeof(int64_t));
  if (!arg) return fail(ex, WH_ERR_OUT_OF_MEMORY, op, "no device memory for the argmax workspace");
  max_argmax_kernel<<<wh__cu_blocks(ex, n_out, WH__CONV_THREADS), WH__CONV_THREADS, 0, wh__cu_stream(ex)>>>(
      j, wh__f32(&in[0]), arg, n_out);
  WH_CU_LAUNCHED(ex, "max_pool2d_grad argmax");
  max_bwd_kernel<<<wh__cu_blocks(ex, n_in, WH__CONV_THREADS), WH__CONV_THREADS, 0, wh__cu_stream(ex)>>>(
      j, arg, wh__f32(&in[1]), wh__f32(out), n_in);
  WH_CU_LAUNCHED(ex, "max_pool2d_grad");
  return WH_OK;
}

extern "C" wh_status wh__cuk_avg_pool2d(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out) {
  return pool_forward(ex, n, in, out, "avg_pool2d", avg_fwd_kernel);
}

extern "C" wh_status wh__cuk_avg_pool2d_grad(wh__exec *ex, const wh__node *n, const wh__tensor *in,
                                             wh__tensor *out) {
  pool_geom j;
  wh_status st = pool_begin(ex, n, in, out, "avg_pool2d_grad", POOL_AVG_GRAD, &j);
  if (st != WH_OK) return st;
  int64_t total = out->d[0] * out->d[1] * j.H * j.W;
  if (total <= 0) return WH_OK;
  avg_bwd_kernel<<<wh__cu_blocks(ex, total, WH__CONV_THREADS), WH__CONV_THREADS, 0, wh__cu_stream(ex)>>>(
      j, wh__f32(&in[0]), wh__f32(out), total);
  WH_CU_LAUNCHED(ex, "avg_pool2d_grad");
  return WH_OK;
}
