/* layout.cu - CUDA kernels that move data without arithmetic: reshape (a copy when the runtime
 * cannot alias), permute, slice and its gradient, concat. They work on raw bytes, so every dtype
 * moves the same way; copies use the widest unit (up to 16 bytes) that the sizes and addresses
 * allow. */
#include <stdint.h>

#include "common.cuh"
#include "../kmath.h"

#define THREADS 256
#define SEGS 32 /* concat inputs per launch */

static size_t esize(const wh__tensor *t) { return wh__dtype_size(t->dtype); }

/* The widest unit (1, 2, 4, 8 or 16 bytes) dividing every value or'ed into bits. */
static int unit_of(uint64_t bits) {
  int u = 16;
  while (u > 1 && (bits & (uint64_t)(u - 1))) u >>= 1;
  return u;
}

static uint64_t addr(const void *p) { return (uint64_t)(uintptr_t)p; }

/* ---------------------------------------------------------------- copy */

extern "C" wh_status wh__cuk_copy(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out) {
  (void)n;
  size_t bytes = (size_t)out->numel * esize(out);
  if (bytes == 0 || out->data == in[0].data) return WH_OK;
  cudaError_t e = cudaMemcpyAsync(out->data, in[0].data, bytes, cudaMemcpyDeviceToDevice, wh__cu_stream(ex));
  if (e != cudaSuccess) return wh__cu_fail(ex, e, "copy");
  return WH_OK;
}

/* ------------------------------------------------ slice, slice_grad, concat */

/* Row-wise copy between tensors seen as rows x columns (in units): destination columns
 * [start[j], start[j+1]) of every row r come from src[j] at r * pitch[j] + off[j] + (c - start[j]).
 * Columns of [c0, c0 + width) outside every segment are zero (slice_grad). */
struct segs {
  const void *src[SEGS];
  int64_t start[SEGS + 1];
  int64_t pitch[SEGS], off[SEGS];
  int n;
};

/* Items a thread has in flight per loop trip of the copy kernels (their loads are independent). */
#define ILP 4

template <typename U, typename I>
static __global__ void seg_copy(const __grid_constant__ segs s, U *__restrict__ dst, I rows, I c0, I width,
                                I dpitch) {
  I total = rows * width, stride = (I)gridDim.x * blockDim.x;
  for (I base = (I)blockIdx.x * blockDim.x + threadIdx.x; base < total; base += ILP * stride) {
    U v[ILP];
    I at[ILP];
#pragma unroll
    for (int k = 0; k < ILP; k++) {
      I i = base + k * stride;
      if (i >= total) break;
      I r = i / width;
      I c = c0 + (i - r * width);
      at[k] = r * dpitch + c;
      v[k] = U();
      if (c >= (I)s.start[0] && c < (I)s.start[s.n]) {
        int lo = 0, hi = s.n;
        while (hi - lo > 1) {
          int mid = (lo + hi) >> 1;
          if ((I)s.start[mid] <= c)
            lo = mid;
          else
            hi = mid;
        }
        const U *src = (const U *)s.src[lo];
        v[k] = src[r * (I)s.pitch[lo] + (I)s.off[lo] + (c - (I)s.start[lo])];
      }
    }
#pragma unroll
    for (int k = 0; k < ILP; k++)
      if (base + k * stride < total) dst[at[k]] = v[k];
  }
}

template <typename U>
static wh_status seg_launch_u(wh__exec *ex, const segs &s, void *dst, int64_t rows, int64_t c0, int64_t width,
                              int64_t dpitch, int wide) {
  int64_t total = rows * width;
  unsigned blocks = wh__cu_blocks(ex, total, THREADS);
  if (wide)
    seg_copy<U, int64_t><<<blocks, THREADS, 0, wh__cu_stream(ex)>>>(s, (U *)dst, rows, c0, width, dpitch);
  else
    seg_copy<U, uint32_t><<<blocks, THREADS, 0, wh__cu_stream(ex)>>>(
        s, (U *)dst, (uint32_t)rows, (uint32_t)c0, (uint32_t)width, (uint32_t)dpitch);
  WH_CU_LAUNCHED(ex, "slice/concat copy");
  return WH_OK;
}

