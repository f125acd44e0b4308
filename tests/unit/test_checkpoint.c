/* test_checkpoint.c - checkpoints in one process: 10 steps, save, 10 more equal 20 uninterrupted
 * bit for bit (AdamW with warm-up, cosine and clipping, dropout; SGD with Nesterov momentum; the
 * GPT); the host's blob; every flipped byte, truncation, missing file and foreign graph refused by
 * name; keeping, re-saving a step; the safetensors header parser under random damage; and the
 * writer SIGKILLed at random points of its saves, every resume loading the last complete one.
 *
 *   test_checkpoint [--case NAME] [--kill-trials N]     (kill_writer: 10 trials unless told) */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "whale.h"
#include "gpt.h"
#include "../common/runner.h"
#include "src/base/crc32c.h"
#include "src/base/safetensors.h"

#include <json-c/json.h>

#define B 8
#define STEPS 20
#define DIMS(...) (int64_t[]){__VA_ARGS__}

static wh_ctx *ctx;
static char root[256];
static int kill_trials = 10;

typedef enum { M_ADAM, M_SGD, M_GPT, M_WIDE, M_RELU } mkind;

typedef struct tmodel {
  wh_graph *g;
  wh_value x, y, loss;
  mkind kind;
  int in, hid;
} tmodel;

static wh_value lin(wh_graph *g, wh_value x, const char *nm, int in, int out, uint64_t seed) {
  char w[32], b[32];
  snprintf(w, sizeof w, "%s.w", nm);
  snprintf(b, sizeof b, "%s.b", nm);
  wh_value wv = wh_param(g, w, WH_F32, 2, DIMS(out, in), WH_INIT(WH_INIT_NORMAL, 0, 0.3f, seed));
  wh_value bv = wh_param(g, b, WH_F32, 1, DIMS(out), WH_INIT(WH_INIT_UNIFORM, -0.1f, 0.1f, seed + 1));
  return wh_bias_add(g, wh_matmul(g, x, wv, 0, 1), bv, -1);
}

/* An MLP with dropout (AdamW or SGD with momentum), wider for the kill test, or the shared GPT. */
static tmodel build(mkind kind, int hid) {
  tmodel m = {0};
  m.kind = kind;
  m.in = kind == M_WIDE ? 64 : 12;
  m.hid = hid;
  CHECK(wh_graph_create(ctx, &m.g));
  wh_graph *g = m.g;
  if (kind == M_GPT) {
    gpt_options o = GPT_OPTIONS_INIT;
    o.vocab = 32, o.context = 8, o.width = 16, o.layers = 2, o.heads = 2;
    gpt_model gm;
    gpt_build(g, &o, &gm);
    m.x = gm.tokens, m.y = gm.targets, m.loss = gm.loss;
  } else if (kind == M_RELU) { /* relu's backward reads its stored input: under fp16 a huge x overflows it */
    m.x = wh_input(g, "x", WH_F32, 2, DIMS(WH_BATCH, m.in));
    m.y = wh_input(g, "y", WH_I32, 1, DIMS(WH_BATCH));
    wh_value h = wh_relu(g, lin(g, m.x, "l1", m.in, hid, 1));
    m.loss = wh_cross_entropy(g, lin(g, h, "l2", hid, 5, 3), m.y);
  } else {
    m.x = wh_input(g, "x", WH_F32, 2, DIMS(WH_BATCH, m.in));
    m.y = wh_input(g, "y", WH_I32, 1, DIMS(WH_BATCH));
    wh_value h = wh_dropout(g, wh_tanh(g, lin(g, m.x, "l1", m.in, hid, 1)), 0.2f, 99);
    h = wh_relu(g, lin(g, h, "l2", hid, hid, 3));
    m.loss = wh_cross_entropy(g, lin(g, h, "l3", hid, 5, 5), m.y);
  }
  CHECK(wh_graph_status(g));
  CHECK(wh_backward(g, m.loss));
  if (kind == M_SGD) {
    wh_sgd_options o = WH_SGD_OPTIONS_INIT;
    o.lr = (wh_lr){WH_LR_WARMUP_COSINE, 0.05f, 4, STEPS, 0.005f};
    o.momentum = 0.9f, o.nesterov = 1, o.weight_decay = 1e-3f, o.clip_norm = 2.0f;
    CHECK(wh_optimizer_sgd(g, &o));
  } else {
    wh_adamw_options o = WH_ADAMW_OPTIONS_INIT;
    o.lr = (wh_lr){WH_LR_WARMUP_COSINE, 1e-2f, 3, STEPS, 1e-3f};
    o.clip_norm = 1.0f;
    CHECK(wh_optimizer_adamw(g, &o));
  }
  return m;
}

static wh_session *session(const tmodel *m) {
  wh_session_options so = WH_SESSION_OPTIONS_INIT;
  so.batch = B;
  if (m->kind == M_RELU) so.mixed = WH_F16;
  wh_session *s;
  CHECK(wh_session_create(ctx, m->g, &so, &s));
  return s;
}

