/* planner_bench.c - the planner against baselines and brute force, all in the same simulation:
 * heterogeneous data parallelism (planned batch shares vs the same batch everywhere), a
 * heterogeneous pipeline (planned layer split vs an even one), 1F1B vs GPipe, the search's
 * optimality on small random instances, planning time for GPT-3 on 1024 GPUs, and a check that
 * no emitted plan exceeds a device's memory. Prints tables, then RESULT lines. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "models.h"
#include "src/planner/planner.h"
#include "whale.h"

static wh_ctx *ctx;
static int over_memory;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void die(const char *what) {
  fprintf(stderr, "%s: %s\n", what, wh_last_error(ctx));
  exit(1);
}

static double simulate(const wh_plan *p, const wh_cluster *c) {
  wh_sim_result r = WH_SIM_RESULT_INIT;
  if (wh_plan_simulate(p, c, &r) != WH_OK) die("simulate");
  /* every plan the benchmark sees is checked against the devices' memory */
  for (int s = 0; s < p->n_stages; s++)
    if (p->st[s].mem_peak > p->st[s].mem_cap) over_memory++;
  return r.step_time;
}

static wh_graph *model(const char *name, int seq) {
  wh_graph *g;
  wh_graph_create(ctx, &g);
  wh_value loss = WH_NONE;
  if (!strcmp(name, "bert-large")) {
    loss = wm_bert_large(g, seq);
    if (wh_backward(g, loss) != WH_OK) die("backward");
    wh_adamw_options o = WH_ADAMW_OPTIONS_INIT;
    if (wh_optimizer_adamw(g, &o) != WH_OK) die("optimizer");
  } else if (wm_build(name, g, &loss) != 0) {
    die(name);
  }
  if (wh_graph_status(g) != WH_OK) die(name);
  return g;
}

/* Whale's data-parallel cluster: a node of 8 V100-32GB and a node of 8 P100-16GB, 50 Gb/s. */
static wh_cluster *dp_cluster(void) {
  wh_cluster *c;
  wh_cluster_create(ctx, &c);
  wh_cluster_add(c, "V100-32GB", 0, 8);
  wh_cluster_add(c, "P100-16GB", 1, 8);
  wh_cluster_set_links(c, 0, 5e-6, 50e9 / 8, 30e-6);
  return c;
}

/* ---- heterogeneous data parallelism */

static double hetero_dp(const char *name, int seq, int per_gpu, double *planned_out, double *bf_out) {
  wh_graph *g = model(name, seq);
  wh_cluster *c = dp_cluster();
  /* the largest batch (a multiple of 16, at most per_gpu each) that equal shares can hold */
  int64_t batch = 0;
  double t_even = 0;
  for (int per = per_gpu; per >= 1 && !batch; per--) {
    wh_plan_options o = WH_PLAN_OPTIONS_INIT;
    o.global_batch = 16 * per;
    o.stages = 1;
    o.allow_tp = 0;
    o.allow_recompute = 0;
    o.even_shares = 1;
    wh_plan *p;
    if (wh_plan_create(ctx, g, c, &o, &p) == WH_OK) {
      batch = o.global_batch;
      t_even = simulate(p, c);
      wh_plan_destroy(p);
    }
  }
  if (!batch) die("no even data-parallel plan fits");
  wh_plan_options o = WH_PLAN_OPTIONS_INIT;
  o.global_batch = batch;
  o.stages = 1;
  o.allow_tp = 0;
  o.allow_recompute = 0;
  wh_plan *p;
  if (wh_plan_create(ctx, g, c, &o, &p) != WH_OK) die("plan");
  double t_plan = simulate(p, c);
  int64_t shares[16];
  wh_plan_shares(p, shares, 16);
  wh_plan_destroy(p);
  /* brute force over the symmetric space: every V100 gets sv, every P100 sp, 8 sv + 8 sp = batch */
  wh__planner *pl;
  if (wh__planner_open(ctx, g, c, batch, WH_F32, &pl) != WH_OK) die("planner");
  double t_bf = INFINITY;
  int64_t bsv = 0;
  const int *order = wh__planner_order(pl);
  for (int64_t sv = 0; 8 * sv <= batch; sv++) {
    if ((batch - 8 * sv) % 8) continue;
    int64_t sp = (batch - 8 * sv) / 8, sh[16];
    for (int i = 0; i < 16; i++) sh[i] = strcmp(c->dev[order[i]].kind, "V100-32GB") == 0 ? sv : sp;
    wh_plan_layout l = WH_PLAN_LAYOUT_INIT;
    l.shares = sh;
    wh_plan *q;
    if (wh__planner_pin(pl, &l, &q) != WH_OK) continue;
    double t = simulate(q, c);
    if (t < t_bf) t_bf = t, bsv = sv;
    wh_plan_destroy(q);
  }
  wh__planner_close(pl);
  printf("%-11s batch %4lld  even %8.4f s  planned %8.4f s (V100 %lld, P100 %lld)  brute force %8.4f s (V100 %lld)  "
         "gain %.3f, brute force %.3f\n",
         name, (long long)batch, t_even, t_plan, (long long)shares[0], (long long)shares[15], t_bf, (long long)bsv,
         t_even / t_plan, t_even / t_bf);
  *planned_out = t_even / t_plan;
  *bf_out = t_even / t_bf;
  wh_cluster_destroy(c);
  wh_graph_destroy(g);
  return t_even / t_plan;
}

