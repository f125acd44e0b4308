/* plan.h - the Plan: what the planner decides and the partition layer reads to make each rank's
 * program (a plain structure; printed, saved and loaded by src/planner). */
#ifndef WH_PLAN_H
#define WH_PLAN_H

#include <stdint.h>

#include "whale.h"

typedef enum { WH_SCHED_GPIPE = 0, WH_SCHED_1F1B = 1 } wh__schedule;

typedef struct wh__stage {
  int seg_first, seg_last;
  /* the forward graph nodes [node_first, node_last] of those segments: what the partition places
   * on the stage (-1: unknown, a plan file from before they were recorded) */
  int node_first, node_last;
  int ndev;
  int *dev;          /* cluster device indices (data-parallel replicas of this stage) */
  int64_t *share;    /* samples per micro-batch for each replica */
  int tp;            /* operator-sharding degree inside each replica (1: none) */
  int recompute;
  /* predictions */
  double t_compute;  /* per micro-batch, slowest replica */
  double t_allreduce, t_p2p;
  double mem_peak;   /* worst replica, bytes */
  double mem_cap;    /* that replica's capacity */
  double *t_fwd, *t_bwd; /* per replica, per micro-batch (backward includes recompute) */
  double t_update;       /* the optimizer step, once per training step, after the all-reduce */
} wh__stage;

struct wh_plan {
  wh_ctx *ctx;
  int64_t global_batch;
  int micro_batches;
  wh__schedule schedule;
  int zero1;
  wh__stage *st;
  int n_stages;
  double step_time;        /* the search's estimate */
  double bubble_time;
  char *why;               /* explanation of the choice against the runner-up (owned) */
  int n_devices, n_segments;
  int n_graph_nodes;       /* nodes of the graph it was made for (0: unknown, an older file) */
  int shares_pinned;       /* the caller set the replicas' rows: sessions keep them (no rebalancing) */
  wh_dtype mixed;          /* the precision pass it was costed for and sessions run (WH_F32: none) */
  char (*dev_kind)[32];    /* copy of the cluster's kinds, for printing */
  int *dev_node;
  double *dev_mem;
};

#endif
