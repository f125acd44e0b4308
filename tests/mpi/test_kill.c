/* test_kill.c - one rank dies (SIGKILL) in the middle of an operation; every other rank must
 * leave its libwhale wait with an error that names the dead rank, within the timeout plus the
 * liveness probe. Driven by kill_trials.py, launched with `mpirun --enable-recovery` so that
 * Open MPI leaves the survivors alone and only libwhale's deadline can free them.
 *
 *   mpirun --enable-recovery -np N test_kill MODE VICTIM OUTDIR
 *
 * MODE allreduce: a few good 4 MB allreduces, a start barrier, then everyone starts one more
 *   (wh_comm_iallreduce); the victim makes one wh_request_test of progress and kills itself,
 *   the others wait in wh_request_wait. (Should that one test finish the allreduce, all go on
 *   to another, until the victim's test leaves one unfinished; the survivors start allreduces
 *   until one fails, so the victim is always dead before they can stop.)
 * MODE recv: a good ring exchange (send to the right, receive from the left), a start barrier,
 *   then the same exchange again; the victim dies instead of sending. Its right neighbour waits
 *   in wh_comm_recv from it, its left neighbour in the wait for its 1 MB send to it (a
 *   rendezvous the dead rank never answers), and every other rank finishes the exchange and waits
 *   in a wh_comm_barrier that the victim never joins.
 *
 * MODE step: a data-parallel training session (an MLP, equal shares), three good steps, a start
 *   barrier, then another step; a thread of the victim kills it 2 ms into that step, in the middle
 *   of forward, backward or the gradient all-reduce. The others must leave wh_session_step with
 *   an error naming the dead rank.
 *
 * MODE pipe: the same with a pipeline plan, one stage per rank (a deeper MLP, 4 micro-batches,
 *   1F1B): the victim dies between sends and receives of activations and gradients.
 *
 * Each survivor whose wait fails writes OUTDIR/rank<R>.txt (key=value lines: exit, op, status,
 * wait_s, since_kill_s, error) and exits 1 at once, without wh_ctx_destroy / MPI_Finalize: the
 * communicator is broken. The victim writes OUTDIR/victim.txt (its kill time) before it dies.
 * A survivor whose every wait succeeds writes exit=0 (a test failure: it cannot have happened). */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "whale.h"

static wh_ctx *ctx;
static int rank_ = -1, size_;
static const char *outdir;

/* After the start barrier a survivor keeps working until a wait fails; the deadline (set at the
 * barrier) only bounds an impossible success: the victim dies well within it (within 2 ms, or
 * at its allreduce VICTIM_LAST_ITER at the latest), and the deadline plus one failing wait stays
 * under kill_trials.py's hang limit. */
static double survivor_deadline;
enum { SURVIVOR_DEADLINE_S = 10, VICTIM_LAST_ITER = 49 };

