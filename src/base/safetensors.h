/* safetensors.h - the safetensors file format (https://huggingface.co/docs/safetensors): an 8-byte
 * little-endian header length, a JSON header (json-c) naming each tensor's dtype, shape and byte
 * range, then the raw little-endian data with no holes. Headers written and headers read; the
 * caller moves the data. */
#ifndef WH_SAFETENSORS_H
#define WH_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "whale.h"

/* Largest header accepted (the format's own reference reader refuses more than 100 MB). */
#define WH_ST_MAX_HEADER ((uint64_t)100 << 20)

typedef struct wh__st_entry {
  const char *key;  /* the tensor's name in the file (borrowed: the caller's, or the parsed header's) */
  wh_dtype dtype;
  int ndim;
  int64_t dims[WH_MAX_DIMS];
  uint64_t begin, end; /* byte range within the data (after the header) */
  uint32_t crc;        /* CRC-32C of the data: written into __metadata__ as "crc32c:<key>" */
} wh__st_entry;

/* "F32", "I32", "BF16", "F16", "F64" (NULL for another dtype); and back (-1 for a name not known). */
const char *wh__st_dtype_name(wh_dtype dt);
int wh__st_dtype_of(const char *name);

/* The header of a file holding entries e[0..n) in that order (begin and end must already tile the
 * data from 0), with __metadata__ holding the n_meta (key, value) string pairs of meta and each
 * entry's checksum as 8 hex digits. The text is padded with spaces so that the data starts at a
 * multiple of 64 bytes in the file; its length does not depend on the checksums, so a writer can
 * place the data first and write the final header over a placeholder. *out is malloc'd (freed
 * by the caller), *len its length without the 8-byte prefix. WH_ERR_OUT_OF_MEMORY or
 * WH_ERR_INVALID_ARGUMENT (a dtype the format lacks, entries that do not tile), msg saying why. */
wh_status wh__st_header(const wh__st_entry *e, int n, const char *const *meta, int n_meta, char **out, size_t *len,
                        char *msg, size_t cap);

/* A header read back: its entries in data order, keys and metadata borrowed from the parse. */
typedef struct wh__st_file {
  void *root;        /* the parsed JSON (json_object *) */
  wh__st_entry *e;
  int n;
  uint64_t data_bytes; /* bytes of data after the header */
  const wh__st_entry **by_key; /* the entries in key order, for wh__st_find */
} wh__st_file;

/* Parse and check the header text buf[0..len) of a file of file_bytes bytes in all (prefix and
 * header included) against the format: one JSON object (trailing spaces allowed), every tensor a
 * known dtype, a shape of dimensions >= 0 whose bytes match its range, the ranges tiling the data
 * exactly, __metadata__ (optional) a map of strings. Never crashes on any input: WH_ERR_CORRUPT
 * with msg saying what is wrong (the caller names the file). */
wh_status wh__st_parse(const char *buf, size_t len, uint64_t file_bytes, wh__st_file *out, char *msg, size_t cap);
/* The entry with that key, or NULL; a __metadata__ value, or NULL. */
const wh__st_entry *wh__st_find(const wh__st_file *f, const char *key);
const char *wh__st_meta(const wh__st_file *f, const char *key);
void wh__st_free(wh__st_file *f);

#endif
