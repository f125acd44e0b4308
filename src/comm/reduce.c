/* reduce.c - the host arithmetic of reductions (dst += src, dst *= k) in every communicable dtype,
 * and those dtypes' sizes; bf16 sums round to nearest even. */
#include <stdint.h>
#include <string.h>

#include "../base/half.h"
#include "comm.h"

int wh__comm_dtype_ok(wh_dtype dt) { return dt == WH_F32 || dt == WH_F64 || dt == WH_I32 || dt == WH_BF16; }

size_t wh__comm_dtype_size(wh_dtype dt) {
  switch (dt) {
    case WH_F32: case WH_I32: return 4;
    case WH_F64: return 8;
    case WH_BF16: case WH_F16: return 2;
  }
  return 0;
}

void wh__reduce_add(void *dst, const void *src, size_t n, wh_dtype dt) {
  switch (dt) {
    case WH_F32: {
      float *d = dst;
      const float *s = src;
      for (size_t i = 0; i < n; i++) d[i] += s[i];
      break;
    }
    case WH_F64: {
      double *d = dst;
      const double *s = src;
      for (size_t i = 0; i < n; i++) d[i] += s[i];
      break;
    }
    case WH_I32: {
      int32_t *d = dst;
      const int32_t *s = src;
      for (size_t i = 0; i < n; i++) d[i] = (int32_t)((uint32_t)d[i] + (uint32_t)s[i]); /* wraps, never UB */
      break;
    }
    case WH_BF16: {
      uint16_t *d = dst;
      const uint16_t *s = src;
      for (size_t i = 0; i < n; i++) d[i] = wh__f32_to_bf16(wh__bf16_to_f32(d[i]) + wh__bf16_to_f32(s[i]));
      break;
    }
    default: break;
  }
}

void wh__reduce_scale(void *dst, size_t n, wh_dtype dt, double k) {
  switch (dt) {
    case WH_F32: {
      float *d = dst, kf = (float)k;
      for (size_t i = 0; i < n; i++) d[i] *= kf;
      break;
    }
    case WH_F64: {
      double *d = dst;
      for (size_t i = 0; i < n; i++) d[i] *= k;
      break;
    }
    case WH_I32: {
      /* an integer average truncates toward zero */
      int32_t *d = dst;
      int64_t div = (int64_t)(1.0 / k + 0.5);
      for (size_t i = 0; i < n; i++) d[i] = (int32_t)(d[i] / div);
      break;
    }
    case WH_BF16: {
      uint16_t *d = dst;
      for (size_t i = 0; i < n; i++) d[i] = wh__f32_to_bf16((float)(wh__bf16_to_f32(d[i]) * k));
      break;
    }
    default: break;
  }
}
