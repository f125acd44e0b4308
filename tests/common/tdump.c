/* tdump.c - the WHTD tensor-dump reader used by parity tests (see tdump.h).
 * Reads the whole file into memory; every length is checked against what is left. */
#include "tdump.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct cursor {
  const unsigned char *p;
  size_t left;
} cursor;

static int take(cursor *c, void *out, size_t n) {
  if (n > c->left) return 0;
  if (out) memcpy(out, c->p, n);
  c->p += n;
  c->left -= n;
  return 1;
}

/* Explicit little-endian decoding so the reader does not depend on the host byte order. */
static int take_u32(cursor *c, uint32_t *v) {
  unsigned char b[4];
  if (!take(c, b, 4)) return 0;
  *v = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
  return 1;
}

static int take_i64(cursor *c, int64_t *v) {
  unsigned char b[8];
  uint64_t u = 0;
  if (!take(c, b, 8)) return 0;
  for (int i = 7; i >= 0; i--) u = u << 8 | b[i];
  *v = (int64_t)u;
  return 1;
}

static unsigned char *read_file(const char *path, size_t *size) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  unsigned char *buf = NULL;
  size_t cap = 0, n = 0;
  for (;;) {
    if (n == cap) {
      size_t ncap = cap ? cap * 2 : 1 << 16;
      unsigned char *nb = realloc(buf, ncap);
      if (!nb) {
        free(buf);
        fclose(f);
        return NULL;
      }
      buf = nb;
      cap = ncap;
    }
    size_t got = fread(buf + n, 1, cap - n, f);
    n += got;
    if (got == 0) break;
  }
  int err = ferror(f);
  fclose(f);
  if (err) {
    free(buf);
    return NULL;
  }
  *size = n;
  return buf;
}

static int parse_tensor(cursor *c, tdump_tensor *t, const char *path, int idx) {
  uint32_t name_len, dtype, ndim;
  if (!take_u32(c, &name_len) || name_len > c->left) goto truncated;
  t->name = malloc((size_t)name_len + 1);
  if (!t->name) goto oom;
  take(c, t->name, name_len);
  t->name[name_len] = '\0';
  if (!take_u32(c, &dtype) || !take_u32(c, &ndim)) goto truncated;
  if (dtype != TDUMP_F32 && dtype != TDUMP_I32) {
    fprintf(stderr, "tdump: %s: tensor %d (%s): unknown dtype %u\n", path, idx, t->name, dtype);
    return 0;
  }
  if (ndim > TDUMP_MAX_DIMS) {
    fprintf(stderr, "tdump: %s: tensor %d (%s): ndim %u > %d\n", path, idx, t->name, ndim,
            TDUMP_MAX_DIMS);
    return 0;
  }
  t->dtype = dtype;
  t->ndim = (int)ndim;
  t->numel = 1;
  for (uint32_t i = 0; i < ndim; i++) {
    if (!take_i64(c, &t->dims[i])) goto truncated;
    if (t->dims[i] < 0 || (t->dims[i] > 0 && t->numel > INT64_MAX / 4 / t->dims[i])) {
      fprintf(stderr, "tdump: %s: tensor %d (%s): bad dim %lld\n", path, idx, t->name,
              (long long)t->dims[i]);
      return 0;
    }
    t->numel *= t->dims[i];
  }
  size_t bytes = (size_t)t->numel * 4;
  if (bytes > c->left) goto truncated;
  t->data = malloc(bytes ? bytes : 1);
  if (!t->data) goto oom;
  take(c, t->data, bytes);
  /* The payload is little endian; swap in place on a big-endian host. */
  {
    const uint32_t probe = 1;
    if (*(const unsigned char *)&probe == 0) {
      unsigned char *b = t->data;
      for (size_t i = 0; i < bytes; i += 4) {
        unsigned char x = b[i], y = b[i + 1];
        b[i] = b[i + 3];
        b[i + 1] = b[i + 2];
        b[i + 2] = y;
        b[i + 3] = x;
      }
    }
  }
  return 1;
truncated:
  fprintf(stderr, "tdump: %s: truncated in tensor %d\n", path, idx);
  return 0;
oom:
  fprintf(stderr, "tdump: %s: out of memory in tensor %d\n", path, idx);
  return 0;
}

tdump *tdump_load(const char *path) {
  size_t size = 0;
  unsigned char *buf = read_file(path, &size);
  if (!buf) {
    fprintf(stderr, "tdump: cannot read %s\n", path);
    return NULL;
  }
  cursor c = {buf, size};
  char magic[4];
  uint32_t count;
  tdump *d = NULL;
  if (!take(&c, magic, 4) || memcmp(magic, "WHTD", 4) != 0) {
    fprintf(stderr, "tdump: %s: not a WHTD file\n", path);
    goto fail;
  }
  /* Each tensor takes at least 12 bytes, which bounds a sane count. */
  if (!take_u32(&c, &count) || count > c.left / 12 + 1) {
    fprintf(stderr, "tdump: %s: bad tensor count\n", path);
    goto fail;
  }
  d = calloc(1, sizeof *d);
  if (!d || !(d->tensors = calloc(count ? count : 1, sizeof *d->tensors))) {
    fprintf(stderr, "tdump: %s: out of memory\n", path);
    goto fail;
  }
  for (uint32_t i = 0; i < count; i++) {
    d->count = (int)i + 1; /* so tdump_free releases what parse_tensor allocated */
    if (!parse_tensor(&c, &d->tensors[i], path, (int)i)) goto fail;
  }
  d->count = (int)count;
  if (c.left != 0) {
    fprintf(stderr, "tdump: %s: %zu trailing bytes\n", path, c.left);
    goto fail;
  }
  free(buf);
  return d;
fail:
  free(buf);
  tdump_free(d);
  return NULL;
}

const tdump_tensor *tdump_get(const tdump *d, const char *name) {
  if (!d || !name) return NULL;
  for (int i = 0; i < d->count; i++)
    if (strcmp(d->tensors[i].name, name) == 0) return &d->tensors[i];
  return NULL;
}

const tdump_tensor *tdump_need(const tdump *d, const char *name) {
  const tdump_tensor *t = tdump_get(d, name);
  if (!t) fprintf(stderr, "tdump: no tensor named '%s'\n", name);
  return t;
}

void tdump_free(tdump *d) {
  if (!d) return;
  if (d->tensors) {
    for (int i = 0; i < d->count; i++) {
      free(d->tensors[i].name);
      free(d->tensors[i].data);
    }
    free(d->tensors);
  }
  free(d);
}

double rel_err(const float *a, const float *b, int64_t n) {
  double diff = 0.0, ref = 0.0;
  for (int64_t i = 0; i < n; i++) {
    double e = (double)a[i] - (double)b[i];
    diff += e * e;
    ref += (double)b[i] * (double)b[i];
  }
  double den = sqrt(ref);
  if (den < 1e-30) den = 1e-30;
  return sqrt(diff) / den;
}
