/* request.c - the request engine every backend shares: requests of a comm, their deadlines, the
 * progress of all of a comm's requests on every wait, and naming the peers that stopped answering. */
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../base/ctx.h"
#include "comm.h"

wh_request *wh__req_new(wh_comm *c, const char *op, size_t bytes, int peer) {
  wh_request *r = calloc(1, sizeof *r);
  if (!r) return NULL;
  r->comm = c;
  r->op = op;
  r->bytes = bytes;
  r->peer = peer;
  r->waiting_on = peer;
  r->start = wh__now();
  r->next = c->active;
  c->active = r;
  return r;
}

void wh__req_free(wh_request *r) {
  if (!r) return;
  for (wh_request **p = &r->comm->active; *p; p = &(*p)->next)
    if (*p == r) {
      *p = r->next;
      break;
    }
  if (r->release) r->release(r);
  free(r);
}

/* After a deadline: ask the peers in question (or all) whether they answer, and say who did not. */
static wh_status fail_timeout(wh_request *r, double waited) {
  wh_comm *c = r->comm;
  int np = 0, silent = 0;
  int *peers = calloc((size_t)c->size + 1, sizeof(int)), *alive = calloc((size_t)c->size + 1, sizeof(int));
  char list[512] = "", who[640] = "the liveness probe could not run (out of memory)";
  if (peers && alive) {
    /* probe everyone: in a ring the awaited neighbour may be alive and stuck behind the dead one */
    for (int i = 0; i < c->size; i++)
      if (i != c->rank) peers[np++] = i;
    c->ops->probe(c, peers, np, alive, 2.0);
    size_t o = 0;
    for (int i = 0; i < np && o < sizeof list - 16; i++)
      if (!alive[i]) o += (size_t)snprintf(list + o, sizeof list - o, "%s%d", silent++ ? ", " : "", peers[i]);
    if (silent)
      snprintf(who, sizeof who, "peer rank%s %s did not answer a liveness probe (dead or stopped)", silent > 1 ? "s" : "",
               list);
    else
      snprintf(who, sizeof who, "every peer answers a liveness probe: some rank is in another operation or busy");
  }
  free(peers);
  free(alive);
  c->broken = 1;
  c->ctx->comm_broken = 1;
  char await[48] = "";
  if (r->waiting_on >= 0) snprintf(await, sizeof await, ", waiting on rank %d", r->waiting_on);
  wh__ctx_set_error(c->ctx, "%s of %zu bytes on rank %d of %d (%s%s): no progress after %.1f s (timeout %.1f s): %s",
                    r->op, r->bytes, c->rank, c->size, c->ops->name, await, waited, c->timeout, who);
  return WH_ERR_TIMEOUT;
}

static wh_status step(wh_request *r, int *done) {
  char msg[512] = "";
  wh_status st = r->progress(r, done, msg, sizeof msg);
  if (st != WH_OK) {
    r->comm->broken = 1;
    r->comm->ctx->comm_broken = 1;
    char peer[32] = "";
    if (r->waiting_on >= 0) snprintf(peer, sizeof peer, ", peer rank %d", r->waiting_on);
    wh__ctx_set_error(r->comm->ctx, "%s of %zu bytes on rank %d of %d (%s%s) failed after %.1f s: %s", r->op,
                      r->bytes, r->comm->rank, r->comm->size, r->comm->ops->name, peer, wh__now() - r->start, msg);
  }
  return st;
}

/* Advance every unfinished request of the comm; a failure is kept on its request. */
static void progress_all(wh_comm *c) {
  for (wh_request *q = c->active; q; q = q->next) {
    if (q->done || !q->progress) continue;
    int d = 0;
    wh_status st = step(q, &d);
    if (st != WH_OK) {
      q->done = 1;
      q->status = st;
      memcpy(q->err, c->ctx->err, sizeof q->err - 1);
      q->err[sizeof q->err - 1] = 0;
    } else if (d) {
      q->done = 1;
      q->status = WH_OK;
    }
  }
}

/* One round for r: advance everything, then judge r. Returns 1 when r has an outcome in *st. */
static int round_for(wh_request *r, wh_status *st) {
  wh_comm *c = r->comm;
  progress_all(c);
  if (r->done) {
    *st = r->status;
    if (*st != WH_OK) wh__ctx_set_error(c->ctx, "%s", r->err);
    return 1;
  }
  if (c->broken) {
    char prev[1024]; /* the failure that broke it: copied, the message is rewritten in place */
    snprintf(prev, sizeof prev, "%s", c->ctx->err);
    wh__ctx_set_error(c->ctx, "%s of %zu bytes on rank %d of %d (%s): the communicator broke while it waited (%s)",
                      r->op, r->bytes, c->rank, c->size, c->ops->name, prev);
    *st = WH_ERR_COMM;
    return 1;
  }
  c->ops->service(c);
  /* the deadline is about silence: it runs from the first wait (a collective may be started long
   * before anyone waits on it) or from the last time the request was seen advancing */
  double now = wh__now();
  if (r->last == 0 || r->ticks != r->seen_ticks) {
    r->last = now;
    r->seen_ticks = r->ticks;
  }
  double waited = now - r->last;
  if (waited > c->timeout) {
    *st = fail_timeout(r, waited);
    return 1;
  }
  return 0;
}

wh_status wh_request_test(wh_request *r, int *done) {
  if (!r || !done) return WH_ERR_INVALID_ARGUMENT;
  wh_status st = WH_OK;
  *done = round_for(r, &st);
  if (*done) wh__req_free(r);
  return st;
}

wh_status wh_request_wait(wh_request *r) {
  if (!r) return WH_ERR_INVALID_ARGUMENT;
  wh_status st = WH_OK;
  for (unsigned spins = 0;; spins++) {
    if (round_for(r, &st)) break;
    double waited = wh__now() - r->last;
    /* ranks can outnumber cores: let a peer on this core run, and when they do, back off in long
     * waits too (with a core each, a sleep only adds latency) */
    if (spins > 64) sched_yield();
    if (waited > 0.01 && r->comm->oversubscribed) {
      struct timespec ts = {0, 100000};
      nanosleep(&ts, NULL);
    }
  }
  wh__req_free(r);
  return st;
}

