/* comm.c - the public communication API over the backends: argument checks, requests with
 * deadlines, naming the peers that stopped answering, blocking forms, gradient fusion. */
#include "comm.h"

#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../base/ctx.h"
#include "wh_config.h"
#ifdef WH_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

int wh__comm_dtype_ok(wh_dtype dt) { return dt == WH_F32 || dt == WH_F64 || dt == WH_I32 || dt == WH_BF16; }

size_t wh__comm_dtype_size(wh_dtype dt) {
  switch (dt) {
    case WH_F32: case WH_I32: return 4;
    case WH_F64: return 8;
    case WH_BF16: case WH_F16: return 2;
  }
  return 0;
}

static float bf16_to_f32(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

static uint16_t f32_to_bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
  u += 0x7fffu + ((u >> 16) & 1u); /* round to nearest even */
  return (uint16_t)(u >> 16);
}

void wh__reduce_add(void *dst, const void *src, size_t n, wh_dtype dt) {
  switch (dt) {
    case WH_F32: {
      float *d = dst;
      const float *s = src;
      for (size_t i = 0; i < n; i++) d[i] += s[i];
      break;
    }
    case WH_F64: {
      double *d = dst;
      const double *s = src;
      for (size_t i = 0; i < n; i++) d[i] += s[i];
      break;
    }
    case WH_I32: {
      int32_t *d = dst;
      const int32_t *s = src;
      for (size_t i = 0; i < n; i++) d[i] = (int32_t)((uint32_t)d[i] + (uint32_t)s[i]); /* wraps, never UB */
      break;
    }
    case WH_BF16: {
      uint16_t *d = dst;
      const uint16_t *s = src;
      for (size_t i = 0; i < n; i++) d[i] = f32_to_bf16(bf16_to_f32(d[i]) + bf16_to_f32(s[i]));
      break;
    }
    default: break;
  }
}

void wh__reduce_scale(void *dst, size_t n, wh_dtype dt, double k) {
  switch (dt) {
    case WH_F32: {
      float *d = dst, kf = (float)k;
      for (size_t i = 0; i < n; i++) d[i] *= kf;
      break;
    }
    case WH_F64: {
      double *d = dst;
      for (size_t i = 0; i < n; i++) d[i] *= k;
      break;
    }
    case WH_I32: {
      /* an integer average truncates toward zero */
      int32_t *d = dst;
      int64_t div = (int64_t)(1.0 / k + 0.5);
      for (size_t i = 0; i < n; i++) d[i] = (int32_t)(d[i] / div);
      break;
    }
    case WH_BF16: {
      uint16_t *d = dst;
      for (size_t i = 0; i < n; i++) d[i] = f32_to_bf16((float)(bf16_to_f32(d[i]) * k));
      break;
    }
    default: break;
  }
}

static void req_free(wh_request *r);

/* ---- creation */

wh_status wh_comm_create(wh_ctx *ctx, const wh_comm_options *opts, wh_comm **out) {
  if (!ctx || !out) return WH_ERR_INVALID_ARGUMENT;
  *out = NULL;
  wh_comm_options o = WH_COMM_OPTIONS_INIT;
  if (wh__options_in(ctx, "wh_comm_create", &o, opts, sizeof o) != WH_OK) return WH_ERR_INVALID_ARGUMENT;
  if (o.timeout_s < 0 || (o.backend != WH_COMM_MPI && o.backend != WH_COMM_NCCL)) {
    wh__ctx_set_error(ctx, "wh_comm_create: bad options (backend %d, timeout %g s)", (int)o.backend, o.timeout_s);
    return WH_ERR_INVALID_ARGUMENT;
  }
  if (o.timeout_s == 0) {
    const char *e = getenv("WH_COMM_TIMEOUT_S");
    o.timeout_s = e && atof(e) > 0 ? atof(e) : 600.0;
  }
  wh_comm *c = calloc(1, sizeof *c);
  if (!c) return WH_ERR_OUT_OF_MEMORY;
  c->ctx = ctx;
  c->timeout = o.timeout_s;
  c->backend = o.backend;
  char msg[512] = "";
  wh_status st;
  if (o.backend == WH_COMM_MPI) {
    c->ops = &wh__mpi_ops;
    st = wh__mpi_create(c, &o, msg, sizeof msg);
  } else {
#ifdef WH_HAVE_NCCL
    c->ops = &wh__nccl_ops;
    st = wh__nccl_create(c, &o, msg, sizeof msg);
#else
    st = WH_ERR_UNSUPPORTED;
    snprintf(msg, sizeof msg, "this build has no NCCL backend (meson option nccl; needs CUDA and NCCL)");
#endif
  }
  if (st != WH_OK) {
    wh__ctx_set_error(ctx, "wh_comm_create (%s): %s", o.backend == WH_COMM_MPI ? "mpi" : "nccl", msg);
    free(c);
    return st;
  }
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  c->oversubscribed = cores > 0 && c->local_size > cores;
  wh__log(ctx, WH_LOG_INFO, "comm %s: rank %d of %d (local %d of %d), timeout %g s", c->ops->name, c->rank, c->size,
          c->local_rank, c->local_size, c->timeout);
  *out = c;
  return WH_OK;
}

