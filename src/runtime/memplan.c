/* memplan.c - greedy best-fit placement by decreasing size (the classic offline heuristic):
 * each buffer goes to the lowest gap that no lifetime-overlapping, already placed buffer uses. */
#include "memplan.h"

#include <stdlib.h>

typedef struct {
  int64_t off, end;
} span;

static int cmp_span(const void *a, const void *b) {
  const span *x = a, *y = b;
  return x->off < y->off ? -1 : x->off > y->off;
}

typedef struct {
  const int64_t *size;
  const int *first;
} sort_ctx;

/* larger first; ties by first use, then index, so the plan is deterministic */
static int cmp_order(const void *a, const void *b, void *arg) {
  const sort_ctx *c = arg;
  int x = *(const int *)a, y = *(const int *)b;
  if (c->size[x] != c->size[y]) return c->size[x] > c->size[y] ? -1 : 1;
  if (c->first[x] != c->first[y]) return c->first[x] < c->first[y] ? -1 : 1;
  return x < y ? -1 : x > y;
}

int64_t wh__memplan(int n, const int64_t *size, const int *first, const int *last, int64_t *offset) {
  int *order = malloc(sizeof(int) * (size_t)(n ? n : 1));
  int *placed = malloc(sizeof(int) * (size_t)(n ? n : 1));
  span *busy = malloc(sizeof(span) * (size_t)(n ? n : 1));
  if (!order || !placed || !busy) {
    free(order), free(placed), free(busy);
    return -1;
  }
  int m = 0;
  for (int i = 0; i < n; i++) {
    offset[i] = 0;
    if (size[i] > 0) order[m++] = i;
  }
  sort_ctx sc = {size, first};
  qsort_r(order, (size_t)m, sizeof(int), cmp_order, &sc);
  int np = 0;
  int64_t total = 0;
  for (int t = 0; t < m; t++) {
    int v = order[t];
    int64_t need = (size[v] + WH_ALIGN - 1) / WH_ALIGN * WH_ALIGN;
    int nb = 0;
    for (int k = 0; k < np; k++) {
      int u = placed[k];
      if (first[u] <= last[v] && first[v] <= last[u]) busy[nb++] = (span){offset[u], offset[u] + ((size[u] + WH_ALIGN - 1) / WH_ALIGN * WH_ALIGN)};
    }
    qsort(busy, (size_t)nb, sizeof(span), cmp_span);
    int64_t best = -1, best_gap = INT64_MAX, cur = 0;
    for (int k = 0; k < nb; k++) {
      if (busy[k].off - cur >= need && busy[k].off - cur < best_gap) {
        best = cur;
        best_gap = busy[k].off - cur;
      }
      if (busy[k].end > cur) cur = busy[k].end;
    }
    if (best < 0) best = cur;
    offset[v] = best;
    if (best + need > total) total = best + need;
    placed[np++] = v;
  }
  free(order), free(placed), free(busy);
  return total;
}
