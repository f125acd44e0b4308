/* cost.c - the cost model of a layout: per-stage compute (roofline per device class, batch shares
 * water-filled under memory caps), memory, all-reduces and transfers, the pipeline step, and the
 * plan that records a chosen configuration's prediction. Devices are ordered by memory then speed
 * and cut into equal groups, one per pipeline stage (memory-hungry early stages land on
 * large-memory devices); inside a stage, replicas get batch shares by water-filling their speeds
 * under their memory caps (exactly minimising the slowest replica). */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/ctx.h"
#include "cost.h"

static int same_class(const wh__device *a, const wh__device *b) {
  return a->flops_f32 == b->flops_f32 && a->mem_bw == b->mem_bw && a->mem_bytes == b->mem_bytes &&
         a->eff_flops == b->eff_flops && a->eff_bw == b->eff_bw && a->link_bw == b->link_bw &&
         memcmp(a->op_scale, b->op_scale, sizeof a->op_scale) == 0;
}

static void costtab_free(wh__costtab *t) {
  free(t->class_of), free(t->rep), free(t->fwd), free(t->bwd), free(t->upd);
  memset(t, 0, sizeof *t);
}

static wh_status costtab_build(const wh__model *m, const wh_cluster *c, wh__costtab *t) {
  memset(t, 0, sizeof *t);
  int n = m->n;
  t->n = n;
  t->class_of = malloc(sizeof(int) * (size_t)c->n);
  t->rep = malloc(sizeof(int) * (size_t)c->n);
  if (!t->class_of || !t->rep) return WH_ERR_OUT_OF_MEMORY;
  for (int d = 0; d < c->n; d++) {
    int k = 0;
    while (k < t->nclass && !same_class(&c->dev[t->rep[k]], &c->dev[d])) k++;
    if (k == t->nclass) t->rep[t->nclass++] = d;
    t->class_of[d] = k;
  }
  size_t rows = (size_t)t->nclass * (size_t)(n + 1);
  t->fwd = calloc(rows, sizeof(wh__lin));
  t->bwd = calloc(rows, sizeof(wh__lin));
  t->upd = calloc(rows, sizeof(wh__lin));
  if (!t->fwd || !t->bwd || !t->upd) return WH_ERR_OUT_OF_MEMORY;
  for (int k = 0; k < t->nclass; k++) {
    const wh__device *d = &c->dev[t->rep[k]];
    wh__lin *fw = t->fwd + (size_t)k * (size_t)(n + 1), *bw = t->bwd + (size_t)k * (size_t)(n + 1);
    wh__lin *up = t->upd + (size_t)k * (size_t)(n + 1);
    for (int i = 0; i < m->n_items; i++) {
      const wh__item *it = &m->item[i];
      double t0 = wh__node_time(d, it->op, it->f[0], it->y[0], 1, it->half);
      double t1 = wh__node_time(d, it->op, it->f[1], it->y[1], 0, it->half);
      wh__lin *dst = it->upd ? &up[it->seg + 1] : it->bwd ? &bw[it->seg + 1] : &fw[it->seg + 1];
      dst->t0 += t0;
      dst->t1 += t1;
    }
    for (int s = 1; s <= n; s++) {
      fw[s].t0 += fw[s - 1].t0, fw[s].t1 += fw[s - 1].t1;
      bw[s].t0 += bw[s - 1].t0, bw[s].t1 += bw[s - 1].t1;
      up[s].t0 += up[s - 1].t0, up[s].t1 += up[s - 1].t1;
    }
  }
  return WH_OK;
}

/* time of segments [a, b] on a device of class k for `samples`, fwd+bwd (+fwd when recompute) */
static wh__lin range_time(const wh__costtab *t, int k, int a, int b, int recompute) {
  const wh__lin *fw = t->fwd + (size_t)k * (size_t)(t->n + 1), *bw = t->bwd + (size_t)k * (size_t)(t->n + 1);
  wh__lin r = {fw[b + 1].t0 - fw[a].t0 + bw[b + 1].t0 - bw[a].t0, fw[b + 1].t1 - fw[a].t1 + bw[b + 1].t1 - bw[a].t1};
  if (recompute) {
    r.t0 += fw[b + 1].t0 - fw[a].t0;
    r.t1 += fw[b + 1].t1 - fw[a].t1;
  }
  return r;
}

/* the optimizer step of segments [a, b] on class k: once per training step */
static double range_update(const wh__costtab *t, int k, int a, int b) {
  const wh__lin *up = t->upd + (size_t)k * (size_t)(t->n + 1);
  return up[b + 1].t0 - up[a].t0;
}

/* the backward share (recompute included) of segments [a, b] on class k at `samples` */
static double range_bwd_fraction(const wh__costtab *t, int k, int a, int b, int recompute, double samples) {
  const wh__lin *fw = t->fwd + (size_t)k * (size_t)(t->n + 1);
  wh__lin all = range_time(t, k, a, b, recompute);
  double f = fw[b + 1].t0 - fw[a].t0 + (fw[b + 1].t1 - fw[a].t1) * samples;
  double tot = all.t0 + all.t1 * samples;
  return tot > 0 ? (tot - f) / tot : 0;
}

