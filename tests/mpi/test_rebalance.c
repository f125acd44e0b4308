/* test_rebalance.c - online rebalancing: two data-parallel ranks on planner-chosen (even) shares,
 * rank 1 slowed by three busy threads sharing its core (a quarter of it left: other load on the
 * machine cannot make rank 0 look slower); the session must move rows to rank 0 within
 * the run, every rank switching at the same step, and every step's loss and the final parameters
 * must still equal the one-process run's within 1e-5. With rebalancing off, the shares stay. */
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "scaffold.h"

static volatile int spin_on;

static void *spin(void *arg) {
  (void)arg;
  volatile double x = 1;
  while (spin_on) x = x * 1.0000001 + 1e-9;
  return NULL;
}

/* This rank, and its spinner when it has one, on one core of the machine. */
static int pin(pthread_t t, int core) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(core, &set);
  return pthread_setaffinity_np(t, sizeof set, &set);
}

static void run(const void *arg) {
  int on = *(const int *)arg;
  if (nranks != 2) {
    wt_skip("rebalancing is checked on 2 ranks");
    return;
  }
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  int core = cores > 1 ? wt_rank % (int)cores : 0;
  pin(pthread_self(), core);
  sc_model m = sc_build(SC_WIDE);
  size_t pb;
  float rl[STEPS], dl[STEPS], *rp = sc_reference(&m, rl, &pb), *dp = malloc(pb);
  wh_cluster *cl;
  CHECK(wh_cluster_create(ctx, &cl));
  CHECK(wh_cluster_add(cl, "CPU", 0, 2));
  wh_plan_options po = WH_PLAN_OPTIONS_INIT;
  po.global_batch = B;
  po.stages = 1;
  po.micro_batches = 1;
  po.allow_tp = 0;
  po.zero1 = 0;
  wh_plan *p;
  CHECK(wh_plan_create(ctx, m.g, cl, &po, &p));
  wh_session_options so = WH_SESSION_OPTIONS_INIT;
  so.plan = p;
  so.comm = comm;
  so.rebalance = on;
  wh_session *s;
  CHECK(wh_session_create(ctx, m.g, &so, &s));
  int64_t before[2], after[2];
  int count = -1;
  CHECK(wh_session_shares(s, before, 2, &count));
  enum { SPINNERS = 3 };
  pthread_t th[SPINNERS];
  int started = 0;
  spin_on = wt_rank == 1;
  while (spin_on && started < SPINNERS && pthread_create(&th[started], NULL, spin, NULL) == 0) pin(th[started++], core);
  sc_train(&m, s, dl, dp);
  spin_on = 0;
  for (int i = 0; i < started; i++) pthread_join(th[i], NULL);
  CHECK(wh_session_shares(s, after, 2, &count));
  if (on)
    EXPECT(before[0] == before[1] && count >= 1 && after[0] > after[1] && after[0] + after[1] == B,
           "rebalancing: shares %lld/%lld -> %lld/%lld after %d rebalances (rank 1 slowed)", (long long)before[0],
           (long long)before[1], (long long)after[0], (long long)after[1], count);
  else
    EXPECT(count == 0 && after[0] == before[0] && after[1] == before[1], "rebalancing off: shares %lld/%lld, %d rebalances",
           (long long)after[0], (long long)after[1], count);
  /* every rank agrees on the shares */
  double mine[2] = {(double)after[0], (double)after[1]}, all[4];
  CHECK(wh_comm_allgather(comm, mine, all, 2, NULL, WH_F64));
  EXPECT(all[0] == all[2] && all[1] == all[3], "the ranks disagree on the shares: %g/%g and %g/%g", all[0], all[1],
         all[2], all[3]);
  char nm[64];
  snprintf(nm, sizeof nm, "wide MLP DP=2, rebalancing %s", on ? "on" : "off");
  sc_same_as_reference(nm, rl, dl, rp, dp, pb);
  if (wt_rank == 0)
    printf("%s: shares %lld/%lld -> %lld/%lld, %d rebalances\n", nm, (long long)before[0], (long long)before[1],
           (long long)after[0], (long long)after[1], count);
  wh_session_destroy(s);
  wh_plan_destroy(p);
  wh_cluster_destroy(cl);
  wh_graph_destroy(m.g);
  free(rp), free(dp);
}

static const int yes = 1, no = 0;
static const wt_case cases[] = {{"slowed_rank", run, &yes}, {"off", run, &no}};

int main(int argc, char **argv) { return sc_main("rebalance", cases, WT_COUNT(cases), argc, argv); }
