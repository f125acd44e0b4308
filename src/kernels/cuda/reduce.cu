/* reduce.cu - CUDA reductions: sum/mean over any axes, sum_to (undo broadcasting), broadcast_to.
 * Sums accumulate in double. A reduction too long for one thread (or warp) per output is split
 * into chunks whose partial sums are added in chunk order by a second pass, so results do not
 * depend on scheduling. */
#include "common.cuh"

/* A reduction of a contiguous input with its size-1 axes dropped and neighbouring axes of the
 * same kind merged: kept groups give the output index, reduced groups the summed elements. */
struct red_plan {
  int nk, nr;
  int64_t kd[WH_MAX_DIMS], ks[WH_MAX_DIMS]; /* kept group sizes and input strides, outer first */
  int64_t rd[WH_MAX_DIMS], rs[WH_MAX_DIMS]; /* reduced groups; the last one is the inner run */
  int64_t ny, rcount;                       /* outputs, summed elements per output */
  int64_t chunk, splits;                    /* elements per work item, work items per output */
};

/* Sum of one work item: output o, flattened reduced elements [r0, r1), in lanes of L threads. */
template <int L>
static __device__ double red_item(const float *__restrict__ x, const red_plan &p, int64_t o, int64_t r0, int64_t r1,
                                  int lane) {
  int64_t base = 0;
  for (int t = p.nk - 1; t >= 0; t--) {
    base += (o % p.kd[t]) * p.ks[t];
    o /= p.kd[t];
  }
  int64_t rin = p.nr ? p.rd[p.nr - 1] : 1, sin = p.nr ? p.rs[p.nr - 1] : 0;
  double acc = 0;
  for (int64_t r = r0; r < r1;) {
    /* a run along the inner reduced group */
    int64_t ro = r / rin, ri = r - ro * rin, run = rin - ri < r1 - r ? rin - ri : r1 - r;
    int64_t off = base;
    for (int t = p.nr - 2; t >= 0; t--) {
      off += (ro % p.rd[t]) * p.rs[t];
      ro /= p.rd[t];
    }
    const float *q = x + off + ri * sin;
    constexpr int U = L > 1 ? 4 : 8; /* loads in flight, added in order */
    int64_t i = lane;
    for (; i + (U - 1) * L < run; i += U * L) {
      float a[U];
#pragma unroll
      for (int u = 0; u < U; u++) a[u] = q[(i + u * L) * sin];
#pragma unroll
      for (int u = 0; u < U; u++) acc += (double)a[u];
    }
    for (; i < run; i += L) acc += (double)q[i * sin];
    r += run;
  }
  if (L > 1)
    for (int k = L / 2; k > 0; k /= 2) acc += __shfl_down_sync(0xffffffffu, acc, k);
  return acc;
}

/* Work item w: output w % ny, chunk w / ny (neighbouring threads take neighbouring outputs). With
 * one chunk per output the result goes straight to y, otherwise to part[chunk][output]. */
template <int L>
static __global__ void red_kernel(const float *__restrict__ x, red_plan p, int mean, float *__restrict__ y,
                                  double *__restrict__ part) {
  int64_t items = p.ny * p.splits;
  int lane = L > 1 ? (int)(threadIdx.x % L) : 0;
  int64_t stride = (int64_t)gridDim.x * blockDim.x / L;
  for (int64_t w = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) / L; w < items; w += stride) {
    int64_t o = w % p.ny, s = w / p.ny;
    int64_t r0 = s * p.chunk, r1 = r0 + p.chunk < p.rcount ? r0 + p.chunk : p.rcount;
    double acc = red_item<L>(x, p, o, r0, r1, lane);
    if (lane == 0) {
      if (part)
        part[w] = acc;
      else
        y[o] = (float)(mean ? acc / (double)p.rcount : acc);
    }
  }
}

/* T threads (a warp or the block) per output: the chunk sums, strided over the threads, then a
 * fixed tree. */
template <int T>
static __global__ void red_finish(const double *__restrict__ part, int64_t ny, int64_t splits, int64_t rcount,
                                  int mean, float *__restrict__ y) {
  __shared__ double sh[T / 32];
  int t = (int)(threadIdx.x % T);
  int64_t stride = (int64_t)gridDim.x * blockDim.x / T;
  for (int64_t o = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) / T; o < ny; o += stride) {
    double acc = 0;
    for (int64_t s = t; s < splits; s += T) acc += part[s * ny + o];
    for (int k = 16; k > 0; k /= 2) acc += __shfl_down_sync(0xffffffffu, acc, k);
    if (T > 32) {
      __syncthreads();
      if (t % 32 == 0) sh[t / 32] = acc;
      __syncthreads();
      if (t == 0)
        for (int w = 1; w < T / 32; w++) acc += sh[w];
    }
    if (t == 0) y[o] = (float)(mean ? acc / (double)rcount : acc);
  }
}

