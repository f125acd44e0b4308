/* test_host_mpi.c - embedding: the host owns MPI. It initialises MPI, hands libwhale a
 * sub-communicator of its own, and after libwhale is gone MPI must still be initialised (libwhale
 * finalises only what it initialised) and the host's communicator untouched and usable. */
#include <mpi.h>
#include <stdio.h>
#include <string.h>

#include "whale.h"
#include "../common/runner.h"

static int world_rank, world_size;

static void host_owns_mpi(const void *arg) {
  (void)arg;
  /* the host's own layout: even and odd world ranks */
  MPI_Comm half;
  MPI_Comm_split(MPI_COMM_WORLD, world_rank % 2, world_rank, &half);
  int half_rank, half_size;
  MPI_Comm_rank(half, &half_rank);
  MPI_Comm_size(half, &half_size);

  wh_ctx *ctx = NULL;
  CHECK(wh_ctx_create(&ctx, NULL));
  EXPECT(wh_ctx_rank(ctx) == world_rank && wh_ctx_size(ctx) == world_size, "context sees %d of %d", wh_ctx_rank(ctx),
         wh_ctx_size(ctx));
  wh_comm_options o = WH_COMM_OPTIONS_INIT;
  o.mpi_comm = &half;
  o.timeout_s = 10;
  wh_comm *c;
  CHECK(wh_comm_create(ctx, &o, &c));
  EXPECT(wh_comm_rank(c) == half_rank && wh_comm_size(c) == half_size, "comm rank %d of %d, host says %d of %d",
         wh_comm_rank(c), wh_comm_size(c), half_rank, half_size);
  float v = (float)(world_rank + 1);
  EXPECT_OK(wh_comm_allreduce(c, NULL, &v, 1, WH_F32, WH_REDUCE_SUM));
  float want = 0;
  for (int r = world_rank % 2; r < world_size; r += 2) want += (float)(r + 1);
  EXPECT(v == want, "allreduce over the host's half gave %g, want %g", v, want);
  wh_comm_destroy(c);
  wh_ctx_destroy(ctx);
  int inited = 0, fin = 0;
  MPI_Initialized(&inited);
  MPI_Finalized(&fin);
  EXPECT(inited && !fin, "libwhale finalised the host's MPI");
  /* the host's communicator still works */
  int total = 0, one = 1;
  MPI_Allreduce(&one, &total, 1, MPI_INT, MPI_SUM, half);
  EXPECT(total == half_size, "the host's communicator summed %d ranks of %d", total, half_size);
  MPI_Comm_free(&half);
}

static int setup(int argc, char **argv) {
  int provided;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_SERIALIZED, &provided);
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world_size);
  wt_rank = world_rank;
  return 0;
}

static void totals(int c[2]) {
  int mine[2] = {c[0], c[1]};
  MPI_Allreduce(mine, c, 2, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
}

static void teardown(void) { MPI_Finalize(); }

static const wt_case cases[] = {{"host_owns_mpi", host_owns_mpi, NULL}};

int main(int argc, char **argv) {
  const wt_suite suite = {"host_mpi", setup, teardown, totals, 1};
  return wt_main(&suite, cases, WT_COUNT(cases), argc, argv);
}