/* ---- heterogeneous pipeline: 4 stages with nested 2-way DP on 4 V100 + 4 P100 */

static void hetero_pp(const char *name, int seq, double *planned_out, double *bf_out) {
  wh_graph *g = model(name, seq);
  wh_cluster *c;
  wh_cluster_create(ctx, &c);
  wh_cluster_add(c, "V100-32GB", 0, 4);
  wh_cluster_add(c, "P100-16GB", 1, 4);
  wh_cluster_set_links(c, 0, 5e-6, 50e9 / 8, 30e-6);
  const int64_t batch = 64, m = 8;
  wh_plan_options o = WH_PLAN_OPTIONS_INIT;
  o.global_batch = batch;
  o.stages = 4;
  o.micro_batches = m;
  o.schedule = WH_SCHEDULE_1F1B;
  o.allow_tp = 0;
  o.allow_recompute = 0;
  wh_plan *p;
  if (wh_plan_create(ctx, g, c, &o, &p) != WH_OK) die("plan pp");
  double t_plan = simulate(p, c);
  char *ex;
  if (!strcmp(name, "bert-large") && wh_plan_explain(p, &ex) == WH_OK) {
    printf("\nexplanation, %s on 4 V100-32GB + 4 P100-16GB, 4 stages, nested DP:\n%s\n", name, ex);
    wh_free(ex);
  }
  int planned_cut[4];
  for (int s = 0; s < 4; s++) planned_cut[s] = p->st[s].seg_last;
  wh_plan_destroy(p);
  o.even_layers = 1;
  if (wh_plan_create(ctx, g, c, &o, &p) != WH_OK) die("plan pp even");
  double t_even = simulate(p, c);
  wh_plan_destroy(p);
  /* brute force: every split of the segment chain into 4 stages at legal boundaries */
  wh__planner *pl;
  if (wh__planner_open(ctx, g, c, batch, WH_F32, &pl) != WH_OK) die("planner");
  int n = wh__planner_segments(pl), cut[4], best_cut[4] = {0};
  double t_bf = INFINITY;
  long tried = 0;
  for (cut[0] = 0; cut[0] < n - 3; cut[0]++) {
    if (!wh__planner_legal_end(pl, cut[0])) continue;
    for (cut[1] = cut[0] + 1; cut[1] < n - 2; cut[1]++) {
      if (!wh__planner_legal_end(pl, cut[1])) continue;
      for (cut[2] = cut[1] + 1; cut[2] < n - 1; cut[2]++) {
        if (!wh__planner_legal_end(pl, cut[2])) continue;
        cut[3] = n - 1;
        wh_plan_layout l = WH_PLAN_LAYOUT_INIT;
        l.stages = 4;
        l.last_segment = cut;
        l.micro_batches = (int)m;
        l.schedule = WH_SCHEDULE_1F1B;
        wh_plan *q;
        tried++;
        if (wh__planner_pin(pl, &l, &q) != WH_OK) continue;
        double t = simulate(q, c);
        if (t < t_bf) t_bf = t, memcpy(best_cut, cut, sizeof cut);
        wh_plan_destroy(q);
      }
    }
  }
  wh__planner_close(pl);
  printf("%-11s %d segments  even split %8.4f s  planned %8.4f s (cuts %d %d %d)  brute force %8.4f s over %ld splits "
         "(cuts %d %d %d)  gain %.3f, brute force %.3f\n",
         name, n, t_even, t_plan, planned_cut[0], planned_cut[1], planned_cut[2], t_bf, tried, best_cut[0],
         best_cut[1], best_cut[2], t_even / t_plan, t_even / t_bf);
  *planned_out = t_even / t_plan;
  *bf_out = t_even / t_bf;
  wh_cluster_destroy(c);
  wh_graph_destroy(g);
}

