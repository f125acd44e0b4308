/* whale.h - the public C API of libwhale: describe a model once as a static graph,
 * differentiate it, and train it on one process now, on many ranks under a plan later. */
#ifndef WHALE_H
#define WHALE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define WH_API
#elif defined(__GNUC__)
#define WH_API __attribute__((visibility("default")))
#else
#define WH_API
#endif

/* ---------------------------------------------------------------- version */

#define WH_VERSION_MAJOR 0
#define WH_VERSION_MINOR 1
#define WH_VERSION_PATCH 0

/* "MAJOR.MINOR.PATCH"; static storage. */
WH_API const char *wh_version(void);
/* The backends and engines compiled in, e.g. "cpu(openblas 0.3.21) mpi(Open MPI 4.1.4)"; static. */
WH_API const char *wh_build_info(void);

/* ------------------------------------------------------------------ errors */

typedef enum wh_status {
  WH_OK = 0,
  WH_ERR_INVALID_ARGUMENT = 1, /* NULL handle, out-of-range number, unknown enum */
  WH_ERR_SHAPE = 2,            /* shapes do not fit an op */
  WH_ERR_DTYPE = 3,            /* dtypes do not fit an op */
  WH_ERR_POISONED = 4,         /* the graph holds an earlier error; see wh_graph_error */
  WH_ERR_STATE = 5,            /* the call does not fit the object's state */
  WH_ERR_OUT_OF_MEMORY = 6,
  WH_ERR_IO = 7,               /* a file could not be opened, read or written */
  WH_ERR_CORRUPT = 8,          /* a file or buffer is not a valid libwhale artefact */
  WH_ERR_UNSUPPORTED = 9,      /* valid, but not implemented by this build */
  WH_ERR_NOT_FOUND = 10,       /* no value with that name or handle */
  WH_ERR_COMM = 11,            /* a communication engine failed */
  WH_ERR_TIMEOUT = 12,         /* a wait passed its deadline */
  WH_ERR_INTERNAL = 13         /* a bug in libwhale: please report the message */
} wh_status;

/* Static text for a status code. */
WH_API const char *wh_status_str(wh_status s);

/* --------------------------------------------------------------- context */

typedef struct wh_ctx wh_ctx;

typedef enum wh_log_level {
  WH_LOG_ERROR = 0,
  WH_LOG_WARN = 1,
  WH_LOG_INFO = 2,
  WH_LOG_DEBUG = 3
} wh_log_level;

/* Called for each message at or below the context's level. msg lives for the call only. */
typedef void (*wh_log_fn)(wh_log_level level, const char *msg, void *user);

typedef struct wh_ctx_options {
  size_t struct_size;  /* sizeof(wh_ctx_options): lets fields be added later */
  int num_threads;     /* CPU threads for kernels and BLAS; 0 = all online cores */
  wh_log_fn log_fn;    /* NULL: libwhale prints nothing */
  void *log_user;      /* passed to log_fn, borrowed */
  wh_log_level log_level;
} wh_ctx_options;

#define WH_CTX_OPTIONS_INIT {sizeof(wh_ctx_options), 0, NULL, NULL, WH_LOG_WARN}

/* opts may be NULL (defaults). *out is owned by the caller: wh_ctx_destroy it last.
 * A context's sessions and communicators share its thread pool: use them from one thread at a
 * time (separate contexts may run in parallel threads). */
WH_API wh_status wh_ctx_create(wh_ctx **out, const wh_ctx_options *opts);
WH_API void wh_ctx_destroy(wh_ctx *ctx); /* NULL is a no-op */
/* The detailed message of the last failure in this context (or any of its objects); "" if none.
 * Lives until the next failing call on the context. */
WH_API const char *wh_last_error(const wh_ctx *ctx);
/* MPI rank and world size seen by the context (0 and 1 without MPI). */
WH_API int wh_ctx_rank(const wh_ctx *ctx);
WH_API int wh_ctx_size(const wh_ctx *ctx);
WH_API int wh_ctx_threads(const wh_ctx *ctx);

/* ----------------------------------------------------------------- graph */

typedef struct wh_graph wh_graph;

typedef enum wh_dtype {
  WH_F32 = 0,
  WH_I32 = 1,  /* labels and indices */
  WH_BF16 = 2, /* storage only: what mixed precision stores activations in (wh_session_options.mixed) */
  WH_F16 = 3,  /* the same, IEEE half */
  WH_F64 = 4   /* declared for communication; not yet computable */
} wh_dtype;

#define WH_MAX_DIMS 8
/* A dimension equal to WH_BATCH is the symbolic batch size B, bound when a session runs.
 * WH_BATCH_TIMES(k) is k*B (e.g. B*T rows after flattening a [B, T, C] tensor).
 * At most one dimension of a shape is symbolic. */
#define WH_BATCH ((int64_t)-1)
#define WH_BATCH_TIMES(k) (-(int64_t)(k))

/* A value handle: an index into its graph. WH_NONE marks "no value" (an error happened). */
typedef int32_t wh_value;
#define WH_NONE ((wh_value)-1)

WH_API wh_status wh_graph_create(wh_ctx *ctx, wh_graph **out);
WH_API void wh_graph_destroy(wh_graph *g); /* NULL is a no-op */

/* The first error met while building (WH_OK if none). Once set, every builder call returns
 * WH_NONE or WH_ERR_POISONED and the message stays as it was. */
WH_API wh_status wh_graph_status(const wh_graph *g);
WH_API const char *wh_graph_error(const wh_graph *g); /* "" if none; lives with the graph */

/* Value inspection. dims must hold WH_MAX_DIMS; symbolic dims are reported as WH_BATCH_TIMES(k). */
WH_API wh_status wh_value_shape(const wh_graph *g, wh_value v, int *ndim, int64_t *dims);
WH_API wh_dtype wh_value_dtype(const wh_graph *g, wh_value v);
WH_API const char *wh_value_name(const wh_graph *g, wh_value v); /* lives with the graph */
/* The value with that name (inputs, parameters, constants and named ops), or WH_NONE. */
WH_API wh_value wh_graph_find(const wh_graph *g, const char *name);
WH_API int wh_graph_num_values(const wh_graph *g);
WH_API int wh_graph_num_nodes(const wh_graph *g);
/* Number of parameters and the i-th one (creation order). */
WH_API int wh_graph_num_params(const wh_graph *g);
WH_API wh_value wh_graph_param(const wh_graph *g, int i);
/* Give the value produced last a name (for dumps, find and fetch by name). */
WH_API wh_status wh_value_set_name(wh_graph *g, wh_value v, const char *name);

