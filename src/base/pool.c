/* pool.c - worker threads for kernels' parallel loops (see pool.h).
 * One job at a time: the caller publishes it, wakes the workers, runs range 0 itself, and waits. */
#include "pool.h"

#include <pthread.h>
#include <stdlib.h>

struct wh__pool {
  int n;
  pthread_t *threads;
  pthread_mutex_t mu;
  pthread_cond_t wake, done;
  uint64_t generation;
  int pending;
  int quit;
  /* the current job */
  wh__slot_fn fn;
  void *arg;
  int64_t total, chunk;
  int nchunks;
};

typedef struct {
  wh__pool *p;
  int id;
} worker_arg;

static void run_chunk(wh__pool *p, int id) {
  int64_t b = (int64_t)id * p->chunk;
  int64_t e = b + p->chunk;
  if (e > p->total) e = p->total;
  if (b < e) p->fn(p->arg, b, e, id);
}

static void *worker(void *a) {
  worker_arg wa = *(worker_arg *)a;
  free(a);
  wh__pool *p = wa.p;
  uint64_t seen = 0;
  pthread_mutex_lock(&p->mu);
  for (;;) {
    while (!p->quit && p->generation == seen) pthread_cond_wait(&p->wake, &p->mu);
    if (p->quit) break;
    seen = p->generation;
    int active = wa.id < p->nchunks;
    pthread_mutex_unlock(&p->mu);
    if (active) run_chunk(p, wa.id);
    pthread_mutex_lock(&p->mu);
    if (--p->pending == 0) pthread_cond_signal(&p->done);
  }
  pthread_mutex_unlock(&p->mu);
  return NULL;
}

wh_status wh__pool_create(int nthreads, wh__pool **out) {
  if (nthreads < 1) nthreads = 1;
  wh__pool *p = calloc(1, sizeof *p);
  if (!p) return WH_ERR_OUT_OF_MEMORY;
  p->n = nthreads;
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->wake, NULL);
  pthread_cond_init(&p->done, NULL);
  if (nthreads > 1) {
    p->threads = calloc((size_t)nthreads - 1, sizeof *p->threads);
    if (!p->threads) {
      wh__pool_destroy(p);
      return WH_ERR_OUT_OF_MEMORY;
    }
    for (int i = 1; i < nthreads; i++) {
      worker_arg *wa = malloc(sizeof *wa);
      if (wa) *wa = (worker_arg){p, i};
      if (!wa || pthread_create(&p->threads[i - 1], NULL, worker, wa) != 0) {
        free(wa);
        p->n = i; /* threads [1, i) exist */
        wh__pool_destroy(p);
        return WH_ERR_OUT_OF_MEMORY;
      }
    }
  }
  *out = p;
  return WH_OK;
}

void wh__pool_destroy(wh__pool *p) {
  if (!p) return;
  pthread_mutex_lock(&p->mu);
  p->quit = 1;
  pthread_cond_broadcast(&p->wake);
  pthread_mutex_unlock(&p->mu);
  for (int i = 1; i < p->n && p->threads; i++) pthread_join(p->threads[i - 1], NULL);
  free(p->threads);
  pthread_mutex_destroy(&p->mu);
  pthread_cond_destroy(&p->wake);
  pthread_cond_destroy(&p->done);
  free(p);
}

int wh__pool_size(const wh__pool *p) { return p ? p->n : 1; }

void wh__parallel_for_slots(wh__pool *p, int64_t n, int64_t grain, wh__slot_fn fn, void *arg) {
  if (n <= 0) return;
  if (grain < 1) grain = 1;
  int64_t maxchunks = (n + grain - 1) / grain;
  int nt = p ? p->n : 1;
  if (nt <= 1 || maxchunks <= 1) {
    fn(arg, 0, n, 0);
    return;
  }
  int nchunks = maxchunks < nt ? (int)maxchunks : nt;
  pthread_mutex_lock(&p->mu);
  p->fn = fn;
  p->arg = arg;
  p->total = n;
  p->nchunks = nchunks;
  p->chunk = (n + nchunks - 1) / nchunks;
  p->pending = p->n - 1;
  p->generation++;
  pthread_cond_broadcast(&p->wake);
  pthread_mutex_unlock(&p->mu);
  run_chunk(p, 0);
  pthread_mutex_lock(&p->mu);
  while (p->pending > 0) pthread_cond_wait(&p->done, &p->mu);
  pthread_mutex_unlock(&p->mu);
}

typedef struct {
  wh__range_fn fn;
  void *arg;
} plain_job;

static void plain_range(void *arg, int64_t b, int64_t e, int slot) {
  (void)slot;
  plain_job *j = arg;
  j->fn(j->arg, b, e);
}

void wh__parallel_for(wh__pool *p, int64_t n, int64_t grain, wh__range_fn fn, void *arg) {
  plain_job j = {fn, arg};
  wh__parallel_for_slots(p, n, grain, plain_range, &j);
}
