/* scaffold.c - the shared part of the equivalence tests (scaffold.h): the same model trained on one
 * process and over the ranks of this mpirun must give the same losses and the same parameters.
 * Each rank also runs the single-process reference itself. */
#include "scaffold.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DIMS(...) (int64_t[]){__VA_ARGS__}

wh_ctx *ctx;
wh_comm *comm;
int nranks;
static const char *label_;

static int setup(int argc, char **argv) {
  (void)argc, (void)argv;
  wh_ctx_options o = WH_CTX_OPTIONS_INIT;
  o.num_threads = 1;
  if (wh_ctx_create(&ctx, &o) != WH_OK) return 1;
  wh_comm_options co = WH_COMM_OPTIONS_INIT;
  co.timeout_s = 30;
  CHECK(wh_comm_create(ctx, &co, &comm));
  wt_rank = wh_comm_rank(comm);
  nranks = wh_comm_size(comm);
  wt_label("%s (%d ranks)", label_, nranks);
  return 0;
}

static void totals(int c[2]) {
  int32_t t[2] = {c[0], c[1]};
  wh_comm_allreduce(comm, NULL, t, 2, WH_I32, WH_REDUCE_SUM);
  c[0] = t[0], c[1] = t[1];
}

static void teardown(void) {
  wh_comm_destroy(comm);
  wh_ctx_destroy(ctx);
}

int sc_main(const char *label, const wt_case *cases, int n, int argc, char **argv) {
  label_ = label;
  const wt_suite s = {label, setup, teardown, totals, 1};
  return wt_main(&s, cases, n, argc, argv);
}

const char *sc_name(sc_kind kind) { return kind == SC_GPT ? "gpt" : kind == SC_WIDE ? "wide" : "mlp"; }

void sc_equal(int64_t *sh) {
  for (int i = 0; i < nranks; i++) sh[i] = B / nranks;
}

void sc_unequal(int64_t *sh) { /* rank i gets a share growing with i, summing to B */
  int64_t sum = 0;
  for (int i = 0; i < nranks; i++) sum += sh[i] = 1 + i * 2;
  sh[nranks - 1] += B - sum;
}

void sc_rank0_empty(int64_t *sh) {
  for (int i = 0; i < nranks; i++) sh[i] = i == 0 ? 0 : B / (nranks - 1) + (i <= B % (nranks - 1) ? 1 : 0);
}

static wh_value lin_std(wh_graph *g, wh_value x, const char *nm, int in, int out, float std, uint64_t seed) {
  char w[32], b[32];
  snprintf(w, sizeof w, "%s.w", nm);
  snprintf(b, sizeof b, "%s.b", nm);
  return wh_bias_add(g,
                     wh_matmul(g, x, wh_param(g, w, WH_F32, 2, DIMS(out, in), WH_INIT(WH_INIT_NORMAL, 0, std, seed)),
                               0, 1),
                     wh_param(g, b, WH_F32, 1, DIMS(out), WH_INIT(WH_INIT_UNIFORM, -0.1f, 0.1f, seed + 1)), -1);
}

static wh_value lin(wh_graph *g, wh_value x, const char *nm, int in, int out, uint64_t seed) {
  return lin_std(g, x, nm, in, out, 0.2f, seed);
}

