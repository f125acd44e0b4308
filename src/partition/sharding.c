/* sharding.c - operator sharding (tensor parallelism) inside a replica: the partitioner that
 * rewrites a rank's program into its shard.
 *
 * The partitioner first pairs matrix products the way Megatron-LM does: a product by a weight
 * whose output flows, through bias, activation or attention, only into a second product by a
 * weight, is split by columns (output features; by heads through attention) and the second by rows
 * (its input features), so the pair needs one all-reduce forward and one backward. Then it walks the
 * program in order, forward, backward and update alike, and asks each node's sharding rule (the op
 * registry, src/ir/shard.c) which layouts its inputs must have; where a value's layout differs it
 * inserts the conversion: an all-reduce of partial sums, an all-gather of a split value, or a local
 * slice of a whole one. Conversions are made once per value and layout. Every other parameter
 * takes the layout its first reader asks for (a bias after a column-split product is split with
 * it) and optimizer state follows its parameter. A rule that knows nothing of sharding gets its
 * inputs whole: the result is always the one-device arithmetic, only the cost changes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "program.h"

typedef struct {
  int32_t v;
  wh__layout l;
  int upd;
  int32_t out;
} conv_entry;

typedef struct {
  const wh_graph *g;
  int tp, index;
  wh__value *vals;
  wh__layout *lay;
  char *fixed;        /* per value: layout decided */
  int nv, capv;
  wh__node *nodes;
  int nn, capn;
  conv_entry *cache;
  int nc, capc;
  int n_ar, n_ag, n_sl;
} builder;

/* Room for need values, their layouts and their decided flags. */
static int grow_values(builder *b, int need) {
  int capl = b->capv, capf = b->capv;
  return wh__grow((void **)&b->lay, &capl, need, sizeof(wh__layout)) && wh__grow((void **)&b->fixed, &capf, need, 1) &&
         wh__grow((void **)&b->vals, &b->capv, need, sizeof(wh__value));
}

static wh_status push(builder *b, const wh__node *n, const int32_t *in) {
  wh_status st = wh__nodes_push(&b->nodes, &b->nn, &b->capn, n, in);
  if (st == WH_OK && n->out >= 0) b->vals[n->out].producer = b->nn - 1;
  return st;
}

static const wh__layout LR = {WH_LAY_R, 0, 1};

/* One conversion node op(v) with attributes ia, output in layout l, run with consumer c. */
static int32_t emit(builder *b, int op, int32_t v, const int64_t *ia, int nia, wh__layout l, const wh__node *c) {
  if (!grow_values(b, b->nv + 1)) return -1;
  int32_t o = b->nv++;
  b->vals[o] = b->vals[v];
  b->vals[o].name = NULL;
  b->vals[o].keep = 0;
  b->vals[o].data = NULL;
  if (wh__role_persistent(b->vals[o].role)) b->vals[o].role = WH_ROLE_ACT;
  b->lay[o] = l;
  b->fixed[o] = 1;
  wh__node n;
  memset(&n, 0, sizeof n);
  n.op = op;
  n.n_in = 1;
  n.out = o;
  for (int i = 0; i < nia; i++) n.ia[i] = ia[i];
  n.n_ia = nia;
  n.phase = c->phase;
  n.fwd = c->fwd;
  n.scope = c->scope;
  int32_t in[1] = {v};
  if (push(b, &n, in) != WH_OK) return -1;
  return o;
}

static int32_t cached(const builder *b, int32_t v, wh__layout l, int upd) {
  for (int i = 0; i < b->nc; i++)
    if (b->cache[i].v == v && b->cache[i].upd == upd && wh__lay_eq(b->cache[i].l, l)) return b->cache[i].out;
  return -1;
}

static int remember(builder *b, int32_t v, wh__layout l, int upd, int32_t out) {
  if (!wh__grow((void **)&b->cache, &b->capc, b->nc + 1, sizeof(conv_entry))) return 0;
  b->cache[b->nc++] = (conv_entry){v, l, upd, out};
  return 1;
}

/* v in layout want for consumer c: the value itself, or a conversion of it. Gradients read in the
 * update phase are the reduced sums of the step, so their conversions are made apart. */