/* ---- communication: alpha-beta per link level */

/* Ring all-reduce of `bytes` over n devices spanning `nodes` nodes. */
static double allreduce_time(const wh_cluster *c, double bytes, int n, int nodes, double link_bw) {
  if (n <= 1 || bytes <= 0) return 0;
  double bw = nodes > 1 ? c->inter_bw : (c->intra_bw > 0 ? c->intra_bw : link_bw);
  double lat = nodes > 1 ? c->inter_lat : c->intra_lat;
  return 2.0 * (n - 1) / n * bytes / bw + 2.0 * (n - 1) * lat;
}

static double p2p_time(const wh_cluster *c, double bytes, int same_node, double link_bw) {
  if (bytes <= 0) return 0;
  double bw = same_node ? (c->intra_bw > 0 ? c->intra_bw : link_bw) : c->inter_bw;
  return bytes / bw + (same_node ? c->intra_lat : c->inter_lat);
}

static void ranges_free(wh__ranges *r) {
  free(r->param), free(r->act), free(r->tpp), free(r->tpc), free(r->outb), free(r->flops), free(r->tpflops), free(r->tpa);
  free(r->tpn);
  free(r->peak), free(r->actmax);
  memset(r, 0, sizeof *r);
}

static wh_status ranges_build(const wh__model *m, wh__ranges *r) {
  memset(r, 0, sizeof *r);
  int n = m->n;
  r->n = n;
  while ((1 << (r->lg + 1)) <= n) r->lg++;
  r->lg++;
  double **pre[4] = {&r->param, &r->act, &r->outb, &r->flops};
  for (int k = 0; k < 4; k++)
    if (!(*pre[k] = calloc((size_t)n + 1, sizeof(double)))) return WH_ERR_OUT_OF_MEMORY;
  double **tpre[5] = {&r->tpp, &r->tpc, &r->tpflops, &r->tpa, &r->tpn};
  for (int k = 0; k < 5; k++)
    if (!(*tpre[k] = calloc((size_t)(n + 1) * WH_TP_LEVELS, sizeof(double)))) return WH_ERR_OUT_OF_MEMORY;
  r->peak = malloc(sizeof(double) * (size_t)r->lg * (size_t)n);
  r->actmax = malloc(sizeof(double) * (size_t)r->lg * (size_t)n);
  if (!r->peak || !r->actmax) return WH_ERR_OUT_OF_MEMORY;
  for (int i = 0; i < n; i++) {
    const wh__segment *g = &m->seg[i];
    double fl = g->flops_fwd[1] + g->flops_bwd[1];
    r->param[i + 1] = r->param[i] + g->param_bytes;
    r->act[i + 1] = r->act[i] + g->act_bytes;
    r->outb[i + 1] = r->outb[i] + g->out_bytes;
    r->flops[i + 1] = r->flops[i] + fl;
    for (int k = 0; k < WH_TP_LEVELS; k++) {
      size_t o = (size_t)k * (size_t)(n + 1) + (size_t)i;
      r->tpp[o + 1] = r->tpp[o] + g->tp_param_bytes[k];
      r->tpa[o + 1] = r->tpa[o] + g->tp_act_bytes[k];
      r->tpc[o + 1] = r->tpc[o] + g->tp_comm_bytes[k];
      r->tpflops[o + 1] = r->tpflops[o] + g->tp_fraction[k] * fl;
      r->tpn[o + 1] = r->tpn[o] + g->tp_colls[k];
    }
    r->peak[i] = g->peak_bytes;
    r->actmax[i] = g->act_bytes;
  }
  for (int k = 1; k < r->lg; k++)
    for (int i = 0; i + (1 << k) <= n; i++) {
      size_t a = (size_t)k * (size_t)n + (size_t)i, b = (size_t)(k - 1) * (size_t)n;
      r->peak[a] = fmax(r->peak[b + (size_t)i], r->peak[b + (size_t)i + (1u << (k - 1))]);
      r->actmax[a] = fmax(r->actmax[b + (size_t)i], r->actmax[b + (size_t)i + (1u << (k - 1))]);
    }
  return WH_OK;
}

static double range_max(const wh__ranges *r, const double *tab, int a, int b) {
  int len = b - a + 1, k = 0;
  while ((2 << k) <= len) k++;
  return fmax(tab[(size_t)k * (size_t)r->n + (size_t)a], tab[(size_t)k * (size_t)r->n + (size_t)(b - (1 << k) + 1)]);
}

#define RSUM(r, f, a, b) ((r)->f[(b) + 1] - (r)->f[(a)])
/* the same for the operator-sharding tables, at the level of degree tp */
#define RSUMT(r, f, tp, a, b) \
  ((r)->f[(size_t)wh__tp_level(tp) * (size_t)((r)->n + 1) + (size_t)(b) + 1] - \
   (r)->f[(size_t)wh__tp_level(tp) * (size_t)((r)->n + 1) + (size_t)(a)])

