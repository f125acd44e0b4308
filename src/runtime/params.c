/* params.c - parameter initialisation: counter-based, so a seed gives the same values on any rank,
 * in any layout (a split parameter is initialised whole, then cut). */
#include <math.h>

#include "session_impl.h"

static uint64_t split64(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static double unif(uint64_t *s) { return ((double)(split64(s) >> 11) + 0.5) * (1.0 / 9007199254740992.0); }

void wh__param_init(const wh__value *v, float *p, int64_t numel) {
  const wh_init *in = &v->init;
  const wh__shape *sh = &v->shape;
  int64_t rf = 1;
  for (int i = 2; i < sh->ndim; i++) rf *= sh->d[i];
  int64_t fan_in = sh->ndim >= 2 ? sh->d[1] * rf : numel, fan_out = sh->ndim >= 2 ? sh->d[0] * rf : numel;
  if (in->fan_in > 0) fan_in = in->fan_in;
  if (in->fan_out > 0) fan_out = in->fan_out;
  uint64_t st = in->seed * 0x2545f4914f6cdd1dull + 0x1234567ull;
  double a = in->a, b = in->b, gain = in->a != 0 ? in->a : 1.0;
  double lo = 0, hi = 0, mean = 0, std = 0;
  int normal = 0;
  switch (in->kind) {
    case WH_INIT_ZEROS: lo = hi = 0; break;
    case WH_INIT_ONES: lo = hi = 1; break;
    case WH_INIT_CONSTANT: lo = hi = a; break;
    case WH_INIT_UNIFORM: lo = a, hi = b; break;
    case WH_INIT_NORMAL: normal = 1, mean = a, std = b; break;
    case WH_INIT_XAVIER_UNIFORM: hi = gain * sqrt(6.0 / (double)(fan_in + fan_out)), lo = -hi; break;
    case WH_INIT_XAVIER_NORMAL: normal = 1, std = gain * sqrt(2.0 / (double)(fan_in + fan_out)); break;
    case WH_INIT_KAIMING_UNIFORM: hi = sqrt(2.0 / (1.0 + a * a)) * sqrt(3.0 / (double)fan_in), lo = -hi; break;
    case WH_INIT_KAIMING_NORMAL: normal = 1, std = sqrt(2.0 / (1.0 + a * a)) / sqrt((double)fan_in); break;
  }
  for (int64_t i = 0; i < numel; i++) {
    if (normal) {
      double u1 = unif(&st), u2 = unif(&st);
      p[i] = (float)(mean + std * sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
    } else {
      p[i] = (float)(lo + (hi - lo) * unif(&st));
    }
  }
}
