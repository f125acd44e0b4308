/* model.c - the planner's view of a graph: the forward pass cut into a chain of segments where a
 * single activation crosses (block boundaries fall out naturally), each with its compute, memory
 * traffic, parameters and saved activations, linear in the batch size. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../partition/program.h"
#include "planner.h"

/* per node: the cost at batch 1 and 2 gives the fixed and per-sample parts */
static void node_cost(const wh_graph *g, const wh__node *n, double *f, double *y) {
  wh__cost c1, c2;
  wh__ops[n->op]->cost(g, n, 1, &c1);
  wh__ops[n->op]->cost(g, n, 2, &c2);
  double b1 = c1.bytes_read + c1.bytes_written, b2 = c2.bytes_read + c2.bytes_written;
  f[1] = c2.flops - c1.flops;
  f[0] = c1.flops - f[1];
  y[1] = b2 - b1;
  y[0] = b1 - y[1];
  if (f[0] < 0) f[0] = 0;
  if (y[0] < 0) y[0] = 0;
}

static double vbytes(const wh_graph *g, int32_t v, int64_t b) {
  return (double)wh__numel(&g->values[v].shape, b) * (double)wh__dtype_size(g->values[v].dtype);
}

static int is_leaf(const wh_graph *g, int32_t v) { return g->values[v].producer < 0; }

static int is_conversion(int op) { return op == WH_OP_TP_ALLREDUCE || op == WH_OP_TP_ALLGATHER || op == WH_OP_TP_SLICE; }

/* Synchronous collectives a sharded node makes: a conversion one, the sharded cross-entropy two
 * (the rows' maxima, then their sums) forward and backward alike. */
static int collectives(int op) {
  if (op == WH_OP_TP_ALLREDUCE || op == WH_OP_TP_ALLGATHER) return 1;
  if (op == WH_OP_TP_CROSS_ENTROPY || op == WH_OP_TP_CROSS_ENTROPY_GRAD) return 2;
  return 0;
}

/* Operator sharding of g as the partitioner would run it at degree tp (level k): per segment, the
 * per-sample FLOPs of the nodes whose work splits, the bytes and the number of the all-reduces and
 * all-gathers it inserts (charged to the segment of the node that needs them), and the parameters
 * and saved activations it splits. A graph it cannot shard at that degree gets nothing split. */
static void tp_analysis(const wh_graph *g, wh__model *m, const int *param_seg, const int *used_by_bwd, int k) {
  int tp = 2 << k;
  wh__program p;
  wh__layout *lay = NULL;
  int counts[3];
  char msg[256];
  double *split = calloc((size_t)m->n + 1, sizeof(double));
  if (!split || wh__program_build(g, 0, &p) != WH_OK) {
    free(split);
    return;
  }
  if (wh__program_shard(g, &p, tp, 0, &lay, counts, msg, sizeof msg) != WH_OK) {
    wh__program_free(&p);
    free(split);
    return;
  }
  int gi = 0;
  double pending = 0, pending_n = 0;
  for (int j = 0; j < p.n_nodes && gi < m->n_items; j++) {
    const wh__node *nd = &p.nodes[j];
    if (is_conversion(nd->op)) {
      if (nd->op != WH_OP_TP_SLICE) {
        const wh__value *o = &p.values[nd->out];
        pending += (double)(wh__numel(&o->shape, 2) - wh__numel(&o->shape, 1)) * (double)wh__dtype_size(o->dtype);
        pending_n += collectives(nd->op);
      }
      continue;
    }
    const wh__item *it = &m->item[gi];
    int s = it->seg, sp = nd->out >= 0 && lay[nd->out].kind != WH_LAY_R;
    for (int q = 0; q < nd->n_in; q++) sp |= lay[nd->in[q]].kind == WH_LAY_S;
    if (sp) split[s] += it->f[1];
    m->seg[s].tp_comm_bytes[k] += pending;
    m->seg[s].tp_colls[k] += pending_n + (it->upd ? 0 : collectives(nd->op));
    pending = pending_n = 0;
    const wh__node *gn = &g->nodes[gi];
    if (gn->phase == WH_PHASE_FORWARD && gn->out >= 0 && used_by_bwd[gn->out] && lay[gn->out].kind == WH_LAY_S)
      m->seg[s].tp_act_bytes[k] += (double)(wh__numel(&g->values[gn->out].shape, 2) -
                                            wh__numel(&g->values[gn->out].shape, 1)) *
                                   (double)wh__dtype_size(g->values[gn->out].dtype);
    gi++;
  }
  for (int v = 0; v < g->n_values; v++)
    if (g->values[v].role == WH_ROLE_PARAM && lay[v].kind == WH_LAY_S && param_seg[v] >= 0)
      m->seg[param_seg[v]].tp_param_bytes[k] += vbytes(g, v, 1);
  for (int s = 0; s < m->n; s++) {
    double fl = m->seg[s].flops_fwd[1] + m->seg[s].flops_bwd[1];
    m->seg[s].tp_fraction[k] = fl > 0 ? split[s] / fl : 0;
  }
  free(lay);
  free(split);
  wh__program_free(&p);
}

