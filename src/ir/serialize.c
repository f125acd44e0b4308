/* serialize.c - graphs to and from protobuf files (proto/whale.proto, via protobuf-c).
 * Loading rebuilds the graph through wh__value_new / wh__node_add, so shape inference re-checks
 * every node; everything read from the file is validated before it is used. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/ctx.h"
#include "../base/fileio.h"
#include "ir.h"
#include "whale.pb-c.h"

#define GRAPH_MAGIC "libwhale.graph"
#define GRAPH_FORMAT 1u
#define END_MARKER 0x454C4857u /* "WHLE" little-endian */
/* Sanity bounds: far above any real graph, low enough that counts fit an int everywhere. */
#define MAX_ITEMS (1 << 28)
#define MAX_NUMEL ((int64_t)1 << 48)

/* The file's enums are the library's enums, number for number. */
_Static_assert((int)WHALE__DTYPE__DTYPE_F64 == (int)WH_F64, "dtype enums diverged");
_Static_assert((int)WHALE__ROLE__ROLE_STATE == (int)WH_ROLE_STATE, "role enums diverged");
_Static_assert((int)WHALE__PHASE__PHASE_UPDATE == (int)WH_PHASE_UPDATE, "phase enums diverged");
_Static_assert((int)WHALE__HINT_KIND__HINT_STAGE == (int)WH_HINT_STAGE, "hint enums diverged");
_Static_assert((int)WHALE__INIT_KIND__INIT_KAIMING_NORMAL == (int)WH_INIT_KAIMING_NORMAL, "init enums diverged");

/* ------------------------------------------------------------------ save */

/* Elements of a shape with the batch bound to 1; -1 if a dim is non-positive-fixed or it overflows. */
static int64_t shape_numel_checked(const int64_t *d, size_t nd) {
  int64_t n = 1;
  for (size_t i = 0; i < nd; i++) {
    int64_t x = d[i];
    if (x == 0 || x == INT64_MIN) return -1;
    if (x < 0) x = -x;
    if (__builtin_mul_overflow(n, x, &n) || n > MAX_NUMEL) return -1;
  }
  return n;
}

static int has_symbolic(const wh__shape *s) { return wh__shape_symbolic_count(s) > 0; }

