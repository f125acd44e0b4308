/* test_conv_kernels.c - checks the CPU conv2d and pooling kernels against naive loops.
 * Each geometry runs serially and on 2- and 3-thread pools; pooled results must match serial bit for bit. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "src/kernels/kernels.h"
#include "src/base/pool.h"
#include "../common/runner.h"

/* ---- small helpers */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static float frand(void) {
  rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
  return (float)((rng_state >> 40) & 0xFFFFFF) / (float)0x800000 - 1.0f; /* [-1, 1) */
}

typedef enum { DATA_RANDOM, DATA_TIES, DATA_NEGATIVE } data_kind;

static void fill(float *p, int64_t n, data_kind k) {
  for (int64_t i = 0; i < n; i++) {
    float v = frand();
    if (k == DATA_TIES) v = floorf(v * 2.0f); /* values in {-2, -1, 0, 1}: many equal maxima */
    if (k == DATA_NEGATIVE) v = v - 3.0f;     /* zero padding would wrongly win a max */
    p[i] = v;
  }
}

static wh__tensor tensor4(int64_t a, int64_t b, int64_t c, int64_t d) {
  wh__tensor t;
  memset(&t, 0, sizeof t);
  t.dtype = WH_F32;
  t.ndim = 4;
  t.d[0] = a;
  t.d[1] = b;
  t.d[2] = c;
  t.d[3] = d;
  t.numel = a * b * c * d;
  t.data = malloc((size_t)(t.numel ? t.numel : 1) * sizeof(float));
  return t;
}

/* Outputs start as NaN so a kernel that forgets to write (or zero) an element is caught. */
static void poison(wh__tensor *t) {
  for (int64_t i = 0; i < t->numel; i++) wh__f32(t)[i] = NAN;
}

static void record(int ok, const char *what, const char *geom, const char *pool, double err) {
  EXPECT_SAY(ok, "%-24s %-44s %-9s rel_err=%.3g", what, geom, pool, err);
}

/* max |got - ref| relative to max |ref|; NaN in got counts as failure. */
static void check_close(const char *what, const char *geom, const char *pool, const float *got,
                        const double *ref, int64_t n) {
  double maxref = 0.0, maxerr = 0.0;
  int bad = 0;
  for (int64_t i = 0; i < n; i++) {
    if (fabs(ref[i]) > maxref) maxref = fabs(ref[i]);
    if (isnan(got[i])) bad = 1;
    double e = fabs((double)got[i] - ref[i]);
    if (e > maxerr) maxerr = e;
  }
  double rel = maxerr / (maxref > 0.0 ? maxref : 1.0);
  record(!bad && rel <= 1e-5, what, geom, pool, bad ? NAN : rel);
}

static void check_same(const char *what, const char *geom, const char *pool, const float *a,
                       const float *b, int64_t n) {
  record(memcmp(a, b, (size_t)n * sizeof(float)) == 0, what, geom, pool, 0.0);
}

static void check_status(const char *what, const char *geom, const char *pool, wh_status st) {
  if (st != WH_OK) record(0, what, geom, pool, NAN);
}

/* ---- naive references */

typedef struct {
  int64_t N, C, H, W, O, KH, KW, s, p;
} conv_case;

static int64_t odim(int64_t in, int64_t k, int64_t s, int64_t p) { return (in + 2 * p - k) / s + 1; }

static void ref_conv(const conv_case *g, int64_t OH, int64_t OW, const float *x, const float *w, double *y) {
  for (int64_t n = 0; n < g->N; n++)
    for (int64_t o = 0; o < g->O; o++)
      for (int64_t oh = 0; oh < OH; oh++)
        for (int64_t ow = 0; ow < OW; ow++) {
          double acc = 0.0;
          for (int64_t c = 0; c < g->C; c++)
            for (int64_t kh = 0; kh < g->KH; kh++)
              for (int64_t kw = 0; kw < g->KW; kw++) {
                int64_t ih = oh * g->s - g->p + kh, iw = ow * g->s - g->p + kw;
                if (ih < 0 || ih >= g->H || iw < 0 || iw >= g->W) continue;
                acc += (double)x[((n * g->C + c) * g->H + ih) * g->W + iw] *
                       w[((o * g->C + c) * g->KH + kh) * g->KW + kw];
              }
          y[((n * g->O + o) * OH + oh) * OW + ow] = acc;
        }
}

