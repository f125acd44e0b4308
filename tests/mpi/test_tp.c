/* test_tp.c - operator sharding (Megatron-style splits inside each replica) and DP x TP: the dump
 * shows the shard and exactly the inserted all-reduces, each rank holds part of the parameters, the
 * losses and gathered parameters equal the one-process run's; what sharding refuses, by name. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scaffold.h"

/* Operator sharding: tp ranks per replica, n / tp replicas with the given shares (per replica),
 * `micro` micro-batches. The parameters are gathered whole (every rank of a replica asks). */
static void run_tp_case(sc_kind kind, const char *name, int tp, const int64_t *shares, int micro) {
  int n = nranks;
  sc_model m = sc_build(kind);
  size_t pb;
  float rl[STEPS], dl[STEPS], *rp = sc_reference(&m, rl, &pb), *dp = malloc(pb);
  wh_cluster *cl;
  wh_plan *p;
  wh_plan_layout l = WH_PLAN_LAYOUT_INIT;
  l.tp = tp;
  l.shares = shares;
  l.micro_batches = micro;
  wh_session *s = sc_planned(comm, &m, &l, &p, &cl);
  EXPECT(sc_params_bytes(m.g, s) == pb, "%s: the session reports %zu parameter bytes, one process %zu", name,
         sc_params_bytes(m.g, s), pb);
  /* parameters split: this rank holds less than the whole model */
  wh_memory_stats ms = WH_MEMORY_STATS_INIT;
  CHECK(wh_session_memory(s, &ms));
  EXPECT(ms.param_bytes < pb * 3 / 4, "%s: this rank holds %llu parameter bytes of %zu", name,
         (unsigned long long)ms.param_bytes, pb);
  char *d = NULL;
  CHECK(wh_session_dump(s, WH_FORMAT_TEXT, &d));
  char head[96];
  snprintf(head, sizeof head, "operator sharding: shard %d of %d in replica %d of %d", wt_rank % tp, tp, wt_rank / tp,
           n / tp);
  int ar = 0;
  for (const char *q = d; (q = strstr(q, "tp_allreduce")); q++) ar++;
  /* Megatron's pattern and nothing more: per transformer layer one all-reduce forward and one
   * backward for attention and for the MLP, and for the vocabulary-parallel embedding (forward) and
   * output layer (backward); the MLP's first pair needs one forward only (its input has no
   * gradient); no gathers */
  int penalty = kind == SC_BIAS_PENALTY, gpt = kind == SC_GPT;
  EXPECT(strstr(d, head) != NULL && (penalty || ar == (gpt ? 10 : 1)) &&
             (penalty ? !strstr(d, "all-reduce, 0 all-gather") && strstr(d, "=> all-gather f32 (split dim 0)")
                      : strstr(d, "all-reduce, 0 all-gather") != NULL) &&
             strstr(d, "=> all-reduce sum f32 over ranks"),
         "%s: the dump shows the shard and the inserted all-reduces (%d):\n%.800s", name, ar, d);
  if (wt_rank == 0 && getenv("WH_TEST_SHOW_DUMP") && gpt) printf("%s", d);
  wh_free(d);
  CHECK(wh_session_dump(s, WH_FORMAT_DOT, &d));
  EXPECT(strstr(d, "tp_allreduce") && strstr(d, "shape=octagon, color=red"), "%s: the DOT dump marks the all-reduces",
         name);
  wh_free(d);
  sc_train(&m, s, dl, dp);
  sc_same_as_reference(name, rl, dl, rp, dp, pb);
  sc_destroy(s, p, cl, &m);
  free(rp), free(dp);
}

/* What operator sharding combines with (ZeRO-1, the deterministic reduction), what it refuses by
 * name (saving a split model as a graph file), and what it keeps (n ranks, one replica). */
