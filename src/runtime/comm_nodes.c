/* comm_nodes.c - the nodes the runtime itself executes: gradient accumulation over micro-batches,
 * the data-parallel reductions (gradient fusion, rank-ordered sums, ZeRO-1), the loss reduction,
 * and the sends and receives of pipelines. The partition layer decides where each one runs. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/clock.h"
#include "../base/ctx.h"
#include "session_impl.h"

static wh_status dev_fail(wh_session *s, wh_status st, const char *what) {
  return wh__session_fail(s, st, "wh_session_run: %s: %s", what, wh__cuda_error(s->dev));
}

static wh_comm *group(const wh_session *s, const wh__node *n) {
  int gi = (int)n->ia[0];
  return gi >= 0 && gi < WH_GROUP_COUNT ? s->grp[gi] : NULL;
}

static int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

void wh__comm_blocked(wh_session *s, double dt) {
  s->cs_busy += dt, s->cs_exposed += dt;
  s->cs_ops++;
}

/* Remember v's started operation: polled between nodes, waited by its wait node. */
static void started(wh_session *s, int32_t v) {
  s->pend_t[v] = wh__now();
  s->inflight[s->n_inflight++] = v;
}

static void forget(wh_session *s, int32_t v) {
  for (int k = 0; k < s->n_inflight; k++)
    if (s->inflight[k] == v) {
      s->inflight[k] = s->inflight[--s->n_inflight];
      return;
    }
}

wh_status wh__comm_poll(wh_session *s) {
  for (int k = 0; k < s->n_inflight; k++) {
    int32_t v = s->inflight[k];
    int done = 0;
    wh_status st = wh_request_test(s->pend[v], &done);
    if (done) {
      s->pend[v] = NULL;
      s->cs_busy += wh__now() - s->pend_t[v], s->cs_ops++;
      s->inflight[k--] = s->inflight[--s->n_inflight];
    }
    if (st != WH_OK) return wh__session_fail(s, st, "wh_session_run: %s", wh_last_error(s->ctx));
  }
  for (int k = 0; k < s->n_sends; k++) { /* a send seen done is counted once: its request is gone */
    if (!s->sends[k].r) continue;
    int done = 0;
    wh_status st = wh_request_test(s->sends[k].r, &done);
    if (done) {
      s->sends[k].r = NULL;
      s->cs_busy += wh__now() - s->sends[k].t, s->cs_ops++;
    }
    if (st != WH_OK) return wh__session_fail(s, st, "wh_session_run: a pipeline send failed: %s", wh_last_error(s->ctx));
  }
  return WH_OK;
}

/* This rank's shard [lo, hi) of a parameter of numel elements cut into chunks (ZeRO-1). */
static void shard_range(int64_t numel, int64_t chunk, int r, int64_t *lo, int64_t *hi) {
  *lo = chunk * r < numel ? chunk * r : numel;
  *hi = *lo + chunk < numel ? *lo + chunk : numel;
}

static void axpy_scale(float *acc, const float *g, int64_t n, float w, int first) {
  if (first)
    for (int64_t i = 0; i < n; i++) acc[i] = w * g[i];
  else
    for (int64_t i = 0; i < n; i++) acc[i] += w * g[i];
}

/* The bytes of value v a send or receive moves: rows [ia[5], ia[6]) of its leading batch dimension,
 * or all of it (ia[6] < 0). */
static char *moved(wh_session *s, const wh__node *n, int32_t v, size_t *bytes) {
  char *p = wh__session_data(s, v);
  *bytes = (size_t)s->bytes[v];
  if (n->n_ia >= 7 && n->ia[6] >= 0) {
    size_t row = (size_t)wh__numel(&s->prog.values[v].shape, 1) * wh__dtype_size(s->prog.values[v].dtype);
    p += (size_t)n->ia[5] * row;
    *bytes = (size_t)(n->ia[6] - n->ia[5]) * row;
  }
  return p;
}

