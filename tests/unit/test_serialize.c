/* test_serialize.c - graph save/load round trips (dumps, hints, bitwise-equal runs), session save,
 * and corrupt files: every truncation and random byte flips must fail cleanly, never crash. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* mkdtemp */
#endif
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "whale.h"
#include "../common/runner.h"

#define BATCH 4
#define IN 8
#define HID 16
#define OUT 4

typedef struct mlp {
  wh_value x, y, w1, b1, w2, c, h, logits, loss;
} mlp;

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void) {
  uint64_t x = rng_state;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return rng_state = x;
}
static float rnd_float(void) { return (float)((double)(rnd() >> 11) / 9007199254740992.0) * 2.0f - 1.0f; }

static char dir[256];

static void path_in(char *buf, size_t cap, const char *name) { snprintf(buf, cap, "%s/%s", dir, name); }

static long read_all(const char *path, unsigned char **out) {
  FILE *f = fopen(path, "rb");
  if (!f) return -1;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  *out = malloc((size_t)n + 1);
  if (!*out || fread(*out, 1, (size_t)n, f) != (size_t)n) n = -1;
  fclose(f);
  return n;
}

static int write_all(const char *path, const unsigned char *buf, size_t n) {
  FILE *f = fopen(path, "wb");
  if (!f) return 0;
  int ok = fwrite(buf, 1, n, f) == n;
  return fclose(f) == 0 && ok;
}

/* A small MLP with every kind of thing the file must keep: hints, names, a constant, a dropout,
 * a kept value, gradients and an AdamW optimizer with clipping. */
static wh_graph *build_mlp(wh_ctx *ctx, mlp *m) {
  wh_graph *g = NULL;
  if (wh_graph_create(ctx, &g) != WH_OK) return NULL;
  int64_t xd[2] = {WH_BATCH, IN}, yd[1] = {WH_BATCH};
  m->x = wh_input(g, "x", WH_F32, 2, xd);
  m->y = wh_input(g, "y", WH_I32, 1, yd);
  wh_set_pipeline(g, 4);

  wh_scope_stage(g);
  int64_t w1d[2] = {HID, IN}, b1d[1] = {HID};
  m->w1 = wh_param(g, "l1.w", WH_F32, 2, w1d, WH_INIT(WH_INIT_KAIMING_UNIFORM, 0, 0, 1));
  m->b1 = wh_param(g, "l1.b", WH_F32, 1, b1d, WH_INIT(WH_INIT_UNIFORM, -0.1f, 0.1f, 2));
  wh_value h = wh_matmul(g, m->x, m->w1, 0, 1);
  h = wh_bias_add(g, h, m->b1, -1);
  h = wh_tanh(g, h);
  h = wh_dropout(g, h, 0.25f, 7);
  wh_value_set_name(g, h, "hidden");
  m->h = h;
  wh_scope_end(g);

  wh_scope_stage(g);
  wh_scope_replicate(g, 2);
  int64_t w2d[2] = {OUT, HID}, cd[1] = {OUT};
  m->w2 = wh_param(g, "l2.w", WH_F32, 2, w2d, WH_INIT(WH_INIT_XAVIER_NORMAL, 0, 0, 3));
  float cdata[OUT] = {0.5f, -0.25f, 0.125f, 1.0f};
  m->c = wh_constant(g, "bias_c", WH_F32, 1, cd, cdata);
  wh_value logits = wh_matmul(g, h, m->w2, 0, 1);
  logits = wh_add(g, logits, m->c);
  logits = wh_scale(g, logits, 0.5f);
  m->logits = logits;
  m->loss = wh_cross_entropy(g, logits, m->y);
  wh_value_set_name(g, m->loss, "loss");
  wh_scope_end(g);
  wh_scope_end(g);

  wh_graph_keep(g, m->logits);
  wh_backward(g, m->loss);
  wh_adamw_options o = WH_ADAMW_OPTIONS_INIT;
  o.lr.lr = 0.01f;
  o.clip_norm = 1.0f;
  wh_optimizer_adamw(g, &o);
  return g;
}

