/* profile.c - measured profiles override the cost model's roofline. A profile is the report of
 * wh_session_profile_report: per op kind, the measured milliseconds per run of a single-process
 * session. For each kind it lists, the device gets the ratio of that time to what the roofline
 * predicts for the same graph's nodes of that kind at the same batch; the cost model multiplies its
 * roofline by it from then on (src/planner/planner.h, wh__node_time). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/ctx.h"
#include "planner.h"

/* What the roofline (without any profile) gives per run for every node of op kind `op`. */
static double roofline_ms(const wh_graph *g, int op, int64_t batch, const wh__device *d0, int *nodes) {
  wh__device d = *d0;
  memset(d.op_scale, 0, sizeof d.op_scale);
  double t = 0;
  *nodes = 0;
  for (int i = 0; i < g->n_nodes; i++) {
    const wh__node *n = &g->nodes[i];
    if (n->op != op) continue;
    wh__cost c;
    wh__ops[op]->cost(g, n, batch, &c);
    t += wh__node_time(&d, op, c.flops, c.bytes_read + c.bytes_written, 1, 0);
    (*nodes)++;
  }
  return 1e3 * t;
}

wh_status wh_cluster_set_profile(wh_cluster *c, int device, const wh_graph *g, int64_t batch, const char *report) {
  if (!c) return WH_ERR_INVALID_ARGUMENT;
  if (!g || !report || batch < 1 || device < 0 || device >= c->n) {
    wh__ctx_set_error(c->ctx, "wh_cluster_set_profile: need a graph, a report, batch >= 1 and a device in 0..%d (got "
                              "device %d, batch %lld)", c->n - 1, device, (long long)batch);
    return WH_ERR_INVALID_ARGUMENT;
  }
  if (strncmp(report, "profile:", 8) != 0) {
    wh__ctx_set_error(c->ctx, "wh_cluster_set_profile: the report does not start with 'profile:' (the text of "
                              "wh_session_profile_report)");
    return WH_ERR_INVALID_ARGUMENT;
  }
  double ms_of[WH_OP_COUNT];
  for (int k = 0; k < WH_OP_COUNT; k++) ms_of[k] = -1;
  int line = 1;
  for (const char *p = strchr(report, '\n'); p && p[1]; p = strchr(p + 1, '\n')) {
    line++;
    char name[64];
    double calls, ms, share;
    if (sscanf(p + 1, " %63s %lf %lf %lf%%", name, &calls, &ms, &share) != 4) {
      if (sscanf(p + 1, " %63s", name) == 1 && strcmp(name, "op") == 0) continue; /* the column header */
      wh__ctx_set_error(c->ctx, "wh_cluster_set_profile: line %d of the report is not 'op calls ms share%%'", line);
      return WH_ERR_INVALID_ARGUMENT;
    }
    int op = wh__op_find(name);
    if (op < 0) {
      wh__ctx_set_error(c->ctx, "wh_cluster_set_profile: line %d names op '%s', which libwhale does not have", line, name);
      return WH_ERR_INVALID_ARGUMENT;
    }
    if (!(ms >= 0) || !isfinite(ms)) {
      wh__ctx_set_error(c->ctx, "wh_cluster_set_profile: line %d gives op '%s' %g ms", line, name, ms);
      return WH_ERR_INVALID_ARGUMENT;
    }
    ms_of[op] = ms;
  }
  /* the device profiled and every device of its kind, each against its own roofline */
  float scale[WH_OP_COUNT];
  int applied = 0;
  for (int i = 0; i < c->n; i++) {
    if (strcmp(c->dev[i].kind, c->dev[device].kind) != 0) continue;
    memset(scale, 0, sizeof scale);
    for (int op = 0; op < WH_OP_COUNT; op++) {
      int nodes = 0;
      double pred = ms_of[op] >= 0 ? roofline_ms(g, op, batch, &c->dev[i], &nodes) : 0;
      if (!nodes || !(pred > 0)) continue; /* not in this graph (a shard's collectives): nothing to scale */
      double r = ms_of[op] / pred;
      scale[op] = (float)(r < 1e-3 ? 1e-3 : r > 1e3 ? 1e3 : r);
    }
    for (int op = 0; op < WH_OP_COUNT; op++)
      if (scale[op] > 0) c->dev[i].op_scale[op] = scale[op], applied += i == device;
  }
  if (!applied) {
    wh__ctx_set_error(c->ctx, "wh_cluster_set_profile: no op of the report has a node in the graph");
    return WH_ERR_INVALID_ARGUMENT;
  }
  return WH_OK;
}
