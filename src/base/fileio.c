/* fileio.c - whole-file reads and writes shared by the graph and plan formats. */
#include "fileio.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctx.h"

wh_status wh__read_file(const char *path, uint8_t **out, size_t *len, int *err) {
  *out = NULL;
  *len = 0;
  FILE *f = fopen(path, "rb");
  if (!f) {
    *err = errno;
    return WH_ERR_IO;
  }
  size_t cap = 1 << 16, n = 0;
  uint8_t *buf = malloc(cap);
  if (!buf) {
    fclose(f);
    return WH_ERR_OUT_OF_MEMORY;
  }
  for (;;) {
    if (n == cap) {
      uint8_t *nb = cap <= SIZE_MAX / 2 ? realloc(buf, cap * 2) : NULL;
      if (!nb) {
        free(buf);
        fclose(f);
        return WH_ERR_OUT_OF_MEMORY;
      }
      buf = nb;
      cap *= 2;
    }
    size_t r = fread(buf + n, 1, cap - n, f);
    n += r;
    if (r == 0) break;
  }
  if (ferror(f)) {
    *err = errno ? errno : EIO;
    free(buf);
    fclose(f);
    return WH_ERR_IO;
  }
  fclose(f);
  *out = buf;
  *len = n;
  return WH_OK;
}

wh_status wh__write_file(wh_ctx *ctx, const char *who, const char *path, const void *buf, size_t len) {
  FILE *f = fopen(path, "wb");
  if (!f) {
    wh__ctx_set_error(ctx, "%s '%s': cannot open for writing: %s", who, path, strerror(errno));
    return WH_ERR_IO;
  }
  size_t w = len ? fwrite(buf, 1, len, f) : 0;
  int werr = w != len ? errno : 0;
  if (fclose(f) != 0 && !werr) werr = errno ? errno : EIO;
  if (w != len || werr) {
    wh__ctx_set_error(ctx, "%s '%s': write failed after %zu of %zu bytes: %s", who, path, w, len,
                      strerror(werr ? werr : EIO));
    return WH_ERR_IO;
  }
  return WH_OK;
}

wh_status wh__write_message(wh_ctx *ctx, const char *who, const char *path, const ProtobufCMessage *msg) {
  size_t len = protobuf_c_message_get_packed_size(msg);
  uint8_t *buf = malloc(len ? len : 1);
  if (!buf) {
    wh__ctx_set_error(ctx, "%s '%s': out of memory packing %zu bytes", who, path, len);
    return WH_ERR_OUT_OF_MEMORY;
  }
  size_t packed = protobuf_c_message_pack(msg, buf);
  wh_status st;
  if (packed != len) {
    wh__ctx_set_error(ctx, "%s '%s': protobuf-c packed %zu bytes, expected %zu", who, path, packed, len);
    st = WH_ERR_INTERNAL;
  } else {
    st = wh__write_file(ctx, who, path, buf, len);
  }
  free(buf);
  return st;
}