static char *dump(const wh_graph *g, wh_format fmt) {
  char *s = NULL;
  if (wh_graph_dump(g, fmt, &s) != WH_OK) return NULL;
  return s;
}

/* s with every occurrence of pat removed (caller frees). */
static char *strip(const char *s, const char *pat) {
  size_t n = strlen(s), pl = strlen(pat);
  char *r = malloc(n + 1), *o = r;
  while (*s) {
    if (strncmp(s, pat, pl) == 0) s += pl;
    else *o++ = *s++;
  }
  *o = 0;
  return r;
}

typedef struct feed {
  float x[BATCH * IN];
  int32_t y[BATCH];
} feed;

static void make_feed(feed *f) {
  for (int i = 0; i < BATCH * IN; i++) f->x[i] = rnd_float();
  for (int i = 0; i < BATCH; i++) f->y[i] = (int32_t)(rnd() % OUT);
}

static wh_session *open_session(wh_ctx *ctx, wh_graph *g, const mlp *m, const feed *f) {
  wh_session_options so = WH_SESSION_OPTIONS_INIT;
  so.batch = BATCH;
  wh_session *s = NULL;
  wh_status st = wh_session_create(ctx, g, &so, &s);
  EXPECT(st == WH_OK, "session_create: %s: %s", wh_status_str(st), wh_last_error(ctx));
  if (st != WH_OK) return NULL;
  /* the program dump: a header, then one line per node it announces, and no collectives */
  char *d = NULL, head[64];
  int nodes = -1, lines = 0;
  st = wh_session_dump(s, WH_FORMAT_TEXT, &d);
  EXPECT(st == WH_OK && d, "session_dump: %s", wh_last_error(ctx));
  if (d) {
    snprintf(head, sizeof head, "single process, batch %d\nprogram: ", BATCH);
    const char *pr = strstr(d, "program: ");
    EXPECT(strncmp(d, head, strlen(head)) == 0 && pr && sscanf(pr, "program: %d nodes", &nodes) == 1,
          "session dump header: %.80s", d);
    for (const char *q = d; (q = strstr(q, "\n  #")); q++) lines++;
    EXPECT(nodes > 0 && lines == nodes && !strstr(d, "all-reduce"), "session dump: %d node lines for %d nodes", lines,
          nodes);
    wh_free(d);
  }
  st = wh_session_dump(s, WH_FORMAT_DOT, &d);
  EXPECT(st == WH_OK && d && strncmp(d, "digraph rank0 {", 15) == 0 && strstr(d, " -> n"), "session DOT dump");
  wh_free(d);
  st = wh_session_feed(s, m->x, f->x, sizeof f->x);
  EXPECT(st == WH_OK, "feed x: %s", wh_last_error(ctx));
  st = wh_session_feed(s, m->y, f->y, sizeof f->y);
  EXPECT(st == WH_OK, "feed y: %s", wh_last_error(ctx));
  return s;
}

static float fetch_loss(wh_ctx *ctx, wh_session *s, wh_value loss) {
  float l = -1;
  wh_status st = wh_session_fetch(s, loss, &l, sizeof l);
  EXPECT(st == WH_OK, "fetch loss: %s", wh_last_error(ctx));
  return l;
}