/* Steps [k0, k1) on the data of each step; their losses into l (NULL: not kept). */
static void train(const tmodel *m, wh_session *s, int k0, int k1, float *l) {
  int gpt = m->kind == M_GPT;
  size_t xb = gpt ? B * 8 * 4 : (size_t)B * (size_t)m->in * 4, yb = gpt ? B * 8 * 4 : B * 4;
  void *x = malloc(xb), *y = malloc(yb);
  for (int k = k0; k < k1; k++) {
    if (gpt) {
      for (int i = 0; i < B * 8; i++) ((int32_t *)x)[i] = (i * 5 + k * 7) % 32, ((int32_t *)y)[i] = (i * 5 + k * 7 + 1) % 32;
    } else {
      for (int i = 0; i < B * m->in; i++) ((float *)x)[i] = (float)((i * 7 + k * 13) % 23) / 11.0f - 1.0f;
      for (int i = 0; i < B; i++) ((int32_t *)y)[i] = (i * 3 + k) % 5;
      if (m->kind == M_RELU && (k == 3 || k == 12)) ((float *)x)[0] = 1e30f; /* fp16 overflows: skipped */
    }
    CHECK(wh_session_feed(s, m->x, x, xb));
    CHECK(wh_session_feed(s, m->y, y, yb));
    CHECK(wh_session_step(s));
    if (l) CHECK(wh_session_fetch(s, m->loss, &l[k - k0], sizeof(float)));
  }
  free(x), free(y);
}

/* Every parameter and optimizer state of s, concatenated (*n bytes). */
static char *snapshot(const tmodel *m, wh_session *s, size_t *n) {
  size_t cap = 0, at = 0;
  char *buf = NULL;
  static const char *suffix[] = {"", ".adam_m", ".adam_v", ".momentum"};
  for (int i = 0; i < wh_graph_num_params(m->g); i++)
    for (int k = 0; k < 4; k++) {
      char nm[256];
      snprintf(nm, sizeof nm, "%s%s", wh_value_name(m->g, wh_graph_param(m->g, i)), suffix[k]);
      wh_value v = wh_graph_find(m->g, nm);
      if (v == WH_NONE) continue;
      size_t b = wh_session_bytes(s, v);
      if (at + b > cap) buf = realloc(buf, cap = 2 * (at + b));
      CHECK(wh_session_get_param(s, v, buf + at, b));
      at += b;
    }
  *n = at;
  return buf;
}

static void rm_rf(const char *path) {
  char cmd[512];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", path);
}

static void dir_for(char *out, size_t cap, const char *name) {
  snprintf(out, cap, "%s/%s", root, name);
  rm_rf(out);
}

/* ---------------------------------------------------------------- crc32c */

static uint32_t crc_bitwise(const unsigned char *p, size_t n) {
  uint32_t c = 0xffffffffu;
  for (size_t i = 0; i < n; i++) {
    c ^= p[i];
    for (int k = 0; k < 8; k++) c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
  }
  return ~c;
}

static void crc32c(const void *arg) {
  (void)arg;
  EXPECT(wh__crc32c(0, "123456789", 9) == 0xe3069283u, "crc32c of the check string is %08x",
         wh__crc32c(0, "123456789", 9));
  size_t n = 100000 + 8; /* the longest case reads from p + 1 */
  unsigned char *p = malloc(n);
  for (size_t i = 0; i < n; i++) p[i] = (unsigned char)(i * 2654435761u >> 13);
  static const size_t lens[] = {0, 1, 7, 8, 9, 1023, 1024, 1025, 1279, 1280, 4113, 24575, 24576, 24577, 49152 + 13, 100003};
  for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
    uint32_t want = crc_bitwise(p + 1, lens[i]), got = wh__crc32c(0, p + 1, lens[i]);
    EXPECT(got == want, "crc32c of %zu bytes (unaligned): %08x, bit by bit %08x", lens[i], got, want);
    size_t a = lens[i] / 3;
    uint32_t ca = wh__crc32c(0, p + 1, a), cb = wh__crc32c(0, p + 1 + a, lens[i] - a);
    EXPECT(wh__crc32c_combine(ca, cb, lens[i] - a) == want && wh__crc32c(ca, p + 1 + a, lens[i] - a) == want,
           "crc32c of %zu bytes in two parts does not combine", lens[i]);
  }
  free(p);
}

/* ---------------------------------------------------------------- 10 + 10 = 20 */

