/* embedding.c - CPU gather of table rows by index, and its gradient: a scatter-add threaded
 * over the embedding width so that each output element is summed in token order. */
#include <stdio.h>
#include <string.h>

#include "../kernels.h"

wh_status wh__check_rows(wh__exec *ex, const int32_t *ix, int64_t n, int64_t v) {
  for (int64_t i = 0; i < n; i++)
    if (ix[i] < 0 || ix[i] >= v) {
      if (ex->err)
        snprintf(ex->err, (size_t)ex->err_cap, "index %d at position %lld is outside the table's %lld rows", (int)ix[i],
                 (long long)i, (long long)v);
      return WH_ERR_INVALID_ARGUMENT;
    }
  return WH_OK;
}

typedef struct {
  const float *src;
  float *dst;
  const int32_t *ix;
  int64_t n, d;
} emb_job;

static void gather_range(void *arg, int64_t t0, int64_t t1) {
  emb_job *j = arg;
  for (int64_t t = t0; t < t1; t++) memcpy(j->dst + t * j->d, j->src + (int64_t)j->ix[t] * j->d, sizeof(float) * (size_t)j->d);
}

wh_status wh__cpu_embedding(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out) {
  (void)n;
  int64_t d = in[0].d[1];
  wh_status s = wh__check_rows(ex, in[1].data, in[1].numel, in[0].d[0]);
  if (s != WH_OK) return s;
  emb_job j = {.src = wh__f32(&in[0]), .dst = wh__f32(out), .ix = in[1].data, .n = in[1].numel, .d = d};
  wh__parallel_for(ex->pool, j.n, 1 + 4096 / (d + 1), gather_range, &j);
  return WH_OK;
}

/* columns [c0, c1) of every row, tokens in order */
static void scatter_cols(void *arg, int64_t c0, int64_t c1) {
  emb_job *j = arg;
  for (int64_t t = 0; t < j->n; t++) {
    const float *g = j->src + t * j->d;
    float *row = j->dst + (int64_t)j->ix[t] * j->d;
    for (int64_t c = c0; c < c1; c++) row[c] += g[c];
  }
}

wh_status wh__cpu_embedding_grad(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out) {
  int64_t d = out->d[1];
  wh_status s = wh__check_rows(ex, in[0].data, in[0].numel, n->ia[0]);
  if (s != WH_OK) return s;
  memset(out->data, 0, sizeof(float) * (size_t)out->numel);
  emb_job j = {.src = wh__f32(&in[1]), .dst = wh__f32(out), .ix = in[0].data, .n = in[0].numel, .d = d};
  wh__parallel_for(ex->pool, d, 16, scatter_cols, &j);
  return WH_OK;
}
