/* checkpoint.c - the whole training state on disk, crash-safe, in safetensors: every rank writes
 * the part of each parameter and optimizer state it is the one writer of (wh__program_hold), rank
 * 0 an index naming each tensor's logical shape and the slice each file holds, then the `latest`
 * marker; a load reads, for whatever layout the loading session has, the slices it needs.
 *
 *   DIR/latest                                  "step-00000020 <crc32c of the name>"
 *   DIR/step-00000020/rank-00000-of-00004.safetensors   one per rank that writes something
 *   DIR/step-00000020/model.safetensors.index.json      tensors, slices, checksums, step, metadata
 *
 * A slice is the part of a tensor that operator sharding leaves a rank (dimension `dim` viewed as
 * [groups, parts, rest], part `index`; or the whole) and a window [lo, hi) of that part's flattened
 * elements (ZeRO-1's shard of the optimizer state; or all of it), stored as the rank keeps it. Both
 * sides of a load are such slices, so any layout reads any other through one run-merging copy. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>

#include "../base/crc32c.h"
#include "../base/ctx.h"
#include "../base/fileio.h"
#include "../base/safetensors.h"
#include "session_impl.h"

#define INDEX_FILE "model.safetensors.index.json"
#define LATEST_FILE "latest"
#define FORMAT_NAME "libwhale checkpoint"
#define FORMAT_VERSION 1
#define CHUNK ((size_t)8 << 20)     /* bytes one thread checksums and moves at a time */
#define MAX_META ((size_t)16 << 20) /* the host's blob */
#define MAX_INDEX ((size_t)256 << 20)
#define PATH_CAP 4096
#define MAX_RUNS ((int64_t)1 << 22) /* runs of a tensor's slices: real layouts have far fewer */
#define NAME_CAP 64

static wh_status fail(wh_ctx *ctx, wh_status st, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static wh_status fail(wh_ctx *ctx, wh_status st, const char *fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  wh__ctx_set_error(ctx, "%s", buf);
  return st;
}

/* a/b into out; 0 when it does not fit (not inlined: the callers check, the truncation warning need not guess) */
__attribute__((noinline)) static int join(char *out, size_t cap, const char *a, const char *b) {
  int k = snprintf(out, cap, "%s/%s", a, b);
  return k >= 0 && (size_t)k < cap;
}

/* ============================================================ slices and runs */

typedef struct sdesc {
  int split, dim, groups, parts, index; /* the part: dimension dim viewed as [groups, parts, rest] */
  int64_t lo, hi;                       /* the window of the part's flattened elements */
} sdesc;

/* Elements [w, w + n) of the whole (flattened) sit at element l of a slice's own storage. */
typedef struct run {
  int64_t w, n, l;
} run;

typedef struct runs {
  run *r;
  int64_t n, cap;
  int oom;
} runs;

static int64_t numel_of(const int64_t *d, int nd) {
  int64_t k = 1;
  for (int i = 0; i < nd; i++) k *= d[i];
  return k;
}

static int64_t part_numel(const int64_t *d, int nd, const sdesc *s) {
  int64_t n = numel_of(d, nd);
  return s->split ? n / s->parts : n;
}

/* Whether s describes a slice of a tensor of dims d (a check on what an index says). */
static int desc_ok(const int64_t *d, int nd, const sdesc *s) {
  if (s->split) {
    if (s->dim < 0 || s->dim >= nd || s->groups < 1 || s->parts < 1 || s->index < 0 || s->index >= s->parts) return 0;
    if (d[s->dim] % ((int64_t)s->groups * s->parts) != 0) return 0;
  }
  return s->lo >= 0 && s->lo <= s->hi && s->hi <= part_numel(d, nd, s);
}

static void push(runs *o, int64_t w, int64_t n, int64_t l) {
  if (o->n > 0) {
    run *p = &o->r[o->n - 1];
    if (p->w + p->n == w && p->l + p->n == l) { /* contiguous on both sides: one run */
      p->n += n;
      return;
    }
  }
  if (o->n >= MAX_RUNS) { /* an index slicing a tensor finer than any layout does */
    o->oom = 1;
    return;
  }
  if (o->n == o->cap) {
    int64_t cap = o->cap ? 2 * o->cap : 8;
    run *r = realloc(o->r, sizeof(run) * (size_t)cap);
    if (!r) {
      o->oom = 1;
      return;
    }
    o->r = r, o->cap = cap;
  }
  o->r[o->n++] = (run){w, n, l};
}

/* The runs of slice s of a tensor of dims d, in ascending order of the whole's elements. */
static wh_status runs_of(const int64_t *d, int nd, const sdesc *s, runs *o) {
  o->n = 0, o->oom = 0;
  int64_t lo = s->lo, hi = s->hi;
  if (!s->split) {
    if (lo < hi) push(o, lo, hi - lo, 0);
    return o->oom ? WH_ERR_OUT_OF_MEMORY : WH_OK;
  }
  int64_t outer = numel_of(d, s->dim), inner = numel_of(d + s->dim + 1, nd - s->dim - 1), D = d[s->dim];
  int64_t c = D / ((int64_t)s->groups * s->parts), len = c * inner;
  if (len == 0) return WH_OK;
  /* the part keeps [outer, groups, c, inner]; window it, walking its runs in order */
  int64_t first = lo / len;
  for (int64_t k = first; k < outer * s->groups && k * len < hi && !o->oom; k++) {
    int64_t oi = k / s->groups, gi = k % s->groups;
    int64_t w = (oi * D + (gi * s->parts + s->index) * c) * inner, l = k * len;
    int64_t a = l > lo ? l : lo, b = l + len < hi ? l + len : hi;
    if (a < b) push(o, w + (a - l), b - a, a - lo);
  }
  return o->oom ? WH_ERR_OUT_OF_MEMORY : WH_OK;
}

typedef void (*meet_fn)(void *arg, int64_t src, int64_t dst, int64_t n);

/* The elements slices a and b share: fn (may be NULL) gets each common run as offsets into a's
 * and b's storage. Returns how many elements they share. */
static int64_t meet(const runs *a, const runs *b, meet_fn fn, void *arg) {
  int64_t i = 0, j = 0, total = 0;
  while (i < a->n && j < b->n) {
    const run *x = &a->r[i], *y = &b->r[j];
    int64_t lo = x->w > y->w ? x->w : y->w, xe = x->w + x->n, ye = y->w + y->n, hi = xe < ye ? xe : ye;
    if (lo < hi) {
      if (fn) fn(arg, x->l + (lo - x->w), y->l + (lo - y->w), hi - lo);
      total += hi - lo;
    }
    if (xe < ye) i++;
    else j++;
  }
  return total;
}

/* The shape a slice is stored with: the tensor's (its part's when split) when the window is the
 * whole part, else one dimension. */
static int entry_dims(const int64_t *d, int nd, const sdesc *s, int64_t *out) {
  if (s->lo == 0 && s->hi == part_numel(d, nd, s)) {
    for (int i = 0; i < nd; i++) out[i] = d[i];
    if (s->split) out[s->dim] = d[s->dim] / s->parts;
    return nd;
  }
  out[0] = s->hi - s->lo;
  return 1;
}

/* The slice's name inside its file: the tensor's when it is the whole, with what part otherwise. */
static void slice_key(char *buf, size_t cap, const char *name, const int64_t *d, int nd, const sdesc *s) {
  size_t k = (size_t)snprintf(buf, cap, "%s", name);
  if (s->split && k < cap) {
    k += (size_t)snprintf(buf + k, cap - k, "[dim%d part %d/%d", s->dim, s->index, s->parts);
    if (s->groups > 1 && k < cap) k += (size_t)snprintf(buf + k, cap - k, " of %d groups", s->groups);
    if (k < cap) k += (size_t)snprintf(buf + k, cap - k, "]");
  }
  if ((s->lo != 0 || s->hi != part_numel(d, nd, s)) && k < cap)
    snprintf(buf + k, cap - k, "[flat %lld:%lld]", (long long)s->lo, (long long)s->hi);
}

/* ============================================================ names */

static int persistent(const wh__value *v) { return v->role == WH_ROLE_PARAM || v->role == WH_ROLE_STATE; }

/* Each parameter's and optimizer state's name in checkpoints (NULL for other values): its own name
 * when it has one that no other persistent value shares, else "#<value index>". Owned: free_names. */
static char **ckpt_names(const wh_graph *g) {
  char **nm = calloc((size_t)g->n_values + 1, sizeof(char *));
  if (!nm) return NULL;
  for (int v = 0; v < g->n_values; v++) {
    if (!persistent(&g->values[v])) continue;
    const char *own = g->values[v].name;
    int unique = own && own[0] && own[0] != '#';
    for (int u = 0; unique && u < g->n_values; u++)
      unique = u == v || !persistent(&g->values[u]) || !g->values[u].name || strcmp(g->values[u].name, own) != 0;
    char buf[32];
    snprintf(buf, sizeof buf, "#%d", v);
    if (!(nm[v] = strdup(unique ? own : buf))) {
      for (int u = 0; u < v; u++) free(nm[u]);
      free(nm);
      return NULL;
    }
  }
  return nm;
}

static void free_names(const wh_graph *g, char **nm) {
  for (int v = 0; nm && v < g->n_values; v++) free(nm[v]);
  free(nm);
}

static void shape_of(const wh__value *v, int *nd, int64_t *d) {
  *nd = v->shape.ndim;
  for (int i = 0; i < v->shape.ndim; i++) d[i] = v->shape.d[i];
}

/* What part of v this rank holds (wh__program_hold), its window made explicit for a whole value. */
static wh__hold hold_of(const wh_session *s, int32_t v) {
  wh__hold h = wh__program_hold(&s->prog, s->g, v);
  if (h.kind == WH_HOLD_WHOLE) h.lo = 0, h.hi = wh__numel(&s->g->values[v].shape, 1);
  return h;
}

static sdesc desc_of(const wh__hold *h) {
  sdesc s = {0};
  s.split = h->kind == WH_HOLD_SPLIT;
  if (s.split) s.dim = h->dim, s.groups = h->groups, s.parts = h->parts, s.index = h->index;
  s.lo = h->lo, s.hi = h->hi;
  return s;
}

/* ============================================================ files */

static int write_all(int fd, const void *buf, size_t n, uint64_t off) {
  const char *p = buf;
  while (n > 0) {
    ssize_t w = pwrite(fd, p, n, (off_t)off);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return w < 0 ? errno : EIO;
    p += w, n -= (size_t)w, off += (uint64_t)w;
  }
  return 0;
}

/* 0, an errno, or -1 when the file ends first. */
static int read_all(int fd, void *buf, size_t n, uint64_t off) {
  char *p = buf;
  while (n > 0) {
    ssize_t r = pread(fd, p, n, (off_t)off);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return errno;
    if (r == 0) return -1;
    p += r, n -= (size_t)r, off += (uint64_t)r;
  }
  return 0;
}

static int fsync_dir(const char *dir) {
  int fd = open(dir, O_RDONLY | O_DIRECTORY);
  if (fd < 0) return errno;
  int e = fsync(fd) != 0 ? errno : 0;
  close(fd);
  return e == EINVAL ? 0 : e; /* file systems that cannot sync directories */
}

/* Write buf to dir/name durably and atomically: a temporary name, fsync, rename, fsync dir. */
static wh_status write_durable(wh_ctx *ctx, const char *who, const char *dir, const char *name, const void *buf,
                               size_t n) {
  char path[PATH_CAP], tmp[PATH_CAP + 8];
  if (!join(path, sizeof path, dir, name)) return fail(ctx, WH_ERR_INVALID_ARGUMENT, "%s: path too long in %s", who, dir);
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return fail(ctx, WH_ERR_IO, "%s: cannot create '%s': %s", who, tmp, strerror(errno));
  int e = write_all(fd, buf, n, 0);
  if (!e && fsync(fd) != 0) e = errno;
  if (close(fd) != 0 && !e) e = errno;
  if (!e && rename(tmp, path) != 0) e = errno;
  if (!e) e = fsync_dir(dir);
  if (e) {
    unlink(tmp);
    return fail(ctx, WH_ERR_IO, "%s: writing '%s': %s", who, path, strerror(e));
  }
  return WH_OK;
}

/* Moving many buffers to or from files, checksummed on the way: their chunks are claimed one at a
 * time by the context's threads (a busy core then slows the batch by its share, not by half), and
 * each buffer's CRC is combined from its chunks' in order. */
typedef struct io_seg {
  int fd;
  char *buf;
  uint64_t off;  /* in the file */
  size_t bytes;
  size_t chunk0; /* its first chunk in the batch */
  uint32_t crc;  /* after the move */
  int err;       /* 0, an errno, or -1: the file ended first */
  const void *u1, *u2; /* the caller's: what the segment is, for messages */
} io_seg;

typedef struct io_batch {
  io_seg *seg;
  int n, cap, write;
  size_t chunks;
  _Atomic size_t next;
  int32_t *chunk_seg;
  uint32_t *crc;
  int *err;
} io_batch;

/* A chunk moves in pieces small enough to stay in the core's cache between the copy to or from
 * the page cache and the checksum: the data is read from memory once, not twice. */
#define PIECE ((size_t)512 << 10)

static void io_worker(void *arg, int64_t b, int64_t e) {
  (void)b, (void)e;
  io_batch *j = arg;
  for (;;) {
    size_t i = atomic_fetch_add(&j->next, 1);
    if (i >= j->chunks) return;
    io_seg *g = &j->seg[j->chunk_seg[i]];
    size_t at = (i - g->chunk0) * CHUNK, n = g->bytes - at < CHUNK ? g->bytes - at : CHUNK;
    uint32_t c = 0;
    int err = 0;
    for (size_t p = 0; p < n && !err; p += PIECE) {
      size_t k = n - p < PIECE ? n - p : PIECE;
      char *q = g->buf + at + p;
      if (j->write) {
        c = wh__crc32c(c, q, k);
        err = write_all(g->fd, q, k, g->off + at + p);
      } else if (!(err = read_all(g->fd, q, k, g->off + at + p))) {
        c = wh__crc32c(c, q, k);
      }
    }
    j->crc[i] = c;
    j->err[i] = err;
  }
}

static io_seg *io_add(io_batch *j, int fd, void *buf, size_t bytes, uint64_t off) {
  if (j->n == j->cap) {
    int cap = j->cap ? 2 * j->cap : 64;
    io_seg *ns = realloc(j->seg, sizeof(io_seg) * (size_t)cap);
    if (!ns) return NULL;
    j->seg = ns, j->cap = cap;
  }
  io_seg *g = &j->seg[j->n++];
  memset(g, 0, sizeof *g);
  g->fd = fd, g->buf = buf, g->bytes = bytes, g->off = off;
  g->chunk0 = j->chunks;
  j->chunks += (bytes + CHUNK - 1) / CHUNK;
  return g;
}

/* Move every buffer of the batch; each segment's crc and err set. ENOMEM when out of memory. */
static int io_run(wh_ctx *ctx, io_batch *j) {
  free(j->chunk_seg), free(j->crc), free(j->err);
  j->chunk_seg = malloc(sizeof(int32_t) * (j->chunks + 1));
  j->crc = malloc(sizeof(uint32_t) * (j->chunks + 1));
  j->err = malloc(sizeof(int) * (j->chunks + 1));
  if (!j->chunk_seg || !j->crc || !j->err) return ENOMEM;
  for (int k = 0; k < j->n; k++)
    for (size_t c = j->seg[k].chunk0; c < j->seg[k].chunk0 + (j->seg[k].bytes + CHUNK - 1) / CHUNK; c++)
      j->chunk_seg[c] = k;
  atomic_store(&j->next, 0);
  int threads = wh__pool_size(ctx->pool);
  if (j->chunks > 1 && threads > 1)
    wh__parallel_for(ctx->pool, threads < (int)j->chunks ? threads : (int64_t)j->chunks, 1, io_worker, j);
  else
    io_worker(j, 0, 1);
  for (int k = 0; k < j->n; k++) {
    io_seg *g = &j->seg[k];
    size_t nc = (g->bytes + CHUNK - 1) / CHUNK;
    for (size_t c = 0; c < nc; c++) {
      size_t n = g->bytes - c * CHUNK < CHUNK ? g->bytes - c * CHUNK : CHUNK;
      if (!g->err) g->err = j->err[g->chunk0 + c];
      g->crc = c ? wh__crc32c_combine(g->crc, j->crc[g->chunk0 + c], n) : j->crc[g->chunk0 + c];
    }
  }
  return 0;
}

static void io_reset(io_batch *j) {
  j->n = 0;
  j->chunks = 0;
}

static void io_free(io_batch *j) {
  free(j->seg), free(j->chunk_seg), free(j->crc), free(j->err);
  memset(j, 0, sizeof *j);
}

static void hex8(char *out, uint32_t x) { snprintf(out, 9, "%08" PRIx32, x); }

static int parse_hex8(const char *s, uint32_t *out) {
  if (!s || strlen(s) != 8) return 0;
  uint32_t x = 0;
  for (int i = 0; i < 8; i++) {
    char c = s[i];
    int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    if (d < 0) return 0;
    x = x << 4 | (uint32_t)d;
  }
  *out = x;
  return 1;
}

/* ============================================================ base64 (the host's blob in JSON) */

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static char *b64_encode(const uint8_t *p, size_t n) {
  char *o = malloc((n + 2) / 3 * 4 + 1), *q = o;
  if (!o) return NULL;
  for (size_t i = 0; i < n; i += 3) {
    uint32_t x = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0) | (i + 2 < n ? p[i + 2] : 0);
    *q++ = b64[x >> 18 & 63];
    *q++ = b64[x >> 12 & 63];
    *q++ = i + 1 < n ? b64[x >> 6 & 63] : '=';
    *q++ = i + 2 < n ? b64[x & 63] : '=';
  }
  *q = 0;
  return o;
}

