/* clock.h - the one clock: monotonic seconds, for deadlines, profiles and benchmarks inside the
 * library. */
#ifndef WH_CLOCK_H
#define WH_CLOCK_H

/* Seconds on CLOCK_MONOTONIC (an arbitrary origin; differences only). */
double wh__now(void);

#endif