void wh_comm_destroy(wh_comm *c) {
  if (!c) return;
  while (c->active) req_free(c->active); /* requests the caller never waited for */
  if (c->ops && c->ops->destroy) c->ops->destroy(c);
  free(c);
}

int wh_comm_rank(const wh_comm *c) { return c ? c->rank : -1; }
int wh_comm_size(const wh_comm *c) { return c ? c->size : 0; }
int wh_comm_local_rank(const wh_comm *c) { return c ? c->local_rank : -1; }
int wh_comm_local_size(const wh_comm *c) { return c ? c->local_size : 0; }
wh_comm_backend wh_comm_backend_of(const wh_comm *c) { return c ? c->backend : WH_COMM_MPI; }

static wh_status usable(wh_comm *c, const char *op) {
  if (!c) return WH_ERR_INVALID_ARGUMENT;
  if (c->broken) {
    wh__ctx_set_error(c->ctx, "%s: the communicator is broken by an earlier failure; destroy it", op);
    return WH_ERR_STATE;
  }
  return WH_OK;
}

wh_status wh_comm_split(wh_comm *parent, int n, const int *ranks, wh_comm **out) {
  wh_status st = usable(parent, "wh_comm_split");
  if (st != WH_OK) return st;
  if (!out || n < 1 || n > parent->size || !ranks) {
    wh__ctx_set_error(parent->ctx, "wh_comm_split: need 1..%d ranks and an out pointer, got %d", parent->size, n);
    return WH_ERR_INVALID_ARGUMENT;
  }
  *out = NULL;
  int member = 0, new_rank = -1;
  for (int i = 0; i < n; i++) {
    if (ranks[i] < 0 || ranks[i] >= parent->size) {
      wh__ctx_set_error(parent->ctx, "wh_comm_split: rank %d at index %d is outside 0..%d", ranks[i], i,
                        parent->size - 1);
      return WH_ERR_INVALID_ARGUMENT;
    }
    for (int k = 0; k < i; k++)
      if (ranks[k] == ranks[i]) {
        wh__ctx_set_error(parent->ctx, "wh_comm_split: rank %d listed twice", ranks[i]);
        return WH_ERR_INVALID_ARGUMENT;
      }
    if (ranks[i] == parent->rank) member = 1, new_rank = i;
  }
  wh_comm *c = calloc(1, sizeof *c);
  if (!c) return WH_ERR_OUT_OF_MEMORY;
  *c = (wh_comm){.ctx = parent->ctx, .ops = parent->ops, .backend = parent->backend, .rank = new_rank, .size = n,
                 .local_rank = 0, .local_size = 1, .timeout = parent->timeout, .dev_bufs = parent->dev_bufs,
                 .oversubscribed = parent->oversubscribed};
  char msg[512] = "";
  st = parent->ops->split(parent, n, ranks, member, c, msg, sizeof msg);
  if (st != WH_OK) {
    wh__ctx_set_error(parent->ctx, "wh_comm_split: %s", msg);
    free(c);
    return st;
  }
  if (!member) {
    free(c);
    return WH_OK;
  }
  *out = c;
  return WH_OK;
}

/* ---- requests */

