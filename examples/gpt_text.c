/* gpt_text.c - train a byte-level GPT on real English text (the fortune-cookie collection that
 * Debian's `fortunes` package installs under /usr/share/games/fortunes), report train and
 * validation loss against the unigram-entropy baseline, and sample text at the end.
 *
 *   gpt_text [--layers N] [--heads N] [--width N] [--context N] [--batch N] [--steps N]
 *            [--lr X] [--data DIR] [--eval-every N] [--sample N] [--recompute 0|1] [--cluster FILE]
 *            [--stages N] [--micro N] [--schedule gpipe|1f1b] [--tp N] [--rebalance 0|1] [--loss-log FILE]
 *            [--checkpoint DIR] [--every N] [--stop-at N]
 *
 * Under mpirun (or any launcher wh_launch_detect knows) it trains across the ranks: libwhale plans
 * the step on a cluster of the ranks (from --cluster FILE, or this machine probed by rank 0 and
 * shared between its ranks), prints the plan, and every rank runs its part of it. By default the
 * planner chooses a data-parallel plan (shares, micro-batches); --stages N > 1 pins a pipeline of
 * N stages (the planner cuts the layers and splits the ranks evenly over the stages), --stages 0
 * lets the search choose the stages too; --tp N pins operator sharding over N ranks per replica
 * (Megatron-style column/row splits of each block's products, by heads in attention) with data
 * parallelism over the replicas. At the end the cost model's predicted step is printed
 * beside the measured median, with a RESULT line.
 *
 * --checkpoint DIR saves the whole training state (parameters, AdamW moments, the step, the data
 * sampler's position) into DIR every --every N steps (default: at each evaluation) and at the
 * end; a job started with a DIR that holds a checkpoint resumes from it, on however many ranks it
 * now has: the planner plans for the cluster of this launch and every rank loads its part.
 * --stop-at N ends the run after step N (saving it), as a preempted job would: the learning-rate
 * schedule still spans --steps, so a later run resumes it where it stopped.
 *
 * --rebalance 0 keeps the plan's shares for the whole run (by default a data-parallel session
 * moves rows to the replicas measured faster, which makes the sums' order, and so the last bits,
 * depend on timing). --loss-log FILE writes every step's training loss and every validation loss
 * at full precision (rank 0), so another run - examples/python/gpt_text.py with the same options
 * and --rebalance 0 - can be compared with this one number for number.
 */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gpt.h"
#include "whale.h"

#define VOCAB 256

static int rank0 = 1; /* only rank 0 prints */
#define say(...) (rank0 ? printf(__VA_ARGS__) : 0)

typedef struct {
  int layers, heads, width, context, batch, steps, eval_every, sample, recompute;
  int stages, micro, schedule, tp, every, rebalance, stop_at;
  float lr;
  const char *data, *cluster, *checkpoint, *loss_log;
} config;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Concatenate the corpus files (not the .dat indexes or .u8 links) in name order. */
static unsigned char *load_corpus(const char *dir, size_t *len) {
  DIR *d = opendir(dir);
  if (!d) return NULL;
  char *names[512];
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) && n < 512) {
    const char *nm = e->d_name;
    size_t l = strlen(nm);
    if (nm[0] == '.' || (l > 4 && (!strcmp(nm + l - 4, ".dat") || !strcmp(nm + l - 3, ".u8")))) continue;
    names[n++] = strdup(nm);
  }
  closedir(d);
  qsort(names, (size_t)n, sizeof(char *), cmp_str);
  size_t cap = 1 << 20, used = 0;
  unsigned char *buf = malloc(cap);
  for (int i = 0; i < n; i++) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, names[i]);
    FILE *f = fopen(path, "rb");
    free(names[i]);
    if (!f) continue;
    size_t r;
    while (buf && (r = fread(buf + used, 1, cap - used, f)) > 0) {
      used += r;
      if (used == cap) buf = realloc(buf, cap *= 2);
    }
    fclose(f);
  }
  *len = used;
  return buf;
}