/* 1. wh_graph_save / wh_graph_load: dumps, hints, counts, names, the saved bytes. */
static wh_graph *test_roundtrip(wh_ctx *ctx, wh_graph *g, const mlp *m, char *gpath, size_t cap) {
  path_in(gpath, cap, "mlp.whg");
  wh_status st = wh_graph_save(g, gpath);
  EXPECT(st == WH_OK, "graph_save: %s: %s", wh_status_str(st), wh_last_error(ctx));
  wh_graph *g2 = NULL;
  st = wh_graph_load(ctx, gpath, &g2);
  EXPECT(st == WH_OK && g2, "graph_load: %s: %s", wh_status_str(st), wh_last_error(ctx));
  if (!g2) return NULL;

  char *d1 = dump(g, WH_FORMAT_TEXT), *d2 = dump(g2, WH_FORMAT_TEXT);
  EXPECT(d1 && d2 && strcmp(d1, d2) == 0, "text dumps differ:\n--- built\n%s--- loaded\n%s", d1 ? d1 : "(null)",
        d2 ? d2 : "(null)");
  EXPECT(d1 && strstr(d1, "param \"l1.w\" f32[16,8] init=kaiming_uniform seed=1"), "dump lacks the l1.w line:\n%s",
        d1 ? d1 : "");
  EXPECT(d1 && strstr(d1, "f32[B,16]") && strstr(d1, " bwd ") && strstr(d1, " upd ") && strstr(d1, "stage#"),
        "dump lacks batch/phase/scope marks:\n%s", d1 ? d1 : "");
  if (getenv("WH_TEST_VERBOSE") && d1) printf("%s", d1);
  free(d1);
  free(d2);
  char *t1 = dump(g, WH_FORMAT_DOT), *t2 = dump(g2, WH_FORMAT_DOT);
  EXPECT(t1 && t2 && strncmp(t1, "digraph", 7) == 0 && strcmp(t1, t2) == 0 && strstr(t1, "cluster") &&
            t1[strlen(t1) - 2] == '}',
        "DOT dumps bad or different");
  if (getenv("WH_TEST_VERBOSE") && t1) printf("%s", t1);
  wh_free(t1);
  wh_free(t2);

  EXPECT(wh_graph_num_values(g) == wh_graph_num_values(g2) && wh_graph_num_nodes(g) == wh_graph_num_nodes(g2) &&
            wh_graph_num_params(g) == wh_graph_num_params(g2),
        "counts differ: values %d/%d nodes %d/%d", wh_graph_num_values(g), wh_graph_num_values(g2),
        wh_graph_num_nodes(g), wh_graph_num_nodes(g2));
  EXPECT(wh_graph_pipeline(g2) == 4, "pipeline %d", wh_graph_pipeline(g2));
  int hint_bad = 0, nhints = 0;
  for (wh_value v = 0; v < wh_graph_num_values(g); v++) {
    wh_hint a[8], b[8];
    memset(a, 0, sizeof a);
    memset(b, 0, sizeof b);
    int na = wh_value_hints(g, v, a, 8), nb = wh_value_hints(g2, v, b, 8);
    nhints += na;
    if (na != nb || memcmp(a, b, sizeof a) != 0) hint_bad++;
    int da, db;
    int64_t sa[WH_MAX_DIMS], sb[WH_MAX_DIMS];
    if (wh_value_shape(g, v, &da, sa) != WH_OK || wh_value_shape(g2, v, &db, sb) != WH_OK || da != db ||
        memcmp(sa, sb, sizeof(int64_t) * (size_t)da) != 0 || wh_value_dtype(g, v) != wh_value_dtype(g2, v) ||
        strcmp(wh_value_name(g, v), wh_value_name(g2, v)) != 0 || wh_grad(g, v) != wh_grad(g2, v))
      hint_bad++;
  }
  EXPECT(hint_bad == 0 && nhints > 0, "%d values differ in hints/shape/name/grad (%d hints)", hint_bad, nhints);
  wh_hint hs[4];
  int nh = wh_value_hints(g2, m->logits, hs, 4);
  EXPECT(nh == 2 && hs[0].kind == WH_HINT_STAGE && hs[0].n == 1 && hs[1].kind == WH_HINT_REPLICATE && hs[1].n == 2,
        "logits hints: %d", nh);
  nh = wh_value_hints(g2, m->w1, hs, 4);
  EXPECT(nh == 1 && hs[0].kind == WH_HINT_STAGE && hs[0].n == 0, "l1.w hints: %d", nh);
  EXPECT(wh_graph_find(g2, "hidden") == m->h && wh_graph_find(g2, "loss") == m->loss &&
            wh_graph_find(g2, "bias_c") == m->c && wh_graph_find(g2, "l2.w") == m->w2,
        "names do not find the same values");
  EXPECT(wh_graph_status(g2) == WH_OK, "loaded graph status %d", wh_graph_status(g2));

  /* saving the loaded graph gives the same bytes */
  char p2[300];
  path_in(p2, sizeof p2, "mlp2.whg");
  unsigned char *b1 = NULL, *b2 = NULL;
  st = wh_graph_save(g2, p2);
  long n1 = read_all(gpath, &b1), n2 = st == WH_OK ? read_all(p2, &b2) : -1;
  EXPECT(n1 > 0 && n1 == n2 && memcmp(b1, b2, (size_t)n1) == 0, "re-saved file differs (%ld vs %ld bytes)", n1, n2);
  free(b1);
  free(b2);
  remove(p2);
  return g2;
}

