/* probe.c - the GPU measurements behind wh_cluster_probe (probe.h): the CUDA runtime, and cuBLAS
 * loaded only while a device is timed; in a build without CUDA no device is visible. */
#include "probe.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wh_config.h"

#ifdef WH_HAVE_CUDA
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <dlfcn.h>

/* cuBLAS is loaded only here, when a GPU is probed: linking it costs every CPU-only process about
 * 150 MB of resident memory at start-up */
typedef struct {
  void *lib;
  cublasStatus_t (*create)(cublasHandle_t *);
  cublasStatus_t (*destroy)(cublasHandle_t);
  cublasStatus_t (*sgemm)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int, const float *,
                          const float *, int, const float *, int, const float *, float *, int);
  cublasStatus_t (*gemmex)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int, const void *,
                           const void *, cudaDataType, int, const void *, cudaDataType, int, const void *, void *,
                           cudaDataType, int, cublasComputeType_t, cublasGemmAlgo_t);
} cublas_fns;

struct wh__gpu_probe {
  int dev;
  char name[256]; /* for messages: "?" until the properties are read */
  cublas_fns cb;
  cublasHandle_t h;
  cudaEvent_t e0, e1;
  void *A, *B, *C, *host;
};

static int cublas_load(cublas_fns *f) {
  memset(f, 0, sizeof *f);
  f->lib = dlopen("libcublas.so.13", RTLD_NOW | RTLD_LOCAL);
  if (!f->lib) f->lib = dlopen("libcublas.so", RTLD_NOW | RTLD_LOCAL);
  if (!f->lib) return 0;
  *(void **)&f->create = dlsym(f->lib, "cublasCreate_v2");
  *(void **)&f->destroy = dlsym(f->lib, "cublasDestroy_v2");
  *(void **)&f->sgemm = dlsym(f->lib, "cublasSgemm_v2");
  *(void **)&f->gemmex = dlsym(f->lib, "cublasGemmEx");
  if (f->create && f->destroy && f->sgemm && f->gemmex) return 1;
  dlclose(f->lib);
  f->lib = NULL;
  return 0;
}

/* The seconds since e0 was recorded, once the work queued after it has finished. */
static cudaError_t stop_timer(cudaEvent_t e0, cudaEvent_t e1, double *sec) {
  float ms = 0;
  cudaError_t e = cudaEventRecord(e1, 0);
  if (e == cudaSuccess) e = cudaEventSynchronize(e1);
  if (e == cudaSuccess) e = cudaEventElapsedTime(&ms, e0, e1);
  *sec = ms * 1e-3;
  return e;
}
#define TIMING "cudaEventRecord / cudaEventSynchronize / cudaEventElapsedTime"

/* A failed call ends the step with its message (the error cleared, so later calls do not see it). */
#define CK(call, what)                                                                                     \
  do {                                                                                                     \
    cudaError_t e_ = (call);                                                                               \
    if (e_ != cudaSuccess) {                                                                               \
      cudaGetLastError();                                                                                  \
      snprintf(msg, cap, "GPU %d (%s): %s failed: %s", g->dev, g->name, what, cudaGetErrorString(e_));     \
      return WH_ERR_UNSUPPORTED;                                                                           \
    }                                                                                                      \
  } while (0)
#define CKB(call, what)                                                                                    \
  do {                                                                                                     \
    cublasStatus_t e_ = (call);                                                                            \
    if (e_ != CUBLAS_STATUS_SUCCESS) {                                                                     \
      snprintf(msg, cap, "GPU %d (%s): %s failed: cuBLAS status %d", g->dev, g->name, what, (int)e_);      \
      return WH_ERR_UNSUPPORTED;                                                                           \
    }                                                                                                      \
  } while (0)

int wh__gpu_probe_count(const char **why) {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess || n < 1) {
    cudaGetLastError(); /* the caller's next CUDA call must not see our failure */
    *why = e != cudaSuccess ? cudaGetErrorString(e) : "count 0";
    return 0;
  }
  return n;
}

int wh__gpu_probe_current(void) {
  int prev = 0;
  if (cudaGetDevice(&prev) != cudaSuccess) cudaGetLastError(), prev = 0;
  return prev;
}

void wh__gpu_probe_restore(int dev) {
  cudaSetDevice(dev);
  cudaGetLastError();
}

static wh_status open_device(wh__gpu_probe *g, wh__gpu_props *props, char *msg, size_t cap) {
  struct cudaDeviceProp p;
  memset(&p, 0, sizeof p);
  CK(cudaGetDeviceProperties(&p, g->dev), "cudaGetDeviceProperties");
  props->known = 1;
  snprintf(props->name, sizeof props->name, "%s", p.name);
  snprintf(g->name, sizeof g->name, "%s", p.name);
  props->mem_bytes = (double)p.totalGlobalMem;
  props->bus_width_bits = p.memoryBusWidth;
  CK(cudaSetDevice(g->dev), "cudaSetDevice");
  int clk_khz = 0; /* CUDA 13 dropped memoryClockRate from the struct; the attribute remains */
  if (cudaDeviceGetAttribute(&clk_khz, cudaDevAttrMemoryClockRate, g->dev) != cudaSuccess) {
    cudaGetLastError();
    clk_khz = 0;
  }
  props->mem_clock_khz = clk_khz;
  return WH_OK;
}

