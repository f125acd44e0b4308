/* partition.c - Graph + Plan -> this rank's Program: its place in the plan, the operator-sharding
 * rewrite, pipeline placement and transfers, gradient accumulation and the reductions, the loss
 * reduction, and the schedule of parts that runs them.
 *
 * The nodes are laid out in the order one micro-batch executes them (then the once-per-step
 * nodes), so the runtime's lifetimes, read in node order, are the execution's. Each part lists the
 * nodes it runs: a compute node runs in every micro-batch, the first micro-batch starts each
 * gradient accumulator (acc = w g) and later ones add to it (acc += w g), the last one starts
 * the gradients' reductions, and the once-per-step part waits for them, hands the sums to the
 * gradients, reduces the loss and updates.
 *
 * Data parallelism: replica r takes rows [offset, offset + share) of every micro-batch and weighs
 * its gradients and loss by share / global batch (the loss is a per-sample mean), so the sum over
 * the replicas is the one-process step. A replica without rows runs no compute at all and adds
 * zeros. The reduction is gradient fusion (buckets all-reduced during backward), the rank-ordered
 * sum of the deterministic mode (partial sums gathered, added in rank order), or ZeRO-1 (each
 * gradient reduce-scattered, this rank's shard of every parameter updated with its shard of the
 * optimizer state, the parameters all-gathered).
 *
 * Pipelines (stages.c places the nodes and finds the transfers): every value made on one stage and
 * read on another is sent the moment it exists and received right before its first reader. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "partition_impl.h"

/* ops.def's program-only ops without a kernel on any backend: the runtime runs those itself */
#define WH__RUNTIME_ALL 0
#define WH__RUNTIME_CPU 0
#define WH__RUNTIME_NONE 1
static const unsigned char runtime_op[WH_OP_COUNT] = {
#define WH_OP(id, name, kind, family, kernel, backends) [WH_OP_##id] = WH__RUNTIME_##backends,
#include "../ir/ops.def"
};

int wh__op_is_runtime(int op) { return op >= 0 && op < WH_OP_COUNT && runtime_op[op]; }

/* ---- the builder */

int32_t wh__pb_value(wh__pb *b, wh_dtype dt, int64_t numel, wh__role role) {
  wh__program *p = b->p;
  if (!wh__grow((void **)&p->values, &b->capv, p->n_values + 1, sizeof(wh__value))) {
    b->st = WH_ERR_OUT_OF_MEMORY;
    return -1;
  }
  wh__value *v = &p->values[p->n_values];
  memset(v, 0, sizeof *v);
  v->dtype = dt;
  v->shape.ndim = 1;
  v->shape.d[0] = numel;
  v->role = role;
  v->producer = -1;
  v->scope = -1;
  return p->n_values++;
}

int32_t wh__pb_node(wh__pb *b, int op, wh__phase ph, int32_t fwd, const int32_t *in, int n_in, int32_t out,
                    const int64_t *ia, int nia, const double *fa, int nfa) {
  if (b->st != WH_OK) return -1;
  wh__node n;
  memset(&n, 0, sizeof n);
  n.op = op;
  n.n_in = n_in;
  n.out = out;
  n.phase = ph;
  n.fwd = fwd;
  n.scope = -1;
  n.n_ia = nia;
  n.n_fa = nfa;
  if (nia) memcpy(n.ia, ia, sizeof(int64_t) * (size_t)nia);
  if (nfa) memcpy(n.fa, fa, sizeof(double) * (size_t)nfa);
  int32_t none = 0;
  b->st = wh__nodes_push(&b->nodes, &b->nn, &b->capn, &n, n_in ? in : &none);
  return b->st == WH_OK ? b->nn - 1 : -1;
}

int32_t wh__pb_copy(wh__pb *b, const wh__node *n) {
  if (b->st != WH_OK) return -1;
  b->st = wh__nodes_push(&b->nodes, &b->nn, &b->capn, n, n->in);
  return b->st == WH_OK ? b->nn - 1 : -1;
}

void wh__pb_seq(wh__pb *b, int32_t node, int when, int half) {
  if (b->st != WH_OK || node < 0) return;
  if (!wh__grow((void **)&b->seq, &b->capseq, b->nseq + 1, sizeof(wh__pb_item))) {
    b->st = WH_ERR_OUT_OF_MEMORY;
    return;
  }
  b->seq[b->nseq++] = (wh__pb_item){node, (int8_t)when, (int8_t)half};
}

