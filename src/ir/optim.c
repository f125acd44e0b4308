/* optim.c - optimizers as graph nodes: one update node per parameter (placed with the parameter
 * by the planner), optimizer state as persistent values, global-norm clipping as one node. */
#include <stdio.h>
#include <stdlib.h>

#include "../base/ctx.h"
#include "ir.h"

static wh_status check_lr(wh_graph *g, const char *who, const wh_lr *lr) {
  if (!(lr->lr > 0) || (unsigned)lr->schedule > WH_LR_WARMUP_COSINE || lr->warmup_steps < 0 || lr->min_lr < 0 ||
      (lr->schedule == WH_LR_WARMUP_COSINE && lr->total_steps < lr->warmup_steps)) {
    wh__ctx_set_error(g->ctx, "%s: bad learning rate (lr %g, schedule %d, warmup %lld, total %lld, min %g)", who,
                      lr->lr, (int)lr->schedule, (long long)lr->warmup_steps, (long long)lr->total_steps, lr->min_lr);
    return WH_ERR_INVALID_ARGUMENT;
  }
  return WH_OK;
}

static wh_status prologue(wh_graph *g, const char *who) {
  if (!g) return WH_ERR_INVALID_ARGUMENT;
  wh_status s = wh__graph_check(g);
  if (s != WH_OK) return s;
  if (g->loss < 0) {
    wh__ctx_set_error(g->ctx, "%s: call wh_backward first", who);
    return WH_ERR_STATE;
  }
  if (g->has_optimizer) {
    wh__ctx_set_error(g->ctx, "%s: the graph already has an optimizer", who);
    return WH_ERR_STATE;
  }
  return WH_OK;
}

static wh_value state_like(wh_graph *g, wh_value p, const char *suffix) {
  char name[512];
  snprintf(name, sizeof name, "%s.%s", g->values[p].name ? g->values[p].name : "param", suffix);
  wh__shape sh = g->values[p].shape;
  wh_value v = wh__value_new(g, wh_graph_find(g, name) == WH_NONE ? name : NULL, WH_F32, &sh, WH_ROLE_STATE);
  if (v != WH_NONE) g->values[v].scope = wh__value_scope(g, p);
  return v;
}

/* Adds the clipping node (or returns WH_NONE without error when clip_norm <= 0). */
static wh_value clip_node(wh_graph *g, float clip_norm, int *failed) {
  *failed = 0;
  if (!(clip_norm > 0)) return WH_NONE;
  int np = 0;
  int32_t *gr = malloc(sizeof(int32_t) * (size_t)(g->n_values + 1));
  if (!gr) {
    *failed = 1;
    wh__graph_fail(g, WH_ERR_OUT_OF_MEMORY, "optimizer: out of memory");
    return WH_NONE;
  }
  for (int v = 0; v < g->n_grad; v++)
    if (g->values[v].role == WH_ROLE_PARAM && g->grad[v] >= 0) gr[np++] = g->grad[v];
  double fa[1] = {clip_norm};
  wh_value c = wh__node_add(g, WH_OP_GLOBAL_NORM_CLIP, np, gr, NULL, 0, fa, 1);
  free(gr);
  if (c == WH_NONE) *failed = 1;
  return c;
}

static void lr_attrs(const wh_lr *lr, double *fa) {
  fa[0] = lr->lr;
  fa[1] = (double)lr->warmup_steps;
  fa[2] = (double)lr->total_steps;
  fa[3] = lr->min_lr;
  fa[4] = lr->schedule;
}

static int n_params(const wh_graph *g) {
  int k = 0;
  for (int v = 0; v < g->n_grad; v++) k += g->values[v].role == WH_ROLE_PARAM && g->grad[v] >= 0;
  return k;
}