/* ----------------------------------------------------------- leaf values */

typedef enum wh_init_kind {
  WH_INIT_ZEROS = 0,
  WH_INIT_ONES,
  WH_INIT_CONSTANT,       /* a */
  WH_INIT_NORMAL,         /* mean a, std b */
  WH_INIT_UNIFORM,        /* [a, b) */
  WH_INIT_XAVIER_UNIFORM, /* gain a (0 means 1) */
  WH_INIT_XAVIER_NORMAL,  /* gain a (0 means 1) */
  WH_INIT_KAIMING_UNIFORM,/* fan_in mode, leaky-relu slope a (0: relu) */
  WH_INIT_KAIMING_NORMAL  /* fan_in mode, leaky-relu slope a (0: relu) */
} wh_init_kind;

/* Fans follow PyTorch: for dims [d0, d1, rest...] fan_in = d1*prod(rest), fan_out = d0*prod(rest)
 * (a weight stored [out, in] and used with transpose_b). Set fan_in/fan_out to override. */
typedef struct wh_init {
  wh_init_kind kind;
  float a, b;
  uint64_t seed;
  int64_t fan_in, fan_out; /* 0: derived from the shape */
} wh_init;

#define WH_INIT(kind_, a_, b_, seed_) ((wh_init){(kind_), (a_), (b_), (seed_), 0, 0})

/* A fed input. dims may hold one WH_BATCH(_TIMES) dimension. name is copied. */
WH_API wh_value wh_input(wh_graph *g, const char *name, wh_dtype dt, int ndim, const int64_t *dims);
/* A trainable parameter with a seeded initializer. No symbolic dimension. */
WH_API wh_value wh_param(wh_graph *g, const char *name, wh_dtype dt, int ndim, const int64_t *dims,
                         wh_init init);
/* A constant; data (ndim dims, dtype dt, contiguous) is copied. */
WH_API wh_value wh_constant(wh_graph *g, const char *name, wh_dtype dt, int ndim,
                            const int64_t *dims, const void *data);
WH_API wh_value wh_scalar(wh_graph *g, float x);

/* ------------------------------------------------------------------- ops */
/* Every builder returns the new value, or WH_NONE after poisoning the graph with a message that
 * names the op, the input index and the shapes. Inputs equal to WH_NONE return WH_NONE. */

/* op(a) @ op(b); a is [..., M, K] (or [..., K, M] with trans_a), b is [K, N] ([N, K] with trans_b)
 * shared by every leading index, or has the same leading dims as a (batched). */
WH_API wh_value wh_matmul(wh_graph *g, wh_value a, wh_value b, int trans_a, int trans_b);
/* Elementwise with NumPy broadcasting (shapes aligned on the right). */
WH_API wh_value wh_add(wh_graph *g, wh_value a, wh_value b);
WH_API wh_value wh_sub(wh_graph *g, wh_value a, wh_value b);
WH_API wh_value wh_mul(wh_graph *g, wh_value a, wh_value b);
WH_API wh_value wh_div(wh_graph *g, wh_value a, wh_value b);
WH_API wh_value wh_scale(wh_graph *g, wh_value x, float s);
/* x + b where b is 1-D and runs along x's axis (negative counts from the end). */
WH_API wh_value wh_bias_add(wh_graph *g, wh_value x, wh_value b, int axis);
WH_API wh_value wh_relu(wh_graph *g, wh_value x);
WH_API wh_value wh_gelu(wh_graph *g, wh_value x); /* tanh approximation */
WH_API wh_value wh_tanh(wh_graph *g, wh_value x);
WH_API wh_value wh_sigmoid(wh_graph *g, wh_value x);
WH_API wh_value wh_exp(wh_graph *g, wh_value x);
WH_API wh_value wh_log(wh_graph *g, wh_value x);
WH_API wh_value wh_softmax(wh_graph *g, wh_value x);     /* over the last axis */
WH_API wh_value wh_log_softmax(wh_graph *g, wh_value x); /* over the last axis */
/* Reduce over axes (naxes == 0: all axes). */
WH_API wh_value wh_sum(wh_graph *g, wh_value x, int naxes, const int *axes, int keepdims);
WH_API wh_value wh_mean(wh_graph *g, wh_value x, int naxes, const int *axes, int keepdims);
/* Same elements, new shape; a symbolic dimension stays symbolic (WH_BATCH_TIMES(k)). */
WH_API wh_value wh_reshape(wh_graph *g, wh_value x, int ndim, const int64_t *dims);
WH_API wh_value wh_permute(wh_graph *g, wh_value x, const int *perm);
WH_API wh_value wh_transpose(wh_graph *g, wh_value x, int axis0, int axis1);
/* x[..., start:end, ...] along axis (a non-symbolic axis). */
WH_API wh_value wh_slice(wh_graph *g, wh_value x, int axis, int64_t start, int64_t end);
WH_API wh_value wh_concat(wh_graph *g, int n, const wh_value *xs, int axis);
/* table [V, D] gathered by int32 indices [...] -> [..., D]. */
WH_API wh_value wh_embedding(wh_graph *g, wh_value table, wh_value indices);
/* Mean over rows of -log softmax(logits)[label]; logits [..., C] f32, labels [...] i32. */
WH_API wh_value wh_cross_entropy(wh_graph *g, wh_value logits, wh_value labels);
/* Mean of (pred - target)^2 over all elements. */
WH_API wh_value wh_mse(wh_graph *g, wh_value pred, wh_value target);
/* Train mode: zero with probability p, scale the rest by 1/(1-p); eval mode: identity.
 * The mask is a function of (seed, step, element): reproducible. */