static wh_status reduce_mask(wh__exec *ex, const wh__tensor *x, uint64_t mask, int mean, float *y, int64_t ny) {
  if (ny == 0) return WH_OK;
  cudaStream_t st = wh__cu_stream(ex);
  red_plan p = {};
  p.ny = 1;
  p.rcount = 1;
  for (int k = 0; k < x->ndim; k++) {
    if (mask >> k & 1)
      p.rcount *= x->d[k];
    else
      p.ny *= x->d[k];
  }
  if (p.rcount == 0) {
    cudaError_t e = cudaMemsetAsync(y, 0, (size_t)ny * sizeof(float), st);
    return e == cudaSuccess ? WH_OK : wh__cu_fail(ex, e, "reduce: zero fill");
  }
  /* group the axes, outer to inner; size-1 axes index nothing and are skipped */
  int kind[WH_MAX_DIMS], ng = 0;
  int64_t gd[WH_MAX_DIMS], gs[WH_MAX_DIMS];
  int64_t s = 1;
  for (int k = x->ndim - 1; k >= 0; k--) {
    int64_t dk = x->d[k];
    int red = (int)(mask >> k & 1);
    if (dk != 1) {
      if (ng && kind[ng - 1] == red) {
        gd[ng - 1] *= dk;
      } else {
        kind[ng] = red;
        gd[ng] = dk;
        gs[ng] = s;
        ng++;
      }
    }
    s *= dk;
  }
  for (int g = ng - 1; g >= 0; g--) {
    if (kind[g]) {
      p.rd[p.nr] = gd[g];
      p.rs[p.nr++] = gs[g];
    } else {
      p.kd[p.nk] = gd[g];
      p.ks[p.nk++] = gs[g];
    }
  }
  /* a warp per work item when the inner run is contiguous and long enough, else a thread */
  int warp = ng && kind[0] && gd[0] >= 32;
  int threads = 256;
  int64_t want = (int64_t)ex->dev->sms * 2048 / (warp ? 32 : 1); /* work items filling the device */
  int64_t min_chunk = warp ? 512 : 32;
  int64_t splits = (want + p.ny - 1) / p.ny;
  int64_t most = (p.rcount + min_chunk - 1) / min_chunk;
  if (splits > most) splits = most;
  if (splits < 1) splits = 1;
  p.chunk = (p.rcount + splits - 1) / splits;
  p.splits = (p.rcount + p.chunk - 1) / p.chunk;
  double *part = NULL;
  if (p.splits > 1) {
    part = (double *)wh__cuda_scratch(ex, (size_t)(p.splits * p.ny) * sizeof(double));
    if (!part) return WH_ERR_OUT_OF_MEMORY;
  }
  unsigned blocks = wh__cu_blocks(ex, p.ny * p.splits * (warp ? 32 : 1), threads);
  if (warp)
    red_kernel<32><<<blocks, threads, 0, st>>>(wh__f32(x), p, mean, y, part);
  else
    red_kernel<1><<<blocks, threads, 0, st>>>(wh__f32(x), p, mean, y, part);
  WH_CU_LAUNCHED(ex, "reduce");
  if (part) {
    if (p.splits > 256)
      red_finish<256><<<wh__cu_blocks(ex, p.ny * 256, 256), 256, 0, st>>>(part, p.ny, p.splits, p.rcount, mean, y);
    else
      red_finish<32><<<wh__cu_blocks(ex, p.ny * 32, 256), 256, 0, st>>>(part, p.ny, p.splits, p.rcount, mean, y);
    WH_CU_LAUNCHED(ex, "reduce: partial sums");
  }
  return WH_OK;
}

extern "C" wh_status wh__cuk_reduce(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out) {
  return reduce_mask(ex, &in[0], (uint64_t)n->ia[0], n->op == WH_OP_MEAN, wh__f32(out), out->numel);
}

