/* cost.h - inside the planner's search: the tables, configurations and stage groups that cost.c
 * prices and search.c (wh_plan_create) and pinned.c (wh_plan_create_pinned) share. */
#ifndef WH_PLANNER_COST_H
#define WH_PLANNER_COST_H

#include <stdint.h>

#include "planner.h"

/* The time of a layout that does not fit: every comparison against a feasible one loses. */
#define WH__INF 1e300

typedef struct {
  double t0, t1; /* seconds: fixed + per sample */
} wh__lin;

/* per device class: the segments' roofline times as prefix sums */
typedef struct {
  int nclass;
  int *class_of;    /* device -> class */
  int *rep;         /* class -> a device of it */
  wh__lin *fwd, *bwd, *upd; /* [class][n+1] prefix sums */
  int n;
} wh__costtab;

/* range queries over the segment chain: prefix sums and sparse tables, O(1) each */
typedef struct {
  int n, lg;
  double *param, *act, *outb, *flops;  /* prefix sums, [n+1] */
  double *tpp, *tpc, *tpflops, *tpa, *tpn; /* per sharding level (planner.h), prefix sums, [WH_TP_LEVELS][n+1] */
  double *peak, *actmax;                                   /* sparse tables, [lg][n] */
} wh__ranges;

/* one configuration */
typedef struct {
  int S, m, tp, recompute, zero1;
  wh__schedule sched;
  int even_shares, even_layers;
} wh__config;

/* what costing a configuration reads */
typedef struct {
  const wh__model *m;
  const wh_cluster *c;
  const wh__costtab *t;
  const wh__ranges *rg;
  const int *order;   /* devices in stage-major groups: memory desc, speed desc, unless pinned */
  int64_t batch;
  const int64_t *fixed_shares; /* pinned: per stage, per replica (stage-major), or NULL */
  const char *legal_end;       /* segment j may end a stage (stage hints), or NULL: any */
} wh__costing;

/* A stage's replicas grouped into kinds: replicas of one kind run at the same speed and hold the
 * same memory, so water-filling works on a handful of kinds, not on every replica. */
#define WH__MAX_KINDS 16
typedef struct {
  int nkind;
  int cls[WH__MAX_KINDS];      /* the time class of the kind (its slowest member) */
  double cap[WH__MAX_KINDS];   /* bytes of its smallest member */
  int count[WH__MAX_KINDS];
  int *kind_of;            /* replica -> kind (owned) */
  int nrep, nodes;
  double link;             /* slowest intra-node link of the group */
  int next_same_node;      /* the next stage's first device is on this group's first node */
} wh__group;

/* What wh_plan_create and wh_plan_create_pinned share: the model, the cost table, the order. */
typedef struct {
  wh__model m;
  wh__costtab t;
  wh__ranges rg;
  int *order;
  char *legal;
  int hint_rep, hint_tp;
} wh__prepared;

/* Check the graph and batch, build the model (costed for mixed precision `mixed`, WH_F32: none) and
 * its tables, order the devices, read the hints. On failure ctx holds why and pr owns nothing. */
wh_status wh__prepare(wh_ctx *ctx, const wh_graph *g, const wh_cluster *c, int64_t batch, wh_dtype mixed,
                      wh__prepared *pr);
void wh__prepared_free(wh__prepared *pr);

/* Every stage's replica kinds of cf (owned: wh__groups_free with cf->S); NULL when out of memory. */
wh__group *wh__groups_build(const wh__costing *x, const wh__config *cf);
void wh__groups_free(wh__group *g, int S);
/* Stage s holding segments [a, b]: its per-micro-batch time (WH__INF where it does not fit), with
 * the worst replica's memory and capacity, compute, gradient all-reduce and send/recv; each
 * replica's share when share != NULL. */
double wh__stage_cost(const wh__costing *x, const wh__config *cf, const wh__group *gr, int s, int a, int b,
                      int64_t *share, double *mem, double *cap, double *t_comp, double *t_ar, double *t_p2p);
/* The step time of cf (at most 1024 stages) with stage s ending at segment cut[s]. */
double wh__step_time(const wh__costing *x, const wh__config *cf, const wh__group *gr, const int *cut);
/* The same, building and freeing the groups; WH__INF when out of memory. */
double wh__layout_time(const wh__costing *x, const wh__config *cf, const int *cut);

/* The plan of best (stages ending at cut), with its prediction and why it won: against second
 * when second_t is finite; "pinned by the caller" when tried is 0. */
wh_status wh__plan_finish(wh_ctx *ctx, const wh__costing *x, const wh__config *best, const int *cut, double best_t,
                          const wh__config *second, double second_t, int feasible, int tried, wh_plan **out);

#endif
