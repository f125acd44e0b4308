/* pipeline.c - one rank's stage of a pipeline-parallel plan.
 *
 * Placement: forward nodes follow their segment's stage; backward nodes (and recomputation
 * clones) the forward node they belong to; a parameter's update runs on every stage that reads the
 * parameter (tied weights stay identical everywhere); what is left follows its inputs. Every value
 * produced on one stage and read on another is a transfer: the producer sends a copy the moment it
 * exists, the reader receives it right before its first reader on that stage. Transfers read by
 * forward and backward nodes move per micro-batch; those read by the optimizer (accumulated
 * gradients, the clipping coefficient) once per step.
 * Schedules: GPipe (every micro-batch forward, then every backward) and 1F1B (stage s runs S-s-1
 * forwards ahead, then alternates). Each micro-batch in flight has its own arena, laid out by the
 * session's static plan; gradients of parameters accumulate across micro-batches weighted by the
 * replica's share of the global batch.
 * Data parallel inside a pipeline: every stage has R replicas, replica r of each stage takes the
 * same rows and talks only to replica r of the others; the replicas of a stage all-reduce their
 * accumulated gradients before the optimizer runs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../planner/planner.h"
#include "../base/ctx.h"
#include "memplan.h"
#include "session_impl.h"

#define MAX_STAGES 64

typedef struct {
  int32_t v;
  int from;        /* producing stage */
  uint64_t to;     /* reading stages */
  int upd;         /* moved once per step, after accumulation (read by the optimizer) */
} xfer;

typedef struct {
  wh_request *r;
  void *buf;
} pending;

struct wh__pipe {
  int S, me, m, sched;
  int R, rep;              /* replicas per stage, this rank's replica */
  int *rank_of;            /* stage -> the rank of this replica index there */
  wh_comm *stage_comm;     /* the replicas of this rank's stage (R > 1) */
  uint64_t *at;            /* program node -> stages that run it */
  xfer *x;
  int nx;
  int *x_mb, *x_upd;       /* value -> its transfer (per micro-batch / per step), -1 */
  void **arena;            /* per micro-batch slot (slot 0 is the session's) */
  void ***ptr;             /* per slot: the session's pointer table for it */
  unsigned char *got;      /* [slot][transfer]: received this step */
  pending *pend;
  int npend, cap_pend;
  int loss_stage;
};

static int is_leaf(const wh_session *s, int32_t v) { return s->prog.values[v].producer < 0; }

static int stage_of_bits(uint64_t b) {
  for (int i = 0; i < 64; i++)
    if (b >> i & 1) return i;
  return -1;
}

static void pipe_free(struct wh__pipe *p, const wh_session *s) {
  if (!p) return;
  for (int k = 0; k < p->npend; k++) {
    if (p->pend[k].r) wh_request_wait(p->pend[k].r);
    free(p->pend[k].buf);
  }
  free(p->pend);
  if (p->arena)
    for (int k = 1; k < p->m; k++) free(p->arena[k]);
  if (p->ptr)
    for (int k = 1; k < p->m; k++) free(p->ptr[k]);
  (void)s;
  free(p->arena), free(p->ptr), free(p->got), free(p->x), free(p->x_mb), free(p->x_upd), free(p->at), free(p->rank_of);
  wh_comm_destroy(p->stage_comm);
  free(p);
}

void wh__pipe_destroy(wh_session *s) {
  pipe_free(s->pipe, s);
  s->pipe = NULL;
}

