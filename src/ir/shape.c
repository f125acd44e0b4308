/* shape.c - shapes with one symbolic batch dimension: sizes, equality, broadcasting.
 * A dimension d < 0 means (-d) * B, so [B, T, C] flattened to [B*T, C] stays symbolic. */
#include <stdio.h>
#include <string.h>

#include "ir.h"

int64_t wh__dim(int64_t d, int64_t batch) { return d < 0 ? -d * batch : d; }

int64_t wh__numel(const wh__shape *s, int64_t batch) {
  int64_t n = 1;
  for (int i = 0; i < s->ndim; i++) n *= wh__dim(s->d[i], batch);
  return n;
}

int64_t wh__numel_sym(const wh__shape *s, int *p) {
  int64_t c = 1;
  *p = 0;
  for (int i = 0; i < s->ndim; i++) {
    if (s->d[i] < 0) {
      (*p)++;
      c *= -s->d[i];
    } else {
      c *= s->d[i];
    }
  }
  return c;
}

int wh__shape_eq(const wh__shape *a, const wh__shape *b) {
  if (a->ndim != b->ndim) return 0;
  for (int i = 0; i < a->ndim; i++)
    if (a->d[i] != b->d[i]) return 0;
  return 1;
}

int wh__shape_symbolic_count(const wh__shape *s) {
  int n = 0;
  for (int i = 0; i < s->ndim; i++) n += s->d[i] < 0;
  return n;
}

size_t wh__dtype_size(wh_dtype dt) {
  switch (dt) {
    case WH_F32: return 4;
    case WH_I32: return 4;
    case WH_BF16: return 2;
    case WH_F16: return 2;
    case WH_F64: return 8;
  }
  return 0;
}

const char *wh__dtype_name(wh_dtype dt) {
  switch (dt) {
    case WH_F32: return "f32";
    case WH_I32: return "i32";
    case WH_BF16: return "bf16";
    case WH_F16: return "f16";
    case WH_F64: return "f64";
  }
  return "?";
}

int wh__broadcast(const wh__shape *a, const wh__shape *b, wh__shape *out) {
  int n = a->ndim > b->ndim ? a->ndim : b->ndim;
  wh__shape r = {.ndim = n};
  for (int i = 0; i < n; i++) {
    int ia = a->ndim - n + i, ib = b->ndim - n + i;
    int64_t da = ia >= 0 ? a->d[ia] : 1, db = ib >= 0 ? b->d[ib] : 1;
    if (da == db || db == 1) r.d[i] = da;
    else if (da == 1) r.d[i] = db;
    else return 0;
  }
  if (wh__shape_symbolic_count(&r) > 1) return 0;
  *out = r;
  return 1;
}

const char *wh__shape_str(const wh__shape *s, char *buf, int cap) {
  int o = snprintf(buf, (size_t)cap, "[");
  for (int i = 0; i < s->ndim && o < cap; i++) {
    const char *sep = i ? "," : "";
    if (s->d[i] == -1) o += snprintf(buf + o, (size_t)(cap - o), "%sB", sep);
    else if (s->d[i] < 0) o += snprintf(buf + o, (size_t)(cap - o), "%s%lldB", sep, (long long)-s->d[i]);
    else o += snprintf(buf + o, (size_t)(cap - o), "%s%lld", sep, (long long)s->d[i]);
  }
  if (o < cap) snprintf(buf + o, (size_t)(cap - o), "]");
  return buf;
}
