/* test_dp.c - the same model trained on one process, data-parallel over the ranks of this mpirun,
 * and pipelined over them, gives the same losses at every step and the same parameters at the
 * end: equal shares, unequal shares, gradient accumulation over micro-batches, a replica with no
 * samples; one stage per rank with GPipe and 1F1B at 4 micro-batches (the GPT's tied embedding
 * spans the first and last stage); an MLP and a small GPT, 20 AdamW steps with clipping. Each
 * rank also runs the single-process reference itself. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "whale.h"
#include "../common/expect.h"

#define DIMS(...) (int64_t[]){__VA_ARGS__}
#define STEPS 20
#define B 24

static wh_ctx *ctx;
static int zero1_; /* the data-parallel cases shard the optimizer state (ZeRO-1) */

#define CHECK(call)                                                                          \
  do {                                                                                       \
    wh_status s_ = (call);                                                                   \
    if (s_ != WH_OK) {                                                                       \
      printf("rank %d: %s: %s: %s\n", rank_, #call, wh_status_str(s_), wh_last_error(ctx)); \
      exit(1);                                                                               \
    }                                                                                        \
  } while (0)

typedef struct {
  wh_graph *g;
  wh_value x, y, loss;
  wh_value shift; /* the MLP's input without a batch axis (fed whole), or WH_NONE */
  int gpt;
} model;

static wh_value lin(wh_graph *g, wh_value x, const char *nm, int in, int out, uint64_t seed) {
  char w[32], b[32];
  snprintf(w, sizeof w, "%s.w", nm);
  snprintf(b, sizeof b, "%s.b", nm);
  return wh_bias_add(g,
                     wh_matmul(g, x, wh_param(g, w, WH_F32, 2, DIMS(out, in), WH_INIT(WH_INIT_NORMAL, 0, 0.2f, seed)),
                               0, 1),
                     wh_param(g, b, WH_F32, 1, DIMS(out), WH_INIT(WH_INIT_UNIFORM, -0.1f, 0.1f, seed + 1)), -1);
}

static model build(int gpt) {
  model m = {0};
  m.gpt = gpt;
  m.shift = WH_NONE;
  CHECK(wh_graph_create(ctx, &m.g));
  wh_graph *g = m.g;
  if (gpt == 2) {
    /* a weight built from two parameters: the gradient of W0 is the very value backward passes on
     * to the tanh branch, so scaling or reducing it in place would corrupt Q's gradient */
    m.x = wh_input(g, "x", WH_F32, 2, DIMS(WH_BATCH, 16));
    m.y = wh_input(g, "y", WH_I32, 1, DIMS(WH_BATCH));
    wh_value w0 = wh_param(g, "w0", WH_F32, 2, DIMS(5, 16), WH_INIT(WH_INIT_NORMAL, 0, 0.2f, 61));
    wh_value q = wh_param(g, "q", WH_F32, 2, DIMS(5, 16), WH_INIT(WH_INIT_NORMAL, 0, 0.2f, 62));
    wh_value w = wh_add(g, w0, wh_tanh(g, q));
    m.loss = wh_cross_entropy(g, wh_matmul(g, m.x, w, 0, 1), m.y);
  } else if (gpt == 3) {
    /* two parameters with one gradient value (the add passes it on to both) */
    m.x = wh_input(g, "x", WH_F32, 2, DIMS(WH_BATCH, 16));
    m.y = wh_input(g, "y", WH_I32, 1, DIMS(WH_BATCH));
    wh_value p1 = wh_param(g, "p1", WH_F32, 2, DIMS(5, 16), WH_INIT(WH_INIT_NORMAL, 0, 0.2f, 71));
    wh_value p2 = wh_param(g, "p2", WH_F32, 2, DIMS(5, 16), WH_INIT(WH_INIT_NORMAL, 0, 0.2f, 72));
    m.loss = wh_cross_entropy(g, wh_matmul(g, m.x, wh_add(g, p1, p2), 0, 1), m.y);
  } else if (gpt == 4) {
    /* the MLP with a penalty on its first bias through a softmax over it: the bias is split with
     * its column-split product, so the softmax (which needs it whole) gathers it, and the two
     * gradients meet as a split one and a whole one */
    m.x = wh_input(g, "x", WH_F32, 2, DIMS(WH_BATCH, 16));
    m.y = wh_input(g, "y", WH_I32, 1, DIMS(WH_BATCH));
    wh_value h = wh_tanh(g, lin(g, m.x, "l1", 16, 32, 1));
    h = wh_relu(g, lin(g, h, "l2", 32, 32, 3));
    wh_value b1 = WH_NONE;
    for (int i = 0; i < wh_graph_num_params(g); i++)
      if (!strcmp(wh_value_name(g, wh_graph_param(g, i)), "l1.b")) b1 = wh_graph_param(g, i);
    wh_value pen = wh_sum(g, wh_mul(g, wh_softmax(g, b1), b1), 0, NULL, 0);
    m.loss = wh_add(g, wh_cross_entropy(g, lin(g, h, "l3", 32, 5, 5), m.y), wh_scale(g, pen, 0.5f));
  } else if (!gpt) {
    m.x = wh_input(g, "x", WH_F32, 2, DIMS(WH_BATCH, 16));
    m.y = wh_input(g, "y", WH_I32, 1, DIMS(WH_BATCH));
    m.shift = wh_input(g, "shift", WH_F32, 1, DIMS(32));
    wh_value h = wh_tanh(g, wh_bias_add(g, lin(g, m.x, "l1", 16, 32, 1), m.shift, -1));
    /* the labels' view is made early and read at the end: in a pipeline it spans the stages */
    wh_value yy = wh_reshape(g, m.y, 1, DIMS(WH_BATCH));
    h = wh_relu(g, lin(g, h, "l2", 32, 32, 3));
    m.loss = wh_cross_entropy(g, lin(g, h, "l3", 32, 5, 5), yy);
  } else {
    const int T = 8, C = 16, V = 32;
    m.x = wh_input(g, "tokens", WH_I32, 2, DIMS(WH_BATCH, T));
    m.y = wh_input(g, "targets", WH_I32, 2, DIMS(WH_BATCH, T));
    wh_value wte = wh_param(g, "wte", WH_F32, 2, DIMS(V, C), WH_INIT(WH_INIT_NORMAL, 0, 0.3f, 11));
    wh_value x = wh_add(g, wh_embedding(g, wte, m.x), wh_param(g, "wpe", WH_F32, 2, DIMS(T, C),
                                                                WH_INIT(WH_INIT_NORMAL, 0, 0.3f, 12)));
    for (int l = 0; l < 2; l++) {
      char nm[32];
      snprintf(nm, sizeof nm, "ln%d.g", l);
      wh_value gm = wh_param(g, nm, WH_F32, 1, DIMS(C), WH_INIT(WH_INIT_ONES, 0, 0, 0));
      snprintf(nm, sizeof nm, "ln%d.b", l);
      wh_value bt = wh_param(g, nm, WH_F32, 1, DIMS(C), WH_INIT(WH_INIT_ZEROS, 0, 0, 0));
      wh_value h = wh_layernorm(g, x, gm, bt, 1e-5f);
      /* no qkv bias: its key third has an exactly-zero gradient (softmax ignores a per-query
       * shift), which AdamW turns into rounding-noise drift that no two summation orders share */
      snprintf(nm, sizeof nm, "qkv%d.w", l);
      wh_value wq = wh_param(g, nm, WH_F32, 2, DIMS(3 * C, C), WH_INIT(WH_INIT_NORMAL, 0, 0.2f, 20 + (uint64_t)l));
      wh_value a = wh_attention(g, wh_matmul(g, h, wq, 0, 1), 4);
      snprintf(nm, sizeof nm, "proj%d", l);
      x = wh_add(g, x, lin(g, a, nm, C, C, 30 + (uint64_t)l));
      snprintf(nm, sizeof nm, "fc%d", l);
      wh_value f = wh_gelu(g, lin(g, x, nm, C, 4 * C, 40 + (uint64_t)l));
      snprintf(nm, sizeof nm, "fcp%d", l);
      x = wh_add(g, x, lin(g, f, nm, 4 * C, C, 50 + (uint64_t)l));
    }
    m.loss = wh_cross_entropy(g, wh_matmul(g, x, wte, 0, 1), m.y);
  }
  CHECK(wh_graph_status(g));
  CHECK(wh_backward(g, m.loss));
  wh_adamw_options o = WH_ADAMW_OPTIONS_INIT;
  o.lr = (wh_lr){WH_LR_WARMUP_COSINE, 1e-2f, 3, STEPS, 1e-3f};
  o.clip_norm = 1.0f;
  CHECK(wh_optimizer_adamw(g, &o));
  return m;
}

/* the data of step k: the same on every rank */
static void batch(const model *m, int k, void *x, void *y) {
  if (m->gpt != 1) {
    for (int i = 0; i < B * 16; i++) ((float *)x)[i] = (float)((i * 7 + k * 13) % 23) / 11.0f - 1.0f;
    for (int i = 0; i < B; i++) ((int32_t *)y)[i] = (i * 3 + k) % 5;
  } else {
    for (int i = 0; i < B * 8; i++) {
      ((int32_t *)x)[i] = (i * 5 + k * 7) % 32;
      ((int32_t *)y)[i] = (i * 5 + k * 7 + 1) % 32;
    }
  }
}

static size_t params_bytes(wh_graph *g, wh_session *s) {
  size_t n = 0;
  for (int i = 0; i < wh_graph_num_params(g); i++) n += wh_session_bytes(s, wh_graph_param(g, i));
  return n;
}

static void get_params(wh_graph *g, wh_session *s, float *out) {
  size_t off = 0;
  for (int i = 0; i < wh_graph_num_params(g); i++) {
    wh_value p = wh_graph_param(g, i);
    size_t b = wh_session_bytes(s, p);
    CHECK(wh_session_get_param(s, p, (char *)out + off, b));
    off += b;
  }
}

/* train STEPS steps; losses[] and the final parameters (params NULL: not read) */
static void train(const model *m, wh_session *s, float *losses, float *params) {
  size_t xb = m->gpt == 1 ? B * 8 * 4 : B * 16 * 4, yb = m->gpt == 1 ? B * 8 * 4 : B * 4;
  void *x = malloc(xb), *y = malloc(yb);
  for (int k = 0; k < STEPS; k++) {
    batch(m, k, x, y);
    CHECK(wh_session_feed(s, m->x, x, xb));
    CHECK(wh_session_feed(s, m->y, y, yb));
    if (m->shift != WH_NONE) {
      float sh[32];
      for (int i = 0; i < 32; i++) sh[i] = (float)((i * 5 + k) % 7) / 14.0f - 0.2f;
      CHECK(wh_session_feed(s, m->shift, sh, sizeof sh));
    }
    CHECK(wh_session_step(s));
    CHECK(wh_session_fetch(s, m->loss, &losses[k], sizeof(float)));
  }
  if (params) get_params(m->g, s, params);
  free(x), free(y);
}

static double rel(const float *a, const float *b, size_t n) {
  double d = 0, r = 0;
  for (size_t i = 0; i < n; i++) d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]), r += (double)b[i] * b[i];
  return sqrt(d) / fmax(sqrt(r), 1e-30);
}

