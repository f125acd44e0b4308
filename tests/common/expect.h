/* expect.h - the single-process tests' counting: EXPECT(cond, fmt, ...) counts a pass, or prints
 * "FAIL file:line: message" and counts a failure; main reports passed / failed at the end. */
#ifndef WH_TESTS_EXPECT_H
#define WH_TESTS_EXPECT_H

#include <stdio.h>

static int passed, failed;

#define EXPECT(cond, ...)                         \
  do {                                            \
    if (cond) {                                   \
      passed++;                                   \
    } else {                                      \
      failed++;                                   \
      printf("FAIL %s:%d: ", __FILE__, __LINE__); \
      printf(__VA_ARGS__);                        \
      printf("\n");                               \
    }                                             \
  } while (0)

#endif
