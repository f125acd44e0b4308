/* flash.cu - causal multi-head self-attention over a fused [.., T, 3C] q|k|v tensor for the bf16
 * precision mode, fused in the manner of FlashAttention-2: tiles of 64 queries by 64 keys, bf16
 * tensor-core products with fp32 accumulation, and the online softmax in fp32 registers, so no
 * T x T matrix is ever stored. Backward runs the forward kernel again for each row's log-sum-exp and
 * D = rowsum(dO * O), then one kernel per key tile accumulates dK and dV and one per query tile
 * accumulates dQ: no atomics, deterministic. Heads of 16 to 128 (multiples of 16); transformer.cu
 * keeps the exact GEMM path for every other case.
 *
 * The products use mma.sync m16n8k16 with operands from ldmatrix (inline PTX): the fragment layouts
 * are those of the PTX ISA, which lets scores stay in registers and become the next product's A
 * operand. (nvcuda::wmma's bf16 fragment loads compile to generic loads, not ldmatrix, with CUDA 13.) */
#include <cuda_bf16.h>
#include <limits.h>
#include <math.h>

#include <atomic>

#include "common.cuh"

#define FL_TILE 64     /* rows of a query tile and of a key tile */
#define FL_THREADS 128 /* 4 warps, each owning 16 rows of the block's tile */

typedef __nv_bfloat16 bf16;

/* Shared memory: 64 x hd bf16 tiles, rows hd + 8 apart (the 16 bytes of padding make the 8 row
 * addresses of every ldmatrix fall in distinct banks). */
static __host__ __device__ constexpr int fl_tile_bytes(int hd) { return FL_TILE * (hd + 8) * 2; }
static constexpr size_t fl_fwd_smem(int hd) { return 3 * (size_t)fl_tile_bytes(hd); }       /* Q, K, V */
static constexpr size_t fl_dkv_smem(int hd) { return 4 * (size_t)fl_tile_bytes(hd) + 512; } /* + L, D */
static constexpr size_t fl_dq_smem(int hd) { return 4 * (size_t)fl_tile_bytes(hd); }

/* ---- register fragments (PTX ISA, mma.m16n8k16 with .bf16): lane = 4 g + q.
 * A 16x16: a0 (row g, cols 2q, 2q+1), a1 (row g + 8, same), a2 (row g, cols 8 + 2q, +1), a3 (row g + 8,
 *          same).
 * B 16x8:  b0 (rows 2q, 2q+1, col g), b1 (rows 8 + 2q, +1, col g).
 * C 16x8:  c0, c1 (row g, cols 2q, 2q+1), c2, c3 (row g + 8, same).
 * A C fragment pair of 16 x 16 (columns n8 blocks 2j, 2j+1) is therefore, packed to bf16, the A fragment
 * of the k16 block j: a0 = C[2j].c01, a1 = C[2j].c23, a2 = C[2j+1].c01, a3 = C[2j+1].c23. */

static __device__ __forceinline__ unsigned pack_bf16(float a, float b) {
  __nv_bfloat162 v = __floats2bfloat162_rn(a, b); /* a in the low half: the lower column */
  return *reinterpret_cast<unsigned *>(&v);
}

/* the same, adding the rounded values (the weights the product will use) to sum */
static __device__ __forceinline__ unsigned pack_bf16_sum(float a, float b, float &sum) {
  __nv_bfloat162 v = __floats2bfloat162_rn(a, b);
  float2 f = __bfloat1622float2(v);
  sum += f.x + f.y;
  return *reinterpret_cast<unsigned *>(&v);
}

/* ldmatrix x4: lane i gives the address of row i % 8 of matrix i / 8; register j gets matrix j */
static __device__ __forceinline__ void ldsm4(unsigned (&r)[4], const bf16 *p) {
  unsigned a = (unsigned)__cvta_generic_to_shared(p);
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a)
               : "memory");
}

static __device__ __forceinline__ void ldsm4t(unsigned (&r)[4], const bf16 *p) {
  unsigned a = (unsigned)__cvta_generic_to_shared(p);
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a)
               : "memory");
}

