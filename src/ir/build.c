/* build.c - the public op builders: argument checks that need the caller's view (axes,
 * lists), then one registry node. Shape and dtype checks live in the registry's shape functions. */
#include <string.h>

#include "ir.h"

static wh_value node1(wh_graph *g, int op, wh_value x, const int64_t *ia, int n_ia, const double *fa, int n_fa) {
  int32_t in[1] = {x};
  return wh__node_add(g, op, 1, in, ia, n_ia, fa, n_fa);
}

static wh_value node2(wh_graph *g, int op, wh_value a, wh_value b, const int64_t *ia, int n_ia) {
  int32_t in[2] = {a, b};
  return wh__node_add(g, op, 2, in, ia, n_ia, NULL, 0);
}

/* Validate x and return its rank, or -1 with the graph failed. */
static int rank_of(wh_graph *g, wh_value x, const char *op) {
  if (!g || x == WH_NONE || wh__graph_check(g) != WH_OK) return -1;
  if (!wh__valid_value(g, x)) {
    wh__graph_fail(g, WH_ERR_INVALID_ARGUMENT, "%s: input 0 is not a value of this graph (%d)", op, (int)x);
    return -1;
  }
  return g->values[x].shape.ndim;
}

static int fix_axis(wh_graph *g, const char *op, int axis, int nd) {
  int a = axis < 0 ? axis + nd : axis;
  if (a < 0 || a >= nd) {
    wh__graph_fail(g, WH_ERR_INVALID_ARGUMENT, "%s: axis %d out of range for rank %d", op, axis, nd);
    return -1;
  }
  return a;
}

wh_value wh_matmul(wh_graph *g, wh_value a, wh_value b, int trans_a, int trans_b) {
  int64_t ia[2] = {trans_a != 0, trans_b != 0};
  return node2(g, WH_OP_MATMUL, a, b, ia, 2);
}
wh_value wh_add(wh_graph *g, wh_value a, wh_value b) { return node2(g, WH_OP_ADD, a, b, NULL, 0); }
wh_value wh_sub(wh_graph *g, wh_value a, wh_value b) { return node2(g, WH_OP_SUB, a, b, NULL, 0); }
wh_value wh_mul(wh_graph *g, wh_value a, wh_value b) { return node2(g, WH_OP_MUL, a, b, NULL, 0); }
wh_value wh_div(wh_graph *g, wh_value a, wh_value b) { return node2(g, WH_OP_DIV, a, b, NULL, 0); }

wh_value wh_scale(wh_graph *g, wh_value x, float s) {
  double fa[1] = {s};
  return node1(g, WH_OP_SCALE, x, NULL, 0, fa, 1);
}

wh_value wh_bias_add(wh_graph *g, wh_value x, wh_value b, int axis) {
  int nd = rank_of(g, x, "bias_add");
  if (nd < 0) return WH_NONE;
  int a = fix_axis(g, "bias_add", axis, nd);
  if (a < 0) return WH_NONE;
  int64_t ia[1] = {a};
  return node2(g, WH_OP_BIAS_ADD, x, b, ia, 1);
}

wh_value wh_relu(wh_graph *g, wh_value x) { return node1(g, WH_OP_RELU, x, NULL, 0, NULL, 0); }
wh_value wh_gelu(wh_graph *g, wh_value x) { return node1(g, WH_OP_GELU, x, NULL, 0, NULL, 0); }
wh_value wh_tanh(wh_graph *g, wh_value x) { return node1(g, WH_OP_TANH, x, NULL, 0, NULL, 0); }
wh_value wh_sigmoid(wh_graph *g, wh_value x) { return node1(g, WH_OP_SIGMOID, x, NULL, 0, NULL, 0); }
wh_value wh_exp(wh_graph *g, wh_value x) { return node1(g, WH_OP_EXP, x, NULL, 0, NULL, 0); }
wh_value wh_log(wh_graph *g, wh_value x) { return node1(g, WH_OP_LOG, x, NULL, 0, NULL, 0); }
wh_value wh_softmax(wh_graph *g, wh_value x) { return node1(g, WH_OP_SOFTMAX, x, NULL, 0, NULL, 0); }
wh_value wh_log_softmax(wh_graph *g, wh_value x) { return node1(g, WH_OP_LOG_SOFTMAX, x, NULL, 0, NULL, 0); }

static wh_value reduce(wh_graph *g, int op, const char *name, wh_value x, int naxes, const int *axes, int keepdims) {
  int nd = rank_of(g, x, name);
  if (nd < 0) return WH_NONE;
  uint64_t mask = 0;
  if (naxes == 0) {
    mask = nd ? (1ull << nd) - 1 : 0;
  } else {
    if (naxes < 0 || naxes > nd || !axes) {
      wh__graph_fail(g, WH_ERR_INVALID_ARGUMENT, "%s: %d axes for rank %d", name, naxes, nd);
      return WH_NONE;
    }
    for (int i = 0; i < naxes; i++) {
      int a = fix_axis(g, name, axes[i], nd);
      if (a < 0) return WH_NONE;
      if (mask >> a & 1) {
        wh__graph_fail(g, WH_ERR_INVALID_ARGUMENT, "%s: axis %d listed twice", name, axes[i]);
        return WH_NONE;
      }
      mask |= 1ull << a;
    }
  }
  int64_t ia[2] = {(int64_t)mask, keepdims != 0};
  return node1(g, op, x, ia, 2, NULL, 0);
}

