/* session_impl.h - the session's insides, shared by the runtime's files: session.c (lifecycle),
 * exec.c (executor), arena.c (memory plan), device.c, params.c, inspect.c (profile, dumps) and the
 * strategies (pipeline.c, zero.c, tp.c). Not part of the public API. */
#ifndef WH_SESSION_IMPL_H
#define WH_SESSION_IMPL_H

#include "../comm/comm.h"
#include "../ir/ir.h"
#include "../kernels/cuda/cuda.h"
#include "../kernels/kernels.h"
#include "../partition/program.h"
#include "../base/strbuf.h"

struct wh__pipe;
struct wh__zero;
struct wh__tp;
struct wh_plan;

struct wh_session {
  wh_ctx *ctx;
  wh_graph *g;
  wh__program prog;    /* what runs: the graph's nodes plus recomputation clones */
  int recompute, inplace;
  int froze;           /* this session froze its graph (and thaws it when destroyed) */
  int64_t n_inplace;
  int64_t batch;
  int64_t steps;
  int64_t runs;
  int n;               /* program values (graph values first) */
  void **ptr;          /* data of each value at the bound batch */
  int64_t *bytes;
  int32_t *alias;      /* storage shared with another value (reshape views, in-place outputs), or -1 */
  int64_t *stamp;      /* run that last wrote the value */
  void **own;          /* session-owned persistent storage (params, state), per value */
  void *arena;
  int64_t arena_bytes, inter_bytes, n_inter, live_peak;
  wh__exec ex;
  char kerr[512];
  /* distributed (data parallel) execution */
  wh_comm *comm;
  int dist, m;                 /* micro-batches */
  int64_t global_batch, mb;    /* samples per step, per micro-batch */
  int64_t share, offset;       /* this replica's rows of each micro-batch */
  const void **global_feed;    /* per input: the caller's global batch */
  int64_t *row_bytes;          /* per input: bytes per sample */
  int32_t *grad_of_param;      /* per value: the parameter it is the gradient of, or -1 */
  void **acc;                  /* per parameter gradient: accumulation over micro-batches */
  wh_fusion *fusion;
  /* CUDA: parameters, state, constants, inputs and the arena live on the device; own[] and
   * arena are device memory, host_feed[] the caller's buffers copied in at each run */
  wh__cuda *dev;
  int dev_index, precision;
  const void **host_feed;
  void **host_param;           /* per parameter: a host copy for serialization (device sessions) */
  wh_request **dreq;           /* per gradient: its all-reduce (device data parallel) */
  double *dloss;               /* device slot for the loss all-reduce over NCCL */
  /* per-op timing (wh_session_profile) */
  int prof;
  int64_t prof_runs;
  double prof_s[WH_OP_COUNT];
  int64_t prof_calls[WH_OP_COUNT];
  struct wh__pipe *pipe;       /* pipeline-parallel plans (pipeline.c), NULL otherwise */
  struct wh__zero *zero;       /* ZeRO-1 data parallelism (zero.c), NULL otherwise */
  int det;                     /* deterministic reduction: gathered, summed in rank order */
  float *det_buf;              /* R partial gradients of the largest parameter */
  int pipe_stage;
  struct wh__tp *tpx;          /* operator sharding (tp.c), NULL otherwise */
  wh_comm *dpc;                /* the gradient and loss reductions: comm, or the ranks of this shard */
};

/* gradient fusion bucket of a data-parallel session */
#define DP_BUCKET_BYTES ((size_t)4 << 20)

/* Record the message in the context and return st. */
wh_status wh__session_fail(wh_session *s, wh_status st, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* The value whose storage v shares (itself when none). */
int32_t wh__session_root(const wh_session *s, int32_t v);
/* Run program node i on the current pointers; a failure names the node. */
wh_status wh__session_run_node(wh_session *s, int i);

/* ---- arena.c: the static memory plan at the bound batch (the old arena is replaced) */
wh_status wh__session_plan_memory(wh_session *s);

/* ---- device.c */
/* Open the session's CUDA device when o asks for one: the index asked for, else the
 * communicator's local rank. */
wh_status wh__session_open_device(wh_session *s, const wh_session_options *o);
/* Move parameters, optimizer state and constants (initialised on the host) to the device. */
wh_status wh__session_to_device(wh_session *s);

/* ---- params.c: fill p (numel floats) with v's initialiser */
void wh__param_init(const wh__value *v, float *p, int64_t numel);

/* ---- pipeline.c */
/* Set up this rank's stage of a pipeline plan (after the memory plan): node placement, transfers,
 * one arena per micro-batch. */
wh_status wh__pipe_create(wh_session *s, const struct wh_plan *pl, int stage, int replica);
void wh__pipe_destroy(wh_session *s);
wh_status wh__pipe_run(wh_session *s, wh_run_mode mode);
/* The stage that holds leaf v current: this rank's when one of its nodes reads v. */
int wh__pipe_stage_of(const wh_session *s, int32_t v);
/* This rank's part of the program dump: stage, its nodes, sends and receives. */
void wh__pipe_dump(const wh_session *s, wh__sb *b);

/* ---- zero.c */
/* Shard the optimizer state of a data-parallel session over its ranks (after the gradients'
 * accumulation buffers exist). */
wh_status wh__zero_create(wh_session *s);
void wh__zero_destroy(wh_session *s);
/* Start the reduce-scatter of a finished gradient accumulation; wait for all of them. */
wh_status wh__zero_start(wh_session *s, int32_t grad);
wh_status wh__zero_wait(wh_session *s);
/* Clip from the shards, update this rank's shards, all-gather the parameters. */
wh_status wh__zero_update(wh_session *s);

/* ---- tp.c */
/* Split this rank's program into its shard of the plan's operator sharding (before any storage
 * exists): the replica's and the shard's communicators, local shapes, conversions. */
wh_status wh__tp_create(wh_session *s, const struct wh_plan *pl, wh_comm *world);
void wh__tp_destroy(wh_session *s);
wh_comm *wh__tp_group(const wh_session *s);
wh_comm *wh__tp_dp(const wh_session *s);
wh__layout wh__tp_layout(const wh_session *s, int32_t v);
int wh__tp_degree(const wh_session *s);
/* World rank of rank i of the gradient reduction's communicator. */
int wh__tp_dp_world(const wh_session *s, int i);
int64_t wh__tp_whole_bytes(const wh_session *s, int32_t v);
wh_status wh__tp_whole(wh_session *s, const char *who, int32_t v, void *out);
void wh__tp_cut(const wh_session *s, int32_t v, const void *whole, void *shard);
void wh__tp_dump_head(const wh_session *s, wh__sb *b);
int wh__tp_dump_node(const wh_session *s, const wh__node *n, wh__sb *b);

#endif