static void resume_case(mkind kind, const char *name) {
  char dir[300];
  dir_for(dir, sizeof dir, name);
  tmodel m = build(kind, 24);
  float full[STEPS], part[STEPS];
  wh_session *ref = session(&m);
  train(&m, ref, 0, STEPS, full);
  size_t nr, na;
  char *want = snapshot(&m, ref, &nr);
  wh_session_destroy(ref);

  wh_session *a = session(&m);
  train(&m, a, 0, 10, part);
  wh_checkpoint_options o = WH_CHECKPOINT_OPTIONS_INIT;
  EXPECT_OK(wh_checkpoint_save(a, dir, &o));
  wh_session_destroy(a);
  wh_session *b = session(&m);
  EXPECT_OK(wh_checkpoint_load(b, dir, NULL, 0, NULL));
  EXPECT(wh_session_steps(b) == 10, "%s: resumed at step %lld, not 10", name, (long long)wh_session_steps(b));
  train(&m, b, 10, STEPS, part + 10);
  char *got = snapshot(&m, b, &na);
  EXPECT_SAY(memcmp(full, part, sizeof full) == 0 && nr == na && memcmp(want, got, nr) == 0,
             "%s: 10 steps, checkpoint, 10 steps = 20 uninterrupted, bit for bit (losses %.5f -> %.5f, %zu bytes of "
             "parameters and state)", name, full[0], full[STEPS - 1], nr);
  EXPECT(full[STEPS - 1] < full[0], "%s: did not learn (%g -> %g)", name, full[0], full[STEPS - 1]);
  free(want), free(got);
  wh_session_destroy(b);
  wh_graph_destroy(m.g);
}

static void resume_adam(const void *arg) { (void)arg, resume_case(M_ADAM, "mlp_adamw_dropout"); }
static void resume_sgd(const void *arg) { (void)arg, resume_case(M_SGD, "mlp_sgd_nesterov"); }
static void resume_gpt(const void *arg) { (void)arg, resume_case(M_GPT, "gpt"); }

/* fp16: the loss scale, its run of good steps and the updates applied (two steps skipped, one each
 * side of the checkpoint) come back, so the resumed run is the uninterrupted one bit for bit. */
static void resume_fp16(const void *arg) {
  (void)arg;
  resume_case(M_RELU, "mlp_fp16_skips");
  tmodel m = build(M_RELU, 24);
  wh_session *s = session(&m);
  train(&m, s, 0, STEPS, NULL);
  double sc;
  int64_t sk;
  CHECK(wh_session_loss_scale(s, &sc, &sk));
  EXPECT(sk == 2 && sc == 65536.0 / 4, "fp16: %lld steps skipped, scale %g (2 and 16384 expected)", (long long)sk, sc);
  char dir[300];
  dir_for(dir, sizeof dir, "fp16_scale");
  wh_checkpoint_options o = WH_CHECKPOINT_OPTIONS_INIT;
  EXPECT_OK(wh_checkpoint_save(s, dir, &o));
  wh_session *b = session(&m);
  EXPECT_OK(wh_checkpoint_load(b, dir, NULL, 0, NULL));
  double sc2;
  int64_t sk2;
  CHECK(wh_session_loss_scale(b, &sc2, &sk2));
  EXPECT(sc2 == sc && sk2 == sk, "fp16: the loaded session's scale %g and skipped %lld, saved %g and %lld", sc2,
         (long long)sk2, sc, (long long)sk);
  wh_session_destroy(b);
  wh_session_destroy(s);
  wh_graph_destroy(m.g);
}

/* ---------------------------------------------------------------- the host's blob, find, keep */

