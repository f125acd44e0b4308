/* test_host_mpi.c - embedding: the host owns MPI. It initialises MPI, hands libwhale a
 * sub-communicator of its own, and after libwhale is gone MPI must still be initialised (libwhale
 * finalises only what it initialised) and the host's communicator untouched and usable. */
#include <mpi.h>
#include <stdio.h>
#include <string.h>

#include "whale.h"

int main(int argc, char **argv) {
  int provided, world_rank, world_size, failed = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_SERIALIZED, &provided);
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world_size);
  /* the host's own layout: even and odd world ranks */
  MPI_Comm half;
  MPI_Comm_split(MPI_COMM_WORLD, world_rank % 2, world_rank, &half);
  int half_rank, half_size;
  MPI_Comm_rank(half, &half_rank);
  MPI_Comm_size(half, &half_size);

  wh_ctx *ctx;
  if (wh_ctx_create(&ctx, NULL) != WH_OK) return 1;
  if (wh_ctx_rank(ctx) != world_rank || wh_ctx_size(ctx) != world_size) {
    printf("rank %d: context sees %d of %d\n", world_rank, wh_ctx_rank(ctx), wh_ctx_size(ctx));
    failed++;
  }
  wh_comm_options o = WH_COMM_OPTIONS_INIT;
  o.mpi_comm = &half;
  o.timeout_s = 10;
  wh_comm *c;
  if (wh_comm_create(ctx, &o, &c) != WH_OK) {
    printf("rank %d: wh_comm_create: %s\n", world_rank, wh_last_error(ctx));
    return 1;
  }
  if (wh_comm_rank(c) != half_rank || wh_comm_size(c) != half_size) {
    printf("rank %d: comm rank %d of %d, host says %d of %d\n", world_rank, wh_comm_rank(c), wh_comm_size(c),
           half_rank, half_size);
    failed++;
  }
  float v = (float)(world_rank + 1);
  if (wh_comm_allreduce(c, NULL, &v, 1, WH_F32, WH_REDUCE_SUM) != WH_OK) {
    printf("rank %d: allreduce: %s\n", world_rank, wh_last_error(ctx));
    failed++;
  }
  float want = 0;
  for (int r = world_rank % 2; r < world_size; r += 2) want += (float)(r + 1);
  if (v != want) {
    printf("rank %d: allreduce over the host's half gave %g, want %g\n", world_rank, v, want);
    failed++;
  }
  wh_comm_destroy(c);
  wh_ctx_destroy(ctx);
  int inited = 0, fin = 0;
  MPI_Initialized(&inited);
  MPI_Finalized(&fin);
  if (!inited || fin) {
    printf("rank %d: libwhale finalised the host's MPI\n", world_rank);
    failed++;
  }
  /* the host's communicator still works */
  int total = 0, one = 1;
  MPI_Allreduce(&one, &total, 1, MPI_INT, MPI_SUM, half);
  if (total != half_size) failed++;
  int all_failed = 0;
  MPI_Allreduce(&failed, &all_failed, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  if (world_rank == 0) printf("host_mpi: %d passed, %d failed\n", all_failed ? 0 : 1, all_failed ? 1 : 0);
  MPI_Comm_free(&half);
  MPI_Finalize();
  return all_failed ? 1 : 0;
}
