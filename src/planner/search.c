/* search.c - the strategy search (wh_plan_create): stages, micro-batches, schedule, operator
 * sharding, recomputation and ZeRO-1 are enumerated, each configuration priced by cost.c; stage
 * boundaries come from dynamic programming over the segment chain, or from trying every split
 * when there are few. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../base/ctx.h"
#include "cost.h"

/* Is the number of ways to cut the chain into S stages (at legal ends) small? */
static int exhaustive_ok(const wh__costing *x, int S, int n) {
  int legal = 0;
  for (int j = 0; j < n - 1; j++) legal += !x->legal_end || x->legal_end[j];
  if (S - 1 > legal) return 0; /* no split at all: the DP finds that at once */
  double ways = 1;
  for (int k = 0; k < S - 1; k++) ways = ways * (legal - k) / (k + 1);
  return ways <= 4096;
}

static void enumerate_cuts(const wh__costing *x, const wh__config *cf, const wh__group *gr, int *cut, int s, int from,
                           int *best_cut, double *best) {
  int n = x->m->n, S = cf->S;
  if (s == S - 1) {
    cut[s] = n - 1;
    double t = wh__step_time(x, cf, gr, cut);
    if (t < *best) {
      *best = t;
      memcpy(best_cut, cut, sizeof(int) * (size_t)S);
    }
    return;
  }
  for (int j = from; j <= n - S + s; j++) {
    if (x->legal_end && !x->legal_end[j]) continue;
    cut[s] = j;
    enumerate_cuts(x, cf, gr, cut, s + 1, j + 1, best_cut, best);
  }
}

/* Minimise the slowest stage by DP over the chain: best[s][j] over stages 0..s covering 0..j.
 * A stage's cost only grows as it takes more segments, so the scan over its first segment stops
 * as soon as that cost alone passes the best found. */
static double partition_chain(const wh__costing *x, const wh__config *cf, int *cut) {
  int S = cf->S, n = x->m->n;
  if (S > n || S > 1024) return WH__INF;
  wh__group *gr = wh__groups_build(x, cf);
  double *best = malloc(sizeof(double) * (size_t)S * (size_t)n);
  int *arg = malloc(sizeof(int) * (size_t)S * (size_t)n);
  if (!gr || !best || !arg) {
    wh__groups_free(gr, S), free(best), free(arg);
    return WH__INF;
  }
  double mem, cap, tc, ta, tp, result = WH__INF;
  for (int i = 0; i < S * n; i++) best[i] = WH__INF, arg[i] = -1;
  if (!cf->even_layers && S > 1 && exhaustive_ok(x, S, n)) {
    /* few enough splits to try them all against the whole step (all-reduces included), which the
     * per-stage DP below can only approximate */
    int *tmp = malloc(sizeof(int) * (size_t)S);
    if (tmp) {
      result = WH__INF;
      enumerate_cuts(x, cf, gr, tmp, 0, 0, cut, &result);
      free(tmp);
    }
    goto done;
  } else if (cf->even_layers) {
    for (int s = 0; s < S; s++) cut[s] = (int)((int64_t)(s + 1) * n / S) - 1;
  } else {
    for (int s = 0; s < S; s++)
      for (int j = s; j <= n - S + s; j++) {
        if (x->legal_end && j < n - 1 && !x->legal_end[j]) continue;
        if (s == S - 1 && j != n - 1) continue; /* the last stage ends the chain */
        double *bj = &best[s * n + j];
        if (s == 0) {
          *bj = wh__stage_cost(x, cf, &gr[0], 0, 0, j, NULL, &mem, &cap, &tc, &ta, &tp);
          arg[j] = 0;
          continue;
        }
        for (int i = j; i >= s; i--) {
          double c = wh__stage_cost(x, cf, &gr[s], s, i, j, NULL, &mem, &cap, &tc, &ta, &tp);
          if (c >= *bj) break;
          double v = fmax(best[(s - 1) * n + i - 1], c);
          if (v < *bj) *bj = v, arg[s * n + j] = i;
        }
      }
    if (best[(S - 1) * n + n - 1] >= WH__INF) goto done;
    int j = n - 1;
    for (int s = S - 1; s >= 0; s--) {
      cut[s] = j;
      j = arg[s * n + j] - 1;
    }
  }
  result = wh__step_time(x, cf, gr, cut);
done:
  wh__groups_free(gr, S), free(best), free(arg);
  return result;
}

