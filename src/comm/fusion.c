/* fusion.c - gradient fusion: small tensors are packed into buckets and each bucket's allreduce
 * starts the moment it is full, so communication overlaps the caller's remaining work. A tensor
 * larger than a bucket is reduced in place on its own. Every rank must add the same tensors in
 * the same order (the collectives then match). */
#include <stdlib.h>
#include <string.h>

#include "../base/ctx.h"
#include "comm.h"

typedef struct {
  void *ptr;
  size_t count;
} entry;

typedef struct {
  char *buf;        /* packed values (NULL for a tensor reduced in place) */
  size_t cap, used; /* bytes */
  entry *e;
  int ne, cap_e;
  wh_request *req;
  int state;        /* 0 filling, 1 running, 2 done */
  double started;   /* when its all-reduce started */
} bucket;

struct wh_fusion {
  wh_comm *c;
  size_t bucket_bytes, es;
  wh_dtype dt;
  wh_reduce_op op;
  bucket *b;
  int nb, cap_b, cur; /* cur: the bucket being filled, -1 none */
  int started;
  wh_status err;       /* a bucket's all-reduce failed: every later call returns it */
  double busy, exposed; /* seconds the all-reduces ran (start to seen done), and were waited for */
};

void wh__fusion_times(const wh_fusion *f, double *busy, double *exposed) {
  *busy = f ? f->busy : 0;
  *exposed = f ? f->exposed : 0;
}

wh_status wh_fusion_create(wh_comm *c, size_t bucket_bytes, wh_dtype dt, wh_reduce_op op, wh_fusion **out) {
  if (!c || !out) return WH_ERR_INVALID_ARGUMENT;
  *out = NULL;
  if (!wh__comm_dtype_ok(dt) || bucket_bytes < wh__comm_dtype_size(dt) || (op != WH_REDUCE_SUM && op != WH_REDUCE_AVG)) {
    wh__ctx_set_error(c->ctx, "wh_fusion_create: bucket of %zu bytes, dtype %d, op %d do not fit", bucket_bytes,
                      (int)dt, (int)op);
    return WH_ERR_INVALID_ARGUMENT;
  }
  wh_fusion *f = calloc(1, sizeof *f);
  if (!f) return WH_ERR_OUT_OF_MEMORY;
  f->c = c;
  f->dt = dt;
  f->es = wh__comm_dtype_size(dt);
  f->bucket_bytes = bucket_bytes / f->es * f->es;
  f->op = op;
  f->cur = -1;
  *out = f;
  return WH_OK;
}

void wh_fusion_destroy(wh_fusion *f) {
  if (!f) return;
  for (int i = 0; i < f->nb; i++) {
    if (f->b[i].req) wh_request_wait(f->b[i].req); /* bounded by the deadline */
    free(f->b[i].buf);
    free(f->b[i].e);
  }
  free(f->b);
  free(f);
}

int wh_fusion_buckets_started(const wh_fusion *f) { return f ? f->started : 0; }

static int next_bucket(wh_fusion *f) {
  /* reuse a finished bucket's memory before growing */
  for (int i = 0; i < f->nb; i++)
    if (f->b[i].state == 2) {
      f->b[i].state = 0;
      f->b[i].used = 0;
      f->b[i].ne = 0;
      return i;
    }
  if (f->nb == f->cap_b) {
    int nc = f->cap_b ? 2 * f->cap_b : 8;
    bucket *nb = realloc(f->b, sizeof(bucket) * (size_t)nc);
    if (!nb) return -1;
    memset(nb + f->cap_b, 0, sizeof(bucket) * (size_t)(nc - f->cap_b));
    f->b = nb;
    f->cap_b = nc;
  }
  return f->nb++;
}

static int push_entry(bucket *b, void *ptr, size_t count) {
  if (b->ne == b->cap_e) {
    int nc = b->cap_e ? 2 * b->cap_e : 16;
    entry *ne = realloc(b->e, sizeof(entry) * (size_t)nc);
    if (!ne) return 0;
    b->e = ne;
    b->cap_e = nc;
  }
  b->e[b->ne++] = (entry){ptr, count};
  return 1;
}

static void unpack(wh_fusion *f, bucket *b) {
  if (b->buf) {
    size_t off = 0;
    for (int i = 0; i < b->ne; i++) {
      memcpy(b->e[i].ptr, b->buf + off, b->e[i].count * f->es);
      off += b->e[i].count * f->es;
    }
  }
  b->state = 2;
}

