/* test_mixed.c - mixed precision across ranks: data parallel in bf16 and fp16 equals the one-process
 * run in the same precision (the pass rounds the same rows alike wherever they run), and an
 * overflow in one rank's rows skips the step on both ranks: parameters untouched, the loss scale
 * halved on each. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scaffold.h"

static void same(const void *arg) {
  wh_dtype dt = *(const wh_dtype *)arg;
  if (nranks != 2) {
    wt_skip("mixed precision across ranks runs on 2");
    return;
  }
  sc_model m = sc_build(SC_GPT);
  /* the one-process reference in the same precision */
  wh_session_options ro = WH_SESSION_OPTIONS_INIT;
  ro.batch = B;
  ro.mixed = dt;
  wh_session *ref;
  CHECK(wh_session_create(ctx, m.g, &ro, &ref));
  size_t pb = sc_params_bytes(m.g, ref);
  float rl[STEPS], dl[STEPS], *rp = malloc(pb), *dp = malloc(pb);
  sc_train(&m, ref, rl, rp);
  wh_memory_stats rms = WH_MEMORY_STATS_INIT;
  CHECK(wh_session_memory(ref, &rms));
  wh_session_destroy(ref);
  wh_cluster *cl;
  int64_t sh[2] = {B / 2, B / 2};
  wh_plan_layout l = WH_PLAN_LAYOUT_INIT;
  l.shares = sh;
  /* bf16 comes from the plan (costed for it), fp16 from the session's options */
  if (dt == WH_BF16) l.mixed = dt;
  wh_plan *p = sc_pinned(&m, 2, &l, &cl);
  wh_session_options so = WH_SESSION_OPTIONS_INIT;
  so.plan = p;
  so.comm = comm;
  if (dt != WH_BF16) so.mixed = dt;
  wh_session *s;
  CHECK(wh_session_create(ctx, m.g, &so, &s));
  wh_memory_stats ms = WH_MEMORY_STATS_INIT;
  CHECK(wh_session_memory(s, &ms));
  /* half the rows, the same precision: half the one process's bytes kept for backward */
  EXPECT(wh_plan_mixed(p) == l.mixed && ms.saved_bytes * 2 == rms.saved_bytes,
         "rank %d: %llu bytes kept for backward, the one process %llu (plan precision %d)", wt_rank,
         (unsigned long long)ms.saved_bytes, (unsigned long long)rms.saved_bytes, (int)wh_plan_mixed(p));
  sc_train(&m, s, dl, dp);
  /* The first steps see the same parameters, so every row rounds alike: equal to fp32 noise. Later the
   * fp32 reduction order (a sum of two halves against one matmul) moves a parameter by an ulp of fp32,
   * a value then and again rounds to the other side of a bf16/fp16 step, and runs part by what the
   * narrow type resolves: bounded well below one bf16 step (2^-8). */
  const char *name = dt == WH_BF16 ? "gpt DP=2 bf16" : "gpt DP=2 fp16";
  double early = 0, worst = 0;
  for (int k = 0; k < STEPS; k++) {
    double e = fabs((double)dl[k] - rl[k]) / fabs(rl[k]);
    if (k < 4) early = fmax(early, e);
    worst = fmax(worst, e);
  }
  double pe = sc_rel(dp, rp, pb / sizeof(float));
  EXPECT(early <= 1e-6, "%s: the first 4 step losses differ from one process by %.3g", name, early);
  EXPECT(worst <= 1e-3, "%s: step losses differ from one process by %.3g", name, worst);
  EXPECT(pe <= 2e-3, "%s: final parameters differ from one process by %.3g", name, pe);
  EXPECT(rl[STEPS - 1] < rl[0], "%s: the reference did not learn (%g -> %g)", name, rl[0], rl[STEPS - 1]);
  if (wt_rank == 0)
    printf("%-20s loss %.5f -> %.5f  first 4 steps rel err %.2e  worst %.2e  params %.2e\n", name, rl[0],
           rl[STEPS - 1], early, worst, pe);
  sc_destroy(s, p, cl, &m);
  free(rp), free(dp);
}

/* x -> matmul -> relu -> matmul -> cross entropy: relu's backward reads its stored (fp16) input,
 * where a huge x becomes infinite. */
