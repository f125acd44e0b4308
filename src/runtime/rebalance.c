/* rebalance.c - online rebalancing of a data-parallel session: each step every rank reports its
 * compute seconds (the step's wall time less the communication it waited for) and the rows its
 * memory could hold; every rank gets the same figures, so every rank makes the same decision.
 * When the slowest replica stays more than WH_RB_THRESHOLD slower than the measured speeds would
 * need for WH_RB_STREAK steps, the shares follow the speeds (water-filling on per-sample times,
 * under the memory caps) and every rank re-partitions at the same step boundary. The global
 * batch, the weights and the reductions stay: only which rows each replica takes changes. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/ctx.h"
#include "../planner/planner.h"
#include "session_impl.h"

#define WH_RB_THRESHOLD 0.10 /* predicted step / balanced step - 1 */
#define WH_RB_STREAK 3       /* steps in a row */
#define WH_RB_WARMUP 2       /* first steps not measured (first touches, caches) */

struct wh__rebalance {
  int R, tp;
  int *rep_of;     /* world rank -> its replica */
  double *p;       /* per replica: seconds per sample (smoothed); 0 unknown */
  double *mine, *all;
  int streak, count;
  int64_t step;
  int pending;     /* new shares decided: the next run starts with them */
};

wh_status wh__rebalance_apply(wh_session *s) {
  struct wh__rebalance *r = s->rb;
  if (!r || !r->pending) return WH_OK;
  r->pending = 0;
  return wh__session_repartition(s);
}

void wh__rebalance_free(wh_session *s) {
  struct wh__rebalance *r = s->rb;
  if (!r) return;
  free(r->rep_of), free(r->p), free(r->mine), free(r->all);
  free(r);
  s->rb = NULL;
}

wh_status wh__rebalance_open(wh_session *s, const wh_plan *pl, int asked) {
  const wh__place *pc = &s->prog.place;
  if (!asked || !s->dist || pc->pipelined || pc->deterministic || pl->shares_pinned || pc->n_replicas < 2) return WH_OK;
  struct wh__rebalance *r = calloc(1, sizeof *r);
  if (!r) return WH_ERR_OUT_OF_MEMORY;
  s->rb = r;
  int n = wh_comm_size(s->comm);
  r->R = pc->n_replicas, r->tp = pc->tp;
  r->rep_of = malloc(sizeof(int) * (size_t)n);
  r->p = calloc((size_t)r->R, sizeof(double));
  r->mine = malloc(sizeof(double) * 2);
  r->all = malloc(sizeof(double) * 2 * (size_t)n);
  if (!r->rep_of || !r->p || !r->mine || !r->all) return WH_ERR_OUT_OF_MEMORY;
  for (int i = 0; i < pl->st[0].ndev; i++) r->rep_of[pl->st[0].dev[i]] = i / r->tp;
  if (wh__plan_clone(pl, &s->plan) != WH_OK) return WH_ERR_OUT_OF_MEMORY;
  return WH_OK;
}

/* Shares of total rows proportional to each replica's speed (1 / seconds per sample), whole rows
 * by largest remainder, none above a replica's cap; every replica keeps a row while there are rows
 * enough (one without rows could no longer be measured, so a slow spell would be final). */
static void water_fill(int R, const double *p, const double *cap, int64_t total, int64_t *h) {
  double inv = 0;
  for (int r = 0; r < R; r++) inv += 1.0 / p[r];
  int64_t sum = 0, least = total >= R ? 1 : 0;
  double *rem = malloc(sizeof(double) * (size_t)R);
  for (int r = 0; r < R; r++) {
    double x = (double)total / p[r] / inv;
    h[r] = (int64_t)floor(x);
    if (h[r] < least && cap[r] >= 1) h[r] = least, x = (double)least;
    if ((double)h[r] > cap[r]) h[r] = (int64_t)cap[r];
    if (rem) rem[r] = x - (double)h[r];
    sum += h[r];
  }
  while (sum < total) { /* the rows left: to the replica with the largest remainder that has room */
    int best = -1;
    for (int r = 0; r < R; r++)
      if ((double)(h[r] + 1) <= cap[r] && (best < 0 || (rem ? rem[r] > rem[best] : p[r] < p[best]))) best = r;
    if (best < 0) break;
    h[best]++, sum++;
    if (rem) rem[best] -= 1.0;
  }
  while (sum > total) { /* the kept rows went over: from the replica with the smallest remainder */
    int best = -1;
    for (int r = 0; r < R; r++)
      if (h[r] > least && (best < 0 || (rem ? rem[r] < rem[best] : p[r] > p[best]))) best = r;
    if (best < 0) break;
    h[best]--, sum--;
    if (rem) rem[best] += 1.0;
  }
  free(rem);
}

