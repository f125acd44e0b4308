/* memplan.h - static memory planning: place buffers with known lifetimes in one arena. */
#ifndef WH_MEMPLAN_H
#define WH_MEMPLAN_H

#include <stdint.h>

#define WH_ALIGN 64

/* n buffers of size[i] bytes alive over schedule steps [first[i], last[i]] (inclusive).
 * Writes offset[i] (aligned to WH_ALIGN) so that buffers alive at the same step never overlap;
 * returns the arena size, or -1 when out of memory. Buffers of size 0 get offset 0. */
int64_t wh__memplan(int n, const int64_t *size, const int *first, const int *last, int64_t *offset);

#endif
