/* ops.c - the op registry: for every op its arity, shape function, gradient builder, cost
 * estimate and sharding rule. Its kernels are in the kernel tables (kernels/table.c); ops.def lists the ops. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "ir.h"
#include "shard.h"

#define IN(i) (&g->values[n->in[i]])
#define OPN (wh__ops[n->op].name)

static wh_status fail_shape(wh_graph *g, const wh__node *n, const char *why, int i, int j) {
  char a[160], b[160];
  wh__shape_str(&IN(i)->shape, a, sizeof a);
  if (j >= 0) {
    wh__shape_str(&IN(j)->shape, b, sizeof b);
    return wh__graph_fail(g, WH_ERR_SHAPE, "%s: %s: input %d shape %s, input %d shape %s", OPN, why, i, a, j, b);
  }
  return wh__graph_fail(g, WH_ERR_SHAPE, "%s: %s: input %d shape %s", OPN, why, i, a);
}

static wh_status need_dtype(wh_graph *g, const wh__node *n, int i, wh_dtype dt) {
  if (IN(i)->dtype == dt) return WH_OK;
  return wh__graph_fail(g, WH_ERR_DTYPE, "%s: input %d has dtype %s, expected %s", OPN, i,
                        wh__dtype_name(IN(i)->dtype), wh__dtype_name(dt));
}

static wh_status all_f32(wh_graph *g, const wh__node *n) {
  for (int i = 0; i < n->n_in; i++)
    if (need_dtype(g, n, i, WH_F32) != WH_OK) return g->status;
  return WH_OK;
}

/* ------------------------------------------------------------ shapes */
/* Backward-only ops are normally built by gradient builders, but a graph file can hold any node:
 * their shape functions check attributes and inputs as strictly as the forward ones. */

static wh_status need_attrs(wh_graph *g, const wh__node *n, int min_ia, int max_ia) {
  if (n->n_ia >= min_ia && n->n_ia <= max_ia) return WH_OK;
  return wh__graph_fail(g, WH_ERR_INVALID_ARGUMENT, "%s: %d integer attributes, expected %d..%d", OPN, n->n_ia, min_ia,
                        max_ia);
}

/* A shape stored in attributes: ndim dims from ia[first], each > 0 or symbolic, at most one symbolic. */
static wh_status attr_shape(wh_graph *g, const wh__node *n, int first, int ndim, wh__shape *out) {
  if (ndim < 0 || ndim > WH_MAX_DIMS || first + ndim > n->n_ia)
    return wh__graph_fail(g, WH_ERR_INVALID_ARGUMENT, "%s: attribute shape of rank %d does not fit", OPN, ndim);
  out->ndim = ndim;
  for (int i = 0; i < ndim; i++) {
    out->d[i] = n->ia[first + i];
    if (out->d[i] == 0 || out->d[i] < -(INT64_C(1) << 40) || out->d[i] > (INT64_C(1) << 40))
      return wh__graph_fail(g, WH_ERR_INVALID_ARGUMENT, "%s: attribute dimension %d is %lld", OPN, i, (long long)out->d[i]);
  }
  if (wh__shape_symbolic_count(out) > 1)
    return wh__graph_fail(g, WH_ERR_SHAPE, "%s: attribute shape has more than one batch dimension", OPN);
  return WH_OK;
}

static wh_status need_shape(wh_graph *g, const wh__node *n, int i, const wh__shape *want, const char *what) {
  if (wh__shape_eq(&IN(i)->shape, want)) return WH_OK;
  char a[160], b[160];
  return wh__graph_fail(g, WH_ERR_SHAPE, "%s: input %d shape %s, expected %s (%s)", OPN, i,
                        wh__shape_str(&IN(i)->shape, a, sizeof a), wh__shape_str(want, b, sizeof b), what);
}


static wh_status sh_same(wh_graph *g, const wh__node *n, wh__value *o) {
  if (all_f32(g, n) != WH_OK) return g->status;
  o->dtype = WH_F32;
  o->shape = IN(0)->shape;
  return WH_OK;
}

/* (saved, dy) grads: output like dy, saved must match dy */
static wh_status sh_pair(wh_graph *g, const wh__node *n, wh__value *o) {
  if (all_f32(g, n) != WH_OK) return g->status;
  if (!wh__shape_eq(&IN(0)->shape, &IN(1)->shape)) return fail_shape(g, n, "shapes differ", 0, 1);
  o->dtype = WH_F32;
  o->shape = IN(1)->shape;
  return WH_OK;
}

static wh_status sh_unary_grad(wh_graph *g, const wh__node *n, wh__value *o) {
  if (need_attrs(g, n, 1, 1) != WH_OK) return g->status;
  if (n->ia[0] < WH_OP_RELU || n->ia[0] > WH_OP_LOG)
    return wh__graph_fail(g, WH_ERR_INVALID_ARGUMENT, "%s: %lld is not an activation op", OPN, (long long)n->ia[0]);
  return sh_pair(g, n, o);
}

static wh_status sh_matmul(wh_graph *g, const wh__node *n, wh__value *o) {
  if (all_f32(g, n) != WH_OK) return g->status;
  const wh__shape *a = &IN(0)->shape, *b = &IN(1)->shape;
  int ta = (int)n->ia[0], tb = (int)n->ia[1];
  if (a->ndim < 2 || b->ndim < 2) return fail_shape(g, n, "both inputs need rank >= 2", 0, 1);
  if (b->ndim > 2 && a->ndim != b->ndim)
    return fail_shape(g, n, "a batched right operand needs the left operand's rank", 0, 1);
  if (b->ndim > 2)
    for (int i = 0; i < a->ndim - 2; i++)
      if (a->d[i] != b->d[i]) return fail_shape(g, n, "leading (batch) dimensions differ", 0, 1);
  int64_t m = ta ? a->d[a->ndim - 1] : a->d[a->ndim - 2];
  int64_t k = ta ? a->d[a->ndim - 2] : a->d[a->ndim - 1];
  int64_t kb = tb ? b->d[b->ndim - 1] : b->d[b->ndim - 2];
  int64_t nn = tb ? b->d[b->ndim - 2] : b->d[b->ndim - 1];
  if (k != kb) return fail_shape(g, n, "inner dimensions differ", 0, 1);
  o->dtype = WH_F32;
  o->shape = *a;
  o->shape.d[a->ndim - 2] = m;
  o->shape.d[a->ndim - 1] = nn;
  if (wh__shape_symbolic_count(&o->shape) > 1) return fail_shape(g, n, "result would have two batch dimensions", 0, 1);
  return WH_OK;
}

static wh_status sh_binary(wh_graph *g, const wh__node *n, wh__value *o) {
  if (all_f32(g, n) != WH_OK) return g->status;
  if (!wh__broadcast(&IN(0)->shape, &IN(1)->shape, &o->shape)) return fail_shape(g, n, "shapes do not broadcast", 0, 1);
  o->dtype = WH_F32;
  return WH_OK;
}

