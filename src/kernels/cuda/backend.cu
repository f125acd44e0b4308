/* backend.cu - the CUDA device context of a session: device, stream, cuBLASLt, workspaces;
 * device memory and copies for the runtime; kernel error reporting. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "common.cuh"

extern "C" struct wh__lt *wh__lt_open(char *err, size_t cap);
extern "C" void wh__lt_close(struct wh__lt *lt);

#define REDUCE_FLOATS 1024

static wh_status status_of(cudaError_t e) {
  return e == cudaErrorMemoryAllocation ? WH_ERR_OUT_OF_MEMORY : WH_ERR_INTERNAL;
}

static wh_status dfail(wh__cuda *d, cudaError_t e, const char *what) {
  snprintf(d->err, sizeof d->err, "%s: %s", what, cudaGetErrorString(e));
  return status_of(e);
}

extern "C" int wh__cuda_device_count(void) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError(); /* no driver or no device: clear the sticky-free error */
    return 0;
  }
  return n;
}

extern "C" wh_status wh__cuda_open(int device, int precision, wh__cuda **out, char *err, size_t cap) {
  *out = NULL;
  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count == 0) {
    snprintf(err, cap, "no CUDA device is visible%s%s", e != cudaSuccess ? ": " : "",
             e != cudaSuccess ? cudaGetErrorString(e) : "");
    cudaGetLastError();
    return WH_ERR_UNSUPPORTED;
  }
  if (device < 0 || device >= count) {
    snprintf(err, cap, "CUDA device %d does not exist (%d visible)", device, count);
    return WH_ERR_INVALID_ARGUMENT;
  }
  if (precision < WH_PRECISION_F32 || precision > WH_PRECISION_BF16) {
    snprintf(err, cap, "unknown precision %d", precision);
    return WH_ERR_INVALID_ARGUMENT;
  }
  wh__cuda *d = (wh__cuda *)calloc(1, sizeof *d);
  if (!d) {
    snprintf(err, cap, "out of memory");
    return WH_ERR_OUT_OF_MEMORY;
  }
  d->device = device;
  d->precision = precision;
  if ((e = cudaSetDevice(device)) != cudaSuccess || (e = cudaDeviceGetAttribute(&d->sms, cudaDevAttrMultiProcessorCount, device)) != cudaSuccess ||
      (e = cudaStreamCreateWithFlags(&d->stream, cudaStreamNonBlocking)) != cudaSuccess ||
      (e = cudaMalloc(&d->reduce_buf, REDUCE_FLOATS * sizeof(float))) != cudaSuccess) {
    snprintf(err, cap, "CUDA device %d: %s", device, cudaGetErrorString(e));
    wh__cuda_close(d);
    return status_of(e);
  }
  if (!(d->lt = wh__lt_open(err, cap))) {
    wh__cuda_close(d);
    return WH_ERR_UNSUPPORTED;
  }
  *out = d;
  return WH_OK;
}

extern "C" void wh__cuda_close(wh__cuda *d) {
  if (!d) return;
  cudaSetDevice(d->device);
  if (d->stream) cudaStreamSynchronize(d->stream);
  wh__lt_close(d->lt);
  if (d->scratch) cudaFree(d->scratch);
  if (d->reduce_buf) cudaFree(d->reduce_buf);
  if (d->stream) cudaStreamDestroy(d->stream);
  free(d);
}

extern "C" const char *wh__cuda_error(const wh__cuda *d) { return d ? d->err : "no CUDA context"; }

extern "C" wh_status wh__cuda_alloc(wh__cuda *d, size_t bytes, void **p) {
  *p = NULL;
  cudaSetDevice(d->device);
  cudaError_t e = cudaMalloc(p, bytes ? bytes : 256);
  if (e != cudaSuccess) {
    *p = NULL;
    cudaGetLastError();
    char what[96];
    snprintf(what, sizeof what, "cudaMalloc of %zu bytes", bytes);
    return dfail(d, e, what);
  }
  return WH_OK;
}

