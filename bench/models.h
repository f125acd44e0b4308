/* models.h - shape-only builders of published models for the planner and its benchmarks.
 *
 * Each builder adds a model's forward pass to a graph and returns its scalar loss. Building
 * allocates no parameter storage (only a session would), so even GPT-3 175B builds in a
 * fraction of a second and a few megabytes: the graph holds ops, shapes and costs only.
 * Batch dimensions are symbolic (WH_BATCH); the planner binds them.
 *
 * Every builder returns WH_NONE after a failed library call; the graph then holds the message
 * (wh_graph_error). Nothing is printed. */
#ifndef WM_MODELS_H
#define WM_MODELS_H

#include "whale.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ GPT */

typedef struct {
  int layers, heads, width, ffn, vocab, context;
} wm_gpt_cfg;

/* GPT-2/GPT-3 style causal decoder: inputs "tokens" and "targets" [WH_BATCH, context] i32,
 * learned positions, pre-LN blocks (fused qkv + wh_attention, GELU MLP of width ffn), each
 * block inside its own stage scope, final LN, output head tied to the token embedding,
 * cross-entropy. Returns the loss. */
wh_value wm_gpt(wh_graph *g, const wm_gpt_cfg *c);

/* "gpt2-124m", "gpt2-1.5b", "gpt3-6.7b", "gpt3-13b", "gpt3-175b" (vocab padded to 50304).
 * Returns 0, or -1 (out untouched) for an unknown name. */
int wm_gpt_preset(const char *name, wm_gpt_cfg *out);

/* ----------------------------------------------------------- encoders */

/* BERT-Large: 24 post-LN layers, width 1024, 16 heads, ffn 4096, vocab 30522, 512 learned
 * positions, 2 segment types; inputs "tokens", "segments", "targets" [WH_BATCH, seq] i32; MLM
 * head (dense + GELU + LN, decoder tied to the word embedding, output bias) over every position.
 * seq <= 0 means 512. Each layer is a stage scope. */
wh_value wm_bert_large(wh_graph *g, int seq);

/* T5-Large (v1.0): 24 encoder + 24 decoder layers, d_model 1024, ffn 4096 (ReLU), 16 heads of
 * 64, vocab 32128, embedding shared by encoder, decoder and output head. Inputs "src_tokens"
 * [WH_BATCH, src_len], "tgt_tokens" and "targets" [WH_BATCH, tgt_len] i32. Lengths <= 0 mean
 * 512 and 128. Each encoder and each decoder layer is a stage scope. */
wh_value wm_t5_large(wh_graph *g, int src_len, int tgt_len);

/* ------------------------------------------------------------- vision */

/* ResNet-50 v1.5 (stride on the 3x3 conv): input "images" [WH_BATCH, 3, image, image] f32,
 * "labels" [WH_BATCH] i32, FC to `classes`. classes <= 0 means 1000, image <= 0 means 224.
 * The stem and each bottleneck block are stage scopes. */
wh_value wm_resnet50(wh_graph *g, int classes, int image);

/* ---------------------------------------------------------------- RNN */

/* GNMT: 8-layer LSTM encoder (first layer bidirectional), 8-layer LSTM decoder with dot-product
 * attention, hidden 1024, vocab 32000, unrolled over src_len / tgt_len steps (<= 0 means 50).
 * Inputs "src_tokens" [WH_BATCH, src_len], "tgt_tokens" and "targets" [WH_BATCH, tgt_len] i32.
 * No stage scopes: the attention context feeds every upper decoder layer, so the layers are
 * not a chain. */
wh_value wm_gnmt(wh_graph *g, int src_len, int tgt_len);

/* ------------------------------------------------------------- by name */

/* The names wm_build knows, in a fixed order: "gpt2-124m", "gpt2-1.5b", "gpt3-6.7b",
 * "gpt3-13b", "gpt3-175b", "bert-large", "t5-large", "resnet50", "resnet50-100k",
 * "resnet50-1m", "gnmt". */
int wm_num_models(void);
const char *wm_model_name(int i); /* NULL when out of range */

/* Build the named model with its default sizes into g (which should be empty), then add
 * wh_backward and wh_optimizer_adamw with WH_ADAMW_OPTIONS_INIT. *loss (may be NULL) gets the
 * loss. Returns 0 on success; WH_ERR_NOT_FOUND for an unknown name (g untouched); otherwise
 * the failing status, with the message in wh_graph_error(g) (or, for a failed wh_backward /
 * wh_optimizer_adamw that does not poison the graph, in wh_last_error of the context). */
int wm_build(const char *name, wh_graph *g, wh_value *loss);

#ifdef __cplusplus
}
#endif
#endif /* WM_MODELS_H */
