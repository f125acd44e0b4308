/* transformer.c - CPU kernels for the transformer block's own ops: layer normalisation over the
 * last axis and causal multi-head self-attention over a fused [.., T, 3C] q|k|v tensor.
 * Attention keeps no probability matrix between forward and backward: backward recomputes it. */
#include <cblas.h>
#include <math.h>
#include <string.h>

#include "../kernels.h"
#include "fastmath.h"

/* ---- layernorm */

typedef struct {
  const float *x, *g, *b, *dy;
  float *y;
  float *mean, *rstd;
  int64_t c, rows;
  float eps;
} ln_job;

static void row_stats(const float *x, int64_t c, float eps, float *mean, float *rstd) {
  double s = 0;
  for (int64_t i = 0; i < c; i++) s += x[i];
  float m = (float)(s / (double)c);
  double v = 0;
  for (int64_t i = 0; i < c; i++) {
    float d = x[i] - m;
    v += (double)d * d;
  }
  *mean = m;
  *rstd = (float)(1.0 / sqrt(v / (double)c + eps));
}

WH_HOT static void ln_fwd_rows(void *arg, int64_t r0, int64_t r1) {
  ln_job *j = arg;
  int64_t c = j->c;
  for (int64_t r = r0; r < r1; r++) {
    const float *x = j->x + r * c;
    float *y = j->y + r * c, m, rs;
    row_stats(x, c, j->eps, &m, &rs);
    for (int64_t i = 0; i < c; i++) y[i] = (x[i] - m) * rs * j->g[i] + j->b[i];
  }
}

wh_status wh__cpu_layernorm(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out) {
  ln_job j = {.x = wh__f32(&in[0]), .g = wh__f32(&in[1]), .b = wh__f32(&in[2]), .y = wh__f32(out),
              .c = in[0].d[in[0].ndim - 1], .eps = (float)n->fa[0]};
  if (out->numel == 0) return WH_OK;
  wh__parallel_for(ex->pool, out->numel / j.c, 1 + 4096 / (j.c + 1), ln_fwd_rows, &j);
  return WH_OK;
}

WH_HOT static void ln_dx_rows(void *arg, int64_t r0, int64_t r1) {
  ln_job *j = arg;
  int64_t c = j->c;
  for (int64_t r = r0; r < r1; r++) {
    const float *x = j->x + r * c, *dy = j->dy + r * c;
    float *dx = j->y + r * c, m, rs;
    row_stats(x, c, j->eps, &m, &rs);
    double s1 = 0, s2 = 0;
    for (int64_t i = 0; i < c; i++) {
      float dxh = dy[i] * j->g[i];
      s1 += dxh;
      s2 += (double)dxh * ((x[i] - m) * rs);
    }
    float a = (float)(s1 / (double)c), b = (float)(s2 / (double)c);
    for (int64_t i = 0; i < c; i++) {
      float xh = (x[i] - m) * rs;
      dx[i] = rs * (dy[i] * j->g[i] - a - xh * b);
    }
  }
}

wh_status wh__cpu_layernorm_grad_input(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out) {
  ln_job j = {.x = wh__f32(&in[0]), .g = wh__f32(&in[1]), .dy = wh__f32(&in[2]), .y = wh__f32(out),
              .c = in[0].d[in[0].ndim - 1], .eps = (float)n->fa[0]};
  if (out->numel == 0) return WH_OK;
  wh__parallel_for(ex->pool, out->numel / j.c, 1 + 4096 / (j.c + 1), ln_dx_rows, &j);
  return WH_OK;
}

static void ln_stats_rows(void *arg, int64_t r0, int64_t r1) {
  ln_job *j = arg;
  for (int64_t r = r0; r < r1; r++) row_stats(j->x + r * j->c, j->c, j->eps, &j->mean[r], &j->rstd[r]);
}

