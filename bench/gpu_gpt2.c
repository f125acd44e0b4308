/* gpu_gpt2.c - libwhale's side of the GPU benchmark: trains GPT-2 124M (12 layers, 12 heads,
 * width 768, vocabulary 50304, context 1024) on the CUDA backend with AdamW and prints one JSON
 * object: median step time, tokens/s, parameter count, the loss, device memory planned. With
 * --profile it then runs a few steps with a per-op timing (each node synchronised) and prints
 * where the time goes, to stderr. bench/gpu_bench.py runs it next to PyTorch.
 *
 *   gpu_gpt2 [--batch 16] [--steps 20] [--precision bf16|tf32|f32] [--layers 12] [--context 1024]
 *            [--width 768] [--heads 12] [--vocab 50304] [--profile] */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "gpt.h"
#include "whale.h"

static wh_ctx *ctx;

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  gpt_options c = GPT_OPTIONS_INIT; /* GPT-2 124M */
  int batch = 16, steps = 20, profile = 0;
  wh_precision prec = WH_PRECISION_BF16;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : "";
    if (!strcmp(a, "--batch")) batch = atoi(v), i++;
    else if (!strcmp(a, "--steps")) steps = atoi(v), i++;
    else if (!strcmp(a, "--layers")) c.layers = atoi(v), i++;
    else if (!strcmp(a, "--context")) c.context = atoi(v), i++;
    else if (!strcmp(a, "--width")) c.width = atoi(v), i++;
    else if (!strcmp(a, "--heads")) c.heads = atoi(v), i++;
    else if (!strcmp(a, "--vocab")) c.vocab = atoi(v), i++;
    else if (!strcmp(a, "--profile")) profile = 1;
    else if (!strcmp(a, "--precision")) {
      prec = !strcmp(v, "f32") ? WH_PRECISION_F32 : !strcmp(v, "tf32") ? WH_PRECISION_TF32 : WH_PRECISION_BF16;
      i++;
    } else {
      fprintf(stderr, "unknown argument %s\n", a);
      return 2;
    }
  }
  if (steps < 1 || batch < 1) return 2;
  if (wh_cuda_device_count() < 1) {
    fprintf(stderr, "no CUDA device\n");
    return 77;
  }
  wh_ctx_options co = WH_CTX_OPTIONS_INIT;
  CHECK(wh_ctx_create(&ctx, &co));
  wh_graph *g;
  CHECK(wh_graph_create(ctx, &g));
  gpt_model m;
  if (!gpt_build(g, &c, &m)) {
    fprintf(stderr, "build: %s\n", wh_graph_error(g));
    return 1;
  }
  CHECK(wh_backward(g, m.loss));
  wh_adamw_options ao = WH_ADAMW_OPTIONS_INIT;
  ao.lr.lr = 3e-4f;
  CHECK(wh_optimizer_adamw(g, &ao));
  wh_session_options so = WH_SESSION_OPTIONS_INIT;
  so.batch = batch;
  so.device = WH_DEVICE_CUDA;
  so.precision = prec;
  wh_session *s;
  CHECK(wh_session_create(ctx, g, &so, &s));
  size_t n = (size_t)batch * (size_t)c.context;
  int32_t *tok = malloc(n * sizeof(int32_t)), *tgt = malloc(n * sizeof(int32_t));
  uint64_t r = 0x9e3779b97f4a7c15ull;
  for (size_t i = 0; i < n; i++) {
    r = r * 6364136223846793005ull + 1442695040888963407ull;
    tok[i] = (int32_t)((r >> 33) % 50257);
  }
  for (size_t i = 0; i < n; i++) tgt[i] = tok[(i + 1) % n];
  CHECK(wh_session_feed(s, m.tokens, tok, n * sizeof(int32_t)));
  CHECK(wh_session_feed(s, m.targets, tgt, n * sizeof(int32_t)));
  float loss0 = 0, loss = 0;
  for (int i = 0; i < 3; i++) CHECK(wh_session_step(s)); /* warm-up: cuBLASLt heuristics, workspaces */
  CHECK(wh_session_fetch(s, m.loss, &loss0, sizeof loss0));
  double *t = malloc(sizeof(double) * (size_t)steps);
  for (int i = 0; i < steps; i++) {
    double t0 = now();
    CHECK(wh_session_step(s)); /* returns after the device finished the step */
    t[i] = now() - t0;
  }
  CHECK(wh_session_fetch(s, m.loss, &loss, sizeof loss));
  qsort(t, (size_t)steps, sizeof(double), cmp_d);
  double med = t[steps / 2];
  wh_memory_stats ms = WH_MEMORY_STATS_INIT;
  CHECK(wh_session_memory(s, &ms));
  printf("{\"impl\": \"libwhale\", \"batch\": %d, \"context\": %d, \"params\": %lld, \"precision\": \"%s\", "
         "\"step_ms\": %.3f, \"tok_s\": %.1f, \"loss_first\": %.4f, \"loss_last\": %.4f, \"device_mb\": %.0f}\n",
         batch, c.context, (long long)m.params,
         prec == WH_PRECISION_BF16 ? "bf16" : prec == WH_PRECISION_TF32 ? "tf32" : "f32", med * 1e3,
         (double)n / med, loss0, loss, (double)(ms.arena_bytes + ms.param_bytes + ms.state_bytes) / 1048576.0);
  fflush(stdout);
  if (profile) {
    char *txt = NULL;
    CHECK(wh_session_profile(s, 1));
    for (int i = 0; i < 3; i++) CHECK(wh_session_step(s));
    CHECK(wh_session_profile_report(s, &txt));
    fprintf(stderr, "%s", txt);
    wh_free(txt);
  }
  free(t), free(tok), free(tgt);
  wh_session_destroy(s);
  wh_graph_destroy(g);
  wh_ctx_destroy(ctx);
  return 0;
}
