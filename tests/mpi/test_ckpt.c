/* test_ckpt.c - distributed checkpoints: each rank writes its own slices, and any layout loads any
 * other. 10 steps, save, 10 more steps in the same layout equal 20 uninterrupted steps bit for bit
 * (deterministic reduction where data parallel); across layouts (DP4 -> 1 process, DP2 -> PP2,
 * TP2 -> DP2, PP2 -> TP2, ZeRO-1 -> plain, and hybrids) the losses of the last 10 steps and the
 * final parameters and optimizer state equal one process's 20 steps within 1e-6. Final states are
 * compared by loading the checkpoint each run saves at its end into a one-process session. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* mkdtemp */
#endif
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "scaffold.h"

#define HALF (STEPS / 2)
#define TOL 1e-6

typedef struct layout {
  const char *name;
  int ranks; /* the first `ranks` ranks; 0: one process (rank 0 alone) */
  int stages, tp, zero1, micro, det;
} layout;

static const layout ONE = {"1 process", 0, 1, 1, 0, 1, 0};
static const layout DP2 = {"DP2", 2, 1, 1, 0, 1, 1};
static const layout DP4 = {"DP4", 4, 1, 1, 0, 1, 1};
static const layout PP2 = {"PP2", 2, 2, 1, 0, 4, 0};
static const layout TP2 = {"TP2", 2, 1, 2, 0, 1, 0};
static const layout ZERO2 = {"ZeRO-1 x2", 2, 1, 1, 1, 1, 0};
static const layout ZERO3 = {"ZeRO-1 x3", 3, 1, 1, 1, 1, 0};
static const layout ZERO4 = {"ZeRO-1 x4", 4, 1, 1, 1, 1, 0};
static const layout DP2TP2 = {"DP2xTP2", 4, 1, 2, 0, 2, 0};
static const layout PP2DP2 = {"PP2xDP2", 4, 2, 1, 0, 4, 0};
static const layout TP2ZERO = {"DP2xTP2 ZeRO-1", 4, 1, 2, 1, 1, 0};

static char root[128];

/* This rank's communicator for layout L (NULL when it takes no part), made collectively. */
static wh_comm *comm_for(const layout *L, int *member) {
  *member = L->ranks ? wt_rank < L->ranks : wt_rank == 0;
  if (!L->ranks || L->ranks == nranks) return L->ranks ? comm : NULL;
  int ranks[64];
  for (int i = 0; i < L->ranks; i++) ranks[i] = i;
  wh_comm *sub = NULL;
  CHECK(wh_comm_split(comm, L->ranks, ranks, &sub));
  return sub;
}

/* Train steps [first, first + n) in layout L, from the checkpoint in `from` (NULL: from scratch),
 * then save into `to`. Losses into l on the ranks that take part (returns whether this one did). */
static int run(const sc_model *m, const layout *L, const char *from, int first, int n, const char *to, float *l) {
  int member;
  wh_comm *c = comm_for(L, &member);
  if (!member) return 0;
  wh_plan *p = NULL;
  wh_cluster *cl = NULL;
  wh_session_options so = WH_SESSION_OPTIONS_INIT;
  so.batch = B;
  if (L->ranks) {
    wh_plan_layout pl = WH_PLAN_LAYOUT_INIT;
    pl.stages = L->stages, pl.tp = L->tp, pl.zero1 = L->zero1, pl.micro_batches = L->micro;
    pl.schedule = WH_SCHEDULE_1F1B;
    p = sc_pinned(m, L->ranks, &pl, &cl);
    /* the plan's shares throughout: rebalancing by measured speeds moves rows between replicas at
     * moments that depend on timing, and a bitwise repeat needs the same rows every time */
    so.plan = p, so.comm = c, so.deterministic = L->det, so.rebalance = 0;
  }
  wh_session *s;
  CHECK(wh_session_create(ctx, m->g, &so, &s));
  if (from) {
    size_t mb = 0;
    char meta[16];
    CHECK(wh_checkpoint_load(s, from, meta, sizeof meta, &mb));
    EXPECT(wh_session_steps(s) == first && mb == 4 && !memcmp(meta, "cur", 4),
           "%s: resumed at step %lld with %zu bytes of metadata", L->name, (long long)wh_session_steps(s), mb);
  }
  sc_train_steps(m, s, first, n, l);
  if (to) {
    wh_checkpoint_options o = WH_CHECKPOINT_OPTIONS_INIT;
    o.meta = "cur", o.meta_bytes = 4;
    CHECK(wh_checkpoint_save(s, to, &o));
  }
  wh_session_destroy(s);
  wh_plan_destroy(p);
  wh_cluster_destroy(cl);
  if (c && c != comm) wh_comm_destroy(c);
  return 1;
}

