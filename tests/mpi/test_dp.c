/* test_dp.c - plain data parallelism: the same model trained on one process and over the ranks of
 * this mpirun gives the same losses and parameters with equal shares, unequal shares, gradient
 * accumulation over micro-batches and a replica without samples; the deterministic reduction is
 * bit for bit one rank running the same rows as micro-batches. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scaffold.h"

typedef enum { EQUAL, UNEQUAL, UNEQUAL_MICRO4, RANK0_EMPTY } layout;
typedef struct {
  sc_kind kind;
  layout shares;
} dp_arg;

static void dp(const void *arg) {
  const dp_arg *a = arg;
  int n = nranks;
  int64_t sh[8];
  char nm[96];
  const char *model = sc_name(a->kind);
  switch (a->shares) {
  case EQUAL:
    sc_equal(sh);
    snprintf(nm, sizeof nm, "%s DP=%d equal shares", model, n);
    sc_dp_case(a->kind, nm, sh, 1, 0);
    break;
  case UNEQUAL:
    sc_unequal(sh);
    if (a->kind == SC_SHARED_GRAD)
      snprintf(nm, sizeof nm, "shared-gradient DP=%d unequal shares", n);
    else
      snprintf(nm, sizeof nm, "%s DP=%d unequal shares", model, n);
    sc_dp_case(a->kind, nm, sh, 1, 0);
    break;
  case UNEQUAL_MICRO4: { /* 4 micro-batches of 6: shares per micro-batch summing to 6 */
    int64_t s6 = 0;
    for (int i = 0; i < n; i++) s6 += sh[i] = (i + 1) * 6 / (n * (n + 1) / 2) > 0 ? (i + 1) * 6 / (n * (n + 1) / 2) : 1;
    sh[n - 1] += 6 - s6;
    snprintf(nm, sizeof nm, "%s DP=%d unequal, 4 micro-batches", model, n);
    sc_dp_case(a->kind, nm, sh, 4, 0);
    break;
  }
  case RANK0_EMPTY:
    if (n == 1) {
      wt_skip("a replica without samples needs 2 ranks or more");
      return;
    }
    sc_rank0_empty(sh);
    snprintf(nm, sizeof nm, "%s DP=%d, rank 0 without samples", model, n);
    sc_dp_case(a->kind, nm, sh, 1, 0);
    break;
  }
}

/* One session over comm cc: a data-parallel plan of cc's ranks, equal shares, `micro` micro-batches. */
static wh_session *dp_session(wh_comm *cc, const sc_model *m, int micro, int deterministic, wh_plan **pp,
                              wh_cluster **pc) {
  int n = wh_comm_size(cc);
  wh_plan_layout l = WH_PLAN_LAYOUT_INIT;
  int64_t sh[8];
  for (int i = 0; i < n; i++) sh[i] = B / n / micro;
  l.shares = sh;
  l.micro_batches = micro;
  *pp = sc_pinned(m, n, &l, pc);
  wh_session_options so = WH_SESSION_OPTIONS_INIT;
  so.plan = *pp;
  so.comm = cc;
  so.deterministic = deterministic;
  wh_session *s;
  CHECK(wh_session_create(ctx, m->g, &so, &s));
  return s;
}

/* The deterministic reduction: n ranks with one micro-batch each against one rank running the same
 * rows as n micro-batches (each rank runs that reference on a communicator of its own): bit for bit. */
static void deterministic(const void *arg) {
  sc_kind kind = *(const sc_kind *)arg;
  int n = nranks, me = wh_comm_rank(comm);
  char name[96];
  snprintf(name, sizeof name, "%s DP=%d deterministic reduce", sc_name(kind), n);
  sc_model m = sc_build(kind);
  wh_comm *solo = NULL;
  for (int r = 0; r < n; r++) {
    wh_comm *sub = NULL;
    CHECK(wh_comm_split(comm, 1, &r, &sub));
    if (r == me) solo = sub;
  }
  wh_plan *p1, *pn;
  wh_cluster *c1, *cn;
  wh_session *ref = dp_session(solo, &m, n, 0, &p1, &c1);
  size_t pb = sc_params_bytes(m.g, ref);
  float rl[STEPS], dl[STEPS], *rp = malloc(pb), *dp = malloc(pb);
  sc_train(&m, ref, rl, rp);
  wh_session_destroy(ref);
  wh_session *s = dp_session(comm, &m, 1, 1, &pn, &cn);
  sc_train(&m, s, dl, dp);
  int same_l = memcmp(rl, dl, sizeof rl) == 0, same_p = memcmp(rp, dp, pb) == 0;
  EXPECT(same_l && same_p, "%s: losses %s, parameters %s (first losses %.9g vs %.9g)", name, same_l ? "equal" : "differ",
         same_p ? "equal" : "differ", rl[0], dl[0]);
  if (wt_rank == 0)
    printf("%-34s loss %.5f -> %.5f  bitwise equal to one rank with %d micro-batches: %s\n", name, rl[0], rl[STEPS - 1],
           n, same_l && same_p ? "yes" : "no");
  wh_session_destroy(s);
  wh_plan_destroy(p1), wh_plan_destroy(pn);
  wh_cluster_destroy(c1), wh_cluster_destroy(cn);
  wh_comm_destroy(solo);
  wh_graph_destroy(m.g);
  free(rp), free(dp);
}

static const dp_arg shared_unequal = {SC_SHARED_GRAD, UNEQUAL};
static const dp_arg mlp[] = {{SC_MLP, EQUAL}, {SC_MLP, UNEQUAL}, {SC_MLP, UNEQUAL_MICRO4}, {SC_MLP, RANK0_EMPTY}};
static const dp_arg gpt[] = {{SC_GPT, EQUAL}, {SC_GPT, UNEQUAL}, {SC_GPT, UNEQUAL_MICRO4}, {SC_GPT, RANK0_EMPTY}};
static const sc_kind kinds[] = {SC_MLP, SC_GPT};

static const wt_case cases[] = {
    {"shared_grad_unequal", dp, &shared_unequal},
    {"mlp_equal", dp, &mlp[0]},
    {"mlp_unequal", dp, &mlp[1]},
    {"mlp_unequal_micro4", dp, &mlp[2]},
    {"mlp_rank0_empty", dp, &mlp[3]},
    {"gpt_equal", dp, &gpt[0]},
    {"gpt_unequal", dp, &gpt[1]},
    {"gpt_unequal_micro4", dp, &gpt[2]},
    {"gpt_rank0_empty", dp, &gpt[3]},
    {"mlp_deterministic", deterministic, &kinds[0]},
    {"gpt_deterministic", deterministic, &kinds[1]},
};

int main(int argc, char **argv) { return sc_main("dp", cases, WT_COUNT(cases), argc, argv); }
