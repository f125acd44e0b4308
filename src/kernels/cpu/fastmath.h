/* fastmath.h - branch-free exp and friends that the compiler can vectorise, and the attribute
 * that builds hot loops for several x86-64 levels (chosen at load time by the dynamic linker).
 * Accurate to about 1 ulp over the float range used by activations and softmax. */
#ifndef WH_FASTMATH_H
#define WH_FASTMATH_H

#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#define WH_HOT __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define WH_HOT
#endif

/* e^x: x = n ln2 + r with |r| <= ln2/2, e^r by a degree-7 polynomial, 2^n through the exponent. */
static inline float wh__expf(float x) {
  x = x < -87.0f ? -87.0f : x;
  x = x > 88.0f ? 88.0f : x;
  const float shift = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
  float n = (x * 1.44269504088896341f + shift) - shift;
  float r = x - n * 0.693145751953125f;
  r = r - n * 1.428606765330187045e-06f;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  int32_t bits = ((int32_t)n + 127) << 23;
  float scale;
  memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

static inline float wh__sigmoidf(float x) { return 1.0f / (1.0f + wh__expf(-x)); }

/* tanh(x) = 1 - 2 / (e^{2x} + 1), with an odd polynomial near 0 where that form cancels */
static inline float wh__tanhf(float x) {
  float big = 1.0f - 2.0f / (wh__expf(2.0f * x) + 1.0f);
  float x2 = x * x;
  float q = -1382.0f / 155925.0f;
  q = q * x2 + 62.0f / 2835.0f;
  q = q * x2 - 17.0f / 315.0f;
  q = q * x2 + 2.0f / 15.0f;
  q = q * x2 - 1.0f / 3.0f;
  float small = x + x * x2 * q;
  return (x2 < 0.16f) ? small : big;
}

#endif
