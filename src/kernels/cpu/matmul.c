/* matmul.c - CPU matmul through cblas_sgemm: a shared right operand folds the left operand's
 * leading dimensions into rows (one large GEMM); a batched right operand loops over the batch. */
#include <cblas.h>
#include <limits.h>
#include <stdio.h>

#include "../kernels.h"

wh_status wh__cpu_matmul(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out) {
  const wh__tensor *a = &in[0], *b = &in[1];
  int ta = (int)n->ia[0], tb = (int)n->ia[1];
  int ra = a->ndim, rb = b->ndim;
  int64_t m = ta ? a->d[ra - 1] : a->d[ra - 2];
  int64_t k = ta ? a->d[ra - 2] : a->d[ra - 1];
  int64_t nn = tb ? b->d[rb - 2] : b->d[rb - 1];
  int64_t batch = 1;
  for (int i = 0; i < ra - 2; i++) batch *= a->d[i];
  const float *A = wh__f32(a), *B = wh__f32(b);
  float *Y = wh__f32(out);
  if (out->numel == 0) return WH_OK;
  int64_t lda = a->d[ra - 1], ldb = b->d[rb - 1];
  if (k == 0) {
    for (int64_t i = 0; i < out->numel; i++) Y[i] = 0;
    return WH_OK;
  }
  if (rb == 2 && !ta) {
    /* [batch*M, K] x op(B): one GEMM */
    m *= batch;
    batch = 1;
  }
  if (m > INT_MAX || nn > INT_MAX || k > INT_MAX || lda > INT_MAX || ldb > INT_MAX) {
    if (ex->err) snprintf(ex->err, (size_t)ex->err_cap, "matmul: a dimension exceeds the BLAS int range");
    return WH_ERR_UNSUPPORTED;
  }
  int64_t sa = a->d[ra - 1] * a->d[ra - 2], sb = rb == 2 ? 0 : b->d[rb - 1] * b->d[rb - 2], sy = m * nn;
  for (int64_t p = 0; p < batch; p++)
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)m, (int)nn, (int)k,
                1.0f, A + p * sa, (int)lda, B + p * sb, (int)ldb, 0.0f, Y + p * sy, (int)nn);
  return WH_OK;
}
