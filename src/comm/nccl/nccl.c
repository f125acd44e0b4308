/* nccl.c - the NCCL backend: collectives and point-to-point on DEVICE buffers, enqueued on the
 * communicator's own CUDA stream and completed by a CUDA event each. MPI bootstraps it (the unique
 * id, splits) and keeps a control channel on which liveness probes name dead peers.
 *
 * Contracts beyond comm.c's:
 * - Buffers are device memory of the comm's device (host memory fails with WH_ERR_INVALID_ARGUMENT).
 * - The comm owns one non-blocking stream; operations run on it in the order they were started, so
 *   a request completes only after every operation started before it. Work the caller queued on
 *   other streams is not waited for: synchronise it (or the device) before starting an operation.
 * - NCCL matches point-to-point messages by order, not by tag: only tag 0 is accepted (others:
 *   WH_ERR_UNSUPPORTED). Because operations are serialised on the stream, two ranks that both send
 *   to each other before receiving can wait on each other (NCCL buffers small messages only):
 *   order exchanges so one side receives first.
 * - create makes the comm's device the calling thread's current device (cudaSetDevice); every
 *   operation switches to it and back, so the caller's current device is otherwise left alone.
 * - Deadlines: creation and splits poll the non-blocking NCCL communicator until comm->timeout;
 *   operations are bounded by request.c's waits. A broken comm is aborted (ncclCommAbort) at destroy,
 *   a healthy one finalised within min(timeout, 30 s), else aborted: destroy never hangs. */
#include <cuda_runtime_api.h>
#include <mpi.h>
#include <nccl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../base/ctx.h"
#include "../comm.h"
#include "../mpi/liveness.h"

#define DESTROY_BUDGET_S 30.0

typedef struct {
  ncclComm_t nccl;      /* owned */
  cudaStream_t stream;  /* owned: every operation of this comm runs on it */
  int device;           /* -1 until set */
  int *scratch;         /* one device int: the barrier's payload */
  MPI_Comm boot;        /* dup of the host communicator: bootstrap and splits */
  MPI_Comm ctrl;        /* dup: liveness probes only */
  wh__live live;     /* answers liveness probes on ctrl */
} nccl_impl;

/* ---- helpers */

static ncclDataType_t ntype(wh_dtype dt) {
  switch (dt) {
    case WH_F32: return ncclFloat32;
    case WH_F64: return ncclFloat64;
    case WH_I32: return ncclInt32;
    default: return ncclBfloat16;
  }
}

static void mpi_msg(int rc, const char *what, char *msg, size_t cap) {
  char s[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, s, &len);
  snprintf(msg, cap, "%s: %s", what, s);
}

static void nccl_msg(ncclComm_t comm, ncclResult_t r, const char *what, char *msg, size_t cap) {
  const char *last = comm ? ncclGetLastError(comm) : NULL;
  snprintf(msg, cap, "%s: %s%s%s", what, ncclGetErrorString(r), last && *last ? " (" : "", last && *last ? last : "");
  if (last && *last) {
    size_t n = strlen(msg);
    if (n + 1 < cap) msg[n] = ')', msg[n + 1] = '\0';
  }
}

static void cuda_msg(cudaError_t e, const char *what, char *msg, size_t cap) {
  snprintf(msg, cap, "%s: %s (%s)", what, cudaGetErrorString(e), cudaGetErrorName(e));
}

static wh_status from_nccl(ncclResult_t r) {
  switch (r) {
    case ncclSuccess: return WH_OK;
    case ncclInvalidArgument: case ncclInvalidUsage: return WH_ERR_INVALID_ARGUMENT;
    default: return WH_ERR_COMM;
  }
}

/* Make dev current; returns the device to go back to (-1: nothing to restore). */
static int enter_dev(int dev) {
  int prev = -1;
  if (dev < 0 || cudaGetDevice(&prev) != cudaSuccess) {
    cudaGetLastError();
    return -1;
  }
  if (prev == dev) return -1;
  cudaSetDevice(dev);
  return prev;
}

static void leave_dev(int prev) {
  if (prev >= 0) cudaSetDevice(prev);
}