static wh_request *req_new(wh_comm *c, const char *op, size_t bytes, int peer) {
  wh_request *r = calloc(1, sizeof *r);
  if (!r) return NULL;
  r->comm = c;
  r->op = op;
  r->bytes = bytes;
  r->peer = peer;
  r->waiting_on = peer;
  r->start = wh__now();
  r->next = c->active;
  c->active = r;
  return r;
}

static void req_free(wh_request *r) {
  if (!r) return;
  for (wh_request **p = &r->comm->active; *p; p = &(*p)->next)
    if (*p == r) {
      *p = r->next;
      break;
    }
  if (r->release) r->release(r);
  free(r);
}

/* After a deadline: ask the peers in question (or all) whether they answer, and say who did not. */
static wh_status fail_timeout(wh_request *r, double waited) {
  wh_comm *c = r->comm;
  int np = 0, silent = 0;
  int *peers = calloc((size_t)c->size + 1, sizeof(int)), *alive = calloc((size_t)c->size + 1, sizeof(int));
  char list[512] = "", who[640] = "the liveness probe could not run (out of memory)";
  if (peers && alive) {
    /* probe everyone: in a ring the awaited neighbour may be alive and stuck behind the dead one */
    for (int i = 0; i < c->size; i++)
      if (i != c->rank) peers[np++] = i;
    c->ops->probe(c, peers, np, alive, 2.0);
    size_t o = 0;
    for (int i = 0; i < np && o < sizeof list - 16; i++)
      if (!alive[i]) o += (size_t)snprintf(list + o, sizeof list - o, "%s%d", silent++ ? ", " : "", peers[i]);
    if (silent)
      snprintf(who, sizeof who, "peer rank%s %s did not answer a liveness probe (dead or stopped)", silent > 1 ? "s" : "",
               list);
    else
      snprintf(who, sizeof who, "every peer answers a liveness probe: some rank is in another operation or busy");
  }
  free(peers);
  free(alive);
  c->broken = 1;
  c->ctx->comm_broken = 1;
  char await[48] = "";
  if (r->waiting_on >= 0) snprintf(await, sizeof await, ", waiting on rank %d", r->waiting_on);
  wh__ctx_set_error(c->ctx, "%s of %zu bytes on rank %d of %d (%s%s): no progress after %.1f s (timeout %.1f s): %s",
                    r->op, r->bytes, c->rank, c->size, c->ops->name, await, waited, c->timeout, who);
  return WH_ERR_TIMEOUT;
}

static wh_status step(wh_request *r, int *done) {
  char msg[512] = "";
  wh_status st = r->progress(r, done, msg, sizeof msg);
  if (st != WH_OK) {
    r->comm->broken = 1;
    r->comm->ctx->comm_broken = 1;
    char peer[32] = "";
    if (r->waiting_on >= 0) snprintf(peer, sizeof peer, ", peer rank %d", r->waiting_on);
    wh__ctx_set_error(r->comm->ctx, "%s of %zu bytes on rank %d of %d (%s%s) failed after %.1f s: %s", r->op,
                      r->bytes, r->comm->rank, r->comm->size, r->comm->ops->name, peer, wh__now() - r->start, msg);
  }
  return st;
}

/* Advance every unfinished request of the comm; a failure is kept on its request. */
static void progress_all(wh_comm *c) {
  for (wh_request *q = c->active; q; q = q->next) {
    if (q->done || !q->progress) continue;
    int d = 0;
    wh_status st = step(q, &d);
    if (st != WH_OK) {
      q->done = 1;
      q->status = st;
      memcpy(q->err, c->ctx->err, sizeof q->err - 1);
      q->err[sizeof q->err - 1] = 0;
    } else if (d) {
      q->done = 1;
      q->status = WH_OK;
    }
  }
}

