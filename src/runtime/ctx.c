/* ctx.c - context lifetime, status strings, version and build information, logging.
 * MPI belongs to the host: the context only reads rank and size if the host initialised MPI. */
#include "ctx.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cblas.h>

#include "wh_config.h"
#ifdef WH_HAVE_MPI
#include <mpi.h>

#include "../comm/comm.h"
#endif

#define WH_STR2(x) #x
#define WH_STR(x) WH_STR2(x)

const char *wh_version(void) {
  return WH_STR(WH_VERSION_MAJOR) "." WH_STR(WH_VERSION_MINOR) "." WH_STR(WH_VERSION_PATCH);
}

const char *wh_build_info(void) {
  return "cpu(" WH_BLAS_NAME ")"
#ifdef WH_HAVE_MPI
#if defined(OMPI_MAJOR_VERSION)
         " mpi(Open MPI " WH_STR(OMPI_MAJOR_VERSION) "." WH_STR(OMPI_MINOR_VERSION) "." WH_STR(
             OMPI_RELEASE_VERSION) ")"
#else
         " mpi"
#endif
#endif
#if defined(WH_HAVE_CUDA_KERNELS)
         " cuda(kernels sm_90, cuBLASLt; device buffers on MPI)"
#elif defined(WH_HAVE_CUDA)
         " cuda-runtime(device buffers on MPI; no CUDA kernels: nvcc not found)"
#endif
#ifdef WH_HAVE_NCCL
         " nccl"
#endif
      ;
}

const char *wh_status_str(wh_status s) {
  switch (s) {
    case WH_OK: return "ok";
    case WH_ERR_INVALID_ARGUMENT: return "invalid argument";
    case WH_ERR_SHAPE: return "shape mismatch";
    case WH_ERR_DTYPE: return "dtype mismatch";
    case WH_ERR_POISONED: return "graph poisoned by an earlier error";
    case WH_ERR_STATE: return "call does not fit the object's state";
    case WH_ERR_OUT_OF_MEMORY: return "out of memory";
    case WH_ERR_IO: return "i/o error";
    case WH_ERR_CORRUPT: return "corrupt or invalid data";
    case WH_ERR_UNSUPPORTED: return "unsupported";
    case WH_ERR_NOT_FOUND: return "not found";
    case WH_ERR_COMM: return "communication error";
    case WH_ERR_TIMEOUT: return "timed out";
    case WH_ERR_INTERNAL: return "internal error";
  }
  return "unknown status";
}

void wh__ctx_set_error(wh_ctx *ctx, const char *fmt, ...) {
  if (!ctx) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(ctx->err, sizeof ctx->err, fmt, ap);
  va_end(ap);
  wh__log(ctx, WH_LOG_ERROR, "%s", ctx->err);
}

void wh__log(const wh_ctx *ctx, wh_log_level level, const char *fmt, ...) {
  if (!ctx || !ctx->log_fn || level > ctx->log_level) return;
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  ctx->log_fn(level, buf, ctx->log_user);
}

wh_status wh_ctx_create(wh_ctx **out, const wh_ctx_options *opts) {
  if (!out) return WH_ERR_INVALID_ARGUMENT;
  *out = NULL;
  wh_ctx_options o = WH_CTX_OPTIONS_INIT;
  if (opts) {
    if (opts->struct_size < offsetof(wh_ctx_options, log_level) + sizeof(wh_log_level) ||
        opts->struct_size > sizeof(wh_ctx_options))
      return WH_ERR_INVALID_ARGUMENT;
    memcpy(&o, opts, opts->struct_size);
  }
  if (o.num_threads < 0 || o.log_level < WH_LOG_ERROR || o.log_level > WH_LOG_DEBUG)
    return WH_ERR_INVALID_ARGUMENT;
  wh_ctx *c = calloc(1, sizeof *c);
  if (!c) return WH_ERR_OUT_OF_MEMORY;
  c->num_threads = o.num_threads;
  if (c->num_threads == 0) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    c->num_threads = n > 0 ? (int)n : 1;
  }
  c->log_fn = o.log_fn;
  c->log_user = o.log_user;
  c->log_level = o.log_level;
  c->rank = 0;
  c->size = 1;
#ifdef WH_HAVE_MPI
  int inited = 0;
  if (MPI_Initialized(&inited) == MPI_SUCCESS && inited) {
    int fin = 0;
    MPI_Finalized(&fin);
    if (!fin) {
      MPI_Comm_rank(MPI_COMM_WORLD, &c->rank);
      MPI_Comm_size(MPI_COMM_WORLD, &c->size);
    }
  }
#endif
  wh_status s = wh__pool_create(c->num_threads, &c->pool);
  if (s != WH_OK) {
    free(c);
    return s;
  }
  /* libwhale splits GEMMs across its own pool (kernels/cpu/matmul.c): BLAS runs one thread per
   * call, so no idle BLAS threads spin against the pool's */
  openblas_set_num_threads(1);
  wh__log(c, WH_LOG_INFO, "libwhale %s: %s, %d threads, rank %d of %d", wh_version(), wh_build_info(),
          c->num_threads, c->rank, c->size);
  *out = c;
  return WH_OK;
}

void wh_ctx_destroy(wh_ctx *ctx) {
  if (!ctx) return;
#ifdef WH_HAVE_MPI
  if (ctx->mpi_owned && !ctx->comm_broken) wh__mpi_finalize_if_owned();
#endif
  wh__pool_destroy(ctx->pool);
  free(ctx);
}

const char *wh_last_error(const wh_ctx *ctx) { return ctx ? ctx->err : "no context"; }
int wh_ctx_rank(const wh_ctx *ctx) { return ctx ? ctx->rank : 0; }
int wh_ctx_size(const wh_ctx *ctx) { return ctx ? ctx->size : 1; }
int wh_ctx_threads(const wh_ctx *ctx) { return ctx ? ctx->num_threads : 1; }

wh_status wh__options_in(wh_ctx *ctx, const char *who, void *dst, const void *src, size_t size) {
  if (!src) return WH_OK;
  size_t given;
  memcpy(&given, src, sizeof given);
  if (given != size) {
    wh__ctx_set_error(ctx, "%s: options struct_size %zu, expected %zu", who, given, size);
    return WH_ERR_INVALID_ARGUMENT;
  }
  memcpy(dst, src, size);
  return WH_OK;
}
