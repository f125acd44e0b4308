/* mpi.c - the MPI backend. Point-to-point, broadcast and barrier are MPI's own non-blocking
 * calls; allreduce, reduce-scatter and all-gather are rings built from Isend/Irecv, so every step
 * knows the peer it waits for and a deadline can name it. Three duplicates of the host's
 * communicator keep user messages, collectives and liveness probes apart. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../base/ctx.h"
#include "../comm.h"
#include "liveness.h"

#define CHUNK_BYTES (512u << 10) /* ring chunks: the reduction of one overlaps the transfer of the next */
/* Reduce-scatter receives land in a window of this many chunk-sized staging slots, reused as the
 * chunks are reduced: staging is bounded (4 MB) whatever the message size, and one window per
 * communicator is kept between calls, so a large allreduce does not fault in fresh pages. */
#define WINDOW 8
#ifndef GATHER_CHUNK_BYTES
#define GATHER_CHUNK_BYTES (1u << 30)
#endif

typedef struct ring ring;

typedef struct {
  MPI_Comm data, coll, ctrl;
  wh__live live;     /* answers liveness probes on ctrl */
  char *stage;    /* a cached staging window, free when stage_busy is 0 */
  int stage_busy;
  ring *head, *tail; /* unfinished rings, in start order: each progress call advances them all */
  int rings;      /* ring requests holding this struct: destroy leaves freeing it to the last */
  int destroyed;
} mpi_impl;

static void mpi_msg(int rc, const char *what, char *msg, size_t cap) {
  char s[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, s, &len);
  snprintf(msg, cap, "%s: %s", what, s);
}

static MPI_Datatype mpi_type(wh_dtype dt) {
  switch (dt) {
    case WH_F32: return MPI_FLOAT;
    case WH_F64: return MPI_DOUBLE;
    case WH_I32: return MPI_INT32_T;
    default: return MPI_UINT16_T; /* bf16 travels as its bits */
  }
}


static wh_status setup(wh_comm *c, MPI_Comm parent, char *msg, size_t cap) {
  mpi_impl *m = calloc(1, sizeof *m);
  if (!m) return WH_ERR_OUT_OF_MEMORY;
  MPI_Comm *dups[3] = {&m->data, &m->coll, &m->ctrl};
  if (wh__mpi_attach(parent, dups, 3, c, msg, cap) != WH_OK) {
    free(m);
    return WH_ERR_COMM;
  }
  if (wh__live_open(&m->live, m->ctrl, c->rank) != WH_OK) {
    snprintf(msg, cap, "could not post the liveness-probe receive");
    for (int k = 0; k < 3; k++) MPI_Comm_free(dups[k]);
    free(m);
    return WH_ERR_COMM;
  }
  c->impl = m;
  return WH_OK;
}

/* MPI belongs to the host: libwhale initialises it only when nobody did, and then finalises it
 * when the context is destroyed (unless a communicator broke: finalising would wait on dead peers). */
static void finalize_hook(wh_ctx *ctx, void *arg) {
  (void)arg;
  int inited = 0, fin = 0;
  MPI_Initialized(&inited);
  MPI_Finalized(&fin);
  if (inited && !fin && !ctx->comm_broken) MPI_Finalize();
}

void wh__mpi_world(wh_ctx *ctx) {
  int inited = 0, fin = 0;
  if (MPI_Initialized(&inited) != MPI_SUCCESS || !inited) return;
  MPI_Finalized(&fin);
  if (fin) return;
  MPI_Comm_rank(MPI_COMM_WORLD, &ctx->rank);
  MPI_Comm_size(MPI_COMM_WORLD, &ctx->size);
}

wh_status wh__mpi_ensure_init(wh_ctx *ctx, const wh_comm_options *o, const char *what, char *msg, size_t cap) {
  int inited = 0, fin = 0;
  MPI_Initialized(&inited);
  MPI_Finalized(&fin);
  if (fin) {
    snprintf(msg, cap, "%s was already finalised", what);
    return WH_ERR_STATE;
  }
  if (!inited) {
    if (o->mpi_comm) {
      snprintf(msg, cap, "a host communicator was given but MPI is not initialised");
      return WH_ERR_INVALID_ARGUMENT;
    }
    int provided = 0;
    int rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_SERIALIZED, &provided);
    if (rc != MPI_SUCCESS) {
      mpi_msg(rc, "MPI_Init_thread", msg, cap);
      return WH_ERR_COMM;
    }
    if (wh__ctx_on_destroy(ctx, finalize_hook, NULL) != WH_OK) {
      snprintf(msg, cap, "the context has no room left for MPI's finalisation");
      return WH_ERR_INTERNAL;
    }
  }
  wh__mpi_world(ctx);
  return WH_OK;
}

