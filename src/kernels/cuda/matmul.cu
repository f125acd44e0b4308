/* matmul.cu - GEMMs through cuBLASLt, and the matmul op on them.
 * cuBLASLt is loaded when a device session opens (dlopen), so processes that never touch a GPU
 * do not map it. A GEMM's descriptors and chosen algorithm are cached by shape: a training step
 * repeats the same few dozen shapes, and the heuristic query costs more than a small GEMM.
 * Precision: fp32 runs CUBLAS_COMPUTE_32F (exact fp32). TF32 lets cuBLASLt use tf32 tensor cores
 * on the fp32 operands. bf16 converts both operands to compact bf16 copies first (one pass over
 * each) and multiplies them on bf16 tensor cores into an fp32 result with fp32 accumulation:
 * cuBLASLt's "fast 16BF" compute type on fp32 operands was seen choosing the same tf32 kernels. */
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <dlfcn.h>
#include <stdarg.h>
#include <string.h>

#include "common.cuh"

#define LT_WORKSPACE ((size_t)32 << 20)
#define LT_CACHE 128

struct lt_key {
  int ta, tb, compute, bf16;
  int64_t m, n, k, lda, ldb, ldc, sa, sb, sc, batch;
};

struct lt_entry {
  lt_key key;
  int used;
  cublasLtMatmulDesc_t desc;
  cublasLtMatrixLayout_t la, lb, lc;
  cublasLtMatmulAlgo_t algo;
};

#define LT_FN(name) decltype(&cublasLt##name) name
struct wh__lt {
  void *lib;
  LT_FN(Create);
  LT_FN(Destroy);
  LT_FN(GetStatusName);
  LT_FN(Matmul);
  LT_FN(MatmulDescCreate);
  LT_FN(MatmulDescDestroy);
  LT_FN(MatmulDescSetAttribute);
  LT_FN(MatrixLayoutCreate);
  LT_FN(MatrixLayoutDestroy);
  LT_FN(MatrixLayoutSetAttribute);
  LT_FN(MatmulPreferenceCreate);
  LT_FN(MatmulPreferenceDestroy);
  LT_FN(MatmulPreferenceSetAttribute);
  LT_FN(MatmulAlgoGetHeuristic);
  cublasLtHandle_t h;
  void *ws;
  __nv_bfloat16 *cvt; /* bf16 copies of the operands (bf16 precision) */
  size_t cvt_cap;     /* elements */
  lt_entry cache[LT_CACHE];
  int next; /* round-robin replacement once full */
};

extern "C" void wh__lt_close(wh__lt *lt) {
  if (!lt) return;
  for (int i = 0; i < LT_CACHE; i++) {
    lt_entry *e = &lt->cache[i];
    if (!e->used) continue;
    lt->MatrixLayoutDestroy(e->la);
    lt->MatrixLayoutDestroy(e->lb);
    lt->MatrixLayoutDestroy(e->lc);
    lt->MatmulDescDestroy(e->desc);
  }
  if (lt->h) lt->Destroy(lt->h);
  if (lt->ws) cudaFree(lt->ws);
  if (lt->cvt) cudaFree(lt->cvt);
  if (lt->lib) dlclose(lt->lib);
  free(lt);
}