void wh__pb_once(wh__pb *b, int32_t node) {
  if (b->st != WH_OK || node < 0) return;
  if (!wh__grow((void **)&b->once, &b->caponce, b->nonce + 1, sizeof(int32_t))) {
    b->st = WH_ERR_OUT_OF_MEMORY;
    return;
  }
  b->once[b->nonce++] = node;
}

static int runs_at(int when, int k, int m) {
  switch (when) {
    case WH_PB_FIRST: return k == 0;
    case WH_PB_LATER: return k > 0;
    case WH_PB_LAST: return k == m - 1;
    default: return 1;
  }
}

/* One part: micro-batch k (-1: the once-per-step nodes) on slot, with the sequence's items of half. */
wh_status wh__pb_part(wh__pb *b, int k, int slot, int feed, int half) {
  wh__program *p = b->p;
  if (b->st != WH_OK) return b->st;
  int capo = p->n_order, capp = p->n_parts;
  if (!wh__grow((void **)&p->parts, &capp, p->n_parts + 1, sizeof(wh__part)) ||
      !wh__grow((void **)&p->order, &capo, p->n_order + (k < 0 ? b->nonce : b->nseq) + 1, sizeof(int32_t)))
    return b->st = WH_ERR_OUT_OF_MEMORY;
  wh__part *pt = &p->parts[p->n_parts++];
  pt->mb = k, pt->slot = slot, pt->feed = feed, pt->backward = half, pt->first = p->n_order, pt->n = 0;
  if (k < 0) {
    memcpy(p->order + p->n_order, b->once, sizeof(int32_t) * (size_t)b->nonce);
    pt->n = b->nonce;
  } else {
    for (int j = 0; j < b->nseq; j++)
      if (b->seq[j].half == half && runs_at(b->seq[j].when, k, b->m)) p->order[p->n_order + pt->n++] = b->seq[j].node;
  }
  p->n_order += pt->n;
  return WH_OK;
}

wh_status wh__pb_split(wh__pb *b, int group, int n, const int *ranks) {
  wh__program *p = b->p;
  int cap = p->n_splits;
  int *r = malloc(sizeof(int) * (size_t)(n > 0 ? n : 1));
  if (!r || !wh__grow((void **)&p->splits, &cap, p->n_splits + 1, sizeof(wh__split))) {
    free(r);
    return b->st = WH_ERR_OUT_OF_MEMORY;
  }
  memcpy(r, ranks, sizeof(int) * (size_t)n);
  p->splits[p->n_splits++] = (wh__split){group, n, r};
  return WH_OK;
}

/* Gradients of parameters that a node produces: gradient value -> its parameter (-1). Each gets an
 * accumulator apart from the value itself: backward may still read the value (a gradient passed
 * on unchanged) while the accumulator is being reduced. A gradient that is a constant (the loss
 * seed) needs none. */
static int32_t *param_grads(const wh_graph *g, const wh__program *p) {
  int32_t *of = malloc(sizeof(int32_t) * (size_t)(p->n_values + 1));
  if (!of) return NULL;
  for (int v = 0; v < p->n_values; v++) of[v] = -1;
  for (int v = 0; v < g->n_grad; v++)
    if (g->values[v].role == WH_ROLE_PARAM && g->grad[v] >= 0 && !wh__role_persistent(g->values[g->grad[v]].role) &&
        of[g->grad[v]] < 0)
      of[g->grad[v]] = v;
  return of;
}

static int64_t numel_of(const wh__program *p, int32_t v) { return wh__numel(&p->values[v].shape, 1); }
static int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* ---- data parallelism (with or without operator sharding) */

typedef struct {
  int node;
  int32_t param, grad;
} zparam;

