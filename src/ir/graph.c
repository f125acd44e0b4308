/* graph.c - building graphs: leaves, nodes, names, hint scopes, poisoning on the first error.
 * Builders never crash on bad input: they record one precise message and return WH_NONE. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/ctx.h"
#include "ir.h"

wh_status wh_graph_create(wh_ctx *ctx, wh_graph **out) {
  if (!ctx || !out) return WH_ERR_INVALID_ARGUMENT;
  wh_graph *g = calloc(1, sizeof *g);
  if (!g) {
    wh__ctx_set_error(ctx, "wh_graph_create: out of memory");
    return WH_ERR_OUT_OF_MEMORY;
  }
  g->ctx = ctx;
  g->cur_scope = -1;
  g->cur_fwd = -1;
  g->loss = -1;
  *out = g;
  return WH_OK;
}

void wh_graph_destroy(wh_graph *g) {
  if (!g) return;
  for (int i = 0; i < g->n_values; i++) {
    free(g->values[i].name);
    free(g->values[i].data);
  }
  for (int i = 0; i < g->n_nodes; i++) free(g->nodes[i].in);
  free(g->values);
  free(g->nodes);
  free(g->scopes);
  free(g->grad);
  free(g);
}

wh_status wh__graph_fail(wh_graph *g, wh_status s, const char *fmt, ...) {
  if (g->status == WH_OK) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g->err, sizeof g->err, fmt, ap);
    va_end(ap);
    g->status = s;
  }
  wh__ctx_set_error(g->ctx, "%s", g->err);
  return s;
}

wh_status wh__graph_check(wh_graph *g) {
  if (g->status != WH_OK) {
    wh__ctx_set_error(g->ctx, "graph poisoned by an earlier error: %s", g->err);
    return WH_ERR_POISONED;
  }
  if (g->frozen) {
    wh__ctx_set_error(g->ctx, "graph is frozen: a session uses it; destroy the session to build more");
    return WH_ERR_STATE;
  }
  return WH_OK;
}

wh_status wh_graph_status(const wh_graph *g) { return g ? g->status : WH_ERR_INVALID_ARGUMENT; }
const char *wh_graph_error(const wh_graph *g) { return g ? g->err : "no graph"; }

int wh__valid_value(const wh_graph *g, wh_value v) { return g && v >= 0 && v < g->n_values; }

int wh__grow(void **arr, int *cap, int need, size_t elem) {
  if (need <= *cap) return 1;
  int nc = *cap ? *cap * 2 : 64;
  while (nc < need) nc *= 2;
  void *p = realloc(*arr, (size_t)nc * elem);
  if (!p) return 0;
  memset((char *)p + (size_t)*cap * elem, 0, (size_t)(nc - *cap) * elem);
  *arr = p;
  *cap = nc;
  return 1;
}

wh_value wh__value_new(wh_graph *g, const char *name, wh_dtype dt, const wh__shape *sh, wh__role role) {
  if (!wh__grow((void **)&g->values, &g->cap_values, g->n_values + 1, sizeof(wh__value))) {
    wh__graph_fail(g, WH_ERR_OUT_OF_MEMORY, "out of memory adding a value");
    return WH_NONE;
  }
  char *nm = NULL;
  if (name && !(nm = strdup(name))) {
    wh__graph_fail(g, WH_ERR_OUT_OF_MEMORY, "out of memory adding a value");
    return WH_NONE;
  }
  wh__value *v = &g->values[g->n_values];
  memset(v, 0, sizeof *v);
  v->name = nm;
  v->dtype = dt;
  v->shape = *sh;
  v->role = role;
  v->producer = -1;
  v->scope = g->cur_scope;
  return g->n_values++;
}

static wh_status check_dims(wh_graph *g, const char *what, const char *name, int ndim, const int64_t *dims,
                            int allow_batch) {
  if (ndim < 0 || ndim > WH_MAX_DIMS || (ndim > 0 && !dims))
    return wh__graph_fail(g, WH_ERR_INVALID_ARGUMENT, "%s '%s': ndim %d out of range [0, %d]", what,
                          name ? name : "", ndim, WH_MAX_DIMS);
  int sym = 0;
  for (int i = 0; i < ndim; i++) {
    if (dims[i] < 0) {
      sym++;
      if (!allow_batch)
        return wh__graph_fail(g, WH_ERR_SHAPE, "%s '%s': dimension %d is symbolic; only inputs may have a batch dimension",
                              what, name ? name : "", i);
    } else if (dims[i] == 0) {
      return wh__graph_fail(g, WH_ERR_SHAPE, "%s '%s': dimension %d is 0", what, name ? name : "", i);
    }
  }
  if (sym > 1)
    return wh__graph_fail(g, WH_ERR_SHAPE, "%s '%s': %d symbolic dimensions; at most one is allowed", what,
                          name ? name : "", sym);
  return WH_OK;
}

static int computable(wh_dtype dt) { return dt == WH_F32 || dt == WH_I32; }

static wh_value leaf(wh_graph *g, const char *what, const char *name, wh_dtype dt, int ndim, const int64_t *dims,
                     wh__role role, int allow_batch) {
  if (!g) return WH_NONE;
  if (wh__graph_check(g) != WH_OK) return WH_NONE;
  if ((unsigned)dt > WH_F64) {
    wh__graph_fail(g, WH_ERR_DTYPE, "%s '%s': unknown dtype %d", what, name ? name : "", (int)dt);
    return WH_NONE;
  }
  if (!computable(dt)) {
    wh__graph_fail(g, WH_ERR_UNSUPPORTED, "%s '%s': dtype %s is declared but not computable by this build", what,
                   name ? name : "", wh__dtype_name(dt));
    return WH_NONE;
  }
  if (check_dims(g, what, name, ndim, dims, allow_batch) != WH_OK) return WH_NONE;
  if (name && wh_graph_find(g, name) != WH_NONE) {
    wh__graph_fail(g, WH_ERR_INVALID_ARGUMENT, "%s '%s': the name is already used", what, name);
    return WH_NONE;
  }
  wh__shape sh = {.ndim = ndim};
  for (int i = 0; i < ndim; i++) sh.d[i] = dims[i];
  return wh__value_new(g, name, dt, &sh, role);
}

wh_value wh_input(wh_graph *g, const char *name, wh_dtype dt, int ndim, const int64_t *dims) {
  return leaf(g, "input", name, dt, ndim, dims, WH_ROLE_INPUT, 1);
}

wh_value wh_param(wh_graph *g, const char *name, wh_dtype dt, int ndim, const int64_t *dims, wh_init init) {
  if (g && g->status == WH_OK && dt != WH_F32) {
    wh__graph_fail(g, WH_ERR_DTYPE, "param '%s': parameters are f32, got %s", name ? name : "",
                   wh__dtype_name(dt));
    return WH_NONE;
  }
  if (g && g->status == WH_OK && ((unsigned)init.kind > WH_INIT_KAIMING_NORMAL || init.fan_in < 0 || init.fan_out < 0)) {
    wh__graph_fail(g, WH_ERR_INVALID_ARGUMENT, "param '%s': bad initializer (kind %d)", name ? name : "",
                   (int)init.kind);
    return WH_NONE;
  }
  if (g && g->status == WH_OK && init.kind == WH_INIT_UNIFORM && !(init.b > init.a)) {
    wh__graph_fail(g, WH_ERR_INVALID_ARGUMENT, "param '%s': uniform initializer needs a < b (got %g, %g)",
                   name ? name : "", init.a, init.b);
    return WH_NONE;
  }
  wh_value v = leaf(g, "param", name, dt, ndim, dims, WH_ROLE_PARAM, 0);
  if (v != WH_NONE) g->values[v].init = init;
  return v;
}

wh_value wh_constant(wh_graph *g, const char *name, wh_dtype dt, int ndim, const int64_t *dims, const void *data) {
  if (g && g->status == WH_OK && !data) {
    wh__graph_fail(g, WH_ERR_INVALID_ARGUMENT, "constant '%s': data is NULL", name ? name : "");
    return WH_NONE;
  }
  wh_value v = leaf(g, "constant", name, dt, ndim, dims, WH_ROLE_CONST, 0);
  if (v == WH_NONE) return v;
  size_t bytes = (size_t)wh__numel(&g->values[v].shape, 1) * wh__dtype_size(dt);
  void *p = malloc(bytes ? bytes : 1);
  if (!p) {
    wh__graph_fail(g, WH_ERR_OUT_OF_MEMORY, "constant '%s': out of memory", name ? name : "");
    return WH_NONE;
  }
  memcpy(p, data, bytes);
  g->values[v].data = p;
  return v;
}

wh_value wh_scalar(wh_graph *g, float x) { return wh_constant(g, NULL, WH_F32, 0, NULL, &x); }

int32_t wh__value_scope(const wh_graph *g, wh_value v) {
  const wh__value *val = &g->values[v];
  return val->producer >= 0 ? g->nodes[val->producer].scope : val->scope;
}

static wh_status node_append(wh_graph *g, int op, int n_in, const int32_t *in, const int64_t *ia, int n_ia,
                             const double *fa, int n_fa, int *idx) {
  if (op < 0 || op >= WH_OP_COUNT) return wh__graph_fail(g, WH_ERR_INTERNAL, "unknown op %d", op);
  const wh__op_def *d = wh__ops[op];
  if (n_in < d->min_in || (d->max_in >= 0 && n_in > d->max_in))
    return wh__graph_fail(g, WH_ERR_INVALID_ARGUMENT, "%s: %d inputs, expected %d..%d", d->name, n_in, d->min_in,
                          d->max_in);
  if (n_ia < 0 || n_ia > WH_MAX_IATTR || n_fa < 0 || n_fa > WH_MAX_FATTR)
    return wh__graph_fail(g, WH_ERR_INVALID_ARGUMENT, "%s: too many attributes", d->name);
  for (int i = 0; i < n_in; i++)
    if (!wh__valid_value(g, in[i]))
      return wh__graph_fail(g, WH_ERR_INVALID_ARGUMENT, "%s: input %d is not a value of this graph (%d)", d->name, i,
                            (int)in[i]);
  if (!wh__grow((void **)&g->nodes, &g->cap_nodes, g->n_nodes + 1, sizeof(wh__node)))
    return wh__graph_fail(g, WH_ERR_OUT_OF_MEMORY, "%s: out of memory", d->name);
  wh__node *n = &g->nodes[g->n_nodes];
  memset(n, 0, sizeof *n);
  n->in = malloc(sizeof(int32_t) * (size_t)(n_in ? n_in : 1));
  if (!n->in) return wh__graph_fail(g, WH_ERR_OUT_OF_MEMORY, "%s: out of memory", d->name);
  memcpy(n->in, in, sizeof(int32_t) * (size_t)n_in);
  n->op = op;
  n->n_in = n_in;
  n->out = -1;
  n->n_ia = n_ia;
  n->n_fa = n_fa;
  if (n_ia) memcpy(n->ia, ia, sizeof(int64_t) * (size_t)n_ia);
  if (n_fa) memcpy(n->fa, fa, sizeof(double) * (size_t)n_fa);
  n->phase = g->cur_phase;
  n->fwd = g->cur_fwd;
  n->scope = g->cur_scope;
  *idx = g->n_nodes;
  return WH_OK;
}

wh_value wh__node_add(wh_graph *g, int op, int n_in, const int32_t *in, const int64_t *ia, int n_ia,
                      const double *fa, int n_fa) {
  if (!g) return WH_NONE;
  for (int i = 0; i < n_in; i++)
    if (in[i] == WH_NONE) {
      if (g->status == WH_OK)
        wh__graph_fail(g, WH_ERR_INVALID_ARGUMENT, "%s: input %d is WH_NONE",
                       op >= 0 && op < WH_OP_COUNT ? wh__ops[op]->name : "?", i);
      return WH_NONE;
    }
  if (wh__graph_check(g) != WH_OK) return WH_NONE;
  int idx = -1;
  if (node_append(g, op, n_in, in, ia, n_ia, fa, n_fa, &idx) != WH_OK) return WH_NONE;
  wh__value out = {0};
  out.producer = idx;
  out.scope = g->cur_scope;
  out.role = g->cur_phase == WH_PHASE_FORWARD ? WH_ROLE_ACT : WH_ROLE_GRAD;
  if (wh__ops[op]->shape(g, &g->nodes[idx], &out) != WH_OK) {
    free(g->nodes[idx].in);
    return WH_NONE; /* the shape function already failed the graph */
  }
  wh_value v = wh__value_new(g, NULL, out.dtype, &out.shape, out.role);
  if (v == WH_NONE) {
    free(g->nodes[idx].in);
    return WH_NONE;
  }
  g->values[v].producer = idx;
  g->nodes[idx].out = v;
  g->n_nodes++;
  return v;
}