static wh_status start(wh_fusion *f, int i) {
  bucket *b = &f->b[i];
  void *data = b->buf ? (void *)b->buf : b->e[0].ptr;
  wh_status st = wh_comm_iallreduce(f->c, NULL, data, b->used / f->es, f->dt, f->op, &b->req);
  if (st != WH_OK) return st;
  b->state = 1;
  b->started = wh__now();
  f->started++;
  if (f->cur == i) f->cur = -1;
  return WH_OK;
}

wh_status wh_fusion_poll(wh_fusion *f) {
  if (!f) return WH_ERR_INVALID_ARGUMENT;
  if (f->err != WH_OK) return f->err;
  for (int i = 0; i < f->nb; i++) {
    bucket *b = &f->b[i];
    if (b->state != 1) continue;
    int done = 0;
    wh_status st = wh_request_test(b->req, &done);
    if (done) b->req = NULL;
    if (st != WH_OK) {
      b->state = 2;
      return f->err = st;
    }
    if (done) {
      f->busy += wh__now() - b->started;
      unpack(f, b);
    }
  }
  return WH_OK;
}

wh_status wh_fusion_add(wh_fusion *f, void *tensor, size_t count) {
  if (!f) return WH_ERR_INVALID_ARGUMENT;
  if (f->err != WH_OK) return f->err;
  if (count && !tensor) {
    wh__ctx_set_error(f->c->ctx, "wh_fusion_add: tensor is NULL for %zu elements", count);
    return WH_ERR_INVALID_ARGUMENT;
  }
  if (count == 0) return wh_fusion_poll(f);
  size_t bytes = count * f->es;
  wh_status st;
  if (bytes >= f->bucket_bytes) {
    /* a big tensor: its own bucket, reduced in place, after whatever is being filled */
    if (f->cur >= 0 && (st = start(f, f->cur)) != WH_OK) return st;
    int i = next_bucket(f);
    if (i < 0 || !push_entry(&f->b[i], tensor, count)) return WH_ERR_OUT_OF_MEMORY;
    free(f->b[i].buf);
    f->b[i].buf = NULL;
    f->b[i].cap = 0;
    f->b[i].used = bytes;
    if ((st = start(f, i)) != WH_OK) return st;
    return wh_fusion_poll(f);
  }
  if (f->cur >= 0 && f->b[f->cur].used + bytes > f->bucket_bytes && (st = start(f, f->cur)) != WH_OK) return st;
  if (f->cur < 0) {
    int i = next_bucket(f);
    if (i < 0) return WH_ERR_OUT_OF_MEMORY;
    bucket *b = &f->b[i];
    if (!b->buf || b->cap < f->bucket_bytes) {
      char *nbuf = realloc(b->buf, f->bucket_bytes);
      if (!nbuf) return WH_ERR_OUT_OF_MEMORY;
      b->buf = nbuf;
      b->cap = f->bucket_bytes;
    }
    f->cur = i;
  }
  bucket *b = &f->b[f->cur];
  if (!push_entry(b, tensor, count)) return WH_ERR_OUT_OF_MEMORY;
  memcpy(b->buf + b->used, tensor, bytes);
  b->used += bytes;
  if (b->used == f->bucket_bytes && (st = start(f, f->cur)) != WH_OK) return st;
  return wh_fusion_poll(f);
}

wh_status wh_fusion_wait(wh_fusion *f) {
  if (!f) return WH_ERR_INVALID_ARGUMENT;
  if (f->err != WH_OK) return f->err;
  wh_status st;
  if (f->cur >= 0 && f->b[f->cur].used > 0 && (st = start(f, f->cur)) != WH_OK) return st;
  for (int i = 0; i < f->nb; i++) {
    bucket *b = &f->b[i];
    if (b->state != 1) continue;
    double t0 = wh__now();
    st = wh_request_wait(b->req);
    double t1 = wh__now();
    f->exposed += t1 - t0, f->busy += t1 - b->started;
    b->req = NULL;
    if (st != WH_OK) {
      b->state = 2;
      return f->err = st;
    }
    unpack(f, b);
  }
  for (int i = 0; i < f->nb; i++) f->b[i].state = 2; /* every bucket free for the next round */
  f->cur = -1;
  return WH_OK;
}