static wh_status part_dp(wh__pb *b) {
  wh__program *p = b->p;
  const wh_graph *g = b->g;
  const wh__place *pc = &p->place;
  int m = pc->micro_batches, active = pc->share > 0, R = pc->n_replicas, me = pc->replica;
  int zero1 = pc->zero1, det = pc->deterministic;
  float w = (float)((double)pc->share / (double)pc->global_batch);
  int nv0 = p->n_values;
  int32_t *acc = malloc(sizeof(int32_t) * (size_t)(nv0 + 1)), *shard = malloc(sizeof(int32_t) * (size_t)(nv0 + 1));
  zparam *zp = calloc((size_t)b->n_base + 1, sizeof(zparam));
  int32_t *starts = malloc(sizeof(int32_t) * (size_t)(nv0 + 1));
  int nz = 0, ns = 0, clip = -1;
  if (!acc || !shard || !zp || !starts) {
    free(acc), free(shard), free(zp), free(starts);
    return b->st = WH_ERR_OUT_OF_MEMORY;
  }
  for (int v = 0; v < nv0; v++) acc[v] = shard[v] = -1;
  if (zero1) {
    /* every parameter cut into R contiguous shards (equal, the last ones shorter); the accumulator
     * is padded to R equal blocks for the reduce-scatter; the update's state keeps this rank's shard */
    for (int i = 0; i < b->n_base && b->st == WH_OK; i++) {
      const wh__node *n = &b->base[i];
      if (n->op == WH_OP_GLOBAL_NORM_CLIP || n->op == WH_OP_TP_NORM_CLIP) clip = i;
      if (n->op != WH_OP_SGD_UPDATE && n->op != WH_OP_ADAMW_UPDATE) continue;
      zparam *q = &zp[nz++];
      q->node = i, q->param = n->in[0], q->grad = n->in[1];
      int64_t numel = numel_of(p, q->param), chunk = cdiv(numel, R);
      if (chunk < 1) chunk = 1;
      int64_t lo = chunk * me < numel ? chunk * me : numel, hi = lo + chunk < numel ? lo + chunk : numel;
      if (b->of[q->grad] < 0) {
        snprintf(b->msg, b->cap, "ZeRO-1: the gradient of '%s' is not a node's output",
                 wh_value_name((wh_graph *)g, q->param));
        b->st = WH_ERR_UNSUPPORTED;
        break;
      }
      if (acc[q->grad] < 0) { /* two parameters with one gradient value (w = p1 + p2) share its shard */
        acc[q->grad] = wh__pb_value(b, WH_F32, chunk * R, WH_ROLE_BUFFER);
        shard[q->grad] = wh__pb_value(b, WH_F32, chunk, WH_ROLE_BUFFER);
      }
      for (int k = 2; k < n->n_in; k++) {
        wh__value *sv = &p->values[n->in[k]];
        if (sv->role != WH_ROLE_STATE) continue;
        sv->shape.ndim = 1;
        sv->shape.d[0] = hi - lo;
      }
    }
  }
  for (int v = 0; v < nv0 && b->st == WH_OK; v++)
    if (b->of[v] >= 0 && acc[v] < 0) acc[v] = wh__pb_value(b, WH_F32, numel_of(p, v), WH_ROLE_BUFFER);
  const int64_t grp[3] = {WH_GROUP_DP, 1, 0};
  /* one micro-batch: forward and backward, each gradient accumulated the moment it exists and, in
   * the last micro-batch, its reduction started at once so that it overlaps the rest of backward */
  for (int i = 0; i < b->n_base && b->st == WH_OK; i++) {
    const wh__node *n = &b->base[i];
    if (n->phase == WH_PHASE_UPDATE) continue;
    if (active) wh__pb_seq(b, wh__pb_copy(b, n), WH_PB_ALL, 0);
    int32_t out = n->out;
    if (out >= 0 && out == g->loss && active) {
      double wl = (double)w;
      int64_t first[2] = {WH_GROUP_DP, 1}, later[2] = {WH_GROUP_DP, 0};
      wh__pb_seq(b, wh__pb_node(b, WH_OP_LOSS_ACC, WH_PHASE_FORWARD, i, &out, 1, -1, first, 2, &wl, 1), WH_PB_FIRST, 0);
      if (m > 1)
        wh__pb_seq(b, wh__pb_node(b, WH_OP_LOSS_ACC, WH_PHASE_FORWARD, i, &out, 1, -1, later, 2, &wl, 1), WH_PB_LATER, 0);
    }
    if (out < 0 || b->of[out] < 0) continue;
    int32_t a = acc[out];
    double wd = (double)w;
    if (active) {
      int64_t first[2] = {0, 1}, later[2] = {0, 0};
      wh__pb_seq(b, wh__pb_node(b, WH_OP_GRAD_ACC, WH_PHASE_BACKWARD, n->fwd, &out, 1, a, first, 2, &wd, 1), WH_PB_FIRST, 0);
      if (m > 1)
        wh__pb_seq(b, wh__pb_node(b, WH_OP_GRAD_ACC, WH_PHASE_BACKWARD, n->fwd, &out, 1, a, later, 2, &wd, 1), WH_PB_LATER, 0);
    } else {
      wh__pb_seq(b, wh__pb_node(b, WH_OP_ZERO, WH_PHASE_BACKWARD, n->fwd, NULL, 0, a, NULL, 0, NULL, 0), WH_PB_FIRST, 0);
    }
    int64_t sia[2] = {WH_GROUP_DP, out}; /* the gradient it reduces, for the dump */
    if (zero1 && shard[out] >= 0) {
      wh__pb_seq(b, wh__pb_node(b, WH_OP_ZERO_RS_START, WH_PHASE_BACKWARD, n->fwd, &a, 1, shard[out], sia, 2, NULL, 0),
                 WH_PB_LAST, 0);
      starts[ns++] = shard[out];
    } else if (!zero1 && !det) {
      wh__pb_seq(b, wh__pb_node(b, WH_OP_DP_REDUCE_START, WH_PHASE_BACKWARD, n->fwd, &a, 1, -1, sia, 2, NULL, 0),
                 WH_PB_LAST, 0);
      starts[ns++] = a;
    }
  }
  /* once per step: the reductions complete, the sums become the gradients, the loss, the update */
  if (zero1) {
    wh__pb_once(b, wh__pb_node(b, WH_OP_ZERO_RS_WAIT, WH_PHASE_BACKWARD, -1, starts, ns, -1, grp, 1, NULL, 0));
  } else if (det) {
    for (int v = 0; v < nv0; v++)
      if (b->of[v] >= 0)
        wh__pb_once(b, wh__pb_node(b, WH_OP_DET_REDUCE, WH_PHASE_BACKWARD, -1, &acc[v], 1, -1, grp, 1, NULL, 0));
  } else {
    wh__pb_once(b, wh__pb_node(b, WH_OP_DP_REDUCE_WAIT, WH_PHASE_BACKWARD, -1, starts, ns, -1, grp, 1, NULL, 0));
  }
  for (int v = 0; v < nv0 && !zero1; v++)
    if (b->of[v] >= 0) wh__pb_once(b, wh__pb_node(b, WH_OP_GRAD_SET, WH_PHASE_BACKWARD, -1, &acc[v], 1, v, NULL, 0, NULL, 0));
  if (g->loss >= 0) {
    int64_t ia[3] = {WH_GROUP_DP, active, det};
    wh__pb_once(b, wh__pb_node(b, WH_OP_LOSS_REDUCE, WH_PHASE_FORWARD, -1, NULL, 0, g->loss, ia, 3, NULL, 0));
  }
  if (!zero1) {
    for (int i = 0; i < b->n_base; i++)
      if (b->base[i].phase == WH_PHASE_UPDATE) wh__pb_once(b, wh__pb_copy(b, &b->base[i]));
  } else {
    /* clipping from the shards' sums of squares, every update on this rank's shard, then every
     * parameter whole again */
    if (clip >= 0) {
      int32_t *in = malloc(sizeof(int32_t) * (size_t)(2 * nz + 1));
      if (!in) {
        b->st = WH_ERR_OUT_OF_MEMORY;
      } else {
        /* the gradients split by operator sharding first: their squares are summed over the
         * replica's ranks too, the whole ones (alike on every shard) only over the shard's ranks */
        int k = 0, nsplit = 0;
        for (int pass = 0; pass < 2; pass++)
          for (int i = 0; i < nz; i++) {
            int split = p->lay && p->lay[zp[i].grad].kind == WH_LAY_S;
            if (split != (pass == 0)) continue;
            in[2 * k] = shard[zp[i].grad], in[2 * k + 1] = zp[i].param, k++;
            nsplit += split;
          }
        const wh__node *cn = &b->base[clip];
        int64_t cia[3] = {WH_GROUP_DP, nsplit, pc->tp > 1 ? WH_GROUP_TP : -1};
        wh__pb_once(b, wh__pb_node(b, WH_OP_ZERO_NORM_CLIP, WH_PHASE_UPDATE, cn->fwd, in, 2 * nz, cn->out, cia, 3,
                                   cn->fa, 1));
        free(in);
      }
    }
    for (int i = 0; i < nz && b->st == WH_OK; i++) {
      const wh__node *n = &b->base[zp[i].node];
      wh__node u = *n;
      u.op = WH_OP_ZERO_UPDATE;
      for (int k = n->n_ia; k < WH_MAX_IATTR; k++) u.ia[k] = 0;
      u.ia[WH_MAX_IATTR - 1] = n->op;
      u.ia[WH_MAX_IATTR - 2] = WH_GROUP_DP;
      u.n_ia = WH_MAX_IATTR;
      int32_t in[8];
      int k;
      for (k = 0; k < n->n_in && k < 8; k++) in[k] = n->in[k];
      in[1] = shard[zp[i].grad];
      u.in = in;
      wh__pb_once(b, wh__pb_copy(b, &u));
    }
    for (int i = 0; i < nz; i++)
      wh__pb_once(b, wh__pb_node(b, WH_OP_ZERO_ALLGATHER, WH_PHASE_UPDATE, b->base[zp[i].node].fwd, &zp[i].param, 1,
                                 zp[i].param, grp, 1, NULL, 0));
  }
  for (int k = 0; k < m; k++) wh__pb_part(b, k, 0, active, 0);
  wh__pb_part(b, -1, 0, 0, 0);
  free(acc), free(shard), free(zp), free(starts);
  return b->st;
}

