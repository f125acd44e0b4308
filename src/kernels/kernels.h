/* kernels.h - what a kernel sees: tensors with concrete shapes and the execution context.
 * Kernels are reached through the op registry (src/ir/ops.c), one entry per backend. */
#ifndef WH_KERNELS_H
#define WH_KERNELS_H

#include <stdint.h>

#include "../ir/ir.h"
#include "../runtime/pool.h"

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
} wh__exec;

/* A workspace of at least bytes, valid until the next call; NULL when out of memory. */
void *wh__exec_scratch(wh__exec *ex, size_t bytes);

/* C = alpha op(A) op(B) + beta C, row-major, split across the pool (see cpu/matmul.c). */
void wh__gemm(wh__pool *pool, int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha, const float *a,
              int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc);

static inline float *wh__f32(const wh__tensor *t) { return (float *)t->data; }

/* Kernels, one per op and backend: wh__cpu_X (src/kernels/cpu/) and its CUDA twin wh__cuk_X
 * (src/kernels/cuda/, in builds with the CUDA backend). */
#define WH__K(name)                                                                                  \
  wh_status wh__cpu_##name(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out); \
  wh_status wh__cuk_##name(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out)
WH__K(matmul);
WH__K(binary);
WH__K(scale);
WH__K(bias_add);
WH__K(unary);
WH__K(unary_grad);
WH__K(softmax);
WH__K(log_softmax);
WH__K(softmax_grad);
WH__K(log_softmax_grad);
WH__K(reduce);
WH__K(sum_to);
WH__K(broadcast_to);
WH__K(copy);
WH__K(permute);
WH__K(slice);
WH__K(slice_grad);
WH__K(concat);
WH__K(embedding);
WH__K(embedding_grad);
WH__K(cross_entropy);
WH__K(cross_entropy_grad);
WH__K(mse);
WH__K(mse_grad);
WH__K(dropout);
WH__K(conv2d);
WH__K(conv2d_grad_input);
WH__K(conv2d_grad_weight);
WH__K(max_pool2d);
WH__K(max_pool2d_grad);
WH__K(avg_pool2d);
WH__K(avg_pool2d_grad);
WH__K(layernorm);
WH__K(layernorm_grad_input);
WH__K(layernorm_grad_gamma);
WH__K(attention);
WH__K(attention_grad);
WH__K(global_norm_clip);
WH__K(sgd_update);
WH__K(adamw_update);
#undef WH__K

#endif
