/* session.c - the single-process executor: binds the batch size, plans intermediates into one
 * arena by lifetime, owns parameters and optimizer state, and runs nodes in graph order. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../comm/comm.h"
#include "../ir/ir.h"
#include "../kernels/cuda/cuda.h"
#include "../kernels/kernels.h"
#include "../planner/planner.h"
#include "../base/clock.h"
#include "../base/ctx.h"
#include "memplan.h"
#include "../partition/program.h"
#include "session_impl.h"
#include "../base/strbuf.h"
#include "wh_config.h"

/* gradient fusion bucket of a data-parallel session */
#define DP_BUCKET_BYTES ((size_t)4 << 20)


/* ---- parameter initialisation: counter-based, so a seed gives the same values anywhere */

static uint64_t split64(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static double unif(uint64_t *s) { return ((double)(split64(s) >> 11) + 0.5) * (1.0 / 9007199254740992.0); }

static void init_param(const wh__value *v, float *p, int64_t numel) {
  const wh_init *in = &v->init;
  const wh__shape *sh = &v->shape;
  int64_t rf = 1;
  for (int i = 2; i < sh->ndim; i++) rf *= sh->d[i];
  int64_t fan_in = sh->ndim >= 2 ? sh->d[1] * rf : numel, fan_out = sh->ndim >= 2 ? sh->d[0] * rf : numel;
  if (in->fan_in > 0) fan_in = in->fan_in;
  if (in->fan_out > 0) fan_out = in->fan_out;
  uint64_t st = in->seed * 0x2545f4914f6cdd1dull + 0x1234567ull;
  double a = in->a, b = in->b, gain = in->a != 0 ? in->a : 1.0;
  double lo = 0, hi = 0, mean = 0, std = 0;
  int normal = 0;
  switch (in->kind) {
    case WH_INIT_ZEROS: lo = hi = 0; break;
    case WH_INIT_ONES: lo = hi = 1; break;
    case WH_INIT_CONSTANT: lo = hi = a; break;
    case WH_INIT_UNIFORM: lo = a, hi = b; break;
    case WH_INIT_NORMAL: normal = 1, mean = a, std = b; break;
    case WH_INIT_XAVIER_UNIFORM: hi = gain * sqrt(6.0 / (double)(fan_in + fan_out)), lo = -hi; break;
    case WH_INIT_XAVIER_NORMAL: normal = 1, std = gain * sqrt(2.0 / (double)(fan_in + fan_out)); break;
    case WH_INIT_KAIMING_UNIFORM: hi = sqrt(2.0 / (1.0 + a * a)) * sqrt(3.0 / (double)fan_in), lo = -hi; break;
    case WH_INIT_KAIMING_NORMAL: normal = 1, std = sqrt(2.0 / (1.0 + a * a)) / sqrt((double)fan_in); break;
  }
  for (int64_t i = 0; i < numel; i++) {
    if (normal) {
      double u1 = unif(&st), u2 = unif(&st);
      p[i] = (float)(mean + std * sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
    } else {
      p[i] = (float)(lo + (hi - lo) * unif(&st));
    }
  }
}


int32_t wh__session_root(const wh_session *s, int32_t v) {
  while (s->alias[v] >= 0) v = s->alias[v];
  return v;
}

/* Plan the arena for the bound batch: sizes, lifetimes in schedule order, views, in-place
 * outputs, then placement of what remains. */
static wh_status plan(wh_session *s) {
  const wh__program *pg = &s->prog;
  int n = s->n, nn = pg->n_nodes;
  int64_t *size = calloc((size_t)n + 1, sizeof(int64_t)), *off = calloc((size_t)n + 1, sizeof(int64_t));
  int *first = calloc((size_t)n + 1, sizeof(int)), *last = calloc((size_t)n + 1, sizeof(int));
  if (!size || !off || !first || !last) {
    free(size), free(off), free(first), free(last);
    return WH_ERR_OUT_OF_MEMORY;
  }
  for (int v = 0; v < n; v++) {
    s->bytes[v] = wh__numel(&pg->values[v].shape, s->batch) * (int64_t)wh__dtype_size(pg->values[v].dtype);
    s->alias[v] = -1;
    first[v] = last[v] = -1;
  }
  for (int i = 0; i < nn; i++) {
    const wh__node *nd = &pg->nodes[i];
    if (nd->out >= 0) {
      first[nd->out] = last[nd->out] = i;
      if (nd->op == WH_OP_RESHAPE) s->alias[nd->out] = nd->in[0];
    }
    for (int k = 0; k < nd->n_in; k++) last[nd->in[k]] = i;
  }
  for (int v = 0; v < n; v++)
    if (pg->values[v].keep && first[v] >= 0) last[v] = nn;
  /* a view keeps its root alive as long as itself (to the root: a recomputed view's chain can
   * run through clones, which come after the values that read them) */
  for (int v = 0; v < n; v++)
    if (s->alias[v] >= 0) {
      int32_t r = wh__session_root(s, v);
      if (last[v] > last[r]) last[r] = last[v];
    }
  /* in-place: an output may take over the storage of an input whose root dies at this node */
  s->n_inplace = 0;
  for (int i = 0; s->inplace && i < nn; i++) {
    const wh__node *nd = &pg->nodes[i];
    unsigned mask = wh__ops[nd->op]->inplace;
    if (nd->out < 0 || !mask || s->alias[nd->out] >= 0) continue;
    for (int k = 0; k < nd->n_in; k++) {
      if (!(mask >> k & 1)) continue;
      int32_t r = wh__session_root(s, nd->in[k]);
      if (wh__role_persistent(pg->values[r].role) || last[r] != i || s->bytes[r] != s->bytes[nd->out] ||
          pg->values[r].dtype != pg->values[nd->out].dtype)
        continue;
      s->alias[nd->out] = r;
      last[r] = last[nd->out];
      s->n_inplace++;
      break;
    }
  }
  s->inter_bytes = 0;
  s->n_inter = 0;
  for (int v = 0; v < n; v++) {
    if (first[v] < 0 || wh__role_persistent(pg->values[v].role)) continue;
    s->inter_bytes += s->bytes[v];
    s->n_inter++;
    size[v] = s->alias[v] >= 0 ? 0 : s->bytes[v];
  }
  /* the lower bound any placement must meet: the most bytes alive at one step */
  int64_t *delta = calloc((size_t)nn + 2, sizeof(int64_t));
  if (!delta) {
    free(size), free(off), free(first), free(last);
    return WH_ERR_OUT_OF_MEMORY;
  }
  for (int v = 0; v < n; v++)
    if (size[v] > 0) delta[first[v]] += size[v], delta[last[v] + 1] -= size[v];
  s->live_peak = 0;
  for (int64_t i = 0, live = 0; i <= nn; i++) {
    live += delta[i];
    if (live > s->live_peak) s->live_peak = live;
  }
  free(delta);
  int64_t total = wh__memplan(n, size, first, last, off);
  if (total < 0) {
    free(size), free(off), free(first), free(last);
    return WH_ERR_OUT_OF_MEMORY;
  }
  void *arena = NULL;
  if (s->dev) {
    /* the old arena first: device memory is the scarce one */
    wh__cuda_free(s->dev, s->arena);
    s->arena = NULL;
    if (wh__cuda_alloc(s->dev, (size_t)(total ? total : WH_ALIGN), &arena) != WH_OK) {
      free(size), free(off), free(first), free(last);
      return WH_ERR_OUT_OF_MEMORY;
    }
    /* inputs get device buffers at the bound batch */
    for (int v = 0; v < n; v++) {
      if (pg->values[v].role != WH_ROLE_INPUT) continue;
      wh__cuda_free(s->dev, s->own[v]);
      s->own[v] = NULL;
      s->host_feed[v] = NULL;
      if (last[v] < 0 && !pg->values[v].keep) continue; /* nothing reads it */
      if (wh__cuda_alloc(s->dev, (size_t)s->bytes[v], &s->own[v]) != WH_OK) {
        free(size), free(off), free(first), free(last);
        return WH_ERR_OUT_OF_MEMORY;
      }
    }
  } else {
    if (posix_memalign(&arena, WH_ALIGN, (size_t)(total ? total : WH_ALIGN)) != 0) {
      free(size), free(off), free(first), free(last);
      return WH_ERR_OUT_OF_MEMORY;
    }
    free(s->arena);
  }
  s->arena = arena;
  s->arena_bytes = total;
  for (int v = 0; v < n; v++) {
    wh__role role = pg->values[v].role;
    if (role == WH_ROLE_INPUT) s->ptr[v] = NULL; /* feeds are per batch size */
    else if (!wh__role_persistent(role) && s->alias[v] < 0) s->ptr[v] = (char *)arena + off[v];
    else if (s->alias[v] >= 0) s->ptr[v] = NULL; /* resolved at run time: the root may be a feed */
    s->stamp[v] = wh__role_persistent(role) ? 0 : -1;
  }
  free(size), free(off), free(first), free(last);
  return WH_OK;
}

wh_status wh__session_fail(wh_session *s, wh_status st, const char *fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  wh__ctx_set_error(s->ctx, "%s", buf);
  return st;
}

void wh_session_destroy(wh_session *s) {
  if (!s) return;
  /* first: a bucket still reducing in place writes into the gradient buffers freed below */
  wh_fusion_destroy(s->fusion);
  s->fusion = NULL;
  wh__pipe_destroy(s); /* its sends first; the session's own arena and table stay with the session */
  wh__zero_destroy(s);
  wh__tp_destroy(s);
  free(s->det_buf);
  wh__program_free(&s->prog);
  if (s->froze && s->g->frozen > 0) s->g->frozen--;
  if (s->dreq)
    for (int v = 0; v < s->n; v++)
      if (s->dreq[v]) wh_request_wait(s->dreq[v]); /* bounded by the comm's deadline */
  free(s->dreq);
  if (s->own)
    for (int v = 0; v < s->n; v++) {
      if (!s->dev) free(s->own[v]);
      else wh__cuda_free(s->dev, s->own[v]);
    }
  free(s->own);
  if (s->host_param)
    for (int v = 0; v < s->n; v++) free(s->host_param[v]);
  free(s->host_param);
  free(s->host_feed);
  free(s->ptr);
  free(s->bytes);
  free(s->alias);
  free(s->stamp);
  if (s->dev) wh__cuda_free(s->dev, s->arena);
  else free(s->arena);
  free(s->ex.scratch);
  if (s->acc)
    for (int v = 0; v < s->n; v++) {
      if (!s->dev) free(s->acc[v]);
      else wh__cuda_free(s->dev, s->acc[v]);
    }
  free(s->acc);
  free(s->global_feed);
  free(s->row_bytes);
  free(s->grad_of_param);
  if (s->dev) wh__cuda_free(s->dev, s->dloss);
  wh__cuda_close(s->dev);
  free(s);
}

int wh_cuda_device_count(void) { return wh__cuda_device_count(); }

/* Open the session's CUDA device: the index asked for, else the communicator's local rank. */
static wh_status open_device(wh_session *s, const wh_session_options *o) {
  if (o->device == WH_DEVICE_CPU) return WH_OK;
  if (o->device != WH_DEVICE_CUDA) {
    wh__ctx_set_error(s->ctx, "wh_session_create: unknown device kind %d", (int)o->device);
    return WH_ERR_INVALID_ARGUMENT;
  }
  if ((unsigned)o->precision > WH_PRECISION_BF16) {
    wh__ctx_set_error(s->ctx, "wh_session_create: unknown precision %d", (int)o->precision);
    return WH_ERR_INVALID_ARGUMENT;
  }
  int count = wh__cuda_device_count(), idx = o->device_index;
  if (idx < 0) idx = count > 0 ? (o->comm ? wh_comm_local_rank(o->comm) : 0) % count : 0;
  char err[512];
  s->dev_index = idx;
  s->precision = (int)o->precision;
  wh_status st = wh__cuda_open(idx, (int)o->precision, &s->dev, err, sizeof err);
  if (st != WH_OK) wh__ctx_set_error(s->ctx, "wh_session_create: %s", err);
  return st;
}

/* Move parameters, optimizer state and constants (initialised on the host) to the device. */
static wh_status to_device(wh_session *s) {
  for (int v = 0; v < s->n; v++) {
    const wh__value *val = &s->prog.values[v];
    if (val->role != WH_ROLE_PARAM && val->role != WH_ROLE_STATE && val->role != WH_ROLE_CONST) continue;
    size_t bytes = (size_t)wh__numel(&val->shape, 1) * wh__dtype_size(val->dtype);
    const void *host = s->ptr[v];
    void *d = NULL;
    if (wh__cuda_alloc(s->dev, bytes, &d) != WH_OK) {
      wh__ctx_set_error(s->ctx, "wh_session_create: '%s' on the device: %s", val->name ? val->name : "",
                        wh__cuda_error(s->dev));
      return WH_ERR_OUT_OF_MEMORY;
    }
    wh_status st = host ? wh__cuda_copy(s->dev, d, host, bytes, WH__H2D) : wh__cuda_zero(s->dev, d, bytes);
    if (val->role != WH_ROLE_CONST) free(s->own[v]);
    s->own[v] = d;
    s->ptr[v] = d;
    if (st != WH_OK) {
      wh__ctx_set_error(s->ctx, "wh_session_create: '%s' to the device: %s", val->name ? val->name : "",
                        wh__cuda_error(s->dev));
      return st;
    }
  }
  return WH_OK;
}

wh_status wh_session_create(wh_ctx *ctx, wh_graph *g, const wh_session_options *opts, wh_session **out) {
  if (!ctx || !g || !out) return WH_ERR_INVALID_ARGUMENT;
  *out = NULL;
  if (g->ctx != ctx) {
    wh__ctx_set_error(ctx, "wh_session_create: the graph belongs to another context");
    return WH_ERR_INVALID_ARGUMENT;
  }
  if (g->status != WH_OK) {
    wh__ctx_set_error(ctx, "wh_session_create: graph poisoned by an earlier error: %s", g->err);
    return WH_ERR_POISONED;
  }
  wh_session_options o = WH_SESSION_OPTIONS_INIT;
  if (wh__options_in(ctx, "wh_session_create", &o, opts, sizeof o) != WH_OK) return WH_ERR_INVALID_ARGUMENT;
  if (!o.plan != !o.comm) {
    wh__ctx_set_error(ctx, "wh_session_create: a distributed session needs both a plan and a communicator");
    return WH_ERR_INVALID_ARGUMENT;
  }
  int64_t share = 0, offset = 0;
  int pipe_stage = -1, pipe_rep = 0, tp = 1;
  if (o.plan) {
    const wh_plan *pl = o.plan;
    if (pl->n_devices != wh_comm_size(o.comm)) {
      wh__ctx_set_error(ctx, "wh_session_create: the plan is for %d devices but the communicator has %d ranks",
                        pl->n_devices, wh_comm_size(o.comm));
      return WH_ERR_INVALID_ARGUMENT;
    }
    int me = wh_comm_rank(o.comm), found = 0;
    int pipelined = pl->n_stages > 1;
    tp = pl->st[0].tp;
    for (int k = 0; k < pl->n_stages; k++) {
      int same = pl->st[k].ndev == pl->st[0].ndev;
      for (int r = 0; same && pipelined && r < pl->st[k].ndev; r++)
        same = pl->st[k].share[r] == pl->st[0].share[r] && pl->st[k].share[r] > 0;
      if ((pipelined && pl->st[k].tp != 1) || (pipelined && !same)) {
        wh__ctx_set_error(ctx, "wh_session_create: this build executes data-parallel plans with or without operator "
                               "sharding, and pipelines whose stages have the same replicas with the same positive "
                               "shares and no operator sharding; stage %d has %d device(s) and tp %d",
                          k, pl->st[k].ndev, pl->st[k].tp);
        return WH_ERR_UNSUPPORTED;
      }
    }
    if (tp > 1 && (pl->zero1 || o.deterministic || o.device != WH_DEVICE_CPU)) {
      wh__ctx_set_error(ctx, "wh_session_create: operator sharding (tp %d) runs on the CPU backend, without ZeRO-1 and "
                             "without the deterministic reduction, in this build", tp);
      return WH_ERR_UNSUPPORTED;
    }
    if ((pipelined && (pl->zero1 || o.deterministic)) || (pl->zero1 && o.deterministic)) {
      wh__ctx_set_error(ctx, "wh_session_create: %s", pipelined ? "pipeline plans run without ZeRO-1 and without the "
                                                                 "deterministic reduction in this build"
                                                               : "ZeRO-1 and the deterministic reduction do not combine");
      return WH_ERR_UNSUPPORTED;
    }
    if (pipelined) {
      if (o.device != WH_DEVICE_CPU) {
        wh__ctx_set_error(ctx, "wh_session_create: pipeline plans run on the CPU backend in this build");
        return WH_ERR_UNSUPPORTED;
      }
      for (int k = 0; k < pl->n_stages; k++)
        for (int r = 0; r < pl->st[k].ndev; r++)
          if (pl->st[k].dev[r] == me) pipe_stage = k, pipe_rep = r;
      if (pipe_stage < 0) {
        wh__ctx_set_error(ctx, "wh_session_create: rank %d has no stage in the plan", me);
        return WH_ERR_INVALID_ARGUMENT;
      }
      share = pl->st[pipe_stage].share[pipe_rep];
      for (int r = 0; r < pipe_rep; r++) offset += pl->st[pipe_stage].share[r];
      o.batch = share;
      o.inplace = 0; /* values cross ranks while later nodes run: no storage taken over in place */
    }
    /* replica r holds devices [r * tp, (r + 1) * tp) of the stage and share[r] samples */
    for (int i = 0; !pipelined && i < pl->st[0].ndev; i++) {
      if (pl->st[0].dev[i] == me) {
        share = pl->st[0].share[i / tp];
        found = 1;
        break;
      }
      if (i % tp == tp - 1) offset += pl->st[0].share[i / tp];
    }
    if (!found && !pipelined) {
      wh__ctx_set_error(ctx, "wh_session_create: rank %d has no place in the plan", me);
      return WH_ERR_INVALID_ARGUMENT;
    }
    if (!pipelined) o.batch = share > 0 ? share : 1; /* a replica without samples still joins the all-reduce */
  }
  if (o.batch < 1) {
    wh__ctx_set_error(ctx, "wh_session_create: batch must be >= 1, got %lld", (long long)o.batch);
    return WH_ERR_INVALID_ARGUMENT;
  }
  wh_session *s = calloc(1, sizeof *s);
  if (!s) return WH_ERR_OUT_OF_MEMORY;
  s->ctx = ctx;
  s->g = g;
  s->batch = o.batch;
  s->recompute = o.recompute != 0;
  s->inplace = o.inplace != 0;
  if (wh__program_build(g, s->recompute, &s->prog) != WH_OK) {
    free(s);
    wh__ctx_set_error(ctx, "wh_session_create: out of memory building the program");
    return WH_ERR_OUT_OF_MEMORY;
  }
  if (tp > 1) {
    wh_status ts = wh__tp_create(s, o.plan, o.comm);
    if (ts != WH_OK) {
      if (ts == WH_ERR_OUT_OF_MEMORY) wh__ctx_set_error(ctx, "wh_session_create: out of memory for operator sharding");
      wh__tp_destroy(s);
      wh__program_free(&s->prog);
      free(s);
      return ts;
    }
    s->ex.tp = wh__tp_group(s);
  }
  s->n = s->prog.n_values;
  size_t n = (size_t)s->n + 1;
  s->ptr = calloc(n, sizeof(void *));
  s->own = calloc(n, sizeof(void *));
  s->bytes = calloc(n, sizeof(int64_t));
  s->alias = calloc(n, sizeof(int32_t));
  s->stamp = calloc(n, sizeof(int64_t));
  s->ex.pool = ctx->pool;
  s->ex.err = s->kerr;
  s->ex.err_cap = sizeof s->kerr;
  s->host_feed = calloc(n, sizeof(void *));
  s->host_param = calloc(n, sizeof(void *));
  if (!s->ptr || !s->own || !s->bytes || !s->alias || !s->stamp || !s->host_feed || !s->host_param) {
    wh_session_destroy(s);
    wh__ctx_set_error(ctx, "wh_session_create: out of memory");
    return WH_ERR_OUT_OF_MEMORY;
  }
  for (int v = 0; v < s->n; v++) {
    const wh__value *val = &s->prog.values[v];
    size_t bytes = (size_t)wh__numel(&val->shape, 1) * wh__dtype_size(val->dtype);
    if (val->role == WH_ROLE_CONST) {
      s->ptr[v] = val->data;
    } else if (val->role == WH_ROLE_PARAM || val->role == WH_ROLE_STATE) {
      s->own[v] = calloc(bytes ? bytes : 1, 1);
      if (!s->own[v]) {
        wh_session_destroy(s);
        wh__ctx_set_error(ctx, "wh_session_create: out of memory for %s '%s' (%zu bytes)",
                          val->role == WH_ROLE_PARAM ? "parameter" : "state", val->name ? val->name : "", bytes);
        return WH_ERR_OUT_OF_MEMORY;
      }
      if (val->role == WH_ROLE_PARAM) {
        /* the one-device values (stored, or initialised whole); a split parameter keeps this rank's shard */
        const wh__value *whole = &g->values[v];
        int64_t cnt = wh__numel(&whole->shape, 1);
        float *src = whole->data ? whole->data
                     : wh__tp_layout(s, v).kind == WH_LAY_S ? malloc(sizeof(float) * (size_t)cnt + 1)
                                                            : s->own[v];
        if (!src) {
          wh_session_destroy(s);
          wh__ctx_set_error(ctx, "wh_session_create: out of memory initialising '%s'", wh_value_name(g, v));
          return WH_ERR_OUT_OF_MEMORY;
        }
        if (!whole->data) init_param(whole, src, cnt);
        if (src != s->own[v]) wh__tp_cut(s, v, src, s->own[v]);
        if (src != whole->data && src != s->own[v]) free(src);
      }
      s->ptr[v] = s->own[v];
    }
  }
  wh_status st = open_device(s, &o);
  if (st == WH_OK && s->dev) {
    s->ex.dev = s->dev;
    st = to_device(s);
  }
  if (st != WH_OK) {
    wh_session_destroy(s);
    return st;
  }
  st = plan(s);
  if (st != WH_OK) {
    if (s->dev)
      wh__ctx_set_error(ctx, "wh_session_create: device memory for intermediates (%lld-byte arena): %s",
                        (long long)s->arena_bytes, wh__cuda_error(s->dev));
    else
      wh__ctx_set_error(ctx, "wh_session_create: out of memory planning intermediates");
    wh_session_destroy(s);
    return st;
  }
  if (o.plan && wh_comm_backend_of(o.comm) == WH_COMM_NCCL &&
      (!s->dev || wh__cuda_alloc(s->dev, sizeof(double), (void **)&s->dloss) != WH_OK)) {
    wh__ctx_set_error(ctx, s->dev ? "wh_session_create: device memory for the loss all-reduce: %s"
                                  : "wh_session_create: an NCCL communicator reduces device memory: run the session on "
                                    "CUDA (so.device = WH_DEVICE_CUDA) or use an MPI communicator%s",
                      s->dev ? wh__cuda_error(s->dev) : "");
    wh_status e = s->dev ? WH_ERR_OUT_OF_MEMORY : WH_ERR_INVALID_ARGUMENT;
    wh_session_destroy(s);
    return e;
  }
  if (o.plan) {
    s->dist = 1;
    s->comm = o.comm;
    s->dpc = s->tpx ? wh__tp_dp(s) : o.comm;
    s->m = o.plan->micro_batches;
    s->global_batch = o.plan->global_batch;
    s->mb = s->global_batch / s->m;
    s->share = share;
    s->offset = offset;
    s->global_feed = calloc(n, sizeof(void *));
    s->row_bytes = calloc(n, sizeof(int64_t));
    s->grad_of_param = malloc(n * sizeof(int32_t));
    s->acc = calloc(n, sizeof(void *));
    if (!s->global_feed || !s->row_bytes || !s->grad_of_param || !s->acc) {
      wh_session_destroy(s);
      return WH_ERR_OUT_OF_MEMORY;
    }
    for (int v = 0; v < s->n; v++) {
      s->grad_of_param[v] = -1;
      const wh__value *val = &s->prog.values[v];
      if (val->role != WH_ROLE_INPUT || v >= g->n_values) continue;
      int sym = 0;
      for (int d = 1; d < val->shape.ndim; d++) sym |= val->shape.d[d] < 0;
      if (sym) {
        wh__ctx_set_error(ctx, "wh_session_create: input '%s' has its batch dimension after the first: a distributed "
                               "session slices inputs by leading rows",
                          wh_value_name(g, v));
        wh_session_destroy(s);
        return WH_ERR_UNSUPPORTED;
      }
      if (val->shape.ndim == 0 || val->shape.d[0] >= 0) continue; /* no batch dimension: fed whole everywhere */
      s->row_bytes[v] = wh__numel(&val->shape, 1) * (int64_t)wh__dtype_size(val->dtype);
    }
    /* every gradient a node produces is accumulated apart from the value itself: backward may
     * still read that value (a gradient passed on unchanged), and the all-reduce runs on it while
     * backward goes on; a gradient that is a constant (the loss seed) needs neither */
    for (int v = 0; v < g->n_grad; v++)
      if (g->values[v].role == WH_ROLE_PARAM && g->grad[v] >= 0 && !wh__role_persistent(g->values[g->grad[v]].role) &&
          s->grad_of_param[g->grad[v]] < 0) {
        s->grad_of_param[g->grad[v]] = v;
        if (s->dev ? wh__cuda_alloc(s->dev, (size_t)s->bytes[g->grad[v]] + 1, &s->acc[g->grad[v]]) != WH_OK
                   : !(s->acc[g->grad[v]] = malloc((size_t)s->bytes[g->grad[v]] + 1))) {
          wh_session_destroy(s);
          wh__ctx_set_error(ctx, "wh_session_create: out of memory for gradient accumulation");
          return WH_ERR_OUT_OF_MEMORY;
        }
      }
    /* on a device each gradient is all-reduced in place where it accumulates (NCCL reads device
     * memory; the MPI backend stages it through the host); on the host, buckets pack them */
    if (pipe_stage >= 0) {
      s->pipe_stage = pipe_stage;
      if ((st = wh__pipe_create(s, o.plan, pipe_stage, pipe_rep)) != WH_OK) {
        if (st == WH_ERR_OUT_OF_MEMORY && !strstr(wh_last_error(ctx), "pipeline"))
          wh__ctx_set_error(ctx, "wh_session_create: out of memory setting up the pipeline stage");
        wh_session_destroy(s);
        return st;
      }
    } else if (o.deterministic) {
      if (s->dev) {
        wh_session_destroy(s);
        wh__ctx_set_error(ctx, "wh_session_create: the deterministic reduction runs on the CPU backend in this build");
        return WH_ERR_UNSUPPORTED;
      }
      int64_t most = 1;
      for (int v = 0; v < s->n; v++)
        if (s->grad_of_param[v] >= 0 && s->bytes[v] > most) most = s->bytes[v];
      s->det = 1;
      if (!(s->det_buf = malloc((size_t)most * (size_t)wh_comm_size(s->dpc)))) {
        wh_session_destroy(s);
        wh__ctx_set_error(ctx, "wh_session_create: out of memory for the deterministic reduction");
        return WH_ERR_OUT_OF_MEMORY;
      }
    } else if (o.plan->zero1) {
      if (s->dev) {
        wh_session_destroy(s);
        wh__ctx_set_error(ctx, "wh_session_create: ZeRO-1 runs on the CPU backend in this build");
        return WH_ERR_UNSUPPORTED;
      }
      if ((st = wh__zero_create(s)) != WH_OK) {
        if (st == WH_ERR_OUT_OF_MEMORY) wh__ctx_set_error(ctx, "wh_session_create: out of memory for ZeRO-1 shards");
        wh_session_destroy(s);
        return st;
      }
    } else if (s->dev ? !(s->dreq = calloc(n, sizeof(wh_request *)))
                      : (st = wh_fusion_create(s->dpc, DP_BUCKET_BYTES, WH_F32, WH_REDUCE_SUM, &s->fusion)) != WH_OK) {
      wh_session_destroy(s);
      return s->dev ? WH_ERR_OUT_OF_MEMORY : st;
    }
  }
  g->frozen++;
  s->froze = 1;
  wh__log(ctx, WH_LOG_INFO,
          "session: batch %lld, arena %lld bytes for %lld intermediates of %lld bytes (%lld in place, %d recomputed)",
          (long long)s->batch, (long long)s->arena_bytes, (long long)s->n_inter, (long long)s->inter_bytes,
          (long long)s->n_inplace, s->prog.n_recomputed);
  *out = s;
  return WH_OK;
}

wh_status wh_session_set_batch(wh_session *s, int64_t batch) {
  if (!s) return WH_ERR_INVALID_ARGUMENT;
  if (s->dist) return wh__session_fail(s, WH_ERR_STATE, "wh_session_set_batch: the plan fixes a distributed session's batch");
  if (batch < 1) return wh__session_fail(s, WH_ERR_INVALID_ARGUMENT, "wh_session_set_batch: batch must be >= 1, got %lld", (long long)batch);
  if (batch == s->batch) return WH_OK;
  int64_t old = s->batch;
  s->batch = batch;
  wh_status st = plan(s);
  if (st != WH_OK) {
    s->batch = old;
    plan(s);
    return wh__session_fail(s, st, "wh_session_set_batch: out of memory planning batch %lld", (long long)batch);
  }
  return WH_OK;
}

wh_status wh_session_feed(wh_session *s, wh_value v, const void *data, size_t bytes) {
  if (!s) return WH_ERR_INVALID_ARGUMENT;
  if (!wh__valid_value(s->g, v) || s->g->values[v].role != WH_ROLE_INPUT)
    return wh__session_fail(s, WH_ERR_INVALID_ARGUMENT, "wh_session_feed: value %d is not an input", (int)v);
  if (!data) return wh__session_fail(s, WH_ERR_INVALID_ARGUMENT, "wh_session_feed: input '%s': data is NULL", wh_value_name(s->g, v));
  if (s->dist && s->row_bytes[v] > 0) {
    if ((int64_t)bytes != s->row_bytes[v] * s->global_batch)
      return wh__session_fail(s, WH_ERR_SHAPE, "wh_session_feed: input '%s' of a distributed session takes the global batch of %lld: "
                                   "%lld bytes, got %zu",
                  wh_value_name(s->g, v), (long long)s->global_batch, (long long)(s->row_bytes[v] * s->global_batch),
                  bytes);
    s->global_feed[v] = data;
    s->ptr[v] = s->dev ? s->own[v] : (void *)data; /* marks it fed; each micro-batch points at its rows */
    return WH_OK;
  }
  if ((int64_t)bytes != s->bytes[v]) {
    char b[160];
    return wh__session_fail(s, WH_ERR_SHAPE, "wh_session_feed: input '%s' %s%s at batch %lld is %lld bytes, got %zu",
                wh_value_name(s->g, v), wh__dtype_name(s->g->values[v].dtype),
                wh__shape_str(&s->g->values[v].shape, b, sizeof b), (long long)s->batch, (long long)s->bytes[v], bytes);
  }
  if (s->dev) {
    if (!s->own[v]) return WH_OK; /* nothing reads it */
    s->host_feed[v] = data;        /* copied in at each run */
    s->ptr[v] = s->own[v];
    return WH_OK;
  }
  s->ptr[v] = (void *)data;
  return WH_OK;
}

static int runs_in(const wh__node *n, wh_run_mode mode) {
  switch (mode) {
    case WH_RUN_EVAL: return n->phase == WH_PHASE_FORWARD;
    case WH_RUN_GRAD: return n->phase != WH_PHASE_UPDATE;
    default: return 1;
  }
}

static void tensor_of(const wh_session *s, int32_t v, wh__tensor *t) {
  const wh__value *val = &s->prog.values[v];
  t->data = s->ptr[v];
  t->dtype = val->dtype;
  t->ndim = val->shape.ndim;
  t->numel = 1;
  for (int i = 0; i < val->shape.ndim; i++) {
    t->d[i] = wh__dim(val->shape.d[i], s->batch);
    t->numel *= t->d[i];
  }
}

/* Run node i of the program: gather tensors, call the kernel, report a failure by node. */
wh_status wh__session_run_node(wh_session *s, int i) {
  const wh__program *pg = &s->prog;
  const wh__node *n = &pg->nodes[i];
  wh__tensor in[64], *inp = in, out = {0};
  wh__tensor *heap = NULL;
  if (n->n_in > 64) {
    heap = malloc(sizeof(wh__tensor) * (size_t)n->n_in);
    if (!heap) return wh__session_fail(s, WH_ERR_OUT_OF_MEMORY, "wh_session_run: out of memory");
    inp = heap;
  }
  for (int k = 0; k < n->n_in; k++) tensor_of(s, n->in[k], &inp[k]);
  if (n->out >= 0) {
    if (s->alias[n->out] >= 0) s->ptr[n->out] = s->ptr[wh__session_root(s, n->out)];
    tensor_of(s, n->out, &out);
  }
  s->kerr[0] = 0;
  wh__kernel_fn k = s->dev ? wh__cuda_kernels[n->op] : wh__cpu_kernels[n->op];
  wh_status st = WH_ERR_UNSUPPORTED;
  double t0 = s->prof ? wh__now() : 0;
  if (k) st = k(&s->ex, n, inp, n->out >= 0 ? &out : NULL);
  else snprintf(s->kerr, sizeof s->kerr, "no kernel for this op on %s", s->dev ? "CUDA" : "the CPU");
  if (s->prof && st == WH_OK) {
    if (s->dev && (st = wh__cuda_sync(s->dev)) != WH_OK) snprintf(s->kerr, sizeof s->kerr, "%s", wh__cuda_error(s->dev));
    s->prof_s[n->op] += wh__now() - t0;
    s->prof_calls[n->op]++;
  }
  free(heap);
  if (st != WH_OK) {
    char b[160];
    return wh__session_fail(s, st, "wh_session_run: node %d (%s%s%s, output %s) failed: %s%s%s", i, wh__ops[n->op]->name,
                n->out >= 0 && pg->values[n->out].name ? " " : "",
                n->out >= 0 && pg->values[n->out].name ? pg->values[n->out].name : "",
                n->out >= 0 ? wh__shape_str(&pg->values[n->out].shape, b, sizeof b) : "-", wh_status_str(st),
                s->kerr[0] ? ": " : "", s->kerr);
  }
  if (n->out >= 0) s->stamp[n->out] = s->runs;
  return WH_OK;
}

static void axpy_scale(float *acc, const float *g, int64_t n, float w, int first) {
  if (first)
    for (int64_t i = 0; i < n; i++) acc[i] = w * g[i];
  else
    for (int64_t i = 0; i < n; i++) acc[i] += w * g[i];
}

/* Data parallel: this replica's rows of every micro-batch, forward and backward; each parameter's
 * gradient, weighted by share / global batch (the loss is a per-sample mean), is accumulated and,
 * in the last micro-batch, handed to gradient fusion the moment backward produces it, so its
 * all-reduce overlaps the rest of backward. Then the global loss, then the update. */
static wh_status dev_fail(wh_session *s, wh_status st, const char *what) {
  return wh__session_fail(s, st, "wh_session_run: %s: %s", what, wh__cuda_error(s->dev));
}

/* Device data parallel: start the all-reduce of a finished gradient accumulation (the comm's
 * operations do not wait for the session's stream, so the stream is drained first). */
static wh_status dev_allreduce(wh_session *s, int32_t v, int64_t cnt) {
  wh_status st = wh__cuda_sync(s->dev);
  if (st != WH_OK) return dev_fail(s, st, "before a gradient all-reduce");
  st = wh_comm_iallreduce(s->dpc, NULL, s->acc[v], (size_t)cnt, WH_F32, WH_REDUCE_SUM, &s->dreq[v]);
  if (st != WH_OK) return wh__session_fail(s, st, "wh_session_run: gradient all-reduce: %s", wh_last_error(s->ctx));
  return WH_OK;
}

/* The deterministic reduction: each gradient's weighted partial sums of every rank, gathered, then
 * added in rank order into the accumulation buffer (which the caller copies to the gradient). */
static wh_status det_reduce(wh_session *s) {
  int R = wh_comm_size(s->dpc);
  for (int v = 0; v < s->n; v++) {
    if (s->grad_of_param[v] < 0) continue;
    size_t cnt = (size_t)s->bytes[v] / sizeof(float);
    wh_status st = wh_comm_allgather(s->dpc, s->acc[v], s->det_buf, cnt, NULL, WH_F32);
    if (st != WH_OK) return wh__session_fail(s, st, "wh_session_run: gradient gather: %s", wh_last_error(s->ctx));
    float *acc = s->acc[v];
    memcpy(acc, s->det_buf, cnt * sizeof(float));
    for (int r = 1; r < R; r++)
      for (size_t i = 0; i < cnt; i++) acc[i] += s->det_buf[(size_t)r * cnt + i];
  }
  return WH_OK;
}

static wh_status run_dist(wh_session *s, wh_run_mode mode) {
  const wh__program *pg = &s->prog;
  wh_graph *g = s->g;
  float w = (float)((double)s->share / (double)s->global_batch);
  double loss_acc = 0;
  int active = s->share > 0;
  for (int k = 0; k < s->m; k++) {
    int last = k == s->m - 1;
    s->ex.row0 = (int64_t)k * s->mb + s->offset;
    for (int v = 0; v < g->n_values && active; v++) {
      if (!s->global_feed[v]) continue;
      const char *rows = (const char *)s->global_feed[v] + s->ex.row0 * s->row_bytes[v];
      if (!s->dev) {
        s->ptr[v] = (void *)rows;
        continue;
      }
      wh_status st = wh__cuda_copy(s->dev, s->own[v], rows, (size_t)(s->share * s->row_bytes[v]), WH__H2D);
      if (st != WH_OK) return dev_fail(s, st, "feeding the device");
    }
    for (int i = 0; i < pg->n_nodes; i++) {
      const wh__node *n = &pg->nodes[i];
      if (n->phase == WH_PHASE_UPDATE || (mode == WH_RUN_EVAL && n->phase != WH_PHASE_FORWARD)) continue;
      if (active) {
        wh_status st = wh__session_run_node(s, i);
        if (st != WH_OK) return st;
      }
      int32_t out = n->out;
      if (mode == WH_RUN_EVAL || out < 0 || s->grad_of_param[out] < 0) continue;
      int64_t cnt = s->bytes[out] / (int64_t)sizeof(float);
      float *acc = s->acc[out];
      if (active) {
        if (!s->ptr[out]) s->ptr[out] = s->ptr[wh__session_root(s, out)];
        if (!s->dev) axpy_scale(acc, (const float *)s->ptr[out], cnt, w, k == 0);
        else if (wh__cuda_axpy(s->dev, acc, (const float *)s->ptr[out], cnt, w, k == 0) != WH_OK)
          return dev_fail(s, WH_ERR_INTERNAL, "gradient accumulation");
      } else if (k == 0) {
        /* a replica without samples adds nothing */
        if (!s->dev) memset(acc, 0, (size_t)s->bytes[out]);
        else if (wh__cuda_zero(s->dev, acc, (size_t)s->bytes[out]) != WH_OK)
          return dev_fail(s, WH_ERR_INTERNAL, "gradient accumulation");
      }
      if (s->dev) {
        if (last && cnt > 0) {
          wh_status st = dev_allreduce(s, out, cnt);
          if (st != WH_OK) return st;
        }
        continue;
      }
      if (s->zero) {
        wh_status st = last ? wh__zero_start(s, out) : WH_OK;
        if (st != WH_OK) return st;
        continue;
      }
      if (s->det) continue; /* reduced after backward, in rank order */
      wh_status st = last ? wh_fusion_add(s->fusion, acc, (size_t)cnt) : wh_fusion_poll(s->fusion);
      if (st != WH_OK) return wh__session_fail(s, st, "wh_session_run: gradient all-reduce: %s", wh_last_error(s->ctx));
    }
    if (active) {
      float l;
      if (!s->dev) memcpy(&l, s->ptr[g->loss], sizeof l);
      else if (wh__cuda_copy(s->dev, &l, s->ptr[g->loss], sizeof l, WH__D2H) != WH_OK)
        return dev_fail(s, WH_ERR_INTERNAL, "reading the loss");
      loss_acc += (double)w * (double)l;
    }
  }
  if (mode != WH_RUN_EVAL) {
    wh_status st = WH_OK;
    if (s->det) {
      if ((st = det_reduce(s)) != WH_OK) return st;
    } else if (s->zero) {
      if ((st = wh__zero_wait(s)) != WH_OK) return st;
    } else if (!s->dev) {
      st = wh_fusion_wait(s->fusion);
    } else {
      for (int v = 0; v < s->n; v++)
        if (s->dreq[v]) {
          wh_status sv = wh_request_wait(s->dreq[v]);
          s->dreq[v] = NULL;
          if (st == WH_OK) st = sv;
        }
    }
    if (st != WH_OK) return wh__session_fail(s, st, "wh_session_run: gradient all-reduce: %s", wh_last_error(s->ctx));
    for (int v = 0; v < s->n && !s->zero; v++) /* ZeRO-1: only shards of the sums exist */
      if (s->grad_of_param[v] >= 0) {
        if (!s->ptr[v]) s->ptr[v] = s->ptr[wh__session_root(s, v)];
        if (!s->dev) memcpy(s->ptr[v], s->acc[v], (size_t)s->bytes[v]);
        else if ((st = wh__cuda_copy(s->dev, s->ptr[v], s->acc[v], (size_t)s->bytes[v], WH__D2D)) != WH_OK)
          return dev_fail(s, st, "gradient copy");
        s->stamp[v] = s->runs;
      }
  }
  /* the global mean loss, on every rank */
  double gl = loss_acc;
  wh_status st;
  if (s->det) { /* every rank's part, summed in rank order */
    int R = wh_comm_size(s->dpc);
    double *parts = malloc(sizeof(double) * (size_t)R);
    if (!parts) return wh__session_fail(s, WH_ERR_OUT_OF_MEMORY, "wh_session_run: out of memory");
    st = wh_comm_allgather(s->dpc, &loss_acc, parts, 1, NULL, WH_F64);
    gl = 0;
    for (int r = 0; r < R; r++) gl += parts[r];
    free(parts);
    if (st != WH_OK) return wh__session_fail(s, st, "wh_session_run: loss gather: %s", wh_last_error(s->ctx));
  } else if (s->dloss) { /* NCCL: through device memory */
    if ((st = wh__cuda_copy(s->dev, s->dloss, &gl, sizeof gl, WH__H2D)) != WH_OK ||
        (st = wh__cuda_sync(s->dev)) != WH_OK)
      return dev_fail(s, st, "the loss all-reduce");
    if ((st = wh_comm_allreduce(s->dpc, NULL, s->dloss, 1, WH_F64, WH_REDUCE_SUM)) != WH_OK)
      return wh__session_fail(s, st, "wh_session_run: loss all-reduce: %s", wh_last_error(s->ctx));
    if ((st = wh__cuda_copy(s->dev, &gl, s->dloss, sizeof gl, WH__D2H)) != WH_OK)
      return dev_fail(s, st, "the loss all-reduce");
  } else if ((st = wh_comm_allreduce(s->dpc, NULL, &gl, 1, WH_F64, WH_REDUCE_SUM)) != WH_OK) {
    return wh__session_fail(s, st, "wh_session_run: loss all-reduce: %s", wh_last_error(s->ctx));
  }
  float glf = (float)gl;
  if (!s->ptr[g->loss]) s->ptr[g->loss] = s->ptr[wh__session_root(s, g->loss)];
  if (!s->dev) memcpy(s->ptr[g->loss], &glf, sizeof glf);
  else if ((st = wh__cuda_copy(s->dev, s->ptr[g->loss], &glf, sizeof glf, WH__H2D)) != WH_OK)
    return dev_fail(s, st, "writing the loss");
  s->stamp[g->loss] = s->runs;
  if (mode == WH_RUN_TRAIN && s->zero) return wh__zero_update(s);
  if (mode == WH_RUN_TRAIN)
    for (int i = 0; i < pg->n_nodes; i++) {
      if (pg->nodes[i].phase != WH_PHASE_UPDATE) continue;
      st = wh__session_run_node(s, i);
      if (st != WH_OK) return st;
    }
  return WH_OK;
}

wh_status wh_session_run(wh_session *s, wh_run_mode mode) {
  if (!s) return WH_ERR_INVALID_ARGUMENT;
  wh_graph *g = s->g;
  if ((unsigned)mode > WH_RUN_EVAL) return wh__session_fail(s, WH_ERR_INVALID_ARGUMENT, "wh_session_run: unknown mode %d", (int)mode);
  if (mode == WH_RUN_TRAIN && !g->has_optimizer)
    return wh__session_fail(s, WH_ERR_STATE, "wh_session_run: training needs an optimizer (wh_optimizer_sgd/adamw); use WH_RUN_GRAD for gradients only");
  if (mode != WH_RUN_EVAL && g->loss < 0)
    return wh__session_fail(s, WH_ERR_STATE, "wh_session_run: the graph has no gradients (wh_backward); use WH_RUN_EVAL");
  if (s->dist && g->loss < 0)
    return wh__session_fail(s, WH_ERR_STATE, "wh_session_run: a distributed session needs a loss (wh_backward)");
  const wh__program *pg = &s->prog;
  /* every input the run reads must be fed */
  for (int i = 0; i < pg->n_nodes; i++) {
    const wh__node *n = &pg->nodes[i];
    if (!runs_in(n, mode)) continue;
    for (int k = 0; k < n->n_in; k++) {
      int32_t r = wh__session_root(s, n->in[k]);
      if (pg->values[r].role == WH_ROLE_INPUT && !s->ptr[r])
        return wh__session_fail(s, WH_ERR_STATE, "wh_session_run: input '%s' is not fed (node %d, %s, input %d)",
                    wh_value_name(g, r), i, wh__ops[n->op]->name, k);
    }
  }
  s->runs++;
  s->ex.train = mode != WH_RUN_EVAL;
  s->ex.step = s->steps + 1;
  s->ex.batch = s->batch;
  if (s->pipe) {
    wh_status st = wh__pipe_run(s, mode);
    if (st != WH_OK) return st;
  } else if (s->dist) {
    wh_status st = run_dist(s, mode);
    if (st != WH_OK) return st;
  } else {
    for (int v = 0; s->dev && v < g->n_values; v++) {
      if (!s->host_feed[v]) continue;
      wh_status st = wh__cuda_copy(s->dev, s->own[v], s->host_feed[v], (size_t)s->bytes[v], WH__H2D);
      if (st != WH_OK) return dev_fail(s, st, "feeding the device");
    }
    for (int i = 0; i < pg->n_nodes; i++) {
      if (!runs_in(&pg->nodes[i], mode)) continue;
      wh_status st = wh__session_run_node(s, i);
      if (st != WH_OK) return st;
    }
  }
  if (s->dev) { /* kernels run asynchronously: their failures surface here */
    wh_status st = wh__cuda_sync(s->dev);
    if (st != WH_OK) return dev_fail(s, st, "device");
  }
  if (mode == WH_RUN_TRAIN) s->steps++;
  if (s->prof) s->prof_runs++;
  return WH_OK;
}

wh_status wh_session_profile(wh_session *s, int on) {
  if (!s) return WH_ERR_INVALID_ARGUMENT;
  s->prof = on != 0;
  s->prof_runs = 0;
  memset(s->prof_s, 0, sizeof s->prof_s);
  memset(s->prof_calls, 0, sizeof s->prof_calls);
  return WH_OK;
}

wh_status wh_session_profile_report(const wh_session *s, char **out) {
  if (out) *out = NULL;
  if (!s || !out) return WH_ERR_INVALID_ARGUMENT;
  if (!s->prof_runs) {
    wh__ctx_set_error(s->ctx, "wh_session_profile_report: no run was profiled (wh_session_profile(s, 1) first)");
    return WH_ERR_STATE;
  }
  int order[WH_OP_COUNT], n = 0;
  double total = 0;
  for (int i = 0; i < WH_OP_COUNT; i++)
    if (s->prof_calls[i]) order[n++] = i, total += s->prof_s[i];
  for (int i = 1; i < n; i++) /* by time, largest first */
    for (int j = i; j > 0 && s->prof_s[order[j]] > s->prof_s[order[j - 1]]; j--) {
      int t = order[j];
      order[j] = order[j - 1], order[j - 1] = t;
    }
  double r = (double)s->prof_runs;
  wh__sb b = {0};
  wh__sb_printf(&b, "profile: %lld run%s on %s, %.3f ms per run in kernels (each node timed alone)\n",
                (long long)s->prof_runs, s->prof_runs == 1 ? "" : "s", s->dev ? "CUDA" : "the CPU", 1e3 * total / r);
  wh__sb_printf(&b, "  %-22s %8s %10s %7s\n", "op", "calls", "ms", "share");
  for (int k = 0; k < n; k++) {
    int i = order[k];
    wh__sb_printf(&b, "  %-22s %8.1f %10.3f %6.1f%%\n", wh__ops[i]->name, (double)s->prof_calls[i] / r,
                  1e3 * s->prof_s[i] / r, total > 0 ? 100.0 * s->prof_s[i] / total : 0.0);
  }
  if (b.oom) {
    free(b.s);
    wh__ctx_set_error(s->ctx, "wh_session_profile_report: out of memory");
    return WH_ERR_OUT_OF_MEMORY;
  }
  *out = b.s;
  return WH_OK;
}

wh_status wh_session_step(wh_session *s) { return wh_session_run(s, WH_RUN_TRAIN); }

static wh_status copy_out(wh_session *s, const char *who, wh_value v, void *out, size_t bytes) {
  if (!wh__valid_value(s->g, v)) return wh__session_fail(s, WH_ERR_INVALID_ARGUMENT, "%s: %d is not a value of this graph", who, (int)v);
  if (!out) return wh__session_fail(s, WH_ERR_INVALID_ARGUMENT, "%s: out is NULL", who);
  int64_t whole = wh__tp_whole_bytes(s, v);
  if ((int64_t)bytes != whole)
    return wh__session_fail(s, WH_ERR_SHAPE, "%s: value %d '%s' is %lld bytes at batch %lld, buffer is %zu", who, (int)v,
                wh_value_name(s->g, v), (long long)whole, (long long)s->batch, bytes);
  if (!s->ptr[v]) s->ptr[v] = s->ptr[wh__session_root(s, v)];
  if (wh__tp_layout(s, v).kind != WH_LAY_R) return wh__tp_whole(s, who, v, out); /* collective over the replica */
  if (!s->dev) {
    memcpy(out, s->ptr[v], bytes);
    return WH_OK;
  }
  if (s->g->values[v].role == WH_ROLE_INPUT) { /* the caller's own buffer */
    const void *h = s->dist ? s->global_feed[v] : s->host_feed[v];
    if (h) memcpy(out, h, bytes);
    return WH_OK;
  }
  if (!s->ptr[v]) s->ptr[v] = s->ptr[wh__session_root(s, v)];
  wh_status st = wh__cuda_copy(s->dev, out, s->ptr[v], bytes, WH__D2H);
  return st == WH_OK ? WH_OK : wh__session_fail(s, st, "%s: %s", who, wh__cuda_error(s->dev));
}

wh_status wh_session_fetch(wh_session *s, wh_value v, void *out, size_t bytes) {
  if (!s) return WH_ERR_INVALID_ARGUMENT;
  if (!wh__valid_value(s->g, v)) return wh__session_fail(s, WH_ERR_INVALID_ARGUMENT, "wh_session_fetch: %d is not a value of this graph", (int)v);
  const wh__value *val = &s->g->values[v];
  int32_t r = wh__session_root(s, v);
  if (val->role == WH_ROLE_INPUT && !s->ptr[v]) return wh__session_fail(s, WH_ERR_STATE, "wh_session_fetch: input '%s' is not fed", wh_value_name(s->g, v));
  if (!wh__role_persistent(val->role)) {
    if (s->zero && s->grad_of_param[v] >= 0)
      return wh__session_fail(s, WH_ERR_STATE, "wh_session_fetch: '%s' is a gradient of a ZeRO-1 session: each rank keeps only "
                                               "its shard of the sum", wh_value_name(s->g, v));
    if (s->stamp[v] != s->runs || s->runs == 0)
      return wh__session_fail(s, WH_ERR_STATE, "wh_session_fetch: value %d '%s' was not computed by the last run", (int)v, wh_value_name(s->g, v));
    int kept = val->keep;
    for (int32_t a = v; !kept && a >= 0; a = s->alias[a]) kept = s->prog.values[a].keep;
    if (!kept && !wh__role_persistent(s->prog.values[r].role))
      return wh__session_fail(s, WH_ERR_STATE, "wh_session_fetch: value %d '%s' is not kept, so its buffer may be reused: mark it with wh_graph_keep before creating the session",
                  (int)v, wh_value_name(s->g, v));
  }
  return copy_out(s, "wh_session_fetch", v, out, bytes);
}

wh_status wh_session_get_param(wh_session *s, wh_value p, void *out, size_t bytes) {
  if (!s) return WH_ERR_INVALID_ARGUMENT;
  if (!wh__valid_value(s->g, p) || (s->g->values[p].role != WH_ROLE_PARAM && s->g->values[p].role != WH_ROLE_STATE))
    return wh__session_fail(s, WH_ERR_INVALID_ARGUMENT, "wh_session_get_param: value %d is not a parameter", (int)p);
  if (s->pipe) {
    int at = wh__pipe_stage_of(s, p);
    if (at != s->pipe_stage)
      return wh__session_fail(s, WH_ERR_STATE, "wh_session_get_param: '%s' lives on pipeline stage %d; this rank runs stage %d",
                              wh_value_name(s->g, p), at, s->pipe_stage);
  }
  return copy_out(s, "wh_session_get_param", p, out, bytes);
}

wh_status wh_session_set_param(wh_session *s, wh_value p, const void *data, size_t bytes) {
  if (!s) return WH_ERR_INVALID_ARGUMENT;
  if (!wh__valid_value(s->g, p) || (s->g->values[p].role != WH_ROLE_PARAM && s->g->values[p].role != WH_ROLE_STATE))
    return wh__session_fail(s, WH_ERR_INVALID_ARGUMENT, "wh_session_set_param: value %d is not a parameter", (int)p);
  if (!data) return wh__session_fail(s, WH_ERR_INVALID_ARGUMENT, "wh_session_set_param: data is NULL");
  if ((int64_t)bytes != wh__tp_whole_bytes(s, p))
    return wh__session_fail(s, WH_ERR_SHAPE, "wh_session_set_param: '%s' is %lld bytes, got %zu", wh_value_name(s->g, p),
                (long long)wh__tp_whole_bytes(s, p), bytes);
  if (wh__tp_layout(s, p).kind == WH_LAY_S) { /* this rank keeps its shard */
    wh__tp_cut(s, p, data, s->ptr[p]);
    return WH_OK;
  }
  if (!s->dev) {
    memcpy(s->ptr[p], data, bytes);
    return WH_OK;
  }
  wh_status st = wh__cuda_copy(s->dev, s->ptr[p], data, bytes, WH__H2D);
  return st == WH_OK ? WH_OK : wh__session_fail(s, st, "wh_session_set_param: %s", wh__cuda_error(s->dev));
}

int64_t wh_session_steps(const wh_session *s) { return s ? s->steps : 0; }

size_t wh_session_bytes(const wh_session *s, wh_value v) {
  return s && wh__valid_value(s->g, v) ? (size_t)wh__tp_whole_bytes(s, v) : 0;
}


wh_status wh_session_memory(const wh_session *s, wh_memory_stats *out) {
  if (!s || !out || out->struct_size != sizeof *out) return WH_ERR_INVALID_ARGUMENT;
  out->live_peak_bytes = (uint64_t)s->live_peak;
  out->inplace_ops = s->n_inplace;
  out->recomputed_ops = s->prog.n_recomputed;
  out->arena_bytes = (uint64_t)s->arena_bytes;
  out->intermediate_bytes = (uint64_t)s->inter_bytes;
  out->num_intermediates = s->n_inter;
  out->param_bytes = out->state_bytes = 0;
  for (int v = 0; v < s->n; v++) {
    if (s->prog.values[v].role == WH_ROLE_PARAM) out->param_bytes += (uint64_t)s->bytes[v];
    if (s->prog.values[v].role == WH_ROLE_STATE) out->state_bytes += (uint64_t)s->bytes[v];
  }
  return WH_OK;
}

/* Current contents of parameter p for the graph file (a device session's through a host copy). */
static const void *param_data(const void *arg, int32_t p) {
  const wh_session *s = arg;
  if (!wh__valid_value(s->g, p) || s->g->values[p].role != WH_ROLE_PARAM) return NULL;
  if (!s->dev) return s->ptr[p];
  /* a device session's parameter: a host copy, refreshed at each call */
  wh_session *m = (wh_session *)s;
  if (!m->host_param[p] && !(m->host_param[p] = malloc((size_t)s->bytes[p] + 1))) return NULL;
  if (wh__cuda_copy(s->dev, m->host_param[p], s->ptr[p], (size_t)s->bytes[p], WH__D2H) != WH_OK) return NULL;
  return m->host_param[p];
}

wh_status wh_session_save(const wh_session *s, const char *path) {
  if (!s) return WH_ERR_INVALID_ARGUMENT;
  if (s->tpx) {
    wh__ctx_set_error(s->ctx, "wh_session_save: this session splits parameters over the ranks of its replica: gather "
                              "them with wh_session_get_param (collective over those ranks) and save from one rank");
    return WH_ERR_UNSUPPORTED;
  }
  return wh__graph_save_with(s->g, param_data, s, path);
}

/* ---- inspection: this rank's program as it runs */

static void sb_val(wh__sb *b, const wh_session *s, int32_t v, int dot) {
  const wh__value *val = &s->prog.values[v];
  const char *nm = val->name;
  if (nm && !dot) wh__sb_printf(b, "%s", nm);
  else if (!nm) wh__sb_printf(b, "%%%d", v);
  else { /* the quoted name without its quotes */
    wh__sb q = {0};
    wh__sb_quoted(&q, nm);
    if (q.s) {
      q.s[q.n - 1] = 0;
      wh__sb_printf(b, "%s", q.s + 1);
    } else {
      b->oom |= q.oom;
    }
    free(q.s);
  }
  wh__sb_printf(b, "%s%s[", v >= s->prog.n_graph_values ? "'" : "", dot ? "\\n" : " ");
  wh__sb_printf(b, "%s", wh__dtype_name(val->dtype));
  for (int i = 0; i < val->shape.ndim; i++) wh__sb_printf(b, "%s%lld", i ? "," : " ", (long long)wh__dim(val->shape.d[i], s->batch));
  wh__sb_printf(b, "]");
}

/* The gradient all-reduce buckets, in the order backward fills them (the packing of fusion.c:
 * a gradient of a bucket or more is reduced alone, in place; smaller ones are packed until the
 * next would overflow). bucket[i] is the bucket of node i's gradient output, or -1. */
static int dp_buckets(const wh_session *s, int *bucket, int64_t *bucket_bytes) {
  int nb = 0, cur = -1;
  int64_t used = 0, cap = s->dev || s->zero ? 1 : (int64_t)DP_BUCKET_BYTES; /* device, ZeRO-1: one each */
  for (int i = 0; i < s->prog.n_nodes; i++) {
    const wh__node *n = &s->prog.nodes[i];
    bucket[i] = -1;
    if (n->phase == WH_PHASE_UPDATE || n->out < 0 || s->grad_of_param[n->out] < 0) continue;
    int64_t by = s->bytes[n->out];
    if (by == 0) continue;
    if (by >= cap) {
      cur = -1;
      bucket_bytes[nb] = by;
      bucket[i] = nb++;
      continue;
    }
    if (cur >= 0 && used + by > cap) cur = -1;
    if (cur < 0) {
      cur = nb++;
      used = 0;
      bucket_bytes[cur] = 0;
    }
    used += by;
    bucket_bytes[cur] += by;
    bucket[i] = cur;
    if (used == cap) cur = -1;
  }
  return nb;
}

static const char *phase_name(wh__phase p) {
  return p == WH_PHASE_FORWARD ? "forward" : p == WH_PHASE_BACKWARD ? "backward" : "update";
}

static void dump_text(wh__sb *b, const wh_session *s, const int *bucket, const int64_t *bb, int nb) {
  const wh__program *pg = &s->prog;
  int rank = s->dist ? wh_comm_rank(s->comm) : 0, size = s->dist ? wh_comm_size(s->comm) : 1;
  if (s->dist)
    wh__sb_printf(b,
                  "rank %d of %d (%s): data-parallel replica, rows [%lld, %lld) of each %lld-sample micro-batch, "
                  "%d micro-batch%s, global batch %lld\n",
                  rank, size, wh_comm_backend_of(s->comm) == WH_COMM_NCCL ? "nccl" : "mpi", (long long)s->offset,
                  (long long)(s->offset + s->share), (long long)s->mb, s->m, s->m == 1 ? "" : "es",
                  (long long)s->global_batch);
  else
    wh__sb_printf(b, "single process, batch %lld\n", (long long)s->batch);
  if (s->tpx) wh__tp_dump_head(s, b);
  if (s->dev)
    wh__sb_printf(b, "device: CUDA %d, matrix products in %s\n", s->dev_index,
                  s->precision == WH_PRECISION_BF16 ? "bf16 (fp32 accumulation)"
                  : s->precision == WH_PRECISION_TF32 ? "tf32 (fp32 accumulation)" : "fp32");
  wh__sb_printf(b, "program: %d nodes (%d recomputed, marked '), arena %lld bytes, shapes at batch %lld\n", pg->n_nodes,
                pg->n_recomputed, (long long)s->arena_bytes, (long long)s->batch);
  for (int i = 0; i < pg->n_nodes; i++) {
    const wh__node *n = &pg->nodes[i];
    wh__sb_printf(b, "  #%-4d %-8s %-18s ", i, phase_name(n->phase), wh__ops[n->op]->name);
    if (n->out >= 0) sb_val(b, s, n->out, 0);
    else wh__sb_printf(b, "-");
    wh__sb_printf(b, " <-");
    for (int k = 0; k < n->n_in; k++) {
      wh__sb_printf(b, "%s", k ? ", " : " ");
      sb_val(b, s, n->in[k], 0);
    }
    wh__tp_dump_node(s, n, b);
    if (bucket[i] >= 0)
      wh__sb_printf(b, "  => %s %d (%lld bytes)", s->zero ? "reduce-scatter" : "all-reduce bucket", bucket[i],
                    (long long)s->bytes[n->out]);
    wh__sb_printf(b, "\n");
  }
  if (!s->dist) return;
  if (s->zero) {
    /* ZeRO-1: a reduce-scatter per gradient, this rank's shard updated, the parameters gathered */
    wh__sb_printf(b, "collectives per step (ZeRO-1: optimizer state sharded %d ways):\n", size);
    long long total = 0;
    for (int k = 0; k < nb; k++) {
      long long keep = (bb[k] / 4 + size - 1) / size * 4;
      wh__sb_printf(b, "  reduce-scatter sum f32 gradient %d: %lld bytes, started during backward; this rank keeps "
                    "%lld bytes\n", k, (long long)bb[k], keep);
      total += bb[k];
    }
    wh__sb_printf(b, "  all-gather f32 parameters after the update: %lld bytes, each rank contributing its shard\n", total);
    wh__sb_printf(b, "  all-reduce sum f64 loss: 8 bytes, after backward, all %d ranks\n", size);
    return;
  }
  int dr = wh_comm_rank(s->dpc), ds = wh_comm_size(s->dpc);
  int next = wh__tp_dp_world(s, (dr + 1) % ds), prev = wh__tp_dp_world(s, (dr - 1 + ds) % ds);
  size = ds;
  wh__sb_printf(b, "collectives per step (%s%s):\n", size > 1 ? "ring all-reduce" : "one rank: local copies",
                s->tpx ? " over the replicas' ranks holding this shard" : "");
  for (int k = 0; k < nb; k++) {
    /* a ring all-reduce of B bytes sends and receives 2(n-1)/n * B per rank */
    long long wire = size > 1 ? (long long)(2.0 * (size - 1) / size * (double)bb[k] + 0.5) : 0;
    wh__sb_printf(b, "  all-reduce sum f32 bucket %d: %lld bytes, started during backward; sends %lld bytes to rank %d, "
                  "receives %lld from rank %d\n",
                  k, (long long)bb[k], wire, next, wire, prev);
  }
  wh__sb_printf(b, "  all-reduce sum f64 loss: 8 bytes, after backward, all %d ranks\n", size);
}

static void dump_dot(wh__sb *b, const wh_session *s, const int *bucket, const int64_t *bb, int nb) {
  const wh__program *pg = &s->prog;
  int rank = s->dist ? wh_comm_rank(s->comm) : 0, size = s->dist ? wh_comm_size(s->comm) : 1;
  wh__sb_printf(b, "digraph rank%d {\n  rankdir=TB;\n  node [shape=box, fontname=\"monospace\"];\n", rank);
  wh__sb_printf(b, "  label=\"rank %d of %d: %d nodes\";\n", rank, size, pg->n_nodes);
  /* a value's producer, to draw edges node to node; leaves (inputs, parameters) as ellipses */
  int *prod = malloc(sizeof(int) * (size_t)(pg->n_values > 0 ? pg->n_values : 1));
  if (!prod) {
    b->oom = 1;
    return;
  }
  for (int v = 0; v < pg->n_values; v++) prod[v] = -1;
  for (int i = 0; i < pg->n_nodes; i++)
    if (pg->nodes[i].out >= 0) prod[pg->nodes[i].out] = i;
  for (int i = 0; i < pg->n_nodes; i++) {
    const wh__node *n = &pg->nodes[i];
    const char *color = n->phase == WH_PHASE_FORWARD ? "black" : n->phase == WH_PHASE_BACKWARD ? "blue" : "gray";
    /* the operator-sharding collectives stand out like the gradient all-reduces */
    int coll = n->op == WH_OP_TP_ALLREDUCE || n->op == WH_OP_TP_ALLGATHER || n->op == WH_OP_TP_NORM_CLIP;
    wh__sb_printf(b, "  n%d [label=\"#%d %s\\n", i, i, wh__ops[n->op]->name);
    if (n->out >= 0) sb_val(b, s, n->out, 1);
    if (coll) wh__sb_printf(b, "\\nover the replica's %d ranks, %lld bytes", wh__tp_degree(s),
                            (long long)(n->op == WH_OP_TP_NORM_CLIP ? 8 : s->bytes[n->out]));
    wh__sb_printf(b, "\"%s, color=%s];\n", coll ? ", shape=octagon" : "", coll ? "red" : color);
    for (int k = 0; k < n->n_in; k++) {
      int32_t v = n->in[k];
      if (v >= 0 && prod[v] >= 0) {
        wh__sb_printf(b, "  n%d -> n%d;\n", prod[v], i);
      } else {
        wh__sb_printf(b, "  v%d [shape=ellipse, label=\"", n->in[k]);
        sb_val(b, s, n->in[k], 1);
        wh__sb_printf(b, "\"];\n  v%d -> n%d;\n", n->in[k], i);
      }
    }
  }
  for (int k = 0; k < nb; k++) {
    long long wire = size > 1 ? (long long)(2.0 * (size - 1) / size * (double)bb[k] + 0.5) : 0;
    wh__sb_printf(b,
                  "  ar%d [shape=octagon, color=red, label=\"%s %d\\n%lld bytes\\nto rank %d, from rank "
                  "%d: %lld bytes each way\"];\n",
                  k, s->zero ? "reduce-scatter" : "all-reduce bucket", k, (long long)bb[k], (rank + 1) % size,
                  (rank - 1 + size) % size, wire);
  }
  for (int i = 0; i < pg->n_nodes; i++)
    if (bucket[i] >= 0) wh__sb_printf(b, "  n%d -> ar%d [color=red];\n", i, bucket[i]);
  if (s->dist)
    wh__sb_printf(b, "  loss_ar [shape=octagon, color=red, label=\"all-reduce loss\\n8 bytes, all %d ranks\"];\n", size);
  wh__sb_printf(b, "}\n");
  free(prod);
}

wh_status wh_session_dump(const wh_session *s, wh_format fmt, char **out) {
  if (out) *out = NULL;
  if (!s || !out) return WH_ERR_INVALID_ARGUMENT;
  if (fmt != WH_FORMAT_TEXT && fmt != WH_FORMAT_DOT) {
    wh__ctx_set_error(s->ctx, "wh_session_dump: unknown format %d", (int)fmt);
    return WH_ERR_INVALID_ARGUMENT;
  }
  size_t nn = (size_t)(s->prog.n_nodes > 0 ? s->prog.n_nodes : 1);
  int *bucket = malloc(sizeof(int) * nn);
  int64_t *bb = malloc(sizeof(int64_t) * nn);
  wh__sb b = {0};
  if (!bucket || !bb) b.oom = 1;
  int nb = 0;
  if (!b.oom) {
    if (s->dist && !s->pipe) nb = dp_buckets(s, bucket, bb);
    else
      for (size_t i = 0; i < nn; i++) bucket[i] = -1;
    if (fmt == WH_FORMAT_TEXT && s->pipe) wh__pipe_dump(s, &b);
    else if (fmt == WH_FORMAT_TEXT) dump_text(&b, s, bucket, bb, nb);
    else dump_dot(&b, s, bucket, bb, nb);
  }
  free(bucket);
  free(bb);
  if (b.oom) {
    free(b.s);
    wh__ctx_set_error(s->ctx, "wh_session_dump: out of memory");
    return WH_ERR_OUT_OF_MEMORY;
  }
  *out = b.s;
  return WH_OK;
}
