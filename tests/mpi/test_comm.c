/* test_comm.c - every communication operation against a locally computed reference, run under
 * mpirun with 1..4 ranks: sizes 0, 1, odd and 64 MB, every dtype, both reduce ops, in place and
 * not, equal and unequal all-gather, sub-communicators, tagged point-to-point, gradient fusion.
 *
 *   mpirun -np N test_comm [--big]      (--big adds the 64 MB cases) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "whale.h"
#include "../common/runner.h"

static wh_ctx *ctx;
static const wh_dtype dtypes[] = {WH_F32, WH_F64, WH_I32, WH_BF16};
static const char *dname(wh_dtype d) {
  return d == WH_F32 ? "f32" : d == WH_F64 ? "f64" : d == WH_I32 ? "i32" : "bf16";
}
static size_t dsize(wh_dtype d) { return d == WH_F64 ? 8 : d == WH_BF16 ? 2 : 4; }

/* Small integers: exact in every dtype, even summed over 4 ranks (bf16 keeps 8 bits). */
static double value(int rank, size_t i) { return (double)((rank * 7 + (int)(i % 13)) % 16); }

static void put(void *buf, wh_dtype d, size_t i, double v) {
  switch (d) {
    case WH_F32: ((float *)buf)[i] = (float)v; break;
    case WH_F64: ((double *)buf)[i] = v; break;
    case WH_I32: ((int32_t *)buf)[i] = (int32_t)v; break;
    default: {
      float f = (float)v;
      uint32_t u;
      memcpy(&u, &f, 4);
      ((uint16_t *)buf)[i] = (uint16_t)(u >> 16);
    }
  }
}

static double get(const void *buf, wh_dtype d, size_t i) {
  switch (d) {
    case WH_F32: return ((const float *)buf)[i];
    case WH_F64: return ((const double *)buf)[i];
    case WH_I32: return ((const int32_t *)buf)[i];
    default: {
      uint32_t u = (uint32_t)((const uint16_t *)buf)[i] << 16;
      float f;
      memcpy(&f, &u, 4);
      return f;
    }
  }
}

/* Expected result of a reduction over n ranks, as the library computes it. */
static double reduced(int n, size_t i, wh_dtype d, wh_reduce_op op) {
  double s = 0;
  for (int r = 0; r < n; r++) s += value(r, i);
  if (op == WH_REDUCE_SUM) return s;
  if (d == WH_I32) return (double)((int64_t)s / n);
  if (d == WH_F32) return (double)((float)s * (float)(1.0 / n));
  if (d == WH_BF16) {
    float f = (float)(s * (1.0 / n));
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7fffu + ((u >> 16) & 1u);
    u &= 0xffff0000u;
    memcpy(&f, &u, 4);
    return f;
  }
  return s * (1.0 / n);
}

static size_t mismatches(const void *buf, wh_dtype d, size_t n, size_t first, int ranks, wh_reduce_op op) {
  size_t bad = 0;
  for (size_t i = 0; i < n; i++)
    if (get(buf, d, i) != reduced(ranks, first + i, d, op)) bad++;
  return bad;
}

static void test_allreduce(wh_comm *c, size_t count) {
  int n = wh_comm_size(c), r = wh_comm_rank(c);
  for (size_t k = 0; k < 4; k++) {
    wh_dtype d = dtypes[k];
    for (int op = 0; op < 2; op++)
      for (int inplace = 0; inplace < 2; inplace++) {
        char *s = malloc(count * dsize(d) + 1), *o = malloc(count * dsize(d) + 1);
        for (size_t i = 0; i < count; i++) put(s, d, i, value(r, i));
        if (inplace) memcpy(o, s, count * dsize(d));
        EXPECT_OK(wh_comm_allreduce(c, inplace ? NULL : s, o, count, d, (wh_reduce_op)op));
        size_t bad = mismatches(o, d, count, 0, n, (wh_reduce_op)op);
        EXPECT(bad == 0, "allreduce %s %s %s count %zu ranks %d: %zu wrong", dname(d), op ? "avg" : "sum",
               inplace ? "in place" : "out of place", count, n, bad);
        if (!inplace)
          EXPECT(count == 0 || get(s, d, count - 1) == value(r, count - 1), "allreduce changed its send buffer");
        free(s), free(o);
      }
  }
}

