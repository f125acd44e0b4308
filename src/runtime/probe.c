/* probe.c - wh_cluster_probe: the machine this process runs on, measured. The CPU through
 * libwhale's own kernels (GEMM, a STREAM triad, a copy); each visible GPU through kernels/cuda. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../base/clock.h"
#include "../base/ctx.h"
#include "../kernels/cuda/probe.h"
#include "../kernels/kernels.h"
#include "../planner/planner.h"

#define GIB (1024.0 * 1024.0 * 1024.0)

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* GEMM: what libwhale's own CPU matmul achieves (OpenBLAS single-threaded per block, split over
 * the context's pool), n x n x n with n = 1024 unless a first small GEMM shows the machine is too
 * slow for that to finish quickly (an emulator, valgrind); median of a few after a warm-up. */
#define GEMM_N 1024
#define GEMM_REPS 5

static double gemm_once(wh_ctx *ctx, int64_t n, const float *a, const float *b, float *c) {
  double t0 = wh__now();
  wh__gemm(ctx->pool, 0, 0, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
  return wh__now() - t0;
}

static wh_status probe_gemm(wh_ctx *ctx, double *flops) {
  const size_t nn = (size_t)GEMM_N * GEMM_N;
  float *a = malloc(sizeof(float) * nn), *b = malloc(sizeof(float) * nn), *c = malloc(sizeof(float) * nn);
  if (!a || !b || !c) {
    free(a), free(b), free(c);
    return WH_ERR_OUT_OF_MEMORY;
  }
  for (size_t i = 0; i < nn; i++) {
    a[i] = (float)((int)(i * 7 % 13) - 6) * 0.01f;
    b[i] = (float)((int)(i * 5 % 11) - 5) * 0.01f;
  }
  /* a small one first: wakes the pool's threads, and says how large a GEMM this machine can time */
  double rate = 2.0 * 256 * 256 * 256 / fmax(gemm_once(ctx, 256, a, b, c), 1e-9);
  int64_t n = GEMM_N;
  while (n > 128 && 2.0 * (double)n * (double)n * (double)n / rate > 0.25) n /= 2;
  gemm_once(ctx, n, a, b, c); /* warm-up at the timed size */
  double t[GEMM_REPS];
  int reps = 0;
  double start = wh__now();
  while (reps < GEMM_REPS && (reps < 3 || wh__now() - start < 0.5)) {
    t[reps] = gemm_once(ctx, n, a, b, c);
    reps++;
  }
  double s = median(t, reps);
  *flops = 2.0 * (double)n * (double)n * (double)n / (s > 0 ? s : 1e-9);
  free(a), free(b), free(c);
  return WH_OK;
}

/* STREAM triad a = b + s c over arrays well beyond any cache, in parallel over the pool; counted
 * as STREAM does (24 bytes per element, no write-allocate traffic). */
#define TRIAD_BYTES ((size_t)256 << 20) /* the three arrays together */
#define TRIAD_REPS 5
#define TRIAD_CHUNK 65536

typedef struct {
  double *a, *b, *c;
  size_t n;
  int init;
} triad_job;

static void triad_range(void *arg, int64_t c0, int64_t c1) {
  triad_job *j = arg;
  size_t lo = (size_t)c0 * TRIAD_CHUNK, hi = (size_t)c1 * TRIAD_CHUNK;
  if (hi > j->n) hi = j->n;
  double *restrict a = j->a;
  const double *restrict b = j->b, *restrict c = j->c;
  if (j->init) {
    for (size_t i = lo; i < hi; i++) j->a[i] = 0, j->b[i] = 1.0, j->c[i] = 2.0;
    return;
  }
  for (size_t i = lo; i < hi; i++) a[i] = b[i] + 3.0 * c[i];
}

static wh_status probe_memory(wh_ctx *ctx, double *triad_bw, double *copy_bw) {
  size_t bytes = TRIAD_BYTES;
  double *buf = NULL;
  while (!(buf = malloc(bytes)) && bytes > ((size_t)32 << 20)) bytes /= 2;
  if (!buf) return WH_ERR_OUT_OF_MEMORY;
  triad_job j = {buf, NULL, NULL, bytes / 3 / sizeof(double), 1};
  j.b = j.a + j.n;
  j.c = j.b + j.n;
  int64_t chunks = (int64_t)((j.n + TRIAD_CHUNK - 1) / TRIAD_CHUNK);
  wh__parallel_for(ctx->pool, chunks, 1, triad_range, &j); /* first touch, by the threads that use it */
  j.init = 0;
  double t[TRIAD_REPS];
  for (int r = 0; r < TRIAD_REPS; r++) {
    double t0 = wh__now();
    wh__parallel_for(ctx->pool, chunks, 1, triad_range, &j);
    t[r] = wh__now() - t0;
  }
  double s = median(t, TRIAD_REPS);
  *triad_bw = 24.0 * (double)j.n / (s > 0 ? s : 1e-9);
  /* one thread's memcpy: what one process moves to a peer on the same node through shared memory */
  double tc[3];
  for (int r = 0; r < 3; r++) {
    double t0 = wh__now();
    memcpy(j.a, j.b, j.n * sizeof(double));
    tc[r] = wh__now() - t0;
  }
  s = median(tc, 3);
  *copy_bw = (double)(j.n * sizeof(double)) / (s > 0 ? s : 1e-9);
  volatile double sink = j.a[j.n / 2]; /* keep the work observable */
  (void)sink;
  free(buf);
  return WH_OK;
}

/* Physical memory, or less when this process's cgroup is limited. */
static double probe_mem_bytes(void) {
  long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
  double m = pages > 0 && psz > 0 ? (double)pages * (double)psz : 0;
  const char *files[] = {"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"};
  for (int i = 0; i < 2; i++) {
    FILE *f = fopen(files[i], "r");
    if (!f) continue;
    char line[64] = {0};
    if (fgets(line, sizeof line, f)) {
      char *e;
      double lim = strtod(line, &e);
      if (e != line && lim > 0 && (m == 0 || lim < m)) m = lim;
    }
    fclose(f);
  }
  return m > 0 ? m : 1 * GIB;
}

/* ---- GPUs: properties, then a calibration (SGEMM rate, device-to-device copy rate). Peaks come
 * from the catalogue when the CUDA name matches a kind (memory bandwidth from bus width x memory
 * clock when the driver reports them); the efficiencies are measured / peak. */

/* The catalogue kind whose model (the name before '-') is a word of the CUDA name, closest in
 * memory size: "NVIDIA A100-SXM4-80GB" -> A100-80GB, "Tesla V100-SXM2-16GB" -> V100-16GB. */
static const wh__device_kind *match_gpu(const char *name, double mem) {
  const wh__device_kind *best = NULL;
  double best_d = 0;
  for (int i = 0; i < wh__catalogue_n; i++) {
    const wh__device_kind *k = &wh__catalogue[i];
    if (strcmp(k->name, "CPU") == 0) continue;
    char model[32];
    snprintf(model, sizeof model, "%s", k->name);
    char *dash = strchr(model, '-');
    if (dash) *dash = 0;
    size_t ml = strlen(model);
    for (const char *p = strstr(name, model); p; p = strstr(p + 1, model)) {
      int left = p == name || !((p[-1] >= 'A' && p[-1] <= 'Z') || (p[-1] >= 'a' && p[-1] <= 'z') || (p[-1] >= '0' && p[-1] <= '9'));
      char r = p[ml];
      int right = !((r >= 'A' && r <= 'Z') || (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9'));
      if (left && right) {
        double d = fabs(log(mem / k->mem_bytes));
        if (!best || d < best_d) best = k, best_d = d;
        break;
      }
    }
  }
  return best;
}

static wh_status probe_gpu(wh_ctx *ctx, int dev, wh_device_desc *d, char *kind, size_t kind_cap) {
  char msg[sizeof ctx->err];
  wh__gpu_props p;
  wh__gpu_times tm;
  wh__gpu_probe *g = NULL;
  const wh__device_kind *cat = NULL;
  wh_status st = wh__gpu_probe_open(dev, &g, &p, msg, sizeof msg);
  double mem = p.known ? p.mem_bytes : 0;
  if (p.known) cat = match_gpu(p.name, mem);
  if (st == WH_OK) {
    int clk_khz = p.mem_clock_khz;
    double bw_peak = clk_khz > 0 && p.bus_width_bits > 0 ? 2.0 * clk_khz * 1e3 * p.bus_width_bits / 8.0
                     : cat                                ? cat->mem_bw
                                                          : 0;
    if (cat) {
      snprintf(kind, kind_cap, "%.31s", cat->name);
    } else {
      const char *nm = p.name;
      if (strncmp(nm, "NVIDIA ", 7) == 0) nm += 7;
      if (strncmp(nm, "Tesla ", 6) == 0) nm += 6;
      snprintf(kind, kind_cap, "%.31s", nm);
    }
    /* no datasheet: measure the 16-bit rate too (bf16 inputs, f32 accumulation); the catalogue's
     * links are the SXM boards' NVLink: a PCIe card, or one not in the catalogue, gets its
     * host-to-device rate over pinned memory instead */
    st = wh__gpu_probe_time(g, !cat, !cat || strcasestr(p.name, "pcie"), &tm, msg, sizeof msg);
    if (st == WH_OK) {
      int n = tm.n;
      size_t fb = tm.bytes;
      double s = median(tm.sgemm, 5);
      double f32 = 2.0 * n * (double)n * n / (s > 0 ? s : 1e-9);
      double bf16 = 0;
      if (!cat) {
        s = median(tm.bf16, 5);
        bf16 = 2.0 * n * (double)n * n / (s > 0 ? s : 1e-9);
      }
      s = median(tm.d2d, 5);
      double bw = 2.0 * (double)fb / (s > 0 ? s : 1e-9); /* read + write */
      double link = cat ? cat->link_bw : 0;
      if (!cat || strcasestr(p.name, "pcie")) {
        s = median(tm.h2d, 3);
        link = (double)fb / (s > 0 ? s : 1e-9);
      }
      d->mem_bytes = mem;
      if (cat) {
        d->flops_f32 = cat->flops_f32;
        d->flops_bf16 = cat->flops_bf16;
        d->eff_flops = wh__cluster_measured(fmin(1.0, f32 / cat->flops_f32), WH__UNIT_ONE);
      } else {
        d->flops_f32 = wh__cluster_measured(f32, WH__UNIT_TF);
        d->flops_bf16 = wh__cluster_measured(bf16 > f32 ? bf16 : f32, WH__UNIT_TF);
        d->eff_flops = 1.0;
      }
      if (bw_peak > 0) {
        d->mem_bw = wh__cluster_measured(bw_peak, WH__UNIT_GBPS);
        d->eff_bw = wh__cluster_measured(fmin(1.0, bw / bw_peak), WH__UNIT_ONE);
      } else {
        d->mem_bw = wh__cluster_measured(bw, WH__UNIT_GBPS);
        d->eff_bw = 1.0;
      }
      d->link_bw = wh__cluster_measured(link, WH__UNIT_GBPS);
      wh__log(ctx, WH_LOG_INFO,
              "wh_cluster_probe: GPU %d %s (%s): SGEMM %.1f TFLOP/s, copy %.0f GB/s, peak bandwidth %.0f GB/s (%s), "
              "%.1f GiB",
              dev, p.name, cat ? cat->name : "not in the catalogue", f32 / 1e12, bw / 1e9, d->mem_bw / 1e9,
              clk_khz > 0 ? "bus width x memory clock" : cat ? "datasheet" : "measured", mem / GIB);
    }
  }
  wh__gpu_probe_close(g);
  if (st != WH_OK) wh__ctx_set_error(ctx, "wh_cluster_probe: %s", msg);
  if (st != WH_OK && cat) {
    /* not calibrated (busy, exclusive mode, out of memory) but known: the datasheet figures */
    wh__log(ctx, WH_LOG_WARN, "%s; using the %s datasheet figures and default efficiencies", ctx->err, cat->name);
    snprintf(kind, kind_cap, "%.31s", cat->name);
    d->flops_f32 = cat->flops_f32;
    d->flops_bf16 = cat->flops_bf16;
    d->mem_bw = cat->mem_bw;
    d->mem_bytes = mem > 0 ? mem : cat->mem_bytes;
    d->link_bw = cat->link_bw;
    d->eff_flops = WH_EFF_FLOPS_DEFAULT;
    d->eff_bw = WH_EFF_BW_DEFAULT;
    st = WH_OK;
  }
  return st;
}

static wh_status probe_gpus(wh_ctx *ctx, wh_cluster *c) {
  const char *why = "";
  int n = wh__gpu_probe_count(&why);
  if (n < 0) return WH_OK; /* a build without CUDA: the CPU only, and nothing to say about it */
  if (n < 1) {
    wh__log(ctx, WH_LOG_INFO, "wh_cluster_probe: no CUDA device (%s): the CPU only", why);
    return WH_OK;
  }
  int prev = wh__gpu_probe_current();
  wh_status st = WH_OK;
  for (int i = 0; i < n && st == WH_OK; i++) {
    wh_device_desc d = WH_DEVICE_DESC_INIT;
    char kind[32] = "GPU";
    if (probe_gpu(ctx, i, &d, kind, sizeof kind) != WH_OK) {
      /* neither calibrated nor in the catalogue: no figure to give it */
      wh__log(ctx, WH_LOG_WARN, "%s; GPU %d left out of the cluster", ctx->err, i);
      continue;
    }
    d.kind = kind;
    st = wh_cluster_add_custom(c, &d, 0, 1);
  }
  wh__gpu_probe_restore(prev);
  return st;
}

wh_status wh_cluster_probe(wh_ctx *ctx, wh_cluster **out) {
  if (out) *out = NULL;
  if (!ctx || !out) return WH_ERR_INVALID_ARGUMENT;
  double t0 = wh__now();
  double flops = 0, triad = 0, copy = 0;
  wh_status st = probe_gemm(ctx, &flops);
  if (st == WH_OK) st = probe_memory(ctx, &triad, &copy);
  if (st != WH_OK) {
    wh__ctx_set_error(ctx, "wh_cluster_probe: out of memory for the CPU benchmarks");
    return st;
  }
  wh_cluster *c = NULL;
  if ((st = wh_cluster_create(ctx, &c)) != WH_OK) return st;
  /* measured, not datasheet: the peaks are what was achieved, so the efficiencies are 1 */
  wh_device_desc d = WH_DEVICE_DESC_INIT;
  d.kind = "CPU"; /* the planner keys its per-op overhead on this name */
  d.flops_f32 = wh__cluster_measured(flops, WH__UNIT_TF);
  d.flops_bf16 = d.flops_f32; /* the CPU kernels compute in f32 */
  d.mem_bw = wh__cluster_measured(triad, WH__UNIT_GBPS);
  d.mem_bytes = probe_mem_bytes();
  d.link_bw = wh__cluster_measured(copy, WH__UNIT_GBPS);
  d.eff_flops = 1.0;
  d.eff_bw = 1.0;
  st = wh_cluster_add_custom(c, &d, 0, 1);
  wh__log(ctx, WH_LOG_INFO,
          "wh_cluster_probe: CPU, %d threads: GEMM %.1f GFLOP/s, triad %.1f GB/s, copy %.1f GB/s, %.1f GiB (%.2f s)",
          ctx->num_threads, flops / 1e9, triad / 1e9, copy / 1e9, d.mem_bytes / GIB, wh__now() - t0);
  if (st == WH_OK) st = probe_gpus(ctx, c);
  if (st != WH_OK) {
    wh_cluster_destroy(c);
    return st;
  }
  *out = c;
  return WH_OK;
}