static int b64_val(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  return c == '+' ? 62 : c == '/' ? 63 : -1;
}

/* Decodes exactly n bytes from s into out (malloc'd); 0 when s is not their encoding. */
static int b64_decode(const char *s, size_t n, uint8_t **out) {
  size_t len = strlen(s), k = 0;
  *out = NULL;
  if (len != (n + 2) / 3 * 4) return 0;
  uint8_t *o = malloc(n + 1);
  if (!o) return 0;
  for (size_t i = 0; i < len; i += 4) {
    uint32_t x = 0;
    for (int j = 0; j < 4; j++) {
      int d = b64_val(s[i + j]);
      int pad = s[i + j] == '=' && i + 4 == len && (j == 3 ? n % 3 != 0 : j == 2 && n % 3 == 1);
      if (d < 0 && !pad) {
        free(o);
        return 0;
      }
      x = x << 6 | (uint32_t)(d < 0 ? 0 : d);
    }
    for (int j = 0; j < 3 && k < n; j++) o[k++] = (uint8_t)(x >> (16 - 8 * j));
  }
  *out = o;
  return 1;
}

/* ============================================================ agreeing across ranks */

/* Every rank's status; when one failed, all return the first failing rank's status and message.
 * Collective over the session's communicator (nothing to do in a single process). */
static wh_status agree(wh_session *s, const char *who, wh_status st) {
  if (!s->dist) return st;
  int n = wh_comm_size(s->comm), me = wh_comm_rank(s->comm);
  int32_t *all = calloc((size_t)n, sizeof(int32_t));
  if (!all) return fail(s->ctx, WH_ERR_OUT_OF_MEMORY, "%s: out of memory", who);
  all[me] = (int32_t)st;
  wh_status cs = wh_comm_allgather(s->comm, NULL, all, 1, NULL, WH_I32);
  if (cs != WH_OK) {
    free(all);
    if (st != WH_OK) return st; /* our own failure says more */
    return fail(s->ctx, cs, "%s: agreeing with the other ranks: %s", who, wh_last_error(s->ctx));
  }
  int bad = -1;
  for (int r = 0; r < n && bad < 0; r++)
    if (all[r] != WH_OK) bad = r;
  wh_status out = bad < 0 ? WH_OK : (wh_status)all[bad];
  free(all);
  if (bad < 0) return WH_OK;
  int32_t msg[256];
  memset(msg, 0, sizeof msg);
  if (me == bad) snprintf((char *)msg, sizeof msg, "%s", wh_last_error(s->ctx));
  cs = wh_comm_broadcast(s->comm, msg, 256, WH_I32, bad);
  ((char *)msg)[sizeof msg - 1] = 0;
  if (me != bad) {
    if (cs == WH_OK) wh__ctx_set_error(s->ctx, "%s: rank %d failed: %s", who, bad, (char *)msg);
    else wh__ctx_set_error(s->ctx, "%s: rank %d failed (its message was lost: %s)", who, bad, wh_last_error(s->ctx));
  }
  return out;
}

