/* test_precision.c - mixed precision as a pass: a small GPT trains 200 AdamW steps in bf16 and in
 * fp16 against fp32 (the losses track within a few per cent, as llm.c's mixed-precision runs track
 * fp32), the memory plan keeps half the bytes from forward to backward, every kernel still reads
 * fp32 (the casts come in pairs), fp16's loss scale grows back and its overflowed step is skipped,
 * and the casts round like the hardware. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/runner.h"
#include "gpt.h"
#include "src/base/clock.h"
#include "src/base/half.h"
#include "src/kernels/kernels.h"
#include "src/partition/program.h"

static wh_ctx *ctx;

enum { T = 16, V = 64, BATCH = 8, STEPS = 200 };

static wh_graph *build(gpt_model *m) {
  wh_graph *g;
  CHECK(wh_graph_create(ctx, &g));
  gpt_options o = GPT_OPTIONS_INIT;
  o.vocab = V, o.context = T, o.width = 32, o.layers = 2, o.heads = 4;
  EXPECT(gpt_build(g, &o, m), "gpt: %s", wh_graph_error(g));
  CHECK(wh_backward(g, m->loss));
  wh_adamw_options a = WH_ADAMW_OPTIONS_INIT;
  a.lr = (wh_lr){WH_LR_CONSTANT, 3e-3f, 0, 0, 0};
  a.clip_norm = 1.0f;
  CHECK(wh_optimizer_adamw(g, &a));
  return g;
}

/* A corpus with structure to learn: each token follows from the one before. */
static void batch(int k, int32_t *x, int32_t *y) {
  for (int b = 0; b < BATCH; b++) {
    int t0 = (b * 7 + k * 3) % V;
    for (int t = 0; t < T; t++) {
      int cur = (t0 + t * (1 + (b % 3))) % V;
      x[b * T + t] = cur, y[b * T + t] = (cur + 1 + (b % 3)) % V;
    }
  }
}

static void train(wh_dtype mixed, float *losses, wh_memory_stats *ms, double *scale, int64_t *skipped) {
  gpt_model m;
  wh_graph *g = build(&m);
  wh_session_options so = WH_SESSION_OPTIONS_INIT;
  so.batch = BATCH;
  so.mixed = mixed;
  wh_session *s;
  CHECK(wh_session_create(ctx, g, &so, &s));
  CHECK(wh_session_memory(s, ms));
  int32_t x[BATCH * T], y[BATCH * T];
  for (int k = 0; k < STEPS; k++) {
    batch(k, x, y);
    CHECK(wh_session_feed(s, m.tokens, x, sizeof x));
    CHECK(wh_session_feed(s, m.targets, y, sizeof y));
    CHECK(wh_session_step(s));
    CHECK(wh_session_fetch(s, m.loss, &losses[k], sizeof(float)));
  }
  CHECK(wh_session_loss_scale(s, scale, skipped));
  wh_session_destroy(s);
  wh_graph_destroy(g);
}