wh_status wh_optimizer_sgd(wh_graph *g, const wh_sgd_options *o) {
  wh_status s = prologue(g, "wh_optimizer_sgd");
  if (s != WH_OK) return s;
  if (!o || o->struct_size != sizeof *o || check_lr(g, "wh_optimizer_sgd", &o->lr) != WH_OK || o->momentum < 0 ||
      o->dampening < 0 || o->weight_decay < 0 || (o->nesterov && (o->momentum <= 0 || o->dampening != 0))) {
    if (o && o->struct_size == sizeof *o && g->ctx->err[0] == 0)
      wh__ctx_set_error(g->ctx, "wh_optimizer_sgd: bad options (nesterov needs momentum > 0 and dampening 0)");
    else if (!o || o->struct_size != sizeof *o)
      wh__ctx_set_error(g->ctx, "wh_optimizer_sgd: options missing or struct_size wrong");
    else if (check_lr(g, "wh_optimizer_sgd", &o->lr) == WH_OK)
      wh__ctx_set_error(g->ctx, "wh_optimizer_sgd: momentum %g, dampening %g, weight decay %g, nesterov %d do not fit",
                        o->momentum, o->dampening, o->weight_decay, o->nesterov);
    return WH_ERR_INVALID_ARGUMENT;
  }
  g->cur_phase = WH_PHASE_UPDATE;
  int failed;
  wh_value clip = clip_node(g, o->clip_norm, &failed);
  int np = n_params(g);
  for (int v = 0, k = 0; !failed && k < np; v++) {
    if (g->values[v].role != WH_ROLE_PARAM || g->grad[v] < 0) continue;
    k++;
    int32_t in[4];
    int nin = 0;
    in[nin++] = v;
    in[nin++] = g->grad[v];
    if (o->momentum > 0) {
      wh_value buf = state_like(g, v, "momentum");
      if (buf == WH_NONE) break;
      in[nin++] = buf;
    }
    if (clip != WH_NONE) in[nin++] = clip;
    int64_t ia[3] = {o->momentum > 0, clip != WH_NONE, o->nesterov != 0};
    double fa[8];
    lr_attrs(&o->lr, fa);
    fa[5] = o->momentum;
    fa[6] = o->dampening;
    fa[7] = o->weight_decay;
    g->cur_fwd = -1;
    g->cur_scope = wh__value_scope(g, v);
    if (wh__node_add_noout(g, WH_OP_SGD_UPDATE, nin, in, ia, 3, fa, 8) < 0) break;
  }
  g->cur_phase = WH_PHASE_FORWARD;
  g->cur_scope = -1;
  if (g->status != WH_OK) return g->status;
  g->has_optimizer = 1;
  return WH_OK;
}

wh_status wh_optimizer_adamw(wh_graph *g, const wh_adamw_options *o) {
  wh_status s = prologue(g, "wh_optimizer_adamw");
  if (s != WH_OK) return s;
  if (!o || o->struct_size != sizeof *o) {
    wh__ctx_set_error(g->ctx, "wh_optimizer_adamw: options missing or struct_size wrong");
    return WH_ERR_INVALID_ARGUMENT;
  }
  if (check_lr(g, "wh_optimizer_adamw", &o->lr) != WH_OK) return WH_ERR_INVALID_ARGUMENT;
  if (!(o->beta1 >= 0 && o->beta1 < 1) || !(o->beta2 >= 0 && o->beta2 < 1) || !(o->eps > 0) || o->weight_decay < 0) {
    wh__ctx_set_error(g->ctx, "wh_optimizer_adamw: beta1 %g and beta2 %g must be in [0,1), eps %g > 0, weight decay %g >= 0",
                      o->beta1, o->beta2, o->eps, o->weight_decay);
    return WH_ERR_INVALID_ARGUMENT;
  }
  g->cur_phase = WH_PHASE_UPDATE;
  int failed;
  wh_value clip = clip_node(g, o->clip_norm, &failed);
  int np = n_params(g);
  for (int v = 0, k = 0; !failed && k < np; v++) {
    if (g->values[v].role != WH_ROLE_PARAM || g->grad[v] < 0) continue;
    k++;
    wh_value m = state_like(g, v, "adam_m"), vv = state_like(g, v, "adam_v");
    if (m == WH_NONE || vv == WH_NONE) break;
    int32_t in[5] = {v, g->grad[v], m, vv, clip};
    int64_t ia[1] = {clip != WH_NONE};
    double fa[9];
    lr_attrs(&o->lr, fa);
    fa[5] = o->beta1;
    fa[6] = o->beta2;
    fa[7] = o->eps;
    fa[8] = o->weight_decay;
    g->cur_fwd = -1;
    g->cur_scope = wh__value_scope(g, v);
    if (wh__node_add_noout(g, WH_OP_ADAMW_UPDATE, clip != WH_NONE ? 5 : 4, in, ia, 1, fa, 9) < 0) break;
  }
  g->cur_phase = WH_PHASE_FORWARD;
  g->cur_scope = -1;
  if (g->status != WH_OK) return g->status;
  g->has_optimizer = 1;
  return WH_OK;
}
