/* zero.c - ZeRO-1 for data-parallel sessions: optimizer state sharded over the replicas.
 * Every parameter is cut into one contiguous shard per rank (equal, the last ones shorter). The
 * accumulated gradients are reduce-scattered the moment backward finishes them (each rank keeps
 * the sum of its shard), the clipping coefficient comes from the shards' sums of squares, each
 * rank updates its shard of every parameter with its shard of the state, and the parameters are
 * all-gathered back whole. Optimizer state memory falls to 1/R. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../base/ctx.h"
#include "session_impl.h"

typedef struct {
  int node;          /* the update node */
  int32_t param, grad;
  int64_t numel, chunk, lo, hi; /* shard of this rank: [lo, hi) */
  float *shard;      /* this rank's reduced gradient shard (chunk floats) */
  wh_request *req;
  int same_as;       /* another entry whose parameter has the very same gradient value, or -1 */
} zparam;

struct wh__zero {
  int R, me;
  zparam *p;
  int np;
  int32_t *of_grad;  /* gradient value -> index in p, -1 */
  int clip_node;     /* the global-norm clipping node, -1 */
  size_t *counts;    /* per rank, scratch for the all-gathers */
};

static int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

void wh__zero_destroy(wh_session *s) {
  struct wh__zero *z = s->zero;
  if (!z) return;
  for (int i = 0; i < z->np; i++) {
    if (z->p[i].req) wh_request_wait(z->p[i].req);
    free(z->p[i].shard);
  }
  free(z->p), free(z->of_grad), free(z->counts);
  free(z);
  s->zero = NULL;
}

wh_status wh__zero_create(wh_session *s) {
  const wh__program *pg = &s->prog;
  struct wh__zero *z = calloc(1, sizeof *z);
  if (!z) return WH_ERR_OUT_OF_MEMORY;
  s->zero = z;
  z->R = wh_comm_size(s->dpc);
  z->me = wh_comm_rank(s->dpc);
  z->clip_node = -1;
  z->p = calloc((size_t)pg->n_nodes + 1, sizeof(zparam));
  z->of_grad = malloc(sizeof(int32_t) * (size_t)(s->n + 1));
  z->counts = malloc(sizeof(size_t) * (size_t)z->R);
  if (!z->p || !z->of_grad || !z->counts) return WH_ERR_OUT_OF_MEMORY;
  for (int v = 0; v < s->n; v++) z->of_grad[v] = -1;
  for (int i = 0; i < pg->n_nodes; i++) {
    const wh__node *n = &pg->nodes[i];
    if (n->op == WH_OP_GLOBAL_NORM_CLIP) z->clip_node = i;
    if (n->op != WH_OP_SGD_UPDATE && n->op != WH_OP_ADAMW_UPDATE) continue;
    zparam *q = &z->p[z->np++]; /* counted at once: destroy frees what a failure leaves */
    q->node = i;
    q->same_as = -1;
    q->param = n->in[0];
    q->grad = n->in[1];
    q->numel = s->bytes[q->param] / (int64_t)sizeof(float);
    q->chunk = cdiv(q->numel, z->R);
    if (q->chunk < 1) q->chunk = 1;
    q->lo = q->chunk * z->me < q->numel ? q->chunk * z->me : q->numel;
    q->hi = q->lo + q->chunk < q->numel ? q->lo + q->chunk : q->numel;
    if (s->grad_of_param[q->grad] < 0 || !s->acc[q->grad])
      return wh__session_fail(s, WH_ERR_UNSUPPORTED, "wh_session_create: ZeRO-1: the gradient of '%s' is not a "
                              "node's output", wh_value_name(s->g, q->param));
    if (!(q->shard = calloc((size_t)q->chunk, sizeof(float)))) return WH_ERR_OUT_OF_MEMORY;
    if (z->of_grad[q->grad] >= 0) {
      /* two parameters with one gradient value (w = p1 + p2): one reduce-scatter serves both */
      q->same_as = z->of_grad[q->grad];
    } else {
      /* the accumulation buffer is padded to R equal blocks for the reduce-scatter */
      float *acc = realloc(s->acc[q->grad], sizeof(float) * (size_t)(q->chunk * z->R));
      if (!acc) return WH_ERR_OUT_OF_MEMORY;
      memset(acc, 0, sizeof(float) * (size_t)(q->chunk * z->R));
      s->acc[q->grad] = acc;
      z->of_grad[q->grad] = z->np - 1;
    }
    /* the state of this update (moments, momentum) keeps this rank's shard only */
    for (int k = 2; k < n->n_in; k++) {
      int32_t v = n->in[k];
      if (s->prog.values[v].role != WH_ROLE_STATE) continue;
      free(s->own[v]);
      if (!(s->own[v] = calloc((size_t)q->chunk, sizeof(float)))) return WH_ERR_OUT_OF_MEMORY;
      s->ptr[v] = s->own[v];
      s->bytes[v] = (int64_t)sizeof(float) * (q->hi - q->lo);
    }
  }
  return WH_OK;
}