/* 2. Sessions on the built and the loaded graph: same params, same feed, bitwise-equal gradients. */
static void test_same_run(wh_ctx *ctx, wh_graph *g, wh_graph *g2, const mlp *m) {
  feed f;
  make_feed(&f);
  wh_session *a = open_session(ctx, g, m, &f), *b = open_session(ctx, g2, m, &f);
  if (!a || !b) goto out;
  for (int i = 0; i < wh_graph_num_params(g); i++) {
    wh_value p = wh_graph_param(g, i);
    EXPECT(p == wh_graph_param(g2, i), "param %d ids differ", i);
    size_t bytes = wh_session_bytes(a, p);
    float *buf = malloc(bytes);
    for (size_t k = 0; k < bytes / sizeof(float); k++) buf[k] = 0.3f * rnd_float();
    EXPECT(wh_session_set_param(a, p, buf, bytes) == WH_OK && wh_session_set_param(b, p, buf, bytes) == WH_OK,
          "set_param %d: %s", i, wh_last_error(ctx));
    free(buf);
  }
  wh_status sa = wh_session_run(a, WH_RUN_GRAD), sb = wh_session_run(b, WH_RUN_GRAD);
  EXPECT(sa == WH_OK && sb == WH_OK, "run grad: %s", wh_last_error(ctx));
  float la = fetch_loss(ctx, a, m->loss), lb = fetch_loss(ctx, b, m->loss);
  EXPECT(memcmp(&la, &lb, sizeof la) == 0 && la > 0, "losses differ: %.9g vs %.9g", la, lb);
  for (int i = 0; i < wh_graph_num_params(g); i++) {
    wh_value p = wh_graph_param(g, i), gv = wh_grad(g, p);
    EXPECT(gv != WH_NONE && gv == wh_grad(g2, p), "grad of param %d: %d vs %d", i, gv, wh_grad(g2, p));
    if (gv == WH_NONE) continue;
    size_t bytes = wh_session_bytes(a, gv);
    float *ga = calloc(1, bytes), *gb = calloc(1, bytes);
    EXPECT(wh_session_fetch(a, gv, ga, bytes) == WH_OK && wh_session_fetch(b, gv, gb, bytes) == WH_OK, "fetch grad %d",
          i);
    EXPECT(memcmp(ga, gb, bytes) == 0, "grads of param %d differ", i);
    free(ga);
    free(gb);
  }
out:
  wh_session_destroy(a);
  wh_session_destroy(b);
}

