/* collective.c - the ops the operator-sharding partitioner inserts into a rank's program: the sum
 * of partial results over the ranks of a replica, the gather of a split value, this rank's slice
 * of a whole one, and the global-norm clip over split and whole gradients. They run on the
 * replica's communicator (ex->tp) and wait for it: its deadline turns a lost peer into an error
 * that names it. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../../comm/comm.h"
#include "../kernels.h"
#include "fastmath.h"

void wh__shard_copy(int gather, const int64_t *d, int nd, int dim, int groups, int parts, int index, void *whole,
                    void *shard, size_t esize) {
  int64_t outer = 1, inner = 1;
  for (int i = 0; i < dim; i++) outer *= d[i];
  for (int i = dim + 1; i < nd; i++) inner *= d[i];
  int64_t D = d[dim], c = D / ((int64_t)groups * parts);
  size_t run = (size_t)(c * inner) * esize;
  for (int64_t o = 0; o < outer; o++)
    for (int g = 0; g < groups; g++) {
      char *w = (char *)whole + (size_t)((o * D + ((int64_t)g * parts + index) * c) * inner) * esize;
      char *s = (char *)shard + (size_t)(((o * groups + g) * c) * inner) * esize;
      if (gather) memcpy(w, s, run);
      else memcpy(s, w, run);
    }
}

static wh_status comm_fail(wh__exec *ex, wh_status st, const char *what) {
  snprintf(ex->err, (size_t)ex->err_cap, "%s over the replica's ranks: %s", what, wh_last_error(ex->tp->ctx));
  return st;
}

static wh_status need_group(wh__exec *ex) {
  if (ex->tp) return WH_OK;
  snprintf(ex->err, (size_t)ex->err_cap, "an operator-sharding collective outside a sharded session");
  return WH_ERR_INTERNAL;
}

wh_status wh__cpu_tp_allreduce(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out) {
  (void)n;
  wh_status st = need_group(ex);
  if (st != WH_OK) return st;
  st = wh_comm_allreduce(ex->tp, in[0].data, out->data, (size_t)out->numel, WH_F32, WH_REDUCE_SUM);
  return st == WH_OK ? WH_OK : comm_fail(ex, st, "all-reduce of partial sums");
}

wh_status wh__cpu_tp_allgather(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out) {
  wh_status st = need_group(ex);
  if (st != WH_OK) return st;
  int dim = (int)n->ia[0], groups = (int)n->ia[1], parts = (int)n->ia[2];
  size_t cnt = (size_t)in[0].numel;
  float *buf = wh__exec_scratch(ex, cnt * (size_t)parts * sizeof(float));
  if (!buf) {
    snprintf(ex->err, (size_t)ex->err_cap, "out of memory gathering shards");
    return WH_ERR_OUT_OF_MEMORY;
  }
  if ((st = wh_comm_allgather(ex->tp, in[0].data, buf, cnt, NULL, WH_F32)) != WH_OK)
    return comm_fail(ex, st, "all-gather of shards");
  for (int r = 0; r < parts; r++) wh__shard_copy(1, out->d, out->ndim, dim, groups, parts, r, out->data, buf + cnt * (size_t)r, sizeof(float));
  return WH_OK;
}

wh_status wh__cpu_tp_slice(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out) {
  (void)ex;
  size_t es = in[0].dtype == WH_F64 ? 8 : 4;
  wh__shard_copy(0, in[0].d, in[0].ndim, (int)n->ia[0], (int)n->ia[1], (int)n->ia[2], (int)n->ia[3], in[0].data,
                 out->data, es);
  return WH_OK;
}

static double sumsq(const wh__tensor *t) {
  const float *g = wh__f32(t);
  double s = 0;
  for (int64_t k = 0; k < t->numel; k++) s += (double)g[k] * g[k];
  return s;
}

wh_status wh__cpu_tp_norm_clip(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out) {
  wh_status st = need_group(ex);
  if (st != WH_OK) return st;
  int nsplit = (int)n->ia[0];
  double split = 0, whole = 0;
  for (int i = 0; i < nsplit; i++) split += sumsq(&in[i]);
  for (int i = nsplit; i < n->n_in; i++) whole += sumsq(&in[i]);
  if ((st = wh_comm_allreduce(ex->tp, NULL, &split, 1, WH_F64, WH_REDUCE_SUM)) != WH_OK)
    return comm_fail(ex, st, "sum of the gradients' squares");
  double coef = n->fa[0] / (sqrt(split + whole) + 1e-6);
  wh__f32(out)[0] = (float)(coef < 1.0 ? coef : 1.0);
  return WH_OK;
}

/* ---- the vocabulary-parallel embedding and cross-entropy: this rank holds rows (columns of the
 * logits) [lo, lo + Vl) of V */

