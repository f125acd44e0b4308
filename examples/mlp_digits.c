/* mlp_digits.c - train a two-layer MLP on the handwritten-digits set (1797 8x8 images) shipped
 * with Debian's python3-sklearn, printing progress and the final test accuracy.
 *
 *   mlp_digits [path/to/digits.csv.gz] [epochs]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

#include "whale.h"

#define DEFAULT_PATH "/usr/lib/python3/dist-packages/sklearn/datasets/data/digits.csv.gz"
#define NPIX 64
#define NCLASS 10
#define HIDDEN 128
#define BATCH 64

typedef struct {
  int n;
  float *x;   /* n x 64, scaled to [0, 1] */
  int32_t *y; /* n */
} dataset;

static int load_digits(const char *path, dataset *d) {
  gzFile f = gzopen(path, "rb");
  if (!f) return -1;
  int cap = 2048;
  d->x = malloc(sizeof(float) * NPIX * (size_t)cap);
  d->y = malloc(sizeof(int32_t) * (size_t)cap);
  d->n = 0;
  char line[4096];
  while (d->x && d->y && d->n < cap && gzgets(f, line, sizeof line)) {
    float v[NPIX + 1];
    int k = 0;
    char *p = line;
    while (k <= NPIX) {
      char *end;
      v[k] = strtof(p, &end);
      if (end == p) break;
      k++;
      p = end;
      while (*p == ',' || *p == ' ') p++;
    }
    if (k != NPIX + 1) continue; /* blank or malformed line */
    for (int i = 0; i < NPIX; i++) d->x[d->n * NPIX + i] = v[i] / 16.0f;
    d->y[d->n++] = (int32_t)v[NPIX];
  }
  gzclose(f);
  return d->n > 0 ? 0 : -1;
}

static uint64_t rng = 0x5eed;
static uint32_t next_u32(void) {
  rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
  return (uint32_t)(rng >> 16);
}

static void shuffle(int *idx, int n) {
  for (int i = n - 1; i > 0; i--) {
    int j = (int)(next_u32() % (uint32_t)(i + 1));
    int t = idx[i];
    idx[i] = idx[j];
    idx[j] = t;
  }
}