/* ---- 1F1B against GPipe, each with its best micro-batch count and recomputation choice */

static double sched_ratio(int stages) {
  wh_graph *g = model("gpt2-1.5b", 0);
  wh_cluster *c;
  wh_cluster_create(ctx, &c);
  wh_cluster_add(c, "V100-16GB", 0, stages);
  wh_cluster_set_links(c, 0, 5e-6, 50e9 / 8, 30e-6);
  double t[2];
  int mb[2], rc[2];
  for (int sc = 0; sc < 2; sc++) {
    wh_plan_options o = WH_PLAN_OPTIONS_INIT;
    o.global_batch = 64;
    o.stages = stages;
    o.schedule = sc ? WH_SCHEDULE_1F1B : WH_SCHEDULE_GPIPE;
    o.allow_tp = 0;
    wh_plan *p;
    if (wh_plan_create(ctx, g, c, &o, &p) != WH_OK) die("plan sched");
    t[sc] = simulate(p, c);
    mb[sc] = p->micro_batches;
    rc[sc] = p->st[0].recompute;
    wh_plan_destroy(p);
  }
  printf("GPT-2 1.5B, %d x V100-16GB, batch 64: GPipe %.4f s (%d micro-batches%s), 1F1B %.4f s (%d%s): %.3f\n", stages,
         t[0], mb[0], rc[0] ? ", recompute" : "", t[1], mb[1], rc[1] ? ", recompute" : "", t[0] / t[1]);
  wh_cluster_destroy(c);
  wh_graph_destroy(g);
  return t[0] / t[1];
}

/* ---- optimality against brute force on small random instances */

static uint64_t rs = 0x1234567;
static int rnd(int n) {
  rs ^= rs << 13, rs ^= rs >> 7, rs ^= rs << 17;
  return (int)(rs % (uint64_t)n);
}

static wh_graph *random_mlp(int layers, int64_t *batch) {
  wh_graph *g;
  wh_graph_create(ctx, &g);
  int w = 256 << rnd(4);
  wh_value x = wh_input(g, "x", WH_F32, 2, (int64_t[]){WH_BATCH, w});
  wh_value y = wh_input(g, "y", WH_I32, 1, (int64_t[]){WH_BATCH});
  for (int l = 0; l < layers; l++) {
    int o = l == layers - 1 ? 10 : 256 << rnd(5);
    char nm[32];
    snprintf(nm, sizeof nm, "w%d", l);
    x = wh_matmul(g, x, wh_param(g, nm, WH_F32, 2, (int64_t[]){o, w}, WH_INIT(WH_INIT_ZEROS, 0, 0, 0)), 0, 1);
    if (l < layers - 1) x = wh_relu(g, x);
    w = o;
  }
  wh_value loss = wh_cross_entropy(g, x, y);
  wh_backward(g, loss);
  wh_adamw_options o = WH_ADAMW_OPTIONS_INIT;
  wh_optimizer_adamw(g, &o);
  *batch = 8 << rnd(3);
  return g;
}

/* every share vector of `total` over k replicas, in lexicographic order; returns 0 after the last */
static int next_shares(int64_t *sh, int k, int64_t total) {
  /* the last slot holds the remainder: advance the others like an odometer */
  for (int i = k - 2; i >= 0; i--) {
    int64_t used = 0;
    for (int j = 0; j < i; j++) used += sh[j];
    if (used + sh[i] + 1 <= total) {
      sh[i]++;
      for (int j = i + 1; j < k - 1; j++) sh[j] = 0;
      int64_t u = 0;
      for (int j = 0; j < k - 1; j++) u += sh[j];
      sh[k - 1] = total - u;
      return 1;
    }
  }
  return 0;
}

