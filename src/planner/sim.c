/* sim.c - a discrete-event simulation of one training step of a plan: every stage runs its
 * micro-batches in the order of the schedule (GPipe: all forwards, then all backwards; 1F1B:
 * warm-up forwards, then one forward one backward), activations and gradients cross between stages
 * on links that carry one transfer at a time per direction, and each stage all-reduces its
 * gradients after its last backward while other stages still compute. The search uses a closed
 * form; this replays the schedule task by task and checks it. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "planner.h"

typedef struct {
  int is_bwd, mb;
} task;

/* the op order of stage s */
static int stage_order(const wh_plan *p, int s, task *seq) {
  int m = p->micro_batches, S = p->n_stages, n = 0;
  if (p->schedule == WH_SCHED_GPIPE || S == 1) {
    for (int k = 0; k < m; k++) seq[n++] = (task){0, k};
    for (int k = 0; k < m; k++) seq[n++] = (task){1, k};
    return n;
  }
  int warm = S - s - 1 < m ? S - s - 1 : m, f = 0, b = 0;
  for (; f < warm; f++) seq[n++] = (task){0, f};
  while (f < m) {
    seq[n++] = (task){0, f++};
    seq[n++] = (task){1, b++};
  }
  while (b < m) seq[n++] = (task){1, b++};
  return n;
}

wh_status wh_plan_simulate(const wh_plan *p, const wh_cluster *c, wh_sim_result *out) {
  if (!p || !c || !out || out->struct_size != sizeof *out) return WH_ERR_INVALID_ARGUMENT;
  if (c->n != p->n_devices) return WH_ERR_INVALID_ARGUMENT;
  int S = p->n_stages, m = p->micro_batches;
  size_t cells = (size_t)S * (size_t)m;
  double *fend = malloc(sizeof(double) * cells), *bend = malloc(sizeof(double) * cells);
  double *dur_f = malloc(sizeof(double) * (size_t)S), *dur_b = malloc(sizeof(double) * (size_t)S);
  task *seq = malloc(sizeof(task) * (size_t)(2 * m + 2) * (size_t)S);
  int *len = malloc(sizeof(int) * (size_t)S), *pos = calloc((size_t)S, sizeof(int));
  double *free_at = calloc((size_t)S, sizeof(double)), *link_f = calloc((size_t)S, sizeof(double)),
         *link_b = calloc((size_t)S, sizeof(double)), *busy = calloc((size_t)S, sizeof(double));
  if (!fend || !bend || !dur_f || !dur_b || !seq || !len || !pos || !free_at || !link_f || !link_b || !busy) {
    free(fend), free(bend), free(dur_f), free(dur_b), free(seq), free(len), free(pos), free(free_at), free(link_f),
        free(link_b), free(busy);
    return WH_ERR_OUT_OF_MEMORY;
  }
  for (size_t i = 0; i < cells; i++) fend[i] = bend[i] = -1;
  for (int s = 0; s < S; s++) {
    const wh__stage *g = &p->st[s];
    dur_f[s] = dur_b[s] = 0;
    for (int r = 0; r < g->ndev / g->tp; r++) {
      dur_f[s] = fmax(dur_f[s], g->t_fwd[r]);
      dur_b[s] = fmax(dur_b[s], g->t_bwd[r]);
    }
    len[s] = stage_order(p, s, seq + (size_t)s * (size_t)(2 * m + 2));
  }
  /* the link between stage s and s+1 carries forward activations (link_f[s]) and backward
   * gradients (link_b[s]); a transfer starts when its producer ends and the link is free */
  int done = 0, total = 0;
  for (int s = 0; s < S; s++) total += len[s];
  while (done < total) {
    int progressed = 0;
    for (int s = 0; s < S; s++) {
      while (pos[s] < len[s]) {
        task t = seq[(size_t)s * (size_t)(2 * m + 2) + (size_t)pos[s]];
        double ready = 0;
        double half_p2p = p->st[s > 0 ? s - 1 : s].t_p2p / 2; /* stage_cost counts both directions */
        if (!t.is_bwd && s > 0) {
          double e = fend[(size_t)(s - 1) * (size_t)m + (size_t)t.mb];
          if (e < 0) break;
          double start = fmax(e, link_f[s - 1]);
          link_f[s - 1] = start + half_p2p;
          ready = link_f[s - 1];
        } else if (t.is_bwd) {
          double e = fend[(size_t)s * (size_t)m + (size_t)t.mb];
          if (e < 0) break;
          ready = e;
          if (s < S - 1) {
            double eb = bend[(size_t)(s + 1) * (size_t)m + (size_t)t.mb];
            if (eb < 0) break;
            double hp = p->st[s].t_p2p / 2;
            double start = fmax(eb, link_b[s]);
            link_b[s] = start + hp;
            ready = fmax(ready, link_b[s]);
          }
        }
        double start = fmax(ready, free_at[s]);
        double d = t.is_bwd ? dur_b[s] : dur_f[s];
        free_at[s] = start + d;
        busy[s] += d;
        (t.is_bwd ? bend : fend)[(size_t)s * (size_t)m + (size_t)t.mb] = start + d;
        pos[s]++;
        done++;
        progressed = 1;
      }
    }
    if (!progressed) break; /* cannot happen for the two schedules; guards a bad plan */
  }
  double step = 0, worst_busy = 0;
  for (int s = 0; s < S; s++) step = fmax(step, free_at[s] + p->st[s].t_allreduce + p->st[s].t_update);
  memset(out->util, 0, sizeof out->util);
  for (int s = 0; s < S; s++) {
    const wh__stage *g = &p->st[s];
    for (int i = 0; i < g->ndev; i++) {
      int r = i / g->tp, d = g->dev[i];
      double b = (double)m * (g->t_fwd[r] + g->t_bwd[r]);
      if (d < 64) out->util[d] = step > 0 ? b / step : 0;
      worst_busy = fmax(worst_busy, b);
    }
  }
  out->step_time = step;
  out->bubble_fraction = step > 0 ? 1.0 - worst_busy / step : 0;
  out->num_devices = c->n;
  wh_status st = done == total ? WH_OK : WH_ERR_INTERNAL;
  free(fend), free(bend), free(dur_f), free(dur_b), free(seq), free(len), free(pos), free(free_at), free(link_f),
      free(link_b), free(busy);
  return st;
}
