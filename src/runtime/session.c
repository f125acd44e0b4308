/* session.c - the public session lifecycle: creation (this rank's place in a plan, parameters,
 * the device, the memory plan, the strategy's state), feeding, fetching, parameters, saving. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/ctx.h"
#include "../kernels/cuda/cuda.h"
#include "session_impl.h"

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
  /* first: reductions still running write into accumulators, sends read private copies */
  wh__comm_nodes_close(s);
  wh__tp_destroy(s);
  wh__rebalance_free(s);
  wh_plan_destroy(s->plan);
  free(s->shares);
  free(s->stage_dev);
  if (s->froze && s->g->frozen > 0) s->g->frozen--;
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
  for (int k = 1; s->slot_arena && k < s->prog.n_slots; k++) free(s->slot_arena[k]);
  for (int k = 1; s->slot_ptr && k < s->prog.n_slots; k++) free(s->slot_ptr[k]);
  free(s->slot_arena);
  free(s->slot_ptr);
  wh__program_free(&s->prog);
  free(s->ptr);
  free(s->bytes);
  free(s->alias);
  free(s->stamp);
  if (s->dev) wh__cuda_free(s->dev, s->arena);
  else free(s->arena);
  free(s->ex.scratch);
  free(s->global_feed);
  free(s->row_bytes);
  if (s->dev) wh__cuda_free(s->dev, s->dloss);
  wh__cuda_close(s->dev);
  free(s);
}

int32_t wh__session_param_of_grad(const wh_session *s, int32_t gv) {
  const wh_graph *g = s->g;
  for (int v = 0; v < g->n_grad; v++)
    if (g->values[v].role == WH_ROLE_PARAM && g->grad[v] == gv && !wh__role_persistent(g->values[gv].role)) return v;
  return -1;
}

wh_status wh__session_repartition(wh_session *s) {
  char msg[512];
  wh__program np;
  const wh__place *old = &s->prog.place;
  wh_status st = wh__partition(s->g, s->plan, wh_comm_rank(s->comm), wh_comm_size(s->comm), s->recompute,
                               old->deterministic, s->dev != NULL, (wh_dtype)s->mixed, &np, msg, sizeof msg);
  if (st != WH_OK) return wh__session_fail(s, st, "wh_session_run: rebalancing: %s", msg);
  if (np.n_values != s->n || np.n_slots != 1) { /* the same values, or the storage cannot carry over */
    wh__program_free(&np);
    return wh__session_fail(s, WH_ERR_INTERNAL, "wh_session_run: rebalancing changed the program's values");
  }
  /* the fed inputs survive the new memory plan (it forgets feeds: they are per batch size) */
  void **fed = malloc(sizeof(void *) * (size_t)(s->n + 1));
  const void **hf = malloc(sizeof(void *) * (size_t)(s->n + 1));
  if (!fed || !hf) {
    free(fed), free(hf);
    wh__program_free(&np);
    return wh__session_fail(s, WH_ERR_OUT_OF_MEMORY, "wh_session_run: out of memory rebalancing");
  }
  for (int v = 0; v < s->n; v++) fed[v] = s->ptr[v], hf[v] = s->host_feed[v];
  wh__program was = s->prog;
  s->prog = np;
  wh__program_free(&was);
  wh__tp_destroy(s);
  if (s->prog.place.tp > 1 && (st = wh__tp_create(s)) != WH_OK) {
    free(fed), free(hf);
    return st;
  }
  s->batch = s->prog.place.batch;
  if ((st = wh__session_plan_memory(s)) == WH_OK) st = wh__session_plan_slots(s);
  for (int v = 0; st == WH_OK && v < s->g->n_values; v++) {
    if (s->prog.values[v].role != WH_ROLE_INPUT) continue;
    s->host_feed[v] = hf[v];
    if (s->global_feed[v]) s->ptr[v] = s->dev ? s->own[v] : (void *)s->global_feed[v];
    else s->ptr[v] = s->dev && hf[v] ? s->own[v] : fed[v];
  }
  free(fed), free(hf);
  if (st != WH_OK) return wh__session_fail(s, st, "wh_session_run: rebalancing: out of memory planning intermediates");
  return WH_OK;
}

