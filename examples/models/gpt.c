/* gpt.c - the GPT builder of gpt.h. Parameters are made in one fixed order (per linear: weight then
 * bias; per LayerNorm: as ln_gain_first says) with seeds fixed per parameter, so every backend and every
 * caller starting from the same options starts from identical values. */
#include "gpt.h"

#include <math.h>
#include <stdio.h>

#define DIMS(...) (int64_t[]){__VA_ARGS__}

typedef struct builder {
  wh_graph *g;
  const gpt_options *o;
} builder;

static wh_value param(const builder *b, const char *name, int nd, const int64_t *d, wh_init init) {
  if (b->o->zero_init) init = WH_INIT(WH_INIT_ZEROS, 0, 0, 0);
  wh_value p = wh_param(b->g, name, WH_F32, nd, d, init);
  if (b->o->on_param) b->o->on_param(b->o->user, p, name);
  return p;
}

static wh_value linear(const builder *b, wh_value x, const char *name, int in, int out, uint64_t seed, float std) {
  char wn[64], bn[64];
  snprintf(wn, sizeof wn, "%s.w", name);
  snprintf(bn, sizeof bn, "%s.b", name);
  wh_value w = param(b, wn, 2, DIMS(out, in), WH_INIT(WH_INIT_NORMAL, 0, std, seed));
  wh_value bias = param(b, bn, 1, DIMS(out), WH_INIT(WH_INIT_ZEROS, 0, 0, 0));
  return wh_bias_add(b->g, wh_matmul(b->g, x, w, 0, 1), bias, -1);
}

wh_value gpt_linear(wh_graph *g, wh_value x, const char *name, int in, int out, uint64_t seed, float std) {
  const gpt_options o = GPT_OPTIONS_INIT;
  const builder b = {g, &o};
  return linear(&b, x, name, in, out, seed, std);
}

static wh_value layernorm(const builder *b, wh_value x, const char *name, int c) {
  char gn[64], bn[64];
  snprintf(gn, sizeof gn, "%s.g", name);
  snprintf(bn, sizeof bn, "%s.b", name);
  wh_value gain = WH_NONE, bias = WH_NONE;
  if (b->o->ln_gain_first) gain = param(b, gn, 1, DIMS(c), WH_INIT(WH_INIT_ONES, 0, 0, 0));
  bias = param(b, bn, 1, DIMS(c), WH_INIT(WH_INIT_ZEROS, 0, 0, 0));
  if (!b->o->ln_gain_first) gain = param(b, gn, 1, DIMS(c), WH_INIT(WH_INIT_ONES, 0, 0, 0));
  return wh_layernorm(b->g, x, gain, bias, 1e-5f);
}

int gpt_build(wh_graph *g, const gpt_options *o, gpt_model *m) {
  const builder b = {g, o};
  const int T = o->context, C = o->width;
  const int shortn = o->names == GPT_NAMES_SHORT;
  const float std = o->std, proj_std = o->scaled_proj ? o->std / sqrtf(2.0f * (float)o->layers) : o->std;
  m->tokens = wh_input(g, "tokens", WH_I32, 2, DIMS(WH_BATCH, T));
  m->targets = wh_input(g, "targets", WH_I32, 2, DIMS(WH_BATCH, T));
  wh_value wte = param(&b, "wte", 2, DIMS(o->vocab, C), WH_INIT(WH_INIT_NORMAL, 0, std, 1));
  wh_value wpe = param(&b, "wpe", 2, DIMS(T, C), WH_INIT(WH_INIT_NORMAL, 0, o->pos_std, 2));
  wh_value x = wh_add(g, wh_embedding(g, wte, m->tokens), wpe); /* [B,T,C] + [T,C] */
  for (int l = 0; l < o->layers; l++) {
    char nm[64];
    uint64_t seed = 100 + 10 * (uint64_t)l;
    if (o->stage_per_block) wh_scope_stage(g);
    if (o->recompute_per_block) wh_scope_recompute(g);
    snprintf(nm, sizeof nm, "h%d.ln1", l);
    wh_value h = layernorm(&b, x, nm, C);
    snprintf(nm, sizeof nm, shortn ? "h%d.qkv" : "h%d.attn.qkv", l);
    wh_value a = wh_attention(g, linear(&b, h, nm, C, 3 * C, seed + 1, std), o->heads);
    snprintf(nm, sizeof nm, shortn ? "h%d.proj" : "h%d.attn.proj", l);
    x = wh_add(g, x, linear(&b, a, nm, C, C, seed + 2, proj_std));
    snprintf(nm, sizeof nm, "h%d.ln2", l);
    h = layernorm(&b, x, nm, C);
    snprintf(nm, sizeof nm, shortn ? "h%d.fc" : "h%d.mlp.fc", l);
    h = wh_gelu(g, linear(&b, h, nm, C, 4 * C, seed + 3, std));
    snprintf(nm, sizeof nm, shortn ? "h%d.fcproj" : "h%d.mlp.proj", l);
    x = wh_add(g, x, linear(&b, h, nm, 4 * C, C, seed + 4, proj_std));
    if (o->recompute_per_block) wh_scope_end(g);
    if (o->stage_per_block) wh_scope_end(g);
  }
  x = layernorm(&b, x, "ln_f", C);
  m->logits = wh_matmul(g, x, wte, 0, 1); /* weight tying: wte is used twice */
  m->loss = wh_cross_entropy(g, m->logits, m->targets);
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
