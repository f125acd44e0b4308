/* models.c - shape-only builders of published models (see models.h).
 *
 * These graphs are built for the planner: what matters is each op's shapes, FLOPs and bytes, the
 * parameter count and where the natural pipeline cuts are. Where libwhale lacks an op the model
 * needs, it is modelled from existing ops and the comment at that spot says how and what it
 * costs or omits. Parameters are created with ordinary seeded initialisers so a (small) model
 * built here would also run in a session; building never allocates their storage. */
#include "models.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DIMS(...) ((const int64_t[]){__VA_ARGS__})

/* ------------------------------------------------------------ helpers */

typedef struct {
  wh_graph *g;
  uint64_t seed; /* the next initialiser seed: every parameter gets its own */
} mb;

static int ok(const mb *b) { return wh_graph_status(b->g) == WH_OK; }

static wh_value param(mb *b, int ndim, const int64_t *dims, wh_init_kind kind, float a, float s, const char *fmt,
                      ...) __attribute__((format(printf, 7, 8)));
static wh_value param(mb *b, int ndim, const int64_t *dims, wh_init_kind kind, float a, float s, const char *fmt,
                      ...) {
  char name[128];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(name, sizeof name, fmt, ap);
  va_end(ap);
  return wh_param(b->g, name, WH_F32, ndim, dims, WH_INIT(kind, a, s, b->seed++));
}

/* x @ W^T (+ bias), W stored [out, in] as in PyTorch. */
static wh_value linear(mb *b, wh_value x, int64_t in, int64_t out, int bias, float std, const char *name) {
  wh_value w = param(b, 2, DIMS(out, in), WH_INIT_NORMAL, 0.0f, std, "%s.w", name);
  wh_value y = wh_matmul(b->g, x, w, 0, 1);
  if (!bias) return y;
  wh_value bb = param(b, 1, DIMS(out), WH_INIT_ZEROS, 0, 0, "%s.b", name);
  return wh_bias_add(b->g, y, bb, -1);
}

static wh_value layernorm(mb *b, wh_value x, int64_t c, float eps, const char *name) {
  wh_value gamma = param(b, 1, DIMS(c), WH_INIT_ONES, 0, 0, "%s.g", name);
  wh_value beta = param(b, 1, DIMS(c), WH_INIT_ZEROS, 0, 0, "%s.b", name);
  return wh_layernorm(b->g, x, gamma, beta, eps);
}

/* Open a stage scope; returns whether one was opened (so the caller closes only its own). */
static int stage_open(mb *b) { return ok(b) && wh_scope_stage(b->g) == WH_OK; }
static void stage_close(mb *b, int opened) {
  if (opened) wh_scope_end(b->g);
}

static wh_value finish(mb *b, wh_value loss) {
  if (!ok(b)) return WH_NONE;
  wh_value_set_name(b->g, loss, "loss");
  return loss;
}

/* ---------------------------------------------------------------- GPT */

static const struct {
  const char *name;
  wm_gpt_cfg cfg;
} gpt_presets[] = {
    /* GPT-2 (Radford et al. 2019) and GPT-3 (Brown et al. 2020, Table 2.1) shapes; the vocabulary
     * padded from 50257 to 50304 (a multiple of 64) as Megatron and nanoGPT do. */
    {"gpt2-124m", {12, 12, 768, 3072, 50304, 1024}},
    {"gpt2-1.5b", {48, 25, 1600, 6400, 50304, 1024}},
    {"gpt3-6.7b", {32, 32, 4096, 16384, 50304, 2048}},
    {"gpt3-13b", {40, 40, 5120, 20480, 50304, 2048}},
    {"gpt3-175b", {96, 96, 12288, 49152, 50304, 2048}},
};
#define N_GPT ((int)(sizeof gpt_presets / sizeof gpt_presets[0]))

int wm_gpt_preset(const char *name, wm_gpt_cfg *out) {
  for (int i = 0; name && i < N_GPT; i++)
    if (!strcmp(name, gpt_presets[i].name)) {
      if (out) *out = gpt_presets[i].cfg;
      return 0;
    }
  return -1;
}

