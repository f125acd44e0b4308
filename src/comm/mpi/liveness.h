/* liveness.h - what the MPI and NCCL backends share on the MPI side: attaching to the host's
 * communicator, and the ping/pong channel that finds out which peers are gone (every rank waiting
 * in libwhale answers pings on a dedicated communicator, so after a deadline a rank can ask who
 * still answers). */
#ifndef WH_LIVENESS_H
#define WH_LIVENESS_H

#include <mpi.h>

#include <stddef.h>

#include "whale.h"

typedef struct wh__live {
  MPI_Comm ctrl;        /* borrowed: the backend's control communicator */
  MPI_Request ping_req; /* the posted receive for pings */
  int ping_buf;
  int rank;             /* this rank; also the payload of pings and pongs (must outlive them) */
} wh__live;

/* Start answering pings on ctrl. */
wh_status wh__live_open(wh__live *l, MPI_Comm ctrl, int rank);
/* Answer the pings that arrived (call while waiting). */
void wh__live_service(wh__live *l);
/* Ping the listed peers; alive[i] = 1 for those that answer within budget seconds. */
void wh__live_probe(wh__live *l, const int *peers, int n, int *alive, double budget);
/* Stop answering (does not free ctrl). */
void wh__live_close(wh__live *l);

/* What both backends do with the host's communicator: duplicate it n times (each with
 * MPI_ERRORS_RETURN; on failure none is left), and read the rank, size and node-local rank of c
 * from the first duplicate. */
wh_status wh__mpi_attach(MPI_Comm parent, MPI_Comm *const *dups, int n, wh_comm *c, char *msg, size_t cap);

#endif