static double brute_force(wh_graph *g, wh_cluster *c, int64_t batch) {
  wh__planner *pl;
  if (wh__planner_open(ctx, g, c, batch, WH_F32, &pl) != WH_OK) die("planner");
  int n = wh__planner_segments(pl), nd = c->n;
  double best = INFINITY;
  for (int S = 1; S <= nd && S <= n; S++) {
    if (nd % S) continue;
    int k = nd / S;
    for (int m = 1; m <= batch; m *= 2) {
      if (batch % m || (S == 1 && m > 1) || batch / m < k) continue;
      for (int sched = 0; sched < 2; sched++) {
        if (S == 1 && sched == 0) continue;
        /* stage cuts: S <= 2 in these instances, so one cut or none */
        for (int cut0 = S == 1 ? n - 1 : 0; cut0 < n - (S == 1 ? 0 : 1); cut0++) {
          int cut[2] = {cut0, n - 1};
          int64_t mb = batch / m, sh[8];
          /* shares per stage: enumerate the first stage's vector and the second's independently */
          int64_t a[4] = {0}, b[4] = {0};
          a[k - 1] = mb;
          do {
            b[0] = 0;
            for (int i = 0; i < k; i++) b[i] = 0;
            b[k - 1] = mb;
            do {
              for (int i = 0; i < k; i++) sh[i] = a[i], sh[k + i] = b[i];
              wh_plan_layout l = WH_PLAN_LAYOUT_INIT;
              l.stages = S;
              l.last_segment = cut;
              l.shares = sh;
              l.micro_batches = m;
              l.schedule = sched ? WH_SCHEDULE_1F1B : WH_SCHEDULE_GPIPE;
              wh_plan *q;
              if (wh__planner_pin(pl, &l, &q) == WH_OK) {
                best = fmin(best, q->step_time);
                wh_plan_destroy(q);
              }
            } while (S == 2 && next_shares(b, k, mb));
          } while (next_shares(a, k, mb));
        }
      }
    }
  }
  wh__planner_close(pl);
  return best;
}

static double optimality(int instances) {
  const char *kinds[] = {"V100-32GB", "P100-16GB", "T4", "A10"};
  double worst = 0;
  printf("%-4s %-34s %6s %10s %10s %7s\n", "case", "devices", "batch", "search s", "brute s", "gap");
  for (int it = 0; it < instances; it++) {
    int nd = 2 + rnd(3); /* 2..4 devices */
    if (nd == 3) nd = 4;
    wh_cluster *c;
    wh_cluster_create(ctx, &c);
    char desc[128] = "";
    size_t o = 0;
    for (int d = 0; d < nd; d++) {
      const char *k = kinds[rnd(4)];
      wh_cluster_add(c, k, d / 2, 1);
      o += (size_t)snprintf(desc + o, sizeof desc - o, "%s%s", d ? "," : "", k);
    }
    wh_cluster_set_links(c, 16e9, 5e-6, 12.5e9 / 8, 30e-6);
    int64_t batch;
    wh_graph *g = random_mlp(2 + rnd(4), &batch);
    wh_plan_options po = WH_PLAN_OPTIONS_INIT;
    po.global_batch = batch;
    po.allow_tp = 0;
    po.allow_recompute = 0;
    po.stages = 0;
    wh_plan *p;
    if (wh_plan_create(ctx, g, c, &po, &p) != WH_OK) die("plan random");
    double t_search = p->step_time;
    if (p->n_stages > 2) { /* keep the brute force to at most two stages */
      wh_plan_destroy(p);
      double best = INFINITY;
      for (int S = 1; S <= 2; S++) {
        po.stages = S;
        if (wh_plan_create(ctx, g, c, &po, &p) == WH_OK) best = fmin(best, p->step_time), wh_plan_destroy(p);
      }
      t_search = best;
    } else {
      for (int s = 0; s < p->n_stages; s++)
        if (p->st[s].mem_peak > p->st[s].mem_cap) over_memory++;
      wh_plan_destroy(p);
    }
    double t_bf = brute_force(g, c, batch);
    double gap = t_search / t_bf - 1;
    worst = fmax(worst, gap);
    printf("%-4d %-34s %6lld %10.6f %10.6f %6.2f%%\n", it, desc, (long long)batch, t_search, t_bf, 100 * gap);
    wh_graph_destroy(g);
    wh_cluster_destroy(c);
  }
  return worst;
}