static void test_reduce_scatter(wh_comm *c, size_t per) {
  int n = wh_comm_size(c), r = wh_comm_rank(c);
  for (size_t k = 0; k < 4; k++) {
    wh_dtype d = dtypes[k];
    for (int op = 0; op < 2; op++) {
      char *s = malloc(per * (size_t)n * dsize(d) + 1), *o = malloc(per * dsize(d) + 1);
      for (size_t i = 0; i < per * (size_t)n; i++) put(s, d, i, value(r, i));
      EXPECT_OK(wh_comm_reduce_scatter(c, s, o, per, d, (wh_reduce_op)op));
      size_t bad = mismatches(o, d, per, per * (size_t)r, n, (wh_reduce_op)op);
      EXPECT(bad == 0, "reduce_scatter %s %s per-rank %zu ranks %d: %zu wrong", dname(d), op ? "avg" : "sum", per, n,
             bad);
      free(s), free(o);
    }
  }
}

static void test_allgather(wh_comm *c, size_t base, int unequal) {
  int n = wh_comm_size(c), r = wh_comm_rank(c);
  size_t *counts = malloc(sizeof(size_t) * (size_t)n), total = 0;
  for (int i = 0; i < n; i++) total += counts[i] = unequal ? base + (size_t)(i * 3 % 5) * (base / 3 + 1) : base;
  for (size_t k = 0; k < 4; k++) {
    wh_dtype d = dtypes[k];
    for (int inplace = 0; inplace < 2; inplace++) {
      char *s = malloc(counts[r] * dsize(d) + 1), *o = calloc(total + 1, dsize(d));
      size_t off = 0;
      for (int i = 0; i < r; i++) off += counts[i];
      for (size_t i = 0; i < counts[r]; i++) put(inplace ? o : s, d, (inplace ? off : 0) + i, value(r, i));
      EXPECT_OK(wh_comm_allgather(c, inplace ? NULL : s, o, base, unequal ? counts : NULL, d));
      size_t bad = 0, at = 0;
      for (int q = 0; q < n; q++)
        for (size_t i = 0; i < counts[q]; i++, at++)
          if (get(o, d, at) != value(q, i)) bad++;
      EXPECT(bad == 0, "allgather %s %s %s base %zu ranks %d: %zu wrong", dname(d), unequal ? "unequal" : "equal",
             inplace ? "in place" : "out of place", base, n, bad);
      free(s), free(o);
    }
  }
  free(counts);
}

static void test_broadcast(wh_comm *c, size_t count) {
  int n = wh_comm_size(c), r = wh_comm_rank(c);
  for (int root = 0; root < n; root++)
    for (size_t k = 0; k < 4; k++) {
      wh_dtype d = dtypes[k];
      char *b = calloc(count + 1, dsize(d));
      if (r == root)
        for (size_t i = 0; i < count; i++) put(b, d, i, value(root, i));
      EXPECT_OK(wh_comm_broadcast(c, b, count, d, root));
      size_t bad = 0;
      for (size_t i = 0; i < count; i++) bad += get(b, d, i) != value(root, i);
      EXPECT(bad == 0, "broadcast %s root %d count %zu: %zu wrong", dname(d), root, count, bad);
      free(b);
    }
}