static wh_status send(wh_session *s, const wh__node *n) {
  int32_t v = n->in[0];
  size_t bytes;
  const void *src = moved(s, n, v, &bytes);
  wh_dtype dt = s->prog.values[v].dtype;
  int peer = (int)n->ia[1], tag = (int)(n->ia[2] + (n->ia[3] ? s->cur_mb : 0));
  if (!wh__grow((void **)&s->sends, &s->cap_sends, s->n_sends + 1, sizeof(wh__pending_send)))
    return wh__session_fail(s, WH_ERR_OUT_OF_MEMORY, "wh_session_run: out of memory for a pipeline send");
  /* a private copy: the arena slot may be reused before the message has left */
  void *buf = malloc(bytes ? bytes : 1);
  if (!buf) return wh__session_fail(s, WH_ERR_OUT_OF_MEMORY, "wh_session_run: out of memory for a pipeline send");
  memcpy(buf, src, bytes);
  wh_request *r = NULL;
  wh_status st = wh_comm_isend(group(s, n), buf, bytes / wh__dtype_size(dt), dt, peer, tag, &r);
  if (st != WH_OK) {
    free(buf);
    return wh__session_fail(s, st, "wh_session_run: pipeline send of '%s' to stage %d (rank %d): %s",
                            wh_value_name(s->g, v < s->g->n_values ? v : -1), (int)n->ia[4], peer, wh_last_error(s->ctx));
  }
  s->sends[s->n_sends++] = (wh__pending_send){r, buf, wh__now()};
  return WH_OK;
}

wh_status wh__comm_drain(wh_session *s, int report) {
  wh_status first = WH_OK;
  for (int k = 0; k < s->n_sends; k++) {
    double t0 = wh__now();
    wh_status st = s->sends[k].r ? wh_request_wait(s->sends[k].r) : WH_OK;
    if (s->sends[k].r) {
      double t1 = wh__now();
      s->cs_busy += t1 - s->sends[k].t, s->cs_exposed += t1 - t0, s->cs_ops++;
    }
    free(s->sends[k].buf);
    if (st != WH_OK && first == WH_OK) {
      first = st;
      if (report) wh__session_fail(s, st, "wh_session_run: a pipeline send did not complete: %s", wh_last_error(s->ctx));
    }
  }
  s->n_sends = 0;
  return first;
}

static wh_status recv(wh_session *s, const wh__node *n) {
  int32_t v = n->out;
  wh_dtype dt = s->prog.values[v].dtype;
  int peer = (int)n->ia[1], tag = (int)(n->ia[2] + (n->ia[3] ? s->cur_mb : 0));
  size_t bytes;
  void *dst = moved(s, n, v, &bytes);
  wh_status st = wh_comm_recv(group(s, n), dst, bytes / wh__dtype_size(dt), dt, peer, tag);
  if (st != WH_OK)
    return wh__session_fail(s, st, "wh_session_run: pipeline receive of value %d from stage %d (rank %d): %s", (int)v,
                            (int)n->ia[4], peer, wh_last_error(s->ctx));
  if (n->n_fa > 0 && dt == WH_F32) { /* a gradient from a replica of other shares (partition/stages.c) */
    float *g = (float *)dst, k = (float)n->fa[0];
    for (size_t i = 0; i < bytes / sizeof(float); i++) g[i] *= k;
  }
  return WH_OK;
}

/* The loss reduction: every rank's weighted sum (0 where the rank computes no loss) added up, the
 * deterministic mode in rank order; over NCCL through device memory. The mean lands in the loss. */
