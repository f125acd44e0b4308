/* plan_io.c - plans to and from protobuf files (message Plan in proto/whale.proto).
 * Everything a plan prints and simulates is stored, doubles bit for bit, so a loaded plan explains,
 * dumps and simulates exactly like the saved one. Loading checks every count, index, range and
 * number before anything is built: a truncated or corrupt file gives WH_ERR_CORRUPT and a message
 * naming the file and the fault, never a crash. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/ctx.h"
#include "../base/fileio.h"
#include "planner.h"
#include "whale.pb-c.h"

#define PLAN_MAGIC "libwhale.plan"
#define PLAN_FORMAT 2u /* 1: no node ranges per stage (read; pipelines then cannot run) */
#define PLAN_END_MARKER 0x4E4C5057u /* "WPLN" little-endian */
/* Sanity bounds, far above any plan the planner makes (it searches at most 1024 stages and 256
 * micro-batches), low enough that the simulator's tables stay small and every count fits an int. */
#define MAX_STAGES 1024
#define MAX_DEVICES (1 << 20)
#define MAX_SEGMENTS (1 << 24)
#define MAX_MICRO (1 << 20)
#define MAX_WHY (1 << 16)
#define KIND_LEN 32 /* wh_plan.dev_kind[i] */

_Static_assert((int)WHALE__PLAN_SCHEDULE__PLAN_SCHEDULE_GPIPE == (int)WH_SCHED_GPIPE, "schedule enums diverged");
_Static_assert((int)WHALE__PLAN_SCHEDULE__PLAN_SCHEDULE_1F1B == (int)WH_SCHED_1F1B, "schedule enums diverged");

/* ------------------------------------------------------------------ save */

wh_status wh_plan_save(const wh_plan *p, const char *path) {
  if (!p) return WH_ERR_INVALID_ARGUMENT;
  if (!path || !*path) {
    wh__ctx_set_error(p->ctx, "wh_plan_save: path is NULL or empty");
    return WH_ERR_INVALID_ARGUMENT;
  }
  int nd = p->n_devices, S = p->n_stages;
  Whale__PlanDevice *devs = calloc((size_t)nd + 1, sizeof *devs);
  Whale__PlanDevice **pd = calloc((size_t)nd + 1, sizeof *pd);
  Whale__PlanStage *sts = calloc((size_t)S + 1, sizeof *sts);
  Whale__PlanStage **ps = calloc((size_t)S + 1, sizeof *ps);
  char *kinds = calloc((size_t)nd + 1, KIND_LEN);
  wh_status st = WH_OK;
  if (!devs || !pd || !sts || !ps || !kinds) {
    wh__ctx_set_error(p->ctx, "wh_plan_save '%s': out of memory", path);
    st = WH_ERR_OUT_OF_MEMORY;
    goto done;
  }
  for (int i = 0; i < nd; i++) {
    whale__plan_device__init(&devs[i]);
    pd[i] = &devs[i];
    char *k = kinds + (size_t)i * KIND_LEN;
    memcpy(k, p->dev_kind[i], KIND_LEN - 1); /* kinds are NUL-terminated within 32; make sure */
    devs[i].kind = k;
    devs[i].node = p->dev_node[i];
    devs[i].mem_bytes = p->dev_mem[i];
  }
  for (int s = 0; s < S; s++) {
    const wh__stage *g = &p->st[s];
    Whale__PlanStage *m = &sts[s];
    whale__plan_stage__init(m);
    ps[s] = m;
    int nrep = g->tp > 0 ? g->ndev / g->tp : 0;
    m->seg_first = g->seg_first;
    m->seg_last = g->seg_last;
    m->n_devices = (size_t)g->ndev;
    m->devices = g->dev;
    m->n_shares = (size_t)nrep;
    m->shares = g->share;
    m->tp = g->tp;
    m->recompute = g->recompute != 0;
    m->t_compute = g->t_compute;
    m->t_allreduce = g->t_allreduce;
    m->t_p2p = g->t_p2p;
    m->t_update = g->t_update;
    m->mem_peak = g->mem_peak;
    m->mem_cap = g->mem_cap;
    m->n_t_fwd = (size_t)nrep;
    m->t_fwd = g->t_fwd;
    m->n_t_bwd = (size_t)nrep;
    m->t_bwd = g->t_bwd;
    m->node_first = g->node_first;
    m->node_last = g->node_last;
  }
  Whale__Plan msg = WHALE__PLAN__INIT;
  msg.magic = (char *)PLAN_MAGIC;
  msg.format_version = PLAN_FORMAT;
  msg.global_batch = p->global_batch;
  msg.micro_batches = p->micro_batches;
  msg.schedule = p->schedule == WH_SCHED_1F1B ? WHALE__PLAN_SCHEDULE__PLAN_SCHEDULE_1F1B
                                              : WHALE__PLAN_SCHEDULE__PLAN_SCHEDULE_GPIPE;
  msg.zero1 = p->zero1 != 0;
  msg.step_time = p->step_time;
  msg.bubble_time = p->bubble_time;
  msg.has_why = p->why != NULL;
  msg.why = p->why ? p->why : (char *)"";
  msg.n_segments = p->n_segments;
  msg.n_graph_nodes = p->n_graph_nodes;
  msg.shares_pinned = p->shares_pinned != 0;
  msg.mixed = (Whale__DType)p->mixed;
  msg.n_devices = (size_t)nd;
  msg.devices = pd;
  msg.n_stages = (size_t)S;
  msg.stages = ps;
  msg.end_marker = PLAN_END_MARKER;

  st = wh__write_message(p->ctx, "wh_plan_save", path, &msg.base);

done:
  free(devs);
  free(pd);
  free(sts);
  free(ps);
  free(kinds);
  return st;
}

