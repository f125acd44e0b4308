/* optim.c - the optimizer's ops: global-norm clipping and the SGD and AdamW updates (nodes without
 * output that update a parameter and its state in place), and the learning-rate schedule. */
#include <math.h>

#include "family.h"

#define WH__FAMILY optim

/* ------------------------------------------------------------ shapes */

static wh_status sh_scalar_out(wh_graph *g, const wh__node *n, wh__value *o) {
  if (wh__need_f32(g, n) != WH_OK) return g->status;
  o->dtype = WH_F32;
  o->shape.ndim = 0;
  return WH_OK;
}

static wh_status sh_update(wh_graph *g, const wh__node *n, wh__value *o) {
  (void)o;
  if (wh__need_f32(g, n) != WH_OK) return g->status;
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
    if (is_clip ? s->ndim != 0 : !wh__shape_eq(s, &IN(0)->shape)) return wh__fail_shape(g, n, "state does not fit the parameter", 0, i);
  }
  return WH_OK;
}

/* ------------------------------------------------------------ sharding rules */

/* Optimizer updates: the gradient and the state take the parameter's layout; the clipping
 * coefficient is whole. */
static void sr_update(wh__shard_q *q, wh__node *n) {
  int has_clip = (int)(n->op == WH_OP_SGD_UPDATE ? n->ia[1] : n->ia[0]);
  wh__layout l = q->in[0];
  if (is_p(l)) l = LAY_R;
  for (int k = 0; k < n->n_in; k++) q->want[k] = (has_clip && k == n->n_in - 1) ? LAY_R : l;
}

/* ------------------------------------------------------------ the learning-rate schedule */

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

/* ------------------------------------------------------------ rows */

WH__ROW(global_norm_clip, .min_in = 1, .max_in = -1, .has_out = 1, .shape = sh_scalar_out, .cost = wh__co_elems,
        .flops = 1);
WH__ROW(sgd_update, .min_in = 2, .max_in = 4, .has_out = 0, .shape = sh_update, .cost = wh__co_elems, .flops = 6,
        .shard = sr_update);
WH__ROW(adamw_update, .min_in = 4, .max_in = 5, .has_out = 0, .shape = sh_update, .cost = wh__co_elems, .flops = 16,
        .shard = sr_update);