/* The GPT of examples/gpt_text.c with an explicit ffn width: pre-LN blocks, one fused qkv
 * projection into wh_attention, GELU MLP, learned positions, head tied to the embedding.
 * GPT-3's alternating dense / locally banded sparse attention is not modelled (every layer is
 * dense); it changes attention FLOPs, not parameters. Dropout is left out (no parameters and an
 * elementwise pass per site). */
wh_value wm_gpt(wh_graph *g, const wm_gpt_cfg *c) {
  if (!g || !c || wh_graph_status(g) != WH_OK) return WH_NONE;
  mb b = {g, 1};
  const int64_t C = c->width, T = c->context, V = c->vocab, F = c->ffn;
  const float std = 0.02f, proj_std = 0.02f / sqrtf(2.0f * (float)(c->layers > 0 ? c->layers : 1));
  wh_value tokens = wh_input(g, "tokens", WH_I32, 2, DIMS(WH_BATCH, T));
  wh_value targets = wh_input(g, "targets", WH_I32, 2, DIMS(WH_BATCH, T));
  wh_value wte = param(&b, 2, DIMS(V, C), WH_INIT_NORMAL, 0, std, "wte");
  wh_value wpe = param(&b, 2, DIMS(T, C), WH_INIT_NORMAL, 0, std, "wpe");
  wh_value x = wh_add(g, wh_embedding(g, wte, tokens), wpe);
  char nm[64];
  for (int l = 0; l < c->layers && ok(&b); l++) {
    int st = stage_open(&b);
    snprintf(nm, sizeof nm, "h%d.ln1", l);
    wh_value h = layernorm(&b, x, C, 1e-5f, nm);
    snprintf(nm, sizeof nm, "h%d.attn.qkv", l);
    wh_value a = wh_attention(g, linear(&b, h, C, 3 * C, 1, std, nm), c->heads);
    snprintf(nm, sizeof nm, "h%d.attn.proj", l);
    x = wh_add(g, x, linear(&b, a, C, C, 1, proj_std, nm));
    snprintf(nm, sizeof nm, "h%d.ln2", l);
    h = layernorm(&b, x, C, 1e-5f, nm);
    snprintf(nm, sizeof nm, "h%d.mlp.fc", l);
    h = wh_gelu(g, linear(&b, h, C, F, 1, std, nm));
    snprintf(nm, sizeof nm, "h%d.mlp.proj", l);
    x = wh_add(g, x, linear(&b, h, F, C, 1, proj_std, nm));
    stage_close(&b, st);
  }
  x = layernorm(&b, x, C, 1e-5f, "ln_f");
  wh_value logits = wh_matmul(g, x, wte, 0, 1); /* tied: wte used twice */
  return finish(&b, wh_cross_entropy(g, logits, targets));
}

/* --------------------------------------------------------------- BERT */

/* Attention in BERT and in the T5 encoder is bidirectional, while wh_attention is causal. For a
 * shape-only graph that is fine: the planner's attention cost counts the full T x T scores (and
 * the causal mask changes neither shapes nor parameters), so wh_attention stands in for
 * bidirectional self-attention here. A graph meant to be trained as a real encoder would need a
 * non-causal attention op (or the primitive form used for T5's cross-attention below). */