/* c += a b: a 16x16 A fragment, a 16x8 B fragment (b0, b1), a 16x8 fp32 C fragment */
static __device__ __forceinline__ void mma16816(float (&c)[4], const unsigned (&a)[4], unsigned b0,
                                                unsigned b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* Lane offsets into a tile (elements), with ld = hd + 8:
 *  off_a: the A fragment at (r0, k0) of a row-major tile is ldsm4(tile + r0 ld + k0 + off_a); the
 *         same address with ldsm4t gives the B fragments of columns n0..n0+7 (regs 0, 1) and
 *         n0+8..n0+15 (regs 2, 3) of B(k, n) = tile[k][n] at (k0, n0): tile + k0 ld + n0 + off_a.
 *  off_b: the B fragments of B(k, n) = tile[n][k] (a transposed operand, K for Q K^T) at rows n0..,
 *         columns k0..: ldsm4(tile + n0 ld + k0 + off_b), regs 0, 1 for n0..n0+7, 2, 3 for n0+8... */
static __device__ __forceinline__ int off_a(int lane, int ld) { return (lane & 15) * ld + (lane >> 4) * 8; }
static __device__ __forceinline__ int off_b(int lane, int ld) {
  return ((lane & 7) + ((lane >> 4) << 3)) * ld + ((lane >> 3) & 1) * 8;
}

/* 16 x 16*NB2 products of A (KD fragments given by fa(kd, a)) against B = tile[n][k] rows n0.. */
template <int KD, int NB2, typename FA>
static __device__ __forceinline__ void scores(float (&s)[2 * NB2][4], FA fa, const bf16 *tile, int ld,
                                              int ob) {
#pragma unroll
  for (int n = 0; n < 2 * NB2; n++) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
  for (int kd = 0; kd < KD; kd++) {
    unsigned a[4];
    fa(kd, a);
#pragma unroll
    for (int n2 = 0; n2 < NB2; n2++) {
      unsigned bb[4];
      ldsm4(bb, tile + n2 * 16 * ld + kd * 16 + ob);
      mma16816(s[2 * n2], a, bb[0], bb[1]);
      mma16816(s[2 * n2 + 1], a, bb[2], bb[3]);
    }
  }
}

/* acc (16 x HD) += A (16 x 16 k16 block, from registers) times tile rows k0..k0+15 (B(k, n) = tile[k][n]) */
template <int HD>
static __device__ __forceinline__ void accumulate(float (&acc)[HD / 8][4], const unsigned (&a)[4],
                                                  const bf16 *tile, int oa) {
#pragma unroll
  for (int d2 = 0; d2 < HD / 16; d2++) {
    unsigned bb[4];
    ldsm4t(bb, tile + d2 * 16 + oa);
    mma16816(acc[2 * d2], a, bb[0], bb[1]);
    mma16816(acc[2 * d2 + 1], a, bb[2], bb[3]);
  }
}

/* Rows 0..63 of the fp32 matrix at g (rows ld apart, HD columns) as bf16 into the tile s; rows from n
 * on are zero, so that masked products never meet stale shared memory (0 * NaN). Thread i takes the
 * float4 column i % C4 of rows i / C4 + TR j; when C4 does not divide the block, the last few idle. */
template <int HD>
static __device__ __forceinline__ void load_tile(bf16 *s, const float *__restrict__ g, int64_t ld, int n) {
  constexpr int C4 = HD / 4, TR = FL_THREADS / C4, IT = (FL_TILE + TR - 1) / TR, B = 4;
  const int r0 = threadIdx.x / C4, c = threadIdx.x % C4 * 4;
  if (r0 >= TR) return;
  const float *p = g + r0 * ld + c;
  const int64_t step = TR * ld;
  bf16 *d = s + r0 * (HD + 8) + c;
#pragma unroll
  for (int i0 = 0; i0 < IT; i0 += B) {
    float4 v[B];
#pragma unroll
    for (int i = 0; i < B; i++) {
      v[i] = make_float4(0.f, 0.f, 0.f, 0.f);
      if (i0 + i < IT && r0 + (i0 + i) * TR < n)
        v[i] = __ldg(reinterpret_cast<const float4 *>(p + (i0 + i) * step));
    }
#pragma unroll
    for (int i = 0; i < B; i++)
      if (i0 + i < IT && r0 + (i0 + i) * TR < FL_TILE)
        *reinterpret_cast<uint2 *>(d + (i0 + i) * TR * (HD + 8)) =
            make_uint2(pack_bf16(v[i].x, v[i].y), pack_bf16(v[i].z, v[i].w));
  }
}

/* A 16 x HD C-fragment accumulator times f to the rows g and g + 8 at p (row stride ld), those valid */
template <int HD>
static __device__ __forceinline__ void store_acc(float *p, int64_t ld, const float (&acc)[HD / 8][4], float f,
                                                 bool va, bool vb, int q) {
#pragma unroll
  for (int d = 0; d < HD / 8; d++) {
    if (va) *reinterpret_cast<float2 *>(p + d * 8 + 2 * q) = make_float2(acc[d][0] * f, acc[d][1] * f);
    if (vb)
      *reinterpret_cast<float2 *>(p + 8 * ld + d * 8 + 2 * q) = make_float2(acc[d][2] * f, acc[d][3] * f);
  }
}

static __device__ __forceinline__ float quad_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}

