/* stages.c - one rank's stage of a pipeline plan: which nodes the stage runs, the values that
 * cross stages, and the GPipe or 1F1B order of its micro-batches.
 *
 * Placement: forward nodes follow the stage whose node range holds them (the plan records it);
 * backward nodes (and recomputation clones) the forward node they belong to; a parameter's update
 * runs on every stage that reads the parameter (tied weights stay identical everywhere); what is
 * left follows its inputs. Every value produced on one stage and read on another is a transfer:
 * the producer sends a copy the moment it exists, the reader receives it right before its first
 * reader on that stage. Transfers read by forward and backward nodes move per micro-batch; those
 * read by the optimizer (accumulated gradients, the clipping coefficient) once per step.
 * Schedules: GPipe (every micro-batch forward, then every backward) and 1F1B (stage s runs S-s-1
 * forwards ahead, then alternates). Each micro-batch in flight has its own arena slot.
 * Data parallel inside a pipeline: every stage has R replicas, replica r of each stage takes the
 * same rows and talks only to replica r of the others; the replicas of a stage all-reduce their
 * accumulated gradients before the optimizer runs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "partition_impl.h"

#define MAX_STAGES 64

typedef struct {
  int32_t v;
  int from;        /* producing stage */
  uint64_t to;     /* reading stages */
  uint64_t fwd_to; /* reading stages with a forward reader (the rest only need it for backward) */
  int upd;         /* moved once per step, after accumulation (read by the optimizer) */
} xfer;

typedef struct {
  const wh__node *nodes;
  const wh__value *values;
  int nn, nv;
  int S;
  uint64_t *at;    /* node -> stages that run it */
  xfer *x;
  int nx;
  int *x_mb, *x_upd;
  int loss_stage;
} placing;

static int is_leaf(const placing *q, int32_t v) { return q->values[v].producer < 0; }

static int stage_of_bits(uint64_t b) {
  for (int i = 0; i < 64; i++)
    if (b >> i & 1) return i;
  return -1;
}

/* Stages that run each node. */
static wh_status place(const wh_graph *g, const wh_plan *pl, placing *q) {
  int *gstage = malloc(sizeof(int) * (size_t)(g->n_nodes + 1)), *vstage = malloc(sizeof(int) * (size_t)(q->nv + 1));
  if (!gstage || !vstage) {
    free(gstage), free(vstage);
    return WH_ERR_OUT_OF_MEMORY;
  }
  for (int i = 0; i < g->n_nodes; i++) gstage[i] = -1;
  for (int s = 0; s < q->S; s++)
    for (int i = pl->st[s].node_first; i <= pl->st[s].node_last && i < g->n_nodes; i++) gstage[i] = s;
  for (int v = 0; v < q->nv; v++) vstage[v] = -1;
  for (int i = 0; i < q->nn; i++) {
    const wh__node *n = &q->nodes[i];
    int stg = -1;
    if (n->phase == WH_PHASE_FORWARD && n->out >= 0 && n->out < g->n_values) stg = gstage[g->values[n->out].producer];
    else if (n->phase == WH_PHASE_BACKWARD && n->fwd >= 0 && n->fwd < g->n_nodes) stg = gstage[n->fwd];
    if (n->phase == WH_PHASE_UPDATE && n->out < 0) continue; /* below: where its parameter is read */
    if (stg < 0) /* follow the inputs: the latest stage among their producers, else the last */
      for (int k = 0; k < n->n_in; k++)
        if (!is_leaf(q, n->in[k]) && vstage[n->in[k]] > stg) stg = vstage[n->in[k]];
    if (stg < 0) stg = q->S - 1;
    q->at[i] = (uint64_t)1 << stg;
    if (n->out >= 0) vstage[n->out] = stg;
  }
  /* a parameter's update: every stage with a forward or backward node reading it */
  for (int i = 0; i < q->nn; i++) {
    const wh__node *n = &q->nodes[i];
    if (n->phase != WH_PHASE_UPDATE || n->out >= 0) continue;
    int32_t prm = n->in[0];
    uint64_t at = 0;
    for (int j = 0; j < q->nn; j++) {
      const wh__node *r = &q->nodes[j];
      if (r->phase == WH_PHASE_UPDATE) continue;
      for (int k = 0; k < r->n_in; k++)
        if (r->in[k] == prm) at |= q->at[j];
    }
    q->at[i] = at ? at : 1;
  }
  /* a reshape view of a leaf (an input, a parameter) runs on every stage that reads it: its storage
   * is the leaf's, which each stage has, so nothing must be received into it */
  for (int i = q->nn - 1; i >= 0; i--) {
    const wh__node *n = &q->nodes[i];
    if (n->op != WH_OP_RESHAPE || n->out < 0) continue;
    int32_t r = n->in[0];
    while (!is_leaf(q, r) && q->nodes[q->values[r].producer].op == WH_OP_RESHAPE) r = q->nodes[q->values[r].producer].in[0];
    if (!is_leaf(q, r)) continue;
    for (int j = i + 1; j < q->nn; j++)
      for (int k = 0; k < q->nodes[j].n_in; k++)
        if (q->nodes[j].in[k] == n->out) q->at[i] |= q->at[j];
  }
  q->loss_stage = 0;
  for (int i = 0; i < q->nn; i++)
    if (q->nodes[i].out == g->loss && g->loss >= 0) q->loss_stage = stage_of_bits(q->at[i]);
  free(gstage);
  free(vstage);
  return WH_OK;
}

