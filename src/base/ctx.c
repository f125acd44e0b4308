/* ctx.c - the context's base: status strings, the last error, logging, options checking and the
 * destroy hooks. The public lifecycle (wh_ctx_create) is the runtime's (runtime/context.c). */
#include "ctx.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *wh_status_str(wh_status s) {
  switch (s) {
    case WH_OK: return "ok";
    case WH_ERR_INVALID_ARGUMENT: return "invalid argument";
    case WH_ERR_SHAPE: return "shape mismatch";
    case WH_ERR_DTYPE: return "dtype mismatch";
    case WH_ERR_POISONED: return "graph poisoned by an earlier error";
    case WH_ERR_STATE: return "call does not fit the object's state";
    case WH_ERR_OUT_OF_MEMORY: return "out of memory";
    case WH_ERR_IO: return "i/o error";
    case WH_ERR_CORRUPT: return "corrupt or invalid data";
    case WH_ERR_UNSUPPORTED: return "unsupported";
    case WH_ERR_NOT_FOUND: return "not found";
    case WH_ERR_COMM: return "communication error";
    case WH_ERR_TIMEOUT: return "timed out";
    case WH_ERR_INTERNAL: return "internal error";
  }
  return "unknown status";
}

void wh__ctx_set_error(wh_ctx *ctx, const char *fmt, ...) {
  if (!ctx) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(ctx->err, sizeof ctx->err, fmt, ap);
  va_end(ap);
  wh__log(ctx, WH_LOG_ERROR, "%s", ctx->err);
}

void wh__log(const wh_ctx *ctx, wh_log_level level, const char *fmt, ...) {
  if (!ctx || !ctx->log_fn || level > ctx->log_level) return;
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  ctx->log_fn(level, buf, ctx->log_user);
}

const char *wh_last_error(const wh_ctx *ctx) { return ctx ? ctx->err : "no context"; }
int wh_ctx_rank(const wh_ctx *ctx) { return ctx ? ctx->rank : 0; }
int wh_ctx_size(const wh_ctx *ctx) { return ctx ? ctx->size : 1; }
int wh_ctx_threads(const wh_ctx *ctx) { return ctx ? ctx->num_threads : 1; }

wh_status wh__options_in(wh_ctx *ctx, const char *who, void *dst, const void *src, size_t size) {
  if (!src) return WH_OK;
  size_t given;
  memcpy(&given, src, sizeof given);
  if (given != size) {
    wh__ctx_set_error(ctx, "%s: options struct_size %zu, expected %zu", who, given, size);
    return WH_ERR_INVALID_ARGUMENT;
  }
  memcpy(dst, src, size);
  return WH_OK;
}

wh_ctx *wh__ctx_new(const wh_ctx_options *o) {
  wh_ctx *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  c->num_threads = o->num_threads;
  if (c->num_threads == 0) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    c->num_threads = n > 0 ? (int)n : 1;
  }
  c->log_fn = o->log_fn;
  c->log_user = o->log_user;
  c->log_level = o->log_level;
  c->rank = 0;
  c->size = 1;
  if (wh__pool_create(c->num_threads, &c->pool) != WH_OK) {
    free(c);
    return NULL;
  }
  return c;
}

void wh__ctx_free(wh_ctx *ctx) {
  if (!ctx) return;
  for (int i = ctx->n_hooks - 1; i >= 0; i--) ctx->hooks[i].fn(ctx, ctx->hooks[i].arg);
  wh__pool_destroy(ctx->pool);
  free(ctx);
}

wh_status wh__ctx_on_destroy(wh_ctx *ctx, wh__ctx_hook fn, void *arg) {
  for (int i = 0; i < ctx->n_hooks; i++)
    if (ctx->hooks[i].fn == fn && ctx->hooks[i].arg == arg) return WH_OK;
  if (ctx->n_hooks == WH_CTX_MAX_HOOKS) return WH_ERR_INTERNAL;
  ctx->hooks[ctx->n_hooks].fn = fn;
  ctx->hooks[ctx->n_hooks].arg = arg;
  ctx->n_hooks++;
  return WH_OK;
}