static void tracks(const void *arg) {
  (void)arg;
  static float l32[STEPS], lb[STEPS], lh[STEPS];
  wh_memory_stats m32 = WH_MEMORY_STATS_INIT, mb = WH_MEMORY_STATS_INIT, mh = WH_MEMORY_STATS_INIT;
  double sc;
  int64_t sk;
  train(WH_F32, l32, &m32, &sc, &sk);
  train(WH_BF16, lb, &mb, &sc, &sk);
  EXPECT(sc == 1.0 && sk == 0, "bf16 scales no loss (%g, %lld skipped)", sc, (long long)sk);
  train(WH_F16, lh, &mh, &sc, &sk);
  /* 200 steps from a scale of 65536 without overflow: it only grows (1000 good steps double it) */
  EXPECT(sc >= 65536.0 && sk == 0, "fp16: loss scale %g after %lld skipped steps", sc, (long long)sk);
  double worst_b = 0, worst_h = 0, avg32 = 0, avgb = 0, avgh = 0;
  for (int k = 0; k < STEPS; k++) {
    worst_b = fmax(worst_b, fabs((double)lb[k] - l32[k]) / l32[k]);
    worst_h = fmax(worst_h, fabs((double)lh[k] - l32[k]) / l32[k]);
    if (k >= STEPS - 20) avg32 += l32[k] / 20, avgb += lb[k] / 20, avgh += lh[k] / 20;
  }
  EXPECT(l32[STEPS - 1] < 0.5 * l32[0], "fp32 learns: %g -> %g", l32[0], l32[STEPS - 1]);
  /* llm.c's bf16 runs stay within a few per cent of fp32: the last 20 steps within 3%, no step 10% off */
  EXPECT_SAY(fabs(avgb - avg32) / avg32 < 0.03 && worst_b < 0.10,
             "bf16 tracks fp32: last 20 steps %.4f vs %.4f (%.2f%%), worst step %.2f%%", avgb, avg32,
             100 * fabs(avgb - avg32) / avg32, 100 * worst_b);
  EXPECT_SAY(fabs(avgh - avg32) / avg32 < 0.03 && worst_h < 0.10,
             "fp16 tracks fp32: last 20 steps %.4f vs %.4f (%.2f%%), worst step %.2f%%", avgh, avg32,
             100 * fabs(avgh - avg32) / avg32, 100 * worst_h);
  EXPECT_SAY(m32.saved_bytes > 0 && mb.saved_bytes * 2 == m32.saved_bytes && mh.saved_bytes == mb.saved_bytes,
             "the bytes kept from forward for backward halve: fp32 %llu, bf16 %llu, fp16 %llu",
             (unsigned long long)m32.saved_bytes, (unsigned long long)mb.saved_bytes, (unsigned long long)mh.saved_bytes);
}

/* The pass leaves every kernel fp32: a narrow value is read only by its cast back. */
static void casts_pair(const void *arg) {
  (void)arg;
  gpt_model m;
  wh_graph *g = build(&m);
  wh__program p;
  char msg[256];
  CHECK(wh__partition(g, NULL, 0, 1, 0, 0, 0, WH_BF16, &p, msg, sizeof msg));
  int casts = 0, bad = 0, narrow_in = 0;
  for (int i = 0; i < p.n_nodes; i++) {
    const wh__node *n = &p.nodes[i];
    casts += n->op == WH_OP_CAST;
    for (int k = 0; k < n->n_in; k++)
      if (p.values[n->in[k]].dtype == WH_BF16) narrow_in++, bad += n->op != WH_OP_CAST;
  }
  EXPECT(casts > 10 && narrow_in > 0 && bad == 0 && p.n_parts == 1 && p.parts[0].n == p.n_nodes,
         "bf16 pass: %d casts, %d narrow reads, %d by a kernel other than a cast", casts, narrow_in, bad);
  wh__program_free(&p);
  EXPECT(wh__partition(g, NULL, 0, 1, 0, 0, 0, WH_I32, &p, msg, sizeof msg) == WH_ERR_INVALID_ARGUMENT &&
             strstr(msg, "bf16 or f16"),
         "an integer storage dtype is refused: %s", msg);
  wh_graph_destroy(g);
}

/* fp16 overflow: a huge activation makes the gradients infinite; the step is skipped (parameters
 * untouched) and the scale halves. */
