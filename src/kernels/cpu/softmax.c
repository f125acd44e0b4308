/* softmax.c - CPU kernels over the last axis (softmax, log-softmax and their gradients) and the
 * cross-entropy loss with integer labels. Per-row work is threaded; the final sums run in row
 * order so a loss is the same for any thread count. */
#include <math.h>
#include <stdio.h>

#include "../kernels.h"
#include "fastmath.h"

typedef struct {
  const float *x, *y2; /* input rows, second input rows (grads) */
  float *y;
  const int32_t *labels;
  double *row_loss;
  int64_t c;
  int logmode;
  float gscale;
  int64_t bad_row;
} row_job;

WH_HOT static void softmax_rows(void *arg, int64_t r0, int64_t r1) {
  row_job *j = arg;
  int64_t c = j->c;
  for (int64_t r = r0; r < r1; r++) {
    const float *x = j->x + r * c;
    float *y = j->y + r * c;
    float mx = -INFINITY;
    for (int64_t i = 0; i < c; i++) mx = x[i] > mx ? x[i] : mx;
    double s = 0;
    if (j->logmode) {
      /* y may be x (in place): sum without storing the exponentials */
      for (int64_t i = 0; i < c; i++) s += wh__expf(x[i] - mx);
      float lse = mx + (float)log(s);
      for (int64_t i = 0; i < c; i++) y[i] = x[i] - lse;
    } else {
      for (int64_t i = 0; i < c; i++) y[i] = wh__expf(x[i] - mx);
      for (int64_t i = 0; i < c; i++) s += y[i];
      float inv = (float)(1.0 / s);
      for (int64_t i = 0; i < c; i++) y[i] *= inv;
    }
  }
}

static wh_status softmax_any(wh__exec *ex, const wh__tensor *in, wh__tensor *out, int logmode) {
  row_job j = {.x = wh__f32(&in[0]), .y = wh__f32(out), .c = in[0].ndim ? in[0].d[in[0].ndim - 1] : 1,
               .logmode = logmode};
  if (out->numel == 0) return WH_OK;
  wh__parallel_for(ex->pool, out->numel / j.c, 1 + 8192 / (j.c + 1), softmax_rows, &j);
  return WH_OK;
}

wh_status wh__cpu_softmax(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out) {
  (void)n;
  return softmax_any(ex, in, out, 0);
}

wh_status wh__cpu_log_softmax(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out) {
  (void)n;
  return softmax_any(ex, in, out, 1);
}

/* x = y (forward output), y2 = dy */
WH_HOT static void softmax_grad_rows(void *arg, int64_t r0, int64_t r1) {
  row_job *j = arg;
  int64_t c = j->c;
  for (int64_t r = r0; r < r1; r++) {
    const float *y = j->x + r * c, *dy = j->y2 + r * c;
    float *dx = j->y + r * c;
    double s = 0;
    if (j->logmode) {
      /* dx = dy - softmax * sum(dy) */
      for (int64_t i = 0; i < c; i++) s += dy[i];
      for (int64_t i = 0; i < c; i++) dx[i] = dy[i] - wh__expf(y[i]) * (float)s;
    } else {
      /* dx = y * (dy - sum(dy * y)) */
      for (int64_t i = 0; i < c; i++) s += (double)dy[i] * y[i];
      for (int64_t i = 0; i < c; i++) dx[i] = y[i] * (dy[i] - (float)s);
    }
  }
}

static wh_status softmax_grad_any(wh__exec *ex, const wh__tensor *in, wh__tensor *out, int logmode) {
  row_job j = {.x = wh__f32(&in[0]), .y2 = wh__f32(&in[1]), .y = wh__f32(out),
               .c = in[0].ndim ? in[0].d[in[0].ndim - 1] : 1, .logmode = logmode};
  if (out->numel == 0) return WH_OK;
  wh__parallel_for(ex->pool, out->numel / j.c, 1 + 8192 / (j.c + 1), softmax_grad_rows, &j);
  return WH_OK;
}

