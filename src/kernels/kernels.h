/* kernels.h - what a kernel sees: tensors with concrete shapes and the execution context; every
 * kernel's declaration and the per-backend kernel tables, generated from the op list (ir/ops.def). */
#ifndef WH_KERNELS_H
#define WH_KERNELS_H

#include <stdint.h>

#include "../ir/ir.h"
#include "../base/pool.h"

typedef struct wh__tensor {
  void *data;
  wh_dtype dtype;
  int ndim;
  int64_t d[WH_MAX_DIMS];
  int64_t numel;
} wh__tensor;

typedef struct wh__exec {
  wh__pool *pool;
  int64_t step;       /* optimizer step being taken (1-based) during a train run */
  int train;          /* dropout active */
  int64_t batch;      /* bound batch size */
  int64_t row0;       /* the global sample index of row 0 (a replica's slice of a micro-batch) */
  void *scratch;      /* grow-only workspace owned by the session */
  size_t scratch_cap;
  char *err;          /* where a kernel writes a message when it fails */
  int err_cap;
  struct wh__cuda *dev; /* the CUDA context of a device session (NULL on the CPU) */
  wh_comm *tp;          /* operator sharding: the ranks of this replica (NULL without) */
} wh__exec;

#ifndef __cplusplus
/* The instructions the CPU casts use (cpu/elementwise.c): bit 0 F16C, bit 1 AVX512-BF16; -1 until
 * the first cast looks at the CPU. Tests clear bits to compare with the plain C. */
extern _Atomic int wh__cpu_cast_paths;
#endif

/* Once per context: the CPU kernels' BLAS threading (cpu/matmul.c). */
void wh__cpu_kernels_init(void);

/* A workspace of at least bytes, valid until the next call; NULL when out of memory. */
void *wh__exec_scratch(wh__exec *ex, size_t bytes);

/* C = alpha op(A) op(B) + beta C, row-major, split across the pool (see cpu/matmul.c). */
void wh__gemm(wh__pool *pool, int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha, const float *a,
              int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc);

static inline float *wh__f32(const wh__tensor *t) { return (float *)t->data; }

/* The GEMMs of a matmul node, the same for every backend: op(A) [.., M, K] x op(B) [K, N] or
 * batched [.., K, N]. A 2-D B under an untransposed A folds the batch into M (one GEMM); sa, sb,
 * sy are the elements between batch matrices (sb 0: B shared). */
typedef struct wh__mm {
  int ta, tb;
  int64_t m, n, k, batch, lda, ldb, sa, sb, sy;
} wh__mm;

static inline wh__mm wh__matmul_geom(const wh__node *nd, const wh__tensor *in) {
  const wh__tensor *a = &in[0], *b = &in[1];
  wh__mm g;
  int ra = a->ndim, rb = b->ndim;
  g.ta = (int)nd->ia[0], g.tb = (int)nd->ia[1];
  g.m = g.ta ? a->d[ra - 1] : a->d[ra - 2];
  g.k = g.ta ? a->d[ra - 2] : a->d[ra - 1];
  g.n = g.tb ? b->d[rb - 2] : b->d[rb - 1];
  g.batch = 1;
  for (int i = 0; i < ra - 2; i++) g.batch *= a->d[i];
  g.lda = a->d[ra - 1], g.ldb = b->d[rb - 1];
  if (rb == 2 && !g.ta) g.m *= g.batch, g.batch = 1;
  g.sa = a->d[ra - 1] * a->d[ra - 2], g.sb = rb == 2 ? 0 : b->d[rb - 1] * b->d[rb - 2], g.sy = g.m * g.n;
  return g;
}

typedef wh_status (*wh__kernel_fn)(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out);

/* Kernels, one per op (or shared by several) and backend: wh__cpu_X (src/kernels/cpu/) and its CUDA
 * twin wh__cuk_X (src/kernels/cuda/, in builds with the CUDA backend), as ops.def names them. */
#define WH__KDECL(name) wh_status name(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out);
#define WH__KDECL_ALL(k) WH__KDECL(wh__cpu_##k) WH__KDECL(wh__cuk_##k)
#define WH__KDECL_CPU(k) WH__KDECL(wh__cpu_##k)
#define WH__KDECL_NONE(k)
#define WH_OP(id, name, kind, family, kernel, backends) WH__KDECL_##backends(kernel)
#include "../ir/ops.def"
#undef WH__KDECL
#undef WH__KDECL_ALL
#undef WH__KDECL_CPU
#undef WH__KDECL_NONE

/* The kernel of each op on each backend (table.c): NULL where the backend has none, and every CUDA
 * entry NULL in builds without the CUDA kernels. */
extern const wh__kernel_fn wh__cpu_kernels[WH_OP_COUNT];
extern const wh__kernel_fn wh__cuda_kernels[WH_OP_COUNT];

/* Every index in [0, v) (embedding rows) / every label in [0, c) (classes); otherwise a message
 * naming the first one outside and WH_ERR_INVALID_ARGUMENT (cpu/embedding.c, cpu/softmax.c). */
wh_status wh__check_rows(wh__exec *ex, const int32_t *ix, int64_t n, int64_t v);
wh_status wh__check_labels(wh__exec *ex, const int32_t *lab, int64_t rows, int64_t c);

/* Copy between a whole tensor of dims d[0..nd) and shard `index` of `parts` of it along dim,
 * that dimension viewed as [groups, parts, rest]: to the shard (gather 0) or back (gather 1). */
void wh__shard_copy(int gather, const int64_t *d, int nd, int dim, int groups, int parts, int index, void *whole,
                    void *shard, size_t esize);

#endif
