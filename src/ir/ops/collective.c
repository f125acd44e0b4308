/* collective.c - the operator-sharding partitioner's ops (src/partition/sharding.c), program-only:
 * layout conversions across the tp ranks of one replica and the vocabulary-sharded rewrites. */
#include "family.h"

#define WH__FAMILY collective

/* ------------------------------------------------------------ rows */

WH__PROGRAM_ROW(tp_allreduce, .min_in = 1, .max_in = 1, .has_out = 1, .cost = wh__co_elems, .flops = 1, .inplace = 1);
WH__PROGRAM_ROW(tp_allgather, .min_in = 1, .max_in = 1, .has_out = 1, .cost = wh__co_elems, .flops = 1);
WH__PROGRAM_ROW(tp_slice, .min_in = 1, .max_in = 1, .has_out = 1, .cost = wh__co_elems, .flops = 1);
WH__PROGRAM_ROW(tp_norm_clip, .min_in = 1, .max_in = -1, .has_out = 1, .cost = wh__co_elems, .flops = 1);
WH__PROGRAM_ROW(tp_embedding, .min_in = 2, .max_in = 2, .has_out = 1, .cost = wh__co_elems, .flops = 1);
WH__PROGRAM_ROW(tp_cross_entropy, .min_in = 2, .max_in = 2, .has_out = 1, .cost = wh__co_elems, .flops = 1);
WH__PROGRAM_ROW(tp_cross_entropy_grad, .min_in = 3, .max_in = 3, .has_out = 1, .cost = wh__co_elems, .flops = 1,
        .inplace = 1);
