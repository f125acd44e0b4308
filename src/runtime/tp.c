/* tp.c - the session's side of operator sharding (the rewrite itself is partition/sharding.c):
 * communicators, parameters cut at creation, gathered on request, the dump. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/ctx.h"
#include "../planner/planner.h"
#include "session_impl.h"

/* ---- the session's side */

struct wh__tp {
  int tp, index, replica, n_rep;
  wh_comm *group;     /* this replica's ranks, in shard order */
  wh_comm *dp;        /* the ranks holding this shard, one per replica */
  int *group_ranks;   /* world ranks of the group */
  int *dp_ranks;      /* world ranks of the shard's ranks across the replicas */
  wh__layout *lay;    /* per program value */
  int counts[3];      /* conversions inserted: all-reduce, all-gather, slice */
};

void wh__tp_destroy(wh_session *s) {
  struct wh__tp *t = s->tpx;
  if (!t) return;
  wh_comm_destroy(t->group);
  wh_comm_destroy(t->dp);
  free(t->group_ranks);
  free(t->dp_ranks);
  free(t->lay);
  free(t);
  s->tpx = NULL;
}

wh_status wh__tp_create(wh_session *s, const wh_plan *pl, wh_comm *world) {
  const wh__stage *st0 = &pl->st[0];
  int tp = st0->tp, nrep = st0->ndev / tp, me = wh_comm_rank(world), at = -1;
  for (int i = 0; i < st0->ndev; i++)
    if (st0->dev[i] == me) at = i;
  if (at < 0) {
    wh__ctx_set_error(s->ctx, "wh_session_create: rank %d has no place in the plan", me);
    return WH_ERR_INVALID_ARGUMENT;
  }
  struct wh__tp *t = calloc(1, sizeof *t);
  int *ranks = malloc(sizeof(int) * (size_t)(st0->ndev + 1));
  if (!t || !ranks) {
    free(t), free(ranks);
    return WH_ERR_OUT_OF_MEMORY;
  }
  s->tpx = t;
  t->tp = tp, t->n_rep = nrep, t->replica = at / tp, t->index = at % tp;
  t->group_ranks = ranks;
  wh_status rs = WH_OK;
  /* every rank takes part in every split, in the same order: the replicas, then the shards */
  for (int r = 0; r < nrep && rs == WH_OK; r++) {
    wh_comm *c = NULL;
    rs = wh_comm_split(world, tp, st0->dev + (size_t)r * (size_t)tp, &c);
    if (c) t->group = c;
  }
  if (rs == WH_OK) memcpy(ranks, st0->dev + (size_t)t->replica * (size_t)tp, sizeof(int) * (size_t)tp);
  int *col = malloc(sizeof(int) * (size_t)nrep);
  for (int k = 0; k < tp && rs == WH_OK; k++) {
    if (!col) {
      rs = WH_ERR_OUT_OF_MEMORY;
      break;
    }
    for (int r = 0; r < nrep; r++) col[r] = st0->dev[r * tp + k];
    wh_comm *c = NULL;
    rs = wh_comm_split(world, nrep, col, &c);
    if (c) {
      t->dp = c;
      t->dp_ranks = col;
      col = malloc(sizeof(int) * (size_t)nrep);
    }
  }
  free(col);
  if (rs != WH_OK) {
    if (rs != WH_ERR_OUT_OF_MEMORY)
      wh__ctx_set_error(s->ctx, "wh_session_create: operator-sharding communicators: %s", wh_last_error(s->ctx));
    return rs;
  }
  char msg[512] = "";
  rs = wh__program_shard(s->g, &s->prog, tp, t->index, &t->lay, t->counts, msg, sizeof msg);
  if (rs != WH_OK) wh__ctx_set_error(s->ctx, "wh_session_create: operator sharding: %s", msg);
  return rs;
}

wh_comm *wh__tp_group(const wh_session *s) { return s->tpx ? s->tpx->group : NULL; }
wh_comm *wh__tp_dp(const wh_session *s) { return s->tpx ? s->tpx->dp : NULL; }

wh__layout wh__tp_layout(const wh_session *s, int32_t v) {
  static const wh__layout r = {WH_LAY_R, 0, 1};
  return s->tpx && v >= 0 && v < s->n ? s->tpx->lay[v] : r;
}

int wh__tp_dp_world(const wh_session *s, int i) { return s->tpx && s->tpx->dp_ranks ? s->tpx->dp_ranks[i] : i; }

int wh__tp_degree(const wh_session *s) { return s->tpx ? s->tpx->tp : 1; }

int64_t wh__tp_whole_bytes(const wh_session *s, int32_t v) {
  wh__layout l = wh__tp_layout(s, v);
  return l.kind == WH_LAY_S ? s->bytes[v] * s->tpx->tp : s->bytes[v];
}

