/* inspect.c - looking at a session: the per-op profile report and the dump of this rank's program
 * (text and DOT), with its collectives, buckets and peers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/ctx.h"
#include "../base/strbuf.h"
#include "session_impl.h"

wh_status wh_session_profile(wh_session *s, int on) {
  if (!s) return WH_ERR_INVALID_ARGUMENT;
  s->prof = on != 0;
  s->prof_runs = 0;
  memset(s->prof_s, 0, sizeof s->prof_s);
  memset(s->prof_calls, 0, sizeof s->prof_calls);
  return WH_OK;
}

wh_status wh_session_profile_report(const wh_session *s, char **out) {
  if (out) *out = NULL;
  if (!s || !out) return WH_ERR_INVALID_ARGUMENT;
  if (!s->prof_runs) {
    wh__ctx_set_error(s->ctx, "wh_session_profile_report: no run was profiled (wh_session_profile(s, 1) first)");
    return WH_ERR_STATE;
  }
  int order[WH_OP_COUNT], n = 0;
  double total = 0;
  for (int i = 0; i < WH_OP_COUNT; i++)
    if (s->prof_calls[i]) order[n++] = i, total += s->prof_s[i];
  for (int i = 1; i < n; i++) /* by time, largest first */
    for (int j = i; j > 0 && s->prof_s[order[j]] > s->prof_s[order[j - 1]]; j--) {
      int t = order[j];
      order[j] = order[j - 1], order[j - 1] = t;
    }
  double r = (double)s->prof_runs;
  wh__sb b = {0};
  wh__sb_printf(&b, "profile: %lld run%s on %s, %.3f ms per run in kernels (each node timed alone)\n",
                (long long)s->prof_runs, s->prof_runs == 1 ? "" : "s", s->dev ? "CUDA" : "the CPU", 1e3 * total / r);
  wh__sb_printf(&b, "  %-22s %8s %10s %7s\n", "op", "calls", "ms", "share");
  for (int k = 0; k < n; k++) {
    int i = order[k];
    wh__sb_printf(&b, "  %-22s %8.1f %10.3f %6.1f%%\n", wh__ops[i]->name, (double)s->prof_calls[i] / r,
                  1e3 * s->prof_s[i] / r, total > 0 ? 100.0 * s->prof_s[i] / total : 0.0);
  }
  if (b.oom) {
    free(b.s);
    wh__ctx_set_error(s->ctx, "wh_session_profile_report: out of memory");
    return WH_ERR_OUT_OF_MEMORY;
  }
  *out = b.s;
  return WH_OK;
}

/* ---- inspection: this rank's program as it runs */

static void sb_val(wh__sb *b, const wh_session *s, int32_t v, int dot) {
  const wh__value *val = &s->prog.values[v];
  const char *nm = val->name;
  if (nm && !dot) wh__sb_printf(b, "%s", nm);
  else if (!nm) wh__sb_printf(b, "%%%d", v);
  else { /* the quoted name without its quotes */
    wh__sb q = {0};
    wh__sb_quoted(&q, nm);
    if (q.s) {
      q.s[q.n - 1] = 0;
      wh__sb_printf(b, "%s", q.s + 1);
    } else {
      b->oom |= q.oom;
    }
    free(q.s);
  }
  wh__sb_printf(b, "%s%s[", v >= s->prog.n_graph_values ? "'" : "", dot ? "\\n" : " ");
  wh__sb_printf(b, "%s", wh__dtype_name(val->dtype));
  for (int i = 0; i < val->shape.ndim; i++) wh__sb_printf(b, "%s%lld", i ? "," : " ", (long long)wh__dim(val->shape.d[i], s->batch));
  wh__sb_printf(b, "]");
}

/* The gradient all-reduce buckets, in the order backward fills them (the packing of fusion.c:
 * a gradient of a bucket or more is reduced alone, in place; smaller ones are packed until the
 * next would overflow). bucket[i] is the bucket of node i (a reduction's start), or -1. */
