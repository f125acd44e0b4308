/* test_ops.c - the per-op harness (after ggml's test-backend-ops): a table of cases, each a tiny
 * graph built through the public API. For every case:
 *   fwd   the output, from a WH_RUN_EVAL and a WH_RUN_GRAD run, against a double-precision
 *         reference (harness.h): max|got - ref| / max|ref| <= 1e-5 (1e-4 for exp, log, gelu);
 *   grad  every parameter's gradient of loss = sum(y * R) (R a fixed random constant, or a fed
 *         input when y has the batch dimension; y itself when y is a scalar loss) against central
 *         finite differences of the library's own loss, evaluated with WH_RUN_GRAD:
 *         |analytic - fd| <= 1e-2 * max(|fd|, min(1, max|fd|)) for every element checked.
 * Cases with a WH_BATCH input run at batch 3 and again after wh_session_set_batch(s, 5).
 * Large cases check ~40 elements per parameter by finite differences, and compare y and the
 * gradients bit for bit between a 1-thread and a 3-thread context.
 * Dropout has its own checks (kept values, rate within 3 sigma, p = 0, eval = identity, the mask
 * reproducible within a step and new after a TRAIN step, gradient = mask).
 * A case whose backward fails still has its forward checked, from a graph without gradients.
 * Shape errors (layernorm, attention): the builder returns WH_NONE, the graph holds WH_ERR_SHAPE
 * and its message names the op.
 * One line per check ("ok   <case> ..." or "FAIL file:line: <case> ..."); the closing line is
 * "ops: N passed, N failed"; exit 0 iff nothing failed. --list names the cases (table, dropout,
 * shape errors, coverage) and --case PATTERN runs those it matches (tests/common/runner.h).
 * Environment: TEST_OPS_THREADS (default 1) sets the main context's thread count. */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "whale.h"
#include "../common/runner.h"

/* Test-side allocations: out of memory is not a libwhale failure, so stop outright. */
static void *xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p) {
    fprintf(stderr, "test_ops: out of memory (%zu bytes)\n", n);
    exit(2);
  }
  return p;
}
static wh_ctx *CTX;

/* One result line per check. */
static void check(int ok, const char *cname, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  char *msg = xmalloc((size_t)n + 1);
  va_start(ap, fmt);
  vsnprintf(msg, (size_t)n + 1, fmt, ap);
  va_end(ap);
  EXPECT_SAY(ok, "%s %s", cname, msg);
  free(msg);
}

static void fail_status(const char *cname, const char *what, wh_status st) {
  check(0, cname, "%s: %s: %s", what, wh_status_str(st), wh_last_error(CTX));
}

/* ---------------------------------------------------------------- op coverage */

/* Every op a public builder makes (kind FORWARD in the op list, src/ir/ops.def), and the builders
 * that make another op (transpose is a permute): each needs a case. */
#define COVER_FORWARD(name) #name,
#define COVER_BACKWARD(name)
#define COVER_UPDATE(name)
#define COVER_PROGRAM(name)
static const char *const ALL_OPS[] = {
#define WH_OP(id, name, kind, family, kernel, backends) COVER_##kind(name)
#include "../../src/ir/ops.def"
    "transpose"};
#define N_OPS ((int)(sizeof ALL_OPS / sizeof ALL_OPS[0]))
static int covered[N_OPS];

/* ops: space-separated names */
static void cover(const char *ops) {
  char buf[256];
  snprintf(buf, sizeof buf, "%s", ops);
  for (char *tok = strtok(buf, " "); tok; tok = strtok(NULL, " ")) {
    int found = 0;
    for (int i = 0; i < N_OPS; i++)
      if (strcmp(ALL_OPS[i], tok) == 0) covered[i] = found = 1;
    if (!found) {
      fprintf(stderr, "test_ops: unknown op name '%s' in the case table\n", tok);
      exit(2);
    }
  }
}

/* ---------------------------------------------------------------- data */