/* Every value produced on one stage and read on another. */
static wh_status transfers(placing *q) {
  int nv = q->nv;
  int *prod = malloc(sizeof(int) * (size_t)(nv + 1));
  uint64_t *made = calloc((size_t)nv + 1, sizeof(uint64_t)); /* stages that compute the value */
  uint64_t *rd_mb = calloc((size_t)nv + 1, sizeof(uint64_t)), *rd_upd = calloc((size_t)nv + 1, sizeof(uint64_t));
  uint64_t *rd_fwd = calloc((size_t)nv + 1, sizeof(uint64_t));
  q->x_mb = malloc(sizeof(int) * (size_t)(nv + 1));
  q->x_upd = malloc(sizeof(int) * (size_t)(nv + 1));
  q->x = malloc(sizeof(xfer) * (size_t)(2 * nv + 1));
  if (!prod || !made || !rd_mb || !rd_upd || !rd_fwd || !q->x_mb || !q->x_upd || !q->x) {
    free(prod), free(made), free(rd_mb), free(rd_upd), free(rd_fwd);
    return WH_ERR_OUT_OF_MEMORY;
  }
  for (int v = 0; v < nv; v++) prod[v] = -1, q->x_mb[v] = q->x_upd[v] = -1;
  for (int i = 0; i < q->nn; i++) {
    const wh__node *n = &q->nodes[i];
    if (n->out >= 0) prod[n->out] = stage_of_bits(q->at[i]), made[n->out] = q->at[i];
    for (int k = 0; k < n->n_in; k++) {
      if (n->phase == WH_PHASE_UPDATE) rd_upd[n->in[k]] |= q->at[i];
      else rd_mb[n->in[k]] |= q->at[i];
      if (n->phase == WH_PHASE_FORWARD) rd_fwd[n->in[k]] |= q->at[i];
    }
  }
  q->nx = 0;
  for (int v = 0; v < nv; v++) {
    if (prod[v] < 0 || is_leaf(q, v)) continue;
    uint64_t self = made[v];
    if (rd_mb[v] & ~self) {
      q->x[q->nx] = (xfer){v, prod[v], rd_mb[v] & ~self, rd_fwd[v] & ~self, 0};
      q->x_mb[v] = q->nx++;
    }
    if (rd_upd[v] & ~self) {
      q->x[q->nx] = (xfer){v, prod[v], rd_upd[v] & ~self, 0, 1};
      q->x_upd[v] = q->nx++;
    }
  }
  free(prod), free(made), free(rd_mb), free(rd_upd), free(rd_fwd);
  return WH_OK;
}