static sc_model relu_mlp(void) {
  sc_model m = {.shift = WH_NONE, .kind = SC_MLP};
  CHECK(wh_graph_create(ctx, &m.g));
  wh_graph *g = m.g;
  m.x = wh_input(g, "x", WH_F32, 2, (int64_t[]){WH_BATCH, 8});
  m.y = wh_input(g, "y", WH_I32, 1, (int64_t[]){WH_BATCH});
  wh_value w1 = wh_param(g, "w1", WH_F32, 2, (int64_t[]){16, 8}, WH_INIT(WH_INIT_NORMAL, 0, 0.3f, 1));
  wh_value w2 = wh_param(g, "w2", WH_F32, 2, (int64_t[]){4, 16}, WH_INIT(WH_INIT_NORMAL, 0, 0.3f, 2));
  m.loss = wh_cross_entropy(g, wh_matmul(g, wh_relu(g, wh_matmul(g, m.x, w1, 0, 1)), w2, 0, 1), m.y);
  CHECK(wh_backward(g, m.loss));
  wh_sgd_options o = WH_SGD_OPTIONS_INIT;
  CHECK(wh_optimizer_sgd(g, &o));
  return m;
}

static void overflow(const void *arg) {
  (void)arg;
  if (nranks != 2) {
    wt_skip("the overflow case runs on 2 ranks");
    return;
  }
  sc_model m = relu_mlp();
  wh_cluster *cl;
  int64_t sh[2] = {B / 2, B / 2};
  wh_plan_layout l = WH_PLAN_LAYOUT_INIT;
  l.shares = sh;
  wh_plan *p = sc_pinned(&m, 2, &l, &cl);
  wh_session_options so = WH_SESSION_OPTIONS_INIT;
  so.plan = p;
  so.comm = comm;
  so.mixed = WH_F16;
  wh_session *s;
  CHECK(wh_session_create(ctx, m.g, &so, &s));
  float x[B * 8], before[128], after[128];
  int32_t y[B];
  for (int i = 0; i < B * 8; i++) x[i] = (float)((i * 7) % 23) / 11.0f - 1.0f;
  for (int i = 0; i < B; i++) y[i] = i % 4;
  CHECK(wh_session_feed(s, m.x, x, sizeof x));
  CHECK(wh_session_feed(s, m.y, y, sizeof y));
  CHECK(wh_session_step(s));
  wh_value w1 = wh_graph_param(m.g, 0);
  CHECK(wh_session_get_param(s, w1, before, sizeof before));
  double s0, s1;
  int64_t k0, k1;
  CHECK(wh_session_loss_scale(s, &s0, &k0));
  for (int i = 0; i < 8; i++) x[8 + i] = 1e30f; /* row 1: rank 0's rows only */
  CHECK(wh_session_step(s));
  CHECK(wh_session_loss_scale(s, &s1, &k1));
  CHECK(wh_session_get_param(s, w1, after, sizeof after));
  EXPECT(k0 == 0 && k1 == 1 && s1 == s0 / 2 && memcmp(before, after, sizeof before) == 0,
         "rank %d: an overflow in rank 0's rows: %lld -> %lld skipped, scale %g -> %g, parameters %s", wt_rank,
         (long long)k0, (long long)k1, s0, s1, memcmp(before, after, sizeof before) ? "changed" : "kept");
  for (int i = 0; i < 8; i++) x[8 + i] = 0.5f;
  CHECK(wh_session_step(s));
  CHECK(wh_session_loss_scale(s, &s1, &k1));
  CHECK(wh_session_get_param(s, w1, after, sizeof after));
  EXPECT(k1 == 1 && memcmp(before, after, sizeof before) != 0, "rank %d: the next step updates again", wt_rank);
  sc_destroy(s, p, cl, &m);
}

static const wh_dtype bf = WH_BF16, hf = WH_F16;
static const wt_case cases[] = {{"dp2_bf16", same, &bf}, {"dp2_fp16", same, &hf}, {"fp16_overflow_one_rank", overflow, NULL}};

int main(int argc, char **argv) { return sc_main("mixed", cases, WT_COUNT(cases), argc, argv); }
