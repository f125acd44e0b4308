/* test_nccl.c - communication on GPU buffers: the NCCL backend (one rank per GPU) and the MPI backend
 * with device buffers staged through the host (any ranks, which may share one GPU), each op against
 * a reference computed here, f32 and bf16, 1 and 1M elements; plus the abort path. Exit 77: no GPU.
 *
 *   test_nccl                      one process (an MPI singleton): NCCL, abort, MPI staging
 *   mpirun -np N test_nccl         N ranks: MPI staging; NCCL and abort too when every local rank
 *                                  has a GPU of its own (NCCL does not take two ranks on one GPU) */
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "whale.h"
#include "src/comm/comm.h"    /* struct wh_comm: the abort test marks a comm broken */
#include "src/base/ctx.h" /* and clears the context's verdict after it */
#include "../common/runner.h"

static wh_ctx *ctx;

/* A CUDA call the case depends on (the runner ends the process: the ranks run each case together). */
#define CUDA(call)                                                                            \
  do {                                                                                        \
    cudaError_t e_ = (call);                                                                  \
    if (e_ != cudaSuccess) wt_abort_at(__FILE__, __LINE__, "%s: %s", #call, cudaGetErrorString(e_)); \
  } while (0)

static const wh_dtype dtypes[] = {WH_F32, WH_BF16};
static const size_t sizes[] = {1, 1u << 20};

static const char *dname(wh_dtype d) { return d == WH_F32 ? "f32" : "bf16"; }
static size_t dsize(wh_dtype d) { return d == WH_BF16 ? 2 : 4; }

/* Small integers: exact in bf16 even summed over several ranks. */
static double value(int rank, size_t i) { return (double)((rank * 7 + (int)(i % 13)) % 16); }

static void put(void *buf, wh_dtype d, size_t i, double v) {
  float f = (float)v;
  if (d == WH_F32) {
    ((float *)buf)[i] = f;
  } else {
    uint32_t u;
    memcpy(&u, &f, 4);
    ((uint16_t *)buf)[i] = (uint16_t)(u >> 16); /* exact for these values */
  }
}

static double get(const void *buf, wh_dtype d, size_t i) {
  if (d == WH_F32) return ((const float *)buf)[i];
  uint32_t u = (uint32_t)((const uint16_t *)buf)[i] << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

static double reduced(int n, size_t i, wh_reduce_op op) {
  double s = 0;
  for (int r = 0; r < n; r++) s += value(r, i);
  return op == WH_REDUCE_AVG ? s / n : s;
}

/* device buffer of count elements holding value(rank, i + first) for i < count */
static void *dev_values(wh_dtype d, size_t count, int rank, size_t first) {
  void *h = malloc(count * dsize(d) + 1), *g = NULL;
  for (size_t i = 0; i < count; i++) put(h, d, i, value(rank, i + first));
  CUDA(cudaMalloc(&g, count * dsize(d) + 1));
  CUDA(cudaMemcpy(g, h, count * dsize(d), cudaMemcpyHostToDevice));
  free(h);
  return g;
}

static void *dev_fill(wh_dtype d, size_t count, double v) {
  void *h = malloc(count * dsize(d) + 1), *g = NULL;
  for (size_t i = 0; i < count; i++) put(h, d, i, v);
  CUDA(cudaMalloc(&g, count * dsize(d) + 1));
  CUDA(cudaMemcpy(g, h, count * dsize(d), cudaMemcpyHostToDevice));
  free(h);
  return g;
}

static void *download(const void *g, wh_dtype d, size_t count) {
  void *h = malloc(count * dsize(d) + 1);
  CUDA(cudaMemcpy(h, g, count * dsize(d), cudaMemcpyDeviceToHost));
  return h;
}

/* The first element where h[i] differs from want(i) by more than tol (relative), or -1. */
typedef double (*ref_fn)(size_t i, const void *arg);
static long first_bad(const void *h, wh_dtype d, size_t count, ref_fn want, const void *arg, double tol) {
  for (size_t i = 0; i < count; i++) {
    double w = want(i, arg), g = get(h, d, i);
    if (!(fabs(g - w) <= tol * (fabs(w) + 1e-30))) return (long)i;
  }
  return -1;
}

typedef struct {
  int n, rank;
  wh_reduce_op op;
  size_t count;
  const size_t *counts;
  int root;
} ref_args;

static double ref_reduced(size_t i, const void *p) {
  const ref_args *a = p;
  return reduced(a->n, i, a->op);
}
static double ref_scattered(size_t i, const void *p) {
  const ref_args *a = p;
  return reduced(a->n, (size_t)a->rank * a->count + i, a->op);
}
/* rank r's block holds value(r, j) for j < counts[r] */
static double ref_gathered(size_t i, const void *p) {
  const ref_args *a = p;
  for (int r = 0; r < a->n; r++) {
    size_t c = a->counts ? a->counts[r] : a->count;
    if (i < c) return value(r, i);
    i -= c;
  }
  return NAN;
}
static double ref_root(size_t i, const void *p) {
  const ref_args *a = p;
  return value(a->root, i);
}
static double ref_own(size_t i, const void *p) {
  const ref_args *a = p;
  return value(a->rank, i);
}

static void check(const char *what, const char *backend, wh_dtype d, size_t count, const void *g, size_t n_elems,
                  ref_fn want, const ref_args *a, double tol) {
  void *h = download(g, d, n_elems);
  long bad = first_bad(h, d, n_elems, want, a, tol);
  EXPECT(bad < 0, "%s %s %s count %zu: element %ld is %g, want %g", backend, what, dname(d), count, bad,
         bad < 0 ? 0.0 : get(h, d, (size_t)bad), bad < 0 ? 0.0 : want((size_t)bad, a));
  free(h);
}

/* Every collective on device buffers; the same on both backends. */
static void collectives(wh_comm *c, const char *backend) {
  int n = wh_comm_size(c), me = wh_comm_rank(c);
  for (size_t di = 0; di < sizeof dtypes / sizeof *dtypes; di++) {
    wh_dtype d = dtypes[di];
    /* ncclAvg may divide where the reference multiplies: a rounding apart at most */
    double avg_tol = d == WH_BF16 ? 1e-2 : 1e-6;
    for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++) {
      size_t count = sizes[si];
      ref_args a = {n, me, WH_REDUCE_SUM, count, NULL, n - 1};

      /* allreduce, out of place: the send buffer is left alone */
      void *send = dev_values(d, count, me, 0), *recv = dev_fill(d, count, -1);
      EXPECT_OK(wh_comm_allreduce(c, send, recv, count, d, WH_REDUCE_SUM));
      check("allreduce sum", backend, d, count, recv, count, ref_reduced, &a, 0);
      check("allreduce send untouched", backend, d, count, send, count, ref_own, &a, 0);
      /* in place, average */
      EXPECT_OK(wh_comm_allreduce(c, NULL, send, count, d, WH_REDUCE_AVG));
      a.op = WH_REDUCE_AVG;
      check("allreduce avg in place", backend, d, count, send, count, ref_reduced, &a, avg_tol);
      a.op = WH_REDUCE_SUM;
      cudaFree(send);
      cudaFree(recv);

      /* two in flight at once, waited in reverse order */
      void *x = dev_values(d, count, me, 0), *y = dev_values(d, count, me, 0);
      wh_request *rx = NULL, *ry = NULL;
      EXPECT_OK(wh_comm_iallreduce(c, NULL, x, count, d, WH_REDUCE_SUM, &rx));
      EXPECT_OK(wh_comm_iallreduce(c, NULL, y, count, d, WH_REDUCE_SUM, &ry));
      if (ry) EXPECT_OK(wh_request_wait(ry));
      if (rx) EXPECT_OK(wh_request_wait(rx));
      check("iallreduce x", backend, d, count, x, count, ref_reduced, &a, 0);
      check("iallreduce y", backend, d, count, y, count, ref_reduced, &a, 0);
      cudaFree(x);
      cudaFree(y);

      /* reduce-scatter: send holds n blocks, values continue across them */
      send = dev_values(d, count * (size_t)n, me, 0);
      recv = dev_fill(d, count, -1);
      EXPECT_OK(wh_comm_reduce_scatter(c, send, recv, count, d, WH_REDUCE_SUM));
      check("reduce_scatter", backend, d, count, recv, count, ref_scattered, &a, 0);
      cudaFree(send);
      cudaFree(recv);

      /* all-gather, equal blocks, from a separate send buffer */
      send = dev_values(d, count, me, 0);
      recv = dev_fill(d, count * (size_t)n, -1);
      EXPECT_OK(wh_comm_allgather(c, send, recv, count, NULL, d));
      check("allgather", backend, d, count, recv, count * (size_t)n, ref_gathered, &a, 0);
      cudaFree(send);
      cudaFree(recv);

      /* all-gather, unequal blocks (count + rank), the own block already in place */
      size_t *counts = malloc(sizeof(size_t) * (size_t)n), total = 0, off = 0;
      for (int r = 0; r < n; r++) {
        counts[r] = count + (size_t)r;
        if (r < me) off += counts[r];
        total += counts[r];
      }
      recv = dev_fill(d, total, -1);
      void *own = dev_values(d, counts[me], me, 0);
      CUDA(cudaMemcpy((char *)recv + off * dsize(d), own, counts[me] * dsize(d), cudaMemcpyDeviceToDevice));
      a.counts = counts;
      EXPECT_OK(wh_comm_allgather(c, NULL, recv, 0, counts, d));
      check("allgather unequal in place", backend, d, count, recv, total, ref_gathered, &a, 0);
      a.counts = NULL;
      cudaFree(own);
      cudaFree(recv);
      free(counts);

      /* broadcast from the last rank */
      void *buf = me == n - 1 ? dev_values(d, count, me, 0) : dev_fill(d, count, -1);
      EXPECT_OK(wh_comm_broadcast(c, buf, count, d, n - 1));
      check("broadcast", backend, d, count, buf, count, ref_root, &a, 0);
      cudaFree(buf);
    }
  }
  EXPECT_OK(wh_comm_barrier(c));
}

/* A ring of point-to-point messages on device buffers: rank r sends to r+1, receives from r-1.
 * Rank 0 sends first and the others receive first, so it works on NCCL's one ordered stream too. */
static void ring(wh_comm *c, const char *backend, int tag) {
  int n = wh_comm_size(c), me = wh_comm_rank(c);
  if (n < 2) return;
  size_t count = 1u << 20;
  wh_dtype d = WH_F32;
  void *send = dev_values(d, count, me, 0), *recv = dev_fill(d, count, -1);
  int right = (me + 1) % n, left = (me + n - 1) % n;
  wh_request *rs = NULL, *rr = NULL;
  if (me == 0) {
    EXPECT_OK(wh_comm_isend(c, send, count, d, right, tag, &rs));
    EXPECT_OK(wh_comm_irecv(c, recv, count, d, left, tag, &rr));
  } else {
    EXPECT_OK(wh_comm_irecv(c, recv, count, d, left, tag, &rr));
    EXPECT_OK(wh_comm_isend(c, send, count, d, right, tag, &rs));
  }
  if (rr) EXPECT_OK(wh_request_wait(rr));
  if (rs) EXPECT_OK(wh_request_wait(rs));
  ref_args a = {n, me, WH_REDUCE_SUM, count, NULL, left};
  check("send/recv ring", backend, d, count, recv, count, ref_root, &a, 0);
  cudaFree(send);
  cudaFree(recv);
}

#ifdef WH_HAVE_NCCL
static void test_nccl(const void *arg) {
  (void)arg;
  wh_comm_options o = WH_COMM_OPTIONS_INIT;
  o.backend = WH_COMM_NCCL;
  o.timeout_s = 120;
  wh_comm *c = NULL;
  EXPECT_OK(wh_comm_create(ctx, &o, &c));
  if (!c) return;
  EXPECT(wh_comm_backend_of(c) == WH_COMM_NCCL, "backend");
  collectives(c, "nccl");
  ring(c, "nccl", 0);
  if (wh_comm_size(c) > 1) {
    /* NCCL has no tags */
    void *b = dev_fill(WH_F32, 4, 0);
    wh_request *rq = NULL;
    wh_status s = wh_comm_isend(c, b, 4, WH_F32, (wh_comm_rank(c) + 1) % wh_comm_size(c), 3, &rq);
    EXPECT(s == WH_ERR_UNSUPPORTED && !rq, "nccl send with tag 3: %s, want unsupported", wh_status_str(s));
    cudaFree(b);
  }

  /* a sub-communicator of rank 0 alone (ncclCommSplit; the others pass NOCOLOR) */
  int only0 = 0;
  wh_comm *sub = NULL;
  EXPECT_OK(wh_comm_split(c, 1, &only0, &sub));
  EXPECT((sub != NULL) == (wh_comm_rank(c) == 0), "split membership");
  if (sub) {
    EXPECT(wh_comm_size(sub) == 1 && wh_comm_rank(sub) == 0, "split: rank %d of %d", wh_comm_rank(sub),
           wh_comm_size(sub));
    collectives(sub, "nccl-split");
    wh_comm_destroy(sub);
  }

  /* host memory is not NCCL's: refused at start, the comm stays usable */
  float h = 1;
  wh_request *rq = NULL;
  wh_status s = wh_comm_iallreduce(c, NULL, &h, 1, WH_F32, WH_REDUCE_SUM, &rq);
  EXPECT(s != WH_OK && !rq, "nccl allreduce of host memory: %s, want an error", wh_status_str(s));
  if (rq) wh_request_wait(rq);
  EXPECT_OK(wh_comm_barrier(c));
  wh_comm_destroy(c);
}

/* The abort path. With several ranks, rank 0 starts an allreduce the others never join: its wait
 * passes the deadline, comm.c breaks the comm, and destroy must abort the hung kernel rather than
 * wait on it. With one rank nothing can hang: a broken comm with an operation queued is aborted. */
static void test_abort(const void *arg) {
  (void)arg;
  wh_comm_options o = WH_COMM_OPTIONS_INIT;
  o.backend = WH_COMM_NCCL;
  o.timeout_s = 10;
  wh_comm *c = NULL;
  EXPECT_OK(wh_comm_create(ctx, &o, &c));
  if (!c) return;
  int n = wh_comm_size(c), me = wh_comm_rank(c);
  size_t count = 1u << 20;
  void *b = dev_values(WH_F32, count, me, 0);
  if (n > 1 && me == 0) {
    wh_request *rq = NULL;
    EXPECT_OK(wh_comm_iallreduce(c, NULL, b, count, WH_F32, WH_REDUCE_SUM, &rq));
    wh_status s = rq ? wh_request_wait(rq) : WH_ERR_INTERNAL;
    EXPECT(s == WH_ERR_TIMEOUT, "an allreduce no peer joins: %s, want timed out (%s)", wh_status_str(s),
           wh_last_error(ctx));
    EXPECT(strstr(wh_last_error(ctx), "allreduce") && strstr(wh_last_error(ctx), "nccl"),
           "the timeout names the op and the backend: %s", wh_last_error(ctx));
    EXPECT(c->broken, "a timed-out wait breaks the comm");
  } else if (n == 1) {
    wh_request *rq = NULL;
    EXPECT_OK(wh_comm_iallreduce(c, NULL, b, count, WH_F32, WH_REDUCE_SUM, &rq));
    c->broken = 1; /* as a failed wait leaves it */
    /* the request stays unfinished on the comm's list: destroy releases it (freeing it here would
     * leave the list pointing at freed memory) */
    (void)rq;
  } else {
    c->broken = 1; /* the peers of the hung rank give up too */
  }
  EXPECT(wh_comm_barrier(c) == WH_ERR_STATE, "a broken comm refuses new operations");
  double t1 = wh__now();
  wh_comm_destroy(c); /* ncclCommAbort */
  EXPECT(wh__now() - t1 < 20, "destroy of a broken comm took %.1f s", wh__now() - t1);
  EXPECT(cudaDeviceSynchronize() == cudaSuccess, "the device is usable after the abort");
  cudaGetLastError();
  cudaFree(b);
  ctx->comm_broken = 0; /* the MPI side is healthy: let wh_ctx_destroy finalise MPI */

  /* a healthy comm with nothing pending: finalised and destroyed, promptly */
  c = NULL;
  EXPECT_OK(wh_comm_create(ctx, &o, &c));
  t1 = wh__now();
  wh_comm_destroy(c);
  EXPECT(wh__now() - t1 < 20, "destroy of a healthy comm took %.1f s", wh__now() - t1);
}

#endif /* WH_HAVE_NCCL */

static void test_mpi_staging(const void *arg) {
  (void)arg;
  wh_comm_options o = WH_COMM_OPTIONS_INIT;
  o.timeout_s = 120;
  wh_comm *c = NULL;
  EXPECT_OK(wh_comm_create(ctx, &o, &c));
  if (!c) return;
  collectives(c, "mpi-staged");
  ring(c, "mpi-staged", 7);

  /* mixed: a host send buffer into a device receive buffer */
  int n = wh_comm_size(c), me = wh_comm_rank(c);
  size_t count = 1000;
  float *hs = malloc(count * sizeof(float));
  for (size_t i = 0; i < count; i++) hs[i] = (float)value(me, i);
  void *recv = dev_fill(WH_F32, count, -1);
  EXPECT_OK(wh_comm_allreduce(c, hs, recv, count, WH_F32, WH_REDUCE_SUM));
  ref_args a = {n, me, WH_REDUCE_SUM, count, NULL, 0};
  check("allreduce host->device", "mpi-staged", WH_F32, count, recv, count, ref_reduced, &a, 0);
  /* and the CPU path is untouched: host buffers only */
  float *hr = malloc(count * sizeof(float));
  EXPECT_OK(wh_comm_allreduce(c, hs, hr, count, WH_F32, WH_REDUCE_SUM));
  long bad = -1;
  for (size_t i = 0; i < count && bad < 0; i++)
    if (hr[i] != (float)reduced(n, i, WH_REDUCE_SUM)) bad = (long)i;
  EXPECT(bad < 0, "host allreduce element %ld", bad);
  free(hs);
  free(hr);
  cudaFree(recv);
  wh_comm_destroy(c);
}

static int all_own; /* every local rank has a GPU of its own (NCCL's condition) */

static int setup(int argc, char **argv) {
  (void)argc, (void)argv;
  int ndev = 0;
  cudaError_t e = cudaGetDeviceCount(&ndev);
  if (e != cudaSuccess || ndev < 1) {
    printf("no CUDA device (%s): skipped\n", e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
    return 77;
  }
  setvbuf(stdout, NULL, _IOLBF, 0); /* lines reach a log even if a later step crashes */
  wh_ctx_options co = WH_CTX_OPTIONS_INIT;
  co.num_threads = 1;
  if (wh_ctx_create(&ctx, &co) != WH_OK) return 1;

  /* the MPI comm first: it initialises MPI and tells the local rank, hence the device */
  wh_comm_options o = WH_COMM_OPTIONS_INIT;
  wh_comm *w = NULL;
  CHECK(wh_comm_create(ctx, &o, &w));
  wt_rank = wh_comm_rank(w);
  int local = wh_comm_local_rank(w), local_size = wh_comm_local_size(w), size = wh_comm_size(w);
  CUDA(cudaSetDevice(local % ndev));
  /* NCCL needs a GPU per rank; every rank must reach the same verdict */
  int own_gpu = local_size <= ndev;
  int *flags = malloc(sizeof(int) * (size_t)size);
  EXPECT_OK(wh_comm_allgather(w, &own_gpu, flags, 1, NULL, WH_I32));
  all_own = 1;
  for (int i = 0; i < size; i++) all_own &= flags[i];
  free(flags);
  wh_comm_destroy(w);
#ifdef WH_HAVE_NCCL
  if (!all_own && wt_rank == 0)
    printf("%d ranks on a node with %d GPU(s): NCCL checks skipped (one GPU per rank)\n", local_size, ndev);
#else
  if (wt_rank == 0) printf("built without NCCL: NCCL checks skipped\n");
#endif
  return 0;
}

static void mpi_staging(const void *arg) {
  test_mpi_staging(arg);
  if (wt_rank == 0) printf("mpi staging: %d passed, %d failed so far\n", wt_passed, wt_failed);
}

/* NCCL and its abort path: one GPU per rank, in a build with NCCL */
static int nccl_here(void) {
#ifdef WH_HAVE_NCCL
  if (all_own) return 1;
  wt_skip("NCCL needs a GPU per rank");
#else
  wt_skip("built without NCCL");
#endif
  return 0;
}

static void nccl(const void *arg) {
  if (!nccl_here()) return;
#ifdef WH_HAVE_NCCL
  test_nccl(arg);
  if (wt_rank == 0) printf("nccl: %d passed, %d failed so far\n", wt_passed, wt_failed);
#else
  (void)arg;
#endif
}

static void nccl_abort(const void *arg) {
  if (!nccl_here()) return;
#ifdef WH_HAVE_NCCL
  test_abort(arg);
#else
  (void)arg;
#endif
}

static void teardown(void) { wh_ctx_destroy(ctx); }

static const wt_case cases[] = {
    {"mpi_staging", mpi_staging, NULL},
    {"nccl", nccl, NULL},
    {"nccl_abort", nccl_abort, NULL},
};

/* No totals: the world communicator is gone before the cases (the abort case breaks comms), so
 * every rank prints its own counts line. */
int main(int argc, char **argv) {
  const wt_suite suite = {"nccl", setup, teardown, NULL, 1};
  return wt_main(&suite, cases, WT_COUNT(cases), argc, argv);
}