static void pause_briefly(unsigned spins) {
  if (spins > 64) {
    struct timespec ts = {0, 50000};
    nanosleep(&ts, NULL);
  }
}

/* Wait until a non-blocking communicator has finished its pending call (init, split, the enqueue of
 * an operation, finalize), at most until deadline: ncclSuccess, an error, or ncclInProgress when
 * the deadline passed. */
static ncclResult_t settle(ncclComm_t comm, double deadline) {
  for (unsigned spins = 0;; spins++) {
    ncclResult_t st = ncclSuccess, q = ncclCommGetAsyncError(comm, &st);
    if (q != ncclSuccess) return q;
    if (st != ncclInProgress || wh__now() > deadline) return st;
    pause_briefly(spins);
  }
}

/* ---- MPI side: bootstrap communicators and the liveness channel */


static nccl_impl *impl_new(void) {
  nccl_impl *m = calloc(1, sizeof *m);
  if (!m) return NULL;
  m->boot = m->ctrl = MPI_COMM_NULL;
  m->live.ping_req = MPI_REQUEST_NULL;
  m->device = -1;
  return m;
}

/* Free everything m holds; the NCCL communicator is aborted when abort_nccl, else finalised. */
static void impl_free(nccl_impl *m, int abort_nccl, double timeout) {
  if (!m) return;
  int prev = enter_dev(m->device);
  if (m->nccl) {
    if (abort_nccl) {
      ncclCommAbort(m->nccl);
    } else {
      double deadline = wh__now() + (timeout < DESTROY_BUDGET_S ? timeout : DESTROY_BUDGET_S);
      ncclResult_t r = settle(m->nccl, deadline);
      if (r == ncclSuccess) r = ncclCommFinalize(m->nccl);
      if (r == ncclSuccess || r == ncclInProgress) r = settle(m->nccl, deadline);
      if (r == ncclSuccess)
        ncclCommDestroy(m->nccl);
      else
        ncclCommAbort(m->nccl); /* unfinished work or an unresponsive peer: don't wait on it */
    }
    m->nccl = NULL;
  }
  if (m->scratch) cudaFree(m->scratch);
  if (m->stream) cudaStreamDestroy(m->stream);
  cudaGetLastError(); /* a sticky error of an aborted comm must not leak into the caller's next call */
  leave_dev(prev);
  wh__live_close(&m->live);
  int fin = 0;
  MPI_Finalized(&fin);
  if (!fin) {
    if (m->boot != MPI_COMM_NULL) MPI_Comm_free(&m->boot);
    if (m->ctrl != MPI_COMM_NULL) MPI_Comm_free(&m->ctrl);
  }
  free(m);
}

static wh_status mpi_setup(wh_comm *c, nccl_impl *m, MPI_Comm parent, char *msg, size_t cap) {
  MPI_Comm *dups[2] = {&m->boot, &m->ctrl};
  if (wh__mpi_attach(parent, dups, 2, c, msg, cap) != WH_OK) return WH_ERR_COMM;
  if (wh__live_open(&m->live, m->ctrl, c->rank) != WH_OK) {
    snprintf(msg, cap, "could not post the liveness-probe receive");
    return WH_ERR_COMM;
  }
  return WH_OK;
}

/* The comm's device, stream and scratch; leaves dev current. */
static wh_status cuda_setup(nccl_impl *m, int dev, int asked, char *msg, size_t cap) {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess || n == 0) {
    cudaGetLastError();
    snprintf(msg, cap, "no CUDA device: %s", e != cudaSuccess ? cudaGetErrorString(e) : "0 devices visible");
    return WH_ERR_UNSUPPORTED;
  }
  if (dev >= n) {
    snprintf(msg, cap, "CUDA device %d (%s) but this process sees %d device%s", dev,
             asked ? "options.device" : "the local rank", n, n == 1 ? "" : "s");
    return WH_ERR_INVALID_ARGUMENT;
  }
  if ((e = cudaSetDevice(dev)) != cudaSuccess) {
    cuda_msg(e, "cudaSetDevice", msg, cap);
    return WH_ERR_COMM;
  }
  m->device = dev;
  if ((e = cudaStreamCreateWithFlags(&m->stream, cudaStreamNonBlocking)) != cudaSuccess) {
    m->stream = NULL;
    cuda_msg(e, "cudaStreamCreate", msg, cap);
    return WH_ERR_COMM;
  }
  if ((e = cudaMalloc((void **)&m->scratch, sizeof(int))) != cudaSuccess) {
    m->scratch = NULL;
    cuda_msg(e, "cudaMalloc (barrier scratch)", msg, cap);
    return WH_ERR_OUT_OF_MEMORY;
  }
  if ((e = cudaMemset(m->scratch, 0, sizeof(int))) != cudaSuccess) {
    cuda_msg(e, "cudaMemset", msg, cap);
    return WH_ERR_COMM;
  }
  return WH_OK;
}