/* Stages that run each program node. */
static wh_status place(wh_session *s, const struct wh_plan *pl, struct wh__pipe *p) {
  const wh__program *pg = &s->prog;
  const wh_graph *g = s->g;
  wh__model md;
  char msg[256];
  wh_status st = wh__model_from_graph(g, &md, msg, sizeof msg);
  if (st != WH_OK) return wh__session_fail(s, st, "wh_session_create: pipeline placement: %s", msg);
  if (md.n != pl->n_segments) {
    wh__model_free(&md);
    return wh__session_fail(s, WH_ERR_INVALID_ARGUMENT,
                            "wh_session_create: the plan has %d segments but this graph has %d: was it made for another graph?",
                            pl->n_segments, md.n);
  }
  int *gstage = malloc(sizeof(int) * (size_t)(g->n_nodes + 1));
  if (!gstage) {
    wh__model_free(&md);
    return WH_ERR_OUT_OF_MEMORY;
  }
  for (int i = 0; i < g->n_nodes; i++) gstage[i] = -1;
  for (int k = 0; k < md.n; k++) {
    int stg = 0;
    while (stg < p->S - 1 && pl->st[stg].seg_last < k) stg++;
    for (int i = md.seg[k].first_node; i <= md.seg[k].last_node; i++) gstage[i] = stg;
  }
  wh__model_free(&md);
  int nn = pg->n_nodes;
  /* producers' stages, filled in program order */
  int *vstage = malloc(sizeof(int) * (size_t)(s->n + 1));
  if (!vstage) {
    free(gstage);
    return WH_ERR_OUT_OF_MEMORY;
  }
  for (int v = 0; v < s->n; v++) vstage[v] = -1;
  for (int i = 0; i < nn; i++) {
    const wh__node *n = &pg->nodes[i];
    int stg = -1;
    if (n->phase == WH_PHASE_FORWARD && n->out >= 0 && n->out < g->n_values) stg = gstage[g->values[n->out].producer];
    else if (n->phase == WH_PHASE_BACKWARD && n->fwd >= 0 && n->fwd < g->n_nodes) stg = gstage[n->fwd];
    if (n->phase == WH_PHASE_UPDATE && n->out < 0) continue; /* below: where its parameter is read */
    if (stg < 0) /* follow the inputs: the latest stage among their producers, else the last */
      for (int k = 0; k < n->n_in; k++)
        if (!is_leaf(s, n->in[k]) && vstage[n->in[k]] > stg) stg = vstage[n->in[k]];
    if (stg < 0) stg = p->S - 1;
    p->at[i] = (uint64_t)1 << stg;
    if (n->out >= 0) vstage[n->out] = stg;
  }
  /* a parameter's update: every stage with a forward or backward node reading it */
  for (int i = 0; i < nn; i++) {
    const wh__node *n = &pg->nodes[i];
    if (n->phase != WH_PHASE_UPDATE || n->out >= 0) continue;
    int32_t prm = n->in[0];
    uint64_t at = 0;
    for (int j = 0; j < nn; j++) {
      const wh__node *q = &pg->nodes[j];
      if (q->phase == WH_PHASE_UPDATE) continue;
      for (int k = 0; k < q->n_in; k++)
        if (q->in[k] == prm) at |= p->at[j];
    }
    p->at[i] = at ? at : 1;
  }
  /* a reshape view of a leaf (an input, a parameter) runs on every stage that reads it: its storage
   * is the leaf's, which each stage has, so nothing must be received into it */
  for (int i = nn - 1; i >= 0; i--) {
    const wh__node *n = &pg->nodes[i];
    if (n->op != WH_OP_RESHAPE || n->out < 0) continue;
    int32_t r = n->in[0];
    while (!is_leaf(s, r) && pg->nodes[s->prog.values[r].producer].op == WH_OP_RESHAPE)
      r = pg->nodes[s->prog.values[r].producer].in[0];
    if (!is_leaf(s, r)) continue;
    for (int j = i + 1; j < nn; j++)
      for (int k = 0; k < pg->nodes[j].n_in; k++)
        if (pg->nodes[j].in[k] == n->out) p->at[i] |= p->at[j];
  }
  for (int i = 0; i < nn; i++)
    if (pg->nodes[i].out == g->loss && g->loss >= 0) p->loss_stage = stage_of_bits(p->at[i]);
  free(gstage);
  free(vstage);
  return WH_OK;
}