static int dp_buckets(const wh_session *s, int *bucket, int64_t *bucket_bytes) {
  int nb = 0, cur = -1;
  int64_t used = 0, cap = s->dev || s->prog.place.zero1 ? 1 : (int64_t)s->bucket_bytes; /* device, ZeRO-1: one each */
  for (int i = 0; i < s->prog.n_nodes; i++) {
    const wh__node *n = &s->prog.nodes[i];
    bucket[i] = -1;
    if (n->op != WH_OP_DP_REDUCE_START && n->op != WH_OP_ZERO_RS_START) continue;
    int64_t by = s->bytes[n->ia[1]]; /* the gradient's bytes */
    if (by == 0) continue;
    if (by >= cap) {
      cur = -1;
      bucket_bytes[nb] = by;
      bucket[i] = nb++;
      continue;
    }
    if (cur >= 0 && used + by > cap) cur = -1;
    if (cur < 0) {
      cur = nb++;
      used = 0;
      bucket_bytes[cur] = 0;
    }
    used += by;
    bucket_bytes[cur] += by;
    bucket[i] = cur;
    if (used == cap) cur = -1;
  }
  return nb;
}

static const char *phase_name(wh__phase p) {
  return p == WH_PHASE_FORWARD ? "forward" : p == WH_PHASE_BACKWARD ? "backward" : "update";
}

/* What a pipeline's send or receive moves, after its node line. */
static void sb_transfer(wh__sb *b, const wh_session *s, const wh__node *n) {
  int32_t v = n->op == WH_OP_SEND ? n->in[0] : n->out;
  const char *when = n->ia[3] ? "per micro-batch" : "once per step";
  long long by = s->bytes[v];
  char rows[64] = "";
  if (n->n_ia >= 7 && n->ia[6] >= 0) {
    by = (long long)(n->ia[6] - n->ia[5]) * wh__numel(&s->prog.values[v].shape, 1) *
         (long long)wh__dtype_size(s->prog.values[v].dtype);
    if (by != s->bytes[v]) snprintf(rows, sizeof rows, ", rows %lld..%lld", (long long)n->ia[5], (long long)n->ia[6] - 1);
  }
  if (n->op == WH_OP_SEND)
    wh__sb_printf(b, "  => send to rank %lld (%lld bytes%s, %s)", (long long)n->ia[1], by, rows, when);
  else
    wh__sb_printf(b, "  <= recv %%%d from rank %lld (%lld bytes%s, %s)", (int)v, (long long)n->ia[1], by, rows, when);
}

/* One line per node: index, phase, op, output and inputs at their local shapes, then what it
 * communicates. */
static void node_lines(wh__sb *b, const wh_session *s, const int *bucket) {
  const wh__program *pg = &s->prog;
  for (int i = 0; i < pg->n_nodes; i++) {
    const wh__node *n = &pg->nodes[i];
    wh__sb_printf(b, "  #%-4d %-8s %-18s ", i, phase_name(n->phase), wh__ops[n->op]->name);
    if (n->out >= 0) sb_val(b, s, n->out, 0);
    else wh__sb_printf(b, "-");
    wh__sb_printf(b, " <-");
    for (int k = 0; k < n->n_in; k++) {
      wh__sb_printf(b, "%s", k ? ", " : " ");
      sb_val(b, s, n->in[k], 0);
    }
    wh__tp_dump_node(s, n, b);
    if (bucket[i] >= 0)
      wh__sb_printf(b, "  => %s %d (%lld bytes)", pg->place.zero1 ? "reduce-scatter" : "all-reduce bucket", bucket[i],
                    (long long)s->bytes[n->ia[1]]);
    if (n->op == WH_OP_SEND || n->op == WH_OP_RECV) sb_transfer(b, s, n);
    if (n->op == WH_OP_GRAD_ACC || n->op == WH_OP_LOSS_ACC)
      wh__sb_printf(b, "  (%s)", n->ia[1] ? "first micro-batch: sets" : "later micro-batches: adds");
    wh__sb_printf(b, "\n");
  }
}