wh_value wh_sum(wh_graph *g, wh_value x, int naxes, const int *axes, int keepdims) {
  return reduce(g, WH_OP_SUM, "sum", x, naxes, axes, keepdims);
}
wh_value wh_mean(wh_graph *g, wh_value x, int naxes, const int *axes, int keepdims) {
  return reduce(g, WH_OP_MEAN, "mean", x, naxes, axes, keepdims);
}

wh_value wh_reshape(wh_graph *g, wh_value x, int ndim, const int64_t *dims) {
  if (rank_of(g, x, "reshape") < 0) return WH_NONE;
  if (ndim < 0 || ndim > WH_MAX_DIMS || (ndim && !dims)) {
    wh__graph_fail(g, WH_ERR_INVALID_ARGUMENT, "reshape: ndim %d out of range [0, %d]", ndim, WH_MAX_DIMS);
    return WH_NONE;
  }
  return node1(g, WH_OP_RESHAPE, x, dims, ndim, NULL, 0);
}

wh_value wh_permute(wh_graph *g, wh_value x, const int *perm) {
  int nd = rank_of(g, x, "permute");
  if (nd < 0) return WH_NONE;
  if (!perm) {
    wh__graph_fail(g, WH_ERR_INVALID_ARGUMENT, "permute: perm is NULL");
    return WH_NONE;
  }
  int64_t ia[WH_MAX_DIMS];
  for (int i = 0; i < nd; i++) ia[i] = perm[i];
  return node1(g, WH_OP_PERMUTE, x, ia, nd, NULL, 0);
}

wh_value wh_transpose(wh_graph *g, wh_value x, int axis0, int axis1) {
  int nd = rank_of(g, x, "transpose");
  if (nd < 0) return WH_NONE;
  int a = fix_axis(g, "transpose", axis0, nd), b = a < 0 ? -1 : fix_axis(g, "transpose", axis1, nd);
  if (b < 0) return WH_NONE;
  int perm[WH_MAX_DIMS];
  for (int i = 0; i < nd; i++) perm[i] = i;
  perm[a] = b;
  perm[b] = a;
  return wh_permute(g, x, perm);
}

wh_value wh_slice(wh_graph *g, wh_value x, int axis, int64_t start, int64_t end) {
  int nd = rank_of(g, x, "slice");
  if (nd < 0) return WH_NONE;
  int a = fix_axis(g, "slice", axis, nd);
  if (a < 0) return WH_NONE;
  int64_t ia[3] = {a, start, end};
  return node1(g, WH_OP_SLICE, x, ia, 3, NULL, 0);
}

wh_value wh_concat(wh_graph *g, int n, const wh_value *xs, int axis) {
  if (!g) return WH_NONE;
  if (n < 1 || !xs) {
    if (g->status == WH_OK) wh__graph_fail(g, WH_ERR_INVALID_ARGUMENT, "concat: needs at least one input");
    return WH_NONE;
  }
  int nd = rank_of(g, xs[0], "concat");
  if (nd < 0) return WH_NONE;
  int a = fix_axis(g, "concat", axis, nd);
  if (a < 0) return WH_NONE;
  int64_t ia[1] = {a};
  return wh__node_add(g, WH_OP_CONCAT, n, xs, ia, 1, NULL, 0);
}

wh_value wh_embedding(wh_graph *g, wh_value table, wh_value indices) {
  return node2(g, WH_OP_EMBEDDING, table, indices, NULL, 0);
}
wh_value wh_cross_entropy(wh_graph *g, wh_value logits, wh_value labels) {
  return node2(g, WH_OP_CROSS_ENTROPY, logits, labels, NULL, 0);
}
wh_value wh_mse(wh_graph *g, wh_value pred, wh_value target) { return node2(g, WH_OP_MSE, pred, target, NULL, 0); }

wh_value wh_dropout(wh_graph *g, wh_value x, float p, uint64_t seed) {
  int64_t ia[1];
  memcpy(&ia[0], &seed, sizeof seed);
  double fa[1] = {p};
  return node1(g, WH_OP_DROPOUT, x, ia, 1, fa, 1);
}

wh_value wh_conv2d(wh_graph *g, wh_value x, wh_value w, int stride, int padding) {
  int64_t ia[2] = {stride, padding};
  return node2(g, WH_OP_CONV2D, x, w, ia, 2);
}

wh_value wh_max_pool2d(wh_graph *g, wh_value x, int kernel, int stride, int padding) {
  int64_t ia[3] = {kernel, stride, padding};
  return node1(g, WH_OP_MAX_POOL2D, x, ia, 3, NULL, 0);
}

wh_value wh_avg_pool2d(wh_graph *g, wh_value x, int kernel, int stride, int padding) {
  int64_t ia[3] = {kernel, stride, padding};
  return node1(g, WH_OP_AVG_POOL2D, x, ia, 3, NULL, 0);
}

wh_value wh_layernorm(wh_graph *g, wh_value x, wh_value gamma, wh_value beta, float eps) {
  int32_t in[3] = {x, gamma, beta};
  double fa[1] = {eps};
  return wh__node_add(g, WH_OP_LAYERNORM, 3, in, NULL, 0, fa, 1);
}

wh_value wh_attention(wh_graph *g, wh_value qkv, int heads) {
  int64_t ia[1] = {heads};
  return node1(g, WH_OP_ATTENTION, qkv, ia, 1, NULL, 0);
}
