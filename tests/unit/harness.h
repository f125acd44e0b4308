/* harness.h - naive double-precision reference tensors for tests/unit/test_ops.c.
 * Every function here is deliberately the obvious loop nest: it is the ground truth the library's
 * kernels are compared against, so it must not share any code or cleverness with them. */
#ifndef WH_TEST_HARNESS_H
#define WH_TEST_HARNESS_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "whale.h"

/* A reference tensor: dense row-major doubles (integer inputs are stored as doubles too). */
typedef struct rt {
  int nd;
  int64_t d[WH_MAX_DIMS];
  int64_t n;
  double *v;
} rt;

static inline rt rt_new(int nd, const int64_t *d) {
  rt t;
  memset(&t, 0, sizeof t);
  t.nd = nd;
  t.n = 1;
  for (int i = 0; i < nd; i++) {
    t.d[i] = d[i];
    t.n *= d[i];
  }
  t.v = calloc((size_t)(t.n ? t.n : 1), sizeof(double));
  if (!t.v) {
    fprintf(stderr, "rt_new: out of memory\n");
    exit(2);
  }
  return t;
}

static inline void rt_free(rt *t) {
  free(t->v);
  t->v = NULL;
}

static inline rt rt_copy(const rt *x) {
  rt y = rt_new(x->nd, x->d);
  memcpy(y.v, x->v, sizeof(double) * (size_t)x->n);
  return y;
}

/* Multi-index <-> offset helpers. */
static inline void rt_unravel(const rt *t, int64_t off, int64_t *idx) {
  for (int k = t->nd - 1; k >= 0; k--) {
    idx[k] = off % t->d[k];
    off /= t->d[k];
  }
}

static inline int64_t rt_ravel(const rt *t, const int64_t *idx) {
  int64_t off = 0;
  for (int k = 0; k < t->nd; k++) off = off * t->d[k] + idx[k];
  return off;
}

/* ---- elementwise */

enum { RB_ADD, RB_SUB, RB_MUL, RB_DIV };

/* NumPy broadcasting, shapes aligned on the right. */
static inline rt rt_binary(int op, const rt *a, const rt *b) {
  int nd = a->nd > b->nd ? a->nd : b->nd;
  int64_t d[WH_MAX_DIMS];
  for (int k = 0; k < nd; k++) {
    int ka = k - (nd - a->nd), kb = k - (nd - b->nd);
    int64_t da = ka >= 0 ? a->d[ka] : 1, db = kb >= 0 ? b->d[kb] : 1;
    d[k] = da == 1 ? db : da;
  }
  rt y = rt_new(nd, d);
  int64_t idx[WH_MAX_DIMS], ia[WH_MAX_DIMS], ib[WH_MAX_DIMS];
  for (int64_t o = 0; o < y.n; o++) {
    rt_unravel(&y, o, idx);
    for (int k = 0; k < a->nd; k++) ia[k] = a->d[k] == 1 ? 0 : idx[k + nd - a->nd];
    for (int k = 0; k < b->nd; k++) ib[k] = b->d[k] == 1 ? 0 : idx[k + nd - b->nd];
    double x = a->v[rt_ravel(a, ia)], z = b->v[rt_ravel(b, ib)];
    switch (op) {
      case RB_ADD: y.v[o] = x + z; break;
      case RB_SUB: y.v[o] = x - z; break;
      case RB_MUL: y.v[o] = x * z; break;
      default: y.v[o] = x / z; break;
    }
  }
  return y;
}

enum { RU_RELU, RU_GELU, RU_TANH, RU_SIGMOID, RU_EXP, RU_LOG };

static inline double ru_apply(int op, double x) {
  switch (op) {
    case RU_RELU: return x > 0 ? x : 0;
    case RU_GELU: return 0.5 * x * (1.0 + tanh(sqrt(2.0 / 3.14159265358979323846) * (x + 0.044715 * x * x * x)));
    case RU_TANH: return tanh(x);
    case RU_SIGMOID: return 1.0 / (1.0 + exp(-x));
    case RU_EXP: return exp(x);
    default: return log(x);
  }
}

static inline rt rt_unary(int op, const rt *x) {
  rt y = rt_new(x->nd, x->d);
  for (int64_t i = 0; i < x->n; i++) y.v[i] = ru_apply(op, x->v[i]);
  return y;
}

static inline rt rt_scale(const rt *x, double s) {
  rt y = rt_new(x->nd, x->d);
  for (int64_t i = 0; i < x->n; i++) y.v[i] = x->v[i] * s;
  return y;
}