static int32_t convert(builder *b, int32_t v, wh__layout want, const wh__node *c) {
  if (wh__lay_eq(b->lay[v], want)) return v;
  int upd = c->phase == WH_PHASE_UPDATE;
  int32_t hit = cached(b, v, want, upd);
  if (hit >= 0) return hit;
  int32_t cur = v;
  wh__layout l = b->lay[v];
  if (l.kind == WH_LAY_P) {
    if ((hit = cached(b, v, LR, upd)) >= 0) cur = hit;
    else if ((cur = emit(b, WH_OP_TP_ALLREDUCE, cur, NULL, 0, LR, c)) < 0 || !remember(b, v, LR, upd, cur)) return -1;
    else b->n_ar++;
    l = LR;
  }
  if (l.kind == WH_LAY_S) {
    int64_t ia[3] = {l.dim, l.groups, b->tp};
    if ((hit = cached(b, v, LR, upd)) >= 0) cur = hit;
    else if ((cur = emit(b, WH_OP_TP_ALLGATHER, cur, ia, 3, LR, c)) < 0 || !remember(b, v, LR, upd, cur)) return -1;
    else b->n_ag++;
    l = LR;
  }
  if (want.kind == WH_LAY_S) {
    int64_t ia[4] = {want.dim, want.groups, b->tp, b->index};
    if ((cur = emit(b, WH_OP_TP_SLICE, cur, ia, 4, want, c)) < 0) return -1;
    b->n_sl++;
  } else if (want.kind == WH_LAY_P) {
    return -2; /* a rule asked for partial sums of a value that has none: a bug in the rule */
  }
  if (!remember(b, v, want, upd, cur)) return -1;
  return cur;
}

static void fix(builder *b, int32_t v, wh__layout l) {
  b->lay[v] = l;
  b->fixed[v] = 1;
}

/* A weight that can start or end a pair: a 2-D parameter read by one forward node. */
static int pair_weight(const builder *b, int32_t w, const int *uses) {
  const wh__value *val = &b->g->values[w];
  return val->role == WH_ROLE_PARAM && val->shape.ndim == 2 && uses[w] == 1 && !b->fixed[w];
}