/* One round for r: advance everything, then judge r. Returns 1 when r has an outcome in *st. */
static int round_for(wh_request *r, wh_status *st) {
  wh_comm *c = r->comm;
  progress_all(c);
  if (r->done) {
    *st = r->status;
    if (*st != WH_OK) wh__ctx_set_error(c->ctx, "%s", r->err);
    return 1;
  }
  if (c->broken) {
    char prev[1024]; /* the failure that broke it: copied, the message is rewritten in place */
    snprintf(prev, sizeof prev, "%s", c->ctx->err);
    wh__ctx_set_error(c->ctx, "%s of %zu bytes on rank %d of %d (%s): the communicator broke while it waited (%s)",
                      r->op, r->bytes, c->rank, c->size, c->ops->name, prev);
    *st = WH_ERR_COMM;
    return 1;
  }
  c->ops->service(c);
  /* the deadline is about silence: it runs from the first wait (a collective may be started long
   * before anyone waits on it) or from the last time the request was seen advancing */
  double now = wh__now();
  if (r->last == 0 || r->ticks != r->seen_ticks) {
    r->last = now;
    r->seen_ticks = r->ticks;
  }
  double waited = now - r->last;
  if (waited > c->timeout) {
    *st = fail_timeout(r, waited);
    return 1;
  }
  return 0;
}

wh_status wh_request_test(wh_request *r, int *done) {
  if (!r || !done) return WH_ERR_INVALID_ARGUMENT;
  wh_status st = WH_OK;
  *done = round_for(r, &st);
  if (*done) req_free(r);
  return st;
}

wh_status wh_request_wait(wh_request *r) {
  if (!r) return WH_ERR_INVALID_ARGUMENT;
  wh_status st = WH_OK;
  for (unsigned spins = 0;; spins++) {
    if (round_for(r, &st)) break;
    double waited = wh__now() - r->last;
    /* ranks can outnumber cores: let a peer on this core run, and when they do, back off in long
     * waits too (with a core each, a sleep only adds latency) */
    if (spins > 64) sched_yield();
    if (waited > 0.01 && r->comm->oversubscribed) {
      struct timespec ts = {0, 100000};
      nanosleep(&ts, NULL);
    }
  }
  req_free(r);
  return st;
}

/* Start a request through a backend call that fills r_; on failure name the op and the rank. */
#define START(opname, bytes_, peer_, call)                                                          \
  do {                                                                                              \
    wh_request *r_ = req_new(c, opname, (bytes_), (peer_));                                         \
    if (!r_) return WH_ERR_OUT_OF_MEMORY;                                                           \
    wh_status s_ = (call);                                                                          \
    if (s_ != WH_OK) {                                                                              \
      wh__ctx_set_error(c->ctx, "%s: could not start on rank %d (%s): %s", opname, c->rank, c->ops->name, \
                        wh_status_str(s_));                                                         \
      req_free(r_);                                                                                 \
      return s_;                                                                                    \
    }                                                                                               \
    *req = r_;                                                                                      \
    return WH_OK;                                                                                   \
  } while (0)

static wh_status check_buf(wh_comm *c, const char *op, const void *buf, size_t count, wh_dtype dt, wh_request **req) {
  wh_status st = usable(c, op);
  if (st != WH_OK) return st;
  if (!req) {
    wh__ctx_set_error(c->ctx, "%s: req is NULL", op);
    return WH_ERR_INVALID_ARGUMENT;
  }
  *req = NULL;
  if (!wh__comm_dtype_ok(dt)) {
    wh__ctx_set_error(c->ctx, "%s: dtype %d is not communicable (f32, f64, i32, bf16)", op, (int)dt);
    return WH_ERR_DTYPE;
  }
  if (count && !buf) {
    wh__ctx_set_error(c->ctx, "%s: buffer is NULL for %zu elements", op, count);
    return WH_ERR_INVALID_ARGUMENT;
  }
  if (count > (size_t)INT32_MAX) {
    wh__ctx_set_error(c->ctx, "%s: %zu elements exceed 2^31 - 1 per call", op, count);
    return WH_ERR_UNSUPPORTED;
  }
  return WH_OK;
}

static wh_status check_peer(wh_comm *c, const char *op, int peer) {
  if (peer < 0 || peer >= c->size || peer == c->rank) {
    wh__ctx_set_error(c->ctx, "%s: peer %d is not another rank of 0..%d (this is %d)", op, peer, c->size - 1, c->rank);
    return WH_ERR_INVALID_ARGUMENT;
  }
  return WH_OK;
}

#ifdef WH_HAVE_CUDA
/* ---- device buffers on the MPI backend, staged through host memory
 * The MPI transport is not assumed CUDA-aware: a device buffer is copied to a host buffer before
 * the MPI request starts, and the result is copied back when it completes. A comm that finds no
 * CUDA device (no GPU, no driver) never asks again, so the CPU path stays one branch per call. */