static __device__ __forceinline__ float quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

/* Registers: 3 blocks of 128 threads an SM (168 registers a thread) for heads up to 64, without spills */
static __host__ __device__ constexpr int fl_minb(int hd) { return hd <= 64 ? 3 : 1; }

/* ---- forward: one block per (query tile, sample x head); the warp's rows are w16 .. w16 + 15 of the
 * tile and the thread holds rows g and g + 8 of them. Writes y, or for the backward (y NULL) the rows'
 * log2-sum-exp2 of the log2e-scaled scores (lse) and D = rowsum(dO * O) (dsum). */
template <int HD>
static __global__ void __launch_bounds__(FL_THREADS, fl_minb(HD))
    fl_fwd_k(const float *__restrict__ qkv, float *__restrict__ y, float *__restrict__ lse,
             const float *__restrict__ dy, float *__restrict__ dsum, int t, int h, float sl2) {
  constexpr int LD = HD + 8, KD = HD / 16, NO = HD / 8;
  extern __shared__ __align__(128) unsigned char smem[];
  bf16 *sq = reinterpret_cast<bf16 *>(smem), *sk = sq + FL_TILE * LD, *sv = sk + FL_TILE * LD;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, q = lane & 3;
  const int oa = off_a(lane, LD), ob = off_b(lane, LD);
  const int bh = blockIdx.x, b = bh / h, hh = bh % h;
  const int qt = gridDim.y - 1 - blockIdx.y, q0 = qt * FL_TILE; /* the longest rows first */
  const int ra = warp * 16 + g, rb = ra + 8;                    /* the thread's rows in the tile */
  const int64_t c = (int64_t)h * HD, ld = 3 * c;
  const float *base = qkv + (int64_t)b * t * ld + (int64_t)hh * HD;

  load_tile<HD>(sq, base + (int64_t)q0 * ld, ld, min(FL_TILE, t - q0));
  __syncthreads();
  unsigned qa[KD][4];
#pragma unroll
  for (int kd = 0; kd < KD; kd++) ldsm4(qa[kd], sq + warp * 16 * LD + kd * 16 + oa);
  float o[NO][4];
#pragma unroll
  for (int d = 0; d < NO; d++) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.f;
  /* running max (log2 units) of rows a, b and this thread's part of their sums */
  float ma = -INFINITY, mb = -INFINITY, la = 0.f, lb = 0.f;

  for (int kt = 0; kt <= qt; kt++) {
    const int k0 = kt * FL_TILE, nk = min(FL_TILE, t - k0);
    __syncthreads(); /* nobody reads the previous K, V tiles any more */
    load_tile<HD>(sk, base + (int64_t)k0 * ld + c, ld, nk);
    load_tile<HD>(sv, base + (int64_t)k0 * ld + 2 * c, ld, nk);
    __syncthreads();
    float s[8][4];
    scores<KD, 4>(s, [&](int kd, unsigned(&a)[4]) {
#pragma unroll
      for (int i = 0; i < 4; i++) a[i] = qa[kd][i];
    }, sk, LD, ob);
    /* on the diagonal tile (k0 == q0) key column > row is masked, which also covers every key past T
     * for the rows below T. Column 0 of tile 0 is never masked, so the maxima are finite. */
    const bool diag = kt == qt;
    float xa = -INFINITY, xb = -INFINITY;
#pragma unroll
    for (int n = 0; n < 8; n++)
#pragma unroll
      for (int e = 0; e < 2; e++) {
        const int col = n * 8 + 2 * q + e;
        s[n][e] = diag && col > ra ? -INFINITY : s[n][e] * sl2;
        s[n][2 + e] = diag && col > rb ? -INFINITY : s[n][2 + e] * sl2;
        xa = fmaxf(xa, s[n][e]);
        xb = fmaxf(xb, s[n][2 + e]);
      }
    xa = fmaxf(ma, quad_max(xa));
    xb = fmaxf(mb, quad_max(xb));
    const float fa = exp2f(ma - xa), fb = exp2f(mb - xb); /* 0 the first time: ma = -inf */
    ma = xa, mb = xb;
    la *= fa, lb *= fb;
#pragma unroll
    for (int d = 0; d < NO; d++) o[d][0] *= fa, o[d][1] *= fa, o[d][2] *= fb, o[d][3] *= fb;
#pragma unroll
    for (int kk = 0; kk < 4; kk++) {
      unsigned pa[4];
      pa[0] = pack_bf16_sum(exp2f(s[2 * kk][0] - ma), exp2f(s[2 * kk][1] - ma), la);
      pa[1] = pack_bf16_sum(exp2f(s[2 * kk][2] - mb), exp2f(s[2 * kk][3] - mb), lb);
      pa[2] = pack_bf16_sum(exp2f(s[2 * kk + 1][0] - ma), exp2f(s[2 * kk + 1][1] - ma), la);
      pa[3] = pack_bf16_sum(exp2f(s[2 * kk + 1][2] - mb), exp2f(s[2 * kk + 1][3] - mb), lb);
      accumulate<HD>(o, pa, sv + kk * 16 * LD, oa);
    }
  }

  la = quad_sum(la), lb = quad_sum(lb);
  const bool va = q0 + ra < t, vb = q0 + rb < t;
  const int64_t row = (int64_t)b * t + q0 + ra; /* global row of row a */
  if (y) {
    store_acc<HD>(y + row * c + (int64_t)hh * HD, c, o, 1.f / la, va, false, q);
    store_acc<HD>(y + row * c + (int64_t)hh * HD, c, o, 1.f / lb, false, vb, q);
  }
  if (lse && q == 0) {
    if (va) lse[(int64_t)bh * t + q0 + ra] = ma + log2f(la);
    if (vb) lse[(int64_t)bh * t + q0 + rb] = mb + log2f(lb);
  }
  if (dsum) { /* with dO rounded as the products see it, so that each row of dS sums to about 0 */
    const float *ga = dy + row * c + (int64_t)hh * HD, *gb = ga + 8 * c;
    float sa = 0.f, sb = 0.f;
#pragma unroll
    for (int d = 0; d < NO; d++) {
      if (va) {
        float2 v = __bfloat1622float2(
            __float22bfloat162_rn(__ldg(reinterpret_cast<const float2 *>(ga + d * 8 + 2 * q))));
        sa += o[d][0] * v.x + o[d][1] * v.y;
      }
      if (vb) {
        float2 v = __bfloat1622float2(
            __float22bfloat162_rn(__ldg(reinterpret_cast<const float2 *>(gb + d * 8 + 2 * q))));
        sb += o[d][2] * v.x + o[d][3] * v.y;
      }
    }
    sa = quad_sum(sa) / la, sb = quad_sum(sb) / lb;
    if (q == 0 && va) dsum[(int64_t)bh * t + q0 + ra] = sa;
    if (q == 0 && vb) dsum[(int64_t)bh * t + q0 + rb] = sb;
  }
}

