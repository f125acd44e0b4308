/* test_cuda_gpt.c - a small GPT's training on the CUDA backend against the CPU backend:
 *   fp32   the loss and every parameter's gradient of one GRAD run (1e-5 relative), then the losses
 *          of 5 AdamW steps and the parameters after them (1e-4: five updates compound rounding);
 *   tf32, bf16   the same at tensor-core tolerances (gradients 3e-2, losses 1e-2);
 *   data parallel   a one-rank plan with 2 micro-batches over the NCCL backend (device buffers)
 *          and over the MPI backend (staged through the host), against the single-process CPU run;
 *   errors   an unknown precision and a device index past the last are refused, naming the cause.
 * Exit 77 without a CUDA device. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpt.h"
#include "whale.h"
#include "../common/runner.h"

#define STEPS 5
#define B 4

static wh_ctx *ctx;

/* a small GPT-2 (examples/models/gpt.h): vocabulary 97, context 32, width 64, 2 layers, 4 heads */
static gpt_options cfg(void) {
  gpt_options o = GPT_OPTIONS_INIT;
  o.vocab = 97, o.context = 32, o.width = 64, o.layers = 2, o.heads = 4;
  return o;
}
static int32_t tok[B * 32], tgt[B * 32];

static double rel(const float *a, const float *ref, size_t n) {
  double dd = 0, rr = 0;
  for (size_t i = 0; i < n; i++) {
    double d = (double)a[i] - ref[i];
    if (a[i] != a[i]) return INFINITY;
    dd += d * d, rr += (double)ref[i] * ref[i];
  }
  return rr > 0 ? sqrt(dd / rr) : sqrt(dd);
}

static size_t all_params_bytes(wh_graph *g, wh_session *s) {
  size_t t = 0;
  for (int i = 0; i < wh_graph_num_params(g); i++) t += wh_session_bytes(s, wh_graph_param(g, i));
  return t;
}

/* every parameter (or its gradient) of the last run, concatenated */
static wh_status gather(wh_graph *g, wh_session *s, int grads, float *out) {
  size_t off = 0;
  for (int i = 0; i < wh_graph_num_params(g); i++) {
    wh_value p = wh_graph_param(g, i);
    size_t b = wh_session_bytes(s, p);
    wh_status st = grads ? wh_session_fetch(s, wh_grad(g, p), (char *)out + off, b)
                         : wh_session_get_param(s, p, (char *)out + off, b);
    if (st != WH_OK) return st;
    off += b;
  }
  return WH_OK;
}

typedef struct {
  float loss0, *grad, losses[STEPS], *params;
} run;

/* One GRAD run then STEPS training steps of session s. */
static void trace(wh_graph *g, const gpt_model *m, wh_session *s, size_t pb, run *r) {
  r->grad = malloc(pb), r->params = malloc(pb);
  CHECK(wh_session_feed(s, m->tokens, tok, sizeof tok));
  CHECK(wh_session_feed(s, m->targets, tgt, sizeof tgt));
  CHECK(wh_session_run(s, WH_RUN_GRAD));
  CHECK(wh_session_fetch(s, m->loss, &r->loss0, sizeof(float)));
  CHECK(gather(g, s, 1, r->grad));
  for (int k = 0; k < STEPS; k++) {
    CHECK(wh_session_step(s));
    CHECK(wh_session_fetch(s, m->loss, &r->losses[k], sizeof(float)));
  }
  CHECK(gather(g, s, 0, r->params));
}

static void run_free(run *r) {
  free(r->grad), free(r->params);
  memset(r, 0, sizeof *r);
}

static double worst_loss(const run *a, const run *ref) {
  double w = 0;
  for (int k = 0; k < STEPS; k++) w = fmax(w, fabs((double)a->losses[k] - ref->losses[k]) / fabs(ref->losses[k]));
  return w;
}

static void compare(const char *name, const run *a, const run *ref, size_t n, double gtol, double ltol, double ptol) {
  double lg = fabs((double)a->loss0 - ref->loss0) / fabs(ref->loss0), gr = rel(a->grad, ref->grad, n);
  double wl = worst_loss(a, ref), pr = rel(a->params, ref->params, n);
  EXPECT(lg <= gtol && gr <= gtol, "%s: first loss rel err %.2e, gradients %.2e (tolerance %.0e)", name, lg, gr, gtol);
  EXPECT(wl <= ltol, "%s: step losses differ by %.2e (tolerance %.0e)", name, wl, ltol);
  EXPECT(pr <= ptol, "%s: parameters after %d steps differ by %.2e (tolerance %.0e)", name, STEPS, pr, ptol);
  EXPECT(a->losses[STEPS - 1] < a->losses[0], "%s: did not learn (%g -> %g)", name, a->losses[0], a->losses[STEPS - 1]);
  printf("%-22s loss %.5f -> %.5f  first loss %.1e  grads %.1e  step losses %.1e  params %.1e\n", name, a->loss0,
         a->losses[STEPS - 1], lg, gr, wl, pr);
}

