/* expect.h - the tests' counting: EXPECT(cond, fmt, ...) counts a pass, or prints
 * "FAIL file:line: message" and counts a failure; main reports passed / failed at the end.
 * A multi-rank test sets rank_ once it knows it, and its failures then start "rank N ". */
#ifndef WH_TESTS_EXPECT_H
#define WH_TESTS_EXPECT_H

#include <stdio.h>

static int passed, failed, rank_ = -1;

#define EXPECT(cond, ...)                         \
  do {                                            \
    if (cond) {                                   \
      passed++;                                   \
    } else {                                      \
      failed++;                                   \
      if (rank_ >= 0) printf("rank %d ", rank_);  \
      printf("FAIL %s:%d: ", __FILE__, __LINE__); \
      printf(__VA_ARGS__);                        \
      printf("\n");                               \
      fflush(stdout);                             \
    }                                             \
  } while (0)

#endif