/* GPT-2 shape (examples/models/gpt.h): pre-norm blocks, tied input/output embedding, learned
 * positions; each block a natural pipeline cut (recorded, used by the planner) and an activation
 * checkpointing scope (the session's recompute option). */
static gpt_model build(wh_graph *g, const config *c) {
  gpt_options o = GPT_OPTIONS_INIT;
  o.vocab = VOCAB, o.context = c->context, o.width = c->width, o.layers = c->layers, o.heads = c->heads;
  o.names = GPT_NAMES_LONG;
  o.pos_std = 0.02f;
  o.scaled_proj = 1; /* the residual projections at 0.02 / sqrt(2 layers), as GPT-2 */
  o.stage_per_block = o.recompute_per_block = 1;
  gpt_model m;
  gpt_build(g, &o, &m); /* the caller reads wh_graph_status */
  wh_value_set_name(g, m.logits, "logits");
  wh_value_set_name(g, m.loss, "loss");
  return m;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void) {
  rng_state ^= rng_state << 13, rng_state ^= rng_state >> 7, rng_state ^= rng_state << 17;
  return rng_state;
}

static void fill_batch(const unsigned char *text, size_t len, int b, int t, int32_t *tok, int32_t *tgt) {
  for (int i = 0; i < b; i++) {
    size_t off = (size_t)(rnd() % (len - (size_t)t - 1));
    for (int k = 0; k < t; k++) {
      tok[i * t + k] = text[off + k];
      tgt[i * t + k] = text[off + k + 1];
    }
  }
}