/* Mixed precision as the pass makes it (partition/precision.c): each fp32 activation backward
 * reads is kept in 16 bits, written by a cast after its producer (4 bytes read, 2 written per
 * element) and read back by one before its first backward reader (2 and 4); products and
 * attention take 16-bit inputs (the device's bf16 rate; fp32 accumulation). Stored bytes halve,
 * the split ones under operator sharding alike. */
static wh_status narrow(const wh_graph *g, wh__model *m, const int *used_by_bwd) {
  int n0 = m->n_items;
  wh__item *q = realloc(m->item, sizeof(wh__item) * (size_t)(3 * n0 + 1));
  if (!q) return WH_ERR_OUT_OF_MEMORY;
  m->item = q;
  double *before = calloc((size_t)m->n, sizeof(double));
  if (!before) return WH_ERR_OUT_OF_MEMORY;
  for (int s = 0; s < m->n; s++) before[s] = m->seg[s].act_bytes;
  for (int i = 0; i < n0 && i < g->n_nodes; i++) {
    wh__item *it = &m->item[i];
    it->half = it->op == WH_OP_MATMUL || it->op == WH_OP_ATTENTION || it->op == WH_OP_ATTENTION_GRAD;
    const wh__node *n = &g->nodes[i];
    if (n->phase != WH_PHASE_FORWARD || n->out < 0 || !used_by_bwd[n->out] || g->values[n->out].dtype != WH_F32) continue;
    double e1 = (double)(wh__numel(&g->values[n->out].shape, 2) - wh__numel(&g->values[n->out].shape, 1));
    double e0 = (double)wh__numel(&g->values[n->out].shape, 1) - e1;
    wh__segment *sg = &m->seg[it->seg];
    sg->act_bytes -= 2 * e1;
    sg->bytes_fwd[0] += 6 * e0, sg->bytes_fwd[1] += 6 * e1;
    sg->bytes_bwd[0] += 6 * e0, sg->bytes_bwd[1] += 6 * e1;
    int seg = it->seg;
    m->item[m->n_items++] = (wh__item){seg, WH_OP_CAST, 0, 0, 0, {0, 0}, {6 * e0, 6 * e1}};
    m->item[m->n_items++] = (wh__item){seg, WH_OP_CAST, 1, 0, 0, {0, 0}, {6 * e0, 6 * e1}};
  }
  for (int s = 0; s < m->n; s++)
    for (int k = 0; k < WH_TP_LEVELS; k++)
      if (before[s] > 0) m->seg[s].tp_act_bytes[k] *= m->seg[s].act_bytes / before[s];
  free(before);
  return WH_OK;
}

