/* embedding.c - the embedding lookup and its gradient (a scatter-add into the table's shape); a
 * table split along the vocabulary runs as the partitioner's tp_embedding. */
#include "family.h"

#define WH__FAMILY embedding

/* ------------------------------------------------------------ shapes */

static wh_status sh_embedding(wh_graph *g, const wh__node *n, wh__value *o) {
  if (wh__need_dtype(g, n, 0, WH_F32) != WH_OK || wh__need_dtype(g, n, 1, WH_I32) != WH_OK) return g->status;
  const wh__shape *t = &IN(0)->shape, *ix = &IN(1)->shape;
  if (t->ndim != 2) return wh__fail_shape(g, n, "table must be [V, D]", 0, -1);
  if (ix->ndim + 1 > WH_MAX_DIMS) return wh__fail_shape(g, n, "indices rank too large", 1, -1);
  o->dtype = WH_F32;
  o->shape = *ix;
  o->shape.d[o->shape.ndim++] = t->d[1];
  return WH_OK;
}

static wh_status sh_embedding_grad(wh_graph *g, const wh__node *n, wh__value *o) {
  if (wh__need_dtype(g, n, 0, WH_I32) != WH_OK || wh__need_dtype(g, n, 1, WH_F32) != WH_OK ||
      wh__need_attrs(g, n, 1, 1) != WH_OK)
    return g->status;
  const wh__shape *ix = &IN(0)->shape, *dy = &IN(1)->shape;
  if (n->ia[0] < 1 || n->ia[0] > (INT64_C(1) << 40) || dy->ndim != ix->ndim + 1 || dy->d[dy->ndim - 1] < 1)
    return wh__fail_shape(g, n, "gradient must be the indices' shape plus a fixed width", 0, 1);
  for (int i = 0; i < ix->ndim; i++)
    if (ix->d[i] != dy->d[i]) return wh__fail_shape(g, n, "gradient must be the indices' shape plus a fixed width", 0, 1);
  o->dtype = WH_F32;
  o->shape.ndim = 2;
  o->shape.d[0] = n->ia[0];
  o->shape.d[1] = IN(1)->shape.d[IN(1)->shape.ndim - 1];
  return WH_OK;
}

/* ------------------------------------------------------------ gradients */

static wh_status gr_embedding(wh_graph *g, const wh__node *n, wh_value dy, const int *need, wh_value *dx) {
  if (need[0]) {
    int32_t in[2] = {n->in[1], dy};
    int64_t ia[1] = {SHAPE_OF(n->in[0])->d[0]};
    dx[0] = wh__mk_node(g, WH_OP_EMBEDDING_GRAD, 2, in, ia, 1, NULL, 0);
  }
  return g->status;
}

/* ------------------------------------------------------------ sharding rules */

/* embedding(table [V, D], indices): a table split along D splits the rows it gathers; split
 * along V (Megatron's vocabulary-parallel embedding) each rank gathers the rows it holds and
 * zeros for the others: partial sums. */
static void sr_embedding(wh__shard_q *q, wh__node *n) {
  wh__layout l = q->in[0];
  if (!is_s(l) || l.groups != 1) return;
  if (l.dim == 1) {
    q->want[0] = l, q->out = lay_s(OUTSH->ndim - 1, 1);
  } else if (l.dim == 0) {
    int64_t v = SH(0)->d[0];
    q->want[0] = l, q->out = LAY_P;
    n->op = WH_OP_TP_EMBEDDING;
    n->ia[0] = v / q->tp * q->index, n->ia[1] = v, n->n_ia = 2;
  }
}

/* embedding_grad(indices, dy) -> [V, D]: dy split along D gives the table's gradient split so. */
static void sr_embedding_grad(wh__shard_q *q, wh__node *n) {
  wh__layout l = q->in[1];
  if (!is_s(l) || l.dim != SH(1)->ndim - 1) return;
  q->want[1] = l, q->out = lay_s(1, l.groups);
}

/* ------------------------------------------------------------ rows */

WH__ROW(embedding, .min_in = 2, .max_in = 2, .has_out = 1, .shape = sh_embedding, .grad = gr_embedding,
        .cost = wh__co_elems, .flops = 0, .shard = sr_embedding);
WH__ROW(embedding_grad, .min_in = 2, .max_in = 2, .has_out = 1, .shape = sh_embedding_grad, .cost = wh__co_elems,
        .flops = 1, .shard = sr_embedding_grad);