/* ---- dK, dV: one block per (key tile, sample x head), walking the query tiles from the diagonal on.
 * The warp's 16 key rows against the query tile, 32 queries at a time: S^T = K Q^T,
 * P^T = exp2(S^T sl2 - L), dP^T = V dO^T, dS^T = P^T (dP^T - D); dV += P^T dO, dK += dS^T Q (times
 * scale at the end). Wide heads take 16 queries at a time, to stay within the registers. */
template <int HD>
static __global__ void __launch_bounds__(FL_THREADS, fl_minb(HD))
    fl_dkv_k(const float *__restrict__ qkv, const float *__restrict__ dy, const float *__restrict__ lse,
             const float *__restrict__ dsum, float *__restrict__ dqkv, int t, int h, float sl2, float scale) {
  constexpr int LD = HD + 8, KD = HD / 16, NO = HD / 8, NB2 = HD <= 64 ? 2 : 1; /* queries 16 NB2 at a time */
  extern __shared__ __align__(128) unsigned char smem[];
  bf16 *sk = reinterpret_cast<bf16 *>(smem), *sv = sk + FL_TILE * LD, *sq = sv + FL_TILE * LD,
       *sdo = sq + FL_TILE * LD;
  float *sl = reinterpret_cast<float *>(sdo + FL_TILE * LD), *sd = sl + FL_TILE;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, q = lane & 3;
  const int oa = off_a(lane, LD), ob = off_b(lane, LD);
  const int bh = blockIdx.x, b = bh / h, hh = bh % h;
  const int kt = blockIdx.y, k0 = kt * FL_TILE; /* the longest walks first */
  const int ra = warp * 16 + g, rb = ra + 8;    /* the thread's key rows in the tile */
  const int64_t c = (int64_t)h * HD, ld = 3 * c;
  const float *base = qkv + (int64_t)b * t * ld + (int64_t)hh * HD;
  const float *dyb = dy + (int64_t)b * t * c + (int64_t)hh * HD;
  const float *lb = lse + (int64_t)bh * t, *db = dsum + (int64_t)bh * t;

  load_tile<HD>(sk, base + (int64_t)k0 * ld + c, ld, min(FL_TILE, t - k0));
  load_tile<HD>(sv, base + (int64_t)k0 * ld + 2 * c, ld, min(FL_TILE, t - k0));
  __syncthreads();
  auto fk = [&](int kd, unsigned(&a)[4]) { ldsm4(a, sk + warp * 16 * LD + kd * 16 + oa); };
  auto fv = [&](int kd, unsigned(&a)[4]) { ldsm4(a, sv + warp * 16 * LD + kd * 16 + oa); };
  float dk[NO][4], dv[NO][4];
#pragma unroll
  for (int d = 0; d < NO; d++)
#pragma unroll
    for (int i = 0; i < 4; i++) dk[d][i] = dv[d][i] = 0.f;

  for (int qt = kt; qt < (int)gridDim.y; qt++) {
    const int q0 = qt * FL_TILE, nq = min(FL_TILE, t - q0);
    __syncthreads(); /* nobody reads the previous Q, dO tiles, L, D any more */
    load_tile<HD>(sq, base + (int64_t)q0 * ld, ld, nq);
    load_tile<HD>(sdo, dyb + (int64_t)q0 * c, c, nq);
    if (threadIdx.x < FL_TILE) {
      const int i = threadIdx.x;
      sl[i] = i < nq ? lb[q0 + i] : 0.f;
      sd[i] = i < nq ? db[q0 + i] : 0.f;
    }
    __syncthreads();
    /* on the diagonal tile (q0 == k0) key row > query column is masked; queries past T are masked.
     * Keys past T occur only in the last tile, which is diagonal, so they are masked as well. */
    const bool diag = qt == kt;
#pragma unroll 1
    for (int c0 = 0; c0 < FL_TILE; c0 += 16 * NB2) {
      float s[2 * NB2][4], dp[2 * NB2][4];
      scores<KD, NB2>(s, fk, sq + c0 * LD, LD, ob);
      scores<KD, NB2>(dp, fv, sdo + c0 * LD, LD, ob);
#pragma unroll
      for (int n = 0; n < 2 * NB2; n++) {
        const int col = c0 + n * 8 + 2 * q;
        const float2 lv = *reinterpret_cast<const float2 *>(sl + col),
                     dd = *reinterpret_cast<const float2 *>(sd + col);
#pragma unroll
        for (int e = 0; e < 2; e++) {
          const float le = e ? lv.y : lv.x, de = e ? dd.y : dd.x;
          const bool ok = col + e < nq;
          const float pa = exp2f(ok && (!diag || ra <= col + e) ? s[n][e] * sl2 - le : -INFINITY);
          const float pb = exp2f(ok && (!diag || rb <= col + e) ? s[n][2 + e] * sl2 - le : -INFINITY);
          s[n][e] = pa, s[n][2 + e] = pb;
          dp[n][e] = pa * (dp[n][e] - de), dp[n][2 + e] = pb * (dp[n][2 + e] - de);
        }
      }
#pragma unroll
      for (int kk = 0; kk < NB2; kk++) {
        const unsigned pa[4] = {pack_bf16(s[2 * kk][0], s[2 * kk][1]), pack_bf16(s[2 * kk][2], s[2 * kk][3]),
                                pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                                pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3])};
        const unsigned da[4] = {
            pack_bf16(dp[2 * kk][0], dp[2 * kk][1]), pack_bf16(dp[2 * kk][2], dp[2 * kk][3]),
            pack_bf16(dp[2 * kk + 1][0], dp[2 * kk + 1][1]), pack_bf16(dp[2 * kk + 1][2], dp[2 * kk + 1][3])};
        accumulate<HD>(dv, pa, sdo + (c0 + kk * 16) * LD, oa);
        accumulate<HD>(dk, da, sq + (c0 + kk * 16) * LD, oa);
      }
    }
  }

  const bool va = k0 + ra < t, vb = k0 + rb < t;
  float *p = dqkv + ((int64_t)b * t + k0 + ra) * ld + (int64_t)hh * HD;
  store_acc<HD>(p + c, ld, dk, scale, va, vb, q);
  store_acc<HD>(p + 2 * c, ld, dv, 1.f, va, vb, q);
}