/* ============================================================ the `latest` marker */

static int name_ok(const char *nm) {
  if (!nm[0] || nm[0] == '.' || strlen(nm) >= NAME_CAP) return 0;
  for (const char *p = nm; *p; p++)
    if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-' ||
          *p == '_' || *p == '.'))
      return 0;
  return 1;
}

/* The step directory `latest` names: WH_OK and name, WH_ERR_NOT_FOUND (no marker), or
 * WH_ERR_CORRUPT / WH_ERR_IO with the message set. */
static wh_status read_latest(wh_ctx *ctx, const char *who, const char *dir, char *name) {
  char path[PATH_CAP];
  if (!join(path, sizeof path, dir, LATEST_FILE)) return fail(ctx, WH_ERR_INVALID_ARGUMENT, "%s: path too long", who);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return WH_ERR_NOT_FOUND;
    return fail(ctx, WH_ERR_IO, "%s: cannot open '%s': %s", who, path, strerror(errno));
  }
  char buf[256];
  ssize_t n = read(fd, buf, sizeof buf - 1);
  int e = errno;
  close(fd);
  if (n < 0) return fail(ctx, WH_ERR_IO, "%s: cannot read '%s': %s", who, path, strerror(e));
  buf[n] = 0;
  char nm[NAME_CAP + 8] = "", hx[16] = "";
  uint32_t want;
  if (sscanf(buf, "%70s %15s", nm, hx) != 2 || !name_ok(nm) || !parse_hex8(hx, &want) ||
      wh__crc32c(0, nm, strlen(nm)) != want)
    return fail(ctx, WH_ERR_CORRUPT, "%s: '%s' is not a valid marker (a step directory's name and its crc32c): "
                "\"%.60s\"", who, path, buf);
  snprintf(name, NAME_CAP, "%s", nm);
  return WH_OK;
}

static wh_status write_latest(wh_ctx *ctx, const char *who, const char *dir, const char *name) {
  char line[NAME_CAP + 16], hx[9];
  hex8(hx, wh__crc32c(0, name, strlen(name)));
  int n = snprintf(line, sizeof line, "%s %s\n", name, hx);
  return write_durable(ctx, who, dir, LATEST_FILE, line, (size_t)n);
}

/* Remove what a save of ours leaves in a step directory, then the directory if it is empty. */
static void remove_step_dir(const char *path) {
  DIR *d = opendir(path);
  if (!d) return;
  struct dirent *e;
  char f[PATH_CAP];
  while ((e = readdir(d))) {
    const char *nm = e->d_name;
    size_t l = strlen(nm);
    int ours = !strncmp(nm, "rank-", 5) || !strncmp(nm, INDEX_FILE, strlen(INDEX_FILE)) ||
               (l > 4 && !strcmp(nm + l - 4, ".tmp"));
    if (ours && join(f, sizeof f, path, nm)) unlink(f);
  }
  closedir(d);
  rmdir(path);
}

/* "step-<digits>[.<digits>]": the step, or -1. */
static int64_t step_of_name(const char *nm) {
  if (strncmp(nm, "step-", 5) != 0) return -1;
  const char *p = nm + 5;
  int64_t s = 0;
  if (*p < '0' || *p > '9') return -1;
  for (; *p >= '0' && *p <= '9'; p++) s = s * 10 + (*p - '0');
  if (*p == '.') {
    p++;
    if (*p < '0' || *p > '9') return -1;
    while (*p >= '0' && *p <= '9') p++;
  }
  return *p ? -1 : s;
}

typedef struct {
  char name[NAME_CAP];
  int64_t step;
} step_dir;

static int cmp_step_desc(const void *a, const void *b) {
  const step_dir *x = a, *y = b;
  if (x->step != y->step) return x->step > y->step ? -1 : 1;
  return strcmp(y->name, x->name);
}

/* Keep the `keep` newest complete checkpoints (latest among them); older step directories go.
 * Directories of later steps (a timeline the job went back from) are left to be replaced. */
static void prune(const char *dir, const char *latest, int keep) {
  if (keep <= 0) return;
  int64_t ls = step_of_name(latest);
  DIR *d = opendir(dir);
  if (!d) return;
  step_dir *list = NULL;
  int n = 0, cap = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    int64_t st = step_of_name(e->d_name);
    if (st < 0 || st > ls || !strcmp(e->d_name, latest) || strlen(e->d_name) >= NAME_CAP) continue;
    if (n == cap) {
      step_dir *nl = realloc(list, sizeof *list * (size_t)(cap = cap ? 2 * cap : 16));
      if (!nl) break;
      list = nl;
    }
    snprintf(list[n].name, NAME_CAP, "%s", e->d_name);
    list[n++].step = st;
  }
  closedir(d);
  qsort(list, (size_t)n, sizeof *list, cmp_step_desc);
  char path[PATH_CAP];
  for (int i = keep - 1; i < n; i++)
    if (join(path, sizeof path, dir, list[i].name)) remove_step_dir(path);
  free(list);
}

/* ============================================================ saving */

typedef struct wentry {
  int32_t v;
  sdesc d;
  char *key;
  size_t bytes;
} wentry;

static void layout_str(const wh_session *s, char *out, size_t cap) {
  const wh__place *pc = &s->prog.place;
  if (!s->dist) {
    snprintf(out, cap, "1 process");
    return;
  }
  snprintf(out, cap, "%d ranks: %d stage%s, %d replica%s of stage %d, tp %d%s", pc->size, pc->n_stages,
           pc->n_stages > 1 ? "s" : "", pc->n_replicas, pc->n_replicas > 1 ? "s" : "", pc->stage, pc->tp,
           pc->zero1 ? ", ZeRO-1" : "");
}

/* This rank's file: every slice it writes, checksummed on the way. On success *desc (owned) is the
 * JSON the index is built from: the file (or null), its size and header checksum, the slices. */
static wh_status write_rank_file(wh_session *s, const char *who, const char *stepdir, char **names, char **desc) {
  wh_graph *g = s->g;
  wh_ctx *ctx = s->ctx;
  int me = s->dist ? wh_comm_rank(s->comm) : 0, n = s->dist ? wh_comm_size(s->comm) : 1;
  wentry *we = calloc((size_t)g->n_values + 1, sizeof *we);
  wh__st_entry *se = calloc((size_t)g->n_values + 1, sizeof *se);
  json_object *root = json_object_new_object(), *slices = json_object_new_array();
  char *hdr = NULL, *stage = NULL;
  size_t stage_cap = 0;
  int ne = 0, fd = -1;
  io_batch io = {0};
  io.write = 1;
  wh_status st = WH_OK;
  char file[NAME_CAP], path[PATH_CAP], tmp[PATH_CAP + 8], msg[512];
  snprintf(file, sizeof file, "rank-%05d-of-%05d.safetensors", me, n);
  if (!we || !se || !root || !slices) {
    st = fail(ctx, WH_ERR_OUT_OF_MEMORY, "%s: out of memory", who);
    goto done;
  }
  uint64_t at = 0;
  for (int v = 0; v < g->n_values; v++) {
    const wh__value *gv = &g->values[v];
    if (!persistent(gv)) continue;
    wh__hold h = hold_of(s, v);
    if (h.kind == WH_HOLD_NONE || !h.writer || h.hi <= h.lo) continue;
    int nd;
    int64_t d[WH_MAX_DIMS];
    shape_of(gv, &nd, d);
    sdesc sd = desc_of(&h);
    size_t es = wh__dtype_size(gv->dtype), bytes = (size_t)(sd.hi - sd.lo) * es;
    if (!desc_ok(d, nd, &sd) || (int64_t)bytes != s->bytes[v]) {
      st = fail(ctx, WH_ERR_INTERNAL, "%s: '%s': this rank holds %lld bytes, its part in the program says %zu", who,
                names[v], (long long)s->bytes[v], bytes);
      goto done;
    }
    char key[1024];
    slice_key(key, sizeof key, names[v], d, nd, &sd);
    wentry *w = &we[ne];
    wh__st_entry *e = &se[ne];
    w->v = v, w->d = sd, w->bytes = bytes;
    if (!(w->key = strdup(key))) {
      st = fail(ctx, WH_ERR_OUT_OF_MEMORY, "%s: out of memory", who);
      goto done;
    }
    e->key = w->key;
    e->dtype = gv->dtype;
    e->ndim = entry_dims(d, nd, &sd, e->dims);
    e->begin = at, e->end = at + bytes;
    at += bytes;
    ne++;
  }
  json_object_object_add(root, "file", ne ? json_object_new_string(file) : NULL);
  if (ne == 0) goto describe; /* nothing of ours to write: no file */
  /* the header with placeholder checksums fixes where the data starts; "format": "pt" is what
   * PyTorch-side loaders (transformers) look for: the data is plain little-endian tensors */
  char stepstr[32], rankstr[32];
  snprintf(stepstr, sizeof stepstr, "%lld", (long long)s->steps);
  snprintf(rankstr, sizeof rankstr, "%d of %d", me, n);
  const char *meta[] = {"format", "pt", "libwhale.step", stepstr, "libwhale.rank", rankstr};
  size_t hl;
  if ((st = wh__st_header(se, ne, meta, 3, &hdr, &hl, msg, sizeof msg)) != WH_OK) {
    fail(ctx, st, "%s: %s", who, msg);
    goto done;
  }
  if (!join(path, sizeof path, stepdir, file)) {
    st = fail(ctx, WH_ERR_INVALID_ARGUMENT, "%s: path too long in '%s'", who, stepdir);
    goto done;
  }
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) < 0) {
    st = fail(ctx, WH_ERR_IO, "%s: cannot create '%s': %s", who, tmp, strerror(errno));
    goto done;
  }
  uint64_t data0 = 8 + hl;
  /* host memory: every entry in one batch over the threads; device memory: one at a time, each
   * through a host copy */
  for (int i = 0; i < ne; i++) {
    void *src = s->own[we[i].v];
    if (s->dev) {
      if (we[i].bytes > stage_cap) {
        free(stage);
        if (!(stage = malloc(we[i].bytes))) {
          stage_cap = 0;
          st = fail(ctx, WH_ERR_OUT_OF_MEMORY, "%s: out of memory staging '%s' (%zu bytes)", who, we[i].key,
                    we[i].bytes);
          goto done;
        }
        stage_cap = we[i].bytes;
      }
      if ((st = wh__cuda_copy(s->dev, stage, src, we[i].bytes, WH__D2H)) != WH_OK) {
        fail(ctx, st, "%s: '%s' from the device: %s", who, we[i].key, wh__cuda_error(s->dev));
        goto done;
      }
      src = stage;
    }
    if (!io_add(&io, fd, src, we[i].bytes, data0 + se[i].begin)) {
      st = fail(ctx, WH_ERR_OUT_OF_MEMORY, "%s: out of memory", who);
      goto done;
    }
    if (!s->dev && i + 1 < ne) continue;
    int e = io_run(ctx, &io);
    for (int k = 0; k < io.n && !e; k++) {
      e = io.seg[k].err;
      se[i - io.n + 1 + k].crc = io.seg[k].crc;
    }
    if (e) {
      st = fail(ctx, WH_ERR_IO, "%s: writing into '%s': %s", who, tmp, strerror(e < 0 ? EIO : e));
      goto done;
    }
    io_reset(&io);
  }
  free(hdr);
  hdr = NULL;
  size_t hl2;
  if ((st = wh__st_header(se, ne, meta, 3, &hdr, &hl2, msg, sizeof msg)) != WH_OK || hl2 != hl) {
    st = fail(ctx, st != WH_OK ? st : WH_ERR_INTERNAL, "%s: the final header of '%s': %s", who, tmp,
              st != WH_OK ? msg : "its length changed");
    goto done;
  }
  uint8_t len8[8];
  for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)hl >> (8 * i));
  int e = write_all(fd, len8, 8, 0);
  if (!e) e = write_all(fd, hdr, hl, 8);
  if (!e && fsync(fd) != 0) e = errno;
  if (close(fd) != 0 && !e) e = errno;
  fd = -1;
  if (!e && rename(tmp, path) != 0) e = errno;
  if (!e) e = fsync_dir(stepdir);
  if (e) {
    st = fail(ctx, WH_ERR_IO, "%s: writing '%s': %s", who, path, strerror(e));
    goto done;
  }
  char hx[9];
  hex8(hx, wh__crc32c(0, hdr, hl));
  json_object_object_add(root, "bytes", json_object_new_int64((int64_t)(data0 + at)));
  json_object_object_add(root, "data_bytes", json_object_new_int64((int64_t)at));
  json_object_object_add(root, "header_crc32c", json_object_new_string(hx));
  for (int i = 0; i < ne; i++) {
    const sdesc *sd = &we[i].d;
    json_object *o = json_object_new_object(), *fl = json_object_new_array();
    json_object_object_add(o, "tensor", json_object_new_string(names[we[i].v]));
    json_object_object_add(o, "key", json_object_new_string(we[i].key));
    if (sd->split) {
      json_object *sp = json_object_new_object();
      json_object_object_add(sp, "dim", json_object_new_int(sd->dim));
      json_object_object_add(sp, "groups", json_object_new_int(sd->groups));
      json_object_object_add(sp, "parts", json_object_new_int(sd->parts));
      json_object_object_add(sp, "index", json_object_new_int(sd->index));
      json_object_object_add(o, "split", sp);
    }
    json_object_array_add(fl, json_object_new_int64(sd->lo));
    json_object_array_add(fl, json_object_new_int64(sd->hi));
    json_object_object_add(o, "flat", fl);
    hex8(hx, se[i].crc);
    json_object_object_add(o, "crc32c", json_object_new_string(hx));
    json_object_array_add(slices, o);
  }