WH_API wh_value wh_dropout(wh_graph *g, wh_value x, float p, uint64_t seed);
/* x [N, C, H, W], w [O, C, KH, KW] -> [N, O, OH, OW]. */
WH_API wh_value wh_conv2d(wh_graph *g, wh_value x, wh_value w, int stride, int padding);
WH_API wh_value wh_max_pool2d(wh_graph *g, wh_value x, int kernel, int stride, int padding);
/* Padding counts in the divisor (PyTorch's count_include_pad=True). */
WH_API wh_value wh_avg_pool2d(wh_graph *g, wh_value x, int kernel, int stride, int padding);

/* Layer normalisation over the last axis (size C): (x - mean) / sqrt(var + eps) * gamma + beta,
 * gamma and beta [C]. */
WH_API wh_value wh_layernorm(wh_graph *g, wh_value x, wh_value gamma, wh_value beta, float eps);
/* Causal multi-head self-attention. qkv is [.., T, 3C] holding q | k | v along the last axis (the
 * output of one fused projection); each is split into `heads` heads of C/heads. Returns the heads'
 * outputs side by side, [.., T, C], before the output projection. Scores are scaled by
 * 1/sqrt(C/heads). Backward recomputes the attention probabilities rather than keeping them. */
WH_API wh_value wh_attention(wh_graph *g, wh_value qkv, int heads);

/* ------------------------------------------------------------ hint scopes */
/* Whale-style hints. Nodes built inside a scope record it; serialization keeps it; the planner
 * reads it. In one process they change nothing. Scopes nest; wh_scope_end closes the innermost. */

typedef enum wh_hint_kind {
  WH_HINT_REPLICATE = 1, /* data-parallel replicas: n */
  WH_HINT_SPLIT = 2,     /* operator sharding into n parts */
  WH_HINT_STAGE = 3,     /* a pipeline stage; n is its index in order of opening */
  WH_HINT_RECOMPUTE = 4  /* activations made inside are recomputed in backward, not kept (n = 1) */
} wh_hint_kind;

typedef struct wh_hint {
  wh_hint_kind kind;
  int n;
} wh_hint;

WH_API wh_status wh_scope_replicate(wh_graph *g, int n);
WH_API wh_status wh_scope_split(wh_graph *g, int n);
WH_API wh_status wh_scope_stage(wh_graph *g);
/* Activation checkpointing: values computed inside (and not kept) are dropped after their last
 * forward use and recomputed from the scope's inputs when backward needs them, in sessions
 * created with recompute on. Bitwise the same results, a lower memory peak, more compute. */
WH_API wh_status wh_scope_recompute(wh_graph *g);
WH_API wh_status wh_scope_end(wh_graph *g);
WH_API wh_status wh_set_pipeline(wh_graph *g, int micro_batches);
WH_API int wh_graph_pipeline(const wh_graph *g); /* 0 when unset */
/* The scopes (outermost first) that the node producing v was built in; returns how many
 * (may exceed max; only max are written). Leaves report the scopes they were created in. */
WH_API int wh_value_hints(const wh_graph *g, wh_value v, wh_hint *out, int max);

/* ---------------------------------------------------------------- training */

/* Add the gradient nodes of the scalar loss to the graph (once per graph). */
WH_API wh_status wh_backward(wh_graph *g, wh_value loss);
/* The gradient of loss with respect to v (a parameter, or any value on the path), or WH_NONE. */
WH_API wh_value wh_grad(const wh_graph *g, wh_value v);

typedef enum wh_lr_schedule {
  WH_LR_CONSTANT = 0,
  WH_LR_WARMUP_COSINE = 1 /* linear warm-up over warmup_steps, cosine to min_lr at total_steps */
} wh_lr_schedule;

typedef struct wh_lr {
  wh_lr_schedule schedule;
  float lr;
  int64_t warmup_steps, total_steps;
  float min_lr;
} wh_lr;

typedef struct wh_sgd_options {
  size_t struct_size;
  wh_lr lr;
  float momentum, dampening;
  int nesterov;
  float weight_decay; /* L2, added to the gradient (PyTorch SGD) */
  float clip_norm;    /* > 0: scale gradients so their global L2 norm is at most this */
} wh_sgd_options;

#define WH_SGD_OPTIONS_INIT {sizeof(wh_sgd_options), {WH_LR_CONSTANT, 0.01f, 0, 0, 0.0f}, 0, 0, 0, 0, 0}

typedef struct wh_adamw_options {
  size_t struct_size;
  wh_lr lr;
  float beta1, beta2, eps;
  float weight_decay; /* decoupled */
  float clip_norm;    /* > 0: global-norm clipping */
} wh_adamw_options;

#define WH_ADAMW_OPTIONS_INIT \
  {sizeof(wh_adamw_options), {WH_LR_CONSTANT, 1e-3f, 0, 0, 0.0f}, 0.9f, 0.999f, 1e-8f, 0.01f, 0}

/* Add update nodes for every parameter with a gradient (after wh_backward; once per graph). */
WH_API wh_status wh_optimizer_sgd(wh_graph *g, const wh_sgd_options *opts);
WH_API wh_status wh_optimizer_adamw(wh_graph *g, const wh_adamw_options *opts);

/* ---------------------------------------------------------------- session */
/* A session runs a graph. It borrows the graph, which must outlive it and is frozen (no more
 * building) while any session uses it. Parameters and optimizer state live in the session. */

typedef struct wh_session wh_session;

typedef enum wh_run_mode {
  WH_RUN_TRAIN = 0, /* forward, backward, optimizer update; step count += 1 */
  WH_RUN_GRAD = 1,  /* forward and backward (train-mode dropout), no update */
  WH_RUN_EVAL = 2   /* forward only, dropout off */
} wh_run_mode;

struct wh_plan;
struct wh_comm;