/* The per-rank program dump names every gradient all-reduce: the buckets together carry every
 * parameter's gradient once, and each names this rank's ring neighbours. */
static void check_dump(wh_session *s, const char *name, size_t param_bytes, int n) {
  char *d = NULL;
  CHECK(wh_session_dump(s, WH_FORMAT_TEXT, &d));
  long long total = 0;
  int buckets = 0, peers_ok = 1, marked = 0;
  for (const char *q = d; zero1_ && (q = strstr(q, "reduce-scatter sum f32 gradient ")); q++) {
    int k;
    long long by, keep;
    if (sscanf(q, "reduce-scatter sum f32 gradient %d: %lld bytes, started during backward; this rank keeps %lld", &k,
               &by, &keep) != 3) {
      peers_ok = 0;
      break;
    }
    total += by;
    buckets++;
    peers_ok &= keep * n >= by && keep * n < by + 4 * n;
  }
  for (const char *q = d; !zero1_ && (q = strstr(q, "all-reduce sum f32 bucket ")); q++) {
    int k, to, from;
    long long by, w1, w2;
    if (sscanf(q, "all-reduce sum f32 bucket %d: %lld bytes, started during backward; sends %lld bytes to rank %d, "
                  "receives %lld from rank %d", &k, &by, &w1, &to, &w2, &from) != 6) {
      peers_ok = 0;
      break;
    }
    total += by;
    buckets++;
    peers_ok &= to == (rank_ + 1) % n && from == (rank_ - 1 + n) % n && w1 == w2;
  }
  for (const char *q = d; (q = strstr(q, zero1_ ? "=> reduce-scatter " : "=> all-reduce bucket ")); q++) marked++;
  char head[64];
  snprintf(head, sizeof head, "rank %d of %d (", rank_, n);
  EXPECT(strstr(d, head) == d, "%s: the dump does not start with '%s'", name, head);
  EXPECT(total == (long long)param_bytes, "%s: the dump's all-reduce buckets carry %lld bytes, the parameters %zu", name,
         total, param_bytes);
  EXPECT(buckets >= 1 && peers_ok && marked >= buckets, "%s: %d buckets, %d gradients marked, peers %s", name, buckets,
         marked, peers_ok ? "right" : "wrong");
  EXPECT(strstr(d, "all-reduce sum f64 loss") != NULL, "%s: the dump lacks the loss all-reduce", name);
  if (rank_ == 0 && getenv("WH_TEST_SHOW_DUMP") && strstr(name, "mlp") && strstr(name, "equal shares"))
    printf("%s", d);
  wh_free(d);
  CHECK(wh_session_dump(s, WH_FORMAT_DOT, &d));
  EXPECT(strncmp(d, "digraph", 7) == 0 && strstr(d, "ar0 [shape=octagon") && strstr(d, "-> ar0"),
         "%s: the DOT dump lacks the all-reduce", name);
  wh_free(d);
  EXPECT(wh_session_dump(s, (wh_format)9, &d) == WH_ERR_INVALID_ARGUMENT && d == NULL &&
             strstr(wh_last_error(ctx), "format 9"),
         "%s: a bad dump format is not refused clearly", name);
}