/* Every rank of comm learns whether all succeeded; a failure elsewhere is named in msg. So no rank
 * goes on into NCCL (and waits there) when another cannot. */
static wh_status agree(MPI_Comm comm, int rank, wh_status mine, char *msg, size_t cap) {
  int in[2] = {mine == WH_OK ? 1 : 0, rank}, out[2] = {1, 0};
  int rc = MPI_Allreduce(in, out, 1, MPI_2INT, MPI_MINLOC, comm);
  if (mine != WH_OK) return mine;
  if (rc != MPI_SUCCESS) {
    mpi_msg(rc, "MPI_Allreduce (agreeing on the set-up)", msg, cap);
    return WH_ERR_COMM;
  }
  if (!out[0]) {
    snprintf(msg, cap, "rank %d could not set up its CUDA device or NCCL (its own error says why)", out[1]);
    return WH_ERR_COMM;
  }
  return WH_OK;
}

wh_status wh__nccl_create(wh_comm *c, const wh_comm_options *o, char *msg, size_t cap) {
  double deadline = wh__now() + c->timeout;
  wh_status est = wh__mpi_ensure_init(c->ctx, o, "MPI (NCCL's bootstrap)", msg, cap);
  if (est != WH_OK) return est;
  nccl_impl *m = impl_new();
  if (!m) return WH_ERR_OUT_OF_MEMORY;
  MPI_Comm parent = o->mpi_comm ? *(const MPI_Comm *)o->mpi_comm : MPI_COMM_WORLD;
  wh_status st = mpi_setup(c, m, parent, msg, cap);
  if (st != WH_OK) {
    impl_free(m, 1, 0);
    return st;
  }
  wh_launch_info li = wh_launch_detect();
  if (li.size > 1 && !o->mpi_comm && c->size != li.size) {
    snprintf(msg, cap,
             "the launcher (%s) started %d processes but MPI sees %d: the NCCL backend bootstraps over MPI and "
             "needs an MPI launcher (mpirun, mpiexec or srun)",
             li.launcher, li.size, c->size);
    impl_free(m, 1, 0);
    return WH_ERR_STATE;
  }

  /* CUDA on every rank first, then the id: nobody enters NCCL unless everybody can */
  int dev = o->device >= 0 ? o->device : c->local_rank;
  st = agree(m->boot, c->rank, cuda_setup(m, dev, o->device >= 0, msg, cap), msg, cap);
  struct {
    int ok;
    ncclUniqueId id;
  } boot;
  memset(&boot, 0, sizeof boot);
  if (st == WH_OK && c->rank == 0) {
    ncclResult_t r = ncclGetUniqueId(&boot.id);
    boot.ok = r == ncclSuccess;
    if (!boot.ok) nccl_msg(NULL, r, "ncclGetUniqueId", msg, cap);
  }
  if (st == WH_OK) {
    int rc = MPI_Bcast(&boot, (int)sizeof boot, MPI_BYTE, 0, m->boot);
    if (rc != MPI_SUCCESS) {
      mpi_msg(rc, "MPI_Bcast (NCCL unique id)", msg, cap);
      st = WH_ERR_COMM;
    } else if (!boot.ok) {
      if (c->rank != 0) snprintf(msg, cap, "rank 0 could not make the NCCL unique id (its own error says why)");
      st = WH_ERR_COMM;
    }
  }
  if (st != WH_OK) {
    impl_free(m, 1, 0);
    return st;
  }

  ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
  cfg.blocking = 0; /* init, operations and finalize return at once; we poll against the deadline */
  ncclResult_t r = ncclCommInitRankConfig(&m->nccl, c->size, boot.id, c->rank, &cfg);
  if (r == ncclSuccess || r == ncclInProgress) r = settle(m->nccl, deadline);
  if (r == ncclInProgress) {
    snprintf(msg, cap,
             "ncclCommInitRankConfig (rank %d of %d, device %d) did not finish within the timeout of %.1f s: some "
             "rank is dead, stopped, or did not create its communicator; aborted",
             c->rank, c->size, m->device, c->timeout);
    impl_free(m, 1, 0);
    return WH_ERR_TIMEOUT;
  }
  if (r != ncclSuccess) {
    char what[96];
    snprintf(what, sizeof what, "ncclCommInitRankConfig (rank %d of %d, device %d)", c->rank, c->size, m->device);
    nccl_msg(m->nccl, r, what, msg, cap);
    impl_free(m, 1, 0);
    return from_nccl(r);
  }
  c->impl = m;
  return WH_OK;
}

