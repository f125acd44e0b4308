/* test_cuda_tp.c - operator sharding on CUDA sessions: two ranks (under mpirun) shard the scaffold's
 * MLP and GPT over the MPI backend (device buffers staged through the host; NCCL needs a GPU per
 * rank), with and without data parallelism; every step's loss and the gathered parameters equal
 * the one-process CPU run's within 1e-4. Exits 77 (skip) where no CUDA device is visible. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "../mpi/scaffold.h"

static void cuda_tp(const void *arg) {
  sc_kind kind = *(const sc_kind *)arg;
  if (wh_cuda_device_count() < 1) {
    wt_skip("no CUDA device");
    return;
  }
  if (nranks != 2) {
    wt_skip("operator sharding on CUDA runs on 2 ranks");
    return;
  }
  sc_model m = sc_build(kind);
  size_t pb;
  float rl[STEPS], dl[STEPS], *rp = sc_reference(&m, rl, &pb), *dp = malloc(pb);
  wh_cluster *cl;
  wh_plan_layout l = WH_PLAN_LAYOUT_INIT;
  l.tp = 2;
  wh_plan *p = sc_pinned(&m, 2, &l, &cl);
  wh_session_options so = WH_SESSION_OPTIONS_INIT;
  so.plan = p;
  so.comm = comm;
  so.device = WH_DEVICE_CUDA;
  wh_session *s;
  CHECK(wh_session_create(ctx, m.g, &so, &s));
  sc_train(&m, s, dl, dp);
  double worst = 0;
  for (int k = 0; k < STEPS; k++) worst = fmax(worst, fabs((double)dl[k] - rl[k]) / fmax(fabs(rl[k]), 1e-30));
  double pe = sc_rel(dp, rp, pb / sizeof(float));
  EXPECT(worst <= 1e-4 && pe <= 1e-4, "%s TP=2 on CUDA: loss rel err %.3g, params %.3g", sc_name(kind), worst, pe);
  if (wt_rank == 0) printf("%s TP=2 on CUDA: worst step loss rel err %.2e, params %.2e\n", sc_name(kind), worst, pe);
  sc_destroy(s, p, cl, &m);
  free(rp), free(dp);
}

static const sc_kind mlp = SC_MLP, gpt = SC_GPT;
static const wt_case cases[] = {{"mlp_tp2", cuda_tp, &mlp}, {"gpt_tp2", cuda_tp, &gpt}};

int main(int argc, char **argv) { return sc_main("cuda_tp", cases, WT_COUNT(cases), argc, argv); }
