/* conv.c - CPU kernels for conv2d (im2col + sgemm) and 2-D max/avg pooling, forward and backward.
 * Each output element is written by one range in a fixed order: results never depend on the pool size. */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../conv_geom.h"
#include "../kmath.h"

/* Below this many inner-loop steps per range, threading costs more than it saves. */
#define WH__CONV_GRAIN_WORK 4096

static int64_t grain_for(int64_t work_per_item) {
  if (work_per_item < 1) work_per_item = 1;
  int64_t g = (WH__CONV_GRAIN_WORK + work_per_item - 1) / work_per_item;
  return g < 1 ? 1 : g;
}

static wh_status fail(wh__exec *ex, wh_status s, const char *op, const char *what) {
  if (ex->err && ex->err_cap > 0) snprintf(ex->err, (size_t)ex->err_cap, "%s: %s", op, what);
  return s;
}

/* Output columns [lo, hi) whose input index ow*s + off lands inside [0, len). */
static void valid_range(int64_t off, int64_t s, int64_t len, int64_t nout, int64_t *lo, int64_t *hi) {
  int64_t l = off >= 0 ? 0 : (-off + s - 1) / s;
  int64_t h = (len - 1 - off) < 0 ? 0 : (len - 1 - off) / s + 1;
  if (l > nout) l = nout;
  if (h > nout) h = nout;
  if (h < l) h = l;
  *lo = l;
  *hi = h;
}

typedef struct {
  const conv_geom *g;
  const float *src; /* im2col: one image [C, H, W]; col2im: the column matrix [C*KH*KW, OH*OW] */
  float *dst;       /* the other one */
} col_job;

/* Rows of channel c are c*KH*KW .. (c+1)*KH*KW - 1, so a channel range owns its rows. */
static void im2col_range(void *arg, int64_t c0, int64_t c1) {
  const col_job *j = arg;
  const conv_geom *g = j->g;
  for (int64_t c = c0; c < c1; c++) {
    const float *xc = j->src + c * g->H * g->W;
    for (int64_t kh = 0; kh < g->KH; kh++) {
      for (int64_t kw = 0; kw < g->KW; kw++) {
        float *row = j->dst + ((c * g->KH + kh) * g->KW + kw) * g->OH * g->OW;
        int64_t lo, hi;
        valid_range(kw - g->p, g->s, g->W, g->OW, &lo, &hi);
        for (int64_t oh = 0; oh < g->OH; oh++) {
          float *r = row + oh * g->OW;
          int64_t ih = oh * g->s - g->p + kh;
          if (ih < 0 || ih >= g->H) {
            memset(r, 0, (size_t)g->OW * sizeof *r);
            continue;
          }
          const float *xr = xc + ih * g->W; /* indexed with the offset, never pointed before it */
          int64_t off = kw - g->p;
          for (int64_t ow = 0; ow < lo; ow++) r[ow] = 0.0f;
          for (int64_t ow = lo; ow < hi; ow++) r[ow] = xr[ow * g->s + off];
          for (int64_t ow = hi; ow < g->OW; ow++) r[ow] = 0.0f;
        }
      }
    }
  }
}

/* The adjoint of im2col; accumulates into an image that was zeroed beforehand. */
static void col2im_range(void *arg, int64_t c0, int64_t c1) {
  const col_job *j = arg;
  const conv_geom *g = j->g;
  for (int64_t c = c0; c < c1; c++) {
    float *xc = j->dst + c * g->H * g->W;
    for (int64_t kh = 0; kh < g->KH; kh++) {
      for (int64_t kw = 0; kw < g->KW; kw++) {
        const float *row = j->src + ((c * g->KH + kh) * g->KW + kw) * g->OH * g->OW;
        int64_t lo, hi;
        valid_range(kw - g->p, g->s, g->W, g->OW, &lo, &hi);
        for (int64_t oh = 0; oh < g->OH; oh++) {
          int64_t ih = oh * g->s - g->p + kh;
          if (ih < 0 || ih >= g->H) continue;
          const float *r = row + oh * g->OW;
          float *xr = xc + ih * g->W;
          int64_t off = kw - g->p;
          for (int64_t ow = lo; ow < hi; ow++) xr[ow * g->s + off] += r[ow];
        }
      }
    }
  }
}

