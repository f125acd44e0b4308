/* layout.c - the ops that move data without arithmetic: reshape (a view), permute, slice and its
 * gradient, concat. */
#include "family.h"

#define WH__FAMILY layout

/* ------------------------------------------------------------ shapes */

static wh_status sh_reshape(wh_graph *g, const wh__node *n, wh__value *o) {
  const wh__shape *x = &IN(0)->shape;
  wh__shape t = {.ndim = n->n_ia};
  for (int i = 0; i < n->n_ia; i++) {
    if (n->ia[i] == 0) return wh__fail_shape(g, n, "a target dimension is 0", 0, -1);
    t.d[i] = n->ia[i];
  }
  int px, pt;
  int64_t cx = wh__numel_sym(x, &px), ct = wh__numel_sym(&t, &pt);
  if (pt > 1) return wh__fail_shape(g, n, "target has more than one batch dimension", 0, -1);
  if (cx != ct || px != pt) {
    char a[160], b[160];
    return wh__graph_fail(g, WH_ERR_SHAPE, "%s: input 0 shape %s has a different element count than target %s", OPN,
                          wh__shape_str(x, a, sizeof a), wh__shape_str(&t, b, sizeof b));
  }
  o->dtype = IN(0)->dtype;
  o->shape = t;
  return WH_OK;
}

static wh_status sh_permute(wh_graph *g, const wh__node *n, wh__value *o) {
  const wh__shape *x = &IN(0)->shape;
  if (n->n_ia != x->ndim) return wh__fail_shape(g, n, "permutation length differs from the rank", 0, -1);
  int seen = 0;
  for (int i = 0; i < x->ndim; i++) {
    if (n->ia[i] < 0 || n->ia[i] >= x->ndim || (seen >> n->ia[i] & 1))
      return wh__fail_shape(g, n, "not a permutation of the axes", 0, -1);
    seen |= 1 << n->ia[i];
  }
  o->dtype = IN(0)->dtype;
  o->shape.ndim = x->ndim;
  for (int i = 0; i < x->ndim; i++) o->shape.d[i] = x->d[n->ia[i]];
  return WH_OK;
}

static wh_status sh_slice(wh_graph *g, const wh__node *n, wh__value *o) {
  const wh__shape *x = &IN(0)->shape;
  int ax = (int)n->ia[0];
  if (ax < 0 || ax >= x->ndim) return wh__fail_shape(g, n, "axis out of range", 0, -1);
  if (x->d[ax] < 0) return wh__fail_shape(g, n, "cannot slice the batch dimension", 0, -1);
  if (n->ia[1] < 0 || n->ia[2] > x->d[ax] || n->ia[1] >= n->ia[2]) {
    char a[160];
    return wh__graph_fail(g, WH_ERR_SHAPE, "%s: range [%lld, %lld) is empty or outside axis %d of input 0 shape %s",
                          OPN, (long long)n->ia[1], (long long)n->ia[2], ax, wh__shape_str(x, a, sizeof a));
  }
  o->dtype = IN(0)->dtype;
  o->shape = *x;
  o->shape.d[ax] = n->ia[2] - n->ia[1];
  return WH_OK;
}

static wh_status sh_slice_grad(wh_graph *g, const wh__node *n, wh__value *o) {
  if (wh__need_f32(g, n) != WH_OK || wh__need_attrs(g, n, 3, 3) != WH_OK) return g->status;
  const wh__shape *dy = &IN(0)->shape;
  int64_t ax = n->ia[0];
  if (ax < 0 || ax >= dy->ndim || dy->d[ax] < 0 || n->ia[1] < 0 || n->ia[2] < n->ia[1] + dy->d[ax] ||
      n->ia[2] > (INT64_C(1) << 40))
    return wh__fail_shape(g, n, "axis, offset and full size do not fit the gradient", 0, -1);
  o->dtype = WH_F32;
  o->shape = *dy;
  o->shape.d[ax] = n->ia[2];
  return WH_OK;
}

static wh_status sh_concat(wh_graph *g, const wh__node *n, wh__value *o) {
  const wh__shape *x = &IN(0)->shape;
  int ax = (int)n->ia[0];
  if (ax < 0 || ax >= x->ndim) return wh__fail_shape(g, n, "axis out of range", 0, -1);
  int64_t total = 0;
  for (int i = 0; i < n->n_in; i++) {
    const wh__shape *s = &IN(i)->shape;
    if (IN(i)->dtype != IN(0)->dtype) return wh__need_dtype(g, n, i, IN(0)->dtype);
    if (s->ndim != x->ndim) return wh__fail_shape(g, n, "ranks differ", 0, i);
    for (int k = 0; k < x->ndim; k++)
      if (k != ax && s->d[k] != x->d[k]) return wh__fail_shape(g, n, "non-concatenated dimensions differ", 0, i);
    if (s->d[ax] < 0) return wh__fail_shape(g, n, "cannot concatenate along the batch dimension", i, -1);
    total += s->d[ax];
  }
  o->dtype = IN(0)->dtype;
  o->shape = *x;
  o->shape.d[ax] = total;
  return WH_OK;
}

/* ------------------------------------------------------------ gradients */

static wh_status gr_reshape(wh_graph *g, const wh__node *n, wh_value dy, const int *need, wh_value *dx) {
  if (need[0]) {
    wh__shape t = *SHAPE_OF(n->in[0]);
    dx[0] = wh__mk_reshape(g, dy, &t);
  }
  return g->status;
}