wh_value wm_bert_large(wh_graph *g, int seq) {
  if (!g || wh_graph_status(g) != WH_OK) return WH_NONE;
  mb b = {g, 1};
  const int L = 24, heads = 16;
  const int64_t C = 1024, F = 4096, V = 30522, POS = 512, S = seq > 0 ? seq : 512;
  const int64_t prows = S > POS ? S : POS; /* the table has 512 rows (more only if seq asks) */
  const float std = 0.02f, eps = 1e-12f;
  wh_value tokens = wh_input(g, "tokens", WH_I32, 2, DIMS(WH_BATCH, S));
  wh_value segments = wh_input(g, "segments", WH_I32, 2, DIMS(WH_BATCH, S));
  wh_value targets = wh_input(g, "targets", WH_I32, 2, DIMS(WH_BATCH, S));
  wh_value word = param(&b, 2, DIMS(V, C), WH_INIT_NORMAL, 0, std, "bert.word_emb");
  wh_value pos = param(&b, 2, DIMS(prows, C), WH_INIT_NORMAL, 0, std, "bert.pos_emb");
  wh_value type = param(&b, 2, DIMS(2, C), WH_INIT_NORMAL, 0, std, "bert.type_emb");
  if (S < prows) pos = wh_slice(g, pos, 0, 0, S);
  wh_value x = wh_add(g, wh_add(g, wh_embedding(g, word, tokens), wh_embedding(g, type, segments)), pos);
  x = layernorm(&b, x, C, eps, "bert.emb_ln");
  char nm[64];
  for (int l = 0; l < L && ok(&b); l++) { /* post-LN, as in the original BERT */
    int st = stage_open(&b);
    snprintf(nm, sizeof nm, "bert.l%d.qkv", l);
    wh_value a = wh_attention(g, linear(&b, x, C, 3 * C, 1, std, nm), heads); /* see above: causal op */
    snprintf(nm, sizeof nm, "bert.l%d.attn_out", l);
    x = wh_add(g, x, linear(&b, a, C, C, 1, std, nm));
    snprintf(nm, sizeof nm, "bert.l%d.ln1", l);
    x = layernorm(&b, x, C, eps, nm);
    snprintf(nm, sizeof nm, "bert.l%d.ffn_in", l);
    wh_value h = wh_gelu(g, linear(&b, x, C, F, 1, std, nm));
    snprintf(nm, sizeof nm, "bert.l%d.ffn_out", l);
    x = wh_add(g, x, linear(&b, h, F, C, 1, std, nm));
    snprintf(nm, sizeof nm, "bert.l%d.ln2", l);
    x = layernorm(&b, x, C, eps, nm);
    stage_close(&b, st);
  }
  /* MLM head over every position (the real pre-training gathers the ~15% masked positions
   * first; all positions is the brief's upper bound). The pooler and next-sentence head
   * (1024*1024+1024 + 1024*2+2 parameters) are not built. */
  wh_value h = wh_gelu(g, linear(&b, x, C, C, 1, std, "bert.mlm.dense"));
  h = layernorm(&b, h, C, eps, "bert.mlm.ln");
  wh_value bias = param(&b, 1, DIMS(V), WH_INIT_ZEROS, 0, 0, "bert.mlm.bias");
  wh_value logits = wh_bias_add(g, wh_matmul(g, h, word, 0, 1), bias, -1); /* tied decoder */
  return finish(&b, wh_cross_entropy(g, logits, targets));
}

/* ----------------------------------------------------------------- T5 */

/* T5's layer norm is scale-only (RMS, no mean, no bias). libwhale has no RMS norm, so it is
 * modelled with wh_layernorm whose beta is a shared all-zero constant (not a parameter): the
 * parameter count is T5's, and the cost is a layer norm's (one extra mean per row, which is
 * noise next to the matmuls). */
static wh_value t5_norm(mb *b, wh_value x, int64_t c, wh_value zero_beta, const char *name) {
  wh_value gamma = param(b, 1, DIMS(c), WH_INIT_ONES, 0, 0, "%s.g", name);
  return wh_layernorm(b->g, x, gamma, zero_beta, 1e-6f);
}

/* Multi-head attention of queries from x [B, Tq, C] over keys/values from mem [B, Tk, C], built
 * from primitives (libwhale's wh_attention is fused causal self-attention only): q, k, v
 * projections, reshape/permute into [B, H, T, D], batched q.k^T scaled by 1/sqrt(D), softmax,
 * batched p.v, permute/reshape back, output projection. No bias terms, as in T5. The scale is
 * kept even though T5 folds it into its initialisation: one elementwise pass over the scores. */
