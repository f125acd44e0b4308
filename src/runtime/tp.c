/* tp.c - the session's side of operator sharding (the rewrite itself is partition/sharding.c):
 * communicators, parameters cut at creation, gathered on request, the dump. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/ctx.h"
#include "session_impl.h"

struct wh__tp {
  int tp, index, replica, n_rep;
  wh_comm *group;          /* this replica's ranks, in shard order (the program's TP group) */
  const int *group_ranks;  /* world ranks of the group (the program's split) */
  const int *dp_ranks;     /* world ranks of the shard's ranks across the replicas */
  const wh__layout *lay;   /* per program value (the program's) */
  const int *counts;       /* conversions inserted: all-reduce, all-gather, slice */
};

void wh__tp_destroy(wh_session *s) {
  free(s->tpx);
  s->tpx = NULL;
}

/* The split of group `grp` that holds this rank. */
static const int *member_of(const wh_session *s, int grp) {
  int me = wh_comm_rank(s->comm);
  for (int i = 0; i < s->prog.n_splits; i++) {
    const wh__split *sp = &s->prog.splits[i];
    for (int k = 0; sp->group == grp && k < sp->n; k++)
      if (sp->ranks[k] == me) return sp->ranks;
  }
  return NULL;
}

wh_status wh__tp_create(wh_session *s) {
  const wh__place *pc = &s->prog.place;
  struct wh__tp *t = calloc(1, sizeof *t);
  if (!t) return WH_ERR_OUT_OF_MEMORY;
  s->tpx = t;
  t->tp = pc->tp, t->index = pc->shard, t->replica = pc->replica, t->n_rep = pc->n_replicas;
  t->group = s->grp[WH_GROUP_TP];
  t->group_ranks = member_of(s, WH_GROUP_TP);
  t->dp_ranks = member_of(s, WH_GROUP_DP);
  t->lay = s->prog.lay;
  t->counts = s->prog.tp_counts;
  if (!t->group || !t->group_ranks || !t->lay) {
    wh__ctx_set_error(s->ctx, "wh_session_create: operator sharding: rank %d is in no replica's group",
                      wh_comm_rank(s->comm));
    return WH_ERR_INTERNAL;
  }
  return WH_OK;
}

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
  wh_status st = WH_OK;
  /* this rank's part on the host (a device session's through a copy) */
  void *mine = s->ptr[v], *copy = NULL;
  if (s->dev) {
    if (!(copy = malloc(part + 1))) return wh__session_fail(s, WH_ERR_OUT_OF_MEMORY, "%s: out of memory", who);
    if ((st = wh__cuda_copy(s->dev, copy, s->ptr[v], part, WH__D2H)) != WH_OK) {
      free(copy);
      return wh__session_fail(s, st, "%s: %s", who, wh__cuda_error(s->dev));
    }
    mine = copy;
  }
  if (t->lay[v].kind == WH_LAY_P) {
    memcpy(out, mine, part);
    st = wh_comm_allreduce(t->group, NULL, out, part / sizeof(float), WH_F32, WH_REDUCE_SUM);
  } else {
    void *buf = malloc(part * (size_t)t->tp + 1);
    if (!buf) {
      free(copy);
      return wh__session_fail(s, WH_ERR_OUT_OF_MEMORY, "%s: out of memory", who);
    }
    st = wh_comm_allgather(t->group, mine, buf, part / sizeof(float), NULL, WH_F32);
    for (int r = 0; st == WH_OK && r < t->tp; r++) shard_copy(s, 1, v, r, out, (char *)buf + part * (size_t)r);
    free(buf);
  }
  free(copy);
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
  if (n->op == WH_OP_TP_ALLREDUCE || n->op == WH_OP_TP_ALLREDUCE_START) {
    wh__sb_printf(b, "  => all-reduce sum f32 over ranks");
  } else if (n->op == WH_OP_TP_ALLGATHER) {
    wh__sb_printf(b, "  => all-gather f32 (%s) over ranks",
                  wh__lay_str((wh__layout){WH_LAY_S, (int8_t)n->ia[0], (int8_t)n->ia[1]}, lb, sizeof lb));
  } else if (n->op == WH_OP_TP_NORM_CLIP) {
    wh__sb_printf(b, "  => all-reduce sum f64 (squares of %lld split gradients) over ranks", (long long)n->ia[0]);
  } else if (n->op == WH_OP_TP_WAIT) {
    wh__sb_printf(b, "  => waits for %%%d's all-reduce", (int)n->in[0]);
    return 1;
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