static inline rt rt_bias_add(const rt *x, const rt *b, int axis) {
  if (axis < 0) axis += x->nd;
  rt y = rt_new(x->nd, x->d);
  int64_t idx[WH_MAX_DIMS];
  for (int64_t i = 0; i < x->n; i++) {
    rt_unravel(x, i, idx);
    y.v[i] = x->v[i] + b->v[idx[axis]];
  }
  return y;
}

/* softmax / log-softmax over the last axis */
static inline rt rt_softmax(const rt *x, int logmode) {
  rt y = rt_new(x->nd, x->d);
  int64_t c = x->d[x->nd - 1], rows = x->n / c;
  for (int64_t r = 0; r < rows; r++) {
    const double *p = x->v + r * c;
    double mx = p[0], s = 0;
    for (int64_t i = 1; i < c; i++) mx = p[i] > mx ? p[i] : mx;
    for (int64_t i = 0; i < c; i++) s += exp(p[i] - mx);
    for (int64_t i = 0; i < c; i++) y.v[r * c + i] = logmode ? p[i] - mx - log(s) : exp(p[i] - mx) / s;
  }
  return y;
}

/* ---- reductions and layout */

static inline rt rt_reduce(const rt *x, uint32_t mask, int keep, int mean) {
  int64_t d[WH_MAX_DIMS];
  int nd = 0;
  int64_t cnt = 1;
  for (int k = 0; k < x->nd; k++) {
    if (mask >> k & 1) {
      cnt *= x->d[k];
      if (keep) d[nd++] = 1;
    } else {
      d[nd++] = x->d[k];
    }
  }
  rt y = rt_new(nd, d);
  int64_t idx[WH_MAX_DIMS], oi[WH_MAX_DIMS];
  for (int64_t i = 0; i < x->n; i++) {
    rt_unravel(x, i, idx);
    int j = 0;
    for (int k = 0; k < x->nd; k++) {
      if (mask >> k & 1) {
        if (keep) oi[j++] = 0;
      } else {
        oi[j++] = idx[k];
      }
    }
    y.v[rt_ravel(&y, oi)] += x->v[i];
  }
  if (mean)
    for (int64_t i = 0; i < y.n; i++) y.v[i] /= (double)cnt;
  return y;
}

static inline rt rt_reshape(const rt *x, int nd, const int64_t *d) {
  rt y = rt_new(nd, d);
  if (y.n != x->n) {
    fprintf(stderr, "rt_reshape: element count mismatch (test bug)\n");
    exit(2);
  }
  memcpy(y.v, x->v, sizeof(double) * (size_t)x->n);
  return y;
}

/* y.d[i] = x.d[perm[i]] */
static inline rt rt_permute(const rt *x, const int *perm) {
  int64_t d[WH_MAX_DIMS];
  for (int k = 0; k < x->nd; k++) d[k] = x->d[perm[k]];
  rt y = rt_new(x->nd, d);
  int64_t oi[WH_MAX_DIMS], xi[WH_MAX_DIMS];
  for (int64_t o = 0; o < y.n; o++) {
    rt_unravel(&y, o, oi);
    for (int k = 0; k < x->nd; k++) xi[perm[k]] = oi[k];
    y.v[o] = x->v[rt_ravel(x, xi)];
  }
  return y;
}

static inline rt rt_slice(const rt *x, int axis, int64_t s, int64_t e) {
  if (axis < 0) axis += x->nd;
  int64_t d[WH_MAX_DIMS];
  memcpy(d, x->d, sizeof d);
  d[axis] = e - s;
  rt y = rt_new(x->nd, d);
  int64_t oi[WH_MAX_DIMS];
  for (int64_t o = 0; o < y.n; o++) {
    rt_unravel(&y, o, oi);
    oi[axis] += s;
    y.v[o] = x->v[rt_ravel(x, oi)];
  }
  return y;
}

static inline rt rt_concat(int n, const rt *xs, int axis) {
  if (axis < 0) axis += xs[0].nd;
  int64_t d[WH_MAX_DIMS];
  memcpy(d, xs[0].d, sizeof d);
  d[axis] = 0;
  for (int i = 0; i < n; i++) d[axis] += xs[i].d[axis];
  rt y = rt_new(xs[0].nd, d);
  int64_t oi[WH_MAX_DIMS];
  for (int64_t o = 0; o < y.n; o++) {
    rt_unravel(&y, o, oi);
    int i = 0;
    while (oi[axis] >= xs[i].d[axis]) oi[axis] -= xs[i++].d[axis];
    y.v[o] = xs[i].v[rt_ravel(&xs[i], oi)];
  }
  return y;
}

