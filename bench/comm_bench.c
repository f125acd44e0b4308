/* comm_bench.c - libwhale's MPI backend against the raw MPI calls, measured in the same run:
 * allreduce (f32 sum), all-gather (f32) and point-to-point ping-pong for sizes 4 KB .. 64 MB.
 * Sizes, algorithm and bus bandwidth follow nccl-tests: size is the bytes of one rank's
 * (receive) buffer; algbw = size / time; busbw = algbw * 2(n-1)/n (allreduce), algbw * (n-1)/n
 * (all-gather), algbw (send/recv, time = half a round trip between ranks 0 and 1).
 * After a warm-up, blocks of repetitions of the two sides alternate (which side goes first
 * alternates too) for several rounds; a block's time is the slowest rank's, and each side's time
 * is the median over rounds. ratio = MPI time / libwhale time (> 1: libwhale faster). Rank 0
 * prints a table per op, then RESULT lines: the median ratio over sizes >= 1 MB.
 * The meson registration sets OMPI_MCA_mpi_yield_when_idle=1 so that Open MPI's waits yield like
 * libwhale's (by default it busy-polls when ranks <= cores, which on a shared machine costs it
 * whole scheduler ticks: 4 ms per small message).
 *
 *   mpirun -np N comm_bench [--rounds N] [--max-bytes B] [--min-bytes B] [--block-ms T] [--ops LIST]
 */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "check.h" /* CHECK: a failed call ends this rank, and mpirun then the job */
#include "whale.h"

#define MAX_SIZES 16
#define TAG 7

enum { OP_ALLREDUCE, OP_ALLGATHER, OP_SENDRECV, NOPS };
static const char *op_name[NOPS] = {"allreduce", "allgather", "sendrecv"};

static int rank_, nranks;
static MPI_Comm mcomm; /* the raw MPI side's duplicate of MPI_COMM_WORLD */
static wh_ctx *ctx;
static wh_comm *wc;
static float *sendbuf, *recvbuf;

/* One operation of `bytes` (nccl-tests size) on one side. */
static void run_once(int op, int whale, size_t bytes) {
  size_t count = bytes / sizeof(float);
  switch (op) {
    case OP_ALLREDUCE:
      if (whale)
        CHECK(wh_comm_allreduce(wc, sendbuf, recvbuf, count, WH_F32, WH_REDUCE_SUM));
      else
        MPI_Allreduce(sendbuf, recvbuf, (int)count, MPI_FLOAT, MPI_SUM, mcomm);
      break;
    case OP_ALLGATHER: {
      size_t per = count / (size_t)nranks;
      if (whale)
        CHECK(wh_comm_allgather(wc, sendbuf, recvbuf, per, NULL, WH_F32));
      else
        MPI_Allgather(sendbuf, (int)per, MPI_FLOAT, recvbuf, (int)per, MPI_FLOAT, mcomm);
      break;
    }
    case OP_SENDRECV:
      /* one round trip between ranks 0 and 1; the others only meet them at the block's barrier */
      if (rank_ > 1) break;
      if (rank_ == 0) {
        if (whale) {
          CHECK(wh_comm_send(wc, sendbuf, count, WH_F32, 1, TAG));
          CHECK(wh_comm_recv(wc, recvbuf, count, WH_F32, 1, TAG));
        } else {
          MPI_Send(sendbuf, (int)count, MPI_FLOAT, 1, TAG, mcomm);
          MPI_Recv(recvbuf, (int)count, MPI_FLOAT, 1, TAG, mcomm, MPI_STATUS_IGNORE);
        }
      } else {
        if (whale) {
          CHECK(wh_comm_recv(wc, recvbuf, count, WH_F32, 0, TAG));
          CHECK(wh_comm_send(wc, recvbuf, count, WH_F32, 0, TAG));
        } else {
          MPI_Recv(recvbuf, (int)count, MPI_FLOAT, 0, TAG, mcomm, MPI_STATUS_IGNORE);
          MPI_Send(recvbuf, (int)count, MPI_FLOAT, 0, TAG, mcomm);
        }
      }
      break;
  }
}

/* Seconds per operation of a block of reps, the slowest rank's. Both sides synchronise through
 * the raw communicator so the barrier costs the same for each. */
static double block(int op, int whale, size_t bytes, int reps) {
  MPI_Barrier(mcomm);
  double t0 = MPI_Wtime();
  for (int i = 0; i < reps; i++) run_once(op, whale, bytes);
  double t = (MPI_Wtime() - t0) / reps, tmax = 0;
  MPI_Allreduce(&t, &tmax, 1, MPI_DOUBLE, MPI_MAX, mcomm);
  if (op == OP_SENDRECV) tmax /= 2; /* a round trip is two messages */
  return tmax;
}

