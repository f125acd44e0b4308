/* dump.c - readable dumps of a graph: one line per value/node in creation order, or Graphviz DOT.
 * Output grows in a heap string, so nothing is ever truncated; the caller frees it with wh_free. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/ctx.h"
#include "ir.h"

typedef struct sbuf {
  char *p;
  size_t len, cap;
  int oom;
} sbuf;

static int sb_reserve(sbuf *b, size_t extra) {
  if (b->oom) return 0;
  if (b->len + extra + 1 <= b->cap) return 1;
  size_t nc = b->cap ? b->cap : 256;
  while (nc < b->len + extra + 1) {
    if (nc > SIZE_MAX / 2) {
      b->oom = 1;
      return 0;
    }
    nc *= 2;
  }
  char *np = realloc(b->p, nc);
  if (!np) {
    b->oom = 1;
    return 0;
  }
  b->p = np;
  b->cap = nc;
  return 1;
}

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char tmp[256];
  int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  if (n < 0) {
    b->oom = 1;
    return;
  }
  if (!sb_reserve(b, (size_t)n)) return;
  if ((size_t)n < sizeof tmp) {
    memcpy(b->p + b->len, tmp, (size_t)n + 1);
  } else {
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
  }
  b->len += (size_t)n;
}

static void sb_puts(sbuf *b, const char *s) {
  size_t n = strlen(s);
  if (!sb_reserve(b, n)) return;
  memcpy(b->p + b->len, s, n + 1);
  b->len += n;
}

/* A quoted string with ", \ and non-printable bytes escaped (valid in both text and DOT). */
static void sb_quoted(sbuf *b, const char *s) {
  sb_puts(b, "\"");
  for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
    if (*c == '"' || *c == '\\') sb_printf(b, "\\%c", *c);
    else if (*c < 0x20 || *c == 0x7f) sb_printf(b, "\\\\x%02x", *c);
    else sb_printf(b, "%c", *c);
  }
  sb_puts(b, "\"");
}

static void sb_shape(sbuf *b, wh_dtype dt, const wh__shape *s) {
  sb_printf(b, "%s[", wh__dtype_name(dt));
  for (int i = 0; i < s->ndim && i < WH_MAX_DIMS; i++) {
    const char *sep = i ? "," : "";
    if (s->d[i] == -1) sb_printf(b, "%sB", sep);
    else if (s->d[i] < 0) sb_printf(b, "%s%lldB", sep, (long long)-s->d[i]);
    else sb_printf(b, "%s%lld", sep, (long long)s->d[i]);
  }
  sb_puts(b, "]");
}

static const char *op_name(int op) { return op >= 0 && op < WH_OP_COUNT && wh__ops[op]->name ? wh__ops[op]->name : "?"; }

static const char *role_name(wh__role r) {
  switch (r) {
    case WH_ROLE_INPUT: return "input";
    case WH_ROLE_PARAM: return "param";
    case WH_ROLE_CONST: return "const";
    case WH_ROLE_ACT: return "act";
    case WH_ROLE_GRAD: return "grad";
    case WH_ROLE_STATE: return "state";
    case WH_ROLE_BUFFER: return "buffer";
  }
  return "?";
}

static const char *phase_name(wh__phase p) {
  switch (p) {
    case WH_PHASE_FORWARD: return "fwd";
    case WH_PHASE_BACKWARD: return "bwd";
    case WH_PHASE_UPDATE: return "upd";
  }
  return "?";
}

static const char *hint_name(wh_hint_kind k) {
  switch (k) {
    case WH_HINT_REPLICATE: return "replicate";
    case WH_HINT_SPLIT: return "split";
    case WH_HINT_STAGE: return "stage";
    case WH_HINT_RECOMPUTE: return "recompute";
  }
  return "?";
}

static const char *init_name(wh_init_kind k) {
  static const char *names[] = {"zeros", "ones", "constant", "normal", "uniform", "xavier_uniform",
                                "xavier_normal", "kaiming_uniform", "kaiming_normal"};
  return (unsigned)k <= WH_INIT_KAIMING_NORMAL ? names[k] : "?";
}

