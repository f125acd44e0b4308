/* place.c - where a rank runs in a plan: the stage and replica its device sits in, its shard, and
 * its rows of every micro-batch. Also the one place that says which plans this build executes. */
#include "place.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static wh_status refuse(wh_status st, char *msg, size_t cap, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static wh_status refuse(wh_status st, char *msg, size_t cap, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, cap, fmt, ap);
  va_end(ap);
  return st;
}

wh_status wh__place_find(const wh_plan *pl, int rank, int size, int deterministic, int on_device, wh__place *out,
                         char *msg, size_t cap) {
  if (pl->n_devices != size)
    return refuse(WH_ERR_INVALID_ARGUMENT, msg, cap, "the plan is for %d devices but the communicator has %d ranks",
                  pl->n_devices, size);
  wh__place p;
  memset(&p, 0, sizeof p);
  p.rank = rank, p.size = size;
  p.pipelined = pl->n_stages > 1;
  p.n_stages = pl->n_stages;
  p.tp = pl->st[0].tp;
  p.global_batch = pl->global_batch;
  p.micro_batches = pl->micro_batches;
  p.mb = pl->global_batch / pl->micro_batches;
  p.schedule = pl->schedule;
  p.zero1 = pl->zero1 != 0;
  p.deterministic = deterministic != 0;
  for (int k = 0; k < pl->n_stages; k++)
    if (pl->st[k].ndev != pl->st[0].ndev || pl->st[k].tp != p.tp)
      return refuse(WH_ERR_UNSUPPORTED, msg, cap,
                    "this build executes pipelines whose stages have the same number of replicas and the same "
                    "operator sharding; stage %d has %d device(s) and tp %d, stage 0 %d and tp %d",
                    k, pl->st[k].ndev, pl->st[k].tp, pl->st[0].ndev, p.tp);
  if ((p.pipelined && (p.zero1 || deterministic)) || (p.zero1 && deterministic))
    return refuse(WH_ERR_UNSUPPORTED, msg, cap, "%s",
                  p.pipelined ? "pipeline plans run without ZeRO-1 and without the deterministic reduction in this build"
                              : "ZeRO-1 and the deterministic reduction do not combine");
  if (p.pipelined) {
    if (on_device) return refuse(WH_ERR_UNSUPPORTED, msg, cap, "pipeline plans run on the CPU backend in this build");
    p.stage = -1;
    for (int k = 0; k < pl->n_stages; k++)
      for (int i = 0; i < pl->st[k].ndev; i++)
        if (pl->st[k].dev[i] == rank) p.stage = k, p.replica = i / p.tp, p.shard = i % p.tp;
    if (p.stage < 0) return refuse(WH_ERR_INVALID_ARGUMENT, msg, cap, "rank %d has no stage in the plan", rank);
    p.n_replicas = pl->st[p.stage].ndev / p.tp;
    p.share = pl->st[p.stage].share[p.replica];
    for (int r = 0; r < p.replica; r++) p.offset += pl->st[p.stage].share[r];
    p.batch = p.share > 0 ? p.share : 1; /* a replica without rows on its stage still joins the reductions */
  } else {
    /* replica r holds devices [r * tp, (r + 1) * tp) of the stage and share[r] samples */
    int found = 0;
    const wh__stage *s0 = &pl->st[0];
    p.n_replicas = s0->ndev / p.tp;
    for (int i = 0; i < s0->ndev; i++) {
      if (s0->dev[i] == rank) {
        p.replica = i / p.tp, p.shard = i % p.tp;
        p.share = s0->share[i / p.tp];
        found = 1;
        break;
      }
      if (i % p.tp == p.tp - 1) p.offset += s0->share[i / p.tp];
    }
    if (!found) return refuse(WH_ERR_INVALID_ARGUMENT, msg, cap, "rank %d has no place in the plan", rank);
    p.batch = p.share > 0 ? p.share : 1; /* a replica without samples still joins the all-reduce */
  }
  if (on_device && deterministic)
    return refuse(WH_ERR_UNSUPPORTED, msg, cap, "the deterministic reduction runs on the CPU backend in this build");
  if (on_device && p.zero1) return refuse(WH_ERR_UNSUPPORTED, msg, cap, "ZeRO-1 runs on the CPU backend in this build");
  *out = p;
  return WH_OK;
}
