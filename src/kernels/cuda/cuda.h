/* cuda.h - the CUDA backend as the runtime sees it (plain C): one device context per session
 * (device, stream, cuBLASLt handle, workspaces), device memory, copies, and the kernel table.
 * Built when the CUDA toolkit, nvcc and cuBLASLt are found (WH_HAVE_CUDA_KERNELS). */
#ifndef WH_CUDA_H
#define WH_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include "whale.h"
#include "../../ir/ir.h"

typedef struct wh__cuda wh__cuda;

typedef enum { WH__H2D = 0, WH__D2H = 1, WH__D2D = 2 } wh__copy_kind;

/* Open device (>= 0) with the session's precision (wh_precision). On failure *out is NULL and
 * err holds why (no device, driver too old, cuBLASLt missing). */
wh_status wh__cuda_open(int device, int precision, wh__cuda **out, char *err, size_t cap);
void wh__cuda_close(wh__cuda *d);
/* The message of the last failed call on d. */
const char *wh__cuda_error(const wh__cuda *d);
int wh__cuda_device_count(void);

wh_status wh__cuda_alloc(wh__cuda *d, size_t bytes, void **p);
void wh__cuda_free(wh__cuda *d, void *p);
/* Copies are ordered on the context's stream; a copy to the host returns when it has landed. */
wh_status wh__cuda_copy(wh__cuda *d, void *dst, const void *src, size_t bytes, wh__copy_kind kind);
wh_status wh__cuda_zero(wh__cuda *d, void *p, size_t bytes);
/* Wait for everything queued; reports an asynchronous kernel failure. */
wh_status wh__cuda_sync(wh__cuda *d);
/* acc = w g (first) or acc += w g, n floats, on the stream. */
wh_status wh__cuda_axpy(wh__cuda *d, float *acc, const float *g, int64_t n, float w, int first);

#endif
