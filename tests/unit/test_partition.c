/* test_partition.c - the partition layer on whole plans, every rank's Program built in one process:
 * the reduction nodes each layout needs, ZeRO-1's shards, and for pipelines that every send has
 * its receive and that the ranks' schedules, run together, never wait on each other forever. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/runner.h"
#include "src/partition/program.h"
#include "whale.h"

static wh_ctx *ctx;

enum { B = 24, IN = 12, H = 16, OUT = 5, LAYERS = 4, MAX_RANKS = 8 };

typedef struct {
  wh_graph *g;
  int n_params;
} model;

/* An MLP of LAYERS hidden layers, AdamW with clipping; tied: the first layer's weight read again
 * by the last layer (a parameter two stages share). */
static model build(int tied) {
  model m = {NULL, 0};
  wh_graph_create(ctx, &m.g);
  wh_graph *g = m.g;
  wh_value x = wh_input(g, "x", WH_F32, 2, (int64_t[]){WH_BATCH, IN});
  wh_value y = wh_input(g, "y", WH_I32, 1, (int64_t[]){WH_BATCH});
  wh_value w0 = wh_param(g, "w0", WH_F32, 2, (int64_t[]){H, IN}, WH_INIT(WH_INIT_NORMAL, 0, 0.1f, 1));
  wh_value h = wh_tanh(g, wh_matmul(g, x, w0, 0, 1));
  m.n_params = 1;
  for (int l = 0; l < LAYERS; l++) {
    char nm[16];
    snprintf(nm, sizeof nm, "h%d", l);
    wh_value w = wh_param(g, nm, WH_F32, 2, (int64_t[]){H, H}, WH_INIT(WH_INIT_NORMAL, 0, 0.1f, 2 + (uint64_t)l));
    h = wh_relu(g, wh_matmul(g, h, w, 0, 1));
    m.n_params++;
  }
  if (tied) h = wh_add(g, h, wh_reshape(g, wh_sum(g, w0, 1, (int[]){1}, 0), 1, (int64_t[]){H}));
  wh_value wo = wh_param(g, "wo", WH_F32, 2, (int64_t[]){OUT, H}, WH_INIT(WH_INIT_NORMAL, 0, 0.1f, 9));
  m.n_params++;
  wh_value loss = wh_cross_entropy(g, wh_matmul(g, h, wo, 0, 1), y);
  wh_backward(g, loss);
  wh_adamw_options ao = WH_ADAMW_OPTIONS_INIT;
  ao.clip_norm = 1.0;
  wh_optimizer_adamw(g, &ao);
  EXPECT(wh_graph_status(g) == WH_OK, "model: %s", wh_graph_error(g));
  return m;
}

typedef struct {
  wh__program p[MAX_RANKS];
  int n;
} world;

/* Every element of every parameter and optimizer state has exactly one writer among the ranks
 * (what a checkpoint of the whole state relies on). */
static int writers_tile(const world *w, const model *m, char *why, size_t cap) {
  const wh_graph *g = m->g;
  for (int v = 0; v < g->n_values; v++) {
    if (g->values[v].role != WH_ROLE_PARAM && g->values[v].role != WH_ROLE_STATE) continue;
    const wh__shape *sh = &g->values[v].shape;
    int64_t numel = wh__numel(sh, 1);
    int *seen = calloc((size_t)numel + 1, sizeof(int));
    for (int r = 0; r < w->n; r++) {
      wh__hold h = wh__program_hold(&w->p[r], g, v);
      if (!h.writer) continue;
      if (h.kind == WH_HOLD_WHOLE || h.kind == WH_HOLD_RANGE) {
        int64_t lo = h.kind == WH_HOLD_WHOLE ? 0 : h.lo, hi = h.kind == WH_HOLD_WHOLE ? numel : h.hi;
        for (int64_t e = lo; e < hi; e++) seen[e]++;
      } else if (h.kind == WH_HOLD_SPLIT) {
        int64_t outer = 1, inner = 1, d = sh->d[h.dim];
        for (int k = 0; k < h.dim; k++) outer *= sh->d[k];
        for (int k = h.dim + 1; k < sh->ndim; k++) inner *= sh->d[k];
        int64_t per = d / h.groups / h.parts, ld = per * h.groups;
        for (int64_t f = h.lo; f < h.hi; f++) { /* local element f of the part: [outer, groups * per, inner] */
          int64_t i = f % inner, j = f / inner % ld, o = f / inner / ld, gi = j / per;
          seen[(o * d + (gi * h.parts + h.index) * per + j % per) * inner + i]++;
        }
        (void)outer;
      }
    }
    int64_t bad = -1;
    for (int64_t e = 0; e < numel && bad < 0; e++)
      if (seen[e] != 1) bad = e;
    if (bad >= 0) snprintf(why, cap, "'%s' element %lld has %d writers", wh_value_name((wh_graph *)g, v), (long long)bad, seen[bad]);
    free(seen);
    if (bad >= 0) return 0;
  }
  return 1;
}