static void meta_and_find(const void *arg) {
  (void)arg;
  char dir[300];
  dir_for(dir, sizeof dir, "meta");
  tmodel m = build(M_ADAM, 16);
  wh_session *s = session(&m);
  wh_checkpoint_info info = WH_CHECKPOINT_INFO_INIT;
  EXPECT(wh_checkpoint_find(ctx, dir, &info) == WH_ERR_NOT_FOUND && strstr(wh_last_error(ctx), dir),
         "no checkpoint is not reported as such: %s", wh_last_error(ctx));
  unsigned char blob[1000];
  for (int i = 0; i < 1000; i++) blob[i] = (unsigned char)(i * 7);
  wh_checkpoint_options o = WH_CHECKPOINT_OPTIONS_INIT;
  o.keep = 2;
  for (int k = 1; k <= 4; k++) {
    train(&m, s, k - 1, k, NULL);
    o.meta = blob, o.meta_bytes = (size_t)(k == 4 ? 1000 : k); /* 1, 2, 3 bytes: every base64 padding */
    blob[0] = (unsigned char)k;
    EXPECT_OK(wh_checkpoint_save(s, dir, &o));
  }
  EXPECT_OK(wh_checkpoint_find(ctx, dir, &info));
  EXPECT(info.step == 4 && info.ranks == 1 && info.files == 1 && info.meta_bytes == 1000 &&
             !strcmp(info.name, "step-00000004") && !strcmp(info.layout, "1 process") && info.tensors == 18,
         "find: step %lld, %d ranks, %d files, %d tensors, %zu meta bytes, '%s', '%s'", (long long)info.step,
         info.ranks, info.files, info.tensors, info.meta_bytes, info.name, info.layout);
  char p[400];
  struct stat sb;
  snprintf(p, sizeof p, "%s/step-00000002", dir);
  int gone2 = stat(p, &sb) != 0;
  snprintf(p, sizeof p, "%s/step-00000003", dir);
  EXPECT(gone2 && stat(p, &sb) == 0, "keep 2: step 2 should be gone, step 3 kept");
  unsigned char back[1000];
  size_t nb = 0;
  wh_session *t = session(&m);
  EXPECT(wh_checkpoint_load(t, dir, back, 999, &nb) == WH_ERR_INVALID_ARGUMENT && strstr(wh_last_error(ctx), "1000") &&
             wh_session_steps(t) == 0,
         "a small metadata buffer is not refused before loading: %s", wh_last_error(ctx));
  EXPECT_OK(wh_checkpoint_load(t, dir, back, sizeof back, &nb));
  EXPECT(nb == 1000 && memcmp(back, blob, 1000) == 0 && wh_session_steps(t) == 4, "the blob does not come back");
  /* a step directory named directly, and the short blobs of earlier saves */
  snprintf(p, sizeof p, "%s/step-00000003", dir);
  EXPECT_OK(wh_checkpoint_load(t, p, back, sizeof back, &nb));
  EXPECT(nb == 3 && back[0] == 3 && back[1] == blob[1] && back[2] == blob[2] && wh_session_steps(t) == 3,
         "step 3's blob: %zu bytes", nb);
  /* step 3 again (latest names step 4): its directory is rewritten; once more (latest names it
   * now): a new name, the complete one kept; keep 0 keeps everything */
  o.keep = 0;
  EXPECT_OK(wh_checkpoint_save(t, dir, &o));
  EXPECT_OK(wh_checkpoint_find(ctx, dir, &info));
  char first[64];
  snprintf(first, sizeof first, "%s", info.name);
  EXPECT_OK(wh_checkpoint_save(t, dir, &o));
  EXPECT_OK(wh_checkpoint_find(ctx, dir, &info));
  snprintf(p, sizeof p, "%s/%s", dir, first);
  EXPECT(!strcmp(first, "step-00000003") && !strcmp(info.name, "step-00000003.1") && info.step == 3 &&
             stat(p, &sb) == 0,
         "re-saving step 3 twice: latest was '%s', then '%s'", first, info.name);
  /* bad arguments: no side effects, clear messages */
  o.meta = NULL, o.meta_bytes = 5;
  EXPECT(wh_checkpoint_save(t, dir, &o) == WH_ERR_INVALID_ARGUMENT, "metadata bytes without metadata accepted");
  wh_checkpoint_options bad = WH_CHECKPOINT_OPTIONS_INIT;
  bad.struct_size = 3;
  EXPECT(wh_checkpoint_save(t, dir, &bad) == WH_ERR_INVALID_ARGUMENT, "a bad struct_size accepted");
  EXPECT(wh_checkpoint_save(t, NULL, NULL) == WH_ERR_INVALID_ARGUMENT && wh_checkpoint_save(NULL, dir, NULL) ==
         WH_ERR_INVALID_ARGUMENT && wh_checkpoint_load(t, NULL, NULL, 0, NULL) == WH_ERR_INVALID_ARGUMENT,
         "NULL arguments accepted");
  EXPECT(wh_checkpoint_save(t, "/nonexistent/deeper/dir", NULL) == WH_ERR_IO && strstr(wh_last_error(ctx), "/nonexistent"),
         "an impossible directory is not refused by name: %s", wh_last_error(ctx));
  wh_session_destroy(t);
  wh_session_destroy(s);
  wh_graph_destroy(m.g);
}

/* ---------------------------------------------------------------- damage */

static long slurp(const char *path, unsigned char **out) {
  FILE *f = fopen(path, "rb");
  if (!f) return -1;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  *out = malloc((size_t)n + 1);
  if (fread(*out, 1, (size_t)n, f) != (size_t)n) n = -1;
  (*out)[n > 0 ? n : 0] = 0; /* the log is parsed as text */
  fclose(f);
  return n;
}

static void spit(const char *path, const unsigned char *b, size_t n) {
  FILE *f = fopen(path, "wb");
  if (!f || fwrite(b, 1, n, f) != n) wt_fail_at(__FILE__, __LINE__, "cannot write %s", path);
  if (f) fclose(f);
}

/* Load dir into s with byte `at` of file `path` flipped: the status, and the message holds `want`
 * (and `want2` when given); the file is restored. */
static void flipped(wh_session *s, const char *dir, const char *path, long at, const char *what, const char *want,
                    const char *want2) {
  unsigned char *b;
  long n = slurp(path, &b);
  if (n < 0 || at >= n) {
    wt_fail_at(__FILE__, __LINE__, "%s: cannot read byte %ld of %s", what, at, path);
    return;
  }
  b[at] ^= 0xff;
  spit(path, b, (size_t)n);
  wh_status st = wh_checkpoint_load(s, dir, NULL, 0, NULL);
  const char *e = wh_last_error(ctx);
  EXPECT(st == WH_ERR_CORRUPT && strstr(e, want) && (!want2 || strstr(e, want2)),
         "%s: byte %ld flipped: %s: %s", what, at, wh_status_str(st), e);
  b[at] ^= 0xff;
  spit(path, b, (size_t)n);
  free(b);
}