/* columns [c0, c1), summed over rows in row order: the result does not depend on threads */
WH_HOT static void ln_dgamma_cols(void *arg, int64_t c0, int64_t c1) {
  ln_job *j = arg;
  int64_t c = j->c;
  double acc[64];
  for (int64_t cb = c0; cb < c1; cb += 64) {
    int64_t ce = cb + 64 < c1 ? cb + 64 : c1;
    for (int64_t i = cb; i < ce; i++) acc[i - cb] = 0;
    for (int64_t r = 0; r < j->rows; r++) {
      const float *x = j->x + r * c, *dy = j->dy + r * c;
      float m = j->mean[r], rs = j->rstd[r];
      for (int64_t i = cb; i < ce; i++) acc[i - cb] += dy[i] * ((x[i] - m) * rs);
    }
    for (int64_t i = cb; i < ce; i++) j->y[i] = (float)acc[i - cb];
  }
}

wh_status wh__cpu_layernorm_grad_gamma(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out) {
  int64_t c = in[0].d[in[0].ndim - 1], rows = c ? in[0].numel / c : 0;
  float *stats = wh__exec_scratch(ex, sizeof(float) * 2 * (size_t)(rows ? rows : 1));
  if (!stats) return WH_ERR_OUT_OF_MEMORY;
  ln_job j = {.x = wh__f32(&in[0]), .dy = wh__f32(&in[1]), .y = wh__f32(out), .mean = stats,
              .rstd = stats + rows, .c = c, .rows = rows, .eps = (float)n->fa[0]};
  wh__parallel_for(ex->pool, rows, 1 + 4096 / (c + 1), ln_stats_rows, &j);
  wh__parallel_for(ex->pool, c, 64, ln_dgamma_cols, &j);
  return WH_OK;
}

/* ---- causal self-attention over qkv [.., T, 3C]: q | k | v, each split into H heads of C/H */

typedef struct {
  int64_t t, c, h, hd;
  float scale;
} att_geom;

static att_geom geom(const wh__node *n, const wh__tensor *qkv) {
  att_geom a;
  a.t = qkv->d[qkv->ndim - 2];
  a.c = qkv->d[qkv->ndim - 1] / 3;
  a.h = n->ia[0];
  a.hd = a.c / a.h;
  a.scale = (float)(1.0 / sqrt((double)a.hd));
  return a;
}

/* P = causal softmax(scale * Q K^T) for one (batch, head), rows of length T (upper part zero) */
WH_HOT static void att_probs(const att_geom *a, const float *q, const float *k, float *p) {
  int64_t ld = 3 * a->c;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)a->t, (int)a->t, (int)a->hd, a->scale, q, (int)ld, k,
              (int)ld, 0.0f, p, (int)a->t);
  for (int64_t i = 0; i < a->t; i++) {
    float *row = p + i * a->t, mx = -INFINITY;
    for (int64_t jj = 0; jj <= i; jj++) mx = row[jj] > mx ? row[jj] : mx;
    double s = 0;
    for (int64_t jj = 0; jj <= i; jj++) row[jj] = wh__expf(row[jj] - mx);
    for (int64_t jj = 0; jj <= i; jj++) s += row[jj];
    float inv = (float)(1.0 / s);
    for (int64_t jj = 0; jj <= i; jj++) row[jj] *= inv;
    for (int64_t jj = i + 1; jj < a->t; jj++) row[jj] = 0;
  }
}

typedef struct {
  att_geom a;
  const float *qkv, *dy;
  float *y, *scratch;
  int64_t per_slot;
} att_job;

/* one (sequence, head) pair per index; each slot owns its probability buffers */
static void att_fwd_range(void *arg, int64_t i0, int64_t i1, int slot) {
  att_job *j = arg;
  const att_geom *a = &j->a;
  float *p = j->scratch + slot * j->per_slot;
  for (int64_t i = i0; i < i1; i++) {
    int64_t b = i / a->h, h = i % a->h;
    const float *base = j->qkv + b * a->t * 3 * a->c + h * a->hd;
    att_probs(a, base, base + a->c, p);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)a->t, (int)a->hd, (int)a->t, 1.0f, p, (int)a->t,
                base + 2 * a->c, (int)(3 * a->c), 0.0f, j->y + b * a->t * a->c + h * a->hd, (int)a->c);
  }
}