static wh_value cross_attention(mb *b, wh_value x, wh_value mem, int64_t Tq, int64_t Tk, int64_t C, int heads,
                                const char *name) {
  wh_graph *g = b->g;
  const int64_t D = C / heads;
  const int to_heads[4] = {0, 2, 1, 3};
  char nm[96];
  snprintf(nm, sizeof nm, "%s.q", name);
  wh_value q = linear(b, x, C, C, 0, 0.02f, nm);
  snprintf(nm, sizeof nm, "%s.k", name);
  wh_value k = linear(b, mem, C, C, 0, 0.02f, nm);
  snprintf(nm, sizeof nm, "%s.v", name);
  wh_value v = linear(b, mem, C, C, 0, 0.02f, nm);
  q = wh_permute(g, wh_reshape(g, q, 4, DIMS(WH_BATCH, Tq, heads, D)), to_heads); /* [B, H, Tq, D] */
  k = wh_permute(g, wh_reshape(g, k, 4, DIMS(WH_BATCH, Tk, heads, D)), to_heads); /* [B, H, Tk, D] */
  v = wh_permute(g, wh_reshape(g, v, 4, DIMS(WH_BATCH, Tk, heads, D)), to_heads);
  wh_value s = wh_scale(g, wh_matmul(g, q, k, 0, 1), 1.0f / sqrtf((float)D)); /* [B, H, Tq, Tk] */
  wh_value o = wh_matmul(g, wh_softmax(g, s), v, 0, 0);                         /* [B, H, Tq, D] */
  o = wh_reshape(g, wh_permute(g, o, to_heads), 3, DIMS(WH_BATCH, Tq, C));
  snprintf(nm, sizeof nm, "%s.o", name);
  return linear(b, o, C, C, 0, 0.02f, nm);
}

/* T5 v1.0 Large. Self-attention uses one fused [3C, C] qkv projection into wh_attention: the same
 * parameter count as T5's separate q, k, v matrices. Encoder self-attention is bidirectional in
 * T5; wh_attention is causal (see the note above BERT: fine for planning). The relative position
 * bias (32 buckets x 16 heads, once per stack: 1024 parameters in all) is not modelled: there is
 * no way to add a bias to wh_attention's scores, and it is 0.0001% of the parameters. Dropout is
 * left out. */