/* ---- operations: enqueue on the stream, then an event marks the end */

typedef struct {
  cudaEvent_t ev;
  int recorded; /* the enqueue finished and ev is recorded behind the work */
  int device;
} op_state;

static wh_status op_progress(wh_request *r, int *done, char *msg, size_t cap) {
  nccl_impl *m = r->comm->impl;
  op_state *s = r->state;
  ncclResult_t a = ncclSuccess, q = ncclCommGetAsyncError(m->nccl, &a);
  if (q != ncclSuccess) a = q;
  if (a != ncclSuccess && a != ncclInProgress) {
    nccl_msg(m->nccl, a, "NCCL reports an asynchronous error", msg, cap);
    return WH_ERR_COMM;
  }
  if (!s->recorded) {
    if (a == ncclInProgress) return WH_OK; /* still enqueueing (connecting to peers, ...) */
    int prev = enter_dev(s->device);
    cudaError_t e = cudaEventRecord(s->ev, m->stream);
    leave_dev(prev);
    if (e != cudaSuccess) {
      cuda_msg(e, "cudaEventRecord", msg, cap);
      return WH_ERR_COMM;
    }
    s->recorded = 1;
  }
  cudaError_t e = cudaEventQuery(s->ev);
  if (e == cudaSuccess) {
    *done = 1;
    return WH_OK;
  }
  if (e == cudaErrorNotReady) return WH_OK;
  cudaGetLastError();
  cuda_msg(e, "cudaEventQuery (the operation's kernels)", msg, cap);
  return WH_ERR_COMM;
}

static void op_release(wh_request *r) {
  op_state *s = r->state;
  if (!s) return;
  if (s->ev) cudaEventDestroy(s->ev); /* safe while pending: freed once it completes */
  free(s);
  r->state = NULL;
}

/* Prepare r: its event, the comm's device current (*prev to restore), an earlier enqueue finished. */
static wh_status op_begin(wh_comm *c, wh_request *r, int *prev) {
  nccl_impl *m = c->impl;
  op_state *s = calloc(1, sizeof *s);
  if (!s) return WH_ERR_OUT_OF_MEMORY;
  *prev = enter_dev(m->device);
  s->device = m->device;
  cudaError_t e = cudaEventCreateWithFlags(&s->ev, cudaEventDisableTiming);
  if (e != cudaSuccess) {
    cudaGetLastError();
    wh__log(c->ctx, WH_LOG_ERROR, "nccl %s: cudaEventCreate: %s", r->op, cudaGetErrorString(e));
    leave_dev(*prev);
    free(s);
    return WH_ERR_COMM;
  }
  /* NCCL takes no new call while a non-blocking one is still being enqueued */
  ncclResult_t a = settle(m->nccl, r->start + c->timeout);
  if (a != ncclSuccess) {
    char msg[384];
    nccl_msg(m->nccl, a, a == ncclInProgress ? "an earlier operation is still being enqueued after the timeout"
                                             : "the communicator is in error",
             msg, sizeof msg);
    wh__log(c->ctx, WH_LOG_ERROR, "nccl %s on rank %d: %s", r->op, c->rank, msg);
    cudaEventDestroy(s->ev);
    leave_dev(*prev);
    free(s);
    return a == ncclInProgress ? WH_ERR_TIMEOUT : WH_ERR_COMM;
  }
  r->state = s;
  r->progress = op_progress;
  r->release = op_release;
  return WH_OK;
}

