/* shard.c - the op registry's sharding rules: for each op, the layouts (replicated, split along a
 * dimension, partial sums) its inputs may have across the tp ranks of one replica and the layout
 * of its output. The partitioner (src/runtime/tp.c) walks a program in order, asks each node's
 * rule, and inserts the all-reduce, all-gather or local slice wherever an input's layout is not
 * the one the rule wants. Rules only ever ask for a split that divides evenly, and partial sums
 * pass only through scaling and the sum of two partial sums: every other op gets its partial
 * inputs summed first, as Megatron's f/g operators do. */
#include <stdio.h>
#include <string.h>

#include "ir.h"
#include "shard.h"

#define SH(k) (&q->values[n->in[(k)]].shape)
#define OUTSH (&q->values[n->out].shape)

static const wh__layout R_ = {WH_LAY_R, 0, 1}, P_ = {WH_LAY_P, 0, 1};
static wh__layout S_(int dim, int groups) { return (wh__layout){WH_LAY_S, (int8_t)dim, (int8_t)groups}; }

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

static int is_s(wh__layout l) { return l.kind == WH_LAY_S; }
static int is_p(wh__layout l) { return l.kind == WH_LAY_P; }

/* matmul: op(a) [.., M, K] x op(b) [K, N]. K split on both sides gives partial sums; N split on b
 * (column parallel) splits the output's last dimension; a split of a's rows or batch dimensions
 * carries over to the output. A batched b, or partial inputs, run replicated. */
void wh__sr_matmul(wh__shard_q *q, wh__node *n) {
  const wh__shape *a = SH(0), *b = SH(1);
  int ra = a->ndim, rb = b->ndim, ta = (int)n->ia[0], tb = (int)n->ia[1];
  if (rb != 2) return;
  int ak = ta ? ra - 2 : ra - 1, am = ta ? ra - 1 : ra - 2, bk = tb ? 1 : 0, bn = tb ? 0 : 1;
  wh__layout la = q->in[0], lb = q->in[1];
  if (is_s(la) && la.dim == ak && (lb.kind == WH_LAY_R || (is_s(lb) && lb.dim == bk && lb.groups == la.groups)) &&
      wh__lay_can_split(b, bk, la.groups, q->tp)) {
    q->want[0] = la, q->want[1] = S_(bk, la.groups), q->out = P_;
  } else if (is_s(lb) && lb.dim == bk && la.kind == WH_LAY_R && wh__lay_can_split(a, ak, lb.groups, q->tp) &&
             a->d[ak] > 0) {
    q->want[0] = S_(ak, lb.groups), q->want[1] = lb, q->out = P_;
  } else if (is_s(lb) && lb.dim == bn && !is_p(la)) {
    q->want[1] = lb, q->out = S_(ra - 1, lb.groups);
  } else if (is_s(la) && la.dim != ak && a->d[la.dim] > 0 && !is_p(lb)) {
    q->want[0] = la, q->out = S_(la.dim == am ? ra - 2 : la.dim, la.groups);
  }
}

/* Elementwise binary ops with broadcasting: a split carries over when every input either has the
 * split dimension at full size (it is split alike) or broadcasts along it (it stays whole). Two
 * partial sums add (or subtract) into a partial sum. */
void wh__sr_binary(wh__shard_q *q, wh__node *n) {
  const wh__shape *o = OUTSH;
  if ((n->op == WH_OP_ADD || n->op == WH_OP_SUB) && is_p(q->in[0]) && is_p(q->in[1])) {
    q->want[0] = q->want[1] = q->out = P_;
    return;
  }
  for (int k = 0; k < 2; k++) {
    wh__layout l = q->in[k];
    const wh__shape *s = SH(k);
    if (!is_s(l)) continue;
    int od = l.dim + (o->ndim - s->ndim);
    if (od < 0 || s->d[l.dim] != o->d[od]) continue;
    for (int j = 0; j < 2; j++) {
      const wh__shape *sj = SH(j);
      int jd = od - (o->ndim - sj->ndim);
      q->want[j] = jd >= 0 && sj->d[jd] == o->d[od] ? S_(jd, l.groups) : R_;
    }
    q->out = S_(od, l.groups);
    return;
  }
}

void wh__sr_scale(wh__shard_q *q, wh__node *n) {
  (void)n;
  if (q->in[0].kind != WH_LAY_R) q->want[0] = q->out = q->in[0];
}

/* bias_add(x, b) along axis: the bias is split with x's split of that axis. */
void wh__sr_bias_add(wh__shard_q *q, wh__node *n) {
  wh__layout l = q->in[0];
  if (!is_s(l)) return;
  q->want[0] = q->out = l;
  if (l.dim == n->ia[0]) q->want[1] = S_(0, l.groups);
}

