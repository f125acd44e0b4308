/* safetensors.c - safetensors headers through json-c: written with a fixed-width checksum per
 * tensor in __metadata__, read back with every rule of the format checked before any data moves. */
#include "safetensors.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#define ALIGN 64

static const struct {
  wh_dtype dt;
  const char *name;
  int size;
} dtypes[] = {{WH_F32, "F32", 4}, {WH_I32, "I32", 4}, {WH_BF16, "BF16", 2}, {WH_F16, "F16", 2}, {WH_F64, "F64", 8}};

const char *wh__st_dtype_name(wh_dtype dt) {
  for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
    if (dtypes[i].dt == dt) return dtypes[i].name;
  return NULL;
}

int wh__st_dtype_of(const char *name) {
  for (size_t i = 0; name && i < sizeof dtypes / sizeof dtypes[0]; i++)
    if (!strcmp(dtypes[i].name, name)) return (int)dtypes[i].dt;
  return -1;
}

static int dtype_size(wh_dtype dt) {
  for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
    if (dtypes[i].dt == dt) return dtypes[i].size;
  return 0;
}

static wh_status say(char *msg, size_t cap, wh_status st, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static wh_status say(char *msg, size_t cap, wh_status st, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, cap, fmt, ap);
  va_end(ap);
  return st;
}

/* ================================================================== writing */

wh_status wh__st_header(const wh__st_entry *e, int n, const char *const *meta, int n_meta, char **out, size_t *len,
                        char *msg, size_t cap) {
  *out = NULL;
  *len = 0;
  json_object *root = json_object_new_object(), *md = json_object_new_object();
  wh_status st = WH_OK;
  if (!root || !md) {
    st = say(msg, cap, WH_ERR_OUT_OF_MEMORY, "out of memory for a safetensors header");
    goto done;
  }
  for (int i = 0; i < n_meta; i++)
    if (json_object_object_add(md, meta[2 * i], json_object_new_string(meta[2 * i + 1])) != 0) st = WH_ERR_OUT_OF_MEMORY;
  uint64_t at = 0;
  for (int i = 0; i < n && st == WH_OK; i++) {
    const char *dn = wh__st_dtype_name(e[i].dtype);
    if (!dn) {
      st = say(msg, cap, WH_ERR_INVALID_ARGUMENT, "tensor '%s': dtype %d has no safetensors name", e[i].key,
               (int)e[i].dtype);
      break;
    }
    uint64_t numel = 1;
    for (int d = 0; d < e[i].ndim; d++) numel *= (uint64_t)e[i].dims[d];
    if (e[i].begin != at || e[i].end - e[i].begin != numel * (uint64_t)dtype_size(e[i].dtype)) {
      st = say(msg, cap, WH_ERR_INVALID_ARGUMENT, "tensor '%s': bytes [%" PRIu64 ", %" PRIu64 ") do not follow %" PRIu64
               " or fit its shape", e[i].key, e[i].begin, e[i].end, at);
      break;
    }
    at = e[i].end;
    char hex[16], name[1024];
    snprintf(hex, sizeof hex, "%08" PRIx32, e[i].crc);
    snprintf(name, sizeof name, "crc32c:%s", e[i].key);
    json_object *t = json_object_new_object(), *sh = json_object_new_array(), *off = json_object_new_array();
    if (!t || !sh || !off) {
      json_object_put(t), json_object_put(sh), json_object_put(off);
      st = WH_ERR_OUT_OF_MEMORY;
      break;
    }
    for (int d = 0; d < e[i].ndim; d++) json_object_array_add(sh, json_object_new_int64(e[i].dims[d]));
    json_object_array_add(off, json_object_new_int64((int64_t)e[i].begin));
    json_object_array_add(off, json_object_new_int64((int64_t)e[i].end));
    json_object_object_add(t, "dtype", json_object_new_string(dn));
    json_object_object_add(t, "shape", sh);
    json_object_object_add(t, "data_offsets", off);
    if (json_object_object_add(root, e[i].key, t) != 0 ||
        json_object_object_add(md, name, json_object_new_string(hex)) != 0)
      st = WH_ERR_OUT_OF_MEMORY;
  }
  if (st == WH_ERR_OUT_OF_MEMORY) say(msg, cap, st, "out of memory for a safetensors header");
  if (st != WH_OK) goto done;
  /* __metadata__ last: readers find it by name, and the entries keep the caller's order */
  json_object_object_add(root, "__metadata__", md);
  md = NULL;
  const char *text = json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
  if (!text) {
    st = say(msg, cap, WH_ERR_OUT_OF_MEMORY, "out of memory for a safetensors header");
    goto done;
  }
  size_t tl = strlen(text), padded = (8 + tl + ALIGN - 1) / ALIGN * ALIGN - 8;
  char *buf = malloc(padded + 1);
  if (!buf) {
    st = say(msg, cap, WH_ERR_OUT_OF_MEMORY, "out of memory for a safetensors header");
    goto done;
  }
  memcpy(buf, text, tl);
  memset(buf + tl, ' ', padded - tl);
  buf[padded] = 0;
  *out = buf;
  *len = padded;
done:
  json_object_put(md);
  json_object_put(root);
  return st;
}