/* Micro-batch order: GPipe, or 1F1B with S - me - 1 forwards ahead. seq[2j] = micro-batch,
 * seq[2j+1] = 1 for backward. Forward-only runs keep the forwards' order, 0, 1, ... */
static int schedule(int S, int me, int m, wh__schedule sched, int *seq) {
  int n = 0;
  if (sched == WH_SCHED_GPIPE) {
    for (int k = 0; k < m; k++) seq[n++] = k, seq[n++] = 0;
    for (int k = 0; k < m; k++) seq[n++] = k, seq[n++] = 1;
    return n / 2;
  }
  int warm = S - me - 1;
  if (warm > m) warm = m;
  int f = 0, b = 0;
  for (; f < warm; f++) seq[n++] = f, seq[n++] = 0;
  while (f < m) {
    seq[n++] = f++, seq[n++] = 0;
    seq[n++] = b++, seq[n++] = 1;
  }
  while (b < m) seq[n++] = b++, seq[n++] = 1;
  return n / 2;
}

/* Who this rank exchanges with: replica r of stage t (same shard index) is rank rank_at(t, r); its
 * rows of each micro-batch are [off[t][r], off[t][r] + share[t][r]). Stages may give their replicas
 * different rows (each stage's shares follow its own devices' speeds): a value with a leading batch
 * dimension then moves as the row ranges the two replicas have in common, from every replica whose
 * rows a reader needs; a value without one comes whole from the reader's own replica index, or
 * from the stage's first replica with rows when that one has none. */
typedef struct {
  const wh_plan *pl;
  const placing *q;
  const wh__program *prog; /* its values (they grow while the builder runs: read them there) */
  int tp, shard, R, rep, me;
} peers;

static int rank_at(const peers *w, int t, int r) { return w->pl->st[t].dev[r * w->tp + w->shard]; }
static int64_t rows_of(const peers *w, int t, int r) { return w->pl->st[t].share[r]; }
static int64_t off_of(const peers *w, int t, int r) {
  int64_t o = 0;
  for (int k = 0; k < r; k++) o += w->pl->st[t].share[k];
  return o;
}
/* The replica of stage t that sends a whole value to replica r of another stage. */
static int whole_sender(const peers *w, int t, int r) {
  if (rows_of(w, t, r) > 0) return r;
  for (int k = 0; k < w->R; k++)
    if (rows_of(w, t, k) > 0) return k;
  return r;
}
/* Samples are contiguous in a value whose one batch dimension comes first. */
static int by_rows(const wh__value *v) { return v->shape.ndim > 0 && v->shape.d[0] < 0 && wh__shape_symbolic_count(&v->shape) == 1; }

/* ia of a send or receive: group, peer, tag, whether the micro-batch is added to the tag, the peer's
 * stage, and the rows [lo, hi) of this rank's value it moves (hi -1: all of it). */
static void xfer_node(wh__pb *b, int op, wh__phase ph, int fwd, int32_t v, int peer, int64_t tag, int add_mb, int stage,
                      int64_t lo, int64_t hi, double scale, int once, int when, int half) {
  int64_t ia[7] = {WH_GROUP_WORLD, peer, tag, add_mb, stage, lo, hi};
  int32_t n = op == WH_OP_SEND ? wh__pb_node(b, op, ph, fwd, &v, 1, -1, ia, 7, NULL, 0)
                               : wh__pb_node(b, op, ph, fwd, NULL, 0, v, ia, 7, &scale, scale != 1.0);
  if (once) wh__pb_once(b, n);
  else wh__pb_seq(b, n, when, half);
}

/* The sends of value v (transfer xi) to each of its reading stages. A send whose reader there is only
 * backward is a backward node: a forward-only run neither sends nor receives it. */
