/* test_planner.c - properties of the planner through its public API (plus bench/models.h), each
 * one able to fail: batch shares sum to the micro-batch and follow device speed under memory caps;
 * emitted plans fit in memory and a model too large is refused with its size named; hints
 * (replicate, split, stage scopes, pipeline) bind the search; pinned layouts are costed as given
 * and bad ones refused; the simulator agrees with the closed forms of simple pipelines; plans
 * survive wh_plan_save / wh_plan_load exactly, and truncated or bit-flipped files never crash.
 *
 * The closed forms need each stage's per-micro-batch times, which the public API does not expose
 * (the explanation rounds them), so this test includes src/planner/planner.h and links the static
 * library, like bench/planner_bench.c. Everything else goes through whale.h.
 * Prints one line per check and ends with "planner: N passed, N failed". */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "models.h"
#include "src/planner/planner.h"
#include "whale.h"
#include "../common/runner.h"

static wh_ctx *ctx;
static char tmpdir[64];

/* A setup call that failed: this case cannot go on. */
_Noreturn static void die(const char *what, wh_status st) {
  wt_abort_at(__FILE__, __LINE__, "fatal: %s: %s (%s)", what, wh_status_str(st), wh_last_error(ctx));
}

static void expect_refused(const wh_graph *g, const wh_cluster *c, int64_t batch, const wh_plan_layout *l,
                           const char *what);

static void tmp_path(char *buf, size_t cap, const char *name) { snprintf(buf, cap, "%s/%s", tmpdir, name); }

/* ------------------------------------------------------------ explanation */

#define XMAX_STAGES 32
#define XMAX_REP 64

typedef struct {
  int first, last, ndev, nrep, tp, nr;
  double mem, cap; /* GiB, as printed */
  int64_t share[XMAX_REP];
  int dev[XMAX_REP][8];
} xstage;

typedef struct {
  int S, m;
  long long batch;
  int pinned;
  xstage st[XMAX_STAGES];
} xplan;

/* Read the explanation back into numbers; 0 when it does not parse. */
static int parse_explain(const wh_plan *p, xplan *x) {
  char *ex;
  memset(x, 0, sizeof *x);
  if (wh_plan_explain(p, &ex) != WH_OK) return 0;
  int ok = 1, cur = -1;
  char *save = NULL;
  for (char *line = strtok_r(ex, "\n", &save); line && ok; line = strtok_r(NULL, "\n", &save)) {
    int a, b, c, d, e, f, n;
    if (!strncmp(line, "plan: ", 6)) {
      ok = sscanf(line, "plan: %d stage%*[s] x %d micro-batch", &x->S, &x->m) == 2 ||
           sscanf(line, "plan: %d stage x %d micro-batch", &x->S, &x->m) == 2;
      const char *gb = strstr(line, "global batch ");
      ok = ok && gb && sscanf(gb, "global batch %lld", &x->batch) == 1 && x->S >= 1 && x->S <= XMAX_STAGES;
    } else if (sscanf(line, "stage %d: segments %d..%d on %d device%n", &a, &b, &c, &d, &n) == 4) {
      const char *r = strchr(line + n, '(');
      ok = a == cur + 1 && a < XMAX_STAGES && r && sscanf(r, "(%d replica", &e) == 1;
      const char *t = ok ? strstr(r, "x tp ") : NULL;
      ok = ok && t && sscanf(t, "x tp %d)", &f) == 1;
      if (ok) {
        cur = a;
        x->st[a] = (xstage){.first = b, .last = c, .ndev = d, .nrep = e, .tp = f};
      }
    } else if (!strncmp(line, "  per micro-batch:", 18)) {
      const char *mm = strstr(line, "memory ");
      ok = cur >= 0 && mm && sscanf(mm, "memory %lf of %lf GiB", &x->st[cur].mem, &x->st[cur].cap) == 2;
    } else if (sscanf(line, "  replica %d: batch share %d per micro-batch on%n", &a, &b, &n) == 2) {
      xstage *s = &x->st[cur];
      ok = cur >= 0 && a == s->nr && a < XMAX_REP && s->tp <= 8;
      if (!ok) break;
      s->share[a] = b;
      const char *q = line + n;
      for (int k = 0; k < s->tp && ok; k++) {
        int dv, used;
        ok = sscanf(q, " %d:%n", &dv, &used) == 1;
        s->dev[a][k] = dv;
        q = strchr(q + 1, ' ');
        if (!q && k < s->tp - 1) ok = 0;
        if (!q) q = "";
      }
      s->nr++;
    } else if (!strncmp(line, "why: ", 5)) {
      x->pinned = strstr(line, "pinned") != NULL;
    }
  }
  wh_free(ex);
  for (int s = 0; ok && s < x->S; s++) ok = x->st[s].nr == x->st[s].nrep && x->st[s].nrep > 0;
  return ok;
}

/* ---------------------------------------------------------------- models */

typedef struct {
  int blocks, per_block, width;
  int stage_scopes, replicate, split, pipeline, recompute;
  int stem; /* a bias on the input first, so the first block computes its input gradient like the others */
} mlp_cfg;

/* An MLP of identical blocks (per_block matmul + relu pairs, width x width), MSE loss against a
 * target of the same width, backward and AdamW. */
static wh_graph *mlp(const mlp_cfg *c) {
  wh_graph *g;
  if (wh_graph_create(ctx, &g) != WH_OK) die("graph", WH_ERR_INTERNAL);
  int64_t d[2] = {WH_BATCH, c->width};
  wh_value h = wh_input(g, "x", WH_F32, 2, d), y = wh_input(g, "y", WH_F32, 2, d);
  if (c->stem)
    h = wh_bias_add(g, h, wh_param(g, "stem", WH_F32, 1, (int64_t[]){c->width}, WH_INIT(WH_INIT_ZEROS, 0, 0, 0)), -1);
  if (c->replicate) wh_scope_replicate(g, c->replicate);
  if (c->split) wh_scope_split(g, c->split);
  if (c->recompute) wh_scope_recompute(g);
  for (int b = 0; b < c->blocks; b++) {
    if (c->stage_scopes) wh_scope_stage(g);
    for (int l = 0; l < c->per_block; l++) {
      char nm[32];
      snprintf(nm, sizeof nm, "w%d_%d", b, l);
      wh_value w = wh_param(g, nm, WH_F32, 2, (int64_t[]){c->width, c->width},
                            WH_INIT(WH_INIT_NORMAL, 0, 0.02f, (uint64_t)(b * 16 + l)));
      h = wh_relu(g, wh_matmul(g, h, w, 0, 1));
    }
    if (c->stage_scopes) wh_scope_end(g);
  }
  if (c->recompute) wh_scope_end(g);
  if (c->split) wh_scope_end(g);
  if (c->replicate) wh_scope_end(g);
  wh_value loss = wh_mse(g, h, y);
  wh_status st = wh_backward(g, loss);
  if (st != WH_OK) die("backward", st);
  wh_adamw_options o = WH_ADAMW_OPTIONS_INIT;
  if ((st = wh_optimizer_adamw(g, &o)) != WH_OK) die("adamw", st);
  if (c->pipeline && (st = wh_set_pipeline(g, c->pipeline)) != WH_OK) die("pipeline", st);
  if (wh_graph_status(g) != WH_OK) die(wh_graph_error(g), wh_graph_status(g));
  return g;
}

static wh_graph *bench_model(const char *name) {
  wh_graph *g;
  wh_graph_create(ctx, &g);
  int st = wm_build(name, g, NULL);
  if (st != 0) die(name, (wh_status)st);
  return g;
}

/* ---------------------------------------------------------------- clusters */

static wh_cluster *cluster_new(void) {
  wh_cluster *c;
  wh_status st = wh_cluster_create(ctx, &c);
  if (st != WH_OK) die("cluster", st);
  return c;
}

/* k kinds: the catalogue names and counts, one node per kind */
static wh_cluster *catalogue_cluster(int k, const char **kinds, const int *counts) {
  wh_cluster *c = cluster_new();
  for (int i = 0; i < k; i++)
    if (wh_cluster_add(c, kinds[i], i, counts[i]) != WH_OK) die("cluster add", WH_ERR_INTERNAL);
  wh_cluster_set_links(c, 0, 5e-6, 50e9 / 8, 30e-6);
  return c;
}

static void add_custom(wh_cluster *c, const char *kind, double flops, double mem, int node, int count) {
  wh_device_desc d = WH_DEVICE_DESC_INIT;
  d.kind = kind;
  d.flops_f32 = flops;
  d.mem_bw = 1e12;
  d.mem_bytes = mem;
  d.link_bw = 100e9;
  wh_status st = wh_cluster_add_custom(c, &d, node, count);
  if (st != WH_OK) die("add custom", st);
}

static double dev_speed(const wh_cluster *c, int d) { return c->dev[d].flops_f32 * c->dev[d].eff_flops; }

/* ------------------------------------------------------- every emitted plan */

static wh_plan *plan(const wh_graph *g, const wh_cluster *c, const wh_plan_options *o, const char *what) {
  wh_plan *p;
  wh_status st = wh_plan_create(ctx, g, c, o, &p);
  if (st != WH_OK) die(what, st);
  return p;
}

/* The invariants of any plan: the explanation parses and agrees with wh_plan_shares; every stage's
 * replica shares sum to the micro-batch; every stage fits its devices' memory (the planner's own
 * figures, and the explanation's); faster replicas of equal memory carry at least the share of
 * slower ones. */