/* The adjoint of ref_conv, written as the same loop nest scattering instead of gathering. */
static void ref_conv_grads(const conv_case *g, int64_t OH, int64_t OW, const float *x, const float *w,
                           const float *dy, double *dx, double *dw) {
  memset(dx, 0, (size_t)(g->N * g->C * g->H * g->W) * sizeof *dx);
  memset(dw, 0, (size_t)(g->O * g->C * g->KH * g->KW) * sizeof *dw);
  for (int64_t n = 0; n < g->N; n++)
    for (int64_t o = 0; o < g->O; o++)
      for (int64_t oh = 0; oh < OH; oh++)
        for (int64_t ow = 0; ow < OW; ow++) {
          double gy = dy[((n * g->O + o) * OH + oh) * OW + ow];
          for (int64_t c = 0; c < g->C; c++)
            for (int64_t kh = 0; kh < g->KH; kh++)
              for (int64_t kw = 0; kw < g->KW; kw++) {
                int64_t ih = oh * g->s - g->p + kh, iw = ow * g->s - g->p + kw;
                if (ih < 0 || ih >= g->H || iw < 0 || iw >= g->W) continue;
                int64_t xi = ((n * g->C + c) * g->H + ih) * g->W + iw;
                int64_t wi = ((o * g->C + c) * g->KH + kh) * g->KW + kw;
                dx[xi] += gy * w[wi];
                dw[wi] += gy * x[xi];
              }
        }
}

typedef struct {
  int64_t N, C, H, W, k, s, p;
} pool_case;

static void ref_pools(const pool_case *g, int64_t OH, int64_t OW, const float *x, const float *dy,
                      double *ymax, double *dxmax, double *yavg, double *dxavg) {
  int64_t hw = g->H * g->W;
  memset(dxmax, 0, (size_t)(g->N * g->C * hw) * sizeof *dxmax);
  memset(dxavg, 0, (size_t)(g->N * g->C * hw) * sizeof *dxavg);
  for (int64_t pl = 0; pl < g->N * g->C; pl++)
    for (int64_t oh = 0; oh < OH; oh++)
      for (int64_t ow = 0; ow < OW; ow++) {
        int64_t oi = (pl * OH + oh) * OW + ow, best = -1;
        double sum = 0.0;
        for (int64_t kh = 0; kh < g->k; kh++)
          for (int64_t kw = 0; kw < g->k; kw++) {
            int64_t ih = oh * g->s - g->p + kh, iw = ow * g->s - g->p + kw;
            if (ih < 0 || ih >= g->H || iw < 0 || iw >= g->W) continue;
            int64_t xi = pl * hw + ih * g->W + iw;
            sum += x[xi];
            if (best < 0 || x[xi] > x[best]) best = xi; /* strict: the first maximum wins */
          }
        ymax[oi] = x[best];
        dxmax[best] += dy[oi];
        yavg[oi] = sum / (double)(g->k * g->k);
        for (int64_t kh = 0; kh < g->k; kh++)
          for (int64_t kw = 0; kw < g->k; kw++) {
            int64_t ih = oh * g->s - g->p + kh, iw = ow * g->s - g->p + kw;
            if (ih < 0 || ih >= g->H || iw < 0 || iw >= g->W) continue;
            dxavg[pl * hw + ih * g->W + iw] += dy[oi] / (double)(g->k * g->k);
          }
      }
}

/* ---- drivers */

typedef struct {
  const char *name;
  wh__pool *pool;
} pool_cfg;

static wh__exec make_exec(wh__pool *pool, char *err, int cap) {
  wh__exec ex;
  memset(&ex, 0, sizeof ex);
  ex.pool = pool;
  ex.err = err;
  ex.err_cap = cap;
  return ex;
}

