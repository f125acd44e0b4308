/* context.c - the public context lifecycle, version and build information: the runtime joins the
 * layers a context serves (the thread pool and errors of base/, MPI's world from comm/, the CPU
 * kernels' BLAS threading). */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "wh_config.h"
#ifdef WH_HAVE_MPI
#include <mpi.h> /* the Open MPI version in the build information */
#endif

#include "../base/ctx.h"
#include "../comm/comm.h"
#include "../kernels/kernels.h"

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
  wh_ctx *c = wh__ctx_new(&o);
  if (!c) return WH_ERR_OUT_OF_MEMORY;
  wh__mpi_world(c); /* a host that initialised MPI: its world rank and size */
  wh__cpu_kernels_init();
  wh__log(c, WH_LOG_INFO, "libwhale %s: %s, %d threads, rank %d of %d", wh_version(), wh_build_info(),
          c->num_threads, c->rank, c->size);
  *out = c;
  return WH_OK;
}

void wh_ctx_destroy(wh_ctx *ctx) { wh__ctx_free(ctx); }