static uint64_t rng_next(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static double urand(uint64_t *s) { return (double)(rng_next(s) >> 11) * (1.0 / 9007199254740992.0); } /* [0,1) */

static uint64_t hash_str(const char *s) {
  uint64_t h = 1469598103934665603ull;
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
  return h;
}

typedef enum {
  D_UNIF,     /* [-1, 1) */
  D_WIDE,     /* [-3, 3) */
  D_POS,      /* [0.5, 2): log inputs */
  D_AWAY,     /* +-[0.1, 1): no relu kink within eps */
  D_DEN,      /* +-[0.5, 1.5): denominators */
  D_DISTINCT, /* a shuffled grid (spacing 0.02, 0.0025 when large): max without near-ties */
  D_BIG,      /* 50 + [-2, 2): softmax stability */
  D_NEG,      /* D_DISTINCT - 5: all negative, so zero padding would win a max */
  D_ONES,
  D_ALT,      /* alternating sign, +-[0.3, 1): every run of >= 2 elements has a spread >= 0.6 */
  D_SMALL,    /* [-0.1, 0.1): a small shift that keeps D_ALT's spread */
  D_INT       /* [0, imax); the last equals the first so scatter-adds see a repeat */
} dkind;

static void gen_f32(float *p, int64_t n, dkind k, uint64_t *s) {
  for (int64_t i = 0; i < n; i++) {
    double u = urand(s), sg = urand(s) < 0.5 ? -1.0 : 1.0;
    switch (k) {
      case D_UNIF: p[i] = (float)(2 * u - 1); break;
      case D_WIDE: p[i] = (float)(6 * u - 3); break;
      case D_POS: p[i] = (float)(0.5 + 1.5 * u); break;
      case D_AWAY: p[i] = (float)(sg * (0.1 + 0.9 * u)); break;
      case D_DEN: p[i] = (float)(sg * (0.5 + u)); break;
      case D_BIG: p[i] = (float)(50 + 4 * u - 2); break;
      case D_ONES: p[i] = 1.0f; break;
      case D_ALT: p[i] = (float)((i % 2 ? 1 : -1) * (0.3 + 0.7 * u)); break;
      case D_SMALL: p[i] = (float)(0.2 * u - 0.1); break;
      default: p[i] = (float)i; break; /* D_DISTINCT: shuffled below */
    }
  }
  if (k == D_DISTINCT || k == D_NEG) {
    for (int64_t i = n - 1; i > 0; i--) {
      int64_t j = (int64_t)(rng_next(s) % (uint64_t)(i + 1));
      float t = p[i];
      p[i] = p[j];
      p[j] = t;
    }
    /* spacing > 2 * eps (1e-3); tighter for large tensors so the loss, and its f32 rounding, stay small */
    double sp = n > 200 ? 0.0025 : 0.02;
    for (int64_t i = 0; i < n; i++) p[i] = (float)((p[i] - (double)n / 2) * sp + 0.1 * sp - (k == D_NEG ? 5 : 0));
  }
}

/* ---------------------------------------------------------------- cases */

typedef struct leaf {
  wh_value v;
  int param; /* else a fed input */
  wh_dtype dt;
  char name[24];
  int nd;
  int64_t decl[WH_MAX_DIMS]; /* may hold WH_BATCH(_TIMES) */
  int64_t cd[WH_MAX_DIMS];   /* at the bound batch */
  int64_t n;
  dkind kind;
  int imax;
  void *data; /* float or int32 at the bound batch; fed inputs are borrowed by the session */
} leaf;

#define MAXL 8
#define FD_SUBSET 40
#define PARITY_THREADS 3

typedef struct T {
  const char *cname;
  wh_graph *g;
  leaf L[MAXL];
  int nl;
  int64_t batch;
  uint64_t rng;
} T;

typedef wh_value (*build_fn)(T *t, const int *a);
/* in[i] is leaf i at the bound batch, as doubles */
typedef rt (*ref_fn)(const T *t, const int *a, const rt *in);

enum {
  F_SCALAR_LOSS = 1, /* y is itself the loss */
  F_LOOSE = 2,       /* forward tolerance 1e-4 (exp, log, gelu) */
  F_SMALL_EPS = 4,   /* finite-difference step 1e-3 (max pooling) */
  F_FD_SUBSET = 8,   /* large case: finite differences on ~40 elements per parameter */
  F_LARGE_EPS = 16,  /* finite-difference step 4e-2: tiny gradients of a large mean */
  F_THREADS = 32     /* also compare 1 and PARITY_THREADS threads bit for bit (implied by F_FD_SUBSET) */
};

typedef struct tcase {
  const char *name;
  const char *ops; /* public op names the case exercises */
  build_fn build;
  ref_fn ref;
  int a[12];
  int flags;
} tcase;

static int64_t concrete(int64_t d, int64_t batch) { return d < 0 ? -d * batch : d; }

static wh_value mkleaf(T *t, wh_dtype dt, const char *name, dkind k, int imax, int nd, const int64_t *d) {
  if (t->nl >= MAXL) {
    fprintf(stderr, "test_ops: too many leaves in %s\n", t->cname);
    exit(2);
  }
  leaf *L = &t->L[t->nl++];
  memset(L, 0, sizeof *L);
  snprintf(L->name, sizeof L->name, "%s", name);
  L->dt = dt;
  L->nd = nd;
  L->kind = k;
  L->imax = imax;
  int sym = 0;
  for (int i = 0; i < nd; i++) {
    L->decl[i] = d[i];
    sym |= d[i] < 0;
  }
  /* a float leaf is a parameter unless it has the batch dimension (parameters cannot) */
  L->param = dt == WH_F32 && !sym;
  if (L->param)
    L->v = wh_param(t->g, name, dt, nd, d, WH_INIT(WH_INIT_ZEROS, 0, 0, 0));
  else
    L->v = wh_input(t->g, name, dt, nd, d);
  return L->v;
}

#define DIMS(...) (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (int64_t[]) { __VA_ARGS__ }
/* float leaf (a parameter, or an input when a dim is WH_BATCH) */
#define F(t, name, kind, ...) mkleaf((t), WH_F32, (name), (kind), 0, DIMS(__VA_ARGS__))
#define F0(t, name, kind) mkleaf((t), WH_F32, (name), (kind), 0, 0, NULL)
/* int32 input with values in [0, imax) */
#define I(t, name, imax, ...) mkleaf((t), WH_I32, (name), D_INT, (imax), DIMS(__VA_ARGS__))

#define B WH_BATCH

/* ---- matmul: a = {mode, ta, tb}; M=3, K=4, N=5, batch P=2 */
static wh_value b_matmul(T *t, const int *a) {
  int mode = a[0], ta = a[1], tb = a[2];
  int64_t M = a[3] ? a[3] : 3, K = a[4] ? a[4] : 4, N = a[5] ? a[5] : 5, P = 2;
  int64_t a0 = ta ? K : M, a1 = ta ? M : K, b0 = tb ? N : K, b1 = tb ? K : N;
  wh_value x = WH_NONE, w = WH_NONE;
  switch (mode) {
    case 0: x = F(t, "a", D_UNIF, a0, a1), w = F(t, "b", D_UNIF, b0, b1); break;         /* 2-D */
    case 1: x = F(t, "a", D_UNIF, P, a0, a1), w = F(t, "b", D_UNIF, b0, b1); break;      /* shared b */
    case 2: x = F(t, "a", D_UNIF, P, a0, a1), w = F(t, "b", D_UNIF, P, b0, b1); break;   /* batched b */
    case 3: x = F(t, "a", D_UNIF, B, a0, a1), w = F(t, "b", D_UNIF, b0, b1); break;      /* symbolic a */
    case 4: x = F(t, "a", D_UNIF, 2, P, a0, a1), w = F(t, "b", D_UNIF, b0, b1); break;   /* 4-D, shared b */
    case 5: x = F(t, "a", D_UNIF, 2, P, a0, a1), w = F(t, "b", D_UNIF, 2, P, b0, b1); break; /* 4-D batched */
    case 6: /* symbolic a, symbolic batched b = input + parameter */
      x = F(t, "a", D_UNIF, B, a0, a1), w = F(t, "b", D_UNIF, B, b0, b1);
      w = wh_add(t->g, w, F(t, "p", D_UNIF, b0, b1));
      break;
  }
  return wh_matmul(t->g, x, w, ta, tb);
}
static rt r_matmul(const T *t, const int *a, const rt *in) {
  (void)t;
  if (a[0] == 6) {
    rt b = rt_binary(RB_ADD, &in[1], &in[2]), y = rt_matmul(&in[0], &b, a[1], a[2]);
    rt_free(&b);
    return y;
  }
  return rt_matmul(&in[0], &in[1], a[1], a[2]);
}

/* ---- broadcasting binaries: a = {op, shape mode} */
static const struct {
  int na;
  int64_t da[4];
  int nb;
  int64_t db[4];
} BSH[] = {
    {3, {2, 3, 4}, 3, {2, 3, 4}}, /* 0 same */
    {3, {2, 3, 4}, 1, {4}},       /* 1 row vector on the right */
    {1, {4}, 3, {2, 3, 4}},       /* 2 row vector on the left */
    {2, {3, 4}, 2, {3, 1}},       /* 3 column [N,1] on the right */
    {2, {3, 1}, 2, {3, 4}},       /* 4 column on the left */
    {2, {2, 3}, 0, {0}},          /* 5 rank-0 scalar on the right */
    {0, {0}, 2, {2, 3}},          /* 6 rank-0 scalar on the left */
    {2, {2, 3}, 1, {1}},          /* 7 [1] on the right */
    {3, {2, 3, 4}, 2, {3, 1}},    /* 8 rank-different column */
    {2, {3, 1}, 2, {1, 4}},       /* 9 both broadcast (outer) */
    {3, {2, 1, 4}, 2, {3, 1}},    /* 10 both broadcast, rank-different */
    {2, {B, 3}, 1, {3}},          /* 11 symbolic input, parameter row */
    {1, {3}, 3, {B, 2, 3}},       /* 12 parameter row on the left of a symbolic input */
    {2, {B, 3}, 2, {1, 3}},       /* 13 symbolic input, [1,3] parameter */
    {2, {64, 300}, 1, {300}},     /* 14 large: row */
    {2, {300, 64}, 2, {300, 1}},  /* 15 large: column */
    {0, {0}, 0, {0}},             /* 16 rank-0 with rank-0 */
};
static const int rb_of_op[4] = {RB_ADD, RB_SUB, RB_MUL, RB_DIV};
static wh_value b_binary(T *t, const int *a) {
  int op = a[0], m = a[1];
  wh_value x = mkleaf(t, WH_F32, "a", D_UNIF, 0, BSH[m].na, BSH[m].da);
  wh_value y = mkleaf(t, WH_F32, "b", op == 3 ? D_DEN : D_UNIF, 0, BSH[m].nb, BSH[m].db);
  switch (op) {
    case 0: return wh_add(t->g, x, y);
    case 1: return wh_sub(t->g, x, y);
    case 2: return wh_mul(t->g, x, y);
    default: return wh_div(t->g, x, y);
  }
}
static rt r_binary(const T *t, const int *a, const rt *in) {
  (void)t;
  return rt_binary(rb_of_op[a[0]], &in[0], &in[1]);
}

/* both operands carry the batch dimension: x = ([B,3] input + p[3]) >= 1, y = [B,1] input;
 * a = {op, swapped}: op(x, y) or op(y, x) */
static wh_value b_binary_sym(T *t, const int *a) {
  wh_value x = F(t, "x", D_POS, B, 3);
  x = wh_add(t->g, x, F(t, "p", D_POS, 3));
  wh_value y = F(t, "y", D_DEN, B, 1);
  wh_value l = a[1] ? y : x, r = a[1] ? x : y;
  switch (a[0]) {
    case 0: return wh_add(t->g, l, r);
    case 1: return wh_sub(t->g, l, r);
    case 2: return wh_mul(t->g, l, r);
    default: return wh_div(t->g, l, r);
  }
}
static rt r_binary_sym(const T *t, const int *a, const rt *in) {
  (void)t;
  rt x = rt_binary(RB_ADD, &in[0], &in[1]);
  rt y = a[1] ? rt_binary(rb_of_op[a[0]], &in[2], &x) : rt_binary(rb_of_op[a[0]], &x, &in[2]);
  rt_free(&x);
  return y;
}

/* ---- scale */
static wh_value b_scale(T *t, const int *a) {
  (void)a;
  return wh_scale(t->g, F(t, "x", D_UNIF, 2, 3, 4), -1.75f);
}
static rt r_scale(const T *t, const int *a, const rt *in) {
  (void)t, (void)a;
  return rt_scale(&in[0], -1.75);
}

/* ---- bias_add: a = {mode} */
static const struct {
  int nd;
  int64_t d[4];
  int axis;
} BIAS[] = {
    {3, {2, 3, 4}, -1},    /* 0 last axis */
    {4, {2, 3, 4, 5}, 1},  /* 1 channel axis of a 4-D tensor */
    {4, {2, 3, 4, 5}, 2},  /* 2 */
    {3, {2, 3, 4}, 0},     /* 3 first axis */
    {2, {B, 4}, -1},       /* 4 symbolic */
    {4, {B, 3, 2, 2}, 1},  /* 5 symbolic, channel axis */
    {3, {64, 8, 40}, 1},   /* 6 large */
};
static wh_value b_bias(T *t, const int *a) {
  int m = a[0];
  wh_value x = mkleaf(t, WH_F32, "x", D_UNIF, 0, BIAS[m].nd, BIAS[m].d);
  int ax = BIAS[m].axis < 0 ? BIAS[m].axis + BIAS[m].nd : BIAS[m].axis;
  int64_t len = BIAS[m].d[ax];
  wh_value b = F(t, "b", D_UNIF, len);
  return wh_bias_add(t->g, x, b, BIAS[m].axis);
}
static rt r_bias(const T *t, const int *a, const rt *in) {
  (void)t;
  return rt_bias_add(&in[0], &in[1], BIAS[a[0]].axis);
}

/* ---- activations: a = {RU op, sym} */
static const dkind unary_kind[] = {D_AWAY, D_WIDE, D_WIDE, D_WIDE, D_UNIF, D_POS};
static wh_value b_unary(T *t, const int *a) {
  wh_value x;
  if (a[1] == 2) {
    x = F(t, "x", unary_kind[a[0]], 200, 100);
  } else if (a[1]) {
    /* symbolic input shifted by a parameter; log needs positive inputs on both */
    x = F(t, "x", unary_kind[a[0]], B, 3);
    wh_value p = F(t, "p", a[0] == RU_LOG ? D_POS : D_UNIF, 3);
    x = wh_add(t->g, x, p);
  } else {
    x = F(t, "x", unary_kind[a[0]], 3, 5);
  }
  switch (a[0]) {
    case RU_RELU: return wh_relu(t->g, x);
    case RU_GELU: return wh_gelu(t->g, x);
    case RU_TANH: return wh_tanh(t->g, x);
    case RU_SIGMOID: return wh_sigmoid(t->g, x);
    case RU_EXP: return wh_exp(t->g, x);
    default: return wh_log(t->g, x);
  }
}
static rt r_unary(const T *t, const int *a, const rt *in) {
  (void)t;
  if (a[1] == 1) {
    rt s = rt_binary(RB_ADD, &in[0], &in[1]);
    rt y = rt_unary(a[0], &s);
    rt_free(&s);
    return y;
  }
  return rt_unary(a[0], &in[0]);
}

/* ---- softmax / log_softmax: a = {log, mode} */
static wh_value b_softmax(T *t, const int *a) {
  wh_value x = WH_NONE;
  switch (a[1]) {
    case 0: x = F(t, "x", D_WIDE, 3, 6); break;
    case 1: x = F(t, "x", D_WIDE, 2, 3, 5); break;
    case 2: x = F(t, "x", D_BIG, 2, 7); break;
    case 3: x = F(t, "x", D_WIDE, B, 6), x = wh_add(t->g, x, F(t, "p", D_UNIF, 6)); break;
    case 4: x = F(t, "x", D_WIDE, 4, 1); break; /* a single class */
    case 5: x = F(t, "x", D_WIDE, 64, 257); break;
    case 6: x = F(t, "x", D_WIDE, 7); break;
  }
  return a[0] ? wh_log_softmax(t->g, x) : wh_softmax(t->g, x);
}
static rt r_softmax(const T *t, const int *a, const rt *in) {
  (void)t;
  if (a[1] == 3) {
    rt s = rt_binary(RB_ADD, &in[0], &in[1]);
    rt y = rt_softmax(&s, a[0]);
    rt_free(&s);
    return y;
  }
  return rt_softmax(&in[0], a[0]);
}

/* ---- sum / mean: a = {mean, keep, naxes, ax0, ax1, sym} on [2,3,4] (sym: [B,3,4] + p[3,4]) */
static wh_value b_reduce(T *t, const int *a) {
  wh_value x;
  if (a[5] == 3) {
    x = F0(t, "x", D_UNIF);
  } else if (a[5] == 2) {
    x = F(t, "x", D_UNIF, 300, 70);
  } else if (a[5]) {
    x = F(t, "x", D_UNIF, B, 3, 4);
    x = wh_add(t->g, x, F(t, "p", D_UNIF, 3, 4));
  } else {
    x = F(t, "x", D_UNIF, 2, 3, 4);
  }
  int axes[2] = {a[3], a[4]};
  return a[0] ? wh_mean(t->g, x, a[2], axes, a[1]) : wh_sum(t->g, x, a[2], axes, a[1]);
}
static rt r_reduce(const T *t, const int *a, const rt *in) {
  (void)t;
  rt x = a[5] == 1 ? rt_binary(RB_ADD, &in[0], &in[1]) : rt_copy(&in[0]);
  uint32_t mask = 0;
  if (a[2] == 0) mask = x.nd ? (1u << x.nd) - 1 : 0;
  for (int i = 0; i < a[2]; i++) mask |= 1u << (a[3 + i] < 0 ? a[3 + i] + x.nd : a[3 + i]);
  rt y = rt_reduce(&x, mask, a[1], a[0]);
  rt_free(&x);
  return y;
}

/* ---- reshape: a = {mode} */
static wh_value b_reshape(T *t, const int *a) {
  int sym = a[0] >= 4 && a[0] <= 6;
  wh_value x;
  if (sym) {
    x = F(t, "x", D_UNIF, B, 3, 4);
    x = wh_add(t->g, x, F(t, "p", D_UNIF, 4));
  } else {
    x = F(t, "x", D_UNIF, 2, 3, 4);
  }
  switch (a[0]) {
    case 0: return wh_reshape(t->g, x, DIMS(6, 4));
    case 1: return wh_reshape(t->g, x, DIMS(4, 3, 2));
    case 2: return wh_reshape(t->g, x, DIMS(24));
    case 3: return wh_reshape(t->g, x, DIMS(1, 2, 12, 1));
    case 4: return wh_reshape(t->g, x, DIMS(WH_BATCH_TIMES(3), 4));
    case 5: return wh_reshape(t->g, x, DIMS(B, 12));
    case 6: return wh_reshape(t->g, x, DIMS(WH_BATCH_TIMES(12)));
    case 8: return wh_reshape(t->g, wh_slice(t->g, x, 2, 1, 2), DIMS(1, 2, 3)); /* through a slice */
    default: { /* reshapes of reshapes: 2 * x viewed as [4,6] */
      wh_value r1 = wh_reshape(t->g, wh_reshape(t->g, x, DIMS(6, 4)), DIMS(4, 6));
      return wh_add(t->g, r1, wh_reshape(t->g, x, DIMS(4, 6)));
    }
  }
}
static rt r_reshape(const T *t, const int *a, const rt *in) {
  int64_t b = t->batch;
  rt x = a[0] >= 4 && a[0] <= 6 ? rt_binary(RB_ADD, &in[0], &in[1]) : rt_copy(&in[0]);
  rt y;
  switch (a[0]) {
    case 0: y = rt_reshape(&x, DIMS(6, 4)); break;
    case 1: y = rt_reshape(&x, DIMS(4, 3, 2)); break;
    case 2: y = rt_reshape(&x, DIMS(24)); break;
    case 3: y = rt_reshape(&x, DIMS(1, 2, 12, 1)); break;
    case 4: y = rt_reshape(&x, DIMS(3 * b, 4)); break;
    case 5: y = rt_reshape(&x, DIMS(b, 12)); break;
    case 6: y = rt_reshape(&x, DIMS(12 * b)); break;
    case 8: {
      rt sl = rt_slice(&x, 2, 1, 2);
      y = rt_reshape(&sl, DIMS(1, 2, 3));
      rt_free(&sl);
      break;
    }
    default: {
      rt r = rt_reshape(&x, DIMS(4, 6));
      y = rt_scale(&r, 2.0);
      rt_free(&r);
      break;
    }
  }
  rt_free(&x);
  return y;
}

/* [1,1] -> rank 0 */
static wh_value b_reshape0(T *t, const int *a) {
  (void)a;
  return wh_reshape(t->g, F(t, "x", D_UNIF, 1, 1), 0, NULL);
}
static rt r_reshape0(const T *t, const int *a, const rt *in) {
  (void)t, (void)a;
  return rt_reshape(&in[0], 0, NULL);
}

/* reshape a fed input directly (the output aliases the caller's buffer), then add p[4] */
static wh_value b_reshape_in(T *t, const int *a) {
  (void)a;
  wh_value x = F(t, "x", D_UNIF, B, 3, 4);
  wh_value r = wh_reshape(t->g, x, DIMS(WH_BATCH_TIMES(3), 4));
  return wh_add(t->g, r, F(t, "p", D_UNIF, 4));
}
static rt r_reshape_in(const T *t, const int *a, const rt *in) {
  (void)a;
  rt r = rt_reshape(&in[0], DIMS(3 * t->batch, 4)), y = rt_binary(RB_ADD, &r, &in[1]);
  rt_free(&r);
  return y;
}

/* ---- permute: a = {mode, perm...}; mode 0: [2,3,4], 1: [2,3,2,4], 2: [B,3,4] + p[4] */
static wh_value b_permute(T *t, const int *a) {
  wh_value x = WH_NONE;
  switch (a[0]) {
    case 0: x = F(t, "x", D_UNIF, 2, 3, 4); break;
    case 1: x = F(t, "x", D_UNIF, 2, 3, 2, 4); break;
    case 3: x = F(t, "x", D_UNIF, 30, 40, 20); break;
    default: x = F(t, "x", D_UNIF, B, 3, 4), x = wh_add(t->g, x, F(t, "p", D_UNIF, 4)); break;
  }
  return wh_permute(t->g, x, a + 1);
}
static rt r_permute(const T *t, const int *a, const rt *in) {
  (void)t;
  rt x = a[0] == 2 ? rt_binary(RB_ADD, &in[0], &in[1]) : rt_copy(&in[0]);
  rt y = rt_permute(&x, a + 1);
  rt_free(&x);
  return y;
}

/* ---- transpose: a = {rank, axis0, axis1} */
static wh_value b_transpose(T *t, const int *a) {
  wh_value x = a[0] == 2 ? F(t, "x", D_UNIF, 3, 5) : a[0] == 3 ? F(t, "x", D_UNIF, 2, 3, 4) : F(t, "x", D_UNIF, 2, 3, 2, 5);
  return wh_transpose(t->g, x, a[1], a[2]);
}
static rt r_transpose(const T *t, const int *a, const rt *in) {
  (void)t;
  int nd = in[0].nd, perm[WH_MAX_DIMS];
  for (int i = 0; i < nd; i++) perm[i] = i;
  int x0 = a[1] < 0 ? a[1] + nd : a[1], x1 = a[2] < 0 ? a[2] + nd : a[2];
  perm[x0] = x1;
  perm[x1] = x0;
  return rt_permute(&in[0], perm);
}

/* ---- slice: a = {axis, start, end, sym} on [4,5,6] (sym: [B,5] + p[5]) */
static wh_value b_slice(T *t, const int *a) {
  wh_value x;
  if (a[3]) {
    x = F(t, "x", D_UNIF, B, 5);
    x = wh_add(t->g, x, F(t, "p", D_UNIF, 5));
  } else {
    x = F(t, "x", D_UNIF, 4, 5, 6);
  }
  return wh_slice(t->g, x, a[0], a[1], a[2]);
}
static rt r_slice(const T *t, const int *a, const rt *in) {
  (void)t;
  rt x = a[3] ? rt_binary(RB_ADD, &in[0], &in[1]) : rt_copy(&in[0]);
  rt y = rt_slice(&x, a[0], a[1], a[2]);
  rt_free(&x);
  return y;
}

/* ---- concat: a = {mode} */
static wh_value b_concat(T *t, const int *a) {
  wh_value xs[3];
  switch (a[0]) {
    case 0:
      xs[0] = F(t, "x0", D_UNIF, 2, 3), xs[1] = F(t, "x1", D_UNIF, 1, 3);
      return wh_concat(t->g, 2, xs, 0);
    case 1:
      xs[0] = F(t, "x0", D_UNIF, 2, 3), xs[1] = F(t, "x1", D_UNIF, 2, 2);
      return wh_concat(t->g, 2, xs, 1);
    case 2:
      xs[0] = F(t, "x0", D_UNIF, 2, 1, 4), xs[1] = F(t, "x1", D_UNIF, 2, 3, 4), xs[2] = F(t, "x2", D_UNIF, 2, 2, 4);
      return wh_concat(t->g, 3, xs, 1);
    case 3:
      xs[0] = F(t, "x0", D_UNIF, 2, 3, 1), xs[1] = F(t, "x1", D_UNIF, 2, 3, 2), xs[2] = F(t, "x2", D_UNIF, 2, 3, 3);
      return wh_concat(t->g, 3, xs, -1);
    case 4:
      xs[0] = F(t, "x0", D_UNIF, 1, 2, 2), xs[1] = F(t, "x1", D_UNIF, 2, 2, 2), xs[2] = F(t, "x2", D_UNIF, 1, 2, 2);
      return wh_concat(t->g, 3, xs, 0);
    default: /* symbolic: [B,2] input with ([B,3] input + p[3]) along axis 1 */
      xs[0] = F(t, "x0", D_UNIF, B, 2);
      xs[1] = F(t, "x1", D_UNIF, B, 3);
      xs[1] = wh_add(t->g, xs[1], F(t, "p", D_UNIF, 3));
      return wh_concat(t->g, 2, xs, 1);
  }
}
static rt r_concat(const T *t, const int *a, const rt *in) {
  (void)t;
  static const int axis[] = {0, 1, 1, -1, 0};
  if (a[0] == 5) {
    rt xs[2] = {in[0], rt_binary(RB_ADD, &in[1], &in[2])};
    rt y = rt_concat(2, xs, 1);
    rt_free(&xs[1]);
    return y;
  }
  return rt_concat(a[0] < 2 ? 2 : 3, in, axis[a[0]]);
}

/* ---- embedding: a = {mode} */
static wh_value b_embedding(T *t, const int *a) {
  /* leaves are created in separate statements: argument evaluation order is unspecified */
  wh_value tab, ix;
  switch (a[0]) {
    case 0: tab = F(t, "table", D_UNIF, 6, 3), ix = I(t, "ix", 6, 7); break;
    case 1: tab = F(t, "table", D_UNIF, 5, 4), ix = I(t, "ix", 5, 2, 4); break;
    case 3: tab = F(t, "table", D_UNIF, 50, 64), ix = I(t, "ix", 50, 300); break;
    default: tab = F(t, "table", D_UNIF, 7, 3), ix = I(t, "ix", 7, B, 3); break;
  }
  return wh_embedding(t->g, tab, ix);
}
static rt r_embedding(const T *t, const int *a, const rt *in) {
  (void)t, (void)a;
  return rt_embedding(&in[0], &in[1]);
}

/* ---- cross_entropy: a = {mode} */
static wh_value b_ce(T *t, const int *a) {
  wh_value l, lab;
  switch (a[0]) {
    case 0: l = F(t, "logits", D_WIDE, 4, 5), lab = I(t, "labels", 5, 4); break;
    case 1: l = F(t, "logits", D_WIDE, 2, 3, 5), lab = I(t, "labels", 5, 2, 3); break;
    case 2: l = F(t, "logits", D_BIG, 3, 4), lab = I(t, "labels", 4, 3); break;
    case 4: l = F(t, "logits", D_WIDE, 256, 40), lab = I(t, "labels", 40, 256); break;
    case 5: l = F(t, "logits", D_WIDE, 6), lab = mkleaf(t, WH_I32, "labels", D_INT, 6, 0, NULL); break;
    default:
      l = F(t, "x", D_WIDE, B, 5);
      l = wh_add(t->g, l, F(t, "p", D_UNIF, 5));
      lab = I(t, "labels", 5, B);
      break;
  }
  return wh_cross_entropy(t->g, l, lab);
}
static rt r_ce(const T *t, const int *a, const rt *in) {
  (void)t;
  if (a[0] == 3) {
    rt l = rt_binary(RB_ADD, &in[0], &in[1]);
    rt y = rt_cross_entropy(&l, &in[2]);
    rt_free(&l);
    return y;
  }
  return rt_cross_entropy(&in[0], &in[1]);
}

/* ---- mse: a = {mode} */
static wh_value b_mse(T *t, const int *a) {
  wh_value p, tg;
  switch (a[0]) {
    case 0: p = F(t, "pred", D_UNIF, 3, 4), tg = F(t, "target", D_UNIF, 3, 4); break;
    case 1: p = F(t, "pred", D_UNIF, 2, 3, 2), tg = F(t, "target", D_UNIF, 2, 3, 2); break;
    default:
      p = F(t, "x", D_UNIF, B, 3);
      p = wh_add(t->g, p, F(t, "p", D_UNIF, 3));
      tg = F(t, "target", D_UNIF, B, 3);
      break;
  }
  return wh_mse(t->g, p, tg);
}
static rt r_mse(const T *t, const int *a, const rt *in) {
  (void)t;
  if (a[0] == 2) {
    rt p = rt_binary(RB_ADD, &in[0], &in[1]);
    rt y = rt_mse(&p, &in[2]);
    rt_free(&p);
    return y;
  }
  return rt_mse(&in[0], &in[1]);
}

/* ---- conv2d: a = {N, C, H, W, O, KH, KW, stride, pad, sym} */
static wh_value b_conv(T *t, const int *a) {
  wh_value x = a[9] ? F(t, "x", D_UNIF, B, a[1], a[2], a[3]) : F(t, "x", D_UNIF, a[0], a[1], a[2], a[3]);
  wh_value w = F(t, "w", D_UNIF, a[4], a[1], a[5], a[6]);
  return wh_conv2d(t->g, x, w, a[7], a[8]);
}
static rt r_conv(const T *t, const int *a, const rt *in) {
  (void)t;
  return rt_conv2d(&in[0], &in[1], a[7], a[8]);
}

/* ---- pooling: a = {max, N, C, H, W, k, stride, pad, sym, negative} (sym: [B,C,H,W] input + p[W]) */
static wh_value b_pool(T *t, const int *a) {
  dkind k = a[9] ? D_NEG : a[0] ? D_DISTINCT : D_UNIF;
  wh_value x;
  if (a[8]) {
    x = F(t, "x", k, B, a[2], a[3], a[4]);
    x = wh_add(t->g, x, F(t, "p", D_UNIF, a[4]));
  } else {
    x = F(t, "x", k, a[1], a[2], a[3], a[4]);
  }
  return a[0] ? wh_max_pool2d(t->g, x, a[5], a[6], a[7]) : wh_avg_pool2d(t->g, x, a[5], a[6], a[7]);
}
static rt r_pool(const T *t, const int *a, const rt *in) {
  (void)t;
  rt x = a[8] ? rt_binary(RB_ADD, &in[0], &in[1]) : rt_copy(&in[0]);
  rt y = rt_pool2d(&x, a[5], a[6], a[7], a[0]);
  rt_free(&x);
  return y;
}

/* ---- fan-out: one value feeding several uses; a = {mode} */
static wh_value b_fanout(T *t, const int *a) {
  wh_graph *g = t->g;
  switch (a[0]) {
    case 0: { /* y = x*x + x */
      wh_value x = F(t, "x", D_UNIF, 3, 4);
      return wh_add(g, wh_mul(g, x, x), x);
    }
    case 1: { /* y = x @ x^T */
      wh_value x = F(t, "x", D_UNIF, 3, 4);
      return wh_matmul(g, x, x, 0, 1);
    }
    case 2: { /* y = concat(x, x) */
      wh_value x = F(t, "x", D_UNIF, 2, 3), xs[2] = {x, x};
      return wh_concat(g, 2, xs, 0);
    }
    default: { /* y = tanh(x) * sigmoid(x) + exp(x) - x */
      wh_value x = F(t, "x", D_UNIF, 2, 5);
      return wh_sub(g, wh_add(g, wh_mul(g, wh_tanh(g, x), wh_sigmoid(g, x)), wh_exp(g, x)), x);
    }
  }
}
static rt r_fanout(const T *t, const int *a, const rt *in) {
  (void)t;
  const rt *x = &in[0];
  switch (a[0]) {
    case 0: {
      rt xx = rt_binary(RB_MUL, x, x), y = rt_binary(RB_ADD, &xx, x);
      rt_free(&xx);
      return y;
    }
    case 1: return rt_matmul(x, x, 0, 1);
    case 2: {
      rt xs[2] = {*x, *x};
      return rt_concat(2, xs, 0);
    }
    default: {
      rt th = rt_unary(RU_TANH, x), sg = rt_unary(RU_SIGMOID, x), ex = rt_unary(RU_EXP, x);
      rt m = rt_binary(RB_MUL, &th, &sg), s = rt_binary(RB_ADD, &m, &ex), y = rt_binary(RB_SUB, &s, x);
      rt_free(&th), rt_free(&sg), rt_free(&ex), rt_free(&m), rt_free(&s);
      return y;
    }
  }
}

/* ---- small models over a symbolic batch: a = {mode} */
static wh_value b_model(T *t, const int *a) {
  wh_graph *g = t->g;
  if (a[0] == 0) {
    /* MLP: ce(gelu(x @ W1 + b1) @ W2^T, labels) */
    wh_value x = F(t, "x", D_UNIF, B, 4), w1 = F(t, "w1", D_UNIF, 4, 6), b1 = F(t, "b1", D_UNIF, 6);
    wh_value w2 = F(t, "w2", D_UNIF, 3, 6), lab = I(t, "labels", 3, B);
    wh_value h = wh_gelu(g, wh_bias_add(g, wh_matmul(g, x, w1, 0, 0), b1, -1));
    return wh_cross_entropy(g, wh_matmul(g, h, w2, 0, 1), lab);
  }
  /* CNN: mse(reshape(avg_pool(conv(x, w) + cb)) @ W, target) */
  wh_value x = F(t, "x", D_UNIF, B, 2, 4, 4), w = F(t, "w", D_UNIF, 3, 2, 3, 3), cb = F(t, "cb", D_UNIF, 3);
  wh_value w2 = F(t, "w2", D_UNIF, 12, 2), tgt = F(t, "target", D_UNIF, B, 2);
  wh_value c = wh_avg_pool2d(g, wh_bias_add(g, wh_conv2d(g, x, w, 1, 1), cb, 1), 2, 2, 0);
  wh_value f = wh_reshape(g, c, DIMS(B, 12));
  return wh_mse(g, wh_matmul(g, f, w2, 0, 0), tgt);
}
static rt r_model(const T *t, const int *a, const rt *in) {
  if (a[0] == 0) {
    rt m = rt_matmul(&in[0], &in[1], 0, 0), b = rt_bias_add(&m, &in[2], -1), h = rt_unary(RU_GELU, &b);
    rt l = rt_matmul(&h, &in[3], 0, 1), y = rt_cross_entropy(&l, &in[4]);
    rt_free(&m), rt_free(&b), rt_free(&h), rt_free(&l);
    return y;
  }
  rt c = rt_conv2d(&in[0], &in[1], 1, 1), b = rt_bias_add(&c, &in[2], 1), p = rt_pool2d(&b, 2, 2, 0, 0);
  rt f = rt_reshape(&p, DIMS(t->batch, 12)), m = rt_matmul(&f, &in[3], 0, 0), y = rt_mse(&m, &in[4]);
  rt_free(&c), rt_free(&b), rt_free(&p), rt_free(&f), rt_free(&m);
  return y;
}

/* ---- layernorm: a = {mode, C, eps index, R}; x is D_ALT so every row (C >= 2) has a standard
 * deviation >= 0.3, far above the finite-difference step; C = 1 is the degenerate y = beta
 * (x's and gamma's gradients exactly 0 on both sides).
 * With C = 2, y = +-gamma + beta up to O(eps / var): x's gradient is O(eps / std^3), ~1e-5 at
 * eps = 1e-5, below what central differences of an f32 loss resolve (~6e-6), so C = 2 checks x's
 * gradient at eps = 1e-2 and, at eps = 1e-5, feeds x (mode 4: forward, gamma and beta only).
 * mode 0: x [3, C]; 1: x [2, 3, C]; 2: x [B, 3, C] input + p[3, C]; 3: x [R, 64, C] (large: R * 64
 * rows at least 3 of the kernels' row grains, 1 + 4096 / (C + 1), so 3 threads all get rows);
 * 4: x [B, 3, C] fed directly */
static const double LN_EPS[] = {1e-5, 1e-2};
static wh_value b_layernorm(T *t, const int *a) {
  int64_t C = a[1];
  wh_value x = WH_NONE;
  switch (a[0]) {
    case 0: x = F(t, "x", D_ALT, 3, C); break;
    case 1: x = F(t, "x", D_ALT, 2, 3, C); break;
    case 2: x = F(t, "x", D_ALT, B, 3, C), x = wh_add(t->g, x, F(t, "p", D_SMALL, 3, C)); break;
    case 3: x = F(t, "x", D_ALT, a[3], 64, C); break;
    default: x = F(t, "x", D_ALT, B, 3, C); break;
  }
  wh_value gamma = F(t, "gamma", D_DEN, C);
  wh_value beta = F(t, "beta", D_UNIF, C);
  return wh_layernorm(t->g, x, gamma, beta, (float)LN_EPS[a[2]]);
}
static rt r_layernorm(const T *t, const int *a, const rt *in) {
  (void)t;
  /* eps as the library sees it: a float */
  double eps = (double)(float)LN_EPS[a[2]];
  if (a[0] == 2) {
    rt x = rt_binary(RB_ADD, &in[0], &in[1]), y = rt_layernorm(&x, &in[2], &in[3], eps);
    rt_free(&x);
    return y;
  }
  return rt_layernorm(&in[0], &in[1], &in[2], eps);
}

/* ---- attention: a = {mode, T, C, heads}; qkv uniform(-1, 1): scores stay O(1), softmax is not
 * saturated. mode 0: qkv [2, T, 3C]; 1: [T, 3C]; 2: [2, 2, T, 3C]; 3: [B, T, 3C] input + p[3C];
 * 4: [B, 2, T, 3C] input + p[3C]; 5: [4, T, 3C] (large: 4 * heads (sequence, head) pairs).
 * p[3C] is a bias shared by every position: its key third shifts every score of a query by the
 * same amount, so that part of its gradient is 0 in exact arithmetic (both sides are ~0). */
static wh_value b_attention(T *t, const int *a) {
  int64_t Tn = a[1], C3 = 3 * (int64_t)a[2];
  wh_value x = WH_NONE;
  switch (a[0]) {
    case 0: x = F(t, "qkv", D_UNIF, 2, Tn, C3); break;
    case 1: x = F(t, "qkv", D_UNIF, Tn, C3); break;
    case 2: x = F(t, "qkv", D_UNIF, 2, 2, Tn, C3); break;
    case 3: x = F(t, "qkv", D_UNIF, B, Tn, C3), x = wh_add(t->g, x, F(t, "p", D_UNIF, C3)); break;
    case 4: x = F(t, "qkv", D_UNIF, B, 2, Tn, C3), x = wh_add(t->g, x, F(t, "p", D_UNIF, C3)); break;
    default: x = F(t, "qkv", D_UNIF, 4, Tn, C3); break;
  }
  return wh_attention(t->g, x, a[3]);
}
static rt r_attention(const T *t, const int *a, const rt *in) {
  (void)t;
  if (a[0] == 3 || a[0] == 4) {
    rt x = rt_binary(RB_ADD, &in[0], &in[1]), y = rt_attention(&x, a[3]);
    rt_free(&x);
    return y;
  }
  return rt_attention(&in[0], a[3]);
}

/* ---------------------------------------------------------------- the table */

#define MM(tag, mode, ta, tb) {"matmul_" tag, "matmul", b_matmul, r_matmul, {mode, ta, tb}, 0}
#define MMD(tag, mode, ta, tb, m, k, n, fl) {"matmul_" tag, "matmul", b_matmul, r_matmul, {mode, ta, tb, m, k, n}, fl}
#define BIN(opname, opi, tag, mode) {opname "_" tag, opname, b_binary, r_binary, {opi, mode}, 0}
#define BINF(opname, opi, tag, mode) {opname "_" tag, opname, b_binary, r_binary, {opi, mode}, F_FD_SUBSET}
#define BIN_ALL(tag, mode) BIN("add", 0, tag, mode), BIN("sub", 1, tag, mode), BIN("mul", 2, tag, mode), BIN("div", 3, tag, mode)
#define RED(tag, mean, keep, nax, a0, a1, sym) \
  {(mean) ? "mean_" tag : "sum_" tag, (mean) ? "mean" : "sum", b_reduce, r_reduce, {mean, keep, nax, a0, a1, sym}, 0}
#define REDF(tag, mean, keep, nax, a0, a1, sym) \
  {(mean) ? "mean_" tag : "sum_" tag, (mean) ? "mean" : "sum", b_reduce, r_reduce, {mean, keep, nax, a0, a1, sym}, F_FD_SUBSET}
#define RED2(tag, keep, nax, a0, a1, sym) RED(tag, 0, keep, nax, a0, a1, sym), RED(tag, 1, keep, nax, a0, a1, sym)
#define CONV(tag, ...) {"conv2d_" tag, "conv2d", b_conv, r_conv, {__VA_ARGS__}, 0}
#define POOLF(tag, fl, ...) {"max_pool2d_" tag, "max_pool2d", b_pool, r_pool, {1, __VA_ARGS__}, F_SMALL_EPS | (fl)}, \
                       {"avg_pool2d_" tag, "avg_pool2d", b_pool, r_pool, {0, __VA_ARGS__}, (fl)}
#define POOL(tag, ...) POOLF(tag, 0, __VA_ARGS__)
/* layernorm: {mode, C, eps index, R} */
#define LN(tag, mode, c, e, fl) LNR(tag, mode, c, e, 0, fl)
#define LNR(tag, mode, c, e, r, fl) \
  {"layernorm_" tag, (mode) == 2 ? "layernorm add" : "layernorm", b_layernorm, r_layernorm, {mode, c, e, r}, fl}
/* attention: {mode, T, C, heads} */
#define ATT(tag, mode, tt, c, h, fl) \
  {"attention_" tag, (mode) == 3 || (mode) == 4 ? "attention add" : "attention", b_attention, r_attention, {mode, tt, c, h}, fl}

static const tcase CASES[] = {
    /* matmul: 2-D, batched a with shared b, batched both, symbolic batch, 4-D; every transpose */
    MM("2d_nn", 0, 0, 0), MM("2d_nt", 0, 0, 1), MM("2d_tn", 0, 1, 0), MM("2d_tt", 0, 1, 1),
    MM("shared_nn", 1, 0, 0), MM("shared_nt", 1, 0, 1), MM("shared_tn", 1, 1, 0), MM("shared_tt", 1, 1, 1),
    MM("batched_nn", 2, 0, 0), MM("batched_nt", 2, 0, 1), MM("batched_tn", 2, 1, 0), MM("batched_tt", 2, 1, 1),
    MM("sym_nn", 3, 0, 0), MM("sym_nt", 3, 0, 1), MM("sym_tn", 3, 1, 0), MM("sym_tt", 3, 1, 1),
    MM("4d_shared_nn", 4, 0, 0), MM("4d_shared_nt", 4, 0, 1),
    MM("4d_batched_nn", 5, 0, 0), MM("4d_batched_tt", 5, 1, 1),
    MM("sym_batched_nn", 6, 0, 0), MM("sym_batched_nt", 6, 0, 1), MM("sym_batched_tn", 6, 1, 0),
    MM("sym_batched_tt", 6, 1, 1),
    MMD("k1_outer", 0, 0, 0, 5, 1, 3, 0), MMD("m1_n1_tt", 0, 1, 1, 1, 6, 1, 0),
    MMD("big_shared_nt", 1, 0, 1, 40, 33, 50, F_FD_SUBSET), MMD("big_batched_tn", 2, 1, 0, 37, 20, 45, F_FD_SUBSET),
    /* broadcasting binaries */
    BIN_ALL("same", 0), BIN_ALL("row", 1), BIN_ALL("row_left", 2), BIN_ALL("col", 3), BIN_ALL("col_left", 4),
    BIN_ALL("scalar", 5), BIN_ALL("scalar_left", 6), BIN_ALL("one", 7), BIN_ALL("rankdiff", 8),
    BIN_ALL("outer", 9), BIN_ALL("outer_rankdiff", 10), BIN_ALL("sym_row", 11), BIN_ALL("sym_row_left", 12),
    BIN_ALL("sym_1row", 13), BINF("add", 0, "big_row", 14), BINF("mul", 2, "big_col", 15),
    BINF("div", 3, "big_row", 14), BINF("sub", 1, "big_col", 15), BIN_ALL("rank0", 16),
    {"add_sym_both", "add", b_binary_sym, r_binary_sym, {0, 0}, 0},
    {"sub_sym_both_left", "sub", b_binary_sym, r_binary_sym, {1, 1}, 0},
    {"mul_sym_both", "mul", b_binary_sym, r_binary_sym, {2, 0}, 0},
    {"div_sym_both", "div", b_binary_sym, r_binary_sym, {3, 0}, 0},
    {"div_sym_both_left", "div", b_binary_sym, r_binary_sym, {3, 1}, 0},
    {"scale", "scale", b_scale, r_scale, {0}, 0},
    {"bias_add_last", "bias_add", b_bias, r_bias, {0}, 0},
    {"bias_add_4d_axis1", "bias_add", b_bias, r_bias, {1}, 0},
    {"bias_add_4d_axis2", "bias_add", b_bias, r_bias, {2}, 0},
    {"bias_add_axis0", "bias_add", b_bias, r_bias, {3}, 0},
    {"bias_add_sym_last", "bias_add", b_bias, r_bias, {4}, 0},
    {"bias_add_sym_axis1", "bias_add", b_bias, r_bias, {5}, 0},
    {"bias_add_big_axis1", "bias_add", b_bias, r_bias, {6}, F_FD_SUBSET},
    /* activations */
    {"relu", "relu", b_unary, r_unary, {RU_RELU, 0}, 0},
    {"gelu", "gelu", b_unary, r_unary, {RU_GELU, 0}, F_LOOSE},
    {"tanh", "tanh", b_unary, r_unary, {RU_TANH, 0}, 0},
    {"sigmoid", "sigmoid", b_unary, r_unary, {RU_SIGMOID, 0}, 0},
    {"exp", "exp", b_unary, r_unary, {RU_EXP, 0}, F_LOOSE},
    {"log", "log", b_unary, r_unary, {RU_LOG, 0}, F_LOOSE},
    {"relu_sym", "relu add", b_unary, r_unary, {RU_RELU, 1}, 0},
    {"gelu_sym", "gelu add", b_unary, r_unary, {RU_GELU, 1}, F_LOOSE},
    {"log_sym", "log add", b_unary, r_unary, {RU_LOG, 1}, F_LOOSE},
    {"relu_big", "relu", b_unary, r_unary, {RU_RELU, 2}, F_FD_SUBSET},
    {"gelu_big", "gelu", b_unary, r_unary, {RU_GELU, 2}, F_LOOSE | F_FD_SUBSET},
    {"sigmoid_big", "sigmoid", b_unary, r_unary, {RU_SIGMOID, 2}, F_FD_SUBSET},
    /* softmax */
    {"softmax_2d", "softmax", b_softmax, r_softmax, {0, 0}, 0},
    {"softmax_3d", "softmax", b_softmax, r_softmax, {0, 1}, 0},
    {"softmax_shifted", "softmax", b_softmax, r_softmax, {0, 2}, 0},
    {"softmax_sym", "softmax add", b_softmax, r_softmax, {0, 3}, 0},
    {"softmax_one_class", "softmax", b_softmax, r_softmax, {0, 4}, 0},
    {"softmax_rank1", "softmax", b_softmax, r_softmax, {0, 6}, 0},
    {"log_softmax_rank1", "log_softmax", b_softmax, r_softmax, {1, 6}, 0},
    {"softmax_large", "softmax", b_softmax, r_softmax, {0, 5}, F_FD_SUBSET},
    {"log_softmax_large", "log_softmax", b_softmax, r_softmax, {1, 5}, F_FD_SUBSET | F_LARGE_EPS},
    {"log_softmax_2d", "log_softmax", b_softmax, r_softmax, {1, 0}, 0},
    {"log_softmax_3d", "log_softmax", b_softmax, r_softmax, {1, 1}, 0},
    {"log_softmax_shifted", "log_softmax", b_softmax, r_softmax, {1, 2}, 0},
    {"log_softmax_sym", "log_softmax add", b_softmax, r_softmax, {1, 3}, 0},
    /* reductions: {keep, naxes, axes..., sym} */
    RED2("all", 0, 0, 0, 0, 0), RED2("all_keep", 1, 0, 0, 0, 0),
    RED2("ax1", 0, 1, 1, 0, 0), RED2("ax1_keep", 1, 1, 1, 0, 0),
    RED2("axlast", 0, 1, -1, 0, 0), RED2("ax0", 0, 1, 0, 0, 0),
    RED2("ax02", 0, 2, 0, 2, 0), RED2("ax02_keep", 1, 2, 0, 2, 0),
    RED2("ax_neg_21", 0, 2, -1, -2, 0), RED2("ax12_keep", 1, 2, 2, 1, 0),
    RED2("sym_batch", 0, 1, 0, 0, 1), RED2("sym_batch_keep", 1, 1, 0, 0, 1),
    RED2("sym_batch_ax2", 0, 2, 0, 2, 1), RED2("sym_ax1", 0, 1, 1, 0, 1),
    RED2("sym_all", 0, 0, 0, 0, 1), RED2("sym_all_keep", 1, 0, 0, 0, 1),
    RED2("rank0", 0, 0, 0, 0, 3), RED2("rank0_keep", 1, 0, 0, 0, 3),
    REDF("big_ax0", 0, 0, 1, 0, 0, 2), REDF("big_ax1_keep", 1, 1, 1, 1, 0, 2), REDF("big_all", 1, 0, 0, 0, 0, 2),
    /* layout */
    {"reshape_6x4", "reshape", b_reshape, r_reshape, {0}, 0},
    {"reshape_4x3x2", "reshape", b_reshape, r_reshape, {1}, 0},
    {"reshape_flat", "reshape", b_reshape, r_reshape, {2}, 0},
    {"reshape_unit_dims", "reshape", b_reshape, r_reshape, {3}, 0},
    {"reshape_sym_times3", "reshape add", b_reshape, r_reshape, {4}, 0},
    {"reshape_sym_Bx12", "reshape add", b_reshape, r_reshape, {5}, 0},
    {"reshape_sym_times12", "reshape add", b_reshape, r_reshape, {6}, 0},
    {"reshape_chain_fanout", "reshape add", b_reshape, r_reshape, {7}, 0},
    {"reshape_of_slice", "reshape slice", b_reshape, r_reshape, {8}, 0},
    {"reshape_to_rank0", "reshape", b_reshape0, r_reshape0, {0}, 0},
    {"reshape_sym_input", "reshape add", b_reshape_in, r_reshape_in, {0}, 0},
    {"permute_201", "permute", b_permute, r_permute, {0, 2, 0, 1}, 0},
    {"permute_120", "permute", b_permute, r_permute, {0, 1, 2, 0}, 0},
    {"permute_021", "permute", b_permute, r_permute, {0, 0, 2, 1}, 0},
    {"permute_4d_0231", "permute", b_permute, r_permute, {1, 0, 2, 3, 1}, 0},
    {"permute_4d_3102", "permute", b_permute, r_permute, {1, 3, 1, 0, 2}, 0},
    {"permute_sym_102", "permute add", b_permute, r_permute, {2, 1, 0, 2}, 0},
    {"permute_big_201", "permute", b_permute, r_permute, {3, 2, 0, 1}, F_FD_SUBSET},
    {"transpose_2d", "transpose", b_transpose, r_transpose, {2, 0, 1}, 0},
    {"transpose_same_axis", "transpose", b_transpose, r_transpose, {3, 1, 1}, 0},
    {"transpose_02", "transpose", b_transpose, r_transpose, {3, 0, 2}, 0},
    {"transpose_neg", "transpose", b_transpose, r_transpose, {3, -1, -2}, 0},
    {"transpose_4d_13", "transpose", b_transpose, r_transpose, {4, 1, 3}, 0},
    {"slice_ax0", "slice", b_slice, r_slice, {0, 1, 3, 0}, 0},
    {"slice_ax1", "slice", b_slice, r_slice, {1, 2, 5, 0}, 0},
    {"slice_ax2_one", "slice", b_slice, r_slice, {2, 0, 1, 0}, 0},
    {"slice_neg_axis", "slice", b_slice, r_slice, {-1, 3, 6, 0}, 0},
    {"slice_full", "slice", b_slice, r_slice, {1, 0, 5, 0}, 0},
    {"slice_sym", "slice add", b_slice, r_slice, {1, 1, 4, 1}, 0},
    {"concat2_ax0", "concat", b_concat, r_concat, {0}, 0},
    {"concat2_ax1", "concat", b_concat, r_concat, {1}, 0},
    {"concat3_ax1", "concat", b_concat, r_concat, {2}, 0},
    {"concat3_axlast", "concat", b_concat, r_concat, {3}, 0},
    {"concat3_ax0", "concat", b_concat, r_concat, {4}, 0},
    {"concat2_sym", "concat add", b_concat, r_concat, {5}, 0},
    /* gathers and losses */
    {"embedding_1d", "embedding", b_embedding, r_embedding, {0}, 0},
    {"embedding_2d", "embedding", b_embedding, r_embedding, {1}, 0},
    {"embedding_sym", "embedding", b_embedding, r_embedding, {2}, 0},
    {"embedding_big", "embedding", b_embedding, r_embedding, {3}, F_FD_SUBSET},
    {"cross_entropy_2d", "cross_entropy", b_ce, r_ce, {0}, F_SCALAR_LOSS},
    {"cross_entropy_3d", "cross_entropy", b_ce, r_ce, {1}, F_SCALAR_LOSS},
    {"cross_entropy_shifted", "cross_entropy", b_ce, r_ce, {2}, F_SCALAR_LOSS},
    {"cross_entropy_sym", "cross_entropy add", b_ce, r_ce, {3}, F_SCALAR_LOSS},
    {"cross_entropy_large", "cross_entropy", b_ce, r_ce, {4}, F_SCALAR_LOSS | F_FD_SUBSET | F_LARGE_EPS},
    /* the loss times a constant: the gradient kernels must scale by the incoming dy */
    {"cross_entropy_rank1", "cross_entropy", b_ce, r_ce, {5}, F_SCALAR_LOSS},
    {"cross_entropy_2d_weighted", "cross_entropy", b_ce, r_ce, {0}, 0},
    {"cross_entropy_sym_weighted", "cross_entropy add", b_ce, r_ce, {3}, 0},
    {"mse_2d_weighted", "mse", b_mse, r_mse, {0}, 0},
    {"mse_sym_weighted", "mse add", b_mse, r_mse, {2}, 0},
    {"mse_2d", "mse", b_mse, r_mse, {0}, F_SCALAR_LOSS},
    {"mse_3d", "mse", b_mse, r_mse, {1}, F_SCALAR_LOSS},
    {"mse_sym", "mse add", b_mse, r_mse, {2}, F_SCALAR_LOSS},
    /* conv2d: {N, C, H, W, O, KH, KW, stride, pad, sym} */
    CONV("s1p0", 2, 3, 5, 5, 4, 3, 3, 1, 0, 0),
    CONV("s1p1", 2, 3, 5, 5, 4, 3, 3, 1, 1, 0),
    CONV("s2p0", 2, 3, 6, 6, 4, 3, 3, 2, 0, 0),
    CONV("s2p1", 2, 3, 7, 7, 4, 3, 3, 2, 1, 0),
    CONV("1x1", 2, 3, 4, 4, 5, 1, 1, 1, 0, 0),
    CONV("rect_s2p1", 1, 2, 5, 7, 3, 2, 3, 2, 1, 0),
    CONV("sym_s1p1", 0, 2, 5, 5, 3, 3, 3, 1, 1, 1),
    CONV("s3_k2", 1, 2, 7, 7, 2, 2, 2, 3, 0, 0),
    CONV("p2_k3", 1, 2, 4, 4, 3, 3, 3, 1, 2, 0),
    CONV("k_eq_input", 2, 2, 3, 3, 4, 3, 3, 1, 0, 0),
    {"conv2d_big_s1p1", "conv2d", b_conv, r_conv, {4, 8, 12, 12, 16, 3, 3, 1, 1, 0}, F_FD_SUBSET},
    {"conv2d_big_s2p1", "conv2d", b_conv, r_conv, {3, 5, 11, 9, 7, 3, 3, 2, 1, 0}, F_FD_SUBSET},
    /* pooling: {N, C, H, W, k, stride, pad, sym} */
    POOL("k2s2p0", 2, 2, 6, 6, 2, 2, 0, 0),
    POOL("k3s2p1", 2, 2, 5, 5, 3, 2, 1, 0),
    POOL("k3s1p1", 1, 3, 4, 4, 3, 1, 1, 0),
    POOL("k2s1p0", 2, 2, 5, 5, 2, 1, 0, 0),
    POOL("k2s2p1", 1, 2, 5, 5, 2, 2, 1, 0),
    POOL("sym_k2s2p0", 0, 2, 4, 4, 2, 2, 0, 1),
    POOL("k1s2p0", 1, 2, 5, 5, 1, 2, 0, 0),
    POOL("k4s3p2", 1, 2, 7, 7, 4, 3, 2, 0),
    POOL("negative_k3s2p1", 2, 2, 5, 5, 3, 2, 1, 0, 1),
    POOLF("big_k2s2p0", F_FD_SUBSET, 4, 8, 12, 12, 2, 2, 0, 0),
    /* fan-out accumulation */
    {"fanout_x*x+x", "mul add", b_fanout, r_fanout, {0}, 0},
    {"fanout_x@xT", "matmul", b_fanout, r_fanout, {1}, 0},
    {"fanout_concat_xx", "concat", b_fanout, r_fanout, {2}, 0},
    {"fanout_4way", "tanh sigmoid exp mul add sub", b_fanout, r_fanout, {3}, F_LOOSE},
    /* small models over the symbolic batch */
    {"model_mlp_sym", "matmul bias_add gelu cross_entropy", b_model, r_model, {0}, F_SCALAR_LOSS | F_THREADS},
    {"model_cnn_sym", "conv2d bias_add avg_pool2d reshape matmul mse", b_model, r_model, {1}, F_SCALAR_LOSS | F_THREADS},
    /* layernorm: {mode, C, eps index}; gradients for x (or p), gamma, beta */
    LN("2d_c1_eps1e-5", 0, 1, 0, 0), LN("2d_c1_eps1e-2", 0, 1, 1, 0),
    LN("2d_c2_eps1e-2", 0, 2, 1, 0),
    LN("2d_c5_eps1e-5", 0, 5, 0, 0), LN("2d_c5_eps1e-2", 0, 5, 1, 0),
    LN("2d_c32_eps1e-5", 0, 32, 0, 0), LN("2d_c32_eps1e-2", 0, 32, 1, 0),
    LN("2d_c129_eps1e-5", 0, 129, 0, 0), LN("2d_c129_eps1e-2", 0, 129, 1, 0),
    LN("3d_c2_eps1e-2", 1, 2, 1, 0), LN("3d_c5_eps1e-5", 1, 5, 0, 0), LN("3d_c5_eps1e-2", 1, 5, 1, 0),
    LN("3d_c32_eps1e-5", 1, 32, 0, 0), LN("3d_c129_eps1e-2", 1, 129, 1, 0),
    LN("sym_c1_eps1e-5", 2, 1, 0, 0), LN("sym_c2_eps1e-2", 2, 2, 1, 0), LN("sym_c5_eps1e-5", 2, 5, 0, 0),
    LN("sym_c5_eps1e-2", 2, 5, 1, 0), LN("sym_c32_eps1e-5", 2, 32, 0, 0), LN("sym_c129_eps1e-2", 2, 129, 1, 0),
    LN("sym_fed_c2_eps1e-5", 4, 2, 0, 0), LN("sym_fed_c32_eps1e-2", 4, 32, 1, 0),
    LNR("big_c129_eps1e-5", 3, 129, 0, 2, F_FD_SUBSET), LNR("big_c32_eps1e-2", 3, 32, 1, 6, F_FD_SUBSET),
    /* attention: {mode, T, C, heads} */
    ATT("t1_c4_h1", 0, 1, 4, 1, 0), ATT("t1_c12_h4", 0, 1, 12, 4, 0),
    ATT("t2_c4_h2", 0, 2, 4, 2, 0), ATT("t2_c12_h1", 0, 2, 12, 1, 0), ATT("t2_c32_h4", 0, 2, 32, 4, 0),
    ATT("t7_c4_h1", 0, 7, 4, 1, 0), ATT("t7_c12_h2", 0, 7, 12, 2, 0), ATT("t7_c12_h4", 0, 7, 12, 4, 0),
    ATT("t7_c32_h2", 0, 7, 32, 2, F_FD_SUBSET),
    ATT("t16_c4_h4", 0, 16, 4, 4, 0), ATT("t16_c12_h2", 0, 16, 12, 2, F_FD_SUBSET), ATT("t16_c32_h1", 0, 16, 32, 1, F_FD_SUBSET),
    ATT("t16_c32_h4", 0, 16, 32, 4, F_FD_SUBSET),
    ATT("rank2_t1_c4_h1", 1, 1, 4, 1, 0), ATT("rank2_t7_c12_h2", 1, 7, 12, 2, 0), ATT("rank2_t16_c32_h4", 1, 16, 32, 4, F_FD_SUBSET),
    ATT("rank4_t2_c4_h1", 2, 2, 4, 1, 0), ATT("rank4_t7_c12_h4", 2, 7, 12, 4, F_FD_SUBSET),
    ATT("sym_t1_c4_h2", 3, 1, 4, 2, 0), ATT("sym_t7_c32_h4", 3, 7, 32, 4, 0), ATT("sym_t16_c12_h2", 3, 16, 12, 2, 0),
    ATT("sym_rank4_t7_c4_h2", 4, 7, 4, 2, 0), ATT("sym_rank4_t2_c12_h1", 4, 2, 12, 1, 0),
    ATT("big_t32_c32_h4", 5, 32, 32, 4, F_FD_SUBSET),
    /* several 64-row tiles, the last one partial, at head sizes 64 and 32 (the CUDA flash path) */
    ATT("t100_c128_h2", 0, 100, 128, 2, F_FD_SUBSET), ATT("t130_c64_h2", 0, 130, 64, 2, F_FD_SUBSET),
};
#define N_CASES ((int)(sizeof CASES / sizeof CASES[0]))

/* ---------------------------------------------------------------- the runner */

static void leaf_free_all(T *t) {
  for (int i = 0; i < t->nl; i++) {
    free(t->L[i].data);
    t->L[i].data = NULL;
  }
}

/* (Re)generate leaf data at batch t->batch: parameters once, inputs every time. The previous
 * input buffer is returned in *old so that it is freed only after the new one is fed. */
static void leaf_gen(T *t, leaf *L, int first, void **old) {
  *old = NULL;
  if (L->param && !first) return;
  L->n = 1;
  for (int i = 0; i < L->nd; i++) {
    L->cd[i] = concrete(L->decl[i], t->batch);
    L->n *= L->cd[i];
  }
  *old = L->data;
  if (L->dt == WH_I32) {
    int32_t *p = xmalloc(sizeof(int32_t) * (size_t)L->n);
    for (int64_t i = 0; i < L->n; i++) p[i] = (int32_t)(rng_next(&t->rng) % (uint64_t)L->imax);
    if (L->n >= 2) p[L->n - 1] = p[0];
    L->data = p;
  } else {
    float *p = xmalloc(sizeof(float) * (size_t)L->n);
    gen_f32(p, L->n, L->kind, &t->rng);
    L->data = p;
  }
}

static rt leaf_rt(const leaf *L) {
  rt r = rt_new(L->nd, L->cd);
  for (int64_t i = 0; i < L->n; i++)
    r.v[i] = L->dt == WH_I32 ? (double)((const int32_t *)L->data)[i] : (double)((const float *)L->data)[i];
  return r;
}

static size_t leaf_bytes(const leaf *L) { return (size_t)L->n * (L->dt == WH_I32 ? sizeof(int32_t) : sizeof(float)); }

static void shape_str(int nd, const int64_t *d, char *buf, size_t cap) {
  size_t k = (size_t)snprintf(buf, cap, "[");
  for (int i = 0; i < nd && k < cap; i++) k += (size_t)snprintf(buf + k, cap - k, i ? ",%lld" : "%lld", (long long)d[i]);
  if (k < cap) snprintf(buf + k, cap - k, "]");
}

/* max |got - ref| / max |ref|; NaN anywhere gives +inf */
static double rel_err(const float *got, const rt *ref) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < ref->n; i++) {
    double e = fabs((double)got[i] - ref->v[i]);
    if (!(e == e)) return INFINITY;
    if (e > num) num = e;
    if (fabs(ref->v[i]) > den) den = fabs(ref->v[i]);
  }
  return num / (den > 0 ? den : 1.0);
}