/* Load cuBLASLt and make a handle and workspace on the current device; NULL with err set. */
extern "C" wh__lt *wh__lt_open(char *err, size_t cap) {
  wh__lt *lt = (wh__lt *)calloc(1, sizeof *lt);
  if (!lt) {
    snprintf(err, cap, "out of memory");
    return NULL;
  }
  lt->lib = dlopen("libcublasLt.so.13", RTLD_NOW | RTLD_LOCAL);
  if (!lt->lib) lt->lib = dlopen("libcublasLt.so", RTLD_NOW | RTLD_LOCAL);
  if (!lt->lib) {
    snprintf(err, cap, "cuBLASLt (libcublasLt.so.13) could not be loaded: %s", dlerror());
    free(lt);
    return NULL;
  }
  int missing = 0;
#define LOAD(name)                                             \
  do {                                                         \
    *(void **)&lt->name = dlsym(lt->lib, "cublasLt" #name);               \
    if (!lt->name && !missing) {                               \
      snprintf(err, cap, "cuBLASLt lacks cublasLt%s", #name);          \
      missing = 1;                                             \
    }                                                          \
  } while (0)
  LOAD(Create);
  LOAD(Destroy);
  LOAD(GetStatusName);
  LOAD(Matmul);
  LOAD(MatmulDescCreate);
  LOAD(MatmulDescDestroy);
  LOAD(MatmulDescSetAttribute);
  LOAD(MatrixLayoutCreate);
  LOAD(MatrixLayoutDestroy);
  LOAD(MatrixLayoutSetAttribute);
  LOAD(MatmulPreferenceCreate);
  LOAD(MatmulPreferenceDestroy);
  LOAD(MatmulPreferenceSetAttribute);
  LOAD(MatmulAlgoGetHeuristic);
#undef LOAD
  if (missing) {
    dlclose(lt->lib);
    free(lt);
    return NULL;
  }
  cublasStatus_t st = lt->Create(&lt->h);
  if (st != CUBLAS_STATUS_SUCCESS) {
    snprintf(err, cap, "cublasLtCreate: %s", lt->GetStatusName(st));
    lt->h = NULL;
    wh__lt_close(lt);
    return NULL;
  }
  cudaError_t e = cudaMalloc(&lt->ws, LT_WORKSPACE);
  if (e != cudaSuccess) {
    snprintf(err, cap, "cuBLASLt workspace of %zu bytes: %s", LT_WORKSPACE, cudaGetErrorString(e));
    lt->ws = NULL;
    wh__lt_close(lt);
    return NULL;
  }
  return lt;
}

static cublasComputeType_t compute_of(int precision) {
  return precision == WH_PRECISION_TF32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
}

static wh_status lt_fail(wh__exec *ex, wh__lt *lt, cublasStatus_t st, const char *what, const lt_key *k) {
  return wh__cu_msg(ex, WH_ERR_INTERNAL, "%s (gemm m %lld n %lld k %lld, ta %d tb %d, batch %lld): %s", what,
                    (long long)k->m, (long long)k->n, (long long)k->k, k->ta, k->tb, (long long)k->batch,
                    lt->GetStatusName(st));
}

/* The cached descriptors for key, made (with an algorithm chosen) on a miss. */
static wh_status lt_lookup(wh__exec *ex, wh__lt *lt, const lt_key *key, lt_entry **out) {
  for (int i = 0; i < LT_CACHE; i++)
    if (lt->cache[i].used && memcmp(&lt->cache[i].key, key, sizeof *key) == 0) {
      *out = &lt->cache[i];
      return WH_OK;
    }
  lt_entry *e = &lt->cache[lt->next];
  lt->next = (lt->next + 1) % LT_CACHE;
  if (e->used) {
    lt->MatrixLayoutDestroy(e->la);
    lt->MatrixLayoutDestroy(e->lb);
    lt->MatrixLayoutDestroy(e->lc);
    lt->MatmulDescDestroy(e->desc);
    e->used = 0;
  }
  memset(e, 0, sizeof *e);
  e->key = *key;
  /* row-major C[m,n] = op(A) op(B) is column-major C^T[n,m] = op(B)^T op(A)^T: cuBLASLt's first
   * operand is our B, its second our A */
  cublasOperation_t opb = key->tb ? CUBLAS_OP_T : CUBLAS_OP_N, opa = key->ta ? CUBLAS_OP_T : CUBLAS_OP_N;
  cublasStatus_t st = lt->MatmulDescCreate(&e->desc, (cublasComputeType_t)key->compute, CUDA_R_32F);
  if (st != CUBLAS_STATUS_SUCCESS) return lt_fail(ex, lt, st, "cublasLtMatmulDescCreate", key);
  lt->MatmulDescSetAttribute(e->desc, CUBLASLT_MATMUL_DESC_TRANSA, &opb, sizeof opb);
  lt->MatmulDescSetAttribute(e->desc, CUBLASLT_MATMUL_DESC_TRANSB, &opa, sizeof opa);
  /* stored column-major shapes: B is (tb ? k x n : n x k), A is (ta ? m x k : k x m), C is n x m */
  uint64_t br = key->tb ? key->k : key->n, bc = key->tb ? key->n : key->k;
  uint64_t ar = key->ta ? key->m : key->k, ac = key->ta ? key->k : key->m;
  cudaDataType_t ab = key->bf16 ? CUDA_R_16BF : CUDA_R_32F;
  if ((st = lt->MatrixLayoutCreate(&e->lb, ab, br, bc, key->ldb)) != CUBLAS_STATUS_SUCCESS ||
      (st = lt->MatrixLayoutCreate(&e->la, ab, ar, ac, key->lda)) != CUBLAS_STATUS_SUCCESS ||
      (st = lt->MatrixLayoutCreate(&e->lc, CUDA_R_32F, key->n, key->m, key->ldc)) != CUBLAS_STATUS_SUCCESS) {
    if (e->lb) lt->MatrixLayoutDestroy(e->lb);
    if (e->la) lt->MatrixLayoutDestroy(e->la);
    lt->MatmulDescDestroy(e->desc);
    return lt_fail(ex, lt, st, "cublasLtMatrixLayoutCreate", key);
  }
  if (key->batch > 1) {
    int32_t cnt = (int32_t)key->batch;
    int64_t sa = key->sa, sb = key->sb, sc = key->sc;
    lt->MatrixLayoutSetAttribute(e->lb, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &cnt, sizeof cnt);
    lt->MatrixLayoutSetAttribute(e->la, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &cnt, sizeof cnt);
    lt->MatrixLayoutSetAttribute(e->lc, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &cnt, sizeof cnt);
    lt->MatrixLayoutSetAttribute(e->lb, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &sb, sizeof sb);
    lt->MatrixLayoutSetAttribute(e->la, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &sa, sizeof sa);
    lt->MatrixLayoutSetAttribute(e->lc, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &sc, sizeof sc);
  }
  cublasLtMatmulPreference_t pref;
  st = lt->MatmulPreferenceCreate(&pref);
  if (st == CUBLAS_STATUS_SUCCESS) {
    size_t ws = LT_WORKSPACE;
    lt->MatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
    cublasLtMatmulHeuristicResult_t res;
    int found = 0;
    st = lt->MatmulAlgoGetHeuristic(lt->h, e->desc, e->lb, e->la, e->lc, e->lc, pref, 1, &res, &found);
    lt->MatmulPreferenceDestroy(pref);
    if (st == CUBLAS_STATUS_SUCCESS && found < 1) st = CUBLAS_STATUS_NOT_SUPPORTED;
    if (st == CUBLAS_STATUS_SUCCESS) e->algo = res.algo;
  }
  if (st != CUBLAS_STATUS_SUCCESS) {
    lt->MatrixLayoutDestroy(e->la);
    lt->MatrixLayoutDestroy(e->lb);
    lt->MatrixLayoutDestroy(e->lc);
    lt->MatmulDescDestroy(e->desc);
    return lt_fail(ex, lt, st, "cuBLASLt found no algorithm", key);
  }
  e->used = 1;
  *out = e;
  return WH_OK;
}

/* dst[p][r][c] = bf16(src[p * stride + r * ld + c]): nb matrices of rows x cols, made compact */
__global__ void to_bf16(__nv_bfloat16 *dst, const float *src, int64_t nb, int64_t rows, int64_t cols, int64_t ld,
                        int64_t stride) {
  int64_t total = nb * rows * cols;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t c = i % cols, rp = i / cols, r = rp % rows, p = rp / rows;
    dst[i] = __float2bfloat16(src[p * stride + r * ld + c]);
  }
}

/* The common case, a contiguous operand: four floats in, four bf16 out per step (n % 4 == 0,
 * src 16-byte and dst 8-byte aligned). */
__global__ void to_bf16_flat4(__nv_bfloat16 *dst, const float *src, int64_t n4) {
  const float4 *s4 = (const float4 *)src;
  uint2 *d2 = (uint2 *)dst;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n4; i += (int64_t)gridDim.x * blockDim.x) {
    float4 v = s4[i];
    __nv_bfloat162 lo = __floats2bfloat162_rn(v.x, v.y), hi = __floats2bfloat162_rn(v.z, v.w);
    uint2 o;
    memcpy(&o.x, &lo, 4);
    memcpy(&o.y, &hi, 4);
    d2[i] = o;
  }
}

