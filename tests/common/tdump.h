/* tdump.h - a reader for the tensor-dump files ("WHTD") that tests/parity/torch_ref.py writes,
 * so C tests can compare libwhale against PyTorch references. Test code only. */
#ifndef WH_TESTS_TDUMP_H
#define WH_TESTS_TDUMP_H

#include <stdint.h>

/* File format, little endian: "WHTD", u32 count; per tensor: u32 name_len, name (no NUL),
 * u32 dtype, u32 ndim, i64 dims[ndim], raw data (numel * 4 bytes). */
enum { TDUMP_F32 = 0, TDUMP_I32 = 1 };
#define TDUMP_MAX_DIMS 8

typedef struct tdump_tensor {
  char *name;   /* NUL-terminated; owned by the tdump */
  uint32_t dtype; /* TDUMP_F32 or TDUMP_I32 */
  int ndim;
  int64_t dims[TDUMP_MAX_DIMS];
  int64_t numel;
  void *data; /* numel elements of dtype; owned by the tdump */
} tdump_tensor;

typedef struct tdump {
  int count;
  tdump_tensor *tensors;
} tdump;

/* Read a whole dump. Returns NULL after printing why to stderr. Free with tdump_free. */
tdump *tdump_load(const char *path);
/* The tensor with that name, or NULL. Borrowed: lives until tdump_free. */
const tdump_tensor *tdump_get(const tdump *d, const char *name);
/* Same, but prints the missing name to stderr when not found. */
const tdump_tensor *tdump_need(const tdump *d, const char *name);
void tdump_free(tdump *d); /* NULL is a no-op */

/* ||a - b||_2 / max(||b||_2, 1e-30), accumulated in double. */
double rel_err(const float *a, const float *b, int64_t n);

#endif /* WH_TESTS_TDUMP_H */