/* A replica's time for segments [a, b] (l: fixed and per sample on one device) when tp devices shard
 * it: the splitting work divides, each synchronous collective costs its latency per micro-batch and
 * its bytes' transfer per sample. */
static wh__lin tp_time(const wh__costing *x, const wh__config *cf, const wh__group *gr, int a, int b, wh__lin l) {
  if (cf->tp <= 1) return l;
  double fl = RSUM(x->rg, flops, a, b), frac = fl > 0 ? RSUMT(x->rg, tpflops, cf->tp, a, b) / fl : 0;
  double scale = frac / cf->tp + 1 - frac, n = cf->tp;
  double bw = x->c->intra_bw > 0 ? x->c->intra_bw : gr->link;
  wh__lin r;
  r.t0 = l.t0 * scale + RSUMT(x->rg, tpn, cf->tp, a, b) * 2.0 * (n - 1) * x->c->intra_lat;
  r.t1 = l.t1 * scale + 2.0 * (n - 1) / n * RSUMT(x->rg, tpc, cf->tp, a, b) / bw;
  return r;
}

/* ---- memory: what a device holding segments [a, b] needs */

typedef struct {
  double fixed;      /* parameters, gradients, optimizer state */
  double per_sample; /* activations per sample of a micro-batch, times the micro-batches in flight */
} memlin;

static memlin stage_memory(const wh__model *m, const wh__ranges *rg, int a, int b, int inflight, int recompute,
                           int zero1, int dp, int tp) {
  double p = RSUM(rg, param, a, b), tpf = tp > 1 ? RSUMT(rg, tpp, tp, a, b) : 0, pk = range_max(rg, rg->peak, a, b);
  double psh = tp > 1 ? (p - tpf) + tpf / tp : p; /* sharded weights split tp ways */
  memlin r;
  r.fixed = psh * (2.0 + m->opt_bytes_per_param / (zero1 ? dp : 1));
  double act = RSUM(rg, act, a, b);
  if (tp > 1) act -= RSUMT(rg, tpa, tp, a, b) * (1.0 - 1.0 / tp); /* the split ones, tp ways */
  if (recompute) {
    /* two ways to checkpoint, the same extra forward: keep every segment's input per micro-batch in
     * flight and rebuild one segment at a time, or keep only the stage's input and rebuild the
     * whole stage for the micro-batch in backward (GPipe's); whichever needs less */
    double kept = a > 0 ? RSUM(rg, outb, a - 1, b - 1) : (b > 0 ? RSUM(rg, outb, 0, b - 1) : 0);
    double per_seg = kept * inflight + range_max(rg, rg->actmax, a, b);
    double per_stage = (a > 0 ? m->seg[a - 1].out_bytes : 0) * inflight + act;
    r.per_sample = fmin(per_seg, per_stage);
  } else {
    r.per_sample = act * inflight;
  }
  r.per_sample += 2 * pk; /* workspace: the largest transient tensor, twice */
  r.fixed *= 1.05;        /* allocator slack */
  r.fixed += 256e6;       /* runtime, kernels' workspace, communication buffers */
  return r;
}

static int nodes_spanned(const wh_cluster *c, const int *dev, int n) {
  int k = 0;
  int seen[64];
  for (int i = 0; i < n; i++) {
    int nd = c->dev[dev[i]].node, j = 0;
    while (j < k && seen[j] != nd) j++;
    if (j == k && k < 64) seen[k++] = nd;
  }
  return k;
}

static wh_status group_build(const wh__costing *x, const wh__config *cf, int s, wh__group *gr) {
  int gsize = x->c->n / cf->S;
  const int *dev = x->order + (size_t)s * (size_t)gsize;
  memset(gr, 0, sizeof *gr);
  gr->nrep = gsize / cf->tp;
  gr->kind_of = malloc(sizeof(int) * (size_t)gr->nrep);
  if (!gr->kind_of) return WH_ERR_OUT_OF_MEMORY;
  gr->link = x->c->dev[dev[0]].link_bw;
  for (int i = 1; i < gsize; i++) gr->link = fmin(gr->link, x->c->dev[dev[i]].link_bw);
  gr->nodes = nodes_spanned(x->c, dev, gsize);
  gr->next_same_node = s + 1 < cf->S && x->c->dev[dev[0]].node == x->c->dev[x->order[(size_t)(s + 1) * (size_t)gsize]].node;
  for (int r = 0; r < gr->nrep; r++) {
    int slow = dev[r * cf->tp];
    double capb = x->c->dev[slow].mem_bytes;
    for (int k = 1; k < cf->tp; k++) {
      const wh__device *d = &x->c->dev[dev[r * cf->tp + k]], *w = &x->c->dev[slow];
      if (d->flops_f32 * d->eff_flops < w->flops_f32 * w->eff_flops) slow = dev[r * cf->tp + k];
      capb = fmin(capb, d->mem_bytes);
    }
    int cl = x->t->class_of[slow], k = 0;
    while (k < gr->nkind && (gr->cls[k] != cl || gr->cap[k] != capb)) k++;
    if (k == gr->nkind) {
      if (k == WH__MAX_KINDS) {
        /* more kinds in one stage than this: merge into the last, which takes the smaller memory
         * and the slower device, so no member is given a share it cannot hold or run in time */
        k = WH__MAX_KINDS - 1;
        const wh__device *nw = &x->c->dev[slow], *old = &x->c->dev[x->t->rep[gr->cls[k]]];
        if (nw->flops_f32 * nw->eff_flops < old->flops_f32 * old->eff_flops) gr->cls[k] = cl;
        gr->cap[k] = fmin(gr->cap[k], capb);
      } else {
        gr->nkind++, gr->cls[k] = cl, gr->cap[k] = capb;
      }
    }
    gr->count[k]++;
    gr->kind_of[r] = k;
  }
  return WH_OK;
}

