/* runner.h - one way to register a test's cases and run them: a binary lists its cases with --list
 * and runs some with --case NAME (repeatable; a shell pattern such as 'attention*' selects every
 * case it matches), all of them otherwise, and ends with its counts line.
 *
 *   static const wt_case cases[] = {{"round_trip", round_trip, NULL}, ...};
 *   int main(int argc, char **argv) { return wt_main(&suite, cases, WT_COUNT(cases), argc, argv); }
 *
 * Exit status: 0 when nothing failed, 1 when something did, 77 (meson's skip) when every case run
 * was skipped, 2 for a bad command line. */
#ifndef WH_TESTS_RUNNER_H
#define WH_TESTS_RUNNER_H

#include "check.h"

typedef struct wt_case {
  const char *name;              /* what --list prints and --case takes */
  void (*run)(const void *arg);  /* checks with EXPECT / CHECK (check.h) */
  const void *arg;               /* handed to run, borrowed */
} wt_case;

typedef struct wt_suite {
  const char *label; /* the counts line's "LABEL: N passed, N failed"; wt_label() may set it later */
  /* Optional: before the first case, with the arguments the runner did not take; returns 0 to go
   * on, or an exit status: 77 skips the binary, any other counts as a failure (the counts line
   * follows). Not called by --list. */
  int (*setup)(int argc, char **argv);
  void (*teardown)(void); /* optional: after the last case (when setup returned 0) */
  /* Optional: turn this process's counts {passed, failed} into the whole run's (sum over ranks),
   * which rank 0 prints; without it every process prints its own (with its rank once set). */
  void (*totals)(int counts[2]);
  /* Ranks of an MPI job run each case together: a rank that abandons one alone would leave the
   * others waiting, so a CHECK failure ends the process (mpirun then ends the others). */
  int check_ends_process;
} wt_suite;

#define WT_COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

int wt_main(const wt_suite *suite, const wt_case *cases, int n, int argc, char **argv);

/* The counts line's label, formatted (e.g. with the number of ranks, once known). */
void wt_label(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Mark the running case skipped (why it cannot run here); the case then returns. */
void wt_skip(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Whether every case of the binary is being run (checks over all cases, such as coverage, need it). */
int wt_running_all(void);

/* The name of the case running now (NULL between cases). */
const char *wt_current(void);

#endif