static void vet(const wh_plan *p, const wh_cluster *c, const char *what) {
  xplan x;
  int n = wh_cluster_size(c);
  int64_t *sh = calloc((size_t)n, sizeof *sh);
  int parsed = parse_explain(p, &x) && wh_plan_shares(p, sh, n) == WH_OK;
  EXPECT_SAY(parsed && x.S == wh_plan_num_stages(p) && x.m == wh_plan_micro_batches(p) &&
            x.st[x.S - 1].last == wh_plan_num_segments(p) - 1,
        "%s: explanation parses (%d stages, %d micro-batches, segments 0..%d)", what, x.S, x.m,
        wh_plan_num_segments(p) - 1);
  if (!parsed) {
    free(sh);
    return;
  }
  int sums = 1, agree = 1, devs = 0;
  long long mb = x.batch / x.m;
  for (int s = 0; s < x.S; s++) {
    long long sum = 0;
    for (int r = 0; r < x.st[s].nrep; r++) {
      sum += x.st[s].share[r];
      for (int k = 0; k < x.st[s].tp; k++) agree &= sh[x.st[s].dev[r][k]] == x.st[s].share[r], devs++;
    }
    sums &= sum == mb && x.batch == (long long)p->global_batch;
  }
  EXPECT_SAY(sums && agree && devs == n, "%s: every stage's shares sum to the micro-batch %lld (global %lld / %d), "
        "wh_plan_shares agrees, all %d devices used", what, mb, x.batch, x.m, n);
  int mem_ok = 1;
  double worst = 0;
  for (int s = 0; s < p->n_stages; s++) {
    mem_ok &= p->st[s].mem_peak <= p->st[s].mem_cap && x.st[s].mem <= x.st[s].cap;
    /* the capacity reported is a device's of that stage */
    int found = 0;
    for (int i = 0; i < p->st[s].ndev; i++) found |= c->dev[p->st[s].dev[i]].mem_bytes == p->st[s].mem_cap;
    mem_ok &= found;
    worst = fmax(worst, p->st[s].mem_peak / p->st[s].mem_cap);
  }
  EXPECT_SAY(mem_ok, "%s: every stage's predicted peak within its capacity (worst %.1f%%)", what, 100 * worst);
  int order = 1, pairs = 0;
  for (int s = 0; s < x.S; s++)
    for (int a = 0; a < x.st[s].nrep; a++)
      for (int b = 0; b < x.st[s].nrep; b++) {
        if (x.st[s].tp != 1) continue;
        int da = x.st[s].dev[a][0], db = x.st[s].dev[b][0];
        if (c->dev[da].mem_bytes != c->dev[db].mem_bytes || !(dev_speed(c, da) > dev_speed(c, db))) continue;
        pairs++;
        order &= x.st[s].share[a] >= x.st[s].share[b];
      }
  EXPECT_SAY(order, "%s: faster replicas carry shares >= slower ones of equal memory (%d pairs)", what, pairs);
  free(sh);
}

/* ------------------------------------------------------------------ shares */

static void test_shares(const void *arg) {
  (void)arg;
  printf("-- shares\n");
  wh_graph *g = bench_model("gpt2-124m");
  const char *kinds[] = {"V100-16GB", "P100-16GB"};
  wh_cluster *c = catalogue_cluster(2, kinds, (int[]){4, 4});
  wh_plan_options o = WH_PLAN_OPTIONS_INIT;
  o.global_batch = 32;
  o.stages = 1;
  o.allow_tp = 0;
  wh_plan *dp = plan(g, c, &o, "dp");
  vet(dp, c, "gpt2-124m DP on 4 V100-16GB + 4 P100-16GB");
  int64_t sh[8];
  wh_plan_shares(dp, sh, 8);
  EXPECT_SAY(sh[0] > sh[7] && sh[0] + sh[7] > 0, "DP: a V100 gets strictly more than a P100 of the same memory (%lld vs %lld)",
        (long long)sh[0], (long long)sh[7]);
  wh_plan_destroy(dp);

  o.stages = 8;
  o.micro_batches = 8;
  wh_plan *pp = plan(g, c, &o, "pp");
  vet(pp, c, "gpt2-124m PP, 8 stages");
  wh_plan_destroy(pp);

  o.stages = 2;
  o.micro_batches = 4;
  wh_plan *hy = plan(g, c, &o, "hybrid");
  vet(hy, c, "gpt2-124m hybrid, 2 stages x 4 replicas");
  wh_plan_destroy(hy);

  /* a pinned hybrid whose stages mix the kinds, shares left to the planner's water-filling */
  int devices[8] = {0, 4, 1, 5, 2, 6, 3, 7};
  wh_plan_layout l = WH_PLAN_LAYOUT_INIT;
  l.stages = 2;
  l.devices = devices;
  l.micro_batches = 2;
  l.schedule = WH_SCHEDULE_1F1B;
  wh_plan *mx;
  wh_status st = wh_plan_create_pinned(ctx, g, c, 32, &l, &mx);
  EXPECT_SAY(st == WH_OK, "pinned hybrid with mixed kinds per stage plans (%s)", wh_status_str(st));
  if (st == WH_OK) {
    vet(mx, c, "gpt2-124m pinned mixed hybrid");
    wh_plan_shares(mx, sh, 8);
    EXPECT_SAY(sh[0] > sh[4], "mixed stage: V100 share %lld > P100 share %lld", (long long)sh[0], (long long)sh[4]);
    wh_plan_destroy(mx);
  }
  wh_cluster_destroy(c);
  wh_graph_destroy(g);
}

/* A single-stage plan's memory is fixed + per * share (no ZeRO): measure both from two pinned
 * plans of the whole batch on one roomy device. */
static void probe_memory(const wh_graph *g, double *fixed, double *per) {
  wh_cluster *one = cluster_new();
  add_custom(one, "probe", 10e12, 1e12, 0, 1);
  double mem[2];
  int64_t probe[2] = {64, 128};
  for (int i = 0; i < 2; i++) {
    wh_plan_layout l = WH_PLAN_LAYOUT_INIT;
    l.shares = &probe[i];
    wh_plan *p;
    wh_status st = wh_plan_create_pinned(ctx, g, one, probe[i], &l, &p);
    if (st != WH_OK) die("probe", st);
    mem[i] = p->st[0].mem_peak;
    wh_plan_destroy(p);
  }
  *per = (mem[1] - mem[0]) / (double)(probe[1] - probe[0]);
  *fixed = mem[0] - *per * (double)probe[0];
  wh_cluster_destroy(one);
}

/* Every device of a single-stage plan holds what its share needs. */
static int dp_fits(const wh_plan *p, const wh_cluster *c, double fixed, double per, int *over) {
  int n = wh_cluster_size(c);
  int64_t *sh = calloc((size_t)n, sizeof *sh);
  wh_plan_shares(p, sh, n);
  *over = -1;
  for (int d = 0; d < n; d++)
    if (fixed + per * (double)sh[d] > c->dev[d].mem_bytes * (1 + 1e-12)) *over = d;
  free(sh);
  return *over < 0;
}

/* A fast device with little memory beside a slow one with plenty: water-filling gives the fast one
 * exactly what its memory holds, where with ample memory it would take more. */
static void test_memory_cap(const void *arg) {
  (void)arg;
  printf("-- memory-capped water-filling\n");
  mlp_cfg mc = {.blocks = 2, .per_block = 1, .width = 2048};
  wh_graph *g = mlp(&mc);
  const int64_t batch = 256;
  double fixed, per;
  probe_memory(g, &fixed, &per);
  wh_plan_options o = WH_PLAN_OPTIONS_INIT;
  o.global_batch = batch;
  o.stages = 1;
  o.allow_tp = 0;
  o.allow_recompute = 0;
  /* ample: device 0 fast (10x), device 1 slow, both 1 TB */
  wh_cluster *c = cluster_new();
  add_custom(c, "fast", 100e12, 1e12, 0, 1);
  add_custom(c, "slow", 10e12, 1e12, 0, 1);
  wh_plan *p = plan(g, c, &o, "ample");
  vet(p, c, "ample memory");
  int64_t free_sh[2];
  wh_plan_shares(p, free_sh, 2);
  double t_free = wh_plan_step_time(p);
  wh_plan_destroy(p);
  wh_cluster_destroy(c);
  EXPECT_SAY(free_sh[0] > 2 * free_sh[1], "ample memory: the 10x faster device takes most of the batch (%lld vs %lld)",
        (long long)free_sh[0], (long long)free_sh[1]);

  /* capped: the fast device holds only half its free share */
  int64_t capsh = free_sh[0] / 2;
  c = cluster_new();
  add_custom(c, "fast-small", 100e12, fixed + per * ((double)capsh + 0.5), 0, 1);
  add_custom(c, "slow-big", 10e12, 1e12, 0, 1);
  p = plan(g, c, &o, "capped");
  vet(p, c, "capped memory");
  int64_t sh[2];
  wh_plan_shares(p, sh, 2);
  int over, fits = dp_fits(p, c, fixed, per, &over);
  EXPECT_SAY(fits && sh[0] == capsh && sh[1] == batch - capsh && wh_plan_step_time(p) > t_free,
        "capped: the fast device gets exactly what its memory holds (%lld, free %lld), the slow one the rest (%lld), "
        "step %.4f > %.4f s", (long long)sh[0], (long long)free_sh[0], (long long)sh[1], wh_plan_step_time(p), t_free);
  wh_plan_destroy(p);
  /* one sample more on the fast device does not fit */
  int64_t more[2] = {capsh + 1, batch - capsh - 1}, same[2] = {capsh, batch - capsh};
  wh_plan_layout l = WH_PLAN_LAYOUT_INIT;
  int devices[2] = {0, 1};
  l.devices = devices;
  l.shares = more;
  wh_status st = wh_plan_create_pinned(ctx, g, c, batch, &l, &p);
  EXPECT_SAY(st == WH_ERR_OUT_OF_MEMORY && *wh_last_error(ctx), "pinned: one more sample on the capped device is refused "
        "(%s: %.60s...)", wh_status_str(st), wh_last_error(ctx));
  if (st == WH_OK) wh_plan_destroy(p);
  l.shares = same;
  st = wh_plan_create_pinned(ctx, g, c, batch, &l, &p);
  EXPECT_SAY(st == WH_OK, "pinned: the planner's capped shares themselves fit (%s)", wh_status_str(st));
  if (st == WH_OK) wh_plan_destroy(p);
  wh_cluster_destroy(c);
  wh_graph_destroy(g);
}

