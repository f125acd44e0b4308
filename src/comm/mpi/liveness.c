/* liveness.c - attaching to the host's communicator, and the ping/pong channel that names dead or
 * stopped peers (see liveness.h). */
#include "liveness.h"

#include <sched.h>
#include <stdio.h>
#include <stdlib.h>

#include "../comm.h"

#define TAG_PING 1
#define TAG_PONG 2

static wh_status post_ping(wh__live *l) {
  return MPI_Irecv(&l->ping_buf, 1, MPI_INT, MPI_ANY_SOURCE, TAG_PING, l->ctrl, &l->ping_req) == MPI_SUCCESS
             ? WH_OK
             : WH_ERR_COMM;
}

wh_status wh__live_open(wh__live *l, MPI_Comm ctrl, int rank) {
  l->ctrl = ctrl;
  l->rank = rank;
  l->ping_req = MPI_REQUEST_NULL;
  return post_ping(l);
}

void wh__live_service(wh__live *l) {
  for (int guard = 0; guard < 64; guard++) {
    int flag = 0;
    MPI_Status st;
    if (l->ping_req == MPI_REQUEST_NULL || MPI_Test(&l->ping_req, &flag, &st) != MPI_SUCCESS || !flag) return;
    MPI_Request pong;
    if (MPI_Isend(&l->rank, 1, MPI_INT, st.MPI_SOURCE, TAG_PONG, l->ctrl, &pong) == MPI_SUCCESS)
      MPI_Request_free(&pong);
    if (post_ping(l) != WH_OK) l->ping_req = MPI_REQUEST_NULL;
  }
}

void wh__live_probe(wh__live *l, const int *peers, int n, int *alive, double budget) {
  MPI_Request *rq = malloc(sizeof(MPI_Request) * (size_t)(n + 1));
  int *pong = malloc(sizeof(int) * (size_t)(n + 1));
  if (!rq || !pong) {
    free(rq), free(pong);
    return;
  }
  for (int i = 0; i < n; i++) {
    alive[i] = 0;
    rq[i] = MPI_REQUEST_NULL;
    MPI_Request ping;
    if (MPI_Isend(&l->rank, 1, MPI_INT, peers[i], TAG_PING, l->ctrl, &ping) == MPI_SUCCESS) MPI_Request_free(&ping);
    MPI_Irecv(&pong[i], 1, MPI_INT, peers[i], TAG_PONG, l->ctrl, &rq[i]);
  }
  double t0 = wh__now();
  int left = n;
  while (left > 0 && wh__now() - t0 < budget) {
    wh__live_service(l); /* peers probing at the same time need our answer too */
    for (int i = 0; i < n; i++) {
      int flag = 0;
      if (rq[i] != MPI_REQUEST_NULL && MPI_Test(&rq[i], &flag, MPI_STATUS_IGNORE) == MPI_SUCCESS && flag) {
        alive[i] = 1;
        left--;
      }
    }
    sched_yield(); /* the peers that must answer may share this core */
  }
  for (int i = 0; i < n; i++)
    if (rq[i] != MPI_REQUEST_NULL) {
      MPI_Cancel(&rq[i]);
      MPI_Request_free(&rq[i]);
    }
  free(rq);
  free(pong);
}

void wh__live_close(wh__live *l) {
  if (l->ping_req != MPI_REQUEST_NULL) {
    MPI_Cancel(&l->ping_req);
    MPI_Request_free(&l->ping_req);
  }
}

wh_status wh__mpi_attach(MPI_Comm parent, MPI_Comm *const *dups, int n, wh_comm *c, char *msg, size_t cap) {
  for (int i = 0; i < n; i++) {
    int rc = MPI_Comm_dup(parent, dups[i]);
    if (rc != MPI_SUCCESS) {
      char s[MPI_MAX_ERROR_STRING];
      int len = 0;
      MPI_Error_string(rc, s, &len);
      snprintf(msg, cap, "MPI_Comm_dup: %s", s);
      for (int k = 0; k < i; k++) MPI_Comm_free(dups[k]);
      return WH_ERR_COMM;
    }
    MPI_Comm_set_errhandler(*dups[i], MPI_ERRORS_RETURN);
  }
  MPI_Comm_rank(*dups[0], &c->rank);
  MPI_Comm_size(*dups[0], &c->size);
  MPI_Comm node;
  if (MPI_Comm_split_type(*dups[0], MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node) == MPI_SUCCESS) {
    MPI_Comm_rank(node, &c->local_rank);
    MPI_Comm_size(node, &c->local_size);
    MPI_Comm_free(&node);
  } else {
    c->local_rank = 0, c->local_size = 1;
  }
  return WH_OK;
}