sc_model sc_build(sc_kind kind) {
  sc_model m = {0};
  m.kind = kind;
  m.shift = WH_NONE;
  CHECK(wh_graph_create(ctx, &m.g));
  wh_graph *g = m.g;
  if (kind == SC_SHARED_GRAD) {
    /* a weight built from two parameters: the gradient of W0 is the very value backward passes on
     * to the tanh branch, so scaling or reducing it in place would corrupt Q's gradient */
    m.x = wh_input(g, "x", WH_F32, 2, DIMS(WH_BATCH, 16));
    m.y = wh_input(g, "y", WH_I32, 1, DIMS(WH_BATCH));
    wh_value w0 = wh_param(g, "w0", WH_F32, 2, DIMS(5, 16), WH_INIT(WH_INIT_NORMAL, 0, 0.2f, 61));
    wh_value q = wh_param(g, "q", WH_F32, 2, DIMS(5, 16), WH_INIT(WH_INIT_NORMAL, 0, 0.2f, 62));
    wh_value w = wh_add(g, w0, wh_tanh(g, q));
    m.loss = wh_cross_entropy(g, wh_matmul(g, m.x, w, 0, 1), m.y);
  } else if (kind == SC_PARAM_SUM) {
    /* two parameters with one gradient value (the add passes it on to both) */
    m.x = wh_input(g, "x", WH_F32, 2, DIMS(WH_BATCH, 16));
    m.y = wh_input(g, "y", WH_I32, 1, DIMS(WH_BATCH));
    wh_value p1 = wh_param(g, "p1", WH_F32, 2, DIMS(5, 16), WH_INIT(WH_INIT_NORMAL, 0, 0.2f, 71));
    wh_value p2 = wh_param(g, "p2", WH_F32, 2, DIMS(5, 16), WH_INIT(WH_INIT_NORMAL, 0, 0.2f, 72));
    m.loss = wh_cross_entropy(g, wh_matmul(g, m.x, wh_add(g, p1, p2), 0, 1), m.y);
  } else if (kind == SC_BIAS_PENALTY) {
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
  } else if (kind == SC_WIDE) {
    m.x = wh_input(g, "x", WH_F32, 2, DIMS(WH_BATCH, 16));
    m.y = wh_input(g, "y", WH_I32, 1, DIMS(WH_BATCH));
    wh_value h = wh_tanh(g, lin(g, m.x, "l1", 16, 384, 1));
    h = wh_relu(g, lin_std(g, h, "l2", 384, 384, 0.05f, 3));
    h = wh_relu(g, lin_std(g, h, "l3", 384, 384, 0.05f, 5));
    m.loss = wh_cross_entropy(g, lin_std(g, h, "l4", 384, 5, 0.05f, 7), m.y);
  } else if (kind == SC_MLP) {
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
static void batch(const sc_model *m, int k, void *x, void *y) {
  if (m->kind != SC_GPT) {
    for (int i = 0; i < B * 16; i++) ((float *)x)[i] = (float)((i * 7 + k * 13) % 23) / 11.0f - 1.0f;
    for (int i = 0; i < B; i++) ((int32_t *)y)[i] = (i * 3 + k) % 5;
  } else {
    for (int i = 0; i < B * 8; i++) {
      ((int32_t *)x)[i] = (i * 5 + k * 7) % 32;
      ((int32_t *)y)[i] = (i * 5 + k * 7 + 1) % 32;
    }
  }
}

size_t sc_params_bytes(wh_graph *g, wh_session *s) {
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

void sc_train(const sc_model *m, wh_session *s, float *losses, float *params) {
  int gpt = m->kind == SC_GPT;
  size_t xb = gpt ? B * 8 * 4 : B * 16 * 4, yb = gpt ? B * 8 * 4 : B * 4;
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

double sc_rel(const float *a, const float *b, size_t n) {
  double d = 0, r = 0;
  for (size_t i = 0; i < n; i++) d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]), r += (double)b[i] * b[i];
  return sqrt(d) / fmax(sqrt(r), 1e-30);
}

void sc_same_as_reference(const char *name, const float *rl, const float *dl, const float *rp, const float *dp,
                          size_t pb) {
  double worst = 0;
  for (int k = 0; k < STEPS; k++) worst = fmax(worst, fabs((double)dl[k] - rl[k]) / fmax(fabs(rl[k]), 1e-30));
  double pe = sc_rel(dp, rp, pb / sizeof(float));
  EXPECT(worst <= 1e-5, "%s: loss differs from one process by %.3g (step losses %g .. %g)", name, worst, dl[0],
         dl[STEPS - 1]);
  EXPECT(pe <= 1e-5, "%s: final parameters differ from one process by %.3g", name, pe);
  EXPECT(rl[STEPS - 1] < rl[0], "%s: the reference did not learn (%g -> %g)", name, rl[0], rl[STEPS - 1]);
  if (wt_rank == 0)
    printf("%-34s loss %.5f -> %.5f  worst step loss rel err %.2e  params rel err %.2e\n", name, rl[0], rl[STEPS - 1],
           worst, pe);
}

float *sc_reference(const sc_model *m, float *rl, size_t *pb) {
  wh_session *ref;
  wh_session_options so = WH_SESSION_OPTIONS_INIT;
  so.batch = B;
  CHECK(wh_session_create(ctx, m->g, &so, &ref));
  *pb = sc_params_bytes(m->g, ref);
  float *rp = malloc(*pb);
  sc_train(m, ref, rl, rp);
  wh_session_destroy(ref);
  return rp;
}

wh_plan *sc_pinned(const sc_model *m, int n, wh_plan_layout *l, wh_cluster **cl) {
  static int devs[64];
  for (int i = 0; i < n; i++) devs[i] = i;
  l->devices = devs;
  CHECK(wh_cluster_create(ctx, cl));
  CHECK(wh_cluster_add(*cl, "CPU", 0, n));
  wh_plan *p;
  CHECK(wh_plan_create_pinned(ctx, m->g, *cl, B, l, &p));
  return p;
}

wh_session *sc_planned(wh_comm *c, const sc_model *m, wh_plan_layout *l, wh_plan **p, wh_cluster **cl) {
  *p = sc_pinned(m, wh_comm_size(c), l, cl);
  wh_session_options so = WH_SESSION_OPTIONS_INIT;
  so.plan = *p;
  so.comm = c;
  wh_session *s;
  CHECK(wh_session_create(ctx, m->g, &so, &s));
  return s;
}

void sc_destroy(wh_session *s, wh_plan *p, wh_cluster *cl, sc_model *m) {
  wh_session_destroy(s);
  wh_plan_destroy(p);
  wh_cluster_destroy(cl);
  wh_graph_destroy(m->g);
}

/* The per-rank program dump names every gradient all-reduce (reduce-scatter under ZeRO-1): the
 * buckets together carry every parameter's gradient once, and each names this rank's ring
 * neighbours (or the part this rank keeps). */
static void check_dump(wh_session *s, const char *name, size_t param_bytes, int n, int zero1) {
  char *d = NULL;
  CHECK(wh_session_dump(s, WH_FORMAT_TEXT, &d));
  long long total = 0;
  int buckets = 0, peers_ok = 1, marked = 0;
  for (const char *q = d; zero1 && (q = strstr(q, "reduce-scatter sum f32 gradient ")); q++) {
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
  for (const char *q = d; !zero1 && (q = strstr(q, "all-reduce sum f32 bucket ")); q++) {
    int k, to, from;
    long long by, w1, w2;
    if (sscanf(q, "all-reduce sum f32 bucket %d: %lld bytes, started during backward; sends %lld bytes to rank %d, "
                  "receives %lld from rank %d", &k, &by, &w1, &to, &w2, &from) != 6) {
      peers_ok = 0;
      break;
    }
    total += by;
    buckets++;
    peers_ok &= to == (wt_rank + 1) % n && from == (wt_rank - 1 + n) % n && w1 == w2;
  }
  for (const char *q = d; (q = strstr(q, zero1 ? "=> reduce-scatter " : "=> all-reduce bucket ")); q++) marked++;
  char head[64];
  snprintf(head, sizeof head, "rank %d of %d (", wt_rank, n);
  EXPECT(strstr(d, head) == d, "%s: the dump does not start with '%s'", name, head);
  EXPECT(total == (long long)param_bytes, "%s: the dump's all-reduce buckets carry %lld bytes, the parameters %zu", name,
         total, param_bytes);
  EXPECT(buckets >= 1 && peers_ok && marked >= buckets, "%s: %d buckets, %d gradients marked, peers %s", name, buckets,
         marked, peers_ok ? "right" : "wrong");
  EXPECT(strstr(d, "all-reduce sum f64 loss") != NULL, "%s: the dump lacks the loss all-reduce", name);
  if (wt_rank == 0 && getenv("WH_TEST_SHOW_DUMP") && strstr(name, "mlp") && strstr(name, "equal shares"))
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

void sc_dp_case(sc_kind kind, const char *name, const int64_t *shares, int micro, int zero1) {
  int n = nranks;
  sc_model m = sc_build(kind);
  size_t pb;
  float rl[STEPS], dl[STEPS], *rp = sc_reference(&m, rl, &pb), *dp = malloc(pb);
  /* the data-parallel run: a cluster of this many CPU ranks, the layout pinned */
  wh_cluster *cl;
  wh_plan *p;
  wh_plan_layout l = WH_PLAN_LAYOUT_INIT;
  l.shares = shares;
  l.micro_batches = micro;
  l.zero1 = zero1;
  wh_session *s = sc_planned(comm, &m, &l, &p, &cl);
  if (zero1) { /* the optimizer state: about 1/n of the one-process session's on each rank */
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
  check_dump(s, name, gb, n, zero1);
  sc_train(&m, s, dl, dp);
  sc_same_as_reference(name, rl, dl, rp, dp, pb);
  sc_destroy(s, p, cl, &m);
  free(rp), free(dp);
}
