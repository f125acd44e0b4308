/* session_impl.h - the session's insides, shared by the runtime's files: session.c (lifecycle),
 * exec.c (the executor of a Program's parts), comm_nodes.c (the communication and accumulation
 * nodes), arena.c (memory plan), device.c, params.c, tp.c (whole values of a sharded program) and
 * inspect.c (profile, dumps). Not part of the public API. */
#ifndef WH_SESSION_IMPL_H
#define WH_SESSION_IMPL_H

#include "../base/strbuf.h"
#include "../comm/comm.h"
#include "../ir/ir.h"
#include "../kernels/cuda/cuda.h"
#include "../kernels/kernels.h"
#include "../partition/program.h"

struct wh__tp;
struct wh__rebalance;

typedef struct {
  wh_request *r;
  void *buf;                   /* the private copy a send reads (the slot may be reused meanwhile) */
  double t;                    /* when it started */
} wh__pending_send;

struct wh_session {
  wh_ctx *ctx;
  wh_graph *g;
  wh__program prog;            /* what runs: this rank's nodes and their schedule (src/partition) */
  int recompute, inplace;
  int froze;                   /* this session froze its graph (and thaws it when destroyed) */
  int64_t n_inplace;
  int64_t batch;
  int64_t steps;
  int64_t runs;
  int n;                       /* program values (graph values first) */
  void **ptr;                  /* data of each value at the bound batch: the current slot's table */
  int64_t *bytes;
  int32_t *alias;              /* storage shared with another value (reshape views, in-place outputs), or -1 */
  int64_t *stamp;              /* run that last wrote the value */
  void **own;                  /* session-owned persistent storage (params, state, buffers), per value */
  void *arena;
  int64_t arena_bytes, inter_bytes, n_inter, live_peak;
  int64_t saved_bytes;         /* intermediates a forward node makes and a backward node reads */
  /* arena slots, one per micro-batch in flight (pipelines); slot 0 is arena and its table */
  void **slot_arena;
  void ***slot_ptr;
  int cur_mb;                  /* the micro-batch of the part being run (-1: once per step) */
  wh__exec ex;
  char kerr[512];
  /* distributed execution */
  int dist;
  wh_comm *comm;               /* the session's communicator (borrowed) */
  wh_comm *grp[WH_GROUP_COUNT];/* the program's groups: grp[WORLD] is comm; the splits are owned */
  const void **global_feed;    /* per input: the caller's global batch */
  int64_t *row_bytes;          /* per input: bytes per sample */
  wh_fusion *fusion;           /* host data parallelism: gradient buckets over grp[DP] */
  size_t bucket_bytes;         /* its bucket size */
  wh_request **pend;           /* per value: its started operation (device all-reduce, ZeRO-1 reduce-scatter,
                                * an overlapped tp all-reduce) */
  double *pend_t;              /* per value: when it started */
  int32_t *inflight;           /* the values with a started operation, polled between nodes */
  int n_inflight;
  double cs_busy, cs_exposed;  /* communication seconds (wh_session_comm_stats) */
  int64_t cs_ops;
  double cs_fusion_busy, cs_fusion_exposed; /* gradient fusion's at the last reset */
  wh__pending_send *sends;     /* this step's sends (pipelines) */
  int n_sends, cap_sends;
  double loss_acc;             /* the step's weighted loss sum on this rank */
  float *det_buf;              /* R partial gradients of the largest one (deterministic reduction) */
  /* CUDA: parameters, state, constants, inputs and the arena live on the device; own[] and
   * arena are device memory, host_feed[] the caller's buffers copied in at each run */
  wh__cuda *dev;
  int dev_index, precision;
  const void **host_feed;
  void **host_param;           /* per parameter: a host copy for serialization (device sessions) */
  double *dloss;               /* device slot for the loss all-reduce over NCCL */
  /* per-op timing (wh_session_profile) */
  int prof;
  int64_t prof_runs;
  double prof_s[WH_OP_COUNT];
  int64_t prof_calls[WH_OP_COUNT];
  struct wh__tp *tpx;          /* operator sharding (tp.c), NULL otherwise */
  int64_t *shares;             /* rows per micro-batch of each replica of this rank's stage */
  int *stage_dev;              /* the cluster devices of this rank's stage, replica-major (tp per replica) */
  int stage_ndev, n_devices;   /* how many; the plan's devices */
  struct wh__rebalance *rb;    /* online rebalancing (rebalance.c), NULL when off */
  struct wh_plan *plan;        /* the session's own copy of its plan, when it rebalances */
  /* mixed precision (partition/precision.c): fp16's dynamic loss scale */
  int mixed;                   /* the dtype activations and gradients are stored in (WH_F32: none) */
  double loss_scale;
  int64_t scale_good, skipped; /* steps since the scale last changed without overflow; steps skipped */
  int overflow, skip_update;   /* this step: a gradient not finite; its update skipped */
  int64_t opt_steps;           /* updates applied (the optimizer's step count) */
};