static wh_status loss_reduce(wh_session *s, const wh__node *n) {
  wh_comm *c = group(s, n);
  double mine = n->ia[1] ? s->loss_acc : 0.0, gl = mine;
  wh_status st;
  if (n->ia[2]) {
    int R = wh_comm_size(c);
    double *parts = malloc(sizeof(double) * (size_t)R);
    if (!parts) return wh__session_fail(s, WH_ERR_OUT_OF_MEMORY, "wh_session_run: out of memory");
    st = wh_comm_allgather(c, &mine, parts, 1, NULL, WH_F64);
    gl = 0;
    for (int r = 0; r < R; r++) gl += parts[r];
    free(parts);
    if (st != WH_OK) return wh__session_fail(s, st, "wh_session_run: loss gather: %s", wh_last_error(s->ctx));
  } else if (s->dloss) {
    if ((st = wh__cuda_copy(s->dev, s->dloss, &gl, sizeof gl, WH__H2D)) != WH_OK || (st = wh__cuda_sync(s->dev)) != WH_OK)
      return dev_fail(s, st, "the loss all-reduce");
    if ((st = wh_comm_allreduce(c, NULL, s->dloss, 1, WH_F64, WH_REDUCE_SUM)) != WH_OK)
      return wh__session_fail(s, st, "wh_session_run: loss all-reduce: %s", wh_last_error(s->ctx));
    if ((st = wh__cuda_copy(s->dev, &gl, s->dloss, sizeof gl, WH__D2H)) != WH_OK)
      return dev_fail(s, st, "the loss all-reduce");
  } else if ((st = wh_comm_allreduce(c, NULL, &gl, 1, WH_F64, WH_REDUCE_SUM)) != WH_OK) {
    return wh__session_fail(s, st, "wh_session_run: loss all-reduce: %s", wh_last_error(s->ctx));
  }
  float glf = (float)gl;
  void *dst = wh__session_data(s, n->out);
  if (!s->dev) memcpy(dst, &glf, sizeof glf);
  else if ((st = wh__cuda_copy(s->dev, dst, &glf, sizeof glf, WH__H2D)) != WH_OK)
    return dev_fail(s, st, "writing the loss");
  return WH_OK;
}

/* Each rank's weighted partial sums of one gradient, gathered, then added in rank order into the
 * accumulator (which GRAD_SET then hands to the gradient). */
static wh_status det_reduce(wh_session *s, const wh__node *n) {
  wh_comm *c = group(s, n);
  int R = wh_comm_size(c);
  int32_t a = n->in[0];
  size_t cnt = (size_t)s->bytes[a] / sizeof(float);
  float *acc = s->ptr[a];
  wh_status st = wh_comm_allgather(c, acc, s->det_buf, cnt, NULL, WH_F32);
  if (st != WH_OK) return wh__session_fail(s, st, "wh_session_run: gradient gather: %s", wh_last_error(s->ctx));
  memcpy(acc, s->det_buf, cnt * sizeof(float));
  for (int r = 1; r < R; r++)
    for (size_t i = 0; i < cnt; i++) acc[i] += s->det_buf[(size_t)r * cnt + i];
  return WH_OK;
}

/* ZeRO-1: clipping from the shards' sums of squares (inputs: shard, parameter, ...; the first ia[1]
 * pairs split by operator sharding, whose squares the replica's ranks, group ia[2], add up too). */
static wh_status zero_norm_clip(wh_session *s, const wh__node *n) {
  wh_comm *c = group(s, n);
  int me = wh_comm_rank(c), nsplit = (int)n->ia[1];
  double total[2] = {0, 0}; /* split, whole */
  for (int k = 0; k + 1 < n->n_in; k += 2) {
    const float *sh = s->ptr[n->in[k]];
    int64_t lo, hi;
    shard_range(s->bytes[n->in[k + 1]] / (int64_t)sizeof(float), s->bytes[n->in[k]] / (int64_t)sizeof(float), me, &lo,
                &hi);
    double *t = &total[k / 2 >= nsplit];
    for (int64_t e = 0; e < hi - lo; e++) *t += (double)sh[e] * sh[e];
  }
  wh_status st = wh_comm_allreduce(c, NULL, total, 2, WH_F64, WH_REDUCE_SUM);
  if (st == WH_OK && n->ia[2] >= 0 && nsplit > 0)
    st = wh_comm_allreduce(s->grp[n->ia[2]], NULL, &total[0], 1, WH_F64, WH_REDUCE_SUM);
  if (st != WH_OK) return wh__session_fail(s, st, "wh_session_run: ZeRO-1 gradient norm: %s", wh_last_error(s->ctx));
  double coef = n->fa[0] / (sqrt(total[0] + total[1]) + 1e-6);
  *(float *)wh__session_data(s, n->out) = (float)(coef < 1.0 ? coef : 1.0);
  return WH_OK;
}

