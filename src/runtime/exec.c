/* exec.c - the executor: runs a session's program nodes on the bound pointers (kernel dispatch,
 * per-op timing), and a step of a single-process or data-parallel session. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/clock.h"
#include "../base/ctx.h"
#include "../kernels/cuda/cuda.h"
#include "session_impl.h"

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
  wh__kernel_fn k = s->dev ? wh__ops[n->op].cuda : wh__ops[n->op].cpu;
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
    return wh__session_fail(s, st, "wh_session_run: node %d (%s%s%s, output %s) failed: %s%s%s", i, wh__ops[n->op].name,
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
                    wh_value_name(g, r), i, wh__ops[n->op].name, k);
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

wh_status wh_session_step(wh_session *s) { return wh_session_run(s, WH_RUN_TRAIN); }