/* The schedule in one line: how many nodes each part runs. */
static void schedule_line(wh__sb *b, const wh_session *s) {
  const wh__program *pg = &s->prog;
  wh__sb_printf(b, "schedule: %d part%s:", pg->n_parts, pg->n_parts == 1 ? "" : "s");
  for (int j = 0; j < pg->n_parts; j++) {
    const wh__part *pt = &pg->parts[j];
    if (pt->mb < 0) wh__sb_printf(b, "%s once per step %d", j ? "," : "", pt->n);
    else wh__sb_printf(b, "%s %s%d %d", j ? "," : "", pg->place.pipelined ? (pt->backward ? "B" : "F") : "mb", pt->mb, pt->n);
  }
  wh__sb_printf(b, " nodes\n");
}

static void dump_pipe(wh__sb *b, const wh_session *s) {
  const wh__program *pg = &s->prog;
  const wh__place *pc = &pg->place;
  wh__sb_printf(b, "rank %d of %d: pipeline stage %d of %d, replica %d of %d (rows [%lld, %lld) of each micro-batch), "
                "%s, %d micro-batches of %lld samples (global batch %lld)\n",
                wh_comm_rank(s->comm), wh_comm_size(s->comm), pc->stage, pc->n_stages, pc->replica, pc->n_replicas,
                (long long)pc->offset, (long long)(pc->offset + pc->share), pc->schedule == WH_SCHED_GPIPE ? "GPipe" : "1F1B",
                pc->micro_batches, (long long)pc->mb, (long long)pc->global_batch);
  if (s->tpx) wh__tp_dump_head(s, b);
  int sends = 0, recvs = 0;
  for (int i = 0; i < pg->n_nodes; i++) sends += pg->nodes[i].op == WH_OP_SEND, recvs += pg->nodes[i].op == WH_OP_RECV;
  wh__sb_printf(b, "program: %d nodes on this stage (%d sends, %d receives of the %d values that cross stages), %d "
                "micro-batch arenas of %lld bytes\n",
                pg->n_nodes, sends, recvs, pg->n_transfers, pg->n_slots, (long long)s->arena_bytes);
  schedule_line(b, s);
  int *none = malloc(sizeof(int) * (size_t)(pg->n_nodes + 1));
  if (!none) {
    b->oom = 1;
    return;
  }
  for (int i = 0; i < pg->n_nodes; i++) none[i] = -1;
  node_lines(b, s, none);
  free(none);
  if (pc->n_replicas > 1)
    wh__sb_printf(b, "  all-reduce sum f32 of each accumulated gradient made here, among the %d replicas of stage %d\n",
                  pc->n_replicas, pc->stage);
  if (pg->loss_stage >= 0)
    wh__sb_printf(b, "  all-reduce sum f64 loss: 8 bytes, after the step, all %d ranks (stage %d contributes)\n",
                  wh_comm_size(s->comm), pg->loss_stage);
}

