/* elementwise.c - CPU kernels for elementwise ops: broadcasting binaries, bias, activations and
 * their gradients, dropout, and the mean squared error loss with its gradient. Loops are split by
 * output index (the loss sums in one thread), so results never depend on threads. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "../kmath.h"
#include "fastmath.h"

#define GRAIN 16384

/* ---- broadcasting binary ops */

typedef struct {
  const float *a, *b;
  float *y;
  int op;
  int nd;
  int64_t d[WH_MAX_DIMS], sa[WH_MAX_DIMS], sb[WH_MAX_DIMS];
  int64_t inner; /* last dim */
} bin_job;

static inline float bin1(int op, float x, float y) {
  switch (op) {
    case WH_OP_ADD: return x + y;
    case WH_OP_SUB: return x - y;
    case WH_OP_MUL: return x * y;
    default: return x / y;
  }
}

WH_HOT static void bin_flat(void *arg, int64_t b0, int64_t e0) {
  bin_job *j = arg;
  const float *a = j->a, *b = j->b;
  float *y = j->y;
  switch (j->op) {
    case WH_OP_ADD: for (int64_t i = b0; i < e0; i++) y[i] = a[i] + b[i]; break;
    case WH_OP_SUB: for (int64_t i = b0; i < e0; i++) y[i] = a[i] - b[i]; break;
    case WH_OP_MUL: for (int64_t i = b0; i < e0; i++) y[i] = a[i] * b[i]; break;
    default: for (int64_t i = b0; i < e0; i++) y[i] = a[i] / b[i]; break;
  }
}

/* rows of the last dimension; each row decodes its offsets into a and b */
WH_HOT static void bin_rows(void *arg, int64_t r0, int64_t r1) {
  bin_job *j = arg;
  int64_t n = j->inner, sal = j->sa[j->nd - 1], sbl = j->sb[j->nd - 1];
  for (int64_t r = r0; r < r1; r++) {
    int64_t rem = r, oa = 0, ob = 0;
    for (int k = j->nd - 2; k >= 0; k--) {
      int64_t idx = rem % j->d[k];
      rem /= j->d[k];
      oa += idx * j->sa[k];
      ob += idx * j->sb[k];
    }
    const float *a = j->a + oa, *b = j->b + ob;
    float *y = j->y + r * n;
    if (sal == 1 && sbl == 1) {
      for (int64_t i = 0; i < n; i++) y[i] = bin1(j->op, a[i], b[i]);
    } else if (sal == 1 && sbl == 0) {
      float bv = b[0];
      for (int64_t i = 0; i < n; i++) y[i] = bin1(j->op, a[i], bv);
    } else {
      for (int64_t i = 0; i < n; i++) y[i] = bin1(j->op, a[i * sal], b[i * sbl]);
    }
  }
}

wh_status wh__cpu_binary(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out) {
  bin_job j = {.a = wh__f32(&in[0]), .b = wh__f32(&in[1]), .y = wh__f32(out), .op = n->op};
  if (out->numel == 0) return WH_OK;
  if (in[0].numel == out->numel && in[1].numel == out->numel) {
    wh__parallel_for(ex->pool, out->numel, GRAIN, bin_flat, &j);
    return WH_OK;
  }
  j.nd = out->ndim ? out->ndim : 1;
  if (out->ndim == 0) {
    j.d[0] = 1;
    j.sa[0] = j.sb[0] = 0;
  } else {
    memcpy(j.d, out->d, sizeof(int64_t) * (size_t)out->ndim);
    wh__bcast_strides(&in[0], out->ndim, out->d, j.sa);
    wh__bcast_strides(&in[1], out->ndim, out->d, j.sb);
  }
  j.inner = j.d[j.nd - 1];
  int64_t rows = out->numel / j.inner;
  wh__parallel_for(ex->pool, rows, GRAIN / (j.inner + 1) + 1, bin_rows, &j);
  return WH_OK;
}

/* ---- scale and bias */

typedef struct {
  const float *x, *b, *s;
  float *y;
  float k;
  int64_t inner, axis_len;
  int op;
} map_job;

WH_HOT static void scale_range(void *arg, int64_t b0, int64_t e0) {
  map_job *j = arg;
  for (int64_t i = b0; i < e0; i++) j->y[i] = j->x[i] * j->k;
}

wh_status wh__cpu_scale(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out) {
  map_job j = {.x = wh__f32(&in[0]), .y = wh__f32(out), .k = (float)n->fa[0]};
  wh__parallel_for(ex->pool, out->numel, GRAIN, scale_range, &j);
  return WH_OK;
}

/* rows are (outer, axis) pairs; each row adds one bias value to `inner` elements */
WH_HOT static void bias_range(void *arg, int64_t r0, int64_t r1) {
  map_job *j = arg;
  for (int64_t r = r0; r < r1; r++) {
    float bv = j->b[r % j->axis_len];
    const float *x = j->x + r * j->inner;
    float *y = j->y + r * j->inner;
    for (int64_t i = 0; i < j->inner; i++) y[i] = x[i] + bv;
  }
}

WH_HOT static void bias_last_range(void *arg, int64_t r0, int64_t r1) {
  map_job *j = arg;
  int64_t c = j->axis_len;
  for (int64_t r = r0; r < r1; r++) {
    const float *x = j->x + r * c;
    float *y = j->y + r * c;
    for (int64_t i = 0; i < c; i++) y[i] = x[i] + j->b[i];
  }
}

