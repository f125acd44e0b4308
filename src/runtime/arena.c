/* arena.c - the static memory plan of a session at its bound batch: value sizes, lifetimes in
 * program order, reshape views and in-place outputs, then one arena placed by src/runtime/memplan.c;
 * and the slots (one arena per micro-batch in flight) that share its layout. */
#include <stdlib.h>

#include "../kernels/cuda/cuda.h"
#include "memplan.h"
#include "session_impl.h"

int32_t wh__session_root(const wh_session *s, int32_t v) {
  while (s->alias[v] >= 0) v = s->alias[v];
  return v;
}

/* Plan the arena for the bound batch: sizes, lifetimes in schedule order, views, in-place
 * outputs, then placement of what remains. */
wh_status wh__session_plan_memory(wh_session *s) {
  const wh__program *pg = &s->prog;
  int n = s->n, nn = pg->n_nodes;
  int64_t *size = calloc((size_t)n + 1, sizeof(int64_t)), *off = calloc((size_t)n + 1, sizeof(int64_t));
  int *first = calloc((size_t)n + 1, sizeof(int)), *last = calloc((size_t)n + 1, sizeof(int));
  if (!size || !off || !first || !last) {
    free(size), free(off), free(first), free(last);
    return WH_ERR_OUT_OF_MEMORY;
  }
  for (int v = 0; v < n; v++) {
    s->bytes[v] = wh__numel(&pg->values[v].shape, s->batch) * (int64_t)wh__dtype_size(pg->values[v].dtype);
    s->alias[v] = -1;
    first[v] = last[v] = -1;
  }
  for (int i = 0; i < nn; i++) {
    const wh__node *nd = &pg->nodes[i];
    for (int k = 0; k < nd->n_in; k++) last[nd->in[k]] = i;
    if (nd->out >= 0) {
      /* a value written again later (a gradient handed its reduced sum, a received value) lives
       * from its first writer to its last use */
      if (first[nd->out] < 0) first[nd->out] = i;
      last[nd->out] = i > last[nd->out] ? i : last[nd->out];
      if (nd->op == WH_OP_RESHAPE) s->alias[nd->out] = nd->in[0];
    }
  }
  for (int v = 0; v < n; v++)
    if (pg->values[v].keep && first[v] >= 0) last[v] = nn;
  /* a view keeps its root alive as long as itself (to the root: a recomputed view's chain can
   * run through clones, which come after the values that read them) */
  for (int v = 0; v < n; v++)
    if (s->alias[v] >= 0) {
      int32_t r = wh__session_root(s, v);
      if (last[v] > last[r]) last[r] = last[v];
    }
  /* in-place: an output may take over the storage of an input whose root dies at this node */
  s->n_inplace = 0;
  for (int i = 0; s->inplace && i < nn; i++) {
    const wh__node *nd = &pg->nodes[i];
    unsigned mask = wh__ops[nd->op]->inplace;
    if (nd->out < 0 || !mask || s->alias[nd->out] >= 0) continue;
    for (int k = 0; k < nd->n_in; k++) {
      if (!(mask >> k & 1)) continue;
      int32_t r = wh__session_root(s, nd->in[k]);
      if (wh__role_persistent(pg->values[r].role) || last[r] != i || s->bytes[r] != s->bytes[nd->out] ||
          pg->values[r].dtype != pg->values[nd->out].dtype)
        continue;
      s->alias[nd->out] = r;
      last[r] = last[nd->out];
      s->n_inplace++;
      break;
    }
  }
  s->inter_bytes = 0;
  s->n_inter = 0;
  s->saved_bytes = 0;
  for (int v = 0; v < n; v++) /* made forward, read backward: what training keeps across the step */
    if (first[v] >= 0 && !wh__role_persistent(pg->values[v].role) && s->alias[v] < 0 &&
        pg->nodes[first[v]].phase == WH_PHASE_FORWARD && last[v] < nn && pg->nodes[last[v]].phase == WH_PHASE_BACKWARD)
      s->saved_bytes += s->bytes[v];
  for (int v = 0; v < n; v++) {
    if (first[v] < 0 || wh__role_persistent(pg->values[v].role)) continue;
    s->inter_bytes += s->bytes[v];
    s->n_inter++;
    size[v] = s->alias[v] >= 0 ? 0 : s->bytes[v];
  }
  /* the lower bound any placement must meet: the most bytes alive at one step */
  int64_t *delta = calloc((size_t)nn + 2, sizeof(int64_t));
  if (!delta) {
    free(size), free(off), free(first), free(last);
    return WH_ERR_OUT_OF_MEMORY;
  }
  for (int v = 0; v < n; v++)
    if (size[v] > 0) delta[first[v]] += size[v], delta[last[v] + 1] -= size[v];
  s->live_peak = 0;
  for (int64_t i = 0, live = 0; i <= nn; i++) {
    live += delta[i];
    if (live > s->live_peak) s->live_peak = live;
  }
  free(delta);
  int64_t total = wh__memplan(n, size, first, last, off);
  if (total < 0) {
    free(size), free(off), free(first), free(last);
    return WH_ERR_OUT_OF_MEMORY;
  }
  void *arena = NULL;
  if (s->dev) {
    /* the old arena first: device memory is the scarce one */
    wh__cuda_free(s->dev, s->arena);
    s->arena = NULL;
    if (wh__cuda_alloc(s->dev, (size_t)(total ? total : WH_ALIGN), &arena) != WH_OK) {
      free(size), free(off), free(first), free(last);
      return WH_ERR_OUT_OF_MEMORY;
    }
    /* inputs get device buffers at the bound batch */
    for (int v = 0; v < n; v++) {
      if (pg->values[v].role != WH_ROLE_INPUT) continue;
      wh__cuda_free(s->dev, s->own[v]);
      s->own[v] = NULL;
      s->host_feed[v] = NULL;
      if (last[v] < 0 && !pg->values[v].keep) continue; /* nothing reads it */
      if (wh__cuda_alloc(s->dev, (size_t)s->bytes[v], &s->own[v]) != WH_OK) {
        free(size), free(off), free(first), free(last);
        return WH_ERR_OUT_OF_MEMORY;
      }
    }
  } else {
    if (posix_memalign(&arena, WH_ALIGN, (size_t)(total ? total : WH_ALIGN)) != 0) {
      free(size), free(off), free(first), free(last);
      return WH_ERR_OUT_OF_MEMORY;
    }
    free(s->arena);
  }
  s->arena = arena;
  s->arena_bytes = total;
  for (int v = 0; v < n; v++) {
    wh__role role = pg->values[v].role;
    if (role == WH_ROLE_INPUT) s->ptr[v] = NULL; /* feeds are per batch size */
    else if (!wh__role_persistent(role) && s->alias[v] < 0) s->ptr[v] = (char *)arena + off[v];
    else if (s->alias[v] >= 0) s->ptr[v] = NULL; /* resolved at run time: the root may be a feed */
    s->stamp[v] = wh__role_persistent(role) ? 0 : -1;
  }
  free(size), free(off), free(first), free(last);
  return WH_OK;
}

