/* autodiff.c - reverse-mode differentiation as graph rewriting: gradient nodes are appended to
 * the same graph, tagged with the forward node they belong to, so a plan places them together. */
#include <stdlib.h>
#include <string.h>

#include "../base/ctx.h"
#include "ir.h"

wh_status wh_backward(wh_graph *g, wh_value loss) {
  if (!g) return WH_ERR_INVALID_ARGUMENT;
  wh_status st = wh__graph_check(g);
  if (st != WH_OK) return st;
  if (g->loss >= 0) {
    wh__ctx_set_error(g->ctx, "wh_backward: the graph already has gradients (of value %d)", (int)g->loss);
    return WH_ERR_STATE;
  }
  if (!wh__valid_value(g, loss)) {
    wh__ctx_set_error(g->ctx, "wh_backward: loss %d is not a value of this graph", (int)loss);
    return WH_ERR_INVALID_ARGUMENT;
  }
  const wh__value *lv = &g->values[loss];
  if (lv->shape.ndim != 0 || lv->dtype != WH_F32 || lv->producer < 0) {
    char b[160];
    wh__ctx_set_error(g->ctx, "wh_backward: loss must be an f32 scalar computed by an op, got %s%s",
                      wh__dtype_name(lv->dtype), wh__shape_str(&lv->shape, b, sizeof b));
    return WH_ERR_SHAPE;
  }
  int n0 = g->n_values, nn = g->n_nodes;
  char *req = calloc((size_t)n0, 1);
  int32_t *grad = malloc(sizeof(int32_t) * (size_t)n0);
  if (!req || !grad) {
    free(req);
    free(grad);
    return wh__graph_fail(g, WH_ERR_OUT_OF_MEMORY, "wh_backward: out of memory");
  }
  for (int v = 0; v < n0; v++) {
    req[v] = g->values[v].role == WH_ROLE_PARAM;
    grad[v] = -1;
  }
  for (int i = 0; i < nn; i++) {
    const wh__node *n = &g->nodes[i];
    if (n->out < 0 || n->phase != WH_PHASE_FORWARD) continue;
    for (int j = 0; j < n->n_in; j++) req[n->out] |= req[n->in[j]];
  }
  if (!req[loss]) {
    free(req);
    free(grad);
    wh__ctx_set_error(g->ctx, "wh_backward: the loss does not depend on any parameter");
    return WH_ERR_INVALID_ARGUMENT;
  }

  wh__phase saved_phase = g->cur_phase;
  int32_t saved_fwd = g->cur_fwd, saved_scope = g->cur_scope;
  g->cur_phase = WH_PHASE_BACKWARD;
  g->cur_fwd = lv->producer;
  g->cur_scope = g->nodes[lv->producer].scope;
  grad[loss] = wh_scalar(g, 1.0f);

  for (int i = g->values[loss].producer; i >= 0 && g->status == WH_OK; i--) {
    /* a copy: building gradient nodes may move the node array */
    wh__node n = g->nodes[i];
    if (n.out < 0 || n.phase != WH_PHASE_FORWARD || grad[n.out] < 0) continue;
    int need[64] = {0}, any = 0;
    if (n.n_in > 64) {
      wh__graph_fail(g, WH_ERR_UNSUPPORTED, "wh_backward: %s node %d has more than 64 inputs", wh__ops[n.op]->name, i);
      break;
    }
    for (int j = 0; j < n.n_in; j++) any |= need[j] = req[n.in[j]];
    if (!any) continue;
    if (!wh__ops[n.op]->grad) {
      wh__graph_fail(g, WH_ERR_UNSUPPORTED, "wh_backward: op %s (node %d) has no gradient", wh__ops[n.op]->name, i);
      break;
    }
    wh_value dx[64];
    for (int j = 0; j < n.n_in; j++) dx[j] = WH_NONE;
    g->cur_fwd = i;
    g->cur_scope = n.scope;
    if (wh__ops[n.op]->grad(g, &n, grad[n.out], need, dx) != WH_OK) break;
    for (int j = 0; j < n.n_in; j++) {
      if (!need[j] || dx[j] == WH_NONE) continue;
      int32_t x = n.in[j];
      grad[x] = grad[x] < 0 ? dx[j] : wh_add(g, grad[x], dx[j]);
    }
  }
  g->cur_phase = saved_phase;
  g->cur_fwd = saved_fwd;
  g->cur_scope = saved_scope;
  free(req);
  if (g->status != WH_OK) {
    free(grad);
    return g->status;
  }
  int32_t *full = malloc(sizeof(int32_t) * (size_t)g->n_values);
  if (!full) {
    free(grad);
    return wh__graph_fail(g, WH_ERR_OUT_OF_MEMORY, "wh_backward: out of memory");
  }
  for (int v = 0; v < g->n_values; v++) full[v] = v < n0 ? grad[v] : -1;
  free(grad);
  g->grad = full;
  g->n_grad = g->n_values;
  g->loss = loss;
  g->values[loss].keep = 1;
  for (int v = 0; v < n0; v++)
    if (g->values[v].role == WH_ROLE_PARAM && full[v] >= 0) g->values[full[v]].keep = 1;
  return WH_OK;
}

wh_value wh_grad(const wh_graph *g, wh_value v) {
  if (!g || !g->grad || v < 0 || v >= g->n_grad) return WH_NONE;
  return g->grad[v];
}