/* ZeRO-1: the update of this rank's shard of one parameter, with its shard of the state. */
static wh_status zero_update(wh_session *s, const wh__node *n) {
  wh_comm *c = s->grp[n->ia[WH_MAX_IATTR - 2]];
  int32_t prm = n->in[0], sh = n->in[1];
  int64_t lo, hi;
  shard_range(s->bytes[prm] / (int64_t)sizeof(float), s->bytes[sh] / (int64_t)sizeof(float), wh_comm_rank(c), &lo, &hi);
  int64_t len = hi - lo;
  if (len <= 0) return WH_OK;
  wh__tensor t[8];
  for (int k = 0; k < n->n_in && k < 8; k++) {
    int32_t v = n->in[k];
    t[k].dtype = WH_F32;
    t[k].ndim = 1;
    if (k == 0) t[k].data = (float *)s->ptr[v] + lo;
    else t[k].data = wh__session_data(s, v);
    int scalar = s->prog.values[v].role != WH_ROLE_STATE && k > 1; /* the clipping coefficient */
    t[k].d[0] = t[k].numel = scalar ? 1 : len;
  }
  wh__node u = *n;
  u.op = (int)n->ia[WH_MAX_IATTR - 1];
  s->kerr[0] = 0;
  wh_status st = wh__cpu_kernels[u.op](&s->ex, &u, t, NULL);
  if (st != WH_OK)
    return wh__session_fail(s, st, "wh_session_run: ZeRO-1 update of '%s': %s", wh_value_name(s->g, prm), s->kerr);
  return WH_OK;
}

/* ZeRO-1: every parameter whole again, each rank contributing its shard. */
static wh_status zero_allgather(wh_session *s, const wh__node *n) {
  wh_comm *c = group(s, n);
  int R = wh_comm_size(c);
  int32_t prm = n->in[0];
  int64_t numel = s->bytes[prm] / (int64_t)sizeof(float), chunk = cdiv(numel, R);
  if (chunk < 1) chunk = 1;
  size_t *counts = malloc(sizeof(size_t) * (size_t)R);
  if (!counts) return wh__session_fail(s, WH_ERR_OUT_OF_MEMORY, "wh_session_run: out of memory");
  for (int r = 0; r < R; r++) {
    int64_t lo, hi;
    shard_range(numel, chunk, r, &lo, &hi);
    counts[r] = (size_t)(hi - lo);
  }
  wh_status st = wh_comm_allgather(c, NULL, s->ptr[prm], 0, counts, WH_F32);
  free(counts);
  if (st != WH_OK)
    return wh__session_fail(s, st, "wh_session_run: ZeRO-1 parameter all-gather of '%s': %s", wh_value_name(s->g, prm),
                            wh_last_error(s->ctx));
  return WH_OK;
}

/* Wait for the started reductions of the listed values; report the first failure. */
static wh_status wait_pending(wh_session *s, const wh__node *n, const char *what) {
  wh_status first = WH_OK;
  for (int k = 0; k < n->n_in; k++) {
    int32_t v = n->in[k];
    wh_request **r = &s->pend[v];
    if (!*r) continue; /* done already: counted by a poll */
    double t0 = wh__now();
    wh_status st = wh_request_wait(*r);
    double t1 = wh__now();
    s->cs_busy += t1 - s->pend_t[v], s->cs_exposed += t1 - t0, s->cs_ops++;
    *r = NULL;
    forget(s, v);
    if (st != WH_OK && first == WH_OK) first = st;
  }
  if (first != WH_OK) return wh__session_fail(s, first, "wh_session_run: %s: %s", what, wh_last_error(s->ctx));
  return WH_OK;
}

