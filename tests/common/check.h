/* check.h - the one way tests (and the benchmarks' sanity checks) assert: EXPECT counts a pass or a
 * failure and goes on, EXPECT_OK does so for a libwhale call, CHECK ends the case on a failed call.
 *
 * EXPECT_SAY also prints what passed.
 * EXPECT_OK and CHECK print wh_last_error(ctx) of a `ctx` in scope (a wh_ctx *, may be NULL).
 * Failures print "FAIL file:line: message", prefixed by "rank N " once wt_rank is set (multi-rank
 * tests set it when they know it). The counters are the runner's (runner.h), which prints them. */
#ifndef WH_TESTS_CHECK_H
#define WH_TESTS_CHECK_H

#include "whale.h"

extern int wt_passed, wt_failed, wt_rank;

/* Count a failure and print it (printf-style message). */
void wt_fail_at(const char *file, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Count a pass or a failure; print either ("ok   message" or the FAIL line): for tests whose
 * passing lines carry what was measured. */
void wt_expect_say(int ok, const char *file, int line, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Count a failure, print it, and end the current case (runner.h); outside a case, or in a suite
 * whose cases must not be abandoned alone (ranks that wait for each other), end the process (after
 * the counts line, in a test). */
_Noreturn void wt_abort_at(const char *file, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* The message of a failed call: the libwhale text of the context when there is one. */
const char *wt_last_error(wh_ctx *ctx);

#define EXPECT(cond, ...)                                \
  do {                                                   \
    if (cond)                                            \
      wt_passed++;                                       \
    else                                                 \
      wt_fail_at(__FILE__, __LINE__, __VA_ARGS__);       \
  } while (0)

#define EXPECT_SAY(cond, ...) wt_expect_say(!!(cond), __FILE__, __LINE__, __VA_ARGS__)

#define EXPECT_OK(call)                                                                              \
  do {                                                                                               \
    wh_status s_ = (call);                                                                           \
    EXPECT(s_ == WH_OK, "%s: %s: %s", #call, wh_status_str(s_), s_ == WH_OK ? "" : wt_last_error(ctx)); \
  } while (0)

/* A call the rest of the case depends on: success is not counted (it checks nothing by itself). */
#define CHECK(call)                                                                                         \
  do {                                                                                                      \
    wh_status s_ = (call);                                                                                  \
    if (s_ != WH_OK) wt_abort_at(__FILE__, __LINE__, "%s: %s: %s", #call, wh_status_str(s_), wt_last_error(ctx)); \
  } while (0)

#endif
