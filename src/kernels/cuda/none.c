/* none.c - the CUDA backend's entry points in a build without it (no toolkit or no nvcc): no
 * device is ever visible, so no session holds a device context and these are never reached with
 * one; opening says why there is none. */
#include <stdio.h>

#include "cuda.h"

int wh__cuda_device_count(void) { return 0; }

wh_status wh__cuda_open(int device, int precision, wh__cuda **out, char *err, size_t cap) {
  (void)device, (void)precision;
  *out = NULL;
  snprintf(err, cap, "this build has no CUDA backend (configure with the CUDA toolkit and nvcc on PATH)");
  return WH_ERR_UNSUPPORTED;
}

void wh__cuda_close(wh__cuda *d) { (void)d; }
const char *wh__cuda_error(const wh__cuda *d) { return d ? "" : "no CUDA backend in this build"; }

wh_status wh__cuda_alloc(wh__cuda *d, size_t bytes, void **p) {
  (void)d, (void)bytes;
  *p = NULL;
  return WH_ERR_UNSUPPORTED;
}

void wh__cuda_free(wh__cuda *d, void *p) { (void)d, (void)p; }

wh_status wh__cuda_copy(wh__cuda *d, void *dst, const void *src, size_t bytes, wh__copy_kind kind) {
  (void)d, (void)dst, (void)src, (void)bytes, (void)kind;
  return WH_ERR_UNSUPPORTED;
}

wh_status wh__cuda_zero(wh__cuda *d, void *p, size_t bytes) {
  (void)d, (void)p, (void)bytes;
  return WH_ERR_UNSUPPORTED;
}

wh_status wh__cuda_sync(wh__cuda *d) {
  (void)d;
  return WH_ERR_UNSUPPORTED;
}

wh_status wh__cuda_axpy(wh__cuda *d, float *acc, const float *g, int64_t n, float w, int first) {
  (void)d, (void)acc, (void)g, (void)n, (void)w, (void)first;
  return WH_ERR_UNSUPPORTED;
}