int wh__node_add_noout(wh_graph *g, int op, int n_in, const int32_t *in, const int64_t *ia, int n_ia,
                       const double *fa, int n_fa) {
  if (!g || wh__graph_check(g) != WH_OK) return -1;
  int idx = -1;
  if (node_append(g, op, n_in, in, ia, n_ia, fa, n_fa, &idx) != WH_OK) return -1;
  wh__value dummy = {0};
  if (wh__ops[op]->shape(g, &g->nodes[idx], &dummy) != WH_OK) {
    free(g->nodes[idx].in);
    return -1;
  }
  g->n_nodes++;
  return idx;
}

/* ---- inspection */

wh_status wh_value_shape(const wh_graph *g, wh_value v, int *ndim, int64_t *dims) {
  if (!wh__valid_value(g, v) || !ndim || !dims) return WH_ERR_INVALID_ARGUMENT;
  const wh__shape *s = &g->values[v].shape;
  *ndim = s->ndim;
  for (int i = 0; i < s->ndim; i++) dims[i] = s->d[i];
  return WH_OK;
}

wh_dtype wh_value_dtype(const wh_graph *g, wh_value v) { return wh__valid_value(g, v) ? g->values[v].dtype : WH_F32; }

const char *wh_value_name(const wh_graph *g, wh_value v) {
  return wh__valid_value(g, v) && g->values[v].name ? g->values[v].name : "";
}