#define CHECK(call)                                                                 \
  do {                                                                              \
    wh_status st_ = (call);                                                         \
    if (st_ != WH_OK) {                                                             \
      fprintf(stderr, "%s failed: %s: %s\n", #call, wh_status_str(st_), wh_last_error(ctx)); \
      return 1;                                                                     \
    }                                                                               \
  } while (0)

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
  const char *path = argc > 1 ? argv[1] : DEFAULT_PATH;
  int epochs = argc > 2 ? atoi(argv[2]) : 40;
  dataset all;
  if (load_digits(path, &all) != 0) {
    fprintf(stderr, "cannot read the digits data at %s (Debian package python3-sklearn)\n", path);
    return 1;
  }
  /* fixed split: shuffle once with a fixed seed, 80% train / 20% test */
  int *order = malloc(sizeof(int) * (size_t)all.n);
  for (int i = 0; i < all.n; i++) order[i] = i;
  shuffle(order, all.n);
  int ntest = all.n / 5, ntrain = all.n - ntest;
  float *test_x = malloc(sizeof(float) * NPIX * (size_t)ntest);
  int32_t *test_y = malloc(sizeof(int32_t) * (size_t)ntest);
  for (int i = 0; i < ntest; i++) {
    memcpy(test_x + i * NPIX, all.x + order[ntrain + i] * NPIX, sizeof(float) * NPIX);
    test_y[i] = all.y[order[ntrain + i]];
  }

  wh_ctx *ctx;
  wh_ctx_options co = WH_CTX_OPTIONS_INIT;
  if (wh_ctx_create(&ctx, &co) != WH_OK) return 1;
  printf("libwhale %s [%s], %d threads\n", wh_version(), wh_build_info(), wh_ctx_threads(ctx));
  printf("digits: %d images (%d train, %d test) from %s\n", all.n, ntrain, ntest, path);

  wh_graph *g;
  CHECK(wh_graph_create(ctx, &g));
  wh_value x = wh_input(g, "x", WH_F32, 2, (int64_t[]){WH_BATCH, NPIX});
  wh_value y = wh_input(g, "labels", WH_I32, 1, (int64_t[]){WH_BATCH});
  wh_value w1 = wh_param(g, "fc1.w", WH_F32, 2, (int64_t[]){HIDDEN, NPIX}, WH_INIT(WH_INIT_KAIMING_UNIFORM, 0, 0, 1));
  wh_value b1 = wh_param(g, "fc1.b", WH_F32, 1, (int64_t[]){HIDDEN}, WH_INIT(WH_INIT_ZEROS, 0, 0, 0));
  wh_value w2 = wh_param(g, "fc2.w", WH_F32, 2, (int64_t[]){NCLASS, HIDDEN}, WH_INIT(WH_INIT_XAVIER_UNIFORM, 0, 0, 2));
  wh_value b2 = wh_param(g, "fc2.b", WH_F32, 1, (int64_t[]){NCLASS}, WH_INIT(WH_INIT_ZEROS, 0, 0, 0));
  wh_value h = wh_relu(g, wh_bias_add(g, wh_matmul(g, x, w1, 0, 1), b1, -1));
  wh_value logits = wh_bias_add(g, wh_matmul(g, h, w2, 0, 1), b2, -1);
  wh_value loss = wh_cross_entropy(g, logits, y);
  CHECK(wh_graph_status(g));
  CHECK(wh_graph_keep(g, logits));
  CHECK(wh_backward(g, loss));
  int steps_per_epoch = ntrain / BATCH;
  wh_adamw_options ao = WH_ADAMW_OPTIONS_INIT;
  ao.lr = (wh_lr){WH_LR_WARMUP_COSINE, 5e-3f, steps_per_epoch, (int64_t)steps_per_epoch * epochs, 1e-4f};
  ao.weight_decay = 1e-4f;
  CHECK(wh_optimizer_adamw(g, &ao));

  wh_session *s;
  wh_session_options so = WH_SESSION_OPTIONS_INIT;
  so.batch = BATCH;
  CHECK(wh_session_create(ctx, g, &so, &s));
  wh_memory_stats ms = WH_MEMORY_STATS_INIT;
  CHECK(wh_session_memory(s, &ms));
  printf("graph: %d values, %d nodes; memory plan: arena %llu bytes for %lld intermediates totalling %llu bytes\n",
         wh_graph_num_values(g), wh_graph_num_nodes(g), (unsigned long long)ms.arena_bytes,
         (long long)ms.num_intermediates, (unsigned long long)ms.intermediate_bytes);

  float *bx = malloc(sizeof(float) * NPIX * BATCH);
  int32_t by[BATCH];
  float *test_logits = malloc(sizeof(float) * NCLASS * (size_t)ntest);
  double t0 = now();
  double acc = 0;
  for (int ep = 1; ep <= epochs; ep++) {
    shuffle(order, ntrain);
    double sum = 0;
    for (int b = 0; b < steps_per_epoch; b++) {
      for (int i = 0; i < BATCH; i++) {
        int k = order[b * BATCH + i];
        memcpy(bx + i * NPIX, all.x + k * NPIX, sizeof(float) * NPIX);
        by[i] = all.y[k];
      }
      CHECK(wh_session_feed(s, x, bx, sizeof(float) * NPIX * BATCH));
      CHECK(wh_session_feed(s, y, by, sizeof by));
      CHECK(wh_session_step(s));
      float l;
      CHECK(wh_session_fetch(s, loss, &l, sizeof l));
      sum += l;
    }
    if (ep % 5 == 0 || ep == 1 || ep == epochs) {
      CHECK(wh_session_set_batch(s, ntest));
      CHECK(wh_session_feed(s, x, test_x, sizeof(float) * NPIX * (size_t)ntest));
      CHECK(wh_session_feed(s, y, test_y, sizeof(int32_t) * (size_t)ntest));
      CHECK(wh_session_run(s, WH_RUN_EVAL));
      CHECK(wh_session_fetch(s, logits, test_logits, sizeof(float) * NCLASS * (size_t)ntest));
      int correct = 0;
      for (int i = 0; i < ntest; i++) {
        int best = 0;
        for (int c = 1; c < NCLASS; c++)
          if (test_logits[i * NCLASS + c] > test_logits[i * NCLASS + best]) best = c;
        correct += best == test_y[i];
      }
      acc = (double)correct / ntest;
      printf("epoch %3d  step %5lld  train loss %.4f  test accuracy %.2f%%  (%.2f s)\n", ep,
             (long long)wh_session_steps(s), sum / steps_per_epoch, 100.0 * acc, now() - t0);
      fflush(stdout);
      CHECK(wh_session_set_batch(s, BATCH));
    }
  }
  printf("final test accuracy: %.2f%% after %d epochs in %.2f s\n", 100.0 * acc, epochs, now() - t0);
  wh_session_destroy(s);
  wh_graph_destroy(g);
  wh_ctx_destroy(ctx);
  free(bx), free(test_logits), free(test_x), free(test_y), free(order), free(all.x), free(all.y);
  return acc >= 0.95 ? 0 : 2;
}
