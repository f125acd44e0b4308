/* partition_impl.h - the partition layer's insides, shared by partition.c (the entry, data
 * parallelism, ZeRO-1) and stages.c (pipelines): a builder that lays out a rank's nodes in execution
 * order and records which micro-batches run each. */
#ifndef WH_PARTITION_IMPL_H
#define WH_PARTITION_IMPL_H

#include <stddef.h>

#include "program.h"

/* In which micro-batches an item of the sequence runs. */
enum { WH_PB_ALL = 0, WH_PB_FIRST = 1, WH_PB_LATER = 2, WH_PB_LAST = 3 };

typedef struct {
  int32_t node;
  int8_t when, half; /* half: 0 the forward part of a micro-batch, 1 the backward part (pipelines) */
} wh__pb_item;

typedef struct wh__pb {
  const wh_graph *g;
  wh__program *p;          /* values grow here; the nodes are laid out anew in nodes[] */
  const wh__node *base;    /* the program's nodes before partitioning (the builder frees them) */
  int n_base;
  int32_t *of;             /* gradient value -> the parameter it is the gradient of, -1 */
  int m;                   /* micro-batches */
  wh__node *nodes;
  int nn, capn, capv, n_lay;
  wh__pb_item *seq;        /* one micro-batch, in order */
  int nseq, capseq;
  int32_t *once;           /* the once-per-step part */
  int nonce, caponce;
  char *msg;
  size_t cap;
  wh_status st;            /* the first failure; every builder call after it does nothing */
} wh__pb;

/* A new 1-D value of numel elements; -1 when out of memory. */
int32_t wh__pb_value(wh__pb *b, wh_dtype dt, int64_t numel, wh__role role);
/* A new node; returns its index, -1 after a failure. */
int32_t wh__pb_node(wh__pb *b, int op, wh__phase ph, int32_t fwd, const int32_t *in, int n_in, int32_t out,
                    const int64_t *ia, int nia, const double *fa, int nfa);
/* A copy of node n (its in[] copied). */
int32_t wh__pb_copy(wh__pb *b, const wh__node *n);
/* Append node to one micro-batch's sequence, running in the micro-batches `when` says. */
void wh__pb_seq(wh__pb *b, int32_t node, int when, int half);
/* Append node to the once-per-step part. */
void wh__pb_once(wh__pb *b, int32_t node);
/* Emit the part of micro-batch k (-1: the once-per-step nodes) from the sequence's items of half. */
wh_status wh__pb_part(wh__pb *b, int k, int slot, int feed, int half);
/* Record a split of the world every rank makes (ranks copied). */
wh_status wh__pb_split(wh__pb *b, int group, int n, const int *ranks);

/* stages.c: this rank's stage of a pipeline plan. */
wh_status wh__part_stages(wh__pb *b, const wh_plan *pl);

#endif
