/* reduce.c - CPU reductions: sum/mean over any axes, sum_to (undo broadcasting), broadcast_to.
 * Each output element is summed by one thread in a fixed order, so results are reproducible. */
#include <string.h>

#include "../kernels.h"
#include "fastmath.h"

/* Reduce x (shape xd, rank nd) over the axes in mask into y; divide by the count when mean. */
typedef struct {
  const float *x;
  float *y;
  int nd;
  int64_t xd[WH_MAX_DIMS], xs[WH_MAX_DIMS];
  int nk, nr;                 /* kept and reduced axes */
  int kept[WH_MAX_DIMS], red[WH_MAX_DIMS];
  int64_t rcount;
  int mean;
} red_job;

WH_HOT static void red_range(void *arg, int64_t o0, int64_t o1) {
  red_job *j = arg;
  for (int64_t o = o0; o < o1; o++) {
    /* base offset of output element o */
    int64_t rem = o, base = 0;
    for (int t = j->nk - 1; t >= 0; t--) {
      int ax = j->kept[t];
      base += (rem % j->xd[ax]) * j->xs[ax];
      rem /= j->xd[ax];
    }
    double acc = 0;
    int64_t inner_ax = j->nr ? j->red[j->nr - 1] : 0;
    int64_t inner = j->nr ? j->xd[inner_ax] : 1, inner_s = j->nr ? j->xs[inner_ax] : 0;
    int64_t outer = j->rcount / (inner ? inner : 1);
    for (int64_t r = 0; r < outer; r++) {
      int64_t rr = r, off = base;
      for (int t = j->nr - 2; t >= 0; t--) {
        int ax = j->red[t];
        off += (rr % j->xd[ax]) * j->xs[ax];
        rr /= j->xd[ax];
      }
      const float *p = j->x + off;
      float part = 0;
      for (int64_t i = 0; i < inner; i++) part += p[i * inner_s];
      acc += part;
    }
    j->y[o] = (float)(j->mean ? acc / (double)j->rcount : acc);
  }
}

/* Column sums: x viewed as [rows, cols], y[c] = sum over rows, rows in order, in double. The
 * common case (bias and broadcast gradients) gets contiguous, vectorisable inner loops. */
typedef struct {
  const float *x;
  float *y;
  int64_t rows, cols;
  double div;
} col_job;

WH_HOT static void col_range(void *arg, int64_t c0, int64_t c1) {
  col_job *j = arg;
  double acc[128];
  for (int64_t cb = c0; cb < c1; cb += 128) {
    int64_t w = c1 - cb < 128 ? c1 - cb : 128;
    for (int64_t i = 0; i < w; i++) acc[i] = 0;
    for (int64_t r = 0; r < j->rows; r++) {
      const float *row = j->x + r * j->cols + cb;
      for (int64_t i = 0; i < w; i++) acc[i] += row[i];
    }
    for (int64_t i = 0; i < w; i++) j->y[cb + i] = (float)(acc[i] / j->div);
  }
}

static void reduce_mask(wh__exec *ex, const wh__tensor *x, uint64_t mask, int mean, float *y, int64_t ny) {
  int lead = 0;
  while (lead < x->ndim && (mask >> lead & 1)) lead++;
  if (lead > 0 && lead < x->ndim && (mask >> lead) == 0) {
    col_job c = {wh__f32(x), y, 1, ny, 1.0};
    for (int k = 0; k < lead; k++) c.rows *= x->d[k];
    if (mean && c.rows) c.div = (double)c.rows;
    wh__parallel_for(ex->pool, ny, 128, col_range, &c);
    return;
  }
  red_job j = {.x = wh__f32(x), .y = y, .nd = x->ndim, .mean = mean, .rcount = 1};
  int64_t s = 1;
  for (int k = x->ndim - 1; k >= 0; k--) {
    j.xd[k] = x->d[k];
    j.xs[k] = s;
    s *= x->d[k];
  }
  for (int k = 0; k < x->ndim; k++) {
    if (mask >> k & 1) {
      j.red[j.nr++] = k;
      j.rcount *= x->d[k];
    } else {
      j.kept[j.nk++] = k;
    }
  }
  if (j.rcount == 0) {
    for (int64_t i = 0; i < ny; i++) y[i] = 0;
    return;
  }
  wh__parallel_for(ex->pool, ny, 1 + 4096 / (j.rcount + 1), red_range, &j);
}

wh_status wh__cpu_reduce(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out) {
  reduce_mask(ex, &in[0], (uint64_t)n->ia[0], n->op == WH_OP_MEAN, wh__f32(out), out->numel);
  return WH_OK;
}

wh_status wh__cpu_sum_to(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out) {
  (void)n;
  /* reduce the leading extra axes and the axes where the target is 1 */
  const wh__tensor *x = &in[0];
  uint64_t mask = 0;
  int lead = x->ndim - out->ndim;
  for (int k = 0; k < x->ndim; k++)
    if (k < lead || (out->d[k - lead] == 1 && x->d[k] != 1)) mask |= 1ull << k;
  reduce_mask(ex, x, mask, 0, wh__f32(out), out->numel);
  return WH_OK;
}

typedef struct {
  const float *x;
  float *y;
  int nd;
  int64_t od[WH_MAX_DIMS], xs[WH_MAX_DIMS];
  float scale;
} bc_job;

WH_HOT static void bc_range(void *arg, int64_t r0, int64_t r1) {
  bc_job *j = arg;
  int64_t inner = j->od[j->nd - 1], sl = j->xs[j->nd - 1];
  for (int64_t r = r0; r < r1; r++) {
    int64_t rem = r, off = 0;
    for (int k = j->nd - 2; k >= 0; k--) {
      off += (rem % j->od[k]) * j->xs[k];
      rem /= j->od[k];
    }
    float *y = j->y + r * inner;
    const float *x = j->x + off;
    for (int64_t i = 0; i < inner; i++) y[i] = x[i * sl] * j->scale;
  }
}

wh_status wh__cpu_broadcast_to(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out) {
  const wh__tensor *x = &in[0];
  bc_job j = {.x = wh__f32(x), .y = wh__f32(out), .nd = out->ndim ? out->ndim : 1, .scale = 1.0f};
  if (n->ia[0] && x->numel) j.scale = (float)((double)x->numel / (double)out->numel);
  if (out->numel == 0) return WH_OK;
  if (out->ndim == 0) {
    j.od[0] = 1;
    j.xs[0] = 0;
  } else {
    int64_t s = 1;
    for (int k = out->ndim - 1; k >= 0; k--) {
      int xk = x->ndim - out->ndim + k;
      j.od[k] = out->d[k];
      if (xk < 0 || (x->d[xk] == 1 && out->d[k] != 1)) {
        j.xs[k] = 0;
      } else {
        j.xs[k] = s;
      }
      if (xk >= 0) s *= x->d[xk];
    }
  }
  int64_t inner = j.od[j.nd - 1];
  wh__parallel_for(ex->pool, out->numel / inner, 1 + 16384 / (inner + 1), bc_range, &j);
  return WH_OK;
}