/* ---- overlap: operator sharding's all-reduces start as soon as their input exists */

/* Every forward and backward tp_allreduce becomes a start right after the node that makes its input
 * and a wait right before its first reader, so the nodes in between (a weight's gradient while the
 * input's gradient is being summed) run while it is in flight. The wait reads the input too: the
 * all-reduce reads it until it is done, so its storage lives that long. The ranks of a replica
 * start their all-reduces in the same order (they run the same program). */
static wh_status overlap_tp(wh__program *p) {
  int n = p->n_nodes;
  int *pos = malloc(sizeof(int) * (size_t)(p->n_values + 1)), *after = malloc(sizeof(int) * (size_t)(n + 1));
  wh__node *out = NULL;
  int nn = 0, cap = 0;
  wh_status st = pos && after ? WH_OK : WH_ERR_OUT_OF_MEMORY;
  for (int v = 0; st == WH_OK && v < p->n_values; v++) pos[v] = -1;
  for (int i = 0; st == WH_OK && i < n; i++) {
    const wh__node *nd = &p->nodes[i];
    after[i] = -2; /* not an overlapped all-reduce */
    if (nd->op == WH_OP_TP_ALLREDUCE && nd->phase != WH_PHASE_UPDATE)
      after[i] = pos[nd->in[0]] >= 0 ? pos[nd->in[0]] : i - 1;
    if (nd->out >= 0) pos[nd->out] = i;
  }
  for (int i = -1; st == WH_OK && i < n; i++) {
    if (i >= 0) {
      const wh__node *nd = &p->nodes[i];
      if (after[i] > -2) { /* the wait, where the all-reduce was */
        wh__node w = *nd;
        w.op = WH_OP_TP_WAIT, w.n_in = 2, w.out = -1, w.n_ia = 0, w.n_fa = 0;
        int32_t in[2] = {nd->out, nd->in[0]};
        st = wh__nodes_push(&out, &nn, &cap, &w, in);
      } else {
        st = wh__nodes_push(&out, &nn, &cap, nd, nd->in);
      }
    }
    for (int j = i + 1; st == WH_OK && j < n; j++) /* the starts whose input exists now */
      if (after[j] == i) {
        wh__node s0 = p->nodes[j];
        s0.op = WH_OP_TP_ALLREDUCE_START;
        st = wh__nodes_push(&out, &nn, &cap, &s0, p->nodes[j].in);
      }
  }
  if (st == WH_OK) {
    for (int i = 0; i < n; i++) free(p->nodes[i].in);
    free(p->nodes);
    p->nodes = out, p->n_nodes = nn;
    for (int i = 0; i < nn; i++)
      if (p->nodes[i].out >= 0 && p->nodes[i].out < p->n_values) p->values[p->nodes[i].out].producer = i;
  } else {
    for (int i = 0; i < nn; i++) free(out[i].in);
    free(out);
  }
  free(pos), free(after);
  return st;
}