wh_status wh__gpu_probe_open(int dev, wh__gpu_probe **out, wh__gpu_props *props, char *msg, size_t cap) {
  *out = NULL;
  memset(props, 0, sizeof *props);
  snprintf(props->name, sizeof props->name, "?");
  wh__gpu_probe *g = calloc(1, sizeof *g);
  if (!g) {
    snprintf(msg, cap, "GPU %d: out of memory", dev);
    return WH_ERR_OUT_OF_MEMORY;
  }
  g->dev = dev;
  snprintf(g->name, sizeof g->name, "?");
  if (!cublas_load(&g->cb)) {
    snprintf(msg, cap, "GPU %d: cuBLAS (libcublas.so) could not be loaded for the calibration", dev);
    free(g);
    return WH_ERR_UNSUPPORTED;
  }
  wh_status st = open_device(g, props, msg, cap);
  if (st != WH_OK) {
    wh__gpu_probe_close(g);
    return st;
  }
  *out = g;
  return WH_OK;
}

wh_status wh__gpu_probe_time(wh__gpu_probe *g, int bf16, int h2d, wh__gpu_times *t, char *msg, size_t cap) {
  memset(t, 0, sizeof *t);
  CK(cudaEventCreate(&g->e0), "cudaEventCreate");
  CK(cudaEventCreate(&g->e1), "cudaEventCreate");
  CKB(g->cb.create(&g->h), "cublasCreate");
  int n = 4096;
  size_t fb = sizeof(float) * (size_t)n * (size_t)n;
  t->n = n;
  t->bytes = fb;
  CK(cudaMalloc(&g->A, fb), "cudaMalloc");
  CK(cudaMalloc(&g->B, fb), "cudaMalloc");
  CK(cudaMalloc(&g->C, fb), "cudaMalloc");
  CK(cudaMemset(g->A, 0, fb), "cudaMemset");
  CK(cudaMemset(g->B, 0, fb), "cudaMemset");
  const float one = 1.0f, zero = 0.0f;
  for (int r = -1; r < 5; r++) {
    double sec;
    CK(cudaEventRecord(g->e0, 0), "cudaEventRecord");
    CKB(g->cb.sgemm(g->h, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, g->A, n, g->B, n, &zero, g->C, n), "cublasSgemm");
    CK(stop_timer(g->e0, g->e1, &sec), TIMING);
    if (r >= 0) t->sgemm[r] = sec;
  }
  if (bf16) {
    for (int r = -1; r < 5; r++) {
      double sec;
      CK(cudaEventRecord(g->e0, 0), "cudaEventRecord");
      CKB(g->cb.gemmex(g->h, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, g->A, CUDA_R_16BF, n, g->B, CUDA_R_16BF, n,
                       &zero, g->C, CUDA_R_32F, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
          "cublasGemmEx (bf16)");
      CK(stop_timer(g->e0, g->e1, &sec), TIMING);
      if (r >= 0) t->bf16[r] = sec;
    }
  }
  /* device-to-device copy of 3 x 64 MiB (A+B+C as one span is not contiguous: copy A -> C) */
  for (int r = -1; r < 5; r++) {
    double sec;
    CK(cudaEventRecord(g->e0, 0), "cudaEventRecord");
    CK(cudaMemcpyAsync(g->C, g->A, fb, cudaMemcpyDeviceToDevice, 0), "cudaMemcpy (device to device)");
    CK(stop_timer(g->e0, g->e1, &sec), TIMING);
    if (r >= 0) t->d2d[r] = sec;
  }
  if (h2d) {
    CK(cudaMallocHost(&g->host, fb), "cudaMallocHost");
    for (int r = -1; r < 3; r++) {
      double sec;
      CK(cudaEventRecord(g->e0, 0), "cudaEventRecord");
      CK(cudaMemcpyAsync(g->A, g->host, fb, cudaMemcpyHostToDevice, 0), "cudaMemcpy (host to device)");
      CK(stop_timer(g->e0, g->e1, &sec), TIMING);
      if (r >= 0) t->h2d[r] = sec;
    }
  }
  return WH_OK;
}

void wh__gpu_probe_close(wh__gpu_probe *g) {
  if (!g) return;
  if (g->host) cudaFreeHost(g->host);
  if (g->A) cudaFree(g->A);
  if (g->B) cudaFree(g->B);
  if (g->C) cudaFree(g->C);
  if (g->h) g->cb.destroy(g->h);
  dlclose(g->cb.lib);
  if (g->e0) cudaEventDestroy(g->e0);
  if (g->e1) cudaEventDestroy(g->e1);
  cudaGetLastError();
  free(g);
}

#else /* no CUDA in this build: no device to probe */

int wh__gpu_probe_count(const char **why) {
  *why = "no CUDA in this build";
  return -1;
}

int wh__gpu_probe_current(void) { return 0; }
void wh__gpu_probe_restore(int dev) { (void)dev; }

wh_status wh__gpu_probe_open(int dev, wh__gpu_probe **out, wh__gpu_props *props, char *msg, size_t cap) {
  *out = NULL;
  memset(props, 0, sizeof *props);
  snprintf(props->name, sizeof props->name, "?");
  snprintf(msg, cap, "GPU %d: no CUDA in this build", dev);
  return WH_ERR_UNSUPPORTED;
}

wh_status wh__gpu_probe_time(wh__gpu_probe *g, int bf16, int h2d, wh__gpu_times *t, char *msg, size_t cap) {
  (void)g, (void)bf16, (void)h2d;
  memset(t, 0, sizeof *t);
  snprintf(msg, cap, "no CUDA in this build");
  return WH_ERR_UNSUPPORTED;
}

void wh__gpu_probe_close(wh__gpu_probe *g) { (void)g; }

#endif
