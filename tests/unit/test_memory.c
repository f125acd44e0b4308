/* test_memory.c - the memory plan's options change memory, never numbers: a small GPT trained
 * with no reuse tricks, with in-place execution, and with in-place plus recomputation gives
 * bitwise-identical losses and parameters while each planned peak is lower than the last. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "whale.h"
#include "../common/runner.h"

#define DIMS(...) (int64_t[]){__VA_ARGS__}
#define B 4
#define T 16
#define C 32
#define V 64
#define L 3
#define STEPS 5

static wh_ctx *ctx;

static wh_value P(wh_graph *g, const char *fmt, int l, int nd, const int64_t *d, wh_init init) {
  char nm[64];
  snprintf(nm, sizeof nm, fmt, l);
  return wh_param(g, nm, WH_F32, nd, d, init);
}

static wh_value linear(wh_graph *g, wh_value x, const char *w, const char *b, int l, int in, int out) {
  wh_value W = P(g, w, l, 2, DIMS(out, in), WH_INIT(WH_INIT_NORMAL, 0, 0.1f, 7 + (uint64_t)l * 13 + (uint64_t)out));
  wh_value bb = P(g, b, l, 1, DIMS(out), WH_INIT(WH_INIT_UNIFORM, -0.1f, 0.1f, 3 + (uint64_t)l));
  return wh_bias_add(g, wh_matmul(g, x, W, 0, 1), bb, -1);
}

static wh_graph *build(wh_ctx *ctx, wh_value *tok, wh_value *tgt, wh_value *loss) {
  wh_graph *g;
  wh_graph_create(ctx, &g);
  *tok = wh_input(g, "tokens", WH_I32, 2, DIMS(WH_BATCH, T));
  *tgt = wh_input(g, "targets", WH_I32, 2, DIMS(WH_BATCH, T));
  wh_value wte = wh_param(g, "wte", WH_F32, 2, DIMS(V, C), WH_INIT(WH_INIT_NORMAL, 0, 0.1f, 1));
  wh_value wpe = wh_param(g, "wpe", WH_F32, 2, DIMS(T, C), WH_INIT(WH_INIT_NORMAL, 0, 0.1f, 2));
  wh_value x = wh_add(g, wh_embedding(g, wte, *tok), wpe);
  for (int l = 0; l < L; l++) {
    wh_scope_recompute(g);
    wh_value h = wh_layernorm(g, x, P(g, "l%d.ln1.g", l, 1, DIMS(C), WH_INIT(WH_INIT_ONES, 0, 0, 0)),
                              P(g, "l%d.ln1.b", l, 1, DIMS(C), WH_INIT(WH_INIT_ZEROS, 0, 0, 0)), 1e-5f);
    wh_value a = wh_attention(g, linear(g, h, "l%d.qkv.w", "l%d.qkv.b", l, C, 3 * C), 4);
    x = wh_add(g, x, wh_dropout(g, linear(g, a, "l%d.proj.w", "l%d.proj.b", l, C, C), 0.1f, 40 + (uint64_t)l));
    h = wh_layernorm(g, x, P(g, "l%d.ln2.g", l, 1, DIMS(C), WH_INIT(WH_INIT_ONES, 0, 0, 0)),
                     P(g, "l%d.ln2.b", l, 1, DIMS(C), WH_INIT(WH_INIT_ZEROS, 0, 0, 0)), 1e-5f);
    h = wh_gelu(g, linear(g, h, "l%d.fc.w", "l%d.fc.b", l, C, 4 * C));
    x = wh_add(g, x, linear(g, h, "l%d.fcp.w", "l%d.fcp.b", l, 4 * C, C));
    wh_scope_end(g);
  }
  x = wh_layernorm(g, x, wh_param(g, "lnf.g", WH_F32, 1, DIMS(C), WH_INIT(WH_INIT_ONES, 0, 0, 0)),
                   wh_param(g, "lnf.b", WH_F32, 1, DIMS(C), WH_INIT(WH_INIT_ZEROS, 0, 0, 0)), 1e-5f);
  *loss = wh_cross_entropy(g, wh_matmul(g, x, wte, 0, 1), *tgt);
  wh_backward(g, *loss);
  wh_adamw_options o = WH_ADAMW_OPTIONS_INIT;
  o.lr.lr = 3e-3f;
  o.clip_norm = 1.0f;
  wh_optimizer_adamw(g, &o);
  return g;
}

typedef struct {
  float loss[STEPS];
  float *params;
  size_t nparams;
  uint64_t arena, live;
  int64_t inplace, recomputed;
} run_result;

static int train(wh_ctx *ctx, wh_graph *g, wh_value tok, wh_value tgt, wh_value loss, int inplace, int recompute,
                 run_result *r) {
  wh_session *s;
  wh_session_options so = WH_SESSION_OPTIONS_INIT;
  so.batch = B;
  so.inplace = inplace;
  so.recompute = recompute;
  if (wh_session_create(ctx, g, &so, &s) != WH_OK) {
    printf("session: %s\n", wh_last_error(ctx));
    return 1;
  }
  wh_memory_stats ms = WH_MEMORY_STATS_INIT;
  wh_session_memory(s, &ms);
  r->arena = ms.arena_bytes;
  r->live = ms.live_peak_bytes;
  r->inplace = ms.inplace_ops;
  r->recomputed = ms.recomputed_ops;
  int32_t tk[B * T], tg[B * T];
  for (int step = 0; step < STEPS; step++) {
    for (int i = 0; i < B * T; i++) {
      tk[i] = (i * 7 + step * 3) % V;
      tg[i] = (i * 5 + step + 1) % V;
    }
    wh_session_feed(s, tok, tk, sizeof tk);
    wh_session_feed(s, tgt, tg, sizeof tg);
    if (wh_session_step(s) != WH_OK || wh_session_fetch(s, loss, &r->loss[step], sizeof(float)) != WH_OK) {
      printf("step: %s\n", wh_last_error(ctx));
      wh_session_destroy(s);
      return 1;
    }
  }
  r->nparams = 0;
  for (int i = 0; i < wh_graph_num_params(g); i++) r->nparams += wh_session_bytes(s, wh_graph_param(g, i));
  r->params = malloc(r->nparams);
  size_t off = 0;
  for (int i = 0; i < wh_graph_num_params(g); i++) {
    wh_value p = wh_graph_param(g, i);
    wh_session_get_param(s, p, (char *)r->params + off, wh_session_bytes(s, p));
    off += wh_session_bytes(s, p);
  }
  wh_session_destroy(s);
  return 0;
}

/* A reshape view inside a recompute scope, read by a backward matmul: the view's root must live
 * as long as the view (the chain runs through a clone), or dW comes out of reused memory. */