/* Every value produced on one stage and read on another. */
static wh_status transfers(wh_session *s, struct wh__pipe *p) {
  const wh__program *pg = &s->prog;
  int nn = pg->n_nodes;
  int *prod = malloc(sizeof(int) * (size_t)(s->n + 1));
  uint64_t *made = calloc((size_t)s->n + 1, sizeof(uint64_t)); /* stages that compute the value */
  uint64_t *rd_mb = calloc((size_t)s->n + 1, sizeof(uint64_t)), *rd_upd = calloc((size_t)s->n + 1, sizeof(uint64_t));
  p->x_mb = malloc(sizeof(int) * (size_t)(s->n + 1));
  p->x_upd = malloc(sizeof(int) * (size_t)(s->n + 1));
  p->x = malloc(sizeof(xfer) * (size_t)(2 * s->n + 1));
  if (!prod || !made || !rd_mb || !rd_upd || !p->x_mb || !p->x_upd || !p->x) {
    free(prod), free(made), free(rd_mb), free(rd_upd);
    return WH_ERR_OUT_OF_MEMORY;
  }
  for (int v = 0; v < s->n; v++) prod[v] = -1, p->x_mb[v] = p->x_upd[v] = -1;
  for (int i = 0; i < nn; i++) {
    const wh__node *n = &pg->nodes[i];
    if (n->out >= 0) prod[n->out] = stage_of_bits(p->at[i]), made[n->out] = p->at[i];
    for (int k = 0; k < n->n_in; k++) {
      if (n->phase == WH_PHASE_UPDATE) rd_upd[n->in[k]] |= p->at[i];
      else rd_mb[n->in[k]] |= p->at[i];
    }
  }
  p->nx = 0;
  for (int v = 0; v < s->n; v++) {
    if (prod[v] < 0 || is_leaf(s, v)) continue;
    uint64_t self = made[v];
    if (rd_mb[v] & ~self) {
      p->x[p->nx] = (xfer){v, prod[v], rd_mb[v] & ~self, 0};
      p->x_mb[v] = p->nx++;
    }
    if (rd_upd[v] & ~self) {
      p->x[p->nx] = (xfer){v, prod[v], rd_upd[v] & ~self, 1};
      p->x_upd[v] = p->nx++;
    }
  }
  free(prod), free(made), free(rd_mb), free(rd_upd);
  return WH_OK;
}

wh_status wh__pipe_create(wh_session *s, const struct wh_plan *pl, int stage, int replica) {
  if (pl->n_stages > MAX_STAGES)
    return wh__session_fail(s, WH_ERR_UNSUPPORTED, "wh_session_create: %d pipeline stages (at most %d)", pl->n_stages,
                            MAX_STAGES);
  struct wh__pipe *p = calloc(1, sizeof *p);
  if (!p) return WH_ERR_OUT_OF_MEMORY;
  s->pipe = p;
  p->S = pl->n_stages;
  p->me = stage;
  p->R = pl->st[0].ndev;
  p->rep = replica;
  p->m = pl->micro_batches;
  p->sched = pl->schedule;
  p->rank_of = malloc(sizeof(int) * (size_t)p->S);
  p->at = calloc((size_t)s->prog.n_nodes + 1, sizeof(uint64_t));
  p->arena = calloc((size_t)p->m, sizeof(void *));
  p->ptr = calloc((size_t)p->m, sizeof(void **));
  if (!p->rank_of || !p->at || !p->arena || !p->ptr) return WH_ERR_OUT_OF_MEMORY;
  for (int k = 0; k < p->S; k++) p->rank_of[k] = pl->st[k].dev[replica];
  /* one communicator per stage over its replicas: collective, every rank takes part in each */
  for (int k = 0; k < p->S && p->R > 1; k++) {
    wh_comm *sub = NULL;
    wh_status st = wh_comm_split(s->comm, p->R, pl->st[k].dev, &sub);
    if (st != WH_OK)
      return wh__session_fail(s, st, "wh_session_create: pipeline stage %d's replicas: %s", k, wh_last_error(s->ctx));
    if (sub) p->stage_comm = sub;
  }
  wh_status st = place(s, pl, p);
  if (st == WH_OK) st = transfers(s, p);
  if (st != WH_OK) return st;
  if (!(p->got = calloc((size_t)p->m * (size_t)(p->nx + 1), 1))) return WH_ERR_OUT_OF_MEMORY;
  if ((int64_t)p->nx * (p->m + 1) > 32767)
    return wh__session_fail(s, WH_ERR_UNSUPPORTED,
                            "wh_session_create: %d values cross stages at %d micro-batches: their message tags pass "
                            "the 32767 that MPI guarantees (fewer micro-batches or stages)", p->nx, p->m);
  /* slot 0 is the session's own arena and table; the others copy its layout */
  p->arena[0] = s->arena;
  p->ptr[0] = s->ptr;
  for (int k = 1; k < p->m; k++) {
    if (posix_memalign(&p->arena[k], WH_ALIGN, (size_t)(s->arena_bytes ? s->arena_bytes : WH_ALIGN)) != 0) {
      p->arena[k] = NULL;
      return wh__session_fail(s, WH_ERR_OUT_OF_MEMORY, "wh_session_create: out of memory for micro-batch arenas (%d of %lld bytes)",
                              p->m, (long long)s->arena_bytes);
    }
    if (!(p->ptr[k] = malloc(sizeof(void *) * (size_t)(s->n + 1)))) return WH_ERR_OUT_OF_MEMORY;
    for (int v = 0; v < s->n; v++) {
      char *q = s->ptr[v];
      int in_arena = q && q >= (char *)s->arena && q < (char *)s->arena + s->arena_bytes;
      p->ptr[k][v] = in_arena ? (char *)p->arena[k] + (q - (char *)s->arena) : s->ptr[v];
    }
  }
  return WH_OK;
}