/* s in units of u bytes; extent: the largest tensor involved, in units (picks 32-bit indexing). */
static wh_status seg_launch(wh__exec *ex, int u, const segs &s, void *dst, int64_t rows, int64_t c0,
                            int64_t width, int64_t dpitch, int64_t extent) {
  if (rows * width == 0) return WH_OK;
  int wide = extent >= ((int64_t)1 << 31);
  switch (u) {
  case 16: return seg_launch_u<uint4>(ex, s, dst, rows, c0, width, dpitch, wide);
  case 8: return seg_launch_u<uint2>(ex, s, dst, rows, c0, width, dpitch, wide);
  case 4: return seg_launch_u<uint32_t>(ex, s, dst, rows, c0, width, dpitch, wide);
  case 2: return seg_launch_u<uint16_t>(ex, s, dst, rows, c0, width, dpitch, wide);
  default: return seg_launch_u<uint8_t>(ex, s, dst, rows, c0, width, dpitch, wide);
  }
}

static int64_t numel_max(int64_t a, int64_t b) { return a > b ? a : b; }

extern "C" wh_status wh__cuk_slice(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out) {
  if (out->numel == 0) return WH_OK;
  int ax = (int)n->ia[0];
  int64_t outer, inner, len = out->d[ax];
  wh__outer_inner(&in[0], ax, &outer, &inner);
  uint64_t blk = (uint64_t)inner * esize(out); /* bytes per index along the axis */
  int u = unit_of(blk | addr(in[0].data) | addr(out->data));
  int64_t ib = (int64_t)(blk / (uint64_t)u);
  segs s = {};
  s.n = 1;
  s.src[0] = in[0].data;
  s.start[0] = 0;
  s.start[1] = len * ib;
  s.pitch[0] = in[0].d[ax] * ib;
  s.off[0] = n->ia[1] * ib;
  int64_t extent = numel_max(in[0].numel, out->numel) * (int64_t)esize(out) / u;
  return seg_launch(ex, u, s, out->data, outer, 0, len * ib, len * ib, extent);
}

extern "C" wh_status wh__cuk_slice_grad(wh__exec *ex, const wh__node *n, const wh__tensor *in,
                                        wh__tensor *out) {
  if (out->numel == 0) return WH_OK;
  int ax = (int)n->ia[0];
  int64_t outer, inner, len = in[0].d[ax];
  wh__outer_inner(out, ax, &outer, &inner);
  uint64_t blk = (uint64_t)inner * esize(out);
  int u = unit_of(blk | addr(in[0].data) | addr(out->data));
  int64_t ib = (int64_t)(blk / (uint64_t)u);
  /* one pass over the output: the gradient where it lands, zeros around it */
  segs s = {};
  s.n = 1;
  s.src[0] = in[0].data;
  s.start[0] = n->ia[1] * ib;
  s.start[1] = (n->ia[1] + len) * ib;
  s.pitch[0] = len * ib;
  s.off[0] = 0;
  int64_t extent = numel_max(in[0].numel, out->numel) * (int64_t)esize(out) / u;
  return seg_launch(ex, u, s, out->data, outer, 0, out->d[ax] * ib, out->d[ax] * ib, extent);
}

extern "C" wh_status wh__cuk_concat(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out) {
  if (out->numel == 0) return WH_OK;
  int ax = (int)n->ia[0];
  int64_t outer, inner;
  wh__outer_inner(out, ax, &outer, &inner);
  uint64_t blk = (uint64_t)inner * esize(out);
  uint64_t bits = blk | addr(out->data);
  for (int i = 0; i < n->n_in; i++)
    if (in[i].numel) bits |= addr(in[i].data);
  int u = unit_of(bits);
  int64_t ib = (int64_t)(blk / (uint64_t)u), dpitch = out->d[ax] * ib;
  int64_t extent = out->numel * (int64_t)esize(out) / u; /* every input is smaller than the output */
  int64_t off = 0;
  for (int i = 0; i < n->n_in;) {
    /* up to SEGS non-empty inputs per launch, covering output columns [c0, off) */
    segs s = {};
    int64_t c0 = off;
    for (; i < n->n_in && s.n < SEGS; i++) {
      int64_t len = in[i].d[ax];
      if (len == 0) continue;
      s.src[s.n] = in[i].data;
      s.start[s.n] = off * ib;
      s.pitch[s.n] = len * ib;
      s.off[s.n] = 0;
      s.n++;
      off += len;
    }
    if (s.n == 0) break;
    s.start[s.n] = off * ib;
    wh_status st = seg_launch(ex, u, s, out->data, outer, c0 * ib, (off - c0) * ib, dpitch, extent);
    if (st != WH_OK) return st;
  }
  return WH_OK;
}

