/* ckpt_bench.c - checkpoint save and load of a GPT-2-124M-sized training state (parameters and
 * both AdamW moments, about 1.5 GB) against plain write(2)/fsync and read(2) of the same bytes to
 * the same file system, in the same run, alternating, median of several rounds.
 *
 *   ckpt_bench [DIR] [--rounds N] [--layers N] [--threads N]   (DIR: scratch, default under /tmp)
 *
 * The save is durable (every file fsynced, renamed, its directory fsynced), so the raw writer
 * fsyncs too: both sides pay the disk. Loads read what the page cache holds, both sides alike.
 * Prints each round, the medians, then RESULT ckpt_save_vs_raw and ckpt_load_vs_raw (checkpoint
 * throughput over raw; >= 0.8 is the target) and how much the rounds spread. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "gpt.h"
#include "whale.h"

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(const double *v, int n) {
  double s[64];
  memcpy(s, v, sizeof(double) * (size_t)n);
  qsort(s, (size_t)n, sizeof(double), cmp_d);
  return n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
}

/* The raw peer, a plain durable save: a new file, write(2) in 256 MiB calls, fsync, close, fsync of
 * its directory, then the previous file removed (what the checkpoint does with keep 1, so both
 * sides make the file system allocate the same new space each round). */
static double raw_write(const char *dir, const char *path, const char *old, const char *buf, size_t n) {
  double t0 = now();
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return -1;
  for (size_t at = 0; at < n;) {
    size_t k = n - at < ((size_t)256 << 20) ? n - at : (size_t)256 << 20;
    ssize_t w = write(fd, buf + at, k);
    if (w <= 0 && errno != EINTR) return close(fd), -1;
    if (w > 0) at += (size_t)w;
  }
  if (fsync(fd) != 0) return close(fd), -1;
  close(fd);
  int d = open(dir, O_RDONLY | O_DIRECTORY);
  if (d >= 0) fsync(d), close(d);
  unlink(old);
  return now() - t0;
}

static double raw_read(const char *path, char *buf, size_t n) {
  double t0 = now();
  int fd = open(path, O_RDONLY);
  if (fd < 0) return -1;
  for (size_t at = 0; at < n;) {
    size_t k = n - at < ((size_t)256 << 20) ? n - at : (size_t)256 << 20;
    ssize_t r = read(fd, buf + at, k);
    if (r <= 0 && errno != EINTR) return close(fd), -1;
    if (r > 0) at += (size_t)r;
  }
  close(fd);
  return now() - t0;
}

