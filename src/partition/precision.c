/* precision.c - mixed precision as a pass over a rank's program: activations that backward reads
 * and the gradients that flow between backward nodes are stored in bf16 or fp16. A cast right
 * after the producer makes the narrow copy, so the fp32 value dies at its last forward reader; a
 * cast back right before the first late reader gives the kernels fp32 again, so every product and
 * reduction still accumulates in fp32, and parameters, their gradients and optimizer state stay
 * fp32 (master weights). With fp16 the loss is scaled before backward (its seed multiplied by the
 * session's loss scale) and the gradients unscaled before the optimizer; a gradient that overflowed
 * on any rank skips the step on every rank and halves the scale (runtime/comm_nodes.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "program.h"

typedef struct {
  wh__program *p;
  wh__node *nodes;
  int nn, cap, capv;
  wh_status st;
} rw;

/* A new value like value src (its shape and, under operator sharding, its layout) of dtype dt. */
static int32_t new_value(rw *r, int32_t src, wh_dtype dt) {
  wh__program *p = r->p;
  if (!wh__grow((void **)&p->values, &r->capv, p->n_values + 1, sizeof(wh__value))) {
    r->st = WH_ERR_OUT_OF_MEMORY;
    return -1;
  }
  if (p->lay) {
    wh__layout *l = realloc(p->lay, sizeof(wh__layout) * (size_t)(p->n_values + 1));
    if (!l) {
      r->st = WH_ERR_OUT_OF_MEMORY;
      return -1;
    }
    p->lay = l;
    l[p->n_values] = l[src];
  }
  wh__value *v = &p->values[p->n_values];
  *v = p->values[src];
  v->name = NULL, v->data = NULL, v->keep = 0, v->dtype = dt, v->producer = -1;
  return p->n_values++;
}

static void push(rw *r, const wh__node *n, const int32_t *in) {
  if (r->st == WH_OK) r->st = wh__nodes_push(&r->nodes, &r->nn, &r->cap, n, in);
}

static void cast_node(rw *r, int32_t from, int32_t to, wh_dtype dt, const wh__node *like, wh__phase ph) {
  wh__node c;
  memset(&c, 0, sizeof c);
  c.op = WH_OP_CAST, c.n_in = 1, c.out = to, c.phase = ph, c.fwd = like->fwd, c.scope = -1;
  c.ia[0] = dt, c.n_ia = 1;
  push(r, &c, &from);
}

static void one_node(rw *r, int op, wh__phase ph, const int32_t *in, int n_in, int32_t out, const int64_t *ia, int nia) {
  wh__node c;
  memset(&c, 0, sizeof c);
  c.op = op, c.n_in = n_in, c.out = out, c.phase = ph, c.fwd = -1, c.scope = -1;
  c.n_ia = nia;
  if (nia) memcpy(c.ia, ia, sizeof(int64_t) * (size_t)nia);
  int32_t none = 0;
  push(r, &c, n_in ? in : &none);
}

