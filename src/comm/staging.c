/* staging.c - device buffers on the MPI backend in a CUDA build, staged through host memory: the
 * MPI transport is not assumed CUDA-aware, so a device buffer is copied to a host buffer before the
 * MPI request starts, and the result is copied back when it completes. A comm that finds no CUDA
 * device (no GPU, no driver) never asks again, so the CPU path stays one branch per call. */
#include <stdio.h>
#include <stdlib.h>

#include <cuda_runtime_api.h>

#include "../base/ctx.h"
#include "comm.h"

int wh__comm_dev_ptr(wh_comm *c, const void *p) {
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
wh_status wh__comm_staged_start(wh_comm *c, const char *op, size_t bytes, int peer, const wh__stage_args *a,
                                wh_request **req) {
  size_t es = wh__comm_dtype_size(a->dt), host_bytes = a->count * es, in_bytes = 0, off = 0, total = 0;
  if (a->kind == WH__ST_REDUCE_SCATTER) in_bytes = host_bytes * (size_t)c->size;
  if (a->kind == WH__ST_ALLGATHER) {
    for (int i = 0; i < c->size; i++) {
      if (i < c->rank) off += a->counts[i];
      total += a->counts[i];
    }
    host_bytes = total * es;
    if (a->send) in_bytes = a->counts[c->rank] * es;
  }
  staging *s = calloc(1, sizeof *s);
  wh_request *r = wh__req_new(c, op, bytes, peer);
  if (s) s->host = malloc(host_bytes + 1);
  if (s && in_bytes) s->host_in = malloc(in_bytes);
  if (!s || !r || !s->host || (in_bytes && !s->host_in)) {
    if (s) free(s->host), free(s->host_in);
    free(s);
    wh__req_free(r); /* unlinks it from the comm */
    return WH_ERR_OUT_OF_MEMORY;
  }
  wh_status st = WH_OK;
  switch (a->kind) {
    case WH__ST_SEND:
      st = stage_in(c, s, op, s->host, a->send, host_bytes);
      if (st == WH_OK) st = c->ops->isend(c, s->host, a->count, a->dt, a->peer, a->tag, r);
      break;
    case WH__ST_RECV:
      s->back = a->recv, s->back_bytes = host_bytes;
      st = c->ops->irecv(c, s->host, a->count, a->dt, a->peer, a->tag, r);
      break;
    case WH__ST_ALLREDUCE:
      s->back = a->recv, s->back_bytes = host_bytes;
      st = stage_in(c, s, op, s->host, a->send ? a->send : a->recv, host_bytes);
      if (st == WH_OK) st = c->ops->iallreduce(c, NULL, s->host, a->count, a->dt, a->op, r);
      break;
    case WH__ST_REDUCE_SCATTER:
      s->back = a->recv, s->back_bytes = host_bytes;
      st = stage_in(c, s, op, s->host_in, a->send, in_bytes);
      if (st == WH_OK) st = c->ops->ireduce_scatter(c, s->host_in, s->host, a->count, a->dt, a->op, r);
      break;
    case WH__ST_ALLGATHER:
      s->back = a->recv, s->back_bytes = host_bytes;
      if (a->send)
        st = stage_in(c, s, op, s->host_in, a->send, in_bytes);
      else
        st = stage_in(c, s, op, s->host + off * es, (const char *)a->recv + off * es, a->counts[c->rank] * es);
      if (st == WH_OK) st = c->ops->iallgather(c, a->send ? s->host_in : NULL, s->host, a->counts, a->dt, r);
      break;
    default: /* WH__ST_BROADCAST: the root sends its buffer, the others receive into theirs */
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
    wh__req_free(r); /* nothing was started: the staging goes too */
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

