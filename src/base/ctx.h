/* ctx.h - the context: threads, logging, the last error, the hooks run when it is destroyed; no
 * global state outside it. The base layer: every other layer may use it, it uses none of them. */
#ifndef WH_CTX_H
#define WH_CTX_H

#include "whale.h"
#include "pool.h"

/* Run by wh_ctx_destroy, last registered first (comm/ registers MPI's finalisation here). */
typedef void (*wh__ctx_hook)(wh_ctx *ctx, void *arg);

#define WH_CTX_MAX_HOOKS 8

struct wh_ctx {
  int num_threads;
  wh_log_fn log_fn;
  void *log_user;
  wh_log_level log_level;
  int rank, size;  /* in MPI_COMM_WORLD, once MPI is initialised (0 and 1 before) */
  wh__pool *pool;
  int comm_broken; /* a communicator failed: hooks must not wait on dead peers (no finalising) */
  struct {
    wh__ctx_hook fn;
    void *arg;
  } hooks[WH_CTX_MAX_HOOKS];
  int n_hooks;
  char err[1024];
};

/* A context with its pool, from checked options (num_threads 0: all cores); NULL when out of memory. */
wh_ctx *wh__ctx_new(const wh_ctx_options *o);
/* Run the hooks, then free the pool and the context. */
void wh__ctx_free(wh_ctx *ctx);
/* Register fn(ctx, arg) for wh_ctx_destroy; the same fn and arg twice count once. WH_ERR_INTERNAL
 * when the table is full. */
wh_status wh__ctx_on_destroy(wh_ctx *ctx, wh__ctx_hook fn, void *arg);

void wh__ctx_set_error(wh_ctx *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void wh__log(const wh_ctx *ctx, wh_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Options structs start with struct_size: copy the caller's src, when given, over the defaults in
 * dst, and refuse one of another size (built against another header) naming who. */
wh_status wh__options_in(wh_ctx *ctx, const char *who, void *dst, const void *src, size_t size);

#endif