/* ------------------------------------------------------------------ load */

typedef struct {
  wh_ctx *ctx;
  const char *path;
} pload;

static wh_status pfail(const pload *L, wh_status s, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static wh_status pfail(const pload *L, wh_status s, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  wh__ctx_set_error(L->ctx, "wh_plan_load '%s': %s", L->path, msg);
  return s;
}

/* a time or size: finite and >= 0 */
static int good(double x) { return isfinite(x) && x >= 0; }

/* Check the unpacked message completely; nothing is built until it passes. */
static wh_status check(const pload *L, const Whale__Plan *m) {
  if (!m->magic || strcmp(m->magic, PLAN_MAGIC) != 0)
    return pfail(L, WH_ERR_CORRUPT, "not a libwhale plan (magic '%.32s')", m->magic ? m->magic : "");
  if (m->format_version != PLAN_FORMAT && m->format_version != 1)
    return pfail(L, m->format_version > PLAN_FORMAT ? WH_ERR_UNSUPPORTED : WH_ERR_CORRUPT,
                 "format version %u, this build reads %u", (unsigned)m->format_version, PLAN_FORMAT);
  if (m->end_marker != PLAN_END_MARKER) return pfail(L, WH_ERR_CORRUPT, "truncated (no end marker)");
  if (m->n_devices < 1 || m->n_devices > MAX_DEVICES)
    return pfail(L, WH_ERR_CORRUPT, "%zu devices, expected 1..%d", m->n_devices, MAX_DEVICES);
  if (m->n_stages < 1 || m->n_stages > MAX_STAGES || m->n_stages > m->n_devices)
    return pfail(L, WH_ERR_CORRUPT, "%zu stages for %zu devices (at most %d)", m->n_stages, m->n_devices, MAX_STAGES);
  if (m->n_segments < (int32_t)m->n_stages || m->n_segments > MAX_SEGMENTS)
    return pfail(L, WH_ERR_CORRUPT, "%d segments for %zu stages", (int)m->n_segments, m->n_stages);
  if (m->global_batch < 1) return pfail(L, WH_ERR_CORRUPT, "global batch %lld", (long long)m->global_batch);
  if (m->micro_batches < 1 || m->micro_batches > MAX_MICRO || m->global_batch % m->micro_batches)
    return pfail(L, WH_ERR_CORRUPT, "%d micro-batches of a global batch of %lld", (int)m->micro_batches,
                 (long long)m->global_batch);
  if ((int)m->schedule != WH_SCHED_GPIPE && (int)m->schedule != WH_SCHED_1F1B)
    return pfail(L, WH_ERR_CORRUPT, "unknown schedule %d", (int)m->schedule);
  if (!good(m->step_time) || !good(m->bubble_time))
    return pfail(L, WH_ERR_CORRUPT, "step time %g s, bubble %g s", m->step_time, m->bubble_time);
  if (m->has_why && (!m->why || strlen(m->why) > MAX_WHY))
    return pfail(L, WH_ERR_CORRUPT, "explanation missing or longer than %d bytes", MAX_WHY);
  int nd = (int)m->n_devices, S = (int)m->n_stages;
  for (int i = 0; i < nd; i++) {
    const Whale__PlanDevice *d = m->devices[i];
    if (!d->kind || strlen(d->kind) >= KIND_LEN)
      return pfail(L, WH_ERR_CORRUPT, "device %d: kind missing or longer than %d bytes", i, KIND_LEN - 1);
    if (d->node < 0) return pfail(L, WH_ERR_CORRUPT, "device %d: node %d", i, (int)d->node);
    if (!good(d->mem_bytes) || d->mem_bytes == 0)
      return pfail(L, WH_ERR_CORRUPT, "device %d: capacity %g bytes", i, d->mem_bytes);
  }
  char *seen = calloc((size_t)nd, 1);
  if (!seen) return pfail(L, WH_ERR_OUT_OF_MEMORY, "out of memory checking %d devices", nd);
  wh_status st = WH_OK;
  int64_t mb = m->global_batch / m->micro_batches;
  int used = 0;
  for (int s = 0; s < S && st == WH_OK; s++) {
    const Whale__PlanStage *g = m->stages[s];
    int first = s ? (int)m->stages[s - 1]->seg_last + 1 : 0, last = s == S - 1 ? (int)m->n_segments - 1 : -1;
    if (g->seg_first != first || g->seg_last < g->seg_first || g->seg_last >= m->n_segments ||
        (last >= 0 && g->seg_last != last)) {
      st = pfail(L, WH_ERR_CORRUPT, "stage %d: segments %d..%d; expected to start at %d, end in order, the last at %d",
                 s, (int)g->seg_first, (int)g->seg_last, first, (int)m->n_segments - 1);
      break;
    }
    int nf = s ? (int)m->stages[s - 1]->node_last + 1 : 0;
    if (m->format_version >= 2 && (g->node_first != nf || g->node_last < g->node_first ||
                                   g->node_last >= m->n_graph_nodes)) {
      st = pfail(L, WH_ERR_CORRUPT, "stage %d: graph nodes %d..%d; expected to start at %d and end below %d", s,
                 (int)g->node_first, (int)g->node_last, nf, (int)m->n_graph_nodes);
      break;
    }
    if (g->tp < 1 || g->n_devices < 1 || g->n_devices > (size_t)nd || g->n_devices % (size_t)g->tp) {
      st = pfail(L, WH_ERR_CORRUPT, "stage %d: %zu devices with tp %d", s, g->n_devices, (int)g->tp);
      break;
    }
    size_t nrep = g->n_devices / (size_t)g->tp;
    if (g->n_shares != nrep || g->n_t_fwd != nrep || g->n_t_bwd != nrep) {
      st = pfail(L, WH_ERR_CORRUPT, "stage %d: %zu replicas, but %zu shares and %zu / %zu replica times", s, nrep,
                 g->n_shares, g->n_t_fwd, g->n_t_bwd);
      break;
    }
    for (size_t i = 0; i < g->n_devices; i++) {
      int d = g->devices[i];
      if (d < 0 || d >= nd || seen[d]) {
        st = pfail(L, WH_ERR_CORRUPT, "stage %d: device entry %zu is %d (of %d, each used once)", s, i, d, nd);
        break;
      }
      seen[d] = 1;
      used++;
    }
    if (st != WH_OK) break;
    int64_t sum = 0;
    for (size_t r = 0; r < nrep && st == WH_OK; r++) {
      if (g->shares[r] < 0 || g->shares[r] > mb)
        st = pfail(L, WH_ERR_CORRUPT, "stage %d: replica %zu has a share of %lld (micro-batch %lld)", s, r,
                   (long long)g->shares[r], (long long)mb);
      else if (!good(g->t_fwd[r]) || !good(g->t_bwd[r]))
        st = pfail(L, WH_ERR_CORRUPT, "stage %d: replica %zu times %g / %g s", s, r, g->t_fwd[r], g->t_bwd[r]);
      sum += g->shares[r];
    }
    if (st == WH_OK && sum != mb)
      st = pfail(L, WH_ERR_CORRUPT, "stage %d: shares sum to %lld, the micro-batch is %lld", s, (long long)sum,
                 (long long)mb);
    if (st == WH_OK && (!good(g->t_compute) || !good(g->t_allreduce) || !good(g->t_p2p) || !good(g->t_update) ||
                        !good(g->mem_peak) ||
                        !good(g->mem_cap)))
      st = pfail(L, WH_ERR_CORRUPT, "stage %d: a time or memory figure is negative or not finite", s);
  }
  if (st == WH_OK && used != nd)
    st = pfail(L, WH_ERR_CORRUPT, "the stages use %d of the %d devices", used, nd);
  free(seen);
  return st;
}

static wh_status build(const pload *L, const Whale__Plan *m, wh_plan **out) {
  wh_plan *p = calloc(1, sizeof *p);
  if (!p) return pfail(L, WH_ERR_OUT_OF_MEMORY, "out of memory");
  int nd = (int)m->n_devices, S = (int)m->n_stages;
  p->ctx = L->ctx;
  p->global_batch = m->global_batch;
  p->micro_batches = m->micro_batches;
  p->schedule = (wh__schedule)m->schedule;
  p->zero1 = m->zero1;
  p->step_time = m->step_time;
  p->bubble_time = m->bubble_time;
  p->n_segments = m->n_segments;
  p->n_graph_nodes = m->format_version >= 2 ? m->n_graph_nodes : 0;
  p->shares_pinned = m->shares_pinned;
  p->mixed = (wh_dtype)m->mixed;
  p->n_devices = nd;
  p->why = m->has_why ? strdup(m->why) : NULL;
  p->dev_kind = calloc((size_t)nd, sizeof *p->dev_kind);
  p->dev_node = malloc(sizeof(int) * (size_t)nd);
  p->dev_mem = malloc(sizeof(double) * (size_t)nd);
  p->st = calloc((size_t)S, sizeof(wh__stage));
  if (p->st) p->n_stages = S; /* from here wh_plan_destroy frees whatever each stage got */
  int ok = (!m->has_why || p->why) && p->dev_kind && p->dev_node && p->dev_mem && p->st;
  for (int i = 0; ok && i < nd; i++) {
    memcpy(p->dev_kind[i], m->devices[i]->kind, strlen(m->devices[i]->kind)); /* < 32, checked */
    p->dev_node[i] = m->devices[i]->node;
    p->dev_mem[i] = m->devices[i]->mem_bytes;
  }
  for (int s = 0; ok && s < S; s++) {
    const Whale__PlanStage *q = m->stages[s];
    wh__stage *g = &p->st[s];
    size_t nrep = q->n_shares;
    g->seg_first = q->seg_first;
    g->seg_last = q->seg_last;
    g->node_first = m->format_version >= 2 ? q->node_first : -1;
    g->node_last = m->format_version >= 2 ? q->node_last : -1;
    g->ndev = (int)q->n_devices;
    g->tp = q->tp;
    g->recompute = q->recompute;
    g->t_compute = q->t_compute;
    g->t_allreduce = q->t_allreduce;
    g->t_p2p = q->t_p2p;
    g->t_update = q->t_update;
    g->mem_peak = q->mem_peak;
    g->mem_cap = q->mem_cap;
    g->dev = malloc(sizeof(int) * q->n_devices);
    g->share = malloc(sizeof(int64_t) * (nrep + 1));
    g->t_fwd = malloc(sizeof(double) * nrep);
    g->t_bwd = malloc(sizeof(double) * nrep);
    if (!g->dev || !g->share || !g->t_fwd || !g->t_bwd) {
      ok = 0;
      break;
    }
    memcpy(g->dev, q->devices, sizeof(int) * q->n_devices);
    memcpy(g->share, q->shares, sizeof(int64_t) * nrep);
    memcpy(g->t_fwd, q->t_fwd, sizeof(double) * nrep);
    memcpy(g->t_bwd, q->t_bwd, sizeof(double) * nrep);
  }
  if (!ok) {
    wh_plan_destroy(p);
    return pfail(L, WH_ERR_OUT_OF_MEMORY, "out of memory building a plan of %d stages on %d devices", S, nd);
  }
  *out = p;
  return WH_OK;
}

wh_status wh_plan_load(wh_ctx *ctx, const char *path, wh_plan **out) {
  if (!ctx) return WH_ERR_INVALID_ARGUMENT;
  if (!out || !path) {
    wh__ctx_set_error(ctx, "wh_plan_load: %s is NULL", out ? "path" : "out");
    return WH_ERR_INVALID_ARGUMENT;
  }
  *out = NULL;
  pload L = {ctx, path};
  uint8_t *buf = NULL;
  size_t len = 0;
  int err = 0;
  wh_status st = wh__read_file(path, &buf, &len, &err);
  if (st != WH_OK)
    return st == WH_ERR_IO ? pfail(&L, st, "cannot read: %s", strerror(err))
                           : pfail(&L, st, "out of memory reading the file");
  Whale__Plan *m = whale__plan__unpack(NULL, len, buf);
  free(buf);
  if (!m) return pfail(&L, WH_ERR_CORRUPT, "not a valid protobuf plan message (%zu bytes; truncated or corrupt)", len);
  st = check(&L, m);
  if (st == WH_OK) st = build(&L, m, out);
  whale__plan__free_unpacked(m, NULL);
  return st;
}
