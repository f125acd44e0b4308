/* conv.c - conv2d, max and average 2-D pooling, and their gradients: shapes (the geometry every
 * variant checks), gradients and costs. None has a sharding rule: they run replicated. */
#include "family.h"

#define WH__FAMILY conv

/* ------------------------------------------------------------ shapes */

static int64_t conv_out(int64_t in, int64_t k, int64_t s, int64_t p) { return (in + 2 * p - k) / s + 1; }

static wh_status sh_conv2d(wh_graph *g, const wh__node *n, wh__value *o) {
  if (wh__need_f32(g, n) != WH_OK) return g->status;
  const wh__shape *x = &IN(0)->shape, *w = &IN(1)->shape;
  int64_t s = n->ia[0], p = n->ia[1];
  if (x->ndim != 4 || w->ndim != 4) return wh__fail_shape(g, n, "x must be [N,C,H,W] and w [O,C,KH,KW]", 0, 1);
  if (x->d[1] != w->d[1]) return wh__fail_shape(g, n, "channel counts differ", 0, 1);
  if (x->d[1] < 0 || x->d[2] < 0 || x->d[3] < 0) return wh__fail_shape(g, n, "only N may be the batch dimension", 0, -1);
  if (s < 1 || p < 0)
    return wh__graph_fail(g, WH_ERR_INVALID_ARGUMENT, "%s: stride %lld must be >= 1 and padding %lld >= 0", OPN,
                          (long long)s, (long long)p);
  if (x->d[2] + 2 * p < w->d[2] || x->d[3] + 2 * p < w->d[3]) return wh__fail_shape(g, n, "kernel larger than padded input", 0, 1);
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
  if (wh__need_f32(g, n) != WH_OK || wh__need_attrs(g, n, 6, 6) != WH_OK || wh__attr_shape(g, n, 2, 4, &t) != WH_OK) return g->status;
  int input = n->op == WH_OP_CONV2D_GRAD_INPUT;
  const wh__shape *x = input ? &t : &IN(0)->shape, *w = input ? &IN(1)->shape : &t;
  if (!conv_geometry(x, w, 0, n->ia[0], n->ia[1], &y)) return wh__fail_shape(g, n, "not a valid convolution", 0, 1);
  if (wh__need_shape(g, n, input ? 0 : 1, &y, "the convolution's output") != WH_OK) return g->status;
  o->dtype = WH_F32;
  o->shape = t;
  return WH_OK;
}

/* avg_pool2d_grad (dy): ia = kernel, stride, padding, then the input's shape */
static wh_status sh_avg_pool2d_grad(wh_graph *g, const wh__node *n, wh__value *o) {
  wh__shape x, y;
  if (wh__need_f32(g, n) != WH_OK || wh__need_attrs(g, n, 7, 7) != WH_OK || wh__attr_shape(g, n, 3, 4, &x) != WH_OK) return g->status;
  if (!conv_geometry(&x, NULL, n->ia[0], n->ia[1], n->ia[2], &y)) return wh__fail_shape(g, n, "not a valid pooling", 0, -1);
  if (wh__need_shape(g, n, 0, &y, "the pooling's output") != WH_OK) return g->status;
  o->dtype = WH_F32;
  o->shape = x;
  return WH_OK;
}

static wh_status sh_pool2d(wh_graph *g, const wh__node *n, wh__value *o) {
  if (wh__need_f32(g, n) != WH_OK) return g->status;
  const wh__shape *x = &IN(0)->shape;
  int64_t k = n->ia[0], s = n->ia[1], p = n->ia[2];
  if (x->ndim != 4) return wh__fail_shape(g, n, "x must be [N,C,H,W]", 0, -1);
  if (x->d[1] < 0 || x->d[2] < 0 || x->d[3] < 0) return wh__fail_shape(g, n, "only N may be the batch dimension", 0, -1);
  if (k < 1 || s < 1 || p < 0 || 2 * p > k)
    return wh__graph_fail(g, WH_ERR_INVALID_ARGUMENT, "%s: kernel %lld, stride %lld, padding %lld: need kernel, stride >= 1 and 0 <= padding <= kernel/2",
                          OPN, (long long)k, (long long)s, (long long)p);
  if (x->d[2] + 2 * p < k || x->d[3] + 2 * p < k) return wh__fail_shape(g, n, "window larger than padded input", 0, -1);
  o->dtype = WH_F32;
  o->shape = (wh__shape){4, {x->d[0], x->d[1], conv_out(x->d[2], k, s, p), conv_out(x->d[3], k, s, p)}};
  return WH_OK;
}