typedef struct run_state {
  const tcase *c;
  T t;
  wh_value y, loss, R;
  int has_grad;
  int ynd;
  int64_t ydecl[WH_MAX_DIMS];
  float *rdata; /* R fed at the bound batch (symbolic y), or NULL */
} run_state;

/* Build the case's graph: op, loss, backward (unless fwd_only). Returns 0 on a build failure. */
static int build_graph(run_state *rs, int fwd_only) {
  const tcase *c = rs->c;
  T *t = &rs->t;
  const char *cn = c->name;
  wh_status st = wh_graph_create(CTX, &t->g);
  if (st != WH_OK) {
    fail_status(cn, "graph_create", st);
    return 0;
  }
  rs->y = c->build(t, c->a);
  if (wh_graph_status(t->g) != WH_OK || rs->y == WH_NONE) {
    check(0, cn, "build: %s", wh_graph_error(t->g));
    return 0;
  }
  st = wh_value_shape(t->g, rs->y, &rs->ynd, rs->ydecl);
  if (st != WH_OK) {
    fail_status(cn, "value_shape", st);
    return 0;
  }
  int ysym = 0;
  int64_t yn = 1;
  for (int i = 0; i < rs->ynd; i++) {
    ysym |= rs->ydecl[i] < 0;
    yn *= rs->ydecl[i] < 0 ? 1 : rs->ydecl[i];
  }
  if ((st = wh_graph_keep(t->g, rs->y)) != WH_OK) {
    fail_status(cn, "graph_keep", st);
    return 0;
  }
  rs->has_grad = 0;
  rs->R = WH_NONE;
  if (fwd_only) return 1;
  if (c->flags & F_SCALAR_LOSS) {
    rs->loss = rs->y;
  } else {
    if (ysym) {
      rs->R = wh_input(t->g, "R", WH_F32, rs->ynd, rs->ydecl);
    } else {
      float *r = xmalloc(sizeof(float) * (size_t)yn);
      uint64_t s = hash_str(cn) ^ 0x5151;
      gen_f32(r, yn, D_UNIF, &s);
      rs->R = wh_constant(t->g, "R", WH_F32, rs->ynd, rs->ydecl, r);
      free(r);
    }
    rs->loss = wh_sum(t->g, wh_mul(t->g, rs->y, rs->R), 0, NULL, 0);
    if (wh_graph_status(t->g) != WH_OK) {
      check(0, cn, "loss build: %s", wh_graph_error(t->g));
      return 0;
    }
  }
  st = wh_backward(t->g, rs->loss);
  if (st != WH_OK) {
    fail_status(cn, "backward", st);
    return 0;
  }
  for (int i = 0; i < t->nl; i++)
    if (t->L[i].param && wh_grad(t->g, t->L[i].v) == WH_NONE) {
      check(0, cn, "grad[%s]: wh_grad returned WH_NONE", t->L[i].name);
      return 0;
    }
  rs->has_grad = 1;
  return 1;
}

