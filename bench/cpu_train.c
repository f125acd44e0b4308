/* cpu_train.c - libwhale's side of the CPU training benchmark: times training steps of an MLP
 * and a GPT, and libwhale's matmul against raw cblas_sgemm on the GPT's GEMM shapes. Prints one
 * JSON object; bench/cpu_bench.py runs it next to the PyTorch side and prints the ratios.
 *
 *   cpu_train THREADS STEPS */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "gpt.h"
#include "whale.h"

#define DIMS(...) (int64_t[]){__VA_ARGS__}
static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Peak resident set of this process image (VmHWM; unlike ru_maxrss it does not carry over
 * from the parent across exec). */
static double peak_rss_mb(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  double kb = 0;
  while (f && fgets(line, sizeof line, f))
    if (sscanf(line, "VmHWM: %lf", &kb) == 1) break;
  if (f) fclose(f);
  return kb / 1024.0;
}

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_d);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

typedef struct {
  double step_s, peak_mb, plan_mb;
} result;

/* Time `steps` training steps after 3 warm-up steps; median seconds per step. */
static result time_steps(wh_ctx *ctx, wh_graph *g, wh_value in0, const void *d0, size_t b0, wh_value in1,
                         const void *d1, size_t b1, int64_t batch, int steps) {
  wh_adamw_options ao = WH_ADAMW_OPTIONS_INIT;
  ao.lr.lr = 1e-4f;
  CHECK(wh_optimizer_adamw(g, &ao));
  wh_session *s;
  wh_session_options so = WH_SESSION_OPTIONS_INIT;
  so.batch = batch;
  CHECK(wh_session_create(ctx, g, &so, &s));
  CHECK(wh_session_feed(s, in0, d0, b0));
  CHECK(wh_session_feed(s, in1, d1, b1));
  double *t = malloc(sizeof(double) * (size_t)steps);
  for (int i = 0; i < 3; i++) CHECK(wh_session_step(s));
  for (int i = 0; i < steps; i++) {
    double t0 = now();
    CHECK(wh_session_step(s));
    t[i] = now() - t0;
  }
  wh_memory_stats ms = WH_MEMORY_STATS_INIT;
  CHECK(wh_session_memory(s, &ms));
  result r = {median(t, steps), peak_rss_mb(),
              (double)(ms.arena_bytes + ms.param_bytes + ms.state_bytes) / 1048576.0};
  free(t);
  wh_session_destroy(s);
  return r;
}

static result bench_mlp(wh_ctx *ctx, int steps) {
  const int B = 256, IN = 784, H = 1024, OUT = 10;
  wh_graph *g;
  CHECK(wh_graph_create(ctx, &g));
  wh_value x = wh_input(g, "x", WH_F32, 2, DIMS(WH_BATCH, IN));
  wh_value y = wh_input(g, "y", WH_I32, 1, DIMS(WH_BATCH));
  wh_value h = wh_relu(g, gpt_linear(g, x, "fc1", IN, H, 1, 0.02f));
  h = wh_relu(g, gpt_linear(g, h, "fc2", H, H, 2, 0.02f));
  wh_value loss = wh_cross_entropy(g, gpt_linear(g, h, "fc3", H, OUT, 3, 0.02f), y);
  CHECK(wh_backward(g, loss));
  float *xd = malloc(sizeof(float) * (size_t)(B * IN));
  int32_t *yd = malloc(sizeof(int32_t) * (size_t)B);
  for (int i = 0; i < B * IN; i++) xd[i] = (float)((i * 37) % 101) / 101.0f - 0.5f;
  for (int i = 0; i < B; i++) yd[i] = i % OUT;
  result r = time_steps(ctx, g, x, xd, sizeof(float) * (size_t)(B * IN), y, yd, sizeof(int32_t) * (size_t)B, B, steps);
  free(xd), free(yd);
  wh_graph_destroy(g);
  return r;
}

static result bench_gpt(wh_ctx *ctx, int steps) {
  const int B = 16, T = 128, V = 256;
  gpt_options o = GPT_OPTIONS_INIT; /* the GPT-2 shape torch_train.py builds too */
  o.vocab = V, o.context = T, o.width = 256, o.layers = 4, o.heads = 4;
  wh_graph *g;
  CHECK(wh_graph_create(ctx, &g));
  gpt_model m;
  if (!gpt_build(g, &o, &m)) {
    fprintf(stderr, "build: %s\n", wh_graph_error(g));
    exit(1);
  }
  CHECK(wh_backward(g, m.loss));
  int32_t *td = malloc(sizeof(int32_t) * (size_t)(B * T)), *gd = malloc(sizeof(int32_t) * (size_t)(B * T));
  for (int i = 0; i < B * T; i++) td[i] = (i * 7) % V, gd[i] = (i * 7 + 1) % V;
  result r = time_steps(ctx, g, m.tokens, td, sizeof(int32_t) * (size_t)(B * T), m.targets, gd,
                        sizeof(int32_t) * (size_t)(B * T), B, steps);
  free(td), free(gd);
  wh_graph_destroy(g);
  return r;
}