static int partition_all(const model *m, int n, const wh_plan_layout *l, world *w, int det) {
  wh_cluster *c;
  wh_plan *pl = NULL;
  wh_cluster_create(ctx, &c);
  wh_cluster_add(c, "CPU", 0, n);
  wh_status st = wh_plan_create_pinned(ctx, m->g, c, B, l, &pl);
  EXPECT(st == WH_OK, "pinned plan on %d ranks: %s", n, wh_last_error(ctx));
  w->n = 0;
  for (int r = 0; st == WH_OK && r < n; r++) {
    char msg[512];
    st = wh__partition(m->g, pl, r, n, 0, det, 0, WH_F32, &w->p[r], msg, sizeof msg);
    EXPECT(st == WH_OK, "partition of rank %d of %d: %s", r, n, msg);
    if (st == WH_OK) w->n++;
  }
  char why[256] = "";
  if (st == WH_OK)
    EXPECT(writers_tile(w, m, why, sizeof why), "%d ranks (%d stages, tp %d, zero1 %d): one writer per element: %s", n,
           l->stages, l->tp, l->zero1, why);
  wh_plan_destroy(pl);
  wh_cluster_destroy(c);
  return st == WH_OK;
}

static void free_all(world *w) {
  for (int r = 0; r < w->n; r++) wh__program_free(&w->p[r]);
  w->n = 0;
}

static int count_op(const wh__program *p, int op) {
  int k = 0;
  for (int i = 0; i < p->n_nodes; i++) k += p->nodes[i].op == op;
  return k;
}

/* Nodes of op in the parts of micro-batch mb (-1: once per step). */
static int count_in_parts(const wh__program *p, int op, int mb) {
  int k = 0;
  for (int j = 0; j < p->n_parts; j++)
    for (int q = 0; p->parts[j].mb == mb && q < p->parts[j].n; q++) k += p->nodes[p->order[p->parts[j].first + q]].op == op;
  return k;
}

/* Every overlapped all-reduce is started, then waited for before its sum is read, in every part
 * that runs it, and something runs in between in at least one of them (the point of starting it early). */
static int starts_waited(const wh__program *p, int need_between) {
  int between = 0;
  for (int j = 0; j < p->n_parts; j++) {
    const wh__part *pt = &p->parts[j];
    for (int q = 0; q < pt->n; q++) {
      const wh__node *st = &p->nodes[p->order[pt->first + q]];
      if (st->op != WH_OP_TP_ALLREDUCE_START) continue;
      int waited = 0;
      for (int k = q + 1; k < pt->n && !waited; k++) {
        const wh__node *nd = &p->nodes[p->order[pt->first + k]];
        if (nd->op == WH_OP_TP_WAIT && nd->in[0] == st->out) waited = 1, between |= k > q + 1;
        for (int i = 0; !waited && i < nd->n_in; i++)
          if (nd->in[i] == st->out) return 0; /* read before the wait */
      }
      if (!waited) return 0;
    }
  }
  return between || !need_between;
}

static int runs_in(const wh__node *n, int eval) { return !eval || n->phase == WH_PHASE_FORWARD; }

/* Run every rank's schedule together: a send posts its message (rank, peer, tag, bytes), a receive
 * waits for the matching one. Returns 1 when every rank finished and every message was taken. */