static void run_conv_case(const conv_case *g, const pool_cfg *pools, int n_pools) {
  char geom[96], err[256];
  int64_t OH = odim(g->H, g->KH, g->s, g->p), OW = odim(g->W, g->KW, g->s, g->p);
  snprintf(geom, sizeof geom, "N%lld C%lld %lldx%lld O%lld k%lldx%lld s%lld p%lld", (long long)g->N,
           (long long)g->C, (long long)g->H, (long long)g->W, (long long)g->O, (long long)g->KH,
           (long long)g->KW, (long long)g->s, (long long)g->p);
  wh__tensor x = tensor4(g->N, g->C, g->H, g->W), w = tensor4(g->O, g->C, g->KH, g->KW);
  wh__tensor dy = tensor4(g->N, g->O, OH, OW);
  fill(wh__f32(&x), x.numel, DATA_RANDOM);
  fill(wh__f32(&w), w.numel, DATA_RANDOM);
  fill(wh__f32(&dy), dy.numel, DATA_RANDOM);
  double *ry = malloc((size_t)dy.numel * sizeof *ry), *rdx = malloc((size_t)x.numel * sizeof *rdx);
  double *rdw = malloc((size_t)w.numel * sizeof *rdw);
  ref_conv(g, OH, OW, wh__f32(&x), wh__f32(&w), ry);
  ref_conv_grads(g, OH, OW, wh__f32(&x), wh__f32(&w), wh__f32(&dy), rdx, rdw);

  wh__node node;
  memset(&node, 0, sizeof node);
  node.ia[0] = g->s;
  node.ia[1] = g->p;
  node.n_ia = 2;
  wh__tensor y0 = tensor4(g->N, g->O, OH, OW), dx0 = tensor4(g->N, g->C, g->H, g->W);
  wh__tensor dw0 = tensor4(g->O, g->C, g->KH, g->KW);
  for (int pi = 0; pi < n_pools; pi++) {
    wh__exec ex = make_exec(pools[pi].pool, err, sizeof err);
    wh__tensor y = tensor4(g->N, g->O, OH, OW), dx = tensor4(g->N, g->C, g->H, g->W);
    wh__tensor dw = tensor4(g->O, g->C, g->KH, g->KW);
    wh__tensor xin[2] = {x, w}, gin[2] = {dy, w}, win[2] = {x, dy};
    poison(&y);
    poison(&dx);
    poison(&dw);
    check_status("conv2d status", geom, pools[pi].name, wh__cpu_conv2d(&ex, &node, xin, &y));
    check_status("conv2d_grad_input status", geom, pools[pi].name,
                 wh__cpu_conv2d_grad_input(&ex, &node, gin, &dx));
    check_status("conv2d_grad_weight status", geom, pools[pi].name,
                 wh__cpu_conv2d_grad_weight(&ex, &node, win, &dw));
    check_close("conv2d", geom, pools[pi].name, wh__f32(&y), ry, y.numel);
    check_close("conv2d_grad_input", geom, pools[pi].name, wh__f32(&dx), rdx, dx.numel);
    check_close("conv2d_grad_weight", geom, pools[pi].name, wh__f32(&dw), rdw, dw.numel);
    if (pi == 0) {
      memcpy(y0.data, y.data, (size_t)y.numel * sizeof(float));
      memcpy(dx0.data, dx.data, (size_t)dx.numel * sizeof(float));
      memcpy(dw0.data, dw.data, (size_t)dw.numel * sizeof(float));
    } else {
      check_same("conv2d = serial", geom, pools[pi].name, wh__f32(&y), wh__f32(&y0), y.numel);
      check_same("conv2d_grad_input = serial", geom, pools[pi].name, wh__f32(&dx), wh__f32(&dx0), dx.numel);
      check_same("conv2d_grad_weight = serial", geom, pools[pi].name, wh__f32(&dw), wh__f32(&dw0), dw.numel);
    }
    free(y.data);
    free(dx.data);
    free(dw.data);
    free(ex.scratch);
  }
  free(y0.data);
  free(dx0.data);
  free(dw0.data);
  free(ry);
  free(rdx);
  free(rdw);
  free(x.data);
  free(w.data);
  free(dy.data);
}