/* Everyone sends to everyone with several outstanding requests and distinct tags. */
static void test_p2p(wh_comm *c, size_t count) {
  int n = wh_comm_size(c), r = wh_comm_rank(c);
  if (n < 2) return;
  for (size_t k = 0; k < 4; k++) {
    wh_dtype d = dtypes[k];
    char **in = calloc((size_t)n * 2, sizeof(char *)), **out = calloc((size_t)n * 2, sizeof(char *));
    wh_request **rq = calloc((size_t)n * 4, sizeof(wh_request *));
    int nr = 0;
    for (int p = 0; p < n; p++) {
      if (p == r) continue;
      for (int t = 0; t < 2; t++) {
        int slot = p * 2 + t;
        in[slot] = calloc(count + 1, dsize(d));
        out[slot] = malloc(count * dsize(d) + 1);
        for (size_t i = 0; i < count; i++) put(out[slot], d, i, value(r * 2 + t, i + (size_t)p));
        EXPECT_OK(wh_comm_irecv(c, in[slot], count, d, p, 100 + t, &rq[nr++]));
        EXPECT_OK(wh_comm_isend(c, out[slot], count, d, p, 100 + t, &rq[nr++]));
      }
    }
    for (int i = nr - 1; i >= 0; i--) /* complete out of order */
      if (rq[i]) EXPECT_OK(wh_request_wait(rq[i]));
    for (int p = 0; p < n; p++) {
      if (p == r) continue;
      for (int t = 0; t < 2; t++) {
        size_t bad = 0;
        for (size_t i = 0; i < count; i++) bad += get(in[p * 2 + t], d, i) != value(p * 2 + t, i + (size_t)r);
        EXPECT(bad == 0, "recv %s from %d tag %d count %zu: %zu wrong", dname(d), p, 100 + t, count, bad);
        free(in[p * 2 + t]), free(out[p * 2 + t]);
      }
    }
    free(in), free(out), free(rq);
  }
}

static void test_split(wh_comm *c) {
  int n = wh_comm_size(c), r = wh_comm_rank(c);
  /* the odd ranks in reverse order, then every rank but 0 */
  int odd[4], no = 0;
  for (int i = n - 1; i >= 0; i--)
    if (i % 2) odd[no++] = i;
  if (no > 0) {
    wh_comm *sub = NULL;
    EXPECT_OK(wh_comm_split(c, no, odd, &sub));
    EXPECT((sub != NULL) == (r % 2 == 1), "membership of the odd group");
    if (sub) {
      int want = -1;
      for (int i = 0; i < no; i++)
        if (odd[i] == r) want = i;
      EXPECT(wh_comm_rank(sub) == want && wh_comm_size(sub) == no, "sub rank %d of %d, want %d of %d",
             wh_comm_rank(sub), wh_comm_size(sub), want, no);
      test_allreduce(sub, 1001);
      test_allgather(sub, 17, 1);
      EXPECT_OK(wh_comm_barrier(sub));
      wh_comm_destroy(sub);
    }
  }
  if (n > 1) {
    int rest[4], nrst = 0;
    for (int i = 1; i < n; i++) rest[nrst++] = i;
    wh_comm *sub = NULL;
    EXPECT_OK(wh_comm_split(c, nrst, rest, &sub));
    EXPECT((sub != NULL) == (r != 0), "membership of ranks 1..n-1");
    if (sub) {
      test_reduce_scatter(sub, 33);
      wh_comm_destroy(sub);
    }
  }
  int dup[2] = {0, 0};
  wh_comm *bad = NULL;
  EXPECT(wh_comm_split(c, 2, dup, &bad) == WH_ERR_INVALID_ARGUMENT && bad == NULL, "duplicate ranks accepted");
}

static void test_fusion(wh_comm *c) {
  int n = wh_comm_size(c), r = wh_comm_rank(c);
  const size_t sizes[] = {1, 7, 300, 5000, 2, 20000, 64, 1};
  float *t[8];
  wh_fusion *f;
  EXPECT_OK(wh_fusion_create(c, 4096, WH_F32, WH_REDUCE_AVG, &f));
  for (int round = 0; round < 2; round++) {
    for (int k = 0; k < 8; k++) {
      t[k] = malloc(sizes[k] * sizeof(float));
      for (size_t i = 0; i < sizes[k]; i++) t[k][i] = (float)value(r, i + (size_t)k);
      EXPECT_OK(wh_fusion_add(f, t[k], sizes[k]));
    }
    EXPECT_OK(wh_fusion_wait(f));
    for (int k = 0; k < 8; k++) {
      size_t bad = 0;
      for (size_t i = 0; i < sizes[k]; i++) bad += t[k][i] != (float)reduced(n, i + (size_t)k, WH_F32, WH_REDUCE_AVG);
      EXPECT(bad == 0, "fusion round %d tensor %d (%zu elements): %zu wrong", round, k, sizes[k], bad);
      free(t[k]);
    }
  }
  EXPECT(wh_fusion_buckets_started(f) >= 6, "fusion started only %d buckets", wh_fusion_buckets_started(f));
  wh_fusion_destroy(f);
}