/* Parameters and optimizer state (params first, then every parameter's moments) of a checkpoint,
 * loaded into one process; *np floats of parameters, *ns of state. */
static float *state_of(const sc_model *m, const char *dir, size_t *np, size_t *ns) {
  wh_session_options so = WH_SESSION_OPTIONS_INIT;
  so.batch = B;
  wh_session *s;
  CHECK(wh_session_create(ctx, m->g, &so, &s));
  CHECK(wh_checkpoint_load(s, dir, NULL, 0, NULL));
  size_t at = 0, cap = 1 << 16;
  float *buf = malloc(cap);
  static const char *suffix[] = {"", ".adam_m", ".adam_v"};
  for (int k = 0; k < 3; k++) {
    if (k == 1) *np = at / sizeof(float);
    for (int i = 0; i < wh_graph_num_params(m->g); i++) {
      char nm[128];
      snprintf(nm, sizeof nm, "%s%s", wh_value_name(m->g, wh_graph_param(m->g, i)), suffix[k]);
      wh_value v = wh_graph_find(m->g, nm);
      size_t b = wh_session_bytes(s, v);
      if (at + b > cap) buf = realloc(buf, cap = 2 * (at + b));
      CHECK(wh_session_get_param(s, v, (char *)buf + at, b));
      at += b;
    }
  }
  *ns = at / sizeof(float) - *np;
  wh_session_destroy(s);
  return buf;
}

static void remove_root(void) {
  char cmd[256];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", root);
}

/* The run's directory, made by rank 0 and named to all (once); then the case's own under it. */
static void case_root(const char *name) {
  if (!root[0]) {
    int32_t w[sizeof root / 4];
    memset(w, 0, sizeof w);
    if (wt_rank == 0) {
      snprintf((char *)w, sizeof w, "/tmp/wh_ckpt_mpi_XXXXXX");
      if (!mkdtemp((char *)w)) ((char *)w)[0] = 0;
      if (!getenv("WH_TEST_KEEP")) atexit(remove_root); /* kept: to look at the files */
    }
    CHECK(wh_comm_broadcast(comm, w, sizeof w / 4, WH_I32, 0));
    memcpy(root, w, sizeof root);
    root[sizeof root - 1] = 0;
  }
  if (wt_rank == 0) {
    char d[256];
    snprintf(d, sizeof d, "%s/%s", root, name);
    mkdir(d, 0755);
  }
  CHECK(wh_comm_barrier(comm));
}

static void case_dir(char *out, size_t cap, const char *name, const char *sub) {
  snprintf(out, cap, "%s/%s/%s", root, name, sub);
}

typedef struct pair {
  const layout *a, *b;
  sc_kind kind;
  int need; /* ranks of the mpirun it runs in */
} pair;

static double max_rel(const float *a, const float *b, int n) {
  double w = 0;
  for (int i = 0; i < n; i++) w = fmax(w, fabs((double)a[i] - b[i]) / fmax(fabs((double)b[i]), 1e-30));
  return w;
}

static void checkpoint_pair(const void *arg) {
  const pair *q = arg;
  if (nranks != q->need) {
    wt_skip("runs on %d ranks", q->need);
    return;
  }
  char name[96], mid[256], end[256], ref_end[256];
  snprintf(name, sizeof name, "%s %s -> %s", sc_name(q->kind), q->a->name, q->b->name);
  char tag[96];
  snprintf(tag, sizeof tag, "%s", wt_current());
  case_root(tag);
  case_dir(mid, sizeof mid, tag, "at10");
  case_dir(end, sizeof end, tag, "at20");
  case_dir(ref_end, sizeof ref_end, tag, "ref20");
  sc_model m = sc_build(q->kind);
  float l20[STEPS], l10[HALF], lr[HALF];
  int same = q->a == q->b;
  /* the reference: 20 uninterrupted steps in layout a when the layouts are the same, else in one
   * process */
  const layout *ref = same ? q->a : &ONE;
  int has_ref = run(&m, ref, NULL, 0, STEPS, ref_end, l20);
  run(&m, q->a, NULL, 0, HALF, mid, l10);
  int has = run(&m, q->b, mid, HALF, HALF, end, lr);
  CHECK(wh_comm_barrier(comm));
  if (wt_rank == 0) {
    EXPECT(has && has_ref, "%s: rank 0 took no part", name);
    size_t np1, ns1, np2, ns2;
    float *want = state_of(&m, ref_end, &np1, &ns1), *got = state_of(&m, end, &np2, &ns2);
    EXPECT(np1 == np2 && ns1 == ns2, "%s: %zu + %zu floats of parameters and state, the reference %zu + %zu", name, np2,
           ns2, np1, ns1);
    if (same) {
      int bit = !memcmp(l20 + HALF, lr, sizeof lr) && !memcmp(want, got, sizeof(float) * (np1 + ns1));
      EXPECT_SAY(bit, "%-34s 10 + 10 steps = 20 uninterrupted, bit for bit (loss %.5f -> %.5f, %zu parameters, %zu "
                 "state)", name, l10[0], lr[HALF - 1], np1, ns1);
    } else {
      double el = max_rel(lr, l20 + HALF, HALF), ep = sc_rel(got, want, np1), es = sc_rel(got + np1, want + np1, ns1);
      EXPECT_SAY(el <= TOL && ep <= TOL && es <= TOL,
                 "%-34s 10 + 10 steps vs 20 in one process: loss rel err %.2e, parameters %.2e, Adam moments %.2e "
                 "(<= %.0e)", name, el, ep, es, TOL);
    }
    EXPECT(lr[HALF - 1] < l10[0], "%s: did not learn (%g -> %g)", name, l10[0], lr[HALF - 1]);
    free(want), free(got);
  }
  CHECK(wh_comm_barrier(comm));
  wh_graph_destroy(m.g);
}