static void run_pool_case(const pool_case *g, data_kind kind, const pool_cfg *pools, int n_pools) {
  static const char *kinds[] = {"random", "ties", "negative"};
  char geom[96], err[256];
  int64_t OH = odim(g->H, g->k, g->s, g->p), OW = odim(g->W, g->k, g->s, g->p);
  snprintf(geom, sizeof geom, "N%lld C%lld %lldx%lld k%lld s%lld p%lld %s", (long long)g->N,
           (long long)g->C, (long long)g->H, (long long)g->W, (long long)g->k, (long long)g->s,
           (long long)g->p, kinds[kind]);
  wh__tensor x = tensor4(g->N, g->C, g->H, g->W), dy = tensor4(g->N, g->C, OH, OW);
  fill(wh__f32(&x), x.numel, kind);
  fill(wh__f32(&dy), dy.numel, DATA_RANDOM);
  size_t ybytes = (size_t)dy.numel * sizeof(double), xbytes = (size_t)x.numel * sizeof(double);
  double *rymax = malloc(ybytes), *ryavg = malloc(ybytes), *rdxmax = malloc(xbytes), *rdxavg = malloc(xbytes);
  ref_pools(g, OH, OW, wh__f32(&x), wh__f32(&dy), rymax, rdxmax, ryavg, rdxavg);

  wh__node node;
  memset(&node, 0, sizeof node);
  node.ia[0] = g->k;
  node.ia[1] = g->s;
  node.ia[2] = g->p;
  node.n_ia = 3;
  wh__tensor keep[4];
  for (int pi = 0; pi < n_pools; pi++) {
    wh__exec ex = make_exec(pools[pi].pool, err, sizeof err);
    wh__tensor out[4] = {tensor4(g->N, g->C, OH, OW), tensor4(g->N, g->C, g->H, g->W),
                         tensor4(g->N, g->C, OH, OW), tensor4(g->N, g->C, g->H, g->W)};
    for (int i = 0; i < 4; i++) poison(&out[i]);
    wh__tensor bin[2] = {x, dy};
    const char *pn = pools[pi].name;
    check_status("max_pool2d status", geom, pn, wh__cpu_max_pool2d(&ex, &node, &x, &out[0]));
    check_status("max_pool2d_grad status", geom, pn, wh__cpu_max_pool2d_grad(&ex, &node, bin, &out[1]));
    check_status("avg_pool2d status", geom, pn, wh__cpu_avg_pool2d(&ex, &node, &x, &out[2]));
    check_status("avg_pool2d_grad status", geom, pn, wh__cpu_avg_pool2d_grad(&ex, &node, &dy, &out[3]));
    check_close("max_pool2d", geom, pn, wh__f32(&out[0]), rymax, out[0].numel);
    check_close("max_pool2d_grad", geom, pn, wh__f32(&out[1]), rdxmax, out[1].numel);
    check_close("avg_pool2d", geom, pn, wh__f32(&out[2]), ryavg, out[2].numel);
    check_close("avg_pool2d_grad", geom, pn, wh__f32(&out[3]), rdxavg, out[3].numel);
    static const char *same[] = {"max_pool2d = serial", "max_pool2d_grad = serial", "avg_pool2d = serial",
                                 "avg_pool2d_grad = serial"};
    for (int i = 0; i < 4; i++) {
      if (pi == 0) {
        keep[i] = out[i];
      } else {
        check_same(same[i], geom, pn, wh__f32(&out[i]), wh__f32(&keep[i]), out[i].numel);
        free(out[i].data);
      }
    }
    free(ex.scratch);
  }
  for (int i = 0; i < 4 && n_pools > 0; i++) free(keep[i].data);
  free(rymax);
  free(ryavg);
  free(rdxmax);
  free(rdxavg);
  free(x.data);
  free(dy.data);
}

/* Inconsistent shapes must come back as an error with a message, not a crash or a write. */
static void run_error_cases(void) {
  char err[256] = "";
  wh__exec ex = make_exec(NULL, err, sizeof err);
  wh__node node;
  memset(&node, 0, sizeof node);
  node.ia[0] = 1;
  node.ia[1] = 0;
  wh__tensor x = tensor4(1, 2, 5, 5), w = tensor4(3, 2, 3, 3), y = tensor4(1, 3, 4, 4); /* should be 3x3 */
  fill(wh__f32(&x), x.numel, DATA_RANDOM);
  fill(wh__f32(&w), w.numel, DATA_RANDOM);
  wh__tensor in[2] = {x, w};
  wh_status st = wh__cpu_conv2d(&ex, &node, in, &y);
  record(st == WH_ERR_SHAPE && err[0] != '\0', "conv2d bad output shape", "N1 C2 5x5 O3 k3x3 s1 p0",
         "serial", 0.0);
  err[0] = '\0';
  node.ia[0] = 0; /* stride 0 */
  wh__tensor y2 = tensor4(1, 3, 3, 3);
  st = wh__cpu_conv2d(&ex, &node, in, &y2);
  record(st == WH_ERR_SHAPE && err[0] != '\0', "conv2d stride 0", "N1 C2 5x5 O3 k3x3 s0 p0", "serial", 0.0);
  err[0] = '\0';
  node.ia[0] = 2; /* kernel 2, stride 0 */
  node.ia[1] = 0;
  node.ia[2] = 0;
  wh__tensor py = tensor4(1, 2, 2, 2);
  st = wh__cpu_max_pool2d(&ex, &node, &x, &py);
  record(st == WH_ERR_SHAPE && err[0] != '\0', "max_pool2d stride 0", "N1 C2 5x5 k2 s0 p0", "serial", 0.0);
  free(ex.scratch);
  free(x.data);
  free(w.data);
  free(y.data);
  free(y2.data);
  free(py.data);
}

