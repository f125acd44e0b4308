/* ctx.h - the context: threads, logging, the last error; no global state outside it. */
#ifndef WH_CTX_H
#define WH_CTX_H

#include "whale.h"
#include "pool.h"

struct wh_ctx {
  int num_threads;
  wh_log_fn log_fn;
  void *log_user;
  wh_log_level log_level;
  int rank, size;
  wh__pool *pool;
  int mpi_owned;   /* this context initialised MPI: it finalises it */
  int comm_broken; /* a communicator failed: finalising could wait on dead peers, so don't */
  char err[1024];
};

void wh__ctx_set_error(wh_ctx *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void wh__log(const wh_ctx *ctx, wh_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Options structs start with struct_size: copy the caller's src, when given, over the defaults in
 * dst, and refuse one of another size (built against another header) naming who. */
wh_status wh__options_in(wh_ctx *ctx, const char *who, void *dst, const void *src, size_t size);

#endif
