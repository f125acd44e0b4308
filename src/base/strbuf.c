/* strbuf.c - see strbuf.h. */
#include "strbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

void wh__sb_printf(wh__sb *b, const char *fmt, ...) {
  if (b->oom) return;
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(b->s ? b->s + b->n : NULL, b->s ? b->cap - b->n : 0, fmt, ap);
    va_end(ap);
    if (k < 0) {
      b->oom = 1;
      return;
    }
    if (b->s && b->n + (size_t)k < b->cap) {
      b->n += (size_t)k;
      return;
    }
    size_t nc = b->cap ? b->cap * 2 : 1024;
    while (nc < b->n + (size_t)k + 1) nc *= 2;
    char *q = realloc(b->s, nc);
    if (!q) {
      b->oom = 1;
      return;
    }
    b->s = q;
    b->cap = nc;
  }
}

void wh__sb_quoted(wh__sb *b, const char *s) {
  wh__sb_printf(b, "\"");
  for (const unsigned char *c = (const unsigned char *)(s ? s : ""); *c; c++) {
    if (*c == '"' || *c == '\\') wh__sb_printf(b, "\\%c", *c);
    else if (*c < 0x20 || *c == 0x7f) wh__sb_printf(b, "\\\\x%02x", *c);
    else wh__sb_printf(b, "%c", *c);
  }
  wh__sb_printf(b, "\"");
}
