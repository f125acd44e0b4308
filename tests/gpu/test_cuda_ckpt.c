/* test_cuda_ckpt.c - checkpoints of CUDA sessions (state in device memory, moved through host
 * copies): a device session's checkpoint loads into a CPU session and back bit for bit, and 10
 * device steps, save, load into a new device session, 10 more equal 20 uninterrupted device steps.
 * Exits 77 without a CUDA device. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gpt.h"
#include "whale.h"
#include "../common/runner.h"

#define B 4
#define T 16

static wh_ctx *ctx;
static wh_graph *graph;
static gpt_model model;
static char root[64];

static wh_session *open_session(int cuda) {
  wh_session_options so = WH_SESSION_OPTIONS_INIT;
  so.batch = B;
  so.device = cuda ? WH_DEVICE_CUDA : WH_DEVICE_CPU;
  wh_session *s;
  CHECK(wh_session_create(ctx, graph, &so, &s));
  return s;
}

static void train(wh_session *s, int k0, int k1, float *l) {
  int32_t tok[B * T], tgt[B * T];
  for (int k = k0; k < k1; k++) {
    for (int i = 0; i < B * T; i++) tok[i] = (i * 7 + k * 3) % 64, tgt[i] = (i * 7 + k * 3 + 1) % 64;
    CHECK(wh_session_feed(s, model.tokens, tok, sizeof tok));
    CHECK(wh_session_feed(s, model.targets, tgt, sizeof tgt));
    CHECK(wh_session_step(s));
    CHECK(wh_session_fetch(s, model.loss, &l[k - k0], sizeof(float)));
  }
}

/* Every parameter and AdamW moment, concatenated. */
static float *state(wh_session *s, size_t *n) {
  size_t cap = 1 << 20, at = 0;
  char *buf = malloc(cap);
  static const char *suf[] = {"", ".adam_m", ".adam_v"};
  for (int i = 0; i < wh_graph_num_params(graph); i++)
    for (int k = 0; k < 3; k++) {
      char nm[256];
      snprintf(nm, sizeof nm, "%s%s", wh_value_name(graph, wh_graph_param(graph, i)), suf[k]);
      wh_value v = wh_graph_find(graph, nm);
      size_t b = wh_session_bytes(s, v);
      if (at + b > cap) buf = realloc(buf, cap = 2 * (at + b));
      CHECK(wh_session_get_param(s, v, buf + at, b));
      at += b;
    }
  *n = at;
  return (float *)buf;
}

static void between_devices(const void *arg) {
  (void)arg;
  char a[128], b[128];
  snprintf(a, sizeof a, "%s/from_cuda", root);
  snprintf(b, sizeof b, "%s/from_cpu", root);
  float l[5];
  wh_session *dev = open_session(1), *cpu = open_session(0);
  train(dev, 0, 5, l);
  CHECK(wh_checkpoint_save(dev, a, NULL));
  CHECK(wh_checkpoint_load(cpu, a, NULL, 0, NULL));
  size_t n1, n2;
  float *x = state(dev, &n1), *y = state(cpu, &n2);
  EXPECT_SAY(n1 == n2 && !memcmp(x, y, n1) && wh_session_steps(cpu) == 5,
             "a CUDA session's checkpoint loads into a CPU session bit for bit (%zu bytes)", n1);
  free(x), free(y);
  train(cpu, 5, 7, l);
  CHECK(wh_checkpoint_save(cpu, b, NULL));
  wh_session *dev2 = open_session(1);
  CHECK(wh_checkpoint_load(dev2, b, NULL, 0, NULL));
  x = state(cpu, &n1), y = state(dev2, &n2);
  EXPECT_SAY(n1 == n2 && !memcmp(x, y, n1) && wh_session_steps(dev2) == 7,
             "a CPU session's checkpoint loads into a CUDA session bit for bit");
  free(x), free(y);
  wh_session_destroy(dev2), wh_session_destroy(cpu), wh_session_destroy(dev);
}

static void resume(const void *arg) {
  (void)arg;
  char d[128];
  snprintf(d, sizeof d, "%s/resume", root);
  float full[20], part[20];
  wh_session *s = open_session(1);
  train(s, 0, 20, full);
  size_t n1, n2;
  float *want = state(s, &n1);
  wh_session_destroy(s);
  s = open_session(1);
  train(s, 0, 10, part);
  CHECK(wh_checkpoint_save(s, d, NULL));
  wh_session_destroy(s);
  s = open_session(1);
  CHECK(wh_checkpoint_load(s, d, NULL, 0, NULL));
  train(s, 10, 20, part + 10);
  float *got = state(s, &n2);
  double worst = 0, pe = 0, pr = 0;
  for (int k = 0; k < 20; k++) worst = fmax(worst, fabs((double)part[k] - full[k]) / fabs((double)full[k]));
  for (size_t i = 0; i < n1 / 4 && n1 == n2; i++) pe += pow((double)got[i] - want[i], 2), pr += pow(want[i], 2);
  EXPECT_SAY(n1 == n2 && worst <= 1e-6 && sqrt(pe / fmax(pr, 1e-30)) <= 1e-6,
             "CUDA: 10 steps, checkpoint, 10 steps = 20 uninterrupted: loss rel err %.2e, state %.2e%s", worst,
             sqrt(pe / fmax(pr, 1e-30)), !memcmp(full, part, sizeof full) && !memcmp(want, got, n1) ? " (bit for bit)" : "");
  free(want), free(got);
  wh_session_destroy(s);
}

static int setup(int argc, char **argv) {
  (void)argc, (void)argv;
  if (wh_cuda_device_count() < 1) {
    printf("no CUDA device (or no CUDA backend in this build): skipped\n");
    return 77;
  }
  wh_ctx_options o = WH_CTX_OPTIONS_INIT;
  o.num_threads = 1;
  if (wh_ctx_create(&ctx, &o) != WH_OK) return 1;
  CHECK(wh_graph_create(ctx, &graph));
  gpt_options c = GPT_OPTIONS_INIT;
  c.vocab = 64, c.context = T, c.width = 32, c.layers = 2, c.heads = 2;
  if (!gpt_build(graph, &c, &model)) return 1;
  CHECK(wh_backward(graph, model.loss));
  wh_adamw_options ao = WH_ADAMW_OPTIONS_INIT;
  ao.lr = (wh_lr){WH_LR_WARMUP_COSINE, 3e-3f, 3, 20, 3e-4f};
  CHECK(wh_optimizer_adamw(graph, &ao));
  snprintf(root, sizeof root, "/tmp/wh_cuda_ckpt_XXXXXX");
  return mkdtemp(root) ? 0 : 1;
}

static void teardown(void) {
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", root);
  wh_graph_destroy(graph);
  wh_ctx_destroy(ctx);
}

static const wt_case cases[] = {{"between_devices", between_devices, NULL}, {"resume", resume, NULL}};

int main(int argc, char **argv) {
  const wt_suite suite = {"cuda_ckpt", setup, teardown, NULL, 0};
  return wt_main(&suite, cases, WT_COUNT(cases), argc, argv);
}