/* Every step's loss and the final parameters within 1e-5 of the one-process run (rl, rp); the
 * reference itself learned. */
static void same_as_reference(const char *name, const float *rl, const float *dl, const float *rp, const float *dp,
                              size_t pb) {
  double worst = 0;
  for (int k = 0; k < STEPS; k++) worst = fmax(worst, fabs((double)dl[k] - rl[k]) / fmax(fabs(rl[k]), 1e-30));
  double pe = rel(dp, rp, pb / sizeof(float));
  EXPECT(worst <= 1e-5, "%s: loss differs from one process by %.3g (step losses %g .. %g)", name, worst, dl[0],
         dl[STEPS - 1]);
  EXPECT(pe <= 1e-5, "%s: final parameters differ from one process by %.3g", name, pe);
  EXPECT(rl[STEPS - 1] < rl[0], "%s: the reference did not learn (%g -> %g)", name, rl[0], rl[STEPS - 1]);
  if (rank_ == 0)
    printf("%-34s loss %.5f -> %.5f  worst step loss rel err %.2e  params rel err %.2e\n", name, rl[0], rl[STEPS - 1],
           worst, pe);
}

/* The single-process reference, on this rank: losses into rl, the final parameters returned. */
static float *reference(const model *m, float *rl, size_t *pb) {
  wh_session *ref;
  wh_session_options so = WH_SESSION_OPTIONS_INIT;
  so.batch = B;
  CHECK(wh_session_create(ctx, m->g, &so, &ref));
  *pb = params_bytes(m->g, ref);
  float *rp = malloc(*pb);
  train(m, ref, rl, rp);
  wh_session_destroy(ref);
  return rp;
}