static int tag_of(const struct wh__pipe *p, int xi, int k) { return xi * (p->m + 1) + k; }

static wh_status send_value(wh_session *s, int xi, int k) {
  struct wh__pipe *p = s->pipe;
  const xfer *x = &p->x[xi];
  int32_t v = x->v;
  if (!s->ptr[v]) s->ptr[v] = s->ptr[wh__session_root(s, v)];
  size_t bytes = (size_t)s->bytes[v];
  wh_dtype dt = s->prog.values[v].dtype;
  size_t count = bytes / wh__dtype_size(dt);
  for (int t = 0; t < p->S; t++) {
    if (!(x->to >> t & 1)) continue;
    /* a private copy: the arena slot may be reused before the message has left */
    void *buf = malloc(bytes ? bytes : 1);
    if (!buf) return wh__session_fail(s, WH_ERR_OUT_OF_MEMORY, "wh_session_run: out of memory for a pipeline send");
    memcpy(buf, s->ptr[v], bytes);
    if (p->npend == p->cap_pend) {
      int nc = p->cap_pend ? 2 * p->cap_pend : 64;
      pending *q = realloc(p->pend, sizeof(pending) * (size_t)nc);
      if (!q) {
        free(buf);
        return WH_ERR_OUT_OF_MEMORY;
      }
      p->pend = q, p->cap_pend = nc;
    }
    wh_request *r = NULL;
    wh_status st = wh_comm_isend(s->comm, buf, count, dt, p->rank_of[t], tag_of(p, xi, k), &r);
    if (st != WH_OK) {
      free(buf);
      return wh__session_fail(s, st, "wh_session_run: pipeline send of '%s' to stage %d (rank %d): %s",
                              wh_value_name(s->g, v < s->g->n_values ? v : -1), t, p->rank_of[t], wh_last_error(s->ctx));
    }
    p->pend[p->npend++] = (pending){r, buf};
  }
  return WH_OK;
}

static wh_status recv_value(wh_session *s, int xi, int k, int slot) {
  struct wh__pipe *p = s->pipe;
  unsigned char *got = &p->got[(size_t)slot * (size_t)(p->nx + 1) + (size_t)xi];
  if (*got) return WH_OK;
  const xfer *x = &p->x[xi];
  int32_t v = x->v;
  if (!s->ptr[v]) s->ptr[v] = s->ptr[wh__session_root(s, v)];
  wh_dtype dt = s->prog.values[v].dtype;
  size_t count = (size_t)s->bytes[v] / wh__dtype_size(dt);
  wh_status st = wh_comm_recv(s->comm, s->ptr[v], count, dt, p->rank_of[x->from], tag_of(p, xi, k));
  if (st != WH_OK)
    return wh__session_fail(s, st, "wh_session_run: pipeline receive of value %d from stage %d (rank %d): %s", (int)v,
                            x->from, p->rank_of[x->from], wh_last_error(s->ctx));
  *got = 1;
  return WH_OK;
}