static void overflow(const void *arg) {
  (void)arg;
  wh_graph *g;
  CHECK(wh_graph_create(ctx, &g));
  wh_value x = wh_input(g, "x", WH_F32, 2, (int64_t[]){WH_BATCH, 8});
  wh_value y = wh_input(g, "y", WH_I32, 1, (int64_t[]){WH_BATCH});
  wh_value w1 = wh_param(g, "w1", WH_F32, 2, (int64_t[]){16, 8}, WH_INIT(WH_INIT_NORMAL, 0, 0.3f, 1));
  wh_value w2 = wh_param(g, "w2", WH_F32, 2, (int64_t[]){4, 16}, WH_INIT(WH_INIT_NORMAL, 0, 0.3f, 2));
  wh_value h = wh_relu(g, wh_matmul(g, x, w1, 0, 1)); /* relu's backward reads its (stored) input */
  wh_value loss = wh_cross_entropy(g, wh_matmul(g, h, w2, 0, 1), y);
  CHECK(wh_backward(g, loss));
  wh_sgd_options o = WH_SGD_OPTIONS_INIT;
  CHECK(wh_optimizer_sgd(g, &o));
  wh_session_options so = WH_SESSION_OPTIONS_INIT;
  so.batch = 4;
  so.mixed = WH_F16;
  wh_session *s;
  CHECK(wh_session_create(ctx, g, &so, &s));
  float xd[32], before[128], after[128];
  int32_t yd[4] = {0, 1, 2, 3};
  for (int i = 0; i < 32; i++) xd[i] = (float)(i % 5) * 0.1f;
  CHECK(wh_session_feed(s, x, xd, sizeof xd));
  CHECK(wh_session_feed(s, y, yd, sizeof yd));
  CHECK(wh_session_step(s));
  double s0, s1;
  int64_t k0, k1;
  CHECK(wh_session_loss_scale(s, &s0, &k0));
  CHECK(wh_session_get_param(s, w1, before, sizeof before));
  xd[3] = 1e30f; /* its matmul overflows fp16 */
  CHECK(wh_session_step(s));
  CHECK(wh_session_loss_scale(s, &s1, &k1));
  CHECK(wh_session_get_param(s, w1, after, sizeof after));
  EXPECT(k0 == 0 && k1 == 1 && s1 == s0 / 2 && memcmp(before, after, sizeof before) == 0,
         "fp16 overflow: %lld -> %lld skipped, scale %g -> %g, parameters %s", (long long)k0, (long long)k1, s0, s1,
         memcmp(before, after, sizeof before) ? "changed" : "kept");
  xd[3] = 0.3f;
  CHECK(wh_session_step(s));
  CHECK(wh_session_get_param(s, w1, after, sizeof after));
  EXPECT(memcmp(before, after, sizeof before) != 0, "the step after an overflow updates again");
  wh_session_destroy(s);
  wh_graph_destroy(g);
}

/* base/half.h against the definition: every fp16 back to fp32 exactly, fp32 to fp16 and bf16
 * rounded to nearest even (ties, overflow, subnormals, NaN). */
static void rounding(const void *arg) {
  (void)arg;
  struct {
    float f;
    uint16_t h, b;
  } cases[] = {
      {1.0f, 0x3c00, 0x3f80},          {65504.0f, 0x7bff, 0x4780},     {65520.0f, 0x7c00, 0x4780},
      {-2.0f, 0xc000, 0xc000},         {5.9604645e-8f, 0x0001, 0x3380}, {2.9802322e-8f, 0x0000, 0x3300},
      {1.00048828125f, 0x3c00, 0x3f80}, {1.00146484375f, 0x3c02, 0x3f80}, {INFINITY, 0x7c00, 0x7f80},
  };
  int bad = 0;
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    bad += wh__f32_to_f16(cases[i].f) != cases[i].h;
    bad += wh__f32_to_bf16(cases[i].f) != cases[i].b;
  }
  for (uint32_t h = 0; h < 0x7c00; h++) bad += wh__f32_to_f16(wh__f16_to_f32((uint16_t)h)) != h;
  EXPECT(bad == 0 && isnan(wh__f16_to_f32(wh__f32_to_f16(NAN))) && isnan(wh__bf16_to_f32(wh__f32_to_bf16(NAN))),
         "half.h: %d roundings wrong", bad);
}

/* The cast kernel: with the CPU's conversion instructions (F16C, AVX512-BF16 where present) and
 * without them, bit for bit what half.h gives, over random bit patterns (NaN, infinities,
 * subnormals and ties included) and every 16-bit pattern back; and how much faster they are. */
static double cast_run(wh_dtype from, wh_dtype to, const void *x, void *y, int64_t n, int paths, int reps) {
  wh__cpu_cast_paths = paths;
  char err[256];
  wh__exec ex = {0};
  ex.err = err, ex.err_cap = sizeof err;
  wh__node nd;
  memset(&nd, 0, sizeof nd);
  nd.op = WH_OP_CAST, nd.n_in = 1, nd.ia[0] = to, nd.n_ia = 1;
  wh__tensor in = {(void *)x, from, 1, {n}, n}, out = {y, to, 1, {n}, n};
  double best = 1e30;
  for (int r = 0; r < reps; r++) {
    double t0 = wh__now();
    if (wh__cpu_cast(&ex, &nd, &in, &out) != WH_OK) return -1;
    best = fmin(best, wh__now() - t0);
  }
  return best;
}