/* A plan of layout l (its devices set to 0..n-1 here) on a cluster of n CPU ranks. */
static wh_plan *pinned(const model *m, int n, wh_plan_layout *l, wh_cluster **cl) {
  static int devs[64];
  for (int i = 0; i < n; i++) devs[i] = i;
  l->devices = devs;
  CHECK(wh_cluster_create(ctx, cl));
  CHECK(wh_cluster_add(*cl, "CPU", 0, n));
  wh_plan *p;
  CHECK(wh_plan_create_pinned(ctx, m->g, *cl, B, l, &p));
  return p;
}

/* The session of this rank for layout l over communicator c (its plan and cluster returned for
 * destroy_planned). */
static wh_session *planned(wh_comm *c, const model *m, wh_plan_layout *l, wh_plan **p, wh_cluster **cl) {
  *p = pinned(m, wh_comm_size(c), l, cl);
  wh_session_options so = WH_SESSION_OPTIONS_INIT;
  so.plan = *p;
  so.comm = c;
  wh_session *s;
  CHECK(wh_session_create(ctx, m->g, &so, &s));
  return s;
}

static void destroy_planned(wh_session *s, wh_plan *p, wh_cluster *cl, model *m) {
  wh_session_destroy(s);
  wh_plan_destroy(p);
  wh_cluster_destroy(cl);
  wh_graph_destroy(m->g);
}

static void run_case(wh_comm *c, int gpt, const char *name, const int64_t *shares, int micro) {
  int n = wh_comm_size(c);
  model m = build(gpt);
  size_t pb;
  float rl[STEPS], dl[STEPS], *rp = reference(&m, rl, &pb), *dp = malloc(pb);
  /* the data-parallel run: a cluster of this many CPU ranks, the layout pinned */
  wh_cluster *cl;
  wh_plan *p;
  wh_plan_layout l = WH_PLAN_LAYOUT_INIT;
  l.shares = shares;
  l.micro_batches = micro;
  l.zero1 = zero1_;
  wh_session *s = planned(c, &m, &l, &p, &cl);
  if (zero1_) { /* the optimizer state: about 1/n of the one-process session's on each rank */
    wh_memory_stats one = WH_MEMORY_STATS_INIT, sharded = WH_MEMORY_STATS_INIT;
    CHECK(wh_session_memory(s, &sharded));
    wh_session *full;
    wh_session_options fo = WH_SESSION_OPTIONS_INIT;
    fo.batch = B;
    CHECK(wh_session_create(ctx, m.g, &fo, &full));
    CHECK(wh_session_memory(full, &one));
    wh_session_destroy(full);
    EXPECT(sharded.state_bytes <= one.state_bytes / (uint64_t)n + 64 * (uint64_t)wh_graph_num_params(m.g),
           "%s: optimizer state %llu bytes on this rank, %llu in one process", name,
           (unsigned long long)sharded.state_bytes, (unsigned long long)one.state_bytes);
  }
  size_t gb = 0; /* bytes of the distinct gradient values (two parameters may share one) */
  for (int i = 0; i < wh_graph_num_params(m.g); i++) {
    wh_value gv = wh_grad(m.g, wh_graph_param(m.g, i)), dup = 0;
    for (int j = 0; j < i; j++) dup |= wh_grad(m.g, wh_graph_param(m.g, j)) == gv;
    if (!dup) gb += wh_session_bytes(s, wh_graph_param(m.g, i));
  }
  check_dump(s, name, gb, n);
  train(&m, s, dl, dp);
  same_as_reference(name, rl, dl, rp, dp, pb);
  destroy_planned(s, p, cl, &m);
  free(rp), free(dp);
}

