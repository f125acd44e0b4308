/* collective.cu - operator sharding's collectives on a CUDA session. The all-reduce of partial sums
 * reduces device memory over the replica's communicator once the stream has made its input (NCCL
 * reads device buffers; the MPI backend stages them through the host). The other sharded ops
 * (gather, slice, clipping, the vocabulary-sharded embedding and cross-entropy) run their CPU
 * kernels on host copies of their tensors: the same arithmetic as the CPU backend, moved whole. */
#include <stdlib.h>
#include <string.h>

#include "common.cuh"

/* Drain the stream: a collective reads what the kernels before it wrote. */
static wh_status drained(wh__exec *ex) {
  cudaError_t e = cudaStreamSynchronize(ex->dev->stream);
  return e == cudaSuccess ? WH_OK : wh__cu_fail(ex, e, "before a collective");
}

extern "C" wh_status wh__cuk_tp_allreduce(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out) {
  (void)n;
  wh_status st = drained(ex);
  if (st != WH_OK) return st;
  st = wh_comm_allreduce(ex->tp, in[0].data, out->data, (size_t)out->numel, WH_F32, WH_REDUCE_SUM);
  if (st != WH_OK) return wh__cu_msg(ex, st, "all-reduce over the replica's ranks failed");
  return WH_OK;
}

static size_t tensor_bytes(const wh__tensor *t) {
  return (size_t)t->numel * (t->dtype == WH_F64 ? 8 : t->dtype == WH_BF16 || t->dtype == WH_F16 ? 2 : 4);
}

/* Run the CPU kernel k on host copies of the inputs, then copy its output to the device. */
static wh_status on_host(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out, wh__kernel_fn k) {
  wh_status st = drained(ex);
  if (st != WH_OK) return st;
  wh__tensor hin[8], hout;
  void *bufs[9] = {0};
  int ni = n->n_in < 8 ? n->n_in : 8;
  if (n->n_in > 8) return wh__cu_msg(ex, WH_ERR_UNSUPPORTED, "%d inputs to a sharded op on CUDA (at most 8)", n->n_in);
  for (int i = 0; i <= ni && st == WH_OK; i++) {
    const wh__tensor *t = i < ni ? &in[i] : out;
    if (!t) continue;
    size_t by = tensor_bytes(t);
    if (!(bufs[i] = malloc(by ? by : 1))) st = wh__cu_msg(ex, WH_ERR_OUT_OF_MEMORY, "out of memory staging a tensor");
    else if (i < ni && by && cudaMemcpy(bufs[i], t->data, by, cudaMemcpyDeviceToHost) != cudaSuccess)
      st = wh__cu_fail(ex, cudaGetLastError(), "copying a sharded op's input to the host");
    if (st == WH_OK && i < ni) hin[i] = *t, hin[i].data = bufs[i];
    if (st == WH_OK && i == ni) hout = *t, hout.data = bufs[i];
  }
  if (st == WH_OK) {
    wh__exec hx = *ex;
    hx.dev = NULL;
    st = k(&hx, n, hin, out ? &hout : NULL);
  }
  if (st == WH_OK && out && tensor_bytes(out) &&
      cudaMemcpy(out->data, hout.data, tensor_bytes(out), cudaMemcpyHostToDevice) != cudaSuccess)
    st = wh__cu_fail(ex, cudaGetLastError(), "copying a sharded op's output to the device");
  for (int i = 0; i <= ni; i++) free(bufs[i]);
  return st;
}

#define WH__STAGED(k)                                                                                       \
  extern "C" wh_status wh__cuk_##k(wh__exec *ex, const wh__node *n, const wh__tensor *in, wh__tensor *out) { \
    return on_host(ex, n, in, out, wh__cpu_##k);                                                            \
  }
WH__STAGED(tp_allgather)
WH__STAGED(tp_slice)
WH__STAGED(tp_norm_clip)
WH__STAGED(tp_embedding)
WH__STAGED(tp_cross_entropy)
WH__STAGED(tp_cross_entropy_grad)
