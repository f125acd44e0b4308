/* strbuf.h - a growing heap string for dumps and explanations: nothing is ever truncated, and an
 * allocation failure is remembered so the caller reports it once at the end. */
#ifndef WH_STRBUF_H
#define WH_STRBUF_H

#include <stddef.h>

typedef struct wh__sb {
  char *s;
  size_t n, cap;
  int oom;
} wh__sb;

void wh__sb_printf(wh__sb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A quoted string with ", \ and control bytes escaped (valid in text and in DOT). */
void wh__sb_quoted(wh__sb *b, const char *s);

#endif