static wh_status sh_max_pool2d_grad(wh_graph *g, const wh__node *n, wh__value *o) {
  wh__shape y;
  if (wh__need_f32(g, n) != WH_OK || wh__need_attrs(g, n, 3, 3) != WH_OK) return g->status;
  if (!conv_geometry(&IN(0)->shape, NULL, n->ia[0], n->ia[1], n->ia[2], &y))
    return wh__fail_shape(g, n, "not a valid pooling", 0, -1);
  if (wh__need_shape(g, n, 1, &y, "the pooling's output") != WH_OK) return g->status;
  o->dtype = WH_F32;
  o->shape = IN(0)->shape;
  return WH_OK;
}

/* ------------------------------------------------------------ gradients */

static wh_status gr_conv2d(wh_graph *g, const wh__node *n, wh_value dy, const int *need, wh_value *dx) {
  for (int i = 0; i < 2; i++) {
    if (!need[i]) continue;
    const wh__shape *s = SHAPE_OF(n->in[i]);
    int64_t ia[6] = {n->ia[0], n->ia[1], s->d[0], s->d[1], s->d[2], s->d[3]};
    int32_t in[2];
    if (i == 0) in[0] = dy, in[1] = n->in[1];
    else in[0] = n->in[0], in[1] = dy;
    dx[i] = wh__mk_node(g, i == 0 ? WH_OP_CONV2D_GRAD_INPUT : WH_OP_CONV2D_GRAD_WEIGHT, 2, in, ia, 6, NULL, 0);
  }
  return g->status;
}

static wh_status gr_max_pool2d(wh_graph *g, const wh__node *n, wh_value dy, const int *need, wh_value *dx) {
  if (need[0]) {
    int32_t in[2] = {n->in[0], dy};
    dx[0] = wh__mk_node(g, WH_OP_MAX_POOL2D_GRAD, 2, in, n->ia, 3, NULL, 0);
  }
  return g->status;
}

static wh_status gr_avg_pool2d(wh_graph *g, const wh__node *n, wh_value dy, const int *need, wh_value *dx) {
  if (need[0]) {
    const wh__shape *s = SHAPE_OF(n->in[0]);
    int64_t ia[7] = {n->ia[0], n->ia[1], n->ia[2], s->d[0], s->d[1], s->d[2], s->d[3]};
    int32_t in[1] = {dy};
    dx[0] = wh__mk_node(g, WH_OP_AVG_POOL2D_GRAD, 1, in, ia, 7, NULL, 0);
  }
  return g->status;
}

/* ------------------------------------------------------------ costs */

static void co_conv(const wh_graph *g, const wh__node *n, int64_t batch, wh__cost *c) {
  wh__io_bytes(g, n, batch, c);
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

/* ------------------------------------------------------------ rows */

WH__ROW(conv2d, .min_in = 2, .max_in = 2, .has_out = 1, .shape = sh_conv2d, .grad = gr_conv2d, .cost = co_conv);
WH__ROW(max_pool2d, .min_in = 1, .max_in = 1, .has_out = 1, .shape = sh_pool2d, .grad = gr_max_pool2d,
        .cost = wh__co_elems, .flops = 1);
WH__ROW(avg_pool2d, .min_in = 1, .max_in = 1, .has_out = 1, .shape = sh_pool2d, .grad = gr_avg_pool2d,
        .cost = wh__co_elems, .flops = 1);
WH__ROW(conv2d_grad_input, .min_in = 2, .max_in = 2, .has_out = 1, .shape = sh_conv2d_grad, .cost = co_conv);
WH__ROW(conv2d_grad_weight, .min_in = 2, .max_in = 2, .has_out = 1, .shape = sh_conv2d_grad, .cost = co_conv);
WH__ROW(max_pool2d_grad, .min_in = 2, .max_in = 2, .has_out = 1, .shape = sh_max_pool2d_grad, .cost = wh__co_elems,
        .flops = 1);
WH__ROW(avg_pool2d_grad, .min_in = 1, .max_in = 1, .has_out = 1, .shape = sh_avg_pool2d_grad, .cost = wh__co_elems,
        .flops = 1);