/* Water-fill the stage's micro-batch over its replica kinds; returns the slowest replica's time
 * (WH__INF if it cannot fit), and fills per-replica shares when share != NULL. */
static double water_fill(const wh__costing *x, const wh__config *cf, const wh__group *gr, int s, int a, int b,
                         int64_t *share, double *worst_mem, double *worst_cap) {
  int inflight = cf->S == 1 ? 1 : (cf->sched == WH_SCHED_GPIPE ? cf->m : (cf->m < cf->S - s ? cf->m : cf->S - s));
  memlin ml = stage_memory(x->m, x->rg, a, b, inflight, cf->recompute, cf->zero1, gr->nrep, cf->tp);
  int64_t total = x->batch / cf->m;
  double t0[WH__MAX_KINDS], t1[WH__MAX_KINDS];
  int64_t cap[WH__MAX_KINDS], k_of[WH__MAX_KINDS];
  int dec[WH__MAX_KINDS] = {0};
  for (int k = 0; k < gr->nkind; k++) {
    wh__lin l = tp_time(x, cf, gr, a, b, range_time(x->t, gr->cls[k], a, b, cf->recompute));
    t0[k] = l.t0, t1[k] = l.t1;
    double room = gr->cap[k] - ml.fixed;
    /* every replica holds the stage's weights, gradients and optimizer state, even with no samples */
    if (room < 0) return WH__INF;
    cap[k] = ml.per_sample > 0 ? (int64_t)floor(room / ml.per_sample) : total;
    if (cap[k] > total) cap[k] = total;
  }
  const int64_t *fixed = x->fixed_shares ? x->fixed_shares + (size_t)s * (size_t)gr->nrep : NULL;
  double worst = 0;
  if (fixed || cf->even_shares) {
    int64_t sum = 0;
    for (int k = 0; k < gr->nkind; k++) k_of[k] = 0; /* the largest share of each kind, for the memory report */
    for (int r = 0; r < gr->nrep; r++) {
      int64_t sh = fixed ? fixed[r] : total / gr->nrep + (r < total % gr->nrep);
      int k = gr->kind_of[r];
      if (sh < 0 || sh > cap[k]) return WH__INF;
      if (share) share[r] = sh;
      sum += sh;
      if (sh > k_of[k]) k_of[k] = sh;
      if (sh > 0) worst = fmax(worst, t0[k] + t1[k] * (double)sh);
    }
    if (sum != total) return WH__INF;
  } else if (gr->nkind == 1) {
    /* one kind: the even split is the water level */
    int64_t hi_share = (total + gr->count[0] - 1) / gr->count[0];
    if (total > 0 && (cap[0] < 0 || hi_share > cap[0])) return WH__INF;
    int64_t rem = total - (hi_share - 1) * gr->count[0]; /* replicas at hi_share; the rest one lower */
    k_of[0] = hi_share;
    dec[0] = (int)(gr->count[0] - rem);
    if (dec[0] == gr->count[0]) k_of[0]--, dec[0] = 0;
    worst = k_of[0] > 0 ? t0[0] + t1[0] * (double)k_of[0] : 0;
    if (share)
      for (int r = 0; r < gr->nrep; r++) share[r] = k_of[0] - (r < dec[0] ? 1 : 0);
  } else {
    /* minimal T with sum over kinds of count * min(cap, floor((T - t0) / t1)) >= total */
    double lo = 0, hi = 0;
    int any = 0;
    for (int k = 0; k < gr->nkind; k++)
      if (cap[k] > 0) hi = fmax(hi, t0[k] + t1[k] * (double)total), any = 1;
    if (!any) return total > 0 ? WH__INF : 0;
    for (int it = 0; it < 64; it++) {
      double mid = 0.5 * (lo + hi);
      int64_t sum = 0;
      for (int k = 0; k < gr->nkind; k++) {
        if (cap[k] <= 0 || mid < t0[k]) continue;
        double f = t1[k] > 0 ? floor((mid - t0[k]) / t1[k]) : (double)total;
        int64_t q = f > (double)cap[k] ? cap[k] : (int64_t)f;
        sum += q * gr->count[k];
      }
      if (sum >= total) hi = mid;
      else lo = mid;
    }
    int64_t sum = 0;
    for (int k = 0; k < gr->nkind; k++) {
      int64_t q = 0;
      if (cap[k] > 0 && hi >= t0[k]) {
        double f = t1[k] > 0 ? floor((hi - t0[k]) / t1[k]) : (double)total;
        q = f > (double)cap[k] ? cap[k] : (int64_t)f;
      }
      k_of[k] = q;
      sum += q * gr->count[k];
    }
    if (sum < total) return WH__INF;
    /* trim the overshoot, one replica at a time, from the kind that would finish last */
    while (sum > total) {
      int w = -1;
      double wt = -1;
      for (int k = 0; k < gr->nkind; k++) {
        int64_t q = k_of[k] - (dec[k] == gr->count[k] ? 1 : 0);
        if (q > 0 && t0[k] + t1[k] * (double)q > wt) wt = t0[k] + t1[k] * (double)q, w = k;
      }
      if (w < 0) break;
      int64_t take = sum - total, room = gr->count[w] - dec[w];
      if (dec[w] == gr->count[w]) { /* every replica of the kind already trimmed once: go one lower */
        k_of[w]--;
        dec[w] = 0;
        room = gr->count[w];
      }
      int64_t n = take < room ? take : room;
      dec[w] += (int)n;
      sum -= n;
    }
    for (int k = 0; k < gr->nkind; k++) {
      int64_t q = dec[k] == gr->count[k] ? k_of[k] - 1 : k_of[k];
      if (q > 0) worst = fmax(worst, t0[k] + t1[k] * (double)q);
    }
    if (share) {
      int seen[WH__MAX_KINDS] = {0};
      for (int r = 0; r < gr->nrep; r++) {
        int k = gr->kind_of[r];
        share[r] = k_of[k] - (seen[k]++ < dec[k] ? 1 : 0);
      }
    }
  }
  if (worst_mem) {
    *worst_mem = 0, *worst_cap = 1;
    for (int k = 0; k < gr->nkind; k++) {
      double mem = ml.fixed + ml.per_sample * (double)(k_of[k] > 0 ? k_of[k] : 0);
      if (mem / gr->cap[k] > *worst_mem / *worst_cap) *worst_mem = mem, *worst_cap = gr->cap[k];
    }
  }
  return worst;
}

