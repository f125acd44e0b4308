/* gpt2.h - a GPT-2 shaped model built through the public API (pre-LayerNorm blocks, fused-qkv
 * causal attention, tanh GELU MLP, tied embeddings), shared by the GPU benchmark and tests. */
#ifndef WH_BENCH_GPT2_H
#define WH_BENCH_GPT2_H

#include "whale.h"

typedef struct gpt2_config {
  int vocab, context, width, layers, heads;
} gpt2_config;

typedef struct gpt2 {
  wh_value tokens, targets, loss; /* inputs [B, T] int32, scalar mean cross entropy */
  int64_t params;                 /* parameter count */
} gpt2;

/* x [.., in] -> [.., out] through parameters name.w [out, in] ~ N(0, 0.02) (seeded) and name.b = 0. */
wh_value gpt2_linear(wh_graph *g, wh_value x, const char *name, int in, int out, uint64_t seed);

/* Build into g; returns 0 when the graph reports an error (see wh_graph_error). */
int gpt2_build(wh_graph *g, const gpt2_config *c, gpt2 *out);

#endif