/* libwhale's matmul node against cblas_sgemm with OpenBLAS threads, same shapes, same threads. */
static double gemm_ratio(wh_ctx *ctx, int threads, int reps) {
  const int shapes[][3] = {{2048, 768, 256}, {2048, 256, 256}, {2048, 1024, 256}, {2048, 256, 1024}};
  double ratios[4];
  for (int si = 0; si < 4; si++) {
    int m = shapes[si][0], n = shapes[si][1], k = shapes[si][2];
    float *a = malloc(sizeof(float) * (size_t)m * k), *b = malloc(sizeof(float) * (size_t)n * k);
    float *c = malloc(sizeof(float) * (size_t)m * n);
    for (long i = 0; i < (long)m * k; i++) a[i] = (float)(i % 13) * 0.01f;
    for (long i = 0; i < (long)n * k; i++) b[i] = (float)(i % 7) * 0.01f;
    wh_graph *g;
    CHECK(wh_graph_create(ctx, &g));
    wh_value A = wh_input(g, "a", WH_F32, 2, DIMS(WH_BATCH, k));
    wh_value Bv = wh_input(g, "b", WH_F32, 2, DIMS(n, k));
    wh_value Y = wh_matmul(g, A, Bv, 0, 1);
    CHECK(wh_graph_keep(g, Y));
    wh_session *s;
    wh_session_options so = WH_SESSION_OPTIONS_INIT;
    so.batch = m;
    CHECK(wh_session_create(ctx, g, &so, &s));
    CHECK(wh_session_feed(s, A, a, sizeof(float) * (size_t)m * k));
    CHECK(wh_session_feed(s, Bv, b, sizeof(float) * (size_t)n * k));
    /* blocks, not alternation: OpenBLAS's own workers keep spinning for a while after a threaded
     * call and would steal a core from the next libwhale run */
    double tw[64], tb[64];
    int nw = 0, nb = 0;
    for (int blk = 0; blk < 3; blk++) {
      for (int r = 0; r < reps + 1; r++) {
        double t0 = now();
        CHECK(wh_session_run(s, WH_RUN_EVAL));
        if (r > 0 && nw < 64) tw[nw++] = now() - t0;
      }
      openblas_set_num_threads(threads);
      for (int r = 0; r < reps + 1; r++) {
        double t0 = now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0f, a, k, b, k, 0.0f, c, n);
        if (r > 0 && nb < 64) tb[nb++] = now() - t0;
      }
      openblas_set_num_threads(1);
      struct timespec pause = {0, 300000000}; /* OpenBLAS workers spin ~2^28 cycles before sleeping */
      nanosleep(&pause, NULL);
    }
    ratios[si] = median(tb, nb) / median(tw, nw); /* throughput ratio = time ratio inverted */
    fprintf(stderr, "gemm %dx%dx%d: libwhale %.3f ms, cblas_sgemm %.3f ms\n", m, n, k, 1e3 * median(tw, nw), 1e3 * median(tb, nb));
    wh_session_destroy(s);
    wh_graph_destroy(g);
    free(a), free(b), free(c);
  }
  return median(ratios, 4);
}

int main(int argc, char **argv) {
  int threads = argc > 1 ? atoi(argv[1]) : 2, steps = argc > 2 ? atoi(argv[2]) : 7;
  const char *which = argc > 3 ? argv[3] : "all";
  wh_ctx *ctx;
  wh_ctx_options o = WH_CTX_OPTIONS_INIT;
  o.num_threads = threads;
  if (wh_ctx_create(&ctx, &o) != WH_OK) return 1;
  printf("{\"threads\": %d", threads);
  if (!strcmp(which, "all") || !strcmp(which, "mlp")) {
    result r = bench_mlp(ctx, steps);
    printf(", \"mlp_step_s\": %.6f, \"mlp_peak_rss_mb\": %.1f, \"mlp_planned_mb\": %.1f", r.step_s, r.peak_mb, r.plan_mb);
  }
  if (!strcmp(which, "all") || !strcmp(which, "gpt")) {
    result r = bench_gpt(ctx, steps);
    printf(", \"gpt_step_s\": %.6f, \"gpt_peak_rss_mb\": %.1f, \"gpt_planned_mb\": %.1f", r.step_s, r.peak_mb, r.plan_mb);
  }
  if (!strcmp(which, "all") || !strcmp(which, "gemm")) printf(", \"gemm_ratio\": %.4f", gemm_ratio(ctx, threads, 9));
  printf("}\n");
  wh_ctx_destroy(ctx);
  return 0;
}