/* ---- dQ: one block per (query tile, sample x head), walking the key tiles up to the diagonal, 32 keys
 * at a time: S = Q K^T, P = exp2(S sl2 - L), dP = dO V^T, dS = P (dP - D), dQ += dS K (times scale at
 * the end). Narrow heads keep the warp's Q and dO fragments in registers. */
template <int HD>
static __global__ void __launch_bounds__(FL_THREADS, fl_minb(HD))
    fl_dq_k(const float *__restrict__ qkv, const float *__restrict__ dy, const float *__restrict__ lse,
            const float *__restrict__ dsum, float *__restrict__ dqkv, int t, int h, float sl2, float scale) {
  constexpr int LD = HD + 8, KD = HD / 16, NO = HD / 8, NB2 = 2; /* keys 32 at a time */
  constexpr bool CACHE = HD <= 64;
  extern __shared__ __align__(128) unsigned char smem[];
  bf16 *sq = reinterpret_cast<bf16 *>(smem), *sdo = sq + FL_TILE * LD, *sk = sdo + FL_TILE * LD,
       *sv = sk + FL_TILE * LD;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, q = lane & 3;
  const int oa = off_a(lane, LD), ob = off_b(lane, LD);
  const int bh = blockIdx.x, b = bh / h, hh = bh % h;
  const int qt = gridDim.y - 1 - blockIdx.y, q0 = qt * FL_TILE; /* the longest walks first */
  const int ra = warp * 16 + g, rb = ra + 8;                    /* the thread's query rows in the tile */
  const bool va = q0 + ra < t, vb = q0 + rb < t;
  const int64_t c = (int64_t)h * HD, ld = 3 * c;
  const float *base = qkv + (int64_t)b * t * ld + (int64_t)hh * HD;
  const float *dyb = dy + (int64_t)b * t * c + (int64_t)hh * HD;
  const float la = va ? lse[(int64_t)bh * t + q0 + ra] : 0.f, lb = vb ? lse[(int64_t)bh * t + q0 + rb] : 0.f;
  const float da = va ? dsum[(int64_t)bh * t + q0 + ra] : 0.f,
              db = vb ? dsum[(int64_t)bh * t + q0 + rb] : 0.f;

  load_tile<HD>(sq, base + (int64_t)q0 * ld, ld, min(FL_TILE, t - q0));
  load_tile<HD>(sdo, dyb + (int64_t)q0 * c, c, min(FL_TILE, t - q0));
  __syncthreads();
  unsigned qc[CACHE ? KD : 1][4], oc[CACHE ? KD : 1][4];
  if constexpr (CACHE)
#pragma unroll
    for (int kd = 0; kd < KD; kd++) {
      ldsm4(qc[kd], sq + warp * 16 * LD + kd * 16 + oa);
      ldsm4(oc[kd], sdo + warp * 16 * LD + kd * 16 + oa);
    }
  auto fq = [&](int kd, unsigned(&a)[4]) {
    if constexpr (CACHE) {
#pragma unroll
      for (int i = 0; i < 4; i++) a[i] = qc[kd][i];
    } else {
      ldsm4(a, sq + warp * 16 * LD + kd * 16 + oa);
    }
  };
  auto fo = [&](int kd, unsigned(&a)[4]) {
    if constexpr (CACHE) {
#pragma unroll
      for (int i = 0; i < 4; i++) a[i] = oc[kd][i];
    } else {
      ldsm4(a, sdo + warp * 16 * LD + kd * 16 + oa);
    }
  };
  float acc[NO][4];
#pragma unroll
  for (int d = 0; d < NO; d++) acc[d][0] = acc[d][1] = acc[d][2] = acc[d][3] = 0.f;

  for (int kt = 0; kt <= qt; kt++) {
    const int k0 = kt * FL_TILE, nk = min(FL_TILE, t - k0);
    __syncthreads(); /* nobody reads the previous K, V tiles any more */
    load_tile<HD>(sk, base + (int64_t)k0 * ld + c, ld, nk);
    load_tile<HD>(sv, base + (int64_t)k0 * ld + 2 * c, ld, nk);
    __syncthreads();
    /* on the diagonal tile key column > query row is masked (keys past T among them); rows past T
     * are masked whole */
    const bool diag = kt == qt;
#pragma unroll 1
    for (int c0 = 0; c0 < FL_TILE; c0 += 16 * NB2) {
      float s[2 * NB2][4], dp[2 * NB2][4];
      scores<KD, NB2>(s, fq, sk + c0 * LD, LD, ob);
      scores<KD, NB2>(dp, fo, sv + c0 * LD, LD, ob);
#pragma unroll
      for (int n = 0; n < 2 * NB2; n++)
#pragma unroll
        for (int e = 0; e < 2; e++) {
          const int col = c0 + n * 8 + 2 * q + e;
          const float pa = exp2f(va && (!diag || col <= ra) ? s[n][e] * sl2 - la : -INFINITY);
          const float pb = exp2f(vb && (!diag || col <= rb) ? s[n][2 + e] * sl2 - lb : -INFINITY);
          dp[n][e] = pa * (dp[n][e] - da), dp[n][2 + e] = pb * (dp[n][2 + e] - db);
        }
#pragma unroll
      for (int kk = 0; kk < NB2; kk++) {
        const unsigned dsa[4] = {
            pack_bf16(dp[2 * kk][0], dp[2 * kk][1]), pack_bf16(dp[2 * kk][2], dp[2 * kk][3]),
            pack_bf16(dp[2 * kk + 1][0], dp[2 * kk + 1][1]), pack_bf16(dp[2 * kk + 1][2], dp[2 * kk + 1][3])};
        accumulate<HD>(acc, dsa, sk + (c0 + kk * 16) * LD, oa);
      }
    }
  }

  store_acc<HD>(dqkv + ((int64_t)b * t + q0 + ra) * ld + (int64_t)hh * HD, ld, acc, scale, va, vb, q);
}

