/* ir.h - the graph IR shared by every layer: values, nodes, hint scopes, the op registry.
 * A graph's node array is in creation order, which is always a topological order. */
#ifndef WH_IR_H
#define WH_IR_H

#include <stdarg.h>
#include <stdint.h>

#include "whale.h"

/* A shape; d[i] >= 0 is a fixed size, d[i] < 0 is (-d[i]) * B (symbolic batch). */
typedef struct wh__shape {
  int ndim;
  int64_t d[WH_MAX_DIMS];
} wh__shape;

typedef enum wh__role {
  WH_ROLE_INPUT = 0,
  WH_ROLE_PARAM = 1,
  WH_ROLE_CONST = 2,
  WH_ROLE_ACT = 3,   /* produced by a forward node */
  WH_ROLE_GRAD = 4,  /* produced by a backward node */
  WH_ROLE_STATE = 5, /* optimizer state: persistent, zero-initialised */
  WH_ROLE_BUFFER = 6 /* programs only: persistent runtime storage (gradient accumulation, shards) */
} wh__role;

/* Values that live across runs (caller- or session-owned storage, never in the arena). */
static inline int wh__role_persistent(wh__role r) {
  return r == WH_ROLE_PARAM || r == WH_ROLE_STATE || r == WH_ROLE_CONST || r == WH_ROLE_INPUT || r == WH_ROLE_BUFFER;
}

typedef enum wh__phase { WH_PHASE_FORWARD = 0, WH_PHASE_BACKWARD = 1, WH_PHASE_UPDATE = 2 } wh__phase;

typedef struct wh__value {
  char *name;        /* owned; may be NULL */
  wh_dtype dtype;
  wh__shape shape;
  wh__role role;
  int32_t producer;  /* node index, -1 for leaves */
  int32_t scope;     /* innermost scope at creation, -1 for none */
  wh_init init;      /* parameters */
  void *data;        /* owned: constant data, or a parameter's stored initial values (may be NULL) */
  int keep;          /* alive to the end of a run (fetchable) */
} wh__value;

#define WH_MAX_IATTR 24
#define WH_MAX_FATTR 12

typedef struct wh__node {
  int op;
  int n_in;
  int32_t *in;       /* owned, n_in value ids */
  int32_t out;       /* value id, or -1 for nodes that only update state */
  int64_t ia[WH_MAX_IATTR];
  double fa[WH_MAX_FATTR];
  int n_ia, n_fa;
  wh__phase phase;
  int32_t fwd;       /* the forward node a backward/update node belongs to; -1 if none */
  int32_t scope;     /* innermost scope at creation, -1 for none */
} wh__node;

typedef struct wh__scope {
  wh_hint_kind kind;
  int n;
  int32_t parent;
} wh__scope;

struct wh_graph {
  wh_ctx *ctx;
  wh__value *values;
  int n_values, cap_values;
  wh__node *nodes;
  int n_nodes, cap_nodes;
  wh__scope *scopes;
  int n_scopes, cap_scopes;
  int32_t cur_scope;
  int n_stages;
  int micro_batches;
  wh_status status;
  char err[1024];
  int frozen;         /* sessions using it */
  /* what node builders stamp on new nodes */
  wh__phase cur_phase;
  int32_t cur_fwd;
  /* autodiff and optimizer */
  int32_t loss;       /* -1 until wh_backward */
  int32_t *grad;      /* value id -> gradient value id (-1), n_values long after wh_backward */
  int n_grad;
  int has_optimizer;
};