static wh_status launch_to_bf16(wh__exec *ex, __nv_bfloat16 *dst, const float *src, int64_t nb, int64_t rows,
                                int64_t cols, int64_t ld, int64_t stride) {
  int64_t total = nb * rows * cols;
  if (total == 0) return WH_OK;
  int contiguous = ld == cols && (nb == 1 || stride == rows * cols);
  if (contiguous && total % 4 == 0 && ((uintptr_t)src & 15) == 0 && ((uintptr_t)dst & 7) == 0)
    to_bf16_flat4<<<wh__cu_blocks(ex, total / 4, 256), 256, 0, wh__cu_stream(ex)>>>(dst, src, total / 4);
  else
    to_bf16<<<wh__cu_blocks(ex, total, 256), 256, 0, wh__cu_stream(ex)>>>(dst, src, nb, rows, cols, ld, stride);
  WH_CU_LAUNCHED(ex, "bf16 conversion");
  return WH_OK;
}

/* Compact bf16 copies of op inputs a (na matrices) and b (nb matrices) in the conversion buffer. */
static wh_status convert(wh__exec *ex, wh__lt *lt, const float *a, int64_t na, int64_t ra, int64_t ca, int64_t lda,
                         int64_t sa, const float *b, int64_t nb, int64_t rb, int64_t cb, int64_t ldb, int64_t sb,
                         __nv_bfloat16 **a16, __nv_bfloat16 **b16) {
  size_t ea = (size_t)(na * ra * ca), eb = (size_t)(nb * rb * cb), need = ea + eb + 16;
  if (need > lt->cvt_cap) {
    if (lt->cvt) {
      cudaStreamSynchronize(wh__cu_stream(ex));
      cudaFree(lt->cvt);
      lt->cvt = NULL, lt->cvt_cap = 0;
    }
    size_t want = need + need / 4;
    cudaError_t e = cudaMalloc(&lt->cvt, want * sizeof(__nv_bfloat16));
    if (e != cudaSuccess) {
      cudaGetLastError();
      lt->cvt = NULL;
      return wh__cu_fail(ex, e, "bf16 operand buffer");
    }
    lt->cvt_cap = want;
  }
  *a16 = lt->cvt;
  *b16 = lt->cvt + ((ea + 7) / 8) * 8; /* 16-byte aligned */
  wh_status s = launch_to_bf16(ex, *a16, a, na, ra, ca, lda, sa);
  return s == WH_OK ? launch_to_bf16(ex, *b16, b, nb, rb, cb, ldb, sb) : s;
}