static int simulate(const world *w, int eval, char *why, size_t cap) {
  typedef struct {
    int from, to, tag, taken;
    int64_t bytes;
  } msg;
  int n = w->n, cap_m = 4096, nm = 0;
  msg *ms = calloc((size_t)cap_m, sizeof(msg));
  int part[MAX_RANKS] = {0}, pos[MAX_RANKS] = {0}, done = 0;
  for (int progress = 1; progress && done < n;) {
    progress = 0;
    done = 0;
    for (int r = 0; r < n; r++) {
      const wh__program *p = &w->p[r];
      for (;;) {
        if (part[r] == p->n_parts) {
          done++;
          break;
        }
        const wh__part *pt = &p->parts[part[r]];
        if (pos[r] == pt->n) {
          part[r]++, pos[r] = 0;
          continue;
        }
        const wh__node *nd = &p->nodes[p->order[pt->first + pos[r]]];
        if (!runs_in(nd, eval)) {
          pos[r]++;
          continue;
        }
        if (nd->op == WH_OP_SEND || nd->op == WH_OP_RECV) {
          int tag = (int)(nd->ia[2] + (nd->ia[3] ? pt->mb : 0)), peer = (int)nd->ia[1];
          int32_t v = nd->op == WH_OP_SEND ? nd->in[0] : nd->out;
          /* the elements it moves: rows of a batch, or all of it at this rank's batch */
          int64_t bytes = nd->n_ia >= 7 && nd->ia[6] >= 0 ? wh__numel(&p->values[v].shape, 1) * (nd->ia[6] - nd->ia[5])
                                                         : wh__numel(&p->values[v].shape, p->place.batch);
          if (nd->op == WH_OP_SEND) {
            if (nm == cap_m) break;
            ms[nm++] = (msg){r, peer, tag, 0, bytes};
          } else {
            int found = -1;
            for (int k = 0; k < nm && found < 0; k++)
              if (!ms[k].taken && ms[k].from == peer && ms[k].to == r && ms[k].tag == tag) found = k;
            if (found < 0) break; /* waits */
            if (ms[found].bytes != bytes) {
              snprintf(why, cap, "rank %d receives %lld elements with tag %d from rank %d, which sent %lld", r,
                       (long long)bytes, tag, peer, (long long)ms[found].bytes);
              free(ms);
              return 0;
            }
            ms[found].taken = 1;
          }
        }
        pos[r]++;
        progress = 1;
      }
    }
  }
  int left = 0;
  for (int k = 0; k < nm; k++) left += !ms[k].taken;
  if (done < n) {
    for (int r = 0; r < n; r++)
      if (part[r] < w->p[r].n_parts) {
        snprintf(why, cap, "deadlock: rank %d waits in part %d node %d", r, part[r], pos[r]);
        break;
      }
  } else if (left) {
    snprintf(why, cap, "%d messages sent and never received", left);
  }
  free(ms);
  return done == n && !left;
}

static void single(const void *arg) {
  (void)arg;
  model m = build(0);
  wh__program p;
  char msg[256];
  EXPECT(wh__partition(m.g, NULL, 0, 1, 0, 0, 0, WH_F32, &p, msg, sizeof msg) == WH_OK, "one process: %s", msg);
  int runtime = 0;
  for (int i = 0; i < p.n_nodes; i++) runtime += wh__op_is_runtime(p.nodes[i].op);
  EXPECT(p.n_parts == 1 && p.parts[0].n == p.n_nodes && p.n_nodes == wh_graph_num_nodes(m.g) && !runtime &&
             !p.distributed && p.n_slots == 1,
         "one process: one part of the graph's %d nodes, no communication (%d parts, %d nodes, %d runtime)",
         wh_graph_num_nodes(m.g), p.n_parts, p.n_nodes, runtime);
  wh__program_free(&p);
  wh_graph_destroy(m.g);
}

