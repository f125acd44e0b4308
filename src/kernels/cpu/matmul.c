/* matmul.c - CPU GEMM: OpenBLAS runs single-threaded inside libwhale, and wh__gemm splits the
 * output into blocks of rows (or columns) across libwhale's own pool. One pool for every kernel
 * means no second set of spinning BLAS threads competing for the cores, and since a block's
 * elements are computed exactly as in one large call, results do not depend on the thread count. */
#include <cblas.h>
#include <limits.h>
#include <stdio.h>

#include "../kernels.h"

typedef struct {
  int ta, tb;
  int64_t m, n, k;
  float alpha, beta;
  const float *a, *b;
  float *c;
  int64_t lda, ldb, ldc;
  int by_rows;
} gemm_job;

#define GEMM_BLOCK 32 /* rows/columns per work item: keeps the micro-kernels' panels whole */

static void gemm_range(void *arg, int64_t b0, int64_t b1) {
  gemm_job *j = arg;
  int64_t lo = b0 * GEMM_BLOCK, hi = b1 * GEMM_BLOCK;
  if (j->by_rows) {
    if (hi > j->m) hi = j->m;
    const float *a = j->ta ? j->a + lo : j->a + lo * j->lda;
    cblas_sgemm(CblasRowMajor, j->ta ? CblasTrans : CblasNoTrans, j->tb ? CblasTrans : CblasNoTrans, (int)(hi - lo),
                (int)j->n, (int)j->k, j->alpha, a, (int)j->lda, j->b, (int)j->ldb, j->beta, j->c + lo * j->ldc,
                (int)j->ldc);
  } else {
    if (hi > j->n) hi = j->n;
    const float *b = j->tb ? j->b + lo * j->ldb : j->b + lo;
    cblas_sgemm(CblasRowMajor, j->ta ? CblasTrans : CblasNoTrans, j->tb ? CblasTrans : CblasNoTrans, (int)j->m,
                (int)(hi - lo), (int)j->k, j->alpha, j->a, (int)j->lda, b, (int)j->ldb, j->beta, j->c + lo,
                (int)j->ldc);
  }
}

void wh__gemm(wh__pool *pool, int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha, const float *a,
              int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc) {
  if (m <= 0 || n <= 0) return;
  gemm_job j = {ta, tb, m, n, k, alpha, beta, a, b, c, lda, ldb, ldc, m >= n};
  double work = (double)m * (double)n * (double)k;
  int64_t blocks = ((j.by_rows ? m : n) + GEMM_BLOCK - 1) / GEMM_BLOCK;
  /* below ~0.5 MFLOP a split costs more than it saves */
  if (work < 262144.0 || blocks < 2) {
    j.by_rows = 1;
    gemm_range(&j, 0, (m + GEMM_BLOCK - 1) / GEMM_BLOCK);
    return;
  }
  wh__parallel_for(pool, blocks, 1, gemm_range, &j);
}

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
    wh__gemm(ex->pool, ta, tb, m, nn, k, 1.0f, A + p * sa, lda, B + p * sb, ldb, 0.0f, Y + p * sy, nn);
  return WH_OK;
}