wh_value wh_graph_find(const wh_graph *g, const char *name) {
  if (!g || !name) return WH_NONE;
  for (int i = 0; i < g->n_values; i++)
    if (g->values[i].name && strcmp(g->values[i].name, name) == 0) return i;
  return WH_NONE;
}

int wh_graph_num_values(const wh_graph *g) { return g ? g->n_values : 0; }
int wh_graph_num_nodes(const wh_graph *g) { return g ? g->n_nodes : 0; }

int wh_graph_num_params(const wh_graph *g) {
  int n = 0;
  for (int i = 0; g && i < g->n_values; i++) n += g->values[i].role == WH_ROLE_PARAM;
  return n;
}

wh_value wh_graph_param(const wh_graph *g, int k) {
  for (int i = 0; g && i < g->n_values; i++)
    if (g->values[i].role == WH_ROLE_PARAM && k-- == 0) return i;
  return WH_NONE;
}

wh_status wh_value_set_name(wh_graph *g, wh_value v, const char *name) {
  if (!g) return WH_ERR_INVALID_ARGUMENT;
  if (!wh__valid_value(g, v) || !name || !*name) {
    wh__ctx_set_error(g->ctx, "wh_value_set_name: invalid value %d or empty name", (int)v);
    return WH_ERR_INVALID_ARGUMENT;
  }
  wh_value other = wh_graph_find(g, name);
  if (other != WH_NONE && other != v) {
    wh__ctx_set_error(g->ctx, "wh_value_set_name: '%s' already names value %d", name, (int)other);
    return WH_ERR_INVALID_ARGUMENT;
  }
  char *p = strdup(name);
  if (!p) return WH_ERR_OUT_OF_MEMORY;
  free(g->values[v].name);
  g->values[v].name = p;
  return WH_OK;
}