static int dev_ptr(wh_comm *c, const void *p) {
  if (!p || c->backend != WH_COMM_MPI || c->dev_bufs < 0) return 0;
  if (c->dev_bufs == 0) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n < 1) {
      cudaGetLastError(); /* clear it: the caller's next CUDA call must not see our failure */
      c->dev_bufs = -1;
      return 0;
    }
    c->dev_bufs = 1;
  }
  struct cudaPointerAttributes a;
  if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
    cudaGetLastError();
    return 0; /* not a pointer CUDA knows: host memory */
  }
  return a.type == cudaMemoryTypeDevice; /* managed and registered host memory: MPI reads them */
}

enum { ST_SEND, ST_RECV, ST_ALLREDUCE, ST_REDUCE_SCATTER, ST_ALLGATHER, ST_BROADCAST };

typedef struct {
  int kind;
  const void *send;
  void *recv; /* also the buffer of broadcast */
  size_t count;
  const size_t *counts; /* all-gather: every rank's count */
  wh_dtype dt;
  wh_reduce_op op;
  int peer, tag, root;
} stage_args;

typedef struct {
  char *host;        /* the MPI request's buffer */
  char *host_in;     /* a separate input: reduce-scatter's or all-gather's send */
  void *back;        /* where host is copied when the request completes (NULL: nowhere) */
  size_t back_bytes;
  int done;          /* the MPI request completed: MPI no longer touches host / host_in */
  int copy_failed;   /* staging in failed (and said why) */
  /* the backend's request, wrapped */
  wh_status (*progress)(wh_request *r, int *done, char *msg, size_t cap);
  void (*release)(wh_request *r);
  void *state;
} staging;

static wh_status staged_progress(wh_request *r, int *done, char *msg, size_t cap) {
  staging *s = r->state;
  r->state = s->state;
  wh_status st = s->progress(r, done, msg, cap);
  s->state = r->state;
  r->state = s;
  if (st != WH_OK || !*done) return st;
  s->done = 1;
  if (s->back && s->back_bytes) {
    cudaError_t e = cudaMemcpy(s->back, s->host, s->back_bytes, cudaMemcpyDefault);
    if (e != cudaSuccess) {
      cudaGetLastError();
      snprintf(msg, cap, "copying %zu staged bytes back to device memory: cudaMemcpy: %s", s->back_bytes,
               cudaGetErrorString(e));
      return WH_ERR_COMM;
    }
  }
  return WH_OK;
}

static void staged_release(wh_request *r) {
  staging *s = r->state;
  if (!s) return;
  r->state = s->state;
  if (s->release) s->release(r);
  r->state = NULL;
  /* after a failed or timed-out wait MPI may still read or write the staging buffers (a receive
   * freed without completing): they are left allocated rather than freed under it */
  if (s->done) {
    free(s->host);
    free(s->host_in);
  }
  free(s);
}

static wh_status stage_in(wh_comm *c, staging *s, const char *op, void *dst, const void *src, size_t bytes) {
  if (!bytes) return WH_OK;
  cudaError_t e = cudaMemcpy(dst, src, bytes, cudaMemcpyDefault);
  if (e == cudaSuccess) return WH_OK;
  cudaGetLastError();
  s->copy_failed = 1;
  wh__ctx_set_error(c->ctx, "%s: staging %zu bytes of device memory through the host: cudaMemcpy: %s", op, bytes,
                    cudaGetErrorString(e));
  return WH_ERR_COMM;
}

