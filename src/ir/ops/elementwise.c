/* elementwise.c - the elementwise ops: broadcasting binaries, scale, bias, activations and their
 * gradient, dropout, and the mean squared error with its gradient. */
#include "family.h"

#define WH__FAMILY elementwise

/* ------------------------------------------------------------ shapes */

static wh_status sh_binary(wh_graph *g, const wh__node *n, wh__value *o) {
  if (wh__need_f32(g, n) != WH_OK) return g->status;
  if (!wh__broadcast(&IN(0)->shape, &IN(1)->shape, &o->shape)) return wh__fail_shape(g, n, "shapes do not broadcast", 0, 1);
  o->dtype = WH_F32;
  return WH_OK;
}

static wh_status sh_bias_add(wh_graph *g, const wh__node *n, wh__value *o) {
  if (wh__need_f32(g, n) != WH_OK) return g->status;
  const wh__shape *x = &IN(0)->shape, *b = &IN(1)->shape;
  int ax = (int)n->ia[0];
  if (ax < 0 || ax >= x->ndim) return wh__fail_shape(g, n, "axis out of range", 0, -1);
  if (b->ndim != 1 || b->d[0] != x->d[ax]) return wh__fail_shape(g, n, "bias must be 1-D with the size of the axis", 0, 1);
  o->dtype = WH_F32;
  o->shape = *x;
  return WH_OK;
}

static wh_status sh_unary_grad(wh_graph *g, const wh__node *n, wh__value *o) {
  if (wh__need_attrs(g, n, 1, 1) != WH_OK) return g->status;
  if (n->ia[0] < WH_OP_RELU || n->ia[0] > WH_OP_LOG)
    return wh__graph_fail(g, WH_ERR_INVALID_ARGUMENT, "%s: %lld is not an activation op", OPN, (long long)n->ia[0]);
  return wh__sh_pair(g, n, o);
}

static wh_status sh_mse(wh_graph *g, const wh__node *n, wh__value *o) {
  if (wh__need_f32(g, n) != WH_OK) return g->status;
  if (!wh__shape_eq(&IN(0)->shape, &IN(1)->shape)) return wh__fail_shape(g, n, "prediction and target shapes differ", 0, 1);
  o->dtype = WH_F32;
  o->shape.ndim = 0;
  return WH_OK;
}

static wh_status sh_mse_grad(wh_graph *g, const wh__node *n, wh__value *o) {
  wh__value loss = {0};
  if (sh_mse(g, n, &loss) != WH_OK || wh__need_dtype(g, n, 2, WH_F32) != WH_OK ||
      wh__need_shape(g, n, 2, &loss.shape, "the loss gradient is a scalar") != WH_OK)
    return g->status;
  o->dtype = WH_F32;
  o->shape = IN(0)->shape;
  return WH_OK;
}

static wh_status sh_dropout(wh_graph *g, const wh__node *n, wh__value *o) {
  if (!(n->fa[0] >= 0 && n->fa[0] < 1))
    return wh__graph_fail(g, WH_ERR_INVALID_ARGUMENT, "%s: p must be in [0, 1), got %g", OPN, n->fa[0]);
  return wh__sh_same(g, n, o);
}

/* ------------------------------------------------------------ gradients */

static wh_value mk_scale(wh_graph *g, wh_value x, double s) {
  int32_t in[1] = {x};
  return wh__mk_node(g, WH_OP_SCALE, 1, in, NULL, 0, &s, 1);
}

/* Sum a gradient down to the shape of the value it flows into (undoing broadcasting). */
/* like is a value id, not a shape pointer: building nodes may move the value array. */
static wh_value reduce_to(wh_graph *g, wh_value dy, wh_value like) {
  if (dy == WH_NONE) return WH_NONE;
  wh__shape target = g->values[like].shape;
  if (wh__shape_eq(&g->values[dy].shape, &target)) return dy;
  int32_t in[1] = {dy};
  return wh__mk_node(g, WH_OP_SUM_TO, 1, in, target.d, target.ndim, NULL, 0);
}

static wh_status gr_add(wh_graph *g, const wh__node *n, wh_value dy, const int *need, wh_value *dx) {
  if (need[0]) dx[0] = reduce_to(g, dy, n->in[0]);
  if (need[1]) dx[1] = reduce_to(g, dy, n->in[1]);
  return g->status;
}

static wh_status gr_sub(wh_graph *g, const wh__node *n, wh_value dy, const int *need, wh_value *dx) {
  if (need[0]) dx[0] = reduce_to(g, dy, n->in[0]);
  if (need[1]) dx[1] = reduce_to(g, mk_scale(g, dy, -1.0), n->in[1]);
  return g->status;
}