wh_status wh__mpi_create(wh_comm *c, const wh_comm_options *o, char *msg, size_t cap) {
  wh_status est = wh__mpi_ensure_init(c->ctx, o, "MPI", msg, cap);
  if (est != WH_OK) return est;
  MPI_Comm parent = o->mpi_comm ? *(const MPI_Comm *)o->mpi_comm : MPI_COMM_WORLD;
  wh_status st = setup(c, parent, msg, cap);
  if (st != WH_OK) return st;
  wh_launch_info li = wh_launch_detect();
  if (li.size > 1 && !o->mpi_comm && c->size != li.size) {
    snprintf(msg, cap,
             "the launcher (%s) started %d processes but MPI sees %d: the MPI backend needs an MPI launcher "
             "(mpirun, mpiexec or srun)",
             li.launcher, li.size, c->size);
    wh__mpi_ops.destroy(c);
    return WH_ERR_STATE;
  }
  return WH_OK;
}

/* ---- point to point, broadcast, barrier: one MPI request */

typedef struct {
  MPI_Request req;
  int p2p; /* a send or receive (collectives may not be freed unfinished) */
} one_req;

static wh_status one_progress(wh_request *r, int *done, char *msg, size_t cap) {
  one_req *s = r->state;
  MPI_Status status;
  int rc = MPI_Test(&s->req, done, &status);
  if (rc != MPI_SUCCESS) {
    mpi_msg(rc, "MPI_Test", msg, cap);
    return WH_ERR_COMM;
  }
  return WH_OK;
}

static int mpi_gone(void) {
  int fin = 0;
  MPI_Finalized(&fin);
  return fin;
}

static void one_release(wh_request *r) {
  one_req *s = r->state;
  /* an unfinished receive is cancelled first, or a late message would still land in the caller's
   * buffer; an unfinished send may be freed; an unfinished non-blocking collective may not (MPI
   * makes that an error, fatal under the default handler): after a timeout the comm is broken
   * anyway, so such a request is left to MPI */
  if (s && s->req != MPI_REQUEST_NULL && s->p2p && !mpi_gone()) {
    if (s->p2p == 2) MPI_Cancel(&s->req);
    MPI_Request_free(&s->req);
  }
  free(s);
}

static wh_status one_start(wh_request *r, int rc) {
  one_req *s = r->state;
  if (rc != MPI_SUCCESS) {
    free(s);
    r->state = NULL;
    return WH_ERR_COMM;
  }
  r->progress = one_progress;
  r->release = one_release;
  return WH_OK;
}

static one_req *one_new(wh_request *r) {
  one_req *s = calloc(1, sizeof *s);
  if (s) s->req = MPI_REQUEST_NULL;
  r->state = s;
  return s;
}

static wh_status m_isend(wh_comm *c, const void *buf, size_t count, wh_dtype dt, int peer, int tag, wh_request *r) {
  one_req *s = one_new(r);
  if (!s) return WH_ERR_OUT_OF_MEMORY;
  mpi_impl *m = c->impl;
  s->p2p = 1;
  return one_start(r, MPI_Isend(buf, (int)count, mpi_type(dt), peer, tag, m->data, &s->req));
}

static wh_status m_irecv(wh_comm *c, void *buf, size_t count, wh_dtype dt, int peer, int tag, wh_request *r) {
  one_req *s = one_new(r);
  if (!s) return WH_ERR_OUT_OF_MEMORY;
  mpi_impl *m = c->impl;
  s->p2p = 2; /* a receive: cancelled if freed unfinished */
  return one_start(r, MPI_Irecv(buf, (int)count, mpi_type(dt), peer, tag, m->data, &s->req));
}