static wh_status gr_permute(wh_graph *g, const wh__node *n, wh_value dy, const int *need, wh_value *dx) {
  if (!need[0]) return g->status;
  int64_t inv[WH_MAX_DIMS];
  for (int i = 0; i < n->n_ia; i++) inv[n->ia[i]] = i;
  int32_t in[1] = {dy};
  dx[0] = wh__mk_node(g, WH_OP_PERMUTE, 1, in, inv, n->n_ia, NULL, 0);
  return g->status;
}

static wh_status gr_slice(wh_graph *g, const wh__node *n, wh_value dy, const int *need, wh_value *dx) {
  if (!need[0]) return g->status;
  int64_t ia[3] = {n->ia[0], n->ia[1], SHAPE_OF(n->in[0])->d[n->ia[0]]};
  int32_t in[1] = {dy};
  dx[0] = wh__mk_node(g, WH_OP_SLICE_GRAD, 1, in, ia, 3, NULL, 0);
  return g->status;
}

static wh_status gr_concat(wh_graph *g, const wh__node *n, wh_value dy, const int *need, wh_value *dx) {
  int64_t off = 0;
  for (int i = 0; i < n->n_in; i++) {
    int64_t len = SHAPE_OF(n->in[i])->d[n->ia[0]];
    if (need[i]) {
      int64_t ia[3] = {n->ia[0], off, off + len};
      int32_t in[1] = {dy};
      dx[i] = wh__mk_node(g, WH_OP_SLICE, 1, in, ia, 3, NULL, 0);
    }
    off += len;
  }
  return g->status;
}

/* ------------------------------------------------------------ costs */

static void co_reshape(const wh_graph *g, const wh__node *n, int64_t batch, wh__cost *c) {
  (void)g, (void)n, (void)batch;
  *c = (wh__cost){0, 0, 0}; /* a view: no data moves */
}

/* ------------------------------------------------------------ sharding rules */

/* Where the first element of in-dimension d lands in a reshape: the output dimension that starts
 * the same run of elements, when d leads its group of dimensions (in and out have equal products);
 * -1 otherwise. Products are c * B^p for symbolic batch dimensions. */
static int reshape_map(const wh__shape *in, const wh__shape *out, int d) {
  int i = 0, j = 0;
  while (i < in->ndim || j < out->ndim) {
    int gi = i, gj = j, pi = 0, po = 0;
    int64_t ci = 1, co = 1;
    int take_in = i < in->ndim, take_out = j < out->ndim;
    for (;;) {
      if (take_in) {
        int64_t v = in->d[i++];
        if (v < 0) pi++, v = -v;
        ci *= v;
      }
      if (take_out) {
        int64_t v = out->d[j++];
        if (v < 0) po++, v = -v;
        co *= v;
      }
      if (ci == co && pi == po) break;
      /* the side with the smaller product takes the next dimension */
      take_in = pi < po || (pi == po && ci < co);
      take_out = !take_in;
      if ((take_in && i >= in->ndim) || (take_out && j >= out->ndim)) return -1;
    }
    if (d >= gi && d < i) {
      for (int k = gi; k < d; k++)
        if (in->d[k] != 1) return -1;
      for (int k = gj; k < j; k++)
        if (out->d[k] != 1) return k;
      return -1;
    }
  }
  return -1;
}

static void sr_reshape(wh__shard_q *q, wh__node *n) {
  wh__layout l = q->in[0];
  if (!is_s(l)) return; /* partial sums are summed before a view: its source is summed once for all readers */
  const wh__shape *in = SH(0), *out = OUTSH;
  int od = reshape_map(in, out, l.dim);
  if (od < 0 || !wh__lay_can_split(out, od, l.groups, q->tp)) return;
  q->want[0] = l, q->out = lay_s(od, l.groups);
  n->ia[od] /= q->tp;
}

static void sr_permute(wh__shard_q *q, wh__node *n) {
  wh__layout l = q->in[0];
  if (!is_s(l)) return;
  for (int j = 0; j < n->n_ia; j++)
    if (n->ia[j] == l.dim) {
      q->want[0] = l, q->out = lay_s(j, l.groups);
      return;
    }
}

/* slice / slice_grad along ia[0]; concat along ia[0]: splits of other dimensions carry over. */
static void sr_slice(wh__shard_q *q, wh__node *n) {
  wh__layout l = q->in[0];
  for (int k = 1; k < n->n_in && is_s(l); k++)
    if (!wh__lay_eq(q->in[k], l)) l = LAY_R;
  if (!is_s(l) || l.dim == n->ia[0]) return;
  for (int k = 0; k < n->n_in; k++) q->want[k] = l;
  q->out = l;
}

/* ------------------------------------------------------------ rows */

WH__ROW(reshape, .min_in = 1, .max_in = 1, .has_out = 1, .shape = sh_reshape, .grad = gr_reshape, .cost = co_reshape,
        .shard = sr_reshape);
WH__ROW(permute, .min_in = 1, .max_in = 1, .has_out = 1, .shape = sh_permute, .grad = gr_permute,
        .cost = wh__co_elems, .flops = 0, .shard = sr_permute);
WH__ROW(slice, .min_in = 1, .max_in = 1, .has_out = 1, .shape = sh_slice, .grad = gr_slice, .cost = wh__co_elems,
        .flops = 0, .shard = sr_slice);
WH__ROW(concat, .min_in = 1, .max_in = -1, .has_out = 1, .shape = sh_concat, .grad = gr_concat, .cost = wh__co_elems,
        .flops = 0, .shard = sr_slice);
WH__ROW(slice_grad, .min_in = 1, .max_in = 1, .has_out = 1, .shape = sh_slice_grad, .cost = wh__co_elems, .flops = 0,
        .shard = sr_slice);