/* 3. wh_session_save after training: loaded params equal the trained ones; eval losses equal. */
static void test_session_save(wh_ctx *ctx, wh_graph *g, const mlp *m) {
  feed f;
  make_feed(&f);
  wh_session *s = open_session(ctx, g, m, &f), *s3 = NULL;
  wh_graph *g3 = NULL;
  char path[300];
  path_in(path, sizeof path, "trained.whg");
  if (!s) return;
  for (int i = 0; i < 3; i++) {
    wh_status st = wh_session_step(s);
    EXPECT(st == WH_OK, "step %d: %s", i, wh_last_error(ctx));
  }
  EXPECT(wh_session_steps(s) == 3, "steps %lld", (long long)wh_session_steps(s));
  wh_status st = wh_session_save(s, path);
  EXPECT(st == WH_OK, "session_save: %s: %s", wh_status_str(st), wh_last_error(ctx));
  st = wh_graph_load(ctx, path, &g3);
  EXPECT(st == WH_OK && g3, "load trained: %s: %s", wh_status_str(st), wh_last_error(ctx));
  if (!g3) goto out;
  {
    char *d1 = dump(g, WH_FORMAT_TEXT), *d3 = dump(g3, WH_FORMAT_TEXT);
    char *d3s = d3 ? strip(d3, " data=stored") : NULL;
    EXPECT(d1 && d3s && strcmp(d1, d3s) == 0, "trained dump differs beyond stored data");
    EXPECT(d3 && strstr(d3, " data=stored"), "trained dump shows no stored data");
    free(d1);
    free(d3);
    free(d3s);
  }
  s3 = open_session(ctx, g3, m, &f);
  if (!s3) goto out;
  int bad = 0;
  for (int i = 0; i < wh_graph_num_params(g); i++) {
    wh_value p = wh_graph_param(g, i);
    size_t bytes = wh_session_bytes(s, p);
    float *pa = calloc(1, bytes), *pb = calloc(1, bytes);
    if (wh_session_get_param(s, p, pa, bytes) != WH_OK || wh_session_get_param(s3, p, pb, bytes) != WH_OK ||
        memcmp(pa, pb, bytes) != 0)
      bad++;
    free(pa);
    free(pb);
  }
  EXPECT(bad == 0, "%d loaded params differ from the trained ones", bad);
  st = wh_session_run(s, WH_RUN_EVAL);
  EXPECT(st == WH_OK, "eval trained: %s", wh_last_error(ctx));
  st = wh_session_run(s3, WH_RUN_EVAL);
  EXPECT(st == WH_OK, "eval loaded: %s", wh_last_error(ctx));
  float la = fetch_loss(ctx, s, m->loss), lb = fetch_loss(ctx, s3, m->loss);
  EXPECT(memcmp(&la, &lb, sizeof la) == 0, "eval losses differ: %.9g vs %.9g", la, lb);
out:
  wh_session_destroy(s3);
  wh_session_destroy(s);
  wh_graph_destroy(g3);
  remove(path);
}

/* A load that must fail: status among the allowed ones, no graph, a message. */
static int load_fails_cleanly(wh_ctx *ctx, const char *path, wh_status *got) {
  wh_graph *g = (wh_graph *)&g; /* must be reset to NULL */
  wh_status st = wh_graph_load(ctx, path, &g);
  *got = st;
  if (st == WH_OK) {
    wh_graph_destroy(g);
    return 0;
  }
  return g == NULL && (st == WH_ERR_CORRUPT || st == WH_ERR_IO || st == WH_ERR_UNSUPPORTED) && wh_last_error(ctx)[0];
}