static wh_status node_run(wh_session *s, const wh__node *n);

/* The operations that block the step are counted whole (all of them waited for). */
wh_status wh__comm_node_run(wh_session *s, const wh__node *n) {
  int blocks = n->op == WH_OP_LOSS_REDUCE || n->op == WH_OP_DET_REDUCE || n->op == WH_OP_RECV ||
               n->op == WH_OP_ALLREDUCE || n->op == WH_OP_ZERO_NORM_CLIP || n->op == WH_OP_ZERO_ALLGATHER;
  double t0 = blocks ? wh__now() : 0;
  wh_status st = node_run(s, n);
  if (blocks) wh__comm_blocked(s, wh__now() - t0);
  return st;
}

/* A small f32 tensor's data on the host, for the loss scale's nodes (a device session's through a
 * copy, written back by put_host). */
static float *get_host(wh_session *s, int32_t v, size_t *count) {
  size_t by = (size_t)s->bytes[v];
  *count = by / sizeof(float);
  void *p = wh__session_data(s, v);
  if (!s->dev) return p;
  float *h = malloc(by + 4);
  if (h && wh__cuda_copy(s->dev, h, p, by, WH__D2H) != WH_OK) {
    free(h);
    return NULL;
  }
  return h;
}

static wh_status put_host(wh_session *s, int32_t v, float *h) {
  if (!s->dev) return WH_OK;
  wh_status st = wh__cuda_copy(s->dev, wh__session_data(s, v), h, (size_t)s->bytes[v], WH__H2D);
  free(h);
  return st == WH_OK ? WH_OK : dev_fail(s, st, "the loss scale");
}

/* fp16: the loss scale halves after an overflow (the step skipped on every rank) and doubles after
 * WH_SCALE_GROW good steps. */
#define WH_SCALE_GROW 1000

static wh_status overflow_check(wh_session *s, const wh__node *n) {
  double flag = s->overflow ? 1.0 : 0.0;
  wh_comm *c = s->dist ? group(s, n) : NULL;
  if (c) {
    double t0 = wh__now();
    wh_status st = wh_comm_allreduce(c, NULL, &flag, 1, WH_F64, WH_REDUCE_SUM);
    wh__comm_blocked(s, wh__now() - t0);
    if (st != WH_OK) return wh__session_fail(s, st, "wh_session_run: agreeing on an overflow: %s", wh_last_error(s->ctx));
  }
  s->overflow = 0;
  if (flag > 0) {
    s->skip_update = 1, s->skipped++, s->scale_good = 0;
    if (s->loss_scale > 1) s->loss_scale /= 2;
    wh__log(s->ctx, WH_LOG_INFO, "fp16: a gradient overflowed; step skipped, loss scale now %g", s->loss_scale);
  } else if (++s->scale_good >= WH_SCALE_GROW) {
    s->scale_good = 0;
    if (s->loss_scale < 16777216.0) s->loss_scale *= 2;
  }
  return WH_OK;
}

