/* test_models.c - the shape-only model builders of bench/models.c: every model builds (with its
 * backward pass and AdamW), its parameter count matches both a closed-form count of the
 * architecture and the published figure within a stated tolerance, every parameter gets a
 * gradient, stage scopes are where they should be, and building GPT-3 175B is fast and small
 * (no parameter storage). Prints a table of parameters, nodes, values and build times. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "models.h"
#include "whale.h"
#include "../common/runner.h"

static wh_ctx *ctx;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Peak resident set of this process in kB (VmHWM), or -1. */
static long vm_hwm_kb(void) {
  FILE *f = fopen("/proc/self/status", "r");
  if (!f) return -1;
  char line[256];
  long kb = -1;
  while (fgets(line, sizeof line, f))
    if (!strncmp(line, "VmHWM:", 6)) kb = strtol(line + 6, NULL, 10);
  fclose(f);
  return kb;
}

static int64_t numel(const wh_graph *g, wh_value v) {
  int nd;
  int64_t d[WH_MAX_DIMS], n = 1;
  if (wh_value_shape(g, v, &nd, d) != WH_OK) return -1;
  for (int i = 0; i < nd; i++) n *= d[i];
  return n;
}

/* Parameter elements, and how many parameters lack a gradient. */
static int64_t count_params(const wh_graph *g, int *no_grad) {
  int64_t total = 0;
  *no_grad = 0;
  for (int i = 0, n = wh_graph_num_params(g); i < n; i++) {
    wh_value p = wh_graph_param(g, i);
    total += numel(g, p);
    *no_grad += wh_grad(g, p) == WH_NONE;
  }
  return total;
}

/* The stage index recorded for the named value (a parameter), -1 if none. */
static int stage_of(const wh_graph *g, const char *name) {
  wh_value v = wh_graph_find(g, name);
  wh_hint h[8];
  int n = v == WH_NONE ? 0 : wh_value_hints(g, v, h, 8);
  for (int i = 0; i < n && i < 8; i++)
    if (h[i].kind == WH_HINT_STAGE) return h[i].n;
  return -1;
}

/* ---- closed-form parameter counts, derived from the architectures (not from models.c) */

/* GPT: per layer qkv 3C^2+3C, proj C^2+C, fc CF+F, proj FC+C, two LNs 4C; embeddings; ln_f. */
static int64_t gpt_params(int64_t L, int64_t C, int64_t F, int64_t V, int64_t T) {
  return L * (4 * C * C + 2 * C * F + 9 * C + F) + V * C + T * C + 2 * C;
}
static int64_t bert_large_params(void) {
  const int64_t C = 1024, F = 4096, V = 30522;
  return V * C + 512 * C + 2 * C + 2 * C             /* word, position, type embeddings, LN */
         + 24 * (4 * C * C + 2 * C * F + 9 * C + F) /* layers as GPT's */
         + (C * C + C) + 2 * C + V;                 /* MLM transform, its LN, output bias */
}
static int64_t t5_large_params(void) {
  const int64_t C = 1024, F = 4096, V = 32128;
  return V * C + 24 * (4 * C * C + 2 * C * F + 2 * C) + C /* encoder + final norm (scale only) */
         + 24 * (8 * C * C + 2 * C * F + 3 * C) + C;     /* decoder + final norm */
}
static int64_t resnet50_params(int64_t classes) {
  return 25557032 - (2048 * 1000 + 1000) + (2048 * classes + classes); /* torchvision, new FC */
}
static int64_t gnmt_params(void) {
  const int64_t H = 1024, V = 32000;
#define LSTM(in) (4 * H * ((in) + H) + 4 * H)
  return 2 * V * H                                            /* source, target embeddings */
         + 2 * LSTM(H) + LSTM(2 * H) + 6 * LSTM(H)            /* encoder */
         + LSTM(H) + 7 * LSTM(2 * H)                          /* decoder */
         + V * H + V;                                         /* classifier */
#undef LSTM
}

typedef struct {
  const char *name;
  int64_t expect;       /* closed form of the architecture as built */
  double published;     /* the published figure it is compared with */
  double tol;           /* relative tolerance against it */
  double lo, hi;        /* or a range (published 0) */
  int stages;           /* stage scopes expected */
  const char *source;
} model_case;