/* Bind data at t->batch: generate, set params, feed inputs and R. */
static int bind_data(run_state *rs, wh_session *s, int first) {
  T *t = &rs->t;
  const char *cn = rs->c->name;
  wh_status st;
  void *olds[MAXL];
  int ok = 1;
  for (int i = 0; i < t->nl; i++) leaf_gen(t, &t->L[i], first, &olds[i]);
  for (int i = 0; i < t->nl && ok; i++) {
    leaf *L = &t->L[i];
    if (L->param) {
      if (first && (st = wh_session_set_param(s, L->v, L->data, leaf_bytes(L))) != WH_OK) fail_status(cn, "set_param", st), ok = 0;
    } else if ((st = wh_session_feed(s, L->v, L->data, leaf_bytes(L))) != WH_OK) {
      fail_status(cn, "feed", st), ok = 0;
    }
  }
  if (ok && rs->R != WH_NONE) {
    int sym = 0;
    int64_t n = 1;
    for (int i = 0; i < rs->ynd; i++) {
      sym |= rs->ydecl[i] < 0;
      n *= concrete(rs->ydecl[i], t->batch);
    }
    if (sym) {
      float *old = rs->rdata;
      rs->rdata = xmalloc(sizeof(float) * (size_t)n);
      gen_f32(rs->rdata, n, D_UNIF, &t->rng);
      if ((st = wh_session_feed(s, rs->R, rs->rdata, sizeof(float) * (size_t)n)) != WH_OK) fail_status(cn, "feed R", st), ok = 0;
      free(old);
    }
  }
  for (int i = 0; i < t->nl; i++) free(olds[i]);
  return ok;
}

