/* place.h - a rank's place in a plan: its pipeline stage, data-parallel replica, shard, and the
 * rows of each micro-batch it takes; and what this build can execute. */
#ifndef WH_PLACE_H
#define WH_PLACE_H

#include <stddef.h>
#include <stdint.h>

#include "plan.h"

typedef struct wh__place {
  int rank, size;              /* in the plan's world (the session's communicator) */
  int pipelined;               /* the plan has more than one stage */
  int stage, n_stages;         /* this rank's pipeline stage */
  int replica, n_replicas;     /* its data-parallel replica within the stage */
  int shard, tp;               /* its shard within the replica (operator sharding; tp 1: none) */
  int64_t share, offset;       /* the replica's rows of each micro-batch: [offset, offset + share) */
  int64_t batch;               /* the batch its program is bound to: share, 1 for a replica without rows */
  int64_t global_batch, mb;    /* samples per step, per micro-batch */
  int micro_batches;
  wh__schedule schedule;
  int zero1, deterministic;
} wh__place;

/* Where `rank` runs in pl, for a session on the CPU (on_device 0) or a GPU. Refuses what this
 * build does not execute (WH_ERR_UNSUPPORTED) and a plan that does not fit the world
 * (WH_ERR_INVALID_ARGUMENT), msg saying why; out is filled on success only. */
wh_status wh__place_find(const wh_plan *pl, int rank, int size, int deterministic, int on_device, wh__place *out,
                         char *msg, size_t cap);

#endif