static double mono(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double wall(void) { /* comparable across the processes of one machine */
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The key=value result file; written to a temporary name and renamed, so it is whole or absent. */
static void write_result(const char *name, int code, const char *op, wh_status st, double wait_s, const char *err) {
  char path[4096], tmp[4200];
  snprintf(path, sizeof path, "%s/%s", outdir, name);
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *f = fopen(tmp, "w");
  if (!f) {
    fprintf(stderr, "rank %d: cannot write %s\n", rank_, tmp);
    return;
  }
  fprintf(f, "rank=%d\nsize=%d\nexit=%d\nop=%s\nstatus=%s\nwait_s=%.3f\nwall=%.6f\n", rank_, size_, code, op,
          wh_status_str(st), wait_s, wall());
  /* the error text last, on one line (it has no newlines, but be safe) */
  fputs("error=", f);
  for (const char *p = err ? err : ""; *p; p++) fputc(*p == '\n' ? ' ' : *p, f);
  fputc('\n', f);
  fclose(f);
  rename(tmp, path);
}

/* A wait failed: record it and leave without touching the broken communicator or MPI again. */
static void die_from(const char *op, wh_status st, double t0) {
  double waited = mono() - t0;
  const char *err = wh_last_error(ctx);
  char name[64];
  snprintf(name, sizeof name, "rank%d.txt", rank_);
  write_result(name, 1, op, st, waited, err);
  fprintf(stderr, "test_kill rank %d: %s failed after %.2f s: %s: %s\n", rank_, op, waited, wh_status_str(st), err);
  fflush(stdout);
  fflush(stderr);
  _exit(1); /* no atexit handlers: nothing may wait on the dead peer */
}

/* A wait that must succeed (before the kill): any failure here is reported the same way. */
#define MUST(opname, call)                       \
  do {                                           \
    double t0_ = mono();                         \
    wh_status s_ = (call);                       \
    if (s_ != WH_OK) die_from(opname, s_, t0_); \
  } while (0)

static void victim_dies(const char *where) {
  char stamp[64];
  snprintf(stamp, sizeof stamp, "%.6f", wall());
  write_result("victim.txt", 137, where, WH_OK, 0.0, stamp);
  fflush(stdout);
  fflush(stderr);
  raise(SIGKILL);
  _exit(99); /* not reached */
}

static void run_allreduce(wh_comm *c, int victim) {
  const size_t count = (size_t)1 << 20; /* 4 MB of f32 */
  float *s = malloc(count * sizeof(float)), *o = malloc(count * sizeof(float));
  if (!s || !o) _exit(3);
  for (size_t i = 0; i < count; i++) s[i] = (float)((rank_ + (int)i) % 7);
  for (int k = 0; k < 3; k++) {
    MUST("allreduce (before the kill)", wh_comm_allreduce(c, s, o, count, WH_F32, WH_REDUCE_SUM));
    float want = 0;
    for (int r = 0; r < size_; r++) want += (float)((r + (int)(count - 1)) % 7);
    if (o[count - 1] != want) {
      fprintf(stderr, "test_kill rank %d: allreduce before the kill gave %g, want %g\n", rank_, o[count - 1], want);
      _exit(4);
    }
  }
  MUST("start barrier", wh_comm_barrier(c));
  survivor_deadline = mono() + SURVIVOR_DEADLINE_S;
  /* With two ranks on two cores, the victim's one wh_request_test can finish the whole
   * allreduce (the ring loops while data keeps arriving). Then nobody was killed in the middle:
   * everyone goes on to the next allreduce, and the victim dies in the first one its test
   * leaves unfinished, or after its last one at the latest. The survivors do not count: they
   * start allreduce after allreduce until a wait fails, so none can finish its work before the
   * victim is dead, however the kill falls (only the deadline ends an impossible success). */
  for (int iter = 0;; iter++) {
    if (rank_ != victim && mono() > survivor_deadline) break;
    wh_request *rq = NULL;
    MUST("iallreduce start", wh_comm_iallreduce(c, s, o, count, WH_F32, WH_REDUCE_SUM, &rq));
    if (rank_ == victim) {
      int done = 0;
      wh_status st = wh_request_test(rq, &done); /* a little progress: the first ring step is posted */
      if (st != WH_OK) die_from("allreduce (the victim's test)", st, mono());
      char where[64];
      snprintf(where, sizeof where, "in allreduce %d after the start barrier%s", iter, done ? " (finished)" : "");
      if (!done || iter == VICTIM_LAST_ITER) victim_dies(where);
      continue;
    }
    double t0 = mono();
    wh_status st = wh_request_wait(rq);
    if (st != WH_OK) die_from("allreduce", st, t0);
  }
}

static void run_recv(wh_comm *c, int victim) {
  const size_t count = (size_t)1 << 18; /* 1 MB of f32: past the eager limit, a rendezvous */
  int right = (rank_ + 1) % size_, left = (rank_ + size_ - 1) % size_;
  float *s = malloc(count * sizeof(float)), *o = malloc(count * sizeof(float));
  if (!s || !o) _exit(3);
  for (size_t i = 0; i < count; i++) s[i] = (float)rank_;
  for (int round = 0; round < 2; round++) {
    if (round == 1) {
      MUST("start barrier", wh_comm_barrier(c));
      if (rank_ == victim) victim_dies("before its second send"); /* instead of sending */
    }
    wh_request *sr = NULL;
    MUST("isend start", wh_comm_isend(c, s, count, WH_F32, right, 5 + round, &sr));
    double t0 = mono();
    wh_status st = wh_comm_recv(c, o, count, WH_F32, left, 5 + round);
    if (st != WH_OK) die_from("recv", st, t0);
    if (o[0] != (float)left || o[count - 1] != (float)left) {
      fprintf(stderr, "test_kill rank %d: received %g from rank %d\n", rank_, o[0], left);
      _exit(4);
    }
    t0 = mono();
    st = wh_request_wait(sr);
    if (st != WH_OK) die_from("send", st, t0);
  }
  double t0 = mono();
  wh_status st = wh_comm_barrier(c); /* the victim never arrives */
  if (st != WH_OK) die_from("barrier", st, t0);
}

static void *kill_soon(void *arg) {
  (void)arg;
  struct timespec ts = {0, 2000000};
  nanosleep(&ts, NULL);
  victim_dies("step");
  return NULL;
}

static void run_step(wh_comm *c, int victim, int pipe) {
  enum { B = 64, IN = 256, H = 512, OUT = 10 };
  wh_graph *g;
  if (wh_graph_create(ctx, &g) != WH_OK) _exit(3);
  wh_value x = wh_input(g, "x", WH_F32, 2, (int64_t[]){WH_BATCH, IN});
  wh_value y = wh_input(g, "y", WH_I32, 1, (int64_t[]){WH_BATCH});
  wh_value w1 = wh_param(g, "w1", WH_F32, 2, (int64_t[]){H, IN}, WH_INIT(WH_INIT_NORMAL, 0, 0.05f, 1));
  wh_value w2 = wh_param(g, "w2", WH_F32, 2, (int64_t[]){OUT, H}, WH_INIT(WH_INIT_NORMAL, 0, 0.05f, 2));
  wh_value h = wh_relu(g, wh_matmul(g, x, w1, 0, 1));
  for (int l = 0; pipe && l < 4; l++) { /* enough layers for one stage per rank */
    char nm[16];
    snprintf(nm, sizeof nm, "h%d", l);
    wh_value w = wh_param(g, nm, WH_F32, 2, (int64_t[]){H, H}, WH_INIT(WH_INIT_NORMAL, 0, 0.05f, 10 + (uint64_t)l));
    h = wh_relu(g, wh_matmul(g, h, w, 0, 1));
  }
  wh_value loss = wh_cross_entropy(g, wh_matmul(g, h, w2, 0, 1), y);
  wh_sgd_options so = WH_SGD_OPTIONS_INIT;
  if (wh_backward(g, loss) != WH_OK || wh_optimizer_sgd(g, &so) != WH_OK) _exit(3);
  wh_cluster *cl;
  wh_plan *p;
  wh_session *s;
  wh_cluster_create(ctx, &cl);
  wh_cluster_add(cl, "CPU", 0, size_);
  wh_plan_layout l = WH_PLAN_LAYOUT_INIT;
  if (pipe) l.stages = size_, l.micro_batches = 4, l.schedule = WH_SCHEDULE_1F1B;
  if (wh_plan_create_pinned(ctx, g, cl, B, &l, &p) != WH_OK) {
    fprintf(stderr, "test_kill rank %d: plan: %s\n", rank_, wh_last_error(ctx));
    _exit(3);
  }
  wh_session_options o = WH_SESSION_OPTIONS_INIT;
  o.plan = p;
  o.comm = c;
  if (wh_session_create(ctx, g, &o, &s) != WH_OK) {
    fprintf(stderr, "test_kill rank %d: session: %s\n", rank_, wh_last_error(ctx));
    _exit(3);
  }
  float *xd = malloc(sizeof(float) * B * IN);
  int32_t yd[B];
  for (int i = 0; i < B * IN; i++) xd[i] = (float)(i % 17) / 17.0f;
  for (int i = 0; i < B; i++) yd[i] = i % OUT;
  MUST("feed", wh_session_feed(s, x, xd, sizeof(float) * B * IN));
  MUST("feed", wh_session_feed(s, y, yd, sizeof yd));
  for (int k = 0; k < 3; k++) MUST("step (before the kill)", wh_session_step(s));
  MUST("start barrier", wh_comm_barrier(c));
  survivor_deadline = mono() + SURVIVOR_DEADLINE_S;
  if (rank_ == victim) {
    pthread_t th;
    if (pthread_create(&th, NULL, kill_soon, NULL) != 0) victim_dies("step (no thread)");
  }
  /* the victim dies within 2 ms; a step that still completes everywhere is followed by another,
   * until one fails (the deadline only ends an impossible success) */
  while (mono() < survivor_deadline) {
    double t0 = mono();
    wh_status st = wh_session_step(s);
    if (st != WH_OK) die_from("step", st, t0);
  }
}

int main(int argc, char **argv) {
  if (argc != 4 ||
      (strcmp(argv[1], "allreduce") && strcmp(argv[1], "recv") && strcmp(argv[1], "step") && strcmp(argv[1], "pipe"))) {
    fprintf(stderr, "usage: test_kill allreduce|recv|step|pipe VICTIM OUTDIR\n");
    return 2;
  }
  int victim = atoi(argv[2]);
  outdir = argv[3];
  wh_ctx_options o = WH_CTX_OPTIONS_INIT;
  o.num_threads = 1;
  if (wh_ctx_create(&ctx, &o) != WH_OK) return 2;
  wh_comm_options co = WH_COMM_OPTIONS_INIT;
  co.timeout_s = 10;
  wh_comm *c = NULL;
  wh_status st = wh_comm_create(ctx, &co, &c);
  if (st != WH_OK) {
    fprintf(stderr, "test_kill: wh_comm_create: %s\n", wh_last_error(ctx));
    return 2;
  }
  rank_ = wh_comm_rank(c);
  size_ = wh_comm_size(c);
  if (victim < 0 || victim >= size_ || size_ < 2) {
    fprintf(stderr, "test_kill: victim %d with %d ranks\n", victim, size_);
    return 2;
  }
  if (!strcmp(argv[1], "allreduce"))
    run_allreduce(c, victim);
  else if (!strcmp(argv[1], "step") || !strcmp(argv[1], "pipe"))
    run_step(c, victim, !strcmp(argv[1], "pipe"));
  else
    run_recv(c, victim);
  /* Every wait succeeded although a rank died: impossible, and a failure of the test. */
  char name[64];
  snprintf(name, sizeof name, "rank%d.txt", rank_);
  write_result(name, 0, argv[1], WH_OK, 0.0, "every wait succeeded although a rank was killed");
  fprintf(stderr, "test_kill rank %d: every wait succeeded although rank %d was killed\n", rank_, victim);
  fflush(stderr);
  _exit(0);
}