static wh_status sh_bias_add(wh_graph *g, const wh__node *n, wh__value *o) {
  if (all_f32(g, n) != WH_OK) return g->status;
  const wh__shape *x = &IN(0)->shape, *b = &IN(1)->shape;
  int ax = (int)n->ia[0];
  if (ax < 0 || ax >= x->ndim) return fail_shape(g, n, "axis out of range", 0, -1);
  if (b->ndim != 1 || b->d[0] != x->d[ax]) return fail_shape(g, n, "bias must be 1-D with the size of the axis", 0, 1);
  o->dtype = WH_F32;
  o->shape = *x;
  return WH_OK;
}

static wh_status sh_lastaxis(wh_graph *g, const wh__node *n, wh__value *o) {
  if (IN(0)->shape.ndim < 1) return fail_shape(g, n, "needs rank >= 1", 0, -1);
  return sh_same(g, n, o);
}

static wh_status sh_reduce(wh_graph *g, const wh__node *n, wh__value *o) {
  if (all_f32(g, n) != WH_OK) return g->status;
  const wh__shape *x = &IN(0)->shape;
  uint64_t mask = (uint64_t)n->ia[0];
  int keep = (int)n->ia[1];
  if (mask >> x->ndim) return fail_shape(g, n, "axis out of range", 0, -1);
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

static wh_status sh_reshape(wh_graph *g, const wh__node *n, wh__value *o) {
  const wh__shape *x = &IN(0)->shape;
  wh__shape t = {.ndim = n->n_ia};
  for (int i = 0; i < n->n_ia; i++) {
    if (n->ia[i] == 0) return fail_shape(g, n, "a target dimension is 0", 0, -1);
    t.d[i] = n->ia[i];
  }
  int px, pt;
  int64_t cx = wh__numel_sym(x, &px), ct = wh__numel_sym(&t, &pt);
  if (pt > 1) return fail_shape(g, n, "target has more than one batch dimension", 0, -1);
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
  if (n->n_ia != x->ndim) return fail_shape(g, n, "permutation length differs from the rank", 0, -1);
  int seen = 0;
  for (int i = 0; i < x->ndim; i++) {
    if (n->ia[i] < 0 || n->ia[i] >= x->ndim || (seen >> n->ia[i] & 1))
      return fail_shape(g, n, "not a permutation of the axes", 0, -1);
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
  if (ax < 0 || ax >= x->ndim) return fail_shape(g, n, "axis out of range", 0, -1);
  if (x->d[ax] < 0) return fail_shape(g, n, "cannot slice the batch dimension", 0, -1);
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
  if (all_f32(g, n) != WH_OK || need_attrs(g, n, 3, 3) != WH_OK) return g->status;
  const wh__shape *dy = &IN(0)->shape;
  int64_t ax = n->ia[0];
  if (ax < 0 || ax >= dy->ndim || dy->d[ax] < 0 || n->ia[1] < 0 || n->ia[2] < n->ia[1] + dy->d[ax] ||
      n->ia[2] > (INT64_C(1) << 40))
    return fail_shape(g, n, "axis, offset and full size do not fit the gradient", 0, -1);
  o->dtype = WH_F32;
  o->shape = *dy;
  o->shape.d[ax] = n->ia[2];
  return WH_OK;
}

static wh_status sh_concat(wh_graph *g, const wh__node *n, wh__value *o) {
  const wh__shape *x = &IN(0)->shape;
  int ax = (int)n->ia[0];
  if (ax < 0 || ax >= x->ndim) return fail_shape(g, n, "axis out of range", 0, -1);
  int64_t total = 0;
  for (int i = 0; i < n->n_in; i++) {
    const wh__shape *s = &IN(i)->shape;
    if (IN(i)->dtype != IN(0)->dtype) return need_dtype(g, n, i, IN(0)->dtype);
    if (s->ndim != x->ndim) return fail_shape(g, n, "ranks differ", 0, i);
    for (int k = 0; k < x->ndim; k++)
      if (k != ax && s->d[k] != x->d[k]) return fail_shape(g, n, "non-concatenated dimensions differ", 0, i);
    if (s->d[ax] < 0) return fail_shape(g, n, "cannot concatenate along the batch dimension", i, -1);
    total += s->d[ax];
  }
  o->dtype = IN(0)->dtype;
  o->shape = *x;
  o->shape.d[ax] = total;
  return WH_OK;
}

static wh_status sh_embedding(wh_graph *g, const wh__node *n, wh__value *o) {
  if (need_dtype(g, n, 0, WH_F32) != WH_OK || need_dtype(g, n, 1, WH_I32) != WH_OK) return g->status;
  const wh__shape *t = &IN(0)->shape, *ix = &IN(1)->shape;
  if (t->ndim != 2) return fail_shape(g, n, "table must be [V, D]", 0, -1);
  if (ix->ndim + 1 > WH_MAX_DIMS) return fail_shape(g, n, "indices rank too large", 1, -1);
  o->dtype = WH_F32;
  o->shape = *ix;
  o->shape.d[o->shape.ndim++] = t->d[1];
  return WH_OK;
}

static wh_status sh_embedding_grad(wh_graph *g, const wh__node *n, wh__value *o) {
  if (need_dtype(g, n, 0, WH_I32) != WH_OK || need_dtype(g, n, 1, WH_F32) != WH_OK ||
      need_attrs(g, n, 1, 1) != WH_OK)
    return g->status;
  const wh__shape *ix = &IN(0)->shape, *dy = &IN(1)->shape;
  if (n->ia[0] < 1 || n->ia[0] > (INT64_C(1) << 40) || dy->ndim != ix->ndim + 1 || dy->d[dy->ndim - 1] < 1)
    return fail_shape(g, n, "gradient must be the indices' shape plus a fixed width", 0, 1);
  for (int i = 0; i < ix->ndim; i++)
    if (ix->d[i] != dy->d[i]) return fail_shape(g, n, "gradient must be the indices' shape plus a fixed width", 0, 1);
  o->dtype = WH_F32;
  o->shape.ndim = 2;
  o->shape.d[0] = n->ia[0];
  o->shape.d[1] = IN(1)->shape.d[IN(1)->shape.ndim - 1];
  return WH_OK;
}

static wh_status sh_cross_entropy(wh_graph *g, const wh__node *n, wh__value *o) {
  if (need_dtype(g, n, 0, WH_F32) != WH_OK || need_dtype(g, n, 1, WH_I32) != WH_OK) return g->status;
  const wh__shape *l = &IN(0)->shape, *y = &IN(1)->shape;
  if (l->ndim < 1 || y->ndim != l->ndim - 1) return fail_shape(g, n, "labels must have the logits' shape without its last axis", 0, 1);
  for (int i = 0; i < y->ndim; i++)
    if (y->d[i] != l->d[i]) return fail_shape(g, n, "labels must have the logits' shape without its last axis", 0, 1);
  o->dtype = WH_F32;
  o->shape.ndim = 0;
  return WH_OK;
}

static wh_status sh_cross_entropy(wh_graph *g, const wh__node *n, wh__value *o);
static wh_status sh_cross_entropy_grad(wh_graph *g, const wh__node *n, wh__value *o) {
  wh__value loss = {0};
  if (sh_cross_entropy(g, n, &loss) != WH_OK || need_dtype(g, n, 2, WH_F32) != WH_OK ||
      need_shape(g, n, 2, &loss.shape, "the loss gradient is a scalar") != WH_OK)
    return g->status;
  o->dtype = WH_F32;
  o->shape = IN(0)->shape;
  return WH_OK;
}

static wh_status sh_mse(wh_graph *g, const wh__node *n, wh__value *o) {
  if (all_f32(g, n) != WH_OK) return g->status;
  if (!wh__shape_eq(&IN(0)->shape, &IN(1)->shape)) return fail_shape(g, n, "prediction and target shapes differ", 0, 1);
  o->dtype = WH_F32;
  o->shape.ndim = 0;
  return WH_OK;
}

static wh_status sh_mse_grad(wh_graph *g, const wh__node *n, wh__value *o) {
  wh__value loss = {0};
  if (sh_mse(g, n, &loss) != WH_OK || need_dtype(g, n, 2, WH_F32) != WH_OK ||
      need_shape(g, n, 2, &loss.shape, "the loss gradient is a scalar") != WH_OK)
    return g->status;
  o->dtype = WH_F32;
  o->shape = IN(0)->shape;
  return WH_OK;
}

static wh_status sh_dropout(wh_graph *g, const wh__node *n, wh__value *o) {
  if (!(n->fa[0] >= 0 && n->fa[0] < 1))
    return wh__graph_fail(g, WH_ERR_INVALID_ARGUMENT, "%s: p must be in [0, 1), got %g", OPN, n->fa[0]);
  return sh_same(g, n, o);
}

static int64_t conv_out(int64_t in, int64_t k, int64_t s, int64_t p) { return (in + 2 * p - k) / s + 1; }

static wh_status sh_conv2d(wh_graph *g, const wh__node *n, wh__value *o) {
  if (all_f32(g, n) != WH_OK) return g->status;
  const wh__shape *x = &IN(0)->shape, *w = &IN(1)->shape;
  int64_t s = n->ia[0], p = n->ia[1];
  if (x->ndim != 4 || w->ndim != 4) return fail_shape(g, n, "x must be [N,C,H,W] and w [O,C,KH,KW]", 0, 1);
  if (x->d[1] != w->d[1]) return fail_shape(g, n, "channel counts differ", 0, 1);
  if (x->d[1] < 0 || x->d[2] < 0 || x->d[3] < 0) return fail_shape(g, n, "only N may be the batch dimension", 0, -1);
  if (s < 1 || p < 0)
    return wh__graph_fail(g, WH_ERR_INVALID_ARGUMENT, "%s: stride %lld must be >= 1 and padding %lld >= 0", OPN,
                          (long long)s, (long long)p);
  if (x->d[2] + 2 * p < w->d[2] || x->d[3] + 2 * p < w->d[3]) return fail_shape(g, n, "kernel larger than padded input", 0, 1);
  o->dtype = WH_F32;
  o->shape = (wh__shape){4, {x->d[0], w->d[0], conv_out(x->d[2], w->d[2], s, p), conv_out(x->d[3], w->d[3], s, p)}};
  return WH_OK;
}

/* The forward output shape of conv2d(x, w) or a pool over x (w NULL, kernel k), or 0 if invalid. */
static int conv_geometry(const wh__shape *x, const wh__shape *w, int64_t k, int64_t s, int64_t p, wh__shape *y) {
  if (x->ndim != 4 || x->d[1] < 1 || x->d[2] < 1 || x->d[3] < 1 || s < 1 || p < 0) return 0;
  int64_t kh = k, kw = k, oc = x->d[1];
  if (w) {
    if (w->ndim != 4 || w->d[1] != x->d[1] || w->d[0] < 1 || w->d[2] < 1 || w->d[3] < 1) return 0;
    kh = w->d[2], kw = w->d[3], oc = w->d[0];
  } else if (k < 1 || 2 * p > k) {
    return 0;
  }
  if (x->d[2] + 2 * p < kh || x->d[3] + 2 * p < kw) return 0;
  *y = (wh__shape){4, {x->d[0], oc, conv_out(x->d[2], kh, s, p), conv_out(x->d[3], kw, s, p)}};
  return 1;
}

/* conv2d_grad_input (dy, w) and conv2d_grad_weight (x, dy): ia = stride, padding, then the
 * shape of the tensor whose gradient this is. */
static wh_status sh_conv2d_grad(wh_graph *g, const wh__node *n, wh__value *o) {
  wh__shape t, y;
  if (all_f32(g, n) != WH_OK || need_attrs(g, n, 6, 6) != WH_OK || attr_shape(g, n, 2, 4, &t) != WH_OK) return g->status;
  int input = n->op == WH_OP_CONV2D_GRAD_INPUT;
  const wh__shape *x = input ? &t : &IN(0)->shape, *w = input ? &IN(1)->shape : &t;
  if (!conv_geometry(x, w, 0, n->ia[0], n->ia[1], &y)) return fail_shape(g, n, "not a valid convolution", 0, 1);
  if (need_shape(g, n, input ? 0 : 1, &y, "the convolution's output") != WH_OK) return g->status;
  o->dtype = WH_F32;
  o->shape = t;
  return WH_OK;
}

/* avg_pool2d_grad (dy): ia = kernel, stride, padding, then the input's shape */
static wh_status sh_avg_pool2d_grad(wh_graph *g, const wh__node *n, wh__value *o) {
  wh__shape x, y;
  if (all_f32(g, n) != WH_OK || need_attrs(g, n, 7, 7) != WH_OK || attr_shape(g, n, 3, 4, &x) != WH_OK) return g->status;
  if (!conv_geometry(&x, NULL, n->ia[0], n->ia[1], n->ia[2], &y)) return fail_shape(g, n, "not a valid pooling", 0, -1);
  if (need_shape(g, n, 0, &y, "the pooling's output") != WH_OK) return g->status;
  o->dtype = WH_F32;
  o->shape = x;
  return WH_OK;
}

static wh_status sh_pool2d(wh_graph *g, const wh__node *n, wh__value *o) {
  if (all_f32(g, n) != WH_OK) return g->status;
  const wh__shape *x = &IN(0)->shape;
  int64_t k = n->ia[0], s = n->ia[1], p = n->ia[2];
  if (x->ndim != 4) return fail_shape(g, n, "x must be [N,C,H,W]", 0, -1);
  if (x->d[1] < 0 || x->d[2] < 0 || x->d[3] < 0) return fail_shape(g, n, "only N may be the batch dimension", 0, -1);
  if (k < 1 || s < 1 || p < 0 || 2 * p > k)
    return wh__graph_fail(g, WH_ERR_INVALID_ARGUMENT, "%s: kernel %lld, stride %lld, padding %lld: need kernel, stride >= 1 and 0 <= padding <= kernel/2",
                          OPN, (long long)k, (long long)s, (long long)p);
  if (x->d[2] + 2 * p < k || x->d[3] + 2 * p < k) return fail_shape(g, n, "window larger than padded input", 0, -1);
  o->dtype = WH_F32;
  o->shape = (wh__shape){4, {x->d[0], x->d[1], conv_out(x->d[2], k, s, p), conv_out(x->d[3], k, s, p)}};
  return WH_OK;
}

static wh_status sh_max_pool2d_grad(wh_graph *g, const wh__node *n, wh__value *o) {
  wh__shape y;
  if (all_f32(g, n) != WH_OK || need_attrs(g, n, 3, 3) != WH_OK) return g->status;
  if (!conv_geometry(&IN(0)->shape, NULL, n->ia[0], n->ia[1], n->ia[2], &y))
    return fail_shape(g, n, "not a valid pooling", 0, -1);
  if (need_shape(g, n, 1, &y, "the pooling's output") != WH_OK) return g->status;
  o->dtype = WH_F32;
  o->shape = IN(0)->shape;
  return WH_OK;
}

static wh_status sh_layernorm(wh_graph *g, const wh__node *n, wh__value *o) {
  if (all_f32(g, n) != WH_OK) return g->status;
  const wh__shape *x = &IN(0)->shape;
  if (x->ndim < 1 || x->d[x->ndim - 1] < 0) return fail_shape(g, n, "needs a fixed last axis", 0, -1);
  for (int i = 1; i < 3; i++)
    if (IN(i)->shape.ndim != 1 || IN(i)->shape.d[0] != x->d[x->ndim - 1])
      return fail_shape(g, n, "gamma and beta must be 1-D with the size of the last axis", 0, i);
  if (!(n->fa[0] > 0)) return wh__graph_fail(g, WH_ERR_INVALID_ARGUMENT, "%s: eps must be > 0, got %g", OPN, n->fa[0]);
  o->dtype = WH_F32;
  o->shape = *x;
  return WH_OK;
}

static wh_status sh_attention(wh_graph *g, const wh__node *n, wh__value *o) {
  if (all_f32(g, n) != WH_OK) return g->status;
  const wh__shape *x = &IN(0)->shape;
  int64_t h = n->ia[0];
  if (x->ndim < 2 || x->d[x->ndim - 1] < 0 || x->d[x->ndim - 2] < 0)
    return fail_shape(g, n, "qkv must be [.., T, 3C] with fixed T and C", 0, -1);
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
  return need_shape(g, n, 2, &IN(0)->shape, "the gradient has the input's shape");
}

static wh_status sh_attention_grad(wh_graph *g, const wh__node *n, wh__value *o) {
  wh__value y = {0};
  if (need_attrs(g, n, 1, 1) != WH_OK || sh_attention(g, n, &y) != WH_OK ||
      need_shape(g, n, 1, &y.shape, "the attention output's shape") != WH_OK)
    return g->status;
  o->dtype = WH_F32;
  o->shape = IN(0)->shape;
  return WH_OK;
}

static wh_status sh_layernorm_grad_gamma(wh_graph *g, const wh__node *n, wh__value *o) {
  if (all_f32(g, n) != WH_OK) return g->status;
  const wh__shape *x = &IN(0)->shape;
  if (x->ndim < 1 || x->d[x->ndim - 1] < 1) return fail_shape(g, n, "needs a fixed last axis", 0, -1);
  if (need_shape(g, n, 1, x, "the gradient has the input's shape") != WH_OK) return g->status;
  o->dtype = WH_F32;
  o->shape = (wh__shape){1, {IN(0)->shape.d[IN(0)->shape.ndim - 1]}};
  return WH_OK;
}

static wh_status sh_sum_to(wh_graph *g, const wh__node *n, wh__value *o) {
  wh__shape t, b;
  if (all_f32(g, n) != WH_OK || attr_shape(g, n, 0, n->n_ia, &t) != WH_OK) return g->status;
  if (!wh__broadcast(&t, &IN(0)->shape, &b) || !wh__shape_eq(&b, &IN(0)->shape))
    return fail_shape(g, n, "target does not broadcast to the input", 0, -1);
  o->dtype = WH_F32;
  o->shape = t;
  return WH_OK;
}

static wh_status sh_broadcast_to(wh_graph *g, const wh__node *n, wh__value *o) {
  wh__shape t, b;
  if (all_f32(g, n) != WH_OK || need_attrs(g, n, 1, 1 + WH_MAX_DIMS) != WH_OK ||
      attr_shape(g, n, 1, n->n_ia - 1, &t) != WH_OK)
    return g->status;
  if (!wh__broadcast(&IN(0)->shape, &t, &b) || !wh__shape_eq(&b, &t))
    return fail_shape(g, n, "input does not broadcast to the target", 0, -1);
  o->dtype = WH_F32;
  o->shape = t;
  return WH_OK;
}

static wh_status sh_scalar_out(wh_graph *g, const wh__node *n, wh__value *o) {
  if (all_f32(g, n) != WH_OK) return g->status;
  o->dtype = WH_F32;
  o->shape.ndim = 0;
  return WH_OK;
}

static wh_status sh_update(wh_graph *g, const wh__node *n, wh__value *o) {
  (void)o;
  if (all_f32(g, n) != WH_OK) return g->status;
  int sgd = n->op == WH_OP_SGD_UPDATE;
  int want = sgd ? 2 + (n->ia[0] != 0) + (n->ia[1] != 0) : 4 + (n->ia[0] != 0);
  if (n->n_in != want || n->n_fa < (sgd ? 8 : 9))
    return wh__graph_fail(g, WH_ERR_INVALID_ARGUMENT, "%s: %d inputs and %d float attributes do not fit its flags", OPN,
                          n->n_in, n->n_fa);
  if (IN(0)->producer >= 0 || (IN(0)->role != WH_ROLE_PARAM))
    return wh__graph_fail(g, WH_ERR_INVALID_ARGUMENT, "%s: input 0 must be a parameter", OPN);
  for (int i = 2; i < n->n_in - (sgd ? (n->ia[1] != 0) : (n->ia[0] != 0)); i++)
    if (IN(i)->role != WH_ROLE_STATE)
      return wh__graph_fail(g, WH_ERR_INVALID_ARGUMENT, "%s: input %d must be optimizer state", OPN, i);
  for (int i = 1; i < n->n_in; i++) {
    const wh__shape *s = &IN(i)->shape;
    int is_clip = (i == n->n_in - 1) && n->ia[n->op == WH_OP_SGD_UPDATE ? 1 : 0];
    if (is_clip ? s->ndim != 0 : !wh__shape_eq(s, &IN(0)->shape)) return fail_shape(g, n, "state does not fit the parameter", 0, i);
  }
  return WH_OK;
}

/* ------------------------------------------------------------ gradients */
/* Builders used by gradient functions: they add nodes in the current (backward) phase. */

static wh_value mk(wh_graph *g, int op, int n_in, const int32_t *in, const int64_t *ia, int n_ia, const double *fa,
                   int n_fa) {
  return wh__node_add(g, op, n_in, in, ia, n_ia, fa, n_fa);
}
static wh_value mk2(wh_graph *g, int op, wh_value a, wh_value b) {
  int32_t in[2] = {a, b};
  return mk(g, op, 2, in, NULL, 0, NULL, 0);
}
static wh_value mk_scale(wh_graph *g, wh_value x, double s) {
  int32_t in[1] = {x};
  return mk(g, WH_OP_SCALE, 1, in, NULL, 0, &s, 1);
}
static wh_value mk_matmul(wh_graph *g, wh_value a, wh_value b, int ta, int tb) {
  int32_t in[2] = {a, b};
  int64_t ia[2] = {ta, tb};
  return mk(g, WH_OP_MATMUL, 2, in, ia, 2, NULL, 0);
}
static wh_value mk_reshape(wh_graph *g, wh_value x, const wh__shape *s) {
  int32_t in[1] = {x};
  return mk(g, WH_OP_RESHAPE, 1, in, s->d, s->ndim, NULL, 0);
}

/* Sum a gradient down to the shape of the value it flows into (undoing broadcasting). */
/* like is a value id, not a shape pointer: building nodes may move the value array. */
static wh_value reduce_to(wh_graph *g, wh_value dy, wh_value like) {
  if (dy == WH_NONE) return WH_NONE;
  wh__shape target = g->values[like].shape;
  if (wh__shape_eq(&g->values[dy].shape, &target)) return dy;
  int32_t in[1] = {dy};
  return mk(g, WH_OP_SUM_TO, 1, in, target.d, target.ndim, NULL, 0);
}

#define SHAPE_OF(v) (&g->values[(v)].shape)

static wh_value mk_transpose_last(wh_graph *g, wh_value x) {
  int nd = SHAPE_OF(x)->ndim;
  int64_t perm[WH_MAX_DIMS];
  for (int i = 0; i < nd; i++) perm[i] = i;
  perm[nd - 2] = nd - 1;
  perm[nd - 1] = nd - 2;
  int32_t in[1] = {x};
  return mk(g, WH_OP_PERMUTE, 1, in, perm, nd, NULL, 0);
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
    wh_value a2 = mk_reshape(g, opa, &af), y2 = mk_reshape(g, dy, &yf);
    dx[1] = tb ? mk_matmul(g, y2, a2, 1, 0) : mk_matmul(g, a2, y2, 1, 0);
  }
  return g->status;
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
  if (need[0]) dx[0] = reduce_to(g, mk2(g, WH_OP_MUL, dy, n->in[1]), n->in[0]);
  if (need[1]) dx[1] = reduce_to(g, mk2(g, WH_OP_MUL, dy, n->in[0]), n->in[1]);
  return g->status;
}

static wh_status gr_div(wh_graph *g, const wh__node *n, wh_value dy, const int *need, wh_value *dx) {
  wh_value b = n->in[1];
  if (need[0]) dx[0] = reduce_to(g, mk2(g, WH_OP_DIV, dy, b), n->in[0]);
  if (need[1]) {
    /* d(a/b)/db = -(a/b)/b = -y/b */
    wh_value t = mk2(g, WH_OP_DIV, mk2(g, WH_OP_MUL, dy, n->out), b);
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
    dx[1] = mk(g, WH_OP_SUM, 1, in, ia, 2, NULL, 0);
  }
  return g->status;
}

static wh_status gr_unary(wh_graph *g, const wh__node *n, wh_value dy, const int *need, wh_value *dx) {
  if (!need[0]) return g->status;
  /* relu, tanh, sigmoid and exp differentiate from their output; gelu and log from their input */
  int from_out = n->op == WH_OP_RELU || n->op == WH_OP_TANH || n->op == WH_OP_SIGMOID || n->op == WH_OP_EXP;
  int32_t in[2] = {from_out ? n->out : n->in[0], dy};
  int64_t ia[1] = {n->op};
  dx[0] = mk(g, WH_OP_UNARY_GRAD, 2, in, ia, 1, NULL, 0);
  return g->status;
}

static wh_status gr_softmax(wh_graph *g, const wh__node *n, wh_value dy, const int *need, wh_value *dx) {
  if (need[0]) dx[0] = mk2(g, n->op == WH_OP_SOFTMAX ? WH_OP_SOFTMAX_GRAD : WH_OP_LOG_SOFTMAX_GRAD, n->out, dy);
  return g->status;
}

static wh_status gr_reduce(wh_graph *g, const wh__node *n, wh_value dy, const int *need, wh_value *dx) {
  if (!need[0]) return g->status;
  wh__shape xs = *SHAPE_OF(n->in[0]);
  uint64_t mask = (uint64_t)n->ia[0];
  wh__shape kd = xs;
  for (int i = 0; i < xs.ndim; i++)
    if (mask >> i & 1) kd.d[i] = 1;
  wh_value d = n->ia[1] ? dy : mk_reshape(g, dy, &kd);
  int64_t ia[1 + WH_MAX_DIMS];
  ia[0] = n->op == WH_OP_MEAN;
  for (int i = 0; i < xs.ndim; i++) ia[1 + i] = xs.d[i];
  int32_t in[1] = {d};
  dx[0] = mk(g, WH_OP_BROADCAST_TO, 1, in, ia, 1 + xs.ndim, NULL, 0);
  return g->status;
}

static wh_status gr_reshape(wh_graph *g, const wh__node *n, wh_value dy, const int *need, wh_value *dx) {
  if (need[0]) {
    wh__shape t = *SHAPE_OF(n->in[0]);
    dx[0] = mk_reshape(g, dy, &t);
  }
  return g->status;
}

static wh_status gr_permute(wh_graph *g, const wh__node *n, wh_value dy, const int *need, wh_value *dx) {
  if (!need[0]) return g->status;
  int64_t inv[WH_MAX_DIMS];
  for (int i = 0; i < n->n_ia; i++) inv[n->ia[i]] = i;
  int32_t in[1] = {dy};
  dx[0] = mk(g, WH_OP_PERMUTE, 1, in, inv, n->n_ia, NULL, 0);
  return g->status;
}

static wh_status gr_slice(wh_graph *g, const wh__node *n, wh_value dy, const int *need, wh_value *dx) {
  if (!need[0]) return g->status;
  int64_t ia[3] = {n->ia[0], n->ia[1], SHAPE_OF(n->in[0])->d[n->ia[0]]};
  int32_t in[1] = {dy};
  dx[0] = mk(g, WH_OP_SLICE_GRAD, 1, in, ia, 3, NULL, 0);
  return g->status;
}

static wh_status gr_concat(wh_graph *g, const wh__node *n, wh_value dy, const int *need, wh_value *dx) {
  int64_t off = 0;
  for (int i = 0; i < n->n_in; i++) {
    int64_t len = SHAPE_OF(n->in[i])->d[n->ia[0]];
    if (need[i]) {
      int64_t ia[3] = {n->ia[0], off, off + len};
      int32_t in[1] = {dy};
      dx[i] = mk(g, WH_OP_SLICE, 1, in, ia, 3, NULL, 0);
    }
    off += len;
  }
  return g->status;
}

static wh_status gr_embedding(wh_graph *g, const wh__node *n, wh_value dy, const int *need, wh_value *dx) {
  if (need[0]) {
    int32_t in[2] = {n->in[1], dy};
    int64_t ia[1] = {SHAPE_OF(n->in[0])->d[0]};
    dx[0] = mk(g, WH_OP_EMBEDDING_GRAD, 2, in, ia, 1, NULL, 0);
  }
  return g->status;
}

static wh_status gr_cross_entropy(wh_graph *g, const wh__node *n, wh_value dy, const int *need, wh_value *dx) {
  if (need[0]) {
    int32_t in[3] = {n->in[0], n->in[1], dy};
    dx[0] = mk(g, WH_OP_CROSS_ENTROPY_GRAD, 3, in, NULL, 0, NULL, 0);
  }
  return g->status;
}

static wh_status gr_mse(wh_graph *g, const wh__node *n, wh_value dy, const int *need, wh_value *dx) {
  for (int i = 0; i < 2; i++)
    if (need[i]) {
      int32_t in[3] = {n->in[0], n->in[1], dy};
      int64_t ia[1] = {i == 0 ? 1 : -1};
      dx[i] = mk(g, WH_OP_MSE_GRAD, 3, in, ia, 1, NULL, 0);
    }
  return g->status;
}

static wh_status gr_dropout(wh_graph *g, const wh__node *n, wh_value dy, const int *need, wh_value *dx) {
  /* the mask is a function of (seed, step, index): the same node attrs give the same mask */
  if (need[0]) {
    int32_t in[1] = {dy};
    dx[0] = mk(g, WH_OP_DROPOUT, 1, in, n->ia, n->n_ia, n->fa, n->n_fa);
  }
  return g->status;
}

static wh_status gr_conv2d(wh_graph *g, const wh__node *n, wh_value dy, const int *need, wh_value *dx) {
  for (int i = 0; i < 2; i++) {
    if (!need[i]) continue;
    const wh__shape *s = SHAPE_OF(n->in[i]);
    int64_t ia[6] = {n->ia[0], n->ia[1], s->d[0], s->d[1], s->d[2], s->d[3]};
    int32_t in[2];
    if (i == 0) in[0] = dy, in[1] = n->in[1];
    else in[0] = n->in[0], in[1] = dy;
    dx[i] = mk(g, i == 0 ? WH_OP_CONV2D_GRAD_INPUT : WH_OP_CONV2D_GRAD_WEIGHT, 2, in, ia, 6, NULL, 0);
  }
  return g->status;
}

static wh_status gr_max_pool2d(wh_graph *g, const wh__node *n, wh_value dy, const int *need, wh_value *dx) {
  if (need[0]) {
    int32_t in[2] = {n->in[0], dy};
    dx[0] = mk(g, WH_OP_MAX_POOL2D_GRAD, 2, in, n->ia, 3, NULL, 0);
  }
  return g->status;
}

static wh_status gr_avg_pool2d(wh_graph *g, const wh__node *n, wh_value dy, const int *need, wh_value *dx) {
  if (need[0]) {
    const wh__shape *s = SHAPE_OF(n->in[0]);
    int64_t ia[7] = {n->ia[0], n->ia[1], n->ia[2], s->d[0], s->d[1], s->d[2], s->d[3]};
    int32_t in[1] = {dy};
    dx[0] = mk(g, WH_OP_AVG_POOL2D_GRAD, 1, in, ia, 7, NULL, 0);
  }
  return g->status;
}

static wh_status gr_layernorm(wh_graph *g, const wh__node *n, wh_value dy, const int *need, wh_value *dx) {
  if (need[0]) {
    int32_t in[3] = {n->in[0], n->in[1], dy};
    dx[0] = mk(g, WH_OP_LAYERNORM_GRAD_INPUT, 3, in, NULL, 0, n->fa, 1);
  }
  if (need[1]) {
    int32_t in[2] = {n->in[0], dy};
    dx[1] = mk(g, WH_OP_LAYERNORM_GRAD_GAMMA, 2, in, NULL, 0, n->fa, 1);
  }
  if (need[2]) {
    int nd = SHAPE_OF(dy)->ndim;
    int64_t ia[2] = {(int64_t)((1ull << (nd - 1)) - 1), 0};
    int32_t in[1] = {dy};
    dx[2] = mk(g, WH_OP_SUM, 1, in, ia, 2, NULL, 0);
  }
  return g->status;
}

static wh_status gr_attention(wh_graph *g, const wh__node *n, wh_value dy, const int *need, wh_value *dx) {
  if (need[0]) {
    int32_t in[2] = {n->in[0], dy};
    dx[0] = mk(g, WH_OP_ATTENTION_GRAD, 2, in, n->ia, 1, NULL, 0);
  }
  return g->status;
}

/* ------------------------------------------------------------ costs */

static double nbytes(const wh_graph *g, wh_value v, int64_t batch) {
  return (double)wh__numel(&g->values[v].shape, batch) * (double)wh__dtype_size(g->values[v].dtype);
}

static void io_bytes(const wh_graph *g, const wh__node *n, int64_t batch, wh__cost *c) {
  c->bytes_read = c->bytes_written = 0;
  for (int i = 0; i < n->n_in; i++) c->bytes_read += nbytes(g, n->in[i], batch);
  if (n->out >= 0) c->bytes_written = nbytes(g, n->out, batch);
}

/* flops per output element (or per input element for reductions and updates) */
static double flops_per_elem(int op) {
  switch (op) {
    case WH_OP_GELU: return 12;
    case WH_OP_TANH: case WH_OP_SIGMOID: case WH_OP_EXP: case WH_OP_LOG: return 8;
    case WH_OP_SOFTMAX: case WH_OP_LOG_SOFTMAX: case WH_OP_CROSS_ENTROPY: case WH_OP_CROSS_ENTROPY_GRAD: return 10;
    case WH_OP_UNARY_GRAD: return 12;
    case WH_OP_LAYERNORM: case WH_OP_LAYERNORM_GRAD_INPUT: return 8;
    case WH_OP_LAYERNORM_GRAD_GAMMA: return 4;
    case WH_OP_SOFTMAX_GRAD: case WH_OP_LOG_SOFTMAX_GRAD: return 6;
    case WH_OP_ADAMW_UPDATE: return 16;
    case WH_OP_SGD_UPDATE: return 6;
    case WH_OP_RESHAPE: case WH_OP_PERMUTE: case WH_OP_SLICE: case WH_OP_SLICE_GRAD: case WH_OP_CONCAT:
    case WH_OP_EMBEDDING: return 0;
    default: return 1;
  }
}

static void co_default(const wh_graph *g, const wh__node *n, int64_t batch, wh__cost *c) {
  io_bytes(g, n, batch, c);
  double elems = n->out >= 0 ? (double)wh__numel(&g->values[n->out].shape, batch) : 0;
  for (int i = 0; i < n->n_in; i++) {
    double e = (double)wh__numel(&g->values[n->in[i]].shape, batch);
    if (e > elems) elems = e;
  }
  c->flops = flops_per_elem(n->op) * elems;
}

static void co_reshape(const wh_graph *g, const wh__node *n, int64_t batch, wh__cost *c) {
  (void)g, (void)n, (void)batch;
  *c = (wh__cost){0, 0, 0}; /* a view: no data moves */
}

static void co_matmul(const wh_graph *g, const wh__node *n, int64_t batch, wh__cost *c) {
  io_bytes(g, n, batch, c);
  const wh__shape *a = &g->values[n->in[0]].shape;
  int64_t k = wh__dim(n->ia[0] ? a->d[a->ndim - 2] : a->d[a->ndim - 1], batch);
  c->flops = 2.0 * (double)wh__numel(&g->values[n->out].shape, batch) * (double)k;
}

static void co_conv(const wh_graph *g, const wh__node *n, int64_t batch, wh__cost *c) {
  io_bytes(g, n, batch, c);
  /* every variant does the forward's multiply-adds: N*O*OH*OW*C*KH*KW */
  const wh__shape *x, *w, *y;
  wh__shape xs, ws;
  if (n->op == WH_OP_CONV2D) {
    x = &g->values[n->in[0]].shape, w = &g->values[n->in[1]].shape, y = &g->values[n->out].shape;
  } else if (n->op == WH_OP_CONV2D_GRAD_INPUT) {
    y = &g->values[n->in[0]].shape, w = &g->values[n->in[1]].shape;
    xs = g->values[n->out].shape, x = &xs;
  } else {
    x = &g->values[n->in[0]].shape, y = &g->values[n->in[1]].shape;
    ws = g->values[n->out].shape, w = &ws;
  }
  (void)x;
  c->flops = 2.0 * (double)wh__numel(y, batch) * (double)(w->d[1] * w->d[2] * w->d[3]);
}

static void co_attention(const wh_graph *g, const wh__node *n, int64_t batch, wh__cost *c) {
  io_bytes(g, n, batch, c);
  const wh__shape *x = &g->values[n->in[0]].shape;
  double t = (double)wh__dim(x->d[x->ndim - 2], batch), c3 = (double)x->d[x->ndim - 1];
  double seqs = (double)wh__numel(x, batch) / (t * c3);
  /* per sequence: QK^T and PV are 2*T*T*C each; backward recomputes P and does 4 more */
  double fwd = 4.0 * t * t * (c3 / 3);
  c->flops = seqs * (n->op == WH_OP_ATTENTION ? fwd : 2.5 * fwd);
}

/* The partitioner's ops are made only inside a rank's program, never in a graph. */
static wh_status sh_internal(wh_graph *g, const wh__node *n, wh__value *o) {
  (void)o;
  return wh__graph_fail(g, WH_ERR_INVALID_ARGUMENT, "%s: made only by the operator-sharding partitioner, not in a graph",
                        wh__ops[n->op].name);
}

/* ------------------------------------------------------------ the table */

#define ROW(nm, mi, ma, out, sh, gr, co) {nm, mi, ma, out, gr != NULL, sh, gr, co, 0, NULL}
#define ROWI(nm, mi, ma, out, sh, gr, co, inp) {nm, mi, ma, out, gr != NULL, sh, gr, co, inp, NULL}
/* with a sharding rule (shard.c) */
#define ROWS(nm, mi, ma, out, sh, gr, co, inp, sr) {nm, mi, ma, out, gr != NULL, sh, gr, co, inp, wh__sr_##sr}
/* the partitioner's collectives */
#define ROWT(nm, mi, ma, inp) {nm, mi, ma, 1, 0, sh_internal, NULL, co_default, inp, NULL}
#define NOGRAD NULL

const wh__op_def wh__ops[WH_OP_COUNT] = {
    [WH_OP_MATMUL] = ROWS("matmul", 2, 2, 1, sh_matmul, gr_matmul, co_matmul, 0, matmul),
    [WH_OP_ADD] = ROWS("add", 2, 2, 1, sh_binary, gr_add, co_default, 3, binary),
    [WH_OP_SUB] = ROWS("sub", 2, 2, 1, sh_binary, gr_sub, co_default, 3, binary),
    [WH_OP_MUL] = ROWS("mul", 2, 2, 1, sh_binary, gr_mul, co_default, 3, binary),
    [WH_OP_DIV] = ROWS("div", 2, 2, 1, sh_binary, gr_div, co_default, 3, binary),
    [WH_OP_SCALE] = ROWS("scale", 1, 1, 1, sh_same, gr_scale, co_default, 1, scale),
    [WH_OP_BIAS_ADD] = ROWS("bias_add", 2, 2, 1, sh_bias_add, gr_bias_add, co_default, 1, bias_add),
    [WH_OP_RELU] = ROWS("relu", 1, 1, 1, sh_same, gr_unary, co_default, 1, unary),
    [WH_OP_GELU] = ROWS("gelu", 1, 1, 1, sh_same, gr_unary, co_default, 1, unary),
    [WH_OP_TANH] = ROWS("tanh", 1, 1, 1, sh_same, gr_unary, co_default, 1, unary),
    [WH_OP_SIGMOID] = ROWS("sigmoid", 1, 1, 1, sh_same, gr_unary, co_default, 1, unary),
    [WH_OP_EXP] = ROWS("exp", 1, 1, 1, sh_same, gr_unary, co_default, 1, unary),
    [WH_OP_LOG] = ROWS("log", 1, 1, 1, sh_same, gr_unary, co_default, 1, unary),
    [WH_OP_SOFTMAX] = ROWS("softmax", 1, 1, 1, sh_lastaxis, gr_softmax, co_default, 1, lastaxis),
    [WH_OP_LOG_SOFTMAX] = ROWS("log_softmax", 1, 1, 1, sh_lastaxis, gr_softmax, co_default, 1, lastaxis),
    [WH_OP_SUM] = ROWS("sum", 1, 1, 1, sh_reduce, gr_reduce, co_default, 0, reduce),
    [WH_OP_MEAN] = ROWS("mean", 1, 1, 1, sh_reduce, gr_reduce, co_default, 0, reduce),
    [WH_OP_RESHAPE] = ROWS("reshape", 1, 1, 1, sh_reshape, gr_reshape, co_reshape, 0, reshape),
    [WH_OP_PERMUTE] = ROWS("permute", 1, 1, 1, sh_permute, gr_permute, co_default, 0, permute),
    [WH_OP_SLICE] = ROWS("slice", 1, 1, 1, sh_slice, gr_slice, co_default, 0, slice),
    [WH_OP_CONCAT] = ROWS("concat", 1, -1, 1, sh_concat, gr_concat, co_default, 0, slice),
    [WH_OP_EMBEDDING] = ROWS("embedding", 2, 2, 1, sh_embedding, gr_embedding, co_default, 0, embedding),
    [WH_OP_CROSS_ENTROPY] = ROWS("cross_entropy", 2, 2, 1, sh_cross_entropy, gr_cross_entropy, co_default, 0, cross_entropy),
    [WH_OP_MSE] = ROW("mse", 2, 2, 1, sh_mse, gr_mse, co_default),
    [WH_OP_DROPOUT] = ROWI("dropout", 1, 1, 1, sh_dropout, gr_dropout, co_default, 1),
    [WH_OP_CONV2D] = ROW("conv2d", 2, 2, 1, sh_conv2d, gr_conv2d, co_conv),
    [WH_OP_MAX_POOL2D] = ROW("max_pool2d", 1, 1, 1, sh_pool2d, gr_max_pool2d, co_default),
    [WH_OP_AVG_POOL2D] = ROW("avg_pool2d", 1, 1, 1, sh_pool2d, gr_avg_pool2d, co_default),
    [WH_OP_LAYERNORM] = ROWS("layernorm", 3, 3, 1, sh_layernorm, gr_layernorm, co_default, 1, lastaxis),
    [WH_OP_ATTENTION] = ROWS("attention", 1, 1, 1, sh_attention, gr_attention, co_attention, 0, attention),
    [WH_OP_UNARY_GRAD] = ROWS("unary_grad", 2, 2, 1, sh_unary_grad, NOGRAD, co_default, 3, unary),
    [WH_OP_SOFTMAX_GRAD] = ROWS("softmax_grad", 2, 2, 1, sh_pair, NOGRAD, co_default, 3, lastaxis),
    [WH_OP_LOG_SOFTMAX_GRAD] = ROWS("log_softmax_grad", 2, 2, 1, sh_pair, NOGRAD, co_default, 3, lastaxis),
    [WH_OP_SUM_TO] = ROWS("sum_to", 1, 1, 1, sh_sum_to, NOGRAD, co_default, 0, sum_to),
    [WH_OP_BROADCAST_TO] = ROWS("broadcast_to", 1, 1, 1, sh_broadcast_to, NOGRAD, co_default, 0, broadcast_to),
    [WH_OP_SLICE_GRAD] = ROWS("slice_grad", 1, 1, 1, sh_slice_grad, NOGRAD, co_default, 0, slice),
    [WH_OP_EMBEDDING_GRAD] = ROWS("embedding_grad", 2, 2, 1, sh_embedding_grad, NOGRAD, co_default, 0, embedding_grad),
    [WH_OP_CROSS_ENTROPY_GRAD] = ROWS("cross_entropy_grad", 3, 3, 1, sh_cross_entropy_grad, NOGRAD, co_default, 1, cross_entropy),
    [WH_OP_MSE_GRAD] = ROWI("mse_grad", 3, 3, 1, sh_mse_grad, NOGRAD, co_default, 3),
    [WH_OP_CONV2D_GRAD_INPUT] = ROW("conv2d_grad_input", 2, 2, 1, sh_conv2d_grad, NOGRAD, co_conv),
    [WH_OP_CONV2D_GRAD_WEIGHT] = ROW("conv2d_grad_weight", 2, 2, 1, sh_conv2d_grad, NOGRAD, co_conv),
    [WH_OP_MAX_POOL2D_GRAD] = ROW("max_pool2d_grad", 2, 2, 1, sh_max_pool2d_grad, NOGRAD, co_default),
    [WH_OP_AVG_POOL2D_GRAD] = ROW("avg_pool2d_grad", 1, 1, 1, sh_avg_pool2d_grad, NOGRAD, co_default),
    [WH_OP_LAYERNORM_GRAD_INPUT] = ROWS("layernorm_grad_input", 3, 3, 1, sh_layernorm_grad_input, NOGRAD, co_default, 5, lastaxis),
    [WH_OP_LAYERNORM_GRAD_GAMMA] = ROW("layernorm_grad_gamma", 2, 2, 1, sh_layernorm_grad_gamma, NOGRAD, co_default),
    [WH_OP_ATTENTION_GRAD] = ROWS("attention_grad", 2, 2, 1, sh_attention_grad, NOGRAD, co_attention, 0, attention),
    [WH_OP_GLOBAL_NORM_CLIP] = ROW("global_norm_clip", 1, -1, 1, sh_scalar_out, NOGRAD, co_default),
    [WH_OP_SGD_UPDATE] = ROWS("sgd_update", 2, 4, 0, sh_update, NOGRAD, co_default, 0, update),
    [WH_OP_ADAMW_UPDATE] = ROWS("adamw_update", 4, 5, 0, sh_update, NOGRAD, co_default, 0, update),
    [WH_OP_TP_ALLREDUCE] = ROWT("tp_allreduce", 1, 1, 1),
    [WH_OP_TP_ALLGATHER] = ROWT("tp_allgather", 1, 1, 0),
    [WH_OP_TP_SLICE] = ROWT("tp_slice", 1, 1, 0),
    [WH_OP_TP_NORM_CLIP] = ROWT("tp_norm_clip", 1, -1, 0),
    [WH_OP_TP_EMBEDDING] = ROWT("tp_embedding", 2, 2, 0),
    [WH_OP_TP_CROSS_ENTROPY] = ROWT("tp_cross_entropy", 2, 2, 0),
    [WH_OP_TP_CROSS_ENTROPY_GRAD] = ROWT("tp_cross_entropy_grad", 3, 3, 1),
};

int wh__op_find(const char *name) {
  if (!name) return -1;
  for (int i = 0; i < WH_OP_COUNT; i++)
    if (strcmp(wh__ops[i].name, name) == 0) return i;
  return -1;
}

double wh__lr_at(const double *f, int64_t step) {
  double lr = f[0], warm = f[1], total = f[2], lo = f[3];
  if ((int)f[4] == WH_LR_CONSTANT) return lr;
  double t = (double)step;
  if (warm > 0 && t <= warm) return lr * t / warm;
  double span = total - warm;
  double prog = span > 0 ? (t - warm) / span : 1.0;
  if (prog < 0) prog = 0;
  if (prog > 1) prog = 1;
  return lo + 0.5 * (lr - lo) * (1.0 + cos(M_PI * prog));
}