/* 4. Missing, foreign, truncated and bit-flipped files. */
static void test_errors(wh_ctx *ctx, const char *gpath) {
  char path[300], bad[300];
  path_in(path, sizeof path, "does-not-exist.whg");
  wh_graph *g = NULL;
  wh_status st = wh_graph_load(ctx, path, &g);
  EXPECT(st == WH_ERR_IO && g == NULL, "missing file: %s", wh_status_str(st));
  EXPECT(strstr(wh_last_error(ctx), "does-not-exist.whg") != NULL, "missing-file message: '%s'", wh_last_error(ctx));
  EXPECT(wh_graph_load(ctx, NULL, &g) == WH_ERR_INVALID_ARGUMENT, "NULL path");
  EXPECT(wh_graph_save(NULL, path) == WH_ERR_INVALID_ARGUMENT, "save NULL graph");

  path_in(bad, sizeof bad, "bad.whg");
  EXPECT(write_all(bad, (const unsigned char *)"", 0) && load_fails_cleanly(ctx, bad, &st), "empty file: %s",
        wh_status_str(st));
  const char *text = "hello, this is not a graph\n";
  EXPECT(write_all(bad, (const unsigned char *)text, strlen(text)) && load_fails_cleanly(ctx, bad, &st),
        "text file: %s", wh_status_str(st));

  unsigned char *orig = NULL;
  long n = read_all(gpath, &orig);
  EXPECT(n > 100, "saved file is %ld bytes", n);
  if (n <= 0) return;

  /* every prefix (strided above a few thousand bytes) */
  long stride = n > 4000 ? n / 4000 + 1 : 1, tested = 0, trunc_bad = 0;
  for (long len = 0; len < n; len += (len < 64 || n - len < 64) ? 1 : stride) {
    if (!write_all(bad, orig, (size_t)len)) {
      trunc_bad++;
      continue;
    }
    tested++;
    if (!load_fails_cleanly(ctx, bad, &st)) {
      if (trunc_bad < 5) printf("  truncation to %ld bytes: %s (%s)\n", len, wh_status_str(st), wh_last_error(ctx));
      trunc_bad++;
    }
  }
  EXPECT(trunc_bad == 0, "%ld of %ld truncations did not fail cleanly", trunc_bad, tested);

  /* random byte flips (WH_SER_FLIPS overrides the count): a clean failure, or a graph that loads, dumps and destroys */
  unsigned char *buf = malloc((size_t)n);
  int flips = getenv("WH_SER_FLIPS") ? atoi(getenv("WH_SER_FLIPS")) : 400, loaded = 0, flip_bad = 0;
  rng_state = 12345;
  for (int i = 0; i < flips; i++) {
    memcpy(buf, orig, (size_t)n);
    int nflip = 1 + (int)(rnd() % 3);
    for (int k = 0; k < nflip; k++) buf[rnd() % (uint64_t)n] ^= (unsigned char)(1 + rnd() % 255);
    if (!write_all(bad, buf, (size_t)n)) {
      flip_bad++;
      continue;
    }
    g = NULL;
    st = wh_graph_load(ctx, bad, &g);
    if (st == WH_OK) {
      loaded++;
      char *d = dump(g, WH_FORMAT_TEXT), *t = dump(g, WH_FORMAT_DOT);
      if (!d || !t) flip_bad++;
      wh_free(d);
      wh_free(t);
      wh_graph_destroy(g);
    } else if (g != NULL || !(st == WH_ERR_CORRUPT || st == WH_ERR_IO || st == WH_ERR_UNSUPPORTED) ||
               !wh_last_error(ctx)[0]) {
      if (flip_bad < 5) printf("  flip %d: %s (%s)\n", i, wh_status_str(st), wh_last_error(ctx));
      flip_bad++;
    }
  }
  EXPECT(flip_bad == 0, "%d of %d flipped files misbehaved", flip_bad, flips);
  printf("  corrupt files: %ld truncations, %d flips (%d still loaded)\n", tested, flips, loaded);
  free(buf);
  free(orig);
  remove(bad);
}