static void damage(const void *arg) {
  (void)arg;
  char dir[300], file[400], index[400], latest[400], msg[256];
  dir_for(dir, sizeof dir, "damage");
  tmodel m = build(M_ADAM, 16);
  wh_session *s = session(&m);
  train(&m, s, 0, 3, NULL);
  EXPECT_OK(wh_checkpoint_save(s, dir, NULL));
  snprintf(file, sizeof file, "%s/step-00000003/rank-00000-of-00001.safetensors", dir);
  snprintf(index, sizeof index, "%s/step-00000003/model.safetensors.index.json", dir);
  snprintf(latest, sizeof latest, "%s/latest", dir);
  unsigned char *b;
  long n = slurp(file, &b);
  CHECK(n > 8 ? WH_OK : WH_ERR_IO);
  uint64_t hl = 0;
  for (int i = 0; i < 8; i++) hl |= (uint64_t)b[i] << (8 * i);
  wh__st_file sf;
  CHECK(wh__st_parse((const char *)b + 8, (size_t)hl, (uint64_t)n, &sf, msg, sizeof msg));
  /* a byte in every tensor's data names that tensor and the file */
  int flips = 0;
  for (int i = 0; i < sf.n; i++) {
    long at = (long)(8 + hl + sf.e[i].begin + (sf.e[i].end - sf.e[i].begin) / 2);
    flipped(s, dir, file, at, sf.e[i].key, sf.e[i].key, "rank-00000-of-00001.safetensors");
    flips++;
  }
  EXPECT_SAY(flips == 18, "a flipped byte in each of the %d tensors' data: WH_ERR_CORRUPT naming it and the file", flips);
  /* the header, its length, the index, the marker */
  flipped(s, dir, file, 9, "header", "header fails its checksum", "rank-00000");
  flipped(s, dir, file, (long)hl / 2, "header", "header fails its checksum", "rank-00000");
  flipped(s, dir, file, 3, "header length", "header of", "rank-00000");
  free(b);
  long in = slurp(index, &b);
  for (long at = 5; at < in; at += in / 7) flipped(s, dir, index, at, "index", "model.safetensors.index.json", NULL);
  flipped(s, dir, latest, 2, "latest", "latest", NULL);
  flipped(s, dir, latest, 15, "latest", "latest", NULL);
  free(b);
  wh__st_free(&sf);
  /* truncated, grown, missing */
  n = slurp(file, &b);
  spit(file, b, (size_t)n - 5);
  EXPECT(wh_checkpoint_load(s, dir, NULL, 0, NULL) == WH_ERR_CORRUPT && strstr(wh_last_error(ctx), "truncated"),
         "a truncated file: %s", wh_last_error(ctx));
  unlink(file);
  EXPECT(wh_checkpoint_load(s, dir, NULL, 0, NULL) == WH_ERR_CORRUPT && strstr(wh_last_error(ctx), "rank-00000"),
         "a missing file: %s", wh_last_error(ctx));
  spit(file, b, (size_t)n);
  free(b);
  EXPECT_OK(wh_checkpoint_load(s, dir, NULL, 0, NULL));
  /* a save killed before its marker: the previous checkpoint loads; with no marker, none does */
  train(&m, s, 3, 4, NULL);
  EXPECT_OK(wh_checkpoint_save(s, dir, NULL));
  n = slurp(latest, &b);
  const char *old = "step-00000003 ";
  char line[64];
  snprintf(line, sizeof line, "%s%08x\n", old, wh__crc32c(0, "step-00000003", 13));
  spit(latest, (const unsigned char *)line, strlen(line));
  snprintf(index, sizeof index, "%s/step-00000004/model.safetensors.index.json", dir);
  unlink(index); /* as if killed before the index was renamed into place */
  wh_session *t = session(&m);
  EXPECT(wh_checkpoint_load(t, dir, NULL, 0, NULL) == WH_OK && wh_session_steps(t) == 3,
         "the checkpoint before a half-written one does not load: %s", wh_last_error(ctx));
  unlink(latest);
  EXPECT(wh_checkpoint_load(t, dir, NULL, 0, NULL) == WH_ERR_NOT_FOUND && strstr(wh_last_error(ctx), "latest"),
         "without the marker, nothing is complete: %s", wh_last_error(ctx));
  free(b);
  wh_session_destroy(t);
  wh_session_destroy(s);
  wh_graph_destroy(m.g);
}

/* Rewrite the index's slices of tensor `name` as n flat windows lo[i]..hi[i] of its one file, with
 * a valid checksum: what the format allows but no writer makes. */