wh_status wh__model_from_graph(const wh_graph *g, wh_dtype mixed, wh__model *m, char *msg, size_t cap) {
  memset(m, 0, sizeof *m);
  if (mixed != WH_F32 && mixed != WH_BF16 && mixed != WH_F16) {
    snprintf(msg, cap, "mixed precision must be WH_F32 (none), WH_BF16 or WH_F16, not %d", (int)mixed);
    return WH_ERR_INVALID_ARGUMENT;
  }
  m->mixed = mixed;
  int nn = g->n_nodes, nv = g->n_values;
  int *last_fwd_use = malloc(sizeof(int) * (size_t)(nv + 1)), *seg_of = malloc(sizeof(int) * (size_t)(nn + 1));
  int *used_by_bwd = calloc((size_t)nv + 1, sizeof(int)), *param_seg = malloc(sizeof(int) * (size_t)(nv + 1));
  if (!last_fwd_use || !seg_of || !used_by_bwd || !param_seg) {
    free(last_fwd_use), free(seg_of), free(used_by_bwd), free(param_seg);
    snprintf(msg, cap, "out of memory");
    return WH_ERR_OUT_OF_MEMORY;
  }
  int nfwd = 0;
  for (int v = 0; v < nv; v++) last_fwd_use[v] = -1, param_seg[v] = -1;
  for (int i = 0; i < nn; i++) {
    const wh__node *n = &g->nodes[i];
    if (n->phase == WH_PHASE_FORWARD) {
      nfwd = i + 1;
      for (int k = 0; k < n->n_in; k++) last_fwd_use[n->in[k]] = i;
    } else {
      for (int k = 0; k < n->n_in; k++) used_by_bwd[n->in[k]] = 1;
    }
  }
  if (nfwd == 0) {
    free(last_fwd_use), free(seg_of), free(used_by_bwd), free(param_seg);
    snprintf(msg, cap, "the graph has no forward nodes");
    return WH_ERR_INVALID_ARGUMENT;
  }
  /* cut after node i when at most one produced activation is still needed by later forward nodes,
   * and where a stage hint changes */
  int cap_seg = 64, ns = 0, open = 0;
  m->seg = calloc((size_t)cap_seg, sizeof(wh__segment));
  /* a value read by three or more forward nodes (an encoder's output read by every decoder layer,
   * an attention context) travels with the boundary: it does not prevent a cut, and its bytes
   * count as crossing while it is live */
  int *uses = calloc((size_t)nv + 1, sizeof(int));
  for (int i = 0; uses && i < nfwd; i++)
    for (int k = 0; k < g->nodes[i].n_in; k++) uses[g->nodes[i].in[k]]++;
  int live = 0;
  int32_t prev_stage = -2;
  for (int i = 0; i < nfwd && m->seg; i++) {
    const wh__node *n = &g->nodes[i];
    if (n->phase != WH_PHASE_FORWARD) continue;
    int32_t stage = -1;
    for (int32_t s = n->scope; s >= 0; s = g->scopes[s].parent)
      if (g->scopes[s].kind == WH_HINT_STAGE) stage = g->scopes[s].n;
    if (open && stage != prev_stage && prev_stage != -2 && live <= 1) {
      /* a stage boundary that is also a clean cut: start a new segment */
      m->seg[ns - 1].last_node = i - 1;
      open = 0;
    }
    if (!open) {
      if (ns == cap_seg) {
        wh__segment *q = realloc(m->seg, sizeof(wh__segment) * (size_t)(cap_seg *= 2));
        if (!q) break;
        m->seg = q;
      }
      memset(&m->seg[ns], 0, sizeof(wh__segment));
      m->seg[ns].first_node = i;
      m->seg[ns].stage_hint = stage;
      ns++;
      open = 1;
    }
    prev_stage = stage;
    seg_of[i] = ns - 1;
    /* live activations after node i: produced so far, used by a later forward node */
    int bcast_out = n->out >= 0 && uses && uses[n->out] >= 3;
    if (n->out >= 0 && last_fwd_use[n->out] > i && !bcast_out) live++;
    for (int k = 0; k < n->n_in; k++) {
      int32_t v = n->in[k];
      if (!is_leaf(g, v) && last_fwd_use[v] == i && !(uses && uses[v] >= 3)) {
        /* count each value once even if read twice by this node */
        int dup = 0;
        for (int q = 0; q < k; q++) dup |= n->in[q] == v;
        if (!dup) live--;
      }
    }
    if (live <= 1 && i < nfwd - 1) {
      m->seg[ns - 1].last_node = i;
      double cross = n->out >= 0 && !bcast_out ? vbytes(g, n->out, 2) - vbytes(g, n->out, 1) : 0;
      for (int v = 0; uses && v < nv; v++)
        if (uses[v] >= 3 && g->values[v].producer >= 0 && g->values[v].producer <= i && last_fwd_use[v] > i)
          cross += vbytes(g, v, 2) - vbytes(g, v, 1);
      m->seg[ns - 1].out_bytes = cross;
      open = 0;
    }
  }
  free(uses);
  if (!m->seg) {
    free(last_fwd_use), free(seg_of), free(used_by_bwd), free(param_seg);
    snprintf(msg, cap, "out of memory");
    return WH_ERR_OUT_OF_MEMORY;
  }
  if (open) m->seg[ns - 1].last_node = nfwd - 1;
  m->n = ns;
  m->n_graph_nodes = nn;
  for (int i = nfwd; i < nn; i++) seg_of[i] = -1;
  /* costs, parameters, saved activations */
  m->item = malloc(sizeof(wh__item) * (size_t)(nn + 1));
  if (!m->item) {
    free(last_fwd_use), free(seg_of), free(used_by_bwd), free(param_seg);
    wh__model_free(m);
    snprintf(msg, cap, "out of memory");
    return WH_ERR_OUT_OF_MEMORY;
  }
  for (int i = 0; i < nn; i++) {
    const wh__node *n = &g->nodes[i];
    int s = -1;
    if (n->phase == WH_PHASE_FORWARD) s = seg_of[i];
    else if (n->fwd >= 0 && n->fwd < nfwd) s = seg_of[n->fwd];
    else if (n->phase == WH_PHASE_UPDATE && n->n_in > 0) s = param_seg[n->in[0]];
    if (s < 0) s = ns - 1;
    double f[2], y[2];
    node_cost(g, n, f, y);
    m->item[m->n_items++] = (wh__item){s, n->op, n->phase == WH_PHASE_BACKWARD, n->phase == WH_PHASE_UPDATE, 0,
                                       {f[0], f[1]}, {y[0], y[1]}};
    wh__segment *sg = &m->seg[s];
    if (n->phase == WH_PHASE_FORWARD) {
      sg->flops_fwd[0] += f[0], sg->flops_fwd[1] += f[1];
      sg->bytes_fwd[0] += y[0], sg->bytes_fwd[1] += y[1];
      for (int k = 0; k < n->n_in; k++) {
        int32_t v = n->in[k];
        if (g->values[v].role == WH_ROLE_PARAM && param_seg[v] < 0) {
          param_seg[v] = s;
          sg->param_bytes += vbytes(g, v, 1);
        }
      }
      if (n->out >= 0 && used_by_bwd[n->out]) sg->act_bytes += vbytes(g, n->out, 2) - vbytes(g, n->out, 1);
      if (n->out >= 0) {
        double ob = vbytes(g, n->out, 2) - vbytes(g, n->out, 1);
        if (ob > sg->peak_bytes) sg->peak_bytes = ob;
      }
    } else {
      sg->flops_bwd[0] += f[0], sg->flops_bwd[1] += f[1];
      sg->bytes_bwd[0] += y[0], sg->bytes_bwd[1] += y[1];
    }
  }
  m->opt_bytes_per_param = 0;
  for (int i = 0; i < nn; i++)
    if (g->nodes[i].op == WH_OP_ADAMW_UPDATE) m->opt_bytes_per_param = 2;
    else if (g->nodes[i].op == WH_OP_SGD_UPDATE && g->nodes[i].ia[0] && m->opt_bytes_per_param < 1)
      m->opt_bytes_per_param = 1;
  for (int s = 0; s < ns; s++) {
    wh__segment *sg = &m->seg[s];
    m->param_bytes += sg->param_bytes;
    if (sg->stage_hint >= 0) snprintf(sg->name, sizeof sg->name, "stage%d:%s", sg->stage_hint, wh__ops[g->nodes[sg->first_node].op]->name);
    else snprintf(sg->name, sizeof sg->name, "%s..%s", wh__ops[g->nodes[sg->first_node].op]->name,
                  wh__ops[g->nodes[sg->last_node].op]->name);
  }
  for (int k = 0; k < WH_TP_LEVELS; k++) tp_analysis(g, m, param_seg, used_by_bwd, k);
  wh_status st = mixed != WH_F32 ? narrow(g, m, used_by_bwd) : WH_OK;
  free(last_fwd_use), free(seg_of), free(used_by_bwd), free(param_seg);
  if (st != WH_OK) {
    wh__model_free(m);
    snprintf(msg, cap, "out of memory");
  }
  return st;
}

void wh__model_free(wh__model *m) {
  free(m->seg);
  free(m->item);
  memset(m, 0, sizeof *m);
}