describe:
  json_object_object_add(root, "slices", slices);
  slices = NULL;
  const char *txt = json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
  if (!txt || !(*desc = strdup(txt))) st = fail(ctx, WH_ERR_OUT_OF_MEMORY, "%s: out of memory", who);
done:
  if (fd >= 0) {
    close(fd);
    unlink(tmp);
  }
  for (int i = 0; we && i < ne; i++) free(we[i].key);
  free(we), free(se), free(hdr), free(stage);
  io_free(&io);
  json_object_put(slices);
  json_object_put(root);
  return st;
}

static const char *role_name(wh__role r) { return r == WH_ROLE_PARAM ? "param" : "state"; }

/* Rank 0: the index from every rank's description, written durably. */
static wh_status write_index(wh_session *s, const char *who, const char *stepdir, char **names, char **descs, int n,
                             const wh_checkpoint_options *o) {
  wh_graph *g = s->g;
  wh_ctx *ctx = s->ctx;
  wh_status st = WH_OK;
  json_object *root = json_object_new_object(), *md = json_object_new_object(), *wm = json_object_new_object(),
              *files = json_object_new_object(), *tensors = json_object_new_object();
  json_object **parsed = calloc((size_t)n + 1, sizeof(json_object *));
  char *text = NULL, *meta64 = NULL;
  if (!root || !md || !wm || !files || !tensors || !parsed) {
    st = fail(ctx, WH_ERR_OUT_OF_MEMORY, "%s: out of memory for the index", who);
    goto done;
  }
  for (int v = 0; v < g->n_values; v++) {
    const wh__value *gv = &g->values[v];
    if (!persistent(gv)) continue;
    json_object *t = json_object_new_object(), *sh = json_object_new_array();
    for (int i = 0; i < gv->shape.ndim; i++) json_object_array_add(sh, json_object_new_int64(gv->shape.d[i]));
    json_object_object_add(t, "dtype", json_object_new_string(wh__st_dtype_name(gv->dtype) ? wh__st_dtype_name(gv->dtype) : "?"));
    json_object_object_add(t, "shape", sh);
    json_object_object_add(t, "role", json_object_new_string(role_name(gv->role)));
    json_object_object_add(t, "slices", json_object_new_array());
    json_object_object_add(tensors, names[v], t);
  }
  uint64_t total = 0;
  for (int r = 0; r < n; r++) {
    json_object *d = parsed[r] = json_tokener_parse(descs[r]), *f, *sl;
    if (!d || !json_object_object_get_ex(d, "slices", &sl)) {
      st = fail(ctx, WH_ERR_INTERNAL, "%s: rank %d's description of its file is not JSON", who, r);
      goto done;
    }
    if (!json_object_object_get_ex(d, "file", &f) || !f) continue;
    const char *fname = json_object_get_string(f);
    json_object *fe = json_object_new_object(), *x;
    if (json_object_object_get_ex(d, "bytes", &x)) json_object_object_add(fe, "bytes", json_object_get(x));
    if (json_object_object_get_ex(d, "header_crc32c", &x)) json_object_object_add(fe, "header_crc32c", json_object_get(x));
    if (json_object_object_get_ex(d, "data_bytes", &x)) total += (uint64_t)json_object_get_int64(x);
    json_object_object_add(files, fname, fe);
    for (size_t i = 0; i < json_object_array_length(sl); i++) {
      json_object *o = json_object_array_get_idx(sl, i), *tn, *t, *arr;
      if (!json_object_object_get_ex(o, "tensor", &tn) ||
          !json_object_object_get_ex(tensors, json_object_get_string(tn), &t) ||
          !json_object_object_get_ex(t, "slices", &arr)) {
        st = fail(ctx, WH_ERR_INTERNAL, "%s: rank %d wrote a slice of a tensor the graph lacks", who, r);
        goto done;
      }
      json_object *ns = json_object_new_object();
      json_object_object_add(ns, "file", json_object_new_string(fname));
      json_object_object_foreach(o, k, val) if (strcmp(k, "tensor") != 0) json_object_object_add(ns, k, json_object_get(val));
      json_object_array_add(arr, ns);
    }
  }
  /* weight_map as sharded HF checkpoints have it, for the tensors one file holds whole; start and
   * stop where a slice is a box of the tensor */
  json_object_object_foreach(tensors, tname, t) {
    json_object *arr, *sh;
    json_object_object_get_ex(t, "slices", &arr);
    json_object_object_get_ex(t, "shape", &sh);
    int nd = (int)json_object_array_length(sh);
    int64_t d[WH_MAX_DIMS];
    for (int i = 0; i < nd; i++) d[i] = json_object_get_int64(json_object_array_get_idx(sh, (size_t)i));
    for (size_t i = 0; i < json_object_array_length(arr); i++) {
      json_object *o = json_object_array_get_idx(arr, i), *x, *fl, *fn;
      sdesc sd = {0};
      if (json_object_object_get_ex(o, "split", &x)) {
        json_object *y;
        sd.split = 1;
        if (json_object_object_get_ex(x, "dim", &y)) sd.dim = json_object_get_int(y);
        if (json_object_object_get_ex(x, "groups", &y)) sd.groups = json_object_get_int(y);
        if (json_object_object_get_ex(x, "parts", &y)) sd.parts = json_object_get_int(y);
        if (json_object_object_get_ex(x, "index", &y)) sd.index = json_object_get_int(y);
      }
      json_object_object_get_ex(o, "flat", &fl);
      sd.lo = json_object_get_int64(json_object_array_get_idx(fl, 0));
      sd.hi = json_object_get_int64(json_object_array_get_idx(fl, 1));
      int whole_part = sd.lo == 0 && sd.hi == part_numel(d, nd, &sd);
      if (whole_part && (!sd.split || sd.groups == 1)) {
        json_object *a = json_object_new_array(), *b = json_object_new_array();
        for (int k = 0; k < nd; k++) {
          int64_t c = sd.split && k == sd.dim ? d[k] / sd.parts : d[k], s0 = sd.split && k == sd.dim ? c * sd.index : 0;
          json_object_array_add(a, json_object_new_int64(s0));
          json_object_array_add(b, json_object_new_int64(s0 + c));
        }
        json_object_object_add(o, "start", a);
        json_object_object_add(o, "stop", b);
      }
      if (!sd.split && whole_part && json_object_array_length(arr) == 1 && json_object_object_get_ex(o, "file", &fn))
        json_object_object_add(wm, tname, json_object_get(fn));
    }
  }
  char lay[160];
  layout_str(s, lay, sizeof lay);
  json_object_object_add(md, "total_size", json_object_new_int64((int64_t)total));
  json_object_object_add(md, "format", json_object_new_string(FORMAT_NAME));
  json_object_object_add(md, "version", json_object_new_int(FORMAT_VERSION));
  json_object_object_add(md, "step", json_object_new_int64(s->steps));
  /* the updates applied (fp16 skips some: the LR schedule and AdamW's bias correction count these)
   * and fp16's loss scale with its run of good steps */
  json_object_object_add(md, "optimizer_steps", json_object_new_int64(s->opt_steps));
  json_object_object_add(md, "loss_scale", json_object_new_double(s->loss_scale));
  json_object_object_add(md, "loss_scale_good_steps", json_object_new_int64(s->scale_good));
  json_object_object_add(md, "skipped_steps", json_object_new_int64(s->skipped));
  json_object_object_add(md, "ranks", json_object_new_int(s->dist ? wh_comm_size(s->comm) : 1));
  json_object_object_add(md, "layout", json_object_new_string(lay));
  json_object_object_add(md, "user_meta_bytes", json_object_new_int64((int64_t)o->meta_bytes));
  if (!(meta64 = b64_encode(o->meta, o->meta ? o->meta_bytes : 0))) {
    st = fail(ctx, WH_ERR_OUT_OF_MEMORY, "%s: out of memory for the index", who);
    goto done;
  }
  json_object_object_add(md, "user_meta", json_object_new_string(meta64));
  json_object_object_add(root, "metadata", md);
  json_object_object_add(root, "weight_map", wm);
  json_object_object_add(root, "files", files);
  json_object_object_add(root, "tensors", tensors);
  md = wm = files = tensors = NULL;
  /* the index's own checksum, over its text with these 8 digits as zeros: the last key */
  json_object_object_add(root, "index_crc32c", json_object_new_string("00000000"));
  const char *txt = json_object_to_json_string_ext(root, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE);
  size_t tl = txt ? strlen(txt) : 0;
  if (!txt || !(text = malloc(tl + 2))) {
    st = fail(ctx, WH_ERR_OUT_OF_MEMORY, "%s: out of memory for the index", who);
    goto done;
  }
  memcpy(text, txt, tl);
  text[tl++] = '\n';
  text[tl] = 0;
  char *z = strstr(text, "\"00000000\"");
  for (char *q = z; q && (q = strstr(q + 1, "\"00000000\""));) z = q; /* the last one */
  if (!z) {
    st = fail(ctx, WH_ERR_INTERNAL, "%s: the index lost its checksum field", who);
    goto done;
  }
  char hx[9];
  hex8(hx, wh__crc32c(0, text, tl));
  memcpy(z + 1, hx, 8);
  st = write_durable(ctx, who, stepdir, INDEX_FILE, text, tl);
done:
  for (int r = 0; parsed && r < n; r++) json_object_put(parsed[r]);
  free(parsed);
  json_object_put(md), json_object_put(wm), json_object_put(files), json_object_put(tensors);
  json_object_put(root);
  free(text), free(meta64);
  return st;
}

