/* test_search.c - every plan the search emits runs: random small clusters (mixed device kinds,
 * one or two nodes) and random models (MLPs and GPTs of random sizes, heads that may not divide),
 * planned with every choice left to the search (stages, micro-batches, schedule, operator
 * sharding, recomputation, ZeRO-1); each plan runs one training step on this job's ranks and its
 * loss equals the one-process step's within 1e-5. No plan may be refused. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scaffold.h"

#define TRIALS 24

static uint64_t rng_state;
static uint32_t rnd(void) { /* the same stream on every rank: the plans must agree */
  rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
  return (uint32_t)(rng_state >> 33);
}
static int pick(int n) { return (int)(rnd() % (uint32_t)n); }

typedef struct {
  wh_graph *g;
  wh_value x, y, loss;
  int gpt, in, t, vocab;
  int64_t batch;
} rmodel;

static wh_value lin(wh_graph *g, wh_value x, int in, int out, int id) {
  char w[24], b[24];
  snprintf(w, sizeof w, "l%d.w", id);
  snprintf(b, sizeof b, "l%d.b", id);
  wh_value wv = wh_param(g, w, WH_F32, 2, (int64_t[]){out, in}, WH_INIT(WH_INIT_NORMAL, 0, 0.2f, 10 + (uint64_t)id));
  wh_value bv = wh_param(g, b, WH_F32, 1, (int64_t[]){out}, WH_INIT(WH_INIT_UNIFORM, -0.1f, 0.1f, 40 + (uint64_t)id));
  return wh_bias_add(g, wh_matmul(g, x, wv, 0, 1), bv, -1);
}

static rmodel build(void) {
  rmodel m;
  memset(&m, 0, sizeof m);
  CHECK(wh_graph_create(ctx, &m.g));
  wh_graph *g = m.g;
  m.gpt = pick(2);
  m.batch = (int64_t[]){8, 12, 16, 24}[pick(4)];
  if (!m.gpt) {
    int depth = 2 + pick(4), width = (int[]){8, 16, 24, 32}[pick(4)];
    m.in = 12, m.vocab = 6;
    m.x = wh_input(g, "x", WH_F32, 2, (int64_t[]){WH_BATCH, m.in});
    m.y = wh_input(g, "y", WH_I32, 1, (int64_t[]){WH_BATCH});
    wh_value h = m.x;
    int w0 = m.in;
    for (int l = 0; l < depth; l++) {
      h = lin(g, h, w0, width, l);
      h = l % 2 ? wh_relu(g, h) : wh_gelu(g, h);
      w0 = width;
    }
    m.loss = wh_cross_entropy(g, lin(g, h, w0, m.vocab, 99), m.y);
  } else {
    int layers = 1 + pick(3), heads = (int[]){1, 2, 3, 4}[pick(4)], hd = (int[]){4, 8}[pick(2)];
    int c = heads * hd;
    m.t = 8, m.vocab = 16;
    m.x = wh_input(g, "tokens", WH_I32, 2, (int64_t[]){WH_BATCH, m.t});
    m.y = wh_input(g, "targets", WH_I32, 2, (int64_t[]){WH_BATCH, m.t});
    wh_value wte = wh_param(g, "wte", WH_F32, 2, (int64_t[]){m.vocab, c}, WH_INIT(WH_INIT_NORMAL, 0, 0.1f, 1));
    wh_value wpe = wh_param(g, "wpe", WH_F32, 2, (int64_t[]){m.t, c}, WH_INIT(WH_INIT_NORMAL, 0, 0.1f, 2));
    wh_value h = wh_add(g, wh_embedding(g, wte, m.x), wpe);
    for (int l = 0; l < layers; l++) {
      char nm[24];
      snprintf(nm, sizeof nm, "ln%d.g", l);
      wh_value lg = wh_param(g, nm, WH_F32, 1, (int64_t[]){c}, WH_INIT(WH_INIT_ONES, 0, 0, 0));
      snprintf(nm, sizeof nm, "ln%d.b", l);
      wh_value lb = wh_param(g, nm, WH_F32, 1, (int64_t[]){c}, WH_INIT(WH_INIT_ZEROS, 0, 0, 0));
      wh_value a = wh_layernorm(g, h, lg, lb, 1e-5f);
      snprintf(nm, sizeof nm, "qkv%d.w", l);
      wh_value wq = wh_param(g, nm, WH_F32, 2, (int64_t[]){3 * c, c}, WH_INIT(WH_INIT_NORMAL, 0, 0.1f, 3 + (uint64_t)l));
      a = wh_attention(g, wh_matmul(g, a, wq, 0, 1), heads);
      h = wh_add(g, h, lin(g, a, c, c, 10 * l + 1));
      wh_value f = wh_gelu(g, lin(g, h, c, 4 * c, 10 * l + 2));
      h = wh_add(g, h, lin(g, f, 4 * c, c, 10 * l + 3));
    }
    m.loss = wh_cross_entropy(g, wh_matmul(g, h, wte, 0, 1), m.y);
  }
  CHECK(wh_backward(g, m.loss));
  wh_adamw_options o = WH_ADAMW_OPTIONS_INIT;
  o.clip_norm = 1.0f;
  CHECK(wh_optimizer_adamw(g, &o));
  EXPECT(wh_graph_status(g) == WH_OK, "random model: %s", wh_graph_error(g));
  return m;
}