/* ------------------------------------------------------------------ memory */

static void test_too_large(const void *arg) {
  (void)arg;
  printf("-- a model too large\n");
  mlp_cfg mc = {.blocks = 8, .per_block = 1, .width = 16384};
  wh_graph *g = mlp(&mc);
  double bytes = 0;
  for (int i = 0; i < wh_graph_num_params(g); i++) {
    int nd;
    int64_t d[WH_MAX_DIMS], n = 1;
    wh_value_shape(g, wh_graph_param(g, i), &nd, d);
    for (int k = 0; k < nd; k++) n *= d[k];
    bytes += 4.0 * (double)n;
  }
  const char *kinds[] = {"T4"};
  wh_cluster *c = catalogue_cluster(1, kinds, (int[]){2});
  wh_plan_options o = WH_PLAN_OPTIONS_INIT;
  o.global_batch = 8;
  wh_plan *p = (wh_plan *)&o; /* must be reset to NULL */
  wh_status st = wh_plan_create(ctx, g, c, &o, &p);
  char want[64];
  snprintf(want, sizeof want, "%.2f GB of parameters", bytes / 1e9);
  EXPECT_SAY(st == WH_ERR_OUT_OF_MEMORY && p == NULL && strstr(wh_last_error(ctx), want),
        "%.2f GB of weights on 2 T4: %s, message names '%s': %s", bytes / 1e9, wh_status_str(st), want,
        wh_last_error(ctx));
  wh_cluster_destroy(c);
  wh_graph_destroy(g);
}

/* Corners of the memory model: more device kinds in one stage than the water-filling tracks; a
 * device that cannot hold the weights at all; the memory a pinned plan reports. */
static void test_memory_edges(const void *arg) {
  (void)arg;
  printf("-- memory corners\n");
  mlp_cfg mc = {.blocks = 2, .per_block = 1, .width = 2048};
  wh_graph *g = mlp(&mc);
  double fixed, per;
  probe_memory(g, &fixed, &per);
  wh_plan_options o = WH_PLAN_OPTIONS_INIT;
  o.stages = 1;
  o.allow_tp = 0;
  o.allow_recompute = 0;
  /* 17 kinds (16 roomy ones of distinct memory, one holding 2 samples), 10 samples each on average */
  wh_cluster *c = cluster_new();
  for (int i = 0; i < 16; i++) add_custom(c, "roomy", 10e12, fixed + per * (1000 + i), 0, 1);
  add_custom(c, "tiny", 10e12, fixed + per * 2.5, 0, 1);
  o.global_batch = 170;
  wh_plan *p = plan(g, c, &o, "17 kinds");
  vet(p, c, "17 kinds in one stage");
  int64_t sh[17];
  wh_plan_shares(p, sh, 17);
  int over, fits = dp_fits(p, c, fixed, per, &over);
  EXPECT_SAY(fits, "17 kinds in one stage: every device holds its share (the tiny one gets "
        "%lld of at most 2; first over: %d)", (long long)sh[16], over);
  wh_plan_destroy(p);
  wh_cluster_destroy(c);

  /* a device too small for the weights cannot be a replica, even with no samples */
  c = cluster_new();
  add_custom(c, "roomy", 10e12, 1e12, 0, 1);
  add_custom(c, "small", 10e12, 0.5 * fixed, 0, 1);
  o.global_batch = 32;
  p = (wh_plan *)&o;
  wh_status st = wh_plan_create(ctx, g, c, &o, &p);
  EXPECT_SAY(st == WH_ERR_OUT_OF_MEMORY && p == NULL, "data parallelism with a device of half the weights' memory is "
        "refused (%s), not planned with a zero share", wh_status_str(st));
  if (st == WH_OK) wh_plan_destroy(p);
  int64_t zero[2] = {32, 0};
  wh_plan_layout l = WH_PLAN_LAYOUT_INIT;
  int devices[2] = {0, 1};
  l.devices = devices;
  l.shares = zero;
  expect_refused(g, c, 32, &l, "a zero share on a device that cannot hold the weights");
  o.stages = 0;
  st = wh_plan_create(ctx, g, c, &o, &p);
  if (st == WH_OK) {
    vet(p, c, "weights too large for one device, free search");
    wh_plan_destroy(p);
  } else {
    EXPECT_SAY(st == WH_ERR_OUT_OF_MEMORY, "weights too large for one device, free search: %s", wh_status_str(st));
  }
  wh_cluster_destroy(c);

  /* a pinned plan reports the memory of its largest share, not of its capacity */
  c = cluster_new();
  add_custom(c, "gpu", 10e12, 1e12, 0, 2);
  int64_t uneven[2] = {1, 127};
  l.shares = uneven;
  st = wh_plan_create_pinned(ctx, g, c, 128, &l, &p);
  double want = fixed + per * 127;
  EXPECT_SAY(st == WH_OK && fabs(p->st[0].mem_peak - want) <= 1e-9 * want, "pinned shares 1 + 127: reported peak %.6f GB "
        "is the memory of 127 samples (%.6f GB)", st == WH_OK ? p->st[0].mem_peak / 1e9 : 0, want / 1e9);
  if (st == WH_OK) wh_plan_destroy(p);
  wh_cluster_destroy(c);
  wh_graph_destroy(g);
}

/* ------------------------------------------------------------------- hints */

