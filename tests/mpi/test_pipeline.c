/* test_pipeline.c - pipeline parallelism: one stage per rank with GPipe and 1F1B at 4
 * micro-batches, one micro-batch bit for bit, and DP x PP on 4 ranks; the GPT's tied embedding
 * spans the first and the last stage. Losses and held parameters equal the one-process run's. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scaffold.h"

/* Pipeline: `stages` stages over the ranks, segments split evenly, m micro-batches of B/m. Each rank
 * holds the current values of the parameters its stage reads, and compares those with the
 * one-process run; the tied embedding of the GPT lives on the first and the last stage. */
static void run_pipe_case(sc_kind kind, const char *name, int stages, const int64_t *shares, int micro,
                          wh_schedule sched) {
  int n = nranks;
  sc_model m = sc_build(kind);
  size_t pb;
  float rl[STEPS], dl[STEPS], *rp = sc_reference(&m, rl, &pb);
  wh_cluster *cl;
  wh_plan *p;
  wh_plan_layout l = WH_PLAN_LAYOUT_INIT;
  l.stages = stages;
  l.shares = shares;
  l.micro_batches = micro;
  l.schedule = sched;
  wh_session *s = sc_planned(comm, &m, &l, &p, &cl);
  char *d = NULL;
  CHECK(wh_session_dump(s, WH_FORMAT_TEXT, &d));
  int peer = stages == n ? 1 : n / stages; /* replica 0 of stage 1 */
  char want[48];
  snprintf(want, sizeof want, "=> send to rank %d", peer);
  EXPECT(strstr(d, "pipeline stage") && (wt_rank == 0 ? strstr(d, want) != NULL : strstr(d, "<= recv") != NULL),
         "%s: the dump shows the stage and its transfers:\n%.600s", name, d);
  if (wt_rank == 0 && kind == SC_GPT && sched == WH_SCHEDULE_1F1B)
    printf("%s, rank 0 program (excerpt):\n%.1500s\n", name, d);
  wh_free(d);
  sc_train(&m, s, dl, NULL);
  /* the parameters this stage holds, against the same ones of the reference */
  size_t off = 0, held = 0, nheld = 0;
  float *mine = malloc(pb), *theirs = malloc(pb);
  for (int i = 0; i < wh_graph_num_params(m.g); i++) {
    wh_value pv = wh_graph_param(m.g, i);
    size_t b = wh_session_bytes(s, pv);
    if (wh_session_get_param(s, pv, (char *)mine + held, b) == WH_OK) {
      memcpy((char *)theirs + held, (char *)rp + off, b);
      held += b, nheld++;
    }
    off += b;
  }
  double worst = 0;
  for (int k = 0; k < STEPS; k++) worst = fmax(worst, fabs((double)dl[k] - rl[k]) / fmax(fabs(rl[k]), 1e-30));
  double pe = sc_rel(mine, theirs, held / sizeof(float));
  if (micro == 1 && stages == n) {
    /* one micro-batch, one replica per stage: every node sees the one-process arithmetic */
    EXPECT(memcmp(dl, rl, sizeof dl) == 0 && memcmp(mine, theirs, held) == 0,
           "%s: one micro-batch per step is bitwise the one-process run (losses %s, parameters %s)", name,
           memcmp(dl, rl, sizeof dl) ? "differ" : "equal", memcmp(mine, theirs, held) ? "differ" : "equal");
  }
  EXPECT(worst <= 1e-5, "%s: loss differs from one process by %.3g (step losses %g .. %g)", name, worst, dl[0],
         dl[STEPS - 1]);
  EXPECT(pe <= 1e-5, "%s: the %zu parameters of this stage (a stage may hold none) differ from one process by %.3g", name,
         nheld, pe);
  if (wt_rank == 0)
    printf("%-34s loss %.5f -> %.5f  worst step loss rel err %.2e  params rel err %.2e (stage 0)\n", name, rl[0],
           rl[STEPS - 1], worst, pe);
  free(mine), free(theirs);
  sc_destroy(s, p, cl, &m);
  free(rp);
}

typedef enum { PP_4_MICRO, PP_1_MICRO, DP2_PP2, DP2_PP2_CROSSED } shape;
typedef struct {
  sc_kind kind;
  shape shape;
  wh_schedule sched;
} pp_arg;