static wh_status choose_pairs(builder *b) {
  const wh_graph *g = b->g;
  int *uses = calloc((size_t)g->n_values + 1, sizeof(int)), *user = calloc((size_t)g->n_values + 1, sizeof(int));
  char *claimed = calloc((size_t)g->n_nodes + 1, 1);
  if (!uses || !user || !claimed) {
    free(uses), free(user), free(claimed);
    return WH_ERR_OUT_OF_MEMORY;
  }
  for (int i = 0; i < g->n_nodes; i++) {
    const wh__node *n = &g->nodes[i];
    if (n->phase != WH_PHASE_FORWARD) continue;
    for (int k = 0; k < n->n_in; k++) uses[n->in[k]]++, user[n->in[k]] = i;
  }
  for (int i = 0; i < g->n_nodes; i++) {
    const wh__node *n = &g->nodes[i];
    if (n->phase != WH_PHASE_FORWARD || n->op != WH_OP_MATMUL || claimed[i] || !pair_weight(b, n->in[1], uses)) continue;
    int32_t w1 = n->in[1], v = n->out;
    int bn = n->ia[1] ? 0 : 1, attn = 0, j = -1, ok = 0;
    for (int steps = 0; steps < 16 && uses[v] == 1 && g->values[v].shape.ndim >= 2; steps++) {
      j = user[v];
      const wh__node *c = &g->nodes[j];
      int last = g->values[v].shape.ndim - 1;
      if (c->op == WH_OP_BIAS_ADD && c->in[0] == v && c->ia[0] == last) {
        v = c->out;
      } else if (c->op == WH_OP_RELU || c->op == WH_OP_GELU || c->op == WH_OP_TANH || c->op == WH_OP_SIGMOID) {
        v = c->out;
      } else if (c->op == WH_OP_ATTENTION && !attn && c->ia[0] % b->tp == 0) {
        attn = 1;
        v = c->out;
      } else {
        ok = c->op == WH_OP_MATMUL && c->in[0] == v && c->ia[0] == 0 && c->in[1] != w1 && pair_weight(b, c->in[1], uses);
        break;
      }
    }
    if (!ok) continue;
    const wh__node *m2 = &g->nodes[j];
    int32_t w2 = m2->in[1];
    int g1 = attn ? 3 : 1, bk = m2->ia[1] ? 1 : 0;
    if (!wh__lay_can_split(&g->values[w1].shape, bn, g1, b->tp) || !wh__lay_can_split(&g->values[w2].shape, bk, 1, b->tp))
      continue;
    fix(b, w1, (wh__layout){WH_LAY_S, (int8_t)bn, (int8_t)g1});
    fix(b, w2, (wh__layout){WH_LAY_S, (int8_t)bk, 1});
    claimed[j] = 1;
  }
  /* the output layer: a product by a weight whose logits go only to the cross-entropy is split
   * by classes (the sharded cross-entropy never gathers them); a tied input embedding of the same
   * weight is then split by vocabulary rows too */
  for (int i = 0; i < g->n_nodes; i++) {
    const wh__node *n = &g->nodes[i];
    if (n->phase != WH_PHASE_FORWARD || n->op != WH_OP_CROSS_ENTROPY) continue;
    int32_t lg = n->in[0], pr = g->values[lg].producer;
    if (pr < 0 || uses[lg] != 1) continue;
    const wh__node *mm = &g->nodes[pr];
    int32_t w = mm->in[1];
    if (mm->op != WH_OP_MATMUL || mm->ia[0] || b->fixed[w] || g->values[w].role != WH_ROLE_PARAM ||
        g->values[w].shape.ndim != 2)
      continue;
    int bn = mm->ia[1] ? 0 : 1, others = 0;
    for (int j = 0; j < g->n_nodes; j++) {
      const wh__node *u = &g->nodes[j];
      if (u->phase != WH_PHASE_FORWARD || j == pr) continue;
      for (int k = 0; k < u->n_in; k++)
        if (u->in[k] == w && !(u->op == WH_OP_EMBEDDING && k == 0 && bn == 0)) others = 1;
    }
    if (!others && wh__lay_can_split(&g->values[w].shape, bn, 1, b->tp)) fix(b, w, (wh__layout){WH_LAY_S, (int8_t)bn, 1});
  }
  free(uses), free(user), free(claimed);
  return WH_OK;
}

