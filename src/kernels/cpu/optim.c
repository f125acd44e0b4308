/* optim.c - CPU optimizer kernels: global-norm clipping coefficient, SGD (momentum, Nesterov,
 * weight decay) and AdamW, written to follow PyTorch's arithmetic order so results compare closely. */
#include <math.h>

#include "../kernels.h"
#include "fastmath.h"

wh_status wh__cpu_global_norm_clip(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out) {
  (void)ex;
  double total = 0;
  for (int i = 0; i < n->n_in; i++) {
    const float *g = wh__f32(&in[i]);
    double s = 0;
    for (int64_t k = 0; k < in[i].numel; k++) s += (double)g[k] * g[k];
    total += s;
  }
  double norm = sqrt(total);
  double coef = n->fa[0] / (norm + 1e-6);
  wh__f32(out)[0] = (float)(coef < 1.0 ? coef : 1.0);
  return WH_OK;
}

typedef struct {
  float *p, *buf, *m, *v;
  const float *g;
  float clip, lr, mom, damp, wd, b1, b2, eps, bc1, bc2sqrt;
  int nesterov, first;
} upd_job;

WH_HOT static void sgd_range(void *arg, int64_t b, int64_t e) {
  upd_job *j = arg;
  for (int64_t i = b; i < e; i++) {
    float d = j->g[i] * j->clip;
    if (j->wd != 0) d += j->wd * j->p[i];
    if (j->buf) {
      float bv = j->first ? d : j->mom * j->buf[i] + (1.0f - j->damp) * d;
      j->buf[i] = bv;
      d = j->nesterov ? d + j->mom * bv : bv;
    }
    j->p[i] -= j->lr * d;
  }
}

wh_status wh__cpu_sgd_update(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out) {
  (void)out;
  int has_buf = (int)n->ia[0], has_clip = (int)n->ia[1];
  upd_job j = {.p = wh__f32(&in[0]), .g = wh__f32(&in[1]), .buf = has_buf ? wh__f32(&in[2]) : NULL,
               .clip = has_clip ? wh__f32(&in[n->n_in - 1])[0] : 1.0f, .lr = (float)wh__lr_at(n->fa, ex->step),
               .mom = (float)n->fa[5], .damp = (float)n->fa[6], .wd = (float)n->fa[7], .nesterov = (int)n->ia[2],
               .first = ex->step == 1};
  wh__parallel_for(ex->pool, in[0].numel, 16384, sgd_range, &j);
  return WH_OK;
}

WH_HOT static void adamw_range(void *arg, int64_t b, int64_t e) {
  upd_job *j = arg;
  float step_size = j->lr / j->bc1;
  for (int64_t i = b; i < e; i++) {
    float g = j->g[i] * j->clip;
    float p = j->p[i] * (1.0f - j->lr * j->wd);
    float m = j->m[i] = j->b1 * j->m[i] + (1.0f - j->b1) * g;
    float v = j->v[i] = j->b2 * j->v[i] + (1.0f - j->b2) * g * g;
    float denom = sqrtf(v) / j->bc2sqrt + j->eps;
    j->p[i] = p - step_size * m / denom;
  }
}

wh_status wh__cpu_adamw_update(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out) {
  (void)out;
  double b1 = n->fa[5], b2 = n->fa[6];
  double t = (double)ex->step;
  upd_job j = {.p = wh__f32(&in[0]), .g = wh__f32(&in[1]), .m = wh__f32(&in[2]), .v = wh__f32(&in[3]),
               .clip = n->ia[0] ? wh__f32(&in[4])[0] : 1.0f, .lr = (float)wh__lr_at(n->fa, ex->step),
               .b1 = (float)b1, .b2 = (float)b2, .eps = (float)n->fa[7], .wd = (float)n->fa[8],
               .bc1 = (float)(1.0 - pow(b1, t)), .bc2sqrt = (float)sqrt(1.0 - pow(b2, t))};
  wh__parallel_for(ex->pool, in[0].numel, 16384, adamw_range, &j);
  return WH_OK;
}