wh_status wh__cpu_attention(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out) {
  att_job j = {.a = geom(n, &in[0]), .qkv = wh__f32(&in[0]), .y = wh__f32(out)};
  int64_t nb = j.a.t ? in[0].numel / (j.a.t * 3 * j.a.c) : 0;
  j.per_slot = j.a.t * j.a.t;
  j.scratch = wh__exec_scratch(ex, sizeof(float) * (size_t)(j.per_slot * wh__pool_size(ex->pool) + 1));
  if (!j.scratch) return WH_ERR_OUT_OF_MEMORY;
  wh__parallel_for_slots(ex->pool, nb * j.a.h, 1, att_fwd_range, &j);
  return WH_OK;
}

static void att_bwd_range(void *arg, int64_t i0, int64_t i1, int slot) {
  att_job *j = arg;
  const att_geom *a = &j->a;
  int64_t tt = a->t * a->t, ld = 3 * a->c;
  float *p = j->scratch + slot * j->per_slot, *dp = p + tt;
  for (int64_t i = i0; i < i1; i++) {
    int64_t b = i / a->h, h = i % a->h;
    const float *q = j->qkv + b * a->t * ld + h * a->hd, *k = q + a->c, *v = q + 2 * a->c;
    const float *dyh = j->dy + b * a->t * a->c + h * a->hd;
    float *dq = j->y + b * a->t * ld + h * a->hd, *dk = dq + a->c, *dv = dq + 2 * a->c;
    att_probs(a, q, k, p);
    /* dV = P^T dY ; dP = dY V^T */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)a->t, (int)a->hd, (int)a->t, 1.0f, p, (int)a->t, dyh,
                (int)a->c, 0.0f, dv, (int)ld);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)a->t, (int)a->t, (int)a->hd, 1.0f, dyh, (int)a->c, v,
                (int)ld, 0.0f, dp, (int)a->t);
    /* dS = P * (dP - rowsum(dP * P)) * scale, causal part only */
    for (int64_t r = 0; r < a->t; r++) {
      float *pr = p + r * a->t, *dr = dp + r * a->t;
      double s = 0;
      for (int64_t c = 0; c <= r; c++) s += (double)pr[c] * dr[c];
      for (int64_t c = 0; c <= r; c++) dr[c] = pr[c] * (dr[c] - (float)s) * a->scale;
      for (int64_t c = r + 1; c < a->t; c++) dr[c] = 0;
    }
    /* dQ = dS K ; dK = dS^T Q */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)a->t, (int)a->hd, (int)a->t, 1.0f, dp, (int)a->t, k,
                (int)ld, 0.0f, dq, (int)ld);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)a->t, (int)a->hd, (int)a->t, 1.0f, dp, (int)a->t, q,
                (int)ld, 0.0f, dk, (int)ld);
  }
}

wh_status wh__cpu_attention_grad(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out) {
  att_job j = {.a = geom(n, &in[0]), .qkv = wh__f32(&in[0]), .dy = wh__f32(&in[1]), .y = wh__f32(out)};
  int64_t nb = j.a.t ? in[0].numel / (j.a.t * 3 * j.a.c) : 0;
  j.per_slot = 2 * j.a.t * j.a.t;
  j.scratch = wh__exec_scratch(ex, sizeof(float) * (size_t)(j.per_slot * wh__pool_size(ex->pool) + 1));
  if (!j.scratch) return WH_ERR_OUT_OF_MEMORY;
  wh__parallel_for_slots(ex->pool, nb * j.a.h, 1, att_bwd_range, &j);
  return WH_OK;
}