wh_status wh_plan_create(wh_ctx *ctx, const wh_graph *g, const wh_cluster *c, const wh_plan_options *opts,
                         wh_plan **out) {
  if (!ctx || !g || !c || !out) return WH_ERR_INVALID_ARGUMENT;
  *out = NULL;
  wh_plan_options o = WH_PLAN_OPTIONS_INIT;
  if (wh__options_in(ctx, "wh_plan_create", &o, opts, sizeof o) != WH_OK) return WH_ERR_INVALID_ARGUMENT;
  if (o.stages < 0 || o.micro_batches < 0 ||
      (o.schedule != WH_SCHEDULE_AUTO && o.schedule != WH_SCHEDULE_GPIPE && o.schedule != WH_SCHEDULE_1F1B)) {
    wh__ctx_set_error(ctx, "wh_plan_create: stages and micro-batches must be >= 0 and the schedule known");
    return WH_ERR_INVALID_ARGUMENT;
  }
  if (o.mixed == WH_F16 && (o.stages > 1 || o.zero1 > 0)) {
    wh__ctx_set_error(ctx, "wh_plan_create: fp16 with its loss scaling runs without pipeline stages and ZeRO-1 in "
                           "this build (asked: %d stages%s); use WH_BF16",
                      o.stages, o.zero1 > 0 ? ", ZeRO-1" : "");
    return WH_ERR_UNSUPPORTED;
  }
  wh__prepared pr;
  wh_status st = wh__prepare(ctx, g, c, o.global_batch, o.mixed, &pr);
  if (st != WH_OK) return st;
  wh__model *m = &pr.m;
  wh__costing x = {m, c, &pr.t, &pr.rg, pr.order, o.global_batch, NULL, pr.legal};
  wh__config best = {0}, second = {0};
  double best_t = WH__INF, second_t = WH__INF;
  int *cut = malloc(sizeof(int) * (size_t)(m->n + 1)), *best_cut = malloc(sizeof(int) * (size_t)(m->n + 1));
  int tried = 0, feasible = 0;
  for (int S = 1; S <= c->n && S <= m->n && S <= 1024 && cut && best_cut; S++) {
    if (c->n % S) continue;
    if (o.stages && S != o.stages) continue;
    if (o.mixed == WH_F16 && S > 1) continue; /* what the fp16 pass runs (partition.c) */
    int gsize = c->n / S;
    /* micro-batch counts: the one asked for, else powers of two */
    for (int m_ = o.micro_batches ? o.micro_batches : 1; m_ <= (o.micro_batches ? o.micro_batches : 256) &&
                                                         m_ <= o.global_batch;
         m_ = o.micro_batches ? m_ + 1 : 2 * m_) {
      if (o.global_batch % m_) continue;
      if (!o.micro_batches && g->micro_batches && S > 1 && m_ != g->micro_batches) continue;
      if (S == 1 && m_ > 1 && !o.micro_batches) continue; /* accumulation only when asked */
      for (int sched = 0; sched < 2; sched++) {
        if (S == 1 && sched == 0) continue;
        if (o.schedule != WH_SCHEDULE_AUTO && sched != (int)o.schedule && S > 1) continue;
        for (int tp = 1; tp <= 8 && tp <= gsize; tp *= 2) {
          if (gsize % tp || (tp > 1 && !o.allow_tp)) continue;
          if (o.global_batch / m_ < gsize / tp) continue; /* a replica without samples is wasted */
          for (int rc = 0; rc < 2; rc++)
          for (int z = 0; z < 2; z++) {
            if (rc && !o.allow_recompute) continue;
            if ((pr.hint_rep && gsize / tp != pr.hint_rep) || (pr.hint_tp && tp != pr.hint_tp)) continue;
            /* ZeRO-1: as asked, or (zero1 < 0) tried where it runs - two replicas or more,
             * without a pipeline, with or without sharding - and kept only when it is faster or
             * alone fits (ties keep the plain all-reduce, tried first) */
            if (o.zero1 >= 0 ? z != (o.zero1 != 0) : z && (S > 1 || gsize / tp < 2 || o.mixed == WH_F16)) continue;
            wh__config cf = {S, m_, tp, rc, z, (wh__schedule)sched, o.even_shares, o.even_layers};
            tried++;
            double tt = partition_chain(&x, &cf, cut);
            if (tt >= WH__INF) continue;
            feasible++;
            if (tt < best_t) {
              second = best, second_t = best_t;
              best = cf, best_t = tt;
              memcpy(best_cut, cut, sizeof(int) * (size_t)S);
            } else if (tt < second_t) {
              second = cf, second_t = tt;
            }
          }
        }
      }
    }
  }
  if (!cut || !best_cut) st = WH_ERR_OUT_OF_MEMORY;
  else if (tried == 0) {
    wh__ctx_set_error(ctx, "wh_plan_create: no configuration matches the options and hints (stages %d, micro-batches "
                           "%d of a global batch of %lld, %d devices)",
                      o.stages, o.micro_batches, (long long)o.global_batch, c->n);
    st = WH_ERR_INVALID_ARGUMENT;
  } else if (best_t >= WH__INF) {
    wh__ctx_set_error(ctx, "wh_plan_create: no plan fits: %d configurations tried, none within every device's memory "
                           "(model: %.2f GB of parameters; largest device %.1f GiB)",
                      tried, m->param_bytes / 1e9, c->dev[pr.order[0]].mem_bytes / 1073741824.0);
    st = WH_ERR_OUT_OF_MEMORY;
  } else {
    st = wh__plan_finish(ctx, &x, &best, best_cut, best_t, &second, second_t, feasible, tried, out);
    if (st == WH_OK) (*out)->mixed = o.mixed;
  }
  free(cut), free(best_cut);
  wh__prepared_free(&pr);
  return st;
}

