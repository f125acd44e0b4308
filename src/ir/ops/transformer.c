/* transformer.c - layernorm over the last axis and causal multi-head attention over a fused qkv,
 * with their gradients: shapes, gradients, costs and sharding rules (heads split across ranks). */
#include "family.h"

#define WH__FAMILY transformer

/* ------------------------------------------------------------ shapes */

static wh_status sh_layernorm(wh_graph *g, const wh__node *n, wh__value *o) {
  if (wh__need_f32(g, n) != WH_OK) return g->status;
  const wh__shape *x = &IN(0)->shape;
  if (x->ndim < 1 || x->d[x->ndim - 1] < 0) return wh__fail_shape(g, n, "needs a fixed last axis", 0, -1);
  for (int i = 1; i < 3; i++)
    if (IN(i)->shape.ndim != 1 || IN(i)->shape.d[0] != x->d[x->ndim - 1])
      return wh__fail_shape(g, n, "gamma and beta must be 1-D with the size of the last axis", 0, i);
  if (!(n->fa[0] > 0)) return wh__graph_fail(g, WH_ERR_INVALID_ARGUMENT, "%s: eps must be > 0, got %g", OPN, n->fa[0]);
  o->dtype = WH_F32;
  o->shape = *x;
  return WH_OK;
}

static wh_status sh_attention(wh_graph *g, const wh__node *n, wh__value *o) {
  if (wh__need_f32(g, n) != WH_OK) return g->status;
  const wh__shape *x = &IN(0)->shape;
  int64_t h = n->ia[0];
  if (x->ndim < 2 || x->d[x->ndim - 1] < 0 || x->d[x->ndim - 2] < 0)
    return wh__fail_shape(g, n, "qkv must be [.., T, 3C] with fixed T and C", 0, -1);
  int64_t c3 = x->d[x->ndim - 1];
  if (h < 1 || c3 % 3 || (c3 / 3) % h) {
    char a[160];
    return wh__graph_fail(g, WH_ERR_SHAPE, "%s: input 0 shape %s: last axis must be 3C with C divisible by %lld heads",
                          OPN, wh__shape_str(x, a, sizeof a), (long long)h);
  }
  o->dtype = WH_F32;
  o->shape = *x;
  o->shape.d[x->ndim - 1] = c3 / 3;
  return WH_OK;
}

/* layernorm_grad_input (x, gamma, dy): like layernorm(x, gamma, gamma) with dy of x's shape */
static wh_status sh_layernorm_grad_input(wh_graph *g, const wh__node *n, wh__value *o) {
  const int32_t in[3] = {n->in[0], n->in[1], n->in[1]};
  wh__node f = *n;
  f.in = (int32_t *)in;
  if (sh_layernorm(g, &f, o) != WH_OK) return g->status;
  return wh__need_shape(g, n, 2, &IN(0)->shape, "the gradient has the input's shape");
}

static wh_status sh_attention_grad(wh_graph *g, const wh__node *n, wh__value *o) {
  wh__value y = {0};
  if (wh__need_attrs(g, n, 1, 1) != WH_OK || sh_attention(g, n, &y) != WH_OK ||
      wh__need_shape(g, n, 1, &y.shape, "the attention output's shape") != WH_OK)
    return g->status;
  o->dtype = WH_F32;
  o->shape = IN(0)->shape;
  return WH_OK;
}

static wh_status sh_layernorm_grad_gamma(wh_graph *g, const wh__node *n, wh__value *o) {
  if (wh__need_f32(g, n) != WH_OK) return g->status;
  const wh__shape *x = &IN(0)->shape;
  if (x->ndim < 1 || x->d[x->ndim - 1] < 1) return wh__fail_shape(g, n, "needs a fixed last axis", 0, -1);
  if (wh__need_shape(g, n, 1, x, "the gradient has the input's shape") != WH_OK) return g->status;
  o->dtype = WH_F32;
  o->shape = (wh__shape){1, {IN(0)->shape.d[IN(0)->shape.ndim - 1]}};
  return WH_OK;
}

/* ------------------------------------------------------------ gradients */