static void pipeline(const void *arg) {
  const pp_arg *a = arg;
  int n = nranks;
  const char *model = sc_name(a->kind), *sch = a->sched == WH_SCHEDULE_1F1B ? "1F1B" : "GPipe";
  char nm[96];
  if (n == 1) {
    wt_skip("a pipeline needs 2 ranks or more");
    return;
  }
  if (a->shape == PP_4_MICRO) {
    snprintf(nm, sizeof nm, "%s PP=%d %s, 4 micro-batches", model, n, sch);
    run_pipe_case(a->kind, nm, n, NULL, 4, a->sched);
  } else if (a->shape == PP_1_MICRO) {
    snprintf(nm, sizeof nm, "%s PP=%d, 1 micro-batch (bitwise)", model, n);
    run_pipe_case(a->kind, nm, n, NULL, 1, a->sched);
  } else if (n != 4) {
    wt_skip("DP x PP runs on 4 ranks");
  } else if (a->shape == DP2_PP2) { /* DP x PP: two stages of two replicas, 2 and 4 rows of each 6-sample micro-batch */
    static const int64_t sh[4] = {2, 4, 2, 4};
    snprintf(nm, sizeof nm, "%s DP=2 x PP=2 %s, unequal shares", model, sch);
    run_pipe_case(a->kind, nm, 2, sh, 4, a->sched);
  } else { /* the stages share rows differently: 2/4 then 4/2, and 0/6 then 3/3 */
    static const int64_t sh[2][4] = {{2, 4, 4, 2}, {0, 6, 3, 3}};
    if (a->kind == SC_GPT) {
      /* the tied embedding's gradient crosses the stages without a batch axis: refused on every
       * rank alike, naming the way out */
      sc_model m = sc_build(a->kind);
      wh_cluster *cl;
      wh_plan_layout l = WH_PLAN_LAYOUT_INIT;
      l.stages = 2, l.shares = sh[0], l.micro_batches = 4, l.schedule = a->sched;
      wh_plan *p = sc_pinned(&m, n, &l, &cl);
      wh_session_options so = WH_SESSION_OPTIONS_INIT;
      so.plan = p;
      so.comm = comm;
      wh_session *s = NULL;
      EXPECT(wh_session_create(ctx, m.g, &so, &s) == WH_ERR_UNSUPPORTED && !s && strstr(wh_last_error(ctx), "same shares"),
             "gpt DP=2 x PP=2 with the stages' shares crossed is not refused by name: %s", wh_last_error(ctx));
      sc_destroy(s, p, cl, &m);
      return;
    }
    for (int c = 0; c < 2; c++) {
      snprintf(nm, sizeof nm, "%s DP=2 x PP=2 %s, shares %lld/%lld, %lld/%lld", model, sch, (long long)sh[c][0],
               (long long)sh[c][1], (long long)sh[c][2], (long long)sh[c][3]);
      run_pipe_case(a->kind, nm, 2, sh[c], 4, a->sched);
    }
  }
}

#define G WH_SCHEDULE_GPIPE
#define F WH_SCHEDULE_1F1B
static const pp_arg args[] = {
    {SC_MLP, PP_4_MICRO, G}, {SC_MLP, PP_1_MICRO, G}, {SC_MLP, DP2_PP2, G}, {SC_MLP, PP_4_MICRO, F}, {SC_MLP, DP2_PP2, F},
    {SC_GPT, PP_4_MICRO, G}, {SC_GPT, PP_1_MICRO, G}, {SC_GPT, DP2_PP2, G}, {SC_GPT, PP_4_MICRO, F}, {SC_GPT, DP2_PP2, F},
    {SC_MLP, DP2_PP2_CROSSED, F}, {SC_GPT, DP2_PP2_CROSSED, F},
};

static const wt_case cases[] = {
    {"mlp_gpipe", pipeline, &args[0]},      {"mlp_one_micro_bitwise", pipeline, &args[1]},
    {"mlp_dp2_pp2_gpipe", pipeline, &args[2]}, {"mlp_1f1b", pipeline, &args[3]},
    {"mlp_dp2_pp2_1f1b", pipeline, &args[4]},  {"gpt_gpipe", pipeline, &args[5]},
    {"gpt_one_micro_bitwise", pipeline, &args[6]}, {"gpt_dp2_pp2_gpipe", pipeline, &args[7]},
    {"gpt_1f1b", pipeline, &args[8]},      {"gpt_dp2_pp2_1f1b", pipeline, &args[9]},
    {"mlp_dp2_pp2_crossed_shares", pipeline, &args[10]}, {"gpt_dp2_pp2_crossed_shares", pipeline, &args[11]},
};

int main(int argc, char **argv) { return sc_main("pipeline", cases, WT_COUNT(cases), argc, argv); }