wh_status wh__cuda_gemm(wh__exec *ex, int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha, const float *a,
                        int64_t lda, int64_t stride_a, const float *b, int64_t ldb, int64_t stride_b, float beta,
                        float *c, int64_t ldc, int64_t stride_c, int64_t batch) {
  if (m <= 0 || n <= 0 || batch <= 0) return WH_OK;
  wh__lt *lt = ex->dev->lt;
  if (k == 0) { /* nothing to multiply: C = beta C, and beta is 0 wherever this is used */
    if (beta != 0.0f) return wh__cu_msg(ex, WH_ERR_INTERNAL, "gemm with k = 0 and beta %g", (double)beta);
    for (int64_t p = 0; p < batch; p++) {
      cudaError_t e = cudaMemset2DAsync(c + p * stride_c, (size_t)ldc * sizeof(float), 0, (size_t)n * sizeof(float),
                                        (size_t)m, wh__cu_stream(ex));
      if (e != cudaSuccess) return wh__cu_fail(ex, e, "gemm (k = 0) zero fill");
    }
    return WH_OK;
  }
  if (m > INT32_MAX || n > INT32_MAX || k > INT32_MAX || batch > INT32_MAX)
    return wh__cu_msg(ex, WH_ERR_UNSUPPORTED, "gemm: a dimension exceeds cuBLASLt's int range");
  int bf16 = ex->dev->precision == WH_PRECISION_BF16;
  const void *av = a, *bv = b;
  size_t es = sizeof(float);
  if (bf16) {
    /* operands as stored: A is (ta ? k x m : m x k), B is (tb ? n x k : k x n), row-major */
    int64_t ra = ta ? k : m, ca = ta ? m : k, rb = tb ? n : k, cb = tb ? k : n;
    int64_t na = stride_a ? batch : 1, nb = stride_b ? batch : 1;
    __nv_bfloat16 *a16 = NULL, *b16 = NULL;
    wh_status s = convert(ex, lt, a, na, ra, ca, lda, stride_a, b, nb, rb, cb, ldb, stride_b, &a16, &b16);
    if (s != WH_OK) return s;
    av = a16, bv = b16, es = sizeof(__nv_bfloat16);
    lda = ca, ldb = cb;
    stride_a = stride_a ? ra * ca : 0, stride_b = stride_b ? rb * cb : 0;
  }
  /* a matrix shared by every batch (stride 0) goes matrix by matrix */
  int64_t calls = 1;
  if (batch > 1 && (stride_a == 0 || stride_b == 0 || stride_c == 0)) calls = batch, batch = 1;
  lt_key key;
  memset(&key, 0, sizeof key);
  key.ta = ta, key.tb = tb, key.bf16 = bf16;
  key.compute = (int)(bf16 ? CUBLAS_COMPUTE_32F : compute_of(ex->dev->precision));
  key.m = m, key.n = n, key.k = k, key.lda = lda, key.ldb = ldb, key.ldc = ldc;
  key.sa = batch > 1 ? stride_a : 0, key.sb = batch > 1 ? stride_b : 0, key.sc = batch > 1 ? stride_c : 0;
  key.batch = batch;
  lt_entry *e = NULL;
  wh_status s = lt_lookup(ex, lt, &key, &e);
  if (s != WH_OK) return s;
  for (int64_t p = 0; p < calls; p++) {
    const char *bp = (const char *)bv + (size_t)(p * stride_b) * es, *ap = (const char *)av + (size_t)(p * stride_a) * es;
    cublasStatus_t st = lt->Matmul(lt->h, e->desc, &alpha, bp, e->lb, ap, e->la,
                                           &beta, c + p * stride_c, e->lc, c + p * stride_c, e->lc, &e->algo, lt->ws,
                                           LT_WORKSPACE, wh__cu_stream(ex));
    if (st != CUBLAS_STATUS_SUCCESS) return lt_fail(ex, lt, st, "cublasLtMatmul", &key);
  }
  return WH_OK;
}

/* The same GEMMs as the CPU kernel (wh__matmul_geom). */
extern "C" wh_status wh__cuk_matmul(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out) {
  if (out->numel == 0) return WH_OK;
  wh__mm g = wh__matmul_geom(n, in);
  return wh__cuda_gemm(ex, g.ta, g.tb, g.m, g.n, g.k, 1.0f, wh__f32(&in[0]), g.lda, g.sa, wh__f32(&in[1]), g.ldb, g.sb,
                       0.0f, wh__f32(out), g.n, g.sy, g.batch);
}