static void test_hints(const void *arg) {
  (void)arg;
  printf("-- hints\n");
  wh_cluster *c = cluster_new();
  add_custom(c, "gpu", 10e12, 32e9, 0, 4);
  add_custom(c, "gpu", 10e12, 32e9, 1, 4);
  wh_cluster_set_links(c, 50e9, 5e-6, 12.5e9, 20e-6);
  wh_plan_options o = WH_PLAN_OPTIONS_INIT;
  o.global_batch = 64;
  xplan x;

  /* replicate(k): k replicas in every stage */
  mlp_cfg mc = {.blocks = 4, .per_block = 1, .width = 1024};
  wh_graph *g = mlp(&mc);
  wh_plan *p = plan(g, c, &o, "unhinted");
  parse_explain(p, &x);
  int free_rep = x.st[0].nrep, free_tp = x.st[0].tp;
  wh_plan_destroy(p);
  wh_graph_destroy(g);
  int k = free_rep == 2 ? 4 : 2;
  mc.replicate = k;
  g = mlp(&mc);
  p = plan(g, c, &o, "replicate");
  vet(p, c, "replicate hint");
  int ok = parse_explain(p, &x);
  for (int s = 0; ok && s < x.S; s++) ok = x.st[s].nrep == k;
  EXPECT_SAY(ok && free_rep != k, "wh_scope_replicate(g, %d): %d stages, each with %d replicas (unhinted: %d)", k, x.S,
        x.st[0].nrep, free_rep);
  wh_plan_destroy(p);
  wh_graph_destroy(g);

  /* split(t): tp = t */
  mc.replicate = 0;
  mc.split = free_tp == 2 ? 4 : 2;
  g = mlp(&mc);
  p = plan(g, c, &o, "split");
  vet(p, c, "split hint");
  ok = parse_explain(p, &x);
  for (int s = 0; ok && s < x.S; s++) ok = x.st[s].tp == mc.split;
  EXPECT_SAY(ok && free_tp != mc.split, "wh_scope_split(g, %d): tp %d in all %d stages (unhinted: tp %d)", mc.split,
        x.st[0].tp, x.S, free_tp);
  wh_plan_destroy(p);
  wh_graph_destroy(g);

  /* stage scopes: 3 blocks of 2 layers, 2 stages. Balance wants a cut inside the middle block;
   * with the blocks in stage scopes the cut must fall between blocks. */
  mlp_cfg sc = {.blocks = 3, .per_block = 2, .width = 2048};
  wh_cluster *c2 = cluster_new();
  add_custom(c2, "gpu", 10e12, 64e9, 0, 2);
  wh_cluster_set_links(c2, 50e9, 5e-6, 12.5e9, 20e-6);
  wh_plan_options o2 = WH_PLAN_OPTIONS_INIT;
  o2.global_batch = 64;
  o2.stages = 2;
  o2.allow_tp = 0;
  g = mlp(&sc);
  p = plan(g, c2, &o2, "unscoped");
  parse_explain(p, &x);
  int nseg = wh_plan_num_segments(p), free_cut = x.st[0].last;
  wh_plan_destroy(p);
  wh_graph_destroy(g);
  /* per block: matmul, relu per layer = 4 segments; then the loss. Block ends: 3, 7, 11. */
  sc.stage_scopes = 1;
  g = mlp(&sc);
  p = plan(g, c2, &o2, "scoped");
  vet(p, c2, "stage scopes");
  ok = parse_explain(p, &x) && wh_plan_num_segments(p) == nseg && nseg == 13;
  for (int s = 0; ok && s < x.S - 1; s++) ok = x.st[s].last % 4 == 3;
  EXPECT_SAY(ok && free_cut % 4 != 3, "stage scopes: %d segments, stage 0 ends at segment %d, a block end (unscoped: %d)",
        nseg, x.st[0].last, free_cut);
  /* a pinned layout is the caller's: its cut is costed as given, even inside a scope */
  int cut[2] = {free_cut, nseg - 1};
  wh_plan_layout l = WH_PLAN_LAYOUT_INIT;
  l.stages = 2;
  l.last_segment = cut;
  l.micro_batches = 4;
  wh_plan *q;
  wh_status st = wh_plan_create_pinned(ctx, g, c2, 64, &l, &q);
  ok = st == WH_OK && parse_explain(q, &x) && x.st[0].last == free_cut && x.st[1].first == free_cut + 1 && x.pinned;
  EXPECT_SAY(ok, "pinned cut at segment %d inside a stage scope is costed as given (%s)", free_cut, wh_status_str(st));
  if (st == WH_OK) wh_plan_destroy(q);
  wh_plan_destroy(p);
  wh_graph_destroy(g);

  /* wh_set_pipeline(g, m) fixes the micro-batches of pipelined plans */
  g = mlp(&sc);
  o2.stages = 2;
  p = plan(g, c2, &o2, "free m");
  int free_m = wh_plan_micro_batches(p);
  wh_plan_destroy(p);
  wh_graph_destroy(g);
  sc.pipeline = free_m == 8 ? 16 : 8;
  g = mlp(&sc);
  int all = 1;
  for (int S = 2; S <= 4; S += 2) {
    wh_cluster *c4 = cluster_new();
    add_custom(c4, "gpu", 10e12, 64e9, 0, 4);
    wh_plan_options o4 = WH_PLAN_OPTIONS_INIT;
    o4.global_batch = 64;
    o4.stages = S;
    p = plan(g, c4, &o4, "pipeline hint");
    vet(p, c4, S == 2 ? "pipeline hint, 2 stages" : "pipeline hint, 4 stages");
    all &= wh_plan_micro_batches(p) == sc.pipeline && wh_plan_num_stages(p) == S;
    wh_plan_destroy(p);
    wh_cluster_destroy(c4);
  }
  EXPECT_SAY(all && free_m != sc.pipeline, "wh_set_pipeline(g, %d): pipelined plans of 2 and 4 stages use %d "
        "micro-batches (unhinted: %d)", sc.pipeline, sc.pipeline, free_m);
  wh_graph_destroy(g);
  wh_cluster_destroy(c2);
  wh_cluster_destroy(c);
}

/* ------------------------------------------------------------------ pinned */

static void expect_refused(const wh_graph *g, const wh_cluster *c, int64_t batch, const wh_plan_layout *l,
                           const char *what) {
  wh_plan *p = (wh_plan *)l;
  wh_status st = wh_plan_create_pinned(ctx, g, c, batch, l, &p);
  const char *msg = wh_last_error(ctx);
  EXPECT_SAY((st == WH_ERR_INVALID_ARGUMENT || st == WH_ERR_OUT_OF_MEMORY) && p == NULL && *msg,
        "pinned, %s: refused with %s: %.110s", what, wh_status_str(st), msg);
  if (st == WH_OK) wh_plan_destroy(p);
}

static void test_pinned(const void *arg) {
  (void)arg;
  printf("-- pinned layouts\n");
  mlp_cfg mc = {.blocks = 4, .per_block = 1, .width = 1024};
  wh_graph *g = mlp(&mc);
  const char *kinds[] = {"V100-32GB", "P100-16GB"};
  wh_cluster *c = catalogue_cluster(2, kinds, (int[]){2, 2});
  const int64_t batch = 32;
  int cut[2] = {3, 8}, devices[4] = {2, 0, 3, 1};
  int64_t shares[4] = {6, 2, 5, 3}; /* stage 0: P100 6, V100 2; stage 1: P100 5, V100 3 (per micro-batch of 8) */
  wh_plan_layout l = WH_PLAN_LAYOUT_INIT;
  l.stages = 2;
  l.last_segment = cut;
  l.devices = devices;
  l.shares = shares;
  l.micro_batches = 4;
  l.schedule = WH_SCHEDULE_GPIPE;
  wh_plan *p;
  wh_status st = wh_plan_create_pinned(ctx, g, c, batch, &l, &p);
  xplan x;
  int ok = st == WH_OK && parse_explain(p, &x);
  int nseg = ok ? wh_plan_num_segments(p) : 0;
  ok = ok && nseg == 9 && x.pinned && x.S == 2 && x.m == 4 && wh_plan_schedule(p) == WH_SCHEDULE_GPIPE &&
       x.st[0].last == 3 && x.st[1].first == 4 && x.st[1].last == 8;
  for (int s = 0; ok && s < 2; s++)
    for (int r = 0; r < 2; r++) ok = ok && x.st[s].dev[r][0] == devices[2 * s + r] && x.st[s].share[r] == shares[2 * s + r];
  EXPECT_SAY(ok, "a valid pinned layout is costed as given: explanation says pinned, cuts 3 | 8, devices and shares as "
        "listed, GPipe x 4 (%s)", wh_status_str(st));
  if (st == WH_OK) {
    vet(p, c, "pinned");
    wh_plan_destroy(p);
  }
  /* bad layouts */
  int64_t bad_sum[4] = {6, 2, 5, 2};
  l.shares = bad_sum;
  expect_refused(g, c, batch, &l, "shares of stage 1 sum to 7, not 8");
  int64_t neg[4] = {9, -1, 5, 3};
  l.shares = neg;
  expect_refused(g, c, batch, &l, "a negative share");
  l.shares = shares;
  int cut_dec[2] = {5, 3}, cut_short[2] = {3, 7}, cut_far[2] = {3, 9}, cut_neg[2] = {-1, 8};
  l.last_segment = cut_dec;
  expect_refused(g, c, batch, &l, "cuts out of order");
  l.last_segment = cut_short;
  expect_refused(g, c, batch, &l, "the last stage stops before the last segment");
  l.last_segment = cut_far;
  expect_refused(g, c, batch, &l, "a cut past the last segment");
  l.last_segment = cut_neg;
  expect_refused(g, c, batch, &l, "a negative cut");
  l.last_segment = cut;
  int dup[4] = {2, 0, 2, 1}, oob[4] = {2, 0, 3, 4};
  l.devices = dup;
  expect_refused(g, c, batch, &l, "a duplicate device");
  l.devices = oob;
  expect_refused(g, c, batch, &l, "a device index out of range");
  l.devices = devices;
  l.stages = 3;
  expect_refused(g, c, batch, &l, "3 stages over 4 devices");
  l.stages = 2;
  l.micro_batches = 3;
  expect_refused(g, c, batch, &l, "3 micro-batches of a batch of 32");
  l.micro_batches = 4;
  l.tp = 3;
  expect_refused(g, c, batch, &l, "tp 3 of 2 devices per stage");
  l.tp = 1;
  l.schedule = WH_SCHEDULE_AUTO;
  expect_refused(g, c, batch, &l, "schedule AUTO");
  l.schedule = WH_SCHEDULE_1F1B;
  l.struct_size = sizeof l - 1;
  expect_refused(g, c, batch, &l, "a wrong struct_size");
  l.struct_size = sizeof l;
  /* a share no device can hold: the whole batch in one micro-batch on a P100 of a huge model */
  mlp_cfg big = {.blocks = 2, .per_block = 1, .width = 8192};
  wh_graph *gb = mlp(&big);
  int64_t heavy[4] = {1 << 20, 0, 1 << 20, 0};
  wh_plan_layout lb = WH_PLAN_LAYOUT_INIT;
  lb.stages = 2;
  lb.devices = devices;
  lb.shares = heavy;
  expect_refused(gb, c, 1 << 20, &lb, "a micro-batch of 2^20 samples on one P100-16GB");
  wh_graph_destroy(gb);
  wh_cluster_destroy(c);
  wh_graph_destroy(g);
}

/* --------------------------------------------------------------- simulator */

static double sim(const wh_plan *p, const wh_cluster *c) {
  wh_sim_result r = WH_SIM_RESULT_INIT;
  wh_status st = wh_plan_simulate(p, c, &r);
  if (st != WH_OK) die("simulate", st);
  return r.step_time;
}