static wh__pool *p2, *p3;
static pool_cfg pools[3];
static const int np = 3;

static void convs_case(const void *arg) {
  (void)arg;
  static const conv_case convs[] = {
      /* N  C  H   W  O  KH KW s  p */
      {2, 3, 7, 5, 4, 3, 3, 1, 1},    /* same padding, non-square image */
      {1, 2, 8, 6, 3, 3, 3, 2, 1},    /* stride 2 with a remainder in both dims */
      {2, 3, 9, 7, 5, 3, 3, 2, 0},    /* stride 2, no padding */
      {3, 4, 5, 9, 2, 1, 1, 1, 0},    /* 1x1: the image is its own column matrix */
      {2, 5, 6, 10, 3, 1, 1, 2, 1},   /* 1x1 that still needs im2col (stride and padding) */
      {1, 1, 4, 4, 1, 3, 3, 1, 0},    /* single channel, single output pixel row */
      {2, 3, 6, 7, 2, 3, 2, 1, 1},    /* rectangular kernel */
      {2, 8, 17, 15, 6, 3, 3, 1, 1},  /* large enough that the pools split the work */
      {4, 6, 12, 11, 5, 3, 3, 2, 1},  /* batched, strided, split */
      {1, 2, 3, 3, 2, 3, 3, 3, 2},    /* padding larger than the remaining input */
  };
  for (size_t i = 0; i < sizeof convs / sizeof convs[0]; i++) run_conv_case(&convs[i], pools, np);
}

static void pools_case(const void *arg) {
  (void)arg;
  static const pool_case pls[] = {
      /* N  C  H   W  k  s  p */
      {2, 3, 7, 5, 3, 2, 1},
      {1, 2, 8, 6, 2, 2, 0},
      {2, 2, 5, 9, 3, 1, 1},
      {1, 3, 6, 6, 1, 1, 0},
      {2, 1, 9, 7, 3, 3, 0},   /* remainder: the last rows and columns are never pooled */
      {1, 2, 4, 5, 2, 1, 1},   /* padding = kernel/2 with an even kernel */
      {4, 8, 17, 16, 3, 2, 1}, /* large enough that the pools split the planes */
  };
  for (size_t i = 0; i < sizeof pls / sizeof pls[0]; i++)
    for (int k = DATA_RANDOM; k <= DATA_NEGATIVE; k++) run_pool_case(&pls[i], (data_kind)k, pools, np);
}

static void errors_case(const void *arg) {
  (void)arg;
  run_error_cases();
}

static int setup(int argc, char **argv) {
  (void)argc, (void)argv;
  if (wh__pool_create(2, &p2) != WH_OK || wh__pool_create(3, &p3) != WH_OK) {
    printf("FAIL could not create thread pools\n");
    return 1;
  }
  pools[0] = (pool_cfg){"serial", NULL};
  pools[1] = (pool_cfg){"2 threads", p2};
  pools[2] = (pool_cfg){"3 threads", p3};
  return 0;
}

static void teardown(void) {
  wh__pool_destroy(p2);
  wh__pool_destroy(p3);
}

static const wt_case cases[] = {
    {"conv2d", convs_case, NULL},
    {"pool2d", pools_case, NULL},
    {"errors", errors_case, NULL},
};

int main(int argc, char **argv) {
  const wt_suite suite = {"conv_kernels", setup, teardown, NULL, 0};
  return wt_main(&suite, cases, WT_COUNT(cases), argc, argv);
}