/* Every model of the catalogue: parameter counts against the closed forms and the published
 * figures, its loss and stage scopes; GPT-3 175B builds fast and small. */
static void catalogue(const void *arg) {
  (void)arg;
  const model_case cases[] = {
      /* gpt3-175b first: its build time and memory peak are measured on a fresh process */
      {"gpt3-175b", gpt_params(96, 12288, 49152, 50304, 2048), 175.0e9, 0.01, 0, 0, 96,
       "GPT-3 paper Table 2.1: 175.0B"},
      {"gpt2-124m", gpt_params(12, 768, 3072, 50304, 1024), 124439808.0, 0.001, 0, 0, 12,
       "HF gpt2, vocab 50257: 124,439,808 (+36,096 for the 47 padding rows)"},
      {"gpt2-1.5b", gpt_params(48, 1600, 6400, 50304, 1024), 1557611200.0, 0.001, 0, 0, 48,
       "HF gpt2-xl, vocab 50257: 1,557,611,200"},
      {"gpt3-6.7b", gpt_params(32, 4096, 16384, 50304, 2048), 6.7e9, 0.02, 0, 0, 32, "GPT-3 paper: 6.7B"},
      {"gpt3-13b", gpt_params(40, 5120, 20480, 50304, 2048), 13.0e9, 0.02, 0, 0, 40, "GPT-3 paper: 13.0B"},
      {"bert-large", bert_large_params(), 335141888.0, 0.005, 0, 0, 24,
       "HF BertModel large: 335,141,888 (with pooler; 336.2M with MLM+NSP heads; paper: 340M)"},
      {"t5-large", t5_large_params(), 737668096.0, 0.0001, 0, 0, 48,
       "HF t5-large, tied head: 737,668,096 (paper's 770M counts a separate 32.9M lm head)"},
      {"resnet50", resnet50_params(1000), 25557032.0, 0.001, 0, 0, 17, "torchvision resnet50: 25,557,032"},
      {"resnet50-100k", resnet50_params(100000), 0, 0, 0, 0, 17, "25.56M with the FC widened to 100k classes"},
      {"resnet50-1m", resnet50_params(1000000), 0, 0, 0, 0, 17, "25.56M with the FC widened to 1M classes"},
      {"gnmt", gnmt_params(), 0, 0, 160e6, 280e6, 0,
       "GNMT 8+8 x 1024: 160M-280M depending on vocab sharing"},
  };
  const int nc = (int)(sizeof cases / sizeof cases[0]);
  EXPECT(wm_num_models() == nc, "wm_num_models() = %d, expected %d", wm_num_models(), nc);

  printf("%-14s %16s %16s %9s %8s %8s %9s %10s\n", "model", "params", "published", "diff", "nodes", "values", "build ms",
         "VmHWM MB");
  long hwm_175b = -1;
  double t_175b = -1;
  for (int c = 0; c < nc; c++) {
    const model_case *m = &cases[c];
    int known = 0;
    for (int i = 0; i < wm_num_models(); i++) known |= !strcmp(wm_model_name(i), m->name);
    EXPECT(known, "%s is not in wm_model_name's list", m->name);
    wh_graph *g = NULL;
    if (wh_graph_create(ctx, &g) != WH_OK) {
      EXPECT(0, "%s: wh_graph_create failed", m->name);
      continue;
    }
    wh_value loss = WH_NONE;
    double t0 = now();
    int rc = wm_build(m->name, g, &loss);
    double dt = now() - t0;
    long hwm = vm_hwm_kb();
    EXPECT(rc == 0 && wh_graph_status(g) == WH_OK, "%s: wm_build returned %d: %s / %s", m->name, rc,
          wh_graph_error(g), wh_last_error(ctx));
    if (rc != 0) {
      wh_graph_destroy(g);
      continue;
    }
    int no_grad = 0;
    int64_t p = count_params(g, &no_grad);
    EXPECT(p == m->expect, "%s: %lld parameters, the architecture's closed form gives %lld", m->name, (long long)p,
          (long long)m->expect);
    EXPECT(no_grad == 0, "%s: %d parameters get no gradient", m->name, no_grad);
    double ref = m->published > 0 ? m->published : 0, diff = ref > 0 ? ((double)p - ref) / ref : 0;
    if (m->published > 0)
      EXPECT(fabs(diff) <= m->tol, "%s: %lld parameters is %.3f%% from the published %.0f (tolerance %.2f%%)",
            m->name, (long long)p, 100 * diff, ref, 100 * m->tol);
    else if (m->hi > 0)
      EXPECT((double)p >= m->lo && (double)p <= m->hi, "%s: %lld parameters outside [%.0f, %.0f]", m->name,
            (long long)p, m->lo, m->hi);
    EXPECT(loss != WH_NONE && wh_graph_find(g, "loss") == loss && numel(g, loss) == 1, "%s: no scalar 'loss'",
          m->name);
    /* stage scopes: count the distinct stage indices on parameters */
    int max_stage = -1;
    for (int i = 0, n = wh_graph_num_params(g); i < n; i++) {
      wh_hint h[8];
      int k = wh_value_hints(g, wh_graph_param(g, i), h, 8);
      for (int j = 0; j < k && j < 8; j++)
        if (h[j].kind == WH_HINT_STAGE && h[j].n > max_stage) max_stage = h[j].n;
    }
    EXPECT(max_stage + 1 == m->stages, "%s: %d stage scopes, expected %d", m->name, max_stage + 1, m->stages);
    if (ref > 0)
      printf("%-14s %16lld %16.0f %+8.3f%% %8d %8d %9.1f %10.1f\n", m->name, (long long)p, ref, 100 * diff,
             wh_graph_num_nodes(g), wh_graph_num_values(g), 1e3 * dt, hwm / 1024.0);
    else
      printf("%-14s %16lld %16s %9s %8d %8d %9.1f %10.1f\n", m->name, (long long)p,
             m->hi > 0 ? "160M-280M" : "-", "", wh_graph_num_nodes(g), wh_graph_num_values(g), 1e3 * dt,
             hwm / 1024.0);
    printf("    (%s)\n", m->source);
    if (!strcmp(m->name, "gpt3-175b")) hwm_175b = hwm, t_175b = dt;
    wh_graph_destroy(g);
  }

  /* GPT-3 175B: shape-only, so fast and small */
  EXPECT(t_175b >= 0 && t_175b < 1.0, "gpt3-175b took %.3f s to build (limit 1 s)", t_175b);
  EXPECT(hwm_175b > 0 && hwm_175b < 300 * 1024, "gpt3-175b: process peak RSS %.1f MB (limit 300 MB)",
        hwm_175b / 1024.0);
  long hwm_all = vm_hwm_kb();
  EXPECT(hwm_all > 0 && hwm_all < 300 * 1024, "all models: process peak RSS %.1f MB (limit 300 MB)", hwm_all / 1024.0);

}