/* ---- host side */

/* Dynamic shared memory above 48 KB is allowed once per kernel and device. */
static wh_status fl_allow(wh__exec *ex, const void *kern, size_t bytes,
                          std::atomic<unsigned long long> &done) {
  if (bytes <= 48 * 1024) return WH_OK;
  int dev = ex->dev->device;
  unsigned long long bit = dev >= 0 && dev < 64 ? 1ull << dev : 0;
  if (bit && (done.load(std::memory_order_relaxed) & bit)) return WH_OK;
  cudaError_t e = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes);
  if (e != cudaSuccess) return wh__cu_fail(ex, e, "attention (flash): shared memory size");
  done.fetch_or(bit, std::memory_order_relaxed);
  return WH_OK;
}

typedef struct {
  const float *qkv, *dy;
  float *y, *dqkv, *lse, *dsum;
  int64_t nb, t, h;
} fl_args;

template <int HD>
static wh_status fl_forward(wh__exec *ex, const fl_args *a) {
  static std::atomic<unsigned long long> done;
  const size_t bytes = fl_fwd_smem(HD);
  wh_status r = fl_allow(ex, (const void *)fl_fwd_k<HD>, bytes, done);
  if (r != WH_OK) return r;
  const float sl2 = (float)(1.4426950408889634 / sqrt((double)HD)); /* scale * log2(e) */
  dim3 grid((unsigned)(a->nb * a->h), (unsigned)((a->t + FL_TILE - 1) / FL_TILE));
  fl_fwd_k<HD><<<grid, FL_THREADS, bytes, wh__cu_stream(ex)>>>(a->qkv, a->y, a->lse, a->dy, a->dsum,
                                                               (int)a->t, (int)a->h, sl2);
  WH_CU_LAUNCHED(ex, a->y ? "attention (flash)" : "attention_grad (flash) statistics");
  return WH_OK;
}