/* Run my nodes of one phase (forward or backward) of micro-batch k in slot k. */
static wh_status run_part(wh_session *s, int k, int backward, double w, double *loss_acc) {
  struct wh__pipe *p = s->pipe;
  const wh__program *pg = &s->prog;
  uint64_t mine = (uint64_t)1 << p->me;
  s->ptr = p->ptr[k];
  s->ex.row0 = (int64_t)k * s->mb + s->offset;
  for (int v = 0; v < s->g->n_values; v++) {
    if (s->global_feed[v]) s->ptr[v] = (char *)s->global_feed[v] + s->ex.row0 * s->row_bytes[v];
    else if (s->prog.values[v].role == WH_ROLE_INPUT) s->ptr[v] = p->ptr[0][v]; /* fed whole (no batch axis) */
  }
  for (int i = 0; i < pg->n_nodes; i++) {
    const wh__node *n = &pg->nodes[i];
    if (!(p->at[i] & mine) || n->phase == WH_PHASE_UPDATE) continue;
    if ((n->phase != WH_PHASE_FORWARD) != backward) continue;
    for (int q = 0; q < n->n_in; q++)
      if (p->x_mb[n->in[q]] >= 0 && p->x[p->x_mb[n->in[q]]].from != p->me) {
        wh_status st = recv_value(s, p->x_mb[n->in[q]], k, k);
        if (st != WH_OK) return st;
      }
    wh_status st = wh__session_run_node(s, i);
    if (st != WH_OK) return st;
    int32_t out = n->out;
    if (out < 0) continue;
    if (p->x_mb[out] >= 0 && (st = send_value(s, p->x_mb[out], k)) != WH_OK) return st;
    if (backward && s->grad_of_param[out] >= 0) {
      if (!s->ptr[out]) s->ptr[out] = s->ptr[wh__session_root(s, out)];
      float *acc = s->acc[out];
      const float *gv = s->ptr[out];
      int64_t cnt = s->bytes[out] / (int64_t)sizeof(float);
      for (int64_t e = 0; e < cnt; e++) acc[e] = (k == 0 ? 0.0f : acc[e]) + (float)w * gv[e];
    }
  }
  if (!backward && p->loss_stage == p->me && s->g->loss >= 0) {
    int32_t l = s->g->loss;
    if (!s->ptr[l]) s->ptr[l] = s->ptr[wh__session_root(s, l)];
    *loss_acc += w * (double)*(const float *)s->ptr[l];
  }
  return WH_OK;
}

/* Micro-batch order: GPipe, or 1F1B with S - me - 1 forwards ahead. seq[2j] = micro-batch,
 * seq[2j+1] = 1 for backward. */