static void test_recomputed_view(const void *arg) {
  (void)arg;
  wh_graph *g;
  wh_graph_create(ctx, &g);
  wh_value in = wh_input(g, "in", WH_F32, 2, DIMS(WH_BATCH, 4 * 8));
  wh_value t = wh_input(g, "t", WH_F32, 3, DIMS(WH_BATCH, 4, 8));
  wh_value w = wh_param(g, "w", WH_F32, 2, DIMS(8, 8), WH_INIT(WH_INIT_NORMAL, 0, 0.5f, 9));
  wh_value x = wh_tanh(g, in);
  wh_scope_recompute(g);
  wh_value y = wh_matmul(g, wh_reshape(g, x, 3, DIMS(WH_BATCH, 4, 8)), w, 0, 0);
  wh_scope_end(g);
  wh_value loss = wh_mse(g, y, t);
  wh_backward(g, loss);
  float xin[2 * 32], tt[2 * 32], dw[2][64];
  for (int i = 0; i < 64; i++) xin[i] = (float)((i * 7) % 11) / 5.0f - 1.0f, tt[i] = (float)((i * 3) % 5) / 4.0f;
  for (int rc = 0; rc < 2; rc++) {
    wh_session *s;
    wh_session_options so = WH_SESSION_OPTIONS_INIT;
    so.batch = 2;
    so.recompute = rc;
    if (wh_session_create(ctx, g, &so, &s) != WH_OK) {
      EXPECT(0, "session: %s", wh_last_error(ctx));
      wh_graph_destroy(g);
      return;
    }
    wh_session_feed(s, in, xin, sizeof xin);
    wh_session_feed(s, t, tt, sizeof tt);
    EXPECT(wh_session_run(s, WH_RUN_GRAD) == WH_OK, "run: %s", wh_last_error(ctx));
    EXPECT(wh_session_fetch(s, wh_grad(g, w), dw[rc], sizeof dw[rc]) == WH_OK, "fetch: %s", wh_last_error(ctx));
    wh_session_destroy(s);
  }
  EXPECT(memcmp(dw[0], dw[1], sizeof dw[0]) == 0, "a recomputed reshape view changed dW (%g vs %g)", dw[1][0],
         dw[0][0]);
  wh_graph_destroy(g);
}

