/* pool.h - a fixed set of worker threads for data-parallel loops inside kernels.
 * Work is split into contiguous ranges by index; which thread runs a range never changes a result. */
#ifndef WH_POOL_H
#define WH_POOL_H

#include <stdint.h>

#include "whale.h"

typedef struct wh__pool wh__pool;
typedef void (*wh__range_fn)(void *arg, int64_t begin, int64_t end);

/* nthreads >= 1; 1 creates no threads. */
wh_status wh__pool_create(int nthreads, wh__pool **out);
void wh__pool_destroy(wh__pool *p);
int wh__pool_size(const wh__pool *p);
/* Run fn over [0, n) split into at most pool-size ranges of at least grain indices each;
 * returns when all ranges are done. p may be NULL (runs inline). Not reentrant. */
void wh__parallel_for(wh__pool *p, int64_t n, int64_t grain, wh__range_fn fn, void *arg);

/* Same, and each range also gets its slot in [0, pool size): per-thread workspace indexing. */
typedef void (*wh__slot_fn)(void *arg, int64_t begin, int64_t end, int slot);
void wh__parallel_for_slots(wh__pool *p, int64_t n, int64_t grain, wh__slot_fn fn, void *arg);

#endif