static wh_status m_ibroadcast(wh_comm *c, void *buf, size_t count, wh_dtype dt, int root, wh_request *r) {
  one_req *s = one_new(r);
  if (!s) return WH_ERR_OUT_OF_MEMORY;
  mpi_impl *m = c->impl;
  return one_start(r, MPI_Ibcast(buf, (int)count, mpi_type(dt), root, m->coll, &s->req));
}

static wh_status m_ibarrier(wh_comm *c, wh_request *r) {
  one_req *s = one_new(r);
  if (!s) return WH_ERR_OUT_OF_MEMORY;
  mpi_impl *m = c->impl;
  return one_start(r, MPI_Ibarrier(m->coll, &s->req));
}

/* ---- rings */

enum { RING_ALLREDUCE, RING_REDUCE_SCATTER, RING_ALLGATHER };

struct ring {
  mpi_impl *m;
  wh_request *req;
  ring *prev, *nxt;  /* in m's list while unfinished */
  wh_status err;     /* a failure met while another request advanced this ring */
  char errmsg[256];
  MPI_Comm comm;
  int tag, rank, n, left, right, mode;
  wh_dtype dt;
  size_t es;
  char *buf;        /* working buffer: segments live here */
  char *out;        /* reduce-scatter: where this rank's block goes */
  char *own;        /* reduce-scatter: a private copy of send */
  const char *src;  /* allreduce out of place: the caller's send, read where buf has no data yet */
  const char *blk;  /* all-gather out of place: this rank's block, sent from there at the first step
                     * and copied into buf while that transfer runs */
  size_t *off, *cnt; /* segments, in elements */
  int phase;        /* 0 reduce-scatter, 1 all-gather, 2 done */
  int step;
  double scale;     /* AVG: 1/n, else 0 */
  /* the current step */
  int posted, nchunks, next, nrecv;
  size_t chunk;     /* elements per chunk */
  char *tmp;        /* WINDOW chunks of staging (reduce-scatter phase) */
  MPI_Request *rreq, *sreq;
  int cap_req;
};

static int mod(int a, int n) { return ((a % n) + n) % n; }

static void ring_unlink(ring *g) {
  mpi_impl *m = g->m;
  if (!g->req) return; /* not linked */
  if (g->prev) g->prev->nxt = g->nxt; else m->head = g->nxt;
  if (g->nxt) g->nxt->prev = g->prev; else m->tail = g->prev;
  g->prev = g->nxt = NULL;
  g->req = NULL;
}

static void ring_release(wh_request *r) {
  ring *g = r->state;
  if (!g) return;
  ring_unlink(g);
  int pending = 0, sending = 0; /* unfinished transfers (after a failure) may still touch buffers */
  int gone = mpi_gone();
  for (int i = 0; g->rreq && i < g->cap_req; i++) {
    if (g->rreq[i] != MPI_REQUEST_NULL) {
      pending = 1;
      if (!gone) {
        MPI_Cancel(&g->rreq[i]);
        MPI_Request_free(&g->rreq[i]);
      }
    }
    if (g->sreq[i] != MPI_REQUEST_NULL) {
      sending = 1; /* a freed send still completes, reading its buffer */
      if (!gone) MPI_Request_free(&g->sreq[i]);
    }
  }
  free(g->rreq);
  free(g->sreq);
  free(g->off);
  free(g->cnt);
  if (!sending) free(g->own); /* else leaked: MPI may still read it */
  mpi_impl *m = g->m;
  if (pending) { /* the communicator is broken: leak the staging rather than let MPI write freed memory */
    if (g->tmp == m->stage) m->stage = NULL, m->stage_busy = 0;
  } else if (g->tmp && g->tmp == m->stage) {
    m->stage_busy = 0;
  } else {
    free(g->tmp);
  }
  if (--m->rings == 0 && m->destroyed) {
    free(m->stage);
    free(m);
  }
  free(g);
}

/* dst = a + b over n elements (dst may be a); the same sums, in the same order per element, as
 * copying a to dst and wh__reduce_add(dst, b) */