typedef enum wh_device_kind { WH_DEVICE_CPU = 0, WH_DEVICE_CUDA = 1 } wh_device_kind;
typedef enum wh_precision { WH_PRECISION_F32 = 0, WH_PRECISION_TF32 = 1, WH_PRECISION_BF16 = 2 } wh_precision;
/* Number of CUDA devices a session could use (0 in a build without the CUDA backend). */
WH_API int wh_cuda_device_count(void);

typedef struct wh_session_options {
  size_t struct_size;
  int64_t batch;  /* value of the symbolic batch dimension (>= 1); ignored with a plan */
  int recompute;  /* honour wh_scope_recompute scopes (1, default) or keep every activation (0) */
  int inplace;    /* let elementwise ops overwrite an input that dies there (1, default) */
  /* Distributed execution: this rank's part of the plan (rank i of comm runs cluster device i).
   * Both borrowed; they must outlive the session. With a plan, wh_session_feed takes the global
   * batch (every rank feeds the same data) and each rank runs its share of every micro-batch;
   * the loss fetched is the global mean. Every layout a plan describes runs: data parallelism
   * (equal or unequal shares, micro-batches, ZeRO-1), pipelines (GPipe, 1F1B, data-parallel
   * stages), operator sharding and their combinations. The loss must be a mean over samples (as
   * wh_cross_entropy and wh_mse are). */
  const struct wh_plan *plan;
  struct wh_comm *comm;
  /* Where the session runs: WH_DEVICE_CPU (default) or WH_DEVICE_CUDA (a build with the CUDA
   * backend; parameters, state and intermediates live in device memory; feeds and fetches stay
   * host buffers, copied at each run). device_index: the CUDA device, -1 for the communicator's
   * local rank (modulo the devices visible), else 0. */
  wh_device_kind device;
  int device_index;
  /* Arithmetic of matrix products on CUDA: WH_PRECISION_F32 (exact fp32), WH_PRECISION_TF32,
   * or WH_PRECISION_BF16 (bf16 tensor cores, fp32 accumulation); values and master weights stay
   * fp32. The CPU backend computes fp32 whatever this says. */
  wh_precision precision;
  /* Data parallel on the CPU: reduce gradients and the loss in rank order (gathered, then summed
   * in a fixed order) instead of a ring, so R ranks with one micro-batch each give bit for bit
   * the losses and parameters of one rank running the same rows as R micro-batches, and a run
   * repeats exactly. It moves R times the bytes of a ring all-reduce. Bitwise equality with a
   * plain one-process step over the whole batch is not possible: its sums run in another order. */
  int deterministic;
  /* Data parallel, with shares the planner chose (not pinned by the caller): each step measures
   * every replica's compute; when one stays slower than the shares assume for a few steps, all
   * ranks switch to shares from the measured speeds at the same step boundary (1, default).
   * The global batch and the arithmetic stay: only which rows each replica takes changes. Never
   * with the deterministic reduction (its sums follow the rows) or a pipeline. 0: the plan's
   * shares throughout. */
  int rebalance;
  /* Mixed precision: the dtype activations and gradients are stored in between the nodes that
   * make and read them. WH_F32 (default): fp32 throughout. WH_BF16 or WH_F16: a precision pass
   * stores what backward reads (and gradients between backward nodes) narrow, casting back to fp32
   * for every kernel, so products and reductions accumulate in fp32, and parameters, their
   * gradients and optimizer state stay fp32 (master weights); the memory plan's activation bytes
   * halve. WH_F16 adds dynamic loss scaling: a step whose gradients overflowed on any rank is
   * skipped on every rank and the scale halves (wh_session_loss_scale). fp16 runs without a
   * pipeline and without ZeRO-1. A plan made with a mixed precision sets it (WH_F32 here takes
   * the plan's). On CUDA it brings 16-bit products (precision WH_PRECISION_BF16 unless TF32 is
   * asked for). */
  wh_dtype mixed;
} wh_session_options;

#define WH_SESSION_OPTIONS_INIT {sizeof(wh_session_options), 1, 1, 1, NULL, NULL, WH_DEVICE_CPU, -1, WH_PRECISION_F32, 0, 1, WH_F32}

WH_API wh_status wh_session_create(wh_ctx *ctx, wh_graph *g, const wh_session_options *opts,
                                   wh_session **out);
WH_API void wh_session_destroy(wh_session *s); /* NULL is a no-op */
/* Rebind the batch dimension (re-plans memory; parameters and state are kept). */
WH_API wh_status wh_session_set_batch(wh_session *s, int64_t batch);
/* Bind an input to the caller's buffer, borrowed (not copied) until the input is fed again or
 * the session is destroyed. bytes must equal the input's size at the bound batch. */
WH_API wh_status wh_session_feed(wh_session *s, wh_value input, const void *data, size_t bytes);
WH_API wh_status wh_session_run(wh_session *s, wh_run_mode mode);
/* wh_session_run(s, WH_RUN_TRAIN). */
WH_API wh_status wh_session_step(wh_session *s);
/* Copy a value of the last run into out. Parameters, gradients, the loss and values marked with
 * wh_graph_keep are always fetchable; other intermediates may have been overwritten. */
WH_API wh_status wh_session_fetch(wh_session *s, wh_value v, void *out, size_t bytes);
/* Parameter values: copy in and out (bytes = full size). */
WH_API wh_status wh_session_get_param(wh_session *s, wh_value p, void *out, size_t bytes);
WH_API wh_status wh_session_set_param(wh_session *s, wh_value p, const void *data, size_t bytes);
WH_API int64_t wh_session_steps(const wh_session *s); /* optimizer steps taken */
/* Size in bytes of v at the bound batch. */
WH_API size_t wh_session_bytes(const wh_session *s, wh_value v);

/* Keep v alive to the end of each run so it can be fetched (before the session is created). */
WH_API wh_status wh_graph_keep(wh_graph *g, wh_value v);

typedef struct wh_memory_stats {
  size_t struct_size;
  uint64_t arena_bytes;        /* the static plan's peak: one arena for all intermediates */
  uint64_t intermediate_bytes; /* sum of every intermediate's size (no reuse) */
  uint64_t param_bytes;
  uint64_t state_bytes;        /* optimizer state */
  int64_t num_intermediates;
  uint64_t live_peak_bytes;    /* most intermediate bytes alive at one node: the plan's lower bound */
  int64_t inplace_ops;         /* outputs written over a dying input */
  int64_t recomputed_ops;      /* forward nodes re-run in backward (recompute scopes) */
  uint64_t saved_bytes;        /* activations kept from forward for backward (what mixed precision halves) */
} wh_memory_stats;