wh_status wh_graph_keep(wh_graph *g, wh_value v) {
  if (!g) return WH_ERR_INVALID_ARGUMENT;
  wh_status s = wh__graph_check(g);
  if (s != WH_OK) return s;
  if (!wh__valid_value(g, v)) {
    wh__ctx_set_error(g->ctx, "wh_graph_keep: %d is not a value of this graph", (int)v);
    return WH_ERR_INVALID_ARGUMENT;
  }
  g->values[v].keep = 1;
  return WH_OK;
}

/* ---- hint scopes */

static wh_status scope_open(wh_graph *g, wh_hint_kind kind, int n) {
  if (!g) return WH_ERR_INVALID_ARGUMENT;
  wh_status s = wh__graph_check(g);
  if (s != WH_OK) return s;
  if (n < 1) {
    wh__ctx_set_error(g->ctx, "scope %s: n must be >= 1, got %d", kind == WH_HINT_SPLIT ? "split" : "replicate", n);
    return WH_ERR_INVALID_ARGUMENT;
  }
  if (!wh__grow((void **)&g->scopes, &g->cap_scopes, g->n_scopes + 1, sizeof(wh__scope)))
    return wh__graph_fail(g, WH_ERR_OUT_OF_MEMORY, "out of memory opening a scope");
  g->scopes[g->n_scopes] = (wh__scope){kind, n, g->cur_scope};
  g->cur_scope = g->n_scopes++;
  return WH_OK;
}