extern "C" wh_status wh__cuk_sum_to(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out) {
  (void)n;
  /* reduce the leading extra axes and the axes where the target is 1 */
  const wh__tensor *x = &in[0];
  uint64_t mask = 0;
  int lead = x->ndim - out->ndim;
  for (int k = 0; k < x->ndim; k++)
    if (k < lead || (out->d[k - lead] == 1 && x->d[k] != 1)) mask |= 1ull << k;
  return reduce_mask(ex, x, mask, 0, wh__f32(out), out->numel);
}

/* Output axes (size-1 axes dropped, neighbours merged) with the input stride of each. */
struct bc_plan {
  int nd;
  int64_t od[WH_MAX_DIMS], xs[WH_MAX_DIMS];
};

/* V consecutive outputs per step (V = 4: the inner axis is a multiple of 4 and y is 16-byte
 * aligned, so the four share one decoded offset and one store). */
template <typename I, int V>
static __global__ void bc_kernel(const float *__restrict__ x, float *__restrict__ y, bc_plan p, I total,
                                 float scale) {
  I sl = (I)p.xs[p.nd - 1];
  for (I o = ((I)blockIdx.x * blockDim.x + threadIdx.x) * V; o < total; o += (I)gridDim.x * blockDim.x * V) {
    I rem = o, off = 0;
    for (int k = p.nd - 1; k > 0; k--) {
      I dk = (I)p.od[k];
      off += (rem % dk) * (I)p.xs[k];
      rem /= dk;
    }
    off += rem * (I)p.xs[0];
    if constexpr (V == 4)
      *(float4 *)(y + o) = make_float4(x[off] * scale, x[off + sl] * scale, x[off + 2 * sl] * scale,
                                       x[off + 3 * sl] * scale);
    else
      y[o] = x[off] * scale;
  }
}

extern "C" wh_status wh__cuk_broadcast_to(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out) {
  const wh__tensor *x = &in[0];
  float scale = 1.0f;
  if (n->ia[0] && x->numel) scale = (float)((double)x->numel / (double)out->numel);
  if (out->numel == 0) return WH_OK;
  /* input stride of each output axis (0 where broadcast), merged from the inner axis out */
  bc_plan p = {};
  int64_t s = 1;
  for (int k = out->ndim - 1; k >= 0; k--) {
    int xk = x->ndim - out->ndim + k;
    int64_t dk = out->d[k], sk = (xk < 0 || (x->d[xk] == 1 && dk != 1)) ? 0 : s;
    if (xk >= 0) s *= x->d[xk];
    if (dk == 1) continue;
    if (p.nd && p.xs[p.nd - 1] * p.od[p.nd - 1] == sk && (sk != 0 || p.xs[p.nd - 1] == 0)) {
      p.od[p.nd - 1] *= dk;
    } else {
      p.od[p.nd] = dk;
      p.xs[p.nd++] = sk;
    }
  }
  if (p.nd == 0) {
    p.nd = 1;
    p.od[0] = 1;
    p.xs[0] = 0;
  }
  /* inner axis first above; the kernel wants outer first */
  for (int a = 0, b = p.nd - 1; a < b; a++, b--) {
    int64_t t = p.od[a];
    p.od[a] = p.od[b];
    p.od[b] = t;
    t = p.xs[a];
    p.xs[a] = p.xs[b];
    p.xs[b] = t;
  }
  int v4 = p.od[p.nd - 1] % 4 == 0 && ((uintptr_t)out->data & 15) == 0;
  unsigned blocks = wh__cu_blocks(ex, v4 ? out->numel / 4 : out->numel, 256);
  cudaStream_t st = wh__cu_stream(ex);
  const float *xp = wh__f32(x);
  float *yp = wh__f32(out);
  if (out->numel <= INT32_MAX && x->numel <= INT32_MAX) {
    if (v4)
      bc_kernel<uint32_t, 4><<<blocks, 256, 0, st>>>(xp, yp, p, (uint32_t)out->numel, scale);
    else
      bc_kernel<uint32_t, 1><<<blocks, 256, 0, st>>>(xp, yp, p, (uint32_t)out->numel, scale);
  } else {
    if (v4)
      bc_kernel<int64_t, 4><<<blocks, 256, 0, st>>>(xp, yp, p, out->numel, scale);
    else
      bc_kernel<int64_t, 1><<<blocks, 256, 0, st>>>(xp, yp, p, out->numel, scale);
  }
  WH_CU_LAUNCHED(ex, "broadcast_to");
  return WH_OK;
}