#define WH_MEMORY_STATS_INIT {sizeof(wh_memory_stats), 0, 0, 0, 0, 0, 0, 0, 0, 0}

WH_API wh_status wh_session_memory(const wh_session *s, wh_memory_stats *out);

/* Per-op timing: with on = 1, each later run times every node (waiting for the device after
 * each, so runs are slower); 0 stops and clears. The report (freed with wh_free) lists op kinds by
 * time: calls and milliseconds per run, share of the total. */
WH_API wh_status wh_session_profile(wh_session *s, int on);
WH_API wh_status wh_session_profile_report(const wh_session *s, char **out);

/* This rank's communication over its runs: every operation's seconds from its start to when it was
 * seen done (operations that block count whole), and the part of them the step spent waiting. The
 * share hidden behind compute is 1 - exposed_s / busy_s. Completion is noticed between nodes, so
 * busy_s of an overlapped operation can run up to one node long. */
typedef struct wh_comm_stats {
  size_t struct_size;
  double busy_s;
  double exposed_s;
  int64_t ops;        /* operations counted (a gradient bucket, a transfer, a collective) */
} wh_comm_stats;
#define WH_COMM_STATS_INIT {sizeof(wh_comm_stats), 0, 0, 0}
/* Read the counters into out (reset != 0: then start them again from zero). A session without a
 * plan communicates nothing: zeros. */
WH_API wh_status wh_session_comm_stats(wh_session *s, wh_comm_stats *out, int reset);

/* The rows per micro-batch each device of this rank's stage takes now, indexed like the cluster
 * (wh_plan_shares; devices of other stages 0; n at least the plan's devices), or a single
 * process's batch in shares[0]; and how often the session has rebalanced them (*rebalances, may
 * be NULL; see wh_session_options.rebalance). */
WH_API wh_status wh_session_shares(wh_session *s, int64_t *shares, int n, int *rebalances);

/* fp16 mixed precision: the loss scale the next step uses, and how many steps were skipped because
 * a gradient overflowed (both may be NULL). Other sessions: 1 and 0. */
WH_API wh_status wh_session_loss_scale(const wh_session *s, double *scale, int64_t *skipped);

/* ---------------------------------------------------------- serialization */

/* Save the graph (structure, hints, initializers; no trained values) as protobuf. */
WH_API wh_status wh_graph_save(const wh_graph *g, const char *path);
/* Save the session's graph with its current parameter values. */
WH_API wh_status wh_session_save(const wh_session *s, const char *path);
/* Load a saved graph; parameters saved with values start from those values. *out is owned. */
WH_API wh_status wh_graph_load(wh_ctx *ctx, const char *path, wh_graph **out);

/* ------------------------------------------------------------ checkpoints */
/* The whole training state of a session - parameters, every optimizer state (Adam moments,
 * momentum), the step count (which is the learning-rate schedule's position and dropout's
 * randomness: both are functions of the step) and a blob of the host's (data cursor, epoch) - in
 * safetensors files, crash-safe, loadable into any layout:
 *
 *   DIR/latest                                          names the last complete checkpoint
 *   DIR/step-00000020/rank-00000-of-00004.safetensors   what rank 0 of 4 writes
 *   DIR/step-00000020/model.safetensors.index.json      each tensor's dtype, logical shape and the
 *                                                       slice each file holds, with checksums
 *
 * Each rank writes only the slices it is the one writer of (data-parallel replica 0, each shard of
 * an operator-sharded parameter, each rank's ZeRO-1 range, each pipeline stage's parameters); no
 * gather. A file is written under a temporary name, fsynced and renamed, its directory fsynced;
 * the index follows, `latest` last: a save killed at any point leaves the previous checkpoint
 * loadable. Every tensor slice, file header, the index and `latest` carry a CRC-32C: a flipped
 * byte loads as WH_ERR_CORRUPT naming the tensor and the file. The format is
 * docs/checkpoint.md; a rank file opens with the `safetensors` Python package. */

typedef struct wh_checkpoint_options {
  size_t struct_size;
  const void *meta;  /* the host's blob, borrowed for the call; NULL: none */
  size_t meta_bytes; /* at most 16 MiB */
  int keep;          /* complete checkpoints kept in DIR, newest first, older ones removed; 0: all */
} wh_checkpoint_options;

#define WH_CHECKPOINT_OPTIONS_INIT {sizeof(wh_checkpoint_options), NULL, 0, 2}

/* Save s's state into DIR (created if missing; its parent must exist; the same directory for every
 * rank: one machine or a shared file system) as step-<steps>. Collective
 * over a distributed session's communicator: every rank calls it, and every rank returns the same
 * status (a rank's failure is reported by all, with its message). opts may be NULL. */
WH_API wh_status wh_checkpoint_save(wh_session *s, const char *dir, const wh_checkpoint_options *opts);
/* Load the checkpoint DIR/latest names (or DIR itself when it is a step directory) into s, whatever
 * layout saved it: each rank reads the slices it needs for its own part. s must run the graph the
 * checkpoint was saved from (same parameter and state names, dtypes and shapes: otherwise
 * WH_ERR_NOT_FOUND or WH_ERR_SHAPE naming the tensor). The step count (and the updates applied, and fp16's loss scale) is restored; the host's blob
 * is copied into meta (meta_cap bytes; a larger blob fails before anything is loaded) and its size
 * into *meta_bytes (either may be NULL). Collective like the save. WH_ERR_NOT_FOUND when DIR holds
 * no complete checkpoint. A mismatch or a corrupt index leaves s unchanged; a tensor failing its
 * checksum (WH_ERR_CORRUPT) or an I/O error while reading leaves s's state partly loaded. */