/* S identical stages (one block each after a small stem, the loss in the last; a homogeneous
 * cluster; links between stages too fast to matter): stage s ends its last backward at
 * (m + S - 1)(f + b) - s b, then all-reduces, so step = max_s (m + S - 1)(f + b) - s b + ar_s.
 * The check brackets the simulation between that form at the smallest and at the largest stage
 * times and requires the bracket to be tight. skew: the last stage's two replicas sit on two nodes
 * (a slow all-reduce), the others on one (free), so the step is set by the last stage's tail,
 * which starts (S - 1) b before the first stage's end: f and b must be split right. */
static void closed_form(int S, int reps, int m, wh_schedule sched, int skew) {
  mlp_cfg mc = {.blocks = S, .per_block = 2, .width = 2048, .stage_scopes = 1, .stem = 1};
  wh_graph *g = mlp(&mc);
  wh_cluster *c = cluster_new();
  int nd = S * reps;
  int *devices = malloc(sizeof(int) * (size_t)nd), *cut = malloc(sizeof(int) * (size_t)S);
  if (skew) {
    /* devices 0..nd-2 on node 0, the last on node 1; stage s holds devices reps*s .. */
    add_custom(c, "gpu", 1e12, 1e12, 0, nd - 1);
    add_custom(c, "gpu", 1e12, 1e12, 1, 1);
    for (int i = 0; i < nd; i++) devices[i] = i;
    wh_cluster_set_links(c, 1e30, 0, 2.5e9, 0);
  } else {
    /* replica r of every stage on node r: hops between stages stay in a node (free), the
     * all-reduce crosses nodes at 10 GB/s */
    for (int r = 0; r < reps; r++) add_custom(c, "gpu", 1e12, 1e12, r, S);
    for (int s = 0; s < S; s++)
      for (int r = 0; r < reps; r++) devices[s * reps + r] = r * S + s;
    wh_cluster_set_links(c, 1e30, 0, 10e9, 0);
  }
  for (int s = 0; s < S; s++) cut[s] = s == S - 1 ? 4 * S + 1 : 4 * s + 4; /* stem, 4 per block, loss */
  wh_plan_layout l = WH_PLAN_LAYOUT_INIT;
  l.stages = S;
  l.devices = devices;
  l.last_segment = cut;
  l.micro_batches = m;
  l.schedule = sched;
  wh_plan *p;
  wh_status st = wh_plan_create_pinned(ctx, g, c, 32 * m * reps, &l, &p);
  if (st != WH_OK) die("closed form", st);
  double f_lo = INFINITY, f_hi = 0, b_lo = INFINITY, b_hi = 0, armax = 0, p2p = 0;
  int consistent = wh_plan_num_segments(p) == 4 * S + 2;
  for (int s = 0; s < S; s++) {
    double slow = 0;
    for (int r = 0; r < reps; r++) {
      double f = p->st[s].t_fwd[r], b = p->st[s].t_bwd[r];
      f_lo = fmin(f_lo, f), f_hi = fmax(f_hi, f), b_lo = fmin(b_lo, b), b_hi = fmax(b_hi, b);
      slow = fmax(slow, f + b);
      consistent &= b > 1.5 * f; /* matmul blocks: backward has twice the forward's FLOPs */
    }
    consistent &= fabs(slow - p->st[s].t_compute) <= 1e-9 * slow;
    armax = fmax(armax, p->st[s].t_allreduce);
    p2p = fmax(p2p, p->st[s].t_p2p);
  }
  const char *sn = sched == WH_SCHEDULE_GPIPE ? "GPipe" : "1F1B";
  EXPECT_SAY(consistent, "%s, S=%d x %d%s: stage times consistent: per replica forward f %.6f s < backward b %.6f s, "
        "f + b of the slowest replica is the stage's compute", sn, S, reps, skew ? " (skewed)" : "", f_lo, b_lo);
  double k = m + S - 1, lo = 0, hi = 0;
  for (int s = 0; s < S; s++) {
    /* each stage ends with its gradient all-reduce and then its optimizer step */
    lo = fmax(lo, k * (f_lo + b_lo) - s * b_lo + p->st[s].t_allreduce + p->st[s].t_update);
    hi = fmax(hi, k * (f_hi + b_hi) - s * b_hi + p->st[s].t_allreduce + p->st[s].t_update);
  }
  hi += 2 * k * p2p;
  double t = sim(p, c), together = k * (f_lo + b_lo) + armax; /* if every stage ended at once */
  int teeth = skew ? together > hi * 1.05 : (reps == 1 || p->st[0].t_allreduce > 0.05 * t);
  EXPECT_SAY(t >= lo * (1 - 1e-12) && t <= hi * (1 + 1e-12) && hi / lo - 1 < 0.01 && teeth,
        "%s, S=%d x %d replicas, m=%d%s: simulated %.6f s within the closed form [%.6f, %.6f] (all-reduce of stage 0 "
        "%.6f s, of stage %d %.6f s%s)", sn, S, reps, m, skew ? ", skewed all-reduce" : "", t, lo, hi,
        p->st[0].t_allreduce, S - 1, p->st[S - 1].t_allreduce, skew ? "; not the tail of a simultaneous end" : "");
  /* the search drains backward slots stage by stage, so a slow all-reduce in a late stage is
   * costed as the simulator plays it too */
  double e = wh_plan_step_time(p);
  EXPECT_SAY(fabs(e - t) <= 0.01 * t, "%s, S=%d x %d, m=%d%s: search estimate %.6f s within 1%% of the simulation %.6f s",
        sn, S, reps, m, skew ? ", skewed all-reduce" : "", e, t);
  wh_plan_destroy(p);
  free(devices), free(cut);
  wh_cluster_destroy(c);
  wh_graph_destroy(g);
}

/* Recomputation re-runs the forward in backward: t_fwd unchanged, t_bwd grows by exactly t_fwd. */
static void recompute_times(void) {
  mlp_cfg mc = {.blocks = 2, .per_block = 2, .width = 1024, .stem = 1};
  wh_graph *g = mlp(&mc);
  wh_cluster *c = cluster_new();
  add_custom(c, "gpu", 1e12, 1e12, 0, 4);
  wh_plan_layout l = WH_PLAN_LAYOUT_INIT;
  l.stages = 2;
  l.micro_batches = 4;
  wh_plan *p[2];
  for (int rc = 0; rc < 2; rc++) {
    l.recompute = rc;
    wh_status st = wh_plan_create_pinned(ctx, g, c, 64, &l, &p[rc]);
    if (st != WH_OK) die("recompute", st);
  }
  int ok = 1;
  for (int s = 0; s < 2; s++)
    for (int r = 0; r < 2; r++) {
      double f0 = p[0]->st[s].t_fwd[r], b0 = p[0]->st[s].t_bwd[r], f1 = p[1]->st[s].t_fwd[r], b1 = p[1]->st[s].t_bwd[r];
      ok &= f0 > 0 && f1 == f0 && fabs(b1 - (b0 + f0)) <= 1e-9 * b1;
    }
  EXPECT_SAY(ok && wh_plan_step_time(p[1]) > wh_plan_step_time(p[0]), "recompute: forward times unchanged, backward "
        "times grow by exactly the forward (stage 0: f %.6f, b %.6f -> %.6f s)", p[0]->st[0].t_fwd[0],
        p[0]->st[0].t_bwd[0], p[1]->st[0].t_bwd[0]);
  wh_plan_destroy(p[0]), wh_plan_destroy(p[1]);
  wh_cluster_destroy(c);
  wh_graph_destroy(g);
}

static void test_simulator(const void *arg) {
  (void)arg;
  printf("-- simulator against closed forms\n");
  closed_form(4, 1, 8, WH_SCHEDULE_GPIPE, 0);
  closed_form(4, 1, 8, WH_SCHEDULE_1F1B, 0);
  closed_form(3, 1, 2, WH_SCHEDULE_1F1B, 0); /* fewer micro-batches than stages */
  closed_form(4, 2, 4, WH_SCHEDULE_GPIPE, 0);
  closed_form(4, 2, 4, WH_SCHEDULE_1F1B, 0);
  closed_form(4, 2, 4, WH_SCHEDULE_GPIPE, 1);
  closed_form(4, 2, 4, WH_SCHEDULE_1F1B, 1);
  recompute_times();
  /* single-stage data parallelism: the simulation is the search's estimate */
  const char *kinds[] = {"V100-32GB", "P100-16GB", "T4"};
  wh_cluster *c = catalogue_cluster(3, kinds, (int[]){2, 2, 2});
  wh_graph *g = bench_model("gpt2-124m");
  int all = 1;
  double worst = 0;
  for (int b = 12; b <= 48; b += 12) {
    wh_plan_options o = WH_PLAN_OPTIONS_INIT;
    o.global_batch = b;
    o.stages = 1;
    o.allow_tp = 0;
    wh_plan *p = plan(g, c, &o, "dp");
    double t = sim(p, c), e = wh_plan_step_time(p);
    worst = fmax(worst, fabs(t - e) / e);
    all &= fabs(t - e) <= 1e-9 * e && wh_plan_num_stages(p) == 1;
    wh_plan_destroy(p);
  }
  EXPECT_SAY(all, "single-stage DP on 2 V100 + 2 P100 + 2 T4, batches 12..48: simulate == wh_plan_step_time (worst "
        "relative gap %.2e)", worst);
  wh_graph_destroy(g);
  wh_cluster_destroy(c);
}

/* -------------------------------------------------------------- round trip */

static char *read_all(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *b = malloc((size_t)n + 1);
  *len = fread(b, 1, (size_t)n, f);
  fclose(f);
  return b;
}