static void dump_text(wh__sb *b, const wh_session *s, const int *bucket, const int64_t *bb, int nb) {
  const wh__program *pg = &s->prog;
  const wh__place *pc = &pg->place;
  int rank = s->dist ? wh_comm_rank(s->comm) : 0, size = s->dist ? wh_comm_size(s->comm) : 1;
  if (s->dist)
    wh__sb_printf(b,
                  "rank %d of %d (%s): data-parallel replica, rows [%lld, %lld) of each %lld-sample micro-batch, "
                  "%d micro-batch%s, global batch %lld\n",
                  rank, size, wh_comm_backend_of(s->comm) == WH_COMM_NCCL ? "nccl" : "mpi", (long long)pc->offset,
                  (long long)(pc->offset + pc->share), (long long)pc->mb, pc->micro_batches,
                  pc->micro_batches == 1 ? "" : "es", (long long)pc->global_batch);
  else
    wh__sb_printf(b, "single process, batch %lld\n", (long long)s->batch);
  if (s->tpx) wh__tp_dump_head(s, b);
  if (s->dev)
    wh__sb_printf(b, "device: CUDA %d, matrix products in %s\n", s->dev_index,
                  s->precision == WH_PRECISION_BF16 ? "bf16 (fp32 accumulation)"
                  : s->precision == WH_PRECISION_TF32 ? "tf32 (fp32 accumulation)" : "fp32");
  wh__sb_printf(b, "program: %d nodes (%d recomputed, marked '), arena %lld bytes, shapes at batch %lld\n", pg->n_nodes,
                pg->n_recomputed, (long long)s->arena_bytes, (long long)s->batch);
  if (s->dist) schedule_line(b, s);
  node_lines(b, s, bucket);
  if (!s->dist) return;
  if (pc->zero1) {
    /* ZeRO-1: a reduce-scatter per gradient, this rank's shard updated, the parameters gathered */
    wh__sb_printf(b, "collectives per step (ZeRO-1: optimizer state sharded %d ways):\n", size);
    long long total = 0;
    for (int k = 0; k < nb; k++) {
      long long keep = (bb[k] / 4 + size - 1) / size * 4;
      wh__sb_printf(b, "  reduce-scatter sum f32 gradient %d: %lld bytes, started during backward; this rank keeps "
                    "%lld bytes\n", k, (long long)bb[k], keep);
      total += bb[k];
    }
    wh__sb_printf(b, "  all-gather f32 parameters after the update: %lld bytes, each rank contributing its shard\n", total);
    wh__sb_printf(b, "  all-reduce sum f64 loss: 8 bytes, after backward, all %d ranks\n", size);
    return;
  }
  wh_comm *dpc = s->grp[WH_GROUP_DP];
  int dr = wh_comm_rank(dpc), ds = wh_comm_size(dpc);
  int next = wh__tp_dp_world(s, (dr + 1) % ds), prev = wh__tp_dp_world(s, (dr - 1 + ds) % ds);
  size = ds;
  wh__sb_printf(b, "collectives per step (%s%s):\n", size > 1 ? "ring all-reduce" : "one rank: local copies",
                s->tpx ? " over the replicas' ranks holding this shard" : "");
  for (int k = 0; k < nb; k++) {
    /* a ring all-reduce of B bytes sends and receives 2(n-1)/n * B per rank */
    long long wire = size > 1 ? (long long)(2.0 * (size - 1) / size * (double)bb[k] + 0.5) : 0;
    wh__sb_printf(b, "  all-reduce sum f32 bucket %d: %lld bytes, started during backward; sends %lld bytes to rank %d, "
                  "receives %lld from rank %d\n",
                  k, (long long)bb[k], wire, next, wire, prev);
  }
  if (pc->deterministic)
    wh__sb_printf(b, "  all-gather f32 of every gradient's partial sums, added in rank order, after backward\n");
  wh__sb_printf(b, "  all-reduce sum f64 loss: 8 bytes, after backward, all %d ranks\n", size);
}

