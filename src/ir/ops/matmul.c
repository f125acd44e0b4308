/* matmul.c - the matmul op: shape, gradient (the textbook formulas, or rows folded for a right
 * operand shared by a batch), cost and sharding rule (row, column and inner-dimension splits). */
#include "family.h"

#define WH__FAMILY matmul

/* ------------------------------------------------------------ shapes */

static wh_status sh_matmul(wh_graph *g, const wh__node *n, wh__value *o) {
  if (wh__need_f32(g, n) != WH_OK) return g->status;
  const wh__shape *a = &IN(0)->shape, *b = &IN(1)->shape;
  int ta = (int)n->ia[0], tb = (int)n->ia[1];
  if (a->ndim < 2 || b->ndim < 2) return wh__fail_shape(g, n, "both inputs need rank >= 2", 0, 1);
  if (b->ndim > 2 && a->ndim != b->ndim)
    return wh__fail_shape(g, n, "a batched right operand needs the left operand's rank", 0, 1);
  if (b->ndim > 2)
    for (int i = 0; i < a->ndim - 2; i++)
      if (a->d[i] != b->d[i]) return wh__fail_shape(g, n, "leading (batch) dimensions differ", 0, 1);
  int64_t m = ta ? a->d[a->ndim - 1] : a->d[a->ndim - 2];
  int64_t k = ta ? a->d[a->ndim - 2] : a->d[a->ndim - 1];
  int64_t kb = tb ? b->d[b->ndim - 1] : b->d[b->ndim - 2];
  int64_t nn = tb ? b->d[b->ndim - 2] : b->d[b->ndim - 1];
  if (k != kb) return wh__fail_shape(g, n, "inner dimensions differ", 0, 1);
  o->dtype = WH_F32;
  o->shape = *a;
  o->shape.d[a->ndim - 2] = m;
  o->shape.d[a->ndim - 1] = nn;
  if (wh__shape_symbolic_count(&o->shape) > 1) return wh__fail_shape(g, n, "result would have two batch dimensions", 0, 1);
  return WH_OK;
}

/* ------------------------------------------------------------ gradients */

static wh_value mk_matmul(wh_graph *g, wh_value a, wh_value b, int ta, int tb) {
  int32_t in[2] = {a, b};
  int64_t ia[2] = {ta, tb};
  return wh__mk_node(g, WH_OP_MATMUL, 2, in, ia, 2, NULL, 0);
}

static wh_value mk_transpose_last(wh_graph *g, wh_value x) {
  int nd = SHAPE_OF(x)->ndim;
  int64_t perm[WH_MAX_DIMS];
  for (int i = 0; i < nd; i++) perm[i] = i;
  perm[nd - 2] = nd - 1;
  perm[nd - 1] = nd - 2;
  int32_t in[1] = {x};
  return wh__mk_node(g, WH_OP_PERMUTE, 1, in, perm, nd, NULL, 0);
}

static wh_status gr_matmul(wh_graph *g, const wh__node *n, wh_value dy, const int *need, wh_value *dx) {
  wh_value a = n->in[0], b = n->in[1];
  int ta = (int)n->ia[0], tb = (int)n->ia[1];
  int shared = SHAPE_OF(b)->ndim == 2 && SHAPE_OF(a)->ndim > 2;
  if (!shared) {
    /* plain or batched-by-batched: the textbook formulas */
    if (need[0]) dx[0] = ta ? mk_matmul(g, b, dy, tb, 1) : mk_matmul(g, dy, b, 0, !tb);
    if (need[1]) dx[1] = tb ? mk_matmul(g, dy, a, 1, ta) : mk_matmul(g, a, dy, !ta, 0);
    return g->status;
  }
  /* a shared right operand: work with op(a) = [..., M, K] so its leading dims fold into rows */
  if (need[0]) {
    wh_value d = mk_matmul(g, dy, b, 0, !tb); /* d op(a) */
    dx[0] = ta ? mk_transpose_last(g, d) : d;
  }
  if (need[1]) {
    wh_value opa = ta ? mk_transpose_last(g, a) : a;
    const wh__shape *as = SHAPE_OF(opa), *ys = SHAPE_OF(dy);
    int64_t rows = 1;
    int sym = 0;
    for (int i = 0; i < as->ndim - 1; i++) {
      if (as->d[i] < 0) sym = 1;
      rows *= as->d[i] < 0 ? -as->d[i] : as->d[i];
    }
    wh__shape af = {2, {sym ? -rows : rows, as->d[as->ndim - 1]}};
    wh__shape yf = {2, {sym ? -rows : rows, ys->d[ys->ndim - 1]}};
    wh_value a2 = wh__mk_reshape(g, opa, &af), y2 = wh__mk_reshape(g, dy, &yf);
    dx[1] = tb ? mk_matmul(g, y2, a2, 1, 0) : mk_matmul(g, a2, y2, 1, 0);
  }
  return g->status;
}

/* ------------------------------------------------------------ costs */

static void co_matmul(const wh_graph *g, const wh__node *n, int64_t batch, wh__cost *c) {
  wh__io_bytes(g, n, batch, c);
  const wh__shape *a = &g->values[n->in[0]].shape;
  int64_t k = wh__dim(n->ia[0] ? a->d[a->ndim - 2] : a->d[a->ndim - 1], batch);
  c->flops = 2.0 * (double)wh__numel(&g->values[n->out].shape, batch) * (double)k;
}

/* ------------------------------------------------------------ sharding rules */

/* matmul: op(a) [.., M, K] x op(b) [K, N]. K split on both sides gives partial sums; N split on b
 * (column parallel) splits the output's last dimension; a split of a's rows or batch dimensions
 * carries over to the output. A batched b, or partial inputs, run replicated. */
static void sr_matmul(wh__shard_q *q, wh__node *n) {
  const wh__shape *a = SH(0), *b = SH(1);
  int ra = a->ndim, rb = b->ndim, ta = (int)n->ia[0], tb = (int)n->ia[1];
  if (rb != 2) return;
  int ak = ta ? ra - 2 : ra - 1, am = ta ? ra - 1 : ra - 2, bk = tb ? 1 : 0, bn = tb ? 0 : 1;
  wh__layout la = q->in[0], lb = q->in[1];
  if (is_s(la) && la.dim == ak && (lb.kind == WH_LAY_R || (is_s(lb) && lb.dim == bk && lb.groups == la.groups)) &&
      wh__lay_can_split(b, bk, la.groups, q->tp)) {
    q->want[0] = la, q->want[1] = lay_s(bk, la.groups), q->out = LAY_P;
  } else if (is_s(lb) && lb.dim == bk && la.kind == WH_LAY_R && wh__lay_can_split(a, ak, lb.groups, q->tp) &&
             a->d[ak] > 0) {
    q->want[0] = lay_s(ak, lb.groups), q->want[1] = lb, q->out = LAY_P;
  } else if (is_s(lb) && lb.dim == bn && !is_p(la)) {
    q->want[1] = lb, q->out = lay_s(ra - 1, lb.groups);
  } else if (is_s(la) && la.dim != ak && a->d[la.dim] > 0 && !is_p(lb)) {
    q->want[0] = la, q->out = lay_s(la.dim == am ? ra - 2 : la.dim, la.groups);
  }
}

/* ------------------------------------------------------------ rows */

WH__ROW(matmul, .min_in = 2, .max_in = 2, .has_out = 1, .shape = sh_matmul, .grad = gr_matmul, .cost = co_matmul,
        .shard = sr_matmul);