/* ================================================================== reading */

static int cmp_key(const void *a, const void *b) {
  return strcmp((*(const wh__st_entry *const *)a)->key, (*(const wh__st_entry *const *)b)->key);
}

static int cmp_begin(const void *a, const void *b) {
  const wh__st_entry *x = a, *y = b;
  return x->begin < y->begin ? -1 : x->begin > y->begin;
}

/* A JSON integer in [0, max], or -1. */
static int64_t nonneg(json_object *o, int64_t max) {
  if (!o || !json_object_is_type(o, json_type_int)) return -1;
  int64_t v = json_object_get_int64(o);
  return v >= 0 && v <= max ? v : -1;
}

wh_status wh__st_parse(const char *buf, size_t len, uint64_t file_bytes, wh__st_file *out, char *msg, size_t cap) {
  memset(out, 0, sizeof *out);
  if (len == 0 || buf[0] != '{') return say(msg, cap, WH_ERR_CORRUPT, "the header does not start with '{'");
  if (len > WH_ST_MAX_HEADER || 8 + (uint64_t)len > file_bytes)
    return say(msg, cap, WH_ERR_CORRUPT, "header of %zu bytes in a file of %" PRIu64 " bytes", len, file_bytes);
  if (memchr(buf, 0, len)) return say(msg, cap, WH_ERR_CORRUPT, "the header holds a NUL byte");
  json_tokener *tok = json_tokener_new();
  if (!tok) return say(msg, cap, WH_ERR_OUT_OF_MEMORY, "out of memory parsing a header");
  json_object *root = json_tokener_parse_ex(tok, buf, (int)len);
  enum json_tokener_error jerr = json_tokener_get_error(tok);
  size_t end = json_tokener_get_parse_end(tok);
  json_tokener_free(tok);
  if (!root || jerr != json_tokener_success) {
    json_object_put(root);
    return say(msg, cap, WH_ERR_CORRUPT, "the header is not JSON: %s",
               jerr == json_tokener_continue ? "it ends inside the object" : json_tokener_error_desc(jerr));
  }
  for (size_t i = end; i < len; i++)
    if (buf[i] != ' ' && buf[i] != '\n' && buf[i] != '\t' && buf[i] != '\r') {
      json_object_put(root);
      return say(msg, cap, WH_ERR_CORRUPT, "byte %zu of the header follows its JSON object and is not a space", i);
    }
  if (!json_object_is_type(root, json_type_object)) {
    json_object_put(root);
    return say(msg, cap, WH_ERR_CORRUPT, "the header is not a JSON object");
  }
  out->root = root;
  out->data_bytes = file_bytes - 8 - len;
  int n = json_object_object_length(root);
  out->e = calloc((size_t)n + 1, sizeof *out->e);
  if (!out->e) {
    wh__st_free(out);
    return say(msg, cap, WH_ERR_OUT_OF_MEMORY, "out of memory parsing a header");
  }
  wh_status st = WH_OK;
  json_object_object_foreach(root, key, val) {
    if (st != WH_OK) break;
    if (!strcmp(key, "__metadata__")) {
      if (!json_object_is_type(val, json_type_object)) {
        st = say(msg, cap, WH_ERR_CORRUPT, "__metadata__ is not an object");
        break;
      }
      json_object_object_foreach(val, mk, mv) {
        if (!json_object_is_type(mv, json_type_string)) {
          st = say(msg, cap, WH_ERR_CORRUPT, "__metadata__ '%.200s' is not a string", mk);
          break;
        }
      }
      continue;
    }
    wh__st_entry *e = &out->e[out->n];
    e->key = key;
    json_object *dt, *sh, *off;
    if (!json_object_is_type(val, json_type_object) || !json_object_object_get_ex(val, "dtype", &dt) ||
        !json_object_object_get_ex(val, "shape", &sh) || !json_object_object_get_ex(val, "data_offsets", &off)) {
      st = say(msg, cap, WH_ERR_CORRUPT, "tensor '%.200s' lacks dtype, shape or data_offsets", key);
      break;
    }
    int d = json_object_is_type(dt, json_type_string) ? wh__st_dtype_of(json_object_get_string(dt)) : -1;
    if (d < 0) {
      st = say(msg, cap, WH_ERR_CORRUPT, "tensor '%.200s': dtype %.40s is not one libwhale reads (F32, I32, BF16, "
               "F16, F64)", key, json_object_to_json_string(dt));
      break;
    }
    e->dtype = (wh_dtype)d;
    if (!json_object_is_type(sh, json_type_array) || json_object_array_length(sh) > WH_MAX_DIMS) {
      st = say(msg, cap, WH_ERR_CORRUPT, "tensor '%.200s': shape is not an array of at most %d dimensions", key,
               WH_MAX_DIMS);
      break;
    }
    e->ndim = (int)json_object_array_length(sh);
    uint64_t bytes = (uint64_t)dtype_size(e->dtype);
    for (int i = 0; i < e->ndim && st == WH_OK; i++) {
      int64_t x = nonneg(json_object_array_get_idx(sh, (size_t)i), (int64_t)file_bytes);
      if (x < 0 || (x > 0 && bytes > file_bytes / (uint64_t)x))
        st = say(msg, cap, WH_ERR_CORRUPT, "tensor '%.200s': dimension %d is not a size that fits the file", key, i);
      else
        e->dims[i] = x, bytes *= (uint64_t)x;
    }
    if (st != WH_OK) break;
    int64_t b = json_object_is_type(off, json_type_array) && json_object_array_length(off) == 2
                    ? nonneg(json_object_array_get_idx(off, 0), (int64_t)out->data_bytes) : -1;
    int64_t en = b >= 0 ? nonneg(json_object_array_get_idx(off, 1), (int64_t)out->data_bytes) : -1;
    if (b < 0 || en < b) {
      st = say(msg, cap, WH_ERR_CORRUPT, "tensor '%.200s': data_offsets is not [begin, end] within the %" PRIu64
               " bytes of data", key, out->data_bytes);
      break;
    }
    if ((uint64_t)(en - b) != bytes) {
      st = say(msg, cap, WH_ERR_CORRUPT, "tensor '%.200s': %" PRId64 " bytes of data for a shape of %" PRIu64 " bytes",
               key, en - b, bytes);
      break;
    }
    e->begin = (uint64_t)b, e->end = (uint64_t)en;
    out->n++;
  }
  if (st == WH_OK) {
    /* the ranges tile the data: no holes, no overlaps, nothing after the last */
    qsort(out->e, (size_t)out->n, sizeof *out->e, cmp_begin);
    uint64_t at = 0;
    for (int i = 0; i < out->n && st == WH_OK; i++) {
      if (out->e[i].begin != at)
        st = say(msg, cap, WH_ERR_CORRUPT, "tensor '%.200s' starts at byte %" PRIu64 " of the data, %s ends at %" PRIu64,
                 out->e[i].key, out->e[i].begin, i ? "the one before" : "nothing before it", at);
      at = out->e[i].end;
    }
    if (st == WH_OK && at != out->data_bytes)
      st = say(msg, cap, WH_ERR_CORRUPT, "the tensors cover %" PRIu64 " bytes of data, the file holds %" PRIu64, at,
               out->data_bytes);
  }
  if (st == WH_OK) { /* lookups by key in O(log n) */
    if (!(out->by_key = malloc(sizeof(wh__st_entry *) * ((size_t)out->n + 1)))) {
      st = say(msg, cap, WH_ERR_OUT_OF_MEMORY, "out of memory parsing a header");
    } else {
      for (int i = 0; i < out->n; i++) out->by_key[i] = &out->e[i];
      qsort(out->by_key, (size_t)out->n, sizeof(wh__st_entry *), cmp_key);
    }
  }
  if (st != WH_OK) wh__st_free(out);
  return st;
}

const wh__st_entry *wh__st_find(const wh__st_file *f, const char *key) {
  int lo = 0, hi = f->n - 1;
  while (f->by_key && lo <= hi) {
    int mid = lo + (hi - lo) / 2, c = strcmp(f->by_key[mid]->key, key);
    if (c == 0) return f->by_key[mid];
    if (c < 0) lo = mid + 1;
    else hi = mid - 1;
  }
  return NULL;
}

const char *wh__st_meta(const wh__st_file *f, const char *key) {
  json_object *md, *v;
  if (!f->root || !json_object_object_get_ex(f->root, "__metadata__", &md) ||
      !json_object_object_get_ex(md, key, &v) || !json_object_is_type(v, json_type_string))
    return NULL;
  return json_object_get_string(v);
}

void wh__st_free(wh__st_file *f) {
  json_object_put(f->root);
  free(f->e);
  free(f->by_key);
  memset(f, 0, sizeof *f);
}