/* Waiting on requests in different orders on different ranks must not deadlock: every wait
 * advances all of the comm's requests, as MPI's own progress does. */
static void test_wait_order(wh_comm *c) {
  int n = wh_comm_size(c), r = wh_comm_rank(c);
  enum { K = 4, N = 300001 };
  float *buf[K];
  wh_request *rq[K];
  for (int k = 0; k < K; k++) {
    buf[k] = malloc(sizeof(float) * N);
    for (size_t i = 0; i < N; i++) buf[k][i] = (float)value(r, i + (size_t)k);
    EXPECT_OK(wh_comm_iallreduce(c, NULL, buf[k], N, WH_F32, WH_REDUCE_SUM, &rq[k]));
  }
  for (int i = 0; i < K; i++) {
    int k = r % 2 ? K - 1 - i : i; /* odd ranks wait in reverse */
    EXPECT_OK(wh_request_wait(rq[k]));
  }
  for (int k = 0; k < K; k++) {
    size_t bad = 0;
    for (size_t i = 0; i < N; i++) bad += buf[k][i] != (float)reduced(n, i + (size_t)k, WH_F32, WH_REDUCE_SUM);
    EXPECT(bad == 0, "allreduce %d waited out of order: %zu wrong", k, bad);
    free(buf[k]);
  }
}

static void test_errors(wh_comm *c) {
  int n = wh_comm_size(c);
  float x = 0;
  wh_request *rq = NULL;
  EXPECT(wh_comm_isend(c, &x, 1, WH_F32, n, 0, &rq) == WH_ERR_INVALID_ARGUMENT && rq == NULL &&
             strstr(wh_last_error(ctx), "peer"),
         "send to a rank outside the communicator: %s", wh_last_error(ctx));
  EXPECT(wh_comm_isend(c, &x, 1, WH_F16, 0, 0, &rq) == WH_ERR_DTYPE, "f16 send accepted");
  EXPECT(wh_comm_allreduce(c, NULL, NULL, 4, WH_F32, WH_REDUCE_SUM) == WH_ERR_INVALID_ARGUMENT, "NULL buffer");
  EXPECT(wh_comm_broadcast(c, &x, 1, WH_F32, n) == WH_ERR_INVALID_ARGUMENT, "broadcast root out of range");
}

static wh_comm *comm;
static int big; /* --big: also 64 MB transfers */

static void launcher(const void *arg) {
  (void)arg;
  int n = wh_comm_size(comm);
  wh_launch_info li = wh_launch_detect();
  EXPECT(li.size == 1 || (li.rank == wt_rank && li.size == n), "launcher says %d of %d (%s)", li.rank, li.size,
         li.launcher);
}

static void collectives(const void *arg) {
  (void)arg;
  wh_comm *c = comm;
  const size_t counts[] = {0, 1, 1001, 262147};
  for (int i = 0; i < 4; i++) {
    test_allreduce(c, counts[i]);
    test_reduce_scatter(c, counts[i] / 4);
    test_allgather(c, counts[i], 0);
    test_allgather(c, counts[i], 1);
    test_broadcast(c, counts[i]);
    test_p2p(c, counts[i]);
  }
}

