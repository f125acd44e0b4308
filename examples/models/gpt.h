/* gpt.h - the one GPT that examples, benchmarks and tests build through the public API: GPT-2 shaped
 * (learned positions, pre-LayerNorm blocks, fused-qkv causal attention, tanh GELU, tied embedding).
 *
 * What the callers differ in is an option; everything else (the order of nodes and parameters,
 * their names and seeds) is fixed here, because graph construction order decides parameter init
 * and node order: a caller that switches to this builder gets bitwise the graph it built before. */
#ifndef WH_EXAMPLES_MODELS_GPT_H
#define WH_EXAMPLES_MODELS_GPT_H

#include "whale.h"

typedef enum gpt_names {
  GPT_NAMES_LONG,  /* h0.attn.qkv, h0.attn.proj, h0.mlp.fc, h0.mlp.proj (PyTorch-reference style) */
  GPT_NAMES_SHORT, /* h0.qkv, h0.proj, h0.fc, h0.fcproj */
} gpt_names;

typedef struct gpt_options {
  int vocab, context, width, layers, heads;
  gpt_names names;
  /* Initialisation, GPT-2's: weights (and wte) N(0, std), wpe N(0, pos_std), biases 0, LayerNorm
   * gains 1; the residual projections (attn.proj, mlp.proj) at std / sqrt(2 layers) when
   * scaled_proj. zero_init: every parameter starts at 0 (the caller loads the values). */
  float std, pos_std;
  int scaled_proj, zero_init;
  /* Which LayerNorm parameter is made first. The order numbers the parameters, and the optimizer's
   * global-norm clipping sums over them in that order, so it is part of the model: the GPT-2
   * benchmarks and examples/gpt_text.c have made the bias first, the PyTorch parity test the gain. */
  int ln_gain_first;
  /* Hint scopes around each block: a stage (a natural pipeline cut) and recomputation. */
  int stage_per_block, recompute_per_block;
  /* Optional: told of every parameter as it is made, in creation order (name valid during the call). */
  void (*on_param)(void *user, wh_value p, const char *name);
  void *user;
} gpt_options;

/* GPT-2 small's shape and initialisation (124M; vocabulary padded to 50304). */
#define GPT_OPTIONS_INIT {50304, 1024, 768, 12, 12, GPT_NAMES_SHORT, 0.02f, 0.01f, 0, 0, 0, 0, 0, NULL, NULL}

typedef struct gpt_model {
  wh_value tokens, targets; /* inputs [B, T] int32 */
  wh_value logits, loss;    /* [B, T, vocab]; scalar mean cross entropy */
  int64_t params;           /* parameter count */
} gpt_model;

/* Build into g; returns 0 when the graph reports an error (see wh_graph_error). The caller adds
 * backward, optimizer and names. */
int gpt_build(wh_graph *g, const gpt_options *o, gpt_model *m);

/* x [.., in] -> [.., out] through name.w [out, in] ~ N(0, std) (seeded) and name.b = 0. */
wh_value gpt_linear(wh_graph *g, wh_value x, const char *name, int in, int out, uint64_t seed, float std);

#endif