template <int HD>
static wh_status fl_backward(wh__exec *ex, const fl_args *a) {
  static std::atomic<unsigned long long> done_kv, done_q;
  const size_t bkv = fl_dkv_smem(HD), bq = fl_dq_smem(HD);
  wh_status r = fl_forward<HD>(ex, a);
  if (r != WH_OK) return r;
  if ((r = fl_allow(ex, (const void *)fl_dkv_k<HD>, bkv, done_kv)) != WH_OK) return r;
  if ((r = fl_allow(ex, (const void *)fl_dq_k<HD>, bq, done_q)) != WH_OK) return r;
  const float scale = (float)(1.0 / sqrt((double)HD)), sl2 = (float)(1.4426950408889634 / sqrt((double)HD));
  dim3 grid((unsigned)(a->nb * a->h), (unsigned)((a->t + FL_TILE - 1) / FL_TILE));
  cudaStream_t st = wh__cu_stream(ex);
  fl_dkv_k<HD><<<grid, FL_THREADS, bkv, st>>>(a->qkv, a->dy, a->lse, a->dsum, a->dqkv, (int)a->t, (int)a->h,
                                              sl2, scale);
  WH_CU_LAUNCHED(ex, "attention_grad (flash) dK, dV");
  fl_dq_k<HD><<<grid, FL_THREADS, bq, st>>>(a->qkv, a->dy, a->lse, a->dsum, a->dqkv, (int)a->t, (int)a->h,
                                            sl2, scale);
  WH_CU_LAUNCHED(ex, "attention_grad (flash) dQ");
  return WH_OK;
}