/* ---------------------------------------------------------------- permute */

/* Output dims (rank r after dropping size-1 axes and merging axes that stay adjacent), the input
 * stride of each, and the output's row-major strides. */
struct perm_geo {
  int r;
  int64_t d[WH_MAX_DIMS], xs[WH_MAX_DIMS], os[WH_MAX_DIMS];
};

/* The last output axis is contiguous in the input: copy runs of len units, decoding the run's
 * input offset from its output row. */
template <typename U, typename I>
static __global__ void perm_runs(const U *__restrict__ x, U *__restrict__ y,
                                 const __grid_constant__ perm_geo g, I len, I total) {
  I stride = (I)gridDim.x * blockDim.x;
  for (I base = (I)blockIdx.x * blockDim.x + threadIdx.x; base < total; base += ILP * stride) {
    U v[ILP];
#pragma unroll
    for (int j = 0; j < ILP; j++) {
      I i = base + j * stride;
      if (i >= total) break;
      I row = i / len;
      I off = i - row * len;
      for (int k = g.r - 2; k >= 0; k--) {
        I dk = (I)g.d[k];
        I q = row / dk;
        off += (row - q * dk) * (I)g.xs[k];
        row = q;
      }
      v[j] = x[off];
    }
#pragma unroll
    for (int j = 0; j < ILP; j++)
      if (base + j * stride < total) y[base + j * stride] = v[j];
  }
}

template <typename U, typename I>
static wh_status perm_runs_launch(wh__exec *ex, const void *x, void *y, const perm_geo &g, int64_t len,
                                  int64_t total) {
  unsigned blocks = wh__cu_blocks(ex, total, THREADS);
  perm_runs<U, I><<<blocks, THREADS, 0, wh__cu_stream(ex)>>>((const U *)x, (U *)y, g, (I)len, (I)total);
  WH_CU_LAUNCHED(ex, "permute");
  return WH_OK;
}

template <typename U>
static wh_status perm_runs_u(wh__exec *ex, const void *x, void *y, const perm_geo &g, int64_t len,
                             int64_t total) {
  if (total < ((int64_t)1 << 31)) return perm_runs_launch<U, uint32_t>(ex, x, y, g, len, total);
  return perm_runs_launch<U, int64_t>(ex, x, y, g, len, total);
}

/* Otherwise a batched transpose through shared memory: 32 x 32 tiles over output axis p (the
 * input's contiguous one) and the last output axis q, so that both the reads and the writes are
 * coalesced; the other axes are decoded once per tile. */
#define TILE 32
#define TROWS 8

template <typename E>
static __global__ void perm_tiles(const E *__restrict__ x, E *__restrict__ y,
                                  const __grid_constant__ perm_geo g, int p, int64_t tp, int64_t tq,
                                  int64_t tiles) {
  __shared__ E sh[TILE][TILE + 1];
  int q = g.r - 1;
  int64_t np = g.d[p], nq = g.d[q], xq = g.xs[q], op = g.os[p];
  int tx = threadIdx.x, ty = threadIdx.y;
  for (int64_t t = blockIdx.x; t < tiles; t += gridDim.x) {
    int64_t rest = t;
    int64_t q0 = (rest % tq) * TILE;
    rest /= tq;
    int64_t p0 = (rest % tp) * TILE;
    rest /= tp;
    int64_t xo = 0, yo = 0;
    for (int k = g.r - 2; k >= 0; k--) {
      if (k == p) continue;
      int64_t c = rest % g.d[k];
      rest /= g.d[k];
      xo += c * g.xs[k];
      yo += c * g.os[k];
    }
    for (int j = ty; j < TILE; j += TROWS)
      if (p0 + tx < np && q0 + j < nq) sh[j][tx] = x[xo + (p0 + tx) + (q0 + j) * xq];
    __syncthreads();
    for (int j = ty; j < TILE; j += TROWS)
      if (p0 + j < np && q0 + tx < nq) y[yo + (p0 + j) * op + (q0 + tx)] = sh[tx][j];
    __syncthreads();
  }
}