static wh_status gr_mul(wh_graph *g, const wh__node *n, wh_value dy, const int *need, wh_value *dx) {
  if (need[0]) dx[0] = reduce_to(g, wh__mk_node2(g, WH_OP_MUL, dy, n->in[1]), n->in[0]);
  if (need[1]) dx[1] = reduce_to(g, wh__mk_node2(g, WH_OP_MUL, dy, n->in[0]), n->in[1]);
  return g->status;
}

static wh_status gr_div(wh_graph *g, const wh__node *n, wh_value dy, const int *need, wh_value *dx) {
  wh_value b = n->in[1];
  if (need[0]) dx[0] = reduce_to(g, wh__mk_node2(g, WH_OP_DIV, dy, b), n->in[0]);
  if (need[1]) {
    /* d(a/b)/db = -(a/b)/b = -y/b */
    wh_value t = wh__mk_node2(g, WH_OP_DIV, wh__mk_node2(g, WH_OP_MUL, dy, n->out), b);
    dx[1] = reduce_to(g, mk_scale(g, t, -1.0), b);
  }
  return g->status;
}

static wh_status gr_scale(wh_graph *g, const wh__node *n, wh_value dy, const int *need, wh_value *dx) {
  if (need[0]) dx[0] = mk_scale(g, dy, n->fa[0]);
  return g->status;
}

static wh_status gr_bias_add(wh_graph *g, const wh__node *n, wh_value dy, const int *need, wh_value *dx) {
  if (need[0]) dx[0] = dy;
  if (need[1]) {
    int nd = SHAPE_OF(dy)->ndim;
    int64_t ia[2] = {(int64_t)(((1ull << nd) - 1) & ~(1ull << n->ia[0])), 0};
    int32_t in[1] = {dy};
    dx[1] = wh__mk_node(g, WH_OP_SUM, 1, in, ia, 2, NULL, 0);
  }
  return g->status;
}

static wh_status gr_unary(wh_graph *g, const wh__node *n, wh_value dy, const int *need, wh_value *dx) {
  if (!need[0]) return g->status;
  /* relu, tanh, sigmoid and exp differentiate from their output; gelu and log from their input */
  int from_out = n->op == WH_OP_RELU || n->op == WH_OP_TANH || n->op == WH_OP_SIGMOID || n->op == WH_OP_EXP;
  int32_t in[2] = {from_out ? n->out : n->in[0], dy};
  int64_t ia[1] = {n->op};
  dx[0] = wh__mk_node(g, WH_OP_UNARY_GRAD, 2, in, ia, 1, NULL, 0);
  return g->status;
}

static wh_status gr_mse(wh_graph *g, const wh__node *n, wh_value dy, const int *need, wh_value *dx) {
  for (int i = 0; i < 2; i++)
    if (need[i]) {
      int32_t in[3] = {n->in[0], n->in[1], dy};
      int64_t ia[1] = {i == 0 ? 1 : -1};
      dx[i] = wh__mk_node(g, WH_OP_MSE_GRAD, 3, in, ia, 1, NULL, 0);
    }
  return g->status;
}

static wh_status gr_dropout(wh_graph *g, const wh__node *n, wh_value dy, const int *need, wh_value *dx) {
  /* the mask is a function of (seed, step, index): the same node attrs give the same mask */
  if (need[0]) {
    int32_t in[1] = {dy};
    dx[0] = wh__mk_node(g, WH_OP_DROPOUT, 1, in, n->ia, n->n_ia, n->fa, n->n_fa);
  }
  return g->status;
}

/* ------------------------------------------------------------ sharding rules */

/* Elementwise binary ops with broadcasting: a split carries over when every input either has the
 * split dimension at full size (it is split alike) or broadcasts along it (it stays whole). Two
 * partial sums add (or subtract) into a partial sum. */
static void sr_binary(wh__shard_q *q, wh__node *n) {
  const wh__shape *o = OUTSH;
  if ((n->op == WH_OP_ADD || n->op == WH_OP_SUB) && is_p(q->in[0]) && is_p(q->in[1])) {
    q->want[0] = q->want[1] = q->out = LAY_P;
    return;
  }
  for (int k = 0; k < 2; k++) {
    wh__layout l = q->in[k];
    const wh__shape *s = SH(k);
    if (!is_s(l)) continue;
    int od = l.dim + (o->ndim - s->ndim);
    if (od < 0 || s->d[l.dim] != o->d[od]) continue;
    for (int j = 0; j < 2; j++) {
      const wh__shape *sj = SH(j);
      int jd = od - (o->ndim - sj->ndim);
      q->want[j] = jd >= 0 && sj->d[jd] == o->d[od] ? lay_s(jd, l.groups) : LAY_R;
    }
    q->out = lay_s(od, l.groups);
    return;
  }
}

static void sr_scale(wh__shard_q *q, wh__node *n) {
  (void)n;
  if (q->in[0].kind != WH_LAY_R) q->want[0] = q->out = q->in[0];
}