static void data_parallel(const void *arg) {
  (void)arg;
  model m = build(0);
  world w;
  wh_plan_layout l = WH_PLAN_LAYOUT_INIT;
  l.micro_batches = 3;
  if (partition_all(&m, 2, &l, &w, 0)) {
    for (int r = 0; r < 2; r++) {
      const wh__program *p = &w.p[r];
      EXPECT(p->n_parts == 4 && count_op(p, WH_OP_DP_REDUCE_START) == m.n_params &&
                 count_in_parts(p, WH_OP_DP_REDUCE_START, 2) == m.n_params &&
                 count_in_parts(p, WH_OP_DP_REDUCE_START, 0) == 0 && count_in_parts(p, WH_OP_GRAD_SET, -1) == m.n_params &&
                 count_in_parts(p, WH_OP_DP_REDUCE_WAIT, -1) == 1 && count_in_parts(p, WH_OP_LOSS_REDUCE, -1) == 1 &&
                 count_in_parts(p, WH_OP_ADAMW_UPDATE, -1) == m.n_params && count_in_parts(p, WH_OP_LOSS_ACC, 1) == 1,
             "DP 2, 3 micro-batches, rank %d: reductions started in the last micro-batch, waited once, %d updates", r,
             count_in_parts(p, WH_OP_ADAMW_UPDATE, -1));
      /* the first micro-batch sets each accumulator, the later ones add */
      int first = 0, later = 0;
      for (int i = 0; i < p->n_nodes; i++)
        if (p->nodes[i].op == WH_OP_GRAD_ACC) first += p->nodes[i].ia[1] == 1, later += p->nodes[i].ia[1] == 0;
      EXPECT(first == m.n_params && later == m.n_params, "rank %d: %d first and %d later accumulations", r, first, later);
    }
    free_all(&w);
  }
  /* a replica without rows computes nothing, adds zeros and still joins every reduction */
  int64_t shares[2] = {0, B};
  l.micro_batches = 1;
  l.shares = shares;
  if (partition_all(&m, 2, &l, &w, 0)) {
    const wh__program *p = &w.p[0];
    EXPECT(count_op(p, WH_OP_MATMUL) == 0 && count_op(p, WH_OP_ZERO) == m.n_params &&
               count_op(p, WH_OP_DP_REDUCE_START) == m.n_params && p->place.share == 0,
           "rank 0 without rows: no compute, %d zero fills, %d reductions", count_op(p, WH_OP_ZERO),
           count_op(p, WH_OP_DP_REDUCE_START));
    free_all(&w);
  }
  l.shares = NULL;
  /* the deterministic mode gathers and sums in rank order after backward */
  if (partition_all(&m, 2, &l, &w, 1)) {
    EXPECT(count_op(&w.p[1], WH_OP_DET_REDUCE) == m.n_params && count_op(&w.p[1], WH_OP_DP_REDUCE_START) == 0 &&
               count_in_parts(&w.p[1], WH_OP_DET_REDUCE, -1) == m.n_params,
           "deterministic: %d rank-ordered reductions", count_op(&w.p[1], WH_OP_DET_REDUCE));
    free_all(&w);
  }
  /* ZeRO-1: a reduce-scatter per gradient, each rank's shard of the state, the updates on shards */
  l.zero1 = 1;
  if (partition_all(&m, 3, &l, &w, 0)) {
    int64_t state = 0, whole = 0;
    for (int r = 0; r < 3; r++) {
      const wh__program *p = &w.p[r];
      EXPECT(count_op(p, WH_OP_ZERO_RS_START) == m.n_params && count_op(p, WH_OP_ZERO_UPDATE) == m.n_params &&
                 count_op(p, WH_OP_ZERO_ALLGATHER) == m.n_params && count_op(p, WH_OP_ZERO_NORM_CLIP) == 1 &&
                 count_op(p, WH_OP_ADAMW_UPDATE) == 0 && count_op(p, WH_OP_GRAD_SET) == 0,
             "ZeRO-1 rank %d: reduce-scatters, shard updates and all-gathers", r);
      for (int v = 0; v < p->n_graph_values; v++) {
        if (p->values[v].role != WH_ROLE_STATE) continue;
        state += wh__numel(&p->values[v].shape, 1);
        if (r == 0) whole += wh__numel(&m.g->values[v].shape, 1);
      }
    }
    EXPECT(state == whole && whole > 0, "ZeRO-1: the ranks' state shards add up to the whole state (%lld of %lld)",
           (long long)state, (long long)whole);
    free_all(&w);
  }
  wh_graph_destroy(m.g);
}