/* 64 MB: f32 and bf16 allreduce, f32 allgather and point-to-point */
static void big_transfers(const void *arg) {
  (void)arg;
  if (!big) {
    wt_skip("64 MB transfers run with --big");
    return;
  }
  wh_comm *c = comm;
  int n = wh_comm_size(c);
  size_t mb64 = (size_t)64 << 20;
  char *s = malloc(mb64), *o2 = malloc(mb64);
  for (int k = 0; k < 4; k += 3) {
    wh_dtype d = dtypes[k];
    size_t cnt = mb64 / dsize(d);
    for (size_t i = 0; i < cnt; i++) put(s, d, i, value(wt_rank, i));
    EXPECT_OK(wh_comm_allreduce(c, s, o2, cnt, d, WH_REDUCE_SUM));
    EXPECT(mismatches(o2, d, cnt, 0, n, WH_REDUCE_SUM) == 0, "64 MB allreduce %s", dname(d));
  }
  size_t per = mb64 / 4 / (size_t)n;
  for (size_t i = 0; i < per; i++) put(s, WH_F32, i, value(wt_rank, i));
  EXPECT_OK(wh_comm_allgather(c, s, o2, per, NULL, WH_F32));
  size_t bad = 0;
  for (int q = 0; q < n; q++)
    for (size_t i = 0; i < per; i += 97) bad += get(o2, WH_F32, (size_t)q * per + i) != value(q, i);
  EXPECT(bad == 0, "64 MB allgather: %zu wrong", bad);
  if (n > 1) {
    size_t cnt = mb64 / 4;
    int peer = wt_rank ^ 1;
    if (peer < n) {
      for (size_t i = 0; i < cnt; i++) put(s, WH_F32, i, value(wt_rank, i));
      wh_request *a, *b;
      EXPECT_OK(wh_comm_irecv(c, o2, cnt, WH_F32, peer, 7, &a));
      EXPECT_OK(wh_comm_isend(c, s, cnt, WH_F32, peer, 7, &b));
      EXPECT_OK(wh_request_wait(a));
      EXPECT_OK(wh_request_wait(b));
      bad = 0;
      for (size_t i = 0; i < cnt; i += 101) bad += get(o2, WH_F32, i) != value(peer, i);
      EXPECT(bad == 0, "64 MB send/recv: %zu wrong", bad);
    }
  }
  free(s), free(o2);
}

static void split(const void *arg) { (void)arg, test_split(comm); }
static void wait_order(const void *arg) { (void)arg, test_wait_order(comm); }
static void fusion(const void *arg) { (void)arg, test_fusion(comm); }
static void errors(const void *arg) { (void)arg, test_errors(comm); }
static void barrier(const void *arg) {
  (void)arg;
  EXPECT_OK(wh_comm_barrier(comm));
}

static int setup(int argc, char **argv) {
  big = argc > 1 && !strcmp(argv[1], "--big");
  wh_ctx_options o = WH_CTX_OPTIONS_INIT;
  o.num_threads = 1;
  if (wh_ctx_create(&ctx, &o) != WH_OK) return 1;
  wh_comm_options co = WH_COMM_OPTIONS_INIT;
  co.timeout_s = 10;
  if (wh_comm_create(ctx, &co, &comm) != WH_OK) {
    printf("wh_comm_create: %s\n", wh_last_error(ctx));
    return 1;
  }
  wt_rank = wh_comm_rank(comm);
  wt_label("comm (%d ranks)", wh_comm_size(comm));
  return 0;
}

/* totals over all ranks */
static void totals(int c[2]) {
  int32_t tot[2] = {c[0], c[1]};
  wh_comm_allreduce(comm, NULL, tot, 2, WH_I32, WH_REDUCE_SUM);
  c[0] = tot[0], c[1] = tot[1];
}

static void teardown(void) {
  wh_comm_destroy(comm);
  wh_ctx_destroy(ctx);
}

static const wt_case cases[] = {
    {"launcher", launcher, NULL}, {"collectives", collectives, NULL}, {"big", big_transfers, NULL},
    {"split", split, NULL},       {"wait_order", wait_order, NULL},   {"fusion", fusion, NULL},
    {"errors", errors, NULL},     {"barrier", barrier, NULL},
};

int main(int argc, char **argv) {
  const wt_suite suite = {"comm", setup, teardown, totals, 1};
  return wt_main(&suite, cases, WT_COUNT(cases), argc, argv);
}