static void sends(wh__pb *b, const peers *w, int xi, int32_t v, wh__phase ph, int fwd, int k, int when, int half) {
  const xfer *x = &w->q->x[xi];
  int rows = !x->upd && by_rows(&w->prog->values[v]);
  int64_t mo = off_of(w, w->me, w->rep), mh = rows_of(w, w->me, w->rep);
  for (int t = 0; t < w->q->S; t++) {
    if (!(x->to >> t & 1)) continue;
    wh__phase sp = ph == WH_PHASE_FORWARD && !(x->fwd_to >> t & 1) ? WH_PHASE_BACKWARD : ph;
    int64_t tag = (int64_t)xi * (b->m + 1) + k;
    for (int r = 0; r < w->R; r++) {
      if (x->upd) { /* once per step, between equal replicas: the optimizer's inputs are alike on all */
        if (r == w->rep) xfer_node(b, WH_OP_SEND, sp, fwd, v, rank_at(w, t, r), tag, 0, t, 0, -1, 1.0, 1, 0, 0);
        continue;
      }
      if (rows_of(w, t, r) == 0) continue; /* a replica without rows there reads nothing */
      if (rows) {
        int64_t lo = mo > off_of(w, t, r) ? mo : off_of(w, t, r);
        int64_t hi = mo + mh < off_of(w, t, r) + rows_of(w, t, r) ? mo + mh : off_of(w, t, r) + rows_of(w, t, r);
        if (lo < hi) xfer_node(b, WH_OP_SEND, sp, fwd, v, rank_at(w, t, r), tag, 1, t, lo - mo, hi - mo, 1.0, 0, when, half);
      } else if (whole_sender(w, w->me, r) == w->rep) {
        xfer_node(b, WH_OP_SEND, sp, fwd, v, rank_at(w, t, r), tag, 1, t, 0, -1, 1.0, 0, when, half);
      }
    }
  }
}

/* The receives of value v (transfer xi, made on another stage) before its first reader here. A
 * gradient is the derivative of the loss as its replica computed it, a mean over that replica's
 * rows: rows from a replica with other shares are scaled by their share over this one's, so that
 * this stage's weight (its share over the global batch) weighs every row alike. */
static wh_status receives(wh__pb *b, const peers *w, int xi, int32_t v, wh__phase ph, int fwd, int k, int once, int when,
                          int half) {
  const xfer *x = &w->q->x[xi];
  int f = x->from;
  int64_t tag = (int64_t)xi * (b->m + 1) + k;
  if (x->upd) {
    xfer_node(b, WH_OP_RECV, ph, fwd, v, rank_at(w, f, w->rep), tag, 0, f, 0, -1, 1.0, once, when, half);
    return b->st;
  }
  int64_t mo = off_of(w, w->me, w->rep), mh = rows_of(w, w->me, w->rep);
  int grad = w->prog->values[v].role == WH_ROLE_GRAD;
  if (!by_rows(&w->prog->values[v])) { /* alike on every replica, or checked by same_rows */
    int from = whole_sender(w, f, w->rep);
    xfer_node(b, WH_OP_RECV, ph, fwd, v, rank_at(w, f, from), tag, 1, f, 0, -1, 1.0, once, when, half);
    return b->st;
  }
  for (int r = 0; r < w->R; r++) {
    int64_t lo = mo > off_of(w, f, r) ? mo : off_of(w, f, r);
    int64_t hi = mo + mh < off_of(w, f, r) + rows_of(w, f, r) ? mo + mh : off_of(w, f, r) + rows_of(w, f, r);
    double scale = grad ? (double)rows_of(w, f, r) / (double)mh : 1.0;
    if (lo < hi)
      xfer_node(b, WH_OP_RECV, ph, fwd, v, rank_at(w, f, r), tag, 1, f, lo - mo, hi - mo, scale, once, when, half);
  }
  return b->st;
}

/* A gradient without a batch axis (a shared weight's, made on another stage) that crosses per
 * micro-batch sums its replica's rows: it can only move between replicas with the same rows. The
 * same check on every rank (the plan decides it), so all refuse together. */