static int valid_scope(const wh_graph *g, int32_t s) { return s >= 0 && s < g->n_scopes; }

static void sb_scope_ref(sbuf *b, const wh_graph *g, int32_t s) {
  if (valid_scope(g, s)) sb_printf(b, "%s#%d", hint_name(g->scopes[s].kind), (int)s);
  else sb_printf(b, "?#%d", (int)s);
}

/* ------------------------------------------------------------------- text */

static void text_data(sbuf *b, const wh__value *v) {
  int64_t n = wh__numel(&v->shape, 1);
  sb_puts(b, " data=[");
  for (int64_t i = 0; i < n && i < 8; i++) {
    if (i) sb_puts(b, ", ");
    if (v->dtype == WH_F32) sb_printf(b, "%.9g", (double)((const float *)v->data)[i]);
    else if (v->dtype == WH_I32) sb_printf(b, "%d", ((const int32_t *)v->data)[i]);
    else sb_puts(b, "?");
  }
  sb_puts(b, n > 8 ? ", ...]" : "]");
}

static void text_leaf(sbuf *b, const wh_graph *g, int i) {
  const wh__value *v = &g->values[i];
  sb_printf(b, "%%%d = %s ", i, role_name(v->role));
  if (v->name) {
    sb_quoted(b, v->name);
    sb_puts(b, " ");
  }
  sb_shape(b, v->dtype, &v->shape);
  if (v->role == WH_ROLE_PARAM) {
    const wh_init *in = &v->init;
    sb_printf(b, " init=%s", init_name(in->kind));
    if (in->a != 0) sb_printf(b, " a=%.9g", (double)in->a);
    if (in->b != 0) sb_printf(b, " b=%.9g", (double)in->b);
    sb_printf(b, " seed=%llu", (unsigned long long)in->seed);
    if (in->fan_in) sb_printf(b, " fan_in=%lld", (long long)in->fan_in);
    if (in->fan_out) sb_printf(b, " fan_out=%lld", (long long)in->fan_out);
    if (v->data) sb_puts(b, " data=stored");
  } else if (v->data && wh__shape_symbolic_count(&v->shape) == 0) {
    text_data(b, v);
  }
  if (v->keep) sb_puts(b, " keep");
  if (v->scope >= 0) {
    sb_puts(b, " scope=");
    sb_scope_ref(b, g, v->scope);
  }
  sb_puts(b, "\n");
}

static void text_node(sbuf *b, const wh_graph *g, int k) {
  const wh__node *n = &g->nodes[k];
  if (n->out >= 0) sb_printf(b, "%%%d = ", (int)n->out);
  else sb_puts(b, "_ = ");
  sb_printf(b, "%s(", op_name(n->op));
  for (int i = 0; i < n->n_in; i++) sb_printf(b, "%s%%%d", i ? ", " : "", (int)n->in[i]);
  sb_puts(b, ")");
  if (n->n_ia > 0) {
    sb_puts(b, " ia=[");
    for (int i = 0; i < n->n_ia && i < WH_MAX_IATTR; i++) sb_printf(b, "%s%lld", i ? "," : "", (long long)n->ia[i]);
    sb_puts(b, "]");
  }
  if (n->n_fa > 0) {
    sb_puts(b, " fa=[");
    for (int i = 0; i < n->n_fa && i < WH_MAX_FATTR; i++) sb_printf(b, "%s%.9g", i ? "," : "", n->fa[i]);
    sb_puts(b, "]");
  }
  sb_puts(b, " : ");
  const wh__value *v = n->out >= 0 && n->out < g->n_values ? &g->values[n->out] : NULL;
  if (v) sb_shape(b, v->dtype, &v->shape);
  else sb_puts(b, "none");
  sb_printf(b, " #%d %s", k, phase_name(n->phase));
  if (n->fwd >= 0) sb_printf(b, " of #%d", (int)n->fwd);
  if (n->scope >= 0) {
    sb_puts(b, " scope=");
    sb_scope_ref(b, g, n->scope);
  }
  if (v && v->name) {
    sb_puts(b, " name=");
    sb_quoted(b, v->name);
  }
  if (v && v->keep) sb_puts(b, " keep");
  sb_puts(b, "\n");
}