static void im2col(wh__exec *ex, const conv_geom *g, const float *img, float *col) {
  col_job j = {g, img, col};
  wh__parallel_for(ex->pool, g->C, grain_for(g->KH * g->KW * g->OH * g->OW), im2col_range, &j);
}

static void col2im(wh__exec *ex, const conv_geom *g, const float *col, float *img) {
  col_job j = {g, col, img};
  wh__parallel_for(ex->pool, g->C, grain_for(g->KH * g->KW * g->OH * g->OW), col2im_range, &j);
}

/* Scratch for one image's column matrix, unless the image can stand in for it. */
static wh_status conv_cols(wh__exec *ex, const conv_geom *g, const char *op, float **col) {
  *col = NULL;
  if (conv_is_pointwise(g)) return WH_OK;
  size_t bytes = (size_t)(g->C * g->KH * g->KW) * (size_t)(g->OH * g->OW) * sizeof(float);
  *col = wh__exec_scratch(ex, bytes);
  if (!*col) return fail(ex, WH_ERR_OUT_OF_MEMORY, op, "no memory for the im2col workspace");
  return WH_OK;
}

/* Empty sums are zero: covers N, C, O or a spatial size of 0 without handing BLAS a zero
 * leading dimension (which it rejects with a message on stderr). */
static int conv_degenerate(const wh__tensor *in, int n_in, wh__tensor *out) {
  if (out->numel == 0) return 1;
  for (int i = 0; i < n_in; i++) {
    if (in[i].numel == 0) {
      memset(out->data, 0, (size_t)out->numel * sizeof(float));
      return 1;
    }
  }
  return 0;
}

/* The checked geometry of conv kernel k and, unless *done (nothing left to compute), its column
 * scratch (conv_cols). */
static wh_status conv_begin(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out, const char *op,
                            conv_kind k, conv_geom *g, float **col, int *done) {
  const char *why;
  *done = 1;
  wh_status st = conv_setup(k, n, in, out, g, &why);
  if (st != WH_OK) return fail(ex, st, op, why);
  if (conv_degenerate(in, 2, out)) return WH_OK;
  *done = 0;
  return conv_cols(ex, g, op, col);
}

wh_status wh__cpu_conv2d(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out) {
  conv_geom g;
  float *col;
  int done;
  wh_status st = conv_begin(ex, n, in, out, "conv2d", CONV_FORWARD, &g, &col, &done);
  if (st != WH_OK || done) return st;
  const wh__tensor *x = &in[0], *w = &in[1];
  int ckk = (int)(g.C * g.KH * g.KW), ohw = (int)(g.OH * g.OW);
  for (int64_t i = 0; i < g.N; i++) {
    const float *xi = wh__f32(x) + i * g.C * g.H * g.W;
    float *yi = wh__f32(out) + i * g.O * ohw;
    const float *b = xi;
    if (col) {
      im2col(ex, &g, xi, col);
      b = col;
    }
    /* y_i [O, OH*OW] = W [O, C*KH*KW] . col_i */
    wh__gemm(ex->pool, 0, 0, g.O, ohw, ckk, 1.0f, wh__f32(w), ckk, b, ohw, 0.0f, yi, ohw);
  }
  return WH_OK;
}

