/* runner.c - the counters and failure paths of check.h and the case runner of runner.h: selects
 * cases by name, runs each under a jump target that CHECK returns to, and prints the counts line. */
#include "runner.h"

#include <fnmatch.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int wt_passed, wt_failed, wt_rank = -1;

static char label_[128] = "tests";
static const wt_suite *suite_;
static const char *current_;
static jmp_buf case_jmp_;
static int skipped_, ran_all_;

const char *wt_last_error(wh_ctx *ctx) { return ctx ? wh_last_error(ctx) : "(no context)"; }

static void vfail(const char *file, int line, const char *fmt, va_list ap) {
  wt_failed++;
  if (wt_rank >= 0) printf("rank %d ", wt_rank);
  printf("FAIL %s:%d: ", file, line);
  vprintf(fmt, ap);
  printf("\n");
  fflush(stdout);
}

void wt_fail_at(const char *file, int line, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vfail(file, line, fmt, ap);
  va_end(ap);
}

void wt_expect_say(int ok, const char *file, int line, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  if (ok) {
    wt_passed++;
    if (wt_rank >= 0) printf("rank %d ", wt_rank);
    printf("ok   ");
    vprintf(fmt, ap);
    printf("\n");
    fflush(stdout);
  } else {
    vfail(file, line, fmt, ap);
  }
  va_end(ap);
}

/* Print the counts of the whole run when every rank gets here and the suite sums them (totals),
 * else this process's (prefixed with its rank, when it has one); c gets them. */
static void counts_line(int whole, int c[2]) {
  c[0] = wt_passed, c[1] = wt_failed;
  int summed = whole && suite_ && suite_->totals;
  if (summed) suite_->totals(c);
  if (summed && wt_rank > 0) return;
  if (!summed && wt_rank >= 0) printf("rank %d ", wt_rank);
  printf("%s: %d passed, %d failed%s\n", label_, c[0], c[1], whole ? "" : " (stopped early)");
  fflush(stdout);
}

_Noreturn void wt_abort_at(const char *file, int line, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vfail(file, line, fmt, ap);
  va_end(ap);
  if (current_ && !(suite_ && suite_->check_ends_process)) longjmp(case_jmp_, 1);
  if (suite_) { /* a test: its counts so far; a benchmark's check has none */
    int c[2];
    counts_line(0, c);
  }
  exit(1);
}

void wt_label(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(label_, sizeof label_, fmt, ap);
  va_end(ap);
}

void wt_skip(const char *fmt, ...) {
  skipped_++;
  if (wt_rank > 0) return;
  va_list ap;
  va_start(ap, fmt);
  printf("skip %s: ", current_ ? current_ : "?");
  vprintf(fmt, ap);
  printf("\n");
  va_end(ap);
}

int wt_running_all(void) { return ran_all_; }
const char *wt_current(void) { return current_; }

/* One case under the jump target of CHECK; 1 when it ran (not skipped). */
static int run_one(const wt_case *c) {
  int skipped = skipped_;
  current_ = c->name;
  if (!setjmp(case_jmp_)) c->run(c->arg);
  current_ = NULL;
  return skipped_ == skipped;
}

static void usage(const char *prog) {
  fprintf(stderr, "usage: %s [--list] [--case NAME]... [suite arguments]\n", prog);
}

int wt_main(const wt_suite *suite, const wt_case *cases, int n, int argc, char **argv) {
  suite_ = suite;
  if (suite->label) wt_label("%s", suite->label);
  /* the runner's own arguments out, the suite's kept in order for its setup */
  char **rest = malloc(sizeof(char *) * (size_t)(argc + 1));
  const char **want = malloc(sizeof(char *) * (size_t)(argc + 1));
  int nrest = 0, nwant = 0, list = 0;
  rest[nrest++] = argv[0];
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--list")) {
      list = 1;
    } else if (!strcmp(argv[i], "--case")) {
      if (i + 1 >= argc) {
        usage(argv[0]);
        free(rest), free(want);
        return 2;
      }
      want[nwant++] = argv[++i];
    } else {
      rest[nrest++] = argv[i];
    }
  }
  rest[nrest] = NULL;
  int rc = 0;
  for (int w = 0; w < nwant; w++) {
    int known = 0;
    for (int i = 0; i < n; i++) known |= !fnmatch(want[w], cases[i].name, 0);
    if (!known) {
      fprintf(stderr, "%s: no case matches '%s' (--list shows them)\n", argv[0], want[w]);
      rc = 2;
    }
  }
  if (list || rc) {
    for (int i = 0; list && !rc && i < n; i++) printf("%s\n", cases[i].name);
    free(rest), free(want);
    return rc;
  }
  ran_all_ = nwant == 0;
  if (suite->setup && (rc = suite->setup(nrest, rest)) != 0) {
    if (rc != 77) { /* a set-up that failed is a failure, counted and closed with the counts line */
      if (!wt_failed) wt_failed = 1;
      int c[2];
      counts_line(0, c);
    }
    free(rest), free(want);
    return rc;
  }
  int ran = 0;
  for (int i = 0; i < n; i++) {
    int chosen = nwant == 0;
    for (int w = 0; w < nwant; w++) chosen |= !fnmatch(want[w], cases[i].name, 0);
    if (chosen) ran += run_one(&cases[i]);
  }
  if (wt_rank <= 0) printf("# %d case%s run, %d skipped\n", ran, ran == 1 ? "" : "s", skipped_);
  int c[2];
  /* the last line (scripts read it); before teardown: totals may need the suite's communicator */
  counts_line(1, c);
  if (suite->teardown) suite->teardown();
  free(rest), free(want);
  if (c[1]) return 1;
  return ran == 0 && skipped_ > 0 && c[0] == 0 ? 77 : 0;
}