wh_status wh__program_shard(const wh_graph *g, wh__program *p, int tp, int index, wh__layout **lay_out, int *counts,
                            char *msg, size_t cap) {
  builder b;
  memset(&b, 0, sizeof b);
  b.g = g;
  b.tp = tp;
  b.index = index;
  wh_status st = WH_OK;
  if (!grow_values(&b, p->n_values + 16)) st = WH_ERR_OUT_OF_MEMORY;
  if (st == WH_OK) {
    memcpy(b.vals, p->values, sizeof(wh__value) * (size_t)p->n_values);
    b.nv = p->n_values;
    for (int v = 0; v < b.nv; v++) {
      b.lay[v] = LR;
      /* parameters and optimizer state take the layout their first reader asks for */
      b.fixed[v] = b.vals[v].role != WH_ROLE_PARAM && b.vals[v].role != WH_ROLE_STATE;
    }
    st = choose_pairs(&b);
  }
  /* per-node scratch, sized once for the widest node (the clipping node reads every gradient) */
  int wide = 1;
  for (int i = 0; i < p->n_nodes; i++) wide = p->nodes[i].n_in > wide ? p->nodes[i].n_in : wide;
  wh__layout *in_l = malloc(sizeof(wh__layout) * (size_t)wide), *want = malloc(sizeof(wh__layout) * (size_t)wide);
  int32_t *in = malloc(sizeof(int32_t) * (size_t)wide);
  if (!in_l || !want || !in) st = WH_ERR_OUT_OF_MEMORY;
  for (int i = 0; st == WH_OK && i < p->n_nodes; i++) {
    wh__node n = p->nodes[i];
    memcpy(in, n.in, sizeof(int32_t) * (size_t)n.n_in);
    wh__layout out = LR;
    if (n.op == WH_OP_GLOBAL_NORM_CLIP) {
      /* split gradients count their shards (summed over the replica), whole ones count once */
      int ns = 0;
      for (int k = 0; k < n.n_in && st == WH_OK; k++) {
        if (!b.fixed[in[k]]) fix(&b, in[k], LR);
        if (b.lay[in[k]].kind == WH_LAY_P && (in[k] = convert(&b, in[k], LR, &n)) < 0) st = WH_ERR_OUT_OF_MEMORY;
      }
      for (int k = 0; k < n.n_in && st == WH_OK; k++)
        if (b.lay[in[k]].kind == WH_LAY_S) {
          int32_t t = in[k];
          memmove(&in[ns + 1], &in[ns], sizeof(int32_t) * (size_t)(k - ns));
          in[ns++] = t;
        }
      if (ns > 0) {
        n.op = WH_OP_TP_NORM_CLIP;
        n.ia[0] = ns;
        n.n_ia = 1;
      }
    } else {
      for (int k = 0; k < n.n_in; k++) in_l[k] = b.lay[in[k]], want[k] = LR;
      wh__shard_q q = {b.vals, tp, index, in_l, want, LR};
      wh__node orig = n;
      if (wh__ops[n.op]->shard) {
        wh__ops[n.op]->shard(&q, &n);
        /* partial sums the rule will have summed: ask again with them whole, so that the other
         * inputs are not gathered for nothing */
        int again = 0;
        for (int k = 0; k < n.n_in; k++)
          if (in_l[k].kind == WH_LAY_P && want[k].kind == WH_LAY_R) in_l[k] = LR, again = 1;
        if (again) {
          n = orig;
          for (int k = 0; k < n.n_in; k++) want[k] = LR;
          q.out = LR;
          wh__ops[n.op]->shard(&q, &n);
        }
      }
      out = q.out;
      for (int k = 0; k < n.n_in && st == WH_OK; k++) {
        if (!b.fixed[in[k]]) fix(&b, in[k], want[k]); /* a parameter or state read the first time */
        int32_t c = convert(&b, in[k], want[k], &n);
        if (c == -2) {
          snprintf(msg, cap, "node %d (%s): its sharding rule asked for partial sums of input %d", i, wh__ops[n.op]->name, k);
          st = WH_ERR_INTERNAL;
        } else if (c < 0) {
          st = WH_ERR_OUT_OF_MEMORY;
        }
        in[k] = c;
      }
    }
    if (st == WH_OK && n.out >= 0) b.lay[n.out] = out;
    if (st == WH_OK) st = push(&b, &n, in);
  }
  free(in_l), free(want), free(in);
  if (st == WH_OK)
    for (int v = 0; v < b.nv; v++) {
      wh__layout l = b.lay[v];
      if (l.kind == WH_LAY_S && !wh__lay_can_split(&b.vals[v].shape, l.dim, l.groups, tp)) {
        snprintf(msg, cap, "value %d '%s': dimension %d does not split %d ways", v, b.vals[v].name ? b.vals[v].name : "",
                 l.dim, tp);
        st = WH_ERR_INTERNAL;
        break;
      }
      b.vals[v].shape = wh__lay_local(&b.vals[v].shape, l, tp);
    }
  if (st != WH_OK) {
    for (int i = 0; i < b.nn; i++) free(b.nodes[i].in);
    free(b.nodes), free(b.vals), free(b.lay), free(b.fixed), free(b.cache);
    if (st == WH_ERR_OUT_OF_MEMORY) snprintf(msg, cap, "out of memory");
    return st;
  }
  for (int i = 0; i < p->n_nodes; i++) free(p->nodes[i].in);
  free(p->nodes);
  free(p->values);
  p->nodes = b.nodes;
  p->n_nodes = b.nn;
  p->values = b.vals;
  p->n_values = b.nv;
  *lay_out = b.lay;
  counts[0] = b.n_ar, counts[1] = b.n_ag, counts[2] = b.n_sl;
  free(b.fixed), free(b.cache);
  return WH_OK;
}