static int schedule(const struct wh__pipe *p, int with_bwd, int *seq) {
  int n = 0, m = p->m;
  if (!with_bwd) {
    for (int k = 0; k < m; k++) seq[n++] = k, seq[n++] = 0;
    return n / 2;
  }
  if (p->sched == WH_SCHED_GPIPE) {
    for (int k = 0; k < m; k++) seq[n++] = k, seq[n++] = 0;
    for (int k = 0; k < m; k++) seq[n++] = k, seq[n++] = 1;
    return n / 2;
  }
  int warm = p->S - p->me - 1;
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

/* Wait for this step's sends; report (overwriting the context's message) only when asked: after
 * an earlier failure the first message is the one that names the cause. */
static wh_status drain(wh_session *s, int report) {
  struct wh__pipe *p = s->pipe;
  wh_status first = WH_OK;
  for (int k = 0; k < p->npend; k++) {
    wh_status st = p->pend[k].r ? wh_request_wait(p->pend[k].r) : WH_OK;
    free(p->pend[k].buf);
    if (st != WH_OK && first == WH_OK) {
      first = st;
      if (report) wh__session_fail(s, st, "wh_session_run: a pipeline send did not complete: %s", wh_last_error(s->ctx));
    }
  }
  p->npend = 0;
  return first;
}

wh_status wh__pipe_run(wh_session *s, wh_run_mode mode) {
  struct wh__pipe *p = s->pipe;
  const wh__program *pg = &s->prog;
  wh_graph *g = s->g;
  void **own_ptr = p->ptr[0];
  int with_bwd = mode != WH_RUN_EVAL;
  int *seq = malloc(sizeof(int) * (size_t)(4 * p->m + 2));
  if (!seq) return WH_ERR_OUT_OF_MEMORY;
  memset(p->got, 0, (size_t)p->m * (size_t)(p->nx + 1));
  double w = (double)s->share / (double)s->global_batch, loss_acc = 0;
  int steps = schedule(p, with_bwd, seq);
  wh_status st = WH_OK;
  for (int j = 0; j < steps && st == WH_OK; j++) st = run_part(s, seq[2 * j], seq[2 * j + 1], w, &loss_acc);
  free(seq);
  s->ptr = own_ptr;
  if (st != WH_OK) {
    char why[1024];
    snprintf(why, sizeof why, "%s", wh_last_error(s->ctx));
    drain(s, 0); /* the comm's own messages about the sends must not hide the cause */
    wh__ctx_set_error(s->ctx, "%s", why);
    return st;
  }
  uint64_t mine = (uint64_t)1 << p->me;
  if (with_bwd) {
    /* the accumulated gradients become the gradients; those the optimizer reads elsewhere go now */
    for (int v = 0; v < s->n && st == WH_OK; v++) {
      if (s->grad_of_param[v] < 0) continue;
      int produced_here = 0;
      for (int i = 0; i < pg->n_nodes && !produced_here; i++) produced_here = pg->nodes[i].out == v && (p->at[i] & mine);
      if (!produced_here) continue;
      if (!s->ptr[v]) s->ptr[v] = s->ptr[wh__session_root(s, v)];
      memcpy(s->ptr[v], s->acc[v], (size_t)s->bytes[v]);
      s->stamp[v] = s->runs;
      if (p->stage_comm && (st = wh_comm_allreduce(p->stage_comm, NULL, s->ptr[v], (size_t)s->bytes[v] / sizeof(float),
                                                   WH_F32, WH_REDUCE_SUM)) != WH_OK) {
        wh__session_fail(s, st, "wh_session_run: gradient all-reduce among stage %d's replicas: %s", p->me,
                         wh_last_error(s->ctx));
        break;
      }
      if (mode == WH_RUN_TRAIN && p->x_upd[v] >= 0) st = send_value(s, p->x_upd[v], p->m);
    }
  }
  if (st == WH_OK && mode == WH_RUN_TRAIN)
    for (int i = 0; i < pg->n_nodes && st == WH_OK; i++) {
      const wh__node *n = &pg->nodes[i];
      if (n->phase != WH_PHASE_UPDATE || !(p->at[i] & mine)) continue;
      for (int q = 0; q < n->n_in && st == WH_OK; q++) {
        int xi = p->x_upd[n->in[q]];
        if (xi >= 0 && p->x[xi].from != p->me) st = recv_value(s, xi, p->m, 0);
      }
      if (st == WH_OK) st = wh__session_run_node(s, i);
      if (st == WH_OK && n->out >= 0 && p->x_upd[n->out] >= 0) st = send_value(s, p->x_upd[n->out], p->m);
    }
  wh_status sd = drain(s, st == WH_OK);
  if (st == WH_OK) st = sd;
  if (st != WH_OK) return st;
  /* the loss: the mean over micro-batches, from the stage that computes it, on every rank */
  if (g->loss >= 0) {
    double gl = p->loss_stage == p->me ? loss_acc : 0.0;
    if ((st = wh_comm_allreduce(s->comm, NULL, &gl, 1, WH_F64, WH_REDUCE_SUM)) != WH_OK)
      return wh__session_fail(s, st, "wh_session_run: loss all-reduce: %s", wh_last_error(s->ctx));
    int32_t l = g->loss;
    if (!s->ptr[l]) s->ptr[l] = s->ptr[wh__session_root(s, l)];
    *(float *)s->ptr[l] = (float)gl;
    s->stamp[l] = s->runs;
  }
  return WH_OK;
}

int wh__pipe_stage_of(const wh_session *s, int32_t v) {
  const struct wh__pipe *p = s->pipe;
  uint64_t mine = (uint64_t)1 << p->me, any = 0;
  for (int i = 0; i < s->prog.n_nodes; i++)
    for (int k = 0; k < s->prog.nodes[i].n_in; k++)
      if (s->prog.nodes[i].in[k] == v) {
        if (p->at[i] & mine) return p->me;
        any |= p->at[i];
      }
  return any ? stage_of_bits(any) : p->me;
}

void wh__pipe_dump(const wh_session *s, wh__sb *b) {
  const struct wh__pipe *p = s->pipe;
  const wh__program *pg = &s->prog;
  uint64_t mine = (uint64_t)1 << p->me;
  int nodes = 0;
  for (int i = 0; i < pg->n_nodes; i++) nodes += (p->at[i] & mine) != 0;
  wh__sb_printf(b, "rank %d of %d: pipeline stage %d of %d, replica %d of %d (rows [%lld, %lld) of each micro-batch), "
                "%s, %d micro-batches of %lld samples (global batch %lld)\n",
                wh_comm_rank(s->comm), wh_comm_size(s->comm), p->me, p->S, p->rep, p->R, (long long)s->offset,
                (long long)(s->offset + s->share), p->sched == WH_SCHED_GPIPE ? "GPipe" : "1F1B", p->m, (long long)s->mb,
                (long long)s->global_batch);
  wh__sb_printf(b, "program: %d of %d nodes on this stage, %d micro-batch arenas of %lld bytes\n", nodes, pg->n_nodes, p->m,
                (long long)s->arena_bytes);
  unsigned char *shown = calloc((size_t)p->nx + 1, 1); /* a receive is listed at its first reader */
  for (int i = 0; i < pg->n_nodes; i++) {
    const wh__node *n = &pg->nodes[i];
    if (!(p->at[i] & mine)) continue;
    const char *ph = n->phase == WH_PHASE_FORWARD ? "forward" : n->phase == WH_PHASE_BACKWARD ? "backward" : "update";
    wh__sb_printf(b, "  #%-4d %-8s %-18s", i, ph, wh__ops[n->op]->name);
    if (n->out >= 0) {
      const char *nm = s->prog.values[n->out].name;
      wh__sb_printf(b, " %s%s%%%d", nm ? nm : "", nm ? " " : "", (int)n->out);
    }
    for (int q = 0; q < n->n_in; q++) {
      int xi = n->phase == WH_PHASE_UPDATE ? p->x_upd[n->in[q]] : p->x_mb[n->in[q]];
      if (xi < 0 || p->x[xi].from == p->me || (shown && shown[xi])) continue;
      if (shown) shown[xi] = 1;
      wh__sb_printf(b, "  <= recv %%%d from rank %d (%lld bytes, %s)", (int)n->in[q], p->rank_of[p->x[xi].from],
                    (long long)s->bytes[n->in[q]], p->x[xi].upd ? "once per step" : "per micro-batch");
    }
    int32_t o = n->out;
    for (int u = 0; o >= 0 && u < 2; u++) {
      int xi = u ? p->x_upd[o] : p->x_mb[o];
      if (xi < 0) continue;
      for (int t = 0; t < p->S; t++)
        if (p->x[xi].to >> t & 1)
          wh__sb_printf(b, "  => send to rank %d (%lld bytes, %s)", p->rank_of[t], (long long)s->bytes[o],
                        u ? "once per step" : "per micro-batch");
    }
    wh__sb_printf(b, "\n");
  }
  free(shown);
  if (p->R > 1)
    wh__sb_printf(b, "  all-reduce sum f32 of each accumulated gradient made here, among the %d replicas of stage %d\n",
                  p->R, p->me);
  if (p->loss_stage >= 0)
    wh__sb_printf(b, "  all-reduce sum f64 loss: 8 bytes, after the step, all %d ranks (stage %d contributes)\n",
                  wh_comm_size(s->comm), p->loss_stage);
}