/* Rank 0: the root directory and this save's step directory (a stale one of the same name that
 * `latest` does not name is cleared first; if `latest` names it, the save takes a new name). */
static wh_status prepare_dir(wh_session *s, const char *who, const char *dir, char *name) {
  wh_ctx *ctx = s->ctx;
  if (mkdir(dir, 0755) != 0 && errno != EEXIST)
    return fail(ctx, WH_ERR_IO, "%s: cannot create '%s': %s", who, dir, strerror(errno));
  char latest[NAME_CAP] = "", path[PATH_CAP];
  wh_status st = read_latest(ctx, who, dir, latest);
  if (st != WH_OK && st != WH_ERR_NOT_FOUND) latest[0] = 0; /* a broken marker is replaced by this save */
  snprintf(name, NAME_CAP, "step-%08lld", (long long)s->steps);
  for (int k = 1; !strcmp(name, latest); k++) snprintf(name, NAME_CAP, "step-%08lld.%d", (long long)s->steps, k);
  if (!join(path, sizeof path, dir, name)) return fail(ctx, WH_ERR_INVALID_ARGUMENT, "%s: path too long: '%s'", who, dir);
  struct stat sb;
  if (stat(path, &sb) == 0) remove_step_dir(path);
  if (mkdir(path, 0755) != 0 && errno != EEXIST)
    return fail(ctx, WH_ERR_IO, "%s: cannot create '%s': %s", who, path, strerror(errno));
  int e = fsync_dir(dir);
  if (e) return fail(ctx, WH_ERR_IO, "%s: fsync of '%s': %s", who, dir, strerror(e));
  return WH_OK;
}

wh_status wh_checkpoint_save(wh_session *s, const char *dir, const wh_checkpoint_options *opts) {
  static const char *who = "wh_checkpoint_save";
  if (!s) return WH_ERR_INVALID_ARGUMENT;
  wh_ctx *ctx = s->ctx;
  wh_checkpoint_options o = WH_CHECKPOINT_OPTIONS_INIT;
  wh_status st = WH_OK;
  if (!dir || !dir[0]) st = fail(ctx, WH_ERR_INVALID_ARGUMENT, "%s: dir is NULL or empty", who);
  else if (wh__options_in(ctx, who, &o, opts, sizeof o) != WH_OK) st = WH_ERR_INVALID_ARGUMENT;
  else if ((o.meta_bytes && !o.meta) || o.meta_bytes > MAX_META || o.keep < 0)
    st = fail(ctx, WH_ERR_INVALID_ARGUMENT, "%s: metadata of %zu bytes at %p (at most %zu), keep %d (>= 0)", who,
              o.meta_bytes, o.meta, MAX_META, o.keep);
  else if (strlen(dir) > PATH_CAP - 2 * NAME_CAP)
    st = fail(ctx, WH_ERR_INVALID_ARGUMENT, "%s: directory path of %zu characters is too long", who, strlen(dir));
  if ((st = agree(s, who, st)) != WH_OK) return st;
  int n = s->dist ? wh_comm_size(s->comm) : 1, me = s->dist ? wh_comm_rank(s->comm) : 0;
  if (s->dist) { /* one step count for all */
    double *steps = calloc((size_t)n, sizeof(double));
    if (!steps) return fail(ctx, WH_ERR_OUT_OF_MEMORY, "%s: out of memory", who);
    steps[me] = (double)s->steps;
    st = wh_comm_allgather(s->comm, NULL, steps, 1, NULL, WH_F64);
    if (st != WH_OK) {
      free(steps);
      return fail(ctx, st, "%s: %s", who, wh_last_error(ctx));
    }
    for (int r = 1; r < n; r++)
      if (steps[r] != steps[0]) {
        st = fail(ctx, WH_ERR_STATE, "%s: rank %d has taken %.0f steps, rank 0 %.0f: every rank saves the same step",
                  who, r, steps[r], steps[0]);
        break;
      }
    free(steps);
    if (st != WH_OK) return st;
  }
  char **names = ckpt_names(s->g);
  if (!names) return agree(s, who, fail(ctx, WH_ERR_OUT_OF_MEMORY, "%s: out of memory", who));
  char name[NAME_CAP] = "", stepdir[PATH_CAP];
  int32_t nm32[NAME_CAP / 4];
  if (me == 0) st = prepare_dir(s, who, dir, name);
  if ((st = agree(s, who, st)) != WH_OK) goto out;
  if (s->dist) {
    memcpy(nm32, name, sizeof nm32);
    if ((st = wh_comm_broadcast(s->comm, nm32, NAME_CAP / 4, WH_I32, 0)) != WH_OK) {
      fail(ctx, st, "%s: %s", who, wh_last_error(ctx));
      goto out;
    }
    memcpy(name, nm32, sizeof name);
    name[NAME_CAP - 1] = 0;
  }
  join(stepdir, sizeof stepdir, dir, name);
  char *desc = NULL;
  st = write_rank_file(s, who, stepdir, names, &desc);
  if ((st = agree(s, who, st)) != WH_OK) {
    free(desc);
    goto out;
  }
  /* every rank's description to rank 0 (an all-gather: the communicator has no gather) */
  char **descs = calloc((size_t)n, sizeof(char *));
  int32_t *lens = calloc((size_t)n, sizeof(int32_t));
  size_t *counts = calloc((size_t)n, sizeof(size_t));
  int32_t *all = NULL;
  if (!descs || !lens || !counts) st = fail(ctx, WH_ERR_OUT_OF_MEMORY, "%s: out of memory", who);
  if (st == WH_OK && s->dist) {
    lens[me] = (int32_t)((strlen(desc) + 4) / 4);
    st = wh_comm_allgather(s->comm, NULL, lens, 1, NULL, WH_I32);
    size_t words = 0;
    for (int r = 0; r < n; r++) words += (size_t)lens[r], counts[r] = (size_t)lens[r];
    if (st == WH_OK && !(all = calloc(words + 1, sizeof(int32_t)))) st = WH_ERR_OUT_OF_MEMORY;
    if (st == WH_OK) {
      size_t off = 0;
      for (int r = 0; r < me; r++) off += (size_t)lens[r];
      memcpy(all + off, desc, strlen(desc) + 1);
      st = wh_comm_allgather(s->comm, NULL, all, 0, counts, WH_I32);
    }
    if (st != WH_OK) fail(ctx, st, "%s: gathering the ranks' descriptions: %s", who, wh_last_error(ctx));
    for (size_t r = 0, off = 0; st == WH_OK && r < (size_t)n; off += (size_t)lens[r], r++) {
      descs[r] = (char *)(all + off);
      descs[r][(size_t)lens[r] * 4 - 1] = 0;
    }
  } else if (st == WH_OK) {
    descs[0] = desc;
  }
  if (st == WH_OK && me == 0) {
    st = write_index(s, who, stepdir, names, descs, n, &o);
    if (st == WH_OK) st = write_latest(ctx, who, dir, name);
    if (st == WH_OK) prune(dir, name, o.keep);
  }
  st = agree(s, who, st);
  if (st == WH_OK)
    wh__log(ctx, WH_LOG_INFO, "checkpoint: step %lld saved in %s", (long long)s->steps, stepdir);
  free(all), free(counts), free(lens), free(descs), free(desc);
out:
  free_names(s->g, names);
  return st;
}

/* ============================================================ reading the index */

typedef struct islice {
  int file;        /* index into the files */
  const char *key; /* borrowed from the parsed index */
  sdesc d;
  uint32_t crc;
} islice;

typedef struct itensor {
  const char *name;
  wh_dtype dt;
  int nd;
  int64_t d[WH_MAX_DIMS];
  int role;
  islice *sl;
  int nsl;
  int32_t v; /* the graph's value (during a load) */
} itensor;

typedef struct ifile {
  const char *name;
  uint64_t bytes;
  uint32_t header_crc;
  /* opened during a load */
  int fd, fd_open, opened;
  wh__st_file st;
  uint64_t data0;
} ifile;

