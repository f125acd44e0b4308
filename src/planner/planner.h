/* planner.h - inside the planner: the device catalogue, clusters, the segment model of a graph,
 * the cost model, plans and the simulator. The public face is wh_cluster_* / wh_plan_*. */
#ifndef WH_PLANNER_H
#define WH_PLANNER_H

#include <stdint.h>
#include <string.h>

#include "../ir/ir.h"
#include "../partition/plan.h"

/* ---- devices */

typedef struct wh__device_kind {
  const char *name;        /* "V100-32GB" */
  double flops_f32;        /* peak FLOP/s, FP32 (no tensor cores) */
  double flops_bf16;       /* peak dense FLOP/s with 16-bit inputs (tensor cores where present) */
  double mem_bw;           /* bytes/s */
  double mem_bytes;        /* capacity */
  double link_bw;          /* per-device intra-node link (NVLink/PCIe), bytes/s one direction */
  const char *source;      /* where the figures come from */
} wh__device_kind;

extern const wh__device_kind wh__catalogue[];
extern const int wh__catalogue_n;
const wh__device_kind *wh__catalogue_find(const char *name);

typedef struct wh__device {
  char kind[32];
  int node;
  double flops_f32, flops_bf16, mem_bw, mem_bytes, link_bw;
  double eff_flops, eff_bw; /* achievable fractions of peak (calibrated or default) */
  /* measured profiles (wh_cluster_set_profile): per op kind, measured time over the roofline's;
   * 0 where none was measured */
  float op_scale[WH_OP_COUNT];
} wh__device;

/* Fixed cost of one node: kernel launch and small-op floor (GPU), call overhead (CPU). */
#define WH_OP_OVERHEAD_GPU 4e-6
#define WH_OP_OVERHEAD_CPU 0.5e-6

/* The cost model's time for one node of op kind `op` doing `flops` and moving `bytes` on d: the
 * roofline at the device's sustained rates (its 16-bit rate for a product with 16-bit inputs,
 * half), plus the per-node overhead when fixed, scaled by a measured profile where there is one. */
static inline double wh__node_time(const wh__device *d, int op, double flops, double bytes, int fixed, int half) {
  double F = (half && d->flops_bf16 > 0 ? d->flops_bf16 : d->flops_f32) * d->eff_flops, B = d->mem_bw * d->eff_bw;
  double t = (flops / F > bytes / B ? flops / F : bytes / B);
  if (fixed) t += strcmp(d->kind, "CPU") == 0 ? WH_OP_OVERHEAD_CPU : WH_OP_OVERHEAD_GPU;
  return op >= 0 && op < WH_OP_COUNT && d->op_scale[op] > 0 ? t * d->op_scale[op] : t;
}

/* Default achievable fractions of datasheet peaks: the same for every device, never tuned per kind
 * to reach a number; calibration (wh_cluster_probe) replaces them with measured ones. */
#define WH_EFF_FLOPS_DEFAULT 0.6
#define WH_EFF_BW_DEFAULT 0.75

/* A measurement as cluster files keep it (cluster_io.c): 4 significant digits in the file's unit
 * for it, TFLOP/s, GB/s or a plain fraction; what wh_cluster_probe records. */
typedef enum { WH__UNIT_TF, WH__UNIT_GBPS, WH__UNIT_ONE } wh__file_unit;
double wh__cluster_measured(double v, wh__file_unit u);

struct wh_cluster {
  wh_ctx *ctx;
  wh__device *dev;
  int n, cap;
  double intra_bw, intra_lat; /* same node: bytes/s, seconds (0 bw: use the devices' link_bw) */
  double inter_bw, inter_lat; /* across nodes */
};

/* ---- the segment model of a graph: forward cut into a chain of segments */

/* Operator-sharding degrees the model analyses: 2, 4, 8, 16 (a larger degree uses 16's analysis). */
#define WH_TP_LEVELS 4
static inline int wh__tp_level(int tp) {
  int k = 0;
  while (k < WH_TP_LEVELS - 1 && (2 << k) < tp) k++;
  return k;
}

typedef struct wh__segment {
  int first_node, last_node;  /* forward nodes [first, last] in graph order */
  char name[48];
  /* per sample (the batch-proportional part) and fixed, for forward and backward together */
  double flops_fwd[2], flops_bwd[2]; /* [fixed, per sample] */
  double bytes_fwd[2], bytes_bwd[2];
  double param_bytes;         /* weights (f32) */
  double act_bytes;           /* activations kept for backward, per sample */
  double peak_bytes;          /* transient working set of the segment, per sample */
  double out_bytes;           /* the tensor(s) crossing to the next segment, per sample */
  /* operator sharding as the partitioner does it (the registry's sharding rules), at each degree
   * tp = 2 << level (wh__tp_level): heads that do not divide a degree do not split at it */
  double tp_fraction[WH_TP_LEVELS];    /* share of the per-sample compute (forward and backward) that splits */
  double tp_comm_bytes[WH_TP_LEVELS];  /* bytes all-reduced or gathered per sample per step, forward and backward */
  double tp_param_bytes[WH_TP_LEVELS]; /* parameters split */
  double tp_act_bytes[WH_TP_LEVELS];   /* activations kept for backward that are split, per sample */
  double tp_colls[WH_TP_LEVELS];       /* synchronous collectives per micro-batch, forward and backward */
  int stage_hint;             /* stage scope index, -1 none */
} wh__segment;

typedef struct wh__item {
  int seg;
  int op;              /* the node's op kind */
  int bwd;             /* backward work (forward otherwise) */
  int upd;             /* optimizer update: once per step, not per micro-batch */
  int half;            /* a product with 16-bit inputs (mixed precision): the 16-bit rate */
  double f[2], y[2];   /* FLOPs and bytes: fixed, per sample */
} wh__item;

typedef struct wh__model {
  wh__segment *seg;
  int n;
  wh__item *item;      /* every node's cost, for rooflines per device kind */
  int n_items;
  double param_bytes, opt_bytes_per_param; /* optimizer state per parameter byte (AdamW: 2) */
  int n_graph_nodes;   /* the graph's nodes (forward, backward, update) */
  wh_dtype mixed;      /* the precision pass it was costed for (WH_F32: none) */
} wh__model;

/* The model of g; mixed (WH_BF16 or WH_F16) costs it as the precision pass runs it. */
wh_status wh__model_from_graph(const wh_graph *g, wh_dtype mixed, wh__model *m, char *msg, size_t cap);
void wh__model_free(wh__model *m);

/* ---- cost model and search: cost.h */

/* A deep copy of p (plan.c): *out owned, wh_plan_destroy it. */
wh_status wh__plan_clone(const wh_plan *p, wh_plan **out);
/* Free a plan's stages (plan.c), leaving the plan without any. */
void wh__plan_free_stages(wh_plan *p);

/* A prepared planner for costing many pinned layouts of one graph on one cluster (brute force). */
typedef struct wh__planner wh__planner;
wh_status wh__planner_open(wh_ctx *ctx, const wh_graph *g, const wh_cluster *c, int64_t batch, wh_dtype mixed,
                           wh__planner **out);
void wh__planner_close(wh__planner *pl);
int wh__planner_segments(const wh__planner *pl);
int wh__planner_legal_end(const wh__planner *pl, int j); /* may a stage end at segment j (stage hints) */
const int *wh__planner_order(const wh__planner *pl);     /* the planner's device order */
wh_status wh__planner_pin(wh__planner *pl, const wh_plan_layout *l, wh_plan **out);

#endif