/* Pipeline: one stage per rank, segments split evenly, m micro-batches of B/m. Each rank holds the
 * current values of the parameters its stage reads, and compares those with the one-process run;
 * the tied embedding of the GPT lives on the first and the last stage. */
static void run_pipe_case(wh_comm *c, int gpt, const char *name, int stages, const int64_t *shares, int micro,
                          wh_schedule sched) {
  int n = wh_comm_size(c);
  model m = build(gpt);
  size_t pb;
  float rl[STEPS], dl[STEPS], *rp = reference(&m, rl, &pb);
  wh_cluster *cl;
  wh_plan *p;
  wh_plan_layout l = WH_PLAN_LAYOUT_INIT;
  l.stages = stages;
  l.shares = shares;
  l.micro_batches = micro;
  l.schedule = sched;
  wh_session *s = planned(c, &m, &l, &p, &cl);
  char *d = NULL;
  CHECK(wh_session_dump(s, WH_FORMAT_TEXT, &d));
  int peer = stages == n ? 1 : n / stages; /* replica 0 of stage 1 */
  char want[48];
  snprintf(want, sizeof want, "=> send to rank %d", peer);
  EXPECT(strstr(d, "pipeline stage") && (rank_ == 0 ? strstr(d, want) != NULL : strstr(d, "<= recv") != NULL),
         "%s: the dump shows the stage and its transfers:\n%.600s", name, d);
  if (rank_ == 0 && gpt && sched == WH_SCHEDULE_1F1B) printf("%s, rank 0 program (excerpt):\n%.1500s\n", name, d);
  wh_free(d);
  train(&m, s, dl, NULL);
  /* the parameters this stage holds, against the same ones of the reference */
  size_t off = 0, held = 0, nheld = 0;
  float *mine = malloc(pb), *theirs = malloc(pb);
  for (int i = 0; i < wh_graph_num_params(m.g); i++) {
    wh_value pv = wh_graph_param(m.g, i);
    size_t b = wh_session_bytes(s, pv);
    if (wh_session_get_param(s, pv, (char *)mine + held, b) == WH_OK) {
      memcpy((char *)theirs + held, (char *)rp + off, b);
      held += b, nheld++;
    }
    off += b;
  }
  double worst = 0;
  for (int k = 0; k < STEPS; k++) worst = fmax(worst, fabs((double)dl[k] - rl[k]) / fmax(fabs(rl[k]), 1e-30));
  double pe = rel(mine, theirs, held / sizeof(float));
  if (micro == 1 && stages == n) {
    /* one micro-batch, one replica per stage: every node sees the one-process arithmetic */
    EXPECT(memcmp(dl, rl, sizeof dl) == 0 && memcmp(mine, theirs, held) == 0,
           "%s: one micro-batch per step is bitwise the one-process run (losses %s, parameters %s)", name,
           memcmp(dl, rl, sizeof dl) ? "differ" : "equal", memcmp(mine, theirs, held) ? "differ" : "equal");
  }
  EXPECT(worst <= 1e-5, "%s: loss differs from one process by %.3g (step losses %g .. %g)", name, worst, dl[0],
         dl[STEPS - 1]);
  EXPECT(pe <= 1e-5, "%s: the %zu parameters of this stage (a stage may hold none) differ from one process by %.3g", name,
         nheld, pe);
  if (rank_ == 0)
    printf("%-34s loss %.5f -> %.5f  worst step loss rel err %.2e  params rel err %.2e (stage 0)\n", name, rl[0],
           rl[STEPS - 1], worst, pe);
  free(mine), free(theirs);
  destroy_planned(s, p, cl, &m);
  free(rp);
}

/* Operator sharding: tp ranks per replica, n / tp replicas with the given shares (per replica),
 * `micro` micro-batches. The parameters are gathered whole (every rank of a replica asks). */
