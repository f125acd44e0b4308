/* program.h - what one rank executes: its nodes (compute and communication) at their local shapes,
 * and the schedule that runs them, per micro-batch and once per step. The runtime executes a
 * Program and nothing else; a single process is a one-rank Program. The graph itself is never
 * rewritten, so it stays serializable and one graph can back differently built programs. */
#ifndef WH_PROGRAM_H
#define WH_PROGRAM_H

#include "../ir/ir.h"
#include "place.h"

/* The communicators a program's communication nodes name (ia[0] of those nodes): the session's
 * own, the ranks of this replica (operator sharding), the ranks that reduce this rank's gradients
 * (data parallelism: one per shard index), the replicas of this rank's pipeline stage. */
enum { WH_GROUP_WORLD = 0, WH_GROUP_TP = 1, WH_GROUP_DP = 2, WH_GROUP_STAGE = 3, WH_GROUP_COUNT = 4 };

/* One split of the world into a sub-communicator. Every rank makes every split of its program in
 * the same order (splitting is collective); the split whose ranks include this one becomes `group`. */
typedef struct wh__split {
  int group;
  int n;
  int *ranks;        /* world ranks, owned */
} wh__split;

/* A piece of the schedule: nodes order[first .. first + n) run in this order, on the pointers of
 * arena slot `slot`, for micro-batch mb (its rows bound first when feed is set), or once per step
 * after every micro-batch (mb -1). A run mode then runs the nodes of its phases (wh_run_mode). */
typedef struct wh__part {
  int mb, slot, feed;
  int first, n;
  int backward;      /* the backward half of a micro-batch (pipelines), for the dump */
} wh__part;

typedef struct wh__program {
  wh__value *values; /* the graph's values (struct copies; names and data borrowed), then the values
                      * the partition adds (clones, conversions, buffers) */
  int n_values;
  wh__node *nodes;   /* in the order of one micro-batch's execution, then the once-per-step nodes;
                      * lifetimes are read in this order. Each in[] is owned by the program. */
  int n_nodes;
  int n_graph_values;
  int n_recomputed;  /* clone nodes added */
  /* the schedule */
  wh__part *parts;
  int n_parts;
  int32_t *order;    /* node indices of every part */
  int n_order;
  int n_slots;       /* arenas with the same layout: micro-batches in flight (1 without a pipeline) */
  /* where it runs: filled for a plan (distributed), zero for a single process */
  int distributed;
  wh__place place;
  wh__split *splits;
  int n_splits;
  /* operator sharding: each value's layout (NULL without) and the conversions inserted
   * (all-reduce, all-gather, slice) */
  wh__layout *lay;
  int tp_counts[3];
  /* pipelines: for every graph leaf the stage whose nodes read it (-1: none), and the transfers
   * this rank takes part in (for the dump) */
  int *leaf_stage;
  uint64_t *reader_stages; /* per value, the stages whose nodes read it (pipelines; NULL otherwise) */
  int n_transfers;
  int loss_stage;
} wh__program;

/* Build the whole graph's program in graph order (one part, no plan); with recompute, honour
 * WH_HINT_RECOMPUTE scopes. */
wh_status wh__program_build(const wh_graph *g, int recompute, wh__program *out);
void wh__program_free(wh__program *p);
/* Append a copy of node src, reading in[] (copied, owned by the copy), to nodes[0..*n). */
wh_status wh__nodes_push(wh__node **nodes, int *n, int *cap, const wh__node *src, const int32_t *in);

/* Operator sharding (sharding.c): rewrite p into shard `index` of `tp` - local shapes, attributes,
 * the all-reduces, all-gathers and slices the op registry's sharding rules call for. *lay (owned
 * by the caller) gets each value's layout; counts[3] the conversions inserted (all-reduce,
 * all-gather, slice). On failure p is unchanged and msg says why. */
wh_status wh__program_shard(const wh_graph *g, wh__program *p, int tp, int index, wh__layout **lay, int *counts,
                            char *msg, size_t cap);

/* Graph + plan -> this rank's program (partition.c): the place of `rank` of `size` in pl (NULL: a
 * single process), the operator-sharding rewrite, pipeline placement with a send and a receive
 * on every value that crosses stages, gradient accumulation over micro-batches, the data-parallel
 * reduction (bucketed all-reduce, rank-ordered sums, or ZeRO-1's reduce-scatter, sharded update
 * and all-gather), the loss reduction, and the schedule (GPipe or 1F1B). deterministic and
 * on_device are the session's; failures say why in msg. */
wh_status wh__partition(const wh_graph *g, const wh_plan *pl, int rank, int size, int recompute, int deterministic,
                        int on_device, wh_dtype mixed, wh__program *out, char *msg, size_t cap);

/* Mixed precision (precision.c): activations backward reads and gradients between backward nodes
 * stored as `narrow` (WH_BF16 or WH_F16), cast back to fp32 for their readers; fp16 adds the loss
 * scaling nodes. */
wh_status wh__program_mixed(const wh_graph *g, wh__program *p, wh_dtype narrow, char *msg, size_t cap);

/* What part of persistent graph value v (a parameter or optimizer state) this rank holds, and
 * whether it writes that part when the whole state is saved: every part of every value has
 * exactly one writer among the ranks (replica 0 of the stage that reads it first; each shard of a
 * split value; each rank's range of ZeRO-1's state). */
typedef enum { WH_HOLD_NONE = 0, WH_HOLD_WHOLE, WH_HOLD_SPLIT, WH_HOLD_RANGE } wh__hold_kind;
typedef struct wh__hold {
  wh__hold_kind kind;
  int writer;          /* this rank writes its part */
  /* SPLIT: dimension dim of the whole viewed as [groups, parts, rest]; this rank's part is
   * [:, index, :] (of which it holds elements [lo, hi), flattened: all of it unless ZeRO-1 shards it) */
  int dim, groups, parts, index;
  int64_t lo, hi;      /* RANGE: elements [lo, hi) of the whole, flattened; SPLIT: of this rank's part */
} wh__hold;
wh__hold wh__program_hold(const wh__program *p, const wh_graph *g, int32_t v);

/* Node kinds the runtime itself executes (communication, accumulation), not a kernel. */
int wh__op_is_runtime(int op);

#endif
