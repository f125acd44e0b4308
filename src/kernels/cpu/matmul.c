/* matmul.c - CPU GEMM: OpenBLAS runs single-threaded inside libwhale, and wh__gemm splits the
 * output into blocks of rows (or columns) across libwhale's own pool. One pool for every kernel
 * means no second set of spinning BLAS threads competing for the cores, and since a block's
 * elements are computed exactly as in one large call, results do not depend on the thread count. */
#include <cblas.h>
#include <limits.h>
#include <stdio.h>

#include "../kernels.h"

/* libwhale splits GEMMs across its own pool: BLAS runs one thread per call (process-wide), so no
 * idle BLAS threads spin against the pool's. */
void wh__cpu_kernels_init(void) { openblas_set_num_threads(1); }

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
  wh__mm g = wh__matmul_geom(n, in);
  const float *A = wh__f32(&in[0]), *B = wh__f32(&in[1]);
  float *Y = wh__f32(out);
  if (out->numel == 0) return WH_OK;
  if (g.k == 0) {
    for (int64_t i = 0; i < out->numel; i++) Y[i] = 0;
    return WH_OK;
  }
  if (g.m > INT_MAX || g.n > INT_MAX || g.k > INT_MAX || g.lda > INT_MAX || g.ldb > INT_MAX) {
    if (ex->err) snprintf(ex->err, (size_t)ex->err_cap, "matmul: a dimension exceeds the BLAS int range");
    return WH_ERR_UNSUPPORTED;
  }
  for (int64_t p = 0; p < g.batch; p++)
    wh__gemm(ex->pool, g.ta, g.tb, g.m, g.n, g.k, 1.0f, A + p * g.sa, g.lda, B + p * g.sb, g.ldb, 0.0f, Y + p * g.sy, g.n);
  return WH_OK;
}