wh_status wh__program_mixed(const wh_graph *g, wh__program *p, wh_dtype narrow, char *msg, size_t cap) {
  int n = p->n_nodes, nv0 = p->n_values;
  int *prod = malloc(sizeof(int) * (size_t)(nv0 + 1)), *last = malloc(sizeof(int) * (size_t)(nv0 + 1));
  char *late = calloc((size_t)nv0 + 1, 1);                 /* value -> stored narrow */
  int32_t *nar = malloc(sizeof(int32_t) * (size_t)(nv0 + 1)), *wide = malloc(sizeof(int32_t) * (size_t)(nv0 + 1));
  rw r = {p, NULL, 0, 0, p->n_values, WH_OK};
  if (!prod || !last || !late || !nar || !wide) r.st = WH_ERR_OUT_OF_MEMORY;
  for (int v = 0; r.st == WH_OK && v < nv0; v++) prod[v] = last[v] = -1, nar[v] = wide[v] = -1;
  for (int i = 0; r.st == WH_OK && i < n; i++) {
    const wh__node *nd = &p->nodes[i];
    if (nd->out >= 0 && prod[nd->out] < 0) prod[nd->out] = i;
    for (int k = 0; k < nd->n_in; k++) last[nd->in[k]] = i;
  }
  /* what is stored narrow: an fp32 activation with a batch axis that a backward node reads, and a
   * gradient with a batch axis read later than the node after its producer (recomputed copies are
   * made where they are read: nothing to store) */
  for (int i = 0; r.st == WH_OK && i < n; i++) {
    const wh__node *nd = &p->nodes[i];
    if (nd->phase == WH_PHASE_UPDATE) continue;
    for (int k = 0; k < nd->n_in; k++) {
      int32_t v = nd->in[k];
      const wh__value *val = &p->values[v];
      if (prod[v] < 0 || val->dtype != WH_F32 || wh__role_persistent(val->role) || !wh__shape_symbolic_count(&val->shape))
        continue;
      const wh__node *pn = &p->nodes[prod[v]];
      if (pn->op == WH_OP_RESHAPE) continue; /* a view: its root is the one stored */
      if (pn->phase == WH_PHASE_FORWARD && nd->phase == WH_PHASE_BACKWARD) late[v] = 1;
      if (pn->phase == WH_PHASE_BACKWARD && val->role == WH_ROLE_GRAD && last[v] > prod[v] + 1) late[v] = 2;
    }
  }
  int32_t seed = g->loss >= 0 && g->grad && g->loss < g->n_grad ? g->grad[g->loss] : -1;
  int scaled = narrow == WH_F16 && seed >= 0, first_update = 1;
  int32_t seed_s = -1;
  for (int i = 0; r.st == WH_OK && i < n; i++) {
    const wh__node *nd = &p->nodes[i];
    int32_t local[16], *in = nd->n_in <= 16 ? local : malloc(sizeof(int32_t) * (size_t)nd->n_in);
    if (!in) {
      r.st = WH_ERR_OUT_OF_MEMORY;
      break;
    }
    for (int k = 0; k < nd->n_in; k++) {
      int32_t v = nd->in[k];
      in[k] = v;
      if (v < nv0 && nar[v] >= 0 && (late[v] == 2 || nd->phase == WH_PHASE_BACKWARD)) {
        if (wide[v] < 0) { /* the fp32 copy, right before the first late reader */
          wide[v] = new_value(&r, v, WH_F32);
          cast_node(&r, nar[v], wide[v], WH_F32, nd, nd->phase);
        }
        in[k] = wide[v];
      }
      if (scaled && v == seed && nd->phase == WH_PHASE_BACKWARD) { /* fp16: backward starts from S dL */
        if (seed_s < 0) {
          seed_s = new_value(&r, seed, WH_F32);
          if (seed_s >= 0) p->values[seed_s].role = WH_ROLE_ACT;
          one_node(&r, WH_OP_LOSS_SCALE, WH_PHASE_BACKWARD, &seed, 1, seed_s, NULL, 0);
        }
        in[k] = seed_s;
      }
    }
    if (scaled && first_update && nd->phase == WH_PHASE_UPDATE) {
      /* before the optimizer: every parameter's gradient back to the unscaled loss, then agree on
       * whether any overflowed (it skips the step everywhere) */
      first_update = 0;
      for (int v = 0; v < g->n_grad && v < g->n_values; v++)
        if (g->values[v].role == WH_ROLE_PARAM && g->grad[v] >= 0 && !wh__role_persistent(p->values[g->grad[v]].role)) {
          int32_t gv = g->grad[v];
          one_node(&r, WH_OP_GRAD_UNSCALE, WH_PHASE_UPDATE, &gv, 1, gv, NULL, 0);
        }
      int64_t grp = WH_GROUP_WORLD;
      one_node(&r, WH_OP_OVERFLOW_CHECK, WH_PHASE_UPDATE, NULL, 0, -1, &grp, 1);
    }
    push(&r, nd, in);
    if (in != local) free(in);
    int32_t o = nd->out;
    if (r.st == WH_OK && o >= 0 && o < nv0 && late[o] && nar[o] < 0) { /* the narrow copy, right after */
      nar[o] = new_value(&r, o, narrow);
      cast_node(&r, o, nar[o], narrow, nd, nd->phase);
    }
  }
  /* (without an optimizer, gradients stay those of the scaled loss: wh_session_loss_scale says by what) */
  if (r.st == WH_OK) {
    for (int i = 0; i < n; i++) free(p->nodes[i].in);
    free(p->nodes);
    p->nodes = r.nodes, p->n_nodes = r.nn;
    for (int v = 0; v < p->n_values; v++) p->values[v].producer = -1;
    for (int i = p->n_nodes - 1; i >= 0; i--) { /* a value's first writer */
      int32_t o = p->nodes[i].out;
      if (o >= 0 && !wh__role_persistent(p->values[o].role)) p->values[o].producer = i;
    }
  } else {
    for (int i = 0; i < r.nn; i++) free(r.nodes[i].in);
    free(r.nodes);
    snprintf(msg, cap, "out of memory in the precision pass");
  }
  free(prod), free(last), free(late), free(nar), free(wide);
  return r.st;
}
