/* shard.h - the sharding rules the op registry points at (shard.c). */
#ifndef WH_SHARD_H
#define WH_SHARD_H

#include "ir.h"

void wh__sr_matmul(wh__shard_q *q, wh__node *n);
void wh__sr_binary(wh__shard_q *q, wh__node *n);
void wh__sr_scale(wh__shard_q *q, wh__node *n);
void wh__sr_bias_add(wh__shard_q *q, wh__node *n);
void wh__sr_unary(wh__shard_q *q, wh__node *n);
void wh__sr_lastaxis(wh__shard_q *q, wh__node *n);
void wh__sr_reduce(wh__shard_q *q, wh__node *n);
void wh__sr_sum_to(wh__shard_q *q, wh__node *n);
void wh__sr_broadcast_to(wh__shard_q *q, wh__node *n);
void wh__sr_reshape(wh__shard_q *q, wh__node *n);
void wh__sr_permute(wh__shard_q *q, wh__node *n);
void wh__sr_slice(wh__shard_q *q, wh__node *n);
void wh__sr_embedding(wh__shard_q *q, wh__node *n);
void wh__sr_cross_entropy(wh__shard_q *q, wh__node *n);
void wh__sr_embedding_grad(wh__shard_q *q, wh__node *n);
void wh__sr_attention(wh__shard_q *q, wh__node *n);
void wh__sr_update(wh__shard_q *q, wh__node *n);

#endif