wh_status wh__cpu_conv2d_grad_input(wh__exec *ex, const wh__node *n, const wh__tensor *in,
                                    wh__tensor *out) {
  conv_geom g;
  float *col;
  int done;
  wh_status st = conv_begin(ex, n, in, out, "conv2d_grad_input", CONV_GRAD_INPUT, &g, &col, &done);
  if (st != WH_OK || done) return st;
  const wh__tensor *dy = &in[0], *w = &in[1];
  int ckk = (int)(g.C * g.KH * g.KW), ohw = (int)(g.OH * g.OW);
  int64_t chw = g.C * g.H * g.W;
  for (int64_t i = 0; i < g.N; i++) {
    const float *dyi = wh__f32(dy) + i * g.O * ohw;
    float *dxi = wh__f32(out) + i * chw;
    /* col [C*KH*KW, OH*OW] = W^T . dy_i, written straight into dx_i when the geometry is 1x1 */
    float *c = col ? col : dxi;
    wh__gemm(ex->pool, 1, 0, ckk, ohw, g.O, 1.0f, wh__f32(w), ckk, dyi, ohw, 0.0f, c, ohw);
    if (col) {
      memset(dxi, 0, (size_t)chw * sizeof *dxi);
      col2im(ex, &g, col, dxi);
    }
  }
  return WH_OK;
}

wh_status wh__cpu_conv2d_grad_weight(wh__exec *ex, const wh__node *n, const wh__tensor *in,
                                     wh__tensor *out) {
  conv_geom g;
  float *col;
  int done;
  wh_status st = conv_begin(ex, n, in, out, "conv2d_grad_weight", CONV_GRAD_WEIGHT, &g, &col, &done);
  if (st != WH_OK || done) return st;
  const wh__tensor *x = &in[0], *dy = &in[1];
  int ckk = (int)(g.C * g.KH * g.KW), ohw = (int)(g.OH * g.OW);
  /* Images are summed one after another in index order: a fixed reduction order. */
  for (int64_t i = 0; i < g.N; i++) {
    const float *xi = wh__f32(x) + i * g.C * g.H * g.W;
    const float *dyi = wh__f32(dy) + i * g.O * ohw;
    const float *b = xi;
    if (col) {
      im2col(ex, &g, xi, col);
      b = col;
    }
    /* dW [O, C*KH*KW] (+)= dy_i [O, OH*OW] . col_i^T */
    wh__gemm(ex->pool, 0, 1, g.O, ckk, ohw, 1.0f, dyi, ohw, b, ohw, i == 0 ? 0.0f : 1.0f, wh__f32(out), ckk);
  }
  return WH_OK;
}

/* ---- pooling: one (n, c) plane per work item; a plane is read and written by one range only;
 * windows: ../kmath.h */

typedef struct {
  int64_t H, W, OH, OW, k, s, p;
  const float *x;  /* forward input (max pool) */
  const float *dy; /* incoming gradient (backward) */
  float *y;        /* forward output, or dx in backward */
} pool_job;

static void max_fwd_range(void *arg, int64_t p0, int64_t p1) {
  const pool_job *j = arg;
  for (int64_t pl = p0; pl < p1; pl++) {
    const float *xp = j->x + pl * j->H * j->W;
    float *yp = j->y + pl * j->OH * j->OW;
    for (int64_t oh = 0; oh < j->OH; oh++) {
      for (int64_t ow = 0; ow < j->OW; ow++) {
        int64_t a = wh__pool_argmax(xp, j->H, j->W, j->k, j->s, j->p, oh, ow);
        /* an all-padding window (padding > kernel/2) has no input to pick; 0 keeps it finite */
        yp[oh * j->OW + ow] = a < 0 ? 0.0f : xp[a];
      }
    }
  }
}

static void max_bwd_range(void *arg, int64_t p0, int64_t p1) {
  const pool_job *j = arg;
  for (int64_t pl = p0; pl < p1; pl++) {
    const float *xp = j->x + pl * j->H * j->W;
    const float *dyp = j->dy + pl * j->OH * j->OW;
    float *dxp = j->y + pl * j->H * j->W;
    memset(dxp, 0, (size_t)(j->H * j->W) * sizeof *dxp);
    for (int64_t oh = 0; oh < j->OH; oh++) {
      for (int64_t ow = 0; ow < j->OW; ow++) {
        int64_t a = wh__pool_argmax(xp, j->H, j->W, j->k, j->s, j->p, oh, ow);
        if (a >= 0) dxp[a] += dyp[oh * j->OW + ow];
      }
    }
  }
}