/* The three memory plans train the same GPT: bitwise the same, each peak lower than the last. */
static void test_plans(const void *arg) {
  (void)arg;
  wh_value tok, tgt, loss;
  wh_graph *g = build(ctx, &tok, &tgt, &loss);
  EXPECT(wh_graph_status(g) == WH_OK, "build: %s", wh_graph_error(g));
  run_result base, inpl, reco;
  if (train(ctx, g, tok, tgt, loss, 0, 0, &base) || train(ctx, g, tok, tgt, loss, 1, 0, &inpl) ||
      train(ctx, g, tok, tgt, loss, 1, 1, &reco)) {
    EXPECT(0, "a training run failed");
    wh_graph_destroy(g);
    return;
  }
  printf("%-24s %12s %12s %8s %11s\n", "plan", "arena bytes", "live peak", "in-place", "recomputed");
  const run_result *rs[3] = {&base, &inpl, &reco};
  const char *names[3] = {"lifetime reuse only", "+ in-place", "+ in-place + recompute"};
  for (int i = 0; i < 3; i++)
    printf("%-24s %12llu %12llu %8lld %11lld\n", names[i], (unsigned long long)rs[i]->arena,
           (unsigned long long)rs[i]->live, (long long)rs[i]->inplace, (long long)rs[i]->recomputed);
  EXPECT(base.inplace == 0 && inpl.inplace > 0 && base.recomputed == 0 && inpl.recomputed == 0 && reco.recomputed > 0,
         "option counts do not follow the options");
  EXPECT(inpl.live <= base.live, "in-place raised the live peak (%llu vs %llu)", (unsigned long long)inpl.live,
         (unsigned long long)base.live);
  EXPECT(reco.live < inpl.live, "recompute did not lower the live peak");
  EXPECT(reco.arena < inpl.arena, "recompute did not lower the peak (%llu vs %llu)", (unsigned long long)reco.arena,
         (unsigned long long)inpl.arena);
  for (int i = 0; i < STEPS; i++) {
    EXPECT(memcmp(&base.loss[i], &inpl.loss[i], sizeof(float)) == 0, "step %d loss in-place %.9g vs %.9g", i,
           inpl.loss[i], base.loss[i]);
    EXPECT(memcmp(&base.loss[i], &reco.loss[i], sizeof(float)) == 0, "step %d loss recompute %.9g vs %.9g", i,
           reco.loss[i], base.loss[i]);
  }
  EXPECT(base.loss[STEPS - 1] < base.loss[0], "training did not lower the loss (%g -> %g)", base.loss[0],
         base.loss[STEPS - 1]);
  EXPECT(memcmp(base.params, inpl.params, base.nparams) == 0, "final parameters differ with in-place");
  EXPECT(memcmp(base.params, reco.params, base.nparams) == 0, "final parameters differ with recompute");
  printf("losses: %.6f ... %.6f, all three runs bitwise equal: %s\n", base.loss[0], base.loss[STEPS - 1],
         wt_failed ? "no" : "yes");
  free(base.params), free(inpl.params), free(reco.params);
  wh_graph_destroy(g);
}

static int setup(int argc, char **argv) {
  (void)argc, (void)argv;
  wh_ctx_options co = WH_CTX_OPTIONS_INIT;
  co.num_threads = 2;
  return wh_ctx_create(&ctx, &co) != WH_OK;
}

static void teardown(void) { wh_ctx_destroy(ctx); }

static const wt_case cases[] = {
    {"plans", test_plans, NULL},
    {"recomputed_view", test_recomputed_view, NULL},
};

int main(int argc, char **argv) {
  const wt_suite suite = {"memory", setup, teardown, NULL, 0};
  return wt_main(&suite, cases, WT_COUNT(cases), argc, argv);
}