static void reslice(const char *index, const char *name, int n, const int64_t *lo, const int64_t *hi) {
  json_object *root = json_object_from_file(index), *tensors, *t, *sl;
  CHECK(root && json_object_object_get_ex(root, "tensors", &tensors) && json_object_object_get_ex(tensors, name, &t) &&
                json_object_object_get_ex(t, "slices", &sl)
            ? WH_OK
            : WH_ERR_CORRUPT);
  json_object *first = json_object_get(json_object_array_get_idx(sl, 0)), *arr = json_object_new_array();
  for (int i = 0; i < n; i++) {
    json_object *c = NULL, *fl = json_object_new_array();
    json_object_deep_copy(first, &c, NULL);
    json_object_array_add(fl, json_object_new_int64(lo[i]));
    json_object_array_add(fl, json_object_new_int64(hi[i]));
    json_object_object_add(c, "flat", fl);
    json_object_array_add(arr, c);
  }
  json_object_put(first);
  json_object_object_add(t, "slices", arr);
  json_object_object_add(root, "index_crc32c", json_object_new_string("00000000"));
  char *text = strdup(json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN));
  char *z = strstr(text, "\"index_crc32c\":\"00000000\"") + strlen("\"index_crc32c\":\"");
  char hx[9];
  snprintf(hx, sizeof hx, "%08x", wh__crc32c(0, text, strlen(text)));
  memcpy(z, hx, 8);
  spit(index, (const unsigned char *)text, strlen(text));
  free(text);
  json_object_put(root);
}

/* An index whose checksum holds but whose slices do not tile a tensor: refused by name. */
static void bad_slices(const void *arg) {
  (void)arg;
  char dir[300], index[400];
  dir_for(dir, sizeof dir, "slices");
  tmodel m = build(M_ADAM, 16);
  wh_session *s = session(&m);
  EXPECT_OK(wh_checkpoint_save(s, dir, NULL));
  snprintf(index, sizeof index, "%s/step-00000000/model.safetensors.index.json", dir);
  unsigned char *orig;
  long n = slurp(index, &orig);
  const int64_t lo1[] = {0, 8}, hi1[] = {10, 16}; /* l1.b has 16 elements: these hold 18 */
  const int64_t lo2[] = {0, 6}, hi2[] = {10, 12};  /* 16, but [6, 10) twice and [12, 16) never */
  reslice(index, "l1.b", 2, lo1, hi1);
  EXPECT(wh_checkpoint_load(s, dir, NULL, 0, NULL) == WH_ERR_CORRUPT && strstr(wh_last_error(ctx), "'l1.b'") &&
             strstr(wh_last_error(ctx), "18 of its 16"),
         "slices holding more elements than the tensor: %s", wh_last_error(ctx));
  spit(index, orig, (size_t)n);
  reslice(index, "l1.b", 2, lo2, hi2);
  EXPECT(wh_checkpoint_load(s, dir, NULL, 0, NULL) == WH_ERR_CORRUPT && strstr(wh_last_error(ctx), "'l1.b'") &&
             strstr(wh_last_error(ctx), "overlap"),
         "overlapping slices: %s", wh_last_error(ctx));
  const int64_t lo3[] = {0}, hi3[] = {17};
  spit(index, orig, (size_t)n);
  reslice(index, "l1.b", 1, lo3, hi3);
  EXPECT(wh_checkpoint_load(s, dir, NULL, 0, NULL) == WH_ERR_CORRUPT && strstr(wh_last_error(ctx), "'l1.b'"),
         "a slice past the tensor's end: %s", wh_last_error(ctx));
  spit(index, orig, (size_t)n);
  EXPECT_OK(wh_checkpoint_load(s, dir, NULL, 0, NULL));
  free(orig);
  wh_session_destroy(s);
  wh_graph_destroy(m.g);
}

/* Another graph, other shapes, another optimizer: refused by name, the session unchanged. */
static void foreign(const void *arg) {
  (void)arg;
  char dir[300];
  dir_for(dir, sizeof dir, "foreign");
  tmodel m = build(M_ADAM, 16), wide = build(M_ADAM, 20), sgd = build(M_SGD, 16), gpt = build(M_GPT, 0);
  wh_session *s = session(&m);
  train(&m, s, 0, 2, NULL);
  EXPECT_OK(wh_checkpoint_save(s, dir, NULL));
  wh_session *a = session(&wide), *b = session(&sgd), *c = session(&gpt);
  size_t n0, n1;
  char *before = snapshot(&wide, a, &n0);
  EXPECT(wh_checkpoint_load(a, dir, NULL, 0, NULL) == WH_ERR_SHAPE && strstr(wh_last_error(ctx), "'l1.w' is F32 [16,12]") &&
             strstr(wh_last_error(ctx), "[20,12] in this graph"),
         "other shapes: %s", wh_last_error(ctx));
  char *after = snapshot(&wide, a, &n1);
  EXPECT(n0 == n1 && !memcmp(before, after, n0) && wh_session_steps(a) == 0, "a refused load changed the session");
  EXPECT(wh_checkpoint_load(b, dir, NULL, 0, NULL) == WH_ERR_NOT_FOUND && strstr(wh_last_error(ctx), "momentum"),
         "another optimizer: %s", wh_last_error(ctx));
  EXPECT(wh_checkpoint_load(c, dir, NULL, 0, NULL) == WH_ERR_NOT_FOUND && strstr(wh_last_error(ctx), "another graph"),
         "another graph: %s", wh_last_error(ctx));
  free(before), free(after);
  wh_session_destroy(a), wh_session_destroy(b), wh_session_destroy(c), wh_session_destroy(s);
  wh_graph_destroy(m.g), wh_graph_destroy(wide.g), wh_graph_destroy(sgd.g), wh_graph_destroy(gpt.g);
}

