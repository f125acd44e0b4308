/* kmath.h - the scalar math both backends' kernels must agree on, written once: GELU, the dropout
 * mask, strides, pooling windows. Valid as C11 and as CUDA C++ (WH_KM functions run on the host
 * and on the device); each formula keeps its exact order of operations, so results stay bit for bit. */
#ifndef WH_KERNELS_KMATH_H
#define WH_KERNELS_KMATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif
#include "kernels.h"
#ifdef __cplusplus
}
#endif

#ifdef __CUDACC__
#define WH_KM static __host__ __device__ __forceinline__
#else
#define WH_KM static inline
#endif

/* ---- GELU, tanh form: 0.5 v (1 + tanh(u)) = v * sigmoid(2u), u = sqrt(2/pi) (v + 0.044715 v^3):
 * one exp and no cancellation. Each backend applies its own sigmoid to the argument 2u. */

#define WH_GELU_K 0.7978845608028654f /* sqrt(2/pi) */
#define WH_GELU_C 0.044715f

/* The forward's 2u. */
WH_KM float wh__gelu_2u(float v) { return 2.0f * WH_GELU_K * (v + WH_GELU_C * v * v * v); }

/* The gradient's 2u: it rounds v^3 as (v v) v, the forward as ((c v) v) v; each keeps its own. */
WH_KM float wh__gelu_grad_2u(float v) {
  float v2 = v * v;
  return 2.0f * WH_GELU_K * (v + WH_GELU_C * v2 * v);
}

/* dy gelu'(v), with sg = sigmoid(wh__gelu_grad_2u(v)): gelu = v sg, gelu' = sg + v sg (1 - sg) 2u'. */
WH_KM float wh__gelu_grad(float v, float sg, float dy) {
  float v2 = v * v;
  float du = 2.0f * WH_GELU_K * (1.0f + 3.0f * WH_GELU_C * v2);
  return dy * (sg + v * sg * (1.0f - sg) * du);
}

/* ---- dropout: the keep decision is a hash of (seed, step, global element index), so the backward
 * pass, every rank holding the same elements and either backend reproduce the mask unstored. */

WH_KM uint64_t wh__mix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

typedef struct wh__dropout {
  int64_t base;       /* global index of element 0: masks follow the sample, not the rank or slice */
  uint64_t key;       /* of the node's seed and the optimizer step */
  uint64_t threshold; /* drop when the hash is below it */
  float scale;        /* of the kept elements */
} wh__dropout;

/* The mask of dropout node n (ia[0]: seed, fa[0]: p > 0) over an output of numel elements. */
static inline wh__dropout wh__dropout_of(const wh__exec *ex, const wh__node *n, int64_t numel) {
  double p = n->fa[0];
  uint64_t seed;
  memcpy(&seed, &n->ia[0], sizeof seed);
  wh__dropout d;
  d.key = wh__mix64(seed ^ wh__mix64((uint64_t)ex->step));
  d.scale = (float)(1.0 / (1.0 - p));
  double t = p * 18446744073709551616.0; /* p * 2^64, kept below 2^64 for the cast */
  d.threshold = t >= 18446744073709549568.0 ? UINT64_MAX : (uint64_t)t;
  d.base = 0;
  if (ex->batch > 0 && numel % ex->batch == 0) d.base = ex->row0 * (numel / ex->batch);
  return d;
}

/* Element i's output under mask d: dropped, or x scaled. */
WH_KM float wh__dropout_apply(const wh__dropout *d, int64_t i, float x) {
  uint64_t h = wh__mix64(d->key ^ wh__mix64((uint64_t)(i + d->base)));
  return h < d->threshold ? 0.0f : x * d->scale;
}

/* ---- strides */

/* Row-major strides of t's dimensions, in elements. */
static inline void wh__row_strides(const wh__tensor *t, int64_t *st) {
  int64_t s = 1;
  for (int k = t->ndim - 1; k >= 0; k--) {
    st[k] = s;
    s *= t->d[k];
  }
}

/* Strides of t aligned right against an output of rank nd with dims od; 0 where t broadcasts. */
static inline void wh__bcast_strides(const wh__tensor *t, int nd, const int64_t *od, int64_t *s) {
  int64_t st = 1;
  for (int k = nd - 1; k >= 0; k--) {
    int tk = t->ndim - nd + k;
    if (tk < 0) {
      s[k] = 0;
      continue;
    }
    s[k] = (t->d[tk] == 1 && od[k] != 1) ? 0 : st;
    st *= t->d[tk];
  }
}

/* t viewed as [outer, d[ax], inner]. */
static inline void wh__outer_inner(const wh__tensor *t, int ax, int64_t *outer, int64_t *inner) {
  *outer = *inner = 1;
  for (int k = 0; k < ax; k++) *outer *= t->d[k];
  for (int k = ax + 1; k < t->ndim; k++) *inner *= t->d[k];
}

/* ---- pooling windows along one axis of length len: kernel k, stride s, padding p */

/* Inputs [*lo, *hi) the window of output o covers, padding clipped off. */
WH_KM void wh__pool_window(int64_t o, int64_t k, int64_t s, int64_t p, int64_t len, int64_t *lo, int64_t *hi) {
  int64_t b = o * s - p, e = b + k;
  *lo = b < 0 ? 0 : b;
  *hi = e > len ? len : e;
}

/* Outputs [*lo, *hi) of nout whose windows cover input i. */
WH_KM void wh__pool_covering(int64_t i, int64_t k, int64_t s, int64_t p, int64_t nout, int64_t *lo, int64_t *hi) {
  int64_t d = i + p - k;
  *lo = d < 0 ? 0 : d / s + 1;
  int64_t h = (i + p) / s + 1;
  *hi = h > nout ? nout : h;
}

/* Index (within an H x W plane xp) of the first maximum of output (oh, ow)'s window in row-major
 * order, padding never winning; a NaN counts as the maximum so it propagates as in PyTorch. -1 for
 * an empty window. */
WH_KM int64_t wh__pool_argmax(const float *xp, int64_t H, int64_t W, int64_t k, int64_t s, int64_t p, int64_t oh,
                              int64_t ow) {
  int64_t h0, h1, w0, w1;
  wh__pool_window(oh, k, s, p, H, &h0, &h1);
  wh__pool_window(ow, k, s, p, W, &w0, &w1);
  int64_t best = -1;
  float bv = -INFINITY;
  for (int64_t ih = h0; ih < h1; ih++) {
    for (int64_t iw = w0; iw < w1; iw++) {
      float v = xp[ih * W + iw];
      if (best < 0 || v > bv || (isnan(v) && !isnan(bv))) {
        best = ih * W + iw;
        bv = v;
      }
    }
  }
  return best;
}

#endif