static double gpt3_plan_seconds(void) {
  wh_graph *g = model("gpt3-175b", 0);
  wh_cluster *c;
  wh_cluster_create(ctx, &c);
  for (int n = 0; n < 64; n++) wh_cluster_add(c, "A100-80GB", n, 8);
  for (int n = 64; n < 128; n++) wh_cluster_add(c, "V100-32GB", n, 8);
  wh_cluster_set_links(c, 0, 5e-6, 200e9 / 8, 10e-6);
  wh_plan_options o = WH_PLAN_OPTIONS_INIT;
  o.global_batch = 1536;
  wh_plan *p;
  double t0 = now();
  if (wh_plan_create(ctx, g, c, &o, &p) != WH_OK) die("plan gpt3");
  double dt = now() - t0;
  for (int s = 0; s < p->n_stages; s++)
    if (p->st[s].mem_peak > p->st[s].mem_cap) over_memory++;
  printf("GPT-3 175B on 512 A100-80GB + 512 V100-32GB (128 nodes), batch 1536: %d stages x %d replicas x tp %d, %d "
         "micro-batches, predicted %.1f s per step; planned in %.3f s\n",
         p->n_stages, p->st[0].ndev / p->st[0].tp, p->st[0].tp, p->micro_batches, p->step_time, dt);
  wh_plan_destroy(p);
  wh_cluster_destroy(c);
  wh_graph_destroy(g);
  return dt;
}

int main(int argc, char **argv) {
  int instances = argc > 1 ? atoi(argv[1]) : 24;
  if (wh_ctx_create(&ctx, NULL) != WH_OK) return 1;
  printf("figures: public datasheets (src/planner/catalogue.c), the same sustained fractions for every device "
         "(%.2f of peak FLOP/s, %.2f of memory bandwidth), FP32 training\n\n",
         WH_EFF_FLOPS_DEFAULT, WH_EFF_BW_DEFAULT);
  printf("heterogeneous data parallelism, 8 V100-32GB + 8 P100-16GB (nodes of 8, 50 Gb/s) - Whale measured 1.3-1.4x\n");
  struct {
    const char *name;
    int seq, per;
  } dp[] = {{"resnet50", 0, 64}, {"bert-large", 128, 32}, {"gnmt", 0, 128}};
  double gp[3], gb[3];
  for (int i = 0; i < 3; i++) hetero_dp(dp[i].name, dp[i].seq, dp[i].per, &gp[i], &gb[i]);
  printf("\nheterogeneous pipeline, 4 stages x 2-way DP on 4 V100-32GB + 4 P100-16GB, 8 micro-batches, 1F1B - Whale "
         "measured ~1.2x\n");
  double pp[2], pb[2];
  hetero_pp("bert-large", 128, &pp[0], &pb[0]);
  hetero_pp("t5-large", 0, &pp[1], &pb[1]);
  printf("\n1F1B against GPipe (Whale measured 1.45x at 4 stages, 1.14x at 8)\n");
  double s4 = sched_ratio(4), s8 = sched_ratio(8);
  printf("\nsearch against brute force over the same space (stages <= 2, shares, cuts, micro-batches, schedule)\n");
  double gap = optimality(instances);
  printf("\nplanning time\n");
  double secs = gpt3_plan_seconds();
  printf("\n");
  const char *dpn[] = {"resnet50", "bert_large", "gnmt"};
  for (int i = 0; i < 3; i++) {
    printf("RESULT hetero_dp_gain_%s %.3f\n", dpn[i], gp[i]);
    printf("RESULT hetero_dp_gain_bruteforce_%s %.3f\n", dpn[i], gb[i]);
  }
  printf("RESULT hetero_pp_gain_bert_large %.3f\nRESULT hetero_pp_gain_bruteforce_bert_large %.3f\n", pp[0], pb[0]);
  printf("RESULT hetero_pp_gain_t5_large %.3f\nRESULT hetero_pp_gain_bruteforce_t5_large %.3f\n", pp[1], pb[1]);
  printf("RESULT onef1b_vs_gpipe_4 %.3f\nRESULT onef1b_vs_gpipe_8 %.3f\n", s4, s8);
  printf("RESULT optimality_gap %.4f\n", gap);
  printf("RESULT plan_seconds_gpt3_1024 %.3f\n", secs);
  printf("RESULT over_memory_plans %d\n", over_memory);
  int ok = over_memory == 0 && gap <= 0.02 && secs < 1.0;
  for (int i = 0; i < 3; i++) ok &= gp[i] >= 0.98 * gb[i];
  for (int i = 0; i < 2; i++) ok &= pp[i] >= 0.98 * pb[i];
  wh_ctx_destroy(ctx);
  return ok ? 0 : 1;
}
