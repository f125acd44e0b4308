/* ckpt_export.c - writes a checkpoint for safetensors_compat.py to read with the safetensors Python
 * package: a small GPT trained 3 steps in one process, or under mpirun in a layout that slices
 * tensors (--tp N: operator sharding over N ranks per replica; --zero: ZeRO-1 over the replicas).
 * Rank 0 then loads the checkpoint into one process and writes every tensor whole, in index
 * order, to DIR/expect.bin with DIR/expect.txt ("name bytes" lines), for the reader to compare.
 *
 *   ckpt_export [--tp N] [--zero] DIR */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpt.h"
#include "whale.h"
#include "check.h"

static wh_ctx *ctx;

int main(int argc, char **argv) {
  int tp = 1, zero = 0;
  const char *dir = NULL;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--tp") && i + 1 < argc) tp = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--zero")) zero = 1;
    else dir = argv[i];
  }
  if (!dir) return fprintf(stderr, "usage: ckpt_export [--tp N] [--zero] DIR\n"), 2;
  wh_ctx_options co = WH_CTX_OPTIONS_INIT;
  co.num_threads = 1;
  CHECK(wh_ctx_create(&ctx, &co));
  wh_launch_info li = wh_launch_detect();
  wh_comm *comm = NULL;
  if (li.size > 1) CHECK(wh_comm_create(ctx, NULL, &comm));
  int rank = comm ? wh_comm_rank(comm) : 0, n = comm ? wh_comm_size(comm) : 1;
  wh_graph *g;
  CHECK(wh_graph_create(ctx, &g));
  gpt_options o = GPT_OPTIONS_INIT;
  o.vocab = 32, o.context = 8, o.width = 16, o.layers = 1, o.heads = 2;
  gpt_model m;
  gpt_build(g, &o, &m);
  CHECK(wh_graph_status(g));
  CHECK(wh_backward(g, m.loss));
  wh_adamw_options ao = WH_ADAMW_OPTIONS_INIT;
  CHECK(wh_optimizer_adamw(g, &ao));
  const int B = 4;
  wh_cluster *cl = NULL;
  wh_plan *p = NULL;
  wh_session_options so = WH_SESSION_OPTIONS_INIT;
  so.batch = B;
  if (comm) {
    CHECK(wh_cluster_create(ctx, &cl));
    CHECK(wh_cluster_add(cl, "CPU", 0, n));
    wh_plan_layout l = WH_PLAN_LAYOUT_INIT;
    l.tp = tp, l.zero1 = zero;
    CHECK(wh_plan_create_pinned(ctx, g, cl, B, &l, &p));
    so.plan = p, so.comm = comm;
  }
  wh_session *s;
  CHECK(wh_session_create(ctx, g, &so, &s));
  int32_t tok[4 * 8], tgt[4 * 8];
  for (int k = 0; k < 3; k++) {
    for (int i = 0; i < B * 8; i++) tok[i] = (i * 5 + k) % 32, tgt[i] = (i * 3 + k + 1) % 32;
    CHECK(wh_session_feed(s, m.tokens, tok, sizeof tok));
    CHECK(wh_session_feed(s, m.targets, tgt, sizeof tgt));
    CHECK(wh_session_step(s));
  }
  CHECK(wh_checkpoint_save(s, dir, NULL));
  wh_session_destroy(s);
  if (rank == 0) {
    wh_session_options lo = WH_SESSION_OPTIONS_INIT;
    lo.batch = B;
    wh_session *one;
    CHECK(wh_session_create(ctx, g, &lo, &one));
    CHECK(wh_checkpoint_load(one, dir, NULL, 0, NULL));
    char path[1024];
    snprintf(path, sizeof path, "%s/expect.bin", dir);
    FILE *fb = fopen(path, "wb");
    snprintf(path, sizeof path, "%s/expect.txt", dir);
    FILE *ft = fopen(path, "w");
    if (!fb || !ft) return perror(path), 1;
    static const char *suf[] = {"", ".adam_m", ".adam_v"};
    for (int i = 0; i < wh_graph_num_params(g); i++)
      for (int k = 0; k < 3; k++) {
        char nm[256];
        snprintf(nm, sizeof nm, "%s%s", wh_value_name(g, wh_graph_param(g, i)), suf[k]);
        wh_value v = wh_graph_find(g, nm);
        size_t b = wh_session_bytes(one, v);
        void *buf = malloc(b);
        CHECK(wh_session_get_param(one, v, buf, b));
        if (fwrite(buf, 1, b, fb) != b) return perror("expect.bin"), 1;
        fprintf(ft, "%s %zu\n", nm, b);
        free(buf);
      }
    fclose(fb), fclose(ft);
    wh_session_destroy(one);
    printf("ckpt_export: %d rank%s (tp %d%s) wrote %s\n", n, n > 1 ? "s" : "", tp, zero ? ", ZeRO-1" : "", dir);
  }
  wh_plan_destroy(p);
  wh_cluster_destroy(cl);
  wh_graph_destroy(g);
  wh_comm_destroy(comm);
  wh_ctx_destroy(ctx);
  return 0;
}