/* the largest gradient fusion bucket of a data-parallel session */
#define DP_BUCKET_BYTES ((size_t)4 << 20)

/* Record the message in the context and return st. */
wh_status wh__session_fail(wh_session *s, wh_status st, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* The value whose storage v shares (itself when none). */
int32_t wh__session_root(const wh_session *s, int32_t v);
/* v's data in the current slot (a view resolved to its root's). */
void *wh__session_data(wh_session *s, int32_t v);
/* Run program node i on the current pointers; a failure names the node. */
wh_status wh__session_run_node(wh_session *s, int i);
/* The parameter g is the gradient of, -1 (a graph value that no node produces is no gradient here). */
int32_t wh__session_param_of_grad(const wh_session *s, int32_t g);

/* ---- arena.c: the static memory plan at the bound batch (the old arena is replaced), then the
 * other slots' arenas with the same layout */
wh_status wh__session_plan_memory(wh_session *s);
wh_status wh__session_plan_slots(wh_session *s);

/* ---- device.c */
/* Open the session's CUDA device when o asks for one: the index asked for, else the
 * communicator's local rank. */
wh_status wh__session_open_device(wh_session *s, const wh_session_options *o);
/* Move parameters, optimizer state and constants (initialised on the host) to the device. */
wh_status wh__session_to_device(wh_session *s);

/* ---- params.c: fill p (numel floats) with v's initialiser */
void wh__param_init(const wh__value *v, float *p, int64_t numel);

/* ---- comm_nodes.c: the runtime's own nodes (communication, accumulation, ZeRO-1's update) */
wh_status wh__comm_node_run(wh_session *s, const wh__node *n);
/* Wait for this step's sends; report (overwriting the context's message) only when asked: after an
 * earlier failure the first message is the one that names the cause. */
wh_status wh__comm_drain(wh_session *s, int report);
/* Advance the started operations (between nodes): the finished ones are counted and forgotten. */
wh_status wh__comm_poll(wh_session *s);
/* Count a blocking operation of dt seconds (all of it waited for). */
void wh__comm_blocked(wh_session *s, double dt);
/* Make the program's groups (collective over the session's communicator, in the program's order). */
wh_status wh__comm_nodes_open(wh_session *s);
/* What the nodes need once the memory plan exists: gradient fusion, the deterministic reduction's
 * buffer, request slots. */
wh_status wh__comm_nodes_buffers(wh_session *s);
void wh__comm_nodes_close(wh_session *s);

/* ---- rebalance.c */
/* Start rebalancing when asked and the plan allows it (data parallel, the planner's shares). */
wh_status wh__rebalance_open(wh_session *s, const struct wh_plan *pl, int asked);
void wh__rebalance_free(wh_session *s);
/* After a training step of compute_s seconds (less what it waited for communicating): agree on the
 * replicas' speeds, and switch shares when they stay unbalanced. Collective over the session. */
wh_status wh__rebalance_step(wh_session *s, double compute_s);
/* Before a run: switch to the shares the last step decided on (every rank at the same step). */
wh_status wh__rebalance_apply(wh_session *s);
/* session.c: build the program again for s->plan (new shares), keeping every persistent value. */
wh_status wh__session_repartition(wh_session *s);

/* ---- tp.c */
/* The session's side of operator sharding (after the groups exist): the replica's ranks, layouts. */
wh_status wh__tp_create(wh_session *s);
void wh__tp_destroy(wh_session *s);
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