/* ---- linear algebra */

/* op(a) @ op(b): a [..., M, K] ([..., K, M] when ta), b [K, N] ([N, K] when tb) shared, or with
 * a's leading dims (batched). */
static inline rt rt_matmul(const rt *a, const rt *b, int ta, int tb) {
  int ra = a->nd, rb = b->nd;
  int64_t m = ta ? a->d[ra - 1] : a->d[ra - 2], k = ta ? a->d[ra - 2] : a->d[ra - 1];
  int64_t n = tb ? b->d[rb - 2] : b->d[rb - 1];
  int64_t d[WH_MAX_DIMS];
  memcpy(d, a->d, sizeof d);
  d[ra - 2] = m;
  d[ra - 1] = n;
  rt y = rt_new(ra, d);
  int64_t batch = y.n / (m * n);
  int64_t sa = a->d[ra - 1] * a->d[ra - 2], sb = rb == 2 ? 0 : b->d[rb - 1] * b->d[rb - 2];
  for (int64_t p = 0; p < batch; p++) {
    const double *A = a->v + p * sa, *B = b->v + p * sb;
    for (int64_t i = 0; i < m; i++)
      for (int64_t j = 0; j < n; j++) {
        double s = 0;
        for (int64_t q = 0; q < k; q++) {
          double av = ta ? A[q * m + i] : A[i * k + q];
          double bv = tb ? B[j * k + q] : B[q * n + j];
          s += av * bv;
        }
        y.v[p * m * n + i * n + j] = s;
      }
  }
  return y;
}

/* ---- gathers and losses */

static inline rt rt_embedding(const rt *table, const rt *idx) {
  int64_t d[WH_MAX_DIMS];
  memcpy(d, idx->d, sizeof(int64_t) * (size_t)idx->nd);
  int64_t D = table->d[1];
  d[idx->nd] = D;
  rt y = rt_new(idx->nd + 1, d);
  for (int64_t t = 0; t < idx->n; t++) {
    int64_t r = (int64_t)idx->v[t];
    for (int64_t c = 0; c < D; c++) y.v[t * D + c] = table->v[r * D + c];
  }
  return y;
}

static inline rt rt_cross_entropy(const rt *logits, const rt *labels) {
  rt y = rt_new(0, NULL);
  int64_t c = logits->d[logits->nd - 1], rows = logits->n / c;
  double acc = 0;
  for (int64_t r = 0; r < rows; r++) {
    const double *p = logits->v + r * c;
    double mx = p[0], s = 0;
    for (int64_t i = 1; i < c; i++) mx = p[i] > mx ? p[i] : mx;
    for (int64_t i = 0; i < c; i++) s += exp(p[i] - mx);
    acc += mx + log(s) - p[(int64_t)labels->v[r]];
  }
  y.v[0] = acc / (double)rows;
  return y;
}

static inline rt rt_mse(const rt *p, const rt *t) {
  rt y = rt_new(0, NULL);
  double acc = 0;
  for (int64_t i = 0; i < p->n; i++) acc += (p->v[i] - t->v[i]) * (p->v[i] - t->v[i]);
  y.v[0] = acc / (double)p->n;
  return y;
}

/* ---- convolution and pooling (NCHW) */

static inline rt rt_conv2d(const rt *x, const rt *w, int s, int p) {
  int64_t N = x->d[0], C = x->d[1], H = x->d[2], W = x->d[3];
  int64_t O = w->d[0], KH = w->d[2], KW = w->d[3];
  int64_t OH = (H + 2 * p - KH) / s + 1, OW = (W + 2 * p - KW) / s + 1;
  int64_t d[4] = {N, O, OH, OW};
  rt y = rt_new(4, d);
  for (int64_t n = 0; n < N; n++)
    for (int64_t o = 0; o < O; o++)
      for (int64_t oh = 0; oh < OH; oh++)
        for (int64_t ow = 0; ow < OW; ow++) {
          double acc = 0;
          for (int64_t c = 0; c < C; c++)
            for (int64_t kh = 0; kh < KH; kh++)
              for (int64_t kw = 0; kw < KW; kw++) {
                int64_t ih = oh * s - p + kh, iw = ow * s - p + kw;
                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                acc += x->v[((n * C + c) * H + ih) * W + iw] * w->v[((o * C + c) * KH + kh) * KW + kw];
              }
          y.v[((n * O + o) * OH + oh) * OW + ow] = acc;
        }
  return y;
}