static wh_status node_run(wh_session *s, const wh__node *n) {
  wh_status st = WH_OK;
  switch (n->op) {
    case WH_OP_LOSS_SCALE: {
      size_t cnt, co;
      float *x = get_host(s, n->in[0], &cnt), *y = get_host(s, n->out, &co);
      if (!x || !y) return wh__session_fail(s, WH_ERR_OUT_OF_MEMORY, "wh_session_run: out of memory scaling the loss");
      for (size_t i = 0; i < cnt && i < co; i++) y[i] = (float)(x[i] * s->loss_scale);
      if (s->dev) free(x);
      return put_host(s, n->out, y);
    }
    case WH_OP_GRAD_UNSCALE: {
      size_t cnt;
      float *gv = get_host(s, n->in[0], &cnt);
      if (!gv) return wh__session_fail(s, WH_ERR_OUT_OF_MEMORY, "wh_session_run: out of memory unscaling gradients");
      float k = (float)(1.0 / s->loss_scale);
      int bad = 0;
      for (size_t i = 0; i < cnt; i++) {
        bad |= !isfinite(gv[i]);
        gv[i] *= k;
      }
      s->overflow |= bad;
      return put_host(s, n->in[0], gv);
    }
    case WH_OP_OVERFLOW_CHECK: return overflow_check(s, n);
    case WH_OP_ZERO: {
      void *p = s->ptr[n->out];
      if (!s->dev) memset(p, 0, (size_t)s->bytes[n->out]);
      else if (wh__cuda_zero(s->dev, p, (size_t)s->bytes[n->out]) != WH_OK)
        return dev_fail(s, WH_ERR_INTERNAL, "gradient accumulation");
      return WH_OK;
    }
    case WH_OP_GRAD_ACC: {
      int32_t gv = n->in[0];
      const float *g = wh__session_data(s, gv);
      float *acc = s->ptr[n->out], w = (float)n->fa[0];
      int64_t cnt = s->bytes[gv] / (int64_t)sizeof(float);
      if (!s->dev) axpy_scale(acc, g, cnt, w, (int)n->ia[1]);
      else if (wh__cuda_axpy(s->dev, acc, g, cnt, w, (int)n->ia[1]) != WH_OK)
        return dev_fail(s, WH_ERR_INTERNAL, "gradient accumulation");
      return WH_OK;
    }
    case WH_OP_GRAD_SET: {
      void *dst = wh__session_data(s, n->out);
      size_t by = (size_t)s->bytes[n->out];
      if (!s->dev) memcpy(dst, s->ptr[n->in[0]], by);
      else if ((st = wh__cuda_copy(s->dev, dst, s->ptr[n->in[0]], by, WH__D2D)) != WH_OK)
        return dev_fail(s, st, "gradient copy");
      return WH_OK;
    }
    case WH_OP_DP_REDUCE_START: {
      int32_t a = n->in[0];
      int64_t cnt = s->bytes[a] / (int64_t)sizeof(float);
      if (!s->dev) {
        st = wh_fusion_add(s->fusion, s->ptr[a], (size_t)cnt);
      } else if (cnt > 0) {
        /* the comm's operations do not wait for the session's stream: drain it first */
        if ((st = wh__cuda_sync(s->dev)) != WH_OK) return dev_fail(s, st, "before a gradient all-reduce");
        st = wh_comm_iallreduce(group(s, n), NULL, s->ptr[a], (size_t)cnt, WH_F32, WH_REDUCE_SUM, &s->pend[a]);
        if (st == WH_OK) started(s, a);
      }
      if (st != WH_OK) return wh__session_fail(s, st, "wh_session_run: gradient all-reduce: %s", wh_last_error(s->ctx));
      return WH_OK;
    }
    case WH_OP_DP_REDUCE_WAIT:
      if (s->dev) return wait_pending(s, n, "gradient all-reduce");
      if ((st = wh_fusion_wait(s->fusion)) != WH_OK)
        return wh__session_fail(s, st, "wh_session_run: gradient all-reduce: %s", wh_last_error(s->ctx));
      return WH_OK;
    case WH_OP_DET_REDUCE: return det_reduce(s, n);
    case WH_OP_LOSS_ACC: {
      float l;
      const void *src = wh__session_data(s, n->in[0]);
      if (!s->dev) memcpy(&l, src, sizeof l);
      else if (wh__cuda_copy(s->dev, &l, src, sizeof l, WH__D2H) != WH_OK)
        return dev_fail(s, WH_ERR_INTERNAL, "reading the loss");
      s->loss_acc = (n->ia[1] ? 0.0 : s->loss_acc) + n->fa[0] * (double)l;
      return WH_OK;
    }
    case WH_OP_LOSS_REDUCE: return loss_reduce(s, n);
    case WH_OP_SEND: return send(s, n);
    case WH_OP_RECV: return recv(s, n);
    case WH_OP_SEND_WAIT: return wh__comm_drain(s, 1);
    case WH_OP_ALLREDUCE: {
      int32_t v = n->in[0];
      st = wh_comm_allreduce(group(s, n), NULL, wh__session_data(s, v), (size_t)s->bytes[v] / sizeof(float), WH_F32,
                             WH_REDUCE_SUM);
      if (st != WH_OK)
        return wh__session_fail(s, st, "wh_session_run: gradient all-reduce among stage %d's replicas: %s",
                                s->prog.place.stage, wh_last_error(s->ctx));
      return WH_OK;
    }
    case WH_OP_ZERO_RS_START:
      st = wh_comm_ireduce_scatter(group(s, n), s->ptr[n->in[0]], s->ptr[n->out],
                                   (size_t)s->bytes[n->out] / sizeof(float), WH_F32, WH_REDUCE_SUM, &s->pend[n->out]);
      if (st != WH_OK) return wh__session_fail(s, st, "wh_session_run: ZeRO-1 reduce-scatter: %s", wh_last_error(s->ctx));
      started(s, n->out);
      return WH_OK;
    case WH_OP_ZERO_RS_WAIT: return wait_pending(s, n, "ZeRO-1 reduce-scatter");
    case WH_OP_TP_ALLREDUCE_START: {
      int32_t o = n->out;
      if (s->dev && (st = wh__cuda_sync(s->dev)) != WH_OK) return dev_fail(s, st, "before an all-reduce");
      void *src = wh__session_data(s, n->in[0]), *dst = wh__session_data(s, o);
      st = wh_comm_iallreduce(s->grp[WH_GROUP_TP], src, dst, (size_t)s->bytes[o] / sizeof(float), WH_F32, WH_REDUCE_SUM,
                              &s->pend[o]);
      if (st != WH_OK)
        return wh__session_fail(s, st, "wh_session_run: operator sharding's all-reduce: %s", wh_last_error(s->ctx));
      started(s, o);
      return WH_OK;
    }
    case WH_OP_TP_WAIT: {
      wh__node one = *n;
      one.n_in = 1; /* the sum's request; the partial input only had to stay alive */
      return wait_pending(s, &one, "operator sharding's all-reduce");
    }
    case WH_OP_ZERO_NORM_CLIP: return zero_norm_clip(s, n);
    case WH_OP_ZERO_UPDATE: return zero_update(s, n);
    case WH_OP_ZERO_ALLGATHER: return zero_allgather(s, n);
    default: break;
  }
  return wh__session_fail(s, WH_ERR_INTERNAL, "wh_session_run: node op %s is not the runtime's", wh__ops[n->op]->name);
}

