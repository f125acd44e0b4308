/* probe.h - the GPU measurements behind wh_cluster_probe: each visible device's properties, then
 * timed SGEMM, 16-bit GEMM and copies through the CUDA runtime and cuBLAS (loaded on demand).
 * Plain C on the CUDA runtime alone, so a build without nvcc still calibrates its GPUs; a build
 * without CUDA sees none. A failure's message (msg) starts "GPU <n>" and names the call. */
#ifndef WH_CUDA_PROBE_H
#define WH_CUDA_PROBE_H

#include <stddef.h>

#include "whale.h"

/* What the driver says of a device before anything is timed. */
typedef struct wh__gpu_props {
  int known;          /* the fields below were read (else name is "?" and the rest 0) */
  char name[256];     /* CUDA's name, "NVIDIA A100-SXM4-80GB" */
  double mem_bytes;
  int mem_clock_khz;  /* 0 where the driver does not report it */
  int bus_width_bits;
} wh__gpu_props;

/* Seconds of each timed run, after one untimed warm-up; a run not asked for stays 0. */
typedef struct wh__gpu_times {
  int n;              /* the GEMMs are n x n x n */
  size_t bytes;       /* one n x n f32 matrix: what each copy moves */
  double sgemm[5];    /* f32 */
  double bf16[5];     /* bf16 inputs, f32 accumulation */
  double d2d[5];      /* device to device */
  double h2d[3];      /* pinned host to device */
} wh__gpu_times;

typedef struct wh__gpu_probe wh__gpu_probe;

/* Visible devices; 0 with *why set (CUDA's message, or "count 0") when there are none; -1 in a
 * build without CUDA. A failure is cleared so the caller's next CUDA call does not see it. */
int wh__gpu_probe_count(const char **why);
/* The calling thread's current device (0 when CUDA cannot say), and making dev current again
 * once the probe is done. */
int wh__gpu_probe_current(void);
void wh__gpu_probe_restore(int dev);

/* Load cuBLAS, read dev's properties and make it current. On failure *out is NULL and msg says
 * why; props stay filled as far as they were read (props->known: the name and memory are real). */
wh_status wh__gpu_probe_open(int dev, wh__gpu_probe **out, wh__gpu_props *props, char *msg, size_t cap);
/* Time the SGEMM and the device-to-device copy, and the bf16 GEMM / host-to-device copy when
 * asked. On failure msg says which call failed. */
wh_status wh__gpu_probe_time(wh__gpu_probe *g, int bf16, int h2d, wh__gpu_times *t, char *msg, size_t cap);
/* Free the buffers, handle and events, unload cuBLAS; clears any CUDA error left. NULL: no-op. */
void wh__gpu_probe_close(wh__gpu_probe *g);

#endif
