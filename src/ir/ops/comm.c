/* comm.c - the partition layer's program-only nodes that the runtime executes itself (no kernel:
 * src/runtime/comm_nodes.c): gradient accumulation, the data-parallel and ZeRO-1 reductions, the
 * loss reduction, pipeline sends and receives. Their costs are the communication model's, not rows'. */
#include "family.h"

#define WH__FAMILY comm

WH__PROGRAM_ROW(zero, .min_in = 0, .max_in = 0, .has_out = 1, .cost = wh__co_elems);
WH__PROGRAM_ROW(grad_acc, .min_in = 1, .max_in = 1, .has_out = 1, .cost = wh__co_elems, .flops = 2);
WH__PROGRAM_ROW(grad_set, .min_in = 1, .max_in = 1, .has_out = 1, .cost = wh__co_elems);
WH__PROGRAM_ROW(dp_reduce_start, .min_in = 1, .max_in = 1, .has_out = 0, .cost = wh__co_elems);
WH__PROGRAM_ROW(dp_reduce_wait, .min_in = 0, .max_in = -1, .has_out = 0, .cost = wh__co_elems);
WH__PROGRAM_ROW(det_reduce, .min_in = 1, .max_in = 1, .has_out = 0, .cost = wh__co_elems, .flops = 1);
WH__PROGRAM_ROW(loss_acc, .min_in = 1, .max_in = 1, .has_out = 0, .cost = wh__co_elems);
WH__PROGRAM_ROW(loss_reduce, .min_in = 0, .max_in = 0, .has_out = 1, .cost = wh__co_elems);
WH__PROGRAM_ROW(send, .min_in = 1, .max_in = 1, .has_out = 0, .cost = wh__co_elems);
WH__PROGRAM_ROW(recv, .min_in = 0, .max_in = 0, .has_out = 1, .cost = wh__co_elems);
WH__PROGRAM_ROW(send_wait, .min_in = 0, .max_in = 0, .has_out = 0, .cost = wh__co_elems);
WH__PROGRAM_ROW(allreduce, .min_in = 1, .max_in = 1, .has_out = 1, .cost = wh__co_elems, .flops = 1);
WH__PROGRAM_ROW(zero_rs_start, .min_in = 1, .max_in = 1, .has_out = 1, .cost = wh__co_elems, .flops = 1);
WH__PROGRAM_ROW(zero_rs_wait, .min_in = 0, .max_in = -1, .has_out = 0, .cost = wh__co_elems);
WH__PROGRAM_ROW(zero_norm_clip, .min_in = 2, .max_in = -1, .has_out = 1, .cost = wh__co_elems, .flops = 2);
WH__PROGRAM_ROW(zero_update, .min_in = 2, .max_in = 5, .has_out = 0, .cost = wh__co_elems, .flops = 10);
WH__PROGRAM_ROW(zero_allgather, .min_in = 1, .max_in = 1, .has_out = 1, .cost = wh__co_elems);
WH__PROGRAM_ROW(tp_allreduce_start, .min_in = 1, .max_in = 1, .has_out = 1, .cost = wh__co_elems, .flops = 1, .inplace = 1);
WH__PROGRAM_ROW(tp_wait, .min_in = 2, .max_in = 2, .has_out = 0, .cost = wh__co_elems);
WH__PROGRAM_ROW(loss_scale, .min_in = 1, .max_in = 1, .has_out = 1, .cost = wh__co_elems, .flops = 1);
WH__PROGRAM_ROW(grad_unscale, .min_in = 1, .max_in = 1, .has_out = 1, .cost = wh__co_elems, .flops = 2);
WH__PROGRAM_ROW(overflow_check, .min_in = 0, .max_in = 0, .has_out = 0, .cost = wh__co_elems);