WH_API wh_status wh_checkpoint_load(wh_session *s, const char *dir, void *meta, size_t meta_cap,
                                    size_t *meta_bytes);

typedef struct wh_checkpoint_info {
  size_t struct_size;
  int64_t step;
  int ranks;           /* of the session that saved it */
  int files, tensors;
  uint64_t data_bytes; /* tensor bytes over all files */
  size_t meta_bytes;   /* the host's blob */
  char name[64];       /* the step directory, e.g. "step-00000020" */
  char layout[160];    /* the saving session's layout as rank 0 saw it, e.g. "4 ranks: 1 stage, ..." */
} wh_checkpoint_info;

#define WH_CHECKPOINT_INFO_INIT {sizeof(wh_checkpoint_info), 0, 0, 0, 0, 0, 0, "", ""}

/* What the checkpoint of DIR (as wh_checkpoint_load finds it) holds, its index checked; no session
 * needed. WH_ERR_NOT_FOUND when there is none. */
WH_API wh_status wh_checkpoint_find(wh_ctx *ctx, const char *dir, wh_checkpoint_info *out);

typedef enum wh_format { WH_FORMAT_TEXT = 0, WH_FORMAT_DOT = 1 } wh_format;
/* A readable dump. *out is allocated by libwhale; release it with wh_free. */
WH_API wh_status wh_graph_dump(const wh_graph *g, wh_format fmt, char **out);
/* This rank's program as it runs, in execution order: every node with its phase and shapes at the
 * bound batch (recomputed clones marked '), and in a distributed session every collective of a
 * step: which gradients fill each all-reduce bucket, its bytes, and the peers it sends to and
 * receives from. *out freed with wh_free. */
WH_API wh_status wh_session_dump(const wh_session *s, wh_format fmt, char **out);
WH_API void wh_free(void *p);


/* ----------------------------------------------------------- communication */
/* Ranks talk through real engines: Open MPI (always built) for launch and CPU/host transport,
 * NCCL (built with CUDA) for GPU buffers. Every wait has a deadline: a dead or stopped peer makes
 * the call return WH_ERR_TIMEOUT (or WH_ERR_COMM) with a message naming the op, the peer rank(s),
 * the bytes and the time waited; the communicator is then broken and only destroy is allowed.
 * A context's communicators are used from one thread at a time. */

typedef struct wh_comm wh_comm;
typedef struct wh_request wh_request;

typedef enum wh_comm_backend { WH_COMM_MPI = 0, WH_COMM_NCCL = 1 } wh_comm_backend;
typedef enum wh_reduce_op { WH_REDUCE_SUM = 0, WH_REDUCE_AVG = 1 } wh_reduce_op;

typedef struct wh_comm_options {
  size_t struct_size;
  wh_comm_backend backend;
  /* The host's communicator, as a pointer to its MPI_Comm (borrowed, duplicated at create).
   * NULL: MPI_COMM_WORLD, initialising MPI if the host did not (and finalising it at
   * wh_ctx_destroy, only then). */
  const void *mpi_comm;
  double timeout_s; /* deadline of every wait; 0: 600 s, or WH_COMM_TIMEOUT_S from the environment */
  int device;       /* NCCL: the CUDA device; -1: the local rank */
} wh_comm_options;

#define WH_COMM_OPTIONS_INIT {sizeof(wh_comm_options), WH_COMM_MPI, NULL, 0.0, -1}

/* Collective over the parent communicator's ranks. *out is owned: wh_comm_destroy it. */
WH_API wh_status wh_comm_create(wh_ctx *ctx, const wh_comm_options *opts, wh_comm **out);
WH_API void wh_comm_destroy(wh_comm *c); /* NULL is a no-op; local only, never waits on peers */
WH_API int wh_comm_rank(const wh_comm *c);
WH_API int wh_comm_size(const wh_comm *c);
WH_API int wh_comm_local_rank(const wh_comm *c); /* among the ranks on this node */
WH_API int wh_comm_local_size(const wh_comm *c);
WH_API wh_comm_backend wh_comm_backend_of(const wh_comm *c);
/* A sub-communicator of the n listed parent ranks (in that order: new rank i is ranks[i]).
 * Collective over every parent rank, each passing the same list; non-members get *out = NULL. */
WH_API wh_status wh_comm_split(wh_comm *parent, int n, const int *ranks, wh_comm **out);

/* What the launcher says about this process, from the environment, first match wins:
 * Open MPI (OMPI_COMM_WORLD_RANK/SIZE/LOCAL_RANK/LOCAL_SIZE), MPICH/PMI (PMI_RANK/PMI_SIZE,
 * MPI_LOCALRANKID/MPI_LOCALNRANKS), Slurm (SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID), torchrun
 * (RANK/WORLD_SIZE/LOCAL_RANK/LOCAL_WORLD_SIZE); none: a single process. */
typedef struct wh_launch_info {
  int rank, size, local_rank, local_size;
  const char *launcher; /* "openmpi", "mpich", "slurm", "torchrun" or "none"; static */
} wh_launch_info;
WH_API wh_launch_info wh_launch_detect(void);

/* Non-blocking operations return a request that wh_request_wait (or a wh_request_test that
 * reports done) completes and frees. Buffers are borrowed until then. counts are in elements of
 * dt (WH_F32, WH_F64, WH_I32, WH_BF16). Collectives must be started in the same order on every
 * rank. send == NULL or send == recv means in place. */
WH_API wh_status wh_comm_isend(wh_comm *c, const void *buf, size_t count, wh_dtype dt, int peer, int tag,
                               wh_request **req);
WH_API wh_status wh_comm_irecv(wh_comm *c, void *buf, size_t count, wh_dtype dt, int peer, int tag,
                               wh_request **req);
WH_API wh_status wh_comm_iallreduce(wh_comm *c, const void *send, void *recv, size_t count, wh_dtype dt,
                                    wh_reduce_op op, wh_request **req);
/* send holds size*recvcount elements; rank r receives the reduced block r. */
WH_API wh_status wh_comm_ireduce_scatter(wh_comm *c, const void *send, void *recv, size_t recvcount, wh_dtype dt,
                                         wh_reduce_op op, wh_request **req);