/* After the NCCL call(s): record the event now when the enqueue is complete, else in progress. */
static wh_status op_end(wh_comm *c, wh_request *r, ncclResult_t res, int prev, const char *call) {
  nccl_impl *m = c->impl;
  op_state *s = r->state;
  wh_status st = WH_OK;
  if (res == ncclSuccess) {
    cudaError_t e = cudaEventRecord(s->ev, m->stream);
    if (e != cudaSuccess) {
      cudaGetLastError();
      wh__log(c->ctx, WH_LOG_ERROR, "nccl %s on rank %d: cudaEventRecord: %s", r->op, c->rank, cudaGetErrorString(e));
      st = WH_ERR_COMM;
    } else {
      s->recorded = 1;
    }
  } else if (res != ncclInProgress) {
    char msg[384];
    nccl_msg(m->nccl, res, call, msg, sizeof msg);
    /* comm.c's start error names the op and the status; the NCCL detail goes to the log */
    wh__log(c->ctx, WH_LOG_ERROR, "nccl %s of %zu bytes on rank %d: %s", r->op, r->bytes, c->rank, msg);
    st = from_nccl(res);
  }
  leave_dev(prev);
  return st;
}

/* NCCL reads and writes memory of the comm's device (or managed memory); anything else is refused
 * at the start instead of being left to NCCL's kernels. */
static wh_status dev_buf(wh_comm *c, const char *op, const void *p, size_t count) {
  if (!p || !count) return WH_OK;
  nccl_impl *m = c->impl;
  struct cudaPointerAttributes a;
  if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
    cudaGetLastError();
    a.type = cudaMemoryTypeUnregistered;
  }
  if (a.type == cudaMemoryTypeManaged || (a.type == cudaMemoryTypeDevice && a.device == m->device)) return WH_OK;
  wh__log(c->ctx, WH_LOG_ERROR, "nccl %s on rank %d: buffer %p is %s, not memory of CUDA device %d", op, c->rank, p,
          a.type == cudaMemoryTypeDevice ? "on another device" : "host memory", m->device);
  return WH_ERR_INVALID_ARGUMENT;
}

#define DEV_BUF(c_, op_, p_, n_)                        \
  do {                                                  \
    wh_status d_ = dev_buf((c_), (op_), (p_), (n_));    \
    if (d_ != WH_OK) return d_;                         \
  } while (0)

#define OP(c_, r_, call_name, expr)                          \
  do {                                                       \
    int prev_;                                               \
    wh_status s_ = op_begin((c_), (r_), &prev_);             \
    if (s_ != WH_OK) return s_;                              \
    nccl_impl *m_ = (c_)->impl;                              \
    (void)m_;                                                \
    ncclResult_t res_ = (expr);                              \
    return op_end((c_), (r_), res_, prev_, (call_name));     \
  } while (0)

static wh_status n_isend(wh_comm *c, const void *buf, size_t count, wh_dtype dt, int peer, int tag, wh_request *r) {
  if (tag != 0) {
    wh__log(c->ctx, WH_LOG_ERROR, "nccl send on rank %d: tag %d: NCCL matches messages by order, only tag 0 is "
            "supported", c->rank, tag);
    return WH_ERR_UNSUPPORTED;
  }
  DEV_BUF(c, "send", buf, count);
  OP(c, r, "ncclSend", count ? ncclSend(buf, count, ntype(dt), peer, m_->nccl, m_->stream) : ncclSuccess);
}

static wh_status n_irecv(wh_comm *c, void *buf, size_t count, wh_dtype dt, int peer, int tag, wh_request *r) {
  if (tag != 0) {
    wh__log(c->ctx, WH_LOG_ERROR, "nccl recv on rank %d: tag %d: NCCL matches messages by order, only tag 0 is "
            "supported", c->rank, tag);
    return WH_ERR_UNSUPPORTED;
  }
  DEV_BUF(c, "recv", buf, count);
  OP(c, r, "ncclRecv", count ? ncclRecv(buf, count, ntype(dt), peer, m_->nccl, m_->stream) : ncclSuccess);
}