static int fetch_y(run_state *rs, wh_session *s, float *out, size_t bytes, const char *what) {
  wh_status st = wh_session_fetch(s, rs->y, out, bytes);
  if (st != WH_OK) fail_status(rs->c->name, what, st);
  return st == WH_OK;
}

/* Forward at the bound batch (EVAL and, with gradients, GRAD), then the gradients. */
static void check_at_batch(run_state *rs, wh_session *s, const char *tag) {
  T *t = &rs->t;
  const tcase *c = rs->c;
  char cn[96];
  snprintf(cn, sizeof cn, "%s%s", c->name, tag);
  wh_status st;
  int64_t yd[WH_MAX_DIMS], yn = 1;
  for (int i = 0; i < rs->ynd; i++) {
    yd[i] = concrete(rs->ydecl[i], t->batch);
    yn *= yd[i];
  }
  size_t ybytes = sizeof(float) * (size_t)yn;
  if (wh_session_bytes(s, rs->y) != ybytes) {
    check(0, cn, "session_bytes(y) = %zu, expected %zu", wh_session_bytes(s, rs->y), ybytes);
    return;
  }
  float *ye = xmalloc(ybytes), *yg = xmalloc(ybytes);
  rt in[MAXL], ref = {0};
  for (int i = 0; i < t->nl; i++) in[i] = leaf_rt(&t->L[i]);
  ref = c->ref(t, c->a, in);
  for (int i = 0; i < t->nl; i++) rt_free(&in[i]);

  /* forward */
  int ok = 1;
  double err = INFINITY;
  if ((st = wh_session_run(s, WH_RUN_EVAL)) != WH_OK) {
    fail_status(cn, "run EVAL", st);
    ok = 0;
  }
  ok = ok && fetch_y(rs, s, ye, ybytes, "fetch y (EVAL)");
  if (ok && rs->has_grad) {
    if ((st = wh_session_run(s, WH_RUN_GRAD)) != WH_OK) fail_status(cn, "run GRAD", st), ok = 0;
    ok = ok && fetch_y(rs, s, yg, ybytes, "fetch y (GRAD)");
  } else if (ok) {
    memcpy(yg, ye, ybytes);
  }
  if (ok) {
    int same_shape = ref.nd == rs->ynd;
    for (int i = 0; same_shape && i < ref.nd; i++) same_shape = ref.d[i] == yd[i];
    if (!same_shape) {
      char a[96], b[96];
      shape_str(rs->ynd, yd, a, sizeof a);
      shape_str(ref.nd, ref.d, b, sizeof b);
      check(0, cn, "fwd shape %s, reference %s", a, b);
    } else {
      double e1 = rel_err(ye, &ref), e2 = rel_err(yg, &ref);
      err = e1 > e2 ? e1 : e2;
      double tol = (c->flags & F_LOOSE) ? 1e-4 : 1e-5;
      if (rs->has_grad)
        check(err <= tol, cn, "fwd err=%.2e (eval %.2e, grad-mode %.2e, tol %.0e)", err, e1, e2, tol);
      else
        check(err <= tol, cn, "fwd err=%.2e (eval only, tol %.0e)", err, tol);
    }
  }
  rt_free(&ref);
  free(ye);
  free(yg);
  if (!ok || !rs->has_grad) return;

  /* gradients against central differences of the library's loss */
  double eps = (c->flags & F_SMALL_EPS) ? 1e-3 : (c->flags & F_LARGE_EPS) ? 4e-2 : 1e-2;
  for (int li = 0; li < t->nl; li++) {
    leaf *L = &t->L[li];
    if (!L->param) continue;
    wh_value gv = wh_grad(t->g, L->v);
    size_t nb = leaf_bytes(L);
    float *ga = xmalloc(nb), *x = L->data;
    double *fd = xmalloc(sizeof(double) * (size_t)L->n);
    int64_t *idx = xmalloc(sizeof(int64_t) * (size_t)L->n), nidx = 0;
    if ((c->flags & F_FD_SUBSET) && L->n > FD_SUBSET)
      for (int64_t k = 0; k < FD_SUBSET; k++) idx[nidx++] = k * (L->n - 1) / (FD_SUBSET - 1);
    else
      for (int64_t k = 0; k < L->n; k++) idx[nidx++] = k;
    int gok = 1;
    /* the analytic gradient comes from a fresh GRAD run at the unperturbed point */
    if ((st = wh_session_run(s, WH_RUN_GRAD)) != WH_OK) fail_status(cn, "run GRAD", st), gok = 0;
    if (gok && (st = wh_session_fetch(s, gv, ga, nb)) != WH_OK) fail_status(cn, "fetch grad", st), gok = 0;
    for (int64_t k = 0; gok && k < nidx; k++) {
      int64_t i = idx[k];
      float orig = x[i], lp = 0, lm = 0;
      x[i] = (float)(orig + eps);
      float xp = x[i];
      if ((st = wh_session_set_param(s, L->v, x, nb)) != WH_OK || (st = wh_session_run(s, WH_RUN_GRAD)) != WH_OK ||
          (st = wh_session_fetch(s, rs->loss, &lp, sizeof lp)) != WH_OK) {
        fail_status(cn, "finite difference +", st), gok = 0;
        x[i] = orig;
        break;
      }
      x[i] = (float)(orig - eps);
      float xm = x[i];
      if ((st = wh_session_set_param(s, L->v, x, nb)) != WH_OK || (st = wh_session_run(s, WH_RUN_GRAD)) != WH_OK ||
          (st = wh_session_fetch(s, rs->loss, &lm, sizeof lm)) != WH_OK) {
        fail_status(cn, "finite difference -", st), gok = 0;
        x[i] = orig;
        break;
      }
      x[i] = orig;
      fd[i] = ((double)lp - (double)lm) / ((double)xp - (double)xm);
    }
    if ((st = wh_session_set_param(s, L->v, x, nb)) != WH_OK) fail_status(cn, "restore param", st), gok = 0;
    if (gok) {
      /* per element |analytic - fd| / max(|fd_i|, min(1, max|fd|)): the brief's
       * 1e-2 * max(1, |fd|) when gradients are O(1), relative to the largest one when they are
       * all small (a mean over many elements), so that a zero or mis-scaled gradient cannot pass */
      double ginf = 1e-4, emax = -1, dn = 0, fn = 0;
      int64_t worst = 0;
      for (int64_t k = 0; k < nidx; k++) ginf = fmax(ginf, fabs(fd[idx[k]]));
      for (int64_t k = 0; k < nidx; k++) {
        int64_t i = idx[k];
        double d = fabs((double)ga[i] - fd[i]), e = d / fmax(fabs(fd[i]), fmin(1.0, ginf));
        if (!(e == e)) e = INFINITY;
        if (e > emax) emax = e, worst = i;
        dn += d * d;
        fn += fd[i] * fd[i];
      }
      double nerr = sqrt(dn) / (sqrt(fn) > 1e-6 ? sqrt(fn) : 1e-6);
      if (!(nerr == nerr)) nerr = INFINITY;
      int pass = emax <= 1e-2;
      char sub[64] = "";
      if (nidx < L->n) snprintf(sub, sizeof sub, " (%lld of %lld elements)", (long long)nidx, (long long)L->n);
      if (pass)
        check(1, cn, "grad[%s] err=%.2e nerr=%.2e%s", L->name, emax, nerr, sub);
      else
        check(0, cn, "grad[%s] err=%.2e nerr=%.2e%s (worst elem %lld: analytic %.6g, fd %.6g)", L->name, emax, nerr,
              sub, (long long)worst, (double)ga[worst], fd[worst]);
    }
    free(idx);
    free(ga);
    free(fd);
  }
}