wh_status wh__cpu_tp_embedding(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out) {
  int64_t lo = n->ia[0], v = n->ia[1], vl = in[0].d[0], d = in[0].d[1];
  const int32_t *ix = (const int32_t *)in[1].data;
  const float *tab = wh__f32(&in[0]);
  float *y = wh__f32(out);
  wh_status st = wh__check_rows(ex, ix, in[1].numel, v);
  if (st != WH_OK) return st;
  for (int64_t t = 0; t < in[1].numel; t++) {
    int64_t r = ix[t];
    if (r >= lo && r < lo + vl) memcpy(y + t * d, tab + (r - lo) * d, sizeof(float) * (size_t)d);
    else memset(y + t * d, 0, sizeof(float) * (size_t)d);
  }
  return WH_OK;
}

/* Per row of this rank's logits: the global maximum (the ranks' maxima gathered), the sum of
 * exp(x - max) over all classes and the target's logit (both summed over the ranks). */
static wh_status ce_stats(wh__exec *ex, const wh__node *n, const wh__tensor *x, const int32_t *lab, int64_t rows,
                          double **gmax, double **sums) {
  int64_t lo = n->ia[0], v = n->ia[1], c = x->d[x->ndim - 1];
  int parts = wh_comm_size(ex->tp);
  size_t need = sizeof(double) * (size_t)rows * (size_t)(3 + parts);
  double *w = wh__exec_scratch(ex, need ? need : 1);
  if (!w) {
    snprintf(ex->err, (size_t)ex->err_cap, "out of memory for the sharded cross-entropy");
    return WH_ERR_OUT_OF_MEMORY;
  }
  double *mx = w, *all = w + rows, *st = all + rows * parts; /* st: [rows] sums, then [rows] targets */
  const float *xs = wh__f32(x);
  wh_status st_ = wh__check_labels(ex, lab, rows, v);
  if (st_ != WH_OK) return st_;
  for (int64_t r = 0; r < rows; r++) {
    float m = -INFINITY;
    for (int64_t i = 0; i < c; i++) m = xs[r * c + i] > m ? xs[r * c + i] : m;
    mx[r] = m;
  }
  st_ = wh_comm_allgather(ex->tp, mx, all, (size_t)rows, NULL, WH_F64);
  if (st_ != WH_OK) return comm_fail(ex, st_, "row maxima of the logits");
  for (int64_t r = 0; r < rows; r++) {
    double m = all[r];
    for (int p = 1; p < parts; p++) m = all[(int64_t)p * rows + r] > m ? all[(int64_t)p * rows + r] : m;
    mx[r] = m;
    double s = 0;
    const float *xr = xs + r * c;
    for (int64_t i = 0; i < c; i++) s += wh__expf((float)(xr[i] - m));
    st[r] = s;
    st[rows + r] = lab[r] >= lo && lab[r] < lo + c ? (double)xr[lab[r] - lo] : 0.0;
  }
  if ((st_ = wh_comm_allreduce(ex->tp, NULL, st, (size_t)(2 * rows), WH_F64, WH_REDUCE_SUM)) != WH_OK)
    return comm_fail(ex, st_, "sums of the logits' exponentials");
  *gmax = mx;
  *sums = st;
  return WH_OK;
}

wh_status wh__cpu_tp_cross_entropy(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out) {
  wh_status st = need_group(ex);
  if (st != WH_OK) return st;
  int64_t c = in[0].d[in[0].ndim - 1], rows = c ? in[0].numel / c : 0;
  double *mx, *s;
  if ((st = ce_stats(ex, n, &in[0], (const int32_t *)in[1].data, rows, &mx, &s)) != WH_OK) return st;
  double acc = 0;
  for (int64_t r = 0; r < rows; r++) acc += mx[r] + log(s[r]) - s[rows + r];
  wh__f32(out)[0] = rows ? (float)(acc / (double)rows) : 0.0f;
  return WH_OK;
}

wh_status wh__cpu_tp_cross_entropy_grad(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out) {
  wh_status st = need_group(ex);
  if (st != WH_OK) return st;
  int64_t lo = n->ia[0], c = in[0].d[in[0].ndim - 1], rows = c ? in[0].numel / c : 0;
  const int32_t *lab = (const int32_t *)in[1].data;
  double *mx, *s;
  if ((st = ce_stats(ex, n, &in[0], lab, rows, &mx, &s)) != WH_OK) return st;
  float g = rows ? wh__f32(&in[2])[0] / (float)rows : 0.0f;
  const float *x = wh__f32(&in[0]);
  float *dx = wh__f32(out);
  for (int64_t r = 0; r < rows; r++) {
    float k = (float)(g / s[r]), m = (float)mx[r];
    for (int64_t i = 0; i < c; i++) dx[r * c + i] = wh__expf(x[r * c + i] - m) * k;
    if (lab[r] >= lo && lab[r] < lo + c) dx[r * c + lab[r] - lo] -= g;
  }
  return WH_OK;
}
