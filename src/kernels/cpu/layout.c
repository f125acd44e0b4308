/* layout.c - CPU kernels that move data without arithmetic: reshape (a copy when the runtime
 * cannot alias), permute, slice and its gradient, concat. */
#include <string.h>

#include "../kmath.h"

static size_t esize(const wh__tensor *t) { return wh__dtype_size(t->dtype); }

wh_status wh__cpu_copy(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out) {
  (void)ex, (void)n;
  if (out->data != in[0].data) memcpy(out->data, in[0].data, (size_t)out->numel * esize(out));
  return WH_OK;
}

typedef struct {
  const char *x;
  char *y;
  size_t es;
  int nd;
  int64_t od[WH_MAX_DIMS], xs[WH_MAX_DIMS]; /* output dims, input stride of each output axis */
} perm_job;

static void perm_rows(void *arg, int64_t r0, int64_t r1) {
  perm_job *j = arg;
  int64_t inner = j->od[j->nd - 1], sl = j->xs[j->nd - 1];
  for (int64_t r = r0; r < r1; r++) {
    int64_t rem = r, off = 0;
    for (int k = j->nd - 2; k >= 0; k--) {
      off += (rem % j->od[k]) * j->xs[k];
      rem /= j->od[k];
    }
    if (j->es == 4) {
      const uint32_t *x = (const uint32_t *)j->x + off;
      uint32_t *y = (uint32_t *)j->y + r * inner;
      for (int64_t i = 0; i < inner; i++) y[i] = x[i * sl];
    } else {
      for (int64_t i = 0; i < inner; i++) memcpy(j->y + (r * inner + i) * j->es, j->x + (off + i * sl) * j->es, j->es);
    }
  }
}

wh_status wh__cpu_permute(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out) {
  const wh__tensor *x = &in[0];
  if (out->numel == 0) return WH_OK;
  if (x->ndim == 0) return wh__cpu_copy(ex, n, in, out);
  perm_job j = {.x = x->data, .y = out->data, .es = esize(x), .nd = x->ndim};
  int64_t st[WH_MAX_DIMS];
  wh__row_strides(x, st);
  for (int k = 0; k < x->ndim; k++) {
    j.od[k] = out->d[k];
    j.xs[k] = st[n->ia[k]];
  }
  int64_t inner = j.od[j.nd - 1];
  wh__parallel_for(ex->pool, out->numel / inner, 1 + 8192 / (inner + 1), perm_rows, &j);
  return WH_OK;
}

/* Copy blocks: outer x [len along axis] x inner, between tensors whose axis sizes differ. */
static void copy_axis(const char *src, int64_t src_axis, int64_t src_off, char *dst, int64_t dst_axis, int64_t dst_off,
                      int64_t len, int64_t outer, int64_t inner, size_t es) {
  for (int64_t o = 0; o < outer; o++)
    memcpy(dst + ((o * dst_axis + dst_off) * inner) * es, src + ((o * src_axis + src_off) * inner) * es,
           (size_t)(len * inner) * es);
}

wh_status wh__cpu_slice(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out) {
  (void)ex;
  int ax = (int)n->ia[0];
  int64_t outer, inner;
  wh__outer_inner(&in[0], ax, &outer, &inner);
  copy_axis(in[0].data, in[0].d[ax], n->ia[1], out->data, out->d[ax], 0, out->d[ax], outer, inner, esize(out));
  return WH_OK;
}

wh_status wh__cpu_slice_grad(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out) {
  (void)ex;
  int ax = (int)n->ia[0];
  int64_t outer, inner;
  wh__outer_inner(out, ax, &outer, &inner);
  memset(out->data, 0, (size_t)out->numel * esize(out));
  copy_axis(in[0].data, in[0].d[ax], 0, out->data, out->d[ax], n->ia[1], in[0].d[ax], outer, inner, esize(out));
  return WH_OK;
}

wh_status wh__cpu_concat(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out) {
  (void)ex;
  int ax = (int)n->ia[0];
  int64_t outer, inner, off = 0;
  wh__outer_inner(out, ax, &outer, &inner);
  for (int i = 0; i < n->n_in; i++) {
    copy_axis(in[i].data, in[i].d[ax], 0, out->data, out->d[ax], off, in[i].d[ax], outer, inner, esize(out));
    off += in[i].d[ax];
  }
  return WH_OK;
}