static void run_case(const tcase *c) {
  run_state rs;
  memset(&rs, 0, sizeof rs);
  rs.c = c;
  rs.t.cname = c->name;
  rs.t.rng = hash_str(c->name);
  cover(c->ops);
  wh_session *s = NULL;
  if (!build_graph(&rs, 0)) {
    /* no gradients: still check the forward, from a graph without backward */
    wh_graph_destroy(rs.t.g);
    memset(&rs.t, 0, sizeof rs.t);
    rs.t.cname = c->name;
    rs.t.rng = hash_str(c->name);
    if (!build_graph(&rs, 1)) goto out;
  }
  int sym = 0;
  for (int i = 0; i < rs.t.nl; i++)
    for (int k = 0; k < rs.t.L[i].nd; k++) sym |= rs.t.L[i].decl[k] < 0;
  rs.t.batch = sym ? 3 : 1;
  wh_session_options so = WH_SESSION_OPTIONS_INIT;
  so.batch = rs.t.batch;
  wh_status st = wh_session_create(CTX, rs.t.g, &so, &s);
  if (st != WH_OK) {
    fail_status(c->name, "session_create", st);
    goto out;
  }
  if (!bind_data(&rs, s, 1)) goto out;
  check_at_batch(&rs, s, sym ? "@B=3" : "");
  if (sym) {
    rs.t.batch = 5;
    if ((st = wh_session_set_batch(s, 5)) != WH_OK) {
      fail_status(c->name, "set_batch(5)", st);
      goto out;
    }
    if (!bind_data(&rs, s, 0)) goto out;
    check_at_batch(&rs, s, "@B=5");
  }
out:
  wh_session_destroy(s);
  wh_graph_destroy(rs.t.g);
  leaf_free_all(&rs.t);
  free(rs.rdata);
}