static void refusals(const void *arg) {
  (void)arg;
  int n = nranks;
  if (n != 2) {
    wt_skip("the refusals run on 2 ranks");
    return;
  }
  sc_model m = sc_build(SC_GPT);
  wh_cluster *cl;
  wh_plan_layout l = WH_PLAN_LAYOUT_INIT;
  l.tp = n;
  l.zero1 = 1;
  wh_plan *p = sc_pinned(&m, n, &l, &cl);
  wh_session_options so = WH_SESSION_OPTIONS_INIT;
  so.plan = p;
  so.comm = comm;
  wh_session *s = NULL;
  /* operator sharding combines with ZeRO-1 and with the deterministic reduction (their numbers:
   * test_hybrid.c) */
  EXPECT(wh_session_create(ctx, m.g, &so, &s) == WH_OK && s, "tp with ZeRO-1: %s", wh_last_error(ctx));
  wh_session_destroy(s);
  s = NULL;
  wh_plan_destroy(p);
  wh_cluster_destroy(cl);
  l.zero1 = 0;
  p = sc_pinned(&m, n, &l, &cl);
  so.plan = p;
  so.deterministic = 1;
  EXPECT(wh_session_create(ctx, m.g, &so, &s) == WH_OK && s, "tp with the deterministic reduction: %s",
         wh_last_error(ctx));
  wh_session_destroy(s);
  s = NULL;
  so.deterministic = 0;
  CHECK(wh_session_create(ctx, m.g, &so, &s));
  EXPECT(wh_session_save(s, "/tmp/wh_tp_refused.whg") == WH_ERR_UNSUPPORTED && strstr(wh_last_error(ctx), "get_param"),
         "saving a split model is not refused with the way out: %s", wh_last_error(ctx));
  /* a whole parameter set from the caller's data: each rank keeps its shard, and gathers it back */
  wh_value w = WH_NONE;
  for (int i = 0; i < wh_graph_num_params(m.g); i++)
    if (strcmp(wh_value_name(m.g, wh_graph_param(m.g, i)), "fc0.w") == 0) w = wh_graph_param(m.g, i);
  size_t wb = wh_session_bytes(s, w);
  float *in = malloc(wb), *out = malloc(wb);
  for (size_t i = 0; i < wb / 4; i++) in[i] = (float)i * 0.25f;
  CHECK(wh_session_set_param(s, w, in, wb));
  CHECK(wh_session_get_param(s, w, out, wb));
  EXPECT(wb == 64 * 16 * 4 && memcmp(in, out, wb) == 0, "a split parameter set whole does not come back whole (%zu bytes)",
         wb);
  EXPECT(wh_session_get_param(s, w, out, wb - 4) == WH_ERR_SHAPE && strstr(wh_last_error(ctx), "4096 bytes"),
         "a short buffer for a split parameter is not refused with its whole size: %s", wh_last_error(ctx));
  free(in), free(out);
  sc_destroy(s, p, cl, &m);
}

typedef enum { TP_ALL, TP_MICRO4, DP2_TP2 } shape;
typedef struct {
  sc_kind kind;
  shape shape;
} tp_arg;

static void tp(const void *arg) {
  const tp_arg *a = arg;
  int n = nranks;
  char nm[96];
  if (n != 2 && n != 4) {
    wt_skip("operator sharding runs on 2 or 4 ranks");
    return;
  }
  if (a->kind == SC_BIAS_PENALTY) {
    int64_t one[1] = {B};
    snprintf(nm, sizeof nm, "mlp+bias penalty TP=%d", n);
    run_tp_case(a->kind, nm, n, one, 1);
  } else if (a->shape == TP_ALL) {
    int64_t one[1] = {B};
    snprintf(nm, sizeof nm, "%s TP=%d", sc_name(a->kind), n);
    run_tp_case(a->kind, nm, n, one, 1);
  } else if (a->shape == TP_MICRO4) {
    int64_t four[1] = {B / 4};
    snprintf(nm, sizeof nm, "%s TP=%d, 4 micro-batches", sc_name(a->kind), n);
    run_tp_case(a->kind, nm, n, four, 4);
  } else if (n != 4) {
    wt_skip("DP x TP runs on 4 ranks");
  } else { /* DP x TP: two replicas of two shards, 2 and 4 rows of each 6-sample micro-batch */
    static const int64_t sh[2] = {2, 4};
    snprintf(nm, sizeof nm, "%s DP=2 x TP=2, unequal, 4 micro", sc_name(a->kind));
    run_tp_case(a->kind, nm, 2, sh, 4);
  }
}

static const tp_arg args[] = {{SC_BIAS_PENALTY, TP_ALL}, {SC_MLP, TP_ALL}, {SC_MLP, TP_MICRO4}, {SC_MLP, DP2_TP2},
                              {SC_GPT, TP_ALL},          {SC_GPT, TP_MICRO4}, {SC_GPT, DP2_TP2}};

static const wt_case cases[] = {
    {"refusals", refusals, NULL},        {"bias_penalty", tp, &args[0]},     {"mlp", tp, &args[1]},
    {"mlp_micro4", tp, &args[2]},        {"mlp_dp2_tp2", tp, &args[3]},     {"gpt", tp, &args[4]},
    {"gpt_micro4", tp, &args[5]},        {"gpt_dp2_tp2", tp, &args[6]},
};

int main(int argc, char **argv) { return sc_main("tp", cases, WT_COUNT(cases), argc, argv); }
