/* pinned.c - layouts the caller fixes (wh_plan_create_pinned) and the prepared planner that costs
 * many of them on one graph and cluster (wh__planner_*: the brute force of tests and benchmarks). */
#include <stdlib.h>
#include <string.h>

#include "../base/ctx.h"
#include "cost.h"

struct wh__planner {
  wh_ctx *ctx;
  const wh_cluster *c;
  int64_t batch;
  wh__prepared pr;
};

wh_status wh__planner_open(wh_ctx *ctx, const wh_graph *g, const wh_cluster *c, int64_t batch, wh_dtype mixed,
                           wh__planner **out) {
  wh__planner *pl = calloc(1, sizeof *pl);
  if (!pl) return WH_ERR_OUT_OF_MEMORY;
  wh_status st = wh__prepare(ctx, g, c, batch, mixed, &pl->pr);
  if (st != WH_OK) {
    free(pl);
    return st;
  }
  pl->ctx = ctx;
  pl->c = c;
  pl->batch = batch;
  *out = pl;
  return WH_OK;
}

void wh__planner_close(wh__planner *pl) {
  if (!pl) return;
  wh__prepared_free(&pl->pr);
  free(pl);
}

int wh__planner_segments(const wh__planner *pl) { return pl ? pl->pr.m.n : 0; }

int wh__planner_legal_end(const wh__planner *pl, int j) {
  return !pl->pr.legal || j >= pl->pr.m.n - 1 || pl->pr.legal[j];
}

const int *wh__planner_order(const wh__planner *pl) { return pl->pr.order; }

wh_status wh__planner_pin(wh__planner *pl, const wh_plan_layout *l, wh_plan **out) {
  wh_ctx *ctx = pl->ctx;
  const wh_cluster *c = pl->c;
  int64_t global_batch = pl->batch;
  *out = NULL;
  if (l->struct_size != sizeof *l || l->stages < 1 || l->stages > 1024 || c->n % l->stages || l->micro_batches < 1 ||
      global_batch % l->micro_batches || l->tp < 1 || (c->n / l->stages) % l->tp ||
      (l->schedule != WH_SCHEDULE_GPIPE && l->schedule != WH_SCHEDULE_1F1B)) {
    wh__ctx_set_error(ctx, "wh_plan_create_pinned: the layout does not fit: %d stages over %d devices, %d micro-batches "
                           "of a batch of %lld, tp %d",
                      l->stages, c->n, l->micro_batches, (long long)global_batch, l->tp);
    return WH_ERR_INVALID_ARGUMENT;
  }
  if (l->mixed != pl->pr.m.mixed) {
    wh__ctx_set_error(ctx, "wh_plan_create_pinned: the layout asks for mixed precision %s, the prepared model is costed "
                           "for %s",
                      wh__dtype_name(l->mixed), wh__dtype_name(pl->pr.m.mixed));
    return WH_ERR_INVALID_ARGUMENT;
  }
  wh__prepared *pr = &pl->pr;
  int S = l->stages, n = pr->m.n;
  wh_status st = WH_OK;
  int *cut = malloc(sizeof(int) * (size_t)(S + 1)), *order = malloc(sizeof(int) * (size_t)c->n);
  if (!cut || !order) {
    free(cut), free(order);
    return WH_ERR_OUT_OF_MEMORY;
  }
  memcpy(order, pr->order, sizeof(int) * (size_t)c->n);
  for (int s = 0; s < S && st == WH_OK; s++) {
    cut[s] = l->last_segment ? l->last_segment[s] : (int)((int64_t)(s + 1) * n / S) - 1;
    if (cut[s] < (s ? cut[s - 1] + 1 : 0) || cut[s] >= n || (s == S - 1 && cut[s] != n - 1)) {
      wh__ctx_set_error(ctx, "wh_plan_create_pinned: stage %d ends at segment %d; stages must end in increasing order "
                             "and the last at segment %d",
                        s, cut[s], n - 1);
      st = WH_ERR_INVALID_ARGUMENT;
    }
  }
  if (st == WH_OK && l->shares) {
    /* pinned shares: every stage's replicas share each micro-batch exactly */
    int nrep = c->n / S / l->tp;
    int64_t mb = global_batch / l->micro_batches;
    for (int s = 0; s < S && st == WH_OK; s++) {
      int64_t sum = 0;
      for (int r = 0; r < nrep; r++) {
        int64_t sh = l->shares[(size_t)s * (size_t)nrep + (size_t)r];
        if (sh < 0) {
          wh__ctx_set_error(ctx, "wh_plan_create_pinned: stage %d replica %d has share %lld", s, r, (long long)sh);
          st = WH_ERR_INVALID_ARGUMENT;
        }
        sum += sh;
      }
      if (st == WH_OK && sum != mb) {
        wh__ctx_set_error(ctx, "wh_plan_create_pinned: stage %d's shares sum to %lld, the micro-batch is %lld", s,
                          (long long)sum, (long long)mb);
        st = WH_ERR_INVALID_ARGUMENT;
      }
    }
  }
  if (st == WH_OK && l->devices) {
    char *seen = calloc((size_t)c->n, 1);
    for (int i = 0; seen && i < c->n; i++) {
      int d = l->devices[i];
      if (d < 0 || d >= c->n || seen[d]) {
        wh__ctx_set_error(ctx, "wh_plan_create_pinned: devices must list each of the %d cluster devices once (entry %d "
                               "is %d)",
                          c->n, i, d);
        st = WH_ERR_INVALID_ARGUMENT;
        break;
      }
      seen[d] = 1;
    }
    if (!seen) st = WH_ERR_OUT_OF_MEMORY;
    free(seen);
    if (st == WH_OK) memcpy(order, l->devices, sizeof(int) * (size_t)c->n);
  }
  if (st == WH_OK) {
    wh__costing x = {&pr->m, c, &pr->t, &pr->rg, order, global_batch, l->shares, NULL};
    wh__config cf = {S, l->micro_batches, l->tp, l->recompute != 0, l->zero1 != 0, (wh__schedule)l->schedule, 0, 0};
    double tt = wh__layout_time(&x, &cf, cut);
    if (tt >= WH__INF) {
      wh__ctx_set_error(ctx, "wh_plan_create_pinned: the pinned layout does not fit in every device's memory (%lld "
                             "samples per micro-batch)",
                        (long long)(global_batch / l->micro_batches));
      st = WH_ERR_OUT_OF_MEMORY;
    } else {
      st = wh__plan_finish(ctx, &x, &cf, cut, tt, &cf, WH__INF, 1, 0, out);
      if (st == WH_OK) {
        (*out)->shares_pinned = l->shares != NULL; /* the caller's rows: never rebalanced */
        (*out)->mixed = pl->pr.m.mixed;
      }
    }
  }
  free(cut), free(order);
  return st;
}

wh_status wh_plan_create_pinned(wh_ctx *ctx, const wh_graph *g, const wh_cluster *c, int64_t global_batch,
                                const wh_plan_layout *l, wh_plan **out) {
  if (!ctx || !g || !c || !l || !out) return WH_ERR_INVALID_ARGUMENT;
  *out = NULL;
  wh__planner *pl;
  if (l->struct_size != sizeof *l) {
    wh__ctx_set_error(ctx, "wh_plan_create_pinned: layout struct_size %zu, expected %zu", l->struct_size, sizeof *l);
    return WH_ERR_INVALID_ARGUMENT;
  }
  wh_status st = wh__planner_open(ctx, g, c, global_batch, l->mixed, &pl);
  if (st != WH_OK) return st;
  st = wh__planner_pin(pl, l, out);
  wh__planner_close(pl);
  return st;
}