extern "C" void wh__cuda_free(wh__cuda *d, void *p) {
  if (!d || !p) return;
  cudaSetDevice(d->device);
  cudaStreamSynchronize(d->stream); /* nothing queued may still use it */
  cudaFree(p);
}

extern "C" wh_status wh__cuda_copy(wh__cuda *d, void *dst, const void *src, size_t bytes, wh__copy_kind kind) {
  if (bytes == 0) return WH_OK;
  static const cudaMemcpyKind kinds[] = {cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice};
  cudaSetDevice(d->device);
  cudaError_t e = cudaMemcpyAsync(dst, src, bytes, kinds[kind], d->stream);
  if (e == cudaSuccess && kind == WH__D2H) e = cudaStreamSynchronize(d->stream);
  if (e != cudaSuccess) return dfail(d, e, kind == WH__H2D ? "copy to the device" : kind == WH__D2H ? "copy from the device" : "device copy");
  return WH_OK;
}

extern "C" wh_status wh__cuda_zero(wh__cuda *d, void *p, size_t bytes) {
  if (bytes == 0) return WH_OK;
  cudaSetDevice(d->device);
  cudaError_t e = cudaMemsetAsync(p, 0, bytes, d->stream);
  return e == cudaSuccess ? WH_OK : dfail(d, e, "cudaMemsetAsync");
}

extern "C" wh_status wh__cuda_sync(wh__cuda *d) {
  cudaSetDevice(d->device);
  cudaError_t e = cudaStreamSynchronize(d->stream);
  if (e == cudaSuccess) e = cudaGetLastError();
  return e == cudaSuccess ? WH_OK : dfail(d, e, "a device kernel failed");
}

__global__ void axpy_kernel(float *acc, const float *g, int64_t n, float w, int first) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    acc[i] = first ? w * g[i] : acc[i] + w * g[i];
}

extern "C" wh_status wh__cuda_axpy(wh__cuda *d, float *acc, const float *g, int64_t n, float w, int first) {
  if (n <= 0) return WH_OK;
  int64_t blocks = (n + 255) / 256;
  if (blocks > (int64_t)d->sms * 32) blocks = (int64_t)d->sms * 32;
  axpy_kernel<<<(unsigned)blocks, 256, 0, d->stream>>>(acc, g, n, w, first);
  cudaError_t e = cudaGetLastError();
  return e == cudaSuccess ? WH_OK : dfail(d, e, "gradient accumulation");
}

wh_status wh__cu_fail(wh__exec *ex, cudaError_t e, const char *what) {
  if (ex->err) snprintf(ex->err, (size_t)ex->err_cap, "%s: %s", what, cudaGetErrorString(e));
  return status_of(e);
}

wh_status wh__cu_msg(wh__exec *ex, wh_status st, const char *fmt, ...) {
  if (ex->err) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ex->err, (size_t)ex->err_cap, fmt, ap);
    va_end(ap);
  }
  return st;
}

void *wh__cuda_scratch(wh__exec *ex, size_t bytes) {
  wh__cuda *d = ex->dev;
  if (bytes <= d->scratch_cap && d->scratch) return d->scratch;
  if (d->scratch) {
    cudaStreamSynchronize(d->stream);
    cudaFree(d->scratch);
    d->scratch = NULL;
    d->scratch_cap = 0;
  }
  size_t want = bytes + bytes / 8; /* a little headroom: batch sizes move */
  cudaError_t e = cudaMalloc(&d->scratch, want ? want : 256);
  if (e != cudaSuccess) {
    cudaGetLastError();
    d->scratch = NULL;
    if (ex->err) snprintf(ex->err, (size_t)ex->err_cap, "device workspace of %zu bytes: %s", want, cudaGetErrorString(e));
    return NULL;
  }
  d->scratch_cap = want;
  return d->scratch;
}