template <typename E>
static wh_status perm_tiles_launch(wh__exec *ex, const void *x, void *y, const perm_geo &g, int p) {
  int64_t tp = (g.d[p] + TILE - 1) / TILE, tq = (g.d[g.r - 1] + TILE - 1) / TILE, tiles = tp * tq;
  for (int k = 0; k < g.r - 1; k++)
    if (k != p) tiles *= g.d[k];
  int64_t blocks = tiles, cap = (int64_t)ex->dev->sms * 16;
  if (blocks > cap) blocks = cap;
  perm_tiles<E><<<(unsigned)blocks, dim3(TILE, TROWS), 0, wh__cu_stream(ex)>>>((const E *)x, (E *)y, g, p, tp,
                                                                               tq, tiles);
  WH_CU_LAUNCHED(ex, "permute");
  return WH_OK;
}

extern "C" wh_status wh__cuk_permute(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out) {
  const wh__tensor *x = &in[0];
  if (out->numel == 0) return WH_OK;
  if (x->ndim == 0) return wh__cuk_copy(ex, n, in, out);
  size_t es = esize(x);
  int64_t st[WH_MAX_DIMS];
  wh__row_strides(x, st);
  perm_geo g = {};
  for (int k = 0; k < x->ndim; k++) {
    int64_t dk = out->d[k], xk = st[n->ia[k]];
    if (dk == 1) continue;
    if (g.r > 0 && g.xs[g.r - 1] == xk * dk) { /* follows the previous axis in the input too */
      g.d[g.r - 1] *= dk;
      g.xs[g.r - 1] = xk;
    } else {
      g.d[g.r] = dk;
      g.xs[g.r] = xk;
      g.r++;
    }
  }
  if (g.r <= 1) return wh__cuk_copy(ex, n, in, out); /* the order of elements does not change */
  int64_t s = 1;
  for (int k = g.r - 1; k >= 0; k--) {
    g.os[k] = s;
    s *= g.d[k];
  }
  if (g.xs[g.r - 1] == 1) {
    int64_t run = g.d[g.r - 1] * (int64_t)es;
    int u = unit_of((uint64_t)run | addr(x->data) | addr(out->data));
    for (int k = 0; k < g.r - 1; k++) g.xs[k] = g.xs[k] * (int64_t)es / u; /* multiples of the run */
    int64_t len = run / u, total = out->numel * (int64_t)es / u;
    switch (u) {
    case 16: return perm_runs_u<uint4>(ex, x->data, out->data, g, len, total);
    case 8: return perm_runs_u<uint2>(ex, x->data, out->data, g, len, total);
    case 4: return perm_runs_u<uint32_t>(ex, x->data, out->data, g, len, total);
    case 2: return perm_runs_u<uint16_t>(ex, x->data, out->data, g, len, total);
    default: return perm_runs_u<uint8_t>(ex, x->data, out->data, g, len, total);
    }
  }
  int p = 0;
  while (g.xs[p] != 1) p++; /* the input's innermost axis (of size > 1) is somewhere in the output */
  switch (es) {
  case 8: return perm_tiles_launch<uint64_t>(ex, x->data, out->data, g, p);
  case 4: return perm_tiles_launch<uint32_t>(ex, x->data, out->data, g, p);
  case 2: return perm_tiles_launch<uint16_t>(ex, x->data, out->data, g, p);
  case 1: return perm_tiles_launch<uint8_t>(ex, x->data, out->data, g, p);
  default: return wh__cu_msg(ex, WH_ERR_DTYPE, "permute: elements of %zu bytes are not supported", es);
  }
}