/* Walk values and nodes in creation order: a node's leaves (ids below its output, or below its
 * largest input for nodes without output) come before it. */
typedef void (*leaf_fn)(sbuf *b, const wh_graph *g, int i);
typedef void (*node_fn)(sbuf *b, const wh_graph *g, int k);

static void walk(sbuf *b, const wh_graph *g, leaf_fn lf, node_fn nf) {
  int vi = 0;
  for (int k = 0; k < g->n_nodes; k++) {
    const wh__node *n = &g->nodes[k];
    int target = n->out;
    if (target < 0)
      for (int i = 0; i < n->n_in; i++)
        if (n->in[i] + 1 > target) target = n->in[i] + 1;
    if (target > g->n_values) target = g->n_values;
    for (; vi < target; vi++)
      if (g->values[vi].producer < 0) lf(b, g, vi);
    nf(b, g, k);
    if (n->out >= vi) vi = n->out + 1;
  }
  for (; vi < g->n_values; vi++)
    if (g->values[vi].producer < 0) lf(b, g, vi);
}

static void dump_text(sbuf *b, const wh_graph *g) {
  sb_printf(b, "graph: %d values, %d nodes, %d scopes, stages=%d, micro_batches=%d, loss=", g->n_values, g->n_nodes,
            g->n_scopes, g->n_stages, g->micro_batches);
  if (g->loss >= 0) sb_printf(b, "%%%d", (int)g->loss);
  else sb_puts(b, "none");
  sb_printf(b, ", optimizer=%s\n", g->has_optimizer ? "yes" : "no");
  if (g->status != WH_OK) {
    sb_printf(b, "poisoned: %s: ", wh_status_str(g->status));
    sb_quoted(b, g->err);
    sb_puts(b, "\n");
  }
  for (int i = 0; i < g->n_scopes; i++) {
    const wh__scope *s = &g->scopes[i];
    sb_puts(b, "scope ");
    sb_scope_ref(b, g, i);
    if (s->kind == WH_HINT_STAGE) sb_printf(b, ": stage %d", s->n);
    else sb_printf(b, ": n=%d", s->n);
    if (s->parent >= 0) {
      sb_puts(b, " in ");
      sb_scope_ref(b, g, s->parent);
    }
    sb_puts(b, "\n");
  }
  walk(b, g, text_leaf, text_node);
  for (int i = 0; g->grad && i < g->n_grad && i < g->n_values; i++)
    if (g->grad[i] >= 0) sb_printf(b, "grad %%%d = %%%d\n", i, (int)g->grad[i]);
}

/* -------------------------------------------------------------------- dot */

/* The stage scope enclosing s (itself or an ancestor), or -1. */
static int32_t stage_of(const wh_graph *g, int32_t s) {
  for (int guard = 0; valid_scope(g, s) && guard <= g->n_scopes; guard++, s = g->scopes[s].parent)
    if (g->scopes[s].kind == WH_HINT_STAGE) return s;
  return -1;
}

static const char *leaf_fill(wh__role r) {
  switch (r) {
    case WH_ROLE_INPUT: return "lightblue";
    case WH_ROLE_PARAM: return "lightyellow";
    case WH_ROLE_CONST: return "lightgray";
    case WH_ROLE_STATE: return "lavender";
    default: return "white";
  }
}

static void dot_leaf(sbuf *b, const wh_graph *g, int i) {
  const wh__value *v = &g->values[i];
  char lbl[32];
  snprintf(lbl, sizeof lbl, "%%%d %s", i, role_name(v->role));
  sb_printf(b, "  v%d [shape=box, style=filled, fillcolor=%s, label=\"%s", i, leaf_fill(v->role), lbl);
  if (v->name) {
    /* the quoted name without its quotes: sb_quoted escapes for DOT too */
    sbuf q = {0};
    sb_quoted(&q, v->name);
    if (q.oom) b->oom = 1;
    else {
      q.p[q.len - 1] = 0;
      sb_printf(b, " %s", q.p + 1);
    }
    free(q.p);
  }
  sb_puts(b, "\\n");
  sb_shape(b, v->dtype, &v->shape);
  sb_puts(b, "\"];\n");
}

