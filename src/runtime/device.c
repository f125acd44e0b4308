/* device.c - a session's CUDA device: which one it opens, and moving what was initialised on the
 * host (parameters, optimizer state, constants) into device memory. */
#include <stdlib.h>

#include "../base/ctx.h"
#include "../kernels/cuda/cuda.h"
#include "session_impl.h"

int wh_cuda_device_count(void) { return wh__cuda_device_count(); }

/* Open the session's CUDA device: the index asked for, else the communicator's local rank. */
wh_status wh__session_open_device(wh_session *s, const wh_session_options *o) {
  if (o->device == WH_DEVICE_CPU) return WH_OK;
  if (o->device != WH_DEVICE_CUDA) {
    wh__ctx_set_error(s->ctx, "wh_session_create: unknown device kind %d", (int)o->device);
    return WH_ERR_INVALID_ARGUMENT;
  }
  if ((unsigned)o->precision > WH_PRECISION_BF16) {
    wh__ctx_set_error(s->ctx, "wh_session_create: unknown precision %d", (int)o->precision);
    return WH_ERR_INVALID_ARGUMENT;
  }
  int count = wh__cuda_device_count(), idx = o->device_index;
  if (idx < 0) idx = count > 0 ? (o->comm ? wh_comm_local_rank(o->comm) : 0) % count : 0;
  char err[512];
  s->dev_index = idx;
  s->precision = (int)o->precision;
  wh_status st = wh__cuda_open(idx, (int)o->precision, &s->dev, err, sizeof err);
  if (st != WH_OK) wh__ctx_set_error(s->ctx, "wh_session_create: %s", err);
  return st;
}

/* Move parameters, optimizer state and constants (initialised on the host) to the device. */
wh_status wh__session_to_device(wh_session *s) {
  for (int v = 0; v < s->n; v++) {
    const wh__value *val = &s->prog.values[v];
    if (val->role != WH_ROLE_PARAM && val->role != WH_ROLE_STATE && val->role != WH_ROLE_CONST &&
        val->role != WH_ROLE_BUFFER)
      continue;
    size_t bytes = (size_t)wh__numel(&val->shape, 1) * wh__dtype_size(val->dtype);
    const void *host = s->ptr[v];
    void *d = NULL;
    if (wh__cuda_alloc(s->dev, bytes, &d) != WH_OK) {
      wh__ctx_set_error(s->ctx, "wh_session_create: '%s' on the device: %s", val->name ? val->name : "",
                        wh__cuda_error(s->dev));
      return WH_ERR_OUT_OF_MEMORY;
    }
    wh_status st = host ? wh__cuda_copy(s->dev, d, host, bytes, WH__H2D) : wh__cuda_zero(s->dev, d, bytes);
    if (val->role != WH_ROLE_CONST) free(s->own[v]);
    s->own[v] = d;
    s->ptr[v] = d;
    if (st != WH_OK) {
      wh__ctx_set_error(s->ctx, "wh_session_create: '%s' to the device: %s", val->name ? val->name : "",
                        wh__cuda_error(s->dev));
      return st;
    }
  }
  return WH_OK;
}