#define CHECK(call)                                                                            \
  do {                                                                                         \
    wh_status st_ = (call);                                                                    \
    if (st_ != WH_OK) {                                                                        \
      fprintf(stderr, "%s failed: %s: %s\n", #call, wh_status_str(st_), wh_last_error(ctx)); \
      exit(1);                                                                                 \
    }                                                                                          \
  } while (0)

/* The fraction of the probed compute and bandwidth that this model's step reaches on one rank: the
 * cost model's prediction of one rank's step (at a replica's share of the batch, on the probed
 * figures) over the measured median of a few steps of a throwaway session. */
static double calibrate(wh_ctx *ctx, wh_graph *g, const gpt_model *m, const config *c, int ranks, const double *fig,
                        const unsigned char *text) {
  int64_t lb = c->batch / ranks > 0 ? c->batch / ranks : 1;
  size_t n = (size_t)lb * (size_t)c->context;
  int32_t *tok = malloc(sizeof(int32_t) * n), *tgt = malloc(sizeof(int32_t) * n);
  for (size_t i = 0; i < n; i++) tok[i] = text[i], tgt[i] = text[i + 1];
  wh_session_options so = WH_SESSION_OPTIONS_INIT;
  so.batch = lb;
  so.recompute = c->recompute;
  wh_session *s;
  double t[7];
  CHECK(wh_session_create(ctx, g, &so, &s));
  CHECK(wh_session_feed(s, m->tokens, tok, sizeof(int32_t) * n));
  CHECK(wh_session_feed(s, m->targets, tgt, sizeof(int32_t) * n));
  for (int k = 0; k < 9; k++) {
    double t0 = now();
    CHECK(wh_session_step(s));
    if (k >= 2) t[k - 2] = now() - t0;
  }
  wh_session_destroy(s);
  free(tok), free(tgt);
  for (int i = 0; i < 7; i++)
    for (int j = i + 1; j < 7; j++)
      if (t[j] < t[i]) {
        double x = t[i];
        t[i] = t[j], t[j] = x;
      }
  wh_device_desc d = WH_DEVICE_DESC_INIT;
  d.kind = "CPU-rank";
  d.flops_f32 = d.flops_bf16 = fig[0];
  d.mem_bw = fig[1];
  d.mem_bytes = fig[2];
  d.eff_flops = d.eff_bw = 1.0;
  wh_cluster *one;
  wh_plan *p;
  CHECK(wh_cluster_create(ctx, &one));
  CHECK(wh_cluster_add_custom(one, &d, 0, 1));
  wh_plan_layout l = WH_PLAN_LAYOUT_INIT;
  CHECK(wh_plan_create_pinned(ctx, g, one, lb, &l, &p));
  double frac = wh_plan_step_time(p) / t[3];
  wh_plan_destroy(p);
  wh_cluster_destroy(one);
  return frac < 0.02 ? 0.02 : frac > 1.0 ? 1.0 : frac;
}

static float eval_loss(wh_ctx *ctx, wh_session *s, const gpt_model *m, const unsigned char *text, size_t len, int batch,
                       int t, int batches, int32_t *tok, int32_t *tgt) {
  uint64_t saved = rng_state;
  rng_state = 0xfeedfacecafebeefull; /* the same validation windows every time */
  double sum = 0;
  for (int i = 0; i < batches; i++) {
    fill_batch(text, len, batch, t, tok, tgt);
    CHECK(wh_session_feed(s, m->tokens, tok, sizeof(int32_t) * (size_t)(batch * t)));
    CHECK(wh_session_feed(s, m->targets, tgt, sizeof(int32_t) * (size_t)(batch * t)));
    CHECK(wh_session_run(s, WH_RUN_EVAL));
    float l;
    CHECK(wh_session_fetch(s, m->loss, &l, sizeof l));
    sum += l;
  }
  rng_state = saved;
  return (float)(sum / batches);
}

int main(int argc, char **argv) {
  config c = {4, 4, 128, 64, 16, 600, 100, 300, 0, 1, 0, WH_SCHEDULE_1F1B, 1, 0, 1, 0, 3e-3f, "/usr/share/games/fortunes",
              NULL, NULL, NULL};
  for (int i = 1; i + 1 < argc; i += 2) {
    const char *k = argv[i], *v = argv[i + 1];
    if (!strcmp(k, "--layers")) c.layers = atoi(v);
    else if (!strcmp(k, "--heads")) c.heads = atoi(v);
    else if (!strcmp(k, "--width")) c.width = atoi(v);
    else if (!strcmp(k, "--context")) c.context = atoi(v);
    else if (!strcmp(k, "--batch")) c.batch = atoi(v);
    else if (!strcmp(k, "--steps")) c.steps = atoi(v);
    else if (!strcmp(k, "--lr")) c.lr = (float)atof(v);
    else if (!strcmp(k, "--data")) c.data = v;
    else if (!strcmp(k, "--eval-every")) c.eval_every = atoi(v);
    else if (!strcmp(k, "--sample")) c.sample = atoi(v);
    else if (!strcmp(k, "--recompute")) c.recompute = atoi(v);
    else if (!strcmp(k, "--cluster")) c.cluster = v;
    else if (!strcmp(k, "--stages")) c.stages = atoi(v);
    else if (!strcmp(k, "--micro")) c.micro = atoi(v);
    else if (!strcmp(k, "--tp")) c.tp = atoi(v);
    else if (!strcmp(k, "--checkpoint")) c.checkpoint = v;
    else if (!strcmp(k, "--every")) c.every = atoi(v);
    else if (!strcmp(k, "--rebalance")) c.rebalance = atoi(v);
    else if (!strcmp(k, "--stop-at")) c.stop_at = atoi(v);
    else if (!strcmp(k, "--loss-log")) c.loss_log = v;
    else if (!strcmp(k, "--schedule") && (!strcmp(v, "gpipe") || !strcmp(v, "1f1b")))
      c.schedule = !strcmp(v, "gpipe") ? WH_SCHEDULE_GPIPE : WH_SCHEDULE_1F1B;
    else {
      fprintf(stderr, "unknown option %s\n", k);
      return 2;
    }
  }
  size_t len;
  unsigned char *text = load_corpus(c.data, &len);
  if (!text || len < 10000) {
    fprintf(stderr, "cannot read the text corpus in %s (Debian package 'fortunes')\n", c.data);
    return 1;
  }
  size_t nval = len / 10, ntrain = len - nval;
  const unsigned char *train = text, *val = text + ntrain;
  /* unigram baseline: cross-entropy on the validation bytes of the training byte frequencies */
  double freq[VOCAB] = {0}, h_unigram = 0;
  for (size_t i = 0; i < ntrain; i++) freq[train[i]] += 1;
  for (size_t i = 0; i < nval; i++) h_unigram -= log((freq[val[i]] + 1) / (double)(ntrain + VOCAB));
  h_unigram /= (double)nval;

  /* ranks on one machine share its cores */
  wh_launch_info li = wh_launch_detect();
  int dist = li.size > 1;
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  wh_ctx *ctx;
  wh_ctx_options co = WH_CTX_OPTIONS_INIT;
  co.num_threads = dist ? (int)(cores / li.local_size > 0 ? cores / li.local_size : 1) : 0;
  if (wh_ctx_create(&ctx, &co) != WH_OK) return 1;
  wh_comm *comm = NULL;
  if (dist) {
    CHECK(wh_comm_create(ctx, NULL, &comm));
    rank0 = wh_comm_rank(comm) == 0;
  }
  say("libwhale %s [%s], %d rank%s x %d threads\n", wh_version(), wh_build_info(), dist ? wh_comm_size(comm) : 1,
      dist ? "s" : "", wh_ctx_threads(ctx));
  say("corpus: %s, %zu bytes (%zu train, %zu validation); unigram baseline %.3f nats/byte\n", c.data, len, ntrain,
      nval, h_unigram);
  wh_graph *g;
  CHECK(wh_graph_create(ctx, &g));
  gpt_model m = build(g, &c);
  CHECK(wh_graph_status(g));
  CHECK(wh_graph_keep(g, m.logits));
  CHECK(wh_backward(g, m.loss));
  wh_adamw_options ao = WH_ADAMW_OPTIONS_INIT;
  ao.lr = (wh_lr){WH_LR_WARMUP_COSINE, c.lr, c.steps / 20 + 1, c.steps, c.lr / 10};
  ao.beta2 = 0.95f;
  ao.weight_decay = 0.1f;
  ao.clip_norm = 1.0f;
  CHECK(wh_optimizer_adamw(g, &ao));
  int64_t nparams = 0;
  for (int i = 0; i < wh_graph_num_params(g); i++) {
    int nd;
    int64_t d[WH_MAX_DIMS], k = 1;
    wh_value_shape(g, wh_graph_param(g, i), &nd, d);
    for (int j = 0; j < nd; j++) k *= d[j];
    nparams += k;
  }
  /* the distributed plan: this build executes data-parallel plans, so the search is held to them */
  wh_plan *plan = NULL;
  wh_cluster *cl = NULL;
  if (dist) {
    if (c.cluster) {
      CHECK(wh_cluster_load(ctx, c.cluster, &cl));
    } else {
      /* rank 0 measures what one rank gets (its context has this rank's share of the cores), and
       * every rank builds the same cluster: compute and bandwidth as measured, memory split */
      double fig[4] = {0, 0, 0, 1};
      if (rank0) {
        wh_cluster *probe;
        CHECK(wh_cluster_probe(ctx, &probe));
        char *desc;
        CHECK(wh_cluster_describe(probe, &desc));
        say("probed: %s", desc);
        wh_free(desc);
        wh_device_desc cpu = WH_DEVICE_DESC_INIT;
        CHECK(wh_cluster_device(probe, 0, &cpu));
        fig[0] = cpu.flops_f32 * cpu.eff_flops, fig[1] = cpu.mem_bw * cpu.eff_bw, fig[2] = cpu.mem_bytes;
        wh_cluster_destroy(probe);
        fig[3] = calibrate(ctx, g, &m, &c, wh_comm_size(comm), fig, train);
        say("calibration: one rank's step of this model reaches %.2f of the probed rates\n", fig[3]);
      }
      CHECK(wh_comm_broadcast(comm, fig, 4, WH_F64, 0));
      wh_device_desc d = WH_DEVICE_DESC_INIT;
      d.kind = "CPU-rank";
      /* more ranks than cores: the probe ran on a whole core, each rank gets a share of one */
      double share = li.local_size > cores ? (double)cores / (double)li.local_size : 1.0;
      d.flops_f32 = d.flops_bf16 = fig[0] * share;
      d.mem_bw = fig[1] * share;
      d.mem_bytes = fig[2] / li.local_size;
      d.link_bw = 5e9; /* shared memory between ranks on one machine */
      d.eff_flops = d.eff_bw = fig[3]; /* the probed rates, as this model's own step reaches them */
      CHECK(wh_cluster_create(ctx, &cl));
      CHECK(wh_cluster_add_custom(cl, &d, 0, wh_comm_size(comm)));
      CHECK(wh_cluster_set_links(cl, 5e9, 5e-6, 5e9, 5e-6));
    }
    if (c.stages > 1 || c.tp > 1) {
      wh_plan_layout l = WH_PLAN_LAYOUT_INIT;
      l.stages = c.stages > 1 ? c.stages : 1;
      l.tp = c.tp > 1 ? c.tp : 1;
      l.micro_batches = c.micro > 0 ? c.micro : c.stages > 1 ? 2 * c.stages : 1;
      l.schedule = (wh_schedule)c.schedule;
      CHECK(wh_plan_create_pinned(ctx, g, cl, c.batch, &l, &plan));
    } else {
      wh_plan_options po = WH_PLAN_OPTIONS_INIT;
      po.global_batch = c.batch;
      po.stages = c.stages; /* 1: data parallel; 0: the search chooses */
      po.micro_batches = c.micro;
      CHECK(wh_plan_create(ctx, g, cl, &po, &plan));
    }
    char *ex;
    CHECK(wh_plan_explain(plan, &ex));
    say("%s", ex);
    wh_free(ex);
  }
  /* plan memory both ways to show what recomputation saves; train with the chosen one */
  wh_session *s;
  wh_session_options so = WH_SESSION_OPTIONS_INIT;
  so.batch = c.batch;
  so.recompute = !c.recompute;
  so.plan = plan;
  so.rebalance = c.rebalance;
  so.comm = comm;
  CHECK(wh_session_create(ctx, g, &so, &s));
  wh_memory_stats other = WH_MEMORY_STATS_INIT, ms = WH_MEMORY_STATS_INIT;
  CHECK(wh_session_memory(s, &other));
  wh_session_destroy(s);
  so.recompute = c.recompute;
  CHECK(wh_session_create(ctx, g, &so, &s));
  CHECK(wh_session_memory(s, &ms));
  say("model: %d layers, %d heads, width %d, context %d, %.2fM parameters; batch %d, %d steps\n", c.layers, c.heads,
      c.width, c.context, (double)nparams / 1e6, c.batch, c.steps);
  say("memory plan%s: arena %.1f MB for intermediates of %.1f MB total (%lld ops in place); recompute %s: "
      "%.1f MB, %s: %.1f MB\n",
      dist ? " (rank 0)" : "", (double)ms.arena_bytes / 1e6, (double)ms.intermediate_bytes / 1e6,
      (long long)ms.inplace_ops, c.recompute ? "on" : "off", (double)ms.arena_bytes / 1e6,
      c.recompute ? "off" : "on", (double)other.arena_bytes / 1e6);

  /* resume: the state the last complete checkpoint holds, whatever layout saved it */
  int first = 1;
  if (c.every <= 0) c.every = c.eval_every;
  if (c.checkpoint) {
    wh_checkpoint_info info = WH_CHECKPOINT_INFO_INIT;
    wh_status st = wh_checkpoint_find(ctx, c.checkpoint, &info);
    if (st == WH_OK) {
      uint64_t cursor = 0;
      size_t mb = 0;
      CHECK(wh_checkpoint_load(s, c.checkpoint, &cursor, sizeof cursor, &mb));
      if (mb != sizeof cursor) {
        fprintf(stderr, "%s: the checkpoint's metadata is %zu bytes, not this program's sampler position\n",
                c.checkpoint, mb);
        return 1;
      }
      rng_state = cursor;
      first = (int)wh_session_steps(s) + 1;
      say("resumed from %s/%s at step %lld (saved by %d rank%s, %s); this run: %d rank%s\n", c.checkpoint, info.name,
          (long long)info.step, info.ranks, info.ranks > 1 ? "s" : "", info.layout, dist ? wh_comm_size(comm) : 1,
          dist ? "s" : "");
    } else if (st == WH_ERR_NOT_FOUND) {
      say("checkpoint: none in %s yet, training from the start; saving every %d steps\n", c.checkpoint, c.every);
    } else {
      CHECK(st);
    }
  }

  int T = c.context;
  int32_t *tok = malloc(sizeof(int32_t) * (size_t)(c.batch * T)), *tgt = malloc(sizeof(int32_t) * (size_t)(c.batch * T));
  double t0 = now(), tlast = t0, sum = 0;
  int nsum = 0;
  float vloss = 0;
  double *step_t = malloc(sizeof(double) * (size_t)c.steps), comm_busy = 0, comm_exposed = 0;
  int rebalances = 0;
  FILE *loss_log = c.loss_log && rank0 ? fopen(c.loss_log, first > 1 ? "a" : "w") : NULL;
  if (c.loss_log && rank0 && !loss_log) {
    fprintf(stderr, "cannot write %s\n", c.loss_log);
    return 1;
  }
  int end = c.stop_at > 0 && c.stop_at < c.steps ? c.stop_at : c.steps; /* the last step this run takes */
  for (int step = first; step <= c.steps; step++) {
    /* every rank draws the same batch: a distributed session takes the global batch */
    fill_batch(train, ntrain, c.batch, T, tok, tgt);
    CHECK(wh_session_feed(s, m.tokens, tok, sizeof(int32_t) * (size_t)(c.batch * T)));
    CHECK(wh_session_feed(s, m.targets, tgt, sizeof(int32_t) * (size_t)(c.batch * T)));
    double ts = now();
    wh_comm_stats cs = WH_COMM_STATS_INIT;
    CHECK(wh_session_comm_stats(s, &cs, 1)); /* count the steps' communication only, not evaluation's */
    CHECK(wh_session_step(s));
    step_t[step - first] = now() - ts;
    CHECK(wh_session_comm_stats(s, &cs, 1));
    if (step - first >= (end - first + 1 > 10 ? 5 : 0)) comm_busy += cs.busy_s, comm_exposed += cs.exposed_s;
    if (plan) { /* the session moves rows between replicas when their measured speeds differ */
      int64_t sh[64];
      int nrb = 0;
      if (wh_session_shares(s, sh, 64, &nrb) == WH_OK && nrb != rebalances) {
        char line[256];
        int at = 0;
        for (int r = 0; r < wh_comm_size(comm) && r < 64 && at < (int)sizeof line - 24; r++)
          at += snprintf(line + at, sizeof line - (size_t)at, "%s%lld", r ? "/" : "", (long long)sh[r]);
        say("rebalanced after step %d: rows per micro-batch of each rank now %s (measured speeds)\n", step, line);
        rebalances = nrb;
      }
    }
    float l;
    CHECK(wh_session_fetch(s, m.loss, &l, sizeof l));
    sum += l, nsum++;
    if (loss_log) fprintf(loss_log, "train %d %.9g\n", step, (double)l);
    int last = step == c.steps || step == c.stop_at;
    if (step % c.eval_every == 0 || last || step == first) {
      double tn = now();
      double tps = (double)nsum * c.batch * T / (tn - tlast);
      vloss = eval_loss(ctx, s, &m, val, nval, c.batch, T, 8, tok, tgt);
      if (loss_log) fprintf(loss_log, "val %d %.9g\n", step, (double)vloss);
      say("step %5d  train loss %.6f  val loss %.6f  %.0f tokens/s  (%.1f s)\n", step, sum / nsum, vloss, tps,
          tn - t0);
      fflush(stdout);
      sum = 0, nsum = 0;
      tlast = now();
    }
    if (c.checkpoint && (step % c.every == 0 || last)) {
      /* the sampler's position goes with the state: a resumed run draws the batches this one would */
      wh_checkpoint_options ko = WH_CHECKPOINT_OPTIONS_INIT;
      ko.meta = &rng_state, ko.meta_bytes = sizeof rng_state;
      double tc = now();
      CHECK(wh_checkpoint_save(s, c.checkpoint, &ko));
      say("checkpoint: step %d saved in %s (%.2f s)\n", step, c.checkpoint, now() - tc);
      fflush(stdout);
      tlast += now() - tc;
    }
    if (step == c.stop_at) {
      say("stopped after step %d of %d (--stop-at)\n", step, c.steps);
      break;
    }
  }
  if (loss_log) fclose(loss_log);
  say("final validation loss %.4f nats/byte against the unigram baseline %.4f (%.0f%% of it)\n", vloss, h_unigram,
      100.0 * vloss / h_unigram);
  if (plan && end - first >= 0) {
    /* the cost model against this run: the median step after the first few */
    int ran = end - first + 1, skip = ran > 10 ? 5 : 0, n = ran - skip;
    for (int i = 0; i < n; i++)
      for (int j = i + 1; j < n; j++)
        if (step_t[skip + j] < step_t[skip + i]) {
          double x = step_t[skip + i];
          step_t[skip + i] = step_t[skip + j], step_t[skip + j] = x;
        }
    double med = step_t[skip + n / 2], pred = wh_plan_step_time(plan);
    say("cost model: predicted %.1f ms per step, measured %.1f ms (median), error %+.0f%%\n", 1e3 * pred, 1e3 * med,
        100 * (pred / med - 1));
    int ns = wh_plan_num_stages(plan), tp = wh_plan_tp(plan), dp = wh_comm_size(comm) / ns / tp;
    char tag[64], part[3][24] = {"", "", ""};
    const char *sch = wh_plan_schedule(plan) == WH_SCHEDULE_GPIPE ? "gpipe" : "1f1b";
    if (dp > 1 || (ns == 1 && tp == 1)) snprintf(part[0], sizeof part[0], "dp%d", dp);
    if (ns > 1) snprintf(part[1], sizeof part[1], "pp%d", ns);
    if (tp > 1) snprintf(part[2], sizeof part[2], "tp%d", tp);
    snprintf(tag, sizeof tag, "%s%s%s%s%s%s%s", part[0], part[0][0] && (part[1][0] || part[2][0]) ? "x" : "", part[1],
             part[1][0] && part[2][0] ? "x" : "", part[2], ns > 1 ? "_" : "", ns > 1 ? sch : "");
    say("RESULT costmodel_error_%s %.3f\n", tag, fabs(pred / med - 1));
    /* how much of the steps' communication ran behind compute on this rank */
    int counted = n > 0 ? n : 1;
    double hidden = comm_busy > 0 ? 1.0 - comm_exposed / comm_busy : 0;
    say("communication (rank 0): %.2f ms per step, %.2f ms of it waited for: %.0f%% hidden behind compute\n",
        1e3 * comm_busy / counted, 1e3 * comm_exposed / counted, 100 * hidden);
    say("RESULT comm_hidden_%s %.3f\n", tag, hidden);
  }
  free(step_t);

  /* sample: slide a window of the last T bytes, one full forward per byte (no KV cache); a
   * distributed session keeps its global batch, so rank 0 samples from a local copy */
  wh_session *local = NULL;
  if (c.sample > 0 && dist) {
    wh_session_options lo = WH_SESSION_OPTIONS_INIT;
    if (rank0) CHECK(wh_session_create(ctx, g, &lo, &local));
    /* each parameter from the first rank that holds it (a pipeline stage holds its own) */
    int n = wh_comm_size(comm), me = wh_comm_rank(comm);
    int32_t *holds = malloc(sizeof(int32_t) * (size_t)n);
    for (int i = 0; i < wh_graph_num_params(g); i++) {
      wh_value p = wh_graph_param(g, i);
      size_t b = wh_session_bytes(s, p);
      void *buf = malloc(b);
      for (int r = 0; r < n; r++) holds[r] = 0;
      holds[me] = wh_session_get_param(s, p, buf, b) == WH_OK;
      CHECK(wh_comm_allreduce(comm, NULL, holds, (size_t)n, WH_I32, WH_REDUCE_SUM));
      int root = 0;
      while (root < n - 1 && !holds[root]) root++;
      CHECK(wh_comm_broadcast(comm, buf, b / sizeof(float), WH_F32, root));
      if (rank0) CHECK(wh_session_set_param(local, p, buf, b));
      free(buf);
    }
    free(holds);
  }
  if (c.sample > 0 && rank0) {
    wh_session *s0 = local ? local : s;
    CHECK(wh_session_set_batch(s0, 1));
    const char *prompt = "The meaning of life is";
    size_t pl = strlen(prompt), total = pl + (size_t)c.sample;
    unsigned char *out = calloc(total + 1, 1);
    memcpy(out, prompt, pl);
    float *logits = malloc(sizeof(float) * (size_t)T * VOCAB);
    int32_t *win = malloc(sizeof(int32_t) * (size_t)T), *dummy = calloc((size_t)T, sizeof(int32_t));
    for (size_t pos = pl; pos < total; pos++) {
      /* right-align the context in the window, padding with spaces on the left */
      size_t have = pos < (size_t)T ? pos : (size_t)T;
      for (int k = 0; k < T; k++) win[k] = ' ';
      for (size_t k = 0; k < have; k++) win[T - have + k] = out[pos - have + k];
      CHECK(wh_session_feed(s0, m.tokens, win, sizeof(int32_t) * (size_t)T));
      CHECK(wh_session_feed(s0, m.targets, dummy, sizeof(int32_t) * (size_t)T));
      CHECK(wh_session_run(s0, WH_RUN_EVAL));
      CHECK(wh_session_fetch(s0, m.logits, logits, sizeof(float) * (size_t)T * VOCAB));
      const float *lg = logits + (size_t)(T - 1) * VOCAB;
      double mx = -1e30, z = 0, temp = 0.8;
      for (int v = 0; v < VOCAB; v++) mx = lg[v] > mx ? lg[v] : mx;
      double p[VOCAB];
      for (int v = 0; v < VOCAB; v++) z += p[v] = exp((lg[v] - mx) / temp);
      double r = (double)(rnd() >> 11) / 9007199254740992.0 * z;
      int v = 0;
      while (v < VOCAB - 1 && (r -= p[v]) > 0) v++;
      out[pos] = (unsigned char)v;
    }
    printf("sample:\n%s\n", (char *)out);
    free(out), free(logits), free(win), free(dummy);
  }
  wh_session_destroy(local);
  wh_session_destroy(s);
  wh_plan_destroy(plan);
  wh_cluster_destroy(cl);
  wh_graph_destroy(g);
  wh_comm_destroy(comm);
  wh_ctx_destroy(ctx);
  free(tok), free(tgt), free(text);
  return vloss < h_unigram ? 0 : 3;
}
