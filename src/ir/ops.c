/* ops.c - the op registry: one row per op of ops.def, each defined with its family in
 * ir/ops/<family>.c, and the helpers those families' shape functions, gradients and costs share. */
#include <stdio.h>
#include <string.h>

#include "ops/family.h"

/* ------------------------------------------------------------ the registry */

const wh__op_def *const wh__ops[WH_OP_COUNT] = {
#define WH_OP(id, name, kind, family, kernel, backends) [WH_OP_##id] = &wh__row_##name,
#include "ops.def"
};

/* Graph files and unary_grad's attribute hold op ids: ops are only ever appended to ops.def. */
_Static_assert(WH_OP_ATTENTION == 29 && WH_OP_ADAMW_UPDATE == 48 && WH_OP_TP_CROSS_ENTROPY_GRAD == 55,
               "an op was inserted into ops.def or removed: op ids are stored, so append only");

int wh__op_find(const char *name) {
  if (!name) return -1;
  for (int i = 0; i < WH_OP_COUNT; i++)
    if (strcmp(wh__ops[i]->name, name) == 0) return i;
  return -1;
}

/* ------------------------------------------------------------ shapes */

wh_status wh__fail_shape(wh_graph *g, const wh__node *n, const char *why, int i, int j) {
  char a[160], b[160];
  wh__shape_str(&IN(i)->shape, a, sizeof a);
  if (j >= 0) {
    wh__shape_str(&IN(j)->shape, b, sizeof b);
    return wh__graph_fail(g, WH_ERR_SHAPE, "%s: %s: input %d shape %s, input %d shape %s", OPN, why, i, a, j, b);
  }
  return wh__graph_fail(g, WH_ERR_SHAPE, "%s: %s: input %d shape %s", OPN, why, i, a);
}

wh_status wh__need_dtype(wh_graph *g, const wh__node *n, int i, wh_dtype dt) {
  if (IN(i)->dtype == dt) return WH_OK;
  return wh__graph_fail(g, WH_ERR_DTYPE, "%s: input %d has dtype %s, expected %s", OPN, i,
                        wh__dtype_name(IN(i)->dtype), wh__dtype_name(dt));
}

wh_status wh__need_f32(wh_graph *g, const wh__node *n) {
  for (int i = 0; i < n->n_in; i++)
    if (wh__need_dtype(g, n, i, WH_F32) != WH_OK) return g->status;
  return WH_OK;
}

wh_status wh__need_attrs(wh_graph *g, const wh__node *n, int min_ia, int max_ia) {
  if (n->n_ia >= min_ia && n->n_ia <= max_ia) return WH_OK;
  return wh__graph_fail(g, WH_ERR_INVALID_ARGUMENT, "%s: %d integer attributes, expected %d..%d", OPN, n->n_ia, min_ia,
                        max_ia);
}

wh_status wh__attr_shape(wh_graph *g, const wh__node *n, int first, int ndim, wh__shape *out) {
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

wh_status wh__need_shape(wh_graph *g, const wh__node *n, int i, const wh__shape *want, const char *what) {
  if (wh__shape_eq(&IN(i)->shape, want)) return WH_OK;
  char a[160], b[160];
  return wh__graph_fail(g, WH_ERR_SHAPE, "%s: input %d shape %s, expected %s (%s)", OPN, i,
                        wh__shape_str(&IN(i)->shape, a, sizeof a), wh__shape_str(want, b, sizeof b), what);
}

wh_status wh__sh_same(wh_graph *g, const wh__node *n, wh__value *o) {
  if (wh__need_f32(g, n) != WH_OK) return g->status;
  o->dtype = WH_F32;
  o->shape = IN(0)->shape;
  return WH_OK;
}

wh_status wh__sh_pair(wh_graph *g, const wh__node *n, wh__value *o) {
  if (wh__need_f32(g, n) != WH_OK) return g->status;
  if (!wh__shape_eq(&IN(0)->shape, &IN(1)->shape)) return wh__fail_shape(g, n, "shapes differ", 0, 1);
  o->dtype = WH_F32;
  o->shape = IN(1)->shape;
  return WH_OK;
}

wh_status wh__sh_program_only(wh_graph *g, const wh__node *n, wh__value *o) {
  (void)o;
  return wh__graph_fail(g, WH_ERR_INVALID_ARGUMENT, "%s: made only by the partitioner, not in a graph", OPN);
}

/* ------------------------------------------------------------ gradient builders */

wh_value wh__mk_node(wh_graph *g, int op, int n_in, const int32_t *in, const int64_t *ia, int n_ia, const double *fa,
                     int n_fa) {
  return wh__node_add(g, op, n_in, in, ia, n_ia, fa, n_fa);
}

wh_value wh__mk_node2(wh_graph *g, int op, wh_value a, wh_value b) {
  int32_t in[2] = {a, b};
  return wh__mk_node(g, op, 2, in, NULL, 0, NULL, 0);
}

wh_value wh__mk_reshape(wh_graph *g, wh_value x, const wh__shape *s) {
  int32_t in[1] = {x};
  return wh__mk_node(g, WH_OP_RESHAPE, 1, in, s->d, s->ndim, NULL, 0);
}

/* ------------------------------------------------------------ costs */

static double nbytes(const wh_graph *g, wh_value v, int64_t batch) {
  return (double)wh__numel(&g->values[v].shape, batch) * (double)wh__dtype_size(g->values[v].dtype);
}

void wh__io_bytes(const wh_graph *g, const wh__node *n, int64_t batch, wh__cost *c) {
  c->bytes_read = c->bytes_written = 0;
  for (int i = 0; i < n->n_in; i++) c->bytes_read += nbytes(g, n->in[i], batch);
  if (n->out >= 0) c->bytes_written = nbytes(g, n->out, batch);
}

void wh__co_elems(const wh_graph *g, const wh__node *n, int64_t batch, wh__cost *c) {
  wh__io_bytes(g, n, batch, c);
  double elems = n->out >= 0 ? (double)wh__numel(&g->values[n->out].shape, batch) : 0;
  for (int i = 0; i < n->n_in; i++) {
    double e = (double)wh__numel(&g->values[n->in[i]].shape, batch);
    if (e > elems) elems = e;
  }
  c->flops = wh__ops[n->op]->flops * elems;
}