/* Fail creation: free what was built, keep the message, return st. */
static wh_status create_fail(wh_session *s, wh_status st, const char *oom) {
  if (st == WH_ERR_OUT_OF_MEMORY && oom) wh__ctx_set_error(s->ctx, "wh_session_create: %s", oom);
  wh_session_destroy(s);
  return st;
}

/* Session-owned storage of the persistent values: parameters (their one-device values, stored or
 * initialised whole; a split parameter keeps this rank's shard), optimizer state and the
 * program's buffers (zeroed). */
static wh_status own_values(wh_session *s) {
  wh_graph *g = s->g;
  for (int v = 0; v < s->n; v++) {
    const wh__value *val = &s->prog.values[v];
    size_t bytes = (size_t)wh__numel(&val->shape, 1) * wh__dtype_size(val->dtype);
    if (val->role == WH_ROLE_CONST) {
      s->ptr[v] = val->data;
      continue;
    }
    if (val->role != WH_ROLE_PARAM && val->role != WH_ROLE_STATE && val->role != WH_ROLE_BUFFER) continue;
    if (!(s->own[v] = calloc(bytes ? bytes : 1, 1))) {
      wh__ctx_set_error(s->ctx, "wh_session_create: out of memory for %s '%s' (%zu bytes)",
                        val->role == WH_ROLE_PARAM ? "parameter" : val->role == WH_ROLE_STATE ? "state" : "buffer",
                        val->name ? val->name : "", bytes);
      return WH_ERR_OUT_OF_MEMORY;
    }
    if (val->role == WH_ROLE_PARAM) {
      const wh__value *whole = &g->values[v];
      int64_t cnt = wh__numel(&whole->shape, 1);
      float *src = whole->data ? whole->data
                   : wh__tp_layout(s, v).kind == WH_LAY_S ? malloc(sizeof(float) * (size_t)cnt + 1)
                                                          : s->own[v];
      if (!src) {
        wh__ctx_set_error(s->ctx, "wh_session_create: out of memory initialising '%s'", wh_value_name(g, v));
        return WH_ERR_OUT_OF_MEMORY;
      }
      if (!whole->data) wh__param_init(whole, src, cnt);
      if (src != s->own[v]) wh__tp_cut(s, v, src, s->own[v]);
      if (src != whole->data && src != s->own[v]) free(src);
    }
    s->ptr[v] = s->own[v];
  }
  return WH_OK;
}

