/* comm.c - the public communication API: argument checks, the backend factory (create, split,
 * destroy), starting each operation on its backend (or through host staging) and the blocking forms. */
#include "comm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../base/ctx.h"
#include "wh_config.h"

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
  while (c->active) wh__req_free(c->active); /* requests the caller never waited for */
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

/* Start a request through a backend call that fills r_; on failure name the op and the rank. */
#define START(opname, bytes_, peer_, call)                                                                \
  do {                                                                                                    \
    wh_request *r_ = wh__req_new(c, opname, (bytes_), (peer_));                                           \
    if (!r_) return WH_ERR_OUT_OF_MEMORY;                                                                 \
    wh_status s_ = (call);                                                                                \
    if (s_ != WH_OK) {                                                                                    \
      wh__ctx_set_error(c->ctx, "%s: could not start on rank %d (%s): %s", opname, c->rank, c->ops->name, \
                        wh_status_str(s_));                                                               \
      wh__req_free(r_);                                                                                   \
      return s_;                                                                                          \
    }                                                                                                     \
    *req = r_;                                                                                            \
    return WH_OK;                                                                                         \
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
/* A call with a device buffer on the MPI backend goes through the host (staging.c). */
#define STAGE_DEVICE(cond, op, bytes_, peer_, ...)                \
  do {                                                           \
    if (cond) {                                                  \
      wh__stage_args a_ = {__VA_ARGS__};                             \
      return wh__comm_staged_start(c, (op), (bytes_), (peer_), &a_, req); \
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
  STAGE_DEVICE(wh__comm_dev_ptr(c, buf), "send", count * wh__comm_dtype_size(dt), peer, WH__ST_SEND, buf, NULL,
               count, NULL, dt, WH_REDUCE_SUM, peer, tag, 0);
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
  STAGE_DEVICE(wh__comm_dev_ptr(c, buf), "recv", count * wh__comm_dtype_size(dt), peer, WH__ST_RECV, NULL, buf,
               count, NULL, dt, WH_REDUCE_SUM, peer, tag, 0);
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
  STAGE_DEVICE(wh__comm_dev_ptr(c, recv) || wh__comm_dev_ptr(c, send), "allreduce", count * wh__comm_dtype_size(dt),
               -1, WH__ST_ALLREDUCE, send, recv, count, NULL, dt, op, -1, 0, 0);
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
  STAGE_DEVICE(wh__comm_dev_ptr(c, recv) || wh__comm_dev_ptr(c, send), "reduce_scatter",
               recvcount * (size_t)c->size * wh__comm_dtype_size(dt), -1, WH__ST_REDUCE_SCATTER, send, recv, recvcount,
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
  if (wh__comm_dev_ptr(c, recv) || wh__comm_dev_ptr(c, send)) {
    wh__stage_args a = {WH__ST_ALLGATHER, send, recv, 0, cnt, dt, WH_REDUCE_SUM, -1, 0, 0};
    st = wh__comm_staged_start(c, "allgather", total * wh__comm_dtype_size(dt), -1, &a, req);
    free(cnt);
    return st;
  }
#endif
  wh_request *r = wh__req_new(c, "allgather", total * wh__comm_dtype_size(dt), -1);
  if (!r) {
    free(cnt);
    return WH_ERR_OUT_OF_MEMORY;
  }
  st = c->ops->iallgather(c, send, recv, cnt, dt, r); /* copies counts */
  free(cnt);
  if (st != WH_OK) {
    wh__req_free(r);
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
  STAGE_DEVICE(wh__comm_dev_ptr(c, buf), "broadcast", count * wh__comm_dtype_size(dt), c->rank == root ? -1 : root,
               WH__ST_BROADCAST, NULL, buf, count, NULL, dt, WH_REDUCE_SUM, -1, 0, root);
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