/* The header parser against random damage of a real header: an error or a parse, never a crash;
 * and what it must refuse by the format's rules. */
static void header_fuzz(const void *arg) {
  (void)arg;
  wh__st_entry e[2] = {{"a", WH_F32, 2, {2, 3}, 0, 24, 1}, {"b\"q", WH_I32, 1, {4}, 24, 40, 2}};
  const char *meta[] = {"k", "v"};
  char *h, msg[256];
  size_t hl;
  CHECK(wh__st_header(e, 2, meta, 1, &h, &hl, msg, sizeof msg));
  wh__st_file f;
  EXPECT(wh__st_parse(h, hl, 8 + hl + 40, &f, msg, sizeof msg) == WH_OK && f.n == 2 && f.e[1].dims[0] == 4 &&
             !strcmp(wh__st_meta(&f, "k"), "v") && (8 + hl) % 64 == 0,
         "a written header does not parse back: %s", msg);
  wh__st_free(&f);
  EXPECT(wh__st_parse(h, hl, 8 + hl + 44, &f, msg, sizeof msg) == WH_ERR_CORRUPT && strstr(msg, "cover"),
         "trailing data accepted: %s", msg);
  uint64_t x = 88172645463325252ull;
  int parsed = 0, refused = 0;
  char *m = malloc(hl);
  for (int it = 0; it < 20000; it++) {
    memcpy(m, h, hl);
    for (int k = 0; k < 1 + it % 4; k++) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      m[x % hl] = (char)(x >> 32);
    }
    size_t len = it % 5 == 0 ? (size_t)(x >> 40) % hl : hl;
    if (wh__st_parse(m, len, 8 + hl + 40, &f, msg, sizeof msg) == WH_OK) {
      parsed++;
      wh__st_free(&f);
    } else {
      refused++;
    }
  }
  EXPECT_SAY(parsed + refused == 20000, "20000 damaged headers: %d refused with a reason, %d still valid", refused,
             parsed);
  free(m), free(h);
}

/* ---------------------------------------------------------------- SIGKILL during saves */

