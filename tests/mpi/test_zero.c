/* test_zero.c - ZeRO-1 (optimizer state sharded over the data-parallel ranks): each rank holds
 * about 1/n of the optimizer state, the gradients travel as reduce-scatters, and the losses and
 * parameters equal the one-process run's, with equal shares and with unequal micro-batches. */
#include <stdio.h>

#include "scaffold.h"

typedef struct {
  sc_kind kind;
  int micro4; /* 4 micro-batches of 6 (unequal where 6 does not divide), else equal shares of B */
} zero_arg;

static void zero(const void *arg) {
  const zero_arg *a = arg;
  int n = nranks;
  int64_t sh[8];
  char nm[96];
  if (a->kind == SC_PARAM_SUM) {
    sc_equal(sh);
    sc_dp_case(a->kind, "sum of two params, ZeRO-1", sh, 1, 1);
  } else if (a->micro4) {
    int64_t s6 = 0;
    for (int i = 0; i < n; i++) s6 += sh[i] = 6 / n > 0 ? 6 / n : 1;
    sh[n - 1] += 6 - s6;
    snprintf(nm, sizeof nm, "%s DP=%d ZeRO-1 unequal, 4 micro", sc_name(a->kind), n);
    sc_dp_case(a->kind, nm, sh, 4, 1);
  } else {
    sc_equal(sh);
    snprintf(nm, sizeof nm, "%s DP=%d ZeRO-1 equal shares", sc_name(a->kind), n);
    sc_dp_case(a->kind, nm, sh, 1, 1);
  }
}

static const zero_arg args[] = {{SC_PARAM_SUM, 0}, {SC_MLP, 1}, {SC_MLP, 0}, {SC_GPT, 1}, {SC_GPT, 0}};

static const wt_case cases[] = {
    {"param_sum_equal", zero, &args[0]},
    {"mlp_unequal_micro4", zero, &args[1]},
    {"mlp_equal", zero, &args[2]},
    {"gpt_unequal_micro4", zero, &args[3]},
    {"gpt_equal", zero, &args[4]},
};

int main(int argc, char **argv) { return sc_main("zero", cases, WT_COUNT(cases), argc, argv); }