/* exact GPT-2 counts at the unpadded vocabulary */
static void gpt2_exact(const void *arg) {
  (void)arg;
  {
    const struct {
      const char *preset;
      int64_t published;
    } gp[] = {{"gpt2-124m", 124439808}, {"gpt2-1.5b", 1557611200}};
    for (int i = 0; i < 2; i++) {
      wm_gpt_cfg cfg;
      EXPECT(wm_gpt_preset(gp[i].preset, &cfg) == 0, "preset %s missing", gp[i].preset);
      cfg.vocab = 50257;
      wh_graph *g = NULL;
      wh_graph_create(ctx, &g);
      wh_value l = wm_gpt(g, &cfg);
      int ng;
      int64_t p = count_params(g, &ng);
      EXPECT(l != WH_NONE && p == gp[i].published, "%s at vocab 50257: %lld parameters, published %lld",
            gp[i].preset, (long long)p, (long long)gp[i].published);
      wh_graph_destroy(g);
    }
  }

}

/* shapes, names and stage placement of a small GPT */
static void small_gpt(const void *arg) {
  (void)arg;
  {
    wh_graph *g = NULL;
    wh_graph_create(ctx, &g);
    wm_gpt_cfg cfg = {3, 4, 64, 256, 100, 16};
    wh_value l = wm_gpt(g, &cfg);
    int nd;
    int64_t d[WH_MAX_DIMS];
    wh_value tok = wh_graph_find(g, "tokens");
    EXPECT(l != WH_NONE && tok != WH_NONE && wh_value_shape(g, tok, &nd, d) == WH_OK && nd == 2 && d[0] == WH_BATCH &&
              d[1] == 16 && wh_value_dtype(g, tok) == WH_I32,
          "small gpt: tokens is not [B, 16] i32");
    EXPECT(wh_graph_find(g, "targets") != WH_NONE, "small gpt: no targets input");
    EXPECT(stage_of(g, "h0.attn.qkv.w") == 0 && stage_of(g, "h2.mlp.proj.w") == 2 && stage_of(g, "wte") == -1,
          "small gpt: stage scopes misplaced (h0 %d, h2 %d, wte %d)", stage_of(g, "h0.attn.qkv.w"),
          stage_of(g, "h2.mlp.proj.w"), stage_of(g, "wte"));
    wh_graph_destroy(g);
  }

}

