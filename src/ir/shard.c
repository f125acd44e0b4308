/* shard.c - where a value lives across the tp ranks of one replica (replicated, split along a
 * dimension, partial sums), and the sharding rules more than one op family shares.
 * An op's sharding rule (in its row, ir/ops/<family>.c) gives the layouts its inputs may have and
 * the layout of its output. The partitioner (src/partition/sharding.c) walks a program in order,
 * asks each node's rule, and inserts the all-reduce, all-gather or local slice wherever an input's
 * layout is not the one the rule wants. Rules only ever ask for a split that divides evenly, and
 * partial sums pass only through scaling and the sum of two partial sums: every other op gets its
 * partial inputs summed first, as Megatron's f/g operators do. */
#include <stdio.h>
#include <string.h>

#include "ops/family.h"

int wh__lay_eq(wh__layout a, wh__layout b) {
  if (a.kind != b.kind) return 0;
  return a.kind != WH_LAY_S || (a.dim == b.dim && a.groups == b.groups);
}

wh__shape wh__lay_local(const wh__shape *g, wh__layout l, int tp) {
  wh__shape s = *g;
  if (l.kind == WH_LAY_S && l.dim < s.ndim) s.d[l.dim] /= tp;
  return s;
}

int wh__lay_can_split(const wh__shape *sh, int dim, int groups, int tp) {
  return dim >= 0 && dim < sh->ndim && groups >= 1 && sh->d[dim] > 0 && sh->d[dim] % ((int64_t)groups * tp) == 0;
}

const char *wh__lay_str(wh__layout l, char *buf, int cap) {
  if (l.kind == WH_LAY_R) snprintf(buf, (size_t)cap, "replicated");
  else if (l.kind == WH_LAY_P) snprintf(buf, (size_t)cap, "partial sum");
  else if (l.groups > 1) snprintf(buf, (size_t)cap, "split dim %d in %d groups", l.dim, l.groups);
  else snprintf(buf, (size_t)cap, "split dim %d", l.dim);
  return buf;
}

/* Ops along the last axis (softmax, log_softmax and their gradients, layernorm and the gradient
 * of its input): a split of any other dimension carries over; the [C] parameters stay whole. */
void wh__sr_lastaxis(wh__shard_q *q, wh__node *n) {
  int r = OUTSH->ndim;
  for (int k = 0; k < n->n_in; k++) {
    wh__layout l = q->in[k];
    if (!is_s(l) || q->values[n->in[k]].shape.ndim != r || l.dim == r - 1) continue;
    for (int j = 0; j < n->n_in; j++) q->want[j] = q->values[n->in[j]].shape.ndim == r ? l : LAY_R;
    q->out = l;
    return;
  }
}
