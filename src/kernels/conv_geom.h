/* conv_geom.h - the host-side geometry of conv2d and 2-D pooling, shared by the CPU kernels
 * (cpu/conv.c) and their CUDA twins (cuda/conv.cu): reading it off the tensors and attributes, and
 * checking it, with one message per failure. Every function is static inline and valid both as C11
 * and as CUDA C++. A check that fails returns its status and points *why at its message; the
 * kernel reports it as "op: message" through its backend. */
#ifndef WH_KERNELS_CONV_GEOM_H
#define WH_KERNELS_CONV_GEOM_H

#include <limits.h>

#ifdef __cplusplus
extern "C" {
#endif
#include "kernels.h"
#ifdef __cplusplus
}
#endif

/* ---- conv2d: image x [N, C, H, W], weight w [O, C, KH, KW], output y [N, O, OH, OW] */

typedef struct conv_geom {
  int64_t N, C, H, W, O, KH, KW, OH, OW, s, p;
} conv_geom;

/* Which conv kernel: which of in[0], in[1] and out hold the image, the weight and y (or dy).
 * forward: x, w -> y; grad_input: dy, w -> dx; grad_weight: x, dy -> dw. */
typedef enum conv_kind { CONV_FORWARD, CONV_GRAD_INPUT, CONV_GRAD_WEIGHT } conv_kind;

/* in[0 .. n_in) and out must all be 4-D f32. */
static inline wh_status conv_all_f32(const wh__tensor *in, int n_in, const wh__tensor *out, const char **why) {
  int ok = out->dtype == WH_F32 && out->ndim == 4;
  for (int i = 0; i < n_in; i++)
    if (in[i].dtype != WH_F32 || in[i].ndim != 4) ok = 0;
  if (ok) return WH_OK;
  *why = "expects 4-D f32 tensors";
  return WH_ERR_DTYPE;
}

/* Output size along one axis, -1 when the kernel does not fit the padded input. */
static inline int64_t conv_out_dim(int64_t in, int64_t k, int64_t s, int64_t p) {
  int64_t span = in + 2 * p - k;
  return span < 0 ? -1 : span / s + 1;
}

/* Cross-checks the geometry so a planner bug cannot make a GEMM read out of bounds; BLAS takes
 * int sizes, so everything handed to it must fit one. */
static inline wh_status conv_check(const conv_geom *g, const char **why) {
  if (g->s < 1 || g->p < 0) {
    *why = "stride must be >= 1 and padding >= 0";
    return WH_ERR_SHAPE;
  }
  if (g->OH != conv_out_dim(g->H, g->KH, g->s, g->p) || g->OW != conv_out_dim(g->W, g->KW, g->s, g->p)) {
    *why = "output size does not match input, kernel, stride and padding";
    return WH_ERR_SHAPE;
  }
  int64_t ckk = g->C * g->KH * g->KW, ohw = g->OH * g->OW;
  if (ckk > INT_MAX || ohw > INT_MAX || g->O > INT_MAX) {
    *why = "a matrix dimension exceeds the BLAS int range";
    return WH_ERR_UNSUPPORTED;
  }
  return WH_OK;
}

/* The geometry of conv kernel k (attributes: stride, padding), read off its tensors and checked. */
static inline wh_status conv_setup(conv_kind k, const wh__node *n, const wh__tensor *in, const wh__tensor *out,
                                   conv_geom *g, const char **why) {
  wh_status st = conv_all_f32(in, 2, out, why);
  if (st != WH_OK) return st;
  const wh__tensor *x = k == CONV_GRAD_INPUT ? out : &in[0];
  const wh__tensor *w = k == CONV_GRAD_WEIGHT ? out : &in[1];
  const wh__tensor *y = k == CONV_FORWARD ? out : k == CONV_GRAD_INPUT ? &in[0] : &in[1];
  conv_geom t = {x->d[0], x->d[1], x->d[2], x->d[3], w->d[0], w->d[2], w->d[3],
                 y->d[2], y->d[3], n->ia[0], n->ia[1]};
  *g = t;
  if (w->d[1] != g->C || y->d[0] != g->N || y->d[1] != g->O) {
    *why = k == CONV_FORWARD       ? "input, weight and output shapes disagree"
           : k == CONV_GRAD_INPUT  ? "gradient, weight and input shapes disagree"
                                   : "input, gradient and weight shapes disagree";
    return WH_ERR_SHAPE;
  }
  return conv_check(g, why);
}

/* 1x1, stride 1, no padding: the column matrix is the image itself. */
static inline int conv_is_pointwise(const conv_geom *g) {
  return g->KH == 1 && g->KW == 1 && g->s == 1 && g->p == 0;
}

/* ---- 2-D pooling over each (n, c) plane: input [N, C, H, W], output [N, C, OH, OW] */

typedef struct pool_geom {
  int64_t H, W, OH, OW, k, s, p;
} pool_geom;

/* Which pooling kernel: forward (max or avg): x -> y; max grad: x, dy -> dx; avg grad: dy -> dx. */
typedef enum pool_kind { POOL_FORWARD, POOL_MAX_GRAD, POOL_AVG_GRAD } pool_kind;

/* The geometry of pooling kernel k (attributes: kernel size, stride, padding), read off its tensors
 * and checked. */
static inline wh_status pool_setup(pool_kind k, const wh__node *n, const wh__tensor *in, const wh__tensor *out,
                                   pool_geom *g, const char **why) {
  wh_status st = conv_all_f32(in, k == POOL_MAX_GRAD ? 2 : 1, out, why);
  if (st != WH_OK) return st;
  if (k == POOL_MAX_GRAD) {
    for (int i = 0; i < 4; i++) {
      if (in[0].d[i] != out->d[i]) {
        *why = "input and its gradient differ in shape";
        return WH_ERR_SHAPE;
      }
    }
  }
  const wh__tensor *big = k == POOL_AVG_GRAD ? out : &in[0];
  const wh__tensor *small = k == POOL_FORWARD ? out : k == POOL_MAX_GRAD ? &in[1] : &in[0];
  int64_t kk = n->ia[0], s = n->ia[1], p = n->ia[2];
  if (kk < 1 || s < 1 || p < 0) {
    *why = "kernel and stride must be >= 1, padding >= 0";
    return WH_ERR_SHAPE;
  }
  if (big->d[0] != small->d[0] || big->d[1] != small->d[1] ||
      small->d[2] != conv_out_dim(big->d[2], kk, s, p) || small->d[3] != conv_out_dim(big->d[3], kk, s, p)) {
    *why = "input and output shapes do not match kernel, stride and padding";
    return WH_ERR_SHAPE;
  }
  pool_geom t = {big->d[2], big->d[3], small->d[2], small->d[3], kk, s, p};
  *g = t;
  return WH_OK;
}

#endif