wh_status wh__cpu_softmax_grad(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out) {
  (void)n;
  return softmax_grad_any(ex, in, out, 0);
}

wh_status wh__cpu_log_softmax_grad(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out) {
  (void)n;
  return softmax_grad_any(ex, in, out, 1);
}

/* ---- cross-entropy: never materialises the probability matrix */

WH_HOT static void ce_rows(void *arg, int64_t r0, int64_t r1) {
  row_job *j = arg;
  int64_t c = j->c;
  for (int64_t r = r0; r < r1; r++) {
    const float *x = j->x + r * c;
    int32_t lab = j->labels[r];
    if (lab < 0 || lab >= c) {
      j->row_loss[r] = NAN;
      continue;
    }
    float mx = -INFINITY;
    for (int64_t i = 0; i < c; i++) mx = x[i] > mx ? x[i] : mx;
    double s = 0;
    for (int64_t i = 0; i < c; i++) s += wh__expf(x[i] - mx);
    j->row_loss[r] = (double)mx + log(s) - (double)x[lab];
  }
}

wh_status wh__check_labels(wh__exec *ex, const int32_t *lab, int64_t rows, int64_t c) {
  for (int64_t r = 0; r < rows; r++)
    if (lab[r] < 0 || lab[r] >= c) {
      if (ex->err)
        snprintf(ex->err, (size_t)ex->err_cap, "label %d at row %lld is outside [0, %lld)", (int)lab[r], (long long)r,
                 (long long)c);
      return WH_ERR_INVALID_ARGUMENT;
    }
  return WH_OK;
}

wh_status wh__cpu_cross_entropy(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out) {
  (void)n;
  int64_t c = in[0].d[in[0].ndim - 1], rows = c ? in[0].numel / c : 0;
  const int32_t *lab = (const int32_t *)in[1].data;
  wh_status s = wh__check_labels(ex, lab, rows, c);
  if (s != WH_OK) return s;
  double *rl = wh__exec_scratch(ex, sizeof(double) * (size_t)(rows ? rows : 1));
  if (!rl) return WH_ERR_OUT_OF_MEMORY;
  row_job j = {.x = wh__f32(&in[0]), .labels = lab, .row_loss = rl, .c = c};
  wh__parallel_for(ex->pool, rows, 1 + 8192 / (c + 1), ce_rows, &j);
  double acc = 0;
  for (int64_t r = 0; r < rows; r++) acc += rl[r];
  wh__f32(out)[0] = rows ? (float)(acc / (double)rows) : 0.0f;
  return WH_OK;
}

WH_HOT static void ce_grad_rows(void *arg, int64_t r0, int64_t r1) {
  row_job *j = arg;
  int64_t c = j->c;
  for (int64_t r = r0; r < r1; r++) {
    const float *x = j->x + r * c;
    float *dx = j->y + r * c;
    float mx = -INFINITY;
    for (int64_t i = 0; i < c; i++) mx = x[i] > mx ? x[i] : mx;
    double s = 0;
    for (int64_t i = 0; i < c; i++) dx[i] = wh__expf(x[i] - mx);
    for (int64_t i = 0; i < c; i++) s += dx[i];
    float k = (float)(j->gscale / s);
    for (int64_t i = 0; i < c; i++) dx[i] *= k;
    dx[j->labels[r]] -= j->gscale;
  }
}

wh_status wh__cpu_cross_entropy_grad(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out) {
  (void)n;
  int64_t c = in[0].d[in[0].ndim - 1], rows = c ? in[0].numel / c : 0;
  const int32_t *lab = (const int32_t *)in[1].data;
  wh_status s = wh__check_labels(ex, lab, rows, c);
  if (s != WH_OK) return s;
  if (rows == 0) return WH_OK;
  row_job j = {.x = wh__f32(&in[0]), .y = wh__f32(out), .labels = lab, .c = c,
               .gscale = wh__f32(&in[2])[0] / (float)rows};
  wh__parallel_for(ex->pool, rows, 1 + 8192 / (c + 1), ce_grad_rows, &j);
  return WH_OK;
}