static void reduce3(char *dst, const char *a, const char *b, size_t n, wh_dtype dt) {
  if (dst != a) {
    switch (dt) {
      case WH_F32: {
        float *restrict d = (float *)dst;
        const float *restrict x = (const float *)a, *restrict y = (const float *)b;
        for (size_t i = 0; i < n; i++) d[i] = x[i] + y[i];
        return;
      }
      case WH_F64: {
        double *restrict d = (double *)dst;
        const double *restrict x = (const double *)a, *restrict y = (const double *)b;
        for (size_t i = 0; i < n; i++) d[i] = x[i] + y[i];
        return;
      }
      case WH_I32: {
        uint32_t *restrict d = (uint32_t *)dst; /* wraps, never UB */
        const uint32_t *restrict x = (const uint32_t *)a, *restrict y = (const uint32_t *)b;
        for (size_t i = 0; i < n; i++) d[i] = x[i] + y[i];
        return;
      }
      default: memcpy(dst, a, n * wh__comm_dtype_size(dt)); /* then add below (bf16 rounds there) */
    }
  }
  wh__reduce_add(dst, b, n, dt);
}

/* which segment this rank sends and receives at the current step of the current phase */
static void ring_segs(const ring *g, int *send, int *recv) {
  if (g->phase == 0) {
    *send = mod(g->rank - 1 - g->step, g->n);
    *recv = mod(g->rank - 2 - g->step, g->n);
  } else {
    *send = mod(g->rank - g->step, g->n);
    *recv = mod(g->rank - g->step - 1, g->n);
  }
}

/* post the receive of chunk k of segment rs: into staging slot k % WINDOW while reducing, else in place */
static wh_status ring_post_recv(ring *g, int k, int rs, char *msg, size_t cap) {
  size_t b = (size_t)k * g->chunk, rcnt = g->cnt[rs];
  size_t len = rcnt - b < g->chunk ? rcnt - b : g->chunk;
  char *dst = g->phase == 0 ? g->tmp + (size_t)(k % WINDOW) * g->chunk * g->es : g->buf + (g->off[rs] + b) * g->es;
  int rc = MPI_Irecv(dst, (int)(len * g->es), MPI_BYTE, g->left, g->tag, g->comm, &g->rreq[k]);
  if (rc != MPI_SUCCESS) {
    mpi_msg(rc, "MPI_Irecv", msg, cap);
    return WH_ERR_COMM;
  }
  return WH_OK;
}

static wh_status ring_post(wh_comm *c, ring *g, char *msg, size_t cap) {
  int ss, rs;
  ring_segs(g, &ss, &rs);
  size_t scnt = g->cnt[ss], rcnt = g->cnt[rs];
  size_t maxc = scnt > rcnt ? scnt : rcnt;
  /* the all-gather steps reduce nothing: one message per step saves the per-chunk handshakes */
  g->chunk = (g->phase == 0 ? CHUNK_BYTES : GATHER_CHUNK_BYTES) / g->es;
  if (g->chunk == 0) g->chunk = 1;
  g->nchunks = (int)((maxc + g->chunk - 1) / g->chunk);
  if (g->nchunks > g->cap_req) {
    free(g->rreq);
    free(g->sreq);
    g->rreq = malloc(sizeof(MPI_Request) * (size_t)g->nchunks);
    g->sreq = malloc(sizeof(MPI_Request) * (size_t)g->nchunks);
    if (!g->rreq || !g->sreq) {
      free(g->rreq), free(g->sreq);
      g->rreq = g->sreq = NULL;
      g->cap_req = 0;
      snprintf(msg, cap, "out of memory");
      return WH_ERR_OUT_OF_MEMORY;
    }
    g->cap_req = g->nchunks;
  }
  for (int i = 0; i < g->cap_req; i++) g->rreq[i] = g->sreq[i] = MPI_REQUEST_NULL;
  /* reduce-scatter receives into a window of the request's own staging (collectives run
   * concurrently) and adds; all-gather receives in place */
  if (g->phase == 0 && !g->tmp) {
    size_t need = 0;
    for (int i = 0; i < g->n; i++) need = g->cnt[i] > need ? g->cnt[i] : need;
    if (need > (size_t)WINDOW * g->chunk) need = (size_t)WINDOW * g->chunk;
    if (need * g->es <= (size_t)WINDOW * CHUNK_BYTES && g->m->stage && !g->m->stage_busy) {
      g->tmp = g->m->stage;
      g->m->stage_busy = 1;
    } else {
      g->tmp = malloc(need * g->es + 1);
      if (!g->tmp) {
        snprintf(msg, cap, "out of memory for %zu staging bytes", need * g->es);
        return WH_ERR_OUT_OF_MEMORY;
      }
      if (!g->m->stage && need * g->es + 1 >= (size_t)WINDOW * CHUNK_BYTES) {
        /* the first full window becomes the communicator's: later calls reuse it */
        g->m->stage = g->tmp;
        g->m->stage_busy = 1;
      }
    }
  }
  (void)c;
  g->nrecv = (int)((rcnt + g->chunk - 1) / g->chunk);
  for (int k = 0; k < g->nchunks; k++) {
    size_t b = (size_t)k * g->chunk;
    if (b < rcnt && (g->phase != 0 || k < WINDOW)) {
      wh_status st = ring_post_recv(g, k, rs, msg, cap);
      if (st != WH_OK) return st;
    }
    if (b < scnt) {
      size_t len = scnt - b < g->chunk ? scnt - b : g->chunk;
      /* out of place, at the first step this rank's own data is still only in send */
      const char *from = g->src && g->phase == 0 && g->step == 0 ? g->src + (g->off[ss] + b) * g->es
                         : g->blk && g->step == 0                ? g->blk + b * g->es
                                                                 : g->buf + (g->off[ss] + b) * g->es;
      int rc = MPI_Isend(from, (int)(len * g->es), MPI_BYTE, g->right, g->tag, g->comm, &g->sreq[k]);
      if (rc != MPI_SUCCESS) {
        mpi_msg(rc, "MPI_Isend", msg, cap);
        return WH_ERR_COMM;
      }
    }
  }
  g->next = 0;
  g->posted = 1;
  return WH_OK;
}

