/* cluster.c - building a cluster description: catalogue kinds or custom devices per node, links. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/ctx.h"
#include "planner.h"

wh_status wh_cluster_create(wh_ctx *ctx, wh_cluster **out) {
  if (!ctx || !out) return WH_ERR_INVALID_ARGUMENT;
  wh_cluster *c = calloc(1, sizeof *c);
  if (!c) return WH_ERR_OUT_OF_MEMORY;
  c->ctx = ctx;
  c->intra_lat = 5e-6;
  c->inter_bw = 12.5e9; /* 100 Gb/s */
  c->inter_lat = 20e-6;
  *out = c;
  return WH_OK;
}

void wh_cluster_destroy(wh_cluster *c) {
  if (!c) return;
  free(c->dev);
  free(c);
}

int wh_cluster_size(const wh_cluster *c) { return c ? c->n : 0; }

wh_status wh_cluster_device(const wh_cluster *c, int i, wh_device_desc *out) {
  if (!c || !out || out->struct_size != sizeof *out) return WH_ERR_INVALID_ARGUMENT;
  if (i < 0 || i >= c->n) {
    wh__ctx_set_error(c->ctx, "wh_cluster_device: device %d of %d", i, c->n);
    return WH_ERR_INVALID_ARGUMENT;
  }
  const wh__device *d = &c->dev[i];
  *out = (wh_device_desc){sizeof *out, d->kind, d->flops_f32, d->flops_bf16, d->mem_bw, d->mem_bytes, d->link_bw,
                          d->eff_flops, d->eff_bw};
  return WH_OK;
}

static wh_status add(wh_cluster *c, const wh__device *d, int node, int count) {
  if (node < 0 || count < 1 || count > 1 << 20) {
    wh__ctx_set_error(c->ctx, "wh_cluster_add: node %d and count %d must be >= 0 and >= 1", node, count);
    return WH_ERR_INVALID_ARGUMENT;
  }
  if (c->n + count > c->cap) {
    int nc = c->cap ? c->cap : 16;
    while (nc < c->n + count) nc *= 2;
    wh__device *nd = realloc(c->dev, sizeof(wh__device) * (size_t)nc);
    if (!nd) return WH_ERR_OUT_OF_MEMORY;
    c->dev = nd;
    c->cap = nc;
  }
  for (int i = 0; i < count; i++) {
    c->dev[c->n] = *d;
    c->dev[c->n].node = node;
    c->n++;
  }
  return WH_OK;
}

wh_status wh_cluster_add(wh_cluster *c, const char *kind, int node, int count) {
  if (!c) return WH_ERR_INVALID_ARGUMENT;
  const wh__device_kind *k = wh__catalogue_find(kind);
  if (!k) {
    char list[512];
    size_t o = 0;
    for (int i = 0; i < wh__catalogue_n && o < sizeof list - 32; i++)
      o += (size_t)snprintf(list + o, sizeof list - o, "%s%s", i ? ", " : "", wh__catalogue[i].name);
    wh__ctx_set_error(c->ctx, "wh_cluster_add: unknown device kind '%s' (known: %s)", kind ? kind : "(null)", list);
    return WH_ERR_NOT_FOUND;
  }
  wh__device d = {.flops_f32 = k->flops_f32, .flops_bf16 = k->flops_bf16, .mem_bw = k->mem_bw,
                  .mem_bytes = k->mem_bytes, .link_bw = k->link_bw, .eff_flops = WH_EFF_FLOPS_DEFAULT,
                  .eff_bw = WH_EFF_BW_DEFAULT};
  snprintf(d.kind, sizeof d.kind, "%s", k->name);
  return add(c, &d, node, count);
}

wh_status wh_cluster_add_custom(wh_cluster *c, const wh_device_desc *dd, int node, int count) {
  if (!c) return WH_ERR_INVALID_ARGUMENT;
  if (!dd || dd->struct_size != sizeof *dd || !(dd->flops_f32 > 0) || !(dd->mem_bw > 0) || !(dd->mem_bytes > 0) ||
      dd->link_bw < 0 || dd->eff_flops < 0 || dd->eff_flops > 1 || dd->eff_bw < 0 || dd->eff_bw > 1) {
    wh__ctx_set_error(c->ctx, "wh_cluster_add_custom: a device needs flops_f32, mem_bw and mem_bytes > 0, "
                              "link_bw >= 0 and efficiencies in [0, 1]");
    return WH_ERR_INVALID_ARGUMENT;
  }
  wh__device d = {.flops_f32 = dd->flops_f32, .flops_bf16 = dd->flops_bf16 > 0 ? dd->flops_bf16 : dd->flops_f32,
                  .mem_bw = dd->mem_bw, .mem_bytes = dd->mem_bytes,
                  .link_bw = dd->link_bw > 0 ? dd->link_bw : 16e9, /* unstated: PCIe Gen3 x16 */
                  .eff_flops = dd->eff_flops > 0 ? dd->eff_flops : WH_EFF_FLOPS_DEFAULT,
                  .eff_bw = dd->eff_bw > 0 ? dd->eff_bw : WH_EFF_BW_DEFAULT};
  snprintf(d.kind, sizeof d.kind, "%s", dd->kind ? dd->kind : "custom");
  return add(c, &d, node, count);
}

wh_status wh_cluster_set_links(wh_cluster *c, double intra_bw, double intra_lat, double inter_bw, double inter_lat) {
  if (!c) return WH_ERR_INVALID_ARGUMENT;
  if (intra_bw < 0 || intra_lat < 0 || !(inter_bw > 0) || inter_lat < 0) {
    wh__ctx_set_error(c->ctx, "wh_cluster_set_links: bandwidths must be > 0 (intra may be 0: per-device links) and "
                              "latencies >= 0");
    return WH_ERR_INVALID_ARGUMENT;
  }
  c->intra_bw = intra_bw;
  c->intra_lat = intra_lat;
  c->inter_bw = inter_bw;
  c->inter_lat = inter_lat;
  return WH_OK;
}

wh_status wh_cluster_describe(const wh_cluster *c, char **out) {
  if (!c || !out) return WH_ERR_INVALID_ARGUMENT;
  size_t cap = 256 + (size_t)c->n * 160;
  char *s = malloc(cap);
  if (!s) return WH_ERR_OUT_OF_MEMORY;
  size_t o = (size_t)snprintf(s, cap, "cluster: %d devices; links: intra-node %s%.1f GB/s %.1f us, inter-node %.1f GB/s %.1f us\n",
                              c->n, c->intra_bw > 0 ? "" : "per device, default ", c->intra_bw / 1e9,
                              c->intra_lat * 1e6, c->inter_bw / 1e9, c->inter_lat * 1e6);
  for (int i = 0; i < c->n && o < cap; i++) {
    const wh__device *d = &c->dev[i];
    o += (size_t)snprintf(s + o, cap - o,
                          "  device %3d  node %2d  %-10s  %6.1f TFLOP/s f32  %6.1f bf16  %6.0f GB/s  %6.1f GiB  link %5.0f GB/s  "
                          "sustained %.2f / %.2f\n",
                          i, d->node, d->kind, d->flops_f32 / 1e12, d->flops_bf16 / 1e12, d->mem_bw / 1e9,
                          d->mem_bytes / 1073741824.0, d->link_bw / 1e9, d->eff_flops, d->eff_bw);
  }
  *out = s;
  return WH_OK;
}