static void run_tp_case(wh_comm *c, int gpt, const char *name, int tp, const int64_t *shares, int micro) {
  int n = wh_comm_size(c);
  model m = build(gpt);
  size_t pb;
  float rl[STEPS], dl[STEPS], *rp = reference(&m, rl, &pb), *dp = malloc(pb);
  wh_cluster *cl;
  wh_plan *p;
  wh_plan_layout l = WH_PLAN_LAYOUT_INIT;
  l.tp = tp;
  l.shares = shares;
  l.micro_batches = micro;
  wh_session *s = planned(c, &m, &l, &p, &cl);
  EXPECT(params_bytes(m.g, s) == pb, "%s: the session reports %zu parameter bytes, one process %zu", name,
         params_bytes(m.g, s), pb);
  /* parameters split: this rank holds less than the whole model */
  wh_memory_stats ms = WH_MEMORY_STATS_INIT;
  CHECK(wh_session_memory(s, &ms));
  EXPECT(ms.param_bytes < pb * 3 / 4, "%s: this rank holds %llu parameter bytes of %zu", name,
         (unsigned long long)ms.param_bytes, pb);
  char *d = NULL;
  CHECK(wh_session_dump(s, WH_FORMAT_TEXT, &d));
  char head[96];
  snprintf(head, sizeof head, "operator sharding: shard %d of %d in replica %d of %d", rank_ % tp, tp, rank_ / tp, n / tp);
  int ar = 0;
  for (const char *q = d; (q = strstr(q, "tp_allreduce")); q++) ar++;
  /* Megatron's pattern and nothing more: per transformer layer one all-reduce forward and one
   * backward for attention and for the MLP, and for the vocabulary-parallel embedding (forward) and
   * output layer (backward); the MLP's first pair needs one forward only (its input has no
   * gradient); no gathers */
  EXPECT(strstr(d, head) != NULL && (gpt == 4 || ar == (gpt ? 10 : 1)) &&
             (gpt == 4 ? !strstr(d, "all-reduce, 0 all-gather") && strstr(d, "=> all-gather f32 (split dim 0)")
                       : strstr(d, "all-reduce, 0 all-gather") != NULL) &&
             strstr(d, "=> all-reduce sum f32 over ranks"),
         "%s: the dump shows the shard and the inserted all-reduces (%d):\n%.800s", name, ar, d);
  if (rank_ == 0 && getenv("WH_TEST_SHOW_DUMP") && gpt) printf("%s", d);
  wh_free(d);
  CHECK(wh_session_dump(s, WH_FORMAT_DOT, &d));
  EXPECT(strstr(d, "tp_allreduce") && strstr(d, "shape=octagon, color=red"), "%s: the DOT dump marks the all-reduces",
         name);
  wh_free(d);
  train(&m, s, dl, dp);
  same_as_reference(name, rl, dl, rp, dp, pb);
  destroy_planned(s, p, cl, &m);
  free(rp), free(dp);
}

/* What operator sharding refuses, by name, and what it keeps: ZeRO-1, the deterministic reduction,
 * a device, saving a split model (n ranks, one replica). */
static void tp_refusals(wh_comm *c) {
  int n = wh_comm_size(c);
  model m = build(1);
  wh_cluster *cl;
  wh_plan_layout l = WH_PLAN_LAYOUT_INIT;
  l.tp = n;
  l.zero1 = 1;
  wh_plan *p = pinned(&m, n, &l, &cl);
  wh_session_options so = WH_SESSION_OPTIONS_INIT;
  so.plan = p;
  so.comm = c;
  wh_session *s = NULL;
  EXPECT(wh_session_create(ctx, m.g, &so, &s) == WH_ERR_UNSUPPORTED && !s && strstr(wh_last_error(ctx), "ZeRO-1"),
         "tp with ZeRO-1 is not refused by name: %s", wh_last_error(ctx));
  wh_plan_destroy(p);
  wh_cluster_destroy(cl);
  l.zero1 = 0;
  p = pinned(&m, n, &l, &cl);
  so.plan = p;
  so.deterministic = 1;
  EXPECT(wh_session_create(ctx, m.g, &so, &s) == WH_ERR_UNSUPPORTED && !s && strstr(wh_last_error(ctx), "deterministic"),
         "tp with the deterministic reduction is not refused by name: %s", wh_last_error(ctx));
  so.deterministic = 0;
  CHECK(wh_session_create(ctx, m.g, &so, &s));
  EXPECT(wh_session_save(s, "/tmp/wh_tp_refused.whg") == WH_ERR_UNSUPPORTED && strstr(wh_last_error(ctx), "get_param"),
         "saving a split model is not refused with the way out: %s", wh_last_error(ctx));
  /* a whole parameter set from the caller's data: each rank keeps its shard, and gathers it back */
  wh_value w = WH_NONE;
  for (int i = 0; i < wh_graph_num_params(m.g); i++)
    if (strcmp(wh_value_name(m.g, wh_graph_param(m.g, i)), "fc0.w") == 0) w = wh_graph_param(m.g, i);
  size_t wb = wh_session_bytes(s, w);
  float *in = malloc(wb), *out = malloc(wb);
  for (size_t i = 0; i < wb / 4; i++) in[i] = (float)i * 0.25f;
  CHECK(wh_session_set_param(s, w, in, wb));
  CHECK(wh_session_get_param(s, w, out, wb));
  EXPECT(wb == 64 * 16 * 4 && memcmp(in, out, wb) == 0, "a split parameter set whole does not come back whole (%zu bytes)",
         wb);
  EXPECT(wh_session_get_param(s, w, out, wb - 4) == WH_ERR_SHAPE && strstr(wh_last_error(ctx), "4096 bytes"),
         "a short buffer for a split parameter is not refused with its whole size: %s", wh_last_error(ctx));
  free(in), free(out);
  destroy_planned(s, p, cl, &m);
}

