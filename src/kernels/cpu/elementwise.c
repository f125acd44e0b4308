/* elementwise.c - CPU kernels for elementwise ops: broadcasting binaries, bias, activations and
 * their gradients, dropout, the mean squared error loss with its gradient, and casts. Loops are split by
 * output index (the loss sums in one thread), so results never depend on threads. */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "../../base/half.h"
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

/* ---- cast: between f32, bf16 and f16, rounded to nearest even (base/half.h); through the CPU's
 * conversion instructions where it has them - F16C for fp16, eight at a time; AVX512-BF16 for
 * bf16, sixteen - with the same results bit for bit (the bf16 instruction flushes subnormal inputs
 * to zero: those lanes are rounded again one by one, so a machine without it computes alike) */

typedef struct {
  const void *x;
  void *y;
  wh_dtype from, to;
  int f16c, bf16; /* the CPU has F16C (with AVX); AVX512-BF16 (with AVX512F/BW/VL) */
} cast_job;

__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) static void f32_to_bf16_fast(const float *x,
                                                                                            uint16_t *y, int64_t n) {
  const __m512i absmask = _mm512_set1_epi32(0x7fffffff), tiny = _mm512_set1_epi32(0x00800000);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m512 v = _mm512_loadu_ps(x + i);
    __m256bh h = _mm512_cvtneps_pbh(v);
    _mm256_storeu_si256((__m256i *)(y + i), (__m256i)h);
    __m512i a = _mm512_and_si512(_mm512_castps_si512(v), absmask);
    __mmask16 sub = _mm512_cmplt_epu32_mask(a, tiny) & _mm512_test_epi32_mask(a, a);
    for (int k = 0; sub; k++, sub >>= 1)
      if (sub & 1) y[i + k] = wh__f32_to_bf16(x[i + k]);
  }
  for (; i < n; i++) y[i] = wh__f32_to_bf16(x[i]);
}

__attribute__((target("avx512f,avx512bw"))) static void bf16_to_f32_fast(const uint16_t *x, float *y, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(x + i)));
    _mm512_storeu_ps(y + i, _mm512_castsi512_ps(_mm512_slli_epi32(w, 16)));
  }
  for (; i < n; i++) y[i] = wh__bf16_to_f32(x[i]);
}

__attribute__((target("f16c,avx"))) static void f32_to_f16_fast(const float *x, uint16_t *y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128((__m128i *)(y + i), _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
  for (; i < n; i++) y[i] = wh__f32_to_f16(x[i]);
}

__attribute__((target("f16c,avx"))) static void f16_to_f32_fast(const uint16_t *x, float *y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i))));
  for (; i < n; i++) y[i] = wh__f16_to_f32(x[i]);
}

static void cast_range(void *arg, int64_t a, int64_t b) {
  const cast_job *j = arg;
  const float *xf = j->x;
  const uint16_t *xh = j->x;
  float *yf = j->y;
  uint16_t *yh = j->y;
  if (j->from == j->to) {
    memcpy((char *)j->y + a * (int64_t)wh__dtype_size(j->to), (const char *)j->x + a * (int64_t)wh__dtype_size(j->from),
           (size_t)(b - a) * wh__dtype_size(j->to));
  } else if (j->from == WH_F32 && j->to == WH_BF16) {
    if (j->bf16) f32_to_bf16_fast(xf + a, yh + a, b - a);
    else
      for (int64_t i = a; i < b; i++) yh[i] = wh__f32_to_bf16(xf[i]);
  } else if (j->from == WH_BF16 && j->to == WH_F32) {
    if (j->bf16) bf16_to_f32_fast(xh + a, yf + a, b - a);
    else
      for (int64_t i = a; i < b; i++) yf[i] = wh__bf16_to_f32(xh[i]);
  } else if (j->from == WH_F32 && j->to == WH_F16) {
    if (j->f16c) f32_to_f16_fast(xf + a, yh + a, b - a);
    else
      for (int64_t i = a; i < b; i++) yh[i] = wh__f32_to_f16(xf[i]);
  } else if (j->from == WH_F16 && j->to == WH_F32) {
    if (j->f16c) f16_to_f32_fast(xh + a, yf + a, b - a);
    else
      for (int64_t i = a; i < b; i++) yf[i] = wh__f16_to_f32(xh[i]);
  } else if (j->from == WH_BF16 && j->to == WH_F16) {
    for (int64_t i = a; i < b; i++) yh[i] = wh__f32_to_f16(wh__bf16_to_f32(xh[i]));
  } else {
    for (int64_t i = a; i < b; i++) yh[i] = wh__f32_to_bf16(wh__f16_to_f32(xh[i]));
  }
}

/* The instructions the casts may use: bit 0 F16C, bit 1 AVX512-BF16 (what the CPU has; a test
 * clears bits to compare with the plain C). */
_Atomic int wh__cpu_cast_paths = -1;

static int cast_paths(void) {
  int p = wh__cpu_cast_paths;
  if (p < 0)
    wh__cpu_cast_paths = p = (__builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx")) |
                             (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                              __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16"))
                                 << 1;
  return p;
}

wh_status wh__cpu_cast(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out) {
  wh_dtype from = in[0].dtype, to = (wh_dtype)n->ia[0];
  int ok = (from == WH_F32 || from == WH_BF16 || from == WH_F16) && (to == WH_F32 || to == WH_BF16 || to == WH_F16);
  if (!ok || to != out->dtype) {
    snprintf(ex->err, (size_t)ex->err_cap, "cast from dtype %d to %d (output %d): f32, bf16 and f16 only", (int)from,
             (int)to, (int)out->dtype);
    return WH_ERR_DTYPE;
  }
  int paths = cast_paths();
  cast_job j = {in[0].data, out->data, from, to, paths & 1, (paths >> 1) & 1};
  wh__parallel_for(ex->pool, out->numel, GRAIN, cast_range, &j);
  return WH_OK;
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