/* The writer: a step then a save, again and again, each logged before and after, until killed. */
static int kill_child(const char *dir) {
  wh_ctx_options co = WH_CTX_OPTIONS_INIT;
  co.num_threads = 1;
  if (wh_ctx_create(&ctx, &co) != WH_OK) return 1;
  char lp[400];
  snprintf(lp, sizeof lp, "%s.log", dir);
  int log = open(lp, O_WRONLY | O_CREAT | O_APPEND, 0644);
  tmodel m = build(M_WIDE, 384);
  wh_session *s = session(&m);
  wh_checkpoint_options o = WH_CHECKPOINT_OPTIONS_INIT;
  char line[64];
  if (write(log, "ready\n", 6) != 6) return 1;
  for (int k = 1; k < 100000; k++) {
    train(&m, s, k - 1, k, NULL);
    int n = snprintf(line, sizeof line, "begin %d\n", k);
    if (write(log, line, (size_t)n) != n) return 1;
    wh_status st = wh_checkpoint_save(s, dir, &o);
    n = snprintf(line, sizeof line, st == WH_OK ? "done %d\n" : "fail %d\n", k);
    if (write(log, line, (size_t)n) != n || st != WH_OK) return 1;
  }
  return 0;
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void kill_writer(const void *arg) {
  (void)arg;
  tmodel m = build(M_WIDE, 384);
  int mid_save = 0, ok = 0, none = 0, took_new = 0;
  uint64_t seed = 0x2545F4914F6CDD1Dull ^ (uint64_t)getpid();
  double t0 = now();
  for (int t = 0; t < kill_trials; t++) {
    char dir[300], lp[400], name[32];
    snprintf(name, sizeof name, "kill%02d", t);
    dir_for(dir, sizeof dir, name);
    snprintf(lp, sizeof lp, "%s.log", dir);
    unlink(lp);
    pid_t pid = fork();
    if (pid == 0) {
      setenv("WH_CKPT_KILL_CHILD", dir, 1);
      execl("/proc/self/exe", "test_checkpoint", (char *)NULL);
      _exit(127);
    }
    /* wait for it to be ready, then kill it at a random moment of its step-save loop */
    unsigned char *b = NULL;
    for (double w = now(); now() - w < 30; usleep(2000)) {
      free(b), b = NULL;
      if (slurp(lp, &b) > 0) break;
    }
    free(b);
    seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
    usleep((useconds_t)(20000 + seed % 700000));
    kill(pid, SIGKILL);
    int ws;
    waitpid(pid, &ws, 0);
    long n = slurp(lp, &b);
    int done = 0, begun = 0;
    for (char *q = n > 0 ? (char *)b : NULL; q && *q; q = strchr(q, '\n') ? strchr(q, '\n') + 1 : NULL) {
      int k;
      if (sscanf(q, "done %d", &k) == 1) done = k;
      if (sscanf(q, "begin %d", &k) == 1) begun = k;
    }
    free(b);
    mid_save += begun > done;
    wh_checkpoint_info info = WH_CHECKPOINT_INFO_INIT;
    wh_status st = wh_checkpoint_find(ctx, dir, &info);
    if (st == WH_ERR_NOT_FOUND && done == 0) { /* killed in its first save */
      none++, ok++;
      continue;
    }
    EXPECT(st == WH_OK && (info.step == done || (info.step == begun && begun == done + 1)),
           "trial %d: the last save done was step %d (step %d begun), the checkpoint found: %s step %lld (%s)", t, done,
           begun, wh_status_str(st), (long long)info.step, wh_last_error(ctx));
    if (st != WH_OK || !(info.step == done || info.step == begun)) {
      char cmd[2000];
      snprintf(cmd, sizeof cmd, "echo '--- %s:'; tail -4 '%s'; ls -la --time-style=full-iso '%s' '%s'/*; cat '%s/latest'",
               dir, lp, dir, dir, dir);
      if (system(cmd) != 0) fprintf(stderr, "could not list %s\n", dir);
      continue;
    }
    took_new += info.step == begun && begun > done;
    /* it loads, equals a run of as many steps, and training and saving go on from it */
    wh_session *s = session(&m), *r = session(&m);
    wh_status ls = wh_checkpoint_load(s, dir, NULL, 0, NULL);
    EXPECT(ls == WH_OK && wh_session_steps(s) == info.step, "trial %d: loading step %lld: %s", t, (long long)info.step,
           wh_last_error(ctx));
    train(&m, r, 0, (int)info.step, NULL);
    size_t na, nb;
    char *a = snapshot(&m, s, &na), *c = snapshot(&m, r, &nb);
    int same = na == nb && !memcmp(a, c, na);
    EXPECT(same, "trial %d: the state loaded at step %lld differs from %lld steps of training", t, (long long)info.step,
           (long long)info.step);
    train(&m, s, (int)info.step, (int)info.step + 1, NULL);
    EXPECT_OK(wh_checkpoint_save(s, dir, NULL));
    wh_checkpoint_info again = WH_CHECKPOINT_INFO_INIT;
    EXPECT(wh_checkpoint_find(ctx, dir, &again) == WH_OK && again.step == info.step + 1,
           "trial %d: saving after the crash", t);
    ok += ls == WH_OK && same;
    free(a), free(c);
    wh_session_destroy(s), wh_session_destroy(r);
    rm_rf(dir);
    unlink(lp);
  }
  EXPECT_SAY(ok == kill_trials, "writer SIGKILLed at %d random points (%d inside a save, %d before its first save "
             "completed, %d just after a save's marker): every resume loaded the last complete checkpoint, equal to "
             "training as many steps, and saved again (%.1f s)", kill_trials, mid_save, none, took_new, now() - t0);
  wh_graph_destroy(m.g);
}

/* ---------------------------------------------------------------- the suite */

static int setup(int argc, char **argv) {
  for (int i = 1; i + 1 < argc; i++)
    if (!strcmp(argv[i], "--kill-trials")) kill_trials = atoi(argv[i + 1]);
  wh_ctx_options co = WH_CTX_OPTIONS_INIT;
  co.num_threads = 1;
  if (wh_ctx_create(&ctx, &co) != WH_OK) return 1;
  snprintf(root, sizeof root, "/tmp/wh_ckpt_XXXXXX");
  if (!mkdtemp(root)) return 1;
  return 0;
}

static void teardown(void) {
  rm_rf(root);
  wh_ctx_destroy(ctx);
}

static const wt_case cases[] = {
    {"crc32c", crc32c, NULL},
    {"resume_adamw_dropout", resume_adam, NULL},
    {"resume_sgd_nesterov", resume_sgd, NULL},
    {"resume_gpt", resume_gpt, NULL},
    {"resume_fp16_loss_scale", resume_fp16, NULL},
    {"meta_find_keep", meta_and_find, NULL},
    {"damage", damage, NULL},
    {"foreign", foreign, NULL},
    {"bad_slices", bad_slices, NULL},
    {"header_fuzz", header_fuzz, NULL},
    {"kill_writer", kill_writer, NULL},
};

int main(int argc, char **argv) {
  const char *child = getenv("WH_CKPT_KILL_CHILD");
  if (child) return kill_child(child);
  const wt_suite s = {"checkpoint", setup, teardown, NULL, 0};
  return wt_main(&s, cases, WT_COUNT(cases), argc, argv);
}