/* Rank r contributes counts[r] elements (counts NULL: every rank count); recv holds all blocks in
 * rank order. send NULL: the caller's block is already in place in recv. */
WH_API wh_status wh_comm_iallgather(wh_comm *c, const void *send, void *recv, size_t count, const size_t *counts,
                                    wh_dtype dt, wh_request **req);
WH_API wh_status wh_comm_ibroadcast(wh_comm *c, void *buf, size_t count, wh_dtype dt, int root, wh_request **req);
WH_API wh_status wh_comm_ibarrier(wh_comm *c, wh_request **req);
WH_API wh_status wh_request_test(wh_request *req, int *done); /* done: the request is freed */
WH_API wh_status wh_request_wait(wh_request *req);           /* frees the request, even on error */

/* Blocking forms: start and wait. */
WH_API wh_status wh_comm_send(wh_comm *c, const void *buf, size_t count, wh_dtype dt, int peer, int tag);
WH_API wh_status wh_comm_recv(wh_comm *c, void *buf, size_t count, wh_dtype dt, int peer, int tag);
WH_API wh_status wh_comm_allreduce(wh_comm *c, const void *send, void *recv, size_t count, wh_dtype dt,
                                   wh_reduce_op op);
WH_API wh_status wh_comm_reduce_scatter(wh_comm *c, const void *send, void *recv, size_t recvcount, wh_dtype dt,
                                        wh_reduce_op op);
WH_API wh_status wh_comm_allgather(wh_comm *c, const void *send, void *recv, size_t count, const size_t *counts,
                                   wh_dtype dt);
WH_API wh_status wh_comm_broadcast(wh_comm *c, void *buf, size_t count, wh_dtype dt, int root);
WH_API wh_status wh_comm_barrier(wh_comm *c);

/* Gradient fusion: tensors added in order are packed into buckets of bucket_bytes; each bucket's
 * allreduce starts as soon as it is full, so it overlaps whatever the caller does next (progress
 * is made inside every wh_fusion_* call). wh_fusion_wait flushes the last bucket, waits for all
 * and writes the reduced values back into the tensors. Tensors are borrowed until then. */
typedef struct wh_fusion wh_fusion;
WH_API wh_status wh_fusion_create(wh_comm *c, size_t bucket_bytes, wh_dtype dt, wh_reduce_op op, wh_fusion **out);
WH_API void wh_fusion_destroy(wh_fusion *f);
WH_API wh_status wh_fusion_add(wh_fusion *f, void *tensor, size_t count);
WH_API wh_status wh_fusion_poll(wh_fusion *f); /* make progress without blocking */
WH_API wh_status wh_fusion_wait(wh_fusion *f); /* all added tensors reduced; ready for reuse */
WH_API int wh_fusion_buckets_started(const wh_fusion *f);


/* ----------------------------------------------------------------- planner */
/* A cluster describes the devices a plan may use, by measured or datasheet numbers; the planner
 * chooses data parallelism with batch shares by device speed, pipeline stages balanced by compute
 * and memory, operator sharding, or a hybrid, and explains its choice. */

typedef struct wh_cluster wh_cluster;

typedef struct wh_device_desc {
  size_t struct_size;
  const char *kind;  /* a name for printing (copied, at most 31 characters) */
  double flops_f32;  /* peak FLOP/s */
  double flops_bf16; /* peak FLOP/s with 16-bit inputs (0: as f32) */
  double mem_bw;     /* bytes/s */
  double mem_bytes;  /* capacity */
  double link_bw;    /* intra-node link per device, bytes/s (0: PCIe Gen3 x16, 16 GB/s) */
  double eff_flops, eff_bw; /* sustained fraction of the peaks (0: library default) */
} wh_device_desc;

#define WH_DEVICE_DESC_INIT {sizeof(wh_device_desc), "custom", 0, 0, 0, 0, 0, 0, 0}

WH_API wh_status wh_cluster_create(wh_ctx *ctx, wh_cluster **out);
WH_API void wh_cluster_destroy(wh_cluster *c); /* NULL is a no-op */
/* count devices of a catalogue kind on node: P100-16GB, V100-16GB, V100-32GB, T4, A10, A100-40GB,
 * A100-80GB, H100, H200, CPU (figures from public datasheets, cited in src/planner/catalogue.c). */
WH_API wh_status wh_cluster_add(wh_cluster *c, const char *kind, int node, int count);
WH_API wh_status wh_cluster_add_custom(wh_cluster *c, const wh_device_desc *d, int node, int count);
/* Links: within a node (0 bandwidth: each device's own link) and across nodes; bytes/s, seconds. */
WH_API wh_status wh_cluster_set_links(wh_cluster *c, double intra_bw, double intra_lat, double inter_bw,
                                      double inter_lat);
WH_API int wh_cluster_size(const wh_cluster *c);
/* Device i's figures (kind points into the cluster, valid while it lives). */
WH_API wh_status wh_cluster_device(const wh_cluster *c, int i, wh_device_desc *out);
/* A measured profile overrides the cost model's roofline: report is the text of
 * wh_session_profile_report for a single-process training session of g at batch `batch` on device
 * `device`'s kind. Each op kind it lists gets the ratio of its measured time to what the roofline
 * predicts for g's nodes of that kind, on `device` and every device of the same kind; plans made
 * afterwards use it, and wh_cluster_save keeps it ("op_time_scale"). */
WH_API wh_status wh_cluster_set_profile(wh_cluster *c, int device, const wh_graph *g, int64_t batch,
                                        const char *report);
/* A readable listing of the cluster; *out freed with wh_free. */
WH_API wh_status wh_cluster_describe(const wh_cluster *c, char **out);
/* A cluster from a JSON file (schema: docs/cluster.md): links, then nodes of devices by catalogue
 * kind (any figure may be overridden) or fully described. Errors name the file, the JSON path and
 * what is wrong (WH_ERR_IO: unreadable; WH_ERR_CORRUPT: not JSON or not the schema). *out is owned. */