wh_value wm_t5_large(wh_graph *g, int src_len, int tgt_len) {
  if (!g || wh_graph_status(g) != WH_OK) return WH_NONE;
  mb b = {g, 1};
  const int L = 24, heads = 16;
  const int64_t C = 1024, F = 4096, V = 32128;
  const int64_t S = src_len > 0 ? src_len : 512, T = tgt_len > 0 ? tgt_len : 128;
  wh_value src = wh_input(g, "src_tokens", WH_I32, 2, DIMS(WH_BATCH, S));
  wh_value tgt = wh_input(g, "tgt_tokens", WH_I32, 2, DIMS(WH_BATCH, T));
  wh_value targets = wh_input(g, "targets", WH_I32, 2, DIMS(WH_BATCH, T));
  wh_value shared = param(&b, 2, DIMS(V, C), WH_INIT_NORMAL, 0, 1.0f, "t5.shared");
  float *zeros = calloc((size_t)C, sizeof(float));
  if (!zeros) return WH_NONE;
  wh_value zero_beta = wh_constant(g, "t5.zero_beta", WH_F32, 1, DIMS(C), zeros);
  free(zeros);
  char nm[64];
  /* encoder */
  wh_value x = wh_embedding(g, shared, src);
  for (int l = 0; l < L && ok(&b); l++) {
    int st = stage_open(&b);
    snprintf(nm, sizeof nm, "t5.enc%d.ln_sa", l);
    wh_value h = t5_norm(&b, x, C, zero_beta, nm);
    snprintf(nm, sizeof nm, "t5.enc%d.sa.qkv", l);
    wh_value a = wh_attention(g, linear(&b, h, C, 3 * C, 0, 0.02f, nm), heads);
    snprintf(nm, sizeof nm, "t5.enc%d.sa.o", l);
    x = wh_add(g, x, linear(&b, a, C, C, 0, 0.02f, nm));
    snprintf(nm, sizeof nm, "t5.enc%d.ln_ff", l);
    h = t5_norm(&b, x, C, zero_beta, nm);
    snprintf(nm, sizeof nm, "t5.enc%d.ff.wi", l);
    h = wh_relu(g, linear(&b, h, C, F, 0, 0.02f, nm));
    snprintf(nm, sizeof nm, "t5.enc%d.ff.wo", l);
    x = wh_add(g, x, linear(&b, h, F, C, 0, 0.02f, nm));
    if (l == L - 1) x = t5_norm(&b, x, C, zero_beta, "t5.enc.ln_final"); /* the chain's last encoder stage */
    stage_close(&b, st);
  }
  wh_value enc = x;
  /* decoder: built after the encoder so that, in graph order, the encoder is a clean chain */
  wh_value y = WH_NONE;
  for (int l = 0; l < L && ok(&b); l++) {
    int st = stage_open(&b);
    if (l == 0) y = wh_embedding(g, shared, tgt);
    snprintf(nm, sizeof nm, "t5.dec%d.ln_sa", l);
    wh_value h = t5_norm(&b, y, C, zero_beta, nm);
    snprintf(nm, sizeof nm, "t5.dec%d.sa.qkv", l);
    wh_value a = wh_attention(g, linear(&b, h, C, 3 * C, 0, 0.02f, nm), heads); /* causal: right */
    snprintf(nm, sizeof nm, "t5.dec%d.sa.o", l);
    y = wh_add(g, y, linear(&b, a, C, C, 0, 0.02f, nm));
    snprintf(nm, sizeof nm, "t5.dec%d.ln_ca", l);
    h = t5_norm(&b, y, C, zero_beta, nm);
    snprintf(nm, sizeof nm, "t5.dec%d.ca", l);
    y = wh_add(g, y, cross_attention(&b, h, enc, T, S, C, heads, nm));
    snprintf(nm, sizeof nm, "t5.dec%d.ln_ff", l);
    h = t5_norm(&b, y, C, zero_beta, nm);
    snprintf(nm, sizeof nm, "t5.dec%d.ff.wi", l);
    h = wh_relu(g, linear(&b, h, C, F, 0, 0.02f, nm));
    snprintf(nm, sizeof nm, "t5.dec%d.ff.wo", l);
    y = wh_add(g, y, linear(&b, h, F, C, 0, 0.02f, nm));
    stage_close(&b, st);
  }
  y = t5_norm(&b, y, C, zero_beta, "t5.dec.ln_final");
  /* v1.0 ties the output head to the shared embedding and rescales by d_model^-0.5 first */
  wh_value logits = wh_matmul(g, wh_scale(g, y, 1.0f / sqrtf((float)C)), shared, 0, 1);
  return finish(&b, wh_cross_entropy(g, logits, targets));
}

/* ------------------------------------------------------------- ResNet */

/* libwhale has no batch-norm op. BatchNorm is modelled as its per-channel affine part:
 * x * gamma[C,1,1] + beta[C] (wh_mul, then wh_bias_add on axis 1) right after each conv. That
 * keeps the parameter count exact (gamma and beta per channel; running statistics are buffers,
 * not parameters) and the activation traffic of a normalisation layer (two elementwise passes
 * over the conv output, about what a fused BN's normalise pass plus its statistics read cost),
 * but omits the statistics computation itself (a per-channel mean/variance reduction: no
 * parameters, one more read of the activation). Convolutions have no bias, as in torchvision. */
static wh_value conv_bn(mb *b, wh_value x, int64_t in, int64_t out, int k, int stride, int pad, int relu,
                        const char *name) {
  wh_graph *g = b->g;
  wh_value w = param(b, 4, DIMS(out, in, k, k), WH_INIT_KAIMING_NORMAL, 0, 0, "%s.conv", name);
  wh_value y = wh_conv2d(g, x, w, stride, pad);
  wh_value gamma = param(b, 3, DIMS(out, 1, 1), WH_INIT_ONES, 0, 0, "%s.bn.g", name);
  wh_value beta = param(b, 1, DIMS(out), WH_INIT_ZEROS, 0, 0, "%s.bn.b", name);
  y = wh_bias_add(g, wh_mul(g, y, gamma), beta, 1);
  return relu ? wh_relu(g, y) : y;
}