wh_status wh_scope_replicate(wh_graph *g, int n) { return scope_open(g, WH_HINT_REPLICATE, n); }
wh_status wh_scope_split(wh_graph *g, int n) { return scope_open(g, WH_HINT_SPLIT, n); }

wh_status wh_scope_recompute(wh_graph *g) { return scope_open(g, WH_HINT_RECOMPUTE, 1); }

wh_status wh_scope_stage(wh_graph *g) {
  if (!g) return WH_ERR_INVALID_ARGUMENT;
  for (int32_t s = g->cur_scope; s >= 0; s = g->scopes[s].parent)
    if (g->scopes[s].kind == WH_HINT_STAGE) {
      wh__ctx_set_error(g->ctx, "wh_scope_stage: stages do not nest; close stage %d first", g->scopes[s].n);
      return WH_ERR_STATE;
    }
  wh_status st = scope_open(g, WH_HINT_STAGE, g->n_stages + 1);
  if (st == WH_OK) g->scopes[g->cur_scope].n = g->n_stages++;
  return st;
}

wh_status wh_scope_end(wh_graph *g) {
  if (!g) return WH_ERR_INVALID_ARGUMENT;
  if (g->cur_scope < 0) {
    wh__ctx_set_error(g->ctx, "wh_scope_end: no scope is open");
    return WH_ERR_STATE;
  }
  g->cur_scope = g->scopes[g->cur_scope].parent;
  return WH_OK;
}

wh_status wh_set_pipeline(wh_graph *g, int micro_batches) {
  if (!g) return WH_ERR_INVALID_ARGUMENT;
  if (micro_batches < 1) {
    wh__ctx_set_error(g->ctx, "wh_set_pipeline: micro_batches must be >= 1, got %d", micro_batches);
    return WH_ERR_INVALID_ARGUMENT;
  }
  g->micro_batches = micro_batches;
  return WH_OK;
}

int wh_graph_pipeline(const wh_graph *g) { return g ? g->micro_batches : 0; }

int wh_value_hints(const wh_graph *g, wh_value v, wh_hint *out, int max) {
  if (!wh__valid_value(g, v)) return 0;
  int32_t chain[64];
  int n = 0;
  for (int32_t s = wh__value_scope(g, v); s >= 0 && n < 64; s = g->scopes[s].parent) chain[n++] = s;
  for (int i = 0; i < n && i < max; i++) {
    const wh__scope *sc = &g->scopes[chain[n - 1 - i]];
    out[i] = (wh_hint){sc->kind, sc->n};
  }
  return n;
}