static void pipelines(const void *arg) {
  (void)arg;
  model m = build(1);
  world w;
  char why[256] = "";
  for (int shape = 0; shape < 4; shape++) {
    wh_plan_layout l = WH_PLAN_LAYOUT_INIT;
    int n = shape == 3 ? 4 : shape == 2 ? 3 : 2;
    l.stages = shape == 3 ? 2 : n;
    l.micro_batches = 4;
    l.schedule = shape == 1 ? WH_SCHEDULE_GPIPE : WH_SCHEDULE_1F1B;
    const char *name = shape == 0 ? "PP 2 1F1B" : shape == 1 ? "PP 2 GPipe" : shape == 2 ? "PP 3 1F1B" : "DP 2 x PP 2";
    if (!partition_all(&m, n, &l, &w, 0)) continue;
    int sends = 0, recvs = 0, splits_ok = 1, accs = 0;
    for (int r = 0; r < n; r++) {
      sends += count_op(&w.p[r], WH_OP_SEND), recvs += count_op(&w.p[r], WH_OP_RECV);
      accs += count_op(&w.p[r], WH_OP_ALLREDUCE);
      splits_ok &= w.p[r].n_splits == (shape == 3 ? 2 : 0) && w.p[r].n_slots == 4 &&
                   w.p[r].n_parts == 2 * l.micro_batches + 1;
    }
    EXPECT(sends > 0 && recvs > 0 && splits_ok && (shape == 3) == (accs > 0),
           "%s: %d sends, %d receives, stage replicas all-reduce %s", name, sends, recvs, accs ? "yes" : "no");
    EXPECT(simulate(&w, 0, why, sizeof why), "%s: the ranks' training schedules run together: %s", name, why);
    EXPECT(simulate(&w, 1, why, sizeof why), "%s: forward-only runs together: %s", name, why);
    /* 1F1B: stage 0 of 2 runs one forward ahead, then alternates */
    if (shape == 0) {
      const wh__program *p = &w.p[0];
      static const int want[8][2] = {{0, 0}, {1, 0}, {0, 1}, {2, 0}, {1, 1}, {3, 0}, {2, 1}, {3, 1}};
      int ok = 1;
      for (int j = 0; j < 8; j++) ok &= p->parts[j].mb == want[j][0] && p->parts[j].backward == want[j][1];
      EXPECT(ok && p->parts[8].mb == -1, "1F1B order on stage 0: F0 F1 B0 F2 B1 F3 B2 B3, then the step's end");
    }
    free_all(&w);
  }
  /* the stages give their replicas different rows (and one none): activations move as the rows two
   * replicas have in common */
  static const int64_t crossed[2][4] = {{2, 4, 4, 2}, {0, 6, 3, 3}};
  model untied = build(0);
  for (int c = 0; c < 2; c++) {
    wh_plan_layout l = WH_PLAN_LAYOUT_INIT;
    l.stages = 2, l.micro_batches = 4, l.shares = crossed[c];
    if (!partition_all(&untied, 4, &l, &w, 0)) continue;
    int sliced = 0;
    for (int r = 0; r < 4; r++)
      for (int i = 0; i < w.p[r].n_nodes; i++)
        sliced += w.p[r].nodes[i].op == WH_OP_SEND && w.p[r].nodes[i].n_ia >= 7 && w.p[r].nodes[i].ia[6] >= 0 &&
                  w.p[r].nodes[i].ia[6] - w.p[r].nodes[i].ia[5] < w.p[r].place.share;
    EXPECT(sliced > 0 && simulate(&w, 0, why, sizeof why) && simulate(&w, 1, why, sizeof why),
           "DP 2 x PP 2, shares %lld/%lld then %lld/%lld: %d sends of part of a replica's rows; the schedules run "
           "together: %s", (long long)crossed[c][0], (long long)crossed[c][1], (long long)crossed[c][2],
           (long long)crossed[c][3], sliced, why);
    free_all(&w);
  }
  wh_graph_destroy(untied.g);
  {
    /* the tied weight's gradient crosses the stages without a batch axis: every rank refuses alike */
    wh_plan_layout l = WH_PLAN_LAYOUT_INIT;
    l.stages = 2, l.micro_batches = 4, l.shares = crossed[0];
    wh_cluster *c;
    wh_plan *pl;
    wh_cluster_create(ctx, &c);
    wh_cluster_add(c, "CPU", 0, 4);
    CHECK(wh_plan_create_pinned(ctx, m.g, c, B, &l, &pl));
    int refused = 0;
    char first[512] = "", msg[512];
    for (int r = 0; r < 4; r++) {
      wh__program p;
      if (wh__partition(m.g, pl, r, 4, 0, 0, 0, WH_F32, &p, msg, sizeof msg) == WH_OK) {
        wh__program_free(&p);
        continue;
      }
      refused += r == 0 ? (snprintf(first, sizeof first, "%s", msg), 1) : strcmp(first, msg) == 0;
    }
    EXPECT(refused == 4 && strstr(first, "same shares"), "crossed shares with a tied weight: %d of 4 ranks refuse alike: %s",
           refused, first);
    wh_plan_destroy(pl);
    wh_cluster_destroy(c);
  }
  /* a broken schedule is caught: drop rank 1's first receive */
  wh_plan_layout l = WH_PLAN_LAYOUT_INIT;
  l.stages = 2;
  l.micro_batches = 2;
  if (partition_all(&m, 2, &l, &w, 0)) {
    wh__program *p = &w.p[1];
    for (int i = 0; i < p->n_order; i++)
      if (p->nodes[p->order[i]].op == WH_OP_RECV) {
        p->nodes[p->order[i]].ia[2] += 1000;
        break;
      }
    EXPECT(!simulate(&w, 0, why, sizeof why) && strstr(why, "deadlock"), "a mismatched tag is a deadlock: %s", why);
    free_all(&w);
  }
  wh_graph_destroy(m.g);
}

