/* exec.c - the executor: runs a session's Program, part after part of its schedule (each on its
 * micro-batch's rows and arena slot), a node at a time: kernels through the backend's table, the
 * communication and accumulation nodes through comm_nodes.c. */
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

void *wh__session_data(wh_session *s, int32_t v) {
  if (!s->ptr[v]) s->ptr[v] = s->ptr[wh__session_root(s, v)];
  return s->ptr[v];
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
  if (wh__op_is_runtime(n->op)) {
    free(heap);
    wh_status cs = wh__comm_node_run(s, n);
    if (cs == WH_OK && n->out >= 0) s->stamp[n->out] = s->runs;
    return cs;
  }
  s->kerr[0] = 0;
  wh__kernel_fn k = s->dev ? wh__cuda_kernels[n->op] : wh__cpu_kernels[n->op];
  wh_status st = WH_ERR_UNSUPPORTED;
  /* operator sharding's blocking collectives count as communication the step waits for */
  int coll = n->op == WH_OP_TP_ALLREDUCE || n->op == WH_OP_TP_ALLGATHER || n->op == WH_OP_TP_NORM_CLIP;
  double t0 = s->prof || coll ? wh__now() : 0;
  if (k) st = k(&s->ex, n, inp, n->out >= 0 ? &out : NULL);
  else snprintf(s->kerr, sizeof s->kerr, "no kernel for this op on %s", s->dev ? "CUDA" : "the CPU");
  if (coll) wh__comm_blocked(s, wh__now() - t0);
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

/* Bind the fed inputs for the part's micro-batch: this replica's rows of the global batch (a
 * device copies them in), or, in a single process, what was fed. */
static wh_status bind_feeds(wh_session *s, const wh__part *pt) {
  wh_graph *g = s->g;
  for (int v = 0; v < g->n_values; v++) {
    if (s->prog.values[v].role != WH_ROLE_INPUT) continue;
    if (!s->dist) {
      if (!s->dev || !s->host_feed[v]) continue;
      wh_status st = wh__cuda_copy(s->dev, s->own[v], s->host_feed[v], (size_t)s->bytes[v], WH__H2D);
      if (st != WH_OK) return wh__session_fail(s, st, "wh_session_run: feeding the device: %s", wh__cuda_error(s->dev));
      continue;
    }
    if (!s->global_feed[v]) {
      /* fed whole (no batch axis): every slot reads the caller's buffer */
      if (pt->slot != 0) s->ptr[v] = s->slot_ptr[0][v];
      continue;
    }
    const char *rows = (const char *)s->global_feed[v] + s->ex.row0 * s->row_bytes[v];
    if (!s->dev) {
      s->ptr[v] = (void *)rows;
      continue;
    }
    wh_status st = wh__cuda_copy(s->dev, s->own[v], rows, (size_t)(s->prog.place.share * s->row_bytes[v]), WH__H2D);
    if (st != WH_OK) return wh__session_fail(s, st, "wh_session_run: feeding the device: %s", wh__cuda_error(s->dev));
  }
  return WH_OK;
}

/* Every part of the schedule in order; a part runs the nodes of the mode's phases. */
static wh_status run_parts(wh_session *s, wh_run_mode mode) {
  const wh__program *pg = &s->prog;
  const wh__place *pc = &pg->place;
  for (int j = 0; j < pg->n_parts; j++) {
    const wh__part *pt = &pg->parts[j];
    s->cur_mb = pt->mb;
    s->ptr = s->slot_ptr[pt->mb >= 0 ? pt->slot : 0];
    if (pt->mb >= 0) {
      s->ex.row0 = s->dist ? (int64_t)pt->mb * pc->mb + pc->offset : 0;
      if (pt->feed) {
        wh_status st = bind_feeds(s, pt);
        if (st != WH_OK) return st;
      }
    }
    for (int k = 0; k < pt->n; k++) {
      int i = pg->order[pt->first + k];
      if (!runs_in(&pg->nodes[i], mode)) continue;
      if (s->skip_update && pg->nodes[i].phase == WH_PHASE_UPDATE) continue; /* fp16 overflow: no update */
      wh_status st = wh__session_run_node(s, i);
      /* what is in flight advances while compute goes on */
      if (st == WH_OK && (s->n_inflight || s->n_sends)) st = wh__comm_poll(s);
      if (st != WH_OK) return st;
    }
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
  if (s->rb) {
    wh_status rs = wh__rebalance_apply(s);
    if (rs != WH_OK) return rs;
  }
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
  s->ex.step = s->opt_steps + 1; /* the optimizer's: a step fp16 skipped does not count */
  s->skip_update = 0;
  s->ex.batch = s->batch;
  double t0 = wh__now(), waited0 = s->cs_exposed, fb0 = 0, fe0 = 0;
  if (s->rb) wh__fusion_times(s->fusion, &fb0, &fe0);
  wh_status st = run_parts(s, mode);
  s->ptr = s->slot_ptr[0];
  if (st != WH_OK) {
    if (s->n_sends) { /* the comm's own messages about the sends must not hide the cause */
      char why[1024];
      snprintf(why, sizeof why, "%s", wh_last_error(s->ctx));
      wh__comm_drain(s, 0);
      wh__ctx_set_error(s->ctx, "%s", why);
    }
    return st;
  }
  if (s->dev && (st = wh__cuda_sync(s->dev)) != WH_OK) /* kernels run asynchronously: failures surface here */
    return wh__session_fail(s, st, "wh_session_run: device: %s", wh__cuda_error(s->dev));
  if (mode == WH_RUN_TRAIN) s->steps++, s->opt_steps += !s->skip_update;
  if (mode == WH_RUN_TRAIN && s->rb) {
    /* this rank's compute: the step less what it waited for communicating */
    double fb1 = 0, fe1 = 0;
    wh__fusion_times(s->fusion, &fb1, &fe1);
    double compute = wh__now() - t0 - (s->cs_exposed - waited0) - (fe1 - fe0);
    if ((st = wh__rebalance_step(s, compute > 0 ? compute : 0)) != WH_OK) return st;
  }
  if (s->prof) s->prof_runs++;
  return WH_OK;
}

wh_status wh_session_step(wh_session *s) { return wh_session_run(s, WH_RUN_TRAIN); }