/* ---- the entry */

static wh_status finish(wh__pb *b) {
  wh__program *p = b->p;
  if (b->st != WH_OK) return b->st;
  for (int i = 0; i < b->n_base; i++) free(b->base[i].in);
  free((void *)b->base);
  b->base = NULL;
  p->nodes = b->nodes;
  p->n_nodes = b->nn;
  b->nodes = NULL;
  /* producers in the new order (persistent values stay leaves whatever writes them) */
  for (int v = 0; v < p->n_values; v++) p->values[v].producer = -1;
  for (int i = p->n_nodes - 1; i >= 0; i--) {
    int32_t o = p->nodes[i].out;
    if (o >= 0 && !wh__role_persistent(p->values[o].role)) p->values[o].producer = i;
  }
  if (p->lay) { /* values added after the sharding rewrite are whole on every rank */
    wh__layout *l = realloc(p->lay, sizeof(wh__layout) * (size_t)(p->n_values + 1));
    if (!l) return b->st = WH_ERR_OUT_OF_MEMORY;
    for (int v = b->n_lay; v < p->n_values; v++) l[v] = (wh__layout){WH_LAY_R, 0, 1};
    p->lay = l;
  }
  return WH_OK;
}

wh_status wh__partition(const wh_graph *g, const wh_plan *pl, int rank, int size, int recompute, int deterministic,
                        int on_device, wh_dtype mixed, wh__program *out, char *msg, size_t cap) {
  msg[0] = 0;
  if (mixed != WH_F32 && mixed != WH_BF16 && mixed != WH_F16) {
    snprintf(msg, cap, "mixed precision stores activations as bf16 or f16 (WH_BF16, WH_F16), not dtype %d", (int)mixed);
    return WH_ERR_INVALID_ARGUMENT;
  }
  wh__place pc;
  if (pl) {
    wh_status ps = wh__place_find(pl, rank, size, deterministic, on_device, &pc, msg, cap);
    if (ps != WH_OK) return ps;
    if (pc.pipelined && pl->n_graph_nodes > 0 && pl->n_graph_nodes != g->n_nodes) {
      snprintf(msg, cap, "the plan was made for a graph of %d nodes but this graph has %d: was it made for another graph?",
               pl->n_graph_nodes, g->n_nodes);
      return WH_ERR_INVALID_ARGUMENT;
    }
  }
  wh_status st = wh__program_build(g, recompute, out);
  if (st != WH_OK) {
    snprintf(msg, cap, "out of memory building the program");
    return st;
  }
  if (!pl) { /* a single process: the graph's nodes, one part */
    if (mixed == WH_F32) return WH_OK;
    if ((st = wh__program_mixed(g, out, mixed, msg, cap)) == WH_OK) { /* the one part, in the new order */
      int32_t *o = realloc(out->order, sizeof(int32_t) * (size_t)(out->n_nodes + 1));
      if (o) {
        out->order = o;
        for (int i = 0; i < out->n_nodes; i++) out->order[i] = i;
        out->n_order = out->parts[0].n = out->n_nodes;
      } else {
        st = WH_ERR_OUT_OF_MEMORY;
      }
    }
    if (st != WH_OK) wh__program_free(out);
    return st;
  }
  if (mixed == WH_F16 && (pc.pipelined || pc.zero1)) {
    snprintf(msg, cap, "fp16 with its loss scaling runs data parallel (with or without operator sharding) in this "
                       "build, not with %s: use bf16", pc.pipelined ? "a pipeline" : "ZeRO-1");
    wh__program_free(out);
    return WH_ERR_UNSUPPORTED;
  }
  free(out->parts), free(out->order); /* the one-part schedule of a single process */
  out->parts = NULL, out->order = NULL, out->n_parts = out->n_order = 0;
  out->distributed = 1;
  out->place = pc;
  out->loss_stage = -1;
  wh__pb b;
  memset(&b, 0, sizeof b);
  b.g = g, b.p = out, b.msg = msg, b.cap = cap, b.m = pc.micro_batches;
  if (pc.tp > 1) {
    char why[384] = "";
    st = wh__program_shard(g, out, pc.tp, pc.shard, &out->lay, out->tp_counts, why, sizeof why);
    if (st != WH_OK) {
      snprintf(msg, cap, "operator sharding: %s", why);
      wh__program_free(out);
      return st;
    }
  }
  if (mixed != WH_F32 && (st = wh__program_mixed(g, out, mixed, msg, cap)) != WH_OK) {
    wh__program_free(out);
    return st;
  }
  if (pc.tp > 1) {
    if ((st = overlap_tp(out)) != WH_OK) {
      snprintf(msg, cap, "out of memory overlapping operator sharding's all-reduces");
      wh__program_free(out);
      return st;
    }
    /* every rank takes part in every split, in the same order: each stage's replicas, then (without
     * a pipeline) the shards across the replicas; a pipeline's stage groups follow (stages.c) */
    int *col = malloc(sizeof(int) * (size_t)(pc.n_replicas + 1));
    for (int k = 0; col && k < pl->n_stages && b.st == WH_OK; k++)
      for (int r = 0; r < pc.n_replicas && b.st == WH_OK; r++) wh__pb_split(&b, WH_GROUP_TP, pc.tp, pl->st[k].dev + r * pc.tp);
    for (int k = 0; col && !pc.pipelined && k < pc.tp && b.st == WH_OK; k++) {
      for (int r = 0; r < pc.n_replicas; r++) col[r] = pl->st[0].dev[r * pc.tp + k];
      wh__pb_split(&b, WH_GROUP_DP, pc.n_replicas, col);
    }
    if (!col) b.st = WH_ERR_OUT_OF_MEMORY;
    free(col);
  }
  b.n_lay = out->n_values;
  b.capv = out->n_values;
  b.base = out->nodes;
  b.n_base = out->n_nodes;
  out->nodes = NULL;
  out->n_nodes = 0;
  b.of = param_grads(g, out);
  if (!b.of) b.st = WH_ERR_OUT_OF_MEMORY;
  if (b.st == WH_OK) st = pc.pipelined ? wh__part_stages(&b, pl) : part_dp(&b);
  st = finish(&b);
  free(b.of);
  free(b.seq);
  free(b.once);
  for (int i = 0; b.nodes && i < b.nn; i++) free(b.nodes[i].in);
  free(b.nodes);
  if (b.base) { /* a failure: the base nodes are still the program's to free */
    out->nodes = (wh__node *)b.base;
    out->n_nodes = b.n_base;
  }
  if (st != WH_OK) {
    if (!msg[0]) snprintf(msg, cap, "out of memory partitioning the program");
    wh__program_free(out);
  }
  return st;
}

