/* test_hybrid.c - the hybrids: operator sharding inside pipeline stages (PP 2 x TP 2 on 4 ranks,
 * DP 2 x PP 2 x TP 2 on 8), and operator sharding with ZeRO-1 and with the deterministic reduction
 * (DP 2 x TP 2 on 4). Every step's loss and the parameters each rank holds (gathered whole over
 * its replica's shards) equal the one-process run's within 1e-5; the deterministic run is bitwise
 * its one-replica twin running the same rows as micro-batches. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scaffold.h"

/* The parameters this rank's stage holds, gathered whole, against the reference's same ones. Every
 * rank of a replica asks for the same parameters in the same order (the gather is collective). */
static double held_params_err(const sc_model *m, wh_session *s, const float *rp, size_t pb, size_t *nheld) {
  size_t off = 0, held = 0;
  float *mine = malloc(pb), *theirs = malloc(pb);
  *nheld = 0;
  for (int i = 0; i < wh_graph_num_params(m->g); i++) {
    wh_value pv = wh_graph_param(m->g, i);
    size_t b = wh_session_bytes(s, pv);
    if (wh_session_get_param(s, pv, (char *)mine + held, b) == WH_OK) {
      memcpy((char *)theirs + held, (const char *)rp + off, b);
      held += b, (*nheld)++;
    }
    off += b;
  }
  double e = sc_rel(mine, theirs, held / sizeof(float));
  free(mine), free(theirs);
  return e;
}

typedef enum { PP2_TP2, DP2_PP2_TP2, DP2_TP2_ZERO1, DP2_TP2_DET } shape;
typedef struct {
  sc_kind kind;
  shape shape;
} hy_arg;

