/* program.c - a graph's nodes in order as a program, one part that a single process runs whole.
 * With recompute, a backward node that reads an activation made inside a recompute scope reads a
 * clone instead: the clone's producer (and, recursively, the producers of its recomputable inputs)
 * is re-run right before that node, so the original activation dies after its last forward use. */
#include "program.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
  const wh_graph *g;
  wh__program *p;
  int cap_values, cap_nodes;
  int32_t *clone_of; /* graph value -> program clone, -1 */
  int32_t *rscope;   /* graph node -> innermost recompute scope it was built in, -1 */
  char *boundary;    /* graph value -> read by a forward node outside its producer's recompute scope */
} builder;

wh_status wh__nodes_push(wh__node **nodes, int *n, int *cap, const wh__node *src, const int32_t *in) {
  if (!wh__grow((void **)nodes, cap, *n + 1, sizeof(wh__node))) return WH_ERR_OUT_OF_MEMORY;
  wh__node *d = &(*nodes)[*n];
  *d = *src;
  d->in = malloc(sizeof(int32_t) * (size_t)(src->n_in ? src->n_in : 1));
  if (!d->in) return WH_ERR_OUT_OF_MEMORY;
  memcpy(d->in, in, sizeof(int32_t) * (size_t)src->n_in);
  (*n)++;
  return WH_OK;
}

static wh_status push_node(builder *b, const wh__node *n, const int32_t *in) {
  return wh__nodes_push(&b->p->nodes, &b->p->n_nodes, &b->cap_nodes, n, in);
}

/* Values made and used inside one recompute scope are recomputed; a scope's outputs (read by
 * forward nodes outside it) are kept, so recomputing one block never reaches into another. */
static int recomputable(const builder *b, int32_t v) {
  if (v >= b->p->n_graph_values) return 0;
  const wh__value *val = &b->g->values[v];
  return val->producer >= 0 && b->rscope[val->producer] >= 0 && !val->keep && !b->boundary[v] &&
         b->g->nodes[val->producer].phase == WH_PHASE_FORWARD;
}

/* The program value holding a recomputed copy of graph value v, scheduling its producer now. */
static wh_status clone(builder *b, int32_t v, int32_t *out) {
  if (b->clone_of[v] >= 0) {
    *out = b->clone_of[v];
    return WH_OK;
  }
  const wh__node *src = &b->g->nodes[b->g->values[v].producer];
  int32_t local[16], *in = src->n_in <= 16 ? local : malloc(sizeof(int32_t) * (size_t)src->n_in);
  if (!in) return WH_ERR_OUT_OF_MEMORY;
  wh_status st = WH_OK;
  for (int k = 0; k < src->n_in && st == WH_OK; k++) {
    in[k] = src->in[k];
    if (recomputable(b, src->in[k])) st = clone(b, src->in[k], &in[k]);
  }
  wh__program *p = b->p;
  if (st == WH_OK && !wh__grow((void **)&p->values, &b->cap_values, p->n_values + 1, sizeof(wh__value)))
    st = WH_ERR_OUT_OF_MEMORY;
  if (st == WH_OK) {
    int32_t nv = p->n_values++;
    p->values[nv] = b->g->values[v];
    p->values[nv].name = NULL;
    p->values[nv].keep = 0;
    p->values[nv].producer = p->n_nodes;
    wh__node n = *src;
    n.out = nv;
    n.phase = WH_PHASE_BACKWARD;
    n.fwd = b->g->values[v].producer; /* the forward node it repeats (pipeline stages follow it) */
    st = push_node(b, &n, in);
    if (st == WH_OK) {
      b->clone_of[v] = nv;
      p->n_recomputed++;
      *out = nv;
    }
  }
  if (in != local) free(in);
  return st;
}

wh_status wh__program_build(const wh_graph *g, int recompute, wh__program *out) {
  memset(out, 0, sizeof *out);
  builder b = {g, out, 0, 0, NULL, NULL, NULL};
  wh_status st = WH_OK;
  out->n_graph_values = g->n_values;
  b.cap_values = g->n_values + 16;
  out->values = malloc(sizeof(wh__value) * (size_t)b.cap_values);
  b.clone_of = malloc(sizeof(int32_t) * (size_t)(g->n_values + 1));
  b.rscope = malloc(sizeof(int32_t) * (size_t)(g->n_nodes + 1));
  b.boundary = calloc((size_t)g->n_values + 1, 1);
  if (!out->values || !b.clone_of || !b.rscope || !b.boundary) st = WH_ERR_OUT_OF_MEMORY;
  if (st == WH_OK) {
    memcpy(out->values, g->values, sizeof(wh__value) * (size_t)g->n_values);
    out->n_values = g->n_values;
    for (int v = 0; v < g->n_values; v++) b.clone_of[v] = -1;
    for (int i = 0; i < g->n_nodes; i++) {
      b.rscope[i] = -1;
      for (int32_t s = g->nodes[i].scope; recompute && s >= 0 && b.rscope[i] < 0; s = g->scopes[s].parent)
        if (g->scopes[s].kind == WH_HINT_RECOMPUTE) b.rscope[i] = s;
    }
    for (int i = 0; i < g->n_nodes; i++) {
      const wh__node *n = &g->nodes[i];
      if (n->phase != WH_PHASE_FORWARD) continue;
      for (int k = 0; k < n->n_in; k++) {
        int32_t pr = g->values[n->in[k]].producer;
        if (pr >= 0 && b.rscope[pr] != b.rscope[i]) b.boundary[n->in[k]] = 1;
      }
    }
  }
  for (int i = 0; st == WH_OK && i < g->n_nodes; i++) {
    const wh__node *n = &g->nodes[i];
    int32_t local[16], *in = n->n_in <= 16 ? local : malloc(sizeof(int32_t) * (size_t)n->n_in);
    if (!in) {
      st = WH_ERR_OUT_OF_MEMORY;
      break;
    }
    for (int k = 0; k < n->n_in && st == WH_OK; k++) {
      in[k] = n->in[k];
      if (n->phase != WH_PHASE_FORWARD && recomputable(&b, n->in[k])) st = clone(&b, n->in[k], &in[k]);
    }
    if (st == WH_OK) st = push_node(&b, n, in);
    if (in != local) free(in);
  }
  free(b.clone_of);
  free(b.rscope);
  free(b.boundary);
  /* one part: every node in order, for the one micro-batch of a single process */
  if (st == WH_OK && (!(out->parts = calloc(1, sizeof(wh__part))) ||
                      !(out->order = malloc(sizeof(int32_t) * (size_t)(out->n_nodes + 1)))))
    st = WH_ERR_OUT_OF_MEMORY;
  if (st == WH_OK) {
    for (int i = 0; i < out->n_nodes; i++) out->order[i] = i;
    out->n_order = out->n_nodes;
    out->parts[0] = (wh__part){0, 0, 1, 0, out->n_nodes, 0};
    out->n_parts = 1;
    out->n_slots = 1;
    out->loss_stage = -1;
  }
  if (st != WH_OK) wh__program_free(out);
  return st;
}

void wh__program_free(wh__program *p) {
  for (int i = 0; p->nodes && i < p->n_nodes; i++) free(p->nodes[i].in);
  free(p->nodes);
  free(p->values);
  free(p->parts);
  free(p->order);
  for (int i = 0; p->splits && i < p->n_splits; i++) free(p->splits[i].ranks);
  free(p->splits);
  free(p->lay);
  free(p->leaf_stage);
  free(p->reader_stages);
  memset(p, 0, sizeof *p);
}