/* cost of stage s holding segments [a, b]: compute of its slowest replica plus the transfers to
 * the next stage; the gradient all-reduce among its replicas goes to t_ar */
typedef struct {
  double upd;   /* optimizer step of the slowest kind */
  double bfrac; /* backward share of the per-micro-batch time */
} stage_extra;

static double stage_cost_x(const wh__costing *x, const wh__config *cf, const wh__group *gr, int s, int a, int b,
                           int64_t *share, double *mem, double *cap, double *t_comp, double *t_ar, double *t_p2p,
                           stage_extra *ex) {
  double tc = water_fill(x, cf, gr, s, a, b, share, mem, cap);
  if (tc >= WH__INF) return WH__INF;
  if (ex) {
    ex->upd = 0, ex->bfrac = 0;
    double samples = (double)(x->batch / cf->m) / gr->nrep;
    for (int k = 0; k < gr->nkind; k++) {
      double u = range_update(x->t, gr->cls[k], a, b) / (cf->tp > 1 ? cf->tp : 1);
      ex->upd = fmax(ex->upd, u);
      ex->bfrac = fmax(ex->bfrac, range_bwd_fraction(x->t, gr->cls[k], a, b, cf->recompute, samples));
    }
  }
  double grad = RSUM(x->rg, param, a, b);
  if (cf->tp > 1) grad /= cf->tp;
  *t_ar = allreduce_time(x->c, grad, gr->nrep, gr->nodes, gr->link);
  *t_p2p = 0;
  if (b < x->m->n - 1 && s + 1 < cf->S)
    /* the boundary activation forward and its gradient backward, for this micro-batch */
    *t_p2p = 2 * p2p_time(x->c, x->m->seg[b].out_bytes * (double)(x->batch / cf->m) / gr->nrep,
                              gr->next_same_node, gr->link);
  *t_comp = tc;
  return tc + *t_p2p;
}

double wh__stage_cost(const wh__costing *x, const wh__config *cf, const wh__group *gr, int s, int a, int b,
                      int64_t *share, double *mem, double *cap, double *t_comp, double *t_ar, double *t_p2p) {
  return stage_cost_x(x, cf, gr, s, a, b, share, mem, cap, t_comp, t_ar, t_p2p, NULL);
}

/* Pipeline step from per-stage times: (m + S - 1) slots of the slowest stage; the backward slots
 * drain from the last stage to the first, so stage s ends s backward slots before stage 0; then
 * each stage all-reduces its gradients and takes its optimizer step. */