static void hybrid(const void *arg) {
  const hy_arg *a = arg;
  int n = nranks, need = a->shape == DP2_PP2_TP2 ? 8 : 4;
  if (n != need) {
    wt_skip("this layout runs on %d ranks", need);
    return;
  }
  sc_model m = sc_build(a->kind);
  size_t pb;
  float rl[STEPS], dl[STEPS], *rp = sc_reference(&m, rl, &pb);
  wh_plan_layout l = WH_PLAN_LAYOUT_INIT;
  l.tp = 2;
  l.micro_batches = 4;
  l.schedule = WH_SCHEDULE_1F1B;
  char name[96];
  const char *model = sc_name(a->kind);
  int det = a->shape == DP2_TP2_DET;
  switch (a->shape) {
    case PP2_TP2: l.stages = 2, snprintf(name, sizeof name, "%s PP=2 x TP=2 1F1B", model); break;
    case DP2_PP2_TP2: l.stages = 2, snprintf(name, sizeof name, "%s DP=2 x PP=2 x TP=2 1F1B", model); break;
    case DP2_TP2_ZERO1: l.zero1 = 1, snprintf(name, sizeof name, "%s DP=2 x TP=2, ZeRO-1", model); break;
    case DP2_TP2_DET: l.micro_batches = 1, snprintf(name, sizeof name, "%s DP=2 x TP=2, deterministic", model); break;
  }
  wh_cluster *cl;
  wh_plan *p = sc_pinned(&m, n, &l, &cl);
  wh_session_options so = WH_SESSION_OPTIONS_INIT;
  so.plan = p;
  so.comm = comm;
  so.deterministic = det;
  wh_session *s;
  CHECK(wh_session_create(ctx, m.g, &so, &s));
  char *d = NULL;
  CHECK(wh_session_dump(s, WH_FORMAT_TEXT, &d));
  int staged = l.stages > 1;
  EXPECT(strstr(d, "operator sharding: shard") && (!staged || strstr(d, "pipeline stage")),
         "%s: the dump shows the shard%s:\n%.600s", name, staged ? " and the stage" : "", d);
  if (wt_rank == 0 && getenv("WH_TEST_SHOW_DUMP")) printf("%s, rank 0 program:\n%s\n", name, d);
  wh_free(d);
  sc_train(&m, s, dl, NULL);
  size_t nheld;
  double pe = held_params_err(&m, s, rp, pb, &nheld);
  double worst = 0;
  for (int k = 0; k < STEPS; k++) worst = fmax(worst, fabs((double)dl[k] - rl[k]) / fmax(fabs(rl[k]), 1e-30));
  EXPECT(worst <= 1e-5 && rl[STEPS - 1] < rl[0], "%s: loss differs from one process by %.3g (%g -> %g)", name, worst,
         dl[0], dl[STEPS - 1]);
  EXPECT(pe <= 1e-5 && (staged || nheld == (size_t)wh_graph_num_params(m.g)),
         "%s: the %zu parameters this rank holds differ from one process by %.3g", name, nheld, pe);
  if (wt_rank == 0)
    printf("%-40s loss %.5f -> %.5f  worst step loss rel err %.2e  params rel err %.2e\n", name, rl[0], rl[STEPS - 1],
           worst, pe);
  if (det) {
    /* the twin: one replica of two shards (ranks 0, 1 and ranks 2, 3 alike) running the global
     * batch as two micro-batches of the same rows the replicas took; bitwise the same */
    float *mine = malloc(pb), *twin = malloc(pb), tl[STEPS];
    size_t off = 0;
    for (int i = 0; i < wh_graph_num_params(m.g); i++) {
      wh_value pv = wh_graph_param(m.g, i);
      CHECK(wh_session_get_param(s, pv, (char *)mine + off, wh_session_bytes(s, pv)));
      off += wh_session_bytes(s, pv);
    }
    wh_comm *pair = NULL;
    for (int half = 0; half < 2; half++) {
      wh_comm *c = NULL;
      CHECK(wh_comm_split(comm, 2, (int[]){2 * half, 2 * half + 1}, &c));
      if (c) pair = c;
    }
    sc_model m2 = sc_build(a->kind);
    wh_plan_layout l2 = WH_PLAN_LAYOUT_INIT;
    l2.tp = 2;
    l2.micro_batches = 2;
    wh_cluster *cl2;
    wh_plan *p2 = sc_pinned(&m2, 2, &l2, &cl2);
    wh_session_options so2 = WH_SESSION_OPTIONS_INIT;
    so2.plan = p2;
    so2.comm = pair;
    so2.deterministic = 1;
    wh_session *s2;
    CHECK(wh_session_create(ctx, m2.g, &so2, &s2));
    sc_train(&m2, s2, tl, twin);
    EXPECT(memcmp(tl, dl, sizeof tl) == 0 && memcmp(twin, mine, pb) == 0,
           "%s: bitwise its one-replica twin with two micro-batches (losses %s, parameters %s)", name,
           memcmp(tl, dl, sizeof tl) ? "differ" : "equal", memcmp(twin, mine, pb) ? "differ" : "equal");
    sc_destroy(s2, p2, cl2, &m2);
    wh_comm_destroy(pair);
    free(mine), free(twin);
  }
  sc_destroy(s, p, cl, &m);
  free(rp);
}

static const hy_arg args[] = {
    {SC_MLP, PP2_TP2},       {SC_GPT, PP2_TP2},     {SC_MLP, DP2_PP2_TP2}, {SC_GPT, DP2_PP2_TP2},
    {SC_MLP, DP2_TP2_ZERO1}, {SC_GPT, DP2_TP2_ZERO1}, {SC_MLP, DP2_TP2_DET}, {SC_GPT, DP2_TP2_DET},
};

static const wt_case cases[] = {
    {"mlp_pp2_tp2", hybrid, &args[0]},       {"gpt_pp2_tp2", hybrid, &args[1]},
    {"mlp_dp2_pp2_tp2", hybrid, &args[2]},   {"gpt_dp2_pp2_tp2", hybrid, &args[3]},
    {"mlp_dp2_tp2_zero1", hybrid, &args[4]}, {"gpt_dp2_tp2_zero1", hybrid, &args[5]},
    {"mlp_dp2_tp2_det", hybrid, &args[6]},   {"gpt_dp2_tp2_det", hybrid, &args[7]},
};

int main(int argc, char **argv) { return sc_main("hybrid", cases, WT_COUNT(cases), argc, argv); }
