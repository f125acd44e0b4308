/* program.h - what a session executes: the graph's nodes in schedule order, with recomputed
 * activations cloned in front of the backward nodes that need them. The graph itself is never
 * rewritten, so it stays serializable and one graph can back differently built programs. */
#ifndef WH_PROGRAM_H
#define WH_PROGRAM_H

#include "../ir/ir.h"

typedef struct wh__program {
  wh__value *values; /* the graph's values (struct copies; names and data borrowed), then clones */
  int n_values;
  wh__node *nodes;   /* schedule order; each in[] is owned by the program */
  int n_nodes;
  int n_graph_values;
  int n_recomputed;  /* clone nodes added */
} wh__program;

/* Build the program of g; with recompute, honour WH_HINT_RECOMPUTE scopes. */
wh_status wh__program_build(const wh_graph *g, int recompute, wh__program *out);
void wh__program_free(wh__program *p);
/* Append a copy of node src, reading in[] (copied, owned by the copy), to nodes[0..*n). */
wh_status wh__nodes_push(wh__node **nodes, int *n, int *cap, const wh__node *src, const int32_t *in);

/* Operator sharding (tp.c): rewrite p into shard `index` of `tp` - local shapes, attributes, the
 * all-reduces, all-gathers and slices the op registry's sharding rules call for. *lay (owned by
 * the caller) gets each value's layout; counts[3] the conversions inserted (all-reduce, all-gather,
 * slice). On failure p is unchanged and msg says why. */
wh_status wh__program_shard(const wh_graph *g, wh__program *p, int tp, int index, wh__layout **lay, int *counts,
                            char *msg, size_t cap);

#endif
