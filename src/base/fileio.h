/* fileio.h - whole-file reads and writes for the libraries' file formats. */
#ifndef WH_FILEIO_H
#define WH_FILEIO_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "whale.h"

/* Read all of path into *out (malloc'd; the caller frees). WH_ERR_IO sets *err to errno;
 * WH_ERR_OUT_OF_MEMORY when it does not fit. Sets no message: callers name their own file kind. */
wh_status wh__read_file(const char *path, uint8_t **out, size_t *len, int *err);
/* Write len bytes to path; on failure the context's message reads "<who> '<path>': ...". */
wh_status wh__write_file(wh_ctx *ctx, const char *who, const char *path, const void *buf, size_t len);
/* Pack a protobuf message and write it to path, with the same messages as wh__write_file. */
wh_status wh__write_message(wh_ctx *ctx, const char *who, const char *path, const ProtobufCMessage *msg);

#endif