#define FL_CASES(F)                  \
  switch (hd) {                      \
    case 16: return F<16>(ex, &a);   \
    case 32: return F<32>(ex, &a);   \
    case 48: return F<48>(ex, &a);   \
    case 64: return F<64>(ex, &a);   \
    case 80: return F<80>(ex, &a);   \
    case 96: return F<96>(ex, &a);   \
    case 112: return F<112>(ex, &a); \
    case 128: return F<128>(ex, &a); \
    default: return WH_ERR_INTERNAL; \
  }

static bool fl_aligned(const void *p) { return ((uintptr_t)p & 15) == 0; }

/* Whether the fused path takes nb samples of t tokens, h heads of hd, with these data pointers. */
bool wh__cu_flash_fits(int64_t nb, int64_t t, int64_t h, int64_t hd, const void *p0, const void *p1,
                       const void *p2) {
  return hd >= 16 && hd <= 128 && hd % 16 == 0 && nb >= 1 && t >= 1 && h >= 1 && nb * h <= INT_MAX &&
         (t + FL_TILE - 1) / FL_TILE <= 65535 && fl_aligned(p0) && fl_aligned(p1) && fl_aligned(p2);
}

wh_status wh__cu_flash_attention(wh__exec *ex, const float *qkv, float *y, int64_t nb, int64_t t, int64_t h,
                                 int64_t hd) {
  fl_args a = {qkv, NULL, y, NULL, NULL, NULL, nb, t, h};
  FL_CASES(fl_forward)
}

wh_status wh__cu_flash_attention_grad(wh__exec *ex, const float *qkv, const float *dy, float *dqkv,
                                      int64_t nb, int64_t t, int64_t h, int64_t hd) {
  float *stats = (float *)wh__cuda_scratch(ex, sizeof(float) * 2 * (size_t)(nb * h * t));
  if (!stats) return WH_ERR_OUT_OF_MEMORY;
  fl_args a = {qkv, dy, NULL, dqkv, stats, stats + nb * h * t, nb, t, h};
  FL_CASES(fl_backward)
}