/* Elementwise unary ops (and the gradients of the activations, (saved, dy)): splits carry over. */
void wh__sr_unary(wh__shard_q *q, wh__node *n) {
  for (int k = n->n_in - 1; k >= 0; k--)
    if (is_s(q->in[k]) && q->values[n->in[k]].shape.ndim == OUTSH->ndim) {
      for (int j = 0; j < n->n_in; j++) q->want[j] = q->in[k];
      q->out = q->in[k];
      return;
    }
}

/* Ops along the last axis (softmax, log_softmax and their gradients, layernorm and the gradient
 * of its input): a split of any other dimension carries over; the [C] parameters stay whole. */
void wh__sr_lastaxis(wh__shard_q *q, wh__node *n) {
  int r = OUTSH->ndim;
  for (int k = 0; k < n->n_in; k++) {
    wh__layout l = q->in[k];
    if (!is_s(l) || q->values[n->in[k]].shape.ndim != r || l.dim == r - 1) continue;
    for (int j = 0; j < n->n_in; j++) q->want[j] = q->values[n->in[j]].shape.ndim == r ? l : R_;
    q->out = l;
    return;
  }
}

/* sum / mean over the axes in ia[0] (ia[1]: keep them): a split of a summed axis gives partial
 * sums (a mean of a split axis runs whole); a split of a kept axis carries over, renumbered. */
void wh__sr_reduce(wh__shard_q *q, wh__node *n) {
  wh__layout l = q->in[0];
  if (!is_s(l)) return;
  uint64_t mask = (uint64_t)n->ia[0];
  if (mask >> l.dim & 1) {
    if (n->op == WH_OP_SUM) q->want[0] = l, q->out = P_;
    return;
  }
  int d = l.dim;
  if (!n->ia[1])
    for (int i = 0; i < l.dim; i++) d -= (int)(mask >> i & 1);
  q->want[0] = l, q->out = S_(d, l.groups);
}

/* sum_to(target in ia): a split of a dimension the target keeps carries over; of one it sums,
 * partial sums. */
void wh__sr_sum_to(wh__shard_q *q, wh__node *n) {
  wh__layout l = q->in[0];
  if (!is_s(l)) return;
  const wh__shape *s = SH(0);
  int od = l.dim - (s->ndim - n->n_ia);
  q->want[0] = l;
  if (od >= 0 && n->ia[od] == s->d[l.dim]) {
    q->out = S_(od, l.groups);
    n->ia[od] /= q->tp;
  } else {
    q->out = P_;
  }
}

/* broadcast_to(shape in ia[1..]): a split carries over to the dimension it aligns with. */
void wh__sr_broadcast_to(wh__shard_q *q, wh__node *n) {
  wh__layout l = q->in[0];
  if (!is_s(l)) return;
  const wh__shape *s = SH(0);
  int on = n->n_ia - 1, od = l.dim + (on - s->ndim);
  if (od < 0 || n->ia[1 + od] != s->d[l.dim]) return;
  q->want[0] = l, q->out = S_(od, l.groups);
  n->ia[1 + od] /= q->tp;
}

/* Where the first element of in-dimension d lands in a reshape: the output dimension that starts
 * the same run of elements, when d leads its group of dimensions (in and out have equal products);
 * -1 otherwise. Products are c * B^p for symbolic batch dimensions. */
static int reshape_map(const wh__shape *in, const wh__shape *out, int d) {
  int i = 0, j = 0;
  while (i < in->ndim || j < out->ndim) {
    int gi = i, gj = j, pi = 0, po = 0;
    int64_t ci = 1, co = 1;
    int take_in = i < in->ndim, take_out = j < out->ndim;
    for (;;) {
      if (take_in) {
        int64_t v = in->d[i++];
        if (v < 0) pi++, v = -v;
        ci *= v;
      }
      if (take_out) {
        int64_t v = out->d[j++];
        if (v < 0) po++, v = -v;
        co *= v;
      }
      if (ci == co && pi == po) break;
      /* the side with the smaller product takes the next dimension */
      take_in = pi < po || (pi == po && ci < co);
      take_out = !take_in;
      if ((take_in && i >= in->ndim) || (take_out && j >= out->ndim)) return -1;
    }
    if (d >= gi && d < i) {
      for (int k = gi; k < d; k++)
        if (in->d[k] != 1) return -1;
      for (int k = gj; k < j; k++)
        if (out->d[k] != 1) return k;
      return -1;
    }
  }
  return -1;
}