static int write_all(const char *path, const char *b, size_t len) {
  FILE *f = fopen(path, "wb");
  if (!f) return 0;
  size_t w = len ? fwrite(b, 1, len, f) : 0;
  return fclose(f) == 0 && w == len;
}

/* Explanation, DOT, accessors and simulation of a and b agree exactly. */
static int same_plan(const wh_plan *a, const wh_plan *b, const wh_cluster *c, char *why, size_t cap) {
  char *ea = NULL, *eb = NULL, *da = NULL, *db = NULL;
  int ok = wh_plan_explain(a, &ea) == WH_OK && wh_plan_explain(b, &eb) == WH_OK && !strcmp(ea, eb);
  if (!ok) snprintf(why, cap, "explanations differ");
  if (ok && !(wh_plan_dump(a, WH_FORMAT_DOT, &da) == WH_OK && wh_plan_dump(b, WH_FORMAT_DOT, &db) == WH_OK &&
              !strcmp(da, db)))
    ok = 0, snprintf(why, cap, "DOT differs");
  wh_free(ea), wh_free(eb), wh_free(da), wh_free(db);
  int n = wh_cluster_size(c);
  int64_t sa[64], sb[64];
  if (ok && !(wh_plan_step_time(a) == wh_plan_step_time(b) && wh_plan_num_stages(a) == wh_plan_num_stages(b) &&
              wh_plan_micro_batches(a) == wh_plan_micro_batches(b) && wh_plan_schedule(a) == wh_plan_schedule(b) &&
              wh_plan_num_segments(a) == wh_plan_num_segments(b) && wh_plan_shares(a, sa, n) == WH_OK &&
              wh_plan_shares(b, sb, n) == WH_OK && !memcmp(sa, sb, sizeof(int64_t) * (size_t)n)))
    ok = 0, snprintf(why, cap, "accessors differ");
  wh_sim_result ra = WH_SIM_RESULT_INIT, rb = WH_SIM_RESULT_INIT;
  if (ok && !(wh_plan_simulate(a, c, &ra) == WH_OK && wh_plan_simulate(b, c, &rb) == WH_OK &&
              ra.step_time == rb.step_time && ra.bubble_fraction == rb.bubble_fraction &&
              ra.num_devices == rb.num_devices && !memcmp(ra.util, rb.util, sizeof ra.util)))
    ok = 0, snprintf(why, cap, "simulations differ");
  return ok;
}

static void round_trip(const wh_plan *p, const wh_cluster *c, const char *what, int fuzz) {
  char path[128], path2[128], bad[128], why[64] = "";
  tmp_path(path, sizeof path, "plan.pb");
  tmp_path(path2, sizeof path2, "plan2.pb");
  tmp_path(bad, sizeof bad, "bad.pb");
  wh_status st = wh_plan_save(p, path);
  wh_plan *q = NULL;
  wh_status lt = st == WH_OK ? wh_plan_load(ctx, path, &q) : st;
  int ok = lt == WH_OK && same_plan(p, q, c, why, sizeof why);
  EXPECT_SAY(ok, "%s: save/load round trip: identical explanation, DOT, accessors and simulation (%s %s)", what,
        wh_status_str(lt), why);
  if (!q) return;
  /* a loaded plan saves to the same bytes */
  size_t l1 = 0, l2 = 0;
  char *b1 = read_all(path, &l1), *b2 = NULL;
  if (wh_plan_save(q, path2) == WH_OK) b2 = read_all(path2, &l2);
  EXPECT_SAY(b1 && b2 && l1 == l2 && !memcmp(b1, b2, l1), "%s: the loaded plan saves to the same %zu bytes", what, l1);
  free(b2);
  /* simulating on a cluster of another size is refused, for the loaded plan as for the original */
  wh_cluster *other = cluster_new();
  add_custom(other, "gpu", 1e12, 1e12, 0, wh_cluster_size(c) + 1);
  wh_sim_result r = WH_SIM_RESULT_INIT;
  EXPECT_SAY(wh_plan_simulate(q, other, &r) == WH_ERR_INVALID_ARGUMENT &&
            wh_plan_simulate(p, other, &r) == WH_ERR_INVALID_ARGUMENT,
        "%s: simulating on a cluster of %d devices instead of %d is refused", what, wh_cluster_size(other),
        wh_cluster_size(c));
  wh_cluster_destroy(other);
  wh_plan_destroy(q);
  remove(path2);
  if (!fuzz || !b1) {
    free(b1);
    return;
  }
  /* every truncation is refused as corrupt */
  int trunc_ok = 1;
  size_t first_bad = 0;
  for (size_t n = 0; n < l1; n++) {
    write_all(bad, b1, n);
    wh_plan *t = (wh_plan *)b1;
    wh_status s = wh_plan_load(ctx, bad, &t);
    if (s != WH_ERR_CORRUPT || t != NULL || !*wh_last_error(ctx)) {
      if (trunc_ok) first_bad = n;
      trunc_ok = 0;
      if (s == WH_OK) wh_plan_destroy(t);
    }
  }
  EXPECT_SAY(trunc_ok, "%s: all %zu truncations load as WH_ERR_CORRUPT with a message (first exception at %zu)", what, l1,
        first_bad);
  /* byte flips: refused with a message, or a plan that explains, dumps and simulates */
  const uint8_t masks[] = {0x01, 0x04, 0x80, 0xff};
  int flips = 0, rejected = 0, valid = 0, flip_ok = 1;
  for (size_t i = 0; i < l1; i++)
    for (size_t k = 0; k < sizeof masks; k++) {
      b1[i] ^= (char)masks[k];
      write_all(bad, b1, l1);
      b1[i] ^= (char)masks[k];
      wh_plan *t = NULL;
      wh_status s = wh_plan_load(ctx, bad, &t);
      flips++;
      if (s != WH_OK) {
        rejected++;
        flip_ok &= (s == WH_ERR_CORRUPT || s == WH_ERR_UNSUPPORTED) && t == NULL && *wh_last_error(ctx);
        continue;
      }
      valid++;
      char *e = NULL, *d = NULL;
      int64_t sh[64];
      wh_sim_result rr = WH_SIM_RESULT_INIT;
      wh_status ss = wh_plan_simulate(t, c, &rr);
      flip_ok &= wh_plan_explain(t, &e) == WH_OK && wh_plan_dump(t, WH_FORMAT_DOT, &d) == WH_OK &&
                 wh_plan_shares(t, sh, 64) == WH_OK && (ss == WH_OK || ss == WH_ERR_INVALID_ARGUMENT);
      wh_free(e), wh_free(d);
      wh_plan_destroy(t);
    }
  EXPECT_SAY(flip_ok && rejected > 0, "%s: %d byte flips: %d refused with a status and message, %d still decode to a plan "
        "that explains, dumps and simulates", what, flips, rejected, valid);
  free(b1);
  remove(bad);
}

static void test_round_trip(const void *arg) {
  (void)arg;
  printf("-- save / load\n");
  wh_graph *g = bench_model("gpt2-124m");
  const char *kinds[] = {"V100-32GB", "P100-16GB"};
  wh_cluster *c = catalogue_cluster(2, kinds, (int[]){4, 4});
  wh_plan_options o = WH_PLAN_OPTIONS_INIT;
  o.global_batch = 32;
  o.stages = 1;
  wh_plan *p = plan(g, c, &o, "dp");
  round_trip(p, c, "DP", 1);
  wh_plan_destroy(p);
  o.stages = 8;
  o.schedule = WH_SCHEDULE_GPIPE;
  p = plan(g, c, &o, "pp");
  round_trip(p, c, "PP (8 stages, GPipe)", 0);
  wh_plan_destroy(p);
  o.stages = 2;
  o.schedule = WH_SCHEDULE_AUTO;
  o.zero1 = 1;
  p = plan(g, c, &o, "hybrid");
  round_trip(p, c, "hybrid (2 stages x 4, ZeRO-1)", 1);
  wh_plan_destroy(p);
  /* tensor parallel, recompute, pinned */
  mlp_cfg mc = {.blocks = 4, .per_block = 1, .width = 1024, .split = 2};
  wh_graph *gt = mlp(&mc);
  wh_plan_layout l = WH_PLAN_LAYOUT_INIT;
  l.stages = 2;
  l.tp = 2;
  l.recompute = 1;
  l.micro_batches = 4;
  if (wh_plan_create_pinned(ctx, gt, c, 32, &l, &p) != WH_OK) die("pinned tp", WH_ERR_INTERNAL);
  round_trip(p, c, "pinned tp 2, recompute", 0);
  wh_plan_destroy(p);
  wh_graph_destroy(gt);

  /* errors */
  char path[128], gpath[128];
  tmp_path(path, sizeof path, "missing.pb");
  p = (wh_plan *)&o;
  wh_status st = wh_plan_load(ctx, path, &p);
  EXPECT_SAY(st == WH_ERR_IO && p == NULL && strstr(wh_last_error(ctx), "missing.pb"), "loading a missing file: %s: %s",
        wh_status_str(st), wh_last_error(ctx));
  tmp_path(gpath, sizeof gpath, "graph.pb");
  st = wh_graph_save(g, gpath);
  st = st == WH_OK ? wh_plan_load(ctx, gpath, &p) : st;
  EXPECT_SAY(st == WH_ERR_CORRUPT && p == NULL, "loading a saved graph as a plan: %s: %.100s", wh_status_str(st),
        wh_last_error(ctx));
  remove(gpath);
  o.stages = 1;
  o.zero1 = 0;
  p = plan(g, c, &o, "dp");
  tmp_path(path, sizeof path, "no/such/dir/plan.pb");
  st = wh_plan_save(p, path);
  EXPECT_SAY(st == WH_ERR_IO && *wh_last_error(ctx), "saving into a missing directory: %s", wh_status_str(st));
  EXPECT_SAY(wh_plan_save(NULL, path) == WH_ERR_INVALID_ARGUMENT && wh_plan_save(p, NULL) == WH_ERR_INVALID_ARGUMENT &&
            wh_plan_save(p, "") == WH_ERR_INVALID_ARGUMENT && wh_plan_load(NULL, path, &p) == WH_ERR_INVALID_ARGUMENT &&
            wh_plan_load(ctx, NULL, &p) == WH_ERR_INVALID_ARGUMENT &&
            wh_plan_load(ctx, path, NULL) == WH_ERR_INVALID_ARGUMENT,
        "NULL arguments are refused");
  wh_plan_destroy(p);
  tmp_path(path, sizeof path, "plan.pb");
  remove(path);
  wh_cluster_destroy(c);
  wh_graph_destroy(g);
}