/* 5. A poisoned graph is not saved; a failed save leaves the graph usable. */
static void test_save_errors(wh_ctx *ctx) {
  wh_graph *g = NULL;
  wh_graph_create(ctx, &g);
  int64_t a[2] = {2, 3}, b[2] = {4, 5};
  wh_value x = wh_input(g, "a", WH_F32, 2, a), y = wh_input(g, "b", WH_F32, 2, b);
  char path[300];
  path_in(path, sizeof path, "no-such-dir/x.whg");
  wh_status st = wh_graph_save(g, path);
  EXPECT(st == WH_ERR_IO && wh_graph_status(g) == WH_OK && strstr(wh_last_error(ctx), "no-such-dir"),
        "save into a missing dir: %s, graph %s, '%s'", wh_status_str(st), wh_status_str(wh_graph_status(g)),
        wh_last_error(ctx));
  wh_matmul(g, x, y, 0, 0); /* [2,3] @ [4,5]: poisons */
  path_in(path, sizeof path, "poisoned.whg");
  st = wh_graph_save(g, path);
  EXPECT(st == WH_ERR_POISONED, "save poisoned: %s", wh_status_str(st));
  char *d = NULL;
  EXPECT(wh_graph_dump(g, WH_FORMAT_TEXT, &d) == WH_OK && d && strstr(d, "poisoned"), "dump of a poisoned graph");
  wh_free(d);
  EXPECT(wh_graph_dump(g, (wh_format)7, &d) == WH_ERR_INVALID_ARGUMENT && d == NULL, "dump with a bad format");
  wh_graph_destroy(g);
  remove(path);
}

/* The fixture: the MLP every case but save_errors works on, its saved file (round_trip writes it). */
static wh_ctx *ctx;
static mlp model;
static wh_graph *graph;
static char gpath[300];

static int have_model(void) {
  if (graph && wh_graph_status(graph) == WH_OK) return 1;
  wt_skip("the MLP did not build");
  return 0;
}

static void round_trip(const void *arg) {
  (void)arg;
  if (!have_model()) return;
  wh_graph *g2 = test_roundtrip(ctx, graph, &model, gpath, sizeof gpath);
  if (g2) test_same_run(ctx, graph, g2, &model);
  wh_graph_destroy(g2);
}

static void session_save(const void *arg) {
  (void)arg;
  if (have_model()) test_session_save(ctx, graph, &model);
}

static void load_errors(const void *arg) {
  (void)arg;
  if (!have_model()) return;
  if (!gpath[0]) { /* run alone: the file round_trip would have written */
    path_in(gpath, sizeof gpath, "mlp.whg");
    CHECK(wh_graph_save(graph, gpath));
  }
  test_errors(ctx, gpath);
}

static void save_errors(const void *arg) {
  (void)arg;
  test_save_errors(ctx);
}

static int setup(int argc, char **argv) {
  (void)argc, (void)argv;
  snprintf(dir, sizeof dir, "%s/whale-ser-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
  if (!mkdtemp(dir)) {
    perror("mkdtemp");
    return 1;
  }
  wh_ctx_options co = WH_CTX_OPTIONS_INIT;
  co.num_threads = 1;
  if (wh_ctx_create(&ctx, &co) != WH_OK) {
    printf("FAIL no context\n");
    return 1;
  }
  graph = build_mlp(ctx, &model);
  EXPECT(graph && wh_graph_status(graph) == WH_OK, "building the MLP: %s",
         graph ? wh_graph_error(graph) : wh_last_error(ctx));
  return 0;
}

static void teardown(void) {
  if (gpath[0]) remove(gpath);
  wh_graph_destroy(graph);
  wh_ctx_destroy(ctx);
  rmdir(dir);
}

static const wt_case cases[] = {
    {"round_trip", round_trip, NULL},
    {"session_save", session_save, NULL},
    {"load_errors", load_errors, NULL},
    {"save_errors", save_errors, NULL},
};

int main(int argc, char **argv) {
  const wt_suite suite = {"serialize", setup, teardown, NULL, 0};
  return wt_main(&suite, cases, WT_COUNT(cases), argc, argv);
}