/* A rank whose slice is missing fails its load, and every rank returns that failure with its
 * message: none goes on training from a half-loaded state. */
static void failure_agreed(const void *arg) {
  (void)arg;
  if (nranks != 2) {
    wt_skip("runs on 2 ranks");
    return;
  }
  case_root(wt_current());
  char mid[256], victim[320];
  case_dir(mid, sizeof mid, wt_current(), "at10");
  sc_model m = sc_build(SC_GPT);
  float l[HALF];
  run(&m, &TP2, NULL, 0, HALF, mid, l);
  if (wt_rank == 0) {
    snprintf(victim, sizeof victim, "%s/step-%08d/rank-00001-of-00002.safetensors", mid, HALF);
    EXPECT(unlink(victim) == 0, "cannot remove %s", victim);
  }
  CHECK(wh_comm_barrier(comm));
  wh_plan_layout pl = WH_PLAN_LAYOUT_INIT;
  pl.tp = 2;
  wh_cluster *cl;
  wh_plan *p = sc_pinned(&m, 2, &pl, &cl);
  wh_session_options so = WH_SESSION_OPTIONS_INIT;
  so.plan = p, so.comm = comm;
  wh_session *s;
  CHECK(wh_session_create(ctx, m.g, &so, &s));
  wh_status st = wh_checkpoint_load(s, mid, NULL, 0, NULL);
  const char *e = wh_last_error(ctx);
  EXPECT_SAY(st == WH_ERR_CORRUPT && strstr(e, "rank-00001-of-00002.safetensors") &&
                 (wt_rank == 1 || strstr(e, "rank 1 failed")),
             "a shard file missing: every rank fails the load, naming the file%s: %s", wt_rank ? "" : " and the rank",
             e);
  sc_destroy(s, p, cl, &m);
}

#define PAIRS(X)                                                                                       \
  X(dp2_same, DP2, DP2, 2) X(pp2_same, PP2, PP2, 2) X(tp2_same, TP2, TP2, 2) X(zero2_same, ZERO2, ZERO2, 2) \
  X(dp2_to_pp2, DP2, PP2, 2) X(tp2_to_dp2, TP2, DP2, 2) X(pp2_to_tp2, PP2, TP2, 2)                      \
  X(zero2_to_one, ZERO2, ONE, 2) X(zero2_to_tp2, ZERO2, TP2, 2) X(zero3_to_dp2, ZERO3, DP2, 3)           \
  X(dp4_same, DP4, DP4, 4) X(dp4_to_one, DP4, ONE, 4) X(dp2tp2_to_pp2dp2, DP2TP2, PP2DP2, 4)            \
  X(tp2zero_to_zero4, TP2ZERO, ZERO4, 4) X(pp2dp2_to_tp2, PP2DP2, TP2, 4)

#define ARGS(nm, a, b, n) {&a, &b, SC_MLP, n}, {&a, &b, SC_GPT, n},
static const pair pairs[] = {PAIRS(ARGS)};
#define CASES(nm, a, b, n) {#nm "_mlp", checkpoint_pair, NULL}, {#nm "_gpt", checkpoint_pair, NULL},
static wt_case cases[] = {PAIRS(CASES){"failure_agreed", failure_agreed, NULL}};

int main(int argc, char **argv) {
  for (int i = 0; i < WT_COUNT(pairs); i++) cases[i].arg = &pairs[i];
  return sc_main("ckpt", cases, WT_COUNT(cases), argc, argv);
}