wh_value wm_resnet50(wh_graph *g, int classes, int image) {
  if (!g || wh_graph_status(g) != WH_OK) return WH_NONE;
  mb b = {g, 1};
  const int64_t K = classes > 0 ? classes : 1000, I = image > 0 ? image : 224;
  static const int blocks[4] = {3, 4, 6, 3}, widths[4] = {64, 128, 256, 512};
  wh_value images = wh_input(g, "images", WH_F32, 4, DIMS(WH_BATCH, 3, I, I));
  wh_value labels = wh_input(g, "labels", WH_I32, 1, DIMS(WH_BATCH));
  int st = stage_open(&b);
  wh_value x = conv_bn(&b, images, 3, 64, 7, 2, 3, 1, "stem");
  x = wh_max_pool2d(g, x, 3, 2, 1);
  stage_close(&b, st);
  int64_t in = 64;
  char nm[64];
  for (int s = 0; s < 4 && ok(&b); s++) {
    const int64_t w = widths[s], out = 4 * w;
    for (int k = 0; k < blocks[s] && ok(&b); k++) {
      const int stride = (k == 0 && s > 0) ? 2 : 1; /* v1.5: the stride sits on the 3x3 conv */
      st = stage_open(&b);
      snprintf(nm, sizeof nm, "layer%d.%d.a", s + 1, k);
      wh_value h = conv_bn(&b, x, in, w, 1, 1, 0, 1, nm);
      snprintf(nm, sizeof nm, "layer%d.%d.b", s + 1, k);
      h = conv_bn(&b, h, w, w, 3, stride, 1, 1, nm);
      snprintf(nm, sizeof nm, "layer%d.%d.c", s + 1, k);
      h = conv_bn(&b, h, w, out, 1, 1, 0, 0, nm);
      wh_value sc = x;
      if (k == 0) { /* projection shortcut: 1x1 conv (strided) + BN */
        snprintf(nm, sizeof nm, "layer%d.%d.down", s + 1, k);
        sc = conv_bn(&b, x, in, out, 1, stride, 0, 0, nm);
      }
      x = wh_relu(g, wh_add(g, h, sc));
      stage_close(&b, st);
      in = out;
    }
  }
  const int hw[2] = {2, 3};
  x = wh_mean(g, x, 2, hw, 0); /* global average pool -> [B, 2048] */
  wh_value logits = linear(&b, x, in, K, 1, 0.01f, "fc");
  return finish(&b, wh_cross_entropy(g, logits, labels));
}

/* --------------------------------------------------------------- GNMT */

/* Concatenate n values along axis in groups of at most 32 (the autodiff takes at most 64 inputs
 * per node). */
static wh_value concat_many(wh_graph *g, wh_value *xs, int n, int axis) {
  while (n > 32) {
    int m = 0;
    for (int i = 0; i < n; i += 32) {
      int k = n - i < 32 ? n - i : 32;
      xs[m++] = k == 1 ? xs[i] : wh_concat(g, k, xs + i, axis);
    }
    n = m;
  }
  return n == 1 ? xs[0] : wh_concat(g, n, xs, axis);
}

/* One LSTM layer unrolled over T steps from primitives (libwhale has no recurrent op).
 * X [B, T, in] -> [B, T, H]. The input projection of all steps is one matmul (as cuDNN does:
 * the same FLOPs as T per-step matmuls); per step: gates = x_t.Wx + h.Wh + b as one [4H]-wide
 * product each, split with wh_slice into i, f, g, o; c = f*c + i*g; h = o*tanh(c). The initial
 * state is zero, so step 0 skips h.Wh and f*c. One bias vector per layer (PyTorch keeps two,
 * b_ih and b_hh, whose sum is the same thing: 4H more parameters per layer there).
 * reverse runs the steps backwards (the backward half of a bidirectional layer). */