wh_status wh__graph_save_with(const wh_graph *g, wh__param_data_fn param_data, const void *arg, const char *path) {
  if (!g) return WH_ERR_INVALID_ARGUMENT;
  if (g->status != WH_OK) {
    wh__ctx_set_error(g->ctx, "save '%s': the graph is poisoned by an earlier error: %s", path ? path : "(null)",
                      g->err);
    return WH_ERR_POISONED;
  }
  if (!path || !*path) {
    wh__ctx_set_error(g->ctx, "save: path is NULL or empty");
    return WH_ERR_INVALID_ARGUMENT;
  }
  int nv = g->n_values, nn = g->n_nodes, ns = g->n_scopes, ngp = 0;
  if (g->grad)
    for (int i = 0; i < g->n_grad; i++) ngp += g->grad[i] >= 0;

  Whale__Value *vals = calloc((size_t)nv + 1, sizeof *vals);
  Whale__Value **pv = calloc((size_t)nv + 1, sizeof *pv);
  Whale__Init *inits = calloc((size_t)nv + 1, sizeof *inits);
  Whale__Node *nodes = calloc((size_t)nn + 1, sizeof *nodes);
  Whale__Node **pn = calloc((size_t)nn + 1, sizeof *pn);
  Whale__Scope *scs = calloc((size_t)ns + 1, sizeof *scs);
  Whale__Scope **ps = calloc((size_t)ns + 1, sizeof *ps);
  Whale__GradPair *gps = calloc((size_t)ngp + 1, sizeof *gps);
  Whale__GradPair **pg = calloc((size_t)ngp + 1, sizeof *pg);
  wh_status st = WH_OK;
  if (!vals || !pv || !inits || !nodes || !pn || !scs || !ps || !gps || !pg) {
    wh__ctx_set_error(g->ctx, "save '%s': out of memory", path);
    st = WH_ERR_OUT_OF_MEMORY;
    goto done;
  }

  for (int i = 0; i < nv; i++) {
    const wh__value *v = &g->values[i];
    Whale__Value *m = &vals[i];
    whale__value__init(m);
    whale__init__init(&inits[i]);
    pv[i] = m;
    m->has_name = v->name != NULL;
    m->name = v->name ? v->name : (char *)"";
    m->dtype = (Whale__DType)v->dtype;
    m->n_dims = (size_t)v->shape.ndim;
    m->dims = (int64_t *)v->shape.d;
    m->role = (Whale__Role)v->role;
    m->producer = v->producer;
    m->scope = v->scope;
    inits[i].kind = (Whale__InitKind)v->init.kind;
    inits[i].a = v->init.a;
    inits[i].b = v->init.b;
    inits[i].seed = v->init.seed;
    inits[i].fan_in = v->init.fan_in;
    inits[i].fan_out = v->init.fan_out;
    m->init = &inits[i];
    m->keep = v->keep != 0;
    const void *data = v->data;
    if (param_data && v->role == WH_ROLE_PARAM) {
      data = param_data(arg, i);
      if (!data) {
        wh__ctx_set_error(g->ctx, "save '%s': the session holds no data for parameter %d ('%s')", path, i,
                          v->name ? v->name : "");
        st = WH_ERR_INTERNAL;
        goto done;
      }
    }
    if (data && !has_symbolic(&v->shape)) {
      m->has_data = 1;
      m->data.len = (size_t)wh__numel(&v->shape, 1) * wh__dtype_size(v->dtype);
      m->data.data = (uint8_t *)data;
    }
  }
  for (int k = 0; k < nn; k++) {
    const wh__node *n = &g->nodes[k];
    Whale__Node *m = &nodes[k];
    whale__node__init(m);
    pn[k] = m;
    m->op = (char *)(n->op >= 0 && n->op < WH_OP_COUNT ? wh__ops[n->op]->name : "");
    m->n_inputs = (size_t)n->n_in;
    m->inputs = n->in;
    m->out = n->out;
    m->n_ia = (size_t)n->n_ia;
    m->ia = (int64_t *)n->ia;
    m->n_fa = (size_t)n->n_fa;
    m->fa = (double *)n->fa;
    m->phase = (Whale__Phase)n->phase;
    m->fwd = n->fwd;
    m->scope = n->scope;
  }
  for (int i = 0; i < ns; i++) {
    whale__scope__init(&scs[i]);
    ps[i] = &scs[i];
    scs[i].kind = (Whale__HintKind)g->scopes[i].kind;
    scs[i].n = g->scopes[i].n;
    scs[i].parent = g->scopes[i].parent;
  }
  for (int i = 0, j = 0; g->grad && i < g->n_grad; i++) {
    if (g->grad[i] < 0) continue;
    whale__grad_pair__init(&gps[j]);
    gps[j].value = i;
    gps[j].grad = g->grad[i];
    pg[j] = &gps[j];
    j++;
  }

  Whale__Graph msg = WHALE__GRAPH__INIT;
  msg.magic = (char *)GRAPH_MAGIC;
  msg.format_version = GRAPH_FORMAT;
  msg.n_values = (size_t)nv;
  msg.values = pv;
  msg.n_nodes = (size_t)nn;
  msg.nodes = pn;
  msg.n_scopes = (size_t)ns;
  msg.scopes = ps;
  msg.micro_batches = g->micro_batches;
  msg.n_stages = g->n_stages;
  msg.loss = g->loss;
  msg.has_grad_map = g->grad != NULL;
  msg.n_grad = g->grad ? g->n_grad : 0;
  msg.n_grads = (size_t)ngp;
  msg.grads = pg;
  msg.has_optimizer = g->has_optimizer != 0;
  msg.end_marker = END_MARKER;

  st = wh__write_message(g->ctx, "save", path, &msg.base);

done:
  free(vals);
  free(pv);
  free(inits);
  free(nodes);
  free(pn);
  free(scs);
  free(ps);
  free(gps);
  free(pg);
  return st;
}

wh_status wh_graph_save(const wh_graph *g, const char *path) { return wh__graph_save_with(g, NULL, NULL, path); }

/* ------------------------------------------------------------------ load */

typedef struct loader {
  wh_graph *g;
  const char *path;
  const Whale__Graph *m;
} loader;

/* Fail the half-built graph with "load '<path>': <msg>" (plus the message of a builder that
 * already failed it), so the context's last error names the file and the fault. */
