/* softmax.c - the ops over the last axis: softmax, log_softmax and their gradients, and the
 * cross-entropy loss with its gradient (its sharding rule runs class-split logits sharded). */
#include "family.h"

#define WH__FAMILY softmax

/* ------------------------------------------------------------ shapes */

static wh_status sh_lastaxis(wh_graph *g, const wh__node *n, wh__value *o) {
  if (IN(0)->shape.ndim < 1) return wh__fail_shape(g, n, "needs rank >= 1", 0, -1);
  return wh__sh_same(g, n, o);
}

static wh_status sh_cross_entropy(wh_graph *g, const wh__node *n, wh__value *o) {
  if (wh__need_dtype(g, n, 0, WH_F32) != WH_OK || wh__need_dtype(g, n, 1, WH_I32) != WH_OK) return g->status;
  const wh__shape *l = &IN(0)->shape, *y = &IN(1)->shape;
  if (l->ndim < 1 || y->ndim != l->ndim - 1) return wh__fail_shape(g, n, "labels must have the logits' shape without its last axis", 0, 1);
  for (int i = 0; i < y->ndim; i++)
    if (y->d[i] != l->d[i]) return wh__fail_shape(g, n, "labels must have the logits' shape without its last axis", 0, 1);
  o->dtype = WH_F32;
  o->shape.ndim = 0;
  return WH_OK;
}

static wh_status sh_cross_entropy_grad(wh_graph *g, const wh__node *n, wh__value *o) {
  wh__value loss = {0};
  if (sh_cross_entropy(g, n, &loss) != WH_OK || wh__need_dtype(g, n, 2, WH_F32) != WH_OK ||
      wh__need_shape(g, n, 2, &loss.shape, "the loss gradient is a scalar") != WH_OK)
    return g->status;
  o->dtype = WH_F32;
  o->shape = IN(0)->shape;
  return WH_OK;
}

/* ------------------------------------------------------------ gradients */

static wh_status gr_softmax(wh_graph *g, const wh__node *n, wh_value dy, const int *need, wh_value *dx) {
  if (need[0]) dx[0] = wh__mk_node2(g, n->op == WH_OP_SOFTMAX ? WH_OP_SOFTMAX_GRAD : WH_OP_LOG_SOFTMAX_GRAD, n->out, dy);
  return g->status;
}

static wh_status gr_cross_entropy(wh_graph *g, const wh__node *n, wh_value dy, const int *need, wh_value *dx) {
  if (need[0]) {
    int32_t in[3] = {n->in[0], n->in[1], dy};
    dx[0] = wh__mk_node(g, WH_OP_CROSS_ENTROPY_GRAD, 3, in, NULL, 0, NULL, 0);
  }
  return g->status;
}

/* ------------------------------------------------------------ sharding rules */

/* cross_entropy(logits, labels) and its gradient (logits, labels, dy): logits split along the
 * classes (the vocabulary-parallel output layer) run as the sharded cross-entropy, which combines
 * the ranks' row maxima, sums of exponentials and target logits, and never gathers the logits. */
static void sr_cross_entropy(wh__shard_q *q, wh__node *n) {
  wh__layout l = q->in[0];
  const wh__shape *x = SH(0);
  if (!is_s(l) || l.groups != 1 || l.dim != x->ndim - 1) return;
  int64_t v = x->d[l.dim];
  q->want[0] = l;
  if (n->op == WH_OP_CROSS_ENTROPY) {
    n->op = WH_OP_TP_CROSS_ENTROPY;
  } else {
    n->op = WH_OP_TP_CROSS_ENTROPY_GRAD;
    q->out = l;
  }
  n->ia[0] = v / q->tp * q->index, n->ia[1] = v, n->n_ia = 2;
}

/* ------------------------------------------------------------ rows */

WH__ROW(softmax, .min_in = 1, .max_in = 1, .has_out = 1, .shape = sh_lastaxis, .grad = gr_softmax,
        .cost = wh__co_elems, .flops = 10, .inplace = 1, .shard = wh__sr_lastaxis);
WH__ROW(log_softmax, .min_in = 1, .max_in = 1, .has_out = 1, .shape = sh_lastaxis, .grad = gr_softmax,
        .cost = wh__co_elems, .flops = 10, .inplace = 1, .shard = wh__sr_lastaxis);
WH__ROW(cross_entropy, .min_in = 2, .max_in = 2, .has_out = 1, .shape = sh_cross_entropy, .grad = gr_cross_entropy,
        .cost = wh__co_elems, .flops = 10, .shard = sr_cross_entropy);
WH__ROW(softmax_grad, .min_in = 2, .max_in = 2, .has_out = 1, .shape = wh__sh_pair, .cost = wh__co_elems, .flops = 6,
        .inplace = 3, .shard = wh__sr_lastaxis);
WH__ROW(log_softmax_grad, .min_in = 2, .max_in = 2, .has_out = 1, .shape = wh__sh_pair, .cost = wh__co_elems,
        .flops = 6, .inplace = 3, .shard = wh__sr_lastaxis);
WH__ROW(cross_entropy_grad, .min_in = 3, .max_in = 3, .has_out = 1, .shape = sh_cross_entropy_grad,
        .cost = wh__co_elems, .flops = 10, .inplace = 1, .shard = sr_cross_entropy);