wh_status wh__comm_nodes_open(wh_session *s) {
  const wh__program *p = &s->prog;
  s->grp[WH_GROUP_WORLD] = s->comm;
  for (int i = 0; i < p->n_splits; i++) {
    wh_comm *c = NULL;
    wh_status st = wh_comm_split(s->comm, p->splits[i].n, p->splits[i].ranks, &c);
    if (st != WH_OK) {
      wh__ctx_set_error(s->ctx, "wh_session_create: the program's communicators: %s", wh_last_error(s->ctx));
      return st;
    }
    if (c) s->grp[p->splits[i].group] = c;
  }
  if (!s->grp[WH_GROUP_DP]) s->grp[WH_GROUP_DP] = s->comm; /* without operator sharding: every rank */
  return WH_OK;
}

wh_status wh__comm_nodes_buffers(wh_session *s) {
  const wh__program *p = &s->prog;
  if (!(s->pend = calloc((size_t)s->n + 1, sizeof(wh_request *))) ||
      !(s->pend_t = calloc((size_t)s->n + 1, sizeof(double))) || !(s->inflight = calloc((size_t)s->n + 1, sizeof(int32_t))))
    return WH_ERR_OUT_OF_MEMORY;
  int64_t most = 0;
  int fusion = 0;
  for (int i = 0; i < p->n_nodes; i++) {
    const wh__node *n = &p->nodes[i];
    if (n->op == WH_OP_DET_REDUCE && s->bytes[n->in[0]] > most) most = s->bytes[n->in[0]];
    fusion |= n->op == WH_OP_DP_REDUCE_START;
  }
  if (most > 0 && !(s->det_buf = malloc((size_t)most * (size_t)wh_comm_size(s->grp[WH_GROUP_DP])))) {
    wh__ctx_set_error(s->ctx, "wh_session_create: out of memory for the deterministic reduction");
    return WH_ERR_OUT_OF_MEMORY;
  }
  if (fusion && !s->dev) {
    /* buckets of a quarter of the gradients (between 64 KiB and 4 MiB): a small model's gradients
     * then still leave in a few all-reduces while backward goes on, not in one at its end */
    int64_t total = 0;
    for (int i = 0; i < p->n_nodes; i++)
      if (p->nodes[i].op == WH_OP_DP_REDUCE_START) total += s->bytes[p->nodes[i].in[0]];
    int64_t bb = (total / 4 + 3) / 4 * 4;
    s->bucket_bytes = (size_t)(bb < ((int64_t)64 << 10) ? ((int64_t)64 << 10) : bb > (int64_t)DP_BUCKET_BYTES
                                                                                      ? (int64_t)DP_BUCKET_BYTES
                                                                                      : bb);
    return wh_fusion_create(s->grp[WH_GROUP_DP], s->bucket_bytes, WH_F32, WH_REDUCE_SUM, &s->fusion);
  }
  return WH_OK;
}