static wh_status gr_layernorm(wh_graph *g, const wh__node *n, wh_value dy, const int *need, wh_value *dx) {
  if (need[0]) {
    int32_t in[3] = {n->in[0], n->in[1], dy};
    dx[0] = wh__mk_node(g, WH_OP_LAYERNORM_GRAD_INPUT, 3, in, NULL, 0, n->fa, 1);
  }
  if (need[1]) {
    int32_t in[2] = {n->in[0], dy};
    dx[1] = wh__mk_node(g, WH_OP_LAYERNORM_GRAD_GAMMA, 2, in, NULL, 0, n->fa, 1);
  }
  if (need[2]) {
    int nd = SHAPE_OF(dy)->ndim;
    int64_t ia[2] = {(int64_t)((1ull << (nd - 1)) - 1), 0};
    int32_t in[1] = {dy};
    dx[2] = wh__mk_node(g, WH_OP_SUM, 1, in, ia, 2, NULL, 0);
  }
  return g->status;
}

static wh_status gr_attention(wh_graph *g, const wh__node *n, wh_value dy, const int *need, wh_value *dx) {
  if (need[0]) {
    int32_t in[2] = {n->in[0], dy};
    dx[0] = wh__mk_node(g, WH_OP_ATTENTION_GRAD, 2, in, n->ia, 1, NULL, 0);
  }
  return g->status;
}

/* ------------------------------------------------------------ costs */

static void co_attention(const wh_graph *g, const wh__node *n, int64_t batch, wh__cost *c) {
  wh__io_bytes(g, n, batch, c);
  const wh__shape *x = &g->values[n->in[0]].shape;
  double t = (double)wh__dim(x->d[x->ndim - 2], batch), c3 = (double)x->d[x->ndim - 1];
  double seqs = (double)wh__numel(x, batch) / (t * c3);
  /* per sequence: QK^T and PV are 2*T*T*C each; backward recomputes P and does 4 more */
  double fwd = 4.0 * t * t * (c3 / 3);
  c->flops = seqs * (n->op == WH_OP_ATTENTION ? fwd : 2.5 * fwd);
}

/* ------------------------------------------------------------ sharding rules */

/* attention(qkv [.., T, 3C]) with heads: qkv split along its last dimension in 3 groups (this
 * rank's columns of q, of k and of v) is a whole number of heads per rank; the output is split
 * along C. Its gradient (qkv, dy) likewise. */
static void sr_attention(wh__shard_q *q, wh__node *n) {
  wh__layout l = q->in[0];
  int r = SH(0)->ndim;
  if (!is_s(l) || l.dim != r - 1 || l.groups != 3 || n->ia[0] % q->tp) return;
  q->want[0] = l;
  if (n->op == WH_OP_ATTENTION_GRAD) q->want[1] = lay_s(r - 1, 1), q->out = l;
  else q->out = lay_s(r - 1, 1);
  n->ia[0] /= q->tp;
}

/* ------------------------------------------------------------ rows */

WH__ROW(layernorm, .min_in = 3, .max_in = 3, .has_out = 1, .shape = sh_layernorm, .grad = gr_layernorm,
        .cost = wh__co_elems, .flops = 8, .inplace = 1, .shard = wh__sr_lastaxis);
WH__ROW(attention, .min_in = 1, .max_in = 1, .has_out = 1, .shape = sh_attention, .grad = gr_attention,
        .cost = co_attention, .shard = sr_attention);
WH__ROW(layernorm_grad_input, .min_in = 3, .max_in = 3, .has_out = 1, .shape = sh_layernorm_grad_input,
        .cost = wh__co_elems, .flops = 8, .inplace = 5, .shard = wh__sr_lastaxis);
WH__ROW(layernorm_grad_gamma, .min_in = 2, .max_in = 2, .has_out = 1, .shape = sh_layernorm_grad_gamma,
        .cost = wh__co_elems, .flops = 4);
WH__ROW(attention_grad, .min_in = 2, .max_in = 2, .has_out = 1, .shape = sh_attention_grad, .cost = co_attention,
        .shard = sr_attention);
