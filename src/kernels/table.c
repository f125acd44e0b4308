/* table.c - the per-backend kernel tables the runtime dispatches through, one entry per op,
 * generated from the op list (ir/ops.def): an op without a kernel on a backend has NULL there. */
#include <stddef.h>

#include "kernels.h"
#include "wh_config.h"

#define WH__CPU_ALL(k) wh__cpu_##k
#define WH__CPU_CPU(k) wh__cpu_##k
#define WH__CPU_NONE(k) NULL
#ifdef WH_HAVE_CUDA_KERNELS
#define WH__CUDA_ALL(k) wh__cuk_##k
#else
#define WH__CUDA_ALL(k) NULL /* a build without the CUDA kernels: no device session ever dispatches */
#endif
#define WH__CUDA_CPU(k) NULL
#define WH__CUDA_NONE(k) NULL

const wh__kernel_fn wh__cpu_kernels[WH_OP_COUNT] = {
#define WH_OP(id, name, kind, family, kernel, backends) [WH_OP_##id] = WH__CPU_##backends(kernel),
#include "../ir/ops.def"
};

const wh__kernel_fn wh__cuda_kernels[WH_OP_COUNT] = {
#define WH_OP(id, name, kind, family, kernel, backends) [WH_OP_##id] = WH__CUDA_##backends(kernel),
#include "../ir/ops.def"
};