static void dump_dot(wh__sb *b, const wh_session *s, const int *bucket, const int64_t *bb, int nb) {
  const wh__program *pg = &s->prog;
  int rank = s->dist ? wh_comm_rank(s->comm) : 0, size = s->dist ? wh_comm_size(s->comm) : 1;
  wh__sb_printf(b, "digraph rank%d {\n  rankdir=TB;\n  node [shape=box, fontname=\"monospace\"];\n", rank);
  wh__sb_printf(b, "  label=\"rank %d of %d: %d nodes\";\n", rank, size, pg->n_nodes);
  /* a value's producer, to draw edges node to node; leaves (inputs, parameters) as ellipses */
  int *prod = malloc(sizeof(int) * (size_t)(pg->n_values > 0 ? pg->n_values : 1));
  if (!prod) {
    b->oom = 1;
    return;
  }
  for (int v = 0; v < pg->n_values; v++) prod[v] = -1;
  for (int i = 0; i < pg->n_nodes; i++)
    if (pg->nodes[i].out >= 0) prod[pg->nodes[i].out] = i;
  for (int i = 0; i < pg->n_nodes; i++) {
    const wh__node *n = &pg->nodes[i];
    const char *color = n->phase == WH_PHASE_FORWARD ? "black" : n->phase == WH_PHASE_BACKWARD ? "blue" : "gray";
    /* the operator-sharding collectives stand out like the gradient all-reduces */
    int coll = n->op == WH_OP_TP_ALLREDUCE || n->op == WH_OP_TP_ALLREDUCE_START || n->op == WH_OP_TP_ALLGATHER ||
               n->op == WH_OP_TP_NORM_CLIP;
    wh__sb_printf(b, "  n%d [label=\"#%d %s\\n", i, i, wh__ops[n->op]->name);
    if (n->out >= 0) sb_val(b, s, n->out, 1);
    if (coll) wh__sb_printf(b, "\\nover the replica's %d ranks, %lld bytes", wh__tp_degree(s),
                            (long long)(n->op == WH_OP_TP_NORM_CLIP ? 8 : s->bytes[n->out]));
    wh__sb_printf(b, "\"%s, color=%s];\n", coll ? ", shape=octagon" : "", coll ? "red" : color);
    for (int k = 0; k < n->n_in; k++) {
      int32_t v = n->in[k];
      if (v >= 0 && prod[v] >= 0) {
        wh__sb_printf(b, "  n%d -> n%d;\n", prod[v], i);
      } else {
        wh__sb_printf(b, "  v%d [shape=ellipse, label=\"", n->in[k]);
        sb_val(b, s, n->in[k], 1);
        wh__sb_printf(b, "\"];\n  v%d -> n%d;\n", n->in[k], i);
      }
    }
  }
  for (int k = 0; k < nb; k++) {
    long long wire = size > 1 ? (long long)(2.0 * (size - 1) / size * (double)bb[k] + 0.5) : 0;
    wh__sb_printf(b,
                  "  ar%d [shape=octagon, color=red, label=\"%s %d\\n%lld bytes\\nto rank %d, from rank "
                  "%d: %lld bytes each way\"];\n",
                  k, s->prog.place.zero1 ? "reduce-scatter" : "all-reduce bucket", k, (long long)bb[k], (rank + 1) % size,
                  (rank - 1 + size) % size, wire);
  }
  for (int i = 0; i < pg->n_nodes; i++)
    if (bucket[i] >= 0) wh__sb_printf(b, "  n%d -> ar%d [color=red];\n", i, bucket[i]);
  if (s->dist)
    wh__sb_printf(b, "  loss_ar [shape=octagon, color=red, label=\"all-reduce loss\\n8 bytes, all %d ranks\"];\n", size);
  wh__sb_printf(b, "}\n");
  free(prod);
}

wh_status wh_session_dump(const wh_session *s, wh_format fmt, char **out) {
  if (out) *out = NULL;
  if (!s || !out) return WH_ERR_INVALID_ARGUMENT;
  if (fmt != WH_FORMAT_TEXT && fmt != WH_FORMAT_DOT) {
    wh__ctx_set_error(s->ctx, "wh_session_dump: unknown format %d", (int)fmt);
    return WH_ERR_INVALID_ARGUMENT;
  }
  size_t nn = (size_t)(s->prog.n_nodes > 0 ? s->prog.n_nodes : 1);
  int *bucket = malloc(sizeof(int) * nn);
  int64_t *bb = malloc(sizeof(int64_t) * nn);
  wh__sb b = {0};
  if (!bucket || !bb) b.oom = 1;
  int nb = 0;
  if (!b.oom) {
    if (s->dist && !s->prog.place.pipelined) nb = dp_buckets(s, bucket, bb);
    else
      for (size_t i = 0; i < nn; i++) bucket[i] = -1;
    if (fmt == WH_FORMAT_TEXT && s->prog.place.pipelined) dump_pipe(&b, s);
    else if (fmt == WH_FORMAT_TEXT) dump_text(&b, s, bucket, bb, nb);
    else dump_dot(&b, s, bucket, bb, nb);
  }
  free(bucket);
  free(bb);
  if (b.oom) {
    free(b.s);
    wh__ctx_set_error(s->ctx, "wh_session_dump: out of memory");
    return WH_ERR_OUT_OF_MEMORY;
  }
  *out = b.s;
  return WH_OK;
}