static void sharding(const void *arg) {
  (void)arg;
  model m = build(0);
  world w;
  wh_plan_layout l = WH_PLAN_LAYOUT_INIT;
  l.tp = 2;
  if (partition_all(&m, 4, &l, &w, 0)) {
    /* 2 replicas of tp 2: the replicas' groups, then the shards' groups, on every rank alike */
    int ok = 1;
    for (int r = 0; r < 4; r++) {
      const wh__program *p = &w.p[r];
      ok &= p->n_splits == 4 && p->splits[0].group == WH_GROUP_TP && p->splits[2].group == WH_GROUP_DP &&
            p->splits[1].ranks[0] == 2 && p->splits[3].ranks[1] == 3 && p->lay != NULL &&
            p->place.shard == r % 2 && p->place.replica == r / 2 && count_op(p, WH_OP_TP_ALLREDUCE_START) > 0 &&
            starts_waited(p, 1);
    }
    EXPECT(ok, "DP 2 x TP 2: groups, places and the sharding rewrite on every rank");
    free_all(&w);
  }
  /* ZeRO-1 and the deterministic reduction over the shards' replicas */
  l.zero1 = 1;
  if (partition_all(&m, 4, &l, &w, 0)) {
    EXPECT(count_op(&w.p[3], WH_OP_ZERO_RS_START) == m.n_params && count_op(&w.p[3], WH_OP_ZERO_NORM_CLIP) == 1 &&
               count_op(&w.p[3], WH_OP_TP_NORM_CLIP) == 0,
           "DP 2 x TP 2 with ZeRO-1: reduce-scatters of the shards, clipping from them");
    free_all(&w);
  }
  l.zero1 = 0;
  if (partition_all(&m, 4, &l, &w, 1)) {
    EXPECT(count_op(&w.p[1], WH_OP_DET_REDUCE) == m.n_params, "DP 2 x TP 2 deterministic: rank-ordered reductions");
    free_all(&w);
  }
  wh_graph_destroy(m.g);
  /* sharding inside pipeline stages: each shard talks to the same shard of the next stage */
  m = build(1);
  char why[256] = "";
  for (int dp = 1; dp <= 2; dp++) {
    wh_plan_layout lp = WH_PLAN_LAYOUT_INIT;
    lp.stages = 2, lp.tp = 2, lp.micro_batches = 4;
    int n = 4 * dp;
    if (!partition_all(&m, n, &lp, &w, 0)) continue;
    int ok = 1;
    for (int r = 0; r < n; r++) {
      const wh__program *p = &w.p[r];
      ok &= p->place.tp == 2 && p->place.stage == r / (2 * dp) && p->place.shard == r % 2 &&
            count_op(p, WH_OP_TP_ALLREDUCE_START) > 0 && starts_waited(p, 0) && p->n_splits == 2 * dp + (dp > 1 ? 4 : 0);
      for (int i = 0; i < p->n_nodes; i++)
        if (p->nodes[i].op == WH_OP_SEND || p->nodes[i].op == WH_OP_RECV) ok &= p->nodes[i].ia[1] % 2 == r % 2;
    }
    EXPECT(ok, "DP %d x PP 2 x TP 2: places, groups, and transfers between equal shards", dp);
    EXPECT(simulate(&w, 0, why, sizeof why), "DP %d x PP 2 x TP 2: the schedules run together: %s", dp, why);
    free_all(&w);
  }
  wh_graph_destroy(m.g);
}

static int setup(int argc, char **argv) {
  (void)argc, (void)argv;
  return wh_ctx_create(&ctx, NULL) != WH_OK;
}

static void teardown(void) { wh_ctx_destroy(ctx); }

static const wt_case cases[] = {
    {"single", single, NULL},
    {"data_parallel", data_parallel, NULL},
    {"pipelines", pipelines, NULL},
    {"sharding", sharding, NULL},
};

int main(int argc, char **argv) {
  const wt_suite suite = {"partition", setup, teardown, NULL, 0};
  return wt_main(&suite, cases, WT_COUNT(cases), argc, argv);
}