typedef struct cindex {
  json_object *root;
  char dir[PATH_CAP];  /* the step directory */
  char name[NAME_CAP]; /* its name */
  int64_t step;
  int64_t opt_steps, scale_good, skipped; /* -1: not recorded */
  double loss_scale;                      /* 0: not recorded */
  int ranks;
  const char *layout;
  uint8_t *meta;
  size_t meta_bytes;
  uint64_t total;
  itensor *t;
  int nt;
  ifile *f;
  int nf;
} cindex;

static void index_free(cindex *x) {
  for (int i = 0; x->t && i < x->nt; i++) free(x->t[i].sl);
  for (int i = 0; x->f && i < x->nf; i++) {
    if (x->f[i].fd_open) close(x->f[i].fd);
    wh__st_free(&x->f[i].st);
  }
  free(x->t), free(x->f), free(x->meta);
  json_object_put(x->root);
  memset(x, 0, sizeof *x);
}

/* Where the checkpoint of dir is: the step directory `latest` names, or dir itself when it is a
 * step directory (holds an index). */
static wh_status resolve(wh_ctx *ctx, const char *who, const char *dir, cindex *x) {
  char name[NAME_CAP], path[PATH_CAP];
  struct stat sb;
  if (strlen(dir) > PATH_CAP - 2 * NAME_CAP)
    return fail(ctx, WH_ERR_INVALID_ARGUMENT, "%s: directory path of %zu characters is too long", who, strlen(dir));
  if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
    return fail(ctx, WH_ERR_NOT_FOUND, "%s: no checkpoint: '%s' is not a directory", who, dir);
  wh_status st = read_latest(ctx, who, dir, name);
  if (st == WH_OK) {
    join(x->dir, sizeof x->dir, dir, name);
    snprintf(x->name, sizeof x->name, "%s", name);
    join(path, sizeof path, x->dir, INDEX_FILE);
    if (stat(path, &sb) != 0)
      return fail(ctx, WH_ERR_CORRUPT, "%s: '%s/%s' names %s, which has no %s", who, dir, LATEST_FILE, name,
                  INDEX_FILE);
    return WH_OK;
  }
  if (st != WH_ERR_NOT_FOUND) return st;
  join(path, sizeof path, dir, INDEX_FILE);
  if (stat(path, &sb) != 0)
    return fail(ctx, WH_ERR_NOT_FOUND, "%s: no checkpoint in '%s' (no '%s' marker, no %s): none was completed there",
                who, dir, LATEST_FILE, INDEX_FILE);
  snprintf(x->dir, sizeof x->dir, "%s", dir);
  const char *base = strrchr(dir, '/');
  snprintf(x->name, sizeof x->name, "%s", base && base[1] ? base + 1 : dir);
  return WH_OK;
}

static int get_int(json_object *o, const char *k, int64_t lo, int64_t hi, int64_t *out) {
  json_object *x;
  if (!json_object_object_get_ex(o, k, &x) || !json_object_is_type(x, json_type_int)) return 0;
  int64_t v = json_object_get_int64(x);
  if (v < lo || v > hi) return 0;
  *out = v;
  return 1;
}

static const char *get_str(json_object *o, const char *k) {
  json_object *x;
  return json_object_object_get_ex(o, k, &x) && json_object_is_type(x, json_type_string) ? json_object_get_string(x)
                                                                                         : NULL;
}

/* Read, check and parse the index of x->dir. Every failure is WH_ERR_CORRUPT (or IO / memory)
 * naming the file and what is wrong. */
static wh_status read_index(wh_ctx *ctx, const char *who, cindex *x) {
  char path[PATH_CAP + NAME_CAP];
  snprintf(path, sizeof path, "%s/%s", x->dir, INDEX_FILE);
  uint8_t *buf;
  size_t len;
  int err = 0;
  wh_status st = wh__read_file(path, &buf, &len, &err);
  if (st == WH_ERR_IO) return fail(ctx, st, "%s: cannot read '%s': %s", who, path, strerror(err));
  if (st != WH_OK) return fail(ctx, st, "%s: out of memory reading '%s'", who, path);
#define BAD(...)                                                  \
  do {                                                            \
    char m_[512];                                                 \
    snprintf(m_, sizeof m_, __VA_ARGS__);                         \
    st = fail(ctx, WH_ERR_CORRUPT, "%s: '%s': %s", who, path, m_); \
    goto done;                                                    \
  } while (0)
  if (len > MAX_INDEX) BAD("%zu bytes is more than an index holds", len);
  if (memchr(buf, 0, len)) BAD("holds a NUL byte");
  /* its own checksum first: the last "index_crc32c" field, over the text with its digits zeroed */
  {
    const char *keyname = "\"index_crc32c\"";
    char *k = NULL;
    for (char *q = (char *)buf; (q = memmem(q, len - (size_t)(q - (char *)buf), keyname, strlen(keyname))); q++) k = q;
    char *q = k ? k + strlen(keyname) : NULL;
    while (q && q < (char *)buf + len && (*q == ' ' || *q == ':')) q++;
    uint32_t want, got;
    char hx[9];
    if (!q || q + 10 > (char *)buf + len || q[0] != '"' || q[9] != '"') BAD("has no index_crc32c checksum");
    memcpy(hx, q + 1, 8);
    hx[8] = 0;
    if (!parse_hex8(hx, &want)) BAD("index_crc32c is not 8 hex digits");
    memset(q + 1, '0', 8);
    got = wh__crc32c(0, buf, len);
    memcpy(q + 1, hx, 8);
    if (got != want) BAD("fails its checksum (crc32c %08" PRIx32 ", index_crc32c says %08" PRIx32 ")", got, want);
  }
  json_tokener *tok = json_tokener_new();
  if (!tok) BAD("out of memory");
  x->root = json_tokener_parse_ex(tok, (const char *)buf, (int)len);
  enum json_tokener_error je = json_tokener_get_error(tok);
  json_tokener_free(tok);
  if (!x->root || je != json_tokener_success || !json_object_is_type(x->root, json_type_object))
    BAD("is not a JSON object: %s", json_tokener_error_desc(je));
  json_object *md, *files, *tensors;
  if (!json_object_object_get_ex(x->root, "metadata", &md) || !json_object_object_get_ex(x->root, "files", &files) ||
      !json_object_object_get_ex(x->root, "tensors", &tensors) || !json_object_is_type(md, json_type_object) ||
      !json_object_is_type(files, json_type_object) || !json_object_is_type(tensors, json_type_object))
    BAD("lacks metadata, files or tensors");
  const char *fmt = get_str(md, "format");
  int64_t ver, step, ranks, mb, total;
  if (!fmt || strcmp(fmt, FORMAT_NAME) != 0) BAD("metadata.format is not \"%s\"", FORMAT_NAME);
  if (!get_int(md, "version", 1, 1 << 30, &ver) || ver > FORMAT_VERSION)
    BAD("format version is not one this build reads (%d)", FORMAT_VERSION);
  if (!get_int(md, "step", 0, INT64_MAX, &step) || !get_int(md, "ranks", 1, 1 << 24, &ranks) ||
      !get_int(md, "user_meta_bytes", 0, (int64_t)MAX_META, &mb) || !get_int(md, "total_size", 0, INT64_MAX, &total))
    BAD("metadata lacks step, ranks, user_meta_bytes or total_size");
  x->step = step, x->ranks = (int)ranks, x->total = (uint64_t)total;
  x->opt_steps = x->scale_good = x->skipped = -1, x->loss_scale = 0;
  json_object *ls;
  if (json_object_object_get_ex(md, "optimizer_steps", &ls) &&
      (!get_int(md, "optimizer_steps", 0, step, &x->opt_steps) ||
       !get_int(md, "loss_scale_good_steps", 0, INT64_MAX, &x->scale_good) ||
       !get_int(md, "skipped_steps", 0, step, &x->skipped) || !json_object_object_get_ex(md, "loss_scale", &ls) ||
       !(json_object_is_type(ls, json_type_double) || json_object_is_type(ls, json_type_int)) ||
       !(json_object_get_double(ls) > 0) || !isfinite(json_object_get_double(ls))))
    BAD("metadata's optimizer steps, loss scale or skipped steps are not counts and a positive scale");
  if (x->opt_steps >= 0) x->loss_scale = json_object_get_double(ls);
  x->layout = get_str(md, "layout");
  const char *m64 = get_str(md, "user_meta");
  if (!m64 || !b64_decode(m64, (size_t)mb, &x->meta)) BAD("metadata.user_meta is not %lld bytes of base64", (long long)mb);
  x->meta_bytes = (size_t)mb;
  x->nf = json_object_object_length(files);
  x->nt = json_object_object_length(tensors);
  x->f = calloc((size_t)x->nf + 1, sizeof *x->f);
  x->t = calloc((size_t)x->nt + 1, sizeof *x->t);
  if (!x->f || !x->t) BAD("out of memory");
  int i = 0;
  json_object_object_foreach(files, fname, fo) {
    ifile *f = &x->f[i++];
    f->name = fname;
    int64_t by;
    if (!name_ok(fname)) BAD("file name '%.80s' is not a plain name in the step directory", fname);
    if (!json_object_is_type(fo, json_type_object) || !get_int(fo, "bytes", 8, INT64_MAX, &by) ||
        !parse_hex8(get_str(fo, "header_crc32c"), &f->header_crc))
      BAD("files.%s lacks bytes or header_crc32c", fname);
    f->bytes = (uint64_t)by;
  }
  i = 0;
  json_object_object_foreach(tensors, tname, to) {
    itensor *t = &x->t[i++];
    t->name = tname;
    json_object *sh, *sl;
    const char *dt = get_str(to, "dtype"), *role = get_str(to, "role");
    if (!json_object_is_type(to, json_type_object) || !dt || wh__st_dtype_of(dt) < 0 || !role ||
        (strcmp(role, "param") && strcmp(role, "state")) || !json_object_object_get_ex(to, "shape", &sh) ||
        !json_object_is_type(sh, json_type_array) || json_object_array_length(sh) > WH_MAX_DIMS ||
        !json_object_object_get_ex(to, "slices", &sl) || !json_object_is_type(sl, json_type_array))
      BAD("tensor '%.200s' lacks a dtype, role, shape or slices", tname);
    t->dt = (wh_dtype)wh__st_dtype_of(dt);
    t->role = !strcmp(role, "param") ? WH_ROLE_PARAM : WH_ROLE_STATE;
    t->nd = (int)json_object_array_length(sh);
    for (int k = 0; k < t->nd; k++) {
      json_object *dk = json_object_array_get_idx(sh, (size_t)k);
      if (!json_object_is_type(dk, json_type_int) || json_object_get_int64(dk) < 0 ||
          json_object_get_int64(dk) > ((int64_t)1 << 40))
        BAD("tensor '%.200s': dimension %d is not a size", tname, k);
      t->d[k] = json_object_get_int64(dk);
    }
    int64_t numel = numel_of(t->d, t->nd);
    if (numel > ((int64_t)1 << 40)) BAD("tensor '%.200s' is too large", tname);
    t->nsl = (int)json_object_array_length(sl);
    if (!(t->sl = calloc((size_t)t->nsl + 1, sizeof *t->sl))) BAD("out of memory");
    int64_t covered = 0;
    for (int k = 0; k < t->nsl; k++) {
      json_object *so = json_object_array_get_idx(sl, (size_t)k), *sp, *fl;
      islice *q = &t->sl[k];
      const char *fn = get_str(so, "file");
      q->key = get_str(so, "key");
      q->file = -1;
      for (int j = 0; fn && j < x->nf; j++)
        if (!strcmp(x->f[j].name, fn)) q->file = j;
      if (q->file < 0 || !q->key || !parse_hex8(get_str(so, "crc32c"), &q->crc) ||
          !json_object_object_get_ex(so, "flat", &fl) || !json_object_is_type(fl, json_type_array) ||
          json_object_array_length(fl) != 2)
        BAD("tensor '%.200s', slice %d: lacks a listed file, key, crc32c or flat range", tname, k);
      q->d.lo = json_object_get_int64(json_object_array_get_idx(fl, 0));
      q->d.hi = json_object_get_int64(json_object_array_get_idx(fl, 1));
      if (json_object_object_get_ex(so, "split", &sp)) {
        int64_t a, b, c, e;
        if (!get_int(sp, "dim", 0, WH_MAX_DIMS, &a) || !get_int(sp, "groups", 1, 1 << 20, &b) ||
            !get_int(sp, "parts", 1, 1 << 20, &c) || !get_int(sp, "index", 0, 1 << 20, &e))
          BAD("tensor '%.200s', slice %d: split lacks dim, groups, parts or index", tname, k);
        q->d.split = 1, q->d.dim = (int)a, q->d.groups = (int)b, q->d.parts = (int)c, q->d.index = (int)e;
      }
      if (!desc_ok(t->d, t->nd, &q->d)) BAD("tensor '%.200s', slice %d is not a slice of its shape", tname, k);
      covered += q->d.hi - q->d.lo;
    }
    /* the slices tile the tensor (or no rank held it): disjoint and as many elements as it has */
    if (t->nsl > 0 && covered != numel)
      BAD("tensor '%.200s': its slices hold %lld of its %lld elements", tname, (long long)covered, (long long)numel);
  }
  st = WH_OK;
done:
#undef BAD
  free(buf);
  return st;
}