static wh_value lstm(mb *b, wh_value X, int64_t T, int64_t in, int64_t H, int reverse, const char *name) {
  wh_graph *g = b->g;
  const float r = 1.0f / sqrtf((float)H);
  wh_value wx = param(b, 2, DIMS(4 * H, in), WH_INIT_UNIFORM, -r, r, "%s.wx", name);
  wh_value wh = param(b, 2, DIMS(4 * H, H), WH_INIT_UNIFORM, -r, r, "%s.wh", name);
  wh_value bias = param(b, 1, DIMS(4 * H), WH_INIT_ZEROS, 0, 0, "%s.b", name);
  wh_value xw = wh_bias_add(g, wh_matmul(g, X, wx, 0, 1), bias, -1);  /* [B, T, 4H] */
  xw = wh_reshape(g, xw, 2, DIMS(WH_BATCH, T * 4 * H));               /* step t: columns [4Ht, 4H(t+1)) */
  wh_value *hs = malloc(sizeof(wh_value) * (size_t)(T > 0 ? T : 1));
  if (!hs) return WH_NONE;
  wh_value h = WH_NONE, c = WH_NONE;
  for (int64_t s = 0; s < T && ok(b); s++) {
    const int64_t t = reverse ? T - 1 - s : s;
    wh_value gates = wh_slice(g, xw, 1, 4 * H * t, 4 * H * (t + 1)); /* [B, 4H] */
    if (s > 0) gates = wh_add(g, gates, wh_matmul(g, h, wh, 0, 1));
    wh_value i = wh_sigmoid(g, wh_slice(g, gates, 1, 0, H));
    wh_value gg = wh_tanh(g, wh_slice(g, gates, 1, 2 * H, 3 * H));
    wh_value o = wh_sigmoid(g, wh_slice(g, gates, 1, 3 * H, 4 * H));
    if (s == 0) {
      c = wh_mul(g, i, gg);
    } else {
      wh_value f = wh_sigmoid(g, wh_slice(g, gates, 1, H, 2 * H));
      c = wh_add(g, wh_mul(g, f, c), wh_mul(g, i, gg));
    }
    h = wh_mul(g, o, wh_tanh(g, c));
    hs[t] = h;
  }
  wh_value out = WH_NONE;
  if (ok(b)) out = wh_reshape(g, concat_many(g, hs, (int)T, 1), 3, DIMS(WH_BATCH, T, H)); /* [B, T*H] is [B, T, H] */
  free(hs);
  return out;
}

/* GNMT (Wu et al. 2016) in the layout of NVIDIA's reference implementation (DeepLearningExamples
 * GNMT v2): encoder layer 1 bidirectional (two LSTMs over the embeddings, outputs concatenated
 * to 2H), layer 2 LSTM(2H -> H), layers 3-8 LSTM(H -> H) with residual connections; decoder
 * layer 1 LSTM over the target embeddings whose outputs query the attention, layers 2-8
 * LSTM(2H -> H) over [previous output, attention context], residuals from layer 3 on; a
 * classifier to the vocabulary at every step. Source and target embeddings are separate tables.
 *
 * Attention is plain dot-product (Luong) attention, no parameters (GNMT uses additive attention:
 * two H x H projections and a vector, about 2.1M parameters, not modelled). The query at step t
 * is the bottom decoder layer's output at t and nothing feeds back into that layer, so the
 * per-step attention of all steps is exactly one batched matmul [B,T,H].[B,S,H]^T, a softmax and
 * one batched matmul with the encoder states; it is built that way (same FLOPs, fewer nodes).
 * The per-step classifier is likewise one matmul over the concatenated steps, and the
 * cross-entropy is the mean over every (sample, step). */