static void dot_node(sbuf *b, const wh_graph *g, int k) {
  const wh__node *n = &g->nodes[k];
  const char *color = n->phase == WH_PHASE_BACKWARD ? "firebrick" : n->phase == WH_PHASE_UPDATE ? "royalblue" : "black";
  sb_printf(b, "  n%d [shape=ellipse, color=%s, fontcolor=%s, label=\"#%d %s\\n", k, color, color, k, op_name(n->op));
  if (n->out >= 0 && n->out < g->n_values) {
    const wh__value *v = &g->values[n->out];
    sb_printf(b, "%%%d ", (int)n->out);
    sb_shape(b, v->dtype, &v->shape);
  } else {
    sb_puts(b, "(update)");
  }
  sb_puts(b, "\"];\n");
}

static void dot_edges(sbuf *b, const wh_graph *g) {
  for (int k = 0; k < g->n_nodes; k++) {
    const wh__node *n = &g->nodes[k];
    for (int i = 0; i < n->n_in; i++) {
      int32_t v = n->in[i];
      if (v < 0 || v >= g->n_values) continue;
      int32_t p = g->values[v].producer;
      if (p >= 0) sb_printf(b, "  n%d -> n%d", (int)p, k);
      else sb_printf(b, "  v%d -> n%d", (int)v, k);
      if (n->phase == WH_PHASE_BACKWARD) sb_puts(b, " [color=firebrick]");
      else if (n->phase == WH_PHASE_UPDATE) sb_puts(b, " [color=royalblue]");
      sb_puts(b, ";\n");
    }
  }
}

static void dump_dot(sbuf *b, const wh_graph *g) {
  sb_puts(b, "digraph whale {\n  rankdir=TB;\n  node [fontname=\"monospace\", fontsize=10];\n");
  /* stage clusters first, then everything outside a stage */
  for (int32_t s = -1; s < g->n_scopes; s++) {
    if (s >= 0 && g->scopes[s].kind != WH_HINT_STAGE) continue;
    if (s >= 0)
      sb_printf(b, "  subgraph cluster_stage%d {\n    label=\"stage %d\";\n    style=rounded;\n    color=gray;\n", (int)s,
                g->scopes[s].n);
    for (int i = 0; i < g->n_values; i++)
      if (g->values[i].producer < 0 && stage_of(g, g->values[i].scope) == s) dot_leaf(b, g, i);
    for (int k = 0; k < g->n_nodes; k++)
      if (stage_of(g, g->nodes[k].scope) == s) dot_node(b, g, k);
    if (s >= 0) sb_puts(b, "  }\n");
  }
  dot_edges(b, g);
  sb_puts(b, "}\n");
}

wh_status wh_graph_dump(const wh_graph *g, wh_format fmt, char **out) {
  if (out) *out = NULL;
  if (!g || !out) return WH_ERR_INVALID_ARGUMENT;
  if (fmt != WH_FORMAT_TEXT && fmt != WH_FORMAT_DOT) {
    wh__ctx_set_error(g->ctx, "wh_graph_dump: unknown format %d", (int)fmt);
    return WH_ERR_INVALID_ARGUMENT;
  }
  sbuf b = {0};
  if (fmt == WH_FORMAT_TEXT) dump_text(&b, g);
  else dump_dot(&b, g);
  if (!b.oom && !b.p) sb_puts(&b, "");
  if (b.oom) {
    free(b.p);
    wh__ctx_set_error(g->ctx, "wh_graph_dump: out of memory");
    return WH_ERR_OUT_OF_MEMORY;
  }
  *out = b.p;
  return WH_OK;
}

void wh_free(void *p) { free(p); }
