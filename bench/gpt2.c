/* gpt2.c - the GPT-2 shaped model of gpt2.h. Initialisation as GPT-2: N(0, 0.02) weights, zero
 * biases, unit LayerNorm gains; seeds fixed per parameter so every backend starts identical. */
#include "gpt2.h"

#include <stdio.h>

#define DIMS(...) (int64_t[]){__VA_ARGS__}

wh_value gpt2_linear(wh_graph *g, wh_value x, const char *name, int in, int out, uint64_t seed) {
  char wn[64], bn[64];
  snprintf(wn, sizeof wn, "%s.w", name);
  snprintf(bn, sizeof bn, "%s.b", name);
  wh_value w = wh_param(g, wn, WH_F32, 2, DIMS(out, in), WH_INIT(WH_INIT_NORMAL, 0, 0.02f, seed));
  wh_value b = wh_param(g, bn, WH_F32, 1, DIMS(out), WH_INIT(WH_INIT_ZEROS, 0, 0, 0));
  return wh_bias_add(g, wh_matmul(g, x, w, 0, 1), b, -1);
}

static wh_value layernorm(wh_graph *g, wh_value x, const char *name, int c) {
  char gn[64], bn[64];
  snprintf(gn, sizeof gn, "%s.g", name);
  snprintf(bn, sizeof bn, "%s.b", name);
  return wh_layernorm(g, x, wh_param(g, gn, WH_F32, 1, DIMS(c), WH_INIT(WH_INIT_ONES, 0, 0, 0)),
                      wh_param(g, bn, WH_F32, 1, DIMS(c), WH_INIT(WH_INIT_ZEROS, 0, 0, 0)), 1e-5f);
}

int gpt2_build(wh_graph *g, const gpt2_config *c, gpt2 *m) {
  const int T = c->context, C = c->width, V = c->vocab, H = c->heads;
  m->tokens = wh_input(g, "tokens", WH_I32, 2, DIMS(WH_BATCH, T));
  m->targets = wh_input(g, "targets", WH_I32, 2, DIMS(WH_BATCH, T));
  wh_value wte = wh_param(g, "wte", WH_F32, 2, DIMS(V, C), WH_INIT(WH_INIT_NORMAL, 0, 0.02f, 1));
  wh_value wpe = wh_param(g, "wpe", WH_F32, 2, DIMS(T, C), WH_INIT(WH_INIT_NORMAL, 0, 0.01f, 2));
  wh_value x = wh_add(g, wh_embedding(g, wte, m->tokens), wpe);
  for (int l = 0; l < c->layers; l++) {
    char nm[64];
    uint64_t s = 100 + 10 * (uint64_t)l;
    snprintf(nm, sizeof nm, "h%d.ln1", l);
    wh_value h = layernorm(g, x, nm, C);
    snprintf(nm, sizeof nm, "h%d.qkv", l);
    wh_value a = wh_attention(g, gpt2_linear(g, h, nm, C, 3 * C, s + 1), H);
    snprintf(nm, sizeof nm, "h%d.proj", l);
    x = wh_add(g, x, gpt2_linear(g, a, nm, C, C, s + 2));
    snprintf(nm, sizeof nm, "h%d.ln2", l);
    h = layernorm(g, x, nm, C);
    snprintf(nm, sizeof nm, "h%d.fc", l);
    h = wh_gelu(g, gpt2_linear(g, h, nm, C, 4 * C, s + 3));
    snprintf(nm, sizeof nm, "h%d.fcproj", l);
    x = wh_add(g, x, gpt2_linear(g, h, nm, 4 * C, C, s + 4));
  }
  x = layernorm(g, x, "ln_f", C);
  m->loss = wh_cross_entropy(g, wh_matmul(g, x, wte, 0, 1), m->targets);
  m->params = 0;
  for (int i = 0; i < wh_graph_num_params(g); i++) {
    int nd = 0;
    int64_t d[WH_MAX_DIMS], n = 1;
    if (wh_value_shape(g, wh_graph_param(g, i), &nd, d) != WH_OK) return 0;
    for (int k = 0; k < nd; k++) n *= d[k];
    m->params += n;
  }
  return wh_graph_status(g) == WH_OK;
}