void wh__sr_reshape(wh__shard_q *q, wh__node *n) {
  wh__layout l = q->in[0];
  if (!is_s(l)) return; /* partial sums are summed before a view: its source is summed once for all readers */
  const wh__shape *in = SH(0), *out = OUTSH;
  int od = reshape_map(in, out, l.dim);
  if (od < 0 || !wh__lay_can_split(out, od, l.groups, q->tp)) return;
  q->want[0] = l, q->out = S_(od, l.groups);
  n->ia[od] /= q->tp;
}

void wh__sr_permute(wh__shard_q *q, wh__node *n) {
  wh__layout l = q->in[0];
  if (!is_s(l)) return;
  for (int j = 0; j < n->n_ia; j++)
    if (n->ia[j] == l.dim) {
      q->want[0] = l, q->out = S_(j, l.groups);
      return;
    }
}

/* slice / slice_grad along ia[0]; concat along ia[0]: splits of other dimensions carry over. */
void wh__sr_slice(wh__shard_q *q, wh__node *n) {
  wh__layout l = q->in[0];
  for (int k = 1; k < n->n_in && is_s(l); k++)
    if (!wh__lay_eq(q->in[k], l)) l = R_;
  if (!is_s(l) || l.dim == n->ia[0]) return;
  for (int k = 0; k < n->n_in; k++) q->want[k] = l;
  q->out = l;
}

/* embedding(table [V, D], indices): a table split along D splits the rows it gathers; split
 * along V (Megatron's vocabulary-parallel embedding) each rank gathers the rows it holds and
 * zeros for the others: partial sums. */
void wh__sr_embedding(wh__shard_q *q, wh__node *n) {
  wh__layout l = q->in[0];
  if (!is_s(l) || l.groups != 1) return;
  if (l.dim == 1) {
    q->want[0] = l, q->out = S_(OUTSH->ndim - 1, 1);
  } else if (l.dim == 0) {
    int64_t v = SH(0)->d[0];
    q->want[0] = l, q->out = P_;
    n->op = WH_OP_TP_EMBEDDING;
    n->ia[0] = v / q->tp * q->index, n->ia[1] = v, n->n_ia = 2;
  }
}

/* cross_entropy(logits, labels) and its gradient (logits, labels, dy): logits split along the
 * classes (the vocabulary-parallel output layer) run as the sharded cross-entropy, which combines
 * the ranks' row maxima, sums of exponentials and target logits, and never gathers the logits. */
void wh__sr_cross_entropy(wh__shard_q *q, wh__node *n) {
  wh__layout l = q->in[0];
  const wh__shape *x = SH(0);
  if (!is_s(l) || l.groups != 1 || l.dim != x->ndim - 1) return;
  int64_t v = x->d[l.dim];
  q->want[0] = l;
  if (n->op == WH_OP_CROSS_ENTROPY) {
    n->op = WH_OP_TP_CROSS_ENTROPY;
  } else {
    n->op = WH_OP_TP_CROSS_ENTROPY_GRAD;
    q->out = l;
  }
  n->ia[0] = v / q->tp * q->index, n->ia[1] = v, n->n_ia = 2;
}

/* embedding_grad(indices, dy) -> [V, D]: dy split along D gives the table's gradient split so. */
void wh__sr_embedding_grad(wh__shard_q *q, wh__node *n) {
  wh__layout l = q->in[1];
  if (!is_s(l) || l.dim != SH(1)->ndim - 1) return;
  q->want[1] = l, q->out = S_(1, l.groups);
}

/* attention(qkv [.., T, 3C]) with heads: qkv split along its last dimension in 3 groups (this
 * rank's columns of q, of k and of v) is a whole number of heads per rank; the output is split
 * along C. Its gradient (qkv, dy) likewise. */
void wh__sr_attention(wh__shard_q *q, wh__node *n) {
  wh__layout l = q->in[0];
  int r = SH(0)->ndim;
  if (!is_s(l) || l.dim != r - 1 || l.groups != 3 || n->ia[0] % q->tp) return;
  q->want[0] = l;
  if (n->op == WH_OP_ATTENTION_GRAD) q->want[1] = S_(r - 1, 1), q->out = l;
  else q->out = S_(r - 1, 1);
  n->ia[0] /= q->tp;
}

/* Optimizer updates: the gradient and the state take the parameter's layout; the clipping
 * coefficient is whole. */
void wh__sr_update(wh__shard_q *q, wh__node *n) {
  int has_clip = (int)(n->op == WH_OP_SGD_UPDATE ? n->ia[1] : n->ia[0]);
  wh__layout l = q->in[0];
  if (is_p(l)) l = R_;
  for (int k = 0; k < n->n_in; k++) q->want[k] = (has_clip && k == n->n_in - 1) ? R_ : l;
}