/* One GRAD run of the case in ctx (same data as run_case): y then every parameter's gradient,
 * concatenated into a malloc'd buffer of *n floats. NULL after a failure (already reported). */
#define MAX_SEGS 32
static wh_precision DEV_PREC = WH_PRECISION_F32; /* of CUDA sessions (TEST_OPS_PRECISION) */
static float *grad_snapshot(const tcase *c, wh_ctx *ctx, wh_device_kind dev, int64_t *n, int64_t *seg, int *nseg) {
  wh_ctx *saved = CTX;
  CTX = ctx; /* build_graph and fail_status use CTX */
  run_state rs;
  memset(&rs, 0, sizeof rs);
  rs.c = c;
  rs.t.cname = c->name;
  rs.t.rng = hash_str(c->name);
  wh_session *s = NULL;
  float *buf = NULL;
  wh_status st;
  if (!build_graph(&rs, 0)) goto out;
  int sym = 0;
  for (int i = 0; i < rs.t.nl; i++)
    for (int k = 0; k < rs.t.L[i].nd; k++) sym |= rs.t.L[i].decl[k] < 0;
  rs.t.batch = sym ? 3 : 1;
  wh_session_options so = WH_SESSION_OPTIONS_INIT;
  so.batch = rs.t.batch;
  so.device = dev;
  so.precision = dev == WH_DEVICE_CUDA ? DEV_PREC : WH_PRECISION_F32;
  if ((st = wh_session_create(CTX, rs.t.g, &so, &s)) != WH_OK) {
    fail_status(c->name, "threads: session_create", st);
    goto out;
  }
  if (!bind_data(&rs, s, 1)) goto out;
  if ((st = wh_session_run(s, WH_RUN_GRAD)) != WH_OK) {
    fail_status(c->name, "threads: run GRAD", st);
    goto out;
  }
  size_t total = wh_session_bytes(s, rs.y);
  for (int i = 0; i < rs.t.nl; i++)
    if (rs.t.L[i].param) total += leaf_bytes(&rs.t.L[i]);
  buf = xmalloc(total);
  size_t off = wh_session_bytes(s, rs.y);
  int ns = 0;
  seg[ns++] = (int64_t)(off / sizeof(float));
  if ((st = wh_session_fetch(s, rs.y, buf, off)) != WH_OK) {
    fail_status(c->name, "threads: fetch y", st);
    free(buf), buf = NULL;
    goto out;
  }
  for (int i = 0; i < rs.t.nl; i++) {
    leaf *L = &rs.t.L[i];
    if (!L->param) continue;
    if ((st = wh_session_fetch(s, wh_grad(rs.t.g, L->v), (char *)buf + off, leaf_bytes(L))) != WH_OK) {
      fail_status(c->name, "threads: fetch grad", st);
      free(buf), buf = NULL;
      goto out;
    }
    off += leaf_bytes(L);
    if (ns < MAX_SEGS) seg[ns++] = (int64_t)(off / sizeof(float));
  }
  seg[ns - 1] = (int64_t)(off / sizeof(float));
  *nseg = ns;
  *n = (int64_t)(total / sizeof(float));
out:
  wh_session_destroy(s);
  wh_graph_destroy(rs.t.g);
  leaf_free_all(&rs.t);
  free(rs.rdata);
  CTX = saved;
  return buf;
}

/* Kernels split work by output element: results must not depend on the thread count. */
static void thread_parity(const tcase *c, wh_ctx *ctx_par) {
  int64_t n1 = 0, n2 = 0, seg[MAX_SEGS];
  int ns = 0;
  float *a = grad_snapshot(c, CTX, WH_DEVICE_CPU, &n1, seg, &ns);
  float *b = a ? grad_snapshot(c, ctx_par, WH_DEVICE_CPU, &n2, seg, &ns) : NULL;
  if (a && b) {
    int64_t diff = 0;
    for (int64_t i = 0; i < n1 && n1 == n2; i++) diff += memcmp(&a[i], &b[i], sizeof(float)) != 0;
    check(n1 == n2 && diff == 0, c->name, "threads %d vs %d: y and gradients bitwise identical (%lld of %lld differ)",
          wh_ctx_threads(CTX), wh_ctx_threads(ctx_par), (long long)diff, (long long)n1);
  }
  free(a);
  free(b);
}

/* The CUDA backend against the CPU one: y and each gradient, by ||gpu - cpu|| / ||cpu|| (fp32). */
static void device_parity(const tcase *c) {
  int64_t n1 = 0, n2 = 0, s1[MAX_SEGS], s2[MAX_SEGS];
  int ns1 = 0, ns2 = 0;
  float *a = grad_snapshot(c, CTX, WH_DEVICE_CPU, &n1, s1, &ns1);
  float *b = a ? grad_snapshot(c, CTX, WH_DEVICE_CUDA, &n2, s2, &ns2) : NULL;
  if (a && b) {
    double worst = 0;
    int bad = n1 != n2 || ns1 != ns2, nan = 0;
    for (int k = 0, lo = 0; !bad && k < ns1; lo = (int)s1[k++]) {
      double dd = 0, rr = 0;
      for (int64_t i = lo; i < s1[k]; i++) {
        double d = (double)b[i] - (double)a[i];
        nan |= b[i] != b[i];
        dd += d * d, rr += (double)a[i] * a[i];
      }
      double rel = rr > 0 ? sqrt(dd / rr) : sqrt(dd);
      if (rel > worst) worst = rel;
    }
    double tol = getenv("TEST_OPS_TOL") ? atof(getenv("TEST_OPS_TOL")) : 1e-5;
    check(!bad && !nan && worst <= tol, c->name, "cuda vs cpu: y and %d gradient(s), worst ||d||/||ref|| %.2e (<= %.0e)%s",
          ns1 - 1, worst, tol, nan ? ", NaN" : "");
  }
  free(a);
  free(b);
}

/* ---------------------------------------------------------------- dropout */

#define DR_R 64
#define DR_C 64