/* ---------------------------------------------------------------- measured profiles */

static double pinned_step(const wh_graph *g, const wh_cluster *c, int64_t batch) {
  wh_plan_layout l = WH_PLAN_LAYOUT_INIT;
  wh_plan *p;
  wh_status st = wh_plan_create_pinned(ctx, g, c, batch, &l, &p);
  if (st != WH_OK) die("pinned plan", st);
  double t = wh_plan_step_time(p);
  wh_plan_destroy(p);
  return t;
}

/* The roofline's milliseconds per run for g's nodes of op on device d (what a profile compares to). */
static double roofline_ms(const wh_graph *g, const wh__device *d, int64_t batch, int op) {
  wh__device plain = *d;
  memset(plain.op_scale, 0, sizeof plain.op_scale);
  double t = 0;
  for (int i = 0; i < g->n_nodes; i++)
    if (g->nodes[i].op == op) {
      wh__cost c;
      wh__ops[op]->cost(g, &g->nodes[i], batch, &c);
      t += wh__node_time(&plain, op, c.flops, c.bytes_read + c.bytes_written, 1, 0);
    }
  return 1e3 * t;
}

static void test_profile(const void *arg) {
  (void)arg;
  mlp_cfg mc = {2, 2, 64, 0, 0, 0, 0, 0, 0};
  wh_graph *g = mlp(&mc);
  const int64_t batch = 32;
  wh_cluster *c = cluster_new();
  if (wh_cluster_add(c, "CPU", 0, 2) != WH_OK || wh_cluster_add(c, "V100-32GB", 1, 1) != WH_OK) die("cluster", WH_ERR_INTERNAL);
  double t0 = pinned_step(g, c, batch), mm = roofline_ms(g, &c->dev[0], batch, WH_OP_MATMUL), t[4];
  double relu = roofline_ms(g, &c->dev[0], batch, WH_OP_RELU);
  /* matmul measured at k times the roofline: the prediction grows linearly in k, and k = 1 is the
   * roofline itself */
  for (int k = 1; k <= 3; k++) {
    char rep[256];
    snprintf(rep, sizeof rep, "profile: 1 run on the CPU, %.3f ms per run in kernels (each node timed alone)\n"
                              "  op                        calls         ms   share\n"
                              "  matmul                     12.0 %10.9f   60.0%%\n  relu 4.0 %.9f 1.0%%\n",
             k * mm, k * mm, relu);
    wh_status st = wh_cluster_set_profile(c, 0, g, batch, rep);
    EXPECT_SAY(st == WH_OK, "profile with matmul at %d x the roofline: %s", k, wh_last_error(ctx));
    t[k] = pinned_step(g, c, batch);
  }
  EXPECT_SAY(fabs(t[1] - t0) <= 1e-6 * t0 && t[2] > t[1] && fabs((t[3] - t[2]) - (t[2] - t[1])) <= 1e-6 * t0,
        "a measured matmul time moves the prediction linearly (%.6g, %.6g, %.6g, %.6g)", t0, t[1], t[2], t[3]);
  EXPECT_SAY(c->dev[1].op_scale[WH_OP_MATMUL] == c->dev[0].op_scale[WH_OP_MATMUL] && c->dev[2].op_scale[WH_OP_MATMUL] == 0,
        "the profile reaches every device of the profiled kind and no other");
  /* the file keeps it */
  char path[128];
  tmp_path(path, sizeof path, "profiled.json");
  wh_cluster *back = NULL;
  EXPECT_SAY(wh_cluster_save(c, path) == WH_OK && wh_cluster_load(ctx, path, &back) == WH_OK &&
            back->dev[0].op_scale[WH_OP_MATMUL] == c->dev[0].op_scale[WH_OP_MATMUL] &&
            back->dev[0].op_scale[WH_OP_RELU] == c->dev[0].op_scale[WH_OP_RELU] &&
            fabs(pinned_step(g, back, batch) - t[3]) <= 1e-12 * t[3],
        "a profiled cluster saves and loads back to the same predictions: %s", wh_last_error(ctx));
  wh_cluster_destroy(back);
  remove(path);
  /* what is refused, by name */
  EXPECT_SAY(wh_cluster_set_profile(c, 0, g, batch, "matmul 1 2 3%\n") == WH_ERR_INVALID_ARGUMENT &&
            strstr(wh_last_error(ctx), "profile:"),
        "a report without its header is refused: %s", wh_last_error(ctx));
  EXPECT_SAY(wh_cluster_set_profile(c, 0, g, batch, "profile: x\n  warp_drive 1 2.0 3.0%\n") == WH_ERR_INVALID_ARGUMENT &&
            strstr(wh_last_error(ctx), "warp_drive"),
        "an unknown op is refused by name: %s", wh_last_error(ctx));
  EXPECT_SAY(wh_cluster_set_profile(c, 0, g, batch, "profile: x\n  conv2d 1 2.0 3.0%\n") == WH_ERR_INVALID_ARGUMENT &&
            strstr(wh_last_error(ctx), "no op"),
        "a report about none of the graph's ops is refused: %s", wh_last_error(ctx));
  EXPECT_SAY(wh_cluster_set_profile(c, 7, g, batch, "profile: x\n") == WH_ERR_INVALID_ARGUMENT &&
            strstr(wh_last_error(ctx), "device"),
        "a device out of range is refused: %s", wh_last_error(ctx));
  /* a real profile: this machine's CPU session of the same graph, then a plan for one CPU device
   * predicts the step the profile measured (the roofline replaced op by op) */
  wh_cluster *one = cluster_new();
  if (wh_cluster_add(one, "CPU", 0, 1) != WH_OK) die("cluster", WH_ERR_INTERNAL);
  wh_session_options so = WH_SESSION_OPTIONS_INIT;
  so.batch = batch;
  wh_session *s;
  if (wh_session_create(ctx, g, &so, &s) != WH_OK) die("session", WH_ERR_INTERNAL);
  float *x = calloc((size_t)batch * 64, sizeof(float));
  for (int i = 0; i < batch * 64; i++) x[i] = (float)((i * 7) % 13) / 13.0f;
  wh_session_feed(s, wh_graph_find(g, "x"), x, sizeof(float) * (size_t)batch * 64);
  wh_session_feed(s, wh_graph_find(g, "y"), x, sizeof(float) * (size_t)batch * 64);
  wh_session_step(s);
  wh_session_profile(s, 1);
  for (int i = 0; i < 5; i++) wh_session_step(s);
  char *rep = NULL;
  double total = 0;
  EXPECT_SAY(wh_session_profile_report(s, &rep) == WH_OK && sscanf(rep, "profile: %*d runs on the CPU, %lf ms", &total) == 1,
        "a profile report");
  EXPECT_SAY(wh_cluster_set_profile(one, 0, g, batch, rep) == WH_OK, "the session's own report is taken: %s", wh_last_error(ctx));
  double pred = 1e3 * pinned_step(g, one, batch);
  EXPECT_SAY(fabs(pred / total - 1) < 0.25, "profiled prediction %.3f ms against the %.3f ms the profile measured", pred, total);
  wh_free(rep);
  free(x);
  wh_session_destroy(s);
  wh_cluster_destroy(one);
  wh_cluster_destroy(c);
  wh_graph_destroy(g);
}

