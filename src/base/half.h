/* half.h - the 16-bit float formats one scalar at a time, round to nearest even, the same on the
 * host and (compiled by nvcc) on a device: bf16 (fp32's exponent, 8 bits of mantissa) and IEEE fp16
 * (5 exponent bits: overflow to infinity, gradual underflow). Used wherever values are stored
 * narrow: kernels' casts, communication's bf16 sums. */
#ifndef WH_HALF_H
#define WH_HALF_H

#include <stdint.h>
#include <string.h>

#ifdef __CUDACC__
#define WH_HF static __host__ __device__ __forceinline__
#else
#define WH_HF static inline
#endif

WH_HF uint32_t wh__f32_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
}

WH_HF float wh__bits_f32(uint32_t u) {
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

WH_HF float wh__bf16_to_f32(uint16_t h) { return wh__bits_f32((uint32_t)h << 16); }

WH_HF uint16_t wh__f32_to_bf16(float f) {
  uint32_t u = wh__f32_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* a quiet NaN stays one */
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}

WH_HF float wh__f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  if (e == 0x1f) /* infinity; a NaN comes back quiet, as the conversion instructions give it */
    return wh__bits_f32(sign | 0x7f800000u | (m << 13) | (m ? 0x400000u : 0u));
  if (e == 0) {
    if (m == 0) return wh__bits_f32(sign);
    /* subnormal: m * 2^-24 exactly */
    float v = (float)m * 5.9604644775390625e-8f;
    return sign ? -v : v;
  }
  return wh__bits_f32(sign | ((e + 112u) << 23) | (m << 13));
}

WH_HF uint16_t wh__f32_to_f16(float f) {
  uint32_t u = wh__f32_bits(f), sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu)); /* NaN */
  if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* rounds past 65504: infinity */
  if (a < 0x38800000u) { /* below fp16's smallest normal: subnormal or zero, rounded to even */
    if (a < 0x33000000u) return (uint16_t)sign; /* under half the smallest subnormal */
    uint32_t e = a >> 23, m = (a & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126u - e; /* 14 + (113 - e) - 1 ... the mantissa right shift into 10 bits */
    uint32_t q = m >> shift, rest = m & ((1u << shift) - 1u), halfway = 1u << (shift - 1u);
    if (rest > halfway || (rest == halfway && (q & 1u))) q++;
    return (uint16_t)(sign | q);
  }
  uint32_t r = a + 0xfffu + ((a >> 13) & 1u); /* round to nearest even at bit 13 */
  return (uint16_t)(sign | (((r >> 23) - 112u) << 10) | ((r >> 13) & 0x3ffu));
}

#endif