int main(int argc, char **argv) {
  int rounds = 5, layers = 12, threads = 0;
  const char *dir_arg = NULL;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--rounds") && i + 1 < argc) rounds = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--layers") && i + 1 < argc) layers = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
    else dir_arg = argv[i];
  }
  if (rounds < 1 || rounds > 64) rounds = 5;
  char dir[512];
  if (dir_arg) snprintf(dir, sizeof dir, "%s", dir_arg);
  else snprintf(dir, sizeof dir, "/tmp/wh_ckpt_bench_XXXXXX");
  if (!dir_arg && !mkdtemp(dir)) return perror("mkdtemp"), 1;
  wh_ctx *ctx;
  wh_ctx_options xo = WH_CTX_OPTIONS_INIT;
  xo.num_threads = threads; /* 0: every core */
  CHECK(wh_ctx_create(&ctx, &xo));
  wh_graph *g;
  CHECK(wh_graph_create(ctx, &g));
  gpt_options o = GPT_OPTIONS_INIT; /* GPT-2 small: 124M parameters */
  o.layers = layers;
  gpt_model m;
  gpt_build(g, &o, &m);
  CHECK(wh_graph_status(g));
  CHECK(wh_backward(g, m.loss));
  wh_adamw_options ao = WH_ADAMW_OPTIONS_INIT;
  CHECK(wh_optimizer_adamw(g, &ao));
  wh_session_options so = WH_SESSION_OPTIONS_INIT;
  so.batch = 1;
  wh_session *s;
  CHECK(wh_session_create(ctx, g, &so, &s));
  /* moments with real-looking bytes (not the zeros a fresh optimizer holds), and the same bytes in
   * one host buffer for the raw peer */
  size_t total = 0;
  int nt = 0;
  wh_value vals[4096];
  for (int i = 0; i < wh_graph_num_params(g); i++) {
    static const char *suf[] = {"", ".adam_m", ".adam_v"};
    for (int k = 0; k < 3 && nt < 4096; k++) {
      char nm[256];
      snprintf(nm, sizeof nm, "%s%s", wh_value_name(g, wh_graph_param(g, i)), suf[k]);
      wh_value v = wh_graph_find(g, nm);
      if (v != WH_NONE) vals[nt++] = v, total += wh_session_bytes(s, v);
    }
  }
  char *raw = malloc(total);
  if (!raw) return fprintf(stderr, "out of memory for %zu bytes\n", total), 1;
  uint64_t x = 0x9e3779b97f4a7c15ull;
  for (size_t at = 0, i = 0; i < (size_t)nt; i++) {
    size_t b = wh_session_bytes(s, vals[i]);
    float *f = (float *)(raw + at);
    if (strstr(wh_value_name(g, vals[i]), ".adam_")) {
      for (size_t j = 0; j < b / 4; j++) x ^= x << 13, x ^= x >> 7, x ^= x << 17, f[j] = (float)(x >> 40) * 1e-9f;
      CHECK(wh_session_set_param(s, vals[i], f, b));
    } else {
      CHECK(wh_session_get_param(s, vals[i], f, b));
    }
    at += b;
  }
  char rawpath[2][600], ckdir[600];
  snprintf(rawpath[0], sizeof rawpath[0], "%s/raw0.bin", dir);
  snprintf(rawpath[1], sizeof rawpath[1], "%s/raw1.bin", dir);
  snprintf(ckdir, sizeof ckdir, "%s/ckpt", dir);
  printf("checkpoint vs raw: %d tensors, %.3f GB (GPT-2 %d layers + AdamW moments), %d threads, in %s\n", nt,
         (double)total / 1e9, layers, wh_ctx_threads(ctx), dir);
  printf("round   ckpt save   raw write+fsync   ckpt load   raw read   (seconds)\n");
  double ts[64], tw[64], tl[64], tr[64];
  wh_checkpoint_options co = WH_CHECKPOINT_OPTIONS_INIT;
  co.keep = 1;
  /* a first round untimed: the first writes to fresh disk space (a thin-provisioned virtual disk
   * allocates it then) and the first touches of the buffers are paid by neither side */
  CHECK(raw_write(dir, rawpath[1], rawpath[0], raw, total) < 0 ? WH_ERR_IO : WH_OK);
  CHECK(wh_checkpoint_save(s, ckdir, &co));
  for (int r = 0; r < rounds; r++) {
    const char *rp = rawpath[r % 2], *old = rawpath[(r + 1) % 2];
    /* alternate which goes first, so neither always meets a cold or a crowded page cache */
    if (r % 2 == 0) {
      tw[r] = raw_write(dir, rp, old, raw, total);
      double t0 = now();
      CHECK(wh_checkpoint_save(s, ckdir, &co));
      ts[r] = now() - t0;
    } else {
      double t0 = now();
      CHECK(wh_checkpoint_save(s, ckdir, &co));
      ts[r] = now() - t0;
      tw[r] = raw_write(dir, rp, old, raw, total);
    }
    if (r % 2 == 0) {
      tr[r] = raw_read(rp, raw, total);
      double t0 = now();
      CHECK(wh_checkpoint_load(s, ckdir, NULL, 0, NULL));
      tl[r] = now() - t0;
    } else {
      double t0 = now();
      CHECK(wh_checkpoint_load(s, ckdir, NULL, 0, NULL));
      tl[r] = now() - t0;
      tr[r] = raw_read(rp, raw, total);
    }
    if (tw[r] < 0 || tr[r] < 0) return perror("raw peer"), 1;
    printf("%5d   %9.3f   %15.3f   %9.3f   %8.3f\n", r, ts[r], tw[r], tl[r], tr[r]);
    fflush(stdout);
  }
  /* the state loaded back is the state saved */
  char *back = malloc(total);
  size_t at = 0;
  for (int i = 0; back && i < nt; i++) {
    size_t b = wh_session_bytes(s, vals[i]);
    CHECK(wh_session_get_param(s, vals[i], back + at, b));
    at += b;
  }
  EXPECT(back && !memcmp(back, raw, total), "the state loaded differs from the state saved");
  free(back);
  double ms = median(ts, rounds), mw = median(tw, rounds), ml = median(tl, rounds), mr = median(tr, rounds);
  double lo_s = 1e30, hi_s = 0, lo_l = 1e30, hi_l = 0;
  for (int r = 0; r < rounds; r++) {
    double a = tw[r] / ts[r], b = tr[r] / tl[r];
    lo_s = a < lo_s ? a : lo_s, hi_s = a > hi_s ? a : hi_s;
    lo_l = b < lo_l ? b : lo_l, hi_l = b > hi_l ? b : hi_l;
  }
  printf("median: save %.2f GB/s, raw write+fsync %.2f GB/s; load %.2f GB/s, raw read %.2f GB/s\n",
         (double)total / ms / 1e9, (double)total / mw / 1e9, (double)total / ml / 1e9, (double)total / mr / 1e9);
  printf("spread over the rounds: save/raw %.2f .. %.2f, load/raw %.2f .. %.2f\n", lo_s, hi_s, lo_l, hi_l);
  printf("RESULT ckpt_save_vs_raw %.3f\n", mw / ms);
  printf("RESULT ckpt_load_vs_raw %.3f\n", mr / ml);
  unlink(rawpath[0]), unlink(rawpath[1]);
  char cmd[700];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", ckdir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", ckdir);
  if (!dir_arg) rmdir(dir);
  free(raw);
  wh_session_destroy(s);
  wh_graph_destroy(g);
  wh_ctx_destroy(ctx);
  return wt_failed ? 1 : 0;
}