/* zero1 = -1: the search shards the optimizer state when that alone fits, and not otherwise. */
static void test_zero1_search(const void *arg) {
  (void)arg;
  mlp_cfg mc = {2, 2, 1024, 0, 0, 0, 0, 0, 0};
  wh_graph *g = mlp(&mc);
  double P = 4.0 * 1024 * 1024 * 4; /* parameter bytes: plain DP holds 4P (weights, gradients, AdamW m and v) */
  for (int tight = 0; tight < 2; tight++) {
    wh_cluster *c = cluster_new();
    add_custom(c, "box", 10e12, 256e6 + (tight ? 3.3 * P : 16 * P), 0, 4); /* 256 MB: the runtime reserve */
    wh_plan_options o = WH_PLAN_OPTIONS_INIT;
    o.global_batch = 8;
    o.stages = 1;
    o.allow_tp = 0;
    o.allow_recompute = 0;
    o.zero1 = -1;
    wh_plan *p = NULL;
    wh_status st = wh_plan_create(ctx, g, c, &o, &p);
    EXPECT_SAY(st == WH_OK && p && p->zero1 == tight, "%s memory: the search %s ZeRO-1 (%s)", tight ? "tight" : "ample",
          tight ? "chooses" : "leaves out", st == WH_OK ? "planned" : wh_last_error(ctx));
    if (p && tight) {
      char *ex = NULL;
      EXPECT_SAY(wh_plan_explain(p, &ex) == WH_OK && strstr(ex, "ZeRO-1"), "the explanation says ZeRO-1");
      wh_free(ex);
    }
    wh_plan_destroy(p);
    o.zero1 = 0;
    p = NULL;
    st = wh_plan_create(ctx, g, c, &o, &p);
    EXPECT_SAY(tight ? st == WH_ERR_OUT_OF_MEMORY : st == WH_OK && p->zero1 == 0, "zero1 = 0 never shards (%s)",
          wh_status_str(st));
    wh_plan_destroy(p);
    wh_cluster_destroy(c);
  }
  wh_graph_destroy(g);
}

/* Mixed precision is costed as the precision pass runs it: the stored activations halve exactly
 * (a cast pair for each), products take the devices' 16-bit rates - so a V100 (125 bf16 / 15.7 f32
 * TFLOP/s) pulls further ahead of a P100 (21.2 / 10.6) and gets a larger share, and the predicted
 * step drops - while on a CPU (its kernels compute in fp32: the bf16 rate is the f32 one) only the
 * casts' traffic is added. The plan carries the precision through a file; fp16, whose loss scaling
 * runs without pipelines and ZeRO-1, is refused with stages and never given them by the search. */
static void test_mixed(const void *arg) {
  (void)arg;
  wh_graph *g = bench_model("gpt2-124m");
  wh__model m32, mb;
  char msg[256];
  if (wh__model_from_graph(g, WH_F32, &m32, msg, sizeof msg) != WH_OK ||
      wh__model_from_graph(g, WH_BF16, &mb, msg, sizeof msg) != WH_OK)
    die(msg, WH_ERR_INTERNAL);
  double a32 = 0, ab = 0;
  for (int s = 0; s < m32.n; s++) a32 += m32.seg[s].act_bytes, ab += mb.seg[s].act_bytes;
  int casts = 0, halves = 0, products = 0;
  for (int i = 0; i < mb.n_items; i++) {
    casts += mb.item[i].op == WH_OP_CAST;
    halves += mb.item[i].half;
    products += mb.item[i].op == WH_OP_MATMUL || mb.item[i].op == WH_OP_ATTENTION;
  }
  EXPECT_SAY(a32 > 0 && fabs(2 * ab - a32) <= 1e-9 * a32, "bf16 stores half the activation bytes: %.4g -> %.4g per sample",
             a32, ab);
  EXPECT_SAY(casts > 0 && casts % 2 == 0 && mb.n_items == m32.n_items + casts && halves >= products && products > 0,
             "a cast pair per stored activation (%d casts) and every product at the 16-bit rate (%d of %d)", casts,
             halves, products);
  wh__model_free(&m32), wh__model_free(&mb);

  const char *kinds[] = {"V100-32GB", "P100-16GB"};
  int counts[] = {1, 1};
  wh_cluster *c = catalogue_cluster(2, kinds, counts);
  wh_plan *p[2] = {NULL, NULL};
  int64_t sh[2][2];
  for (int k = 0; k < 2; k++) {
    wh_plan_options o = WH_PLAN_OPTIONS_INIT;
    o.global_batch = 16;
    o.stages = 1;
    o.allow_tp = 0;
    o.mixed = k ? WH_BF16 : WH_F32;
    wh_status st = wh_plan_create(ctx, g, c, &o, &p[k]);
    if (st != WH_OK) die("plan", st);
    wh_plan_shares(p[k], sh[k], 2);
    vet(p[k], c, k ? "bf16 plan" : "fp32 plan");
  }
  double r32 = (double)sh[0][0] / (double)sh[0][1], rb = (double)sh[1][0] / (double)sh[1][1];
  EXPECT_SAY(rb > r32 && wh_plan_step_time(p[1]) < 0.8 * wh_plan_step_time(p[0]) && wh_plan_mixed(p[1]) == WH_BF16 &&
                 wh_plan_mixed(p[0]) == WH_F32,
             "V100 + P100: bf16 shares %lld:%lld (fp32 %lld:%lld), step %.4f s (fp32 %.4f s)", (long long)sh[1][0],
             (long long)sh[1][1], (long long)sh[0][0], (long long)sh[0][1], wh_plan_step_time(p[1]),
             wh_plan_step_time(p[0]));
  char *ex = NULL;
  EXPECT_SAY(wh_plan_explain(p[1], &ex) == WH_OK && strstr(ex, "bf16 mixed precision"), "the explanation names bf16");
  wh_free(ex);
  char path[128];
  tmp_path(path, sizeof path, "mixed.plan");
  wh_plan *back = NULL;
  EXPECT_SAY(wh_plan_save(p[1], path) == WH_OK && wh_plan_load(ctx, path, &back) == WH_OK &&
                 wh_plan_mixed(back) == WH_BF16,
             "a saved bf16 plan loads as bf16");
  wh_plan_destroy(back);
  unlink(path);
  wh_plan_destroy(p[0]), wh_plan_destroy(p[1]);
  wh_cluster_destroy(c);

  /* a CPU: no 16-bit rate of its own */
  c = cluster_new();
  add_custom(c, "cpu", 1e12, 64e9, 0, 1);
  double t[2], peak[2];
  for (int k = 0; k < 2; k++) {
    wh_plan_layout l = WH_PLAN_LAYOUT_INIT;
    l.mixed = k ? WH_BF16 : WH_F32;
    wh_plan *q = NULL;
    wh_status st = wh_plan_create_pinned(ctx, g, c, 8, &l, &q);
    if (st != WH_OK) die("pinned", st);
    t[k] = wh_plan_step_time(q);
    peak[k] = q->st[0].mem_peak;
    EXPECT_SAY(wh_plan_mixed(q) == l.mixed, "a pinned plan keeps its precision");
    wh_plan_destroy(q);
  }
  EXPECT_SAY(t[1] > t[0] && t[1] < 1.2 * t[0], "on a CPU bf16 only adds the casts: %.4f s against %.4f s", t[1], t[0]);
  /* 8 samples: what they store for backward drops by 8 x ab (the rest - weights, state, the
   * transient working set - stays) */
  EXPECT_SAY(fabs((peak[0] - peak[1]) - 8 * ab) <= 0.01 * 8 * ab, "bf16's predicted peak is %.3f GiB below fp32's (%.3f GiB)",
             (peak[0] - peak[1]) / 1073741824.0, peak[0] / 1073741824.0);
  wh_cluster_destroy(c);

  /* fp16: four devices, no stages */
  const char *k4[] = {"V100-16GB"};
  int n4[] = {4};
  c = catalogue_cluster(1, k4, n4);
  wh_plan_options o = WH_PLAN_OPTIONS_INIT;
  o.global_batch = 16;
  o.mixed = WH_F16;
  o.stages = 2;
  wh_plan *q = NULL;
  wh_status st = wh_plan_create(ctx, g, c, &o, &q);
  EXPECT_SAY(st == WH_ERR_UNSUPPORTED && !q && strstr(wh_last_error(ctx), "fp16"), "fp16 with 2 stages is refused: %s",
             wh_last_error(ctx));
  o.stages = 0;
  o.zero1 = -1;
  st = wh_plan_create(ctx, g, c, &o, &q);
  EXPECT_SAY(st == WH_OK && wh_plan_num_stages(q) == 1 && !wh_plan_zero1(q) && wh_plan_mixed(q) == WH_F16,
             "the fp16 search keeps one stage without ZeRO-1 (%s)", st == WH_OK ? "planned" : wh_last_error(ctx));
  wh_plan_destroy(q);
  wh_cluster_destroy(c);
  wh_graph_destroy(g);
}

static int setup(int argc, char **argv) {
  (void)argc, (void)argv;
  if (wh_ctx_create(&ctx, NULL) != WH_OK) return 2;
  snprintf(tmpdir, sizeof tmpdir, "/tmp/wh_test_planner_XXXXXX");
  if (!mkdtemp(tmpdir)) {
    perror("mkdtemp");
    return 2;
  }
  return 0;
}

static void teardown(void) {
  rmdir(tmpdir);
  wh_ctx_destroy(ctx);
}

static const wt_case cases[] = {
    {"shares", test_shares, NULL},
    {"memory_cap", test_memory_cap, NULL},
    {"too_large", test_too_large, NULL},
    {"memory_edges", test_memory_edges, NULL},
    {"hints", test_hints, NULL},
    {"pinned", test_pinned, NULL},
    {"simulator", test_simulator, NULL},
    {"round_trip", test_round_trip, NULL},
    {"profile", test_profile, NULL},
    {"zero1_search", test_zero1_search, NULL},
    {"mixed", test_mixed, NULL},
};

int main(int argc, char **argv) {
  const wt_suite suite = {"planner", setup, teardown, NULL, 0};
  return wt_main(&suite, cases, WT_COUNT(cases), argc, argv);
}