static wh_status lfail(loader *L, wh_status s, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static wh_status lfail(loader *L, wh_status s, const char *fmt, ...) {
  char msg[512], prior[sizeof L->g->err];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  int had = L->g->status != WH_OK;
  if (had) memcpy(prior, L->g->err, sizeof prior);
  prior[sizeof prior - 1] = 0;
  L->g->status = WH_OK; /* the graph is about to be destroyed: let this message win */
  if (had) return wh__graph_fail(L->g, s, "load '%s': %s: %s", L->path, msg, prior);
  return wh__graph_fail(L->g, s, "load '%s': %s", L->path, msg);
}

/* After a builder returned WH_NONE: out of memory stays out of memory, anything else means the
 * file describes a graph the builders reject. */
static wh_status builder_status(const loader *L) {
  return L->g->status == WH_ERR_OUT_OF_MEMORY ? WH_ERR_OUT_OF_MEMORY : WH_ERR_CORRUPT;
}

static const char *role_name(int r) {
  static const char *names[] = {"input", "param", "const", "act", "grad", "state"};
  return r >= 0 && r <= WH_ROLE_STATE ? names[r] : "?";
}

static int is_leaf_role(int r) {
  return r == WH_ROLE_INPUT || r == WH_ROLE_PARAM || r == WH_ROLE_CONST || r == WH_ROLE_STATE;
}

/* Check one stored value on its own (indices into other tables are checked where used). */
static wh_status check_value(loader *L, int i) {
  const Whale__Value *v = L->m->values[i];
  int dt = (int)v->dtype, role = (int)v->role;
  int nn = (int)L->m->n_nodes, ns = (int)L->m->n_scopes;
  if ((unsigned)dt > WH_F64) return lfail(L, WH_ERR_CORRUPT, "value %d: unknown dtype %d", i, dt);
  if ((unsigned)role > WH_ROLE_STATE) return lfail(L, WH_ERR_CORRUPT, "value %d: unknown role %d", i, role);
  if (v->n_dims > WH_MAX_DIMS)
    return lfail(L, WH_ERR_CORRUPT, "value %d: %zu dimensions, at most %d", i, v->n_dims, WH_MAX_DIMS);
  int sym = 0;
  for (size_t d = 0; d < v->n_dims; d++) sym += v->dims[d] < 0;
  int64_t numel = shape_numel_checked(v->dims, v->n_dims);
  if (numel < 0 || sym > 1)
    return lfail(L, WH_ERR_CORRUPT, "value %d: invalid shape (a zero, huge or second symbolic dimension)", i);
  if (v->scope < -1 || v->scope >= ns)
    return lfail(L, WH_ERR_CORRUPT, "value %d: scope %d of %d", i, (int)v->scope, ns);
  if (v->producer < -1 || v->producer >= nn)
    return lfail(L, WH_ERR_CORRUPT, "value %d: producer node %d of %d", i, (int)v->producer, nn);
  if (v->has_name && !v->name) return lfail(L, WH_ERR_CORRUPT, "value %d: name flagged but missing", i);
  const char *nm = v->has_name ? v->name : "";
  if (v->producer >= 0) {
    if (v->has_data) return lfail(L, WH_ERR_CORRUPT, "value %d ('%s'): data on a node output", i, nm);
    return WH_OK; /* the producing node's shape function decides the rest */
  }
  /* a leaf: the checks of wh_input / wh_param / wh_constant */
  if (!is_leaf_role(role))
    return lfail(L, WH_ERR_CORRUPT, "value %d ('%s'): role %s without a producer", i, nm, role_name(role));
  if (dt != WH_F32 && dt != WH_I32)
    return lfail(L, WH_ERR_CORRUPT, "value %d ('%s'): leaf of dtype %s", i, nm, wh__dtype_name((wh_dtype)dt));
  if (role == WH_ROLE_PARAM && dt != WH_F32)
    return lfail(L, WH_ERR_CORRUPT, "value %d ('%s'): parameter of dtype %s", i, nm,
                 wh__dtype_name((wh_dtype)dt));
  if (sym && role != WH_ROLE_INPUT)
    return lfail(L, WH_ERR_CORRUPT, "value %d ('%s'): %s with a symbolic dimension", i, nm, role_name(role));
  if (v->init) {
    const Whale__Init *in = v->init;
    if ((unsigned)in->kind > WH_INIT_KAIMING_NORMAL || in->fan_in < 0 || in->fan_out < 0)
      return lfail(L, WH_ERR_CORRUPT, "value %d ('%s'): bad initializer (kind %d)", i, nm, (int)in->kind);
    if (role == WH_ROLE_PARAM && in->kind == WHALE__INIT_KIND__INIT_UNIFORM && !(in->b > in->a))
      return lfail(L, WH_ERR_CORRUPT, "value %d ('%s'): uniform initializer needs a < b", i, nm);
  }
  if (role == WH_ROLE_CONST && !v->has_data)
    return lfail(L, WH_ERR_CORRUPT, "value %d ('%s'): constant without data", i, nm);
  if (v->has_data) {
    if (role != WH_ROLE_CONST && role != WH_ROLE_PARAM)
      return lfail(L, WH_ERR_CORRUPT, "value %d ('%s'): data on a %s", i, nm, role_name(role));
    size_t want = (size_t)numel * wh__dtype_size((wh_dtype)v->dtype);
    if (v->data.len != want)
      return lfail(L, WH_ERR_CORRUPT, "value %d ('%s'): %zu data bytes, its shape needs %zu", i, nm, v->data.len,
                   want);
  }
  return WH_OK;
}

static wh__shape stored_shape(const Whale__Value *v) {
  wh__shape s = {.ndim = (int)v->n_dims};
  for (int d = 0; d < s.ndim; d++) s.d[d] = v->dims[d];
  return s;
}

/* Restore the next stored value, a leaf, through wh__value_new. */
static wh_status make_leaf(loader *L) {
  wh_graph *g = L->g;
  int i = g->n_values;
  const Whale__Value *m = L->m->values[i];
  wh__shape sh = stored_shape(m);
  g->cur_scope = m->scope;
  wh_value v = wh__value_new(g, m->has_name ? m->name : NULL, (wh_dtype)m->dtype, &sh, (wh__role)m->role);
  if (v == WH_NONE) return lfail(L, builder_status(L), "value %d: cannot be created", i);
  if (v != i) return lfail(L, WH_ERR_INTERNAL, "value %d was created as %d", i, (int)v);
  wh__value *wv = &g->values[v];
  wv->scope = m->scope;
  wv->keep = m->keep;
  if (m->init) {
    wv->init.kind = (wh_init_kind)m->init->kind;
    wv->init.a = m->init->a;
    wv->init.b = m->init->b;
    wv->init.seed = m->init->seed;
    wv->init.fan_in = m->init->fan_in;
    wv->init.fan_out = m->init->fan_out;
  }
  if (m->has_data) {
    wv->data = malloc(m->data.len ? m->data.len : 1);
    if (!wv->data) return lfail(L, WH_ERR_OUT_OF_MEMORY, "value %d: out of memory for %zu data bytes", i, m->data.len);
    if (m->data.len) memcpy(wv->data, m->data.data, m->data.len);
  }
  return WH_OK;
}

/* Create stored leaves until the next stored value is a node output (or none is left). */
static wh_status make_leaves(loader *L) {
  while (L->g->n_values < (int)L->m->n_values && L->m->values[L->g->n_values]->producer < 0) {
    wh_status st = make_leaf(L);
    if (st != WH_OK) return st;
  }
  return WH_OK;
}

static wh_status add_node(loader *L, int k) {
  wh_graph *g = L->g;
  const Whale__Node *n = L->m->nodes[k];
  int nv = (int)L->m->n_values, ns = (int)L->m->n_scopes;
  if (!n->op || !*n->op) return lfail(L, WH_ERR_CORRUPT, "node %d: no op name", k);
  int op = wh__op_find(n->op);
  if (op < 0 || op >= WH_OP_COUNT) return lfail(L, WH_ERR_CORRUPT, "node %d: unknown op '%.64s'", k, n->op);
  const wh__op_def *d = wh__ops[op];
  if (n->n_inputs > (size_t)MAX_ITEMS || (int)n->n_inputs < d->min_in ||
      (d->max_in >= 0 && (int)n->n_inputs > d->max_in))
    return lfail(L, WH_ERR_CORRUPT, "node %d (%s): %zu inputs, the op takes %d..%d", k, d->name, n->n_inputs,
                 d->min_in, d->max_in);
  if (n->n_ia > WH_MAX_IATTR || n->n_fa > WH_MAX_FATTR)
    return lfail(L, WH_ERR_CORRUPT, "node %d (%s): %zu int and %zu float attributes, at most %d and %d", k, d->name,
                 n->n_ia, n->n_fa, WH_MAX_IATTR, WH_MAX_FATTR);
  if ((unsigned)n->phase > WH_PHASE_UPDATE)
    return lfail(L, WH_ERR_CORRUPT, "node %d (%s): unknown phase %d", k, d->name, (int)n->phase);
  if (n->fwd < -1 || n->fwd >= k)
    return lfail(L, WH_ERR_CORRUPT, "node %d (%s): forward node %d is not an earlier node", k, d->name, (int)n->fwd);
  if (n->scope < -1 || n->scope >= ns)
    return lfail(L, WH_ERR_CORRUPT, "node %d (%s): scope %d of %d", k, d->name, (int)n->scope, ns);
  if (d->has_out ? n->out < 0 : n->out != -1)
    return lfail(L, WH_ERR_CORRUPT, "node %d (%s): output %d, but the op %s an output", k, d->name, (int)n->out,
                 d->has_out ? "has" : "has no");
  if (n->out >= nv) return lfail(L, WH_ERR_CORRUPT, "node %d (%s): output is value %d of %d", k, d->name, (int)n->out, nv);
  if (n->out >= 0 && L->m->values[n->out]->producer != k)
    return lfail(L, WH_ERR_CORRUPT, "node %d (%s): output value %d names node %d as its producer", k, d->name,
                 (int)n->out, (int)L->m->values[n->out]->producer);

  wh_status st = make_leaves(L);
  if (st != WH_OK) return st;
  if (n->out >= 0 && n->out != g->n_values)
    return lfail(L, WH_ERR_CORRUPT, "node %d (%s): output is value %d, but the next value is %d", k, d->name,
                 (int)n->out, g->n_values);
  for (size_t i = 0; i < n->n_inputs; i++)
    if (n->inputs[i] < 0 || n->inputs[i] >= g->n_values)
      return lfail(L, WH_ERR_CORRUPT, "node %d (%s) input %zu refers to value %d of %d", k, d->name, i,
                   (int)n->inputs[i], g->n_values);

  g->cur_scope = n->scope;
  g->cur_phase = (wh__phase)n->phase;
  g->cur_fwd = n->fwd;
  int n_in = (int)n->n_inputs, n_ia = (int)n->n_ia, n_fa = (int)n->n_fa;
  static const int32_t no_in[1] = {0};
  static const int64_t no_ia[1] = {0};
  static const double no_fa[1] = {0};
  const int32_t *in = n_in ? n->inputs : no_in;
  const int64_t *ia = n_ia ? n->ia : no_ia;
  const double *fa = n_fa ? n->fa : no_fa;
  if (n->out < 0) {
    int idx = wh__node_add_noout(g, op, n_in, in, ia, n_ia, fa, n_fa);
    if (idx < 0) return lfail(L, builder_status(L), "node %d (%s) rejected", k, d->name);
    if (idx != k) return lfail(L, WH_ERR_INTERNAL, "node %d was added as %d", k, idx);
    return WH_OK;
  }
  wh_value v = wh__node_add(g, op, n_in, in, ia, n_ia, fa, n_fa);
  if (v == WH_NONE) return lfail(L, builder_status(L), "node %d (%s) rejected", k, d->name);
  if (v != n->out || g->n_nodes != k + 1 || g->values[v].producer != k)
    return lfail(L, WH_ERR_INTERNAL, "node %d (%s) produced value %d, expected %d", k, d->name, (int)v, (int)n->out);
  const Whale__Value *m = L->m->values[v];
  wh__value *wv = &g->values[v];
  wh__shape want = stored_shape(m);
  if ((int)m->dtype != (int)wv->dtype || !wh__shape_eq(&want, &wv->shape)) {
    char a[160], b[160];
    wh__shape_str(&wv->shape, a, sizeof a);
    wh__shape_str(&want, b, sizeof b);
    return lfail(L, WH_ERR_CORRUPT, "node %d (%s): inferred %s%s, the file says %s%s", k, d->name,
                 wh__dtype_name(wv->dtype), a, wh__dtype_name((wh_dtype)m->dtype), b);
  }
  if ((int)m->role != (int)wv->role)
    return lfail(L, WH_ERR_CORRUPT, "node %d (%s): output role %s, the file says %s", k, d->name,
                 role_name(wv->role), role_name(m->role));
  if (m->has_name && !(wv->name = strdup(m->name)))
    return lfail(L, WH_ERR_OUT_OF_MEMORY, "value %d: out of memory", (int)v);
  wv->scope = m->scope;
  wv->keep = m->keep;
  return WH_OK;
}

static int cmp_name(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

static wh_status check_names(loader *L) {
  size_t nv = L->m->n_values, k = 0;
  const char **names = malloc((nv ? nv : 1) * sizeof *names);
  if (!names) return lfail(L, WH_ERR_OUT_OF_MEMORY, "out of memory checking names");
  for (size_t i = 0; i < nv; i++)
    if (L->m->values[i]->has_name) names[k++] = L->m->values[i]->name;
  qsort(names, k, sizeof *names, cmp_name);
  for (size_t i = 1; i < k; i++)
    if (strcmp(names[i - 1], names[i]) == 0) {
      wh_status st = lfail(L, WH_ERR_CORRUPT, "the name '%.64s' is used by two values", names[i]);
      free(names);
      return st;
    }
  free(names);
  return WH_OK;
}

static wh_status load_scopes(loader *L) {
  wh_graph *g = L->g;
  int ns = (int)L->m->n_scopes, stages = 0;
  for (int i = 0; i < ns; i++) {
    const Whale__Scope *s = L->m->scopes[i];
    int kind = (int)s->kind;
    if (kind != WH_HINT_REPLICATE && kind != WH_HINT_SPLIT && kind != WH_HINT_STAGE && kind != WH_HINT_RECOMPUTE)
      return lfail(L, WH_ERR_CORRUPT, "scope %d: unknown kind %d", i, kind);
    if (s->parent < -1 || s->parent >= i)
      return lfail(L, WH_ERR_CORRUPT, "scope %d: parent %d is not an earlier scope", i, (int)s->parent);
    if (kind == WH_HINT_STAGE) {
      if (s->n != stages)
        return lfail(L, WH_ERR_CORRUPT, "scope %d: stage index %d, expected %d", i, (int)s->n, stages);
      stages++;
      for (int32_t p = s->parent; p >= 0; p = L->m->scopes[p]->parent)
        if ((int)L->m->scopes[p]->kind == WH_HINT_STAGE)
          return lfail(L, WH_ERR_CORRUPT, "scope %d: a stage nested in stage scope %d", i, (int)p);
    } else if (s->n < 1) {
      return lfail(L, WH_ERR_CORRUPT, "scope %d: n = %d, must be >= 1", i, (int)s->n);
    }
  }
  if (L->m->n_stages != stages)
    return lfail(L, WH_ERR_CORRUPT, "%d stages recorded, %d stage scopes stored", (int)L->m->n_stages, stages);
  if (ns) {
    wh__scope *sc = realloc(g->scopes, (size_t)ns * sizeof *sc);
    if (!sc) return lfail(L, WH_ERR_OUT_OF_MEMORY, "out of memory for %d scopes", ns);
    g->scopes = sc;
    g->cap_scopes = ns;
    for (int i = 0; i < ns; i++)
      sc[i] = (wh__scope){(wh_hint_kind)L->m->scopes[i]->kind, L->m->scopes[i]->n, L->m->scopes[i]->parent};
    g->n_scopes = ns;
  }
  g->n_stages = stages;
  return WH_OK;
}

static wh_status load_grads(loader *L) {
  wh_graph *g = L->g;
  const Whale__Graph *m = L->m;
  int nv = g->n_values;
  if (m->loss < -1 || m->loss >= nv) return lfail(L, WH_ERR_CORRUPT, "loss is value %d of %d", (int)m->loss, nv);
  if (!m->has_grad_map) {
    if (m->n_grad != 0 || m->n_grads != 0) return lfail(L, WH_ERR_CORRUPT, "gradients stored without a gradient map");
    g->loss = m->loss;
    return WH_OK;
  }
  if (m->n_grad < 0 || m->n_grad > nv)
    return lfail(L, WH_ERR_CORRUPT, "gradient map of %d entries for %d values", (int)m->n_grad, nv);
  int32_t *gr = malloc((size_t)(nv ? nv : 1) * sizeof *gr);
  if (!gr) return lfail(L, WH_ERR_OUT_OF_MEMORY, "out of memory for the gradient map");
  for (int i = 0; i < nv; i++) gr[i] = -1;
  g->grad = gr; /* owned by the graph from here */
  g->n_grad = m->n_grad;
  for (size_t i = 0; i < m->n_grads; i++) {
    const Whale__GradPair *p = m->grads[i];
    if (p->value < 0 || p->value >= m->n_grad || p->grad < 0 || p->grad >= nv)
      return lfail(L, WH_ERR_CORRUPT, "gradient entry %zu maps value %d to %d (map of %d, %d values)", i,
                   (int)p->value, (int)p->grad, (int)m->n_grad, nv);
    if (gr[p->value] != -1)
      return lfail(L, WH_ERR_CORRUPT, "gradient of value %d stored twice", (int)p->value);
    gr[p->value] = p->grad;
  }
  g->loss = m->loss;
  return WH_OK;
}

static wh_status build(loader *L) {
  const Whale__Graph *m = L->m;
  wh_graph *g = L->g;
  if (!m->magic || strcmp(m->magic, GRAPH_MAGIC) != 0)
    return lfail(L, WH_ERR_CORRUPT, "not a libwhale graph (magic '%.32s')", m->magic ? m->magic : "");
  if (m->format_version != GRAPH_FORMAT)
    return lfail(L, m->format_version > GRAPH_FORMAT ? WH_ERR_UNSUPPORTED : WH_ERR_CORRUPT,
                 "format version %u, this build reads %u", (unsigned)m->format_version, GRAPH_FORMAT);
  if (m->end_marker != END_MARKER) return lfail(L, WH_ERR_CORRUPT, "truncated (no end marker)");
  if (m->n_values > MAX_ITEMS || m->n_nodes > MAX_ITEMS || m->n_scopes > MAX_ITEMS || m->n_grads > MAX_ITEMS)
    return lfail(L, WH_ERR_CORRUPT, "implausible counts (%zu values, %zu nodes, %zu scopes)", m->n_values,
                 m->n_nodes, m->n_scopes);
  if (m->micro_batches < 0) return lfail(L, WH_ERR_CORRUPT, "micro_batches = %d", (int)m->micro_batches);

  wh_status st = load_scopes(L);
  for (int i = 0; st == WH_OK && i < (int)m->n_values; i++) st = check_value(L, i);
  if (st == WH_OK) st = check_names(L);
  for (int k = 0; st == WH_OK && k < (int)m->n_nodes; k++) st = add_node(L, k);
  if (st == WH_OK) st = make_leaves(L);
  if (st == WH_OK && g->n_values != (int)m->n_values) {
    int i = g->n_values;
    st = lfail(L, WH_ERR_CORRUPT, "value %d names node %d as its producer, which does not produce it", i,
               (int)m->values[i]->producer);
  }
  if (st == WH_OK) st = load_grads(L);
  if (st != WH_OK) return st;
  g->has_optimizer = m->has_optimizer;
  g->micro_batches = m->micro_batches;
  g->cur_scope = -1;
  g->cur_phase = WH_PHASE_FORWARD;
  g->cur_fwd = -1;
  return WH_OK;
}

wh_status wh_graph_load(wh_ctx *ctx, const char *path, wh_graph **out) {
  if (!ctx) return WH_ERR_INVALID_ARGUMENT;
  if (!out || !path) {
    wh__ctx_set_error(ctx, "wh_graph_load: %s is NULL", out ? "path" : "out");
    return WH_ERR_INVALID_ARGUMENT;
  }
  *out = NULL;
  wh_graph *g = NULL;
  wh_status st = wh_graph_create(ctx, &g);
  if (st != WH_OK) return st;
  loader L = {g, path, NULL};
  uint8_t *buf = NULL;
  size_t len = 0;
  int err = 0;
  st = wh__read_file(path, &buf, &len, &err);
  if (st != WH_OK) {
    if (st == WH_ERR_IO) lfail(&L, st, "cannot read: %s", strerror(err));
    else lfail(&L, st, "out of memory reading the file");
    wh_graph_destroy(g);
    return st;
  }
  Whale__Graph *m = whale__graph__unpack(NULL, len, buf);
  free(buf);
  if (!m) {
    st = lfail(&L, WH_ERR_CORRUPT, "not a valid protobuf graph message (%zu bytes; truncated or corrupt)", len);
    wh_graph_destroy(g);
    return st;
  }
  L.m = m;
  st = build(&L);
  whale__graph__free_unpacked(m, NULL);
  if (st != WH_OK) {
    wh_graph_destroy(g);
    return st;
  }
  *out = g;
  return WH_OK;
}