/* max: padding never wins; avg: divisor k*k (count_include_pad) */
static inline rt rt_pool2d(const rt *x, int k, int s, int p, int is_max) {
  int64_t N = x->d[0], C = x->d[1], H = x->d[2], W = x->d[3];
  int64_t OH = (H + 2 * p - k) / s + 1, OW = (W + 2 * p - k) / s + 1;
  int64_t d[4] = {N, C, OH, OW};
  rt y = rt_new(4, d);
  for (int64_t pl = 0; pl < N * C; pl++)
    for (int64_t oh = 0; oh < OH; oh++)
      for (int64_t ow = 0; ow < OW; ow++) {
        double acc = 0, mx = -INFINITY;
        for (int64_t kh = 0; kh < k; kh++)
          for (int64_t kw = 0; kw < k; kw++) {
            int64_t ih = oh * s - p + kh, iw = ow * s - p + kw;
            if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
            double v = x->v[(pl * H + ih) * W + iw];
            acc += v;
            if (v > mx) mx = v;
          }
        y.v[(pl * OH + oh) * OW + ow] = is_max ? mx : acc / (double)(k * k);
      }
  return y;
}

/* ---- transformer */

/* over the last axis: (x - mean) / sqrt(var + eps) * gamma + beta, var the biased variance */
static inline rt rt_layernorm(const rt *x, const rt *gamma, const rt *beta, double eps) {
  rt y = rt_new(x->nd, x->d);
  int64_t c = x->d[x->nd - 1], rows = c ? x->n / c : 0;
  for (int64_t r = 0; r < rows; r++) {
    const double *p = x->v + r * c;
    double m = 0, v = 0;
    for (int64_t i = 0; i < c; i++) m += p[i];
    m /= (double)c;
    for (int64_t i = 0; i < c; i++) v += (p[i] - m) * (p[i] - m);
    v /= (double)c;
    for (int64_t i = 0; i < c; i++) y.v[r * c + i] = (p[i] - m) / sqrt(v + eps) * gamma->v[i] + beta->v[i];
  }
  return y;
}

/* causal multi-head self-attention: qkv [.., T, 3C] = q | k | v; per (sequence, head h) with
 * hd = C/heads: out[t, h*hd + e] = sum_{s <= t} softmax_s(q_t . k_s / sqrt(hd)) v[s, h*hd + e] */
static inline rt rt_attention(const rt *qkv, int heads) {
  int nd = qkv->nd;
  int64_t T = qkv->d[nd - 2], C = qkv->d[nd - 1] / 3, hd = C / heads;
  int64_t d[WH_MAX_DIMS];
  memcpy(d, qkv->d, sizeof d);
  d[nd - 1] = C;
  rt y = rt_new(nd, d);
  int64_t nseq = T ? qkv->n / (T * 3 * C) : 0;
  double *w = calloc((size_t)(T ? T : 1), sizeof(double));
  if (!w) {
    fprintf(stderr, "rt_attention: out of memory\n");
    exit(2);
  }
  for (int64_t b = 0; b < nseq; b++) {
    const double *X = qkv->v + b * T * 3 * C;
    double *Y = y.v + b * T * C;
    for (int h = 0; h < heads; h++)
      for (int64_t t = 0; t < T; t++) {
        double mx = -INFINITY, s = 0;
        for (int64_t u = 0; u <= t; u++) {
          double dot = 0;
          for (int64_t e = 0; e < hd; e++) dot += X[t * 3 * C + h * hd + e] * X[u * 3 * C + C + h * hd + e];
          w[u] = dot / sqrt((double)hd);
          if (w[u] > mx) mx = w[u];
        }
        for (int64_t u = 0; u <= t; u++) {
          w[u] = exp(w[u] - mx);
          s += w[u];
        }
        for (int64_t e = 0; e < hd; e++) {
          double acc = 0;
          for (int64_t u = 0; u <= t; u++) acc += w[u] / s * X[u * 3 * C + 2 * C + h * hd + e];
          Y[t * C + h * hd + e] = acc;
        }
      }
  }
  free(w);
  return y;
}

#endif /* WH_TEST_HARNESS_H */