static wh_status n_iallreduce(wh_comm *c, const void *send, void *recv, size_t count, wh_dtype dt, wh_reduce_op op,
                              wh_request *r) {
  DEV_BUF(c, "allreduce", send, count);
  DEV_BUF(c, "allreduce", recv, count);
  OP(c, r, "ncclAllReduce",
     count ? ncclAllReduce(send ? send : recv, recv, count, ntype(dt), op == WH_REDUCE_AVG ? ncclAvg : ncclSum,
                           m_->nccl, m_->stream)
           : ncclSuccess);
}

static wh_status n_ireduce_scatter(wh_comm *c, const void *send, void *recv, size_t recvcount, wh_dtype dt,
                                   wh_reduce_op op, wh_request *r) {
  DEV_BUF(c, "reduce_scatter", send, recvcount);
  DEV_BUF(c, "reduce_scatter", recv, recvcount);
  OP(c, r, "ncclReduceScatter",
     recvcount ? ncclReduceScatter(send, recv, recvcount, ntype(dt), op == WH_REDUCE_AVG ? ncclAvg : ncclSum,
                                   m_->nccl, m_->stream)
               : ncclSuccess);
}

/* Equal blocks: ncclAllGather. Unequal ones: one broadcast per rank in a group (NCCL has no
 * all-gather-v); every rank knows every count, so all skip the same empty blocks. */
static ncclResult_t gather(wh_comm *c, nccl_impl *m, const void *send, void *recv, const size_t *counts, wh_dtype dt) {
  size_t es = wh__comm_dtype_size(dt), total = 0, mine = 0;
  int equal = 1;
  for (int i = 0; i < c->size; i++) {
    if (i == c->rank) mine = total;
    total += counts[i];
    equal &= counts[i] == counts[0];
  }
  if (total == 0) return ncclSuccess;
  char *out = recv;
  if (equal) return ncclAllGather(send ? send : out + mine * es, recv, counts[0], ntype(dt), m->nccl, m->stream);
  ncclResult_t res = ncclGroupStart();
  if (res != ncclSuccess) return res;
  size_t off = 0;
  for (int i = 0; i < c->size && res == ncclSuccess; i++) {
    if (counts[i]) {
      const void *src = i == c->rank && send ? send : out + off * es;
      res = ncclBroadcast(src, out + off * es, counts[i], ntype(dt), i, m->nccl, m->stream);
    }
    off += counts[i];
  }
  ncclResult_t end = ncclGroupEnd(); /* always closes the group, also after an error inside */
  return res != ncclSuccess ? res : end;
}

static wh_status n_iallgather(wh_comm *c, const void *send, void *recv, const size_t *counts, wh_dtype dt,
                              wh_request *r) {
  size_t total = 0;
  for (int i = 0; i < c->size; i++) total += counts[i];
  DEV_BUF(c, "allgather", send, counts[c->rank]);
  DEV_BUF(c, "allgather", recv, total);
  OP(c, r, "ncclAllGather / grouped ncclBroadcast", gather(c, m_, send, recv, counts, dt));
}

static wh_status n_ibroadcast(wh_comm *c, void *buf, size_t count, wh_dtype dt, int root, wh_request *r) {
  DEV_BUF(c, "broadcast", buf, count);
  OP(c, r, "ncclBroadcast", count ? ncclBroadcast(buf, buf, count, ntype(dt), root, m_->nccl, m_->stream) : ncclSuccess);
}

static wh_status n_ibarrier(wh_comm *c, wh_request *r) {
  OP(c, r, "ncclAllReduce (barrier)", ncclAllReduce(m_->scratch, m_->scratch, 1, ncclInt32, ncclSum, m_->nccl,
                                                    m_->stream));
}

/* ---- liveness, over MPI: NCCL cannot say which peer is gone */

static void n_service(wh_comm *c) {
  nccl_impl *m = c->impl;
  wh__live_service(&m->live);
}