static void dropout_checks(void) {
  const char *cn = "dropout";
  const double p = 0.25;
  const int64_t n = DR_R * DR_C;
  cover("dropout");
  wh_graph *g = NULL;
  wh_session *s = NULL;
  float *x = xmalloc(sizeof(float) * n), *r = xmalloc(sizeof(float) * n), *y = xmalloc(sizeof(float) * n);
  float *y0 = xmalloc(sizeof(float) * n), *y2 = xmalloc(sizeof(float) * n), *yb = xmalloc(sizeof(float) * n);
  float *ga = xmalloc(sizeof(float) * n);
  uint64_t rng = hash_str(cn);
  gen_f32(x, n, D_POS, &rng);
  gen_f32(r, n, D_UNIF, &rng);
  wh_status st;
  const size_t nb = sizeof(float) * (size_t)n;
  if ((st = wh_graph_create(CTX, &g)) != WH_OK) {
    fail_status(cn, "graph_create", st);
    goto out;
  }
  int64_t d[2] = {DR_R, DR_C};
  wh_value xv = wh_param(g, "x", WH_F32, 2, d, WH_INIT(WH_INIT_ZEROS, 0, 0, 0));
  wh_value R = wh_constant(g, "R", WH_F32, 2, d, r);
  wh_value yv = wh_dropout(g, xv, (float)p, 1234);
  wh_value y0v = wh_dropout(g, xv, 0.0f, 99);       /* p = 0: identity in train mode too */
  wh_value y2v = wh_dropout(g, xv, (float)p, 1235); /* another seed: another mask */
  wh_value sum = wh_add(g, wh_add(g, wh_mul(g, yv, R), wh_mul(g, y0v, R)), wh_mul(g, y2v, R));
  wh_value loss = wh_sum(g, sum, 0, NULL, 0);
  if (wh_graph_status(g) != WH_OK) {
    check(0, cn, "build: %s", wh_graph_error(g));
    goto out;
  }
  if ((st = wh_graph_keep(g, yv)) != WH_OK || (st = wh_graph_keep(g, y0v)) != WH_OK || (st = wh_graph_keep(g, y2v)) != WH_OK) {
    fail_status(cn, "graph_keep", st);
    goto out;
  }
  if ((st = wh_backward(g, loss)) != WH_OK) {
    fail_status(cn, "backward", st);
    goto out;
  }
  wh_sgd_options so = WH_SGD_OPTIONS_INIT;
  so.lr.lr = 1e-3f; /* a TRAIN step advances the step counter (x moves: re-read below) */
  if ((st = wh_optimizer_sgd(g, &so)) != WH_OK) {
    fail_status(cn, "optimizer_sgd", st);
    goto out;
  }
  if ((st = wh_session_create(CTX, g, NULL, &s)) != WH_OK) {
    fail_status(cn, "session_create", st);
    goto out;
  }
  if ((st = wh_session_set_param(s, xv, x, nb)) != WH_OK) {
    fail_status(cn, "set_param", st);
    goto out;
  }
  if ((st = wh_session_run(s, WH_RUN_GRAD)) != WH_OK || (st = wh_session_fetch(s, yv, y, nb)) != WH_OK ||
      (st = wh_session_fetch(s, y0v, y0, nb)) != WH_OK || (st = wh_session_fetch(s, y2v, y2, nb)) != WH_OK ||
      (st = wh_session_fetch(s, wh_grad(g, xv), ga, nb)) != WH_OK) {
    fail_status(cn, "run GRAD / fetch", st);
    goto out;
  }
  /* 1. kept elements are x/(1-p), dropped ones exactly 0; 2. the rate */
  double scale = 1.0 / (1.0 - p), err = 0, err0 = 0;
  int64_t zeros = 0, zeros2 = 0, differ = 0;
  for (int64_t i = 0; i < n; i++) {
    if (y[i] == 0.0f)
      zeros++;
    else
      err = fmax(err, fabs(y[i] - x[i] * scale) / (x[i] * scale));
    if (y2[i] == 0.0f)
      zeros2++;
    else
      err = fmax(err, fabs(y2[i] - x[i] * scale) / (x[i] * scale));
    err0 = fmax(err0, fabs(y0[i] - x[i]));
    differ += (y[i] == 0.0f) != (y2[i] == 0.0f);
  }
  check(err <= 1e-6, cn, "train fwd: kept = x/(1-p) err=%.2e", err);
  double sigma = sqrt(p * (1 - p) / (double)n), f1 = (double)zeros / n, f2 = (double)zeros2 / n;
  check(fabs(f1 - p) <= 3 * sigma, cn, "train rate seed 1234: dropped %.4f, p=%.2f +- %.4f (3 sigma)", f1, p, 3 * sigma);
  check(fabs(f2 - p) <= 3 * sigma, cn, "train rate seed 1235: dropped %.4f, p=%.2f +- %.4f (3 sigma)", f2, p, 3 * sigma);
  check(err0 == 0, cn, "p=0 in train mode is the identity err=%.2e", err0);
  /* two independent masks differ in a fraction 2p(1-p) of positions */
  double q = 2 * p * (1 - p), sq = sqrt(q * (1 - q) / (double)n), fd = (double)differ / n;
  check(fabs(fd - q) <= 3 * sq, cn, "seeds 1234/1235 masks differ in %.4f of positions, expected %.4f +- %.4f", fd, q, 3 * sq);
  /* 3. the gradient given the masks: R * (mask1/(1-p) + 1 + mask2/(1-p)) */
  double gerr = 0;
  for (int64_t i = 0; i < n; i++) {
    double e = r[i] * ((y[i] != 0 ? scale : 0) + 1 + (y2[i] != 0 ? scale : 0));
    gerr = fmax(gerr, fabs(ga[i] - e));
  }
  check(gerr <= 1e-5, cn, "grad = R * mask/(1-p) err=%.2e", gerr);
  /* 4. the mask is reproducible across GRAD runs (finite differences rely on it): central
   * differences on the first 48 elements */
  double fderr = 0;
  int fdok = 1;
  for (int64_t i = 0; i < 48 && fdok; i++) {
    float orig = x[i], lp = 0, lm = 0;
    x[i] = orig + 1e-2f;
    float xp = x[i];
    if ((st = wh_session_set_param(s, xv, x, nb)) != WH_OK || (st = wh_session_run(s, WH_RUN_GRAD)) != WH_OK ||
        (st = wh_session_fetch(s, loss, &lp, sizeof lp)) != WH_OK)
      fdok = 0;
    x[i] = orig - 1e-2f;
    float xm = x[i];
    if (fdok && ((st = wh_session_set_param(s, xv, x, nb)) != WH_OK || (st = wh_session_run(s, WH_RUN_GRAD)) != WH_OK ||
                 (st = wh_session_fetch(s, loss, &lm, sizeof lm)) != WH_OK))
      fdok = 0;
    x[i] = orig;
    double f = ((double)lp - lm) / ((double)xp - xm);
    fderr = fmax(fderr, fabs(f - ga[i]) / fmax(1.0, fabs(f)));
  }
  if (!fdok) {
    fail_status(cn, "finite differences", st);
    goto out;
  }
  if ((st = wh_session_set_param(s, xv, x, nb)) != WH_OK) {
    fail_status(cn, "restore param", st);
    goto out;
  }
  check(fderr <= 1e-2, cn, "grad vs finite differences (48 elements) err=%.2e", fderr);
  if ((st = wh_session_run(s, WH_RUN_GRAD)) != WH_OK || (st = wh_session_fetch(s, yv, yb, nb)) != WH_OK) {
    fail_status(cn, "run GRAD", st);
    goto out;
  }
  check(memcmp(y, yb, nb) == 0, cn, "mask reproducible across GRAD runs at the same step");
  /* 5. eval mode is the identity */
  if ((st = wh_session_run(s, WH_RUN_EVAL)) != WH_OK || (st = wh_session_fetch(s, yv, yb, nb)) != WH_OK ||
      (st = wh_session_fetch(s, y2v, y2, nb)) != WH_OK) {
    fail_status(cn, "run EVAL", st);
    goto out;
  }
  check(memcmp(x, yb, nb) == 0 && memcmp(x, y2, nb) == 0, cn, "eval mode is the identity");
  /* 6. a TRAIN step changes the mask (it is a function of the step), not the rate */
  if ((st = wh_session_run(s, WH_RUN_TRAIN)) != WH_OK) {
    fail_status(cn, "run TRAIN (sgd)", st);
    goto out;
  }
  if ((st = wh_session_get_param(s, xv, x, nb)) != WH_OK) {
    fail_status(cn, "get_param after TRAIN", st);
    goto out;
  }
  if ((st = wh_session_run(s, WH_RUN_GRAD)) != WH_OK || (st = wh_session_fetch(s, yv, yb, nb)) != WH_OK) {
    fail_status(cn, "run GRAD after TRAIN", st);
    goto out;
  }
  int64_t zb = 0, moved = 0;
  differ = 0;
  for (int64_t i = 0; i < n; i++) {
    zb += yb[i] == 0.0f;
    differ += (yb[i] == 0.0f) != (y[i] == 0.0f);
    if (yb[i] != 0.0f) moved += fabs(yb[i] - x[i] * scale) > 1e-6 * x[i] * scale;
  }
  fd = (double)differ / n;
  check(fabs(fd - q) <= 3 * sq && moved == 0, cn,
        "after a TRAIN step the mask differs in %.4f of positions (expected %.4f +- %.4f), kept values exact: %s", fd,
        q, 3 * sq, moved ? "no" : "yes");
  check(fabs((double)zb / n - p) <= 3 * sigma, cn, "train rate after a step: dropped %.4f", (double)zb / n);
out:
  wh_session_destroy(s);
  wh_graph_destroy(g);
  free(x), free(r), free(y), free(y0), free(y2), free(yb), free(ga);
}

/* ---------------------------------------------------------------- shape errors */

/* The builder returns WH_NONE, poisons the graph with WH_ERR_SHAPE, and the message names the op.
 * a: {op (0 layernorm, 1 attention), x dims (rank, d0, d1, d2), gamma len, beta len, gamma rank
 * (layernorm) or heads (attention)} */
typedef struct ecase {
  const char *name;
  int op;
  int xnd;
  int64_t xd[3];
  int64_t glen, blen;
  int grank_or_heads;
} ecase;

static const ecase ECASES[] = {
    {"layernorm_err_gamma_len", 0, 3, {2, 3, 5}, 4, 5, 1},
    {"layernorm_err_gamma_len_long", 0, 2, {3, 5}, 6, 5, 1},
    {"layernorm_err_beta_len", 0, 2, {3, 5}, 5, 4, 1},
    {"layernorm_err_gamma_2d", 0, 2, {3, 5}, 5, 5, 2},
    {"attention_err_not_3c", 1, 3, {2, 4, 10}, 0, 0, 1},
    {"attention_err_not_3c_rank2", 1, 2, {4, 13}, 0, 0, 1},
    {"attention_err_heads_c6_h4", 1, 3, {2, 4, 18}, 0, 0, 4},
    {"attention_err_heads_c12_h5", 1, 2, {4, 36}, 0, 0, 5},
};
#define N_ECASES ((int)(sizeof ECASES / sizeof ECASES[0]))

static void error_case(const ecase *e) {
  const char *cn = e->name, *opname = e->op ? "attention" : "layernorm";
  wh_graph *g = NULL;
  wh_status st = wh_graph_create(CTX, &g);
  if (st != WH_OK) {
    fail_status(cn, "graph_create", st);
    return;
  }
  wh_value x = wh_input(g, "x", WH_F32, e->xnd, e->xd), y;
  if (e->op == 0) {
    int64_t gd[2] = {1, e->glen}, bd[1] = {e->blen};
    int gr = e->grank_or_heads;
    wh_value gm = wh_param(g, "gamma", WH_F32, gr, gr == 2 ? gd : gd + 1, WH_INIT(WH_INIT_ONES, 0, 0, 0));
    wh_value bt = wh_param(g, "beta", WH_F32, 1, bd, WH_INIT(WH_INIT_ZEROS, 0, 0, 0));
    if (wh_graph_status(g) != WH_OK) {
      check(0, cn, "leaves: %s", wh_graph_error(g));
      wh_graph_destroy(g);
      return;
    }
    y = wh_layernorm(g, x, gm, bt, 1e-5f);
  } else {
    if (wh_graph_status(g) != WH_OK) {
      check(0, cn, "leaves: %s", wh_graph_error(g));
      wh_graph_destroy(g);
      return;
    }
    y = wh_attention(g, x, e->grank_or_heads);
  }
  const char *msg = wh_graph_error(g);
  int named = msg && strstr(msg, opname) != NULL;
  check(y == WH_NONE && wh_graph_status(g) == WH_ERR_SHAPE && named, cn,
        "returns WH_NONE (%s), status %s (expected WH_ERR_SHAPE), message names '%s' (%s): \"%s\"",
        y == WH_NONE ? "yes" : "no", wh_status_str(wh_graph_status(g)), opname, named ? "yes" : "no", msg ? msg : "(null)");
  wh_graph_destroy(g);
}

/* ---------------------------------------------------------------- main */

static wh_ctx *ctx_par; /* PARITY_THREADS threads, for the thread-parity checks */

static void table_case(const void *arg) {
  const tcase *c = arg;
  run_case(c);
  if (ctx_par && (c->flags & (F_FD_SUBSET | F_THREADS))) thread_parity(c, ctx_par);
}

static void dropout_case(const void *arg) {
  (void)arg;
  dropout_checks();
}

static void shape_error_case(const void *arg) { error_case(arg); }

/* Every public op has a table case: only meaningful over the whole table. */
static void coverage_case(const void *arg) {
  (void)arg;
  if (!wt_running_all()) {
    wt_skip("counts the ops the other cases covered");
    return;
  }
  char buf[512];
  size_t k = 0;
  int nc = 0;
  for (int i = 0; i < N_OPS; i++)
    if (covered[i]) k += (size_t)snprintf(buf + k, sizeof buf - k, " %s", ALL_OPS[i]), nc++;
  printf("# ops covered (%d/%d):%s\n", nc, N_OPS, buf);
  for (int i = 0; i < N_OPS; i++)
    if (!covered[i]) check(0, "coverage", "op %s has no case", ALL_OPS[i]);
  check(nc == N_OPS, "coverage", "%d/%d public ops have a case", nc, N_OPS);
}

static int host_setup(int argc, char **argv) {
  (void)argc, (void)argv;
  const char *th = getenv("TEST_OPS_THREADS");
  wh_ctx_options co = WH_CTX_OPTIONS_INIT;
  co.num_threads = th ? atoi(th) : 1;
  wh_status st = wh_ctx_create(&CTX, &co);
  if (st != WH_OK) {
    printf("FAIL ctx_create: %s\n", wh_status_str(st));
    return 1;
  }
  printf("# libwhale %s, %s, %d thread(s), %d table cases\n", wh_version(), wh_build_info(), wh_ctx_threads(CTX), N_CASES);
  wh_ctx_options cp = WH_CTX_OPTIONS_INIT;
  cp.num_threads = PARITY_THREADS;
  if ((st = wh_ctx_create(&ctx_par, &cp)) != WH_OK) check(0, "threads", "ctx_create(%d threads): %s", PARITY_THREADS, wh_status_str(st));
  return 0;
}

static void host_teardown(void) {
  wh_ctx_destroy(ctx_par);
  wh_ctx_destroy(CTX);
}

/* TEST_OPS_DEVICE=cuda: every table case once on each backend, compared (exit 77 without a GPU). */
static int device_setup(int argc, char **argv) {
  (void)argc, (void)argv;
  if (wh_cuda_device_count() < 1) {
    printf("# no CUDA device (or a build without the CUDA backend): skipped\n");
    return 77;
  }
  wh_ctx_options co = WH_CTX_OPTIONS_INIT;
  co.num_threads = 1;
  wh_status st = wh_ctx_create(&CTX, &co);
  if (st != WH_OK) {
    printf("FAIL ctx_create: %s\n", wh_status_str(st));
    return 1;
  }
  const char *prec = getenv("TEST_OPS_PRECISION");
  if (prec && !strcmp(prec, "bf16")) DEV_PREC = WH_PRECISION_BF16;
  if (prec && !strcmp(prec, "tf32")) DEV_PREC = WH_PRECISION_TF32;
  printf("# libwhale %s, %s: CUDA (%s) against CPU, %d table cases\n", wh_version(), wh_build_info(),
         DEV_PREC == WH_PRECISION_BF16 ? "bf16" : DEV_PREC == WH_PRECISION_TF32 ? "tf32" : "fp32", N_CASES);
  return 0;
}

static void device_case(const void *arg) { device_parity(arg); }

static void device_teardown(void) { wh_ctx_destroy(CTX); }

int main(int argc, char **argv) {
  const char *dev = getenv("TEST_OPS_DEVICE");
  int device = dev && strcmp(dev, "cuda") == 0, n = 0;
  /* the table's rows are the cases; on the host also dropout, the shape errors and coverage */
  wt_case *cases = xmalloc(sizeof(wt_case) * (size_t)(N_CASES + N_ECASES + 2));
  for (int i = 0; i < N_CASES; i++) cases[n++] = (wt_case){CASES[i].name, device ? device_case : table_case, &CASES[i]};
  if (!device) {
    cases[n++] = (wt_case){"dropout", dropout_case, NULL};
    for (int i = 0; i < N_ECASES; i++) cases[n++] = (wt_case){ECASES[i].name, shape_error_case, &ECASES[i]};
    cases[n++] = (wt_case){"coverage", coverage_case, NULL};
  }
  const wt_suite host = {"ops", host_setup, host_teardown, NULL, 0};
  const wt_suite gpu = {"ops", device_setup, device_teardown, NULL, 0};
  int rc = wt_main(device ? &gpu : &host, cases, n, argc, argv);
  free(cases);
  return rc;
}