wh_status wh__rebalance_step(wh_session *s, double compute_s) {
  struct wh__rebalance *r = s->rb;
  if (!r) return WH_OK;
  const wh__place *pc = &s->prog.place;
  int n = wh_comm_size(s->comm), m = pc->micro_batches, R = r->R;
  /* the rows this rank's memory could take: what the arena needs per row beyond the fixed part */
  double room = 1e18;
  if (s->batch > 0 && s->plan->dev_mem) {
    int me = wh_comm_rank(s->comm);
    double fixed = 0;
    for (int v = 0; v < s->n; v++)
      if (wh__role_persistent(s->prog.values[v].role) && s->prog.values[v].role != WH_ROLE_INPUT) fixed += (double)s->bytes[v];
    double per_row = (double)s->arena_bytes / (double)s->batch;
    room = per_row > 0 ? (s->plan->dev_mem[me] - fixed) / per_row : 1e18;
  }
  r->mine[0] = compute_s, r->mine[1] = room;
  wh_status st = wh_comm_allgather(s->comm, r->mine, r->all, 2, NULL, WH_F64);
  if (st != WH_OK) return wh__session_fail(s, st, "wh_session_run: rebalancing's step times: %s", wh_last_error(s->ctx));
  if (++r->step <= WH_RB_WARMUP) return WH_OK;
  double *t = calloc((size_t)R, sizeof(double)), *cap = malloc(sizeof(double) * (size_t)R);
  int64_t *h = s->plan->st[0].share, *nh = malloc(sizeof(int64_t) * (size_t)R);
  if (!t || !cap || !nh) {
    free(t), free(cap), free(nh);
    return wh__session_fail(s, WH_ERR_OUT_OF_MEMORY, "wh_session_run: out of memory rebalancing");
  }
  for (int q = 0; q < R; q++) cap[q] = 1e18;
  for (int k = 0; k < n; k++) { /* a replica is as slow as its slowest shard */
    int q = r->rep_of[k];
    if (r->all[2 * k] > t[q]) t[q] = r->all[2 * k];
    if (r->all[2 * k + 1] < cap[q]) cap[q] = r->all[2 * k + 1];
  }
  double known = 0;
  int nk = 0;
  for (int q = 0; q < R; q++) {
    if (h[q] > 0 && t[q] > 0) {
      double x = t[q] / (double)(h[q] * m);
      r->p[q] = r->p[q] > 0 ? 0.5 * r->p[q] + 0.5 * x : x;
    }
    if (r->p[q] > 0) known += r->p[q], nk++;
  }
  for (int q = 0; q < R; q++) /* a replica without rows: as fast as the average, until it has some */
    if (r->p[q] <= 0) r->p[q] = nk ? known / nk : 1.0;
  int64_t total = pc->mb;
  double now_t = 0, inv = 0;
  for (int q = 0; q < R; q++) now_t = fmax(now_t, r->p[q] * (double)h[q]), inv += 1.0 / r->p[q];
  double balanced = (double)total / inv;
  r->streak = now_t > balanced * (1.0 + WH_RB_THRESHOLD) ? r->streak + 1 : 0;
  st = WH_OK;
  if (r->streak >= WH_RB_STREAK) {
    r->streak = 0;
    water_fill(R, r->p, cap, total, nh);
    double next_t = 0;
    int64_t sum = 0, differ = 0;
    for (int q = 0; q < R; q++) next_t = fmax(next_t, r->p[q] * (double)nh[q]), sum += nh[q], differ |= nh[q] != h[q];
    if (differ && sum == total && next_t < now_t * 0.95) {
      char was[256] = "", to[256] = "";
      for (int q = 0, a = 0, b = 0; q < R; q++) {
        a += snprintf(was + a, sizeof was - (size_t)a, "%s%lld", q ? "/" : "", (long long)h[q]);
        b += snprintf(to + b, sizeof to - (size_t)b, "%s%lld", q ? "/" : "", (long long)nh[q]);
        if (a >= (int)sizeof was - 24 || b >= (int)sizeof to - 24) break;
      }
      memcpy(h, nh, sizeof(int64_t) * (size_t)R);
      memcpy(s->shares, nh, sizeof(int64_t) * (size_t)R);
      r->pending = 1; /* what this step computed stays fetchable: the switch is at the next step's start */
      r->count++;
      {
        wh__log(s->ctx, WH_LOG_INFO,
                "rebalance after step %lld: shares %s -> %s rows per micro-batch (predicted compute %.1f -> %.1f ms "
                "per step)",
                (long long)s->steps, was, to, 1e3 * now_t * m, 1e3 * next_t * m);
      }
    }
  }
  free(t), free(cap), free(nh);
  return st;
}

wh_status wh_session_shares(wh_session *s, int64_t *shares, int n, int *rebalances) {
  if (!s || (n > 0 && !shares)) return WH_ERR_INVALID_ARGUMENT;
  int need = s->dist ? s->n_devices : 1;
  if (rebalances) *rebalances = s->rb ? s->rb->count : 0;
  if (n < need) {
    wh__ctx_set_error(s->ctx, "wh_session_shares: the plan has %d devices, the array %d entries", need, n);
    return WH_ERR_INVALID_ARGUMENT;
  }
  for (int q = 0; q < n; q++) shares[q] = 0;
  if (!s->dist) shares[0] = s->batch;
  else
    for (int i = 0; i < s->stage_ndev; i++) shares[s->stage_dev[i]] = s->shares[i / s->prog.place.tp];
  return WH_OK;
}