wh__hold wh__program_hold(const wh__program *p, const wh_graph *g, int32_t v) {
  wh__hold h;
  memset(&h, 0, sizeof h);
  if (v < 0 || v >= g->n_values || v >= p->n_values) return h;
  wh__role role = g->values[v].role;
  if (role != WH_ROLE_PARAM && role != WH_ROLE_STATE) return h;
  const wh__place *pc = &p->place;
  if (!p->distributed) {
    h.kind = WH_HOLD_WHOLE, h.writer = 1;
    return h;
  }
  int first_stage = pc->stage;
  if (pc->pipelined) {
    uint64_t rd = p->reader_stages ? p->reader_stages[v] : 0;
    if (!(rd >> pc->stage & 1)) return h; /* another stage's */
    for (first_stage = 0; !(rd >> first_stage & 1); first_stage++) {}
  }
  int lead = first_stage == pc->stage && pc->replica == 0;
  int split = p->lay && p->lay[v].kind == WH_LAY_S;
  int64_t numel = wh__numel(&g->values[v].shape, 1), local = wh__numel(&p->values[v].shape, 1);
  int64_t part = split ? numel / pc->tp : numel; /* what operator sharding leaves this rank */
  int ranged = pc->zero1 && role == WH_ROLE_STATE && local < part + (part == 0);
  h.lo = 0, h.hi = part;
  if (ranged) {
    /* ZeRO-1's shard: R contiguous chunks of the (flattened) part, this rank's the replica-th */
    int64_t chunk = (part + pc->n_replicas - 1) / pc->n_replicas;
    if (chunk < 1) chunk = 1;
    h.lo = chunk * pc->replica < part ? chunk * pc->replica : part;
    h.hi = h.lo + local;
  }
  if (split) {
    h.kind = WH_HOLD_SPLIT, h.writer = ranged ? first_stage == pc->stage : lead;
    h.dim = p->lay[v].dim, h.groups = p->lay[v].groups, h.parts = pc->tp, h.index = pc->shard;
    return h;
  }
  if (ranged) {
    h.kind = WH_HOLD_RANGE, h.writer = pc->shard == 0 && first_stage == pc->stage;
    return h;
  }
  h.kind = WH_HOLD_WHOLE;
  h.writer = lead && pc->shard == 0;
  return h;
}