static void ring_finish_phase0(ring *g) {
  /* this rank's segment is fully reduced: average, and hand out a reduce-scatter's block */
  size_t o = g->off[g->rank] * g->es, n = g->cnt[g->rank];
  if (g->scale != 0) wh__reduce_scale(g->buf + o, n, g->dt, g->scale);
  if (g->mode == RING_REDUCE_SCATTER && g->out && n) memcpy(g->out, g->buf + o, n * g->es);
}

/* Advance one ring as far as its messages allow; phase 2 when it is complete. */
static wh_status ring_advance(ring *g, char *msg, size_t cap) {
  wh_request *r = g->req;
  wh_comm *c = r->comm;
  for (;;) {
    if (g->phase == 2) return WH_OK;
    int steps = g->phase == 0 ? g->n - 1 : (g->mode == RING_ALLREDUCE || g->mode == RING_ALLGATHER ? g->n - 1 : 0);
    if (g->step >= steps) {
      if (g->phase == 0) ring_finish_phase0(g);
      g->phase = (g->phase == 0 && g->mode == RING_ALLREDUCE) ? 1 : 2;
      g->step = 0;
      continue;
    }
    if (!g->posted) {
      wh_status st = ring_post(c, g, msg, cap);
      if (st != WH_OK) return st;
      if (g->blk) { /* the peer is reading blk meanwhile: both only read it */
        memcpy(g->buf + g->off[g->rank] * g->es, g->blk, g->cnt[g->rank] * g->es);
        g->blk = NULL; /* later steps forward received blocks from buf */
      }
    }
    int ss, rs;
    ring_segs(g, &ss, &rs);
    /* chunks arrive in order: reduce each as soon as it is in */
    while (g->next < g->nchunks) {
      int flag = 1;
      if (g->rreq[g->next] != MPI_REQUEST_NULL) {
        int rc = MPI_Test(&g->rreq[g->next], &flag, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS) {
          mpi_msg(rc, "MPI_Test (ring receive)", msg, cap);
          return WH_ERR_COMM;
        }
      }
      if (!flag) break;
      if (g->phase == 0) {
        size_t b = (size_t)g->next * g->chunk;
        if (b < g->cnt[rs]) {
          size_t len = g->cnt[rs] - b < g->chunk ? g->cnt[rs] - b : g->chunk, o = (g->off[rs] + b) * g->es;
          reduce3(g->buf + o, (g->src ? g->src : g->buf) + o, g->tmp + (size_t)(g->next % WINDOW) * g->chunk * g->es,
                  len, g->dt);
          /* the slot is free again: receive the chunk WINDOW further into it */
          if (g->next + WINDOW < g->nrecv) {
            wh_status st = ring_post_recv(g, g->next + WINDOW, rs, msg, cap);
            if (st != WH_OK) return st;
          }
        }
      }
      g->next++;
      r->ticks++;
    }
    if (g->next < g->nchunks) {
      r->waiting_on = g->left;
      return WH_OK;
    }
    int all = 0;
    int rc = MPI_Testall(g->nchunks, g->sreq, &all, MPI_STATUSES_IGNORE);
    if (rc != MPI_SUCCESS) {
      mpi_msg(rc, "MPI_Testall (ring send)", msg, cap);
      return WH_ERR_COMM;
    }
    if (!all) {
      r->waiting_on = g->right;
      return WH_OK;
    }
    g->posted = 0;
    g->step++;
    r->ticks++;
  }
}