/* A distributed session slices its inputs by leading rows: bytes per sample of each batched one. */
static wh_status input_rows(wh_session *s) {
  wh_graph *g = s->g;
  for (int v = 0; v < g->n_values; v++) {
    const wh__value *val = &s->prog.values[v];
    if (val->role != WH_ROLE_INPUT) continue;
    int sym = 0;
    for (int d = 1; d < val->shape.ndim; d++) sym |= val->shape.d[d] < 0;
    if (sym) {
      wh__ctx_set_error(s->ctx, "wh_session_create: input '%s' has its batch dimension after the first: a "
                                "distributed session slices inputs by leading rows",
                        wh_value_name(g, v));
      return WH_ERR_UNSUPPORTED;
    }
    if (val->shape.ndim == 0 || val->shape.d[0] >= 0) continue; /* no batch dimension: fed whole everywhere */
    s->row_bytes[v] = wh__numel(&val->shape, 1) * (int64_t)wh__dtype_size(val->dtype);
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
  if (o.plan && o.plan->mixed != WH_F32) { /* the plan was costed for a precision: run it */
    if (o.mixed != WH_F32 && o.mixed != o.plan->mixed) {
      wh__ctx_set_error(ctx, "wh_session_create: the options ask for mixed precision %s, the plan was made for %s",
                        wh__dtype_name(o.mixed), wh__dtype_name(o.plan->mixed));
      return WH_ERR_INVALID_ARGUMENT;
    }
    o.mixed = o.plan->mixed;
  }
  /* on CUDA, the pass's 16-bit activations go with 16-bit products (fp32 accumulation) */
  if (o.mixed != WH_F32 && o.device == WH_DEVICE_CUDA && o.precision == WH_PRECISION_F32) o.precision = WH_PRECISION_BF16;
  wh_session *s = calloc(1, sizeof *s);
  if (!s) return WH_ERR_OUT_OF_MEMORY;
  s->ctx = ctx;
  s->g = g;
  s->recompute = o.recompute != 0;
  s->mixed = (int)o.mixed;
  s->loss_scale = o.mixed == WH_F16 ? 65536.0 : 1.0;
  char msg[512];
  wh_status st = wh__partition(g, o.plan, o.plan ? wh_comm_rank(o.comm) : 0, o.plan ? wh_comm_size(o.comm) : 1,
                               s->recompute, o.deterministic, o.device != WH_DEVICE_CPU, o.mixed, &s->prog, msg,
                               sizeof msg);
  if (st != WH_OK) {
    free(s);
    wh__ctx_set_error(ctx, "wh_session_create: %s", msg);
    return st;
  }
  const wh__place *pc = &s->prog.place;
  if (o.plan) {
    o.batch = pc->batch;
    if (pc->pipelined) o.inplace = 0; /* values cross ranks while later nodes run: no storage taken over in place */
  }
  if (o.batch < 1) {
    wh__ctx_set_error(ctx, "wh_session_create: batch must be >= 1, got %lld", (long long)o.batch);
    wh__program_free(&s->prog);
    free(s);
    return WH_ERR_INVALID_ARGUMENT;
  }
  s->batch = o.batch;
  s->inplace = o.inplace != 0;
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
  if (!s->ptr || !s->own || !s->bytes || !s->alias || !s->stamp || !s->host_feed || !s->host_param)
    return create_fail(s, WH_ERR_OUT_OF_MEMORY, "out of memory");
  if (o.plan) {
    s->dist = 1;
    s->comm = o.comm;
    s->global_feed = calloc(n, sizeof(void *));
    s->row_bytes = calloc(n, sizeof(int64_t));
    if (!s->global_feed || !s->row_bytes) return create_fail(s, WH_ERR_OUT_OF_MEMORY, "out of memory");
    /* the program's communicators: collective, so before anything that could fail on one rank alone */
    if ((st = wh__comm_nodes_open(s)) != WH_OK) return create_fail(s, st, "out of memory for the communicators");
    if (pc->tp > 1) {
      if ((st = wh__tp_create(s)) != WH_OK) return create_fail(s, st, "out of memory for operator sharding");
      s->ex.tp = s->grp[WH_GROUP_TP];
    }
    if ((st = input_rows(s)) != WH_OK) return create_fail(s, st, NULL);
  }
  if ((st = own_values(s)) != WH_OK) return create_fail(s, st, NULL);
  st = wh__session_open_device(s, &o);
  if (st == WH_OK && s->dev) {
    s->ex.dev = s->dev;
    st = wh__session_to_device(s);
  }
  if (st != WH_OK) return create_fail(s, st, NULL);
  if ((st = wh__session_plan_memory(s)) == WH_OK) st = wh__session_plan_slots(s);
  if (st != WH_OK) {
    if (s->dev)
      wh__ctx_set_error(ctx, "wh_session_create: device memory for intermediates (%lld-byte arena): %s",
                        (long long)s->arena_bytes, wh__cuda_error(s->dev));
    else
      wh__ctx_set_error(ctx, "wh_session_create: out of memory planning intermediates");
    return create_fail(s, st, NULL);
  }
  if (o.plan && wh_comm_backend_of(o.comm) == WH_COMM_NCCL &&
      (!s->dev || wh__cuda_alloc(s->dev, sizeof(double), (void **)&s->dloss) != WH_OK)) {
    wh__ctx_set_error(ctx, s->dev ? "wh_session_create: device memory for the loss all-reduce: %s"
                                  : "wh_session_create: an NCCL communicator reduces device memory: run the session on "
                                    "CUDA (so.device = WH_DEVICE_CUDA) or use an MPI communicator%s",
                      s->dev ? wh__cuda_error(s->dev) : "");
    return create_fail(s, s->dev ? WH_ERR_OUT_OF_MEMORY : WH_ERR_INVALID_ARGUMENT, NULL);
  }
  if (o.plan && (st = wh__comm_nodes_buffers(s)) != WH_OK) return create_fail(s, st, NULL);
  if (o.plan) {
    int R = pc->n_replicas;
    if (!(s->shares = malloc(sizeof(int64_t) * (size_t)(R + 1)))) return create_fail(s, WH_ERR_OUT_OF_MEMORY, "out of memory");
    memcpy(s->shares, o.plan->st[pc->stage].share, sizeof(int64_t) * (size_t)R);
    const wh__stage *sg = &o.plan->st[pc->stage];
    if (!(s->stage_dev = malloc(sizeof(int) * (size_t)(sg->ndev + 1))))
      return create_fail(s, WH_ERR_OUT_OF_MEMORY, "out of memory");
    memcpy(s->stage_dev, sg->dev, sizeof(int) * (size_t)sg->ndev);
    s->stage_ndev = sg->ndev, s->n_devices = o.plan->n_devices;
    if ((st = wh__rebalance_open(s, o.plan, o.rebalance)) != WH_OK)
      return create_fail(s, st, "out of memory for rebalancing");
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
  wh_status st = wh__session_plan_memory(s);
  if (st != WH_OK) {
    s->batch = old;
    wh__session_plan_memory(s);
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
    int64_t gb = s->prog.place.global_batch;
    if ((int64_t)bytes != s->row_bytes[v] * gb)
      return wh__session_fail(s, WH_ERR_SHAPE, "wh_session_feed: input '%s' of a distributed session takes the global batch of %lld: "
                                   "%lld bytes, got %zu",
                  wh_value_name(s->g, v), (long long)gb, (long long)(s->row_bytes[v] * gb), bytes);
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
    if (s->prog.place.zero1 && wh__session_param_of_grad(s, v) >= 0)
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
  const wh__place *pc = &s->prog.place;
  if (pc->pipelined) {
    int at = s->prog.leaf_stage && s->prog.leaf_stage[p] >= 0 ? s->prog.leaf_stage[p] : pc->stage;
    if (at != pc->stage)
      return wh__session_fail(s, WH_ERR_STATE, "wh_session_get_param: '%s' lives on pipeline stage %d; this rank runs stage %d",
                              wh_value_name(s->g, p), at, pc->stage);
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
    if (!s->dev) {
      wh__tp_cut(s, p, data, s->ptr[p]);
      return WH_OK;
    }
    void *shard = malloc((size_t)s->bytes[p] + 1);
    if (!shard) return wh__session_fail(s, WH_ERR_OUT_OF_MEMORY, "wh_session_set_param: out of memory");
    wh__tp_cut(s, p, data, shard);
    wh_status st = wh__cuda_copy(s->dev, s->ptr[p], shard, (size_t)s->bytes[p], WH__H2D);
    free(shard);
    return st == WH_OK ? WH_OK : wh__session_fail(s, st, "wh_session_set_param: %s", wh__cuda_error(s->dev));
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
  out->saved_bytes = (uint64_t)s->saved_bytes;
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

wh_status wh_session_loss_scale(const wh_session *s, double *scale, int64_t *skipped) {
  if (!s) return WH_ERR_INVALID_ARGUMENT;
  if (scale) *scale = s->loss_scale;
  if (skipped) *skipped = s->skipped;
  return WH_OK;
}