/* One session over comm cc: a data-parallel plan of cc's ranks, equal shares, `micro` micro-batches. */
static wh_session *dp_session(wh_comm *cc, const model *m, int micro, int deterministic, wh_plan **pp, wh_cluster **pc) {
  int n = wh_comm_size(cc);
  wh_plan_layout l = WH_PLAN_LAYOUT_INIT;
  int64_t sh[8];
  for (int i = 0; i < n; i++) sh[i] = B / n / micro;
  l.shares = sh;
  l.micro_batches = micro;
  *pp = pinned(m, n, &l, pc);
  wh_session_options so = WH_SESSION_OPTIONS_INIT;
  so.plan = *pp;
  so.comm = cc;
  so.deterministic = deterministic;
  wh_session *s;
  CHECK(wh_session_create(ctx, m->g, &so, &s));
  return s;
}

/* The deterministic reduction: n ranks with one micro-batch each against one rank running the same
 * rows as n micro-batches (each rank runs that reference on a communicator of its own): bit for bit. */
static void run_det_case(wh_comm *c, int gpt, const char *name) {
  int n = wh_comm_size(c), me = wh_comm_rank(c);
  model m = build(gpt);
  wh_comm *solo = NULL;
  for (int r = 0; r < n; r++) {
    wh_comm *sub = NULL;
    CHECK(wh_comm_split(c, 1, &r, &sub));
    if (r == me) solo = sub;
  }
  wh_plan *p1, *pn;
  wh_cluster *c1, *cn;
  wh_session *ref = dp_session(solo, &m, n, 0, &p1, &c1);
  size_t pb = params_bytes(m.g, ref);
  float rl[STEPS], dl[STEPS], *rp = malloc(pb), *dp = malloc(pb);
  train(&m, ref, rl, rp);
  wh_session_destroy(ref);
  wh_session *s = dp_session(c, &m, 1, 1, &pn, &cn);
  train(&m, s, dl, dp);
  int same_l = memcmp(rl, dl, sizeof rl) == 0, same_p = memcmp(rp, dp, pb) == 0;
  EXPECT(same_l && same_p, "%s: losses %s, parameters %s (first losses %.9g vs %.9g)", name, same_l ? "equal" : "differ",
         same_p ? "equal" : "differ", rl[0], dl[0]);
  if (rank_ == 0)
    printf("%-34s loss %.5f -> %.5f  bitwise equal to one rank with %d micro-batches: %s\n", name, rl[0], rl[STEPS - 1],
           n, same_l && same_p ? "yes" : "no");
  wh_session_destroy(s);
  wh_plan_destroy(p1), wh_plan_destroy(pn);
  wh_cluster_destroy(c1), wh_cluster_destroy(cn);
  wh_comm_destroy(solo);
  wh_graph_destroy(m.g);
  free(rp), free(dp);
}

