/* reduce.c - sum and mean over axes, and the two ops their gradients and broadcasting's are made
 * of: sum_to (sum broadcast dimensions away) and broadcast_to. */
#include "family.h"

#define WH__FAMILY reduce

/* ------------------------------------------------------------ shapes */

static wh_status sh_reduce(wh_graph *g, const wh__node *n, wh__value *o) {
  if (wh__need_f32(g, n) != WH_OK) return g->status;
  const wh__shape *x = &IN(0)->shape;
  uint64_t mask = (uint64_t)n->ia[0];
  int keep = (int)n->ia[1];
  if (mask >> x->ndim) return wh__fail_shape(g, n, "axis out of range", 0, -1);
  o->dtype = WH_F32;
  o->shape.ndim = 0;
  for (int i = 0; i < x->ndim; i++) {
    if (mask >> i & 1) {
      if (keep) o->shape.d[o->shape.ndim++] = 1;
    } else {
      o->shape.d[o->shape.ndim++] = x->d[i];
    }
  }
  return WH_OK;
}

static wh_status sh_sum_to(wh_graph *g, const wh__node *n, wh__value *o) {
  wh__shape t, b;
  if (wh__need_f32(g, n) != WH_OK || wh__attr_shape(g, n, 0, n->n_ia, &t) != WH_OK) return g->status;
  if (!wh__broadcast(&t, &IN(0)->shape, &b) || !wh__shape_eq(&b, &IN(0)->shape))
    return wh__fail_shape(g, n, "target does not broadcast to the input", 0, -1);
  o->dtype = WH_F32;
  o->shape = t;
  return WH_OK;
}

static wh_status sh_broadcast_to(wh_graph *g, const wh__node *n, wh__value *o) {
  wh__shape t, b;
  if (wh__need_f32(g, n) != WH_OK || wh__need_attrs(g, n, 1, 1 + WH_MAX_DIMS) != WH_OK ||
      wh__attr_shape(g, n, 1, n->n_ia - 1, &t) != WH_OK)
    return g->status;
  if (!wh__broadcast(&IN(0)->shape, &t, &b) || !wh__shape_eq(&b, &t))
    return wh__fail_shape(g, n, "input does not broadcast to the target", 0, -1);
  o->dtype = WH_F32;
  o->shape = t;
  return WH_OK;
}

/* ------------------------------------------------------------ gradients */

static wh_status gr_reduce(wh_graph *g, const wh__node *n, wh_value dy, const int *need, wh_value *dx) {
  if (!need[0]) return g->status;
  wh__shape xs = *SHAPE_OF(n->in[0]);
  uint64_t mask = (uint64_t)n->ia[0];
  wh__shape kd = xs;
  for (int i = 0; i < xs.ndim; i++)
    if (mask >> i & 1) kd.d[i] = 1;
  wh_value d = n->ia[1] ? dy : wh__mk_reshape(g, dy, &kd);
  int64_t ia[1 + WH_MAX_DIMS];
  ia[0] = n->op == WH_OP_MEAN;
  for (int i = 0; i < xs.ndim; i++) ia[1 + i] = xs.d[i];
  int32_t in[1] = {d};
  dx[0] = wh__mk_node(g, WH_OP_BROADCAST_TO, 1, in, ia, 1 + xs.ndim, NULL, 0);
  return g->status;
}

/* ------------------------------------------------------------ sharding rules */

/* sum / mean over the axes in ia[0] (ia[1]: keep them): a split of a summed axis gives partial
 * sums (a mean of a split axis runs whole); a split of a kept axis carries over, renumbered. */
static void sr_reduce(wh__shard_q *q, wh__node *n) {
  wh__layout l = q->in[0];
  if (!is_s(l)) return;
  uint64_t mask = (uint64_t)n->ia[0];
  if (mask >> l.dim & 1) {
    if (n->op == WH_OP_SUM) q->want[0] = l, q->out = LAY_P;
    return;
  }
  int d = l.dim;
  if (!n->ia[1])
    for (int i = 0; i < l.dim; i++) d -= (int)(mask >> i & 1);
  q->want[0] = l, q->out = lay_s(d, l.groups);
}

/* sum_to(target in ia): a split of a dimension the target keeps carries over; of one it sums,
 * partial sums. */
static void sr_sum_to(wh__shard_q *q, wh__node *n) {
  wh__layout l = q->in[0];
  if (!is_s(l)) return;
  const wh__shape *s = SH(0);
  int od = l.dim - (s->ndim - n->n_ia);
  q->want[0] = l;
  if (od >= 0 && n->ia[od] == s->d[l.dim]) {
    q->out = lay_s(od, l.groups);
    n->ia[od] /= q->tp;
  } else {
    q->out = LAY_P;
  }
}

/* broadcast_to(shape in ia[1..]): a split carries over to the dimension it aligns with. */
static void sr_broadcast_to(wh__shard_q *q, wh__node *n) {
  wh__layout l = q->in[0];
  if (!is_s(l)) return;
  const wh__shape *s = SH(0);
  int on = n->n_ia - 1, od = l.dim + (on - s->ndim);
  if (od < 0 || n->ia[1 + od] != s->d[l.dim]) return;
  q->want[0] = l, q->out = lay_s(od, l.groups);
  n->ia[1 + od] /= q->tp;
}

/* ------------------------------------------------------------ rows */

WH__ROW(sum, .min_in = 1, .max_in = 1, .has_out = 1, .shape = sh_reduce, .grad = gr_reduce, .cost = wh__co_elems,
        .flops = 1, .shard = sr_reduce);
WH__ROW(mean, .min_in = 1, .max_in = 1, .has_out = 1, .shape = sh_reduce, .grad = gr_reduce, .cost = wh__co_elems,
        .flops = 1, .shard = sr_reduce);
WH__ROW(sum_to, .min_in = 1, .max_in = 1, .has_out = 1, .shape = sh_sum_to, .cost = wh__co_elems, .flops = 1,
        .shard = sr_sum_to);
WH__ROW(broadcast_to, .min_in = 1, .max_in = 1, .has_out = 1, .shape = sh_broadcast_to, .cost = wh__co_elems,
        .flops = 1, .shard = sr_broadcast_to);