/* Every unfinished ring of the communicator advances, not only the one asked about: a ring's next
 * step is posted by a progress call, and ranks may wait on their collectives in different orders
 * (gradient fusion reuses buckets as they finish), so a ring that only moved when waited on could
 * leave a peer waiting on it while this rank waits on another. */
static wh_status ring_progress(wh_request *r, int *done, char *msg, size_t cap) {
  ring *self = r->state;
  for (ring *g = self->m->head; g;) {
    ring *next = g->nxt;
    if (g->err == WH_OK && g->phase != 2) {
      if (g == self)
        g->err = ring_advance(g, msg, cap);
      else
        g->err = ring_advance(g, g->errmsg, sizeof g->errmsg);
      if (g == self && g->err != WH_OK) return g->err;
    }
    g = next;
  }
  if (self->err != WH_OK) { /* met while another request advanced it */
    snprintf(msg, cap, "%s", self->errmsg);
    return self->err;
  }
  *done = self->phase == 2;
  return WH_OK;
}

static wh_status ring_start(wh_comm *c, wh_request *r, int mode, char *buf, const size_t *counts, wh_dtype dt,
                            double scale) {
  ring *g = calloc(1, sizeof *g);
  if (!g) return WH_ERR_OUT_OF_MEMORY;
  mpi_impl *m = c->impl;
  g->m = m;
  g->comm = m->coll;
  g->tag = (int)(c->coll_seq % 32000u) + 16; /* MPI guarantees tags up to 32767 */
  g->rank = c->rank;
  g->n = c->size;
  g->left = mod(c->rank - 1, c->size);
  g->right = mod(c->rank + 1, c->size);
  g->mode = mode;
  g->dt = dt;
  g->es = wh__comm_dtype_size(dt);
  g->buf = buf;
  g->scale = scale;
  g->off = malloc(sizeof(size_t) * (size_t)g->n);
  g->cnt = malloc(sizeof(size_t) * (size_t)g->n);
  if (!g->off || !g->cnt) {
    free(g->off), free(g->cnt), free(g);
    return WH_ERR_OUT_OF_MEMORY;
  }
  size_t o = 0;
  for (int i = 0; i < g->n; i++) {
    g->cnt[i] = counts[i];
    g->off[i] = o;
    o += counts[i];
  }
  g->phase = mode == RING_ALLGATHER ? 1 : 0;
  m->rings++;
  g->req = r;
  g->prev = m->tail;
  if (m->tail) m->tail->nxt = g; else m->head = g;
  m->tail = g;
  r->state = g;
  r->progress = ring_progress;
  r->release = ring_release;
  r->waiting_on = g->left;
  return WH_OK;
}

static wh_status m_iallreduce(wh_comm *c, const void *send, void *recv, size_t count, wh_dtype dt, wh_reduce_op op,
                              wh_request *r) {
  size_t es = wh__comm_dtype_size(dt);
  /* out of place, the ring reads send where recv has nothing yet (no up-front copy): every
   * element of recv is written by the reduce-scatter's reductions or the all-gather's receives */
  if (send && count && c->size == 1) memcpy(recv, send, count * es);
  size_t *seg = malloc(sizeof(size_t) * (size_t)c->size);
  if (!seg) return WH_ERR_OUT_OF_MEMORY;
  for (int i = 0; i < c->size; i++) seg[i] = count / (size_t)c->size + ((size_t)i < count % (size_t)c->size);
  wh_status st = ring_start(c, r, RING_ALLREDUCE, recv, seg, dt, op == WH_REDUCE_AVG ? 1.0 / c->size : 0.0);
  free(seg);
  if (st == WH_OK && c->size > 1) ((ring *)r->state)->src = send;
  return st;
}