static void n_probe(wh_comm *c, const int *peers, int n, int *alive, double budget) {
  nccl_impl *m = c->impl;
  wh__live_probe(&m->live, peers, n, alive, budget);
}

/* ---- split: an MPI split for the control channel, ncclCommSplit for the data */

static wh_status n_split(wh_comm *parent, int n, const int *ranks, int member, wh_comm *child, char *msg,
                         size_t cap) {
  nccl_impl *pm = parent->impl;
  double deadline = wh__now() + parent->timeout;
  int key = 0;
  for (int i = 0; i < n; i++)
    if (ranks[i] == parent->rank) key = i;
  MPI_Comm sub = MPI_COMM_NULL;
  int rc = MPI_Comm_split(pm->boot, member ? 0 : MPI_UNDEFINED, key, &sub);
  if (rc != MPI_SUCCESS) {
    mpi_msg(rc, "MPI_Comm_split", msg, cap);
    return WH_ERR_COMM;
  }
  nccl_impl *cm = NULL;
  wh_status st = WH_OK;
  if (member) {
    cm = impl_new();
    if (!cm) {
      snprintf(msg, cap, "out of memory");
      st = WH_ERR_OUT_OF_MEMORY;
    } else {
      st = mpi_setup(child, cm, sub, msg, cap);
      if (st == WH_OK) {
        int prev = enter_dev(pm->device);
        cudaError_t e = cudaStreamCreateWithFlags(&cm->stream, cudaStreamNonBlocking);
        if (e == cudaSuccess) {
          cm->device = pm->device;
          e = cudaMalloc((void **)&cm->scratch, sizeof(int));
          if (e == cudaSuccess) e = cudaMemset(cm->scratch, 0, sizeof(int));
          else cm->scratch = NULL;
        } else {
          cm->stream = NULL;
        }
        if (e != cudaSuccess) {
          cudaGetLastError();
          cuda_msg(e, "the child's stream or scratch", msg, cap);
          st = WH_ERR_COMM;
        }
        leave_dev(prev);
      }
    }
    MPI_Comm_free(&sub);
  }
  /* every parent rank enters ncclCommSplit, or none does */
  st = agree(pm->boot, parent->rank, st, msg, cap);
  if (st != WH_OK) {
    impl_free(cm, 1, 0);
    return st;
  }
  int prev = enter_dev(pm->device);
  ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
  cfg.blocking = 0;
  ncclComm_t nc = NULL;
  ncclResult_t r = settle(pm->nccl, deadline);
  if (r == ncclSuccess) r = ncclCommSplit(pm->nccl, member ? 0 : NCCL_SPLIT_NOCOLOR, key, &nc, &cfg);
  if (r == ncclSuccess || r == ncclInProgress) {
    r = settle(pm->nccl, deadline);
    if (r == ncclSuccess && nc) r = settle(nc, deadline);
  }
  leave_dev(prev);
  if (r != ncclSuccess) {
    if (r == ncclInProgress)
      snprintf(msg, cap, "ncclCommSplit did not finish within the timeout of %.1f s: some rank is dead, stopped, "
               "or did not split; the parent is broken", parent->timeout);
    else
      nccl_msg(nc ? nc : pm->nccl, r, "ncclCommSplit", msg, cap);
    if (nc) {
      int p2 = enter_dev(pm->device);
      ncclCommAbort(nc);
      leave_dev(p2);
    }
    impl_free(cm, 1, 0);
    /* the parent took part in an unfinished collective split: only destroy (abort) is safe now */
    parent->broken = 1;
    parent->ctx->comm_broken = 1;
    return r == ncclInProgress ? WH_ERR_TIMEOUT : WH_ERR_COMM;
  }
  if (!member) return WH_OK;
  cm->nccl = nc;
  child->impl = cm;
  return WH_OK;
}

static void n_destroy(wh_comm *c) {
  impl_free(c->impl, c->broken, c->timeout);
  c->impl = NULL;
}

const wh__comm_ops wh__nccl_ops = {
    "nccl", n_isend, n_irecv, n_iallreduce, n_ireduce_scatter, n_iallgather, n_ibroadcast, n_ibarrier,
    n_split, n_service, n_probe, n_destroy,
};