void wh__comm_nodes_close(wh_session *s) {
  /* first: a bucket still reducing in place writes into the accumulators freed after this */
  wh_fusion_destroy(s->fusion);
  s->fusion = NULL;
  wh__comm_drain(s, 0);
  free(s->sends);
  s->sends = NULL;
  if (s->pend)
    for (int v = 0; v < s->n; v++)
      if (s->pend[v]) wh_request_wait(s->pend[v]); /* bounded by the comm's deadline */
  free(s->pend);
  s->pend = NULL;
  free(s->pend_t), free(s->inflight);
  s->pend_t = NULL, s->inflight = NULL, s->n_inflight = 0;
  free(s->det_buf);
  s->det_buf = NULL;
  for (int k = 0; k < WH_GROUP_COUNT; k++) {
    int dup = 0;
    for (int j = 0; j < k; j++) dup |= s->grp[j] == s->grp[k];
    if (s->grp[k] && s->grp[k] != s->comm && !dup) wh_comm_destroy(s->grp[k]);
    s->grp[k] = NULL;
  }
}

wh_status wh_session_comm_stats(wh_session *s, wh_comm_stats *out, int reset) {
  if (!s || !out || out->struct_size > sizeof *out || out->struct_size < sizeof(size_t)) return WH_ERR_INVALID_ARGUMENT;
  double fb = 0, fe = 0;
  wh__fusion_times(s->fusion, &fb, &fe);
  wh_comm_stats r = {out->struct_size, s->cs_busy + fb - s->cs_fusion_busy, s->cs_exposed + fe - s->cs_fusion_exposed,
                     s->cs_ops};
  memcpy(out, &r, out->struct_size);
  if (reset) {
    s->cs_busy = s->cs_exposed = 0, s->cs_ops = 0;
    s->cs_fusion_busy = fb, s->cs_fusion_exposed = fe;
  }
  return WH_OK;
}