/* Start the MPI request on host copies of the device buffers in a. */
static wh_status staged_start(wh_comm *c, const char *op, size_t bytes, int peer, const stage_args *a,
                              wh_request **req) {
  size_t es = wh__comm_dtype_size(a->dt), host_bytes = a->count * es, in_bytes = 0, off = 0, total = 0;
  if (a->kind == ST_REDUCE_SCATTER) in_bytes = host_bytes * (size_t)c->size;
  if (a->kind == ST_ALLGATHER) {
    for (int i = 0; i < c->size; i++) {
      if (i < c->rank) off += a->counts[i];
      total += a->counts[i];
    }
    host_bytes = total * es;
    if (a->send) in_bytes = a->counts[c->rank] * es;
  }
  staging *s = calloc(1, sizeof *s);
  wh_request *r = req_new(c, op, bytes, peer);
  if (s) s->host = malloc(host_bytes + 1);
  if (s && in_bytes) s->host_in = malloc(in_bytes);
  if (!s || !r || !s->host || (in_bytes && !s->host_in)) {
    if (s) free(s->host), free(s->host_in);
    free(s);
    req_free(r); /* unlinks it from the comm */
    return WH_ERR_OUT_OF_MEMORY;
  }
  wh_status st = WH_OK;
  switch (a->kind) {
    case ST_SEND:
      st = stage_in(c, s, op, s->host, a->send, host_bytes);
      if (st == WH_OK) st = c->ops->isend(c, s->host, a->count, a->dt, a->peer, a->tag, r);
      break;
    case ST_RECV:
      s->back = a->recv, s->back_bytes = host_bytes;
      st = c->ops->irecv(c, s->host, a->count, a->dt, a->peer, a->tag, r);
      break;
    case ST_ALLREDUCE:
      s->back = a->recv, s->back_bytes = host_bytes;
      st = stage_in(c, s, op, s->host, a->send ? a->send : a->recv, host_bytes);
      if (st == WH_OK) st = c->ops->iallreduce(c, NULL, s->host, a->count, a->dt, a->op, r);
      break;
    case ST_REDUCE_SCATTER:
      s->back = a->recv, s->back_bytes = host_bytes;
      st = stage_in(c, s, op, s->host_in, a->send, in_bytes);
      if (st == WH_OK) st = c->ops->ireduce_scatter(c, s->host_in, s->host, a->count, a->dt, a->op, r);
      break;
    case ST_ALLGATHER:
      s->back = a->recv, s->back_bytes = host_bytes;
      if (a->send)
        st = stage_in(c, s, op, s->host_in, a->send, in_bytes);
      else
        st = stage_in(c, s, op, s->host + off * es, (const char *)a->recv + off * es, a->counts[c->rank] * es);
      if (st == WH_OK) st = c->ops->iallgather(c, a->send ? s->host_in : NULL, s->host, a->counts, a->dt, r);
      break;
    default: /* ST_BROADCAST: the root sends its buffer, the others receive into theirs */
      if (c->rank == a->root)
        st = stage_in(c, s, op, s->host, a->recv, host_bytes);
      else
        s->back = a->recv, s->back_bytes = host_bytes;
      if (st == WH_OK) st = c->ops->ibroadcast(c, s->host, a->count, a->dt, a->root, r);
      break;
  }
  if (st != WH_OK) {
    if (!s->copy_failed) /* the backend refused */
      wh__ctx_set_error(c->ctx, "%s: could not start on rank %d (%s, device buffers staged through the host): %s",
                        op, c->rank, c->ops->name, wh_status_str(st));
    req_free(r); /* nothing was started: the staging goes too */
    free(s->host);
    free(s->host_in);
    free(s);
    return st;
  }
  s->progress = r->progress, s->release = r->release, s->state = r->state;
  r->progress = staged_progress, r->release = staged_release, r->state = s;
  *req = r;
  return WH_OK;
}

/* A call with a device buffer on the MPI backend goes through the host. */
#define STAGE_DEVICE(cond, op, bytes_, peer_, ...)                \
  do {                                                           \
    if (cond) {                                                  \
      stage_args a_ = {__VA_ARGS__};                             \
      return staged_start(c, (op), (bytes_), (peer_), &a_, req); \
    }                                                            \
  } while (0)
#else
#define STAGE_DEVICE(...) \
  do {                    \
  } while (0)
#endif

wh_status wh_comm_isend(wh_comm *c, const void *buf, size_t count, wh_dtype dt, int peer, int tag, wh_request **req) {
  wh_status st = check_buf(c, "send", buf, count, dt, req);
  if (st == WH_OK) st = check_peer(c, "send", peer);
  if (st == WH_OK && (tag < 0 || tag > 32767)) {
    wh__ctx_set_error(c->ctx, "send: tag %d outside 0..32767", tag);
    st = WH_ERR_INVALID_ARGUMENT;
  }
  if (st != WH_OK) return st;
  STAGE_DEVICE(dev_ptr(c, buf), "send", count * wh__comm_dtype_size(dt), peer, ST_SEND, buf, NULL, count, NULL, dt,
               WH_REDUCE_SUM, peer, tag, 0);
  START("send", count * wh__comm_dtype_size(dt), peer, c->ops->isend(c, buf, count, dt, peer, tag, r_));
}