static wh_status open_index(wh_ctx *ctx, const char *who, const char *dir, cindex *x) {
  memset(x, 0, sizeof *x);
  wh_status st = resolve(ctx, who, dir, x);
  if (st == WH_OK) st = read_index(ctx, who, x);
  if (st != WH_OK) index_free(x);
  return st;
}

wh_status wh_checkpoint_find(wh_ctx *ctx, const char *dir, wh_checkpoint_info *out) {
  static const char *who = "wh_checkpoint_find";
  if (!ctx) return WH_ERR_INVALID_ARGUMENT;
  if (!dir || !out || out->struct_size != sizeof *out)
    return fail(ctx, WH_ERR_INVALID_ARGUMENT, "%s: dir or out missing, or out->struct_size wrong", who);
  cindex x;
  wh_status st = open_index(ctx, who, dir, &x);
  if (st != WH_OK) return st;
  size_t ss = out->struct_size;
  memset(out, 0, ss);
  out->struct_size = ss;
  out->step = x.step;
  out->ranks = x.ranks;
  out->files = x.nf;
  out->tensors = x.nt;
  out->data_bytes = x.total;
  out->meta_bytes = x.meta_bytes;
  snprintf(out->name, sizeof out->name, "%s", x.name);
  snprintf(out->layout, sizeof out->layout, "%s", x.layout ? x.layout : "");
  index_free(&x);
  return WH_OK;
}

/* ============================================================ loading */