static wh_status same_rows(wh__pb *b, const peers *w) {
  const placing *q = w->q;
  for (int xi = 0; xi < q->nx; xi++) {
    const xfer *x = &q->x[xi];
    const wh__value *v = &w->prog->values[x->v];
    if (x->upd || by_rows(v) || v->role != WH_ROLE_GRAD) continue;
    for (int t = 0; t < q->S; t++)
      for (int r = 0; (x->to >> t & 1) && r < w->R; r++) {
        int f = x->from, from = whole_sender(w, f, r);
        if (rows_of(w, t, r) == 0 || (rows_of(w, f, from) == rows_of(w, t, r) && off_of(w, f, from) == off_of(w, t, r)))
          continue;
        snprintf(b->msg, b->cap, "stage %d gives replica %d rows [%lld, %lld) and stage %d [%lld, %lld), but gradient %d "
                 "crosses between them per micro-batch without a batch axis (a weight both stages read): give the "
                 "stages the same shares", t, r, (long long)off_of(w, t, r), (long long)(off_of(w, t, r) + rows_of(w, t, r)),
                 f, (long long)off_of(w, f, from), (long long)(off_of(w, f, from) + rows_of(w, f, from)), (int)x->v);
        return b->st = WH_ERR_UNSUPPORTED;
      }
  }
  return WH_OK;
}