static double pipeline_time(const wh__config *cf, const double *st, const double *ar, const double *upd,
                            const double *bfrac, double *bubble) {
  double slot = 0, bf = 0;
  for (int s = 0; s < cf->S; s++) slot = fmax(slot, st[s]), bf = fmax(bf, bfrac ? bfrac[s] : 1.0);
  double body = (cf->m + cf->S - 1) * slot;
  double end = 0;
  for (int s = 0; s < cf->S; s++) end = fmax(end, body - s * slot * bf + ar[s] + (upd ? upd[s] : 0));
  if (bubble) *bubble = (cf->S - 1) * slot;
  return end;
}

void wh__groups_free(wh__group *g, int S) {
  for (int s = 0; g && s < S; s++) free(g[s].kind_of);
  free(g);
}

wh__group *wh__groups_build(const wh__costing *x, const wh__config *cf) {
  wh__group *g = calloc((size_t)cf->S, sizeof(wh__group));
  for (int s = 0; g && s < cf->S; s++)
    if (group_build(x, cf, s, &g[s]) != WH_OK) {
      wh__groups_free(g, cf->S);
      return NULL;
    }
  return g;
}

/* The step time of a configuration with the stage boundaries in cut. */
double wh__step_time(const wh__costing *x, const wh__config *cf, const wh__group *gr, const int *cut) {
  double st[1024], ar[1024], up[1024], bf[1024], mem, cap, tc, ta, tp;
  int a = 0;
  for (int s = 0; s < cf->S; s++) {
    stage_extra e = {0, 0};
    double c = stage_cost_x(x, cf, &gr[s], s, a, cut[s], NULL, &mem, &cap, &tc, &ta, &tp, &e);
    if (c >= WH__INF) return WH__INF;
    st[s] = c;
    ar[s] = ta;
    up[s] = e.upd;
    bf[s] = e.bfrac;
    a = cut[s] + 1;
  }
  return pipeline_time(cf, st, ar, up, bf, NULL);
}

double wh__layout_time(const wh__costing *x, const wh__config *cf, const int *cut) {
  wh__group *gr = wh__groups_build(x, cf);
  double t = gr ? wh__step_time(x, cf, gr, cut) : WH__INF;
  wh__groups_free(gr, cf->S);
  return t;
}

/* ---- what the search and a pinned layout share: the prepared graph, the finished plan */

static int cmp_dev(const void *pa, const void *pb, void *arg) {
  const wh_cluster *c = arg;
  const wh__device *a = &c->dev[*(const int *)pa], *b = &c->dev[*(const int *)pb];
  if (a->mem_bytes != b->mem_bytes) return a->mem_bytes > b->mem_bytes ? -1 : 1;
  double sa = a->flops_f32 * a->eff_flops, sb = b->flops_f32 * b->eff_flops;
  if (sa != sb) return sa > sb ? -1 : 1;
  if (a->node != b->node) return a->node < b->node ? -1 : 1;
  return *(const int *)pa - *(const int *)pb;
}

static void describe_config(const wh__config *cf, char *buf, size_t cap) {
  snprintf(buf, cap, "%d stage%s, %d micro-batch%s, %s, tp %d%s%s", cf->S, cf->S > 1 ? "s" : "", cf->m,
           cf->m > 1 ? "es" : "", cf->S > 1 ? (cf->sched == WH_SCHED_1F1B ? "1F1B" : "GPipe") : "no pipeline", cf->tp,
           cf->recompute ? ", recompute" : "", cf->zero1 ? ", ZeRO-1" : "");
}