/* Open file f of the index once: its size, its header's checksum and the header itself. */
static wh_status open_file(wh_ctx *ctx, const char *who, cindex *x, ifile *f) {
  if (f->opened) return WH_OK;
  char path[PATH_CAP + NAME_CAP], msg[512];
  snprintf(path, sizeof path, "%s/%s", x->dir, f->name);
  if ((f->fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
    return fail(ctx, errno == ENOENT ? WH_ERR_CORRUPT : WH_ERR_IO, "%s: the checkpoint's file '%s' cannot be opened: %s",
                who, path, strerror(errno));
  f->fd_open = 1;
  struct stat sb;
  if (fstat(f->fd, &sb) != 0) return fail(ctx, WH_ERR_IO, "%s: '%s': %s", who, path, strerror(errno));
  if ((uint64_t)sb.st_size != f->bytes)
    return fail(ctx, WH_ERR_CORRUPT, "%s: '%s' is %lld bytes, the index says %" PRIu64 " (truncated or replaced)", who,
                path, (long long)sb.st_size, f->bytes);
  uint8_t l8[8];
  int e = read_all(f->fd, l8, 8, 0);
  uint64_t hl = 0;
  for (int i = 0; i < 8; i++) hl |= (uint64_t)l8[i] << (8 * i);
  if (e) return fail(ctx, e < 0 ? WH_ERR_CORRUPT : WH_ERR_IO, "%s: '%s': reading its header: %s", who, path,
                     e < 0 ? "the file ends" : strerror(e));
  if (hl > WH_ST_MAX_HEADER || hl + 8 > f->bytes)
    return fail(ctx, WH_ERR_CORRUPT, "%s: '%s': a header of %" PRIu64 " bytes in a file of %" PRIu64, who, path, hl,
                f->bytes);
  char *h = malloc(hl + 1);
  if (!h) return fail(ctx, WH_ERR_OUT_OF_MEMORY, "%s: '%s': out of memory for its header", who, path);
  if ((e = read_all(f->fd, h, hl, 8)) != 0) {
    free(h);
    return fail(ctx, e < 0 ? WH_ERR_CORRUPT : WH_ERR_IO, "%s: '%s': reading its header: %s", who, path,
                e < 0 ? "the file ends" : strerror(e));
  }
  uint32_t c = wh__crc32c(0, h, hl);
  if (c != f->header_crc) {
    free(h);
    return fail(ctx, WH_ERR_CORRUPT, "%s: '%s': its header fails its checksum (crc32c %08" PRIx32 ", the index says %08"
                PRIx32 ")", who, path, c, f->header_crc);
  }
  wh_status st = wh__st_parse(h, hl, f->bytes, &f->st, msg, sizeof msg);
  free(h);
  if (st != WH_OK) return fail(ctx, st, "%s: '%s': %s", who, path, msg);
  f->data0 = 8 + hl;
  f->opened = 1;
  return WH_OK;
}

typedef struct scatter {
  char *src, *dst;
  size_t es;
} scatter;

static void scatter_run(void *arg, int64_t src, int64_t dst, int64_t n) {
  scatter *c = arg;
  memcpy(c->dst + (size_t)dst * c->es, c->src + (size_t)src * c->es, (size_t)n * c->es);
}

typedef struct one_op {
  int64_t src, dst, n;
  int count;
} one_op;

static void count_run(void *arg, int64_t src, int64_t dst, int64_t n) {
  one_op *o = arg;
  if (o->count++ == 0) o->src = src, o->dst = dst, o->n = n;
}

/* The batch's reads done: every slice whole and matching its checksum, or the first that is not. */
static wh_status finish_reads(wh_ctx *ctx, const char *who, cindex *x, io_batch *io) {
  if (!io->n) return WH_OK;
  int e = io_run(ctx, io);
  wh_status st = e ? fail(ctx, WH_ERR_OUT_OF_MEMORY, "%s: out of memory", who) : WH_OK;
  for (int k = 0; k < io->n && st == WH_OK; k++) {
    const io_seg *g = &io->seg[k];
    const itensor *t = g->u1;
    const islice *q = g->u2;
    char path[PATH_CAP + NAME_CAP];
    snprintf(path, sizeof path, "%s/%s", x->dir, x->f[q->file].name);
    if (g->err)
      st = fail(ctx, g->err < 0 ? WH_ERR_CORRUPT : WH_ERR_IO, "%s: '%s': reading tensor '%s': %s", who, path, t->name,
                g->err < 0 ? "the file ends" : strerror(g->err));
    else if (g->crc != q->crc)
      st = fail(ctx, WH_ERR_CORRUPT, "%s: '%s': tensor '%s' (key '%s') fails its checksum (crc32c %08" PRIx32
                ", the index says %08" PRIx32 ")", who, path, t->name, q->key, g->crc, q->crc);
  }
  io_reset(io);
  return st;
}

/* Value v's part on this rank into dst (host memory of its local storage), from the slices of t: a
 * slice that is one run of the local storage joins the batch io, read straight into place with the
 * others (finish_reads checks it); any other is read now through a buffer and scattered. */
static wh_status load_value(wh_session *s, const char *who, cindex *x, itensor *t, const wh__hold *h, char *dst,
                            io_batch *io) {
  wh_ctx *ctx = s->ctx;
  sdesc need = desc_of(h);
  size_t es = wh__dtype_size(t->dt);
  runs rn = {0}, rs = {0};
  char *tmp = NULL;
  io_batch one = {0};
  wh_status st = runs_of(t->d, t->nd, &need, &rn);
  if (st != WH_OK) return fail(ctx, st, "%s: out of memory", who);
  if (t->nsl == 0 && need.hi > need.lo)
    wh__log(ctx, WH_LOG_WARN, "%s: no rank of the saving layout held '%s' (nothing read it): it keeps its value",
            who, t->name);
  for (int k = 0; k < t->nsl && st == WH_OK; k++) {
    islice *q = &t->sl[k];
    if ((st = runs_of(t->d, t->nd, &q->d, &rs)) != WH_OK) {
      fail(ctx, st, "%s: out of memory", who);
      break;
    }
    one_op op = {0};
    if (meet(&rs, &rn, count_run, &op) == 0) continue; /* nothing this rank needs */
    ifile *f = &x->f[q->file];
    if ((st = open_file(ctx, who, x, f)) != WH_OK) break;
    const wh__st_entry *e = wh__st_find(&f->st, q->key);
    int64_t ed[WH_MAX_DIMS];
    int end = entry_dims(t->d, t->nd, &q->d, ed), same = e && e->dtype == t->dt && e->ndim == end;
    for (int i = 0; same && i < end; i++) same = e->dims[i] == ed[i];
    if (!same) {
      st = fail(ctx, WH_ERR_CORRUPT, "%s: '%s/%s': tensor '%s' (key '%s') is %s in the file, not as the index "
                "describes it", who, x->dir, f->name, t->name, q->key, e ? "shaped otherwise" : "missing");
      break;
    }
    size_t bytes = (size_t)(e->end - e->begin);
    int direct = op.count == 1 && op.src == 0 && op.n == q->d.hi - q->d.lo;
    io_batch *b = direct ? io : &one;
    char *into = dst + (size_t)op.dst * es;
    if (!direct) {
      free(tmp);
      if (!(into = tmp = malloc(bytes + 1))) {
        st = fail(ctx, WH_ERR_OUT_OF_MEMORY, "%s: out of memory reading '%s' (%zu bytes)", who, q->key, bytes);
        break;
      }
    }
    io_seg *g = io_add(b, f->fd, into, bytes, f->data0 + e->begin);
    if (!g) {
      st = fail(ctx, WH_ERR_OUT_OF_MEMORY, "%s: out of memory", who);
      break;
    }
    g->u1 = t, g->u2 = q;
    if (direct) continue;
    if ((st = finish_reads(ctx, who, x, &one)) == WH_OK) {
      scatter c = {tmp, dst, es};
      meet(&rs, &rn, scatter_run, &c);
    }
  }
  free(rn.r), free(rs.r), free(tmp);
  io_free(&one);
  return st;
}

static const char *dims_str(const int64_t *d, int nd, char *buf, size_t cap) {
  size_t k = (size_t)snprintf(buf, cap, "[");
  for (int i = 0; i < nd && k < cap; i++) k += (size_t)snprintf(buf + k, cap - k, i ? ",%lld" : "%lld", (long long)d[i]);
  if (k < cap) snprintf(buf + k, cap - k, "]");
  return buf;
}

static int cmp_run(const void *a, const void *b) {
  const run *x = a, *y = b;
  return x->w < y->w ? -1 : x->w > y->w;
}

/* Whether t's slices are disjoint (their element counts already add up to the tensor's): all
 * their runs sorted, none reaching into the next. 0 disjoint, 1 overlapping, 2 out of memory or
 * sliced too finely to check. */
static int slices_overlap(const itensor *t) {
  runs all = {0}, one = {0};
  int bad = 0;
  for (int k = 0; k < t->nsl && !bad; k++) {
    if (runs_of(t->d, t->nd, &t->sl[k].d, &one) != WH_OK) bad = 2;
    for (int64_t i = 0; !bad && i < one.n; i++) {
      if (all.n >= MAX_RUNS) bad = 2;
      else push(&all, one.r[i].w, one.r[i].n, (int64_t)k << 40 | all.n); /* l: never merges two slices' runs */
      if (all.oom) bad = 2;
    }
  }
  if (!bad) {
    qsort(all.r, (size_t)all.n, sizeof(run), cmp_run);
    for (int64_t i = 1; i < all.n && !bad; i++) bad = all.r[i].w < all.r[i - 1].w + all.r[i - 1].n;
  }
  free(all.r), free(one.r);
  return bad;
}

/* The index's tensors against the graph's parameters and optimizer state, both ways; then each
 * tensor's slices checked to tile it (its shape now the graph's). */
static wh_status match_graph(wh_session *s, const char *who, cindex *x, char **names) {
  wh_graph *g = s->g;
  wh_ctx *ctx = s->ctx;
  for (int i = 0; i < x->nt; i++) x->t[i].v = -1;
  for (int v = 0; v < g->n_values; v++) {
    const wh__value *gv = &g->values[v];
    if (!persistent(gv)) continue;
    itensor *t = NULL;
    for (int i = 0; i < x->nt && !t; i++)
      if (!strcmp(x->t[i].name, names[v])) t = &x->t[i];
    char a[96], b[96];
    int nd;
    int64_t d[WH_MAX_DIMS];
    shape_of(gv, &nd, d);
    if (!t)
      return fail(ctx, WH_ERR_NOT_FOUND, "%s: '%s' has no tensor '%s' (%s %s %s of this graph), among its %d: a "
                  "checkpoint of another graph or optimizer?", who, x->dir, names[v], role_name(gv->role),
                  wh__dtype_name(gv->dtype), dims_str(d, nd, a, sizeof a), x->nt);
    int same = t->nd == nd && t->dt == gv->dtype;
    for (int i = 0; same && i < nd; i++) same = t->d[i] == d[i];
    if (!same)
      return fail(ctx, WH_ERR_SHAPE, "%s: '%s': tensor '%s' is %s %s in the checkpoint, %s %s in this graph", who,
                  x->dir, names[v], wh__st_dtype_name(t->dt), dims_str(t->d, t->nd, a, sizeof a),
                  wh__st_dtype_name(gv->dtype), dims_str(d, nd, b, sizeof b));
    if (t->role != (int)gv->role)
      return fail(ctx, WH_ERR_SHAPE, "%s: '%s': tensor '%s' is %s in the checkpoint, %s in this graph", who, x->dir,
                  names[v], role_name((wh__role)t->role), role_name(gv->role));
    t->v = v;
  }
  for (int i = 0; i < x->nt; i++)
    if (x->t[i].v < 0)
      return fail(ctx, WH_ERR_NOT_FOUND, "%s: '%s' holds tensor '%s', which this graph lacks: a checkpoint of another "
                  "graph or optimizer?", who, x->dir, x->t[i].name);
  for (int i = 0; i < x->nt; i++) {
    int bad = x->t[i].nsl > 1 ? slices_overlap(&x->t[i]) : 0;
    if (bad)
      return fail(ctx, bad == 1 ? WH_ERR_CORRUPT : WH_ERR_OUT_OF_MEMORY, "%s: '%s/%s': tensor '%s': its slices %s", who,
                  x->dir, INDEX_FILE, x->t[i].name, bad == 1 ? "overlap" : "are too many to check (out of memory)");
  }
  return WH_OK;
}

static wh_status load_local(wh_session *s, const char *who, const char *dir, void *meta, size_t cap,
                            size_t *meta_bytes, int64_t *step) {
  wh_ctx *ctx = s->ctx;
  cindex x;
  wh_status st = open_index(ctx, who, dir, &x);
  if (st != WH_OK) return st;
  char **names = ckpt_names(s->g);
  char *stage = NULL;
  io_batch io = {0};
  if (!names) {
    st = fail(ctx, WH_ERR_OUT_OF_MEMORY, "%s: out of memory", who);
    goto done;
  }
  if ((st = match_graph(s, who, &x, names)) != WH_OK) goto done;
  if (meta && x.meta_bytes > cap) {
    st = fail(ctx, WH_ERR_INVALID_ARGUMENT, "%s: '%s' holds %zu bytes of metadata, the buffer %zu", who, x.dir,
              x.meta_bytes, cap);
    goto done;
  }
  /* nothing has changed yet: from here on a failure leaves the state partly loaded */
  for (int i = 0; i < x.nt && st == WH_OK; i++) {
    itensor *t = &x.t[i];
    wh__hold h = hold_of(s, t->v);
    if (h.kind == WH_HOLD_NONE || h.hi <= h.lo) continue;
    size_t bytes = (size_t)(h.hi - h.lo) * wh__dtype_size(t->dt);
    if ((int64_t)bytes != s->bytes[t->v]) {
      st = fail(ctx, WH_ERR_INTERNAL, "%s: '%s': this rank holds %lld bytes, its part in the program says %zu", who,
                t->name, (long long)s->bytes[t->v], bytes);
      break;
    }
    char *dst = s->own[t->v];
    if (s->dev) {
      free(stage);
      if (!(stage = malloc(bytes + 1))) {
        st = fail(ctx, WH_ERR_OUT_OF_MEMORY, "%s: out of memory staging '%s'", who, t->name);
        break;
      }
      if (t->nsl == 0 && (st = wh__cuda_copy(s->dev, stage, dst, bytes, WH__D2H)) != WH_OK) break;
      dst = stage;
    }
    st = load_value(s, who, &x, t, &h, dst, &io);
    if (st == WH_OK && s->dev) st = finish_reads(ctx, who, &x, &io); /* the staging copy is reused */
    if (st == WH_OK && s->dev && (st = wh__cuda_copy(s->dev, s->own[t->v], stage, bytes, WH__H2D)) != WH_OK)
      fail(ctx, st, "%s: '%s' to the device: %s", who, t->name, wh__cuda_error(s->dev));
  }
  if (st == WH_OK) st = finish_reads(ctx, who, &x, &io);
  if (st == WH_OK) {
    if (meta && x.meta_bytes) memcpy(meta, x.meta, x.meta_bytes);
    if (meta_bytes) *meta_bytes = x.meta_bytes;
    *step = x.step;
    s->opt_steps = x.opt_steps >= 0 ? x.opt_steps : x.step;
    if (x.opt_steps >= 0) s->skipped = x.skipped;
    if (x.opt_steps >= 0 && s->mixed == WH_F16) s->loss_scale = x.loss_scale, s->scale_good = x.scale_good;
  }
done:
  io_free(&io);
  free(stage);
  free_names(s->g, names);
  index_free(&x);
  return st;
}

wh_status wh_checkpoint_load(wh_session *s, const char *dir, void *meta, size_t meta_cap, size_t *meta_bytes) {
  static const char *who = "wh_checkpoint_load";
  if (!s) return WH_ERR_INVALID_ARGUMENT;
  wh_status st = WH_OK;
  int64_t step = 0;
  if (!dir || !dir[0]) st = fail(s->ctx, WH_ERR_INVALID_ARGUMENT, "%s: dir is NULL or empty", who);
  else st = load_local(s, who, dir, meta, meta_cap, meta_bytes, &step);
  if ((st = agree(s, who, st)) != WH_OK) return st;
  s->steps = step;
  wh__log(s->ctx, WH_LOG_INFO, "checkpoint: resumed at step %lld from %s", (long long)step, dir);
  return WH_OK;
}