static void cast_kernel(const void *arg) {
  (void)arg;
  wh__cpu_cast_paths = -1;
  float probe = 1;
  uint16_t ph;
  cast_run(WH_F32, WH_BF16, &probe, &ph, 1, -1, 1); /* what this CPU has */
  int have = wh__cpu_cast_paths;
  enum { N = 1 << 20 };
  uint32_t *xu = malloc(sizeof(uint32_t) * N);
  uint16_t *h = malloc(2 * N), *hp = malloc(2 * N), *all = malloc(2 * 65536);
  float *f = malloc(4 * N), *fp = malloc(4 * N);
  uint64_t st = 0x9e3779b97f4a7c15ull;
  for (int i = 0; i < N; i++) {
    st ^= st << 13, st ^= st >> 7, st ^= st << 17;
    uint32_t u = (uint32_t)(st >> 11);
    if (i % 4 == 1) u &= 0x807fffffu;              /* subnormals and zeros */
    if (i % 4 == 2) u = (u & 0xffff0000u) | 0x8000u; /* ties for bf16 */
    if (i % 4 == 3) u = (u & 0xc7ffe000u) | 0x38001000u; /* near fp16's range, ties */
    xu[i] = u;
  }
  for (int i = 0; i < 65536; i++) all[i] = (uint16_t)i;
  const wh_dtype narrow[2] = {WH_BF16, WH_F16};
  for (int k = 0; k < 2; k++) {
    wh_dtype dt = narrow[k];
    double fast = cast_run(WH_F32, dt, xu, h, N, have, 5), plain = cast_run(WH_F32, dt, xu, hp, N, 0, 5);
    int bad = 0;
    for (int i = 0; i < N; i++) {
      float x;
      memcpy(&x, &xu[i], 4);
      uint16_t want = dt == WH_BF16 ? wh__f32_to_bf16(x) : wh__f32_to_f16(x);
      bad += h[i] != want || hp[i] != want;
    }
    double back_fast = cast_run(dt, WH_F32, all, f, 65536, have, 5), back_plain = cast_run(dt, WH_F32, all, fp, 65536, 0, 5);
    for (int i = 0; i < 65536; i++) {
      float want = dt == WH_BF16 ? wh__bf16_to_f32((uint16_t)i) : wh__f16_to_f32((uint16_t)i);
      bad += memcmp(&f[i], &want, 4) != 0 || memcmp(&fp[i], &want, 4) != 0;
    }
    /* speed on what activations hold: normal values, a subnormal rarely */
    for (int i = 0; i < N; i++) {
      float x = (float)((int)(xu[i] % 20001) - 10000) * 1e-3f;
      memcpy(&xu[i], &x, 4);
    }
    fast = cast_run(WH_F32, dt, xu, h, N, have, 5), plain = cast_run(WH_F32, dt, xu, hp, N, 0, 5);
    for (int i = 0; i < N; i++) bad += h[i] != hp[i];
    int uses = dt == WH_BF16 ? (have >> 1) & 1 : have & 1;
    EXPECT_SAY(bad == 0 && fast > 0 && plain > 0,
               "%s casts (%s): %d wrong of %d; f32 -> %s %.2f GB/s, plain C %.2f GB/s (x%.1f); back x%.1f",
               dt == WH_BF16 ? "bf16" : "fp16", uses ? (dt == WH_BF16 ? "AVX512-BF16" : "F16C") : "no instructions",
               bad, N + 65536, dt == WH_BF16 ? "bf16" : "fp16", 6.0 * N / fast / 1e9, 6.0 * N / plain / 1e9,
               plain / fast, back_plain / back_fast);
  }
  wh__cpu_cast_paths = -1;
  free(xu), free(h), free(hp), free(all), free(f), free(fp);
}

static int setup(int argc, char **argv) {
  (void)argc, (void)argv;
  wh_ctx_options o = WH_CTX_OPTIONS_INIT;
  o.num_threads = 1;
  return wh_ctx_create(&ctx, &o) != WH_OK;
}

static void teardown(void) { wh_ctx_destroy(ctx); }

static const wt_case cases[] = {
    {"rounding", rounding, NULL}, {"casts_pair", casts_pair, NULL}, {"tracks_fp32", tracks, NULL},
    {"fp16_overflow", overflow, NULL}, {"cast_kernel", cast_kernel, NULL},
};

int main(int argc, char **argv) {
  const wt_suite suite = {"precision", setup, teardown, NULL, 0};
  return wt_main(&suite, cases, WT_COUNT(cases), argc, argv);
}