WH_API wh_status wh_cluster_load(wh_ctx *ctx, const char *path, wh_cluster **out);
/* Write c in that schema; loading the file gives a cluster that describes identically. */
WH_API wh_status wh_cluster_save(const wh_cluster *c, const char *path);
/* This process's machine as a one-node cluster, measured here: the CPU (GEMM rate of libwhale's
 * matmul on the context's threads, STREAM-triad memory bandwidth, physical or cgroup memory), then
 * with CUDA each visible GPU (properties and a cuBLAS/copy calibration). Takes about a second. */
WH_API wh_status wh_cluster_probe(wh_ctx *ctx, wh_cluster **out);

typedef struct wh_plan wh_plan;

typedef enum wh_schedule { WH_SCHEDULE_AUTO = -1, WH_SCHEDULE_GPIPE = 0, WH_SCHEDULE_1F1B = 1 } wh_schedule;

typedef struct wh_plan_options {
  size_t struct_size;
  int64_t global_batch;   /* samples per training step, over all replicas (required) */
  int stages;             /* pipeline stages; 0: search (hints may fix it) */
  int micro_batches;      /* 0: search */
  wh_schedule schedule;   /* AUTO: search */
  int allow_tp;           /* let the search shard operators inside a stage */
  int allow_recompute;    /* let the search recompute activations when memory is short */
  int zero1;              /* shard optimizer state across data-parallel replicas; -1: search */
  int even_shares;        /* baseline: every replica gets the same batch share */
  int even_layers;        /* baseline: every stage gets the same number of segments */
  /* Mixed precision (wh_session_options.mixed): WH_BF16 or WH_F16 costs the model as the precision
   * pass runs it (products at the devices' 16-bit rate, stored activations in half the bytes,
   * the casts' traffic), and sessions on the plan run the pass. WH_F32 (default): none. */
  wh_dtype mixed;
} wh_plan_options;

#define WH_PLAN_OPTIONS_INIT {sizeof(wh_plan_options), 0, 0, 0, WH_SCHEDULE_AUTO, 1, 1, 0, 0, 0, WH_F32}

/* Plan the training step of g (after wh_backward and an optimizer) on cluster c. */
WH_API wh_status wh_plan_create(wh_ctx *ctx, const wh_graph *g, const wh_cluster *c, const wh_plan_options *opts,
                                wh_plan **out);
WH_API void wh_plan_destroy(wh_plan *p); /* NULL is a no-op */
WH_API double wh_plan_step_time(const wh_plan *p); /* the search's estimate, seconds */
WH_API int wh_plan_num_stages(const wh_plan *p);
WH_API int wh_plan_micro_batches(const wh_plan *p);
WH_API wh_schedule wh_plan_schedule(const wh_plan *p);
/* Devices that share each replica's operators (operator sharding; 1: none). */
WH_API int wh_plan_tp(const wh_plan *p);
/* Whether the optimizer state is sharded over the data-parallel replicas (ZeRO-1). */
WH_API int wh_plan_zero1(const wh_plan *p);
/* The mixed precision the plan was costed for and its sessions run (WH_F32: none). */
WH_API wh_dtype wh_plan_mixed(const wh_plan *p);
/* Samples per micro-batch of each device (indexed like the cluster; 0 for unused devices). */
WH_API wh_status wh_plan_shares(const wh_plan *p, int64_t *shares, int n);
/* Per stage and replica: devices, segments, batch share, predicted compute / communication /
 * bubble, memory against capacity, and why it beat the runner-up. *out freed with wh_free. */
WH_API wh_status wh_plan_explain(const wh_plan *p, char **out);
WH_API wh_status wh_plan_dump(const wh_plan *p, wh_format fmt, char **out);
/* Save a plan as protobuf (message Plan in proto/whale.proto): everything it explains, dumps and
 * simulates with, figures bit for bit. */
WH_API wh_status wh_plan_save(const wh_plan *p, const char *path);
/* Load a saved plan; it explains, dumps and simulates (on a cluster of the same device count) like
 * the saved one. Truncated or corrupt files: WH_ERR_CORRUPT. *out is owned: wh_plan_destroy it. */
WH_API wh_status wh_plan_load(wh_ctx *ctx, const char *path, wh_plan **out);

typedef struct wh_sim_result {
  size_t struct_size;
  double step_time;       /* seconds for one training step */
  double bubble_fraction; /* idle share of the busiest device's step */
  int num_devices;
  double util[64];        /* busy fraction of the first 64 devices */
} wh_sim_result;

#define WH_SIM_RESULT_INIT {sizeof(wh_sim_result), 0, 0, 0, {0}}

/* A whole plan fixed by the caller (the planner only costs and checks it). */
typedef struct wh_plan_layout {
  size_t struct_size;
  int stages;
  const int *last_segment; /* per stage, the last segment it runs (NULL: an even split) */
  const int *devices;      /* every cluster device once, stage-major groups (NULL: the planner's order) */
  const int64_t *shares;   /* per stage, per replica: samples per micro-batch (NULL: the planner's) */
  int micro_batches;
  wh_schedule schedule;    /* GPIPE or 1F1B */
  int tp;                  /* devices per replica (operator sharding) */
  int recompute, zero1;
  wh_dtype mixed;          /* as wh_plan_options.mixed */
} wh_plan_layout;

#define WH_PLAN_LAYOUT_INIT {sizeof(wh_plan_layout), 1, NULL, NULL, NULL, 1, WH_SCHEDULE_1F1B, 1, 0, 0, WH_F32}

WH_API wh_status wh_plan_create_pinned(wh_ctx *ctx, const wh_graph *g, const wh_cluster *c, int64_t global_batch,
                                       const wh_plan_layout *layout, wh_plan **out);
/* Segments of the graph's forward chain (what last_segment indexes). */
WH_API int wh_plan_num_segments(const wh_plan *p);

/* Discrete-event simulation of one step of plan p on c (the cluster it was planned for). */
WH_API wh_status wh_plan_simulate(const wh_plan *p, const wh_cluster *c, wh_sim_result *out);

#ifdef __cplusplus
}
#endif
#endif /* WHALE_H */