/* non-default sizes */
static void sizes(const void *arg) {
  (void)arg;
  {
    wh_graph *g = NULL;
    wh_graph_create(ctx, &g);
    wh_value l = wm_resnet50(g, 10, 64);
    int ng;
    int64_t p = count_params(g, &ng);
    EXPECT(l != WH_NONE && p == resnet50_params(10), "resnet50 at 64x64, 10 classes: %s (%lld parameters)",
          wh_graph_error(g), (long long)p);
    wh_graph_destroy(g);
    wh_graph_create(ctx, &g);
    l = wm_gnmt(g, 7, 100); /* 100 steps: concatenation is chunked below the autodiff's 64 inputs */
    int rc = l == WH_NONE ? -1 : (int)wh_backward(g, l);
    EXPECT(rc == 0 && count_params(g, &ng) == gnmt_params() && ng == 0, "gnmt 7 -> 100 steps: %s / %s",
          wh_graph_error(g), wh_last_error(ctx));
    wh_graph_destroy(g);
    wh_graph_create(ctx, &g);
    l = wm_t5_large(g, 64, 32);
    EXPECT(l != WH_NONE && count_params(g, &ng) == t5_large_params(), "t5-large 64/32: %s", wh_graph_error(g));
    wh_graph_destroy(g);
    wh_graph_create(ctx, &g);
    l = wm_bert_large(g, 128); /* the 512-row position table is kept and sliced */
    EXPECT(l != WH_NONE && count_params(g, &ng) == bert_large_params(), "bert-large seq 128: %s", wh_graph_error(g));
    wh_graph_destroy(g);
  }

}

/* failures: unknown names leave the graph alone; bad shapes poison it with a message */
static void failures(const void *arg) {
  (void)arg;
  {
    wh_graph *g = NULL;
    wh_graph_create(ctx, &g);
    wh_value l = 7;
    EXPECT(wm_build("gpt4", g, &l) == WH_ERR_NOT_FOUND && l == WH_NONE && wh_graph_status(g) == WH_OK &&
              wh_graph_num_values(g) == 0,
          "unknown model name not reported cleanly");
    wm_gpt_cfg cfg;
    EXPECT(wm_gpt_preset("gpt4", &cfg) == -1, "unknown preset accepted");
    wm_gpt_cfg bad = {2, 5, 64, 256, 100, 16}; /* 64 not divisible by 5 heads */
    EXPECT(wm_gpt(g, &bad) == WH_NONE && wh_graph_status(g) != WH_OK && wh_graph_error(g)[0] != 0,
          "a bad GPT config did not poison the graph with a message");
    EXPECT(wm_build("gpt2-124m", g, &l) != 0 && l == WH_NONE, "wm_build on a poisoned graph reported success");
    wh_graph_destroy(g);
  }

}

static int setup(int argc, char **argv) {
  (void)argc, (void)argv;
  if (wh_ctx_create(&ctx, NULL) != WH_OK) {
    printf("FAIL cannot create a context\n");
    return 1;
  }
  return 0;
}

static void teardown(void) { wh_ctx_destroy(ctx); }

static const wt_case cases[] = {
    {"catalogue", catalogue, NULL}, /* first: gpt3-175b's build time and peak are measured on a fresh process */
    {"gpt2_exact", gpt2_exact, NULL},
    {"small_gpt", small_gpt, NULL},
    {"sizes", sizes, NULL},
    {"failures", failures, NULL},
};

int main(int argc, char **argv) {
  const wt_suite suite = {"models", setup, teardown, NULL, 0};
  return wt_main(&suite, cases, WT_COUNT(cases), argc, argv);
}
