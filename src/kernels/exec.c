/* exec.c - the execution context's shared services for kernels (workspace). */
#include <stdlib.h>

#include "kernels.h"

void *wh__exec_scratch(wh__exec *ex, size_t bytes) {
  if (bytes <= ex->scratch_cap) return ex->scratch;
  void *p = NULL;
  if (posix_memalign(&p, 64, bytes ? bytes : 64) != 0) return NULL;
  free(ex->scratch);
  ex->scratch = p;
  ex->scratch_cap = bytes;
  return p;
}