wh_status wh__zero_start(wh_session *s, int32_t grad) {
  struct wh__zero *z = s->zero;
  int i = z->of_grad[grad];
  if (i < 0) return WH_OK;
  zparam *q = &z->p[i];
  wh_status st = wh_comm_ireduce_scatter(s->dpc, s->acc[grad], q->shard, (size_t)q->chunk, WH_F32, WH_REDUCE_SUM,
                                         &q->req);
  if (st != WH_OK) return wh__session_fail(s, st, "wh_session_run: ZeRO-1 reduce-scatter: %s", wh_last_error(s->ctx));
  return WH_OK;
}

wh_status wh__zero_wait(wh_session *s) {
  struct wh__zero *z = s->zero;
  wh_status first = WH_OK;
  for (int i = 0; i < z->np; i++) {
    if (!z->p[i].req) continue;
    wh_status st = wh_request_wait(z->p[i].req);
    z->p[i].req = NULL;
    if (st != WH_OK && first == WH_OK) first = st;
  }
  if (first != WH_OK)
    return wh__session_fail(s, first, "wh_session_run: ZeRO-1 reduce-scatter: %s", wh_last_error(s->ctx));
  for (int i = 0; i < z->np; i++)
    if (z->p[i].same_as >= 0) memcpy(z->p[i].shard, z->p[z->p[i].same_as].shard, sizeof(float) * (size_t)z->p[i].chunk);
  /* only shards of the summed gradients exist: the gradient values are not this run's */
  for (int v = 0; v < s->n; v++)
    if (s->grad_of_param[v] >= 0) s->stamp[v] = -1;
  return WH_OK;
}

/* Clipping from the shards, the update of this rank's shard, then every parameter whole again. */
wh_status wh__zero_update(wh_session *s) {
  struct wh__zero *z = s->zero;
  const wh__program *pg = &s->prog;
  wh_status st;
  if (z->clip_node >= 0) {
    const wh__node *cn = &pg->nodes[z->clip_node];
    double total = 0;
    for (int i = 0; i < z->np; i++)
      for (int64_t e = 0; e < z->p[i].hi - z->p[i].lo; e++) total += (double)z->p[i].shard[e] * z->p[i].shard[e];
    if ((st = wh_comm_allreduce(s->dpc, NULL, &total, 1, WH_F64, WH_REDUCE_SUM)) != WH_OK)
      return wh__session_fail(s, st, "wh_session_run: ZeRO-1 gradient norm: %s", wh_last_error(s->ctx));
    double coef = cn->fa[0] / (sqrt(total) + 1e-6);
    int32_t out = cn->out;
    if (!s->ptr[out]) s->ptr[out] = s->ptr[wh__session_root(s, out)];
    *(float *)s->ptr[out] = (float)(coef < 1.0 ? coef : 1.0);
    s->stamp[out] = s->runs;
  }
  for (int i = 0; i < z->np; i++) {
    zparam *q = &z->p[i];
    const wh__node *n = &pg->nodes[q->node];
    wh__tensor t[8];
    int64_t len = q->hi - q->lo;
    for (int k = 0; k < n->n_in && k < 8; k++) {
      int32_t v = n->in[k];
      t[k].dtype = WH_F32;
      t[k].ndim = 1;
      if (k == 0) t[k].data = (float *)s->ptr[v] + q->lo;
      else if (k == 1) t[k].data = q->shard;
      else t[k].data = s->ptr[v] ? s->ptr[v] : s->ptr[wh__session_root(s, v)];
      int scalar = s->prog.values[v].role != WH_ROLE_STATE && k > 1; /* the clipping coefficient */
      t[k].d[0] = t[k].numel = scalar ? 1 : len;
    }
    s->kerr[0] = 0;
    if (len > 0 && (st = wh__cpu_kernels[n->op](&s->ex, n, t, NULL)) != WH_OK)
      return wh__session_fail(s, st, "wh_session_run: ZeRO-1 update of '%s': %s", wh_value_name(s->g, q->param), s->kerr);
  }
  for (int i = 0; i < z->np; i++) {
    zparam *q = &z->p[i];
    for (int r = 0; r < z->R; r++) {
      int64_t lo = q->chunk * r < q->numel ? q->chunk * r : q->numel;
      int64_t hi = lo + q->chunk < q->numel ? lo + q->chunk : q->numel;
      z->counts[r] = (size_t)(hi - lo);
    }
    if ((st = wh_comm_allgather(s->dpc, NULL, s->ptr[q->param], 0, z->counts, WH_F32)) != WH_OK)
      return wh__session_fail(s, st, "wh_session_run: ZeRO-1 parameter all-gather of '%s': %s",
                              wh_value_name(s->g, q->param), wh_last_error(s->ctx));
  }
  return WH_OK;
}