static wh_status m_ireduce_scatter(wh_comm *c, const void *send, void *recv, size_t recvcount, wh_dtype dt,
                                   wh_reduce_op op, wh_request *r) {
  size_t es = wh__comm_dtype_size(dt), total = recvcount * (size_t)c->size;
  char *own = malloc(total * es + 1);
  size_t *seg = malloc(sizeof(size_t) * (size_t)c->size);
  if (!own || !seg) {
    free(own), free(seg);
    return WH_ERR_OUT_OF_MEMORY;
  }
  if (total) memcpy(own, send, total * es);
  for (int i = 0; i < c->size; i++) seg[i] = recvcount;
  wh_status st = ring_start(c, r, RING_REDUCE_SCATTER, own, seg, dt, op == WH_REDUCE_AVG ? 1.0 / c->size : 0.0);
  free(seg);
  if (st != WH_OK) {
    free(own);
    return st;
  }
  ring *g = r->state;
  g->own = own;
  g->out = recv;
  return WH_OK;
}

static wh_status m_iallgather(wh_comm *c, const void *send, void *recv, const size_t *counts, wh_dtype dt,
                              wh_request *r) {
  size_t es = wh__comm_dtype_size(dt), off = 0, total = 0;
  for (int i = 0; i < c->size; i++) total += counts[i];
  for (int i = 0; i < c->rank; i++) off += counts[i];
  size_t mine = counts[c->rank] * es;
  const char *s = send, *rv = recv;
  /* a block apart from recv is sent straight from send, its copy into place overlapping the first
   * transfer; one inside recv (or a single rank) is moved into place first */
  int apart = s && mine && c->size > 1 &&
              ((uintptr_t)s + mine <= (uintptr_t)rv || (uintptr_t)s >= (uintptr_t)rv + total * es);
  if (s && mine && !apart) memmove((char *)recv + off * es, send, mine);
  wh_status st = ring_start(c, r, RING_ALLGATHER, recv, counts, dt, 0.0);
  if (st == WH_OK && apart) ((ring *)r->state)->blk = send;
  return st;
}

/* ---- liveness */

static void m_service(wh_comm *c) {
  mpi_impl *m = c->impl;
  wh__live_service(&m->live);
}

static void m_probe(wh_comm *c, const int *peers, int n, int *alive, double budget) {
  mpi_impl *m = c->impl;
  wh__live_probe(&m->live, peers, n, alive, budget);
}

static wh_status m_split(wh_comm *parent, int n, const int *ranks, int member, wh_comm *child, char *msg,
                         size_t cap) {
  mpi_impl *pm = parent->impl;
  /* MPI_Comm_split over the parent: members get color 0 and their list position as key */
  int key = 0;
  for (int i = 0; i < n; i++)
    if (ranks[i] == parent->rank) key = i;
  MPI_Comm sub;
  int rc = MPI_Comm_split(pm->data, member ? 0 : MPI_UNDEFINED, key, &sub);
  if (rc != MPI_SUCCESS) {
    mpi_msg(rc, "MPI_Comm_split", msg, cap);
    return WH_ERR_COMM;
  }
  if (!member) return WH_OK;
  wh_status st = setup(child, sub, msg, cap);
  MPI_Comm_free(&sub);
  return st;
}

static void m_destroy(wh_comm *c) {
  mpi_impl *m = c->impl;
  if (!m) return;
  if (!mpi_gone()) wh__live_close(&m->live);
  int fin = 0;
  MPI_Finalized(&fin);
  if (!fin) {
    MPI_Comm_free(&m->data);
    MPI_Comm_free(&m->coll);
    MPI_Comm_free(&m->ctrl);
  }
  c->impl = NULL;
  if (m->rings > 0) { /* unfinished rings still point here: the last one frees it */
    m->destroyed = 1;
    return;
  }
  free(m->stage);
  free(m);
}

const wh__comm_ops wh__mpi_ops = {
    "mpi", m_isend, m_irecv, m_iallreduce, m_ireduce_scatter, m_iallgather, m_ibroadcast, m_ibarrier,
    m_split, m_service, m_probe, m_destroy,
};