wh_status wh_comm_irecv(wh_comm *c, void *buf, size_t count, wh_dtype dt, int peer, int tag, wh_request **req) {
  wh_status st = check_buf(c, "recv", buf, count, dt, req);
  if (st == WH_OK) st = check_peer(c, "recv", peer);
  if (st == WH_OK && (tag < 0 || tag > 32767)) {
    wh__ctx_set_error(c->ctx, "recv: tag %d outside 0..32767", tag);
    st = WH_ERR_INVALID_ARGUMENT;
  }
  if (st != WH_OK) return st;
  STAGE_DEVICE(dev_ptr(c, buf), "recv", count * wh__comm_dtype_size(dt), peer, ST_RECV, NULL, buf, count, NULL, dt,
               WH_REDUCE_SUM, peer, tag, 0);
  START("recv", count * wh__comm_dtype_size(dt), peer, c->ops->irecv(c, buf, count, dt, peer, tag, r_));
}

static wh_status check_op(wh_comm *c, const char *name, wh_reduce_op op) {
  if (op != WH_REDUCE_SUM && op != WH_REDUCE_AVG) {
    wh__ctx_set_error(c->ctx, "%s: unknown reduce op %d", name, (int)op);
    return WH_ERR_INVALID_ARGUMENT;
  }
  return WH_OK;
}

wh_status wh_comm_iallreduce(wh_comm *c, const void *send, void *recv, size_t count, wh_dtype dt, wh_reduce_op op,
                             wh_request **req) {
  wh_status st = check_buf(c, "allreduce", recv, count, dt, req);
  if (st == WH_OK) st = check_op(c, "allreduce", op);
  if (st != WH_OK) return st;
  if (send == recv) send = NULL;
  c->coll_seq++;
  STAGE_DEVICE(dev_ptr(c, recv) || dev_ptr(c, send), "allreduce", count * wh__comm_dtype_size(dt), -1, ST_ALLREDUCE,
               send, recv, count, NULL, dt, op, -1, 0, 0);
  START("allreduce", count * wh__comm_dtype_size(dt), -1, c->ops->iallreduce(c, send, recv, count, dt, op, r_));
}

wh_status wh_comm_ireduce_scatter(wh_comm *c, const void *send, void *recv, size_t recvcount, wh_dtype dt,
                                  wh_reduce_op op, wh_request **req) {
  wh_status st = check_buf(c, "reduce_scatter", recv, recvcount, dt, req);
  if (st == WH_OK) st = check_op(c, "reduce_scatter", op);
  if (st == WH_OK && recvcount && !send) {
    wh__ctx_set_error(c->ctx, "reduce_scatter: send is NULL (it holds size * recvcount elements)");
    st = WH_ERR_INVALID_ARGUMENT;
  }
  if (st != WH_OK) return st;
  c->coll_seq++;
  STAGE_DEVICE(dev_ptr(c, recv) || dev_ptr(c, send), "reduce_scatter",
               recvcount * (size_t)c->size * wh__comm_dtype_size(dt), -1, ST_REDUCE_SCATTER, send, recv, recvcount,
               NULL, dt, op, -1, 0, 0);
  START("reduce_scatter", recvcount * (size_t)c->size * wh__comm_dtype_size(dt), -1,
        c->ops->ireduce_scatter(c, send, recv, recvcount, dt, op, r_));
}

