/* comm.h - the communication layer's inside: one request/deadline machinery shared by the
 * backends (mpi/, nccl/), each a table of operations that start requests. */
#ifndef WH_COMM_H
#define WH_COMM_H

#include <stddef.h>
#include <stdint.h>

#include "whale.h"
#include "wh_config.h" /* WH_HAVE_NCCL, WH_HAVE_CUDA */
#include "../base/clock.h"

struct wh_request {
  wh_comm *comm;
  const char *op;      /* "allreduce", "recv", ... (static) */
  size_t bytes;        /* payload of this rank */
  int peer;            /* the peer of a point-to-point op, -1 for collectives */
  int waiting_on;      /* the peer the current step waits for, -1 when unknown */
  double start;
  /* Advance; set *done when complete. On failure fill msg (backend detail) and return a status. */
  wh_status (*progress)(wh_request *r, int *done, char *msg, size_t cap);
  void (*release)(wh_request *r); /* free backend state (also for unfinished requests) */
  void *state;
  /* every wait advances all of its comm's requests (like MPI's progress engine): rings post
   * their next step only when advanced, so waiting on one alone could stall a peer waiting on
   * another */
  wh_request *next;
  unsigned long ticks; /* bumped by the backend whenever the request advances */
  unsigned long seen_ticks;
  double last;         /* when it was first waited on, or last seen advancing: the deadline runs from here */
  int done;
  wh_status status;    /* the outcome, once done */
  char err[768];       /* its message, replayed when the owner waits */
};

typedef struct wh__comm_ops {
  const char *name;
  wh_status (*isend)(wh_comm *c, const void *buf, size_t count, wh_dtype dt, int peer, int tag, wh_request *r);
  wh_status (*irecv)(wh_comm *c, void *buf, size_t count, wh_dtype dt, int peer, int tag, wh_request *r);
  wh_status (*iallreduce)(wh_comm *c, const void *send, void *recv, size_t count, wh_dtype dt, wh_reduce_op op,
                          wh_request *r);
  wh_status (*ireduce_scatter)(wh_comm *c, const void *send, void *recv, size_t recvcount, wh_dtype dt,
                               wh_reduce_op op, wh_request *r);
  wh_status (*iallgather)(wh_comm *c, const void *send, void *recv, const size_t *counts, wh_dtype dt,
                          wh_request *r);
  wh_status (*ibroadcast)(wh_comm *c, void *buf, size_t count, wh_dtype dt, int root, wh_request *r);
  wh_status (*ibarrier)(wh_comm *c, wh_request *r);
  /* Make child a communicator of the listed parent ranks (this rank is a member iff member). */
  wh_status (*split)(wh_comm *parent, int n, const int *ranks, int member, wh_comm *child, char *msg, size_t cap);
  /* Answer liveness probes from peers; called while any wait spins. */
  void (*service)(wh_comm *c);
  /* Ask the listed peers whether they are alive; alive[i] = 1 if peer i answered within budget. */
  void (*probe)(wh_comm *c, const int *peers, int n, int *alive, double budget_s);
  void (*destroy)(wh_comm *c);
} wh__comm_ops;

struct wh_comm {
  wh_ctx *ctx;
  const wh__comm_ops *ops;
  wh_comm_backend backend;
  int rank, size, local_rank, local_size;
  double timeout;
  int broken;          /* a wait failed: only destroy is allowed */
  uint32_t coll_seq;   /* collectives started, for tags: every rank starts them in the same order */
  void *impl;          /* backend state */
  wh_request *active;  /* requests started and not yet freed */
  int oversubscribed;  /* more ranks on this node than cores: long waits sleep */
  /* MPI backend in a CUDA build: 0 not yet asked, 1 a CUDA device is visible (buffers may be device
   * memory, staged through the host), -1 none (every buffer is host memory; no more queries) */
  int dev_bufs;
};

/* ---- reductions (reduce.c) */

/* Elementwise dst += src for count elements of dt (bf16 rounds to nearest even). */
void wh__reduce_add(void *dst, const void *src, size_t count, wh_dtype dt);
void wh__reduce_scale(void *dst, size_t count, wh_dtype dt, double k);
int wh__comm_dtype_ok(wh_dtype dt);
size_t wh__comm_dtype_size(wh_dtype dt);

/* ---- requests (request.c) */

/* A new request of c for op (static text) moving `bytes` with peer (-1: a collective), linked into
 * c's active list; the caller's backend call fills progress / release / state. NULL when out of
 * memory. */
wh_request *wh__req_new(wh_comm *c, const char *op, size_t bytes, int peer);
/* Unlink r from its comm and free it with its backend state (finished or not). NULL: no-op. */
void wh__req_free(wh_request *r);

#ifdef WH_HAVE_CUDA
/* ---- device buffers on the MPI backend, staged through the host (staging.c) */

enum { WH__ST_SEND, WH__ST_RECV, WH__ST_ALLREDUCE, WH__ST_REDUCE_SCATTER, WH__ST_ALLGATHER, WH__ST_BROADCAST };

typedef struct {
  int kind;
  const void *send;
  void *recv; /* also the buffer of broadcast */
  size_t count;
  const size_t *counts; /* all-gather: every rank's count */
  wh_dtype dt;
  wh_reduce_op op;
  int peer, tag, root;
} wh__stage_args;

/* Is p device memory that c must stage (the MPI backend only; asks CUDA once whether any device
 * is visible at all)? */
int wh__comm_dev_ptr(wh_comm *c, const void *p);
/* Start the operation of a on host copies of its device buffers; the request copies the result
 * back when it completes. On failure ctx says why and nothing is left started. */
wh_status wh__comm_staged_start(wh_comm *c, const char *op, size_t bytes, int peer, const wh__stage_args *a,
                                wh_request **req);
#endif

/* Gradient fusion's seconds of all-reduce (each from its start to when a poll or the wait saw it
 * done) and the part of them its wait blocked (fusion.c). */
void wh__fusion_times(const wh_fusion *f, double *busy, double *exposed);

/* Backends */
extern const wh__comm_ops wh__mpi_ops;
wh_status wh__mpi_create(wh_comm *c, const wh_comm_options *o, char *msg, size_t cap);
#ifdef WH_HAVE_NCCL
extern const wh__comm_ops wh__nccl_ops;
wh_status wh__nccl_create(wh_comm *c, const wh_comm_options *o, char *msg, size_t cap);
#endif
/* MPI, owned here: initialise it when the host did not (then finalised by a hook of ctx's
 * wh_ctx_destroy) and set ctx's world rank and size; `what` names MPI in messages. */
#ifdef WH_HAVE_MPI
wh_status wh__mpi_ensure_init(wh_ctx *ctx, const wh_comm_options *o, const char *what, char *msg, size_t cap);
/* ctx's rank and size in MPI_COMM_WORLD when MPI is initialised (by the host or by libwhale). */
void wh__mpi_world(wh_ctx *ctx);
#else
static inline void wh__mpi_world(wh_ctx *ctx) { (void)ctx; }
#endif

#endif
