/* cluster_io.c - cluster descriptions from outside the code: JSON files read and written through
 * json-c (schema in docs/cluster.md), and a measurement rounded as those files keep it. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "../base/ctx.h"
#include "planner.h"

#define GIB (1024.0 * 1024.0 * 1024.0)
#define MAX_FILE_BYTES (16u << 20)
#define MAX_DEVICES (1 << 20)

/* Units of the file: a value x in the file is x * mul / div in libwhale's units (bytes, bytes/s,
 * FLOP/s, seconds). Dividing (not multiplying by 1e-6) keeps "5" microseconds exactly 5e-6. */
typedef struct {
  double mul, div;
} unit;

static const unit U_TF = {1e12, 1}, U_GBPS = {1e9, 1}, U_GBITPS = {1e9, 8}, U_GIB = {GIB, 1}, U_US = {1, 1e6},
                  U_ONE = {1, 1};

static double to_si(double x, unit u) { return x * u.mul / u.div; }

/* ====================================================================== loading */

typedef struct {
  wh_ctx *ctx;
  const char *file;
} loader;

static wh_status fail(loader *L, const char *path, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static wh_status fail(loader *L, const char *path, const char *fmt, ...) {
  char what[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  wh__ctx_set_error(L->ctx, "wh_cluster_load: %s: %s: %s", L->file, path, what);
  return WH_ERR_CORRUPT;
}

static const char *type_name(json_object *o) {
  switch (json_object_get_type(o)) {
  case json_type_null: return "null";
  case json_type_boolean: return "a boolean";
  case json_type_double:
  case json_type_int: return "a number";
  case json_type_object: return "an object";
  case json_type_array: return "an array";
  case json_type_string: return "a string";
  }
  return "something else";
}

/* s for a message: at most cap - 1 bytes, anything unprintable as '?'. */
static const char *printable(char *dst, size_t cap, const char *s) {
  size_t k = 0;
  for (; s && *s && k + 1 < cap; s++) dst[k++] = (*s >= 32 && *s < 127) ? *s : '?';
  dst[k] = 0;
  return dst;
}

/* Every key of o must be one of allowed (NULL-terminated). */
static wh_status check_keys(loader *L, json_object *o, const char *path, const char *const *allowed) {
  json_object_object_foreach(o, key, val) {
    (void)val;
    int ok = 0;
    for (int i = 0; allowed[i] && !ok; i++) ok = strcmp(key, allowed[i]) == 0;
    if (!ok) {
      char list[256];
      size_t n = 0;
      for (int i = 0; allowed[i] && n < sizeof list; i++)
        n += (size_t)snprintf(list + n, sizeof list - n, "%s%s", i ? ", " : "", allowed[i]);
      char sub[160], shown[65];
      snprintf(sub, sizeof sub, "%s%s%s", path, path[0] ? "." : "", printable(shown, sizeof shown, key));
      return fail(L, sub, "unknown key (allowed here: %s)", list);
    }
  }
  return WH_OK;
}

static void join(char *out, size_t cap, const char *path, const char *key) {
  snprintf(out, cap, "%s%s%s", path, path[0] ? "." : "", key);
}

/* A number under key: 0 absent, 1 present (*v set), -1 error (message set). Range lo < v (open)
 * or lo <= v, and v <= hi. */
static int get_num(loader *L, wh_status *st, json_object *o, const char *path, const char *key, double lo,
                   int lo_open, double hi, double *v) {
  json_object *x;
  if (!json_object_object_get_ex(o, key, &x)) return 0;
  char p[160];
  join(p, sizeof p, path, key);
  json_type t = json_object_get_type(x);
  if (t != json_type_int && t != json_type_double) {
    *st = fail(L, p, "wrong type: expected a number, found %s", type_name(x));
    return -1;
  }
  double d = json_object_get_double(x);
  if (!isfinite(d) || (lo_open ? !(d > lo) : !(d >= lo)) || !(d <= hi)) {
    *st = fail(L, p, "out of range: %g (must be %s %g and <= %g)", d, lo_open ? ">" : ">=", lo, hi);
    return -1;
  }
  *v = d;
  return 1;
}

static int get_int(loader *L, wh_status *st, json_object *o, const char *path, const char *key, int64_t lo,
                   int64_t hi, int64_t *v) {
  json_object *x;
  if (!json_object_object_get_ex(o, key, &x)) return 0;
  char p[160];
  join(p, sizeof p, path, key);
  if (json_object_get_type(x) != json_type_int) {
    *st = fail(L, p, "wrong type: expected an integer, found %s", type_name(x));
    return -1;
  }
  /* json-c saturates to INT64 / UINT64 limits, which the range check then refuses */
  int64_t i = json_object_get_int64(x);
  if (json_object_get_uint64(x) > (uint64_t)INT64_MAX) i = INT64_MAX;
  if (i < lo || i > hi) {
    *st = fail(L, p, "out of range: %lld (must be in [%lld, %lld])", (long long)i, (long long)lo, (long long)hi);
    return -1;
  }
  *v = i;
  return 1;
}

/* An object (or array) under key: 0 absent, 1 present, -1 wrong type. */
static int get_typed(loader *L, wh_status *st, json_object *o, const char *path, const char *key, json_type want,
                     json_object **out) {
  json_object *x;
  if (!json_object_object_get_ex(o, key, &x)) return 0;
  if (json_object_get_type(x) != want) {
    char p[160];
    join(p, sizeof p, path, key);
    *st = fail(L, p, "wrong type: expected %s, found %s",
               want == json_type_object ? "an object" : want == json_type_array ? "an array" : "a string", type_name(x));
    return -1;
  }
  *out = x;
  return 1;
}

#define BW_MAX_GBPS 1e5 /* 100 TB/s: any link or memory beyond this is a unit mistake */

/* links.<which>: bandwidth in GB/s (bytes) or Gb/s (bits), latency in microseconds. */
static wh_status load_link(loader *L, json_object *links, const char *which, int intra, double *bw, double *lat) {
  wh_status st = WH_OK;
  json_object *o = NULL;
  int r = get_typed(L, &st, links, "links", which, json_type_object, &o);
  if (r <= 0) return st;
  char path[64];
  snprintf(path, sizeof path, "links.%s", which);
  static const char *const keys[] = {"bandwidth_GBps", "bandwidth_Gbps", "latency_us", NULL};
  if ((st = check_keys(L, o, path, keys)) != WH_OK) return st;
  double gbytes = 0, gbits = 0, us = 0;
  int has_B = get_num(L, &st, o, path, "bandwidth_GBps", 0, !intra, BW_MAX_GBPS, &gbytes);
  if (has_B < 0) return st;
  int has_b = get_num(L, &st, o, path, "bandwidth_Gbps", 0, !intra, BW_MAX_GBPS * 8, &gbits);
  if (has_b < 0) return st;
  if (has_B && has_b) return fail(L, path, "both bandwidth_GBps and bandwidth_Gbps given: keep one");
  if (has_B) *bw = to_si(gbytes, U_GBPS);
  if (has_b) *bw = to_si(gbits, U_GBITPS);
  int has_l = get_num(L, &st, o, path, "latency_us", 0, 0, 1e6, &us);
  if (has_l < 0) return st;
  if (has_l) *lat = to_si(us, U_US);
  return WH_OK;
}

static const char *const device_keys[] = {"kind",        "count",     "flops_f32_TF", "flops_bf16_TF", "mem_bw_GBps",
                                          "mem_GiB",     "link_GBps", "eff_flops",    "eff_bw",        "op_time_scale",
                                          NULL};

/* "op_time_scale": {"matmul": 1.3, ...}: a measured profile's ratios (wh_cluster_set_profile) */
static wh_status load_op_scale(loader *L, json_object *o, const char *path, float *scale) {
  json_object *m = NULL;
  wh_status st = WH_OK;
  int r = get_typed(L, &st, o, path, "op_time_scale", json_type_object, &m);
  if (r <= 0) return st;
  char p[200];
  json_object_object_foreach(m, key, val) {
    join(p, sizeof p, path, "op_time_scale");
    char q[260];
    snprintf(q, sizeof q, "%s.%s", p, key);
    int op = wh__op_find(key);
    if (op < 0) return fail(L, q, "unknown op (not an op of libwhale's registry)");
    json_type t = json_object_get_type(val);
    double v = t == json_type_double || t == json_type_int ? json_object_get_double(val) : NAN;
    if (!(v >= 1e-3 && v <= 1e3)) return fail(L, q, "out of range: a time ratio in [0.001, 1000]");
    scale[op] = (float)v;
  }
  return WH_OK;
}

static wh_status load_device(loader *L, wh_cluster *c, json_object *o, const char *path, int node, int64_t *total) {
  wh_status st = WH_OK;
  if (json_object_get_type(o) != json_type_object)
    return fail(L, path, "wrong type: expected an object (a device entry), found %s", type_name(o));
  if ((st = check_keys(L, o, path, device_keys)) != WH_OK) return st;

  json_object *k = NULL;
  int r = get_typed(L, &st, o, path, "kind", json_type_string, &k);
  if (r < 0) return st;
  char p[160];
  join(p, sizeof p, path, "kind");
  if (r == 0) return fail(L, p, "missing (a catalogue name such as V100-32GB, or a name of your own)");
  const char *kind = json_object_get_string(k);
  size_t klen = (size_t)json_object_get_string_len(k);
  if (klen == 0 || klen > 31 || strlen(kind) != klen)
    return fail(L, p, "out of range: a kind is 1 to 31 characters without NUL (found %zu)", klen);

  int64_t count = 1;
  if (get_int(L, &st, o, path, "count", 1, MAX_DEVICES, &count) < 0) return st;
  if (*total + count > MAX_DEVICES) {
    join(p, sizeof p, path, "count");
    return fail(L, p, "out of range: the file describes more than %d devices", MAX_DEVICES);
  }

  const wh__device_kind *cat = wh__catalogue_find(kind);
  wh_device_desc d = WH_DEVICE_DESC_INIT;
  d.kind = cat ? cat->name : kind; /* catalogue kinds take the catalogue's spelling (the planner keys on it) */
  if (cat) {
    d.flops_f32 = cat->flops_f32;
    d.flops_bf16 = cat->flops_bf16;
    d.mem_bw = cat->mem_bw;
    d.mem_bytes = cat->mem_bytes;
    d.link_bw = cat->link_bw;
  }
  d.eff_flops = WH_EFF_FLOPS_DEFAULT;
  d.eff_bw = WH_EFF_BW_DEFAULT;
  struct {
    const char *key;
    double lo;
    int lo_open;
    double hi;
    unit scale;
    double *dst;
  } fig[] = {
      {"flops_f32_TF", 0, 1, 1e5, U_TF, &d.flops_f32},  {"flops_bf16_TF", 0, 1, 1e5, U_TF, &d.flops_bf16},
      {"mem_bw_GBps", 0, 1, BW_MAX_GBPS, U_GBPS, &d.mem_bw}, {"mem_GiB", 0, 1, 1e6, U_GIB, &d.mem_bytes},
      {"link_GBps", 0, 0, BW_MAX_GBPS, U_GBPS, &d.link_bw},
  };
  for (size_t i = 0; i < sizeof fig / sizeof fig[0]; i++) {
    double v = 0;
    r = get_num(L, &st, o, path, fig[i].key, fig[i].lo, fig[i].lo_open, fig[i].hi, &v);
    if (r < 0) return st;
    if (r == 1) {
      *fig[i].dst = to_si(v, fig[i].scale);
    } else if (!cat) {
      char shown[32];
      join(p, sizeof p, path, fig[i].key);
      return fail(L, p, "missing (kind '%s' is not in the catalogue, so every figure must be given: "
                        "flops_f32_TF, flops_bf16_TF, mem_bw_GBps, mem_GiB, link_GBps)",
                  printable(shown, sizeof shown, kind));
    }
  }
  if (get_num(L, &st, o, path, "eff_flops", 0, 1, 1, &d.eff_flops) < 0) return st;
  if (get_num(L, &st, o, path, "eff_bw", 0, 1, 1, &d.eff_bw) < 0) return st;
  float scale[WH_OP_COUNT] = {0};
  if ((st = load_op_scale(L, o, path, scale)) != WH_OK) return st;
  if ((st = wh_cluster_add_custom(c, &d, node, (int)count)) != WH_OK) {
    char msg[512];
    snprintf(msg, sizeof msg, "%.400s", c->ctx->err);
    return fail(L, path, "%s", msg);
  }
  for (int i = c->n - (int)count; i < c->n; i++) memcpy(c->dev[i].op_scale, scale, sizeof scale);
  *total += count;
  return WH_OK;
}

static wh_status load_doc(loader *L, wh_cluster *c, json_object *root) {
  wh_status st = WH_OK;
  if (json_object_get_type(root) != json_type_object)
    return fail(L, "(top level)", "wrong type: expected an object, found %s", type_name(root));
  static const char *const top_keys[] = {"version", "links", "nodes", NULL};
  if ((st = check_keys(L, root, "", top_keys)) != WH_OK) return st;
  int64_t version = 1;
  if (get_int(L, &st, root, "", "version", 1, 1, &version) < 0) return st;

  json_object *links = NULL;
  int r = get_typed(L, &st, root, "", "links", json_type_object, &links);
  if (r < 0) return st;
  double ibw = c->intra_bw, ilat = c->intra_lat, xbw = c->inter_bw, xlat = c->inter_lat;
  if (r == 1) {
    static const char *const link_keys[] = {"intra_node", "inter_node", NULL};
    if ((st = check_keys(L, links, "links", link_keys)) != WH_OK) return st;
    if ((st = load_link(L, links, "intra_node", 1, &ibw, &ilat)) != WH_OK) return st;
    if ((st = load_link(L, links, "inter_node", 0, &xbw, &xlat)) != WH_OK) return st;
  }
  if ((st = wh_cluster_set_links(c, ibw, ilat, xbw, xlat)) != WH_OK) return fail(L, "links", "%s", c->ctx->err);

  json_object *nodes = NULL;
  r = get_typed(L, &st, root, "", "nodes", json_type_array, &nodes);
  if (r < 0) return st;
  if (r == 0) return fail(L, "nodes", "missing (an array of nodes, each {\"devices\": [...]})");
  size_t nn = json_object_array_length(nodes);
  if (nn > MAX_DEVICES) return fail(L, "nodes", "out of range: more than %d nodes", MAX_DEVICES);
  int64_t total = 0;
  for (size_t i = 0; i < nn; i++) {
    json_object *n = json_object_array_get_idx(nodes, i);
    char path[64];
    snprintf(path, sizeof path, "nodes[%zu]", i);
    if (json_object_get_type(n) != json_type_object)
      return fail(L, path, "wrong type: expected an object (a node), found %s", type_name(n));
    static const char *const node_keys[] = {"node", "devices", NULL};
    if ((st = check_keys(L, n, path, node_keys)) != WH_OK) return st;
    int64_t node = (int64_t)i;
    if (get_int(L, &st, n, path, "node", 0, MAX_DEVICES, &node) < 0) return st;
    json_object *devs = NULL;
    r = get_typed(L, &st, n, path, "devices", json_type_array, &devs);
    if (r < 0) return st;
    if (r == 0) {
      char p[80];
      snprintf(p, sizeof p, "%s.devices", path);
      return fail(L, p, "missing (an array of device entries)");
    }
    size_t nd = json_object_array_length(devs);
    for (size_t j = 0; j < nd; j++) {
      char dp[96];
      snprintf(dp, sizeof dp, "%s.devices[%zu]", path, j);
      if ((st = load_device(L, c, json_object_array_get_idx(devs, j), dp, (int)node, &total)) != WH_OK) return st;
    }
  }
  return WH_OK;
}

static void line_col(const char *buf, size_t off, int *line, int *col) {
  *line = 1;
  *col = 1;
  for (size_t i = 0; i < off && buf[i]; i++) {
    if (buf[i] == '\n') {
      ++*line;
      *col = 1;
    } else {
      ++*col;
    }
  }
}

wh_status wh_cluster_load(wh_ctx *ctx, const char *path, wh_cluster **out) {
  if (out) *out = NULL;
  if (!ctx || !path || !out) return WH_ERR_INVALID_ARGUMENT;
  FILE *f = fopen(path, "rb");
  if (!f) {
    wh__ctx_set_error(ctx, "wh_cluster_load: %s: cannot open: %s", path, strerror(errno));
    return WH_ERR_IO;
  }
  char *buf = malloc(MAX_FILE_BYTES + 1);
  if (!buf) {
    fclose(f);
    return WH_ERR_OUT_OF_MEMORY;
  }
  size_t len = fread(buf, 1, MAX_FILE_BYTES + 1, f);
  int rerr = ferror(f);
  fclose(f);
  if (rerr) {
    free(buf);
    wh__ctx_set_error(ctx, "wh_cluster_load: %s: cannot read", path);
    return WH_ERR_IO;
  }
  if (len > MAX_FILE_BYTES) {
    free(buf);
    wh__ctx_set_error(ctx, "wh_cluster_load: %s: larger than %u MiB: not a cluster file", path, MAX_FILE_BYTES >> 20);
    return WH_ERR_CORRUPT;
  }
  buf[len] = 0;

  json_tokener *tok = json_tokener_new();
  if (!tok) {
    free(buf);
    return WH_ERR_OUT_OF_MEMORY;
  }
  json_object *root = json_tokener_parse_ex(tok, buf, (int)len);
  enum json_tokener_error jerr = json_tokener_get_error(tok);
  size_t end = json_tokener_get_parse_end(tok);
  json_tokener_free(tok);
  if (!root || jerr != json_tokener_success || end < len) {
    int line, col;
    line_col(buf, end, &line, &col);
    const char *why = jerr == json_tokener_continue ? "unexpected end of file (an unclosed object, array or string)"
                      : jerr != json_tokener_success ? json_tokener_error_desc(jerr)
                      : root                         ? "unexpected data after the JSON value"
                                                     : "no JSON value";
    if (len == 0) why = "empty file";
    wh__ctx_set_error(ctx, "wh_cluster_load: %s:%d:%d: not valid JSON: %s (json-c, byte offset %zu)", path, line,
                      col, why, end);
    json_object_put(root);
    free(buf);
    return WH_ERR_CORRUPT;
  }
  free(buf);

  wh_cluster *c = NULL;
  wh_status st = wh_cluster_create(ctx, &c);
  if (st == WH_OK) {
    loader L = {ctx, path};
    st = load_doc(&L, c, root);
  }
  json_object_put(root);
  if (st != WH_OK) {
    wh_cluster_destroy(c);
    return st;
  }
  *out = c;
  return WH_OK;
}

/* ====================================================================== saving */

/* x with p significant digits, without an exponent unless the number is very large or small. */
static void fmt_digits(char *buf, size_t cap, double x, int p) {
  snprintf(buf, cap, "%.*g", p, x);
  if (!strchr(buf, 'e') || x == 0) return;
  int e = (int)floor(log10(fabs(x)));
  if (e < -6 || e > 15) return;
  int decimals = p - 1 - e;
  snprintf(buf, cap, "%.*f", decimals > 0 ? decimals : 0, x);
}

/* The shortest decimal text of v in unit u that reads back as exactly v; 0 when there is none. */
static int fmt_exact(char *buf, size_t cap, double v, unit u) {
  double x = v * u.div / u.mul;
  for (int p = 1; p <= 17; p++) {
    fmt_digits(buf, cap, x, p);
    if (to_si(strtod(buf, NULL), u) == v) return 1;
  }
  double lo = x, hi = x;
  for (int i = 0; i < 2; i++) {
    lo = nextafter(lo, -INFINITY), hi = nextafter(hi, INFINITY);
    snprintf(buf, cap, "%.17g", lo);
    if (to_si(strtod(buf, NULL), u) == v) return 1;
    snprintf(buf, cap, "%.17g", hi);
    if (to_si(strtod(buf, NULL), u) == v) return 1;
  }
  return 0;
}

/* Not every double is x * mul / div for some double x (the scaled values are sparser than the
 * doubles near them): such a v is written as the nearest value that is, in that value's own
 * shortest text, so that saving what was loaded writes the same text again. */
static void fmt_unit(char *buf, size_t cap, double v, unit u) {
  if (fmt_exact(buf, cap, v, u)) return;
  double x = v * u.div / u.mul, best = to_si(x, u), lo = x, hi = x;
  for (int i = 0; i < 3; i++) {
    lo = nextafter(lo, -INFINITY), hi = nextafter(hi, INFINITY);
    double a = to_si(lo, u), b = to_si(hi, u);
    if (fabs(a - v) < fabs(best - v)) best = a;
    if (fabs(b - v) < fabs(best - v)) best = b;
  }
  if (!fmt_exact(buf, cap, best, u)) snprintf(buf, cap, "%.17g", v * u.div / u.mul);
}

typedef struct {
  int oom;
} saver;

static json_object *num(saver *S, double v, unit u) {
  char b[48];
  fmt_unit(b, sizeof b, v, u);
  json_object *o = json_object_new_double_s(strtod(b, NULL), b);
  if (!o) S->oom = 1;
  return o;
}

static void put(saver *S, json_object *obj, const char *key, json_object *val) {
  if (!obj || !val || json_object_object_add(obj, key, val) != 0) {
    json_object_put(val);
    S->oom = 1;
  }
}

static int same_device(const wh__device *a, const wh__device *b) {
  return a->node == b->node && strcmp(a->kind, b->kind) == 0 && a->flops_f32 == b->flops_f32 &&
         a->flops_bf16 == b->flops_bf16 && a->mem_bw == b->mem_bw && a->mem_bytes == b->mem_bytes &&
         a->link_bw == b->link_bw && a->eff_flops == b->eff_flops && a->eff_bw == b->eff_bw &&
         memcmp(a->op_scale, b->op_scale, sizeof a->op_scale) == 0;
}

static json_object *device_json(saver *S, const wh__device *d, int count) {
  json_object *o = json_object_new_object();
  if (!o) {
    S->oom = 1;
    return NULL;
  }
  const wh__device_kind *cat = wh__catalogue_find(d->kind);
  put(S, o, "kind", json_object_new_string(d->kind));
  if (count != 1) put(S, o, "count", json_object_new_int(count));
  struct {
    const char *key;
    double v, cat;
    unit scale;
  } fig[] = {
      {"flops_f32_TF", d->flops_f32, cat ? cat->flops_f32 : NAN, U_TF},
      {"flops_bf16_TF", d->flops_bf16, cat ? cat->flops_bf16 : NAN, U_TF},
      {"mem_bw_GBps", d->mem_bw, cat ? cat->mem_bw : NAN, U_GBPS},
      {"mem_GiB", d->mem_bytes, cat ? cat->mem_bytes : NAN, U_GIB},
      {"link_GBps", d->link_bw, cat ? cat->link_bw : NAN, U_GBPS},
      {"eff_flops", d->eff_flops, WH_EFF_FLOPS_DEFAULT, U_ONE},
      {"eff_bw", d->eff_bw, WH_EFF_BW_DEFAULT, U_ONE},
  };
  for (size_t i = 0; i < sizeof fig / sizeof fig[0]; i++)
    if (fig[i].v != fig[i].cat) put(S, o, fig[i].key, num(S, fig[i].v, fig[i].scale));
  json_object *sc = NULL;
  for (int k = 0; k < WH_OP_COUNT; k++) {
    if (!(d->op_scale[k] > 0)) continue;
    if (!sc && !(sc = json_object_new_object())) {
      S->oom = 1;
      break;
    }
    char fb[32]; /* 9 significant digits: the file loads back to the same float */
    snprintf(fb, sizeof fb, "%.9g", (double)d->op_scale[k]);
    put(S, sc, wh__ops[k]->name, json_object_new_double_s(strtod(fb, NULL), fb));
  }
  if (sc) put(S, o, "op_time_scale", sc);
  return o;
}

static json_object *link_json(saver *S, double bw, double lat, int bits) {
  json_object *o = json_object_new_object();
  put(S, o, bits ? "bandwidth_Gbps" : "bandwidth_GBps", num(S, bw, bits ? U_GBITPS : U_GBPS));
  put(S, o, "latency_us", num(S, lat, U_US));
  return o;
}

wh_status wh_cluster_save(const wh_cluster *c, const char *path) {
  if (!c || !path) return WH_ERR_INVALID_ARGUMENT;
  saver S = {0};
  json_object *root = json_object_new_object();
  put(&S, root, "version", json_object_new_int(1));
  json_object *links = json_object_new_object();
  put(&S, links, "intra_node", link_json(&S, c->intra_bw, c->intra_lat, 0));
  put(&S, links, "inter_node", link_json(&S, c->inter_bw, c->inter_lat, 1));
  put(&S, root, "links", links);
  json_object *nodes = json_object_new_array();
  put(&S, root, "nodes", nodes);
  /* runs of devices on one node make a node entry; its "node" is written when it is not the
   * entry's position, so any device order and node numbering survive the round trip */
  int i = 0, entry = 0;
  while (i < c->n && !S.oom) {
    int node = c->dev[i].node;
    json_object *n = json_object_new_object();
    if (node != entry) put(&S, n, "node", json_object_new_int(node));
    json_object *devs = json_object_new_array();
    put(&S, n, "devices", devs);
    while (i < c->n && c->dev[i].node == node && !S.oom) {
      int j = i + 1;
      while (j < c->n && same_device(&c->dev[i], &c->dev[j])) j++;
      json_object *d = device_json(&S, &c->dev[i], j - i);
      if (!d || !devs || json_object_array_add(devs, d) != 0) {
        json_object_put(d);
        S.oom = 1;
      }
      i = j;
    }
    if (!n || !nodes || json_object_array_add(nodes, n) != 0) {
      json_object_put(n);
      S.oom = 1;
    }
    entry++;
  }
  const char *text = S.oom ? NULL
                           : json_object_to_json_string_ext(root, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED |
                                                                      JSON_C_TO_STRING_NOSLASHESCAPE);
  if (!text) {
    json_object_put(root);
    wh__ctx_set_error(c->ctx, "wh_cluster_save: %s: out of memory building the JSON", path);
    return WH_ERR_OUT_OF_MEMORY;
  }
  wh_status st = WH_OK;
  FILE *f = fopen(path, "wb");
  if (!f) {
    wh__ctx_set_error(c->ctx, "wh_cluster_save: %s: cannot open for writing: %s", path, strerror(errno));
    st = WH_ERR_IO;
  } else {
    size_t len = strlen(text);
    int bad = fwrite(text, 1, len, f) != len || fputc('\n', f) == EOF;
    int e = errno;
    if (fclose(f) != 0 && !bad) bad = 1, e = errno;
    if (bad) {
      wh__ctx_set_error(c->ctx, "wh_cluster_save: %s: write failed: %s", path, strerror(e));
      st = WH_ERR_IO;
    }
  }
  json_object_put(root);
  return st;
}

/* ====================================================================== measurements */

/* A measurement, to 4 significant digits in the file's unit: the benchmarks are not repeatable to
 * more than that, and the saved file reads "flops_f32_TF": 0.1856, not sixteen digits of noise. */
static double measured(double v, unit u) {
  char b[32];
  snprintf(b, sizeof b, "%.4g", v * u.div / u.mul);
  return to_si(strtod(b, NULL), u);
}

double wh__cluster_measured(double v, wh__file_unit u) {
  return measured(v, u == WH__UNIT_TF ? U_TF : u == WH__UNIT_GBPS ? U_GBPS : U_ONE);
}