static wh_status materialise(const wh__costing *x, const wh__config *cf, const int *cut, wh_plan *p) {
  int S = cf->S, gsize = x->c->n / S, nrep = gsize / cf->tp;
  p->st = calloc((size_t)S, sizeof(wh__stage));
  wh__group *gr = wh__groups_build(x, cf);
  if (!p->st || !gr) {
    wh__groups_free(gr, S);
    return WH_ERR_OUT_OF_MEMORY;
  }
  p->n_stages = S;
  p->micro_batches = cf->m;
  p->schedule = cf->sched;
  p->zero1 = cf->zero1;
  double st[1024], ar[1024], up[1024], bf[1024];
  int a = 0;
  wh_status rs = WH_OK;
  for (int s = 0; s < S && rs == WH_OK; s++) {
    wh__stage *g = &p->st[s];
    g->seg_first = a;
    g->seg_last = cut[s];
    g->node_first = x->m->seg[a].first_node;
    g->node_last = x->m->seg[cut[s]].last_node;
    g->ndev = gsize;
    g->tp = cf->tp;
    g->recompute = cf->recompute;
    g->dev = malloc(sizeof(int) * (size_t)gsize);
    g->share = malloc(sizeof(int64_t) * (size_t)(nrep + 1));
    g->t_fwd = malloc(sizeof(double) * (size_t)nrep);
    g->t_bwd = malloc(sizeof(double) * (size_t)nrep);
    if (!g->dev || !g->share || !g->t_fwd || !g->t_bwd) {
      rs = WH_ERR_OUT_OF_MEMORY;
      break;
    }
    memcpy(g->dev, x->order + (size_t)s * (size_t)gsize, sizeof(int) * (size_t)gsize);
    stage_extra e = {0, 0};
    st[s] = stage_cost_x(x, cf, &gr[s], s, a, cut[s], g->share, &g->mem_peak, &g->mem_cap, &g->t_compute,
                         &g->t_allreduce, &g->t_p2p, &e);
    ar[s] = g->t_allreduce;
    up[s] = g->t_update = e.upd;
    bf[s] = e.bfrac;
    /* the simulator's inputs: each replica's forward and backward time for its share */
    for (int r = 0; r < nrep; r++) {
      int k = gr[s].kind_of[r], cl = gr[s].cls[k];
      /* forward only (range_time is forward + backward): the rest of lt is the backward */
      const wh__lin *fw = x->t->fwd + (size_t)cl * (size_t)(x->t->n + 1);
      wh__lin lf = {fw[cut[s] + 1].t0 - fw[a].t0, fw[cut[s] + 1].t1 - fw[a].t1};
      wh__lin lt = range_time(x->t, cl, a, cut[s], cf->recompute);
      double sh = (double)g->share[r];
      double tf = g->share[r] ? lf.t0 + lf.t1 * sh : 0, tt = g->share[r] ? lt.t0 + lt.t1 * sh : 0;
      double f = tf, bw = tt - tf;
      if (cf->tp > 1 && tt > 0) {
        /* sharding and its all-reduces scale both parts like the replica's total */
        wh__lin ls = tp_time(x, cf, &gr[s], a, cut[s], lt);
        double tot = ls.t0 + sh * ls.t1;
        f *= tot / tt, bw *= tot / tt;
      }
      g->t_fwd[r] = f;
      g->t_bwd[r] = bw;
    }
    a = cut[s] + 1;
  }
  wh__groups_free(gr, S);
  if (rs != WH_OK) return rs;
  p->step_time = pipeline_time(cf, st, ar, up, bf, &p->bubble_time);
  return WH_OK;
}

void wh__prepared_free(wh__prepared *pr) {
  free(pr->order);
  free(pr->legal);
  wh__model_free(&pr->m);
  costtab_free(&pr->t);
  ranges_free(&pr->rg);
}

wh_status wh__prepare(wh_ctx *ctx, const wh_graph *g, const wh_cluster *c, int64_t batch, wh_dtype mixed,
                      wh__prepared *pr) {
  memset(pr, 0, sizeof *pr);
  if (g->status != WH_OK) {
    wh__ctx_set_error(ctx, "wh_plan_create: graph poisoned by an earlier error: %s", g->err);
    return WH_ERR_POISONED;
  }
  if (c->n < 1 || batch < 1) {
    wh__ctx_set_error(ctx, "wh_plan_create: need devices (%d) and a global batch >= 1 (%lld)", c->n, (long long)batch);
    return WH_ERR_INVALID_ARGUMENT;
  }
  if (g->loss < 0) {
    wh__ctx_set_error(ctx, "wh_plan_create: the graph has no backward pass (call wh_backward and an optimizer)");
    return WH_ERR_STATE;
  }
  char msg[256];
  wh_status st = wh__model_from_graph(g, mixed, &pr->m, msg, sizeof msg);
  if (st != WH_OK) {
    wh__ctx_set_error(ctx, "wh_plan_create: %s", msg);
    return st;
  }
  pr->order = malloc(sizeof(int) * (size_t)c->n);
  if (!pr->order || costtab_build(&pr->m, c, &pr->t) != WH_OK || ranges_build(&pr->m, &pr->rg) != WH_OK) {
    wh__prepared_free(pr);
    return WH_ERR_OUT_OF_MEMORY;
  }
  for (int i = 0; i < c->n; i++) pr->order[i] = i;
  qsort_r(pr->order, (size_t)c->n, sizeof(int), cmp_dev, (void *)c);
  /* hints constrain the search: stage scopes are the only places a pipeline stage may end;
   * replicate(n) fixes the replicas per stage, split(n) the operator-sharding degree */
  int any_stage = 0;
  for (int s = 0; s < pr->m.n; s++) any_stage |= pr->m.seg[s].stage_hint >= 0;
  if (any_stage && (pr->legal = malloc((size_t)pr->m.n + 1)))
    for (int s = 0; s < pr->m.n; s++)
      pr->legal[s] = s == pr->m.n - 1 || pr->m.seg[s].stage_hint != pr->m.seg[s + 1].stage_hint;
  for (int i = 0; i < g->n_scopes; i++) {
    if (g->scopes[i].kind == WH_HINT_REPLICATE) pr->hint_rep = g->scopes[i].n;
    if (g->scopes[i].kind == WH_HINT_SPLIT) pr->hint_tp = g->scopes[i].n;
  }
  return WH_OK;
}