int main(void) {
  wh_ctx_options o = WH_CTX_OPTIONS_INIT;
  o.num_threads = 1;
  if (wh_ctx_create(&ctx, &o) != WH_OK) return 1;
  wh_comm *c;
  wh_comm_options co = WH_COMM_OPTIONS_INIT;
  co.timeout_s = 30;
  CHECK(wh_comm_create(ctx, &co, &c));
  rank_ = wh_comm_rank(c);
  int n = wh_comm_size(c);
  int64_t equal[8], unequal[8], zero[8];
  for (int i = 0; i < n; i++) equal[i] = B / n;
  /* unequal: rank i gets a share growing with i, summing to B */
  int64_t sum = 0;
  for (int i = 0; i < n; i++) sum += unequal[i] = 1 + i * 2;
  unequal[n - 1] += B - sum;
  for (int i = 0; i < n; i++) zero[i] = i == 0 ? 0 : B / (n - 1) + (i <= B % (n - 1) ? 1 : 0);
  {
    int64_t one_mb[8];
    for (int i = 0; i < n; i++) one_mb[i] = unequal[i];
    char nm[96];
    snprintf(nm, sizeof nm, "shared-gradient DP=%d unequal shares", n);
    run_case(c, 2, nm, one_mb, 1);
  }
  for (int gpt = 0; gpt < 2; gpt++) {
    char nm[96];
    snprintf(nm, sizeof nm, "%s DP=%d equal shares", gpt ? "gpt" : "mlp", n);
    run_case(c, gpt, nm, equal, 1);
    snprintf(nm, sizeof nm, "%s DP=%d unequal shares", gpt ? "gpt" : "mlp", n);
    run_case(c, gpt, nm, unequal, 1);
    snprintf(nm, sizeof nm, "%s DP=%d unequal, 4 micro-batches", gpt ? "gpt" : "mlp", n);
    /* 4 micro-batches of 6: shares per micro-batch summing to 6 */
    int64_t per[8], s6 = 0;
    for (int i = 0; i < n; i++) s6 += per[i] = (i + 1) * 6 / (n * (n + 1) / 2) > 0 ? (i + 1) * 6 / (n * (n + 1) / 2) : 1;
    per[n - 1] += 6 - s6;
    run_case(c, gpt, nm, per, 4);
    if (n > 1) {
      snprintf(nm, sizeof nm, "%s DP=%d, rank 0 without samples", gpt ? "gpt" : "mlp", n);
      run_case(c, gpt, nm, zero, 1);
    }
  }
  for (int gpt = 0; gpt < 2; gpt++) {
    char nm[96];
    snprintf(nm, sizeof nm, "%s DP=%d deterministic reduce", gpt ? "gpt" : "mlp", n);
    run_det_case(c, gpt, nm);
  }
  zero1_ = 1;
  run_case(c, 3, "sum of two params, ZeRO-1", equal, 1);
  for (int gpt = 0; gpt < 2; gpt++) {
    char nm[96];
    snprintf(nm, sizeof nm, "%s DP=%d ZeRO-1 unequal, 4 micro", gpt ? "gpt" : "mlp", n);
    int64_t per[8], s6 = 0;
    for (int i = 0; i < n; i++) s6 += per[i] = 6 / n > 0 ? 6 / n : 1;
    per[n - 1] += 6 - s6;
    run_case(c, gpt, nm, per, 4);
    snprintf(nm, sizeof nm, "%s DP=%d ZeRO-1 equal shares", gpt ? "gpt" : "mlp", n);
    run_case(c, gpt, nm, equal, 1);
  }
  zero1_ = 0;
  for (int gpt = 0; gpt < 2 && n > 1; gpt++)
    for (int sch = 0; sch < 2; sch++) {
      char nm[96];
      snprintf(nm, sizeof nm, "%s PP=%d %s, 4 micro-batches", gpt ? "gpt" : "mlp", n, sch ? "1F1B" : "GPipe");
      run_pipe_case(c, gpt, nm, n, NULL, 4, sch ? WH_SCHEDULE_1F1B : WH_SCHEDULE_GPIPE);
      if (sch == 0) {
        snprintf(nm, sizeof nm, "%s PP=%d, 1 micro-batch (bitwise)", gpt ? "gpt" : "mlp", n);
        run_pipe_case(c, gpt, nm, n, NULL, 1, WH_SCHEDULE_GPIPE);
      }
      if (n == 4) { /* DP x PP: two stages of two replicas, 2 and 4 rows of each 6-sample micro-batch */
        static const int64_t sh[4] = {2, 4, 2, 4};
        snprintf(nm, sizeof nm, "%s DP=2 x PP=2 %s, unequal shares", gpt ? "gpt" : "mlp", sch ? "1F1B" : "GPipe");
        run_pipe_case(c, gpt, nm, 2, sh, 4, sch ? WH_SCHEDULE_1F1B : WH_SCHEDULE_GPIPE);
      }
    }
  if (n == 2) tp_refusals(c);
  if (n == 2 || n == 4) {
    int64_t one[1] = {B};
    char nm[96];
    snprintf(nm, sizeof nm, "mlp+bias penalty TP=%d", n);
    run_tp_case(c, 4, nm, n, one, 1);
  }
  for (int gpt = 0; gpt < 2 && (n == 2 || n == 4); gpt++) {
    char nm[96];
    int64_t one[1] = {B};
    snprintf(nm, sizeof nm, "%s TP=%d", gpt ? "gpt" : "mlp", n);
    run_tp_case(c, gpt, nm, n, one, 1);
    int64_t four[1] = {B / 4};
    snprintf(nm, sizeof nm, "%s TP=%d, 4 micro-batches", gpt ? "gpt" : "mlp", n);
    run_tp_case(c, gpt, nm, n, four, 4);
    if (n == 4) { /* DP x TP: two replicas of two shards, 2 and 4 rows of each 6-sample micro-batch */
      static const int64_t sh[2] = {2, 4};
      snprintf(nm, sizeof nm, "%s DP=2 x TP=2, unequal, 4 micro", gpt ? "gpt" : "mlp");
      run_tp_case(c, gpt, nm, 2, sh, 4);
    }
  }
  int32_t tot[2] = {passed, failed};
  wh_comm_allreduce(c, NULL, tot, 2, WH_I32, WH_REDUCE_SUM);
  if (rank_ == 0) printf("dp (%d ranks): %d passed, %d failed\n", n, tot[0], tot[1]);
  wh_comm_destroy(c);
  wh_ctx_destroy(ctx);
  return tot[1] ? 1 : 0;
}