/* The result of one call is what the reference computes (exact: small integers). */
static int check(int op, size_t bytes) {
  size_t count = bytes / sizeof(float), bad = 0;
  for (size_t i = 0; i < count; i++) sendbuf[i] = (float)((rank_ * 7 + (int)(i % 13)) % 16);
  memset(recvbuf, 0, bytes);
  run_once(op, 1, bytes);
  if (op == OP_ALLREDUCE) {
    for (size_t i = 0; i < count && !bad; i++) {
      float s = 0;
      for (int r = 0; r < nranks; r++) s += (float)((r * 7 + (int)(i % 13)) % 16);
      bad += recvbuf[i] != s;
    }
  } else if (op == OP_ALLGATHER) {
    size_t per = count / (size_t)nranks;
    for (int r = 0; r < nranks && !bad; r++)
      for (size_t i = 0; i < per; i++)
        if (recvbuf[(size_t)r * per + i] != (float)((r * 7 + (int)(i % 13)) % 16)) {
          bad = 1;
          break;
        }
  } else if (rank_ == 0) {
    for (size_t i = 0; i < count && !bad; i++) bad += recvbuf[i] != sendbuf[i];
  }
  int any = 0, mine = bad != 0;
  MPI_Allreduce(&mine, &any, 1, MPI_INT, MPI_MAX, mcomm);
  return !any;
}

static int op_on[NOPS];
static int skip(int op) { return !op_on[op] || (op == OP_SENDRECV && nranks < 2); }

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_d);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void fmt_size(size_t b, char *s, size_t cap) {
  if (b >= (1u << 20))
    snprintf(s, cap, "%zu MB", b >> 20);
  else
    snprintf(s, cap, "%zu KB", b >> 10);
}