static void data_parallel(wh_graph *g, const gpt_model *m, wh_comm_backend be, const run *ref, size_t pb) {
  const char *name = be == WH_COMM_NCCL ? "dp nccl (2 micro)" : "dp mpi (2 micro)";
  wh_comm *c = NULL;
  wh_cluster *cl = NULL;
  wh_plan *p = NULL;
  wh_session *s = NULL;
  run r = {0};
  wh_comm_options co = WH_COMM_OPTIONS_INIT;
  co.backend = be;
  co.timeout_s = 60;
  CHECK(wh_comm_create(ctx, &co, &c));
  CHECK(wh_cluster_create(ctx, &cl));
  CHECK(wh_cluster_add(cl, "H100", 0, 1));
  wh_plan_layout l = WH_PLAN_LAYOUT_INIT;
  int dev0 = 0;
  int64_t share = B / 2;
  l.devices = &dev0;
  l.shares = &share;
  l.micro_batches = 2;
  CHECK(wh_plan_create_pinned(ctx, g, cl, B, &l, &p));
  wh_session_options so = WH_SESSION_OPTIONS_INIT;
  so.plan = p;
  so.comm = c;
  so.device = WH_DEVICE_CUDA;
  CHECK(wh_session_create(ctx, g, &so, &s));
  trace(g, m, s, pb, &r);
  compare(name, &r, ref, pb / sizeof(float), 1e-5, 1e-4, 1e-4);
  run_free(&r);
  wh_session_destroy(s);
  wh_plan_destroy(p);
  wh_cluster_destroy(cl);
  wh_comm_destroy(c);
}

static void refusals(wh_graph *g) {
  wh_session *s = NULL;
  wh_session_options so = WH_SESSION_OPTIONS_INIT;
  so.batch = B;
  so.device = WH_DEVICE_CUDA;
  so.precision = (wh_precision)7;
  wh_status st = wh_session_create(ctx, g, &so, &s);
  EXPECT(st == WH_ERR_INVALID_ARGUMENT && strstr(wh_last_error(ctx), "precision"),
         "precision 7: %s, \"%s\"", wh_status_str(st), wh_last_error(ctx));
  so.precision = WH_PRECISION_F32;
  so.device_index = wh_cuda_device_count();
  st = wh_session_create(ctx, g, &so, &s);
  EXPECT(st == WH_ERR_INVALID_ARGUMENT && strstr(wh_last_error(ctx), "does not exist"),
         "device %d: %s, \"%s\"", so.device_index, wh_status_str(st), wh_last_error(ctx));
  EXPECT(s == NULL, "a refused session is NULL");
}

/* The fixture: the graph with backward and AdamW, and its CPU run that every case is compared with. */
static wh_graph *graph;
static gpt_model model;
static run ref;
static size_t pb;

static int setup(int argc, char **argv) {
  (void)argc, (void)argv;
  if (wh_cuda_device_count() < 1) {
    printf("no CUDA device (or no CUDA backend in this build): skipped\n");
    return 77;
  }
  wh_ctx_options o = WH_CTX_OPTIONS_INIT;
  o.num_threads = 1;
  if (wh_ctx_create(&ctx, &o) != WH_OK) return 1;
  const gpt_options c = cfg();
  for (int i = 0; i < B * c.context; i++) tok[i] = (i * 7 + i / 5) % c.vocab, tgt[i] = (i * 7 + 1) % c.vocab;
  CHECK(wh_graph_create(ctx, &graph));
  if (!gpt_build(graph, &c, &model)) {
    wt_fail_at(__FILE__, __LINE__, "build: %s", wh_graph_error(graph));
    return 1;
  }
  CHECK(wh_backward(graph, model.loss));
  wh_adamw_options ao = WH_ADAMW_OPTIONS_INIT;
  ao.lr.lr = 3e-3f;
  CHECK(wh_optimizer_adamw(graph, &ao));
  wh_session_options so = WH_SESSION_OPTIONS_INIT;
  so.batch = B;
  wh_session *cpu = NULL;
  CHECK(wh_session_create(ctx, graph, &so, &cpu));
  pb = all_params_bytes(graph, cpu);
  trace(graph, &model, cpu, pb, &ref);
  wh_session_destroy(cpu);
  return 0;
}

static void teardown(void) {
  run_free(&ref);
  wh_graph_destroy(graph);
  wh_ctx_destroy(ctx);
}

typedef struct {
  wh_precision p;
  const char *name;
  double gtol, ltol, ptol;
} mode;

static void on_device(const void *arg) {
  const mode *md = arg;
  wh_session_options so = WH_SESSION_OPTIONS_INIT;
  so.batch = B;
  so.device = WH_DEVICE_CUDA;
  so.precision = md->p;
  wh_session *dev = NULL;
  run r = {0};
  CHECK(wh_session_create(ctx, graph, &so, &dev));
  trace(graph, &model, dev, pb, &r);
  compare(md->name, &r, &ref, pb / sizeof(float), md->gtol, md->ltol, md->ptol);
  run_free(&r);
  wh_session_destroy(dev);
}

static void dp(const void *arg) { data_parallel(graph, &model, *(const wh_comm_backend *)arg, &ref, pb); }

static void refused(const void *arg) {
  (void)arg;
  refusals(graph);
}

static const mode modes[] = {{WH_PRECISION_F32, "cuda fp32", 1e-5, 1e-4, 1e-4},
                             {WH_PRECISION_TF32, "cuda tf32", 3e-2, 1e-2, 3e-2},
                             {WH_PRECISION_BF16, "cuda bf16", 3e-2, 1e-2, 3e-2}};
static const wh_comm_backend backends[] = {WH_COMM_NCCL, WH_COMM_MPI};

static const wt_case cases[] = {
    {"fp32", on_device, &modes[0]},     {"tf32", on_device, &modes[1]}, {"bf16", on_device, &modes[2]},
    {"dp_nccl", dp, &backends[0]},      {"dp_mpi", dp, &backends[1]},   {"refusals", refused, NULL},
};

int main(int argc, char **argv) {
  const wt_suite suite = {"cuda_gpt", setup, teardown, NULL, 0};
  return wt_main(&suite, cases, WT_COUNT(cases), argc, argv);
}