wh_status wh__cpu_bias_add(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out) {
  int ax = (int)n->ia[0];
  map_job j = {.x = wh__f32(&in[0]), .b = wh__f32(&in[1]), .y = wh__f32(out), .axis_len = in[0].d[ax]};
  j.inner = 1;
  for (int k = ax + 1; k < in[0].ndim; k++) j.inner *= in[0].d[k];
  if (out->numel == 0) return WH_OK;
  if (j.inner == 1) {
    int64_t rows = out->numel / j.axis_len;
    wh__parallel_for(ex->pool, rows, GRAIN / (j.axis_len + 1) + 1, bias_last_range, &j);
  } else {
    int64_t rows = out->numel / j.inner;
    wh__parallel_for(ex->pool, rows, GRAIN / (j.inner + 1) + 1, bias_range, &j);
  }
  return WH_OK;
}

/* ---- activations */

WH_HOT static void unary_range(void *arg, int64_t b0, int64_t e0) {
  map_job *j = arg;
  const float *x = j->x;
  float *y = j->y;
  switch (j->op) {
    case WH_OP_RELU: for (int64_t i = b0; i < e0; i++) y[i] = x[i] > 0 ? x[i] : 0.0f; break;
    case WH_OP_GELU:
      for (int64_t i = b0; i < e0; i++) y[i] = x[i] * wh__sigmoidf(wh__gelu_2u(x[i]));
      break;
    case WH_OP_TANH: for (int64_t i = b0; i < e0; i++) y[i] = wh__tanhf(x[i]); break;
    case WH_OP_SIGMOID: for (int64_t i = b0; i < e0; i++) y[i] = wh__sigmoidf(x[i]); break;
    case WH_OP_EXP: for (int64_t i = b0; i < e0; i++) y[i] = expf(x[i]); break;
    default: for (int64_t i = b0; i < e0; i++) y[i] = logf(x[i]); break;
  }
}

wh_status wh__cpu_unary(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out) {
  map_job j = {.x = wh__f32(&in[0]), .y = wh__f32(out), .op = n->op};
  wh__parallel_for(ex->pool, out->numel, GRAIN / 4, unary_range, &j);
  return WH_OK;
}

/* s is the saved tensor (x or y of the forward, see ops.c gr_unary), x here is dy */
WH_HOT static void unary_grad_range(void *arg, int64_t b0, int64_t e0) {
  map_job *j = arg;
  const float *s = j->s, *dy = j->x;
  float *dx = j->y;
  switch (j->op) {
    case WH_OP_RELU: for (int64_t i = b0; i < e0; i++) dx[i] = s[i] > 0 ? dy[i] : 0.0f; break;
    case WH_OP_GELU:
      for (int64_t i = b0; i < e0; i++) dx[i] = wh__gelu_grad(s[i], wh__sigmoidf(wh__gelu_grad_2u(s[i])), dy[i]);
      break;
    case WH_OP_TANH: for (int64_t i = b0; i < e0; i++) dx[i] = dy[i] * (1.0f - s[i] * s[i]); break;
    case WH_OP_SIGMOID: for (int64_t i = b0; i < e0; i++) dx[i] = dy[i] * s[i] * (1.0f - s[i]); break;
    case WH_OP_EXP: for (int64_t i = b0; i < e0; i++) dx[i] = dy[i] * s[i]; break;
    default: for (int64_t i = b0; i < e0; i++) dx[i] = dy[i] / s[i]; break;
  }
}

wh_status wh__cpu_unary_grad(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out) {
  map_job j = {.s = wh__f32(&in[0]), .x = wh__f32(&in[1]), .y = wh__f32(out), .op = (int)n->ia[0]};
  wh__parallel_for(ex->pool, out->numel, GRAIN / 4, unary_grad_range, &j);
  return WH_OK;
}

/* ---- dropout: the mask (../kmath.h) is a hash of (seed, step, index), not stored */

typedef struct {
  const float *x;
  float *y;
  wh__dropout d;
} drop_job;

WH_HOT static void dropout_range(void *arg, int64_t b0, int64_t e0) {
  drop_job *j = arg;
  for (int64_t i = b0; i < e0; i++) j->y[i] = wh__dropout_apply(&j->d, i, j->x[i]);
}

wh_status wh__cpu_dropout(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out) {
  double p = n->fa[0];
  if (!ex->train || p == 0) {
    if (out->data != in[0].data) memcpy(out->data, in[0].data, (size_t)out->numel * sizeof(float));
    return WH_OK;
  }
  drop_job j = {.x = wh__f32(&in[0]), .y = wh__f32(out), .d = wh__dropout_of(ex, n, out->numel)};
  wh__parallel_for(ex->pool, out->numel, GRAIN, dropout_range, &j);
  return WH_OK;
}

/* ---- mean squared error */

wh_status wh__cpu_mse(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out) {
  (void)ex, (void)n;
  const float *p = wh__f32(&in[0]), *t = wh__f32(&in[1]);
  double acc = 0;
  for (int64_t i = 0; i < in[0].numel; i++) {
    double d = (double)p[i] - t[i];
    acc += d * d;
  }
  wh__f32(out)[0] = in[0].numel ? (float)(acc / (double)in[0].numel) : 0.0f;
  return WH_OK;
}

wh_status wh__cpu_mse_grad(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out) {
  (void)ex;
  const float *p = wh__f32(&in[0]), *t = wh__f32(&in[1]);
  float *dx = wh__f32(out);
  int64_t cnt = in[0].numel;
  float k = cnt ? (float)(n->ia[0]) * 2.0f * wh__f32(&in[2])[0] / (float)cnt : 0.0f;
  for (int64_t i = 0; i < cnt; i++) dx[i] = k * (p[i] - t[i]);
  return WH_OK;
}
