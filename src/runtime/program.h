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

#endif