static void avg_fwd_range(void *arg, int64_t p0, int64_t p1) {
  const pool_job *j = arg;
  float inv = 1.0f / (float)(j->k * j->k); /* count_include_pad: padding counts in the divisor */
  for (int64_t pl = p0; pl < p1; pl++) {
    const float *xp = j->x + pl * j->H * j->W;
    float *yp = j->y + pl * j->OH * j->OW;
    for (int64_t oh = 0; oh < j->OH; oh++) {
      int64_t h0, h1;
      wh__pool_window(oh, j->k, j->s, j->p, j->H, &h0, &h1);
      for (int64_t ow = 0; ow < j->OW; ow++) {
        int64_t w0, w1;
        wh__pool_window(ow, j->k, j->s, j->p, j->W, &w0, &w1);
        float acc = 0.0f;
        for (int64_t ih = h0; ih < h1; ih++)
          for (int64_t iw = w0; iw < w1; iw++) acc += xp[ih * j->W + iw];
        yp[oh * j->OW + ow] = acc * inv;
      }
    }
  }
}

static void avg_bwd_range(void *arg, int64_t p0, int64_t p1) {
  const pool_job *j = arg;
  float inv = 1.0f / (float)(j->k * j->k);
  for (int64_t pl = p0; pl < p1; pl++) {
    const float *dyp = j->dy + pl * j->OH * j->OW;
    float *dxp = j->y + pl * j->H * j->W;
    memset(dxp, 0, (size_t)(j->H * j->W) * sizeof *dxp);
    for (int64_t oh = 0; oh < j->OH; oh++) {
      int64_t h0, h1;
      wh__pool_window(oh, j->k, j->s, j->p, j->H, &h0, &h1);
      for (int64_t ow = 0; ow < j->OW; ow++) {
        int64_t w0, w1;
        wh__pool_window(ow, j->k, j->s, j->p, j->W, &w0, &w1);
        float g = dyp[oh * j->OW + ow] * inv;
        for (int64_t ih = h0; ih < h1; ih++)
          for (int64_t iw = w0; iw < w1; iw++) dxp[ih * j->W + iw] += g;
      }
    }
  }
}

/* Checks pooling kernel k's geometry (pool_setup) and runs fn over its N*C planes. */
static wh_status pool_run(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out, const char *op,
                          pool_kind k, wh__range_fn fn) {
  pool_geom g;
  const char *why;
  wh_status st = pool_setup(k, n, in, out, &g, &why);
  if (st != WH_OK) return fail(ex, st, op, why);
  const float *x = k == POOL_AVG_GRAD ? NULL : wh__f32(&in[0]);
  const float *dy = k == POOL_MAX_GRAD ? wh__f32(&in[1]) : k == POOL_AVG_GRAD ? wh__f32(&in[0]) : NULL;
  pool_job j = {g.H, g.W, g.OH, g.OW, g.k, g.s, g.p, x, dy, wh__f32(out)};
  wh__parallel_for(ex->pool, out->d[0] * out->d[1], grain_for(j.OH * j.OW * j.k * j.k + j.H * j.W), fn, &j);
  return WH_OK;
}

wh_status wh__cpu_max_pool2d(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out) {
  return pool_run(ex, n, in, out, "max_pool2d", POOL_FORWARD, max_fwd_range);
}

wh_status wh__cpu_max_pool2d_grad(wh__exec *ex, const wh__node *n, const wh__tensor *in,
                                  wh__tensor *out) {
  return pool_run(ex, n, in, out, "max_pool2d_grad", POOL_MAX_GRAD, max_bwd_range);
}

wh_status wh__cpu_avg_pool2d(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out) {
  return pool_run(ex, n, in, out, "avg_pool2d", POOL_FORWARD, avg_fwd_range);
}

wh_status wh__cpu_avg_pool2d_grad(wh__exec *ex, const wh__node *n, const wh__tensor *in,
                                  wh__tensor *out) {
  return pool_run(ex, n, in, out, "avg_pool2d_grad", POOL_AVG_GRAD, avg_bwd_range);
}