wh_status wh__part_stages(wh__pb *b, const wh_plan *pl) {
  wh__program *p = b->p;
  const wh_graph *g = b->g;
  const wh__place *pc = &p->place;
  int S = pl->n_stages, me = pc->stage, m = pc->micro_batches, R = pc->n_replicas;
  if (S > MAX_STAGES) {
    snprintf(b->msg, b->cap, "%d pipeline stages (at most %d)", S, MAX_STAGES);
    return b->st = WH_ERR_UNSUPPORTED;
  }
  for (int s = 0; s < S; s++)
    if (pl->st[s].node_first < 0) {
      snprintf(b->msg, b->cap, "the plan does not record its stages' graph nodes (a plan file of format 1): plan "
                               "again to run it as a pipeline");
      return b->st = WH_ERR_UNSUPPORTED;
    }
  placing q;
  memset(&q, 0, sizeof q);
  q.nodes = b->base, q.nn = b->n_base, q.values = p->values, q.nv = p->n_values, q.S = S;
  int tp = pc->tp;
  peers pw = {pl, &q, p, tp, pc->shard, R, pc->replica, me};
  int active = pc->share > 0;
  q.at = calloc((size_t)q.nn + 1, sizeof(uint64_t));
  int *recv_of = malloc(sizeof(int) * (size_t)(2 * q.nv + 2)); /* transfer -> its receive node, -1 */
  int *seq = malloc(sizeof(int) * (size_t)(4 * m + 2));
  wh_status st = q.at && recv_of && seq ? WH_OK : WH_ERR_OUT_OF_MEMORY;
  if (st == WH_OK) st = place(g, pl, &q);
  if (st == WH_OK) st = transfers(&q);
  if (st == WH_OK && (int64_t)q.nx * (m + 1) > 32767) {
    snprintf(b->msg, b->cap, "%d values cross stages at %d micro-batches: their message tags pass the 32767 that MPI "
                             "guarantees (fewer micro-batches or stages)", q.nx, m);
    st = WH_ERR_UNSUPPORTED;
  }
  if (st != WH_OK) {
    free(q.at), free(q.x), free(q.x_mb), free(q.x_upd), free(recv_of), free(seq);
    return b->st = st;
  }
  /* one communicator per stage and shard over the stage's replicas: collective, every rank takes
   * part in each */
  int col[MAX_STAGES * 16];
  for (int s = 0; s < S && R > 1; s++)
    for (int k = 0; k < tp; k++) {
      for (int r = 0; r < R && r < MAX_STAGES * 16; r++) col[r] = pl->st[s].dev[r * tp + k];
      wh__pb_split(b, WH_GROUP_STAGE, R, col);
    }
  /* which stage holds each leaf current: this rank's when one of its nodes reads it */
  uint64_t mine = (uint64_t)1 << me;
  p->leaf_stage = malloc(sizeof(int) * (size_t)(q.nv + 1));
  uint64_t *rd = calloc((size_t)q.nv + 1, sizeof(uint64_t));
  p->reader_stages = rd; /* the program owns it */
  if (!p->leaf_stage || !rd) b->st = WH_ERR_OUT_OF_MEMORY;
  for (int i = 0; rd && i < q.nn; i++)
    for (int k = 0; k < b->base[i].n_in; k++) rd[b->base[i].in[k]] |= q.at[i];
  for (int v = 0; p->leaf_stage && v < q.nv; v++) p->leaf_stage[v] = rd[v] & mine ? me : rd[v] ? stage_of_bits(rd[v]) : -1;
  p->n_transfers = q.nx;
  if (R > MAX_STAGES * 16) {
    snprintf(b->msg, b->cap, "%d replicas per stage (at most %d)", R, MAX_STAGES * 16);
    b->st = WH_ERR_UNSUPPORTED;
  }
  p->loss_stage = q.loss_stage;
  if (b->st == WH_OK) same_rows(b, &pw);
  for (int i = 0; i < 2 * q.nv + 2; i++) recv_of[i] = -1;
  float w = (float)((double)pc->share / (double)pc->global_batch);
  double wl = (double)pc->share / (double)pc->global_batch, wd = (double)w;
  int nv0 = p->n_values;
  int32_t *acc = malloc(sizeof(int32_t) * (size_t)(nv0 + 1));
  char *here = calloc((size_t)nv0 + 1, 1); /* gradients this stage produces */
  if (!acc || !here) b->st = WH_ERR_OUT_OF_MEMORY;
  for (int v = 0; acc && v < nv0; v++) acc[v] = -1;
  for (int i = 0; here && i < q.nn; i++)
    if ((q.at[i] & mine) && b->base[i].out >= 0 && b->of[b->base[i].out] >= 0) here[b->base[i].out] = 1;
  for (int v = 0; acc && here && v < nv0 && b->st == WH_OK; v++)
    if (here[v]) acc[v] = wh__pb_value(b, WH_F32, wh__numel(&p->values[v].shape, 1), WH_ROLE_BUFFER);
  /* one micro-batch on this stage: receives before their first reader, sends after the producer,
   * gradients accumulated as backward makes them, the loss summed where it is computed */
  for (int i = 0; i < q.nn && b->st == WH_OK; i++) {
    const wh__node *n = &b->base[i];
    if (!(q.at[i] & mine) || n->phase == WH_PHASE_UPDATE) continue;
    int half = n->phase != WH_PHASE_FORWARD;
    int32_t out = n->out;
    if (!active) { /* a replica without rows on this stage computes nothing and adds zeros */
      if (half && out >= 0 && acc[out] >= 0)
        wh__pb_seq(b, wh__pb_node(b, WH_OP_ZERO, WH_PHASE_BACKWARD, n->fwd, NULL, 0, acc[out], NULL, 0, NULL, 0),
                   WH_PB_FIRST, 1);
      continue;
    }
    for (int k = 0; k < n->n_in; k++) {
      int xi = q.x_mb[n->in[k]];
      if (xi < 0 || q.x[xi].from == me || recv_of[xi] >= 0) continue;
      recv_of[xi] = 1;
      receives(b, &pw, xi, n->in[k], n->phase, n->fwd, 0, 0, WH_PB_ALL, half);
    }
    wh__pb_seq(b, wh__pb_copy(b, n), WH_PB_ALL, half);
    if (out < 0) continue;
    if (q.x_mb[out] >= 0) sends(b, &pw, q.x_mb[out], out, n->phase, n->fwd, 0, WH_PB_ALL, half);
    if (out == g->loss && q.loss_stage == me && !half) {
      int64_t first[2] = {WH_GROUP_WORLD, 1}, later[2] = {WH_GROUP_WORLD, 0};
      wh__pb_seq(b, wh__pb_node(b, WH_OP_LOSS_ACC, WH_PHASE_FORWARD, i, &out, 1, -1, first, 2, &wl, 1), WH_PB_FIRST, 0);
      if (m > 1)
        wh__pb_seq(b, wh__pb_node(b, WH_OP_LOSS_ACC, WH_PHASE_FORWARD, i, &out, 1, -1, later, 2, &wl, 1), WH_PB_LATER, 0);
    }
    if (half && acc[out] >= 0) {
      int64_t first[2] = {0, 1}, later[2] = {0, 0};
      wh__pb_seq(b, wh__pb_node(b, WH_OP_GRAD_ACC, WH_PHASE_BACKWARD, n->fwd, &out, 1, acc[out], first, 2, &wd, 1),
                 WH_PB_FIRST, 1);
      if (m > 1)
        wh__pb_seq(b, wh__pb_node(b, WH_OP_GRAD_ACC, WH_PHASE_BACKWARD, n->fwd, &out, 1, acc[out], later, 2, &wd, 1),
                   WH_PB_LATER, 1);
    }
  }
  /* once per step: the accumulated gradients become the gradients, are reduced over the stage's
   * replicas and go where the optimizer reads them; then this stage's updates */
  int64_t sgrp = WH_GROUP_STAGE;
  for (int v = 0; v < nv0 && b->st == WH_OK; v++) {
    if (acc[v] < 0) continue;
    wh__pb_once(b, wh__pb_node(b, WH_OP_GRAD_SET, WH_PHASE_BACKWARD, -1, &acc[v], 1, v, NULL, 0, NULL, 0));
    if (R > 1) wh__pb_once(b, wh__pb_node(b, WH_OP_ALLREDUCE, WH_PHASE_BACKWARD, -1, &v, 1, v, &sgrp, 1, NULL, 0));
    if (q.x_upd[v] >= 0) sends(b, &pw, q.x_upd[v], v, WH_PHASE_UPDATE, -1, m, 0, 0);
  }
  for (int i = 0; i < q.nn && b->st == WH_OK; i++) {
    const wh__node *n = &b->base[i];
    if (n->phase != WH_PHASE_UPDATE || !(q.at[i] & mine)) continue;
    for (int k = 0; k < n->n_in; k++) {
      int xi = q.x_upd[n->in[k]];
      if (xi < 0 || q.x[xi].from == me || recv_of[xi] >= 0) continue;
      recv_of[xi] = 1;
      receives(b, &pw, xi, n->in[k], WH_PHASE_UPDATE, n->fwd, m, 1, 0, 0);
    }
    wh__pb_once(b, wh__pb_copy(b, n));
    if (n->out >= 0 && q.x_upd[n->out] >= 0) sends(b, &pw, q.x_upd[n->out], n->out, WH_PHASE_UPDATE, n->fwd, m, 0, 0);
  }
  wh__pb_once(b, wh__pb_node(b, WH_OP_SEND_WAIT, WH_PHASE_FORWARD, -1, NULL, 0, -1, NULL, 0, NULL, 0));
  if (g->loss >= 0) {
    /* one rank per replica adds the loss: the shards of a replica each hold all of it */
    int64_t ia[3] = {WH_GROUP_WORLD, q.loss_stage == me && pc->shard == 0, 0};
    wh__pb_once(b, wh__pb_node(b, WH_OP_LOSS_REDUCE, WH_PHASE_FORWARD, -1, NULL, 0, g->loss, ia, 3, NULL, 0));
  }
  /* the parts: this stage's order of micro-batch halves, each in its own slot, then the step's end */
  int steps = schedule(S, me, m, pc->schedule, seq);
  for (int j = 0; j < steps && b->st == WH_OK; j++) wh__pb_part(b, seq[2 * j], seq[2 * j], 1, seq[2 * j + 1]);
  wh__pb_part(b, -1, 0, 0, 0);
  p->n_slots = m;
  free(q.at), free(q.x), free(q.x_mb), free(q.x_upd), free(recv_of), free(seq), free(acc), free(here);
  return b->st;
}