wh_status wh_comm_iallgather(wh_comm *c, const void *send, void *recv, size_t count, const size_t *counts,
                             wh_dtype dt, wh_request **req) {
  wh_status st = check_buf(c, "allgather", recv, 1, dt, req);
  if (st != WH_OK) return st;
  size_t *cnt = malloc(sizeof(size_t) * (size_t)c->size), total = 0;
  if (!cnt) return WH_ERR_OUT_OF_MEMORY;
  for (int i = 0; i < c->size; i++) {
    cnt[i] = counts ? counts[i] : count;
    total += cnt[i];
  }
  if (total > (size_t)INT32_MAX) {
    free(cnt);
    wh__ctx_set_error(c->ctx, "allgather: %zu elements exceed 2^31 - 1", total);
    return WH_ERR_UNSUPPORTED;
  }
  c->coll_seq++;
#ifdef WH_HAVE_CUDA
  if (dev_ptr(c, recv) || dev_ptr(c, send)) {
    stage_args a = {ST_ALLGATHER, send, recv, 0, cnt, dt, WH_REDUCE_SUM, -1, 0, 0};
    st = staged_start(c, "allgather", total * wh__comm_dtype_size(dt), -1, &a, req);
    free(cnt);
    return st;
  }
#endif
  wh_request *r = req_new(c, "allgather", total * wh__comm_dtype_size(dt), -1);
  if (!r) {
    free(cnt);
    return WH_ERR_OUT_OF_MEMORY;
  }
  st = c->ops->iallgather(c, send, recv, cnt, dt, r); /* copies counts */
  free(cnt);
  if (st != WH_OK) {
    req_free(r);
    return st;
  }
  *req = r;
  return WH_OK;
}

wh_status wh_comm_ibroadcast(wh_comm *c, void *buf, size_t count, wh_dtype dt, int root, wh_request **req) {
  wh_status st = check_buf(c, "broadcast", buf, count, dt, req);
  if (st == WH_OK && (root < 0 || root >= c->size)) {
    wh__ctx_set_error(c->ctx, "broadcast: root %d outside 0..%d", root, c->size - 1);
    st = WH_ERR_INVALID_ARGUMENT;
  }
  if (st != WH_OK) return st;
  c->coll_seq++;
  STAGE_DEVICE(dev_ptr(c, buf), "broadcast", count * wh__comm_dtype_size(dt), c->rank == root ? -1 : root,
               ST_BROADCAST, NULL, buf, count, NULL, dt, WH_REDUCE_SUM, -1, 0, root);
  START("broadcast", count * wh__comm_dtype_size(dt), c->rank == root ? -1 : root,
        c->ops->ibroadcast(c, buf, count, dt, root, r_));
}

wh_status wh_comm_ibarrier(wh_comm *c, wh_request **req) {
  wh_status st = usable(c, "barrier");
  if (st != WH_OK) return st;
  if (!req) return WH_ERR_INVALID_ARGUMENT;
  c->coll_seq++;
  START("barrier", 0, -1, c->ops->ibarrier(c, r_));
}

#define BLOCKING(call)             \
  do {                             \
    wh_request *rq = NULL;         \
    wh_status st = (call);         \
    if (st != WH_OK) return st;    \
    return wh_request_wait(rq);    \
  } while (0)

wh_status wh_comm_send(wh_comm *c, const void *buf, size_t count, wh_dtype dt, int peer, int tag) {
  BLOCKING(wh_comm_isend(c, buf, count, dt, peer, tag, &rq));
}
wh_status wh_comm_recv(wh_comm *c, void *buf, size_t count, wh_dtype dt, int peer, int tag) {
  BLOCKING(wh_comm_irecv(c, buf, count, dt, peer, tag, &rq));
}
wh_status wh_comm_allreduce(wh_comm *c, const void *send, void *recv, size_t count, wh_dtype dt, wh_reduce_op op) {
  BLOCKING(wh_comm_iallreduce(c, send, recv, count, dt, op, &rq));
}
wh_status wh_comm_reduce_scatter(wh_comm *c, const void *send, void *recv, size_t recvcount, wh_dtype dt,
                                 wh_reduce_op op) {
  BLOCKING(wh_comm_ireduce_scatter(c, send, recv, recvcount, dt, op, &rq));
}
wh_status wh_comm_allgather(wh_comm *c, const void *send, void *recv, size_t count, const size_t *counts,
                            wh_dtype dt) {
  BLOCKING(wh_comm_iallgather(c, send, recv, count, counts, dt, &rq));
}
wh_status wh_comm_broadcast(wh_comm *c, void *buf, size_t count, wh_dtype dt, int root) {
  BLOCKING(wh_comm_ibroadcast(c, buf, count, dt, root, &rq));
}
wh_status wh_comm_barrier(wh_comm *c) { BLOCKING(wh_comm_ibarrier(c, &rq)); }