wh_value wm_gnmt(wh_graph *g, int src_len, int tgt_len) {
  if (!g || wh_graph_status(g) != WH_OK) return WH_NONE;
  mb b = {g, 1};
  const int64_t H = 1024, V = 32000, S = src_len > 0 ? src_len : 50, T = tgt_len > 0 ? tgt_len : 50;
  wh_value src = wh_input(g, "src_tokens", WH_I32, 2, DIMS(WH_BATCH, S));
  wh_value tgt = wh_input(g, "tgt_tokens", WH_I32, 2, DIMS(WH_BATCH, T));
  wh_value targets = wh_input(g, "targets", WH_I32, 2, DIMS(WH_BATCH, T));
  wh_value src_emb = param(&b, 2, DIMS(V, H), WH_INIT_UNIFORM, -0.1f, 0.1f, "gnmt.src_emb");
  wh_value tgt_emb = param(&b, 2, DIMS(V, H), WH_INIT_UNIFORM, -0.1f, 0.1f, "gnmt.tgt_emb");
  char nm[64];
  /* encoder */
  wh_value x = wh_embedding(g, src_emb, src);
  wh_value bi[2] = {lstm(&b, x, S, H, H, 0, "gnmt.enc0.fwd"), lstm(&b, x, S, H, H, 1, "gnmt.enc0.bwd")};
  x = wh_concat(g, 2, bi, 2); /* [B, S, 2H] */
  x = lstm(&b, x, S, 2 * H, H, 0, "gnmt.enc1");
  for (int l = 2; l < 8 && ok(&b); l++) {
    snprintf(nm, sizeof nm, "gnmt.enc%d", l);
    x = wh_add(g, x, lstm(&b, x, S, H, H, 0, nm));
  }
  wh_value enc = x; /* [B, S, H] */
  /* decoder */
  wh_value y = lstm(&b, wh_embedding(g, tgt_emb, tgt), T, H, H, 0, "gnmt.dec0");
  wh_value p = wh_softmax(g, wh_matmul(g, y, enc, 0, 1)); /* [B, T, S] */
  wh_value ctx = wh_matmul(g, p, enc, 0, 0);              /* [B, T, H] */
  for (int l = 1; l < 8 && ok(&b); l++) {
    wh_value in2[2] = {y, ctx};
    snprintf(nm, sizeof nm, "gnmt.dec%d", l);
    wh_value o = lstm(&b, wh_concat(g, 2, in2, 2), T, 2 * H, H, 0, nm);
    y = l >= 2 ? wh_add(g, y, o) : o;
  }
  wh_value logits = linear(&b, y, H, V, 1, 0.01f, "gnmt.classifier"); /* [B, T, V] */
  return finish(&b, wh_cross_entropy(g, logits, targets));
}

/* -------------------------------------------------------------- by name */

static const char *const model_names[] = {"gpt2-124m", "gpt2-1.5b",  "gpt3-6.7b", "gpt3-13b",
                                          "gpt3-175b", "bert-large", "t5-large",  "resnet50",
                                          "resnet50-100k", "resnet50-1m", "gnmt"};
#define N_MODELS ((int)(sizeof model_names / sizeof model_names[0]))

int wm_num_models(void) { return N_MODELS; }
const char *wm_model_name(int i) { return i >= 0 && i < N_MODELS ? model_names[i] : NULL; }

int wm_build(const char *name, wh_graph *g, wh_value *loss) {
  if (loss) *loss = WH_NONE;
  if (!g) return WH_ERR_INVALID_ARGUMENT;
  if (!name) return WH_ERR_NOT_FOUND;
  wm_gpt_cfg cfg;
  wh_value l;
  if (wm_gpt_preset(name, &cfg) == 0) l = wm_gpt(g, &cfg);
  else if (!strcmp(name, "bert-large")) l = wm_bert_large(g, 512);
  else if (!strcmp(name, "t5-large")) l = wm_t5_large(g, 512, 128);
  else if (!strcmp(name, "resnet50")) l = wm_resnet50(g, 1000, 224);
  else if (!strcmp(name, "resnet50-100k")) l = wm_resnet50(g, 100000, 224);
  else if (!strcmp(name, "resnet50-1m")) l = wm_resnet50(g, 1000000, 224);
  else if (!strcmp(name, "gnmt")) l = wm_gnmt(g, 50, 50);
  else return WH_ERR_NOT_FOUND;
  if (l == WH_NONE) {
    wh_status s = wh_graph_status(g);
    return s != WH_OK ? (int)s : WH_ERR_OUT_OF_MEMORY; /* OK here: a helper's malloc failed */
  }
  wh_status s = wh_backward(g, l);
  if (s != WH_OK) return (int)s;
  const wh_adamw_options opts = WH_ADAMW_OPTIONS_INIT;
  s = wh_optimizer_adamw(g, &opts);
  if (s != WH_OK) return (int)s;
  if (loss) *loss = l;
  return 0;
}