/* A pipeline's replica r takes the same rows on every stage: what one replica computes on a stage
 * is what the same replica carries on (a shared weight's gradient, summed over its rows, can only
 * cross between replicas of the same rows). When the stages' own water-filling gave the replicas
 * different rows, every stage gets one share vector: each replica's smallest share over the
 * stages, the rest of the micro-batch to the replicas with the most room left (its shares above
 * that, summed over the stages), and the plan is costed again with it. */
static wh_status common_shares(const wh__costing *x, const wh__config *cf, const int *cut, wh_plan *p) {
  int S = p->n_stages, R = S > 0 ? p->st[0].ndev / p->st[0].tp : 0;
  if (S < 2 || R < 2) return WH_OK;
  int differ = 0;
  for (int s = 1; s < S; s++)
    for (int r = 0; r < R; r++) differ |= p->st[s].share[r] != p->st[0].share[r];
  if (!differ) return WH_OK;
  int64_t *c = malloc(sizeof(int64_t) * (size_t)R), *fixed = malloc(sizeof(int64_t) * (size_t)(R * S));
  if (!c || !fixed) {
    free(c), free(fixed);
    return WH_ERR_OUT_OF_MEMORY;
  }
  int64_t sum = 0, mb = x->batch / cf->m;
  for (int r = 0; r < R; r++) {
    c[r] = p->st[0].share[r];
    for (int s = 1; s < S; s++)
      if (p->st[s].share[r] < c[r]) c[r] = p->st[s].share[r];
    sum += c[r];
  }
  for (; sum < mb; sum++) {
    int best = 0;
    int64_t room = -1;
    for (int r = 0; r < R; r++) {
      int64_t q = 0;
      for (int s = 0; s < S; s++) q += p->st[s].share[r] - c[r];
      if (q > room) room = q, best = r;
    }
    c[best]++;
  }
  for (int s = 0; s < S; s++) memcpy(fixed + (size_t)s * (size_t)R, c, sizeof(int64_t) * (size_t)R);
  wh__costing y = *x;
  y.fixed_shares = fixed;
  wh_plan q = *p;
  q.st = NULL, q.n_stages = 0;
  wh_status st = materialise(&y, cf, cut, &q);
  int fits = st == WH_OK && q.step_time < WH__INF;
  for (int s = 0; st == WH_OK && fits && s < q.n_stages; s++) fits &= q.st[s].t_compute < WH__INF;
  if (st == WH_OK && fits) { /* the common shares fit: they replace the stages' own */
    wh_plan old = *p;
    p->st = q.st, p->n_stages = q.n_stages, p->step_time = q.step_time, p->bubble_time = q.bubble_time;
    q = old;
  }
  wh__plan_free_stages(&q);
  free(c), free(fixed);
  return st;
}

wh_status wh__plan_finish(wh_ctx *ctx, const wh__costing *x, const wh__config *best, const int *cut, double best_t,
                          const wh__config *second, double second_t, int feasible, int tried, wh_plan **out) {
  const wh_cluster *c = x->c;
  wh_plan *p = calloc(1, sizeof *p);
  if (!p) return WH_ERR_OUT_OF_MEMORY;
  p->ctx = ctx;
  p->global_batch = x->batch;
  p->n_segments = x->m->n;
  p->n_graph_nodes = x->m->n_graph_nodes;
  wh_status st = materialise(x, best, cut, p);
  if (st == WH_OK && !x->fixed_shares) st = common_shares(x, best, cut, p);
  p->n_devices = c->n;
  p->dev_kind = malloc(sizeof(*p->dev_kind) * (size_t)c->n);
  p->dev_node = malloc(sizeof(int) * (size_t)c->n);
  p->dev_mem = malloc(sizeof(double) * (size_t)c->n);
  if (st == WH_OK && p->dev_kind && p->dev_node && p->dev_mem) {
    for (int i = 0; i < c->n; i++) {
      memcpy(p->dev_kind[i], c->dev[i].kind, 32);
      p->dev_node[i] = c->dev[i].node;
      p->dev_mem[i] = c->dev[i].mem_bytes;
    }
    char a[160], b[160], why[512];
    describe_config(best, a, sizeof a);
    if (tried == 0) {
      snprintf(why, sizeof why, "pinned by the caller: %s, predicted %.4f s per step", a, best_t);
    } else if (second_t < WH__INF) {
      describe_config(second, b, sizeof b);
      snprintf(why, sizeof why,
               "chose %s: predicted %.4f s per step; the runner-up, %s, predicts %.4f s (%.1f%% slower); %d of %d "
               "configurations fit in memory",
               a, best_t, b, second_t, 100.0 * (second_t / best_t - 1), feasible, tried);
    } else {
      snprintf(why, sizeof why, "chose %s: predicted %.4f s per step; the only configuration of %d that fits in memory",
               a, best_t, tried);
    }
    p->why = strdup(why);
  } else if (st == WH_OK) {
    st = WH_ERR_OUT_OF_MEMORY;
  }
  if (st != WH_OK) {
    wh_plan_destroy(p);
    return st;
  }
  *out = p;
  return WH_OK;
}