/* bias_add(x, b) along axis: the bias is split with x's split of that axis. */
static void sr_bias_add(wh__shard_q *q, wh__node *n) {
  wh__layout l = q->in[0];
  if (!is_s(l)) return;
  q->want[0] = q->out = l;
  if (l.dim == n->ia[0]) q->want[1] = lay_s(0, l.groups);
}

/* Elementwise unary ops (and the gradients of the activations, (saved, dy)): splits carry over. */
static void sr_unary(wh__shard_q *q, wh__node *n) {
  for (int k = n->n_in - 1; k >= 0; k--)
    if (is_s(q->in[k]) && q->values[n->in[k]].shape.ndim == OUTSH->ndim) {
      for (int j = 0; j < n->n_in; j++) q->want[j] = q->in[k];
      q->out = q->in[k];
      return;
    }
}

/* ------------------------------------------------------------ rows */

WH__ROW(add, .min_in = 2, .max_in = 2, .has_out = 1, .shape = sh_binary, .grad = gr_add, .cost = wh__co_elems,
        .flops = 1, .inplace = 3, .shard = sr_binary);
WH__ROW(sub, .min_in = 2, .max_in = 2, .has_out = 1, .shape = sh_binary, .grad = gr_sub, .cost = wh__co_elems,
        .flops = 1, .inplace = 3, .shard = sr_binary);
WH__ROW(mul, .min_in = 2, .max_in = 2, .has_out = 1, .shape = sh_binary, .grad = gr_mul, .cost = wh__co_elems,
        .flops = 1, .inplace = 3, .shard = sr_binary);
WH__ROW(div, .min_in = 2, .max_in = 2, .has_out = 1, .shape = sh_binary, .grad = gr_div, .cost = wh__co_elems,
        .flops = 1, .inplace = 3, .shard = sr_binary);
WH__ROW(scale, .min_in = 1, .max_in = 1, .has_out = 1, .shape = wh__sh_same, .grad = gr_scale, .cost = wh__co_elems,
        .flops = 1, .inplace = 1, .shard = sr_scale);
WH__ROW(bias_add, .min_in = 2, .max_in = 2, .has_out = 1, .shape = sh_bias_add, .grad = gr_bias_add,
        .cost = wh__co_elems, .flops = 1, .inplace = 1, .shard = sr_bias_add);
WH__ROW(relu, .min_in = 1, .max_in = 1, .has_out = 1, .shape = wh__sh_same, .grad = gr_unary, .cost = wh__co_elems,
        .flops = 1, .inplace = 1, .shard = sr_unary);
WH__ROW(gelu, .min_in = 1, .max_in = 1, .has_out = 1, .shape = wh__sh_same, .grad = gr_unary, .cost = wh__co_elems,
        .flops = 12, .inplace = 1, .shard = sr_unary);
WH__ROW(tanh, .min_in = 1, .max_in = 1, .has_out = 1, .shape = wh__sh_same, .grad = gr_unary, .cost = wh__co_elems,
        .flops = 8, .inplace = 1, .shard = sr_unary);
WH__ROW(sigmoid, .min_in = 1, .max_in = 1, .has_out = 1, .shape = wh__sh_same, .grad = gr_unary, .cost = wh__co_elems,
        .flops = 8, .inplace = 1, .shard = sr_unary);
WH__ROW(exp, .min_in = 1, .max_in = 1, .has_out = 1, .shape = wh__sh_same, .grad = gr_unary, .cost = wh__co_elems,
        .flops = 8, .inplace = 1, .shard = sr_unary);
WH__ROW(log, .min_in = 1, .max_in = 1, .has_out = 1, .shape = wh__sh_same, .grad = gr_unary, .cost = wh__co_elems,
        .flops = 8, .inplace = 1, .shard = sr_unary);
WH__ROW(mse, .min_in = 2, .max_in = 2, .has_out = 1, .shape = sh_mse, .grad = gr_mse, .cost = wh__co_elems,
        .flops = 1);
WH__ROW(dropout, .min_in = 1, .max_in = 1, .has_out = 1, .shape = sh_dropout, .grad = gr_dropout,
        .cost = wh__co_elems, .flops = 1, .inplace = 1);
/* the precision pass's conversion (partition/precision.c): any float dtype to another, same shape */
WH__PROGRAM_ROW(cast, .min_in = 1, .max_in = 1, .has_out = 1, .cost = wh__co_elems, .flops = 1, .shard = sr_unary);
WH__ROW(unary_grad, .min_in = 2, .max_in = 2, .has_out = 1, .shape = sh_unary_grad, .cost = wh__co_elems, .flops = 12,
        .inplace = 3, .shard = sr_unary);
WH__ROW(mse_grad, .min_in = 3, .max_in = 3, .has_out = 1, .shape = sh_mse_grad, .cost = wh__co_elems, .flops = 1,
        .inplace = 3);