/* Copy between whole value v (data `whole`) and shard `index` of it (data `shard`). */
static void shard_copy(const wh_session *s, int gather, int32_t v, int index, void *whole, void *shard) {
  const wh__value *gv = &s->g->values[v];
  wh__layout l = s->tpx->lay[v];
  int64_t d[WH_MAX_DIMS];
  for (int i = 0; i < gv->shape.ndim; i++) d[i] = wh__dim(gv->shape.d[i], s->batch);
  wh__shard_copy(gather, d, gv->shape.ndim, l.dim, l.groups, s->tpx->tp, index, whole, shard, sizeof(float));
}

/* The whole value v into out (bytes of the whole): gathered from the replica's shards, or the
 * partial sums added. Collective over the replica's ranks. */
wh_status wh__tp_whole(wh_session *s, const char *who, int32_t v, void *out) {
  struct wh__tp *t = s->tpx;
  size_t part = (size_t)s->bytes[v];
  wh_status st;
  if (t->lay[v].kind == WH_LAY_P) {
    memcpy(out, s->ptr[v], part);
    st = wh_comm_allreduce(t->group, NULL, out, part / sizeof(float), WH_F32, WH_REDUCE_SUM);
  } else {
    void *buf = malloc(part * (size_t)t->tp + 1);
    if (!buf) return wh__session_fail(s, WH_ERR_OUT_OF_MEMORY, "%s: out of memory", who);
    st = wh_comm_allgather(t->group, s->ptr[v], buf, part / sizeof(float), NULL, WH_F32);
    for (int r = 0; st == WH_OK && r < t->tp; r++) shard_copy(s, 1, v, r, out, (char *)buf + part * (size_t)r);
    free(buf);
  }
  if (st != WH_OK)
    return wh__session_fail(s, st, "%s: gathering '%s' over the replica's ranks: %s", who, wh_value_name(s->g, v),
                            wh_last_error(s->ctx));
  return WH_OK;
}

/* This rank's shard of the whole parameter data (all of it when v is not split). */
void wh__tp_cut(const wh_session *s, int32_t v, const void *whole, void *shard) {
  if (wh__tp_layout(s, v).kind != WH_LAY_S)
    memcpy(shard, whole, (size_t)wh__numel(&s->g->values[v].shape, s->batch) * wh__dtype_size(s->g->values[v].dtype));
  else shard_copy(s, 0, v, s->tpx->index, (void *)whole, shard);
}

void wh__tp_dump_head(const wh_session *s, wh__sb *b) {
  const struct wh__tp *t = s->tpx;
  int split = 0;
  for (int v = 0; v < s->g->n_values; v++)
    if (s->g->values[v].role == WH_ROLE_PARAM && t->lay[v].kind == WH_LAY_S) split++;
  wh__sb_printf(b, "operator sharding: shard %d of %d in replica %d of %d, with ranks", t->index, t->tp, t->replica,
                t->n_rep);
  for (int i = 0; i < t->tp; i++) wh__sb_printf(b, "%s%d", i ? "," : " ", t->group_ranks[i]);
  wh__sb_printf(b, "; %d parameters split; inserted %d all-reduce, %d all-gather, %d slice\n", split, t->counts[0],
                t->counts[1], t->counts[2]);
}

/* The collective behind node n of the program, for the dump; 0 if it is none. */
int wh__tp_dump_node(const wh_session *s, const wh__node *n, wh__sb *b) {
  const struct wh__tp *t = s->tpx;
  if (!t) return 0;
  char lb[48];
  if (n->op == WH_OP_TP_ALLREDUCE) {
    wh__sb_printf(b, "  => all-reduce sum f32 over ranks");
  } else if (n->op == WH_OP_TP_ALLGATHER) {
    wh__sb_printf(b, "  => all-gather f32 (%s) over ranks",
                  wh__lay_str((wh__layout){WH_LAY_S, (int8_t)n->ia[0], (int8_t)n->ia[1]}, lb, sizeof lb));
  } else if (n->op == WH_OP_TP_NORM_CLIP) {
    wh__sb_printf(b, "  => all-reduce sum f64 (squares of %lld split gradients) over ranks", (long long)n->ia[0]);
  } else if (n->op == WH_OP_TP_SLICE) {
    wh__sb_printf(b, "  => local slice, shard %lld of %lld (%s)", (long long)n->ia[3], (long long)n->ia[2],
                  wh__lay_str((wh__layout){WH_LAY_S, (int8_t)n->ia[0], (int8_t)n->ia[1]}, lb, sizeof lb));
    return 1;
  } else {
    return 0;
  }
  for (int i = 0; i < t->tp; i++) wh__sb_printf(b, "%s%d", i ? "," : " ", t->group_ranks[i]);
  int64_t by = n->op == WH_OP_TP_NORM_CLIP ? 8 : s->bytes[n->out];
  wh__sb_printf(b, " (%lld bytes)", (long long)by);
  return 1;
}
