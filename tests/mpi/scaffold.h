/* scaffold.h - what the equivalence tests of every parallel strategy share: the context and the
 * communicator, the small models, the one-process reference run, pinned plans, the training loop
 * and the comparison of a distributed run with the reference (test_dp/zero/pipeline/tp.c). */
#ifndef WH_TESTS_MPI_SCAFFOLD_H
#define WH_TESTS_MPI_SCAFFOLD_H

#include <stddef.h>
#include <stdint.h>

#include "whale.h"
#include "../common/runner.h"

#define STEPS 20 /* AdamW steps of every run */
#define B 24     /* samples per step */

extern wh_ctx *ctx;   /* one thread per rank: ranks share the machine's cores */
extern wh_comm *comm; /* every rank of this mpirun */
extern int nranks;

/* The models. The GPT is deliberately not examples/models' GPT: it has no qkv bias and no second
 * or final LayerNorm, so that every gradient is non-zero (see build in scaffold.c) and the
 * operator-sharding tests can count its all-reduces. */
typedef enum sc_kind {
  SC_MLP,          /* 16 -> 32 -> 32 -> 5, with a whole (unbatched) input added to a bias */
  SC_GPT,          /* 2 layers, width 16, context 8, vocabulary 32, tied embedding */
  SC_SHARED_GRAD,  /* a weight built from two parameters, one gradient passed on to a branch */
  SC_PARAM_SUM,    /* two parameters with one gradient value */
  SC_BIAS_PENALTY, /* the MLP with a softmax penalty on its first (split, then gathered) bias */
  SC_WIDE,         /* 16 -> 384 -> 384 -> 384 -> 5, fed like the MLP: tens of milliseconds a step, so a
                    * slowed rank's compute shows above the scheduler's time slices */
} sc_kind;

typedef struct sc_model {
  wh_graph *g;
  wh_value x, y, loss;
  wh_value shift; /* the MLP's input without a batch axis (fed whole), or WH_NONE */
  sc_kind kind;
} sc_model;

/* The suite of a strategy's binary: its counts line "LABEL (N ranks): ...", summed over ranks. */
int sc_main(const char *label, const wt_case *cases, int n, int argc, char **argv);

/* A new graph of `kind` with its backward pass and AdamW (warm-up cosine, clipping). */
sc_model sc_build(sc_kind kind);
const char *sc_name(sc_kind kind); /* "mlp" or "gpt" in the cases' names */

/* Shares of B over the ranks: equal; growing with the rank; none on rank 0 (n > 1). */
void sc_equal(int64_t *sh);
void sc_unequal(int64_t *sh);
void sc_rank0_empty(int64_t *sh);

size_t sc_params_bytes(wh_graph *g, wh_session *s);
/* Train STEPS steps: losses[] and the final parameters (params NULL: not read). */
void sc_train(const sc_model *m, wh_session *s, float *losses, float *params);
/* The single-process reference, on this rank: losses into rl, the final parameters returned. */
float *sc_reference(const sc_model *m, float *rl, size_t *pb);
double sc_rel(const float *a, const float *b, size_t n);
/* Every step's loss and the final parameters within 1e-5 of the reference; the reference learned. */
void sc_same_as_reference(const char *name, const float *rl, const float *dl, const float *rp, const float *dp,
                          size_t pb);

/* A plan of layout l (its devices set to 0..n-1 here) on a cluster of n CPU ranks. */
wh_plan *sc_pinned(const sc_model *m, int n, wh_plan_layout *l, wh_cluster **cl);
/* The session of this rank for layout l over communicator c (plan and cluster for sc_destroy). */
wh_session *sc_planned(wh_comm *c, const sc_model *m, wh_plan_layout *l, wh_plan **p, wh_cluster **cl);
void sc_destroy(wh_session *s, wh_plan *p, wh_cluster *cl, sc_model *m);

/* Data parallel over every rank with these shares and micro-batches, the optimizer state sharded
 * when zero1: the dump names the gradient reductions, then the run equals the reference. */
void sc_dp_case(sc_kind kind, const char *name, const int64_t *shares, int micro, int zero1);

#endif
