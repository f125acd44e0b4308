/* probe.c - measure this machine as libwhale's planner sees it (the CPU, and each CUDA GPU with
 * its calibrated matrix rate and memory bandwidth), print it, and save it as a cluster file.
 *
 *   probe [cluster.json] */
#include <stdio.h>

#include "whale.h"

int main(int argc, char **argv) {
  wh_ctx *ctx;
  wh_ctx_options o = WH_CTX_OPTIONS_INIT;
  if (wh_ctx_create(&ctx, &o) != WH_OK) return 1;
  wh_cluster *c = NULL;
  char *desc = NULL;
  wh_status st = wh_cluster_probe(ctx, &c);
  if (st == WH_OK) st = wh_cluster_describe(c, &desc);
  if (st == WH_OK) printf("probed: %s\n", desc);
  if (st == WH_OK && argc > 1 && (st = wh_cluster_save(c, argv[1])) == WH_OK) printf("saved %s\n", argv[1]);
  if (st != WH_OK) fprintf(stderr, "probe: %s: %s\n", wh_status_str(st), wh_last_error(ctx));
  wh_free(desc);
  wh_cluster_destroy(c);
  wh_ctx_destroy(ctx);
  return st == WH_OK ? 0 : 1;
}
