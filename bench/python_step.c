/* python_step.c - the C side of the Python overhead benchmark (bench/python_bench.py): the same
 * loops the Python side runs, timed the same way. It serves the benchmark over stdin/stdout so that
 * C and Python can take turns one measurement at a time (on a shared machine neighbouring
 * measurements see the same load): it prints "ready", then answers each line "go" with one
 * measurement, "<seconds> <loss>", until end of input.
 *
 *   python_step gpt THREADS STEPS LAYERS HEADS WIDTH CONTEXT BATCH
 *       the GPT of examples/gpt_text.c (examples/models/gpt.h, its options and AdamW; STEPS sizes
 *       the learning-rate schedule): a measurement is one step - feed tokens, feed targets, step,
 *       fetch the loss
 *   python_step tiny THREADS ITERS
 *       x [4, 16] @ w[4, 16]^T against a target by mse, SGD: a measurement is ITERS iterations of
 *       the same feed, feed, step, fetch, reported as seconds per iteration */
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

static int gpt(wh_ctx *ctx, int steps, int layers, int heads, int width, int context, int batch) {
  gpt_options o = GPT_OPTIONS_INIT;
  o.vocab = 256, o.context = context, o.width = width, o.layers = layers, o.heads = heads;
  o.names = GPT_NAMES_LONG;
  o.pos_std = 0.02f;
  o.scaled_proj = 1;
  o.stage_per_block = o.recompute_per_block = 1;
  wh_graph *g;
  CHECK(wh_graph_create(ctx, &g));
  gpt_model m;
  if (!gpt_build(g, &o, &m)) {
    fprintf(stderr, "build: %s\n", wh_graph_error(g));
    return 1;
  }
  CHECK(wh_backward(g, m.loss));
  wh_adamw_options ao = WH_ADAMW_OPTIONS_INIT;
  ao.lr = (wh_lr){WH_LR_WARMUP_COSINE, 3e-3f, steps / 20 + 1, steps, 3e-4f};
  ao.beta2 = 0.95f, ao.weight_decay = 0.1f, ao.clip_norm = 1.0f;
  CHECK(wh_optimizer_adamw(g, &ao));
  wh_session_options so = WH_SESSION_OPTIONS_INIT;
  so.batch = batch;
  wh_session *s;
  CHECK(wh_session_create(ctx, g, &so, &s));
  size_t n = (size_t)batch * (size_t)context;
  int32_t *tok = malloc(sizeof(int32_t) * n), *tgt = malloc(sizeof(int32_t) * n);
  for (size_t i = 0; i < n; i++) tok[i] = (int32_t)((i * 7 + 3) % 256), tgt[i] = (int32_t)((i * 7 + 4) % 256);
  float loss = 0;
  char line[64];
  printf("ready\n");
  fflush(stdout);
  while (fgets(line, sizeof line, stdin)) {
    double t0 = now();
    CHECK(wh_session_feed(s, m.tokens, tok, sizeof(int32_t) * n));
    CHECK(wh_session_feed(s, m.targets, tgt, sizeof(int32_t) * n));
    CHECK(wh_session_step(s));
    CHECK(wh_session_fetch(s, m.loss, &loss, sizeof loss));
    printf("%.9g %.9g\n", now() - t0, (double)loss);
    fflush(stdout);
  }
  free(tok), free(tgt);
  wh_session_destroy(s);
  wh_graph_destroy(g);
  return 0;
}

static int tiny(wh_ctx *ctx, int iters) {
  wh_graph *g;
  CHECK(wh_graph_create(ctx, &g));
  wh_value x = wh_input(g, "x", WH_F32, 2, DIMS(WH_BATCH, 16));
  wh_value y = wh_input(g, "y", WH_F32, 2, DIMS(WH_BATCH, 4));
  wh_value w = wh_param(g, "w", WH_F32, 2, DIMS(4, 16), WH_INIT(WH_INIT_NORMAL, 0, 0.1f, 1));
  wh_value loss = wh_mse(g, wh_matmul(g, x, w, 0, 1), y);
  CHECK(wh_graph_status(g));
  CHECK(wh_backward(g, loss));
  wh_sgd_options sg = WH_SGD_OPTIONS_INIT;
  CHECK(wh_optimizer_sgd(g, &sg));
  wh_session_options so = WH_SESSION_OPTIONS_INIT;
  so.batch = 4;
  wh_session *s;
  CHECK(wh_session_create(ctx, g, &so, &s));
  float xd[64], yd[16], l = 0;
  for (int i = 0; i < 64; i++) xd[i] = (float)(i % 5) * 0.1f;
  for (int i = 0; i < 16; i++) yd[i] = (float)(i % 3);
  char line[64];
  printf("ready\n");
  fflush(stdout);
  while (fgets(line, sizeof line, stdin)) {
    double t0 = now();
    for (int i = 0; i < iters; i++) {
      CHECK(wh_session_feed(s, x, xd, sizeof xd));
      CHECK(wh_session_feed(s, y, yd, sizeof yd));
      CHECK(wh_session_step(s));
      CHECK(wh_session_fetch(s, loss, &l, sizeof l));
    }
    printf("%.9g %.9g\n", (now() - t0) / iters, (double)l);
    fflush(stdout);
  }
  wh_session_destroy(s);
  wh_graph_destroy(g);
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 4 || (strcmp(argv[1], "gpt") && strcmp(argv[1], "tiny")) || (!strcmp(argv[1], "gpt") && argc < 9)) {
    fprintf(stderr, "usage: python_step gpt THREADS STEPS LAYERS HEADS WIDTH CONTEXT BATCH | tiny THREADS ITERS\n");
    return 2;
  }
  wh_ctx *ctx;
  wh_ctx_options co = WH_CTX_OPTIONS_INIT;
  co.num_threads = atoi(argv[2]);
  if (wh_ctx_create(&ctx, &co) != WH_OK) return 1;
  int rc = !strcmp(argv[1], "gpt") ? gpt(ctx, atoi(argv[3]), atoi(argv[4]), atoi(argv[5]), atoi(argv[6]),
                                         atoi(argv[7]), atoi(argv[8]))
                                   : tiny(ctx, atoi(argv[3]));
  wh_ctx_destroy(ctx);
  return rc;
}