int main(int argc, char **argv) {
  int rounds = 7;
  size_t min_bytes = 4 << 10, max_bytes = 64u << 20;
  double block_s = 0.04;
  const char *ops_arg = "allreduce,allgather,sendrecv";
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--rounds") && i + 1 < argc)
      rounds = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--max-bytes") && i + 1 < argc)
      max_bytes = (size_t)atoll(argv[++i]);
    else if (!strcmp(argv[i], "--min-bytes") && i + 1 < argc)
      min_bytes = (size_t)atoll(argv[++i]);
    else if (!strcmp(argv[i], "--ops") && i + 1 < argc)
      ops_arg = argv[++i];
    else if (!strcmp(argv[i], "--block-ms") && i + 1 < argc)
      block_s = atof(argv[++i]) / 1e3;
    else {
      fprintf(stderr, "usage: comm_bench [--rounds N] [--min-bytes B] [--max-bytes B] [--block-ms T]\n"
                      "                  [--ops allreduce,allgather,sendrecv]\n");
      return 2;
    }
  }
  if (rounds < 1) rounds = 1;
  for (int op = 0; op < NOPS; op++) op_on[op] = strstr(ops_arg, op_name[op]) != NULL;

  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  wt_rank = rank_; /* CHECK names the rank */
  MPI_Comm_size(MPI_COMM_WORLD, &nranks);
  MPI_Comm_dup(MPI_COMM_WORLD, &mcomm);
  wh_ctx_options co = WH_CTX_OPTIONS_INIT;
  co.num_threads = 1; /* no kernel pool threads competing with the ranks */
  CHECK(wh_ctx_create(&ctx, &co));
  wh_comm_options o = WH_COMM_OPTIONS_INIT;
  MPI_Comm world = MPI_COMM_WORLD;
  o.mpi_comm = &world;
  CHECK(wh_comm_create(ctx, &o, &wc));

  size_t sizes[MAX_SIZES];
  int nsizes = 0;
  for (size_t b = min_bytes; b <= max_bytes && nsizes < MAX_SIZES; b *= 4) sizes[nsizes++] = b;
  /* buffers hold the largest size; all-gather needs size divisible by n*4, rounded below */
  sendbuf = malloc(max_bytes + 64);
  recvbuf = malloc(max_bytes + 64);
  if (!sendbuf || !recvbuf) {
    fprintf(stderr, "rank %d: out of memory\n", rank_);
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  for (size_t i = 0; i < max_bytes / sizeof(float); i++) sendbuf[i] = (float)(i % 17), recvbuf[i] = 0;

  double t_wh[NOPS][MAX_SIZES], t_mpi[NOPS][MAX_SIZES];
  size_t used[NOPS][MAX_SIZES];
  int ok[NOPS][MAX_SIZES], reps_of[NOPS][MAX_SIZES];
  double *samples = malloc(sizeof(double) * 2 * (size_t)rounds);
  double t_start = MPI_Wtime();

  for (int op = 0; op < NOPS; op++) {
    if (skip(op)) continue;
    for (int s = 0; s < nsizes; s++) {
      size_t bytes = sizes[s];
      if (op == OP_ALLGATHER) bytes = bytes / ((size_t)nranks * sizeof(float)) * (size_t)nranks * sizeof(float);
      used[op][s] = bytes;
      ok[op][s] = check(op, bytes);
      /* warm-up, then size the blocks from the slower side's best time per call (the best of
       * three short blocks: a descheduled rank must not shrink every later block) */
      double w = 1e30, m = 1e30;
      for (int k = 0; k < 3; k++) {
        double a = block(op, 1, bytes, 2), b = block(op, 0, bytes, 2);
        w = a < w ? a : w;
        m = b < m ? b : m;
      }
      double per = w > m ? w : m;
      if (op == OP_SENDRECV) per *= 2;
      int reps = per > 0 ? (int)(block_s / per) : 1000;
      if (reps < 1) reps = 1;
      if (reps > 1000) reps = 1000;
      MPI_Bcast(&reps, 1, MPI_INT, 0, mcomm); /* every rank runs the same number */
      reps_of[op][s] = reps;
      double *sw = samples, *sm = samples + rounds;
      for (int r = 0; r < rounds; r++) {
        if (r % 2 == 0) {
          sw[r] = block(op, 1, bytes, reps);
          sm[r] = block(op, 0, bytes, reps);
        } else {
          sm[r] = block(op, 0, bytes, reps);
          sw[r] = block(op, 1, bytes, reps);
        }
      }
      t_wh[op][s] = median(sw, rounds);
      t_mpi[op][s] = median(sm, rounds);
    }
  }
  double elapsed = MPI_Wtime() - t_start;

  if (rank_ == 0) {
    struct utsname u;
    char host[256] = "?", cpu[256] = "?", lib[MPI_MAX_LIBRARY_VERSION_STRING] = "";
    if (uname(&u) == 0) snprintf(host, sizeof host, "%s %s %s", u.sysname, u.release, u.machine);
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f) {
      char line[512];
      while (fgets(line, sizeof line, f))
        if (!strncmp(line, "model name", 10)) {
          char *p = strchr(line, ':');
          if (p) {
            snprintf(cpu, sizeof cpu, "%s", p + 2);
            cpu[strcspn(cpu, "\n")] = 0;
          }
          break;
        }
      fclose(f);
    }
    int len = 0;
    MPI_Get_library_version(lib, &len);
    lib[strcspn(lib, "\n,")] = 0;
    printf("machine: %s; %s; %ld online cores\n", host, cpu, sysconf(_SC_NPROCESSORS_ONLN));
    const char *yield = getenv("OMPI_MCA_mpi_yield_when_idle");
    printf("MPI: %s; %d ranks; f32; OMPI_MCA_mpi_yield_when_idle=%s; %d rounds of alternating blocks (~%.0f ms "
           "each), medians; %.0f s\n",
           lib, nranks, yield ? yield : "(unset)", rounds, block_s * 1e3, elapsed);
    printf("size: bytes of one rank's (receive) buffer; algbw = size/time, busbw per nccl-tests; GB/s = 1e9 B/s\n");
    printf("ratio = MPI time / libwhale time (> 1: libwhale faster)\n");
    double ratio_med[NOPS] = {0};
    for (int op = 0; op < NOPS; op++) {
      if (skip(op)) continue;
      double factor = op == OP_ALLREDUCE   ? 2.0 * (nranks - 1) / nranks
                      : op == OP_ALLGATHER ? (double)(nranks - 1) / nranks
                                           : 1.0;
      printf("\n%s%s\n", op_name[op], op == OP_SENDRECV ? " (ping-pong between ranks 0 and 1; time is one way)" : "");
      printf("%9s %5s | %11s %9s %9s | %11s %9s %9s | %6s %s\n", "size", "reps", "whale us", "algbw", "busbw",
             "MPI us", "algbw", "busbw", "ratio", "check");
      double rs[MAX_SIZES];
      int nr = 0;
      for (int s = 0; s < nsizes; s++) {
        char sz[32];
        fmt_size(sizes[s], sz, sizeof sz);
        double b = (double)used[op][s], tw = t_wh[op][s], tm = t_mpi[op][s];
        double aw = b / tw / 1e9, am = b / tm / 1e9, ratio = tm / tw;
        printf("%9s %5d | %11.1f %9.3f %9.3f | %11.1f %9.3f %9.3f | %6.3f %s\n", sz, reps_of[op][s], tw * 1e6, aw,
               aw * factor, tm * 1e6, am, am * factor, ratio, ok[op][s] ? "ok" : "WRONG");
        if (sizes[s] >= (1u << 20)) rs[nr++] = ratio;
      }
      ratio_med[op] = nr ? median(rs, nr) : 0;
    }
    printf("\n");
    int all_ok = 1;
    for (int op = 0; op < NOPS; op++)
      for (int s = 0; s < nsizes; s++)
        if (!skip(op)) all_ok &= ok[op][s];
    if (!all_ok) printf("some libwhale results were WRONG (see the check column)\n");
    for (int op = 0; op < NOPS; op++)
      if (!skip(op)) printf("RESULT %s_ratio_vs_mpi %.3f\n", op_name[op], ratio_med[op]);
    fflush(stdout);
  }
  int all_ok = 1;
  for (int op = 0; op < NOPS; op++)
    for (int s = 0; s < nsizes; s++)
      if (!skip(op)) all_ok &= ok[op][s];
  free(samples);
  free(sendbuf);
  free(recvbuf);
  wh_comm_destroy(wc);
  wh_ctx_destroy(ctx);
  MPI_Comm_free(&mcomm);
  MPI_Finalize();
  return all_ok ? 0 : 1;
}