static void feed(const rmodel *m, wh_session *s) {
  int64_t B_ = m->batch;
  if (!m->gpt) {
    float *x = malloc(sizeof(float) * (size_t)(B_ * m->in));
    int32_t *y = malloc(sizeof(int32_t) * (size_t)B_);
    for (int64_t i = 0; i < B_ * m->in; i++) x[i] = (float)((i * 7) % 23) / 11.0f - 1.0f;
    for (int64_t i = 0; i < B_; i++) y[i] = (int32_t)((i * 3) % m->vocab);
    CHECK(wh_session_feed(s, m->x, x, sizeof(float) * (size_t)(B_ * m->in)));
    CHECK(wh_session_feed(s, m->y, y, sizeof(int32_t) * (size_t)B_));
    CHECK(wh_session_step(s));
    free(x), free(y);
  } else {
    int32_t *x = malloc(sizeof(int32_t) * (size_t)(B_ * m->t)), *y = malloc(sizeof(int32_t) * (size_t)(B_ * m->t));
    for (int64_t i = 0; i < B_ * m->t; i++) x[i] = (int32_t)((i * 5) % m->vocab), y[i] = (int32_t)((i * 5 + 1) % m->vocab);
    CHECK(wh_session_feed(s, m->x, x, sizeof(int32_t) * (size_t)(B_ * m->t)));
    CHECK(wh_session_feed(s, m->y, y, sizeof(int32_t) * (size_t)(B_ * m->t)));
    CHECK(wh_session_step(s));
    free(x), free(y);
  }
}

static const char *const kinds[] = {"V100-32GB", "P100-16GB", "A100-40GB", "H100", "T4", "CPU"};

static void trials(const void *arg) {
  (void)arg;
  int n = nranks, refused = 0, ran = 0, layouts[4] = {0};
  double worst = 0;
  rng_state = 0x5eedu + (uint64_t)n;
  for (int t = 0; t < TRIALS; t++) {
    rmodel m = build();
    /* the one-process step */
    wh_session_options so = WH_SESSION_OPTIONS_INIT;
    so.batch = m.batch;
    wh_session *ref;
    CHECK(wh_session_create(ctx, m.g, &so, &ref));
    feed(&m, ref);
    float rl, dl;
    CHECK(wh_session_fetch(ref, m.loss, &rl, sizeof rl));
    wh_session_destroy(ref);
    /* a random cluster of this job's size: up to two kinds, one or two nodes */
    wh_cluster *cl;
    CHECK(wh_cluster_create(ctx, &cl));
    int k1 = pick(6), k2 = pick(6), split = n > 1 ? 1 + pick(n - 1) : n, nodes = 1 + pick(2);
    if (split < n) {
      CHECK(wh_cluster_add(cl, kinds[k1], 0, split));
      CHECK(wh_cluster_add(cl, kinds[k2], nodes - 1, n - split));
    } else {
      CHECK(wh_cluster_add(cl, kinds[k1], 0, n));
    }
    wh_plan_options po = WH_PLAN_OPTIONS_INIT;
    po.global_batch = m.batch;
    po.zero1 = -1;
    po.micro_batches = pick(3) ? 0 : (int)(m.batch / 4);
    wh_plan *p = NULL;
    char desc[160];
    snprintf(desc, sizeof desc, "trial %d: %s, batch %lld, %d x %s + %d x %s", t, m.gpt ? "gpt" : "mlp",
             (long long)m.batch, split, kinds[k1], n - split, kinds[k2]);
    wh_status st = wh_plan_create(ctx, m.g, cl, &po, &p);
    EXPECT(st == WH_OK, "%s: no plan: %s", desc, wh_last_error(ctx));
    if (st == WH_OK) {
      so.plan = p;
      so.comm = comm;
      wh_session *s = NULL;
      st = wh_session_create(ctx, m.g, &so, &s);
      if (st != WH_OK) {
        char *ex = NULL;
        wh_plan_explain(p, &ex);
        EXPECT(0, "%s: the plan was refused: %s\n%s", desc, wh_last_error(ctx), ex ? ex : "");
        wh_free(ex);
        refused++;
      } else {
        feed(&m, s);
        CHECK(wh_session_fetch(s, m.loss, &dl, sizeof dl));
        double e = fabs((double)dl - rl) / fmax(fabs(rl), 1e-30);
        worst = fmax(worst, e);
        EXPECT(e <= 1e-5, "%s: loss %.7g, one process %.7g (rel err %.3g)", desc, dl, rl, e);
        int stages = wh_plan_num_stages(p), tp = wh_plan_tp(p);
        layouts[stages > 1 ? (tp > 1 ? 3 : 2) : tp > 1 ? 1 : 0]++;
        ran++;
        wh_session_destroy(s);
      }
      wh_plan_destroy(p);
    }
    wh_cluster_destroy(cl);
    wh_graph_destroy(m.g);
  }
  EXPECT(refused == 0, "%d of %d plans refused", refused, TRIALS);
  if (wt_rank == 0)
    printf("search: %d random plans ran on %d ranks (%d DP, %d DP x TP, %d with a pipeline, %d PP x TP), %d refused, "
           "worst loss rel err %.2e\n",
           ran, n, layouts[0], layouts[1], layouts[2], layouts[3], refused, worst);
}

static const wt_case cases[] = {{"random_plans", trials, NULL}};

int main(int argc, char **argv) { return sc_main("search", cases, WT_COUNT(cases), argc, argv); }
