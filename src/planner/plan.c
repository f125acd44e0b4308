/* plan.c - reading a plan once the planner made it: its accessors, the explanation (per stage and
 * replica) and a DOT rendering; and freeing it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/strbuf.h"
#include "planner.h"

static const char *sched_name(const wh_plan *p) {
  return p->n_stages == 1 ? "data parallel" : p->schedule == WH_SCHED_1F1B ? "1F1B" : "GPipe";
}

wh_status wh_plan_explain(const wh_plan *p, char **out) {
  if (!p || !out) return WH_ERR_INVALID_ARGUMENT;
  wh__sb b = {0};
  wh__sb_printf(&b, "plan: %d stage%s x %d micro-batch%s (%s), global batch %lld, predicted step %.4f s (bubble %.4f s)%s%s\n",
      p->n_stages, p->n_stages > 1 ? "s" : "", p->micro_batches, p->micro_batches > 1 ? "es" : "", sched_name(p),
      (long long)p->global_batch, p->step_time, p->bubble_time, p->zero1 ? ", ZeRO-1" : "",
      p->mixed == WH_BF16 ? ", bf16 mixed precision" : p->mixed == WH_F16 ? ", fp16 mixed precision" : "");
  for (int s = 0; s < p->n_stages; s++) {
    const wh__stage *g = &p->st[s];
    wh__sb_printf(&b, "stage %d: segments %d..%d on %d device%s (%d replica%s x tp %d)%s\n", s, g->seg_first, g->seg_last,
        g->ndev, g->ndev > 1 ? "s" : "", g->ndev / g->tp, g->ndev / g->tp > 1 ? "s" : "", g->tp,
        g->recompute ? ", recomputing activations" : "");
    wh__sb_printf(&b, "  per micro-batch: compute %.4f s (slowest replica), send/recv %.4f s; gradient all-reduce %.4f s; "
            "memory %.2f of %.2f GiB (worst replica)\n",
        g->t_compute, g->t_p2p, g->t_allreduce, g->mem_peak / 1073741824.0, g->mem_cap / 1073741824.0);
    for (int r = 0; r < g->ndev / g->tp; r++) {
      wh__sb_printf(&b, "  replica %d: batch share %lld per micro-batch on", r, (long long)g->share[r]);
      for (int k = 0; k < g->tp; k++) {
        int d = g->dev[r * g->tp + k];
        wh__sb_printf(&b, " %d:%s@node%d", d, p->dev_kind[d], p->dev_node[d]);
      }
      wh__sb_printf(&b, "\n");
    }
  }
  if (p->why) wh__sb_printf(&b, "why: %s\n", p->why);
  if (b.oom) {
    free(b.s);
    return WH_ERR_OUT_OF_MEMORY;
  }
  *out = b.s;
  return WH_OK;
}

wh_status wh_plan_dump(const wh_plan *p, wh_format fmt, char **out) {
  if (!p || !out) return WH_ERR_INVALID_ARGUMENT;
  if (fmt == WH_FORMAT_TEXT) return wh_plan_explain(p, out);
  if (fmt != WH_FORMAT_DOT) return WH_ERR_INVALID_ARGUMENT;
  wh__sb b = {0};
  wh__sb_printf(&b, "digraph plan {\n  rankdir=LR;\n  node [shape=box, fontname=\"monospace\"];\n");
  wh__sb_printf(&b, "  label=\"%d stages, %d micro-batches, %s, step %.4f s\";\n", p->n_stages, p->micro_batches, sched_name(p),
      p->step_time);
  for (int s = 0; s < p->n_stages; s++) {
    const wh__stage *g = &p->st[s];
    wh__sb_printf(&b, "  subgraph cluster_s%d {\n    label=\"stage %d: segments %d..%d, %.4f s/micro-batch\";\n", s, s,
        g->seg_first, g->seg_last, g->t_compute);
    for (int i = 0; i < g->ndev; i++) {
      int d = g->dev[i];
      wh__sb_printf(&b, "    d%d [label=\"%d %s node %d\\nshare %lld\"];\n", d, d, p->dev_kind[d], p->dev_node[d],
          (long long)g->share[i / g->tp]);
    }
    wh__sb_printf(&b, "  }\n");
    if (s > 0) wh__sb_printf(&b, "  d%d -> d%d [label=\"activations / gradients\"];\n", p->st[s - 1].dev[0], g->dev[0]);
  }
  wh__sb_printf(&b, "}\n");
  if (b.oom) {
    free(b.s);
    return WH_ERR_OUT_OF_MEMORY;
  }
  *out = b.s;
  return WH_OK;
}

void wh__plan_free_stages(wh_plan *p) {
  for (int s = 0; s < p->n_stages; s++) {
    free(p->st[s].dev);
    free(p->st[s].share);
    free(p->st[s].t_fwd);
    free(p->st[s].t_bwd);
  }
  free(p->st);
  p->st = NULL;
  p->n_stages = 0;
}

void wh_plan_destroy(wh_plan *p) {
  if (!p) return;
  wh__plan_free_stages(p);
  free(p->why);
  free(p->dev_kind);
  free(p->dev_node);
  free(p->dev_mem);
  free(p);
}

int wh_plan_num_segments(const wh_plan *p) { return p ? p->n_segments : 0; }

double wh_plan_step_time(const wh_plan *p) { return p ? p->step_time : 0; }
int wh_plan_num_stages(const wh_plan *p) { return p ? p->n_stages : 0; }
int wh_plan_micro_batches(const wh_plan *p) { return p ? p->micro_batches : 0; }
int wh_plan_tp(const wh_plan *p) { return p && p->n_stages > 0 ? p->st[0].tp : 1; }
int wh_plan_zero1(const wh_plan *p) { return p ? p->zero1 != 0 : 0; }
wh_dtype wh_plan_mixed(const wh_plan *p) { return p ? p->mixed : WH_F32; }
wh_schedule wh_plan_schedule(const wh_plan *p) {
  return p ? (p->schedule == WH_SCHED_1F1B ? WH_SCHEDULE_1F1B : WH_SCHEDULE_GPIPE) : WH_SCHEDULE_AUTO;
}

wh_status wh_plan_shares(const wh_plan *p, int64_t *shares, int n) {
  if (!p || !shares || n < p->n_devices) return WH_ERR_INVALID_ARGUMENT;
  for (int i = 0; i < n; i++) shares[i] = 0;
  for (int s = 0; s < p->n_stages; s++) {
    const wh__stage *g = &p->st[s];
    for (int i = 0; i < g->ndev; i++) shares[g->dev[i]] = g->share[i / g->tp];
  }
  return WH_OK;
}

wh_status wh__plan_clone(const wh_plan *p, wh_plan **out) {
  *out = NULL;
  wh_plan *q = calloc(1, sizeof *q);
  if (!q) return WH_ERR_OUT_OF_MEMORY;
  *q = *p;
  q->st = NULL, q->n_stages = 0, q->why = NULL, q->dev_kind = NULL, q->dev_node = NULL, q->dev_mem = NULL;
  int nd = p->n_devices, ok = 1;
  q->st = calloc((size_t)p->n_stages + 1, sizeof(wh__stage));
  q->dev_kind = malloc(sizeof(*q->dev_kind) * (size_t)(nd + 1));
  q->dev_node = malloc(sizeof(int) * (size_t)(nd + 1));
  q->dev_mem = malloc(sizeof(double) * (size_t)(nd + 1));
  q->why = p->why ? strdup(p->why) : NULL;
  ok = q->st && q->dev_kind && q->dev_node && q->dev_mem && (!p->why || q->why);
  if (ok) {
    memcpy(q->dev_kind, p->dev_kind, sizeof(*q->dev_kind) * (size_t)nd);
    memcpy(q->dev_node, p->dev_node, sizeof(int) * (size_t)nd);
    memcpy(q->dev_mem, p->dev_mem, sizeof(double) * (size_t)nd);
    q->n_stages = p->n_stages;
  }
  for (int s = 0; ok && s < p->n_stages; s++) {
    const wh__stage *a = &p->st[s];
    wh__stage *b = &q->st[s];
    int nrep = a->tp > 0 ? a->ndev / a->tp : 0;
    *b = *a;
    b->dev = malloc(sizeof(int) * (size_t)(a->ndev + 1));
    b->share = malloc(sizeof(int64_t) * (size_t)(nrep + 1));
    b->t_fwd = malloc(sizeof(double) * (size_t)(nrep + 1));
    b->t_bwd = malloc(sizeof(double) * (size_t)(nrep + 1));
    if (!b->dev || !b->share || !b->t_fwd || !b->t_bwd) {
      ok = 0;
      break;
    }
    memcpy(b->dev, a->dev, sizeof(int) * (size_t)a->ndev);
    memcpy(b->share, a->share, sizeof(int64_t) * (size_t)nrep);
    memcpy(b->t_fwd, a->t_fwd, sizeof(double) * (size_t)nrep);
    memcpy(b->t_bwd, a->t_bwd, sizeof(double) * (size_t)nrep);
  }
  if (!ok) {
    wh_plan_destroy(q);
    return WH_ERR_OUT_OF_MEMORY;
  }
  *out = q;
  return WH_OK;
}