/* ---- building helpers (graph.c) */
/* Record an error (first one wins), mirror it into the context, return the status. */
wh_status wh__graph_fail(wh_graph *g, wh_status s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* WH_OK if g can take a new node, else the status to return. */
wh_status wh__graph_check(wh_graph *g);
wh_value wh__value_new(wh_graph *g, const char *name, wh_dtype dt, const wh__shape *sh, wh__role role);
/* Add a node of op over inputs with attrs, run its shape function, return its output (or
 * WH_NONE on failure, the graph poisoned). */
wh_value wh__node_add(wh_graph *g, int op, int n_in, const int32_t *in, const int64_t *ia, int n_ia,
                      const double *fa, int n_fa);
/* Same, for nodes without output (updates). Returns the node index or -1. */
int wh__node_add_noout(wh_graph *g, int op, int n_in, const int32_t *in, const int64_t *ia,
                       int n_ia, const double *fa, int n_fa);
const char *wh__shape_str(const wh__shape *s, char *buf, int cap);
int wh__valid_value(const wh_graph *g, wh_value v);
/* Make *arr hold at least need elements of elem bytes (capacity doubling, new slots zeroed);
 * 0 when out of memory, *arr then unchanged. */
int wh__grow(void **arr, int *cap, int need, size_t elem);
/* Scope of the node producing v, or the scope of a leaf. */
int32_t wh__value_scope(const wh_graph *g, wh_value v);

/* ---- shapes (shape.c) */
int64_t wh__dim(int64_t d, int64_t batch);              /* concrete size of a dim */
int64_t wh__numel(const wh__shape *s, int64_t batch);
int wh__shape_eq(const wh__shape *a, const wh__shape *b);
int wh__shape_symbolic_count(const wh__shape *s);
/* numel as c * B^p: returns c, sets *p (0 or 1). */
int64_t wh__numel_sym(const wh__shape *s, int *p);
size_t wh__dtype_size(wh_dtype dt);
const char *wh__dtype_name(wh_dtype dt);
/* NumPy broadcast of a and b into out; 0 if they do not broadcast. */
int wh__broadcast(const wh__shape *a, const wh__shape *b, wh__shape *out);

/* ---- the op registry (ops.c, ops.def, ops/) */
typedef struct wh__cost {
  double flops;
  double bytes_read, bytes_written;
} wh__cost;

/* ---- operator sharding (shard.c): where a value lives across the tp ranks of one replica */
typedef enum wh__lay_kind {
  WH_LAY_R = 0, /* replicated: every rank holds all of it */
  WH_LAY_S = 1, /* split: dimension dim, viewed as [groups, tp, rest], rank r holds [:, r, :] */
  WH_LAY_P = 2  /* partial: every rank holds the full shape; the value is the sum over ranks */
} wh__lay_kind;

typedef struct wh__layout {
  int8_t kind, dim, groups;
} wh__layout;

/* What a sharding rule is asked: the node (attributes may be rewritten to the local shapes), the
 * program's values (global shapes), the layouts its inputs have now. It fills want[] (the layouts
 * it needs its inputs in: conversions are inserted where they differ) and *out. A rule never
 * fails: replicated inputs and output are always correct. */
typedef struct wh__shard_q {
  const struct wh__value *values;
  int tp, index;      /* shards per replica, this rank's shard */
  const wh__layout *in;
  wh__layout *want;
  wh__layout out;
} wh__shard_q;
typedef void (*wh__shard_fn)(wh__shard_q *q, struct wh__node *n);

/* Who builds an op's nodes (ops.def's kind column). */
typedef enum wh__op_kind {
  WH_OPK_FORWARD = 0, /* a public wh_* builder, in user graphs */
  WH_OPK_BACKWARD,    /* gradient builders */
  WH_OPK_UPDATE,      /* the optimizer */
  WH_OPK_PROGRAM      /* only the partitioner, inside a rank's program; refused in graphs */
} wh__op_kind;

/* An op's registry row: defined with its family in ir/ops/<family>.c (see ops.def). */
typedef struct wh__op_def {
  const char *name;
  wh__op_kind kind;
  int min_in, max_in;   /* max_in -1: any number */
  int has_out;
  /* Fill out's dtype and shape from the inputs and attrs; fail the graph on mismatch. */
  wh_status (*shape)(wh_graph *g, const wh__node *n, wh__value *out);
  /* Build dx[i] for the inputs with need[i] (others left WH_NONE) from the output gradient dy;
   * NULL: the op is not differentiable. */
  wh_status (*grad)(wh_graph *g, const wh__node *n, wh_value dy, const int *need, wh_value *dx);
  /* FLOPs and bytes at a given batch size (for the cost model). */
  void (*cost)(const wh_graph *g, const wh__node *n, int64_t batch, wh__cost *c);
  /* FLOPs per element for the elementwise estimate most ops' cost is (ir/ops/family.h). */
  double flops;
  /* Inputs (bit i = input i) the output may overwrite when that input dies at this node and has
   * the output's size: every kernel of the op reads an element (or a row) before writing it. */
  unsigned inplace;
  /* Operator sharding: the layouts this op accepts and produces (NULL: replicated only). */
  wh__shard_fn shard;
} wh__op_def;

/* The ops, numbered in the order of ops.def (the one list of ops: see there to add one). */
typedef enum wh__op {
#define WH_OP(id, name, kind, family, kernel, backends) WH_OP_##id,
#include "ops.def"
  WH_OP_COUNT
} wh__op;

/* The registry: every op's row (ops.c). */
extern const wh__op_def *const wh__ops[WH_OP_COUNT];
/* Op index by name, -1 if unknown. */
int wh__op_find(const char *name);

/* Layout helpers (shard.c) */
int wh__lay_eq(wh__layout a, wh__layout b);
/* Shape of the local part of a value of global shape g in layout l over tp ranks. */
wh__shape wh__lay_local(const wh__shape *g, wh__layout l, int tp);
/* Can dimension dim of a value of shape sh be split tp ways in groups (fixed size, divisible)? */
int wh__lay_can_split(const wh__shape *sh, int dim, int groups, int tp);
const char *wh__lay_str(wh__layout l, char *buf, int cap);

/* ---- files (serialize.c) */
/* Save g to path; a parameter's values come from param_data(arg, value id) when given (NULL when
 * it has none: the save fails naming it), else from the graph's own stored values (if any). */
typedef const void *(*wh__param_data_fn)(const void *arg, int32_t v);
wh_status wh__graph_save_with(const wh_graph *g, wh__param_data_fn param_data, const void *arg, const char *path);

/* ---- learning-rate schedule shared by update kernels */
double wh__lr_at(const double *fa_lr /* lr, warmup, total, min, schedule */, int64_t step);

#endif /* WH_IR_H */
