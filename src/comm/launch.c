/* launch.c - what the launcher told this process, read from its environment variables. */
#include <stdlib.h>

#include "comm.h"

static int env_int(const char *name, int *out) {
  const char *v = getenv(name);
  if (!v || !*v) return 0;
  char *end;
  long x = strtol(v, &end, 10);
  if (*end || x < 0 || x > 1 << 24) return 0;
  *out = (int)x;
  return 1;
}

wh_launch_info wh_launch_detect(void) {
  static const struct {
    const char *launcher, *rank, *size, *local_rank, *local_size;
  } rows[] = {
      {"openmpi", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
       "OMPI_COMM_WORLD_LOCAL_SIZE"},
      {"mpich", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS"},
      {"slurm", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_NTASKS_PER_NODE"},
      {"torchrun", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"},
  };
  wh_launch_info li = {0, 1, 0, 1, "none"};
  for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
    int r, s;
    if (!env_int(rows[i].rank, &r) || !env_int(rows[i].size, &s) || s < 1 || r >= s) continue;
    li.rank = r;
    li.size = s;
    li.launcher = rows[i].launcher;
    if (!env_int(rows[i].local_rank, &li.local_rank)) li.local_rank = 0;
    if (!env_int(rows[i].local_size, &li.local_size) || li.local_size < 1) li.local_size = 1;
    break;
  }
  return li;
}