wh_status wh__session_plan_slots(wh_session *s) {
  int m = s->prog.n_slots > 0 ? s->prog.n_slots : 1;
  if (!s->slot_ptr) {
    if (!(s->slot_arena = calloc((size_t)m, sizeof(void *))) || !(s->slot_ptr = calloc((size_t)m, sizeof(void **))))
      return WH_ERR_OUT_OF_MEMORY;
  }
  s->slot_arena[0] = s->arena;
  s->slot_ptr[0] = s->ptr;
  /* the other slots copy slot 0's layout: values in the arena at the same offsets in their own */
  for (int k = 1; k < m; k++) {
    if (posix_memalign(&s->slot_arena[k], WH_ALIGN, (size_t)(s->arena_bytes ? s->arena_bytes : WH_ALIGN)) != 0) {
      s->slot_arena[k] = NULL;
      return WH_ERR_OUT_OF_MEMORY;
    }
    if (!(s->slot_ptr[k] = malloc(sizeof(void *) * (size_t)(s->n + 1)))) return WH_ERR_OUT_OF_MEMORY;
    for (int v = 0; v < s->n; v++) {
      char *q = s->ptr[v];
      int in_arena = q && q >= (char *)s->arena && q < (char *)s->arena + s->arena_bytes;
      s->slot_ptr[k][v] = in_arena ? (char *)s->slot_arena[k] + (q - (char *)s->arena) : s->ptr[v];
    }
  }
  return WH_OK;
}
